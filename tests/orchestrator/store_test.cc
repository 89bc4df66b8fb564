// Tests of the state store: CRUD round trips, migrations, refusal of a newer
// schema, writers in two processes, and a writer killed mid-transaction.
// Processes synchronise through pipes only, never through sleeps.
#include "orchestrator/store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <thread>

#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"

namespace msb::orchestrator {
namespace {

// Runs one SQL statement through a separate raw connection; returns column 0
// of the first row as text ("" when there is none).
std::string RawQuery(const std::string& path, const char* sql) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE, nullptr);
  SqliteDb db(raw);
  EXPECT_EQ(rc, SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db.get(), sql, -1, &st, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db.get());
  std::string out;
  if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != nullptr) {
    out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
  }
  sqlite3_finalize(st);
  return out;
}

struct Pipe {
  Pipe() {
    int p[2];
    MSB_CHECK(::pipe(p) == 0, "pipe");
    rd.Reset(p[0]);
    wr.Reset(p[1]);
  }
  UniqueFd rd, wr;
};

void SendByte(int fd, char c) { MSB_CHECK(::write(fd, &c, 1) == 1, "pipe write"); }
char ReadByte(int fd) {
  char c = 0;
  return ::read(fd, &c, 1) == 1 ? c : '\0';
}

// In a forked child: report and leave without running the parent's destructors.
[[noreturn]] void ChildFail(const std::string& what) {
  std::fprintf(stderr, "child %d: %s\n", ::getpid(), what.c_str());
  ::_exit(1);
}

ExitStatus WaitChild(pid_t pid) {
  int st = 0;
  ExitStatus es;
  if (::waitpid(pid, &st, 0) != pid) return es;
  if (WIFEXITED(st)) es.code = WEXITSTATUS(st);
  if (WIFSIGNALED(st)) es.signal = WTERMSIG(st);
  return es;
}

SandboxRecord MakeSandbox(const std::string& project, const std::string& name) {
  SandboxRecord r;
  r.project = project;
  r.name = name;
  r.config_hash = "hash-" + name;
  r.image_ref = "docker.io/library/alpine:3.19";
  r.image_digest = "sha256:abcd";
  r.spec_json = R"({"image":"alpine","env":{"TOKEN":{"secret":"env:TOKEN"}}})";
  r.sandbox_dir = "/msb/sandboxes/" + name;
  r.control_socket = r.sandbox_dir + "/control.sock";
  r.agent_socket = r.sandbox_dir + "/agent.sock";
  r.qmp_socket = r.sandbox_dir + "/qmp.sock";
  return r;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-store-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    db_path_ = dir_ + "/home/state.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  Store OpenOrDie(const StoreOptions& options = {}) {
    auto s = Store::Open(db_path_, options);
    MSB_CHECK(s.ok(), s.ok() ? "" : s.error().message());
    return std::move(s).value();
  }
  void AddProject(Store& s, const std::string& name) {
    ProjectRecord p;
    p.name = name;
    p.directory = "/src/" + name;
    p.sandboxfile = "/src/" + name + "/Sandboxfile";
    ASSERT_TRUE(s.UpsertProject(p).ok());
  }

  std::string dir_;
  std::string db_path_;
};

TEST_F(StoreTest, OpenCreatesParentAndMigratesEmptyDatabase) {
  Store s = OpenOrDie();
  EXPECT_TRUE(std::filesystem::exists(db_path_));
  EXPECT_EQ(RawQuery(db_path_, "PRAGMA user_version"), std::to_string(Store::SchemaVersion()));
  EXPECT_EQ(RawQuery(db_path_, "PRAGMA journal_mode"), "wal");
  auto run = s.GetProject(Store::kRunProject);
  ASSERT_TRUE(run.ok());
  EXPECT_TRUE(run->has_value());
  auto ic = s.IntegrityCheck();
  ASSERT_TRUE(ic.ok());
  EXPECT_EQ(*ic, "ok");
}

unsigned PermissionsOf(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 077777;
  return st.st_mode & 07777;
}

// The database holds environment values: 0600, and so are SQLite's side
// files, whatever the umask (msb's own is 077; a library user's may be 022).
TEST_F(StoreTest, DatabaseAndItsSideFilesAreOwnerOnly) {
  mode_t old_umask = ::umask(022);
  {
    Store s = OpenOrDie();
    AddProject(s, "shop");  // a write: the WAL has content
    EXPECT_EQ(PermissionsOf(dir_ + "/home"), 0700u);
    EXPECT_EQ(PermissionsOf(db_path_), 0600u);
    EXPECT_EQ(PermissionsOf(db_path_ + "-wal"), 0600u);
    EXPECT_EQ(PermissionsOf(db_path_ + "-shm"), 0600u);
  }
  // Files an older msb left readable are tightened at the next open.
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::string f = db_path_ + suffix;
    if (::access(f.c_str(), F_OK) != 0) ASSERT_TRUE(WriteFileAtomic(f, "", 0644).ok());
    ASSERT_EQ(::chmod(f.c_str(), 0644), 0);
  }
  {
    Store s = OpenOrDie();
    EXPECT_EQ(PermissionsOf(db_path_), 0600u);
    EXPECT_EQ(PermissionsOf(db_path_ + "-wal"), 0600u);
    EXPECT_EQ(PermissionsOf(db_path_ + "-shm"), 0600u);
    auto project = s.GetProject("shop");
    ASSERT_TRUE(project.ok());
    EXPECT_TRUE(project->has_value());
  }
  ::umask(old_umask);
}

