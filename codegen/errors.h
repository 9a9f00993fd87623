// Exception types of the library. The C ABI turns each into a status code and a message.
#pragma once

#include <stdexcept>
#include <string>

namespace attnjit {

// A request outside the contract: the message names the field and what is allowed.
struct SpecError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// NVRTC refused the source; what() carries the compiler log.
struct CompileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Valid, but not possible here (no NVRTC, no GPU, arch too old).
struct UnsupportedError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

} // namespace attnjit
