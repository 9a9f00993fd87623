// attn-tune: tune the attention kernels of a model deployment on this machine's GPU(s).
//
//   attn-tune --model mimo-v2.5 --tp 8
//   attn-tune --hf-config path/to/config.json --tp 4 --phases decode --max-batch 64 --budget 300
//   attn-tune --model llama-3.1-8b --devices 0,1,2,3 --cache shared.sqlite
//   attn-tune --model mimo-v2.5 --tp 8 --dry-run [--json]
//
// Exit status: 0 ok (including a run stopped by --budget: rerun to resume), 1 failure (no GPU, a
// unit failed, a worker failed), 2 usage error.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tools/tool_main.h"
#include "tuner/tune.h"

extern char** environ;

using namespace attnjit;

namespace {

std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted = true; }

std::string duration(double s) {
  if (s < 0) return "?";
  const int t = static_cast<int>(s + 0.5);
  return t >= 60 ? fmt::format("{}m{:02}s", t / 60, t % 60) : fmt::format("{}s", t);
}

// Progress: a bar redrawn in place on a terminal, a line per finished unit (and per tenth of the
// compiles) otherwise. Always on stderr, so stdout carries only the report.
class ProgressPrinter {
 public:
  explicit ProgressPrinter(bool tty) : tty_(tty) {}
  ~ProgressPrinter() { finish(); }

  void operator()(const tuner::TuneProgress& p) {
    std::lock_guard lock(mu_);
    const char* what = p.phase == tuner::TuneProgress::Phase::compile ? "compiling candidates"
                       : p.phase == tuner::TuneProgress::Phase::measure ? "measuring units"
                                                                         : "workers: units tuned";
    if (tty_) {
      constexpr int kWidth = 30;
      const int filled = p.total ? static_cast<int>(kWidth * p.done / p.total) : 0;
      std::string detail = p.detail.size() > 60 ? p.detail.substr(0, 57) + "..." : p.detail;
      fmt::print(stderr, "\r\033[K{} [{}{}] {}/{}  {}  ETA {}  {}", what, std::string(filled, '#'),
                 std::string(kWidth - filled, '.'), p.done, p.total, duration(p.elapsed_s), duration(p.eta_s), detail);
      std::fflush(stderr);
      drawn_ = true;
      return;
    }
    // Plain lines: a finished unit (measure), each tenth of the work (compile, workers).
    const bool unit_line = p.phase == tuner::TuneProgress::Phase::measure && p.done != last_done_;
    const bool tenth = p.total && (10 * p.done / p.total != 10 * last_done_ / std::max<size_t>(p.total, 1) ||
                                   p.phase != last_phase_);
    if (unit_line || (p.phase != tuner::TuneProgress::Phase::measure && tenth)) {
      fmt::print(stderr, "{}: {}/{} after {}, ETA {}{}{}\n", what, p.done, p.total, duration(p.elapsed_s),
                 duration(p.eta_s), p.detail.empty() ? "" : "; ", p.detail);
      std::fflush(stderr);
    }
    last_done_ = p.done;
    last_phase_ = p.phase;
  }

  void finish() {
    std::lock_guard lock(mu_);
    if (drawn_) fmt::print(stderr, "\n");
    drawn_ = false;
  }

