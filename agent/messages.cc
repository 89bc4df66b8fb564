// JSON encoding and validating decoding of the control-frame bodies
// (messages.h). nlohmann::json is used without exceptions on the decode path:
// every access checks the type first, and dumping replaces invalid UTF-8.
#include "agent/messages.h"

#include <array>
#include <iterator>
#include <limits>

#include <nlohmann/json.hpp>

#include "agent/protocol.h"
#include "common/capabilities.h"
#include "common/hex.h"

namespace msb::agent {
namespace {

using nlohmann::json;

// Nesting deeper than this is refused before parsing: no message needs it.
constexpr int kMaxJsonDepth = 16;

std::string Dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool DepthWithin(std::string_view s, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') {
      if (++depth > max_depth) return false;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

Result<json> ParseObject(std::string_view payload, const char* what) {
  if (!DepthWithin(payload, kMaxJsonDepth))
    return Error(ErrorCode::kProtocol, std::string(what) + ": JSON nested too deeply");
  json j = json::parse(payload.begin(), payload.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Error(ErrorCode::kProtocol, std::string(what) + ": malformed JSON");
  if (!j.is_object()) return Error(ErrorCode::kProtocol, std::string(what) + ": expected a JSON object");
  return j;
}

// Reads fields of one object, keeping the first error. Absent optional fields
// leave the output untouched (its default).
class Fields {
 public:
  Fields(const json& j, const char* what) : j_(j), what_(what) {}

  void Str(const char* key, std::string& out, bool required = false) {
    const json* v = Find(key, required);
    if (v == nullptr) return;
    if (!v->is_string()) return Fail(key, "expected a string");
    out = v->get_ref<const std::string&>();
  }
  void OptStr(const char* key, std::optional<std::string>& out) {
    const json* v = Find(key, false);
    if (v == nullptr || v->is_null()) return;
    if (!v->is_string()) return Fail(key, "expected a string");
    out = v->get_ref<const std::string&>();
  }
  void StrList(const char* key, std::vector<std::string>& out, bool required = false) {
    const json* v = Find(key, required);
    if (v == nullptr || (!required && v->is_null())) return;
    if (!v->is_array()) return Fail(key, "expected an array of strings");
    out.clear();
    for (const auto& e : *v) {
      if (!e.is_string()) return Fail(key, "expected an array of strings");
      out.push_back(e.get_ref<const std::string&>());
    }
  }
  void Bool(const char* key, bool& out, bool required = false) {
    const json* v = Find(key, required);
    if (v == nullptr) return;
    if (!v->is_boolean()) return Fail(key, "expected true or false");
    out = v->get<bool>();
  }
  template <typename T>
  void Int(const char* key, T& out, int64_t min, int64_t max, bool required = false) {
    const json* v = Find(key, required);
    if (v == nullptr) return;
    int64_t x;
    if (v->is_number_unsigned()) {
      uint64_t u = v->get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return Fail(key, "number out of range");
      x = static_cast<int64_t>(u);
    } else if (v->is_number_integer()) {
      x = v->get<int64_t>();
    } else {
      return Fail(key, "expected an integer");
    }
    if (x < min || x > max)
      return Fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max));
    out = static_cast<T>(x);
  }
  const json* Object(const char* key) {
    const json* v = Find(key, false);
    if (v == nullptr || v->is_null()) return nullptr;
    if (!v->is_object()) {
      Fail(key, "expected an object");
      return nullptr;
    }
    return v;
  }
  void Merge(const Status& s) {
    if (!s.ok() && error_.empty()) error_ = s.error().message();
  }
  Status status() const {
    if (error_.empty()) return OkStatus();
    return Error(ErrorCode::kProtocol, error_);
  }

 private:
  const json* Find(const char* key, bool required) {
    if (!error_.empty()) return nullptr;
    auto it = j_.find(key);
    if (it == j_.end()) {
      if (required) Fail(key, "missing");
      return nullptr;
    }
    return &*it;
  }
  void Fail(const char* key, const std::string& why) {
    if (error_.empty()) error_ = std::string(what_) + ": field \"" + key + "\": " + why;
  }

  const json& j_;
  const char* what_;
  std::string error_;
};

constexpr int64_t kMaxWinsize = 65535;
constexpr int kMaxSignal = 64;

constexpr const char* kMountTypeNames[] = {"disk", "virtiofs", "tmpfs"};
static_assert(std::size(kMountTypeNames) == static_cast<size_t>(MountConfig::Type::kTmpfs) + 1);

json EncodeMount(const MountConfig& m) {
  return json{{"type", ToString(m.type)},     {"source", m.source},
              {"target", m.target},           {"read_only", m.read_only},
              {"size_bytes", m.size_bytes},   {"mode", m.mode}};
}

// A mount target: absolute, no empty, "." or ".." component, no NUL, not "/".
Status CheckMountTarget(const std::string& t, const std::string& what) {
  auto bad = [&](const std::string& why) {
    return Error(ErrorCode::kProtocol, what + ": field \"target\": " + why);
  };
  if (t.empty() || t[0] != '/') return bad("not an absolute path");
  if (t.size() > kMaxMountTarget) return bad("longer than " + std::to_string(kMaxMountTarget) + " bytes");
  if (t.find('\0') != std::string::npos) return bad("contains a NUL byte");
  if (t == "/") return bad("cannot mount over the root");
  size_t start = 1;
  while (start <= t.size()) {
    size_t end = t.find('/', start);
    if (end == std::string::npos) end = t.size();
    std::string_view c(t.data() + start, end - start);
    if (c.empty() || c == "." || c == "..")
      return bad("\"" + t + "\" has an empty, \".\" or \"..\" component");
    start = end + 1;
  }
  return OkStatus();
}

Status ParseMount(const json& j, size_t index, MountConfig* m) {
  std::string what = "boot.mounts[" + std::to_string(index) + "]";
  if (!j.is_object()) return Error(ErrorCode::kProtocol, what + ": expected an object");
  Fields f(j, what.c_str());
  std::string type;
  f.Str("type", type, true);
  f.Str("source", m->source);
  f.Str("target", m->target, true);
  f.Bool("read_only", m->read_only);
  f.Int("size_bytes", m->size_bytes, 0, std::numeric_limits<int64_t>::max());
  f.Int("mode", m->mode, 0, 07777);
  MSB_TRY_STATUS(f.status());
  size_t t = 0;
  while (t < std::size(kMountTypeNames) && type != kMountTypeNames[t]) ++t;
  if (t == std::size(kMountTypeNames))
    return Error(ErrorCode::kProtocol, what + ": field \"type\": expected disk, virtiofs or tmpfs");
  m->type = static_cast<MountConfig::Type>(t);
  MSB_TRY_STATUS(CheckMountTarget(m->target, what));
  auto printable = [](const std::string& s) {
    for (char c : s)
      if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) return false;
    return true;
  };
  switch (m->type) {
    case MountConfig::Type::kDisk:
    case MountConfig::Type::kVirtiofs: {
      size_t max = m->type == MountConfig::Type::kDisk ? kMaxDiskSerial : kMaxVirtiofsTag;
      if (m->source.empty() || m->source.size() > max || !printable(m->source))
        return Error(ErrorCode::kProtocol, what + ": field \"source\": expected 1 to " +
                                               std::to_string(max) + " printable bytes");
      break;
    }
    case MountConfig::Type::kTmpfs:
      if (!m->source.empty())
        return Error(ErrorCode::kProtocol, what + ": field \"source\": a tmpfs has none");
      if (m->read_only)
        return Error(ErrorCode::kProtocol, what + ": field \"read_only\": a tmpfs is writable");
      break;
  }
  return OkStatus();
}

// "ca_pem": empty, or at most kMaxCaPem bytes of printable ASCII, CR and LF
// that start with a PEM certificate header. Whether it parses as X.509 is the
// TLS clients' concern: agentd only copies it into trust stores.
// Host randomness in a boot or builder request: lower-case hex, bounded.
Status CheckEntropy(const std::string& hex, const char* message) {
  if (hex.size() > 2 * kMaxBootEntropy || hex.size() % 2 != 0 ||
      hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return Error(ErrorCode::kProtocol, std::string(message) + ": field \"entropy\": expected at most " +
                                           std::to_string(kMaxBootEntropy) + " bytes in lower-case hex");
  }
  return OkStatus();
}

Status CheckCaPem(const std::string& pem) {
  if (pem.empty()) return OkStatus();
  auto bad = [](const std::string& why) {
    return Error(ErrorCode::kProtocol, "boot: field \"ca_pem\": " + why);
  };
  if (pem.size() > kMaxCaPem)
    return bad("longer than " + std::to_string(kMaxCaPem) + " bytes");
  if (!pem.starts_with(kCaPemHeader))
    return bad("does not start with \"" + std::string(kCaPemHeader) + "\"");
  for (char c : pem) {
    auto u = static_cast<unsigned char>(c);
    if (c != '\n' && c != '\r' && (u < 0x20 || u > 0x7e))
      return bad("holds a byte that is not printable ASCII, CR or LF");
  }
  return OkStatus();
}

}  // namespace

