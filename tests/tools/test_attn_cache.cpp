// attn-cache and attn-tune end to end, run as CI and operators run them: reports, exit codes,
// and what lands in the cache.
#include <sqlite3.h>

#include <cmath>
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
// ... and of its sliding-window layers (window 128 at run time, a learned sink per q head).
KernelSpec mimo_swa_spec(KernelFamily family) {
  KernelSpec s = mimo_spec(family);
  s.sliding_window = true;
  s.learned_sinks = true;
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
// again (everything cached); attn-tune without a GPU says so and points here.
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
  EXPECT_EQ(report["totals"]["compiled"], 4);
  EXPECT_EQ(report["totals"]["skipped"], 0);
  EXPECT_EQ(report["totals"]["failed"], 0);
  std::set<std::string> specs;
  for (const auto& e : report["entries"]) {
    ASSERT_NE(e["status"], "skipped") << e.dump();
    const bool swa = e["spec"].get<std::string>().find(";win=1;") != std::string::npos;
    EXPECT_EQ(e["layer_types"], json::array({swa ? "swa" : "full"}));
    EXPECT_EQ(e["arch"], "sm_90a");
    EXPECT_EQ(e["tile_source"], "default");
    // Null when NVRTC gave no ptxas report (a result reused from the CUDA compute cache).
    if (!e["registers"].is_null()) {
      EXPECT_GT(e["registers"].get<int>(), 0);
    }
    EXPECT_GT(e["compile_ms"].get<double>(), 0);
    specs.insert(e["spec"].get<std::string>());
  }
  EXPECT_EQ(specs, (std::set<std::string>{kMimoPrefill, kMimoDecode, mimo_swa_spec(KernelFamily::prefill).canonical(),
                                          mimo_swa_spec(KernelFamily::decode).canonical()}));
  for (const auto& l : report["layer_types"]) {
    EXPECT_EQ(l["rank"]["num_q_heads"], 8);
    EXPECT_EQ(l["rank"]["num_kv_heads"], 1);
  }
  const std::set<std::string> compiled = keys_with_status(report, "compiled");

  const ToolRun verify = run_tool(dir, kAttnCache, {"verify", "--cache", cache});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  EXPECT_THAT(verify.out, HasSubstr("ok (4 binaries intact"));
  const tuner::GpuProbe gpu = tuner::probe_gpu();
  if (!gpu.found) {
    EXPECT_THAT(verify.out, HasSubstr("loadability not checked"));
  }

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
  EXPECT_EQ(listing["stats"]["binaries"], 4);

  const ToolRun again = run_tool(dir, kAttnCache, precompile);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  const json rerun = parse_json(again);
  EXPECT_EQ(rerun["totals"]["cached"], 4);
  EXPECT_EQ(rerun["totals"]["compiled"], 0);
  EXPECT_EQ(keys_with_status(rerun, "cached"), compiled);

  // The table says the same for people.
  std::vector<std::string> table_args(precompile.begin(), precompile.end() - 1);
  const ToolRun table = run_tool(dir, kAttnCache, table_args);
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_THAT(table.out, HasSubstr("0 compiled, 4 cached, 0 failed; 0 skipped"));

  // attn-tune measures on a GPU; without one it says so, tunes nothing, and points to precompile.
  if (!gpu.found) {
    const ToolRun tune = run_tool(dir, kAttnTune, {"--model", "mimo-v2.5", "--tp", "8", "--cache", cache});
    EXPECT_EQ(tune.exit_code, 1) << tune.out << tune.err;
    EXPECT_THAT(tune.err, HasSubstr("no GPU found"));
    EXPECT_THAT(tune.err, HasSubstr("attn-cache precompile --model mimo-v2.5 --tp 8 --arch sm_90a"));
    EXPECT_EQ(tune.out, "");
  }
}

