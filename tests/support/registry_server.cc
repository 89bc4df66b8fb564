// docker-registry, a scripted HTTP server and a JWT token server for tests.
#include "tests/support/registry_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <random>

#include <nlohmann/json.hpp>

#include "common/base64.h"
#include "common/c_ptr.h"
#include "common/io.h"
#include "common/sha256.h"
#include "image/http.h"

namespace msb::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

Status Run(const std::vector<std::string>& argv) {
  MSB_TRY(RunResult r, RunCapture(argv));
  if (r.status.ShellCode() != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    return Error(ErrorCode::kInternal, cmd + "failed (" + r.status.ToString() + "): " + r.output);
  }
  return OkStatus();
}

std::string Base64Url(std::string_view in) {
  std::string s = Base64Encode(in);
  for (char& c : s) {
    if (c == '+') c = '-';
    else if (c == '/') c = '_';
  }
  while (!s.empty() && s.back() == '=') s.pop_back();
  return s;
}

std::string QueryParam(const std::string& target, const std::string& name, std::vector<std::string>* all = nullptr) {
  size_t q = target.find('?');
  if (q == std::string::npos) return "";
  std::string query = target.substr(q + 1);
  std::string first;
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    std::string kv = query.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
    size_t eq = kv.find('=');
    if (eq != std::string::npos && kv.substr(0, eq) == name) {
      std::string raw = kv.substr(eq + 1), v;
      for (size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] == '%' && i + 2 < raw.size()) {
          v.push_back(static_cast<char>(std::stoi(raw.substr(i + 1, 2), nullptr, 16)));
          i += 2;
        } else if (raw[i] == '+') {
          v.push_back(' ');
        } else {
          v.push_back(raw[i]);
        }
      }
      if (first.empty()) first = v;
      if (all != nullptr) all->push_back(v);
    }
    if (amp == std::string::npos) break;
    pos = amp + 1;
  }
  return first;
}

// docker-registry accepts a token until `exp` plus this leeway (its
// registry/auth/token/token.go, Leeway).
constexpr int kRegistryLeewaySeconds = 60;

// Issues RS256 JWTs whose x5c header carries the signing certificate (which
// is the registry's rootcertbundle).
class TokenIssuer {
 public:
  static Result<std::unique_ptr<TokenIssuer>> Load(const std::string& key_pem, const std::string& cert_pem) {
    auto t = std::unique_ptr<TokenIssuer>(new TokenIssuer());
    FILE* kf = std::fopen(key_pem.c_str(), "r");
    if (kf == nullptr) return Error::FromErrno("open " + key_pem);
    t->key_.reset(PEM_read_PrivateKey(kf, nullptr, nullptr, nullptr));
    std::fclose(kf);
    FILE* cf = std::fopen(cert_pem.c_str(), "r");
    if (cf == nullptr) return Error::FromErrno("open " + cert_pem);
    X509* cert = PEM_read_X509(cf, nullptr, nullptr, nullptr);
    std::fclose(cf);
    if (!t->key_ || cert == nullptr) return Error(ErrorCode::kInternal, "cannot load the token key or certificate");
    unsigned char* der = nullptr;
    int n = i2d_X509(cert, &der);
    t->cert_der_b64_ = Base64Encode(std::string_view(reinterpret_cast<char*>(der), n));
    OPENSSL_free(der);
    X509_free(cert);
    return t;
  }

  // `lifetime_s` past the registry's leeway (kRegistryLeewaySeconds).
  std::string Issue(const std::string& subject, const std::string& service, const json& access,
                    int lifetime_s = 600) {
    json header = {{"typ", "JWT"}, {"alg", "RS256"}, {"x5c", json::array({cert_der_b64_})}};
    int64_t now = static_cast<int64_t>(std::time(nullptr));
    json claims = {{"iss", "msb-test-issuer"}, {"sub", subject},      {"aud", service},
                   {"exp", now + lifetime_s - kRegistryLeewaySeconds},
                   {"nbf", now - 60},          {"iat", now - 60},
                   {"jti", std::to_string(std::random_device{}())}, {"access", access}};
    std::string signing = Base64Url(header.dump()) + "." + Base64Url(claims.dump());
    EvpMdCtxPtr ctx(EVP_MD_CTX_new());
    EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_.get());
    size_t len = 0;
    EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(signing.data()), signing.size());
    std::string sig(len, '\0');
    EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                   reinterpret_cast<const unsigned char*>(signing.data()), signing.size());
    sig.resize(len);
    return signing + "." + Base64Url(sig);
  }

 private:
  TokenIssuer() = default;
  EvpPkeyPtr key_;
  std::string cert_der_b64_;
};

}  // namespace

