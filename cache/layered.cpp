#include "cache/store.h"

#include <cstdio>
#include <map>

#include <fmt/format.h>

namespace attnjit::cache {

std::unique_ptr<LayeredStore> LayeredStore::open(const std::string& local_path,
                                                 const std::string& deployed_path,
                                                 OpenOptions options) {
  std::unique_ptr<Store> local, deployed;
  std::function<void(std::string_view)> warn = options.warn;
  if (!warn) {
    warn = [](std::string_view m) {
      std::fprintf(stderr, "attnjit cache: %.*s\n", static_cast<int>(m.size()), m.data());
    };
    options.warn = warn;
  }
  if (!local_path.empty()) {
    OpenOptions o = options;
    o.read_only = false;
    try {
      local = Store::open(local_path, o);
    } catch (const Error& e) {
      warn(fmt::format("{}; running without a writable cache", e.what()));
    }
  }
  if (!deployed_path.empty()) {
    OpenOptions o = options;
    o.read_only = true;
    deployed = Store::open(deployed_path, o);
  }
  return std::make_unique<LayeredStore>(std::move(local), std::move(deployed), std::move(warn));
}

LayeredStore::LayeredStore(std::unique_ptr<Store> local, std::unique_ptr<Store> deployed,
                           std::function<void(std::string_view)> warn)
    : local_(std::move(local)), deployed_(std::move(deployed)), warn_(std::move(warn)) {}

void LayeredStore::report(std::string_view message) {
  if (warn_) {
    warn_(message);
  } else {
    std::fprintf(stderr, "attnjit cache: %.*s\n", static_cast<int>(message.size()),
                 message.data());
  }
}

std::optional<BinaryRecord> LayeredStore::get_binary(std::string_view key) {
  if (local_) {
    if (auto r = local_->get_binary(key)) return r;
  }
  if (deployed_) return deployed_->get_binary(key);
  return std::nullopt;
}

bool LayeredStore::put_binary(const BinaryRecord& record) {
  if (!local_) return false;
  try {
    local_->put_binary(record);
    return true;
  } catch (const Error& e) {
    report(e.what());
    return false;
  }
}

std::vector<TuningRecord> LayeredStore::candidates(std::string_view tuning_key) {
  std::map<std::string, TuningRecord> by_tile;
  if (deployed_) {
    for (TuningRecord& r : deployed_->candidates(tuning_key)) by_tile[r.tile] = std::move(r);
  }
  if (local_) {
    for (TuningRecord& r : local_->candidates(tuning_key)) by_tile[r.tile] = std::move(r);
  }
  std::vector<TuningRecord> out;
  out.reserve(by_tile.size());
  for (auto& [tile, r] : by_tile) out.push_back(std::move(r));
  return out;
}

bool LayeredStore::put_candidate(const TuningRecord& record) {
  if (!local_) return false;
  try {
    local_->put_candidate(record);
    return true;
  } catch (const Error& e) {
    report(e.what());
    return false;
  }
}

std::optional<WinnerRecord> LayeredStore::winner(std::string_view tuning_key) {
  if (local_) {
    if (auto r = local_->winner(tuning_key)) return r;
  }
  if (deployed_) return deployed_->winner(tuning_key);
  return std::nullopt;
}

bool LayeredStore::put_winner(const WinnerRecord& record) {
  if (!local_) return false;
  try {
    local_->put_winner(record);
    return true;
  } catch (const Error& e) {
    report(e.what());
    return false;
  }
}

} // namespace attnjit::cache
