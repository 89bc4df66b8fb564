// The network rule grammar of docs/sandboxfile.md:
//   <action>[:<direction>]@<target>[:<proto>[:<ports>]]
// parsed into a NetworkRule and printed back in canonical form. IPv6
// addresses and CIDRs are written in brackets ("allow@[2001:db8::/32]:tcp").
// Matching traffic against rules is the network component's job, not this.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"
#include "schema/model.h"

namespace msb::schema {

// The error message names the part that is wrong: action, direction,
// target, proto or ports.
Result<NetworkRule> ParseNetworkRule(std::string_view text);

// Canonical text: direction and protocol always written, targets canonical
// ("allow:egress@10.1.2.0/24:tcp:5432", "deny:egress@*.ads.example.com:any").
std::string ToString(const NetworkRule& rule);

}  // namespace msb::schema
