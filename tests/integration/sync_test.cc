// msb sync against a real repository: `git daemon` serves a bare repository
// on 127.0.0.1, the test pushes commits into it, and `msb sync --once`
// applies each one to real microVMs. What is checked is what runs (msb ps
// --json: config hashes, start times, the recorded source) and what msb sync
// status reports, never only an exit code.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class SyncTest : public MsbTest {
 protected:
  void SetUp() override {
    MsbTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    srv_ = Home() + "/srv";
    work_ = Home() + "/work";
    ASSERT_TRUE(MakeDirs(srv_, 0700).ok());
    Git({"init", "--quiet", "--bare", "--initial-branch=main", srv_ + "/app.git"});
    Git({"init", "--quiet", "--initial-branch=main", work_});
    // A daemon serving srv_ read-only on a free loopback port; --verbose
    // makes it say "Ready to rumble" once it listens.
    port_ = FreeLoopbackPort();
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    daemon_log_ = UniqueFd(p[0]);
    UniqueFd wr(p[1]);
    SpawnOptions o;
    o.argv = {"git", "daemon", "--verbose", "--export-all", "--reuseaddr", "--base-path=" + srv_,
              "--listen=127.0.0.1", "--port=" + std::to_string(port_), srv_};
    o.stderr_fd = wr.get();
    o.stdout_fd = wr.get();
    auto d = ChildProcess::Spawn(o);
    ASSERT_TRUE(d.ok()) << d.error().message();
    daemon_ = std::move(*d);
    wr.Reset();
    std::string got;
    ASSERT_TRUE(ReadUntil(daemon_log_.get(), &got, "Ready to rumble", 30)) << got;
    // Drained from here on, so that its log never fills the pipe.
    ASSERT_TRUE(SetNonBlocking(daemon_log_.get()).ok());
    url_ = "git://127.0.0.1:" + std::to_string(port_) + "/app.git";
  }

  // git in the work tree (or with its own -C), as a fixed argv.
  std::string Git(const std::vector<std::string>& args, const std::string& cwd = "") {
    std::vector<std::string> argv = {"git", "-c", "user.name=msb test", "-c", "user.email=test@msb.invalid",
                                     "-c", "commit.gpgsign=false"};
    if (!cwd.empty()) argv.insert(argv.end(), {"-C", cwd});
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = RunCapture(argv, /*merge_stderr=*/true);
    EXPECT_TRUE(r.ok() && r->status.code == 0)
        << "git " << args[0] << ": " << (r.ok() ? r->output : r.error().message());
    std::string out = r.ok() ? r->output : "";
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

  // Commits the Sandboxfile (at `path` in the repository) and pushes main;
  // returns the commit.
  std::string Push(const std::string& yaml, const std::string& message) {
    EXPECT_TRUE(WriteFileAtomic(work_ + "/Sandboxfile", yaml).ok());
    Git({"add", "Sandboxfile"}, work_);
    Git({"commit", "--quiet", "-m", message}, work_);
    Git({"push", "--quiet", "--force", srv_ + "/app.git", "HEAD:main"}, work_);
    return Git({"rev-parse", "HEAD"}, work_);
  }

  MsbResult SyncOnce() {
    char buf[4096];
    while (::read(daemon_log_.get(), buf, sizeof buf) > 0) {
    }
    return Msb({"sync", "--repo", url_, "--ref", "main", "--once"});
  }

  // msb ps -a --json, by sandbox name.
  std::map<std::string, nlohmann::json> Ps() {
    auto r = Msb({"ps", "-a", "--json"});
    EXPECT_EQ(r.code, 0) << r.err;
    std::map<std::string, nlohmann::json> out;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_TRUE(j.is_array()) << r.out;
    if (!j.is_array()) return out;
    for (const auto& e : j) out[e.value("name", "")] = e;
    return out;
  }

  nlohmann::json Status() {
    auto r = Msb({"sync", "status", "--json"});
    EXPECT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_TRUE(j.is_array() && j.size() == 1) << r.out;
    return j.is_array() && j.size() == 1 ? j[0] : nlohmann::json();
  }

  std::string Sandbox(const std::string& name, const std::string& memory) {
    return "  " + name + ":\n    image: " + Rootfs() + "\n    memory: " + memory + "\n" +
           "    command: [\"/bin/sh\", \"-c\", \"echo " + name + " started; " + std::string(kKeepAlive) + "\"]\n";
  }

  std::string srv_, work_, url_;
  uint16_t port_ = 0;
  ChildProcess daemon_;
  UniqueFd daemon_log_;
};

