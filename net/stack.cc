// Stack: the frame demultiplexer behind stack.h. Each guest frame is parsed
// once (packet.h), its source checked and handed to its protocol's handler
// in arp.cc, ndp.cc, icmp.cc, udp.cc or stack_tcp.cc, which share
// Stack::Impl (stack_impl.h). No protocol logic lives here.
#include "net/stack.h"

#include <iterator>

#include "net/stack_impl.h"

namespace msb::net {

namespace {

constexpr const char* kProtoNames[] = {"tcp", "udp", "icmp"};
constexpr const char* kActionNames[] = {"deny", "allow", "allow-to-host-loopback"};
static_assert(std::size(kProtoNames) == static_cast<size_t>(FlowProto::kIcmp) + 1);
static_assert(std::size(kActionNames) == static_cast<size_t>(FlowAction::kAllowToHostLoopback) + 1);

}  // namespace

const char* ToString(FlowProto p) { return kProtoNames[static_cast<int>(p)]; }
const char* ToString(FlowAction a) { return kActionNames[static_cast<int>(a)]; }

// ARP first (no IP header); then neighbour solicitations, whatever their
// source (duplicate address detection sends them from ::); then only frames
// from the guest's own address reach the transports.
void Stack::Impl::OnFrame(std::span<const uint8_t> bytes) {
  ++stats.frames_in;
  auto parsed = ParseFrame(bytes);
  if (!parsed) {
    ++stats.frames_dropped;
    return;
  }
  ParsedFrame& f = *parsed;
  if (f.arp) return OnArp(*f.arp);
  if (f.ip_src.is_v6() && f.proto == kProtoIcmp6 && OnNeighborSolicit(f)) return;
  if (f.ip_src != Guest(f.ip_src.is_v6())) {
    ++stats.frames_dropped;  // spoofed or link-local source
    return;
  }
  switch (f.proto) {
    case kProtoIcmp:
    case kProtoIcmp6:
      return OnIcmp(f);
    case kProtoUdp:
      return OnUdp(f);
    case kProtoTcp:
      return OnTcp(f);
    default:
      ++stats.frames_dropped;
  }
}

Stack::Stack(Dispatcher& dispatcher, StackConfig config, FrameSink sink, PolicyFn policy,
             DnsHandler dns)
    : impl_(std::make_unique<Impl>(dispatcher, std::move(config), std::move(sink),
                                   std::move(policy), std::move(dns))) {}

Stack::~Stack() = default;

void Stack::OnFrame(std::span<const uint8_t> frame) { impl_->OnFrame(frame); }
Status Stack::OpenInbound(UniqueFd host_fd, uint16_t guest_port, bool ipv6) {
  return impl_->OpenInbound(std::move(host_fd), guest_port, ipv6);
}
Status Stack::AddUdpInbound(UniqueFd udp_socket, uint16_t guest_port, InboundAdmit admit) {
  return impl_->AddUdpInbound(std::move(udp_socket), guest_port, std::move(admit));
}
const StackStats& Stack::stats() const { return impl_->stats; }
size_t Stack::tcp_flows() const { return impl_->tcp.size(); }
size_t Stack::udp_flows() const { return impl_->udp.size(); }
const StackConfig& Stack::config() const { return impl_->cfg; }

}  // namespace msb::net
