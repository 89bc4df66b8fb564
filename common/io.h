// Whole-file and whole-buffer I/O helpers, descriptor flags and msb's
// directories. Not streaming.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace msb {

Result<std::string> ReadFile(const std::string& path);
// Writes to a temporary file beside path, fsyncs and renames over it: readers
// see the old or the new contents, never a half-written file.
Status WriteFileAtomic(const std::string& path, std::string_view data, int mode = 0644);
// The same for `name` relative to the directory dir_fd (an O_PATH fd will do),
// the temporary file beside it in that directory.
Status WriteFileAtomicAt(int dir_fd, const std::string& name, std::string_view data,
                         int mode = 0644);
// write(2)/read(2) until done, retrying on EINTR.
Status WriteAll(int fd, std::string_view data);
Status ReadExact(int fd, char* buf, size_t n);
Status MakeDirs(const std::string& path, int mode = 0755);
// Adds O_NONBLOCK to fd's status flags (fcntl F_GETFL/F_SETFL); on failure
// "fcntl: <strerror>" with errno.
Status SetNonBlocking(int fd);
// The last n lines of text (a final newline does not start an empty line);
// all of it when it has fewer.
std::string LastLines(std::string_view text, int n);

// $MSB_HOME, else $XDG_DATA_HOME/msb, else ~/.local/share/msb. Not created here.
std::string MsbHome();
// The directory holding the running msb binary (for finding agentd beside it).
std::string SelfDir();

}  // namespace msb
