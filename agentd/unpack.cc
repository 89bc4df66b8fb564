// Applying OCI layers inside the builder microVM (unpack.h).
//
// Theory of operation
// ===================
// Scope: one UnpackRequest: N layer disks (read-only, each holding one blob
// at offset 0 and padded beyond it) and one target ext4 disk. Goals: the
// result is what the OCI image spec's "applying changesets" describes; no
// entry can create, change or delete anything outside the target's root;
// every string from the tar is bounded; a layer that does not fit ends with a
// clean "disk is full" error; one pass over the data, with decompression
// and hashing on another thread than the applying (on another vCPU when the
// builder has more than one). Non-goals:
// applying entries in parallel, ACLs stored as SCHILY.acl records (skipped),
// sockets (skipped).
//
// Confinement: RunUnpack mounts the target at kTargetMount and forks a child
// that chroot()s into it before reading any tar byte. From then on every path
// the child uses is resolved by the kernel inside the target: absolute
// symlinks and ".." stop at its root, as with openat2 RESOLVE_IN_ROOT, for
// libarchive's reads and our own system calls alike. The child has no other
// file system: the layer disks are fds opened before the chroot. The
// LayerStream's thread only reads those fds.
//
// Data flow per layer: LayerStream (layer_stream.h), on its own thread and
// up to kMaxLayerReadAhead bytes ahead, preads the layer disk (at most
// `size` bytes), decompresses (libarchive's gzip and zstd filters, raw
// format) and hashes every uncompressed byte (the diff_id) → InnerRead takes
// its chunks in order → libarchive's tar reader → ApplyEntry. After the tar
// end marker LayerStream::Finish skips the rest of the stream, still hashed,
// and gives the digest. Layers apply strictly one after the other; only the
// reading runs ahead, so layer N+1 is being decompressed while layer N is
// applied.
//
// Per entry (names cleaned by CleanEntryPath, so the path is relative to the
// root with no "..": an entry that climbs out is an error):
// - ".wh.NAME" deletes NAME (recursively) unless this layer created it;
//   ".wh..wh..opq" deletes everything in its directory that this layer did not
//   create; whiteout files are never created. `created_` holds every path
//   (and its parents) this layer wrote, so the order of entries within a
//   layer does not matter.
// - Otherwise: missing parents are created (0755, root); an existing entry
//   is replaced unless both are directories (a directory is merged); a
//   directory replaced by anything else is deleted with its contents.
//   Under TCG every system call is dear, so the common case costs few:
//   Create tries the creating call first and looks at what is there only on
//   EEXIST; `known_dirs_` remembers the parents already checked until the
//   layer deletes something; a regular file is created with its mode (chmod
//   only for setuid, setgid and sticky bits) and truncated only when its data
//   ends in a hole.
// - Hard links name a target inside the root (cleaned the same way) that
//   must exist and not be a directory. Symlinks are stored as written.
// - Owners are numeric (uid/gid), then the mode (setuid survives because it
//   is set after the owner), then xattrs (security.capability is cleared by
//   chown, so after it), then times. Directory times are set when the layer
//   ends, deepest first, because creating children changes them.
#include "agentd/unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <functional>
#include <unordered_set>
#include <vector>

#include "agentd/agentd_log.h"
#include "agentd/guest_init.h"
#include "agentd/layer_stream.h"
#include "common/archive_ptr.h"
#include "common/fd.h"
#include "common/io.h"

namespace msb::agent {
namespace {

constexpr const char* kTargetMount = "/run/msb/target";
constexpr int kDiskWaitMs = 5000;
// Directory depth RemoveTree follows before it gives up.
constexpr int kMaxTreeDepth = 2048;
constexpr const char* kWhiteoutPrefix = ".wh.";
constexpr const char* kWhiteoutMetaPrefix = ".wh..wh.";
constexpr const char* kOpaqueMarker = ".wh..wh..opq";

// An entry name for an error message: printable bytes only, bounded.
std::string Printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 200)) {
    auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? '?' : c;
  }
  if (s.size() > 200) out += "...";
  return out;
}

