// OCI image archives of a base image plus appended layers
// (oci_archive_writer.h): documents with nlohmann::json (keys sorted, so the
// same input gives the same digests), the tar with libarchive's pax writer.
#include "image/oci_archive_writer.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <set>

#include <nlohmann/json.hpp>

#include "common/archive_ptr.h"
#include "common/fd.h"
#include "image/oci_layout.h"

namespace msb::image {
namespace {

using json = nlohmann::json;

json DescriptorJson(std::string_view media_type, const std::string& digest, uint64_t size) {
  return json{{"mediaType", media_type}, {"digest", digest}, {"size", size}};
}

class TarWriter {
 public:
  explicit TarWriter(int fd) : a_(archive_write_new()) {
    archive_write_set_format_pax_restricted(a_.get());
    archive_write_add_filter_none(a_.get());
    open_ = archive_write_open_fd(a_.get(), fd) == ARCHIVE_OK;
  }
  Status Opened() { return open_ ? OkStatus() : Fail("starting the archive"); }
  Status Dir(const std::string& name) {
    ArchiveEntryPtr e(archive_entry_new());
    archive_entry_set_pathname(e.get(), name.c_str());
    archive_entry_set_filetype(e.get(), AE_IFDIR);
    archive_entry_set_perm(e.get(), 0755);
    if (archive_write_header(a_.get(), e.get()) < ARCHIVE_WARN) return Fail("writing " + name);
    return OkStatus();
  }
  Status Bytes(const std::string& name, std::string_view bytes) {
    MSB_TRY_STATUS(Header(name, bytes.size()));
    if (!bytes.empty() && archive_write_data(a_.get(), bytes.data(), bytes.size()) < 0) return Fail("writing " + name);
    return OkStatus();
  }
  Status File(const std::string& name, const std::string& path, uint64_t size) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return Error::FromErrno("opening " + path);
    MSB_TRY_STATUS(Header(name, size));
    std::vector<char> buf(1 << 20);
    uint64_t left = size;
    while (left > 0) {
      ssize_t n = ::read(fd.get(), buf.data(), std::min<uint64_t>(buf.size(), left));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Error::FromErrno("reading " + path);
      if (n == 0) return Error(ErrorCode::kIo, path + " is shorter than its " + std::to_string(size) + " bytes");
      if (archive_write_data(a_.get(), buf.data(), static_cast<size_t>(n)) < 0) return Fail("writing " + name);
      left -= static_cast<uint64_t>(n);
    }
    char extra;
    if (::read(fd.get(), &extra, 1) != 0)
      return Error(ErrorCode::kIo, path + " is longer than its " + std::to_string(size) + " bytes");
    return OkStatus();
  }
  Status Close() {
    if (archive_write_close(a_.get()) != ARCHIVE_OK) return Fail("finishing the archive");
    return OkStatus();
  }

 private:
  Status Header(const std::string& name, uint64_t size) {
    ArchiveEntryPtr e(archive_entry_new());
    archive_entry_set_pathname(e.get(), name.c_str());
    archive_entry_set_filetype(e.get(), AE_IFREG);
    archive_entry_set_perm(e.get(), 0644);
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(size));
    if (archive_write_header(a_.get(), e.get()) < ARCHIVE_WARN) return Fail("writing the header of " + name);
    return OkStatus();
  }
  Error Fail(const std::string& what) {
    const char* m = archive_error_string(a_.get());
    return Error(ErrorCode::kIo, what + ": " + (m != nullptr ? m : "?"), archive_errno(a_.get()));
  }
  ArchiveWritePtr a_;
  bool open_ = false;
};

std::string BlobName(const std::string& digest) { return "blobs/sha256/" + std::string(oci::DigestHex(digest)); }

}  // namespace

std::string_view OciLayerMediaType(oci::LayerCompression compression) {
  switch (compression) {
    case oci::LayerCompression::kGzip: return oci::kMediaTypeOciLayerGzip;
    case oci::LayerCompression::kZstd: return oci::kMediaTypeOciLayerZstd;
    case oci::LayerCompression::kNone: break;
  }
  return oci::kMediaTypeOciLayer;
}

