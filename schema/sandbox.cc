// One `sandboxes.<name>` entry: every key of docs/sandboxfile.md, its legacy
// microsandbox spelling, and the rules local to one sandbox. Rules across
// sandboxes are in checks.cc.
#include <algorithm>
#include <map>

#include "schema/loader.h"
#include "schema/network_rule.h"
#include "schema/image_ref.h"
#include "schema/values.h"

namespace msb::schema::internal {
namespace {

constexpr size_t kImage = KeyIndex(kSandboxKeys, "image");
constexpr size_t kCpus = KeyIndex(kSandboxKeys, "cpus");
constexpr size_t kMemory = KeyIndex(kSandboxKeys, "memory");
constexpr size_t kDisk = KeyIndex(kSandboxKeys, "disk");
constexpr size_t kEphemeral = KeyIndex(kSandboxKeys, "ephemeral");
constexpr size_t kUser = KeyIndex(kSandboxKeys, "user");
constexpr size_t kWorkdir = KeyIndex(kSandboxKeys, "workdir");
constexpr size_t kShell = KeyIndex(kSandboxKeys, "shell");
constexpr size_t kCommand = KeyIndex(kSandboxKeys, "command");
constexpr size_t kScripts = KeyIndex(kSandboxKeys, "scripts");
constexpr size_t kEnvs = KeyIndex(kSandboxKeys, "envs");
constexpr size_t kVolumes = KeyIndex(kSandboxKeys, "volumes");
constexpr size_t kTmpfs = KeyIndex(kSandboxKeys, "tmpfs");
constexpr size_t kPorts = KeyIndex(kSandboxKeys, "ports");
constexpr size_t kDependsOn = KeyIndex(kSandboxKeys, "depends_on");
constexpr size_t kHealthcheck = KeyIndex(kSandboxKeys, "healthcheck");
constexpr size_t kRestart = KeyIndex(kSandboxKeys, "restart");
constexpr size_t kBoot = KeyIndex(kSandboxKeys, "boot");
constexpr size_t kScope = KeyIndex(kSandboxKeys, "scope");
constexpr size_t kNetwork = KeyIndex(kSandboxKeys, "network");
constexpr size_t kSecrets = KeyIndex(kSandboxKeys, "secrets");
constexpr size_t kSecurity = KeyIndex(kSandboxKeys, "security");
constexpr size_t kMeta = KeyIndex(kSandboxKeys, "meta");
constexpr size_t kVersion = KeyIndex(kSandboxKeys, "version");
constexpr size_t kImports = KeyIndex(kSandboxKeys, "imports");
constexpr size_t kExports = KeyIndex(kSandboxKeys, "exports");
constexpr size_t kLogs = KeyIndex(kSandboxKeys, "logs");

constexpr size_t kHcCommand = KeyIndex(kHealthKeys, "command");
constexpr size_t kHcInterval = KeyIndex(kHealthKeys, "interval");
constexpr size_t kHcTimeout = KeyIndex(kHealthKeys, "timeout");
constexpr size_t kHcRetries = KeyIndex(kHealthKeys, "retries");
constexpr size_t kHcStartPeriod = KeyIndex(kHealthKeys, "start_period");
constexpr size_t kNetPolicy = KeyIndex(kNetworkKeys, "policy");
constexpr size_t kNetRules = KeyIndex(kNetworkKeys, "rules");
constexpr size_t kNetDns = KeyIndex(kNetworkKeys, "dns");
constexpr size_t kNetTls = KeyIndex(kNetworkKeys, "tls");
constexpr size_t kDnsServers = KeyIndex(kDnsKeys, "servers");
constexpr size_t kDnsRebind = KeyIndex(kDnsKeys, "rebind_protection");
constexpr size_t kSecFromEnv = KeyIndex(kSecretKeys, "from_env");
constexpr size_t kSecFromFile = KeyIndex(kSecretKeys, "from_file");
constexpr size_t kSecAllow = KeyIndex(kSecretKeys, "allow");
constexpr size_t kSecInject = KeyIndex(kSecretKeys, "inject");

// uid[:gid] or name[:group].
bool IsUser(std::string_view s) {
  size_t colon = s.find(':');
  std::string_view parts[2] = {s.substr(0, colon),
                               colon == std::string_view::npos ? std::string_view("x") : s.substr(colon + 1)};
  for (std::string_view p : parts) {
    if (p.empty() || p.size() > 32 || p[0] == '-') return false;
    for (char c : p) {
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-')) return false;
    }
  }
  return true;
}

std::optional<NetworkPolicy> PolicyFrom(Ctx& ctx, const Field& f) {
  auto s = ctx.Scalar(f, "none, group, public or any");
  if (!s) return std::nullopt;
  if (*s == "none") return NetworkPolicy::kNone;
  if (*s == "group") return NetworkPolicy::kGroup;
  if (*s == "public") return NetworkPolicy::kPublic;
  if (*s == "any") return NetworkPolicy::kAny;
  ctx.Error(f.pos, f.path, "expected none, group, public or any, got \"" + *s + "\"" +
                               DidYouMean(*s, {"none", "group", "public", "any"}));
  return std::nullopt;
}

void LoadEnvs(Ctx& ctx, const Field& f, Sandbox* sb) {
  auto add = [&](const Field& at, std::string key, std::string value, bool from_list) {
    if (!IsEnvName(key)) {
      ctx.Error(at.pos, at.path, "invalid variable name \"" + key +
                                     "\" (letters, digits and '_', not starting with a digit)");
      return;
    }
    if (from_list && sb->envs.count(key)) {
      ctx.Error(at.pos, at.path, "variable " + key + " is set twice");
      return;
    }
    sb->envs[std::move(key)] = std::move(value);
  };
  if (f.value.IsMap()) {
    for (const Field& e : ctx.Entries(f.value, f.path, f.pos)) {
      auto v = ctx.Scalar(e, "a string value (write \"\" for an empty one)");
      if (v) add(e, e.key.Scalar(), std::move(*v), false);
    }
    return;
  }
  if (!f.value.IsNull() && !f.value.IsSequence()) {
    ctx.Error(f.pos, f.path, std::string("expected a list of KEY=VALUE or a map, got ") + TypeName(f.value));
    return;
  }
  for (const Field& item : ctx.Items(f)) {
    auto s = ctx.Scalar(item, "KEY=VALUE");
    if (!s) continue;
    size_t eq = s->find('=');
    if (eq == std::string::npos) {
      ctx.Error(item.pos, item.path, "expected KEY=VALUE, got \"" + *s + "\"");
      continue;
    }
    add(item, s->substr(0, eq), s->substr(eq + 1), true);
  }
}

// paths receives each mount's key path, in the order of sb->volumes.
void LoadVolumes(Ctx& ctx, const Field& f, Sandbox* sb, std::vector<std::string>* paths) {
  std::vector<Field> items = ctx.Items(f);
  for (const Field& item : items) {
    auto s = ctx.Scalar(item, "HOST_PATH:GUEST_PATH[:ro] or VOLUME:GUEST_PATH[:ro]");
    if (!s) continue;
    auto spec = ParseVolumeSpec(*s);
    if (!spec.ok()) {
      ctx.Error(item.pos, item.path, spec.error().message());
      continue;
    }
    Mount m;
    m.kind = spec->kind;
    m.target = spec->target;
    m.read_only = spec->read_only;
    m.pos = item.pos;
    if (m.kind == Mount::Kind::kBind) {
      auto abs = ResolveHostPath(spec->source, ctx.base_dir(), ctx.home());
      if (!abs.ok()) {
        ctx.Error(item.pos, item.path, abs.error().message());
        continue;
      }
      if (abs->find(':') != std::string::npos) {
        ctx.Error(item.pos, item.path, "host path " + *abs + " contains ':', which separates the parts of a volume");
        continue;
      }
      if (ctx.path_exists() && !ctx.path_exists()(*abs)) {
        ctx.Error(item.pos, item.path,
                  "host path " + *abs + " does not exist (relative paths start at " + ctx.base_dir() + ")");
      }
      m.source = *abs;
    } else {
      m.source = spec->source;
      ctx.volume_uses.push_back({item.path, item.pos, m.source, m.read_only});
    }
    sb->volumes.push_back(std::move(m));
    paths->push_back(item.path);
  }
  if (items.size() > static_cast<size_t>(kMaxMounts)) {
    ctx.Error(f.pos, f.path,
              std::to_string(items.size()) + " volumes and bind mounts exceed the microVM limit of " +
                  std::to_string(kMaxMounts) + " (" + std::to_string(kVirtioTransports) +
                  " virtio-mmio devices, " + std::to_string(kSystemDevices) + " used by msb)");
  }
}

void LoadDependsOn(Ctx& ctx, const Field& f, Sandbox* sb) {
  auto add = [&](const Field& at, const std::string& name, DependCondition cond) {
    if (!IsValidName(name)) {
      ctx.Error(at.pos, at.path, "invalid sandbox name \"" + name + "\": use " + kNameRule);
      return;
    }
    if (name == sb->name) {
      ctx.Error(at.pos, at.path, "a sandbox cannot depend on itself");
      return;
    }
    if (sb->depends_on.count(name)) {
      ctx.Error(at.pos, at.path, "\"" + name + "\" is listed twice");
      return;
    }
    sb->depends_on[name] = Dependency{cond, at.pos};
    ctx.dependencies.push_back({sb->name, name, at.path, at.pos, cond});
  };
  if (f.value.IsMap()) {
    for (const Field& e : ctx.Entries(f.value, f.path, f.pos)) {
      DependCondition cond = DependCondition::kStarted;
      std::vector<Field> fields = ctx.ReadMap(e.value, e.path, e.pos, kDependKeys);
      if (fields[0].present) {
        auto s = ctx.Scalar(fields[0], "started, healthy or completed");
        if (!s) continue;
        if (*s == "started") cond = DependCondition::kStarted;
        else if (*s == "healthy") cond = DependCondition::kHealthy;
        else if (*s == "completed") cond = DependCondition::kCompleted;
        else {
          ctx.Error(fields[0].pos, fields[0].path,
                    "expected started, healthy or completed, got \"" + *s + "\"" +
                        DidYouMean(*s, {"started", "healthy", "completed"}));
          continue;
        }
      }
      add(e, e.key.Scalar(), cond);
    }
    return;
  }
  if (!f.value.IsNull() && !f.value.IsSequence()) {
    ctx.Error(f.pos, f.path, std::string("expected a list of sandbox names or a map, got ") + TypeName(f.value));
    return;
  }
  for (const Field& item : ctx.Items(f)) {
    auto s = ctx.Scalar(item, "a sandbox name");
    if (s) add(item, *s, DependCondition::kStarted);
  }
}

std::optional<Healthcheck> LoadHealthcheck(Ctx& ctx, const Field& f, const std::string& shell) {
  if (!ctx.ExpectMap(f, "a map with command, interval, timeout, retries, start_period")) return std::nullopt;
  std::vector<Field> h = ctx.ReadMap(f.value, f.path, f.pos, kHealthKeys);
  Healthcheck hc;
  bool ok = true;
  if (!h[kHcCommand].present) {
    ctx.Error(f.pos, f.path, "missing required key \"command\"");
    ok = false;
  } else if (auto c = ctx.Command(h[kHcCommand], shell)) {
    hc.command = std::move(*c);
  } else {
    ok = false;
  }
  if (h[kHcInterval].present) {
    if (auto d = ctx.Duration(h[kHcInterval], kHealthKeys[kHcInterval].value)) hc.interval_ms = *d;
  }
  if (h[kHcTimeout].present) {
    if (auto d = ctx.Duration(h[kHcTimeout], kHealthKeys[kHcTimeout].value)) hc.timeout_ms = *d;
  }
  if (h[kHcStartPeriod].present) {
    if (auto d = ctx.Duration(h[kHcStartPeriod], kHealthKeys[kHcStartPeriod].value)) hc.start_period_ms = *d;
  }
  if (h[kHcRetries].present) {
    if (auto r = ctx.Int(h[kHcRetries], kHealthKeys[kHcRetries].value)) hc.retries = static_cast<int>(*r);
  }
  if (!ok) return std::nullopt;
  return hc;
}

// "IP", "IPv4:PORT" or "[IPv6]:PORT", canonical (the port left out when 53).
std::optional<std::string> CanonicalDnsServer(const std::string& text) {
  std::string host = text;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') return std::nullopt;
      port = text.substr(close + 2);
    }
  } else if (std::count(text.begin(), text.end(), ':') == 1) {
    host = text.substr(0, text.find(':'));
    port = text.substr(text.find(':') + 1);
  }
  auto ip = CanonicalIp(host);
  if (!ip) return std::nullopt;
  if (port.empty() && text.front() != '[') return *ip;
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  int n = std::stoi(port);
  if (n < 1 || n > 65535) return std::nullopt;
  bool v6 = ip->find(':') != std::string::npos;
  if (n == 53) return *ip;
  return (v6 ? "[" + *ip + "]" : *ip) + ":" + std::to_string(n);
}

