// NDP at the gateway: neighbour advertisements for the gateway's IPv6
// address in answer to the guest's neighbour solicitations. Not router
// advertisements and not SLAAC: the guest's IPv6 address and default route
// are configured (StackConfig::guest6, gateway6).
//
// Theory of operation
//
// Scope: ICMPv6 neighbour solicitations (kIcmp6NeighborSolicit). They are
// taken before the stack's source check, since duplicate address detection
// solicits from the unspecified address ::.
//
// Goals: the guest resolves gateway6 to StackConfig::gateway_mac, its
// default router. Solicitations for any other target are consumed
// unanswered: the guest's duplicate address detection for guest6 succeeds,
// and other addresses of its prefix (prefix6) stay unresolved, as no other
// node is on the link.
//
// Non-goals: no solicitations of our own, no unsolicited advertisements, no
// redirects, no neighbour cache.
//
// Limits: one advertisement per solicitation; nothing is stored.
// States and timeouts: none.
//
// Data flow, guest → stack: a solicitation for a target, from guest6 or
// from ::. Stack → guest: a solicited, override advertisement of gateway6
// with the target link-layer address option (gateway_mac), to the
// solicitor, or to ff02::1 (all nodes) when it solicited from ::.
#include "net/stack_impl.h"

namespace msb::net {

bool Stack::Impl::OnNeighborSolicit(const ParsedFrame& f) {
  auto target = NeighborSolicitTarget(f);
  if (!target) return false;
  if (*target == cfg.gateway6) {
    IpAddress to = f.ip_src;
    if (to == IpAddress::V6({})) to = *IpAddress::Parse("ff02::1");
    BuildNeighborAdvert(out, L2L3{cfg.gateway_mac, f.src, cfg.gateway6, to}, cfg.gateway6,
                        cfg.gateway_mac);
    Emit();
  }
  return true;
}

}  // namespace msb::net
