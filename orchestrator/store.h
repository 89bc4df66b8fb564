// The state store: msb's record of projects, sandboxes, images, volumes and snapshots in
// SQLite ($MSB_HOME/state.db, WAL). It records what msb asked for and what it
// last observed; it is not the truth about a running VM, which is re-observed
// from the supervisor. Secret values are never stored: no table has a column
// for them, and callers pass specs that name a secret's source, never its value.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/c_ptr.h"
#include "common/result.h"

struct sqlite3;

namespace msb::orchestrator {

// Observed lifecycle of a sandbox. Stored as its ToString text.
enum class SandboxStatus : int {
  kCreated = 0,   // recorded, never started
  kStarting = 1,  // supervisor launched, VM not yet ready
  kRunning = 2,
  kStopped = 3,   // stopped on request
  kFailed = 4,    // could not start, or the supervisor/VM died unexpectedly
  kExited = 5,    // the workload ended by itself (exit_code is set)
};
const char* ToString(SandboxStatus status);
std::optional<SandboxStatus> ParseSandboxStatus(std::string_view text);
// stopped, failed or exited.
bool IsTerminal(SandboxStatus status);

// Timestamps are Unix seconds; 0 means "never".
struct ProjectRecord {
  std::string name;
  std::string directory;    // absolute directory holding the Sandboxfile
  std::string sandboxfile;  // absolute path of the Sandboxfile
  int64_t created_at = 0;   // set by the store on first insert when 0
};

struct SandboxRecord {
  // Desired: written by UpsertSandbox.
  std::string project;
  std::string name;
  std::string config_hash;   // hash of the sandbox's canonical config
  std::string image_ref;     // as written in the Sandboxfile (tag, ./dir, ...)
  std::string image_digest;  // the pinned digest the base disk was built from
  std::string spec_json;     // canonical spec; secrets by source, never by value
  std::string sandbox_dir;   // per-sandbox directory (disks, logs, sockets)
  std::string control_socket;
  std::string agent_socket;
  std::string qmp_socket;
  // Observed: written by UpdateSandboxStatus (UpsertSandbox sets them only on
  // first insert).
  SandboxStatus status = SandboxStatus::kCreated;
  std::string status_reason;  // human text: why failed/exited/stopped
  int64_t supervisor_pid = 0;  // 0 when none
  int64_t restarts = 0;
  std::optional<int> exit_code;
  int64_t created_at = 0;   // set by the store on first insert when 0
  int64_t started_at = 0;   // last time it became running
  int64_t finished_at = 0;  // last time it became stopped/failed/exited
};

// A status transition. Timestamps follow the status: kStarting clears
// finished_at and exit_code, kRunning sets started_at, a terminal status sets
// finished_at.
struct SandboxStatusUpdate {
  SandboxStatus status = SandboxStatus::kCreated;
  std::string reason;
  std::optional<int64_t> supervisor_pid;  // replaced when set (0 clears)
  std::optional<int> exit_code;           // replaced when set
  bool count_restart = false;             // restarts += 1
};

struct ImageRecord {
  std::string reference;  // key: registry reference or local path as written
  std::string digest;     // sha256:... (manifest digest, or content hash of a dir)
  int64_t size_bytes = 0;
  std::string base_disk;  // path of the read-only ext4 base disk
  int64_t created_at = 0;
  // Schema 2. Empty for a local directory (and rows written before).
  std::string config_digest;  // the image config blob
  std::string media_type;     // of the manifest at digest
};

struct VolumeRecord {
  std::string project;
  std::string name;
  int64_t size_bytes = 0;
  std::string path;  // the volume's ext4 disk
  int64_t created_at = 0;
};

// A disk snapshot (orchestrator/snapshot.h): a copy of one sandbox's writable
// layer over the base disk (and the layers) it booted from. Schema 3.
struct SnapshotRecord {
  std::string name;           // key
  std::string digest;         // sha256:... over the layer file and parent_digest
  std::string parent_digest;  // the source sandbox's image digest (an image or a snapshot)
  std::string source;         // "project/name" of the sandbox it was taken from
  std::string source_image;   // that sandbox's image reference
  std::string base_disk;      // the read-only base disk the layers sit on
  std::string lowers_json;    // JSON array of layer files, oldest first, this one's last
  std::string defaults_json;  // the image's defaults (entrypoint, cmd, env, ...)
  std::string dir;            // $MSB_HOME/snapshots/<name>
  int64_t size_bytes = 0;     // bytes the layer file takes on disk
  int64_t created_at = 0;     // set by the store when 0
};

// A project kept in step with a git repository by `msb sync`
// (orchestrator/sync.h). Keyed by the sync's key (from the repository URL
// and the path in it); `project` is the project it applies to. Commits are
// full hex object names; times Unix seconds, 0 for never. Schema 4.
struct SyncRecord {
  std::string key;
  std::string project;
  std::string repo;  // the URL without user information (credentials never stored)
  std::string ref;   // as given (--ref); empty: the remote's HEAD
  std::string path;  // the Sandboxfile's directory in the repository; empty: its root
  std::string applied_commit;  // the commit the project's sandboxes were last made to match
  int64_t applied_at = 0;
  std::string fetched_commit;  // what the ref pointed at when last fetched
  int64_t checked_at = 0;      // when the repository was last fetched
  std::string error;           // the last apply's error; empty when it succeeded
  std::string error_commit;    // the commit it was about (empty: the fetch failed)
  int64_t error_at = 0;
};

struct StoreOptions {
  // How long a writer waits for another process's transaction to finish.
  int busy_timeout_ms = 10000;
};

void CloseSqlite(sqlite3* db);
using SqliteDb = CPtr<sqlite3, CloseSqlite>;

// One connection to the state database. Move-only; not thread-safe (one Store
// per thread). Do not carry an open Store across fork(): open a new one in the
// child. Writes outside Transaction() are each their own transaction.
class Store {
 public:
  // The project that owns sandboxes created by `msb run`. Created by the
  // first migration.
  static constexpr const char* kRunProject = "_run";
  // The schema version this binary writes (PRAGMA user_version).
  static int SchemaVersion();

