// SQLite implementation of the state store: connection setup (WAL, busy
// timeout, foreign keys), versioned migrations, and the typed CRUD functions.
// Every value reaches SQLite through a bound parameter of a prepared statement;
// only constant SQL text is ever assembled here.
#include "orchestrator/store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <array>
#include <ctime>
#include <type_traits>

#include "common/fd.h"
#include "common/io.h"

namespace msb::orchestrator {

namespace {

constexpr std::array<const char*, 6> kStatusNames = {"created", "starting", "running",
                                                      "stopped", "failed",   "exited"};
static_assert(kStatusNames.size() == static_cast<size_t>(SandboxStatus::kExited) + 1,
              "kStatusNames must name every SandboxStatus");

// Migration i takes the schema from version i to i + 1. Append only: a shipped
// migration is never edited. Each runs in its own transaction together with
// the user_version bump.
constexpr const char* kMigrations[] = {
    // 1: the initial schema.
    R"sql(
CREATE TABLE projects (
  name        TEXT PRIMARY KEY NOT NULL,
  directory   TEXT NOT NULL,
  sandboxfile TEXT NOT NULL,
  created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE sandboxes (
  id             INTEGER PRIMARY KEY,
  project        TEXT NOT NULL REFERENCES projects(name),
  name           TEXT NOT NULL,
  config_hash    TEXT NOT NULL,
  image_ref      TEXT NOT NULL,
  image_digest   TEXT NOT NULL,
  spec_json      TEXT NOT NULL,
  sandbox_dir    TEXT NOT NULL,
  control_socket TEXT NOT NULL,
  agent_socket   TEXT NOT NULL,
  qmp_socket     TEXT NOT NULL,
  status         TEXT NOT NULL,
  status_reason  TEXT NOT NULL,
  supervisor_pid INTEGER NOT NULL,
  restarts       INTEGER NOT NULL,
  exit_code      INTEGER,
  created_at     INTEGER NOT NULL,
  started_at     INTEGER NOT NULL,
  finished_at    INTEGER NOT NULL,
  UNIQUE (project, name)
) STRICT;

CREATE TABLE images (
  reference  TEXT PRIMARY KEY NOT NULL,
  digest     TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  base_disk  TEXT NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX images_by_digest ON images (digest);

CREATE TABLE volumes (
  id         INTEGER PRIMARY KEY,
  project    TEXT NOT NULL REFERENCES projects(name),
  name       TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  path       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  UNIQUE (project, name)
) STRICT;

INSERT INTO projects (name, directory, sandboxfile, created_at) VALUES ('_run', '', '', 0);
)sql",
    // 2: what an image's manifest says, for `msb images` without reading blobs.
    R"sql(
ALTER TABLE images ADD COLUMN config_digest TEXT NOT NULL DEFAULT '';
ALTER TABLE images ADD COLUMN media_type TEXT NOT NULL DEFAULT '';
)sql",
    // 3: disk snapshots (orchestrator/snapshot.h).
    R"sql(
CREATE TABLE snapshots (
  name           TEXT PRIMARY KEY NOT NULL,
  digest         TEXT NOT NULL,
  parent_digest  TEXT NOT NULL,
  source         TEXT NOT NULL,
  source_image   TEXT NOT NULL,
  base_disk      TEXT NOT NULL,
  lowers_json    TEXT NOT NULL,
  defaults_json  TEXT NOT NULL,
  dir            TEXT NOT NULL,
  size_bytes     INTEGER NOT NULL,
  created_at     INTEGER NOT NULL
) STRICT;
)sql",
    // 4: projects kept in step with a git repository (orchestrator/sync.h).
    R"sql(
CREATE TABLE syncs (
  key            TEXT PRIMARY KEY NOT NULL,
  project        TEXT NOT NULL,
  repo           TEXT NOT NULL,
  ref            TEXT NOT NULL,
  path           TEXT NOT NULL,
  applied_commit TEXT NOT NULL,
  applied_at     INTEGER NOT NULL,
  fetched_commit TEXT NOT NULL,
  checked_at     INTEGER NOT NULL,
  error          TEXT NOT NULL,
  error_commit   TEXT NOT NULL,
  error_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX syncs_by_project ON syncs (project);
)sql",
};
constexpr int kSchemaVersion = static_cast<int>(std::size(kMigrations));

int64_t NowSeconds() { return static_cast<int64_t>(std::time(nullptr)); }

std::string DbName(sqlite3* db) {
  const char* f = sqlite3_db_filename(db, "main");
  return f != nullptr && *f != '\0' ? f : "(memory)";
}

// Maps a SQLite failure to an Error naming the database and the operation.
Error SqlError(sqlite3* db, int rc, const std::string& what) {
  std::string msg = "state database " + DbName(db) + ": " + what + ": " +
                    (db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Error(ErrorCode::kTimeout,
                   msg + " (another msb process holds the write lock; try again)");
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) return Error(ErrorCode::kState, msg);
      if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return Error(ErrorCode::kAlreadyExists, msg);
      }
      return Error(ErrorCode::kInvalidArgument, msg);
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
      return Error(ErrorCode::kIo, msg + " (not a valid msb state database; move it aside)");
    default:
      return Error(ErrorCode::kIo, msg);
  }
}

