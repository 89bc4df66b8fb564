// The guest's DNS server (dns_server.h holds the theory of operation):
// c-ares sockets are watched through the Dispatcher, its timeouts through one
// timer re-armed after every c-ares call.
#include "net/dns_server.h"

#include <ares.h>
#include <arpa/nameser.h>

#include <algorithm>
#include <mutex>
#include <set>

#include "common/log.h"

namespace msb::net {

using dns::Message;
using dns::Rcode;
using dns::Record;
using dns::Type;

namespace {

// Lines the guest causes with its queries: rate-limited, so that a guest
// asking for names without end cannot fill the supervisor's log.
LogRateLimiter& GuestCausedLines() {
  static LogRateLimiter limiter;
  return limiter;
}

bool IsType(uint16_t t, Type want) { return t == static_cast<uint16_t>(want); }

bool ForwardableName(const std::string& name) {
  if (name.empty()) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

Message ResponseTo(const dns::Header& qh, const std::vector<dns::Question>& questions, Rcode rcode) {
  Message m;
  m.header.id = qh.id;
  m.header.qr = true;
  m.header.opcode = qh.opcode;
  m.header.rd = qh.rd;
  m.header.ra = true;
  m.header.rcode = static_cast<uint8_t>(rcode);
  m.questions = questions;
  return m;
}

// "127.0.0.1:5353" / "[::1]:53" / "1.1.1.1" -> the c-ares CSV item.
Result<std::string> ServerItem(const std::string& text) {
  std::string host = text, port;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos) return Error(ErrorCode::kInvalidArgument, "DNS server " + text + ": missing ']'");
    host = text.substr(1, close - 1);
    std::string rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return Error(ErrorCode::kInvalidArgument, "DNS server " + text + ": expected :PORT after ']'");
      port = rest.substr(1);
    }
  } else if (std::count(text.begin(), text.end(), ':') == 1) {
    host = text.substr(0, text.find(':'));
    port = text.substr(text.find(':') + 1);
  }
  auto ip = IpAddress::Parse(host);
  if (!ip) {
    return Error(ErrorCode::kInvalidArgument,
                 "DNS server " + text + ": not an IP address (expected 1.1.1.1, 127.0.0.1:5353 or [::1]:53)");
  }
  if (!port.empty()) {
    bool digits = port.size() <= 5 && port.find_first_not_of("0123456789") == std::string::npos;
    int p = digits ? std::stoi(port) : 0;
    if (p < 1 || p > 65535) return Error(ErrorCode::kInvalidArgument, "DNS server " + text + ": bad port " + port);
  }
  std::string item = ip->is_v6() ? "[" + ip->ToString() + "]" : ip->ToString();
  return port.empty() ? item : item + ":" + port;
}

// An answer carries our OPT record when the query had one (RFC 6891 7).
Message WithOpt(Message m, bool edns) {
  if (edns) {
    Record opt;
    opt.type = static_cast<uint16_t>(Type::kOpt);
    opt.klass = kMaxUdpEdns;
    m.additional.push_back(opt);
  }
  return m;
}

}  // namespace