  // $MSB_HOME/state.db.
  static std::string DefaultPath();
  // Opens (creating the file and its parent directory) and migrates. Refuses
  // a database whose schema is newer than this binary's.
  static Result<Store> Open(const std::string& path, const StoreOptions& options = {});

  Store(Store&&) noexcept = default;
  Store& operator=(Store&&) noexcept = default;

  const std::string& path() const { return path_; }

  // Runs fn inside BEGIN IMMEDIATE ... COMMIT, rolling back when fn fails.
  // Nested calls use a savepoint: an inner failure undoes only the inner work.
  Status Transaction(const std::function<Status()>& fn);

  // Projects. A name belongs to one directory: UpsertProject records a new
  // project or updates the Sandboxfile of one recorded for the same
  // directory, and fails (kAlreadyExists, naming both directories) for a
  // name recorded for another. MoveProject is the one way to give a recorded
  // project another directory (kNotFound when there is none); msb up uses it
  // only when the recorded directory no longer exists. DeleteProject fails
  // while sandboxes or volumes belong to it.
  Status UpsertProject(const ProjectRecord& project);
  Status MoveProject(const ProjectRecord& project);
  Result<std::optional<ProjectRecord>> GetProject(const std::string& name);
  Result<std::vector<ProjectRecord>> ListProjects();
  Status DeleteProject(const std::string& name);

  // Sandboxes, keyed by (project, name); the project must exist. On conflict
  // UpsertSandbox replaces only the desired fields (see SandboxRecord).
  Status UpsertSandbox(const SandboxRecord& sandbox);
  Result<std::optional<SandboxRecord>> GetSandbox(const std::string& project,
                                                  const std::string& name);
  // Sorted by name.
  Result<std::vector<SandboxRecord>> ListSandboxes(const std::string& project);
  // Every project's, sorted by (project, name).
  Result<std::vector<SandboxRecord>> ListAllSandboxes();
  // kNotFound when there is no such sandbox.
  Status UpdateSandboxStatus(const std::string& project, const std::string& name,
                             const SandboxStatusUpdate& update);
  // kNotFound when there is no such sandbox.
  Status DeleteSandbox(const std::string& project, const std::string& name);

  // Images, keyed by reference; sorted by reference.
  Status UpsertImage(const ImageRecord& image);
  Result<std::optional<ImageRecord>> GetImage(const std::string& reference);
  Result<std::vector<ImageRecord>> ListImages();
  // The references pinned to digest, sorted.
  Result<std::vector<ImageRecord>> ListImagesByDigest(const std::string& digest);
  Status DeleteImage(const std::string& reference);

  // Volumes, keyed by (project, name); the project must exist.
  Status UpsertVolume(const VolumeRecord& volume);
  Result<std::optional<VolumeRecord>> GetVolume(const std::string& project,
                                                const std::string& name);
  Result<std::vector<VolumeRecord>> ListVolumes(const std::string& project);
  Result<std::vector<VolumeRecord>> ListAllVolumes();
  Status DeleteVolume(const std::string& project, const std::string& name);

  // Snapshots, keyed by name; sorted by name. InsertSnapshot fails with
  // kAlreadyExists for a name in use.
  Status InsertSnapshot(const SnapshotRecord& snapshot);
  Result<std::optional<SnapshotRecord>> GetSnapshot(const std::string& name);
  Result<std::vector<SnapshotRecord>> ListSnapshots();
  Status DeleteSnapshot(const std::string& name);

  // Syncs, keyed by key; sorted by key. GetSyncOfProject: the sync that
  // applies to the project (the one applied last when several name it).
  Status UpsertSync(const SyncRecord& sync);
  Result<std::optional<SyncRecord>> GetSync(const std::string& key);
  Result<std::optional<SyncRecord>> GetSyncOfProject(const std::string& project);
  Result<std::vector<SyncRecord>> ListSyncs();
  Status DeleteSync(const std::string& key);

  // PRAGMA integrity_check's answer, lines joined by '\n' ("ok" when sound).
  Result<std::string> IntegrityCheck();

 private:
  Store(std::string path, SqliteDb db) : path_(std::move(path)), db_(std::move(db)) {}
  Status Migrate();
  Status Exec(const char* sql);

  std::string path_;
  SqliteDb db_;
  int savepoint_depth_ = 0;
};

}  // namespace msb::orchestrator
