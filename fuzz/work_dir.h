// A private scratch directory for the fuzz targets that write files
// (cp_tar_fuzz, image_archive_fuzz): made under $TMPDIR, else /dev/shm (fsync
// costs nothing on tmpfs, and the image store fsyncs every blob), else /tmp,
// and removed when the process exits normally. Not for the tests: they have
// their own temporary directories.
#pragma once

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>

namespace msb::fuzz {

inline int RemoveTreeEntry(const char* path, const struct stat*, int, struct FTW*) {
  ::remove(path);
  return 0;
}

// rm -rf path, without following symlinks.
inline void RemoveTree(const std::string& path) {
  ::nftw(path.c_str(), RemoveTreeEntry, 16, FTW_DEPTH | FTW_PHYS);
}

inline std::string& WorkDirForCleanup() {
  static std::string dir;
  return dir;
}

// $base/msb-fuzz-<name>.XXXXXX; aborts when it cannot be made.
inline std::string MakeWorkDir(const char* name) {
  std::string base;
  if (const char* t = ::getenv("TMPDIR"); t != nullptr && *t != '\0') {
    base = t;
  } else if (::access("/dev/shm", W_OK) == 0) {
    base = "/dev/shm";
  } else {
    base = "/tmp";
  }
  std::string tmpl = base + "/msb-fuzz-" + name + ".XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    ::perror("mkdtemp");
    ::abort();
  }
  WorkDirForCleanup() = tmpl;
  ::atexit([] { RemoveTree(WorkDirForCleanup()); });
  return tmpl;
}

}  // namespace msb::fuzz
