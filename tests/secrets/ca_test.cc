// Tests for the sandbox CA: the CA certificate's shape, leaves verified
// with X509_verify_cert against the CA (and failing against another CA, for
// another name, after expiry), name constraints, the leaf cache, and a TLS
// handshake in memory between a client trusting the CA's PEM and a server
// with a minted leaf.
#include "secrets/ca.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <string>

#include "common/c_ptr.h"

namespace msb::secrets {
namespace {

using Clock = CertificateAuthority::Clock;
using StorePtr = CPtr<X509_STORE, X509_STORE_free>;
using StoreCtxPtr = CPtr<X509_STORE_CTX, X509_STORE_CTX_free>;

const Clock::time_point kNow = Clock::from_time_t(1'750'000'000);

CertificateAuthority NewCa(std::vector<std::string> permitted = {}) {
  CertificateAuthority::Options options;
  options.permitted = std::move(permitted);
  auto ca = CertificateAuthority::Create(options, kNow);
  EXPECT_TRUE(ca.ok()) << ca.error().message();
  return std::move(*ca);
}

X509Ptr FromPem(const std::string& pem) {
  CPtr<BIO, BIO_free_all> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

// X509_verify_cert of leaf against trusted as a TLS server certificate for
// host at time t; the verify error (X509_V_OK on success).
int Verify(X509* trusted, X509* leaf, const std::string& host, Clock::time_point t) {
  StorePtr store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), trusted);
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), leaf, nullptr);
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
  X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_SERVER);
  X509_VERIFY_PARAM_set_time(param, Clock::to_time_t(t));
  int ok = X509_verify_cert(ctx.get());
  int err = X509_STORE_CTX_get_error(ctx.get());
  return ok == 1 ? X509_V_OK : (err == X509_V_OK ? -1 : err);
}

TEST(CaTest, CaCertificateShape) {
  CertificateAuthority ca = NewCa();
  X509* cert = ca.certificate();
  EXPECT_EQ(X509_check_ca(cert), 1);
  EXPECT_EQ(X509_verify(cert, X509_get0_pubkey(cert)), 1);  // self-signed
  EXPECT_EQ(X509_get_pathlen(cert), 0);
  EXPECT_TRUE(X509_get_key_usage(cert) & KU_KEY_CERT_SIGN);
  EXPECT_FALSE(X509_get_key_usage(cert) & KU_DIGITAL_SIGNATURE);
  EVP_PKEY* key = X509_get0_pubkey(cert);
  EXPECT_EQ(EVP_PKEY_get_base_id(key), EVP_PKEY_EC);
  char group[64] = {};
  size_t len = 0;
  ASSERT_EQ(EVP_PKEY_get_group_name(key, group, sizeof group, &len), 1);
  EXPECT_STREQ(group, "prime256v1");
  EXPECT_EQ(X509_get_ext_by_NID(cert, NID_name_constraints, -1), -1);
  // Valid from an hour ago for kCaValidity.
  EXPECT_EQ(X509_cmp_time(X509_get0_notBefore(cert), nullptr), -1);
  time_t before_start = Clock::to_time_t(kNow - kBackdate - std::chrono::seconds(1));
  time_t after_end = Clock::to_time_t(kNow + kCaValidity + std::chrono::seconds(1));
  EXPECT_EQ(X509_cmp_time(X509_get0_notBefore(cert), &before_start), 1);
  EXPECT_EQ(X509_cmp_time(X509_get0_notAfter(cert), &after_end), -1);
  EXPECT_EQ(ca.not_after(), kNow + kCaValidity);
}

TEST(CaTest, PemHoldsTheCertificateOnly) {
  CertificateAuthority ca = NewCa();
  std::string pem = ca.CertificatePem();
  EXPECT_EQ(pem.rfind("-----BEGIN CERTIFICATE-----\n", 0), 0u);
  EXPECT_EQ(pem.find("PRIVATE"), std::string::npos);
  X509Ptr back = FromPem(pem);
  ASSERT_TRUE(back);
  EXPECT_EQ(X509_cmp(back.get(), ca.certificate()), 0);
}

