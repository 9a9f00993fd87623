// Embedding attnjit in a host program: attention over the program's own paged KV cache, through
// the C API only.
//
// The program owns a vLLM-style paged KV cache (k_cache[num_blocks, page_size, kv_heads, D], and
// v_cache alike, with a block table that scatters each sequence's pages), fills it with random
// values, uploads it with the CUDA runtime, asks attnjit for a plan, runs it, and compares the
// output with a float64 reference computed here. The geometry is one rank of MiMo-V2.5's global
// attention layers at tensor parallel 8: 8 q heads over 1 kv head, head dims 192 (q.k) and 128 (v).
//
// Build: part of the project (target embed_paged_attention). Run: ./embed_paged_attention
// Exit status: 0 when the output matches (or when there is no GPU to run on), 1 otherwise.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "attnjit/attnjit.h"

namespace {

// bf16 <-> float, round to nearest even (bf16 is the upper half of an IEEE float).
uint16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

#define CHECK_CUDA(call)                                                                        \
  do {                                                                                          \
    if (cudaError_t e_ = (call); e_ != cudaSuccess) {                                           \
      std::fprintf(stderr, "%s failed: %s\n", #call, cudaGetErrorString(e_));                   \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)

#define CHECK_ATTNJIT(call)                                                                     \
  do {                                                                                          \
    if (attnjit_status s_ = (call); s_ != ATTNJIT_OK) {                                         \
      std::fprintf(stderr, "%s failed: %s: %s\n", #call, attnjit_status_string(s_),            \
                   attnjit_last_error());                                                       \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)

template <class T>
T* upload(const std::vector<T>& host) {
  void* dev = nullptr;
  CHECK_CUDA(cudaMalloc(&dev, host.size() * sizeof(T)));
  CHECK_CUDA(cudaMemcpy(dev, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return static_cast<T*>(dev);
}

} // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no GPU found: nothing to run (this example needs an NVIDIA GPU, sm_80 or newer)\n");
    return 0;
  }

  // One rank's geometry and the batch: a 5-token chunk appended to a 37-token context, and a
  // single decode token at the end of a 100-token context.
  constexpr int kQHeads = 8, kKvHeads = 1, kDqk = 192, kDv = 128, kPage = 16;
  const std::vector<int> q_lens = {5, 1}, kv_lens = {37, 100};
  const int batch = static_cast<int>(q_lens.size());
  const int total_q = std::accumulate(q_lens.begin(), q_lens.end(), 0);
  const int max_q = *std::max_element(q_lens.begin(), q_lens.end());
  const int max_kv = *std::max_element(kv_lens.begin(), kv_lens.end());
  const int pages_per_seq = (max_kv + kPage - 1) / kPage;
  const int num_blocks = batch * pages_per_seq;

  // Host data: random q, K and V pages, and a block table that hands out pages in shuffled order.
  std::mt19937 rng(2024);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  auto random_bf16 = [&](size_t n) {
    std::vector<uint16_t> v(n);
    for (auto& x : v) x = to_bf16(uniform(rng));
    return v;
  };
  const std::vector<uint16_t> q = random_bf16(size_t{1} * total_q * kQHeads * kDqk);
  const std::vector<uint16_t> k_cache = random_bf16(size_t{1} * num_blocks * kPage * kKvHeads * kDqk);
  const std::vector<uint16_t> v_cache = random_bf16(size_t{1} * num_blocks * kPage * kKvHeads * kDv);
  std::vector<int32_t> block_table(size_t{1} * batch * pages_per_seq);
  std::iota(block_table.begin(), block_table.end(), 0);
  std::shuffle(block_table.begin(), block_table.end(), rng);
  std::vector<int32_t> cu_seqlens_q(batch + 1, 0);
  for (int b = 0; b < batch; ++b) cu_seqlens_q[b + 1] = cu_seqlens_q[b] + q_lens[b];
  const std::vector<int32_t> seq_lens_k(kv_lens.begin(), kv_lens.end());

  // The plan: what attention this program needs, fixed for its lifetime.
  attnjit_context ctx = nullptr;
  attnjit_context_options opts;
  attnjit_context_options_init(&opts); // the default cache: $ATTNJIT_CACHE, else $XDG_CACHE_HOME/attnjit
  if (attnjit_status s = attnjit_context_create(&opts, &ctx); s == ATTNJIT_ERROR_NO_DEVICE) {
    std::printf("no GPU found: %s\n", attnjit_last_error());
    return 0;
  } else if (s != ATTNJIT_OK) {
    std::fprintf(stderr, "attnjit_context_create: %s: %s\n", attnjit_status_string(s), attnjit_last_error());
    return 1;
  }
  attnjit_problem pb;
  attnjit_problem_init(&pb);
  pb.family = ATTNJIT_FAMILY_PREFILL;
  pb.q_dtype = pb.kv_dtype = ATTNJIT_DTYPE_BF16;
  pb.head_dim_qk = kDqk;
  pb.head_dim_v = kDv;
  pb.page_size = kPage;
  pb.kv_storage = ATTNJIT_KV_PAGED;
  pb.causal = 1;
  pb.num_q_heads = kQHeads;
  pb.num_kv_heads = kKvHeads;
  pb.max_batch = batch;
  pb.max_total_q = total_q;
  attnjit_plan plan = nullptr;
  CHECK_ATTNJIT(attnjit_plan_create(ctx, &pb, &plan));
  const char* description = nullptr;
  CHECK_ATTNJIT(attnjit_plan_describe(plan, &description));
  size_t workspace_bytes = 0;
  CHECK_ATTNJIT(attnjit_plan_workspace_bytes(plan, &workspace_bytes));

  // Device buffers, owned by the program; attnjit reads them in place through strides.
  uint16_t* d_q = upload(q);
  uint16_t* d_k = upload(k_cache);
  uint16_t* d_v = upload(v_cache);
  int32_t* d_block_table = upload(block_table);
  int32_t* d_cu_seqlens_q = upload(cu_seqlens_q);
  int32_t* d_seq_lens_k = upload(seq_lens_k);
  void* d_o = nullptr;
  void* d_workspace = nullptr;
  CHECK_CUDA(cudaMalloc(&d_o, size_t{2} * total_q * kQHeads * kDv));
  if (workspace_bytes > 0) CHECK_CUDA(cudaMalloc(&d_workspace, workspace_bytes));

  attnjit_run_args a;
  attnjit_run_args_init(&a);
  a.q = d_q;
  a.q_stride_token = kQHeads * kDqk;
  a.q_stride_head = kDqk;
  a.k = d_k;
  a.k_stride_block = kPage * kKvHeads * kDqk;
  a.k_stride_token = kKvHeads * kDqk;
  a.k_stride_head = kDqk;
  a.v = d_v;
  a.v_stride_block = kPage * kKvHeads * kDv;
  a.v_stride_token = kKvHeads * kDv;
  a.v_stride_head = kDv;
  a.block_table = d_block_table;
  a.block_table_stride = pages_per_seq;
  a.cu_seqlens_q = d_cu_seqlens_q;
  a.seq_lens_k = d_seq_lens_k;
  a.o = d_o;
  a.o_stride_token = kQHeads * kDv;
  a.o_stride_head = kDv;
  a.batch = batch;
  a.total_q = total_q;
  a.max_seqlen_q = max_q;
  a.max_seqlen_k = max_kv;
  a.workspace = d_workspace;
  a.workspace_bytes = workspace_bytes;

  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  CHECK_ATTNJIT(attnjit_run(plan, &a, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<uint16_t> o(size_t{1} * total_q * kQHeads * kDv);
  CHECK_CUDA(cudaMemcpy(o.data(), d_o, o.size() * sizeof(uint16_t), cudaMemcpyDeviceToHost));

  // Reference in float64 from the same bf16 values: row i of sequence b sits at position
  // kv_len - q_len + i and sees keys 0..position (causal, bottom-right aligned).
  const double scale = 1.0 / std::sqrt(static_cast<double>(kDqk));
  auto k_at = [&](int b, int j, int h, int d) {
    const int block = block_table[size_t{1} * b * pages_per_seq + j / kPage];
    return from_bf16(k_cache[((size_t{1} * block * kPage + j % kPage) * kKvHeads + h) * kDqk + d]);
  };
  auto v_at = [&](int b, int j, int h, int d) {
    const int block = block_table[size_t{1} * b * pages_per_seq + j / kPage];
    return from_bf16(v_cache[((size_t{1} * block * kPage + j % kPage) * kKvHeads + h) * kDv + d]);
  };
  double max_error = 0;
  int rows = 0;
  for (int b = 0; b < batch; ++b) {
    for (int i = 0; i < q_lens[b]; ++i) {
      const int token = cu_seqlens_q[b] + i;
      const int visible = kv_lens[b] - q_lens[b] + i + 1;
      for (int h = 0; h < kQHeads; ++h) {
        const int kv_head = h / (kQHeads / kKvHeads);
        std::vector<double> s(visible);
        for (int j = 0; j < visible; ++j) {
          double dot = 0;
          for (int d = 0; d < kDqk; ++d)
            dot += from_bf16(q[(size_t{1} * token * kQHeads + h) * kDqk + d]) * double{k_at(b, j, kv_head, d)};
          s[j] = dot * scale;
        }
        const double m = *std::max_element(s.begin(), s.end());
        double sum = 0;
        for (double& x : s) sum += (x = std::exp(x - m));
        for (int d = 0; d < kDv; ++d) {
          double ref = 0;
          for (int j = 0; j < visible; ++j) ref += s[j] * v_at(b, j, kv_head, d);
          ref /= sum;
          const double got = from_bf16(o[(size_t{1} * token * kQHeads + h) * kDv + d]);
          max_error = std::max(max_error, std::abs(got - ref));
        }
        ++rows;
      }
    }
  }

  // bf16 output: one rounding of values below 1 in magnitude is at most 2^-9.
  const double tolerance = 1e-2;
  std::printf("%s\n%d rows (token x head) checked against a float64 reference: max |error| %.2e (%s %.0e)\n",
              description, rows, max_error, max_error <= tolerance ? "within" : "OVER", tolerance);

  cudaFree(d_q);
  cudaFree(d_k);
  cudaFree(d_v);
  cudaFree(d_block_table);
  cudaFree(d_cu_seqlens_q);
  cudaFree(d_seq_lens_k);
  cudaFree(d_o);
  cudaFree(d_workspace);
  cudaStreamDestroy(stream);
  attnjit_plan_destroy(plan);
  attnjit_context_destroy(ctx);
  return max_error <= tolerance ? 0 : 1;
}
