// Many processes and threads on one cache file: concurrent writers, writers killed mid-write,
// concurrent recovery of a damaged file, and stores used across fork().
#include "cache_test_util.h"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <thread>

namespace attnjit::cache::testing {
namespace {

// Runs `body` in a child process and returns its pid; the child exits with body's value (3 if it
// threw). Children report through their exit status, since a gtest failure in a child is lost.
pid_t spawn(const std::function<int()>& body) {
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(50); // a hung child fails the test instead of hanging it
    int rc = 4;
    try {
      rc = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child %d: %s\n", ::getpid(), e.what());
      rc = 3;
    } catch (...) {
      rc = 3;
    }
    std::fflush(stderr);
    ::_exit(rc);
  }
  return pid;
}

// The exit status of `pid`, or 128 + the signal that killed it.
int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// A pipe whose write end the parent closes to release every child at the same moment.
struct StartGate {
  int fds[2] = {-1, -1};
  StartGate() { EXPECT_EQ(::pipe(fds), 0); }
  ~StartGate() {
    for (int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
  }
  void wait_in_child() {
    ::close(fds[1]);
    char c;
    while (::read(fds[0], &c, 1) < 0 && errno == EINTR) {
    }
  }
  void open_gate() {
    ::close(fds[1]);
    fds[1] = -1;
  }
};

std::string proc_key(int proc, int i) {
  return cat("p", proc, "-b", i);
}
uint64_t proc_seed(int proc, int i) { return static_cast<uint64_t>(proc) * 100000 + i + 1; }
// 1 KiB to 256 KiB.
size_t proc_size(int proc, int i) { return 1024 + mix(proc_seed(proc, i)) % (255 * 1024); }
BinaryRecord proc_binary(int proc, int i) {
  return make_binary(proc_key(proc, i), proc_size(proc, i), proc_seed(proc, i));
}
std::string proc_tuning_key(int proc) { return cat("tk-", proc); }

// Options for a child: any warning is a failure, reported on stderr.
OpenOptions strict_options(std::atomic<int>& warnings) {
  OpenOptions o;
  o.warn = [&warnings](std::string_view m) {
    ++warnings;
    std::fprintf(stderr, "child %d warning: %.*s\n", ::getpid(), static_cast<int>(m.size()),
                 m.data());
  };
  return o;
}

TEST(CacheConcurrency, EightProcessesWriteOneFile) {
  TempDir dir;
  // The file does not exist yet: the children also race to create and initialize it.
  std::string path = dir.file("shared/cache.sqlite");
  constexpr int kProcs = 8, kEach = 50;
  StartGate gate;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p) {
    pids.push_back(spawn([&, p] {
      gate.wait_in_child();
      std::atomic<int> warnings{0};
      auto store = Store::open(path, strict_options(warnings));
      for (int i = 0; i < kEach; ++i) {
        store->put_binary(proc_binary(p, i));
        store->put_candidate(make_candidate(proc_tuning_key(p), cat("tile-", i), i));
        if (i % 10 == 9) {
          store->put_winner(make_winner(proc_tuning_key(p), cat("tile-", i), i));
        }
        // Read back something of our own and something another process may have written.
        auto mine = store->get_binary(proc_key(p, i));
        if (!mine || !same_binary(*mine, proc_binary(p, i))) return 10;
        int q = (p + 1) % kProcs;
        if (auto other = store->get_binary(proc_key(q, i))) {
          if (!same_binary(*other, proc_binary(q, i))) return 11;
        }
      }
      return warnings.load() == 0 ? 0 : 12;
    }));
  }
  gate.open_gate();
  for (pid_t pid : pids) EXPECT_EQ(wait_for(pid), 0);

