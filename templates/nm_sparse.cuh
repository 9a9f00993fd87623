// N:M sparse softmax: in each aligned group of M keys (by absolute key index) a row keeps its N
// largest visible scores (ties to the lower index); keys j < dense_sink_tokens and keys with
// pos(i) - j < dense_recent_tokens are always kept. Everything else becomes -inf before the
// softmax, so the kernel computes exactly what dense attention does and no more.
//
// The N:M kernels use the thread-contiguous key order (KernelTraits::column_key): a thread holds
// kThreadKeys consecutive keys of each of its rows, so every group lies in one thread's registers
// and the selection is a few min/max operations per score, without shuffles:
//   1. the group's N-th and (N+1)-th largest scores (with multiplicity) are outputs N-1 and N of
//      Parberry's pairwise sorting network applied to a copy of its M scores. Only the min/max
//      operations those two outputs depend on remain: the others' results are unused and the
//      compiler drops them (2:4 keeps 8 of the network's 10, 4:8 28 of 38, 8:16 88 of 126; the
//      other networks tried leave as many or more: 8:16 Batcher's odd-even merge sort 92, Green's
//      60-comparator network 94, bitonic 126);
//   2. a score at or above the N-th largest is kept. Only when the (N+1)-th largest equals it (a
//      tie across the threshold) is the tie rule needed: then the lowest indices among the scores
//      equal to the threshold fill the places the larger scores leave.
// The kernel runs at its register cap, so the selection holds little besides the copy: exempt keys
// become a bit mask only after the networks, and groups go two at a time (one tie branch per pair).
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

// Parberry's pairwise sorting network of v (kM a power of two), descending, in registers. Every
// loop has a constant trip count (bounds in conditions), so all of them unroll.
template <int kM> __device__ __forceinline__ void pairwise_sort(float (&v)[kM]) {
  constexpr int kLog = log2_exact(kM);
  // Its two phases as Parberry writes them out: for a = 1, 2, 4, ..., each element whose a bit is
  // clear against the one a after it;
#pragma unroll
  for (int la = 0; la < kLog; ++la)
#pragma unroll
    for (int i = 0; i < kM; ++i)
      if (!(i >> la & 1)) order(v[i], v[i + (1 << la)]);
  // then for a = kM/4 down to 1 and d = kM/(2a) - 1, ..., 3, 1, each element of an even a-block
  // at or past block d + 1 against the one d*a before it.
#pragma unroll
  for (int la = kLog - 2; la >= 0; --la)
#pragma unroll
    for (int ld = kLog - 1; ld > 0; --ld)
#pragma unroll
      for (int i = 0; i < kM; ++i) {
        const int a = 1 << la, d = (1 << ld) - 1;
        if (ld < kLog - la && i >= (d + 1) * a && i / a % 2 == 0) order(v[i - d * a], v[i]);
      }
}

// The kN-th and (kN+1)-th largest of kM values (with multiplicity); v is clobbered. The asm
// min/max have no side effects, so only the comparators these two outputs need are emitted.
template <int kN, int kM>
__device__ __forceinline__ void nth_largest(float (&v)[kM], float& nth, float& next) {
  pairwise_sort(v);
  nth = v[kN - 1];
  next = v[kN];
}

// Bits [0, n) of a kM-bit mask, n clamped to [0, kM].
template <int kM> __device__ __forceinline__ unsigned low_bits(int n) {
  return (1u << (n < 0 ? 0 : n > kM ? kM : n)) - 1;
}

} // namespace nm_detail

// key0: the warp's first key of this tile; row_pos: absolute positions of the thread's rows.
// kExemptions: whether any dense sink or recent key can fall in this tile (else not checked).
template <class T, bool kExemptions>
__device__ __forceinline__ void apply_nm_sparsity(float (&s)[T::kMTiles][T::kSTiles][4], int key0,
                                                  const int (&row_pos)[T::kMTiles][2], int dense_sinks,
                                                  int dense_recent) {
  static_assert(T::kThreadContiguousKeys, "N:M selection needs each group in one thread");
  constexpr int kN = T::kNmN, kM = T::kNmM, kRowGroups = T::kThreadKeys / kM;
  constexpr int kGroups = T::kMTiles * 2 * kRowGroups;
  // The thread's group i: m16 tile i / (2 kRowGroups), row h = i / kRowGroups % 2, keys g*kM + q
  // of its run (g = i % kRowGroups), which are column (n8 tile (g*kM + q) / 2, element q % 2).
  auto score = [&](int i, int q) -> float& {
    return s[i / (2 * kRowGroups)][(i % kRowGroups * kM + q) / 2][2 * (i / kRowGroups % 2) + q % 2];
  };
  // Bit q: key q of group i is exempt (a dense sink, or recent for its row). Formed after the
  // networks: the keys' tests computed up front held registers through them and spilled.
  auto exempt_bits = [&](int i) -> unsigned {
    if constexpr (kExemptions) {
      const int group_key0 = key0 + (threadIdx.x % 4) * T::kThreadKeys + i % kRowGroups * kM;
      // Key q is recent when dist - q < dense_recent: every q if dist < dense_recent, else those
      // past dist - dense_recent (>= 0 here, so it cannot overflow).
      const int dist = row_pos[i / (2 * kRowGroups)][i / kRowGroups % 2] - group_key0;
      return nm_detail::low_bits<kM>(dense_sinks - group_key0) |
             (dist < dense_recent ? ~0u : ~nm_detail::low_bits<kM>(min(dist - dense_recent, kM) + 1));
    } else {
      return 0;
    }
  };
  auto keep_or_drop = [&](int i, int q, bool kept, unsigned exempt) {
    if (!(kept || (exempt >> q & 1))) score(i, q) = neg_inf();
  };

  // Each group's N-th largest. Scores at or above it are exactly the N kept unless the (N+1)-th
  // equals it; one flag per pair of groups takes that rare case in one branch. Pairs measured
  // spill-free at the cap for 2:4, 4:8 and 8:16, where one group at a time, or four or more,
  // spilled (4 to 12 bytes).
  constexpr int kBatch = 2; // kGroups is even
#pragma unroll
  for (int i0 = 0; i0 < kGroups; i0 += kBatch) {
    float threshold[kBatch];
    bool tie = false;
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      float sorted[kM];
#pragma unroll
      for (int q = 0; q < kM; ++q) sorted[q] = score(i0 + b, q);
      float next;
      nm_detail::nth_largest<kN, kM>(sorted, threshold[b], next);
      tie = tie || (next == threshold[b] && next != neg_inf());
    }
    if (!tie) {
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        const unsigned exempt = exempt_bits(i0 + b);
#pragma unroll
        for (int q = 0; q < kM; ++q) keep_or_drop(i0 + b, q, score(i0 + b, q) >= threshold[b], exempt);
      }
    } else {
      // The lowest indices among the scores equal to the threshold fill the places the larger
      // scores leave (a group without a tie, or with a -inf threshold, comes out as above).
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        const int i = i0 + b;
        const float t = threshold[b];
        const unsigned exempt = exempt_bits(i);
        int places = kN;
#pragma unroll
        for (int q = 0; q < kM; ++q) places -= score(i, q) > t;
#pragma unroll
        for (int q = 0; q < kM; ++q) {
          const float v = score(i, q);
          keep_or_drop(i, q, v > t || (v == t && places-- > 0), exempt);
        }
      }
    }
  }
}

} // namespace attnjit