constexpr std::array<const char*, 4> kStartFailureNames = {"none", "not_found", "not_executable", "setup"};
static_assert(kStartFailureNames.size() == static_cast<size_t>(StartFailure::kSetup) + 1);

const char* ToString(StartFailure failure) {
  auto i = static_cast<size_t>(failure);
  return i < kStartFailureNames.size() ? kStartFailureNames[i] : "?";
}

int ShellExitCode(const ExitInfo& exit) {
  switch (exit.start_failure) {
    case StartFailure::kNotFound:
      return 127;
    case StartFailure::kNotExecutable:
    case StartFailure::kSetup:
      return 126;
    case StartFailure::kNone:
      break;
  }
  return exit.signal != 0 ? 128 + exit.signal : exit.code;
}

const char* ToString(MountConfig::Type type) {
  auto i = static_cast<size_t>(type);
  return i < std::size(kMountTypeNames) ? kMountTypeNames[i] : "?";
}

// ---- encoders ----

std::string Encode(const Hello& m) {
  json j = {{"version", m.version}};
  if (!m.software.empty()) j["software"] = m.software;
  return Dump(j);
}

std::string Encode(const BootConfig& m) {
  json j = {{"hostname", m.hostname},
            {"env", m.env},
            {"user", m.user},
            {"workdir", m.workdir},
            {"command", m.command},
            {"root",
             {{"base_serial", m.root.base_serial},
              {"upper_serial", m.root.upper_serial},
              {"lower_serials", m.root.lower_serials},
              {"ephemeral", m.root.ephemeral},
              {"upper_size_bytes", m.root.upper_size_bytes},
              {"read_only", m.root.read_only}}},
            {"mounts", json::array()},
            {"network", nullptr},
            {"tty", m.tty},
            {"rows", m.rows},
            {"cols", m.cols},
            {"ca_pem", m.ca_pem}};
  if (!m.entropy.empty()) j["entropy"] = m.entropy;
  if (m.time_ns != 0) j["time_ns"] = m.time_ns;
  if (m.restored) j["restored"] = true;
  for (const MountConfig& mount : m.mounts) j["mounts"].push_back(EncodeMount(mount));
  j["security"] = {{"no_new_privileges", m.security.no_new_privileges}, {"capabilities", nullptr}};
  if (m.security.capabilities) j["security"]["capabilities"] = *m.security.capabilities;
  if (m.network) {
    const NetworkConfig& n = *m.network;
    j["network"] = {{"mac", n.mac},         {"ipv4", n.ipv4},         {"prefix4", n.prefix4},
                    {"gateway4", n.gateway4}, {"ipv6", n.ipv6},       {"prefix6", n.prefix6},
                    {"gateway6", n.gateway6}, {"mtu", n.mtu},         {"dns", n.dns}};
  }
  return Dump(j);
}

