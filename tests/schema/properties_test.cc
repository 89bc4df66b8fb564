// Property tests (RapidCheck) for the canonical form and the config hash.
// A random Sandboxfile is generated as a tree, rendered to YAML text with a
// random style (key order, indentation, flow or block, quoting, comments),
// and loaded:
//   - canonical YAML -> load -> the same canonical JSON and hashes;
//   - another style of the same tree -> the same hashes;
//   - changing a field the hash covers changes that sandbox's hash;
//   - changing depends_on, restart, healthcheck or meta does not.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <random>

#include "schema/sandboxfile.h"
#include "schema/values.h"

namespace msb::schema {
namespace {

// A YAML document as a tree of scalars (source text), lists and maps.
struct Y {
  enum class Kind { kScalar, kSeq, kMap };
  Kind kind = Kind::kScalar;
  std::string scalar;
  std::vector<Y> items;
  std::vector<std::pair<std::string, Y>> entries;

  static Y S(std::string s) {
    Y y;
    y.scalar = std::move(s);
    return y;
  }
  static Y Seq(std::vector<Y> items = {}) {
    Y y;
    y.kind = Kind::kSeq;
    y.items = std::move(items);
    return y;
  }
  static Y Map() {
    Y y;
    y.kind = Kind::kMap;
    return y;
  }
  void Set(const std::string& key, Y value) {
    for (auto& [k, v] : entries) {
      if (k == key) {
        v = std::move(value);
        return;
      }
    }
    entries.emplace_back(key, std::move(value));
  }
  void Erase(const std::string& key) {
    entries.erase(std::remove_if(entries.begin(), entries.end(), [&](const auto& e) { return e.first == key; }),
                  entries.end());
  }
  Y* Find(const std::string& key) {
    for (auto& [k, v] : entries) {
      if (k == key) return &v;
    }
    return nullptr;
  }
};

// How one rendering looks. Nothing here may change what the file means.
class Renderer {
 public:
  explicit Renderer(uint32_t seed) : rng_(seed) {
    indent_ = Coin() ? 2 : 4;
    shuffle_ = Coin();
  }

  std::string Render(const Y& root) {
    std::string out;
    if (Coin()) out += "# generated\n";
    BlockMap(root, 0, &out);
    return out;
  }

 private:
  bool Coin() { return (rng_() & 1) != 0; }
  bool OneIn(int n) { return rng_() % static_cast<uint32_t>(n) == 0; }

  static bool PlainSafe(const std::string& s, bool in_flow) {
    if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return false;
    if (s[0] == '-' || s[0] == '@' || s[0] == '.' || s[0] == ':') return false;
    if (s.back() == ':') return false;
    for (size_t i = 0; i < s.size(); ++i) {
      char c = s[i];
      bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '/' || c == '=' ||
                c == '+' || c == '-' || c == '@' || c == '~';
      if (c == ':' && !in_flow && i + 1 < s.size() && s[i + 1] != ' ') ok = true;
      if (!ok) return false;
    }
    return true;
  }

