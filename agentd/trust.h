// The sandbox's CA certificate in the guest's trust, so that TLS clients
// accept the leaves the host intercepts with (docs/secrets.md): appended to
// the image's system bundles between marker lines, written on its own and as
// a bundle of its own, which the usual TLS variables point at (CaEnv). Not a
// certificate parser: the PEM is copied as the host sent it (checked for
// shape only, agent/messages.h), and no hashed certificate directory is built.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace msb::agent {

// The system bundles an image may have (Debian/Ubuntu/Alpine, Fedora/RHEL,
// Alpine/macOS-style), appended to when they exist.
inline constexpr const char* kSystemCaBundles[] = {
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
};
// The CA alone (where update-ca-certificates looks; NODE_EXTRA_CA_CERTS).
inline constexpr const char* kCaFile = "/usr/local/share/ca-certificates/msb.crt";
// The first system bundle plus the CA (SSL_CERT_FILE and friends).
inline constexpr const char* kCaBundle = "/etc/ssl/msb-ca-bundle.pem";
// The lines around the CA in a bundle. A bundle keeps at most one such block.
inline constexpr std::string_view kCaBlockBegin = "# msb sandbox CA begin";
inline constexpr std::string_view kCaBlockEnd = "# msb sandbox CA end";
// A bundle larger than this is refused rather than read into PID 1's memory.
inline constexpr size_t kMaxCaBundleBytes = 16 << 20;

// Installs pem into the guest root at `root` (agentd passes "/" after the
// switch into the new root; tests a temporary directory). Every path is
// resolved inside root as if it were "/" (openat2 RESOLVE_IN_ROOT), so an
// image's absolute symlinks and ".." stay inside it:
// - each of kSystemCaBundles that is (or links to) a regular file gets one
//   msb block holding pem at its end, replacing any earlier block; a file
//   reached through several of the paths is written once. Files are replaced
//   atomically (temporary file and rename beside the link's target), mode
//   0644;
// - kCaFile holds pem, kCaBundle the first system bundle without its msb
//   block plus the block (just the block without a system bundle); missing
//   directories are created.
// With an empty pem it undoes an earlier install instead (blocks stripped,
// kCaFile and kCaBundle removed), and returns at once when kCaBundle does not
// exist. Errors start "installing the sandbox CA: " and name the guest path.
Status InstallCa(const std::string& root, std::string_view pem);

// "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE" and
// "GIT_SSL_CAINFO" set to kCaBundle, "NODE_EXTRA_CA_CERTS" to kCaFile, as
// "K=V". The caller lays boot's env over them: a variable set there wins.
std::vector<std::string> CaEnv();

// bundle without any msb block, then, unless pem is empty, one block holding
// pem at its end (a newline first when bundle does not end with one). An
// unterminated block runs to the end of the text. Pure; tested.
std::string ReplaceCaBlock(std::string_view bundle, std::string_view pem);

}  // namespace msb::agent