std::string Abs(const std::string& rel) { return "/" + rel; }

std::string ParentOf(const std::string& rel) {
  size_t slash = rel.rfind('/');
  return slash == std::string::npos ? std::string() : rel.substr(0, slash);
}

std::string BaseOf(const std::string& rel) {
  size_t slash = rel.rfind('/');
  return slash == std::string::npos ? rel : rel.substr(slash + 1);
}

std::string Join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

Error SysError(const std::string& what, int err) {
  if (err == ENOSPC || err == EDQUOT)
    return Error(ErrorCode::kIo, what + ": the target disk is full (give the image a larger disk)", err);
  return Error::FromErrno(what, err);
}

// Deletes rel and everything below it, never following a symlink.
Status RemoveTree(const std::string& rel, int depth) {
  if (depth > kMaxTreeDepth)
    return Error(ErrorCode::kInvalidArgument, "/" + Printable(rel) + ": directory tree too deep to delete");
  std::string path = Abs(rel);
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return OkStatus();
    return SysError("lstat " + Printable(path), errno);
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return SysError("unlink " + Printable(path), errno);
    return OkStatus();
  }
  std::vector<std::string> names;
  {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return SysError("open " + Printable(path), errno);
    DIR* d = ::fdopendir(fd.get());
    if (d == nullptr) return SysError("opendir " + Printable(path), errno);
    fd.Release();
    while (dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
    }
    ::closedir(d);
  }
  for (const auto& n : names) MSB_TRY_STATUS(RemoveTree(Join(rel, n), depth + 1));
  if (!rel.empty() && ::rmdir(path.c_str()) != 0 && errno != ENOENT)
    return SysError("rmdir " + Printable(path), errno);
  return OkStatus();
}

// One layer being applied.
// One layer being applied. Its bytes come from stream (layer stream_index),
// which decompresses and hashes them.
class LayerApplier {
 public:
  LayerApplier(LayerStream& stream, uint32_t stream_index, uint32_t index)
      : stream_(stream), stream_index_(stream_index), index_(index) {}

  Result<LayerReport> Run();

 private:
  static la_ssize_t InnerRead(archive* a, void* self, const void** buf);

  Error EntryError(const std::string& name, const std::string& what) const {
    return Error(ErrorCode::kInvalidArgument,
                 "layer " + std::to_string(index_) + ": entry \"" + Printable(name) + "\": " + what);
  }
  Error EntryError(const std::string& name, const Error& e) const {
    return Error(e.code(),
                 "layer " + std::to_string(index_) + ": entry \"" + Printable(name) + "\": " + e.message(),
                 e.sys_errno());
  }

  Status ApplyEntry(archive* in, archive_entry* e, const std::string& name);
  void MarkCreated(const std::string& rel);
  Status EnsureParents(const std::string& rel);
  Status ClearOpaque(const std::string& dir, int depth);
  Status ReplaceExisting(const std::string& rel, bool new_is_dir, bool* keep_dir);
  Status Create(const std::string& rel, bool new_is_dir, const std::function<int()>& make, bool* kept_dir);
  Status WriteFile(archive* in, const std::string& rel, archive_entry* e);
  // mode_set: the entry's permissions are in place already (a new file
  // created with them), so no chmod.
  Status SetMetadata(const std::string& rel, archive_entry* e, int fd, bool is_link, bool mode_set = false);
  Status FinishDirectories();

  LayerStream& stream_;
  uint32_t stream_index_;
  uint32_t index_;
  std::string stream_error_;  // reading or decompressing failed
  std::unordered_set<std::string> created_;
  // Paths seen to be directories (following symlinks) since this layer last
  // deleted anything; only a deletion can change what an existing name
  // resolves to, so every deletion clears it. Spares EnsureParents its
  // mkdir and stat per parent for each entry.
  std::unordered_set<std::string> known_dirs_;
  struct DirTimes {
    std::string rel;
    std::array<timespec, 2> times;
  };
  std::vector<DirTimes> dirs_;
};

