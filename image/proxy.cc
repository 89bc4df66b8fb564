// Proxy variables and NO_PROXY matching; see proxy.h.
#include "image/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdlib>
#include <cstring>

#include "common/base64.h"

namespace msb::image::http {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string_view StripBrackets(std::string_view h) {
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') return h.substr(1, h.size() - 2);
  return h;
}

// An IP literal as family + 16 bytes (IPv4 in the first 4).
struct Ip {
  int family = 0;
  unsigned char bytes[16] = {};
};

bool ParseIp(std::string_view text, Ip* ip) {
  std::string s(StripBrackets(text));
  if (inet_pton(AF_INET, s.c_str(), ip->bytes) == 1) {
    ip->family = AF_INET;
    return true;
  }
  if (inet_pton(AF_INET6, s.c_str(), ip->bytes) == 1) {
    ip->family = AF_INET6;
    return true;
  }
  return false;
}

bool PrefixMatches(const Ip& a, const Ip& b, unsigned bits) {
  size_t whole = bits / 8;
  if (std::memcmp(a.bytes, b.bytes, whole) != 0) return false;
  unsigned rest = bits % 8;
  if (rest == 0) return true;
  unsigned char mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (a.bytes[whole] & mask) == (b.bytes[whole] & mask);
}

// One NO_PROXY entry against a host already lowercased, unbracketed and
// without a trailing dot.
bool EntryMatches(std::string_view entry, const std::string& host, bool host_is_ip, const Ip& host_ip) {
  if (entry == "*") return true;
  if (host_is_ip) {
    size_t slash = entry.find('/');
    Ip net;
    if (!ParseIp(entry.substr(0, slash), &net) || net.family != host_ip.family) return false;
    unsigned max_bits = net.family == AF_INET ? 32 : 128;
    unsigned bits = max_bits;
    if (slash != std::string_view::npos) {
      std::string_view b = entry.substr(slash + 1);
      if (b.empty() || b.size() > 3) return false;
      bits = 0;
      for (char c : b) {
        if (c < '0' || c > '9') return false;
        bits = bits * 10 + static_cast<unsigned>(c - '0');
      }
      if (bits > max_bits) return false;
    }
    return PrefixMatches(net, host_ip, bits);
  }
  if (entry.substr(0, 2) == "*.") entry.remove_prefix(1);
  if (!entry.empty() && entry.front() == '.') entry.remove_prefix(1);
  if (!entry.empty() && entry.back() == '.') entry.remove_suffix(1);
  if (entry.empty()) return false;
  if (host == entry) return true;
  return host.size() > entry.size() && host.compare(host.size() - entry.size(), entry.size(), entry) == 0 &&
         host[host.size() - entry.size() - 1] == '.';
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<std::string> PercentDecode(std::string_view s, const std::string& source) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    int hi = i + 2 < s.size() ? HexValue(s[i + 1]) : -1;
    int lo = i + 2 < s.size() ? HexValue(s[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      return Error(ErrorCode::kInvalidArgument, source + ": the user or password has a bad %-escape");
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

}  // namespace

std::string Proxy::HostPort() const {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string Proxy::Display() const { return "http://" + HostPort() + " (from " + source + ")"; }

std::string Proxy::Authorization() const {
  if (!has_credentials) return "";
  return "Basic " + Base64Encode(username + ":" + password);
}

Result<Proxy> ParseProxyUrl(std::string_view text, const std::string& source) {
  Proxy p;
  p.source = source;
  text = Trim(text);
  size_t sep = text.find("://");
  std::string_view rest = text;
  if (sep != std::string_view::npos) {
    std::string scheme = Lower(text.substr(0, sep));
    if (scheme != "http") {
      return Error(ErrorCode::kInvalidArgument,
                   source + ": proxies with scheme " + scheme.substr(0, 20) +
                       ":// are not supported; use an http:// proxy (TLS to the registry still goes through it, "
                       "tunnelled with CONNECT)");
    }
    rest = text.substr(sep + 3);
  }
  rest = rest.substr(0, rest.find_first_of("/?#"));
  size_t at = rest.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    size_t colon = userinfo.find(':');
    MSB_TRY(p.username, PercentDecode(userinfo.substr(0, colon), source));
    if (colon != std::string_view::npos) {
      MSB_TRY(p.password, PercentDecode(userinfo.substr(colon + 1), source));
    }
    p.has_credentials = true;
    for (const std::string* s : {&p.username, &p.password}) {
      if (s->find_first_of("\r\n") != std::string::npos) {
        return Error(ErrorCode::kInvalidArgument, source + ": the proxy user or password has a line break");
      }
    }
  }
  std::string_view port_s;
  if (!rest.empty() && rest.front() == '[') {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) {
      return Error(ErrorCode::kInvalidArgument, source + ": the proxy's IPv6 address lacks its closing ]");
    }
    p.host = std::string(rest.substr(1, close - 1));
    std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Error(ErrorCode::kInvalidArgument, source + ": bad proxy address");
      port_s = after.substr(1);
    }
  } else {
    size_t colon = rest.rfind(':');
    p.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) port_s = rest.substr(colon + 1);
  }
  p.host = Lower(p.host);
  if (p.host.empty() || p.host.find_first_of(" \t\r\n") != std::string::npos) {
    return Error(ErrorCode::kInvalidArgument,
                 source + ": no proxy host in it; expected http://HOST:PORT or http://USER:PASSWORD@HOST:PORT");
  }
  if (!port_s.empty()) {
    unsigned v = 0;
    for (char c : port_s) {
      if (c < '0' || c > '9' || v > 65535) {
        return Error(ErrorCode::kInvalidArgument, source + ": the proxy port is not a number");
      }
      v = v * 10 + static_cast<unsigned>(c - '0');
    }
    if (v == 0 || v > 65535) return Error(ErrorCode::kInvalidArgument, source + ": the proxy port is out of range");
    p.port = static_cast<uint16_t>(v);
  }
  return p;
}

