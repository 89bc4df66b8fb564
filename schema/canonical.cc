// The canonical form of a loaded Sandboxfile (JSON and a loadable YAML) and
// the per-sandbox config hash (sandboxfile.h). Both forms are written from
// the model, so they agree by construction on what each value means.
#include <yaml-cpp/yaml.h>

#include "common/sha256.h"
#include "schema/network_rule.h"
#include "schema/sandboxfile.h"
#include "schema/values.h"

namespace msb::schema {
namespace {

using json = nlohmann::json;

std::string Octal(uint32_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%o", mode);
  return buf;
}

json MetaJson(const Meta& meta) {
  json j = json::object();
  if (!meta.authors.empty()) j["authors"] = meta.authors;
  if (!meta.description.empty()) j["description"] = meta.description;
  if (!meta.homepage.empty()) j["homepage"] = meta.homepage;
  if (!meta.repository.empty()) j["repository"] = meta.repository;
  if (!meta.readme.empty()) j["readme"] = meta.readme;
  if (!meta.tags.empty()) j["tags"] = meta.tags;
  if (!meta.icon.empty()) j["icon"] = meta.icon;
  return j;
}

json CommandJson(const std::vector<std::string>& argv) { return argv; }

// What ConfigHash covers: everything but the keys the supervisor can apply
// to a running VM, and informational meta.
json HashedJson(const Sandbox& sb) {
  json j = CanonicalJson(sb);
  j.erase("depends_on");
  j.erase("restart");
  j.erase("healthcheck");
  j.erase("meta");
  return j;
}

bool IsNullWord(const std::string& s) {
  return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL";
}

// Emits a string that reads back as itself: '$' doubled against
// interpolation (but in verbatim text: scripts), quoted when plain would not
// do (the emitter decides; the loader reads every plain scalar as text, so
// only null words need help).
void Str(YAML::Emitter& out, const std::string& s, bool verbatim = false) {
  std::string escaped;
  escaped.reserve(s.size());
  for (char c : s) {
    escaped += c;
    if (c == '$' && !verbatim) escaped += '$';
  }
  if (IsNullWord(escaped)) out << YAML::DoubleQuoted;
  out << escaped;
}

void Key(YAML::Emitter& out, const std::string& key) {
  out << YAML::Key;
  if (IsNullWord(key) || key == "<<") out << YAML::DoubleQuoted;
  out << key << YAML::Value;
}

// Empty containers in flow style ({} and []), others in block style.
void BeginMap(YAML::Emitter& out, bool empty) {
  if (empty) out << YAML::Flow;
  out << YAML::BeginMap;
}
void BeginSeq(YAML::Emitter& out, bool empty) {
  if (empty) out << YAML::Flow;
  out << YAML::BeginSeq;
}

void StrList(YAML::Emitter& out, const std::vector<std::string>& list, bool verbatim = false) {
  out << YAML::Flow << YAML::BeginSeq;
  for (const std::string& s : list) Str(out, s, verbatim);
  out << YAML::EndSeq;
}

void MetaYaml(YAML::Emitter& out, const Meta& meta) {
  out << YAML::BeginMap;
  if (!meta.authors.empty()) { Key(out, "authors"); StrList(out, meta.authors); }
  if (!meta.description.empty()) { Key(out, "description"); Str(out, meta.description); }
  if (!meta.homepage.empty()) { Key(out, "homepage"); Str(out, meta.homepage); }
  if (!meta.icon.empty()) { Key(out, "icon"); Str(out, meta.icon); }
  if (!meta.readme.empty()) { Key(out, "readme"); Str(out, meta.readme); }
  if (!meta.repository.empty()) { Key(out, "repository"); Str(out, meta.repository); }
  if (!meta.tags.empty()) { Key(out, "tags"); StrList(out, meta.tags); }
  out << YAML::EndMap;
}

void SandboxYaml(YAML::Emitter& out, const Sandbox& sb) {
  out << YAML::BeginMap;
  if (sb.cold_boot) { Key(out, "boot"); Str(out, "cold"); }
  if (!sb.command.empty()) { Key(out, "command"); StrList(out, sb.command); }
  Key(out, "cpus"); out << sb.cpus;
  if (!sb.depends_on.empty()) {
    Key(out, "depends_on");
    out << YAML::BeginMap;
    for (const auto& [name, dep] : sb.depends_on) {
      Key(out, name);
      out << YAML::Flow << YAML::BeginMap;
      Key(out, "condition"); Str(out, ToString(dep.condition));
      out << YAML::EndMap;
    }
    out << YAML::EndMap;
  }
  Key(out, "disk"); Str(out, FormatSize(sb.disk));
  Key(out, "envs");
  BeginMap(out, sb.envs.empty());
  for (const auto& [k, v] : sb.envs) { Key(out, k); Str(out, v); }
  out << YAML::EndMap;
  Key(out, "ephemeral"); out << sb.ephemeral;
  if (sb.healthcheck) {
    const Healthcheck& hc = *sb.healthcheck;
    Key(out, "healthcheck");
    out << YAML::BeginMap;
    Key(out, "command"); StrList(out, hc.command);
    Key(out, "interval"); Str(out, FormatDuration(hc.interval_ms));
    Key(out, "retries"); out << hc.retries;
    Key(out, "start_period"); Str(out, FormatDuration(hc.start_period_ms));
    Key(out, "timeout"); Str(out, FormatDuration(hc.timeout_ms));
    out << YAML::EndMap;
  }
  Key(out, "image"); Str(out, sb.image.reference);
  if (!sb.logs.IsDefault()) {
    Key(out, "logs");
    out << YAML::BeginMap;
    Key(out, "max_size"); Str(out, FormatSize(sb.logs.max_size));
    out << YAML::EndMap;
  }
  Key(out, "memory"); Str(out, FormatSize(sb.memory));
  if (!sb.meta.empty()) { Key(out, "meta"); MetaYaml(out, sb.meta); }
  Key(out, "network");
  out << YAML::BeginMap;
  Key(out, "dns");
  out << YAML::BeginMap;
  Key(out, "rebind_protection"); out << sb.network.rebind_protection;
  Key(out, "servers"); StrList(out, sb.network.dns_servers);
  out << YAML::EndMap;
  Key(out, "policy"); Str(out, ToString(sb.network.policy));
  Key(out, "rules");
  BeginSeq(out, sb.network.rules.empty());
  for (const NetworkRule& r : sb.network.rules) Str(out, ToString(r));
  out << YAML::EndSeq;
  if (!sb.network.tls_ca.empty()) {
    Key(out, "tls");
    out << YAML::BeginMap;
    Key(out, "ca"); Str(out, sb.network.tls_ca);
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  Key(out, "ports");
  BeginSeq(out, sb.ports.empty());
  for (const PortMapping& p : sb.ports) Str(out, FormatPortMapping(p));
  out << YAML::EndSeq;
  Key(out, "restart"); Str(out, ToString(sb.restart));
  Key(out, "scripts");
  BeginMap(out, sb.scripts.empty());
  for (const auto& [name, argv] : sb.scripts) { Key(out, name); StrList(out, argv, /*verbatim=*/true); }
  out << YAML::EndMap;
  Key(out, "secrets");
  BeginMap(out, sb.secrets.empty());
  for (const auto& [name, s] : sb.secrets) {
    Key(out, name);
    out << YAML::BeginMap;
    Key(out, "allow"); StrList(out, s.allow);
    Key(out, s.source == Secret::Source::kEnv ? "from_env" : "from_file"); Str(out, s.from);
    Key(out, "inject");
    out << YAML::Flow << YAML::BeginMap;
    Key(out, "basic_auth"); out << s.inject_basic_auth;
    Key(out, "body"); out << s.inject_body;
    Key(out, "headers"); out << s.inject_headers;
    Key(out, "query"); out << s.inject_query;
    out << YAML::EndMap;
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  if (!sb.security.IsDefault()) {
    const Security& sec = sb.security;
    Key(out, "security");
    out << YAML::BeginMap;
    Key(out, "cap_add"); StrList(out, sec.cap_add);
    Key(out, "cap_drop"); StrList(out, sec.cap_drop);
    Key(out, "no_new_privileges"); out << sec.no_new_privileges;
    Key(out, "read_only_root"); out << sec.read_only_root;
    out << YAML::EndMap;
  }
  Key(out, "shell"); Str(out, sb.shell);
  Key(out, "tmpfs");
  BeginSeq(out, sb.tmpfs.empty());
  for (const Tmpfs& t : sb.tmpfs) Str(out, FormatTmpfs(t));
  out << YAML::EndSeq;
  if (!sb.user.empty()) { Key(out, "user"); Str(out, sb.user); }
  Key(out, "volumes");
  BeginSeq(out, sb.volumes.empty());
  for (const Mount& m : sb.volumes) Str(out, FormatMount(m));
  out << YAML::EndSeq;
  if (!sb.workdir.empty()) { Key(out, "workdir"); Str(out, sb.workdir); }
  out << YAML::EndMap;
}

}  // namespace

json CanonicalJson(const Sandbox& sb) {
  json j = json::object();
  j["command"] = CommandJson(sb.command);
  j["cpus"] = sb.cpus;
  json deps = json::object();
  for (const auto& [name, dep] : sb.depends_on) deps[name] = {{"condition", ToString(dep.condition)}};
  j["depends_on"] = std::move(deps);
  j["disk"] = sb.disk;
  j["envs"] = json(sb.envs);
  j["ephemeral"] = sb.ephemeral;
  if (sb.healthcheck) {
    const Healthcheck& hc = *sb.healthcheck;
    j["healthcheck"] = {{"command", hc.command},
                        {"interval", hc.interval_ms},
                        {"retries", hc.retries},
                        {"start_period", hc.start_period_ms},
                        {"timeout", hc.timeout_ms}};
  } else {
    j["healthcheck"] = nullptr;
  }
  j["image"] = sb.image.reference;
  // Only when set, like security: sandboxes without it keep their hash.
  if (!sb.logs.IsDefault()) j["logs"] = {{"max_size", sb.logs.max_size}};
  j["memory"] = sb.memory;
  if (!sb.meta.empty()) j["meta"] = MetaJson(sb.meta);
  json rules = json::array();
  for (const NetworkRule& r : sb.network.rules) rules.push_back(ToString(r));
  j["network"] = {{"dns", {{"rebind_protection", sb.network.rebind_protection},
                           {"servers", sb.network.dns_servers}}},
                  {"policy", ToString(sb.network.policy)},
                  {"rules", std::move(rules)}};
  if (!sb.network.tls_ca.empty()) j["network"]["tls"] = {{"ca", sb.network.tls_ca}};
  json ports = json::array();
  for (const PortMapping& p : sb.ports) {
    ports.push_back({{"guest_port", p.guest_port},
                     {"host_ip", p.host_ip},
                     {"host_port", p.host_port},
                     {"protocol", ToString(p.protocol)}});
  }
  j["ports"] = std::move(ports);
  j["restart"] = ToString(sb.restart);
  if (sb.cold_boot) j["boot"] = "cold";
  json scripts = json::object();
  for (const auto& [name, argv] : sb.scripts) scripts[name] = CommandJson(argv);
  j["scripts"] = std::move(scripts);
  json secrets = json::object();
  for (const auto& [name, s] : sb.secrets) {
    json e = {{"allow", s.allow},
              {"inject", {{"basic_auth", s.inject_basic_auth},
                          {"body", s.inject_body},
                          {"headers", s.inject_headers},
                          {"query", s.inject_query}}}};
    e[s.source == Secret::Source::kEnv ? "from_env" : "from_file"] = s.from;
    secrets[name] = std::move(e);
  }
  j["secrets"] = std::move(secrets);
  // Only when set, so that sandboxes without it keep the hash they had
  // before the section existed. A level is written as what it expanded to.
  if (!sb.security.IsDefault()) {
    j["security"] = {{"cap_add", sb.security.cap_add},
                     {"cap_drop", sb.security.cap_drop},
                     {"no_new_privileges", sb.security.no_new_privileges},
                     {"read_only_root", sb.security.read_only_root}};
  }
  j["shell"] = sb.shell;
  json tmpfs = json::array();
  for (const Tmpfs& t : sb.tmpfs) tmpfs.push_back({{"mode", Octal(t.mode)}, {"size", t.size}, {"target", t.target}});
  j["tmpfs"] = std::move(tmpfs);
  if (!sb.user.empty()) j["user"] = sb.user;
  json volumes = json::array();
  for (const Mount& m : sb.volumes) {
    volumes.push_back({{"read_only", m.read_only},
                       {"source", m.source},
                       {"target", m.target},
                       {"type", ToString(m.kind)}});
  }
  j["volumes"] = std::move(volumes);
  if (!sb.workdir.empty()) j["workdir"] = sb.workdir;
  return j;
}

json CanonicalJson(const Project& project) {
  json j = json::object();
  j["name"] = project.name;
  json sandboxes = json::object();
  for (const auto& [name, sb] : project.sandboxes) sandboxes[name] = CanonicalJson(sb);
  j["sandboxes"] = std::move(sandboxes);
  json volumes = json::object();
  for (const auto& [name, v] : project.volumes) volumes[name] = {{"size", v.size}};
  j["volumes"] = std::move(volumes);
  if (!project.meta.empty()) j["meta"] = MetaJson(project.meta);
  return j;
}

std::string CanonicalYaml(const Project& project) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  if (!project.meta.empty()) { Key(out, "meta"); MetaYaml(out, project.meta); }
  Key(out, "name"); Str(out, project.name);
  Key(out, "sandboxes");
  BeginMap(out, project.sandboxes.empty());
  for (const auto& [name, sb] : project.sandboxes) {
    Key(out, name);
    SandboxYaml(out, sb);
  }
  out << YAML::EndMap;
  Key(out, "volumes");
  BeginMap(out, project.volumes.empty());
  for (const auto& [name, v] : project.volumes) {
    Key(out, name);
    out << YAML::Flow << YAML::BeginMap;
    Key(out, "size"); Str(out, FormatSize(v.size));
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::string ConfigHash(const Sandbox& sandbox, std::string_view image_digest) {
  json j = HashedJson(sandbox);
  if (!image_digest.empty()) j["image_digest"] = std::string(image_digest);
  std::string text = j.dump(-1, ' ', false, json::error_handler_t::replace);
  return Sha256Hex(text);
}

}  // namespace msb::schema
