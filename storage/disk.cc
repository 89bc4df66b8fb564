// Base disks from local directories and empty sparse ext4 disks, built with
// mkfs.ext4 into a temporary file beside the target and renamed into place.
// Not a file system implementation and not a mounter: e2fsprogs writes the
// image, the guest kernel is the only thing that ever mounts it.
//
// What `mkfs.ext4 -d DIR` (e2fsprogs 1.47) copies, checked with debugfs:
// regular files, directories, symlinks (fast and slow), hard links within the
// tree, character/block device nodes with their numbers, FIFOs, sockets,
// permission bits including setuid/setgid/sticky, uid/gid, extended
// attributes, timestamps. Limits: the root directory gets mode 0755 and owner
// 0:0 whatever the source root's are; files keep their host uid/gid (a tree
// unpacked by an unprivileged user is owned by that user's uid in the guest);
// files the host user cannot read make the build fail; sparse files are
// written densely only where they have data. The tree must not change while
// it is hashed and copied: a change in between is not detected and the cached
// image then holds the later content under the earlier hash.
#include "storage/disk.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string_view>
#include <utility>
#include <vector>

#include "common/c_ptr.h"
#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"
#include "common/log.h"
#include "common/sha256.h"

namespace msb::storage {

namespace {

// Part of every base disk's cache key: bump it when the mkfs options or the
// hash layout change, so old images are not reused for a different recipe.
constexpr std::string_view kBaseDiskFormat = "msb-base-disk-v1";
constexpr const char* kBaseLabel = "msb-base";
constexpr uint64_t kBlockSize = 4096;
constexpr uint64_t kInodeSize = 256;
constexpr uint64_t kMiB = 1024 * 1024;
// Free space and inodes beyond the estimate. The image is sparse, so unused
// space costs no disk; it only has to absorb the estimate's errors.
constexpr uint64_t kHeadroomBytes = 32 * kMiB;
constexpr uint64_t kExtraInodes = 256;
// A build that runs out of blocks or inodes is retried with twice the room.
constexpr int kBuildAttempts = 3;
constexpr size_t kMaxLabelBytes = 16;
constexpr size_t kReadChunk = 1 << 20;
// Symlink targets shorter than this live in the inode ("fast" symlinks).
constexpr uint64_t kFastSymlinkMax = 60;
constexpr const char* kTempPrefix = ".tmp-";

void CloseDir(DIR* dir) { closedir(dir); }

uint64_t RoundUp(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

// SHA-256 over length-framed fields, so that no two different trees feed the
// same byte stream.
class FramedSha256 {
 public:
  void Bytes(const void* data, size_t n) { hash_.Update(data, n); }
  void U64(uint64_t v) {
    unsigned char le[8];
    for (int i = 0; i < 8; ++i) le[i] = static_cast<unsigned char>(v >> (8 * i));
    Bytes(le, sizeof le);
  }
  void Field(std::string_view s) {
    U64(s.size());
    Bytes(s.data(), s.size());
  }
  std::string HexFinal() { return hash_.HexFinal(); }

 private:
  Sha256 hash_;
};

// One sorted walk: feeds the hash and estimates the image's size.
class TreeWalker {
 public:
  Status Walk(const std::string& root) {
    struct stat st;
    if (::stat(root.c_str(), &st) != 0) return Error::FromErrno("cannot read " + root);
    return Entry(root, ".", st);
  }
  TreeSummary Finish() {
    summary_.sha256 = hash_.HexFinal();
    return summary_;
  }
  // Bytes of blocks the tree will occupy, inode tables included.
  uint64_t footprint_bytes() const { return footprint_ + summary_.entries * kInodeSize; }

 private:
  Status Entry(const std::string& path, const std::string& rel, const struct stat& st) {
    ++summary_.entries;
    hash_.Field(rel);
    hash_.U64(st.st_mode & S_IFMT);
    hash_.U64(st.st_mode & 07777);
    hash_.U64(st.st_uid);
    hash_.U64(st.st_gid);
    MSB_TRY_STATUS(Xattrs(path));
    switch (st.st_mode & S_IFMT) {
      case S_IFDIR:
        footprint_ += kBlockSize;
        return Directory(path, rel);
      case S_IFREG:
        return Regular(path, rel, st);
      case S_IFLNK: {
        MSB_TRY(std::string target, ReadLink(path, st));
        hash_.Field(target);
        if (target.size() >= kFastSymlinkMax) footprint_ += kBlockSize;
        return OkStatus();
      }
      case S_IFCHR:
      case S_IFBLK:
        hash_.U64(major(st.st_rdev));
        hash_.U64(minor(st.st_rdev));
        return OkStatus();
      case S_IFIFO:
      case S_IFSOCK:
        return OkStatus();
      default:
        return Error(ErrorCode::kInvalidArgument, path + ": unsupported file type");
    }
  }

  Status Directory(const std::string& path, const std::string& rel) {
    CPtr<DIR, CloseDir> dir(::opendir(path.c_str()));
    if (dir == nullptr) return Error::FromErrno("cannot list " + path);
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* d = ::readdir(dir.get())) {
      std::string_view name = d->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
      errno = 0;
    }
    if (errno != 0) return Error::FromErrno("cannot list " + path);
    dir.reset();
    std::sort(names.begin(), names.end());
    hash_.U64(names.size());
    for (const std::string& name : names) {
      // Directory entry: 8 bytes of header plus the name, 4-byte aligned.
      footprint_ += RoundUp(8 + name.size(), 4);
      std::string child = path + "/" + name;
      struct stat st;
      if (::lstat(child.c_str(), &st) != 0) return Error::FromErrno("cannot read " + child);
      MSB_TRY_STATUS(Entry(child, rel == "." ? name : rel + "/" + name, st));
    }
    return OkStatus();
  }

  Status Regular(const std::string& path, const std::string& rel, const struct stat& st) {
    if (st.st_nlink > 1) {
      auto key = std::make_pair(st.st_dev, st.st_ino);
      auto [it, inserted] = links_.emplace(key, rel);
      if (!inserted) {
        // A second name of an inode already hashed: mkfs makes it a hard link.
        --summary_.entries;
        hash_.Field("hardlink");
        hash_.Field(it->second);
        return OkStatus();
      }
    }
    hash_.Field("data");
    hash_.U64(static_cast<uint64_t>(st.st_size));
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY));
    if (!fd) return Error::FromErrno("cannot read " + path);
    std::vector<char> buf(kReadChunk);
    uint64_t total = 0;
    for (;;) {
      ssize_t n = ::read(fd.get(), buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return Error::FromErrno("cannot read " + path);
      }
      if (n == 0) break;
      hash_.Bytes(buf.data(), static_cast<size_t>(n));
      total += static_cast<uint64_t>(n);
    }
    if (total != static_cast<uint64_t>(st.st_size)) {
      return Error(ErrorCode::kIo, path + " changed while it was being read; try again");
    }
    summary_.content_bytes += total;
    footprint_ += RoundUp(total, kBlockSize);
    // Extent tree blocks for large or fragmented files.
    footprint_ += total / (32 * kMiB) * kBlockSize;
    return OkStatus();
  }