bool IsLoopbackHost(std::string_view host) {
  std::string h = Lower(StripBrackets(host));
  if (!h.empty() && h.back() == '.') h.pop_back();
  if (h == "localhost") return true;
  Ip ip;
  if (!ParseIp(h, &ip)) return false;
  if (ip.family == AF_INET) return ip.bytes[0] == 127;
  static const unsigned char kLoop6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  static const unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(ip.bytes, kLoop6, 16) == 0) return true;
  return std::memcmp(ip.bytes, kMapped, 12) == 0 && ip.bytes[12] == 127;
}

bool NoProxyMatches(std::string_view no_proxy, std::string_view host_in) {
  std::string host = Lower(StripBrackets(host_in));
  if (!host.empty() && host.back() == '.') host.pop_back();
  Ip ip;
  bool is_ip = ParseIp(host, &ip);
  size_t pos = 0;
  while (pos <= no_proxy.size()) {
    size_t comma = no_proxy.find(',', pos);
    std::string entry = Lower(Trim(no_proxy.substr(pos, comma == std::string_view::npos ? std::string_view::npos
                                                                                         : comma - pos)));
    if (!entry.empty() && entry.front() == '[') {
      size_t close = entry.find(']');
      if (close != std::string::npos) entry = entry.substr(1, close - 1) + entry.substr(close + 1);
    }
    if (!entry.empty() && EntryMatches(entry, host, is_ip, ip)) return true;
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return false;
}

ProxyEnv ProxyEnv::FromEnvironment(const GetEnv& getenv_fn) {
  auto get = [&](const char* name) -> const char* {
    const char* v = getenv_fn ? getenv_fn(name) : std::getenv(name);
    return v != nullptr && *v != '\0' ? v : nullptr;
  };
  ProxyEnv env;
  auto read = [&](const char* lower, const char* upper, std::optional<Proxy>* out, std::string* error) {
    const char* name = lower;
    const char* v = get(lower);
    if (v == nullptr) {
      name = upper;
      v = get(upper);
    }
    if (v == nullptr) return;
    auto p = ParseProxyUrl(v, name);
    if (p.ok()) *out = std::move(*p);
    else *error = p.error().message();
  };
  read("http_proxy", "HTTP_PROXY", &env.http, &env.http_error);
  read("https_proxy", "HTTPS_PROXY", &env.https, &env.https_error);
  const char* np = get("no_proxy");
  if (np == nullptr) np = get("NO_PROXY");
  if (np != nullptr) env.no_proxy = np;
  return env;
}

Result<const Proxy*> ProxyEnv::For(const std::string& scheme, const std::string& host) const {
  bool https = scheme == "https";
  const std::optional<Proxy>& p = https ? this->https : this->http;
  const std::string& error = https ? https_error : http_error;
  if (!p && error.empty()) return static_cast<const Proxy*>(nullptr);
  if (IsLoopbackHost(host) || NoProxyMatches(no_proxy, host)) return static_cast<const Proxy*>(nullptr);
  if (!p) return Error(ErrorCode::kInvalidArgument, error);
  return &*p;
}

}  // namespace msb::image::http
