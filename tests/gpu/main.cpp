// Entry point of attnjit_gpu_tests.
//
//   attnjit_gpu_tests [gtest flags]     run the suite (every test skips when there is no GPU)
//   attnjit_gpu_tests --probe-device    exit 0 when a usable GPU is present, 77 otherwise
//
// Environment: ATTNJIT_TEST_SEED=<n> replays a failure's inputs; ATTNJIT_TEST_DEVICE=<ordinal>
// picks the GPU; ATTNJIT_TEST_CACHE=<file> makes the shared context use an on-disk kernel cache
// (default: cache disabled, kernels compiled in memory).
#include "gpu_harness.h"

#include <cstring>
#include <iostream>

namespace {

class GpuEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const auto& g = attnjit::testing::gpu_info();
    if (g.available) {
      std::cout << "[ device   ] " << g.name << " (sm_" << g.cc_major << g.cc_minor << ", " << g.sm_count
                << " SMs), attnjit " << (attnjit_version() ? attnjit_version() : "?") << "\n";
    } else {
      std::cout << "[ device   ] none (" << g.reason << "): GPU tests will be skipped\n";
    }
  }
  void TearDown() override { attnjit::testing::release_shared_gpu_state(); }
};

} // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--probe-device") == 0) {
      const auto& g = attnjit::testing::gpu_info();
      std::cout << (g.available ? g.name : "no GPU: " + g.reason) << "\n";
      return g.available ? 0 : 77;
    }
  }
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new GpuEnvironment);
  return RUN_ALL_TESTS();
}
