// Which work a CTA does: (head, sequence, query block, KV split) from the grid, and the query
// rows and KV tiles that work covers.
//
// Grid: x = head (q head for prefill, kv head for decode), y = sequence, z = query block and
// split. The hardware issues low z first, so z counts query blocks from the end of the sequence:
// under a causal mask those see the most keys, and starting them first balances the tail.
#pragma once
#include "params.cuh"
#include "common.cuh"

namespace attnjit {

struct BlockWork {
  int head;      // q head (prefill) or kv head (decode)
  int kv_head;
  int batch;
  int m_block;
  int split;
  int q_start;   // first token of the sequence in q / o
  int q_len;
  int kv_len;
  int rows;      // query rows of the sequence in this head's M space (q_len, or q_len * group)
  int row_first; // first row of this block
  int tile_begin, tile_end; // KV tiles [begin, end) of this CTA
  int unmasked_keys; // keys [0, unmasked_keys) are visible to every row of the block
};

template <class T> __device__ __forceinline__ BlockWork schedule_block(const AttentionParams& p) {
  BlockWork w;
  w.head = blockIdx.x;
  w.kv_head = T::kPackGqa ? blockIdx.x : blockIdx.x / p.group_size;
  w.batch = blockIdx.y;
  const int m_rev = blockIdx.z % p.num_m_blocks;
  w.m_block = p.num_m_blocks - 1 - m_rev;
  w.split = blockIdx.z / p.num_m_blocks;
  w.q_start = p.cu_seqlens_q[w.batch];
  w.q_len = p.cu_seqlens_q[w.batch + 1] - w.q_start;
  if constexpr (T::kPaged) {
    w.kv_len = p.seq_lens_k[w.batch];
  } else {
    w.kv_len = p.cu_seqlens_k[w.batch + 1] - p.cu_seqlens_k[w.batch];
  }
  const int group = T::kPackGqa ? p.group_size : 1;
  w.rows = w.q_len * group;
  w.row_first = w.m_block * T::kBlockM;
  const int row_last = min_(w.rows, w.row_first + T::kBlockM) - 1;
  // Bottom-right alignment: query token i sits at key position kv_len - q_len + i.
  const int pos_first = w.kv_len - w.q_len + w.row_first / group;
  const int pos_last = w.kv_len - w.q_len + row_last / group;
  const int key_end = T::kCausal ? min_(w.kv_len, pos_last + 1) : w.kv_len;
  w.unmasked_keys = T::kCausal ? max_(0, min_(w.kv_len, pos_first + 1)) : w.kv_len;
  const int tiles = ceil_div(max_(key_end, 0), T::kBlockN);
  if constexpr (T::kSplitKv) {
    const int per_split = ceil_div(tiles, p.num_splits);
    w.tile_begin = min_(tiles, w.split * per_split);
    w.tile_end = min_(tiles, w.tile_begin + per_split);
  } else {
    w.tile_begin = 0;
    w.tile_end = tiles;
  }
  return w;
}

// The (token, q head) of row r of a sequence's M space.
template <class T>
__device__ __forceinline__ void row_coords(const AttentionParams& p, const BlockWork& w, int r,
                                           int& token, int& head) {
  if constexpr (T::kPackGqa) {
    token = r / p.group_size;
    head = w.kv_head * p.group_size + r % p.group_size;
  } else {
    token = r;
    head = w.head;
  }
}

} // namespace attnjit
