// Which HTTP proxy a registry request goes through, from the environment as
// docker users set it: http_proxy/HTTP_PROXY for http:// URLs,
// https_proxy/HTTPS_PROXY for https:// URLs (the lowercase name wins when both
// are set, as in curl), no_proxy/NO_PROXY for the hosts reached directly. Not
// the proxy protocol itself: image/http.cc sends absolute-form requests for
// plain HTTP and tunnels TLS through CONNECT.
//
// NO_PROXY is a comma-separated list, matched as curl does: "*" matches every
// host; "example.com" and ".example.com" match that name and every name under
// it ("*.example.com" is read as ".example.com"); an IP address matches that
// address; "10.0.0.0/8" or "fd00::/8" match an IP literal host inside the
// range. Names are compared without case and without a trailing dot. Names
// are never resolved for the match: a CIDR entry matches only hosts written
// as IP literals.
//
// Loopback: like docker (Go's net/http), "localhost" and loopback IP literals
// (127.0.0.0/8, ::1) never go through a proxy, whatever NO_PROXY says; a
// proxy elsewhere could not reach this host's loopback anyway. A name that
// merely resolves to a loopback address is proxied unless NO_PROXY lists it.
//
// Proxy URLs: [http://][USER[:PASSWORD]@]HOST[:PORT], port 80 when absent;
// USER and PASSWORD are percent-decoded and sent as Proxy-Authorization: Basic.
// They never appear in messages or logs: Display() leaves them out.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace msb::image::http {

struct Proxy {
  std::string host;  // without brackets for IPv6
  uint16_t port = 80;
  std::string username;
  std::string password;
  bool has_credentials = false;
  std::string source;  // the variable it came from, "HTTPS_PROXY"

  // "http://host:port (from HTTPS_PROXY)": for messages; never the credentials.
  std::string Display() const;
  // "host:port" (IPv6 in brackets), for connecting and messages.
  std::string HostPort() const;
  // The Proxy-Authorization value ("Basic ..."), "" without credentials.
  std::string Authorization() const;
};

// text as found in the variable `source`. Errors name the variable and say
// what is wrong, without repeating any credentials.
Result<Proxy> ParseProxyUrl(std::string_view text, const std::string& source);

// Whether host (a name or IP literal, IPv6 with or without brackets) matches
// the NO_PROXY list. Pure.
bool NoProxyMatches(std::string_view no_proxy, std::string_view host);

// "localhost" or a loopback IP literal. Pure.
bool IsLoopbackHost(std::string_view host);

struct ProxyEnv {
  std::optional<Proxy> http;
  std::optional<Proxy> https;
  std::string http_error;  // the http proxy variable is set but unusable: why
  std::string https_error;
  std::string no_proxy;

  using GetEnv = std::function<const char*(const char*)>;
  // Reads the variables through getenv (the process environment when null).
  static ProxyEnv FromEnvironment(const GetEnv& getenv = nullptr);

  // The proxy for a request to scheme://host: nullptr to go direct (no proxy
  // set for the scheme, NO_PROXY matches, or a loopback host); an error when
  // the scheme's variable is malformed.
  Result<const Proxy*> For(const std::string& scheme, const std::string& host) const;
};

}  // namespace msb::image::http
