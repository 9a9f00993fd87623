// Host-side costs of the runtime (Google Benchmark; needs a GPU, prints a line and exits 0 without).
//
//   PlanWarm      plan creation (tile left to attnjit) when the tuned winner and its binary are in
//                 the cache but the module is not loaded in this context yet: the tuned-tile lookup
//                 (tuned_tile_for_plan), the binary read with its checksum, cuModuleLoadData and the
//                 function attributes. Goal: under 2 ms.
//   TunedLookup   the tuned-tile lookup alone (the part of PlanWarm the tuner adds).
//   RunCApi       attnjit_run: host validation, parameter packing, cuLaunchKernel (C ABI).
//   RunInternal   Plan::run, the same without the C ABI wrapper.
//   BareLaunch    cuLaunchKernel of the same kernel with the same parameters, nothing else.
// A run adds (RunCApi - BareLaunch) of host time per call; goal: under 4 us. Launches are queued
// 256 at a time and the stream drained outside the timed region, so the GPU never throttles the
// host loop.
//
//   attnjit_host_bench [--benchmark_filter=...] [--benchmark_format=json]
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include <benchmark/benchmark.h>

#include "attnjit/attnjit.h"
#include "cache/store.h"
#include "codegen/emit.h"
#include "runtime/context.h"
#include "runtime/cuda_driver.h"
#include "runtime/tuned_tiles.h"
#include "templates/params.cuh"

namespace {

using namespace attnjit;

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// MiMo-V2.5's global-attention decode at TP 8: 8 q heads over 1 kv head, 192/128, pages of 16.
constexpr int kQHeads = 8, kKvHeads = 1, kDqk = 192, kDv = 128, kPage = 16;
constexpr int kBatch = 1, kKv = 256;
// A tile other than the default, so the plan really takes the tuned winner.
const TileConfig kTuned{16, 128, 1, 8, 2, 32, 1};

KernelSpec decode_spec() {
  KernelSpec s;
  s.family = KernelFamily::decode;
  s.head_dim_qk = kDqk;
  s.head_dim_v = kDv;
  s.page_size = kPage;
  s.causal = true;
  return s;
}

attnjit_problem decode_problem() {
  attnjit_problem pb;
  attnjit_problem_init(&pb);
  pb.family = ATTNJIT_FAMILY_DECODE;
  pb.head_dim_qk = kDqk;
  pb.head_dim_v = kDv;
  pb.page_size = kPage;
  pb.causal = 1;
  pb.num_q_heads = kQHeads;
  pb.num_kv_heads = kKvHeads;
  pb.max_batch = 256;
  pb.max_total_q = 256;
  return pb;
}

struct Fixture {
  std::string dir, cache;
  attnjit_context_options opts{};
  std::unique_ptr<Context> keeper; // keeps the primary context alive between timed contexts
  TuningDevice device;

