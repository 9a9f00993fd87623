#include "tuner/precompile.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "cache/store.h"
#include "codegen/errors.h"
#include "codegen/nvrtc_compiler.h"
#include "runtime/binary_builder.h"
#include "tuner/report_json.h"
#include "tuner/table.h"

namespace attnjit::tuner {

std::string_view to_string(EntryStatus s) {
  switch (s) {
  case EntryStatus::compiled: return "compiled";
  case EntryStatus::cached: return "cached";
  case EntryStatus::planned: return "planned";
  case EntryStatus::skipped: return "skipped";
  case EntryStatus::failed: return "failed";
  }
  return "?";
}

size_t PrecompileReport::count(EntryStatus s) const {
  return static_cast<size_t>(std::count_if(entries.begin(), entries.end(), [&](const auto& e) { return e.status == s; }));
}

std::vector<std::string> parse_arch_list(std::string_view list) {
  std::vector<std::string> archs;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = std::min(list.find(',', start), list.size());
    std::string arch(list.substr(start, end - start));
    start = end + 1;
    if (arch.empty()) continue;
    try {
      validate_arch(arch);
    } catch (const SpecError& e) {
      throw DeploymentError(e.what());
    }
    if (std::find(archs.begin(), archs.end(), arch) == archs.end()) archs.push_back(std::move(arch));
  }
  if (archs.empty()) throw DeploymentError("arch: no target arch given (e.g. sm_90a or sm_90a,sm_80)");
  return archs;
}

namespace {

// A (spec, tile, arch) to look up and, when missing, compile.
struct Job {
  size_t entry;
  KernelSpec spec;
  TileConfig tile;
};

// The ptxas counts of a record, when the compiler reported them (no kernel uses zero registers).
void take_resources(const cache::BinaryRecord& rec, PrecompileEntry& e) {
  e.shared_bytes = rec.shared_bytes;
  if (rec.registers <= 0) return;
  e.registers = rec.registers;
  if (rec.spill_bytes >= 0) e.spill_bytes = rec.spill_bytes; // -1: read from the cubin, spills unknown
}

void run_job(const Job& job, PrecompileEntry& e, cache::Store* store, bool dry_run) {
  try {
    if (store) {
      if (auto rec = store->get_binary(e.key)) {
        e.status = EntryStatus::cached;
        take_resources(*rec, e);
        return;
      }
    }
    if (dry_run) {
      e.status = EntryStatus::planned;
      e.shared_bytes = shared_memory_bytes(job.spec, job.tile);
      return;
    }
    cache::BinaryRecord rec = build_binary(job.spec, job.tile, e.arch);
    e.compile_ms = rec.compile_ms;
    take_resources(rec, e);
    store->put_binary(rec);
    e.status = EntryStatus::compiled;
  } catch (const std::exception& ex) {
    e.status = EntryStatus::failed;
    e.reason = ex.what();
  }
}

} // namespace

