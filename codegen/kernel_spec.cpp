#include "codegen/kernel_spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <optional>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "codegen/errors.h"

namespace attnjit {

std::string_view to_string(DType d) {
  switch (d) {
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::fp8_e4m3: return "e4m3";
    case DType::fp8_e5m2: return "e5m2";
  }
  return "?";
}
std::string_view to_string(KvStorage s) { return s == KvStorage::paged ? "paged" : "contiguous"; }
std::string_view to_string(KernelFamily f) { return f == KernelFamily::prefill ? "prefill" : "decode"; }

namespace {

[[noreturn]] void fail(std::string_view field, std::string_view got, std::string_view allowed) {
  throw SpecError(fmt::format("{}: got {}; allowed: {}", field, got, allowed));
}

bool is_pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }

void check_head_dim(std::string_view field, int d) {
  if (d < kMinHeadDim || d > kMaxHeadDim || d % kHeadDimStep != 0)
    fail(field, std::to_string(d),
         fmt::format("a multiple of {} in [{}, {}]", kHeadDimStep, kMinHeadDim, kMaxHeadDim));
}

// "key=value;key=value" → map; the first field may be a bare tag.
std::map<std::string, std::string, std::less<>> split_fields(std::string_view s, char sep, char eq) {
  std::map<std::string, std::string, std::less<>> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(sep, start);
    if (end == std::string_view::npos) end = s.size();
    std::string_view item = s.substr(start, end - start);
    size_t e = item.find(eq);
    if (e != std::string_view::npos) out.emplace(std::string(item.substr(0, e)), std::string(item.substr(e + 1)));
    else if (!item.empty()) out.emplace(std::string(item), "");
    start = end + 1;
  }
  return out;
}

int to_int(std::string_view field, std::string_view v) {
  int x = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (ec != std::errc() || ptr != v.data() + v.size()) fail(field, fmt::format("'{}'", v), "an integer");
  return x;
}

// Pattern fields default to "off" when absent, so short strings ("attn;fam=...;causal=1") name
// the dense kernel; canonical() always writes every field.
template <class Map> std::string get_or(const Map& m, std::string_view key, std::string fallback) {
  auto it = m.find(key);
  return it == m.end() ? fallback : it->second;
}

template <class Map> const std::string& need(const Map& m, std::string_view key) {
  auto it = m.find(key);
  if (it == m.end()) throw SpecError(fmt::format("spec string: missing field '{}'", key));
  return it->second;
}

} // namespace

std::string TileConfig::canonical() const {
  return fmt::format("bm{}.bn{}.wm{}.wn{}.st{}.sp{}.oc{}{}", block_m, block_n, warps_m, warps_n, stages, max_splits,
                     min_ctas_per_sm, warpgroup_suffix());
}

std::string KernelSpec::canonical() const {
  return fmt::format("attn;fam={};q={};kv={};dqk={};dv={};kv_storage={};page={};causal={};win={};lsink={};"
                     "cap={};nm={}:{};skip={};bsp={}:{}x{};kvscale={}",
                     to_string(family), to_string(q_dtype), to_string(kv_dtype), head_dim_qk, head_dim_v,
                     to_string(kv_storage), page_size, causal ? 1 : 0, sliding_window ? 1 : 0,
                     learned_sinks ? 1 : 0, soft_cap ? 1 : 0, nm_n, nm_m, skip_softmax ? 1 : 0,
                     block_sparse ? 1 : 0, sparse_block_q, sparse_block_kv, kv_scale_per_head ? "head" : "tensor");
}

std::string KernelSpec::label() const {
  std::string out = fmt::format("{} {}", to_string(family), to_string(q_dtype));
  if (kv_dtype != q_dtype) out += fmt::format("/{}", to_string(kv_dtype));
  out += fmt::format(" {}/{} ", head_dim_qk, head_dim_v);
  out += kv_storage == KvStorage::paged ? fmt::format("page {}", page_size) : std::string("contiguous");
  if (causal) out += " causal";
  if (sliding_window) out += " window";
  if (learned_sinks) out += " sinks";
  if (soft_cap) out += " softcap";
  if (nm_m > 0) out += fmt::format(" {}:{}", nm_n, nm_m);
  if (skip_softmax) out += " skip-softmax";
  if (block_sparse) out += fmt::format(" block-sparse {}x{}", sparse_block_q, sparse_block_kv);
  if (kv_scale_per_head) out += " per-head-scales";
  return out;
}