la_ssize_t LayerApplier::InnerRead(archive* a, void* self, const void** buf) {
  auto* l = static_cast<LayerApplier*>(self);
  auto chunk = l->stream_.Next(l->stream_index_);
  if (!chunk.ok()) {
    l->stream_error_ = chunk.error().message();
    archive_set_error(a, EIO, "%s", l->stream_error_.c_str());
    return -1;
  }
  *buf = chunk->data();
  return static_cast<la_ssize_t>(chunk->size());
}

Result<LayerReport> LayerApplier::Run() {
  std::string where = "layer " + std::to_string(index_);
  ArchiveReadPtr in(archive_read_new());
  archive_read_support_format_tar(in.get());
  if (archive_read_open(in.get(), this, nullptr, InnerRead, nullptr) != ARCHIVE_OK) {
    if (!stream_error_.empty()) return Error(ErrorCode::kInvalidArgument, where + ": " + stream_error_);
    return Error(ErrorCode::kInvalidArgument, where + ": not a tar stream: " +
                                                  (archive_error_string(in.get()) ? archive_error_string(in.get()) : "?"));
  }
  LayerReport report;
  report.index = index_;
  std::string last = "(the first entry)";
  for (;;) {
    archive_entry* e = nullptr;
    int r = archive_read_next_header(in.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      const char* msg = archive_error_string(in.get());
      return Error(ErrorCode::kInvalidArgument,
                   where + ": reading the tar stream after entry \"" + Printable(last) + "\": " +
                       (!stream_error_.empty() ? stream_error_ : msg != nullptr ? msg : "malformed"));
    }
    ++report.entries;
    const char* p = archive_entry_pathname(e);
    if (p == nullptr) p = archive_entry_pathname_utf8(e);
    if (p == nullptr) return EntryError(last, "the next entry has no name");
    last = p;
    if (auto s = ApplyEntry(in.get(), e, last); !s.ok()) {
      // Errors from ApplyEntry name the entry already.
      return s.error();
    }
  }
  // Trailing bytes after the tar end marker are part of the diff_id: the
  // stream hashes what is left.
  auto digest = stream_.Finish(stream_index_);
  if (!digest.ok()) return Error(ErrorCode::kInvalidArgument, where + ": " + digest.error().message());
  MSB_TRY_STATUS(FinishDirectories());
  report.diff_id = digest->diff_id;
  report.bytes = digest->bytes;
  return report;
}

void LayerApplier::MarkCreated(const std::string& rel) {
  std::string p = rel;
  while (!p.empty() && created_.insert(p).second) p = ParentOf(p);
}

Status LayerApplier::EnsureParents(const std::string& rel) {
  std::string parent = ParentOf(rel);
  if (parent.empty() || known_dirs_.count(parent)) return OkStatus();
  size_t pos = 0;
  for (;;) {
    size_t slash = parent.find('/', pos);
    std::string prefix = slash == std::string::npos ? parent : parent.substr(0, slash);
    std::string path = Abs(prefix);
    if (known_dirs_.count(prefix)) {
      // Checked already.
    } else if (::mkdir(path.c_str(), 0755) != 0) {
      int err = errno;
      if (err != EEXIST) return SysError("creating the directory " + Printable(path), err);
      struct stat st;
      if (::stat(path.c_str(), &st) != 0)
        return SysError(Printable(path) + " (a symlink to nothing?)", errno);
      if (!S_ISDIR(st.st_mode))
        return Error(ErrorCode::kInvalidArgument, Printable(path) + " is not a directory", ENOTDIR);
    }
    known_dirs_.insert(prefix);
    if (slash == std::string::npos) break;
    pos = slash + 1;
  }
  return OkStatus();
}

