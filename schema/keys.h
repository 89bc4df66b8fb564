// Internal to schema/: the Sandboxfile's keys as data. Every map the loader
// reads with a fixed set of keys has its table here: each key's name, its
// description and the shape of its value (type, bounds, a pattern where the
// grammar is a simple one). The loader takes its key lists and bounds from
// these tables; json_schema.cc writes the JSON Schema (`msb config
// --schema`) from the same tables. Parsing the values is not done here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string_view>

#include "schema/model.h"

namespace msb::schema::internal {

// What a value is; json_schema.cc turns each into JSON Schema.
enum class Shape : int {
  kString = 0,     // any scalar read as text; `pattern` when it has one
  kBool = 1,       // true or false
  kInteger = 2,    // a decimal integer from min to max
  kSize = 3,       // "512M", "1G"; a plain number counts `unit` bytes; min..max bytes
  kDuration = 4,   // "5s", "1m30s", "500ms"; at least min ms
  kEnum = 5,       // one of `choices`, or a text matching `pattern` when set
  kList = 6,       // a list of `item` (null reads as an empty list)
  kCommand = 7,    // a non-empty list of strings, or a string run by `shell -c`
  kMap = 8,        // a map with the keys of `keys` (null reads as an empty map)
  kMapOf = 9,      // a map whose keys match `key_pattern`, each value an `item`
  kEnvs = 10,      // a list of KEY=VALUE, or a map of KEY to a scalar
  kDependsOn = 11, // a list of sandbox names, or a map of names to {condition}
  kScalar = 12,    // any scalar (string, number or boolean), kept as text
  kRefused = 13,   // known, and refused with the key's description as the reason
};

struct Key;

struct Value {
  Shape shape = Shape::kString;
  std::string_view pattern = {};  // ECMA-262, anchored by its own ^...$
  int64_t min = 0;                // kInteger; kSize (bytes); kDuration (ms)
  int64_t max = 0;                // kInteger; kSize (bytes)
  uint64_t unit = 1;              // kSize: what a number without a unit counts
  const std::string_view* choices = nullptr;  // kEnum
  size_t choice_count = 0;
  const Key* keys = nullptr;  // kMap
  size_t key_count = 0;
  const Value* item = nullptr;      // kList items, kMapOf values
  std::string_view key_pattern = {};  // kMapOf
  const std::string_view* one_of = nullptr;  // kMap: exactly one of these keys is required
  size_t one_of_count = 0;
  bool null_ok = false;             // kMap: null reads as an empty map
  bool extensions = false;          // kMap: keys starting with "x-" are ignored
};

struct Key {
  std::string_view name;
  std::string_view description;
  Value value;
  bool required = false;
};

// The index of `name` in `keys`; a compile error when there is none.
template <size_t N>
consteval size_t KeyIndex(const Key (&keys)[N], std::string_view name) {
  for (size_t i = 0; i < N; ++i) {
    if (keys[i].name == name) return i;
  }
  throw "no such key in the table";
}

template <size_t N>
constexpr Value MapOfKeys(const Key (&keys)[N], bool null_ok = false, bool extensions = false) {
  Value v;
  v.shape = Shape::kMap;
  v.keys = keys;
  v.key_count = N;
  v.null_ok = null_ok;
  v.extensions = extensions;
  return v;
}

template <size_t N>
constexpr Value EnumOf(const std::string_view (&choices)[N], std::string_view pattern = {}) {
  Value v;
  v.shape = Shape::kEnum;
  v.choices = choices;
  v.choice_count = N;
  v.pattern = pattern;
  return v;
}

constexpr Value Text(std::string_view pattern = {}) {
  Value v;
  v.shape = Shape::kString;
  v.pattern = pattern;
  return v;
}
constexpr Value Simple(Shape shape) {
  Value v;
  v.shape = shape;
  return v;
}
constexpr Value Integer(int64_t min, int64_t max) {
  Value v;
  v.shape = Shape::kInteger;
  v.min = min;
  v.max = max;
  return v;
}
constexpr Value SizeOf(uint64_t unit, uint64_t min, uint64_t max) {
  Value v;
  v.shape = Shape::kSize;
  v.unit = unit;
  v.min = static_cast<int64_t>(min);
  v.max = static_cast<int64_t>(max);
  return v;
}
constexpr Value DurationOf(int64_t min_ms) {
  Value v;
  v.shape = Shape::kDuration;
  v.min = min_ms;
  return v;
}
constexpr Value ListOf(const Value& item) {
  Value v;
  v.shape = Shape::kList;
  v.item = &item;
  return v;
}
constexpr Value MapOf(std::string_view key_pattern, const Value& item) {
  Value v;
  v.shape = Shape::kMapOf;
  v.key_pattern = key_pattern;
  v.item = &item;
  return v;
}

// Patterns of the simple grammars (values.h), each checked against its
// scanner by tests/schema/keys_test.cc. The size, duration, port, volume and
// rule patterns admit everything the scanner does, and a little more (the
// bounds of numbers are the scanner's to check).
inline constexpr std::string_view kNamePattern = "^[a-z0-9][a-z0-9_-]{0,62}$";
inline constexpr std::string_view kEnvNamePattern = "^[A-Za-z_][A-Za-z0-9_]*$";
inline constexpr std::string_view kScriptNamePattern = "^[A-Za-z0-9_.-]{1,64}$";
inline constexpr std::string_view kUserPattern =
    "^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31})?$";
inline constexpr std::string_view kSizePattern = "^[0-9]+(\\.[0-9]+)?([KMGTkmgt][Ii]?[Bb]?|[Bb])?$";
inline constexpr std::string_view kDurationPattern = "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$";
inline constexpr std::string_view kGuestPathPattern = "^/";
inline constexpr std::string_view kRestartPattern = "^on-failure:[1-9][0-9]{0,6}$";
inline constexpr std::string_view kPortPattern =
    "^((\\[[0-9A-Fa-f:.]+\\]|[0-9.]+):)?[0-9]+(:[0-9]+)?(/(tcp|udp))?$";
inline constexpr std::string_view kVolumePattern = "^[^:]+:/[^:]*(:(ro|rw))?$";
inline constexpr std::string_view kTmpfsPattern = "^/[^:]*(:.*)?$";
inline constexpr std::string_view kEnvItemPattern = "^[A-Za-z_][A-Za-z0-9_]*=";
inline constexpr std::string_view kRulePattern = "^(allow|deny)(:(egress|ingress))?@.";

inline constexpr uint64_t kMaxCpus = 128;
inline constexpr uint64_t kMinMemory = 32 * kMiB;
inline constexpr uint64_t kMaxMemory = 1024 * kGiB;
inline constexpr uint64_t kMinDisk = 64 * kMiB;
inline constexpr uint64_t kMaxDisk = 16 * 1024 * kGiB;
inline constexpr uint64_t kMinVolume = 16 * kMiB;
inline constexpr uint64_t kMaxVolume = 16 * 1024 * kGiB;

inline constexpr std::string_view kPolicyChoices[] = {"none", "group", "public", "any"};
inline constexpr std::string_view kConditionChoices[] = {"started", "healthy", "completed"};
inline constexpr std::string_view kRestartChoices[] = {"no", "always", "on-failure", "unless-stopped"};
inline constexpr std::string_view kBootChoices[] = {"auto", "cold"};
inline constexpr std::string_view kLevelChoices[] = {"default", "strict"};

inline constexpr Value kNameValue = Text(kNamePattern);
inline constexpr Value kStringValue = Text();
inline constexpr Value kStrings = ListOf(kStringValue);
inline constexpr Value kCommandValue = Simple(Shape::kCommand);
inline constexpr Value kBoolValue = Simple(Shape::kBool);
inline constexpr Value kPolicyValue = EnumOf(kPolicyChoices);
inline constexpr Value kRuleValue = Text(kRulePattern);
inline constexpr Value kVolumeSpecValue = Text(kVolumePattern);
inline constexpr Value kTmpfsValue = Text(kTmpfsPattern);
inline constexpr Value kPortValue = Text(kPortPattern);

inline constexpr Key kMetaKeys[] = {
    {"authors", "Authors (informational).", kStrings},
    {"description", "What this is (informational).", kStringValue},
    {"homepage", "A home page (informational).", kStringValue},
    {"repository", "The source repository (informational).", kStringValue},
    {"readme", "A README path (informational).", kStringValue},
    {"tags", "Tags (informational).", kStrings},
    {"icon", "An icon path (informational).", kStringValue},
};
inline constexpr Value kMetaValue = MapOfKeys(kMetaKeys, /*null_ok=*/true);

inline constexpr Key kHealthKeys[] = {
    {"command", "The check: exit status 0 is healthy. A list of strings, or a string run by `shell -c`.",
     kCommandValue, /*required=*/true},
    {"interval", "Time between checks, like 5s; default 10s.", DurationOf(1)},
    {"timeout", "How long one check may take, like 2s; default 5s.", DurationOf(1)},
    {"retries", "Failed checks in a row that make the sandbox unhealthy; default 3.", Integer(1, 1000)},
    {"start_period", "Time after start during which failures do not count, like 10s; default 0s.",
     DurationOf(0)},
};

inline constexpr Key kDnsKeys[] = {
    {"servers", "Upstream resolvers: IP, IP:PORT or [IPv6]:PORT; default: the host's resolvers.", kStrings},
    {"rebind_protection", "Drop answers for public names that point at private addresses; default true.",
     kBoolValue},
};
inline constexpr Key kTlsKeys[] = {
    {"ca", "A host file of PEM certificates: extra trust anchors for the upstreams of secrets.",
     kStringValue},
};
inline constexpr Key kNetworkKeys[] = {
    {"policy", "The profile: none, group (the project's sandboxes), public (default: the internet and the "
               "group) or any.",
     kPolicyValue},
    {"rules", "Rules <action>[:<direction>]@<target>[:<proto>[:<ports>]], first match wins, before the "
              "policy: allow@api.github.com:tcp:443, deny@*.ads.example.com, allow:ingress@group:tcp:80.",
     ListOf(kRuleValue)},
    {"dns", "The sandbox's DNS resolver.", MapOfKeys(kDnsKeys, true)},
    {"tls", "TLS interception for secrets.", MapOfKeys(kTlsKeys, true)},
};

inline constexpr Key kInjectKeys[] = {
    {"headers", "Substitute the value in HTTP headers; default true.", kBoolValue},
    {"basic_auth", "Substitute it in Basic authorization; default true.", kBoolValue},
    {"query", "Substitute it in the URL's query; default false.", kBoolValue},
    {"body", "Substitute it in request bodies; default false.", kBoolValue},
};
inline constexpr Key kSecretKeys[] = {
    {"from_env", "The host variable holding the value (exactly one of from_env and from_file).",
     Text(kEnvNamePattern)},
    {"from_file", "The host file holding the value (exactly one of from_env and from_file).", kStringValue},
    {"allow", "The hosts (name or *.domain) the real value may be sent to over HTTPS; not empty.", kStrings,
     /*required=*/true},
    {"inject", "Where in a request the placeholder is replaced.", MapOfKeys(kInjectKeys, true)},
};
inline constexpr std::string_view kSecretSources[] = {"from_env", "from_file"};
inline constexpr Value kSecretValue = [] {
  Value v = MapOfKeys(kSecretKeys);
  v.one_of = kSecretSources;
  v.one_of_count = std::size(kSecretSources);
  return v;
}();

inline constexpr Key kSecurityKeys[] = {
    {"level", "default (nothing) or strict: read_only_root, no_new_privileges, cap_drop [ALL] and network "
              "policy none; fields written beside it win.",
     EnumOf(kLevelChoices)},
    {"read_only_root", "No writable layer: / is read-only (tmpfs and volumes stay writable).", kBoolValue},
    {"no_new_privileges", "execve never grants privileges (setuid bits, file capabilities).", kBoolValue},
    {"cap_drop", "Capabilities to drop: ALL, or names like NET_RAW (CAP_ prefix and case optional).",
     kStrings},
    {"cap_add", "Capabilities to keep, like NET_BIND_SERVICE, or ALL.", kStrings},
};

inline constexpr Key kLogsKeys[] = {
    {"max_size", "The most workload.log and console.log each keep (plus one previous generation), 1M to 1G; "
                 "default $MSB_LOG_MAX_SIZE, else 16M.",
     SizeOf(1, kMinLogSize, kMaxLogSize)},
};

inline constexpr Key kDependKeys[] = {
    {"condition", "started (default), healthy or completed.", EnumOf(kConditionChoices)},
};

inline constexpr Key kSandboxKeys[] = {
    {"image", "A registry reference (name[:tag] or name@sha256:...), a root file system directory (./dir "
              "or /abs/dir), oci-layout:PATH[:tag] or snapshot:NAME.",
     kStringValue, /*required=*/true},
    {"cpus", "Virtual CPUs; default 1.", Integer(1, kMaxCpus)},
    {"memory", "Memory: MiB as an integer, or a size like 512M or 1G; default 512M.",
     SizeOf(kMiB, kMinMemory, kMaxMemory)},
    {"disk", "Size of the writable layer, like 4G; default 2G.", SizeOf(1, kMinDisk, kMaxDisk)},
    {"ephemeral", "true: the writable layer is on tmpfs, gone at stop.", kBoolValue},
    {"user", "uid[:gid] or name[:group] in the guest; default: the image's user, else root.",
     Text(kUserPattern)},
    {"workdir", "Working directory in the guest (absolute).", Text(kGuestPathPattern)},
    {"shell", "The shell of `msb shell` and of string commands and scripts; default /bin/sh.",
     kStringValue},
    {"command", "The workload: a list of strings, or a string run by `shell -c`. Default: the start "
                "script, else the image's command.",
     kCommandValue},
    {"scripts", "Named commands, run with `msb exec SANDBOX --script NAME` or `msb exec SANDBOX~NAME`; "
                "`start` is the default command. Their text reaches the shell verbatim: no ${VAR} "
                "substitution.",
     MapOf(kScriptNamePattern, kCommandValue)},
    {"envs", "Environment variables: a list of KEY=VALUE, or a map.", Simple(Shape::kEnvs)},
    {"volumes", "Mounts: HOST_PATH:GUEST_PATH[:ro|rw] (a host directory) or VOLUME:GUEST_PATH[:ro|rw] (a "
                "named volume).",
     ListOf(kVolumeSpecValue)},
    {"tmpfs", "tmpfs mounts: GUEST_PATH[:size=SIZE][,mode=OCTAL].", ListOf(kTmpfsValue)},
    {"ports", "Published ports: [ip:]host:guest[/tcp|udp]; the host address defaults to 127.0.0.1.",
     ListOf(kPortValue)},
    {"depends_on", "Sandboxes started first: a list of names, or a map of names to {condition: started | "
                   "healthy | completed}.",
     Simple(Shape::kDependsOn)},
    {"healthcheck", "A command run periodically in the guest.", MapOfKeys(kHealthKeys)},
    {"restart", "no (default), always, on-failure[:N] or unless-stopped.",
     EnumOf(kRestartChoices, kRestartPattern)},
    {"boot", "auto (default): start from a booted template (a saved VM waiting for its configuration) when "
             "one fits; cold: always boot the kernel.",
     EnumOf(kBootChoices)},
    {"scope", "Legacy shorthand for network.policy: none, group, public or any.", kPolicyValue},
    {"network", "The sandbox's network: a profile, rules, DNS.", MapOfKeys(kNetworkKeys, true)},
    {"secrets", "Secrets by the variable the guest sees (holding a placeholder); the real value goes only "
                "into HTTPS requests to the allowed hosts.",
     MapOf(kEnvNamePattern, kSecretValue)},
    {"security", "Hardening of every process msb starts in the guest.", MapOfKeys(kSecurityKeys, true)},
    {"meta", "Informational metadata (microsandbox legacy).", kMetaValue},
    {"version", "The sandbox's version (microsandbox legacy; informational).", Simple(Shape::kScalar)},
    {"imports", "Not supported: moves files between microsandbox builds.", Simple(Shape::kRefused)},
    {"exports", "Not supported: moves files between microsandbox builds.", Simple(Shape::kRefused)},
    {"logs", "Bounds of the sandbox's logs on the host.", MapOfKeys(kLogsKeys, true)},
};
inline constexpr Value kSandboxValue = MapOfKeys(kSandboxKeys);

inline constexpr Key kVolumeKeys[] = {
    {"size", "Size of the volume's disk, like 10G (used when it is created); default 10G.",
     SizeOf(1, kMinVolume, kMaxVolume)},
};
inline constexpr Value kVolumeValue = MapOfKeys(kVolumeKeys, /*null_ok=*/true);

inline constexpr Key kTopKeys[] = {
    {"name", "The project's name; -p and $MSB_PROJECT_NAME win over it; default: the directory's name.",
     kNameValue},
    {"sandboxes", "The sandboxes, by name.", MapOf(kNamePattern, kSandboxValue)},
    {"volumes", "Named volumes (ext4 disks), by name.", MapOf(kNamePattern, kVolumeValue)},
    {"meta", "Informational metadata (microsandbox legacy).", kMetaValue},
    {"builds", "Not supported: msb runs sandboxes from images; build the root file system elsewhere and "
               "refer to it with image:.",
     Simple(Shape::kRefused)},
    {"modules", "Not supported: declare every sandbox in this file.", Simple(Shape::kRefused)},
};
inline constexpr Value kFileValue = MapOfKeys(kTopKeys, false, /*extensions=*/true);

}  // namespace msb::schema::internal