void FinalizeStmt(sqlite3_stmt* s) { sqlite3_finalize(s); }

// One prepared statement. Move-only; finalized on destruction. Parameters are
// 1-based, columns 0-based, as in SQLite.
class Stmt {
 public:
  static Result<Stmt> Prepare(sqlite3* db, const char* sql) {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v2(db, sql, -1, &raw, nullptr);
    CPtr<sqlite3_stmt, FinalizeStmt> owned(raw);
    if (rc != SQLITE_OK) return SqlError(db, rc, "preparing a statement");
    return Stmt(db, std::move(owned));
  }

  Stmt& Text(int i, std::string_view v) {
    const char* p = v.data() != nullptr ? v.data() : "";
    Check(sqlite3_bind_text(stmt_.get(), i, p, static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Stmt& Int(int i, int64_t v) {
    Check(sqlite3_bind_int64(stmt_.get(), i, v));
    return *this;
  }
  Stmt& Null(int i) {
    Check(sqlite3_bind_null(stmt_.get(), i));
    return *this;
  }
  template <typename T>
  Stmt& OptInt(int i, const std::optional<T>& v) {
    return v ? Int(i, static_cast<int64_t>(*v)) : Null(i);
  }

  // true when a row is ready, false when done.
  Result<bool> Step(const std::string& what) {
    int rc = sqlite3_step(stmt_.get());
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqlError(db_, rc, what);
  }
  // Runs a statement that returns no rows.
  Status Run(const std::string& what) {
    MSB_TRY(bool row, Step(what));
    (void)row;
    return OkStatus();
  }

  std::string ColText(int c) const {
    const unsigned char* t = sqlite3_column_text(stmt_.get(), c);
    int n = sqlite3_column_bytes(stmt_.get(), c);
    return t != nullptr ? std::string(reinterpret_cast<const char*>(t), static_cast<size_t>(n))
                        : std::string();
  }
  int64_t ColInt(int c) const { return sqlite3_column_int64(stmt_.get(), c); }
  bool ColNull(int c) const { return sqlite3_column_type(stmt_.get(), c) == SQLITE_NULL; }

 private:
  Stmt(sqlite3* db, CPtr<sqlite3_stmt, FinalizeStmt> s) : db_(db), stmt_(std::move(s)) {}
  // Binding fails only for a wrong index or type: a bug in this file.
  void Check(int rc) { MSB_CHECK(rc == SQLITE_OK, std::string("bind: ") + sqlite3_errstr(rc)); }

  sqlite3* db_;
  CPtr<sqlite3_stmt, FinalizeStmt> stmt_;
};

Result<int> ReadUserVersion(sqlite3* db) {
  MSB_TRY(Stmt s, Stmt::Prepare(db, "PRAGMA user_version"));
  MSB_TRY(bool row, s.Step("reading the schema version"));
  if (!row) return Error(ErrorCode::kInternal, "PRAGMA user_version returned no row");
  return static_cast<int>(s.ColInt(0));
}

// Column lists shared by the SELECTs and their row readers below.
#define MSB_PROJECT_COLUMNS "name, directory, sandboxfile, created_at"
#define MSB_SANDBOX_COLUMNS                                                          \
  "project, name, config_hash, image_ref, image_digest, spec_json, sandbox_dir, "   \
  "control_socket, agent_socket, qmp_socket, status, status_reason, supervisor_pid, " \
  "restarts, exit_code, created_at, started_at, finished_at"
#define MSB_IMAGE_COLUMNS \
  "reference, digest, size_bytes, base_disk, created_at, config_digest, media_type"
#define MSB_VOLUME_COLUMNS "project, name, size_bytes, path, created_at"
#define MSB_SNAPSHOT_COLUMNS                                                          \
  "name, digest, parent_digest, source, source_image, base_disk, lowers_json, "     \
  "defaults_json, dir, size_bytes, created_at"

#define MSB_SYNC_COLUMNS                                                              \
  "key, project, repo, ref, path, applied_commit, applied_at, fetched_commit, "      \
  "checked_at, error, error_commit, error_at"

ProjectRecord ReadProject(const Stmt& s) {
  ProjectRecord p;
  p.name = s.ColText(0);
  p.directory = s.ColText(1);
  p.sandboxfile = s.ColText(2);
  p.created_at = s.ColInt(3);
  return p;
}

Result<SandboxRecord> ReadSandbox(const Stmt& s) {
  SandboxRecord r;
  r.project = s.ColText(0);
  r.name = s.ColText(1);
  r.config_hash = s.ColText(2);
  r.image_ref = s.ColText(3);
  r.image_digest = s.ColText(4);
  r.spec_json = s.ColText(5);
  r.sandbox_dir = s.ColText(6);
  r.control_socket = s.ColText(7);
  r.agent_socket = s.ColText(8);
  r.qmp_socket = s.ColText(9);
  std::string status = s.ColText(10);
  auto parsed = ParseSandboxStatus(status);
  if (!parsed) {
    return Error(ErrorCode::kInternal, "sandbox " + r.project + "/" + r.name +
                                           " has unknown status '" + status +
                                           "' in the state database (written by a newer msb?)");
  }
  r.status = *parsed;
  r.status_reason = s.ColText(11);
  r.supervisor_pid = s.ColInt(12);
  r.restarts = s.ColInt(13);
  if (!s.ColNull(14)) r.exit_code = static_cast<int>(s.ColInt(14));
  r.created_at = s.ColInt(15);
  r.started_at = s.ColInt(16);
  r.finished_at = s.ColInt(17);
  return r;
}

ImageRecord ReadImage(const Stmt& s) {
  ImageRecord i;
  i.reference = s.ColText(0);
  i.digest = s.ColText(1);
  i.size_bytes = s.ColInt(2);
  i.base_disk = s.ColText(3);
  i.created_at = s.ColInt(4);
  i.config_digest = s.ColText(5);
  i.media_type = s.ColText(6);
  return i;
}

VolumeRecord ReadVolume(const Stmt& s) {
  VolumeRecord v;
  v.project = s.ColText(0);
  v.name = s.ColText(1);
  v.size_bytes = s.ColInt(2);
  v.path = s.ColText(3);
  v.created_at = s.ColInt(4);
  return v;
}

SyncRecord ReadSync(const Stmt& s) {
  SyncRecord r;
  r.key = s.ColText(0);
  r.project = s.ColText(1);
  r.repo = s.ColText(2);
  r.ref = s.ColText(3);
  r.path = s.ColText(4);
  r.applied_commit = s.ColText(5);
  r.applied_at = s.ColInt(6);
  r.fetched_commit = s.ColText(7);
  r.checked_at = s.ColInt(8);
  r.error = s.ColText(9);
  r.error_commit = s.ColText(10);
  r.error_at = s.ColInt(11);
  return r;
}

SnapshotRecord ReadSnapshot(const Stmt& s) {
  SnapshotRecord r;
  r.name = s.ColText(0);
  r.digest = s.ColText(1);
  r.parent_digest = s.ColText(2);
  r.source = s.ColText(3);
  r.source_image = s.ColText(4);
  r.base_disk = s.ColText(5);
  r.lowers_json = s.ColText(6);
  r.defaults_json = s.ColText(7);
  r.dir = s.ColText(8);
  r.size_bytes = s.ColInt(9);
  r.created_at = s.ColInt(10);
  return r;
}

// Collects every row of s through read (which returns T or Result<T>).
template <typename T, typename Reader>
Result<std::vector<T>> CollectRows(Stmt& s, const std::string& what, Reader read) {
  std::vector<T> out;
  for (;;) {
    MSB_TRY(bool row, s.Step(what));
    if (!row) break;
    if constexpr (std::is_same_v<decltype(read(s)), T>) {
      out.push_back(read(s));
    } else {
      MSB_TRY(T item, read(s));
      out.push_back(std::move(item));
    }
  }
  return out;
}

// A foreign-key failure on insert means the owning project is missing.
// The database holds sandboxes' environment values: it is created 0600
// before SQLite opens it, and SQLite gives its WAL, shared-memory and journal
// files the database's mode. Files an older msb left readable are tightened.
// An existing database is never opened here: closing any descriptor of it
// would drop the POSIX locks another connection of this process holds on it.
Status MakeDatabasePrivate(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return Error::FromErrno("cannot open state database " + path);
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd && errno != EEXIST) return Error::FromErrno("cannot create state database " + path);
  } else if ((st.st_mode & 077) != 0 && ::chmod(path.c_str(), 0600) != 0) {
    return Error::FromErrno("cannot make state database " + path + " private");
  }
  for (const char* suffix : {"-wal", "-shm", "-journal"}) {
    std::string side = path + suffix;
    if (::stat(side.c_str(), &st) == 0 && (st.st_mode & 077) != 0) ::chmod(side.c_str(), 0600);
  }
  return OkStatus();
}

Error MissingProject(const Error& e, const std::string& project) {
  if (e.code() != ErrorCode::kState) return e;
  return Error(ErrorCode::kNotFound,
               "project '" + project + "' is not in the state store; record the project first");
}

}  // namespace

