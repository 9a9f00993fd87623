// Unit tests of the float64 reference's masks and sparsity patterns (window with sink tokens,
// learned sinks, soft cap, N:M, block sparse, skip-softmax emulation), of the block-mask
// generator, and of the comparison's handling of empty rows and alternates.
#include "reference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <set>

namespace attnjit::testing {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Softmax over an explicit key set (and the sink, if any), written out by hand.
void by_hand(const HostProblem& p, int64_t t, int32_t h, const std::vector<int64_t>& keys, std::vector<double>& o,
             double& lse) {
  const int32_t b = p.seq_of_token[t], kvh = p.kv_head_of(h);
  const bool sink = p.spec.pattern.learned_sinks;
  std::vector<double> s;
  double m = sink ? p.sinks[h] : -kInf;
  for (int64_t j : keys) m = std::max(m, s.emplace_back(hand_score(p, t, h, b, j)));
  o.assign(p.spec.head_dim_v, 0.0);
  if (m == -kInf) {
    lse = -kInf;
    return;
  }
  double l = sink ? std::exp(p.sinks[h] - m) : 0.0;
  for (auto& x : s) l += (x = std::exp(x - m));
  for (size_t k = 0; k < keys.size(); ++k)
    for (int32_t d = 0; d < p.spec.head_dim_v; ++d) o[d] += s[k] / l * p.v_value(b, keys[k], kvh, d) * p.v_scale_of(kvh);
  lse = m + std::log(l);
}

void expect_row(const HostProblem& p, const Reference& r, int64_t t, int32_t h, const std::vector<int64_t>& keys) {
  std::vector<double> o;
  double lse = 0;
  by_hand(p, t, h, keys, o, lse);
  for (int32_t d = 0; d < p.spec.head_dim_v; ++d) ASSERT_NEAR(r.o_at(t, h, d), o[d], 1e-12) << "token " << t << " head " << h;
  if (lse == -kInf) {
    EXPECT_EQ(r.lse_at(t, h), -kInf);
  } else {
    EXPECT_NEAR(r.lse_at(t, h), lse, 1e-12) << "token " << t << " head " << h;
  }
}

int64_t pos_of(const HostProblem& p, int64_t t) {
  const int32_t b = p.seq_of_token[t];
  return p.spec.seqs[b].kv_len - p.spec.seqs[b].q_len + (t - p.cu_seqlens_q[b]);
}

// ---- Sliding window with sink tokens ------------------------------------------------------------

TEST(PatternReference, WindowBoundariesAndSinkTokens) {
  for (bool causal : {true, false}) {
    for (auto [w, sinks] : {std::pair{1, 0}, {4, 0}, {4, 3}, {7, 1}, {100, 2}}) {
      ProblemSpec s = tiny_spec(2, 1, {{12, 12}, {1, 30}, {5, 23}}, causal);
      s.pattern.sliding_window = true;
      s.pattern.window = w;
      s.pattern.sink_tokens = sinks;
      const HostProblem p = make_problem(s, fresh_seed());
      SCOPED_TRACE(p.describe());
      const Reference r = compute_reference(p);
      for (int64_t t = 0; t < p.total_q; ++t) {
        const int32_t b = p.seq_of_token[t];
        const int64_t pos = pos_of(p, t), i = t - p.cu_seqlens_q[b];
        std::vector<int64_t> keys;
        for (int64_t j = 0; j < s.seqs[b].kv_len; ++j) {
          const bool vis = (!causal || j <= pos) && (pos - j < w || j < sinks);
          EXPECT_EQ(key_visible(p, b, 0, i, j), vis) << "pos " << pos << " key " << j;
          if (vis) keys.push_back(j);
        }
        ASSERT_FALSE(keys.empty());
        // The window's edges: the row's own key is in, key pos - W is out unless a sink.
        EXPECT_TRUE(key_visible(p, b, 0, i, pos));
        if (pos - w >= sinks && pos - w >= 0) {
          EXPECT_FALSE(key_visible(p, b, 0, i, pos - w));
        }
        if (pos - w + 1 >= 0) {
          EXPECT_TRUE(key_visible(p, b, 0, i, pos - w + 1));
        }
        for (int32_t h = 0; h < 2; ++h) expect_row(p, r, t, h, keys);
      }
    }
  }
}

TEST(PatternReference, WindowOfOneSeesOnlyItselfAndTheSinks) {
  ProblemSpec s = tiny_spec(1, 1, {{9, 9}}, true);
  s.pattern.sliding_window = true;
  s.pattern.window = 1;
  const HostProblem p = make_problem(s, fresh_seed());
  const Reference r = compute_reference(p);
  for (int64_t t = 0; t < 9; ++t)
    for (int32_t d = 0; d < 16; ++d) EXPECT_NEAR(r.o_at(t, 0, d), p.v_value(0, t, 0, d), 1e-15);
}

// ---- Learned sinks ----------------------------------------------------------------------------

TEST(PatternReference, LearnedSinksJoinTheDenominatorAndTheLse) {
  ProblemSpec s = tiny_spec(4, 2, {{1, 1}, {6, 6}, {3, 40}}, true);
  s.pattern.learned_sinks = true;
  HostProblem p = make_problem(s, fresh_seed());
  SCOPED_TRACE(p.describe());
  ASSERT_EQ(p.sinks.size(), 4u);
  std::set<float> distinct(p.sinks.begin(), p.sinks.end());
  EXPECT_EQ(distinct.size(), 4u);
  const Reference r = compute_reference(p);
  for (int64_t t = 0; t < p.total_q; ++t) {
    std::vector<int64_t> keys;
    for (int64_t j = 0; j <= pos_of(p, t); ++j) keys.push_back(j);
    for (int32_t h = 0; h < 4; ++h) expect_row(p, r, t, h, keys);
  }
  // Single key, sink x: o = v * e^s / (e^s + e^x), lse = log(e^s + e^x).
  const double s0 = hand_score(p, 0, 1, 0, 0), x = p.sinks[1];
  for (int32_t d = 0; d < 16; ++d)
    EXPECT_NEAR(r.o_at(0, 1, d), p.v_value(0, 0, 0, d) / (1 + std::exp(x - s0)), 1e-12);
  EXPECT_NEAR(r.lse_at(0, 1), std::log(std::exp(s0) + std::exp(x)), 1e-12);
  // A huge sink takes all the mass; a very negative one none.
  p.sinks[0] = 200.0f;
  p.sinks[2] = -200.0f;
  const Reference r2 = compute_reference(p);
  ProblemSpec dense_spec = s;
  dense_spec.pattern.learned_sinks = false;
  const Reference dense = compute_reference(make_problem(dense_spec, p.seed));
  for (int64_t t = 0; t < p.total_q; ++t) {
    for (int32_t d = 0; d < 16; ++d) {
      EXPECT_NEAR(r2.o_at(t, 0, d), 0.0, 1e-60);
      EXPECT_NEAR(r2.o_at(t, 2, d), dense.o_at(t, 2, d), 1e-12);
    }
    EXPECT_NEAR(r2.lse_at(t, 0), 200.0, 1e-12);
    EXPECT_NEAR(r2.lse_at(t, 2), dense.lse_at(t, 2), 1e-12);
  }
}

// ---- Soft cap -----------------------------------------------------------------------------------

TEST(PatternReference, SoftCapAppliesTanhToTheScaledScore) {
  ProblemSpec s = tiny_spec(2, 2, {{5, 5}, {1, 33}}, true);
  s.scale = 1.5f; // scores of several units, so the cap bites
  s.pattern.soft_cap = 2.0f;
  const HostProblem p = make_problem(s, fresh_seed());
  const Reference r = compute_reference(p);
  for (int64_t t = 0; t < p.total_q; ++t) {
    std::vector<int64_t> keys;
    for (int64_t j = 0; j <= pos_of(p, t); ++j) keys.push_back(j);
    for (int32_t h = 0; h < 2; ++h) expect_row(p, r, t, h, keys);
    // The LSE of a capped row is at most c + log(number of keys).
    for (int32_t h = 0; h < 2; ++h) EXPECT_LE(r.lse_at(t, h), 2.0 + std::log(static_cast<double>(keys.size())) + 1e-12);
  }
  // A cap far above every score changes (almost) nothing.
  ProblemSpec wide = s;
  wide.pattern.soft_cap = 1e7f;
  ProblemSpec none = s;
  none.pattern.soft_cap = 0.0f;
  const Reference rw = compute_reference(make_problem(wide, p.seed)), rn = compute_reference(make_problem(none, p.seed));
  for (size_t i = 0; i < rw.o.size(); ++i) ASSERT_NEAR(rw.o[i], rn.o[i], 1e-9);
  // The tolerance widens by the tanh.approx error and only under a cap.
  EXPECT_EQ(pattern_tolerance(make_problem(none, p.seed)).lse_abs, default_tolerance(s.q_dtype).lse_abs);
  EXPECT_NEAR(pattern_tolerance(p).lse_abs - default_tolerance(s.q_dtype).lse_abs, 2.0 / 2048, 1e-12);
}

// ---- N:M ------------------------------------------------------------------------------------------

std::vector<int64_t> kept_of(const std::vector<char>& keep) {
  std::vector<int64_t> k;
  for (size_t j = 0; j < keep.size(); ++j)
    if (keep[j]) k.push_back(static_cast<int64_t>(j));
  return k;
}

TEST(PatternReference, NmSelectTiesGoToTheLowerIndex) {
  const double ninf = -kInf;
  using V = std::vector<int64_t>;
  // 2:4, all equal: keys 0 and 1 of each group.
  EXPECT_EQ(kept_of(nm_select({1, 1, 1, 1, 0, 0, 0, 0}, 100, 2, 4, 0, 0)), (V{0, 1, 4, 5}));
  // Ties between the 2nd and 3rd: lower index.
  EXPECT_EQ(kept_of(nm_select({0, 2, 2, 1}, 100, 1, 4, 0, 0)), (V{1}));
  EXPECT_EQ(kept_of(nm_select({3, 2, 2, 1}, 100, 2, 4, 0, 0)), (V{0, 1}));
  // Ranking is among visible keys only: invisible ones take no place.
  EXPECT_EQ(kept_of(nm_select({ninf, 0.5, ninf, 0.1}, 100, 2, 4, 0, 0)), (V{1, 3}));
  EXPECT_EQ(kept_of(nm_select({ninf, ninf, ninf, 0.1}, 100, 2, 4, 0, 0)), (V{3}));
  // Groups are aligned by absolute index; the last group may be short.
  EXPECT_EQ(kept_of(nm_select({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 100, 1, 4, 0, 0)), (V{3, 7, 9}));
  // 8:16 and 4:8 too.
  std::vector<double> s16(16);
  for (int j = 0; j < 16; ++j) s16[j] = (j * 7) % 16; // a permutation of 0..15
  const auto k16 = kept_of(nm_select(s16, 100, 8, 16, 0, 0));
  ASSERT_EQ(k16.size(), 8u);
  for (int64_t j : k16) EXPECT_GE(s16[j], 8);
  EXPECT_EQ(kept_of(nm_select({5, 4, 3, 2, 1, 0, 9, 9}, 100, 4, 8, 0, 0)), (V{0, 1, 6, 7}));
}

TEST(PatternReference, NmExemptKeysAreKeptAndRankedWithTheOthers) {
  using V = std::vector<int64_t>;
  // dense_sink_tokens 1: key 0 kept although it is the smallest.
  EXPECT_EQ(kept_of(nm_select({-5, 1, 2, 3}, 100, 2, 4, 1, 0)), (V{0, 2, 3}));
  // An exempt key among the top N takes one of the N places.
  EXPECT_EQ(kept_of(nm_select({9, 1, 2, 3}, 100, 2, 4, 1, 0)), (V{0, 3}));
  // dense_recent_tokens 2 at pos 7: keys 6 and 7 kept.
  EXPECT_EQ(kept_of(nm_select({0, 1, 2, 3, 9, 8, -1, -2}, 7, 1, 4, 0, 2)), (V{3, 4, 6, 7}));
  // Exempt but invisible: not kept.
  EXPECT_EQ(kept_of(nm_select({-kInf, 1, 2, 3}, 100, 1, 4, 1, 0)), (V{3}));
  // The contract's rule read literally (as the window's pos(i) - j < W is): a key after the row's
  // position (non-causal attention) has pos - j < 0 <= dense_recent_tokens, so it is exempt, even
  // with dense_recent_tokens == 0. N:M thus thins only keys at or before the row's position.
  EXPECT_EQ(kept_of(nm_select({0, 1, 2, 3, 4, 5, 6, 7}, 1, 1, 4, 0, 1)), (V{1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(kept_of(nm_select({0, 1, 2, 3, 4, 5, 6, 7}, 1, 1, 4, 0, 0)), (V{2, 3, 4, 5, 6, 7}));
}

TEST(PatternReference, NmRowsMatchByHandAndDecodeRowsAreDense) {
  for (auto [n, m] : {std::pair{2, 4}, {4, 8}, {8, 16}, {1, 4}}) {
    ProblemSpec s = tiny_spec(4, 2, {{1, 50}, {20, 20}, {7, 61}, {1, 1}}, true);
    s.pattern.nm_n = n;
    s.pattern.nm_m = m;
    s.pattern.nm_dense_sink_tokens = 2;
    s.pattern.nm_dense_recent_tokens = 5;
    const HostProblem p = make_problem(s, fresh_seed());
    SCOPED_TRACE(p.describe());
    const Reference r = compute_reference(p);
    ProblemSpec ds = s;
    ds.pattern.nm_n = ds.pattern.nm_m = 0;
    const Reference dense = compute_reference(make_problem(ds, p.seed));
    for (int64_t t = 0; t < p.total_q; ++t) {
      const int32_t b = p.seq_of_token[t];
      const int64_t pos = pos_of(p, t);
      for (int32_t h = 0; h < 4; ++h) {
        if (r.alternates_of(t, h) != nullptr) continue; // a near-tie: checked in its own test
        if (s.seqs[b].q_len == 1) {
          for (int32_t d = 0; d < 16; ++d) EXPECT_EQ(r.o_at(t, h, d), dense.o_at(t, h, d));
          continue;
        }
        // Kept set by an independent count: j is kept iff exempt, or fewer than N visible keys
        // of its group beat it (higher score, or equal score and lower index).
        std::vector<int64_t> keys;
        for (int64_t j = 0; j <= pos; ++j) {
          bool keep = j < 2 || pos - j < 5;
          int beaten = 0;
          const double sj = hand_score(p, t, h, b, j);
          for (int64_t k = j / m * m; k < std::min<int64_t>(pos + 1, j / m * m + m); ++k) {
            const double sk = hand_score(p, t, h, b, k);
            beaten += sk > sj || (sk == sj && k < j);
          }
          keep = keep || beaten < n;
          if (keep) keys.push_back(j);
        }
        expect_row(p, r, t, h, keys);
      }
    }
  }
}

// Scores of row t (head 0) with -inf past the causal limit.
std::vector<double> row_scores_of(const HostProblem& p, int64_t t) {
  const int32_t b = p.seq_of_token[t];
  std::vector<double> s(p.spec.seqs[b].kv_len, -kInf);
  for (int64_t j = 0; j <= pos_of(p, t); ++j) s[j] = hand_score(p, t, 0, b, j);
  return s;
}

TEST(PatternReference, NmNearTiesGiveAlternatesTheComparisonAccepts) {
  // Two identical keys in one group: their scores tie exactly, the lower index is kept, and the
  // other choice is recorded as an alternate.
  ProblemSpec s = tiny_spec(1, 1, {{4, 12}}, true); // rows at positions 8..11 see keys 4..7
  s.pattern.nm_n = 1;
  s.pattern.nm_m = 4;
  HostProblem p = make_problem(s, fresh_seed());
  for (int32_t d = 0; d < 16; ++d) {
    p.set_k(0, 4, 0, d, p.k_value(0, 4, 0, d) * 3);
    p.set_k(0, 5, 0, d, p.k_value(0, 4, 0, d)); // key 5 = key 4: the same score, other values
  }
  // Make keys 4 and 5 the top of their group for every row: keys 6 and 7 point the other way, and
  // each row's query points along key 4 (with random q the tie could sit at the bottom instead).
  for (int32_t d = 0; d < 16; ++d)
    for (int64_t j : {6, 7}) p.set_k(0, j, 0, d, -p.k_value(0, 4, 0, d));
  for (int64_t t = 0; t < 4; ++t)
    for (int32_t d = 0; d < 16; ++d) p.set_q(t, 0, d, p.k_value(0, 4, 0, d) + 0.01f * p.q_value(t, 0, d));
  const Reference r = compute_reference(p);
  int64_t with_alternates = 0;
  for (int64_t t = 0; t < 4; ++t) {
    const double s4 = hand_score(p, t, 0, 0, 4), s5 = hand_score(p, t, 0, 0, 5);
    ASSERT_GE(pos_of(p, t), 7);
    ASSERT_EQ(s4, s5);
    if (s4 < hand_score(p, t, 0, 0, 6) || s4 < hand_score(p, t, 0, 0, 7)) continue;
    ++with_alternates;
    const auto* alts = r.alternates_of(t, 0);
    ASSERT_NE(alts, nullptr) << "row " << t;
    // Primary: key 4 of the tie; alternate: key 5.
    std::vector<int64_t> keys = kept_of(nm_select(row_scores_of(p, t), pos_of(p, t), 1, 4, 0, 0));
    ASSERT_TRUE(std::find(keys.begin(), keys.end(), 4) != keys.end());
    expect_row(p, r, t, 0, keys);
    std::replace(keys.begin(), keys.end(), int64_t{4}, int64_t{5});
    std::vector<double> o;
    double lse;
    by_hand(p, t, 0, keys, o, lse);
    bool found = false;
    for (const RowVariant& v : *alts) {
      double e = 0;
      for (int32_t d = 0; d < 16; ++d) e = std::max(e, std::abs(v.o[d] - o[d]));
      found = found || e < 1e-12;
    }
    EXPECT_TRUE(found) << "the swapped choice is an alternate";
  }
  EXPECT_GT(with_alternates, 0);
  EXPECT_GE(r.ambiguous, with_alternates);
  // A kernel that picked key 5 in every tied row passes; one that kept both does not.
  std::vector<uint16_t> alt_out = p.poisoned_output(), both_out = p.poisoned_output();
  for (int64_t t = 0; t < 4; ++t) {
    const auto* alts = r.alternates_of(t, 0);
    std::vector<int64_t> keys = kept_of(nm_select(row_scores_of(p, t), pos_of(p, t), 1, 4, 0, 0));
    for (int32_t d = 0; d < 16; ++d) {
      const double a = alts ? (*alts)[0].o[d] : r.o_at(t, 0, d);
      alt_out[p.o_index(t, 0) + d] = float_to_bits(static_cast<float>(a), s.q_dtype);
    }
    if (alts) keys.push_back(5);
    std::vector<double> o;
    double lse;
    by_hand(p, t, 0, keys, o, lse);
    for (int32_t d = 0; d < 16; ++d) both_out[p.o_index(t, 0) + d] = float_to_bits(static_cast<float>(o[d]), s.q_dtype);
  }
  const Tolerance tol = default_tolerance(s.q_dtype);
  const Comparison ca = compare_output(p, r, alt_out);
  EXPECT_TRUE(ca.output_ok(tol)) << ca.summary();
  EXPECT_EQ(ca.alternates_used, static_cast<int64_t>(r.alternates.size()));
  EXPECT_FALSE(compare_output(p, r, both_out).output_ok(tol));
}

// ---- Block sparse -------------------------------------------------------------------------------

TEST(PatternReference, BlockMaskGeneratorShapesAndGarbagePadding) {
  for (bool per_batch : {false, true}) {
    for (bool unsorted : {false, true}) {
      ProblemSpec s = tiny_spec(3, 1, {{40, 40}, {1, 70}, {17, 100}, {33, 33}}, false);
      s.pattern.sparse_block_q = 16;
      s.pattern.sparse_block_kv = 16;
      s.pattern.block_density = 0.4;
      s.pattern.mask_per_batch = per_batch;
      s.pattern.mask_unsorted = unsorted;
      s.pattern.mask_extra_columns = 3;
      s.pattern.mask_extra_q_blocks = 1;
      const HostProblem p = make_problem(s, fresh_seed());
      SCOPED_TRACE(p.describe());
      EXPECT_EQ(p.mask_batch, per_batch ? 4 : 1);
      EXPECT_EQ(p.mask_q_blocks, 3 + 1);
      ASSERT_EQ(p.kv_num_blocks.size(), static_cast<size_t>(p.mask_batch) * 3 * p.mask_q_blocks);
      ASSERT_EQ(p.kv_indices.size(), p.kv_num_blocks.size() * p.mask_max_kv_blocks);
      int32_t longest = 0;
      bool any_unsorted = false;
      for (size_t row = 0; row < p.kv_num_blocks.size(); ++row) {
        const int32_t mb = static_cast<int32_t>(row / (3 * p.mask_q_blocks));
        const int32_t nkv = ((per_batch ? s.seqs[mb].kv_len : 100) + 15) / 16;
        const int32_t n = p.kv_num_blocks[row];
        longest = std::max(longest, n);
        const int32_t* list = &p.kv_indices[row * p.mask_max_kv_blocks];
        std::set<int32_t> listed(list, list + n);
        EXPECT_EQ(listed.size(), static_cast<size_t>(n)) << "duplicates";
        for (int32_t c = 0; c < n; ++c) {
          EXPECT_GE(list[c], 0);
          EXPECT_LT(list[c], nkv);
          if (c > 0 && list[c] < list[c - 1]) any_unsorted = true;
        }
        for (int32_t c = n; c < p.mask_max_kv_blocks; ++c) {
          EXPECT_GE(list[c], 0);
          EXPECT_LT(list[c], nkv) << "garbage stays in range";
          if (n < nkv) {
            EXPECT_EQ(listed.count(list[c]), 0u) << "garbage names a block the row does not list";
          }
        }
      }
      EXPECT_EQ(p.mask_max_kv_blocks, longest + 3);
      if (!unsorted) {
        EXPECT_FALSE(any_unsorted);
      }
    }
  }
}

TEST(PatternReference, BlockSparseRowsSeeOnlyListedBlocksAndEmptyRowsAreZero) {
  for (bool causal : {false, true}) {
    for (bool sinks : {false, true}) {
      ProblemSpec s = tiny_spec(2, 1, {{40, 40}, {1, 70}, {17, 100}}, causal);
      s.pattern.sparse_block_q = 16;
      s.pattern.sparse_block_kv = 16;
      s.pattern.block_density = 0.3;
      s.pattern.mask_per_batch = true;
      s.pattern.mask_empty_rows = 0.25;
      s.pattern.learned_sinks = sinks;
      if (causal) { // with a window too
        s.pattern.sliding_window = true;
        s.pattern.window = 30;
        s.pattern.sink_tokens = 3;
      }
      const HostProblem p = make_problem(s, fresh_seed());
      SCOPED_TRACE(p.describe());
      const Reference r = compute_reference(p);
      int64_t empty = 0;
      for (int64_t t = 0; t < p.total_q; ++t) {
        const int32_t b = p.seq_of_token[t];
        const int64_t i = t - p.cu_seqlens_q[b], pos = pos_of(p, t);
        for (int32_t h = 0; h < 2; ++h) {
          const int64_t row = p.mask_row(b, h, i);
          ASSERT_GE(row, 0);
          std::set<int64_t> blocks(&p.kv_indices[row * p.mask_max_kv_blocks],
                                   &p.kv_indices[row * p.mask_max_kv_blocks] + p.kv_num_blocks[row]);
          std::vector<int64_t> keys;
          for (int64_t j = 0; j < s.seqs[b].kv_len; ++j) {
            bool vis = blocks.count(j / 16) && (!causal || j <= pos);
            if (causal) vis = vis && (pos - j < 30 || j < 3);
            EXPECT_EQ(key_visible(p, b, h, i, j), vis);
            if (vis) keys.push_back(j);
          }
          if (keys.empty()) {
            ++empty;
            for (int32_t d = 0; d < 16; ++d) EXPECT_EQ(r.o_at(t, h, d), 0.0);
            if (sinks) {
              EXPECT_EQ(r.lse_at(t, h), static_cast<double>(p.sinks[h]));
            } else {
              EXPECT_EQ(r.lse_at(t, h), -kInf);
            }
          }
          expect_row(p, r, t, h, keys);
        }
      }
      EXPECT_EQ(r.empty_rows, empty);
      EXPECT_GT(empty, 0) << "the mask should leave some rows empty (mask_empty_rows = 0.25)";
    }
  }
}

TEST(PatternReference, EmptyRowsNeedZeroOutputAndMinusInfinityLse) {
  ProblemSpec s = tiny_spec(2, 1, {{20, 20}, {3, 50}}, false);
  s.pattern.sparse_block_q = 16;
  s.pattern.sparse_block_kv = 16;
  s.pattern.mask_empty_rows = 0.5;
  s.pattern.mask_per_batch = true;
  const HostProblem p = make_problem(s, fresh_seed());
  const Reference r = compute_reference(p);
  ASSERT_GT(r.empty_rows, 0);
  std::vector<uint16_t> out = p.poisoned_output();
  std::vector<float> lse = p.poisoned_lse();
  int64_t et = -1;
  int32_t eh = -1;
  for (int64_t t = 0; t < p.total_q; ++t)
    for (int32_t h = 0; h < 2; ++h) {
      for (int32_t d = 0; d < 16; ++d) out[p.o_index(t, h) + d] = float_to_bits(static_cast<float>(r.o_at(t, h, d)), s.q_dtype);
      lse[h * p.total_q + t] = static_cast<float>(r.lse_at(t, h));
      if (r.lse_at(t, h) == -kInf) et = t, eh = h;
    }
  ASSERT_GE(et, 0);
  const Tolerance tol = default_tolerance(s.q_dtype);
  EXPECT_TRUE(compare_output(p, r, out).output_ok(tol));
  EXPECT_TRUE(compare_lse(p, r, lse).lse_ok(tol)) << compare_lse(p, r, lse).summary();
  // A finite LSE or a nonzero output in an empty row fails.
  std::vector<float> bad_lse = lse;
  bad_lse[eh * p.total_q + et] = -1e30f;
  const Comparison cl = compare_lse(p, r, bad_lse);
  EXPECT_FALSE(cl.lse_ok(tol));
  EXPECT_EQ(cl.inf_mismatch, 1);
  std::vector<uint16_t> bad_out = out;
  bad_out[p.o_index(et, eh) + 3] = float_to_bits(1e-3f, s.q_dtype);
  EXPECT_FALSE(compare_output(p, r, bad_out).output_ok(tol));
  // -inf where the reference is finite fails too.
  for (int64_t t = 0; t < p.total_q; ++t)
    if (r.lse_at(t, 0) != -kInf) {
      std::vector<float> l2 = lse;
      l2[t] = -std::numeric_limits<float>::infinity();
      EXPECT_FALSE(compare_lse(p, r, l2).lse_ok(tol));
      break;
    }
}

// ---- Skip-softmax emulation ---------------------------------------------------------------------

TEST(PatternReference, SkipDefaultTileListsCoverTheVisibleKeys) {
  for (bool causal : {true, false}) {
    ProblemSpec s = tiny_spec(4, 2, {{1, 300}, {70, 70}, {5, 200}}, causal);
    s.pattern.skip_threshold = 1e-30f;
    s.pattern.sliding_window = causal;
    s.pattern.window = 50;
    s.pattern.sink_tokens = 5;
    const HostProblem p = make_problem(s, fresh_seed());
    for (bool pack : {false, true}) {
      int64_t expect_seen = 0;
      for (const QueryTile& qt : query_tiles(p, 16, pack)) {
        const auto tiles = default_kv_tiles(p, qt, 32);
        expect_seen += static_cast<int64_t>(tiles.size());
        for (size_t k = 1; k < tiles.size(); ++k) EXPECT_LT(tiles[k - 1].begin, tiles[k].begin) << "ascending";
        if (causal && s.pattern.sliding_window && pos_of(p, p.cu_seqlens_q[qt.seq]) > 100) {
          EXPECT_EQ(tiles.front().begin, 0) << "the sink tile comes first";
        }
      }
      // lambda = 1e-30: nothing is skipped; the emulation equals the dense reference exactly.
      const SkipReference sr = compute_skip_reference(p, make_skip_tiling(16, 32, pack, 3));
      EXPECT_EQ(sr.tiles_seen, expect_seen);
      EXPECT_EQ(sr.tiles_skipped, 0);
      EXPECT_EQ(sr.ref.o, sr.dense.o);
      const Reference dense = compute_reference(p);
      for (size_t i = 0; i < dense.o.size(); ++i) ASSERT_NEAR(sr.dense.o[i], dense.o[i], 1e-13);
    }
  }
}

TEST(PatternReference, SkipDecisionsFollowTheRunningMaxAndRestartPerSplit) {
  // One query row, 16 keys, tiles of 4. Scores are made by hand: the row's q is e_0 * a, key j
  // has k[0] = x_j, so s_j = scale * a * x_j.
  ProblemSpec s = tiny_spec(1, 1, {{1, 16}}, false);
  s.pattern.skip_threshold = 0.1f; // ln = -2.3026
  HostProblem p = make_problem(s, fresh_seed());
  const double scale = effective_scale(s);
  for (int32_t d = 0; d < 16; ++d) p.set_q(0, 0, d, d == 0 ? 1.0f : 0.0f);
  // Tiles: [0,4) max 8; [4,8) max 5 (8 - 3 < 8 - 2.3: skipped); [8,12) max 6 (> 5.7: kept);
  // [12,16) max 2 (skipped).
  const double want[16] = {8, 1, 0, 2, 5, 4, 3, 1, 6, 0, 1, 0, 2, 1, 0, 1};
  for (int64_t j = 0; j < 16; ++j)
    for (int32_t d = 0; d < 16; ++d) p.set_k(0, j, 0, d, d == 0 ? static_cast<float>(want[j] / scale) : 0.0f);
  for (int64_t j = 0; j < 16; ++j) ASSERT_NEAR(hand_score(p, 0, 0, 0, j), want[j], 0.02);
  const SkipReference one = compute_skip_reference(p, make_skip_tiling(16, 4, false, 1));
  EXPECT_EQ(one.tiles_seen, 4);
  EXPECT_EQ(one.tiles_skipped, 2);
  std::vector<int64_t> keys = {0, 1, 2, 3, 8, 9, 10, 11};
  expect_row(p, one.ref, 0, 0, keys);
  EXPECT_EQ(one.dropped_keys[0], 8);
  // Two splits [0,2) and [2,4): the second starts from m = -inf, so tile 2 is kept, and tile 3
  // (max 2 < 6 - 2.3) is skipped within it.
  const SkipReference two = compute_skip_reference(p, make_skip_tiling(16, 4, false, 2));
  EXPECT_EQ(two.tiles_skipped, 2);
  // Four splits: every tile starts a split, nothing is skipped.
  const SkipReference four = compute_skip_reference(p, make_skip_tiling(16, 4, false, 4));
  EXPECT_EQ(four.tiles_skipped, 0);
  EXPECT_EQ(four.ref.o, four.dense.o);
  // Splits that start with tile 1: tile 1 kept (m = -inf), tile 2 kept (6 > 5 - 2.3), tile 3 skipped.
  SkipTiling t = make_skip_tiling(16, 4, false, 1);
  t.split_starts = [](const QueryTile&, int32_t) { return std::vector<int32_t>{1}; };
  const SkipReference custom = compute_skip_reference(p, t);
  EXPECT_EQ(custom.tiles_skipped, 1);
  expect_row(p, custom.ref, 0, 0, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
}

TEST(PatternReference, SkipNeedsEveryRowOfTheQueryTileToAgree) {
  // Two rows in one query tile; tile 1 is far below row 0's max but not row 1's.
  ProblemSpec s = tiny_spec(1, 1, {{2, 8}}, false);
  s.pattern.skip_threshold = 0.01f; // ln = -4.6
  HostProblem p = make_problem(s, fresh_seed());
  const double scale = effective_scale(s);
  for (int32_t d = 0; d < 16; ++d) {
    p.set_q(0, 0, d, d == 0 ? 1.0f : 0.0f);
    p.set_q(1, 0, d, d == 1 ? 1.0f : 0.0f);
  }
  // Row 0 sees k[0], row 1 sees k[1].
  const double r0[8] = {9, 0, 0, 0, 1, 1, 1, 1}, r1[8] = {1, 0, 0, 0, 2, 0, 0, 0};
  for (int64_t j = 0; j < 8; ++j)
    for (int32_t d = 0; d < 16; ++d)
      p.set_k(0, j, 0, d, d == 0 ? float(r0[j] / scale) : d == 1 ? float(r1[j] / scale) : 0.0f);
  const SkipReference both = compute_skip_reference(p, make_skip_tiling(2, 4, false));
  EXPECT_EQ(both.tiles_skipped, 0) << "row 1 (max 1, then 2) disagrees";
  const SkipReference alone = compute_skip_reference(p, make_skip_tiling(1, 4, false));
  EXPECT_EQ(alone.tiles_skipped, 1) << "row 0 alone skips its second tile (1 < 9 - 4.6)";
}

TEST(PatternReference, SkipErrorAgainstDenseIsWithinItsBound) {
  for (float lambda : {1e-3f, 1e-2f, 1e-1f}) {
    for (bool pack : {false, true}) {
      ProblemSpec s = tiny_spec(4, 1, {{1, 900}, {40, 600}, {1, 2000}}, true);
      s.head_dim_qk = 64;
      s.hot_key_fraction = 0.02;
      s.hot_key_boost = 10.0;
      s.pattern.skip_threshold = lambda;
      s.pattern.learned_sinks = true;
      const HostProblem p = make_problem(s, fresh_seed());
      SCOPED_TRACE(p.describe());
      const SkipReference sr = compute_skip_reference(p, make_skip_tiling(16, 32, pack, pack ? 3 : 1));
      EXPECT_GT(sr.tiles_skipped, 0);
      double worst_ratio = 0, worst_f = 0, err2 = 0, ref2 = 0;
      for (int64_t t = 0; t < p.total_q; ++t)
        for (int32_t h = 0; h < 4; ++h) {
          const size_t row = static_cast<size_t>(t) * 4 + h;
          double e2 = 0;
          for (int32_t d = 0; d < 16; ++d) {
            const double e = sr.ref.o_at(t, h, d) - sr.dense.o_at(t, h, d);
            e2 += e * e;
            ref2 += sr.dense.o_at(t, h, d) * sr.dense.o_at(t, h, d);
          }
          err2 += e2;
          const double f = sr.dropped_fraction[row];
          EXPECT_LE(std::sqrt(e2), sr.o_bound[row] * (1 + 1e-9) + 1e-15);
          if (sr.ref.alternates_of(t, h) == nullptr) { // (else f is the largest over the outcomes)
            EXPECT_NEAR(sr.ref.lse_at(t, h) - sr.dense.lse_at(t, h), std::log1p(-f), 1e-9);
          }
          // The a-priori form: each dropped key weighs less than lambda times the row max (an
          // alternate may drop a tile right at the threshold: a hair more).
          EXPECT_LE(f, lambda * static_cast<double>(sr.dropped_keys[row]) * (1 + 1e-3) + 1e-15);
          if (sr.o_bound[row] > 0) worst_ratio = std::max(worst_ratio, std::sqrt(e2) / sr.o_bound[row]);
          worst_f = std::max(worst_f, f);
        }
      std::cout << "[ skip ref ] lambda " << lambda << (pack ? " packed" : " prefill") << ": skipped "
                << sr.tiles_skipped << "/" << sr.tiles_seen << " tiles, rel_l2 vs dense " << std::sqrt(err2 / ref2)
                << ", worst dropped fraction " << worst_f << ", worst error/bound " << worst_ratio << "\n";
    }
  }
}

} // namespace
} // namespace attnjit::testing

namespace attnjit::testing {
namespace {

// ---- Block-mask builder reference ------------------------------------------------------------------

// q rows all e_0, key j of block c has k[0] = value[c] (other channels 0): hand_score(c) = value[c].
HostProblem mask_problem(std::vector<SeqShape> seqs, const std::vector<std::vector<float>>& values, int32_t bkv) {
  ProblemSpec s = tiny_spec(2, 1, std::move(seqs), false);
  s.storage = ATTNJIT_KV_CONTIGUOUS;
  HostProblem p = make_problem(s, fresh_seed());
  for (int64_t t = 0; t < p.total_q; ++t)
    for (int32_t h = 0; h < 2; ++h)
      for (int32_t d = 0; d < 16; ++d) p.set_q(t, h, d, d == 0 ? 1.0f : 0.0f);
  for (int32_t b = 0; b < p.batch; ++b)
    for (int64_t j = 0; j < s.seqs[b].kv_len; ++j)
      for (int32_t d = 0; d < 16; ++d) p.set_k(b, j, 0, d, d == 0 ? values[b][j / bkv] : 0.0f);
  return p;
}

TEST(BlockMaskReference, TopKOfPooledScoresWithTiesForcedFirstAndCausal) {
  // Sequence 0: 8 KV blocks of 4 keys; sequence 1: 3 blocks, the last one partial.
  const std::vector<std::vector<float>> values = {{1, 5, 3, 5, 2, 8, 0, 4}, {2, 1, 3}};
  HostProblem p = mask_problem({{8, 32}, {3, 10}}, values, 4);
  BlockMaskSpec spec;
  spec.block_q = 4;
  spec.block_kv = 4;
  spec.topk = 0.375f; // 3 of 8; ceil(1.125) = 2 of 3
  BlockMaskReference r = reference_block_mask(p, spec, 2);
  ASSERT_EQ(r.rows.size(), 2u * 2 * 2);
  using V = std::vector<int32_t>;
  EXPECT_EQ(r.rows[0].kept, (V{1, 3, 5})) << "8, then the tie 5/5 both in";
  EXPECT_EQ(r.rows[0].keep, 3);
  EXPECT_NEAR(r.rows[0].score[5], 8.0, 1e-12);
  EXPECT_EQ(r.rows[1].kept, (V{1, 3, 5})); // q block 1 pools the same q
  EXPECT_EQ(r.rows[2 * 2 + 0].kept, (V{0, 2}));     // sequence 1, head 0: 3 and 2
  EXPECT_EQ(r.rows[2 * 2 + 1].keep, 0) << "q block 1 of a 3-row sequence is empty";
  EXPECT_TRUE(r.rows[2 * 2 + 1].kept.empty());
  // Ties to the lower index: top 1 of {5 at 1, 5 at 3} after 8.
  spec.topk = 0.25f; // 2 of 8
  r = reference_block_mask(p, spec, 2);
  EXPECT_EQ(r.rows[0].kept, (V{1, 5}));
  // The forced first block comes on top of the top-k.
  spec.force_first_block = true;
  r = reference_block_mask(p, spec, 2);
  EXPECT_EQ(r.rows[0].kept, (V{0, 1, 5}));
  EXPECT_EQ(r.rows[2 * 2 + 0].kept, (V{0, 2})) << "sequence 1: top-1 of 3 blocks is block 2, plus block 0";
  // topk 1 keeps every competing block; a tiny topk keeps one.
  spec.force_first_block = false;
  spec.topk = 1.0f;
  r = reference_block_mask(p, spec, 2);
  EXPECT_EQ(r.rows[0].kept.size(), 8u);
  spec.topk = 1.0f / 64;
  r = reference_block_mask(p, spec, 2);
  EXPECT_EQ(r.rows[0].kept, (V{5}));
  // Causal: q block 0 of sequence 0 (rows 0..3 at positions 24..27) sees keys up to 27: blocks
  // 0..6 compete; block 7 (the best) does not.
  spec.causal = true;
  spec.topk = 0.125f;
  r = reference_block_mask(p, spec, 2);
  EXPECT_EQ(r.rows[0].score.size(), 7u);
  EXPECT_EQ(r.rows[0].kept, (V{5}));
  EXPECT_EQ(r.rows[1].score.size(), 8u);
}

TEST(BlockMaskReference, TheCheckAcceptsTiesAndRejectsWrongMasks) {
  const std::vector<std::vector<float>> values = {{1, 5, 3, 5, 2, 8, 0, 4}, {2, 1, 3}};
  HostProblem p = mask_problem({{8, 32}, {3, 10}}, values, 4);
  BlockMaskSpec spec;
  spec.block_q = 4;
  spec.block_kv = 4;
  spec.topk = 0.25f; // 2 of 8: 5 (score 8), then 1 or 3 (both 5)
  const BlockMaskReference r = reference_block_mask(p, spec, 2);
  const int32_t width = 10;
  std::vector<int32_t> num(r.rows.size(), 0), idx(r.rows.size() * width, -77);
  for (size_t row = 0; row < r.rows.size(); ++row) {
    num[row] = static_cast<int32_t>(r.rows[row].kept.size());
    std::copy(r.rows[row].kept.begin(), r.rows[row].kept.end(), &idx[row * width]);
  }
  EXPECT_EQ(check_block_mask(r, spec, num, idx, width), "");
  {
    auto i2 = idx; // the tie traded: {3, 5}
    i2[0] = 3;
    EXPECT_EQ(check_block_mask(r, spec, num, i2, width), "");
  }
  {
    auto i2 = idx; // a worse block
    i2[0] = 2;
    EXPECT_NE(check_block_mask(r, spec, num, i2, width), "");
  }
  {
    auto i2 = idx; // descending
    std::swap(i2[0], i2[1]);
    EXPECT_NE(check_block_mask(r, spec, num, i2, width), "");
  }
  {
    auto n2 = num; // one block too many
    n2[0] = 3;
    idx[2] = 7;
    EXPECT_NE(check_block_mask(r, spec, n2, idx, width), "");
  }
  {
    auto n2 = num; // an empty q block that lists something
    n2[2 * 2 + 1] = 1;
    EXPECT_NE(check_block_mask(r, spec, n2, idx, width), "");
  }
  {
    BlockMaskSpec forced = spec;
    forced.force_first_block = true;
    const BlockMaskReference rf = reference_block_mask(p, forced, 2);
    EXPECT_NE(check_block_mask(rf, forced, num, idx, width), "") << "the forced block is missing";
  }
}

} // namespace
} // namespace attnjit::testing
