// OpenSSL EVP SHA-256 behind common/sha256.h.
#include "common/sha256.h"

#include <fcntl.h>
#include <unistd.h>

#include "common/fd.h"
#include "common/hex.h"

namespace msb {

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  MSB_CHECK(ctx_ != nullptr, "EVP_MD_CTX_new");
  Reset();
}

void Sha256::Reset() { MSB_CHECK(EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1, "sha256 init"); }

void Sha256::Update(const void* data, size_t n) {
  MSB_CHECK(EVP_DigestUpdate(ctx_.get(), data, n) == 1, "sha256 update");
}

void Sha256::Update(std::string_view bytes) { Update(bytes.data(), bytes.size()); }

std::string Sha256::HexFinal() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  MSB_CHECK(EVP_DigestFinal_ex(ctx_.get(), md, &n) == 1, "sha256 final");
  Reset();
  return HexLower(md, n);
}

std::string Sha256::DigestFinal() { return "sha256:" + HexFinal(); }

std::string Sha256Hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  MSB_CHECK(EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr) == 1, "sha256");
  return HexLower(md, n);
}

Result<std::string> Sha256File(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::FromErrno("cannot open " + path);
  Sha256 hash;
  char buf[1 << 16];
  for (;;) {
    ssize_t r = ::read(fd.get(), buf, sizeof buf);
    if (r < 0) return Error::FromErrno("cannot read " + path);
    if (r == 0) break;
    hash.Update(buf, static_cast<size_t>(r));
  }
  return hash.HexFinal();
}

}  // namespace msb
