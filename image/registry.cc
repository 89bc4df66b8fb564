// Distribution API v2 requests and their auth dance; see registry.h.
#include "image/registry.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "common/base64.h"
#include "common/log.h"
#include "image/oci.h"

namespace msb::image {
namespace {

using nlohmann::json;

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string BareType(const std::string& t) {
  std::string s = t.substr(0, t.find(';'));
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return Lower(s);
}

bool LooksLikeHtml(const http::Response& resp) {
  std::string ct = BareType(resp.Header("content-type"));
  if (ct == "text/html" || ct == "application/xhtml+xml") return true;
  std::string head = Lower(resp.body.substr(0, 200));
  size_t i = head.find_first_not_of(" \t\r\n");
  return i != std::string::npos && head.compare(i, 1, "<") == 0;
}

// The registry's error codes ("MANIFEST_UNKNOWN") from a JSON error body.
std::vector<std::string> ErrorCodes(const std::string& body) {
  std::vector<std::string> codes;
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return codes;
  auto e = j.find("errors");
  if (e == j.end() || !e->is_array()) return codes;
  for (const auto& x : *e) {
    if (x.is_object() && x.contains("code") && x["code"].is_string()) codes.push_back(x["code"].get<std::string>());
  }
  return codes;
}

bool Has(const std::vector<std::string>& v, std::string_view s) { return std::find(v.begin(), v.end(), s) != v.end(); }

constexpr const char* kAccept =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json";

}  // namespace

std::string RegistryApiHost(const std::string& registry) {
  if (registry == "docker.io" || registry == "index.docker.io") return "registry-1.docker.io";
  return registry;
}

RegistryClient::RegistryClient(std::string registry, const RegistryConfig& config, std::optional<Credentials> creds)
    : registry_(std::move(registry)), config_(config), creds_(std::move(creds)) {
  http::ClientOptions opts;
  RegistryConfig cfg = config_;
  std::string reg = registry_;
  opts.policy = [cfg, reg](const std::string& host_port) {
    RegistryHostConfig h = cfg.For(host_port);
    // The registry's own name (without a port, it means :443).
    if (!h.insecure && h.ca_file.empty() && h.certs_dir.empty() && (host_port == RegistryApiHost(reg) + ":443")) {
      h = cfg.For(reg);
    }
    return http::HostPolicy{h.insecure, h.ca_file, h.certs_dir};
  };
  opts.proxy = http::ProxyEnv::FromEnvironment();
  http_ = std::make_unique<http::HttpClient>(std::move(opts));
  scheme_ = config_.For(registry_).insecure ? "" : "https";  // "": decide on first contact
}

RegistryClient::~RegistryClient() = default;

std::string RegistryClient::ApiHost() const { return RegistryApiHost(registry_); }

Error RegistryClient::FromStatus(const http::Response& resp, const std::string& what) const {
  std::vector<std::string> codes = ErrorCodes(resp.body);
  std::string st = std::to_string(resp.status);
  if (LooksLikeHtml(resp)) {
    return Error(ErrorCode::kProtocol, "registry " + registry_ + " answered " + what + " with an HTML page (HTTP " +
                                           st + "), not the registry API; check that " + registry_ +
                                           " is a registry's address");
  }
  if (resp.status == 404 || Has(codes, "MANIFEST_UNKNOWN") || Has(codes, "NAME_UNKNOWN") ||
      Has(codes, "BLOB_UNKNOWN")) {
    std::string why = Has(codes, "NAME_UNKNOWN")       ? "the repository does not exist"
                      : Has(codes, "MANIFEST_UNKNOWN") ? "no such tag or manifest"
                      : Has(codes, "BLOB_UNKNOWN")     ? "no such blob"
                                                       : "not found";
    return Error(ErrorCode::kNotFound,
                 "registry " + registry_ + " has no " + what + " (" + why + "); check the repository and tag");
  }
  if (resp.status == 401) {
    if (creds_) {
      return Error(ErrorCode::kInvalidArgument, "registry " + registry_ + " refused the credentials for " + what +
                                                    "; run msb login " + registry_);
    }
    return Error(ErrorCode::kInvalidArgument,
                 "registry " + registry_ + " requires credentials for " + what + "; run msb login " + registry_);
  }
  if (resp.status == 403) {
    return Error(ErrorCode::kInvalidArgument, "registry " + registry_ + " denied access to " + what +
                                                  (creds_ ? "; the account lacks pull rights" : "; run msb login " + registry_));
  }
  if (resp.status == 429) {
    return Error(ErrorCode::kUnavailable, "registry " + registry_ + " is rate limiting requests for " + what +
                                              "; try again later");
  }
  std::string detail = codes.empty() ? "" : " (" + codes[0] + ")";
  ErrorCode code = resp.status >= 500 ? ErrorCode::kUnavailable : ErrorCode::kProtocol;
  return Error(code, "registry " + registry_ + " answered HTTP " + st + detail + " for " + what);
}

Result<std::string> RegistryClient::FetchToken(const http::Challenge& ch, const std::string& scope) {
  std::string realm = ch.Param("realm");
  if (realm.empty()) {
    return Error(ErrorCode::kProtocol, "registry " + registry_ + " asked for a Bearer token without a realm");
  }
  MSB_TRY(http::Url url, http::ParseUrl(realm));
  std::string query;
  std::string service = ch.Param("service");
  std::string sc = ch.Param("scope").empty() ? scope : ch.Param("scope");
  if (!service.empty()) query += "service=" + http::QueryEscape(service);
  if (!sc.empty()) query += std::string(query.empty() ? "" : "&") + "scope=" + http::QueryEscape(sc);
  if (creds_ && !creds_->username.empty()) {
    query += std::string(query.empty() ? "" : "&") + "account=" + http::QueryEscape(creds_->username);
  }
  if (!query.empty()) url.target += (url.target.find('?') == std::string::npos ? "?" : "&") + query;
  http::Request req;
  req.url = url;
  if (creds_) {
    req.headers.emplace_back("Authorization",
                             "Basic " + Base64Encode(creds_->username + ":" + creds_->password));
  }
  auto resp = http_->Do(req);
  if (!resp.ok()) return resp.error().Wrap("getting a token for registry " + registry_ + " from " + url.Authority());
  if (resp->status == 401 || resp->status == 403) {
    if (creds_) {
      return Error(ErrorCode::kInvalidArgument, "registry " + registry_ + " refused the credentials for " +
                                                    (sc.empty() ? registry_ : sc) + "; run msb login " + registry_);
    }
    return Error(ErrorCode::kInvalidArgument, "registry " + registry_ + " requires credentials for " +
                                                  (sc.empty() ? registry_ : sc) + "; run msb login " + registry_);
  }
  if (resp->status != 200) {
    return Error(ErrorCode::kProtocol, "the token server " + url.Authority() + " of registry " + registry_ +
                                           " answered HTTP " + std::to_string(resp->status));
  }
  json j = json::parse(resp->body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Error(ErrorCode::kProtocol, "the token server " + url.Authority() + " of registry " + registry_ +
                                           " answered something that is not JSON");
  }
  for (const char* key : {"token", "access_token"}) {
    auto it = j.find(key);
    if (it != j.end() && it->is_string() && !it->get<std::string>().empty()) {
      std::string tok = it->get<std::string>();
      if (tok.size() > 64 * 1024 || tok.find_first_of("\r\n") != std::string::npos) break;
      return tok;
    }
  }
  return Error(ErrorCode::kProtocol, "the token server " + url.Authority() + " of registry " + registry_ +
                                         " answered without a token");
}

Result<http::Response> RegistryClient::Send(http::Request req, const std::string& scope, const std::string& what,
                                            const http::BodyCallback& on_body) {
  return SendWithHead(std::move(req), scope, what, on_body, nullptr);
}

Result<http::Response> RegistryClient::SendWithHead(http::Request req, const std::string& scope,
                                                    const std::string& what, const http::BodyCallback& on_body,
                                                    const http::HeadCallback& on_head) {
  std::string path = req.url.target;
  bool sent_credentials = false;
  bool fresh_token = false;  // the next attempt carries a token fetched for it
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::string scheme, auth;
    {
      std::lock_guard<std::mutex> lock(mu_);
      scheme = scheme_;
      auto it = authorization_.find(scope);
      if (it == authorization_.end()) it = authorization_.find("*");
      if (it != authorization_.end()) auth = it->second;
    }
    std::string use_scheme = scheme.empty() ? "https" : scheme;
    MSB_TRY(req.url, http::ParseUrl(use_scheme + "://" + ApiHost() + path));
    http::Request r = req;
    if (!auth.empty()) r.headers.emplace_back("Authorization", auth);
    auto resp = http_->Do(r, on_body, on_head);
    if (!resp.ok() && scheme.empty()) {
      // An insecure registry: https failed, so it speaks plain HTTP.
      MSB_LOG(kDebug, "registry") << registry_ << ": https failed (" << resp.error().message() << "), using http";
      {
        std::lock_guard<std::mutex> lock(mu_);
        scheme_ = "http";
      }
      MSB_TRY(r.url, http::ParseUrl("http://" + ApiHost() + path));
      resp = http_->Do(r, on_body, on_head);
    } else if (resp.ok() && scheme.empty()) {
      std::lock_guard<std::mutex> lock(mu_);
      scheme_ = "https";
    }
    if (!resp.ok()) return resp.error().Wrap("registry " + registry_ + ": " + what);
    if (resp->status != 401) return resp;
    std::string header = resp->Header("www-authenticate");
    auto refused = header.empty() ? Result<http::Challenge>(Error(ErrorCode::kProtocol, "no challenge"))
                                  : http::ParseChallenge(header);
    if (attempt > 0 && fresh_token && refused.ok() && refused->scheme == "bearer" &&
        refused->Param("error") != "insufficient_scope") {
      // The token its token server just issued is refused too: retrying
      // cannot help. (An expired token is met once: the retry carries a new
      // one.) Too little access is FromStatus's: credentials, or msb login.
      const auto& ch = refused;
      std::string said = ch->Param("error");
      if (!ch->Param("error_description").empty()) said += ": " + ch->Param("error_description");
      return Error(ErrorCode::kInvalidArgument,
                   "registry " + registry_ + " refused the token its token server had just issued for " + what +
                       (said.empty() ? "" : " (" + said.substr(0, 200) + ")") +
                       "; check that the registry and its token server agree (clocks, issuer, signing "
                       "certificate), or run msb login " + registry_);
    }
    if (attempt > 0 && (sent_credentials || !creds_)) return resp;  // FromStatus explains
    if (header.empty()) return resp;
    MSB_TRY(http::Challenge ch, http::ParseChallenge(header));
    std::string value;
    if (ch.scheme == "basic") {
      if (!creds_) return resp;
      value = "Basic " + Base64Encode(creds_->username + ":" + creds_->password);
      sent_credentials = true;
    } else if (ch.scheme == "bearer") {
      MSB_TRY(std::string token, FetchToken(ch, scope));
      value = "Bearer " + token;
      sent_credentials = creds_.has_value();
      fresh_token = true;
    } else {
      return Error(ErrorCode::kProtocol, "registry " + registry_ + " asked for unsupported authentication \"" +
                                             ch.scheme.substr(0, 40) + "\"");
    }
    std::lock_guard<std::mutex> lock(mu_);
    authorization_[ch.scheme == "basic" ? "*" : scope] = value;
  }
  return Error(ErrorCode::kProtocol, "registry " + registry_ + " kept asking for authentication for " + what);
}

