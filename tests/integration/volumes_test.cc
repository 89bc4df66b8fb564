// Volumes and mounts of `msb up` on real microVMs: bind mounts through
// virtio-fs (read-write, and read-only enforced on the host even after the
// guest remounts read-write), named volumes that survive replace and down,
// tmpfs with its size, targets behind hostile symlinks, the most mounts a
// sandbox may have, and no virtiofsd outliving its sandbox.
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/child.h"
#include "common/io.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class VolumesTest : public ProjectTest {
 protected:
  // One sandbox "web" with `extra` under it, and `tail` after the sandboxes.
  std::string Web(const std::string& extra, const std::string& image = "") {
    return "  web:\n    image: " + (image.empty() ? Rootfs() : image) +
           "\n    memory: 128M\n    command: [\"/bin/sh\", \"-c\", \"" + std::string(kKeepAlive) + "\"]\n" + extra;
  }
  MsbResult Exec(const std::string& script) { return Msb({"exec", "web", "--", "/bin/sh", "-c", script}); }
  std::string HostFile(const std::string& path) {
    auto r = ReadFile(path);
    return r.ok() ? *r : "(missing: " + r.error().message() + ")";
  }
  // Pids of the virtiofsd processes sharing a directory below this test's home.
  std::vector<int> Virtiofsds() {
    std::vector<int> out;
    auto mine = ProcessesMatching(Home());
    for (int pid : ProcessesMatching("virtiofsd")) {
      if (std::find(mine.begin(), mine.end(), pid) != mine.end()) out.push_back(pid);
    }
    return out;
  }
  bool WaitNoVirtiofsd(int deadline_s) {
    // Processes we did not start cannot be waited for: poll /proc against a deadline.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(deadline_s);
    while (!Virtiofsds().empty() && std::chrono::steady_clock::now() < deadline) {
      pollfd none{};
      ::poll(&none, 0, 50);
    }
    return Virtiofsds().empty();
  }
};

TEST_F(VolumesTest, ReadOnlyBindMountIsEnforcedOnTheHostEvenAfterAGuestRemount) {
  ASSERT_TRUE(MakeDirs(project_ + "/cfg").ok());
  ASSERT_TRUE(WriteFileAtomic(project_ + "/cfg/file", "original\n").ok());
  WriteSandboxfile("name: ro\nsandboxes:\n" + Web("    volumes:\n      - ./cfg:/etc/app:ro\n"));
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_EQ(Exec("cat /etc/app/file").out, "original\n");
  EXPECT_EQ(Exec("grep ' /etc/app ' /proc/mounts").out, "msbfs0 /etc/app virtiofs ro,relatime 0 0\n");

  // Guest root lifts its own read-only flag; the host still refuses the write.
  auto w = Exec("mount -o remount,rw /etc/app && grep ' /etc/app ' /proc/mounts && "
                "echo x > /etc/app/file");
  EXPECT_THAT(w.out, HasSubstr("msbfs0 /etc/app virtiofs rw,"));
  EXPECT_NE(w.code, 0);
  EXPECT_THAT(w.err, HasSubstr("Read-only file system"));
  EXPECT_EQ(HostFile(project_ + "/cfg/file"), "original\n");
  EXPECT_NE(Exec("touch /etc/app/new").code, 0);
  EXPECT_FALSE(std::filesystem::exists(project_ + "/cfg/new"));
  // The host's own view stays writable: the read-only bind is the daemon's.
  EXPECT_TRUE(WriteFileAtomic(project_ + "/cfg/file", "host edit\n").ok());
  EXPECT_EQ(HostFile(project_ + "/cfg/file"), "host edit\n");
  EXPECT_EQ(InProject({"down"}).code, 0);
}

TEST_F(VolumesTest, ReadWriteBindMountCarriesWritesBothWays) {
  // A comma in the host path exercises virtiofsd's option escaping.
  std::string src = project_ + "/my,src";
  ASSERT_TRUE(MakeDirs(src).ok());
  ASSERT_TRUE(WriteFileAtomic(src + "/from-host", "hello guest\n").ok());
  WriteSandboxfile("name: rw\nsandboxes:\n" + Web("    volumes:\n      - ./my,src:/app/src\n"));
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_EQ(Exec("cat /app/src/from-host").out, "hello guest\n");
  auto w = Exec("echo hello host > /app/src/from-guest && mkdir /app/src/dir");
  EXPECT_EQ(w.code, 0) << w.err;
  EXPECT_EQ(HostFile(src + "/from-guest"), "hello host\n");
  EXPECT_TRUE(std::filesystem::is_directory(src + "/dir"));
  // Guest root cannot make device nodes on the host (virtiofsd without CAP_MKNOD).
  EXPECT_NE(Exec("mknod /app/src/disk b 8 0").code, 0);
  EXPECT_FALSE(std::filesystem::exists(src + "/disk"));
  EXPECT_EQ(InProject({"down"}).code, 0);
}

