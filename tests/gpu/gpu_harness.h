// Harness of the GPU tests: device detection, the suite's shared attnjit context, device buffers,
// and "upload, poison, run, download" for one HostProblem through the public C ABI.
//
// Every test starts with ATTNJIT_REQUIRE_GPU() (or ATTNJIT_SHARED_CONTEXT), so on a machine with
// no GPU or no driver the whole suite is skipped, not failed.
#pragma once

#include "error_message.h"
#include "reference.h"

#include <attnjit/attnjit.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace attnjit::testing {

// ---- Device ------------------------------------------------------------------------------------

struct GpuInfo {
  bool available = false;
  std::string reason; // why not, when not available
  int device = 0;     // $ATTNJIT_TEST_DEVICE, default 0
  std::string name;
  int cc_major = 0, cc_minor = 0, sm_count = 0;
};
const GpuInfo& gpu_info();

#define ATTNJIT_REQUIRE_GPU()                                                                      \
  do {                                                                                             \
    if (!::attnjit::testing::gpu_info().available)                                                 \
      GTEST_SKIP() << "no GPU: " << ::attnjit::testing::gpu_info().reason;                         \
  } while (0)

// The suite's context (kernel cache disabled unless $ATTNJIT_TEST_CACHE names a file), created on
// first use. Null when creation failed; shared_context_error() then says why.
attnjit_context shared_context();
std::string shared_context_error();

#define ATTNJIT_SHARED_CONTEXT(ctx)                                                                \
  ATTNJIT_REQUIRE_GPU();                                                                           \
  attnjit_context ctx = ::attnjit::testing::shared_context();                                      \
  ASSERT_NE(ctx, nullptr) << ::attnjit::testing::shared_context_error()

// Plans of the shared context, created once per name and destroyed at the end of the run.
// prewarm_plans() creates many at once from a pool of threads (compilation dominates the suite's
// time, and the runtime is meant to be thread-safe).
struct PlanSlot {
  attnjit_status status = ATTNJIT_ERROR_INTERNAL;
  std::string message; // status string and attnjit_last_error() when not OK
  attnjit_plan plan = nullptr;
  double seconds = 0;  // time plan_create took
};
const PlanSlot& shared_plan(const std::string& name, const attnjit_problem& problem);
void prewarm_plans(const std::vector<std::pair<std::string, attnjit_problem>>& plans);
// Destroys the shared plans and context (the test environment's TearDown).
void release_shared_gpu_state();

// "STATUS_NAME: last error" for the calling thread.
std::string status_message(attnjit_status st);
// attnjit_last_error() of the calling thread, "" when null.
std::string last_error_text();

// ---- CUDA RAII -----------------------------------------------------------------------------------

std::string cuda_text(cudaError_t e);

#define ATTNJIT_CUDA_ASSERT(expr)                                                                  \
  do {                                                                                             \
    const cudaError_t attnjit_cuda_err_ = (expr);                                                 \
    ASSERT_EQ(attnjit_cuda_err_, cudaSuccess) << #expr << ": " << ::attnjit::testing::cuda_text(attnjit_cuda_err_); \
  } while (0)

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; o.bytes_ = 0; }

  // Allocates exactly `bytes` (so compute-sanitizer sees reads past the end), keeping the current
  // allocation when the size is unchanged. 0 bytes: no allocation, null pointer.
  cudaError_t ensure(size_t bytes);
  void reset();
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  template <class T> T* as() const { return static_cast<T*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

class Stream {
 public:
  Stream();  // a non-blocking stream; get() is null if creation failed
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

// ---- One problem on the device -----------------------------------------------------------------

struct DeviceProblem {
  DeviceBuffer q, k, v, block_table, cu_seqlens_q, seq_lens_k, cu_seqlens_k, o, lse, workspace;
  // Pattern values: learned sinks, fp8 scales, the block mask, skip-softmax counters.
  DeviceBuffer sinks, k_scale, v_scale, kv_num_blocks, kv_indices, skip_stats;

  // Allocates (or reuses same-sized buffers) and enqueues the copies of every input on `stream`
  // (K/V as the device stores them: 1 byte per fp8 element).
  cudaError_t upload_inputs(const HostProblem& p, cudaStream_t stream);
  // Enqueues: o and lse := poison, workspace := 0xFF bytes (NaN floats) so a kernel that relies
  // on zeroed scratch memory fails visibly; skip_stats := 0 (the kernel adds to them).
  cudaError_t poison_outputs(const HostProblem& p, size_t workspace_bytes, cudaStream_t stream);
};

struct RunOptions {
  bool with_lse = true;
  bool loose_bounds = false; // max_seqlen_q/k and the plan's max_batch/max_total_q above the actual
  bool skip_stats = false;   // pass args.skip_stats (skip-softmax plans) and download the counters
};

// The attnjit_problem of a spec: same dtypes, dims, storage, heads, causal, pattern switches
// (sparsity, kv_scale_per_head); bounds from the sequence list (exact, or with slack when loose).
attnjit_problem to_attnjit_problem(const ProblemSpec& spec, attnjit_family family, bool loose_bounds);
// The sparsity flags of a pattern.
attnjit_sparsity to_attnjit_sparsity(const PatternSpec& pattern);

// Run arguments pointing into `dev` (whose buffers must be uploaded already).
attnjit_run_args make_run_args(const HostProblem& p, const DeviceProblem& dev, const RunOptions& opt);

struct Outcome {
  attnjit_status status = ATTNJIT_ERROR_INTERNAL;
  std::string error; // empty when everything (run and CUDA calls) succeeded
  std::string last_error; // attnjit_last_error() after a failed attnjit_run
  std::vector<uint16_t> o;
  std::vector<float> lse;
  unsigned long long skip_stats[2] = {0, 0}; // tiles skipped, tiles seen (RunOptions::skip_stats)
};

// Upload, poison, attnjit_run on `stream`, synchronize, download. No gtest assertions inside, so
// it can run on worker threads.
Outcome run_once(attnjit_plan plan, const HostProblem& p, DeviceProblem& dev, const RunOptions& opt,
                 cudaStream_t stream);

// Downloads o (and lse) after the stream has finished.
cudaError_t download_outputs(const HostProblem& p, const DeviceProblem& dev, bool with_lse, Outcome& out);

// Compares an outcome with the reference under pattern_tolerance() (default_tolerance() for a
// problem without soft cap); "" when it matches, else a description of what is wrong. Thread-safe.
std::string check_outcome(const HostProblem& p, const Reference& ref, const Outcome& out, bool with_lse);

// gtest wrapper of check_outcome.
::testing::AssertionResult matches_reference(const HostProblem& p, const Reference& ref, const Outcome& out,
                                             bool with_lse);

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

} // namespace attnjit::testing
