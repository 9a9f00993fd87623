#include "tuner/tune.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "cache/store.h"
#include "codegen/errors.h"
#include "codegen/nvrtc_compiler.h"
#include "runtime/binary_builder.h"
#include "runtime/context.h"
#include "runtime/cuda_driver.h"
#include "tuner/gpu_measurer.h"
#include "tuner/hf_config.h"
#include "tuner/table.h"

namespace attnjit::tuner {

GpuProbe probe_gpu(int ordinal) {
  GpuProbe p;
  try {
    const DeviceInfo info = query_device(CudaDriver::get(), ordinal);
    p.found = true;
    p.name = info.name;
    p.arch = info.arch;
    p.sm_count = info.sm_count;
  } catch (const SpecError& e) {
    p.why_not = fmt::format("no CUDA device {} ({})", ordinal, e.what());
  } catch (const NoDeviceError& e) {
    p.why_not = e.what();
  } catch (const CudaError& e) {
    p.why_not = e.what();
  }
  return p;
}

size_t TuneReport::count(UnitStatus s) const {
  return static_cast<size_t>(std::count_if(units.begin(), units.end(), [&](const UnitResult& u) { return u.status == s; }));
}

bool TuneReport::ok() const {
  return worker_failures.empty() && count(UnitStatus::failed) == 0;
}

ModelPreset load_model(const TuneOptions& o) {
  if (!o.hf_config.empty()) {
    if (!o.model.empty()) throw DeploymentError("give either --model or --hf-config, not both");
    return load_hf_config(o.hf_config);
  }
  if (o.model.empty()) throw DeploymentError("no model: give --model NAME|PATH or --hf-config PATH");
  return load_preset(o.model);
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string reason_kind(const std::string& reason) { return reason.substr(0, reason.find(':')); }

SpaceSummary summarize_space(const KernelSpec& spec, std::string_view arch, const std::vector<SpaceEntry>& entries,
                             double compile_s) {
  SpaceSummary s;
  s.spec = spec.canonical();
  s.arch = std::string(arch);
  s.enumerated = entries.size();
  for (const SpaceEntry& e : entries) {
    if (e.kept) ++s.kept;
    else ++s.pruned[reason_kind(e.reason)];
  }
  s.compile_s = compile_s;
  return s;
}

SpaceOptions space_options(const TuneUnit& u) { return SpaceOptions{u.group(), u.shape.q_len}; }

void check_matrix(const MatrixOptions& m) {
  if (m.max_batch < 1 || m.max_batch > 65535)
    throw DeploymentError(fmt::format("max_batch: got {}; allowed: 1 to 65535", m.max_batch));
  if (m.max_seq < 1 || m.max_seq > kLastKvEdge)
    throw DeploymentError(fmt::format("max_seq: got {}; allowed: 1 to {}", m.max_seq, kLastKvEdge));
  if (m.phases.empty()) throw DeploymentError("phases: none given; allowed: prefill, decode");
  for (const std::string& b : m.only_buckets)
    if (!parse_bucket(b))
      throw DeploymentError(fmt::format("bucket '{}': not a bucket name (e.g. decode:r8:b16:kv4096, prefill:q1024:kv4096)", b));
}

// Regret of each exhaustively tuned unit, from its candidate rows.
std::vector<Regret> regrets_from_cache(const std::vector<UnitResult>& units, cache::Store& store,
                                       const std::map<std::string, PreparedSpace>& spaces) {
  std::vector<Regret> out;
  for (const UnitResult& u : units) {
    // Only units searched to the end in this run (a cached or unfinished one may lack rows).
    if (!u.winner || u.status != UnitStatus::tuned) continue;
    std::vector<Trial> trials;
    std::vector<TileConfig> kept;
    auto sp = spaces.find(space_key(u.unit));
    for (const cache::TuningRecord& rec : store.candidates(u.unit.key)) {
      Trial t;
      try {
        t.tile = parse_tile(rec.tile);
      } catch (const std::exception&) {
        continue;
      }
      t.m.ok = rec.status == "ok";
      t.m.median_us = rec.median_us;
      t.m.failure = rec.status;
      kept.push_back(t.tile);
      trials.push_back(t);
    }
    // The space's own order (the staged search groups and ranks in it), when it was prepared.
    if (sp != spaces.end()) {
      std::vector<TileConfig> ordered;
      for (const TileConfig& t : sp->second.kept())
        if (std::find(kept.begin(), kept.end(), t) != kept.end()) ordered.push_back(t);
      kept = std::move(ordered);
    }
    if (std::find(kept.begin(), kept.end(), u.default_tile) == kept.end()) continue;
    if (auto r = replay_regret(kept, u.default_tile, trials)) {
      r->bucket = u.unit.bucket.name();
      r->spec = u.unit.spec.canonical();
      out.push_back(*r);
    }
  }
  return out;
}

} // namespace

TuneReport tune(const TuneOptions& o, const TuneHooks& hooks) {
  const auto start = std::chrono::steady_clock::now();
  TuneReport rep;
  rep.deployment = plan_deployment(load_model(o), o.deployment);
  rep.mode = o.mode;
  rep.dry_run = o.dry_run;
  check_matrix(o.matrix);
  for (const KernelNeed& n : rep.deployment.needs) {
    if (n.skipped()) rep.skipped.push_back(n);
  }
  rep.cache_path = o.cache_path.empty() ? cache::default_cache_path() : o.cache_path;
  if (o.devices.empty()) throw DeploymentError("devices: none given");
  for (int d : o.devices)
    if (d < 0) throw DeploymentError(fmt::format("devices: got {}; allowed: CUDA ordinals (0, 1, ...)", d));

  rep.gpu = probe_gpu(o.devices.front());
  const std::string model_arg = !o.hf_config.empty() ? o.hf_config : o.model;
  if (!rep.gpu.found && !o.dry_run)
    throw NoGpuError(fmt::format(
        "no GPU found ({}): attn-tune measures candidates on the local GPU, so nothing was tuned. To build a "
        "kernel cache on a machine without a GPU (default tile configs, plus any tuned winners the cache "
        "already holds), run: attn-cache precompile --model {} --tp {} --arch sm_90a --cache PATH",
        rep.gpu.why_not, model_arg, o.deployment.tensor_parallel));
  if (rep.gpu.found) {
    for (size_t i = 1; i < o.devices.size(); ++i) {
      const GpuProbe other = probe_gpu(o.devices[i]);
      if (!other.found) throw DeploymentError(fmt::format("devices: GPU {}: {}", o.devices[i], other.why_not));
      if (other.name != rep.gpu.name || other.arch != rep.gpu.arch || other.sm_count != rep.gpu.sm_count)
        throw DeploymentError(fmt::format("devices: GPU {} is {} and GPU {} is {}: one run tunes one kind of GPU",
                                          o.devices.front(), rep.gpu.name, o.devices[i], other.name));
    }
    rep.device = TuningDevice{rep.gpu.name, rep.gpu.sm_count, rep.gpu.arch};
  } else {
    rep.device = TuningDevice{"(no GPU)", 0, std::string(kDefaultArch)};
  }
  const std::vector<TuneUnit> units = plan_units(rep.deployment, rep.device, o.matrix);

  // Spaces: one per space_key, in unit order.
  std::vector<const TuneUnit*> space_units;
  {
    std::set<std::string> seen;
    for (const TuneUnit& u : units)
      if (seen.insert(space_key(u)).second) space_units.push_back(&u);
  }

  if (o.dry_run) {
    rep.message = rep.gpu.found
                      ? fmt::format("dry run on {} ({}): {} units to tune; nothing is compiled or measured",
                                    rep.gpu.name, rep.gpu.arch, units.size())
                      : fmt::format("dry run without a GPU ({}): {} units, search spaces for {}; keys depend on the "
                                    "GPU and are not shown",
                                    rep.gpu.why_not, units.size(), kDefaultArch);
    if (hooks.announce) hooks.announce(rep.message);
    for (const TuneUnit* u : space_units)
      rep.spaces.push_back(summarize_space(u->spec, rep.device.arch,
                                           enumerate_space(u->spec, rep.device.arch, space_options(*u)), 0));
    std::unique_ptr<cache::Store> store;
    if (rep.gpu.found && std::filesystem::exists(rep.cache_path)) {
      cache::OpenOptions ro;
      ro.read_only = true;
      store = cache::Store::open(rep.cache_path, ro);
    }
    for (const TuneUnit& u : units) {
      UnitResult r;
      if (store) {
        r = summarize_from_cache(u, *store, default_tile(u.spec, rep.device.arch));
      } else {
        r.unit = u;
        r.default_tile = default_tile(u.spec, rep.device.arch);
      }
      rep.units.push_back(std::move(r));
    }
    rep.wall_s = seconds_since(start);
    return rep;
  }

  const bool parent = o.devices.size() > 1 && o.worker_count == 0;
  rep.message = parent ? fmt::format("{} ({}, {} SMs) x {}: {} units over {} worker processes; cache {}", rep.gpu.name,
                                     rep.gpu.arch, rep.gpu.sm_count, o.devices.size(), units.size(), o.devices.size(),
                                     rep.cache_path)
                       : fmt::format("{} ({}, {} SMs): {} units, {} search; cache {}", rep.gpu.name, rep.gpu.arch,
                                     rep.gpu.sm_count, units.size(), to_string(o.mode), rep.cache_path);
  if (hooks.announce) hooks.announce(rep.message);
  std::unique_ptr<cache::Store> store = cache::Store::open(rep.cache_path);
  std::map<std::string, PreparedSpace> spaces;

  if (parent) {
    if (!o.run_worker) throw std::logic_error("tune: several devices but no way to start workers");
    std::vector<int> status(o.devices.size(), -1);
    std::atomic<int> running{static_cast<int>(o.devices.size())};
    {
      std::vector<std::jthread> threads;
      for (size_t i = 0; i < o.devices.size(); ++i)
        threads.emplace_back([&, i] {
          status[i] = o.run_worker(static_cast<int>(i), static_cast<int>(o.devices.size()), o.devices[i]);
          --running;
        });
      while (running > 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        if (!hooks.progress) continue;
        size_t done = 0;
        for (const TuneUnit& u : units)
          if (store->winner(u.key)) ++done;
        const double elapsed = seconds_since(start);
        hooks.progress(TuneProgress{TuneProgress::Phase::workers, done, units.size(), elapsed,
                                    done > 0 ? elapsed / done * (units.size() - done) : -1.0, ""});
      }
    }
    for (size_t i = 0; i < status.size(); ++i)
      if (status[i] != 0)
        rep.worker_failures.push_back(fmt::format("worker {} (GPU {}) exited with status {}", i, o.devices[i], status[i]));
    for (const TuneUnit& u : units) {
      UnitResult r = summarize_from_cache(u, *store, default_tile(u.spec, rep.device.arch));
      if (r.status == UnitStatus::planned) {
        r.status = UnitStatus::unfinished;
        r.reason = "not reached";
      }
      rep.units.push_back(std::move(r));
    }
  } else {
    std::vector<TuneUnit> mine;
    for (size_t i = 0; i < units.size(); ++i)
      if (o.worker_count == 0 || static_cast<int>(i % o.worker_count) == o.worker_index) mine.push_back(units[i]);
    // Compile only for units without a winner.
    std::vector<const TuneUnit*> need_space;
    {
      std::set<std::string> seen;
      for (const TuneUnit& u : mine)
        if ((o.retune || !store->winner(u.key)) && seen.insert(space_key(u)).second) need_space.push_back(&u);
    }
    if (!need_space.empty()) {
      auto compiler = make_nvrtc_compiler(*store);
      size_t total = 0, done = 0;
      for (const TuneUnit* u : need_space)
        for (const SpaceEntry& e : enumerate_space(u->spec, rep.device.arch, space_options(*u))) total += e.kept;
      const auto compile_start = std::chrono::steady_clock::now();
      const int jobs = o.jobs > 0 ? o.jobs : NvrtcCompiler::max_parallel();
      for (const TuneUnit* u : need_space) {
        PreparedSpace p = prepare_space(u->spec, rep.device.arch, space_options(*u), *compiler, jobs, [&] {
          ++done;
          if (hooks.progress) {
            const double el = seconds_since(compile_start);
            hooks.progress(TuneProgress{TuneProgress::Phase::compile, done, total, el,
                                        el / done * (total - done), ""});
          }
        });
        rep.spaces.push_back(summarize_space(u->spec, rep.device.arch, p.entries, p.compile_s));
        spaces.emplace(space_key(*u), std::move(p));
      }
    }
    std::unique_ptr<Measurer> measurer;
    if (!need_space.empty()) measurer = make_gpu_measurer(GpuMeasureOptions{o.devices.front(), rep.cache_path, o.target_ms});
    struct NullMeasurer final : Measurer {
      void begin(const TuneUnit&, const TileConfig&) override { throw std::runtime_error("nothing to measure"); }
      Measurement measure(const TileConfig&) override { return {}; }
    } null_measurer;
    DriverOptions d;
    d.mode = o.mode;
    d.retune = o.retune;
    d.budget_s = o.budget_s > 0 ? std::max(1e-3, o.budget_s - seconds_since(start)) : 0;
    d.stop_requested = hooks.stop_requested;
    d.tool_version = std::string(tool_version());
    const auto measure_start = std::chrono::steady_clock::now();
    size_t measured_units = 0;
    size_t todo = 0;
    for (const TuneUnit& u : mine)
      if (o.retune || !store->winner(u.key)) ++todo;
    size_t finished = 0;
    std::string last;
    d.on_candidate = [&](const UnitResult& r, const Trial& t) {
      last = fmt::format("{} {} {}", r.unit.bucket.name(), t.tile.canonical(),
                         t.m.ok ? fmt::format("{:.1f} us", t.m.median_us) : "failed: " + t.m.failure.substr(0, 60));
      if (hooks.progress) {
        const double el = seconds_since(measure_start);
        hooks.progress(TuneProgress{TuneProgress::Phase::measure, finished, todo, el,
                                    measured_units > 0 ? el / measured_units * (todo - finished) : -1.0, last});
      }
    };
    d.on_unit_done = [&](const UnitResult& r, size_t, size_t) {
      if (r.status == UnitStatus::cached) return;
      ++finished;
      if (r.measured > 0) ++measured_units;
      if (hooks.progress) {
        const double el = seconds_since(measure_start);
        hooks.progress(TuneProgress{TuneProgress::Phase::measure, finished, todo, el,
                                    measured_units > 0 ? el / measured_units * (todo - finished) : -1.0,
                                    fmt::format("{} {}: {}", r.unit.bucket.name(), to_string(r.status),
                                                r.winner ? r.winner->canonical() : r.reason)});
      }
    };
    rep.units = run_units(mine, spaces, measurer ? *measurer : static_cast<Measurer&>(null_measurer), *store,
                          rep.device, d);
  }
  if (o.regret) rep.regrets = regrets_from_cache(rep.units, *store, spaces);
  rep.wall_s = seconds_since(start);
  return rep;
}

// --- reports -------------------------------------------------------------------------------------

namespace {

std::string shape_text(const TuneUnit& u) {
  if (u.spec.family == KernelFamily::decode) return fmt::format("b{} kv{}", u.shape.batch, u.shape.kv_len);
  return fmt::format("b{} q{} kv{}", u.shape.batch, u.shape.q_len, u.shape.kv_len);
}

std::string us(double v) { return std::isfinite(v) ? fmt::format("{:.1f}", v) : "-"; }

double geomean(const std::vector<double>& xs) {
  if (xs.empty()) return NAN;
  double s = 0;
  for (double x : xs) s += std::log(x);
  return std::exp(s / xs.size());
}

} // namespace

std::string to_json(const TuneReport& r) {
  using nlohmann::json;
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  json units = json::array();
  for (const UnitResult& u : r.units) {
    json j = {{"layer_types", u.unit.layer_types},
              {"phase", to_string(u.unit.spec.family)},
              {"spec", u.unit.spec.canonical()},
              {"bucket", u.unit.bucket.name()},
              {"shape", {{"batch", u.unit.shape.batch}, {"q_len", u.unit.shape.q_len}, {"kv_len", u.unit.shape.kv_len}}},
              {"heads", {{"num_q_heads", u.unit.heads.num_q_heads}, {"num_kv_heads", u.unit.heads.num_kv_heads}}},
              {"status", to_string(u.status)},
              {"default_tile", u.default_tile.canonical()},
              {"default_us", num(u.default_us)},
              {"winner", u.winner ? json(u.winner->canonical()) : json(nullptr)},
              {"winner_us", num(u.winner_us)},
              {"speedup", num(u.speedup())},
              {"measured", u.measured},
              {"reused", u.reused},
              {"failed_candidates", u.failed_candidates},
              {"max_rel_error", u.max_rel_error},
              {"seconds", u.seconds}};
    if (!r.dry_run || r.gpu.found) j["key"] = u.unit.key;
    if (!u.reason.empty()) j["reason"] = u.reason;
    units.push_back(std::move(j));
  }
  json spaces = json::array();
  for (const SpaceSummary& s : r.spaces)
    spaces.push_back({{"spec", s.spec}, {"arch", s.arch}, {"enumerated", s.enumerated}, {"kept", s.kept},
                      {"pruned", s.pruned}, {"compile_s", s.compile_s}});
  json skipped = json::array();
  for (const KernelNeed& n : r.skipped)
    skipped.push_back({{"layer_type", n.layer_type}, {"phase", to_string(n.phase)}, {"reason", n.skip_reason}});
  json regrets = json::array();
  for (const Regret& g : r.regrets)
    regrets.push_back({{"bucket", g.bucket}, {"spec", g.spec}, {"best", g.best.canonical()}, {"best_us", g.best_us},
                       {"staged", g.staged.canonical()}, {"staged_us", g.staged_us}, {"regret", g.regret()},
                       {"staged_measured", g.staged_measured}, {"exhaustive_measured", g.exhaustive_measured}});
  json totals = json::object();
  for (UnitStatus s : {UnitStatus::tuned, UnitStatus::cached, UnitStatus::failed, UnitStatus::unfinished, UnitStatus::planned})
    totals[std::string(to_string(s))] = r.count(s);
  json out = {{"model", r.deployment.model.name},
              {"tensor_parallel", r.deployment.options.tensor_parallel},
              {"dtype", to_string(r.deployment.options.dtype)},
              {"page_size", r.deployment.options.page_size},
              {"cache", r.cache_path},
              {"search", to_string(r.mode)},
              {"dry_run", r.dry_run},
              {"message", r.message},
              {"units", std::move(units)},
              {"spaces", std::move(spaces)},
              {"skipped", std::move(skipped)},
              {"totals", std::move(totals)},
              {"wall_s", r.wall_s}};
  out["gpu"] = r.gpu.found ? json{{"name", r.gpu.name}, {"arch", r.gpu.arch}, {"sm_count", r.gpu.sm_count}} : json(nullptr);
  if (!r.regrets.empty()) out["regrets"] = std::move(regrets);
  if (!r.worker_failures.empty()) out["worker_failures"] = r.worker_failures;
  return out.dump(2);
}

std::string format_table(const TuneReport& r) {
  const Deployment& d = r.deployment;
  std::string out = fmt::format("{}, tensor parallel {}, {}, page size {}{}\n", d.model.name, d.options.tensor_parallel,
                                to_string(d.options.dtype), d.options.page_size,
                                r.gpu.found ? fmt::format("; {} ({}, {} SMs)", r.gpu.name, r.gpu.arch, r.gpu.sm_count) : "");
  for (const KernelNeed& n : r.skipped)
    out += fmt::format("  {} {}: skipped: {}\n", n.layer_type, to_string(n.phase), n.skip_reason);
  for (const SpaceSummary& s : r.spaces) {
    std::string pruned;
    for (const auto& [kind, n] : s.pruned) pruned += fmt::format("{}{} {}", pruned.empty() ? "" : ", ", n, kind);
    out += fmt::format("  space {} on {}: {} candidates, {} kept{}{}\n", parse_spec(s.spec).label(), s.arch,
                       s.enumerated, s.kept, pruned.empty() ? "" : " (pruned: " + pruned + ")",
                       s.compile_s > 0 ? fmt::format("; compiled in {:.1f} s", s.compile_s) : "");
  }
  // One table per specialization (spec x heads): a row per bucket.
  std::vector<std::string> order;
  std::map<std::string, std::vector<const UnitResult*>> groups;
  for (const UnitResult& u : r.units) {
    const std::string g = fmt::format("{} | {}", fmt::join(u.unit.layer_types, ","), space_key(u.unit));
    if (!groups.contains(g)) order.push_back(g);
    groups[g].push_back(&u);
  }
  std::vector<double> all;
  for (const std::string& g : order) {
    const UnitResult& first = *groups[g].front();
    out += fmt::format("\n{} {}: {} ({} q / {} kv heads per rank)\n", fmt::join(first.unit.layer_types, ","),
                       to_string(first.unit.spec.family), first.unit.spec.label(), first.unit.heads.num_q_heads,
                       first.unit.heads.num_kv_heads);
    Table t;
    t.add({"BUCKET", "SHAPE", "DEFAULT", "US", "WINNER", "US", "SPEEDUP", "STATUS"});
    std::vector<double> ups;
    for (const UnitResult* u : groups[g]) {
      const double up = u->speedup();
      if (std::isfinite(up)) ups.push_back(up), all.push_back(up);
      std::string status(to_string(u->status));
      if (u->status == UnitStatus::tuned) status += fmt::format(" ({} measured{})", u->measured,
                                                                 u->reused ? fmt::format(", {} reused", u->reused) : "");
      if (!u->reason.empty()) status += ": " + u->reason;
      t.add({u->unit.bucket.name(), shape_text(u->unit), u->default_tile.canonical(), us(u->default_us),
             u->winner ? (*u->winner == u->default_tile ? "(default)" : u->winner->canonical()) : "-", us(u->winner_us),
             std::isfinite(up) ? fmt::format("{:.2f}x", up) : "-", status});
    }
    out += t.render();
    if (!ups.empty())
      out += fmt::format("  geometric-mean speed-up {:.3f}x, best {:.2f}x over {} bucket{}\n", geomean(ups),
                         *std::max_element(ups.begin(), ups.end()), ups.size(), ups.size() == 1 ? "" : "s");
  }
  if (!r.regrets.empty()) {
    out += "\nregret of the staged search (replayed on the exhaustive measurements):\n";
    Table t;
    t.add({"BUCKET", "BEST", "US", "STAGED", "US", "REGRET", "MEASURED"});
    std::vector<double> rs;
    for (const Regret& g : r.regrets) {
      rs.push_back(g.regret());
      t.add({g.bucket, g.best.canonical(), us(g.best_us), g.staged.canonical(), us(g.staged_us),
             fmt::format("{:.2f}%", 100 * g.regret()), fmt::format("{} of {}", g.staged_measured, g.exhaustive_measured)});
    }
    out += t.render();
    std::sort(rs.begin(), rs.end());
    out += fmt::format("  median {:.2f}%, max {:.2f}%\n", 100 * rs[rs.size() / 2], 100 * rs.back());
  }
  for (const std::string& f : r.worker_failures) out += fmt::format("error: {}\n", f);
  out += fmt::format("\n{} unit{}: {} tuned, {} cached, {} failed, {} unfinished{}{}; {:.1f} s\n", r.units.size(),
                     r.units.size() == 1 ? "" : "s", r.count(UnitStatus::tuned), r.count(UnitStatus::cached),
                     r.count(UnitStatus::failed), r.count(UnitStatus::unfinished),
                     r.count(UnitStatus::planned) ? fmt::format(", {} planned", r.count(UnitStatus::planned)) : "",
                     all.empty() ? "" : fmt::format("; geometric-mean speed-up {:.3f}x", geomean(all)), r.wall_s);
  return out;
}

} // namespace attnjit::tuner
