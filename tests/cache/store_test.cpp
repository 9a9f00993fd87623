// Round trips, listing, erasing, tuning rows, paths and the layered facade.
#include "cache/schema.h"
#include "cache/sqlite.h"
#include "cache_test_util.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <ctime>
#include <thread>
#include <cstdlib>
#include <optional>

namespace attnjit::cache::testing {
namespace {

TEST(CacheStore, BinaryRoundTrip) {
  TempDir dir;
  Warnings w;
  auto store = Store::open(dir.file("c.sqlite"), options(w));
  ASSERT_EQ(store->state(), StoreState::ready);

  BinaryRecord a = make_binary("aa01", 5000, 1);
  BinaryRecord b = make_binary("bb02", 1, 3); // one byte of cubin, no ptx
  BinaryRecord c = make_binary("cc03", 0, 6); // empty cubin and ptx
  b.spec = std::string("odd\0spec 'quoted' \"x\"; DROP TABLE binaries;--", 44);
  store->put_binary(a);
  store->put_binary(b);
  store->put_binary(c);

  for (const BinaryRecord* want : {&a, &b, &c}) {
    auto got = store->get_binary(want->key);
    ASSERT_TRUE(got.has_value()) << want->key;
    EXPECT_TRUE(same_binary(*got, *want)) << want->key;
    EXPECT_EQ(got->cubin_size, static_cast<int64_t>(want->cubin.size()));
    EXPECT_EQ(got->ptx_size, static_cast<int64_t>(want->ptx.size()));
    EXPECT_EQ(got->cubin_xxh3, checksum_hex(want->cubin));
    EXPECT_EQ(got->cubin_xxh3.size(), 32u);
  }
  EXPECT_FALSE(store->get_binary("missing").has_value());
  EXPECT_FALSE(store->get_binary("").has_value());
  EXPECT_EQ(w.size(), 0u) << w.joined();
}

TEST(CacheStore, LargeBlobRoundTrip) {
  TempDir dir;
  Warnings w;
  auto store = Store::open(dir.file("c.sqlite"), options(w));
  BinaryRecord big = make_binary("big", 24 << 20, 11); // 24 MiB of cubin, 6 MiB of PTX
  store->put_binary(big);
  auto got = store->get_binary("big");
  ASSERT_TRUE(got);
  EXPECT_TRUE(got->cubin == big.cubin);
  EXPECT_TRUE(got->ptx == big.ptx);
}

TEST(CacheStore, PutReplacesAndKeepsOneRow) {
  TempDir dir;
  Warnings w;
  auto store = Store::open(dir.file("c.sqlite"), options(w));
  store->put_binary(make_binary("k", 3000, 1));
  BinaryRecord second = make_binary("k", 9000, 2);
  store->put_binary(second);
  auto got = store->get_binary("k");
  ASSERT_TRUE(got);
  EXPECT_TRUE(same_binary(*got, second));
  EXPECT_EQ(store->list_binaries().size(), 1u);
  EXPECT_TRUE(store->integrity_check().empty());
}

TEST(CacheStore, CreatedTimeDefaultsToNow) {
  TempDir dir;
  Warnings w;
  auto store = Store::open(dir.file("c.sqlite"), options(w));
  BinaryRecord r = make_binary("k", 100, 1);
  r.created_unix = 0;
  int64_t before = std::time(nullptr);
  store->put_binary(r);
  auto got = store->get_binary("k");
  ASSERT_TRUE(got);
  EXPECT_GE(got->created_unix, before);
  EXPECT_LE(got->created_unix, std::time(nullptr));
}

TEST(CacheStore, EmptyKeysAreRefused) {
  TempDir dir;
  Warnings w;
  auto store = Store::open(dir.file("c.sqlite"), options(w));
  EXPECT_THROW(store->put_binary(make_binary("", 10, 1)), Error);
  EXPECT_THROW(store->put_candidate(make_candidate("", "t", 1.0)), Error);
  EXPECT_THROW(store->put_winner(make_winner("k", "", 1.0)), Error);
}

TEST(CacheStore, TuningRoundTrip) {
  TempDir dir;
  Warnings w;
  auto store = Store::open(dir.file("c.sqlite"), options(w));
  store->put_candidate(make_candidate("tk1", "bn64.wm4.wn1.st2.sp1", 12.5));
  store->put_candidate(make_candidate("tk1", "bn32.wm4.wn1.st2.sp1", 14.0));
  TuningRecord failed = make_candidate("tk1", "bn128.wm8.wn1.st3.sp1", std::nan(""));
  failed.status = "failed: too many registers";
  store->put_candidate(failed);
  store->put_candidate(make_candidate("tk2", "bn64.wm4.wn1.st2.sp1", 99.0));
  // A candidate measured again replaces its own row only.
  store->put_candidate(make_candidate("tk1", "bn32.wm4.wn1.st2.sp1", 13.0));

  auto rows = store->candidates("tk1");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].tile, "bn128.wm8.wn1.st3.sp1"); // ordered by tile
  EXPECT_TRUE(std::isnan(rows[0].median_us));
  EXPECT_EQ(rows[0].status, "failed: too many registers");
  EXPECT_EQ(rows[1].tile, "bn32.wm4.wn1.st2.sp1");
  EXPECT_EQ(rows[1].median_us, 13.0);
  EXPECT_EQ(rows[2].median_us, 12.5);
  EXPECT_EQ(rows[2].device_name, "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(rows[2].sm_count, 132);
  EXPECT_EQ(rows[2].bucket, "decode:b8:kv4096");
  EXPECT_EQ(rows[2].created_unix, 1700000123);
  EXPECT_EQ(store->candidates("tk2").size(), 1u);
  EXPECT_TRUE(store->candidates("nope").empty());

  EXPECT_FALSE(store->winner("tk1"));
  store->put_winner(make_winner("tk1", "bn64.wm4.wn1.st2.sp1", 12.5));
  store->put_winner(make_winner("tk2", "bn64.wm4.wn1.st2.sp1", 99.0));
  store->put_winner(make_winner("tk1", "bn32.wm4.wn1.st2.sp1", 11.0)); // replaces
  auto win = store->winner("tk1");
  ASSERT_TRUE(win);
  EXPECT_EQ(win->tile, "bn32.wm4.wn1.st2.sp1");
  EXPECT_EQ(win->median_us, 11.0);
  EXPECT_EQ(win->arch, "sm_90a");
  EXPECT_EQ(win->tool_version, "attnjit 0.1.0");
  EXPECT_EQ(store->list_winners().size(), 2u);
  // Winners do not disturb candidates.
  EXPECT_EQ(store->candidates("tk1").size(), 3u);

  TuningFilter f;
  f.tuning_key = "tk1";
  EXPECT_EQ(store->erase_tuning(f), 4u); // 3 candidates + 1 winner
  EXPECT_TRUE(store->candidates("tk1").empty());
  EXPECT_FALSE(store->winner("tk1"));
  EXPECT_TRUE(store->winner("tk2"));
  EXPECT_EQ(w.size(), 0u) << w.joined();
}

TEST(CacheStore, ListAndStats) {
  TempDir dir;
  Warnings w;
  auto store = Store::open(dir.file("c.sqlite"), options(w));
  int64_t cubin = 0, ptx = 0;
  for (int i = 0; i < 10; ++i) {
    BinaryRecord r = make_binary(cat("key", 9 - i), 1000 + i * 100, i);
    cubin += static_cast<int64_t>(r.cubin.size());
    ptx += static_cast<int64_t>(r.ptx.size());
    store->put_binary(r);
  }
  auto meta = store->list_binaries();
  ASSERT_EQ(meta.size(), 10u);
  EXPECT_EQ(meta[0].key, "key0");
  EXPECT_TRUE(meta[0].cubin.empty()); // no blobs unless asked
  EXPECT_GT(meta[0].cubin_size, 0);
  auto full = store->list_binaries(true);
  ASSERT_EQ(full.size(), 10u);
  for (const auto& r : full) EXPECT_EQ(static_cast<int64_t>(r.cubin.size()), r.cubin_size);

  store->put_candidate(make_candidate("t", "a", 1));
  store->put_winner(make_winner("t", "a", 1));
  StoreStats st = store->stats();
  EXPECT_EQ(st.binaries, 10);
  EXPECT_EQ(st.cubin_bytes, cubin);
  EXPECT_EQ(st.ptx_bytes, ptx);
  EXPECT_EQ(st.candidates, 1);
  EXPECT_EQ(st.winners, 1);
  EXPECT_GT(st.file_bytes, 0);
}

TEST(CacheStore, EraseByFilterAndPredicate) {
  TempDir dir;
  Warnings w;
  auto store = Store::open(dir.file("c.sqlite"), options(w));
  for (int i = 0; i < 12; ++i) {
    BinaryRecord r = make_binary(cat("k", i), 2000, i);
    r.arch = i % 3 == 0 ? "sm_80" : "sm_90a";
    r.tool_version = i % 4 == 0 ? "attnjit 0.0.9" : "attnjit 0.1.0";
    r.created_unix = 1000 + i;
    store->put_binary(r);
  }
  BinaryFilter by_arch;
  by_arch.arch = "sm_80"; // k0 k3 k6 k9
  EXPECT_EQ(store->erase_binaries(by_arch), 4u);
  EXPECT_FALSE(store->get_binary("k3"));
  BinaryFilter by_tool;
  by_tool.tool_version = "attnjit 0.0.9"; // k4 k8 (k0 is gone)
  EXPECT_EQ(store->erase_binaries(by_tool), 2u);
  BinaryFilter by_age;
  by_age.created_before_unix = 1002; // k1 (k0 gone)
  EXPECT_EQ(store->erase_binaries(by_age), 1u);
  // Remaining: k2 k5 k7 k10 k11.
  size_t n = store->erase_binaries([](const BinaryRecord& r) {
    EXPECT_TRUE(r.cubin.empty()); // metadata only
    return r.key == "k5" || r.key == "k11";
  });
  EXPECT_EQ(n, 2u);
  std::vector<std::string> keys;
  for (const auto& r : store->list_binaries()) keys.push_back(r.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"k10", "k2", "k7"}));
  EXPECT_TRUE(store->integrity_check().empty()); // no orphan blobs left behind

  // A predicate that throws leaves everything in place.
  auto throws = [](const BinaryRecord&) -> bool { throw std::runtime_error("x"); };
  EXPECT_THROW(store->erase_binaries(throws), std::runtime_error);
  EXPECT_EQ(store->list_binaries().size(), 3u);
  EXPECT_EQ(store->erase_binaries(BinaryFilter{}), 3u);
  EXPECT_TRUE(store->list_binaries().empty());
}

