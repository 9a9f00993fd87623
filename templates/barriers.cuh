// Synchronization between the warp roles of a warp-specialized CTA (sm_90a): shared-memory
// mbarriers that count arrivals and flip a phase bit, named barriers for a subset of the CTA's
// warps, and the register reallocation between roles.
#pragma once
#include "common.cuh"

namespace attnjit {

// An mbarrier (8 bytes of shared memory) expecting `count` arrivals per phase.
__device__ __forceinline__ void mbarrier_init(u32 bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
// One arrival (release: this thread's earlier writes are visible to whoever waits for the phase).
__device__ __forceinline__ void mbarrier_arrive(u32 bar) {
  asm volatile("{\n .reg .b64 state;\n mbarrier.arrive.shared::cta.b64 state, [%0];\n}" ::"r"(bar) : "memory");
}
// Whether the phase of parity `phase` has completed (acquire if so); does not wait.
__device__ __forceinline__ bool mbarrier_test(u32 bar, u32 phase) {
  u32 done;
  asm volatile("{\n .reg .pred p;\n mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
               : "=r"(done)
               : "r"(bar), "r"(phase)
               : "memory");
  return done != 0;
}
// Waits until the phase of parity `phase` has completed (acquire).
__device__ __forceinline__ void mbarrier_wait(u32 bar, u32 phase) {
  u32 done;
  do {
    asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
                 : "=r"(done)
                 : "r"(bar), "r"(phase)
                 : "memory");
  } while (!done);
}

// Named barrier `id` (1-15; 0 is __syncthreads') over `threads` threads, a multiple of 32:
// sync waits for all of them, arrive counts this warp and goes on. The ids warp-specialized CTAs
// use: the computing warps' own barrier, and the turns of consumer warpgroup g at kFirstTurnBarrier + g.
inline constexpr int kComputingWarpsBarrier = 1, kFirstTurnBarrier = 2;
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// Per-thread register budget of the calling warpgroup, raised or lowered (a multiple of 8 in
// [24, 256]); the warpgroups of a CTA trade registers within the allocation of its launch.
template <int kRegisters> __device__ __forceinline__ void registers_increase() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kRegisters));
}
template <int kRegisters> __device__ __forceinline__ void registers_decrease() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kRegisters));
}

} // namespace attnjit