// --- ScriptedHttpServer ----------------------------------------------------------

Result<std::unique_ptr<ScriptedHttpServer>> ScriptedHttpServer::Start(Handler handler) {
  auto s = std::unique_ptr<ScriptedHttpServer>(new ScriptedHttpServer());
  s->handler_ = std::move(handler);
  s->listen_.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s->listen_) return Error::FromErrno("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(s->listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return Error::FromErrno("bind");
  if (::listen(s->listen_.get(), 16) != 0) return Error::FromErrno("listen");
  socklen_t len = sizeof a;
  ::getsockname(s->listen_.get(), reinterpret_cast<sockaddr*>(&a), &len);
  s->port_ = ntohs(a.sin_port);
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Error::FromErrno("pipe2");
  s->stop_r_.Reset(p[0]);
  s->stop_w_.Reset(p[1]);
  s->thread_ = std::thread([srv = s.get()]() { srv->Loop(); });
  return s;
}

ScriptedHttpServer::~ScriptedHttpServer() {
  if (stop_w_) (void)!::write(stop_w_.get(), "x", 1);
  if (thread_.joinable()) thread_.join();
}

std::string ScriptedHttpServer::Response(int status, const std::string& content_type, const std::string& body,
                                         const std::string& extra_headers) {
  return "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: " + content_type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n" + extra_headers + "\r\n" +
         body;
}

void ScriptedHttpServer::Loop() {
  for (;;) {
    pollfd p[2] = {{listen_.get(), POLLIN, 0}, {stop_r_.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents != 0) return;
    UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!c) continue;
    std::string in;
    auto deadline = Clock::now() + std::chrono::seconds(5);
    while (in.find("\r\n\r\n") == std::string::npos && in.size() < 65536 && Clock::now() < deadline) {
      pollfd cp{c.get(), POLLIN, 0};
      if (::poll(&cp, 1, 200) <= 0) continue;
      char buf[4096];
      ssize_t n = ::read(c.get(), buf, sizeof buf);
      if (n <= 0) break;
      in.append(buf, static_cast<size_t>(n));
      if (in[0] == 0x16) break;  // a TLS ClientHello: not spoken here, close
    }
    size_t end = in.find("\r\n\r\n");
    if (end == std::string::npos) continue;  // e.g. a TLS ClientHello: just close
    Request req;
    std::string head = in.substr(0, end);
    size_t eol = head.find("\r\n");
    std::string line = head.substr(0, eol);
    size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == std::string::npos || sp2 == sp1) continue;
    req.method = line.substr(0, sp1);
    req.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    size_t pos = eol == std::string::npos ? head.size() : eol + 2;
    while (pos < head.size()) {
      size_t e = head.find("\r\n", pos);
      std::string h = head.substr(pos, e == std::string::npos ? std::string::npos : e - pos);
      size_t colon = h.find(':');
      if (colon != std::string::npos) {
        std::string k = h.substr(0, colon);
        for (char& ch : k) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        std::string v = h.substr(colon + 1);
        while (!v.empty() && v.front() == ' ') v.erase(0, 1);
        req.headers[k] = v;
      }
      if (e == std::string::npos) break;
      pos = e + 2;
    }
    ++requests_;
    std::string resp = handler_(req);
    (void)WriteAll(c.get(), resp);
  }
}

// --- RegistryServer --------------------------------------------------------------

Result<int> FreePort() {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return Error::FromErrno("bind");
  socklen_t len = sizeof a;
  ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len);
  return static_cast<int>(ntohs(a.sin_port));
}

// What the token server issued, and the lifetimes of the next tokens.
struct RegistryServer::Tokens {
  mutable std::mutex mu;
  std::deque<int> next_lifetimes;
  std::vector<std::string> issued;
};

void RegistryServer::SetNextTokenLifetimes(std::vector<int> seconds) {
  MSB_CHECK(tokens_ != nullptr, "token lifetimes need a token registry");
  std::lock_guard<std::mutex> lock(tokens_->mu);
  tokens_->next_lifetimes.assign(seconds.begin(), seconds.end());
}

