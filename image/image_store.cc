// The image store on a POSIX file system: flock(2) for writer exclusion and
// the GC lock, fsync + rename(2) for publication, the streaming SHA-256 of
// common/sha256.h for verification. See image_store.h for the layout and the rules.
#include "image/image_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/hex.h"
#include "common/io.h"
#include "common/sha256.h"

namespace msb::image {
namespace {

constexpr size_t kChunk = 1 << 20;
constexpr int kMaxIndexDepth = 4;
// Where base disks named <hex>.ext4 live: disks/ for image manifests (the
// unpacker's), local/ for local directories' tree hashes (orchestrator).
constexpr const char* kDiskDirs[] = {"disks", "local"};

std::string Hex(const std::string& digest) { return std::string(oci::DigestHex(digest)); }

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Locks path exclusively (creating it). Lock files are removed by their
// holder, so after locking, the path must still name the locked inode; else
// someone removed it meanwhile and we start over. wait=false: returns an
// invalid fd when another holder has it.
Result<UniqueFd> LockPath(const std::string& path, bool wait) {
  for (;;) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) return Error::FromErrno("cannot create lock file " + path);
    int rc;
    do {
      rc = ::flock(fd.get(), LOCK_EX | (wait ? 0 : LOCK_NB));
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      if (errno == EWOULDBLOCK) return UniqueFd();
      return Error::FromErrno("cannot lock " + path);
    }
    struct stat held, now;
    if (::fstat(fd.get(), &held) != 0) return Error::FromErrno("fstat " + path);
    if (::stat(path.c_str(), &now) == 0 && now.st_ino == held.st_ino && now.st_dev == held.st_dev) return fd;
  }
}

// Takes a lock file away while holding it (see LockPath).
void DropLock(const std::string& path, UniqueFd& fd) {
  if (!fd) return;
  ::unlink(path.c_str());
  fd.Reset();
}

Status FsyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return Error::FromErrno("cannot open " + dir);
  if (::fsync(fd.get()) != 0) return Error::FromErrno("fsync " + dir);
  return OkStatus();
}

Error WriteError(const std::string& digest, const std::string& dir, int err) {
  std::string msg = "writing blob " + digest + " under " + dir + ": " + std::strerror(err);
  if (err == ENOSPC || err == EDQUOT) msg += "; free some space (msb image prune) and try again";
  return Error(ErrorCode::kIo, msg, err);
}

Result<std::vector<std::string>> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return names;
    return Error::FromErrno("cannot list " + dir);
  }
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

uint64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

// ---- BlobSink of a known digest

class StoreSink final : public BlobSink {
 public:
  StoreSink(std::string root, std::string digest, int64_t size)
      : root_(std::move(root)), digest_(std::move(digest)), size_(size) {
    std::string hex = Hex(digest_);
    partial_ = root_ + "/ingest/" + hex + ".partial";
    lock_path_ = root_ + "/ingest/" + hex + ".lock";
    blob_ = root_ + "/blobs/sha256/" + hex;
  }
  ~StoreSink() override { DropLock(lock_path_, lock_); }

