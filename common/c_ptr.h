// unique_ptr aliases with deleters for the C handles msb uses: the CPtr
// template, then one alias per OpenSSL handle. libarchive's handles are in
// common/archive_ptr.h; sqlite's stay with the store (orchestrator/store.h).
//
// Each library's block is compiled only when that library's header was
// included before this one, so including c_ptr.h never pulls OpenSSL into a
// target that does not link it (agentd). Only the template is under the
// include guard: a file that includes <openssl/ssl.h> after some other header
// already brought in c_ptr.h gets the SSL aliases by including c_ptr.h again.
#ifndef MSB_COMMON_C_PTR_H_
#define MSB_COMMON_C_PTR_H_

#include <memory>

namespace msb {

template <typename T, void (*Free)(T*)>
struct CDeleter {
  void operator()(T* p) const {
    if (p != nullptr) Free(p);
  }
};

template <typename T, void (*Free)(T*)>
using CPtr = std::unique_ptr<T, CDeleter<T, Free>>;

}  // namespace msb

#endif  // MSB_COMMON_C_PTR_H_

// OpenSSL libcrypto: <openssl/evp.h>.
#if defined(OPENSSL_EVP_H) && !defined(MSB_COMMON_C_PTR_EVP_)
#define MSB_COMMON_C_PTR_EVP_
namespace msb {
using EvpMdCtxPtr = CPtr<EVP_MD_CTX, EVP_MD_CTX_free>;
using EvpPkeyPtr = CPtr<EVP_PKEY, EVP_PKEY_free>;
}  // namespace msb
#endif

// OpenSSL libssl: <openssl/ssl.h>.
#if defined(OPENSSL_SSL_H) && !defined(MSB_COMMON_C_PTR_SSL_)
#define MSB_COMMON_C_PTR_SSL_
namespace msb {
using SslCtxPtr = CPtr<SSL_CTX, SSL_CTX_free>;
using SslPtr = CPtr<SSL, SSL_free>;
}  // namespace msb
#endif
