// The model presets of models/*.json, embedded into the library at build time.
#pragma once

#include <string_view>
#include <vector>

namespace attnjit::tuner::detail {

struct EmbeddedModel {
  std::string_view name; // file name without ".json", e.g. "mimo-v2.5"
  std::string_view json;
};

// Sorted by name.
const std::vector<EmbeddedModel>& embedded_models();

} // namespace attnjit::tuner::detail
