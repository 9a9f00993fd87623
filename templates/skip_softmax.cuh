// Skip-softmax (BLASST-style): a KV tile is skipped for the query tile when every valid row's
// largest score in it lies below that row's running max + ln(lambda), so its probabilities would
// all be below lambda relative to the row's current maximum. The decision is CTA-wide (the query
// tile is the CTA's block of rows), and a skipped tile loads no V and does no P*V.
#pragma once
#include "online_softmax.cuh"
#include "async_copy.cuh"
#include "params.cuh"

namespace attnjit {

// Whether this thread's valid rows all fall below the threshold (log2 domain: scores times
// scale_log2 against row_max + log2(lambda)). Rows with no visible key yet (max -inf) never pass.
template <class T>
__device__ __forceinline__ bool rows_below_threshold(const float (&s)[T::kMTiles][T::kSTiles][4],
                                                     const float (&row_max)[T::kMTiles][2],
                                                     const bool (&row_valid)[T::kMTiles][2], float scale_log2,
                                                     float log2_threshold) {
  bool below = true;
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float mx = row_tile_max<T>(s, mi, h);
      if (row_valid[mi][h]) below = below && mx * scale_log2 < row_max[mi][h] + log2_threshold;
    }
  return below;
}

// The CTA's vote on its i-th tile (list index li, scores s masked): a kept tile's V is fetched into
// `v_stage` as a copy group of its own, then K runs on, kStages - 1 tiles ahead, whether or not.
// Returns whether the tile is skipped.
template <class T, class Loader>
__device__ __forceinline__ bool vote_and_fetch_v(const float (&s)[T::kMTiles][T::kSTiles][4], const OnlineSoftmax<T>& softmax,
                                                 const bool (&row_valid)[T::kMTiles][2], float scale_log2,
                                                 float log2_threshold, Loader& kv, int li, int i, int v_stage) {
  const bool skip = __syncthreads_and(rows_below_threshold<T>(s, softmax.row_max, row_valid, scale_log2, log2_threshold));
  if (!skip) {
    kv.load_v(li, v_stage, -1);
    cp_async_commit();
  }
  kv.prefetch(li + T::kStages - 1, (i + T::kStages - 1) % T::kStages);
  return skip;
}

// The optional counters (AttentionParams::skip_stats): tiles skipped, tiles seen; one thread per CTA adds.
__device__ __forceinline__ void report_skipped_tiles(const AttentionParams& p, int skipped, int seen) {
  if (p.skip_stats != nullptr && threadIdx.x == 0) {
    atomicAdd(p.skip_stats, static_cast<unsigned long long>(skipped));
    atomicAdd(p.skip_stats + 1, static_cast<unsigned long long>(seen));
  }
}

} // namespace attnjit