// Precompile compiles the tuned winners the cache holds for a spec and arch, beside the defaults.
TEST(AttnCache, PrecompileIncludesTunedWinners) {
  TempDir dir;
  const std::string cache = dir.file("tuned.sqlite");
  const std::string tuned_tile = "bm16.bn128.wm1.wn8.st2.sp128.oc1";
  {
    auto store = cache::Store::open(cache);
    cache::WinnerRecord w;
    w.tuning_key = "0123456789abcdef";
    w.tile = tuned_tile;
    w.spec = kMimoDecode;
    w.median_us = 12.5;
    w.device_name = "NVIDIA H100 80GB HBM3";
    w.arch = "sm_90a";
    w.sm_count = 132;
    w.bucket = "decode:r8:b16:kv4096";
    store->put_winner(w);
    w.tuning_key = "fedcba9876543210";
    w.arch = "sm_80"; // another arch: not compiled for sm_90a
    w.tile = "bm16.bn32.wm1.wn2.st2.sp32.oc1";
    store->put_winner(w);
  }
  const ToolRun r = run_tool(dir, kAttnCache, {"precompile", "--model", "mimo-v2.5", "--tp", "8", "--arch", "sm_90a",
                                               "--cache", cache, "--dry-run", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json report = parse_json(r);
  int tuned = 0;
  for (const auto& e : report["entries"]) {
    if (e["tile_source"] != "tuned") continue;
    ++tuned;
    EXPECT_EQ(e["tile"], tuned_tile);
    EXPECT_EQ(e["spec"], kMimoDecode);
    EXPECT_EQ(e["status"], "planned");
  }
  EXPECT_EQ(tuned, 1);
  EXPECT_EQ(report["totals"]["planned"], 5);
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
  ToolRun r = run_tool(dir, kAttnCache, {"verify", "--no-load", "--cache", cache});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(cache.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE binary_blobs SET cubin = zeroblob(4096)", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);

  r = run_tool(dir, kAttnCache, {"verify", "--no-load", "--cache", cache, "--json"});
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

TEST(AttnTune, DryRunListsUnitsAndSearchSpacesAndWritesNothing) {
  TempDir dir;
  const std::string cache = dir.file("never-written.sqlite");
  ToolRun r = run_tool(dir, kAttnTune, {"--model", "mimo-v2.5", "--tp", "8", "--dry-run", "--json", "--cache", cache,
                                        "--max-batch", "16", "--max-seq", "4096"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json report = parse_json(r);
  // Two layer types x (9 prefill + 9 decode buckets).
  EXPECT_EQ(report["units"].size(), 36u);
  EXPECT_EQ(report["totals"]["planned"], 36);
  EXPECT_TRUE(report["skipped"].empty());
  EXPECT_EQ(report["spaces"].size(), 4u);
  for (const auto& s : report["spaces"]) {
    EXPECT_GT(s["kept"].get<int>(), 0);
    EXPECT_LT(s["kept"].get<int>(), s["enumerated"].get<int>());
  }
  std::set<std::string> buckets;
  for (const auto& u : report["units"]) buckets.insert(u["bucket"].get<std::string>());
  EXPECT_TRUE(buckets.contains("decode:r8:b16:kv4096"));
  EXPECT_TRUE(buckets.contains("prefill:q1024:kv4096"));
  EXPECT_THAT(r.err, HasSubstr("dry run")); // the message, kept off the JSON stream
  EXPECT_FALSE(std::filesystem::exists(cache));

  // The table for people; phases and buckets narrow the matrix.
  r = run_tool(dir, kAttnTune, {"--model", "llama-3.1-8b", "--tp", "2", "--dry-run", "--phases", "decode",
                                "--max-batch", "64", "--max-seq", "1024", "--cache", cache});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("decode:r4:b64:kv1024"));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("prefill:")));
  EXPECT_THAT(r.out, HasSubstr("8 units"));
  r = run_tool(dir, kAttnTune, {"--model", "llama-3.1-8b", "--dry-run", "--json", "--buckets",
                                "decode:r4:b16:kv4096,prefill:q256:kv1024", "--cache", cache});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(parse_json(r)["units"].size(), 2u);
}

TEST(AttnTune, HfConfigDryRun) {
  TempDir dir;
  const std::string config = dir.file("config.json");
  write_text(config, R"({"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
                         "num_attention_heads": 32, "num_key_value_heads": 8})");
  ToolRun r = run_tool(dir, kAttnTune, {"--hf-config", config, "--tp", "4", "--dry-run", "--json",
                                        "--max-batch", "4", "--max-seq", "1024", "--cache", dir.file("c.sqlite")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json report = parse_json(r);
  EXPECT_EQ(report["model"], "llama");
  EXPECT_EQ(report["tensor_parallel"], 4);
  for (const auto& u : report["units"]) {
    EXPECT_EQ(u["heads"]["num_q_heads"], 8);
    EXPECT_EQ(u["heads"]["num_kv_heads"], 2);
  }
  // A config without the field says which.
  write_text(config, R"({"num_hidden_layers": 32, "num_attention_heads": 32, "hidden_size": 4096})");
  r = run_tool(dir, kAttnTune, {"--hf-config", config, "--dry-run"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("num_key_value_heads: missing"));
  r = run_tool(dir, kAttnCache, {"precompile", "--hf-config", config, "--arch", "sm_90a", "--cache", dir.file("p.sqlite")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("num_key_value_heads: missing"));
}

TEST(AttnTune, UsageErrors) {
  TempDir dir;
  auto tune = [&](std::vector<std::string> args) { return run_tool(dir, kAttnTune, args); };
  ToolRun r = tune({"--dry-run"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("no model"));
  r = tune({"--model", "mimo-v2.5", "--hf-config", "x.json", "--dry-run"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("not both"));
  r = tune({"--model", "mimo-v2.5", "--phases", "training", "--dry-run"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("phases: got 'training'"));
  r = tune({"--model", "mimo-v2.5", "--buckets", "decode:b16", "--dry-run"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("bucket 'decode:b16'"));
  r = tune({"--model", "mimo-v2.5", "--max-batch", "0", "--dry-run"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("max_batch: got 0"));
  r = tune({"--model", "mimo-v2.5", "--devices", "0,x", "--dry-run"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("devices: got 'x'"));
  // fp8 KV caches are tuned like 16-bit ones (the dry run lists them); a bad KV dtype is refused.
  r = tune({"--model", "mimo-v2.5", "--tp", "8", "--kv-dtype", "e4m3", "--dry-run"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("e4m3"));
  r = tune({"--model", "mimo-v2.5", "--tp", "8", "--kv-dtype", "int4", "--dry-run"});
  EXPECT_EQ(r.exit_code, 2);
  r = tune({"--model", "mimo-v2.5", "--search", "random", "--dry-run"});
  EXPECT_EQ(r.exit_code, 2);
}

// --- show, merge, export, prune ------------------------------------------------------------------

cache::BinaryRecord fake_binary(const std::string& key, const std::string& arch, const std::string& version) {
  cache::BinaryRecord rec;
  rec.key = key;
  rec.spec = kMimoDecode;
  rec.tile = "bm16.bn64.wm1.wn4.st3.sp32.oc2";
  rec.arch = arch;
  rec.codegen_version = "test";
  rec.nvrtc_version = "0.0";
  rec.compile_options = "--gpu-architecture=" + arch;
  rec.cubin = std::string(2048, 'k') + key;
  rec.ptx = "// ptx";
  rec.compile_log = "ptxas info: 158 registers";
  rec.registers = 158;
  rec.tool_version = version;
  return rec;
}

cache::TuningRecord fake_candidate(const std::string& key, const std::string& tile, double us, int64_t created) {
  cache::TuningRecord r;
  r.tuning_key = key;
  r.tile = tile;
  r.spec = kMimoDecode;
  r.median_us = us;
  r.status = std::isnan(us) ? "failed: verify: relative RMS error 0.3 (bound 0.01)" : "ok";
  r.device_name = "NVIDIA H100 80GB HBM3";
  r.arch = "sm_90a";
  r.sm_count = 132;
  r.bucket = "decode:r8:b16:kv4096";
  r.tool_version = "0.1.0";
  r.created_unix = created;
  return r;
}

cache::WinnerRecord fake_winner(const std::string& key, const std::string& tile, double us, int64_t created) {
  cache::WinnerRecord w;
  w.tuning_key = key;
  w.tile = tile;
  w.spec = kMimoDecode;
  w.median_us = us;
  w.device_name = "NVIDIA H100 80GB HBM3";
  w.arch = "sm_90a";
  w.sm_count = 132;
  w.bucket = "decode:r8:b16:kv4096";
  w.tool_version = "0.1.0";
  w.created_unix = created;
  return w;
}

TEST(AttnCache, ShowPrintsABinaryOrATuningKey) {
  TempDir dir;
  const std::string cache = dir.file("c.sqlite");
  {
    auto store = cache::Store::open(cache);
    store->put_binary(fake_binary("aaaa000011112222", "sm_90a", "0.1.0"));
    store->put_candidate(fake_candidate("bbbb000011112222", "bm16.bn64.wm1.wn4.st3.sp32.oc2", 20.0, 0));
    store->put_candidate(fake_candidate("bbbb000011112222", "bm16.bn128.wm1.wn8.st2.sp32.oc1", 15.0, 0));
    store->put_candidate(fake_candidate("bbbb000011112222", "bm16.bn32.wm1.wn2.st2.sp32.oc1", NAN, 0));
    store->put_winner(fake_winner("bbbb000011112222", "bm16.bn128.wm1.wn8.st2.sp32.oc1", 15.0, 0));
    store->put_candidate(fake_candidate("bbbb999911112222", "bm16.bn64.wm1.wn4.st3.sp32.oc2", 20.0, 0));
  }
  ToolRun r = run_tool(dir, kAttnCache, {"show", "aaaa", "--cache", cache});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("binary aaaa000011112222"));
  EXPECT_THAT(r.out, HasSubstr("158 registers"));
  EXPECT_THAT(r.out, HasSubstr(kMimoDecode));
  r = run_tool(dir, kAttnCache, {"show", "bbbb0000", "--cache", cache, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = parse_json(r);
  EXPECT_EQ(j["key"], "bbbb000011112222");
  EXPECT_EQ(j["candidates"].size(), 3u);
  EXPECT_EQ(j["winner"]["tile"], "bm16.bn128.wm1.wn8.st2.sp32.oc1");
  r = run_tool(dir, kAttnCache, {"show", "bbbb000011112222", "--cache", cache});
  EXPECT_THAT(r.out, HasSubstr("winner bm16.bn128.wm1.wn8.st2.sp32.oc1 (15.00 us"));
  EXPECT_THAT(r.out, HasSubstr("failed: verify"));
  // A candidate-only key (a unit still being tuned) is found too.
  r = run_tool(dir, kAttnCache, {"show", "bbbb9999", "--cache", cache});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("winner none yet"));
  r = run_tool(dir, kAttnCache, {"show", "bbbb", "--cache", cache});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("give more digits"));
  r = run_tool(dir, kAttnCache, {"show", "cccc", "--cache", cache});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("no binary or tuning key starts with 'cccc'"));
}

TEST(AttnCache, MergeExportAndPrune) {
  TempDir dir;
  const std::string a = dir.file("a.sqlite"), b = dir.file("b.sqlite"), merged = dir.file("merged.sqlite");
  const std::string t1 = "bm16.bn64.wm1.wn4.st3.sp32.oc2", t2 = "bm16.bn128.wm1.wn8.st2.sp32.oc1";
  {
    auto sa = cache::Store::open(a);
    sa->put_binary(fake_binary("1111000000000000", "sm_90a", "0.1.0"));
    sa->put_binary(fake_binary("2222000000000000", "sm_80", "0.0.9"));
    sa->put_candidate(fake_candidate("k1", t1, 20.0, 1000));
    sa->put_winner(fake_winner("k1", t1, 20.0, 1000));
    sa->put_candidate(fake_candidate("k3", t1, 30.0, 1000)); // no winner yet: still merged
    auto sb = cache::Store::open(b);
    sb->put_binary(fake_binary("1111000000000000", "sm_90a", "0.1.0"));
    sb->put_binary(fake_binary("3333000000000000", "sm_90a", "0.1.0"));
    sb->put_candidate(fake_candidate("k1", t1, 21.0, 500)); // older: a's row stays
    sb->put_candidate(fake_candidate("k1", t2, 18.0, 2000));
    sb->put_winner(fake_winner("k1", t2, 18.0, 2000)); // newer: wins
    sb->put_candidate(fake_candidate("k2", t1, 10.0, 2000));
    sb->put_winner(fake_winner("k2", t1, 10.0, 2000));
  }
  ToolRun r = run_tool(dir, kAttnCache, {"merge", a, b, "--cache", merged, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json m = parse_json(r);
  EXPECT_EQ(m["binaries"]["copied"], 3);
  EXPECT_EQ(m["binaries"]["present"], 1);
  EXPECT_EQ(m["winners"]["copied"], 3);
  EXPECT_EQ(m["candidates"]["kept"], 1);
  {
    cache::OpenOptions ro;
    ro.read_only = true;
    auto s = cache::Store::open(merged, ro);
    EXPECT_EQ(s->list_binaries().size(), 3u);
    EXPECT_EQ(s->winner("k1")->tile, t2);
    EXPECT_EQ(s->winner("k2")->tile, t1);
    EXPECT_EQ(s->candidates("k1").size(), 2u);
    for (const auto& c : s->candidates("k1"))
      if (c.tile == t1) {
        EXPECT_DOUBLE_EQ(c.median_us, 20.0);
      }
    EXPECT_EQ(s->candidates("k3").size(), 1u);
    EXPECT_THAT(s->integrity_check(), ::testing::IsEmpty());
  }
  // Merging again changes nothing.
  r = run_tool(dir, kAttnCache, {"merge", a, b, "--cache", merged, "--json"});
  EXPECT_EQ(parse_json(r)["binaries"]["copied"], 0);
  EXPECT_EQ(run_tool(dir, kAttnCache, {"merge", merged, "--cache", merged}).exit_code, 1);

  // Export: one compact file that opens read-only and verifies.
  const std::string exported = dir.file("deploy.sqlite");
  r = run_tool(dir, kAttnCache, {"export", exported, "--cache", merged});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(std::filesystem::exists(exported + "-wal"));
  r = run_tool(dir, kAttnCache, {"verify", "--no-load", "--cache", exported});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("ok (3 binaries intact"));
  EXPECT_EQ(run_tool(dir, kAttnCache, {"export", exported, "--cache", merged}).exit_code, 1) << "never overwrites";
  r = run_tool(dir, kAttnCache, {"ls", "--json", "--cache", exported});
  EXPECT_EQ(parse_json(r)["winners"].size(), 2u);

  // Prune: by arch, by tool version, by age; a dry run first.
  r = run_tool(dir, kAttnCache, {"prune", "--cache", merged});
  EXPECT_EQ(r.exit_code, 2) << "no criterion";
  r = run_tool(dir, kAttnCache, {"prune", "--arch", "sm_80", "--dry-run", "--cache", merged});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("would remove 1 binary and 0 tuning rows"));
  r = run_tool(dir, kAttnCache, {"prune", "--arch", "sm_80", "--cache", merged});
  EXPECT_THAT(r.out, HasSubstr("removed 1 binary and 0 tuning rows"));
  r = run_tool(dir, kAttnCache, {"prune", "--tool-version", "0.1.0", "--older-than", "1", "--cache", merged});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Binaries were created now (kept); tuning rows from 1970 go: 4 candidates and 2 winners.
  EXPECT_THAT(r.out, HasSubstr("removed 0 binaries and 6 tuning rows"));
  {
    cache::OpenOptions ro;
    ro.read_only = true;
    auto s = cache::Store::open(merged, ro);
    EXPECT_EQ(s->list_binaries().size(), 2u);
    EXPECT_TRUE(s->list_winners().empty());
  }
  r = run_tool(dir, kAttnCache, {"prune", "--stale", "--cache", merged});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("removed 2 binaries")) << "their codegen version is not this build's";
}

} // namespace
} // namespace attnjit::testing
