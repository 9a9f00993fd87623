// The attention kernel on Hopper warpgroups (sm_90a, Tile::kWgmma): each warpgroup owns 64 query
// rows; Q K^T and P V are wgmma products that run while the warps work on something else.
//
//   prologue   Q tile and the first kStages-1 K/V tiles in flight; S_0 = Q K_0^T, P_0
//   mainloop   per KV tile i:
//                wait for P_{i-1} V_{i-1}; copy tile i + kStages - 1 into the stage it freed
//                issue S_{i+1} = Q K_{i+1}^T, then O += P_i V_i (after rescaling O for P_i)
//                wait for S_{i+1}; soft cap, mask, [N:M selection], online softmax -> P_{i+1},
//                while the tensor cores still compute P_i V_i
//   epilogue   as the mma.sync kernel (epilogue.cuh)
//
// So the selection and the softmax of one tile run under the other tile's P V, rather than between
// the products on each warp's path as in the mma.sync kernel (attention_kernel.cuh). With one
// warpgroup per CTA (block_m 64), two CTAs share an SM and one's products cover the other's
// softmax too.
//
// Warp-specialized tiles (KernelTraits::kProducer) add a producer warpgroup that issues every
// copy (produce_tiles), so the two or three consumer warpgroups execute no copy addressing, and
// the stages are handed over through mbarriers instead of a CTA barrier per tile. The consumers
// take turns issuing their products (named barriers), so that one's softmax runs while the
// tensor cores work on the others' products rather than all contending at once.
#pragma once
#include "block_setup.cuh"
#include "wgmma.cuh"
#include "barriers.cuh"
#include "online_softmax.cuh"
#include "skip_softmax.cuh"
#include "epilogue.cuh"

