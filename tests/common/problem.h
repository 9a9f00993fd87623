// Random attention problems laid out exactly as an engine would hand them to attnjit: q, paged
// or contiguous K/V in one of three layouts (expressed only through strides), block tables,
// sequence-length arrays, and output buffers with guards.
//
// The logical data (q, K and V values per sequence, token, head and channel) depends only on the
// seed and on the shapes, never on the layout, the storage or the page size: two problems made
// with the same seed and shapes but different layouts hold the same logical tensors.
//
// Every element of a storage buffer that does not hold a logical value (blocks no sequence uses,
// slots past kv_len in a sequence's last page, padding columns of the block table, padding
// between q tokens, contiguous tail tokens) holds large random "garbage" values, so a kernel that
// reads one gets a visibly wrong answer rather than a quietly right one. Block-table padding
// entries point at an unused (garbage) block that is in range, so a stray read shows up as a
// wrong value, not as a fault.
#pragma once

#include "numeric.h"

#include <attnjit/attnjit.h>

#include <cstdint>
#include <string>
#include <vector>

namespace attnjit::testing {

// How K and V sit in memory. Paged:
//   nhd:    [num_blocks, page_size, heads, D]
//   hnd:    [num_blocks, heads, page_size, D]
//   packed: one tensor [num_blocks, page_size, heads, Dqk + Dv]; K is the view at channel
//           offset 0, V the view at channel offset Dqk (vLLM's diff-KV cache).
// Contiguous (token = cu_seqlens_k[b] + j):
//   nhd:    [total_kv, heads, D]
//   hnd:    [heads, total_kv, D]
//   packed: [total_kv, heads, Dqk + Dv]
enum class KvLayout { nhd, hnd, packed };
const char* layout_name(KvLayout l);

struct SeqShape {
  int32_t q_len;  // 0 <= q_len <= kv_len
  int32_t kv_len; // >= 1: every query row then sees at least one key (causal: keys 0..pos(i))
};

struct ProblemSpec {
  attnjit_dtype q_dtype = ATTNJIT_DTYPE_BF16; // also the output dtype
  attnjit_dtype kv_dtype = ATTNJIT_DTYPE_BF16;
  int32_t head_dim_qk = 128;
  int32_t head_dim_v = 128;
  int32_t num_q_heads = 8;
  int32_t num_kv_heads = 8;
  attnjit_kv_storage storage = ATTNJIT_KV_PAGED;
  int32_t page_size = 16; // paged only
  KvLayout layout = KvLayout::nhd;
  bool causal = false;
  float scale = 0.0f; // 0 = 1/sqrt(head_dim_qk)
  std::vector<SeqShape> seqs;

  // Robustness knobs.
  int32_t extra_blocks = 3;        // paged: physical blocks no sequence uses (garbage), >= 1
  int32_t extra_tokens = 5;        // contiguous: garbage tokens after the last sequence
  int32_t block_table_padding = 3; // block-table columns beyond what the longest sequence needs
  int32_t q_token_padding = 0;     // extra elements per q token (q as a view into a wider tensor)
  int32_t o_token_padding = 0;     // extra elements per o token (must stay untouched)
  double value_stddev = 1.0;       // stddev of q, K and V
  double garbage_magnitude = 16.0; // garbage values have |x| in [magnitude/2, magnitude]
};

// Throws std::invalid_argument when the spec breaks the rules above (q_len > kv_len, ...).
void check_spec(const ProblemSpec& spec);

// The effective softmax scale: spec.scale, or 1/sqrt(head_dim_qk) when it is 0.
double effective_scale(const ProblemSpec& spec);

struct HostProblem {
  ProblemSpec spec;
  uint64_t seed = 0;

  int32_t batch = 0;
  int64_t total_q = 0;
  int64_t total_kv = 0;
  int32_t max_q_len = 0;
  int32_t max_kv_len = 0;
  std::vector<int32_t> cu_seqlens_q; // [batch + 1]
  std::vector<int32_t> seq_lens_k;   // [batch]
  std::vector<int32_t> cu_seqlens_k; // [batch + 1]
  std::vector<int32_t> seq_of_token; // [total_q]: the sequence each q token belongs to

  // q[total_q, num_q_heads, head_dim_qk] at token * q_stride_token + head * q_stride_head.
  std::vector<uint16_t> q;
  int64_t q_stride_token = 0, q_stride_head = 0;

  // K lives in k_data; V in v_data, or in k_data for the packed layout. v_offset is where the V
  // view starts inside its buffer (Dqk for packed, else 0): the device pointer the kernel gets
  // for V is base + v_offset elements.
  std::vector<uint16_t> k_data, v_data;
  int64_t v_offset = 0;
  int64_t k_stride_block = 0, k_stride_token = 0, k_stride_head = 0;
  int64_t v_stride_block = 0, v_stride_token = 0, v_stride_head = 0;

  // Paged only: physical blocks, and block_table[batch, block_table_stride].
  int32_t num_blocks = 0;
  std::vector<int32_t> block_table;
  int32_t block_table_stride = 0;
  std::vector<int32_t> unused_blocks; // physical blocks that hold only garbage

  // o[total_q, num_q_heads, head_dim_v] at token * o_stride_token + head * o_stride_head; the
  // buffer has o_elems elements (a guard past the end included). lse[num_q_heads, total_q] at
  // head * total_q + token; its buffer has lse_elems floats (with a guard).
  int64_t o_stride_token = 0, o_stride_head = 0, o_elems = 0;
  int64_t lse_elems = 0;

  bool packed() const { return spec.layout == KvLayout::packed; }
  bool paged() const { return spec.storage == ATTNJIT_KV_PAGED; }
  const std::vector<uint16_t>& v_buffer() const { return packed() ? k_data : v_data; }
  std::vector<uint16_t>& v_buffer() { return packed() ? k_data : v_data; }

  // Element index of q[token, head, 0] / K[seq][j][kv_head][0] / V[...][0] in their buffers
  // (V's index includes v_offset). K and V indices go through the block table, as a kernel does.
  int64_t q_index(int64_t token, int32_t head) const;
  int64_t k_index(int32_t seq, int64_t j, int32_t kv_head) const;
  int64_t v_index(int32_t seq, int64_t j, int32_t kv_head) const;
  int64_t o_index(int64_t token, int32_t head) const { return token * o_stride_token + head * o_stride_head; }

  float q_value(int64_t token, int32_t head, int32_t d) const;
  float k_value(int32_t seq, int64_t j, int32_t kv_head, int32_t d) const;
  float v_value(int32_t seq, int64_t j, int32_t kv_head, int32_t d) const;
  // Store a value (rounded to the dtype) at a logical position; for hand-made test cases.
  void set_q(int64_t token, int32_t head, int32_t d, float x);
  void set_k(int32_t seq, int64_t j, int32_t kv_head, int32_t d, float x);
  void set_v(int32_t seq, int64_t j, int32_t kv_head, int32_t d, float x);

  // The query head -> kv head mapping of the contract.
  int32_t kv_head_of(int32_t q_head) const { return q_head / (spec.num_q_heads / spec.num_kv_heads); }

  // Output buffers filled with the poison patterns.
  std::vector<uint16_t> poisoned_output() const;
  std::vector<float> poisoned_lse() const;

  std::string describe() const; // one line: shapes, layout, seed
};

// Builds a problem: logical data from `seed`, then storage as the spec says.
HostProblem make_problem(const ProblemSpec& spec, uint64_t seed);

} // namespace attnjit::testing