std::string Encode(const Ready& m) {
  json j = json::object();
  if (m.error) j["error"] = *m.error;
  return Dump(j);
}

std::string Encode(const ExecRequest& m) {
  return Dump(json{{"argv", m.argv},
                   {"env", m.env},
                   {"cwd", m.cwd},
                   {"user", m.user},
                   {"tty", m.tty},
                   {"rows", m.rows},
                   {"cols", m.cols},
                   {"stdin", m.stdin_open}});
}

std::string Encode(const Started& m) { return Dump(json{{"pid", m.pid}}); }
std::string Encode(const ExitInfo& m) {
  json j = {{"code", m.code}, {"signal", m.signal}};
  if (m.start_failure != StartFailure::kNone) j["start_failure"] = ToString(m.start_failure);
  return Dump(j);
}
std::string Encode(const SignalRequest& m) { return Dump(json{{"signal", m.signal}}); }
std::string Encode(const Resize& m) { return Dump(json{{"rows", m.rows}, {"cols", m.cols}}); }
std::string Encode(const Credit& m) { return Dump(json{{"bytes", m.bytes}}); }
std::string Encode(const PathRequest& m) { return Dump(json{{"path", m.path}}); }
std::string Encode(const ResultMsg& m) {
  if (m.error) return Dump(json{{"error", *m.error}});
  return Dump(json{{"ok", true}});
}
std::string Encode(const Shutdown& m) { return Dump(json{{"timeout_ms", m.timeout_ms}}); }
std::string Encode(const Freeze& m) { return Dump(json{{"timeout_ms", m.timeout_ms}}); }
std::string Encode(const ErrorMsg& m) {
  json j = {{"message", m.message}};
  if (m.id) j["id"] = *m.id;
  return Dump(j);
}