  Result<std::string> ReadLink(const std::string& path, const struct stat& st) {
    std::string target(static_cast<size_t>(st.st_size > 0 ? st.st_size : 256) + 1, '\0');
    for (;;) {
      ssize_t n = ::readlink(path.c_str(), target.data(), target.size());
      if (n < 0) return Error::FromErrno("cannot read symlink " + path);
      if (static_cast<size_t>(n) < target.size()) {
        target.resize(static_cast<size_t>(n));
        return target;
      }
      target.resize(target.size() * 2);
    }
  }

  Status Xattrs(const std::string& path) {
    ssize_t n = ::llistxattr(path.c_str(), nullptr, 0);
    if (n < 0 && (errno == ENOTSUP || errno == ENODATA)) n = 0;
    if (n < 0) return Error::FromErrno("cannot list extended attributes of " + path);
    std::string list(static_cast<size_t>(n), '\0');
    if (n > 0) {
      n = ::llistxattr(path.c_str(), list.data(), list.size());
      if (n < 0) return Error::FromErrno("cannot list extended attributes of " + path);
      list.resize(static_cast<size_t>(n));
    }
    std::vector<std::string> names;
    for (size_t pos = 0; pos < list.size();) {
      size_t end = list.find('\0', pos);
      if (end == std::string::npos) end = list.size();
      if (end > pos) names.push_back(list.substr(pos, end - pos));
      pos = end + 1;
    }
    std::sort(names.begin(), names.end());
    hash_.U64(names.size());
    uint64_t bytes = 0;
    for (const std::string& name : names) {
      ssize_t vn = ::lgetxattr(path.c_str(), name.c_str(), nullptr, 0);
      if (vn < 0) return Error::FromErrno("cannot read attribute " + name + " of " + path);
      std::string value(static_cast<size_t>(vn), '\0');
      if (vn > 0) {
        vn = ::lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
        if (vn < 0) return Error::FromErrno("cannot read attribute " + name + " of " + path);
        value.resize(static_cast<size_t>(vn));
      }
      hash_.Field(name);
      hash_.Field(value);
      bytes += name.size() + value.size() + 16;
    }
    // What does not fit in the inode's spare space goes to an xattr block.
    if (bytes > 96) footprint_ += RoundUp(bytes, kBlockSize);
    return OkStatus();
  }

