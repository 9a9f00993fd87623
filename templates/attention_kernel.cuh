// The attention kernel: FlashAttention-2 style tiles on mma.sync, with a cp.async pipeline of
// kStages K/V tiles gathered through the block table. attention_kernel<T>, the emitted kernels'
// entry, runs it, or the warpgroup kernel for warpgroup tiles (attention_kernel_wgmma.cuh).
//
//   schedule_block   which (head, sequence, query block, KV split) this CTA computes, and the
//                    list of KV tiles it visits (window, sinks, block mask)
//   prologue         Q tile and the first kStages-1 K/V tiles in flight
//   mainloop         per KV tile: S = Q K^T, [fp8 KV: undo Q's row scale], [soft cap], mask,
//                    [N:M selection], [skip-softmax vote; V fetched only for kept tiles],
//                    online softmax, O += P V
//   store_output     merge warps, [learned sinks], normalize, write O / LSE (or split-KV partials)
#pragma once
#include "block_setup.cuh"
#include "tile_mma.cuh"
#include "attention_kernel_wgmma.cuh"
#include "skip_softmax.cuh"
#include "online_softmax.cuh"
#include "epilogue.cuh"

namespace attnjit {

template <class T> __device__ __forceinline__ void attention_kernel_mma_sync(const AttentionParams& p) {
  extern __shared__ __align__(256) unsigned char smem[]; // swizzled rows need their row size (smem_rows.cuh)
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int warp_m = warp % T::kWarpsM, warp_n = warp / T::kWarpsM;

  const BlockWork w = schedule_block<T>(p);
  if (w.row_first >= w.rows) return; // the grid covers the longest sequence

  // Shared memory: Q | kStages x K | kVStages x V (fp8 KV: as bytes, widened in registers).
  const u32 s_q = smem_addr(smem);
  const u32 s_k = s_q + T::kQBytes;
  const u32 s_v = s_k + T::kStages * T::kKStageBytes;

  const ScoreScales<T> scales(p, w);
  const float scale_log2 = scales.scale_log2, softcap_pre = scales.softcap_pre, softcap_post = scales.softcap_post;
  const float v_scale = scales.v_scale;

  load_q_tile<T>(p, w, s_q);
  KvTileLoader<T> kv(p, w, s_k, s_v);
#pragma unroll
  for (int s = 0; s < T::kStages - 1; ++s) kv.prefetch(w.list_begin + s, s); // group 0 also carries Q

  int row_pos[T::kMTiles][2];
  bool row_valid[T::kMTiles][2];
  row_positions<T>(p, w, warp_m, lane, row_pos, row_valid);

  // Whether rows g + 8 of the warps' m16 tiles exist anywhere in the block (see OnlineSoftmax::update).
  const bool rows_hi = !T::kDecode || w.rows - w.row_first > 8;

  // N:M: the position of the block's first row, the one that sees the fewest keys as recent.
  const int nm_pos_first = w.kv_len - w.q_len + w.row_first / (T::kPackGqa ? p.group_size : 1);

  float o[T::kMTiles][T::kOTiles][4];
  OnlineSoftmax<T> softmax;
  softmax.init(o);
  int skipped = 0;
  QFragments<T> q_regs;

  // ldmatrix row addresses of this lane (see mma.cuh for the fragment layouts).
  const int mat = lane / 8, mat_row = lane % 8;
  const u32 q_lane = s_q + (((warp_m * T::kMTiles) * 16 + (mat & 1) * 8 + mat_row) * T::kQPitch + (mat >> 1) * 8) * 2;
  const KvLanes<T> kv_lanes(mat, mat_row, warp_n);

  for (int li = w.list_begin; li < w.list_end; ++li) {
    const int i = li - w.list_begin;
    const int stage = i % T::kStages;
    const int tile = w.tiles.tile<T>(li);
    cp_async_wait<T::kStages - 2>();
    __syncthreads(); // tile i is visible to all; stage (i-1) % kStages is free to refill
    if constexpr (!T::kSkipSoftmax) kv.prefetch(li + T::kStages - 1, (i + T::kStages - 1) % T::kStages);
    if (i == 0) { // Q arrived with the first tile's group
      if constexpr (T::kFp8Kv) {
        prepare_q_for_fp8<T>(smem);
        __syncthreads();
      }
      if constexpr (T::kQInRegisters) load_q_fragments<T>(q_regs, q_lane);
    }

    const u32 k_tile = s_k + stage * T::kKStageBytes;
    const u32 v_tile = s_v + (T::kSkipSoftmax ? 0 : stage) * T::kVStageBytes;
    float s[T::kMTiles][T::kSTiles][4];
    qk_scores<T>(s, q_lane, k_tile + kv_lanes.k, q_regs);
    // fp8 KV, bf16 q: S's rows carry Q's power-of-two row factors (rescale_q_to_f16). Masks are
    // blind to a positive factor per row, so it is undone after them, unless a soft cap needs the
    // true scores or the N:M selection rounds them to f16 (where scaled scores would overflow).
    constexpr bool kUnscaleFirst = T::kRescaleQ && (T::kSoftCap || T::kNmSparse);
    if constexpr (kUnscaleFirst) unscale_rows<T>(s, smem, warp_m, rows_hi);
    mask_and_select<T>(s, p, w, tile, tile * T::kBlockN + warp_n * T::kWarpKeys, row_pos, nm_pos_first, softcap_pre,
                       softcap_post);

    if constexpr (T::kRescaleQ && !kUnscaleFirst) unscale_rows<T>(s, smem, warp_m, rows_hi);

    if constexpr (T::kSkipSoftmax) {
      if (vote_and_fetch_v<T>(s, softmax, row_valid, scale_log2, p.skip_log2_threshold, kv, li, i, 0)) {
        ++skipped;
        continue;
      }
      softmax.update(s, o, scale_log2, rows_hi); // overlaps the V fetch
      cp_async_wait<1>();                 // all but the K prefetch just issued
      __syncthreads();
    } else {
      softmax.update(s, o, scale_log2, rows_hi);
    }
    pv_accumulate<T>(o, s, v_tile + kv_lanes.v);
  }
  cp_async_wait<0>();

  if constexpr (T::kSkipSoftmax) report_skipped_tiles(p, skipped, w.list_end - w.list_begin);
  store_output<T>(p, w, o, softmax, v_scale, smem);
}

// The emitted kernels' entry: warpgroup tiles (sm_90a) or mma.sync tiles.
template <class T> __device__ __forceinline__ void attention_kernel(const AttentionParams& p) {
  if constexpr (T::kWgmma) attention_kernel_wgmma<T>(p);
  else attention_kernel_mma_sync<T>(p);
}

} // namespace attnjit
