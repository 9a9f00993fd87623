// Damaged, foreign, truncated, newer and read-only files: a miss and a report, never a crash or
// a stale hit, and never a change to a file the store must not touch.
#include "cache_test_util.h"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

namespace attnjit::cache::testing {
namespace {

constexpr const char kSetCubin[] = "UPDATE binary_blobs SET cubin = ?1 WHERE key = ?2";
constexpr const char kSetChecksum[] = "UPDATE binaries SET cubin_xxh3 = ?1 WHERE key = ?2";
constexpr const char kCountKey[] =
    "SELECT (SELECT count(*) FROM binaries WHERE key = ?1) + "
    "(SELECT count(*) FROM binary_blobs WHERE key = ?1)";

// A real cache file with `n` binaries of `size` bytes, closed (so its WAL is checkpointed).
void make_cache(const std::string& path, int n, size_t size) {
  Warnings w;
  auto store = Store::open(path, options(w));
  for (int i = 0; i < n; ++i) store->put_binary(make_binary(cat("k", i), size, i));
  store->put_candidate(make_candidate("tk", "t", 1));
  store->put_winner(make_winner("tk", "t", 1));
}

struct FileSnapshot {
  std::string bytes;
  struct timespec mtime {};
  off_t size = 0;
  static FileSnapshot of(const std::string& path) {
    FileSnapshot s;
    s.bytes = read_file(path);
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) {
      s.mtime = st.st_mtim;
      s.size = st.st_size;
    }
    return s;
  }
  bool operator==(const FileSnapshot& o) const {
    return bytes == o.bytes && size == o.size && mtime.tv_sec == o.mtime.tv_sec &&
           mtime.tv_nsec == o.mtime.tv_nsec;
  }
};

TEST(CacheDamage, FlippedBlobBytesAreAMissAndTheRowIsDeleted) {
  TempDir dir;
  Warnings w;
  std::string path = dir.file("c.sqlite");
  auto store = Store::open(path, options(w));
  BinaryRecord good = make_binary("victim", 8192, 5);
  store->put_binary(good);
  store->put_binary(make_binary("bystander", 8192, 6));
  {
    RawDb raw(path);
    std::string cubin = raw.blob("SELECT cubin FROM binary_blobs WHERE key = ?1", "victim");
    ASSERT_EQ(cubin, good.cubin);
    cubin[100] ^= 0x01; // one bit
    cubin[8000] ^= static_cast<char>(0xff);
    raw.update_blob(kSetCubin, cubin, "victim");
  }
  EXPECT_FALSE(store->get_binary("victim").has_value());
  EXPECT_TRUE(w.contains("victim"));
  EXPECT_TRUE(w.contains("checksum mismatch"));
  {
    RawDb raw(path);
    std::string key = "victim";
    EXPECT_EQ(raw.integer(kCountKey, &key), 0); // metadata and blob both gone
  }
  EXPECT_TRUE(store->get_binary("bystander"));
  EXPECT_TRUE(store->integrity_check().empty());
  // The key can be written again.
  store->put_binary(good);
  EXPECT_TRUE(store->get_binary("victim"));
}

TEST(CacheDamage, ShortenedBlobTamperedChecksumAndMissingBlob) {
  TempDir dir;
  Warnings w;
  std::string path = dir.file("c.sqlite");
  auto store = Store::open(path, options(w));
  for (const char* k : {"short", "sum", "noblob", "ptx"}) {
    store->put_binary(make_binary(k, 4096, 1));
  }
  {
    RawDb raw(path);
    raw.update_blob(kSetCubin, make_binary("short", 4096, 1).cubin.substr(0, 4000), "short");
    raw.update_blob(kSetChecksum, std::string(16, '\0'), "sum");
    raw.exec("DELETE FROM binary_blobs WHERE key = 'noblob'");
    raw.update_blob("UPDATE binary_blobs SET ptx = ?1 WHERE key = ?2", "garbage", "ptx");
  }
  auto problems = store->integrity_check();
  EXPECT_EQ(problems.size(), 4u);
  for (const char* k : {"short", "sum", "noblob", "ptx"}) {
    EXPECT_FALSE(store->get_binary(k).has_value()) << k;
    EXPECT_TRUE(w.contains(k)) << k;
  }
  EXPECT_TRUE(store->integrity_check().empty());
  EXPECT_TRUE(store->list_binaries().empty());
}

TEST(CacheDamage, IntegrityCheckReportsAndRepairs) {
  TempDir dir;
  Warnings w;
  std::string path = dir.file("c.sqlite");
  auto store = Store::open(path, options(w));
  for (int i = 0; i < 5; ++i) store->put_binary(make_binary(cat("k", i), 3000, i));
  EXPECT_TRUE(store->integrity_check().empty());
  {
    RawDb raw(path);
    raw.update_blob(kSetCubin, bytes(3000, 77), "k1");
    raw.exec("DELETE FROM binaries WHERE key = 'k3'"); // orphan blob
  }
  auto problems = store->integrity_check();
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_NE(problems[0].find("k1"), std::string::npos);
  EXPECT_NE(problems[1].find("k3"), std::string::npos);
  EXPECT_EQ(store->integrity_check(/*repair=*/true).size(), 2u);
  EXPECT_TRUE(store->integrity_check().empty());
  EXPECT_EQ(store->list_binaries().size(), 3u);
  // list_binaries(true) leaves out (and reports) what it cannot verify.
  {
    RawDb raw(path);
    raw.update_blob(kSetCubin, bytes(3000, 78), "k4");
  }
  w.clear();
  EXPECT_EQ(store->list_binaries(true).size(), 2u);
  EXPECT_TRUE(w.contains("k4"));
}

void expect_moved_aside_and_fresh(const std::string& path, Warnings& w, const TempDir& dir,
                                  const std::string& original) {
  auto store = Store::open(path, options(w));
  ASSERT_EQ(store->state(), StoreState::ready);
  std::string aside = store->moved_aside_to();
  ASSERT_FALSE(aside.empty()) << w.joined();
  EXPECT_EQ(aside.rfind(path + ".corrupt-", 0), 0u) << aside;
  EXPECT_TRUE(w.contains("moved it aside")) << w.joined();
  EXPECT_TRUE(read_file(aside) == original); // kept as it was, for a post-mortem
  // One file aside (with the -wal/-shm SQLite made while looking at it, if any).
  size_t main_files = 0;
  for (const std::string& n : with_prefix(dir.path(), "c.sqlite.corrupt-")) {
    bool side = n.size() > 4 && (n.compare(n.size() - 4, 4, "-wal") == 0 ||
                                 n.compare(n.size() - 4, 4, "-shm") == 0);
    if (!side) ++main_files;
  }
  EXPECT_EQ(main_files, 1u);
  // A fresh, working store.
  EXPECT_TRUE(store->list_binaries().empty());
  EXPECT_FALSE(store->get_binary("k0"));
  store->put_binary(make_binary("new", 2000, 1));
  EXPECT_TRUE(store->get_binary("new"));
  EXPECT_TRUE(store->integrity_check().empty());
  RawDb raw(path);
  EXPECT_EQ(raw.integer("PRAGMA application_id"), kApplicationId);
}

TEST(CacheDamage, TruncatedFileIsMovedAside) {
  TempDir dir;
  std::string real = dir.file("real.sqlite");
  make_cache(real, 30, 20000);
  std::string data = read_file(real);
  ASSERT_GT(data.size(), 500000u);
  std::string half = data.substr(0, data.size() / 2);
  std::string path = dir.file("c.sqlite");
  write_file(path, half);
  Warnings w;
  expect_moved_aside_and_fresh(path, w, dir, half);
}

TEST(CacheDamage, TruncatedToOnePageIsMovedAside) {
  TempDir dir;
  std::string real = dir.file("real.sqlite");
  make_cache(real, 5, 20000);
  std::string path = dir.file("c.sqlite");
  std::string head = read_file(real).substr(0, 4096);
  write_file(path, head);
  Warnings w;
  expect_moved_aside_and_fresh(path, w, dir, head);
}

TEST(CacheDamage, RandomBytesAreMovedAside) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  std::string junk = bytes(65536, 1234);
  write_file(path, junk);
  Warnings w;
  expect_moved_aside_and_fresh(path, w, dir, junk);
}

