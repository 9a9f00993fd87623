// Split-KV reduce: combines the fp32 partials of num_splits CTAs into the final O and LSE.
//   LSE = log (sum_s exp(lse_s) [+ exp(sink)]),  O = sum_s exp(lse_s - LSE) * O_s
// A learned sink joins the denominator here, once, rather than in every split.
// One warp per (token, q head) row; lanes stride over head_dim_v four elements at a time.
#pragma once
#include "params.cuh"
#include "common.cuh"

namespace attnjit {

template <class Elem, int kHeadDimV, bool kLearnedSinks, int kThreads>
__device__ __forceinline__ void split_kv_reduce(const AttentionParams& p) {
  constexpr float kLog2e = 1.4426950408889634f;
  const int lane = threadIdx.x % 32;
  const i64 row = static_cast<i64>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  if (row >= p.total_q * p.num_q_heads) return;
  const i64 q_index = row / p.num_q_heads;
  const int head = static_cast<int>(row % p.num_q_heads);
  const i64 split_stride = p.total_q * p.num_q_heads;

  float lse_max = neg_inf();
  for (int s = 0; s < p.num_splits; ++s) lse_max = max_(lse_max, p.partial_lse[s * split_stride + row]);
  const float sink = kLearnedSinks ? p.sinks[head] : neg_inf();
  lse_max = max_(lse_max, sink);
  const float base = lse_max == neg_inf() ? 0.f : lse_max;
  float sum = kLearnedSinks ? exp2_approx((sink - base) * kLog2e) : 0.f;
  for (int s = 0; s < p.num_splits; ++s)
    sum += exp2_approx((p.partial_lse[s * split_stride + row] - base) * kLog2e);
  const float lse = sum > 0.f ? base + log2_approx(sum) * kLn2 : neg_inf();

  u16* out = static_cast<u16*>(p.o) + q_index * p.o_stride_token + head * p.o_stride_head;
  for (int col = lane * 4; col < kHeadDimV; col += 128) {
    float v[4] = {0.f, 0.f, 0.f, 0.f};
    for (int s = 0; s < p.num_splits; ++s) {
      const float wgt = sum > 0.f ? exp2_approx((p.partial_lse[s * split_stride + row] - lse) * kLog2e) : 0.f;
      const float4 x = *reinterpret_cast<const float4*>(p.partial_o + (s * split_stride + row) * kHeadDimV + col);
      v[0] += wgt * x.x, v[1] += wgt * x.y, v[2] += wgt * x.z, v[3] += wgt * x.w;
    }
    *reinterpret_cast<uint2*>(out + col) = make_uint2(pack2<Elem>(v[0], v[1]), pack2<Elem>(v[2], v[3]));
  }
  if (lane == 0 && p.lse != nullptr) p.lse[head * p.total_q + q_index] = lse;
}

} // namespace attnjit
