// Source emission: a KernelSpec and a TileConfig become one CUDA translation unit that
// instantiates the templates/ kernels with exactly those compile-time choices.
#pragma once

#include <string>
#include <string_view>

#include "codegen/kernel_spec.h"

namespace attnjit {

inline constexpr std::string_view kAttentionEntry = "attnjit_attention";
inline constexpr std::string_view kReduceEntry = "attnjit_split_kv_reduce";
inline constexpr int kReduceThreads = 128;

inline constexpr std::string_view kBlockMaskEntry = "attnjit_block_mask";

// The generated translation unit. Includes only the embedded templates.
std::string emit_source(const KernelSpec& spec, const TileConfig& tile);

// The block-mask builder for q/k of `dtype` (f16 or bf16); head dim and sizes are runtime values.
std::string emit_block_mask_source(DType dtype);

// Hash of the emitter and of every template source: part of every binary key, so a change to
// either makes old cache entries misses rather than stale hits.
const std::string& codegen_version();

} // namespace attnjit
