// The OCI Distribution API v2 client: manifests by tag or digest, blobs
// streamed (with a Range offset for resume), and authentication (anonymous,
// Basic, Bearer tokens from the registry's realm). Every failure is one
// sentence naming the registry and the repository. Not the pull logic
// (image/pull.h: platform choice, verification, retries) and not a store.
//
// Auth flow: a request goes out with the cached Authorization for its
// repository scope, if any. A 401 carries WWW-Authenticate: Basic -> retry
// with the stored credentials; Bearer realm,service,scope -> GET the realm
// (Basic credentials when known) for a token (token or access_token) ->
// retry. A 401 on the retry means the credentials were refused.
// Thread-safe: pull's workers share one client.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "image/http.h"
#include "image/registry_config.h"

namespace msb::image {

struct FetchedManifest {
  std::string bytes;
  std::string content_type;  // the registry's Content-Type, parameters dropped
  std::string digest;        // sha256 of bytes ("sha256:<hex>")
};

class RegistryClient {
 public:
  // registry: the name in the reference ("reg.internal", "127.0.0.1:5000",
  // "docker.io"). creds: used when the registry asks for them.
  RegistryClient(std::string registry, const RegistryConfig& config, std::optional<Credentials> creds);
  ~RegistryClient();

  const std::string& registry() const { return registry_; }

  // GET /v2/<repo>/manifests/<reference> with Accept for OCI index/manifest
  // and Docker list/schema-2. Checks Docker-Content-Digest against the bytes
  // when sent, and when reference is a digest the bytes must hash to it.
  Result<FetchedManifest> GetManifest(const std::string& repository, const std::string& reference);

  // GET /v2/<repo>/blobs/<digest> from byte `offset` (a Range request when
  // offset > 0). Streams the body to on_body. *from_offset is set to where the
  // streamed bytes start: offset when the server honoured the Range (206),
  // 0 when it sent the whole blob (200). `on_start` (may be null) runs once
  // the answer is known to be a blob, before any bytes, with that start and
  // the total length when known (-1 otherwise).
  Status GetBlob(const std::string& repository, const std::string& digest, uint64_t offset,
                 const std::function<Status(uint64_t start, int64_t total)>& on_start,
                 const http::BodyCallback& on_body);

  // GET /v2/ with the credentials: ok when the registry accepts them (for
  // `msb login`). A registry without auth accepts anything.
  Status CheckLogin();

  // PUT /v2/<repo>/manifests/<ref> (tests and tools; needs push rights).
  Status PutManifest(const std::string& repository, const std::string& reference, const std::string& media_type,
                     const std::string& bytes);

 private:
  Result<http::Response> Send(http::Request req, const std::string& scope, const std::string& what,
                              const http::BodyCallback& on_body);
  Result<http::Response> SendWithHead(http::Request req, const std::string& scope, const std::string& what,
                                      const http::BodyCallback& on_body, const http::HeadCallback& on_head);
  Result<std::string> FetchToken(const http::Challenge& challenge, const std::string& scope);
  std::string ApiHost() const;
  Error FromStatus(const http::Response& resp, const std::string& what) const;

  std::string registry_;
  RegistryConfig config_;
  std::optional<Credentials> creds_;
  std::unique_ptr<http::HttpClient> http_;
  std::mutex mu_;
  std::map<std::string, std::string> authorization_;  // scope -> header value; guarded by mu_
  std::string scheme_;                                 // "https" or "http"; guarded by mu_
};

// The host that serves a registry's API ("docker.io" -> registry-1.docker.io).
// Insecure registries are tried over https (unverified) first, then http.
std::string RegistryApiHost(const std::string& registry);

}  // namespace msb::image
