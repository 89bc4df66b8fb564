// libarchive-backed ExtractTar and WriteTar (tar.h).
#include "agentd/tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "common/archive_ptr.h"
#include "common/io.h"

namespace msb::agent {
namespace {

Error ArchiveError(archive* a, const std::string& what) {
  return Error(ErrorCode::kIo, what + ": " + ArchiveErrorString(a), archive_errno(a));
}

}  // namespace

Status ExtractTar(int in_fd, const std::string& dir) {
  if (auto made = MakeDirs(dir); !made.ok()) return made.error().Wrap("creating " + dir);
  if (::chdir(dir.c_str()) != 0) return Error::FromErrno("cannot change directory to " + dir);

  ArchiveReadPtr in(archive_read_new());
  archive_read_support_format_tar(in.get());
  if (archive_read_open_fd(in.get(), in_fd, 64 * 1024) != ARCHIVE_OK)
    return ArchiveError(in.get(), "reading the tar stream");

  int flags = ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
              ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;
  if (::geteuid() == 0) flags |= ARCHIVE_EXTRACT_OWNER;
  ArchiveWritePtr out(archive_write_disk_new());
  archive_write_disk_set_options(out.get(), flags);

  for (;;) {
    archive_entry* entry = nullptr;
    int r = archive_read_next_header(in.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return ArchiveError(in.get(), "reading the tar stream");
    std::string name = archive_entry_pathname(entry) ? archive_entry_pathname(entry) : "";
    r = archive_write_header(out.get(), entry);
    if (r < ARCHIVE_WARN) return ArchiveError(out.get(), "extracting " + name);
    if (archive_entry_size(entry) > 0) {
      const void* buf;
      size_t len;
      la_int64_t off;
      for (;;) {
        r = archive_read_data_block(in.get(), &buf, &len, &off);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) return ArchiveError(in.get(), "reading " + name + " from the tar stream");
        if (archive_write_data_block(out.get(), buf, len, off) < ARCHIVE_WARN)
          return ArchiveError(out.get(), "writing " + name);
      }
    }
    if (archive_write_finish_entry(out.get()) < ARCHIVE_WARN)
      return ArchiveError(out.get(), "finishing " + name);
  }
  if (archive_write_close(out.get()) < ARCHIVE_WARN)
    return ArchiveError(out.get(), "finishing the extraction");
  return OkStatus();
}

Status WriteTar(int out_fd, const std::string& path_in) {
  std::string path = path_in;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Error::FromErrno("cannot copy " + path);
  // Entry names: the base name of path, then the relative path below it.
  std::string base;
  if (path == "/") {
    base = ".";
  } else {
    size_t slash = path.rfind('/');
    base = slash == std::string::npos ? path : path.substr(slash + 1);
    if (base == "." || base == "..") base = ".";
  }

  ArchiveWritePtr out(archive_write_new());
  archive_write_set_format_pax_restricted(out.get());
  archive_write_add_filter_none(out.get());
  if (archive_write_open_fd(out.get(), out_fd) != ARCHIVE_OK)
    return ArchiveError(out.get(), "starting the tar stream");

  ArchiveReadPtr disk(archive_read_disk_new());
  archive_read_disk_set_symlink_hybrid(disk.get());
  archive_read_disk_set_behavior(disk.get(), ARCHIVE_READDISK_NO_XATTR | ARCHIVE_READDISK_NO_ACL |
                                                 ARCHIVE_READDISK_NO_FFLAGS);
  if (archive_read_disk_open(disk.get(), path.c_str()) != ARCHIVE_OK)
    return ArchiveError(disk.get(), "cannot copy " + path);

  std::vector<char> buf(64 * 1024);
  for (;;) {
    ArchiveEntryPtr entry(archive_entry_new());
    int r = archive_read_next_header2(disk.get(), entry.get());
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return ArchiveError(disk.get(), "reading " + path);
    std::string source = archive_entry_sourcepath(entry.get());
    archive_read_disk_descend(disk.get());
    std::string rel = source.size() > path.size() ? source.substr(path.size()) : "";
    if (path == "/") rel = "/" + source.substr(1);
    if (!rel.empty() && rel[0] != '/') rel = "/" + rel;
    std::string name = base + rel;
    if (archive_entry_filetype(entry.get()) == AE_IFDIR && name.back() != '/') name += '/';
    archive_entry_set_pathname(entry.get(), name.c_str());
    archive_entry_set_uname(entry.get(), nullptr);
    archive_entry_set_gname(entry.get(), nullptr);
    if (archive_write_header(out.get(), entry.get()) < ARCHIVE_WARN)
      return ArchiveError(out.get(), "writing the header of " + source);
    if (archive_entry_filetype(entry.get()) == AE_IFREG && archive_entry_size(entry.get()) > 0) {
      for (;;) {
        la_ssize_t n = archive_read_data(disk.get(), buf.data(), buf.size());
        if (n == 0) break;
        if (n < 0) return ArchiveError(disk.get(), "reading " + source);
        if (archive_write_data(out.get(), buf.data(), static_cast<size_t>(n)) < 0)
          return ArchiveError(out.get(), "writing " + source + " to the tar stream");
      }
    }
  }
  if (archive_write_close(out.get()) != ARCHIVE_OK)
    return ArchiveError(out.get(), "finishing the tar stream");
  return OkStatus();
}

}  // namespace msb::agent
