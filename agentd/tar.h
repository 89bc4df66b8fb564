// Copy in/out as tar streams, with libarchive limited to tar: the reader
// accepts ustar, gnu and pax (archive_read_support_format_tar), the writer
// produces restricted pax; no compression, no other formats (docs/design.md
// "agentd" says why agentd never calls the *_all functions). Blocking: agentd
// runs these in a forked child (SpawnFunction) and streams the pipe.
#pragma once

#include <string>

#include "common/result.h"

namespace msb::agent {

// Reads a tar stream from in_fd to its end and extracts it under dir
// (created if missing). Absolute paths, ".." and writes through symlinks are
// refused; owners are restored when running as root. Changes the calling
// process's working directory to dir: run it in a helper process.
Status ExtractTar(int in_fd, const std::string& dir);

// Writes a tar stream of path to out_fd: a file as one entry named by its
// base name, a directory as that name and everything below it. A symlink
// given as path is followed; symlinks below it are stored as symlinks.
Status WriteTar(int out_fd, const std::string& path);

}  // namespace msb::agent