TEST(CaTest, LeafVerifiesAgainstTheCaForItsNameOnly) {
  CertificateAuthority ca = NewCa();
  auto leaf = ca.LeafFor("api.github.com", kNow);
  ASSERT_TRUE(leaf.ok()) << leaf.error().message();
  X509* cert = (*leaf)->certificate.get();
  X509Ptr trusted = FromPem(ca.CertificatePem());
  EXPECT_EQ(Verify(trusted.get(), cert, "api.github.com", kNow), X509_V_OK);
  EXPECT_EQ(Verify(trusted.get(), cert, "API.GITHUB.COM", kNow), X509_V_OK);
  EXPECT_EQ(Verify(trusted.get(), cert, "evil.com", kNow), X509_V_ERR_HOSTNAME_MISMATCH);
  EXPECT_EQ(Verify(trusted.get(), cert, "x.api.github.com", kNow), X509_V_ERR_HOSTNAME_MISMATCH);
  EXPECT_EQ(Verify(trusted.get(), cert, "api.github.com", kNow + kLeafValidity + std::chrono::seconds(1)),
            X509_V_ERR_CERT_HAS_EXPIRED);
  EXPECT_EQ(Verify(trusted.get(), cert, "api.github.com", kNow - kBackdate - std::chrono::seconds(1)),
            X509_V_ERR_CERT_NOT_YET_VALID);
  // Another sandbox's CA does not vouch for it.
  CertificateAuthority other = NewCa();
  EXPECT_NE(Verify(other.certificate(), cert, "api.github.com", kNow), X509_V_OK);
  // The leaf's own shape.
  EXPECT_EQ(X509_check_ca(cert), 0);
  EXPECT_TRUE(X509_get_extended_key_usage(cert) & XKU_SSL_SERVER);
  EXPECT_EQ(X509_check_private_key(cert, (*leaf)->key.get()), 1);
  EXPECT_EQ((*leaf)->not_after, kNow + kLeafValidity);
}

TEST(CaTest, NameConstraintsLimitTheCa) {
  CertificateAuthority ca = NewCa({"api.github.com", "*.example.com", "*.example.com"});
  EXPECT_GE(X509_get_ext_by_NID(ca.certificate(), NID_name_constraints, -1), 0);
  for (std::string host : {"api.github.com", "files.example.com", "a.b.example.com"}) {
    auto leaf = ca.LeafFor(host, kNow);
    ASSERT_TRUE(leaf.ok()) << host << ": " << leaf.error().message();
    EXPECT_EQ(Verify(ca.certificate(), (*leaf)->certificate.get(), host, kNow), X509_V_OK) << host;
  }
  auto outside = ca.LeafFor("evil.com", kNow);
  ASSERT_FALSE(outside.ok());
  EXPECT_NE(outside.error().message().find("not permitted"), std::string::npos);
  EXPECT_FALSE(ca.LeafFor("github.com", kNow).ok());
  CertificateAuthority::Options bad;
  bad.permitted = {"not a host"};
  EXPECT_FALSE(CertificateAuthority::Create(bad, kNow).ok());
}

TEST(CaTest, LeafForRefusesWhatIsNotACanonicalName) {
  CertificateAuthority ca = NewCa();
  for (std::string host : {"API.github.com", "a.com.", "*.a.com", "10.0.0.1", "", "a b.com", "a,DNS:evil.com"}) {
    EXPECT_FALSE(ca.LeafFor(host, kNow).ok()) << host;
  }
  EXPECT_EQ(ca.cached(), 0u);
}

