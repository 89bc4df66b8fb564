// registries.yaml (yaml-cpp; its exceptions stay inside Load) and the
// credential files (nlohmann::json, non-throwing).
#include "image/registry_config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "common/base64.h"
#include "common/io.h"
#include "image/credential_helper.h"
#include "image/http.h"

namespace msb::image {
namespace {

using nlohmann::json;

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string Where(const std::string& path, const YAML::Node& node) {
  auto m = node.Mark();
  if (m.line < 0) return path;
  return path + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

// "docker.io" and its API host are one registry for settings and credentials.
std::string CanonicalName(const std::string& name) {
  if (name == "registry-1.docker.io" || name == "index.docker.io" || name == "registry-1.docker.io:443" ||
      name == "https://index.docker.io/v1/") {
    return "docker.io";
  }
  return name;
}

std::string StripPort443(const std::string& hp) {
  if (hp.size() > 4 && hp.substr(hp.size() - 4) == ":443") return hp.substr(0, hp.size() - 4);
  return hp;
}

Result<json> ReadJsonFile(const std::string& path) {
  MSB_TRY(std::string text, ReadFile(path));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Error(ErrorCode::kInvalidArgument, path + ": not a JSON object; fix or remove the file");
  }
  return j;
}

// Whether a key of docker's auths or credHelpers names registry; docker
// writes "https://host/v1/" style keys too.
bool KeyNames(const std::string& key, const std::string& registry) {
  std::string bare = key;
  if (bare.rfind("https://", 0) == 0) bare = bare.substr(8);
  else if (bare.rfind("http://", 0) == 0) bare = bare.substr(7);
  if (key != "https://index.docker.io/v1/") bare = bare.substr(0, bare.find('/'));
  return CanonicalName(bare) == CanonicalName(registry) || CanonicalName(key) == CanonicalName(registry);
}

// The "auth" field: base64 of "user:password".
Result<std::optional<Credentials>> FromAuthsEntry(const json& auths, const std::string& registry,
                                                  const std::string& path) {
  if (!auths.is_object()) return Error(ErrorCode::kInvalidArgument, path + ": auths: expected an object");
  for (auto it = auths.begin(); it != auths.end(); ++it) {
    std::string key = it.key();
    if (!KeyNames(key, registry)) continue;
    const json& e = it.value();
    if (!e.is_object()) return Error(ErrorCode::kInvalidArgument, path + ": auths." + key + ": expected an object");
    auto a = e.find("auth");
    if (a == e.end() || !a->is_string() || a->get<std::string>().empty()) continue;  // e.g. a credential helper
    auto decoded = Base64Decode(a->get<std::string>());
    if (!decoded.ok()) {
      return Error(ErrorCode::kInvalidArgument, path + ": auths." + key + ".auth: not base64");
    }
    size_t colon = decoded->find(':');
    if (colon == std::string::npos) {
      return Error(ErrorCode::kInvalidArgument, path + ": auths." + key + ".auth: not base64 of user:password");
    }
    return std::optional<Credentials>(Credentials{decoded->substr(0, colon), decoded->substr(colon + 1)});
  }
  return std::optional<Credentials>();
}

// credHelpers[registry], else credsStore, else "".
Result<std::string> HelperIn(const json& j, const std::string& registry, const std::string& path) {
  if (auto h = j.find("credHelpers"); h != j.end()) {
    if (!h->is_object()) return Error(ErrorCode::kInvalidArgument, path + ": credHelpers: expected an object");
    for (auto it = h->begin(); it != h->end(); ++it) {
      if (!KeyNames(it.key(), registry)) continue;
      if (!it->is_string()) {
        return Error(ErrorCode::kInvalidArgument, path + ": credHelpers." + it.key() + ": expected a helper name");
      }
      if (!it->get<std::string>().empty()) return it->get<std::string>();
    }
  }
  if (auto s = j.find("credsStore"); s != j.end()) {
    if (!s->is_string()) return Error(ErrorCode::kInvalidArgument, path + ": credsStore: expected a helper name");
    return s->get<std::string>();
  }
  return std::string();
}

}  // namespace

std::string FindDockerCertsDir(const std::string& host_port) {
  std::string root = http::DockerCertsRoot();
  auto is_dir = [](const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  };
  if (host_port.empty() || host_port.find('/') != std::string::npos || host_port[0] == '.') return "";
  if (is_dir(root + "/" + host_port)) return root + "/" + host_port;
  std::string bare = StripPort443(host_port);
  if (bare != host_port && is_dir(root + "/" + bare)) return root + "/" + bare;
  return "";
}

Result<RegistryConfig> RegistryConfig::Load(const std::string& path) {
  RegistryConfig cfg;
  if (!FileExists(path)) return cfg;
  MSB_TRY(std::string text, ReadFile(path));
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return Error(ErrorCode::kInvalidArgument,
                 path + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                     ": not valid YAML: " + e.msg);
  }
  if (root.IsNull()) return cfg;
  if (!root.IsMap()) return Error(ErrorCode::kInvalidArgument, Where(path, root) + ": expected a mapping with key registries");
  try {
    for (const auto& top : root) {
      std::string key = top.first.as<std::string>();
      if (key != "registries") {
        return Error(ErrorCode::kInvalidArgument,
                     Where(path, top.first) + ": unknown key \"" + key + "\" (expected registries)");
      }
      const YAML::Node& regs = top.second;
      if (regs.IsNull()) continue;
      if (!regs.IsMap()) {
        return Error(ErrorCode::kInvalidArgument,
                     Where(path, regs) + ": registries: expected a mapping of registry name to settings");
      }
      for (const auto& r : regs) {
        std::string name = r.first.as<std::string>();
        if (name.empty() || name.find('/') != std::string::npos || name.find(' ') != std::string::npos) {
          return Error(ErrorCode::kInvalidArgument, Where(path, r.first) + ": registries: \"" + name +
                                                        "\" is not a registry name (host or host:port)");
        }
        RegistryHostConfig host;
        const YAML::Node& settings = r.second;
        if (!settings.IsNull() && !settings.IsMap()) {
          return Error(ErrorCode::kInvalidArgument,
                       Where(path, settings) + ": registries." + name + ": expected a mapping (insecure, ca_file)");
        }
        if (settings.IsMap()) {
          for (const auto& kv : settings) {
            std::string k = kv.first.as<std::string>();
            std::string field = "registries." + name + "." + k;
            if (k == "insecure") {
              std::string v = kv.second.IsScalar() ? kv.second.Scalar() : "";
              if (v == "true") host.insecure = true;
              else if (v == "false") host.insecure = false;
              else return Error(ErrorCode::kInvalidArgument, Where(path, kv.second) + ": " + field + ": expected true or false");
            } else if (k == "ca_file") {
              if (!kv.second.IsScalar() || kv.second.Scalar().empty()) {
                return Error(ErrorCode::kInvalidArgument, Where(path, kv.second) + ": " + field + ": expected a file path");
              }
              host.ca_file = kv.second.Scalar();
              if (host.ca_file[0] != '/') {
                return Error(ErrorCode::kInvalidArgument,
                             Where(path, kv.second) + ": " + field + ": \"" + host.ca_file + "\" must be an absolute path");
              }
              if (::access(host.ca_file.c_str(), R_OK) != 0) {
                return Error(ErrorCode::kInvalidArgument,
                             Where(path, kv.second) + ": " + field + ": cannot read " + host.ca_file);
              }
            } else {
              return Error(ErrorCode::kInvalidArgument,
                           Where(path, kv.first) + ": unknown key \"" + field + "\" (expected insecure or ca_file)");
            }
          }
        }
        cfg.registries[CanonicalName(name)] = host;
      }
    }
  } catch (const YAML::Exception& e) {
    return Error(ErrorCode::kInvalidArgument, path + ": " + e.what());
  }
  return cfg;
}

