#include "gpu_harness.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include <unistd.h>

namespace attnjit::testing {

// ---- Device ------------------------------------------------------------------------------------

const GpuInfo& gpu_info() {
  static const GpuInfo info = [] {
    GpuInfo g;
    if (const char* env = std::getenv("ATTNJIT_TEST_DEVICE")) g.device = std::atoi(env);
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
      g.reason = "cudaGetDeviceCount failed: " + cuda_text(e);
      (void)cudaGetLastError();
      return g;
    }
    if (count == 0) {
      g.reason = "cudaGetDeviceCount returned 0";
      return g;
    }
    if (g.device < 0 || g.device >= count) {
      g.reason = "ATTNJIT_TEST_DEVICE=" + std::to_string(g.device) + " but " + std::to_string(count) + " device(s)";
      return g;
    }
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, g.device) != cudaSuccess || cudaSetDevice(g.device) != cudaSuccess) {
      g.reason = "cannot use device " + std::to_string(g.device);
      (void)cudaGetLastError();
      return g;
    }
    g.name = prop.name;
    g.cc_major = prop.major;
    g.cc_minor = prop.minor;
    g.sm_count = prop.multiProcessorCount;
    g.available = true;
    return g;
  }();
  return info;
}

namespace {

struct SharedState {
  std::mutex mu;
  bool tried = false;
  attnjit_context ctx = nullptr;
  std::string error;
  std::map<std::string, PlanSlot> plans;
  std::mutex plan_mu; // guards `plans` (the map; slots are stable once inserted)
};

SharedState& shared() {
  static SharedState* s = new SharedState; // never destroyed: release_shared_gpu_state() empties it
  return *s;
}

PlanSlot create_plan(attnjit_context ctx, const attnjit_problem& problem) {
  PlanSlot slot;
  const auto t0 = std::chrono::steady_clock::now();
  slot.status = attnjit_plan_create(ctx, &problem, &slot.plan);
  slot.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (slot.status != ATTNJIT_OK) {
    slot.message = status_message(slot.status);
    if (slot.plan != nullptr) {
      slot.message += " (and the out handle was set on failure)";
      slot.plan = nullptr;
    }
  } else if (slot.plan == nullptr) {
    slot.status = ATTNJIT_ERROR_INTERNAL;
    slot.message = "attnjit_plan_create returned OK but no plan";
  }
  return slot;
}

} // namespace

attnjit_context shared_context() {
  SharedState& s = shared();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.tried) return s.ctx;
  s.tried = true;
  if (!gpu_info().available) {
    s.error = "no GPU: " + gpu_info().reason;
    return nullptr;
  }
  attnjit_context_options opts;
  attnjit_context_options_init(&opts);
  opts.device = gpu_info().device;
  const char* cache = std::getenv("ATTNJIT_TEST_CACHE");
  if (cache != nullptr && *cache != '\0') {
    opts.cache_path = cache;
  } else {
    opts.disable_cache = 1;
  }
  const attnjit_status st = attnjit_context_create(&opts, &s.ctx);
  if (st != ATTNJIT_OK) {
    // The CUDA runtime sees a device, so NO_DEVICE here is a failure, not a reason to skip.
    s.error = "attnjit_context_create: " + status_message(st);
    s.ctx = nullptr;
  }
  return s.ctx;
}

std::string shared_context_error() {
  SharedState& s = shared();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.error;
}

const PlanSlot& shared_plan(const std::string& name, const attnjit_problem& problem) {
  SharedState& s = shared();
  {
    std::lock_guard<std::mutex> lock(s.plan_mu);
    auto it = s.plans.find(name);
    if (it != s.plans.end()) return it->second;
  }
  PlanSlot slot = create_plan(shared_context(), problem);
  std::lock_guard<std::mutex> lock(s.plan_mu);
  auto [it, inserted] = s.plans.emplace(name, slot);
  if (!inserted && slot.plan != nullptr) attnjit_plan_destroy(slot.plan); // lost a race: keep the first
  return it->second;
}