// Deletes what dir held before this layer: everything this layer did not
// create, and inside directories it did create, the same recursively.
Status LayerApplier::ClearOpaque(const std::string& dir, int depth) {
  if (depth > kMaxTreeDepth) return Error(ErrorCode::kInvalidArgument, "directory tree too deep");
  known_dirs_.clear();
  std::string path = dir.empty() ? "/" : Abs(dir);
  std::vector<std::string> names;
  {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) {
      if (errno == ENOENT || errno == ENOTDIR) return OkStatus();
      return SysError("open " + Printable(path), errno);
    }
    DIR* d = ::fdopendir(fd.get());
    if (d == nullptr) return SysError("opendir " + Printable(path), errno);
    fd.Release();
    while (dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
    }
    ::closedir(d);
  }
  for (const auto& n : names) {
    std::string child = Join(dir, n);
    if (!created_.count(child)) {
      MSB_TRY_STATUS(RemoveTree(child, 0));
      continue;
    }
    struct stat st;
    if (::lstat(Abs(child).c_str(), &st) == 0 && S_ISDIR(st.st_mode))
      MSB_TRY_STATUS(ClearOpaque(child, depth + 1));
  }
  return OkStatus();
}

// Makes room for a new entry at rel: a directory stays when the new entry is
// one too (*keep_dir), anything else is deleted.
Status LayerApplier::ReplaceExisting(const std::string& rel, bool new_is_dir, bool* keep_dir) {
  *keep_dir = false;
  std::string path = Abs(rel);
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return OkStatus();
    return SysError("lstat " + Printable(path), errno);
  }
  if (S_ISDIR(st.st_mode) && new_is_dir) {
    *keep_dir = true;
    return OkStatus();
  }
  known_dirs_.clear();
  if (S_ISDIR(st.st_mode)) return RemoveTree(rel, 0);
  if (::unlink(path.c_str()) != 0) return SysError("unlink " + Printable(path), errno);
  return OkStatus();
}

// Runs make (a system call that creates rel: 0 or an errno); when rel exists,
// makes room with ReplaceExisting and runs it once more. Trying first saves
// an lstat for every new name, which is most of them. *kept_dir: rel was a
// directory and stays one (new_is_dir), make did not run again.
Status LayerApplier::Create(const std::string& rel, bool new_is_dir, const std::function<int()>& make,
                            bool* kept_dir) {
  *kept_dir = false;
  int err = make();
  if (err != EEXIST) return err == 0 ? OkStatus() : SysError("creating " + Printable(Abs(rel)), err);
  MSB_TRY_STATUS(ReplaceExisting(rel, new_is_dir, kept_dir));
  if (*kept_dir) return OkStatus();
  err = make();
  return err == 0 ? OkStatus() : SysError("creating " + Printable(Abs(rel)), err);
}

Status LayerApplier::WriteFile(archive* in, const std::string& rel, archive_entry* e) {
  std::string path = Abs(rel);
  // Created with its permissions unless it has setuid, setgid or sticky
  // bits, which chown would clear: then chmod after the chown.
  mode_t perm = archive_entry_perm(e) & 07777;
  bool mode_set = (perm & 07000) == 0;
  UniqueFd fd;
  bool unused;
  MSB_TRY_STATUS(Create(rel, false, [&] {
    fd = UniqueFd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode_set ? perm : 0600));
    return fd ? 0 : errno;
  }, &unused));
  la_int64_t end = 0;  // the end of the data written
  for (;;) {
    const void* buf;
    size_t len;
    la_int64_t off;
    int r = archive_read_data_block(in, &buf, &len, &off);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      const char* msg = archive_error_string(in);
      return Error(ErrorCode::kInvalidArgument, std::string("reading its data: ") + (msg ? msg : "?"));
    }
    const char* p = static_cast<const char*>(buf);
    while (len > 0) {
      ssize_t n = ::pwrite(fd.get(), p, len, off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return SysError("writing " + Printable(path), errno);
      p += n;
      len -= static_cast<size_t>(n);
      off += n;
    }
    end = std::max(end, off);
  }
  // A sparse file's hole at the end.
  la_int64_t size = archive_entry_size(e);
  if (size > end && ::ftruncate(fd.get(), size) != 0) return SysError("sizing " + Printable(path), errno);
  return SetMetadata(rel, e, fd.get(), false, mode_set);
}

