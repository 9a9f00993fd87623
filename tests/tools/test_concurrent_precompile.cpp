// Eight attn-cache precompile processes (as eight tensor-parallel ranks would start them) writing
// into one cache file at once: all succeed, and every expected binary is there, intact.
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cache/store.h"
#include "runtime/binary_builder.h"
#include "tool_runner.h"
#include "tuner/deployment.h"

namespace attnjit::testing {
namespace {

using nlohmann::json;

// Two layer types that share their kernels (so each kernel serves both): two specs, compiled for
// two archs, make four binaries.
constexpr std::string_view kPreset = R"({
  "name": "concurrency-test",
  "layer_types": [
    {"name": "a", "num_q_heads": 8, "num_kv_heads": 2, "head_dim_qk": 64, "head_dim_v": 64, "causal": true},
    {"name": "b", "num_q_heads": 16, "num_kv_heads": 4, "head_dim_qk": 64, "head_dim_v": 64, "causal": true}
  ]
})";

TEST(ConcurrentPrecompile, EightProcessesIntoOneCache) {
  constexpr int kProcesses = 8;
  TempDir dir;
  const std::string preset = dir.file("preset.json");
  write_text(preset, std::string(kPreset));
  const std::string cache = dir.file("shared.sqlite");

  std::vector<ToolProcess> procs;
  procs.reserve(kProcesses);
  for (int i = 0; i < kProcesses; ++i)
    procs.emplace_back(ATTN_CACHE_BIN,
                       std::vector<std::string>{"precompile", "--model", preset, "--tp", "2", "--arch",
                                                "sm_80,sm_90a", "--cache", cache, "--json"},
                       dir.file("out" + std::to_string(i)), dir.file("err" + std::to_string(i)),
                       std::vector<std::string>{"ATTNJIT_MAX_PARALLEL_COMPILES=1"});

  int compiled = 0;
  for (int i = 0; i < kProcesses; ++i) {
    const ToolRun r = procs[i].wait();
    ASSERT_EQ(r.exit_code, 0) << "process " << i << ":\n" << r.err << r.out;
    const json report = json::parse(r.out);
    EXPECT_EQ(report["threads"], 1);
    EXPECT_EQ(report["totals"]["failed"], 0) << r.out;
    EXPECT_EQ(report["totals"]["skipped"], 0);
    EXPECT_EQ(report["totals"]["compiled"].get<int>() + report["totals"]["cached"].get<int>(), 4) << r.out;
    compiled += report["totals"]["compiled"].get<int>();
    for (const auto& e : report["entries"]) {
      if (e["status"] != "skipped") {
        EXPECT_EQ(e["layer_types"], json::array({"a", "b"}));
      }
    }
  }
  EXPECT_GE(compiled, 4);

  // Every key a rank computes for this deployment is present, and its blobs match their checksums.
  const tuner::Deployment d = tuner::plan_deployment(tuner::load_preset(preset), {.tensor_parallel = 2});
  std::set<std::string> expected;
  for (const auto& need : d.needs)
    if (!need.skipped())
      for (const char* arch : {"sm_80", "sm_90a"}) expected.insert(binary_key_for(*need.spec, default_tile(*need.spec, arch), arch));
  ASSERT_EQ(expected.size(), 4u);

  cache::OpenOptions ro;
  ro.read_only = true;
  auto store = cache::Store::open(cache, ro);
  for (const auto& key : expected) {
    const auto rec = store->get_binary(key);
    ASSERT_TRUE(rec.has_value()) << key;
    EXPECT_FALSE(rec->cubin.empty());
    EXPECT_EQ(cache::checksum_hex(rec->cubin), rec->cubin_xxh3);
  }
  EXPECT_EQ(store->list_binaries().size(), expected.size());
  EXPECT_THAT(store->integrity_check(), ::testing::IsEmpty());

  TempDir scratch;
  const ToolRun verify = run_tool(scratch, ATTN_CACHE_BIN, {"verify", "--cache", cache});
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
}

} // namespace
} // namespace attnjit::testing
