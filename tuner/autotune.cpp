#include "tuner/autotune.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <limits>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>

namespace attnjit::tuner {

std::string_view to_string(SearchMode m) { return m == SearchMode::staged ? "staged" : "exhaustive"; }

std::string_view to_string(UnitStatus s) {
  switch (s) {
  case UnitStatus::tuned: return "tuned";
  case UnitStatus::cached: return "cached";
  case UnitStatus::failed: return "failed";
  case UnitStatus::unfinished: return "unfinished";
  case UnitStatus::planned: return "planned";
  }
  return "?";
}

// --- the matrix --------------------------------------------------------------------------------

std::vector<std::pair<ShapeBucket, MeasureShape>> bucket_matrix(KernelFamily phase, int group, const MatrixOptions& o) {
  std::vector<std::pair<ShapeBucket, MeasureShape>> out;
  std::set<std::string> seen;
  const int max_batch = std::max(1, o.max_batch);
  const int max_seq = std::max(1, o.max_seq);
  auto add = [&](const MeasureShape& s) {
    const ShapeBucket b = shape_bucket(phase, s.batch, s.q_len, s.kv_len, group);
    if (seen.insert(b.name()).second) out.emplace_back(b, s);
  };
  const int64_t kv_last = bucket_edge(max_seq, kFirstKvEdge, kLastKvEdge);
  if (phase == KernelFamily::decode) {
    const int64_t b_last = bucket_edge(max_batch, kFirstBatchEdge, kLastBatchEdge);
    for (int64_t b = kFirstBatchEdge; b <= b_last; b *= 4)
      for (int64_t kv = kFirstKvEdge; kv <= kv_last; kv *= 4)
        add({static_cast<int>(std::min<int64_t>(b, max_batch)), 1, static_cast<int>(std::min<int64_t>(kv, max_seq))});
  } else {
    const int64_t q_last = bucket_edge(max_seq, kFirstQEdge, kLastQEdge);
    for (int64_t q = kFirstQEdge; q <= q_last; q *= 4)
      for (int64_t kv = std::max<int64_t>(q, kFirstKvEdge); kv <= kv_last; kv *= 4) {
        MeasureShape s;
        s.q_len = static_cast<int>(std::min<int64_t>(q, max_seq));
        s.kv_len = std::max(s.q_len, static_cast<int>(std::min<int64_t>(kv, max_seq)));
        s.batch = std::clamp(std::max(1, o.prefill_tokens) / s.q_len, 1, max_batch);
        add(s);
      }
  }
  return out;
}

std::vector<TuneUnit> plan_units(const Deployment& d, const TuningDevice& device, const MatrixOptions& o) {
  std::vector<TuneUnit> units;
  for (const KernelNeed& need : d.needs) {
    if (need.skipped()) continue;
    if (std::find(o.phases.begin(), o.phases.end(), need.phase) == o.phases.end()) continue;
    const int group = need.heads.num_q_heads / need.heads.num_kv_heads;
    for (const auto& [bucket, shape] : bucket_matrix(need.phase, group, o)) {
      if (!o.only_buckets.empty() &&
          std::find(o.only_buckets.begin(), o.only_buckets.end(), bucket.name()) == o.only_buckets.end())
        continue;
      const std::string key = tuning_key(*need.spec, device, bucket);
      auto it = std::find_if(units.begin(), units.end(), [&](const TuneUnit& u) { return u.key == key; });
      if (it != units.end()) {
        if (std::find(it->layer_types.begin(), it->layer_types.end(), need.layer_type) == it->layer_types.end())
          it->layer_types.push_back(need.layer_type);
        continue;
      }
      units.push_back(TuneUnit{{need.layer_type}, *need.spec, need.heads, bucket, shape, key, need.sliding_window});
    }
  }
  return units;
}

std::string space_key(const TuneUnit& u) {
  if (u.spec.family == KernelFamily::decode) return fmt::format("{}|rows={}", u.spec.canonical(), u.group());
  return u.spec.canonical();
}

// --- spaces ------------------------------------------------------------------------------------

std::vector<TileConfig> PreparedSpace::kept() const {
  std::vector<TileConfig> out;
  for (const SpaceEntry& e : entries)
    if (e.kept) out.push_back(e.tile);
  return out;
}

PreparedSpace prepare_space(const KernelSpec& spec, std::string_view arch, const SpaceOptions& options,
                            CandidateCompiler& compiler, int jobs, const std::function<void()>& on_compiled) {
  const auto start = std::chrono::steady_clock::now();
  PreparedSpace p{spec, std::string(arch), options, default_tile(spec, arch), enumerate_space(spec, arch, options), {}, 0};
  p.facts.assign(p.entries.size(), CompileFacts{});
  std::vector<size_t> todo;
  for (size_t i = 0; i < p.entries.size(); ++i)
    if (p.entries[i].kept) todo.push_back(i);
  std::atomic<size_t> next{0};
  std::mutex mu;
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < todo.size();) {
      const size_t e = todo[i];
      CompileFacts f;
      try {
        f = compiler.compile(spec, p.entries[e].tile, arch);
      } catch (const std::exception& ex) {
        f.ok = false;
        f.error = ex.what();
      }
      p.facts[e] = std::move(f);
      if (on_compiled) {
        std::lock_guard lock(mu);
        on_compiled();
      }
    }
  };
  {
    const int threads = static_cast<int>(std::clamp<size_t>(todo.size(), 1, static_cast<size_t>(std::max(1, jobs))));
    std::vector<std::jthread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
  }
  // Entries pruned before compiling keep their reason; prune_by_compile skips them.
  prune_by_compile(p.entries, p.facts, p.default_tile);
  p.compile_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return p;
}

