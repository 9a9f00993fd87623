// GPU benchmark of attnjit kernels through the public C API: decode (split-KV) and prefill,
// timed with CUDA events (median of many runs after warm-up) on random inputs, beside the floor
// each shape cannot beat (bytes / copy bandwidth, FLOPs / tensor-core rate).
//
//   attnjit_gpu_bench [--json PATH] [--copy-tbs X] [--mma-tflops Y] [--only decode|prefill]
//
// The copy bandwidth is measured here (device-to-device copy, bytes read + written); the
// tensor-core rate comes from the peer script's matrix product (--mma-tflops).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "attnjit/attnjit.h"

namespace {

#define CUDA_OK(x)                                                                         \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) throw std::runtime_error(fmt::format("{}: {}", #x, cudaGetErrorString(e_))); \
  } while (0)
#define ATTN_OK(x)                                                                            \
  do {                                                                                        \
    attnjit_status s_ = (x);                                                                  \
    if (s_ != ATTNJIT_OK) throw std::runtime_error(fmt::format("{}: {}", #x, attnjit_last_error())); \
  } while (0)

template <class T> struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) { CUDA_OK(cudaMalloc(&ptr, std::max<size_t>(count, 1) * sizeof(T))); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  void upload(const std::vector<T>& h) { CUDA_OK(cudaMemcpy(ptr, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice)); }
};

// Random bf16 values ~ N(0, 1), never zero, generated fast.
std::vector<uint16_t> random_bf16(size_t n, uint64_t seed) {
  std::vector<uint16_t> out(n);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<uint16_t> table(1 << 16);
  for (auto& t : table) {
    float x = dist(rng);
    if (x == 0.f) x = 0.5f;
    uint32_t bits;
    std::memcpy(&bits, &x, 4);
    t = static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
  }
  uint64_t s = seed | 1;
  for (auto& v : out) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    v = table[s & 0xffff];
  }
  return out;
}

struct Timing {
  double median_ms, min_ms;
};

template <class F> Timing time_events(F&& launch, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) launch();
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<cudaEvent_t> ev(2 * reps);
  for (auto& e : ev) CUDA_OK(cudaEventCreate(&e));
  for (int i = 0; i < reps; ++i) {
    CUDA_OK(cudaEventRecord(ev[2 * i]));
    launch();
    CUDA_OK(cudaEventRecord(ev[2 * i + 1]));
  }
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<double> ms(reps);
  for (int i = 0; i < reps; ++i) {
    float t = 0;
    CUDA_OK(cudaEventElapsedTime(&t, ev[2 * i], ev[2 * i + 1]));
    ms[i] = t;
  }
  for (auto& e : ev) cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  return {ms[reps / 2], ms[0]};
}

double measure_copy_tbs() {
  const size_t bytes = size_t{2} << 30;
  DeviceBuffer<char> a(bytes), b(bytes);
  CUDA_OK(cudaMemset(a.ptr, 1, bytes));
  const Timing t = time_events([&] { CUDA_OK(cudaMemcpyAsync(b.ptr, a.ptr, bytes, cudaMemcpyDeviceToDevice)); }, 3, 20);
  return 2.0 * bytes / (t.median_ms * 1e-3) / 1e12;
}

struct Shape {
  std::string name;
  attnjit_family family;
  int batch, q_len, kv_len, q_heads, kv_heads, dqk, dv, page;
  bool causal;
  attnjit_kv_storage storage = ATTNJIT_KV_PAGED;
  // Patterns (all off by default).
  attnjit_dtype kv_dtype = ATTNJIT_DTYPE_BF16;
  attnjit_sparsity sparsity{};
  int window = 0, sink_tokens = 0;
  float skip_threshold = 0;
  double block_density = 0; // block sparse: fraction of KV blocks listed per q block
  bool sink_dominated = false; // the first 64 keys of every sequence dominate every row's scores
};

// Random fp8 bytes (never zero, no NaN): sign, exponent and mantissa drawn uniformly in range.
std::vector<uint8_t> random_fp8(size_t n, uint64_t seed) {
  std::vector<uint8_t> out(n);
  uint64_t s = seed | 1;
  for (auto& v : out) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    uint8_t b = static_cast<uint8_t>(s >> 32);
    if ((b & 0x7f) == 0x7f || (b & 0x7f) == 0) b ^= 0x11; // not NaN (e4m3), not zero
    v = b;
  }
  return out;
}