TEST(CacheDamage, ValidHeaderWithGarbageBodyIsMovedAside) {
  TempDir dir;
  std::string real = dir.file("real.sqlite");
  make_cache(real, 10, 20000);
  std::string data = read_file(real);
  // Keep the 100-byte header, scribble over everything else.
  std::string junk = bytes(data.size() - 100, 99);
  std::string mangled = data.substr(0, 100) + junk;
  std::string path = dir.file("c.sqlite");
  write_file(path, mangled);
  Warnings w;
  expect_moved_aside_and_fresh(path, w, dir, mangled);
}

TEST(CacheDamage, ForeignSqliteDatabaseIsMovedAside) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  {
    RawDb raw(path);
    raw.exec("PRAGMA application_id = 305419896"); // 0x12345678
    raw.exec("CREATE TABLE precious (x TEXT)");
    raw.exec("INSERT INTO precious VALUES ('someone else''s data')");
  }
  std::string original = read_file(path);
  Warnings w;
  expect_moved_aside_and_fresh(path, w, dir, original);
  EXPECT_TRUE(w.contains("0x12345678")) << w.joined();
  auto aside = with_prefix(dir.path(), "c.sqlite.corrupt-");
  ASSERT_GE(aside.size(), 1u);
  RawDb moved(dir.file(aside[0]), SQLITE_OPEN_READONLY);
  EXPECT_EQ(moved.integer("SELECT count(*) FROM precious"), 1);
}

