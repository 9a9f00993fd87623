// The two tensor-core products of one KV tile, per warp:
//   qk_scores:     S (kBlockM/kWarpsM rows x kWarpKeys keys) = Q K^T over head_dim_qk
//   pv_accumulate: O += P V, reusing S's accumulator registers as P's A fragments
// K and V reach the tensor cores as 16-bit B fragments: read by ldmatrix from 16-bit tiles, or, for
// fp8 KV, read as bytes and widened to f16 in registers, so that shared memory carries each KV
// byte once in and once out (widening a whole tile in shared memory first tripled that traffic).
#pragma once
#include "mma.cuh"

namespace attnjit {

// Q's A fragments for every k16 step of one m16 tile (kQInRegisters).
template <class T> using QFragments = u32[T::kQInRegisters ? T::kQKSteps : 1][4];

template <class T> __device__ __forceinline__ void load_q_fragments(QFragments<T>& q, u32 q_lane) {
#pragma unroll
  for (int kk = 0; kk < T::kQKSteps; ++kk) ldmatrix_x4(q[kk], q_lane + kk * 16 * 2);
}

// fp8 KV, bf16 q: each Q row rescaled into f16 (Bf16RowToF16). The inverse factor, which S's row
// is multiplied by after Q K^T (unscale_rows), is kept in the row's padding. One warp per row, 16
// bytes per lane.
template <class T> __device__ __forceinline__ void rescale_q_to_f16(unsigned char* s_q) {
  constexpr int kRowLanes = T::kHeadDimQK / 8;
  static_assert(kRowLanes <= 32 && T::kQPitch - T::kHeadDimQK >= 2, "a row fits one warp; its padding holds a float");
  const int lane = threadIdx.x % 32;
  for (int r = threadIdx.x / 32; r < T::kBlockM; r += T::kThreads / 32) {
    unsigned char* row = s_q + T::QRows::offset(r);
    u32 x[4] = {0, 0, 0, 0};
    if (lane < kRowLanes) *reinterpret_cast<u32x4*>(x) = *reinterpret_cast<const u32x4*>(row + lane * 16);
    u32 largest = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) largest = max_(largest, Bf16RowToF16::magnitude(x[j]));
    asm("redux.sync.max.u32 %0, %0, 0xffffffff;" : "+r"(largest));
    const Bf16RowToF16 to_f16(largest);
    if (lane < kRowLanes) {
#pragma unroll
      for (int j = 0; j < 4; ++j) x[j] = to_f16(x[j]);
      *reinterpret_cast<u32x4*>(row + lane * 16) = *reinterpret_cast<const u32x4*>(x);
    }
    if (lane == 0) *reinterpret_cast<float*>(row + T::kHeadDimQK * 2) = to_f16.unscale;
  }
}

// fp8 K: ldmatrix's 16-bit view of a k16 chunk of fp8 rows gives lane t head dims 4t..4t+3, which
// widen into b0 = dims (4t, 4t+1) and b1 = (4t+2, 4t+3), where the mma multiplies them with Q's
// k = (2t, 2t+1) and (2t+8, 2t+9). The dot product is the same sum in any order of k, so Q's
// columns are put in that order once per CTA: within each 16-column chunk, the column pair
// (4t, 4t+1) moves to (2t, 2t+1) and (4t+2, 4t+3) to (2t+8, 2t+9), whole 32-bit words.
template <class T> __device__ __forceinline__ void permute_q_for_fp8_k(unsigned char* s_q) {
  constexpr int kChunks = T::kHeadDimQK / 16;
  for (int c = threadIdx.x; c < T::kBlockM * kChunks; c += T::kThreads) {
    u32x4* chunk = reinterpret_cast<u32x4*>(s_q + T::QRows::offset(c / kChunks) + (c % kChunks) * 32);
    const u32x4 a = chunk[0], b = chunk[1]; // column pairs 0-3, 4-7
    chunk[0] = u32x4{a.x, a.z, b.x, b.z};
    chunk[1] = u32x4{a.y, a.w, b.y, b.w};
  }
}

// Q for fp8 KV, once per CTA: [rescaled to f16,] columns permuted. The caller synchronizes after.
template <class T> __device__ __forceinline__ void prepare_q_for_fp8(unsigned char* s_q) {
  if constexpr (T::kRescaleQ) {
    rescale_q_to_f16<T>(s_q);
    __syncthreads();
  }
  permute_q_for_fp8_k<T>(s_q);
}

// Undoes rescale_q_to_f16 on this thread's rows of S (lane / 4 and + 8 of each m16 tile, the
// latter where the block has such rows). The factors are read from shared memory per tile rather
// than held through the mainloop.
template <class T>
__device__ __forceinline__ void unscale_rows(float (&s)[T::kMTiles][T::kSTiles][4], const unsigned char* s_q, int warp_m,
                                             bool rows_hi) {
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (h == 1 && !rows_hi) continue;
      const int r = (warp_m * T::kMTiles + mi) * 16 + threadIdx.x % 32 / 4 + 8 * h;
      const float f = *reinterpret_cast<const float*>(s_q + T::QRows::offset(r) + T::kHeadDimQK * 2);
#pragma unroll
      for (int nt = 0; nt < T::kSTiles; ++nt) s[mi][nt][2 * h] *= f, s[mi][nt][2 * h + 1] *= f;
    }
}

