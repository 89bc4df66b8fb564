// POSIX implementations of io.h.
#include "common/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "common/fd.h"

namespace msb {

Result<std::string> ReadFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::FromErrno("cannot open " + path);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::FromErrno("cannot read " + path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::FromErrno("write");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return OkStatus();
}

Status ReadExact(int fd, char* buf, size_t n) {
  while (n > 0) {
    ssize_t r = ::read(fd, buf, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Error::FromErrno("read");
    }
    if (r == 0) return Error(ErrorCode::kIo, "unexpected end of file");
    buf += r;
    n -= static_cast<size_t>(r);
  }
  return OkStatus();
}

Status WriteFileAtomic(const std::string& path, std::string_view data, int mode) {
  return WriteFileAtomicAt(AT_FDCWD, path, data, mode);
}

namespace {
Status WriteAndRename(int dir_fd, const std::string& name, std::string_view data, int mode, bool sync) {
  std::string tmp = name + ".tmp." + std::to_string(::getpid()) + "." +
                    std::to_string(std::random_device{}());
  {
    UniqueFd fd(::openat(dir_fd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
    if (!fd) return Error::FromErrno("cannot create " + tmp);
    if (auto st = WriteAll(fd.get(), data); !st.ok()) {
      ::unlinkat(dir_fd, tmp.c_str(), 0);
      return st.error().Wrap("writing " + tmp);
    }
    if (sync && ::fsync(fd.get()) != 0) {
      Error e = Error::FromErrno("fsync " + tmp);
      ::unlinkat(dir_fd, tmp.c_str(), 0);
      return e;
    }
  }
  if (::renameat(dir_fd, tmp.c_str(), dir_fd, name.c_str()) != 0) {
    Error e = Error::FromErrno("cannot rename " + tmp + " to " + name);
    ::unlinkat(dir_fd, tmp.c_str(), 0);
    return e;
  }
  return OkStatus();
}
}  // namespace

Status WriteFileAtomicAt(int dir_fd, const std::string& name, std::string_view data, int mode) {
  return WriteAndRename(dir_fd, name, data, mode, true);
}

Status ReplaceFileAt(int dir_fd, const std::string& name, std::string_view data, int mode) {
  return WriteAndRename(dir_fd, name, data, mode, false);
}

Status ReplaceFile(const std::string& path, std::string_view data, int mode) {
  return WriteAndRename(AT_FDCWD, path, data, mode, false);
}

Status MakeDirs(const std::string& path, int mode) {
  if (path.empty()) return OkStatus();
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty()) continue;
    if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) {
      return Error::FromErrno("cannot create directory " + cur);
    }
  }
  return OkStatus();
}

Status SetNonBlocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return Error::FromErrno("fcntl");
  return OkStatus();
}

std::string MsbHome() {
  if (const char* h = std::getenv("MSB_HOME"); h != nullptr && *h != '\0') return h;
  if (const char* x = std::getenv("XDG_DATA_HOME"); x != nullptr && *x != '\0') {
    return std::string(x) + "/msb";
  }
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : "/root") + "/.local/share/msb";
}

Result<std::optional<unsigned>> MakeDirPrivate(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return std::optional<unsigned>();
  const unsigned was = st.st_mode & 07777;
  if ((was & 077) == 0) return std::optional<unsigned>();
  char octal[8];
  std::snprintf(octal, sizeof octal, "%04o", was);
  if ((was & S_ISVTX) != 0) {
    return Error(ErrorCode::kState, path + " is a shared directory (mode " + octal +
                                        "): other users can see what msb keeps there; set MSB_HOME "
                                        "to a directory of your own");
  }
  if (::chmod(path.c_str(), 0700) != 0) {
    return Error::FromErrno(std::string("cannot make ") + path + " private (mode " + octal +
                            ", other users can read it)");
  }
  return std::optional<unsigned>(was);
}

std::string SelfDir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  auto slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

std::string LastLines(std::string_view text, int n) {
  size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  for (int i = 0; i < n && pos != std::string_view::npos && pos > 0; ++i) {
    pos = text.rfind('\n', pos - 1);
  }
  return std::string(pos == std::string_view::npos || pos == 0 ? text : text.substr(pos + 1));
}

}  // namespace msb
