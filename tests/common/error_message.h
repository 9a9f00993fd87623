// Checks on the error messages attnjit returns.
#pragma once

#include <string>
#include <vector>

namespace attnjit::testing {

// Whether `message` names one of `fields` as a whole identifier ("q" does not match "seq_lens_q";
// "args.q" and "tile.stages" do match "q" and "stages").
bool names_field(const std::string& message, const std::vector<std::string>& fields);

} // namespace attnjit::testing
