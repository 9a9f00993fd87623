// KernelTraits: every compile-time choice of one attention kernel, and the quantities derived
// from them. The emitter writes one `Spec` (the KernelSpec's axes) and one `Tile` (the tuner's
// choice) per generated source; this header derives everything else from the two.
#pragma once
#include "common.cuh"
#include "smem_rows.cuh"
#include "tile_load.cuh"

namespace attnjit {

template <class Spec, class Tile> struct KernelTraits : Spec, Tile {
  using Elem = typename Spec::Elem;     // q and o
  using KvElem = typename Spec::KvElem; // k and v as stored
  static constexpr bool kFp8Kv = KvElem::kBytes == 1;
  // The tensor cores' input type. fp8 KV multiplies in f16, into which both fp8 formats widen
  // exactly with one instruction per pair (Fp8Widen); bf16 q is then brought into f16's range by a
  // power of two per row (kRescaleQ), undone on the row's scores.
  using MmaElem = typename Select<kFp8Kv, f16, Elem>::type;
  using Widen = typename Select<kFp8Kv, Fp8Widen<KvElem>, void>::type;
  static constexpr bool kRescaleQ = kFp8Kv && !kSame<Elem, f16>;
  // Where fp8 KV is widened: on producer tiles by the producer, into 16-bit stages that the
  // warpgroup products read; otherwise it stays bytes in shared memory and the mma.sync kernel
  // widens its fragments in registers.
  static constexpr bool kWidenKvInProducer = kFp8Kv && Tile::kProducer;
  static constexpr bool kFp8Fragments = kFp8Kv && !kWidenKvInProducer;
  static constexpr int kLogPageSize = log2_exact(Spec::kPageSize);
  // Decode packs the query heads of one KV head (times the query tokens) into the rows of M and
  // splits the KV range across CTAs; prefill gives each query head its own CTAs.
  static constexpr bool kPackGqa = Spec::kDecode;
  static constexpr bool kSplitKv = Spec::kDecode;
  static constexpr bool kNmSparse = Spec::kNmM > 0;
  // N:M selection (nm_sparse.cuh): rank every group pair of a thread before dropping any, with one
  // tie branch for all of them, where the registers allow it. Warpgroup tiles: 174-180 registers,
  // no spills, and on H200 2:4 0.843 -> 0.838 ms. The mma.sync kernels at their 255-register cap
  // keep one branch per pair (ranking all first spilled 2:4 40 -> 156 bytes).
  static constexpr bool kNmRankAllPairsFirst = kNmSparse && Tile::kWgmma;
  // Paged KV: block-table entries read one KV tile ahead (attention_kernel.cuh). Measured on H200:
  // causal prefill 5% and MiMo TP-8 decode 9% faster. N:M kernels read in place: beside the
  // selection's temporaries the entries spill (at 255 registers 8:16 ran 12% slower, 2:4 and 4:8
  // gained 1%).
  static constexpr bool kBlockTableAhead = Spec::kPaged && !kNmSparse;
  // Prefill CTAs walk the query blocks of one (batch, head) before the next (tile_scheduler.cuh),
  // so that its K and V stay in L2 while they are read, where query blocks cost about the same:
  // not under a plain causal mask, whose launch order of longest blocks first across all heads
  // leaves only short blocks for the last wave. H100: non-causal d128 1.371 -> 1.205 ms, block
  // sparse 30% 0.580 -> 0.459 (L2 hit rate 38% -> 87%), MiMo SWA 0.123 -> 0.119; causal MiMo
  // TP-8 0.449 -> 0.511 and causal 192/128 0.912 -> 0.950 (the tail), so causal keeps the old
  // order (bench/RESULTS.md). Warpgroup tiles only: the decode of the block index spilled the
  // register-capped mma.sync fp8 prefill kernels (72-132 bytes).
  static constexpr bool kQueryBlocksTogether =
      !Spec::kDecode && Tile::kWgmma && (!Spec::kCausal || Spec::kSlidingWindow);

  static constexpr int kThreads = 32 * Tile::kWarpsM * Tile::kWarpsN; // the warps that compute
  // Warp-specialized warpgroup tiles (Tile::kProducer): one more warpgroup, the producer, issues
  // every copy into the stages, so the kThreads consumers only multiply and run the softmax, and
  // their two or three warpgroups take turns at the tensor cores (attention_kernel_wgmma.cuh). The
  // producer keeps few registers (56 beside two consumer warpgroups, 40 beside three) and hands the
  // rest of what the launch bounds allocate (65536 / kCtaThreads each, in steps of 8) to the
  // consumers (setmaxnreg): 224 and 152. A producer that widens fp8 holds its loads in registers
  // (MiMo's SWA layer spilled 8 bytes at 56): 64 for it, 216 for its consumers.
  static constexpr bool kProducer = Tile::kProducer;
  static constexpr int kCtaThreads = kThreads + (kProducer ? 128 : 0);
  static constexpr int kConsumerWarpgroups = Tile::kWarpsM / 4;
  static constexpr int kProducerRegisters = kConsumerWarpgroups == 2 ? (kWidenKvInProducer ? 64 : 56) : 40;
  static constexpr int kLaunchRegisters = 65536 / kCtaThreads / 8 * 8;
  static constexpr int kConsumerRegisters =
      (kLaunchRegisters * kCtaThreads - 128 * kProducerRegisters) / kThreads / 8 * 8;
  // The threads that copy: the producer, or all. Warpgroup tiles copy rows of any width in runs
  // (tile_load.cuh), leaving threads idle where needed (192/128 on H100: 0.91 -> 0.83 ms); the
  // register-capped mma.sync kernels keep their measured row-by-row copies.
  using CopyTeam = attnjit::CopyTeam<kProducer ? 128 : kThreads, kProducer ? kThreads : 0, Tile::kWgmma>;
  static constexpr int kMTiles = Tile::kBlockM / (16 * Tile::kWarpsM); // m16 tiles per warp
  static constexpr int kWarpKeys = Tile::kBlockN / Tile::kWarpsN;      // keys per warp per KV tile
  static constexpr int kSTiles = kWarpKeys / 8;                        // n8 tiles of S per m16 tile
  static constexpr int kOTiles = Spec::kHeadDimV / 8;                  // n8 tiles of O per m16 tile
  static constexpr int kQKSteps = Spec::kHeadDimQK / 16;
  static constexpr int kPVSteps = kWarpKeys / 16;
  // Key order of a warp's S columns: column c (0-7, quad lane c / 2, element c % 2) of n8 tile nt.
  // Natural: key 8*nt + c, the order of the tensor-core fragments. Thread-contiguous (N:M): key
  // (c / 2)*kThreadKeys + 2*nt + c % 2, so each thread holds kThreadKeys consecutive keys of its
  // rows and an aligned group of M keys never leaves a thread. Only the ldmatrix row addresses of
  // K and V and the masks see the order; the products are the same sums in another order.
  static constexpr bool kThreadContiguousKeys = kNmSparse;
  static constexpr int kThreadKeys = kWarpKeys / 4;
  static constexpr int kNTileKeyStep = kThreadContiguousKeys ? 2 : 8; // key rows from one n8 tile to the next
  __device__ __forceinline__ static constexpr int column_key(int nt, int c) {
    return kThreadContiguousKeys ? (c / 2) * kThreadKeys + 2 * nt + c % 2 : 8 * nt + c;
  }
  // Column of O (within head_dim_v) that element e (0, 1) of a thread's C fragment row holds in
  // n8 tile nt; t = lane % 4. fp8 V is read transposed as bytes (load_v_fragments), which gives
  // the two n8 tiles of a 16-column chunk its even and its odd columns.
  __device__ __forceinline__ static constexpr int o_column(int nt, int t, int e) {
    return kFp8Fragments ? 16 * (nt / 2) + 4 * t + 2 * e + nt % 2 : 8 * nt + 2 * t + e;
  }
  // Decode warps own one m16 tile: their Q fragments (head_dim_qk / 2 registers) stay in
  // registers instead of being re-read from shared memory for every KV tile.
  static constexpr bool kQInRegisters = Spec::kDecode && kMTiles == 1 && Spec::kHeadDimQK <= 128;

  // Shared memory. 16-bit rows are padded by 16 bytes: with a row pitch of 2*D + 16 bytes the 8
  // rows that one ldmatrix phase reads start in distinct 16-byte bank groups for every D that is a
  // multiple of 16, so no swizzle is needed and every head dim is served by the same code. The
  // thread-contiguous key order reads rows from four runs of kThreadKeys: those runs are skewed.
  static constexpr int kQPitch = Spec::kHeadDimQK + 8; // elements
  static constexpr int kKPitch = Spec::kHeadDimQK + 8;
  static constexpr int kVPitch = Spec::kHeadDimV + 8;
  static constexpr int kKeySkewRows = kThreadContiguousKeys ? kThreadKeys : 0;
  // Warpgroup tiles (Tile::kWgmma, sm_90a) keep Q, K and V in the 128-byte swizzled atoms wgmma
  // reads through descriptors (GmmaRows), the N:M key order (runs of kKeySkewRows keys) folded
  // into K's and V's rows.
  static constexpr bool kWgmma = Tile::kWgmma;
  using QRows = typename Select<kWgmma, GmmaRows<Spec::kHeadDimQK * 2, Tile::kBlockM, 0>, SmemRows<kQPitch * 2, 0>>::type;
  using KRows = typename Select<kWgmma, GmmaRows<Spec::kHeadDimQK * 2, Tile::kBlockN, kKeySkewRows>,
                                SmemRows<kKPitch * 2, kKeySkewRows>>::type; // the 16-bit tiles ldmatrix reads
  using VRows = typename Select<kWgmma, GmmaRows<Spec::kHeadDimV * 2, Tile::kBlockN, kKeySkewRows>,
                                SmemRows<kVPitch * 2, kKeySkewRows>>::type;
  static constexpr int kQBytes = QRows::bytes(Tile::kBlockM);
  // fp8 KV stays bytes in shared memory: ldmatrix reads it as 16-bit pairs and the fragments are
  // widened in registers (tile_mma.cuh). Decode's rows of 128 or 256 bytes are swizzled instead
  // of padded (smem_rows.cuh); others keep the padded layout and the 16-bit layouts' key skew.
  template <int kD>
  using Fp8Rows = typename Select<fp8_rows_swizzled(Spec::kDecode, kD, kKeySkewRows), SwizzledRows<kD>,
                                  SmemRows<fp8_row_pitch(kD), kKeySkewRows>>::type;
  using KStageRows = typename Select<kFp8Fragments, Fp8Rows<Spec::kHeadDimQK>, KRows>::type;
  using VStageRows = typename Select<kFp8Fragments, Fp8Rows<Spec::kHeadDimV>, VRows>::type;
  static constexpr int kKStageBytes = KStageRows::bytes(Tile::kBlockN);
  static constexpr int kVStageBytes = VStageRows::bytes(Tile::kBlockN);
  // Skip-softmax fetches V only after deciding to keep a tile: one V buffer, not a pipeline.
  static constexpr int kVStages = Spec::kSkipSoftmax ? 1 : Tile::kStages;
  static constexpr int kMainloopBytes = kQBytes + Tile::kStages * kKStageBytes + kVStages * kVStageBytes;
  // The epilogue reuses the same memory: fp32 O per key-splitting warp, then row statistics.
  static constexpr int kOPitch = Spec::kHeadDimV + 4;
  static constexpr int kEpilogueBytes =
      (Tile::kWarpsN * Tile::kBlockM * kOPitch + (2 * Tile::kWarpsN + 1) * Tile::kBlockM) * 4;
  // Warpgroup tiles align the dynamic shared memory's base to an atom themselves (1024 bytes).
  static constexpr int kSmemAlign = kWgmma ? 1024 : 0;
  // A producer's stage mbarriers (full and empty per stage, 8 bytes each) follow both.
  static constexpr int kStageBarrierOffset = kMainloopBytes > kEpilogueBytes ? kMainloopBytes : kEpilogueBytes;
  static constexpr int kStageBarrierBytes = kProducer ? 16 * Tile::kStages : 0;
  static constexpr int kSmemBytes = kStageBarrierOffset + kStageBarrierBytes + kSmemAlign;

  static_assert(Spec::kHeadDimQK % 16 == 0 && Spec::kHeadDimV % 16 == 0, "head dims are multiples of 16");
  static_assert((Spec::kPageSize & (Spec::kPageSize - 1)) == 0, "page size is a power of two");
  static_assert(Tile::kBlockM % (16 * Tile::kWarpsM) == 0, "each warp owns whole m16 tiles");
  static_assert(kWarpKeys % 16 == 0, "each warp owns whole k16 steps of P*V");
  static_assert(Tile::kStages >= 2, "the pipeline needs two stages");
  static_assert((!KStageRows::kSwizzled && !VStageRows::kSwizzled) || (kQBytes % 256 == 0 && kKStageBytes % 256 == 0),
                "stage bases keep swizzled rows aligned");
  static_assert(!kNmSparse || kThreadKeys % Spec::kNmM == 0, "N:M groups lie within one thread's keys");
  static_assert(!kWgmma || (Tile::kWarpsM % 4 == 0 && Tile::kWarpsN == 1 && kMTiles == 1 && (!kFp8Kv || kProducer) &&
                            Spec::kHeadDimQK % 64 == 0 && Spec::kHeadDimV % 64 == 0 && Tile::kBlockN % 64 == 0 &&
                            Tile::kStages >= 3 && (!Spec::kSkipSoftmax || !kProducer) && !Spec::kDecode),
                "warpgroup tiles: whole warpgroups of one m16 tile per warp, 16-bit KV (fp8 with a producer), head "
                "dims and block_n multiples of 64, three stages or more, prefill, skip-softmax without a producer");
  static_assert(!kProducer || (kWgmma && (Tile::kWarpsM == 8 || Tile::kWarpsM == 12)),
                "a producer warpgroup serves two or three consumer warpgroups");
};

} // namespace attnjit
