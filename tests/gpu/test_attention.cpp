// Correctness of the attention kernels against the float64 reference, through the C ABI.
//
// Two parameterized suites share one test body:
//  * Pairwise/AttentionCase: every pair of values of the axes below appears in at least one case
//    (all-pairs selection), instead of the full product (which would be ~100k cases):
//      workload (prefill: mixed ragged batch, long prompt, append, q_len-1 rows; decode: batch,
//               long KV) x dtype (f16, bf16) x head dims (QK/V) x storage (pages 1..256,
//               contiguous) x layout (NHD, HND, packed K|V) x heads (GQA 1, 4, 8, MQA) x causal
//               x LSE x scale (default, explicit) x q/o strides (dense, q a view into a fused QKV
//               tensor with o padded) x bounds (exact, loose max_seqlen / max_batch).
//  * Targeted/AttentionCase: single cases for things pairs do not reach (very long KV, big
//    batches, many heads, q_len > 1 through the decode family, peaky softmax, mixed dtypes).
// Test names spell the case out, e.g.
//   Pairwise/AttentionCase.MatchesReference/decode_long_bf16_d192x128_p16_hnd_g4_causal_lse_...
// so `--gtest_filter='*decode_long*'` or `'*_p1_*'` selects a slice.
//
// Inputs are fresh random data every run; a failure prints the seed, and ATTNJIT_TEST_SEED=<seed>
// replays it.
#include "gpu_harness.h"
#include "pairwise.h"

#include <chrono>
#include <cmath>
#include <future>
#include <iostream>
#include <map>
#include <ostream>
#include <string>
#include <vector>

