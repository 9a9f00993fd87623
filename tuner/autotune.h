// The autotuner: which (spec, shape bucket) units a deployment needs, the search over each unit's
// candidates, and the rows it leaves in the cache. The GPU is behind two interfaces (Measurer,
// CandidateCompiler) so that everything here runs in tests without one.
//
// Tuning matrix (plan_units). For each kernel spec of the deployment and each phase asked for:
//   decode   every batch edge up to the bucket of --max-batch x every KV edge up to the bucket of
//            --max-seq (shape_bucket's edges, runtime/tuned_tiles.h), measured at batch =
//            min(edge, max_batch), KV length = min(edge, max_seq), one query token per sequence;
//   prefill  every q edge up to the bucket of --max-seq x every KV edge from that q edge up,
//            measured at q = min(edge, max_seq), KV = max(q, min(edge, max_seq)), with
//            batch = max(1, prefill_tokens / q) sequences (at most max_batch).
// A spec that several layer types share is tuned once (with the first layer type's heads).
//
// Search (search()). The default tile is measured first: it is the reference every other
// candidate's output is checked against, and the baseline of the speed-up.
//   staged      stage 1 measures one probe per structure (the default's pipeline depth, the
//               highest occupancy target that compiled cleanly, the largest split bound); stage 2
//               takes the kTopStructures fastest structures and walks their variants one axis at
//               a time (stages, then min_ctas_per_sm, then max_splits), keeping the best so far.
//   exhaustive  every kept candidate.
// Winner: the fastest candidate that passed; among those within kTieTolerance of it, the default
// tile, else the smallest max_splits (less workspace), else the first measured.
//
// Rows. Every measured candidate gets its own row (Store::put_candidate: median or
// "failed: <reason>"), written as soon as it is measured; the winner is a separate row written when
// the unit is done. A unit with a winner is skipped on a rerun; a unit with some candidate rows
// resumes and reuses them (nothing measured is measured again).
#pragma once

#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/store.h"
#include "runtime/tuned_tiles.h"
#include "tuner/deployment.h"
#include "tuner/search_space.h"

namespace attnjit::tuner {

inline constexpr int kTopStructures = 3;
inline constexpr double kTieTolerance = 0.005;

enum class SearchMode { staged, exhaustive };
std::string_view to_string(SearchMode m);

struct MatrixOptions {
  std::vector<KernelFamily> phases = {KernelFamily::prefill, KernelFamily::decode};
  int max_batch = 256;
  int max_seq = 32768;
  int prefill_tokens = 16384;
  // Only these bucket names (empty: all of the matrix).
  std::vector<std::string> only_buckets;
};

struct MeasureShape {
  int batch = 1;
  int q_len = 1;
  int kv_len = 1;
};

// One thing to tune: a spec on this device for one shape bucket.
struct TuneUnit {
  std::vector<std::string> layer_types;
  KernelSpec spec;
  RankHeads heads;
  ShapeBucket bucket;
  MeasureShape shape;
  std::string key; // tuning key
  int window = 0;  // sliding window of the layer type (a run-time value), when the spec has one

  int group() const { return heads.num_q_heads / heads.num_kv_heads; }
};

// Units that share a spec share a search space unless their query-row packing differs (decode
// packs the q heads of a KV head into M): the key of a unit's space in run_units' map.
std::string space_key(const TuneUnit& unit);

// The buckets of one phase (in order: rows-major, then KV).
std::vector<std::pair<ShapeBucket, MeasureShape>> bucket_matrix(KernelFamily phase, int group,
                                                                const MatrixOptions& options);
std::vector<TuneUnit> plan_units(const Deployment& deployment, const TuningDevice& device,
                                 const MatrixOptions& options);

// --- measurement ---------------------------------------------------------------------------

struct Measurement {
  bool ok = false;
  double median_us = NAN;
  std::string failure; // "verify: ...", "run: ...", "plan: ..." (without "failed: ")
  double rel_error = 0; // the output check's error against the reference (ok candidates)
  int runs = 0;         // timed runs behind the median
};

class Measurer {
 public:
  virtual ~Measurer() = default;
  // Prepares the unit's inputs and runs `reference` once, keeping its output. Throws
  // std::runtime_error when the unit cannot be measured at all (its message is the reason).
  virtual void begin(const TuneUnit& unit, const TileConfig& reference) = 0;
  // Times `tile` on the unit's inputs and checks its output against the reference's.
  virtual Measurement measure(const TileConfig& tile) = 0;
  virtual void end() {}
  // The device is unusable (a sticky CUDA error): the driver stops after the current candidate.
  virtual bool broken() const { return false; }
};

class CandidateCompiler {
 public:
  virtual ~CandidateCompiler() = default;
  // Compiles (or finds) the binary of (spec, tile, arch). Called from several threads at once.
  virtual CompileFacts compile(const KernelSpec& spec, const TileConfig& tile, std::string_view arch) = 0;
};

// The search space of one spec, compiled and pruned.
struct PreparedSpace {
  KernelSpec spec;
  std::string arch;
  SpaceOptions options;
  TileConfig default_tile;
  std::vector<SpaceEntry> entries;
  std::vector<CompileFacts> facts; // per entry; empty facts for entries pruned before compiling
  double compile_s = 0;