// --- search ------------------------------------------------------------------------------------

std::optional<size_t> pick_winner(const std::vector<Trial>& trials, const TileConfig& default_tile) {
  double best = std::numeric_limits<double>::infinity();
  for (const Trial& t : trials)
    if (t.m.ok && t.m.median_us < best) best = t.m.median_us;
  if (!std::isfinite(best)) return std::nullopt;
  std::optional<size_t> pick;
  for (size_t i = 0; i < trials.size(); ++i) {
    const Trial& t = trials[i];
    if (!t.m.ok || t.m.median_us > best * (1.0 + kTieTolerance)) continue;
    if (!pick) {
      pick = i;
      continue;
    }
    const Trial& p = trials[*pick];
    if (p.tile == default_tile) continue;
    if (t.tile == default_tile || t.tile.max_splits < p.tile.max_splits) pick = i;
  }
  return pick;
}

SearchResult search(const std::vector<TileConfig>& kept, const TileConfig& default_tile, SearchMode mode,
                    const std::function<Measurement(const TileConfig&)>& measure) {
  SearchResult r;
  auto find = [&](const TileConfig& t) -> const Trial* {
    for (const Trial& x : r.trials)
      if (x.tile == t) return &x;
    return nullptr;
  };
  auto run = [&](const TileConfig& t, const char* stage) -> const Trial& {
    if (const Trial* x = find(t)) return *x;
    Measurement m = measure(t);
    r.trials.push_back(Trial{t, std::move(m), stage});
    return r.trials.back();
  };
  run(default_tile, "reference");
  if (mode == SearchMode::exhaustive) {
    for (const TileConfig& t : kept) run(t, "exhaustive");
    r.winner = pick_winner(r.trials, default_tile);
    return r;
  }

  // Structures in the order of the space.
  std::vector<std::string> order;
  std::map<std::string, std::vector<TileConfig>> groups;
  for (const TileConfig& t : kept) {
    const std::string s = structure_of(t);
    if (!groups.contains(s)) order.push_back(s);
    groups[s].push_back(t);
  }
  auto probe_of = [&](const std::vector<TileConfig>& g) {
    int stages = -1;
    for (const TileConfig& t : g)
      if (t.stages == default_tile.stages) stages = t.stages;
    if (stages < 0) {
      stages = g.front().stages;
      for (const TileConfig& t : g) stages = std::min(stages, t.stages);
    }
    int splits = 0;
    for (const TileConfig& t : g)
      if (t.stages == stages) splits = std::max(splits, t.max_splits);
    const TileConfig* best = nullptr;
    for (const TileConfig& t : g)
      if (t.stages == stages && t.max_splits == splits && (!best || t.min_ctas_per_sm > best->min_ctas_per_sm)) best = &t;
    return *best;
  };
  std::vector<std::pair<double, std::string>> ranked;
  std::map<std::string, TileConfig> probes;
  for (const std::string& s : order) {
    const TileConfig probe = probe_of(groups[s]);
    probes[s] = probe;
    const Trial& t = run(probe, "stage 1");
    if (t.m.ok) ranked.emplace_back(t.m.median_us, s);
  }
  std::stable_sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  if (ranked.size() > static_cast<size_t>(kTopStructures)) ranked.resize(kTopStructures);

  for (const auto& [us, s] : ranked) {
    TileConfig current = probes[s];
    double current_us = us;
    enum Axis { stages, occupancy, splits };
    for (Axis axis : {stages, occupancy, splits}) {
      TileConfig best = current;
      double best_us = current_us;
      for (const TileConfig& t : groups[s]) {
        TileConfig probe = current;
        if (axis == stages) probe.stages = t.stages;
        if (axis == occupancy) probe.min_ctas_per_sm = t.min_ctas_per_sm;
        if (axis == splits) probe.max_splits = t.max_splits;
        if (!(probe == t) || t == current) continue;
        const Trial& x = run(t, "stage 2");
        if (x.m.ok && x.m.median_us < best_us) best = t, best_us = x.m.median_us;
      }
      current = best;
      current_us = best_us;
    }
  }
  r.winner = pick_winner(r.trials, default_tile);
  return r;
}

