// Hopper warpgroup tensor-core primitives (sm_90a): wgmma.mma_async m64n64k16 with fp32
// accumulation, its shared-memory matrix descriptors and the fences and waits around it.
//
// A warpgroup (four consecutive warps) multiplies a 64 x 16 A by a 16 x 64 B. B always comes from
// shared memory through a descriptor; A from shared memory too, or from registers. The fragments
// held in registers are those of mma.sync per warp (mma.cuh): warp w of the group owns rows
// 16w..16w+15 of A and of the accumulator, and the accumulator's n8 tile j is d[4j..4j+3] in the
// C layout of m16n8. So a tile's scores computed by wgmma go through the same masks, selection
// and softmax as those of mma.sync, and become P V's A operand the same way.
//
// The products run asynchronously: issue (wgmma_*), commit a group, and wait for all but the
// newest kPending groups. Between issue and wait the accumulator registers belong to the tensor
// cores; fence_accumulators keeps the compiler from touching them early.
#pragma once
#include "common.cuh"

namespace attnjit {

using u64 = unsigned long long;

// A shared-memory matrix in 128-byte swizzled atoms (8 rows of 128 bytes; 16-byte chunk c of row
// r at c ^ (r % 8); atoms 1024-byte aligned). `lead` and `stride` are the PTX ISA's leading and
// stride dimension byte offsets: for K-major operands (rows along M or N, 128 bytes of K each)
// stride is the distance between 8-row groups and lead is unused; for MN-major ones (rows along K,
// 64 elements of M or N each) lead is the distance between 64-element column blocks and stride the
// distance between 8-row groups.
__device__ __forceinline__ u64 gmma_descriptor(u32 smem_address, u32 lead, u32 stride) {
  constexpr u64 kSwizzle128B = 1;
  return static_cast<u64>((smem_address & 0x3ffff) >> 4) | static_cast<u64>((lead & 0x3ffff) >> 4) << 16 |
         static_cast<u64>((stride & 0x3ffff) >> 4) << 32 | kSwizzle128B << 62;
}

// Orders this thread's register writes before the warpgroup's next wgmma reads them.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int kPending> __device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kPending) : "memory");
}
// Shared memory written through the generic proxy (cp.async, st.shared) made visible to the
// async proxy that wgmma reads it through. Each writer fences before the barrier that publishes.
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// The compiler sees wgmma's accumulators as written at issue; this marks them written here (after
// a wait) or read here (before an issue), so no access moves across.
template <int kCount> __device__ __forceinline__ void fence_accumulators(float* d) {
#pragma unroll
  for (int i = 0; i < kCount; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define ATTNJIT_WGMMA_D32                                                                               \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
  "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define ATTNJIT_WGMMA_D32_OPERANDS(d)                                                                        \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
      "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),  \
      "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), \
      "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])

// d (64 x 64 per warpgroup, 32 per thread) = A B [+ d]: accumulate false overwrites d.
//   run_ss: A K-major in shared memory (descriptor a), B K-major (b): S = Q K^T.
//   run_rs: A in registers (mma.sync's A fragment), B MN-major (b, transposed on the way): O += P V.
template <class Elem> struct Wgmma;
#define ATTNJIT_DEFINE_WGMMA(ELEM)                                                                          \
  template <> struct Wgmma<ELEM> {                                                                          \
    __device__ __forceinline__ static void run_ss(float (&d)[32], u64 a, u64 b, bool accumulate) {          \
      asm volatile("{\n .reg .pred acc;\n setp.ne.b32 acc, %34, 0;\n"                                     \
                   " wgmma.mma_async.sync.aligned.m64n64k16.f32." #ELEM "." #ELEM " " ATTNJIT_WGMMA_D32      \
                   ", %32, %33, acc, 1, 1, 0, 0;\n}"                                                          \
                   : ATTNJIT_WGMMA_D32_OPERANDS(d)                                                          \
                   : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)));                                    \
    }                                                                                                       \
    __device__ __forceinline__ static void run_rs(float (&d)[32], const u32 (&a)[4], u64 b, bool accumulate) { \
      asm volatile("{\n .reg .pred acc;\n setp.ne.b32 acc, %37, 0;\n"                                     \
                   " wgmma.mma_async.sync.aligned.m64n64k16.f32." #ELEM "." #ELEM " " ATTNJIT_WGMMA_D32      \
                   ", {%32, %33, %34, %35}, %36, acc, 1, 1, 1;\n}"                                           \
                   : ATTNJIT_WGMMA_D32_OPERANDS(d)                                                          \
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(static_cast<int>(accumulate))); \
    }                                                                                                       \
  };
ATTNJIT_DEFINE_WGMMA(f16)
ATTNJIT_DEFINE_WGMMA(bf16)
#undef ATTNJIT_DEFINE_WGMMA
#undef ATTNJIT_WGMMA_D32_OPERANDS
#undef ATTNJIT_WGMMA_D32

} // namespace attnjit
