// NetworkAttachment and the spec → stack translation: see network.h.
#include "vm/network.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstring>

#include "common/log.h"

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

Result<net::InetAddr> ParseAddr(const std::string& text, bool v6, const char* field) {
  auto a = net::InetAddr::Parse(text);
  if (!a || a->v6 != v6)
    return Error(ErrorCode::kInvalidArgument, std::string("network.") + field + " \"" + text +
                                                  "\" is not an IPv" + (v6 ? "6" : "4") + " address");
  return *a;
}

struct Cidr {
  net::InetAddr addr;
  int prefix = 0;
  bool Contains(const net::InetAddr& a) const {
    if (a.v6 != addr.v6) return false;
    int bits = prefix;
    for (size_t i = 0; bits > 0; ++i, bits -= 8) {
      uint8_t mask = bits >= 8 ? 0xff : static_cast<uint8_t>(0xff << (8 - bits));
      if ((a.b[i] & mask) != (addr.b[i] & mask)) return false;
    }
    return true;
  }
};

Result<Cidr> ParseCidr(const std::string& text) {
  auto slash = text.find('/');
  auto a = net::InetAddr::Parse(text.substr(0, slash));
  int max = a && a->v6 ? 128 : 32;
  int prefix = max;
  if (a && slash != std::string::npos) {
    char* end = nullptr;
    long p = std::strtol(text.c_str() + slash + 1, &end, 10);
    if (*end != '\0' || end == text.c_str() + slash + 1 || p < 0 || p > max) a.reset();
    prefix = static_cast<int>(p);
  }
  if (!a) return Error(ErrorCode::kInvalidArgument, "network.allow_cidrs: \"" + text + "\" is not an address or CIDR (like 192.0.2.0/24)");
  return Cidr{*a, prefix};
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

Result<net::PolicyFn> InterimPolicy(const VmNetwork& n) {
  std::vector<Cidr> allow;
  for (const auto& text : n.allow_cidrs) {
    MSB_TRY(Cidr c, ParseCidr(text));
    allow.push_back(c);
  }
  MSB_TRY(net::StackConfig cfg, StackConfigFor(n));
  std::vector<int> ports = n.host_ports;
  return net::PolicyFn([allow, ports, cfg](const net::FlowKey& k) {
    bool to_gateway = k.dst == cfg.gateway4 || (k.dst.v6 && k.dst == cfg.gateway6);
    if (to_gateway) {
      for (int p : ports)
        if (p == k.dport) return net::FlowVerdict{net::FlowAction::kAllowToHostLoopback};
      return net::FlowVerdict{net::FlowAction::kDeny};
    }
    for (const Cidr& c : allow)
      if (c.Contains(k.dst)) return net::FlowVerdict{net::FlowAction::kAllow};
    return net::FlowVerdict{net::FlowAction::kDeny};
  });
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
  accept_.Reset();
  link_.reset();
  stack_.reset();
  if (listen_) ::unlink(socket_path_.c_str());
}

Status NetworkAttachment::Start() {
  MSB_TRY(net::StackConfig cfg, StackConfigFor(network_));
  MSB_TRY(net::PolicyFn policy, InterimPolicy(network_));
  stack_ = std::make_unique<net::Stack>(
      dispatcher_, cfg,
      [this](std::span<const uint8_t> frame) {
        if (link_) link_->Send(frame);
      },
      std::move(policy), nullptr);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof addr.sun_path)
    return Error(ErrorCode::kInvalidArgument, "network socket path too long: " + socket_path_);
  std::memcpy(addr.sun_path, socket_path_.c_str(), socket_path_.size() + 1);
  listen_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listen_) return Error::FromErrno("network: socket");
  ::unlink(socket_path_.c_str());
  if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return Error::FromErrno("network: bind " + socket_path_);
  ::chmod(socket_path_.c_str(), 0600);
  if (::listen(listen_.get(), 1) != 0) return Error::FromErrno("network: listen " + socket_path_);
  accept_ = dispatcher_.WatchFd(listen_.get(), Dispatcher::kRead, [this](short) { OnAccept(); });
  return OkStatus();
}

void NetworkAttachment::OnAccept() {
  UniqueFd fd(::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (!fd) return;
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