Result<FetchedManifest> RegistryClient::GetManifest(const std::string& repository, const std::string& reference) {
  bool by_digest = reference.rfind("sha256:", 0) == 0;
  if (by_digest) MSB_TRY_STATUS(oci::ValidateDigest(reference, "image reference"));
  std::string what = "manifest " + repository + (by_digest ? "@" : ":") + reference;
  http::Request req;
  req.url.target = "/v2/" + repository + "/manifests/" + reference;
  req.headers.emplace_back("Accept", kAccept);
  // Bounded: manifests are small documents.
  std::string body;
  http::BodyCallback collect = [&body](std::string_view b) -> Status {
    if (body.size() + b.size() > oci::kMaxDocumentBytes) {
      return Error(ErrorCode::kProtocol, "manifest is larger than " + std::to_string(oci::kMaxDocumentBytes) + " bytes");
    }
    body.append(b);
    return OkStatus();
  };
  MSB_TRY(http::Response resp, Send(req, "repository:" + repository + ":pull", what, collect));
  if (resp.status != 200) return FromStatus(resp, what);
  resp.body = std::move(body);
  FetchedManifest m;
  m.content_type = BareType(resp.Header("content-type"));
  if (LooksLikeHtml(resp)) return FromStatus(resp, what);
  if (!json::accept(resp.body)) {
    return Error(ErrorCode::kProtocol, "registry " + registry_ + " answered " + what +
                                           " with something that is not JSON (Content-Type \"" + m.content_type +
                                           "\"); check that " + registry_ + " is a registry's address");
  }
  m.digest = oci::DigestOf(resp.body);
  std::string claimed = resp.Header("docker-content-digest");
  if (!claimed.empty() && claimed.rfind("sha256:", 0) == 0 && claimed != m.digest) {
    return Error(ErrorCode::kProtocol, "registry " + registry_ + " sent " + what + " whose bytes hash to " +
                                           m.digest + " but named it " + claimed.substr(0, 80));
  }
  if (by_digest && m.digest != reference) {
    return Error(ErrorCode::kProtocol, "registry " + registry_ + " sent " + what + " whose bytes hash to " + m.digest +
                                           ", not the digest asked for");
  }
  m.bytes = std::move(resp.body);
  return m;
}