void LoadNetwork(Ctx& ctx, const Field& f, Sandbox* sb, const Field& scope) {
  std::optional<NetworkPolicy> scope_policy;
  if (scope.present) {
    scope_policy = PolicyFrom(ctx, scope);
    if (scope_policy) sb->network.policy = *scope_policy;
  }
  if (!f.present || !ctx.ExpectMap(f, "a map with policy, rules, dns, tls")) return;
  std::vector<Field> n = ctx.ReadMap(f.value, f.path, f.pos, kNetworkKeys);
  if (n[kNetPolicy].present) {
    if (auto p = PolicyFrom(ctx, n[kNetPolicy])) {
      if (scope_policy && *scope_policy != *p) {
        ctx.Error(n[kNetPolicy].pos, n[kNetPolicy].path,
                  std::string("network.policy ") + ToString(*p) + " disagrees with scope " +
                      ToString(*scope_policy) + " (scope is the legacy spelling; keep one)");
      }
      sb->network.policy = *p;
    }
  }
  for (const Field& item : ctx.Items(n[kNetRules])) {
    auto s = ctx.Scalar(item, "a rule like allow@api.github.com:tcp:443");
    if (!s) continue;
    auto rule = ParseNetworkRule(*s);
    if (!rule.ok()) {
      ctx.Error(item.pos, item.path, rule.error().message());
      continue;
    }
    sb->network.rules.push_back(std::move(*rule));
  }
  const Field& dns = n[kNetDns];
  if (dns.present && ctx.ExpectMap(dns, "a map with servers, rebind_protection")) {
    std::vector<Field> d = ctx.ReadMap(dns.value, dns.path, dns.pos, kDnsKeys);
    for (const Field& item : ctx.Items(d[kDnsServers])) {
      auto s = ctx.Scalar(item, "an IP address");
      if (!s) continue;
      auto server = CanonicalDnsServer(*s);
      if (!server) {
        ctx.Error(item.pos, item.path,
                  "expected an IP address with an optional port (1.1.1.1, 10.0.0.2:5353, "
                  "[2606:4700::1111]:53), got \"" + *s + "\"");
        continue;
      }
      sb->network.dns_servers.push_back(*server);
    }
    if (d[kDnsRebind].present) {
      if (auto b = ctx.Bool(d[kDnsRebind])) sb->network.rebind_protection = *b;
    }
  }
  const Field& tls = n[kNetTls];
  if (tls.present && ctx.ExpectMap(tls, "a map with ca")) {
    std::vector<Field> t = ctx.ReadMap(tls.value, tls.path, tls.pos, kTlsKeys);
    if (t[0].present) {
      auto v = ctx.Scalar(t[0], "a host file path (PEM certificates)");
      if (v && v->empty()) {
        ctx.Error(t[0].pos, t[0].path, "the path is empty");
      } else if (v) {
        auto r = ResolveHostPath(*v, ctx.base_dir(), ctx.home());
        if (r.ok()) sb->network.tls_ca = *r;
        else ctx.Error(t[0].pos, t[0].path, r.error().message());
      }
    }
  }
}

