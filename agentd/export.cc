// Writing a snapshot layer's changes as an OCI layer tar (export.h).
//
// Scope: one ExportRequest: up to kMaxExportLayers pairs of disks, a layer
// (ext4, read-only, an overlayfs upper/ directory in it, as
// agentd/guest_init.cc AssembleRoot lays it out) and an output disk the tar
// is written to from byte 0. The host reads back only the bytes reported and
// never mounts or parses them: a disk crafted by a hostile guest can at worst
// make this VM fail, or make the layer say what its author wanted, which it
// could say anyway.
//
// The walk: names are listed per directory and visited in byte order (the
// tar is the same for the same layer), each lstat'ed and never followed; a
// path is only ever made of names read from the directory above it on a file
// system mounted read-only, so nothing below can change while it is read.
// Directory depth is bounded by kMaxDepth. overlayfs in vm/kernel.config has
// no redirect_dir, index or metacopy, so a whiteout (a 0/0 character device)
// and the opaque xattr are the only markers a layer holds.
#include "agentd/export.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "agentd/agentd_log.h"
#include "agentd/guest_init.h"
#include "agentd/unpack.h"
#include "common/archive_ptr.h"
#include "common/fd.h"
#include "common/io.h"

namespace msb::agent {
namespace {

constexpr int kDiskWaitMs = 5000;
constexpr int kMaxDepth = 1024;
constexpr size_t kReadChunk = 256 * 1024;
constexpr const char* kOpaqueXattr = "trusted.overlay.opaque";
constexpr const char* kOverlayXattrPrefix = "trusted.overlay.";

std::string Join(const std::string& dir, const std::string& name) { return dir.empty() ? name : dir + "/" + name; }

class UpperWriter {
 public:
  UpperWriter(std::string root, int fd, uint64_t limit) : root_(std::move(root)), fd_(fd), limit_(limit) {}
  Result<ExportReport> Run();

 private:
  static la_ssize_t WriteCallback(archive* a, void* self, const void* buf, size_t len);
  std::string Path(const std::string& rel) const { return rel.empty() ? root_ : root_ + "/" + rel; }
  Error ArchiveError(const std::string& what) const {
    const char* m = archive_error_string(out_.get());
    return Error(ErrorCode::kIo, what + ": " + (m != nullptr ? m : "?"), archive_errno(out_.get()));
  }
  Status Walk(const std::string& rel, int depth);
  Status EmitEmpty(const std::string& name, const struct stat& st);
  Status Emit(const std::string& rel, const struct stat& st);
  Status AddXattrs(const std::string& path, archive_entry* e);

