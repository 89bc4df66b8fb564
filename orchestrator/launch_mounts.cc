// Launch-time mounts (launch_mounts.h).
#include "orchestrator/launch_mounts.h"

#include <sys/stat.h>

#include <algorithm>

#include "common/io.h"
#include "storage/volume.h"

namespace msb::orchestrator {
namespace {

size_t Depth(const std::string& path) {
  return static_cast<size_t>(std::count(path.begin(), path.end(), '/'));
}

bool IsLive(SandboxStatus s) { return s == SandboxStatus::kRunning || s == SandboxStatus::kStarting; }

}  // namespace

Result<std::vector<VolumeUser>> VolumeUsers(Store& store, const std::string& disk_path) {
  MSB_TRY(auto all, store.ListAllSandboxes());
  std::vector<VolumeUser> users;
  for (auto& r : all) {
    auto spec = vm::ReadSpec(r.sandbox_dir);
    if (!spec.ok()) continue;  // not prepared (or gone): it attaches nothing
    for (const vm::VmDisk& d : spec->volumes) {
      if (d.path != disk_path) continue;
      r = Observe(store, r);
      users.push_back({r.project, r.name, r.status, d.read_only});
      break;
    }
  }
  return users;
}

Status PrepareMounts(Store& store, const LaunchRequest& req, vm::VmSpec* spec,
                     agent::BootConfig* boot) {
  const std::string home = MsbHome();
  std::vector<agent::MountConfig> mounts;
  for (const schema::Mount& m : req.mounts) {
    const std::string what = "sandbox " + req.name + ": mount " + m.source + ":" + m.target;
    agent::MountConfig mc;
    mc.target = m.target;
    mc.read_only = m.read_only;
    if (m.kind == schema::Mount::Kind::kBind) {
      struct stat st;
      if (::stat(m.source.c_str(), &st) != 0) return Error::FromErrno(what + ": host path " + m.source);
      if (!S_ISDIR(st.st_mode))
        return Error(ErrorCode::kInvalidArgument,
                     what + ": host path " + m.source +
                         " is not a directory; only directories can be shared with a sandbox");
      mc.type = agent::MountConfig::Type::kVirtiofs;
      mc.source = vm::ShareTag(spec->shares.size());
      spec->shares.push_back({m.source, mc.source, m.read_only});
    } else {
      auto size = req.volume_sizes.find(m.source);
      if (size == req.volume_sizes.end())
        return Error(ErrorCode::kInvalidArgument, what + ": volume " + m.source + " is not declared");
      std::string path = storage::VolumeDiskPath(home, req.project, m.source);
      MSB_TRY(auto users, VolumeUsers(store, path));
      for (const VolumeUser& u : users) {
        if ((u.project == req.project && u.name == req.name) || !IsLive(u.status)) continue;
        if (!u.read_only || !m.read_only)
          return Error(ErrorCode::kUnavailable,
                       what + ": volume " + m.source + " is attached to the running sandbox " +
                           u.name + (u.project != req.project ? " of project " + u.project : "") +
                           "; a volume can be shared between running sandboxes only read-only");
      }
      MSB_TRY(bool created, storage::EnsureVolumeDisk(path, size->second, m.source));
      (void)created;
      struct stat st;
      int64_t bytes = ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size)
                                                     : static_cast<int64_t>(size->second);
      MSB_TRY(auto existing, store.GetVolume(req.project, m.source));
      if (!existing || existing->path != path || existing->size_bytes != bytes) {
        VolumeRecord v;
        v.project = req.project;
        v.name = m.source;
        v.size_bytes = bytes;
        v.path = path;
        if (existing) v.created_at = existing->created_at;
        MSB_TRY_STATUS(store.UpsertVolume(v));
      }
      mc.type = agent::MountConfig::Type::kDisk;
      mc.source = vm::VolumeSerial(spec->volumes.size());
      spec->volumes.push_back({path, mc.source, m.read_only});
    }
    mounts.push_back(std::move(mc));
  }
  for (const schema::Tmpfs& t : req.tmpfs) {
    agent::MountConfig mc;
    mc.type = agent::MountConfig::Type::kTmpfs;
    mc.target = t.target;
    mc.size_bytes = t.size;
    mc.mode = t.mode;
    mounts.push_back(std::move(mc));
  }
  if (spec->volumes.size() + spec->shares.size() > static_cast<size_t>(schema::kMaxMounts)) {
    return Error(ErrorCode::kInvalidArgument,
                 "sandbox " + req.name + ": " +
                     std::to_string(spec->volumes.size() + spec->shares.size()) +
                     " volumes and bind mounts exceed the microVM limit of " +
                     std::to_string(schema::kMaxMounts));
  }
  // Parents before what nests in them; otherwise in declaration order.
  std::stable_sort(mounts.begin(), mounts.end(),
                   [](const auto& a, const auto& b) { return Depth(a.target) < Depth(b.target); });
  boot->mounts = std::move(mounts);
  return OkStatus();
}

}  // namespace msb::orchestrator