std::vector<std::string> RegistryServer::IssuedTokens() const {
  if (tokens_ == nullptr) return {};
  std::lock_guard<std::mutex> lock(tokens_->mu);
  return tokens_->issued;
}

Result<int> RegistryServer::StatusWithToken(const std::string& token) const {
  image::http::ClientOptions co;
  std::string ca = ca_file_;
  co.policy = [ca](const std::string&) { return image::http::HostPolicy{ca.empty(), ca, ""}; };
  co.idle_timeout = std::chrono::milliseconds(2000);
  image::http::HttpClient client(co);
  image::http::Request req;
  MSB_TRY(req.url, image::http::ParseUrl("https://" + host_port() + "/v2/"));
  req.headers.emplace_back("Authorization", "Bearer " + token);
  MSB_TRY(image::http::Response r, client.Do(req));
  return r.status;
}

std::string RegistryServer::token_host_port() const { return token_server_ ? token_server_->host_port() : ""; }
int RegistryServer::BlobFetches(int status) const {
  auto log = ReadFile(log_file_);
  if (!log.ok()) return -1;
  int n = 0;
  size_t at = 0;
  // The access log's request lines: "GET /v2/<repo>/blobs/sha256:<hex> HTTP/1.1".
  while ((at = log->find("\"GET /v2/", at)) != std::string::npos) {
    size_t end = log->find('"', at + 1);
    if (end == std::string::npos) break;
    // Then the status: "GET ... HTTP/1.1" 401 ...
    bool status_matches = status == 0 || log->compare(end + 1, 5, " " + std::to_string(status) + " ") == 0;
    if (log->substr(at, end - at).find("/blobs/sha256:") != std::string::npos && status_matches) ++n;
    at = end;
  }
  return n;
}

int RegistryServer::token_requests() const { return token_server_ ? token_server_->requests() : 0; }

std::string RegistryServer::BlobDataPath(const std::string& digest) const {
  std::string hex = digest.substr(7);
  return storage_dir_ + "/docker/registry/v2/blobs/sha256/" + hex.substr(0, 2) + "/" + hex + "/data";
}

Result<std::unique_ptr<RegistryServer>> RegistryServer::Start(RegistryMode mode, const std::string& work_dir,
                                                             const RegistryServerOptions& options) {
  // The free port may be taken between FreePort and the registry's bind.
  for (int attempt = 1;; ++attempt) {
    auto s = StartOnce(mode, work_dir, options);
    if (s.ok() || attempt == 3 || s.error().message().find("address already in use") == std::string::npos) return s;
  }
}

