// The attention kernel: FlashAttention-2 style tiles on mma.sync, with a cp.async pipeline of
// kStages K/V tiles gathered through the block table.
//
//   schedule_block   which (head, sequence, query block, KV split) this CTA computes
//   prologue         Q tile and the first kStages-1 K/V tiles in flight
//   mainloop         per KV tile: S = Q K^T, mask, online softmax, O += P V
//   store_output     merge warps, normalize, write O / LSE (or split-KV partials)
#pragma once
#include "kernel_traits.cuh"
#include "tile_scheduler.cuh"
#include "kv_addressing.cuh"
#include "tile_load.cuh"
#include "mma.cuh"
#include "mask.cuh"
#include "online_softmax.cuh"
#include "epilogue.cuh"

namespace attnjit {

template <class T> __device__ __forceinline__ void attention_kernel(const AttentionParams& p) {
  extern __shared__ __align__(128) unsigned char smem[];
  using Elem = typename T::Elem;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int warp_m = warp % T::kWarpsM, warp_n = warp / T::kWarpsM;

  const BlockWork w = schedule_block<T>(p);
  if (w.row_first >= w.rows) return; // the grid covers the longest sequence

  const u32 s_q = smem_addr(smem);
  const u32 s_k = s_q + T::kQBytes;
  const u32 s_v = s_k + T::kStages * T::kKStageBytes;

  // Q rows of this block, zero-filled past the sequence.
  load_tile<T::kBlockM, T::kHeadDimQK, T::kQPitch, T::kThreads>(s_q, p.q, [&](int r) -> const void* {
    const int row = w.row_first + r;
    if (row >= w.rows) return nullptr;
    int token, head;
    row_coords<T>(p, w, row, token, head);
    return static_cast<const u16*>(p.q) + (w.q_start + token) * p.q_stride_token + head * p.q_stride_head;
  });

  KvAddressing<T::kPaged, T::kLogPageSize> kv;
  if constexpr (T::kPaged) {
    kv.block_table_row = p.block_table + static_cast<i64>(w.batch) * p.block_table_stride;
  } else {
    kv.token_base = p.cu_seqlens_k[w.batch];
  }
  const u16* k_head = static_cast<const u16*>(p.k) + w.kv_head * p.k_stride_head;
  const u16* v_head = static_cast<const u16*>(p.v) + w.kv_head * p.v_stride_head;
  auto load_kv = [&](int tile, int stage) {
    const int key0 = tile * T::kBlockN;
    load_tile<T::kBlockN, T::kHeadDimQK, T::kKPitch, T::kThreads>(
        s_k + stage * T::kKStageBytes, p.k, [&](int r) -> const void* {
          const int j = key0 + r;
          return j < w.kv_len ? k_head + kv.offset(j, p.k_stride_block, p.k_stride_token) : nullptr;
        });
    load_tile<T::kBlockN, T::kHeadDimV, T::kVPitch, T::kThreads>(
        s_v + stage * T::kVStageBytes, p.v, [&](int r) -> const void* {
          const int j = key0 + r;
          return j < w.kv_len ? v_head + kv.offset(j, p.v_stride_block, p.v_stride_token) : nullptr;
        });
  };

#pragma unroll
  for (int s = 0; s < T::kStages - 1; ++s) {
    if (w.tile_begin + s < w.tile_end) load_kv(w.tile_begin + s, s);
    cp_async_commit(); // group s (group 0 also carries Q)
  }

  // Absolute position of each of this thread's rows, for the causal rule.
  int row_pos[T::kMTiles][2];
  {
    const int group = T::kPackGqa ? p.group_size : 1;
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = w.row_first + (warp_m * T::kMTiles + mi) * 16 + lane / 4 + 8 * h;
        // Rows past the sequence are computed but never stored; any position is harmless.
        row_pos[mi][h] = w.kv_len - w.q_len + row / group;
      }
  }

