// Unit tests of the host fp16/bf16 conversions and the random fills.
#include "numeric.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace attnjit::testing {
namespace {

TEST(Numeric, Bf16RoundTripsEveryPattern) {
  for (uint32_t b = 0; b <= 0xFFFF; ++b) {
    const auto bits = static_cast<uint16_t>(b);
    const float f = bf16_to_float(bits);
    if (std::isnan(f)) {
      EXPECT_TRUE(is_nan_bits(bits, ATTNJIT_DTYPE_BF16)) << std::hex << b;
      EXPECT_TRUE(is_nan_bits(float_to_bf16(f), ATTNJIT_DTYPE_BF16)) << std::hex << b;
      continue;
    }
    ASSERT_EQ(float_to_bf16(f), bits) << std::hex << b;
  }
}

TEST(Numeric, F16RoundTripsEveryPattern) {
  for (uint32_t b = 0; b <= 0xFFFF; ++b) {
    const auto bits = static_cast<uint16_t>(b);
    const float f = f16_to_float(bits);
    if (std::isnan(f)) {
      EXPECT_TRUE(is_nan_bits(bits, ATTNJIT_DTYPE_F16)) << std::hex << b;
      EXPECT_TRUE(is_nan_bits(float_to_f16(f), ATTNJIT_DTYPE_F16)) << std::hex << b;
      continue;
    }
    ASSERT_EQ(float_to_f16(f), bits) << std::hex << b;
  }
}

TEST(Numeric, Bf16TiesGoToEven) {
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: even is 1.
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  // 1 + 3*2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
  // Just above half rounds up.
  EXPECT_EQ(bf16_to_float(float_to_bf16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f))),
            1.0f + std::ldexp(1.0f, -7));
  EXPECT_EQ(float_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7F80); // rounds to +inf
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
}

TEST(Numeric, F16TiesSubnormalsAndOverflow) {
  EXPECT_EQ(f16_to_float(float_to_f16(1.0f + std::ldexp(1.0f, -11))), 1.0f);
  EXPECT_EQ(f16_to_float(float_to_f16(1.0f + 3 * std::ldexp(1.0f, -11))), 1.0f + std::ldexp(1.0f, -9));
  EXPECT_EQ(float_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(float_to_f16(65519.0f), 0x7BFF);
  EXPECT_EQ(float_to_f16(65520.0f), 0x7C00); // the tie goes to the even neighbour, +inf
  EXPECT_EQ(float_to_f16(-1e6f), 0xFC00);
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -24)), 0x0001);          // smallest subnormal
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -25)), 0x0000);          // half of it: tie to even (0)
  EXPECT_EQ(float_to_f16(1.5f * std::ldexp(1.0f, -25)), 0x0001);   // above half
  EXPECT_EQ(float_to_f16(3.0f * std::ldexp(1.0f, -25)), 0x0002);   // 1.5 units: tie to even (2)
  EXPECT_EQ(float_to_f16(5.0f * std::ldexp(1.0f, -25)), 0x0002);   // 2.5 units: tie to even (2)
  EXPECT_EQ(float_to_f16(std::ldexp(1023.5f, -24)), 0x0400);       // carries into the smallest normal
  EXPECT_EQ(float_to_f16(-std::ldexp(1.0f, -14)), 0x8400);
  EXPECT_EQ(float_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_float(0x3C00), 1.0f);
}

// The result is the nearest representable value; on a tie the even one.
void check_nearest(float x, attnjit_dtype dt) {
  const uint16_t r = float_to_bits(x, dt);
  const double got = bits_to_float(r, dt);
  ASSERT_TRUE(std::isfinite(got)) << x;
  const double err = std::abs(got - static_cast<double>(x));
  for (int delta : {-1, 1}) {
    // Neighbours in magnitude; crossing zero handled by the sign-magnitude encoding.
    const int mag = (r & 0x7FFF) + delta;
    if (mag < 0) continue;
    const uint16_t nb = static_cast<uint16_t>((r & 0x8000) | mag);
    const double other = bits_to_float(nb, dt);
    if (!std::isfinite(other)) continue;
    const double e2 = std::abs(other - static_cast<double>(x));
    ASSERT_LE(err, e2) << "x=" << x << " got=" << got << " neighbour=" << other;
    if (err == e2) {
      ASSERT_EQ(r & 1, 0) << "tie must go to even: x=" << x;
    }
  }
}

