// How msb reaches registries: per-registry TLS settings from
// $MSB_HOME/registries.yaml plus per-command overrides, and credentials from
// $MSB_HOME/auth.json (written by `msb login`, mode 0600) with a read-only
// fallback to docker's ~/.docker/config.json. Not the registry protocol.
//
// registries.yaml:
//   registries:
//     "127.0.0.1:5000": {insecure: true}
//     reg.internal: {ca_file: /etc/reg-ca.pem}
// auth.json:
//   {"auths": {"reg.internal": {"auth": "<base64 user:password>"}}}
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace msb::image {

struct RegistryHostConfig {
  bool insecure = false;  // plain HTTP allowed, TLS not verified
  std::string ca_file;    // extra CA bundle (PEM), absolute path
};

// Keys are registry names as written in image references ("reg.internal",
// "127.0.0.1:5000"); "docker.io" also covers registry-1.docker.io.
struct RegistryConfig {
  std::map<std::string, RegistryHostConfig> registries;

  // Reads path; a missing file is an empty config. Errors name the path and
  // what is wrong ("registries.yaml: registries.reg.internal.insecure: expected
  // true or false").
  static Result<RegistryConfig> Load(const std::string& path);
  // MsbHome()/registries.yaml.
  static Result<RegistryConfig> LoadDefault();

  // Per-command overrides: hosts marked insecure, and "host=cafile" pairs.
  Status ApplyOverrides(const std::vector<std::string>& insecure_hosts,
                        const std::vector<std::string>& ca_files);

  // Settings for a registry name or a "host:port" the client connects to
  // (default port 443 matches a name written without a port).
  RegistryHostConfig For(const std::string& host_port) const;
};

struct Credentials {
  std::string username;
  std::string password;
};

// Where credentials are kept. Empty paths mean the defaults: auth_file
// MsbHome()/auth.json, docker_config $DOCKER_CONFIG/config.json or
// ~/.docker/config.json.
struct CredentialStore {
  std::string auth_file;
  std::string docker_config;

  static CredentialStore Default();
  // msb's own file first, then docker's auths (its "auth" field). nullopt
  // when neither has the registry; an error when a file exists but is bad.
  Result<std::optional<Credentials>> Lookup(const std::string& registry) const;
  // Writes (replaces) the entry in auth_file, mode 0600, atomically.
  Status Store(const std::string& registry, const Credentials& creds) const;
  Status Remove(const std::string& registry) const;
};

}  // namespace msb::image
