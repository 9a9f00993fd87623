// The real Measurer and CandidateCompiler behind attn-tune.
//
// Measurement goes through the public C API (attnjit_plan_create with an explicit
// attnjit_problem.tile, then attnjit_run), exactly as a host application launches the kernel:
//   - inputs: random normal values (never zero) in the spec's dtype, shuffled block tables, the
//     unit's shape; several input sets when one set is small, rotated run by run, and the L2 cache
//     flushed (a write of twice its size) before each timed run while all sets together fit
//     in L2 a few times over, so no candidate is timed on data left in L2 by the previous run;
//   - check: each candidate's output on set 0 (its output buffer first filled with NaN) against
//     the reference tile's output, relative RMS error <= kMaxRelRms and largest error <=
//     kMaxRelMax of the reference's largest magnitude; NaN or infinity anywhere fails;
//   - timing: warm-up (at least 3 runs and 5 ms), then CUDA events around each run, the median of
//     enough runs to cover GpuMeasureOptions::target_ms (between min_reps and max_reps).
#pragma once

#include <memory>
#include <string>

#include "cache/store.h"
#include "tuner/autotune.h"

namespace attnjit::tuner {

// Output check bounds. Two correct bf16 kernels that differ in tile shape round P and O at
// different points; their outputs differ by ~2^-9 relative per element (RMS a few 1e-3). A kernel
// that drops one KV tile of 512 moves the RMS by several percent.
inline constexpr double kMaxRelRms = 1e-2;
inline constexpr double kMaxRelMax = 4e-2;

struct GpuMeasureOptions {
  int device = 0;
  std::string cache_path; // the context's cache: where prepare_space stored the candidates
  double target_ms = 40;
  int min_reps = 10;
  int max_reps = 200;
};

// Throws std::runtime_error when there is no usable GPU.
std::unique_ptr<Measurer> make_gpu_measurer(const GpuMeasureOptions& options);

// Compiles candidates with NVRTC into `store` (a binary already there is not compiled again;
// candidates whose generated code is identical, e.g. differing only in max_splits, share one
// compile). Thread-safe.
std::unique_ptr<CandidateCompiler> make_nvrtc_compiler(cache::Store& store);

} // namespace attnjit::tuner
