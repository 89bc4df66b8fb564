// A control group per sandbox: the host's ceiling on what its supervisor,
// QEMU and virtiofsd together may use (memory, processes, CPU time), whatever
// the guest makes them do. Not the guest's own limits (its memory and vCPUs
// are the VM's) and not the jail (vm/jail.h), which bounds what they reach.
//
// Each controller is taken from where the host has it: the cgroup v2 mount
// when its cgroup.controllers lists it, else its cgroup v1 hierarchy. A
// sandbox's group is msb/<project>-<name>-<8 hex> under the mount point of
// each hierarchy (one directory for all v2 controllers); the suffix, from a
// hash of the sandbox directory, keeps two homes' sandboxes of the same name
// apart. The supervisor moves itself in before it starts anything, so QEMU
// and virtiofsd are born inside, and removes the group when it ends; a group
// left by a killed supervisor is reused by the next start and removed with
// the sandbox.
//
// Limits (SandboxCgroupLimits):
//  - memory: the VM's memory plus kVmmMemoryOverhead (QEMU itself, its TCG
//    translation cache (kTcgCacheMiB, vm/qemu_cmdline.h), the supervisor and virtiofsd); swap
//    is held to the same total where the host accounts it (v1 memsw).
//  - pids: kSandboxPidsMax processes and threads.
//  - cpu: `cpus` cores of time per kCpuPeriodUs (CFS quota; v2 cpu.max).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace msb::vm {

struct VmSpec;

inline constexpr uint64_t kVmmMemoryOverhead = 384ull << 20;
inline constexpr uint64_t kSandboxPidsMax = 1024;
inline constexpr uint64_t kCpuPeriodUs = 100000;

struct CgroupLimits {
  uint64_t memory_bytes = 0;
  uint64_t pids = kSandboxPidsMax;
  int cpus = 1;
};

CgroupLimits SandboxCgroupLimits(const VmSpec& spec);

// "msb/<project>-<name>-<first 8 hex of sha256(dir)>", dir being the
// sandbox directory.
std::string SandboxCgroupName(const std::string& project, const std::string& name,
                              const std::string& dir);

// Where the host keeps the controllers msb limits.
struct CgroupHost {
  struct Controller {
    std::string name;   // "memory", "pids" or "cpu"
    std::string mount;  // the hierarchy's mount point
    bool v2 = false;
  };
  std::vector<Controller> controllers;  // found, in the order memory, pids, cpu
  std::vector<std::string> missing;     // not found on either version

  // The directories of group `name` (relative, "msb/..."), one per hierarchy.
  std::vector<std::string> Dirs(const std::string& name) const;
};

// Reads /proc/self/mountinfo text; a v2 mount's controllers are read from
// `<mount>/cgroup.controllers`.
CgroupHost ParseCgroupHost(std::string_view mountinfo);
// This host, from /proc/self/mountinfo.
CgroupHost DetectCgroupHost();

// One line for the user when a sandbox will run without some limit: which
// controllers are missing, or that creating groups needs root; empty when
// every limit applies. `is_root`: whether msb runs as root.
std::string CgroupNotice(const CgroupHost& host, bool is_root);

// Creates group `name` in every hierarchy of `host` (an existing one is
// reused), writes `limits`, and moves process `pid` into it. On failure
// nothing is left created and the error names the file.
Status JoinCgroup(const CgroupHost& host, const std::string& name, const CgroupLimits& limits,
                  pid_t pid);

// Moves process `pid` to the root group of each hierarchy and removes group
// `name`. A group that still holds
// processes stays, and the error says so.
Status LeaveCgroup(const CgroupHost& host, const std::string& name, pid_t pid);

// Removes group `name` once it is empty (one a killed supervisor left, whose
// QEMU and virtiofsd are still dying), waiting at most `wait_ms` for that; a
// missing group is fine.
Status RemoveCgroup(const CgroupHost& host, const std::string& name, int wait_ms = 0);

}  // namespace msb::vm