TEST_F(SyncTest, PushesApplyAnInvalidCommitChangesNothingAndAForcePushGoesBack) {
  // 1. The first commit creates both sandboxes.
  const std::string c1 = Push("sandboxes:\n" + Sandbox("api", "128M") + Sandbox("web", "128M"), "two sandboxes");
  auto r = SyncOnce();
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("created api\n"));
  EXPECT_THAT(r.out, HasSubstr("created web\n"));
  EXPECT_THAT(r.out, HasSubstr("applied commit " + c1.substr(0, 12) + "\n"));
  auto ps1 = Ps();
  ASSERT_EQ(ps1.size(), 2u);
  for (const auto& name : {"api", "web"}) {
    EXPECT_EQ(ps1[name]["state"], "running") << ps1[name];
    // The project is named after the repository, whatever the commit.
    EXPECT_EQ(ps1[name]["project"], "app");
    EXPECT_EQ(ps1[name]["source"]["commit"], c1);
    EXPECT_EQ(ps1[name]["source"]["repo"], url_);
  }
  EXPECT_THAT(WaitForLogs("app/web", "web started"), HasSubstr("web started"));

  // 2. More memory for web replaces web alone.
  const std::string c2 = Push("sandboxes:\n" + Sandbox("api", "128M") + Sandbox("web", "160M"), "web: 160M");
  r = SyncOnce();
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("replaced web\n"));
  EXPECT_THAT(r.out, HasSubstr("unchanged api\n"));
  auto ps2 = Ps();
  ASSERT_EQ(ps2.size(), 2u);
  EXPECT_NE(ps2["web"]["config_hash"], ps1["web"]["config_hash"]);
  EXPECT_EQ(ps2["web"]["state"], "running");
  EXPECT_EQ(ps2["api"]["config_hash"], ps1["api"]["config_hash"]);
  EXPECT_EQ(ps2["api"]["started_at"], ps1["api"]["started_at"]);
  EXPECT_EQ(ps2["web"]["source"]["commit"], c2);
  const auto qemus = MyQemus();
  EXPECT_EQ(qemus.size(), 2u);

  // 3. An invalid file is not applied: the same sandboxes keep running, and
  // the error names the commit and the file:line:column.
  const std::string bad_yaml = "sandboxes:\n" + Sandbox("api", "128M") + Sandbox("web", "lots");
  const int bad_line = 8;  // "    memory: lots"
  std::istringstream lines(bad_yaml);
  std::string line;
  for (int i = 0; i < bad_line; ++i) std::getline(lines, line);
  ASSERT_EQ(line, "    memory: lots");
  const std::string c3 = Push(bad_yaml, "web: invalid memory");
  r = SyncOnce();
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_THAT(r.err, HasSubstr("commit " + c3.substr(0, 12) + " not applied"));
  EXPECT_THAT(r.err, HasSubstr("Sandboxfile:" + std::to_string(bad_line) + ":13: "));
  auto ps3 = Ps();
  ASSERT_EQ(ps3.size(), 2u);
  for (const auto& name : {"api", "web"}) {
    EXPECT_EQ(ps3[name]["state"], "running");
    EXPECT_EQ(ps3[name]["config_hash"], ps2[name]["config_hash"]);
    EXPECT_EQ(ps3[name]["started_at"], ps2[name]["started_at"]);
    EXPECT_EQ(ps3[name]["source"]["commit"], c2);
  }
  EXPECT_EQ(MyQemus(), qemus);  // the very same VMs
  auto st = Status();
  EXPECT_EQ(st["project"], "app");
  EXPECT_EQ(st["repo"], url_);
  EXPECT_EQ(st["ref"], "main");
  EXPECT_EQ(st["applied_commit"], c2);
  EXPECT_EQ(st["fetched_commit"], c3);
  ASSERT_TRUE(st["error"].is_object()) << st;
  EXPECT_EQ(st["error"]["commit"], c3);
  EXPECT_THAT(st["error"]["message"].get<std::string>(),
              HasSubstr("Sandboxfile:" + std::to_string(bad_line) + ":13: "));
  auto text = Msb({"sync", "status"});
  EXPECT_THAT(text.out, HasSubstr("at " + c3.substr(0, 12)));
  EXPECT_THAT(text.out, HasSubstr(c2.substr(0, 12)));

  // 4. Reverting the invalid commit applies the revert: the file is c2's
  // again, so nothing is replaced, and the error is gone.
  Git({"revert", "--no-edit", "HEAD"}, work_);
  Git({"push", "--quiet", srv_ + "/app.git", "HEAD:main"}, work_);
  const std::string c4 = Git({"rev-parse", "HEAD"}, work_);
  r = SyncOnce();
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("applied commit " + c4.substr(0, 12)));
  EXPECT_THAT(r.out, HasSubstr("nothing to do"));
  auto ps4 = Ps();
  ASSERT_EQ(ps4.size(), 2u);
  EXPECT_EQ(ps4["web"]["started_at"], ps2["web"]["started_at"]);
  EXPECT_EQ(ps4["web"]["source"]["commit"], c4);
  EXPECT_TRUE(Status()["error"].is_null());

  // 5. A commit without api removes it.
  Push("sandboxes:\n" + Sandbox("web", "160M"), "no api");
  r = SyncOnce();
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("removed api\n"));
  auto ps5 = Ps();
  ASSERT_EQ(ps5.size(), 1u);
  EXPECT_EQ(ps5["web"]["config_hash"], ps2["web"]["config_hash"]);
  EXPECT_EQ(ps5["web"]["started_at"], ps2["web"]["started_at"]);

  // 6. Reverting that commit brings api back.
  Git({"revert", "--no-edit", "HEAD"}, work_);
  Git({"push", "--quiet", srv_ + "/app.git", "HEAD:main"}, work_);
  const std::string c6 = Git({"rev-parse", "HEAD"}, work_);
  r = SyncOnce();
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("created api\n"));
  auto ps6 = Ps();
  ASSERT_EQ(ps6.size(), 2u);
  EXPECT_EQ(ps6["api"]["state"], "running");
  EXPECT_EQ(ps6["api"]["config_hash"], ps1["api"]["config_hash"]);
  EXPECT_EQ(ps6["api"]["source"]["commit"], c6);

  // 7. A force-push back to the first commit applies it: web is 128M again.
  Git({"push", "--quiet", "--force", srv_ + "/app.git", c1 + ":refs/heads/main"}, work_);
  r = SyncOnce();
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("replaced web\n"));
  EXPECT_THAT(r.out, HasSubstr("applied commit " + c1.substr(0, 12)));
  auto ps7 = Ps();
  ASSERT_EQ(ps7.size(), 2u);
  EXPECT_EQ(ps7["web"]["config_hash"], ps1["web"]["config_hash"]);
  EXPECT_EQ(ps7["web"]["source"]["commit"], c1);
  EXPECT_EQ(Status()["applied_commit"], c1);

  // 8. Nothing new: the pass changes nothing and says so.
  r = SyncOnce();
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("nothing to do"));
  EXPECT_THAT(r.out, Not(HasSubstr("applied commit")));
  EXPECT_EQ(Ps()["web"]["started_at"], ps7["web"]["started_at"]);

  // Only the applied commit's work tree is left; the project's directory
  // points at it, and `msb down` there takes the project down.
  const std::string dir = Status()["directory"];
  auto link = ::realpath(dir.c_str(), nullptr);
  ASSERT_NE(link, nullptr) << dir;
  EXPECT_EQ(std::string(link), dir.substr(0, dir.size() - 4) + "trees/" + c1);
  ::free(link);
  auto down = Msb({"down", "-p", "app", "-f", dir});
  EXPECT_EQ(down.code, 0) << down.err;
  EXPECT_THAT(down.out, HasSubstr("removed web"));
  EXPECT_TRUE(Ps().empty());
}

