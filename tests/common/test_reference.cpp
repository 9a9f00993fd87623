// Unit tests of the float64 reference and of the comparison helper.
#include "reference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <limits>

namespace attnjit::testing {
namespace {

// Softmax over keys [0, n) of sequence b written out by hand, for checking the reference.
std::vector<double> by_hand(const HostProblem& p, int64_t t, int32_t h, int32_t b, int64_t n, double* lse) {
  std::vector<double> s(n);
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j) m = std::max(m, s[j] = hand_score(p, t, h, b, j));
  double l = 0;
  for (auto& x : s) l += (x = std::exp(x - m));
  std::vector<double> o(p.spec.head_dim_v, 0.0);
  for (int64_t j = 0; j < n; ++j)
    for (int32_t d = 0; d < p.spec.head_dim_v; ++d) o[d] += s[j] / l * p.v_value(b, j, p.kv_head_of(h), d);
  if (lse) *lse = m + std::log(l);
  return o;
}

TEST(Reference, SingleKeyReturnsItsValue) {
  const HostProblem p = make_problem(tiny_spec(2, 2, {{1, 1}}, false), fresh_seed());
  const Reference r = compute_reference(p, 1);
  for (int32_t h = 0; h < 2; ++h) {
    for (int32_t d = 0; d < 16; ++d) EXPECT_EQ(r.o_at(0, h, d), p.v_value(0, 0, h, d));
    EXPECT_NEAR(r.lse_at(0, h), hand_score(p, 0, h, 0, 0), 1e-12);
  }
}

TEST(Reference, UniformScoresAverageTheValues) {
  HostProblem p = make_problem(tiny_spec(1, 1, {{3, 7}}, false), fresh_seed());
  for (int64_t t = 0; t < 3; ++t)
    for (int32_t d = 0; d < 16; ++d) p.set_q(t, 0, d, 0.0f); // every score is 0
  const Reference r = compute_reference(p);
  for (int64_t t = 0; t < 3; ++t) {
    for (int32_t d = 0; d < 16; ++d) {
      double mean = 0;
      for (int64_t j = 0; j < 7; ++j) mean += p.v_value(0, j, 0, d) / 7.0;
      EXPECT_NEAR(r.o_at(t, 0, d), mean, 1e-12);
    }
    EXPECT_NEAR(r.lse_at(t, 0), std::log(7.0), 1e-12);
  }
}

TEST(Reference, CausalPrefillRowISeesKeysUpToI) {
  HostProblem p = make_problem(tiny_spec(1, 1, {{6, 6}}, true), fresh_seed());
  Reference r = compute_reference(p);
  for (int32_t d = 0; d < 16; ++d) EXPECT_EQ(r.o_at(0, 0, d), p.v_value(0, 0, 0, d)) << "row 0 sees key 0 only";
  for (int64_t i = 0; i < 6; ++i) {
    double lse = 0;
    const auto o = by_hand(p, i, 0, 0, i + 1, &lse);
    for (int32_t d = 0; d < 16; ++d) EXPECT_NEAR(r.o_at(i, 0, d), o[d], 1e-12);
    EXPECT_NEAR(r.lse_at(i, 0), lse, 1e-12);
  }
  // Changing the last key changes the last row only.
  const Reference before = r;
  for (int32_t d = 0; d < 16; ++d) p.set_v(0, 5, 0, d, 100.0f);
  r = compute_reference(p);
  for (int64_t i = 0; i < 5; ++i)
    for (int32_t d = 0; d < 16; ++d) EXPECT_EQ(r.o_at(i, 0, d), before.o_at(i, 0, d));
  EXPECT_NE(r.o_at(5, 0, 0), before.o_at(5, 0, 0));
}

TEST(Reference, AppendRowsAreBottomRightAligned) {
  // q_len 2, kv_len 6: row 0 sits at position 4 (keys 0..4), row 1 at position 5 (keys 0..5).
  for (bool causal : {true, false}) {
    SCOPED_TRACE(causal ? "causal" : "non-causal");
    const HostProblem p = make_problem(tiny_spec(1, 1, {{2, 6}}, causal), fresh_seed());
    const Reference r = compute_reference(p);
    for (int64_t i = 0; i < 2; ++i) {
      double lse = 0;
      const auto o = by_hand(p, i, 0, 0, causal ? 4 + i + 1 : 6, &lse);
      for (int32_t d = 0; d < 16; ++d) EXPECT_NEAR(r.o_at(i, 0, d), o[d], 1e-12);
      EXPECT_NEAR(r.lse_at(i, 0), lse, 1e-12);
    }
  }
}

TEST(Reference, RaggedBatchUsesEachSequencesOwnKeys) {
  const HostProblem p = make_problem(tiny_spec(2, 1, {{1, 9}, {3, 3}, {2, 13}}, true), fresh_seed());
  const Reference r = compute_reference(p);
  struct Row { int64_t t; int32_t b; int64_t visible; };
  for (Row row : {Row{0, 0, 9}, Row{1, 1, 1}, Row{2, 1, 2}, Row{3, 1, 3}, Row{4, 2, 12}, Row{5, 2, 13}}) {
    for (int32_t h = 0; h < 2; ++h) {
      double lse = 0;
      const auto o = by_hand(p, row.t, h, row.b, row.visible, &lse);
      for (int32_t d = 0; d < 16; ++d) EXPECT_NEAR(r.o_at(row.t, h, d), o[d], 1e-12) << "token " << row.t;
      EXPECT_NEAR(r.lse_at(row.t, h), lse, 1e-12);
    }
  }
}

TEST(Reference, GqaMapsQueryHeadsToKvHeadsInGroups) {
  // 6 q heads over 2 kv heads: heads 0-2 read kv head 0, heads 3-5 read kv head 1.
  HostProblem p = make_problem(tiny_spec(6, 2, {{2, 5}}, false), fresh_seed());
  for (int64_t j = 0; j < 5; ++j)
    for (int32_t d = 0; d < 16; ++d) p.set_v(0, j, 1, d, 3.0f);
  const Reference r = compute_reference(p);
  for (int64_t t = 0; t < 2; ++t)
    for (int32_t h = 0; h < 6; ++h) {
      if (h >= 3) {
        for (int32_t d = 0; d < 16; ++d) EXPECT_NEAR(r.o_at(t, h, d), 3.0, 1e-12);
      } else {
        EXPECT_GT(std::abs(r.o_at(t, h, 0) - 3.0), 0.01);
      }
    }
  // MQA: every head reads the single kv head.
  const HostProblem m = make_problem(tiny_spec(4, 1, {{1, 8}}, false), fresh_seed());
  EXPECT_EQ(m.kv_head_of(3), 0);
  const Reference rm = compute_reference(m);
  for (int32_t h = 0; h < 4; ++h) {
    const auto o = by_hand(m, 0, h, 0, 8, nullptr);
    for (int32_t d = 0; d < 16; ++d) EXPECT_NEAR(rm.o_at(0, h, d), o[d], 1e-12);
  }
}

TEST(Reference, LseMatchesAHandComputedLogSumExp) {
  // One query, three keys; q = e0 and k_j = a_j e0, so s_j = scale * a_j.
  HostProblem p = make_problem(tiny_spec(1, 1, {{1, 3}}, false), 1);
  const float a[3] = {1.0f, -2.0f, 3.5f};
  for (int32_t d = 0; d < 16; ++d) {
    p.set_q(0, 0, d, d == 0 ? 1.0f : 0.0f);
    for (int64_t j = 0; j < 3; ++j) p.set_k(0, j, 0, d, d == 0 ? a[j] : 0.0f);
  }
  const Reference r = compute_reference(p);
  const double sc = 0.25; // 1/sqrt(16)
  const double want = std::log(std::exp(sc * 1.0) + std::exp(sc * -2.0) + std::exp(sc * 3.5));
  EXPECT_NEAR(r.lse_at(0, 0), want, 1e-14);
  // An explicit scale replaces the default.
  p.spec.scale = 2.0f;
  const Reference r2 = compute_reference(p);
  EXPECT_NEAR(r2.lse_at(0, 0), std::log(std::exp(2.0) + std::exp(-4.0) + std::exp(7.0)), 1e-12);
  double w[3], l = 0;
  for (int j = 0; j < 3; ++j) l += (w[j] = std::exp(2.0 * a[j]));
  for (int32_t d = 0; d < 16; ++d) {
    double o = 0;
    for (int64_t j = 0; j < 3; ++j) o += w[j] / l * p.v_value(0, j, 0, d);
    EXPECT_NEAR(r2.o_at(0, 0, d), o, 1e-12);
  }
}

TEST(Reference, LayoutsAndStorageGiveIdenticalResults) {
  const uint64_t seed = fresh_seed();
  ProblemSpec s = tiny_spec(4, 2, {{1, 37}, {9, 9}, {4, 70}, {1, 1}}, true);
  s.q_dtype = s.kv_dtype = ATTNJIT_DTYPE_BF16;
  s.head_dim_qk = 48;
  s.head_dim_v = 32;
  const Reference base = compute_reference(make_problem(s, seed));
  for (KvLayout layout : {KvLayout::nhd, KvLayout::hnd, KvLayout::packed}) {
    for (int32_t page : {0, 1, 16, 256}) {
      ProblemSpec v = s;
      v.layout = layout;
      v.storage = page == 0 ? ATTNJIT_KV_CONTIGUOUS : ATTNJIT_KV_PAGED;
      v.page_size = page;
      v.q_token_padding = 32;
      v.o_token_padding = 16;
      const HostProblem p = make_problem(v, seed);
      SCOPED_TRACE(p.describe());
      const Reference r = compute_reference(p);
      // Same logical inputs, same order of operations: bitwise equal.
      EXPECT_EQ(r.o, base.o);
      EXPECT_EQ(r.lse, base.lse);
    }
  }
}

TEST(Reference, AWrongBlockGivesAVisiblyWrongAnswer) {
  ProblemSpec s = tiny_spec(2, 2, {{4, 40}}, false);
  s.page_size = 8;
  HostProblem p = make_problem(s, fresh_seed());
  const Reference good = compute_reference(p);
  // What a kernel that read one padding entry / one garbage block would produce.
  p.block_table[2] = p.unused_blocks[0];
  const Reference bad = compute_reference(p);
  std::vector<uint16_t> bad_out = p.poisoned_output();
  for (int64_t t = 0; t < p.total_q; ++t)
    for (int32_t h = 0; h < 2; ++h)
      for (int32_t d = 0; d < 16; ++d) bad_out[p.o_index(t, h) + d] = float_to_bits(static_cast<float>(bad.o_at(t, h, d)), s.q_dtype);
  const Comparison c = compare_output(p, good, bad_out);
  EXPECT_GT(c.rel_l2, 0.2) << c.summary();
}

// ---- The comparison helper.

struct Fixture {
  HostProblem p;
  Reference ref;
  std::vector<uint16_t> out; // the reference rounded to the output dtype, a "perfect" kernel
};

Fixture rounded_reference(attnjit_dtype dt) {
  ProblemSpec s = tiny_spec(4, 2, {{1, 50}, {7, 7}, {3, 30}}, true);
  s.q_dtype = s.kv_dtype = dt;
  s.o_token_padding = 8;
  Fixture f{make_problem(s, fresh_seed()), {}, {}};
  f.ref = compute_reference(f.p);
  f.out = f.p.poisoned_output();
  for (int64_t t = 0; t < f.p.total_q; ++t)
    for (int32_t h = 0; h < 4; ++h)
      for (int32_t d = 0; d < 16; ++d)
        f.out[f.p.o_index(t, h) + d] = float_to_bits(static_cast<float>(f.ref.o_at(t, h, d)), dt);
  return f;
}

TEST(Compare, RoundedReferencePasses) {
  for (attnjit_dtype dt : {ATTNJIT_DTYPE_F16, ATTNJIT_DTYPE_BF16}) {
    const Fixture f = rounded_reference(dt);
    const Comparison c = compare_output(f.p, f.ref, f.out);
    EXPECT_TRUE(c.output_ok(default_tolerance(dt))) << c.summary();
    EXPECT_GT(c.rel_l2, 0.0); // rounding did something
    EXPECT_LT(c.rel_l2, dtype_epsilon(dt));
    EXPECT_EQ(c.elements, f.p.total_q * 4 * 16);
  }
}

TEST(Compare, DetectsUnwrittenNanInfAndStrayWrites) {
  const attnjit_dtype dt = ATTNJIT_DTYPE_BF16;
  const Tolerance tol = default_tolerance(dt);
  {
    Fixture f = rounded_reference(dt);
    f.out[f.p.o_index(3, 2) + 5] = kPoison16;
    const Comparison c = compare_output(f.p, f.ref, f.out);
    EXPECT_EQ(c.poison_count, 1);
    EXPECT_FALSE(c.output_ok(tol));
  }
  {
    Fixture f = rounded_reference(dt);
    f.out[f.p.o_index(0, 0)] = 0x7FC0; // a NaN the kernel wrote
    f.out[f.p.o_index(1, 0)] = 0xFF80; // -inf
    const Comparison c = compare_output(f.p, f.ref, f.out);
    EXPECT_EQ(c.nan_count, 1);
    EXPECT_EQ(c.inf_count, 1);
    EXPECT_EQ(c.poison_count, 0);
    EXPECT_FALSE(c.output_ok(tol));
  }
  {
    Fixture f = rounded_reference(dt);
    f.out[f.p.o_index(2, 3) + 16] = 0; // token padding after the last head
    f.out[f.p.o_elems - 1] = 0;        // the guard past the end
    const Comparison c = compare_output(f.p, f.ref, f.out);
    EXPECT_EQ(c.stray_writes, 2);
    EXPECT_FALSE(c.output_ok(tol));
  }
  {
    // One wrong row among many: the worst-row check catches it.
    Fixture f = rounded_reference(dt);
    for (int32_t d = 0; d < 16; ++d) f.out[f.p.o_index(4, 1) + d] = float_to_bits(static_cast<float>(f.ref.o_at(4, 1, d) * 1.2), dt);
    const Comparison c = compare_output(f.p, f.ref, f.out);
    EXPECT_TRUE(c.finite_and_complete());
    EXPECT_EQ(c.worst_row_token, 4);
    EXPECT_EQ(c.worst_row_head, 1);
    EXPECT_FALSE(c.output_ok(tol)) << c.summary();
  }
  {
    Fixture f = rounded_reference(dt);
    std::vector<float> lse = f.p.poisoned_lse();
    for (int32_t h = 0; h < 4; ++h)
      for (int64_t t = 0; t < f.p.total_q; ++t) lse[h * f.p.total_q + t] = static_cast<float>(f.ref.lse_at(t, h));
    Comparison c = compare_lse(f.p, f.ref, lse);
    EXPECT_TRUE(c.lse_ok(tol)) << c.summary();
    lse[f.p.total_q + 2] += 0.01f;
    c = compare_lse(f.p, f.ref, lse);
    EXPECT_FALSE(c.lse_ok(tol));
    EXPECT_EQ(c.worst_head, 1);
    EXPECT_EQ(c.worst_token, 2);
    lse[f.p.total_q + 2] = poison_float();
    lse[f.p.lse_elems - 1] = 0.0f;
    c = compare_lse(f.p, f.ref, lse);
    EXPECT_EQ(c.poison_count, 1);
    EXPECT_EQ(c.stray_writes, 1);
  }
}

// What a FlashAttention-2-style kernel computes, emulated on the host in fp32: KV tiles of
// block_n keys, online softmax with a running max and sum, P rounded to the input dtype before the
// P.V product (accumulated in fp32), the output rounded once at the end. Used to check that the
// tolerances leave room for a correct low-precision kernel.
std::vector<uint16_t> emulate_fa2(const HostProblem& p, int block_n) {
  const ProblemSpec& s = p.spec;
  std::vector<uint16_t> out = p.poisoned_output();
  const float scale = static_cast<float>(effective_scale(s));
  std::vector<float> acc(s.head_dim_v), sc(block_n);
  for (int64_t t = 0; t < p.total_q; ++t) {
    const int32_t b = p.seq_of_token[t];
    const int64_t i = t - p.cu_seqlens_q[b];
    const int64_t pos = s.seqs[b].kv_len - s.seqs[b].q_len + i;
    const int64_t visible = s.causal ? pos + 1 : s.seqs[b].kv_len;
    for (int32_t h = 0; h < s.num_q_heads; ++h) {
      const int32_t kvh = p.kv_head_of(h);
      float m = -std::numeric_limits<float>::infinity(), l = 0;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j0 = 0; j0 < visible; j0 += block_n) {
        const int64_t n = std::min<int64_t>(block_n, visible - j0);
        float tile_max = m;
        for (int64_t j = 0; j < n; ++j) {
          float dot = 0;
          for (int32_t d = 0; d < s.head_dim_qk; ++d) dot += p.q_value(t, h, d) * p.k_value(b, j0 + j, kvh, d);
          sc[j] = dot * scale;
          tile_max = std::max(tile_max, sc[j]);
        }
        const float corr = std::exp(m - tile_max);
        l *= corr;
        for (auto& a : acc) a *= corr;
        for (int64_t j = 0; j < n; ++j) {
          const float pj = std::exp(sc[j] - tile_max);
          l += pj;
          const float pr = round_to(pj, s.q_dtype);
          for (int32_t d = 0; d < s.head_dim_v; ++d) acc[d] += pr * p.v_value(b, j0 + j, kvh, d);
        }
        m = tile_max;
      }
      for (int32_t d = 0; d < s.head_dim_v; ++d) out[p.o_index(t, h) + d] = float_to_bits(acc[d] / l, s.q_dtype);
    }
  }
  return out;
}

