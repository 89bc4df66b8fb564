// Disk snapshots (snapshot.h). A snapshot is a directory
// $MSB_HOME/snapshots/<name>/ holding layer.ext4 (0444), a copy of a
// sandbox's upper disk, and a row in the state store naming the base disk and
// the older layers it sits on. The copy is made into a temporary directory
// and renamed into place once complete and hashed, then recorded.
#include "orchestrator/snapshot.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>

#include "agent/protocol.h"
#include "common/fd.h"
#include "common/io.h"
#include "common/sha256.h"
#include "orchestrator/control_client.h"
#include "orchestrator/launch.h"
#include "orchestrator/up.h"
#include "schema/values.h"
#include "storage/disk.h"
#include "vm/spec.h"

namespace msb::orchestrator {
namespace {

constexpr const char* kSnapshotRef = "snapshot:";

std::string TempSuffix() {
  std::random_device rd;
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 8; ++i) s += kHex[rd() % 16];
  return s;
}

std::string SandboxName(const SandboxRecord& r) { return r.project + "/" + r.name; }
// How a command line names it: `msb run`'s sandboxes by name alone.
std::string CliRef(const SandboxRecord& r) { return r.project == Store::kRunProject ? r.name : SandboxName(r); }

// Removes a directory this module made, whatever is in it.
void RemoveDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// Serialises what commits or removes a snapshot's directory and record
// (never the copy itself): held while it lives.
Result<UniqueFd> LockSnapshots(const std::string& root) {
  MSB_TRY_STATUS(MakeDirs(root, 0700));
  const std::string path = root + "/.lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return Error::FromErrno("cannot open " + path);
  if (::flock(fd.get(), LOCK_EX) != 0) return Error::FromErrno("cannot lock " + path);
  return fd;
}

// Copies the source's upper disk into dir/layer.ext4, the running sandbox
// frozen meanwhile; returns the copy's digest (storage::DiskDigest).
Result<std::string> CopyLayer(const SandboxRecord& source, const std::string& upper, const std::string& layer) {
  if (source.status != SandboxStatus::kRunning) {
    if (SupervisorAlive(source)) {
      return Error(ErrorCode::kState, "sandbox " + SandboxName(source) + " is " + ToString(source.status) +
                                          "; snapshot it once it runs or has stopped");
    }
    MSB_TRY(storage::DiskCopy copy, storage::CopyDiskFile(upper, layer));
    return copy.digest;
  }
  // The layer stays frozen for as long as its allocated bytes take to copy.
  struct stat st{};
  if (::stat(upper.c_str(), &st) != 0) return Error::FromErrno("stat " + upper);
  const uint64_t allocated = static_cast<uint64_t>(st.st_blocks) * 512;
  const int freeze_ms = SnapshotFreezeMs(allocated);
  const std::string ref = CliRef(source);
  const std::string stopped_way = "stop the sandbox (msb stop " + ref + "), snapshot it stopped, which has no time "
                                  "limit, and start it again (msb start " + ref + ")";
  MSB_TRY(ControlClient client, ControlClient::Connect(source.control_socket));
  if (auto frozen = client.Freeze(freeze_ms); !frozen.ok()) {
    return frozen.error().Wrap("freezing " + SandboxName(source) + "'s writable layer for " +
                               std::to_string(freeze_ms / 1000) + " s failed; " + stopped_way);
  }
  auto copy = storage::CopyDiskFile(upper, layer);
  // Thaw whatever happened to the copy.
  Status thawed = client.Thaw();
  if (!copy.ok()) return copy.error();
  if (!thawed.ok()) {
    return thawed.error().Wrap(
        "the copy of " + SandboxName(source) + "'s writable layer (" + schema::FormatSize(allocated) +
        " allocated) took longer than the " + std::to_string(freeze_ms / 1000) + " s it may stay frozen (" +
        std::to_string(kSnapshotFreezeFloorMs / 1000) + " s + " + std::to_string(kSnapshotFreezeMsPerGiB / 1000) +
        " s per GiB, at most " + std::to_string(agent::kMaxFreezeMs / 1000) +
        " s), so it is not consistent and was discarded; " + stopped_way);
  }
  return copy->digest;
}

// The defaults of the image a sandbox booted: its snapshot's, else its image's.
std::string DefaultsJsonOf(Store& store, const SandboxRecord& source) {
  if (source.image_ref.rfind(kSnapshotRef, 0) == 0) {
    auto parent = store.GetSnapshot(source.image_ref.substr(std::strlen(kSnapshotRef)));
    if (parent.ok() && parent->has_value() && (*parent)->digest == source.image_digest) {
      return (*parent)->defaults_json;
    }
  }
  return ToJson(DefaultsForDigest(source.image_digest)).dump();
}

}  // namespace