void prewarm_plans(const std::vector<std::pair<std::string, attnjit_problem>>& plans) {
  if (shared_context() == nullptr || plans.empty()) return;
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const size_t nthreads = std::min<size_t>(plans.size(), std::min(hw, 16u));
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  for (size_t i = 0; i < nthreads; ++i)
    pool.emplace_back([&] {
      for (size_t k; (k = next.fetch_add(1)) < plans.size();) shared_plan(plans[k].first, plans[k].second);
    });
  for (auto& t : pool) t.join();
}

void release_shared_gpu_state() {
  SharedState& s = shared();
  std::lock_guard<std::mutex> lock(s.mu);
  {
    std::lock_guard<std::mutex> plock(s.plan_mu);
    for (auto& [name, slot] : s.plans)
      if (slot.plan != nullptr) attnjit_plan_destroy(slot.plan);
    s.plans.clear();
  }
  if (s.ctx != nullptr) attnjit_context_destroy(s.ctx);
  s.ctx = nullptr;
  s.tried = false;
}

std::string status_message(attnjit_status st) {
  const char* name = attnjit_status_string(st);
  const char* msg = attnjit_last_error();
  return std::string(name ? name : "(null status string)") + ": " + (msg ? msg : "(null last error)");
}

std::string last_error_text() {
  const char* msg = attnjit_last_error();
  return msg ? msg : "";
}

// ---- CUDA RAII -----------------------------------------------------------------------------------

std::string cuda_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
}

cudaError_t DeviceBuffer::ensure(size_t bytes) {
  if (bytes == bytes_ && (ptr_ != nullptr || bytes == 0)) return cudaSuccess;
  reset();
  if (bytes == 0) return cudaSuccess;
  const cudaError_t e = cudaMalloc(&ptr_, bytes);
  if (e != cudaSuccess) {
    ptr_ = nullptr;
    return e;
  }
  bytes_ = bytes;
  return cudaSuccess;
}

void DeviceBuffer::reset() {
  if (ptr_ != nullptr) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

Stream::Stream() {
  if (cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking) != cudaSuccess) s_ = nullptr;
}

Stream::~Stream() {
  if (s_ != nullptr) cudaStreamDestroy(s_);
}

// ---- One problem on the device -----------------------------------------------------------------

namespace {

template <class T>
cudaError_t put(DeviceBuffer& buf, const std::vector<T>& host, cudaStream_t stream) {
  const size_t bytes = host.size() * sizeof(T);
  if (cudaError_t e = buf.ensure(bytes); e != cudaSuccess) return e;
  if (bytes == 0) return cudaSuccess;
  return cudaMemcpyAsync(buf.get(), host.data(), bytes, cudaMemcpyHostToDevice, stream);
}

template <class T>
cudaError_t get(std::vector<T>& host, const DeviceBuffer& buf, size_t count) {
  host.resize(count);
  if (count == 0) return cudaSuccess;
  return cudaMemcpy(host.data(), buf.get(), count * sizeof(T), cudaMemcpyDeviceToHost);
}

} // namespace

