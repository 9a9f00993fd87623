// Where key j of a sequence lives: through the block table (paged) or at a ragged offset
// (contiguous). Strides make NHD, HND and packed K|V the same code.
//
// Row addresses are one wide multiply-add each: strides are 32-bit byte counts (the runtime
// checks they fit), and only the page (or token) index is widened to 64 bits.
#pragma once
#include "common.cuh"

namespace attnjit {

template <bool kPaged, int kLogPageSize> struct KvAddressing {
  static constexpr bool kIsPaged = kPaged;
  const int* block_table_row; // paged: this sequence's row of the block table
  int last_page;              // paged: the page of the sequence's last key
  int token_base;             // contiguous: first token of this sequence
  int last_key;               // contiguous: the sequence's last key

  // Runs of kRun keys starting at a multiple of kRun lie in one page (or are consecutive tokens):
  // their rows are stride_token bytes apart.
  template <int kRun> static constexpr bool kRunShares = !kPaged || kRun <= (1 << kLogPageSize);

  // Paged: the physical block of key j's page (keys past the sequence: of its last page).
  __device__ __forceinline__ int block(int j) const { return __ldg(block_table_row + min_(j >> kLogPageSize, last_page)); }

  // Byte address of key j's row of the tensor whose head row starts at `head`; paged, `blk` is
  // block(j) when the caller has it, else negative. Keys past the sequence get an address inside
  // its last page (or row): readable, for zero-filling copies.
  __device__ __forceinline__ const char* row(const char* head, int j, int stride_block, int stride_token, int blk = -1) const {
    if constexpr (kPaged) {
      const int slot = j & ((1 << kLogPageSize) - 1);
      return head + slot * stride_token + static_cast<i64>(blk >= 0 ? blk : block(j)) * stride_block;
    } else {
      return head + static_cast<i64>(token_base + min_(j, last_key)) * stride_token;
    }
  }
};

} // namespace attnjit