PrecompileReport precompile(const Deployment& deployment, const std::vector<std::string>& archs,
                            const std::string& cache_path, const PrecompileOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  PrecompileReport report{deployment, archs, cache_path, 0, 0, {}};
  for (const auto& arch : archs) {
    try {
      validate_arch(arch);
    } catch (const SpecError& e) {
      throw DeploymentError(e.what());
    }
  }
  if (archs.empty()) throw DeploymentError("arch: no target arch given (e.g. sm_90a)");

  std::unique_ptr<cache::Store> store;
  if (!options.dry_run || std::filesystem::exists(cache_path)) {
    cache::OpenOptions open;
    open.read_only = options.dry_run;
    open.warn = options.warn;
    store = cache::Store::open(cache_path, open);
  }
  const std::vector<cache::WinnerRecord> winners = store ? store->list_winners() : std::vector<cache::WinnerRecord>{};

  // Entries in deployment order; kernels that several layer types share are compiled once.
  std::vector<Job> jobs;
  std::map<std::string, size_t> entry_of_key;
  auto add = [&](const KernelNeed& need, const KernelSpec& spec, const std::string& arch, const TileConfig& tile,
                 std::string_view tile_source) {
    const std::string key = binary_key_for(spec, tile, arch);
    if (auto it = entry_of_key.find(key); it != entry_of_key.end()) {
      auto& types = report.entries[it->second].layer_types;
      if (std::find(types.begin(), types.end(), need.layer_type) == types.end()) types.push_back(need.layer_type);
      return;
    }
    PrecompileEntry e;
    e.layer_types = {need.layer_type};
    e.phase = need.phase;
    e.spec = spec.canonical();
    e.tile = tile.canonical();
    e.tile_source = std::string(tile_source);
    e.arch = arch;
    e.key = key;
    entry_of_key.emplace(key, report.entries.size());
    jobs.push_back(Job{report.entries.size(), spec, tile});
    report.entries.push_back(std::move(e));
  };
  for (const KernelNeed& need : deployment.needs) {
    if (need.skipped()) {
      PrecompileEntry e;
      e.layer_types = {need.layer_type};
      e.phase = need.phase;
      e.status = EntryStatus::skipped;
      e.reason = need.skip_reason;
      report.entries.push_back(std::move(e));
      continue;
    }
    const KernelSpec& spec = *need.spec;
    for (const std::string& arch : archs) {
      add(need, spec, arch, default_tile(spec, arch), "default");
      for (const auto& w : winners) {
        if (w.spec != spec.canonical() || w.arch != arch) continue;
        TileConfig tile;
        try {
          tile = parse_tile(w.tile);
        } catch (const SpecError& ex) {
          PrecompileEntry e;
          e.layer_types = {need.layer_type};
          e.phase = need.phase;
          e.spec = spec.canonical();
          e.tile = w.tile;
          e.tile_source = "tuned";
          e.arch = arch;
          e.status = EntryStatus::failed;
          e.reason = fmt::format("the tuned winner's tile cannot be read: {}", ex.what());
          report.entries.push_back(std::move(e));
          continue;
        }
        add(need, spec, arch, tile, "tuned");
      }
    }
  }

  const int jobs_wanted = options.jobs > 0 ? options.jobs : NvrtcCompiler::max_parallel();
  report.threads = static_cast<int>(std::clamp<size_t>(jobs.size(), 1, static_cast<size_t>(std::max(1, jobs_wanted))));
  std::atomic<size_t> next{0};
  std::mutex progress_mu;
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < jobs.size();) {
      PrecompileEntry& e = report.entries[jobs[i].entry];
      run_job(jobs[i], e, store.get(), options.dry_run);
      if (options.progress) {
        std::lock_guard lock(progress_mu);
        options.progress(e);
      }
    }
  };
  {
    std::vector<std::jthread> pool;
    for (int t = 1; t < report.threads; ++t) pool.emplace_back(worker);
    worker();
  }
  report.wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return report;
}

// ---------------------------------------------------------------------------------------------

