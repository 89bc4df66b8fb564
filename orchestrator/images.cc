#include "orchestrator/images.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <set>

#include "common/fd.h"
#include "common/io.h"
#include "storage/disk.h"
#include "image/image_store.h"
#include "image/oci_layout.h"
#include "image/pull.h"
#include "image/registry_config.h"
#include "image/flatten.h"
#include "orchestrator/launch.h"
#include "orchestrator/snapshot.h"
#include "schema/values.h"
#include "vm/accel.h"
#include "vm/initramfs.h"
#include "vm/kernel.h"
#include "vm/spec.h"

namespace msb::orchestrator {
namespace {

// A size from the environment ("512M", "20G"), else `fallback`.
Result<uint64_t> SizeFromEnv(const char* name, uint64_t fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  auto bytes = schema::ParseSize(text);
  if (!bytes.ok()) return bytes.error().Wrap(std::string(name) + " " + text);
  return *bytes;
}

Result<ResolvedImage> EnsureLocalDir(const schema::Image& image, const ImageOptions& options) {
  ResolvedImage r;
  r.reference = image.reference;
  // One walk of the tree: the digest is that of the content the disk holds.
  storage::TreeSummary sum;
  if (options.fetch) {
    MSB_TRY(r.base_disk, storage::BuildBaseDiskFromDir(image.path, MsbHome() + "/images/local", &sum));
  } else {
    MSB_TRY(sum, storage::HashTree(image.path));
  }
  r.digest = "sha256:" + sum.sha256;
  return r;
}

std::string ShortDigest(const std::string& digest) {
  return digest.size() > 19 ? digest.substr(7, 12) : digest;
}

std::string Mib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

// Pull progress on stderr: a bar per blob redrawn in place on a terminal, one
// line per finished blob otherwise, nothing when quiet.
class ProgressPrinter {
 public:
  ProgressPrinter(std::string reference, bool quiet)
      : reference_(std::move(reference)), quiet_(quiet), tty_(::isatty(2) == 1) {}