  std::vector<TileConfig> kept() const;
};

// Enumerates, prunes, compiles the survivors on at most `jobs` threads, prunes by the reports.
// `on_compiled` is called once per compiled candidate (never two at a time).
PreparedSpace prepare_space(const KernelSpec& spec, std::string_view arch, const SpaceOptions& options,
                            CandidateCompiler& compiler, int jobs,
                            const std::function<void()>& on_compiled = {});

struct Trial {
  TileConfig tile;
  Measurement m;
  std::string stage; // "reference", "stage 1", "stage 2", "exhaustive"
};

struct SearchResult {
  std::vector<Trial> trials;   // in the order measured (each tile once)
  std::optional<size_t> winner; // index into trials
};

// The search of one unit over `kept` (which must contain `default_tile`). `measure` is called
// once per tile at most. Throws whatever `measure` throws.
SearchResult search(const std::vector<TileConfig>& kept, const TileConfig& default_tile, SearchMode mode,
                    const std::function<Measurement(const TileConfig&)>& measure);

// The winner rule on a list of trials (see the header comment).
std::optional<size_t> pick_winner(const std::vector<Trial>& trials, const TileConfig& default_tile);

// --- the driver ----------------------------------------------------------------------------

enum class UnitStatus { tuned, cached, failed, unfinished, planned };
std::string_view to_string(UnitStatus s);

struct UnitResult {
  TuneUnit unit;
  UnitStatus status = UnitStatus::planned;
  std::string reason;                // failed / unfinished
  TileConfig default_tile;
  double default_us = NAN;           // NaN when not measured
  std::optional<TileConfig> winner;
  double winner_us = NAN;
  int measured = 0;                  // candidates measured in this run
  int reused = 0;                    // candidate rows found in the cache and reused
  int failed_candidates = 0;
  double max_rel_error = 0;          // largest output error among passing candidates
  double seconds = 0;

  double speedup() const { return default_us / winner_us; }
};

struct DriverOptions {
  SearchMode mode = SearchMode::staged;
  double budget_s = 0;                      // 0: no limit; counted from the driver's start
  bool retune = false;                      // search units that have a winner again (reusing rows)
  std::function<bool()> stop_requested;     // polled between candidates (SIGINT)
  std::function<void(const UnitResult&, size_t index, size_t total)> on_unit_done;
  std::function<void(const UnitResult&, const Trial&)> on_candidate;
  std::string tool_version;
};

// Tunes `units` in order with the prepared spaces (by space_key), writing rows to `store`.
// A unit with a winner row is "cached" (and needs no prepared space). Stops starting candidates once the budget is spent, stop
// is requested or the measurer is broken: the unit in progress and the rest are "unfinished".
std::vector<UnitResult> run_units(const std::vector<TuneUnit>& units,
                                  const std::map<std::string, PreparedSpace>& spaces, Measurer& measurer,
                                  cache::Store& store, const TuningDevice& device, const DriverOptions& options);

// The summary of a unit from the cache alone (winner row and the default's candidate row): what
// attn-tune prints at the end, also for units tuned by other processes.
UnitResult summarize_from_cache(const TuneUnit& unit, cache::Store& store, const TileConfig& default_tile);

// Regret of the staged search on one exhaustively measured unit: the staged search replayed on
// the exhaustive measurements.
struct Regret {
  std::string bucket;
  std::string spec;
  TileConfig best;      // exhaustive winner
  double best_us = NAN;
  TileConfig staged;    // what the staged search picks
  double staged_us = NAN;
  int staged_measured = 0;
  int exhaustive_measured = 0;
  double regret() const { return staged_us / best_us - 1.0; }
};
std::optional<Regret> replay_regret(const std::vector<TileConfig>& kept, const TileConfig& default_tile,
                                    const std::vector<Trial>& exhaustive);

} // namespace attnjit::tuner
