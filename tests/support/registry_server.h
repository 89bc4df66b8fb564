// Test support for image tests: a real docker-registry (Debian's
// /usr/bin/docker-registry) on 127.0.0.1 with a temp storage directory in
// one of three modes, an in-process HTTP server for scripted answers (and the
// Bearer token server), pushing OCI layouts with skopeo, and building a
// small multi-layer test layout with umoci. Test code only.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/child.h"
#include "common/fd.h"
#include "common/result.h"

namespace msb::testing {

// A one-request-per-connection HTTP/1.1 server on 127.0.0.1 (plain TCP),
// run on its own thread. The handler sees the method, target and headers
// (names lowercased) and returns the whole response text.
class ScriptedHttpServer {
 public:
  struct Request {
    std::string method;
    std::string target;
    std::map<std::string, std::string> headers;
  };
  using Handler = std::function<std::string(const Request&)>;

  static Result<std::unique_ptr<ScriptedHttpServer>> Start(Handler handler);
  ~ScriptedHttpServer();
  int port() const { return port_; }
  std::string host_port() const { return "127.0.0.1:" + std::to_string(port_); }
  int requests() const { return requests_; }

  // "HTTP/1.1 <status>\r\nContent-Type: <type>\r\nContent-Length: N\r\nConnection: close\r\n<extra>\r\n<body>"
  static std::string Response(int status, const std::string& content_type, const std::string& body,
                              const std::string& extra_headers = "");

 private:
  ScriptedHttpServer() = default;
  void Loop();
  Handler handler_;
  UniqueFd listen_;
  UniqueFd stop_r_, stop_w_;
  int port_ = 0;
  std::atomic<int> requests_{0};
  std::thread thread_;
};

enum class RegistryMode : int { kPlain = 0, kTlsBasic = 1, kTlsToken = 2 };

struct RegistryServerOptions {
  // TLS modes: names the server certificate holds besides 127.0.0.1 and
  // localhost (for tests that reach the registry by a name).
  std::vector<std::string> dns_names;
  // TLS modes: the registry requires a client certificate signed by its CA;
  // client.cert and client.key are made in cert_dir().
  bool require_client_cert = false;
};

class RegistryServer {
 public:
  // Starts docker-registry under work_dir (created), waits (with a deadline)
  // until GET /v2/ answers. kTlsBasic/kTlsToken generate a CA and a server
  // certificate for 127.0.0.1; kTlsToken also runs a token server issuing
  // RS256 JWTs (x5c header) for username()/password().
  static Result<std::unique_ptr<RegistryServer>> Start(RegistryMode mode, const std::string& work_dir,
                                                       const RegistryServerOptions& options = {});
  ~RegistryServer();

  RegistryMode mode() const { return mode_; }
  std::string host_port() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& ca_file() const { return ca_file_; }          // TLS modes
  // TLS modes: ca.crt, and client.cert + client.key when required: the
  // layout of a docker certs.d directory.
  const std::string& cert_dir() const { return cert_dir_; }
  int port() const { return port_; }
  std::string token_host_port() const;                              // kTlsToken: the realm's host:port
  const std::string& username() const { return username_; }
  const std::string& password() const { return password_; }
  const std::string& storage_dir() const { return storage_dir_; }
  // The registry's file holding a blob's bytes.
  std::string BlobDataPath(const std::string& digest) const;
  // Blob downloads (GET /v2/*/blobs/sha256:*) in the registry's access log
  // so far, those the registry answered with `status` when it is not 0; -1
  // when the log cannot be read.
  int BlobFetches(int status = 0) const;
  // Token requests the token server answered (kTlsToken).
  int token_requests() const;
  // kTlsToken: the lifetimes, in seconds from their issue, of the next
  // tokens the token server issues, in order (later ones: 600 s). The
  // registry itself refuses a token once its lifetime is over (the `exp`
  // claim is set back by the registry's 60 s leeway); a lifetime <= 0 gives
  // a token the registry refuses from the start.
  void SetNextTokenLifetimes(std::vector<int> seconds);
  // kTlsToken: every token the token server issued, in order.
  std::vector<std::string> IssuedTokens() const;
  // kTlsToken: the HTTP status the registry answers GET /v2/ with when it
  // carries `token` (200: accepted, 401: refused).
  Result<int> StatusWithToken(const std::string& token) const;

  // skopeo copy oci:LAYOUT:TAG docker://HOST:PORT/REPO_TAG with this
  // registry's TLS settings and credentials.
  Status Push(const std::string& layout, const std::string& tag, const std::string& repo_tag) const;

 private:
  RegistryServer() = default;
  static Result<std::unique_ptr<RegistryServer>> StartOnce(RegistryMode mode, const std::string& work_dir,
                                                           const RegistryServerOptions& options);
  RegistryMode mode_ = RegistryMode::kPlain;
  int port_ = 0;
  std::string work_dir_;
  std::string storage_dir_;
  std::string ca_file_;
  std::string cert_dir_;  // for skopeo --dest-cert-dir
  std::string username_ = "tester";
  std::string password_ = "s3cret-pass";
  std::unique_ptr<ScriptedHttpServer> token_server_;
  struct Tokens;
  std::shared_ptr<Tokens> tokens_;
  ChildProcess registry_;
  std::string log_file_;
};

// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
Result<int> FreePort();

// Builds the multi-layer test image (tests/support/make-test-image: three
// layers, whiteouts, an opaque directory, links; Entrypoint/Cmd/Env set) as
// TAG in the OCI layout directory DIR (created when absent).
Status MakeTestLayout(const std::string& dir, const std::string& tag);

// The same image built once per build tree and script version under
// $MSB_BUILD_DIR (else /tmp)/test-images/, shared by test processes (built in
// a temporary directory and renamed into place). Returns the layout path;
// treat it as read-only.
Result<std::string> CachedTestLayout(const std::string& tag);

}  // namespace msb::testing