std::string SnapshotRoot() { return MsbHome() + "/snapshots"; }
std::string SnapshotLayerPath(const std::string& dir) { return dir + "/layer.ext4"; }

int SnapshotFreezeMs(uint64_t allocated_bytes) {
  constexpr uint64_t kGiB = uint64_t{1} << 30;
  const uint64_t room = static_cast<uint64_t>(agent::kMaxFreezeMs - kSnapshotFreezeFloorMs);
  // Past the cap in whole GiB first, so that the product below cannot overflow.
  if (allocated_bytes / kGiB >= room / kSnapshotFreezeMsPerGiB + 1) return static_cast<int>(agent::kMaxFreezeMs);
  const uint64_t extra = (allocated_bytes * kSnapshotFreezeMsPerGiB + kGiB - 1) / kGiB;
  return static_cast<int>(kSnapshotFreezeFloorMs + std::min(extra, room));
}

Status CheckSnapshotName(const std::string& name) {
  if (schema::IsValidName(name)) return OkStatus();
  return Error(ErrorCode::kInvalidArgument,
               "snapshot name \"" + name + "\" is not valid: use " + schema::kNameRule);
}

std::string SnapshotDigest(const std::string& parent_digest, const std::string& layer_digest) {
  Sha256 h;
  h.Update("msb snapshot v1\nparent " + parent_digest + "\nlayer " + layer_digest + "\n");
  return h.DigestFinal();
}

Result<std::vector<std::string>> SnapshotLayers(const SnapshotRecord& record) {
  auto j = nlohmann::json::parse(record.lowers_json, nullptr, false);
  std::vector<std::string> out;
  if (!j.is_array()) return Error(ErrorCode::kInvalidArgument, "snapshot " + record.name + ": malformed layer list in the state store");
  for (const auto& e : j) {
    if (!e.is_string()) return Error(ErrorCode::kInvalidArgument, "snapshot " + record.name + ": malformed layer list");
    out.push_back(e.get<std::string>());
  }
  if (out.empty() || out.size() > agent::kMaxLowerLayers) {
    return Error(ErrorCode::kInvalidArgument, "snapshot " + record.name + " has " + std::to_string(out.size()) +
                                                  " layers; 1 to " + std::to_string(agent::kMaxLowerLayers) +
                                                  " are allowed");
  }
  return out;
}

