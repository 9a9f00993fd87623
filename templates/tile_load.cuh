// Cooperative tile loads into padded shared memory with cp.async, 16 bytes per copy.
#pragma once
#include "async_copy.cuh"

namespace attnjit {

// Copies kRows rows of kCols 16-bit elements into shared memory (pitch kPitch elements).
// row_src(r) returns the row's global address, or nullptr for a row to zero-fill; `any_valid`
// is a readable address handed to the zero-filling copies, which read nothing from it.
template <int kRows, int kCols, int kPitch, int kThreads, class RowSrc>
__device__ __forceinline__ void load_tile(u32 smem_base, const void* any_valid, RowSrc&& row_src) {
  constexpr int kChunks = kCols / 8; // 16-byte chunks per row
  constexpr int kTotal = kRows * kChunks;
  constexpr int kIters = (kTotal + kThreads - 1) / kThreads;
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int c = threadIdx.x + it * kThreads;
    if (kTotal % kThreads != 0 && c >= kTotal) break;
    const int row = c / kChunks, chunk = c % kChunks;
    const char* src = static_cast<const char*>(row_src(row));
    const u32 dst = smem_base + (row * kPitch + chunk * 8) * 2;
    cp_async_16(dst, src ? src + chunk * 16 : any_valid, src != nullptr);
  }
}

} // namespace attnjit