// Whether a rule's host target covers the allow entry `host` ("name" or
// "*.domain", canonical).
bool RuleCoversHost(const NetworkRule& r, const std::string& host) {
  bool wildcard = host.rfind("*.", 0) == 0;
  std::string name = wildcard ? host.substr(2) : host;
  if (r.target_kind == NetworkRule::TargetKind::kHost) return !wildcard && r.target == name;
  if (r.target_kind == NetworkRule::TargetKind::kDomainSuffix) {
    // *.d covers the names below d; the allow entry's names are all below r.target.
    if (!wildcard && name.size() > r.target.size() && name.ends_with("." + r.target)) return true;
    return wildcard && (name == r.target || name.ends_with("." + r.target));
  }
  return false;
}

bool RuleCoversHttps(const NetworkRule& r) {
  if (r.direction != NetworkRule::Direction::kEgress) return false;
  if (r.protocol != Protocol::kTcp && r.protocol != Protocol::kAny) return false;
  if (r.ports.empty()) return true;
  for (const PortRange& p : r.ports) {
    if (p.first <= 443 && 443 <= p.last) return true;
  }
  return false;
}

// Whether the sandbox's network could ever let a TLS connection to `host`
// through: the first rule that names it decides; else the profile (public
// and any reach public addresses; none and group only through an allow rule,
// by name or by address, since a name may resolve into an allowed range).
bool SecretHostReachable(const Network& n, const std::string& host) {
  bool address_rule = false;
  for (const NetworkRule& r : n.rules) {
    if (!RuleCoversHttps(r)) continue;
    if (RuleCoversHost(r, host)) return r.action == NetworkRule::Action::kAllow;
    if (r.action == NetworkRule::Action::kAllow &&
        (r.target_kind == NetworkRule::TargetKind::kIp || r.target_kind == NetworkRule::TargetKind::kCidr)) {
      address_rule = true;
    }
  }
  if (n.policy == NetworkPolicy::kPublic || n.policy == NetworkPolicy::kAny) return true;
  return address_rule;
}