Result<SnapshotRecord> CreateSnapshot(Store& store, const SandboxRecord& source, const std::string& name) {
  MSB_TRY_STATUS(CheckSnapshotName(name));
  MSB_TRY(auto existing, store.GetSnapshot(name));
  if (existing) {
    return Error(ErrorCode::kAlreadyExists, "a snapshot named " + name + " exists (taken of " +
                                                existing->source + "); remove it first (msb snapshot rm " +
                                                name + ") or choose another name");
  }
  MSB_TRY(vm::VmSpec spec, vm::ReadSpec(source.sandbox_dir));
  if (spec.upper_disk.empty()) {
    return Error(ErrorCode::kInvalidArgument,
                 "sandbox " + SandboxName(source) +
                     " has no writable layer on disk (it is ephemeral, or its root is read-only), so there is "
                     "nothing to snapshot; a snapshot needs a sandbox without ephemeral: true or security.read_only_root: true");
  }
  if (spec.lower_disks.size() + 1 > agent::kMaxLowerLayers) {
    return Error(ErrorCode::kInvalidArgument,
                 "sandbox " + SandboxName(source) + " already boots on " + std::to_string(spec.lower_disks.size()) +
                     " snapshot layers; a snapshot of it would have " + std::to_string(spec.lower_disks.size() + 1) +
                     ", more than the " + std::to_string(agent::kMaxLowerLayers) + " a sandbox can boot on");
  }
  const std::string root = SnapshotRoot();
  MSB_TRY_STATUS(MakeDirs(root, 0700));
  const std::string dir = root + "/" + name;
  const std::string tmp = root + "/.tmp-" + name + "-" + TempSuffix();
  MSB_TRY_STATUS(MakeDirs(tmp, 0700));
  auto fail = [&](const Error& e) -> Result<SnapshotRecord> {
    RemoveDir(tmp);
    return e.Wrap("snapshot " + name + " of " + SandboxName(source));
  };
  const std::string tmp_layer = SnapshotLayerPath(tmp);
  auto layer_digest = CopyLayer(source, spec.upper_disk, tmp_layer);
  if (!layer_digest.ok()) return fail(layer_digest.error());
  if (::chmod(tmp_layer.c_str(), 0444) != 0) return fail(Error::FromErrno("chmod " + tmp_layer));
  struct stat st{};
  if (::stat(tmp_layer.c_str(), &st) != 0) return fail(Error::FromErrno("stat " + tmp_layer));

  SnapshotRecord rec;
  rec.name = name;
  rec.parent_digest = source.image_digest;
  rec.digest = SnapshotDigest(rec.parent_digest, *layer_digest);
  rec.source = SandboxName(source);
  rec.source_image = source.image_ref;
  rec.base_disk = spec.base_disk;
  std::vector<std::string> layers = spec.lower_disks;
  layers.push_back(SnapshotLayerPath(dir));
  rec.lowers_json = nlohmann::json(layers).dump();
  rec.defaults_json = DefaultsJsonOf(store, source);
  rec.dir = dir;
  rec.size_bytes = static_cast<int64_t>(st.st_blocks) * 512;
  auto lock = LockSnapshots(root);
  if (!lock.ok()) return fail(lock.error());
  // Taken meanwhile by another msb?
  auto raced = store.GetSnapshot(name);
  if (!raced.ok()) return fail(raced.error());
  if (*raced) return fail(Error(ErrorCode::kAlreadyExists, "a snapshot named " + name + " was just taken by another msb; choose another name"));
  // A directory of that name with no record is a leftover of an interrupted
  // create: nothing refers to it.
  if (::access(dir.c_str(), F_OK) == 0) RemoveDir(dir);
  if (::rename(tmp.c_str(), dir.c_str()) != 0) return fail(Error::FromErrno("renaming " + tmp + " to " + dir));
  if (auto ins = store.InsertSnapshot(rec); !ins.ok()) {
    RemoveDir(dir);
    return ins.error().Wrap("snapshot " + name);
  }
  MSB_TRY(auto stored, store.GetSnapshot(name));
  return stored ? *stored : rec;
}

Result<std::vector<std::string>> SnapshotUsers(Store& store, const SnapshotRecord& record) {
  std::vector<std::string> users;
  // By name, not digest: two snapshots of the same bytes share a digest.
  MSB_TRY(auto sandboxes, store.ListAllSandboxes());
  for (const auto& s : sandboxes) {
    if (s.image_ref == kSnapshotRef + record.name) {
      users.push_back("sandbox " + SandboxName(s) + " (" + ToString(s.status) + ")");
    }
  }
  // A snapshot sits on this one when its layers include this one's file.
  const std::string own = SnapshotLayerPath(record.dir);
  MSB_TRY(auto snapshots, store.ListSnapshots());
  for (const auto& s : snapshots) {
    if (s.name == record.name) continue;
    auto layers = SnapshotLayers(s);
    if (!layers.ok() || std::find(layers->begin(), layers->end(), own) != layers->end()) {
      users.push_back("snapshot " + s.name);
    }
  }
  std::sort(users.begin(), users.end());
  return users;
}