cudaError_t DeviceProblem::upload_inputs(const HostProblem& p, cudaStream_t stream) {
  cudaError_t e;
  if ((e = put(q, p.q, stream)) != cudaSuccess) return e;
  // K/V as the device stores them (2 or 1 bytes per element); the host images must live until
  // the copies complete (the synchronization below).
  const std::vector<uint8_t> kb = p.kv_device_bytes(p.k_data);
  const std::vector<uint8_t> vb = p.kv_device_bytes(p.v_data);
  if ((e = put(k, kb, stream)) != cudaSuccess) return e;
  if ((e = put(v, vb, stream)) != cudaSuccess) return e; // empty for packed
  if ((e = put(block_table, p.block_table, stream)) != cudaSuccess) return e;
  if ((e = put(cu_seqlens_q, p.cu_seqlens_q, stream)) != cudaSuccess) return e;
  if ((e = put(seq_lens_k, p.seq_lens_k, stream)) != cudaSuccess) return e;
  if ((e = put(cu_seqlens_k, p.cu_seqlens_k, stream)) != cudaSuccess) return e;
  if ((e = put(sinks, p.sinks, stream)) != cudaSuccess) return e;
  if ((e = put(k_scale, p.k_scale, stream)) != cudaSuccess) return e;
  if ((e = put(v_scale, p.v_scale, stream)) != cudaSuccess) return e;
  if ((e = put(kv_num_blocks, p.kv_num_blocks, stream)) != cudaSuccess) return e;
  if ((e = put(kv_indices, p.kv_indices, stream)) != cudaSuccess) return e;
  // The host vectors must outlive the asynchronous copies: make them complete now.
  return cudaStreamSynchronize(stream);
}

cudaError_t DeviceProblem::poison_outputs(const HostProblem& p, size_t workspace_bytes, cudaStream_t stream) {
  cudaError_t e;
  const std::vector<uint16_t> ob = p.poisoned_output();
  const std::vector<float> lb = p.poisoned_lse();
  if ((e = put(o, ob, stream)) != cudaSuccess) return e;
  if ((e = put(lse, lb, stream)) != cudaSuccess) return e;
  if ((e = workspace.ensure(workspace_bytes)) != cudaSuccess) return e;
  if (workspace_bytes > 0 && (e = cudaMemsetAsync(workspace.get(), 0xFF, workspace_bytes, stream)) != cudaSuccess)
    return e;
  if (p.spec.pattern.skip_on()) {
    if ((e = skip_stats.ensure(2 * sizeof(unsigned long long))) != cudaSuccess) return e;
    if ((e = cudaMemsetAsync(skip_stats.get(), 0, 2 * sizeof(unsigned long long), stream)) != cudaSuccess) return e;
  }
  return cudaStreamSynchronize(stream);
}

attnjit_sparsity to_attnjit_sparsity(const PatternSpec& pt) {
  attnjit_problem init; // the defaults of attnjit_problem_init
  attnjit_problem_init(&init);
  attnjit_sparsity sp = init.sparsity;
  sp.sliding_window = pt.sliding_window ? 1 : 0;
  sp.learned_sinks = pt.learned_sinks ? 1 : 0;
  sp.soft_cap = pt.soft_cap > 0 ? 1 : 0;
  sp.nm_n = pt.nm_n;
  sp.nm_m = pt.nm_m;
  sp.skip_softmax = pt.skip_on() ? 1 : 0;
  sp.block_sparse = pt.block_sparse_on() ? 1 : 0;
  sp.sparse_block_q = pt.block_sparse_on() ? pt.sparse_block_q : 0;
  sp.sparse_block_kv = pt.block_sparse_on() ? pt.sparse_block_kv : 0;
  return sp;
}

attnjit_problem to_attnjit_problem(const ProblemSpec& spec, attnjit_family family, bool loose_bounds) {
  attnjit_problem pb;
  attnjit_problem_init(&pb);
  pb.family = family;
  pb.q_dtype = spec.q_dtype;
  pb.kv_dtype = spec.kv_dtype;
  pb.head_dim_qk = spec.head_dim_qk;
  pb.head_dim_v = spec.head_dim_v;
  pb.page_size = spec.storage == ATTNJIT_KV_PAGED ? spec.page_size : 1;
  pb.kv_storage = spec.storage;
  pb.causal = spec.causal ? 1 : 0;
  pb.num_q_heads = spec.num_q_heads;
  pb.num_kv_heads = spec.num_kv_heads;
  pb.sparsity = to_attnjit_sparsity(spec.pattern);
  pb.kv_scale_per_head = is_fp8(spec.kv_dtype) && spec.pattern.kv_scale_per_head ? 1 : 0;
  int64_t total_q = 0;
  for (const auto& s : spec.seqs) total_q += s.q_len;
  pb.max_batch = static_cast<int32_t>(spec.seqs.size()) + (loose_bounds ? 5 : 0);
  pb.max_total_q = total_q + (loose_bounds ? 100 : 0);
  return pb;
}