// k16 steps of K (head dims) or 16-column chunks of V (kChunks of them) that one ldmatrix fills,
// per pair of n8 tiles: 16-bit KV, one (x4 covers both n8 tiles and both k halves); fp8, two
// where the count is even (x4: lanes 16-31 address the next 16 bytes of the same rows), else one
// (x2). fp8 d128 decode on H200: 0.140 ms with x2 loads of padded rows, 0.137 with x4, 0.138
// with x2 of swizzled rows, 0.129-0.132 with x4 of swizzled rows (long-scoreboard stalls per
// issued instruction 1.87 -> 0.79). Decode only (Q's fragments in registers): in prefill the
// second step's Q fragments are live too, and fp8 d128 prefill spilled 32-136 bytes under the
// 128-register cap of its tile then.
template <class T, int kChunks>
inline constexpr int kFragmentSteps = T::kFp8Kv && T::kQInRegisters && kChunks % 2 == 0 ? 2 : 1;
template <class T> inline constexpr int kKFragmentSteps = kFragmentSteps<T, T::kQKSteps>;
template <class T> inline constexpr int kVFragmentSteps = kFragmentSteps<T, T::kOTiles / 2>;

// ldmatrix row addresses of this lane in the K and V stages, relative to a stage (see mma.cuh for
// the fragment layouts; row i of an n8 tile's matrix is the key of S column i). 16-bit: one x4
// load covers two n8 tiles of keys and both k halves (K), or both key halves and 16 head dims (V,
// transposing). fp8: matrices 0 and 1 are two n8 tiles of keys at one 16-byte chunk, matrices 2
// and 3 the same keys at the next chunk (transposing for V).
template <class T> struct KvLanes {
  u32 k, v;
  // mat = lane / 8, mat_row = lane % 8: the matrix and the row this lane addresses.
  __device__ __forceinline__ KvLanes(int mat, int mat_row, int warp_n) {
    if constexpr (T::kFp8Kv) {
      const int key = warp_n * T::kWarpKeys + T::column_key(mat & 1, mat_row);
      k = T::KStageRows::offset(key) + T::KStageRows::chunk(key, mat >> 1) * 16;
      v = T::VStageRows::offset(key) + T::VStageRows::chunk(key, mat >> 1) * 16;
    } else {
      k = T::KStageRows::offset(warp_n * T::kWarpKeys + T::column_key(mat >> 1, mat_row)) + (mat & 1) * 16;
      v = T::VStageRows::offset(warp_n * T::kWarpKeys + T::column_key(mat & 1, mat_row)) + (mat >> 1) * 16;
    }
  }
};

// B fragments of kSteps k16 steps from one ldmatrix at addr: of K (kTransposed false) or of V
// (true, ldmatrix transposing). 16-bit KV lands as it is; fp8 bytes are widened, K's byte pairs as
// they come and V's across the two keys of each pair (load_v_fragments).
template <class T, bool kTransposed, int kSteps>
__device__ __forceinline__ void load_b_fragments(u32 (&b)[kSteps][4], u32 addr) {
  if constexpr (!T::kFp8Kv) {
    ldmatrix<4, kTransposed>(b[0], addr);
  } else {
    u32 w[2 * kSteps];
    ldmatrix<2 * kSteps, kTransposed>(w, addr);
#pragma unroll
    for (int st = 0; st < kSteps; ++st) {
      if constexpr (kTransposed) {
        T::Widen::run_strided(w[2 * st], b[st][0], b[st][2]);
        T::Widen::run_strided(w[2 * st + 1], b[st][1], b[st][3]);
      } else {
        T::Widen::run(w[2 * st], b[st][0], b[st][1]);
        T::Widen::run(w[2 * st + 1], b[st][2], b[st][3]);
      }
    }
  }
}

// B fragments of K for n8 tiles 2np (b[s][0], b[s][1]) and 2np + 1 (b[s][2], b[s][3]) of k16 steps
// kk + s. Successive n8 tiles of keys are kNTileKeyStep rows apart (KernelTraits::column_key),
// within one skew run (or 8-row swizzle period).
template <class T, int kSteps = kKFragmentSteps<T>>
__device__ __forceinline__ void load_k_fragments(u32 (&b)[kSteps][4], u32 k_lane, int kk, int np) {
  using Rows = typename T::KStageRows;
  load_b_fragments<T, false>(b, Rows::step(k_lane + np * 2 * T::kNTileKeyStep * Rows::kPitch, kk * T::KvElem::kBytes));
}