void LoadSecrets(Ctx& ctx, const Field& f, Sandbox* sb) {
  for (const Field& e : ctx.Entries(f.value, f.path, f.pos)) {
    const std::string& name = e.key.Scalar();
    if (!IsEnvName(name)) {
      ctx.Error(PosOf(e.key), e.path, "invalid variable name \"" + name +
                                          "\" (letters, digits and '_', not starting with a digit)");
      continue;
    }
    if (!ctx.ExpectMap(e, "a map with from_env or from_file, allow, inject")) continue;
    std::vector<Field> s = ctx.ReadMap(e.value, e.path, e.pos, kSecretKeys);
    Secret secret;
    bool ok = true;
    if (s[kSecFromEnv].present == s[kSecFromFile].present) {
      ctx.Error(e.pos, e.path, "needs exactly one of from_env and from_file");
      ok = false;
    } else if (s[kSecFromEnv].present) {
      auto v = ctx.Scalar(s[kSecFromEnv], "a variable name");
      if (v && !IsEnvName(*v)) {
        ctx.Error(s[kSecFromEnv].pos, s[kSecFromEnv].path, "invalid variable name \"" + *v + "\"");
        v.reset();
      }
      if (!v) ok = false;
      else secret.from = *v;
      secret.source = Secret::Source::kEnv;
    } else {
      auto v = ctx.Scalar(s[kSecFromFile], "a host file path");
      std::optional<std::string> abs;
      if (v && v->empty()) ctx.Error(s[kSecFromFile].pos, s[kSecFromFile].path, "the path is empty");
      else if (v) {
        auto r = ResolveHostPath(*v, ctx.base_dir(), ctx.home());
        if (r.ok()) abs = *r;
        else ctx.Error(s[kSecFromFile].pos, s[kSecFromFile].path, r.error().message());
      }
      if (!abs) ok = false;
      else secret.from = *abs;
      secret.source = Secret::Source::kFile;
    }
    if (!s[kSecAllow].present) {
      ctx.Error(e.pos, e.path, "missing required key \"allow\" (the hosts this secret may be sent to)");
      ok = false;
    } else if (auto hosts = ctx.StringList(s[kSecAllow], "host names")) {
      if (hosts->empty()) {
        ctx.Error(s[kSecAllow].pos, s[kSecAllow].path,
                  "the allow list is empty: name the hosts this secret may be sent to");
        ok = false;
      }
      for (const std::string& h : *hosts) {
        bool wildcard = h.rfind("*.", 0) == 0;
        auto host = CanonicalHostName(wildcard ? h.substr(2) : h);
        if (!host) {
          ctx.Error(s[kSecAllow].pos, s[kSecAllow].path,
                    "\"" + h + "\" is not a host name or *.domain");
          ok = false;
          continue;
        }
        std::string entry = wildcard ? "*." + *host : *host;
        if (!SecretHostReachable(sb->network, entry)) {
          ctx.Error(s[kSecAllow].pos, s[kSecAllow].path,
                    "secret " + name + " may go to " + entry + ", but network policy " +
                        ToString(sb->network.policy) +
                        " and its rules never let the sandbox reach it over HTTPS: add a rule such as "
                        "allow@" + entry + ":tcp:443, or drop the host");
          ok = false;
        }
        secret.allow.push_back(std::move(entry));
      }
    } else {
      ok = false;
    }
    const Field& inject = s[kSecInject];
    if (inject.present && ctx.ExpectMap(inject, "a map with headers, basic_auth, query, body")) {
      std::vector<Field> in = ctx.ReadMap(inject.value, inject.path, inject.pos, kInjectKeys);
      bool* flags[] = {&secret.inject_headers, &secret.inject_basic_auth, &secret.inject_query,
                       &secret.inject_body};
      for (size_t i = 0; i < in.size(); ++i) {
        if (!in[i].present) continue;
        if (auto b = ctx.Bool(in[i])) *flags[i] = *b;
      }
    }
    if (sb->envs.count(name)) {
      ctx.Error(PosOf(e.key), e.path, "variable " + name + " is both a secret and in envs; keep one");
      ok = false;
    }
    if (ok) sb->secrets[name] = std::move(secret);
  }
}

}  // namespace

