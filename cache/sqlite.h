// Thin RAII wrappers over the SQLite C API, private to the cache library.
//
// Every statement is prepared from a string literal that the caller owns (a named constant), and
// values travel only through bindings. A Connection keeps the statements it has prepared, keyed
// by the literal's address, for the life of the connection.
#pragma once

#include "cache/store.h"

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace attnjit::cache::detail {

// A failed SQLite call. `code` is the extended result code.
struct SqliteError : Error {
  SqliteError(int code, const std::string& message) : Error(message), code(code) {}
  int code;
  int primary() const { return code & 0xff; }
  bool busy() const { return primary() == SQLITE_BUSY || primary() == SQLITE_LOCKED; }
  // The file is damaged or is not a database.
  bool corrupt() const {
    return primary() == SQLITE_CORRUPT || primary() == SQLITE_NOTADB || primary() == SQLITE_FORMAT;
  }
};

class Connection;

// A prepared statement in use. Resets the statement and clears its bindings when it goes out of
// scope, so the cached statement is ready for the next user. `in_use` (the cache's flag) is
// cleared then; a statement that is not cached (`in_use` null) is finalized instead.
class Statement {
 public:
  Statement(Connection& conn, sqlite3_stmt* stmt, bool* in_use)
      : conn_(&conn), stmt_(stmt), in_use_(in_use) {}
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind_text(int index, std::string_view text);
  Statement& bind_blob(int index, std::string_view bytes); // an empty string binds a 0-byte blob
  Statement& bind_int(int index, int64_t value);
  Statement& bind_real(int index, double value);
  Statement& bind_null(int index);
  Statement& bind_optional_text(int index, const std::optional<std::string>& text); // nullopt: NULL
  Statement& bind_optional_int(int index, const std::optional<int64_t>& value); // nullopt: NULL

  // Advances; true while a row is available. Throws SqliteError.
  bool step();
  // Steps to completion, ignoring rows.
  void run();

  bool is_null(int col) const;
  std::string text(int col) const;
  std::string blob(int col) const;
  int64_t integer(int col) const;
  double real(int col) const;

 private:
  Connection* conn_;
  sqlite3_stmt* stmt_;
  bool* in_use_;
};

class Connection {
 public:
  // sqlite3_open_v2 with extended result codes. Throws SqliteError.
  static std::unique_ptr<Connection> open(const std::string& filename, int flags);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  sqlite3* handle() const { return db_; }
  void busy_timeout(int ms);

  // The cached statement for `sql` (a string literal); a private copy if the cached one is still
  // in use further up the stack. Throws SqliteError.
  Statement prepare(const char* sql);
  // Runs one statement that returns no rows (or whose rows are ignored).
  void exec(const char* sql);
  // The first column of the first row of `sql`, as an integer (0 if there is no row).
  int64_t query_int(const char* sql);
  int64_t changes() const;
  // Rolls back an open transaction, ignoring errors.
  void rollback_quietly() noexcept;

  // Closes without the checkpoint SQLite otherwise runs when the last connection to a WAL file
  // closes (used before fork, where speed matters and the next writer checkpoints anyway).
  void close_without_checkpoint() noexcept;
  // Forgets the handle without any call into SQLite: for a connection inherited across a fork,
  // which must not be used, finalized or closed by the child.
  void abandon() noexcept;

  [[noreturn]] void fail(int rc, std::string_view what) const;

 private:
  explicit Connection(sqlite3* db) : db_(db) {}
  void close() noexcept;
  sqlite3* db_;
  struct Cached {
    sqlite3_stmt* stmt = nullptr;
    bool in_use = false;
  };
  std::unordered_map<const char*, Cached> statements_;
};

} // namespace attnjit::cache::detail
