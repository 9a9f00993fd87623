// The autotuner's driver without a GPU: a fake compiler and a fake measurer stand in for NVRTC and
// the device. Covers the tuning matrix, the staged and exhaustive searches, failed candidates,
// the rows left in the cache, skipping tuned units and resuming interrupted ones, and regret.
#include <cmath>
#include <map>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cache/store.h"
#include "tool_runner.h"
#include "tuner/autotune.h"

namespace attnjit::tuner {
namespace {

using ::testing::HasSubstr;

const TuningDevice kDevice{"Fake GPU", 100, "sm_90a"};

KernelSpec mimo(KernelFamily f) {
  KernelSpec s;
  s.family = f;
  s.head_dim_qk = 192;
  s.head_dim_v = 128;
  s.causal = true;
  return s;
}

// Compiles nothing; a few tiles "spill" so the compile pruning is exercised.
struct FakeCompiler : CandidateCompiler {
  std::atomic<int> calls{0};
  CompileFacts compile(const KernelSpec&, const TileConfig& t, std::string_view) override {
    ++calls;
    CompileFacts f{true, "", 100 + t.block_n / 2, 0};
    if (t.block_n == 128 && t.stages == 3) f.spill_bytes = 512;
    return f;
  }
};

// Time is a smooth function of the tile with one best point; some tiles fail their check.
struct FakeMeasurer : Measurer {
  std::vector<std::string> measured;
  int begins = 0;
  std::set<std::string> fail_verify;
  bool fail_begin = false;
  int break_after = -1; // broken() once this many candidates were measured