// ---- decoders ----

Result<Hello> ParseHello(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "hello"));
  Hello m;
  Fields f(j, "hello");
  f.Int("version", m.version, 0, std::numeric_limits<int>::max(), true);
  f.Str("software", m.software);
  MSB_TRY_STATUS(f.status());
  return m;
}

Result<BootConfig> ParseBootConfig(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "boot"));
  BootConfig m;
  Fields f(j, "boot");
  f.Str("hostname", m.hostname);
  f.StrList("env", m.env);
  f.Str("user", m.user);
  f.Str("workdir", m.workdir);
  f.StrList("command", m.command);
  f.Bool("tty", m.tty);
  f.Int("rows", m.rows, 0, kMaxWinsize);
  f.Int("cols", m.cols, 0, kMaxWinsize);
  f.Str("ca_pem", m.ca_pem);
  f.Str("entropy", m.entropy);
  f.Int("time_ns", m.time_ns, 0, std::numeric_limits<int64_t>::max());
  f.Bool("restored", m.restored);
  if (const json* root = f.Object("root")) {
    Fields r(*root, "boot.root");
    r.Str("base_serial", m.root.base_serial);
    r.Str("upper_serial", m.root.upper_serial);
    r.StrList("lower_serials", m.root.lower_serials);
    if (m.root.lower_serials.size() > kMaxLowerLayers) {
      r.Merge(Error(ErrorCode::kProtocol, "boot.root: field \"lower_serials\": more than " +
                                              std::to_string(kMaxLowerLayers) + " layers"));
    }
    for (const auto& serial : m.root.lower_serials) {
      if (serial.empty() || serial.size() > kMaxDiskSerial) {
        r.Merge(Error(ErrorCode::kProtocol, "boot.root: field \"lower_serials\": a serial must be 1 to " +
                                                std::to_string(kMaxDiskSerial) + " bytes"));
      }
    }
    r.Bool("ephemeral", m.root.ephemeral);
    r.Int("upper_size_bytes", m.root.upper_size_bytes, 0, std::numeric_limits<int64_t>::max());
    r.Bool("read_only", m.root.read_only);
    f.Merge(r.status());
  }
  if (const json* sec = f.Object("security")) {
    Fields s(*sec, "boot.security");
    s.Bool("no_new_privileges", m.security.no_new_privileges);
    if (auto it = sec->find("capabilities"); it != sec->end() && !it->is_null()) {
      std::vector<std::string> caps;
      s.StrList("capabilities", caps);
      for (const std::string& name : caps) {
        if (!CapabilityNumber(name)) {
          f.Merge(Error(ErrorCode::kProtocol,
                        "boot.security: field \"capabilities\": unknown capability \"" + name + "\""));
        }
      }
      m.security.capabilities = std::move(caps);
    }
    f.Merge(s.status());
  }
  if (auto it = j.find("mounts"); it != j.end() && !it->is_null() && f.status().ok()) {
    if (!it->is_array())
      return Error(ErrorCode::kProtocol, "boot: field \"mounts\": expected an array of objects");
    if (it->size() > kMaxBootMounts)
      return Error(ErrorCode::kProtocol, "boot: field \"mounts\": more than " +
                                             std::to_string(kMaxBootMounts) + " mounts");
    for (size_t i = 0; i < it->size(); ++i) {
      MountConfig mount;
      MSB_TRY_STATUS(ParseMount((*it)[i], i, &mount));
      m.mounts.push_back(std::move(mount));
    }
  }
  if (auto it = j.find("network"); it != j.end() && !it->is_null() && f.status().ok()) {
    if (!it->is_object()) return Error(ErrorCode::kProtocol, "boot: field \"network\": expected an object");
    NetworkConfig n;
    Fields nf(*it, "boot.network");
    nf.Str("mac", n.mac, true);
    nf.Str("ipv4", n.ipv4, true);
    nf.Int("prefix4", n.prefix4, 0, 32);
    nf.Str("gateway4", n.gateway4);
    nf.Str("ipv6", n.ipv6);
    nf.Int("prefix6", n.prefix6, 0, 128);
    nf.Str("gateway6", n.gateway6);
    nf.Int("mtu", n.mtu, 576, 65535);
    nf.Str("dns", n.dns);
    MSB_TRY_STATUS(nf.status());
    m.network = std::move(n);
  }
  MSB_TRY_STATUS(f.status());
  if (m.hostname.size() > 64)
    return Error(ErrorCode::kProtocol, "boot: field \"hostname\": longer than 64 bytes");
  MSB_TRY_STATUS(CheckCaPem(m.ca_pem));
  MSB_TRY_STATUS(CheckEntropy(m.entropy, "boot"));
  return m;
}