  Warnings w;
  auto store = Store::open(path, options(w));
  int missing = 0, wrong = 0;
  for (int p = 0; p < kProcs; ++p) {
    for (int i = 0; i < kEach; ++i) {
      auto got = store->get_binary(proc_key(p, i));
      if (!got) {
        ++missing;
      } else if (!same_binary(*got, proc_binary(p, i)) ||
                 got->cubin_xxh3 != checksum_hex(proc_binary(p, i).cubin)) {
        ++wrong;
      }
    }
    auto cands = store->candidates(proc_tuning_key(p));
    EXPECT_EQ(cands.size(), static_cast<size_t>(kEach));
    auto win = store->winner(proc_tuning_key(p));
    ASSERT_TRUE(win);
    EXPECT_EQ(win->tile, "tile-49");
  }
  EXPECT_EQ(missing, 0);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(store->list_binaries().size(), static_cast<size_t>(kProcs * kEach));
  EXPECT_EQ(store->stats().candidates, kProcs * kEach);
  auto problems = store->integrity_check();
  EXPECT_TRUE(problems.empty()) << problems.front();
  EXPECT_EQ(w.size(), 0u) << w.joined();
}

TEST(CacheConcurrency, WritersRetryPastBusyTimeout) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  { Store::open(path); } // created up front: this test is about the write path
  constexpr int kProcs = 4, kEach = 30;
  StartGate gate;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p) {
    pids.push_back(spawn([&, p] {
      gate.wait_in_child();
      std::atomic<int> warnings{0};
      OpenOptions o = strict_options(warnings);
      o.busy_timeout_ms = 0; // SQLite gives up at once: only the store's own retries remain
      auto store = Store::open(path, o);
      for (int i = 0; i < kEach; ++i) store->put_binary(proc_binary(p, i));
      return warnings.load() == 0 ? 0 : 12;
    }));
  }
  gate.open_gate();
  for (pid_t pid : pids) EXPECT_EQ(wait_for(pid), 0);
  Warnings w;
  auto store = Store::open(path, options(w));
  EXPECT_EQ(store->list_binaries().size(), static_cast<size_t>(kProcs * kEach));
  EXPECT_TRUE(store->integrity_check().empty());
}

TEST(CacheConcurrency, WriteWaitsForAHeldLockThenGivesUpCleanly) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  Warnings w;
  OpenOptions o = options(w);
  o.busy_timeout_ms = 20;
  auto store = Store::open(path, o);
  {
    // Another connection holds the write lock for 300 ms: longer than busy_timeout, shorter
    // than write_timeout. The put waits it out.
    RawDb raw(path);
    raw.exec("BEGIN IMMEDIATE");
    std::thread release([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      raw.exec("COMMIT");
    });
    auto t0 = std::chrono::steady_clock::now();
    store->put_binary(make_binary("k", 1000, 1));
    auto waited = std::chrono::steady_clock::now() - t0;
    release.join();
    EXPECT_GE(waited, std::chrono::milliseconds(250));
    EXPECT_TRUE(store->get_binary("k"));
  }
  {
    // Held for longer than write_timeout: the put throws, promptly, and the store still works.
    OpenOptions quick = options(w);
    quick.busy_timeout_ms = 20;
    quick.write_timeout_ms = 200;
    auto impatient = Store::open(path, quick);
    RawDb raw(path);
    raw.exec("BEGIN IMMEDIATE");
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_THROW(impatient->put_binary(make_binary("k2", 1000, 2)), Error);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
    // Readers are not blocked by a writer.
    EXPECT_TRUE(impatient->get_binary("k"));
    raw.exec("ROLLBACK");
    impatient->put_binary(make_binary("k2", 1000, 2));
    EXPECT_TRUE(impatient->get_binary("k2"));
  }
  EXPECT_EQ(w.size(), 0u) << w.joined();
}

std::string victim_key(int round, int i) {
  return cat("r", round, "-v", i);
}
uint64_t victim_seed(int round, int i) {
  return 7000000 + static_cast<uint64_t>(round) * 10000 + i;
}
// 64 KiB to 1 MiB: long transactions, so that the kill often lands inside one.
BinaryRecord victim_binary(int round, int i) {
  uint64_t seed = victim_seed(round, i);
  return make_binary(victim_key(round, i), 65536 + mix(seed) % (960 * 1024), seed);
}