TEST_F(StoreTest, ReopenIsIdempotentAndKeepsData) {
  {
    Store s = OpenOrDie();
    AddProject(s, "web");
    ASSERT_TRUE(s.UpsertSandbox(MakeSandbox("web", "api")).ok());
  }
  for (int i = 0; i < 2; ++i) {
    Store s = OpenOrDie();
    EXPECT_EQ(RawQuery(db_path_, "PRAGMA user_version"),
              std::to_string(Store::SchemaVersion()));
    auto projects = s.ListProjects();
    ASSERT_TRUE(projects.ok());
    ASSERT_EQ(projects->size(), 2u);  // _run and web, once each
    EXPECT_EQ((*projects)[0].name, "_run");
    EXPECT_EQ((*projects)[1].name, "web");
    auto sb = s.GetSandbox("web", "api");
    ASSERT_TRUE(sb.ok());
    ASSERT_TRUE(sb->has_value());
    EXPECT_EQ((*sb)->config_hash, "hash-api");
  }
}

TEST_F(StoreTest, RefusesDatabaseFromNewerSchema) {
  { Store s = OpenOrDie(); }
  std::string bump = "PRAGMA user_version = " + std::to_string(Store::SchemaVersion() + 1);
  RawQuery(db_path_, bump.c_str());
  auto s = Store::Open(db_path_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kState);
  const std::string& msg = s.error().message();
  EXPECT_NE(msg.find(db_path_), std::string::npos) << msg;
  EXPECT_NE(msg.find("newer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("version " + std::to_string(Store::SchemaVersion() + 1)),
            std::string::npos)
      << msg;
  // Left untouched.
  EXPECT_EQ(RawQuery(db_path_, "PRAGMA user_version"),
            std::to_string(Store::SchemaVersion() + 1));
}

TEST_F(StoreTest, RefusesFileThatIsNotADatabase) {
  ASSERT_TRUE(MakeDirs(dir_ + "/home").ok());
  ASSERT_TRUE(WriteFileAtomic(db_path_, std::string(8192, 'z')).ok());
  auto s = Store::Open(db_path_);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find(db_path_), std::string::npos) << s.error().message();
}

TEST_F(StoreTest, UpsertProjectNeverMovesAProjectToAnotherDirectory) {
  Store s = OpenOrDie();
  ASSERT_TRUE(s.UpsertProject(ProjectRecord{"app", "/a/app", "/a/app/Sandboxfile", 0}).ok());
  auto moved = s.UpsertProject(ProjectRecord{"app", "/b/app", "/b/app/Sandboxfile", 0});
  ASSERT_FALSE(moved.ok());
  EXPECT_EQ(moved.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_NE(moved.error().message().find("/a/app"), std::string::npos) << moved.error().message();
  EXPECT_NE(moved.error().message().find("/b/app"), std::string::npos) << moved.error().message();
  auto got = s.GetProject("app");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->directory, "/a/app");
  EXPECT_EQ((*got)->sandboxfile, "/a/app/Sandboxfile");

  // Only MoveProject moves it, and only a recorded one.
  ASSERT_TRUE(s.MoveProject(ProjectRecord{"app", "/b/app", "/b/app/msb.yaml", 0}).ok());
  got = s.GetProject("app");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->directory, "/b/app");
  EXPECT_EQ((*got)->sandboxfile, "/b/app/msb.yaml");
  auto missing = s.MoveProject(ProjectRecord{"nope", "/n", "/n/Sandboxfile", 0});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
}

TEST_F(StoreTest, ProjectRoundTrip) {
  Store s = OpenOrDie();
  ProjectRecord p{"web", "/src/web", "/src/web/Sandboxfile", 0};
  ASSERT_TRUE(s.UpsertProject(p).ok());
  auto got = s.GetProject("web");
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->directory, "/src/web");
  EXPECT_EQ((*got)->sandboxfile, "/src/web/Sandboxfile");
  int64_t created = (*got)->created_at;
  EXPECT_GT(created, 0);

  p.sandboxfile = "/src/web/msb.yaml";
  p.created_at = created + 1000;  // ignored on update
  ASSERT_TRUE(s.UpsertProject(p).ok());
  got = s.GetProject("web");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->sandboxfile, "/src/web/msb.yaml");
  EXPECT_EQ((*got)->created_at, created);

  ASSERT_TRUE(s.DeleteProject("web").ok());
  got = s.GetProject("web");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  auto del = s.DeleteProject("web");
  ASSERT_FALSE(del.ok());
  EXPECT_EQ(del.error().code(), ErrorCode::kNotFound);
}

