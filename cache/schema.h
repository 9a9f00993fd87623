// The cache schema and its migrations, private to the cache library (tests read it too).
//
// A migration takes a file from user_version N to N+1: a list of constant statements run, in
// order, inside the BEGIN IMMEDIATE transaction that opened the file, the last of which sets
// PRAGMA user_version to N+1. Version 0 is a file with no schema (new or empty). To change the
// schema: append a migration from kSchemaVersion to kSchemaVersion + 1, bump kSchemaVersion in
// store.h, and adjust the statements that read and write the changed tables.
#pragma once

#include <span>
#include <string_view>

namespace attnjit::cache::detail {

struct Migration {
  int from_version; // the migration produces from_version + 1
  std::span<const char* const> statements;
};

// Every migration, ordered: migrations()[i].from_version == i, the last produces kSchemaVersion.
std::span<const Migration> migrations();

// The tables a file at kSchemaVersion must have.
std::span<const std::string_view> required_tables();

} // namespace attnjit::cache::detail
