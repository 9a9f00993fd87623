// AttentionParams: the runtime arguments of every attention kernel, passed by value.
// Plain data shared by the host runtime and the device code; keep it free of device-only types.
#pragma once

namespace attnjit {

struct AttentionParams {
  const void* q;
  long long q_stride_token, q_stride_head;
  const void* k;
  const void* v;
  // K and V strides in bytes: heads 64-bit; pages and tokens 32-bit, so that a row address is one
  // wide multiply-add with the stride read straight from the parameter bank.
  long long k_head_bytes, v_head_bytes;
  int k_block_bytes, k_token_bytes;
  int v_block_bytes, v_token_bytes;
  const int* block_table;
  int block_table_stride;
  const int* cu_seqlens_q;
  const int* seq_lens_k;   // paged storage
  const int* cu_seqlens_k; // contiguous storage
  void* o;
  long long o_stride_token, o_stride_head;
  float* lse;              // optional [num_q_heads, total_q]
  long long total_q;
  int num_q_heads;
  int group_size;          // num_q_heads / num_kv_heads
  int num_m_blocks;        // query blocks per (sequence, head) in the grid
  int num_splits;          // split-KV partitions (1: write o directly)
  float scale_log2;        // softmax scale * log2(e)
  float softcap_pre;       // soft cap: scale / cap
  float softcap_post;      // soft cap: cap / scale
  int window_size;         // sliding window W
  int sink_tokens;         // StreamingLLM sink tokens S
  const float* sinks;      // learned sinks: [num_q_heads]
  const float* k_scale;    // fp8 KV: [1] or [num_kv_heads]
  const float* v_scale;
  int nm_dense_sink_tokens;
  int nm_dense_recent_tokens;
  float skip_log2_threshold; // skip-softmax: log2(lambda)
  unsigned long long* skip_stats;
  const int* kv_num_blocks;  // block sparse
  const int* kv_indices;
  int mask_batch, mask_q_blocks, mask_max_kv_blocks;
  float* partial_o;        // [num_splits, total_q, num_q_heads, head_dim_v] when num_splits > 1
  float* partial_lse;      // [num_splits, total_q, num_q_heads]
};

// The block-mask builder's arguments (block_mask.cuh).
struct BlockMaskParams {
  const void* q;
  long long q_stride_token, q_stride_head;
  const void* k; // contiguous [total_kv, heads, D] through strides
  long long k_stride_token, k_stride_head;
  const int* cu_seqlens_q;
  const int* cu_seqlens_k;
  int head_dim, num_q_heads, group_size;
  int block_q, block_kv;
  float topk;
  int force_first_block, causal;
  int* kv_num_blocks; // [batch, num_q_heads, mask_q_blocks]
  int* kv_indices;    // [batch, num_q_heads, mask_q_blocks, mask_max_kv_blocks]
  int mask_q_blocks, mask_max_kv_blocks;
};

} // namespace attnjit
