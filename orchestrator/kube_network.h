// A sandbox's network policy (net/policy.h) as Kubernetes objects, for the
// export (kube_export.h): one NetworkPolicy, and a CiliumNetworkPolicy for
// host-name rules under --fqdn-policy cilium. Used by kube_export.cc only.
//
// NetworkPolicy only allows, and its rules are a union; msb's rules are
// ordered, first match wins. So:
//  - DNS to the cluster's resolver (kube-dns pods, port 53) is always
//    allowed, as DNS to the gateway is under msb.
//  - Allow rules become egress (ingress) entries in file order, then the
//    profile's: none nothing, group the project's pods, public the project's
//    pods and ipBlocks 0.0.0.0/0 and ::/0 except every special-purpose range
//    of net/address.h (SpecialRanges) and every prefix embedding an IPv4
//    address, any the same except only the guarded classes (unspecified,
//    loopback, meta).
//  - A CIDR rule excepts the metadata ranges inside it (msb's CIDR rules
//    never match meta).
//  - A deny rule on every protocol and port, naming an address, a CIDR, a
//    class or the group, is taken out of the entries after it: an ipBlock
//    inside it goes, one holding it gets an `except`. Other deny rules (host
//    names, ports, protocols) cannot be expressed: a warning says the
//    export allows more than msb would.
//  - ICMP and `host` (the machine msb runs on) have no form: warnings.
//  - Ingress: ingress rules, then the published ports from anywhere, then
//    the project's pods unless the profile is none.
#pragma once

#include <string>
#include <vector>

#include "orchestrator/kube_export.h"
#include "schema/model.h"

namespace msb::orchestrator {

class KubeNetwork {
 public:
  // project, sandbox and options must outlive this.
  KubeNetwork(const schema::Project& project, const schema::Sandbox& sandbox, const KubeExportOptions& options);

  // The NetworkPolicy and, with host-name rules under FqdnPolicy::kCilium,
  // the CiliumNetworkPolicy; their metadata is the caller's to fill.
  std::vector<KubeObject> Objects();
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  const schema::Project& project_;
  const schema::Sandbox& sb_;
  const KubeExportOptions& options_;
  std::vector<std::string> warnings_;
};

}  // namespace msb::orchestrator
