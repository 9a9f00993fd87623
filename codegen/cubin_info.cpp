#include "codegen/cubin_info.h"

#include <cstdint>
#include <cstring>
#include <vector>

namespace attnjit {

namespace {

// ELF64, little endian: only the fields read here.
struct Section {
  uint32_t name, type;
  uint64_t offset, size;
  uint32_t link;
};

template <class T> bool read(std::string_view bytes, uint64_t at, T& out) {
  if (at + sizeof(T) > bytes.size()) return false;
  std::memcpy(&out, bytes.data() + at, sizeof(T));
  return true;
}

constexpr uint8_t kFormatSval = 0x04;  // attribute with a sized payload
constexpr uint8_t kAttrFrameSize = 0x11;
constexpr uint8_t kAttrRegCount = 0x2f;
constexpr uint32_t kSymtab = 2;

} // namespace

std::optional<KernelResources> resources_from_cubin(std::string_view elf, std::string_view entry) {
  if (elf.size() < 64 || std::memcmp(elf.data(), "\x7f" "ELF\x02\x01", 6) != 0) return std::nullopt;
  uint64_t shoff = 0;
  uint16_t shentsize = 0, shnum = 0, shstrndx = 0;
  if (!read(elf, 0x28, shoff) || !read(elf, 0x3a, shentsize) || !read(elf, 0x3c, shnum) || !read(elf, 0x3e, shstrndx))
    return std::nullopt;
  std::vector<Section> sections(shnum);
  for (uint16_t i = 0; i < shnum; ++i) {
    const uint64_t h = shoff + uint64_t{i} * shentsize;
    Section& s = sections[i];
    if (!read(elf, h, s.name) || !read(elf, h + 4, s.type) || !read(elf, h + 0x18, s.offset) ||
        !read(elf, h + 0x20, s.size) || !read(elf, h + 0x28, s.link) || s.offset + s.size > elf.size())
      return std::nullopt;
  }
  if (shstrndx >= shnum) return std::nullopt;
  auto c_string = [&](const Section& table, uint32_t at) -> std::string_view {
    if (at >= table.size) return {};
    const char* p = elf.data() + table.offset + at;
    return {p, strnlen(p, table.size - at)};
  };
  // The symbol index of `entry`.
  std::optional<uint32_t> symbol;
  for (const Section& s : sections) {
    if (s.type != kSymtab || s.link >= shnum) continue;
    for (uint64_t at = 0; at + 24 <= s.size; at += 24) {
      uint32_t name = 0;
      read(elf, s.offset + at, name);
      if (c_string(sections[s.link], name) == entry) symbol = static_cast<uint32_t>(at / 24);
    }
  }
  if (!symbol) return std::nullopt;
  // Per-kernel attributes in ".nv.info": {format, attribute, u16 size, payload {symbol, value}}.
  KernelResources r;
  r.spill_bytes = -1;
  bool found = false;
  for (const Section& s : sections) {
    if (c_string(sections[shstrndx], s.name) != ".nv.info") continue;
    for (uint64_t at = s.offset; at + 4 <= s.offset + s.size;) {
      const uint8_t format = static_cast<uint8_t>(elf[at]), attribute = static_cast<uint8_t>(elf[at + 1]);
      uint16_t size = 2;
      if (format == kFormatSval) read(elf, at + 2, size);
      if (format == kFormatSval && size == 8) {
        uint32_t sym = 0, value = 0;
        read(elf, at + 4, sym);
        read(elf, at + 8, value);
        if (sym == *symbol && attribute == kAttrRegCount) r.registers = static_cast<int>(value), found = true;
        if (sym == *symbol && attribute == kAttrFrameSize) r.stack_bytes = static_cast<int>(value);
      }
      at += format == kFormatSval ? 4u + size : 4u;
    }
  }
  return found ? std::optional<KernelResources>(r) : std::nullopt;
}

} // namespace attnjit