Result<ArchiveDocuments> BuildArchiveDocuments(std::string_view base_config,
                                               const std::vector<oci::Descriptor>& base_layers,
                                               const std::vector<AppendedLayer>& layers, const std::string& ref_name,
                                               const std::string& created) {
  json config = json::parse(base_config, nullptr, false);
  if (!config.is_object()) return Error(ErrorCode::kInvalidArgument, "the base image's config is not a JSON object");
  auto rootfs = config.find("rootfs");
  if (rootfs == config.end() || !rootfs->is_object() || !rootfs->contains("diff_ids") ||
      !(*rootfs)["diff_ids"].is_array())
    return Error(ErrorCode::kInvalidArgument, "the base image's config has no rootfs.diff_ids");
  json& diff_ids = (*rootfs)["diff_ids"];
  if (diff_ids.size() != base_layers.size())
    return Error(ErrorCode::kInvalidArgument, "the base image's config lists " + std::to_string(diff_ids.size()) +
                                                  " diff_ids for " + std::to_string(base_layers.size()) + " layers");
  ArchiveDocuments docs;
  docs.layers = base_layers;
  for (const auto& l : layers) {
    MSB_TRY_STATUS(oci::ValidateDigest(l.digest, "appended layer " + l.path));
    diff_ids.push_back(l.digest);
    oci::Descriptor d;
    d.media_type = std::string(oci::kMediaTypeOciLayer);
    d.digest = l.digest;
    d.size = static_cast<int64_t>(l.size);
    docs.layers.push_back(d);
    auto history = config.find("history");
    if (history != config.end() && history->is_array()) {
      history->push_back(json{{"created", created}, {"created_by", l.created_by}, {"comment", l.comment}});
    }
  }
  config["created"] = created;
  docs.config = config.dump();
  docs.config_digest = oci::DigestOf(docs.config);

  json manifest{{"schemaVersion", 2}, {"mediaType", oci::kMediaTypeOciManifest}};
  manifest["config"] = DescriptorJson(oci::kMediaTypeOciConfig, docs.config_digest, docs.config.size());
  json jl = json::array();
  for (const auto& d : docs.layers) jl.push_back(DescriptorJson(d.media_type, d.digest, static_cast<uint64_t>(d.size)));
  manifest["layers"] = jl;
  docs.manifest = manifest.dump();
  docs.manifest_digest = oci::DigestOf(docs.manifest);

  json entry = DescriptorJson(oci::kMediaTypeOciManifest, docs.manifest_digest, docs.manifest.size());
  if (!ref_name.empty()) entry["annotations"] = json{{std::string(kRefNameAnnotation), ref_name}};
  json index{{"schemaVersion", 2}, {"mediaType", oci::kMediaTypeOciIndex}, {"manifests", json::array({entry})}};
  docs.index = index.dump();
  return docs;
}

Status WriteOciArchive(int out_fd, const ArchiveDocuments& docs, const std::vector<ArchiveBlobFile>& blobs) {
  TarWriter tar(out_fd);
  MSB_TRY_STATUS(tar.Opened());
  MSB_TRY_STATUS(tar.Bytes("oci-layout", R"({"imageLayoutVersion":"1.0.0"})"));
  MSB_TRY_STATUS(tar.Bytes("index.json", docs.index));
  MSB_TRY_STATUS(tar.Dir("blobs/"));
  MSB_TRY_STATUS(tar.Dir("blobs/sha256/"));
  std::set<std::string> written;
  for (const auto& b : blobs) {
    MSB_TRY_STATUS(oci::ValidateDigest(b.digest, "blob " + b.path));
    if (!written.insert(b.digest).second) continue;
    MSB_TRY_STATUS(tar.File(BlobName(b.digest), b.path, b.size));
  }
  if (written.insert(docs.config_digest).second) MSB_TRY_STATUS(tar.Bytes(BlobName(docs.config_digest), docs.config));
  if (written.insert(docs.manifest_digest).second)
    MSB_TRY_STATUS(tar.Bytes(BlobName(docs.manifest_digest), docs.manifest));
  return tar.Close();
}

}  // namespace msb::image
