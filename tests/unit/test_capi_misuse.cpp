// Misuse of the C ABI: every entry point refuses null pointers and out-of-contract fields with the
// right status, and attnjit_last_error() names the field (and, for limits, the allowed values).
//
// Most of this runs without a GPU: problem validation goes through attnjit_problem_validate,
// which needs no device, and null handles are refused before any driver call. What needs a
// context (plan_create's own checks, a real plan's accessors) skips when attnjit_context_create
// answers ATTNJIT_ERROR_NO_DEVICE.
#include <attnjit/attnjit.h>

#include "error_message.h"

#include <gtest/gtest.h>

#include <cctype>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using attnjit::testing::names_field;

std::string last_error() {
  const char* m = attnjit_last_error();
  return m ? m : "";
}

#define EXPECT_REFUSED(call, ...)                                                                   \
  do {                                                                                              \
    const attnjit_status st_ = (call);                                                              \
    const std::string msg_ = last_error();                                                          \
    EXPECT_EQ(st_, ATTNJIT_ERROR_INVALID_ARGUMENT) << #call << ": " << msg_;                        \
    EXPECT_TRUE(names_field(msg_, {__VA_ARGS__})) << #call << ": message should name " << #__VA_ARGS__ \
                                                  << ": \"" << msg_ << "\"";                        \
  } while (0)

// A tile config valid for the prefill family (16 rows per warp, one key-splitting warp, no splits).
attnjit_tile_config valid_prefill_tile() {
  attnjit_tile_config t;
  std::memset(&t, 0, sizeof t);
  t.block_m = 64;
  t.block_n = 64;
  t.warps_m = 4;
  t.warps_n = 1;
  t.stages = 2;
  t.max_splits = 1;
  t.min_ctas_per_sm = 1;
  return t;
}

attnjit_problem valid_problem(attnjit_family family = ATTNJIT_FAMILY_PREFILL) {
  attnjit_problem p;
  attnjit_problem_init(&p);
  p.family = family;
  p.q_dtype = ATTNJIT_DTYPE_BF16;
  p.kv_dtype = ATTNJIT_DTYPE_BF16;
  p.head_dim_qk = 128;
  p.head_dim_v = 128;
  p.page_size = 16;
  p.kv_storage = ATTNJIT_KV_PAGED;
  p.causal = 1;
  p.num_q_heads = 8;
  p.num_kv_heads = 2;
  p.max_batch = 4;
  p.max_total_q = 256;
  return p;
}

// A context on device 0 with the kernel cache disabled, or null when there is no device (any
// other failure is a test failure).
struct Context {
  attnjit_context ctx = nullptr;
  attnjit_status status = ATTNJIT_ERROR_INTERNAL;
  std::string message;
  Context() {
    attnjit_context_options o;
    attnjit_context_options_init(&o);
    o.disable_cache = 1;
    status = attnjit_context_create(&o, &ctx);
    message = last_error();
  }
  ~Context() {
    if (ctx != nullptr) attnjit_context_destroy(ctx);
  }
};

#define REQUIRE_CONTEXT(c)                                                                           \
  Context c;                                                                                        \
  if (c.status == ATTNJIT_ERROR_NO_DEVICE) GTEST_SKIP() << "no device: " << c.message;              \
  ASSERT_EQ(c.status, ATTNJIT_OK) << c.message;                                                     \
  ASSERT_NE(c.ctx, nullptr)

bool device_present() {
  static const bool present = [] {
    Context c;
    return c.status == ATTNJIT_OK;
  }();
  return present;
}

// ---- Basics ------------------------------------------------------------------------------------

TEST(CapiBasics, StatusStringsAndVersion) {
  std::set<std::string> seen;
  for (int s = ATTNJIT_OK; s <= ATTNJIT_ERROR_INTERNAL; ++s) {
    const char* str = attnjit_status_string(static_cast<attnjit_status>(s));
    ASSERT_NE(str, nullptr) << s;
    EXPECT_GT(std::strlen(str), 0u) << s;
    EXPECT_TRUE(seen.insert(str).second) << "two statuses share the string \"" << str << "\"";
  }
  EXPECT_NE(attnjit_status_string(static_cast<attnjit_status>(99)), nullptr);
  EXPECT_NE(attnjit_status_string(static_cast<attnjit_status>(-1)), nullptr);
  ASSERT_NE(attnjit_version(), nullptr);
  EXPECT_GT(std::strlen(attnjit_version()), 0u);
  EXPECT_NE(attnjit_last_error(), nullptr);
}

