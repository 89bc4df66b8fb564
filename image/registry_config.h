// How msb reaches registries: per-registry TLS settings from
// $MSB_HOME/registries.yaml plus per-command overrides and docker's
// /etc/docker/certs.d, and credentials from $MSB_HOME/auth.json (written by
// `msb login`, mode 0600) or else docker's ~/.docker/config.json with its
// credential helpers (image/credential_helper.h). Not the registry protocol.
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
  std::string certs_dir;  // docker's certs.d directory for the host, when there is one
};

// The existing directory http::DockerCertsRoot()/HOST:PORT, or for port 443 (and a
// name written without a port) DockerCertsRoot()/HOST; "" when none exists.
std::string FindDockerCertsDir(const std::string& host_port);

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
  // (default port 443 matches a name written without a port), with its
  // docker certs.d directory.
  RegistryHostConfig For(const std::string& host_port) const;
};

struct Credentials {
  std::string username;
  std::string password;
};

// Where credentials are kept. Empty paths mean the defaults: auth_file
// MsbHome()/auth.json, docker_config $DOCKER_CONFIG/config.json or
// ~/.docker/config.json.
//
// Docker's file is read, never written. In it, as in docker,
// credHelpers[registry] wins over credsStore, which wins over auths: with a
// helper named, docker-credential-NAME (on PATH) is asked and auths is not
// read for that registry; a helper without credentials for it means
// anonymous access.
struct CredentialStore {
  std::string auth_file;
  std::string docker_config;

  static CredentialStore Default();
  // msb's own file first, then docker's config: its helper for the registry,
  // else its auths (the "auth" field). nullopt when none has the registry;
  // an error when a file exists but is bad or a helper fails.
  Result<std::optional<Credentials>> Lookup(const std::string& registry) const;
  // The credential helper docker's config names for registry (the NAME of
  // docker-credential-NAME), or "" when none.
  Result<std::string> HelperFor(const std::string& registry) const;
  // Stores through the helper when docker's config names one for registry
  // (docker-credential-NAME store, as docker login does; msb's own entry for
  // it is removed), else writes (replaces) the entry in auth_file, mode 0600,
  // atomically. Returns where: "docker-credential-NAME" or auth_file.
  Result<std::string> Store(const std::string& registry, const Credentials& creds) const;
  // Removes msb's entry and, when docker's config names a helper for
  // registry, erases it there too (as docker logout does).
  Status Remove(const std::string& registry) const;

 private:
  Status RemoveOwn(const std::string& registry) const;
};

}  // namespace msb::image
