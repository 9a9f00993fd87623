#include "tuner/tune.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cache/store.h"
#include "runtime/context.h"
#include "runtime/cuda_driver.h"
#include "tuner/report_json.h"

namespace attnjit::tuner {

GpuProbe probe_gpu(int ordinal) {
  GpuProbe p;
  try {
    const CudaDriver& d = CudaDriver::get();
    int count = 0;
    d.check(d.device_get_count(&count), "cuDeviceGetCount");
    if (ordinal < 0 || ordinal >= count) {
      p.why_not = fmt::format("no CUDA device {} ({} found)", ordinal, count);
      return p;
    }
    CUdevice dev = 0;
    d.check(d.device_get(&dev, ordinal), "cuDeviceGet");
    char name[256] = {};
    d.check(d.device_get_name(name, sizeof name, dev), "cuDeviceGetName");
    int major = 0, minor = 0;
    d.check(d.device_get_attribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "cuDeviceGetAttribute");
    d.check(d.device_get_attribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "cuDeviceGetAttribute");
    d.check(d.device_get_attribute(&p.sm_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev), "cuDeviceGetAttribute");
    p.found = true;
    p.name = name;
    p.arch = arch_for(major, minor);
  } catch (const NoDeviceError& e) {
    p.why_not = e.what();
  } catch (const CudaError& e) {
    p.why_not = e.what();
  }
  return p;
}

TuneResult tune(const TuneOptions& o, const std::function<void(std::string_view)>& announce) {
  TuneResult r;
  const Deployment deployment = plan_deployment(load_preset(o.model), o.deployment);
  std::vector<std::string> archs = o.archs;
  const std::string_view verb = o.precompile.dry_run ? "listing (dry run, nothing is compiled)" : "compiling";
  if (!archs.empty()) {
    r.message = fmt::format("tuning is not implemented yet; {} default configs for {}", verb, fmt::join(archs, ","));
  } else {
    r.gpu = probe_gpu();
    if (r.gpu.found) {
      archs = {r.gpu.arch};
      r.message = fmt::format("{} ({}): tuning is not implemented yet; {} default configs for {}", r.gpu.name,
                              r.gpu.arch, verb, r.gpu.arch);
    } else {
      archs = {std::string(kDefaultArch)};
      r.message = fmt::format("no GPU found: {} default configs for {} (use attn-cache precompile for other targets)",
                              o.precompile.dry_run ? "listing (dry run, nothing is compiled)" : "precompiling",
                              kDefaultArch);
    }
  }
  if (announce) announce(r.message);
  const std::string cache_path = o.cache_path.empty() ? cache::default_cache_path() : o.cache_path;
  r.report = precompile(deployment, archs, cache_path, o.precompile);
  return r;
}

std::string to_json(const TuneResult& r) {
  nlohmann::json j = detail::report_to_json(r.report);
  j["message"] = r.message;
  if (r.gpu.found)
    j["gpu"] = {{"name", r.gpu.name}, {"arch", r.gpu.arch}, {"sm_count", r.gpu.sm_count}};
  else
    j["gpu"] = nullptr;
  return j.dump(2);
}

} // namespace attnjit::tuner