  FramedSha256 hash_;
  TreeSummary summary_;
  uint64_t footprint_ = 0;
  std::map<std::pair<dev_t, ino_t>, std::string> links_;
};

// mkfs.ext4 lives in /usr/sbin, which an unprivileged user's PATH may lack.
Result<std::string> FindTool(const std::string& name) {
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH")) {
    std::string_view rest = path;
    while (!rest.empty()) {
      size_t colon = rest.find(':');
      dirs.emplace_back(rest.substr(0, colon));
      if (colon == std::string_view::npos) break;
      rest.remove_prefix(colon + 1);
    }
  }
  dirs.insert(dirs.end(), {"/usr/sbin", "/sbin", "/usr/bin", "/bin"});
  for (const std::string& d : dirs) {
    if (d.empty()) continue;
    std::string candidate = d + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return Error(ErrorCode::kUnavailable, name + " not found; install e2fsprogs");
}

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// A file that is removed unless Keep() is called: the half-built image.
class TempFile {
 public:
  explicit TempFile(std::string path) : path_(std::move(path)) {}
  ~TempFile() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }
  void Keep() { path_.clear(); }

 private:
  std::string path_;
};

// "<dir>/.tmp-<stem>-<pid>-<random>"; the pid lets a later build recognise
// the leftovers of a builder that died.
std::string TempPathFor(const std::string& dir, const std::string& stem) {
  std::random_device rd;
  return dir + "/" + kTempPrefix + stem + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(rd());
}

// Removes temporaries in dir whose builder process no longer exists.
void RemoveStaleTemporaries(const std::string& dir) {
  CPtr<DIR, CloseDir> d(::opendir(dir.c_str()));
  if (d == nullptr) return;
  std::vector<std::string> stale;
  while (struct dirent* e = ::readdir(d.get())) {
    std::string_view name = e->d_name;
    if (name.substr(0, std::strlen(kTempPrefix)) != kTempPrefix) continue;
    size_t last = name.rfind('-');
    if (last == std::string_view::npos || last == 0) continue;
    size_t prev = name.rfind('-', last - 1);
    if (prev == std::string_view::npos) continue;
    std::string pid_text(name.substr(prev + 1, last - prev - 1));
    char* end = nullptr;
    long pid = std::strtol(pid_text.c_str(), &end, 10);
    if (pid_text.empty() || *end != '\0' || pid <= 0) continue;
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      stale.emplace_back(name);
    }
  }
  for (const std::string& name : stale) ::unlink((dir + "/" + name).c_str());
}

