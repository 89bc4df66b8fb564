// `msb snapshot export` (snapshot.h ExportSnapshot): the base image's stored
// blobs and one layer per snapshot level into an OCI image archive. The
// levels' tars are made in a builder VM (image/layer_export.h) in a
// directory beside the output, the archive written to a temporary name there
// (image/oci_archive_writer.h) and renamed over the output once complete.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>

#include "common/fd.h"
#include "image/image_store.h"
#include "image/layer_export.h"
#include "image/oci_archive_writer.h"
#include "orchestrator/launch.h"
#include "orchestrator/snapshot.h"
#include "vm/accel.h"
#include "vm/spec.h"

namespace msb::orchestrator {
namespace {

// A directory made here, removed with everything in it.
class WorkDir {
 public:
  ~WorkDir() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  Status Create(const std::string& parent) {
    std::string tmpl = parent + "/.msb-export-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) return Error::FromErrno("creating a work directory in " + parent);
    path_ = tmpl;
    return OkStatus();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string NowRfc3339() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// "sha256:<hex>" of the manifest whose base disk is `disk` in the image
// store ("" when it is not one: a local directory's disk).
std::string ManifestOfDisk(const image::ImageStore& images, const std::string& disk) {
  const std::string prefix = images.root() + "/disks/";
  if (disk.rfind(prefix, 0) != 0) return "";
  std::string file = disk.substr(prefix.size());
  if (file.size() != 64 + 5 || file.substr(64) != ".ext4") return "";
  std::string digest = "sha256:" + file.substr(0, 64);
  return image::oci::IsValidDigest(digest) ? digest : "";
}

}  // namespace

Result<SnapshotExport> ExportSnapshot(Store& store, const std::string& name, const SnapshotExportOptions& options) {
  MSB_TRY(auto rec, store.GetSnapshot(name));
  if (!rec) return Error(ErrorCode::kNotFound, "no snapshot named " + name + " (see msb snapshot ls)");
  MSB_TRY(std::vector<std::string> layer_disks, SnapshotLayers(*rec));
  MSB_TRY(image::ImageStore images, image::ImageStore::Open(image::DefaultImageRoot()));
  const std::string manifest = ManifestOfDisk(images, rec->base_disk);
  if (manifest.empty()) {
    return Error(ErrorCode::kInvalidArgument,
                 "snapshot " + name + " sits on a local directory (" + rec->base_disk +
                     "), which has no image layers to export; snapshot a sandbox of a registry, oci-layout: or "
                     "msb load image instead");
  }
  // Blobs stay while they are read: no garbage collection meanwhile.
  MSB_TRY(image::StoreLock hold, images.LockForImport());
  auto stored = images.ReadImage(manifest);
  if (!stored.ok()) {
    return stored.error().Wrap("snapshot " + name + ": its base image " + manifest +
                               " is not in the image store (was it removed by hand?)");
  }
  if (!stored->missing_blobs.empty()) {
    return Error(ErrorCode::kState, "snapshot " + name + ": the image store lacks blob " +
                                        stored->missing_blobs.front() + " of its base image; pull the image again");
  }
  for (const auto& d : layer_disks) {
    if (::access(d.c_str(), R_OK) != 0) return Error::FromErrno("snapshot " + name + ": its layer " + d + " is missing");
  }
  MSB_TRY(std::string config, images.ReadDocument(stored->config_digest));

  const bool to_stdout = options.output == "-";
  std::string out_path = options.output;
  if (!to_stdout && out_path.rfind('/', 0) != 0) out_path = std::filesystem::current_path().string() + "/" + out_path;
  std::string dir;
  if (to_stdout) {
    const char* t = std::getenv("TMPDIR");
    dir = t != nullptr && *t != '\0' ? t : "/tmp";
  } else {
    dir = std::filesystem::path(out_path).parent_path().string();
    struct stat st{};
    if (::stat(out_path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
      return Error(ErrorCode::kInvalidArgument, options.output + " is a directory; give a file name (-o FILE.tar)");
  }
  WorkDir work;
  MSB_TRY_STATUS(work.Create(dir));

  image::LayerExportRequest req;
  req.layer_disks = layer_disks;
  req.work_dir = work.path();
  MSB_TRY(req.vm, HostBuilderVmOptions());
  if (!options.quiet) {
    std::fprintf(stderr, "exporting snapshot %s (%zu image layers, %zu snapshot layers) in a builder VM\n",
                 name.c_str(), stored->layers.size(), layer_disks.size());
  }
  auto exported = image::ExportLayers(req);
  if (!exported.ok()) return exported.error().Wrap("snapshot " + name);

  std::vector<image::oci::Descriptor> base;
  std::vector<image::ArchiveBlobFile> blobs;
  for (const auto& l : stored->layers) {
    image::oci::Descriptor d;
    d.media_type = std::string(image::OciLayerMediaType(l.compression));
    d.digest = l.digest;
    d.size = l.size;
    base.push_back(d);
    blobs.push_back({l.digest, l.path, static_cast<uint64_t>(l.size)});
  }
  std::vector<image::AppendedLayer> appended;
  for (size_t i = 0; i < exported->size(); ++i) {
    const auto& e = (*exported)[i];
    // $MSB_HOME/snapshots/<level>/layer.ext4: the snapshot that level is.
    std::string level = std::filesystem::path(layer_disks[i]).parent_path().filename().string();
    std::string source = rec->source;
    if (level != name) {
      auto other = store.GetSnapshot(level);
      source = other.ok() && other->has_value() ? (*other)->source : "";
    }
    appended.push_back({e.path, e.digest, e.size, "msb snapshot create " + source + " " + level,
                        "msb snapshot " + level});
    blobs.push_back({e.digest, e.path, e.size});
  }
  MSB_TRY(image::ArchiveDocuments docs,
          image::BuildArchiveDocuments(config, base, appended, options.ref_name.empty() ? name : options.ref_name,
                                       NowRfc3339()));
  SnapshotExport result;
  result.manifest_digest = docs.manifest_digest;
  result.image_layers = stored->layers.size();
  result.snapshot_layers = exported->size();
  if (to_stdout) {
    MSB_TRY_STATUS(image::WriteOciArchive(STDOUT_FILENO, docs, blobs));
    return result;
  }
  std::string tmp = dir + "/." + std::filesystem::path(out_path).filename().string() + ".tmp-XXXXXX";
  UniqueFd fd(::mkstemp(tmp.data()));
  if (!fd) return Error::FromErrno("creating a temporary file in " + dir);
  auto fail = [&](const Error& e) -> Result<SnapshotExport> {
    ::unlink(tmp.c_str());
    return e;
  };
  if (::fchmod(fd.get(), 0644) != 0) return fail(Error::FromErrno("chmod " + tmp));
  if (auto st = image::WriteOciArchive(fd.get(), docs, blobs); !st.ok()) return fail(st.error().Wrap("writing " + tmp));
  if (::fsync(fd.get()) != 0) return fail(Error::FromErrno("fsync " + tmp));
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) return fail(Error::FromErrno("stat " + tmp));
  result.bytes = static_cast<uint64_t>(st.st_size);
  if (::rename(tmp.c_str(), out_path.c_str()) != 0) return fail(Error::FromErrno("renaming " + tmp + " to " + out_path));
  return result;
}

}  // namespace msb::orchestrator
