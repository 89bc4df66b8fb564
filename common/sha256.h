// SHA-256 through OpenSSL's EVP interface: a streaming hasher, and one-shot
// helpers for bytes and files, all answering in lower-case hex. The only
// SHA-256 implementation msb calls on the host (scripts/check-primitives keeps
// it so). Not an HMAC or a signature API.
#pragma once

#include <openssl/evp.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "common/c_ptr.h"
#include "common/result.h"

namespace msb {

// Incremental SHA-256: Update any number of times, then HexFinal or
// DigestFinal, which also start the next hash. OpenSSL failing to set up or
// run SHA-256 is a broken invariant (MSB_CHECK), not an error value.
// Move-only; not thread-safe.
class Sha256 {
 public:
  Sha256();
  Sha256(Sha256&&) noexcept = default;
  Sha256& operator=(Sha256&&) noexcept = default;

  // Forgets everything hashed so far.
  void Reset();
  void Update(std::string_view bytes);
  void Update(const void* data, size_t n);
  // The hash of everything since construction or the last Reset/…Final, as
  // 64 lower-case hex digits; then resets.
  std::string HexFinal();
  // "sha256:" + HexFinal(): an OCI digest.
  std::string DigestFinal();

 private:
  EvpMdCtxPtr ctx_;
};

std::string Sha256Hex(std::string_view data);
Result<std::string> Sha256File(const std::string& path);

}  // namespace msb
