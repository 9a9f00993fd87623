// What both mainloops (mma.sync: attention_kernel.cuh; warpgroups: attention_kernel_wgmma.cuh)
// set up per CTA and do per KV tile, apart from the products:
//   load_q_tile      the block's Q rows into shared memory, zero-filled past the sequence
//   KvTileLoader     K and V tiles gathered through the block table into pipeline stages
//   row_positions    the absolute position of each of a thread's rows, for the masks
//   mask_and_select  [soft cap], mask, [N:M selection] on one KV tile's scores
#pragma once
#include "kernel_traits.cuh"
#include "tile_scheduler.cuh"
#include "kv_addressing.cuh"
#include "tile_load.cuh"
#include "mask.cuh"
#include "nm_sparse.cuh"

namespace attnjit {

template <class T> __device__ __forceinline__ void load_q_tile(const AttentionParams& p, const BlockWork& w, u32 s_q) {
  load_tile<T::kBlockM, T::kHeadDimQK * 2, typename T::QRows, typename T::CopyTeam>(s_q, [&](int r) {
    const int row = w.row_first + r;
    if (row >= w.rows) return RowSource{static_cast<const char*>(p.q), false};
    int token, head;
    row_coords<T>(p, w, row, token, head);
    return RowSource{reinterpret_cast<const char*>(static_cast<const u16*>(p.q) + (w.q_start + token) * p.q_stride_token +
                                                   head * p.q_stride_head),
                     true};
  });
}

// K and V tiles of the CTA's tile list into stages at s_k and s_v. A CTA with keys to visit has
// kv_len >= 1.
template <class T> struct KvTileLoader {
  static constexpr int kKvBytes = T::KvElem::kBytes;
  const AttentionParams& p;
  const BlockWork& w;
  u32 s_k, s_v;
  KvAddressing<T::kPaged, T::kLogPageSize> kv;
  const char* k_head;
  const char* v_head;
  int k_block_next = -1, v_block_next = -1;

  __device__ __forceinline__ KvTileLoader(const AttentionParams& p_, const BlockWork& w_, u32 s_k_, u32 s_v_)
      : p(p_), w(w_), s_k(s_k_), s_v(s_v_) {
    if constexpr (T::kPaged) {
      kv.block_table_row = p.block_table + static_cast<i64>(w.batch) * p.block_table_stride;
      kv.last_page = (w.kv_len - 1) >> T::kLogPageSize;
    } else {
      kv.token_base = p.cu_seqlens_k[w.batch];
      kv.last_key = w.kv_len - 1;
    }
    k_head = static_cast<const char*>(p.k) + w.kv_head * p.k_head_bytes;
    v_head = static_cast<const char*>(p.v) + w.kv_head * p.v_head_bytes;
    if (w.list_begin < w.list_end) run_blocks(w.list_begin, k_block_next, v_block_next);
  }

  // One K or V tile: copied (cp.async), or widened from fp8 by a producer warpgroup.
  template <int kHeadDim, class Rows>
  __device__ __forceinline__ void load(u32 dst, const char* head, int list_index, int stride_block, int stride_token,
                                       int run_block) {
    const int key0 = w.tiles.tile<T>(list_index) * T::kBlockN;
    if constexpr (T::kWidenKvInProducer)
      load_kv_tile_widened<T::kBlockN, kHeadDim * kKvBytes, Rows, typename T::CopyTeam, typename T::Widen>(
          dst, kv, head, key0, w.kv_len, stride_block, stride_token, run_block);
    else
      load_kv_tile<T::kBlockN, kHeadDim * kKvBytes, Rows, typename T::CopyTeam>(dst, kv, head, key0, w.kv_len, stride_block,
                                                                               stride_token, run_block);
  }
  __device__ __forceinline__ void load_k(int list_index, int stage, int run_block) {
    load<T::kHeadDimQK, typename T::KStageRows>(s_k + stage * T::kKStageBytes, k_head, list_index, p.k_block_bytes,
                                                p.k_token_bytes, run_block);
  }
  __device__ __forceinline__ void load_v(int list_index, int stage, int run_block) {
    load<T::kHeadDimV, typename T::VStageRows>(s_v + stage * T::kVStageBytes, v_head, list_index, p.v_block_bytes,
                                               p.v_token_bytes, run_block);
  }
  // Paged KV (KernelTraits::kBlockTableAhead): the block-table entries of this thread's runs are
  // read one tile ahead of the copies that need them, so issuing a tile's copies does not wait on
  // a dependent global load.
  __device__ __forceinline__ void run_blocks(int list_index, int& k_block, int& v_block) {
    if constexpr (T::kBlockTableAhead) {
      const int key0 = w.tiles.tile<T>(min_(list_index, w.list_end - 1)) * T::kBlockN;
      k_block = kv_run_block<T::kBlockN, T::kHeadDimQK * kKvBytes, typename T::KStageRows, typename T::CopyTeam>(kv, key0);
      v_block = kv_run_block<T::kBlockN, T::kHeadDimV * kKvBytes, typename T::VStageRows, typename T::CopyTeam>(kv, key0);
    }
  }
  // Tile list_index into `stage` (nothing past the list), as one commit group. Skip-softmax
  // fetches V only for tiles it keeps, so its pipeline runs ahead on K alone.
  __device__ __forceinline__ void prefetch(int list_index, int stage) {
    if (list_index < w.list_end) {
      const int k_block = k_block_next, v_block = v_block_next;
      run_blocks(list_index + 1, k_block_next, v_block_next);
      load_k(list_index, stage, k_block);
      if constexpr (!T::kSkipSoftmax) load_v(list_index, stage, v_block);
    }
    cp_async_commit();
  }
};

// The factors the scores and the output take. fp8 KV: the K scale folds into the softmax scale and
// the soft cap's factors (which then act on raw scores), the V scale into the epilogue. 16-bit KV
// reads the parameters in place (no registers held through the mainloop).
template <class T> struct ScoreScales {
  float scale_log2, softcap_pre, softcap_post, v_scale;
  __device__ __forceinline__ ScoreScales(const AttentionParams& p, const BlockWork& w) {
    const int scale_index = T::kKvScalePerHead ? w.kv_head : 0;
    const float k_scale = T::kFp8Kv ? p.k_scale[scale_index] : 1.f;
    v_scale = T::kFp8Kv ? p.v_scale[scale_index] : 1.f;
    scale_log2 = T::kFp8Kv ? p.scale_log2 * k_scale : p.scale_log2;
    softcap_pre = T::kFp8Kv ? p.softcap_pre * k_scale : p.softcap_pre;
    softcap_post = T::kFp8Kv ? p.softcap_post / k_scale : p.softcap_post;
  }
};

// Absolute position of each of this thread's rows (for masks), and whether the row exists.
template <class T>
__device__ __forceinline__ void row_positions(const AttentionParams& p, const BlockWork& w, int warp_m, int lane,
                                              int (&row_pos)[T::kMTiles][2], bool (&row_valid)[T::kMTiles][2]) {
  const int group = T::kPackGqa ? p.group_size : 1;
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = w.row_first + (warp_m * T::kMTiles + mi) * 16 + lane / 4 + 8 * h;
      // Rows past the sequence are computed but never stored; any position is harmless.
      row_pos[mi][h] = w.kv_len - w.q_len + row / group;
      row_valid[mi][h] = row < w.rows;
    }
}

