// The Kubernetes export's workloads and Services (kube_export.h), and the
// YAML it is written as. The network policies are kube_network.cc's.
#include "orchestrator/kube_export.h"

#include <algorithm>
#include <cctype>
#include <regex>
#include <set>

#include <yaml-cpp/yaml.h>

#include "orchestrator/kube_network.h"
#include "schema/network_rule.h"
#include "schema/sandboxfile.h"
#include "schema/values.h"

namespace msb::orchestrator {

const char* ToString(PublishAs publish) {
  static constexpr const char* kNames[] = {"clusterip", "nodeport", "loadbalancer"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<int>(PublishAs::kLoadBalancer) + 1);
  return kNames[static_cast<int>(publish)];
}

const char* ToString(FqdnPolicy policy) {
  static constexpr const char* kNames[] = {"comment", "cilium"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<int>(FqdnPolicy::kCilium) + 1);
  return kNames[static_cast<int>(policy)];
}

std::string KubeObject::FileName() const {
  std::string k = kind;
  for (char& c : k) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return k + "-" + name + ".yaml";
}

namespace {

using nlohmann::json;
using schema::Sandbox;

// RFC 1123 label: what Kubernetes accepts as most names (and, starting with
// a letter, as a Service's name: RFC 1035).
bool IsDnsLabel(const std::string& s, bool letter_first) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s) {
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '-')) {
      return false;
    }
  }
  if (s.front() == '-' || s.back() == '-') return false;
  return !letter_first || std::islower(static_cast<unsigned char>(s.front()));
}

// RFC 1123 subdomain: a RuntimeClass's name.
bool IsDnsSubdomain(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    if (!IsDnsLabel(s.substr(start, dot - start), false)) return false;
    if (dot == std::string::npos) return true;
    start = dot + 1;
  }
}

// A label value: up to 63 of [A-Za-z0-9._-], alphanumeric at both ends.
bool IsLabelValue(const std::string& s) {
  if (s.size() > 63) return false;
  if (s.empty()) return true;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  }
  return std::isalnum(static_cast<unsigned char>(s.front())) && std::isalnum(static_cast<unsigned char>(s.back()));
}

std::string Where(const schema::Project& project, const schema::Pos& pos) {
  if (pos.line == 0) return project.source_path;
  return project.source_path + ":" + std::to_string(pos.line) + ":" + std::to_string(pos.column);
}