void validate(const KernelSpec& s) {
  check_head_dim("head_dim_qk", s.head_dim_qk);
  check_head_dim("head_dim_v", s.head_dim_v);
  if (s.kv_storage == KvStorage::paged) {
    if (!is_pow2(s.page_size) || s.page_size < kMinPageSize || s.page_size > kMaxPageSize)
      fail("page_size", std::to_string(s.page_size),
           fmt::format("a power of two in [{}, {}]", kMinPageSize, kMaxPageSize));
  } else if (s.page_size != 1) {
    fail("page_size", std::to_string(s.page_size), "1 for contiguous kv_storage");
  }
  if (is_fp8(s.q_dtype)) fail("q_dtype", std::string(to_string(s.q_dtype)), "f16 or bf16 (fp8 is for KV only)");
  if (!is_fp8(s.kv_dtype) && s.kv_dtype != s.q_dtype)
    fail("kv_dtype", std::string(to_string(s.kv_dtype)),
         fmt::format("the q dtype ({}), e4m3 or e5m2", to_string(s.q_dtype)));
  if (s.kv_scale_per_head && !is_fp8(s.kv_dtype))
    fail("kv_scale_per_head", "1", "0 unless kv_dtype is e4m3 or e5m2");
  // N:M sparse softmax.
  if (s.nm_n != 0 || s.nm_m != 0) {
    if (s.nm_m != 4 && s.nm_m != 8 && s.nm_m != 16) fail("nm_m", std::to_string(s.nm_m), "4, 8 or 16 (0 with nm_n 0: off)");
    if (s.nm_n <= 0 || s.nm_n >= s.nm_m) fail("nm_n", std::to_string(s.nm_n), fmt::format("1 to {} (0 < N < M)", s.nm_m - 1));
  }
  if (s.block_sparse) {
    if (s.family != KernelFamily::prefill) fail("block_sparse", "1 with the decode family", "the prefill family");
    for (auto [name, v] : {std::pair{"sparse_block_q", s.sparse_block_q}, std::pair{"sparse_block_kv", s.sparse_block_kv}})
      if (v < 16 || v > 1024 || v % 16 != 0) fail(name, std::to_string(v), "a multiple of 16 in [16, 1024]");
  } else if (s.sparse_block_q != 0 || s.sparse_block_kv != 0) {
    fail("sparse_block_q/sparse_block_kv", fmt::format("{}/{}", s.sparse_block_q, s.sparse_block_kv), "0 without block_sparse");
  }
  // Patterns that select keys by different criteria do not compose: each would change what the
  // other sees (top-N groups vs skipped tiles vs listed blocks).
  const int selectors = (s.nm_m != 0) + s.skip_softmax + s.block_sparse;
  if (selectors > 1)
    fail("sparsity", fmt::format("nm={}:{} skip_softmax={} block_sparse={}", s.nm_n, s.nm_m, s.skip_softmax ? 1 : 0,
                                 s.block_sparse ? 1 : 0),
         "at most one of N:M sparse softmax, skip-softmax and block sparse");
}

