// Spec + tile + arch -> a cache record with its cubin. Needs NVRTC, never a GPU: the runtime
// uses it on a cache miss and `attn-cache precompile` uses it in CI.
#pragma once

#include <string>
#include <string_view>

#include "cache/store.h"
#include "codegen/kernel_spec.h"

namespace attnjit {

// The NVRTC version that keys binaries: the loadable libnvrtc's, else the toolkit this library
// was built with (so a deployment without NVRTC finds what CI precompiled with the same build).
const std::string& keyed_nvrtc_version();

// The options string that keys binaries for `arch`.
std::string keyed_compile_options(std::string_view arch);

// The key under which (spec, tile, arch) is stored.
std::string binary_key_for(const KernelSpec& spec, const TileConfig& tile, std::string_view arch);

// Emits and compiles; throws CompileError / UnsupportedError / SpecError.
cache::BinaryRecord build_binary(const KernelSpec& spec, const TileConfig& tile, std::string_view arch);

// The block-mask builder for `dtype`: its key and its compiled record.
std::string block_mask_key(DType dtype, std::string_view arch);
cache::BinaryRecord build_block_mask_binary(DType dtype, std::string_view arch);

// Version string of this library ("0.1.0"), recorded in every row it writes.
std::string_view tool_version();

} // namespace attnjit