const char* ToString(SandboxStatus status) {
  auto i = static_cast<size_t>(status);
  return i < kStatusNames.size() ? kStatusNames[i] : "unknown";
}

std::optional<SandboxStatus> ParseSandboxStatus(std::string_view text) {
  for (size_t i = 0; i < kStatusNames.size(); ++i) {
    if (text == kStatusNames[i]) return static_cast<SandboxStatus>(i);
  }
  return std::nullopt;
}

bool IsTerminal(SandboxStatus status) {
  return status == SandboxStatus::kStopped || status == SandboxStatus::kFailed ||
         status == SandboxStatus::kExited;
}

void CloseSqlite(sqlite3* db) { sqlite3_close_v2(db); }

int Store::SchemaVersion() { return kSchemaVersion; }

std::string Store::DefaultPath() { return MsbHome() + "/state.db"; }

Result<Store> Store::Open(const std::string& path, const StoreOptions& options) {
  if (path.empty()) return Error(ErrorCode::kInvalidArgument, "empty state database path");
  if (auto slash = path.rfind('/'); slash != std::string::npos && slash > 0) {
    MSB_TRY_STATUS(MakeDirs(path.substr(0, slash), 0700));
  }
  MSB_TRY_STATUS(MakeDatabasePrivate(path));
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  SqliteDb db(raw);
  if (rc != SQLITE_OK) {
    std::string msg = raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    return Error(ErrorCode::kIo, "cannot open state database " + path + ": " + msg);
  }
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), options.busy_timeout_ms);
  Store store(path, std::move(db));

  {
    MSB_TRY(Stmt s, Stmt::Prepare(store.db_.get(), "PRAGMA journal_mode=WAL"));
    MSB_TRY(bool row, s.Step("switching to WAL mode"));
    if (!row || s.ColText(0) != "wal") {
      return Error(ErrorCode::kIo, "state database " + path + ": cannot switch to WAL mode");
    }
  }
  MSB_TRY_STATUS(store.Exec("PRAGMA foreign_keys=ON"));
  MSB_TRY_STATUS(store.Migrate());
  return store;
}

