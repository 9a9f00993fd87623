// N:M sparse softmax: in each aligned group of M keys (by absolute key index) a row keeps its N
// largest visible scores (ties to the lower index); keys j < dense_sink_tokens and keys with
// pos(i) - j < dense_recent_tokens are always kept. Everything else becomes -inf before the
// softmax, so the kernel computes exactly what dense attention does and no more.
//
// A group never straddles threads unevenly: with tiles starting at multiples of 16 keys, a group
// of 4 lives in two threads of a quad (same n8 tile), a group of 8 in one n8 tile across the quad,
// and a group of 16 in two adjacent n8 tiles across the quad. The ranking therefore needs only the
// values of the other threads of the quad, fetched with shuffles.
#pragma once
#include "common.cuh"

namespace attnjit {

template <class T>
__device__ __forceinline__ void apply_nm_sparsity(float (&s)[T::kMTiles][T::kSTiles][4], int key0,
                                                  const int (&row_pos)[T::kMTiles][2], int dense_sinks,
                                                  int dense_recent) {
  constexpr int kN = T::kNmN, kM = T::kNmM;
  constexpr int kTilesPerGroup = kM == 16 ? 2 : 1;                 // n8 tiles in a group
  constexpr int kPartners = kM == 4 ? 1 : 3;                       // other threads of the group
  const int t = threadIdx.x % 4;
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int ng = 0; ng < T::kSTiles; ng += kTilesPerGroup) {
        // The group's values: mine and my partners', with their tile-local key indices.
        float val[kTilesPerGroup * 2 * (kPartners + 1)];
        int idx[kTilesPerGroup * 2 * (kPartners + 1)];
        int n = 0;
#pragma unroll
        for (int p = 0; p <= kPartners; ++p) {
          const int lane_xor = p; // partners: t^1 (M = 4), or t^1, t^2, t^3
#pragma unroll
          for (int k = 0; k < kTilesPerGroup; ++k)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float mine = s[mi][ng + k][2 * h + e];
              val[n] = p == 0 ? mine : __shfl_xor_sync(0xffffffffu, mine, lane_xor);
              idx[n] = (ng + k) * 8 + 2 * (t ^ lane_xor) + e;
              ++n;
            }
        }
        // Rank my own elements (the first 2 * kTilesPerGroup entries) within the group.
#pragma unroll
        for (int k = 0; k < kTilesPerGroup; ++k)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int self = k * 2 + e;
            const float v = val[self];
            int rank = 0;
#pragma unroll
            for (int o = 0; o < n; ++o)
              if (o != self && (val[o] > v || (val[o] == v && idx[o] < idx[self]))) ++rank;
            const int key = key0 + idx[self];
            const bool exempt = key < dense_sinks || row_pos[mi][h] - key < dense_recent;
            if (rank >= kN && !exempt) s[mi][ng + k][2 * h + e] = neg_inf();
          }
      }
}

} // namespace attnjit