// Creates path as a sparse file of size bytes (O_EXCL: never an existing file).
Status CreateSparseFile(const std::string& path, uint64_t size, int mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!fd) return Error::FromErrno("cannot create " + path);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return Error::FromErrno("cannot size " + path);
  }
  return OkStatus();
}

Status FsyncPath(const std::string& path, bool directory) {
  UniqueFd fd(::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC));
  if (!fd) return Error::FromErrno("cannot open " + path);
  if (::fsync(fd.get()) != 0) return Error::FromErrno("fsync " + path);
  return OkStatus();
}

// Renames tmp to path unless path exists. Returns false when it existed.
Result<bool> RenameNoReplace(const std::string& tmp, const std::string& path) {
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) == 0) {
    return true;
  }
  if (errno == EEXIST) return false;
  if (errno != EINVAL && errno != ENOSYS) {
    return Error::FromErrno("cannot rename " + tmp + " to " + path);
  }
  // A file system without RENAME_NOREPLACE: link(2) also refuses to replace.
  if (::link(tmp.c_str(), path.c_str()) != 0) {
    if (errno == EEXIST) return false;
    return Error::FromErrno("cannot link " + tmp + " to " + path);
  }
  ::unlink(tmp.c_str());
  return true;
}

// A UUID for the image derived from its hash, so a rebuild of the same tree
// gets the same file system UUID.
std::string UuidFromHash(const std::string& hex) {
  std::string h = hex.substr(0, 32);
  h[12] = '4';
  h[16] = "89ab"[(h[16] >= 'a' ? h[16] - 'a' + 10 : h[16] - '0') & 3];
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" +
         h.substr(16, 4) + "-" + h.substr(20, 12);
}