  static double time_of(const TileConfig& t) {
    double us = 100.0;
    us *= 1.0 + 0.1 * std::abs(std::log2(t.block_n / 64.0));
    us *= 1.0 + 0.05 * std::abs(t.stages - 3);
    us *= t.min_ctas_per_sm == 2 ? 0.9 : 1.0;
    us *= 1.0 + 0.02 * std::abs(std::log2(t.warps_n / 4.0 + 1e-9 + (t.warps_n == 0)));
    us *= 1.0 + 0.03 * std::abs(std::log2(t.block_m / 128.0));
    return us;
  }
  void begin(const TuneUnit&, const TileConfig&) override {
    ++begins;
    if (fail_begin) throw std::runtime_error("the shape needs 90 GB of GPU memory");
  }
  Measurement measure(const TileConfig& t) override {
    measured.push_back(t.canonical());
    Measurement m;
    if (fail_verify.contains(t.canonical())) {
      m.failure = "verify: relative RMS error 0.5 (bound 0.01)";
      m.median_us = 1.0; // it would have been the fastest: it must still never win
      return m;
    }
    m.ok = true;
    m.median_us = time_of(t);
    m.rel_error = 1e-3;
    m.runs = 20;
    return m;
  }
  bool broken() const override { return break_after >= 0 && static_cast<int>(measured.size()) >= break_after; }
};

Deployment mimo_tp8() {
  return plan_deployment(load_preset("mimo-v2.5"), {.tensor_parallel = 8});
}

// MiMo's global layers alone (the driver tests tune one layer type).
Deployment mimo_full_tp8() {
  ModelPreset m = load_preset("mimo-v2.5");
  m.layer_types.resize(1);
  return plan_deployment(m, {.tensor_parallel = 8});
}

MatrixOptions small_matrix() {
  MatrixOptions m;
  m.max_batch = 16;
  m.max_seq = 4096;
  return m;
}

std::map<std::string, PreparedSpace> prepare(const std::vector<TuneUnit>& units, FakeCompiler& c) {
  std::map<std::string, PreparedSpace> spaces;
  for (const TuneUnit& u : units)
    if (!spaces.contains(space_key(u)))
      spaces.emplace(space_key(u), prepare_space(u.spec, kDevice.arch, {u.group(), u.shape.q_len}, c, 4));
  return spaces;
}

TEST(Matrix, UnitsCoverEveryBucketOfTheDeploymentOnce) {
  const Deployment d = mimo_tp8();
  const std::vector<TuneUnit> all = plan_units(d, kDevice, small_matrix());
  // The global layers first, then the sliding-window layers (their own specs: own units).
  ASSERT_EQ(all.size(), 36u);
  std::vector<TuneUnit> units(all.begin(), all.begin() + 18);
  for (size_t i = 18; i < all.size(); ++i) {
    EXPECT_EQ(all[i].layer_types, std::vector<std::string>{"swa"});
    EXPECT_TRUE(all[i].spec.sliding_window && all[i].spec.learned_sinks);
    EXPECT_EQ(all[i].window, 128);
    EXPECT_EQ(all[i].bucket, units[i - 18].bucket);
    EXPECT_NE(all[i].key, units[i - 18].key);
  }
  // decode: batch edges 1, 4, 16 x KV edges 256, 1K, 4K; prefill: q 64/256/1K/4K x KV from q up to 4K.
  std::vector<std::string> names;
  for (const auto& u : units) names.push_back(u.bucket.name());
  EXPECT_THAT(names, ::testing::ElementsAre(
      "prefill:q64:kv256", "prefill:q64:kv1024", "prefill:q64:kv4096", "prefill:q256:kv256", "prefill:q256:kv1024",
      "prefill:q256:kv4096", "prefill:q1024:kv1024", "prefill:q1024:kv4096", "prefill:q4096:kv4096",
      "decode:r8:b1:kv256", "decode:r8:b1:kv1024", "decode:r8:b1:kv4096", "decode:r8:b4:kv256", "decode:r8:b4:kv1024",
      "decode:r8:b4:kv4096", "decode:r8:b16:kv256", "decode:r8:b16:kv1024", "decode:r8:b16:kv4096"));
  std::set<std::string> keys;
  for (const auto& u : units) {
    EXPECT_TRUE(keys.insert(u.key).second);
    EXPECT_EQ(u.key, tuning_key(u.spec, kDevice, u.bucket));
    EXPECT_EQ(u.layer_types, std::vector<std::string>{"full"});
    EXPECT_EQ(u.window, 0);
    // The measured shape falls in its own bucket.
    EXPECT_EQ(shape_bucket(u.spec.family, u.shape.batch, u.shape.q_len, u.shape.kv_len, u.group()), u.bucket);
    EXPECT_LE(u.shape.batch, 16);
    EXPECT_LE(u.shape.kv_len, 4096);
  }
  EXPECT_EQ(units.front().shape.batch, 16) << "prefill batches hold prefill_tokens (16384 / 64, at most max_batch)";

  // Phases and bucket filters.
  MatrixOptions only = small_matrix();
  only.phases = {KernelFamily::decode};
  only.only_buckets = {"decode:r8:b4:kv1024"};
  const auto one = plan_units(d, kDevice, only);
  ASSERT_EQ(one.size(), 2u) << "full and swa";
  EXPECT_EQ(one[0].shape.batch, 4);
  EXPECT_EQ(one[0].shape.kv_len, 1024);
  // max_seq inside a bucket: the top bucket is measured at max_seq.
  MatrixOptions odd = small_matrix();
  odd.max_seq = 3000;
  odd.phases = {KernelFamily::decode};
  EXPECT_EQ(plan_units(d, kDevice, odd).back().shape.kv_len, 3000);
}

TEST(Matrix, LayerTypesSharingASpecShareTheirUnits) {
  const ModelPreset m = parse_preset(R"({"name": "two", "layer_types": [
      {"name": "a", "num_q_heads": 32, "num_kv_heads": 8, "head_dim_qk": 128, "head_dim_v": 128, "causal": true},
      {"name": "b", "num_q_heads": 32, "num_kv_heads": 8, "head_dim_qk": 128, "head_dim_v": 128, "causal": true},
      {"name": "c", "num_q_heads": 32, "num_kv_heads": 4, "head_dim_qk": 128, "head_dim_v": 128, "causal": true}]})", "t");
  const auto units = plan_units(plan_deployment(m, {}), kDevice, small_matrix());
  // Prefill units are shared by all three; decode units by a and b (c packs 8 rows per kv head, a/b 4).
  size_t shared_by_three = 0, decode_c = 0;
  for (const auto& u : units) {
    if (u.layer_types.size() == 3) ++shared_by_three;
    if (u.spec.family == KernelFamily::decode && u.layer_types == std::vector<std::string>{"c"}) ++decode_c;
  }
  EXPECT_EQ(shared_by_three, 9u);
  EXPECT_EQ(decode_c, 9u);
}

