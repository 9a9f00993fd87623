#include "runtime/cuda_driver.h"

#include <dlfcn.h>

#include <mutex>

#include <fmt/format.h>

namespace attnjit {

const CudaDriver& CudaDriver::get() {
  static CudaDriver driver;
  static std::string error;
  static std::once_flag once;
  std::call_once(once, [] {
    void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libcuda.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      error = "no CUDA driver: libcuda.so.1 could not be opened";
      return;
    }
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
      if (!fn && error.empty()) error = fmt::format("the CUDA driver lacks {}", name);
    };
    CudaDriver& d = driver;
    sym(d.init, "cuInit");
    sym(d.get_error_string, "cuGetErrorString");
    sym(d.device_get_count, "cuDeviceGetCount");
    sym(d.device_get, "cuDeviceGet");
    sym(d.device_get_name, "cuDeviceGetName");
    sym(d.device_get_attribute, "cuDeviceGetAttribute");
    sym(d.primary_ctx_retain, "cuDevicePrimaryCtxRetain");
    sym(d.primary_ctx_release, "cuDevicePrimaryCtxRelease_v2");
    sym(d.ctx_get_current, "cuCtxGetCurrent");
    sym(d.ctx_set_current, "cuCtxSetCurrent");
    sym(d.module_load_data, "cuModuleLoadData");
    sym(d.module_unload, "cuModuleUnload");
    sym(d.module_get_function, "cuModuleGetFunction");
    sym(d.func_set_attribute, "cuFuncSetAttribute");
    sym(d.func_get_attribute, "cuFuncGetAttribute");
    sym(d.occupancy_max_blocks, "cuOccupancyMaxActiveBlocksPerMultiprocessor");
    sym(d.launch_kernel, "cuLaunchKernel");
    if (!error.empty()) return;
    if (CUresult rc = d.init(0); rc != CUDA_SUCCESS) {
      const char* s = nullptr;
      d.get_error_string(rc, &s);
      error = fmt::format("cuInit failed: {}", s ? s : "unknown error");
      return;
    }
    int n = 0;
    if (d.device_get_count(&n) != CUDA_SUCCESS || n == 0) error = "no CUDA device";
  });
  if (!error.empty()) throw NoDeviceError(error);
  return driver;
}

void CudaDriver::check(CUresult rc, std::string_view what) const {
  if (rc == CUDA_SUCCESS) return;
  const char* s = nullptr;
  get_error_string(rc, &s);
  throw CudaError(fmt::format("{}: {}", what, s ? s : "unknown CUDA error"));
}

} // namespace attnjit