namespace attnjit {

// S (64 rows of this warpgroup x kBlockN keys) = Q K^T. q: the warpgroup's first row in the Q
// tile; k: the K stage. Both K-major: 16 head dims per step, 32 bytes into a 128-byte atom row.
template <class T> __device__ __forceinline__ void issue_qk(float (&s)[1][T::kSTiles][4], u32 q, u32 k) {
  using Q = typename T::QRows;
  using K = typename T::KRows;
  const u64 q_desc = gmma_descriptor(q, 16, 1024), k_desc = gmma_descriptor(k, 16, 1024);
#pragma unroll
  for (int kk = 0; kk < T::kQKSteps; ++kk) {
    const u64 a = q_desc + (((kk / 4) * Q::kBlockBytes + (kk % 4) * 32) >> 4);
#pragma unroll
    for (int nb = 0; nb < T::kBlockN / 64; ++nb) {
      const u64 b = k_desc + (((kk / 4) * K::kBlockBytes + nb * 64 * 128 + (kk % 4) * 32) >> 4);
      Wgmma<typename T::MmaElem>::run_ss(*reinterpret_cast<float(*)[32]>(&s[0][8 * nb][0]), a, b, kk > 0);
    }
  }
}

// O += P V: P (this thread's probabilities, as mma.sync A fragments of 16 keys each) from
// registers, V MN-major: 16 keys (two 8-row groups, 1024 bytes apart) per step, 64 head dims per
// product.
template <class T>
__device__ __forceinline__ void issue_pv(float (&o)[1][T::kOTiles][4], const u32 (&pa)[T::kPVSteps][4], u32 v) {
  using V = typename T::VRows;
  const u64 v_desc = gmma_descriptor(v, V::kBlockBytes, 1024);
#pragma unroll
  for (int ks = 0; ks < T::kPVSteps; ++ks)
#pragma unroll
    for (int db = 0; db < T::kHeadDimV / 64; ++db) {
      const u64 b = v_desc + ((db * V::kBlockBytes + ks * 16 * 128) >> 4);
      Wgmma<typename T::MmaElem>::run_rs(*reinterpret_cast<float(*)[32]>(&o[0][8 * db][0]), pa[ks], b, true);
    }
}

// P as P V's A fragments: the C fragments of two adjacent n8 tiles form one k16 step.
template <class T>
__device__ __forceinline__ void pack_probabilities(const float (&s)[1][T::kSTiles][4], u32 (&pa)[T::kPVSteps][4]) {
#pragma unroll
  for (int ks = 0; ks < T::kPVSteps; ++ks) {
    pa[ks][0] = pack2<typename T::MmaElem>(s[0][2 * ks][0], s[0][2 * ks][1]);
    pa[ks][1] = pack2<typename T::MmaElem>(s[0][2 * ks][2], s[0][2 * ks][3]);
    pa[ks][2] = pack2<typename T::MmaElem>(s[0][2 * ks + 1][0], s[0][2 * ks + 1][1]);
    pa[ks][3] = pack2<typename T::MmaElem>(s[0][2 * ks + 1][2], s[0][2 * ks + 1][3]);
  }
}

// fp8 KV on producer tiles multiplies in f16 (T::MmaElem), so bf16 q is rescaled into f16 once per
// CTA (Bf16RowToF16), as rescale_q_to_f16 does for the mma.sync kernel. The four lanes that hold
// rows g and g + 8 of a warp's m16 tile of S rescale those two rows, a quarter of each per lane, so
// the factors' inverses land in the threads whose scores they undo (row_unscale). Q's swizzled
// layout is the same for f16.
template <class T>
__device__ __forceinline__ void rescale_q_rows_to_f16(u32 s_q, int warp, int lane, float (&row_unscale)[2]) {
  using Q = typename T::QRows;
  constexpr int kLaneChunks = T::kHeadDimQK / 8 / 4; // 16-byte chunks of a row, a quarter of them
  static_assert(T::kHeadDimQK % 32 == 0, "a quarter row per lane");
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = 16 * warp + lane / 4 + 8 * h;
    auto addr = [&](int j) { return s_q + Q::offset(r) + Q::chunk(r, lane % 4 + 4 * j) * 16; };
    u32x4 x[kLaneChunks];
    u32 largest = 0;
#pragma unroll
    for (int j = 0; j < kLaneChunks; ++j) {
      asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];"
                   : "=r"(x[j].x), "=r"(x[j].y), "=r"(x[j].z), "=r"(x[j].w)
                   : "r"(addr(j)));
      for (u32 v : {x[j].x, x[j].y, x[j].z, x[j].w}) largest = max_(largest, Bf16RowToF16::magnitude(v));
    }
    largest = max_(largest, __shfl_xor_sync(0xffffffffu, largest, 1));
    largest = max_(largest, __shfl_xor_sync(0xffffffffu, largest, 2));
    const Bf16RowToF16 to_f16(largest);
    row_unscale[h] = to_f16.unscale;
#pragma unroll
    for (int j = 0; j < kLaneChunks; ++j)
      asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(addr(j)), "r"(to_f16(x[j].x)), "r"(to_f16(x[j].y)),
                   "r"(to_f16(x[j].z)), "r"(to_f16(x[j].w)));
  }
}

