// Docker credential helpers: `docker-credential-NAME get|store|erase`, found
// on PATH, as docker runs them for `credsStore` and `credHelpers` in its
// config.json. Not the choice of helper (image/registry_config.h reads the
// config) and not the registry protocol.
//
// Protocol, one verb per run (the docker-credential-helpers convention):
//   get:   stdin  SERVER-URL
//          stdout {"ServerURL": S, "Username": U, "Secret": P}, exit 0
//          or     "credentials not found in native keychain", exit != 0
//   store: stdin  {"ServerURL": S, "Username": U, "Secret": P}, exit 0
//   erase: stdin  SERVER-URL, exit 0
// SERVER-URL is the registry name as written in image references
// ("reg.internal", "127.0.0.1:5000"); for docker.io it is docker's
// "https://index.docker.io/v1/". A Username of "<token>" marks an identity
// token (an OAuth refresh token), which msb does not use.
//
// The secret travels only on the helper's stdin or stdout: never in argv or
// the environment, never in a message. Each run is bounded: kHelperOutputLimit
// bytes of output and kHelperTimeout, after which the helper is killed.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "common/result.h"
#include "image/registry_config.h"

namespace msb::image {

inline constexpr size_t kHelperOutputLimit = 64 << 10;
inline constexpr std::chrono::seconds kHelperTimeout{30};

// The server URL a helper is asked about for a registry name.
std::string HelperServerUrl(const std::string& registry);

// The credentials helper NAME holds for registry; nullopt when it has none.
// Errors name docker-credential-NAME and the registry and say what to do.
Result<std::optional<Credentials>> HelperGet(const std::string& helper, const std::string& registry,
                                             std::chrono::milliseconds timeout = kHelperTimeout);
Status HelperStore(const std::string& helper, const std::string& registry, const Credentials& creds,
                   std::chrono::milliseconds timeout = kHelperTimeout);
// Removing credentials the helper does not have is not an error.
Status HelperErase(const std::string& helper, const std::string& registry,
                   std::chrono::milliseconds timeout = kHelperTimeout);

}  // namespace msb::image