namespace attnjit::testing {
namespace {

struct AttentionCase {
  std::string name;
  attnjit_family family = ATTNJIT_FAMILY_PREFILL;
  ProblemSpec spec;
  RunOptions run;
  // Decode with q_len > 1: the header does not promise it; a clear refusal from attnjit_run
  // (INVALID_ARGUMENT or UNSUPPORTED with a message, nothing written) is accepted.
  bool refusal_ok = false;
  // Mixed q/kv dtypes: plan_create may refuse (UNSUPPORTED, or INVALID_ARGUMENT naming kv_dtype).
  bool unsupported_ok = false;
  // A pinned tile (zero: the plan's own). Warpgroup tiles are refused off sm_90a: the case skips.
  attnjit_tile_config tile{};
};

void PrintTo(const AttentionCase& c, std::ostream* os) { *os << c.name; }

// ---- Workloads ---------------------------------------------------------------------------------

enum class Workload { prefill_mixed, prefill_long, prefill_append, prefill_decode_rows, decode_batch, decode_long };
constexpr Workload kWorkloads[] = {Workload::prefill_mixed,       Workload::prefill_long, Workload::prefill_append,
                                   Workload::prefill_decode_rows, Workload::decode_batch, Workload::decode_long};

const char* workload_name(Workload w) {
  switch (w) {
  case Workload::prefill_mixed: return "prefill_mixed";
  case Workload::prefill_long: return "prefill_long";
  case Workload::prefill_append: return "prefill_append";
  case Workload::prefill_decode_rows: return "prefill_qlen1";
  case Workload::decode_batch: return "decode_batch";
  case Workload::decode_long: return "decode_long";
  }
  return "?";
}

attnjit_family workload_family(Workload w) {
  return w == Workload::decode_batch || w == Workload::decode_long ? ATTNJIT_FAMILY_DECODE : ATTNJIT_FAMILY_PREFILL;
}

// KV lengths around page and tile boundaries first, then a deterministic spread.
std::vector<int32_t> kv_lengths(int32_t page, size_t n) {
  std::vector<int32_t> v = {1, 2, std::max(1, page - 1), page, page + 1, 2 * page + 1, 15, 16, 17, 63, 64, 65,
                            127, 128, 129, 255, 256, 257, 511, 777, 1000};
  v.resize(std::min(v.size(), n));
  for (size_t i = v.size(); i < n; ++i) v.push_back(static_cast<int32_t>((i * 131) % 997 + 1));
  return v;
}

std::vector<SeqShape> workload_seqs(Workload w, int32_t page) {
  switch (w) {
  case Workload::prefill_mixed: // decode rows, append rows and prompts in one ragged batch
    return {{1, 1}, {1, 300}, {7, 7}, {5, 260}, {96, 96}, {1, page + 1}, {33, 2 * page + 40}, {130, 131}};
  case Workload::prefill_long:
    return {{1000, 1000}, {40, 700}, {1, 1}};
  case Workload::prefill_append:
    return {{16, 1500}, {64, 2048}, {1, 900}, {29, 29 + 3 * page}};
  case Workload::prefill_decode_rows:
  case Workload::decode_batch: {
    std::vector<SeqShape> s;
    for (int32_t kv : kv_lengths(page, w == Workload::decode_batch ? 33 : 12)) s.push_back({1, kv});
    return s;
  }
  case Workload::decode_long: // few sequences, long KV: the split-KV path with several splits
    return {{1, 5000}, {1, 3001}, {1, 1}};
  }
  return {};
}

// ---- Pairwise matrix ---------------------------------------------------------------------------

struct Dims { int32_t qk, v; };
constexpr Dims kDims[] = {{16, 16}, {32, 96}, {64, 64}, {80, 80}, {96, 32}, {128, 128}, {192, 128}, {64, 256}, {256, 256}};
constexpr int32_t kPages[] = {1, 2, 16, 32, 64, 256, 0}; // 0: contiguous storage
constexpr KvLayout kLayouts[] = {KvLayout::nhd, KvLayout::hnd, KvLayout::packed};
struct Heads { const char* name; int32_t q, kv; };
constexpr Heads kHeads[] = {{"g1", 4, 4}, {"g4", 8, 2}, {"g8", 16, 2}, {"mqa", 6, 1}};
constexpr attnjit_dtype kDtypes[] = {ATTNJIT_DTYPE_F16, ATTNJIT_DTYPE_BF16};

std::vector<AttentionCase> pairwise_cases() {
  const std::vector<int> sizes = {6, 2, 9, 7, 3, 4, 2, 2, 2, 2, 2};
  std::vector<AttentionCase> cases;
  for (const std::vector<int>& r : all_pairs(sizes)) {
    AttentionCase c;
    const Workload w = kWorkloads[r[0]];
    const attnjit_dtype dt = kDtypes[r[1]];
    const Dims dims = kDims[r[2]];
    const int32_t page = kPages[r[3]];
    const KvLayout layout = kLayouts[r[4]];
    const Heads heads = kHeads[r[5]];
    const bool causal = r[6], lse = r[7], scaled = r[8], qview = r[9], loose = r[10];

    c.family = workload_family(w);
    ProblemSpec& s = c.spec;
    s.q_dtype = s.kv_dtype = dt;
    s.head_dim_qk = dims.qk;
    s.head_dim_v = dims.v;
    s.num_q_heads = heads.q;
    s.num_kv_heads = heads.kv;
    s.storage = page == 0 ? ATTNJIT_KV_CONTIGUOUS : ATTNJIT_KV_PAGED;
    s.page_size = page == 0 ? 16 : page;
    s.layout = layout;
    s.causal = causal;
    // Non-default scale, larger than the default: scores with stddev 2.5 (a peakier softmax).
    s.scale = scaled ? static_cast<float>(2.5 / std::sqrt(static_cast<double>(dims.qk))) : 0.0f;
    s.seqs = workload_seqs(w, s.page_size);
    if (qview) {
      // q is the Q part of a fused [tokens, Hq*Dqk + Hkv*Dqk + Hkv*Dv] QKV tensor; o rows padded.
      s.q_token_padding = heads.kv * (dims.qk + dims.v);
      s.o_token_padding = 16;
    }
    c.run.with_lse = lse;
    c.run.loose_bounds = loose;
    // Loose bounds pass max_seqlen_k = max kv_len + 100: widen the block table to cover it.
    if (loose) s.block_table_padding += (100 + s.page_size - 1) / s.page_size;
    std::string name = workload_name(w);
    name += "_";
    name += dtype_name(dt);
    name += "_d" + std::to_string(dims.qk) + "x" + std::to_string(dims.v);
    name += page == 0 ? std::string("_contig") : "_p" + std::to_string(page);
    name += std::string("_") + layout_name(layout) + "_" + heads.name;
    name += causal ? "_causal" : "_full";
    name += lse ? "_lse" : "_nolse";
    name += scaled ? "_scaled" : "_dfltscale";
    name += qview ? "_qview" : "_dense";
    name += loose ? "_loose" : "_exact";
    c.name = std::move(name);
    cases.push_back(std::move(c));
  }
  return cases;
}

// ---- Targeted cases ----------------------------------------------------------------------------

AttentionCase targeted(std::string name, attnjit_family fam, attnjit_dtype dt, int32_t dqk, int32_t dv, int32_t page,
                       KvLayout layout, int32_t hq, int32_t hkv, bool causal, std::vector<SeqShape> seqs) {
  AttentionCase c;
  c.name = std::move(name);
  c.family = fam;
  c.spec.q_dtype = c.spec.kv_dtype = dt;
  c.spec.head_dim_qk = dqk;
  c.spec.head_dim_v = dv;
  c.spec.storage = page == 0 ? ATTNJIT_KV_CONTIGUOUS : ATTNJIT_KV_PAGED;
  c.spec.page_size = page == 0 ? 16 : page;
  c.spec.layout = layout;
  c.spec.num_q_heads = hq;
  c.spec.num_kv_heads = hkv;
  c.spec.causal = causal;
  c.spec.seqs = std::move(seqs);
  return c;
}

std::vector<AttentionCase> targeted_cases() {
  constexpr auto P = ATTNJIT_FAMILY_PREFILL;
  constexpr auto D = ATTNJIT_FAMILY_DECODE;
  constexpr auto BF = ATTNJIT_DTYPE_BF16;
  constexpr auto F = ATTNJIT_DTYPE_F16;
  std::vector<AttentionCase> v;
  v.push_back(targeted("single_token_prefill", P, F, 64, 64, 16, KvLayout::nhd, 4, 4, true, {{1, 1}}));
  v.push_back(targeted("single_token_decode", D, BF, 128, 128, 16, KvLayout::nhd, 16, 2, false, {{1, 1}}));
  {
    std::vector<SeqShape> s;
    for (int i = 0; i < 128; ++i) s.push_back({1, 1 + (i * 97) % 700});
    v.push_back(targeted("decode_batch_128", D, BF, 128, 128, 16, KvLayout::nhd, 32, 8, false, s));
  }
  v.push_back(targeted("decode_one_seq_kv8209", D, BF, 128, 128, 16, KvLayout::hnd, 16, 2, true, {{1, 8209}}));
  {
    AttentionCase c = targeted("decode_explicit_default_scale", D, F, 64, 64, 64, KvLayout::nhd, 8, 8, false,
                               {{1, 100}, {1, 1025}});
    c.spec.scale = 0.125f; // exactly 1/sqrt(64): must equal the default
    v.push_back(c);
  }
  {
    AttentionCase c = targeted("decode_peaky_softmax", D, BF, 128, 128, 16, KvLayout::nhd, 8, 2, false,
                               {{1, 3000}, {1, 700}, {1, 5}});
    c.spec.scale = static_cast<float>(8.0 / std::sqrt(128.0)); // nearly one-hot rows
    v.push_back(c);
  }
  {
    AttentionCase c = targeted("prefill_peaky_softmax", P, F, 128, 128, 16, KvLayout::nhd, 8, 2, true,
                               {{200, 200}, {7, 900}});
    c.spec.scale = static_cast<float>(8.0 / std::sqrt(128.0));
    v.push_back(c);
  }
  v.push_back(targeted("prefill_many_heads_32x8", P, BF, 128, 128, 16, KvLayout::nhd, 32, 8, true,
                       {{100, 100}, {1, 50}, {20, 300}}));
  v.push_back(targeted("prefill_q333_kv1000", P, F, 128, 128, 32, KvLayout::hnd, 8, 8, true, {{333, 1000}}));
  v.push_back(targeted("prefill_page1_packed", P, BF, 64, 64, 1, KvLayout::packed, 4, 2, true, {{257, 257}, {3, 9}}));
  v.push_back(targeted("prefill_cross_attention_contig", P, BF, 128, 128, 0, KvLayout::nhd, 8, 8, false,
                       {{50, 777}, {1, 3}, {64, 64}}));
  v.push_back(targeted("prefill_d256_long_kv", P, BF, 256, 256, 256, KvLayout::nhd, 4, 1, true, {{64, 4000}}));
  {
    AttentionCase c = targeted("decode_qlen_2to4_causal", D, BF, 128, 128, 16, KvLayout::nhd, 8, 2, true,
                               {{2, 500}, {4, 1300}, {3, 3}, {1, 77}});
    c.refusal_ok = true;
    v.push_back(c);
  }
  {
    AttentionCase c = targeted("decode_qlen_2to4_full", D, F, 64, 64, 32, KvLayout::hnd, 6, 1, false,
                               {{2, 40}, {4, 4}, {3, 2100}});
    c.refusal_ok = true;
    v.push_back(c);
  }
  {
    AttentionCase c = targeted("prefill_q_bf16_kv_f16", P, BF, 128, 128, 16, KvLayout::nhd, 8, 2, true,
                               {{17, 300}, {1, 20}});
    c.spec.kv_dtype = F;
    c.unsupported_ok = true;
    v.push_back(c);
  }
  for (auto& c : v) c.run.with_lse = true;
  return v;
}

// ---- Pinned tiles -------------------------------------------------------------------------------
// The default prefill tile differs per GPU (warpgroup tiles on sm_90a, mma.sync elsewhere), so each
// kernel family is pinned here on a few prefill problems that cross their axes: head dims 128 and
// 192/128, paged and contiguous, GQA, causal and full, window with sinks, soft cap, N:M, f16.

std::vector<AttentionCase> pinned_tile_cases() {
  constexpr auto P = ATTNJIT_FAMILY_PREFILL;
  constexpr auto BF = ATTNJIT_DTYPE_BF16;
  constexpr auto F = ATTNJIT_DTYPE_F16;
  const std::vector<SeqShape> ragged = {{300, 300}, {1, 77}, {129, 1000}, {64, 64}, {17, 530}};
  std::vector<AttentionCase> problems;
  problems.push_back(targeted("d128_gqa_causal", P, BF, 128, 128, 16, KvLayout::nhd, 8, 2, true, ragged));
  problems.push_back(targeted("d128_f16_full_contig", P, F, 128, 128, 0, KvLayout::hnd, 4, 4, false, ragged));
  {
    AttentionCase c = targeted("d192x128_swa_sinks", P, BF, 192, 128, 16, KvLayout::nhd, 8, 1, true, ragged);
    c.spec.pattern.sliding_window = true;
    c.spec.pattern.window = 128;
    c.spec.pattern.sink_tokens = 4;
    c.spec.pattern.learned_sinks = true;
    problems.push_back(c);
  }
  {
    AttentionCase c = targeted("d64_softcap", P, BF, 64, 64, 32, KvLayout::packed, 4, 2, true, ragged);
    c.spec.pattern.soft_cap = 30.0f;
    problems.push_back(c);
  }
  for (auto [n, m] : {std::pair{2, 4}, std::pair{4, 8}, std::pair{8, 16}}) {
    AttentionCase c = targeted("d128_nm" + std::to_string(n) + "of" + std::to_string(m), P, BF, 128, 128, 16, KvLayout::nhd, 8, 2, true, ragged);
    c.spec.pattern.nm_n = n;
    c.spec.pattern.nm_m = m;
    c.spec.pattern.nm_dense_sink_tokens = 5;
    c.spec.pattern.nm_dense_recent_tokens = 40;
    problems.push_back(c);
  }
  struct Pinned {
    const char* name;
    attnjit_tile_config tile;
  };
  const Pinned tiles[] = {
      {"mma_sync_bm128_wm4", {128, 64, 4, 1, 2, 1, 2, 0}},
      {"mma_sync_bm128_wm8", {128, 64, 8, 1, 2, 1, 2, 0}},
      {"wgmma_bm64", {64, 64, 4, 1, 3, 1, 2, 1}},
      {"wgmma_bm128", {128, 64, 8, 1, 4, 1, 1, 1}},
      {"wgmma_bm128_bn128", {128, 128, 8, 1, 3, 1, 1, 1}},
      {"wgmma_producer_bm128", {128, 64, 8, 1, 3, 1, 1, 2}},
      {"wgmma_producer_bm128_st4", {128, 64, 8, 1, 4, 1, 1, 2}},
      {"wgmma_producer_bm192", {192, 64, 12, 1, 3, 1, 1, 2}},
  };
  std::vector<AttentionCase> v;
  for (const AttentionCase& problem : problems)
    for (const Pinned& t : tiles) {
      if (t.tile.block_n == 128 && problem.spec.head_dim_qk > 128) continue; // over the shared memory
      AttentionCase c = problem;
      c.name = "pinned_" + problem.name + "_" + t.name;
      c.tile = t.tile;
      c.run.with_lse = true;
      v.push_back(c);
    }
  return v;
}

attnjit_problem plan_problem(const AttentionCase& c) {
  attnjit_problem pb = to_attnjit_problem(c.spec, c.family, c.run.loose_bounds);
  pb.tile = c.tile;
  return pb;
}

const std::vector<AttentionCase>& pairwise() {
  static const std::vector<AttentionCase> cases = pairwise_cases();
  return cases;
}
const std::vector<AttentionCase>& targeted_list() {
  static const std::vector<AttentionCase> cases = targeted_cases();
  return cases;
}
const std::vector<AttentionCase>& pinned_list() {
  static const std::vector<AttentionCase> cases = pinned_tile_cases();
  return cases;
}
const AttentionCase* find_case(const std::string& name) {
  static const std::map<std::string, const AttentionCase*> index = [] {
    std::map<std::string, const AttentionCase*> m;
    for (const auto* list : {&pairwise(), &targeted_list(), &pinned_list()})
      for (const auto& c : *list) m.emplace(c.name, &c);
    return m;
  }();
  auto it = index.find(name);
  return it == index.end() ? nullptr : it->second;
}

// ---- The test ----------------------------------------------------------------------------------

class AttentionCaseTest : public ::testing::TestWithParam<AttentionCase> {
 public:
  // Create the plans of every selected case of this suite up front, from a pool of threads:
  // compilation dominates the suite's time and parallelizes.
  static void SetUpTestSuite() {
    if (!gpu_info().available || shared_context() == nullptr) return;
    const ::testing::TestSuite* suite = ::testing::UnitTest::GetInstance()->current_test_suite();
    if (suite == nullptr) return;
    std::vector<std::pair<std::string, attnjit_problem>> todo;
    for (int i = 0; i < suite->total_test_count(); ++i) {
      const ::testing::TestInfo* ti = suite->GetTestInfo(i);
      if (!ti->should_run()) continue;
      const std::string n = ti->name();
      const AttentionCase* c = find_case(n.substr(n.find('/') + 1));
      if (c != nullptr) todo.emplace_back(c->name, plan_problem(*c));
    }
    const auto t0 = std::chrono::steady_clock::now();
    prewarm_plans(todo);
    std::cout << "[ plans    ] " << todo.size() << " plans of " << suite->name() << " created in "
              << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s\n";
  }
};

TEST_P(AttentionCaseTest, MatchesReference) {
  ATTNJIT_SHARED_CONTEXT(ctx);
  const AttentionCase& c = GetParam();
  using Clock = std::chrono::steady_clock;
  const auto seconds_since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  const auto t_start = Clock::now();
  const HostProblem hp = make_problem(c.spec, fresh_seed());
  const double t_make = seconds_since(t_start);
  SCOPED_TRACE(hp.describe() + " (replay with ATTNJIT_TEST_SEED=" + std::to_string(hp.seed) + ")");

  const PlanSlot& slot = shared_plan(c.name, plan_problem(c));
  if (c.tile.wgmma != 0 && slot.status == ATTNJIT_ERROR_INVALID_ARGUMENT && gpu_info().cc_major != 9) {
    EXPECT_TRUE(names_field(slot.message, {"tile.wgmma"})) << slot.message;
    GTEST_SKIP() << "warpgroup tiles need sm_90a: " << slot.message;
  }
  if (c.unsupported_ok && slot.status == ATTNJIT_ERROR_UNSUPPORTED) {
    EXPECT_FALSE(slot.message.empty());
    GTEST_SKIP() << "plan refused as unsupported: " << slot.message;
  }
  if (c.unsupported_ok && slot.status == ATTNJIT_ERROR_INVALID_ARGUMENT) {
    EXPECT_TRUE(names_field(slot.message, {"kv_dtype"})) << slot.message;
    GTEST_SKIP() << "plan refused (UNSUPPORTED would be the better status for a request inside the contract): "
                 << slot.message;
  }
  ASSERT_EQ(slot.status, ATTNJIT_OK) << slot.message;

  // The reference (CPU) runs while the GPU works.
  auto ref_future = std::async(std::launch::async, [&hp] { return compute_reference(hp); });
  Stream stream;
  ASSERT_NE(stream.get(), nullptr);
  DeviceProblem dev;
  const auto t_gpu0 = Clock::now();
  const Outcome out = run_once(slot.plan, hp, dev, c.run, stream.get());
  const double t_gpu = seconds_since(t_gpu0);
  const Reference ref = ref_future.get();

  if (c.refusal_ok && (out.status == ATTNJIT_ERROR_INVALID_ARGUMENT || out.status == ATTNJIT_ERROR_UNSUPPORTED)) {
    // A refusal must say why and must not have launched anything.
    EXPECT_FALSE(out.last_error.empty()) << "refused without a message";
    Outcome after;
    ATTNJIT_CUDA_ASSERT(cudaStreamSynchronize(stream.get()));
    ATTNJIT_CUDA_ASSERT(download_outputs(hp, dev, true, after));
    for (uint16_t b : after.o) ASSERT_EQ(b, kPoison16) << "a refused run wrote its output";
    GTEST_SKIP() << "refused (acceptable for this case): " << out.error;
  }
  EXPECT_TRUE(matches_reference(hp, ref, out, c.run.with_lse));

  // The measured error of every case, for judging the tolerances (default_tolerance) over time.
  if (out.error.empty()) {
    const Comparison o = compare_output(hp, ref, out.o);
    std::cout << "[ accuracy ] rel_l2 " << o.rel_l2 << " worst_row " << o.worst_row_rel;
    if (c.run.with_lse) std::cout << " lse_max_abs " << compare_lse(hp, ref, out.lse).max_abs;
    std::cout << "\n";
  }
  const double total = seconds_since(t_start);
  if (total > 2.0)
    std::cout << "[ slow     ] " << total << " s: inputs " << t_make << " s, upload+run+download " << t_gpu
              << " s, the rest waiting for the reference\n";
}

std::string case_name(const ::testing::TestParamInfo<AttentionCase>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Pairwise, AttentionCaseTest, ::testing::ValuesIn(pairwise()), case_name);
INSTANTIATE_TEST_SUITE_P(Targeted, AttentionCaseTest, ::testing::ValuesIn(targeted_list()), case_name);
INSTANTIATE_TEST_SUITE_P(PinnedTiles, AttentionCaseTest, ::testing::ValuesIn(pinned_list()), case_name);

// The selection really covers every pair (guards against edits to the axes above).
TEST(PairwiseSelection, CoversEveryPairOfAxisValues) {
  const std::vector<int> sizes = {6, 2, 9, 7, 3, 4, 2, 2, 2, 2, 2};
  const auto rows = all_pairs(sizes);
  for (size_t a = 0; a < sizes.size(); ++a)
    for (size_t b = a + 1; b < sizes.size(); ++b)
      for (int va = 0; va < sizes[a]; ++va)
        for (int vb = 0; vb < sizes[b]; ++vb) {
          bool found = false;
          for (const auto& r : rows) found = found || (r[a] == va && r[b] == vb);
          EXPECT_TRUE(found) << "axes " << a << "," << b << " values " << va << "," << vb;
        }
  EXPECT_EQ(rows.size(), pairwise().size());
  EXPECT_LE(rows.size(), 80u) << "the matrix grew: keep the GPU suite fast";
  std::cout << "[ pairwise ] " << rows.size() << " cases\n";
}

} // namespace
} // namespace attnjit::testing