TEST_F(StoreTest, SandboxRoundTripKeepsEveryField) {
  Store s = OpenOrDie();
  AddProject(s, "web");
  SandboxRecord r = MakeSandbox("web", "api");
  r.status = SandboxStatus::kFailed;
  r.status_reason = "boot timed out";
  r.supervisor_pid = 4242;
  r.restarts = 3;
  r.exit_code = 137;
  r.created_at = 1000;
  r.started_at = 1001;
  r.finished_at = 1002;
  ASSERT_TRUE(s.UpsertSandbox(r).ok());

  auto got = s.GetSandbox("web", "api");
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE(got->has_value());
  const SandboxRecord& g = **got;
  EXPECT_EQ(g.project, "web");
  EXPECT_EQ(g.name, "api");
  EXPECT_EQ(g.config_hash, r.config_hash);
  EXPECT_EQ(g.image_ref, r.image_ref);
  EXPECT_EQ(g.image_digest, r.image_digest);
  EXPECT_EQ(g.spec_json, r.spec_json);
  EXPECT_EQ(g.sandbox_dir, r.sandbox_dir);
  EXPECT_EQ(g.control_socket, r.control_socket);
  EXPECT_EQ(g.agent_socket, r.agent_socket);
  EXPECT_EQ(g.qmp_socket, r.qmp_socket);
  EXPECT_EQ(g.status, SandboxStatus::kFailed);
  EXPECT_EQ(g.status_reason, "boot timed out");
  EXPECT_EQ(g.supervisor_pid, 4242);
  EXPECT_EQ(g.restarts, 3);
  ASSERT_TRUE(g.exit_code.has_value());
  EXPECT_EQ(*g.exit_code, 137);
  EXPECT_EQ(g.created_at, 1000);
  EXPECT_EQ(g.started_at, 1001);
  EXPECT_EQ(g.finished_at, 1002);
}

TEST_F(StoreTest, UpsertReplacesDesiredFieldsOnly) {
  Store s = OpenOrDie();
  AddProject(s, "web");
  ASSERT_TRUE(s.UpsertSandbox(MakeSandbox("web", "api")).ok());
  SandboxStatusUpdate run;
  run.status = SandboxStatus::kRunning;
  run.supervisor_pid = 77;
  ASSERT_TRUE(s.UpdateSandboxStatus("web", "api", run).ok());

  SandboxRecord changed = MakeSandbox("web", "api");
  changed.config_hash = "hash-v2";
  changed.image_digest = "sha256:ef01";
  changed.status = SandboxStatus::kCreated;  // observed: ignored on conflict
  changed.supervisor_pid = 0;
  ASSERT_TRUE(s.UpsertSandbox(changed).ok());

  auto got = s.GetSandbox("web", "api");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->config_hash, "hash-v2");
  EXPECT_EQ((*got)->image_digest, "sha256:ef01");
  EXPECT_EQ((*got)->status, SandboxStatus::kRunning);
  EXPECT_EQ((*got)->supervisor_pid, 77);
}