Result<std::unique_ptr<RegistryServer>> RegistryServer::StartOnce(RegistryMode mode, const std::string& work_dir,
                                                                 const RegistryServerOptions& options) {
  auto s = std::unique_ptr<RegistryServer>(new RegistryServer());
  s->mode_ = mode;
  s->work_dir_ = work_dir;
  s->storage_dir_ = work_dir + "/storage";
  MSB_TRY_STATUS(MakeDirs(s->storage_dir_));
  MSB_TRY(s->port_, FreePort());
  std::string cfg = "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n"
                    "storage:\n  filesystem:\n    rootdirectory: " + s->storage_dir_ +
                    "\n  delete:\n    enabled: true\n"
                    "http:\n  addr: 127.0.0.1:" + std::to_string(s->port_) + "\n  secret: msb-test-secret\n";
  if (mode != RegistryMode::kPlain) {
    const std::string& d = work_dir;
    s->cert_dir_ = d + "/certs";
    MSB_TRY_STATUS(MakeDirs(s->cert_dir_));
    s->ca_file_ = s->cert_dir_ + "/ca.crt";
    MSB_TRY_STATUS(Run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", d + "/ca.key", "-out", s->ca_file_, "-days", "2", "-subj",
                        "/CN=msb-test-ca", "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
                        "keyUsage=critical,keyCertSign,cRLSign"}));
    MSB_TRY_STATUS(Run({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", d + "/server.key", "-out", d + "/server.csr", "-subj", "/CN=127.0.0.1"}));
    std::string san = "IP:127.0.0.1,DNS:localhost";
    for (const auto& name : options.dns_names) san += ",DNS:" + name;
    MSB_TRY_STATUS(WriteFileAtomic(d + "/server.ext",
                                   "subjectAltName=" + san + "\nbasicConstraints=CA:FALSE\n"
                                   "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"));
    MSB_TRY_STATUS(Run({"openssl", "x509", "-req", "-in", d + "/server.csr", "-CA", s->ca_file_, "-CAkey",
                        d + "/ca.key", "-CAcreateserial", "-out", d + "/server.crt", "-days", "2", "-extfile",
                        d + "/server.ext"}));
    cfg += "  tls:\n    certificate: " + d + "/server.crt\n    key: " + d + "/server.key\n";
    if (options.require_client_cert) {
      MSB_TRY_STATUS(Run({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                          "-keyout", s->cert_dir_ + "/client.key", "-out", d + "/client.csr", "-subj",
                          "/CN=msb-test-client"}));
      MSB_TRY_STATUS(WriteFileAtomic(d + "/client.ext", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"));
      MSB_TRY_STATUS(Run({"openssl", "x509", "-req", "-in", d + "/client.csr", "-CA", s->ca_file_, "-CAkey",
                          d + "/ca.key", "-CAcreateserial", "-out", s->cert_dir_ + "/client.cert", "-days", "2",
                          "-extfile", d + "/client.ext"}));
      cfg += "    clientcas:\n      - " + s->ca_file_ + "\n";
    }
  }
  if (mode == RegistryMode::kTlsBasic) {
    MSB_TRY(RunResult h, RunCapture({"htpasswd", "-Bbn", s->username_, s->password_}, false));
    if (h.status.ShellCode() != 0) return Error(ErrorCode::kInternal, "htpasswd failed");
    MSB_TRY_STATUS(WriteFileAtomic(work_dir + "/htpasswd", h.output));
    cfg += "auth:\n  htpasswd:\n    realm: msb-test\n    path: " + work_dir + "/htpasswd\n";
  } else if (mode == RegistryMode::kTlsToken) {
    const std::string& d = work_dir;
    MSB_TRY_STATUS(Run({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d + "/token.key",
                        "-out", d + "/token.crt", "-days", "2", "-subj", "/CN=msb-test-token-signer"}));
    MSB_TRY(std::unique_ptr<TokenIssuer> issuer, TokenIssuer::Load(d + "/token.key", d + "/token.crt"));
    std::string user = s->username_, pass = s->password_;
    std::shared_ptr<TokenIssuer> shared_issuer(std::move(issuer));
    s->tokens_ = std::make_shared<Tokens>();
    std::shared_ptr<Tokens> tokens = s->tokens_;
    MSB_TRY(s->token_server_, ScriptedHttpServer::Start([shared_issuer, tokens, user, pass](
                                                            const ScriptedHttpServer::Request& r) {
      auto it = r.headers.find("authorization");
      std::string expect = "Basic " + Base64Encode(user + ":" + pass);
      if (it == r.headers.end() || it->second != expect) {
        return ScriptedHttpServer::Response(401, "application/json", R"({"details":"bad credentials"})",
                                            "WWW-Authenticate: Basic realm=\"token\"\r\n");
      }
      std::vector<std::string> scopes;
      QueryParam(r.target, "scope", &scopes);
      json access = json::array();
      for (const auto& sc : scopes) {
        // repository:NAME:ACTIONS (NAME has no ':' here)
        size_t a = sc.find(':'), b = sc.rfind(':');
        if (a == std::string::npos || b == a) continue;
        json actions = json::array();
        std::string acts = sc.substr(b + 1);
        size_t p = 0;
        while (p <= acts.size()) {
          size_t c = acts.find(',', p);
          actions.push_back(acts.substr(p, c == std::string::npos ? std::string::npos : c - p));
          if (c == std::string::npos) break;
          p = c + 1;
        }
        access.push_back({{"type", sc.substr(0, a)}, {"name", sc.substr(a + 1, b - a - 1)}, {"actions", actions}});
      }
      std::lock_guard<std::mutex> lock(tokens->mu);
      int lifetime = 600;
      if (!tokens->next_lifetimes.empty()) {
        lifetime = tokens->next_lifetimes.front();
        tokens->next_lifetimes.pop_front();
      }
      std::string tok = shared_issuer->Issue(user, QueryParam(r.target, "service"), access, lifetime);
      tokens->issued.push_back(tok);
      return ScriptedHttpServer::Response(200, "application/json",
                                          json({{"token", tok}, {"expires_in", 600}}).dump());
    }));
    cfg += "auth:\n  token:\n    realm: http://" + s->token_server_->host_port() +
           "/token\n    service: msb-test-registry\n    issuer: msb-test-issuer\n    rootcertbundle: " + d +
           "/token.crt\n";
  }
  std::string cfg_path = work_dir + "/config.yml";
  MSB_TRY_STATUS(WriteFileAtomic(cfg_path, cfg));
  s->log_file_ = work_dir + "/registry.log";
  UniqueFd log(::open(s->log_file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  SpawnOptions so;
  so.argv = {"/usr/bin/docker-registry", "serve", cfg_path};
  so.stdout_fd = log.get();
  so.stderr_fd = log.get();
  so.parent_death_signal = SIGKILL;
  MSB_TRY(s->registry_, ChildProcess::Spawn(so));

  // Ready when /v2/ answers at all (200 or 401).
  image::http::ClientOptions co;
  std::string ca = s->ca_file_;
  std::string client_dir = options.require_client_cert ? s->cert_dir_ : "";
  co.policy = [ca, client_dir](const std::string&) { return image::http::HostPolicy{ca.empty(), ca, client_dir}; };
  co.idle_timeout = std::chrono::milliseconds(2000);
  image::http::HttpClient client(co);
  image::http::Request req;
  MSB_TRY(req.url, image::http::ParseUrl(std::string(mode == RegistryMode::kPlain ? "http" : "https") + "://" +
                                      s->host_port() + "/v2/"));
  auto deadline = Clock::now() + std::chrono::seconds(20);
  std::string last;
  for (;;) {
    if (auto st = s->registry_.TryWait()) {
      auto log_text = ReadFile(s->log_file_);
      return Error(ErrorCode::kUnavailable, "docker-registry exited (" + st->ToString() + "): " +
                                                (log_text.ok() ? *log_text : ""));
    }
    auto r = client.Do(req);
    if (r.ok() && (r->status == 200 || r->status == 401)) break;
    last = r.ok() ? "HTTP " + std::to_string(r->status) : r.error().message();
    if (Clock::now() > deadline) return Error(ErrorCode::kTimeout, "docker-registry not ready: " + last);
    ::poll(nullptr, 0, 20);  // poll interval of a readiness probe with a deadline
  }
  return s;
}

RegistryServer::~RegistryServer() {
  if (registry_.running()) {
    registry_.Kill(SIGKILL);
    registry_.Wait();
  }
}

Status RegistryServer::Push(const std::string& layout, const std::string& tag, const std::string& repo_tag) const {
  std::vector<std::string> argv = {"skopeo", "--insecure-policy", "copy", "-q"};
  if (mode_ == RegistryMode::kPlain) {
    argv.push_back("--dest-tls-verify=false");
  } else {
    argv.push_back("--dest-cert-dir=" + cert_dir_);
    argv.push_back("--dest-creds=" + username_ + ":" + password_);
  }
  argv.push_back("oci:" + layout + ":" + tag);
  argv.push_back("docker://" + host_port() + "/" + repo_tag);
  return Run(argv);
}

Status MakeTestLayout(const std::string& dir, const std::string& tag) {
  return Run({std::string(MSB_TEST_SOURCE_DIR) + "/tests/support/make-test-image", dir, tag});
}

}  // namespace msb::testing

namespace msb::testing {

Result<std::string> CachedTestLayout(const std::string& tag) {
  std::string script = std::string(MSB_TEST_SOURCE_DIR) + "/tests/support/make-test-image";
  MSB_TRY(std::string hash, Sha256File(script));
  const char* build = std::getenv("MSB_BUILD_DIR");
  std::string root = std::string(build != nullptr && *build != '\0' ? build : "/tmp") + "/test-images";
  MSB_TRY_STATUS(MakeDirs(root));
  std::string dest = root + "/" + hash.substr(0, 16) + "-" + tag;
  if (::access((dest + "/index.json").c_str(), F_OK) == 0) return dest;
  std::string tmp = dest + ".tmp." + std::to_string(::getpid());
  MSB_TRY_STATUS(MakeTestLayout(tmp, tag));
  if (::rename(tmp.c_str(), dest.c_str()) != 0) {
    // Another process won the race: use its copy.
    (void)RunCapture({"rm", "-rf", tmp});
    if (::access((dest + "/index.json").c_str(), F_OK) != 0) return Error::FromErrno("rename " + tmp);
  }
  return dest;
}

}  // namespace msb::testing
