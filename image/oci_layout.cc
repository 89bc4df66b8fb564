// OCI layout import: reads oci-layout and index.json from a directory, walks
// the chosen entry to its linux/amd64 manifest and copies each blob from
// blobs/sha256/<hex> through a BlobSink. The sink verifies; this file only
// reads. A layout's contents are the user's input: every document is parsed
// by image/oci.h with its size bounded before it is read.
#include "image/oci_layout.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "common/fd.h"
#include "common/io.h"

namespace msb::image {
namespace {

constexpr int kMaxNesting = 4;
constexpr size_t kCopyChunk = 1 << 20;

Error Bad(const std::string& where, const std::string& what) {
  return Error(ErrorCode::kInvalidArgument, where + ": " + what);
}

// Reads a document blob back from the target, bounded by its descriptor.
Result<std::string> ReadStored(BlobTarget& target, const oci::Descriptor& d, const std::string& where,
                               const std::string& what) {
  if (d.size > static_cast<int64_t>(oci::kMaxDocumentBytes)) {
    return Bad(where, what + " " + d.digest + " is " + std::to_string(d.size) +
                          " bytes, more than a manifest, index or config may be");
  }
  auto bytes = ReadFile(target.BlobPath(d.digest));
  if (!bytes.ok()) return bytes.error().Wrap(where + ": " + what + " " + d.digest);
  if (static_cast<int64_t>(bytes->size()) != d.size) {
    return Bad(where, what + " " + d.digest + " is " + std::to_string(bytes->size()) + " bytes, its descriptor says " +
                          std::to_string(d.size));
  }
  return bytes;
}

// Copies dir/blobs/sha256/<hex> into target, resuming a kept partial.
Status CopyLayoutBlob(const std::string& dir, BlobTarget& target, const oci::Descriptor& d, const std::string& what) {
  if (target.HasBlob(d.digest)) return OkStatus();
  std::string where = "OCI layout " + dir;
  std::string path = dir + "/blobs/sha256/" + std::string(oci::DigestHex(d.digest));
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    int err = errno;
    if (err == ENOENT) {
      return Error(ErrorCode::kNotFound, where + ": " + what + " " + d.digest + " is missing (no file " + path + ")");
    }
    return Error::FromErrno(where + ": cannot open " + path, err);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Error::FromErrno("fstat " + path);
  if (!S_ISREG(st.st_mode)) return Bad(where, path + " is not a regular file");
  if (st.st_size != d.size) {
    return Bad(where, what + " " + d.digest + ": " + path + " is " + std::to_string(st.st_size) +
                          " bytes, the descriptor says " + std::to_string(d.size));
  }
  MSB_TRY(auto sink, target.OpenBlob(d.digest, d.size));
  uint64_t off = sink->Offset();
  if (off > static_cast<uint64_t>(d.size)) {
    MSB_TRY_STATUS(sink->Restart());
    off = 0;
  }
  // Offset() == size: the partial is whole, or another writer published the
  // blob meanwhile; Commit() verifies or has nothing to do.
  std::string buf(kCopyChunk, '\0');
  while (off < static_cast<uint64_t>(d.size)) {
    ssize_t n = ::pread(fd.get(), buf.data(), buf.size(), static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::FromErrno(where + ": reading " + path);
    if (n == 0) return Bad(where, path + " became shorter while it was read");
    if (auto s = sink->Write(std::string_view(buf.data(), static_cast<size_t>(n))); !s.ok()) {
      return s.error().Wrap(where + ": " + what);
    }
    off += static_cast<uint64_t>(n);
  }
  if (auto s = sink->Commit(); !s.ok()) return s.error().Wrap(where + ": " + what);
  return OkStatus();
}

std::string TagList(const std::vector<oci::Descriptor>& entries) {
  std::string out;
  for (const auto& e : entries) {
    auto it = e.annotations.find(std::string(kRefNameAnnotation));
    std::string name = it == e.annotations.end() ? "(untagged " + e.digest.substr(0, 19) + ")" : it->second;
    out += (out.empty() ? "" : ", ") + name.substr(0, 200);
  }
  return out;
}

}  // namespace

Status CheckLayoutVersion(std::string_view text, const std::string& where) {
  auto j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Bad(where, "oci-layout is not a JSON object");
  auto v = j.find("imageLayoutVersion");
  if (v == j.end() || !v->is_string()) return Bad(where, "oci-layout has no imageLayoutVersion");
  std::string version = v->get<std::string>();
  if (version.rfind("1.", 0) != 0) {
    return Bad(where, "oci-layout version \"" + version.substr(0, 40) + "\" is not supported (expected 1.x)");
  }
  return OkStatus();
}

Result<std::vector<oci::Descriptor>> LayoutEntries(std::string_view index_json, const std::string& where) {
  auto index = oci::ParseIndex(index_json);
  if (!index.ok()) return index.error().Wrap(where + ": index.json");
  return index->manifests;
}

Result<oci::Descriptor> ChooseLayoutEntry(const std::vector<oci::Descriptor>& entries, const std::string& tag,
                                          const std::string& where) {
  if (entries.empty()) return Error(ErrorCode::kNotFound, where + ": index.json lists no images");
  if (tag.empty()) {
    if (entries.size() == 1) return entries[0];
    return Error(ErrorCode::kInvalidArgument, where + " holds " + std::to_string(entries.size()) +
                                                  " images (" + TagList(entries) +
                                                  "); name one as oci-layout:PATH:TAG");
  }
  for (const auto& e : entries) {
    auto it = e.annotations.find(std::string(kRefNameAnnotation));
    if (it != e.annotations.end() && it->second == tag) return e;
  }
  return Error(ErrorCode::kNotFound, where + ": no image tagged " + tag + " (tags: " + TagList(entries) + ")");
}

Result<ImportedImage> ImportLayoutEntry(const oci::Descriptor& entry, BlobTarget& target, const EnsureBlobFn& ensure,
                                        const std::string& where) {
  ImportedImage out;
  if (auto it = entry.annotations.find(std::string(kRefNameAnnotation)); it != entry.annotations.end()) {
    out.name = it->second;
  }
  out.root_digest = entry.digest;
  oci::Descriptor cur = entry;
  std::string manifest_bytes;
  for (int depth = 0;; ++depth) {
    if (depth > kMaxNesting) return Bad(where, "indexes nest deeper than " + std::to_string(kMaxNesting));
    std::string what = depth == 0 ? "image " + entry.digest : "manifest " + cur.digest;
    MSB_TRY_STATUS(ensure(cur, depth == 0 ? "index entry" : "platform manifest"));
    MSB_TRY(std::string bytes, ReadStored(target, cur, where, what));
    auto kind = oci::ClassifyDocument(bytes, cur.media_type);
    if (!kind.ok()) return kind.error().Wrap(where + ": " + what);
    if (*kind == oci::DocumentKind::kManifest) {
      manifest_bytes = std::move(bytes);
      break;
    }
    auto index = oci::ParseIndex(bytes);
    if (!index.ok()) return index.error().Wrap(where + ": " + what);
    auto chosen = oci::SelectPlatform(*index, where);
    if (!chosen.ok()) return chosen.error();
    cur = *chosen;
  }
  out.manifest_digest = cur.digest;
  auto manifest = oci::ParseManifest(manifest_bytes);
  if (!manifest.ok()) return manifest.error().Wrap(where + ": manifest " + cur.digest);
  out.media_type = manifest->media_type.empty() ? std::string(oci::kMediaTypeOciManifest) : manifest->media_type;
  out.config_digest = manifest->config.digest;
  MSB_TRY_STATUS(ensure(manifest->config, "config"));
  MSB_TRY(std::string cfg_bytes, ReadStored(target, manifest->config, where, "config"));
  auto cfg = oci::ParseImageConfig(cfg_bytes);
  if (!cfg.ok()) return cfg.error().Wrap(where + ": config " + manifest->config.digest);
  if (cfg->os != "linux" || cfg->architecture != "amd64") {
    std::string plat = cfg->os + "/" + cfg->architecture;
    return Error(ErrorCode::kInvalidArgument, where + ": the image is " + plat.substr(0, 60) +
                                                  "; msb runs linux/amd64 images");
  }
  if (cfg->diff_ids.size() != manifest->layers.size()) {
    return Bad(where, "manifest " + cur.digest + " has " + std::to_string(manifest->layers.size()) +
                          " layers but its config lists " + std::to_string(cfg->diff_ids.size()) + " diff_ids");
  }
  out.size_bytes = static_cast<int64_t>(manifest_bytes.size() + cfg_bytes.size());
  for (size_t i = 0; i < manifest->layers.size(); ++i) {
    const oci::Descriptor& l = manifest->layers[i];
    std::string what = "layers[" + std::to_string(i) + "]";
    if (auto c = oci::ClassifyLayer(l.media_type); !c.ok()) return c.error().Wrap(where + ": " + what);
    MSB_TRY_STATUS(ensure(l, what));
    out.size_bytes += l.size;
  }
  return out;
}

Result<ImportedImage> ImportOciLayout(const std::string& dir, const std::string& tag, BlobTarget& target) {
  std::string where = "OCI layout " + dir;
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return Error(ErrorCode::kNotFound, where + ": " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) return Error(ErrorCode::kInvalidArgument, where + ": not a directory");
  auto layout = ReadFile(dir + "/oci-layout");
  if (!layout.ok()) {
    return Error(ErrorCode::kInvalidArgument,
                 where + ": not an OCI image layout: no readable oci-layout file (" + layout.error().message() + ")");
  }
  MSB_TRY_STATUS(CheckLayoutVersion(*layout, where));
  std::string index_path = dir + "/index.json";
  if (::stat(index_path.c_str(), &st) != 0) {
    return Error(ErrorCode::kInvalidArgument, where + ": not an OCI image layout: no index.json");
  }
  if (st.st_size > static_cast<off_t>(oci::kMaxDocumentBytes)) return Bad(where, "index.json is too large");
  MSB_TRY(std::string index, ReadFile(index_path));
  MSB_TRY(auto entries, LayoutEntries(index, where));
  MSB_TRY(oci::Descriptor entry, ChooseLayoutEntry(entries, tag, where));
  EnsureBlobFn ensure = [&](const oci::Descriptor& d, const std::string& what) {
    return CopyLayoutBlob(dir, target, d, what);
  };
  return ImportLayoutEntry(entry, target, ensure, where);
}

}  // namespace msb::image
