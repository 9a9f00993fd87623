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

// Masks, sparsity patterns and fp8 scales (DESIGN.md, "The attention contract"), with the values
// a run passes. A pattern is on when its switch says so; the generator draws the per-head values
// (learned sinks, fp8 scales) and the block mask from the seed.
struct PatternSpec {
  // Sliding window W >= 1 with sink tokens S >= 0: visible iff causal rule && (pos(i) - j < W || j < S).
  bool sliding_window = false;
  int32_t window = 0;
  int32_t sink_tokens = 0;
  // Learned sinks: sinks[h] ~ normal(sink_mean, sink_stddev), one per q head (fp32).
  bool learned_sinks = false;
  double sink_mean = 1.0, sink_stddev = 2.0;
  // Logits soft cap c > 0: s = c * tanh(s / c) on the scaled score, before masking. 0 = off.
  float soft_cap = 0.0f;
  // N:M sparse softmax (0, 0 = off), with its exemptions.
  int32_t nm_n = 0, nm_m = 0;
  int32_t nm_dense_sink_tokens = 0, nm_dense_recent_tokens = 0;
  // Skip-softmax threshold lambda in (0, 1); 0 = off.
  float skip_threshold = 0.0f;
  // Block sparse (on when sparse_block_q > 0): a random FlexAttention-form mask listing each
  // (mask batch, q head, q block) row's KV blocks with probability block_density each.
  int32_t sparse_block_q = 0, sparse_block_kv = 0;
  double block_density = 0.3;
  bool mask_per_batch = false;     // one mask per sequence (mask_batch = batch), else broadcast (1)
  bool mask_unsorted = false;      // list each row's blocks in random order (default: ascending)
  double mask_empty_rows = 0.0;    // probability that a row lists no block (> 0: the first row of
                                   // each mask batch always lists none)
  int32_t mask_extra_columns = 2;  // kv_indices columns beyond the longest row
  int32_t mask_extra_q_blocks = 0; // mask_q_blocks beyond ceil(max q_len / sparse_block_q)
  // fp8 KV: one K scale and one V scale per tensor, or per kv head; drawn uniformly from
  // [scale_min, scale_max] (not powers of two, so a scale applied twice or not at all shows).
  bool kv_scale_per_head = false;
  double scale_min = 0.35, scale_max = 1.9;

  bool window_on() const { return sliding_window; }
  bool nm_on() const { return nm_m != 0; }
  bool skip_on() const { return skip_threshold > 0.0f; }
  bool block_sparse_on() const { return sparse_block_q > 0; }
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
  double q_stddev = 0.0;           // stddev of q alone when > 0 (q far outside f16's range, say)
  double garbage_magnitude = 16.0; // garbage values have |x| in [magnitude/2, magnitude]

  // "Hot keys" (data on which skip-softmax has something to skip, as in real attention): per
  // (sequence, kv head) a random unit direction u; every q row of that kv head's q heads gets
  // +beta*u, and key 0 plus a random hot_key_fraction of the keys get +beta*u, with beta chosen
  // so that a hot key's score is about hot_key_boost above the others' (beta^2 * scale = boost).
  // 0 = off.
  double hot_key_fraction = 0.0;
  double hot_key_boost = 0.0;

  PatternSpec pattern;
};

// Throws std::invalid_argument when the spec breaks the rules above (q_len > kv_len, ...).
void check_spec(const ProblemSpec& spec);

// The effective softmax scale: spec.scale, or 1/sqrt(head_dim_qk) when it is 0.
double effective_scale(const ProblemSpec& spec);

// A small f16 problem (head dims 16/16, pages of 4) for checks written out by hand.
ProblemSpec tiny_spec(int32_t hq, int32_t hkv, std::vector<SeqShape> seqs, bool causal);

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
  // for V is base + v_offset elements. Each element holds the dtype's bits (numeric.h): for fp8
  // KV the byte in the low 8 bits; kv_device_bytes() gives the 1-byte-per-element device image.
  // k_value()/v_value() return the stored (quantized, not yet scaled) value.
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

  // ---- Pattern values (run args) ----
  std::vector<float> sinks;            // learned sinks: [num_q_heads]
  std::vector<float> k_scale, v_scale; // fp8 KV: [1] or [num_kv_heads]; empty for 16-bit KV
  // Block mask: kv_num_blocks[mask_batch, num_q_heads, mask_q_blocks] and
  // kv_indices[..., mask_max_kv_blocks]. Entries past a row's count hold garbage indices: in
  // range (so a stray read gives a wrong answer, not a fault) and, where possible, blocks the row
  // does not list and that hold keys, so that reading one changes the result.
  int32_t mask_batch = 0, mask_q_blocks = 0, mask_max_kv_blocks = 0;
  std::vector<int32_t> kv_num_blocks, kv_indices;
  // Hot keys: which keys of each sequence are hot ([total_kv], by cu_seqlens_k order).
  std::vector<uint8_t> hot_key;

  // The dequantization factors of the contract (1 for 16-bit KV).
  double k_scale_of(int32_t kv_head) const;
  double v_scale_of(int32_t kv_head) const;
  // Whether (mask row of sequence b, q head h, query row i of the sequence) lists the KV block
  // holding key j. True when block sparse is off.
  bool block_listed(int32_t b, int32_t h, int64_t i, int64_t j) const;
  // The mask row (count index) of (sequence b, q head h, query row i), or -1 when i's q block is
  // past mask_q_blocks.
  int64_t mask_row(int32_t b, int32_t h, int64_t i) const;

  // The K/V buffers as the device stores them: 2 bytes per element for f16/bf16 (little endian),
  // 1 byte for fp8. Element strides are the same; byte offsets are element offsets times
  // dtype_bytes(spec.kv_dtype).
  std::vector<uint8_t> kv_device_bytes(const std::vector<uint16_t>& buf) const;

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

// The score the contract's softmax sees for query token t, q head h and key j of sequence b,
// computed directly (not through the reference): scale * q.k with k dequantized, soft-capped when
// the pattern says so; float64. For tests that check the reference by hand.
double hand_score(const HostProblem& p, int64_t t, int32_t h, int32_t b, int64_t j);

// Builds a problem: logical data from `seed`, then storage as the spec says.
HostProblem make_problem(const ProblemSpec& spec, uint64_t seed);

} // namespace attnjit::testing
