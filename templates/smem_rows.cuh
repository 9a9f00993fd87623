// Row layout of a tile in shared memory: rows kPitchBytes apart, and with kSkewRows > 0 every run
// of kSkewRows rows shifted a further 32 bytes. The pitch (row bytes + 16) starts the 8 rows one
// ldmatrix phase reads in distinct 16-byte bank groups when those rows are consecutive; the skew
// does the same for rows gathered from four runs (the thread-contiguous key order, see
// KernelTraits::column_key), which a uniform pitch would map onto two bank groups.
#pragma once
#include "common.cuh"

namespace attnjit {

template <int kPitchBytes, int kSkewRows> struct SmemRows {
  static constexpr int kPitch = kPitchBytes;
  __device__ __forceinline__ static constexpr int offset(int row) {
    if constexpr (kSkewRows > 0) return row * kPitchBytes + (row / kSkewRows) * 32;
    else return row * kPitchBytes;
  }
  // Bytes of a tile of `rows` rows.
  __host__ __device__ static constexpr int bytes(int rows) { return rows * kPitchBytes + (kSkewRows > 0 ? (rows / kSkewRows) * 32 : 0); }
};

// Pitch of an fp8 row of d bytes: padded to an odd number of 16-byte units, so that 8 consecutive
// rows (one ldmatrix phase) start in distinct 16-byte bank groups, as the 16-bit pitch 2d + 16 does.
__host__ __device__ constexpr int fp8_row_pitch(int d) { return d + ((d / 16) % 2 == 0 ? 16 : 32); }

} // namespace attnjit