TEST_F(SyncTest, BindMountsComeFromTheAppliedCommitsOwnTree) {
  // web mounts ./cfg of the repository, under --path deploy.
  ASSERT_TRUE(MakeDirs(work_ + "/deploy/cfg", 0755).ok());
  const std::string yaml = "sandboxes:\n" + Sandbox("web", "128M") + "    volumes:\n      - ./cfg:/cfg:ro\n";
  ASSERT_TRUE(WriteFileAtomic(work_ + "/deploy/Sandboxfile", yaml).ok());
  ASSERT_TRUE(WriteFileAtomic(work_ + "/deploy/cfg/version", "one\n").ok());
  Git({"add", "deploy"}, work_);
  Git({"commit", "--quiet", "-m", "web with cfg one"}, work_);
  Git({"push", "--quiet", srv_ + "/app.git", "HEAD:main"}, work_);
  const std::string c1 = Git({"rev-parse", "HEAD"}, work_);
  auto sync = [&]() { return Msb({"sync", "--repo", url_, "--path", "deploy", "--once"}); };
  auto r = sync();
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("created web\n"));
  auto ps1 = Ps();
  ASSERT_EQ(ps1.size(), 1u);
  // Named after the repository and the path.
  EXPECT_EQ(ps1["web"]["project"], "app-deploy");
  auto cat = Msb({"exec", "app-deploy/web", "--", "cat", "/cfg/version"});
  EXPECT_EQ(cat.out, "one\n") << cat.err;
  const std::string dir = Status()["directory"];
  const std::string trees = dir.substr(0, dir.size() - 4) + "trees/";
  struct stat st {};
  ASSERT_EQ(::stat((trees + c1 + "/deploy/cfg/version").c_str(), &st), 0);

  // A new commit of the mounted file: web is replaced onto the new commit's
  // tree, and the old tree, which nothing names any more, is gone.
  ASSERT_TRUE(WriteFileAtomic(work_ + "/deploy/cfg/version", "two\n").ok());
  Git({"commit", "--quiet", "-am", "cfg two"}, work_);
  Git({"push", "--quiet", srv_ + "/app.git", "HEAD:main"}, work_);
  const std::string c2 = Git({"rev-parse", "HEAD"}, work_);
  r = sync();
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("replaced web\n"));
  auto ps2 = Ps();
  ASSERT_EQ(ps2.size(), 1u);
  EXPECT_NE(ps2["web"]["config_hash"], ps1["web"]["config_hash"]);
  cat = Msb({"exec", "app-deploy/web", "--", "cat", "/cfg/version"});
  EXPECT_EQ(cat.out, "two\n") << cat.err;
  EXPECT_NE(::stat((trees + c1).c_str(), &st), 0) << "the old tree is still there";
  EXPECT_EQ(::stat((trees + c2 + "/deploy/cfg/version").c_str(), &st), 0);

  // An invalid commit leaves web on c2's tree, which stays.
  ASSERT_TRUE(WriteFileAtomic(work_ + "/deploy/Sandboxfile", yaml + "    cpus: many\n").ok());
  Git({"commit", "--quiet", "-am", "invalid"}, work_);
  Git({"push", "--quiet", srv_ + "/app.git", "HEAD:main"}, work_);
  r = sync();
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("deploy/Sandboxfile:8:"));
  cat = Msb({"exec", "app-deploy/web", "--", "cat", "/cfg/version"});
  EXPECT_EQ(cat.out, "two\n") << cat.err;
  EXPECT_EQ(::stat((trees + c2 + "/deploy/cfg/version").c_str(), &st), 0);

  // So does a commit whose image cannot be had: the error names the
  // sandbox's position in the file.
  std::string missing = yaml;
  missing.replace(missing.find(Rootfs()), Rootfs().size(), Home() + "/no-such-rootfs");
  ASSERT_TRUE(WriteFileAtomic(work_ + "/deploy/Sandboxfile", missing).ok());
  Git({"commit", "--quiet", "-am", "missing image"}, work_);
  Git({"push", "--quiet", srv_ + "/app.git", "HEAD:main"}, work_);
  const std::string c4 = Git({"rev-parse", "HEAD"}, work_);
  r = sync();
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("commit " + c4.substr(0, 12) + " not applied: deploy/Sandboxfile:2:3: "
                               "sandboxes.web: image " + Home() + "/no-such-rootfs cannot be pulled"));
  auto ps4 = Ps();
  EXPECT_EQ(ps4["web"]["started_at"], ps2["web"]["started_at"]);
  EXPECT_EQ(ps4["web"]["config_hash"], ps2["web"]["config_hash"]);
  EXPECT_EQ(ps4["web"]["source"]["commit"], c2);
  cat = Msb({"exec", "app-deploy/web", "--", "cat", "/cfg/version"});
  EXPECT_EQ(cat.out, "two\n") << cat.err;
}

