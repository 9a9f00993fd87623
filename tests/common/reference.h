// The float64 reference of the attention contract, and the comparison of a kernel's output with it.
//
// Contract (DESIGN.md, "The attention contract"), per sequence b with q_len and kv_len, query row
// i (0 <= i < q_len), query head h:
//   pos(i)   = kv_len - q_len + i                       (bottom-right alignment)
//   visible  = { j : 0 <= j < kv_len, and j <= pos(i) if causal }
//   kv head  = h / (num_q_heads / num_kv_heads)        (GQA / MQA)
//   s_j      = scale * q[i,h,:] . k[j,kvh,:]           (scale 0 -> 1/sqrt(head_dim_qk))
//   o[i,h,:] = sum_j softmax(s)_j * v[j,kvh,:]
//   lse[h,i] = log(sum_j exp(s_j))                      (natural log)
// Because 0 <= q_len <= kv_len and kv_len >= 1, pos(i) >= 0, so every row sees key 0 at least:
// there is no row without a visible key, and the reference never divides by an empty sum. (A
// contract for kv_len == 0 or q_len > kv_len would have to say what such rows produce; the
// generator refuses those shapes.)
//
// Inputs are the values actually stored (already rounded to fp16/bf16), read through the same
// strides and block table a kernel uses; all arithmetic is in double. The error measured against
// it is therefore only the kernel's own arithmetic (fp32 softmax, low-precision P, output rounding).
#pragma once

#include "numeric.h"
#include "problem.h"

#include <cstdint>
#include <string>
#include <vector>

namespace attnjit::testing {

struct Reference {
  int64_t total_q = 0;
  int32_t num_q_heads = 0;
  int32_t head_dim_v = 0;
  std::vector<double> o;   // [total_q, num_q_heads, head_dim_v], dense
  std::vector<double> lse; // [num_q_heads, total_q]
  double o_at(int64_t t, int32_t h, int32_t d) const {
    return o[(static_cast<size_t>(t) * num_q_heads + h) * head_dim_v + d];
  }
  double lse_at(int64_t t, int32_t h) const { return lse[static_cast<size_t>(h) * total_q + t]; }
};

// threads == 0: std::thread::hardware_concurrency().
Reference compute_reference(const HostProblem& p, unsigned threads = 0);

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

  bool finite_and_complete() const {
    return nan_count == 0 && inf_count == 0 && poison_count == 0 && stray_writes == 0;
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
// `lse_buffer` has HostProblem::lse_elems floats: [num_q_heads, total_q] then a guard.
Comparison compare_lse(const HostProblem& p, const Reference& ref, const std::vector<float>& lse_buffer);

} // namespace attnjit::testing