TEST(CaTest, LeavesAreCachedRenewedAndEvicted) {
  CertificateAuthority ca = NewCa();
  auto a1 = *ca.LeafFor("a.example.com", kNow);
  auto a2 = *ca.LeafFor("a.example.com", kNow + std::chrono::hours(2));
  EXPECT_EQ(a1, a2);
  auto renewal_time = kNow + kLeafValidity - kLeafRenewBefore;
  auto a3 = *ca.LeafFor("a.example.com", renewal_time);
  EXPECT_NE(a1, a3);
  EXPECT_EQ(a3->not_after, renewal_time + kLeafValidity);
  // The old leaf stays usable by whoever holds it.
  EXPECT_EQ(a1->host, "a.example.com");

  for (size_t i = 0; i < kMaxCachedLeaves; ++i) {
    ASSERT_TRUE(ca.LeafFor("h" + std::to_string(i) + ".example.com", renewal_time).ok());
  }
  EXPECT_EQ(ca.cached(), kMaxCachedLeaves);
  // a.example.com was the least recently used: gone.
  EXPECT_NE(*ca.LeafFor("a.example.com", renewal_time), a3);
  // h1 is still there; h0 went when a.example.com came back.
  auto h1 = *ca.LeafFor("h1.example.com", renewal_time);
  EXPECT_EQ(*ca.LeafFor("h1.example.com", renewal_time), h1);
  EXPECT_EQ(ca.cached(), kMaxCachedLeaves);
}

TEST(CaTest, LeavesNeverOutliveTheCa) {
  CertificateAuthority ca = NewCa();
  auto late = kNow + kCaValidity - kLeafValidity / 2;
  auto leaf = ca.LeafFor("late.example.com", late);
  ASSERT_TRUE(leaf.ok());
  EXPECT_EQ((*leaf)->not_after, ca.not_after());
  auto expired = ca.LeafFor("x.example.com", kNow + kCaValidity);
  ASSERT_FALSE(expired.ok());
  EXPECT_EQ(expired.error().code(), ErrorCode::kState);
}

// Moves bytes between two memory-BIO TLS endpoints until both finish.
bool Handshake(SSL* client, SSL* server) {
  for (int round = 0; round < 20; ++round) {
    int c = SSL_do_handshake(client);
    int s = SSL_do_handshake(server);
    if (c == 1 && s == 1) return true;
    if (c <= 0 && SSL_get_error(client, c) != SSL_ERROR_WANT_READ) return false;
    if (s <= 0 && SSL_get_error(server, s) != SSL_ERROR_WANT_READ) return false;
  }
  return false;
}

TEST(CaTest, TlsClientTrustingTheCaPemAcceptsAMintedLeaf) {
  // Minted for the real clock: the handshake checks the current time.
  CertificateAuthority::Options options;
  options.permitted = {"api.github.com"};
  auto live = CertificateAuthority::Create(options, Clock::now());
  ASSERT_TRUE(live.ok());
  auto live_leaf = *live->LeafFor("api.github.com", Clock::now());

  SslCtxPtr server_ctx(SSL_CTX_new(TLS_server_method()));
  ASSERT_EQ(SSL_CTX_use_certificate(server_ctx.get(), live_leaf->certificate.get()), 1);
  ASSERT_EQ(SSL_CTX_use_PrivateKey(server_ctx.get(), live_leaf->key.get()), 1);

  SslCtxPtr client_ctx(SSL_CTX_new(TLS_client_method()));
  X509Ptr trusted = FromPem(live->CertificatePem());
  X509_STORE_add_cert(SSL_CTX_get_cert_store(client_ctx.get()), trusted.get());
  SSL_CTX_set_verify(client_ctx.get(), SSL_VERIFY_PEER, nullptr);

  for (const char* name : {"api.github.com", "evil.com"}) {
    SslPtr client(SSL_new(client_ctx.get()));
    SslPtr server(SSL_new(server_ctx.get()));
    BIO* c_side = nullptr;
    BIO* s_side = nullptr;
    ASSERT_EQ(BIO_new_bio_pair(&c_side, 0, &s_side, 0), 1);
    SSL_set_bio(client.get(), c_side, c_side);
    SSL_set_bio(server.get(), s_side, s_side);
    SSL_set_connect_state(client.get());
    SSL_set_accept_state(server.get());
    SSL_set_tlsext_host_name(client.get(), name);
    SSL_set1_host(client.get(), name);
    bool ok = Handshake(client.get(), server.get());
    if (std::string(name) == "api.github.com") {
      EXPECT_TRUE(ok);
      EXPECT_EQ(SSL_get_verify_result(client.get()), X509_V_OK);
    } else {
      EXPECT_FALSE(ok);
      EXPECT_EQ(SSL_get_verify_result(client.get()), X509_V_ERR_HOSTNAME_MISMATCH);
    }
  }
}

}  // namespace
}  // namespace msb::secrets
