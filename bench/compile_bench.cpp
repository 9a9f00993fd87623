// Cold NVRTC compile time and peak host memory per spec over the sampled matrix.
//
//   attnjit_compile_bench [--arch sm_90a] [--json PATH]
//
// Each compile runs in a forked child, so its peak resident memory (wait4's ru_maxrss) belongs
// to that compile alone and every compile is cold (no in-process state from earlier ones).
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "codegen/emit.h"
#include "codegen/nvrtc_compiler.h"

using namespace attnjit;

int main(int argc, char** argv) {
  CLI::App app{"attnjit NVRTC compile-time benchmark"};
  std::string arch = "sm_90a", json_path;
  app.add_option("--arch", arch);
  app.add_option("--json", json_path);
  CLI11_PARSE(app, argc, argv);

  std::vector<KernelSpec> specs;
  const std::pair<int, int> dims[] = {{64, 64}, {128, 128}, {192, 128}, {64, 256}, {256, 256}};
  for (auto fam : {KernelFamily::prefill, KernelFamily::decode})
    for (auto [dqk, dv] : dims)
      for (int page : {1, 16, 256})
        for (bool causal : {false, true}) {
          KernelSpec s;
          s.family = fam;
          s.head_dim_qk = dqk;
          s.head_dim_v = dv;
          s.page_size = page;
          s.causal = causal;
          specs.push_back(s);
        }
  NvrtcCompiler::instance(); // fail early, in the parent, if there is no NVRTC
  nlohmann::json rows = nlohmann::json::array();
  std::vector<double> ms, rss_mb;
  for (const auto& s : specs) {
    int pipefd[2];
    if (pipe(pipefd) != 0) return 1;
    const pid_t pid = fork();
    if (pid == 0) {
      close(pipefd[0]);
      double t = -1;
      try {
        t = NvrtcCompiler::instance().compile(emit_source(s, default_tile(s, arch)), arch).compile_ms;
      } catch (const std::exception& e) {
        fmt::print(stderr, "{}: {}\n", s.canonical(), e.what());
      }
      (void)!write(pipefd[1], &t, sizeof t);
      _exit(t < 0 ? 1 : 0);
    }
    close(pipefd[1]);
    double t = -1;
    (void)!read(pipefd[0], &t, sizeof t);
    close(pipefd[0]);
    int status = 0;
    rusage ru{};
    wait4(pid, &status, 0, &ru);
    const double mb = ru.ru_maxrss / 1024.0;
    rows.push_back({{"spec", s.canonical()}, {"tile", default_tile(s, arch).canonical()}, {"compile_ms", t}, {"peak_rss_mb", mb}});
    if (t >= 0) ms.push_back(t), rss_mb.push_back(mb);
    fmt::print("{:<90} {:>8.0f} ms {:>7.0f} MB\n", s.canonical(), t, mb);
  }
  std::sort(ms.begin(), ms.end());
  std::sort(rss_mb.begin(), rss_mb.end());
  if (ms.empty()) return 1;
  fmt::print("\n{} specs for {}: compile median {:.0f} ms, max {:.0f} ms; peak host memory median {:.0f} MB, max {:.0f} MB; "
             "parallel compiles allowed here: {}\n",
             ms.size(), arch, ms[ms.size() / 2], ms.back(), rss_mb[rss_mb.size() / 2], rss_mb.back(),
             NvrtcCompiler::max_parallel());
  if (!json_path.empty()) {
    nlohmann::json doc = {{"arch", arch}, {"rows", rows}, {"median_ms", ms[ms.size() / 2]}, {"max_ms", ms.back()},
                          {"median_rss_mb", rss_mb[rss_mb.size() / 2]}, {"max_rss_mb", rss_mb.back()}};
    if (std::FILE* f = std::fopen(json_path.c_str(), "w")) std::fputs(doc.dump(2).c_str(), f), std::fclose(f);
  }
  return ms.size() == specs.size() ? 0 : 1;
}