void validate(const KernelSpec& s, const TileConfig& t) {
  validate(s);
  auto one_of = [](int v, std::initializer_list<int> xs) { return std::find(xs.begin(), xs.end(), v) != xs.end(); };
  if (!one_of(t.warps_m, {1, 2, 4, 8}) && !(t.producer && t.warps_m == 12))
    fail("tile.warps_m", std::to_string(t.warps_m), "1, 2, 4 or 8 (or 12 with a producer warpgroup)");
  if (!one_of(t.warps_n, {1, 2, 4, 8})) fail("tile.warps_n", std::to_string(t.warps_n), "1, 2, 4 or 8");
  if (32 * t.warps_m * t.warps_n > (t.producer ? 384 : 256))
    fail("tile.warps_m * tile.warps_n", std::to_string(t.warps_m * t.warps_n),
         t.producer ? "at most 12 warps beside a producer warpgroup" : "at most 8 warps");
  if (t.block_m < 16 * t.warps_m || t.block_m % (16 * t.warps_m) != 0 || t.block_m / (16 * t.warps_m) > 2)
    fail("tile.block_m", std::to_string(t.block_m),
         fmt::format("16 or 32 rows per warp: {} or {}", 16 * t.warps_m, 32 * t.warps_m));
  if (t.block_n % (16 * t.warps_n) != 0 || t.block_n < 16 || t.block_n > 256)
    fail("tile.block_n", std::to_string(t.block_n),
         fmt::format("a multiple of {} (16 keys per key-splitting warp) in [16, 256]", 16 * t.warps_n));
  if (t.stages < 2 || t.stages > 5) fail("tile.stages", std::to_string(t.stages), "2 to 5");
  // Launch bounds that leave each thread at least 64 registers (the register file is 64K).
  if (const int most = 65536 / (64 * t.threads()); t.min_ctas_per_sm < 1 || t.min_ctas_per_sm > most)
    fail("tile.min_ctas_per_sm", std::to_string(t.min_ctas_per_sm), fmt::format("1 to {} for {} threads", most, t.threads()));
  if (s.family == KernelFamily::prefill) {
    if (t.warps_n != 1) fail("tile.warps_n", std::to_string(t.warps_n), "1 for the prefill family");
    if (t.max_splits != 1) fail("tile.max_splits", std::to_string(t.max_splits), "1 for the prefill family");
  } else if (t.max_splits < 1 || t.max_splits > 256) {
    fail("tile.max_splits", std::to_string(t.max_splits), "1 to 256");
  }
  if (s.skip_softmax && t.warps_n != 1)
    fail("tile.warps_n", std::to_string(t.warps_n), "1 with skip_softmax (the skip decision is per query tile)");
  if (s.block_sparse && (s.sparse_block_q % t.block_m != 0 || s.sparse_block_kv % t.block_n != 0))
    fail("tile", t.canonical(), fmt::format("block_m dividing sparse_block_q ({}) and block_n dividing sparse_block_kv ({})",
                                             s.sparse_block_q, s.sparse_block_kv));
  if (s.nm_m > 0 && t.block_n / t.warps_n < 4 * s.nm_m)
    fail("tile.block_n", std::to_string(t.block_n),
         fmt::format("at least {} (4 * nm_m keys per key-splitting warp: each N:M group lies in one thread)",
                     4 * s.nm_m * t.warps_n));
  if (t.wgmma) {
    const std::string tile = t.canonical();
    if (s.family != KernelFamily::prefill) fail("tile.wgmma", tile, "0 for the decode family");
    if (is_fp8(s.kv_dtype) && !t.producer)
      fail("tile.wgmma", tile, "0 or 2 with fp8 KV (warpgroup products take fp8 K and V widened by a producer warpgroup)");
    if (s.skip_softmax && t.producer)
      fail("tile.wgmma", tile, "0 or 1 with skip_softmax (the copies wait for each tile's vote: no producer warpgroup)");
    if (s.head_dim_qk % 64 != 0 || s.head_dim_v % 64 != 0)
      fail("tile.wgmma", tile, fmt::format("0 unless head_dim_qk ({}) and head_dim_v ({}) are multiples of 64",
                                           s.head_dim_qk, s.head_dim_v));
    if (t.warps_m % 4 != 0 || t.block_m != 16 * t.warps_m)
      fail("tile.block_m", std::to_string(t.block_m),
           "16 rows per warp in whole warpgroups (warps_m 4 or 8; 12 with a producer) with wgmma");
    if (t.block_n % 64 != 0) fail("tile.block_n", std::to_string(t.block_n), "a multiple of 64 with wgmma");
    if (t.stages < 3) fail("tile.stages", std::to_string(t.stages), "3 to 5 with wgmma");
  }
  if (t.producer) {
    if (!t.wgmma) fail("tile.producer", t.canonical(), "only with wgmma (a producer warpgroup serves warpgroup tiles)");
    if (t.warps_m != 8 && t.warps_m != 12)
      fail("tile.warps_m", std::to_string(t.warps_m),
           "8 or 12 with a producer warpgroup (two or three consumer warpgroups)");
    if (t.min_ctas_per_sm != 1)
      fail("tile.min_ctas_per_sm", std::to_string(t.min_ctas_per_sm),
           "1 with a producer warpgroup (its registers go to the consumers of one CTA)");
  }
  const int smem = shared_memory_bytes(s, t);
  if (smem > kMaxSharedMemoryBytes)
    fail("tile", fmt::format("{} needing {} bytes of shared memory", t.canonical(), smem),
         fmt::format("at most {} bytes (sm_90)", kMaxSharedMemoryBytes));
}

