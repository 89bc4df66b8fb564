// Disk snapshots on real microVMs: a running sandbox snapshotted while it
// runs (and still writable after), new sandboxes booting snapshot:NAME with
// the source's files and deletions and their own writable layers, a snapshot
// of such a sandbox (two layers), a stopped sandbox copied as it is,
// `snapshot rm` refused while used and waiting for a project's lock, bad input, and agentd's freeze ending by
// itself or when the client that asked for it goes away; and a Sandboxfile
// booting snapshot:NAME through `msb up`.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"
#include "orchestrator/control_client.h"
#include "orchestrator/store.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

class SnapshotTest : public MsbTest {
 protected:
  MsbResult Exec(const std::string& name, const std::string& script, int deadline_s = 180) {
    return Msb({"exec", name, "--", "/bin/sh", "-c", script}, "", deadline_s);
  }
  MsbResult RunOn(const std::string& snapshot, const std::string& script) {
    return Msb({"run", "snapshot:" + snapshot, "--", "/bin/sh", "-c", script});
  }
  json Snapshots() {
    auto r = Msb({"snapshot", "ls", "--json"});
    EXPECT_EQ(r.code, 0) << r.err;
    auto j = json::parse(r.out, nullptr, false);
    return j.is_discarded() ? json() : j;
  }
  void StartDetached(const std::string& name, const std::string& image) {
    auto r = Msb({"run", "-d", "--name", name, image, "sh", "-c", "mkfifo /dev/keep-alive && echo up && exec cat /dev/keep-alive"});
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_EQ(WaitForLogs(name, "up"), "up\n");
  }
  std::string SandboxDir(const std::string& name) {
    auto store = orchestrator::Store::Open(Home() + "/state.db");
    if (!store.ok()) return "";
    auto rec = store->GetSandbox(orchestrator::Store::kRunProject, name);
    return rec.ok() && rec->has_value() ? (*rec)->sandbox_dir : "";
  }
};

TEST_F(SnapshotTest, RunningSandboxSnapshotBootsNewSandboxesOnItsFiles) {
  StartDetached("src", Rootfs());
  ASSERT_EQ(Exec("src", "echo from-source > /data.txt && rm /etc/group").code, 0);

  auto create = Msb({"snapshot", "create", "src", "snap1"});
  ASSERT_EQ(create.code, 0) << create.err;
  EXPECT_THAT(create.out, HasSubstr("snapshot snap1 of _run/src: sha256:"));
  // The source was frozen for the copy and thawed: it writes again.
  auto after = Exec("src", "echo again > /after && cat /after");
  EXPECT_EQ(after.code, 0) << after.err;
  EXPECT_EQ(after.out, "again\n");
  auto console = ReadFile(SandboxDir("src") + "/console.log");
  ASSERT_TRUE(console.ok());
  EXPECT_THAT(*console, HasSubstr("writable layer frozen"));
  EXPECT_THAT(*console, HasSubstr("writable layer thawed on request"));

  // A new sandbox sees the file written and the base file deleted before the
  // snapshot, and nothing written after it.
  auto seen = RunOn("snap1",
                    "cat /data.txt; test -e /etc/group && echo group-present || echo group-gone; "
                    "test -e /after && echo after-present || echo after-absent; cat /etc/passwd | head -c 4");
  EXPECT_EQ(seen.code, 0) << seen.err;
  EXPECT_EQ(seen.out, "from-source\ngroup-gone\nafter-absent\nroot");

  // A sandbox on the snapshot writes to its own layer: the snapshot stays.
  StartDetached("child", "snapshot:snap1");
  ASSERT_EQ(Exec("child", "echo changed > /data.txt && rm /etc/passwd && echo new > /etc/group").code, 0);
  auto again = RunOn("snap1", "cat /data.txt; test -e /etc/passwd && echo passwd-present; test -e /etc/group || echo group-gone");
  EXPECT_EQ(again.out, "from-source\npasswd-present\ngroup-gone\n") << again.err;

  json list = Snapshots();
  ASSERT_TRUE(list.is_array());
  ASSERT_EQ(list.size(), 1u) << list;
  const json& s = list[0];
  EXPECT_EQ(s.value("name", ""), "snap1");
  EXPECT_EQ(s.value("source", ""), "_run/src");
  EXPECT_EQ(s.value("source_image", ""), Rootfs());
  EXPECT_EQ(s.value("digest", "").rfind("sha256:", 0), 0u);
  EXPECT_EQ(s.value("digest", "").size(), 71u);
  EXPECT_EQ(s.value("parent_digest", "").rfind("sha256:", 0), 0u);
  EXPECT_NE(s.value("parent_digest", ""), s.value("digest", ""));
  EXPECT_GT(s.value("size_bytes", 0), 0);
  EXPECT_GT(s.value("created_at", 0), 0);
  EXPECT_EQ(s.value("layers", 0), 1);

  // A snapshot of the child stacks a second layer over the first.
  ASSERT_EQ(Msb({"snapshot", "create", "child", "snap2"}).code, 0);
  auto stacked = RunOn("snap2", "cat /data.txt /etc/group; test -e /etc/passwd || echo passwd-gone");
  EXPECT_EQ(stacked.out, "changed\nnew\npasswd-gone\n") << stacked.err;
  list = Snapshots();
  ASSERT_EQ(list.size(), 2u) << list;
  EXPECT_EQ(list[1].value("name", ""), "snap2");
  EXPECT_EQ(list[1].value("layers", 0), 2);
  EXPECT_EQ(list[1].value("parent_digest", ""), list[0].value("digest", ""));

  // Refused while a sandbox or another snapshot uses it, naming them.
  auto refused = Msb({"snapshot", "rm", "snap1"});
  EXPECT_EQ(refused.code, 1);
  EXPECT_THAT(refused.err, HasSubstr("sandbox _run/child (running)"));
  EXPECT_THAT(refused.err, HasSubstr("snapshot snap2"));
  EXPECT_TRUE(std::filesystem::exists(Home() + "/snapshots/snap1/layer.ext4"));

  ASSERT_EQ(Msb({"rm", "child"}).code, 0);
  refused = Msb({"snapshot", "rm", "snap1"});
  EXPECT_EQ(refused.code, 1);
  EXPECT_THAT(refused.err, HasSubstr("snapshot snap2"));
  auto rm = Msb({"snapshot", "rm", "snap2", "snap1"});
  EXPECT_EQ(rm.code, 0) << rm.err;
  EXPECT_EQ(rm.out, "removed snapshot snap2\nremoved snapshot snap1\n");
  EXPECT_EQ(Snapshots(), json::array());
  EXPECT_FALSE(std::filesystem::exists(Home() + "/snapshots/snap1"));
  EXPECT_FALSE(std::filesystem::exists(Home() + "/snapshots/snap2"));
  EXPECT_EQ(Msb({"rm", "src"}).code, 0);
}

