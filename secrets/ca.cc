// Minting the sandbox CA and its leaves with OpenSSL. See ca.h.
#include "secrets/ca.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <algorithm>

#include "schema/values.h"

namespace msb::secrets {

namespace {

using X509ExtPtr = CPtr<X509_EXTENSION, X509_EXTENSION_free>;
using BioPtr = CPtr<BIO, BIO_free_all>;
using BignumPtr = CPtr<BIGNUM, BN_free>;

// "what: the OpenSSL error queue", emptying the queue.
Error OpensslError(const std::string& what) {
  std::string msg = what;
  unsigned long e = 0;
  bool first = true;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    msg += first ? ": " : "; ";
    msg += buf;
    first = false;
  }
  return Error(ErrorCode::kInternal, msg);
}

Result<EvpPkeyPtr> NewP256Key() {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return OpensslError("generating a P-256 key");
  return key;
}

// A positive random 127-bit serial number (RFC 5280 §4.1.2.2: at most 20 octets).
Status SetRandomSerial(X509* cert) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) return OpensslError("drawing a serial number");
  bytes[0] &= 0x7f;
  bytes[0] |= 0x40;  // never zero, never shorter
  BignumPtr bn(BN_bin2bn(bytes, sizeof bytes, nullptr));
  if (!bn || BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) == nullptr) {
    return OpensslError("setting a serial number");
  }
  return OkStatus();
}

Status SetValidity(X509* cert, CertificateAuthority::Clock::time_point from,
                   CertificateAuthority::Clock::time_point to) {
  if (ASN1_TIME_set(X509_getm_notBefore(cert), CertificateAuthority::Clock::to_time_t(from)) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert), CertificateAuthority::Clock::to_time_t(to)) == nullptr) {
    return OpensslError("setting the validity");
  }
  return OkStatus();
}

Status SetName(X509* cert, const std::string& common_name, bool issuer_too) {
  X509_NAME* name = X509_get_subject_name(cert);
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("msb"), -1, -1, 0) !=
          1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(common_name.c_str()),
                                 -1, -1, 0) != 1) {
    return OpensslError("setting the subject name");
  }
  if (issuer_too && X509_set_issuer_name(cert, name) != 1) return OpensslError("setting the issuer name");
  return OkStatus();
}

// Adds one extension in OpenSSL's configuration syntax ("critical,CA:TRUE").
Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return OpensslError(std::string("adding the ") + OBJ_nid2sn(nid) + " extension");
  }
  return OkStatus();
}

}  // namespace

