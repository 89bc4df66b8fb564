// The small value grammars of values.h. Hand-written scanners (no regex):
// they run on every scalar of a file and are fuzzed.
#include "schema/values.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <vector>

#include "schema/diagnostics.h"

namespace msb::schema {
namespace {

Error Invalid(std::string message) { return Error(ErrorCode::kInvalidArgument, std::move(message)); }

std::string Quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsDigit);
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Parses up to 19 digits; false on overflow or non-digits.
bool ParseU64(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 19 || !AllDigits(s)) return false;
  uint64_t v = 0;
  for (char c : s) v = v * 10 + static_cast<uint64_t>(c - '0');
  *out = v;
  return true;
}

// Splits "a.b" into whole and fraction digits; false if malformed.
bool SplitDecimal(std::string_view num, std::string_view* whole, std::string_view* frac) {
  size_t dot = num.find('.');
  *whole = num.substr(0, dot);
  *frac = dot == std::string_view::npos ? std::string_view() : num.substr(dot + 1);
  if (!AllDigits(*whole)) return false;
  if (dot != std::string_view::npos && !AllDigits(*frac)) return false;
  return whole->size() <= 19 && frac->size() <= 9;
}

// value = whole.frac * unit, exactly; false when it is not a whole number or overflows.
bool Scale(std::string_view whole, std::string_view frac, uint64_t unit, uint64_t* out) {
  uint64_t w = 0, f = 0;
  if (!ParseU64(whole, &w)) return false;
  if (!frac.empty() && !ParseU64(frac, &f)) return false;
  unsigned __int128 pow10 = 1;
  for (size_t i = 0; i < frac.size(); ++i) pow10 *= 10;
  unsigned __int128 frac_part = static_cast<unsigned __int128>(f) * unit;
  if (frac_part % pow10 != 0) return false;
  unsigned __int128 v = static_cast<unsigned __int128>(w) * unit + frac_part / pow10;
  if (v > UINT64_MAX) return false;
  *out = static_cast<uint64_t>(v);
  return true;
}

bool ParsePort(std::string_view s, uint16_t* out) {
  uint64_t v = 0;
  if (!ParseU64(s, &v) || v < 1 || v > 65535) return false;
  *out = static_cast<uint16_t>(v);
  return true;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (;;) {
    size_t p = s.find(sep, start);
    parts.push_back(s.substr(start, p == std::string_view::npos ? p : p - start));
    if (p == std::string_view::npos) break;
    start = p + 1;
  }
  return parts;
}

}  // namespace

Result<uint64_t> ParseSize(std::string_view text, uint64_t plain_unit) {
  auto expected = [&] {
    return Invalid(std::string("expected a size like 512M, 1G, 1.5G or ") +
                   (plain_unit == 1 ? "a number of bytes" : "a whole number of MiB") +
                   ", got " + Quote(text));
  };
  size_t n = 0;
  while (n < text.size() && (IsDigit(text[n]) || text[n] == '.')) ++n;
  std::string_view num = text.substr(0, n), unit_text = text.substr(n);
  std::string_view whole, frac;
  if (num.empty() || !SplitDecimal(num, &whole, &frac)) return expected();
  std::string u = Lower(unit_text);
  uint64_t unit = 0;
  if (u.empty()) {
    unit = plain_unit;
  } else {
    static constexpr struct { const char* suffix; uint64_t unit; } kUnits[] = {
        {"b", 1},
        {"k", 1ull << 10}, {"kb", 1ull << 10}, {"ki", 1ull << 10}, {"kib", 1ull << 10},
        {"m", 1ull << 20}, {"mb", 1ull << 20}, {"mi", 1ull << 20}, {"mib", 1ull << 20},
        {"g", 1ull << 30}, {"gb", 1ull << 30}, {"gi", 1ull << 30}, {"gib", 1ull << 30},
        {"t", 1ull << 40}, {"tb", 1ull << 40}, {"ti", 1ull << 40}, {"tib", 1ull << 40},
    };
    for (const auto& e : kUnits) {
      if (u == e.suffix) unit = e.unit;
    }
    if (unit == 0) return expected();
  }
  uint64_t v = 0;
  if (!Scale(whole, frac, unit, &v)) {
    if (!frac.empty()) {
      return Invalid("size " + Quote(text) + " is not a whole number of bytes");
    }
    return Invalid("size " + Quote(text) + " is too large");
  }
  return v;
}

std::string FormatSize(uint64_t bytes) {
  if (bytes == 0) return "0";
  static constexpr struct { char suffix; uint64_t unit; } kUnits[] = {
      {'T', 1ull << 40}, {'G', 1ull << 30}, {'M', 1ull << 20}, {'K', 1ull << 10}};
  for (const auto& e : kUnits) {
    if (bytes % e.unit == 0) return std::to_string(bytes / e.unit) + e.suffix;
  }
  return std::to_string(bytes) + "B";
}