  static std::string DoubleQuoted(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\t': out += "\\t"; break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(c));
            out += buf;
          } else {
            out += c;
          }
      }
    }
    return out + "\"";
  }

  std::string Scalar(const std::string& s, bool in_flow) {
    if (PlainSafe(s, in_flow) && !OneIn(4)) return s;
    if (s.find_first_of("'\n\t\\") == std::string::npos && OneIn(3)) return "'" + s + "'";
    return DoubleQuoted(s);
  }

  std::string Flow(const Y& y) {
    switch (y.kind) {
      case Y::Kind::kScalar: return Scalar(y.scalar, true);
      case Y::Kind::kSeq: {
        std::string out = "[";
        for (size_t i = 0; i < y.items.size(); ++i) out += (i ? ", " : "") + Flow(y.items[i]);
        return out + "]";
      }
      case Y::Kind::kMap: {
        std::string out = "{";
        auto entries = Ordered(y);
        for (size_t i = 0; i < entries.size(); ++i) {
          out += (i ? ", " : "") + Scalar(entries[i]->first, true) + ": " + Flow(entries[i]->second);
        }
        return out + "}";
      }
    }
    return "";
  }

  std::vector<const std::pair<std::string, Y>*> Ordered(const Y& y) {
    std::vector<const std::pair<std::string, Y>*> out;
    for (const auto& e : y.entries) out.push_back(&e);
    if (shuffle_) std::shuffle(out.begin(), out.end(), rng_);
    return out;
  }

  void BlockMap(const Y& y, int level, std::string* out) {
    std::string pad(static_cast<size_t>(level), ' ');
    for (const auto* e : Ordered(y)) {
      if (OneIn(8)) *out += pad + "# a comment line\n";
      *out += pad + Scalar(e->first, false) + ":";
      Value(e->second, level, out);
    }
  }

  // Writes ": value" remainder (after the key) for a map entry.
  void Value(const Y& v, int level, std::string* out) {
    bool empty = v.kind != Y::Kind::kScalar && v.items.empty() && v.entries.empty();
    if (v.kind == Y::Kind::kScalar || empty || OneIn(3)) {
      *out += " " + Flow(v) + (OneIn(6) ? "   # trailing comment" : "") + "\n";
      return;
    }
    *out += "\n";
    if (v.kind == Y::Kind::kMap) {
      BlockMap(v, level + indent_, out);
      return;
    }
    std::string pad(static_cast<size_t>(level + indent_), ' ');
    for (const Y& item : v.items) *out += pad + "- " + Flow(item) + "\n";
  }

  std::mt19937 rng_;
  int indent_ = 2;
  bool shuffle_ = false;
};

// --- generators -------------------------------------------------------------

bool Chance(int percent) { return *rc::gen::inRange(0, 100) < percent; }

template <typename T>
T Pick(const std::vector<T>& v) {
  return *rc::gen::elementOf(v);
}

// Text that stresses quoting and interpolation: source form ("$$", "${TAG}").
std::string TrickyText() {
  static const std::vector<std::string> kPieces = {
      "a", "b c", "word", ":", ": ", " #", "#", ",", "[", "]", "{", "}", "'", "\"", "\\", "$$", "${TAG}",
      "${UNSET:-d}", "\n", "\t", "\xc3\xa9", "-", "?", "*", "&", "!", "|", ">", "%", "@", "`", "null",
      "yes", "~", " ", "0x1F", "1.5"};
  int n = *rc::gen::inRange(0, 6);
  std::string out;
  for (int i = 0; i < n; ++i) out += Pick(kPieces);
  return out;
}

Y Command() {
  if (Chance(50)) return Y::S("run " + TrickyText());
  std::vector<Y> argv;
  int n = *rc::gen::inRange(1, 4);
  for (int i = 0; i < n; ++i) argv.push_back(Y::S(i == 0 ? "/bin/prog" : TrickyText()));
  return Y::Seq(argv);
}

const std::vector<std::string> kPolicies = {"none", "group", "public", "any"};