namespace {

std::string describe_heads(const RankHeads& h) {
  return fmt::format("{} q / {} kv heads per rank{}", h.num_q_heads, h.num_kv_heads,
                     h.kv_replicated ? " (kv replicated)" : "");
}

std::string short_spec(const std::string& canonical) {
  return parse_spec(canonical).label();
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

} // namespace

nlohmann::json detail::report_to_json(const PrecompileReport& r) {
  using nlohmann::json;
  const Deployment& d = r.deployment;
  json layer_types = json::array();
  for (const LayerType& l : d.model.layer_types) {
    json j = {{"name", l.name}, {"num_q_heads", l.num_q_heads}, {"num_kv_heads", l.num_kv_heads},
              {"head_dim_qk", l.head_dim_qk}, {"head_dim_v", l.head_dim_v}, {"causal", l.causal}};
    if (l.sliding_window) j["sliding_window"] = l.sliding_window;
    if (l.learned_sinks) j["learned_sinks"] = true;
    for (const KernelNeed& n : d.needs) {
      if (n.layer_type != l.name) continue;
      j["rank"] = {{"num_q_heads", n.heads.num_q_heads}, {"num_kv_heads", n.heads.num_kv_heads},
                   {"kv_replicated", n.heads.kv_replicated}};
      if (n.skipped()) j["skipped"] = n.skip_reason;
      break;
    }
    layer_types.push_back(std::move(j));
  }
  json entries = json::array();
  for (const PrecompileEntry& e : r.entries) {
    json j = {{"layer_types", e.layer_types}, {"phase", to_string(e.phase)}, {"status", to_string(e.status)}};
    if (e.status != EntryStatus::skipped) {
      j["spec"] = e.spec;
      j["tile"] = e.tile;
      j["tile_source"] = e.tile_source;
      j["arch"] = e.arch;
      j["key"] = e.key;
      j["compile_ms"] = e.compile_ms;
      j["registers"] = e.registers ? json(*e.registers) : json(nullptr);
      j["spill_bytes"] = e.spill_bytes ? json(*e.spill_bytes) : json(nullptr);
      j["shared_bytes"] = e.shared_bytes;
    }
    if (!e.reason.empty()) j["reason"] = e.reason;
    entries.push_back(std::move(j));
  }
  json totals = json::object();
  for (EntryStatus s : {EntryStatus::compiled, EntryStatus::cached, EntryStatus::planned, EntryStatus::skipped,
                        EntryStatus::failed})
    totals[std::string(to_string(s))] = r.count(s);
  json out = {{"model", d.model.name},
              {"tensor_parallel", d.options.tensor_parallel},
              {"dtype", to_string(d.options.dtype)},
              {"page_size", d.options.page_size},
              {"archs", r.archs},
              {"cache", r.cache_path},
              {"layer_types", std::move(layer_types)},
              {"entries", std::move(entries)},
              {"totals", std::move(totals)},
              {"threads", r.threads},
              {"wall_ms", r.wall_ms}};
  return out;
}

std::string to_json(const PrecompileReport& r) { return detail::report_to_json(r).dump(2); }

std::string format_table(const PrecompileReport& r) {
  const Deployment& d = r.deployment;
  std::string out = fmt::format("{}, tensor parallel {}, {}, page size {}; cache {}\n", d.model.name,
                                d.options.tensor_parallel, to_string(d.options.dtype), d.options.page_size,
                                r.cache_path);
  Table layers;
  for (const LayerType& l : d.model.layer_types) {
    for (const KernelNeed& n : d.needs) {
      if (n.layer_type != l.name) continue;
      std::string geometry = fmt::format("dqk {} dv {}{}{}{}", l.head_dim_qk, l.head_dim_v,
                                         l.causal ? ", causal" : "",
                                         l.sliding_window ? fmt::format(", window {}", l.sliding_window) : "",
                                         l.learned_sinks ? ", learned sinks" : "");
      layers.add({"  " + l.name, describe_heads(n.heads), geometry});
      break;
    }
  }
  out += layers.render();

  Table t;
  t.add({"LAYERS", "PHASE", "KERNEL", "TILE", "ARCH", "STATUS", "COMPILE", "REGS", "SPILL"});
  for (const PrecompileEntry& e : r.entries) {
    const std::string layers_col = fmt::format("{}", fmt::join(e.layer_types, ","));
    if (e.status == EntryStatus::skipped) {
      t.add({layers_col, std::string(to_string(e.phase)), "-", "-", "-", "skipped: " + e.reason});
      continue;
    }
    const bool has_resources = e.status == EntryStatus::compiled || e.status == EntryStatus::cached;
    auto resource = [&](const std::optional<int>& v) {
      if (!has_resources) return std::string("-");
      return v ? std::to_string(*v) : std::string("?");
    };
    t.add({layers_col, std::string(to_string(e.phase)), short_spec(e.spec),
           e.tile + (e.tile_source == "tuned" ? " (tuned)" : ""), e.arch, std::string(to_string(e.status)),
           e.status == EntryStatus::compiled ? fmt::format("{:.0f} ms", e.compile_ms) : "-",
           resource(e.registers), resource(e.spill_bytes)});
  }
  out += t.render();
  for (const PrecompileEntry& e : r.entries)
    if (e.status == EntryStatus::failed)
      out += fmt::format("failed: {} {} {} {}: {}\n", fmt::join(e.layer_types, ","), to_string(e.phase), e.tile,
                         e.arch, first_line(e.reason));
  if (std::any_of(r.entries.begin(), r.entries.end(), [](const auto& e) {
        return (e.status == EntryStatus::compiled || e.status == EntryStatus::cached) && !e.registers;
      }))
    out += "?: the compiler gave no ptxas report (NVRTC gives none when it reuses a result from the CUDA "
           "compute cache; CUDA_CACHE_DISABLE=1 makes it compile afresh)\n";
  const size_t kernels = r.entries.size() - r.count(EntryStatus::skipped);
  out += fmt::format("{} kernel{} for {}: {} compiled, {} cached, {}{} failed; {} skipped; {:.1f} s on {} thread{}\n",
                     kernels, kernels == 1 ? "" : "s", fmt::join(r.archs, ","), r.count(EntryStatus::compiled),
                     r.count(EntryStatus::cached),
                     r.count(EntryStatus::planned) ? fmt::format("{} planned, ", r.count(EntryStatus::planned)) : "",
                     r.count(EntryStatus::failed), r.count(EntryStatus::skipped), r.wall_ms / 1000.0, r.threads,
                     r.threads == 1 ? "" : "s");
  return out;
}

} // namespace attnjit::tuner