Status LayerApplier::SetMetadata(const std::string& rel, archive_entry* e, int fd, bool is_link, bool mode_set) {
  std::string path = Abs(rel);
  la_int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
  if (uid < 0 || uid >= 0xffffffffLL || gid < 0 || gid >= 0xffffffffLL)
    return Error(ErrorCode::kInvalidArgument,
                 "owner " + std::to_string(uid) + ":" + std::to_string(gid) + " is out of range");
  int r = fd >= 0 ? ::fchown(fd, static_cast<uid_t>(uid), static_cast<gid_t>(gid))
                  : ::lchown(path.c_str(), static_cast<uid_t>(uid), static_cast<gid_t>(gid));
  if (r != 0) return SysError("chown " + Printable(path), errno);
  if (!is_link) {
    mode_t mode = archive_entry_perm(e) & 07777;
    if (!mode_set) r = fd >= 0 ? ::fchmod(fd, mode) : ::chmod(path.c_str(), mode);
    if (r != 0) return SysError("chmod " + Printable(path), errno);
    // Extended attributes (not on symlinks: user.* is not allowed there).
    size_t count = 0;
    archive_entry_xattr_reset(e);
    const char* name;
    const void* value;
    size_t size;
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
      if (++count > kMaxXattrsPerEntry)
        return Error(ErrorCode::kInvalidArgument, "more than " + std::to_string(kMaxXattrsPerEntry) + " xattrs");
      if (name == nullptr) continue;
      std::string_view n(name);
      if (n.size() > kMaxXattrName || size > kMaxXattrValue)
        return Error(ErrorCode::kInvalidArgument, "xattr \"" + Printable(n) + "\" is too large");
      if (!XattrAllowed(n)) continue;
      r = fd >= 0 ? ::fsetxattr(fd, name, value, size, 0) : ::lsetxattr(path.c_str(), name, value, size, 0);
      if (r != 0) return SysError("setting xattr " + Printable(n) + " on " + Printable(path), errno);
    }
  }
  std::array<timespec, 2> ts{};
  ts[1].tv_sec = archive_entry_mtime(e);
  ts[1].tv_nsec = archive_entry_mtime_is_set(e) ? archive_entry_mtime_nsec(e) : UTIME_OMIT;
  if (archive_entry_atime_is_set(e)) {
    ts[0].tv_sec = archive_entry_atime(e);
    ts[0].tv_nsec = archive_entry_atime_nsec(e);
  } else {
    ts[0] = ts[1];
  }
  for (auto& t : ts)
    if (t.tv_nsec != UTIME_OMIT && (t.tv_nsec < 0 || t.tv_nsec > 999999999)) t.tv_nsec = 0;
  r = fd >= 0 ? ::futimens(fd, ts.data()) : ::utimensat(AT_FDCWD, path.c_str(), ts.data(), AT_SYMLINK_NOFOLLOW);
  if (r != 0) return SysError("setting the times of " + Printable(path), errno);
  return OkStatus();
}

