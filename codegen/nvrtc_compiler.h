// NVRTC, opened with dlopen on first use: a deployment whose kernels are all in the cache never
// needs the CUDA toolkit. Compiles for any arch string without a GPU.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace attnjit {

struct KernelResources {
  int registers = 0;
  int spill_bytes = 0; // spill stores + spill loads; -1: unknown (no ptxas report, see cubin_info.h)
  int stack_bytes = 0;
  int static_shared_bytes = 0;
};

struct CompileResult {
  std::string cubin;
  std::string ptx;
  std::string log;
  KernelResources resources; // of the attention entry point
  double compile_ms = 0;
};

class NvrtcCompiler {
 public:
  // The process-wide compiler. Throws UnsupportedError when no libnvrtc can be found.
  static NvrtcCompiler& instance();

  std::string version() const; // "13.0"
  // The NVRTC options for `arch`; part of every binary key.
  static std::vector<std::string> options(std::string_view arch);

  // Compiles `source` (which includes only the embedded templates) for `arch`, e.g. "sm_90a".
  // Throws CompileError with the log on failure. At most max_parallel() compiles run at once.
  CompileResult compile(std::string_view source, std::string_view arch) const;

  // The bound on concurrent compiles: ATTNJIT_MAX_PARALLEL_COMPILES, else what the host's cores
  // and available memory allow (a compile of the largest kernels peaks near 1 GB).
  static int max_parallel();

  struct Api;
 private:
  explicit NvrtcCompiler(const Api* api) : api_(api) {}
  const Api* api_;
};

// Parses ptxas "-v" output for one entry point.
KernelResources parse_ptxas_resources(std::string_view log, std::string_view entry);

// Validates an arch string: sm_XY or sm_XYa with a supported compute capability (>= 8.0).
void validate_arch(std::string_view arch);

} // namespace attnjit
