// The JSON bodies of the agent protocol's control frames, as typed structs with
// an encoder and a validating decoder each. Decoders never throw: malformed or
// out-of-range input is an Error (kProtocol) naming the frame and the field.
// Not the framing (frame.h) and not the transport (channel.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/protocol.h"
#include "common/result.h"

namespace msb::agent {

// kHello, both directions.
struct Hello {
  int version = 0;
  std::string software;  // "agentd", "msb-supervisor", ... (informational)
};

struct RootConfig {
  std::string base_serial = "msb-base";
  std::string upper_serial = "msb-upper";
  // Read-only ext4 layers over the base, oldest first (a snapshot's chain,
  // kLowerSerialPrefix + i); overlayfs stacks their upper/ directories,
  // newest on top. At most kMaxLowerLayers.
  std::vector<std::string> lower_serials;
  bool ephemeral = false;          // upper layer on tmpfs instead of a disk
  uint64_t upper_size_bytes = 0;   // tmpfs size when ephemeral (0: kernel default)
  // The assembled root is remounted read-only once agentd has written what it
  // writes there (resolv.conf, hosts, the CA), before any process starts.
  bool read_only = false;
};

// How agentd starts every process of the sandbox: the workload, each exec
// (health checks included). Copy helpers are agentd's own and unaffected.
struct SecurityConfig {
  bool no_new_privileges = false;  // PR_SET_NO_NEW_PRIVS before execve
  // The capabilities a process keeps (bounding set; permitted and effective
  // for root; inheritable and ambient empty), names of common/capabilities.h.
  // nullopt: unchanged (every capability).
  std::optional<std::vector<std::string>> capabilities;
};

// One mount agentd makes inside the new root, after the overlay root and
// before switching into it (agentd/mounts.h). The target is resolved inside
// the new root (symlinks included), its missing directories created.
struct MountConfig {
  enum class Type : int { kDisk = 0, kVirtiofs = 1, kTmpfs = 2 };
  Type type = Type::kTmpfs;
  // kDisk: the virtio-blk serial of an ext4 disk; kVirtiofs: the virtio-fs
  // tag; kTmpfs: unused (empty).
  std::string source;
  std::string target;  // absolute guest path, no "." or ".." components
  bool read_only = false;
  uint64_t size_bytes = 0;  // kTmpfs: 0 = the kernel's default (half the RAM)
  uint32_t mode = 01777;    // kTmpfs: permission bits of its root
};
const char* ToString(MountConfig::Type type);
// Limits a boot message is checked against (docs/agent-protocol.md).
inline constexpr size_t kMaxBootMounts = 64;
inline constexpr size_t kMaxDiskSerial = 20;  // virtio-blk serials are 20 bytes
inline constexpr size_t kMaxVirtiofsTag = 36;
inline constexpr size_t kMaxMountTarget = 4096;

// The guest's one network interface (the virtio-net device with `mac`),
// configured statically: the host's user-mode stack is gateway and DNS.
struct NetworkConfig {
  std::string mac;       // "52:54:00:..", finds the interface
  std::string ipv4;      // dotted quad
  int prefix4 = 24;
  std::string gateway4;
  std::string ipv6;      // empty: no IPv6 address or route
  int prefix6 = 64;
  std::string gateway6;
  int mtu = 1500;
  std::string dns;       // the nameserver written to /etc/resolv.conf
};

// kBoot, host→agent. `network` absent or null: no network configured.
struct BootConfig {
  std::string hostname;
  std::vector<std::string> env;  // "K=V"
  std::string user;              // "", "uid", "uid:gid" or a name in /etc/passwd
  std::string workdir;
  std::vector<std::string> command;  // empty: no workload (only exec service)
  RootConfig root;
  std::vector<MountConfig> mounts;  // in order: a mount may nest in an earlier one
  bool tty = false;
  int rows = 24;
  int cols = 80;
  std::optional<NetworkConfig> network;
  // A PEM CA certificate the guest trusts (agentd/trust.h); "" = none. The
  // host intercepts TLS to a sandbox's secret hosts with leaves it signs.
  std::string ca_pem;
  SecurityConfig security;
  // Host randomness (hex, at most kMaxBootEntropy bytes) agentd adds to the
  // kernel's pool before anything else, then forces a reseed: a VM restored
  // from a booted template (vm/template.h) shares its RNG state with every
  // other VM restored from it until then. "" = none.
  std::string entropy;
  // The host's wall clock when it sent the message, in ns since the epoch;
  // 0 = leave the guest's clock alone.
  int64_t time_ns = 0;
  // The VM was restored from a booted template: its kernel probed the
  // template's placeholder disks, so agentd probes the disks again first.
  bool restored = false;
};
inline constexpr size_t kMaxBootEntropy = 256;
// "ca_pem" holds at most kMaxCaPem bytes (a P-256 CA certificate is under
// 1 KiB), starts with kCaPemHeader and is printable ASCII, CR and LF only.
inline constexpr size_t kMaxCaPem = 16 * 1024;
inline constexpr std::string_view kCaPemHeader = "-----BEGIN CERTIFICATE-----";

// kReady, agent→host.
struct Ready {
  std::optional<std::string> error;
};

// kExec, host→agent.
struct ExecRequest {
  std::vector<std::string> argv;  // non-empty
  std::vector<std::string> env;   // "K=V", overlays the sandbox's environment
  std::string cwd;
  std::string user;
  bool tty = false;
  int rows = 24;
  int cols = 80;
  bool stdin_open = false;  // JSON "stdin"; false: the process reads /dev/null (pipes mode)
};

struct Started { int64_t pid = 0; };
// Why a process never ran its command (agentd/spawn.h): the child reports it
// before it exits, so "the command was not found" is not confused with "the
// command exited 127". JSON "start_failure", absent for kNone.
enum class StartFailure : int {
  kNone = 0,
  kNotFound = 1,       // "not_found": no such file, or not on PATH (ENOENT)
  kNotExecutable = 2,  // "not_executable": found, execve refused it (EACCES, ENOEXEC, ...)
  kSetup = 3,          // "setup": the directory, identity or capabilities could not be set
};
// "none", "not_found", "not_executable", "setup".
const char* ToString(StartFailure failure);
struct ExitInfo {
  int code = 0;    // exit code; -1 when killed by a signal
  int signal = 0;  // terminating signal, 0 when it exited
  StartFailure start_failure = StartFailure::kNone;
};
// The status a shell (and docker) reports for a process: 127 when its
// command was not found, 126 when it could not be run, 128+signal when a
// signal killed it, else its exit code. Only the enum and the two numbers
// are read, each range-checked by ParseExitInfo.
int ShellExitCode(const ExitInfo& exit);
struct SignalRequest { int signal = 0; };
struct Resize { int rows = 0; int cols = 0; };
struct Credit { uint32_t bytes = 0; };
// kCopyIn / kCopyOut.
struct PathRequest { std::string path; };
// kResult.
struct ResultMsg {
  std::optional<std::string> error;  // none: {"ok":true}
};
struct Shutdown { int64_t timeout_ms = 10000; };
// kFreeze: agentd thaws by itself timeout_ms (1..kMaxFreezeMs) later.
struct Freeze { int64_t timeout_ms = 30000; };
// kError. On id N != 0 it is final for N (the request could not start). A
// complaint about a frame for a live id N comes on id 0 with id = N, and N
// stays live.
struct ErrorMsg {
  std::string message;
  std::optional<uint32_t> id;
};

// Unpack mode (docs/agent-protocol.md "unpack"): kUnpack, host→agent, sent
// instead of kBoot. Layers are applied in order onto the ext4 disk whose
// serial is target_serial; each layer is read from the first `size` bytes of
// the read-only disk with its serial.
struct UnpackLayer {
  std::string serial;
  uint64_t size = 0;       // the blob's exact byte length
  std::string media_type;  // informational: the compression is detected
};
// What a builder VM's agentd does before it reads any disk, as a sandbox's
// does on kBoot (BootConfig's fields of the same names): add the host's
// randomness, set the clock and, restored from a builder template
// (vm/builder_vm.h), probe the disks again. Sent in kUnpack and kExport.
struct GuestStart {
  std::string entropy;  // hex, at most kMaxBootEntropy bytes; "" = none
  int64_t time_ns = 0;  // 0 = leave the clock alone
  bool restored = false;
};
struct UnpackRequest {
  std::string target_serial;
  std::vector<UnpackLayer> layers;
  GuestStart start;
};
// kLayer, agent→host, one per layer applied, in order.
struct LayerReport {
  uint32_t index = 0;     // position in UnpackRequest::layers
  std::string diff_id;    // "sha256:<64 hex>" of the uncompressed tar stream
  uint64_t entries = 0;   // tar entries read (whiteouts included)
  uint64_t bytes = 0;     // length of the uncompressed tar stream
};
// Layers one unpack request may name: microvm has 24 virtio-mmio transports,
// and the agent port and the target disk take two.
inline constexpr size_t kMaxUnpackLayers = 20;

// Export mode (docs/agent-protocol.md "export"): kExport, host→agent, sent
// instead of kBoot. For each layer, the ext4 disk `serial` (a snapshot's
// copy of a writable layer, attached read-only) is mounted read-only and the
// changes in its upper/ directory are written as an uncompressed OCI layer
// tar (overlayfs whiteouts and opaque directories turned into OCI ones) from
// byte 0 of the raw disk `output_serial`.
struct ExportLayer {
  std::string serial;
  std::string output_serial;
};
struct ExportRequest {
  std::vector<ExportLayer> layers;
  GuestStart start;
};
// kExported, agent→host, one per layer written, in order.
struct ExportReport {
  uint32_t index = 0;    // position in ExportRequest::layers
  uint64_t bytes = 0;    // length of the tar at the start of the output disk
  uint64_t entries = 0;  // tar entries written (whiteouts included)
};
// Layers one export request may name: a snapshot chain's most
// (kMaxLowerLayers), each with its output disk.
inline constexpr size_t kMaxExportLayers = kMaxLowerLayers;

std::string Encode(const Hello& m);
std::string Encode(const BootConfig& m);
std::string Encode(const Ready& m);
std::string Encode(const ExecRequest& m);
std::string Encode(const Started& m);
std::string Encode(const ExitInfo& m);
std::string Encode(const SignalRequest& m);
std::string Encode(const Resize& m);
std::string Encode(const Credit& m);
std::string Encode(const PathRequest& m);
std::string Encode(const ResultMsg& m);
std::string Encode(const Shutdown& m);
std::string Encode(const Freeze& m);
std::string Encode(const ErrorMsg& m);
std::string Encode(const UnpackRequest& m);
std::string Encode(const LayerReport& m);
std::string Encode(const ExportRequest& m);
std::string Encode(const ExportReport& m);

Result<Hello> ParseHello(std::string_view payload);
Result<BootConfig> ParseBootConfig(std::string_view payload);
Result<Ready> ParseReady(std::string_view payload);
Result<ExecRequest> ParseExecRequest(std::string_view payload);
Result<Started> ParseStarted(std::string_view payload);
Result<ExitInfo> ParseExitInfo(std::string_view payload);
Result<SignalRequest> ParseSignalRequest(std::string_view payload);
Result<Resize> ParseResize(std::string_view payload);
Result<Credit> ParseCredit(std::string_view payload);
Result<PathRequest> ParsePathRequest(std::string_view payload);
Result<ResultMsg> ParseResultMsg(std::string_view payload);
Result<Shutdown> ParseShutdown(std::string_view payload);
Result<Freeze> ParseFreeze(std::string_view payload);
Result<ErrorMsg> ParseErrorMsg(std::string_view payload);
Result<UnpackRequest> ParseUnpackRequest(std::string_view payload);
Result<LayerReport> ParseLayerReport(std::string_view payload);
Result<ExportRequest> ParseExportRequest(std::string_view payload);
Result<ExportReport> ParseExportReport(std::string_view payload);

}  // namespace msb::agent