// How K/V tiles reach the stages, as the consumers' mainloop sees it: start() before tile 0's
// products, acquire(i) before tile i's Q K^T (i >= 1), refill(i) once tile i - 1's stage is free
// (in step i), release(i) once tile i's P V is done, take_turn()/pass_turn(last) around each
// issue of products, finish() before the epilogue.
//
// Every thread of the CTA copies, kStages - 1 tiles ahead; a CTA barrier per tile publishes the
// tile and frees the stage of the one before.
template <class T> struct CtaCopies {
  KvTileLoader<T> kv;
  int list_begin;

  __device__ __forceinline__ CtaCopies(const AttentionParams& p, const BlockWork& w, u32 s_q, u32 s_k, u32 s_v)
      : kv(p, w, s_k, s_v), list_begin(w.list_begin) {
    load_q_tile<T>(p, w, s_q);
#pragma unroll
    for (int s = 0; s < T::kStages - 1; ++s) kv.prefetch(list_begin + s, s); // group 0 also carries Q
  }
  __device__ __forceinline__ static void publish() {
    fence_async_shared();
    __syncthreads();
  }
  __device__ __forceinline__ void start() {
    cp_async_wait<T::kStages - 2>();
    publish(); // Q and tile 0
  }
  __device__ __forceinline__ void acquire(int) {
    cp_async_wait<T::kStages - 3>();
    publish(); // tile i is visible to all; tile i - 2's stage is free to refill
  }
  __device__ __forceinline__ void refill(int i) {
    kv.prefetch(list_begin + i + T::kStages - 1, (i + T::kStages - 1) % T::kStages);
  }
  __device__ __forceinline__ void release(int) {}
  __device__ __forceinline__ void take_turn() {}
  __device__ __forceinline__ void pass_turn(bool) {}
  __device__ __forceinline__ void finish() { cp_async_wait<0>(); }
};

// The stage mbarriers of a warp-specialized CTA. The CTA's tile i (counted from its first) goes
// through stage i % kStages, for the (i / kStages)-th time: phase parity (i / kStages) & 1.
//   full   the producer's copies of the tile have landed (its 128 threads arrive)
//   empty  every consumer warpgroup is done reading the tile (one arrival per consumer warp)
template <class T> struct StageBarriers {
  u32 base; // full[kStages] | empty[kStages], 8 bytes each
  __device__ __forceinline__ u32 full(int i) const { return base + i % T::kStages * 8; }
  __device__ __forceinline__ u32 empty(int i) const { return base + (T::kStages + i % T::kStages) * 8; }
  __device__ __forceinline__ static u32 parity(int i) { return static_cast<u32>(i / T::kStages) & 1; }
  __device__ __forceinline__ void init() const {
    for (int i = 0; i < T::kStages; ++i) {
      mbarrier_init(full(i), T::CopyTeam::kThreads);
      mbarrier_init(empty(i), T::kWarpsM);
    }
  }
};

// The producer warpgroup: Q with the first tile, then each tile into its stage once the tile
// kStages before it has been released. A tile is published when its copies have landed and are
// visible to wgmma's async proxy: tile i - 1 after tile i is issued (two tiles in flight), or
// before the producer waits for a stage, so that the consumers never wait for a tile that landed.
template <class T>
__device__ __forceinline__ void produce_tiles(const AttentionParams& p, const BlockWork& w, u32 s_q, u32 s_k, u32 s_v,
                                              const StageBarriers<T>& bars) {
  const int tiles = w.list_end - w.list_begin;
  if (tiles == 0) return;
  auto publish = [&](int i) {
    fence_async_shared();
    mbarrier_arrive(bars.full(i));
  };
  load_q_tile<T>(p, w, s_q); // committed with tile 0
  KvTileLoader<T> kv(p, w, s_k, s_v);
  if constexpr (T::kWidenKvInProducer) { // stored synchronously: each tile published at once (tile 0 with Q)
    for (int i = 0; i < tiles; ++i) {
      if (i >= T::kStages) mbarrier_wait(bars.empty(i), StageBarriers<T>::parity(i) ^ 1);
      kv.prefetch(w.list_begin + i, i % T::kStages);
      if (i == 0) cp_async_wait<0>();
      publish(i);
    }
    return;
  }
  int in_flight = -1; // the tile whose copies are issued and not yet published
  for (int i = 0; i < tiles; ++i) {
    const u32 released = StageBarriers<T>::parity(i) ^ 1; // tile i - kStages's phase of the stage
    if (i >= T::kStages && !mbarrier_test(bars.empty(i), released)) {
      if (in_flight >= 0) {
        cp_async_wait<0>();
        publish(in_flight);
        in_flight = -1;
      }
      mbarrier_wait(bars.empty(i), released);
    }
    kv.prefetch(w.list_begin + i, i % T::kStages);
    if (in_flight >= 0) {
      cp_async_wait<1>();
      publish(in_flight);
    }
    in_flight = i;
  }
  cp_async_wait<0>();
  publish(in_flight);
}