Status Store::Exec(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_.get(), sql, nullptr, nullptr, &err);
  sqlite3_free(err);
  if (rc != SQLITE_OK) {
    // Only the first words: the text may be a whole migration.
    std::string head(sql, std::min<size_t>(std::char_traits<char>::length(sql), 40));
    return SqlError(db_.get(), rc, "running '" + head + "'");
  }
  return OkStatus();
}

Status Store::Migrate() {
  auto too_new = [&](int found) {
    return Error(ErrorCode::kState,
                 "state database " + path_ + " has schema version " + std::to_string(found) +
                     ", newer than this msb understands (" + std::to_string(kSchemaVersion) +
                     "); it was written by a newer msb. Use that msb, or set MSB_HOME to "
                     "another directory");
  };
  MSB_TRY(int version, ReadUserVersion(db_.get()));
  if (version > kSchemaVersion) return too_new(version);
  while (version < kSchemaVersion) {
    // Re-read under the write lock: another process may have migrated first.
    Status st = Transaction([&]() -> Status {
      MSB_TRY(int current, ReadUserVersion(db_.get()));
      if (current > kSchemaVersion) return too_new(current);
      version = current;
      if (current >= kSchemaVersion) return OkStatus();
      if (auto s = Exec(kMigrations[current]); !s.ok()) {
        return s.error().Wrap("migrating to schema version " + std::to_string(current + 1));
      }
      // PRAGMA takes no parameters; the value is this file's own constant.
      std::string bump = "PRAGMA user_version = " + std::to_string(current + 1);
      MSB_TRY_STATUS(Exec(bump.c_str()));
      version = current + 1;
      return OkStatus();
    });
    MSB_TRY_STATUS(st);
  }
  return OkStatus();
}

