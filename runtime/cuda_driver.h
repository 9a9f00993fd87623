// The CUDA driver API, opened with dlopen at first use so that the library (and its tests) load
// on machines with no GPU and no driver.
#pragma once

#include <cuda.h>

#include <string>
#include <stdexcept>
#include <string_view>

namespace attnjit {

struct CudaDriver {
  decltype(&::cuInit) init;
  decltype(&::cuGetErrorString) get_error_string;
  decltype(&::cuDeviceGetCount) device_get_count;
  decltype(&::cuDeviceGet) device_get;
  decltype(&::cuDeviceGetName) device_get_name;
  decltype(&::cuDeviceGetAttribute) device_get_attribute;
  decltype(&::cuDevicePrimaryCtxRetain) primary_ctx_retain;
  decltype(&::cuDevicePrimaryCtxRelease) primary_ctx_release;
  decltype(&::cuCtxGetCurrent) ctx_get_current;
  decltype(&::cuCtxSetCurrent) ctx_set_current;
  decltype(&::cuModuleLoadData) module_load_data;
  decltype(&::cuModuleUnload) module_unload;
  decltype(&::cuModuleGetFunction) module_get_function;
  decltype(&::cuFuncSetAttribute) func_set_attribute;
  decltype(&::cuFuncGetAttribute) func_get_attribute;
  decltype(&::cuOccupancyMaxActiveBlocksPerMultiprocessor) occupancy_max_blocks;
  decltype(&::cuLaunchKernel) launch_kernel;

  // Opens libcuda and calls cuInit once. Throws NoDeviceError when there is no driver or device.
  static const CudaDriver& get();
  // Throws CudaError naming `what` unless rc is CUDA_SUCCESS.
  void check(CUresult rc, std::string_view what) const;
};

struct NoDeviceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

} // namespace attnjit