// "bm128.bn64.wm8.wn1.st2.sp1.oc2[.wg1|.wg2]" -> tile config (the canonical form the library prints).
attnjit_tile_config parse_tile(const std::string& s) {
  attnjit_tile_config t{};
  if (attnjit_tile_config_parse(s.c_str(), &t) != ATTNJIT_OK) throw std::runtime_error(attnjit_last_error());
  return t;
}

nlohmann::json run_shape(attnjit_context ctx, const Shape& s, double copy_tbs, double mma_tflops,
                         const attnjit_tile_config& tile) {
  const int64_t total_q = int64_t{s.batch} * s.q_len;
  const int pages_per_seq = (s.kv_len + s.page - 1) / s.page;
  const int64_t num_blocks = int64_t{s.batch} * pages_per_seq;
  const int64_t tokens_kv = s.storage == ATTNJIT_KV_PAGED ? num_blocks * s.page : int64_t{s.batch} * s.kv_len;
  const bool fp8 = s.kv_dtype == ATTNJIT_DTYPE_FP8_E4M3 || s.kv_dtype == ATTNJIT_DTYPE_FP8_E5M2;
  const int kv_bytes_per_elem = fp8 ? 1 : 2;
  DeviceBuffer<uint16_t> q(total_q * s.q_heads * s.dqk), o(total_q * s.q_heads * s.dv);
  DeviceBuffer<char> k(tokens_kv * s.kv_heads * s.dqk * kv_bytes_per_elem), v(tokens_kv * s.kv_heads * s.dv * kv_bytes_per_elem);
  // Shuffled block table: physical pages in random order, as a long-running engine has them.
  std::vector<int32_t> table(num_blocks);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(7));
  {
    std::vector<uint16_t> hq = random_bf16(q.n, 1);
    auto upload_kv = [&](DeviceBuffer<char>& buf, uint64_t seed, int d, bool is_k) {
      if (fp8) {
        std::vector<uint8_t> h = random_fp8(buf.n, seed);
        CUDA_OK(cudaMemcpy(buf.ptr, h.data(), h.size(), cudaMemcpyHostToDevice));
        return;
      }
      std::vector<uint16_t> h = random_bf16(buf.n / 2, seed);
      if (is_k && s.sink_dominated) {
        // Keys 0..63 of every sequence = 1.0 in every channel: with q = |N(0, 1)| their scores sit
        // ~0.8 sqrt(d) above the other keys' (which are ~N(0, 1)), as attention sinks do.
        for (int b = 0; b < s.batch; ++b)
          for (int j = 0; j < 64 && j < s.kv_len; ++j) {
            const int64_t tok = s.storage == ATTNJIT_KV_PAGED ? int64_t{table[b * pages_per_seq + j / s.page]} * s.page + j % s.page
                                                             : int64_t{b} * s.kv_len + j;
            for (int64_t x = tok * s.kv_heads * d; x < (tok + 1) * s.kv_heads * d; ++x) h[x] = 0x3f80;
          }
      }
      CUDA_OK(cudaMemcpy(buf.ptr, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
    };
    if (s.sink_dominated)
      for (auto& x : hq) x &= 0x7fff; // |q|
    q.upload(hq);
    upload_kv(k, 2, s.dqk, true);
    upload_kv(v, 3, s.dv, false);
  }
  CUDA_OK(cudaMemset(o.ptr, 0xff, o.n * 2));
  std::vector<int32_t> cu_q(s.batch + 1), lens(s.batch, s.kv_len), cu_k(s.batch + 1);
  for (int b = 0; b <= s.batch; ++b) cu_q[b] = b * s.q_len, cu_k[b] = b * s.kv_len;
  DeviceBuffer<int32_t> d_table(table.size()), d_cu_q(cu_q.size()), d_lens(lens.size()), d_cu_k(cu_k.size());
  d_table.upload(table);
  d_cu_q.upload(cu_q);
  d_lens.upload(lens);
  d_cu_k.upload(cu_k);

  attnjit_problem pb;
  attnjit_problem_init(&pb);
  pb.family = s.family;
  pb.head_dim_qk = s.dqk;
  pb.head_dim_v = s.dv;
  pb.page_size = s.storage == ATTNJIT_KV_PAGED ? s.page : 1;
  pb.kv_storage = s.storage;
  pb.causal = s.causal;
  pb.num_q_heads = s.q_heads;
  pb.num_kv_heads = s.kv_heads;
  pb.max_batch = s.batch;
  pb.max_total_q = total_q;
  pb.kv_dtype = s.kv_dtype;
  pb.sparsity = s.sparsity;
  pb.tile = tile;
  attnjit_plan plan;
  ATTN_OK(attnjit_plan_create(ctx, &pb, &plan));
  size_t ws_bytes = 0;
  ATTN_OK(attnjit_plan_workspace_bytes(plan, &ws_bytes));
  DeviceBuffer<char> ws(ws_bytes);
  const char* desc_ptr = nullptr;
  attnjit_plan_describe(plan, &desc_ptr);
  const std::string desc = desc_ptr ? desc_ptr : "";

  attnjit_run_args a;
  attnjit_run_args_init(&a);
  a.q = q.ptr;
  a.q_stride_head = s.dqk;
  a.q_stride_token = int64_t{s.q_heads} * s.dqk;
  a.k = k.ptr;
  a.v = v.ptr;
  a.k_stride_head = s.dqk;
  a.k_stride_token = int64_t{s.kv_heads} * s.dqk;
  a.k_stride_block = a.k_stride_token * s.page;
  a.v_stride_head = s.dv;
  a.v_stride_token = int64_t{s.kv_heads} * s.dv;
  a.v_stride_block = a.v_stride_token * s.page;
  a.block_table = d_table.ptr;
  a.block_table_stride = pages_per_seq;
  a.cu_seqlens_q = d_cu_q.ptr;
  a.seq_lens_k = d_lens.ptr;
  a.cu_seqlens_k = d_cu_k.ptr;
  a.o = o.ptr;
  a.o_stride_head = s.dv;
  a.o_stride_token = int64_t{s.q_heads} * s.dv;
  a.batch = s.batch;
  a.total_q = total_q;
  a.max_seqlen_q = s.q_len;
  a.max_seqlen_k = s.kv_len;
  a.workspace = ws.ptr;
  a.workspace_bytes = ws_bytes;
  a.window_size = s.window;
  a.sink_tokens = s.sink_tokens;
  a.skip_threshold = s.skip_threshold;
  DeviceBuffer<float> sinks(s.q_heads), kv_scales(2);
  sinks.upload(std::vector<float>(s.q_heads, 0.5f));
  kv_scales.upload({0.05f, 0.05f});
  a.sinks = sinks.ptr;
  a.k_scale = kv_scales.ptr;
  a.v_scale = kv_scales.ptr + 1;
  DeviceBuffer<unsigned long long> skip_stats(2);
  CUDA_OK(cudaMemset(skip_stats.ptr, 0, 16));
  if (s.sparsity.skip_softmax) a.skip_stats = skip_stats.ptr;
  // Block mask: per (head, q block) a random subset of KV blocks at the requested density,
  // broadcast over sequences.
  std::vector<int32_t> num_blocks_h, indices_h;
  if (s.sparsity.block_sparse) {
    const int qb = (s.q_len + s.sparsity.sparse_block_q - 1) / s.sparsity.sparse_block_q;
    const int kb = (s.kv_len + s.sparsity.sparse_block_kv - 1) / s.sparsity.sparse_block_kv;
    const int listed = std::max(1, static_cast<int>(std::lround(s.block_density * kb)));
    std::mt19937 rng(11);
    for (int h = 0; h < s.q_heads; ++h)
      for (int b = 0; b < qb; ++b) {
        std::vector<int32_t> all(kb);
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), rng);
        std::sort(all.begin(), all.begin() + listed);
        num_blocks_h.push_back(listed);
        indices_h.insert(indices_h.end(), all.begin(), all.end());
      }
    a.mask_batch = 1;
    a.mask_q_blocks = qb;
    a.mask_max_kv_blocks = kb;
  }
  DeviceBuffer<int32_t> d_num_blocks(num_blocks_h.size()), d_indices(indices_h.size());
  if (s.sparsity.block_sparse) {
    d_num_blocks.upload(num_blocks_h);
    d_indices.upload(indices_h);
    a.kv_num_blocks = d_num_blocks.ptr;
    a.kv_indices = d_indices.ptr;
  }

  const Timing t = time_events([&] { ATTN_OK(attnjit_run(plan, &a, nullptr)); }, 5, 30);
  CUDA_OK(cudaGetLastError());
  unsigned long long stats[2] = {0, 0};
  CUDA_OK(cudaMemcpy(stats, skip_stats.ptr, 16, cudaMemcpyDeviceToHost));
  attnjit_plan_destroy(plan);

  // Floors: every K/V byte read once (plus q and o), and the FLOPs of the two products.
  const double kv_bytes = double(s.batch) * s.kv_heads * s.kv_len * (s.dqk + s.dv) * kv_bytes_per_elem;
  const double io_bytes = kv_bytes + double(total_q) * s.q_heads * (s.dqk + s.dv) * 2;
  double flops = 0;
  for (int i = 0; i < s.q_len; ++i) {
    const int visible = s.causal ? s.kv_len - s.q_len + i + 1 : s.kv_len;
    flops += 2.0 * visible * (s.dqk + s.dv);
  }
  flops *= double(s.batch) * s.q_heads;
  const double floor_ms = std::max(io_bytes / (copy_tbs * 1e12), flops / (mma_tflops * 1e12)) * 1e3;
  nlohmann::json j = {{"name", s.name}, {"plan", desc}, {"median_ms", t.median_ms}, {"min_ms", t.min_ms},
                      {"kv_tbs", kv_bytes / (t.median_ms * 1e-3) / 1e12}, {"tflops", flops / (t.median_ms * 1e-3) / 1e12},
                      {"floor_ms", floor_ms}, {"workspace_bytes", ws_bytes}};
  if (s.sparsity.skip_softmax && stats[1] > 0) j["skipped_fraction"] = double(stats[0]) / double(stats[1]);
  return j;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"attnjit GPU benchmark"};
  std::string json_path, only, only_name;
  std::vector<std::string> tiles;
  std::vector<int> decode_kv;
  double copy_tbs = 0, mma_tflops = 737;
  app.add_option("--json", json_path, "write results as JSON");
  app.add_option("--copy-tbs", copy_tbs, "device copy bandwidth in TB/s (default: measured)");
  app.add_option("--mma-tflops", mma_tflops, "bf16 tensor-core rate in TFLOP/s (from a matrix product)");
  app.add_option("--only", only, "decode or prefill");
  app.add_option("--shape", only_name, "run only shapes whose name contains this");
  app.add_option("--decode-kv", decode_kv, "run decode shapes at these KV lengths instead of their own")->delimiter(',');
  app.add_option("--tiles", tiles, "tile configs to sweep (canonical strings); default: the plan's own")->delimiter(',');
  CLI11_PARSE(app, argc, argv);
  try {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
      fmt::print("no GPU: nothing to benchmark\n");
      return 0;
    }
    cudaDeviceProp prop{};
    CUDA_OK(cudaGetDeviceProperties(&prop, 0));
    if (copy_tbs <= 0) copy_tbs = measure_copy_tbs();
    attnjit_context_options opts;
    attnjit_context_options_init(&opts);
    opts.disable_cache = 1;
    attnjit_context ctx;
    ATTN_OK(attnjit_context_create(&opts, &ctx));
    std::vector<Shape> shapes = {
        {"decode b64 kv4096 h32/8 d128 p16", ATTNJIT_FAMILY_DECODE, 64, 1, 4096, 32, 8, 128, 128, 16, false},
        {"decode b8 kv16384 h32/8 d128 p16", ATTNJIT_FAMILY_DECODE, 8, 1, 16384, 32, 8, 128, 128, 16, false},
        {"prefill causal b4 s4096 h16 d128 p16", ATTNJIT_FAMILY_PREFILL, 4, 4096, 4096, 16, 16, 128, 128, 16, true},
        {"prefill causal b4 s4096 h16 d128 contiguous", ATTNJIT_FAMILY_PREFILL, 4, 4096, 4096, 16, 16, 128, 128, 1, true, ATTNJIT_KV_CONTIGUOUS},
        {"prefill b4 s4096 h16 d128 p16", ATTNJIT_FAMILY_PREFILL, 4, 4096, 4096, 16, 16, 128, 128, 16, false},
        {"prefill causal b4 s4096 h16 d192/128 p16", ATTNJIT_FAMILY_PREFILL, 4, 4096, 4096, 16, 16, 192, 128, 16, true},
    };
    // Pattern variants of the base shapes: each next to the dense kernel it is compared with.
    auto variant = [](Shape s, std::string name, auto&& edit) {
      s.name = std::move(name);
      edit(s);
      return s;
    };
    const Shape decode = shapes[0], prefill_causal = shapes[2], prefill_full = shapes[4], prefill_causal_192 = shapes[5];
    for (auto [name, dt] : {std::pair{"decode fp8-e4m3 b64 kv4096 h32/8 d128 p16", ATTNJIT_DTYPE_FP8_E4M3},
                            std::pair{"decode fp8-e5m2 b64 kv4096 h32/8 d128 p16", ATTNJIT_DTYPE_FP8_E5M2}})
      shapes.push_back(variant(decode, name, [dt = dt](Shape& s) { s.kv_dtype = dt; }));
    for (auto [name, dt] : {std::pair{"prefill causal fp8-e4m3 b4 s4096 h16 d128 p16", ATTNJIT_DTYPE_FP8_E4M3},
                            std::pair{"prefill causal fp8-e5m2 b4 s4096 h16 d128 p16", ATTNJIT_DTYPE_FP8_E5M2}})
      shapes.push_back(variant(prefill_causal, name, [dt = dt](Shape& s) { s.kv_dtype = dt; }));
    // N:M on d128 and on 192/128 (more tensor work per score for the same selection).
    for (const Shape& base : {prefill_causal, prefill_causal_192})
      for (auto [n, m] : {std::pair{2, 4}, std::pair{4, 8}, std::pair{8, 16}})
        shapes.push_back(variant(base, fmt::format("prefill causal nm{}:{} {}", n, m, base.name.substr(base.name.find(" b4") + 1)),
                                 [n = n, m = m](Shape& s) { s.sparsity.nm_n = n, s.sparsity.nm_m = m; }));
    shapes.push_back(variant(prefill_full, "prefill block-sparse 30% b4 s4096 h16 d128 p16", [](Shape& s) {
      s.sparsity.block_sparse = 1, s.sparsity.sparse_block_q = s.sparsity.sparse_block_kv = 128, s.block_density = 0.3;
    }));
    shapes.push_back(variant(prefill_full, "prefill sink-dominated dense b4 s4096 h16 d128 p16", [](Shape& s) { s.sink_dominated = true; }));
    for (float lambda : {1e-1f, 1e-2f, 1e-3f})
      shapes.push_back(variant(prefill_full, fmt::format("prefill sink-dominated skip {:g} b4 s4096 h16 d128", lambda),
                               [lambda](Shape& s) { s.sink_dominated = true, s.sparsity.skip_softmax = 1, s.skip_threshold = lambda; }));
    // The same under a causal mask (LLM prefill).
    shapes.push_back(variant(prefill_causal, "prefill causal sink-dominated dense b4 s4096 h16 d128 p16", [](Shape& s) { s.sink_dominated = true; }));
    for (float lambda : {1e-1f, 1e-2f, 1e-3f})
      shapes.push_back(variant(prefill_causal, fmt::format("prefill causal sink-dominated skip {:g} b4 s4096 h16 d128", lambda),
                               [lambda](Shape& s) { s.sink_dominated = true, s.sparsity.skip_softmax = 1, s.skip_threshold = lambda; }));
    shapes.push_back(variant(decode, "decode sink-dominated dense b64 kv4096 h32/8 d128", [](Shape& s) { s.sink_dominated = true; }));
    shapes.push_back(variant(decode, "decode sink-dominated skip 0.01 b64 kv4096 h32/8", [](Shape& s) {
      s.sink_dominated = true, s.sparsity.skip_softmax = 1, s.skip_threshold = 1e-2f;
    }));
    // MiMo-V2.5 at TP 8: 8 q heads, 1 kv head, 192/128; SWA layers: window 128 + learned sinks.
    const Shape mimo_decode{"mimo tp8 full decode b64 kv4096 h8/1 d192/128", ATTNJIT_FAMILY_DECODE, 64, 1, 4096, 8, 1, 192, 128, 16, true};
    const Shape mimo_prefill{"mimo tp8 full prefill b4 s4096 h8/1 d192/128", ATTNJIT_FAMILY_PREFILL, 4, 4096, 4096, 8, 1, 192, 128, 16, true};
    for (const Shape& base : {mimo_decode, mimo_prefill})
      for (bool fp8 : {false, true}) {
        shapes.push_back(variant(base, base.name + (fp8 ? " fp8" : ""), [fp8](Shape& s) {
          if (fp8) s.kv_dtype = ATTNJIT_DTYPE_FP8_E4M3;
        }));
        std::string swa = base.name;
        swa.replace(swa.find("full"), 4, "swa");
        shapes.push_back(variant(base, swa + (fp8 ? " fp8" : ""), [fp8](Shape& s) {
          if (fp8) s.kv_dtype = ATTNJIT_DTYPE_FP8_E4M3;
          s.sparsity.sliding_window = 1, s.sparsity.learned_sinks = 1, s.window = 128;
        }));
      }
    if (!decode_kv.empty()) { // each decode shape once per requested KV length
      std::vector<Shape> swept;
      for (const Shape& s : shapes) {
        if (s.family != ATTNJIT_FAMILY_DECODE) {
          swept.push_back(s);
          continue;
        }
        const std::string own = fmt::format("kv{}", s.kv_len);
        for (int kv : decode_kv) {
          Shape v = s;
          v.kv_len = kv;
          if (const size_t at = v.name.find(own); at != std::string::npos) v.name.replace(at, own.size(), fmt::format("kv{}", kv));
          swept.push_back(v);
        }
      }
      shapes = std::move(swept);
    }
    nlohmann::json results = nlohmann::json::array();
    fmt::print("device: {} ({} SMs); copy {:.2f} TB/s; mma {:.0f} TFLOP/s\n", prop.name, prop.multiProcessorCount, copy_tbs, mma_tflops);
    fmt::print("{:<52} {:>9} {:>9} {:>8} {:>8} {:>7}  {}\n", "shape", "ms", "floor ms", "KV TB/s", "TFLOP/s", "%floor", "plan");
    for (const auto& s : shapes) {
      if (!only.empty() && (only == "decode") != (s.family == ATTNJIT_FAMILY_DECODE)) continue;
      if (!only_name.empty() && s.name.find(only_name) == std::string::npos) continue;
      std::vector<std::string> sweep = tiles.empty() ? std::vector<std::string>{""} : tiles;
      for (const auto& tile_str : sweep) {
      nlohmann::json r;
      try {
        r = run_shape(ctx, s, copy_tbs, mma_tflops, tile_str.empty() ? attnjit_tile_config{} : parse_tile(tile_str));
      } catch (const std::exception& e) {
        fmt::print("{:<44} failed: {}\n", s.name, e.what());
        results.push_back({{"name", s.name}, {"tile", tile_str}, {"error", e.what()}});
        continue;
      }
      const std::string extra = r.contains("skipped_fraction")
                                    ? fmt::format(" skipped {:.1f}%", 100 * r["skipped_fraction"].get<double>())
                                    : "";
      fmt::print("{:<52} {:>9.3f} {:>9.3f} {:>8.2f} {:>8.1f} {:>6.0f}%{}  {}\n", s.name, r["median_ms"].get<double>(),
                 r["floor_ms"].get<double>(), r["kv_tbs"].get<double>(), r["tflops"].get<double>(),
                 100.0 * r["floor_ms"].get<double>() / r["median_ms"].get<double>(), extra, r["plan"].get<std::string>());
      results.push_back(r);
      }
    }
    attnjit_context_destroy(ctx);
    if (!json_path.empty()) {
      nlohmann::json doc = {{"device", prop.name}, {"sm_count", prop.multiProcessorCount}, {"copy_tbs", copy_tbs},
                            {"mma_tflops", mma_tflops}, {"results", results}};
      std::FILE* f = std::fopen(json_path.c_str(), "w");
      if (f) std::fputs(doc.dump(2).c_str(), f), std::fclose(f);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
