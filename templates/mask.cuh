// Masks applied to a warp's S tile: keys past the sequence, the causal rule j <= pos(i), and the
// sliding window pos(i) - j < W with sink tokens j < S exempt. Masked scores become -inf and so
// contribute exactly zero after the softmax.
#pragma once
#include "common.cuh"

namespace attnjit {

template <class T>
__device__ __forceinline__ bool key_visible(int key, int pos, int kv_len, int window, int sinks) {
  bool visible = key < kv_len;
  if constexpr (T::kCausal) visible = visible && key <= pos;
  if constexpr (T::kSlidingWindow) visible = visible && (pos - key < window || key < sinks);
  return visible;
}

// s[mi][nt][e]: e = 0,1 row g; e = 2,3 row g+8; key = key0 + column_key(nt, 2t + (e & 1)).
// row_pos[mi][h]: absolute position of the thread's row (h = 0: row g, h = 1: row g + 8).
template <class T>
__device__ __forceinline__ void apply_mask(float (&s)[T::kMTiles][T::kSTiles][4], int key0,
                                           const int (&row_pos)[T::kMTiles][2], int kv_len,
                                           int window, int sinks) {
  const int t = threadIdx.x % 4;
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int nt = 0; nt < T::kSTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + T::column_key(nt, 2 * t + (e & 1));
        if (!key_visible<T>(key, row_pos[mi][e / 2], kv_len, window, sinks)) s[mi][nt][e] = neg_inf();
      }
}

// Logits soft cap on raw scores q.k: s*scale becomes cap*tanh(s*scale/cap); the result is kept in
// raw-score units (divided by scale) so the softmax's scale folding stays unchanged.
template <class T>
__device__ __forceinline__ void apply_soft_cap(float (&s)[T::kMTiles][T::kSTiles][4], float pre, float post) {
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int nt = 0; nt < T::kSTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[mi][nt][e] = post * tanh_approx(s[mi][nt][e] * pre);
}

} // namespace attnjit
