// Lower-case hex: encoding bytes, and recognising the 64 digits of a SHA-256.
// Header-only and free of library dependencies, so the static agentd shares
// it with the host. Not a decoder.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace msb {

// "00ff..." for the n bytes at data.
inline std::string HexLower(const void* data, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out += kDigits[p[i] >> 4];
    out += kDigits[p[i] & 15];
  }
  return out;
}

// Exactly 64 lower-case hex digits: a SHA-256 as Sha256::HexFinal and the
// "sha256:<hex>" digests of images write it. Upper case is not accepted.
inline bool IsHex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace msb