Result<Ready> ParseReady(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "ready"));
  Ready m;
  Fields f(j, "ready");
  f.OptStr("error", m.error);
  MSB_TRY_STATUS(f.status());
  return m;
}

Result<ExecRequest> ParseExecRequest(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "exec"));
  ExecRequest m;
  Fields f(j, "exec");
  f.StrList("argv", m.argv, true);
  f.StrList("env", m.env);
  f.Str("cwd", m.cwd);
  f.Str("user", m.user);
  f.Bool("tty", m.tty);
  f.Int("rows", m.rows, 0, kMaxWinsize);
  f.Int("cols", m.cols, 0, kMaxWinsize);
  f.Bool("stdin", m.stdin_open);
  MSB_TRY_STATUS(f.status());
  if (m.argv.empty()) return Error(ErrorCode::kProtocol, "exec: field \"argv\": empty");
  return m;
}

Result<Started> ParseStarted(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "started"));
  Started m;
  Fields f(j, "started");
  f.Int("pid", m.pid, 0, std::numeric_limits<int32_t>::max(), true);
  MSB_TRY_STATUS(f.status());
  return m;
}

Result<ExitInfo> ParseExitInfo(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "exit"));
  ExitInfo m;
  Fields f(j, "exit");
  f.Int("code", m.code, -1, 255, true);
  f.Int("signal", m.signal, 0, kMaxSignal);
  std::string failure;
  f.Str("start_failure", failure);
  MSB_TRY_STATUS(f.status());
  // -1 stands for "no code" and goes with a signal, and only with one: an exit
  // of -1 without a signal would otherwise become exit status 255.
  if ((m.code == -1) != (m.signal != 0))
    return Error(ErrorCode::kProtocol, "exit: field \"code\" is -1 exactly when \"signal\" is not 0, got code " +
                                           std::to_string(m.code) + " with signal " + std::to_string(m.signal));
  if (!failure.empty()) {
    bool known = false;
    for (auto k : {StartFailure::kNotFound, StartFailure::kNotExecutable, StartFailure::kSetup}) {
      if (failure == ToString(k)) {
        m.start_failure = k;
        known = true;
      }
    }
    if (!known)
      return Error(ErrorCode::kProtocol,
                   "exit: field \"start_failure\": expected not_found, not_executable or setup");
  }
  return m;
}

Result<SignalRequest> ParseSignalRequest(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "signal"));
  SignalRequest m;
  Fields f(j, "signal");
  f.Int("signal", m.signal, 1, kMaxSignal, true);
  MSB_TRY_STATUS(f.status());
  return m;
}

Result<Resize> ParseResize(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "resize"));
  Resize m;
  Fields f(j, "resize");
  f.Int("rows", m.rows, 0, kMaxWinsize, true);
  f.Int("cols", m.cols, 0, kMaxWinsize, true);
  MSB_TRY_STATUS(f.status());
  return m;
}

Result<Credit> ParseCredit(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "credit"));
  Credit m;
  Fields f(j, "credit");
  f.Int("bytes", m.bytes, 0, std::numeric_limits<uint32_t>::max(), true);
  MSB_TRY_STATUS(f.status());
  return m;
}