void validate(const KernelSpec& s, const TileConfig& t, std::string_view arch) {
  validate(s, t);
  if (t.wgmma && arch != "sm_90a") fail("tile.wgmma", t.canonical(), fmt::format("0 for {} (wgmma needs sm_90a)", arch));
  if (const int smem = shared_memory_bytes(s, t); smem > max_shared_memory_bytes(arch))
    fail("tile", fmt::format("{} needing {} bytes of shared memory", t.canonical(), smem),
         fmt::format("at most {} bytes on {}", max_shared_memory_bytes(arch), arch));
}

int shared_memory_bytes(const KernelSpec& s, const TileConfig& t) {
  // Mirrors KernelTraits::kSmemBytes; the emitted source static_asserts that the two agree.
  if (t.wgmma) { // unpadded 128-byte atoms, the base aligned to 1024 bytes in the kernel
    const int v_stages = s.skip_softmax ? 1 : t.stages; // skip-softmax: V fetched on demand
    const int mainloop = (t.block_m * s.head_dim_qk + t.stages * t.block_n * s.head_dim_qk + v_stages * t.block_n * s.head_dim_v) * 2;
    const int epilogue = (t.block_m * (s.head_dim_v + 4) + 3 * t.block_m) * 4;
    const int stage_barriers = t.producer ? 16 * t.stages : 0;
    return std::max(mainloop, epilogue) + stage_barriers + 1024;
  }
  const bool fp8 = is_fp8(s.kv_dtype);
  const int q = t.block_m * (s.head_dim_qk + 8) * 2;
  const int v_stages = s.skip_softmax ? 1 : t.stages; // skip-softmax: V fetched on demand
  // N:M's thread-contiguous key order skews each K or V stage by 32 bytes per run of
  // block_n / warps_n / 4 keys (templates/smem_rows.cuh).
  const int skew = s.nm_m > 0 ? 4 * t.warps_n * 32 : 0;
  // 16-bit rows: pitch 2 D + 16 bytes. fp8 rows stay bytes: decode's rows of 128 or 256 bytes are
  // swizzled, unpadded (not under N:M's skew); others padded to an odd number of 16-byte units.
  auto row_pitch = [&](int d) {
    if (!fp8) return (d + 8) * 2;
    if (s.family == KernelFamily::decode && (d == 128 || d == 256) && skew == 0) return d;
    return d + ((d / 16) % 2 == 0 ? 16 : 32);
  };
  const int k_stage = t.block_n * row_pitch(s.head_dim_qk) + skew, v_stage = t.block_n * row_pitch(s.head_dim_v) + skew;
  const int stages = t.stages * k_stage + v_stages * v_stage;
  const int epilogue = (t.warps_n * t.block_m * (s.head_dim_v + 4) + (2 * t.warps_n + 1) * t.block_m) * 4;
  return std::max(q + stages, epilogue);
}

int max_shared_memory_bytes(std::string_view arch) {
  // Opt-in dynamic shared memory per block by compute capability.
  if (arch.starts_with("sm_90") || arch.starts_with("sm_100") || arch.starts_with("sm_120")) return 227 * 1024;
  if (arch == "sm_80" || arch == "sm_87") return 163 * 1024;
  return 99 * 1024; // sm_86, sm_89
}

int shared_memory_budget(std::string_view arch, int ctas_per_sm) {
  const int per_block = max_shared_memory_bytes(arch);
  return std::min(per_block, (per_block + 1024) / ctas_per_sm - 1024);
}