TEST_F(SnapshotTest, StoppedSandboxIsCopiedAsItIsAndBadInputIsRefused) {
  StartDetached("s1", Rootfs());
  ASSERT_EQ(Exec("s1", "echo kept > /kept").code, 0);
  ASSERT_EQ(Msb({"stop", "s1"}).code, 0);
  auto create = Msb({"snapshot", "create", "s1", "stopped"});
  ASSERT_EQ(create.code, 0) << create.err;
  auto seen = RunOn("stopped", "cat /kept");
  EXPECT_EQ(seen.code, 0) << seen.err;
  EXPECT_EQ(seen.out, "kept\n");

  auto dup = Msb({"snapshot", "create", "s1", "stopped"});
  EXPECT_EQ(dup.code, 1);
  EXPECT_THAT(dup.err, HasSubstr("a snapshot named stopped exists"));
  auto bad = Msb({"snapshot", "create", "s1", "Bad/Name"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_THAT(bad.err, HasSubstr("is not valid"));
  auto missing = Msb({"snapshot", "create", "no-such-sandbox", "x"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_THAT(missing.err, HasSubstr("no-such-sandbox"));
  auto no_snap = Msb({"run", "snapshot:no-such", "true"});
  EXPECT_EQ(no_snap.code, 125);
  EXPECT_THAT(no_snap.err, HasSubstr("no snapshot named no-such"));
  EXPECT_EQ(Msb({"snapshot", "rm", "no-such"}).code, 1);

  // A read-only root has no writable layer on disk.
  auto ro = Msb({"run", "-d", "--name", "ro", "--read-only", Rootfs(), "sh", "-c", "mkfifo /dev/keep-alive && echo up && exec cat /dev/keep-alive"});
  ASSERT_EQ(ro.code, 0) << ro.err;
  auto no_layer = Msb({"snapshot", "create", "ro", "x"});
  EXPECT_EQ(no_layer.code, 1);
  EXPECT_THAT(no_layer.err, HasSubstr("no writable layer on disk"));

  // Failures left nothing behind: only the one snapshot, no temporary directory.
  std::vector<std::string> entries;
  for (const auto& e : std::filesystem::directory_iterator(Home() + "/snapshots")) {
    if (e.path().filename() != ".lock") entries.push_back(e.path().filename().string());
  }
  EXPECT_EQ(entries, std::vector<std::string>{"stopped"});
  EXPECT_EQ(Snapshots().size(), 1u);
  // The sandboxes' own local-directory base disk is theirs too.
  auto dry = Msb({"image", "prune", "--dry-run"});
  EXPECT_EQ(dry.code, 0) << dry.err;
  EXPECT_THAT(dry.out, HasSubstr(" 0 base disk(s)"));
  EXPECT_EQ(Msb({"rm", "ro"}).code, 0);
  EXPECT_EQ(Msb({"rm", "s1"}).code, 0);

  // With no sandbox left on the image, the snapshot still holds its base
  // disk: a prune keeps it, and the snapshot still boots.
  auto prune = Msb({"image", "prune"});
  EXPECT_EQ(prune.code, 0) << prune.err;
  auto after_prune = RunOn("stopped", "cat /kept");
  EXPECT_EQ(after_prune.code, 0) << after_prune.err;
  EXPECT_EQ(after_prune.out, "kept\n");

  // A snapshot over a local directory has no image layers to export.
  auto exp = Msb({"snapshot", "export", "stopped", "-o", Home() + "/stopped.tar"});
  EXPECT_EQ(exp.code, 1);
  EXPECT_THAT(exp.err, HasSubstr("sits on a local directory"));
  EXPECT_FALSE(std::filesystem::exists(Home() + "/stopped.tar"));

  // `snapshot rm` takes the projects' locks: while another msb holds one (an
  // `up` in progress), it waits and removes nothing; then it goes ahead.
  ASSERT_TRUE(MakeDirs(Home() + "/locks", 0700).ok());
  UniqueFd held(::open((Home() + "/locks/_run.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(held.valid());
  ASSERT_EQ(::flock(held.get(), LOCK_EX), 0);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd out_r(p[0]), out_w(p[1]);
  ChildProcess rm = SpawnMsb({"snapshot", "rm", "stopped"}, out_w.get());
  out_w.Reset();
  std::string said;
  ASSERT_TRUE(ReadUntil(out_r.get(), &said, "changing project _run; waiting")) << said;
  EXPECT_TRUE(std::filesystem::exists(Home() + "/snapshots/stopped/layer.ext4"));
  EXPECT_EQ(Snapshots().size(), 1u);
  held.Reset();
  ASSERT_TRUE(ReadUntil(out_r.get(), &said, "removed snapshot stopped\n")) << said;
  EXPECT_EQ(rm.Wait().code, 0);
  EXPECT_FALSE(std::filesystem::exists(Home() + "/snapshots/stopped"));
  EXPECT_EQ(Snapshots(), json::array());
}

// agentd thaws by itself when the freeze's time runs out, and the supervisor
// thaws when the client that froze goes away: a write in the guest completes
// in both cases (it would block for as long as the layer stayed frozen).
TEST_F(SnapshotTest, FreezeEndsByItselfAndWhenTheClientGoesAway) {
  StartDetached("fz", Rootfs());
  const std::string socket = SandboxDir("fz") + "/control.sock";
  {
    auto client = orchestrator::ControlClient::Connect(socket);
    ASSERT_TRUE(client.ok()) << client.error().message();
    ASSERT_TRUE(client->Freeze(1500).ok());
    // Completes once agentd's 1.5 s are up.
    auto w = Exec("fz", "echo one > /one && sync && cat /one", 60);
    EXPECT_EQ(w.out, "one\n") << w.err;
    auto thaw = client->Thaw();
    ASSERT_FALSE(thaw.ok());
    EXPECT_THAT(thaw.error().message(), HasSubstr("not frozen"));
  }
  {
    auto client = orchestrator::ControlClient::Connect(socket);
    ASSERT_TRUE(client.ok()) << client.error().message();
    ASSERT_TRUE(client->Freeze(60000).ok());
    auto twice = client->Freeze(60000);
    EXPECT_FALSE(twice.ok());
  }  // disconnects: the supervisor thaws, long before agentd's 60 s
  auto w = Exec("fz", "echo two > /two && sync && cat /two", 40);
  EXPECT_EQ(w.out, "two\n") << w.err;
  auto console = ReadFile(SandboxDir("fz") + "/console.log");
  ASSERT_TRUE(console.ok());
  EXPECT_THAT(*console, HasSubstr("thawed after its timeout"));
  EXPECT_EQ(Msb({"rm", "fz"}).code, 0);
}

class SnapshotProjectTest : public ProjectTest {
 protected:
  std::string ConfigHash(const std::string& project, const std::string& name) {
    auto store = orchestrator::Store::Open(Home() + "/state.db");
    if (!store.ok()) return "";
    auto rec = store->GetSandbox(project, name);
    return rec.ok() && rec->has_value() ? (*rec)->config_hash : "";
  }
};

// image: snapshot:NAME in a Sandboxfile: `msb up` boots it; the config hash
// covers the snapshot's digest, so the same name taken again of other
// content is another configuration. An ephemeral sandbox has nothing to
// snapshot.
TEST_F(SnapshotProjectTest, SandboxfileBootsASnapshotAndItsDigestIsInTheConfigHash) {
  auto src = Msb({"run", "-d", "--name", "src", Rootfs(), "sh", "-c", "echo one > /v; mkfifo /dev/keep-alive && echo up && exec cat /dev/keep-alive"});
  ASSERT_EQ(src.code, 0) << src.err;
  ASSERT_EQ(WaitForLogs("src", "up"), "up\n");
  ASSERT_EQ(Msb({"snapshot", "create", "src", "base"}).code, 0);
  WriteSandboxfile("name: snapdemo\nsandboxes:\n"
                   "  app:\n    image: snapshot:base\n    memory: 128M\n"
                   "    command: [\"/bin/sh\", \"-c\", \"sed s/^/v=/ /v; mkfifo /dev/keep-alive; exec cat /dev/keep-alive\"]\n"
                   "  eph:\n    image: " + Rootfs() + "\n    memory: 128M\n    ephemeral: true\n"
                   "    command: [\"/bin/sh\", \"-c\", \"mkfifo /dev/keep-alive; exec cat /dev/keep-alive\"]\n");
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_EQ(WaitForLogs("app", "v=one"), "v=one\n");
  const std::string first = ConfigHash("snapdemo", "app");
  EXPECT_FALSE(first.empty());
  EXPECT_EQ(InProject({"plan"}).out.find("replace"), std::string::npos);

  auto eph = Msb({"snapshot", "create", "-p", "snapdemo", "eph", "x"});
  EXPECT_EQ(eph.code, 1);
  EXPECT_THAT(eph.err, HasSubstr("no writable layer on disk"));
  EXPECT_THAT(eph.err, HasSubstr("ephemeral"));

  auto refused = Msb({"snapshot", "rm", "base"});
  EXPECT_EQ(refused.code, 1);
  EXPECT_THAT(refused.err, HasSubstr("sandbox snapdemo/app"));

  {
    // The project's Sandboxfile names the snapshot: `snapshot rm` waits for
    // its lock (an `up` in progress) before it looks for users.
    UniqueFd held(::open((Home() + "/locks/snapdemo.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_TRUE(held.valid());
    ASSERT_EQ(::flock(held.get(), LOCK_EX), 0);
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd out_r(p[0]), out_w(p[1]);
    ChildProcess rm = SpawnMsb({"snapshot", "rm", "base"}, out_w.get());
    out_w.Reset();
    std::string said;
    ASSERT_TRUE(ReadUntil(out_r.get(), &said, "changing project snapdemo; waiting")) << said;
    EXPECT_THAT(said, Not(HasSubstr("in use")));
    held.Reset();
    ASSERT_TRUE(ReadUntil(out_r.get(), &said, "is in use by sandbox snapdemo/app")) << said;
    EXPECT_EQ(rm.Wait().code, 1);
  }

  // The same name, other content: another digest, another config hash.
  ASSERT_EQ(InProject({"down"}).code, 0);
  ASSERT_EQ(Msb({"snapshot", "rm", "base"}).code, 0);
  ASSERT_EQ(Msb({"exec", "src", "--", "/bin/sh", "-c", "echo two > /v"}).code, 0);
  ASSERT_EQ(Msb({"snapshot", "create", "src", "base"}).code, 0);
  up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_EQ(WaitForLogs("app", "v=two"), "v=two\n");
  const std::string second = ConfigHash("snapdemo", "app");
  EXPECT_FALSE(second.empty());
  EXPECT_NE(second, first);
  ASSERT_EQ(InProject({"down"}).code, 0);
  EXPECT_EQ(Msb({"rm", "src"}).code, 0);
  EXPECT_EQ(Msb({"snapshot", "rm", "base"}).code, 0);
}

}  // namespace
}  // namespace msb::testing