attnjit_run_args make_run_args(const HostProblem& p, const DeviceProblem& dev, const RunOptions& opt) {
  attnjit_run_args a;
  attnjit_run_args_init(&a);
  const size_t es = static_cast<size_t>(dtype_bytes(p.spec.kv_dtype)); // bytes per K/V element
  a.q = dev.q.get();
  a.q_stride_token = p.q_stride_token;
  a.q_stride_head = p.q_stride_head;
  a.k = dev.k.get();
  const DeviceBuffer& vbuf = p.packed() ? dev.k : dev.v;
  a.v = static_cast<const char*>(vbuf.get()) + p.v_offset * es;
  a.k_stride_block = p.k_stride_block;
  a.k_stride_token = p.k_stride_token;
  a.k_stride_head = p.k_stride_head;
  a.v_stride_block = p.v_stride_block;
  a.v_stride_token = p.v_stride_token;
  a.v_stride_head = p.v_stride_head;
  if (p.paged()) {
    a.block_table = dev.block_table.as<const int32_t>();
    a.block_table_stride = p.block_table_stride;
    a.seq_lens_k = dev.seq_lens_k.as<const int32_t>();
  } else {
    a.cu_seqlens_k = dev.cu_seqlens_k.as<const int32_t>();
  }
  a.cu_seqlens_q = dev.cu_seqlens_q.as<const int32_t>();
  a.o = dev.o.get();
  a.o_stride_token = p.o_stride_token;
  a.o_stride_head = p.o_stride_head;
  a.lse = opt.with_lse ? dev.lse.as<float>() : nullptr;
  a.batch = p.batch;
  a.total_q = p.total_q;
  a.max_seqlen_q = p.max_q_len;
  a.max_seqlen_k = p.max_kv_len;
  if (opt.loose_bounds) {
    // Bounds above the actual maxima, but still consistent: no sequence has more q rows than
    // total_q, and the block table is wide enough for max_seqlen_k keys (as an engine's is).
    a.max_seqlen_q = static_cast<int32_t>(std::min<int64_t>(p.max_q_len + 7, p.total_q));
    a.max_seqlen_k = p.max_kv_len + 100;
    if (p.paged())
      a.max_seqlen_k = std::min<int64_t>(a.max_seqlen_k, static_cast<int64_t>(p.block_table_stride) * p.spec.page_size);
  }
  a.scale = p.spec.scale;
  // Pattern values (the kernel reads only those its plan enables).
  const PatternSpec& pt = p.spec.pattern;
  if (pt.sliding_window) {
    a.window_size = pt.window;
    a.sink_tokens = pt.sink_tokens;
  }
  if (pt.learned_sinks) a.sinks = dev.sinks.as<const float>();
  if (pt.soft_cap > 0) a.soft_cap = pt.soft_cap;
  if (is_fp8(p.spec.kv_dtype)) {
    a.k_scale = dev.k_scale.as<const float>();
    a.v_scale = dev.v_scale.as<const float>();
  }
  if (pt.nm_on()) {
    a.nm_dense_sink_tokens = pt.nm_dense_sink_tokens;
    a.nm_dense_recent_tokens = pt.nm_dense_recent_tokens;
  }
  if (pt.skip_on()) {
    a.skip_threshold = pt.skip_threshold;
    if (opt.skip_stats) a.skip_stats = dev.skip_stats.as<unsigned long long>();
  }
  if (pt.block_sparse_on()) {
    a.kv_num_blocks = dev.kv_num_blocks.as<const int32_t>();
    a.kv_indices = dev.kv_indices.as<const int32_t>();
    a.mask_batch = p.mask_batch;
    a.mask_q_blocks = p.mask_q_blocks;
    a.mask_max_kv_blocks = p.mask_max_kv_blocks;
  }
  a.workspace = dev.workspace.get();
  a.workspace_bytes = dev.workspace.bytes();
  return a;
}