TEST(Search, StagedMeasuresFewerThanExhaustiveAndFindsTheOptimumOfASmoothSpace) {
  FakeCompiler c;
  const KernelSpec spec = mimo(KernelFamily::decode);
  const PreparedSpace space = prepare_space(spec, "sm_90a", {8, 1}, c, 4);
  const std::vector<TileConfig> kept = space.kept();
  ASSERT_GT(kept.size(), 20u);
  FakeMeasurer m;
  auto fn = [&](const TileConfig& t) { return m.measure(t); };
  const SearchResult ex = search(kept, space.default_tile, SearchMode::exhaustive, fn);
  EXPECT_EQ(ex.trials.size(), kept.size());
  EXPECT_EQ(ex.trials.front().tile, space.default_tile) << "the reference is measured first";
  ASSERT_TRUE(ex.winner);
  m.measured.clear();
  const SearchResult st = search(kept, space.default_tile, SearchMode::staged, fn);
  ASSERT_TRUE(st.winner);
  EXPECT_LT(st.trials.size(), kept.size() / 2);
  EXPECT_EQ(m.measured.size(), st.trials.size()) << "each tile measured once";
  EXPECT_DOUBLE_EQ(st.trials[*st.winner].m.median_us, ex.trials[*ex.winner].m.median_us);
  const auto regret = replay_regret(kept, space.default_tile, ex.trials);
  ASSERT_TRUE(regret);
  EXPECT_NEAR(regret->regret(), 0.0, 1e-12);
  EXPECT_EQ(regret->exhaustive_measured, static_cast<int>(kept.size()));
  EXPECT_EQ(regret->staged_measured, static_cast<int>(st.trials.size()));
}

TEST(Search, WinnerRuleFailedNeverWinTiesPreferDefaultThenFewerSplits) {
  const TileConfig def{16, 64, 1, 4, 3, 32, 2};
  const TileConfig a{16, 64, 1, 4, 3, 128, 2}, b{16, 128, 1, 8, 2, 32, 1}, bad{16, 32, 1, 2, 2, 32, 1};
  auto trial = [](TileConfig t, bool ok, double us) {
    Measurement m;
    m.ok = ok;
    m.median_us = us;
    return Trial{t, m, ""};
  };
  // A failed candidate with the best time never wins.
  EXPECT_EQ(*pick_winner({trial(def, true, 10), trial(bad, false, 1), trial(b, true, 9)}, def), 2u);
  // Within the tie tolerance: the default.
  EXPECT_EQ(*pick_winner({trial(a, true, 9.99), trial(def, true, 10), trial(b, true, 12)}, def), 1u);
  // Within the tolerance without the default: fewer splits.
  EXPECT_EQ(*pick_winner({trial(a, true, 9.99), trial(def, true, 11), trial(b, true, 10)}, def), 2u);
  // Clearly faster wins regardless.
  EXPECT_EQ(*pick_winner({trial(def, true, 10), trial(a, true, 9)}, def), 1u);
  EXPECT_FALSE(pick_winner({trial(bad, false, 1)}, def).has_value());
}