Status Store::Transaction(const std::function<Status()>& fn) {
  sqlite3* db = db_.get();
  const bool outer = sqlite3_get_autocommit(db) != 0;
  std::string savepoint = "msb_sp" + std::to_string(savepoint_depth_);
  if (outer) {
    MSB_TRY_STATUS(Exec("BEGIN IMMEDIATE"));
  } else {
    MSB_TRY_STATUS(Exec(("SAVEPOINT " + savepoint).c_str()));
  }
  ++savepoint_depth_;
  Status result = fn();
  --savepoint_depth_;
  if (result.ok()) {
    Status done = outer ? Exec("COMMIT") : Exec(("RELEASE " + savepoint).c_str());
    if (done.ok()) return result;
    result = done;
  }
  // Undo; a failure here leaves nothing better to report than the cause.
  if (outer) {
    if (sqlite3_get_autocommit(db) == 0) (void)Exec("ROLLBACK");
  } else {
    (void)Exec(("ROLLBACK TO " + savepoint).c_str());
    (void)Exec(("RELEASE " + savepoint).c_str());
  }
  return result;
}

// ---- projects

Status Store::UpsertProject(const ProjectRecord& p) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(),
                                "INSERT INTO projects (" MSB_PROJECT_COLUMNS
                                ") VALUES (?1, ?2, ?3, ?4) "
                                "ON CONFLICT (name) DO UPDATE SET "
                                "sandboxfile = excluded.sandboxfile "
                                "WHERE directory = excluded.directory"));
  s.Text(1, p.name).Text(2, p.directory).Text(3, p.sandboxfile);
  s.Int(4, p.created_at != 0 ? p.created_at : NowSeconds());
  MSB_TRY_STATUS(s.Run("recording project " + p.name));
  if (sqlite3_changes(db_.get()) != 0) return OkStatus();
  // The name is recorded for another directory: never moved silently.
  MSB_TRY(auto other, GetProject(p.name));
  std::string where = other ? other->directory : std::string("another directory");
  return Error(ErrorCode::kAlreadyExists, "project '" + p.name + "' is recorded for " + where +
                                              ", not " + p.directory);
}

Status Store::MoveProject(const ProjectRecord& p) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(),
                                "UPDATE projects SET directory = ?2, sandboxfile = ?3 WHERE name = ?1"));
  s.Text(1, p.name).Text(2, p.directory).Text(3, p.sandboxfile);
  MSB_TRY_STATUS(s.Run("moving project " + p.name));
  if (sqlite3_changes(db_.get()) == 0) {
    return Error(ErrorCode::kNotFound, "no project '" + p.name + "' in the state store");
  }
  return OkStatus();
}

Result<std::optional<ProjectRecord>> Store::GetProject(const std::string& name) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "SELECT " MSB_PROJECT_COLUMNS
                                           " FROM projects WHERE name = ?1"));
  s.Text(1, name);
  MSB_TRY(bool row, s.Step("reading project " + name));
  if (!row) return std::optional<ProjectRecord>();
  return std::optional<ProjectRecord>(ReadProject(s));
}

Result<std::vector<ProjectRecord>> Store::ListProjects() {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "SELECT " MSB_PROJECT_COLUMNS
                                           " FROM projects ORDER BY name"));
  return CollectRows<ProjectRecord>(s, "listing projects", ReadProject);
}

Status Store::DeleteProject(const std::string& name) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "DELETE FROM projects WHERE name = ?1"));
  s.Text(1, name);
  Status st = s.Run("deleting project " + name);
  if (!st.ok() && st.error().code() == ErrorCode::kState) {
    return Error(ErrorCode::kState, "project '" + name +
                                        "' still has sandboxes or volumes; remove them first");
  }
  MSB_TRY_STATUS(st);
  if (sqlite3_changes(db_.get()) == 0) {
    return Error(ErrorCode::kNotFound, "no project '" + name + "' in the state store");
  }
  return OkStatus();
}

// ---- sandboxes

