// attn-cache and attn-tune end to end, run as CI and operators run them: reports, exit codes,
// and what lands in the cache.
#include <sqlite3.h>

#include <filesystem>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cache/store.h"
#include "tool_runner.h"
#include "tuner/tune.h"

namespace attnjit::testing {
namespace {

using ::testing::HasSubstr;
using nlohmann::json;

const std::string kAttnCache = ATTN_CACHE_BIN;
const std::string kAttnTune = ATTN_TUNE_BIN;

// The spec of MiMo-V2.5's global-attention layers (bf16, pages of 16, causal, 192/128).
KernelSpec mimo_spec(KernelFamily family, int head_dim_qk = 192) {
  KernelSpec s;
  s.family = family;
  s.q_dtype = s.kv_dtype = DType::bf16;
  s.head_dim_qk = head_dim_qk;
  s.head_dim_v = 128;
  s.page_size = 16;
  s.causal = true;
  return s;
}
const std::string kMimoPrefill = mimo_spec(KernelFamily::prefill).canonical();
const std::string kMimoDecode = mimo_spec(KernelFamily::decode).canonical();

json parse_json(const ToolRun& r) {
  try {
    return json::parse(r.out);
  } catch (const json::exception& e) {
    ADD_FAILURE() << "not JSON: " << e.what() << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err;
    return json::object();
  }
}

std::set<std::string> keys_with_status(const json& report, std::string_view status) {
  std::set<std::string> keys;
  for (const auto& e : report["entries"])
    if (e["status"] == status) keys.insert(e["key"].get<std::string>());
  return keys;
}

// The operator's and CI's path: precompile MiMo at TP 8 for sm_90a, check the cache, list it, run
// again (everything cached), and let attn-tune find the same kernels.
TEST(AttnCache, PrecompileMimoTp8VerifyListAndRerun) {
  TempDir dir;
  const std::string cache = dir.file("kernels.sqlite");
  const std::vector<std::string> precompile = {"precompile", "--model", "mimo-v2.5", "--tp",  "8",
                                               "--arch",     "sm_90a",  "--cache",   cache, "--json"};

  const ToolRun first = run_tool(dir, kAttnCache, precompile);
  ASSERT_EQ(first.exit_code, 0) << first.err << first.out;
  const json report = parse_json(first);
  EXPECT_EQ(report["model"], "mimo-v2.5");
  EXPECT_EQ(report["tensor_parallel"], 8);
  EXPECT_EQ(report["totals"]["compiled"], 2);
  EXPECT_EQ(report["totals"]["skipped"], 2);
  EXPECT_EQ(report["totals"]["failed"], 0);
  std::set<std::string> specs;
  for (const auto& e : report["entries"]) {
    if (e["status"] == "skipped") {
      EXPECT_EQ(e["layer_types"], json::array({"swa"}));
      EXPECT_EQ(e["reason"], "sliding window and learned sinks are not supported yet");
      continue;
    }
    EXPECT_EQ(e["layer_types"], json::array({"full"}));
    EXPECT_EQ(e["arch"], "sm_90a");
    EXPECT_EQ(e["tile_source"], "default");
    // Null when NVRTC gave no ptxas report (a result reused from the CUDA compute cache).
    if (!e["registers"].is_null()) EXPECT_GT(e["registers"].get<int>(), 0);
    EXPECT_GT(e["compile_ms"].get<double>(), 0);
    specs.insert(e["spec"].get<std::string>());
  }
  EXPECT_EQ(specs, (std::set<std::string>{kMimoPrefill, kMimoDecode}));
  for (const auto& l : report["layer_types"]) {
    EXPECT_EQ(l["rank"]["num_q_heads"], 8);
    EXPECT_EQ(l["rank"]["num_kv_heads"], 1);
  }
  const std::set<std::string> compiled = keys_with_status(report, "compiled");

  const ToolRun verify = run_tool(dir, kAttnCache, {"verify", "--cache", cache});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  EXPECT_THAT(verify.out, HasSubstr("ok (2 binaries intact)"));

  const ToolRun ls = run_tool(dir, kAttnCache, {"ls", "--json", "--cache", cache});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  const json listing = parse_json(ls);
  std::set<std::string> listed;
  for (const auto& b : listing["binaries"]) {
    listed.insert(b["key"].get<std::string>());
    EXPECT_EQ(b["arch"], "sm_90a");
    EXPECT_GT(b["cubin_bytes"].get<int64_t>(), 0);
  }
  EXPECT_EQ(listed, compiled);
  EXPECT_EQ(listing["stats"]["binaries"], 2);

  const ToolRun again = run_tool(dir, kAttnCache, precompile);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  const json rerun = parse_json(again);
  EXPECT_EQ(rerun["totals"]["cached"], 2);
  EXPECT_EQ(rerun["totals"]["compiled"], 0);
  EXPECT_EQ(keys_with_status(rerun, "cached"), compiled);

  // The table says the same for people.
  std::vector<std::string> table_args(precompile.begin(), precompile.end() - 1);
  const ToolRun table = run_tool(dir, kAttnCache, table_args);
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_THAT(table.out, HasSubstr("skipped: sliding window and learned sinks are not supported yet"));
  EXPECT_THAT(table.out, HasSubstr("0 compiled, 2 cached, 0 failed; 2 skipped"));

  // attn-tune targets sm_90a without a GPU, or the GPU's arch; on a machine without one, or with an
  // H100, the kernels are those just compiled.
  const tuner::GpuProbe gpu = tuner::probe_gpu();
  const ToolRun tune = run_tool(dir, kAttnTune, {"--model", "mimo-v2.5", "--tp", "8", "--cache", cache});
  EXPECT_EQ(tune.exit_code, 0) << tune.out << tune.err;
  if (!gpu.found) {
    EXPECT_THAT(tune.out, HasSubstr("no GPU found: precompiling default configs for sm_90a (use attn-cache "
                                    "precompile for other targets)"));
    EXPECT_THAT(tune.out, HasSubstr("0 compiled, 2 cached"));
  } else {
    EXPECT_THAT(tune.out, HasSubstr("tuning is not implemented yet; compiling default configs for " + gpu.arch));
  }
}

TEST(AttnCache, UsageErrorsExitWithTwoAndSayWhy) {
  TempDir dir;
  const std::string cache = dir.file("c.sqlite");
  auto precompile = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"precompile", "--cache", cache};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_tool(dir, kAttnCache, args);
  };
  ToolRun r = precompile({"--model", "mimo-v2.5", "--tp", "3", "--arch", "sm_90a"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("num_q_heads (64) is not divisible by the tensor-parallel size 3"));

  r = precompile({"--model", "no-such-model", "--arch", "sm_90a"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("no-such-model"));

  r = precompile({"--model", "mimo-v2.5", "--arch", "sm_75"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("arch: got 'sm_75'"));

  r = precompile({"--model", "mimo-v2.5", "--arch", "sm_90a", "--dtype", "fp8"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--dtype"));

  r = precompile({"--model", "mimo-v2.5", "--arch", "sm_90a", "--page-size", "24"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("page_size: got 24"));

  r = precompile({"--model", "mimo-v2.5"}); // no --arch
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--arch"));
  EXPECT_FALSE(std::filesystem::exists(cache)) << "a refused command must not create the cache";

  r = run_tool(dir, kAttnCache, {});
  EXPECT_EQ(r.exit_code, 2);

  r = run_tool(dir, kAttnCache, {"emit", "--spec", mimo_spec(KernelFamily::prefill, 100).canonical()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("head_dim_qk: got 100"));

  r = run_tool(dir, kAttnTune, {"--model", "mimo-v2.5", "--tp", "3", "--dry-run"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("num_q_heads"));

  r = run_tool(dir, kAttnCache, {"precompile", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("--model"));
}

TEST(AttnCache, EmitPrintsTheGeneratedSource) {
  TempDir dir;
  const ToolRun r = run_tool(dir, kAttnCache, {"emit", "--spec", kMimoDecode});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("static constexpr int kHeadDimQK = 192, kHeadDimV = 128, kPageSize = 16;"));
  EXPECT_THAT(r.out, HasSubstr("kDecode = true;"));
}

// A cache whose blob does not match its checksum fails verify (exit 1) naming the binary.
TEST(AttnCache, VerifyFailsOnADamagedCache) {
  TempDir dir;
  const std::string cache = dir.file("damaged.sqlite");
  {
    auto store = cache::Store::open(cache);
    cache::BinaryRecord rec;
    rec.key = "00000000deadbeef";
    rec.spec = kMimoPrefill;
    rec.tile = "bm64.bn64.wm4.wn1.st2.sp1";
    rec.arch = "sm_90a";
    rec.codegen_version = "test";
    rec.nvrtc_version = "0.0";
    rec.cubin = std::string(4096, 'c');
    rec.ptx = "// ptx";
    store->put_binary(rec);
  }
  ToolRun r = run_tool(dir, kAttnCache, {"verify", "--cache", cache});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(cache.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE binary_blobs SET cubin = zeroblob(4096)", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);

  r = run_tool(dir, kAttnCache, {"verify", "--cache", cache, "--json"});
  EXPECT_EQ(r.exit_code, 1);
  const json verdict = parse_json(r);
  EXPECT_EQ(verdict["ok"], false);
  EXPECT_THAT(verdict["problems"].dump(), HasSubstr("00000000deadbeef"));

  // Read-only inspection leaves the evidence where it is.
  r = run_tool(dir, kAttnCache, {"ls", "--cache", cache});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("00000000deadbeef"));

  r = run_tool(dir, kAttnCache, {"verify", "--cache", dir.file("missing.sqlite")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("no such cache file"));
  r = run_tool(dir, kAttnCache, {"ls", "--cache", dir.file("missing.sqlite")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_FALSE(std::filesystem::exists(dir.file("missing.sqlite")));
}

TEST(AttnTune, DryRunListsTheKernelsAndWritesNothing) {
  TempDir dir;
  const std::string cache = dir.file("never-written.sqlite");
  const ToolRun r = run_tool(dir, kAttnTune,
                             {"--model", "mimo-v2.5", "--tp", "8", "--arch", "sm_80", "--dry-run", "--json", "--cache", cache});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json report = parse_json(r);
  EXPECT_EQ(report["totals"]["planned"], 2);
  EXPECT_EQ(report["totals"]["skipped"], 2);
  EXPECT_EQ(report["archs"], json::array({"sm_80"}));
  EXPECT_THAT(report["message"].get<std::string>(), HasSubstr("tuning is not implemented yet"));
  EXPECT_THAT(r.err, HasSubstr("tuning is not implemented yet")); // the message, kept off the JSON stream
  EXPECT_FALSE(std::filesystem::exists(cache));
}

} // namespace
} // namespace attnjit::testing
