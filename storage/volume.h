// Named volumes' disks: where they live ($MSB_HOME/volumes/<project>/<name>.ext4)
// and how they come to exist (a sparse ext4, created on first use and never
// overwritten). Not their records (orchestrator/store.h) and not their use by
// a sandbox (orchestrator/launch_mounts.h).
#pragma once

#include <cstdint>
#include <string>

#include "common/result.h"

namespace msb::storage {

// <home>/volumes/<project>/<name>.ext4
std::string VolumeDiskPath(const std::string& home, const std::string& project,
                           const std::string& name);
// The ext4 label: the volume's name cut to 16 bytes.
std::string VolumeLabel(const std::string& name);

// Creates the volume's disk (sparse ext4 of size_bytes) unless it exists.
// Returns true when this call created it. Concurrent callers are safe: the
// disk appears atomically and only one of them creates it. An existing disk
// keeps its size.
Result<bool> EnsureVolumeDisk(const std::string& path, uint64_t size_bytes, const std::string& name);

}  // namespace msb::storage
