#include "runtime/block_mask.h"

#include <cmath>

#include <fmt/format.h>

#include "codegen/errors.h"
#include "templates/params.cuh"

namespace attnjit {

namespace {
template <class T> void need(bool ok, std::string_view field, std::string_view allowed, const T& got) {
  if (!ok) throw SpecError(fmt::format("{}: got {}; allowed: {}", field, got, allowed));
}
constexpr int kThreads = 128, kMaxMaskHeadDim = 256, kMaxBlocks = 4096; // as in templates/block_mask.cuh
} // namespace

void build_block_mask(Context& ctx, const attnjit_block_mask_args& a, CUstream stream) {
  need(a.struct_size == sizeof(attnjit_block_mask_args), "args.struct_size",
       "sizeof(attnjit_block_mask_args) (call attnjit_block_mask_args_init)", a.struct_size);
  need(a.dtype == ATTNJIT_DTYPE_F16 || a.dtype == ATTNJIT_DTYPE_BF16, "args.dtype", "ATTNJIT_DTYPE_F16 or BF16",
       static_cast<int>(a.dtype));
  need(a.head_dim >= 8 && a.head_dim <= kMaxMaskHeadDim && a.head_dim % 8 == 0, "args.head_dim", "a multiple of 8 in [8, 256]",
       a.head_dim);
  need(a.num_q_heads >= 1 && a.num_kv_heads >= 1 && a.num_q_heads % a.num_kv_heads == 0, "args.num_q_heads/num_kv_heads",
       "positive, kv heads dividing q heads", fmt::format("{}/{}", a.num_q_heads, a.num_kv_heads));
  need(a.q && a.k && a.cu_seqlens_q && a.cu_seqlens_k && a.kv_num_blocks && a.kv_indices,
       "args.q/k/cu_seqlens_q/cu_seqlens_k/kv_num_blocks/kv_indices", "device pointers", "a null pointer");
  need(a.q_stride_token > 0 && a.q_stride_head > 0 && a.k_stride_token > 0 && a.k_stride_head > 0, "args.*_stride_*",
       "positive element strides", "a stride <= 0");
  need(a.batch >= 1 && a.batch <= 65535, "args.batch", "1 to 65535", a.batch);
  need(a.max_seqlen_q >= 1 && a.max_seqlen_k >= 1, "args.max_seqlen_q/max_seqlen_k", ">= 1",
       fmt::format("{}/{}", a.max_seqlen_q, a.max_seqlen_k));
  need(a.block_q >= 1 && a.block_kv >= 1, "args.block_q/block_kv", ">= 1", fmt::format("{}/{}", a.block_q, a.block_kv));
  need(a.topk > 0.f && a.topk <= 1.f, "args.topk", "a fraction in (0, 1]", a.topk);
  const int q_blocks = (a.max_seqlen_q + a.block_q - 1) / a.block_q;
  const int kv_blocks = (a.max_seqlen_k + a.block_kv - 1) / a.block_kv;
  need(a.mask_q_blocks >= q_blocks && a.mask_q_blocks <= 65535, "args.mask_q_blocks",
       fmt::format("ceil(max_seqlen_q / block_q) = {} to 65535", q_blocks), a.mask_q_blocks);
  need(a.mask_max_kv_blocks >= kv_blocks && kv_blocks <= kMaxBlocks, "args.mask_max_kv_blocks",
       fmt::format(">= ceil(max_seqlen_k / block_kv) = {} (at most {} KV blocks per sequence)", kv_blocks, kMaxBlocks),
       a.mask_max_kv_blocks);

  BlockMaskParams p{};
  p.q = a.q;
  p.q_stride_token = a.q_stride_token;
  p.q_stride_head = a.q_stride_head;
  p.k = a.k;
  p.k_stride_token = a.k_stride_token;
  p.k_stride_head = a.k_stride_head;
  p.cu_seqlens_q = a.cu_seqlens_q;
  p.cu_seqlens_k = a.cu_seqlens_k;
  p.head_dim = a.head_dim;
  p.num_q_heads = a.num_q_heads;
  p.group_size = a.num_q_heads / a.num_kv_heads;
  p.block_q = a.block_q;
  p.block_kv = a.block_kv;
  p.topk = a.topk;
  p.force_first_block = a.force_first_block != 0;
  p.causal = a.causal != 0;
  p.kv_num_blocks = a.kv_num_blocks;
  p.kv_indices = a.kv_indices;
  p.mask_q_blocks = a.mask_q_blocks;
  p.mask_max_kv_blocks = a.mask_max_kv_blocks;

  CUfunction f = ctx.block_mask_builder(a.dtype == ATTNJIT_DTYPE_F16 ? DType::f16 : DType::bf16);
  const CudaDriver& d = ctx.driver();
  CUcontext current = nullptr;
  if (d.ctx_get_current(&current) == CUDA_SUCCESS && current == nullptr) d.ctx_set_current(ctx.cu_context());
  void* params[] = {&p};
  d.check(d.launch_kernel(f, a.num_q_heads, a.batch, q_blocks, kThreads, 1, 1, 0, stream, params, nullptr),
          "cuLaunchKernel(block_mask)");
}

} // namespace attnjit