TEST_F(SyncTest, TheLoopAppliesAndEndsAtOnceOnSigterm) {
  const std::string c1 = Push("sandboxes:\n" + Sandbox("web", "128M"), "web");
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  // An hour between passes: only the signal can end the wait in time.
  ChildProcess loop = SpawnMsb({"sync", "--repo", url_, "--ref", "main", "--interval", "1h"}, wr.get());
  wr.Reset();
  std::string got;
  ASSERT_TRUE(ReadUntil(rd.get(), &got, "applied commit " + c1.substr(0, 12) + "\n", 120)) << got;
  EXPECT_THAT(got, HasSubstr("created web\n"));
  EXPECT_EQ(Ps()["web"]["state"], "running");
  const std::string project = Ps()["web"]["project"];
  const std::string sync_dir = Status()["directory"].get<std::string>();
  // While the loop runs, the sync is not removed.
  auto rm = Msb({"sync", "rm", "--down", project});
  EXPECT_EQ(rm.code, 1);
  EXPECT_THAT(rm.err, HasSubstr("an msb sync of project " + project + " is running"));
  ASSERT_EQ(::kill(loop.pid(), SIGTERM), 0);
  EXPECT_TRUE(ReadUntil(rd.get(), &got, "stopped\n", 10)) << got;
  ExitStatus st = loop.Wait();
  EXPECT_EQ(st.code, 0) << st.ToString();
  // The sandboxes stay: stopping the sync is not msb down.
  EXPECT_EQ(Ps()["web"]["state"], "running");

  // msb sync rm: not while the project has sandboxes (they run from the
  // synced tree), unless --down takes them down first.
  rm = Msb({"sync", "rm", project});
  EXPECT_EQ(rm.code, 1);
  EXPECT_THAT(rm.err, HasSubstr("still has 1 sandbox(es) running from the synced tree"));
  EXPECT_THAT(rm.err, HasSubstr("msb sync rm --down " + project));
  EXPECT_EQ(Ps()["web"]["state"], "running");
  EXPECT_EQ(Msb({"sync", "rm", "-v", project}).code, 1);  // -v needs --down
  rm = Msb({"sync", "rm", "--down", project});
  EXPECT_EQ(rm.code, 0) << rm.err;
  EXPECT_THAT(rm.out, HasSubstr("removed web\n"));
  EXPECT_THAT(rm.out, HasSubstr("removed the sync of project " + project));
  EXPECT_TRUE(Ps().empty());
  auto status = Msb({"sync", "status", "--json"});
  EXPECT_EQ(status.code, 0) << status.err;
  EXPECT_EQ(nlohmann::json::parse(status.out, nullptr, false), nlohmann::json::array());
  struct stat sst{};
  EXPECT_NE(::stat(sync_dir.substr(0, sync_dir.size() - 5).c_str(), &sst), 0) << sync_dir;
  rm = Msb({"sync", "rm", project});
  EXPECT_EQ(rm.code, 1);
  EXPECT_THAT(rm.err, HasSubstr("no sync applies to project " + project));
}

