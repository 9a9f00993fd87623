#include "codegen/nvrtc_compiler.h"

#include <dlfcn.h>
#include <nvrtc.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <regex>
#include <thread>

#include <fmt/format.h>

#include "codegen/cubin_info.h"
#include "codegen/embedded_templates.h"
#include "codegen/emit.h"
#include "codegen/errors.h"

namespace attnjit {

struct NvrtcCompiler::Api {
  decltype(&::nvrtcVersion) version;
  decltype(&::nvrtcGetErrorString) error_string;
  decltype(&::nvrtcCreateProgram) create;
  decltype(&::nvrtcDestroyProgram) destroy;
  decltype(&::nvrtcCompileProgram) compile;
  decltype(&::nvrtcGetProgramLogSize) log_size;
  decltype(&::nvrtcGetProgramLog) log;
  decltype(&::nvrtcGetCUBINSize) cubin_size;
  decltype(&::nvrtcGetCUBIN) cubin;
  decltype(&::nvrtcGetPTXSize) ptx_size;
  decltype(&::nvrtcGetPTX) ptx;
};

namespace {

void* open_nvrtc(std::string& tried) {
  std::vector<std::string> candidates;
  if (const char* p = std::getenv("ATTNJIT_NVRTC")) candidates.emplace_back(p);
  for (const char* name : {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"}) candidates.emplace_back(name);
  for (const char* env : {"CUDA_HOME", "CUDA_PATH"})
    if (const char* root = std::getenv(env)) candidates.push_back(fmt::format("{}/lib64/libnvrtc.so", root));
  candidates.push_back(fmt::format("{}/libnvrtc.so", ATTNJIT_CUDA_LIB_DIR));
  candidates.emplace_back("/usr/local/cuda/lib64/libnvrtc.so");
  for (const auto& c : candidates) {
    if (void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
    tried += (tried.empty() ? "" : ", ") + c;
  }
  return nullptr;
}

// A counting semaphore whose bound is chosen at first use.
class CompileSlots {
 public:
  explicit CompileSlots(int n) : free_(n) {}
  void acquire() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return free_ > 0; });
    --free_;
  }
  void release() {
    { std::lock_guard lock(mu_); ++free_; }
    cv_.notify_one();
  }
 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int free_;
};

long available_memory_mb() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  long kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb / 1024;
  return 4096;
}

} // namespace

int NvrtcCompiler::max_parallel() {
  static const int n = [] {
    if (const char* e = std::getenv("ATTNJIT_MAX_PARALLEL_COMPILES")) {
      const int v = std::atoi(e);
      if (v > 0) return v;
    }
    constexpr long kPeakPerCompileMb = 1024;
    const int cores = std::max(1u, std::thread::hardware_concurrency());
    const long by_memory = std::max(1L, available_memory_mb() / 2 / kPeakPerCompileMb);
    return static_cast<int>(std::min<long>(cores, by_memory));
  }();
  return n;
}

NvrtcCompiler& NvrtcCompiler::instance() {
  static std::once_flag once;
  static NvrtcCompiler* compiler = nullptr;
  static std::string error;
  std::call_once(once, [] {
    std::string tried;
    void* h = open_nvrtc(tried);
    if (!h) {
      error = fmt::format("NVRTC is needed to compile a kernel missing from the cache, but no "
                          "libnvrtc could be opened (tried {}); set ATTNJIT_NVRTC or CUDA_HOME", tried);
      return;
    }
    static Api api;
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
      if (!fn) error = fmt::format("libnvrtc lacks {}", name);
    };
    sym(api.version, "nvrtcVersion");
    sym(api.error_string, "nvrtcGetErrorString");
    sym(api.create, "nvrtcCreateProgram");
    sym(api.destroy, "nvrtcDestroyProgram");
    sym(api.compile, "nvrtcCompileProgram");
    sym(api.log_size, "nvrtcGetProgramLogSize");
    sym(api.log, "nvrtcGetProgramLog");
    sym(api.cubin_size, "nvrtcGetCUBINSize");
    sym(api.cubin, "nvrtcGetCUBIN");
    sym(api.ptx_size, "nvrtcGetPTXSize");
    sym(api.ptx, "nvrtcGetPTX");
    if (error.empty()) compiler = new NvrtcCompiler(&api);
  });
  if (!compiler) throw UnsupportedError(error);
  return *compiler;
}

std::string NvrtcCompiler::version() const {
  int major = 0, minor = 0;
  api_->version(&major, &minor);
  return fmt::format("{}.{}", major, minor);
}