TEST_F(StoreTest, ListsAreSortedAndScopedByProject) {
  Store s = OpenOrDie();
  AddProject(s, "b");
  AddProject(s, "a");
  for (const char* n : {"zeta", "alpha", "mid"}) {
    ASSERT_TRUE(s.UpsertSandbox(MakeSandbox("b", n)).ok());
  }
  ASSERT_TRUE(s.UpsertSandbox(MakeSandbox("a", "only")).ok());
  ASSERT_TRUE(s.UpsertSandbox(MakeSandbox(Store::kRunProject, "tmp-1")).ok());

  auto b = s.ListSandboxes("b");
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->size(), 3u);
  EXPECT_EQ((*b)[0].name, "alpha");
  EXPECT_EQ((*b)[1].name, "mid");
  EXPECT_EQ((*b)[2].name, "zeta");

  auto all = s.ListAllSandboxes();
  ASSERT_TRUE(all.ok());
  std::vector<std::string> keys;
  for (const auto& r : *all) keys.push_back(r.project + "/" + r.name);
  EXPECT_EQ(keys, (std::vector<std::string>{"_run/tmp-1", "a/only", "b/alpha", "b/mid",
                                            "b/zeta"}));

  auto none = s.ListSandboxes("nope");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST_F(StoreTest, StatusTransitionsSetTimestampsExitCodeAndRestarts) {
  Store s = OpenOrDie();
  AddProject(s, "web");
  ASSERT_TRUE(s.UpsertSandbox(MakeSandbox("web", "job")).ok());

  SandboxStatusUpdate u;
  u.status = SandboxStatus::kStarting;
  u.supervisor_pid = 100;
  ASSERT_TRUE(s.UpdateSandboxStatus("web", "job", u).ok());
  u = {};
  u.status = SandboxStatus::kRunning;
  ASSERT_TRUE(s.UpdateSandboxStatus("web", "job", u).ok());
  auto got = s.GetSandbox("web", "job");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->status, SandboxStatus::kRunning);
  EXPECT_EQ((*got)->supervisor_pid, 100);  // kept when not given
  EXPECT_GT((*got)->started_at, 0);
  EXPECT_EQ((*got)->finished_at, 0);
  EXPECT_FALSE((*got)->exit_code.has_value());

  u = {};
  u.status = SandboxStatus::kExited;
  u.reason = "workload exited";
  u.exit_code = 3;
  u.supervisor_pid = 0;
  ASSERT_TRUE(s.UpdateSandboxStatus("web", "job", u).ok());
  got = s.GetSandbox("web", "job");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->status, SandboxStatus::kExited);
  EXPECT_EQ((*got)->status_reason, "workload exited");
  ASSERT_TRUE((*got)->exit_code.has_value());
  EXPECT_EQ(*(*got)->exit_code, 3);
  EXPECT_EQ((*got)->supervisor_pid, 0);
  EXPECT_GE((*got)->finished_at, (*got)->started_at);

  // A restart: starting again clears the exit code and finish time.
  u = {};
  u.status = SandboxStatus::kStarting;
  u.count_restart = true;
  ASSERT_TRUE(s.UpdateSandboxStatus("web", "job", u).ok());
  got = s.GetSandbox("web", "job");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->restarts, 1);
  EXPECT_FALSE((*got)->exit_code.has_value());
  EXPECT_EQ((*got)->finished_at, 0);
  EXPECT_EQ((*got)->status_reason, "");

  auto missing = s.UpdateSandboxStatus("web", "ghost", u);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.error().message().find("ghost"), std::string::npos);
}

TEST_F(StoreTest, StatusNamesRoundTrip) {
  for (int i = 0; i <= static_cast<int>(SandboxStatus::kExited); ++i) {
    auto st = static_cast<SandboxStatus>(i);
    auto parsed = ParseSandboxStatus(ToString(st));
    ASSERT_TRUE(parsed.has_value()) << i;
    EXPECT_EQ(*parsed, st);
  }
  EXPECT_FALSE(ParseSandboxStatus("paused").has_value());
}

TEST_F(StoreTest, DeleteSandbox) {
  Store s = OpenOrDie();
  AddProject(s, "web");
  ASSERT_TRUE(s.UpsertSandbox(MakeSandbox("web", "api")).ok());
  ASSERT_TRUE(s.DeleteSandbox("web", "api").ok());
  auto got = s.GetSandbox("web", "api");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  auto again = s.DeleteSandbox("web", "api");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), ErrorCode::kNotFound);
}

TEST_F(StoreTest, SandboxesAndVolumesNeedTheirProject) {
  Store s = OpenOrDie();
  auto sb = s.UpsertSandbox(MakeSandbox("nope", "api"));
  ASSERT_FALSE(sb.ok());
  EXPECT_EQ(sb.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(sb.error().message().find("nope"), std::string::npos) << sb.error().message();
  auto vol = s.UpsertVolume(VolumeRecord{"nope", "data", 1, "/v", 0});
  ASSERT_FALSE(vol.ok());
  EXPECT_EQ(vol.error().code(), ErrorCode::kNotFound);

  AddProject(s, "web");
  ASSERT_TRUE(s.UpsertSandbox(MakeSandbox("web", "api")).ok());
  auto del = s.DeleteProject("web");
  ASSERT_FALSE(del.ok());
  EXPECT_EQ(del.error().code(), ErrorCode::kState);
  ASSERT_TRUE(s.DeleteSandbox("web", "api").ok());
  EXPECT_TRUE(s.DeleteProject("web").ok());
}

TEST_F(StoreTest, ValuesAreStoredVerbatimNotInterpretedAsSql) {
  Store s = OpenOrDie();
  const std::string evil = "x'); DROP TABLE sandboxes; --\n\"\xc3\xa9";
  AddProject(s, evil);
  ASSERT_TRUE(s.UpsertSandbox(MakeSandbox(evil, evil)).ok());
  auto got = s.GetSandbox(evil, evil);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->name, evil);
  auto all = s.ListAllSandboxes();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 1u);
}

