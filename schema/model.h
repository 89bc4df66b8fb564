// The typed model of a Sandboxfile: what LoadSandboxfile returns after every
// value was parsed, checked and given its default. Plain data; no parsing or
// I/O here (see sandboxfile.h). Sizes are bytes, durations milliseconds, host
// paths absolute.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace msb::schema {

// A place in the Sandboxfile, 1-based; line 0 means "not from the file".
// Kept for cross-field error messages; never part of the canonical form.
struct Pos {
  int line = 0;
  int column = 0;
};

inline constexpr uint64_t kMiB = 1024ull * 1024;
inline constexpr uint64_t kGiB = 1024 * kMiB;
inline constexpr int kDefaultCpus = 1;
inline constexpr uint64_t kDefaultMemory = 512 * kMiB;
inline constexpr uint64_t kDefaultDisk = 2 * kGiB;
inline constexpr uint64_t kDefaultVolumeSize = 10 * kGiB;
inline constexpr const char* kDefaultShell = "/bin/sh";
// microvm has 24 virtio-mmio transports; root, upper, agent, network and rng
// take 5 (docs/design.md "Disks and devices"). Named volumes and bind mounts
// share the rest.
inline constexpr int kVirtioTransports = 24;
inline constexpr int kSystemDevices = 5;
inline constexpr int kMaxMounts = kVirtioTransports - kSystemDevices;

// The image a sandbox boots from (docs/sandboxfile.md "Images").
struct Image {
  enum class Kind : int { kRegistry = 0, kLocalDir = 1, kOciLayout = 2, kSnapshot = 3 };
  Kind kind = Kind::kRegistry;
  // kRegistry: the normalised parts (docker.io, library/, latest filled in).
  std::string registry;
  std::string repository;
  std::string tag;     // empty only when a digest is given without a tag
  std::string digest;  // "sha256:<64 hex>" or empty
  // kLocalDir and kOciLayout: the absolute directory; kSnapshot: the name.
  std::string path;
  // The canonical reference: "docker.io/library/alpine:latest",
  // "/abs/rootfs", "oci-layout:/abs/dir:tag", "snapshot:name".
  std::string reference;
};
const char* ToString(Image::Kind kind);

struct Mount {
  enum class Kind : int { kBind = 0, kVolume = 1 };
  Kind kind = Kind::kBind;
  std::string source;  // absolute host path (kBind) or volume name (kVolume)
  std::string target;  // absolute guest path
  bool read_only = false;
  Pos pos;
};
const char* ToString(Mount::Kind kind);

struct Tmpfs {
  std::string target;  // absolute guest path
  uint64_t size = 0;   // bytes; filled with half the sandbox's memory (the kernel's default)
  uint32_t mode = 01777;
  Pos pos;
};

enum class Protocol : int { kTcp = 0, kUdp = 1, kIcmp = 2, kAny = 3 };
const char* ToString(Protocol proto);

// A published port: the host listens on host_ip:host_port and forwards to the
// guest's guest_port.
struct PortMapping {
  std::string host_ip = "127.0.0.1";  // canonical text form (inet_ntop)
  uint16_t host_port = 0;
  uint16_t guest_port = 0;
  Protocol protocol = Protocol::kTcp;  // kTcp or kUdp
  Pos pos;
};

enum class DependCondition : int { kStarted = 0, kHealthy = 1, kCompleted = 2 };
const char* ToString(DependCondition condition);

struct Dependency {
  DependCondition condition = DependCondition::kStarted;
  Pos pos;
};

struct Healthcheck {
  std::vector<std::string> command;  // argv (a string was wrapped in `shell -c`)
  int64_t interval_ms = 10'000;
  int64_t timeout_ms = 5'000;
  int retries = 3;
  int64_t start_period_ms = 0;
};

struct Restart {
  enum class Policy : int { kNo = 0, kAlways = 1, kOnFailure = 2, kUnlessStopped = 3 };
  Policy policy = Policy::kNo;
  int max_retries = 0;  // kOnFailure only; 0 = unlimited
};
const char* ToString(Restart::Policy policy);
// "no", "always", "on-failure", "on-failure:5", "unless-stopped".
std::string ToString(const Restart& restart);

enum class NetworkPolicy : int { kNone = 0, kGroup = 1, kPublic = 2, kAny = 3 };
const char* ToString(NetworkPolicy policy);

struct PortRange {
  uint16_t first = 0;
  uint16_t last = 0;
};