Result<int64_t> ParseDuration(std::string_view text) {
  auto expected = [&] {
    return Invalid("expected a duration like 5s, 1m30s or 500ms, got " + Quote(text));
  };
  if (text.empty()) return expected();
  if (AllDigits(text)) {
    return Invalid("expected a duration like 5s, 1m30s or 500ms (a unit is required), got " +
                   Quote(text));
  }
  constexpr uint64_t kMaxMs = 1'000'000'000'000ull;  // about 31 years
  uint64_t total = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && (IsDigit(text[i]) || text[i] == '.')) ++i;
    std::string_view num = text.substr(start, i - start);
    size_t ustart = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    std::string_view unit = text.substr(ustart, i - ustart);
    uint64_t scale = 0;
    if (unit == "ms") scale = 1;
    else if (unit == "s") scale = 1000;
    else if (unit == "m") scale = 60'000;
    else if (unit == "h") scale = 3'600'000;
    std::string_view whole, frac;
    if (num.empty() || scale == 0 || !SplitDecimal(num, &whole, &frac)) return expected();
    uint64_t v = 0;
    if (!Scale(whole, frac, scale, &v)) {
      if (!frac.empty()) return Invalid("duration " + Quote(text) + " is not a whole number of milliseconds");
      return Invalid("duration " + Quote(text) + " is too long");
    }
    total += v;
    if (v > kMaxMs || total > kMaxMs) return Invalid("duration " + Quote(text) + " is too long");
  }
  return static_cast<int64_t>(total);
}

std::string FormatDuration(int64_t ms) {
  if (ms <= 0) return "0s";
  std::string out;
  uint64_t v = static_cast<uint64_t>(ms);
  static constexpr struct { const char* suffix; uint64_t unit; } kUnits[] = {
      {"h", 3'600'000}, {"m", 60'000}, {"s", 1000}, {"ms", 1}};
  for (const auto& e : kUnits) {
    if (v >= e.unit) {
      out += std::to_string(v / e.unit) + e.suffix;
      v %= e.unit;
    }
  }
  return out;
}

Result<int64_t> ParseInteger(std::string_view text, int64_t min, int64_t max) {
  std::string range = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
  bool negative = !text.empty() && text[0] == '-';
  std::string_view digits = negative || (!text.empty() && text[0] == '+') ? text.substr(1) : text;
  uint64_t v = 0;
  if (!ParseU64(digits, &v) || v > static_cast<uint64_t>(INT64_MAX)) {
    return Invalid("expected " + range + ", got " + Quote(text));
  }
  int64_t s = negative ? -static_cast<int64_t>(v) : static_cast<int64_t>(v);
  if (s < min || s > max) return Invalid("expected " + range + ", got " + Quote(text));
  return s;
}

Result<Restart> ParseRestart(std::string_view text) {
  Restart r;
  if (text == "no") return r;
  if (text == "always") {
    r.policy = Restart::Policy::kAlways;
    return r;
  }
  if (text == "unless-stopped") {
    r.policy = Restart::Policy::kUnlessStopped;
    return r;
  }
  if (text == "on-failure") {
    r.policy = Restart::Policy::kOnFailure;
    return r;
  }
  if (text.substr(0, 11) == "on-failure:") {
    uint64_t n = 0;
    if (!ParseU64(text.substr(11), &n) || n < 1 || n > 1'000'000) {
      return Invalid("on-failure:N needs N from 1 to 1000000, got " + Quote(text));
    }
    r.policy = Restart::Policy::kOnFailure;
    r.max_retries = static_cast<int>(n);
    return r;
  }
  std::string_view head = text.substr(0, text.find(':'));
  return Invalid("expected no, always, on-failure[:N] or unless-stopped, got " + Quote(text) +
                 DidYouMean(head, {"no", "always", "on-failure", "unless-stopped"}));
}

Result<PortMapping> ParsePortMapping(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return Invalid("invalid port mapping " + Quote(text) + ": " + why +
                   " (expected [ip:]host:guest[/tcp|udp])");
  };
  PortMapping p;
  std::string_view rest = text;
  size_t slash = rest.rfind('/');
  if (slash != std::string_view::npos) {
    std::string_view proto = rest.substr(slash + 1);
    if (proto == "tcp") p.protocol = Protocol::kTcp;
    else if (proto == "udp") p.protocol = Protocol::kUdp;
    else return bad("protocol " + Quote(proto) + " must be tcp or udp");
    rest = rest.substr(0, slash);
  }
  std::string ip;
  if (!rest.empty() && rest[0] == '[') {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) return bad("missing ']' after the IPv6 address");
    std::string_view addr = rest.substr(1, close - 1);
    auto canon = CanonicalIp(addr);
    if (!canon || addr.find(':') == std::string_view::npos) {
      return bad("host address " + Quote(addr) + " is not an IPv6 address");
    }
    ip = *canon;
    rest = rest.substr(close + 1);
    if (rest.empty() || rest[0] != ':') return bad("expected ':' after the host address");
    rest = rest.substr(1);
    if (Split(rest, ':').size() != 2) return bad("expected host:guest after the host address");
  }
  std::vector<std::string_view> parts = Split(rest, ':');
  std::string_view host, guest;
  if (parts.size() == 1) {
    host = guest = parts[0];
  } else if (parts.size() == 2) {
    host = parts[0];
    guest = parts[1];
  } else if (parts.size() == 3) {
    auto canon = CanonicalIp(parts[0]);
    if (!canon || parts[0].find(':') != std::string_view::npos) {
      return bad("host address " + Quote(parts[0]) + " is not an IPv4 address");
    }
    ip = *canon;
    host = parts[1];
    guest = parts[2];
  } else {
    return bad("too many ':' (write IPv6 addresses in brackets)");
  }
  if (!ip.empty()) p.host_ip = ip;
  if (!ParsePort(host, &p.host_port)) return bad("host port " + Quote(host) + " must be from 1 to 65535");
  if (!ParsePort(guest, &p.guest_port)) return bad("guest port " + Quote(guest) + " must be from 1 to 65535");
  return p;
}

