// From an `image:` value to what a sandbox boots: the pinned digest, the
// read-only base disk and the image's defaults (entrypoint, cmd, env, working
// directory, user, exposed ports). Registry images are pulled into the image
// store (image/pull.h, image/image_store.h) and flattened in a builder VM
// (image/flatten.h); OCI layouts are imported into the store first; local
// directories become a base disk directly (storage/disk.h). The one place that
// decides *when* to fetch: a tag is pinned at its first pull and refreshed
// only by `msb pull`. Not the transport, the store or the unpacker themselves.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "agent/messages.h"
#include "common/result.h"
#include "orchestrator/store.h"
#include "schema/model.h"

namespace msb::orchestrator {

// The image config's defaults (empty where the image says nothing).
struct ImageDefaults {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "K=V"
  std::string workdir;
  std::string user;
  std::vector<std::string> exposed_ports;  // "80/tcp"
};

// As a JSON object with those names (snapshots keep their image's).
nlohmann::json ToJson(const ImageDefaults& defaults);
// Missing or mistyped fields stay empty.
ImageDefaults ImageDefaultsFromJson(const nlohmann::json& j);
// The defaults of the image stored under a manifest digest; empty when the
// image store has none (a local directory's digest).
ImageDefaults DefaultsForDigest(const std::string& digest);

struct ResolvedImage {
  std::string reference;  // canonical reference (schema::Image::reference)
  std::string digest;     // manifest digest, or "sha256:<tree hash>" of a directory
  std::string base_disk;  // read-only ext4; empty when not yet available (fetch off)
  // snapshot:NAME: the snapshot's layers over base_disk, oldest first
  // (orchestrator/snapshot.h); empty for every other image.
  std::vector<std::string> lower_disks;
  ImageDefaults defaults;
};

struct ImageOptions {
  // Fetch what is missing (pull, import, unpack). Off: answer from the store
  // only, an image never pulled resolving to an empty digest (`msb plan`).
  bool fetch = true;
  // Pull again even when the reference is pinned (`msb pull`).
  bool refresh = false;
  // Build the base disk when it is missing (off: `msb pull --no-unpack`).
  bool unpack = true;
  // Per-command registry settings (--insecure-registry, --registry-ca H=F).
  std::vector<std::string> insecure_registries;
  std::vector<std::string> registry_cas;  // "HOST:PORT=FILE"
  // Progress lines; bars are drawn when stderr is a terminal and !quiet.
  bool quiet = false;
};

// Resolves one image, fetching and unpacking as options allow.
Result<ResolvedImage> EnsureImage(Store& store, const schema::Image& image,
                                  const ImageOptions& options);

// Resolves every declared sandbox's image (each distinct image once).
Result<std::map<std::string, ResolvedImage>> ResolveImages(Store& store,
                                                           const schema::Project& project,
                                                           const ImageOptions& options);
// sandbox name -> digest, for the planner.
std::map<std::string, std::string> DigestsOf(const std::map<std::string, ResolvedImage>& images);

// Fills the boot configuration's unset parts from the image: the workload is
// entrypoint + (the sandbox's command, else the image's cmd) as docker does;
// the image's env comes first and the sandbox's overrides it by name; workdir
// and user when the sandbox gives none. `command_given`: the sandbox declared
// a command (or a start script).
void ApplyImageDefaults(const ImageDefaults& defaults, bool command_given,
                        agent::BootConfig& boot);

}  // namespace msb::orchestrator