std::string TrimOutput(std::string out) {
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace

Result<TreeSummary> HashTree(const std::string& dir) {
  TreeWalker walker;
  MSB_TRY_STATUS(walker.Walk(dir));
  return walker.Finish();
}

Result<std::string> BuildBaseDiskFromDir(const std::string& rootfs_dir,
                                         const std::string& cache_dir, TreeSummary* summary) {
  struct stat st;
  if (::stat(rootfs_dir.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      return Error(ErrorCode::kNotFound,
                   "root file system directory " + rootfs_dir + " does not exist", ENOENT);
    }
    return Error::FromErrno("cannot read root file system directory " + rootfs_dir);
  }
  if (!S_ISDIR(st.st_mode)) {
    return Error(ErrorCode::kInvalidArgument,
                 rootfs_dir + " is not a directory: a local image must be a root file system "
                              "directory");
  }
  MSB_TRY_STATUS(MakeDirs(cache_dir, 0700));
  char root_real[PATH_MAX], cache_real[PATH_MAX];
  if (::realpath(rootfs_dir.c_str(), root_real) == nullptr) {
    return Error::FromErrno("cannot resolve " + rootfs_dir);
  }
  if (::realpath(cache_dir.c_str(), cache_real) == nullptr) {
    return Error::FromErrno("cannot resolve " + cache_dir);
  }
  std::string root = root_real, cache = cache_real;
  if (cache == root || cache.rfind(root + "/", 0) == 0 || root == "/") {
    return Error(ErrorCode::kInvalidArgument,
                 "the image cache " + cache + " lies inside the root file system directory " +
                     root + "; use a root file system directory outside MSB_HOME");
  }

  TreeWalker walker;
  MSB_TRY_STATUS(walker.Walk(root));
  const uint64_t footprint = walker.footprint_bytes();
  TreeSummary sum = walker.Finish();
  if (summary != nullptr) *summary = sum;
  // The cache key covers the recipe as well as the content.
  FramedSha256 key;
  key.Field(kBaseDiskFormat);
  key.Field(sum.sha256);
  const std::string key_hex = key.HexFinal();
  const std::string final_path = cache + "/" + key_hex + ".ext4";

  struct stat existing;
  if (::lstat(final_path.c_str(), &existing) == 0 && S_ISREG(existing.st_mode)) {
    return final_path;
  }
  RemoveStaleTemporaries(cache);
  MSB_TRY(std::string mkfs, FindTool("mkfs.ext4"));

  uint64_t size = RoundUp(footprint + footprint / 10 + kHeadroomBytes, kMiB);
  uint64_t inodes = sum.entries + sum.entries / 10 + kExtraInodes;
  std::string failure;
  for (int attempt = 0; attempt < kBuildAttempts; ++attempt, size *= 2, inodes *= 2) {
    TempFile tmp(TempPathFor(cache, key_hex) + ".ext4");
    MSB_TRY_STATUS(CreateSparseFile(tmp.path(), size, 0644));
    MSB_TRY(RunResult run,
            RunCapture({mkfs, "-q", "-F", "-d", root, "-L", kBaseLabel, "-O", "^has_journal",
                        "-b", std::to_string(kBlockSize), "-I", std::to_string(kInodeSize),
                        "-N", std::to_string(inodes), "-m", "0", "-U", UuidFromHash(key_hex),
                        "-E", "root_owner=0:0", tmp.path()}));
    if (run.status.ShellCode() != 0) {
      failure = TrimOutput(run.output) + " (" + run.status.ToString() + ")";
      // Out of room: the estimate was short; anything else will not get better.
      if (run.output.find("Could not allocate") != std::string::npos) {
        MSB_LOG(kInfo, "fs") << "base disk for " << rootfs_dir << " did not fit in " << size
                             << " bytes / " << inodes << " inodes; retrying with twice that";
        continue;
      }
      break;
    }
    MSB_TRY_STATUS(FsyncPath(tmp.path(), false));
    if (::chmod(tmp.path().c_str(), 0444) != 0) return Error::FromErrno("chmod " + tmp.path());
    MSB_TRY(bool renamed, RenameNoReplace(tmp.path(), final_path));
    if (renamed) {
      tmp.Keep();
      MSB_TRY_STATUS(FsyncPath(cache, true));
    }
    // Otherwise a concurrent build of the same tree won; its image is equal.
    return final_path;
  }
  return Error(ErrorCode::kIo,
               "mkfs.ext4 could not build a base disk from " + rootfs_dir + ": " + failure);
}

Status CreateSparseExt4(const std::string& path, uint64_t size_bytes, const std::string& label) {
  if (label.size() > kMaxLabelBytes) {
    return Error(ErrorCode::kInvalidArgument, "ext4 label '" + label + "' is longer than " +
                                                  std::to_string(kMaxLabelBytes) + " bytes");
  }
  if (size_bytes < kMiB) {
    return Error(ErrorCode::kInvalidArgument,
                 "disk " + path + ": size " + std::to_string(size_bytes) +
                     " bytes is too small for an ext4 file system (at least 1 MiB)");
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    return Error(ErrorCode::kAlreadyExists, "disk " + path + " already exists", EEXIST);
  }
  const std::string dir = DirName(path);
  MSB_TRY_STATUS(MakeDirs(dir, 0700));
  MSB_TRY(std::string mkfs, FindTool("mkfs.ext4"));
  TempFile tmp(TempPathFor(dir, BaseName(path)));
  MSB_TRY_STATUS(CreateSparseFile(tmp.path(), size_bytes, 0600));
  MSB_TRY(RunResult run, RunCapture({mkfs, "-q", "-F", "-L", label, "-b",
                                     std::to_string(kBlockSize), "-m", "0", "-E",
                                     "root_owner=0:0", tmp.path()}));
  if (run.status.ShellCode() != 0) {
    return Error(ErrorCode::kIo, "mkfs.ext4 could not create " + path + ": " +
                                     TrimOutput(run.output) + " (" + run.status.ToString() +
                                     ")");
  }
  MSB_TRY_STATUS(FsyncPath(tmp.path(), false));
  MSB_TRY(bool renamed, RenameNoReplace(tmp.path(), path));
  if (!renamed) {
    return Error(ErrorCode::kAlreadyExists, "disk " + path + " already exists", EEXIST);
  }
  tmp.Keep();
  return FsyncPath(dir, true);
}

}  // namespace msb::storage
