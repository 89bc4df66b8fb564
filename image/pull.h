// Pulling an image from a registry into a BlobTarget: resolve the reference
// (tag or digest; an index/list -> its linux/amd64 manifest), then write
// every layer, the config, the manifest and the index (when there is one),
// in that order, through the target, skipping blobs it
// already has, verifying size and sha256 while streaming. Not the store, not
// the unpacking, not the CLI (which draws the progress events).
//
// Layers download on options.concurrency worker threads (blocking I/O, see
// image/http.h). A broken connection, a timeout or an HTTP 5xx is retried with
// exponential backoff, resuming at BlobSink::Offset() with a Range request,
// or from byte 0 (BlobSink::Restart) when the server ignores the Range. A
// blob whose bytes do not hash to its digest fails the pull at once, naming
// the blob; nothing is published for it. The first failing layer stops the
// others; blobs already committed stay (they are verified content).
//
// Sizes: before anything but the manifest is fetched, every layer's declared
// size must be at most options.max_blob_bytes and the layers and config
// together at most options.max_image_bytes; while streaming, a blob may not
// run past its declared size. So a manifest cannot make a pull write more
// than max_image_bytes, however large the sizes it declares.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "image/blob_target.h"
#include "image/oci.h"
#include "image/registry_config.h"

namespace msb::image {

// The parts of a registry reference (schema::Image's registry fields).
struct ImageReference {
  std::string registry;    // "docker.io", "reg.internal", "127.0.0.1:5000"
  std::string repository;  // "library/alpine", "team/api"
  std::string tag;         // may be empty when digest is set
  std::string digest;      // "sha256:<hex>" or empty; wins over the tag
  // "registry/repository:tag", "registry/repository@digest" or both.
  std::string ToString() const;
};

inline constexpr uint64_t kDefaultMaxBlobBytes = 8ull << 30;    // MSB_PULL_MAX_BLOB_SIZE
inline constexpr uint64_t kDefaultMaxImageBytes = 16ull << 30;  // MSB_PULL_MAX_IMAGE_SIZE

struct PullOptions {
  RegistryConfig registries;               // TLS settings per registry
  std::optional<Credentials> credentials;  // for ref.registry (CredentialStore::Lookup)
  int concurrency = 3;                     // layers downloading at once
  int max_attempts = 5;                    // per blob and per manifest request
  std::chrono::milliseconds initial_backoff{250};  // doubled per attempt, at most 8 s
  uint64_t max_blob_bytes = kDefaultMaxBlobBytes;    // one layer, as declared and as sent
  uint64_t max_image_bytes = kDefaultMaxImageBytes;  // all layers and the config
  std::string os = "linux";
  std::string architecture = "amd64";
};

// One event per change of a blob's state. Called from the worker threads,
// one call at a time (serialised by Pull), so it must not block for long.
struct PullProgress {
  enum class Kind : int { kStarted = 0, kBytes = 1, kRetrying = 2, kDone = 3, kSkipped = 4 };
  Kind kind = Kind::kStarted;
  int layer = -1;          // index in the manifest's layers; -1: the config
  std::string digest;
  uint64_t done = 0;       // bytes present so far (including a resumed prefix)
  uint64_t total = 0;      // the descriptor's size
  int attempt = 1;
  std::string reason;      // kRetrying: why
};
const char* ToString(PullProgress::Kind kind);
using ProgressFn = std::function<void(const PullProgress&)>;

struct PullResult {
  std::string manifest_digest;  // the platform manifest (written to the target)
  std::string index_digest;     // the index/list the tag named (also written), or empty
  std::string index_bytes;
  std::string manifest_bytes;
  oci::Manifest manifest;
  std::string config_bytes;
  oci::ImageConfig config;
  std::vector<oci::Descriptor> layers;  // == manifest.layers
};

Result<PullResult> Pull(const ImageReference& ref, const PullOptions& options, BlobTarget& target,
                        const ProgressFn& progress = nullptr);

}  // namespace msb::image