Status Store::UpsertSandbox(const SandboxRecord& r) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(),
                                "INSERT INTO sandboxes (" MSB_SANDBOX_COLUMNS
                                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
                                "?13, ?14, ?15, ?16, ?17, ?18) "
                                "ON CONFLICT (project, name) DO UPDATE SET "
                                "config_hash = excluded.config_hash, "
                                "image_ref = excluded.image_ref, "
                                "image_digest = excluded.image_digest, "
                                "spec_json = excluded.spec_json, "
                                "sandbox_dir = excluded.sandbox_dir, "
                                "control_socket = excluded.control_socket, "
                                "agent_socket = excluded.agent_socket, "
                                "qmp_socket = excluded.qmp_socket"));
  s.Text(1, r.project).Text(2, r.name).Text(3, r.config_hash).Text(4, r.image_ref);
  s.Text(5, r.image_digest).Text(6, r.spec_json).Text(7, r.sandbox_dir);
  s.Text(8, r.control_socket).Text(9, r.agent_socket).Text(10, r.qmp_socket);
  s.Text(11, ToString(r.status)).Text(12, r.status_reason).Int(13, r.supervisor_pid);
  s.Int(14, r.restarts).OptInt(15, r.exit_code);
  s.Int(16, r.created_at != 0 ? r.created_at : NowSeconds());
  s.Int(17, r.started_at).Int(18, r.finished_at);
  Status st = s.Run("recording sandbox " + r.project + "/" + r.name);
  if (!st.ok()) return MissingProject(st.error(), r.project);
  return OkStatus();
}

Result<std::optional<SandboxRecord>> Store::GetSandbox(const std::string& project,
                                                       const std::string& name) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "SELECT " MSB_SANDBOX_COLUMNS
                                           " FROM sandboxes WHERE project = ?1 AND name = ?2"));
  s.Text(1, project).Text(2, name);
  MSB_TRY(bool row, s.Step("reading sandbox " + project + "/" + name));
  if (!row) return std::optional<SandboxRecord>();
  MSB_TRY(SandboxRecord r, ReadSandbox(s));
  return std::optional<SandboxRecord>(std::move(r));
}

Result<std::vector<SandboxRecord>> Store::ListSandboxes(const std::string& project) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "SELECT " MSB_SANDBOX_COLUMNS
                                           " FROM sandboxes WHERE project = ?1 ORDER BY name"));
  s.Text(1, project);
  return CollectRows<SandboxRecord>(s, "listing sandboxes of " + project, ReadSandbox);
}

Result<std::vector<SandboxRecord>> Store::ListAllSandboxes() {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "SELECT " MSB_SANDBOX_COLUMNS
                                           " FROM sandboxes ORDER BY project, name"));
  return CollectRows<SandboxRecord>(s, "listing sandboxes", ReadSandbox);
}

Status Store::UpdateSandboxStatus(const std::string& project, const std::string& name,
                                  const SandboxStatusUpdate& u) {
  // exit_code: 0 keeps it, 1 sets ?7, 2 clears it.
  int exit_mode = 0;
  if (u.exit_code) {
    exit_mode = 1;
  } else if (u.status == SandboxStatus::kStarting) {
    exit_mode = 2;
  }
  const int64_t now = NowSeconds();
  std::optional<int64_t> started, finished;
  if (u.status == SandboxStatus::kStarting) finished = 0;
  if (u.status == SandboxStatus::kRunning) started = now;
  if (IsTerminal(u.status)) finished = now;

  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(),
                                "UPDATE sandboxes SET status = ?3, status_reason = ?4, "
                                "supervisor_pid = COALESCE(?5, supervisor_pid), "
                                "exit_code = CASE ?6 WHEN 0 THEN exit_code WHEN 1 THEN ?7 "
                                "ELSE NULL END, "
                                "restarts = restarts + ?8, "
                                "started_at = COALESCE(?9, started_at), "
                                "finished_at = COALESCE(?10, finished_at) "
                                "WHERE project = ?1 AND name = ?2"));
  s.Text(1, project).Text(2, name).Text(3, ToString(u.status)).Text(4, u.reason);
  s.OptInt(5, u.supervisor_pid).Int(6, exit_mode).OptInt(7, u.exit_code);
  s.Int(8, u.count_restart ? 1 : 0).OptInt(9, started).OptInt(10, finished);
  MSB_TRY_STATUS(s.Run("updating the status of sandbox " + project + "/" + name));
  if (sqlite3_changes(db_.get()) == 0) {
    return Error(ErrorCode::kNotFound,
                 "no sandbox '" + name + "' in project '" + project + "' in the state store");
  }
  return OkStatus();
}

Status Store::DeleteSandbox(const std::string& project, const std::string& name) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(),
                                "DELETE FROM sandboxes WHERE project = ?1 AND name = ?2"));
  s.Text(1, project).Text(2, name);
  MSB_TRY_STATUS(s.Run("deleting sandbox " + project + "/" + name));
  if (sqlite3_changes(db_.get()) == 0) {
    return Error(ErrorCode::kNotFound,
                 "no sandbox '" + name + "' in project '" + project + "' in the state store");
  }
  return OkStatus();
}

// ---- images