Y GenSandbox(int index, const std::vector<std::string>& earlier, const std::vector<std::string>& volumes) {
  Y sb = Y::Map();
  sb.Set("image", Y::S(Pick<std::string>({"alpine", "alpine:3.19", "./rootfs", "/srv/rootfs", "ghcr.io/o/app:v1",
                                          "docker.io/library/busybox@sha256:" + std::string(64, 'a'),
                                          "oci-layout:./layout:v2", "snapshot:snap1", "localhost:5000/x/y:1",
                                          "alpine:${TAG}"})));
  if (Chance(50)) sb.Set("cpus", Y::S(std::to_string(*rc::gen::inRange(1, 9))));
  if (Chance(50)) sb.Set("memory", Y::S(Pick<std::string>({"256M", "1G", "1.5G", "512", "2048", "768MiB"})));
  if (Chance(30)) sb.Set("disk", Y::S(Pick<std::string>({"1G", "4G", "2048M", "10G"})));
  if (Chance(30)) sb.Set("ephemeral", Y::S(Chance(50) ? "true" : "false"));
  if (Chance(30)) sb.Set("user", Y::S(Pick<std::string>({"1000", "1000:1000", "app", "nobody:nogroup"})));
  if (Chance(30)) sb.Set("workdir", Y::S(Pick<std::string>({"/app", "/work/x/", "/srv//data"})));
  if (Chance(30)) sb.Set("shell", Y::S(Pick<std::string>({"/bin/sh", "/bin/bash"})));
  if (Chance(40)) sb.Set("command", Command());
  if (Chance(30)) {
    Y scripts = Y::Map();
    for (const char* name : {"start", "test", "migrate"}) {
      if (Chance(50)) scripts.Set(name, Command());
    }
    sb.Set("scripts", scripts);
  }
  if (Chance(50)) {
    std::vector<std::string> keys = {"A", "B", "LOG_LEVEL", "_X", "PATH2"};
    bool as_list = Chance(50);
    Y envs = as_list ? Y::Seq() : Y::Map();
    for (const std::string& k : keys) {
      if (!Chance(50)) continue;
      if (as_list) envs.items.push_back(Y::S(k + "=" + TrickyText()));
      else envs.Set(k, Y::S(TrickyText()));
    }
    sb.Set("envs", envs);
  }
  if (Chance(40)) {
    Y vols = Y::Seq();
    int n = *rc::gen::inRange(0, 4);
    for (int i = 0; i < n; ++i) {
      std::string target = "/mnt/m" + std::to_string(i);
      std::string mode = Pick<std::string>({"", ":ro", ":rw"});
      // Named volumes read-only: any number of mounts of one volume stays valid.
      if (!volumes.empty() && Chance(40)) vols.items.push_back(Y::S(Pick(volumes) + ":" + target + ":ro"));
      else vols.items.push_back(Y::S(Pick<std::string>({"./src", "/data/x", "../up", "~/home-dir"}) + ":" + target + mode));
    }
    sb.Set("volumes", vols);
  }
  if (Chance(30)) {
    Y tmpfs = Y::Seq();
    int n = *rc::gen::inRange(0, 3);
    for (int i = 0; i < n; ++i) {
      tmpfs.items.push_back(Y::S("/tmp" + std::to_string(i) + Pick<std::string>({"", ":size=64M", ":mode=755", ":size=1G,mode=700"})));
    }
    sb.Set("tmpfs", tmpfs);
  }
  if (Chance(40)) {
    Y ports = Y::Seq();
    int n = *rc::gen::inRange(0, 3);
    for (int i = 0; i < n; ++i) {
      std::string host = std::to_string(10000 + index * 100 + i);
      std::string ip = Pick<std::string>({"", "127.0.0.1:", "0.0.0.0:", "[::1]:"});
      ports.items.push_back(Y::S(ip + host + ":" + std::to_string(*rc::gen::inRange(1, 65536)) +
                                 Pick<std::string>({"", "/tcp", "/udp"})));
    }
    sb.Set("ports", ports);
  }
  if (!earlier.empty() && Chance(50)) {
    if (Chance(50)) {
      Y deps = Y::Seq();
      for (const std::string& e : earlier) {
        if (Chance(50)) deps.items.push_back(Y::S(e));
      }
      sb.Set("depends_on", deps);
    } else {
      Y deps = Y::Map();
      for (const std::string& e : earlier) {
        if (!Chance(50)) continue;
        Y cond = Y::Map();
        cond.Set("condition", Y::S(Pick<std::string>({"started", "completed"})));
        deps.Set(e, cond);
      }
      sb.Set("depends_on", deps);
    }
  }
  if (Chance(40)) {
    Y hc = Y::Map();
    hc.Set("command", Command());
    if (Chance(50)) hc.Set("interval", Y::S(Pick<std::string>({"5s", "1m30s", "500ms", "1.5s"})));
    if (Chance(50)) hc.Set("timeout", Y::S(Pick<std::string>({"2s", "100ms"})));
    if (Chance(50)) hc.Set("retries", Y::S(std::to_string(*rc::gen::inRange(1, 10))));
    if (Chance(50)) hc.Set("start_period", Y::S(Pick<std::string>({"0s", "10s"})));
    sb.Set("healthcheck", hc);
  }
  if (Chance(40)) sb.Set("restart", Y::S(Pick<std::string>({"no", "always", "on-failure", "on-failure:3", "unless-stopped"})));
  if (Chance(25)) {
    // Explicit fields only: level strict would change the network's default
    // profile under the generated secrets.
    Y sec = Y::Map();
    if (Chance(50)) sec.Set("read_only_root", Y::S(Chance(50) ? "true" : "false"));
    if (Chance(50)) sec.Set("no_new_privileges", Y::S(Chance(50) ? "true" : "false"));
    if (Chance(50)) sec.Set("cap_drop", Y::Seq({Y::S(Pick<std::string>({"ALL", "net_raw", "CAP_SYS_ADMIN"}))}));
    if (Chance(50)) sec.Set("cap_add", Y::Seq({Y::S(Pick<std::string>({"KILL", "cap_net_bind_service"}))}));
    sb.Set("security", sec);
  }
  std::string policy = Pick(kPolicies);
  bool policy_set = false;  // else the default, public
  if (Chance(20)) {
    sb.Set("scope", Y::S(policy));
    policy_set = true;
  }
  if (Chance(50)) {
    Y net = Y::Map();
    if (Chance(50)) {
      net.Set("policy", Y::S(policy));
      policy_set = true;
    }
    if (Chance(60)) {
      Y rules = Y::Seq();
      int n = *rc::gen::inRange(0, 4);
      for (int i = 0; i < n; ++i) {
        rules.items.push_back(Y::S(Pick<std::string>({"allow@api.github.com:tcp:443", "deny@*.ads.example.com",
                                                      "allow@10.1.2.0/24:tcp:5432", "allow:ingress@group:tcp:80",
                                                      "deny:egress@[2001:db8::/32]", "allow@db:udp:53,5353",
                                                      "allow@1.2.3.4:icmp", "allow@any:any:8000-8100"})));
      }
      net.Set("rules", rules);
    }
    if (Chance(40)) {
      Y dns = Y::Map();
      if (Chance(50)) dns.Set("servers", Y::Seq({Y::S("1.1.1.1"), Y::S("2606:4700::1111")}));
      if (Chance(50)) dns.Set("rebind_protection", Y::S(Chance(50) ? "true" : "false"));
      net.Set("dns", dns);
    }
    sb.Set("network", net);
  }
  // A secret's hosts must be reachable (schema/sandbox.cc): under none and
  // group no generated rule opens 443 to them.
  bool public_names = !policy_set || policy == "public" || policy == "any";
  if (public_names && Chance(30)) {
    Y secrets = Y::Map();
    int n = *rc::gen::inRange(1, 3);
    for (int i = 0; i < n; ++i) {
      Y s = Y::Map();
      if (Chance(50)) s.Set("from_env", Y::S("HOST_VAR_" + std::to_string(i)));
      else s.Set("from_file", Y::S("./secret" + std::to_string(i) + ".txt"));
      s.Set("allow", Y::Seq({Y::S(Pick<std::string>({"api.github.com", "*.example.com", "h.test"}))}));
      if (Chance(50)) {
        Y inject = Y::Map();
        for (const char* f : {"headers", "basic_auth", "query", "body"}) {
          if (Chance(50)) inject.Set(f, Y::S(Chance(50) ? "true" : "false"));
        }
        s.Set("inject", inject);
      }
      secrets.Set("SECRET_" + std::to_string(i), s);
    }
    sb.Set("secrets", secrets);
  }
  if (Chance(20)) {
    Y meta = Y::Map();
    meta.Set("description", Y::S(TrickyText()));
    sb.Set("meta", meta);
  }
  return sb;
}