  Fixture() {
    char tmpl[] = "/tmp/attnjit-host-bench-XXXXXX";
    dir = mkdtemp(tmpl);
    cache = dir + "/cache.sqlite";
    attnjit_context_options_init(&opts);
    opts.cache_path = cache.c_str();
    keeper = std::make_unique<Context>(opts);
    device = TuningDevice{keeper->device().name, keeper->device().sm_count, keeper->device().arch};
    // The binary of the tuned tile, compiled and stored once.
    attnjit_problem pb = decode_problem();
    pb.tile = tile_to_c(kTuned);
    Plan warm(*keeper, pb);
    // Winner rows for the buckets a plan with max_batch 256 looks at.
    auto store = cache::Store::open(cache);
    for (int kv = kFirstKvEdge; kv <= (1 << 16); kv *= 4) {
      const ShapeBucket b = decode_bucket(256, 1, kv, kQHeads / kKvHeads);
      cache::WinnerRecord w;
      w.tuning_key = tuning_key(decode_spec(), device, b);
      w.tile = kTuned.canonical();
      w.spec = decode_spec().canonical();
      w.median_us = 10;
      w.device_name = device.name;
      w.arch = device.arch;
      w.sm_count = device.sm_count;
      w.bucket = b.name();
      store->put_winner(w);
    }
  }
  ~Fixture() {
    keeper.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

void PlanWarm(benchmark::State& state) {
  Fixture& f = fixture();
  for (auto _ : state) {
    state.PauseTiming();
    auto ctx = std::make_unique<Context>(f.opts); // a fresh context: the module is not loaded
    state.ResumeTiming();
    // The tile is left to attnjit: the plan looks up the tuned winner (tuned_tile_for_plan).
    auto plan = std::make_unique<Plan>(*ctx, decode_problem());
    benchmark::DoNotOptimize(plan.get());
    state.PauseTiming();
    const bool tuned = plan->tile() == kTuned;
    plan.reset();
    ctx.reset();
    state.ResumeTiming();
    if (!tuned) {
      state.SkipWithError("the plan did not take the tuned winner");
      break;
    }
  }
}
BENCHMARK(PlanWarm)->Unit(benchmark::kMicrosecond)->Iterations(50);

void TunedLookup(benchmark::State& state) {
  Fixture& f = fixture();
  const KernelSpec spec = decode_spec();
  for (auto _ : state) {
    auto t = tuned_tile_for_plan(*f.keeper->store(), spec, f.device, kQHeads, kKvHeads, 256, 256);
    benchmark::DoNotOptimize(t);
  }
}
BENCHMARK(TunedLookup)->Unit(benchmark::kMicrosecond);

// Device buffers and arguments of one small decode call (one launch: no split-KV reduce).
struct RunSetup {
  void* q = nullptr;
  void* k = nullptr;
  void* v = nullptr;
  void* o = nullptr;
  void* ws = nullptr;
  int32_t* table = nullptr;
  int32_t* cu_q = nullptr;
  int32_t* lens = nullptr;
  cudaStream_t stream = nullptr;
  attnjit_run_args args{};
  size_t ws_bytes = 0;

  explicit RunSetup(size_t workspace) : ws_bytes(workspace) {
    const int pages = kKv / kPage;
    cuda_ok(cudaMalloc(&q, size_t{kBatch} * kQHeads * kDqk * 2), "cudaMalloc");
    cuda_ok(cudaMalloc(&k, size_t{kBatch} * kKv * kKvHeads * kDqk * 2), "cudaMalloc");
    cuda_ok(cudaMalloc(&v, size_t{kBatch} * kKv * kKvHeads * kDv * 2), "cudaMalloc");
    cuda_ok(cudaMalloc(&o, size_t{kBatch} * kQHeads * kDv * 2), "cudaMalloc");
    cuda_ok(cudaMalloc(&ws, std::max<size_t>(ws_bytes, 16)), "cudaMalloc");
    cuda_ok(cudaMalloc(&table, sizeof(int32_t) * kBatch * pages), "cudaMalloc");
    cuda_ok(cudaMalloc(&cu_q, sizeof(int32_t) * (kBatch + 1)), "cudaMalloc");
    cuda_ok(cudaMalloc(&lens, sizeof(int32_t) * kBatch), "cudaMalloc");
    cuda_ok(cudaMemset(q, 0x3c, size_t{kBatch} * kQHeads * kDqk * 2), "cudaMemset");
    cuda_ok(cudaMemset(k, 0x3c, size_t{kBatch} * kKv * kKvHeads * kDqk * 2), "cudaMemset");
    cuda_ok(cudaMemset(v, 0x3c, size_t{kBatch} * kKv * kKvHeads * kDv * 2), "cudaMemset");
    std::vector<int32_t> t(kBatch * pages), cq(kBatch + 1), l(kBatch, kKv);
    for (int i = 0; i < kBatch * pages; ++i) t[i] = i;
    for (int b = 0; b <= kBatch; ++b) cq[b] = b;
    cuda_ok(cudaMemcpy(table, t.data(), t.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    cuda_ok(cudaMemcpy(cu_q, cq.data(), cq.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    cuda_ok(cudaMemcpy(lens, l.data(), l.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    attnjit_run_args_init(&args);
    args.q = q;
    args.q_stride_head = kDqk;
    args.q_stride_token = kQHeads * kDqk;
    args.k = k;
    args.v = v;
    args.k_stride_head = kDqk;
    args.k_stride_token = kKvHeads * kDqk;
    args.k_stride_block = args.k_stride_token * kPage;
    args.v_stride_head = kDv;
    args.v_stride_token = kKvHeads * kDv;
    args.v_stride_block = args.v_stride_token * kPage;
    args.block_table = table;
    args.block_table_stride = pages;
    args.cu_seqlens_q = cu_q;
    args.seq_lens_k = lens;
    args.o = o;
    args.o_stride_head = kDv;
    args.o_stride_token = kQHeads * kDv;
    args.batch = kBatch;
    args.total_q = kBatch;
    args.max_seqlen_q = 1;
    args.max_seqlen_k = kKv;
    args.workspace = ws;
    args.workspace_bytes = ws_bytes;
  }
  ~RunSetup() {
    cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
    for (void* p : {q, k, v, o, ws, static_cast<void*>(table), static_cast<void*>(cu_q), static_cast<void*>(lens)})
      cudaFree(p);
  }
};

constexpr int kQueued = 256;

template <class Launch> void timed_launches(benchmark::State& state, cudaStream_t stream, Launch&& launch) {
  int queued = 0;
  for (auto _ : state) {
    launch();
    if (++queued == kQueued) {
      state.PauseTiming();
      cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
      queued = 0;
      state.ResumeTiming();
    }
  }
  cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

void RunCApi(benchmark::State& state) {
  Fixture& f = fixture();
  attnjit_context ctx = nullptr;
  if (attnjit_context_create(&f.opts, &ctx) != ATTNJIT_OK) {
    state.SkipWithError(attnjit_last_error());
    return;
  }
  attnjit_problem pb = decode_problem();
  attnjit_plan plan = nullptr;
  if (attnjit_plan_create(ctx, &pb, &plan) != ATTNJIT_OK) {
    state.SkipWithError(attnjit_last_error());
    attnjit_context_destroy(ctx);
    return;
  }
  size_t ws = 0;
  attnjit_plan_workspace_bytes(plan, &ws);
  RunSetup s(ws);
  timed_launches(state, s.stream, [&] {
    if (attnjit_run(plan, &s.args, s.stream) != ATTNJIT_OK) state.SkipWithError(attnjit_last_error());
  });
  attnjit_plan_destroy(plan);
  attnjit_context_destroy(ctx);
}
BENCHMARK(RunCApi)->Unit(benchmark::kMicrosecond)->Iterations(20 * kQueued);

void RunInternal(benchmark::State& state) {
  Fixture& f = fixture();
  Plan plan(*f.keeper, decode_problem());
  RunSetup s(plan.workspace_bytes());
  if (plan.num_splits(kBatch, 1, kKv) != 1) {
    state.SkipWithError("the call would split KV (two launches): pick a shorter KV length");
    return;
  }
  timed_launches(state, s.stream, [&] { plan.run(s.args, reinterpret_cast<CUstream>(s.stream)); });
}
BENCHMARK(RunInternal)->Unit(benchmark::kMicrosecond)->Iterations(20 * kQueued);

void BareLaunch(benchmark::State& state) {
  Fixture& f = fixture();
  Plan plan(*f.keeper, decode_problem());
  RunSetup s(plan.workspace_bytes());
  // The launch Plan::run makes for this call, packed once outside the timed loop.
  Plan::Launch l = plan.prepare(s.args);
  const LoadedKernel& kernel = plan.kernel();
  void* params[] = {&l.params};
  const CudaDriver& d = f.keeper->driver();
  timed_launches(state, s.stream, [&] {
    d.launch_kernel(kernel.attention, l.grid[0], l.grid[1], l.grid[2], kernel.threads, 1, 1, kernel.shared_bytes,
                    reinterpret_cast<CUstream>(s.stream), params, nullptr);
  });
}
BENCHMARK(BareLaunch)->Unit(benchmark::kMicrosecond)->Iterations(20 * kQueued);

} // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  int n = 0;
  try {
    const CudaDriver& d = CudaDriver::get();
    d.check(d.device_get_count(&n), "cuDeviceGetCount");
  } catch (const std::exception& e) {
    std::printf("no GPU (%s): host benchmarks skipped\n", e.what());
    return 0;
  }
  if (n == 0) {
    std::printf("no GPU: host benchmarks skipped\n");
    return 0;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
