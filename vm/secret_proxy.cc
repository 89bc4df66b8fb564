// SecretProxy: peeks, relays or intercepts one sandbox's TCP flows; see
// vm/secret_proxy.h.
#include "vm/secret_proxy.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string_view>
#include <utility>

#include "common/c_ptr.h"
#include "common/log.h"
#include "secrets/client_hello.h"
#include "secrets/http_request.h"
#include "secrets/placeholder.h"

namespace msb::vm {
namespace {

constexpr size_t kReadChunk = 64 * 1024;
constexpr std::string_view kHttp11 = "http/1.1";

std::string OpenSslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no OpenSSL error recorded" : out;
}

// An HTTP request line begins: a method token and a space.
bool LooksLikeHttp(std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size() && i < 16 && bytes[i] >= 'A' && bytes[i] <= 'Z') ++i;
  return i > 0 && i < bytes.size() && bytes[i] == ' ';
}

int SelectHttp11(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                 unsigned int inlen, void*) {
  // The client's list: length-prefixed names. Only http/1.1 is spoken.
  for (unsigned int i = 0; i < inlen;) {
    unsigned int n = in[i];
    if (i + 1 + n > inlen) break;
    if (std::string_view(reinterpret_cast<const char*>(in + i + 1), n) == kHttp11) {
      *out = in + i + 1;
      *outlen = static_cast<unsigned char>(n);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + n;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

// One TLS session over memory BIOs: the connection feeds it ciphertext and
// sends what it writes.
struct TlsEnd {
  SslPtr ssl;
  BIO* in = nullptr;   // owned by ssl
  BIO* out = nullptr;  // owned by ssl
  bool handshaken = false;

  explicit operator bool() const { return ssl != nullptr; }
  static std::optional<TlsEnd> Make(SSL_CTX* ctx) {
    TlsEnd t;
    t.ssl.reset(SSL_new(ctx));
    if (!t.ssl) return std::nullopt;
    t.in = BIO_new(BIO_s_mem());
    t.out = BIO_new(BIO_s_mem());
    if (t.in == nullptr || t.out == nullptr) {
      BIO_free(t.in);
      BIO_free(t.out);
      return std::nullopt;
    }
    BIO_set_mem_eof_return(t.in, -1);
    BIO_set_mem_eof_return(t.out, -1);
    SSL_set_bio(t.ssl.get(), t.in, t.out);
    return t;
  }
  size_t pending_in() const { return static_cast<size_t>(BIO_pending(in)); }
  void Feed(std::string_view bytes) { BIO_write(in, bytes.data(), static_cast<int>(bytes.size())); }
  void DrainTo(std::string* out_bytes) {
    char buf[16 * 1024];
    int n;
    while ((n = BIO_read(out, buf, sizeof(buf))) > 0) out_bytes->append(buf, static_cast<size_t>(n));
  }
};

}  // namespace

void SecretProxy::SslCtxDeleter::operator()(ssl_ctx_st* ctx) const { SSL_CTX_free(ctx); }

// One flow. Owned by the proxy; ends through SecretProxy::Finish.
class SecretProxy::Conn {
 public:
  Conn(SecretProxy* proxy, uint64_t id, UniqueFd upstream, ProxyFlow flow, Ready ready)
      : proxy_(proxy), id_(id), flow_(std::move(flow)), ready_(std::move(ready)) {
    u_.fd = std::move(upstream);
  }

  void Start() {
    idle_ = proxy_->dispatcher_.Timer([this] { OnIdle(); });
    idle_.Arm(proxy_->options_.idle);
    last_ = std::chrono::steady_clock::now();
    Rewatch(u_);
  }

 private:
  enum class Mode { kConnecting, kPeeking, kRelay, kPlain, kUpstream, kIntercepted, kClosing };
  struct Side {
    UniqueFd fd;
    EventHandle watch;  // after fd: unregistered before the fd closes
    short flags = 0;
    std::string out;       // bytes queued towards this socket
    bool eof = false;      // read EOF (or a read error)
    bool shut = false;     // our write side is shut down
  };

  Side& Other(Side& s) { return &s == &g_ ? u_ : g_; }
  size_t limit() const { return proxy_->options_.buffer_bytes; }

  bool WantRead(const Side& s) const {
    if (s.eof || finished_) return false;
    bool guest = &s == &g_;
    switch (mode_) {
      case Mode::kConnecting:
      case Mode::kClosing:
        return false;
      case Mode::kPeeking:
        return guest ? peek_.size() <= secrets::kMaxClientHelloBytes : true;
      case Mode::kRelay:
        return guest ? !g_done_ && u_.out.size() < limit() : !u_done_ && g_.out.size() < limit();
      case Mode::kPlain:
        return guest ? !g_done_ && u_.out.size() < limit() : !u_done_ && g_.out.size() < limit();
      case Mode::kUpstream:
        return guest ? peek_.size() < limit() : us_.pending_in() < limit();
      case Mode::kIntercepted:
        return guest ? !g_done_ && gs_.pending_in() < limit() && u_.out.size() < limit()
                     : !u_done_ && us_.pending_in() < limit() && g_.out.size() < limit();
    }
    return false;
  }

  void Rewatch(Side& s) {
    if (finished_ || !s.fd) return;
    short want = 0;
    if (mode_ == Mode::kConnecting) {
      want = &s == &u_ ? Dispatcher::kWrite : 0;
    } else {
      if (WantRead(s)) want |= Dispatcher::kRead;
      if (!s.out.empty()) want |= Dispatcher::kWrite;
    }
    if (want == s.flags && (want == 0 || s.watch.active())) return;
    s.watch.Reset();
    s.flags = want;
    if (want != 0) s.watch = proxy_->dispatcher_.WatchFd(s.fd.get(), want, [this, &s](short f) { OnReady(s, f); });
  }

  void OnReady(Side& s, short flags) {
    if (finished_) return;
    if (mode_ == Mode::kConnecting) return OnConnected();
    if (flags & Dispatcher::kWrite) Flush(s);
    if (!finished_ && (flags & Dispatcher::kRead)) Read(s);
    Settle();
  }

  // After any event: move bytes as far as they go, pass ends on, rewatch.
  void Settle() {
    if (finished_) return;
    if (mode_ == Mode::kIntercepted || mode_ == Mode::kUpstream) PumpTls();
    if (finished_) return;
    PassEnds();
    if (finished_) return;
    Rewatch(g_);
    Rewatch(u_);
  }

  void OnConnected() {
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(u_.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err == EINPROGRESS || err == EALREADY) return;
    int pair[2];
    if (err != 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0) {
      return End();  // ready_ gets no stream: the guest's SYN is refused
    }
    g_.fd = UniqueFd(pair[0]);
    mode_ = Mode::kPeeking;
    u_.watch.Reset();
    u_.flags = 0;
    Ready ready = std::move(ready_);
    ready(UniqueFd(pair[1]));
    Settle();
  }

  // Ends a flow that moved no byte for the idle limit (shorter once a side
  // ended: a guest that resets its side leaves nothing behind).
  void OnIdle() {
    if (finished_) return;
    auto limit = (g_.eof || u_.eof || g_done_ || u_done_) ? proxy_->options_.half_closed_idle
                                                           : proxy_->options_.idle;
    auto quiet = std::chrono::steady_clock::now() - last_;
    if (quiet >= limit) return End();
    idle_.Arm(std::chrono::duration_cast<std::chrono::milliseconds>(limit - quiet) + std::chrono::milliseconds(1));
  }

  void Read(Side& s) {
    char buf[kReadChunk];
    ssize_t n = ::read(s.fd.get(), buf, sizeof(buf));
    last_ = std::chrono::steady_clock::now();
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      return End();
    }
    if (n == 0) {
      s.eof = true;
      return OnEof(s);
    }
    Deliver(s, std::string_view(buf, static_cast<size_t>(n)));
  }

  void Flush(Side& s) {
    while (!s.out.empty()) {
      ssize_t n = ::send(s.fd.get(), s.out.data(), s.out.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        return End();
      }
      s.out.erase(0, static_cast<size_t>(n));
    }
    if (mode_ == Mode::kClosing && g_.out.empty() && u_.out.empty()) End();
  }

  void Deliver(Side& s, std::string_view bytes) {
    bool guest = &s == &g_;
    switch (mode_) {
      case Mode::kPeeking:
        if (!guest) {
          // The server spoke first: not a TLS client's flow.
          BeginRelay();
          g_.out.append(bytes);
          return;
        }
        peek_.append(bytes);
        return Decide();
      case Mode::kRelay:
        Other(s).out.append(bytes);
        return;
      case Mode::kPlain:
        if (!guest) {
          g_.out.append(bytes);
          return;
        }
        parser_.Feed(bytes);
        return JudgeRequests();
      case Mode::kUpstream:
        if (guest) {
          peek_.append(bytes);
        } else {
          us_.Feed(bytes);
        }
        return;
      case Mode::kIntercepted:
        (guest ? gs_ : us_).Feed(bytes);
        return;
      case Mode::kConnecting:
      case Mode::kClosing:
        return;
    }
  }

  void OnEof(Side& s) {
    bool guest = &s == &g_;
    switch (mode_) {
      case Mode::kPeeking:
        // Decide on what came: a guest that closes mid-hello is relayed.
        BeginRelay();
        (guest ? g_done_ : u_done_) = true;
        return;
      case Mode::kRelay:
      case Mode::kPlain:
        (guest ? g_done_ : u_done_) = true;
        if (!idle_shortened_) {
          idle_shortened_ = true;
          idle_.Arm(proxy_->options_.half_closed_idle);
        }
        return;
      case Mode::kUpstream:
        if (!guest) {
          proxy_->LogLimited("upstream", flow_.label + " (" + *sni_ +
                                             "): the upstream closed during the TLS handshake");
        }
        return End();
      case Mode::kIntercepted:
        // The TLS end decides once what was fed is consumed (PumpTls).
        if (!idle_shortened_) {
          idle_shortened_ = true;
          idle_.Arm(proxy_->options_.half_closed_idle);
        }
        return;
      case Mode::kConnecting:
      case Mode::kClosing:
        return End();
    }
  }

  void Decide() {
    secrets::HelloResult hello = secrets::PeekClientHello(
        std::span(reinterpret_cast<const uint8_t*>(peek_.data()), peek_.size()));
    if (hello.verdict == secrets::HelloVerdict::kNeedMore) return;
    if (hello.verdict == secrets::HelloVerdict::kTls && hello.hello.sni &&
        secrets::SniMatchesAnySecret(proxy_->engine_->secrets(), *hello.hello.sni)) {
      sni_ = *hello.hello.sni;
      return BeginUpstream();
    }
    if (hello.verdict == secrets::HelloVerdict::kNotTls && LooksLikeHttp(peek_)) {
      mode_ = Mode::kPlain;
      parser_.Feed(std::exchange(peek_, {}));
      return JudgeRequests();
    }
    BeginRelay();
  }

  void BeginRelay() {
    mode_ = Mode::kRelay;
    u_.out.append(std::exchange(peek_, {}));
  }

  void BeginUpstream() {
    mode_ = Mode::kUpstream;
    ++proxy_->intercepted_;
    auto tls = TlsEnd::Make(proxy_->client_ctx_.get());
    if (!tls) return Fail("cannot make a TLS client session: " + OpenSslErrors());
    us_ = std::move(*tls);
    SSL* ssl = us_.ssl.get();
    SSL_set_connect_state(ssl);
    if (SSL_set_tlsext_host_name(ssl, sni_->c_str()) != 1 || SSL_set1_host(ssl, sni_->c_str()) != 1) {
      return Fail("cannot set the upstream's name: " + OpenSslErrors());
    }
    static const unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_set_alpn_protos(ssl, kAlpn, sizeof(kAlpn));
  }

  void BeginGuestTls() {
    auto leaf = proxy_->ca_.LeafFor(*sni_, std::chrono::system_clock::now());
    if (!leaf.ok()) return Fail("no certificate for " + *sni_ + ": " + leaf.error().message());
    auto tls = TlsEnd::Make(proxy_->server_ctx_.get());
    if (!tls) return Fail("cannot make a TLS server session: " + OpenSslErrors());
    gs_ = std::move(*tls);
    leaf_ = std::move(*leaf);
    SSL* ssl = gs_.ssl.get();
    if (SSL_use_certificate(ssl, leaf_->certificate.get()) != 1 || SSL_use_PrivateKey(ssl, leaf_->key.get()) != 1) {
      return Fail("cannot use the minted certificate: " + OpenSslErrors());
    }
    SSL_set_accept_state(ssl);
    gs_.Feed(std::exchange(peek_, {}));
    mode_ = Mode::kIntercepted;
  }

  // Runs both TLS ends as far as the bytes they hold allow.
  void PumpTls() {
    if (!us_.handshaken) {
      ERR_clear_error();
      int r = SSL_do_handshake(us_.ssl.get());
      us_.DrainTo(&u_.out);
      if (r != 1) {
        int e = SSL_get_error(us_.ssl.get(), r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
        long verify = SSL_get_verify_result(us_.ssl.get());
        std::string why = verify != X509_V_OK ? std::string("certificate verification failed: ") +
                                                    X509_verify_cert_error_string(verify)
                                              : OpenSslErrors();
        return Fail("the upstream's TLS handshake failed: " + why);
      }
      us_.handshaken = true;
      BeginGuestTls();
      if (finished_) return;
    }
    if (!gs_) return;
    if (!gs_.handshaken) {
      ERR_clear_error();
      int r = SSL_do_handshake(gs_.ssl.get());
      gs_.DrainTo(&g_.out);
      if (r != 1) {
        int e = SSL_get_error(gs_.ssl.get(), r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
          if (g_.eof) End();
          return;
        }
        MSB_LOG(kDebug, "secrets") << flow_.label << " (" << *sni_
                                   << "): the guest's TLS handshake failed: " << OpenSslErrors();
        return Close();
      }
      gs_.handshaken = true;
    }
    // Guest -> upstream: plaintext into the parser, judged requests out.
    char buf[kReadChunk];
    while (mode_ == Mode::kIntercepted && !g_done_ && u_.out.size() < limit()) {
      ERR_clear_error();
      int n = SSL_read(gs_.ssl.get(), buf, sizeof(buf));
      if (n > 0) {
        parser_.Feed(std::string_view(buf, static_cast<size_t>(n)));
        JudgeRequests();
        continue;
      }
      int e = SSL_get_error(gs_.ssl.get(), n);
      if (e == SSL_ERROR_WANT_READ && !g_.eof) break;
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_ZERO_RETURN) {
        g_done_ = true;  // close_notify, or the socket ended
        break;
      }
      return End();
    }
    if (mode_ != Mode::kIntercepted) return;
    // Upstream -> guest: responses relayed as they come.
    while (!u_done_ && g_.out.size() < limit()) {
      ERR_clear_error();
      int n = SSL_read(us_.ssl.get(), buf, sizeof(buf));
      if (n > 0) {
        if (!ToGuest(std::string_view(buf, static_cast<size_t>(n)), false)) return;
        continue;
      }
      int e = SSL_get_error(us_.ssl.get(), n);
      if (e == SSL_ERROR_WANT_READ && !u_.eof) break;
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_ZERO_RETURN) {
        u_done_ = true;
        if (!ToGuest({}, true)) return;
        break;
      }
      return End();
    }
    us_.DrainTo(&u_.out);
    gs_.DrainTo(&g_.out);
  }

  // Upstream plaintext towards the guest, scanned for the secrets' values
  // (see the header): false when the flow ended because one was there.
  bool ToGuest(std::string_view bytes, bool last) {
    held_.append(bytes);
    const auto& secrets = proxy_->engine_->secrets();
    std::string window = sent_tail_ + held_;
    for (const auto& b : secrets) {
      if (!b.value.empty() && window.find(b.value) != std::string::npos) {
        proxy_->LogLimited("echo", flow_.label + " (" + *sni_ + "): the response holds the value of secret " +
                                       b.name + "; the flow is closed before it reaches the guest");
        secrets::WipeString(&window);
        secrets::WipeString(&held_);
        End();
        return false;
      }
    }
    secrets::WipeString(&window);
    // Hold back a tail that begins a value, unless nothing more comes.
    size_t hold = 0;
    if (!last) {
      for (const auto& b : secrets) {
        if (b.value.size() <= kMinHeldPrefix) continue;
        for (size_t k = std::min(b.value.size() - 1, held_.size()); k >= kMinHeldPrefix && k > hold; --k) {
          if (held_.compare(held_.size() - k, k, b.value.substr(0, k)) == 0) {
            hold = k;
            break;
          }
        }
      }
    }
    size_t send = held_.size() - hold;
    if (send > 0) {
      if (SSL_write(gs_.ssl.get(), held_.data(), static_cast<int>(send)) <= 0) {
        End();
        return false;
      }
      size_t keep = 0;
      for (const auto& b : secrets) keep = std::max(keep, b.value.size());
      sent_tail_.append(held_, 0, send);
      if (sent_tail_.size() > keep) sent_tail_.erase(0, sent_tail_.size() - keep);
      held_.erase(0, send);
    }
    gs_.DrainTo(&g_.out);
    return true;
  }

  // Sends one judged request on; ends the flow for a block or a refusal.
  void JudgeRequests() {
    while (mode_ == Mode::kIntercepted || mode_ == Mode::kPlain) {
      secrets::ParseOutcome p = parser_.Next();
      if (p.status == secrets::ParseStatus::kNeedMore) {
        if (parser_.buffered() <= kMaxRawRequest) return;
        if (mode_ == Mode::kPlain) {
          mode_ = Mode::kRelay;
          u_.out.append(parser_.TakeBuffered());
          return;
        }
        proxy_->LogLimited("refused", flow_.label + " (" + *sni_ + "): request refused: larger than " +
                                          std::to_string(kMaxRawRequest) + " bytes on the wire");
        return Respond(secrets::ErrorResponse(413, "request larger than " + std::to_string(kMaxRawRequest) +
                                                        " bytes on the wire"));
      }
      if (p.status == secrets::ParseStatus::kRefused) {
        if (mode_ == Mode::kPlain) {
          // Not HTTP this parser carries; with no TLS there is no value to
          // protect, so the rest is copied as it is.
          mode_ = Mode::kRelay;
          u_.out.append(parser_.TakeBuffered());
          return;
        }
        proxy_->LogLimited("refused", flow_.label + " (" + *sni_ + "): request refused: " +
                                          proxy_->engine_->Redact(p.refusal.reason));
        return Respond(secrets::ErrorResponse(p.refusal.status, p.refusal.reason));
      }
      if (mode_ == Mode::kIntercepted) {
        std::string why;
        if (p.request.method == "TRACE" || p.request.method == "TRACK") {
          why = p.request.method + " is not carried to a secret's host (it echoes the request)";
        } else if (!secrets::FindHeaders(p.request.headers, "Upgrade").empty()) {
          why = "protocol upgrades are not carried to a secret's host";
        }
        if (!why.empty()) {
          secrets::WipeString(&p.raw);
          proxy_->LogLimited("refused", flow_.label + " (" + *sni_ + "): request refused: " + why);
          return Respond(secrets::ErrorResponse(501, why));
        }
      }
      secrets::FlowContext ctx;
      if (mode_ == Mode::kIntercepted) ctx.sni = sni_;
      ctx.dest_ip = flow_.dest_ip;
      ctx.pinned = proxy_->pinned_;
      secrets::Substitution s = proxy_->engine_->Judge(ctx, p.request, p.raw);
      secrets::WipeString(&p.raw);
      if (auto line = proxy_->counters_.Record(s, std::chrono::steady_clock::now())) {
        MSB_LOG(kWarn, "secrets") << flow_.label << ": " << *line;
      }
      if (s.verdict == secrets::Verdict::kBlocked) return Respond(s.response);
      SendUpstream(s.upstream);
      secrets::WipeString(&s.upstream);
    }
  }

  void SendUpstream(std::string_view bytes) {
    if (mode_ == Mode::kPlain) {
      u_.out.append(bytes);
      return;
    }
    if (!bytes.empty() && SSL_write(us_.ssl.get(), bytes.data(), static_cast<int>(bytes.size())) <= 0) {
      return End();
    }
    us_.DrainTo(&u_.out);
  }

  // The guest gets response and the flow closes; nothing more goes upstream.
  void Respond(const std::string& response) {
    if (mode_ == Mode::kIntercepted) {
      SSL_write(gs_.ssl.get(), response.data(), static_cast<int>(response.size()));
      SSL_shutdown(gs_.ssl.get());
      gs_.DrainTo(&g_.out);
    } else {
      g_.out.append(response);
    }
    Close();
  }

  // Flushes what each side is owed (requests judged before, the guest's
  // response), then ends; nothing more is read.
  void Close() {
    mode_ = Mode::kClosing;
    if (!g_.fd || (g_.out.empty() && u_.out.empty())) return End();
    Rewatch(g_);
    Rewatch(u_);
  }

  void Fail(const std::string& why) {
    proxy_->LogLimited("upstream", flow_.label + " (" + sni_.value_or("?") + "): " + why);
    End();
  }

  // Passes a finished direction on as a half-close once its bytes are out.
  void PassEnds() {
    if (mode_ != Mode::kRelay && mode_ != Mode::kPlain && mode_ != Mode::kIntercepted) return;
    if (mode_ == Mode::kIntercepted) {
      if (g_done_ && !sent_close_up_) {
        sent_close_up_ = true;
        SSL_shutdown(us_.ssl.get());
        us_.DrainTo(&u_.out);
      }
      if (u_done_ && !sent_close_guest_) {
        sent_close_guest_ = true;
        SSL_shutdown(gs_.ssl.get());
        gs_.DrainTo(&g_.out);
      }
    }
    if (!u_.out.empty()) Flush(u_);
    if (finished_) return;
    if (!g_.out.empty()) Flush(g_);
    if (finished_) return;
    if (g_done_ && u_.out.empty() && !u_.shut) {
      u_.shut = true;
      ::shutdown(u_.fd.get(), SHUT_WR);
    }
    if (u_done_ && g_.out.empty() && !g_.shut) {
      g_.shut = true;
      ::shutdown(g_.fd.get(), SHUT_WR);
    }
    if (u_.shut && g_.shut) End();
  }

  void End() {
    if (finished_) return;
    finished_ = true;
    idle_.Reset();
    g_.watch.Reset();
    u_.watch.Reset();
    // The descriptors go now, not with the deferred deletion: both peers
    // see the end at once, whatever the loop does next.
    g_.fd.Reset();
    u_.fd.Reset();
    if (ready_) {
      Ready ready = std::move(ready_);
      ready(UniqueFd());
    }
    proxy_->Finish(id_);
  }

  SecretProxy* proxy_;
  uint64_t id_;
  ProxyFlow flow_;
  Ready ready_;
  Mode mode_ = Mode::kConnecting;
  Side g_, u_;
  std::string peek_;
  std::optional<std::string> sni_;
  TlsEnd gs_, us_;
  std::shared_ptr<const secrets::Leaf> leaf_;
  secrets::HttpRequestParser parser_;
  bool g_done_ = false;  // no more bytes come from the guest
  bool u_done_ = false;  // no more bytes come from upstream
  bool sent_close_up_ = false, sent_close_guest_ = false;
  bool finished_ = false;
  EventHandle idle_;
  std::chrono::steady_clock::time_point last_;
  bool idle_shortened_ = false;
  std::string held_;       // upstream plaintext that may begin a value
  std::string sent_tail_;  // the last bytes sent to the guest, to find a value across reads
};