TEST(CacheStore, VacuumReturnsSpace) {
  TempDir dir;
  Warnings w;
  auto store = Store::open(dir.file("c.sqlite"), options(w));
  for (int i = 0; i < 20; ++i) store->put_binary(make_binary(cat("k", i), 100000, i));
  store->put_binary(make_binary("keep", 1000, 99));
  store->erase_binaries([](const BinaryRecord& r) { return r.key != "keep"; });
  store->vacuum();
  EXPECT_LT(store->stats().file_bytes, 500000);
  EXPECT_TRUE(store->get_binary("keep"));
}

TEST(CacheStore, OpenCreatesParentDirectoriesAndMarksTheFile) {
  TempDir dir;
  Warnings w;
  std::string path = dir.file("a/b/c/cache.sqlite");
  { auto store = Store::open(path, options(w)); }
  ASSERT_TRUE(exists(path));
  RawDb raw(path);
  EXPECT_EQ(raw.integer("PRAGMA application_id"), kApplicationId);
  EXPECT_EQ(raw.integer("PRAGMA user_version"), kSchemaVersion);
  EXPECT_EQ(raw.integer("SELECT count(*) FROM sqlite_master WHERE type = 'table'"), 4);
}

TEST(CacheStore, UsesWalMode) {
  TempDir dir;
  Warnings w;
  std::string path = dir.file("c.sqlite");
  auto store = Store::open(path, options(w));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)), "wal");
  sqlite3_finalize(s);
  sqlite3_close(db);
}