Meta LoadMeta(Ctx& ctx, const Field& f) {
  constexpr size_t kAuthors = KeyIndex(kMetaKeys, "authors"), kTags = KeyIndex(kMetaKeys, "tags");
  Meta meta;
  if (!ctx.ExpectMap(f, "a map")) return meta;
  std::vector<Field> m = ctx.ReadMap(f.value, f.path, f.pos, kMetaKeys);
  if (m[kAuthors].present) meta.authors = ctx.StringList(m[kAuthors], "strings").value_or(std::vector<std::string>{});
  std::pair<size_t, std::string*> strings[] = {{KeyIndex(kMetaKeys, "description"), &meta.description},
                                               {KeyIndex(kMetaKeys, "homepage"), &meta.homepage},
                                               {KeyIndex(kMetaKeys, "repository"), &meta.repository},
                                               {KeyIndex(kMetaKeys, "readme"), &meta.readme},
                                               {KeyIndex(kMetaKeys, "icon"), &meta.icon}};
  for (auto [i, out] : strings) {
    if (m[i].present) *out = ctx.Scalar(m[i], "a string").value_or("");
  }
  if (m[kTags].present) meta.tags = ctx.StringList(m[kTags], "strings").value_or(std::vector<std::string>{});
  return meta;
}

std::optional<Sandbox> LoadSandbox(Ctx& ctx, const Field& f, const std::string& name) {
  Sandbox sb;
  sb.name = name;
  sb.pos = PosOf(f.key);
  if (!f.value.IsMap()) {
    ctx.Error(f.pos, f.path, std::string("expected a map with image, memory, ... , got ") + TypeName(f.value));
    return std::nullopt;
  }
  std::vector<Field> k = ctx.ReadMap(f.value, f.path, f.pos, kSandboxKeys);

  if (k[kShell].present) {
    auto s = ctx.Scalar(k[kShell], "a shell path like /bin/sh");
    if (s && s->empty()) ctx.Error(k[kShell].pos, k[kShell].path, "the shell is empty");
    else if (s) sb.shell = *s;
  }
  if (!k[kImage].present) {
    ctx.Error(sb.pos, f.path, "missing required key \"image\"");
  } else if (auto s = ctx.Scalar(k[kImage], "an image reference or directory")) {
    auto img = ParseImage(*s, ctx.base_dir(), ctx.home());
    if (img.ok()) sb.image = std::move(*img);
    else ctx.Error(k[kImage].pos, k[kImage].path, img.error().message());
  }
  if (k[kCpus].present) {
    if (auto v = ctx.Int(k[kCpus], kSandboxKeys[kCpus].value)) sb.cpus = static_cast<int>(*v);
  }
  if (k[kMemory].present) {
    if (auto v = ctx.Size(k[kMemory], kSandboxKeys[kMemory].value)) {
      if (*v % kMiB != 0) {
        ctx.Error(k[kMemory].pos, k[kMemory].path, "memory must be a whole number of MiB");
      } else {
        sb.memory = *v;
      }
    }
  }
  if (k[kDisk].present) {
    if (auto v = ctx.Size(k[kDisk], kSandboxKeys[kDisk].value)) sb.disk = *v;
  }
  if (k[kEphemeral].present) {
    if (auto v = ctx.Bool(k[kEphemeral])) sb.ephemeral = *v;
  }
  if (k[kUser].present) {
    if (auto s = ctx.Scalar(k[kUser], "a user like 1000:1000 or name")) {
      if (IsUser(*s)) sb.user = *s;
      else ctx.Error(k[kUser].pos, k[kUser].path, "expected uid[:gid] or name[:group], got \"" + *s + "\"");
    }
  }
  if (k[kWorkdir].present) {
    if (auto s = ctx.Scalar(k[kWorkdir], "an absolute guest path")) {
      auto p = NormalizeGuestPath(*s);
      if (p.ok()) sb.workdir = *p;
      else ctx.Error(k[kWorkdir].pos, k[kWorkdir].path, p.error().message());
    }
  }
  if (k[kCommand].present) {
    if (auto c = ctx.Command(k[kCommand], sb.shell)) sb.command = std::move(*c);
  }
  if (k[kScripts].present) {
    for (const Field& e : ctx.Entries(k[kScripts].value, k[kScripts].path, k[kScripts].pos)) {
      if (!IsScriptName(e.key.Scalar())) {
        ctx.Error(PosOf(e.key), e.path, "script names are letters, digits, '_', '.' and '-'");
        continue;
      }
      // Shell text for the guest, as microsandbox runs it: $HOME is the guest's.
      ctx.BeginVerbatim();
      auto c = ctx.Command(e, sb.shell);
      ctx.EndVerbatim();
      if (c) sb.scripts[e.key.Scalar()] = std::move(*c);
    }
  }
  if (sb.command.empty() && sb.scripts.count("start")) sb.command = sb.scripts["start"];
  if (k[kEnvs].present) LoadEnvs(ctx, k[kEnvs], &sb);
  std::vector<std::string> mount_paths;
  if (k[kVolumes].present) LoadVolumes(ctx, k[kVolumes], &sb, &mount_paths);
  for (const Field& item : ctx.Items(k[kTmpfs])) {
    auto s = ctx.Scalar(item, "GUEST_PATH[:size=SIZE]");
    if (!s) continue;
    auto t = ParseTmpfs(*s);
    if (!t.ok()) {
      ctx.Error(item.pos, item.path, t.error().message());
      continue;
    }
    t->pos = item.pos;
    if (t->size == 0) t->size = sb.memory / 2;
    sb.tmpfs.push_back(*t);
    mount_paths.push_back(item.path);
  }
  // Two mounts on one guest path: the second would hide the first.
  std::map<std::string, std::string> targets;
  auto claim = [&](const std::string& target, Pos pos, const std::string& path) {
    auto [it, fresh] = targets.emplace(target, path);
    if (!fresh) ctx.Error(pos, path, "guest path " + target + " is already mounted by " + it->second);
  };
  for (size_t i = 0; i < sb.volumes.size(); ++i) claim(sb.volumes[i].target, sb.volumes[i].pos, mount_paths[i]);
  for (size_t i = 0; i < sb.tmpfs.size(); ++i) {
    claim(sb.tmpfs[i].target, sb.tmpfs[i].pos, mount_paths[sb.volumes.size() + i]);
  }
  for (const Field& item : ctx.Items(k[kPorts])) {
    auto s = ctx.Scalar(item, "[ip:]host:guest[/tcp|udp]");
    if (!s) continue;
    auto p = ParsePortMapping(*s);
    if (!p.ok()) {
      ctx.Error(item.pos, item.path, p.error().message());
      continue;
    }
    p->pos = item.pos;
    ctx.ports.push_back({sb.name, item.path, item.pos, *p});
    sb.ports.push_back(*p);
  }
  if (k[kDependsOn].present) LoadDependsOn(ctx, k[kDependsOn], &sb);
  if (k[kHealthcheck].present) sb.healthcheck = LoadHealthcheck(ctx, k[kHealthcheck], sb.shell);
  if (k[kRestart].present) {
    if (auto s = ctx.Scalar(k[kRestart], "no, always, on-failure[:N] or unless-stopped")) {
      auto r = ParseRestart(*s);
      if (r.ok()) sb.restart = *r;
      else ctx.Error(k[kRestart].pos, k[kRestart].path, r.error().message());
    }
  }
  if (k[kBoot].present) {
    if (auto s = ctx.Scalar(k[kBoot], "auto or cold")) {
      if (*s == "cold") sb.cold_boot = true;
      else if (*s != "auto") ctx.Error(k[kBoot].pos, k[kBoot].path, "boot: expected auto or cold, not \"" + *s + "\"");
    }
  }
  // Before the network: level strict makes policy none where the file names none.
  if (k[kSecurity].present) LoadSecurity(ctx, k[kSecurity], &sb);
  if (sb.security.read_only_root && k[kDisk].present) {
    ctx.Warning(k[kDisk].pos, k[kDisk].path,
                "disk has no effect with security.read_only_root: there is no writable layer");
  }
  LoadNetwork(ctx, k[kNetwork], &sb, k[kScope]);
  if (k[kSecrets].present) LoadSecrets(ctx, k[kSecrets], &sb);
  if (k[kLogs].present && ctx.ExpectMap(k[kLogs], "a map with max_size")) {
    std::vector<Field> lk = ctx.ReadMap(k[kLogs].value, k[kLogs].path, k[kLogs].pos, kLogsKeys);
    if (lk[0].present) {
      if (auto v = ctx.Size(lk[0], kLogsKeys[0].value)) sb.logs.max_size = *v;
    }
  }
  if (k[kMeta].present) sb.meta = LoadMeta(ctx, k[kMeta]);
  if (k[kVersion].present) ctx.Scalar(k[kVersion], "a version string");
  for (size_t key : {kImports, kExports}) {
    if (k[key].present) {
      ctx.Error(PosOf(k[key].key), k[key].path,
                std::string(kSandboxKeys[key].name) +
                    " is not supported: it moves files between microsandbox builds, and msb does not implement builds");
    }
  }
  return sb;
}

}  // namespace msb::schema::internal