TEST(CapiBasics, InitFunctionsSetStructSizeAndNeutralDefaults) {
  attnjit_problem p;
  std::memset(&p, 0xAB, sizeof p);
  attnjit_problem_init(&p);
  EXPECT_EQ(p.struct_size, sizeof(attnjit_problem));
  // A zero tile means "tuned winner or heuristic default".
  attnjit_tile_config zero;
  std::memset(&zero, 0, sizeof zero);
  EXPECT_EQ(std::memcmp(&p.tile, &zero, sizeof zero), 0) << "attnjit_problem_init must leave the tile config zero";

  attnjit_run_args a;
  std::memset(&a, 0xAB, sizeof a);
  attnjit_run_args_init(&a);
  EXPECT_EQ(a.struct_size, sizeof(attnjit_run_args));
  EXPECT_EQ(a.q, nullptr);
  EXPECT_EQ(a.k, nullptr);
  EXPECT_EQ(a.v, nullptr);
  EXPECT_EQ(a.o, nullptr);
  EXPECT_EQ(a.lse, nullptr);
  EXPECT_EQ(a.block_table, nullptr);
  EXPECT_EQ(a.workspace, nullptr);
  EXPECT_EQ(a.workspace_bytes, 0u);
  EXPECT_EQ(a.scale, 0.0f);

  attnjit_context_options o;
  std::memset(&o, 0xAB, sizeof o);
  attnjit_context_options_init(&o);
  EXPECT_EQ(o.struct_size, sizeof(attnjit_context_options));
  EXPECT_EQ(o.cache_path, nullptr);
  EXPECT_EQ(o.readonly_cache_path, nullptr);
  EXPECT_EQ(o.device, 0);
  EXPECT_EQ(o.disable_cache, 0);
}

TEST(CapiBasics, InitFunctionsTolerateNull) {
  attnjit_problem_init(nullptr);
  attnjit_run_args_init(nullptr);
  attnjit_context_options_init(nullptr);
  SUCCEED();
}

TEST(CapiBasics, LastErrorIsPerThread) {
  attnjit_problem mine = valid_problem();
  mine.head_dim_qk = 24;
  ASSERT_EQ(attnjit_problem_validate(&mine), ATTNJIT_ERROR_INVALID_ARGUMENT);
  const std::string before = last_error();
  ASSERT_TRUE(names_field(before, {"head_dim_qk"})) << before;
  std::string other;
  std::thread t([&] {
    attnjit_problem theirs = valid_problem();
    theirs.page_size = 3;
    EXPECT_EQ(attnjit_problem_validate(&theirs), ATTNJIT_ERROR_INVALID_ARGUMENT);
    other = last_error();
  });
  t.join();
  EXPECT_TRUE(names_field(other, {"page_size"})) << other;
  EXPECT_EQ(last_error(), before) << "another thread's error replaced this thread's";
}

// ---- Null pointers, no device needed -------------------------------------------------------------

