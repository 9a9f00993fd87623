// Unit tests of the fp8 host codecs (e4m3, e5m2) and of fp8 KV in the generator and the reference.
#include "reference.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <set>

namespace attnjit::testing {
namespace {

constexpr auto E4 = ATTNJIT_DTYPE_FP8_E4M3;
constexpr auto E5 = ATTNJIT_DTYPE_FP8_E5M2;

TEST(Fp8, E4m3KnownCodes) {
  EXPECT_EQ(e4m3_to_float(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(e4m3_to_float(0x80)));
  EXPECT_EQ(e4m3_to_float(0x01), std::ldexp(1.0f, -9)); // smallest subnormal
  EXPECT_EQ(e4m3_to_float(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_EQ(e4m3_to_float(0x08), std::ldexp(1.0f, -6)); // smallest normal
  EXPECT_EQ(e4m3_to_float(0x38), 1.0f);
  EXPECT_EQ(e4m3_to_float(0x39), 1.125f);
  EXPECT_EQ(e4m3_to_float(0xB8), -1.0f);
  EXPECT_EQ(e4m3_to_float(0x7E), 448.0f); // largest finite
  EXPECT_EQ(e4m3_to_float(0x78), 256.0f);
  EXPECT_TRUE(std::isnan(e4m3_to_float(0x7F)));
  EXPECT_TRUE(std::isnan(e4m3_to_float(0xFF)));
  int nans = 0;
  for (int c = 0; c < 256; ++c) nans += std::isnan(e4m3_to_float(static_cast<uint8_t>(c)));
  EXPECT_EQ(nans, 2) << "e4m3 has exactly one NaN per sign and no infinities";
}

TEST(Fp8, E5m2IsTheTopByteOfBinary16) {
  for (int c = 0; c < 256; ++c) {
    const float a = e5m2_to_float(static_cast<uint8_t>(c));
    const float b = f16_to_float(static_cast<uint16_t>(c << 8));
    if (std::isnan(b)) {
      EXPECT_TRUE(std::isnan(a)) << c;
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(a), std::bit_cast<uint32_t>(b)) << c;
    }
  }
  EXPECT_EQ(e5m2_to_float(0x7B), 57344.0f);
  EXPECT_EQ(e5m2_to_float(0x01), std::ldexp(1.0f, -16));
  EXPECT_TRUE(std::isinf(e5m2_to_float(0x7C)));
}

TEST(Fp8, EveryFiniteCodeRoundTrips) {
  for (int c = 0; c < 256; ++c) {
    const uint8_t code = static_cast<uint8_t>(c);
    if (!std::isnan(e4m3_to_float(code))) {
      EXPECT_EQ(float_to_e4m3(e4m3_to_float(code)), code) << "e4m3 " << c;
    }
    if (!std::isnan(e5m2_to_float(code))) {
      EXPECT_EQ(float_to_e5m2(e5m2_to_float(code)), code) << "e5m2 " << c;
    }
    // Through the dtype-generic entry points too.
    if (!std::isnan(e4m3_to_float(code))) {
      EXPECT_EQ(float_to_bits(bits_to_float(code, E4), E4), code);
    }
    if (!std::isnan(e5m2_to_float(code))) {
      EXPECT_EQ(float_to_bits(bits_to_float(code, E5), E5), code);
    }
  }
}

// The nearest finite code by brute force, ties to the even code (= even mantissa).
uint8_t brute_nearest(float x, bool e4m3) {
  const int last = e4m3 ? 0x7E : 0x7B;
  const double a = std::fabs(static_cast<double>(x));
  int best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  for (int c = 0; c <= last; ++c) {
    const double v = e4m3 ? e4m3_to_float(static_cast<uint8_t>(c)) : e5m2_to_float(static_cast<uint8_t>(c));
    const double d = std::fabs(a - v);
    if (d < best_d || (d == best_d && (c & 1) == 0)) {
      best = c;
      best_d = d;
    }
  }
  return static_cast<uint8_t>(best | (std::signbit(x) ? 0x80 : 0));
}

TEST(Fp8, RoundsToNearestEvenLikeBruteForce) {
  Rng rng(fresh_seed());
  std::vector<float> xs;
  // Every midpoint between adjacent finite codes, and a little either side of it.
  for (bool e4 : {true, false}) {
    const int last = e4 ? 0x7E : 0x7B;
    for (int c = 0; c < last; ++c) {
      const double lo = e4 ? e4m3_to_float(static_cast<uint8_t>(c)) : e5m2_to_float(static_cast<uint8_t>(c));
      const double hi = e4 ? e4m3_to_float(static_cast<uint8_t>(c + 1)) : e5m2_to_float(static_cast<uint8_t>(c + 1));
      const double mid = (lo + hi) / 2;
      for (double x : {mid, std::nextafter(mid, 0.0), std::nextafter(mid, 1e9)}) {
        xs.push_back(static_cast<float>(x));
        xs.push_back(-static_cast<float>(x));
      }
    }
  }
  for (int i = 0; i < 20000; ++i) xs.push_back(static_cast<float>(rng.normal(1.0) * std::exp2(rng.uniform_int(-18, 9))));
  for (float x : xs) {
    if (std::fabs(x) <= 448.0f) {
      EXPECT_EQ(float_to_e4m3(x), brute_nearest(x, true)) << "e4m3 of " << x;
    }
    if (std::fabs(x) < 61440.0f) {
      EXPECT_EQ(float_to_e5m2(x), brute_nearest(x, false)) << "e5m2 of " << x;
    }
  }
  // A few by hand: ties go to the even mantissa.
  EXPECT_EQ(e4m3_to_float(float_to_e4m3(1.0625f)), 1.0f);  // halfway 1 .. 1.125
  EXPECT_EQ(e4m3_to_float(float_to_e4m3(1.1875f)), 1.25f); // halfway 1.125 .. 1.25
  EXPECT_EQ(e4m3_to_float(float_to_e4m3(std::ldexp(1.0f, -10))), 0.0f);            // half the smallest subnormal
  EXPECT_EQ(e4m3_to_float(float_to_e4m3(std::ldexp(3.0f, -10))), std::ldexp(1.0f, -8)); // 1.5 units -> 2
  EXPECT_EQ(e5m2_to_float(float_to_e5m2(1.125f)), 1.0f);   // halfway 1 .. 1.25
  EXPECT_EQ(e5m2_to_float(float_to_e5m2(1.375f)), 1.5f);
}

TEST(Fp8, E4m3SaturatesAndE5m2OverflowsToInfinity) {
  for (float x : {448.5f, 464.0f, 479.0f, 480.0f, 1e6f, std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(float_to_e4m3(x), 0x7E) << x;
    EXPECT_EQ(float_to_e4m3(-x), 0xFE) << -x;
  }
  EXPECT_EQ(float_to_e4m3(std::nanf("")), 0x7F);
  EXPECT_TRUE(is_nan_bits(float_to_bits(std::nanf(""), E4), E4));
  EXPECT_EQ(float_to_e5m2(61439.0f), 0x7B);
  EXPECT_EQ(float_to_e5m2(61440.0f), 0x7C); // the tie rounds to even: infinity
  EXPECT_EQ(float_to_e5m2(-1e6f), 0xFC);
  EXPECT_EQ(float_to_e5m2(1e6f, true), 0x7B);
  EXPECT_EQ(float_to_e5m2(-std::numeric_limits<float>::infinity(), true), 0xFB);
  EXPECT_TRUE(is_inf_bits(0x7C, E5));
  EXPECT_TRUE(is_nan_bits(0x7D, E5));
  EXPECT_FALSE(is_inf_bits(0x7E, E4));
  EXPECT_TRUE(is_zero_bits(0x80, E4));
  EXPECT_TRUE(is_zero_bits(0x00, E5));
  EXPECT_FALSE(is_zero_bits(0x01, E5));
  EXPECT_EQ(dtype_bytes(E4), 1);
  EXPECT_EQ(dtype_bytes(ATTNJIT_DTYPE_BF16), 2);
  EXPECT_EQ(dtype_name(E5), "e5m2");
}

ProblemSpec fp8_spec(attnjit_dtype kv, bool per_head, KvLayout layout) {
  ProblemSpec s;
  s.q_dtype = ATTNJIT_DTYPE_BF16;
  s.kv_dtype = kv;
  s.head_dim_qk = 32;
  s.head_dim_v = 16;
  s.num_q_heads = 4;
  s.num_kv_heads = 2;
  s.page_size = 8;
  s.layout = layout;
  s.causal = true;
  s.seqs = {{1, 20}, {6, 6}, {3, 41}};
  s.pattern.kv_scale_per_head = per_head;
  return s;
}

TEST(Fp8, GeneratorStoresOneByteCodesWithScales) {
  for (attnjit_dtype kv : {E4, E5})
    for (bool per_head : {false, true})
      for (KvLayout layout : {KvLayout::nhd, KvLayout::hnd, KvLayout::packed}) {
        const HostProblem p = make_problem(fp8_spec(kv, per_head, layout), fresh_seed());
        SCOPED_TRACE(p.describe());
        for (uint16_t b : p.k_data) ASSERT_LT(b, 256u);
        for (uint16_t b : p.v_buffer()) ASSERT_LT(b, 256u);
        ASSERT_EQ(p.k_scale.size(), per_head ? 2u : 1u);
        ASSERT_EQ(p.v_scale.size(), p.k_scale.size());
        for (float x : p.k_scale) EXPECT_TRUE(x >= 0.35f && x <= 1.9f) << x;
        EXPECT_NE(p.k_scale[0], p.v_scale[0]);
        const std::vector<uint8_t> dev = p.kv_device_bytes(p.k_data);
        ASSERT_EQ(dev.size(), p.k_data.size());
        for (size_t i = 0; i < dev.size(); ++i) ASSERT_EQ(dev[i], p.k_data[i]);
        // Logical values: nonzero, finite, and what k_value() reads.
        for (int32_t b = 0; b < p.batch; ++b)
          for (int64_t j = 0; j < p.spec.seqs[b].kv_len; ++j)
            for (int32_t h = 0; h < 2; ++h)
              for (int32_t d = 0; d < 16; ++d) {
                const uint16_t code = p.v_buffer()[p.v_index(b, j, h) + d];
                ASSERT_FALSE(is_zero_bits(code, kv));
                ASSERT_FALSE(is_nan_bits(code, kv) || is_inf_bits(code, kv));
                ASSERT_EQ(p.v_value(b, j, h, d), bits_to_float(code, kv));
              }
        EXPECT_EQ(p.k_scale_of(1), per_head ? p.k_scale[1] : p.k_scale[0]);
      }
  // 16-bit KV: two little-endian bytes per element, and scale 1.
  ProblemSpec s = fp8_spec(E4, false, KvLayout::nhd);
  s.kv_dtype = ATTNJIT_DTYPE_BF16;
  const HostProblem p = make_problem(s, fresh_seed());
  EXPECT_TRUE(p.k_scale.empty());
  EXPECT_EQ(p.k_scale_of(0), 1.0);
  const std::vector<uint8_t> dev = p.kv_device_bytes(p.k_data);
  ASSERT_EQ(dev.size(), 2 * p.k_data.size());
  EXPECT_EQ(dev[0] | (dev[1] << 8), p.k_data[0]);
}

TEST(Fp8, ReferenceUsesTheDequantizedValues) {
  for (attnjit_dtype kv : {E4, E5}) {
    const uint64_t seed = fresh_seed();
    const HostProblem p = make_problem(fp8_spec(kv, true, KvLayout::hnd), seed);
    SCOPED_TRACE(p.describe());
    const Reference r = compute_reference(p);
    // Row by hand from k_value * k_scale and v_value * v_scale.
    const double scale = effective_scale(p.spec);
    for (int64_t t = 0; t < p.total_q; ++t)
      for (int32_t h = 0; h < 4; ++h) {
        const int32_t b = p.seq_of_token[t], kvh = p.kv_head_of(h);
        const int64_t pos = p.spec.seqs[b].kv_len - p.spec.seqs[b].q_len + (t - p.cu_seqlens_q[b]);
        std::vector<double> w(pos + 1);
        double m = -1e300, l = 0;
        for (int64_t j = 0; j <= pos; ++j) {
          double dot = 0;
          for (int32_t d = 0; d < 32; ++d) dot += double(p.q_value(t, h, d)) * (double(p.k_value(b, j, kvh, d)) * p.k_scale_of(kvh));
          m = std::max(m, w[j] = scale * dot);
        }
        for (auto& x : w) l += (x = std::exp(x - m));
        for (int32_t d = 0; d < 16; ++d) {
          double o = 0;
          for (int64_t j = 0; j <= pos; ++j) o += w[j] / l * (double(p.v_value(b, j, kvh, d)) * p.v_scale_of(kvh));
          EXPECT_NEAR(r.o_at(t, h, d), o, 1e-12);
        }
        EXPECT_NEAR(r.lse_at(t, h), m + std::log(l), 1e-12);
      }
    // Doubling the V scales doubles the output and leaves the LSE alone.
    HostProblem p2 = p;
    for (auto& x : p2.v_scale) x *= 2;
    const Reference r2 = compute_reference(p2);
    for (size_t i = 0; i < r.o.size(); ++i) ASSERT_NEAR(r2.o[i], 2 * r.o[i], 1e-12);
    EXPECT_EQ(r2.lse, r.lse);
  }
}

} // namespace
} // namespace attnjit::testing
