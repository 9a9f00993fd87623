// The float64 reference of the attention contract, and the comparison of a kernel's output with it.
//
// Contract (DESIGN.md, "The attention contract"), per sequence b with q_len and kv_len, query row
// i (0 <= i < q_len), query head h:
//   pos(i)   = kv_len - q_len + i                       (bottom-right alignment)
//   kv head  = h / (num_q_heads / num_kv_heads)        (GQA / MQA)
//   s_j      = scale * q[i,h,:] . k[j,kvh,:]           (scale 0 -> 1/sqrt(head_dim_qk))
//              fp8 KV: k = k_fp8 * k_scale[kvh] and v = v_fp8 * v_scale[kvh] (the dequantized
//              values; one scale per tensor or per kv head)
//   soft cap: s_j = c * tanh(s_j / c) on the scaled score, before any mask or selection
//   visible  = { j : 0 <= j < kv_len, and every active rule allows j }:
//              causal           j <= pos(i)
//              sliding window   pos(i) - j < W  ||  j < S (sink tokens)
//              block sparse     the KV block j / sparse_block_kv is listed for (mask batch, h,
//                               q block i / sparse_block_q); rows whose q block is past
//                               mask_q_blocks list nothing
//   N:M      = per row, in each aligned group [g*M, g*M + M) the N largest visible scores are
//              kept (ties: lower index first); visible keys with j < dense_sink_tokens or
//              pos(i) - j < dense_recent_tokens are kept too; all other keys dropped. Rows of a
//              sequence with q_len == 1 are dense. (Kept = top-N of the visible keys, ranked with
//              the exempt ones, united with the exempt ones: an exempt key may take one of the N
//              places. The recent-token rule is read literally, like the window's: in non-causal
//              attention every key after pos(i) has pos(i) - j < 0 <= dense_recent_tokens and is
//              exempt, so N:M thins only the keys at or before the row's position.)
//   o[i,h,:] = sum_{j kept} e^{s_j - m} v_j / (e^{sink[h] - m} + sum_{j kept} e^{s_j - m})
//              (the sink term only with learned sinks: an extra column with no value)
//   lse[h,i] = log(e^{sink[h]} + sum_{j kept} e^{s_j})   (natural log; the sink included)
// A row with nothing kept (possible only under a block mask): o = 0 and lse = -inf, or
// lse = sink[h] with learned sinks (the denominator is then the sink alone and the numerator 0).
// This is what the reference produces and what the tests require of the kernel.
//
// Skip-softmax (threshold lambda) is an approximation that depends on the kernel's tiles; its
// reference (compute_skip_reference) emulates them: for each query tile (block_m rows of one
// sequence and head, or for the packed decode family block_m (token, q head) rows of one kv
// head) the KV tiles of its list are visited in order, each split of the list starting from
// m = -inf; a tile is skipped when for every valid row r, max_j s(r, j) < m_r + ln(lambda), m_r
// the running max before the tile. Skipped keys are dropped for every row of the query tile.
// compute_reference() ignores skip-softmax: it gives the dense answer the approximation aims at.
//
// Inputs are the values actually stored (already rounded to fp16/bf16/fp8), read through the same
// strides and block table a kernel uses; all arithmetic is in double. The error measured against
// it is therefore only the kernel's own arithmetic (fp32 softmax, low-precision P, output rounding).
//
// Ambiguous rows. N:M selection and skip decisions compare scores; where two scores (or a score
// and a threshold) are closer than a correct fp32 kernel can resolve, both outcomes are correct.
// The reference then records the other outcome as an alternate answer of the affected rows
// (Reference::alternates), and the comparison uses, per row, whichever answer is nearest the
// kernel's. "Closer than fp32 can resolve" is |difference| < ambiguity_abs + ambiguity_rel * |s|
// (plus 2^-10 * c under a soft cap c, for tanh.approx). Only the adjacent pair at a group's
// selection boundary is considered, and at most kMaxAmbiguousPerRow choices per row (more are
// counted in Reference::ambiguous_unresolved and take the reference's own outcome).
#pragma once

