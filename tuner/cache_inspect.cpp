#include "tuner/cache_inspect.h"

#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "codegen/kernel_spec.h"
#include "runtime/context.h"
#include "runtime/cuda_driver.h"
#include "tuner/table.h"

namespace attnjit::tuner {

namespace {

std::unique_ptr<cache::Store> open_read_only(const std::string& path, std::vector<std::string>& warnings) {
  cache::OpenOptions o;
  o.read_only = true;
  o.warn = [&warnings](std::string_view m) { warnings.emplace_back(m); };
  return cache::Store::open(path, o);
}

// Loads every binary for GPU 0's arch with cuModuleLoadData (and unloads it).
void check_loadable(cache::Store& store, CacheVerdict& v) {
  try {
    const CudaDriver& d = CudaDriver::get();
    int count = 0;
    d.check(d.device_get_count(&count), "cuDeviceGetCount");
    if (count == 0) {
      v.no_gpu_reason = "no CUDA device";
      return;
    }
    CUdevice dev = 0;
    d.check(d.device_get(&dev, 0), "cuDeviceGet");
    char name[256] = {};
    d.check(d.device_get_name(name, sizeof name, dev), "cuDeviceGetName");
    int major = 0, minor = 0;
    d.check(d.device_get_attribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "cuDeviceGetAttribute");
    d.check(d.device_get_attribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "cuDeviceGetAttribute");
    const std::string arch = arch_for(major, minor);
    CUcontext ctx = nullptr;
    d.check(d.primary_ctx_retain(&ctx, dev), "cuDevicePrimaryCtxRetain");
    struct Release {
      const CudaDriver& d;
      CUdevice dev;
      ~Release() { d.primary_ctx_release(dev); }
    } release{d, dev};
    d.check(d.ctx_set_current(ctx), "cuCtxSetCurrent");
    v.gpu = fmt::format("{} ({})", name, arch);
    for (const cache::BinaryRecord& meta : store.list_binaries(false)) {
      if (meta.arch != arch) {
        ++v.other_arch;
        continue;
      }
      const std::optional<cache::BinaryRecord> rec = store.get_binary(meta.key);
      if (!rec) continue; // damaged: integrity_check already reported it
      CUmodule module = nullptr;
      const CUresult rc = d.module_load_data(&module, rec->cubin.data());
      if (rc != CUDA_SUCCESS) {
        const char* msg = nullptr;
        d.get_error_string(rc, &msg);
        v.problems.push_back(fmt::format("binary {} ({} {}): cuModuleLoadData failed: {}", meta.key, meta.tile, arch,
                                         msg ? msg : "unknown error"));
        continue;
      }
      d.module_unload(module);
      ++v.loaded;
    }
  } catch (const NoDeviceError& e) {
    v.no_gpu_reason = e.what();
  } catch (const CudaError& e) {
    v.problems.push_back(fmt::format("loading binaries: {}", e.what()));
  }
}

std::string short_spec(const std::string& canonical) {
  try {
    return parse_spec(canonical).label();
  } catch (const std::exception&) {
    return canonical; // written by another version: show it as it is
  }
}

} // namespace

CacheListing list_cache(const std::string& path) {
  if (!std::filesystem::exists(path)) throw cache::Error(fmt::format("{}: no such cache file", path));
  CacheListing l;
  l.path = path;
  auto store = open_read_only(path, l.warnings);
  if (store->state() != cache::StoreState::ready)
    throw cache::Error(fmt::format("{}: not a readable attnjit cache{}{}", path, l.warnings.empty() ? "" : ": ",
                                   l.warnings.empty() ? "" : l.warnings.front()));
  l.stats = store->stats();
  l.binaries = store->list_binaries();
  l.winners = store->list_winners();
  return l;
}

std::string to_json(const CacheListing& l) {
  using nlohmann::json;
  json binaries = json::array();
  for (const auto& b : l.binaries)
    binaries.push_back({{"key", b.key},
                        {"spec", b.spec},
                        {"tile", b.tile},
                        {"arch", b.arch},
                        {"codegen_version", b.codegen_version},
                        {"nvrtc_version", b.nvrtc_version},
                        {"compile_options", b.compile_options},
                        {"registers", b.registers},
                        {"shared_bytes", b.shared_bytes},
                        {"spill_bytes", b.spill_bytes},
                        {"compile_ms", b.compile_ms},
                        {"cubin_bytes", b.cubin_size},
                        {"ptx_bytes", b.ptx_size},
                        {"cubin_xxh3", b.cubin_xxh3},
                        {"tool_version", b.tool_version},
                        {"created_unix", b.created_unix}});
  json winners = json::array();
  for (const auto& w : l.winners)
    winners.push_back({{"tuning_key", w.tuning_key},
                       {"spec", w.spec},
                       {"tile", w.tile},
                       {"median_us", w.median_us},
                       {"device", w.device_name},
                       {"arch", w.arch},
                       {"sm_count", w.sm_count},
                       {"bucket", w.bucket},
                       {"tool_version", w.tool_version},
                       {"created_unix", w.created_unix}});
  json out = {{"path", l.path},
              {"stats",
               {{"binaries", l.stats.binaries},
                {"cubin_bytes", l.stats.cubin_bytes},
                {"ptx_bytes", l.stats.ptx_bytes},
                {"candidates", l.stats.candidates},
                {"winners", l.stats.winners},
                {"file_bytes", l.stats.file_bytes}}},
              {"binaries", std::move(binaries)},
              {"winners", std::move(winners)}};
  if (!l.warnings.empty()) out["warnings"] = l.warnings;
  return out.dump(2);
}

std::string format_table(const CacheListing& l) {
  std::string out = fmt::format("{}: {} binaries ({:.1f} MiB of cubin, {:.1f} MiB of PTX), {} tuning "
                                "candidates, {} winners\n",
                                l.path, l.stats.binaries, l.stats.cubin_bytes / 1048576.0,
                                l.stats.ptx_bytes / 1048576.0, l.stats.candidates, l.stats.winners);
  if (!l.binaries.empty()) {
    Table t;
    t.add({"KEY", "KERNEL", "TILE", "ARCH", "NVRTC", "REGS", "SPILL", "SMEM", "CUBIN", "COMPILE"});
    for (const auto& b : l.binaries)
      t.add({b.key, short_spec(b.spec), b.tile, b.arch, b.nvrtc_version,
             b.registers > 0 ? std::to_string(b.registers) : "?", // 0: no ptxas report (see precompile.h)
             b.registers > 0 && b.spill_bytes >= 0 ? std::to_string(b.spill_bytes) : "?", std::to_string(b.shared_bytes),
             fmt::format("{} KiB", (b.cubin_size + 1023) / 1024), fmt::format("{:.0f} ms", b.compile_ms)});
    out += t.render();
  }
  if (!l.winners.empty()) {
    Table t;
    t.add({"TUNED FOR", "KERNEL", "BUCKET", "WINNER", "MEDIAN"});
    for (const auto& w : l.winners)
      t.add({fmt::format("{} ({})", w.device_name, w.arch), short_spec(w.spec), w.bucket, w.tile,
             fmt::format("{:.2f} us", w.median_us)});
    out += t.render();
  }
  for (const auto& w : l.warnings) out += fmt::format("warning: {}\n", w);
  return out;
}

CacheVerdict verify_cache(const std::string& path, bool load_on_gpu) {
  CacheVerdict v;
  v.path = path;
  if (!std::filesystem::exists(path)) {
    v.problems.push_back(fmt::format("{}: no such cache file", path));
    return v;
  }
  std::vector<std::string> warnings;
  auto store = open_read_only(path, warnings);
  v.problems = warnings;
  if (store->state() == cache::StoreState::ready) v.binaries = store->stats().binaries;
  for (auto& p : store->integrity_check(/*repair=*/false)) v.problems.push_back(std::move(p));
  if (load_on_gpu && store->state() == cache::StoreState::ready) check_loadable(*store, v);
  return v;
}

std::string to_json(const CacheVerdict& v) {
  nlohmann::json j = {{"path", v.path}, {"binaries", v.binaries}, {"ok", v.ok()}, {"problems", v.problems}};
  if (!v.gpu.empty()) j["load"] = {{"gpu", v.gpu}, {"loaded", v.loaded}, {"other_arch", v.other_arch}};
  else if (!v.no_gpu_reason.empty()) j["load"] = {{"skipped", v.no_gpu_reason}};
  return j.dump(2);
}

std::string format_text(const CacheVerdict& v) {
  std::string load;
  if (!v.gpu.empty())
    load = fmt::format("; {} loaded on {}{}", v.loaded, v.gpu,
                       v.other_arch ? fmt::format(", {} for other archs not loaded", v.other_arch) : "");
  else if (!v.no_gpu_reason.empty())
    load = fmt::format("; loadability not checked: {}", v.no_gpu_reason);
  if (v.ok()) return fmt::format("{}: ok ({} binaries intact{})\n", v.path, v.binaries, load);
  std::string out = fmt::format("{}: {} problem{}{}\n", v.path, v.problems.size(), v.problems.size() == 1 ? "" : "s", load);
  for (const auto& p : v.problems) out += fmt::format("  {}\n", p);
  return out;
}

} // namespace attnjit::tuner
