// Linux capability names and numbers, as <linux/capability.h> of Linux 6.1
// (the guest kernel) numbers them: the one table the Sandboxfile's
// cap_drop/cap_add, `msb run --cap-*` and agentd share. Header-only, so the
// static agentd needs no extra source. Not the setting of capabilities
// (agentd/spawn.cc does that).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace msb {

// Index = capability number; CAP_LAST_CAP of Linux 6.1 is 40.
inline constexpr std::array<std::string_view, 41> kCapabilityNames = {
    "CAP_CHOWN",           "CAP_DAC_OVERRIDE",  "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
    "CAP_FSETID",          "CAP_KILL",          "CAP_SETGID",          "CAP_SETUID",
    "CAP_SETPCAP",         "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",       "CAP_NET_RAW",       "CAP_IPC_LOCK",        "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",      "CAP_SYS_RAWIO",     "CAP_SYS_CHROOT",      "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",       "CAP_SYS_ADMIN",     "CAP_SYS_BOOT",        "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",    "CAP_SYS_TIME",      "CAP_SYS_TTY_CONFIG",  "CAP_MKNOD",
    "CAP_LEASE",           "CAP_AUDIT_WRITE",   "CAP_AUDIT_CONTROL",   "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",    "CAP_MAC_ADMIN",     "CAP_SYSLOG",          "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",   "CAP_AUDIT_READ",    "CAP_PERFMON",         "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE"};

// Every capability of the table as a bit mask (bit n = capability n).
inline constexpr uint64_t kAllCapabilities = (uint64_t{1} << kCapabilityNames.size()) - 1;

// The number of an exact table name ("CAP_NET_RAW"), or nullopt.
inline std::optional<int> CapabilityNumber(std::string_view name) {
  for (size_t i = 0; i < kCapabilityNames.size(); ++i) {
    if (kCapabilityNames[i] == name) return static_cast<int>(i);
  }
  return std::nullopt;
}

// The mask (bit n = capability n) of exact table names; other names, "ALL"
// among them, add nothing.
inline uint64_t CapabilityMask(const std::vector<std::string>& names) {
  uint64_t mask = 0;
  for (const std::string& name : names) {
    if (auto n = CapabilityNumber(name)) mask |= uint64_t{1} << *n;
  }
  return mask;
}

}  // namespace msb
