// NetworkAttachment and the spec → stack translation: see network.h.
#include "vm/network.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <fcntl.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "common/fnv1a.h"
#include "common/io.h"
#include "common/log.h"
#include "common/unix_socket.h"
#include "schema/network_rule.h"

namespace msb::vm {
namespace {

Result<net::Mac> ParseMac(const std::string& text, const char* field) {
  net::Mac m{};
  unsigned v[6];
  char tail;
  if (std::sscanf(text.c_str(), "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6)
    return Error(ErrorCode::kInvalidArgument, std::string("network.") + field + " \"" + text +
                                                  "\" is not a MAC address (like 52:54:00:12:34:56)");
  for (int i = 0; i < 6; ++i) {
    if (v[i] > 255) return Error(ErrorCode::kInvalidArgument, std::string("network.") + field + " \"" + text + "\" is not a MAC address");
    m[i] = static_cast<uint8_t>(v[i]);
  }
  return m;
}

Result<net::IpAddress> ParseAddr(const std::string& text, bool v6, const char* field) {
  auto a = net::IpAddress::Parse(text);
  if (!a || a->is_v6() != v6)
    return Error(ErrorCode::kInvalidArgument, std::string("network.") + field + " \"" + text +
                                                  "\" is not an IPv" + (v6 ? "6" : "4") + " address");
  return *a;
}

}  // namespace

Result<net::StackConfig> StackConfigFor(const VmNetwork& n) {
  net::StackConfig c;
  MSB_TRY(c.guest_mac, ParseMac(n.mac, "mac"));
  MSB_TRY(c.gateway_mac, ParseMac(n.gateway_mac, "gateway_mac"));
  MSB_TRY(c.guest4, ParseAddr(n.ipv4, false, "ipv4"));
  MSB_TRY(c.gateway4, ParseAddr(n.gateway4, false, "gateway4"));
  c.prefix4 = n.prefix4;
  if (!n.ipv6.empty()) {
    MSB_TRY(c.guest6, ParseAddr(n.ipv6, true, "ipv6"));
    MSB_TRY(c.gateway6, ParseAddr(n.gateway6, true, "gateway6"));
  }
  c.prefix6 = n.prefix6;
  if (n.mtu < 1280 || n.mtu > 65521)
    return Error(ErrorCode::kInvalidArgument, "network.mtu " + std::to_string(n.mtu) + " is outside 1280..65521");
  c.mtu = static_cast<uint16_t>(n.mtu);
  return c;
}

nlohmann::json BootWithNetwork(const VmSpec& spec) {
  nlohmann::json boot = spec.boot;
  if (!spec.network || !boot.is_object()) return boot;
  const VmNetwork& n = *spec.network;
  boot["network"] = {{"mac", n.mac},           {"ipv4", n.ipv4},         {"prefix4", n.prefix4},
                     {"gateway4", n.gateway4}, {"ipv6", n.ipv6},         {"prefix6", n.prefix6},
                     {"gateway6", n.gateway6}, {"mtu", n.mtu},           {"dns", n.gateway4}};
  return boot;
}

NetworkAttachment::NetworkAttachment(Dispatcher& dispatcher, VmNetwork network, std::string socket_path)
    : dispatcher_(dispatcher), network_(std::move(network)), socket_path_(std::move(socket_path)) {}

NetworkAttachment::~NetworkAttachment() {
  accept_.reset();
  group_accept_.reset();
  handshakes_.clear();
  if (group_listen_) ::unlink(group_socket_.c_str());
  listeners_.clear();
  denial_flush_.Reset();
  link_.reset();
  stack_.reset();
  if (listen_) ::unlink(socket_path_.c_str());
}

Status NetworkAttachment::Start() {
  MSB_TRY(net::StackConfig cfg, StackConfigFor(network_));
  cfg.budget = budget_;
  cfg.max_flow_fds = max_flow_fds_;
  // The policy, from the spec's declaration in canonical text.
  MSB_TRY(schema::Network declared,
          schema::NetworkFromCanonical(network_.profile, network_.rules, network_.rebind_protection));
  // The host's addresses, followed as they change (an address gained later
  // is the host's too), or read once when the kernel will not report changes.
  if (auto st = host_.FollowChanges(); !st.ok()) {
    MSB_LOG(kWarn, "net") << st.error().message() << "; the host's addresses are read once";
    if (auto read = host_.Refresh(); !read.ok()) {
      MSB_LOG(kWarn, "net") << "listing the host's addresses: " << read.error().message();
    }
  }
  if (host_.change_fd() >= 0) {
    host_watch_ = dispatcher_.WatchFd(host_.change_fd(), Dispatcher::kRead, [this](short) {
      if (host_.RefreshIfChanged()) {
        MSB_LOG(kInfo, "net") << "the host's addresses changed: " << host_.addresses().size() << " now";
      }
    });
  }
  net::PolicyContext ctx;
  ctx.gateways.push_back(cfg.gateway4);
  if (!network_.ipv6.empty()) ctx.gateways.push_back(cfg.gateway6);
  ctx.host = &host_;
  MSB_TRY(net::Policy policy, net::Policy::Compile(declared, ctx));
  policy_ = std::make_unique<net::Policy>(std::move(policy));
  denials_ = std::make_unique<net::DenialLog>(10, [](const std::string& line) {
    MSB_LOG(kWarn, "net") << line;
  });
  denial_flush_ = dispatcher_.Timer([this]() {
    denials_->Flush(net::DenialLog::Clock::now());
    denial_flush_.Arm(std::chrono::seconds(1));
  });
  denial_flush_.Arm(std::chrono::seconds(1));
  net::DnsServer::Options dns_options;
  dns_options.servers = network_.dns_servers;
  MSB_TRY(dns_, net::DnsServer::Create(dispatcher_, *policy_, pins_, dns_options));
  MSB_TRY_STATUS(BindPorts());
  MSB_TRY_STATUS(ListenGroup());
  RefreshGroup();
  stack_ = std::make_unique<net::Stack>(
      dispatcher_, cfg,
      [this](std::span<const uint8_t> frame) {
        if (link_) link_->Send(frame);
      },
      [this](const net::FlowKey& key) { return Decide(key); },
      [this](std::string_view query, net::DnsReply reply) {
        RefreshGroup();
        // Local answers (group names, refusals) come back inside Handle; the
        // stack gets every answer from the loop instead, never while it is
        // still handling the query's frame.
        dns_->Handle(query, [this, reply = std::move(reply)](std::string answer) {
          dispatcher_.Post([reply, answer = std::move(answer)]() { reply(answer); });
        });
      });
  MSB_TRY(listen_, ListenUnix(socket_path_, true, 1));
  accept_ = std::make_unique<Acceptor>(dispatcher_, listen_.get(), SOCK_NONBLOCK | SOCK_CLOEXEC,
                                       [this](UniqueFd fd) { OnAccept(std::move(fd)); });
  for (auto& l : listeners_) {
    Listener* raw = l.get();
    if (raw->port.proto == "udp") {
      UniqueFd fd = std::move(raw->fd);
      uint16_t guest_port = static_cast<uint16_t>(raw->port.guest_port);
      // Each new sender is judged like a TCP connection to a published port.
      auto admit = [this, guest_port](const net::IpAddress& source) {
        net::IngressFlow in;
        in.source = source;
        in.proto = schema::Protocol::kUdp;
        in.port = guest_port;
        in.published = true;
        net::Decision d = policy_->Decide(in);
        if (!d.allow) {
          denials_->Record(d, "ingress to published udp port " + std::to_string(guest_port),
                           net::DenialLog::Clock::now());
        }
        return d.allow;
      };
      MSB_TRY_STATUS(stack_->AddUdpInbound(std::move(fd), guest_port, std::move(admit)));
      continue;
    }
    raw->accept = std::make_unique<Acceptor>(dispatcher_, raw->fd.get(), SOCK_NONBLOCK | SOCK_CLOEXEC,
                                             [this, raw](UniqueFd fd) { OnPublishedAccept(raw, std::move(fd)); });
  }
  return OkStatus();
}

void NetworkAttachment::OnAccept(UniqueFd fd) {
  if (link_ && link_->open()) return;  // one QEMU per attachment; a second peer is refused
  int buf = 4 << 20;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
  link_ = std::make_unique<net::StreamLink>(
      dispatcher_, std::move(fd),
      [this](std::span<const uint8_t> frame) { stack_->OnFrame(frame); },
      [](Status why) {
        if (!why.ok()) {
          MSB_LOG(kInfo, "net") << "network link closed: " << why.error().message();
        }
      });
}

}  // namespace msb::vm

// ---------------------------------------------------------------------------
// Decisions

namespace msb::vm {
namespace {

schema::Protocol ToProtocol(net::FlowProto p) {
  switch (p) {
    case net::FlowProto::kTcp: return schema::Protocol::kTcp;
    case net::FlowProto::kUdp: return schema::Protocol::kUdp;
    case net::FlowProto::kIcmp: return schema::Protocol::kIcmp;
  }
  return schema::Protocol::kTcp;
}

// A non-blocking TCP connection (connecting) to ip:port; invalid on failure.
UniqueFd ConnectTcp(const net::IpAddress& ip, uint16_t port) {
  sockaddr_storage ss;
  socklen_t len = ip.ToSockaddr(port, &ss);
  UniqueFd fd(::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd || (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS)) {
    return UniqueFd();
  }
  return fd;
}

bool IsSandboxName(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

}  // namespace

net::IpAddress GroupAddress(const std::string& name) {
  const uint32_t h = Fnv1a32(name);
  return net::IpAddress::V4(10, 201, static_cast<uint8_t>(1 + h % 254),
                            static_cast<uint8_t>(1 + (h / 254) % 254));
}

namespace {

// A socket bound to the published port's host address: TCP (SO_REUSEADDR)
// or UDP. The error names the port, and says so when another program has it.
Result<UniqueFd> BindPort(const VmNetwork::Port& p, int flags) {
  auto ip = net::IpAddress::Parse(p.host_ip);
  if (!ip) return Error(ErrorCode::kInvalidArgument, "published port: \"" + p.host_ip + "\" is not an address");
  bool udp = p.proto == "udp";
  std::string where = (ip->is_v6() ? "[" + p.host_ip + "]" : p.host_ip) + ":" +
                      std::to_string(p.host_port) + "/" + p.proto;
  UniqueFd fd(::socket(ip->is_v6() ? AF_INET6 : AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | flags, 0));
  if (!fd) return Error::FromErrno("published port " + where + ": socket");
  int one = 1;
  if (!udp) ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage ss;
  socklen_t len = ip->ToSockaddr(static_cast<uint16_t>(p.host_port), &ss);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    if (errno == EADDRINUSE) {
      return Error(ErrorCode::kState, "published port " + where +
                                          " is already in use (by another program or sandbox); "
                                          "choose another host port");
    }
    return Error::FromErrno("published port " + where + ": cannot bind");
  }
  if (!udp && ::listen(fd.get(), 128) != 0) return Error::FromErrno("published port " + where + ": listen");
  return fd;
}

}  // namespace

Status CheckPortsFree(const std::vector<VmNetwork::Port>& ports) {
  for (const auto& p : ports) {
    auto fd = BindPort(p, SOCK_CLOEXEC);
    if (!fd.ok()) return fd.error();
  }
  return OkStatus();
}

net::FlowVerdict NetworkAttachment::Decide(const net::FlowKey& key) {
  // An address change the kernel has reported counts for this very flow, even
  // when its event is still queued behind the guest's frame.
  host_.RefreshIfChanged();
  auto now = net::PinSet::Clock::now();
  net::EgressFlow flow;
  flow.dest = key.dst;
  flow.proto = ToProtocol(key.proto);
  flow.port = key.dport;
  // The policy decides what the destination is, on its canonical address
  // (Policy::Resolve); the group directory is re-read first when that
  // address is in the group range, so a peer that just started is known.
  net::IpAddress canonical = net::Canonicalize(flow.dest);
  if (!network_.group_dir.empty() && canonical.is_v4() && (canonical.v4() >> 16) == ((10u << 8) | 201u)) {
    RefreshGroup();
  }
  flow.names = pins_.NamesFor(flow.dest, now);
  net::Decision d = policy_->Decide(flow);
  // A group member: the peer must be alive in the project's directory, and
  // only TCP is carried to it.
  std::string peer;
  if (d.allow && d.kind == net::PeerKind::kGroup) {
    for (const auto& [name, ip] : group_) {
      if (ip == d.connect_to) peer = name;
    }
  }
  if (!d.allow || (d.kind == net::PeerKind::kGroup && (peer.empty() || key.proto != net::FlowProto::kTcp))) {
    if (!d.allow) {
      denials_->Record(d, net::FlowText(flow.dest, flow.proto, flow.port), now);
    }
    return net::FlowVerdict{net::FlowAction::kDeny};
  }
  if (!peer.empty()) {
    net::FlowVerdict v{net::FlowAction::kAllow};
    uint16_t port = key.dport;
    v.connect = [this, peer]() { return ConnectPeer(peer); };
    std::string header = "tcp " + std::to_string(port) + " " + network_.group_name + "\n";
    v.intercept = [this, peer, port, header](UniqueFd fd, net::FlowVerdict::InterceptDone done) {
      // The header fits the empty socket's buffer; the answer comes later.
      if (::send(fd.get(), header.data(), header.size(), MSG_NOSIGNAL | MSG_DONTWAIT) !=
          static_cast<ssize_t>(header.size())) {
        MSB_LOG(kInfo, "net") << "group: " << peer << " is not answering on its socket";
        done(UniqueFd());
        return;
      }
      PeerHandshake* h = NewHandshake(std::move(fd));
      h->done = std::move(done);
      h->line = peer + " tcp port " + std::to_string(port);
      h->watch = dispatcher_.WatchFd(h->fd.get(), Dispatcher::kRead,
                                     [this, h](short ready) { OnPeerAnswer(h, ready); });
    };
    return v;
  }
  if (d.redirect_to_host_loopback) {
    net::FlowVerdict v{net::FlowAction::kAllowToHostLoopback};
    if (key.proto == net::FlowProto::kTcp) Intercept(&v, d.connect_to, key);
    return v;
  }
  if (d.connect_to != flow.dest && key.proto != net::FlowProto::kTcp) {
    // The stack sends UDP and ICMP to the literal destination, and an IPv6
    // form that embeds the judged IPv4 address may route elsewhere: refused.
    return net::FlowVerdict{net::FlowAction::kDeny};
  }
  net::FlowVerdict v{net::FlowAction::kAllow};
  if (d.connect_to != flow.dest && key.proto == net::FlowProto::kTcp) {
    // The policy judged the canonical address (an IPv6 form embedding an
    // IPv4 address is that address): connect there, not to the form, which
    // may route elsewhere (a 6to4 relay, a Teredo server, NAT64).
    net::IpAddress to = d.connect_to;
    uint16_t port = key.dport;
    v.connect = [to, port]() { return ConnectTcp(to, port); };
  }
  if (key.proto == net::FlowProto::kTcp) Intercept(&v, d.connect_to, key);
  return v;
}

void NetworkAttachment::Intercept(net::FlowVerdict* v, const net::IpAddress& judged,
                                  const net::FlowKey& key) {
  if (proxy_ == nullptr) return;
  ProxyFlow flow;
  flow.dest_ip = judged.ToString();
  flow.dest_port = key.dport;
  flow.label = key.src.ToString() + ":" + std::to_string(key.sport) + " -> " + key.dst.ToString() + ":" +
               std::to_string(key.dport);
  SecretProxy* proxy = proxy_;
  v->intercept = [proxy, flow = std::move(flow)](UniqueFd host, net::FlowVerdict::InterceptDone done) {
    proxy->Open(std::move(host), flow, std::move(done));
  };
}

bool NetworkAttachment::Pinned(std::string_view name, std::string_view dest_ip) const {
  auto ip = net::IpAddress::Parse(dest_ip);
  if (!ip) return false;
  for (const auto& a : pins_.AddressesFor(net::NormalizeName(name), net::PinSet::Clock::now())) {
    if (a == *ip) return true;
  }
  return false;
}

void NetworkAttachment::RefreshGroup() {
  if (network_.group_dir.empty()) return;
  std::map<std::string, net::IpAddress> found;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(network_.group_dir, ec)) {
    if (e.path().extension() != ".sock") continue;
    std::string name = e.path().stem().string();
    if (name == network_.group_name || !IsSandboxName(name)) continue;
    found.emplace(name, GroupAddress(name));
  }
  if (found == group_) return;
  group_ = std::move(found);
  std::vector<net::IpAddress> members;
  for (const auto& [name, ip] : group_) members.push_back(ip);
  policy_->SetGroupMembers(members);
  if (dns_) dns_->SetGroupNames(group_);
}

// A non-blocking connection to the peer's group socket (Decide's intercept
// sends the header and waits for the answer on the loop); invalid when the
// peer is gone or its backlog is full.
UniqueFd NetworkAttachment::ConnectPeer(const std::string& peer) {
  auto connected = ConnectUnix(network_.group_dir + "/" + peer + ".sock", /*nonblocking=*/true);
  if (!connected.ok()) return UniqueFd();
  return std::move(*connected);
}

NetworkAttachment::PeerHandshake* NetworkAttachment::NewHandshake(UniqueFd fd) {
  auto h = std::make_unique<PeerHandshake>();
  PeerHandshake* raw = h.get();
  raw->id = next_handshake_++;
  raw->fd = std::move(fd);
  raw->timeout = dispatcher_.Timer([this, raw]() {
    if (raw->done) {
      MSB_LOG(kInfo, "net") << "group: no answer from " << raw->line << " within "
                            << kPeerHandshakeTimeout.count() << " ms";
      auto done = std::move(raw->done);
      EndHandshake(raw);
      done(UniqueFd());
      return;
    }
    EndHandshake(raw);
  });
  raw->timeout.Arm(kPeerHandshakeTimeout);
  handshakes_.emplace(raw->id, std::move(h));
  return raw;
}

void NetworkAttachment::EndHandshake(PeerHandshake* h) {
  h->watch.Reset();
  h->timeout.Reset();
  auto it = handshakes_.find(h->id);
  if (it == handshakes_.end()) return;
  dispatcher_.DeferDelete(std::move(it->second));
  handshakes_.erase(it);
}

// The peer's supervisor answers "+" once its guest-side policy let the flow
// in; anything else (or nothing within kPeerHandshakeTimeout) refuses it.
void NetworkAttachment::OnPeerAnswer(PeerHandshake* h, short) {
  char answer = 0;
  ssize_t n = ::recv(h->fd.get(), &answer, 1, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  UniqueFd fd = std::move(h->fd);
  auto done = std::move(h->done);
  std::string what = h->line;
  EndHandshake(h);
  if (n != 1 || answer != '+') {
    static LogRateLimiter refusals;  // the guest may knock at will
    if (uint64_t held; refusals.Allow("group", &held)) {
      MSB_LOG(kInfo, "net") << "group: refused: " << what << HeldBackNote(held);
    }
    done(UniqueFd());
    return;
  }
  done(std::move(fd));
}

Status NetworkAttachment::ListenGroup() {
  if (network_.group_dir.empty()) return OkStatus();
  MSB_TRY_STATUS(MakeDirs(network_.group_dir, 0700));
  group_socket_ = network_.group_dir + "/" + network_.group_name + ".sock";
  MSB_TRY(group_listen_, ListenUnix(group_socket_, true, 64));
  group_accept_ = std::make_unique<Acceptor>(dispatcher_, group_listen_.get(), SOCK_NONBLOCK | SOCK_CLOEXEC,
                                             [this](UniqueFd fd) { OnGroupAccept(std::move(fd)); });
  return OkStatus();
}

void NetworkAttachment::OnGroupAccept(UniqueFd fd) {
  if (!AdmitPeer(fd.get(), group_socket_)) return;
  PeerHandshake* h = NewHandshake(std::move(fd));
  h->watch = dispatcher_.WatchFd(h->fd.get(), Dispatcher::kRead, [this, h](short) { OnGroupReadable(h); });
}

// "tcp PORT FROM\n", read byte by byte so no payload is consumed.
void NetworkAttachment::OnGroupReadable(PeerHandshake* h) {
  char c;
  for (;;) {
    ssize_t n = ::recv(h->fd.get(), &c, 1, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n != 1) {
      EndHandshake(h);
      return;
    }
    if (c == '\n' || h->line.size() >= 128) break;
    h->line.push_back(c);
  }
  AnswerGroup(h);
}

void NetworkAttachment::AnswerGroup(PeerHandshake* h) {
  UniqueFd fd = std::move(h->fd);
  std::string line = std::move(h->line);
  EndHandshake(h);
  unsigned port = 0;
  char from[80] = {0};
  if (std::sscanf(line.c_str(), "tcp %u %79s", &port, from) != 2 || port == 0 || port > 65535 ||
      !IsSandboxName(from) || !stack_ || !connected()) {
    (void)::send(fd.get(), "-", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    return;
  }
  net::IngressFlow in;
  in.source = GroupAddress(from);
  in.proto = schema::Protocol::kTcp;
  in.port = static_cast<uint16_t>(port);
  RefreshGroup();
  net::Decision d = policy_->Decide(in);
  if (!d.allow) {
    denials_->Record(d, "ingress from " + std::string(from) + " to tcp port " + std::to_string(port),
                     net::DenialLog::Clock::now());
    (void)::send(fd.get(), "-", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    return;
  }
  if (::send(fd.get(), "+", 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1) return;
  if (auto st = stack_->OpenInbound(std::move(fd), static_cast<uint16_t>(port)); !st.ok()) {
    MSB_LOG(kInfo, "net") << "group: " << st.error().message();
  }
}

Status NetworkAttachment::BindPorts() {
  for (const auto& p : network_.ports) {
    auto l = std::make_unique<Listener>();
    MSB_TRY(l->fd, BindPort(p, SOCK_NONBLOCK | SOCK_CLOEXEC));
    l->port = p;
    listeners_.push_back(std::move(l));
  }
  return OkStatus();
}

void NetworkAttachment::OnPublishedAccept(Listener* l, UniqueFd fd) {
  if (!stack_) return;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getpeername(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  net::IngressFlow in;
  if (auto src = net::IpAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&ss))) in.source = *src;
  in.proto = schema::Protocol::kTcp;
  in.port = static_cast<uint16_t>(l->port.guest_port);
  in.published = true;
  net::Decision d = policy_->Decide(in);
  if (!d.allow) {
    denials_->Record(d, "ingress to published tcp port " + std::to_string(l->port.guest_port),
                     net::DenialLog::Clock::now());
    return;
  }
  if (auto st = stack_->OpenInbound(std::move(fd), in.port); !st.ok()) {
    MSB_LOG(kInfo, "net") << "published port: " << st.error().message();
  }
}

nlohmann::json NetworkAttachment::StatusJson() const {
  nlohmann::json j;
  j["denied"] = denials_ ? denials_->total() : 0;
  j["denied_by"] = nlohmann::json::object();
  if (denials_) {
    for (const auto& [reason, n] : denials_->counts()) j["denied_by"][reason] = n;
  }
  if (stack_) {
    j["tcp_flows"] = stack_->tcp_flows();
    j["udp_flows"] = stack_->udp_flows();
    j["dns_queries"] = stack_->stats().dns_queries;
    j["host_sockets"] = stack_->stats().host_sockets;
  }
  if (dns_) {
    j["dns_forwarded"] = dns_->stats().forwarded;
    j["dns_refused"] = dns_->stats().refused_names;
  }
  return j;
}

}  // namespace msb::vm
