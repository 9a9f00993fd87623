#include "tuner/deployment.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "codegen/errors.h"
#include "tuner/embedded_models.h"

namespace attnjit::tuner {

using nlohmann::json;

namespace {

std::string describe(const json& j) {
  std::string text = j.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return fmt::format("{} ({})", text, j.type_name());
}

// Reads the fields of one JSON object; every error names the origin and the field's path.
class ObjectReader {
 public:
  ObjectReader(const json& j, std::string path, std::string_view origin)
      : j_(j), path_(std::move(path)), origin_(origin) {
    if (!j_.is_object())
      throw DeploymentError(fmt::format("{}: {}: expected an object, got {}", origin_,
                                        path_.empty() ? "top level" : path_, describe(j_)));
  }

  [[noreturn]] void fail(std::string_view key, std::string_view why) const {
    throw DeploymentError(fmt::format("{}: {}: {}", origin_, field(key), why));
  }
  std::string field(std::string_view key) const {
    return path_.empty() ? std::string(key) : fmt::format("{}.{}", path_, key);
  }

  const json* find(std::string_view key) {
    known_.emplace(key);
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  const json& need(std::string_view key) {
    const json* v = find(key);
    if (!v) fail(key, "missing (required)");
    return *v;
  }

  std::string text(std::string_view key, bool required) {
    const json* v = required ? &need(key) : find(key);
    if (!v) return {};
    if (!v->is_string() || v->get_ref<const std::string&>().empty())
      fail(key, fmt::format("expected a non-empty string, got {}", describe(*v)));
    return v->get<std::string>();
  }
  std::optional<int> integer(std::string_view key, bool required, int lo, int hi) {
    const json* v = required ? &need(key) : find(key);
    if (!v) return std::nullopt;
    if (!v->is_number_integer() || v->get<int64_t>() < lo || v->get<int64_t>() > hi)
      fail(key, fmt::format("expected an integer in [{}, {}], got {}", lo, hi, describe(*v)));
    return static_cast<int>(v->get<int64_t>());
  }
  std::optional<bool> boolean(std::string_view key, bool required) {
    const json* v = required ? &need(key) : find(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) fail(key, fmt::format("expected true or false, got {}", describe(*v)));
    return v->get<bool>();
  }

  // Every field present must have been read: an unknown one is most likely a misspelling.
  void reject_unknown() const {
    for (const auto& [key, value] : j_.items()) {
      if (known_.contains(key)) continue;
      std::string allowed;
      for (const auto& k : known_) allowed += (allowed.empty() ? "" : ", ") + k;
      fail(key, fmt::format("unknown field (allowed: {})", allowed));
    }
  }

 private:
  const json& j_;
  std::string path_;
  std::string_view origin_;
  std::set<std::string, std::less<>> known_;
};

constexpr int kMaxHeads = 65535;
constexpr int kMaxDim = 4096; // a sanity bound; the kernel contract is checked by plan_deployment

LayerType parse_layer(const json& j, std::string path, std::string_view origin) {
  ObjectReader r(j, std::move(path), origin);
  LayerType l;
  l.name = r.text("name", true);
  l.num_q_heads = *r.integer("num_q_heads", true, 1, kMaxHeads);
  l.num_kv_heads = *r.integer("num_kv_heads", true, 1, kMaxHeads);
  l.head_dim_qk = *r.integer("head_dim_qk", true, 1, kMaxDim);
  l.head_dim_v = *r.integer("head_dim_v", true, 1, kMaxDim);
  l.causal = *r.boolean("causal", true);
  l.sliding_window = r.integer("sliding_window", false, 1, std::numeric_limits<int>::max()).value_or(0);
  l.learned_sinks = r.boolean("learned_sinks", false).value_or(false);
  l.num_layers = r.integer("num_layers", false, 1, 100000);
  r.reject_unknown();
  if (l.num_q_heads % l.num_kv_heads != 0)
    r.fail("num_kv_heads", fmt::format("{} does not divide num_q_heads ({}): each kv head serves a whole "
                                       "group of q heads", l.num_kv_heads, l.num_q_heads));
  return l;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DeploymentError(fmt::format("{}: cannot be read", path));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

} // namespace

std::vector<std::string> builtin_presets() {
  std::vector<std::string> names;
  for (const auto& m : detail::embedded_models()) names.emplace_back(m.name);
  return names;
}

ModelPreset parse_preset(std::string_view json_text, std::string_view origin) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::parse_error& e) {
    throw DeploymentError(fmt::format("{}: not valid JSON: {}", origin, e.what()));
  }
  ObjectReader r(j, "", origin);
  ModelPreset m;
  m.origin = std::string(origin);
  m.name = r.text("name", true);
  m.description = r.text("description", false);
  const json& layers = r.need("layer_types");
  if (!layers.is_array() || layers.empty())
    r.fail("layer_types", fmt::format("expected a non-empty array of layer types, got {}", describe(layers)));
  r.reject_unknown();
  for (size_t i = 0; i < layers.size(); ++i) {
    LayerType l = parse_layer(layers[i], fmt::format("layer_types[{}]", i), origin);
    for (const auto& other : m.layer_types)
      if (other.name == l.name)
        throw DeploymentError(fmt::format("{}: layer_types[{}].name: '{}' is used by another layer type",
                                          origin, i, l.name));
    m.layer_types.push_back(std::move(l));
  }
  return m;
}

ModelPreset load_preset(std::string_view name_or_path) {
  const bool is_path = name_or_path.find('/') != std::string_view::npos || name_or_path.ends_with(".json");
  if (!is_path) {
    for (const auto& m : detail::embedded_models())
      if (m.name == name_or_path) return parse_preset(m.json, fmt::format("built-in preset '{}'", m.name));
    throw DeploymentError(fmt::format("model '{}': no such built-in preset (available: {}); pass a path to "
                                      "a JSON file for another model",
                                      name_or_path, fmt::join(builtin_presets(), ", ")));
  }
  const std::string path(name_or_path);
  return parse_preset(read_file(path), path);
}

RankHeads shard_heads(int num_q_heads, int num_kv_heads, int tp) {
  if (tp < 1)
    throw DeploymentError(fmt::format("tensor_parallel: got {}; allowed: a positive integer", tp));
  if (num_q_heads % tp != 0)
    throw DeploymentError(fmt::format("num_q_heads ({}) is not divisible by the tensor-parallel size {}: "
                                      "every rank must hold the same number of q heads",
                                      num_q_heads, tp));
  RankHeads h;
  h.num_q_heads = num_q_heads / tp;
  if (num_kv_heads >= tp) {
    if (num_kv_heads % tp != 0)
      throw DeploymentError(fmt::format("num_kv_heads ({}) is not divisible by the tensor-parallel size {}: "
                                        "with at least as many kv heads as ranks, every rank must hold "
                                        "the same number of kv heads",
                                        num_kv_heads, tp));
    h.num_kv_heads = num_kv_heads / tp;
  } else {
    if (tp % num_kv_heads != 0)
      throw DeploymentError(fmt::format("num_kv_heads ({}) does not divide the tensor-parallel size {}: "
                                        "with fewer kv heads than ranks, each kv head is replicated on "
                                        "the same number of ranks",
                                        num_kv_heads, tp));
    h.num_kv_heads = 1;
    h.kv_replicated = true;
  }
  return h;
}

DType parse_dtype(std::string_view name) {
  if (name == "bf16") return DType::bf16;
  if (name == "f16") return DType::f16;
  throw DeploymentError(fmt::format("dtype: got '{}'; allowed: bf16 or f16", name));
}

DType parse_kv_dtype(std::string_view name) {
  if (name == "e4m3") return DType::fp8_e4m3;
  if (name == "e5m2") return DType::fp8_e5m2;
  if (name == "bf16") return DType::bf16;
  if (name == "f16") return DType::f16;
  throw DeploymentError(fmt::format("kv_dtype: got '{}'; allowed: bf16, f16, e4m3 or e5m2", name));
}

Deployment plan_deployment(const ModelPreset& model, const DeploymentOptions& options) {
  Deployment d{model, options, {}};
  for (const LayerType& l : model.layer_types) {
    RankHeads heads;
    try {
      heads = shard_heads(l.num_q_heads, l.num_kv_heads, options.tensor_parallel);
    } catch (const DeploymentError& e) {
      throw DeploymentError(fmt::format("{}: layer type '{}': {}", model.origin, l.name, e.what()));
    }
    for (KernelFamily phase : {KernelFamily::prefill, KernelFamily::decode}) {
      KernelNeed need{l.name, phase, heads, std::nullopt, {}, l.sliding_window};
      KernelSpec s;
      s.family = phase;
      s.q_dtype = options.dtype;
      s.kv_dtype = options.kv_dtype.value_or(options.dtype);
      s.head_dim_qk = l.head_dim_qk;
      s.head_dim_v = l.head_dim_v;
      s.kv_storage = KvStorage::paged;
      s.page_size = options.page_size;
      s.causal = l.causal;
      s.sliding_window = l.sliding_window > 0;
      s.learned_sinks = l.learned_sinks;
      try {
        validate(s);
        need.spec = s;
      } catch (const SpecError& e) {
        // A pattern the kernels refuse is skipped with the reason (never served as dense
        // attention); a geometry outside the contract is the preset's error.
        KernelSpec dense = s;
        dense.sliding_window = dense.learned_sinks = false;
        try {
          validate(dense);
        } catch (const SpecError&) {
          throw DeploymentError(fmt::format("{}: layer type '{}': {}", model.origin, l.name, e.what()));
        }
        need.skip_reason = fmt::format("not supported by the kernels: {}", e.what());
      }
      d.needs.push_back(std::move(need));
    }
  }
  return d;
}

} // namespace attnjit::tuner
