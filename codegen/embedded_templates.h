// The kernel template headers, embedded into the library at build time.
#pragma once

#include <string_view>
#include <vector>

namespace attnjit::detail {

struct EmbeddedFile {
  std::string_view name;    // include name, e.g. "attention_kernel.cuh"
  std::string_view content;
};

const std::vector<EmbeddedFile>& embedded_templates();

} // namespace attnjit::detail