Message FilterUpstreamAnswer(const Message& query, const Message& upstream, const Policy& policy, PinSet& pins,
                             PinSet::Clock::time_point now, DnsServerStats* stats) {
  const dns::Question& q = query.questions.at(0);
  Message out = ResponseTo(query.header, query.questions, static_cast<Rcode>(upstream.header.rcode));
  if (upstream.header.rcode != static_cast<uint8_t>(Rcode::kNoError) &&
      upstream.header.rcode != static_cast<uint8_t>(Rcode::kNxDomain)) {
    return out;
  }
  // The chain: the question's name and the CNAME targets reachable from it.
  std::vector<std::string> chain = {NormalizeName(q.name)};
  std::set<std::string> on_chain(chain.begin(), chain.end());
  std::vector<bool> used(upstream.answers.size(), false);
  for (bool grew = true; grew;) {
    grew = false;
    for (size_t i = 0; i < upstream.answers.size(); ++i) {
      const Record& r = upstream.answers[i];
      if (used[i] || !IsType(r.type, Type::kCname) || r.klass != dns::kClassIn) continue;
      if (!on_chain.count(NormalizeName(r.name))) continue;
      used[i] = true;
      grew = true;
      std::string target = NormalizeName(r.target);
      if (on_chain.insert(target).second) chain.push_back(target);
    }
  }
  const uint32_t max_ttl = static_cast<uint32_t>(pins.options().max_ttl.count());
  for (size_t i = 0; i < upstream.answers.size(); ++i) {
    Record r = upstream.answers[i];
    r.ttl = std::min(r.ttl, max_ttl);
    if (used[i]) {
      out.answers.push_back(std::move(r));
      continue;
    }
    bool wanted = (IsType(q.type, Type::kA) && IsType(r.type, Type::kA)) ||
                  (IsType(q.type, Type::kAaaa) && IsType(r.type, Type::kAaaa));
    if (!wanted || r.klass != dns::kClassIn || !r.address || !on_chain.count(NormalizeName(r.name))) continue;
    if (policy.rebind_protection()) {
      Decision d = policy.MayReach(*r.address, chain);
      if (!d.allow) {
        if (stats != nullptr) ++stats->dropped_addresses;
        if (uint64_t held; GuestCausedLines().Allow("dropped", &held)) {
          MSB_LOG(kInfo, "dns") << "dropped " << r.address->ToString() << " from the answer for " << q.name
                                << ": " << d.reason << HeldBackNote(held);
        }
        continue;
      }
    }
    for (const std::string& name : chain) pins.Pin(name, *r.address, std::chrono::seconds(r.ttl), now);
    out.answers.push_back(std::move(r));
  }
  return out;
}

struct DnsServer::Channel {
  ares_channel ch = nullptr;
  ~Channel() {
    if (ch != nullptr) ares_destroy(ch);
  }
};

struct DnsServer::Pending {
  DnsServer* server;
  Message query;
  Reply reply;
  size_t max_size;
  bool edns;
};

DnsServer::DnsServer(Dispatcher& dispatcher, const Policy& policy, PinSet& pins, Options options)
    : dispatcher_(dispatcher), policy_(policy), pins_(pins), options_(std::move(options)) {}