TEST_F(StoreTest, ImageRoundTrip) {
  Store s = OpenOrDie();
  ImageRecord i{"alpine:3.19", "sha256:1111", 4096, "/msb/images/base/1111.ext4", 0};
  ASSERT_TRUE(s.UpsertImage(i).ok());
  ASSERT_TRUE(s.UpsertImage(ImageRecord{"./rootfs", "sha256:2222", 10, "/b/2222.ext4", 5}).ok());
  auto got = s.GetImage("alpine:3.19");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->digest, "sha256:1111");
  EXPECT_EQ((*got)->size_bytes, 4096);
  EXPECT_EQ((*got)->base_disk, "/msb/images/base/1111.ext4");
  EXPECT_GT((*got)->created_at, 0);

  i.digest = "sha256:3333";  // the tag moved
  ASSERT_TRUE(s.UpsertImage(i).ok());
  auto list = s.ListImages();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].reference, "./rootfs");
  EXPECT_EQ((*list)[1].digest, "sha256:3333");

  ASSERT_TRUE(s.DeleteImage("alpine:3.19").ok());
  got = s.GetImage("alpine:3.19");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  EXPECT_EQ(s.DeleteImage("alpine:3.19").error().code(), ErrorCode::kNotFound);
}

TEST_F(StoreTest, ImageManifestFieldsAndLookupByDigest) {
  Store s = OpenOrDie();
  ImageRecord a{"docker.io/library/busybox:v1", "sha256:aaaa", 100, "", 0, "sha256:cfg1",
                "application/vnd.oci.image.manifest.v1+json"};
  ImageRecord b = a;
  b.reference = "example.com/busybox:stable";  // a second tag for the same image
  ImageRecord c{"docker.io/library/alpine:3", "sha256:cccc", 1, "", 0, "sha256:cfg2", "x"};
  for (const auto& r : {a, b, c}) ASSERT_TRUE(s.UpsertImage(r).ok());
  auto got = s.GetImage(a.reference);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->config_digest, "sha256:cfg1");
  EXPECT_EQ((*got)->media_type, "application/vnd.oci.image.manifest.v1+json");
  auto same = s.ListImagesByDigest("sha256:aaaa");
  ASSERT_TRUE(same.ok());
  ASSERT_EQ(same->size(), 2u);
  EXPECT_EQ((*same)[0].reference, "docker.io/library/busybox:v1");
  EXPECT_EQ((*same)[1].reference, "example.com/busybox:stable");
  auto none = s.ListImagesByDigest("sha256:ffff");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST_F(StoreTest, SnapshotsRoundTripRefuseADuplicateNameAndDelete) {
  Store s = OpenOrDie();
  SnapshotRecord r;
  r.name = "snap-b";
  r.digest = "sha256:bb";
  r.parent_digest = "sha256:aa";
  r.source = "_run/src";
  r.source_image = "/rootfs";
  r.base_disk = "/d/aa.ext4";
  r.lowers_json = R"(["/s/snap-b/layer.ext4"])";
  r.defaults_json = R"({"cmd":["sh"]})";
  r.dir = "/s/snap-b";
  r.size_bytes = 4096;
  ASSERT_TRUE(s.InsertSnapshot(r).ok());
  SnapshotRecord a = r;
  a.name = "snap-a";
  a.created_at = 7;
  ASSERT_TRUE(s.InsertSnapshot(a).ok());

  auto dup = s.InsertSnapshot(r);
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_NE(dup.error().message().find("snap-b"), std::string::npos);

  auto got = s.GetSnapshot("snap-b");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->digest, "sha256:bb");
  EXPECT_EQ((*got)->parent_digest, "sha256:aa");
  EXPECT_EQ((*got)->source, "_run/src");
  EXPECT_EQ((*got)->source_image, "/rootfs");
  EXPECT_EQ((*got)->base_disk, "/d/aa.ext4");
  EXPECT_EQ((*got)->lowers_json, r.lowers_json);
  EXPECT_EQ((*got)->defaults_json, r.defaults_json);
  EXPECT_EQ((*got)->dir, "/s/snap-b");
  EXPECT_EQ((*got)->size_bytes, 4096);
  EXPECT_GT((*got)->created_at, 0);

  auto all = s.ListSnapshots();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].name, "snap-a");
  EXPECT_EQ((*all)[0].created_at, 7);
  EXPECT_EQ((*all)[1].name, "snap-b");

  ASSERT_TRUE(s.DeleteSnapshot("snap-a").ok());
  auto again = s.DeleteSnapshot("snap-a");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), ErrorCode::kNotFound);
  auto gone = s.GetSnapshot("snap-a");
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->has_value());
}

TEST_F(StoreTest, MigrationThreeAddsSnapshotsToASchemaTwoDatabase) {
  { Store s = OpenOrDie(); }
  RawQuery(db_path_, "DROP TABLE snapshots");
  RawQuery(db_path_, "DROP TABLE syncs");
  RawQuery(db_path_, "PRAGMA user_version = 2");
  Store s = OpenOrDie();
  EXPECT_EQ(RawQuery(db_path_, "PRAGMA user_version"), std::to_string(Store::SchemaVersion()));
  auto all = s.ListSnapshots();
  ASSERT_TRUE(all.ok()) << all.error().message();
  EXPECT_TRUE(all->empty());
}

