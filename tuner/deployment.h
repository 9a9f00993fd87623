// Deployments: the attention geometry of a model (a preset from models/), sharded over
// tensor-parallel ranks, and the kernel specs that serving it needs.
//
// A preset is data: one JSON object per model with a list of layer types, each the geometry that
// a group of the model's attention layers shares (head counts, head dims, masks). Presets are
// embedded into the library at build time and found by name; a path to a JSON file works too.
//
//   {
//     "name": "llama-3.1-8b",
//     "description": "...",                      optional
//     "layer_types": [
//       { "name": "full",
//         "num_q_heads": 32, "num_kv_heads": 8,   before sharding
//         "head_dim_qk": 128, "head_dim_v": 128,
//         "causal": true,
//         "sliding_window": 128,                  optional: keys visible to a row
//         "learned_sinks": true,                  optional: one sink logit per q head
//         "num_layers": 32 }                      optional: when the published config says
//     ]
//   }
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "codegen/kernel_spec.h"

namespace attnjit::tuner {

// A preset that cannot be read, or a deployment that cannot be made; what() names the file, the
// field and why.
struct DeploymentError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// The geometry shared by a group of a model's attention layers, before sharding.
struct LayerType {
  std::string name;
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim_qk = 0;
  int head_dim_v = 0;
  bool causal = true;
  int sliding_window = 0; // 0: every earlier key is visible
  bool learned_sinks = false;
  std::optional<int> num_layers;
};

struct ModelPreset {
  std::string name;
  std::string description;
  std::vector<LayerType> layer_types; // in the order of the file
  std::string origin;                 // "built-in preset 'NAME'" or the file's path
};

// Names of the presets built into the library (models/*.json), sorted.
std::vector<std::string> builtin_presets();

// A built-in preset by name, or the JSON file at a path (anything containing '/' or ending in
// ".json"). Throws DeploymentError.
ModelPreset load_preset(std::string_view name_or_path);

// Parses and checks the JSON text of a preset. `origin` starts every error message. Unknown
// fields are errors (a misspelt "sliding_window" must not silently mean dense attention).
ModelPreset parse_preset(std::string_view json_text, std::string_view origin);

// The heads one tensor-parallel rank holds, sharded as vLLM shards them: q heads split evenly
// (tensor_parallel must divide them); kv heads split evenly when there are at least as many as
// ranks (tensor_parallel must divide them), else each rank holds one kv head, replicated on
// tensor_parallel / num_kv_heads ranks (which must be a whole number). Throws DeploymentError
// naming the head count that does not divide.
struct RankHeads {
  int num_q_heads = 0;
  int num_kv_heads = 0;
  bool kv_replicated = false;
};
RankHeads shard_heads(int num_q_heads, int num_kv_heads, int tensor_parallel);

struct DeploymentOptions {
  int tensor_parallel = 1;
  DType dtype = DType::bf16;       // q and o (and the KV cache unless kv_dtype says otherwise)
  std::optional<DType> kv_dtype = std::nullopt; // the KV cache; empty: dtype
  int page_size = 16;
};

// "bf16" or "f16"; throws DeploymentError naming the allowed values.
DType parse_dtype(std::string_view name);
// The KV cache's dtype: "bf16", "f16", or an fp8 format ("e4m3", "e5m2": precompiled, not tuned
// yet). Throws DeploymentError naming the allowed values.
DType parse_kv_dtype(std::string_view name);

// What one layer type needs for one phase: a kernel spec, or the reason it cannot have one yet.
struct KernelNeed {
  std::string layer_type;
  KernelFamily phase = KernelFamily::prefill;
  RankHeads heads;
  std::optional<KernelSpec> spec; // empty when skipped
  std::string skip_reason;        // set when skipped
  int sliding_window = 0;         // the layer's window (a run-time value of the kernel); 0: none

  bool skipped() const { return !spec.has_value(); }
};

struct Deployment {
  ModelPreset model;
  DeploymentOptions options;
  std::vector<KernelNeed> needs; // per layer type in preset order: prefill, then decode
};

// Shards every layer type and derives its kernel specs (sliding window and learned sinks become
// spec flags; the window size is a run-time value the need carries). A layer type whose pattern
// the kernels refuse is kept, as skipped with the reason, never compiled as dense attention.
// Throws DeploymentError (sharding, or a geometry outside the kernel contract).
Deployment plan_deployment(const ModelPreset& model, const DeploymentOptions& options);

} // namespace attnjit::tuner