// The consumers' side of the producer's stages, and their turns at the tensor cores: warpgroup g
// issues its products after named barrier kFirstTurnBarrier + g (its 128 threads sync, the
// previous warpgroup's arrive) and then lets the next go, round robin from warpgroup 0. Each
// issues tiles + 1 times; the last does not pass its last turn, so every arrival is met.
template <class T> struct ProducerCopies {
  StageBarriers<T> bars;
  int warpgroup;
  bool lead_lane;

  static constexpr int kLast = T::kConsumerWarpgroups - 1, kTurnThreads = 2 * 128;
  __device__ __forceinline__ void start() {
    if (warpgroup == kLast) named_barrier_arrive(kFirstTurnBarrier, kTurnThreads);
    mbarrier_wait(bars.full(0), 0);
  }
  __device__ __forceinline__ void acquire(int i) { mbarrier_wait(bars.full(i), StageBarriers<T>::parity(i)); }
  __device__ __forceinline__ void refill(int) {}
  __device__ __forceinline__ void release(int i) {
    if (lead_lane) mbarrier_arrive(bars.empty(i));
  }
  __device__ __forceinline__ void take_turn() { named_barrier_sync(kFirstTurnBarrier + warpgroup, kTurnThreads); }
  __device__ __forceinline__ void pass_turn(bool last) {
    if (!(last && warpgroup == kLast))
      named_barrier_arrive(kFirstTurnBarrier + (warpgroup == kLast ? 0 : warpgroup + 1), kTurnThreads);
  }
  __device__ __forceinline__ void finish() {}
};