// "GITHUB_TOKEN" of sandbox web: the Secret "web-github-token".
std::string SecretName(const std::string& sandbox, const std::string& var) {
  std::string out = sandbox + "-";
  for (char c : var) out += c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Bytes as a Kubernetes quantity: the largest binary unit that divides it.
std::string Quantity(uint64_t bytes) {
  static constexpr struct {
    uint64_t unit;
    const char* suffix;
  } kUnits[] = {{1ull << 40, "Ti"}, {1ull << 30, "Gi"}, {1ull << 20, "Mi"}, {1ull << 10, "Ki"}};
  for (const auto& u : kUnits) {
    if (bytes >= u.unit && bytes % u.unit == 0) return std::to_string(bytes / u.unit) + u.suffix;
  }
  return std::to_string(bytes);
}

// Milliseconds as whole seconds, rounded up, at least 1.
int Seconds(int64_t ms) { return static_cast<int>(std::max<int64_t>(1, (ms + 999) / 1000)); }

std::optional<int64_t> Number(const std::string& s) {
  if (s.empty() || s.size() > 10 || s.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return std::stoll(s);
}

class SandboxExporter {
 public:
  SandboxExporter(const schema::Project& project, const Sandbox& sb, const KubeExportOptions& options,
                  std::vector<std::string>* errors)
      : project_(project), sb_(sb), options_(options), errors_(errors) {
    labels_ = {{kPartOfLabel, project.name}, {kNameLabel, sb.name}};
    hash_ = schema::ConfigHash(sb);
  }

  void Run(std::vector<KubeObject>* out) {
    CheckNames();
    KubeObject workload = Workload();
    out->push_back(std::move(workload));
    out->push_back(HeadlessService());
    if (!sb_.ports.empty()) out->push_back(PublishedService());
    KubeNetwork network(project_, sb_, options_);
    for (KubeObject& obj : network.Objects()) {
      obj.body["metadata"] = Metadata(obj.name);
      out->push_back(std::move(obj));
    }
    for (const std::string& w : network.warnings()) Warn(w);
  }

  std::vector<std::string>& warnings() { return warnings_; }

 private:
  void Warn(const std::string& text) { warnings_.push_back("sandbox " + sb_.name + ": " + text); }
  void AddError(const std::string& text) { errors_->push_back("sandbox " + sb_.name + ": " + text); }

  void CheckNames() {
    if (!IsDnsLabel(sb_.name, true) || sb_.name.size() > 52) {
      // 52: a StatefulSet's pods are named <name>-0 and carry a
      // controller-revision-hash label of <name>-<10 characters>.
      AddError("the name is not a Kubernetes Service name (a lower-case letter, then letters, digits and '-', "
            "at most 52, not ending in '-'); rename the sandbox");
    }
    for (const auto& m : sb_.volumes) {
      if (m.kind == schema::Mount::Kind::kVolume && !IsDnsLabel(m.source, false)) {
        AddError("volume " + m.source + " (" + Where(project_, m.pos) +
              "): not a Kubernetes name (letters, digits and '-', no '_'); rename the volume");
      }
    }
    for (const auto& [var, secret] : sb_.secrets) {
      if (!IsDnsSubdomain(SecretName(sb_.name, var))) {
        AddError("secret " + var + ": the Secret's name " + SecretName(sb_.name, var) + " is not a Kubernetes name");
      }
    }
  }

  json Metadata(const std::string& name) const {
    json m = {{"name", name}, {"labels", labels_}, {"annotations", {{kConfigHashAnnotation, hash_}}}};
    if (!options_.name_space.empty()) m["namespace"] = options_.name_space;
    return m;
  }

  std::string ImageName() {
    const auto& img = sb_.image;
    if (img.kind == schema::Image::Kind::kRegistry) return img.reference;
    std::string name = "msb.local/" + project_.name + "/" + sb_.name + ":latest";
    Warn("image " + img.reference + " is a " +
         (img.kind == schema::Image::Kind::kLocalDir    ? std::string("local root file system directory")
          : img.kind == schema::Image::Kind::kOciLayout ? std::string("local OCI layout")
                                                        : std::string("msb snapshot")) +
         ", which a cluster cannot pull; the pod names the image " + name +
         ": push the image to a registry the cluster reaches and set image: to it");
    return name;
  }

  json Resources() const {
    json r = {{"cpu", std::to_string(sb_.cpus)}, {"memory", Quantity(sb_.memory)}};
    json limits = r;
    if (!sb_.security.read_only_root && !sb_.ephemeral) limits["ephemeral-storage"] = Quantity(sb_.disk);
    return {{"requests", r}, {"limits", limits}};
  }

  json Env() const {
    json env = json::array();
    std::map<std::string, json> by_name;  // sorted by variable
    for (const auto& [k, v] : sb_.envs) by_name[k] = {{"name", k}, {"value", v}};
    for (const auto& [var, secret] : sb_.secrets) {
      by_name[var] = {{"name", var},
                      {"valueFrom", {{"secretKeyRef", {{"name", SecretName(sb_.name, var)}, {"key", var}}}}}};
    }
    for (auto& [k, v] : by_name) env.push_back(std::move(v));
    return env;
  }

  json SecurityContext() {
    json sc = json::object();
    if (!sb_.user.empty()) {
      std::string u = sb_.user, g;
      if (auto colon = u.find(':'); colon != std::string::npos) {
        g = u.substr(colon + 1);
        u = u.substr(0, colon);
      }
      auto uid = Number(u);
      auto gid = g.empty() ? std::nullopt : Number(g);
      if (uid) sc["runAsUser"] = *uid;
      if (gid) sc["runAsGroup"] = *gid;
      if (!uid || (!g.empty() && !gid)) {
        Warn("user " + sb_.user + ": Kubernetes takes numeric ids only (runAsUser, runAsGroup); write the ids "
             "(user: \"1000:1000\") or set the image's user");
      }
    }
    const auto& s = sb_.security;
    if (s.read_only_root) sc["readOnlyRootFilesystem"] = true;
    if (s.no_new_privileges) sc["allowPrivilegeEscalation"] = false;
    auto caps = [](const std::vector<std::string>& list) {
      json out = json::array();
      for (const auto& c : list) out.push_back(c.rfind("CAP_", 0) == 0 ? c.substr(4) : c);
      return out;
    };
    if (!s.cap_drop.empty() || !s.cap_add.empty()) {
      json c = json::object();
      if (!s.cap_drop.empty()) c["drop"] = caps(s.cap_drop);
      if (!s.cap_add.empty()) c["add"] = caps(s.cap_add);
      sc["capabilities"] = c;
      bool drops_all = std::find(s.cap_drop.begin(), s.cap_drop.end(), "ALL") != s.cap_drop.end();
      if (!drops_all) {
        Warn("security: cap_drop without ALL starts, under msb, from every capability; a container starts "
             "from the runtime's default set, so the pod keeps fewer capabilities than the sandbox does");
      }
    }
    return sc;
  }

  json Probe(bool liveness) const {
    const auto& h = *sb_.healthcheck;
    json p = {{"exec", {{"command", h.command}}},
              {"periodSeconds", Seconds(h.interval_ms)},
              {"timeoutSeconds", Seconds(h.timeout_ms)},
              {"failureThreshold", std::max(1, h.retries)}};
    if (liveness && h.start_period_ms > 0) p["initialDelaySeconds"] = Seconds(h.start_period_ms);
    return p;
  }

  // The pod's volumes and the container's mounts; named volumes become
  // claim templates (StatefulSet).
  void Mounts(json* pod_volumes, json* mounts, json* claims) {
    std::vector<std::string> binds;
    int host_paths = 0;
    for (const auto& m : sb_.volumes) {
      json mount = {{"mountPath", m.target}};
      if (m.read_only) mount["readOnly"] = true;
      if (m.kind == schema::Mount::Kind::kVolume) {
        mount["name"] = m.source;
        bool seen = false;
        for (const auto& c : *claims) seen |= c["metadata"]["name"] == m.source;
        if (!seen) {
          auto vol = project_.volumes.find(m.source);
          uint64_t size = vol != project_.volumes.end() ? vol->second.size : schema::kDefaultVolumeSize;
          claims->push_back({{"metadata", {{"name", m.source}, {"labels", labels_}}},
                             {"spec",
                              {{"accessModes", {"ReadWriteOnce"}},
                               {"resources", {{"requests", {{"storage", Quantity(size)}}}}}}}});
        }
      } else {
        std::string name = "host-path-" + std::to_string(host_paths++);
        mount["name"] = name;
        binds.push_back(schema::FormatMount(m) + " (" + Where(project_, m.pos) + ")");
        pod_volumes->push_back({{"name", name}, {"hostPath", {{"path", m.source}, {"type", "Directory"}}}});
        if (options_.allow_host_path) {
          Warn("bind mount " + schema::FormatMount(m) + " is a hostPath volume: the directory " + m.source +
               " must exist on the node the pod lands on" + (m.read_only ? "" : ", and the pod writes to it"));
        }
      }
      mounts->push_back(std::move(mount));
    }
    for (size_t i = 0; i < sb_.tmpfs.size(); ++i) {
      const auto& t = sb_.tmpfs[i];
      std::string name = "tmpfs-" + std::to_string(i);
      mounts->push_back({{"name", name}, {"mountPath", t.target}});
      pod_volumes->push_back({{"name", name}, {"emptyDir", {{"medium", "Memory"}, {"sizeLimit", Quantity(t.size)}}}});
      if (t.mode != 01777) Warn("tmpfs " + t.target + ": an emptyDir has no mode option; the mode is the runtime's");
    }
    if (!binds.empty() && !options_.allow_host_path) {
      std::string list;
      for (const auto& b : binds) list += (list.empty() ? "" : ", ") + b;
      AddError("bind mounts have no portable Kubernetes form: " + list +
            "; use a named volume, or --allow-host-path for hostPath volumes (the directory on the node)");
    }
  }

  json Container(json* pod_volumes, json* claims) {
    json c = {{"name", sb_.name}, {"image", ImageName()}, {"resources", Resources()}};
    if (!sb_.command.empty()) c["args"] = sb_.command;
    if (json env = Env(); !env.empty()) c["env"] = env;
    if (!sb_.workdir.empty()) c["workingDir"] = sb_.workdir;
    if (json sc = SecurityContext(); !sc.empty()) c["securityContext"] = sc;
    json mounts = json::array();
    Mounts(pod_volumes, &mounts, claims);
    if (!mounts.empty()) c["volumeMounts"] = mounts;
    if (!sb_.ports.empty()) {
      json ports = json::array();
      std::set<std::pair<int, std::string>> seen;
      for (const auto& p : sb_.ports) {
        std::string proto = p.protocol == schema::Protocol::kUdp ? "UDP" : "TCP";
        if (!seen.insert({p.guest_port, proto}).second) continue;
        ports.push_back({{"containerPort", p.guest_port}, {"protocol", proto}});
      }
      c["ports"] = ports;
    }
    if (sb_.healthcheck) {
      c["readinessProbe"] = Probe(false);
      c["livenessProbe"] = Probe(true);
      const auto& h = *sb_.healthcheck;
      Warn("healthcheck: under msb an unhealthy sandbox keeps running; the livenessProbe "
           "restarts the container after " + std::to_string(std::max(1, h.retries)) + " failures in a row");
      if (h.interval_ms % 1000 || h.timeout_ms % 1000 || h.start_period_ms % 1000) {
        Warn("healthcheck: probes count whole seconds; interval, timeout and start_period are rounded up");
      }
    }
    return c;
  }

  KubeObject Workload() {
    json pod_volumes = json::array();
    json claims = json::array();
    json container = Container(&pod_volumes, &claims);
    json pod = {{"runtimeClassName", options_.runtime_class},
                {"containers", {container}},
                {"restartPolicy", "Always"},
                // The sandbox sees the environment its file gives, and no
                // cluster credentials, as under msb.
                {"enableServiceLinks", false},
                {"automountServiceAccountToken", false}};
    if (!pod_volumes.empty()) pod["volumes"] = pod_volumes;
    RestartWarnings();
    OtherWarnings();
    json spec = {{"replicas", 1},
                 {"selector", {{"matchLabels", labels_}}},
                 {"template",
                  {{"metadata", {{"labels", labels_}, {"annotations", {{kConfigHashAnnotation, hash_}}}}},
                   {"spec", pod}}}};
    KubeObject obj;
    obj.sandbox = sb_.name;
    obj.name = sb_.name;
    if (claims.empty()) {
      obj.kind = "Deployment";
      // A replaced sandbox is stopped before its successor starts, as under msb.
      spec["strategy"] = {{"type", "Recreate"}};
    } else {
      obj.kind = "StatefulSet";
      spec["serviceName"] = sb_.name;
      spec["volumeClaimTemplates"] = claims;
    }
    for (const auto& [var, secret] : sb_.secrets) {
      obj.comments.push_back("Secret " + SecretName(sb_.name, var) + ": kubectl create secret generic " +
                             SecretName(sb_.name, var) + NamespaceFlag() + " --from-literal=" + var + "=VALUE");
      Warn("secret " + var + ": on Kubernetes the value enters the VM as the environment variable " + var +
           " (msb's supervisor keeps it on the host and puts it only into HTTPS requests to " + AllowList(secret) +
           "; nothing does that here). Create it with: kubectl create secret generic " +
           SecretName(sb_.name, var) + NamespaceFlag() + " --from-literal=" + var + "=VALUE");
    }
    obj.body = {{"apiVersion", "apps/v1"}, {"kind", obj.kind}, {"metadata", Metadata(obj.name)}, {"spec", spec}};
    return obj;
  }

  static std::string AllowList(const schema::Secret& secret) {
    std::string out;
    for (const auto& h : secret.allow) out += (out.empty() ? "" : ", ") + h;
    return out;
  }

  std::string NamespaceFlag() const {
    return options_.name_space.empty() ? "" : " -n " + options_.name_space;
  }

  void RestartWarnings() {
    using P = schema::Restart::Policy;
    if (sb_.restart.policy == P::kNo || sb_.restart.policy == P::kOnFailure) {
      Warn("restart: " + schema::ToString(sb_.restart) +
           " is not expressible: a Deployment's or StatefulSet's pods always restart (restartPolicy: Always)");
    }
  }

  void OtherWarnings() {
    if (!sb_.depends_on.empty()) {
      std::string names;
      for (const auto& [n, d] : sb_.depends_on) names += (names.empty() ? "" : ", ") + n + " (" + ToString(d.condition) + ")";
      Warn("depends_on " + names + ": Kubernetes starts workloads in no order; the workload must retry until "
           "they answer");
    }
    std::vector<std::string> scripts;
    for (const auto& [name, argv] : sb_.scripts) {
      if (name != "start" || !sb_.command.empty()) scripts.push_back(name);
    }
    if (!scripts.empty()) {
      std::string names;
      for (const auto& s : scripts) names += (names.empty() ? "" : ", ") + s;
      Warn("scripts " + names + " are not exported: run them with kubectl exec");
    }
    if (!sb_.logs.IsDefault()) {
      Warn("logs.max_size: container logs are rotated by the kubelet's own settings, not per pod");
    }
    if (!sb_.network.tls_ca.empty()) {
      Warn("network.tls.ca serves msb's secret injection, which has no counterpart here; not exported");
    }
  }

  KubeObject HeadlessService() const {
    KubeObject obj;
    obj.kind = "Service";
    obj.name = sb_.name;
    obj.sandbox = sb_.name;
    obj.body = {{"apiVersion", "v1"},
                {"kind", "Service"},
                {"metadata", Metadata(obj.name)},
                {"spec",
                 {{"clusterIP", "None"}, {"selector", labels_}, {"publishNotReadyAddresses", true}}}};
    return obj;
  }

  KubeObject PublishedService() {
    KubeObject obj;
    obj.kind = "Service";
    obj.name = sb_.name + "-published";
    obj.sandbox = sb_.name;
    json ports = json::array();
    std::set<std::pair<int, std::string>> seen;
    for (const auto& p : sb_.ports) {
      std::string proto = p.protocol == schema::Protocol::kUdp ? "UDP" : "TCP";
      if (!seen.insert({p.host_port, proto}).second) continue;
      json port = {{"name", (proto == "UDP" ? "udp-" : "tcp-") + std::to_string(p.host_port)},
                   {"port", p.host_port},
                   {"targetPort", p.guest_port},
                   {"protocol", proto}};
      if (options_.publish_as == PublishAs::kNodePort) {
        if (p.host_port >= 30000 && p.host_port <= 32767) {
          port["nodePort"] = p.host_port;
        } else {
          Warn("port " + schema::FormatPortMapping(p) + ": host port " + std::to_string(p.host_port) +
               " is outside the NodePort range 30000-32767; the cluster picks the node port");
        }
      }
      ports.push_back(port);
    }
    std::string type = options_.publish_as == PublishAs::kNodePort       ? "NodePort"
                       : options_.publish_as == PublishAs::kLoadBalancer ? "LoadBalancer"
                                                                          : "ClusterIP";
    obj.body = {{"apiVersion", "v1"},
                {"kind", "Service"},
                {"metadata", Metadata(obj.name)},
                {"spec", {{"type", type}, {"selector", labels_}, {"ports", ports}}}};
    return obj;
  }

  const schema::Project& project_;
  const Sandbox& sb_;
  const KubeExportOptions& options_;
  std::vector<std::string>* errors_;
  std::vector<std::string> warnings_;
  json labels_;
  std::string hash_;
};

// Whether a plain YAML scalar s would read back as something else than the
// string s under YAML 1.2 or 1.1 (a number, bool, null, timestamp): those are
// quoted; the emitter quotes what would not parse at all.
bool NeedsQuotes(const std::string& s) {
  if (s.empty()) return true;
  std::string lower = s;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const std::set<std::string> kWords = {"~",  "null", "true", "false", "yes",  "no",   "on",
                                               "off", "y",   "n",    ".inf",  "-.inf", "+.inf", ".nan"};
  if (kWords.count(lower)) return true;
  static const std::regex kNumber(
      "[-+]?[0-9][0-9_]*"                                 // decimal (1.1 allows '_')
      "|[-+]?0x[0-9a-f_]+|0o[0-7]+|[-+]?0b[01_]+"         // hex, octal, binary
      "|[-+]?([0-9][0-9_]*)?\\.[0-9_]*(e[-+]?[0-9]+)?"  // floats
      "|[-+]?[0-9][0-9_]*e[-+]?[0-9]+"
      "|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\\.[0-9_]*)?"  // 1.1 base 60
      "|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([ tT].*)?");       // timestamps
  return std::regex_match(lower, kNumber);
}

void Emit(YAML::Emitter& out, const json& j) {
  switch (j.type()) {
    case json::value_t::object:
      if (j.empty()) out << YAML::Flow;
      out << YAML::BeginMap;
      for (const auto& [k, v] : j.items()) {
        out << YAML::Key;
        if (NeedsQuotes(k)) out << YAML::DoubleQuoted;
        out << k << YAML::Value;
        Emit(out, v);
      }
      out << YAML::EndMap;
      break;
    case json::value_t::array:
      if (j.empty()) out << YAML::Flow;
      out << YAML::BeginSeq;
      for (const auto& v : j) Emit(out, v);
      out << YAML::EndSeq;
      break;
    case json::value_t::string: {
      const std::string& s = j.get_ref<const std::string&>();
      if (NeedsQuotes(s)) out << YAML::DoubleQuoted;
      out << s;
      break;
    }
    case json::value_t::boolean:
      out << (j.get<bool>() ? "true" : "false");
      break;
    case json::value_t::number_integer:
      out << j.get<int64_t>();
      break;
    case json::value_t::number_unsigned:
      out << j.get<uint64_t>();
      break;
    case json::value_t::null:
      out << YAML::Null;
      break;
    default:
      MSB_CHECK(false, "the Kubernetes export emits no floating-point or binary values");
  }
}

}  // namespace

Result<KubeExport> ExportKubernetes(const schema::Project& project, const KubeExportOptions& options) {
  std::vector<std::string> errors;
  if (!options.name_space.empty() && !IsDnsLabel(options.name_space, false)) {
    errors.push_back("--namespace " + options.name_space +
                     ": not a Kubernetes namespace name (lower-case letters, digits and '-', at most 63)");
  }
  if (!IsDnsSubdomain(options.runtime_class)) {
    errors.push_back("--runtime-class " + options.runtime_class +
                     ": not a Kubernetes name (lower-case letters, digits, '-' and '.')");
  }
  if (!IsLabelValue(project.name)) {
    errors.push_back("project " + project.name + ": not a Kubernetes label value; name it with -p NAME");
  }
  KubeExport out;
  for (const auto& [name, sb] : project.sandboxes) {
    SandboxExporter exporter(project, sb, options, &errors);
    exporter.Run(&out.objects);
    for (auto& w : exporter.warnings()) out.warnings.push_back(std::move(w));
  }
  // A volume several sandboxes mount is one disk under msb, one claim each here.
  std::map<std::string, std::vector<std::string>> users;
  for (const auto& [name, sb] : project.sandboxes) {
    std::set<std::string> mine;
    for (const auto& m : sb.volumes) {
      if (m.kind == schema::Mount::Kind::kVolume && mine.insert(m.source).second) users[m.source].push_back(name);
    }
  }
  for (const auto& [vol, names] : users) {
    if (names.size() < 2) continue;
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    out.warnings.push_back("volume " + vol + ": mounted by " + list +
                           "; each StatefulSet gets a claim of its own (ReadWriteOnce), so they share no data");
  }
  if (!errors.empty()) {
    std::string msg;
    for (const auto& e : errors) msg += (msg.empty() ? "" : "\n") + e;
    return Error(ErrorCode::kInvalidArgument, msg);
  }
  return out;
}

std::string KubeYaml(const KubeObject& object) {
  std::string out;
  for (const auto& c : object.comments) out += "# " + c + "\n";
  YAML::Emitter e;
  e.SetIndent(2);
  e << YAML::Block;
  Emit(e, object.body);
  out += e.c_str();
  out += "\n";
  return out;
}

std::string KubeYamlStream(const KubeExport& exported) {
  std::string out;
  for (const auto& obj : exported.objects) out += "---\n" + KubeYaml(obj);
  return out;
}

}  // namespace msb::orchestrator