TEST(CacheDamage, ForeignDatabaseWithoutApplicationIdIsMovedAside) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  {
    RawDb raw(path);
    raw.exec("CREATE TABLE binaries (key TEXT)"); // even with a familiar table name
  }
  std::string original = read_file(path);
  Warnings w;
  expect_moved_aside_and_fresh(path, w, dir, original);
}

TEST(CacheDamage, OursWithMissingTableIsMovedAside) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  make_cache(path, 1, 100);
  {
    RawDb raw(path);
    raw.exec("DROP TABLE tuning_winners");
    raw.exec("PRAGMA journal_mode = DELETE");
  }
  std::string original = read_file(path);
  Warnings w;
  expect_moved_aside_and_fresh(path, w, dir, original);
  EXPECT_TRUE(w.contains("tuning_winners"));
}

TEST(CacheDamage, WalAndShmMoveAsideWithTheFile) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  write_file(path, bytes(8192, 5));
  write_file(path + "-wal", bytes(8192, 6));
  write_file(path + "-shm", bytes(32768, 7));
  Warnings w;
  auto store = Store::open(path, options(w));
  std::string aside = store->moved_aside_to();
  ASSERT_FALSE(aside.empty());
  EXPECT_TRUE(read_file(aside + "-wal") == bytes(8192, 6));
  // The -shm is only an index SQLite rebuilds from the -wal: it moves, its bytes may not stay.
  EXPECT_TRUE(exists(aside + "-shm"));
  EXPECT_FALSE(exists(path + "-wal") && read_file(path + "-wal") == bytes(8192, 6));
  store->put_binary(make_binary("k", 100, 1));
  EXPECT_TRUE(store->get_binary("k"));
}