TEST_F(StoreTest, MigrationFourAddsSyncsToASchemaThreeDatabase) {
  { Store s = OpenOrDie(); }
  RawQuery(db_path_, "DROP TABLE syncs");
  RawQuery(db_path_, "PRAGMA user_version = 3");
  Store s = OpenOrDie();
  EXPECT_EQ(RawQuery(db_path_, "PRAGMA user_version"), "4");
  auto all = s.ListSyncs();
  ASSERT_TRUE(all.ok()) << all.error().message();
  EXPECT_TRUE(all->empty());
}

TEST_F(StoreTest, SyncRoundTrip) {
  Store s = OpenOrDie();
  SyncRecord a;
  a.key = "app-0123";
  a.project = "app";
  a.repo = "https://example.test/app.git";
  a.ref = "main";
  a.applied_commit = std::string(40, 'a');
  a.applied_at = 100;
  a.fetched_commit = std::string(40, 'b');
  a.checked_at = 200;
  a.error = "Sandboxfile:3:5: bad";
  a.error_commit = std::string(40, 'b');
  a.error_at = 200;
  ASSERT_TRUE(s.UpsertSync(a).ok());
  SyncRecord b = a;
  b.key = "app-4567";
  b.applied_at = 300;
  b.path = "deploy";
  ASSERT_TRUE(s.UpsertSync(b).ok());
  auto got = s.GetSync("app-0123");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->repo, a.repo);
  EXPECT_EQ((*got)->ref, "main");
  EXPECT_EQ((*got)->applied_commit, a.applied_commit);
  EXPECT_EQ((*got)->applied_at, 100);
  EXPECT_EQ((*got)->fetched_commit, a.fetched_commit);
  EXPECT_EQ((*got)->checked_at, 200);
  EXPECT_EQ((*got)->error, a.error);
  EXPECT_EQ((*got)->error_commit, a.error_commit);
  EXPECT_EQ((*got)->error_at, 200);
  // The one applied last answers for the project.
  auto of = s.GetSyncOfProject("app");
  ASSERT_TRUE(of.ok() && of->has_value());
  EXPECT_EQ((*of)->key, "app-4567");
  EXPECT_EQ((*of)->path, "deploy");
  a.error.clear();
  ASSERT_TRUE(s.UpsertSync(a).ok());
  auto all = s.ListSyncs();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].key, "app-0123");
  EXPECT_EQ((*all)[0].error, "");
  ASSERT_TRUE(s.DeleteSync("app-0123").ok());
  EXPECT_EQ(s.DeleteSync("app-0123").error().code(), ErrorCode::kNotFound);
  auto none = s.GetSyncOfProject("other");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(StoreTest, MigrationTwoKeepsImageRows) {
  // A database as schema 1 left it: the images table without the columns
  // migration 2 adds, holding one row.
  { Store s = OpenOrDie(); }
  RawQuery(db_path_, "ALTER TABLE images DROP COLUMN config_digest");
  RawQuery(db_path_, "ALTER TABLE images DROP COLUMN media_type");
  RawQuery(db_path_, "DROP TABLE snapshots");
  RawQuery(db_path_, "DROP TABLE syncs");
  RawQuery(db_path_,
           "INSERT INTO images (reference, digest, size_bytes, base_disk, created_at) "
           "VALUES ('old:1', 'sha256:0101', 7, '/d/0101.ext4', 42)");
  RawQuery(db_path_, "PRAGMA user_version = 1");
  ASSERT_EQ(RawQuery(db_path_, "SELECT count(*) FROM pragma_table_info('images')"), "5");

  Store s = OpenOrDie();
  EXPECT_EQ(RawQuery(db_path_, "PRAGMA user_version"), std::to_string(Store::SchemaVersion()));
  auto got = s.GetImage("old:1");
  ASSERT_TRUE(got.ok()) << got.error().message();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->digest, "sha256:0101");
  EXPECT_EQ((*got)->size_bytes, 7);
  EXPECT_EQ((*got)->base_disk, "/d/0101.ext4");
  EXPECT_EQ((*got)->created_at, 42);
  EXPECT_EQ((*got)->config_digest, "");
  EXPECT_EQ((*got)->media_type, "");
}

