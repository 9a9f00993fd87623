// Precompilation: every kernel a deployment needs, compiled for a list of target archs into a
// kernel cache. Needs NVRTC, never a GPU: this is what CI runs to ship a cache with a build.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tuner/deployment.h"

namespace attnjit::tuner {

enum class EntryStatus {
  compiled, // built by NVRTC in this run and stored
  cached,   // the cache already held this exact binary key
  planned,  // dry run: would be compiled
  skipped,  // the layer type uses a feature the kernels do not implement yet
  failed,   // the compile or the store write failed (reason says why)
};
std::string_view to_string(EntryStatus s);

// One (spec, tile, arch) of the deployment, or one skipped (layer type, phase).
struct PrecompileEntry {
  std::vector<std::string> layer_types; // every layer type this kernel serves
  KernelFamily phase = KernelFamily::prefill;
  std::string spec;        // canonical spec; empty when skipped
  std::string tile;        // canonical tile; empty when skipped
  std::string tile_source; // "default", or "tuned" for a winner found in the cache
  std::string arch;        // empty when skipped (the reason holds for every arch)
  std::string key;         // binary key; empty when skipped
  EntryStatus status = EntryStatus::planned;
  std::string reason;      // why skipped or failed
  double compile_ms = 0;   // compiled entries only
  // From the compiler's ptxas report, for compiled and cached entries; empty when the compiler gave
  // none (NVRTC gives none when it reuses a result from the CUDA compute cache, on a machine with a
  // driver; CUDA_CACHE_DISABLE=1 makes it compile afresh).
  std::optional<int> registers;
  std::optional<int> spill_bytes;
  int shared_bytes = 0;
};

struct PrecompileReport {
  Deployment deployment;
  std::vector<std::string> archs;
  std::string cache_path;
  int threads = 0;
  double wall_ms = 0;
  std::vector<PrecompileEntry> entries; // needs in deployment order, each for every arch in order

  size_t count(EntryStatus s) const;
  bool ok() const { return count(EntryStatus::failed) == 0; }
};

struct PrecompileOptions {
  // Compiles at once; 0: NvrtcCompiler::max_parallel() (ATTNJIT_MAX_PARALLEL_COMPILES, else what
  // the host's cores and memory allow).
  int jobs = 0;
  // Report what would be compiled and what is cached; compile and write nothing (the cache is
  // opened read-only).
  bool dry_run = false;
  // Called once per finished entry, from the worker threads but never two at a time.
  std::function<void(const PrecompileEntry&)> progress;
  // Cache diagnostics (damaged rows, files moved aside); empty: stderr.
  std::function<void(std::string_view)> warn;
};

// For every kernel spec of the deployment and every arch: the default tile, plus each tuned
// winner the cache holds for that spec and arch. An entry whose binary key is already in the
// cache is "cached"; the rest are compiled in parallel and stored, each in its own transaction,
// so that several processes can precompile into one cache at once. The cache is checked again
// just before each compile, so work another process finished meanwhile is not repeated.
// Throws DeploymentError for a bad arch and cache::Error when the cache cannot be opened; a
// failed compile or write is a failed entry, not an exception.
PrecompileReport precompile(const Deployment& deployment, const std::vector<std::string>& archs,
                            const std::string& cache_path, const PrecompileOptions& options = {});

// The report as JSON (indented), and as a table for people.
std::string to_json(const PrecompileReport& report);
std::string format_table(const PrecompileReport& report);

// "sm_90a,sm_80" -> {"sm_90a", "sm_80"}, each validated, duplicates dropped. Throws
// DeploymentError naming the bad arch and the allowed ones.
std::vector<std::string> parse_arch_list(std::string_view comma_separated);

} // namespace attnjit::tuner