TEST(CacheDamage, DamageDuringUseNeverGivesWrongBytes) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  make_cache(path, 10, 20000);
  Warnings w;
  auto store = Store::open(path, options(w));
  ASSERT_TRUE(store->get_binary("k3"));
  // Scribble over the file while it is open (as a failing disk or a stray writer would).
  {
    std::string data = read_file(path);
    write_file(path, data.substr(0, 100) + bytes(data.size() - 100, 3));
  }
  // Reads return the right bytes or miss; writes commit or throw Error. Nothing crashes.
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 10; ++i) {
      auto got = store->get_binary(cat("k", i));
      if (got) {
        EXPECT_TRUE(same_binary(*got, make_binary(cat("k", i), 20000, i)));
      }
    }
    try {
      store->put_binary(make_binary("after", 1000, 1));
      if (auto got = store->get_binary("after")) {
        EXPECT_TRUE(same_binary(*got, make_binary("after", 1000, 1)));
      }
    } catch (const Error&) {
    }
    store->list_binaries(true);
    store->integrity_check();
  }
  store.reset();
  // The next open sees the damage (if the store has not already replaced the file) and ends up
  // with a working cache.
  Warnings w2;
  auto again = Store::open(path, options(w2));
  again->put_binary(make_binary("later", 1000, 2));
  EXPECT_TRUE(again->get_binary("later"));
  EXPECT_TRUE(again->integrity_check().empty()) << w.joined() << w2.joined();
  EXPECT_FALSE(with_prefix(dir.path(), "c.sqlite.corrupt-").empty());
}

TEST(CacheDamage, FileDeletedWhileOpenIsRecreated) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  Warnings w;
  auto store = Store::open(path, options(w));
  store->put_binary(make_binary("before", 1000, 1));
  for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((path + suffix).c_str());
  EXPECT_FALSE(store->get_binary("before"));
  store->put_binary(make_binary("after", 1000, 2));
  EXPECT_TRUE(store->get_binary("after"));
  store.reset();
  auto again = Store::open(path, options(w));
  EXPECT_TRUE(again->get_binary("after"));
  EXPECT_FALSE(again->get_binary("before"));
  EXPECT_TRUE(again->integrity_check().empty());
}

TEST(CacheReadOnly, FollowsAnAtomicallyReplacedFile) {
  TempDir dir;
  std::string deployed = dir.file("deployed.sqlite");
  Warnings w;
  {
    auto build = Store::open(dir.file("v1.sqlite"), options(w));
    build->put_binary(make_binary("old", 1000, 1));
    build->export_to(deployed);
  }
  auto ro = Store::open(deployed, options(w, true));
  EXPECT_TRUE(ro->get_binary("old"));
  {
    auto build = Store::open(dir.file("v2.sqlite"), options(w));
    build->put_binary(make_binary("new", 1000, 2));
    build->export_to(dir.file("next.sqlite"));
  }
  ASSERT_EQ(std::rename(dir.file("next.sqlite").c_str(), deployed.c_str()), 0);
  EXPECT_TRUE(ro->get_binary("new"));
  EXPECT_FALSE(ro->get_binary("old"));
  EXPECT_EQ(w.size(), 0u) << w.joined();
}

TEST(CacheDamage, EmptyFileIsVersionZeroAndMigrated) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  write_file(path, "");
  Warnings w;
  {
    auto store = Store::open(path, options(w));
    EXPECT_TRUE(store->moved_aside_to().empty());
    store->put_binary(make_binary("k", 100, 1));
  }
  EXPECT_EQ(w.size(), 0u) << w.joined();
  RawDb raw(path);
  EXPECT_EQ(raw.integer("PRAGMA application_id"), kApplicationId);
  EXPECT_EQ(raw.integer("PRAGMA user_version"), kSchemaVersion);
}

