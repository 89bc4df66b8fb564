// Whole-file and whole-buffer I/O helpers, descriptor flags and msb's
// directories. Not streaming.
#pragma once

#include <optional>
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
// The same without the fsync: readers see the old file or the new one, but
// after a crash the file may be either (ext4 flushes the data of a file
// renamed over another before the rename commits, so never a torn one). For
// files rewritten at every boot, where a flush per file costs more than it
// keeps.
Status ReplaceFileAt(int dir_fd, const std::string& name, std::string_view data, int mode = 0644);
Status ReplaceFile(const std::string& path, std::string_view data, int mode = 0644);
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
// The umask every msb process sets first thing: what it creates under
// $MSB_HOME (and what its children, QEMU and mkfs, create there) is the
// owner's alone unless a mode is set explicitly.
constexpr int kPrivateUmask = 077;
// Takes group and other permissions off the directory at path (mode 0700),
// which holds private files: returns the permission bits it had when it
// changed them, nullopt when there was nothing to change (already private,
// or missing: then whoever creates it does so under kPrivateUmask). An error,
// and no change, for a shared directory (sticky bit, like /tmp) or one this
// user may not chmod.
Result<std::optional<unsigned>> MakeDirPrivate(const std::string& path);
// The directory holding the running msb binary (for finding agentd beside it).
std::string SelfDir();

}  // namespace msb
