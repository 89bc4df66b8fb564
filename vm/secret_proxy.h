// SecretProxy: the supervisor's side of secret injection on the wire. The
// network attachment (vm/network.h) hands it every TCP flow the policy
// allowed, as a socket connecting to the judged destination; the proxy gives
// the stack back one end of a socketpair and carries the flow between the
// two. Not the judgement: secrets/substitute.h decides each request, and
// secrets/client_hello.h whether a flow is intercepted at all.
//
// Theory of operation (one flow; docs/secrets.md has the picture)
//
//   connecting   the upstream connect completes (a failure hands back no
//                stream, so the stack answers the guest's SYN with RST, as
//                it does without secrets);
//   peeking      guest bytes are held, nothing goes upstream, until
//                PeekClientHello is final. Bytes from upstream first (a
//                server that speaks first) end the peek: relayed.
//   relayed      kNotTls, kMalformed, or TLS whose SNI matches no secret's
//                allow list: bytes are copied both ways untouched (the guest
//                sees the upstream's own certificate). A flow whose first
//                bytes are an HTTP request line is relayed through the HTTP
//                parser instead (plain): requests without a placeholder go on
//                byte for byte, one with a placeholder is blocked (gate 0: a
//                value never travels in clear text), and anything the parser
//                refuses switches the flow to plain copying, since no value
//                can be in it.
//   upstream     kTls with a matching SNI: a TLS client session to the judged
//                address, SNI the guest's, ALPN http/1.1, TLS >= 1.2, the
//                certificate verified for the name against OpenSSL's default
//                paths plus ProxyOptions::extra_ca_pem. A failure closes the
//                guest's connection before its handshake completes, and the
//                log says why.
//   intercepted  then a TLS server to the guest with the leaf the sandbox CA
//                mints for the SNI (ALPN http/1.1 when offered, else none).
//                Guest requests go through HttpRequestParser and the
//                SubstitutionEngine one at a time; a blocked request or a
//                refusal gets its response and the flow closes with nothing
//                of it upstream. Responses are relayed unparsed.
// Either side's end (EOF or close_notify) is passed on as a half-close once
// the bytes before it are written; the flow ends when both directions have.
//
// Limits: at most ProxyOptions::buffer_bytes are queued towards each socket
// before the proxy stops reading the other; a request is buffered whole up
// to the parser's limits (secrets/http_request.h), and its raw bytes (chunk
// framing included) to kMaxRawRequest. Flows end after ProxyOptions::idle
// without a byte, or half_closed_idle once one side ended; at most
// max_flows at once. Log lines about blocks (secrets/counters.h), refusals
// and failed upstreams are rate-limited.
//
// Responses on intercepted flows are relayed unparsed but scanned for every
// secret's value (an upstream that echoes a header, a query or a body back):
// a value found closes the flow before those bytes reach the guest. Bytes
// that end in the first kMinHeldPrefix or more bytes of a value are held
// until the next read decides (or the upstream ends). On intercepted flows
// TRACE, TRACK and requests asking for a protocol upgrade are refused: an
// echo, and a stream the parser could not follow.
// Single-threaded: everything runs on the dispatcher's thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/dispatcher.h"
#include "common/fd.h"
#include "common/result.h"
#include "secrets/ca.h"
#include "secrets/counters.h"
#include "secrets/http_request.h"
#include "secrets/substitute.h"

namespace msb::vm {

// The raw bytes one request may span before it is refused (a chunked body's
// framing can be many times its decoded size).
inline constexpr size_t kMaxRawRequest = 2 * secrets::kMaxBodyBytes;
inline constexpr size_t kMinHeldPrefix = 4;

struct ProxyOptions {
  std::string extra_ca_pem;                // network.tls.ca: more trust anchors for upstreams
  size_t buffer_bytes = 256 * 1024;        // queued towards one socket before reading stops
  size_t max_flows = 8192;                 // more are refused (the guest's SYN gets a RST)
  std::chrono::milliseconds idle{2 * 60 * 60 * 1000};    // a flow with no byte either way ends
  std::chrono::milliseconds half_closed_idle{60 * 1000};  // ... once either side has ended
};

// What the policy decided about a flow, for the gates and the log.
struct ProxyFlow {
  std::string dest_ip;  // the address the policy judged, as text
  uint16_t dest_port = 0;
  std::string label;    // "src:port -> dst:port"
};

class SecretProxy {
 public:
  using Ready = std::function<void(UniqueFd stream)>;

  // bindings view SecretValues the owner keeps alive until ReplaceBindings
  // or the proxy's end. pinned: gate 2.
  static Result<std::unique_ptr<SecretProxy>> Create(Dispatcher& dispatcher,
                                                     std::vector<secrets::SecretBinding> bindings,
                                                     secrets::CertificateAuthority ca, ProxyOptions options,
                                                     secrets::PinCheck pinned);
  ~SecretProxy();

  // Takes a flow: upstream is a non-blocking socket whose connect is in
  // progress (or done). ready runs once, from the loop: with the stream the
  // stack carries the guest's side on, or with no fd when the connect failed.
  void Open(UniqueFd upstream, ProxyFlow flow, Ready ready);

  // New bindings (new values, same names and hosts); every later request is
  // judged by them. The old values may go once this returns.
  void ReplaceBindings(std::vector<secrets::SecretBinding> bindings);

  std::string CaPem() const { return ca_.CertificatePem(); }
  // {"VAR": {"substituted": N, "blocked": N}} for every bound secret.
  nlohmann::json CountersJson() const;
  size_t flows() const { return conns_.size(); }
  uint64_t intercepted() const { return intercepted_; }

 private:
  class Conn;
  friend class Conn;
  SecretProxy(Dispatcher& dispatcher, secrets::CertificateAuthority ca, ProxyOptions options,
              secrets::PinCheck pinned);
  Status InitTls();
  void Finish(uint64_t id);
  // A warning at most once per kind per secrets::kBlockLogInterval.
  void LogLimited(const std::string& kind, const std::string& line);

  Dispatcher& dispatcher_;
  secrets::CertificateAuthority ca_;
  ProxyOptions options_;
  secrets::PinCheck pinned_;
  std::unique_ptr<secrets::SubstitutionEngine> engine_;
  secrets::InjectionCounters counters_;
  struct SslCtxDeleter {
    void operator()(struct ssl_ctx_st* ctx) const;
  };
  std::unique_ptr<struct ssl_ctx_st, SslCtxDeleter> server_ctx_, client_ctx_;
  std::map<uint64_t, std::unique_ptr<Conn>> conns_;
  uint64_t next_id_ = 1;
  uint64_t intercepted_ = 0;
  struct Limited {
    std::chrono::steady_clock::time_point last{};
    bool logged = false;
    uint64_t held = 0;
  };
  std::map<std::string, Limited> limited_;
};

}  // namespace msb::vm
