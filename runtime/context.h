// Context and Plan: the runtime behind the C ABI.
//
// A Context owns one device's primary context, the kernel cache, and the loaded modules (one per
// binary key, loaded once, shared by every plan that needs it). A Plan is a resolved kernel for
// one attnjit_problem: tile config, loaded functions, workspace size. run() only validates and
// launches.
#pragma once

#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "attnjit/attnjit.h"
#include "cache/store.h"
#include "codegen/kernel_spec.h"
#include "runtime/cuda_driver.h"
#include "templates/params.cuh"

namespace attnjit {

struct DeviceInfo {
  std::string name;
  std::string arch; // "sm_90a"
  int compute_major = 0, compute_minor = 0;
  int sm_count = 0;
  int max_shared_optin = 0;
};

// What the driver says about the device at `ordinal`. Throws SpecError for an ordinal the host does
// not have, NoDeviceError / CudaError from the driver.
DeviceInfo query_device(const CudaDriver& driver, int ordinal);

// A module loaded into the context, with its two entry points.
struct LoadedKernel {
  CUmodule module = nullptr;
  CUfunction attention = nullptr;
  CUfunction reduce = nullptr;
  int shared_bytes = 0;
  int threads = 0;
  int ctas_per_sm = 0; // occupancy of the attention kernel
};

// Makes `ctx` the calling thread's current context for the scope, then restores the previous one.
// Driver calls on modules and functions need their context current; the caller's thread may have
// none, or another.
class ScopedCurrent {
 public:
  ScopedCurrent(const CudaDriver& d, CUcontext ctx);
  ~ScopedCurrent();
  ScopedCurrent(const ScopedCurrent&) = delete;
  ScopedCurrent& operator=(const ScopedCurrent&) = delete;

 private:
  const CudaDriver& driver_;
  CUcontext previous_ = nullptr;
  bool restore_ = true;
};

// How the binary for a plan was obtained (reported by tools and tests).
enum class BinarySource { memory, cache, compiled };

class Context {
 public:
  explicit Context(const attnjit_context_options& options);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const DeviceInfo& device() const { return device_; }
  const CudaDriver& driver() const { return driver_; }
  CUcontext cu_context() const { return primary_; }
  cache::LayeredStore* store() { return store_.get(); }

  // The loaded kernel for (spec, tile): memory, else cache, else NVRTC + store. Thread-safe: a
  // missing kernel is compiled once however many threads ask for it at the same time.
  std::shared_ptr<const LoadedKernel> kernel(const KernelSpec& spec, const TileConfig& tile,
                                             BinarySource* source = nullptr);

  // The block-mask builder for q/k of `dtype` (see attnjit_build_block_mask).
  CUfunction block_mask_builder(DType dtype);

 private:
  // The module stored under `key`: loaded once per context, from the cache or from `build`
  // (NVRTC, whose record is then stored). Thread-safe and single-flight per key; a failure is
  // not remembered, so the next request tries again.
  CUmodule module(const std::string& key, const std::function<cache::BinaryRecord()>& build,
                  BinarySource* source);

  const CudaDriver& driver_;
  CUdevice cu_device_ = 0;
  CUcontext primary_ = nullptr;
  DeviceInfo device_;
  std::unique_ptr<cache::LayeredStore> store_;
  std::mutex mu_;
  std::map<std::string, std::shared_future<CUmodule>> modules_;
};

class Plan {
 public:
  Plan(Context& ctx, const attnjit_problem& problem);

  size_t workspace_bytes() const { return workspace_bytes_; }
  const std::string& description() const { return description_; }
  const KernelSpec& spec() const { return spec_; }
  const TileConfig& tile() const { return tile_; }

  // What run() launches for `args`: the kernel parameters, the attention grid, and the reduce
  // grid (0 when there is one split).
  struct Launch {
    AttentionParams params;
    unsigned grid[3];
    unsigned reduce_blocks;
  };
  // Validates args on the host (errors name the field) and packs the launch; no device work.
  Launch prepare(const attnjit_run_args& args) const;

  // prepare() and enqueue the kernel(s) on `stream`. No allocation, no sync.
  void run(const attnjit_run_args& args, CUstream stream) const;

  const LoadedKernel& kernel() const { return *kernel_; }

  // The split-KV count run() uses for this batch (1 for prefill).
  int num_splits(int batch, int max_seqlen_q, int max_seqlen_k) const;

 private:
  Context& ctx_;
  attnjit_problem problem_;
  KernelSpec spec_;
  TileConfig tile_;
  std::shared_ptr<const LoadedKernel> kernel_;
  size_t workspace_bytes_ = 0;
  bool tuned_ = false; // the tile is a tuned winner from the cache
  std::string description_;
};

// attnjit_tile_config -> TileConfig (min_ctas_per_sm 0 means 1; wgmma 2 is warpgroups with a
// producer), and back.
TileConfig tile_from_c(const attnjit_tile_config& t);
attnjit_tile_config tile_to_c(const TileConfig& t);
// The C API's name of an element type (the inverse of the mapping validate_problem applies).
attnjit_dtype c_dtype(DType d);
// All fields zero: the caller leaves the choice to attnjit.
bool tile_is_unset(const attnjit_tile_config& t);

// attnjit_problem -> KernelSpec, with validation naming the C field.
KernelSpec spec_from_problem(const attnjit_problem& p);
void validate_problem(const attnjit_problem& p);

// The exact arch string of a compute capability: 9.0 -> sm_90a (Hopper-specific features), else sm_XY.
std::string arch_for(int major, int minor);

// Split-KV count for a decode launch of `ctas` CTAs (before splitting) on a machine with `slots`
// resident CTAs, each sequence `kv_tiles` KV tiles long, at most `max_splits` (Plan::num_splits).
int choose_num_splits(long ctas, long slots, int kv_tiles, int max_splits);

} // namespace attnjit