Status Store::UpsertImage(const ImageRecord& i) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(),
                                "INSERT INTO images (" MSB_IMAGE_COLUMNS
                                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
                                "ON CONFLICT (reference) DO UPDATE SET "
                                "digest = excluded.digest, size_bytes = excluded.size_bytes, "
                                "base_disk = excluded.base_disk, "
                                "created_at = excluded.created_at, "
                                "config_digest = excluded.config_digest, "
                                "media_type = excluded.media_type"));
  s.Text(1, i.reference).Text(2, i.digest).Int(3, i.size_bytes).Text(4, i.base_disk);
  s.Int(5, i.created_at != 0 ? i.created_at : NowSeconds());
  s.Text(6, i.config_digest).Text(7, i.media_type);
  return s.Run("recording image " + i.reference);
}

Result<std::optional<ImageRecord>> Store::GetImage(const std::string& reference) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "SELECT " MSB_IMAGE_COLUMNS
                                           " FROM images WHERE reference = ?1"));
  s.Text(1, reference);
  MSB_TRY(bool row, s.Step("reading image " + reference));
  if (!row) return std::optional<ImageRecord>();
  return std::optional<ImageRecord>(ReadImage(s));
}

Result<std::vector<ImageRecord>> Store::ListImages() {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "SELECT " MSB_IMAGE_COLUMNS
                                           " FROM images ORDER BY reference"));
  return CollectRows<ImageRecord>(s, "listing images", ReadImage);
}

Result<std::vector<ImageRecord>> Store::ListImagesByDigest(const std::string& digest) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "SELECT " MSB_IMAGE_COLUMNS
                                           " FROM images WHERE digest = ?1 ORDER BY reference"));
  s.Text(1, digest);
  return CollectRows<ImageRecord>(s, "listing the images of " + digest, ReadImage);
}

Status Store::DeleteImage(const std::string& reference) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "DELETE FROM images WHERE reference = ?1"));
  s.Text(1, reference);
  MSB_TRY_STATUS(s.Run("deleting image " + reference));
  if (sqlite3_changes(db_.get()) == 0) {
    return Error(ErrorCode::kNotFound, "no image '" + reference + "' in the state store");
  }
  return OkStatus();
}

// ---- volumes

Status Store::UpsertVolume(const VolumeRecord& v) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(),
                                "INSERT INTO volumes (" MSB_VOLUME_COLUMNS
                                ") VALUES (?1, ?2, ?3, ?4, ?5) "
                                "ON CONFLICT (project, name) DO UPDATE SET "
                                "size_bytes = excluded.size_bytes, path = excluded.path"));
  s.Text(1, v.project).Text(2, v.name).Int(3, v.size_bytes).Text(4, v.path);
  s.Int(5, v.created_at != 0 ? v.created_at : NowSeconds());
  Status st = s.Run("recording volume " + v.project + "/" + v.name);
  if (!st.ok()) return MissingProject(st.error(), v.project);
  return OkStatus();
}

Result<std::optional<VolumeRecord>> Store::GetVolume(const std::string& project,
                                                     const std::string& name) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "SELECT " MSB_VOLUME_COLUMNS
                                           " FROM volumes WHERE project = ?1 AND name = ?2"));
  s.Text(1, project).Text(2, name);
  MSB_TRY(bool row, s.Step("reading volume " + project + "/" + name));
  if (!row) return std::optional<VolumeRecord>();
  return std::optional<VolumeRecord>(ReadVolume(s));
}

Result<std::vector<VolumeRecord>> Store::ListVolumes(const std::string& project) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "SELECT " MSB_VOLUME_COLUMNS
                                           " FROM volumes WHERE project = ?1 ORDER BY name"));
  s.Text(1, project);
  return CollectRows<VolumeRecord>(s, "listing volumes of " + project, ReadVolume);
}

Result<std::vector<VolumeRecord>> Store::ListAllVolumes() {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "SELECT " MSB_VOLUME_COLUMNS
                                           " FROM volumes ORDER BY project, name"));
  return CollectRows<VolumeRecord>(s, "listing volumes", ReadVolume);
}

Status Store::DeleteVolume(const std::string& project, const std::string& name) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(),
                                "DELETE FROM volumes WHERE project = ?1 AND name = ?2"));
  s.Text(1, project).Text(2, name);
  MSB_TRY_STATUS(s.Run("deleting volume " + project + "/" + name));
  if (sqlite3_changes(db_.get()) == 0) {
    return Error(ErrorCode::kNotFound,
                 "no volume '" + name + "' in project '" + project + "' in the state store");
  }
  return OkStatus();
}

