// attnjit_build_block_mask: validation and launch of the block-mask builder.
#pragma once

#include <cuda.h>

#include "attnjit/attnjit.h"
#include "runtime/context.h"

namespace attnjit {

// Validates `args` on the host (errors name the field) and enqueues the builder on `stream`.
void build_block_mask(Context& ctx, const attnjit_block_mask_args& args, CUstream stream);

} // namespace attnjit
