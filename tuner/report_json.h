// Internal: the JSON form of a precompile report, for the reports that extend it.
#pragma once

#include <nlohmann/json.hpp>

#include "tuner/precompile.h"

namespace attnjit::tuner::detail {

nlohmann::json report_to_json(const PrecompileReport& report);

} // namespace attnjit::tuner::detail