Status Store::InsertSnapshot(const SnapshotRecord& r) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "INSERT INTO snapshots (" MSB_SNAPSHOT_COLUMNS
                                           ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"));
  s.Text(1, r.name).Text(2, r.digest).Text(3, r.parent_digest).Text(4, r.source);
  s.Text(5, r.source_image).Text(6, r.base_disk).Text(7, r.lowers_json).Text(8, r.defaults_json);
  s.Text(9, r.dir).Int(10, r.size_bytes).Int(11, r.created_at != 0 ? r.created_at : NowSeconds());
  Status st = s.Run("recording snapshot " + r.name);
  if (!st.ok() && sqlite3_extended_errcode(db_.get()) == SQLITE_CONSTRAINT_PRIMARYKEY) {
    return Error(ErrorCode::kAlreadyExists, "a snapshot named " + r.name + " exists");
  }
  return st;
}

Result<std::optional<SnapshotRecord>> Store::GetSnapshot(const std::string& name) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "SELECT " MSB_SNAPSHOT_COLUMNS
                                           " FROM snapshots WHERE name = ?1"));
  s.Text(1, name);
  MSB_TRY(bool row, s.Step("reading snapshot " + name));
  if (!row) return std::optional<SnapshotRecord>();
  return std::optional<SnapshotRecord>(ReadSnapshot(s));
}

Result<std::vector<SnapshotRecord>> Store::ListSnapshots() {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "SELECT " MSB_SNAPSHOT_COLUMNS
                                           " FROM snapshots ORDER BY name"));
  return CollectRows<SnapshotRecord>(s, "listing snapshots", ReadSnapshot);
}

Status Store::DeleteSnapshot(const std::string& name) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "DELETE FROM snapshots WHERE name = ?1"));
  s.Text(1, name);
  MSB_TRY_STATUS(s.Run("deleting snapshot " + name));
  if (sqlite3_changes(db_.get()) == 0) {
    return Error(ErrorCode::kNotFound, "no snapshot named " + name + " in the state store");
  }
  return OkStatus();
}

// ---- syncs

Status Store::UpsertSync(const SyncRecord& r) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "INSERT OR REPLACE INTO syncs (" MSB_SYNC_COLUMNS
                                           ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"));
  s.Text(1, r.key).Text(2, r.project).Text(3, r.repo).Text(4, r.ref).Text(5, r.path);
  s.Text(6, r.applied_commit).Int(7, r.applied_at).Text(8, r.fetched_commit).Int(9, r.checked_at);
  s.Text(10, r.error).Text(11, r.error_commit).Int(12, r.error_at);
  return s.Run("recording the sync of " + r.project);
}

Result<std::optional<SyncRecord>> Store::GetSync(const std::string& key) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "SELECT " MSB_SYNC_COLUMNS " FROM syncs WHERE key = ?1"));
  s.Text(1, key);
  MSB_TRY(bool row, s.Step("reading sync " + key));
  if (!row) return std::optional<SyncRecord>();
  return std::optional<SyncRecord>(ReadSync(s));
}

Result<std::optional<SyncRecord>> Store::GetSyncOfProject(const std::string& project) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "SELECT " MSB_SYNC_COLUMNS
                                           " FROM syncs WHERE project = ?1"
                                           " ORDER BY applied_at DESC, key LIMIT 1"));
  s.Text(1, project);
  MSB_TRY(bool row, s.Step("reading the sync of " + project));
  if (!row) return std::optional<SyncRecord>();
  return std::optional<SyncRecord>(ReadSync(s));
}

Result<std::vector<SyncRecord>> Store::ListSyncs() {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "SELECT " MSB_SYNC_COLUMNS " FROM syncs ORDER BY key"));
  return CollectRows<SyncRecord>(s, "listing syncs", ReadSync);
}

Status Store::DeleteSync(const std::string& key) {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "DELETE FROM syncs WHERE key = ?1"));
  s.Text(1, key);
  MSB_TRY_STATUS(s.Run("deleting sync " + key));
  if (sqlite3_changes(db_.get()) == 0) {
    return Error(ErrorCode::kNotFound, "no sync " + key + " in the state store");
  }
  return OkStatus();
}

Result<std::string> Store::IntegrityCheck() {
  MSB_TRY(Stmt s, Stmt::Prepare(db_.get(), "PRAGMA integrity_check"));
  std::string out;
  for (;;) {
    MSB_TRY(bool row, s.Step("checking integrity"));
    if (!row) break;
    if (!out.empty()) out += '\n';
    out += s.ColText(0);
  }
  return out;
}

}  // namespace msb::orchestrator
