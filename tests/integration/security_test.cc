// The `security:` controls and `msb run`'s hardening flags on real microVMs:
// what the guest's processes (the workload, an exec session, a health check)
// read in their own /proc/<pid>/status, and what writing to / gives them.
// Every hardened check has an unhardened sandbox beside it as the control.
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/io.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// CAP_KILL (5) and CAP_NET_BIND_SERVICE (10).
constexpr const char* kKeptCaps = "0000000000000420";

// "Key:\tvalue" of a /proc/<pid>/status text; "" when absent.
class SecurityTest : public ProjectTest {
 protected:
  // The sandbox directory whose spec.json names `name`.
  std::string SandboxDir(const std::string& name) {
    for (const auto& e : std::filesystem::directory_iterator(Home() + "/sandboxes")) {
      auto text = ReadFile(e.path().string() + "/spec.json");
      if (!text.ok()) continue;
      auto j = nlohmann::json::parse(*text, nullptr, false);
      if (j.is_object() && j.value("name", "") == name) return e.path().string();
    }
    return "";
  }
};

TEST_F(SecurityTest, HardenedSandboxFromTheGuestsSideWithAPlainOneAsControl) {
  // The workload and the health check each record their own status on the
  // tmpfs; the health check passes only once the workload's record exists, so
  // `up --wait` returning means both were written. ($$$$ is the shell's $$.)
  WriteSandboxfile(
      "name: hard\nsandboxes:\n"
      "  hard:\n    image: " + Rootfs() + "\n    memory: 128M\n"
      "    tmpfs: [/scratch]\n"
      "    security: {read_only_root: true, no_new_privileges: true, cap_drop: [ALL],"
      " cap_add: [KILL, CAP_NET_BIND_SERVICE]}\n"
      "    command: [\"/bin/sh\", \"-c\", \"cat /proc/$$$$/status > /scratch/workload; " + std::string(kKeepAlive) + "\"]\n"
      "    healthcheck: {command: [\"/bin/sh\", \"-c\", \"test -s /scratch/workload &&"
      " cat /proc/$$$$/status > /scratch/health\"], interval: 1s, retries: 30}\n"
      "  plain:\n    image: " + Rootfs() + "\n    memory: 128M\n"
      "    command: [\"/bin/sh\", \"-c\", \"" + std::string(kKeepAlive) + "\"]\n");
  auto up = InProject({"up", "--wait"});
  ASSERT_EQ(up.code, 0) << up.out << up.err;

  // No writable layer on the host for the read-only root; the control has one.
  std::string hard_dir = SandboxDir("hard"), plain_dir = SandboxDir("plain");
  ASSERT_FALSE(hard_dir.empty());
  ASSERT_FALSE(plain_dir.empty());
  EXPECT_FALSE(std::filesystem::exists(hard_dir + "/upper.ext4"));
  EXPECT_TRUE(std::filesystem::exists(plain_dir + "/upper.ext4"));

  // Writing to / fails with EROFS; the tmpfs is writable.
  auto root_write = Msb({"exec", "hard", "--", "/bin/sh", "-c", "echo x > /probe"});
  EXPECT_NE(root_write.code, 0);
  EXPECT_THAT(root_write.err, HasSubstr("Read-only file system"));
  auto etc_write = Msb({"exec", "hard", "--", "/bin/sh", "-c", "mkdir /etc/new-dir"});
  EXPECT_NE(etc_write.code, 0);
  EXPECT_THAT(etc_write.err, HasSubstr("Read-only file system"));
  auto tmpfs_write = Msb({"exec", "hard", "--", "/bin/sh", "-c", "echo ok > /scratch/probe && cat /scratch/probe"});
  EXPECT_EQ(tmpfs_write.code, 0) << tmpfs_write.err;
  EXPECT_EQ(tmpfs_write.out, "ok\n");
  // And the remount cannot be undone: CAP_SYS_ADMIN is gone.
  auto remount = Msb({"exec", "hard", "--", "/bin/sh", "-c", "mount -o remount,rw / && echo x > /probe"});
  EXPECT_NE(remount.code, 0);
  auto plain_write = Msb({"exec", "plain", "--", "/bin/sh", "-c", "echo x > /probe && cat /probe"});
  EXPECT_EQ(plain_write.code, 0) << plain_write.err;
  EXPECT_EQ(plain_write.out, "x\n");

  // The workload, an exec session and a health check, each its own status.
  auto workload = Msb({"exec", "hard", "--", "cat", "/scratch/workload"});
  auto health = Msb({"exec", "hard", "--", "cat", "/scratch/health"});
  auto exec = Msb({"exec", "hard", "--", "/bin/sh", "-c", "cat /proc/$$/status"});
  for (const auto& [who, r] : {std::pair{"workload", &workload}, std::pair{"health check", &health},
                               std::pair{"exec session", &exec}}) {
    ASSERT_EQ(r->code, 0) << who << ": " << r->err;
    EXPECT_THAT(r->out, HasSubstr("Name:\t")) << who;
    EXPECT_EQ(StatusFields(r->out)["NoNewPrivs"], "1") << who << "\n" << r->out;
    EXPECT_EQ(StatusFields(r->out)["CapEff"], kKeptCaps) << who << "\n" << r->out;
    EXPECT_EQ(StatusFields(r->out)["CapPrm"], kKeptCaps) << who << "\n" << r->out;
    EXPECT_EQ(StatusFields(r->out)["CapBnd"], kKeptCaps) << who << "\n" << r->out;
    EXPECT_EQ(StatusFields(r->out)["CapInh"], "0000000000000000") << who << "\n" << r->out;
  }
  // The control: root with every capability of the guest kernel (6.1: 41).
  auto plain = Msb({"exec", "plain", "--", "/bin/sh", "-c", "cat /proc/$$/status"});
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_EQ(StatusFields(plain.out)["NoNewPrivs"], "0") << plain.out;
  EXPECT_EQ(StatusFields(plain.out)["CapEff"], "000001ffffffffff") << plain.out;
  EXPECT_EQ(StatusFields(plain.out)["CapBnd"], "000001ffffffffff") << plain.out;

  // The hash covers the section: a changed cap_add replaces the sandbox.
  std::string file = ReadFile(project_ + "/Sandboxfile").value();
  std::string changed = file;
  changed.replace(changed.find("cap_add: [KILL, CAP_NET_BIND_SERVICE]"),
                  std::string("cap_add: [KILL, CAP_NET_BIND_SERVICE]").size(), "cap_add: [KILL]");
  WriteSandboxfile(changed);
  auto plan = InProject({"plan"});
  EXPECT_THAT(plan.out, HasSubstr("-/+ replace hard (security.cap_add [CAP_KILL, CAP_NET_BIND_SERVICE] -> [CAP_KILL])"));
  EXPECT_THAT(plan.out, HasSubstr("= plain"));
  EXPECT_EQ(InProject({"down"}).code, 0);
}

