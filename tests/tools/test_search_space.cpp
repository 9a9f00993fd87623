// The autotuner's search space: enumeration, pruning before compiling (validity, shared memory,
// simple models) and after compiling (spills, equivalent occupancy hints).
#include <algorithm>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "codegen/errors.h"
#include "tuner/search_space.h"

namespace attnjit::tuner {
namespace {

using ::testing::HasSubstr;

KernelSpec mimo(KernelFamily f) {
  KernelSpec s;
  s.family = f;
  s.head_dim_qk = 192;
  s.head_dim_v = 128;
  s.causal = true;
  return s;
}

const SpaceEntry* find(const std::vector<SpaceEntry>& es, const TileConfig& t) {
  for (const auto& e : es)
    if (e.tile == t) return &e;
  return nullptr;
}

TEST(SearchSpace, EveryKeptCandidateIsValidAndFitsTheArch) {
  for (std::string_view arch : {"sm_80", "sm_86", "sm_90a"}) {
    for (KernelFamily f : {KernelFamily::prefill, KernelFamily::decode}) {
      const KernelSpec spec = mimo(f);
      const auto entries = enumerate_space(spec, arch, {8, 1});
      size_t kept = 0;
      for (const auto& e : entries) {
        if (!e.kept) {
          EXPECT_FALSE(e.reason.empty()) << e.tile.canonical();
          continue;
        }
        ++kept;
        EXPECT_NO_THROW(validate(spec, e.tile)) << e.tile.canonical();
        const int per_block = max_shared_memory_bytes(arch);
        EXPECT_LE(shared_memory_bytes(spec, e.tile),
                  std::min(per_block, (per_block + 1024) / e.tile.min_ctas_per_sm - 1024))
            << arch << " " << e.tile.canonical();
      }
      EXPECT_GT(kept, 4u) << arch << " " << to_string(f);
      // The default is always there and kept.
      const SpaceEntry* def = find(entries, default_tile(spec, arch));
      ASSERT_NE(def, nullptr) << arch;
      EXPECT_TRUE(def->kept);
      // Stable order, no duplicates.
      std::set<std::string> seen;
      for (const auto& e : entries) EXPECT_TRUE(seen.insert(e.tile.canonical()).second) << e.tile.canonical();
      EXPECT_EQ(entries.size(), enumerate_space(spec, arch, {8, 1}).size());
    }
  }
}

TEST(SearchSpace, SharedMemoryPrunesPerArch) {
  const KernelSpec spec = mimo(KernelFamily::prefill);
  // 128 rows, 64-key tiles, 3 stages: 176 KB; fits sm_90a's 227 KB, not sm_80's 163 KB.
  const TileConfig big{128, 64, 8, 1, 3, 1, 1};
  ASSERT_GT(shared_memory_bytes(spec, big), 163 * 1024);
  ASSERT_LE(shared_memory_bytes(spec, big), 227 * 1024);
  const auto space90 = enumerate_space(spec, "sm_90a", {});
  const auto space80 = enumerate_space(spec, "sm_80", {});
  const SpaceEntry* on90 = find(space90, big);
  const SpaceEntry* on80 = find(space80, big);
  ASSERT_NE(on90, nullptr);
  ASSERT_NE(on80, nullptr);
  EXPECT_TRUE(on90->kept) << on90->reason;
  EXPECT_FALSE(on80->kept);
  EXPECT_THAT(on80->reason, HasSubstr("shared memory"));
  // Two CTAs of a tile that fits once but not twice.
  TileConfig two = big;
  two.min_ctas_per_sm = 2;
  const SpaceEntry* twice = find(space90, two);
  ASSERT_NE(twice, nullptr);
  EXPECT_FALSE(twice->kept);
  EXPECT_THAT(twice->reason, HasSubstr("2 CTAs"));
}

TEST(SearchSpace, WarpgroupTilesOnlyOnSm90a) {
  const KernelSpec spec = mimo(KernelFamily::prefill);
  const TileConfig wg{128, 64, 8, 1, 4, 1, 1, true}; // 48 KB of Q + 4 x 40 KB of stages
  const auto space90 = enumerate_space(spec, "sm_90a", {});
  const auto space80 = enumerate_space(spec, "sm_80", {});
  const SpaceEntry* on90 = find(space90, wg);
  const SpaceEntry* on80 = find(space80, wg);
  ASSERT_NE(on90, nullptr);
  ASSERT_NE(on80, nullptr);
  EXPECT_TRUE(on90->kept) << on90->reason;
  EXPECT_FALSE(on80->kept);
  EXPECT_THAT(on80->reason, HasSubstr("tile.wgmma"));
  for (const auto& e : space80) EXPECT_FALSE(e.kept && e.tile.wgmma) << e.tile.canonical();
  // Decode never takes them.
  for (const auto& e : enumerate_space(mimo(KernelFamily::decode), "sm_90a", {8, 1}))
    EXPECT_FALSE(e.kept && e.tile.wgmma) << e.tile.canonical();
}

// Producer warpgroup tiles (".wg2"): two and three consumer warpgroups are searched on sm_90a,
// pruned where their shared memory does not fit, and never kept elsewhere or for decode.
TEST(SearchSpace, ProducerTilesSearchedOnSm90a) {
  const KernelSpec spec = mimo(KernelFamily::prefill); // 192/128
  const auto space90 = enumerate_space(spec, "sm_90a", {});
  const TileConfig two{128, 64, 8, 1, 4, 1, 1, true, true};    // 48 KB of Q + 4 x 40 KB
  const TileConfig three{192, 64, 12, 1, 3, 1, 1, true, true}; // 72 KB of Q + 3 x 40 KB
  const TileConfig three_deep{192, 64, 12, 1, 4, 1, 1, true, true}; // + 40 KB: over 227 KB
  for (const TileConfig& t : {two, three}) {
    const SpaceEntry* e = find(space90, t);
    ASSERT_NE(e, nullptr) << t.canonical();
    EXPECT_TRUE(e->kept) << t.canonical() << ": " << e->reason;
  }
  const SpaceEntry* deep = find(space90, three_deep);
  ASSERT_NE(deep, nullptr);
  EXPECT_FALSE(deep->kept);
  EXPECT_THAT(deep->reason, HasSubstr("shared memory"));
  for (const auto& e : enumerate_space(spec, "sm_80", {})) EXPECT_FALSE(e.kept && e.tile.producer) << e.tile.canonical();
  for (const auto& e : enumerate_space(mimo(KernelFamily::decode), "sm_90a", {8, 1}))
    EXPECT_FALSE(e.kept && e.tile.producer) << e.tile.canonical();
}

TEST(SearchSpace, ModelsPruneWastefulShapes) {
  // Prefill: fewer than 64 query rows per CTA.
  const auto prefill = enumerate_space(mimo(KernelFamily::prefill), "sm_90a", {});
  for (const auto& e : prefill)
    if (e.kept) {
      EXPECT_GE(e.tile.block_m, 64) << e.tile.canonical();
    }
  const SpaceEntry* small = find(prefill, TileConfig{32, 64, 2, 1, 2, 1, 1});
  ASSERT_NE(small, nullptr);
  EXPECT_THAT(small->reason, HasSubstr("model"));

  // Decode with 8 q heads per kv head: one m16 tile holds them; 32-row tiles are padding.
  const auto g8 = enumerate_space(mimo(KernelFamily::decode), "sm_90a", {8, 1});
  for (const auto& e : g8)
    if (e.kept) {
      EXPECT_EQ(e.tile.block_m, 16) << e.tile.canonical();
    }
  // With 32 q heads per kv head (or 8 heads x 4 query tokens), 32-row tiles are worth measuring.
  for (SpaceOptions o : {SpaceOptions{32, 1}, SpaceOptions{8, 4}}) {
    bool has32 = false;
    for (const auto& e : enumerate_space(mimo(KernelFamily::decode), "sm_90a", o))
      has32 |= e.kept && e.tile.block_m == 32;
    EXPECT_TRUE(has32) << o.group << "x" << o.query_len;
  }
  // Decode splits and key-splitting warps are searched; prefill keeps them at 1.
  std::set<int> splits, warps_n;
  for (const auto& e : g8)
    if (e.kept) splits.insert(e.tile.max_splits), warps_n.insert(e.tile.warps_n);
  EXPECT_GE(splits.size(), 2u);
  EXPECT_GE(warps_n.size(), 3u);
  for (const auto& e : prefill)
    if (e.kept) {
      EXPECT_TRUE(e.tile.warps_n == 1 && e.tile.max_splits == 1) << e.tile.canonical();
    }
}

TEST(SearchSpace, CompileReportPrunesSpillsAndEquivalentOccupancyHints) {
  const KernelSpec spec = mimo(KernelFamily::prefill);
  const TileConfig def = default_tile(spec, "sm_90a");
  std::vector<SpaceEntry> es = {
      {{128, 64, 8, 1, 2, 1, 1}, true, ""}, // clean
      {{128, 64, 8, 1, 2, 1, 2}, true, ""}, // same registers as oc1: the hint changed nothing
      {{128, 128, 8, 1, 2, 1, 1}, true, ""}, // spills
      {{128, 32, 8, 1, 3, 1, 1}, true, ""},  // compile fails
      {def, true, ""},                       // the default: kept even though it spills
      {{64, 64, 4, 1, 2, 1, 1}, false, "model: something"},
  };
  std::vector<CompileFacts> facts = {
      {true, "", 188, 0}, {true, "", 188, 0}, {true, "", 255, kMaxSpillBytes + 1},
      {false, "error: out of resources\nmore log", 0, 0}, {true, "", 128, 400}, {},
  };
  prune_by_compile(es, facts, def);
  EXPECT_TRUE(es[0].kept);
  EXPECT_FALSE(es[1].kept);
  EXPECT_THAT(es[1].reason, HasSubstr("same registers (188)"));
  EXPECT_THAT(es[1].reason, HasSubstr(es[0].tile.canonical()));
  EXPECT_FALSE(es[2].kept);
  EXPECT_THAT(es[2].reason, HasSubstr("spilled"));
  EXPECT_FALSE(es[3].kept);
  EXPECT_EQ(es[3].reason, "compile failed: error: out of resources");
  EXPECT_TRUE(es[4].kept) << "the default tile is the reference: never pruned for spills";
  EXPECT_EQ(es[5].reason, "model: something");

  // Of equivalent variants the default survives, whatever the order.
  TileConfig def_twin = def;
  def_twin.min_ctas_per_sm = def.min_ctas_per_sm == 1 ? 2 : 1;
  std::vector<SpaceEntry> pair = {{def_twin, true, ""}, {def, true, ""}};
  std::vector<CompileFacts> same = {{true, "", 128, 0}, {true, "", 128, 0}};
  prune_by_compile(pair, same, def);
  EXPECT_FALSE(pair[0].kept);
  EXPECT_TRUE(pair[1].kept);
}

TEST(SearchSpace, StructureNamesTheCut) {
  EXPECT_EQ(structure_of(TileConfig{16, 64, 1, 4, 3, 32, 2}), "bm16.bn64.wm1.wn4");
  EXPECT_EQ(structure_of(TileConfig{16, 64, 1, 4, 2, 128, 1}), "bm16.bn64.wm1.wn4");
}

} // namespace
} // namespace attnjit::tuner