// debugfs's view of one file in an ext4 image: the volume's real contents on
// the host, read without mounting it.
std::string DebugfsCat(const std::string& image, const std::string& path) {
  for (const char* p : {"/usr/sbin/debugfs", "/sbin/debugfs"}) {
    if (::access(p, X_OK) != 0) continue;
    auto r = RunCapture({p, "-R", "cat " + path, image}, false);
    return r.ok() ? r->output : "";
  }
  return "(no debugfs)";
}

TEST_F(VolumesTest, NamedVolumeSurvivesReplaceAndDownUntilDownVolumes) {
  auto file = [&](const std::string& cpus) {
    WriteSandboxfile("name: vol\nsandboxes:\n" + Web("    cpus: " + cpus +
                                                     "\n    volumes:\n      - data:/var/lib/data\n") +
                     "volumes:\n  data: { size: 64M }\n");
  };
  file("1");
  ASSERT_EQ(InProject({"up"}).code, 0);
  ASSERT_EQ(Exec("echo kept > /var/lib/data/f").code, 0);
  std::string disk = Home() + "/volumes/vol/data.ext4";
  struct stat st;
  ASSERT_EQ(::stat(disk.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 64 << 20);
  auto ls = Msb({"volume", "ls"});
  EXPECT_EQ(ls.out, "PROJECT  NAME  SIZE  USED BY\nvol      data  64M   web (running)\n");
  // In use: refused, and the disk is still there.
  auto rm = Msb({"volume", "rm", "data"});
  EXPECT_EQ(rm.code, 1);
  EXPECT_THAT(rm.err, HasSubstr("volume data is in use by web (running)"));
  ASSERT_EQ(::stat(disk.c_str(), &st), 0);

  // A change that replaces the sandbox keeps the volume.
  file("2");
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_THAT(up.out, HasSubstr("replaced web"));
  EXPECT_EQ(Msb({"exec", "web", "--", "nproc"}).out, "2\n");
  EXPECT_EQ(Exec("cat /var/lib/data/f").out, "kept\n");

  // down keeps it too: the file is on the disk on the host.
  auto down = InProject({"down"});
  EXPECT_EQ(down.out, "removed web\n");
  EXPECT_EQ(DebugfsCat(disk, "/f"), "kept\n");
  ASSERT_EQ(InProject({"up"}).code, 0);
  EXPECT_EQ(Exec("cat /var/lib/data/f").out, "kept\n");

  // down --volumes removes it; the next up starts from an empty volume.
  down = InProject({"down", "--volumes"});
  EXPECT_EQ(down.out, "removed web\nremoved volume data\n");
  EXPECT_NE(::stat(disk.c_str(), &st), 0);
  EXPECT_EQ(Msb({"volume", "ls"}).out, "PROJECT  NAME  SIZE  USED BY\n");
  ASSERT_EQ(InProject({"up"}).code, 0);
  EXPECT_NE(Exec("cat /var/lib/data/f").code, 0);
  // Once no sandbox uses it, msb volume rm removes it.
  EXPECT_EQ(InProject({"down"}).code, 0);
  rm = Msb({"volume", "rm", "data"});
  EXPECT_EQ(rm.code, 0) << rm.err;
  EXPECT_EQ(rm.out, "removed volume data\n");
  EXPECT_NE(::stat(disk.c_str(), &st), 0);
  EXPECT_EQ(Msb({"volume", "rm", "data"}).code, 1);
}

TEST_F(VolumesTest, DownOfSomeSandboxesKeepsTheVolumesOthersUse) {
  WriteSandboxfile("name: part\nsandboxes:\n" + Web("    volumes:\n      - data:/data\n") +
                   "  idle:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    command: [\"/bin/sh\", \"-c\", \"" + std::string(kKeepAlive) + "\"]\n"
                   "volumes:\n  data: { size: 16M }\n");
  ASSERT_EQ(InProject({"up"}).code, 0);
  auto down = InProject({"down", "idle", "--volumes"});
  EXPECT_EQ(down.out, "removed idle\nkept volume data: web still uses it\n");
  struct stat st;
  EXPECT_EQ(::stat((Home() + "/volumes/part/data.ext4").c_str(), &st), 0);
  EXPECT_EQ(Exec("touch /data/ok").code, 0);
  EXPECT_EQ(InProject({"down", "--volumes"}).out, "removed web\nremoved volume data\n");
}

TEST_F(VolumesTest, ReadOnlyVolumeIsReadOnlyInTheGuest) {
  WriteSandboxfile("name: rov\nsandboxes:\n" +
                   Web("    volumes:\n      - seed:/seed:ro\n") + "volumes:\n  seed: { size: 16M }\n");
  ASSERT_EQ(InProject({"up"}).code, 0);
  EXPECT_THAT(Exec("grep ' /seed ' /proc/mounts").out, HasSubstr(" /seed ext4 ro,"));
  // The disk is read-only in QEMU too: a remount cannot make it writable.
  auto w = Exec("mount -o remount,rw /seed");
  EXPECT_NE(w.code, 0);
  EXPECT_EQ(InProject({"down", "--volumes"}).code, 0);
}

TEST_F(VolumesTest, TmpfsHasItsSizeAndMode) {
  WriteSandboxfile("name: tmp\nsandboxes:\n" + Web("    tmpfs:\n      - /scratch:size=8M,mode=700\n"));
  ASSERT_EQ(InProject({"up"}).code, 0);
  EXPECT_EQ(Exec("grep ' /scratch ' /proc/mounts").out,
            "tmpfs /scratch tmpfs rw,nosuid,nodev,relatime,size=8192k,mode=700 0 0\n");
  EXPECT_EQ(Exec("df -k /scratch | tail -1 | awk '{print $2}'").out, "8192\n");
  EXPECT_EQ(Exec("stat -c %a /scratch").out, "700\n");
  // 9 MiB do not fit.
  auto full = Exec("dd if=/dev/zero of=/scratch/big bs=1M count=9");
  EXPECT_NE(full.code, 0);
  EXPECT_THAT(full.err, HasSubstr("No space left on device"));
  EXPECT_EQ(InProject({"down"}).code, 0);
}

TEST_F(VolumesTest, TargetsBehindSymlinksInTheImageStayInsideTheRoot) {
  // An image whose symlinks point out of the root: /up climbs, /slash is "/".
  std::string image = Home() + "/evil-rootfs";
  auto mk = RunCapture({SourceDir() + "/scripts/make-rootfs", image});
  ASSERT_TRUE(mk.ok() && mk->status.code == 0);
  std::filesystem::create_symlink("../../../../..", image + "/up");
  std::filesystem::create_symlink("/", image + "/slash");
  ASSERT_TRUE(MakeDirs(project_ + "/src").ok());
  ASSERT_TRUE(WriteFileAtomic(project_ + "/src/marker", "shared\n").ok());
  WriteSandboxfile("name: evil\nsandboxes:\n" +
                   Web("    volumes:\n      - ./src:/slash/up/shared\n"
                       "    tmpfs:\n      - /up/run/escaped:size=1M\n",
                       image));
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  // Both landed in the guest's root, where the guest can see them.
  EXPECT_EQ(Exec("cat /shared/marker").out, "shared\n");
  EXPECT_THAT(Exec("cat /proc/mounts").out, HasSubstr("tmpfs /run/escaped tmpfs"));
  EXPECT_EQ(InProject({"down"}).code, 0);
}

TEST_F(VolumesTest, TheMostMountsASandboxMayHaveAllWork) {
  // 19 = 24 virtio-mmio transports - 5 for msb's own devices.
  std::string mounts, vols;
  for (int i = 0; i < 10; ++i) {
    mounts += "      - v" + std::to_string(i) + ":/vol/" + std::to_string(i) + "\n";
    vols += "  v" + std::to_string(i) + ": { size: 16M }\n";
  }
  for (int i = 0; i < 9; ++i) {
    std::string d = project_ + "/share" + std::to_string(i);
    ASSERT_TRUE(MakeDirs(d).ok());
    ASSERT_TRUE(WriteFileAtomic(d + "/n", std::to_string(i) + "\n").ok());
    mounts += "      - ./share" + std::to_string(i) + ":/share/" + std::to_string(i) + "\n";
  }
  WriteSandboxfile("name: many\nsandboxes:\n" + Web("    volumes:\n" + mounts) + "volumes:\n" + vols);
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_EQ(Exec("grep -c ' virtiofs ' /proc/mounts").out, "9\n");
  EXPECT_EQ(Exec("grep -c ' /vol/[0-9]* ext4 ' /proc/mounts").out, "10\n");
  EXPECT_EQ(Exec("cat /share/8/n").out, "8\n");
  EXPECT_EQ(InProject({"down", "--volumes"}).code, 0);

  // One more is refused when the file is read, before anything boots.
  WriteSandboxfile("name: many\nsandboxes:\n" +
                   Web("    volumes:\n" + mounts + "      - v9:/vol/extra\n") + "volumes:\n" + vols);
  auto more = InProject({"up"});
  EXPECT_EQ(more.code, 1);
  EXPECT_THAT(more.err, HasSubstr("20 volumes and bind mounts exceed the microVM limit of 19"));
}

TEST_F(VolumesTest, ARestartedVmGetsNewVirtiofsDaemons) {
  // Each virtiofsd serves one QEMU connection: a restart needs new ones.
  ASSERT_TRUE(MakeDirs(project_ + "/out").ok());
  WriteSandboxfile("name: again\nsandboxes:\n  web:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    restart: on-failure:1\n"
                   "    command: [\"/bin/sh\", \"-c\", \"echo run >> /out/log; exit 1\"]\n"
                   "    volumes:\n      - ./out:/out\n");
  ASSERT_EQ(InProject({"up"}).code, 0);
  // Until the sandbox has exited for good (its restart spent): only then is
  // there no run to come, so the log holds every run there will be.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool ended = false;
  while (!ended && std::chrono::steady_clock::now() < deadline) {
    auto j = nlohmann::json::parse(Msb({"ps", "--json"}).out, nullptr, false);
    ended = j.is_array() && j.size() == 1u && j[0].value("state", "") == "exited" && j[0].value("restarts", -1) == 1;
    if (!ended) ::poll(nullptr, 0, 100);
  }
  ASSERT_TRUE(ended) << Msb({"ps", "--json"}).out;
  EXPECT_EQ(HostFile(project_ + "/out/log"), "run\nrun\n");
  EXPECT_EQ(InProject({"down"}).code, 0);
  EXPECT_TRUE(WaitNoVirtiofsd(20));
}

TEST_F(VolumesTest, AShareThatCannotBeServedFailsTheBootSayingWhy) {
  std::string fake = Home() + "/fake-virtiofsd";
  ASSERT_TRUE(WriteFileAtomic(fake, "#!/bin/sh\necho 'fake virtiofsd gives up' >&2\nexit 1\n", 0755).ok());
  env_["MSB_VIRTIOFSD"] = fake;
  ASSERT_TRUE(MakeDirs(project_ + "/src").ok());
  WriteSandboxfile("name: broken\nsandboxes:\n" + Web("    volumes:\n      - ./src:/src\n"));
  auto up = InProject({"up"});
  EXPECT_EQ(up.code, 1);
  EXPECT_THAT(up.err, HasSubstr("fs0.sock"));
  EXPECT_THAT(up.err, HasSubstr("virtiofsd said:\nfake virtiofsd gives up"));
  EXPECT_EQ(InProject({"down"}).code, 0);
}

TEST_F(VolumesTest, NoVirtiofsdOutlivesItsSandbox) {
  ASSERT_TRUE(MakeDirs(project_ + "/a").ok());
  ASSERT_TRUE(MakeDirs(project_ + "/b").ok());
  WriteSandboxfile("name: orphans\nsandboxes:\n" +
                   Web("    volumes:\n      - ./a:/a\n      - ./b:/b:ro\n"));
  ASSERT_EQ(InProject({"up"}).code, 0);
  EXPECT_FALSE(Virtiofsds().empty());
  // A clean down ends them.
  EXPECT_EQ(InProject({"down"}).code, 0);
  EXPECT_TRUE(WaitNoVirtiofsd(20)) << Virtiofsds().size();

  // kill -9 of the supervisor: QEMU and every virtiofsd go with it.
  ASSERT_EQ(InProject({"up"}).code, 0);
  ASSERT_FALSE(Virtiofsds().empty());
  auto sups = MySupervisors();
  ASSERT_EQ(sups.size(), 1u);
  ASSERT_EQ(::kill(sups[0], SIGKILL), 0);
  EXPECT_TRUE(WaitNoVirtiofsd(20)) << Virtiofsds().size();
  EXPECT_TRUE(WaitNoProcess(Home(), 20));  // QEMU too
}

}  // namespace
}  // namespace msb::testing
