// Column-aligned text tables for the reports the tools print.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

namespace attnjit::tuner {

class Table {
 public:
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  // Every column padded to its widest cell, two spaces apart; the last cell of a row unpadded.
  std::string render() const {
    std::vector<size_t> width;
    for (const auto& row : rows_)
      for (size_t c = 0; c < row.size(); ++c) {
        if (width.size() <= c) width.push_back(0);
        if (c + 1 < row.size()) width[c] = std::max(width[c], row[c].size());
      }
    std::string out;
    for (const auto& row : rows_) {
      for (size_t c = 0; c < row.size(); ++c) {
        out += row[c];
        if (c + 1 < row.size()) out.append(width[c] - row[c].size() + 2, ' ');
      }
      out += '\n';
    }
    return out;
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

} // namespace attnjit::tuner