Result<RegistryConfig> RegistryConfig::LoadDefault() { return Load(MsbHome() + "/registries.yaml"); }

Status RegistryConfig::ApplyOverrides(const std::vector<std::string>& insecure_hosts,
                                      const std::vector<std::string>& ca_files) {
  for (const auto& h : insecure_hosts) {
    if (h.empty() || h.find('/') != std::string::npos) {
      return Error(ErrorCode::kInvalidArgument, "--insecure-registry \"" + h + "\" is not a host or host:port");
    }
    registries[CanonicalName(h)].insecure = true;
  }
  for (const auto& pair : ca_files) {
    size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == pair.size()) {
      return Error(ErrorCode::kInvalidArgument, "--registry-ca \"" + pair + "\" is not HOST=CA_FILE");
    }
    std::string file = pair.substr(eq + 1);
    if (::access(file.c_str(), R_OK) != 0) {
      return Error(ErrorCode::kInvalidArgument, "--registry-ca: cannot read " + file);
    }
    registries[CanonicalName(pair.substr(0, eq))].ca_file = file;
  }
  return OkStatus();
}

RegistryHostConfig RegistryConfig::For(const std::string& host_port) const {
  RegistryHostConfig h;
  std::string name = CanonicalName(host_port);
  auto it = registries.find(name);
  if (it == registries.end()) it = registries.find(CanonicalName(StripPort443(host_port)));
  if (it != registries.end()) h = it->second;
  h.certs_dir = FindDockerCertsDir(host_port);
  return h;
}

