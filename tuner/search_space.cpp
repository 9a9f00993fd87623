#include "tuner/search_space.h"

#include <algorithm>
#include <map>
#include <tuple>

#include <fmt/format.h>

#include "codegen/errors.h"

namespace attnjit::tuner {

namespace {

std::string why_pruned(const KernelSpec& spec, std::string_view arch, const SpaceOptions& o, const TileConfig& t) {
  try {
    validate(spec, t, arch);
  } catch (const SpecError& e) {
    return fmt::format("invalid: {}", e.what());
  }
  const int smem = shared_memory_bytes(spec, t); // within the arch's per-block limit (validate)
  if (smem > shared_memory_budget(arch, t.min_ctas_per_sm))
    return fmt::format("shared memory: {} CTAs of {} bytes do not fit on one {} SM", t.min_ctas_per_sm, smem, arch);
  if (spec.family == KernelFamily::prefill) {
    if (t.block_m < 64) return fmt::format("model: {} query rows per CTA reload each K/V tile for too little work", t.block_m);
  } else {
    const int rows = std::max(1, o.group) * std::max(1, o.query_len);
    const int needed = (rows + 15) / 16 * 16;
    if (t.block_m > needed)
      return fmt::format("model: block_m {} exceeds the {} packed query rows of a KV head (padding)", t.block_m, rows);
  }
  return {};
}

} // namespace

std::string structure_of(const TileConfig& t) {
  return fmt::format("bm{}.bn{}.wm{}.wn{}{}", t.block_m, t.block_n, t.warps_m, t.warps_n, t.warpgroup_suffix());
}

std::vector<SpaceEntry> enumerate_space(const KernelSpec& spec, std::string_view arch, const SpaceOptions& o) {
  std::vector<TileConfig> tiles;
  if (spec.family == KernelFamily::prefill) {
    for (int wm : {2, 4, 8})
      for (int rows_per_warp : {16, 32})
        for (int bn : {32, 64, 128})
          for (int st : {2, 3})
            for (int oc : {1, 2})
              tiles.push_back({wm * rows_per_warp, bn, wm, 1, st, 1, oc});
    // Warpgroup tiles (sm_90a; validation prunes them elsewhere): one or two warpgroups of 16-row
    // warps, three to five stages; two or three beside a producer warpgroup (one CTA per SM).
    for (int wm : {4, 8, 12})
      for (int bn : {64, 128})
        for (int st : {3, 4, 5}) {
          if (wm < 12)
            for (int oc : {1, 2}) tiles.push_back({16 * wm, bn, wm, 1, st, 1, oc, true});
          if (wm > 4) tiles.push_back({16 * wm, bn, wm, 1, st, 1, 1, true, true});
        }
  } else {
    for (int wm : {1, 2})
      for (int rows_per_warp : {16, 32})
        for (int wn : {1, 2, 4, 8})
          for (int mult : {1, 2, 4}) {
            const int bn = 16 * wn * mult;
            if (bn > 256) continue;
            for (int st : {2, 3, 4})
              for (int oc : {1, 2, 4, 8}) // 8: two-warp CTAs (launch bounds leave 64+ registers)
                for (int sp : {32, 128}) tiles.push_back({wm * rows_per_warp, bn, wm, wn, st, sp, oc});
          }
  }
  const TileConfig def = default_tile(spec, arch);
  if (std::find(tiles.begin(), tiles.end(), def) == tiles.end()) tiles.push_back(def);
  std::vector<SpaceEntry> out;
  out.reserve(tiles.size());
  for (const TileConfig& t : tiles) {
    SpaceEntry e{t, true, t == def ? std::string() : why_pruned(spec, arch, o, t)};
    e.kept = e.reason.empty();
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<TileConfig> candidate_tiles(const KernelSpec& spec, std::string_view arch, const SpaceOptions& o) {
  std::vector<TileConfig> out;
  for (const SpaceEntry& e : enumerate_space(spec, arch, o))
    if (e.kept) out.push_back(e.tile);
  return out;
}

void prune_by_compile(std::vector<SpaceEntry>& entries, const std::vector<CompileFacts>& facts,
                      const TileConfig& default_tile) {
  if (facts.size() != entries.size()) throw std::invalid_argument("prune_by_compile: one fact per entry");
  // Same everything but min_ctas_per_sm, same registers and spills: the hint changed nothing.
  std::map<std::tuple<std::string, int, int, int, int>, size_t> seen; // structure, stages, splits, regs, spills
  for (size_t i = 0; i < entries.size(); ++i) {
    SpaceEntry& e = entries[i];
    if (!e.kept) continue;
    const CompileFacts& f = facts[i];
    const bool is_default = e.tile == default_tile;
    if (!f.ok) {
      e.kept = false;
      e.reason = fmt::format("compile failed: {}", f.error.substr(0, f.error.find('\n')));
      continue;
    }
    // No ptxas report (NVRTC reused a cached result): nothing to judge by; measure it.
    if (f.registers <= 0) continue;
    if (f.spill_bytes > kMaxSpillBytes && !is_default) {
      e.kept = false;
      e.reason = fmt::format("compiler: {} bytes spilled at {} registers", f.spill_bytes, f.registers);
      continue;
    }
    const auto key = std::make_tuple(structure_of(e.tile), e.tile.stages, e.tile.max_splits, f.registers, f.spill_bytes);
    auto it = seen.find(key);
    if (it == seen.end()) {
      seen.emplace(key, i);
      continue;
    }
    SpaceEntry& other = entries[it->second];
    // Keep the lower occupancy target (or the default), prune the other.
    SpaceEntry* drop = &e;
    SpaceEntry* keep = &other;
    if (is_default || (!(other.tile == default_tile) && e.tile.min_ctas_per_sm < other.tile.min_ctas_per_sm)) {
      std::swap(drop, keep);
      it->second = i;
    }
    drop->kept = false;
    drop->reason = fmt::format("compiler: same registers ({}) and spills as {}", f.registers, keep->tile.canonical());
  }
}

} // namespace attnjit::tuner