std::string FormatPortMapping(const PortMapping& port) {
  std::string ip = port.host_ip.find(':') != std::string::npos ? "[" + port.host_ip + "]" : port.host_ip;
  return ip + ":" + std::to_string(port.host_port) + ":" + std::to_string(port.guest_port) + "/" +
         ToString(port.protocol);
}

Result<VolumeSpec> ParseVolumeSpec(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return Invalid("invalid volume " + Quote(text) + ": " + why +
                   " (expected HOST_PATH:GUEST_PATH[:ro|rw] or VOLUME:GUEST_PATH[:ro|rw])");
  };
  std::vector<std::string_view> parts = Split(text, ':');
  if (parts.size() < 2) return bad("missing the guest path");
  if (parts.size() > 3) return bad("too many ':'");
  VolumeSpec v;
  if (parts.size() == 3) {
    if (parts[2] == "ro") v.read_only = true;
    else if (parts[2] != "rw") return bad("mode " + Quote(parts[2]) + " must be ro or rw");
  }
  std::string_view src = parts[0];
  if (src.empty()) return bad("empty host path or volume name");
  bool is_path = src.find('/') != std::string_view::npos || src[0] == '.' || src[0] == '~';
  if (!is_path) {
    if (!IsValidName(src)) {
      return bad("volume name " + Quote(src) + " must be " + kNameRule +
                 " (start a host path with ./ or /)");
    }
    v.kind = Mount::Kind::kVolume;
  }
  v.source = std::string(src);
  auto target = NormalizeGuestPath(parts[1]);
  if (!target.ok()) return bad(target.error().message());
  if (*target == "/") return bad("cannot mount over the guest's root");
  v.target = *target;
  return v;
}

std::string FormatMount(const Mount& mount) {
  return mount.source + ":" + mount.target + (mount.read_only ? ":ro" : ":rw");
}

Result<Tmpfs> ParseTmpfs(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return Invalid("invalid tmpfs " + Quote(text) + ": " + why +
                   " (expected GUEST_PATH[:size=SIZE][,mode=OCTAL])");
  };
  Tmpfs t;
  size_t colon = text.find(':');
  auto target = NormalizeGuestPath(text.substr(0, colon));
  if (!target.ok()) return bad(target.error().message());
  if (*target == "/") return bad("cannot mount over the guest's root");
  t.target = *target;
  if (colon == std::string_view::npos) return t;
  for (std::string_view opt : Split(text.substr(colon + 1), ',')) {
    size_t eq = opt.find('=');
    std::string_view key = opt.substr(0, eq);
    std::string_view value = eq == std::string_view::npos ? std::string_view() : opt.substr(eq + 1);
    if (key == "size" && eq != std::string_view::npos) {
      auto size = ParseSize(value);
      if (!size.ok()) return bad(size.error().message());
      if (*size == 0) return bad("size must not be 0");
      t.size = *size;
    } else if (key == "mode" && eq != std::string_view::npos) {
      if (value.empty() || value.size() > 5 ||
          !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '7'; })) {
        return bad("mode " + Quote(value) + " must be octal, like 1777");
      }
      uint32_t mode = 0;
      for (char c : value) mode = mode * 8 + static_cast<uint32_t>(c - '0');
      if (mode > 07777) return bad("mode " + Quote(value) + " must be at most 7777");
      t.mode = mode;
    } else {
      return bad("unknown option " + Quote(opt) + DidYouMean(key, {"size", "mode"}));
    }
  }
  return t;
}