TEST(CacheStore, OpenFailsCleanlyWhenTheDirectoryCannotBeMade) {
  TempDir dir;
  Warnings w;
  write_file(dir.file("plain"), "not a directory");
  EXPECT_THROW(Store::open(dir.file("plain/sub/cache.sqlite"), options(w)), Error);
}

TEST(CacheStore, MigrationTableIsContiguous) {
  auto steps = detail::migrations();
  ASSERT_EQ(static_cast<int>(steps.size()), kSchemaVersion);
  for (size_t i = 0; i < steps.size(); ++i) {
    EXPECT_EQ(steps[i].from_version, static_cast<int>(i));
    ASSERT_FALSE(steps[i].statements.empty());
    // Each step ends by recording the version it produces.
    EXPECT_EQ(std::string(steps[i].statements.back()),
              cat("PRAGMA user_version = ", i + 1));
  }
}

TEST(CacheSqlite, OneStatementUsedTwiceAtOnce) {
  // The statement cache must not hand out a statement that is still being stepped.
  TempDir dir;
  auto c = detail::Connection::open(dir.file("s.sqlite"),
                                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  static constexpr const char kCreate[] = "CREATE TABLE t (x INTEGER)";
  static constexpr const char kInsert[] = "INSERT INTO t VALUES (?1)";
  static constexpr const char kAll[] = "SELECT x FROM t ORDER BY x";
  c->exec(kCreate);
  for (int i = 0; i < 3; ++i) c->prepare(kInsert).bind_int(1, i).run();
  int pairs = 0;
  {
    detail::Statement outer = c->prepare(kAll);
    while (outer.step()) {
      detail::Statement inner = c->prepare(kAll);
      while (inner.step()) ++pairs;
    }
  }
  EXPECT_EQ(pairs, 9);
  detail::Statement again = c->prepare(kAll); // the cached one, free again
  int n = 0;
  while (again.step()) ++n;
  EXPECT_EQ(n, 3);
  EXPECT_THROW(c->exec("SELECT * FROM missing"), detail::SqliteError);
}

// Restores an environment variable at the end of a scope.
class EnvGuard {
 public:
  explicit EnvGuard(const char* name) : name_(name) {
    if (const char* v = std::getenv(name)) old_ = v;
  }
  ~EnvGuard() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  void set(const char* v) { ::setenv(name_, v, 1); }
  void unset() { ::unsetenv(name_); }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(CacheStore, DefaultPathFollowsEnvironment) {
  EnvGuard a("ATTNJIT_CACHE"), x("XDG_CACHE_HOME"), h("HOME");
  a.set("/some/where/c.sqlite");
  x.set("/xdg");
  h.set("/home/u");
  EXPECT_EQ(default_cache_path(), "/some/where/c.sqlite");
  a.unset();
  EXPECT_EQ(default_cache_path(), "/xdg/attnjit/cache.sqlite");
  x.set("relative/ignored");
  EXPECT_EQ(default_cache_path(), "/home/u/.cache/attnjit/cache.sqlite");
  x.set("");
  a.set("");
  EXPECT_EQ(default_cache_path(), "/home/u/.cache/attnjit/cache.sqlite");
  h.unset();
  EXPECT_FALSE(default_cache_path().empty()); // from the password database
}

TEST(CacheStore, DefaultPathIsUsable) {
  TempDir dir;
  EnvGuard a("ATTNJIT_CACHE");
  a.set(dir.file("deep/er/cache.sqlite").c_str());
  Warnings w;
  auto store = Store::open(default_cache_path(), options(w));
  store->put_binary(make_binary("k", 10, 1));
  EXPECT_TRUE(exists(dir.file("deep/er/cache.sqlite")));
}

TEST(CacheStore, ManyThreadsShareOneStore) {
  TempDir dir;
  Warnings w;
  auto store = Store::open(dir.file("c.sqlite"), options(w));
  constexpr int kThreads = 8, kEach = 25;
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        std::string key = cat("t", t, "-", i);
        BinaryRecord r = make_binary(key, 500 + 97 * i, t * 1000 + i);
        store->put_binary(r);
        store->put_candidate(make_candidate(cat("tk", t), key, i));
        auto got = store->get_binary(key);
        if (!got || !same_binary(*got, r)) ++bad;
        // Read what another thread may have written.
        std::string other = cat("t", (t + 1) % kThreads, "-", i);
        if (auto o = store->get_binary(other)) {
          if (!same_binary(*o, make_binary(other, 500 + 97 * i, ((t + 1) % kThreads) * 1000 + i)))
            ++bad;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(store->list_binaries().size(), static_cast<size_t>(kThreads * kEach));
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(store->candidates(cat("tk", t)).size(), static_cast<size_t>(kEach));
  }
  EXPECT_TRUE(store->integrity_check().empty());
  EXPECT_EQ(w.size(), 0u) << w.joined();
}

// --- export and layering ---

TEST(CacheLayered, ExportIsDeployableAndOpensReadOnly) {
  TempDir dir;
  Warnings w;
  std::string deployed = dir.file("deployed.sqlite");
  {
    auto store = Store::open(dir.file("build.sqlite"), options(w));
    store->put_binary(make_binary("d1", 4000, 1));
    store->put_winner(make_winner("tk", "tile", 1));
    store->export_to(deployed);
    EXPECT_THROW(store->export_to(deployed), Error); // never overwrites
  }
  {
    RawDb raw(deployed, SQLITE_OPEN_READONLY);
    EXPECT_EQ(raw.integer("PRAGMA application_id"), kApplicationId);
    EXPECT_EQ(raw.integer("PRAGMA user_version"), kSchemaVersion);
  }
  // The file is in rollback-journal mode: byte 18 and 19 of the header are 1, not 2 (WAL).
  std::string header = read_file(deployed).substr(0, 100);
  EXPECT_EQ(header[18], 1);
  EXPECT_EQ(header[19], 1);

  auto before = list_dir(dir.path());
  {
    auto ro = Store::open(deployed, options(w, true));
    ASSERT_EQ(ro->state(), StoreState::ready);
    auto got = ro->get_binary("d1");
    ASSERT_TRUE(got);
    EXPECT_TRUE(same_binary(*got, make_binary("d1", 4000, 1)));
  }
  EXPECT_EQ(list_dir(dir.path()), before); // not even a -shm appeared
  EXPECT_EQ(w.size(), 0u) << w.joined();
}

TEST(CacheLayered, ReadsLocalThenDeployedWritesLocal) {
  TempDir dir;
  Warnings w;
  std::string deployed = dir.file("deployed.sqlite");
  std::string local = dir.file("local/cache.sqlite");
  {
    auto build = Store::open(dir.file("build.sqlite"), options(w));
    build->put_binary(make_binary("shared", 3000, 1));
    build->put_binary(make_binary("deployed-only", 3000, 2));
    build->put_candidate(make_candidate("tk", "t1", 10));
    build->put_candidate(make_candidate("tk", "t2", 20));
    build->put_winner(make_winner("tk", "t1", 10));
    build->export_to(deployed);
  }
  {
    auto l = Store::open(local, options(w));
    l->put_binary(make_binary("shared", 5000, 7)); // local copy differs
    l->put_binary(make_binary("local-only", 3000, 3));
    l->put_candidate(make_candidate("tk", "t2", 15));
    l->put_candidate(make_candidate("tk", "t3", 30));
  }
  std::string deployed_bytes = read_file(deployed);

  auto cache = LayeredStore::open(local, deployed, options(w));
  ASSERT_NE(cache->local(), nullptr);
  ASSERT_NE(cache->deployed(), nullptr);
  EXPECT_TRUE(cache->deployed()->read_only());
  auto shared = cache->get_binary("shared");
  ASSERT_TRUE(shared);
  EXPECT_TRUE(same_binary(*shared, make_binary("shared", 5000, 7)));
  EXPECT_TRUE(cache->get_binary("deployed-only"));
  EXPECT_TRUE(cache->get_binary("local-only"));
  EXPECT_FALSE(cache->get_binary("nowhere"));

  EXPECT_TRUE(cache->put_binary(make_binary("new", 100, 9)));
  EXPECT_TRUE(cache->local()->get_binary("new"));
  EXPECT_FALSE(cache->deployed()->get_binary("new"));

  auto cands = cache->candidates("tk");
  ASSERT_EQ(cands.size(), 3u);
  EXPECT_EQ(cands[0].tile, "t1");
  EXPECT_EQ(cands[0].median_us, 10);
  EXPECT_EQ(cands[1].median_us, 15); // local replaces deployed
  EXPECT_EQ(cands[2].tile, "t3");

  ASSERT_TRUE(cache->winner("tk"));
  EXPECT_EQ(cache->winner("tk")->tile, "t1"); // from deployed
  EXPECT_TRUE(cache->put_winner(make_winner("tk", "t2", 15)));
  EXPECT_EQ(cache->winner("tk")->tile, "t2"); // local wins
  EXPECT_TRUE(cache->put_candidate(make_candidate("tk", "t4", 40)));
  EXPECT_EQ(cache->candidates("tk").size(), 4u);

  cache.reset();
  EXPECT_TRUE(read_file(deployed) == deployed_bytes);
  EXPECT_EQ(w.size(), 0u) << w.joined();
}

TEST(CacheLayered, DamagedLocalFallsBackToDeployed) {
  TempDir dir;
  Warnings w;
  std::string deployed = dir.file("deployed.sqlite");
  std::string local = dir.file("local.sqlite");
  {
    auto build = Store::open(dir.file("build.sqlite"), options(w));
    build->put_binary(make_binary("k", 3000, 1));
    build->export_to(deployed);
  }
  auto cache = LayeredStore::open(local, deployed, options(w));
  ASSERT_TRUE(cache->put_binary(make_binary("k", 3000, 1)));
  {
    RawDb raw(local);
    raw.update_blob("UPDATE binary_blobs SET cubin = ?1 WHERE key = ?2", bytes(3000, 42), "k");
  }
  auto got = cache->get_binary("k");
  ASSERT_TRUE(got);
  EXPECT_TRUE(same_binary(*got, make_binary("k", 3000, 1)));
  EXPECT_TRUE(w.contains("checksum"));
}

TEST(CacheLayered, MissingPiecesAreReportedNotFatal) {
  TempDir dir;
  Warnings w;
  write_file(dir.file("plain"), "x");
  // The local store cannot be created (its directory would be under a regular file), and the
  // deployed one does not exist: the facade still answers, with misses.
  auto cache = LayeredStore::open(dir.file("plain/sub/c.sqlite"), dir.file("nope.sqlite"),
                                  options(w));
  EXPECT_EQ(cache->local(), nullptr);
  ASSERT_NE(cache->deployed(), nullptr);
  EXPECT_EQ(cache->deployed()->state(), StoreState::unavailable);
  EXPECT_FALSE(cache->get_binary("k"));
  EXPECT_FALSE(cache->put_binary(make_binary("k", 10, 1)));
  EXPECT_FALSE(cache->put_winner(make_winner("tk", "t", 1)));
  EXPECT_TRUE(cache->candidates("tk").empty());
  EXPECT_GE(w.size(), 2u);
  EXPECT_FALSE(exists(dir.file("nope.sqlite")));

  // Neither layer at all.
  auto none = LayeredStore::open("", "", options(w));
  EXPECT_FALSE(none->get_binary("k"));
  EXPECT_FALSE(none->put_binary(make_binary("k", 10, 1)));
}

} // namespace
} // namespace attnjit::cache::testing