// The consumers: Q K^T, mask, selection, softmax and P V of every tile in the CTA's list, then the
// epilogue. `copies` (CtaCopies or ProducerCopies) says when a stage may be read and refilled.
template <class T, class Copies>
__device__ __forceinline__ void consume_tiles(const AttentionParams& p, const BlockWork& w, unsigned char* smem,
                                              u32 s_q, u32 s_k, u32 s_v, Copies& copies) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const u32 q_warpgroup = s_q + (warp / 4) * 64 * 128; // its 64 rows in every column block

  int row_pos[1][2];
  bool row_valid[1][2];
  row_positions<T>(p, w, warp, lane, row_pos, row_valid);
  const int nm_pos_first = w.kv_len - w.q_len + w.row_first;

  float o[1][T::kOTiles][4];
  OnlineSoftmax<T> softmax;
  softmax.init(o);
  const ScoreScales<T> scales(p, w);

  using Scores = float[1][T::kSTiles][4];
  float alpha[1][2]; // the factor O is rescaled by for the latest probabilities
  float row_unscale[2]; // kRescaleQ: the inverse of Q's row factors (rescale_q_rows_to_f16)
  auto to_probabilities = [&](Scores& s, int list_index) {
    const int tile = w.tiles.tile<T>(list_index);
    if constexpr (T::kRescaleQ) {
#pragma unroll
      for (int nt = 0; nt < T::kSTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[0][nt][e] *= row_unscale[e / 2];
    }
    if constexpr (T::kNmSparse) {
      // The rows' maxima taken before the selection drops any score, their reductions beside its
      // networks instead of after the drops.
      float tile_max[1][2];
      mask_and_select<T>(s, p, w, tile, tile * T::kBlockN, row_pos, nm_pos_first, scales.softcap_pre,
                         scales.softcap_post, [&] {
                           tile_max[0][0] = row_tile_max<T>(s, 0, 0);
                           tile_max[0][1] = row_tile_max<T>(s, 0, 1);
                         });
      softmax.update_scores(s, scales.scale_log2, alpha, [&](int, int h) { return tile_max[0][h]; });
    } else { // the maxima where update_scores takes them (through the hook, ptxas orders dense differently)
      mask_and_select<T>(s, p, w, tile, tile * T::kBlockN, row_pos, nm_pos_first, scales.softcap_pre, scales.softcap_post);
      softmax.update_scores(s, scales.scale_log2, alpha);
    }
  };
  u32 pa[T::kPVSteps][4];
  // O rescaled for the latest probabilities, always: skipping it where no row max of the warp rose
  // (one vote per tile) measured 2% slower on H200 (bench/RESULTS.md).
  auto rescale_output = [&] { softmax.rescale(o, alpha); };
  auto k_stage = [&](int i) { return s_k + i % T::kStages * T::kKStageBytes; };
  auto v_stage = [&](int i) { return s_v + i % T::kStages * T::kVStageBytes; };

  // Tile i's P V and, when has_next, tile i + 1's Q K^T and softmax. Two warpgroups in one CTA
  // (kQkFirst) issue Q K^T first, into the other score buffer, so that the copies of a later tile,
  // P_i's packing and O's rescaling run while it computes: on H200 192/128 0.957 -> 0.920 ms. One
  // warpgroup per CTA, two CTAs per SM, pack first and reuse one buffer: the other order ran d128
  // 0.700 -> 0.729 (the other CTA's products already fill the tensor cores; bench/RESULTS.md).
  // N:M kernels keep the one-buffer order on two warpgroups too: two steps per loop trip, each with
  // its own copy of the selection, overran the instruction cache (ncu: 8.5% of stalls waiting for
  // instructions, none for dense); on H100 192/128 2:4 1.30 -> 1.15 ms, 4:8 1.24 -> 1.15, 8:16
  // 1.27 -> 1.19. Warp-specialized consumers take turns instead: the other warpgroup's products
  // run while this one packs and rescales.
  // Called with constant has_next, which inlining folds: no branch around a product.
  constexpr bool kQkFirst = T::kWarpsM == 8 && !T::kNmSparse && !T::kProducer;
  constexpr bool kWaitAtTop = !kQkFirst || T::kHeadDimV <= 128;
  auto wait_output = [&] {
    wgmma_wait<0>();
    fence_accumulators<T::kOTiles * 4>(&o[0][0][0]);
  };
  auto step = [&](bool has_next, int i, Scores& cur, Scores& other) {
    const int li = w.list_begin + i;
    Scores& next = kQkFirst ? other : cur;
    // P_{i-1} V_{i-1} is waited for here, at the top of the step, not at the end of the one before:
    // ptxas hoists a wait to the top of its basic block, which put it ahead of the softmax it
    // was meant to overlap. The loop's back edge is a block boundary it does not cross. (Two
    // warpgroups with head_dim_v 256 keep the wait at the end: at the top, O's 128 registers per
    // thread beside both score buffers spilled 140 bytes.)
    if constexpr (kWaitAtTop) {
      wait_output();
      if (i > 0) copies.release(i - 1);
    }
    // One warpgroup copies tile i + 2 as soon as tile i - 1's stage is free, before packing P_i:
    // with three stages the copies have about one step to land, and their lead counts more than
    // the instructions that issue them (on H200 d128 0.685 -> 0.678 ms, contiguous 0.670 -> 0.648;
    // issued after the products instead, H100 0.703 -> 0.731; bench/RESULTS.md).
    if (has_next) {
      copies.acquire(i + 1);
      if (!kQkFirst) copies.refill(i);
    }
    if (!kQkFirst) {
      pack_probabilities<T>(cur, pa);
      rescale_output();
      fence_accumulators<T::kOTiles * 4>(&o[0][0][0]);
    }
    copies.take_turn();
    wgmma_fence(); // (one warpgroup: O, P and the scores all written before it)
    if (has_next) {
      issue_qk<T>(next, q_warpgroup, k_stage(i + 1));
      wgmma_commit();
    }
    if (kQkFirst) {
      if (has_next) copies.refill(i);
      pack_probabilities<T>(cur, pa);
      rescale_output();
      fence_accumulators<T::kOTiles * 4>(&o[0][0][0]);
      wgmma_fence();
    }
    issue_pv<T>(o, pa, v_stage(i));
    wgmma_commit();
    copies.pass_turn(!has_next);
    if (has_next) {
      wgmma_wait<1>(); // Q K^T done, P V running
      fence_accumulators<T::kSTiles * 4>(&next[0][0][0]);
      to_probabilities(next, li + 1);
    }
    if constexpr (!kWaitAtTop) {
      wait_output();
      copies.release(i);
    }
  };

  const int tiles = w.list_end - w.list_begin;
  Scores s_even, s_odd; // the scores of even and odd tiles (kQkFirst; else s_even only)
  if (tiles > 0) {
    copies.start(); // Q and tile 0
    if constexpr (T::kRescaleQ) {
      rescale_q_rows_to_f16<T>(s_q, warp, lane, row_unscale);
      fence_async_shared(); // for the products' reads of Q
      sync_computing_threads<T>();
    }
    copies.take_turn();
    wgmma_fence();
    issue_qk<T>(s_even, q_warpgroup, k_stage(0));
    wgmma_commit();
    copies.pass_turn(false);
    wgmma_wait<0>();
    fence_accumulators<T::kSTiles * 4>(&s_even[0][0][0]);
    to_probabilities(s_even, w.list_begin);
    constexpr bool with_next = true, last = false;
    if constexpr (kQkFirst) { // two steps per trip, so that the buffers trade places
      int i = 0;
      for (; i + 2 < tiles; i += 2) {
        step(with_next, i, s_even, s_odd);
        step(with_next, i + 1, s_odd, s_even);
      }
      if (i + 1 < tiles) {
        step(with_next, i, s_even, s_odd);
        step(last, i + 1, s_odd, s_even);
      } else {
        step(last, i, s_even, s_odd);
      }
    } else {
      for (int i = 0; i + 1 < tiles; ++i) step(with_next, i, s_even, s_even);
      step(last, tiles - 1, s_even, s_even);
    }
    if constexpr (kWaitAtTop) wait_output();
  }
  copies.finish();
  store_output<T>(p, w, o, softmax, scales.v_scale, smem);
}

