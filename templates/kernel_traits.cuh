// KernelTraits: every compile-time choice of one attention kernel, and the quantities derived
// from them. The emitter instantiates exactly one KernelTraits per generated source.
#pragma once
#include "common.cuh"

namespace attnjit {

template <class Elem_, int kHeadDimQK_, int kHeadDimV_, int kPageSize_, bool kPaged_,
          bool kCausal_, bool kDecode_, int kBlockM_, int kBlockN_, int kWarpsM_, int kWarpsN_,
          int kStages_>
struct KernelTraits {
  using Elem = Elem_;
  // --- the spec ---
  static constexpr int kHeadDimQK = kHeadDimQK_;
  static constexpr int kHeadDimV = kHeadDimV_;
  static constexpr int kPageSize = kPageSize_;
  static constexpr int kLogPageSize = log2_exact(kPageSize_);
  static constexpr bool kPaged = kPaged_;
  static constexpr bool kCausal = kCausal_;
  // Decode packs the query heads of one KV head (times the query tokens) into the rows of M and
  // splits the KV range across CTAs; prefill gives each query head its own CTAs.
  static constexpr bool kPackGqa = kDecode_;
  static constexpr bool kSplitKv = kDecode_;
  // --- the tile config ---
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kWarpsM = kWarpsM_;
  static constexpr int kWarpsN = kWarpsN_;
  static constexpr int kStages = kStages_;
  // --- derived ---
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kMTiles = kBlockM / (16 * kWarpsM); // m16 tiles per warp
  static constexpr int kWarpKeys = kBlockN / kWarpsN;      // keys per warp per KV tile
  static constexpr int kSTiles = kWarpKeys / 8;            // n8 tiles of S per m16 tile
  static constexpr int kOTiles = kHeadDimV / 8;            // n8 tiles of O per m16 tile
  static constexpr int kQKSteps = kHeadDimQK / 16;
  static constexpr int kPVSteps = kWarpKeys / 16;

  // Shared memory. Rows are padded by 16 bytes: with a row pitch of 2*D + 16 bytes the 8 rows that
  // one ldmatrix phase reads start in distinct 16-byte bank groups for every D that is a multiple
  // of 16, so no swizzle is needed and every head dim is served by the same code.
  static constexpr int kQPitch = kHeadDimQK + 8;
  static constexpr int kKPitch = kHeadDimQK + 8;
  static constexpr int kVPitch = kHeadDimV + 8;
  static constexpr int kQBytes = kBlockM * kQPitch * 2;
  static constexpr int kKStageBytes = kBlockN * kKPitch * 2;
  static constexpr int kVStageBytes = kBlockN * kVPitch * 2;
  static constexpr int kMainloopBytes = kQBytes + kStages * (kKStageBytes + kVStageBytes);
  // The epilogue reuses the same memory: fp32 O per key-splitting warp, then row statistics.
  static constexpr int kOPitch = kHeadDimV + 4;
  static constexpr int kEpilogueBytes = (kWarpsN * kBlockM * kOPitch + (2 * kWarpsN + 1) * kBlockM) * 4;
  static constexpr int kSmemBytes = kMainloopBytes > kEpilogueBytes ? kMainloopBytes : kEpilogueBytes;

  static_assert(kHeadDimQK % 16 == 0 && kHeadDimV % 16 == 0, "head dims are multiples of 16");
  static_assert((kPageSize & (kPageSize - 1)) == 0, "page size is a power of two");
  static_assert(kBlockM % (16 * kWarpsM) == 0, "each warp owns whole m16 tiles");
  static_assert(kWarpKeys % 16 == 0, "each warp owns whole k16 steps of P*V");
  static_assert(kStages >= 2, "the pipeline needs two stages");
};

} // namespace attnjit