const std::vector<std::string> kNames = {"web", "db", "cache-1", "worker_2", "a0"};

struct Spec {
  Y root;
  std::vector<std::string> names;
};

Spec GenSpec() {
  Spec spec;
  spec.root = Y::Map();
  if (Chance(50)) spec.root.Set("name", Y::S(Pick<std::string>({"shop", "p-1", "x_y"})));
  std::vector<std::string> volumes;
  Y vols = Y::Map();
  for (const char* v : {"cache", "data"}) {
    if (!Chance(50)) continue;
    volumes.push_back(v);
    Y decl = Y::Map();
    if (Chance(50)) decl.Set("size", Y::S(Pick<std::string>({"1G", "20G", "512M"})));
    vols.Set(v, decl);
  }
  if (Chance(80)) spec.root.Set("volumes", vols);
  else volumes.clear();
  int n = *rc::gen::inRange(1, static_cast<int>(kNames.size()) + 1);
  Y sandboxes = Y::Map();
  for (int i = 0; i < n; ++i) {
    sandboxes.Set(kNames[i], GenSandbox(i, spec.names, volumes));
    spec.names.push_back(kNames[i]);
  }
  spec.root.Set("sandboxes", sandboxes);
  if (Chance(20)) spec.root.Set("x-extension", Y::S("ignored"));
  return spec;
}

