// What the command lines share: exit codes, and the mapping of library errors onto them.
#pragma once

#include <exception>
#include <string_view>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "codegen/errors.h"
#include "tuner/deployment.h"

namespace attnjit::tools {

enum ExitCode : int {
  kOk = 0,
  kFailure = 1, // the work failed: a compile, the cache, a damaged file
  kUsage = 2,   // bad arguments: an unknown model, a bad arch, a tensor-parallel size that does not divide
};

// Parses the command line, then runs `body` (which returns an exit code). Exceptions from the
// library become one message on stderr and an exit code.
template <class Body>
int run(CLI::App& app, int argc, char** argv, Body&& body) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kOk : kUsage; // --help exits 0
  }
  const std::string name = app.get_name();
  try {
    return body();
  } catch (const tuner::DeploymentError& e) {
    fmt::print(stderr, "{}: error: {}\n", name, e.what());
    return kUsage;
  } catch (const SpecError& e) {
    fmt::print(stderr, "{}: error: {}\n", name, e.what());
    return kUsage;
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: error: {}\n", name, e.what());
    return kFailure;
  }
}

} // namespace attnjit::tools
