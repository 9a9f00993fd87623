// Block-mask builder (SpargeAttn-style): for every (sequence, q head, q block) it scores each KV
// block by the similarity of the mean-pooled q block and the mean-pooled KV block, keeps the top
// ceil(topk * blocks) of them (ties to the lower index), optionally the first block too, and writes
// them in ascending order in the FlexAttention form (kv_num_blocks, kv_indices) that the
// block-sparse attention kernels read. Under a causal mask only blocks holding a key visible to
// some row of the q block compete.
//
// One CTA per (q head, sequence, q block): pool q into shared memory, let each warp score KV blocks
// (lanes across channels), then rank the scores in parallel.
#pragma once
#include "common.cuh"
#include "params.cuh"

namespace attnjit {

inline constexpr int kBlockMaskThreads = 128;
inline constexpr int kBlockMaskMaxHeadDim = 256;
inline constexpr int kBlockMaskMaxBlocks = 4096; // KV blocks per sequence

template <class Elem> __device__ __forceinline__ float to_float(u16 x);
template <> __device__ __forceinline__ float to_float<bf16>(u16 x) { return __uint_as_float(static_cast<u32>(x) << 16); }
template <> __device__ __forceinline__ float to_float<f16>(u16 x) {
  float f;
  asm("{.reg .f16 h;\n mov.b16 h, %1;\n cvt.f32.f16 %0, h;\n}" : "=f"(f) : "h"(x));
  return f;
}

template <class Elem> __device__ __forceinline__ void build_block_mask(const BlockMaskParams& p) {
  __shared__ float q_pool[kBlockMaskMaxHeadDim];
  __shared__ float score[kBlockMaskMaxBlocks];
  __shared__ int position[kBlockMaskMaxBlocks];
  const int head = blockIdx.x, batch = blockIdx.y, q_block = blockIdx.z;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const long long out_row = (static_cast<long long>(batch) * p.num_q_heads + head) * p.mask_q_blocks + q_block;
  const int q_start = p.cu_seqlens_q[batch], q_len = p.cu_seqlens_q[batch + 1] - q_start;
  const int k_start = p.cu_seqlens_k[batch], kv_len = p.cu_seqlens_k[batch + 1] - k_start;
  const int row_first = q_block * p.block_q, row_end = min_(q_len, row_first + p.block_q);
  int blocks = ceil_div(kv_len, p.block_kv);
  if (p.causal) blocks = min_(blocks, ceil_div(max_(0, kv_len - q_len + row_end), p.block_kv));
  blocks = min_(blocks, p.mask_max_kv_blocks);
  if (row_first >= row_end || blocks <= 0) {
    if (threadIdx.x == 0) p.kv_num_blocks[out_row] = 0;
    return;
  }

  const u16* q = static_cast<const u16*>(p.q) + head * p.q_stride_head;
  for (int d = threadIdx.x; d < p.head_dim; d += kBlockMaskThreads) {
    float acc = 0.f;
    for (int r = row_first; r < row_end; ++r) acc += to_float<Elem>(q[(q_start + r) * p.q_stride_token + d]);
    q_pool[d] = acc / (row_end - row_first);
  }
  __syncthreads();

  // score(b) = q_pool . mean_j k_j over the block's keys.
  const u16* k = static_cast<const u16*>(p.k) + (head / p.group_size) * p.k_stride_head;
  for (int b = warp; b < blocks; b += kBlockMaskThreads / 32) {
    const int j_end = min_(kv_len, (b + 1) * p.block_kv);
    float acc = 0.f;
    for (int j = b * p.block_kv; j < j_end; ++j)
      for (int d = lane; d < p.head_dim; d += 32) acc += to_float<Elem>(k[(k_start + j) * p.k_stride_token + d]) * q_pool[d];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) score[b] = acc / (j_end - b * p.block_kv);
  }
  __syncthreads();

  // Keep block b when fewer than `keep` blocks outrank it (higher score, or equal and lower index).
  // ceil(topk * blocks), forgiving float rounding (0.3 * 10 is 3, not 4), at least 1.
  const int keep = min_(blocks, max_(1, static_cast<int>(ceilf(p.topk * blocks - 1e-4f))));
  for (int b = threadIdx.x; b < blocks; b += kBlockMaskThreads) {
    int rank = 0;
    for (int o = 0; o < blocks; ++o) rank += score[o] > score[b] || (score[o] == score[b] && o < b);
    position[b] = rank < keep || (p.force_first_block && b == 0);
  }
  __syncthreads();
  int* out = p.kv_indices + out_row * p.mask_max_kv_blocks;
  int total = 0;
  for (int b = threadIdx.x; b < blocks; b += kBlockMaskThreads) {
    if (!position[b]) continue;
    int before = 0;
    for (int o = 0; o < b; ++o) before += position[o];
    out[before] = b;
  }
  if (threadIdx.x == 0) {
    for (int b = 0; b < blocks; ++b) total += position[b];
    p.kv_num_blocks[out_row] = total;
  }
}

} // namespace attnjit