TEST(CacheDamage, SchemaLessVersionZeroDatabaseIsMigrated) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  {
    RawDb raw(path);
    raw.exec("CREATE TABLE t (x)"); // makes a real, non-empty database file ...
    raw.exec("DROP TABLE t");       // ... with no schema left: version 0
  }
  ASSERT_GT(read_file(path).size(), 0u);
  Warnings w;
  {
    auto store = Store::open(path, options(w));
    EXPECT_TRUE(store->moved_aside_to().empty());
    store->put_binary(make_binary("k", 100, 1));
    EXPECT_TRUE(store->get_binary("k"));
  }
  EXPECT_EQ(w.size(), 0u) << w.joined();
  EXPECT_TRUE(with_prefix(dir.path(), "c.sqlite.corrupt-").empty());
  RawDb raw(path);
  EXPECT_EQ(raw.integer("PRAGMA user_version"), kSchemaVersion);
  EXPECT_EQ(raw.integer("SELECT count(*) FROM sqlite_master WHERE type = 'table'"), 4);
}

TEST(CacheDamage, CurrentVersionIsNotMigratedAgain) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  make_cache(path, 3, 1000);
  Warnings w;
  auto store = Store::open(path, options(w));
  EXPECT_EQ(store->list_binaries().size(), 3u);
  EXPECT_EQ(w.size(), 0u) << w.joined();
}

TEST(CacheDamage, NewerSchemaIsLeftAloneAndMisses) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  make_cache(path, 3, 1000);
  {
    RawDb raw(path);
    raw.exec("PRAGMA user_version = 99");
    raw.exec("PRAGMA journal_mode = DELETE");
  }
  FileSnapshot before = FileSnapshot::of(path);
  Warnings w;
  {
    auto store = Store::open(path, options(w));
    EXPECT_EQ(store->state(), StoreState::newer);
    EXPECT_TRUE(store->moved_aside_to().empty());
    EXPECT_TRUE(w.contains("newer")) << w.joined();
    EXPECT_FALSE(store->get_binary("k0"));
    EXPECT_TRUE(store->list_binaries().empty());
    EXPECT_FALSE(store->winner("tk"));
    EXPECT_THROW(store->put_binary(make_binary("x", 10, 1)), Error);
    EXPECT_THROW(store->put_candidate(make_candidate("tk", "x", 1)), Error);
    EXPECT_THROW(store->erase_binaries(BinaryFilter{}), Error);
    EXPECT_FALSE(store->integrity_check().empty());
  }
  {
    auto ro = Store::open(path, options(w, true));
    EXPECT_EQ(ro->state(), StoreState::newer);
    EXPECT_FALSE(ro->get_binary("k0"));
  }
  EXPECT_TRUE(FileSnapshot::of(path) == before);
  EXPECT_TRUE(with_prefix(dir.path(), "c.sqlite.corrupt-").empty());
  RawDb raw(path);
  EXPECT_EQ(raw.integer("PRAGMA user_version"), 99);
}

TEST(CacheReadOnly, NeverModifiesTheFile) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  make_cache(path, 8, 5000); // a WAL-mode file, as a writable store leaves it
  FileSnapshot before = FileSnapshot::of(path);
  Warnings w;
  {
    auto ro = Store::open(path, options(w, true));
    ASSERT_EQ(ro->state(), StoreState::ready);
    EXPECT_TRUE(ro->read_only());
    for (int i = 0; i < 8; ++i) {
      auto got = ro->get_binary(cat("k", i));
      ASSERT_TRUE(got);
      EXPECT_TRUE(same_binary(*got, make_binary(cat("k", i), 5000, i)));
    }
    EXPECT_EQ(ro->candidates("tk").size(), 1u);
    EXPECT_TRUE(ro->winner("tk"));
    EXPECT_EQ(ro->list_binaries(true).size(), 8u);
    EXPECT_TRUE(ro->integrity_check(/*repair=*/true).empty());
    EXPECT_THROW(ro->put_binary(make_binary("x", 10, 1)), Error);
    EXPECT_THROW(ro->put_candidate(make_candidate("tk", "x", 1)), Error);
    EXPECT_THROW(ro->put_winner(make_winner("tk", "x", 1)), Error);
    EXPECT_THROW(ro->erase_binaries(BinaryFilter{}), Error);
    EXPECT_THROW(ro->erase_tuning(TuningFilter{}), Error);
    EXPECT_THROW(ro->vacuum(), Error);
  }
  EXPECT_TRUE(FileSnapshot::of(path) == before);
  EXPECT_EQ(w.size(), 0u) << w.joined();
}

