// OCI and Docker image documents: typed, validating parsers for the image
// index / manifest list, the image manifest / schema-2 manifest and the image
// config, plus digest and media-type checks. Pure functions over bytes: no
// I/O, no registry, no store. Every parse error is kInvalidArgument and names
// the document and the field ("manifest: layers[2].digest: ...").
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace msb::image::oci {

// Media types (OCI image-spec v1.1, Docker image manifest v2.2).
inline constexpr std::string_view kMediaTypeOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kMediaTypeOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kMediaTypeOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kMediaTypeOciLayer = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kMediaTypeOciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kMediaTypeOciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
// Non-distributable layers: the prefix of the three variants (refused).
inline constexpr std::string_view kMediaTypeOciLayerNondistributablePrefix =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
inline constexpr std::string_view kMediaTypeDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kMediaTypeDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kMediaTypeDockerManifestV1 =
    "application/vnd.docker.distribution.manifest.v1+json";
inline constexpr std::string_view kMediaTypeDockerManifestV1Signed =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
inline constexpr std::string_view kMediaTypeDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kMediaTypeDockerLayer = "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kMediaTypeDockerForeignLayer =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

// The largest manifest, index or config document accepted (bytes).
inline constexpr size_t kMaxDocumentBytes = 4 << 20;

// "sha256:" followed by exactly 64 lowercase hex digits; nothing else.
bool IsValidDigest(std::string_view digest);
// kInvalidArgument "<what>: digest "x" is not sha256:<64 lowercase hex>".
Status ValidateDigest(std::string_view digest, std::string_view what);
// "sha256:" + hex sha256 of bytes.
std::string DigestOf(std::string_view bytes);
// The 64 hex digits of a valid digest (digest.substr(7)).
std::string_view DigestHex(std::string_view digest);

struct Platform {
  std::string architecture;
  std::string os;
  std::string variant;  // informative only: never used to choose
  std::string ToString() const;  // "linux/arm64" ("linux/arm/v7" with variant)
};

struct Descriptor {
  std::string media_type;
  std::string digest;  // valid per IsValidDigest
  int64_t size = 0;    // >= 0
  std::vector<std::string> urls;
  std::map<std::string, std::string> annotations;
  std::optional<Platform> platform;  // index entries only
};

// An OCI image index or a Docker manifest list.
struct Index {
  std::string media_type;  // as written in the document (may be empty for OCI)
  std::vector<Descriptor> manifests;
};

// An OCI image manifest or a Docker schema-2 manifest.
struct Manifest {
  std::string media_type;  // as written in the document (may be empty for OCI)
  Descriptor config;
  std::vector<Descriptor> layers;
  std::map<std::string, std::string> annotations;
};

// The parts of an image config msb uses.
struct ImageConfig {
  std::string architecture;
  std::string os;
  std::string variant;
  std::string created;  // RFC 3339 text as written, may be empty
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "KEY=value"
  std::string working_dir;
  std::string user;
  std::vector<std::string> exposed_ports;  // "80/tcp", sorted
  std::vector<std::string> diff_ids;       // rootfs.diff_ids, each a valid digest
};

enum class DocumentKind : int { kIndex = 0, kManifest = 1 };
const char* ToString(DocumentKind kind);

// Decides whether bytes are an index/list or a manifest, from the document's
// mediaType, else the transport's content type (registry Content-Type, may be
// empty), else its shape ("manifests" vs "layers"). Schema 1 manifests are
// refused here with "schema 1 manifests are not supported; push the image
// again with a current client".
Result<DocumentKind> ClassifyDocument(std::string_view bytes, std::string_view content_type = {});

Result<Index> ParseIndex(std::string_view bytes);
Result<Manifest> ParseManifest(std::string_view bytes);
Result<ImageConfig> ParseImageConfig(std::string_view bytes);

// The entry of index for os/architecture (variant ignored; the first match
// wins). Absent: kNotFound "image <image_name> has no linux/amd64 manifest;
// it has: linux/arm64, linux/s390x". Entries that are not manifests (e.g.
// attestations with platform unknown/unknown) are listed but never chosen.
Result<Descriptor> SelectPlatform(const Index& index, std::string_view image_name,
                                  std::string_view os = "linux", std::string_view architecture = "amd64");

// How a layer blob is compressed. Refuses non-distributable and foreign
// layers (they name a URL outside the registry) and unknown media types, with
// a sentence naming the media type.
enum class LayerCompression : int { kNone = 0, kGzip = 1, kZstd = 2 };
const char* ToString(LayerCompression c);
Result<LayerCompression> ClassifyLayer(std::string_view media_type);

}  // namespace msb::image::oci
