// Cooperative tile loads into padded shared memory with cp.async, 16 bytes per copy.
#pragma once
#include "async_copy.cuh"
#include "smem_rows.cuh"

namespace attnjit {

// The threads that copy a tile: kThreads of them, from thread kFirst on. kIdleInRuns: a K/V tile
// whose rows' 16-byte chunks do not divide kThreads may still go in runs (load_kv_tile), with the
// threads past the last whole run idle; otherwise its rows are addressed one by one.
template <int kThreads_, int kFirst_, bool kIdleInRuns_> struct CopyTeam {
  static constexpr int kThreads = kThreads_, kFirst = kFirst_;
  static constexpr bool kIdleInRuns = kIdleInRuns_;
};

// One row's source: a readable address, and whether to copy it (false: the row is zero-filled and
// nothing is read).
struct RowSource {
  const char* ptr;
  bool valid;
};

// Copies kRows rows of kRowBytes bytes into shared memory laid out as Rows (smem_rows.cuh);
// row_src(r) returns row r's RowSource. Team: the copying threads (CopyTeam).
template <int kRows, int kRowBytes, class Rows, class Team, class RowSrc>
__device__ __forceinline__ void load_tile(u32 smem_base, RowSrc&& row_src) {
  constexpr int kThreads = Team::kThreads;
  constexpr int kChunks = kRowBytes / 16;
  constexpr int kTotal = kRows * kChunks;
  constexpr int kIters = (kTotal + kThreads - 1) / kThreads;
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int c = static_cast<int>(threadIdx.x) - Team::kFirst + it * kThreads;
    if (kTotal % kThreads != 0 && c >= kTotal) break;
    const int row = c / kChunks, chunk = c % kChunks;
    const RowSource src = row_src(row);
    // Padded rows keep the plain expression: routed through Rows::chunk, the same value changed
    // register allocation (sm_80 decode kernels at 255 registers spilled 16-48 bytes more).
    u32 dst = smem_base + Rows::offset(row) + chunk * 16;
    if constexpr (Rows::kSwizzled) dst = smem_base + Rows::offset(row) + Rows::chunk(row, chunk) * 16;
    cp_async_16(dst, src.ptr + chunk * 16, src.valid);
  }
}

// How load_kv_tile splits a tile of kRows rows of kRowBytes among a team's threads (tid counts
// from its first): when kRun > 0, thread tid < kActiveThreads copies the 16-byte column
// tid % kChunks of the kRun rows starting at row (tid / kChunks) * kRun.
template <int kRows, int kRowBytes, class Team> struct KvTileRuns {
  static constexpr int kChunks = kRowBytes / 16;
  // Runs: one per kChunks threads, as many as divide the rows; with idle threads allowed, the most
  // that fit (K rows of 384 bytes among 128 threads: 4 runs of 16 rows, 32 threads idle).
  static constexpr int kGroups = Team::kThreads % kChunks == 0 ? Team::kThreads / kChunks
                                 : Team::kIdleInRuns       ? largest_power_of_two_at_most(Team::kThreads / kChunks)
                                                           : 0;
  static constexpr int kActiveThreads = kGroups * kChunks;
  static constexpr int kRun = kGroups > 0 && kRows % kGroups == 0 ? kRows / kGroups : 0;
  // Runs of rows that share a page (or are consecutive tokens), of a length Rows::run_address takes.
  template <class KvAddr, class Rows>
  static constexpr bool kRunWise = kRun > 0 && KvAddr::template kRunShares<kRun> && Rows::template kRunFits<kRun>;
  // The thread index is re-read per tile (volatile): the few integer ops that derive this thread's
  // rows would otherwise be hoisted out of the mainloop and held in registers, which a
  // register-capped kernel pays for in spills.
  __device__ __forceinline__ static int first_row() {
    u32 tid;
    asm volatile("mov.u32 %0, %%tid.x;" : "=r"(tid));
    return static_cast<int>((tid - Team::kFirst) / kChunks) * kRun;
  }
  __device__ __forceinline__ static int chunk() {
    u32 tid;
    asm volatile("mov.u32 %0, %%tid.x;" : "=r"(tid));
    return static_cast<int>((tid - Team::kFirst) % kChunks);
  }
  // Threads past the last run (their kv_run_block reads stay in the table: KvAddressing clamps).
  __device__ __forceinline__ static bool idle() {
    if constexpr (kActiveThreads == Team::kThreads) return false;
    return threadIdx.x - Team::kFirst >= static_cast<unsigned>(kActiveThreads);
  }
};