Status LayerApplier::ApplyEntry(archive* in, archive_entry* e, const std::string& name) {
  auto cleaned = CleanEntryPath(name);
  if (!cleaned.ok()) return EntryError(name, cleaned.error().message());
  const std::string& rel = *cleaned;
  auto wh = ClassifyWhiteout(rel);
  if (!wh.ok()) return EntryError(name, wh.error().message());
  switch (wh->kind) {
    case Whiteout::Kind::kIgnore:
      return OkStatus();
    case Whiteout::Kind::kRemove:
      if (created_.count(wh->target)) return OkStatus();  // same layer: stays
      known_dirs_.clear();
      if (auto s = RemoveTree(wh->target, 0); !s.ok()) return EntryError(name, s.error());
      return OkStatus();
    case Whiteout::Kind::kOpaque:
      if (!wh->target.empty()) {
        if (auto s = EnsureParents(Join(wh->target, "x")); !s.ok()) return EntryError(name, s.error());
        MarkCreated(wh->target);
      }
      if (auto s = ClearOpaque(wh->target, 0); !s.ok()) return EntryError(name, s.error());
      return OkStatus();
    case Whiteout::Kind::kNone:
      break;
  }

  const char* hardlink = archive_entry_hardlink(e);
  if (hardlink == nullptr) hardlink = archive_entry_hardlink_utf8(e);
  mode_t type = archive_entry_filetype(e);
  if (hardlink == nullptr && type == AE_IFSOCK) return OkStatus();  // not restorable from a tar
  if (rel.empty()) {
    // "./" or "/": the root's own metadata; nothing else may be the root.
    if (hardlink != nullptr || type != AE_IFDIR) return EntryError(name, "only a directory can be the root");
    if (auto s = SetMetadata(rel, e, -1, false); !s.ok()) return EntryError(name, s.error());
    std::array<timespec, 2> ts{};
    ts[0].tv_sec = ts[1].tv_sec = archive_entry_mtime(e);
    dirs_.push_back({rel, ts});
    return OkStatus();
  }
  std::string path = Abs(rel);
  if (auto s = EnsureParents(rel); !s.ok()) return EntryError(name, s.error());
  MarkCreated(rel);

  if (hardlink != nullptr) {
    auto target = CleanEntryPath(hardlink);
    if (!target.ok()) return EntryError(name, "hard link target: " + target.error().message());
    if (target->empty()) return EntryError(name, "hard link to the root directory");
    if (*target == rel) return OkStatus();  // a link to itself: nothing to do
    struct stat st;
    if (::lstat(Abs(*target).c_str(), &st) != 0)
      return EntryError(name, SysError("hard link target /" + Printable(*target), errno));
    if (S_ISDIR(st.st_mode)) return EntryError(name, "hard link to a directory");
    bool keep;
    if (auto s = ReplaceExisting(rel, false, &keep); !s.ok()) return EntryError(name, s.error());
    if (::link(Abs(*target).c_str(), path.c_str()) != 0)
      return EntryError(name, SysError("linking to /" + Printable(*target), errno));
    return OkStatus();
  }

  // Each case creates rel through Create, which replaces what is there.
  bool keep_dir = false;
  Status s = OkStatus();
  switch (type) {
    case AE_IFREG:
      s = WriteFile(in, rel, e);
      break;
    case AE_IFDIR: {
      s = Create(rel, true, [&] { return ::mkdir(path.c_str(), 0700) == 0 ? 0 : errno; }, &keep_dir);
      if (!s.ok()) break;
      known_dirs_.insert(rel);
      UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd) {
        s = SysError("open", errno);
        break;
      }
      s = SetMetadata(rel, e, fd.get(), false);
      std::array<timespec, 2> ts{};
      ts[1].tv_sec = archive_entry_mtime(e);
      ts[1].tv_nsec = archive_entry_mtime_nsec(e);
      if (ts[1].tv_nsec < 0 || ts[1].tv_nsec > 999999999) ts[1].tv_nsec = 0;
      ts[0] = ts[1];
      dirs_.push_back({rel, ts});
      break;
    }
    case AE_IFLNK: {
      const char* target = archive_entry_symlink(e);
      if (target == nullptr) target = archive_entry_symlink_utf8(e);
      if (target == nullptr || *target == '\0') return EntryError(name, "symlink without a target");
      if (std::strlen(target) > kMaxEntryPath) return EntryError(name, "symlink target too long");
      s = Create(rel, false, [&] { return ::symlink(target, path.c_str()) == 0 ? 0 : errno; }, &keep_dir);
      if (!s.ok()) break;
      s = SetMetadata(rel, e, -1, true);
      break;
    }
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFIFO: {
      mode_t kind = type == AE_IFCHR ? S_IFCHR : type == AE_IFBLK ? S_IFBLK : S_IFIFO;
      dev_t dev = type == AE_IFIFO ? 0 : makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
      s = Create(rel, false, [&] { return ::mknod(path.c_str(), kind | 0600, dev) == 0 ? 0 : errno; }, &keep_dir);
      if (!s.ok()) break;
      s = SetMetadata(rel, e, -1, false);
      break;
    }
    default:
      return EntryError(name, "unsupported entry type " + std::to_string(type));
  }
  if (!s.ok()) return EntryError(name, s.error());
  return OkStatus();
}

