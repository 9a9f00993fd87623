#include "cache/store.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

namespace attnjit::cache {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : std::string();
}

std::string home_directory() {
  if (std::string home = env("HOME"); !home.empty()) return home;
  long size = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buffer(size > 0 ? static_cast<size_t>(size) : 16384);
  struct passwd pw;
  struct passwd* found = nullptr;
  if (::getpwuid_r(::getuid(), &pw, buffer.data(), buffer.size(), &found) == 0 &&
      found != nullptr && found->pw_dir != nullptr) {
    return found->pw_dir;
  }
  return {};
}

} // namespace

std::string default_cache_path() {
  if (std::string p = env("ATTNJIT_CACHE"); !p.empty()) return p;
  // The XDG base directory specification ignores relative paths.
  if (std::string xdg = env("XDG_CACHE_HOME"); !xdg.empty() && xdg.front() == '/') {
    return xdg + "/attnjit/cache.sqlite";
  }
  if (std::string home = home_directory(); !home.empty()) {
    return home + "/.cache/attnjit/cache.sqlite";
  }
  throw Error("no cache location: set ATTNJIT_CACHE (or XDG_CACHE_HOME or HOME)");
}

} // namespace attnjit::cache
