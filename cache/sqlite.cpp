#include "cache/sqlite.h"

#include <fmt/format.h>

namespace attnjit::cache::detail {

Statement::~Statement() {
  if (in_use_ == nullptr) {
    sqlite3_finalize(stmt_);
    return;
  }
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  *in_use_ = false;
}

Statement& Statement::bind_text(int index, std::string_view text) {
  // A non-null pointer even for "", so that the value is an empty string and not NULL.
  const char* data = text.data() != nullptr ? text.data() : "";
  int rc = sqlite3_bind_text64(stmt_, index, data, text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  if (rc != SQLITE_OK) conn_->fail(rc, "bind");
  return *this;
}

Statement& Statement::bind_blob(int index, std::string_view bytes) {
  int rc = bytes.empty() ? sqlite3_bind_zeroblob(stmt_, index, 0)
                         : sqlite3_bind_blob64(stmt_, index, bytes.data(), bytes.size(),
                                               SQLITE_STATIC);
  if (rc != SQLITE_OK) conn_->fail(rc, "bind");
  return *this;
}

Statement& Statement::bind_int(int index, int64_t value) {
  int rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK) conn_->fail(rc, "bind");
  return *this;
}

Statement& Statement::bind_real(int index, double value) {
  int rc = sqlite3_bind_double(stmt_, index, value);
  if (rc != SQLITE_OK) conn_->fail(rc, "bind");
  return *this;
}

Statement& Statement::bind_null(int index) {
  int rc = sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK) conn_->fail(rc, "bind");
  return *this;
}

Statement& Statement::bind_optional_text(int index, const std::optional<std::string>& text) {
  return text ? bind_text(index, std::string_view(*text)) : bind_null(index);
}

Statement& Statement::bind_optional_int(int index, const std::optional<int64_t>& value) {
  return value ? bind_int(index, *value) : bind_null(index);
}

bool Statement::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  // With the v2 interface, sqlite3_step returns the specific (extended) code itself.
  conn_->fail(rc, sqlite3_sql(stmt_));
}

void Statement::run() {
  while (step()) {
  }
}

bool Statement::is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

std::string Statement::text(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  return p != nullptr ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n))
                      : std::string();
}

std::string Statement::blob(int col) const {
  const void* p = sqlite3_column_blob(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  return p != nullptr ? std::string(static_cast<const char*>(p), static_cast<size_t>(n))
                      : std::string();
}

int64_t Statement::integer(int col) const { return sqlite3_column_int64(stmt_, col); }

double Statement::real(int col) const { return sqlite3_column_double(stmt_, col); }

std::unique_ptr<Connection> Connection::open(const std::string& filename, int flags) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(filename.c_str(), &db, flags | SQLITE_OPEN_EXRESCODE, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    throw SqliteError(rc, fmt::format("open: {}", message));
  }
  sqlite3_extended_result_codes(db, 1);
  return std::unique_ptr<Connection>(new Connection(db));
}

Connection::~Connection() { close(); }

void Connection::close() noexcept {
  if (db_ == nullptr) return;
  for (auto& [sql, cached] : statements_) sqlite3_finalize(cached.stmt);
  statements_.clear();
  sqlite3_close_v2(db_);
  db_ = nullptr;
}

void Connection::close_without_checkpoint() noexcept {
  if (db_ != nullptr) sqlite3_db_config(db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  close();
}

void Connection::abandon() noexcept {
  statements_.clear();
  db_ = nullptr;
}

void Connection::busy_timeout(int ms) { sqlite3_busy_timeout(db_, ms); }

void Connection::fail(int rc, std::string_view what) const {
  int code = rc;
  std::string message = sqlite3_errstr(rc);
  if (db_ != nullptr && sqlite3_errcode(db_) != SQLITE_OK) {
    code = sqlite3_extended_errcode(db_);
    message = sqlite3_errmsg(db_);
  }
  throw SqliteError(code, fmt::format("{} (in: {})", message, what));
}

Statement Connection::prepare(const char* sql) {
  auto it = statements_.find(sql);
  if (it != statements_.end() && it->second.in_use) {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr);
    if (rc != SQLITE_OK) fail(rc, sql);
    return Statement(*this, stmt, nullptr);
  }
  if (it == statements_.end()) {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) fail(rc, sql);
    it = statements_.emplace(sql, Cached{stmt, false}).first;
  }
  it->second.in_use = true;
  return Statement(*this, it->second.stmt, &it->second.in_use);
}

void Connection::exec(const char* sql) { prepare(sql).run(); }

int64_t Connection::query_int(const char* sql) {
  Statement s = prepare(sql);
  return s.step() ? s.integer(0) : 0;
}

int64_t Connection::changes() const { return sqlite3_changes64(db_); }

void Connection::rollback_quietly() noexcept {
  if (db_ == nullptr || sqlite3_get_autocommit(db_) != 0) return;
  // A constant statement; not cached, so that a failing cache cannot stop the rollback.
  sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

} // namespace attnjit::cache::detail