Status RegistryClient::GetBlob(const std::string& repository, const std::string& digest, uint64_t offset,
                               const std::function<Status(uint64_t start, int64_t total)>& on_start,
                               const http::BodyCallback& on_body) {
  MSB_TRY_STATUS(oci::ValidateDigest(digest, "blob"));
  std::string what = "blob " + digest + " of " + repository;
  http::Request req;
  req.url.target = "/v2/" + repository + "/blobs/" + digest;
  if (offset > 0) req.headers.emplace_back("Range", "bytes=" + std::to_string(offset) + "-");
  http::HeadCallback head = [&](const http::Response& r) -> Status {
    uint64_t start = 0;
    int64_t total = -1;
    std::string cl = r.Header("content-length");
    if (r.status == 206) {
      auto cr = http::ParseContentRange(r.Header("content-range"));
      if (!cr.ok()) {
        return Error(ErrorCode::kProtocol,
                     "registry " + registry_ + " sent a " + cr.error().message() + " for " + what);
      }
      start = cr->first;
      total = cr->total;
      if (start != offset) {
        return Error(ErrorCode::kProtocol, "registry " + registry_ + " resumed " + what + " at byte " +
                                               std::to_string(start) + ", not " + std::to_string(offset));
      }
    } else if (r.status == 200) {
      if (!cl.empty() && cl.size() < 19 && std::all_of(cl.begin(), cl.end(), ::isdigit)) total = std::stoll(cl);
    } else {
      return Error(ErrorCode::kProtocol, "registry " + registry_ + " answered HTTP " + std::to_string(r.status) +
                                             " for " + what);
    }
    if (BareType(r.Header("content-type")) == "text/html") {
      return Error(ErrorCode::kProtocol, "registry " + registry_ + " answered " + what +
                                             " with an HTML page, not the blob");
    }
    return on_start ? on_start(start, total) : OkStatus();
  };
  MSB_TRY(http::Response resp, SendWithHead(req, "repository:" + repository + ":pull", what, on_body, head));
  if (resp.status == 416 && offset > 0) {
    return Error(ErrorCode::kProtocol, "registry " + registry_ + " refused to resume " + what + " at byte " +
                                           std::to_string(offset));
  }
  if (resp.status < 200 || resp.status >= 300) return FromStatus(resp, what);
  return OkStatus();
}

Status RegistryClient::CheckLogin() {
  http::Request req;
  req.url.target = "/v2/";
  MSB_TRY(http::Response resp, Send(req, "", "the API root /v2/", nullptr));
  if (resp.status == 200) {
    if (LooksLikeHtml(resp)) return FromStatus(resp, "the API root /v2/");
    return OkStatus();
  }
  return FromStatus(resp, "the API root /v2/");
}

Status RegistryClient::PutManifest(const std::string& repository, const std::string& reference,
                                   const std::string& media_type, const std::string& bytes) {
  std::string what = "manifest " + repository + ":" + reference;
  http::Request req;
  req.method = "PUT";
  req.url.target = "/v2/" + repository + "/manifests/" + reference;
  req.headers.emplace_back("Content-Type", media_type);
  req.body = bytes;
  MSB_TRY(http::Response resp, Send(req, "repository:" + repository + ":pull,push", what, nullptr));
  if (resp.status != 201 && resp.status != 200) {
    return FromStatus(resp, what).Wrap("uploading " + what + ": " + resp.body.substr(0, 300));
  }
  return OkStatus();
}

}  // namespace msb::image