// Skip-softmax on uniform warpgroup tiles (every thread copies). K runs kStages - 1 tiles ahead
// alone; after each tile's Q K^T the CTA votes (skip_softmax.cuh), and only a kept tile fetches V,
// into one buffer, while its softmax runs. A kept tile's P V then runs under the next tile's wait
// for K and its Q K^T; the wait for both comes before the next V fetch or O rescale touches what
// the product reads. (Voting on tile i + 1 with its Q K^T in flight during tile i's softmax, so
// that V would arrive a step early, made ptxas serialize every wgmma (C7514, C7520): a branch on
// a vote that holds a product in flight, or code reading a buffer beside one being written.)
template <class T>
__device__ __forceinline__ void consume_tiles_skipping(const AttentionParams& p, const BlockWork& w, unsigned char* smem,
                                                       u32 s_q, u32 s_k, u32 s_v) {
  static_assert(T::kSkipSoftmax && !T::kProducer && T::kVStages == 1, "one V buffer, filled by every thread");
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const u32 q_warpgroup = s_q + (warp / 4) * 64 * 128;
  CtaCopies<T> copies(p, w, s_q, s_k, s_v); // Q and the first K tiles in flight
  KvTileLoader<T>& kv = copies.kv;

  int row_pos[1][2];
  bool row_valid[1][2];
  row_positions<T>(p, w, warp, lane, row_pos, row_valid);
  float o[1][T::kOTiles][4];
  OnlineSoftmax<T> softmax;
  softmax.init(o);
  const ScoreScales<T> scales(p, w);
  int skipped = 0;

  for (int li = w.list_begin; li < w.list_end; ++li) {
    const int i = li - w.list_begin;
    const int tile = w.tiles.tile<T>(li);
    cp_async_wait<T::kStages - 2>();
    CtaCopies<T>::publish(); // K_i visible to the products; K_{i-1}'s stage free (its Q K^T was waited for)
    float s[1][T::kSTiles][4];
    wgmma_fence();
    issue_qk<T>(s, q_warpgroup, s_k + i % T::kStages * T::kKStageBytes);
    wgmma_commit();
    wgmma_wait<0>(); // and the last kept tile's P V: V's buffer and O are free
    fence_accumulators<T::kSTiles * 4>(&s[0][0][0]);
    fence_accumulators<T::kOTiles * 4>(&o[0][0][0]);
    mask_and_select<T>(s, p, w, tile, tile * T::kBlockN, row_pos, 0, scales.softcap_pre, scales.softcap_post);
    if (vote_and_fetch_v<T>(s, softmax, row_valid, scales.scale_log2, p.skip_log2_threshold, kv, li, i, 0)) {
      ++skipped;
      continue;
    }
    float alpha[1][2];
    softmax.update_scores(s, scales.scale_log2, alpha); // while V arrives
    softmax.rescale(o, alpha);
    u32 pa[T::kPVSteps][4];
    pack_probabilities<T>(s, pa);
    cp_async_wait<1>(); // all but the K prefetch just issued
    CtaCopies<T>::publish(); // V visible to the products
    fence_accumulators<T::kOTiles * 4>(&o[0][0][0]);
    wgmma_fence();
    issue_pv<T>(o, pa, s_v);
    wgmma_commit();
  }
  wgmma_wait<0>();
  fence_accumulators<T::kOTiles * 4>(&o[0][0][0]);
  copies.finish();
  report_skipped_tiles(p, skipped, w.list_end - w.list_begin);
  store_output<T>(p, w, o, softmax, scales.v_scale, smem);
}

