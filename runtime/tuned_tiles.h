// Shape buckets, tuning keys, and the lookup of tuned tile configs: what the autotuner writes and
// what a plan reads. Lives in the runtime (the tuner depends on it, never the reverse).
//
// Shape buckets. A runtime call maps to one bucket; the tuner measures each bucket at its upper
// edge (clipped to the operator's --max-batch / --max-seq). Edges are powers of four, so a
// default tuning matrix covers every bucket of a deployment with few measurements:
//
//   decode   "decode:r<R>:b<B>:kv<K>"
//     R = rows of one KV head's query tile = max_seqlen_q x (num_q_heads / num_kv_heads),
//         rounded up to a power of two, in [1, 256] (the decode kernel packs these rows into M)
//     B = batch rounded up to a power of four, in [1, 1024]      (1, 4, 16, 64, 256, 1024)
//     K = max_seqlen_k rounded up to 256 x a power of four, in [256, 2^20]
//                                                  (256, 1K, 4K, 16K, 64K, 256K, 1M)
//   prefill  "prefill:q<Q>:kv<K>"
//     Q = max_seqlen_q rounded up to 64 x a power of four, in [64, 2^18]
//                                                  (64, 256, 1K, 4K, 16K, 64K, 256K)
//     K = max_seqlen_k, as for decode, and never below Q
//
// Values above the last edge map to the last bucket. Example: a decode batch of 20 sequences of
// at most 3000 keys, 8 q heads per kv head, is "decode:r8:b64:kv4096".
//
// Tuning key (the design's): hash of the canonical spec (which holds no tile), the device name,
// its SM count, the exact arch, and the bucket name.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "codegen/kernel_spec.h"

namespace attnjit {

namespace cache {
class LayeredStore;
}

struct ShapeBucket {
  KernelFamily family = KernelFamily::prefill;
  int rows = 0;  // decode only: query rows per KV head (R)
  int batch = 0; // decode only (B)
  int q = 0;     // prefill only (Q)
  int kv = 0;    // both (K)

  std::string name() const;
  friend bool operator==(const ShapeBucket&, const ShapeBucket&) = default;
};

// Bucket edges (see the header comment).
inline constexpr int kMaxBucketRows = 256;
inline constexpr int kFirstBatchEdge = 1, kLastBatchEdge = 1024;
inline constexpr int kFirstKvEdge = 256, kLastKvEdge = 1 << 20;
inline constexpr int kFirstQEdge = 64, kLastQEdge = 1 << 18;

// The smallest edge first * 4^k >= x, at most `last`.
int64_t bucket_edge(int64_t x, int64_t first, int64_t last);

// The bucket of one call. group = num_q_heads / num_kv_heads (decode only).
ShapeBucket shape_bucket(KernelFamily family, int batch, int max_seqlen_q, int max_seqlen_k, int group);
ShapeBucket decode_bucket(int batch, int max_seqlen_q, int max_seqlen_k, int group);
ShapeBucket prefill_bucket(int max_seqlen_q, int max_seqlen_k);
// "decode:r8:b64:kv4096" -> bucket; nullopt when the text is not a bucket name.
std::optional<ShapeBucket> parse_bucket(std::string_view name);

// Which GPU a tuning result belongs to.
struct TuningDevice {
  std::string name; // "NVIDIA H100 80GB HBM3"
  int sm_count = 0;
  std::string arch; // "sm_90a"
};

// The tuning key (16 hex digits) of spec x device x bucket.
std::string tuning_key(const KernelSpec& spec, const TuningDevice& device, const ShapeBucket& bucket);

// A tuned winner found for a plan.
struct TunedTile {
  TileConfig tile;
  std::string bucket;     // the bucket whose winner it is
  std::string tuning_key;
  double median_us = 0;
};

// The tuned winner of exactly this bucket, if the cache has a valid one (a winner whose tile does
// not parse or validate for the spec is reported through `warn` and ignored).
std::optional<TunedTile> tuned_tile_for_bucket(cache::LayeredStore& store, const KernelSpec& spec,
                                               const TuningDevice& device, const ShapeBucket& bucket,
                                               const std::function<void(std::string_view)>& warn = {});

// The tile a plan should use when its caller leaves the choice to attnjit: a plan holds one
// kernel, but knows only bounds (max_batch, max_total_q) and the head counts, not the lengths of
// future calls. Rule:
//   decode:  the buckets of R (from group, q length 1) and B (from max_batch), every K edge;
//   prefill: every Q edge up to the bucket of max_total_q, every K edge;
// among the winners the cache holds for those buckets, the tile that wins the most of them
// (ties: the one that wins the bucket with the largest K, then the largest B or Q: long contexts
// and big batches are where the time goes). nullopt when nothing is tuned: use default_tile.
// At most 7 (decode) or 49 (prefill) indexed reads.
std::optional<TunedTile> tuned_tile_for_plan(cache::LayeredStore& store, const KernelSpec& spec,
                                             const TuningDevice& device, int num_q_heads, int num_kv_heads,
                                             int max_batch, int64_t max_total_q,
                                             const std::function<void(std::string_view)>& warn = {});

} // namespace attnjit