TEST(CacheConcurrency, KilledWriterLeavesCacheConsistent) {
  TempDir dir;
  std::string path = dir.file("cache.sqlite");
  constexpr int kRounds = 8;
  std::vector<int> committed(kRounds, -1);
  for (int round = 0; round < kRounds; ++round) {
    int progress[2];
    ASSERT_EQ(::pipe(progress), 0);
    pid_t victim = spawn([&, round] {
      ::close(progress[0]);
      std::atomic<int> warnings{0};
      auto store = Store::open(path, strict_options(warnings));
      for (int i = 0; i < 100000; ++i) {
        store->put_binary(victim_binary(round, i));
        store->put_candidate(make_candidate("victim", victim_key(round, i), i));
        // Reported only once both rows are committed.
        if (::write(progress[1], &i, sizeof i) != sizeof i) return 20;
      }
      return 21;
    });
    // Another writer keeps going while the victim dies.
    pid_t survivor = spawn([&, round] {
      ::close(progress[0]);
      ::close(progress[1]);
      std::atomic<int> warnings{0};
      auto store = Store::open(path, strict_options(warnings));
      for (int i = 0; i < 15; ++i) {
        store->put_binary(make_binary(cat("r", round, "-s", i),
                                      20000 + i * 1000, 900 + i));
      }
      return 0;
    });
    ::close(progress[1]);
    int last = -1, reports = 0;
    const int wanted = 2 + round * 2;
    while (reports < wanted) {
      int i;
      ssize_t n = ::read(progress[0], &i, sizeof i);
      if (n != sizeof i) break;
      last = i;
      ++reports;
    }
    // Kill at a moment that varies from round to round: inside a write more often than not.
    ::usleep(static_cast<useconds_t>(mix(round) % 10000));
    ::kill(victim, SIGKILL);
    EXPECT_EQ(wait_for(victim), 128 + SIGKILL);
    for (int i; ::read(progress[0], &i, sizeof i) == sizeof i;) last = i;
    ::close(progress[0]);
    EXPECT_EQ(wait_for(survivor), 0);
    committed[round] = last;
    ASSERT_GE(last, 0);

    Warnings w;
    auto store = Store::open(path, options(w));
    for (int r = 0; r <= round; ++r) {
      for (int i = 0; i <= committed[r]; ++i) {
        auto got = store->get_binary(victim_key(r, i));
        ASSERT_TRUE(got) << victim_key(r, i);
        EXPECT_TRUE(same_binary(*got, victim_binary(r, i))) << victim_key(r, i);
      }
      // What the victim may have committed without reporting it: whole, or absent.
      if (auto maybe = store->get_binary(victim_key(r, committed[r] + 1))) {
        EXPECT_TRUE(same_binary(*maybe, victim_binary(r, committed[r] + 1)));
      }
      for (int i = 0; i < 15; ++i) {
        EXPECT_TRUE(store->get_binary(cat("r", r, "-s", i)));
      }
    }
    auto problems = store->integrity_check();
    EXPECT_TRUE(problems.empty()) << problems.front();
    EXPECT_EQ(w.size(), 0u) << w.joined();
    // Still writable.
    store->put_binary(make_binary(cat("after-", round), 1000, round));
  }
}

TEST(CacheConcurrency, ProcessesRecoverOneDamagedFileTogether) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  write_file(path, bytes(100000, 31337));
  constexpr int kProcs = 6;
  StartGate gate;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p) {
    pids.push_back(spawn([&, p] {
      gate.wait_in_child();
      OpenOptions o; // the one that moves the file aside warns: allowed here
      o.warn = [](std::string_view m) {
        std::fprintf(stderr, "child %d: %.*s\n", ::getpid(), static_cast<int>(m.size()),
                     m.data());
      };
      auto store = Store::open(path, o);
      store->put_binary(proc_binary(p, 0));
      return store->get_binary(proc_key(p, 0)) ? 0 : 10;
    }));
  }
  gate.open_gate();
  for (pid_t pid : pids) EXPECT_EQ(wait_for(pid), 0);
  // Exactly one file was moved aside: nobody moved another's fresh cache.
  auto aside = with_prefix(dir.path(), "c.sqlite.corrupt-");
  std::string names;
  for (const std::string& n : aside) names += n + " ";
  ASSERT_EQ(aside.size(), 1u) << names;
  EXPECT_TRUE(read_file(dir.file(aside[0])) == bytes(100000, 31337));
  Warnings w;
  auto store = Store::open(path, options(w));
  for (int p = 0; p < kProcs; ++p) EXPECT_TRUE(store->get_binary(proc_key(p, 0))) << p;
  EXPECT_TRUE(store->integrity_check().empty());
}