Result<PathRequest> ParsePathRequest(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "copy"));
  PathRequest m;
  Fields f(j, "copy");
  f.Str("path", m.path, true);
  MSB_TRY_STATUS(f.status());
  if (m.path.empty()) return Error(ErrorCode::kProtocol, "copy: field \"path\": empty");
  return m;
}

Result<ResultMsg> ParseResultMsg(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "result"));
  ResultMsg m;
  Fields f(j, "result");
  f.OptStr("error", m.error);
  bool ok = false;
  f.Bool("ok", ok);
  MSB_TRY_STATUS(f.status());
  if (!ok && !m.error) return Error(ErrorCode::kProtocol, "result: neither \"ok\" nor \"error\"");
  return m;
}

Result<Shutdown> ParseShutdown(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "shutdown"));
  Shutdown m;
  Fields f(j, "shutdown");
  f.Int("timeout_ms", m.timeout_ms, 0, 3600 * 1000);
  MSB_TRY_STATUS(f.status());
  return m;
}

Result<Freeze> ParseFreeze(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "freeze"));
  Freeze m;
  Fields f(j, "freeze");
  f.Int("timeout_ms", m.timeout_ms, 1, kMaxFreezeMs, true);
  MSB_TRY_STATUS(f.status());
  return m;
}

Result<ErrorMsg> ParseErrorMsg(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "error"));
  ErrorMsg m;
  Fields f(j, "error");
  f.Str("message", m.message, true);
  if (j.contains("id")) {
    uint32_t id = 0;
    f.Int("id", id, 0, std::numeric_limits<uint32_t>::max());
    m.id = id;
  }
  MSB_TRY_STATUS(f.status());
  return m;
}

// ---- unpack mode ----

namespace {

bool PrintableSerial(const std::string& s) {
  if (s.empty() || s.size() > kMaxDiskSerial) return false;
  for (char c : s)
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) return false;
  return true;
}

bool IsSha256Digest(const std::string& d) {
  return d.compare(0, 7, "sha256:") == 0 && IsHex64(std::string_view(d).substr(7));
}

// GuestStart's fields, flat in the request's object (as in BootConfig's).
void EncodeStart(const GuestStart& m, json& j) {
  if (!m.entropy.empty()) j["entropy"] = m.entropy;
  if (m.time_ns != 0) j["time_ns"] = m.time_ns;
  if (m.restored) j["restored"] = true;
}

void ParseStart(Fields& f, GuestStart& m) {
  f.Str("entropy", m.entropy);
  f.Int("time_ns", m.time_ns, 0, std::numeric_limits<int64_t>::max());
  f.Bool("restored", m.restored);
}

}  // namespace

std::string Encode(const UnpackRequest& m) {
  json layers = json::array();
  for (const UnpackLayer& l : m.layers)
    layers.push_back({{"serial", l.serial}, {"size", l.size}, {"media_type", l.media_type}});
  json j{{"target_serial", m.target_serial}, {"layers", layers}};
  EncodeStart(m.start, j);
  return Dump(j);
}

std::string Encode(const LayerReport& m) {
  return Dump(json{{"index", m.index}, {"diff_id", m.diff_id}, {"entries", m.entries}, {"bytes", m.bytes}});
}

