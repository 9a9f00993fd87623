// Epilogue: merges the key-splitting warps of a CTA, adds the learned sink to the denominator,
// normalizes, and writes O and LSE, either final (16-bit O) or, under split-KV, as fp32 partials
// for the reduce kernel (which then adds the sink once). The fragments go through shared memory
// first so that global writes are whole rows, coalesced.
#pragma once
#include "tile_scheduler.cuh"
#include "online_softmax.cuh"
#include "barriers.cuh"

namespace attnjit {

// A barrier over the threads that compute (a producer warpgroup, if any, has left the epilogue).
template <class T> __device__ __forceinline__ void sync_computing_threads() {
  if constexpr (T::kProducer) named_barrier_sync(kComputingWarpsBarrier, T::kThreads);
  else __syncthreads();
}

template <class T>
__device__ __forceinline__ void store_output(const AttentionParams& p, const BlockWork& w,
                                             float (&o)[T::kMTiles][T::kOTiles][4],
                                             OnlineSoftmax<T>& sm, float v_scale, unsigned char* smem) {
  constexpr float kLog2e = 1.4426950408889634f;
  const bool partial = T::kSplitKv && p.num_splits > 1;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int warp_m = warp % T::kWarpsM, warp_n = warp / T::kWarpsM;
  const int g = lane / 4, t = lane % 4;
  float* s_o = reinterpret_cast<float*>(smem);               // [kWarpsN][kBlockM][kOPitch]
  float* s_max = s_o + T::kWarpsN * T::kBlockM * T::kOPitch; // [kWarpsN][kBlockM]
  float* s_sum = s_max + T::kWarpsN * T::kBlockM;            // [kWarpsN][kBlockM]
  float* s_lse = s_sum + T::kWarpsN * T::kBlockM;            // [kBlockM]

  // The quad's four threads each hold part of a row's denominator.
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float& l = sm.row_sum[mi][h];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
    }
  sync_computing_threads<T>(); // the mainloop's shared memory is free from here
  if (t == 0) {
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = (warp_m * T::kMTiles + mi) * 16 + g + 8 * h;
        s_max[warp_n * T::kBlockM + r] = sm.row_max[mi][h];
        s_sum[warp_n * T::kBlockM + r] = sm.row_sum[mi][h];
      }
  }
  sync_computing_threads<T>();
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = (warp_m * T::kMTiles + mi) * 16 + g + 8 * h;
      float m_all = neg_inf();
#pragma unroll
      for (int wn = 0; wn < T::kWarpsN; ++wn) m_all = max_(m_all, s_max[wn * T::kBlockM + r]);
      float base = m_all == neg_inf() ? 0.f : m_all;
      float l_all = 0.f;
#pragma unroll
      for (int wn = 0; wn < T::kWarpsN; ++wn)
        l_all += s_sum[wn * T::kBlockM + r] * exp2_approx(s_max[wn * T::kBlockM + r] - base);
      if constexpr (T::kLearnedSinks) {
        // The sink is one more column of the softmax, with no value: it joins the denominator.
        const int row = w.row_first + r;
        if (!partial && row < w.rows) {
          int token, head;
          row_coords<T>(p, w, row, token, head);
          const float sink = p.sinks[head] * kLog2e;
          const float new_base = max_(m_all, sink);
          l_all = l_all * exp2_approx(base - new_base) + exp2_approx(sink - new_base);
          m_all = base = new_base;
        }
      }
      // A row with no visible key (an empty split) gets O = 0 and LSE = -inf.
      const float factor = l_all > 0.f ? exp2_approx(sm.row_max[mi][h] - base) * v_scale / l_all : 0.f;
      float* dst = s_o + (warp_n * T::kBlockM + r) * T::kOPitch;
#pragma unroll
      for (int nt = 0; nt < T::kOTiles; ++nt) {
        dst[T::o_column(nt, t, 0)] = o[mi][nt][2 * h] * factor;
        dst[T::o_column(nt, t, 1)] = o[mi][nt][2 * h + 1] * factor;
      }
      if (warp_n == 0 && t == 0)
        s_lse[r] = l_all > 0.f ? (m_all + log2_approx(l_all)) * kLn2 : neg_inf();
    }
  sync_computing_threads<T>();

  constexpr int kVecs = T::kHeadDimV / 4; // four output elements per step
#pragma unroll 4
  for (int c = threadIdx.x; c < T::kBlockM * kVecs; c += T::kThreads) {
    const int r = c / kVecs, col = (c % kVecs) * 4;
    const int row = w.row_first + r;
    if (row >= w.rows) continue;
    float v[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int wn = 0; wn < T::kWarpsN; ++wn) {
      const float4 x = *reinterpret_cast<const float4*>(s_o + (wn * T::kBlockM + r) * T::kOPitch + col);
      v[0] += x.x, v[1] += x.y, v[2] += x.z, v[3] += x.w;
    }
    int token, head;
    row_coords<T>(p, w, row, token, head);
    const i64 q_index = w.q_start + token;
    if (partial) {
      float* dst = p.partial_o + ((w.split * p.total_q + q_index) * p.num_q_heads + head) * T::kHeadDimV + col;
      *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
      auto* dst = reinterpret_cast<u32*>(static_cast<u16*>(p.o) + q_index * p.o_stride_token +
                                         head * p.o_stride_head + col);
      *reinterpret_cast<uint2*>(dst) =
          make_uint2(pack2<typename T::Elem>(v[0], v[1]), pack2<typename T::Elem>(v[2], v[3]));
    }
  }
  for (int r = threadIdx.x; r < T::kBlockM; r += T::kThreads) {
    const int row = w.row_first + r;
    if (row >= w.rows) continue;
    int token, head;
    row_coords<T>(p, w, row, token, head);
    const i64 q_index = w.q_start + token;
    if (partial)
      p.partial_lse[(w.split * p.total_q + q_index) * p.num_q_heads + head] = s_lse[r];
    else if (p.lse != nullptr)
      p.lse[head * p.total_q + q_index] = s_lse[r];
  }
}

} // namespace attnjit