  float o[T::kMTiles][T::kOTiles][4];
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int nt = 0; nt < T::kOTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mi][nt][e] = 0.f;
  OnlineSoftmax<T> softmax;
  softmax.init();

  // ldmatrix row addresses of this lane (see mma.cuh for the fragment layouts).
  const int mat = lane / 8, mat_row = lane % 8;
  const u32 q_lane = s_q + (((warp_m * T::kMTiles) * 16 + (mat & 1) * 8 + mat_row) * T::kQPitch + (mat >> 1) * 8) * 2;
  const u32 k_lane = s_k + ((warp_n * T::kWarpKeys + (mat >> 1) * 8 + mat_row) * T::kKPitch + (mat & 1) * 8) * 2;
  const u32 v_lane = s_v + ((warp_n * T::kWarpKeys + (mat & 1) * 8 + mat_row) * T::kVPitch + (mat >> 1) * 8) * 2;

  for (int tile = w.tile_begin; tile < w.tile_end; ++tile) {
    const int i = tile - w.tile_begin;
    const int stage = i % T::kStages;
    cp_async_wait<T::kStages - 2>();
    __syncthreads(); // tile i is visible to all; stage (i-1) % kStages is free to refill
    {
      const int next = tile + T::kStages - 1;
      if (next < w.tile_end) load_kv(next, (i + T::kStages - 1) % T::kStages);
      cp_async_commit();
    }

    // S = Q K^T over this warp's keys of the tile.
    float s[T::kMTiles][T::kSTiles][4];
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
      for (int nt = 0; nt < T::kSTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mi][nt][e] = 0.f;
    const u32 k_stage = k_lane + stage * T::kKStageBytes;
#pragma unroll
    for (int kk = 0; kk < T::kQKSteps; ++kk) {
      u32 a[T::kMTiles][4];
#pragma unroll
      for (int mi = 0; mi < T::kMTiles; ++mi)
        ldmatrix_x4(a[mi], q_lane + (mi * 16 * T::kQPitch + kk * 16) * 2);
#pragma unroll
      for (int np = 0; np < T::kSTiles / 2; ++np) {
        u32 b[4];
        ldmatrix_x4(b, k_stage + (np * 16 * T::kKPitch + kk * 16) * 2);
#pragma unroll
        for (int mi = 0; mi < T::kMTiles; ++mi) {
          Mma<Elem>::run(s[mi][2 * np], a[mi], b[0], b[1]);
          Mma<Elem>::run(s[mi][2 * np + 1], a[mi], b[2], b[3]);
        }
      }
    }

    // Only tiles that reach past the keys every row can see need the element-wise mask.
    if ((tile + 1) * T::kBlockN > w.unmasked_keys)
      apply_mask<T>(s, tile * T::kBlockN + warp_n * T::kWarpKeys, row_pos, w.kv_len);
    softmax.update(s, o, p.scale_log2);

    // O += P V: the S accumulator of two n8 tiles is the A fragment of one k16 step.
    const u32 v_stage = v_lane + stage * T::kVStageBytes;
#pragma unroll
    for (int ks = 0; ks < T::kPVSteps; ++ks) {
      u32 a[T::kMTiles][4];
#pragma unroll
      for (int mi = 0; mi < T::kMTiles; ++mi) {
        a[mi][0] = pack2<Elem>(s[mi][2 * ks][0], s[mi][2 * ks][1]);
        a[mi][1] = pack2<Elem>(s[mi][2 * ks][2], s[mi][2 * ks][3]);
        a[mi][2] = pack2<Elem>(s[mi][2 * ks + 1][0], s[mi][2 * ks + 1][1]);
        a[mi][3] = pack2<Elem>(s[mi][2 * ks + 1][2], s[mi][2 * ks + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < T::kOTiles / 2; ++dp) {
        u32 b[4];
        ldmatrix_x4_trans(b, v_stage + (ks * 16 * T::kVPitch + dp * 16) * 2);
#pragma unroll
        for (int mi = 0; mi < T::kMTiles; ++mi) {
          Mma<Elem>::run(o[mi][2 * dp], a[mi], b[0], b[1]);
          Mma<Elem>::run(o[mi][2 * dp + 1], a[mi], b[2], b[3]);
        }
      }
    }
  }
  cp_async_wait<0>();

  store_output<T>(p, w, o, softmax, smem);
}

} // namespace attnjit