template <class T> __device__ __forceinline__ void attention_kernel_wgmma(const AttentionParams& p) {
  static_assert(T::kWgmma && T::kMTiles == 1 && T::kWarpsN == 1, "one m16 tile per warp, four warps per 64 rows");
  extern __shared__ __align__(1024) unsigned char smem_base[];
  // Atoms are 1024-byte aligned (wgmma.cuh); the dynamic base need not be (KernelTraits::kSmemAlign).
  unsigned char* smem = smem_base + (-static_cast<int>(smem_addr(smem_base)) & 1023);

  const BlockWork w = schedule_block<T>(p);
  if (w.row_first >= w.rows) return; // the grid covers the longest sequence

  // Shared memory: Q | kStages x K | kStages x V [| stage barriers (producer tiles)].
  const u32 s_q = smem_addr(smem);
  const u32 s_k = s_q + T::kQBytes;
  const u32 s_v = s_k + T::kStages * T::kKStageBytes;

  if constexpr (T::kProducer) {
    const StageBarriers<T> bars{s_q + T::kStageBarrierOffset};
    if (threadIdx.x == 0) bars.init();
    __syncthreads(); // the barriers initialized before any use
    const int warpgroup = threadIdx.x / 128;
    if (warpgroup == T::kConsumerWarpgroups) { // the last: consumers keep warps 0 .. kWarpsM - 1
      registers_decrease<T::kProducerRegisters>();
      produce_tiles<T>(p, w, s_q, s_k, s_v, bars);
      return;
    }
    registers_increase<T::kConsumerRegisters>();
    ProducerCopies<T> copies{bars, warpgroup, threadIdx.x % 32 == 0};
    consume_tiles<T>(p, w, smem, s_q, s_k, s_v, copies);
  } else if constexpr (T::kSkipSoftmax) {
    consume_tiles_skipping<T>(p, w, smem, s_q, s_k, s_v);
  } else {
    CtaCopies<T> copies(p, w, s_q, s_k, s_v);
    consume_tiles<T>(p, w, smem, s_q, s_k, s_v, copies);
  }
}

} // namespace attnjit