TEST(Compare, EmulatedLowPrecisionKernelFitsWellInsideTheTolerance) {
  for (attnjit_dtype dt : {ATTNJIT_DTYPE_F16, ATTNJIT_DTYPE_BF16}) {
    for (bool peaky : {false, true}) {
      ProblemSpec s;
      s.q_dtype = s.kv_dtype = dt;
      s.head_dim_qk = 64;
      s.head_dim_v = 32;
      s.num_q_heads = 4;
      s.num_kv_heads = 2;
      s.causal = true;
      s.scale = peaky ? 0.3f : 0.0f; // scores with stddev ~2.4 instead of ~1
      s.seqs = {{1, 2000}, {40, 40}, {8, 600}, {1, 3}};
      const HostProblem p = make_problem(s, fresh_seed());
      SCOPED_TRACE(p.describe());
      const Reference ref = compute_reference(p);
      const Comparison c = compare_output(p, ref, emulate_fa2(p, 64));
      const Tolerance tol = default_tolerance(dt);
      std::cout << "[ emulated ] " << dtype_name(dt) << (peaky ? " peaky" : " flat ") << " " << c.summary() << "\n";
      EXPECT_TRUE(c.finite_and_complete());
      EXPECT_LT(c.rel_l2, tol.rel_l2 / 3) << c.summary();
      EXPECT_LT(c.worst_row_rel, tol.row_rel_l2 / 2) << c.summary();
    }
  }
}

} // namespace
} // namespace attnjit::testing
