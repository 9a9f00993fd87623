// The SpargeAttn-style block-mask builder (attnjit_build_block_mask) on the GPU: the mask against
// its float64 reference (mean-pooled similarity, top-k ratio, forced first block, causal
// competition; near-ties at the top-k boundary may trade places), and the built mask driving the
// block-sparse attention kernel in one go, as a diffusion transformer would use it.
#include "gpu_harness.h"

#include <cmath>
#include <future>
#include <iostream>
#include <string>
#include <vector>

namespace attnjit::testing {
namespace {

struct MaskCase {
  std::string name;
  ProblemSpec spec; // contiguous K, q and K of one dtype
  BlockMaskSpec mask;
};

void PrintTo(const MaskCase& c, std::ostream* os) { *os << c.name; }

MaskCase mask_case(std::string name, attnjit_dtype dt, int32_t d, int32_t hq, int32_t hkv, KvLayout layout, bool causal,
                   std::vector<SeqShape> seqs, int32_t bq, int32_t bkv, float topk, bool force_first) {
  MaskCase c;
  c.name = std::move(name);
  ProblemSpec& s = c.spec;
  s.q_dtype = s.kv_dtype = dt;
  s.head_dim_qk = s.head_dim_v = d;
  s.num_q_heads = hq;
  s.num_kv_heads = hkv;
  s.storage = ATTNJIT_KV_CONTIGUOUS;
  s.layout = layout;
  s.causal = causal;
  s.seqs = std::move(seqs);
  // The attention half of the end-to-end test runs a block-sparse plan of the same block sizes.
  s.pattern.sparse_block_q = bq;
  s.pattern.sparse_block_kv = bkv;
  s.pattern.mask_per_batch = true;
  c.mask.block_q = bq;
  c.mask.block_kv = bkv;
  c.mask.topk = topk;
  c.mask.force_first_block = force_first;
  c.mask.causal = causal;
  return c;
}

std::vector<MaskCase> mask_cases() {
  constexpr auto BF = ATTNJIT_DTYPE_BF16;
  constexpr auto F = ATTNJIT_DTYPE_F16;
  return {
      mask_case("bf16_d128_g1_full_q128kv128_top0p25", BF, 128, 4, 4, KvLayout::nhd, false,
                {{1024, 1024}, {300, 300}, {1, 77}}, 128, 128, 0.25f, false),
      mask_case("f16_d64_g4_causal_q128kv64_top0p375_first", F, 64, 8, 2, KvLayout::hnd, true,
                {{700, 700}, {130, 1200}, {17, 17}}, 128, 64, 0.375f, true),
      mask_case("bf16_d96_g2_full_q256kv128_top0p5_first_packed", BF, 96, 4, 2, KvLayout::packed, false,
                {{600, 2000}, {256, 256}}, 256, 128, 0.5f, true),
      mask_case("f16_d128_mqa_causal_q128kv128_top1", F, 128, 6, 1, KvLayout::nhd, true, {{512, 900}, {64, 64}}, 128,
                128, 1.0f, false),
  };
}

struct BuiltMask {
  attnjit_status status = ATTNJIT_ERROR_INTERNAL;
  std::string error;
  int32_t mask_q_blocks = 0, mask_max_kv_blocks = 0;
  std::vector<int32_t> kv_num_blocks, kv_indices;
};

attnjit_block_mask_args mask_args(const HostProblem& p, const DeviceProblem& dev, const BlockMaskSpec& m,
                                  DeviceBuffer& num, DeviceBuffer& idx, int32_t mask_q_blocks, int32_t width) {
  attnjit_block_mask_args a;
  attnjit_block_mask_args_init(&a);
  a.dtype = p.spec.q_dtype;
  a.head_dim = p.spec.head_dim_qk;
  a.num_q_heads = p.spec.num_q_heads;
  a.num_kv_heads = p.spec.num_kv_heads;
  a.q = dev.q.get();
  a.q_stride_token = p.q_stride_token;
  a.q_stride_head = p.q_stride_head;
  a.k = dev.k.get();
  a.k_stride_token = p.k_stride_token;
  a.k_stride_head = p.k_stride_head;
  a.cu_seqlens_q = dev.cu_seqlens_q.as<const int32_t>();
  a.cu_seqlens_k = dev.cu_seqlens_k.as<const int32_t>();
  a.batch = p.batch;
  a.max_seqlen_q = p.max_q_len;
  a.max_seqlen_k = p.max_kv_len;
  a.block_q = m.block_q;
  a.block_kv = m.block_kv;
  a.topk = m.topk;
  a.force_first_block = m.force_first_block ? 1 : 0;
  a.causal = m.causal ? 1 : 0;
  a.kv_num_blocks = num.as<int32_t>();
  a.kv_indices = idx.as<int32_t>();
  a.mask_q_blocks = mask_q_blocks;
  a.mask_max_kv_blocks = width;
  return a;
}

// Builds the mask of `p` on the GPU. The output buffers start as in-range garbage (so that entries
// the builder leaves alone, past each row's count, would mislead a kernel that read them).
BuiltMask build_mask(attnjit_context ctx, const HostProblem& p, DeviceProblem& dev, const BlockMaskSpec& m,
                     cudaStream_t stream) {
  BuiltMask out;
  out.mask_q_blocks = (p.max_q_len + m.block_q - 1) / m.block_q;
  out.mask_max_kv_blocks = (p.max_kv_len + m.block_kv - 1) / m.block_kv + 1;
  const size_t rows = static_cast<size_t>(p.batch) * p.spec.num_q_heads * out.mask_q_blocks;
  std::vector<int32_t> num(rows, 0), idx(rows * out.mask_max_kv_blocks);
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int32_t>((i * 7919) % (out.mask_max_kv_blocks - 1));
  DeviceBuffer dnum, didx;
  if (cudaError_t e = dev.upload_inputs(p, stream); e != cudaSuccess) return out.error = "upload: " + cuda_text(e), out;
  if (dnum.ensure(num.size() * 4) != cudaSuccess || didx.ensure(idx.size() * 4) != cudaSuccess)
    return out.error = "cudaMalloc", out;
  cudaMemcpy(dnum.get(), num.data(), num.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(didx.get(), idx.data(), idx.size() * 4, cudaMemcpyHostToDevice);
  const attnjit_block_mask_args a = mask_args(p, dev, m, dnum, didx, out.mask_q_blocks, out.mask_max_kv_blocks);
  out.status = attnjit_build_block_mask(ctx, &a, stream);
  if (out.status != ATTNJIT_OK) return out.error = "attnjit_build_block_mask: " + status_message(out.status), out;
  if (cudaError_t e = cudaStreamSynchronize(stream); e != cudaSuccess) return out.error = cuda_text(e), out;
  out.kv_num_blocks.resize(num.size());
  out.kv_indices.resize(idx.size());
  cudaMemcpy(out.kv_num_blocks.data(), dnum.get(), num.size() * 4, cudaMemcpyDeviceToHost);
  cudaMemcpy(out.kv_indices.data(), didx.get(), idx.size() * 4, cudaMemcpyDeviceToHost);
  return out;
}

class BlockMaskCase : public ::testing::TestWithParam<MaskCase> {};

TEST_P(BlockMaskCase, MatchesTheReferenceAndDrivesBlockSparseAttention) {
  ATTNJIT_SHARED_CONTEXT(ctx);
  const MaskCase& c = GetParam();
  HostProblem hp = make_problem(c.spec, fresh_seed());
  SCOPED_TRACE(hp.describe() + " (replay with ATTNJIT_TEST_SEED=" + std::to_string(hp.seed) + ")");
  auto ref_future = std::async(std::launch::async, [&] {
    return reference_block_mask(hp, c.mask, (hp.max_q_len + c.mask.block_q - 1) / c.mask.block_q);
  });
  Stream stream;
  ASSERT_NE(stream.get(), nullptr);
  DeviceProblem dev;
  const BuiltMask built = build_mask(ctx, hp, dev, c.mask, stream.get());
  ASSERT_TRUE(built.error.empty()) << built.error;
  const BlockMaskReference ref = ref_future.get();
  EXPECT_EQ(check_block_mask(ref, c.mask, built.kv_num_blocks, built.kv_indices, built.mask_max_kv_blocks), "");

  // The built mask in a block-sparse attention run (mask_batch = batch, garbage past the counts).
  hp.mask_batch = hp.batch;
  hp.mask_q_blocks = built.mask_q_blocks;
  hp.mask_max_kv_blocks = built.mask_max_kv_blocks;
  hp.kv_num_blocks = built.kv_num_blocks;
  hp.kv_indices = built.kv_indices;
  const PlanSlot& slot = shared_plan("block_mask_" + c.name, to_attnjit_problem(c.spec, ATTNJIT_FAMILY_PREFILL, false));
  ASSERT_EQ(slot.status, ATTNJIT_OK) << slot.message;
  auto attn_ref = std::async(std::launch::async, [&hp] { return compute_reference(hp); });
  RunOptions run;
  run.with_lse = true;
  const Outcome out = run_once(slot.plan, hp, dev, run, stream.get());
  const Reference r = attn_ref.get();
  EXPECT_TRUE(matches_reference(hp, r, out, true)) << "attention with the built mask";
  int64_t listed = 0, total = 0;
  for (size_t row = 0; row < ref.rows.size(); ++row) {
    listed += built.kv_num_blocks[row];
    total += static_cast<int64_t>(ref.rows[row].score.size());
  }
  std::cout << "[ mask     ] density " << static_cast<double>(listed) / std::max<int64_t>(1, total) << " of competing blocks\n";
}

INSTANTIATE_TEST_SUITE_P(BlockMaskBuilder, BlockMaskCase, ::testing::ValuesIn(mask_cases()),
                         [](const ::testing::TestParamInfo<MaskCase>& i) { return i.param.name; });

TEST(BlockMaskBuilderValidation, BadArgumentsNameTheField) {
  ATTNJIT_SHARED_CONTEXT(ctx);
  const MaskCase c = mask_cases().front();
  const HostProblem hp = make_problem(c.spec, fresh_seed());
  Stream stream;
  DeviceProblem dev;
  ATTNJIT_CUDA_ASSERT(dev.upload_inputs(hp, stream.get()));
  const int32_t qb = (hp.max_q_len + c.mask.block_q - 1) / c.mask.block_q;
  const int32_t width = (hp.max_kv_len + c.mask.block_kv - 1) / c.mask.block_kv;
  DeviceBuffer num, idx;
  ATTNJIT_CUDA_ASSERT(num.ensure(static_cast<size_t>(hp.batch) * hp.spec.num_q_heads * qb * 4));
  ATTNJIT_CUDA_ASSERT(idx.ensure(static_cast<size_t>(hp.batch) * hp.spec.num_q_heads * qb * width * 4));
  const attnjit_block_mask_args good = mask_args(hp, dev, c.mask, num, idx, qb, width);
  ASSERT_EQ(attnjit_build_block_mask(ctx, &good, stream.get()), ATTNJIT_OK) << last_error_text();
  struct Bad {
    const char* what;
    std::function<void(attnjit_block_mask_args&)> edit;
    std::vector<std::string> fields;
  };
  const std::vector<Bad> bad = {
      {"topk 0", [](attnjit_block_mask_args& a) { a.topk = 0; }, {"topk"}},
      {"topk 1.5", [](attnjit_block_mask_args& a) { a.topk = 1.5f; }, {"topk"}},
      {"fp8 dtype", [](attnjit_block_mask_args& a) { a.dtype = ATTNJIT_DTYPE_FP8_E4M3; }, {"dtype"}},
      {"null q", [](attnjit_block_mask_args& a) { a.q = nullptr; }, {"q"}},
      {"null kv_indices", [](attnjit_block_mask_args& a) { a.kv_indices = nullptr; }, {"kv_indices"}},
      {"mask_q_blocks too few", [](attnjit_block_mask_args& a) { a.mask_q_blocks -= 1; }, {"mask_q_blocks"}},
      {"mask_max_kv_blocks too few", [](attnjit_block_mask_args& a) { a.mask_max_kv_blocks -= 1; }, {"mask_max_kv_blocks"}},
      {"kv heads not dividing q heads", [](attnjit_block_mask_args& a) { a.num_kv_heads = 3; }, {"num_kv_heads"}},
  };
  for (const Bad& b : bad) {
    attnjit_block_mask_args a = good;
    b.edit(a);
    const attnjit_status st = attnjit_build_block_mask(ctx, &a, stream.get());
    const std::string m = last_error_text();
    EXPECT_EQ(st, ATTNJIT_ERROR_INVALID_ARGUMENT) << b.what << ": " << m;
    EXPECT_TRUE(names_field(m, b.fields)) << b.what << ": \"" << m << "\"";
  }
  ATTNJIT_CUDA_ASSERT(cudaStreamSynchronize(stream.get()));
}

} // namespace
} // namespace attnjit::testing
