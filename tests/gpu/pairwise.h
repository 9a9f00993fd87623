// All-pairs (pairwise) test selection: a small set of rows such that, for every two axes, every
// combination of their values appears in some row. Deterministic (same axes, same rows), so test
// names are stable and can be used in filters.
#pragma once

#include <cstddef>
#include <vector>

namespace attnjit::testing {

// sizes[a] = number of values of axis a. Returns rows of value indices.
inline std::vector<std::vector<int>> all_pairs(const std::vector<int>& sizes) {
  const size_t n = sizes.size();
  // uncovered[a][b][va * sizes[b] + vb] for a < b
  std::vector<std::vector<std::vector<char>>> uncovered(n, std::vector<std::vector<char>>(n));
  size_t remaining = 0;
  for (size_t a = 0; a < n; ++a)
    for (size_t b = a + 1; b < n; ++b) {
      uncovered[a][b].assign(static_cast<size_t>(sizes[a]) * sizes[b], 1);
      remaining += uncovered[a][b].size();
    }
  auto is_uncovered = [&](size_t a, int va, size_t b, int vb) {
    if (a > b) {
      std::swap(a, b);
      std::swap(va, vb);
    }
    return uncovered[a][b][static_cast<size_t>(va) * sizes[b] + vb] != 0;
  };
  std::vector<std::vector<int>> usage(n);
  for (size_t a = 0; a < n; ++a) usage[a].assign(sizes[a], 0);

  std::vector<std::vector<int>> rows;
  while (remaining > 0) {
    std::vector<int> row(n, -1);
    // Seed the row with the first uncovered pair.
    bool seeded = false;
    for (size_t a = 0; a < n && !seeded; ++a)
      for (size_t b = a + 1; b < n && !seeded; ++b)
        for (int va = 0; va < sizes[a] && !seeded; ++va)
          for (int vb = 0; vb < sizes[b] && !seeded; ++vb)
            if (is_uncovered(a, va, b, vb)) {
              row[a] = va;
              row[b] = vb;
              seeded = true;
            }
    // Fill the other axes greedily: most newly covered pairs, then the least used value.
    for (size_t a = 0; a < n; ++a) {
      if (row[a] >= 0) continue;
      int best = 0, best_gain = -1, best_use = 0;
      for (int v = 0; v < sizes[a]; ++v) {
        int gain = 0;
        for (size_t b = 0; b < n; ++b)
          if (b != a && row[b] >= 0 && is_uncovered(a, v, b, row[b])) ++gain;
        if (gain > best_gain || (gain == best_gain && usage[a][v] < best_use)) {
          best = v;
          best_gain = gain;
          best_use = usage[a][v];
        }
      }
      row[a] = best;
    }
    for (size_t a = 0; a < n; ++a) {
      ++usage[a][row[a]];
      for (size_t b = a + 1; b < n; ++b) {
        char& u = uncovered[a][b][static_cast<size_t>(row[a]) * sizes[b] + row[b]];
        if (u) {
          u = 0;
          --remaining;
        }
      }
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

} // namespace attnjit::testing
