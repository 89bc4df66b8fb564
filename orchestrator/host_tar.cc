// libarchive on the host: archive_read_disk + pax writer for copy-in,
// tar reader + archive_write_disk with the SECURE_* flags for copy-out.
#include "orchestrator/host_tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <optional>

#include "common/archive_ptr.h"
#include "common/fd.h"

namespace msb::orchestrator {
namespace {

struct SinkState {
  const std::function<Status(std::string_view)>* sink;
  std::optional<Error> error;
};

la_ssize_t WriteCb(archive*, void* client, const void* buf, size_t n) {
  auto* s = static_cast<SinkState*>(client);
  auto st = (*s->sink)(std::string_view(static_cast<const char*>(buf), n));
  if (!st.ok()) {
    s->error = st.error();
    return -1;
  }
  return static_cast<la_ssize_t>(n);
}

// Replaces the first path component `from` with `to`; false when the entry
// is not under `from`.
bool RenameTop(std::string& path, const std::string& from, const std::string& to) {
  while (path.rfind("./", 0) == 0) path.erase(0, 2);
  if (path == from || path == from + "/") {
    path = to;
    return true;
  }
  if (path.rfind(from + "/", 0) == 0) {
    path = to + path.substr(from.size());
    return true;
  }
  return false;
}

}  // namespace

Status PackHostPath(const std::string& src, const std::string& top_name,
                    const std::function<Status(std::string_view)>& sink) {
  struct stat st;
  if (::lstat(src.c_str(), &st) != 0) return Error::FromErrno("cannot read " + src);
  ArchiveReadPtr disk(archive_read_disk_new());
  archive_read_disk_set_standard_lookup(disk.get());
  archive_read_disk_set_symlink_physical(disk.get());
  if (archive_read_disk_open(disk.get(), src.c_str()) != ARCHIVE_OK) {
    return Error(ErrorCode::kIo, "cannot read " + src + ": " + ArchiveErrorString(disk.get()));
  }
  ArchiveWritePtr out(archive_write_new());
  archive_write_set_format_pax_restricted(out.get());
  archive_write_set_bytes_per_block(out.get(), 0);
  SinkState state{&sink, std::nullopt};
  if (archive_write_open2(out.get(), &state, nullptr, WriteCb, nullptr, nullptr) != ARCHIVE_OK) {
    return Error(ErrorCode::kIo, std::string("tar: ") + ArchiveErrorString(out.get()));
  }
  std::string base = src;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  for (;;) {
    archive_entry* entry = archive_entry_new();
    int r = archive_read_next_header2(disk.get(), entry);
    if (r == ARCHIVE_EOF) {
      archive_entry_free(entry);
      break;
    }
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      std::string msg = ArchiveErrorString(disk.get());
      archive_entry_free(entry);
      return Error(ErrorCode::kIo, "reading " + src + ": " + msg);
    }
    archive_read_disk_descend(disk.get());
    std::string path = archive_entry_sourcepath(entry);
    std::string rel = path.size() > base.size() ? path.substr(base.size()) : "";
    archive_entry_copy_pathname(entry, (top_name + rel).c_str());
    r = archive_write_header(out.get(), entry);
    if (r == ARCHIVE_FATAL) {
      std::string msg = ArchiveErrorString(out.get());
      archive_entry_free(entry);
      if (state.error) return *state.error;
      return Error(ErrorCode::kIo, "packing " + path + ": " + msg);
    }
    // ARCHIVE_WARN still wrote the header: under msb's C locale a name that
    // is not ASCII cannot be converted to UTF-8 and is stored as raw bytes
    // (pax hdrcharset=BINARY). Its contents must follow, or the receiver
    // reads zeros. ARCHIVE_FAILED skipped the entry (a socket, say).
    if ((r == ARCHIVE_OK || r == ARCHIVE_WARN) && archive_entry_size(entry) > 0 &&
        archive_entry_filetype(entry) == AE_IFREG) {
      FILE* f = std::fopen(path.c_str(), "rb");
      if (f == nullptr) {
        archive_entry_free(entry);
        return Error::FromErrno("cannot open " + path);
      }
      char buf[65536];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
        if (archive_write_data(out.get(), buf, n) < 0) break;
      }
      std::fclose(f);
    }
    archive_entry_free(entry);
    if (state.error) return *state.error;
  }
  archive_write_close(out.get());
  if (state.error) return *state.error;
  return OkStatus();
}