// One parsed rule of the grammar <action>[:<direction>]@<target>[:<proto>[:<ports>]].
struct NetworkRule {
  enum class Action : int { kAllow = 0, kDeny = 1 };
  enum class Direction : int { kEgress = 0, kIngress = 1 };
  enum class TargetKind : int { kGroup = 0, kIp = 1, kCidr = 2, kHost = 3, kDomainSuffix = 4 };
  Action action = Action::kAllow;
  Direction direction = Direction::kEgress;
  TargetKind target_kind = TargetKind::kGroup;
  // kGroup: the group name; kIp/kCidr: canonical address ("10.0.0.0/8",
  // "2001:db8::1"); kHost: lower-case name; kDomainSuffix: "example.com" for *.example.com.
  std::string target;
  Protocol protocol = Protocol::kAny;
  std::vector<PortRange> ports;  // empty: every port
};
const char* ToString(NetworkRule::Action action);
const char* ToString(NetworkRule::Direction direction);
const char* ToString(NetworkRule::TargetKind kind);

struct Network {
  NetworkPolicy policy = NetworkPolicy::kPublic;
  std::vector<NetworkRule> rules;  // first match wins, before the policy
  std::vector<std::string> dns_servers;  // canonical IPs; empty: the host's resolvers
  bool rebind_protection = true;
  // network.tls.ca: absolute host path of a PEM file of extra trust anchors
  // for the upstream side of intercepted TLS (docs/secrets.md); empty: none.
  std::string tls_ca;
};

struct Secret {
  enum class Source : int { kEnv = 0, kFile = 1 };
  Source source = Source::kEnv;
  std::string from;  // the host variable (kEnv) or absolute file (kFile)
  std::vector<std::string> allow;  // host names, "*.domain" allowed
  bool inject_headers = true;
  bool inject_basic_auth = true;
  bool inject_query = false;
  bool inject_body = false;
};
const char* ToString(Secret::Source source);

// `security:` (docs/sandboxfile.md "Hardening"), after a `level` was
// expanded: the level itself is not kept, only what it set.
struct Security {
  bool read_only_root = false;     // no writable layer; / is mounted read-only
  bool no_new_privileges = false;  // PR_SET_NO_NEW_PRIVS for every guest process msb starts
  // Canonical names: "ALL" or "CAP_…" (common/capabilities.h), sorted, unique.
  std::vector<std::string> cap_drop;
  std::vector<std::string> cap_add;
  bool IsDefault() const {
    return !read_only_root && !no_new_privileges && cap_drop.empty() && cap_add.empty();
  }
};

// Informational `meta` (microsandbox legacy); never shapes a VM.
struct Meta {
  std::vector<std::string> authors;
  std::string description;
  std::string homepage;
  std::string repository;
  std::string readme;
  std::vector<std::string> tags;
  std::string icon;
  bool empty() const {
    return authors.empty() && description.empty() && homepage.empty() && repository.empty() &&
           readme.empty() && tags.empty() && icon.empty();
  }
};

// `logs:`: the bound of each of the sandbox's logs on the host (workload.log
// and console.log, each kept with one previous generation; vm/log_file.h).
struct Logs {
  uint64_t max_size = 0;  // bytes; 0: not set (MSB_LOG_MAX_SIZE, else 16M)
  bool IsDefault() const { return max_size == 0; }
};
inline constexpr uint64_t kMinLogSize = 1ull << 20;
inline constexpr uint64_t kMaxLogSize = 1ull << 30;

struct Sandbox {
  std::string name;
  Pos pos;  // where the sandbox's key is
  Image image;
  int cpus = kDefaultCpus;
  uint64_t memory = kDefaultMemory;  // bytes, a whole number of MiB
  uint64_t disk = kDefaultDisk;      // bytes
  bool ephemeral = false;
  std::string user;     // empty: the image's user, else root
  std::string workdir;  // empty: the image's working directory
  std::string shell = kDefaultShell;
  // argv; a string command became {shell, "-c", string}; without a command
  // the `start` script, else empty (the image's default command).
  std::vector<std::string> command;
  std::map<std::string, std::vector<std::string>> scripts;  // argv each
  std::map<std::string, std::string> envs;
  std::vector<Mount> volumes;  // in file order (later mounts may nest in earlier)
  std::vector<Tmpfs> tmpfs;
  std::vector<PortMapping> ports;
  std::map<std::string, Dependency> depends_on;
  std::optional<Healthcheck> healthcheck;
  Restart restart;
  bool cold_boot = false;  // `boot: cold`: never start from a booted template
  Network network;
  std::map<std::string, Secret> secrets;  // key: the guest's variable name
  Security security;
  Logs logs;
  Meta meta;
};

struct Volume {
  uint64_t size = kDefaultVolumeSize;
  Pos pos;
};

struct Project {
  std::string name;
  std::string source_path;  // absolute path of the Sandboxfile
  std::string base_dir;     // relative host paths were resolved against this
  bool name_from_file = false;  // name is the file's name:, not its directory's
  std::map<std::string, Sandbox> sandboxes;
  std::map<std::string, Volume> volumes;
  Meta meta;
};

}  // namespace msb::schema
