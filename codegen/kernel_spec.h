// KernelSpec: every specialization axis of an attention kernel, in one place.
//
// A spec is the compile-time identity of a kernel: two requests with equal specs run the same
// binary. Runtime values (sequence lengths, strides, head counts, scale) are kernel parameters.
// The tile configuration is a separate value so that the tuner can vary it for a fixed spec.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace attnjit {

enum class DType : uint8_t { f16, bf16, fp8_e4m3, fp8_e5m2 };
inline bool is_fp8(DType d) { return d == DType::fp8_e4m3 || d == DType::fp8_e5m2; }
enum class KvStorage : uint8_t { paged, contiguous };
enum class KernelFamily : uint8_t { prefill, decode };

std::string_view to_string(DType d);
std::string_view to_string(KvStorage s);
std::string_view to_string(KernelFamily f);

// How the work of one CTA is cut into warps and pipeline stages. The tuner's search space.
struct TileConfig {
  int block_m = 0;    // query rows per CTA: 16 or 32 per warp along M
  int block_n = 0;    // keys per KV tile
  int warps_m = 0;    // warps along query rows
  int warps_n = 0;    // warps splitting each KV tile's keys
  int stages = 0;     // cp.async pipeline depth
  int max_splits = 0; // split-KV partitions at most (decode); 1 for prefill
  int min_ctas_per_sm = 0; // occupancy the register allocation must allow (__launch_bounds__)
  // Hopper warpgroup products (wgmma, sm_90a only): each group of four warps owns 64 query rows,
  // and the softmax of one KV tile runs under the products of another. Prefill, 16-bit KV.
  bool wgmma = false;
  // Warp-specialized warpgroup tiles: one more warpgroup, the producer, issues every K/V copy, and
  // the warps_m / 4 consumer warpgroups (two or three) take turns at the tensor cores.
  bool producer = false;

  int threads() const { return 32 * warps_m * warps_n + (producer ? 128 : 0); }
  // "bm128.bn64.wm8.wn1.st2.sp1.oc1", + ".wg1" for warpgroup tiles, ".wg2" with a producer
  std::string canonical() const;
  std::string_view warpgroup_suffix() const { return producer ? ".wg2" : wgmma ? ".wg1" : ""; }
  friend bool operator==(const TileConfig&, const TileConfig&) = default;
};

struct KernelSpec {
  KernelFamily family = KernelFamily::prefill;
  DType q_dtype = DType::bf16; // q and o
  DType kv_dtype = DType::bf16;
  int head_dim_qk = 128;
  int head_dim_v = 128;
  int page_size = 16; // 1 for contiguous storage (normalized)
  KvStorage kv_storage = KvStorage::paged;
  bool causal = false;

  // Masks and sparsity patterns (the design's attention contract defines each rule).
  bool sliding_window = false; // window size and sink tokens are runtime values
  bool learned_sinks = false;  // one logit per q head in the softmax denominator
  bool soft_cap = false;       // cap value is a runtime value
  int nm_n = 0, nm_m = 0;      // N:M sparse softmax; 0:0 = off
  bool skip_softmax = false;   // threshold is a runtime value
  bool block_sparse = false;
  int sparse_block_q = 0, sparse_block_kv = 0; // block-sparse block sizes
  bool kv_scale_per_head = false;              // fp8 KV: per-kv-head scales instead of one

  // A short label for people: "decode bf16/e4m3 192/128 page 16 causal window sinks".
  std::string label() const;

  // "attn;fam=prefill;q=bf16;kv=bf16;dqk=128;dv=128;kv_storage=paged;page=16;causal=1;win=0;...".
  // Independent of the tile config; parse(canonical()) round-trips.
  std::string canonical() const;
  friend bool operator==(const KernelSpec&, const KernelSpec&) = default;
};

// Limits of the contract, referenced by validation messages and by tests.
inline constexpr int kMinHeadDim = 16, kMaxHeadDim = 256, kHeadDimStep = 16;
inline constexpr int kMinPageSize = 1, kMaxPageSize = 256;
inline constexpr int kMaxSharedMemoryBytes = 227 * 1024; // sm_90's opt-in limit per block

// Opt-in shared memory per block of an arch ("sm_80", "sm_90a", ...).
int max_shared_memory_bytes(std::string_view arch);
// Shared memory one CTA may use when `ctas_per_sm` of them must fit on one SM (per SM: the
// per-block limit + 1 KB of reserve per CTA).
int shared_memory_budget(std::string_view arch, int ctas_per_sm);

// Throws SpecError naming the field and the allowed values.
void validate(const KernelSpec& spec);
void validate(const KernelSpec& spec, const TileConfig& tile);

// validate(spec, tile), and that `arch` can run the tile: shared memory, warpgroup products.
void validate(const KernelSpec& spec, const TileConfig& tile, std::string_view arch);

// Shared memory (bytes) a CTA of this spec and tile needs.
int shared_memory_bytes(const KernelSpec& spec, const TileConfig& tile);

// The heuristic tile config used when nothing is tuned for `arch` ("sm_80", "sm_90a", ...). Always
// valid for the spec and within the arch's shared memory; the runtime and `attn-cache precompile`
// both call this, so a precompiled default is exactly what the runtime asks for.
TileConfig default_tile(const KernelSpec& spec, std::string_view arch);

KernelSpec parse_spec(std::string_view canonical);
TileConfig parse_tile(std::string_view canonical);

// 64-bit stable hash rendered as 16 hex digits.
std::string stable_hash_hex(std::string_view bytes);

} // namespace attnjit
