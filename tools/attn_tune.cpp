// attn-tune: tune the kernels of a model deployment for this machine's GPU.
//
//   attn-tune --model mimo-v2.5 --tp 8 [--cache PATH] [--arch sm_90a] [--dry-run] [--json]
//
// The autotuner is not implemented yet: attn-tune compiles the default tile configs for the GPU
// it finds (or, with no GPU, for sm_90a) and says so. Exit status: 0 ok, 1 failure, 2 usage error.
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tools/tool_main.h"
#include "tuner/tune.h"

using namespace attnjit;

int main(int argc, char** argv) {
  CLI::App app{"Tune the attention kernels of a model deployment for this machine's GPU.", "attn-tune"};
  tuner::TuneOptions options;
  std::string archs;
  std::string dtype = "bf16";
  bool json = false;
  app.add_option("--model", options.model, "Built-in preset name (" + fmt::format("{}", fmt::join(tuner::builtin_presets(), ", ")) +
                                                ") or path to a preset JSON file")->required();
  app.add_option("--tp", options.deployment.tensor_parallel, "Tensor-parallel size")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--cache", options.cache_path, "Cache file (default: $ATTNJIT_CACHE, else $XDG_CACHE_HOME/attnjit/cache.sqlite)");
  app.add_option("--arch", archs, "Target archs, comma-separated (default: the GPU's, else sm_90a)");
  app.add_option("--dtype", dtype, "Element type of q, o and the KV cache")
      ->check(CLI::IsMember({"bf16", "f16"}))->capture_default_str();
  app.add_option("--page-size", options.deployment.page_size, "KV cache page size in tokens")->capture_default_str();
  app.add_flag("--dry-run", options.precompile.dry_run, "List the kernels and what is cached; compile nothing");
  app.add_flag("--json", json, "Print the report as JSON (the message goes to stderr)");

  return tools::run(app, argc, argv, [&]() -> int {
    options.deployment.dtype = tuner::parse_dtype(dtype);
    if (!archs.empty()) options.archs = tuner::parse_arch_list(archs);
    const tuner::TuneResult r = tuner::tune(options, [&](std::string_view message) {
      fmt::print(json ? stderr : stdout, "{}\n", message);
      std::fflush(json ? stderr : stdout);
    });
    fmt::print("{}{}", json ? tuner::to_json(r) : tuner::format_table(r.report), json ? "\n" : "");
    return r.report.ok() ? tools::kOk : tools::kFailure;
  });
}
