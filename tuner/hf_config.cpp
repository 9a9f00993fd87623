#include "tuner/hf_config.h"

#include <fstream>
#include <map>
#include <sstream>
#include <tuple>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace attnjit::tuner {

using nlohmann::json;

namespace {

class ConfigReader {
 public:
  ConfigReader(const json& j, std::string prefix, std::string_view origin)
      : j_(j), prefix_(std::move(prefix)), origin_(origin) {}

  [[noreturn]] void fail(std::string_view key, std::string_view why) const {
    throw DeploymentError(fmt::format("{}: {}{}: {}", origin_, prefix_, key, why));
  }
  bool has(std::string_view key) const {
    auto it = j_.find(key);
    return it != j_.end() && !it->is_null();
  }
  const json& get(std::string_view key) const { return *j_.find(key); }

  int positive(std::string_view key) const {
    if (!has(key)) fail(key, "missing (required)");
    return positive_value(key, get(key));
  }
  int positive_or(std::string_view key, int fallback) const { return has(key) ? positive_value(key, get(key)) : fallback; }
  bool flag_or(std::string_view key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!get(key).is_boolean()) fail(key, fmt::format("expected true or false, got {}", get(key).dump()));
    return get(key).get<bool>();
  }
  std::string text_or(std::string_view key, std::string fallback) const {
    if (!has(key)) return fallback;
    if (!get(key).is_string()) fail(key, fmt::format("expected a string, got {}", get(key).dump()));
    return get(key).get<std::string>();
  }
  const std::string& prefix() const { return prefix_; }

 private:
  int positive_value(std::string_view key, const json& v) const {
    if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > (int64_t{1} << 30))
      fail(key, fmt::format("expected a positive integer, got {}", v.dump()));
    return static_cast<int>(v.get<int64_t>());
  }
  const json& j_;
  std::string prefix_;
  std::string_view origin_;
};

struct Geometry {
  int q = 0, kv = 0, dqk = 0, dv = 0, window = 0;
  bool sinks = false;
  auto tie() const { return std::tie(q, kv, dqk, dv, window, sinks); }
  bool operator<(const Geometry& o) const { return tie() < o.tie(); }
};

} // namespace

