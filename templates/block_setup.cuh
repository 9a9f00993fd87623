// What both mainloops (mma.sync: attention_kernel.cuh; warpgroups: attention_kernel_wgmma.cuh)
// set up per CTA and do per KV tile, apart from the products:
//   load_q_tile      the block's Q rows into shared memory, zero-filled past the sequence
//   KvTileLoader     K and V tiles gathered through the block table into pipeline stages
//   row_positions    the absolute position of each of a thread's rows, for the masks
//   mask_and_select  [soft cap], mask, [N:M selection] on one KV tile's scores
//   scores_to_probabilities  the same and the online softmax, in the warpgroup mainloop's order
#pragma once
#include "kernel_traits.cuh"
#include "tile_scheduler.cuh"
#include "kv_addressing.cuh"
#include "tile_load.cuh"
#include "mask.cuh"
#include "nm_sparse.cuh"
#include "online_softmax.cuh"

namespace attnjit {

template <class T> __device__ __forceinline__ void load_q_tile(const AttentionParams& p, const BlockWork& w, u32 s_q) {
  load_tile<T::kBlockM, T::kHeadDimQK * 2, typename T::QRows, T::kThreads>(s_q, [&](int r) {
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

  __device__ __forceinline__ void load_k(int list_index, int stage, int run_block) {
    load_kv_tile<T::kBlockN, T::kHeadDimQK * kKvBytes, typename T::KStageRows, T::kThreads>(
        s_k + stage * T::kKStageBytes, kv, k_head, w.tiles.tile<T>(list_index) * T::kBlockN, w.kv_len, p.k_block_bytes,
        p.k_token_bytes, run_block);
  }
  __device__ __forceinline__ void load_v(int list_index, int stage, int run_block) {
    load_kv_tile<T::kBlockN, T::kHeadDimV * kKvBytes, typename T::VStageRows, T::kThreads>(
        s_v + stage * T::kVStageBytes, kv, v_head, w.tiles.tile<T>(list_index) * T::kBlockN, w.kv_len, p.v_block_bytes,
        p.v_token_bytes, run_block);
  }
  // Paged KV (KernelTraits::kBlockTableAhead): the block-table entries of this thread's runs are
  // read one tile ahead of the copies that need them, so issuing a tile's copies does not wait on
  // a dependent global load.
  __device__ __forceinline__ void run_blocks(int list_index, int& k_block, int& v_block) {
    if constexpr (T::kBlockTableAhead) {
      const int key0 = w.tiles.tile<T>(min_(list_index, w.list_end - 1)) * T::kBlockN;
      k_block = kv_run_block<T::kBlockN, T::kHeadDimQK * kKvBytes, typename T::KStageRows, T::kThreads>(kv, key0);
      v_block = kv_run_block<T::kBlockN, T::kHeadDimV * kKvBytes, typename T::VStageRows, T::kThreads>(kv, key0);
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

// Soft cap and mask of one KV tile's raw scores (this warp's keys from key0).
template <class T>
__device__ __forceinline__ void cap_and_mask(float (&s)[T::kMTiles][T::kSTiles][4], const AttentionParams& p,
                                             const BlockWork& w, int tile, int key0, const int (&row_pos)[T::kMTiles][2],
                                             float softcap_pre, float softcap_post) {
  if constexpr (T::kSoftCap) apply_soft_cap<T>(s, softcap_pre, softcap_post);
  // Only tiles reaching outside the keys every row can see need the element-wise mask.
  if ((T::kSlidingWindow && tile * T::kBlockN < w.unmasked_begin) || (tile + 1) * T::kBlockN > w.unmasked_end)
    apply_mask<T>(s, key0, row_pos, w.kv_len, p.window_size, p.sink_tokens);
}

// Whether the N:M exemptions can reach this warp's keys of a tile: dense sinks, or keys recent
// for the block's earliest row (nm_pos_first), the one that sees the fewest keys as recent.
template <class T>
__device__ __forceinline__ bool nm_exemptions_possible(const AttentionParams& p, int key0, int nm_pos_first) {
  return key0 < p.nm_dense_sink_tokens || nm_pos_first - (key0 + T::kWarpKeys - 1) < p.nm_dense_recent_tokens;
}

// One KV tile's raw scores: soft cap, mask, N:M selection (the mma.sync mainloop; its softmax
// follows).
template <class T>
__device__ __forceinline__ void mask_and_select(float (&s)[T::kMTiles][T::kSTiles][4], const AttentionParams& p,
                                                const BlockWork& w, int tile, int key0,
                                                const int (&row_pos)[T::kMTiles][2], int nm_pos_first,
                                                float softcap_pre, float softcap_post) {
  cap_and_mask<T>(s, p, w, tile, key0, row_pos, softcap_pre, softcap_post);
  if constexpr (T::kNmSparse) {
    if (w.q_len > 1) { // rows of a q_len-1 sequence stay dense
      const NmSelection<T> nm{key0, row_pos, p.nm_dense_sink_tokens, p.nm_dense_recent_tokens};
      if (nm_exemptions_possible<T>(p, key0, nm_pos_first)) nm.template apply<true>(s);
      else nm.template apply<false>(s);
    }
  }
}

// The same, then the online softmax, for the warpgroup mainloop: one KV tile's raw scores (keys
// from key0) to probabilities, alpha the factors O is to be rescaled by. With N:M
// (KernelTraits::kNmPhased) the row maxima are taken before the selection: each group keeps its
// largest visible score, so the maximum over the visible scores is the maximum over the kept ones,
// exactly. The networks then share a basic block with the maxima's shuffles, and the drops one
// with the exponentials, where ptxas can overlap their latencies.
template <class T>
__device__ __forceinline__ void scores_to_probabilities(float (&s)[T::kMTiles][T::kSTiles][4], const AttentionParams& p,
                                                        const BlockWork& w, int tile, int key0,
                                                        const int (&row_pos)[T::kMTiles][2], int nm_pos_first,
                                                        OnlineSoftmax<T>& softmax, float (&alpha)[T::kMTiles][2]) {
  cap_and_mask<T>(s, p, w, tile, key0, row_pos, p.softcap_pre, p.softcap_post);
  float base[T::kMTiles][2];
  softmax.begin_tile(s, p.scale_log2, alpha, base);
  if constexpr (T::kNmPhased) {
    using Nm = NmSelection<T>;
    const Nm nm{key0, row_pos, p.nm_dense_sink_tokens, p.nm_dense_recent_tokens};
    typename Nm::Thresholds nth;
    const bool tie = Nm::rank_all(s, nth);
    const bool sparse_rows = w.q_len > 1; // rows of a q_len-1 sequence stay dense
    if (tie || !sparse_rows) {
      if (sparse_rows) nm.settle_ties(s, nth);
#pragma unroll
      for (int pr = 0; pr < Nm::kPairs; ++pr) nth[pr].bits = Nm::kKeepAll;
    }
    if (nm_exemptions_possible<T>(p, key0, nm_pos_first)) {
      nm.template drop_all<true>(s, nth);
      softmax.exponentiate(s, p.scale_log2, alpha, base);
    } else {
      nm.template drop_all<false>(s, nth);
      softmax.exponentiate(s, p.scale_log2, alpha, base);
    }
  } else {
    static_assert(!T::kNmSparse, "warpgroup N:M takes the phased selection");
    softmax.exponentiate(s, p.scale_log2, alpha, base);
  }
}

} // namespace attnjit