 private:
  bool tty_;
  bool drawn_ = false;
  size_t last_done_ = static_cast<size_t>(-1);
  tuner::TuneProgress::Phase last_phase_ = tuner::TuneProgress::Phase::workers;
  std::mutex mu_;
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t end = std::min(s.find(sep, start), s.size());
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// Starts this program again as worker `index` of `count` on GPU `device` and waits for it.
int run_worker(const std::vector<std::string>& base_args, int index, int count, int device) {
  std::vector<std::string> args = {"/proc/self/exe"};
  args.insert(args.end(), base_args.begin(), base_args.end());
  args.insert(args.end(), {"--devices", std::to_string(device), "--worker", fmt::format("{}/{}", index, count)});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ) != 0) return 127;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"Tune the attention kernels of a model deployment on this machine's GPU(s).", "attn-tune"};
  tuner::TuneOptions options;
  std::string dtype = "bf16", kv_dtype, phases = "prefill,decode", devices = "0", search = "staged", buckets, worker;
  bool json = false;
  app.add_option("--model", options.model, "Built-in preset name (" + fmt::format("{}", fmt::join(tuner::builtin_presets(), ", ")) +
                                                ") or path to a preset JSON file");
  app.add_option("--hf-config", options.hf_config, "A Hugging Face config.json to read the attention geometry from (instead of --model)");
  app.add_option("--tp", options.deployment.tensor_parallel, "Tensor-parallel size")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--dtype", dtype, "Element type of q and o (and of the KV cache)")
      ->check(CLI::IsMember({"bf16", "f16"}))->capture_default_str();
  app.add_option("--kv-dtype", kv_dtype, "Element type of the KV cache (default: --dtype)");
  app.add_option("--page-size", options.deployment.page_size, "KV cache page size in tokens")->capture_default_str();
  app.add_option("--phases", phases, "Which kernels to tune: prefill, decode or both")->capture_default_str();
  app.add_option("--max-batch", options.matrix.max_batch, "Largest decode batch to tune for")->capture_default_str();
  app.add_option("--max-seq", options.matrix.max_seq, "Longest sequence (KV length) to tune for")->capture_default_str();
  app.add_option("--cache", options.cache_path, "Cache file (default: $ATTNJIT_CACHE, else $XDG_CACHE_HOME/attnjit/cache.sqlite)");
  app.add_option("--devices", devices, "GPUs to tune on, comma-separated CUDA ordinals: one worker process per GPU, all writing one cache")
      ->capture_default_str();
  app.add_option("--budget", options.budget_s, "Stop starting new measurements after this many seconds (rerun to resume)");
  app.add_flag("--dry-run", options.dry_run, "List the kernels, shape buckets and search spaces; no GPU needed, nothing written");
  app.add_flag("--json", json, "Print the report as JSON (progress and messages go to stderr)");
  app.add_option("--search", search, "staged (default) or exhaustive (every candidate; for measuring the staged search's regret)")
      ->check(CLI::IsMember({"staged", "exhaustive"}))->capture_default_str();
  app.add_option("--buckets", buckets, "Tune only these buckets (comma-separated names, as --dry-run lists them)");
  app.add_flag("--retune", options.retune, "Search units that already have a winner again (their measured candidates are reused)");
  app.add_flag("--regret", options.regret, "After the run, replay the staged search on each unit's measurements (use with --search exhaustive)");
  app.add_option("--jobs", options.jobs, "Compiles at once (default: ATTNJIT_MAX_PARALLEL_COMPILES, else by cores and memory)");
  app.add_option("--target-ms", options.target_ms, "GPU time to measure per candidate, in ms")->capture_default_str();
  app.add_option("--worker", worker, "Internal: run as worker INDEX/COUNT of a multi-GPU run")->group("");

  return tools::run(app, argc, argv, [&]() -> int {
    options.deployment.dtype = tuner::parse_dtype(dtype);
    if (!kv_dtype.empty()) options.deployment.kv_dtype = tuner::parse_kv_dtype(kv_dtype);
    options.mode = search == "exhaustive" ? tuner::SearchMode::exhaustive : tuner::SearchMode::staged;
    options.matrix.phases.clear();
    for (const std::string& p : split(phases, ',')) {
      if (p == "prefill") options.matrix.phases.push_back(KernelFamily::prefill);
      else if (p == "decode") options.matrix.phases.push_back(KernelFamily::decode);
      else throw tuner::DeploymentError(fmt::format("phases: got '{}'; allowed: prefill, decode", p));
    }
    options.matrix.only_buckets = split(buckets, ',');
    options.devices.clear();
    for (const std::string& d : split(devices, ',')) {
      try {
        size_t used = 0;
        options.devices.push_back(std::stoi(d, &used));
        if (used != d.size()) throw std::invalid_argument(d);
      } catch (const std::logic_error&) {
        throw tuner::DeploymentError(fmt::format("devices: got '{}'; allowed: CUDA ordinals such as 0,1,2", d));
      }
    }
    const bool is_worker = !worker.empty();
    if (is_worker && std::sscanf(worker.c_str(), "%d/%d", &options.worker_index, &options.worker_count) != 2)
      throw tuner::DeploymentError(fmt::format("worker: got '{}'; expected INDEX/COUNT", worker));

    // Workers get this command line without --devices and --json.
    std::vector<std::string> base;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--devices") {
        ++i;
        continue;
      }
      if (a.starts_with("--devices=") || a == "--json") continue;
      base.push_back(a);
    }
    options.run_worker = [base](int index, int count, int device) { return run_worker(base, index, count, device); };

    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, nullptr);
    ProgressPrinter progress(isatty(STDERR_FILENO));
    tuner::TuneHooks hooks;
    if (!is_worker) {
      hooks.announce = [&](std::string_view m) {
        fmt::print(stderr, "{}\n", m);
        std::fflush(stderr);
      };
      hooks.progress = [&](const tuner::TuneProgress& p) { progress(p); };
    }
    hooks.stop_requested = [] { return g_interrupted.load(); };
    tuner::TuneReport report;
    try {
      report = tuner::tune(options, hooks);
    } catch (const tuner::NoGpuError& e) {
      progress.finish();
      fmt::print(stderr, "attn-tune: {}\n", e.what());
      return tools::kFailure;
    }
    progress.finish();
    if (is_worker) {
      for (const auto& u : report.units)
        if (u.status == tuner::UnitStatus::failed)
          fmt::print(stderr, "attn-tune (worker {} on GPU {}): {} {}: {}\n", options.worker_index,
                     options.devices.front(), u.unit.spec.canonical(), u.unit.bucket.name(), u.reason);
      return report.ok() ? tools::kOk : tools::kFailure;
    }
    fmt::print("{}{}", json ? tuner::to_json(report) : tuner::format_table(report), json ? "\n" : "");
    return report.ok() ? tools::kOk : tools::kFailure;
  });
}
