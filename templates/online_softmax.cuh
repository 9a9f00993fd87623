// Online softmax over KV tiles in the log2 domain: scores are scaled by scale*log2(e) so that
// one ex2 per element does the exponential. Each thread holds two rows per m16 tile; the four
// threads of a quad share a row and combine their maxima with two shuffles.
#pragma once
#include "common.cuh"

namespace attnjit {

// The largest raw score of row h (0: g, 1: g + 8) of m16 tile mi across the warp's keys of this
// tile: the thread's own maximum, then the quad's (the four threads sharing the row).
template <class T>
__device__ __forceinline__ float row_tile_max(const float (&s)[T::kMTiles][T::kSTiles][4], int mi, int h) {
  float mx = neg_inf();
#pragma unroll
  for (int nt = 0; nt < T::kSTiles; ++nt) mx = fmax_(mx, fmax_(s[mi][nt][2 * h], s[mi][nt][2 * h + 1]));
  mx = fmax_(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
  return fmax_(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
}

template <class T> struct OnlineSoftmax {
  float row_max[T::kMTiles][2]; // running max of scaled scores (log2 domain)
  float row_sum[T::kMTiles][2]; // this thread's share of the running denominator

  // No key seen yet: maxima -inf, sums and the output accumulator o zero.
  __device__ __forceinline__ void init(float (&o)[T::kMTiles][T::kOTiles][4]) {
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        row_max[mi][h] = neg_inf();
        row_sum[mi][h] = 0.f;
      }
#pragma unroll
      for (int nt = 0; nt < T::kOTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[mi][nt][e] = 0.f;
    }
  }

  // Turns the scores s into probabilities (in place) relative to the new running max, and
  // rescales the output accumulator by exp2(old max - new max). The factor is exactly 1 for a row
  // whose max did not rise, so decode rescales O only when some row of the warp saw a new max: once
  // the maxima settle (most tiles of a long sequence) that skips head_dim_v / 2 multiplies per
  // thread per tile. Prefill rescales always: its maxima rise often, and the branch costs it spills.
  // rows_hi: whether the block has rows in the upper halves (g + 8) of its m16 tiles. A decode
  // block of at most 8 rows (a GQA group of up to 8 and one token) has none: their softmax is
  // skipped and their P zeroed (the rows are computed but never stored).
  __device__ __forceinline__ void update(float (&s)[T::kMTiles][T::kSTiles][4],
                                         float (&o)[T::kMTiles][T::kOTiles][4], float scale_log2, bool rows_hi) {
    float alpha[T::kMTiles][2];
    bool max_rose = false;
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if (T::kDecode && h == 1 && !rows_hi) {
          alpha[mi][h] = 1.f;
#pragma unroll
          for (int nt = 0; nt < T::kSTiles; ++nt) s[mi][nt][2] = s[mi][nt][3] = 0.f;
          continue;
        }
        alpha[mi][h] = update_row(s, mi, h, scale_log2, max_rose, row_tile_max<T>(s, mi, h));
        if constexpr (!T::kDecode) rescale_row(o, mi, h, alpha[mi][h]);
      }
    if (T::kDecode && __any_sync(0xffffffffu, max_rose)) {
#pragma unroll
      for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          if (h == 0 || rows_hi) rescale_row(o, mi, h, alpha[mi][h]);
    }
  }

  // The same for a mainloop whose O is still being accumulated when the next scores are ready
  // (warpgroup tiles): the probabilities now, the factors O is rescaled by later (rescale).
  // tile_max(mi, h): the row's largest raw score in this tile, where the caller has it already.
  template <class TileMax>
  __device__ __forceinline__ void update_scores(float (&s)[T::kMTiles][T::kSTiles][4], float scale_log2,
                                                float (&alpha)[T::kMTiles][2], TileMax&& tile_max) {
    static_assert(!T::kDecode, "prefill rows only");
    bool max_rose = false; // unused: prefill rescales always
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
      for (int h = 0; h < 2; ++h) alpha[mi][h] = update_row(s, mi, h, scale_log2, max_rose, tile_max(mi, h));
  }
  __device__ __forceinline__ void update_scores(float (&s)[T::kMTiles][T::kSTiles][4], float scale_log2,
                                                float (&alpha)[T::kMTiles][2]) {
    update_scores(s, scale_log2, alpha, [&](int mi, int h) { return row_tile_max<T>(s, mi, h); });
  }
  __device__ __forceinline__ static void rescale(float (&o)[T::kMTiles][T::kOTiles][4], const float (&alpha)[T::kMTiles][2]) {
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
      for (int h = 0; h < 2; ++h) rescale_row(o, mi, h, alpha[mi][h]);
  }

private:
  // Row h of m16 tile mi: new running max and sum, scores to probabilities; returns the factor
  // exp2(old max - new max) for O.
  __device__ __forceinline__ float update_row(float (&s)[T::kMTiles][T::kSTiles][4], int mi, int h, float scale_log2,
                                              bool& max_rose, float mx) {
    const float new_max = fmax_(row_max[mi][h], mx * scale_log2); // scale > 0
    // A row that has seen no visible key keeps max -inf; subtracting 0 then keeps every
    // exponential at exp2(-inf) = 0 instead of NaN.
    const float base = new_max == neg_inf() ? 0.f : new_max;
    const float alpha = exp2_approx(row_max[mi][h] - base);
    max_rose |= new_max != row_max[mi][h];
    row_max[mi][h] = new_max;
    float sum = 0.f;
#pragma unroll
    for (int nt = 0; nt < T::kSTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float pr = exp2_approx(fmaf(s[mi][nt][2 * h + e], scale_log2, -base));
        s[mi][nt][2 * h + e] = pr;
        sum += pr;
      }
    row_sum[mi][h] = row_sum[mi][h] * alpha + sum;
    return alpha;
  }

  __device__ __forceinline__ static void rescale_row(float (&o)[T::kMTiles][T::kOTiles][4], int mi, int h, float alpha) {
#pragma unroll
    for (int nt = 0; nt < T::kOTiles; ++nt) {
      o[mi][nt][2 * h] *= alpha;
      o[mi][nt][2 * h + 1] *= alpha;
    }
  }
};

} // namespace attnjit
