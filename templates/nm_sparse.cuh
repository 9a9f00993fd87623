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
// become a bit mask only after the networks, and groups go two at a time (one tie branch per pair,
// or one for all pairs where KernelTraits::kNmRankAllPairsFirst).
// Each pair first runs through one network on f16x2 and needs the fp32 networks only where
// rounding to f16 leaves the threshold in doubt (apply_nm_sparsity).
#pragma once
#include "common.cuh"

namespace attnjit {

namespace nm_detail {

__device__ __forceinline__ void order(float& hi, float& lo) { // hi >= lo afterwards
  const float a = hi;
  hi = fmax_(a, lo);
  lo = fmin_(a, lo);
}
// Two f16 scores, one from each of two groups: one min/max instruction orders both pairs.
struct Half2 {
  u32 bits;
};
__device__ __forceinline__ void order(Half2& hi, Half2& lo) {
  const u32 a = hi.bits;
  asm("max.f16x2 %0, %1, %2;" : "=r"(hi.bits) : "r"(a), "r"(lo.bits));
  asm("min.f16x2 %0, %1, %2;" : "=r"(lo.bits) : "r"(a), "r"(lo.bits));
}
// Whether a and b are equal in either half (-inf equals -inf): one packed compare, where
// widening both halves of both to f32 took four conversions and two compares.
__device__ __forceinline__ bool either_equal(Half2 a, Half2 b) {
  u32 r;
  asm("{\n .reg .pred p, q;\n setp.eq.f16x2 p|q, %1, %2;\n or.pred p, p, q;\n selp.u32 %0, 1, 0, p;\n}"
      : "=r"(r)
      : "r"(a.bits), "r"(b.bits));
  return r != 0;
}
// a (low half's group) and b (high half's) become -inf where their f16 values in x are below t's.
__device__ __forceinline__ void drop_below(float& a, float& b, Half2 x, Half2 t) {
  asm("{\n .reg .pred p, q;\n setp.ge.f16x2 p|q, %2, %3;\n @!p mov.b32 %0, 0xff800000;\n @!q mov.b32 %1, 0xff800000;\n}"
      : "+f"(a), "+f"(b)
      : "r"(x.bits), "r"(t.bits));
}

// Parberry's pairwise sorting network of v (kM a power of two), descending, in registers. Every
// loop has a constant trip count (bounds in conditions), so all of them unroll.
template <int kM, class V> __device__ __forceinline__ void pairwise_sort(V (&v)[kM]) {
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
template <int kN, int kM, class V>
__device__ __forceinline__ void nth_largest(V (&v)[kM], V& nth, V& next) {
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
// ranked(): called once, where every pair's network has run and no score has been dropped yet
// (selection keeps each group's largest score, so a row's maximum is the same before and after:
// computed there, its reduction runs beside the networks rather than after the drops).
template <class T, bool kExemptions, class Ranked = NoOp>
__device__ __forceinline__ void apply_nm_sparsity(float (&s)[T::kMTiles][T::kSTiles][4], int key0,
                                                  const int (&row_pos)[T::kMTiles][2], int dense_sinks,
                                                  int dense_recent, Ranked&& ranked = {}) {
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

  // The exact selection of groups i0 and i0 + 1. Each group's N-th largest: scores at or above it
  // are exactly the N kept unless the (N+1)-th equals it; one flag per pair of groups takes that
  // rare case in one branch.
  auto select_exact = [&](int i0) {
    float threshold[2];
    bool tie = false;
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      float sorted[kM];
#pragma unroll
      for (int q = 0; q < kM; ++q) sorted[q] = score(i0 + b, q);
      float next;
      nm_detail::nth_largest<kN, kM>(sorted, threshold[b], next);
      tie = tie || (next == threshold[b] && next != neg_inf());
    }
    if (!tie) {
#pragma unroll
      for (int b = 0; b < 2; ++b) {
        const unsigned exempt = exempt_bits(i0 + b);
#pragma unroll
        for (int q = 0; q < kM; ++q) keep_or_drop(i0 + b, q, score(i0 + b, q) >= threshold[b], exempt);
      }
    } else {
      // The lowest indices among the scores equal to the threshold fill the places the larger
      // scores leave (a group without a tie, or with a -inf threshold, comes out as above).
#pragma unroll
      for (int b = 0; b < 2; ++b) {
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
  };

  // Groups go in pairs, and a pair goes first through one network on f16x2, one group per half:
  // half the min/max instructions. Rounding to f16 keeps order (weakly), so the rounded N-th and
  // (N+1)-th largest are the exact ones rounded; where they differ in both groups, the N scores
  // that round to at least the N-th are exactly the N largest, with no tie to break. Otherwise
  // (values closer than f16 resolves, or beyond its range) the pair takes the exact selection.
  // With 255 registers (four warps of 32 rows) this pays for every M: on H200, 2:4 1.038 ->
  // 1.016 ms, 4:8 1.030 -> 1.027; at the 128-register cap of eight warps 2:4 spilled and ran 4%
  // slower, so then only 8:16 took it.
  static_assert(kGroups % 2 == 0, "groups go in pairs");
  constexpr int kPairs = kGroups / 2;
  // Rounded again after the network rather than held through it (registers).
  auto rounded = [&](int i0, int q) { return nm_detail::Half2{pack2<f16>(score(i0, q), score(i0 + 1, q))}; };
  // The pair's rounded N-th and (N+1)-th largest; `tie` set where they leave the threshold in doubt.
  auto rank_pair = [&](int i0, bool& tie) {
    nm_detail::Half2 sorted[kM];
#pragma unroll
    for (int q = 0; q < kM; ++q) sorted[q] = rounded(i0, q);
    nm_detail::Half2 nth, next;
    nm_detail::nth_largest<kN, kM>(sorted, nth, next);
    // Equal -inf values count as a tie too: f16 cannot tell masked scores from ones below its range.
    tie |= nm_detail::either_equal(next, nth);
    return nth;
  };
  // Without a tie: the scores that round below the N-th become -inf (exempt keys stay).
  auto drop_pair = [&](int i0, nm_detail::Half2 nth) {
    if constexpr (kExemptions) {
      const unsigned exempt0 = exempt_bits(i0), exempt1 = exempt_bits(i0 + 1);
#pragma unroll
      for (int q = 0; q < kM; ++q) {
        float keep0 = 0.f, keep1 = 0.f; // -inf where dropped
        nm_detail::drop_below(keep0, keep1, rounded(i0, q), nth);
        keep_or_drop(i0, q, keep0 == 0.f, exempt0);
        keep_or_drop(i0 + 1, q, keep1 == 0.f, exempt1);
      }
    } else {
#pragma unroll
      for (int q = 0; q < kM; ++q) nm_detail::drop_below(score(i0, q), score(i0 + 1, q), rounded(i0, q), nth);
    }
  };

  if constexpr (T::kNmRankAllPairsFirst) {
    // Two passes over the thread's pairs, one branch between them: all the networks, then all the
    // drops (or, on any tie, the exact selection of every pair). A branch per pair keeps ptxas from
    // interleaving the pairs' short dependent chains (2:4: three min/max levels), but this holds
    // every pair's threshold at once.
    nm_detail::Half2 nth[kPairs];
    bool tie = false;
#pragma unroll
    for (int pr = 0; pr < kPairs; ++pr) nth[pr] = rank_pair(2 * pr, tie);
    ranked();
    if (tie) {
#pragma unroll
      for (int pr = 0; pr < kPairs; ++pr) select_exact(2 * pr);
    } else {
#pragma unroll
      for (int pr = 0; pr < kPairs; ++pr) drop_pair(2 * pr, nth[pr]);
    }
  } else {
    ranked();
#pragma unroll
    for (int pr = 0; pr < kPairs; ++pr) {
      bool tie = false;
      const nm_detail::Half2 nth = rank_pair(2 * pr, tie);
      if (tie) select_exact(2 * pr);
      else drop_pair(2 * pr, nth);
    }
  }
}

} // namespace attnjit
