// attn-cache: build, inspect and check kernel caches.
//
//   attn-cache precompile --model mimo-v2.5 --tp 8 --arch sm_90a,sm_80 --cache out.sqlite
//   attn-cache emit --spec 'attn;fam=prefill;...' [--tile bm64...] [--arch sm_90a] [--ptx]
//   attn-cache ls --cache out.sqlite [--json]
//   attn-cache show KEY --cache out.sqlite [--json]
//   attn-cache verify --cache out.sqlite [--no-load] [--json]
//   attn-cache merge SRC... --cache dest.sqlite [--json]
//   attn-cache export PATH --cache src.sqlite
//   attn-cache prune --cache c.sqlite [--older-than DAYS] [--arch sm_80] [--tool-version V] [--stale] [--dry-run]
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
#include "tuner/hf_config.h"
#include "tuner/precompile.h"

using namespace attnjit;

int main(int argc, char** argv) {
  CLI::App app{"Build, inspect and check attnjit kernel caches.", "attn-cache"};
  app.require_subcommand(1);

  // precompile
  std::string model, hf_config, archs, cache_path, kv_dtype;
  tuner::DeploymentOptions deployment;
  tuner::PrecompileOptions options;
  std::string dtype = "bf16";
  bool json = false;
  CLI::App* pre = app.add_subcommand("precompile", "Compile every kernel a deployment needs into a cache (no GPU needed)");
  pre->add_option("--model", model, "Built-in preset name (" + fmt::format("{}", fmt::join(tuner::builtin_presets(), ", ")) +
                                        ") or path to a preset JSON file");
  pre->add_option("--hf-config", hf_config, "A Hugging Face config.json to read the attention geometry from (instead of --model)");
  pre->add_option("--tp", deployment.tensor_parallel, "Tensor-parallel size")->capture_default_str()->check(CLI::PositiveNumber);
  pre->add_option("--arch", archs, "Target archs, comma-separated (sm_90a,sm_80)")->required();
  pre->add_option("--cache", cache_path, "Cache file to write (created if missing)")->required();
  pre->add_option("--dtype", dtype, "Element type of q, o and the KV cache")
      ->check(CLI::IsMember({"bf16", "f16"}))->capture_default_str();
  pre->add_option("--kv-dtype", kv_dtype, "Element type of the KV cache (default: --dtype)");
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

  // show
  std::string key;
  CLI::App* show = app.add_subcommand("show", "Show everything stored under a binary key or a tuning key (or a unique prefix)");
  show->add_option("key", key, "Binary key or tuning key, as ls lists them")->required();
  show->add_option("--cache", cache_path, "Cache file")->required();
  show->add_flag("--json", json, "Print JSON");

  // verify
  bool no_load = false;
  CLI::App* verify = app.add_subcommand("verify", "Check a cache: SQLite, schema, checksums, sizes, pairings, and (with a GPU) "
                                                  "that every binary for its arch loads");
  verify->add_option("--cache", cache_path, "Cache file")->required();
  verify->add_flag("--no-load", no_load, "Do not load binaries on the GPU even if there is one");
  verify->add_flag("--json", json, "Print JSON");

  // merge
  std::vector<std::string> sources;
  CLI::App* merge = app.add_subcommand("merge", "Merge caches (tuned or precompiled on several machines) into one");
  merge->add_option("sources", sources, "Source cache files")->required();
  merge->add_option("--cache", cache_path, "Destination cache file (created if missing)")->required();
  merge->add_flag("--json", json, "Print JSON");

  // export
  std::string export_path;
  CLI::App* exp = app.add_subcommand("export", "Write a compact single-file copy of a cache, fit to deploy read-only");
  exp->add_option("path", export_path, "Destination file (must not exist)")->required();
  exp->add_option("--cache", cache_path, "Source cache file")->required();

  // prune
  tuner::PruneOptions prune_opts;
  double older_days = -1;
  std::string prune_arch, prune_version;
  CLI::App* prune = app.add_subcommand("prune", "Remove binaries and tuning rows by age, arch or tool version");
  prune->add_option("--cache", cache_path, "Cache file")->required();
  prune->add_option("--older-than", older_days, "Rows created more than this many days ago");
  prune->add_option("--arch", prune_arch, "Rows for this arch (sm_80, sm_90a, ...)");
  prune->add_option("--tool-version", prune_version, "Rows written by this tool version");
  prune->add_flag("--stale", prune_opts.stale, "Rows written by another tool version, binaries of other templates (never hit again)");
  prune->add_flag("--dry-run", prune_opts.dry_run, "Count what would be removed; remove nothing");

  return tools::run(app, argc, argv, [&]() -> int {
    if (*pre) {
      deployment.dtype = tuner::parse_dtype(dtype);
      if (!kv_dtype.empty()) deployment.kv_dtype = tuner::parse_kv_dtype(kv_dtype);
      if (!model.empty() && !hf_config.empty()) throw tuner::DeploymentError("give either --model or --hf-config, not both");
      if (model.empty() && hf_config.empty()) throw tuner::DeploymentError("no model: give --model NAME|PATH or --hf-config PATH");
      const tuner::ModelPreset preset = hf_config.empty() ? tuner::load_preset(model) : tuner::load_hf_config(hf_config);
      const tuner::Deployment d = tuner::plan_deployment(preset, deployment);
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
    if (*show) {
      const tuner::KeyDetails details = tuner::show_key(cache_path, key);
      fmt::print("{}{}", json ? tuner::to_json(details) : tuner::format_text(details), json ? "\n" : "");
      return tools::kOk;
    }
    if (*merge) {
      const tuner::MergeReport r = tuner::merge_caches(cache_path, sources);
      fmt::print("{}{}", json ? tuner::to_json(r) : tuner::format_text(r), json ? "\n" : "");
      return tools::kOk;
    }
    if (*exp) {
      const int64_t bytes = tuner::export_cache(cache_path, export_path);
      fmt::print("{} -> {} ({} bytes)\n", cache_path, export_path, bytes);
      return tools::kOk;
    }
    if (*prune) {
      if (older_days >= 0) prune_opts.older_than_s = static_cast<int64_t>(older_days * 86400);
      if (!prune_arch.empty()) prune_opts.arch = prune_arch;
      if (!prune_version.empty()) prune_opts.tool_version = prune_version;
      if (!prune_opts.older_than_s && !prune_opts.arch && !prune_opts.tool_version && !prune_opts.stale)
        throw tuner::DeploymentError("prune: give at least one of --older-than, --arch, --tool-version, --stale");
      fmt::print("{}", tuner::format_text(tuner::prune_cache(cache_path, prune_opts)));
      return tools::kOk;
    }
    const tuner::CacheVerdict v = tuner::verify_cache(cache_path, !no_load);
    fmt::print("{}{}", json ? tuner::to_json(v) : tuner::format_text(v), json ? "\n" : "");
    return v.ok() ? tools::kOk : tools::kFailure;
  });
}