Result<UnpackRequest> ParseUnpackRequest(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "unpack"));
  UnpackRequest m;
  Fields f(j, "unpack");
  f.Str("target_serial", m.target_serial, true);
  ParseStart(f, m.start);
  MSB_TRY_STATUS(f.status());
  MSB_TRY_STATUS(CheckEntropy(m.start.entropy, "unpack"));
  if (!PrintableSerial(m.target_serial))
    return Error(ErrorCode::kProtocol, "unpack: field \"target_serial\": expected 1 to " +
                                           std::to_string(kMaxDiskSerial) + " printable bytes");
  auto it = j.find("layers");
  if (it == j.end() || !it->is_array())
    return Error(ErrorCode::kProtocol, "unpack: field \"layers\": expected an array of objects");
  if (it->empty() || it->size() > kMaxUnpackLayers)
    return Error(ErrorCode::kProtocol, "unpack: field \"layers\": expected 1 to " +
                                           std::to_string(kMaxUnpackLayers) + " layers");
  for (size_t i = 0; i < it->size(); ++i) {
    std::string what = "unpack.layers[" + std::to_string(i) + "]";
    const json& e = (*it)[i];
    if (!e.is_object()) return Error(ErrorCode::kProtocol, what + ": expected an object");
    UnpackLayer l;
    Fields lf(e, what.c_str());
    lf.Str("serial", l.serial, true);
    lf.Int("size", l.size, 0, std::numeric_limits<int64_t>::max(), true);
    lf.Str("media_type", l.media_type);
    MSB_TRY_STATUS(lf.status());
    if (!PrintableSerial(l.serial))
      return Error(ErrorCode::kProtocol, what + ": field \"serial\": expected 1 to " +
                                             std::to_string(kMaxDiskSerial) + " printable bytes");
    if (l.media_type.size() > 255)
      return Error(ErrorCode::kProtocol, what + ": field \"media_type\": longer than 255 bytes");
    m.layers.push_back(std::move(l));
  }
  return m;
}

Result<LayerReport> ParseLayerReport(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "layer"));
  LayerReport m;
  Fields f(j, "layer");
  f.Int("index", m.index, 0, static_cast<int64_t>(kMaxUnpackLayers) - 1, true);
  f.Str("diff_id", m.diff_id, true);
  f.Int("entries", m.entries, 0, std::numeric_limits<int64_t>::max(), true);
  f.Int("bytes", m.bytes, 0, std::numeric_limits<int64_t>::max(), true);
  MSB_TRY_STATUS(f.status());
  if (!IsSha256Digest(m.diff_id))
    return Error(ErrorCode::kProtocol, "layer: field \"diff_id\": expected sha256:<64 lowercase hex>");
  return m;
}

std::string Encode(const ExportRequest& m) {
  json layers = json::array();
  for (const ExportLayer& l : m.layers) layers.push_back({{"serial", l.serial}, {"output_serial", l.output_serial}});
  json j{{"layers", layers}};
  EncodeStart(m.start, j);
  return Dump(j);
}

std::string Encode(const ExportReport& m) {
  return Dump(json{{"index", m.index}, {"bytes", m.bytes}, {"entries", m.entries}});
}

Result<ExportRequest> ParseExportRequest(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "export"));
  ExportRequest m;
  Fields f(j, "export");
  ParseStart(f, m.start);
  MSB_TRY_STATUS(f.status());
  MSB_TRY_STATUS(CheckEntropy(m.start.entropy, "export"));
  auto it = j.find("layers");
  if (it == j.end() || !it->is_array())
    return Error(ErrorCode::kProtocol, "export: field \"layers\": expected an array of objects");
  if (it->empty() || it->size() > kMaxExportLayers)
    return Error(ErrorCode::kProtocol, "export: field \"layers\": expected 1 to " +
                                           std::to_string(kMaxExportLayers) + " layers");
  for (size_t i = 0; i < it->size(); ++i) {
    std::string what = "export.layers[" + std::to_string(i) + "]";
    const json& e = (*it)[i];
    if (!e.is_object()) return Error(ErrorCode::kProtocol, what + ": expected an object");
    ExportLayer l;
    Fields lf(e, what.c_str());
    lf.Str("serial", l.serial, true);
    lf.Str("output_serial", l.output_serial, true);
    MSB_TRY_STATUS(lf.status());
    if (!PrintableSerial(l.serial) || !PrintableSerial(l.output_serial))
      return Error(ErrorCode::kProtocol, what + ": fields \"serial\" and \"output_serial\": expected 1 to " +
                                             std::to_string(kMaxDiskSerial) + " printable bytes");
    m.layers.push_back(std::move(l));
  }
  return m;
}

Result<ExportReport> ParseExportReport(std::string_view payload) {
  MSB_TRY(json j, ParseObject(payload, "exported"));
  ExportReport m;
  Fields f(j, "exported");
  f.Int("index", m.index, 0, static_cast<int64_t>(kMaxExportLayers) - 1, true);
  f.Int("bytes", m.bytes, 0, std::numeric_limits<int64_t>::max(), true);
  f.Int("entries", m.entries, 0, std::numeric_limits<int64_t>::max(), true);
  MSB_TRY_STATUS(f.status());
  return m;
}

}  // namespace msb::agent
