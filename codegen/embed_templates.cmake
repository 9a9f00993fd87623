# Writes a C++ source that embeds every template header as a string, so the library never reads
# the source tree at run time. Invoked as: cmake -DOUT=... -DFILES="a|b" -P embed_templates.cmake
string(REPLACE "|" ";" FILES "${FILES}")
set(body "")
set(table "")
foreach(path IN LISTS FILES)
  get_filename_component(name "${path}" NAME)
  file(READ "${path}" content)
  string(MAKE_C_IDENTIFIER "${name}" id)
  string(APPEND body "static const char ${id}[] = R\"attnjit_embed(${content})attnjit_embed\";\n")
  string(APPEND table "    {\"${name}\", ${id}},\n")
endforeach()
file(WRITE "${OUT}.tmp" "// Generated from templates/*.cuh; do not edit.\n#include \"codegen/embedded_templates.h\"\n\nnamespace attnjit::detail {\n${body}\nconst std::vector<EmbeddedFile>& embedded_templates() {\n  static const std::vector<EmbeddedFile> files = {\n${table}  };\n  return files;\n}\n} // namespace attnjit::detail\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