#include "numeric.h"
#include "problem.h"

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace attnjit::testing {

// Another correct answer of one (token, head) row (see "Ambiguous rows" above).
struct RowVariant {
  std::vector<double> o; // head_dim_v values
  double lse = 0;
};

inline constexpr int kMaxAmbiguousPerRow = 4; // 2^4 - 1 alternates at most

struct Reference {
  int64_t total_q = 0;
  int32_t num_q_heads = 0;
  int32_t head_dim_v = 0;
  std::vector<double> o;   // [total_q, num_q_heads, head_dim_v], dense
  std::vector<double> lse; // [num_q_heads, total_q]; -inf for a row with nothing kept and no sink
  // Alternates per row, keyed by t * num_q_heads + h.
  std::map<int64_t, std::vector<RowVariant>> alternates;
  int64_t ambiguous = 0;            // ambiguous choices found
  int64_t ambiguous_unresolved = 0; // beyond kMaxAmbiguousPerRow in a row
  int64_t empty_rows = 0;           // rows with no kept key
  double o_at(int64_t t, int32_t h, int32_t d) const {
    return o[(static_cast<size_t>(t) * num_q_heads + h) * head_dim_v + d];
  }
  double lse_at(int64_t t, int32_t h) const { return lse[static_cast<size_t>(h) * total_q + t]; }
  const std::vector<RowVariant>* alternates_of(int64_t t, int32_t h) const {
    auto it = alternates.find(t * num_q_heads + h);
    return it == alternates.end() ? nullptr : &it->second;
  }
};

struct ReferenceOptions {
  unsigned threads = 0; // 0: std::thread::hardware_concurrency()
  double ambiguity_abs = 2e-4;
  double ambiguity_rel = 1e-4;
};

// Every rule of the contract except skip-softmax (the dense answer it approximates).
Reference compute_reference(const HostProblem& p, unsigned threads = 0);
Reference compute_reference(const HostProblem& p, const ReferenceOptions& opt);

// Whether key j is visible to row i (of sequence b) for q head h under the masks (causal,
// window with sink tokens, block mask), before N:M selection and skip-softmax.
bool key_visible(const HostProblem& p, int32_t b, int32_t h, int64_t i, int64_t j);

// ---- N:M selection (exposed for the unit tests) ----
// scores[j] for j in [0, kv_len): the (capped) score, or -inf where not visible. Returns kept[j].
// pos is the row's position; dense rows (q_len == 1) are the caller's business.
std::vector<char> nm_select(const std::vector<double>& scores, int64_t pos, int32_t n, int32_t m,
                            int32_t dense_sink_tokens, int32_t dense_recent_tokens);

// ---- Skip-softmax tile emulation ---------------------------------------------------------------

struct KvTile {
  int64_t begin = 0, end = 0; // keys [begin, end)
};

// One query tile: rows [row_first, row_end) of a sequence's M space. Prefill: M rows are the
// sequence's query rows and `head` is the q head. Packed decode: M row r is (token r / group,
// q head head * group + r % group) and `head` is the kv head.
struct QueryTile {
  int32_t seq = 0;
  int32_t head = 0;
  int64_t row_first = 0, row_end = 0;
  bool packed = false; // packed decode rows
};
// Every query tile with at least one valid row, in (sequence, head, row) order.
std::vector<QueryTile> query_tiles(const HostProblem& p, int32_t block_m, bool pack_gqa);

struct SkipTiling {
  int32_t block_m = 0;
  int32_t block_n = 0;
  bool pack_gqa = false; // the decode family
  // The KV tiles the query tile visits, in order (default_kv_tiles when empty).
  std::function<std::vector<KvTile>(const HostProblem&, const QueryTile&)> kv_tiles;
  // Where the tile list is cut into split-KV partitions: list indices at which the second,
  // third, ... split begins (each split starts from m = -inf). Empty function: one split.
  std::function<std::vector<int32_t>(const QueryTile&, int32_t list_size)> split_starts;
};

// The tile list of the contract's kernels: KV tiles of block_n keys, ascending, from tile 0 up to
// the tile of the last key any row of the query tile may see (causal: pos of the last row); with
// a sliding window, the tiles holding sink tokens followed by the tiles from the one holding the
// first row's window start.
std::vector<KvTile> default_kv_tiles(const HostProblem& p, const QueryTile& qt, int32_t block_n);
// Splits of ceil(count / num_splits) list entries (the last ones may be short or empty).
std::vector<int32_t> even_split_starts(int32_t list_size, int32_t num_splits);
SkipTiling make_skip_tiling(int32_t block_m, int32_t block_n, bool pack_gqa, int32_t num_splits = 1);

struct SkipReference {
  Reference ref;   // the emulated skip-softmax answer (with alternates for near-threshold decisions)
  Reference dense; // the same problem without skipping
  int64_t query_tiles = 0;  // query tiles with at least one valid row
  int64_t tiles_seen = 0;   // (query tile, KV tile) pairs visited, over every split
  int64_t tiles_skipped = 0;
  int64_t ambiguous_decisions = 0;
  // Per row (index t * num_q_heads + h): the fraction f = D / l of the dense softmax mass the
  // skipped keys carry (l includes the sink term), and a bound on ||o_skip - o_dense||_2:
  //   o_skip - o_dense = f / (1 - f) * (o_dense - o_D),   o_D the mean of the dropped values
  //   weighted by their softmax weights, so ||o_skip - o_dense|| <= f / (1 - f) *
  //   (||o_dense|| + max_{dropped j} ||v_j||);  lse_skip - lse_dense = log(1 - f).
  // Every skipped key has e^{s_j - m_final} < lambda, so f < lambda * n_dropped / l (l >= 1 in
  // units of the row max): the a-priori form of the same bound. For a row with alternates, each
  // of the three is the largest over the reference's outcome and the alternates.
  std::vector<double> dropped_fraction;
  std::vector<double> o_bound;
  std::vector<int64_t> dropped_keys;
};

SkipReference compute_skip_reference(const HostProblem& p, const SkipTiling& tiling, const ReferenceOptions& opt = {});

// ---- Block-mask builder (SpargeAttn-style) --------------------------------------------------------
// What attnjit_build_block_mask computes (attnjit.h): per (sequence b, q head h, q block qb of
// block_q rows), KV block c (keys [c*block_kv, min(kv_len, (c+1)*block_kv))) scores
//   score(c) = mean_{rows r of qb} q[r, h, :] . mean_{keys j of c} k[j, kvh, :]
// Competing blocks: all ceil(kv_len / block_kv); under causal only those holding a key visible to
// some row of the q block (c * block_kv <= pos(last row)). The best max(1, ceil(topk * competing))
// are kept (ties to the lower index), plus block 0 with force_first_block; listed ascending. A q
// block past the sequence's q_len lists nothing.
struct BlockMaskSpec {
  int32_t block_q = 128, block_kv = 128;
  float topk = 0.25f; // (the reference computes ceil(double(topk) * competing): pick topk values
                      // that are binary fractions and the float/double question does not arise)
  bool force_first_block = false;
  bool causal = false;
};

struct BlockMaskRow {
  std::vector<double> score; // per competing block
  int32_t keep = 0;          // max(1, ceil(topk * competing)), 0 for an empty q block
  std::vector<int32_t> kept; // the reference's choice, ascending (forced block included)
};

struct BlockMaskReference {
  int32_t mask_q_blocks = 0;
  std::vector<BlockMaskRow> rows; // [batch, num_q_heads, mask_q_blocks]
};

// Needs q and K of one 16-bit dtype (the op reads both).
BlockMaskReference reference_block_mask(const HostProblem& p, const BlockMaskSpec& spec, int32_t mask_q_blocks);

// Checks a built mask (kv_num_blocks [batch, num_q_heads, mask_q_blocks], kv_indices with
// mask_max_kv_blocks columns) against the reference: counts, ascending unique in-range indices, the
// forced block, and the top-k set, where blocks whose scores tie the boundary within
// rel_eps * max|score| (+ abs_eps) may trade places. "" when it matches, else the first problems.
std::string check_block_mask(const BlockMaskReference& ref, const BlockMaskSpec& spec,
                             const std::vector<int32_t>& kv_num_blocks, const std::vector<int32_t>& kv_indices,
                             int32_t mask_max_kv_blocks, double rel_eps = 1e-4, double abs_eps = 1e-5);

// ---- Tolerances --------------------------------------------------------------------------------
//
// What a correct kernel gets wrong, with the reference fed the exact stored inputs:
//  * Q.K^T is exact products accumulated in fp32: relative error ~1e-6, negligible.
//  * P = exp(s - m) is rounded to the input dtype before the P.V tensor-core product (the
//    FlashAttention-2 scheme), while the denominator sums the unrounded fp32 P. With unit
//    roundoff u (2^-8 for bf16, 2^-11 for f16) the absolute rounding error is uniform within half
//    an ulp, so over values spread across a binade the relative error has an rms of about
//    u/sqrt(6) ~ 0.41u, independently for each p_j. The output is a weighted sum of random V
//    rows, o = sum_j p_j v_j / l, of size ~ ||p||_2 * sigma_v / l; the error sum_j p_j e_j v_j / l
//    has size ~ ||p||_2 * sigma_v * 0.41u / l: the same relative error, whatever the length.
//  * The output is rounded to the dtype once more: another ~0.41u.
//  Together ~0.58u: 2.3e-3 for bf16 and 2.8e-4 for f16, as a norm-wise relative error.
//  (The FA2-style kernel emulated in test_reference.cpp measures ~1.8e-3 and ~2.3e-4; the GPU
//  suite's 65 pairwise and 15 targeted cases measured at most 2.2e-3 (bf16) and 2.8e-4 (f16),
//  worst rows 4.3e-3 and 5.4e-4, on an H100.)
//  Bounds: 1e-2 (bf16) and 2e-3 (f16), about 4.5x and 7x the expected error, so legitimate
//  variants fit (Q pre-scaled and rounded to the input dtype adds ~0.41u * rms(s), under 1e-3
//  for f16 even with peaky scores; exp2 with the scale folded in; split-KV partials in fp32;
//  ex2.approx), while a real bug -- a dropped, duplicated or garbage key in a short row, a wrong
//  head, a wrong block -- costs O(1) relative error in the rows it touches.
//  * Per row (one token, one head, head_dim_v values) the error is a sample of the same
//    distribution with few terms (16 at head_dim_v = 16), and its denominator can be unusually
//    small; the worst row is allowed 5x the norm-wise bound. This still catches a single wrong row
//    among a hundred thousand, which the norm-wise error alone would dilute away.
//  * LSE is pure fp32 arithmetic (max, exp, sum of up to a few thousand terms, log): its absolute
//    error is ~ n_terms^0.5 * 2^-24 plus 2^-24 * |lse| (measured at most 1.3e-5, peaky rows
//    included). 2e-4 leaves ~15x and still catches one missing key in rows of up to ~5000 keys
//    (dropping one of n comparable terms moves lse by ~1/n).
struct Tolerance {
  double rel_l2;      // ||out - ref||_2 / ||ref||_2 over all output elements
  double row_rel_l2;  // the same, per (token, head) row, worst row
  double lse_abs;     // max |lse - lse_ref|
};
Tolerance default_tolerance(attnjit_dtype out_dtype);

// The tolerance of a problem's patterns: default_tolerance(q dtype), plus, under a soft cap c,
// the error of a tanh.approx.f32 (relative error <= 2^-11, so the capped score is off by at most
// 2^-11 * c): the LSE moves by at most that, and the output by about as much relative (rel_l2 and
// the worst row widen by 2^-11 * c and 5x that). fp8 KV needs nothing more: the reference uses
// the exact dequantized values, and fp8 -> f16/bf16 conversion is exact, so the kernel's error is
// the same low-precision P.V and output rounding as with 16-bit KV (a kernel that rounds
// k_fp8 * k_scale back to f16/bf16 adds one more rounding of ~0.41u, inside the margin).
Tolerance pattern_tolerance(const HostProblem& p);

// ---- Comparison --------------------------------------------------------------------------------

struct Comparison {
  int64_t elements = 0;        // logical elements compared
  double rel_l2 = 0;           // over finite elements; +inf if any element is not finite
  double max_abs = 0;          // largest |out - ref|
  double worst_row_rel = 0;    // largest per-row relative L2 error (output only)
  int64_t nan_count = 0;       // NaNs the kernel wrote (the poison pattern excluded)
  int64_t inf_count = 0;
  int64_t poison_count = 0;    // logical elements never written
  int64_t stray_writes = 0;    // padding / guard elements that are no longer poison
  // Where the largest absolute error is.
  int64_t worst_token = -1;
  int32_t worst_head = -1, worst_d = -1;
  double worst_got = 0, worst_want = 0;
  // Same for the worst row.
  int64_t worst_row_token = -1;
  int32_t worst_row_head = -1;
  int64_t alternates_used = 0; // rows that matched one of the reference's alternates best
  int64_t inf_mismatch = 0;    // LSE: -inf expected and something else found, or the reverse

  bool finite_and_complete() const {
    return nan_count == 0 && inf_count == 0 && poison_count == 0 && stray_writes == 0 && inf_mismatch == 0;
  }
  bool output_ok(const Tolerance& t) const {
    return finite_and_complete() && rel_l2 <= t.rel_l2 && worst_row_rel <= t.row_rel_l2;
  }
  bool lse_ok(const Tolerance& t) const { return finite_and_complete() && max_abs <= t.lse_abs; }
  std::string summary() const;
};

// `o_buffer` is the whole output buffer as downloaded (HostProblem::o_elems elements, poisoned
// before the run): logical elements are compared with the reference, everything else (token
// padding, the guard past the end) must still hold the poison.
Comparison compare_output(const HostProblem& p, const Reference& ref, const std::vector<uint16_t>& o_buffer);
// `lse_buffer` has HostProblem::lse_elems floats: [num_q_heads, total_q] then a guard. Where the
// reference is -inf (a row with nothing kept and no sink) the kernel must write -inf exactly.
Comparison compare_lse(const HostProblem& p, const Reference& ref, const std::vector<float>& lse_buffer);

} // namespace attnjit::testing