namespace {
// sm_90a prefill: warpgroup tiles where the spec allows them. One warpgroup of 64 rows per CTA and
// two CTAs per SM, so that one CTA's products run under the other's softmax; where two do not fit
// in shared memory, one CTA of two warpgroups (128 rows).
std::optional<TileConfig> default_wgmma_tile(const KernelSpec& s, std::string_view arch) {
  if (arch != "sm_90a" || s.family != KernelFamily::prefill) return std::nullopt;
  // Heads 128 or 192 wide (the widths measured): a producer warpgroup beside two consumer
  // warpgroups. On H100 against the uniform tiles before it: causal d128 0.69 -> 0.61 ms,
  // non-causal 1.21 -> 1.06, block sparse 30% 0.46 -> 0.41, N:M 2:4 0.82 -> 0.76; causal 192/128
  // 0.91 -> 0.73, MiMo TP-8 full 0.448 -> 0.328, SWA 0.119 -> 0.112 (bench/RESULTS.md). fp8 KV
  // too (the producer widens it), against the mma.sync tiles: causal d128 0.94 -> 0.72, MiMo TP-8
  // full 0.58 -> 0.44, SWA 0.147 -> 0.130 (the tuner found an mma.sync tile faster still there,
  // 0.118). Three consumer warpgroups ran causal d128 faster still (0.556), but their 192-row
  // blocks pad short sequences and do not divide 128-row mask blocks: a choice for the tuner.
  const int widest = std::max(s.head_dim_qk, s.head_dim_v);
  const bool producer = widest == 128 || widest == 192;
  // Skip-softmax takes uniform warpgroups (its copies wait for each tile's vote: no producer): 64
  // rows, two CTAs per SM, four stages. On H100 at lambda 0.1 / 0.01 / 0.001 (98% / 90% / 0% of
  // tiles skipped): 0.783 / 0.823 / 1.510 ms, three stages 0.799 / 0.831 / 1.549, 128 rows 0.833 /
  // 0.904 / 1.655; the mma.sync kernel 1.030 / 1.082 / 1.733 (bench/RESULTS.md). Tried first for
  // skip-softmax only.
  const TileConfig skip_softmax_tile{.block_m = 64, .block_n = 64, .warps_m = 4, .warps_n = 1, .stages = 4,
                                     .max_splits = 1, .min_ctas_per_sm = 2, .wgmma = true};
  for (TileConfig t : {skip_softmax_tile,
                       TileConfig{.block_m = 128, .block_n = 64, .warps_m = 8, .warps_n = 1, .stages = 4, .max_splits = 1,
                                  .min_ctas_per_sm = 1, .wgmma = true, .producer = true},
                       TileConfig{.block_m = 64, .block_n = 64, .warps_m = 4, .warps_n = 1, .stages = 3, .max_splits = 1,
                                  .min_ctas_per_sm = 2, .wgmma = true},
                       TileConfig{.block_m = 128, .block_n = 64, .warps_m = 8, .warps_n = 1, .stages = 4, .max_splits = 1,
                                  .min_ctas_per_sm = 1, .wgmma = true},
                       TileConfig{.block_m = 128, .block_n = 64, .warps_m = 8, .warps_n = 1, .stages = 3, .max_splits = 1,
                                  .min_ctas_per_sm = 1, .wgmma = true}}) {
    if (t == skip_softmax_tile && !s.skip_softmax) continue;
    if (t.producer && !producer) continue;
    if (s.block_sparse && (s.sparse_block_q % t.block_m != 0 || s.sparse_block_kv % t.block_n != 0)) continue;
    if (shared_memory_bytes(s, t) > shared_memory_budget(arch, t.min_ctas_per_sm)) continue;
    try {
      validate(s, t, arch);
    } catch (const SpecError&) {
      continue; // a spec the tile does not cover (fp8 KV without a producer, skip-softmax with one, head dims)
    }
    return t;
  }
  return std::nullopt;
}
} // namespace