Status LayerApplier::FinishDirectories() {
  for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
    std::string path = it->rel.empty() ? "/" : Abs(it->rel);
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) continue;  // replaced or deleted later in the layer
    if (::futimens(fd.get(), it->times.data()) != 0)
      return SysError("layer " + std::to_string(index_) + ": setting the times of " + Printable(path), errno);
  }
  dirs_.clear();
  return OkStatus();
}

}  // namespace

Result<std::string> CleanEntryPath(std::string_view name) {
  if (name.size() > kMaxEntryPath)
    return Error(ErrorCode::kInvalidArgument, "name longer than " + std::to_string(kMaxEntryPath) + " bytes");
  if (name.find('\0') != std::string_view::npos)
    return Error(ErrorCode::kInvalidArgument, "name contains a NUL byte");
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string_view::npos) end = name.size();
    std::string_view c = name.substr(start, end - start);
    if (c.size() > kMaxNameComponent)
      return Error(ErrorCode::kInvalidArgument, "a name component is longer than " +
                                                    std::to_string(kMaxNameComponent) + " bytes");
    if (c == "..") {
      if (parts.empty()) return Error(ErrorCode::kInvalidArgument, "the name leads out of the root (\"..\")");
      parts.pop_back();
    } else if (!c.empty() && c != ".") {
      parts.push_back(c);
    }
    start = end + 1;
  }
  std::string out;
  for (auto c : parts) {
    if (!out.empty()) out += '/';
    out += c;
  }
  return out;
}

Result<Whiteout> ClassifyWhiteout(const std::string& cleaned) {
  std::string base = BaseOf(cleaned);
  Whiteout w;
  if (base.rfind(kWhiteoutPrefix, 0) != 0) return w;
  if (base == kOpaqueMarker) {
    w.kind = Whiteout::Kind::kOpaque;
    w.target = ParentOf(cleaned);
    return w;
  }
  if (base.rfind(kWhiteoutMetaPrefix, 0) == 0) {
    w.kind = Whiteout::Kind::kIgnore;
    return w;
  }
  std::string victim = base.substr(std::strlen(kWhiteoutPrefix));
  if (victim.empty() || victim == "." || victim == "..")
    return Error(ErrorCode::kInvalidArgument, "whiteout of \"" + Printable(victim) + "\"");
  w.kind = Whiteout::Kind::kRemove;
  w.target = Join(ParentOf(cleaned), victim);
  return w;
}

bool XattrAllowed(std::string_view name) {
  return name.rfind("user.", 0) == 0 || name == "security.capability" ||
         name == "system.posix_acl_access" || name == "system.posix_acl_default";
}

Result<LayerReport> ApplyLayer(LayerStream& stream, uint32_t stream_index, uint32_t index) {
  // Files are created with their final permissions (LayerApplier::WriteFile).
  ::umask(0);
  LayerApplier applier(stream, stream_index, index);
  return applier.Run();
}