Env PropEnv() { return Env{{"HOME", "/home/u"}, {"TAG", "v1"}}; }

std::optional<Project> Load(const std::string& text, const std::string& path = "/proj/Sandboxfile") {
  auto p = ParseSandboxfile(text, path, PropEnv());
  if (!p.ok()) {
    RC_LOG() << "failed to load:\n" << text << "\n" << p.error().message() << "\n";
    return std::nullopt;
  }
  return std::move(p).value();
}

std::map<std::string, std::string> Hashes(const Project& p) {
  std::map<std::string, std::string> out;
  for (const auto& [name, sb] : p.sandboxes) out[name] = ConfigHash(sb);
  return out;
}

RC_GTEST_PROP(SchemaProperties, CanonicalYamlLoadsBackToTheSameHashes, ()) {
  Spec spec = GenSpec();
  std::string text = Renderer(*rc::gen::arbitrary<uint32_t>()).Render(spec.root);
  auto p = Load(text);
  RC_ASSERT(p.has_value());
  std::string canonical = CanonicalYaml(*p);
  auto again = Load(canonical, "/somewhere/else/Sandboxfile");
  RC_ASSERT(again.has_value());
  RC_ASSERT(CanonicalJson(*again) == CanonicalJson(*p));
  RC_ASSERT(Hashes(*again) == Hashes(*p));
  RC_ASSERT(CanonicalYaml(*again) == canonical);
}

RC_GTEST_PROP(SchemaProperties, HashIgnoresKeyOrderCommentsAndStyle, ()) {
  Spec spec = GenSpec();
  std::string one = Renderer(*rc::gen::arbitrary<uint32_t>()).Render(spec.root);
  std::string two = Renderer(*rc::gen::arbitrary<uint32_t>()).Render(spec.root);
  auto a = Load(one);
  auto b = Load(two);
  RC_ASSERT(a.has_value());
  RC_ASSERT(b.has_value());
  RC_ASSERT(Hashes(*a) == Hashes(*b));
}

// Sets a key the hash covers to a value that differs from the current one.
void MutateCovered(Y* sb, const Sandbox& now, int which, int index) {
  switch (which) {
    case 0: sb->Set("cpus", Y::S(std::to_string(now.cpus % 8 + 1))); break;
    case 1: sb->Set("memory", Y::S(FormatSize(now.memory + 64 * kMiB))); break;
    case 2: sb->Set("disk", Y::S(FormatSize(now.disk + kGiB))); break;
    case 3: sb->Set("ephemeral", Y::S(now.ephemeral ? "false" : "true")); break;
    case 4: sb->Set("image", Y::S("mutated/image:v1")); break;
    case 5: {
      Y envs = Y::Map();
      envs.Set("MUTATED", Y::S("1"));
      sb->Set("envs", envs);
      break;
    }
    case 6: sb->Set("command", Y::Seq({Y::S("mutated"), Y::S("cmd")})); break;
    case 7: sb->Set("ports", Y::Seq({Y::S(std::to_string(60000 + index) + ":80")})); break;
    case 8: sb->Set("volumes", Y::Seq({Y::S("/mutated:/mutated")})); break;
    case 9: sb->Set("tmpfs", Y::Seq({Y::S("/mutated-tmp")})); break;
    case 10: {
      sb->Erase("scope");
      Y net = Y::Map();
      net.Set("policy", Y::S("none"));
      // The second rule keeps every generated secret's host reachable.
      net.Set("rules", Y::Seq({Y::S("deny@mutated.example.com"), Y::S("allow@0.0.0.0/0:tcp:443")}));
      sb->Set("network", net);
      break;
    }
    case 11: {
      Y s = Y::Map();
      s.Set("from_env", Y::S("X"));
      s.Set("allow", Y::Seq({Y::S("mutated.example.com")}));
      Y secrets = Y::Map();
      secrets.Set("MUTATED_SECRET", s);
      sb->Set("secrets", secrets);
      // Reachable whatever the base's profile (schema/sandbox.cc).
      Y net = Y::Map();
      net.Set("rules", Y::Seq({Y::S("allow@0.0.0.0/0:tcp:443")}));
      sb->Set("network", net);
      break;
    }
    case 12: sb->Set("user", Y::S("4242:4242")); break;
    case 13: sb->Set("workdir", Y::S("/mutated")); break;
    case 14: sb->Set("shell", Y::S("/bin/mutated-sh")); break;
    case 15: {
      Y scripts = Y::Map();
      scripts.Set("mutated", Y::S("x"));
      sb->Set("scripts", scripts);
      break;
    }
    case 16: {
      Y sec = Y::Map();
      sec.Set("no_new_privileges", Y::S(now.security.no_new_privileges ? "false" : "true"));
      sb->Set("security", sec);
      break;
    }
  }
}
constexpr int kCoveredMutations = 17;