SecretProxy::SecretProxy(Dispatcher& dispatcher, secrets::CertificateAuthority ca, ProxyOptions options,
                         secrets::PinCheck pinned)
    : dispatcher_(dispatcher), ca_(std::move(ca)), options_(std::move(options)), pinned_(std::move(pinned)) {}

SecretProxy::~SecretProxy() = default;

Result<std::unique_ptr<SecretProxy>> SecretProxy::Create(Dispatcher& dispatcher,
                                                         std::vector<secrets::SecretBinding> bindings,
                                                         secrets::CertificateAuthority ca, ProxyOptions options,
                                                         secrets::PinCheck pinned) {
  std::unique_ptr<SecretProxy> p(new SecretProxy(dispatcher, std::move(ca), std::move(options), std::move(pinned)));
  p->engine_ = std::make_unique<secrets::SubstitutionEngine>(std::move(bindings));
  MSB_TRY_STATUS(p->InitTls());
  return p;
}

Status SecretProxy::InitTls() {
  ERR_clear_error();
  server_ctx_.reset(SSL_CTX_new(TLS_server_method()));
  client_ctx_.reset(SSL_CTX_new(TLS_client_method()));
  if (!server_ctx_ || !client_ctx_) return Error(ErrorCode::kInternal, "cannot make TLS contexts: " + OpenSslErrors());
  for (SSL_CTX* ctx : {server_ctx_.get(), client_ctx_.get()}) {
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  }
  SSL_CTX_set_alpn_select_cb(server_ctx_.get(), SelectHttp11, nullptr);
  SSL_CTX_set_verify(client_ctx_.get(), SSL_VERIFY_PEER, nullptr);
  if (SSL_CTX_set_default_verify_paths(client_ctx_.get()) != 1) {
    return Error(ErrorCode::kInternal, "cannot load the host's trust store: " + OpenSslErrors());
  }
  if (!options_.extra_ca_pem.empty()) {
    CPtr<BIO, BIO_free_all> bio(BIO_new_mem_buf(options_.extra_ca_pem.data(),
                                                static_cast<int>(options_.extra_ca_pem.size())));
    X509_STORE* store = SSL_CTX_get_cert_store(client_ctx_.get());
    size_t added = 0;
    while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
      X509_STORE_add_cert(store, cert);
      X509_free(cert);
      ++added;
    }
    ERR_clear_error();  // the end of the PEM stream reads as an error
    if (added == 0) {
      return Error(ErrorCode::kInvalidArgument,
                   "network.tls.ca holds no PEM certificate: give a file of \"-----BEGIN CERTIFICATE-----\" blocks");
    }
  }
  return OkStatus();
}