// Copies the K or V rows of keys [key0, key0 + kRows) of one head (row `head` of key 0) through
// `kv` (a KvAddressing), zero-filling keys from kv_len on (source size 0: their addresses, clamped
// to the last page or key and stepped from there, are never read). When the tile splits into runs of rows
// that share a page, each thread copies one 16-byte column of one run: one block-table read and
// one wide multiply-add per run instead of per row; `run_block` is that read when the caller made
// it ahead (negative: read here). Otherwise each row is addressed on its own.
template <int kRows, int kRowBytes, class Rows, class Team, class KvAddr>
__device__ __forceinline__ void load_kv_tile(u32 smem_base, const KvAddr& kv, const char* head, int key0, int kv_len,
                                             int stride_block, int stride_token, int run_block = -1) {
  using Runs = KvTileRuns<kRows, kRowBytes, Team>;
  constexpr int kRun = Runs::kRun;
  if constexpr (Runs::template kRunWise<KvAddr, Rows>) {
    if (Runs::idle()) return;
    const int row0 = Runs::first_row(), chunk = Runs::chunk();
    const int j0 = key0 + row0;
    const char* src = kv.row(head, j0, stride_block, stride_token, run_block) + chunk * 16;
    const int rows_left = kv_len - j0; // compared with the constant i below: no per-row bounds held across tiles
#pragma unroll
    for (int i = 0; i < kRun; ++i) {
      cp_async_16(Rows::run_address(smem_base, row0, chunk, i), src, i < rows_left);
      src += static_cast<unsigned>(stride_token); // stepping, not i * stride: no 64-bit multiples held across tiles
    }
  } else {
    load_tile<kRows, kRowBytes, Rows, Team>(smem_base, [&](int r) {
      const int j = key0 + r;
      return j < kv_len ? RowSource{kv.row(head, j, stride_block, stride_token), true} : RowSource{head, false};
    });
  }
}

// load_kv_tile for fp8 rows stored widened to f16 (Widen) into 16-bit rows of Rows (the stages of
// warpgroup products): each thread reads its 16-byte chunks of fp8 into registers, all of them
// before any is widened, and stores each as two 16-byte chunks; keys past the sequence become
// zeros. Synchronous: the stage is written when it returns.
template <int kRows, int kFp8RowBytes, class Rows, class Team, class Widen, class KvAddr>
__device__ __forceinline__ void load_kv_tile_widened(u32 smem_base, const KvAddr& kv, const char* head, int key0,
                                                     int kv_len, int stride_block, int stride_token, int run_block = -1) {
  using Runs = KvTileRuns<kRows, kFp8RowBytes, Team>;
  constexpr int kChunks = kFp8RowBytes / 16;
  auto store_widened = [&](u32 dst_lo, u32 dst_hi, uint4 raw) {
    u32 h[8];
    Widen::run(raw.x, h[0], h[1]);
    Widen::run(raw.y, h[2], h[3]);
    Widen::run(raw.z, h[4], h[5]);
    Widen::run(raw.w, h[6], h[7]);
    asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(dst_lo), "r"(h[0]), "r"(h[1]), "r"(h[2]), "r"(h[3]));
    asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(dst_hi), "r"(h[4]), "r"(h[5]), "r"(h[6]), "r"(h[7]));
  };
  if constexpr (Runs::template kRunWise<KvAddr, Rows>) {
    if (Runs::idle()) return;
    constexpr int kRun = Runs::kRun;
    const int row0 = Runs::first_row(), chunk = Runs::chunk();
    const int j0 = key0 + row0;
    const char* src = kv.row(head, j0, stride_block, stride_token, run_block) + chunk * 16;
    const int rows_left = kv_len - j0;
    uint4 raw[kRun];
#pragma unroll
    for (int i = 0; i < kRun; ++i) {
      raw[i] = i < rows_left ? __ldg(reinterpret_cast<const uint4*>(src)) : make_uint4(0, 0, 0, 0);
      src += static_cast<unsigned>(stride_token);
    }
#pragma unroll
    for (int i = 0; i < kRun; ++i)
      store_widened(Rows::run_address(smem_base, row0, 2 * chunk, i), Rows::run_address(smem_base, row0, 2 * chunk + 1, i),
                    raw[i]);
  } else {
    constexpr int kTotal = kRows * kChunks;
    constexpr int kIters = (kTotal + Team::kThreads - 1) / Team::kThreads;
    uint4 raw[kIters];
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int c = static_cast<int>(threadIdx.x) - Team::kFirst + it * Team::kThreads;
      const int j = key0 + c / kChunks;
      raw[it] = (kTotal % Team::kThreads == 0 || c < kTotal) && j < kv_len
                    ? __ldg(reinterpret_cast<const uint4*>(kv.row(head, j, stride_block, stride_token) + c % kChunks * 16))
                    : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int c = static_cast<int>(threadIdx.x) - Team::kFirst + it * Team::kThreads;
      if (kTotal % Team::kThreads != 0 && c >= kTotal) break;
      const int row = c / kChunks, chunk = c % kChunks;
      store_widened(smem_base + Rows::offset(row) + Rows::chunk(row, 2 * chunk) * 16,
                    smem_base + Rows::offset(row) + Rows::chunk(row, 2 * chunk + 1) * 16, raw[it]);
    }
  }
}

// The block-table entry of this thread's run in the tile of keys from key0 (run-wise paged
// copies; else -1), for load_kv_tile's run_block.
template <int kRows, int kRowBytes, class Rows, class Team, class KvAddr>
__device__ __forceinline__ int kv_run_block(const KvAddr& kv, int key0) {
  using Runs = KvTileRuns<kRows, kRowBytes, Team>;
  if constexpr (KvAddr::kIsPaged && Runs::template kRunWise<KvAddr, Rows>) return kv.block(key0 + Runs::first_row());
  else return -1;
}

} // namespace attnjit