TEST_F(SecurityTest, StrictLevelExpandsInConfigAndExplicitFieldsWin) {
  WriteSandboxfile("sandboxes:\n"
                   "  a:\n    image: " + Rootfs() + "\n    security: {level: strict}\n"
                   "  b:\n    image: " + Rootfs() + "\n"
                   "    security: {level: strict, read_only_root: false, cap_add: [net_raw]}\n"
                   "    network: {policy: public}\n");
  auto config = InProject({"config", "--json"});
  ASSERT_EQ(config.code, 0) << config.err;
  auto j = nlohmann::json::parse(config.out);
  EXPECT_EQ(j["sandboxes"]["a"]["security"].dump(),
            R"({"cap_add":[],"cap_drop":["ALL"],"no_new_privileges":true,"read_only_root":true})");
  EXPECT_EQ(j["sandboxes"]["a"]["network"]["policy"], "none");
  EXPECT_EQ(j["sandboxes"]["b"]["security"].dump(),
            R"({"cap_add":["CAP_NET_RAW"],"cap_drop":["ALL"],"no_new_privileges":true,"read_only_root":false})");
  EXPECT_EQ(j["sandboxes"]["b"]["network"]["policy"], "public");
  auto yaml = InProject({"config"});
  EXPECT_THAT(yaml.out, HasSubstr("read_only_root: true"));
  EXPECT_THAT(yaml.out, Not(HasSubstr("level")));

  WriteSandboxfile("sandboxes:\n  a:\n    image: " + Rootfs() + "\n    security: {cap_drop: [CAP_NET_RAWW]}\n");
  auto bad = InProject({"validate"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_THAT(bad.out + bad.err, HasSubstr(":4:"));
  EXPECT_THAT(bad.out + bad.err, HasSubstr("sandboxes.a.security.cap_drop[0]: unknown capability \"CAP_NET_RAWW\""));
  EXPECT_THAT(bad.out + bad.err, HasSubstr("did you mean \"CAP_NET_RAW\"?"));
}

TEST_F(SecurityTest, RunFlagsHardenTheCommand) {
  auto r = Msb({"run", "--read-only", "--security-opt", "no-new-privileges", "--cap-drop", "ALL",
                "--cap-add", "CAP_KILL", "--cap-add", "net_bind_service", Rootfs(), "--", "/bin/sh", "-c",
                "cat /proc/$$/status; echo x > /probe || echo root-write-failed"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(StatusFields(r.out)["NoNewPrivs"], "1") << r.out;
  EXPECT_EQ(StatusFields(r.out)["CapEff"], kKeptCaps) << r.out;
  EXPECT_EQ(StatusFields(r.out)["CapBnd"], kKeptCaps) << r.out;
  EXPECT_THAT(r.out, HasSubstr("root-write-failed"));
  EXPECT_THAT(r.err, HasSubstr("Read-only file system"));

  // Without the flags, the same command: the control.
  auto plain = Msb({"run", Rootfs(), "--", "/bin/sh", "-c",
                    "cat /proc/$$/status; echo x > /probe && echo root-write-ok"});
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_EQ(StatusFields(plain.out)["NoNewPrivs"], "0") << plain.out;
  EXPECT_EQ(StatusFields(plain.out)["CapBnd"], "000001ffffffffff") << plain.out;
  EXPECT_THAT(plain.out, HasSubstr("root-write-ok"));

  // Bad names fail before anything boots.
  auto bad = Msb({"run", "--cap-drop", "CAP_BOGUS", Rootfs(), "--", "true"});
  EXPECT_EQ(bad.code, 125);
  EXPECT_THAT(bad.err, HasSubstr("--cap-drop unknown capability \"CAP_BOGUS\""));
  auto opt = Msb({"run", "--security-opt", "seccomp=unconfined", Rootfs(), "--", "true"});
  EXPECT_EQ(opt.code, 125);
  EXPECT_THAT(opt.err, HasSubstr("--security-opt seccomp=unconfined"));
  EXPECT_TRUE(WaitNoProcess(Home(), 10));
}

}  // namespace
}  // namespace msb::testing