  std::string root_;
  int fd_;
  uint64_t limit_;
  uint64_t written_ = 0;
  uint64_t entries_ = 0;
  ArchiveWritePtr out_;
  std::map<std::pair<dev_t, ino_t>, std::string> links_;  // first name of each multiply-linked file
  std::vector<char> buf_;
};

la_ssize_t UpperWriter::WriteCallback(archive* a, void* self, const void* buf, size_t len) {
  auto* w = static_cast<UpperWriter*>(self);
  if (len > w->limit_ - w->written_) {
    archive_set_error(a, ENOSPC, "the layer's tar is larger than its output disk (%llu bytes)",
                      static_cast<unsigned long long>(w->limit_));
    return -1;
  }
  if (!WriteAll(w->fd_, std::string_view(static_cast<const char*>(buf), len)).ok()) {
    archive_set_error(a, errno, "writing the output disk: %s", std::strerror(errno));
    return -1;
  }
  w->written_ += len;
  return static_cast<la_ssize_t>(len);
}

Result<ExportReport> UpperWriter::Run() {
  struct stat st{};
  if (::lstat(root_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return Error(ErrorCode::kInvalidArgument, "the layer has no upper/ directory");
  buf_.resize(kReadChunk);
  out_.reset(archive_write_new());
  archive_write_set_format_pax_restricted(out_.get());
  archive_write_add_filter_none(out_.get());
  archive_write_set_bytes_in_last_block(out_.get(), 1);
  if (archive_write_open(out_.get(), this, nullptr, WriteCallback, nullptr) != ARCHIVE_OK)
    return ArchiveError("starting the tar stream");
  MSB_TRY_STATUS(Walk("", 0));
  if (archive_write_close(out_.get()) != ARCHIVE_OK) return ArchiveError("finishing the tar stream");
  ExportReport r;
  r.bytes = written_;
  r.entries = entries_;
  return r;
}

Status UpperWriter::Walk(const std::string& rel, int depth) {
  if (depth > kMaxDepth)
    return Error(ErrorCode::kInvalidArgument, "/" + rel + ": deeper than " + std::to_string(kMaxDepth) + " directories");
  std::vector<std::string> names;
  {
    UniqueFd fd(::open(Path(rel).c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return Error::FromErrno("opening /" + rel);
    DIR* d = ::fdopendir(fd.get());
    if (d == nullptr) return Error::FromErrno("listing /" + rel);
    fd.Release();
    errno = 0;
    while (dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
    }
    int err = errno;
    ::closedir(d);
    if (err != 0) return Error::FromErrno("listing /" + rel, err);
  }
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    const std::string child = Join(rel, name);
    struct stat st{};
    if (::lstat(Path(child).c_str(), &st) != 0) return Error::FromErrno("lstat /" + child);
    switch (ClassifyUpperEntry(st.st_mode, st.st_rdev)) {
      case UpperKind::kSkip:
        continue;
      case UpperKind::kWhiteout:
        MSB_TRY_STATUS(EmitEmpty(Join(rel, ".wh." + name), st));
        continue;
      case UpperKind::kCopy:
        break;
    }
    MSB_TRY_STATUS(Emit(child, st));
    if (S_ISDIR(st.st_mode)) {
      char v[8];
      ssize_t n = ::lgetxattr(Path(child).c_str(), kOpaqueXattr, v, sizeof v);
      if (n == 1 && v[0] == 'y') MSB_TRY_STATUS(EmitEmpty(Join(child, ".wh..wh..opq"), st));
      MSB_TRY_STATUS(Walk(child, depth + 1));
    }
  }
  return OkStatus();
}

// A whiteout or opaque marker: an empty regular file, mode 0, owned by 0:0,
// with the time of what it stands for.
Status UpperWriter::EmitEmpty(const std::string& name, const struct stat& st) {
  ArchiveEntryPtr e(archive_entry_new());
  archive_entry_set_pathname(e.get(), name.c_str());
  archive_entry_set_filetype(e.get(), AE_IFREG);
  archive_entry_set_perm(e.get(), 0);
  archive_entry_set_size(e.get(), 0);
  archive_entry_set_mtime(e.get(), st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  if (archive_write_header(out_.get(), e.get()) < ARCHIVE_WARN) return ArchiveError("writing " + name);
  ++entries_;
  return OkStatus();
}

Status UpperWriter::AddXattrs(const std::string& path, archive_entry* e) {
  ssize_t len = ::llistxattr(path.c_str(), nullptr, 0);
  if (len < 0) {
    if (errno == ENOTSUP) return OkStatus();
    return Error::FromErrno("listing the xattrs of " + path);
  }
  std::string list(static_cast<size_t>(len), '\0');
  len = ::llistxattr(path.c_str(), list.data(), list.size());
  if (len < 0) return Error::FromErrno("listing the xattrs of " + path);
  list.resize(static_cast<size_t>(len));
  size_t count = 0;
  std::string value;
  for (size_t pos = 0; pos < list.size();) {
    std::string name(list.c_str() + pos);
    pos += name.size() + 1;
    if (name.empty() || !ExportXattr(name)) continue;
    if (++count > kMaxXattrsPerEntry)
      return Error(ErrorCode::kInvalidArgument, path + ": more than " + std::to_string(kMaxXattrsPerEntry) + " xattrs");
    value.resize(kMaxXattrValue);
    ssize_t n = ::lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
    if (n < 0) return Error::FromErrno("reading xattr " + name + " of " + path);
    archive_entry_xattr_add_entry(e, name.c_str(), value.data(), static_cast<size_t>(n));
  }
  return OkStatus();
}

Status UpperWriter::Emit(const std::string& rel, const struct stat& st) {
  const std::string path = Path(rel);
  ArchiveEntryPtr e(archive_entry_new());
  archive_entry_copy_stat(e.get(), &st);
  archive_entry_set_pathname(e.get(), (S_ISDIR(st.st_mode) ? rel + "/" : rel).c_str());
  bool data = S_ISREG(st.st_mode) && st.st_size > 0;
  if (S_ISLNK(st.st_mode)) {
    std::string target(kMaxEntryPath + 1, '\0');
    ssize_t n = ::readlink(path.c_str(), target.data(), target.size());
    if (n < 0) return Error::FromErrno("readlink /" + rel);
    if (static_cast<size_t>(n) > kMaxEntryPath)
      return Error(ErrorCode::kInvalidArgument, "/" + rel + ": symlink target longer than " +
                                                    std::to_string(kMaxEntryPath) + " bytes");
    target.resize(static_cast<size_t>(n));
    archive_entry_set_symlink(e.get(), target.c_str());
  }
  if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
    auto [it, first] = links_.emplace(std::make_pair(st.st_dev, st.st_ino), rel);
    if (!first) {
      archive_entry_set_hardlink(e.get(), it->second.c_str());
      archive_entry_set_size(e.get(), 0);
      data = false;
    }
  }
  MSB_TRY_STATUS(AddXattrs(path, e.get()));
  if (archive_write_header(out_.get(), e.get()) < ARCHIVE_WARN) return ArchiveError("writing the header of /" + rel);
  ++entries_;
  if (!data) return OkStatus();
  UniqueFd in(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!in) return Error::FromErrno("opening /" + rel);
  uint64_t left = static_cast<uint64_t>(st.st_size);
  while (left > 0) {
    ssize_t n = ::read(in.get(), buf_.data(), std::min<uint64_t>(buf_.size(), left));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::FromErrno("reading /" + rel);
    if (n == 0) break;  // shorter than it said: the tar pads the rest with zeros
    if (archive_write_data(out_.get(), buf_.data(), static_cast<size_t>(n)) < 0)
      return ArchiveError("writing /" + rel);
    left -= static_cast<uint64_t>(n);
  }
  if (archive_write_finish_entry(out_.get()) < ARCHIVE_WARN) return ArchiveError("finishing /" + rel);
  return OkStatus();
}

}  // namespace

UpperKind ClassifyUpperEntry(unsigned mode, unsigned long rdev) {
  if (S_ISCHR(mode) && major(rdev) == 0 && minor(rdev) == 0) return UpperKind::kWhiteout;
  if (S_ISSOCK(mode)) return UpperKind::kSkip;
  return UpperKind::kCopy;
}

bool ExportXattr(const std::string& name) { return name.rfind(kOverlayXattrPrefix, 0) != 0; }

Result<ExportReport> WriteUpperTar(const std::string& upper, int out_fd, uint64_t limit) {
  UpperWriter w(upper, out_fd, limit);
  return w.Run();
}

Status RunExport(const ExportRequest& req, const std::function<void(const ExportReport&)>& on_layer) {
  for (size_t i = 0; i < req.layers.size(); ++i) {
    const std::string where = "layer " + std::to_string(i);
    auto dev = FindDiskBySerial(req.layers[i].serial, kDiskWaitMs);
    if (!dev.ok()) return dev.error().Wrap(where);
    auto out_dev = FindDiskBySerial(req.layers[i].output_serial, kDiskWaitMs);
    if (!out_dev.ok()) return out_dev.error().Wrap(where + ": its output disk");
    const std::string point = "/run/msb/export" + std::to_string(i);
    MSB_TRY_STATUS(MakeDirs(point, 0700));
    if (::mount(dev->c_str(), point.c_str(), "ext4", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME,
                "noload") != 0)
      return Error::FromErrno(where + ": mounting " + *dev + " read-only");
    UniqueFd out(::open(out_dev->c_str(), O_WRONLY | O_CLOEXEC));
    uint64_t limit = 0;
    Result<ExportReport> report = Error(ErrorCode::kIo, where + ": cannot open its output disk " + *out_dev);
    if (out && ::ioctl(out.get(), BLKGETSIZE64, &limit) == 0) {
      report = WriteUpperTar(point + "/upper", out.get(), limit);
      if (report.ok() && ::fsync(out.get()) != 0) report = Error::FromErrno(where + ": fsync of its output disk");
    }
    out.Reset();
    ::umount2(point.c_str(), 0);
    if (!report.ok()) return report.error().Wrap(where);
    report->index = static_cast<uint32_t>(i);
    on_layer(*report);
  }
  Diag("exported " + std::to_string(req.layers.size()) + " layers");
  return OkStatus();
}

}  // namespace msb::agent
