// Runtime behaviour promised by DESIGN.md ("Runtime"), checked through the C ABI:
//  * attnjit_run allocates nothing, never synchronizes, and can be captured in a CUDA graph;
//  * plans are thread-safe: eight threads asking for the same missing kernels all get working plans;
//  * the on-disk kernel cache round-trips, layers a read-only cache, and survives a corrupt file;
//  * attnjit_run validates its arguments on the host, names the bad field, and launches nothing;
//  * one plan serves several streams at once (and the legacy default stream).
#include "gpu_harness.h"

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <latch>
#include <limits>
#include <mutex>
#include <thread>

namespace attnjit::testing {
namespace {

struct Flavor {
  const char* name;
  attnjit_family family;
  ProblemSpec spec;
};

void PrintTo(const Flavor& f, std::ostream* os) { *os << f.name; }

ProblemSpec base_spec(attnjit_dtype dt, int32_t dqk, int32_t dv, int32_t page, KvLayout layout, int32_t hq, int32_t hkv,
                      bool causal, std::vector<SeqShape> seqs) {
  ProblemSpec s;
  s.q_dtype = s.kv_dtype = dt;
  s.head_dim_qk = dqk;
  s.head_dim_v = dv;
  s.page_size = page;
  s.layout = layout;
  s.num_q_heads = hq;
  s.num_kv_heads = hkv;
  s.causal = causal;
  s.seqs = std::move(seqs);
  return s;
}

std::vector<Flavor> flavors() {
  return {
      {"prefill", ATTNJIT_FAMILY_PREFILL,
       base_spec(ATTNJIT_DTYPE_BF16, 128, 128, 16, KvLayout::nhd, 8, 2, true, {{1, 1}, {37, 37}, {5, 300}, {1, 129}})},
      {"decode", ATTNJIT_FAMILY_DECODE,
       base_spec(ATTNJIT_DTYPE_F16, 64, 64, 32, KvLayout::hnd, 8, 2, false, {{1, 1000}, {1, 33}, {1, 4097}})},
  };
}

const PlanSlot& flavor_plan(const Flavor& f) {
  return shared_plan(std::string("runtime_") + f.name, to_attnjit_problem(f.spec, f.family, false));
}

void expect_all_poison(const HostProblem& p, const DeviceProblem& dev, const char* when) {
  Outcome o;
  ASSERT_EQ(download_outputs(p, dev, false, o), cudaSuccess);
  size_t written = 0;
  for (uint16_t b : o.o) written += b != kPoison16;
  EXPECT_EQ(written, 0u) << "output elements written " << when;
}

struct GraphDeleter {
  void operator()(cudaGraph_t g) const { cudaGraphDestroy(g); }
};
struct GraphExecDeleter {
  void operator()(cudaGraphExec_t g) const { cudaGraphExecDestroy(g); }
};
using GraphPtr = std::unique_ptr<std::remove_pointer_t<cudaGraph_t>, GraphDeleter>;
using GraphExecPtr = std::unique_ptr<std::remove_pointer_t<cudaGraphExec_t>, GraphExecDeleter>;

class RuntimeFlavor : public ::testing::TestWithParam<Flavor> {};

// Global capture mode makes any allocation or synchronization inside attnjit_run (from any
// thread) an error that invalidates the capture.
TEST_P(RuntimeFlavor, CapturedInACudaGraphAndReplayedWithNewData) {
  ATTNJIT_SHARED_CONTEXT(ctx);
  const Flavor& f = GetParam();
  const PlanSlot& slot = flavor_plan(f);
  ASSERT_EQ(slot.status, ATTNJIT_OK) << slot.message;
  size_t ws = 0;
  ASSERT_EQ(attnjit_plan_workspace_bytes(slot.plan, &ws), ATTNJIT_OK) << last_error_text();
  const RunOptions opt{};
  const HostProblem a = make_problem(f.spec, fresh_seed());
  const HostProblem b = make_problem(f.spec, fresh_seed());
  SCOPED_TRACE(a.describe() + "; second data set seed " + std::to_string(b.seed));
  auto refs = std::async(std::launch::async, [&] { return std::make_pair(compute_reference(a), compute_reference(b)); });

  Stream stream;
  const cudaStream_t s = stream.get();
  ASSERT_NE(s, nullptr);
  DeviceProblem dev;
  ATTNJIT_CUDA_ASSERT(dev.upload_inputs(a, s));
  ATTNJIT_CUDA_ASSERT(dev.poison_outputs(a, ws, s));
  const attnjit_run_args args = make_run_args(a, dev, opt);

  cudaGraph_t raw_graph = nullptr;
  ATTNJIT_CUDA_ASSERT(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  const attnjit_status st = attnjit_run(slot.plan, &args, s);
  const std::string msg = st == ATTNJIT_OK ? "" : status_message(st);
  const cudaError_t end = cudaStreamEndCapture(s, &raw_graph);
  GraphPtr graph(raw_graph);
  ASSERT_EQ(st, ATTNJIT_OK) << "attnjit_run under stream capture: " << msg;
  ASSERT_EQ(end, cudaSuccess) << "the capture was invalidated (an allocation or a synchronization inside attnjit_run?): "
                              << cuda_text(end);
  ASSERT_NE(graph, nullptr);
  size_t nodes = 0;
  ATTNJIT_CUDA_ASSERT(cudaGraphGetNodes(graph.get(), nullptr, &nodes));
  EXPECT_GT(nodes, 0u) << "the captured graph is empty";
  expect_all_poison(a, dev, "by a captured (not yet launched) run");

  cudaGraphExec_t raw_exec = nullptr;
  ATTNJIT_CUDA_ASSERT(cudaGraphInstantiate(&raw_exec, graph.get(), 0));
  GraphExecPtr exec(raw_exec);
  const auto [ref_a, ref_b] = refs.get();

  ATTNJIT_CUDA_ASSERT(cudaGraphLaunch(exec.get(), s));
  ATTNJIT_CUDA_ASSERT(cudaStreamSynchronize(s));
  Outcome out_a;
  ATTNJIT_CUDA_ASSERT(download_outputs(a, dev, opt.with_lse, out_a));
  EXPECT_TRUE(matches_reference(a, ref_a, out_a, opt.with_lse)) << "first replay";

  // New inputs in the same buffers: the replay must read them, not what was there at capture.
  const void* q_before = dev.q.get();
  ATTNJIT_CUDA_ASSERT(dev.upload_inputs(b, s));
  ATTNJIT_CUDA_ASSERT(dev.poison_outputs(b, ws, s));
  ASSERT_EQ(dev.q.get(), q_before);
  ATTNJIT_CUDA_ASSERT(cudaGraphLaunch(exec.get(), s));
  ATTNJIT_CUDA_ASSERT(cudaStreamSynchronize(s));
  Outcome out_b;
  ATTNJIT_CUDA_ASSERT(download_outputs(b, dev, opt.with_lse, out_b));
  EXPECT_TRUE(matches_reference(b, ref_b, out_b, opt.with_lse)) << "replay with new data";

  // Back-to-back replays reuse the workspace as the previous replay left it.
  ATTNJIT_CUDA_ASSERT(cudaGraphLaunch(exec.get(), s));
  ATTNJIT_CUDA_ASSERT(cudaGraphLaunch(exec.get(), s));
  ATTNJIT_CUDA_ASSERT(cudaStreamSynchronize(s));
  Outcome out_c;
  ATTNJIT_CUDA_ASSERT(download_outputs(b, dev, opt.with_lse, out_c));
  EXPECT_TRUE(matches_reference(b, ref_b, out_c, opt.with_lse)) << "repeated replays";
}

TEST_P(RuntimeFlavor, RepeatedRunsDoNotAllocateDeviceMemory) {
  ATTNJIT_SHARED_CONTEXT(ctx);
  const Flavor& f = GetParam();
  const PlanSlot& slot = flavor_plan(f);
  ASSERT_EQ(slot.status, ATTNJIT_OK) << slot.message;
  const RunOptions opt{};
  const HostProblem p = make_problem(f.spec, fresh_seed());
  SCOPED_TRACE(p.describe());
  Stream stream;
  DeviceProblem dev;
  const Outcome first = run_once(slot.plan, p, dev, opt, stream.get()); // warm-up (lazy loading, if any)
  ASSERT_TRUE(first.error.empty()) << first.error;
  const attnjit_run_args args = make_run_args(p, dev, opt);
  size_t free_before = 0, free_after = 0, total = 0;
  ATTNJIT_CUDA_ASSERT(cudaMemGetInfo(&free_before, &total));
  for (int i = 0; i < 20; ++i) ASSERT_EQ(attnjit_run(slot.plan, &args, stream.get()), ATTNJIT_OK) << last_error_text();
  ATTNJIT_CUDA_ASSERT(cudaStreamSynchronize(stream.get()));
  ATTNJIT_CUDA_ASSERT(cudaMemGetInfo(&free_after, &total));
  EXPECT_EQ(free_before, free_after) << "device memory changed across 20 runs";
  Outcome out;
  ATTNJIT_CUDA_ASSERT(download_outputs(p, dev, opt.with_lse, out));
  EXPECT_TRUE(matches_reference(p, compute_reference(p), out, opt.with_lse));
}

// A host function holds the stream; attnjit_run on it must still return at once (it only enqueues).
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
};

void CUDART_CB wait_for_gate(void* user) {
  auto* g = static_cast<Gate*>(user);
  std::unique_lock<std::mutex> lock(g->mu);
  g->cv.wait(lock, [g] { return g->open; });
}

TEST_P(RuntimeFlavor, RunReturnsWhileItsStreamIsBlocked) {
  ATTNJIT_SHARED_CONTEXT(ctx);
  const Flavor& f = GetParam();
  const PlanSlot& slot = flavor_plan(f);
  ASSERT_EQ(slot.status, ATTNJIT_OK) << slot.message;
  size_t ws = 0;
  ASSERT_EQ(attnjit_plan_workspace_bytes(slot.plan, &ws), ATTNJIT_OK);
  const RunOptions opt{};
  const HostProblem p = make_problem(f.spec, fresh_seed());
  SCOPED_TRACE(p.describe());
  Stream stream;
  const cudaStream_t s = stream.get();
  DeviceProblem dev;
  ATTNJIT_CUDA_ASSERT(dev.upload_inputs(p, s));
  ATTNJIT_CUDA_ASSERT(dev.poison_outputs(p, ws, s));
  const attnjit_run_args args = make_run_args(p, dev, opt);

  Gate gate;
  ATTNJIT_CUDA_ASSERT(cudaLaunchHostFunc(s, wait_for_gate, &gate));
  std::promise<std::pair<attnjit_status, std::string>> result;
  auto returned = result.get_future();
  const int device = gpu_info().device;
  std::thread caller([&] {
    cudaSetDevice(device);
    const attnjit_status st = attnjit_run(slot.plan, &args, s);
    result.set_value({st, st == ATTNJIT_OK ? "" : status_message(st)});
  });
  const bool in_time = returned.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  {
    std::lock_guard<std::mutex> lock(gate.mu);
    gate.open = true;
  }
  gate.cv.notify_all();
  caller.join();
  EXPECT_TRUE(in_time) << "attnjit_run did not return while its stream was busy: it waits for the stream";
  const auto [st, msg] = returned.get();
  ASSERT_EQ(st, ATTNJIT_OK) << msg;
  ATTNJIT_CUDA_ASSERT(cudaStreamSynchronize(s));
  Outcome out;
  ATTNJIT_CUDA_ASSERT(download_outputs(p, dev, opt.with_lse, out));
  EXPECT_TRUE(matches_reference(p, compute_reference(p), out, opt.with_lse));
}

TEST_P(RuntimeFlavor, OnePlanServesTwoStreamsAndTheDefaultStream) {
  ATTNJIT_SHARED_CONTEXT(ctx);
  const Flavor& f = GetParam();
  const PlanSlot& slot = flavor_plan(f);
  ASSERT_EQ(slot.status, ATTNJIT_OK) << slot.message;
  size_t ws = 0;
  ASSERT_EQ(attnjit_plan_workspace_bytes(slot.plan, &ws), ATTNJIT_OK);
  const RunOptions opt{};

  {
    const HostProblem p = make_problem(f.spec, fresh_seed());
    SCOPED_TRACE("legacy default stream: " + p.describe());
    DeviceProblem dev;
    const Outcome out = run_once(slot.plan, p, dev, opt, nullptr);
    EXPECT_TRUE(matches_reference(p, compute_reference(p), out, opt.with_lse));
  }

  // Two runs of one plan in flight at once, each with its own buffers and workspace.
  const HostProblem p1 = make_problem(f.spec, fresh_seed());
  const HostProblem p2 = make_problem(f.spec, fresh_seed());
  SCOPED_TRACE(p1.describe() + "; second seed " + std::to_string(p2.seed));
  Stream s1, s2;
  DeviceProblem d1, d2;
  ATTNJIT_CUDA_ASSERT(d1.upload_inputs(p1, s1.get()));
  ATTNJIT_CUDA_ASSERT(d2.upload_inputs(p2, s2.get()));
  ATTNJIT_CUDA_ASSERT(d1.poison_outputs(p1, ws, s1.get()));
  ATTNJIT_CUDA_ASSERT(d2.poison_outputs(p2, ws, s2.get()));
  const attnjit_run_args a1 = make_run_args(p1, d1, opt), a2 = make_run_args(p2, d2, opt);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(attnjit_run(slot.plan, &a1, s1.get()), ATTNJIT_OK) << last_error_text();
    ASSERT_EQ(attnjit_run(slot.plan, &a2, s2.get()), ATTNJIT_OK) << last_error_text();
  }
  ATTNJIT_CUDA_ASSERT(cudaStreamSynchronize(s1.get()));
  ATTNJIT_CUDA_ASSERT(cudaStreamSynchronize(s2.get()));
  Outcome o1, o2;
  ATTNJIT_CUDA_ASSERT(download_outputs(p1, d1, opt.with_lse, o1));
  ATTNJIT_CUDA_ASSERT(download_outputs(p2, d2, opt.with_lse, o2));
  EXPECT_TRUE(matches_reference(p1, compute_reference(p1), o1, opt.with_lse)) << "stream 1";
  EXPECT_TRUE(matches_reference(p2, compute_reference(p2), o2, opt.with_lse)) << "stream 2";
}

INSTANTIATE_TEST_SUITE_P(Runtime, RuntimeFlavor, ::testing::ValuesIn(flavors()),
                         [](const ::testing::TestParamInfo<Flavor>& i) { return std::string(i.param.name); });

// ---- Plans --------------------------------------------------------------------------------------

TEST(PlanInfo, DescribeIsStableAndDistinguishesSpecs) {
  ATTNJIT_SHARED_CONTEXT(ctx);
  const auto fl = flavors();
  const attnjit_problem pb = to_attnjit_problem(fl[0].spec, fl[0].family, false);
  const PlanSlot& a = shared_plan("runtime_prefill", pb);
  const PlanSlot& again = shared_plan("runtime_prefill_second_plan", pb);
  const PlanSlot& other = flavor_plan(fl[1]);
  ASSERT_EQ(a.status, ATTNJIT_OK) << a.message;
  ASSERT_EQ(again.status, ATTNJIT_OK) << again.message;
  ASSERT_EQ(other.status, ATTNJIT_OK) << other.message;
  const char *da = nullptr, *dagain = nullptr, *dother = nullptr;
  ASSERT_EQ(attnjit_plan_describe(a.plan, &da), ATTNJIT_OK);
  ASSERT_EQ(attnjit_plan_describe(again.plan, &dagain), ATTNJIT_OK);
  ASSERT_EQ(attnjit_plan_describe(other.plan, &dother), ATTNJIT_OK);
  ASSERT_NE(da, nullptr);
  ASSERT_NE(dagain, nullptr);
  ASSERT_NE(dother, nullptr);
  EXPECT_GT(std::string(da).size(), 0u);
  EXPECT_EQ(std::string(da), std::string(dagain));
  EXPECT_NE(std::string(da), std::string(dother));
  size_t ws = 0;
  EXPECT_EQ(attnjit_plan_workspace_bytes(a.plan, &ws), ATTNJIT_OK);
}

// ---- Thread safety ------------------------------------------------------------------------------

struct ContextGuard {
  attnjit_context ctx = nullptr;
  ~ContextGuard() {
    if (ctx != nullptr) attnjit_context_destroy(ctx);
  }
};

class ConcurrentPlans : public ::testing::TestWithParam<bool> {};

// Eight threads start together and each asks a fresh context for the same two kernels that no
// cache holds yet (half of them in the opposite order), then runs both. The runtime promises to
// compile each once; here every thread must get a working plan for the same kernel.
TEST_P(ConcurrentPlans, EightThreadsAskForTheSameTwoMissingKernels) {
  ATTNJIT_REQUIRE_GPU();
  const bool on_disk = GetParam();
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string cache = dir.path() + "/kernels.sqlite";
  attnjit_context_options o;
  attnjit_context_options_init(&o);
  o.device = gpu_info().device;
  if (on_disk) {
    o.cache_path = cache.c_str();
  } else {
    o.disable_cache = 1;
  }
  ContextGuard guard;
  ASSERT_EQ(attnjit_context_create(&o, &guard.ctx), ATTNJIT_OK) << last_error_text();

  const Flavor problems[2] = {
      {"A", ATTNJIT_FAMILY_PREFILL,
       base_spec(ATTNJIT_DTYPE_BF16, 96, 96, 8, KvLayout::nhd, 8, 2, true, {{50, 50}, {1, 200}, {9, 90}})},
      {"B", ATTNJIT_FAMILY_DECODE,
       base_spec(ATTNJIT_DTYPE_F16, 128, 64, 8, KvLayout::hnd, 16, 4, false, {{1, 700}, {1, 5}, {1, 2000}})},
  };
  const HostProblem hp[2] = {make_problem(problems[0].spec, fresh_seed()), make_problem(problems[1].spec, fresh_seed())};
  SCOPED_TRACE(hp[0].describe() + " | " + hp[1].describe());
  const Reference ref[2] = {compute_reference(hp[0]), compute_reference(hp[1])};
  const attnjit_problem pb[2] = {to_attnjit_problem(problems[0].spec, problems[0].family, false),
                                 to_attnjit_problem(problems[1].spec, problems[1].family, false)};

  constexpr int kThreads = 8;
  struct Result {
    attnjit_status status[2] = {ATTNJIT_ERROR_INTERNAL, ATTNJIT_ERROR_INTERNAL};
    std::string message[2];
    attnjit_plan plan[2] = {nullptr, nullptr};
    std::string describe[2];
    std::string check[2];
  };
  std::vector<Result> results(kThreads);
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  const int device = gpu_info().device;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      cudaSetDevice(device);
      Result& r = results[t];
      start.arrive_and_wait();
      for (int n = 0; n < 2; ++n) {
        const int k = (t % 2 == 0) ? n : 1 - n;
        r.status[k] = attnjit_plan_create(guard.ctx, &pb[k], &r.plan[k]);
        if (r.status[k] != ATTNJIT_OK) r.message[k] = status_message(r.status[k]);
      }
      for (int k = 0; k < 2; ++k) {
        if (r.status[k] != ATTNJIT_OK) continue;
        const char* d = nullptr;
        if (attnjit_plan_describe(r.plan[k], &d) == ATTNJIT_OK && d != nullptr) r.describe[k] = d;
        Stream s;
        DeviceProblem dev;
        const Outcome out = run_once(r.plan[k], hp[k], dev, RunOptions{}, s.get());
        r.check[k] = check_outcome(hp[k], ref[k], out, true);
      }
    });
  }
  for (auto& th : threads) th.join();

  for (int t = 0; t < kThreads; ++t) {
    for (int k = 0; k < 2; ++k) {
      EXPECT_EQ(results[t].status[k], ATTNJIT_OK) << "thread " << t << " problem " << problems[k].name << ": "
                                                 << results[t].message[k];
      EXPECT_EQ(results[t].check[k], "") << "thread " << t << " problem " << problems[k].name;
      EXPECT_EQ(results[t].describe[k], results[0].describe[k]) << "thread " << t << " got another kernel";
    }
  }
  EXPECT_NE(results[0].describe[0], results[0].describe[1]);
  for (auto& r : results) {
    for (auto* p : r.plan) {
      if (p != nullptr) {
        EXPECT_EQ(attnjit_plan_destroy(p), ATTNJIT_OK);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Runtime, ConcurrentPlans, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return std::string(i.param ? "on_disk_cache" : "cache_disabled");
                         });

// ---- Kernel cache ---------------------------------------------------------------------------------

// Creates a context on `opts`, a plan of `f`, runs it once and checks it; returns the describe string.
void plan_and_run(const attnjit_context_options& opts, const Flavor& f, std::string* describe) {
  ContextGuard guard;
  ASSERT_EQ(attnjit_context_create(&opts, &guard.ctx), ATTNJIT_OK) << last_error_text();
  const attnjit_problem pb = to_attnjit_problem(f.spec, f.family, false);
  attnjit_plan plan = nullptr;
  const attnjit_status st = attnjit_plan_create(guard.ctx, &pb, &plan);
  ASSERT_EQ(st, ATTNJIT_OK) << status_message(st);
  const char* d = nullptr;
  EXPECT_EQ(attnjit_plan_describe(plan, &d), ATTNJIT_OK);
  if (describe != nullptr && d != nullptr) *describe = d;
  const HostProblem p = make_problem(f.spec, fresh_seed());
  Stream s;
  DeviceProblem dev;
  const Outcome out = run_once(plan, p, dev, RunOptions{}, s.get());
  EXPECT_TRUE(matches_reference(p, compute_reference(p), out, true));
  EXPECT_EQ(attnjit_plan_destroy(plan), ATTNJIT_OK);
}

Flavor cache_flavor() {
  return {"cache", ATTNJIT_FAMILY_DECODE,
          base_spec(ATTNJIT_DTYPE_BF16, 64, 64, 16, KvLayout::nhd, 4, 4, false, {{1, 300}, {1, 17}})};
}

TEST(KernelCache, PlansRoundTripThroughAFileAndALayeredReadOnlyCache) {
  ATTNJIT_REQUIRE_GPU();
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.path() + "/kernels.sqlite";
  const std::string local = dir.path() + "/local.sqlite";
  attnjit_context_options o;
  attnjit_context_options_init(&o);
  o.device = gpu_info().device;
  o.cache_path = path.c_str();

  std::string first, second, layered;
  plan_and_run(o, cache_flavor(), &first); // compiles and stores
  if (HasFatalFailure()) return;
  ASSERT_TRUE(std::filesystem::exists(path)) << "no cache file written at " << path;
  EXPECT_GT(std::filesystem::file_size(path), 0u);
  plan_and_run(o, cache_flavor(), &second); // loads from the file
  EXPECT_EQ(first, second);

  attnjit_context_options layered_opts = o;
  layered_opts.readonly_cache_path = path.c_str();
  layered_opts.cache_path = local.c_str();
  plan_and_run(layered_opts, cache_flavor(), &layered);
  EXPECT_EQ(first, layered);
}

TEST(KernelCache, ACorruptCacheFileIsReplacedNotFatal) {
  ATTNJIT_REQUIRE_GPU();
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.path() + "/kernels.sqlite";
  {
    std::ofstream junk(path, std::ios::binary);
    for (int i = 0; i < 512; ++i) junk << "this is not an SQLite database ";
  }
  attnjit_context_options o;
  attnjit_context_options_init(&o);
  o.device = gpu_info().device;
  o.cache_path = path.c_str();
  plan_and_run(o, cache_flavor(), nullptr);
}

// ---- Host-side validation of run arguments ------------------------------------------------------

struct BadArgs {
  const char* what;
  std::function<void(attnjit_run_args&)> edit;
  std::vector<std::string> fields; // the message must name one of these
};

void check_refusals(const char* label, attnjit_plan plan, const HostProblem& p, const attnjit_problem& pb) {
  SCOPED_TRACE(std::string(label) + ": " + p.describe());
  size_t ws = 0;
  ASSERT_EQ(attnjit_plan_workspace_bytes(plan, &ws), ATTNJIT_OK);
  Stream stream;
  DeviceProblem dev;
  ATTNJIT_CUDA_ASSERT(dev.upload_inputs(p, stream.get()));
  ATTNJIT_CUDA_ASSERT(dev.poison_outputs(p, ws, stream.get()));
  const RunOptions opt{};
  const attnjit_run_args good = make_run_args(p, dev, opt);

  std::vector<BadArgs> bad = {
      {"struct_size 0", [](attnjit_run_args& a) { a.struct_size = 0; }, {"struct_size"}},
      {"null q", [](attnjit_run_args& a) { a.q = nullptr; }, {"q"}},
      {"null k", [](attnjit_run_args& a) { a.k = nullptr; }, {"k"}},
      {"null v", [](attnjit_run_args& a) { a.v = nullptr; }, {"v"}},
      {"null o", [](attnjit_run_args& a) { a.o = nullptr; }, {"o"}},
      {"null cu_seqlens_q", [](attnjit_run_args& a) { a.cu_seqlens_q = nullptr; }, {"cu_seqlens_q"}},
      {"batch above max_batch", [&](attnjit_run_args& a) { a.batch = pb.max_batch + 1; }, {"batch", "max_batch"}},
      {"negative batch", [](attnjit_run_args& a) { a.batch = -1; }, {"batch"}},
      {"total_q above max_total_q", [&](attnjit_run_args& a) { a.total_q = pb.max_total_q + 1; }, {"total_q", "max_total_q"}},
      {"negative total_q", [](attnjit_run_args& a) { a.total_q = -1; }, {"total_q"}},
      {"negative max_seqlen_k", [](attnjit_run_args& a) { a.max_seqlen_k = -1; }, {"max_seqlen_k"}},
      {"NaN scale", [](attnjit_run_args& a) { a.scale = std::numeric_limits<float>::quiet_NaN(); }, {"scale"}},
      // Row strides are stepped in 32-bit byte offsets: 2^31 bytes or more is refused, not wrapped.
      {"k_stride_token of 2^31 elements", [](attnjit_run_args& a) { a.k_stride_token = int64_t{1} << 31; },
       {"k_stride_token"}},
  };
  if (p.paged()) {
    bad.push_back({"null block_table", [](attnjit_run_args& a) { a.block_table = nullptr; }, {"block_table"}});
    bad.push_back({"null seq_lens_k", [](attnjit_run_args& a) { a.seq_lens_k = nullptr; }, {"seq_lens_k"}});
    bad.push_back({"block_table_stride 0", [](attnjit_run_args& a) { a.block_table_stride = 0; }, {"block_table_stride"}});
    bad.push_back({"v_stride_block of 2^31 elements", [](attnjit_run_args& a) { a.v_stride_block = int64_t{1} << 31; },
                   {"v_stride_block"}});
  } else {
    bad.push_back({"null cu_seqlens_k", [](attnjit_run_args& a) { a.cu_seqlens_k = nullptr; }, {"cu_seqlens_k"}});
  }
  if (ws > 0) {
    bad.push_back({"null workspace", [](attnjit_run_args& a) { a.workspace = nullptr; }, {"workspace"}});
    bad.push_back({"workspace too small", [ws](attnjit_run_args& a) { a.workspace_bytes = ws - 1; },
                   {"workspace", "workspace_bytes"}});
  }
  for (const BadArgs& b : bad) {
    attnjit_run_args a = good;
    b.edit(a);
    const attnjit_status st = attnjit_run(plan, &a, stream.get());
    const char* msg = attnjit_last_error();
    const std::string m = msg ? msg : "";
    EXPECT_EQ(st, ATTNJIT_ERROR_INVALID_ARGUMENT) << b.what << ": " << m;
    std::string fields;
    for (const std::string& f : b.fields) fields += (fields.empty() ? "" : " or ") + f;
    EXPECT_TRUE(names_field(m, b.fields))
        << b.what << ": the message should name " << fields << ": \"" << m << "\"";
  }
  ATTNJIT_CUDA_ASSERT(cudaStreamSynchronize(stream.get()));
  expect_all_poison(p, dev, "by refused runs");

  // The plan is still good after all that.
  const Outcome out = run_once(plan, p, dev, opt, stream.get());
  EXPECT_TRUE(matches_reference(p, compute_reference(p), out, opt.with_lse));
}

TEST(RunValidation, BadArgumentsAreRefusedOnTheHostAndNothingRuns) {
  ATTNJIT_SHARED_CONTEXT(ctx);
  for (attnjit_kv_storage storage : {ATTNJIT_KV_PAGED, ATTNJIT_KV_CONTIGUOUS}) {
    ProblemSpec s = base_spec(ATTNJIT_DTYPE_BF16, 64, 64, 16, KvLayout::nhd, 4, 4, false, {{1, 50}, {1, 10}});
    s.storage = storage;
    const attnjit_problem pb = to_attnjit_problem(s, ATTNJIT_FAMILY_DECODE, false);
    const std::string name = storage == ATTNJIT_KV_PAGED ? "validation_paged" : "validation_contiguous";
    const PlanSlot& slot = shared_plan(name, pb);
    ASSERT_EQ(slot.status, ATTNJIT_OK) << slot.message;
    check_refusals(name.c_str(), slot.plan, make_problem(s, fresh_seed()), pb);
  }
}

} // namespace
} // namespace attnjit::testing
