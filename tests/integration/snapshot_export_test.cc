// `msb snapshot export` on real microVMs: a sandbox of the multi-layer test
// image (tests/support/make-test-image, pulled from a docker-registry on
// 127.0.0.1) writes files, a hard link, a symlink, a FIFO, an owner and a
// setuid mode, deletes a file of the image and replaces a directory of it;
// a second sandbox on that snapshot deletes and adds more; the two-level
// snapshot is exported. The archive then (a) loads with `msb load` and (b)
// goes through `skopeo copy oci-archive:` into the registry and back with
// `msb pull`, and both boot showing what a sandbox on the snapshot itself
// shows. Also: `-o -`, `rmi` refusing the snapshots' image, and failures
// leaving nothing behind.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"
#include "tests/integration/harness.h"
#include "tests/support/registry_server.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
namespace stdfs = std::filesystem;

// What the checks print, from the image and the two snapshot levels.
constexpr const char* kCheck =
    "cat /data.txt /data-hard; readlink /data-sym; stat -c '%a %u:%g %h' /data.txt; "
    "test -e /srv/index.html && echo index-present || echo index-gone; ls /var/cache/app; "
    "test -e /level1-only && echo l1-present || echo l1-gone; cat /level2; test -p /fifo && echo fifo; "
    "cat /srv/data";
constexpr const char* kExpected = "one\none\ndata.txt\n4751 12:34 2\nindex-gone\nfresh\nl1-gone\ntwo\nfifo\nlinked\n";

class SnapshotExportTest : public MsbTest {
 protected:
  MsbResult Exec(const std::string& name, const std::string& script) {
    return Msb({"exec", name, "--", "/bin/sh", "-c", script}, "", 180);
  }
  void StartDetached(const std::string& name, const std::string& image) {
    auto r = Msb({"run", "-d", "--name", name, image, "sh", "-c",
                  "mkfifo /dev/keep-alive && echo up && exec cat /dev/keep-alive"});
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_EQ(WaitForLogs(name, "up"), "up\n");
  }
  // Names in dir other than those given.
  static std::vector<std::string> Others(const std::string& dir, const std::set<std::string>& known) {
    std::vector<std::string> out;
    for (const auto& e : stdfs::directory_iterator(dir)) {
      std::string n = e.path().filename().string();
      if (!known.count(n)) out.push_back(n);
    }
    return out;
  }
};

TEST_F(SnapshotExportTest, ExportedArchiveLoadsAndPushesAndBootsLikeTheSnapshot) {
  auto layout = CachedTestLayout("v1");
  ASSERT_TRUE(layout.ok()) << layout.error().message();
  auto reg = RegistryServer::Start(RegistryMode::kPlain, Home() + "/registry");
  ASSERT_TRUE(reg.ok()) << reg.error().message();
  ASSERT_TRUE((*reg)->Push(*layout, "v1", "test/app:1").ok());
  const std::string insecure = "--insecure-registry=" + (*reg)->host_port();
  const std::string ref = (*reg)->host_port() + "/test/app:1";
  auto pull = Msb({"pull", "-q", insecure, ref});
  ASSERT_EQ(pull.code, 0) << pull.err;

  StartDetached("src", ref);
  auto w1 = Exec("src",
                 "echo one > /data.txt && ln /data.txt /data-hard && ln -s data.txt /data-sym && "
                 "chown 12:34 /data.txt && chmod 4751 /data.txt && rm /srv/index.html && "
                 "rm -rf /var/cache/app && mkdir /var/cache/app && echo fresh > /var/cache/app/fresh && "
                 "echo l1 > /level1-only && mkfifo /fifo");
  ASSERT_EQ(w1.code, 0) << w1.err;
  ASSERT_EQ(Msb({"snapshot", "create", "src", "snap1"}).code, 0);
  StartDetached("child", "snapshot:snap1");
  ASSERT_EQ(Exec("child", "rm /level1-only && echo two > /level2").code, 0);
  ASSERT_EQ(Msb({"snapshot", "create", "child", "snap2"}).code, 0);
  ASSERT_EQ(Msb({"rm", "child"}).code, 0);
  ASSERT_EQ(Msb({"rm", "src"}).code, 0);

  // The snapshot itself shows this; the exported image must too.
  auto on_snapshot = Msb({"run", "snapshot:snap2", "--", "/bin/sh", "-c", kCheck});
  ASSERT_EQ(on_snapshot.code, 0) << on_snapshot.err;
  ASSERT_EQ(on_snapshot.out, kExpected);

  // The image the snapshots sit on cannot be removed from under them.
  auto rmi = Msb({"rmi", ref});
  EXPECT_EQ(rmi.code, 1);
  EXPECT_THAT(rmi.err, HasSubstr("is the base of snapshot snap1, snap2"));
  EXPECT_THAT(Msb({"images"}).out, HasSubstr("test/app:1"));

  const std::string work = Home() + "/out";
  ASSERT_TRUE(MakeDirs(work).ok());
  const std::string file = work + "/snap.tar";
  auto exp = Msb({"snapshot", "export", "snap2", "-o", file}, "", 600);
  ASSERT_EQ(exp.code, 0) << exp.err;
  EXPECT_THAT(exp.out, HasSubstr("exported snapshot snap2 to " + file + ": sha256:"));
  EXPECT_THAT(exp.out, HasSubstr("(3 image + 2 snapshot layers, "));
  EXPECT_EQ(Others(work, {"snap.tar"}), std::vector<std::string>{});

  auto inspect = RunCapture({"skopeo", "inspect", "--raw", "oci-archive:" + file}, false);
  ASSERT_TRUE(inspect.ok());
  ASSERT_EQ(inspect->status.code, 0) << inspect->output;
  auto manifest = nlohmann::json::parse(inspect->output, nullptr, false);
  ASSERT_TRUE(manifest.is_object()) << inspect->output;
  ASSERT_EQ(manifest["layers"].size(), 5u) << inspect->output;
  EXPECT_EQ(manifest["layers"][4].value("mediaType", ""), "application/vnd.oci.image.layer.v1.tar");

  // (a) msb load, then boot it.
  auto load = Msb({"load", "-t", "example.com/exported/app:v1", file});
  ASSERT_EQ(load.code, 0) << load.err;
  auto loaded = Msb({"run", "example.com/exported/app:v1", "--", "/bin/sh", "-c", kCheck});
  EXPECT_EQ(loaded.code, 0) << loaded.err;
  EXPECT_EQ(loaded.out, kExpected);

  // (b) skopeo into the registry, msb pull, boot it.
  auto copy = RunCapture({"skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
                          "oci-archive:" + file, "docker://" + (*reg)->host_port() + "/test/exported:1"});
  ASSERT_TRUE(copy.ok());
  ASSERT_EQ(copy->status.code, 0) << copy->output;
  const std::string pushed = (*reg)->host_port() + "/test/exported:1";
  auto pull2 = Msb({"pull", "-q", insecure, pushed});
  ASSERT_EQ(pull2.code, 0) << pull2.err;
  auto pulled = Msb({"run", insecure, pushed, "--", "/bin/sh", "-c", kCheck});
  EXPECT_EQ(pulled.code, 0) << pulled.err;
  EXPECT_EQ(pulled.out, kExpected);
  // The image's own config came along: its Env and WorkingDir.
  auto cfg = Msb({"run", insecure, pushed, "--", "/bin/sh", "-c", "echo $MSB_IMAGE; pwd"});
  EXPECT_EQ(cfg.code, 0) << cfg.err;
  EXPECT_EQ(cfg.out, "test\n/srv\n");
}

