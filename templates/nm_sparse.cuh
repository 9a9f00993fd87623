// N:M sparse softmax: in each aligned group of M keys (by absolute key index) a row keeps its N
// largest visible scores (ties to the lower index); keys j < dense_sink_tokens and keys with
// pos(i) - j < dense_recent_tokens are always kept. Everything else becomes -inf before the
// softmax, so the kernel computes exactly what dense attention does and no more.
//
// The N:M kernels use the thread-contiguous key order (KernelTraits::column_key): a thread holds
// kThreadKeys consecutive keys of each of its rows, so every group lies in one thread's registers
// and the selection is a few min/max operations per score, without shuffles:
//   1. the group's N-th largest score (with multiplicity) by sorting both halves with Batcher's
//      odd-even merge network and taking the N-th of their union, max_i min(A[i-1], B[N-1-i]);
//   2. a score at or above it is kept. Only when the (N+1)-th largest equals it (a tie across the
//      threshold) is the tie rule needed: then the lowest indices among the scores equal to the
//      threshold fill the places the larger scores leave.
#pragma once
#include "common.cuh"

namespace attnjit {

namespace nm_detail {

// One min/max instruction each (the ternary form leaves NaN handling to a compare and select).
__device__ __forceinline__ float fmax_(float a, float b) {
  float r;
  asm("max.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ __forceinline__ float fmin_(float a, float b) {
  float r;
  asm("min.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ __forceinline__ void order(float& hi, float& lo) { // hi >= lo afterwards
  const float a = hi;
  hi = fmax_(a, lo);
  lo = fmin_(a, lo);
}

// Batcher's odd-even merge sort of v[kLo, kLo + kN) (kN a power of two), descending, in registers.
template <int kLo, int kN, int kStride> struct OddEvenMerge {
  template <int kLen> __device__ __forceinline__ static void run(float (&v)[kLen]) {
    constexpr int kStep = kStride * 2;
    if constexpr (kStep < kN) {
      OddEvenMerge<kLo, kN, kStep>::run(v);
      OddEvenMerge<kLo + kStride, kN, kStep>::run(v);
#pragma unroll
      for (int i = kLo + kStride; i + kStride < kLo + kN; i += kStep) order(v[i], v[i + kStride]);
    } else {
      order(v[kLo], v[kLo + kStride]);
    }
  }
};
template <int kLo, int kN> struct OddEvenSort {
  template <int kLen> __device__ __forceinline__ static void run(float (&v)[kLen]) {
    if constexpr (kN > 1) {
      OddEvenSort<kLo, kN / 2>::run(v);
      OddEvenSort<kLo + kN / 2, kN / 2>::run(v);
      OddEvenMerge<kLo, kN, 1>::run(v);
    }
  }
};

// The k-th largest of the union of two descending runs of kHalf values, v[0, kHalf) and
// v[kHalf, 2 kHalf): the k largest take i from the first run and k - i from the second, and the
// best split's smallest member is the answer.
template <int kK, int kHalf> __device__ __forceinline__ float kth_of_sorted_halves(const float (&v)[2 * kHalf]) {
  constexpr int kFirst = kK > kHalf ? kK - kHalf : 0, kLast = kK < kHalf ? kK : kHalf;
  auto split = [&](int i) {
    return i == 0 ? v[kHalf + kK - 1] : i == kK ? v[kK - 1] : fmin_(v[i - 1], v[kHalf + kK - 1 - i]);
  };
  float best = split(kFirst);
#pragma unroll
  for (int i = kFirst + 1; i <= kLast; ++i) best = fmax_(best, split(i));
  return best;
}

// The kN-th and (kN+1)-th largest of kM values (with multiplicity); v is clobbered (sorted halves).
template <int kN, int kM>
__device__ __forceinline__ void nth_largest(float (&v)[kM], float& nth, float& next) {
  OddEvenSort<0, kM / 2>::run(v);
  OddEvenSort<kM / 2, kM / 2>::run(v);
  nth = kth_of_sorted_halves<kN, kM / 2>(v);
  next = kth_of_sorted_halves<kN + 1, kM / 2>(v);
}

} // namespace nm_detail

// key0: the warp's first key of this tile; row_pos: absolute positions of the thread's rows.
// kExemptions: whether any dense sink or recent key can fall in this tile (else not checked).
template <class T, bool kExemptions>
__device__ __forceinline__ void apply_nm_sparsity(float (&s)[T::kMTiles][T::kSTiles][4], int key0,
                                                  const int (&row_pos)[T::kMTiles][2], int dense_sinks,
                                                  int dense_recent) {
  static_assert(T::kThreadContiguousKeys, "N:M selection needs each group in one thread");
  constexpr int kN = T::kNmN, kM = T::kNmM;
  const int thread_key0 = key0 + (threadIdx.x % 4) * T::kThreadKeys;
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int g = 0; g < T::kThreadKeys / kM; ++g) {
        // Key g*kM + q of the thread's run is column (n8 tile (g*kM + q) / 2, element q % 2).
        auto score = [&](int q) -> float& { return s[mi][(g * kM + q) / 2][2 * h + q % 2]; };
        float sorted[kM];
#pragma unroll
        for (int q = 0; q < kM; ++q) sorted[q] = score(q);
        float threshold, next;
        nm_detail::nth_largest<kN, kM>(sorted, threshold, next);
        // Scores at or above the N-th largest are exactly the N kept, unless the (N+1)-th equals
        // it: then the tie rule picks the lowest indices among the scores equal to the threshold.
        auto keep_or_drop = [&](int q, bool kept) {
          if constexpr (kExemptions) {
            const int key = thread_key0 + g * kM + q;
            kept = kept || key < dense_sinks || row_pos[mi][h] - key < dense_recent;
          }
          if (!kept) score(q) = neg_inf();
        };
        if (next != threshold || threshold == neg_inf()) {
#pragma unroll
          for (int q = 0; q < kM; ++q) keep_or_drop(q, score(q) >= threshold);
        } else {
          int places = kN; // for scores equal to the threshold, lowest index first
#pragma unroll
          for (int q = 0; q < kM; ++q) places -= score(q) > threshold;
#pragma unroll
          for (int q = 0; q < kM; ++q) {
            const float v = score(q);
            keep_or_drop(q, v > threshold || (v == threshold && places-- > 0));
          }
        }
      }
}

} // namespace attnjit
