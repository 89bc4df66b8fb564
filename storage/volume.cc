// Named volumes' disks (volume.h).
#include "storage/volume.h"

#include <sys/stat.h>

#include <cerrno>

#include "storage/disk.h"

namespace msb::storage {

std::string VolumeDiskPath(const std::string& home, const std::string& project,
                           const std::string& name) {
  return home + "/volumes/" + project + "/" + name + ".ext4";
}

std::string VolumeLabel(const std::string& name) { return name.substr(0, 16); }

Result<bool> EnsureVolumeDisk(const std::string& path, uint64_t size_bytes, const std::string& name) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode))
      return Error(ErrorCode::kInvalidArgument, "volume disk " + path + " is not a regular file");
    return false;
  }
  if (errno != ENOENT) return Error::FromErrno("volume disk " + path);
  Status made = CreateSparseExt4(path, size_bytes, VolumeLabel(name));
  if (made.ok()) return true;
  // Another sandbox of the same up created it first.
  if (made.error().code() == ErrorCode::kAlreadyExists) return false;
  return made.error().Wrap("creating volume " + name);
}

}  // namespace msb::storage