Result<LayerReport> ApplyLayer(int fd, uint64_t size, uint32_t index) {
  LayerStream stream({LayerSource{fd, size}});
  return ApplyLayer(stream, 0, index);
}

Status RunUnpack(const UnpackRequest& req, const std::function<void(const LayerReport&)>& on_layer) {
  // The layer disks are opened before the chroot: the child sees no /dev.
  std::vector<UniqueFd> layers;
  for (size_t i = 0; i < req.layers.size(); ++i) {
    auto dev = FindDiskBySerial(req.layers[i].serial, kDiskWaitMs);
    if (!dev.ok()) return dev.error().Wrap("layer " + std::to_string(i));
    UniqueFd fd(::open(dev->c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return Error::FromErrno("layer " + std::to_string(i) + ": open " + *dev);
    layers.push_back(std::move(fd));
  }
  MSB_TRY(std::string target, FindDiskBySerial(req.target_serial, kDiskWaitMs));
  MSB_TRY_STATUS(MakeDirs(kTargetMount, 0700));
  if (::mount(target.c_str(), kTargetMount, "ext4", MS_NOATIME, nullptr) != 0)
    return Error::FromErrno("mounting the target disk " + target);

  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    Error e = Error::FromErrno("pipe2");
    ::umount2(kTargetMount, 0);
    return e;
  }
  UniqueFd rd(p[0]), wr(p[1]);
  pid_t pid = ::fork();
  if (pid < 0) {
    Error e = Error::FromErrno("fork");
    ::umount2(kTargetMount, 0);
    return e;
  }
  if (pid == 0) {
    // The child: "L <report json>\n" per layer, or "E <message>\n" and exit 1.
    rd.Reset();
    auto say = [&](char tag, std::string text) {
      for (char& c : text)
        if (c == '\n') c = ' ';
      (void)WriteAll(wr.get(), std::string(1, tag) + " " + text + "\n");
    };
    if (::chroot(kTargetMount) != 0 || ::chdir("/") != 0) {
      say('E', std::string("chroot into the target: ") + std::strerror(errno));
      ::_exit(1);
    }
    ::umask(0);
    std::vector<LayerSource> sources;
    for (size_t i = 0; i < req.layers.size(); ++i) sources.push_back({layers[i].get(), req.layers[i].size});
    LayerStream stream(std::move(sources));
    for (size_t i = 0; i < req.layers.size(); ++i) {
      auto report = ApplyLayer(stream, static_cast<uint32_t>(i), static_cast<uint32_t>(i));
      if (!report.ok()) {
        say('E', report.error().message());
        ::_exit(1);
      }
      say('L', Encode(*report));
    }
    ::sync();
    ::_exit(0);
  }
  wr.Reset();
  layers.clear();
  std::string buf, error;
  char chunk[4096];
  for (;;) {
    ssize_t n = ::read(rd.get(), chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    buf.append(chunk, static_cast<size_t>(n));
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      std::string line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      if (line.size() < 2) continue;
      if (line[0] == 'L') {
        auto report = ParseLayerReport(std::string_view(line).substr(2));
        if (report.ok()) on_layer(*report);
        else error = "unpack helper: " + report.error().message();
      } else if (line[0] == 'E') {
        error = line.substr(2);
      }
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  ::sync();
  bool unmounted = ::umount2(kTargetMount, 0) == 0;
  int umount_errno = errno;
  if (!error.empty()) return Error(ErrorCode::kInvalidArgument, error);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return Error(ErrorCode::kInternal, "the unpack helper ended without a result (status " +
                                           std::to_string(status) + "; out of memory?)");
  if (!unmounted) return Error::FromErrno("unmounting the target disk", umount_errno);
  Diag("unpacked " + std::to_string(req.layers.size()) + " layers");
  return OkStatus();
}

}  // namespace msb::agent
