// FNV-1a, 32 bits: a small, stable, non-cryptographic hash for deriving ids
// and addresses from names (the jail's uid, a group network's address).
// Header-only. Not for anything an adversary may choose to collide.
#pragma once

#include <cstdint>
#include <string_view>

namespace msb {

inline uint32_t Fnv1a32(std::string_view s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) h = (h ^ c) * 16777619u;
  return h;
}

}  // namespace msb