std::optional<Regret> replay_regret(const std::vector<TileConfig>& kept, const TileConfig& default_tile,
                                    const std::vector<Trial>& exhaustive) {
  const std::optional<size_t> best = pick_winner(exhaustive, default_tile);
  if (!best) return std::nullopt;
  auto lookup = [&](const TileConfig& t) {
    for (const Trial& x : exhaustive)
      if (x.tile == t) return x.m;
    Measurement m;
    m.failure = "not measured by the exhaustive run";
    return m;
  };
  const SearchResult staged = search(kept, default_tile, SearchMode::staged, lookup);
  if (!staged.winner) return std::nullopt;
  Regret r;
  r.best = exhaustive[*best].tile;
  r.best_us = exhaustive[*best].m.median_us;
  r.staged = staged.trials[*staged.winner].tile;
  r.staged_us = staged.trials[*staged.winner].m.median_us;
  r.staged_measured = static_cast<int>(staged.trials.size());
  r.exhaustive_measured = static_cast<int>(exhaustive.size());
  return r;
}

// --- the driver --------------------------------------------------------------------------------

namespace {

struct StopTuning {
  std::string reason;
};
struct UnitFailure {
  std::string reason;
};

Measurement from_record(const cache::TuningRecord& rec) {
  Measurement m;
  m.ok = rec.status == "ok";
  m.median_us = rec.median_us;
  if (!m.ok) m.failure = rec.status.starts_with("failed: ") ? rec.status.substr(8) : rec.status;
  return m;
}

} // namespace

