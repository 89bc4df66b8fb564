// The rules of a sandbox's `security:` section (docs/sandboxfile.md
// "Hardening") that the Sandboxfile and `msb run`'s flags share: capability
// names, the named levels and what they expand to, and the capability set
// cap_drop/cap_add leave. Pure functions; applying them is agentd's job.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "schema/model.h"

namespace msb::schema {

// "ALL", or a capability of common/capabilities.h with the CAP_ prefix and
// case optional, as docker takes them: "net_raw", "NET_RAW", "CAP_NET_RAW"
// all give "CAP_NET_RAW". The error names the text, a close name if there
// is one, and every valid name.
Result<std::string> CanonicalCapability(std::string_view text);

// Inserts a canonical name into a sorted, duplicate-free list.
void AddCapability(std::vector<std::string>* list, const std::string& name);

// `security.level`: default changes nothing; strict is read_only_root,
// no_new_privileges, cap_drop [ALL] and network policy none, each unless the
// file sets it itself.
enum class SecurityLevel : int { kDefault = 0, kStrict = 1 };
const char* ToString(SecurityLevel level);
Result<SecurityLevel> ParseSecurityLevel(std::string_view text);
// What the level sets, before the file's explicit fields override it.
Security SecurityOf(SecurityLevel level);
// The network policy the level implies where the file names none.
std::optional<NetworkPolicy> NetworkPolicyOf(SecurityLevel level);

// The capabilities the guest's processes keep, as a mask (bit n =
// capability n): nullopt when cap_drop and cap_add are both empty (msb's
// default: every capability, as root in a VM has). Otherwise docker's rule
// with every capability as the base: cap_add ALL keeps all but cap_drop;
// cap_drop ALL keeps only cap_add; else all but cap_drop, plus cap_add.
std::optional<uint64_t> EffectiveCapabilities(const Security& security);
// The names of a mask's capabilities, in number order.
std::vector<std::string> CapabilityNames(uint64_t mask);

}  // namespace msb::schema
