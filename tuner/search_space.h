// The autotuner's search space: every tile config worth measuring for one kernel spec on one
// arch, and the pruning that happens before anything is measured.
//
// A candidate is a structure (block_m, warps_m, block_n, warps_n: how a CTA's work is cut) and a
// variant (stages, min_ctas_per_sm, max_splits: pipeline depth, occupancy target, split-KV bound).
//
//   prefill  warps_m 2/4/8, 16 or 32 rows per warp; block_n 32/64/128; stages 2/3;
//            min_ctas_per_sm 1/2; warps_n 1 and max_splits 1 (the family allows nothing else)
//   decode   warps_m 1/2, 16 or 32 rows per warp; warps_n 1/2/4/8; block_n 1, 2 or 4 times
//            16 * warps_n (at most 256); stages 2/3/4; min_ctas_per_sm 1/2/4; max_splits 32/128
//
// Pruned before compiling (each with its reason):
//   - what validate(spec, tile) refuses;
//   - shared memory: one CTA over the arch's per-block limit, or min_ctas_per_sm CTAs over the
//     arch's per-SM shared memory (the target could never be met);
//   - simple models: prefill tiles of fewer than 64 query rows (each K/V tile is loaded for too
//     little work); decode tiles with more query rows than the packed rows of one KV head need
//     (rows = group x query length, rounded up to 16: the extra rows are padding).
// Pruned after compiling (prune_by_compile): spills beyond kMaxSpillBytes (the default tile is
// always kept), and variants that differ only in min_ctas_per_sm and compiled to the same
// registers and spills (the occupancy hint changed nothing; the lowest is kept).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "codegen/kernel_spec.h"

namespace attnjit::tuner {

// Spilled bytes (stores + loads, as ptxas reports them) above which a candidate is not measured.
// The d128 prefill default spills a few bytes under its 2-CTA register cap and is still the
// fastest; the 192/128 tile that spills hundreds is 30% slower (bench/RESULTS.md).
inline constexpr int kMaxSpillBytes = 64;

struct SpaceOptions {
  int group = 1;       // q heads per kv head (decode packs them into M)
  int query_len = 1;   // decode: query tokens per sequence
};

struct SpaceEntry {
  TileConfig tile;
  bool kept = true;
  std::string reason; // why pruned
};

// Every enumerated candidate, kept or pruned with its reason, in a stable order. The default
// tile for the arch is always present and kept.
std::vector<SpaceEntry> enumerate_space(const KernelSpec& spec, std::string_view arch, const SpaceOptions& options);

// The kept tiles of enumerate_space.
std::vector<TileConfig> candidate_tiles(const KernelSpec& spec, std::string_view arch, const SpaceOptions& options);

// "bm64.bn32.wm4.wn1" (".wg1" for warpgroup tiles): the structure of a tile (what stage 1 of the
// search compares).
std::string structure_of(const TileConfig& tile);

// What the compiler reported for one candidate.
struct CompileFacts {
  bool ok = false;
  std::string error; // when !ok
  int registers = 0; // 0: unknown (no ptxas report): the candidate is kept and measured
  int spill_bytes = 0;
};

// Applies the compile-report pruning to `entries` (same order as `facts`). Compile failures are
// pruned with "compile failed: ...". `default_tile` is never pruned for spills.
void prune_by_compile(std::vector<SpaceEntry>& entries, const std::vector<CompileFacts>& facts,
                      const TileConfig& default_tile);

} // namespace attnjit::tuner
