// Cooperative tile loads into padded shared memory with cp.async, 16 bytes per copy.
#pragma once
#include "async_copy.cuh"

namespace attnjit {

// Copies kRows rows of kRowBytes bytes into shared memory rows kPitchBytes apart.
// row_src(r) returns the row's global address, or nullptr for a row to zero-fill; `any_valid`
// is a readable address handed to the zero-filling copies, which read nothing from it.
template <int kRows, int kRowBytes, int kPitchBytes, int kThreads, class RowSrc>
__device__ __forceinline__ void load_tile(u32 smem_base, const void* any_valid, RowSrc&& row_src) {
  constexpr int kChunks = kRowBytes / 16;
  constexpr int kTotal = kRows * kChunks;
  constexpr int kIters = (kTotal + kThreads - 1) / kThreads;
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int c = threadIdx.x + it * kThreads;
    if (kTotal % kThreads != 0 && c >= kTotal) break;
    const int row = c / kChunks, chunk = c % kChunks;
    const char* src = static_cast<const char*>(row_src(row));
    cp_async_16(smem_base + row * kPitchBytes + chunk * 16, src ? src + chunk * 16 : any_valid, src != nullptr);
  }
}

// Widens a tile of fp8 rows (pitch kSrcPitch bytes) into 16-bit Elem rows (pitch kDstPitch
// elements), sixteen values per step.
template <class Fp8, class Elem, int kRows, int kCols, int kSrcPitch, int kDstPitch, int kThreads>
__device__ __forceinline__ void widen_fp8_tile(const unsigned char* src, u16* dst) {
  constexpr int kChunks = kCols / 16;
  constexpr int kTotal = kRows * kChunks;
#pragma unroll 2
  for (int c = threadIdx.x; c < kTotal; c += kThreads) {
    const int row = c / kChunks, col = (c % kChunks) * 16;
    const u32x4 in = *reinterpret_cast<const u32x4*>(src + row * kSrcPitch + col);
    u32 out[8];
    Fp8Widen<Fp8, Elem>::run(in.x, out[0], out[1]);
    Fp8Widen<Fp8, Elem>::run(in.y, out[2], out[3]);
    Fp8Widen<Fp8, Elem>::run(in.z, out[4], out[5]);
    Fp8Widen<Fp8, Elem>::run(in.w, out[6], out[7]);
    u32x4* d = reinterpret_cast<u32x4*>(dst + row * kDstPitch + col);
    d[0] = u32x4{out[0], out[1], out[2], out[3]};
    d[1] = u32x4{out[4], out[5], out[6], out[7]};
  }
}

} // namespace attnjit
