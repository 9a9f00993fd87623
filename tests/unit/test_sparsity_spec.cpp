// Validation of the sparsity, mask and fp8 fields of attnjit_problem through the C ABI (no GPU:
// attnjit_problem_validate needs no device). Every pattern is accepted alone and in the
// combinations the contract allows; refused combinations (more than one of N:M, skip-softmax and
// block sparse; block sparse outside the prefill family; fp8 anywhere but KV; per-head scales
// without fp8) and out-of-range values give ATTNJIT_ERROR_INVALID_ARGUMENT with a message that
// names the field.
#include <attnjit/attnjit.h>

#include "error_message.h"

#include <gtest/gtest.h>

#include <cctype>
#include <functional>
#include <string>
#include <vector>

namespace {

using attnjit::testing::names_field;

std::string last_error() {
  const char* m = attnjit_last_error();
  return m ? m : "";
}

attnjit_problem base(attnjit_family family = ATTNJIT_FAMILY_PREFILL) {
  attnjit_problem p;
  attnjit_problem_init(&p);
  p.family = family;
  p.q_dtype = ATTNJIT_DTYPE_BF16;
  p.kv_dtype = ATTNJIT_DTYPE_BF16;
  p.head_dim_qk = 192;
  p.head_dim_v = 128;
  p.page_size = 16;
  p.kv_storage = ATTNJIT_KV_PAGED;
  p.causal = 1;
  p.num_q_heads = 8;
  p.num_kv_heads = 1;
  p.max_batch = 8;
  p.max_total_q = 4096;
  return p;
}

using Edit = std::function<void(attnjit_problem&)>;

const Edit kWindow = [](attnjit_problem& p) { p.sparsity.sliding_window = 1; };
const Edit kSinks = [](attnjit_problem& p) { p.sparsity.learned_sinks = 1; };
const Edit kCap = [](attnjit_problem& p) { p.sparsity.soft_cap = 1; };
const Edit kNm24 = [](attnjit_problem& p) { p.sparsity.nm_n = 2; p.sparsity.nm_m = 4; };
const Edit kSkip = [](attnjit_problem& p) { p.sparsity.skip_softmax = 1; };
const Edit kBsp = [](attnjit_problem& p) {
  p.sparsity.block_sparse = 1;
  p.sparsity.sparse_block_q = 128;
  p.sparsity.sparse_block_kv = 128;
};
const Edit kE4m3 = [](attnjit_problem& p) { p.kv_dtype = ATTNJIT_DTYPE_FP8_E4M3; };
const Edit kE5m2 = [](attnjit_problem& p) { p.kv_dtype = ATTNJIT_DTYPE_FP8_E5M2; };
const Edit kPerHead = [](attnjit_problem& p) { p.kv_scale_per_head = 1; };
const Edit kDecode = [](attnjit_problem& p) { p.family = ATTNJIT_FAMILY_DECODE; };
const Edit kF16 = [](attnjit_problem& p) { p.q_dtype = p.kv_dtype = ATTNJIT_DTYPE_F16; };

attnjit_problem with(std::initializer_list<Edit> edits) {
  attnjit_problem p = base();
  for (const Edit& e : edits) e(p);
  return p;
}

struct Named {
  std::string name;
  attnjit_problem problem;
  std::vector<std::string> fields = {}; // refused cases: the message names one of these
};

std::vector<Named> accepted() {
  std::vector<Named> v = {
      {"window", with({kWindow})},
      {"learned sinks", with({kSinks})},
      {"soft cap", with({kCap})},
      {"skip prefill", with({kSkip})},
      {"skip decode", with({kDecode, kSkip})},
      {"block sparse 128x128", with({kBsp})},
      {"e4m3 per tensor", with({kE4m3})},
      {"e5m2 per tensor", with({kE5m2})},
      {"e4m3 per head decode", with({kDecode, kE4m3, kPerHead})},
      {"e5m2 per head, f16 q", with({kF16, kE5m2, kPerHead})},
      {"MiMo SWA: window + sinks, decode", with({kDecode, kWindow, kSinks})},
      {"MiMo SWA fp8: window + sinks + e4m3", with({kWindow, kSinks, kE4m3})},
      {"window + sinks + cap + e5m2 per head", with({kWindow, kSinks, kCap, kE5m2, kPerHead})},
      {"N:M + window + sinks + cap", with({kNm24, kWindow, kSinks, kCap})},
      {"N:M decode (dense rows)", with({kDecode, kNm24})},
      {"skip + window + sinks + fp8", with({kSkip, kWindow, kSinks, kE4m3})},
      {"block sparse + window + sinks + cap + fp8", with({kBsp, kWindow, kSinks, kCap, kE5m2})},
  };
  for (auto [n, m] : {std::pair{1, 4}, {3, 4}, {4, 8}, {7, 8}, {8, 16}, {15, 16}}) {
    attnjit_problem p = base();
    p.sparsity.nm_n = n;
    p.sparsity.nm_m = m;
    v.push_back({"N:M " + std::to_string(n) + ":" + std::to_string(m), p});
  }
  for (auto [bq, bkv] : {std::pair{128, 64}, {256, 128}, {128, 256}, {512, 512}}) {
    attnjit_problem p = with({kBsp});
    p.sparsity.sparse_block_q = bq;
    p.sparsity.sparse_block_kv = bkv;
    v.push_back({"block sparse " + std::to_string(bq) + "x" + std::to_string(bkv), p});
  }
  return v;
}

std::vector<Named> refused() {
  const std::vector<std::string> selectors = {"sparsity", "nm_n", "nm_m", "skip_softmax", "block_sparse"};
  std::vector<Named> v = {
      {"N:M + skip", with({kNm24, kSkip}), selectors},
      {"N:M + block sparse", with({kNm24, kBsp}), selectors},
      {"skip + block sparse", with({kSkip, kBsp}), selectors},
      {"N:M + skip + block sparse", with({kNm24, kSkip, kBsp}), selectors},
      {"block sparse in the decode family", with({kBsp, kDecode}), {"block_sparse", "family"}},
      {"fp8 q (e4m3)", with({[](attnjit_problem& p) { p.q_dtype = ATTNJIT_DTYPE_FP8_E4M3; }}), {"q_dtype"}},
      {"fp8 q (e5m2) with fp8 KV", with({kE5m2, [](attnjit_problem& p) { p.q_dtype = ATTNJIT_DTYPE_FP8_E5M2; }}), {"q_dtype"}},
      {"per-head scales with bf16 KV", with({kPerHead}), {"kv_scale_per_head"}},
      {"per-head scales with f16 KV", with({kF16, kPerHead}), {"kv_scale_per_head"}},
      {"kv dtype 4", with({[](attnjit_problem& p) { p.kv_dtype = static_cast<attnjit_dtype>(4); }}), {"kv_dtype"}},
      {"block sizes without block_sparse",
       with({[](attnjit_problem& p) { p.sparsity.sparse_block_q = 128; p.sparsity.sparse_block_kv = 128; }}),
       {"sparse_block_q", "sparse_block_kv", "block_sparse"}},
  };
  for (int32_t m : {0, 2, 3, 5, 12, 32, -4}) {
    attnjit_problem p = base();
    p.sparsity.nm_n = 1;
    p.sparsity.nm_m = m;
    v.push_back({"nm_m " + std::to_string(m), p, {"nm_m", "nm_n"}});
  }
  for (auto [n, m] : {std::pair{0, 4}, {4, 4}, {5, 4}, {-1, 8}, {8, 8}, {16, 16}, {17, 16}}) {
    attnjit_problem p = base();
    p.sparsity.nm_n = n;
    p.sparsity.nm_m = m;
    v.push_back({"nm " + std::to_string(n) + ":" + std::to_string(m), p, {"nm_n"}});
  }
  for (int32_t b : {0, 8, 24, 100, -16}) {
    attnjit_problem q = with({kBsp});
    q.sparsity.sparse_block_q = b;
    v.push_back({"sparse_block_q " + std::to_string(b), q, {"sparse_block_q"}});
    attnjit_problem k = with({kBsp});
    k.sparsity.sparse_block_kv = b;
    v.push_back({"sparse_block_kv " + std::to_string(b), k, {"sparse_block_kv"}});
  }
  return v;
}

TEST(SparsitySpec, EveryPatternAndAllowedCompositionValidates) {
  for (const Named& c : accepted()) {
    EXPECT_EQ(attnjit_problem_validate(&c.problem), ATTNJIT_OK) << c.name << ": " << last_error();
  }
}

TEST(SparsitySpec, RefusedCombinationsAndValuesNameTheField) {
  for (const Named& c : refused()) {
    const attnjit_status st = attnjit_problem_validate(&c.problem);
    const std::string msg = last_error();
    EXPECT_EQ(st, ATTNJIT_ERROR_INVALID_ARGUMENT) << c.name << ": " << msg;
    EXPECT_TRUE(names_field(msg, c.fields)) << c.name << ": the message should name one of the fields; got \"" << msg
                                            << "\"";
  }
}

TEST(SparsitySpec, PatternFieldsDefaultToOff) {
  attnjit_problem p;
  attnjit_problem_init(&p);
  EXPECT_EQ(p.sparsity.sliding_window, 0);
  EXPECT_EQ(p.sparsity.learned_sinks, 0);
  EXPECT_EQ(p.sparsity.soft_cap, 0);
  EXPECT_EQ(p.sparsity.nm_n, 0);
  EXPECT_EQ(p.sparsity.nm_m, 0);
  EXPECT_EQ(p.sparsity.skip_softmax, 0);
  EXPECT_EQ(p.sparsity.block_sparse, 0);
  EXPECT_EQ(p.sparsity.sparse_block_q, 0);
  EXPECT_EQ(p.sparsity.sparse_block_kv, 0);
  EXPECT_EQ(p.kv_scale_per_head, 0);
  attnjit_run_args a;
  attnjit_run_args_init(&a);
  EXPECT_EQ(a.sinks, nullptr);
  EXPECT_EQ(a.k_scale, nullptr);
  EXPECT_EQ(a.v_scale, nullptr);
  EXPECT_EQ(a.skip_stats, nullptr);
  EXPECT_EQ(a.kv_num_blocks, nullptr);
  EXPECT_EQ(a.kv_indices, nullptr);
}

} // namespace