TEST_F(SyncTest, RefusesHelpersAndOptionsAndNeverPrintsCredentials) {
  auto r = Msb({"sync", "--repo", "ext::sh -c touch% /tmp/msb-sync-ext", "--once"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("--repo"));
  EXPECT_EQ(::access("/tmp/msb-sync-ext", F_OK), -1);
  r = Msb({"sync", "--repo=--upload-pack=touch /tmp/msb-sync-opt", "--once"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("may not start with '-'"));
  r = Msb({"sync", "--repo", url_, "--ref", "main:refs/heads/x", "--once"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("--ref"));
  r = Msb({"sync", "--once"});
  EXPECT_EQ(r.code, 2);

  // Nothing is served at this path: the fetch fails, and neither the
  // message nor the store holds the password.
  const std::string secret_url = "git://user:s3cret@127.0.0.1:" + std::to_string(port_) + "/missing.git";
  r = Msb({"sync", "--repo", secret_url, "--once"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("fetching HEAD of git://127.0.0.1:"));
  EXPECT_THAT(r.err, Not(HasSubstr("s3cret")));
  auto status = Msb({"sync", "status", "--json"});
  EXPECT_THAT(status.out, HasSubstr("missing.git"));
  EXPECT_THAT(status.out, Not(HasSubstr("s3cret")));
  for (const char* file : {"/state.db", "/state.db-wal"}) {
    auto db = ReadFile(Home() + file);
    if (db.ok()) {
      EXPECT_EQ(db->find("s3cret"), std::string::npos) << file;
    }
  }
}

}  // namespace
}  // namespace msb::testing