Result<UniqueFd> OpenSpool(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600));
  if (fd) return fd;
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
    return Error::FromErrno("cannot write into " + dir);
  }
  // A file system without O_TMPFILE: a random name, created exclusively
  // (mkstemp opens O_EXCL, which refuses a symlink), unlinked at once.
  std::string name = dir + "/.msb-cp.XXXXXX";
  int raw = ::mkostemp(name.data(), O_CLOEXEC);
  if (raw < 0) return Error::FromErrno("cannot write into " + dir);
  ::unlink(name.c_str());
  return UniqueFd(raw);
}

Status UnpackGuestTar(int tar_fd, const std::string& dest_dir, const std::string& from_top,
                      const std::string& to_top, uint64_t max_bytes, mode_t umask_bits) {
  if (::lseek(tar_fd, 0, SEEK_SET) != 0) return Error::FromErrno("cannot read the copied data");
  ArchiveReadPtr in(archive_read_new());
  archive_read_support_format_tar(in.get());
  if (archive_read_open_fd(in.get(), tar_fd, 65536) != ARCHIVE_OK) {
    return Error(ErrorCode::kIo, std::string("cannot read the copied data: ") +
                                     ArchiveErrorString(in.get()));
  }
  // Entries are written relative to dest_dir (SECURE_NOABSOLUTEPATHS refuses
  // absolute names), so work from inside it and come back afterwards.
  UniqueFd cwd(::open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (::chdir(dest_dir.c_str()) != 0) return Error::FromErrno("cannot enter " + dest_dir);
  struct RestoreCwd {
    int fd;
    ~RestoreCwd() {
      if (fd >= 0 && ::fchdir(fd) != 0) {
      }
    }
  } restore{cwd.get()};
  ArchiveWritePtr disk(archive_write_disk_new());
  // ARCHIVE_EXTRACT_PERM so that the mode set below is the one used: the
  // process's own umask is msb's private one, not the user's.
  archive_write_disk_set_options(
      disk.get(), ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                      ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS |
                      ARCHIVE_EXTRACT_UNLINK);
  int written = 0;
  uint64_t total = 0;
  for (;;) {
    archive_entry* entry;
    int r = archive_read_next_header(in.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      return Error(ErrorCode::kProtocol, std::string("the sandbox sent a malformed tar stream: ") +
                                             ArchiveErrorString(in.get()));
    }
    mode_t type = archive_entry_filetype(entry);
    if ((type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) ||
        archive_entry_hardlink(entry) != nullptr) {
      continue;  // devices, fifos, sockets and hard links are not copied out
    }
    const char* name = archive_entry_pathname(entry);
    if (name == nullptr) continue;
    std::string path = name;
    if (!RenameTop(path, from_top, to_top)) continue;
    archive_entry_copy_pathname(entry, path.c_str());
    // No setuid/setgid/sticky, nothing the umask takes away.
    archive_entry_set_perm(entry, archive_entry_perm(entry) & 0777 & ~umask_bits);
    if (type == AE_IFREG) {
      const auto size = static_cast<uint64_t>(std::max<la_int64_t>(0, archive_entry_size(entry)));
      if (size > max_bytes || total + size > max_bytes) {
        return Error(ErrorCode::kInvalidArgument,
                     "the copy is larger than " + std::to_string(max_bytes) + " bytes (at " + path +
                         "); raise --max-size to copy it");
      }
      total += size;
    }
    r = archive_write_header(disk.get(), entry);
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      return Error(ErrorCode::kIo, std::string("cannot write ") + path + ": " +
                                       ArchiveErrorString(disk.get()));
    }
    const void* buf;
    size_t size;
    la_int64_t offset;
    while ((r = archive_read_data_block(in.get(), &buf, &size, &offset)) == ARCHIVE_OK) {
      if (archive_write_data_block(disk.get(), buf, size, offset) < 0) {
        return Error(ErrorCode::kIo, std::string("cannot write ") + path + ": " +
                                         ArchiveErrorString(disk.get()));
      }
    }
    if (r != ARCHIVE_EOF) {
      return Error(ErrorCode::kProtocol, std::string("the sandbox sent a malformed tar stream: ") +
                                             ArchiveErrorString(in.get()));
    }
    archive_write_finish_entry(disk.get());
    ++written;
  }
  archive_write_close(disk.get());
  if (written == 0) return Error(ErrorCode::kNotFound, "nothing was copied");
  return OkStatus();
}

}  // namespace msb::orchestrator
