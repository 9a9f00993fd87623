// The tuning driver behind attn-tune. The autotuner (search space, measurement, verification) is
// not implemented yet: for now the driver compiles the default tile configs of a deployment for
// the GPU it finds, or, with no GPU, for sm_90a, and says so.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "tuner/deployment.h"
#include "tuner/precompile.h"

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

// The arch compiled for when there is no GPU and none is named.
inline constexpr std::string_view kDefaultArch = "sm_90a";

struct TuneOptions {
  std::string model;             // a built-in preset name or a JSON path
  DeploymentOptions deployment;
  std::string cache_path;        // empty: cache::default_cache_path()
  std::vector<std::string> archs; // empty: the GPU's arch, else kDefaultArch
  PrecompileOptions precompile;  // dry_run lists the kernels without compiling
};

struct TuneResult {
  GpuProbe gpu;
  std::string message; // what was done and why ("tuning is not implemented yet; ...")
  PrecompileReport report;
};

// Loads the preset, shards it, picks the target arch, and (unless dry_run) compiles what the
// cache lacks. `announce` receives the message before any compile starts. Throws
// DeploymentError for a bad model or tensor-parallel size, cache::Error when the cache cannot
// be opened.
TuneResult tune(const TuneOptions& options, const std::function<void(std::string_view)>& announce = {});

// The result as JSON: the precompile report plus the message and the GPU found.
std::string to_json(const TuneResult& result);

} // namespace attnjit::tuner
