// CertificateAuthority: the certificate authority of one sandbox start and
// the leaf certificates it mints for the server names the supervisor
// intercepts. OpenSSL, EC P-256, SHA-256 signatures. The private keys exist
// only in this process's memory; only the CA certificate is exported (PEM,
// for the guest's trust store). Not a TLS endpoint: the owner builds the
// SSL_CTX from a Leaf.
//
// The CA: self-signed, basicConstraints critical CA:TRUE pathlen:0,
// keyUsage critical keyCertSign+cRLSign, valid from now - kBackdate for
// kCaValidity. With Options::permitted it carries a critical nameConstraints
// extension permitting only those DNS names (a "*.domain" pattern permits
// domain and the names below it), so a guest that trusts it trusts it for
// nothing else, and LeafFor() refuses other names.
//
// A leaf: subject CN and subjectAltName dNSName = the host, basicConstraints
// critical CA:FALSE, keyUsage critical digitalSignature, extendedKeyUsage
// serverAuth, a fresh P-256 key, valid from now - kBackdate for
// kLeafValidity (never past the CA's end). Leaves are cached by host, at most
// kMaxCachedLeaves (the least recently used goes first); a cached leaf is
// minted again once it is within kLeafRenewBefore of its end.
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <chrono>
#include <cstddef>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/c_ptr.h"
#include "common/result.h"

namespace msb::secrets {

inline constexpr std::chrono::hours kCaValidity{24 * 30};
inline constexpr std::chrono::hours kLeafValidity{24};
inline constexpr std::chrono::hours kLeafRenewBefore{1};
// notBefore lies this far in the past: a guest clock slightly behind the
// host's still accepts a certificate minted this second.
inline constexpr std::chrono::hours kBackdate{1};
inline constexpr size_t kMaxCachedLeaves = 256;

using X509Ptr = CPtr<X509, X509_free>;

struct Leaf {
  std::string host;
  X509Ptr certificate;
  EvpPkeyPtr key;
  std::chrono::system_clock::time_point not_after;
};

// Not thread-safe: one per sandbox, used on the supervisor's loop thread.
// Leaves are shared: one handed out stays valid after it leaves the cache.
class CertificateAuthority {
 public:
  using Clock = std::chrono::system_clock;

  struct Options {
    std::string common_name = "msb sandbox CA";
    // Allow patterns ("host", "*.domain"); empty: no name constraints.
    std::vector<std::string> permitted;
  };

  static Result<CertificateAuthority> Create(const Options& options, Clock::time_point now);

  CertificateAuthority(CertificateAuthority&&) noexcept = default;
  CertificateAuthority& operator=(CertificateAuthority&&) noexcept = default;

  // The CA certificate in PEM: what the guest installs. The key is never
  // exported.
  std::string CertificatePem() const;
  X509* certificate() const { return cert_.get(); }
  Clock::time_point not_after() const { return not_after_; }

  // The leaf for host (a DNS name; lower case, no trailing dot), from the
  // cache or minted now.
  Result<std::shared_ptr<const Leaf>> LeafFor(std::string_view host, Clock::time_point now);
  size_t cached() const { return cache_.size(); }

 private:
  CertificateAuthority() = default;
  Result<std::shared_ptr<const Leaf>> Mint(const std::string& host, Clock::time_point now) const;
  bool Permits(std::string_view host) const;

  X509Ptr cert_;
  EvpPkeyPtr key_;
  Clock::time_point not_after_;
  std::vector<std::string> permitted_;  // DNS name constraints, "*." stripped
  struct Entry {
    std::shared_ptr<const Leaf> leaf;
    std::list<std::string>::iterator lru;
  };
  std::map<std::string, Entry, std::less<>> cache_;
  std::list<std::string> lru_;  // most recently used first
};

}  // namespace msb::secrets