TEST_F(SnapshotExportTest, StdoutAndFailuresLeaveNothingBehind) {
  auto layout = CachedTestLayout("v1");
  ASSERT_TRUE(layout.ok()) << layout.error().message();
  auto reg = RegistryServer::Start(RegistryMode::kPlain, Home() + "/registry");
  ASSERT_TRUE(reg.ok()) << reg.error().message();
  ASSERT_TRUE((*reg)->Push(*layout, "v1", "test/app:1").ok());
  const std::string ref = (*reg)->host_port() + "/test/app:1";
  ASSERT_EQ(Msb({"pull", "-q", "--insecure-registry=" + (*reg)->host_port(), ref}).code, 0);
  auto run = Msb({"run", "--name", "s", "--keep", ref, "--", "/bin/sh", "-c", "echo kept > /kept"});
  ASSERT_EQ(run.code, 0) << run.err;
  ASSERT_EQ(Msb({"snapshot", "create", "s", "one"}).code, 0);

  const std::string work = Home() + "/out";
  ASSERT_TRUE(MakeDirs(work).ok());
  // -o -: the archive on stdout.
  auto out = Msb({"snapshot", "export", "-q", "one", "-o", "-"}, "", 600);
  ASSERT_EQ(out.code, 0) << out.err;
  EXPECT_EQ(out.err, "");
  ASSERT_TRUE(WriteFileAtomic(work + "/stdout.tar", out.out).ok());
  auto inspect = RunCapture({"skopeo", "inspect", "--raw", "oci-archive:" + work + "/stdout.tar"}, false);
  ASSERT_TRUE(inspect.ok());
  ASSERT_EQ(inspect->status.code, 0) << inspect->output;
  auto manifest = nlohmann::json::parse(inspect->output, nullptr, false);
  ASSERT_TRUE(manifest.is_object());
  EXPECT_EQ(manifest["layers"].size(), 4u);

  auto missing = Msb({"snapshot", "export", "no-such", "-o", work + "/x.tar"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_THAT(missing.err, HasSubstr("no snapshot named no-such"));
  auto no_dir = Msb({"snapshot", "export", "one", "-o", work + "/absent/x.tar"});
  EXPECT_EQ(no_dir.code, 1);
  EXPECT_THAT(no_dir.err, HasSubstr(work + "/absent"));
  auto is_dir = Msb({"snapshot", "export", "one", "-o", work});
  EXPECT_EQ(is_dir.code, 1);
  EXPECT_THAT(is_dir.err, HasSubstr("is a directory"));
  // A layer the builder VM cannot read as a file system fails the export
  // (the guest's error is relayed) and leaves no work or temporary file.
  const std::string layer = Home() + "/snapshots/one/layer.ext4";
  ASSERT_EQ(::chmod(layer.c_str(), 0644), 0);
  {
    UniqueFd fd(::open(layer.c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(fd.valid());
    const std::string junk(4096, 'x');  // over the ext4 superblock
    ASSERT_EQ(::pwrite(fd.get(), junk.data(), junk.size(), 0), static_cast<ssize_t>(junk.size()));
  }
  auto broken = Msb({"snapshot", "export", "one", "-o", work + "/broken.tar"}, "", 600);
  EXPECT_EQ(broken.code, 1);
  EXPECT_THAT(broken.err, HasSubstr("cannot export " + layer)) << broken.err;
  EXPECT_EQ(Others(work, {"stdout.tar"}), std::vector<std::string>{});
  EXPECT_EQ(Msb({"rm", "s"}).code, 0);
  EXPECT_EQ(Msb({"snapshot", "rm", "one"}).code, 0);
}

}  // namespace
}  // namespace msb::testing