TileConfig default_tile(const KernelSpec& s, std::string_view arch) {
  if (const std::optional<TileConfig> wgmma = default_wgmma_tile(s, arch)) return *wgmma;
  TileConfig t;
  if (s.family == KernelFamily::decode) {
    // One m16 tile of packed (query token, query head) rows; four warps share each KV tile's keys.
    t = {.block_m = 16, .block_n = 64, .warps_m = 1, .warps_n = 4, .stages = 3, .max_splits = 32, .min_ctas_per_sm = 2};
    // fp8 KV: twice the keys per byte, each widened in registers, so per byte the loop runs about
    // twice the instructions of 16-bit KV and is latency-bound rather than byte-bound. Two stages
    // and four CTAs per SM (128 registers) measured best in a 13-tile sweep (H200, d128: 0.146 ms
    // against 0.150-0.226 ms; three or four stages, which cost CTAs per SM, were slower). With
    // swizzled rows a third stage fits beside four CTAs, and still ran slower (0.134 against 0.130
    // ms; bench/RESULTS.md). 256-wide heads keep two CTAs per SM: under 128 registers they spill.
    if (is_fp8(s.kv_dtype))
      t = {.block_m = 16, .block_n = 64, .warps_m = 1, .warps_n = 4, .stages = 2, .max_splits = 64,
           .min_ctas_per_sm = std::max(s.head_dim_qk, s.head_dim_v) <= 192 ? 4 : 2};
  } else if (s.head_dim_v <= 128) {
    // Four warps of 32 rows (two m16 tiles each: every K/V fragment read from shared memory feeds
    // two MMAs) and two CTAs per SM, 256 registers per thread. Against eight warps of 16 rows
    // under a 128-register cap, on H200: causal d128 0.967 -> 0.831 ms, non-causal 1.860 -> 1.650,
    // causal 192/128 1.315 -> 1.167 (MiMo TP-8 0.683 -> 0.592, its SWA layer 0.124 -> 0.123,
    // fp8 0.674 -> 0.593); every pattern variant measured faster too (bench/RESULTS.md). Wide QK
    // rows take a narrower KV tile.
    t = {.block_m = 128, .block_n = s.head_dim_qk <= 128 ? 64 : 32, .warps_m = 4, .warps_n = 1, .stages = 2,
         .max_splits = 1, .min_ctas_per_sm = 2};
  } else {
    // Up to 128 fp32 O registers per thread: keep the S tile small so nothing spills.
    t = {.block_m = 64, .block_n = 32, .warps_m = 4, .warps_n = 1, .stages = 2, .max_splits = 1, .min_ctas_per_sm = 1};
  }
  // Pattern constraints: one key-splitting warp under skip-softmax (the skip is decided per query
  // tile); tiles that divide the block-sparse blocks.
  if (s.skip_softmax && t.warps_n > 1) t.warps_n = 1;
  // N:M: each group lies in one thread (4 * M keys per key-splitting warp). The dense CTAs per SM
  // stay, spills and all (bench/RESULTS.md: with eight warps of 16 rows, two capped CTAs ran 8:16
  // in 1.23 ms against 1.47 ms for one uncapped CTA).
  if (s.nm_m > 0) {
    while (t.block_n / t.warps_n < 4 * s.nm_m) {
      if (t.warps_n > 1) t.warps_n /= 2;
      else t.block_n *= 2;
    }
  }
  if (s.block_sparse) {
    while (s.sparse_block_q % t.block_m != 0) {
      t.block_m /= 2;
      if (t.block_m < 16 * t.warps_m) t.warps_m /= 2;
    }
    while (s.sparse_block_kv % t.block_n != 0) t.block_n /= 2;
  }
  auto budget = [&] { return shared_memory_budget(arch, t.min_ctas_per_sm); };
  // Prefill's four warps of 32 rows rely on a second CTA per SM for eight resident warps. Where
  // shared memory holds only one (d128 on sm_80 and sm_86; wide N:M tiles), eight warps of 16 rows
  // take their place, two CTAs under a 128-register cap for head dims above 64, as measured before
  // the 32-row tiles (bench/RESULTS.md).
  if (s.family == KernelFamily::prefill && t.block_m == 128 && t.warps_m == 4 && shared_memory_bytes(s, t) > budget()) {
    t.warps_m = 8;
    t.min_ctas_per_sm = std::max(s.head_dim_qk, s.head_dim_v) > 64 ? 2 : 1;
  }
  // Fit the arch's shared memory: first give up the second CTA per SM, then shed stages, keys per
  // tile, key-splitting warps and query rows (keys per warp stay at least 16, or 4 * M under N:M).
  const int min_warp_keys = s.nm_m > 0 ? 4 * s.nm_m : 16;
  while (t.min_ctas_per_sm > 1 && shared_memory_bytes(s, t) > budget()) --t.min_ctas_per_sm;
  while (shared_memory_bytes(s, t) > budget()) {
    if (t.stages > 2) --t.stages;
    else if (t.block_n / t.warps_n > min_warp_keys) t.block_n /= 2;
    else if (t.warps_n > 1) t.warps_n /= 2, t.block_n /= 2;
    else if (t.block_m > 16) {
      t.block_m /= 2;
      if (t.block_m < 16 * t.warps_m) t.warps_m /= 2;
    } else break;
  }
  return t;
}

