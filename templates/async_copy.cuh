// cp.async: 16-byte global-to-shared copies that bypass registers, grouped for pipelining.
#pragma once
#include "common.cuh"

namespace attnjit {

// Copies 16 bytes, or writes 16 zero bytes when `valid` is false (src-size 0: nothing is read).
// L2::128B: the L2 fetches the whole 128-byte line at once (the neighbouring copies of a row take
// the rest); measured 2% faster decode for bf16 and fp8 KV on H200, prefill unchanged.
__device__ __forceinline__ void cp_async_16(u32 smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;" ::"r"(smem), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int kPending> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending));
}

} // namespace attnjit
