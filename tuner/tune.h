// The tuning driver behind attn-tune: a deployment's tuning matrix on the local GPU(s).
//
//   1. the model (a preset, or a Hugging Face config.json) is sharded for the tensor-parallel size
//      and its kernel specs derived; layer types whose features the kernels lack are skipped;
//   2. the units (spec x shape bucket, autotune.h) whose tuning key has no winner in the cache are
//      this run's work; a rerun finds the rest done and an interrupted run resumes;
//   3. each spec's search space is enumerated, pruned, compiled on a bounded pool and pruned again
//      by the compiler's report (search_space.h);
//   4. every unit is measured on the GPU through the C API and its rows written (gpu_measurer.h);
//   5. the report: per unit, winner vs the default tile and the speed-up, read back from the cache
//      (so that it also covers work other processes did).
// With several devices, one worker process per GPU takes every n-th unit; all write one cache.
#pragma once

#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "tuner/autotune.h"
#include "tuner/deployment.h"

namespace attnjit::tuner {

struct GpuProbe {
  bool found = false;
  std::string name;    // "NVIDIA H100 80GB HBM3"
  std::string arch;    // "sm_90a"
  int sm_count = 0;
  std::string why_not; // when not found: no driver, no device, ...
};

// The GPU at `ordinal`, through the driver API (libcuda opened with dlopen). Never throws.
GpuProbe probe_gpu(int ordinal = 0);

// The arch a dry run without a GPU lists the search spaces for.
inline constexpr std::string_view kDefaultArch = "sm_90a";

// No GPU to tune on: what() says so and how to build a cache without one.
struct NoGpuError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct TuneOptions {
  std::string model;     // a built-in preset name or a preset JSON path
  std::string hf_config; // or: a Hugging Face config.json
  DeploymentOptions deployment;
  MatrixOptions matrix;
  std::string cache_path; // empty: cache::default_cache_path()
  std::vector<int> devices = {0};
  double budget_s = 0;   // 0: no limit
  bool dry_run = false;  // list specs, buckets and search spaces; no GPU needed, nothing written
  SearchMode mode = SearchMode::staged;
  bool regret = false;   // after the run: replay the staged search on exhaustive measurements
  bool retune = false;   // search units that already have a winner again (measured rows are reused)
  int jobs = 0;          // parallel compiles; 0: NvrtcCompiler::max_parallel()
  double target_ms = 40; // timed GPU time per candidate

  // Worker mode (set by the parent of a multi-device run): units i with i % count == index.
  int worker_index = -1;
  int worker_count = 0;
  // How to start worker i of n on device d; returns its exit status when it ends. Set by the tool
  // (it knows its own command line). Called from one thread per worker.
  std::function<int(int index, int count, int device)> run_worker;
};

struct TuneProgress {
  enum class Phase { compile, measure, workers } phase;
  size_t done = 0, total = 0;
  double elapsed_s = 0;
  double eta_s = -1; // unknown: < 0
  std::string detail; // what finished last
};

struct TuneHooks {
  std::function<void(std::string_view)> announce; // one-line messages
  std::function<void(const TuneProgress&)> progress;
  std::function<bool()> stop_requested;
};

struct SpaceSummary {
  std::string spec;
  std::string arch;
  size_t enumerated = 0;
  size_t kept = 0;
  std::map<std::string, size_t> pruned; // by reason kind ("invalid", "shared memory", "model", "compiler", ...)
  double compile_s = 0;
};

struct TuneReport {
  Deployment deployment;
  GpuProbe gpu;
  TuningDevice device;
  std::string cache_path;
  SearchMode mode = SearchMode::staged;
  bool dry_run = false;
  std::vector<KernelNeed> skipped;
  std::vector<SpaceSummary> spaces;
  std::vector<UnitResult> units;
  std::vector<Regret> regrets;
  std::vector<std::string> worker_failures;
  std::string message;
  double wall_s = 0;

  size_t count(UnitStatus s) const;
  // No unit failed and every worker ended cleanly (unfinished units, left by --budget or an
  // interrupt, are not failures: a rerun resumes them).
  bool ok() const;
};

// Throws DeploymentError (model, sharding), NoGpuError (nothing to tune on, not a dry run),
// cache::Error (the cache cannot be opened).
TuneReport tune(const TuneOptions& options, const TuneHooks& hooks = {});

std::string to_json(const TuneReport& report);
std::string format_table(const TuneReport& report);

// The model of the options: --hf-config if set, else --model.
ModelPreset load_model(const TuneOptions& options);

} // namespace attnjit::tuner
