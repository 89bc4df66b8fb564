// InstallCa and the msb block of a CA bundle (trust.h). Bundles are found by
// following their symlinks one at a time inside the root, so that the file a
// link leads to is the one rewritten (and renamed over in its own directory),
// the link itself left as the image made it.
#include "agentd/trust.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <utility>

#include "agentd/mounts.h"
#include "common/fd.h"
#include "common/io.h"

namespace msb::agent {
namespace {

// As many symlinks as the kernel follows in one lookup (MAXSYMLINKS).
constexpr int kMaxSymlinks = 40;

// A regular file inside the root, by its directory entry: the directory (an
// O_PATH fd, with its device and inode) and the name in it.
struct RootFile {
  UniqueFd dir;
  dev_t dir_dev = 0;
  ino_t dir_ino = 0;
  std::string name;
  std::string shown;  // the guest path, with " (a link to ...)" when it was one

  bool SameEntry(const RootFile& o) const {
    return dir_dev == o.dir_dev && dir_ino == o.dir_ino && name == o.name;
  }
};

bool Absent(int err) { return err == ENOENT || err == ENOTDIR || err == ELOOP; }

// Follows the absolute guest path `path` inside root_fd, a symlink at a time,
// to the regular file it names. None when nothing is there, a link dangles or
// loops, or the file is not a regular file.
Result<std::optional<RootFile>> FindRegularFile(int root_fd, const std::string& path) {
  std::string at = path;
  for (int links = 0; links <= kMaxSymlinks; ++links) {
    size_t slash = at.rfind('/');
    std::string dir = at.substr(0, slash), name = at.substr(slash + 1);
    if (dir.empty()) dir = "/";
    if (name.empty() || name == "." || name == "..") return std::optional<RootFile>();
    auto dir_fd = OpenInRoot(root_fd, dir, O_PATH | O_DIRECTORY);
    if (!dir_fd.ok()) {
      if (Absent(dir_fd.error().sys_errno())) return std::optional<RootFile>();
      return dir_fd.error();
    }
    struct stat st;
    if (::fstatat(dir_fd->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (Absent(errno)) return std::optional<RootFile>();
      return Error::FromErrno("cannot stat " + at);
    }
    if (S_ISLNK(st.st_mode)) {
      char buf[PATH_MAX];
      ssize_t n = ::readlinkat(dir_fd->get(), name.c_str(), buf, sizeof buf);
      if (n < 0) return Error::FromErrno("cannot read the link " + at);
      if (n == 0 || static_cast<size_t>(n) == sizeof buf) return std::optional<RootFile>();
      std::string target(buf, static_cast<size_t>(n));
      // A relative target is looked up from the link's directory, as the
      // kernel does: dir's own links and a ".." in target resolve in openat2.
      at = target[0] == '/' ? target : (dir == "/" ? "" : dir) + "/" + target;
      continue;
    }
    if (!S_ISREG(st.st_mode)) return std::optional<RootFile>();
    struct stat dst;
    if (::fstat(dir_fd->get(), &dst) != 0) return Error::FromErrno("cannot stat " + dir);
    RootFile f;
    f.dir = std::move(*dir_fd);
    f.dir_dev = dst.st_dev;
    f.dir_ino = dst.st_ino;
    f.name = name;
    f.shown = at == path ? path : path + " (a link to " + at + ")";
    return std::optional<RootFile>(std::move(f));
  }
  return std::optional<RootFile>();
}

Result<std::string> ReadBundle(const RootFile& f) {
  UniqueFd fd(::openat(f.dir.get(), f.name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return Error::FromErrno("cannot open " + f.shown);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Error::FromErrno("cannot stat " + f.shown);
  if (!S_ISREG(st.st_mode)) return Error(ErrorCode::kInvalidArgument, f.shown + " is not a regular file");
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::FromErrno("cannot read " + f.shown);
    if (n == 0) return out;
    if (out.size() + static_cast<size_t>(n) > kMaxCaBundleBytes)
      return Error(ErrorCode::kInvalidArgument,
                   f.shown + " is larger than " + std::to_string(kMaxCaBundleBytes >> 20) + " MiB");
    out.append(buf, static_cast<size_t>(n));
  }
}

// Replaces name in dir with data, mode 0644 whatever the umask; not flushed,
// as the CA is installed again at every boot (common/io.h ReplaceFileAt).
Status WriteAt(int dir_fd, const std::string& name, std::string_view data, const std::string& shown) {
  Status s = ReplaceFileAt(dir_fd, name, data, 0644);
  if (s.ok() && ::fchmodat(dir_fd, name.c_str(), 0644, 0) != 0) s = Error::FromErrno("chmod 0644");
  if (!s.ok()) return s.error().Wrap("writing " + shown);
  return OkStatus();
}

// The directory of the absolute guest path `path` and its last component.
std::pair<std::string, std::string> Split(const std::string& path) {
  size_t slash = path.rfind('/');
  return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

Status WriteInRoot(int root_fd, const std::string& path, std::string_view data) {
  auto [dir, name] = Split(path);
  auto dir_fd = OpenDirInRoot(root_fd, dir, true);
  if (!dir_fd.ok()) return dir_fd.error().Wrap("writing " + path);
  return WriteAt(dir_fd->get(), name, data, path);
}

Status RemoveInRoot(int root_fd, const std::string& path) {
  auto [dir, name] = Split(path);
  auto dir_fd = OpenDirInRoot(root_fd, dir, false);
  if (!dir_fd.ok()) {
    if (Absent(dir_fd.error().sys_errno())) return OkStatus();
    return dir_fd.error().Wrap("removing " + path);
  }
  if (::unlinkat(dir_fd->get(), name.c_str(), 0) != 0 && errno != ENOENT)
    return Error::FromErrno("cannot remove " + path);
  return OkStatus();
}

bool IsMarker(std::string_view line, std::string_view marker) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line == marker;
}

Status Install(int root_fd, std::string_view pem) {
  if (pem.empty()) {
    // kCaBundle is written first and removed last: without it, no bundle
    // holds a block of ours.
    auto bundle = OpenInRoot(root_fd, kCaBundle, O_PATH);
    if (!bundle.ok() && Absent(bundle.error().sys_errno())) return OkStatus();
  }
  // All found before any is written: a rename gives a file a new inode, and
  // a later path may lead to the same file.
  std::vector<RootFile> bundles;
  for (const char* path : kSystemCaBundles) {
    auto found = FindRegularFile(root_fd, path);
    if (!found.ok()) return found.error().Wrap(std::string("looking up ") + path);
    std::optional<RootFile>& f = *found;
    if (!f) continue;
    bool seen = false;
    for (const RootFile& b : bundles) seen = seen || b.SameEntry(*f);
    if (!seen) bundles.push_back(std::move(*f));
  }
  std::vector<std::string> contents;
  for (const RootFile& b : bundles) {
    MSB_TRY(std::string text, ReadBundle(b));
    contents.push_back(std::move(text));
  }
  if (!pem.empty()) {
    std::string ca(pem);
    if (ca.back() != '\n') ca += '\n';
    MSB_TRY_STATUS(WriteInRoot(root_fd, kCaFile, ca));
    MSB_TRY_STATUS(WriteInRoot(root_fd, kCaBundle,
                               ReplaceCaBlock(contents.empty() ? "" : contents[0], pem)));
  }
  for (size_t i = 0; i < bundles.size(); ++i) {
    std::string updated = ReplaceCaBlock(contents[i], pem);
    if (updated == contents[i]) continue;
    MSB_TRY_STATUS(WriteAt(bundles[i].dir.get(), bundles[i].name, updated, bundles[i].shown));
  }
  if (pem.empty()) {
    MSB_TRY_STATUS(RemoveInRoot(root_fd, kCaFile));
    MSB_TRY_STATUS(RemoveInRoot(root_fd, kCaBundle));
  }
  return OkStatus();
}

}  // namespace

std::string ReplaceCaBlock(std::string_view bundle, std::string_view pem) {
  std::string out;
  out.reserve(bundle.size() + pem.size() + 64);
  bool in_block = false;
  size_t pos = 0;
  while (pos < bundle.size()) {
    size_t eol = bundle.find('\n', pos);
    size_t end = eol == std::string_view::npos ? bundle.size() : eol + 1;
    std::string_view line = bundle.substr(pos, end - pos);
    pos = end;
    if (!in_block && IsMarker(line, kCaBlockBegin)) {
      in_block = true;
    } else if (in_block) {
      if (IsMarker(line, kCaBlockEnd)) in_block = false;
    } else {
      out.append(line);
    }
  }
  if (pem.empty()) return out;
  if (!out.empty() && out.back() != '\n') out += '\n';
  out.append(kCaBlockBegin).append("\n").append(pem);
  if (pem.back() != '\n') out += '\n';
  out.append(kCaBlockEnd).append("\n");
  return out;
}

Status InstallCa(const std::string& root, std::string_view pem) {
  UniqueFd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd) return Error::FromErrno("installing the sandbox CA: cannot open the root " + root);
  if (Status s = Install(root_fd.get(), pem); !s.ok()) return s.error().Wrap("installing the sandbox CA");
  return OkStatus();
}

std::vector<std::string> CaEnv() {
  const std::string bundle = kCaBundle;
  return {"SSL_CERT_FILE=" + bundle, "REQUESTS_CA_BUNDLE=" + bundle, "CURL_CA_BUNDLE=" + bundle,
          "GIT_SSL_CAINFO=" + bundle, std::string("NODE_EXTRA_CA_CERTS=") + kCaFile};
}

}  // namespace msb::agent