ModelPreset preset_from_hf_config(std::string_view text, std::string_view origin) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    throw DeploymentError(fmt::format("{}: not valid JSON: {}", origin, e.what()));
  }
  if (!root.is_object()) throw DeploymentError(fmt::format("{}: expected a JSON object (a config.json)", origin));
  const json* cfg = &root;
  std::string prefix;
  if (!root.contains("num_attention_heads") && root.contains("text_config") && root["text_config"].is_object()) {
    cfg = &root["text_config"];
    prefix = "text_config.";
  }
  const ConfigReader r(*cfg, prefix, origin);
  const std::string model_type = r.text_or("model_type", ConfigReader(root, "", origin).text_or("model_type", ""));

  const int layers = r.positive("num_hidden_layers");
  Geometry full;
  full.q = r.positive("num_attention_heads");
  if (!r.has("num_key_value_heads"))
    r.fail("num_key_value_heads", "missing (required: the number of K/V heads; a model without grouped-query "
                                  "attention has as many as num_attention_heads)");
  full.kv = r.positive("num_key_value_heads");
  if (r.has("head_dim")) {
    full.dqk = r.positive("head_dim");
  } else {
    if (!r.has("hidden_size"))
      r.fail("head_dim", "missing, and so is hidden_size (head_dim defaults to hidden_size / num_attention_heads)");
    const int hidden = r.positive("hidden_size");
    if (hidden % full.q != 0)
      r.fail("head_dim", fmt::format("missing, and hidden_size ({}) is not a multiple of num_attention_heads ({})",
                                     hidden, full.q));
    full.dqk = hidden / full.q;
  }
  full.dv = r.positive_or("v_head_dim", full.dqk);
  const bool gpt_oss = model_type == "gpt_oss";
  full.sinks = gpt_oss || r.flag_or("add_full_attention_sink_bias", false);

  auto window_from = [&](std::initializer_list<std::string_view> keys) {
    for (std::string_view k : keys)
      if (r.has(k)) return r.positive(k);
    std::string others;
    for (std::string_view k : keys)
      if (k != *keys.begin()) others += fmt::format(" or {}", k);
    r.fail(*keys.begin(), fmt::format("missing{} (required: the model has sliding-window layers)", others.empty() ? "" : ", and so is" + others));
  };

  std::vector<Geometry> per_layer(layers, full);
  if (r.has("hybrid_layer_pattern")) {
    const json& p = r.get("hybrid_layer_pattern");
    if (!p.is_array()) r.fail("hybrid_layer_pattern", fmt::format("expected an array of 0 and 1, got {}", p.dump().substr(0, 40)));
    if (static_cast<int>(p.size()) != layers)
      r.fail("hybrid_layer_pattern", fmt::format("has {} entries; num_hidden_layers is {}", p.size(), layers));
    Geometry swa;
    swa.q = r.positive_or("swa_num_attention_heads", full.q);
    swa.kv = r.positive_or("swa_num_key_value_heads", full.kv);
    swa.dqk = r.positive_or("swa_head_dim", full.dqk);
    swa.dv = r.positive_or("swa_v_head_dim", r.has("swa_head_dim") ? swa.dqk : full.dv);
    swa.sinks = r.flag_or("add_swa_attention_sink_bias", false);
    bool any_swa = false;
    for (size_t i = 0; i < p.size(); ++i) {
      if (!p[i].is_number_integer() || (p[i] != 0 && p[i] != 1))
        r.fail(fmt::format("hybrid_layer_pattern[{}]", i), fmt::format("expected 0 (full) or 1 (sliding window), got {}", p[i].dump()));
      if (p[i] == 1) per_layer[i] = swa, any_swa = true;
    }
    if (any_swa) {
      const int w = window_from({"sliding_window_size", "sliding_window"});
      for (size_t i = 0; i < p.size(); ++i)
        if (p[i] == 1) per_layer[i].window = w;
    }
  } else if (r.has("layer_types")) {
    const json& t = r.get("layer_types");
    if (!t.is_array()) r.fail("layer_types", "expected an array of layer type names");
    if (static_cast<int>(t.size()) != layers)
      r.fail("layer_types", fmt::format("has {} entries; num_hidden_layers is {}", t.size(), layers));
    int window = 0;
    for (size_t i = 0; i < t.size(); ++i) {
      const std::string field = fmt::format("layer_types[{}]", i);
      if (!t[i].is_string()) r.fail(field, fmt::format("expected a string, got {}", t[i].dump()));
      const std::string name = t[i].get<std::string>();
      if (name == "full_attention") continue;
      if (name != "sliding_attention")
        r.fail(field, fmt::format("'{}' is not an attention layer attnjit serves (allowed: full_attention, "
                                  "sliding_attention)", name));
      if (window == 0) window = window_from({"sliding_window"});
      per_layer[i].window = window;
    }
  } else if (r.has("sliding_window") && r.flag_or("use_sliding_window", true)) {
    const int w = r.positive("sliding_window");
    for (Geometry& g : per_layer) g.window = w;
  }

  // Group equal geometries, in order of first appearance.
  std::vector<std::pair<Geometry, int>> groups;
  for (const Geometry& g : per_layer) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& x) { return !(x.first < g) && !(g < x.first); });
    if (it == groups.end()) groups.emplace_back(g, 1);
    else ++it->second;
  }
  ModelPreset m;
  m.origin = std::string(origin);
  m.name = ConfigReader(root, "", origin).text_or("_name_or_path", model_type.empty() ? "hf-config" : model_type);
  m.description = fmt::format("read from {}", origin);
  std::map<std::string, int> used;
  for (const auto& [g, count] : groups) {
    if (g.q % g.kv != 0)
      throw DeploymentError(fmt::format("{}: {}{}: {} does not divide the {} q heads", origin, prefix,
                                        g.window ? "swa_num_key_value_heads" : "num_key_value_heads", g.kv, g.q));
    LayerType l;
    std::string base = g.window ? "swa" : "full";
    const int n = ++used[base];
    l.name = n == 1 ? base : fmt::format("{}{}", base, n);
    l.num_q_heads = g.q;
    l.num_kv_heads = g.kv;
    l.head_dim_qk = g.dqk;
    l.head_dim_v = g.dv;
    l.causal = true;
    l.sliding_window = g.window;
    l.learned_sinks = g.sinks;
    l.num_layers = count;
    m.layer_types.push_back(l);
  }
  return m;
}

ModelPreset load_hf_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DeploymentError(fmt::format("{}: cannot be read", path));
  std::ostringstream s;
  s << in.rdbuf();
  return preset_from_hf_config(s.str(), path);
}

} // namespace attnjit::tuner