  void operator()(const image::PullProgress& p) {
    if (quiet_) return;
    std::lock_guard g(mu_);
    std::string what = p.layer < 0 ? "config" : "layer " + std::to_string(p.layer + 1);
    std::string name = what + " " + ShortDigest(p.digest);
    if (!tty_) {
      if (p.kind == image::PullProgress::Kind::kDone) {
        std::fprintf(stderr, "%s: %s pulled (%s)\n", reference_.c_str(), name.c_str(), Mib(p.total).c_str());
      } else if (p.kind == image::PullProgress::Kind::kSkipped) {
        std::fprintf(stderr, "%s: %s already present\n", reference_.c_str(), name.c_str());
      } else if (p.kind == image::PullProgress::Kind::kRetrying) {
        std::fprintf(stderr, "%s: %s: retrying (%s)\n", reference_.c_str(), name.c_str(), p.reason.c_str());
      }
      return;
    }
    size_t i = 0;
    while (i < rows_.size() && rows_[i].digest != p.digest) ++i;
    if (i == rows_.size()) rows_.push_back({p.digest, name, ""});
    std::string state;
    switch (p.kind) {
      case image::PullProgress::Kind::kDone: state = "done " + Mib(p.total); break;
      case image::PullProgress::Kind::kSkipped: state = "already present"; break;
      case image::PullProgress::Kind::kRetrying: state = "retrying: " + p.reason; break;
      default: {
        int width = 30;
        int filled = p.total ? static_cast<int>(width * std::min(p.done, p.total) / p.total) : 0;
        state = "[" + std::string(filled, '#') + std::string(width - filled, ' ') + "] " +
                Mib(p.done) + " / " + Mib(p.total);
      }
    }
    rows_[i].state = state;
    auto now = std::chrono::steady_clock::now();
    bool final = p.kind != image::PullProgress::Kind::kBytes;
    if (!final && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    if (drawn_ > 0) std::fprintf(stderr, "\x1b[%zuA", drawn_);
    for (const auto& r : rows_) std::fprintf(stderr, "\x1b[2K%s  %s\n", r.name.c_str(), r.state.c_str());
    drawn_ = rows_.size();
  }

 private:
  struct Row {
    std::string digest, name, state;
  };
  std::string reference_;
  bool quiet_;
  bool tty_;
  std::mutex mu_;
  std::vector<Row> rows_;
  size_t drawn_ = 0;
  std::chrono::steady_clock::time_point last_draw_{};
};

ImageDefaults DefaultsOf(const image::oci::ImageConfig& c) {
  ImageDefaults d;
  d.entrypoint = c.entrypoint;
  d.cmd = c.cmd;
  d.env = c.env;
  d.workdir = c.working_dir;
  d.user = c.user;
  d.exposed_ports = c.exposed_ports;
  return d;
}

Status RecordImage(Store& store, const std::string& reference, const std::string& digest,
                   int64_t size, const std::string& base_disk) {
  ImageRecord rec;
  rec.reference = reference;
  rec.digest = digest;
  rec.size_bytes = size;
  rec.base_disk = base_disk;
  rec.created_at = static_cast<int64_t>(std::time(nullptr));
  return store.UpsertImage(rec);
}

// Builds the image's base disk in a builder VM unless it exists. Concurrent
// callers for one image wait for each other (flock beside the disk).
Status EnsureBaseDisk(const image::StoredImage& image, const ImageOptions& options) {
  const std::string& disk = image.base_disk;
  if (::access(disk.c_str(), F_OK) == 0) return OkStatus();
  std::string lock_path = disk + ".lock";
  UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock) return Error::FromErrno("cannot open " + lock_path);
  if (::flock(lock.get(), LOCK_EX) != 0) return Error::FromErrno("cannot lock " + lock_path);
  if (::access(disk.c_str(), F_OK) == 0) return OkStatus();  // built meanwhile
  if (!image.missing_blobs.empty()) {
    return Error(ErrorCode::kState, "the store lacks blob " + image.missing_blobs.front() +
                                        "; pull the image again");
  }
  image::FlattenRequest req;
  for (const auto& l : image.layers) {
    image::UnpackLayerSpec spec;
    spec.path = l.path;
    spec.media_type = l.media_type;
    spec.size = static_cast<uint64_t>(l.size);
    spec.diff_id = l.diff_id;
    spec.digest = l.digest;
    req.layers.push_back(std::move(spec));
  }
  req.output = disk;
  MSB_TRY(req.vm, HostBuilderVmOptions());
  if (!options.quiet) {
    std::fprintf(stderr, "unpacking %s (%zu layers) in a builder VM\n",
                 ShortDigest(image.manifest_digest).c_str(), image.layers.size());
  }
  auto r = image::FlattenLayers(req);
  // Done either way: a failed build leaves no lock file behind (a waiter
  // holding the old one tries again itself).
  (void)::unlink(lock_path.c_str());
  if (!r.ok()) return r.error().Wrap("unpacking image " + image.manifest_digest);
  return OkStatus();
}

Result<ResolvedImage> FromStore(const image::ImageStore& images, const std::string& reference,
                                const std::string& digest, const ImageOptions& options) {
  MSB_TRY(image::StoredImage stored, images.ReadImage(digest));
  ResolvedImage r;
  r.reference = reference;
  r.digest = stored.manifest_digest;
  r.defaults = DefaultsOf(stored.config);
  if (options.fetch && options.unpack) {
    MSB_TRY_STATUS(EnsureBaseDisk(stored, options));
    r.base_disk = stored.base_disk;
  }
  return r;
}

Result<ResolvedImage> EnsureRegistryImage(Store& store, const schema::Image& image,
                                          const ImageOptions& options) {
  MSB_TRY(image::ImageStore images, image::ImageStore::Open(image::DefaultImageRoot()));
  MSB_TRY(auto pinned, store.GetImage(image.reference));
  // A digest in the reference is the pin; else the store's record of the tag.
  std::string digest = !image.digest.empty() ? image.digest : (pinned ? pinned->digest : "");
  bool have = !digest.empty() && images.ReadImage(digest).ok();
  if (have && !options.refresh) return FromStore(images, image.reference, digest, options);
  if (!options.fetch) {
    ResolvedImage r;
    r.reference = image.reference;
    r.digest = digest;  // empty: never pulled; the plan says create
    return r;
  }
  MSB_TRY(image::StoreLock import_lock, images.LockForImport());
  image::PullOptions po;
  MSB_TRY(po.registries, image::RegistryConfig::LoadDefault());
  MSB_TRY_STATUS(po.registries.ApplyOverrides(options.insecure_registries, options.registry_cas));
  MSB_TRY(po.credentials, image::CredentialStore::Default().Lookup(image.registry));
  MSB_TRY(po.max_blob_bytes, SizeFromEnv("MSB_PULL_MAX_BLOB_SIZE", image::kDefaultMaxBlobBytes));
  MSB_TRY(po.max_image_bytes, SizeFromEnv("MSB_PULL_MAX_IMAGE_SIZE", image::kDefaultMaxImageBytes));
  image::ImageReference ref;
  ref.registry = image.registry;
  ref.repository = image.repository;
  ref.tag = image.tag;
  ref.digest = image.digest;
  ProgressPrinter printer(image.reference, options.quiet);
  MSB_TRY(image::PullResult pulled, image::Pull(ref, po, images, [&](const image::PullProgress& p) { printer(p); }));
  MSB_TRY(image::StoredImage stored, images.ReadImage(pulled.manifest_digest));
  // The base disk first: an image whose layers do not unpack is not pinned.
  MSB_TRY(ResolvedImage resolved, FromStore(images, image.reference, pulled.manifest_digest, options));
  MSB_TRY_STATUS(RecordImage(store, image.reference, pulled.manifest_digest, stored.size_bytes,
                             stored.base_disk));
  if (!options.quiet) {
    std::fprintf(stderr, "%s: pinned to %s\n", image.reference.c_str(), pulled.manifest_digest.c_str());
  }
  return resolved;
}

// An OCI layout is imported on every use (blobs already stored are skipped),
// so that a rebuilt layout is picked up like an edited directory.
Result<ResolvedImage> EnsureLayoutImage(Store& store, const schema::Image& image,
                                        const ImageOptions& options) {
  MSB_TRY(image::ImageStore images, image::ImageStore::Open(image::DefaultImageRoot()));
  if (!options.fetch) {
    MSB_TRY(auto pinned, store.GetImage(image.reference));
    if (pinned && images.ReadImage(pinned->digest).ok()) {
      return FromStore(images, image.reference, pinned->digest, options);
    }
    ResolvedImage r;
    r.reference = image.reference;
    return r;
  }
  MSB_TRY(image::StoreLock import_lock, images.LockForImport());
  MSB_TRY(image::ImportedImage imported, image::ImportOciLayout(image.path, image.tag, images));
  MSB_TRY(image::StoredImage stored, images.ReadImage(imported.manifest_digest));
  MSB_TRY(ResolvedImage resolved, FromStore(images, image.reference, imported.manifest_digest, options));
  MSB_TRY_STATUS(RecordImage(store, image.reference, imported.manifest_digest, stored.size_bytes,
                             stored.base_disk));
  return resolved;
}

}  // namespace

nlohmann::json ToJson(const ImageDefaults& d) {
  return nlohmann::json{{"entrypoint", d.entrypoint}, {"cmd", d.cmd},   {"env", d.env},
                        {"workdir", d.workdir},       {"user", d.user}, {"exposed_ports", d.exposed_ports}};
}

ImageDefaults ImageDefaultsFromJson(const nlohmann::json& j) {
  ImageDefaults d;
  if (!j.is_object()) return d;
  auto list = [&](const char* key, std::vector<std::string>& out) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_array()) return;
    for (const auto& e : *it)
      if (e.is_string()) out.push_back(e.get<std::string>());
  };
  auto text = [&](const char* key, std::string& out) {
    auto it = j.find(key);
    if (it != j.end() && it->is_string()) out = it->get<std::string>();
  };
  list("entrypoint", d.entrypoint);
  list("cmd", d.cmd);
  list("env", d.env);
  text("workdir", d.workdir);
  text("user", d.user);
  list("exposed_ports", d.exposed_ports);
  return d;
}