  // Takes the digest's lock (waiting), then finds the blob published, or
  // resumes or starts the partial.
  Status Open() {
    MSB_TRY(lock_, LockPath(lock_path_, true));
    struct stat st;
    if (::stat(blob_.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      present_ = true;
      present_size_ = offset_ = static_cast<uint64_t>(st.st_size);
      DropLock(lock_path_, lock_);
      return OkStatus();
    }
    fd_.Reset(::open(partial_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd_) return WriteError(digest_, root_ + "/ingest", errno);
    if (::fstat(fd_.get(), &st) != 0) return Error::FromErrno("fstat " + partial_);
    if (size_ >= 0 && st.st_size > size_) return Restart();
    // Restore the hash state from the verified-so-far prefix (a fresh
    // partial has none: no buffer).
    std::string buf(std::min<uint64_t>(kChunk, static_cast<uint64_t>(st.st_size)), '\0');
    uint64_t done = 0;
    while (done < static_cast<uint64_t>(st.st_size)) {
      ssize_t n = ::pread(fd_.get(), buf.data(), buf.size(), static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Error::FromErrno("reading " + partial_);
      if (n == 0) break;
      hasher_.Update(std::string_view(buf.data(), static_cast<size_t>(n)));
      done += static_cast<uint64_t>(n);
    }
    offset_ = done;
    if (::lseek(fd_.get(), static_cast<off_t>(offset_), SEEK_SET) < 0) return Error::FromErrno("lseek " + partial_);
    return OkStatus();
  }

  uint64_t Offset() const override { return offset_; }

  Status Restart() override {
    if (present_) {  // the bytes written again are only checked (see Commit)
      rewriting_ = true;
      hasher_.Reset();
      offset_ = 0;
      return OkStatus();
    }
    MSB_TRY_STATUS(Usable());
    if (::ftruncate(fd_.get(), 0) != 0 || ::lseek(fd_.get(), 0, SEEK_SET) != 0) {
      return Fail(WriteError(digest_, root_ + "/ingest", errno));
    }
    hasher_.Reset();
    offset_ = 0;
    return OkStatus();
  }

  Status Write(std::string_view bytes) override {
    if (present_) {
      if (bytes.empty()) return OkStatus();
      if (!rewriting_) {
        return Error(ErrorCode::kState, "blob " + digest_ + " is already in the store; nothing more to write");
      }
      if (offset_ + bytes.size() > present_size_) {
        return Error(ErrorCode::kProtocol, "blob " + digest_ + ": more than the " + std::to_string(present_size_) +
                                               " bytes of the stored blob");
      }
      hasher_.Update(bytes);
      offset_ += bytes.size();
      return OkStatus();
    }
    MSB_TRY_STATUS(Usable());
    if (size_ >= 0 && offset_ + bytes.size() > static_cast<uint64_t>(size_)) {
      return Fail(Error(ErrorCode::kProtocol, "blob " + digest_ + ": more than the " + std::to_string(size_) +
                                                  " bytes its descriptor declares; the partial data was discarded"));
    }
    if (auto st = WriteAll(fd_.get(), bytes); !st.ok()) {
      return Fail(WriteError(digest_, root_ + "/ingest", st.error().sys_errno()));
    }
    hasher_.Update(bytes);
    offset_ += bytes.size();
    return OkStatus();
  }

  Status Commit() override {
    if (present_) {
      if (size_ >= 0 && present_size_ != static_cast<uint64_t>(size_)) {
        return Error(ErrorCode::kProtocol, "blob " + digest_ + " is " + std::to_string(present_size_) +
                                               " bytes in the store, but its descriptor says " +
                                               std::to_string(size_));
      }
      if (rewriting_ && (offset_ != present_size_ || hasher_.DigestFinal() != digest_)) {
        return Error(ErrorCode::kProtocol, "blob " + digest_ +
                                               ": the bytes written again do not match it; the stored blob is "
                                               "unchanged");
      }
      rewriting_ = false;
      offset_ = present_size_;
      return OkStatus();
    }
    MSB_TRY_STATUS(Usable());
    if (size_ >= 0 && offset_ != static_cast<uint64_t>(size_)) {
      return Fail(Error(ErrorCode::kProtocol, "blob " + digest_ + ": got " + std::to_string(offset_) +
                                                  " bytes, its descriptor declares " + std::to_string(size_) +
                                                  "; the partial data was discarded"));
    }
    std::string got = hasher_.DigestFinal();
    if (got != digest_) {
      return Fail(Error(ErrorCode::kProtocol, "blob " + digest_ + " does not match its content (the bytes hash to " +
                                                  got + "); the partial data was discarded"));
    }
    if (::fsync(fd_.get()) != 0) return Fail(WriteError(digest_, root_ + "/ingest", errno));
    if (::fchmod(fd_.get(), 0444) != 0) return Fail(Error::FromErrno("chmod " + partial_));
    if (::rename(partial_.c_str(), blob_.c_str()) != 0) {
      return Fail(Error::FromErrno("publishing blob " + digest_ + ": rename " + partial_ + " to " + blob_));
    }
    fd_.Reset();
    present_ = true;
    present_size_ = offset_;
    DropLock(lock_path_, lock_);
    return FsyncDir(root_ + "/blobs/sha256");
  }

 private:
  Status Usable() const {
    if (broken_) {
      return Error(ErrorCode::kState, "blob " + digest_ + ": an earlier write failed; open the blob again");
    }
    return OkStatus();
  }
  // Discards the partial data and returns e.
  Error Fail(Error e) {
    ::unlink(partial_.c_str());
    fd_.Reset();
    broken_ = true;
    offset_ = 0;
    return e;
  }

  std::string root_, digest_, partial_, lock_path_, blob_;
  int64_t size_;
  uint64_t offset_ = 0;
  bool present_ = false;  // published (by us or another writer)
  uint64_t present_size_ = 0;
  bool rewriting_ = false;  // present, and Restart() was called: writes are only checked
  bool broken_ = false;
  UniqueFd lock_;
  UniqueFd fd_;
  Sha256 hasher_;
};

// ---- BlobWriter of a digest learnt from the bytes

class StoreWriter final : public BlobWriter {
 public:
  explicit StoreWriter(std::string root) : root_(std::move(root)) {}
  ~StoreWriter() override {
    if (fd_) ::unlink(tmp_.c_str());
  }

  Status Create() {
    std::string tmpl = root_ + "/ingest/new-XXXXXX";
    int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
    if (fd < 0) return WriteError("(new)", root_ + "/ingest", errno);
    fd_.Reset(fd);
    tmp_ = tmpl;
    // Held for its life: Prune leaves a locked file alone.
    if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) return Error::FromErrno("cannot lock " + tmp_);
    return OkStatus();
  }

  Status Write(std::string_view bytes) override {
    if (!fd_) return Error(ErrorCode::kState, "blob writer " + tmp_ + ": an earlier step failed");
    if (auto st = WriteAll(fd_.get(), bytes); !st.ok()) {
      return Fail(WriteError("(new)", root_ + "/ingest", st.error().sys_errno()));
    }
    hasher_.Update(bytes);
    size_ += bytes.size();
    return OkStatus();
  }

  uint64_t size() const override { return size_; }

  Result<std::string> Commit() override {
    if (!fd_) return Error(ErrorCode::kState, "blob writer " + tmp_ + ": an earlier step failed");
    std::string digest = hasher_.DigestFinal();
    std::string hex = Hex(digest);
    std::string blob = root_ + "/blobs/sha256/" + hex;
    std::string lock_path = root_ + "/ingest/" + hex + ".lock";
    MSB_TRY(UniqueFd lock, LockPath(lock_path, true));
    struct stat st;
    if (::stat(blob.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      ::unlink(tmp_.c_str());
      fd_.Reset();
      DropLock(lock_path, lock);
      return digest;
    }
    if (::fsync(fd_.get()) != 0) {
      Error e = WriteError(digest, root_ + "/ingest", errno);
      DropLock(lock_path, lock);
      return Fail(e);
    }
    if (::fchmod(fd_.get(), 0444) != 0 || ::rename(tmp_.c_str(), blob.c_str()) != 0) {
      Error e = Error::FromErrno("publishing blob " + digest + " from " + tmp_);
      DropLock(lock_path, lock);
      return Fail(e);
    }
    fd_.Reset();
    DropLock(lock_path, lock);
    MSB_TRY_STATUS(FsyncDir(root_ + "/blobs/sha256"));
    return digest;
  }

 private:
  Error Fail(Error e) {
    ::unlink(tmp_.c_str());
    fd_.Reset();
    return e;
  }

  std::string root_, tmp_;
  UniqueFd fd_;
  uint64_t size_ = 0;
  Sha256 hasher_;
};

}  // namespace

std::string DefaultImageRoot() { return MsbHome() + "/images"; }

Result<ImageStore> ImageStore::Open(const std::string& root) {
  if (root.empty()) return Error(ErrorCode::kInvalidArgument, "empty image store path");
  for (const char* sub : {"/blobs/sha256", "/ingest", "/disks"}) {
    if (auto st = MakeDirs(root + sub, 0700); !st.ok()) return st.error().Wrap("creating the image store " + root);
  }
  return ImageStore(root);
}

bool ImageStore::HasBlob(const std::string& digest) const {
  std::string p = BlobPath(digest);
  struct stat st;
  return !p.empty() && ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string ImageStore::BlobPath(const std::string& digest) const {
  if (!oci::IsValidDigest(digest)) return "";
  return root_ + "/blobs/sha256/" + Hex(digest);
}

std::string ImageStore::DiskPath(const std::string& manifest_digest) const {
  if (!oci::IsValidDigest(manifest_digest)) return "";
  return root_ + "/disks/" + Hex(manifest_digest) + ".ext4";
}

Result<std::unique_ptr<BlobSink>> ImageStore::OpenBlob(const std::string& digest, int64_t size) {
  MSB_TRY_STATUS(oci::ValidateDigest(digest, "blob"));
  if (size < -1) {
    return Error(ErrorCode::kInvalidArgument, "blob " + digest + ": size " + std::to_string(size) + " is negative");
  }
  auto sink = std::make_unique<StoreSink>(root_, digest, size);
  MSB_TRY_STATUS(sink->Open());
  return std::unique_ptr<BlobSink>(std::move(sink));
}

Result<std::unique_ptr<BlobWriter>> ImageStore::CreateBlob() {
  auto w = std::make_unique<StoreWriter>(root_);
  MSB_TRY_STATUS(w->Create());
  return std::unique_ptr<BlobWriter>(std::move(w));
}

Result<std::string> ImageStore::PutBlob(std::string_view bytes) {
  MSB_TRY(auto w, CreateBlob());
  MSB_TRY_STATUS(w->Write(bytes));
  return w->Commit();
}

Result<std::string> ImageStore::ReadDocument(const std::string& digest) const {
  MSB_TRY_STATUS(oci::ValidateDigest(digest, "document"));
  std::string path = BlobPath(digest);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return Error(ErrorCode::kNotFound, "blob " + digest + " is not in the image store " + root_);
    return Error::FromErrno("cannot open " + path);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Error::FromErrno("fstat " + path);
  if (static_cast<uint64_t>(st.st_size) > oci::kMaxDocumentBytes) {
    return Error(ErrorCode::kInvalidArgument, "blob " + digest + " is " + std::to_string(st.st_size) +
                                                  " bytes, too large for a manifest, index or config");
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  MSB_TRY_STATUS(ReadExact(fd.get(), out.data(), out.size()));
  if (oci::DigestOf(out) != digest) {
    return Error(ErrorCode::kIo, "blob " + digest + " in " + root_ +
                                     " no longer matches its digest (the store is damaged); remove the image "
                                     "(msb rmi) and pull or load it again");
  }
  return out;
}

Result<StoredImage> ImageStore::ReadImage(const std::string& root_digest) const {
  StoredImage img;
  img.root_digest = root_digest;
  auto where = [&](const Error& e) { return e.Wrap("image " + root_digest); };
  auto doc = ReadDocument(root_digest);
  if (!doc.ok()) return where(doc.error());
  auto kind = oci::ClassifyDocument(*doc);
  if (!kind.ok()) return where(kind.error());
  std::string manifest_bytes;
  img.manifest_digest = root_digest;
  if (*kind == oci::DocumentKind::kIndex) {
    auto index = oci::ParseIndex(*doc);
    if (!index.ok()) return where(index.error());
    auto chosen = oci::SelectPlatform(*index, root_digest);
    if (!chosen.ok()) return where(chosen.error());
    img.manifest_digest = chosen->digest;
    auto m = ReadDocument(chosen->digest);
    if (!m.ok()) return where(m.error());
    manifest_bytes = std::move(*m);
  } else {
    manifest_bytes = std::move(*doc);
  }
  auto manifest = oci::ParseManifest(manifest_bytes);
  if (!manifest.ok()) return where(manifest.error());
  img.manifest = std::move(*manifest);
  img.manifest_media_type = img.manifest.media_type;
  img.config_digest = img.manifest.config.digest;
  auto cfg_bytes = ReadDocument(img.config_digest);
  if (!cfg_bytes.ok()) return where(cfg_bytes.error().Wrap("config"));
  auto cfg = oci::ParseImageConfig(*cfg_bytes);
  if (!cfg.ok()) return where(cfg.error());
  img.config = std::move(*cfg);
  if (img.config.diff_ids.size() != img.manifest.layers.size()) {
    return Error(ErrorCode::kInvalidArgument,
                 "image " + root_digest + ": the manifest lists " + std::to_string(img.manifest.layers.size()) +
                     " layers but the config lists " + std::to_string(img.config.diff_ids.size()) + " diff_ids");
  }
  img.size_bytes = static_cast<int64_t>(manifest_bytes.size()) + static_cast<int64_t>(cfg_bytes->size());
  for (size_t i = 0; i < img.manifest.layers.size(); ++i) {
    const oci::Descriptor& d = img.manifest.layers[i];
    StoredLayer l;
    l.digest = d.digest;
    l.media_type = d.media_type;
    l.size = d.size;
    auto c = oci::ClassifyLayer(d.media_type);
    if (!c.ok()) return where(c.error().Wrap("layers[" + std::to_string(i) + "]"));
    l.compression = *c;
    l.diff_id = img.config.diff_ids[i];
    l.path = BlobPath(d.digest);
    if (!HasBlob(d.digest)) img.missing_blobs.push_back(d.digest);
    img.size_bytes += d.size;
    img.layers.push_back(std::move(l));
  }
  img.base_disk = DiskPath(img.manifest_digest);
  return img;
}

Result<std::set<std::string>> ImageStore::ImageBlobs(const std::string& root_digest) const {
  std::set<std::string> out;
  // (digest, depth) still to visit.
  std::vector<std::pair<std::string, int>> todo = {{root_digest, 0}};
  while (!todo.empty()) {
    auto [digest, depth] = todo.back();
    todo.pop_back();
    if (!out.insert(digest).second || !HasBlob(digest)) continue;
    auto doc = ReadDocument(digest);
    if (!doc.ok()) return doc.error().Wrap("listing the blobs of image " + root_digest);
    auto kind = oci::ClassifyDocument(*doc);
    if (!kind.ok()) return kind.error().Wrap("listing the blobs of image " + root_digest + ": blob " + digest);
    if (*kind == oci::DocumentKind::kIndex) {
      auto index = oci::ParseIndex(*doc);
      if (!index.ok()) return index.error().Wrap("listing the blobs of image " + root_digest + ": blob " + digest);
      if (depth >= kMaxIndexDepth) {
        return Error(ErrorCode::kInvalidArgument,
                     "image " + root_digest + ": indexes nest deeper than " + std::to_string(kMaxIndexDepth));
      }
      for (const auto& d : index->manifests) todo.emplace_back(d.digest, depth + 1);
    } else {
      auto m = oci::ParseManifest(*doc);
      if (!m.ok()) return m.error().Wrap("listing the blobs of image " + root_digest + ": blob " + digest);
      out.insert(m->config.digest);
      for (const auto& l : m->layers) out.insert(l.digest);
    }
  }
  return out;
}

Result<std::vector<std::string>> ImageStore::ListBlobs() const {
  MSB_TRY(auto names, ListDir(root_ + "/blobs/sha256"));
  std::vector<std::string> out;
  for (const auto& n : names) {
    if (IsHex64(n)) out.push_back("sha256:" + n);
  }
  return out;
}

Result<StoreLock> ImageStore::LockForImport() const {
  std::string path = root_ + "/gc.lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return Error::FromErrno("cannot open " + path);
  int rc;
  do {
    rc = ::flock(fd.get(), LOCK_SH);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return Error::FromErrno("cannot lock " + path);
  return StoreLock(std::move(fd), false, root_);
}

Result<StoreLock> ImageStore::LockForGc() const {
  std::string path = root_ + "/gc.lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return Error::FromErrno("cannot open " + path);
  int rc;
  do {
    rc = ::flock(fd.get(), LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    if (errno == EWOULDBLOCK) {
      return Error(ErrorCode::kState, "the image store " + root_ +
                                          " is in use by a pull or load; try again when it has finished");
    }
    return Error::FromErrno("cannot lock " + path);
  }
  return StoreLock(std::move(fd), true, root_);
}

Status ImageStore::CheckGcLock(const StoreLock& gc) const {
  MSB_CHECK(gc.exclusive() && gc.root_ == root_ && gc.fd_.valid(),
            "garbage collection of " + root_ + " needs this store's exclusive lock (LockForGc)");
  return OkStatus();
}

Result<std::set<std::string>> ImageStore::KeptClosure(const std::set<std::string>& keep_roots) const {
  std::set<std::string> kept;
  for (const auto& r : keep_roots) {
    if (!oci::IsValidDigest(r)) continue;  // not a store digest: holds nothing here
    MSB_TRY(auto blobs, ImageBlobs(r));
    kept.insert(blobs.begin(), blobs.end());
  }
  return kept;
}

Status ImageStore::RemoveBlobs(const std::set<std::string>& blobs, const std::set<std::string>& disks, bool dry_run,
                               PruneReport* report) {
  for (const auto& d : blobs) {
    std::string p = BlobPath(d);
    struct stat st;
    if (p.empty() || ::stat(p.c_str(), &st) != 0) continue;
    if (!dry_run && ::unlink(p.c_str()) != 0 && errno != ENOENT) return Error::FromErrno("removing blob " + p);
    report->blobs.push_back(d);
    report->bytes += static_cast<uint64_t>(st.st_size);
  }
  for (const auto& p : disks) {
    struct stat st;
    if (::stat(p.c_str(), &st) != 0) continue;
    if (!dry_run && ::unlink(p.c_str()) != 0 && errno != ENOENT) return Error::FromErrno("removing base disk " + p);
    report->disks.push_back(p);
    report->bytes += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  return OkStatus();
}

std::vector<std::string> ImageStore::DiskPaths(const std::string& digest) const {
  if (!oci::IsValidDigest(digest)) return {};
  std::string hex = Hex(digest);
  std::vector<std::string> out;
  for (const char* dir : kDiskDirs) out.push_back(root_ + "/" + dir + "/" + hex + ".ext4");
  return out;
}

Result<PruneReport> ImageStore::Prune(const std::set<std::string>& keep_roots, const StoreLock& gc, bool dry_run) {
  MSB_TRY_STATUS(CheckGcLock(gc));
  MSB_TRY(auto kept, KeptClosure(keep_roots));
  PruneReport report;
  std::set<std::string> blobs;
  MSB_TRY(auto all, ListBlobs());
  for (const auto& d : all) {
    if (!kept.count(d)) blobs.insert(d);
  }
  std::set<std::string> disks;
  for (const char* dir : kDiskDirs) {
    MSB_TRY(auto disk_names, ListDir(root_ + "/" + dir));
    for (const auto& n : disk_names) {
      if (n.size() != 64 + 5 || !EndsWith(n, ".ext4") || !IsHex64(std::string_view(n).substr(0, 64))) continue;
      if (!kept.count("sha256:" + n.substr(0, 64))) disks.insert(root_ + "/" + dir + "/" + n);
    }
  }
  MSB_TRY_STATUS(RemoveBlobs(blobs, disks, dry_run, &report));

  // Ingest: partials and locks nobody holds, unnamed blobs nobody writes.
  std::string ingest = root_ + "/ingest";
  MSB_TRY(auto names, ListDir(ingest));
  std::set<std::string> stems;
  for (const auto& n : names) {
    std::string path = ingest + "/" + n;
    if (n.rfind("new-", 0) == 0) {
      UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd || ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;  // being written
      uint64_t size = FileSize(path);
      if (!dry_run) ::unlink(path.c_str());
      report.partials.push_back(path);
      report.bytes += size;
    } else if (EndsWith(n, ".partial") && IsHex64(std::string_view(n).substr(0, n.size() - 8))) {
      stems.insert(n.substr(0, n.size() - 8));
    } else if (EndsWith(n, ".lock") && IsHex64(std::string_view(n).substr(0, n.size() - 5))) {
      stems.insert(n.substr(0, n.size() - 5));
    }
  }
  for (const auto& stem : stems) {
    std::string lock_path = ingest + "/" + stem + ".lock";
    MSB_TRY(UniqueFd lock, LockPath(lock_path, false));
    if (!lock) continue;  // a writer is at work on it
    std::string partial = ingest + "/" + stem + ".partial";
    struct stat st;
    if (::stat(partial.c_str(), &st) == 0) {
      if (!dry_run) ::unlink(partial.c_str());
      report.partials.push_back(partial);
      report.bytes += static_cast<uint64_t>(st.st_size);
    }
    if (!dry_run) DropLock(lock_path, lock);
  }
  std::sort(report.partials.begin(), report.partials.end());
  return report;
}

Result<PruneReport> ImageStore::RemoveImage(const std::string& root_digest, const std::set<std::string>& keep_roots,
                                            const StoreLock& gc) {
  MSB_TRY_STATUS(CheckGcLock(gc));
  PruneReport report;
  if (!oci::IsValidDigest(root_digest) || keep_roots.count(root_digest)) return report;
  MSB_TRY(auto kept, KeptClosure(keep_roots));
  MSB_TRY(auto mine, ImageBlobs(root_digest));
  std::set<std::string> blobs, disks;
  for (const auto& d : mine) {
    if (kept.count(d)) continue;
    blobs.insert(d);
    for (auto& p : DiskPaths(d)) disks.insert(std::move(p));
  }
  MSB_TRY_STATUS(RemoveBlobs(blobs, disks, false, &report));
  return report;
}

}  // namespace msb::image
