// Where key j of a sequence lives: through the block table (paged) or at a ragged offset
// (contiguous). Strides make NHD, HND and packed K|V the same code.
#pragma once
#include "common.cuh"

namespace attnjit {

template <bool kPaged, int kLogPageSize> struct KvAddressing {
  const int* block_table_row; // paged: this sequence's row of the block table
  i64 token_base;             // contiguous: first token of this sequence

  // Element offset of key j's head-0 row, for a tensor with the given block and token strides.
  __device__ __forceinline__ i64 offset(int j, i64 stride_block, i64 stride_token) const {
    if constexpr (kPaged) {
      const int block = __ldg(block_table_row + (j >> kLogPageSize));
      const int slot = j & ((1 << kLogPageSize) - 1);
      return static_cast<i64>(block) * stride_block + static_cast<i64>(slot) * stride_token;
    } else {
      return (token_base + j) * stride_token;
    }
  }
};

} // namespace attnjit