Result<CertificateAuthority> CertificateAuthority::Create(const Options& options, Clock::time_point now) {
  CertificateAuthority ca;
  for (const std::string& pattern : options.permitted) {
    std::string_view name = pattern;
    if (name.substr(0, 2) == "*.") name.remove_prefix(2);
    auto canonical = schema::CanonicalHostName(name);
    if (!canonical) {
      return Error(ErrorCode::kInvalidArgument, "\"" + pattern + "\" is not a host name or *.domain");
    }
    if (std::find(ca.permitted_.begin(), ca.permitted_.end(), *canonical) == ca.permitted_.end()) {
      ca.permitted_.push_back(*canonical);
    }
  }
  MSB_TRY(ca.key_, NewP256Key());
  ca.cert_.reset(X509_new());
  if (!ca.cert_) return OpensslError("allocating the CA certificate");
  X509* cert = ca.cert_.get();
  ca.not_after_ = now + kCaValidity;
  if (X509_set_version(cert, 2) != 1) return OpensslError("setting the certificate version");
  MSB_TRY_STATUS(SetRandomSerial(cert));
  MSB_TRY_STATUS(SetValidity(cert, now - kBackdate, ca.not_after_));
  MSB_TRY_STATUS(SetName(cert, options.common_name, true));
  if (X509_set_pubkey(cert, ca.key_.get()) != 1) return OpensslError("setting the CA public key");
  MSB_TRY_STATUS(AddExtension(cert, cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  MSB_TRY_STATUS(AddExtension(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign"));
  MSB_TRY_STATUS(AddExtension(cert, cert, NID_subject_key_identifier, "hash"));
  if (!ca.permitted_.empty()) {
    std::string constraints = "critical";
    for (const std::string& name : ca.permitted_) constraints += ",permitted;DNS:" + name;
    MSB_TRY_STATUS(AddExtension(cert, cert, NID_name_constraints, constraints));
  }
  if (X509_sign(cert, ca.key_.get(), EVP_sha256()) == 0) return OpensslError("signing the CA certificate");
  return ca;
}

std::string CertificateAuthority::CertificatePem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  MSB_CHECK(bio && PEM_write_bio_X509(bio.get(), cert_.get()) == 1, "writing the CA certificate as PEM");
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

bool CertificateAuthority::Permits(std::string_view host) const {
  if (permitted_.empty()) return true;
  for (const std::string& base : permitted_) {
    if (host == base) return true;
    if (host.size() > base.size() && host.substr(host.size() - base.size()) == base &&
        host[host.size() - base.size() - 1] == '.') {
      return true;
    }
  }
  return false;
}

Result<std::shared_ptr<const Leaf>> CertificateAuthority::Mint(const std::string& host, Clock::time_point now) const {
  auto leaf = std::make_shared<Leaf>();
  leaf->host = host;
  MSB_TRY(leaf->key, NewP256Key());
  leaf->certificate.reset(X509_new());
  if (!leaf->certificate) return OpensslError("allocating a leaf certificate");
  X509* cert = leaf->certificate.get();
  leaf->not_after = std::min(now + kLeafValidity, not_after_);
  if (X509_set_version(cert, 2) != 1) return OpensslError("setting the certificate version");
  MSB_TRY_STATUS(SetRandomSerial(cert));
  MSB_TRY_STATUS(SetValidity(cert, now - kBackdate, leaf->not_after));
  MSB_TRY_STATUS(SetName(cert, host, false));
  if (X509_set_issuer_name(cert, X509_get_subject_name(cert_.get())) != 1) {
    return OpensslError("setting the leaf's issuer");
  }
  if (X509_set_pubkey(cert, leaf->key.get()) != 1) return OpensslError("setting the leaf public key");
  MSB_TRY_STATUS(AddExtension(cert, cert_.get(), NID_basic_constraints, "critical,CA:FALSE"));
  MSB_TRY_STATUS(AddExtension(cert, cert_.get(), NID_key_usage, "critical,digitalSignature"));
  MSB_TRY_STATUS(AddExtension(cert, cert_.get(), NID_ext_key_usage, "serverAuth"));
  MSB_TRY_STATUS(AddExtension(cert, cert_.get(), NID_subject_alt_name, "DNS:" + host));
  MSB_TRY_STATUS(AddExtension(cert, cert_.get(), NID_subject_key_identifier, "hash"));
  MSB_TRY_STATUS(AddExtension(cert, cert_.get(), NID_authority_key_identifier, "keyid:always"));
  if (X509_sign(cert, key_.get(), EVP_sha256()) == 0) return OpensslError("signing a leaf certificate");
  return std::shared_ptr<const Leaf>(std::move(leaf));
}

Result<std::shared_ptr<const Leaf>> CertificateAuthority::LeafFor(std::string_view host, Clock::time_point now) {
  auto canonical = schema::CanonicalHostName(host);
  if (!canonical || *canonical != host) {
    return Error(ErrorCode::kInvalidArgument, "\"" + std::string(host) + "\" is not a lower-case DNS name");
  }
  if (!Permits(host)) {
    return Error(ErrorCode::kInvalidArgument, "the sandbox CA is not permitted to certify " + std::string(host));
  }
  if (now + kLeafRenewBefore >= not_after_) {
    return Error(ErrorCode::kState, "the sandbox CA expires at the latest in " +
                                        std::to_string(kLeafRenewBefore.count()) + "h; restart the sandbox");
  }
  auto it = cache_.find(host);
  if (it != cache_.end()) {
    if (now + kLeafRenewBefore < it->second.leaf->not_after) {
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      return it->second.leaf;
    }
    lru_.erase(it->second.lru);
    cache_.erase(it);
  }
  MSB_TRY(std::shared_ptr<const Leaf> leaf, Mint(*canonical, now));
  while (cache_.size() >= kMaxCachedLeaves) {
    cache_.erase(lru_.back());
    lru_.pop_back();
  }
  lru_.push_front(*canonical);
  cache_.emplace(*canonical, Entry{leaf, lru_.begin()});
  return leaf;
}

}  // namespace msb::secrets