cudaError_t download_outputs(const HostProblem& p, const DeviceProblem& dev, bool with_lse, Outcome& out) {
  if (cudaError_t e = get(out.o, dev.o, static_cast<size_t>(p.o_elems)); e != cudaSuccess) return e;
  if (with_lse) return get(out.lse, dev.lse, static_cast<size_t>(p.lse_elems));
  return cudaSuccess;
}

Outcome run_once(attnjit_plan plan, const HostProblem& p, DeviceProblem& dev, const RunOptions& opt,
                 cudaStream_t stream) {
  Outcome out;
  size_t ws = 0;
  if (attnjit_status st = attnjit_plan_workspace_bytes(plan, &ws); st != ATTNJIT_OK) {
    out.status = st;
    out.error = "attnjit_plan_workspace_bytes: " + status_message(st);
    return out;
  }
  if (cudaError_t e = dev.upload_inputs(p, stream); e != cudaSuccess) {
    out.error = "upload: " + cuda_text(e);
    return out;
  }
  if (cudaError_t e = dev.poison_outputs(p, ws, stream); e != cudaSuccess) {
    out.error = "poison: " + cuda_text(e);
    return out;
  }
  const attnjit_run_args args = make_run_args(p, dev, opt);
  out.status = attnjit_run(plan, &args, stream);
  if (out.status != ATTNJIT_OK) {
    const char* msg = attnjit_last_error();
    out.last_error = msg ? msg : "";
    out.error = "attnjit_run: " + status_message(out.status);
    return out;
  }
  if (cudaError_t e = cudaStreamSynchronize(stream); e != cudaSuccess) {
    out.error = "after attnjit_run: " + cuda_text(e);
    return out;
  }
  if (cudaError_t e = download_outputs(p, dev, opt.with_lse, out); e != cudaSuccess) out.error = "download: " + cuda_text(e);
  if (opt.skip_stats && p.spec.pattern.skip_on()) {
    if (cudaError_t e = cudaMemcpy(out.skip_stats, dev.skip_stats.get(), sizeof out.skip_stats, cudaMemcpyDeviceToHost);
        e != cudaSuccess)
      out.error = "download skip_stats: " + cuda_text(e);
  }
  return out;
}

std::string check_outcome(const HostProblem& p, const Reference& ref, const Outcome& out, bool with_lse) {
  if (!out.error.empty()) return out.error;
  const Tolerance tol = pattern_tolerance(p);
  std::ostringstream os;
  const Comparison c = compare_output(p, ref, out.o);
  if (!c.output_ok(tol))
    os << "output: " << c.summary() << " (tolerance rel_l2 " << tol.rel_l2 << ", worst row " << tol.row_rel_l2 << ")";
  if (with_lse) {
    const Comparison l = compare_lse(p, ref, out.lse);
    if (!l.lse_ok(tol)) os << (c.output_ok(tol) ? "" : "; ") << "lse: " << l.summary() << " (tolerance abs " << tol.lse_abs << ")";
  }
  return os.str();
}

::testing::AssertionResult matches_reference(const HostProblem& p, const Reference& ref, const Outcome& out,
                                             bool with_lse) {
  const std::string why = check_outcome(p, ref, out, with_lse);
  if (why.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << why << "\n  problem: " << p.describe();
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") + "/attnjit-test-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) != nullptr) path_ = buf.data();
}

TempDir::~TempDir() {
  if (!path_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
}

} // namespace attnjit::testing