TEST(CacheReadOnly, DamagedRowIsAMissButStays) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  make_cache(path, 3, 5000);
  {
    RawDb raw(path);
    raw.update_blob(kSetCubin, bytes(5000, 12345), "k1");
    raw.exec("PRAGMA journal_mode = DELETE");
  }
  FileSnapshot before = FileSnapshot::of(path);
  Warnings w;
  {
    auto ro = Store::open(path, options(w, true));
    EXPECT_FALSE(ro->get_binary("k1"));
    EXPECT_FALSE(ro->get_binary("k1"));
    EXPECT_TRUE(ro->get_binary("k0"));
    EXPECT_EQ(ro->integrity_check(/*repair=*/true).size(), 1u);
  }
  EXPECT_EQ(w.size(), 1u) << w.joined(); // reported once
  EXPECT_TRUE(FileSnapshot::of(path) == before);
  RawDb raw(path);
  std::string key = "k1";
  EXPECT_EQ(raw.integer(kCountKey, &key), 2);
}

TEST(CacheReadOnly, BadFilesAreEmptyAndNeverRenamed) {
  TempDir dir;
  std::string junk_path = dir.file("junk.sqlite");
  std::string foreign_path = dir.file("foreign.sqlite");
  std::string truncated_path = dir.file("truncated.sqlite");
  write_file(junk_path, bytes(20000, 3));
  {
    RawDb raw(foreign_path);
    raw.exec("PRAGMA application_id = 7");
    raw.exec("CREATE TABLE t (x)");
  }
  make_cache(dir.file("real.sqlite"), 20, 20000);
  std::string real = read_file(dir.file("real.sqlite"));
  write_file(truncated_path, real.substr(0, real.size() / 2));

  for (const std::string& p : {junk_path, foreign_path, truncated_path}) {
    FileSnapshot before = FileSnapshot::of(p);
    Warnings w;
    {
      auto ro = Store::open(p, options(w, true));
      EXPECT_EQ(ro->state(), StoreState::unavailable) << p;
      EXPECT_FALSE(ro->get_binary("k0"));
      EXPECT_TRUE(ro->candidates("tk").empty());
      EXPECT_THROW(ro->put_binary(make_binary("x", 1, 1)), Error);
    }
    EXPECT_TRUE(w.contains("left as it is")) << p << ": " << w.joined();
    EXPECT_TRUE(FileSnapshot::of(p) == before) << p;
  }
  EXPECT_TRUE(with_prefix(dir.path(), "junk.sqlite.corrupt").empty());
  EXPECT_TRUE(with_prefix(dir.path(), "foreign.sqlite.corrupt").empty());
  EXPECT_TRUE(with_prefix(dir.path(), "truncated.sqlite.corrupt").empty());
}

TEST(CacheReadOnly, MissingFileIsEmptyAndNotCreated) {
  TempDir dir;
  Warnings w;
  auto ro = Store::open(dir.file("absent/c.sqlite"), options(w, true));
  EXPECT_EQ(ro->state(), StoreState::unavailable);
  EXPECT_FALSE(ro->get_binary("k"));
  EXPECT_TRUE(w.contains("does not exist"));
  EXPECT_FALSE(exists(dir.file("absent")));
}

TEST(CacheReadOnly, PathsWithUriCharactersWork) {
  TempDir dir;
  std::string path = dir.file("we?ird#na%me&mode=rw.sqlite");
  make_cache(path, 2, 100);
  Warnings w;
  auto ro = Store::open(path, options(w, true));
  ASSERT_EQ(ro->state(), StoreState::ready) << w.joined();
  EXPECT_TRUE(ro->get_binary("k1"));
  EXPECT_THROW(ro->put_binary(make_binary("x", 1, 1)), Error);
}

} // namespace
} // namespace attnjit::cache::testing
