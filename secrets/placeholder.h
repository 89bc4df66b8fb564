// Placeholders and secret values. A placeholder is what the guest sees in
// place of a secret: kPlaceholderPrefix followed by kPlaceholderRandomBits of
// fresh randomness, new for every sandbox start and never derived from the
// value. A SecretValue holds the real bytes in memory of its own (locked,
// excluded from core dumps, wiped when destroyed). Not the substitution:
// secrets/substitute.h decides where a value may replace its placeholder.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/result.h"

namespace msb::secrets {

inline constexpr std::string_view kPlaceholderPrefix = "msb-secret-";
// Random bits after the prefix, written in lower-case base32 (RFC 4648
// alphabet, no padding): 160 bits are 32 characters.
inline constexpr size_t kPlaceholderRandomBits = 160;
inline constexpr size_t kPlaceholderRandomChars = kPlaceholderRandomBits / 5;
inline constexpr size_t kPlaceholderSize = kPlaceholderPrefix.size() + kPlaceholderRandomChars;
// The largest secret value accepted (a token, a password, a key file).
inline constexpr size_t kMaxSecretBytes = 64 * 1024;

// A new placeholder from the OpenSSL CSPRNG (RAND_bytes). Fails only when the
// generator cannot be seeded.
Result<std::string> NewPlaceholder();

// Whether text has the exact shape NewPlaceholder produces.
bool IsPlaceholder(std::string_view text);

// The bytes of one secret. Move-only; the memory is a private anonymous
// mapping of its own, mlock()ed where RLIMIT_MEMLOCK allows (locked() says),
// marked MADV_DONTDUMP (dontdump() says) and overwritten with zeros
// (OPENSSL_cleanse) before it is unmapped. Callers wipe their own copies of
// the source bytes; view() hands out the bytes without copying them.
class SecretValue {
 public:
  // Copies bytes (at most kMaxSecretBytes) into protected memory.
  static Result<SecretValue> Create(std::string_view bytes);
  // Reads a file straight into protected memory, so no other heap copy
  // exists; one trailing "\n" or "\r\n" is dropped (editors add it).
  static Result<SecretValue> ReadFile(const std::string& path);

  SecretValue(SecretValue&& other) noexcept;
  SecretValue& operator=(SecretValue&& other) noexcept;
  SecretValue(const SecretValue&) = delete;
  SecretValue& operator=(const SecretValue&) = delete;
  ~SecretValue();

  std::string_view view() const { return {static_cast<const char*>(mem_), size_}; }
  size_t size() const { return size_; }
  bool locked() const { return locked_; }
  bool dontdump() const { return dontdump_; }

 private:
  SecretValue() = default;
  static Result<SecretValue> Allocate(size_t capacity);
  void Release();

  void* mem_ = nullptr;
  size_t size_ = 0;
  size_t map_size_ = 0;
  bool locked_ = false;
  bool dontdump_ = false;
};

// Overwrites a string's bytes with zeros (OPENSSL_cleanse) and empties it:
// for copies of values made on their way upstream.
void WipeString(std::string* s);

// Makes the calling process non-dumpable (prctl PR_SET_DUMPABLE 0): no core
// dump, no ptrace attach by other processes of the same user, /proc/PID/mem
// closed to them. The process that holds SecretValues calls it once, early.
Status ProtectProcessMemory();

}  // namespace msb::secrets
