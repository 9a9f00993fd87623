// attn-cache: build, inspect and check kernel caches.
//
//   attn-cache precompile --model mimo-v2.5 --tp 8 --arch sm_90a,sm_80 --cache out.sqlite
//   attn-cache emit --spec 'attn;fam=prefill;...' [--tile bm64...] [--arch sm_90a] [--ptx]
//   attn-cache ls --cache out.sqlite [--json]
//   attn-cache verify --cache out.sqlite
//
// Exit status: 0 ok, 1 failure (a compile, the cache), 2 usage error.
#include <cstdio>
#include <string>

#include <fmt/format.h>

#include "codegen/emit.h"
#include "codegen/kernel_spec.h"
#include "codegen/nvrtc_compiler.h"
#include "tools/tool_main.h"
#include "tuner/cache_inspect.h"
#include "tuner/precompile.h"

using namespace attnjit;

int main(int argc, char** argv) {
  CLI::App app{"Build, inspect and check attnjit kernel caches.", "attn-cache"};
  app.require_subcommand(1);

  // precompile
  std::string model, archs, cache_path;
  tuner::DeploymentOptions deployment;
  tuner::PrecompileOptions options;
  std::string dtype = "bf16";
  bool json = false;
  CLI::App* pre = app.add_subcommand("precompile", "Compile every kernel a deployment needs into a cache (no GPU needed)");
  pre->add_option("--model", model, "Built-in preset name (" + fmt::format("{}", fmt::join(tuner::builtin_presets(), ", ")) +
                                        ") or path to a preset JSON file")->required();
  pre->add_option("--tp", deployment.tensor_parallel, "Tensor-parallel size")->capture_default_str()->check(CLI::PositiveNumber);
  pre->add_option("--arch", archs, "Target archs, comma-separated (sm_90a,sm_80)")->required();
  pre->add_option("--cache", cache_path, "Cache file to write (created if missing)")->required();
  pre->add_option("--dtype", dtype, "Element type of q, o and the KV cache")
      ->check(CLI::IsMember({"bf16", "f16"}))->capture_default_str();
  pre->add_option("--page-size", deployment.page_size, "KV cache page size in tokens")->capture_default_str();
  pre->add_option("--jobs", options.jobs, "Compiles at once (default: ATTNJIT_MAX_PARALLEL_COMPILES, else by cores and memory)");
  pre->add_flag("--dry-run", options.dry_run, "List what would be compiled and what is cached; compile nothing");
  pre->add_flag("--json", json, "Print the report as JSON");

  // emit
  std::string spec_text, tile_text, emit_arch = "sm_90a";
  bool ptx = false;
  CLI::App* emit = app.add_subcommand("emit", "Print the generated CUDA source of a kernel, or its PTX");
  emit->add_option("--spec", spec_text, "Canonical spec string (attn;fam=prefill;q=bf16;...)")->required();
  emit->add_option("--tile", tile_text, "Canonical tile string (bm64.bn64.wm4.wn1.st2.sp1); default: the heuristic default");
  emit->add_option("--arch", emit_arch, "Target arch for --ptx")->capture_default_str();
  emit->add_flag("--ptx", ptx, "Compile with NVRTC and print the PTX instead of the source");

  // ls
  CLI::App* ls = app.add_subcommand("ls", "List the binaries and tuning winners of a cache");
  ls->add_option("--cache", cache_path, "Cache file")->required();
  ls->add_flag("--json", json, "Print JSON");

  // verify
  CLI::App* verify = app.add_subcommand("verify", "Check a cache's integrity: SQLite, checksums, sizes, pairings");
  verify->add_option("--cache", cache_path, "Cache file")->required();
  verify->add_flag("--json", json, "Print JSON");

  return tools::run(app, argc, argv, [&]() -> int {
    if (*pre) {
      deployment.dtype = tuner::parse_dtype(dtype);
      const tuner::Deployment d = tuner::plan_deployment(tuner::load_preset(model), deployment);
      const tuner::PrecompileReport report = tuner::precompile(d, tuner::parse_arch_list(archs), cache_path, options);
      fmt::print("{}{}", json ? tuner::to_json(report) : tuner::format_table(report), json ? "\n" : "");
      return report.ok() ? tools::kOk : tools::kFailure;
    }
    if (*emit) {
      const KernelSpec spec = parse_spec(spec_text);
      const TileConfig tile = tile_text.empty() ? default_tile(spec, emit_arch) : parse_tile(tile_text);
      const std::string source = emit_source(spec, tile);
      if (!ptx) {
        fmt::print("{}", source);
        return tools::kOk;
      }
      fmt::print("{}", NvrtcCompiler::instance().compile(source, emit_arch).ptx);
      return tools::kOk;
    }
    if (*ls) {
      const tuner::CacheListing listing = tuner::list_cache(cache_path);
      fmt::print("{}{}", json ? tuner::to_json(listing) : tuner::format_table(listing), json ? "\n" : "");
      return tools::kOk;
    }
    const tuner::CacheVerdict v = tuner::verify_cache(cache_path);
    fmt::print("{}{}", json ? tuner::to_json(v) : tuner::format_text(v), json ? "\n" : "");
    return v.ok() ? tools::kOk : tools::kFailure;
  });
}
