// What a cubin itself says about a kernel, for when the compiler's log does not: NVRTC can answer
// from the CUDA compute cache with an empty log, and then there is no ptxas report to parse.
#pragma once

#include <optional>
#include <string_view>

#include "codegen/nvrtc_compiler.h"

namespace attnjit {

// Registers (EIATTR_REGCOUNT) and stack frame bytes (EIATTR_FRAME_SIZE) of `entry`, read from the
// cubin's ELF `.nv.info` section; spill_bytes is -1 (the cubin does not record spills: a frame
// larger than zero means local memory is in use). nullopt when the cubin has no such entry.
std::optional<KernelResources> resources_from_cubin(std::string_view cubin, std::string_view entry);

} // namespace attnjit