TEST(CacheConcurrency, StoreKeepsWorkingAcrossFork) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  Warnings w;
  auto store = Store::open(path, options(w));
  store->put_binary(make_binary("parent-1", 5000, 1));
  pid_t child = spawn([&] {
    auto got = store->get_binary("parent-1");
    if (!got || !same_binary(*got, make_binary("parent-1", 5000, 1))) return 10;
    store->put_binary(make_binary("child-1", 6000, 2));
    if (!store->get_binary("child-1")) return 11;
    return 0;
  });
  EXPECT_EQ(wait_for(child), 0);
  auto got = store->get_binary("child-1");
  ASSERT_TRUE(got);
  EXPECT_TRUE(same_binary(*got, make_binary("child-1", 6000, 2)));
  store->put_binary(make_binary("parent-2", 7000, 3));
  EXPECT_TRUE(store->get_binary("parent-2"));
  EXPECT_TRUE(store->integrity_check().empty());
  EXPECT_EQ(w.size(), 0u) << w.joined();
}

TEST(CacheConcurrency, ForkWhileAnotherThreadWrites) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  Warnings w;
  auto store = Store::open(path, options(w));
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; !stop; ++i) {
      store->put_binary(make_binary(cat("w", i), 30000, i));
      written = i + 1;
    }
  });
  constexpr int kForks = 8;
  for (int n = 0; n < kForks; ++n) {
    while (written < 3 * (n + 1)) std::this_thread::yield(); // the writer is busy now
    pid_t child = spawn([&, n] {
      // The writer thread does not exist here, and may have held the store's lock when the
      // parent forked: the store must neither deadlock nor reuse the parent's connection.
      store->put_binary(make_binary(cat("child-", n), 2000, 100 + n));
      return store->get_binary(cat("child-", n)) ? 0 : 10;
    });
    EXPECT_EQ(wait_for(child), 0);
  }
  stop = true;
  writer.join();
  for (int n = 0; n < kForks; ++n) EXPECT_TRUE(store->get_binary(cat("child-", n)));
  for (int i = 0; i < written; ++i) EXPECT_TRUE(store->get_binary(cat("w", i))) << i;
  EXPECT_TRUE(store->integrity_check().empty());
  EXPECT_EQ(w.size(), 0u) << w.joined();
}

#ifdef SYS_fork
TEST(CacheConcurrency, ChildWithoutForkHandlersReopens) {
  TempDir dir;
  std::string path = dir.file("c.sqlite");
  Warnings w;
  auto store = Store::open(path, options(w));
  store->put_binary(make_binary("parent-1", 5000, 1));
  std::fflush(stdout);
  std::fflush(stderr);
  // The raw system call: no pthread_atfork handlers run, so the child inherits the open
  // connection and must notice by its pid.
  pid_t child = static_cast<pid_t>(::syscall(SYS_fork));
  if (child == 0) {
    int rc = 0;
    try {
      if (!store->get_binary("parent-1")) rc = 10;
      store->put_binary(make_binary("child-1", 6000, 2));
    } catch (...) {
      rc = 11;
    }
    ::_exit(rc);
  }
  ASSERT_GT(child, 0);
  EXPECT_EQ(wait_for(child), 0);
  EXPECT_TRUE(store->get_binary("child-1"));
  store->put_binary(make_binary("parent-2", 5000, 3));
  EXPECT_TRUE(store->integrity_check().empty());
  EXPECT_EQ(w.size(), 0u) << w.joined();
}
#endif

} // namespace
} // namespace attnjit::cache::testing