CredentialStore CredentialStore::Default() {
  CredentialStore s;
  s.auth_file = MsbHome() + "/auth.json";
  const char* dc = std::getenv("DOCKER_CONFIG");
  const char* home = std::getenv("HOME");
  if (dc != nullptr && *dc != '\0') s.docker_config = std::string(dc) + "/config.json";
  else if (home != nullptr && *home != '\0') s.docker_config = std::string(home) + "/.docker/config.json";
  return s;
}

Result<std::optional<Credentials>> CredentialStore::Lookup(const std::string& registry) const {
  for (const std::string* path : {&auth_file, &docker_config}) {
    if (path->empty() || !FileExists(*path)) continue;
    MSB_TRY(json j, ReadJsonFile(*path));
    if (path == &docker_config) {
      MSB_TRY(std::string helper, HelperIn(j, registry, *path));
      if (!helper.empty()) return HelperGet(helper, registry);
    }
    auto auths = j.find("auths");
    if (auths == j.end()) continue;
    MSB_TRY(std::optional<Credentials> c, FromAuthsEntry(*auths, registry, *path));
    if (c) return c;
  }
  return std::optional<Credentials>();
}

Result<std::string> CredentialStore::HelperFor(const std::string& registry) const {
  if (docker_config.empty() || !FileExists(docker_config)) return std::string();
  MSB_TRY(json j, ReadJsonFile(docker_config));
  return HelperIn(j, registry, docker_config);
}

Result<std::string> CredentialStore::Store(const std::string& registry, const Credentials& creds) const {
  MSB_TRY(std::string helper, HelperFor(registry));
  if (!helper.empty()) {
    MSB_TRY_STATUS(HelperStore(helper, registry, creds));
    // An old entry of msb's own would be found first.
    MSB_TRY_STATUS(RemoveOwn(registry));
    return "docker-credential-" + helper;
  }
  json j = json::object();
  if (FileExists(auth_file)) {
    MSB_TRY(j, ReadJsonFile(auth_file));
  }
  if (!j.contains("auths") || !j["auths"].is_object()) j["auths"] = json::object();
  j["auths"][CanonicalName(registry)] = {{"auth", Base64Encode(creds.username + ":" + creds.password)}};
  size_t slash = auth_file.rfind('/');
  if (slash != std::string::npos && slash > 0) MSB_TRY_STATUS(MakeDirs(auth_file.substr(0, slash), 0700));
  MSB_TRY_STATUS(WriteFileAtomic(auth_file, j.dump(2) + "\n", 0600));
  return auth_file;
}

Status CredentialStore::Remove(const std::string& registry) const {
  MSB_TRY_STATUS(RemoveOwn(registry));
  MSB_TRY(std::string helper, HelperFor(registry));
  if (!helper.empty()) MSB_TRY_STATUS(HelperErase(helper, registry));
  return OkStatus();
}

Status CredentialStore::RemoveOwn(const std::string& registry) const {
  if (!FileExists(auth_file)) return OkStatus();
  MSB_TRY(json j, ReadJsonFile(auth_file));
  if (j.contains("auths") && j["auths"].is_object()) j["auths"].erase(CanonicalName(registry));
  return WriteFileAtomic(auth_file, j.dump(2) + "\n", 0600);
}

}  // namespace msb::image
