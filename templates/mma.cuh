// Tensor-core primitives: ldmatrix and mma.sync m16n8k16 with fp32 accumulation (sm_80+).
//
// Fragment layouts (g = lane / 4, t = lane % 4):
//   A 16x16: a0 (row g, k 2t..2t+1), a1 (row g+8, k 2t..), a2 (row g, k 2t+8..), a3 (row g+8, k 2t+8..)
//   B 16x8:  b0 (k 2t..2t+1, col g), b1 (k 2t+8.., col g)
//   C 16x8:  c0,c1 (row g, col 2t, 2t+1), c2,c3 (row g+8, col 2t, 2t+1)
#pragma once
#include "common.cuh"

namespace attnjit {

// Four 8x8 matrices of 16-bit elements; lane i supplies the address of row i % 8 of matrix i / 8.
__device__ __forceinline__ void ldmatrix_x4(u32 (&r)[4], u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x2(u32 (&r)[2], u32 addr) { // lanes 0-15 supply the rows
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x2_trans(u32 (&r)[2], u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32 (&r)[4], u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// kCount (2 or 4) matrices, transposed when kTrans: the one name fragment loaders call.
template <int kCount, bool kTrans> __device__ __forceinline__ void ldmatrix(u32 (&r)[kCount], u32 addr) {
  static_assert(kCount == 2 || kCount == 4, "ldmatrix loads 2 or 4 matrices here");
  if constexpr (kCount == 4 && kTrans) ldmatrix_x4_trans(r, addr);
  else if constexpr (kCount == 4) ldmatrix_x4(r, addr);
  else if constexpr (kTrans) ldmatrix_x2_trans(r, addr);
  else ldmatrix_x2(r, addr);
}

template <class Elem> struct Mma;
#define ATTNJIT_DEFINE_MMA(ELEM)                                                                  \
  template <> struct Mma<ELEM> {                                                                  \
    __device__ __forceinline__ static void run(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) { \
      asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." #ELEM "." #ELEM ".f32 "              \
                   "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"                          \
                   : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                \
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));                \
    }                                                                                             \
  };
ATTNJIT_DEFINE_MMA(f16)
ATTNJIT_DEFINE_MMA(bf16)
#undef ATTNJIT_DEFINE_MMA

} // namespace attnjit