Status RemoveSnapshot(Store& store, const std::string& name) {
  // The locks of the projects that could start a sandbox on it, in name
  // order (as `msb up` and `msb volume rm` take them): those whose
  // Sandboxfile names snapshot:NAME or that have a sandbox on it, and `msb
  // run`'s. No `up` of those starts a sandbox on this snapshot between the
  // check for users below and the removal. Not every project's: `msb up
  // --watch` holds its lock for its whole life.
  const std::string ref = kSnapshotRef + name;
  std::set<std::string> projects{Store::kRunProject};
  MSB_TRY(auto recorded, store.ListProjects());
  for (const auto& p : recorded) {
    auto text = ReadFile(p.sandboxfile);
    if (text.ok() && text->find(ref) != std::string::npos) projects.insert(p.name);
  }
  MSB_TRY(auto all, store.ListAllSandboxes());
  for (const auto& s : all) {
    if (s.image_ref == ref) projects.insert(s.project);
  }
  std::vector<ProjectLock> project_locks;
  for (const auto& p : projects) {
    MSB_TRY(ProjectLock l, ProjectLock::Acquire(p));
    project_locks.push_back(std::move(l));
  }
  MSB_TRY(UniqueFd lock, LockSnapshots(SnapshotRoot()));
  MSB_TRY(auto rec, store.GetSnapshot(name));
  if (!rec) return Error(ErrorCode::kNotFound, "no snapshot named " + name + " (see msb snapshot ls)");
  MSB_TRY(auto users, SnapshotUsers(store, *rec));
  if (!users.empty()) {
    std::string list;
    for (const auto& u : users) list += (list.empty() ? "" : ", ") + u;
    return Error(ErrorCode::kState, "snapshot " + name + " is in use by " + list +
                                        "; remove those first (msb rm, msb down, msb snapshot rm)");
  }
  MSB_TRY_STATUS(store.DeleteSnapshot(name));
  // Only a directory under the snapshot root is ever removed.
  if (rec->dir.rfind(SnapshotRoot() + "/", 0) == 0) RemoveDir(rec->dir);
  return OkStatus();
}

Result<RunImage> ResolveRunImage(Store& store, const schema::Image& image, const ImageOptions& options) {
  RunImage out;
  if (image.kind == schema::Image::Kind::kSnapshot) {
    MSB_TRY(ProjectLock hold, ProjectLock::AcquireShared(Store::kRunProject));
    out.hold.emplace(std::move(hold));
  }
  MSB_TRY(out.image, EnsureImage(store, image, options));
  return out;
}

Result<ResolvedImage> ResolveSnapshotImage(Store& store, const std::string& name) {
  MSB_TRY(auto rec, store.GetSnapshot(name));
  if (!rec) {
    return Error(ErrorCode::kNotFound, "no snapshot named " + name +
                                           " (msb snapshot ls lists them; msb snapshot create SANDBOX " + name +
                                           " makes one)");
  }
  ResolvedImage r;
  r.reference = kSnapshotRef + name;
  r.digest = rec->digest;
  r.base_disk = rec->base_disk;
  MSB_TRY(r.lower_disks, SnapshotLayers(*rec));
  for (const std::string& path : r.lower_disks) {
    if (::access(path.c_str(), R_OK) != 0) {
      return Error::FromErrno("snapshot " + name + ": its layer " + path + " is missing");
    }
  }
  if (::access(r.base_disk.c_str(), R_OK) != 0) {
    return Error::FromErrno("snapshot " + name + ": its base disk " + r.base_disk +
                            " is missing (was the image removed by hand?)");
  }
  r.defaults = ImageDefaultsFromJson(nlohmann::json::parse(rec->defaults_json, nullptr, false));
  return r;
}

}  // namespace msb::orchestrator
