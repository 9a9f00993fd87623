// The two tensor-core products of one KV tile, per warp:
//   qk_scores:     S (kBlockM/kWarpsM rows x kWarpKeys keys) = Q K^T over head_dim_qk
//   pv_accumulate: O += P V, reusing S's accumulator registers as P's A fragments
#pragma once
#include "mma.cuh"

namespace attnjit {

// Q's A fragments for every k16 step of one m16 tile (kQInRegisters).
template <class T> using QFragments = u32[T::kQInRegisters ? T::kQKSteps : 1][4];

template <class T> __device__ __forceinline__ void load_q_fragments(QFragments<T>& q, u32 q_lane) {
#pragma unroll
  for (int kk = 0; kk < T::kQKSteps; ++kk) ldmatrix_x4(q[kk], q_lane + kk * 16 * 2);
}

// q_lane / k_lane: this lane's ldmatrix row addresses in the Q and K tiles (see mma.cuh); q_regs
// holds Q's fragments when kQInRegisters. Successive n8 tiles of keys are kNTileKeyStep rows apart
// (KernelTraits::column_key), within one skew run of the K and V layouts.
template <class T>
__device__ __forceinline__ void qk_scores(float (&s)[T::kMTiles][T::kSTiles][4], u32 q_lane, u32 k_lane,
                                          const QFragments<T>& q_regs) {
  using Elem = typename T::Elem;
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int nt = 0; nt < T::kSTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[mi][nt][e] = 0.f;
#pragma unroll
  for (int kk = 0; kk < T::kQKSteps; ++kk) {
    u32 a[T::kMTiles][4];
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi) {
      if constexpr (T::kQInRegisters) {
#pragma unroll
        for (int r = 0; r < 4; ++r) a[mi][r] = q_regs[kk][r];
      } else {
        ldmatrix_x4(a[mi], q_lane + (mi * 16 * T::kQPitch + kk * 16) * 2);
      }
    }
#pragma unroll
    for (int np = 0; np < T::kSTiles / 2; ++np) {
      u32 b[4];
      ldmatrix_x4(b, k_lane + (np * 2 * T::kNTileKeyStep * T::kKPitch + kk * 16) * 2);
#pragma unroll
      for (int mi = 0; mi < T::kMTiles; ++mi) {
        Mma<Elem>::run(s[mi][2 * np], a[mi], b[0], b[1]);
        Mma<Elem>::run(s[mi][2 * np + 1], a[mi], b[2], b[3]);
      }
    }
  }
}

// The C fragments of two adjacent n8 tiles of S form the A fragment of one k16 step of P V.
template <class T>
__device__ __forceinline__ void pv_accumulate(float (&o)[T::kMTiles][T::kOTiles][4],
                                              const float (&p)[T::kMTiles][T::kSTiles][4], u32 v_lane) {
  using Elem = typename T::Elem;
#pragma unroll
  for (int ks = 0; ks < T::kPVSteps; ++ks) {
    u32 a[T::kMTiles][4];
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi) {
      a[mi][0] = pack2<Elem>(p[mi][2 * ks][0], p[mi][2 * ks][1]);
      a[mi][1] = pack2<Elem>(p[mi][2 * ks][2], p[mi][2 * ks][3]);
      a[mi][2] = pack2<Elem>(p[mi][2 * ks + 1][0], p[mi][2 * ks + 1][1]);
      a[mi][3] = pack2<Elem>(p[mi][2 * ks + 1][2], p[mi][2 * ks + 1][3]);
    }
#pragma unroll
    for (int dp = 0; dp < T::kOTiles / 2; ++dp) {
      u32 b[4];
      ldmatrix_x4_trans(b, v_lane + (ks * 2 * T::kNTileKeyStep * T::kVPitch + dp * 16) * 2);
#pragma unroll
      for (int mi = 0; mi < T::kMTiles; ++mi) {
        Mma<Elem>::run(o[mi][2 * dp], a[mi], b[0], b[1]);
        Mma<Elem>::run(o[mi][2 * dp + 1], a[mi], b[2], b[3]);
      }
    }
  }
}

} // namespace attnjit
