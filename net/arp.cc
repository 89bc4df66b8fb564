// ARP at the gateway: the stack answers the guest's ARP requests so that
// every IPv4 address but the guest's own resolves to the gateway's MAC. Not
// an ARP cache and not a resolver of its own: the guest's MAC is configured.
//
// Theory of operation
//
// Scope: Ethernet/IPv4 ARP from the guest (ParseFrame refuses other
// hardware and protocol types).
//
// Goals: the guest reaches every IPv4 destination, on its prefix or not,
// through the gateway (StackConfig::gateway_mac); its duplicate address
// detection (a request for its own address, StackConfig::guest4) stays
// unanswered, so it keeps that address.
//
// Non-goals: no requests of our own (frames to the guest are addressed to
// StackConfig::guest_mac), no gratuitous ARP, no cache. Replies, and
// requests whose sender address is not guest4, are ignored.
//
// Limits: one reply per request; nothing is stored, so no table to bound.
// States and timeouts: none.
//
// Data flow, guest → stack: a request (op 1) from guest4 asking for tpa.
// Stack → guest: a reply (op 2) "tpa is at gateway_mac", to the requester's
// hardware address (sha).
#include "net/stack_impl.h"

namespace msb::net {

void Stack::Impl::OnArp(const ArpPacket& a) {
  if (a.op != 1 || a.tpa == cfg.guest4.v4() || a.spa != cfg.guest4.v4()) return;
  BuildArpReply(out, cfg.gateway_mac, a.tpa, a.sha, a.spa);
  Emit();
}

}  // namespace msb::net
