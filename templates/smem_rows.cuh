// Row layouts of tiles in shared memory. The first two give the 8 rows that one ldmatrix phase
// reads at one 16-byte column distinct bank groups, which is what keeps ldmatrix free of bank
// conflicts; the third is the layout wgmma reads through descriptors:
//
//   SmemRows      rows kPitchBytes apart, the pitch padded past the row (row bytes + 16): works
//                 for every row length. With kSkewRows > 0 every run of kSkewRows rows is shifted
//                 a further 32 bytes, for rows gathered from four runs (the thread-contiguous key
//                 order, see KernelTraits::column_key), which a uniform pitch maps onto two groups.
//   SwizzledRows  rows of 128 or 256 bytes, unpadded; 16-byte chunk c of row r is stored at chunk
//                 c ^ (r % 8). With decode's two-chunk ldmatrix reads (tile_mma.cuh) it took fp8
//                 d128 decode from 0.137 ms (padded rows) to 0.129 on H200.
//   GmmaRows      rows cut into 128-byte column blocks, each block an array of 128-byte swizzled
//                 atoms (warpgroup tiles, sm_90a).
//
// All answer the same questions for the copies: where chunk c of row r is (offset + chunk * 16)
// and where a thread that copies one chunk of a run of rows puts row i of its run (run_address);
// the first two also how an ldmatrix lane address moves to a chunk further along its row (step).
#pragma once
#include "common.cuh"

namespace attnjit {

template <int kPitchBytes, int kSkewRows> struct SmemRows {
  static constexpr int kPitch = kPitchBytes;
  static constexpr bool kSwizzled = false;
  template <int kRun> static constexpr bool kRunFits = true; // run_address takes any run
  __device__ __forceinline__ static constexpr int offset(int row) {
    if constexpr (kSkewRows > 0) return row * kPitchBytes + (row / kSkewRows) * 32;
    else return row * kPitchBytes;
  }
  __device__ __forceinline__ static constexpr int chunk(int, int c) { return c; }
  __device__ __forceinline__ static u32 run_address(u32 base, int row0, int c, int i) {
    return base + offset(row0 + i) + c * 16;
  }
  __device__ __forceinline__ static u32 step(u32 lane_addr, int chunks) { return lane_addr + chunks * 16; }
  // Bytes of a tile of `rows` rows.
  __host__ __device__ static constexpr int bytes(int rows) { return rows * kPitchBytes + (kSkewRows > 0 ? (rows / kSkewRows) * 32 : 0); }
};

// The tile's base must be aligned to kRowBytes: chunk indices are then address bits that XOR
// moves without carries.
template <int kRowBytes> struct SwizzledRows {
  static_assert(kRowBytes == 128 || kRowBytes == 256, "chunk indices fit the address bits below one row");
  static constexpr int kPitch = kRowBytes;
  static constexpr bool kSwizzled = true;
  template <int kRun> static constexpr bool kRunFits = (kRun & (kRun - 1)) == 0; // see run_address
  __device__ __forceinline__ static constexpr int offset(int row) { return row * kRowBytes; }
  __device__ __forceinline__ static constexpr int chunk(int row, int c) { return c ^ (row & 7); }
  // Row row0 + i of a run that starts at a multiple of its power-of-two length: (row0 + i) % 8 is
  // row0 % 8 ^ i % 8, so every row costs one XOR with a constant.
  __device__ __forceinline__ static u32 run_address(u32 base, int row0, int c, int i) {
    return ((base + offset(row0) + chunk(row0, c) * 16) ^ ((i & 7) * 16)) + i * kRowBytes;
  }
  // From a lane's address of chunk c0 to chunk c0 + chunks, where c0 + chunks == c0 ^ chunks
  // (callers step by multiples of the chunks one ldmatrix covers).
  __device__ __forceinline__ static u32 step(u32 lane_addr, int chunks) { return lane_addr ^ (chunks * 16); }
  __host__ __device__ static constexpr int bytes(int rows) { return rows * kRowBytes; }
};

// The 128-byte swizzled atoms wgmma reads (wgmma.cuh; sm_90a tiles). A row of kRowBytes (a
// multiple of 128) is cut into 128-byte column blocks; block b of all kRows rows is contiguous, rows
// 128 bytes apart, so every 8 rows form one 1024-byte atom, and chunk c of row r within its block
// is stored at c ^ (r % 8). With kThreadKeys > 0 the rows are keys in the thread-contiguous order
// (KernelTraits::column_key): key j is stored at the row that column of S reads, so that K (for
// Q K^T) and V (for P V) meet the permuted columns without any change to the products.
template <int kRowBytes, int kRows, int kThreadKeys> struct GmmaRows {
  static_assert(kRowBytes % 128 == 0 && kRows % 8 == 0, "whole atoms");
  static constexpr bool kSwizzled = true;
  static constexpr int kBlockBytes = kRows * 128; // one 128-byte column block of all rows
  template <int kRun>
  static constexpr bool kRunFits = (kRun & (kRun - 1)) == 0 && (kThreadKeys == 0 || (kRun % 2 == 0 && kRun <= kThreadKeys));
  // The stored row of key j: the inverse of column_key (column 8 nt + 2 (j / kThreadKeys) + j % 2).
  __device__ __forceinline__ static constexpr int slot(int j) {
    if constexpr (kThreadKeys > 0) return 8 * (j % kThreadKeys / 2) + 2 * (j / kThreadKeys) + j % 2;
    else return j;
  }
  __device__ __forceinline__ static constexpr int offset(int row) { return slot(row) * 128; }
  __device__ __forceinline__ static constexpr int chunk(int row, int c) {
    return (c / 8) * (kBlockBytes / 16) + (c % 8 ^ slot(row) % 8);
  }
  // Row row0 + i of a run that starts at a multiple of its length (a power of two, even, and at
  // most kThreadKeys where keys are permuted): slot(row0 + i) is then slot(row0) + slot(i), with
  // disjoint bits below 8, so every row is one XOR and a constant offset from the run's first
  // address. Written out per row, it cost the N:M tiles about three integer instructions per copy
  // (67 per tile for 2:4) and 2.6-3.2% of their time on H100.
  __device__ __forceinline__ static u32 run_address(u32 base, int row0, int c, int i) {
    return ((base + offset(row0) + chunk(row0, c) * 16) ^ (slot(i) % 8 * 16)) + slot(i) * 128;
  }
  __host__ __device__ static constexpr int bytes(int rows) { return rows * kRowBytes; }
};

// Pitch of a padded fp8 row of d bytes: an odd number of 16-byte units, so that 8 consecutive
// rows (one ldmatrix phase) start in distinct 16-byte bank groups, as the 16-bit pitch 2d + 16 does.
__host__ __device__ constexpr int fp8_row_pitch(int d) { return d + ((d / 16) % 2 == 0 ? 16 : 32); }

// Which fp8 rows are swizzled: decode's rows of 128 or 256 bytes, unless skewed (the N:M key
// order reads rows whose index mod 8 repeats). Prefill keeps the padding: the swizzle's address
// XORs cost fp8 d128 prefill 76 bytes of spills under the 128-register cap of its tile then, and
// its present tile has not been measured with swizzled rows.
__host__ __device__ constexpr bool fp8_rows_swizzled(bool decode, int d, int skew_rows) {
  return decode && (d == 128 || d == 256) && skew_rows == 0;
}

} // namespace attnjit