TEST(Driver, TunesStoresEveryCandidateAndTheWinnerThenSkipsOnRerun) {
  testing::TempDir dir;
  auto store = cache::Store::open(dir.file("tune.sqlite"));
  MatrixOptions mo = small_matrix();
  mo.only_buckets = {"decode:r8:b4:kv1024", "prefill:q1024:kv1024"};
  const auto units = plan_units(mimo_full_tp8(), kDevice, mo);
  ASSERT_EQ(units.size(), 2u);
  FakeCompiler c;
  const auto spaces = prepare(units, c);
  FakeMeasurer m;
  // The decode default's best neighbour fails its check: it must be recorded and never chosen.
  const TileConfig decode_def = spaces.at(space_key(units[1])).default_tile;
  TileConfig poisoned = decode_def;
  poisoned.min_ctas_per_sm = decode_def.min_ctas_per_sm == 2 ? 1 : 2;
  m.fail_verify.insert(poisoned.canonical());
  DriverOptions o;
  o.tool_version = "test";
  const auto results = run_units(units, spaces, m, *store, kDevice, o);
  ASSERT_EQ(results.size(), 2u);
  for (const UnitResult& r : results) {
    EXPECT_EQ(r.status, UnitStatus::tuned) << r.reason;
    ASSERT_TRUE(r.winner);
    EXPECT_TRUE(std::isfinite(r.default_us));
    EXPECT_GE(r.speedup(), 1.0);
    const auto rows = store->candidates(r.unit.key);
    EXPECT_EQ(static_cast<int>(rows.size()), r.measured) << "one row per measured candidate";
    const auto w = store->winner(r.unit.key);
    ASSERT_TRUE(w);
    EXPECT_EQ(w->tile, r.winner->canonical());
    EXPECT_EQ(w->bucket, r.unit.bucket.name());
    EXPECT_EQ(w->device_name, kDevice.name);
    EXPECT_EQ(w->sm_count, kDevice.sm_count);
    EXPECT_EQ(w->spec, r.unit.spec.canonical());
    EXPECT_EQ(w->tool_version, "test");
    for (const auto& row : rows) {
      EXPECT_EQ(row.bucket, r.unit.bucket.name());
      if (row.tile == poisoned.canonical()) {
        EXPECT_THAT(row.status, HasSubstr("failed: verify: relative RMS error"));
        EXPECT_TRUE(std::isnan(row.median_us));
        EXPECT_NE(w->tile, row.tile);
      } else {
        EXPECT_EQ(row.status, "ok");
      }
    }
  }
  EXPECT_EQ(m.begins, 2);

  // --retune --search exhaustive (how regret is measured): every kept candidate ends up measured,
  // those the staged search measured are reused, and the winner is re-decided.
  {
    testing::TempDir copy_dir;
    auto copy = cache::Store::open(copy_dir.file("retune.sqlite"));
    FakeMeasurer staged;
    run_units(units, spaces, staged, *copy, kDevice, o);
    FakeMeasurer ex;
    DriverOptions exo = o;
    exo.mode = SearchMode::exhaustive;
    exo.retune = true;
    const auto r = run_units(units, spaces, ex, *copy, kDevice, exo);
    size_t kept = 0;
    for (const auto& u : units) kept += spaces.at(space_key(u)).kept().size();
    EXPECT_EQ(staged.measured.size() + ex.measured.size(), kept);
    for (const auto& u : r) EXPECT_EQ(u.status, UnitStatus::tuned);
  }

  // A rerun finds both winners: nothing measured, nothing begun, summaries from the cache.
  FakeMeasurer again;
  const auto rerun = run_units(units, {}, again, *store, kDevice, o);
  EXPECT_TRUE(again.measured.empty());
  EXPECT_EQ(again.begins, 0);
  for (size_t i = 0; i < rerun.size(); ++i) {
    EXPECT_EQ(rerun[i].status, UnitStatus::cached);
    EXPECT_EQ(rerun[i].winner, results[i].winner);
    EXPECT_DOUBLE_EQ(rerun[i].default_us, results[i].default_us);
  }
}

TEST(Driver, AnInterruptedRunResumesWithoutMeasuringAnythingTwice) {
  testing::TempDir dir;
  auto store = cache::Store::open(dir.file("tune.sqlite"));
  MatrixOptions mo = small_matrix();
  mo.phases = {KernelFamily::decode};
  mo.only_buckets = {"decode:r8:b1:kv1024", "decode:r8:b16:kv4096"};
  const auto units = plan_units(mimo_full_tp8(), kDevice, mo);
  ASSERT_EQ(units.size(), 2u);
  FakeCompiler c;
  const auto spaces = prepare(units, c);

  // The uninterrupted reference run, in another cache.
  auto ref_store = cache::Store::open(dir.file("ref.sqlite"));
  FakeMeasurer full;
  const auto ref = run_units(units, spaces, full, *ref_store, kDevice, {});

  // Stop after 7 candidates (as SIGINT would), then resume.
  FakeMeasurer first;
  DriverOptions stop;
  stop.stop_requested = [&] { return first.measured.size() >= 7; };
  const auto partial = run_units(units, spaces, first, *store, kDevice, stop);
  EXPECT_EQ(first.measured.size(), 7u);
  EXPECT_EQ(partial[0].status, UnitStatus::unfinished);
  EXPECT_THAT(partial[0].reason, HasSubstr("rerun to resume"));
  EXPECT_EQ(partial[1].status, UnitStatus::unfinished);
  EXPECT_FALSE(store->winner(units[0].key));
  EXPECT_EQ(store->candidates(units[0].key).size(), 7u);

  FakeMeasurer second;
  const auto resumed = run_units(units, spaces, second, *store, kDevice, {});
  std::multiset<std::string> all(first.measured.begin(), first.measured.end());
  all.insert(second.measured.begin(), second.measured.end());
  EXPECT_EQ(first.measured.size() + second.measured.size(), full.measured.size()) << "nothing measured twice";
  EXPECT_EQ(all, std::multiset<std::string>(full.measured.begin(), full.measured.end()));
  EXPECT_EQ(resumed[0].reused, 7);
  for (size_t i = 0; i < units.size(); ++i) {
    EXPECT_EQ(resumed[i].status, UnitStatus::tuned);
    EXPECT_EQ(resumed[i].winner, ref[i].winner);
  }
}