RC_GTEST_PROP(SchemaProperties, ChangingACoveredFieldChangesTheHash, ()) {
  Spec spec = GenSpec();
  uint32_t seed = *rc::gen::arbitrary<uint32_t>();
  auto before = Load(Renderer(seed).Render(spec.root));
  RC_ASSERT(before.has_value());
  int index = *rc::gen::inRange(0, static_cast<int>(spec.names.size()));
  const std::string& name = spec.names[static_cast<size_t>(index)];
  int which = *rc::gen::inRange(0, kCoveredMutations);
  RC_TAG(which);
  MutateCovered(spec.root.Find("sandboxes")->Find(name), before->sandboxes.at(name), which, index);
  auto after = Load(Renderer(seed).Render(spec.root));
  RC_ASSERT(after.has_value());
  RC_ASSERT(ConfigHash(after->sandboxes.at(name)) != ConfigHash(before->sandboxes.at(name)));
  for (const std::string& other : spec.names) {
    if (other != name) RC_ASSERT(ConfigHash(after->sandboxes.at(other)) == ConfigHash(before->sandboxes.at(other)));
  }
}

RC_GTEST_PROP(SchemaProperties, DependsOnRestartAndHealthcheckLeaveTheHashAlone, ()) {
  Spec spec = GenSpec();
  uint32_t seed = *rc::gen::arbitrary<uint32_t>();
  auto before = Load(Renderer(seed).Render(spec.root));
  RC_ASSERT(before.has_value());
  int index = *rc::gen::inRange(0, static_cast<int>(spec.names.size()));
  const std::string& name = spec.names[static_cast<size_t>(index)];
  Y* sb = spec.root.Find("sandboxes")->Find(name);
  std::vector<std::string> earlier(spec.names.begin(), spec.names.begin() + index);
  int which = *rc::gen::inRange(0, 4);
  RC_TAG(which);
  switch (which) {
    case 0:
      if (earlier.empty() || Chance(30)) {
        sb->Erase("depends_on");
      } else {
        Y deps = Y::Seq();
        for (const std::string& e : earlier) deps.items.push_back(Y::S(e));
        sb->Set("depends_on", deps);
      }
      break;
    case 1: sb->Set("restart", Y::S(Pick<std::string>({"always", "on-failure:9", "unless-stopped"}))); break;
    case 2:
      if (Chance(30)) {
        sb->Erase("healthcheck");
      } else {
        Y hc = Y::Map();
        hc.Set("command", Y::Seq({Y::S("probe"), Y::S(TrickyText())}));
        hc.Set("interval", Y::S("7s"));
        sb->Set("healthcheck", hc);
      }
      break;
    case 3: {
      Y meta = Y::Map();
      meta.Set("description", Y::S("changed"));
      sb->Set("meta", meta);
      break;
    }
  }
  auto after = Load(Renderer(seed).Render(spec.root));
  RC_ASSERT(after.has_value());
  RC_ASSERT(Hashes(*after) == Hashes(*before));
}

}  // namespace
}  // namespace msb::schema