// B fragments of V for the keys of k16 step ks (S tiles 2ks, 2ks + 1) and n8 tiles 2(dp + s)
// (b[s][0], b[s][1]) and 2(dp + s) + 1 (b[s][2], b[s][3]) of O. fp8: ldmatrix's transposing 16-bit
// view of 16 keys x 16 bytes gives lane (g, t), per S tile, head dims 2g and 2g + 1 of keys 2t and
// 2t + 1: bytes (2t.2g, 2t.2g+1, 2t+1.2g, 2t+1.2g+1). Widened with bytes 0, 2 and 1, 3 paired, that
// is the keys pair (2t, 2t + 1) of P's k order at dim 2g (O tile 2dp) and at dim 2g + 1 (2dp + 1):
// the O tiles of a 16-column chunk hold its even and its odd columns (KernelTraits::o_column).
template <class T, int kSteps = kVFragmentSteps<T>>
__device__ __forceinline__ void load_v_fragments(u32 (&b)[kSteps][4], u32 v_lane, int ks, int dp) {
  using Rows = typename T::VStageRows;
  load_b_fragments<T, true>(b, Rows::step(v_lane + ks * 2 * T::kNTileKeyStep * Rows::kPitch, dp * T::KvElem::kBytes));
}

// q_lane: this lane's ldmatrix row address in the Q tile; q_regs holds Q's fragments when
// kQInRegisters. k_lane: see KvLanes, plus the stage's address.
template <class T>
__device__ __forceinline__ void qk_scores(float (&s)[T::kMTiles][T::kSTiles][4], u32 q_lane, u32 k_lane,
                                          const QFragments<T>& q_regs) {
  using Elem = typename T::MmaElem;
  constexpr int kSteps = kKFragmentSteps<T>;
  static_assert(T::kQKSteps % kSteps == 0, "whole ldmatrix loads of K");
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int nt = 0; nt < T::kSTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[mi][nt][e] = 0.f;
#pragma unroll
  for (int kk = 0; kk < T::kQKSteps; kk += kSteps) {
    u32 a[kSteps][T::kMTiles][4];
#pragma unroll
    for (int st = 0; st < kSteps; ++st)
#pragma unroll
      for (int mi = 0; mi < T::kMTiles; ++mi) {
        if constexpr (T::kQInRegisters) {
#pragma unroll
          for (int r = 0; r < 4; ++r) a[st][mi][r] = q_regs[kk + st][r];
        } else {
          ldmatrix_x4(a[st][mi], q_lane + (mi * 16 * T::kQPitch + (kk + st) * 16) * 2);
        }
      }
#pragma unroll
    for (int np = 0; np < T::kSTiles / 2; ++np) {
      u32 b[kSteps][4];
      load_k_fragments<T>(b, k_lane, kk, np);
#pragma unroll
      for (int st = 0; st < kSteps; ++st)
#pragma unroll
        for (int mi = 0; mi < T::kMTiles; ++mi) {
          Mma<Elem>::run(s[mi][2 * np], a[st][mi], b[st][0], b[st][1]);
          Mma<Elem>::run(s[mi][2 * np + 1], a[st][mi], b[st][2], b[st][3]);
        }
    }
  }
}

// The C fragments of two adjacent n8 tiles of S form the A fragment of one k16 step of P V.
template <class T>
__device__ __forceinline__ void pv_accumulate(float (&o)[T::kMTiles][T::kOTiles][4],
                                              const float (&p)[T::kMTiles][T::kSTiles][4], u32 v_lane) {
  using Elem = typename T::MmaElem;
  constexpr int kSteps = kVFragmentSteps<T>;
  static_assert((T::kOTiles / 2) % kSteps == 0, "whole ldmatrix loads of V");
#pragma unroll
  for (int ks = 0; ks < T::kPVSteps; ++ks) {
    u32 a[T::kMTiles][4];
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi) {
      a[mi][0] = pack2<Elem>(p[mi][2 * ks][0], p[mi][2 * ks][1]);
      a[mi][1] = pack2<Elem>(p[mi][2 * ks][2], p[mi][2 * ks][3]);
      a[mi][2] = pack2<Elem>(p[mi][2 * ks + 1][0], p[mi][2 * ks + 1][1]);
      a[mi][3] = pack2<Elem>(p[mi][2 * ks + 1][2], p[mi][2 * ks + 1][3]);
    }
#pragma unroll
    for (int dp = 0; dp < T::kOTiles / 2; dp += kSteps) {
      u32 b[kSteps][4];
      load_v_fragments<T>(b, v_lane, ks, dp);
#pragma unroll
      for (int st = 0; st < kSteps; ++st)
#pragma unroll
        for (int mi = 0; mi < T::kMTiles; ++mi) {
          Mma<Elem>::run(o[mi][2 * (dp + st)], a[mi], b[st][0], b[st][1]);
          Mma<Elem>::run(o[mi][2 * (dp + st) + 1], a[mi], b[st][2], b[st][3]);
        }
    }
  }
}

} // namespace attnjit