Result<std::unique_ptr<DnsServer>> DnsServer::Create(Dispatcher& dispatcher, const Policy& policy, PinSet& pins,
                                                     Options options) {
  static std::once_flag init_once;
  static int init_status = ARES_SUCCESS;
  std::call_once(init_once, [] { init_status = ares_library_init(ARES_LIB_INIT_ALL); });
  if (init_status != ARES_SUCCESS) {
    return Error(ErrorCode::kUnavailable, std::string("initialising c-ares: ") + ares_strerror(init_status));
  }
  std::string csv;
  for (const std::string& s : options.servers) {
    MSB_TRY(std::string item, ServerItem(s));
    csv += (csv.empty() ? "" : ",") + item;
  }
  std::unique_ptr<DnsServer> server(new DnsServer(dispatcher, policy, pins, std::move(options)));
  server->timer_ = dispatcher.Timer([s = server.get()] {
    ares_process_fd(s->channel_->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    s->ArmTimer();
  });

  ares_options opts{};
  int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS | ARES_OPT_EDNSPSZ;
  opts.sock_state_cb = &DnsServer::OnSocketState;
  opts.sock_state_cb_data = server.get();
  opts.timeout = static_cast<int>(std::max<int64_t>(1, server->options_.timeout.count()));
  opts.tries = std::max(1, server->options_.tries);
  opts.flags = ARES_FLAG_EDNS | ARES_FLAG_NOSEARCH;
  opts.ednspsz = kMaxUdpEdns;
  server->channel_ = std::make_unique<Channel>();
  int rc = ares_init_options(&server->channel_->ch, &opts, mask);
  if (rc != ARES_SUCCESS) {
    server->channel_->ch = nullptr;
    return Error(ErrorCode::kUnavailable, std::string("creating the DNS resolver (c-ares): ") + ares_strerror(rc) +
                                              (csv.empty() ? " (is /etc/resolv.conf readable?)" : ""));
  }
  if (!csv.empty()) {
    rc = ares_set_servers_ports_csv(server->channel_->ch, csv.c_str());
    if (rc != ARES_SUCCESS) {
      return Error(ErrorCode::kInvalidArgument, "setting DNS servers " + csv + ": " + ares_strerror(rc));
    }
  }
  return server;
}

DnsServer::~DnsServer() {
  destroying_ = true;
  // Calls every pending callback with ARES_EDESTRUCTION (no reply) and closes
  // the sockets (OnSocketState drops their watches).
  channel_.reset();
  watches_.clear();
}

void DnsServer::SetGroupNames(std::map<std::string, IpAddress> names) {
  group_.clear();
  for (auto& [name, ip] : names) group_[NormalizeName(name)] = ip;
}

void DnsServer::OnSocketState(void* data, int fd, int readable, int writable) {
  auto* self = static_cast<DnsServer*>(data);
  self->watches_.erase(fd);
  if (self->destroying_ || (!readable && !writable)) return;
  short flags = static_cast<short>((readable ? Dispatcher::kRead : 0) | (writable ? Dispatcher::kWrite : 0));
  self->watches_[fd] = self->dispatcher_.WatchFd(fd, flags, [self, fd](short what) {
    ares_process_fd(self->channel_->ch, (what & Dispatcher::kRead) ? fd : ARES_SOCKET_BAD,
                    (what & Dispatcher::kWrite) ? fd : ARES_SOCKET_BAD);
    self->ArmTimer();
  });
}

void DnsServer::ArmTimer() {
  if (destroying_ || !channel_ || channel_->ch == nullptr) return;
  timeval tv{};
  if (ares_timeout(channel_->ch, nullptr, &tv) == nullptr) {
    timer_.Disarm();
    return;
  }
  int64_t ms = static_cast<int64_t>(tv.tv_sec) * 1000 + tv.tv_usec / 1000 + 1;
  timer_.Arm(std::chrono::milliseconds(ms));
}

void DnsServer::Handle(std::string_view query, Reply reply, Transport transport) {
  ++stats_.queries;
  auto send = [&](const Message& m, size_t max_size) {
    auto bytes = dns::BuildTruncated(m, max_size);
    if (!bytes.ok()) {
      MSB_LOG(kWarn, "dns") << "building an answer: " << bytes.error().message();
      reply(std::string());
      return;
    }
    reply(std::move(*bytes));
  };
  auto header = dns::ParseHeader(query);
  if (!header || header->qr) {
    ++stats_.malformed;
    reply(std::string());
    return;
  }
  size_t max_size = transport == Transport::kTcp ? dns::kMaxMessage : dns::kMaxUdpPlain;
  auto parsed = dns::Parse(query);
  if (!parsed.ok()) {
    ++stats_.malformed;
    MSB_LOG(kDebug, "dns") << "query from the guest: " << parsed.error().message();
    send(ResponseTo(*header, {}, Rcode::kFormErr), max_size);
    return;
  }
  Message& q = *parsed;
  bool edns = false;
  if (uint16_t size = dns::EdnsUdpSize(q); size > 0) {
    edns = true;
    if (transport == Transport::kUdp) {
      max_size = std::clamp<size_t>(size, dns::kMaxUdpPlain, kMaxUdpEdns);
    }
  }
  auto finish = [edns](Message m) { return WithOpt(std::move(m), edns); };
  if (q.header.opcode != 0) {
    send(finish(ResponseTo(q.header, q.questions, Rcode::kNotImp)), max_size);
    return;
  }
  if (q.questions.size() != 1) {
    ++stats_.malformed;
    send(finish(ResponseTo(q.header, {}, Rcode::kFormErr)), max_size);
    return;
  }
  const dns::Question& question = q.questions[0];
  if (question.klass != dns::kClassIn || !ForwardableName(question.name)) {
    send(finish(ResponseTo(q.header, q.questions, Rcode::kRefused)), max_size);
    return;
  }
  bool a = IsType(question.type, Type::kA), aaaa = IsType(question.type, Type::kAaaa);
  if (!a && !aaaa && !IsType(question.type, Type::kCname)) {
    send(finish(ResponseTo(q.header, q.questions, Rcode::kNoError)), max_size);
    return;
  }

  if (auto g = group_.find(NormalizeName(question.name)); g != group_.end()) {
    ++stats_.group_answers;
    Decision d = policy_.MayReach(g->second, {g->first});
    if (!d.allow) {
      send(finish(ResponseTo(q.header, q.questions, Rcode::kNxDomain)), max_size);
      return;
    }
    Message m = ResponseTo(q.header, q.questions, Rcode::kNoError);
    m.header.aa = true;
    if ((a && g->second.is_v4()) || (aaaa && g->second.is_v6())) {
      Record r;
      r.name = question.name;
      r.type = question.type;
      r.ttl = kGroupTtl;
      r.address = g->second;
      m.answers.push_back(r);
      pins_.Pin(g->first, g->second, std::chrono::seconds(kGroupTtl), PinSet::Clock::now());
    }
    send(finish(std::move(m)), max_size);
    return;
  }

  if (Decision may = policy_.MayResolve(question.name); !may.allow) {
    // Under profile none or group, a name no rule could allow stays here:
    // query names are a channel out of the sandbox.
    ++stats_.refused_names;
    if (uint64_t held; GuestCausedLines().Allow("refused", &held)) {
      MSB_LOG(kInfo, "dns") << "refused " << question.name << ": " << may.reason << HeldBackNote(held);
    }
    send(finish(ResponseTo(q.header, q.questions, Rcode::kRefused)), max_size);
    return;
  }
  if (pending_count_ >= options_.max_pending) {
    ++stats_.upstream_failures;
    send(finish(ResponseTo(q.header, q.questions, Rcode::kServFail)), max_size);
    return;
  }
  ++stats_.forwarded;
  ++pending_count_;
  std::string name = question.name;
  int type = question.type;
  auto* p = new Pending{this, std::move(q), std::move(reply), max_size, edns};
  ares_query(channel_->ch, name.c_str(), ns_c_in, type, &DnsServer::OnAnswer, p);
  ArmTimer();
}

void DnsServer::OnAnswer(void* arg, int status, int timeouts, unsigned char* abuf, int alen) {
  std::unique_ptr<Pending> p(static_cast<Pending*>(arg));
  DnsServer* self = p->server;
  --self->pending_count_;
  if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED || self->destroying_) return;
  self->Answer(*p, status, abuf, alen);
}