void SecretProxy::Open(UniqueFd upstream, ProxyFlow flow, Ready ready) {
  if (conns_.size() >= options_.max_flows) {
    LogLimited("flows", flow.label + ": refused: " + std::to_string(conns_.size()) + " flows are open");
    dispatcher_.Post([ready = std::move(ready)]() { ready(UniqueFd()); });
    return;
  }
  uint64_t id = next_id_++;
  auto conn = std::make_unique<Conn>(this, id, std::move(upstream), std::move(flow), std::move(ready));
  Conn* c = conn.get();
  conns_.emplace(id, std::move(conn));
  c->Start();
}

void SecretProxy::Finish(uint64_t id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  std::unique_ptr<Conn> conn = std::move(it->second);
  conns_.erase(it);
  dispatcher_.DeferDelete(std::move(conn));
}

void SecretProxy::ReplaceBindings(std::vector<secrets::SecretBinding> bindings) {
  engine_ = std::make_unique<secrets::SubstitutionEngine>(std::move(bindings));
}

nlohmann::json SecretProxy::CountersJson() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& b : engine_->secrets()) {
    secrets::SecretCounts c = counters_.CountsFor(b.name);
    out[b.name] = {{"substituted", c.substituted}, {"blocked", c.blocked}};
  }
  return out;
}

void SecretProxy::LogLimited(const std::string& kind, const std::string& line) {
  auto now = std::chrono::steady_clock::now();
  Limited& l = limited_[kind];
  if (l.logged && now - l.last < secrets::kBlockLogInterval) {
    ++l.held;
    return;
  }
  std::string held = l.held > 0 ? " (" + std::to_string(l.held) + " more not logged)" : "";
  l = Limited{now, true, 0};
  MSB_LOG(kWarn, "secrets") << line << held;
}

}  // namespace msb::vm