// One KV tile's raw scores (this warp's keys from key0): soft cap, mask, N:M selection.
// nm_pos_first: the position of the block's first row, the one that sees the fewest keys as recent.
// masked(): called once, after the mask, and under N:M before any score is dropped (see
// apply_nm_sparsity: the rows' maxima are the same then).
template <class T, class Masked = NoOp>
__device__ __forceinline__ void mask_and_select(float (&s)[T::kMTiles][T::kSTiles][4], const AttentionParams& p,
                                                const BlockWork& w, int tile, int key0,
                                                const int (&row_pos)[T::kMTiles][2], int nm_pos_first,
                                                float softcap_pre, float softcap_post, Masked&& masked = {}) {
  if constexpr (T::kSoftCap) apply_soft_cap<T>(s, softcap_pre, softcap_post);
  // Only tiles reaching outside the keys every row can see need the element-wise mask.
  if ((T::kSlidingWindow && tile * T::kBlockN < w.unmasked_begin) || (tile + 1) * T::kBlockN > w.unmasked_end)
    apply_mask<T>(s, key0, row_pos, w.kv_len, p.window_size, p.sink_tokens);
  if constexpr (T::kNmSparse) {
    if (w.q_len > 1) { // rows of a q_len-1 sequence stay dense
      // Exempt keys (dense sinks, recent keys of the block's earliest row) checked only where they can be.
      if (key0 < p.nm_dense_sink_tokens || nm_pos_first - (key0 + T::kWarpKeys - 1) < p.nm_dense_recent_tokens)
        apply_nm_sparsity<T, true>(s, key0, row_pos, p.nm_dense_sink_tokens, p.nm_dense_recent_tokens, masked);
      else
        apply_nm_sparsity<T, false>(s, key0, row_pos, 0, 0, masked);
    } else {
      masked();
    }
  } else {
    masked();
  }
}

} // namespace attnjit
