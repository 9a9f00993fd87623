# Writes a C++ source that embeds every models/*.json preset as a string, so the tools find the
# presets from any directory. Invoked as: cmake -DOUT=... -DFILES="a|b" -P embed_models.cmake
string(REPLACE "|" ";" FILES "${FILES}")
list(SORT FILES)
set(body "")
set(table "")
foreach(path IN LISTS FILES)
  get_filename_component(file "${path}" NAME)
  string(REGEX REPLACE "\\.json$" "" name "${file}")
  file(READ "${path}" content)
  if(content MATCHES "\\)attnjit_model\"")
    message(FATAL_ERROR "${path} contains the raw-string delimiter )attnjit_model\"")
  endif()
  string(MAKE_C_IDENTIFIER "model_${name}" id)
  string(APPEND body "constexpr char ${id}[] = R\"attnjit_model(${content})attnjit_model\";\n")
  string(APPEND table "      {\"${name}\", ${id}},\n")
endforeach()
file(WRITE "${OUT}.tmp" "// Generated from models/*.json; do not edit.
#include \"tuner/embedded_models.h\"

namespace attnjit::tuner::detail {
namespace {
${body}} // namespace

const std::vector<EmbeddedModel>& embedded_models() {
  static const std::vector<EmbeddedModel> models = {
${table}  };
  return models;
}
} // namespace attnjit::tuner::detail
")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