TEST(CapiNullPointers, AreRefusedWithoutTouchingADevice) {
  attnjit_problem pb = valid_problem();
  attnjit_run_args args;
  attnjit_run_args_init(&args);
  attnjit_context_options opts;
  attnjit_context_options_init(&opts);
  opts.disable_cache = 1;

  EXPECT_REFUSED(attnjit_problem_validate(nullptr), "problem");
  attnjit_tile_config parsed;
  EXPECT_REFUSED(attnjit_tile_config_parse(nullptr, &parsed), "text");
  EXPECT_REFUSED(attnjit_tile_config_parse("bm64.bn64.wm4.wn1.st2.sp1.oc1", nullptr), "out");
  EXPECT_REFUSED(attnjit_context_create(nullptr, nullptr), "out");
  EXPECT_REFUSED(attnjit_context_create(&opts, nullptr), "out");

  attnjit_plan plan = nullptr;
  EXPECT_REFUSED(attnjit_plan_create(nullptr, &pb, &plan), "ctx", "context");
  EXPECT_EQ(plan, nullptr);
  EXPECT_EQ(attnjit_plan_create(nullptr, nullptr, nullptr), ATTNJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(attnjit_plan_create(nullptr, &pb, nullptr), ATTNJIT_ERROR_INVALID_ARGUMENT);

  size_t bytes = 123;
  EXPECT_REFUSED(attnjit_plan_workspace_bytes(nullptr, &bytes), "plan");
  EXPECT_EQ(attnjit_plan_workspace_bytes(nullptr, nullptr), ATTNJIT_ERROR_INVALID_ARGUMENT);
  const char* spec = nullptr;
  EXPECT_REFUSED(attnjit_plan_describe(nullptr, &spec), "plan");
  EXPECT_EQ(attnjit_plan_describe(nullptr, nullptr), ATTNJIT_ERROR_INVALID_ARGUMENT);

  EXPECT_REFUSED(attnjit_run(nullptr, &args, nullptr), "plan");
  EXPECT_EQ(attnjit_run(nullptr, nullptr, nullptr), ATTNJIT_ERROR_INVALID_ARGUMENT);

  // Destroying nothing: a no-op (OK) or a refusal, never a crash.
  const attnjit_status d1 = attnjit_context_destroy(nullptr);
  EXPECT_TRUE(d1 == ATTNJIT_OK || d1 == ATTNJIT_ERROR_INVALID_ARGUMENT) << attnjit_status_string(d1);
  const attnjit_status d2 = attnjit_plan_destroy(nullptr);
  EXPECT_TRUE(d2 == ATTNJIT_OK || d2 == ATTNJIT_ERROR_INVALID_ARGUMENT) << attnjit_status_string(d2);
}

// Tile strings as attnjit_plan_describe prints them parse to the fields they name; malformed ones
// are refused with the part that is wrong.
TEST(CapiTileConfigParse, CanonicalStringsRoundTrip) {
  struct Case {
    const char* text;
    attnjit_tile_config want;
  };
  const Case cases[] = {
      {"bm128.bn64.wm4.wn1.st2.sp1.oc2", {128, 64, 4, 1, 2, 1, 2, 0}},
      {"bm64.bn64.wm4.wn1.st3.sp1.oc2.wg1", {64, 64, 4, 1, 3, 1, 2, 1}},
      {"bm192.bn64.wm12.wn1.st3.sp1.oc1.wg2", {192, 64, 12, 1, 3, 1, 1, 2}},
      {"bm16.bn128.wm1.wn8.st2.sp128.oc1", {16, 128, 1, 8, 2, 128, 1, 0}},
  };
  for (const Case& c : cases) {
    attnjit_tile_config t;
    std::memset(&t, 0xff, sizeof t); // every field must be written
    ASSERT_EQ(attnjit_tile_config_parse(c.text, &t), ATTNJIT_OK) << c.text << ": " << last_error();
    EXPECT_EQ(std::memcmp(&t, &c.want, sizeof t), 0) << c.text;
  }
  // The parsed tile is what a problem takes.
  attnjit_problem pb = valid_problem();
  ASSERT_EQ(attnjit_tile_config_parse("bm64.bn64.wm4.wn1.st2.sp1.oc1", &pb.tile), ATTNJIT_OK) << last_error();
  EXPECT_EQ(attnjit_problem_validate(&pb), ATTNJIT_OK) << last_error();
}

TEST(CapiTileConfigParse, MalformedStringsAreRefused) {
  struct Case {
    const char* text;
    const char* names; // what the message must point at
  };
  const Case cases[] = {
      {"", "bm"},
      {"bn64.bm64.wm4.wn1.st2.sp1.oc1", "bm"},
      {"bm64.bn64.wm4.wn1.st2.sp1", "oc"},
      {"bm64.bnx.wm4.wn1.st2.sp1.oc1", "bn"},
      {"bm64.bn64.wm4.wn1.st2.sp1.oc1.wg3", "wg3"},
      {"bm64.bn64.wm4.wn1.st2.sp1.oc1.wg2.st4", "wg2.st4"},
      {"bm64.bn64.wm4.wn1.st2.sp1.oc1.", "wg1"},
      {"bm64.bn64.wm4.wn1.st2.sp1.oc", "oc"},
  };
  for (const Case& c : cases) {
    attnjit_tile_config t;
    std::memset(&t, 0, sizeof t);
    EXPECT_REFUSED(attnjit_tile_config_parse(c.text, &t), c.names);
  }
}

TEST(CapiContextOptions, BadOptionsAreRefused) {
  attnjit_context_options o;
  attnjit_context_options_init(&o);
  o.disable_cache = 1;
  attnjit_context ctx = nullptr;

  o.struct_size = 0;
  EXPECT_REFUSED(attnjit_context_create(&o, &ctx), "struct_size");
  EXPECT_EQ(ctx, nullptr);
  o.struct_size = 1;
  EXPECT_REFUSED(attnjit_context_create(&o, &ctx), "struct_size");
  EXPECT_EQ(ctx, nullptr);

  attnjit_context_options_init(&o);
  o.disable_cache = 1;
  for (int32_t device : {-1, 100000}) {
    o.device = device;
    const attnjit_status st = attnjit_context_create(&o, &ctx);
    const std::string msg = last_error();
    EXPECT_EQ(ctx, nullptr) << "device " << device;
    if (ctx != nullptr) attnjit_context_destroy(ctx);
    ctx = nullptr;
    if (!device_present() && st == ATTNJIT_ERROR_NO_DEVICE) continue; // nothing to compare the ordinal with
    EXPECT_EQ(st, ATTNJIT_ERROR_INVALID_ARGUMENT) << "device " << device << ": " << msg;
    EXPECT_TRUE(names_field(msg, {"device"})) << msg;
  }
}

// ---- Problem validation --------------------------------------------------------------------------

struct BadProblem {
  std::string what;
  std::function<void(attnjit_problem&)> edit;
  std::vector<std::string> fields; // the message names one of these
  std::vector<std::string> mentions = {}; // and contains each of these (the allowed values)
};

std::vector<BadProblem> bad_problems() {
  std::vector<BadProblem> v = {
      {"struct_size 0", [](attnjit_problem& p) { p.struct_size = 0; }, {"struct_size"}},
      {"struct_size too small", [](attnjit_problem& p) { p.struct_size = sizeof(attnjit_problem) - 8; }, {"struct_size"}},
      {"family 7", [](attnjit_problem& p) { p.family = static_cast<attnjit_family>(7); }, {"family"}},
      {"family -1", [](attnjit_problem& p) { p.family = static_cast<attnjit_family>(-1); }, {"family"}},
      {"q_dtype 5", [](attnjit_problem& p) { p.q_dtype = static_cast<attnjit_dtype>(5); }, {"q_dtype"}},
      {"kv_dtype 9", [](attnjit_problem& p) { p.kv_dtype = static_cast<attnjit_dtype>(9); }, {"kv_dtype"}},
      {"kv_storage 3", [](attnjit_problem& p) { p.kv_storage = static_cast<attnjit_kv_storage>(3); }, {"kv_storage"}},
      {"num_q_heads 0", [](attnjit_problem& p) { p.num_q_heads = 0; }, {"num_q_heads"}},
      {"num_q_heads -8", [](attnjit_problem& p) { p.num_q_heads = -8; }, {"num_q_heads"}},
      {"num_kv_heads 0", [](attnjit_problem& p) { p.num_kv_heads = 0; }, {"num_kv_heads"}},
      {"num_kv_heads 3 of 8", [](attnjit_problem& p) { p.num_kv_heads = 3; }, {"num_kv_heads"}},
      {"num_kv_heads 16 of 8", [](attnjit_problem& p) { p.num_kv_heads = 16; }, {"num_kv_heads"}},
      {"max_batch 0", [](attnjit_problem& p) { p.max_batch = 0; }, {"max_batch"}},
      {"max_batch -1", [](attnjit_problem& p) { p.max_batch = -1; }, {"max_batch"}},
      {"max_total_q 0", [](attnjit_problem& p) { p.max_total_q = 0; }, {"max_total_q"}},
      {"max_total_q -5", [](attnjit_problem& p) { p.max_total_q = -5; }, {"max_total_q"}},
  };
  for (int32_t d : {0, 8, 24, 100, 272, 512, -16}) {
    v.push_back({"head_dim_qk " + std::to_string(d), [d](attnjit_problem& p) { p.head_dim_qk = d; }, {"head_dim_qk"},
                 {"16", "256"}});
    v.push_back({"head_dim_v " + std::to_string(d), [d](attnjit_problem& p) { p.head_dim_v = d; }, {"head_dim_v"},
                 {"16", "256"}});
  }
  for (int32_t page : {0, 3, 6, 24, 512, -4}) {
    v.push_back({"page_size " + std::to_string(page), [page](attnjit_problem& p) { p.page_size = page; }, {"page_size"},
                 {"256"}});
  }
  // Tile configs: start from one that is valid for the prefill family and break one field.
  auto tile = [](attnjit_problem& p) { p.tile = valid_prefill_tile(); };
  v.push_back({"tile.stages 1", [tile](attnjit_problem& p) { tile(p); p.tile.stages = 1; }, {"stages", "tile.stages"}});
  v.push_back({"tile.block_n 24", [tile](attnjit_problem& p) { tile(p); p.tile.block_n = 24; }, {"block_n", "tile.block_n"}});
  v.push_back({"tile.warps_m 3", [tile](attnjit_problem& p) { tile(p); p.tile.warps_m = 3; }, {"warps_m", "tile.warps_m"}});
  v.push_back({"tile.max_splits 4 for prefill", [tile](attnjit_problem& p) { tile(p); p.tile.max_splits = 4; },
               {"max_splits", "tile.max_splits"}});
  v.push_back({"tile.max_splits 0 for decode",
               [tile](attnjit_problem& p) { tile(p); p.family = ATTNJIT_FAMILY_DECODE; p.tile.max_splits = 0; },
               {"max_splits", "tile.max_splits"}});
  return v;
}

std::vector<std::pair<std::string, attnjit_problem>> valid_problems() {
  std::vector<std::pair<std::string, attnjit_problem>> v;
  v.emplace_back("default", valid_problem());
  v.emplace_back("decode", valid_problem(ATTNJIT_FAMILY_DECODE));
  for (auto [qk, dv] : {std::pair{16, 16}, {256, 256}, {192, 128}, {64, 256}, {96, 32}, {80, 80}}) {
    attnjit_problem p = valid_problem();
    p.head_dim_qk = qk;
    p.head_dim_v = dv;
    v.emplace_back("dims " + std::to_string(qk) + "/" + std::to_string(dv), p);
  }
  for (int32_t page : {1, 2, 128, 256}) {
    attnjit_problem p = valid_problem(ATTNJIT_FAMILY_DECODE);
    p.page_size = page;
    v.emplace_back("page " + std::to_string(page), p);
  }
  {
    attnjit_problem p = valid_problem();
    p.kv_storage = ATTNJIT_KV_CONTIGUOUS;
    p.page_size = 3; // ignored for contiguous storage
    v.emplace_back("contiguous ignores page_size", p);
  }
  {
    attnjit_problem p = valid_problem();
    p.q_dtype = p.kv_dtype = ATTNJIT_DTYPE_F16;
    p.num_kv_heads = 1; // MQA
    p.causal = 0;
    v.emplace_back("f16 mqa non-causal", p);
  }
  {
    attnjit_problem p = valid_problem();
    p.num_kv_heads = p.num_q_heads;
    v.emplace_back("no gqa", p);
  }
  {
    attnjit_problem p = valid_problem();
    p.tile = valid_prefill_tile();
    v.emplace_back("explicit prefill tile", p);
  }
  return v;
}

TEST(CapiProblemValidation, ValidProblemsPassWithoutADevice) {
  for (const auto& [what, p] : valid_problems()) {
    const attnjit_status st = attnjit_problem_validate(&p);
    EXPECT_EQ(st, ATTNJIT_OK) << what << ": " << last_error();
  }
}

TEST(CapiProblemValidation, BadFieldsAreNamedWithoutADevice) {
  for (const BadProblem& b : bad_problems()) {
    attnjit_problem p = valid_problem();
    b.edit(p);
    const attnjit_status st = attnjit_problem_validate(&p);
    const std::string msg = last_error();
    EXPECT_EQ(st, ATTNJIT_ERROR_INVALID_ARGUMENT) << b.what << ": " << msg;
    EXPECT_TRUE(names_field(msg, b.fields)) << b.what << ": message should name " << b.fields[0] << ": \"" << msg << "\"";
    for (const std::string& m : b.mentions)
      EXPECT_NE(msg.find(m), std::string::npos) << b.what << ": message should give the allowed values (" << m << "): \"" << msg << "\"";
  }
}

// plan_create applies the same validation before compiling anything, and leaves *out null.
TEST(CapiProblemValidation, PlanCreateRefusesTheSameProblems) {
  REQUIRE_CONTEXT(c);
  for (const BadProblem& b : bad_problems()) {
    attnjit_problem p = valid_problem();
    b.edit(p);
    attnjit_plan plan = nullptr;
    const attnjit_status st = attnjit_plan_create(c.ctx, &p, &plan);
    const std::string msg = last_error();
    EXPECT_EQ(st, ATTNJIT_ERROR_INVALID_ARGUMENT) << b.what << ": " << msg;
    EXPECT_TRUE(names_field(msg, b.fields)) << b.what << ": \"" << msg << "\"";
    EXPECT_EQ(plan, nullptr) << b.what;
    if (plan != nullptr) attnjit_plan_destroy(plan);
  }
}

TEST(CapiNullPointers, PlanCreateWithAContext) {
  REQUIRE_CONTEXT(c);
  attnjit_problem pb = valid_problem();
  attnjit_plan plan = nullptr;
  EXPECT_REFUSED(attnjit_plan_create(c.ctx, nullptr, &plan), "problem");
  EXPECT_EQ(plan, nullptr);
  EXPECT_REFUSED(attnjit_plan_create(c.ctx, &pb, nullptr), "out");
}

// A real plan (compiles one small kernel): its accessors and attnjit_run refuse null outputs and
// empty arguments on the host.
TEST(CapiNullPointers, PlanAccessorsAndRunWithAPlan) {
  REQUIRE_CONTEXT(c);
  attnjit_problem pb = valid_problem(ATTNJIT_FAMILY_DECODE);
  pb.q_dtype = pb.kv_dtype = ATTNJIT_DTYPE_F16;
  pb.head_dim_qk = pb.head_dim_v = 64;
  attnjit_plan plan = nullptr;
  const attnjit_status st = attnjit_plan_create(c.ctx, &pb, &plan);
  if (st == ATTNJIT_ERROR_UNSUPPORTED) GTEST_SKIP() << "cannot compile here: " << last_error();
  ASSERT_EQ(st, ATTNJIT_OK) << last_error();
  ASSERT_NE(plan, nullptr);

  EXPECT_REFUSED(attnjit_plan_workspace_bytes(plan, nullptr), "bytes", "out");
  EXPECT_REFUSED(attnjit_plan_describe(plan, nullptr), "spec", "out");
  EXPECT_REFUSED(attnjit_run(plan, nullptr, nullptr), "args");

  attnjit_run_args args;
  attnjit_run_args_init(&args); // every pointer null, batch 0
  EXPECT_EQ(attnjit_run(plan, &args, nullptr), ATTNJIT_ERROR_INVALID_ARGUMENT) << last_error();
  EXPECT_FALSE(last_error().empty());
  args.struct_size = 0;
  EXPECT_REFUSED(attnjit_run(plan, &args, nullptr), "struct_size");

  size_t bytes = 0;
  EXPECT_EQ(attnjit_plan_workspace_bytes(plan, &bytes), ATTNJIT_OK) << last_error();
  const char* spec = nullptr;
  EXPECT_EQ(attnjit_plan_describe(plan, &spec), ATTNJIT_OK) << last_error();
  ASSERT_NE(spec, nullptr);
  EXPECT_GT(std::strlen(spec), 0u);
  EXPECT_EQ(attnjit_plan_destroy(plan), ATTNJIT_OK);
}

} // namespace
