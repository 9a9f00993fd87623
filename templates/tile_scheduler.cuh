// Which work a CTA does: (head, sequence, query block, KV split) from the grid, and the query
// rows and KV tiles that work covers.
//
// Grid: x = head (q head for prefill, kv head for decode), y = sequence, z = query block and
// split. The hardware issues low z first, so z counts query blocks from the end of the sequence:
// under a causal mask those see the most keys, and starting them first balances the tail. Where
// query blocks cost about the same (KernelTraits::kQueryBlocksTogether) the same grid is read in
// another order instead: the query blocks of one (sequence, head) one after another, so the
// CTAs that read its K and V run together and find them in L2.
//
// The KV tiles a block visits form a list: all tiles up to the last visible key; under a sliding
// window, the tiles holding sink tokens followed by the tiles of the window; under a block mask,
// the tiles of the listed KV blocks. Split-KV partitions the list, not the key range.
#pragma once
#include "params.cuh"
#include "common.cuh"

namespace attnjit {

struct KvTileList {
  int count;
  int first_end;    // list entries [0, first_end) are tiles 0.. (sink tiles, or all tiles)
  int second_begin; // entries from first_end on are tiles second_begin, second_begin + 1, ...
  const int* blocks;   // block sparse: the listed KV blocks of this query block
  int tiles_per_block; // block sparse: KV tiles per KV block

  template <class T> __device__ __forceinline__ int tile(int i) const {
    if constexpr (T::kBlockSparse) return __ldg(blocks + i / tiles_per_block) * tiles_per_block + i % tiles_per_block;
    else if constexpr (T::kSlidingWindow) return i < first_end ? i : second_begin + (i - first_end);
    else return i; // dense: the list is every tile in order (no registers held for the rest)
  }
};

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
  KvTileList tiles;
  int list_begin, list_end; // entries of the tile list this CTA visits
  // Keys [unmasked_begin, unmasked_end) are visible to every row of the block: tiles inside need
  // no element-wise mask.
  int unmasked_begin, unmasked_end;
};

template <class T> __device__ __forceinline__ BlockWork schedule_block(const AttentionParams& p) {
  BlockWork w;
  if constexpr (T::kQueryBlocksTogether) {
    // In launch order (x fastest), the query blocks of one (batch, head), then the next.
    const int linear = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int m_rev = linear % p.num_m_blocks;
    w.head = linear / p.num_m_blocks % gridDim.x;
    w.kv_head = w.head / p.group_size;
    w.batch = linear / p.num_m_blocks / gridDim.x;
    w.m_block = p.num_m_blocks - 1 - m_rev;
    w.split = 0;
  } else {
    w.head = blockIdx.x;
    w.kv_head = T::kPackGqa ? blockIdx.x : blockIdx.x / p.group_size;
    w.batch = blockIdx.y;
    const int m_rev = blockIdx.z % p.num_m_blocks;
    w.m_block = p.num_m_blocks - 1 - m_rev;
    w.split = blockIdx.z / p.num_m_blocks;
  }
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
  const int tiles = ceil_div(max_(key_end, 0), T::kBlockN);
  // One unmasked range for every tile list: keys past the sequence or the causal diagonal, and
  // keys older than the newest row's window, need the mask. (Block-sparse lists once masked every
  // tile: 2% at 30% density on H100.)
  w.unmasked_end = T::kCausal ? max_(0, min_(w.kv_len, pos_first + 1)) : w.kv_len;
  w.unmasked_begin = T::kSlidingWindow ? max_(0, pos_last - p.window_size + 1) : 0;
  w.tiles.blocks = nullptr;
  w.tiles.tiles_per_block = 1;
  if constexpr (T::kBlockSparse) {
    const int mask_b = p.mask_batch == 1 ? 0 : w.batch;
    const int q_block = w.row_first / T::kSparseBlockQ;
    const long long row = (static_cast<long long>(mask_b) * p.num_q_heads + w.head) * p.mask_q_blocks + q_block;
    w.tiles.tiles_per_block = T::kSparseBlockKV / T::kBlockN;
    w.tiles.count = q_block < p.mask_q_blocks && w.kv_len > 0 ? p.kv_num_blocks[row] * w.tiles.tiles_per_block : 0;
    w.tiles.blocks = p.kv_indices + row * p.mask_max_kv_blocks;
    w.tiles.first_end = w.tiles.count;
    w.tiles.second_begin = 0;
  } else if constexpr (T::kSlidingWindow) {
    // Keys older than the window of the block's first row are visible only as sink tokens.
    const int window_begin = max_(0, pos_first - p.window_size + 1);
    const int sink_end = min_(p.sink_tokens, key_end);
    w.tiles.second_begin = min_(window_begin / T::kBlockN, tiles);
    w.tiles.first_end = min_(ceil_div(max_(sink_end, 0), T::kBlockN), w.tiles.second_begin);
    w.tiles.count = w.tiles.first_end + (tiles - w.tiles.second_begin);
  } else {
    w.tiles.count = tiles;
    w.tiles.first_end = tiles;
    w.tiles.second_begin = 0;
  }
  if constexpr (T::kSplitKv) {
    const int per_split = ceil_div(w.tiles.count, p.num_splits);
    w.list_begin = min_(w.tiles.count, w.split * per_split);
    w.list_end = min_(w.tiles.count, w.list_begin + per_split);
  } else {
    w.list_begin = 0;
    w.list_end = w.tiles.count;
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