TEST_F(StoreTest, VolumeRoundTrip) {
  Store s = OpenOrDie();
  AddProject(s, "web");
  AddProject(s, "db");
  ASSERT_TRUE(s.UpsertVolume(VolumeRecord{"web", "cache", 1 << 20, "/v/web/cache.ext4", 0}).ok());
  ASSERT_TRUE(s.UpsertVolume(VolumeRecord{"db", "data", 2 << 20, "/v/db/data.ext4", 0}).ok());
  auto got = s.GetVolume("web", "cache");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->size_bytes, 1 << 20);
  EXPECT_EQ((*got)->path, "/v/web/cache.ext4");

  auto web = s.ListVolumes("web");
  ASSERT_TRUE(web.ok());
  ASSERT_EQ(web->size(), 1u);
  auto all = s.ListAllVolumes();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].project, "db");

  EXPECT_EQ(s.DeleteProject("web").error().code(), ErrorCode::kState);
  ASSERT_TRUE(s.DeleteVolume("web", "cache").ok());
  EXPECT_EQ(s.DeleteVolume("web", "cache").error().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(s.DeleteProject("web").ok());
}

TEST_F(StoreTest, TransactionCommitsOrRollsBackAsAWhole) {
  Store s = OpenOrDie();
  AddProject(s, "web");
  Status failed = s.Transaction([&]() -> Status {
    MSB_TRY_STATUS(s.UpsertSandbox(MakeSandbox("web", "a")));
    MSB_TRY_STATUS(s.UpsertSandbox(MakeSandbox("web", "b")));
    return Error(ErrorCode::kInternal, "planned failure");
  });
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().message(), "planned failure");
  auto list = s.ListSandboxes("web");
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());

  Status ok = s.Transaction([&]() -> Status {
    MSB_TRY_STATUS(s.UpsertSandbox(MakeSandbox("web", "a")));
    // A failing inner transaction undoes only its own work.
    Status inner = s.Transaction([&]() -> Status {
      MSB_TRY_STATUS(s.UpsertSandbox(MakeSandbox("web", "inner")));
      return Error(ErrorCode::kInternal, "inner failure");
    });
    EXPECT_FALSE(inner.ok());
    return s.Transaction([&] { return s.UpsertSandbox(MakeSandbox("web", "b")); });
  });
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  list = s.ListSandboxes("web");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "a");
  EXPECT_EQ((*list)[1].name, "b");
}

// Two processes each run read-modify-write transactions on one counter. BEGIN
// IMMEDIATE plus the busy timeout must serialise them: no lost update, no
// "database is locked" failure.
TEST_F(StoreTest, WritersInTwoProcessesAreSerialised) {
  constexpr int kRounds = 40;
  {
    Store s = OpenOrDie();
    AddProject(s, "web");
    ASSERT_TRUE(s.UpsertImage(ImageRecord{"counter", "sha256:0", 0, "", 1}).ok());
  }
  Pipe go;
  pid_t kids[2];
  for (int k = 0; k < 2; ++k) {
    kids[k] = ::fork();
    ASSERT_GE(kids[k], 0);
    if (kids[k] == 0) {
      go.wr.Reset();
      if (ReadByte(go.rd.get()) != 'g') ChildFail("no start signal");
      auto opened = Store::Open(db_path_);
      if (!opened.ok()) ChildFail(opened.error().message());
      Store& s = *opened;
      for (int i = 0; i < kRounds; ++i) {
        Status st = s.Transaction([&]() -> Status {
          MSB_TRY(auto img, s.GetImage("counter"));
          if (!img) return Error(ErrorCode::kNotFound, "counter vanished");
          ImageRecord next = *img;
          next.size_bytes += 1;
          MSB_TRY_STATUS(s.UpsertImage(next));
          return s.UpsertSandbox(
              MakeSandbox("web", "k" + std::to_string(k) + "-" + std::to_string(i)));
        });
        if (!st.ok()) ChildFail(st.error().message());
      }
      ::_exit(0);
    }
  }
  go.rd.Reset();
  SendByte(go.wr.get(), 'g');
  SendByte(go.wr.get(), 'g');
  for (pid_t kid : kids) {
    ExitStatus es = WaitChild(kid);
    EXPECT_EQ(es.code, 0) << es.ToString();
  }
  Store s = OpenOrDie();
  auto counter = s.GetImage("counter");
  ASSERT_TRUE(counter.ok() && counter->has_value());
  EXPECT_EQ((*counter)->size_bytes, 2 * kRounds);
  auto list = s.ListSandboxes("web");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), static_cast<size_t>(2 * kRounds));
}

