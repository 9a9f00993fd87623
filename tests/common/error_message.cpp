#include "error_message.h"

#include <cctype>

namespace attnjit::testing {

bool names_field(const std::string& message, const std::vector<std::string>& fields) {
  auto ident = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  for (const std::string& field : fields)
    for (size_t pos = message.find(field); pos != std::string::npos; pos = message.find(field, pos + 1)) {
      const size_t end = pos + field.size();
      if ((pos == 0 || !ident(message[pos - 1])) && (end >= message.size() || !ident(message[end]))) return true;
    }
  return false;
}

} // namespace attnjit::testing