namespace msb::schema {

Result<std::pair<std::string, Secret>> ParseSecretFlag(std::string_view text, const Network& network,
                                                       const std::string& cwd, const std::string& home) {
  const std::string usage = "expected VAR=env:HOSTVAR@host[,host...] or VAR=file:PATH@host[,host...]";
  std::string flag(text);
  size_t eq = flag.find('=');
  size_t colon = eq == std::string::npos ? std::string::npos : flag.find(':', eq);
  size_t at = flag.rfind('@');
  if (eq == std::string::npos || colon == std::string::npos || at == std::string::npos || at < colon) {
    return Error(ErrorCode::kInvalidArgument, "--secret " + flag + ": " + usage);
  }
  std::string name = flag.substr(0, eq), source = flag.substr(eq + 1, colon - eq - 1);
  std::string from = flag.substr(colon + 1, at - colon - 1), hosts = flag.substr(at + 1);
  auto fail = [&](const std::string& why) {
    return Error(ErrorCode::kInvalidArgument, "--secret " + flag + ": " + why);
  };
  if (!IsEnvName(name)) return fail("invalid variable name \"" + name + "\"");
  Secret secret;
  if (source == "env") {
    if (!IsEnvName(from)) return fail("invalid host variable name \"" + from + "\"");
    secret.source = Secret::Source::kEnv;
    secret.from = from;
  } else if (source == "file") {
    if (from.empty()) return fail("the path is empty");
    auto abs = ResolveHostPath(from, cwd, home);
    if (!abs.ok()) return fail(abs.error().message());
    secret.source = Secret::Source::kFile;
    secret.from = *abs;
  } else {
    return fail("unknown source \"" + source + "\"; " + usage);
  }
  size_t start = 0;
  while (start <= hosts.size()) {
    size_t comma = hosts.find(',', start);
    std::string h = hosts.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    bool wildcard = h.rfind("*.", 0) == 0;
    auto host = CanonicalHostName(wildcard ? h.substr(2) : h);
    if (!host) return fail("\"" + h + "\" is not a host name or *.domain");
    std::string entry = wildcard ? "*." + *host : *host;
    if (!internal::SecretHostReachable(network, entry)) {
      return fail("the sandbox's network (" + std::string(ToString(network.policy)) +
                  ") never reaches " + entry + " over HTTPS: add --net-rule allow@" + entry + ":tcp:443");
    }
    secret.allow.push_back(std::move(entry));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return std::make_pair(name, secret);
}

}  // namespace msb::schema