std::vector<std::string> NvrtcCompiler::options(std::string_view arch) {
  return {fmt::format("--gpu-architecture={}", arch), "--std=c++17", "--ptxas-options=-v",
          "--extra-device-vectorization"};
}

void validate_arch(std::string_view arch) {
  static const std::regex re("sm_(8[0679]|9[0]a?|1[02][0-9]a?)");
  if (!std::regex_match(std::string(arch), re))
    throw SpecError(fmt::format("arch: got '{}'; allowed: sm_80, sm_86, sm_87, sm_89, sm_90, sm_90a "
                                "(and newer sm_1xx)", arch));
}

CompileResult NvrtcCompiler::compile(std::string_view source, std::string_view arch) const {
  validate_arch(arch);
  static CompileSlots slots(max_parallel());
  slots.acquire();
  struct Release {
    ~Release() { slots.release(); }
  } release;

  const auto& files = detail::embedded_templates();
  std::vector<std::string> names, contents;
  for (const auto& f : files) {
    names.emplace_back(f.name);
    contents.emplace_back(f.content);
  }
  std::vector<const char*> name_ptrs, content_ptrs;
  for (size_t i = 0; i < files.size(); ++i) {
    name_ptrs.push_back(names[i].c_str());
    content_ptrs.push_back(contents[i].c_str());
  }
  const std::string src(source);
  const auto t0 = std::chrono::steady_clock::now();
  nvrtcProgram prog = nullptr;
  if (auto rc = api_->create(&prog, src.c_str(), "attnjit_kernel.cu", static_cast<int>(files.size()),
                             content_ptrs.data(), name_ptrs.data());
      rc != NVRTC_SUCCESS)
    throw CompileError(fmt::format("nvrtcCreateProgram: {}", api_->error_string(rc)));
  struct Destroy {
    const Api* api;
    nvrtcProgram* p;
    ~Destroy() { api->destroy(p); }
  } destroy{api_, &prog};

  const auto opts = options(arch);
  std::vector<const char*> opt_ptrs;
  for (const auto& o : opts) opt_ptrs.push_back(o.c_str());
  const auto rc = api_->compile(prog, static_cast<int>(opt_ptrs.size()), opt_ptrs.data());

  CompileResult out;
  size_t n = 0;
  api_->log_size(prog, &n);
  out.log.resize(n);
  if (n) api_->log(prog, out.log.data());
  while (!out.log.empty() && out.log.back() == '\0') out.log.pop_back();
  if (rc != NVRTC_SUCCESS)
    throw CompileError(fmt::format("NVRTC failed for {} ({}):\n{}", arch, api_->error_string(rc), out.log));
  api_->cubin_size(prog, &n);
  out.cubin.resize(n);
  api_->cubin(prog, out.cubin.data());
  if (api_->ptx_size(prog, &n) == NVRTC_SUCCESS && n > 0) {
    out.ptx.resize(n);
    api_->ptx(prog, out.ptx.data());
    while (!out.ptx.empty() && out.ptx.back() == '\0') out.ptx.pop_back();
  }
  out.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  out.resources = parse_ptxas_resources(out.log, kAttentionEntry);
  // A result served from the CUDA compute cache comes without a ptxas report: take what the cubin says.
  if (out.resources.registers == 0)
    if (auto from_cubin = resources_from_cubin(out.cubin, kAttentionEntry)) out.resources = *from_cubin;
  return out;
}

KernelResources parse_ptxas_resources(std::string_view log, std::string_view entry) {
  KernelResources r;
  const std::string text(log);
  const std::string marker = fmt::format("Compiling entry function '{}'", entry);
  size_t at = text.find(marker);
  if (at == std::string::npos) return r;
  size_t end = text.find("Compiling entry function", at + marker.size());
  const std::string part = text.substr(at, end == std::string::npos ? std::string::npos : end - at);
  std::smatch m;
  if (std::regex_search(part, m, std::regex(R"((\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads)"))) {
    r.stack_bytes = std::stoi(m[1]);
    r.spill_bytes = std::stoi(m[2]) + std::stoi(m[3]);
  }
  if (std::regex_search(part, m, std::regex(R"(Used (\d+) registers)"))) r.registers = std::stoi(m[1]);
  if (std::regex_search(part, m, std::regex(R"((\d+) bytes smem)"))) r.static_shared_bytes = std::stoi(m[1]);
  return r;
}

} // namespace attnjit
