#include "tuner/gpu_measurer.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <future>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <stdexcept>

#include <fmt/format.h>

#include "attnjit/attnjit.h"
#include "codegen/emit.h"
#include "runtime/binary_builder.h"
#include "runtime/context.h"

namespace attnjit::tuner {

// --- compiling candidates ------------------------------------------------------------------------

namespace {

class NvrtcCandidateCompiler final : public CandidateCompiler {
 public:
  explicit NvrtcCandidateCompiler(cache::Store& store) : store_(store) {}

  CompileFacts compile(const KernelSpec& spec, const TileConfig& tile, std::string_view arch) override {
    const std::string key = binary_key_for(spec, tile, arch);
    if (auto rec = store_.get_binary(key)) return facts(*rec);
    // The first line of the source names the tile; the rest is the code. Tiles whose code is
    // identical (max_splits is a launch-time bound) share one compile.
    const std::string source = emit_source(spec, tile);
    const std::string body = fmt::format("{}\n{}", arch, std::string_view(source).substr(source.find('\n') + 1));
    const std::string body_key = stable_hash_hex(body);
    std::promise<cache::BinaryRecord> promise;
    std::shared_future<cache::BinaryRecord> fut;
    bool owner = false;
    {
      std::lock_guard lock(mu_);
      auto it = bodies_.find(body_key);
      if (it == bodies_.end()) {
        fut = promise.get_future().share();
        bodies_.emplace(body_key, fut);
        owner = true;
      } else {
        fut = it->second;
      }
    }
    cache::BinaryRecord rec;
    if (owner) {
      try {
        rec = build_binary(spec, tile, arch);
        promise.set_value(rec);
      } catch (...) {
        promise.set_exception(std::current_exception());
        throw;
      }
    } else {
      rec = fut.get();
      rec.key = key;
      rec.tile = tile.canonical();
    }
    store_.put_binary(rec);
    return facts(rec);
  }

 private:
  static CompileFacts facts(const cache::BinaryRecord& r) { return CompileFacts{true, {}, r.registers, r.spill_bytes}; }
  cache::Store& store_;
  std::mutex mu_;
  std::map<std::string, std::shared_future<cache::BinaryRecord>> bodies_;
};

} // namespace

std::unique_ptr<CandidateCompiler> make_nvrtc_compiler(cache::Store& store) {
  return std::make_unique<NvrtcCandidateCompiler>(store);
}

// --- measuring on the GPU ------------------------------------------------------------------------

namespace {

void cuda_ok(cudaError_t e, std::string_view what) {
  if (e != cudaSuccess) throw std::runtime_error(fmt::format("{}: {}", what, cudaGetErrorString(e)));
}

std::string first_line(std::string_view s) { return std::string(s.substr(0, s.find('\n'))); }

uint16_t to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return static_cast<uint16_t>((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t x = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}
uint16_t to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000;
  const int exp = static_cast<int>((x >> 23) & 0xff) - 127 + 15;
  const uint32_t mant = x & 0x7fffff;
  if (exp <= 0) return static_cast<uint16_t>(sign); // not produced by the generator (|x| >= 1e-3)
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00);
  uint32_t h = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(h);
}
float from_f16(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t x;
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) x = sign | 0x7f800000 | (mant << 13);
  else x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr(o.ptr), bytes(o.bytes) { o.ptr = nullptr, o.bytes = 0; }
  ~DeviceBuffer() { reset(); }
  void reset() {
    if (ptr) cudaFree(ptr);
    ptr = nullptr;
    bytes = 0;
  }
  void alloc(size_t n, std::string_view what) {
    reset();
    cuda_ok(cudaMalloc(&ptr, std::max<size_t>(n, 16)), fmt::format("cudaMalloc({} bytes for {})", n, what));
    bytes = n;
  }
  template <class T> T* as() const { return static_cast<T*>(ptr); }
};

struct InputSet {
  DeviceBuffer q, k, v, table;
  attnjit_run_args args{};
};

constexpr size_t kSourceElems = size_t{8} << 20; // 16 MB of random 16-bit values per dtype
constexpr int kMaxSets = 4;

