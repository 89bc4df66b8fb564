// Parsers and formatters for the small value grammars of a Sandboxfile:
// sizes, durations, restart policies, published ports, volume and tmpfs
// specs, names, paths, IP addresses and host names. Pure string functions;
// the error messages say what was expected and are placed by the caller.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "schema/model.h"

namespace msb::schema {

// "512M", "1G", "1.5G", "64Ki", "10MB", "4096" (units are powers of 1024).
// A number without a unit counts plain_unit bytes (1, or kMiB for `memory`).
Result<uint64_t> ParseSize(std::string_view text, uint64_t plain_unit = 1);
// The largest exact unit: "512M", "1536M", "1G", "100B", "0".
std::string FormatSize(uint64_t bytes);

// "5s", "1m30s", "500ms", "1h", "1.5s"; a unit is required. Milliseconds.
Result<int64_t> ParseDuration(std::string_view text);
// "1m30s", "500ms", "0s".
std::string FormatDuration(int64_t ms);

// A decimal integer in [min, max].
Result<int64_t> ParseInteger(std::string_view text, int64_t min, int64_t max);

// no | always | on-failure[:N] | unless-stopped
Result<Restart> ParseRestart(std::string_view text);

// [ip:]host:guest[/tcp|udp]; a lone port publishes the same port (microsandbox).
// IPv6 host addresses go in brackets: "[::1]:8080:80".
Result<PortMapping> ParsePortMapping(std::string_view text);
std::string FormatPortMapping(const PortMapping& port);

// HOST:GUEST[:ro|rw]. A source that contains '/' or starts with '.' or '~'
// is a host path (returned as written); otherwise it names a volume.
struct VolumeSpec {
  Mount::Kind kind = Mount::Kind::kBind;
  std::string source;
  std::string target;  // normalised guest path
  bool read_only = false;
};
Result<VolumeSpec> ParseVolumeSpec(std::string_view text);
// "/abs/src:/app:ro" or "cache:/var/cache:rw".
std::string FormatMount(const Mount& mount);

// PATH[:size=SIZE][,mode=OCTAL]; size 0 means "not given".
Result<Tmpfs> ParseTmpfs(std::string_view text);
std::string FormatTmpfs(const Tmpfs& tmpfs);

// Project, sandbox and volume names: [a-z0-9][a-z0-9_-]{0,62}.
bool IsValidName(std::string_view name);
inline constexpr const char* kNameRule =
    "1 to 63 characters from a-z, 0-9, '_' and '-', starting with a letter or digit";
// A name derived from a directory: lower-cased, other characters become '-'.
std::string NameFromDirectory(std::string_view dir_name);

// An environment variable name: [A-Za-z_][A-Za-z0-9_]*.
bool IsEnvName(std::string_view name);

// A script's name (a key of `scripts:`): 1 to 64 of [A-Za-z0-9_.-].
bool IsScriptName(std::string_view name);

// microsandbox's NAME~SCRIPT (`msb exec web~migrate`): the part before the
// first '~' and the part after it; nullopt without a '~'. Neither names nor
// PROJECT/NAME references can hold a '~', so a reference never splits.
std::optional<std::pair<std::string, std::string>> SplitScriptRef(std::string_view text);

// The argv that runs script `name` (its argv from the model) with args: a
// script written as a string ({shell, "-c", TEXT}) gets the name as $0 and
// args as $1...; a list gets args appended.
std::vector<std::string> ScriptCommand(const std::vector<std::string>& script, const std::string& shell,
                                       const std::string& name, const std::vector<std::string>& args);

// An absolute guest path without "..", normalised ("/a//b/./c/" -> "/a/b/c").
Result<std::string> NormalizeGuestPath(std::string_view path);

// A host path made absolute against base_dir ("~/" expands to home, which
// must then be non-empty) and normalised lexically.
Result<std::string> ResolveHostPath(std::string_view path, const std::string& base_dir,
                                    const std::string& home);

// The canonical text of an IPv4 or IPv6 address, or nullopt.
std::optional<std::string> CanonicalIp(std::string_view text);
// A DNS name: labels of [A-Za-z0-9_-], at most 63 each, 253 in all, the last
// one not numeric. Returned lower-cased.
std::optional<std::string> CanonicalHostName(std::string_view text);

}  // namespace msb::schema