// A process holding the write lock makes a writer without patience fail with a
// clear timeout, and a patient writer wait until the lock is released.
TEST_F(StoreTest, WriterWaitsForAnotherProcessesTransaction) {
  { Store s = OpenOrDie(); }
  Pipe locked, release;
  pid_t holder = ::fork();
  ASSERT_GE(holder, 0);
  if (holder == 0) {
    locked.rd.Reset();
    release.wr.Reset();
    auto opened = Store::Open(db_path_);
    if (!opened.ok()) ChildFail(opened.error().message());
    Store& s = *opened;
    Status st = s.Transaction([&]() -> Status {
      MSB_TRY_STATUS(s.UpsertProject(ProjectRecord{"holder", "/h", "/h/Sandboxfile", 0}));
      SendByte(locked.wr.get(), 'L');
      if (ReadByte(release.rd.get()) != 'R') return Error(ErrorCode::kInternal, "no release");
      return OkStatus();
    });
    if (!st.ok()) ChildFail(st.error().message());
    ::_exit(0);
  }
  locked.wr.Reset();
  release.rd.Reset();
  ASSERT_EQ(ReadByte(locked.rd.get()), 'L');

  {
    StoreOptions impatient;
    impatient.busy_timeout_ms = 0;
    Store s = OpenOrDie(impatient);
    auto st = s.UpsertProject(ProjectRecord{"impatient", "/i", "/i/Sandboxfile", 0});
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code(), ErrorCode::kTimeout);
    EXPECT_NE(st.error().message().find(db_path_), std::string::npos) << st.error().message();
  }

  Status waited = Error(ErrorCode::kInternal, "writer did not run");
  std::thread writer([&] {
    auto opened = Store::Open(db_path_);
    if (!opened.ok()) {
      waited = opened.error();
      return;
    }
    waited = opened->UpsertProject(ProjectRecord{"patient", "/p", "/p/Sandboxfile", 0});
  });
  SendByte(release.wr.get(), 'R');
  writer.join();
  EXPECT_TRUE(waited.ok()) << waited.error().message();
  ExitStatus es = WaitChild(holder);
  EXPECT_EQ(es.code, 0) << es.ToString();

  Store s = OpenOrDie();
  auto holder_row = s.GetProject("holder");
  auto patient_row = s.GetProject("patient");
  ASSERT_TRUE(holder_row.ok() && patient_row.ok());
  EXPECT_TRUE(holder_row->has_value());
  EXPECT_TRUE(patient_row->has_value());
  auto impatient_row = s.GetProject("impatient");
  ASSERT_TRUE(impatient_row.ok());
  EXPECT_FALSE(impatient_row->has_value());
}

// A writer SIGKILLed in the middle of a large transaction (large enough that
// uncommitted pages spill into the WAL) leaves a sound database without any of
// its rows, and the write lock free.
TEST_F(StoreTest, WriterKilledMidTransactionLeavesStoreConsistent) {
  constexpr int kRows = 3000;
  {
    Store s = OpenOrDie();
    AddProject(s, "web");
    ASSERT_TRUE(s.UpsertSandbox(MakeSandbox("web", "committed")).ok());
  }
  Pipe in_txn, never;
  pid_t writer = ::fork();
  ASSERT_GE(writer, 0);
  if (writer == 0) {
    in_txn.rd.Reset();
    never.wr.Reset();
    auto opened = Store::Open(db_path_);
    if (!opened.ok()) ChildFail(opened.error().message());
    Store& s = *opened;
    Status st = s.Transaction([&]() -> Status {
      for (int i = 0; i < kRows; ++i) {
        SandboxRecord r = MakeSandbox("web", "uncommitted-" + std::to_string(i));
        r.spec_json = std::string(4096, 'x');
        MSB_TRY_STATUS(s.UpsertSandbox(r));
      }
      SendByte(in_txn.wr.get(), 'T');
      ReadByte(never.rd.get());  // blocks until killed
      return Error(ErrorCode::kInternal, "should have been killed");
    });
    ChildFail(st.ok() ? "committed" : st.error().message());
  }
  in_txn.wr.Reset();
  never.rd.Reset();
  ASSERT_EQ(ReadByte(in_txn.rd.get()), 'T');
  // The uncommitted pages reached the WAL file: recovery has work to do.
  struct stat wal;
  ASSERT_EQ(::stat((db_path_ + "-wal").c_str(), &wal), 0);
  EXPECT_GT(wal.st_size, 1 << 20);
  ASSERT_EQ(::kill(writer, SIGKILL), 0);
  ExitStatus es = WaitChild(writer);
  ASSERT_EQ(es.signal, SIGKILL) << es.ToString();

  Store s = OpenOrDie();
  auto ic = s.IntegrityCheck();
  ASSERT_TRUE(ic.ok()) << ic.error().message();
  EXPECT_EQ(*ic, "ok");
  auto list = s.ListSandboxes("web");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name, "committed");
  EXPECT_EQ(RawQuery(db_path_, "SELECT count(*) FROM sandboxes WHERE name LIKE 'uncommitted-%'"),
            "0");
  // The dead writer's lock is gone.
  StoreOptions impatient;
  impatient.busy_timeout_ms = 0;
  Store again = OpenOrDie(impatient);
  EXPECT_TRUE(again.UpsertSandbox(MakeSandbox("web", "after")).ok());
}

}  // namespace
}  // namespace msb::orchestrator