KernelSpec parse_spec(std::string_view str) {
  auto f = split_fields(str, ';', '=');
  if (!f.contains("attn")) throw SpecError(fmt::format("spec string '{}': not an attention spec", str));
  KernelSpec s;
  const auto& fam = need(f, "fam");
  if (fam == "prefill") s.family = KernelFamily::prefill;
  else if (fam == "decode") s.family = KernelFamily::decode;
  else fail("fam", fam, "prefill or decode");
  auto dtype = [&](std::string_view key) {
    const auto& v = need(f, key);
    if (v == "f16") return DType::f16;
    if (v == "bf16") return DType::bf16;
    if (v == "e4m3") return DType::fp8_e4m3;
    if (v == "e5m2") return DType::fp8_e5m2;
    fail(key, v, "f16, bf16, e4m3 or e5m2");
  };
  s.q_dtype = dtype("q");
  s.kv_dtype = dtype("kv");
  s.head_dim_qk = to_int("dqk", need(f, "dqk"));
  s.head_dim_v = to_int("dv", need(f, "dv"));
  const auto& st = need(f, "kv_storage");
  if (st == "paged") s.kv_storage = KvStorage::paged;
  else if (st == "contiguous") s.kv_storage = KvStorage::contiguous;
  else fail("kv_storage", st, "paged or contiguous");
  s.page_size = to_int("page", need(f, "page"));
  s.causal = to_int("causal", need(f, "causal")) != 0;
  s.sliding_window = to_int("win", get_or(f, "win", "0")) != 0;
  s.learned_sinks = to_int("lsink", get_or(f, "lsink", "0")) != 0;
  s.soft_cap = to_int("cap", get_or(f, "cap", "0")) != 0;
  s.skip_softmax = to_int("skip", get_or(f, "skip", "0")) != 0;
  auto pair = [&](std::string_view key, char sep, int& a, int& b) {
    const std::string v = get_or(f, key, "0:0");
    const size_t at = v.find(sep);
    if (at == std::string::npos) fail(key, v, fmt::format("two integers separated by '{}'", sep));
    a = to_int(key, std::string_view(v).substr(0, at));
    b = to_int(key, std::string_view(v).substr(at + 1));
  };
  pair("nm", ':', s.nm_n, s.nm_m);
  {
    const std::string v = get_or(f, "bsp", "0:0x0");
    const size_t colon = v.find(':');
    if (colon == std::string::npos) fail("bsp", v, "'0:0x0' or '1:<q block>x<kv block>'");
    s.block_sparse = to_int("bsp", std::string_view(v).substr(0, colon)) != 0;
    const std::string sizes = v.substr(colon + 1);
    const size_t x = sizes.find('x');
    if (x == std::string::npos) fail("bsp", v, "'0:0x0' or '1:<q block>x<kv block>'");
    s.sparse_block_q = to_int("bsp", std::string_view(sizes).substr(0, x));
    s.sparse_block_kv = to_int("bsp", std::string_view(sizes).substr(x + 1));
  }
  const std::string scale = get_or(f, "kvscale", "tensor");
  if (scale != "tensor" && scale != "head") fail("kvscale", scale, "tensor or head");
  s.kv_scale_per_head = scale == "head";
  validate(s);
  return s;
}

TileConfig parse_tile(std::string_view str) {
  TileConfig t;
  std::vector<std::pair<std::string_view, int*>> keys = {{"bm", &t.block_m}, {"bn", &t.block_n},
      {"wm", &t.warps_m}, {"wn", &t.warps_n}, {"st", &t.stages}, {"sp", &t.max_splits}, {"oc", &t.min_ctas_per_sm}};
  size_t start = 0;
  for (auto& [prefix, dst] : keys) {
    if (start > str.size()) throw SpecError(fmt::format("tile string '{}': expected '{}' after the end", str, prefix));
    size_t end = str.find('.', start);
    if (end == std::string_view::npos) end = str.size();
    std::string_view item = str.substr(start, end - start);
    if (!item.starts_with(prefix)) throw SpecError(fmt::format("tile string '{}': expected '{}' at '{}'", str, prefix, item));
    *dst = to_int(prefix, item.substr(prefix.size()));
    start = end + 1;
  }
  if (start <= str.size()) { // optional fields
    const std::string_view rest = str.substr(start);
    if (rest != "wg0" && rest != "wg1" && rest != "wg2")
      throw SpecError(fmt::format("tile string '{}': expected 'wg1' or 'wg2' at '{}'", str, rest));
    t.wgmma = rest != "wg0";
    t.producer = rest == "wg2";
  }
  return t;
}

std::string stable_hash_hex(std::string_view bytes) {
  return fmt::format("{:016x}", XXH3_64bits(bytes.data(), bytes.size()));
}

} // namespace attnjit
