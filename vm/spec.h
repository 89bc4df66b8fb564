// VmSpec: everything one supervisor needs to run one sandbox's VM, written by
// the CLI to <sandbox dir>/spec.json before the supervisor starts. Not the
// Sandboxfile model: the CLI resolves that (images, kernel, disks) into this.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

#include "common/result.h"
#include "vm/log_file.h"
#include "vm/devices.h"

namespace msb::vm {

// The sandbox's network: a virtio-net device on QEMU's stream netdev, whose
// other end is the supervisor's user-mode stack (net/stack.h) listening on
// <dir>/net.sock. Addresses are the guest's; the gateway is the stack.
struct VmNetwork {
  std::string mac = "52:54:00:6d:73:02";
  std::string gateway_mac = "52:54:00:6d:73:01";
  std::string ipv4 = "10.0.2.15";
  int prefix4 = 24;
  std::string gateway4 = "10.0.2.2";
  std::string ipv6 = "fd00:6d73:62::15";
  int prefix6 = 64;
  std::string gateway6 = "fd00:6d73:62::2";
  // A large MTU lets the guest send 64 KiB segments: the link is memory, and
  // every frame costs the guest (emulated) CPU time.
  int mtu = 65520;
  // The policy (net/policy.h), as declared: profile none|group|public|any,
  // rules in their canonical text, DNS upstreams ("IP", "IP:PORT",
  // "[IPv6]:PORT"; empty: the host's resolvers) and rebinding defence.
  std::string profile = "public";
  std::vector<std::string> rules;
  std::vector<std::string> dns_servers;
  bool rebind_protection = true;
  // Published ports: host listeners whose connections (TCP) or datagrams
  // (UDP) the stack delivers to guest_port.
  struct Port {
    std::string host_ip = "127.0.0.1";
    int host_port = 0;
    int guest_port = 0;
    std::string proto = "tcp";  // "tcp" or "udp"
  };
  std::vector<Port> ports;
  // Sandbox to sandbox: the project's directory of supervisor sockets
  // (vm/network.h) and this sandbox's name in it; empty: no group.
  std::string group_dir;
  std::string group_name;
  // network.tls.ca: a PEM file of extra trust anchors for the upstream side
  // of intercepted TLS (docs/secrets.md); empty: the host's trust only.
  std::string tls_ca_file;
};
nlohmann::json ToJson(const VmNetwork& n);

// A secret bound to the sandbox, without its value: where the value comes
// from on the host (read by msb when the supervisor starts and handed over
// on an inherited descriptor, never written here), the hosts it may go to
// and where it may be injected (secrets/substitute.h).
struct VmSecret {
  std::string name;    // the guest's variable
  std::string source;  // "env" or "file"
  std::string from;    // the host variable or absolute file
  std::vector<std::string> allow;
  bool inject_headers = true, inject_basic_auth = true, inject_query = false, inject_body = false;
};
Result<VmNetwork> VmNetworkFromJson(const nlohmann::json& j);

struct VmSpec {
  std::string project;
  std::string name;
  std::string dir;  // sandbox directory: sockets, logs, upper disk
  int cpus = 1;
  uint64_t memory_bytes = 512ull << 20;
  std::string accel = "tcg";  // "tcg" or "kvm", already decided by the probe
  std::string kernel;
  std::string initramfs;
  std::string base_disk;   // read-only ext4
  // A snapshot's layers (orchestrator/snapshot.h), oldest first: ext4 disks
  // attached read-only, serial agent::kLowerSerialPrefix + i.
  std::vector<std::string> lower_disks;
  std::string upper_disk;  // per-sandbox writable ext4; empty when ephemeral
  std::vector<VmDisk> volumes;  // named volumes (virtio-blk), serial msb-vol-<i>
  std::vector<VmShare> shares;  // host directories (virtio-fs), tag msbfs<i>
  nlohmann::json boot;     // agent boot configuration (docs/agent-protocol.md)
  nlohmann::json policy;   // restart policy and health check (vm/lifecycle_policy.h)
  // The guest's TSC frequency, passed as tsc_early_khz: under TCG the kernel's
  // PIT calibration can fail and then wait forever for timer ticks; with a
  // known frequency it never calibrates. 0: let the kernel calibrate.
  uint64_t tsc_khz = 0;
  int boot_timeout_ms = 60000;
  // "auto": restore a booted template when one fits (vm/template.h); "cold":
  // always boot the kernel (the Sandboxfile's `boot: cold`).
  std::string boot_mode = "auto";
  // workload.log's bound (vm/log_file.h): MSB_LOG_MAX_SIZE when msb started it.
  uint64_t log_max_bytes = kDefaultLogMaxBytes;
  int stop_timeout_ms = 10000;
  std::optional<VmNetwork> network;  // absent: no network device
  std::vector<VmSecret> secrets;     // by name

  std::string AgentSocket() const { return dir + "/agent.sock"; }
  std::string QmpSocket() const { return dir + "/qmp.sock"; }
  std::string ControlSocket() const { return dir + "/control.sock"; }
  std::string ConsoleLog() const { return dir + "/console.log"; }
  std::string ConsoleSocket() const { return dir + "/console.sock"; }
  std::string WorkloadLog() const { return dir + "/workload.log"; }
  std::string SupervisorLog() const { return dir + "/supervisor.log"; }
  std::string SpecPath() const { return dir + "/spec.json"; }
  std::string NetSocket() const { return dir + "/net.sock"; }
};

nlohmann::json ToJson(const VmSpec& spec);
Result<VmSpec> VmSpecFromJson(const nlohmann::json& j);
Status WriteSpec(const VmSpec& spec);
Result<VmSpec> ReadSpec(const std::string& dir);

// The guest kernel's command line.
std::string KernelCmdline(const VmSpec& spec);
// agent::kLowerSerialPrefix + i.
std::string LowerSerial(size_t index);
// The QEMU command line for spec (argv[0] is the QEMU binary), written with
// QemuCommandLine (vm/qemu_cmdline.h). Its device order is fixed: console,
// QMP, agent port, base, lower layers, upper, volumes, shares, network, rng.
std::vector<std::string> QemuArgv(const VmSpec& spec, const std::string& qemu_binary);

// The QEMU binary: $MSB_QEMU, else qemu-system-x86_64 on PATH. The error names
// the set-up step when it is missing.
Result<std::string> FindQemu();

}  // namespace msb::vm
