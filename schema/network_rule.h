// The network rule grammar of docs/sandboxfile.md:
//   <action>[:<direction>]@<target>[:<proto>[:<ports>]]
// parsed into a NetworkRule and printed back in canonical form. IPv6
// addresses and CIDRs are written in brackets ("allow@[2001:db8::/32]:tcp").
// Also the one decoder of a sandbox's network policy from the canonical
// text that specs and records carry. Matching traffic against rules is the
// network component's job (net/policy.h), not this.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "schema/model.h"

namespace msb::schema {

// The error message names the part that is wrong: action, direction,
// target, proto or ports.
Result<NetworkRule> ParseNetworkRule(std::string_view text);

// Canonical text: direction and protocol always written, targets canonical
// ("allow:egress@10.1.2.0/24:tcp:5432", "deny:egress@*.ads.example.com:any").
std::string ToString(const NetworkRule& rule);

// The profile named by its canonical text, ToString(NetworkPolicy): "none",
// "group", "public" or "any"; nullopt for anything else.
std::optional<NetworkPolicy> ParseNetworkPolicy(std::string_view name);

// A Network from the canonical text of its policy: the profile's name, the
// rules in canonical form (as canonical.cc writes them into "network") and
// the rebinding defence; dns_servers stays empty. What the supervisor
// enforces and `msb net check` explains are decoded here alike. The error
// names the profile or the rule (1-based) that does not parse.
Result<Network> NetworkFromCanonical(std::string_view policy, const std::vector<std::string>& rules,
                                     bool rebind_protection);

}  // namespace msb::schema