TEST(Driver, BudgetBrokenDeviceAndUnmeasurableUnits) {
  testing::TempDir dir;
  MatrixOptions mo = small_matrix();
  mo.phases = {KernelFamily::decode};
  mo.only_buckets = {"decode:r8:b1:kv1024", "decode:r8:b16:kv4096"};
  const auto units = plan_units(mimo_full_tp8(), kDevice, mo);
  FakeCompiler c;
  const auto spaces = prepare(units, c);
  {
    // A spent budget starts nothing.
    auto store = cache::Store::open(dir.file("budget.sqlite"));
    FakeMeasurer m;
    DriverOptions o;
    o.budget_s = 1e-9;
    const auto r = run_units(units, spaces, m, *store, kDevice, o);
    EXPECT_TRUE(m.measured.empty());
    for (const auto& u : r) {
      EXPECT_EQ(u.status, UnitStatus::unfinished);
      EXPECT_THAT(u.reason, HasSubstr("budget"));
    }
  }
  {
    // A device that breaks stops everything after recording the candidate that broke it.
    auto store = cache::Store::open(dir.file("broken.sqlite"));
    FakeMeasurer m;
    m.break_after = 3;
    const auto r = run_units(units, spaces, m, *store, kDevice, {});
    EXPECT_EQ(m.measured.size(), 3u);
    EXPECT_EQ(r[0].status, UnitStatus::unfinished);
    EXPECT_THAT(r[0].reason, HasSubstr("unusable"));
    EXPECT_EQ(r[1].status, UnitStatus::unfinished);
    EXPECT_EQ(store->candidates(units[0].key).size(), 3u);
  }
  {
    // A unit whose inputs cannot be prepared fails with the reason; the next one is still tuned.
    auto store = cache::Store::open(dir.file("fail.sqlite"));
    struct FirstFails : FakeMeasurer {
      void begin(const TuneUnit& u, const TileConfig& t) override {
        fail_begin = begins == 0;
        FakeMeasurer::begin(u, t);
      }
    } m;
    const auto r = run_units(units, spaces, m, *store, kDevice, {});
    EXPECT_EQ(r[0].status, UnitStatus::failed);
    EXPECT_THAT(r[0].reason, HasSubstr("90 GB"));
    EXPECT_EQ(r[1].status, UnitStatus::tuned);
    EXPECT_FALSE(store->winner(units[0].key));
  }
}

TEST(Driver, SummaryFromTheCacheSeesOtherProcessesWork) {
  testing::TempDir dir;
  auto store = cache::Store::open(dir.file("tune.sqlite"));
  MatrixOptions mo = small_matrix();
  mo.only_buckets = {"prefill:q256:kv1024"};
  const auto units = plan_units(mimo_full_tp8(), kDevice, mo);
  ASSERT_EQ(units.size(), 1u);
  const TileConfig def = default_tile(units[0].spec, kDevice.arch);
  EXPECT_EQ(summarize_from_cache(units[0], *store, def).status, UnitStatus::planned);
  FakeCompiler c;
  FakeMeasurer m;
  run_units(units, prepare(units, c), m, *store, kDevice, {});
  const UnitResult s = summarize_from_cache(units[0], *store, def);
  EXPECT_EQ(s.status, UnitStatus::cached);
  EXPECT_DOUBLE_EQ(s.default_us, FakeMeasurer::time_of(def));
  ASSERT_TRUE(s.winner);
  EXPECT_DOUBLE_EQ(s.winner_us, FakeMeasurer::time_of(*s.winner));
}

} // namespace
} // namespace attnjit::tuner
