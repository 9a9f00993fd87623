#include "runtime/context.h"

#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include <fmt/format.h>

#include "codegen/emit.h"
#include "codegen/errors.h"
#include "runtime/binary_builder.h"
#include "runtime/tuned_tiles.h"
#include "templates/params.cuh"

namespace attnjit {

std::string arch_for(int major, int minor) {
  // Hopper's arch-specific target unlocks wgmma/setmaxnreg; the cubin runs only on sm_90.
  if (major == 9 && minor == 0) return "sm_90a";
  return fmt::format("sm_{}{}", major, minor);
}

ScopedCurrent::ScopedCurrent(const CudaDriver& d, CUcontext ctx) : driver_(d) {
  d.check(d.ctx_get_current(&previous_), "cuCtxGetCurrent");
  if (previous_ != ctx) d.check(d.ctx_set_current(ctx), "cuCtxSetCurrent");
  else previous_ = nullptr, restore_ = false;
}

ScopedCurrent::~ScopedCurrent() {
  if (restore_) driver_.ctx_set_current(previous_);
}

namespace {

void warn_stderr(std::string_view msg) { fmt::print(stderr, "attnjit: warning: {}\n", msg); }

std::string resolve_cache_path(const attnjit_context_options& o) {
  if (o.cache_path && *o.cache_path) return o.cache_path;
  return cache::default_cache_path();
}

} // namespace

DeviceInfo query_device(const CudaDriver& d, int ordinal) {
  int count = 0;
  d.check(d.device_get_count(&count), "cuDeviceGetCount");
  if (ordinal < 0 || ordinal >= count)
    throw SpecError(fmt::format("device: got {}; allowed: 0 to {}", ordinal, count - 1));
  CUdevice dev = 0;
  d.check(d.device_get(&dev, ordinal), "cuDeviceGet");
  char name[256] = {};
  d.check(d.device_get_name(name, sizeof name, dev), "cuDeviceGetName");
  DeviceInfo info;
  auto attribute = [&](int& out, CUdevice_attribute a) { d.check(d.device_get_attribute(&out, a, dev), "cuDeviceGetAttribute"); };
  attribute(info.compute_major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
  attribute(info.compute_minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
  attribute(info.sm_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
  attribute(info.max_shared_optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
  info.name = name;
  info.arch = arch_for(info.compute_major, info.compute_minor);
  return info;
}

Context::Context(const attnjit_context_options& o) : driver_(CudaDriver::get()) {
  device_ = query_device(driver_, o.device);
  if (device_.compute_major < 8)
    throw UnsupportedError(fmt::format("device {} is sm_{}{}; attnjit needs sm_80 or newer", device_.name,
                                       device_.compute_major, device_.compute_minor));
  driver_.check(driver_.device_get(&cu_device_, o.device), "cuDeviceGet");
  driver_.check(driver_.primary_ctx_retain(&primary_, cu_device_), "cuDevicePrimaryCtxRetain");
  if (!o.disable_cache) {
    cache::OpenOptions opts;
    opts.warn = warn_stderr;
    const std::string deployed = o.readonly_cache_path ? o.readonly_cache_path : "";
    store_ = cache::LayeredStore::open(resolve_cache_path(o), deployed, opts);
  }
}

Context::~Context() {
  for (auto& [key, fut] : modules_) {
    if (fut.valid() && fut.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      try {
        if (CUmodule m = fut.get()) driver_.module_unload(m);
      } catch (...) {
      }
    }
  }
  driver_.primary_ctx_release(cu_device_);
}

CUmodule Context::module(const std::string& key, const std::function<cache::BinaryRecord()>& build,
                         BinarySource* source) {
  std::promise<CUmodule> promise;
  std::shared_future<CUmodule> fut;
  bool owner = false;
  {
    std::lock_guard lock(mu_);
    auto it = modules_.find(key);
    if (it == modules_.end()) {
      fut = promise.get_future().share();
      modules_.emplace(key, fut);
      owner = true;
    } else {
      fut = it->second;
    }
  }
  if (!owner) {
    if (source) *source = BinarySource::memory;
    return fut.get(); // rethrows the owner's error
  }
  try {
    std::optional<cache::BinaryRecord> rec;
    if (store_) rec = store_->get_binary(key);
    if (source) *source = rec ? BinarySource::cache : BinarySource::compiled;
    if (!rec) {
      rec = build();
      if (store_) store_->put_binary(*rec);
    }
    const ScopedCurrent current(driver_, primary_);
    CUmodule m = nullptr;
    driver_.check(driver_.module_load_data(&m, rec->cubin.data()), "cuModuleLoadData");
    promise.set_value(m);
    return m;
  } catch (...) {
    promise.set_exception(std::current_exception());
    std::lock_guard lock(mu_);
    modules_.erase(key);
    throw;
  }
}

std::shared_ptr<const LoadedKernel> Context::kernel(const KernelSpec& spec, const TileConfig& tile,
                                                    BinarySource* source) {
  auto k = std::make_shared<LoadedKernel>();
  k->shared_bytes = shared_memory_bytes(spec, tile);
  k->threads = tile.threads();
  if (k->shared_bytes > device_.max_shared_optin)
    throw UnsupportedError(fmt::format("tile {} needs {} bytes of shared memory; {} allows {}",
                                       tile.canonical(), k->shared_bytes, device_.name, device_.max_shared_optin));
  k->module = module(binary_key_for(spec, tile, device_.arch),
                     [&] { return build_binary(spec, tile, device_.arch); }, source);
  const ScopedCurrent current(driver_, primary_);
  const std::string attention(kAttentionEntry), reduce(kReduceEntry);
  driver_.check(driver_.module_get_function(&k->attention, k->module, attention.c_str()), "cuModuleGetFunction");
  driver_.check(driver_.module_get_function(&k->reduce, k->module, reduce.c_str()), "cuModuleGetFunction");
  driver_.check(driver_.func_set_attribute(k->attention, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                           k->shared_bytes), "cuFuncSetAttribute");
  driver_.check(driver_.occupancy_max_blocks(&k->ctas_per_sm, k->attention, k->threads, k->shared_bytes),
                "cuOccupancyMaxActiveBlocksPerMultiprocessor");
  return k;
}

CUfunction Context::block_mask_builder(DType dtype) {
  CUmodule m = module(block_mask_key(dtype, device_.arch), [&] { return build_block_mask_binary(dtype, device_.arch); },
                      nullptr);
  const ScopedCurrent current(driver_, primary_);
  CUfunction f = nullptr;
  const std::string entry(kBlockMaskEntry);
  driver_.check(driver_.module_get_function(&f, m, entry.c_str()), "cuModuleGetFunction");
  return f;
}

// ---------------------------------------------------------------------------------------------

namespace {
[[noreturn]] void bad(std::string_view field, std::string_view got, std::string_view allowed) {
  throw SpecError(fmt::format("{}: got {}; allowed: {}", field, got, allowed));
}
DType dtype_of(std::string_view field, attnjit_dtype d) {
  switch (d) {
    case ATTNJIT_DTYPE_F16: return DType::f16;
    case ATTNJIT_DTYPE_BF16: return DType::bf16;
    case ATTNJIT_DTYPE_FP8_E4M3: return DType::fp8_e4m3;
    case ATTNJIT_DTYPE_FP8_E5M2: return DType::fp8_e5m2;
  }
  bad(field, std::to_string(static_cast<int>(d)), "ATTNJIT_DTYPE_F16 (0), BF16 (1), FP8_E4M3 (2) or FP8_E5M2 (3)");
}
} // namespace

attnjit_dtype c_dtype(DType d) {
  switch (d) {
    case DType::f16: return ATTNJIT_DTYPE_F16;
    case DType::bf16: return ATTNJIT_DTYPE_BF16;
    case DType::fp8_e4m3: return ATTNJIT_DTYPE_FP8_E4M3;
    case DType::fp8_e5m2: return ATTNJIT_DTYPE_FP8_E5M2;
  }
  throw std::logic_error("c_dtype: unknown DType");
}

bool tile_is_unset(const attnjit_tile_config& t) {
  return t.block_m == 0 && t.block_n == 0 && t.warps_m == 0 && t.warps_n == 0 && t.stages == 0 &&
         t.max_splits == 0 && t.min_ctas_per_sm == 0 && t.wgmma == 0;
}

TileConfig tile_from_c(const attnjit_tile_config& t) {
  // An explicit tile that leaves the occupancy target at 0 asks for nothing beyond one CTA per SM.
  if (t.wgmma < 0 || t.wgmma > 2)
    throw SpecError(fmt::format("tile.wgmma: got {}; allowed: 0 (mma.sync), 1 (warpgroups) or 2 (warpgroups and a "
                                "producer warpgroup)",
                                t.wgmma));
  return TileConfig{t.block_m, t.block_n, t.warps_m, t.warps_n, t.stages, t.max_splits,
                    t.min_ctas_per_sm == 0 ? 1 : t.min_ctas_per_sm, t.wgmma != 0, t.wgmma == 2};
}

attnjit_tile_config tile_to_c(const TileConfig& t) {
  return attnjit_tile_config{t.block_m, t.block_n, t.warps_m, t.warps_n, t.stages, t.max_splits,
                             t.min_ctas_per_sm, t.producer ? 2 : t.wgmma ? 1 : 0};
}

KernelSpec spec_from_problem(const attnjit_problem& p) {
  if (p.struct_size != sizeof(attnjit_problem))
    bad("problem.struct_size", std::to_string(p.struct_size),
        fmt::format("{} (call attnjit_problem_init first)", sizeof(attnjit_problem)));
  KernelSpec s;
  if (p.family == ATTNJIT_FAMILY_PREFILL) s.family = KernelFamily::prefill;
  else if (p.family == ATTNJIT_FAMILY_DECODE) s.family = KernelFamily::decode;
  else bad("family", std::to_string(static_cast<int>(p.family)), "ATTNJIT_FAMILY_PREFILL (0) or ATTNJIT_FAMILY_DECODE (1)");
  s.q_dtype = dtype_of("q_dtype", p.q_dtype);
  s.kv_dtype = dtype_of("kv_dtype", p.kv_dtype);
  s.head_dim_qk = p.head_dim_qk;
  s.head_dim_v = p.head_dim_v;
  if (p.kv_storage == ATTNJIT_KV_PAGED) {
    s.kv_storage = KvStorage::paged;
    s.page_size = p.page_size;
  } else if (p.kv_storage == ATTNJIT_KV_CONTIGUOUS) {
    s.kv_storage = KvStorage::contiguous;
    s.page_size = 1;
  } else {
    bad("kv_storage", std::to_string(static_cast<int>(p.kv_storage)), "ATTNJIT_KV_PAGED (0) or ATTNJIT_KV_CONTIGUOUS (1)");
  }
  s.causal = p.causal != 0;
  const attnjit_sparsity& sp = p.sparsity;
  s.sliding_window = sp.sliding_window != 0;
  s.learned_sinks = sp.learned_sinks != 0;
  s.soft_cap = sp.soft_cap != 0;
  s.nm_n = sp.nm_n;
  s.nm_m = sp.nm_m;
  s.skip_softmax = sp.skip_softmax != 0;
  s.block_sparse = sp.block_sparse != 0;
  s.sparse_block_q = sp.sparse_block_q;
  s.sparse_block_kv = sp.sparse_block_kv;
  s.kv_scale_per_head = p.kv_scale_per_head != 0;
  validate(s);
  return s;
}

void validate_problem(const attnjit_problem& p) {
  const KernelSpec s = spec_from_problem(p);
  if (p.num_q_heads < 1 || p.num_q_heads > 65535) bad("num_q_heads", std::to_string(p.num_q_heads), "1 to 65535");
  if (p.num_kv_heads < 1 || p.num_q_heads % p.num_kv_heads != 0)
    bad("num_kv_heads", std::to_string(p.num_kv_heads),
        fmt::format("a divisor of num_q_heads ({})", p.num_q_heads));
  if (p.max_batch < 1 || p.max_batch > 65535) bad("max_batch", std::to_string(p.max_batch), "1 to 65535");
  if (p.max_total_q < 1 || p.max_total_q > (int64_t{1} << 31) - 1)
    bad("max_total_q", std::to_string(p.max_total_q), "1 to 2^31-1");
  if (!tile_is_unset(p.tile)) validate(s, tile_from_c(p.tile));
}

Plan::Plan(Context& ctx, const attnjit_problem& problem) : ctx_(ctx), problem_(problem) {
  validate_problem(problem);
  spec_ = spec_from_problem(problem);
  if (!tile_is_unset(problem.tile)) {
    tile_ = tile_from_c(problem.tile);
  } else {
    // The tuned winner for this device and the plan's shape buckets, else the arch's heuristic.
    std::optional<TunedTile> tuned;
    if (ctx.store()) {
      const TuningDevice device{ctx.device().name, ctx.device().sm_count, ctx.device().arch};
      tuned = tuned_tile_for_plan(*ctx.store(), spec_, device, problem.num_q_heads, problem.num_kv_heads,
                                  problem.max_batch, problem.max_total_q, warn_stderr);
    }
    tile_ = tuned ? tuned->tile : default_tile(spec_, ctx.device().arch);
    tuned_ = tuned.has_value();
  }
  kernel_ = ctx.kernel(spec_, tile_);
  if (spec_.family == KernelFamily::decode) {
    // fp32 partial O and LSE per (split, token, q head): proportional to batch x heads x splits x dv.
    workspace_bytes_ = static_cast<size_t>(tile_.max_splits) * problem.max_total_q * problem.num_q_heads *
                       (spec_.head_dim_v + 1) * sizeof(float);
  }
  description_ = fmt::format("{}|{}|{}{}", spec_.canonical(), tile_.canonical(), ctx.device().arch, tuned_ ? "|tuned" : "");
}

int choose_num_splits(long ctas, long slots, int kv_tiles, int max_splits) {
  // Decode streams KV: it needs the CTA slots occupied first (85% of them), and then whole waves
  // (the last wave's CTAs run with the machine part idle). So: the smallest split count whose CTAs
  // fill the slots and whose waves are 85% full, else the best-filled of those that fill the slots,
  // else the most splits allowed. A split keeps at least four KV tiles for the pipeline to overlap.
  int best = 1;
  double best_eff = -1;
  for (int s = 1; s <= max_splits && (s == 1 || kv_tiles / s >= 4); ++s) {
    const long total = ctas * s;
    const long waves = (total + slots - 1) / slots;
    const double eff = total < 0.85 * static_cast<double>(slots) ? 0.0 : static_cast<double>(total) / static_cast<double>(waves * slots);
    if (eff > best_eff + 1e-9 || eff == 0.0) best = s, best_eff = eff;
    if (eff >= 0.85) break;
  }
  return best;
}

int Plan::num_splits(int batch, int max_seqlen_q, int max_seqlen_k) const {
  if (spec_.family != KernelFamily::decode || tile_.max_splits <= 1) return 1;
  const int group = problem_.num_q_heads / problem_.num_kv_heads;
  const long m_blocks = (static_cast<long>(max_seqlen_q) * group + tile_.block_m - 1) / tile_.block_m;
  const long ctas = m_blocks * problem_.num_kv_heads * batch;
  const long slots = static_cast<long>(ctx_.device().sm_count) * std::max(1, kernel_->ctas_per_sm);
  const int tiles = (max_seqlen_k + tile_.block_n - 1) / tile_.block_n;
  return choose_num_splits(ctas, slots, tiles, tile_.max_splits);
}

Plan::Launch Plan::prepare(const attnjit_run_args& a) const {
  auto need = [](bool ok, std::string_view field, std::string_view allowed, auto got) {
    if (!ok) bad(field, fmt::format("{}", got), allowed);
  };
  need(a.struct_size == sizeof(attnjit_run_args), "args.struct_size", "sizeof(attnjit_run_args) (call attnjit_run_args_init)", a.struct_size);
  need(a.batch >= 1 && a.batch <= problem_.max_batch, "args.batch", fmt::format("1 to max_batch ({})", problem_.max_batch), a.batch);
  need(a.total_q >= 1 && a.total_q <= problem_.max_total_q, "args.total_q", fmt::format("1 to max_total_q ({})", problem_.max_total_q), a.total_q);
  need(a.max_seqlen_q >= 1 && a.max_seqlen_q <= a.total_q, "args.max_seqlen_q", "1 to total_q", a.max_seqlen_q);
  need(a.max_seqlen_k >= 1, "args.max_seqlen_k", ">= 1", a.max_seqlen_k);
  need(a.q != nullptr, "args.q", "a device pointer", "null");
  need(a.k != nullptr, "args.k", "a device pointer", "null");
  need(a.v != nullptr, "args.v", "a device pointer", "null");
  need(a.o != nullptr, "args.o", "a device pointer", "null");
  need(a.cu_seqlens_q != nullptr, "args.cu_seqlens_q", "a device pointer to batch + 1 int32", "null");
  auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  need(aligned16(a.q) && aligned16(a.k) && aligned16(a.v), "args.q/k/v", "16-byte aligned pointers", "a misaligned pointer");
  need(reinterpret_cast<uintptr_t>(a.o) % 8 == 0, "args.o", "an 8-byte aligned pointer", "a misaligned pointer");
  // 16-byte row copies need every row start 16-byte aligned: strides are multiples of 8 elements.
  auto stride_ok = [](int64_t s) { return s > 0 && s % 8 == 0; };
  need(stride_ok(a.q_stride_token) && stride_ok(a.q_stride_head), "args.q_stride_token/q_stride_head", "positive multiples of 8", fmt::format("{}/{}", a.q_stride_token, a.q_stride_head));
  need(stride_ok(a.k_stride_token) && stride_ok(a.k_stride_head), "args.k_stride_token/k_stride_head", "positive multiples of 8", fmt::format("{}/{}", a.k_stride_token, a.k_stride_head));
  need(stride_ok(a.v_stride_token) && stride_ok(a.v_stride_head), "args.v_stride_token/v_stride_head", "positive multiples of 8", fmt::format("{}/{}", a.v_stride_token, a.v_stride_head));
  need(a.o_stride_token > 0 && a.o_stride_token % 4 == 0 && a.o_stride_head > 0 && a.o_stride_head % 4 == 0,
       "args.o_stride_token/o_stride_head", "positive multiples of 4", fmt::format("{}/{}", a.o_stride_token, a.o_stride_head));
  // The kernels step between K/V rows and pages in 32-bit byte offsets (one wide multiply-add
  // per row address).
  const int64_t kv_bytes = is_fp8(spec_.kv_dtype) ? 1 : 2; // per K/V element
  const bool paged = spec_.kv_storage == KvStorage::paged;
  auto fits_32 = [&](int64_t s) { return s * kv_bytes <= INT32_MAX; };
  need(fits_32(a.k_stride_token) && fits_32(a.v_stride_token), "args.k_stride_token/v_stride_token",
       fmt::format("at most {} elements (2^31 bytes)", INT32_MAX / kv_bytes), fmt::format("{}/{}", a.k_stride_token, a.v_stride_token));
  if (paged) {
    need(fits_32(a.k_stride_block) && fits_32(a.v_stride_block), "args.k_stride_block/v_stride_block",
         fmt::format("at most {} elements (2^31 bytes)", INT32_MAX / kv_bytes), fmt::format("{}/{}", a.k_stride_block, a.v_stride_block));
    need(a.block_table != nullptr, "args.block_table", "a device pointer (paged storage)", "null");
    need(a.seq_lens_k != nullptr, "args.seq_lens_k", "a device pointer (paged storage)", "null");
    need(stride_ok(a.k_stride_block) && stride_ok(a.v_stride_block), "args.k_stride_block/v_stride_block", "positive multiples of 8", fmt::format("{}/{}", a.k_stride_block, a.v_stride_block));
    need(a.block_table_stride >= (a.max_seqlen_k + spec_.page_size - 1) / spec_.page_size, "args.block_table_stride",
         fmt::format(">= ceil(max_seqlen_k / page_size) = {}", (a.max_seqlen_k + spec_.page_size - 1) / spec_.page_size), a.block_table_stride);
  } else {
    need(a.cu_seqlens_k != nullptr, "args.cu_seqlens_k", "a device pointer (contiguous storage)", "null");
  }

  const int group = problem_.num_q_heads / problem_.num_kv_heads;
  const bool decode = spec_.family == KernelFamily::decode;
  const int splits = num_splits(a.batch, a.max_seqlen_q, a.max_seqlen_k);
  const long rows = static_cast<long>(a.max_seqlen_q) * (decode ? group : 1);
  const long m_blocks = (rows + tile_.block_m - 1) / tile_.block_m;
  need(m_blocks * splits <= 65535, "args.max_seqlen_q", fmt::format("at most {} query rows per head", 65535L * tile_.block_m / splits), a.max_seqlen_q);

  AttentionParams p{};
  p.q = a.q;
  p.q_stride_token = a.q_stride_token;
  p.q_stride_head = a.q_stride_head;
  p.k = a.k;
  p.v = a.v;
  p.k_head_bytes = a.k_stride_head * kv_bytes;
  p.v_head_bytes = a.v_stride_head * kv_bytes;
  p.k_block_bytes = paged ? static_cast<int>(a.k_stride_block * kv_bytes) : 0; // checked to fit above
  p.v_block_bytes = paged ? static_cast<int>(a.v_stride_block * kv_bytes) : 0;
  p.k_token_bytes = static_cast<int>(a.k_stride_token * kv_bytes);
  p.v_token_bytes = static_cast<int>(a.v_stride_token * kv_bytes);
  p.block_table = a.block_table;
  p.block_table_stride = a.block_table_stride;
  p.cu_seqlens_q = a.cu_seqlens_q;
  p.seq_lens_k = a.seq_lens_k;
  p.cu_seqlens_k = a.cu_seqlens_k;
  p.o = a.o;
  p.o_stride_token = a.o_stride_token;
  p.o_stride_head = a.o_stride_head;
  p.lse = a.lse;
  p.total_q = a.total_q;
  p.num_q_heads = problem_.num_q_heads;
  p.group_size = group;
  p.num_m_blocks = static_cast<int>(m_blocks);
  p.num_splits = splits;
  const float scale = a.scale != 0.f ? a.scale : 1.0f / std::sqrt(static_cast<float>(spec_.head_dim_qk));
  need(std::isfinite(scale) && scale > 0.f, "args.scale", "a positive finite number, or 0 for 1/sqrt(head_dim_qk)", a.scale);
  p.scale_log2 = scale * 1.4426950408889634f;
  p.window_size = a.window_size;
  p.sink_tokens = a.sink_tokens;
  p.sinks = a.sinks;
  p.k_scale = a.k_scale;
  p.v_scale = a.v_scale;
  p.nm_dense_sink_tokens = a.nm_dense_sink_tokens;
  p.nm_dense_recent_tokens = a.nm_dense_recent_tokens;
  p.skip_stats = a.skip_stats;
  p.kv_num_blocks = a.kv_num_blocks;
  p.kv_indices = a.kv_indices;
  p.mask_batch = a.mask_batch;
  p.mask_q_blocks = a.mask_q_blocks;
  p.mask_max_kv_blocks = a.mask_max_kv_blocks;
  if (spec_.sliding_window) {
    need(a.window_size >= 1, "args.window_size", ">= 1 (sliding_window is on)", a.window_size);
    need(a.sink_tokens >= 0, "args.sink_tokens", ">= 0", a.sink_tokens);
  }
  if (is_fp8(spec_.kv_dtype))
    need(a.k_scale != nullptr && a.v_scale != nullptr, "args.k_scale/v_scale",
         spec_.kv_scale_per_head ? "device arrays of num_kv_heads floats (fp8 KV)" : "device pointers to one float each (fp8 KV)",
         "null");
  if (spec_.learned_sinks) need(a.sinks != nullptr, "args.sinks", "a device array of num_q_heads floats (learned_sinks is on)", "null");
  if (spec_.soft_cap) {
    need(std::isfinite(a.soft_cap) && a.soft_cap > 0.f, "args.soft_cap", "a positive finite number (soft_cap is on)", a.soft_cap);
    p.softcap_pre = scale / a.soft_cap;
    p.softcap_post = a.soft_cap / scale;
  }
  if (spec_.nm_m > 0)
    need(a.nm_dense_sink_tokens >= 0 && a.nm_dense_recent_tokens >= 0, "args.nm_dense_sink_tokens/nm_dense_recent_tokens",
         ">= 0", fmt::format("{}/{}", a.nm_dense_sink_tokens, a.nm_dense_recent_tokens));
  if (spec_.skip_softmax) {
    need(a.skip_threshold > 0.f && a.skip_threshold < 1.f, "args.skip_threshold", "lambda in (0, 1)", a.skip_threshold);
    p.skip_log2_threshold = std::log2(a.skip_threshold);
  }
  if (spec_.block_sparse) {
    need(a.kv_num_blocks != nullptr && a.kv_indices != nullptr, "args.kv_num_blocks/kv_indices",
         "device arrays (block_sparse is on)", "null");
    need(a.mask_batch == 1 || a.mask_batch == a.batch, "args.mask_batch", fmt::format("1 or batch ({})", a.batch), a.mask_batch);
    const int q_blocks = (a.max_seqlen_q + spec_.sparse_block_q - 1) / spec_.sparse_block_q;
    need(a.mask_q_blocks >= q_blocks, "args.mask_q_blocks", fmt::format(">= ceil(max_seqlen_q / sparse_block_q) = {}", q_blocks), a.mask_q_blocks);
    need(a.mask_max_kv_blocks >= 1, "args.mask_max_kv_blocks", ">= 1", a.mask_max_kv_blocks);
  }
  if (workspace_bytes_ > 0) {
    // Sized for max_splits, not for the split count chosen below: whether a call is accepted must
    // not depend on a heuristic (an undersized buffer would otherwise fail only at some batch sizes).
    const size_t rows = static_cast<size_t>(a.total_q) * problem_.num_q_heads;
    const size_t need_bytes = static_cast<size_t>(tile_.max_splits) * rows * (spec_.head_dim_v + 1) * sizeof(float);
    need(a.workspace != nullptr && a.workspace_bytes >= need_bytes, "args.workspace/workspace_bytes",
         fmt::format("a device buffer of at least {} bytes for total_q {} (attnjit_plan_workspace_bytes gives the bound)",
                     need_bytes, a.total_q),
         fmt::format("{} bytes at {}", a.workspace_bytes, a.workspace));
    need(aligned16(a.workspace), "args.workspace", "a 16-byte aligned pointer", "a misaligned pointer");
    p.partial_o = static_cast<float*>(a.workspace);
    p.partial_lse = p.partial_o + static_cast<size_t>(splits) * rows * spec_.head_dim_v;
  }

  Launch l;
  l.params = p;
  l.grid[0] = decode ? problem_.num_kv_heads : problem_.num_q_heads;
  l.grid[1] = a.batch;
  l.grid[2] = static_cast<unsigned>(m_blocks * splits);
  const long reduce_rows = a.total_q * problem_.num_q_heads;
  l.reduce_blocks = splits > 1 ? static_cast<unsigned>((reduce_rows + kReduceThreads / 32 - 1) / (kReduceThreads / 32)) : 0;
  return l;
}

void Plan::run(const attnjit_run_args& args, CUstream stream) const {
  Launch l = prepare(args);
  const CudaDriver& d = ctx_.driver();
  // A thread that never touched CUDA has no current context; launch in the device's primary one.
  CUcontext current = nullptr;
  if (d.ctx_get_current(&current) == CUDA_SUCCESS && current == nullptr) d.ctx_set_current(ctx_.cu_context());
  void* params[] = {&l.params};
  d.check(d.launch_kernel(kernel_->attention, l.grid[0], l.grid[1], l.grid[2], kernel_->threads, 1, 1,
                          kernel_->shared_bytes, stream, params, nullptr),
          "cuLaunchKernel(attention)");
  if (l.reduce_blocks > 0)
    d.check(d.launch_kernel(kernel_->reduce, l.reduce_blocks, 1, 1, kReduceThreads, 1, 1, 0, stream, params, nullptr),
            "cuLaunchKernel(split_kv_reduce)");
}

} // namespace attnjit