std::string FormatTmpfs(const Tmpfs& tmpfs) {
  char mode[8];
  std::snprintf(mode, sizeof mode, "%o", tmpfs.mode);
  std::string out = tmpfs.target + ":";
  if (tmpfs.size != 0) out += "size=" + FormatSize(tmpfs.size) + ",";
  return out + "mode=" + mode;
}

bool IsValidName(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || IsDigit(c); };
  if (!alnum(name[0])) return false;
  return std::all_of(name.begin(), name.end(),
                     [&](char c) { return alnum(c) || c == '_' || c == '-'; });
}

std::string NameFromDirectory(std::string_view dir_name) {
  std::string out;
  for (char c : dir_name) {
    char l = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    bool alnum = (l >= 'a' && l <= 'z') || IsDigit(l);
    if (out.empty() && !alnum) continue;  // must start with a letter or digit
    out += alnum || l == '_' ? l : '-';
    if (out.size() == 63) break;
  }
  return out.empty() ? "default" : out;
}

bool IsEnvName(std::string_view name) {
  if (name.empty() || IsDigit(name[0])) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return c == '_' || IsDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  });
}

bool IsScriptName(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return IsDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '.' || c == '-';
  });
}

std::optional<std::pair<std::string, std::string>> SplitScriptRef(std::string_view text) {
  size_t tilde = text.find('~');
  if (tilde == std::string_view::npos) return std::nullopt;
  return std::make_pair(std::string(text.substr(0, tilde)), std::string(text.substr(tilde + 1)));
}

std::vector<std::string> ScriptCommand(const std::vector<std::string>& script, const std::string& shell,
                                       const std::string& name, const std::vector<std::string>& args) {
  std::vector<std::string> argv = script;
  if (argv.size() == 3 && argv[0] == shell && argv[1] == "-c") argv.push_back(name);
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

Result<std::string> NormalizeGuestPath(std::string_view path) {
  if (path.empty() || path[0] != '/') {
    return Invalid("guest path " + Quote(path) + " must be absolute (start with /)");
  }
  if (path.size() > 4096) return Invalid("guest path is longer than 4096 bytes");
  std::string out;
  for (std::string_view part : Split(path, '/')) {
    if (part.empty() || part == ".") continue;
    if (part == "..") return Invalid("guest path " + Quote(path) + " must not contain \"..\"");
    out += '/';
    out += part;
  }
  return out.empty() ? std::string("/") : out;
}

Result<std::string> ResolveHostPath(std::string_view path, const std::string& base_dir,
                                    const std::string& home) {
  std::string full;
  if (path == "~" || path.substr(0, 2) == "~/") {
    if (home.empty() || home[0] != '/') {
      return Invalid("cannot expand " + Quote(path) + ": HOME is not set to an absolute path");
    }
    full = home + "/" + std::string(path.substr(1));
  } else if (!path.empty() && path[0] == '~') {
    return Invalid("host path " + Quote(path) + ": only ~/ (your own home) is expanded");
  } else if (!path.empty() && path[0] == '/') {
    full = path;
  } else {
    full = base_dir + "/" + std::string(path);
  }
  std::vector<std::string_view> stack;
  for (std::string_view part : Split(full, '/')) {
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!stack.empty()) stack.pop_back();
      continue;
    }
    stack.push_back(part);
  }
  std::string out;
  for (std::string_view part : stack) {
    out += '/';
    out += part;
  }
  return out.empty() ? std::string("/") : out;
}

std::optional<std::string> CanonicalIp(std::string_view text) {
  if (text.empty() || text.size() > 64) return std::nullopt;
  std::string s(text);
  unsigned char buf[16];
  char out[INET6_ADDRSTRLEN];
  if (inet_pton(AF_INET, s.c_str(), buf) == 1) {
    inet_ntop(AF_INET, buf, out, sizeof out);
    return std::string(out);
  }
  if (inet_pton(AF_INET6, s.c_str(), buf) == 1) {
    inet_ntop(AF_INET6, buf, out, sizeof out);
    return std::string(out);
  }
  return std::nullopt;
}

std::optional<std::string> CanonicalHostName(std::string_view text) {
  if (!text.empty() && text.back() == '.') text.remove_suffix(1);
  if (text.empty() || text.size() > 253) return std::nullopt;
  std::vector<std::string_view> labels = Split(text, '.');
  for (std::string_view label : labels) {
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return std::nullopt;
    }
    for (char c : label) {
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return std::nullopt;
    }
  }
  if (AllDigits(labels.back())) return std::nullopt;
  return Lower(text);
}

}  // namespace msb::schema