class GpuMeasurer final : public Measurer {
 public:
  explicit GpuMeasurer(const GpuMeasureOptions& o) : opt_(o) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) throw std::runtime_error("no CUDA device");
    if (o.device < 0 || o.device >= n) throw std::runtime_error(fmt::format("no CUDA device {} ({} found)", o.device, n));
    cuda_ok(cudaSetDevice(o.device), "cudaSetDevice");
    cuda_ok(cudaDeviceGetAttribute(&l2_bytes_, cudaDevAttrL2CacheSize, o.device), "cudaDeviceGetAttribute");
    attnjit_context_options opts;
    attnjit_context_options_init(&opts);
    opts.cache_path = opt_.cache_path.empty() ? nullptr : opt_.cache_path.c_str();
    opts.device = o.device;
    if (attnjit_context_create(&opts, &ctx_) != ATTNJIT_OK)
      throw std::runtime_error(fmt::format("attnjit_context_create: {}", attnjit_last_error()));
    events_.resize(2 * static_cast<size_t>(std::max(opt_.max_reps, 8)));
    for (auto& e : events_) cuda_ok(cudaEventCreate(&e), "cudaEventCreate");
  }

  ~GpuMeasurer() override {
    end();
    for (auto& e : events_) cudaEventDestroy(e);
    if (ctx_) attnjit_context_destroy(ctx_);
  }

  bool broken() const override { return !broken_.empty(); }

  void begin(const TuneUnit& unit, const TileConfig& reference) override {
    end();
    if (!broken_.empty()) throw std::runtime_error(broken_);
    unit_ = unit;
    const KernelSpec& s = unit.spec;
    if (s.kv_storage != KvStorage::paged) throw std::runtime_error("only paged KV storage is measured");
    const MeasureShape& sh = unit.shape;
    const int hq = unit.heads.num_q_heads, hkv = unit.heads.num_kv_heads;
    total_q_ = int64_t{sh.batch} * sh.q_len;
    pages_per_seq_ = (sh.kv_len + s.page_size - 1) / s.page_size;
    num_blocks_ = int64_t{sh.batch} * pages_per_seq_;
    const size_t q_elems = static_cast<size_t>(total_q_) * hq * s.head_dim_qk;
    const size_t k_elems = static_cast<size_t>(num_blocks_) * s.page_size * hkv * s.head_dim_qk;
    const size_t v_elems = static_cast<size_t>(num_blocks_) * s.page_size * hkv * s.head_dim_v;
    o_elems_ = static_cast<size_t>(total_q_) * hq * s.head_dim_v;
    kv_bytes_ = is_fp8(s.kv_dtype) ? 1 : 2;
    const size_t set_bytes = 2 * q_elems + kv_bytes_ * (k_elems + v_elems) + num_blocks_ * sizeof(int32_t);
    const size_t l2 = static_cast<size_t>(std::max(l2_bytes_, 1 << 20));
    int sets = static_cast<int>(std::clamp<size_t>((4 * l2 + set_bytes - 1) / set_bytes, 1, kMaxSets));
    flush_ = static_cast<size_t>(sets) * set_bytes < 4 * l2;
    size_t free_b = 0, total_b = 0;
    cuda_ok(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
    const size_t fixed = 2 * 2 * o_elems_ + (flush_ ? 2 * l2 : 0) + (size_t{64} << 20);
    while (sets > 1 && fixed + sets * set_bytes > free_b * 9 / 10) --sets;
    if (fixed + set_bytes > free_b * 9 / 10)
      throw std::runtime_error(fmt::format("the shape needs {:.1f} GB of GPU memory; {:.1f} GB are free",
                                           (fixed + set_bytes) / 1e9, free_b / 1e9));
    ensure_source(s.q_dtype);
    if (is_fp8(s.kv_dtype)) {
      ensure_fp8_source();
      // Scales that keep the dequantized values of the order of the 16-bit inputs (random fp8
      // bytes span up to 448 in e4m3 and 57344 in e5m2).
      const float scale = s.kv_dtype == DType::fp8_e4m3 ? 1.f / 64 : 1.f / 4096;
      const std::vector<float> scales(s.kv_scale_per_head ? unit.heads.num_kv_heads : 1, scale);
      kv_scales_.alloc(2 * scales.size() * sizeof(float), "k/v scales");
      cuda_ok(cudaMemcpy(kv_scales_.ptr, scales.data(), scales.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
      cuda_ok(cudaMemcpy(kv_scales_.as<float>() + scales.size(), scales.data(), scales.size() * sizeof(float),
                         cudaMemcpyHostToDevice), "cudaMemcpy");
      kv_scale_count_ = scales.size();
    }

    std::vector<int32_t> cu_q(sh.batch + 1), lens(sh.batch, sh.kv_len);
    for (int b = 0; b <= sh.batch; ++b) cu_q[b] = b * sh.q_len;
    cu_q_.alloc(cu_q.size() * 4, "cu_seqlens_q");
    lens_.alloc(lens.size() * 4, "seq_lens_k");
    cuda_ok(cudaMemcpy(cu_q_.ptr, cu_q.data(), cu_q.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    cuda_ok(cudaMemcpy(lens_.ptr, lens.data(), lens.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    if (s.learned_sinks) {
      // One sink logit per q head, of the scores' scale (the scores are ~N(0, 1)).
      std::vector<float> sinks(hq);
      std::normal_distribution<float> dist(0.f, 1.f);
      std::mt19937_64 sink_rng(hq);
      for (float& x : sinks) x = dist(sink_rng);
      sinks_.alloc(sinks.size() * sizeof(float), "sinks");
      cuda_ok(cudaMemcpy(sinks_.ptr, sinks.data(), sinks.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
    }
    o_.alloc(2 * o_elems_, "o");
    o_ref_.alloc(2 * o_elems_, "o (reference)");
    if (flush_ && flush_buf_.bytes < 2 * l2) flush_buf_.alloc(2 * l2, "L2 flush");

    std::mt19937_64 rng(std::hash<std::string>{}(unit.key));
    for (int i = 0; i < sets; ++i) {
      InputSet set;
      set.q.alloc(2 * q_elems, "q");
      set.k.alloc(kv_bytes_ * k_elems, "k_cache");
      set.v.alloc(kv_bytes_ * v_elems, "v_cache");
      set.table.alloc(num_blocks_ * sizeof(int32_t), "block_table");
      fill(set.q, q_elems, rng());
      fill_kv(set.k, k_elems, rng());
      fill_kv(set.v, v_elems, rng());
      std::vector<int32_t> table(num_blocks_);
      std::iota(table.begin(), table.end(), 0);
      std::shuffle(table.begin(), table.end(), rng);
      cuda_ok(cudaMemcpy(set.table.ptr, table.data(), table.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
      attnjit_run_args& a = set.args;
      attnjit_run_args_init(&a);
      a.q = set.q.ptr;
      a.q_stride_head = s.head_dim_qk;
      a.q_stride_token = int64_t{hq} * s.head_dim_qk;
      a.k = set.k.ptr;
      a.v = set.v.ptr;
      a.k_stride_head = s.head_dim_qk;
      a.k_stride_token = int64_t{hkv} * s.head_dim_qk;
      a.k_stride_block = a.k_stride_token * s.page_size;
      a.v_stride_head = s.head_dim_v;
      a.v_stride_token = int64_t{hkv} * s.head_dim_v;
      a.v_stride_block = a.v_stride_token * s.page_size;
      a.block_table = set.table.as<int32_t>();
      a.block_table_stride = pages_per_seq_;
      a.cu_seqlens_q = cu_q_.as<int32_t>();
      a.seq_lens_k = lens_.as<int32_t>();
      a.o = o_.ptr;
      a.o_stride_head = s.head_dim_v;
      a.o_stride_token = int64_t{hq} * s.head_dim_v;
      a.batch = sh.batch;
      a.total_q = total_q_;
      a.max_seqlen_q = sh.q_len;
      a.max_seqlen_k = sh.kv_len;
      if (s.sliding_window) a.window_size = std::max(1, unit.window);
      a.sinks = s.learned_sinks ? sinks_.as<float>() : nullptr;
      if (is_fp8(s.kv_dtype)) {
        a.k_scale = kv_scales_.as<float>();
        a.v_scale = kv_scales_.as<float>() + kv_scale_count_;
      }
      sets_.push_back(std::move(set));
    }
    cuda_ok(cudaDeviceSynchronize(), "filling the inputs");

    // The reference output.
    attnjit_plan plan = nullptr;
    const attnjit_problem pb = problem(reference);
    if (attnjit_plan_create(ctx_, &pb, &plan) != ATTNJIT_OK)
      throw std::runtime_error(fmt::format("plan: {}", first_line(attnjit_last_error())));
    PlanGuard guard{plan};
    std::string err = run_once(plan, o_ref_);
    if (!err.empty()) throw std::runtime_error(err);
    ref_.resize(o_elems_);
    std::vector<uint16_t> raw(o_elems_);
    cuda_ok(cudaMemcpy(raw.data(), o_ref_.ptr, 2 * o_elems_, cudaMemcpyDeviceToHost), "cudaMemcpy");
    ref_sq_ = 0;
    ref_max_ = 0;
    for (size_t i = 0; i < o_elems_; ++i) {
      ref_[i] = convert(raw[i]);
      if (!std::isfinite(ref_[i])) throw std::runtime_error(fmt::format("the reference output has a non-finite value at {}", i));
      ref_sq_ += double(ref_[i]) * ref_[i];
      ref_max_ = std::max(ref_max_, double(std::fabs(ref_[i])));
    }
  }

  Measurement measure(const TileConfig& tile) override {
    Measurement m;
    if (!broken_.empty()) {
      m.failure = "run: the GPU is unusable: " + broken_;
      return m;
    }
    attnjit_plan plan = nullptr;
    const attnjit_problem pb = problem(tile);
    if (attnjit_plan_create(ctx_, &pb, &plan) != ATTNJIT_OK) {
      m.failure = fmt::format("plan: {}", first_line(attnjit_last_error()));
      return m;
    }
    PlanGuard guard{plan};
    // Check.
    if (std::string err = run_once(plan, o_); !err.empty()) {
      m.failure = err;
      return m;
    }
    {
      std::vector<uint16_t> raw(o_elems_);
      cuda_ok(cudaMemcpy(raw.data(), o_.ptr, 2 * o_elems_, cudaMemcpyDeviceToHost), "cudaMemcpy");
      double diff_sq = 0, diff_max = 0;
      size_t bad = o_elems_;
      for (size_t i = 0; i < o_elems_; ++i) {
        const float c = convert(raw[i]);
        if (!std::isfinite(c)) {
          bad = i;
          break;
        }
        const double d = double(c) - ref_[i];
        diff_sq += d * d;
        diff_max = std::max(diff_max, std::fabs(d));
      }
      if (bad < o_elems_) {
        m.failure = fmt::format("verify: non-finite output at element {} (token {}, head {})", bad,
                                bad / (o_elems_ / total_q_), bad % (o_elems_ / total_q_) / unit_.spec.head_dim_v);
        return m;
      }
      const double rel_rms = ref_sq_ > 0 ? std::sqrt(diff_sq / ref_sq_) : std::sqrt(diff_sq);
      const double rel_max = ref_max_ > 0 ? diff_max / ref_max_ : diff_max;
      m.rel_error = rel_rms;
      if (rel_rms > kMaxRelRms || rel_max > kMaxRelMax) {
        m.failure = fmt::format("verify: relative RMS error {:.3g} (bound {:.3g}), largest error {:.3g} of the "
                                "reference's largest magnitude (bound {:.3g})",
                                rel_rms, kMaxRelRms, rel_max, kMaxRelMax);
        return m;
      }
    }
    // Time.
    size_t set = 0;
    auto launch = [&]() -> bool {
      InputSet& in = sets_[set++ % sets_.size()];
      in.args.o = o_.ptr;
      in.args.workspace = ws_.ptr;
      in.args.workspace_bytes = ws_.bytes;
      return attnjit_run(plan, &in.args, nullptr) == ATTNJIT_OK;
    };
    auto timed = [&](int reps, std::vector<float>& ms) -> std::string {
      ms.assign(reps, 0.f);
      for (int i = 0; i < reps; ++i) {
        if (flush_) cudaMemsetAsync(flush_buf_.ptr, i & 0xff, flush_buf_.bytes, nullptr);
        cudaEventRecord(events_[2 * i], nullptr);
        if (!launch()) return fmt::format("run: {}", first_line(attnjit_last_error()));
        cudaEventRecord(events_[2 * i + 1], nullptr);
      }
      if (cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess) {
        broken_ = cudaGetErrorString(e);
        return fmt::format("run: {}", broken_);
      }
      for (int i = 0; i < reps; ++i) cudaEventElapsedTime(&ms[i], events_[2 * i], events_[2 * i + 1]);
      return {};
    };
    std::vector<float> ms;
    if (std::string err = timed(3, ms); !err.empty()) {
      m.failure = err;
      return m;
    }
    double est = std::max(1e-3, static_cast<double>(*std::max_element(ms.begin(), ms.end())));
    const int more_warmup = std::clamp(static_cast<int>(std::ceil((5.0 - 3 * est) / est)), 0, opt_.max_reps);
    if (more_warmup > 0) {
      if (std::string err = timed(more_warmup, ms); !err.empty()) {
        m.failure = err;
        return m;
      }
      std::sort(ms.begin(), ms.end());
      est = std::max(1e-3, static_cast<double>(ms[ms.size() / 2]));
    }
    const int reps = std::clamp(static_cast<int>(std::ceil(opt_.target_ms / est)), opt_.min_reps, opt_.max_reps);
    if (std::string err = timed(reps, ms); !err.empty()) {
      m.failure = err;
      return m;
    }
    std::sort(ms.begin(), ms.end());
    m.median_us = 1000.0 * (reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]));
    m.runs = reps;
    m.ok = true;
    return m;
  }

  void end() override {
    sets_.clear();
    cu_q_.reset();
    lens_.reset();
    sinks_.reset();
    kv_scales_.reset();
    o_.reset();
    o_ref_.reset();
    ref_.clear();
    ref_.shrink_to_fit();
  }

 private:
  struct PlanGuard {
    attnjit_plan plan;
    ~PlanGuard() {
      if (plan) attnjit_plan_destroy(plan);
    }
  };

  float convert(uint16_t v) const { return unit_.spec.q_dtype == DType::bf16 ? from_bf16(v) : from_f16(v); }

  attnjit_problem problem(const TileConfig& t) const {
    const KernelSpec& s = unit_.spec;
    attnjit_problem pb;
    attnjit_problem_init(&pb);
    pb.family = s.family == KernelFamily::decode ? ATTNJIT_FAMILY_DECODE : ATTNJIT_FAMILY_PREFILL;
    pb.q_dtype = c_dtype(s.q_dtype);
    pb.kv_dtype = c_dtype(s.kv_dtype);
    pb.kv_scale_per_head = s.kv_scale_per_head ? 1 : 0;
    pb.head_dim_qk = s.head_dim_qk;
    pb.head_dim_v = s.head_dim_v;
    pb.page_size = s.page_size;
    pb.kv_storage = ATTNJIT_KV_PAGED;
    pb.causal = s.causal ? 1 : 0;
    pb.sparsity.sliding_window = s.sliding_window ? 1 : 0;
    pb.sparsity.learned_sinks = s.learned_sinks ? 1 : 0;
    pb.num_q_heads = unit_.heads.num_q_heads;
    pb.num_kv_heads = unit_.heads.num_kv_heads;
    pb.max_batch = unit_.shape.batch;
    pb.max_total_q = total_q_;
    pb.tile = tile_to_c(t);
    return pb;
  }

  // One run on set 0 into `out` (filled with NaN first); "" or the failure.
  std::string run_once(attnjit_plan plan, DeviceBuffer& out) {
    size_t ws = 0;
    attnjit_plan_workspace_bytes(plan, &ws);
    if (ws > ws_.bytes) {
      try {
        ws_.alloc(ws, "workspace");
      } catch (const std::exception& e) {
        return fmt::format("run: {}", e.what());
      }
    }
    cuda_ok(cudaMemset(out.ptr, 0xff, out.bytes), "cudaMemset");
    InputSet& in = sets_.front();
    in.args.o = out.ptr;
    in.args.workspace = ws_.ptr;
    in.args.workspace_bytes = ws_.bytes;
    if (attnjit_run(plan, &in.args, nullptr) != ATTNJIT_OK) return fmt::format("run: {}", first_line(attnjit_last_error()));
    if (cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess) {
      broken_ = cudaGetErrorString(e);
      return fmt::format("run: {}", broken_);
    }
    return {};
  }

  void ensure_source(DType d) {
    DeviceBuffer& src = d == DType::bf16 ? src_bf16_ : src_f16_;
    if (src.ptr) return;
    std::vector<uint16_t> table(1 << 16);
    std::mt19937_64 rng(d == DType::bf16 ? 1 : 2);
    std::normal_distribution<float> dist(0.f, 1.f);
    for (auto& t : table) {
      float x = dist(rng);
      if (std::fabs(x) < 1e-3f) x = x < 0 ? -0.5f : 0.5f; // never zero
      t = d == DType::bf16 ? to_bf16(x) : to_f16(x);
    }
    std::vector<uint16_t> host(kSourceElems);
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    for (auto& v : host) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      v = table[s & 0xffff];
    }
    src.alloc(2 * kSourceElems, "random source");
    cuda_ok(cudaMemcpy(src.ptr, host.data(), 2 * kSourceElems, cudaMemcpyHostToDevice), "cudaMemcpy");
  }

  // Random fp8 bytes that are valid values of both formats (no NaN or infinity: e4m3's 0x7f/0xff,
  // e5m2's exponent 31) and not zero.
  void ensure_fp8_source() {
    if (src_fp8_.ptr) return;
    std::vector<uint8_t> host(2 * kSourceElems);
    uint64_t s = 0x2545f4914f6cdd1dULL;
    for (auto& v : host) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      uint8_t b = static_cast<uint8_t>(s >> 24);
      if ((b & 0x7c) == 0x7c) b &= 0xbb; // exponent below e5m2's 31 (also clears e4m3's 0x7f)
      if ((b & 0x7f) == 0) b |= 0x21;
      v = b;
    }
    src_fp8_.alloc(host.size(), "random fp8 source");
    cuda_ok(cudaMemcpy(src_fp8_.ptr, host.data(), host.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
  }

  // K/V inputs: 16-bit values like q, or fp8 bytes.
  void fill_kv(DeviceBuffer& dst, size_t elems, uint64_t seed) {
    if (kv_bytes_ == 2) return fill(dst, elems, seed);
    const size_t total = 2 * kSourceElems;
    size_t off = (seed % (total / 2)) & ~size_t{15};
    for (size_t done = 0; done < elems;) {
      const size_t n = std::min(elems - done, total - off);
      cuda_ok(cudaMemcpyAsync(static_cast<uint8_t*>(dst.ptr) + done, static_cast<const uint8_t*>(src_fp8_.ptr) + off, n,
                              cudaMemcpyDeviceToDevice, nullptr),
              "cudaMemcpyAsync");
      done += n;
      off = (off + 7919 * 16) % (total / 2);
    }
  }

  // Fills `dst` with `elems` 16-bit values copied from the random source at a seeded offset.
  void fill(DeviceBuffer& dst, size_t elems, uint64_t seed) {
    const DeviceBuffer& src = unit_.spec.q_dtype == DType::bf16 ? src_bf16_ : src_f16_;
    size_t off = (seed % (kSourceElems / 2)) & ~size_t{7};
    size_t done = 0;
    while (done < elems) {
      const size_t n = std::min(elems - done, kSourceElems - off);
      cuda_ok(cudaMemcpyAsync(static_cast<uint16_t*>(dst.ptr) + done, static_cast<const uint16_t*>(src.ptr) + off,
                              2 * n, cudaMemcpyDeviceToDevice, nullptr),
              "cudaMemcpyAsync");
      done += n;
      off = (off + 7919 * 8) % (kSourceElems / 2);
    }
  }

  GpuMeasureOptions opt_;
  attnjit_context ctx_ = nullptr;
  int l2_bytes_ = 0;
  std::vector<cudaEvent_t> events_;
  DeviceBuffer src_bf16_, src_f16_, src_fp8_, flush_buf_, ws_, kv_scales_;
  int kv_bytes_ = 2;
  size_t kv_scale_count_ = 0;
  TuneUnit unit_;
  int64_t total_q_ = 0, num_blocks_ = 0;
  int pages_per_seq_ = 0;
  size_t o_elems_ = 0;
  bool flush_ = false;
  std::vector<InputSet> sets_;
  DeviceBuffer cu_q_, lens_, o_, o_ref_, sinks_;
  std::vector<float> ref_;
  double ref_sq_ = 0, ref_max_ = 0;
  std::string broken_;
};

} // namespace

std::unique_ptr<Measurer> make_gpu_measurer(const GpuMeasureOptions& options) {
  return std::make_unique<GpuMeasurer>(options);
}

} // namespace attnjit::tuner