TEST(Numeric, RoundingIsToNearestOnRandomValues) {
  Rng rng(fresh_seed());
  for (int i = 0; i < 200000; ++i) {
    const float mant = static_cast<float>(rng.normal());
    const float x16 = std::ldexp(mant, static_cast<int>(rng.uniform_int(-26, 14)));
    if (std::abs(x16) < 65504.0f) check_nearest(x16, ATTNJIT_DTYPE_F16); // beyond rounds to inf
    const float xb = std::ldexp(mant, static_cast<int>(rng.uniform_int(-120, 120)));
    check_nearest(xb, ATTNJIT_DTYPE_BF16);
    if (HasFatalFailure()) return;
  }
}

#if defined(__FLT16_MAX__)
TEST(Numeric, F16MatchesCompilerFloat16) {
  Rng rng(fresh_seed());
  for (int i = 0; i < 200000; ++i) {
    const float x = std::ldexp(static_cast<float>(rng.normal()), static_cast<int>(rng.uniform_int(-30, 17)));
    const _Float16 h = static_cast<_Float16>(x);
    ASSERT_EQ(float_to_f16(x), std::bit_cast<uint16_t>(h)) << x;
  }
}
#endif

TEST(Numeric, PoisonIsADistinctNaN) {
  for (attnjit_dtype dt : {ATTNJIT_DTYPE_F16, ATTNJIT_DTYPE_BF16}) {
    EXPECT_TRUE(is_nan_bits(kPoison16, dt));
    EXPECT_NE(float_to_bits(std::numeric_limits<float>::quiet_NaN(), dt), kPoison16);
  }
  EXPECT_TRUE(std::isnan(poison_float()));
  EXPECT_TRUE(is_poison(poison_float()));
  EXPECT_FALSE(is_poison(std::numeric_limits<float>::quiet_NaN()));
}

TEST(Numeric, RandomFillHasNoZerosAndIsRoughlyNormal) {
  for (attnjit_dtype dt : {ATTNJIT_DTYPE_F16, ATTNJIT_DTYPE_BF16}) {
    Rng rng(fresh_seed());
    std::vector<uint16_t> v(100000);
    fill_random(v, dt, rng);
    double sum = 0, sum2 = 0;
    for (uint16_t b : v) {
      const double x = bits_to_float(b, dt);
      ASSERT_NE(x, 0.0);
      ASSERT_TRUE(std::isfinite(x));
      sum += x;
      sum2 += x * x;
    }
    const double mean = sum / v.size(), var = sum2 / v.size() - mean * mean;
    EXPECT_NEAR(mean, 0.0, 0.02);
    EXPECT_NEAR(var, 1.0, 0.03);
  }
}

TEST(Numeric, CounterDrawsAreNormalNonzeroAndOrderFree) {
  const uint64_t seed = fresh_seed();
  for (attnjit_dtype dt : {ATTNJIT_DTYPE_F16, ATTNJIT_DTYPE_BF16}) {
    double sum = 0, sum2 = 0;
    const int n = 200000;
    for (int i = 0; i < n; ++i) {
      const double x = bits_to_float(counter_normal_bits(seed, 7, i, dt, 1.0), dt);
      ASSERT_NE(x, 0.0);
      sum += x;
      sum2 += x * x;
    }
    EXPECT_NEAR(sum / n, 0.0, 0.02);
    EXPECT_NEAR(sum2 / n, 1.0, 0.03);
    // Same (seed, stream, index), same value, whatever was drawn before; other streams differ.
    EXPECT_EQ(counter_normal_bits(seed, 7, 12345, dt, 1.0), counter_normal_bits(seed, 7, 12345, dt, 1.0));
    int same = 0;
    for (int i = 0; i < 1000; ++i) same += counter_normal_bits(seed, 7, i, dt, 1.0) == counter_normal_bits(seed, 8, i, dt, 1.0);
    EXPECT_LT(same, 50);
    for (int i = 0; i < 1000; ++i) {
      const double g = std::abs(bits_to_float(counter_garbage_bits(seed, 9, i, dt, 16.0), dt));
      EXPECT_GE(g, 7.9);
      EXPECT_LE(g, 16.1);
    }
  }
}

TEST(Numeric, SeedsAreFresh) {
  if (std::getenv("ATTNJIT_TEST_SEED") != nullptr) GTEST_SKIP() << "ATTNJIT_TEST_SEED pins the seed";
  EXPECT_NE(fresh_seed(), fresh_seed());
}

} // namespace
} // namespace attnjit::testing