std::vector<UnitResult> run_units(const std::vector<TuneUnit>& units, const std::map<std::string, PreparedSpace>& spaces,
                                  Measurer& measurer, cache::Store& store, const TuningDevice& device,
                                  const DriverOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<UnitResult> results;
  std::string stop_reason;
  auto check_stop = [&] {
    if (!stop_reason.empty()) throw StopTuning{stop_reason};
    if (o.budget_s > 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > o.budget_s)
      stop_reason = fmt::format("the budget of {:.0f} s is spent; rerun to resume", o.budget_s);
    else if (o.stop_requested && o.stop_requested())
      stop_reason = "interrupted; rerun to resume";
    if (!stop_reason.empty()) throw StopTuning{stop_reason};
  };

  for (size_t index = 0; index < units.size(); ++index) {
    const TuneUnit& unit = units[index];
    const auto unit_start = std::chrono::steady_clock::now();
    UnitResult r;
    r.unit = unit;
    const TileConfig def = default_tile(unit.spec, device.arch);
    r.default_tile = def;

    if (!stop_reason.empty()) {
      r = summarize_from_cache(unit, store, def);
      if (r.status != UnitStatus::cached) {
        r.status = UnitStatus::unfinished;
        r.reason = stop_reason;
      }
      results.push_back(r);
      if (o.on_unit_done) o.on_unit_done(results.back(), index, units.size());
      continue;
    }
    if (!o.retune && store.winner(unit.key)) {
      r = summarize_from_cache(unit, store, def);
      results.push_back(r);
      if (o.on_unit_done) o.on_unit_done(results.back(), index, units.size());
      continue;
    }
    auto sp = spaces.find(space_key(unit));
    if (sp == spaces.end()) throw std::logic_error("run_units: no prepared space for " + space_key(unit));
    const PreparedSpace& space = sp->second;

    std::map<std::string, cache::TuningRecord> existing;
    for (auto& rec : store.candidates(unit.key)) existing.emplace(rec.tile, std::move(rec));
    bool begun = false;
    struct EndGuard {
      Measurer& m;
      const bool& begun;
      ~EndGuard() {
        if (begun) m.end();
      }
    } end_guard{measurer, begun};
    auto measure = [&](const TileConfig& tile) -> Measurement {
      if (auto it = existing.find(tile.canonical()); it != existing.end()) {
        ++r.reused;
        return from_record(it->second);
      }
      check_stop();
      if (!begun) {
        try {
          measurer.begin(unit, space.default_tile);
        } catch (const std::exception& e) {
          throw UnitFailure{fmt::format("reference ({}): {}", space.default_tile.canonical(), e.what())};
        }
        begun = true;
      }
      Measurement m = measurer.measure(tile);
      cache::TuningRecord rec;
      rec.tuning_key = unit.key;
      rec.tile = tile.canonical();
      rec.spec = unit.spec.canonical();
      rec.median_us = m.ok ? m.median_us : NAN;
      rec.status = m.ok ? "ok" : "failed: " + m.failure;
      rec.device_name = device.name;
      rec.arch = device.arch;
      rec.sm_count = device.sm_count;
      rec.bucket = unit.bucket.name();
      rec.tool_version = o.tool_version;
      store.put_candidate(rec);
      ++r.measured;
      if (o.on_candidate) o.on_candidate(r, Trial{tile, m, ""});
      if (measurer.broken()) stop_reason = fmt::format("the GPU is unusable after {}: {}; rerun to resume",
                                                       tile.canonical(), m.failure);
      return m;
    };

    const std::vector<TileConfig> kept = space.kept();
    const bool default_kept = std::find(kept.begin(), kept.end(), space.default_tile) != kept.end();
    try {
      if (!default_kept) {
        std::string why = "the default tile was pruned";
        for (const SpaceEntry& e : space.entries)
          if (e.tile == space.default_tile) why = fmt::format("the default tile {}: {}", e.tile.canonical(), e.reason);
        throw UnitFailure{why};
      }
      SearchResult s = search(kept, space.default_tile, o.mode, measure);
      for (const Trial& t : s.trials) {
        if (!t.m.ok) ++r.failed_candidates;
        else r.max_rel_error = std::max(r.max_rel_error, t.m.rel_error);
        if (t.tile == space.default_tile && t.m.ok) r.default_us = t.m.median_us;
      }
      if (!s.winner) throw UnitFailure{"no candidate passed (the reference itself failed)"};
      const Trial& w = s.trials[*s.winner];
      r.winner = w.tile;
      r.winner_us = w.m.median_us;
      cache::WinnerRecord rec;
      rec.tuning_key = unit.key;
      rec.tile = w.tile.canonical();
      rec.spec = unit.spec.canonical();
      rec.median_us = w.m.median_us;
      rec.device_name = device.name;
      rec.arch = device.arch;
      rec.sm_count = device.sm_count;
      rec.bucket = unit.bucket.name();
      rec.tool_version = o.tool_version;
      store.put_winner(rec);
      r.status = UnitStatus::tuned;
    } catch (const StopTuning& s) {
      r.status = UnitStatus::unfinished;
      r.reason = s.reason;
    } catch (const UnitFailure& f) {
      r.status = UnitStatus::failed;
      r.reason = f.reason;
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - unit_start).count();
    results.push_back(r);
    if (o.on_unit_done) o.on_unit_done(results.back(), index, units.size());
  }
  return results;
}

UnitResult summarize_from_cache(const TuneUnit& unit, cache::Store& store, const TileConfig& default_tile) {
  UnitResult r;
  r.unit = unit;
  r.default_tile = default_tile;
  const std::vector<cache::TuningRecord> rows = store.candidates(unit.key);
  for (const auto& rec : rows) {
    if (rec.tile == default_tile.canonical() && rec.status == "ok") r.default_us = rec.median_us;
    if (rec.status != "ok") ++r.failed_candidates;
  }
  r.reused = static_cast<int>(rows.size());
  if (auto w = store.winner(unit.key)) {
    r.status = UnitStatus::cached;
    try {
      r.winner = parse_tile(w->tile);
    } catch (const std::exception&) {
      r.status = UnitStatus::failed;
      r.reason = fmt::format("the winner row's tile '{}' cannot be read", w->tile);
    }
    r.winner_us = w->median_us;
  } else {
    r.status = rows.empty() ? UnitStatus::planned : UnitStatus::unfinished;
    if (!rows.empty()) r.reason = fmt::format("{} candidate{} measured, no winner yet", rows.size(), rows.size() == 1 ? "" : "s");
  }
  return r;
}

} // namespace attnjit::tuner