ImageDefaults DefaultsForDigest(const std::string& digest) {
  auto images = image::ImageStore::Open(image::DefaultImageRoot());
  if (!images.ok()) return {};
  auto stored = images->ReadImage(digest);
  if (!stored.ok()) return {};
  return DefaultsOf(stored->config);
}

Result<ResolvedImage> EnsureImage(Store& store, const schema::Image& image,
                                  const ImageOptions& options) {
  switch (image.kind) {
    case schema::Image::Kind::kLocalDir:
      return EnsureLocalDir(image, options);
    case schema::Image::Kind::kRegistry:
      return EnsureRegistryImage(store, image, options);
    case schema::Image::Kind::kOciLayout:
      return EnsureLayoutImage(store, image, options);
    case schema::Image::Kind::kSnapshot:
      return ResolveSnapshotImage(store, image.path);
  }
  return Error(ErrorCode::kInternal, "image " + image.reference + ": unknown kind");
}

Result<std::map<std::string, ResolvedImage>> ResolveImages(Store& store,
                                                           const schema::Project& project,
                                                           const ImageOptions& options) {
  std::map<std::string, ResolvedImage> out;
  std::map<std::string, ResolvedImage> by_reference;  // each distinct image once
  for (const auto& [name, sb] : project.sandboxes) {
    auto it = by_reference.find(sb.image.reference);
    if (it == by_reference.end()) {
      auto r = EnsureImage(store, sb.image, options);
      if (!r.ok()) return r.error().Wrap("sandbox " + name + ": image " + sb.image.reference);
      it = by_reference.emplace(sb.image.reference, std::move(*r)).first;
    }
    out[name] = it->second;
  }
  return out;
}

std::map<std::string, std::string> DigestsOf(const std::map<std::string, ResolvedImage>& images) {
  std::map<std::string, std::string> d;
  for (const auto& [name, r] : images) d[name] = r.digest;
  return d;
}

void ApplyImageDefaults(const ImageDefaults& defaults, bool command_given,
                        agent::BootConfig& boot) {
  std::vector<std::string> argv = defaults.entrypoint;
  if (command_given) {
    argv.insert(argv.end(), boot.command.begin(), boot.command.end());
  } else {
    argv.insert(argv.end(), defaults.cmd.begin(), defaults.cmd.end());
  }
  boot.command = std::move(argv);
  // The image's variables first, each overridden by a sandbox variable of
  // the same name.
  std::set<std::string> own;
  for (const auto& e : boot.env) own.insert(e.substr(0, e.find('=')));
  std::vector<std::string> env;
  for (const auto& e : defaults.env) {
    if (!own.count(e.substr(0, e.find('=')))) env.push_back(e);
  }
  env.insert(env.end(), boot.env.begin(), boot.env.end());
  boot.env = std::move(env);
  if (boot.workdir.empty()) boot.workdir = defaults.workdir;
  if (boot.user.empty()) boot.user = defaults.user;
}

}  // namespace msb::orchestrator
