// Copying and hashing a disk file by its bytes (storage/disk.h: CopyDiskFile,
// DiskDigest): what a snapshot does with a sandbox's writable layer. The
// file's contents were written by a guest and are never interpreted here.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/sha256.h"
#include "storage/disk.h"

namespace msb::storage {
namespace {

constexpr size_t kChunk = 1 << 20;

// The data extents of fd as [offset, end) pairs, from SEEK_DATA/SEEK_HOLE. A
// file system without them reports the whole file as data.
Result<std::vector<std::pair<off_t, off_t>>> DataExtents(int fd, off_t size, const std::string& path) {
  std::vector<std::pair<off_t, off_t>> out;
  off_t pos = 0;
  while (pos < size) {
    off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole remains
      if (errno == EINVAL && pos == 0) return std::vector<std::pair<off_t, off_t>>{{0, size}};
      return Error::FromErrno("SEEK_DATA in " + path);
    }
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return Error::FromErrno("SEEK_HOLE in " + path);
    hole = std::min(hole, size);
    if (hole > data) out.emplace_back(data, hole);
    pos = hole;
  }
  return out;
}

Status PreadAll(int fd, char* buf, size_t n, off_t off, const std::string& path) {
  while (n > 0) {
    ssize_t r = ::pread(fd, buf, n, off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Error::FromErrno("reading " + path);
    if (r == 0) return Error(ErrorCode::kIo, path + " is shorter than it was a moment ago");
    buf += r;
    n -= static_cast<size_t>(r);
    off += r;
  }
  return OkStatus();
}

Status PwriteAll(int fd, const char* buf, size_t n, off_t off, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, buf, n, off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return Error::FromErrno("writing " + path);
    buf += w;
    n -= static_cast<size_t>(w);
    off += w;
  }
  return OkStatus();
}

// Reads fd's data extents once, hashing them as DiskDigest does and, when
// out >= 0, writing each chunk at the same offset of out.
Result<std::string> HashExtents(int fd, const std::string& path, int out, const std::string& dst,
                                uint64_t* bytes_copied) {
  struct stat st{};
  if (::fstat(fd, &st) != 0) return Error::FromErrno("stat " + path);
  MSB_TRY(auto extents, DataExtents(fd, st.st_size, path));
  Sha256 h;
  h.Update("msb disk v1 size " + std::to_string(st.st_size) + "\n");
  std::vector<char> buf(kChunk);
  for (auto [begin, end] : extents) {
    h.Update("extent " + std::to_string(begin) + " " + std::to_string(end - begin) + "\n");
    for (off_t off = begin; off < end;) {
      size_t n = static_cast<size_t>(std::min<off_t>(end - off, kChunk));
      MSB_TRY_STATUS(PreadAll(fd, buf.data(), n, off, path));
      h.Update(buf.data(), n);
      if (out >= 0) {
        MSB_TRY_STATUS(PwriteAll(out, buf.data(), n, off, dst));
        *bytes_copied += n;
      }
      off += static_cast<off_t>(n);
    }
  }
  if (out >= 0 && ::ftruncate(out, st.st_size) != 0) return Error::FromErrno("sizing " + dst);
  return h.DigestFinal();
}

// One pass over the source when copying: what is hashed is what is written.
Result<DiskCopy> CopyInto(int in, int out, const std::string& src, const std::string& dst) {
  DiskCopy result;
  if (::ioctl(out, FICLONE, in) == 0) {
    result.cloned = true;
    MSB_TRY(result.digest, HashExtents(out, dst, -1, dst, nullptr));
    return result;
  }
  MSB_TRY(result.digest, HashExtents(in, src, out, dst, &result.bytes_copied));
  if (::fsync(out) != 0) return Error::FromErrno("fsync " + dst);
  return result;
}

}  // namespace

Result<DiskCopy> CopyDiskFile(const std::string& src, const std::string& dst) {
  UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!in) return Error::FromErrno("cannot open " + src);
  UniqueFd out(::open(dst.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!out) return Error::FromErrno("cannot create " + dst);
  auto r = CopyInto(in.get(), out.get(), src, dst);
  if (!r.ok()) {
    out.Reset();
    (void)::unlink(dst.c_str());
    return r.error().Wrap("copying " + src + " to " + dst);
  }
  return r;
}

Result<std::string> DiskDigest(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return Error::FromErrno("cannot open " + path);
  return HashExtents(fd.get(), path, -1, path, nullptr);
}

}  // namespace msb::storage
