#include "runtime/binary_builder.h"

#include <chrono>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "codegen/emit.h"
#include "codegen/errors.h"
#include "codegen/nvrtc_compiler.h"

namespace attnjit {

std::string_view tool_version() { return ATTNJIT_VERSION; }

const std::string& keyed_nvrtc_version() {
  static const std::string v = [] {
    try {
      return NvrtcCompiler::instance().version();
    } catch (const UnsupportedError&) {
      return std::string(ATTNJIT_BUILD_NVRTC_VERSION);
    }
  }();
  return v;
}

std::string keyed_compile_options(std::string_view arch) {
  return fmt::format("{}", fmt::join(NvrtcCompiler::options(arch), " "));
}

std::string binary_key_for(const KernelSpec& spec, const TileConfig& tile, std::string_view arch) {
  const std::string identity =
      fmt::format("{}\n{}\n{}\n{}\n{}\n{}", codegen_version(), spec.canonical(), tile.canonical(), arch,
                  keyed_nvrtc_version(), keyed_compile_options(arch));
  return stable_hash_hex(identity);
}

namespace {
// Compiles `source` for `arch` into a record stored under `key`.
cache::BinaryRecord compile_record(std::string key, std::string spec, std::string tile, const std::string& source,
                                   std::string_view arch, int shared_bytes) {
  const NvrtcCompiler& nvrtc = NvrtcCompiler::instance();
  CompileResult r = nvrtc.compile(source, arch);
  cache::BinaryRecord rec;
  rec.key = std::move(key);
  rec.spec = std::move(spec);
  rec.tile = std::move(tile);
  rec.arch = std::string(arch);
  rec.codegen_version = codegen_version();
  rec.nvrtc_version = nvrtc.version();
  rec.compile_options = keyed_compile_options(arch);
  rec.cubin = std::move(r.cubin);
  rec.ptx = std::move(r.ptx);
  rec.compile_log = std::move(r.log);
  rec.registers = r.resources.registers;
  rec.shared_bytes = shared_bytes;
  rec.spill_bytes = r.resources.spill_bytes;
  rec.compile_ms = r.compile_ms;
  rec.tool_version = std::string(tool_version());
  rec.created_unix = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
  return rec;
}
} // namespace

cache::BinaryRecord build_binary(const KernelSpec& spec, const TileConfig& tile, std::string_view arch) {
  validate_arch(arch);
  validate(spec, tile, arch);
  return compile_record(binary_key_for(spec, tile, arch), spec.canonical(), tile.canonical(), emit_source(spec, tile),
                        arch, shared_memory_bytes(spec, tile));
}

std::string block_mask_key(DType dtype, std::string_view arch) {
  return stable_hash_hex(fmt::format("{}\nblock_mask;{}\n{}\n{}\n{}", codegen_version(), to_string(dtype), arch,
                                     keyed_nvrtc_version(), keyed_compile_options(arch)));
}

cache::BinaryRecord build_block_mask_binary(DType dtype, std::string_view arch) {
  validate_arch(arch);
  return compile_record(block_mask_key(dtype, arch), fmt::format("block_mask;q={}", to_string(dtype)), "",
                        emit_block_mask_source(dtype), arch, 0);
}

} // namespace attnjit