void DnsServer::Answer(const Pending& p, int status, const unsigned char* abuf, int alen) {
  const Message& q = p.query;
  Message out;
  std::optional<Message> upstream;
  if (abuf != nullptr && alen > 0) {
    auto parsed = dns::Parse(std::string_view(reinterpret_cast<const char*>(abuf), static_cast<size_t>(alen)));
    if (parsed.ok()) {
      upstream = std::move(*parsed);
    } else {
      if (uint64_t held; GuestCausedLines().Allow("upstream", &held)) {
        MSB_LOG(kWarn, "dns") << "upstream answer for " << q.questions[0].name << ": " << parsed.error().message()
                              << HeldBackNote(held);
      }
    }
  }
  if (upstream) {
    out = FilterUpstreamAnswer(q, *upstream, policy_, pins_, PinSet::Clock::now(), &stats_);
    if (out.header.rcode == static_cast<uint8_t>(Rcode::kServFail)) ++stats_.upstream_failures;
  } else {
    Rcode rcode = Rcode::kServFail;
    if (status == ARES_ENOTFOUND) rcode = Rcode::kNxDomain;
    else if (status == ARES_ENODATA) rcode = Rcode::kNoError;
    else if (status == ARES_EREFUSED) rcode = Rcode::kRefused;
    if (rcode == Rcode::kServFail) {
      ++stats_.upstream_failures;
      if (uint64_t held; GuestCausedLines().Allow("resolving", &held)) {
        MSB_LOG(kInfo, "dns") << "resolving " << q.questions[0].name << ": " << ares_strerror(status)
                              << HeldBackNote(held);
      }
    }
    out = ResponseTo(q.header, q.questions, rcode);
  }
  auto bytes = dns::BuildTruncated(WithOpt(std::move(out), p.edns), p.max_size);
  if (!bytes.ok()) {
    MSB_LOG(kWarn, "dns") << "building an answer: " << bytes.error().message();
    p.reply(std::string());
    return;
  }
  p.reply(std::move(*bytes));
}

}  // namespace msb::net
