// Registry and OCI layout images end to end: the test image (tests/support/
// make-test-image) pushed with skopeo to a real docker-registry on 127.0.0.1,
// pulled, unpacked in a builder VM and booted by `msb run` and `msb up`.
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include "common/io.h"
#include "common/sha256.h"
#include "tests/integration/harness.h"
#include "tests/support/registry_server.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class ImageRunTest : public MsbTest {
 protected:
  void SetUp() override {
    MsbTest::SetUp();
    auto layout = CachedTestLayout("v1");
    ASSERT_TRUE(layout.ok()) << layout.error().message();
    layout_ = *layout;
  }

  // Starts a registry in `mode` holding the test image as test/app:1.
  std::unique_ptr<RegistryServer> StartRegistry(RegistryMode mode) {
    auto reg = RegistryServer::Start(mode, Home() + "/registry-" + std::to_string(static_cast<int>(mode)));
    EXPECT_TRUE(reg.ok()) << reg.error().message();
    if (!reg.ok()) return nullptr;
    auto pushed = (*reg)->Push(layout_, "v1", "test/app:1");
    EXPECT_TRUE(pushed.ok()) << pushed.error().message();
    return std::move(*reg);
  }

  std::string layout_;
};

TEST_F(ImageRunTest, TlsBasicAuthPullRunsTheImagesCommandWithItsLayersApplied) {
  auto reg = StartRegistry(RegistryMode::kTlsBasic);
  ASSERT_NE(reg, nullptr);
  std::string ref = reg->host_port() + "/test/app:1";
  std::string ca = "--registry-ca=" + reg->host_port() + "=" + reg->ca_file();

  // Without credentials the registry refuses, and says how to fix it.
  auto refused = Msb({"pull", "-q", ca, ref});
  EXPECT_NE(refused.code, 0);
  EXPECT_THAT(refused.err, HasSubstr("msb login"));

  auto login = Msb({"login", reg->host_port(), "--username", reg->username(), "--password-stdin", ca},
                   reg->password() + "\n");
  ASSERT_EQ(login.code, 0) << login.err;

  // No command: the image's entrypoint + cmd, in its working directory.
  ASSERT_EQ(reg->BlobFetches(), 0);
  auto run = Msb({"run", ca, ref});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("image-cmd-ran"));
  EXPECT_THAT(run.out, HasSubstr("hello from an OCI image"));
  EXPECT_THAT(run.err, HasSubstr("pinned to sha256:"));

  // The config and the three layers, each fetched once.
  const int fetched = reg->BlobFetches();
  EXPECT_EQ(fetched, 4);

  // A command: entrypoint (env) + it; the layers as the OCI spec applies them.
  auto probe = Msb({"run", "-q", ca, ref, "--", "sh", "-c",
                    "pwd; echo env=$MSB_IMAGE; ls /var/cache/app; ls -A /tmp | wc -l; "
                    "hostcat /srv/data-link; stat -c %h /srv/data; readlink /srv/index-link"});
  ASSERT_EQ(probe.code, 0) << probe.err;
  EXPECT_EQ(probe.out,
            "/srv\n"
            "env=test\n"
            "new\n"          // the opaque directory hid old1 and old2
            "0\n"            // the whiteout removed /tmp/gone
            "linked\n"       // a dynamically linked host binary and its libraries
            "2\n"            // the hard link
            "/srv/index.html\n");

  auto images = Msb({"images"});
  ASSERT_EQ(images.code, 0) << images.err;
  EXPECT_THAT(images.out, HasSubstr(ref));
  // Blobs were fetched once: the second run used the pinned digest and the
  // blobs in the store, and asked the registry for none.
  EXPECT_EQ(reg->BlobFetches(), fetched);
}

TEST_F(ImageRunTest, TokenAuthTagIsPinnedUntilPullRefreshesIt) {
  auto reg = StartRegistry(RegistryMode::kTlsToken);
  ASSERT_NE(reg, nullptr);
  std::string ref = reg->host_port() + "/test/app:1";
  std::string ca = "--registry-ca=" + reg->host_port() + "=" + reg->ca_file();
  // The test's token server speaks plain HTTP.
  std::string token = "--insecure-registry=" + reg->token_host_port();
  auto login = Msb({"login", reg->host_port(), "--username", reg->username(), "--password-stdin", ca,
                    token},
                   reg->password() + "\n");
  ASSERT_EQ(login.code, 0) << login.err;
  auto first = Msb({"pull", "-q", "--no-unpack", ca, token, ref});
  ASSERT_EQ(first.code, 0) << first.err;
  EXPECT_GT(reg->token_requests(), 0);

  // The tag moves to another image: the same layers, another config.
  std::string other = Home() + "/other-layout";
  ASSERT_TRUE(MakeTestLayout(other, "v2").ok());
  auto cfg = RunCapture({"umoci", "config", "--image", other + ":v2", "--config.env", "MSB_IMAGE=v2"});
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  ASSERT_EQ(cfg->status.ShellCode(), 0) << cfg->output;
  auto pushed = reg->Push(other, "v2", "test/app:1");
  ASSERT_TRUE(pushed.ok()) << pushed.error().message();

  // Still pinned: run uses the first digest without asking the registry.
  auto pinned = Msb({"run", "-q", ca, token, ref, "--", "sh", "-c", "echo $MSB_IMAGE"});
  ASSERT_EQ(pinned.code, 0) << pinned.err;
  EXPECT_EQ(pinned.out, "test\n");

  // msb pull refreshes the pin.
  auto again = Msb({"pull", "-q", ca, token, ref});
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.out, first.out);
  auto refreshed = Msb({"run", "-q", ca, token, ref, "--", "sh", "-c", "echo $MSB_IMAGE"});
  ASSERT_EQ(refreshed.code, 0) << refreshed.err;
  EXPECT_EQ(refreshed.out, "v2\n");
}

TEST_F(ImageRunTest, CorruptBlobInTheRegistryFailsThePullAndPublishesNothing) {
  auto reg = StartRegistry(RegistryMode::kPlain);
  ASSERT_NE(reg, nullptr);
  std::string ref = reg->host_port() + "/test/app:1";
  // Corrupt the largest layer in the registry's storage.
  auto index = ReadFile(layout_ + "/index.json");
  ASSERT_TRUE(index.ok());
  std::string largest;
  uintmax_t size = 0;
  for (const auto& e : std::filesystem::directory_iterator(layout_ + "/blobs/sha256")) {
    if (e.file_size() > size) {
      size = e.file_size();
      largest = "sha256:" + e.path().filename().string();
    }
  }
  std::string data = reg->BlobDataPath(largest);
  ASSERT_EQ(::chmod(data.c_str(), 0644), 0);
  {
    std::fstream f(data, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good()) << data;
    f.seekp(static_cast<std::streamoff>(size / 2));
    f.put('\x5a').put('\xa5');
  }
  auto pull = Msb({"pull", "-q", "--insecure-registry", reg->host_port(), ref});
  EXPECT_NE(pull.code, 0);
  EXPECT_THAT(pull.err, HasSubstr(largest));
  // Nothing published: no such blob in the store, no reference recorded.
  EXPECT_FALSE(std::filesystem::exists(Home() + "/images/blobs/sha256/" + largest.substr(7)));
  auto images = Msb({"images"});
  EXPECT_THAT(images.out, Not(HasSubstr(ref)));
}

// A manifest declaring a 1 TiB layer is refused before any blob is asked
// for, naming the layer and the setting that would allow it.
TEST_F(ImageRunTest, AManifestDeclaringAHugeLayerIsRefusedBeforeAnyBlobIsFetched) {
  const std::string config = R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:)" +
                             std::string(64, 'b') + R"("]}})";
  const std::string layer = "sha256:" + std::string(64, 'a');
  const std::string manifest =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
      R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:)" +
      Sha256Hex(config) + R"(","size":)" + std::to_string(config.size()) +
      R"(},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":")" + layer +
      R"(","size":1099511627776}]})";
  std::atomic<int> blob_requests{0};
  auto reg = ScriptedHttpServer::Start([&](const ScriptedHttpServer::Request& r) {
    if (r.target.find("/blobs/") != std::string::npos) {
      ++blob_requests;
      return ScriptedHttpServer::Response(404, "text/plain", "");
    }
    if (r.target.find("/manifests/") != std::string::npos) {
      return ScriptedHttpServer::Response(200, "application/vnd.oci.image.manifest.v1+json", manifest,
                                          "Docker-Content-Digest: sha256:" + Sha256Hex(manifest) + "\r\n");
    }
    return ScriptedHttpServer::Response(200, "application/json", "{}");
  });
  ASSERT_TRUE(reg.ok()) << reg.error().message();
  std::string ref = (*reg)->host_port() + "/test/huge:1";
  auto pull = Msb({"pull", "-q", "--insecure-registry", (*reg)->host_port(), ref});
  EXPECT_EQ(pull.code, 1);
  EXPECT_THAT(pull.err, HasSubstr("layer 1 (" + layer + ") is 1099511627776 bytes"));
  EXPECT_THAT(pull.err, HasSubstr("MSB_PULL_MAX_BLOB_SIZE"));
  EXPECT_EQ(blob_requests.load(), 0);
  EXPECT_THAT(Msb({"images"}).out, Not(HasSubstr(ref)));
}

// The whole image's bound: the real test image over a small
// MSB_PULL_MAX_IMAGE_SIZE publishes nothing; under the default it pulls.
TEST_F(ImageRunTest, AnImageOverTheConfiguredSizeIsRefusedAndPublishesNothing) {
  auto reg = StartRegistry(RegistryMode::kPlain);
  ASSERT_NE(reg, nullptr);
  std::string ref = reg->host_port() + "/test/app:1";
  env_["MSB_PULL_MAX_IMAGE_SIZE"] = "1K";
  auto pull = Msb({"pull", "-q", "--no-unpack", "--insecure-registry", reg->host_port(), ref});
  EXPECT_EQ(pull.code, 1);
  EXPECT_THAT(pull.err, HasSubstr("over the limit of 1024 bytes for one image"));
  EXPECT_THAT(pull.err, HasSubstr("MSB_PULL_MAX_IMAGE_SIZE"));
  EXPECT_FALSE(std::filesystem::exists(Home() + "/images/blobs/sha256") &&
               !std::filesystem::is_empty(Home() + "/images/blobs/sha256"));
  EXPECT_THAT(Msb({"images"}).out, Not(HasSubstr(ref)));
  env_["MSB_PULL_MAX_IMAGE_SIZE"] = "bogus";
  auto bad = Msb({"pull", "-q", "--no-unpack", "--insecure-registry", reg->host_port(), ref});
  EXPECT_EQ(bad.code, 1);
  EXPECT_THAT(bad.err, HasSubstr("MSB_PULL_MAX_IMAGE_SIZE bogus"));
  env_.erase("MSB_PULL_MAX_IMAGE_SIZE");
  auto ok = Msb({"pull", "-q", "--no-unpack", "--insecure-registry", reg->host_port(), ref});
  EXPECT_EQ(ok.code, 0) << ok.err;
}

TEST_F(ImageRunTest, UpRunsAnOciLayoutImageWithItsDefaultsAndTheSandboxfilesOverrides) {
  std::string dir = Home() + "/project";
  ASSERT_TRUE(MakeDirs(dir, 0755).ok());
  std::ofstream(dir + "/Sandboxfile") << "sandboxes:\n"
                                         "  plain:\n"
                                         "    image: oci-layout:" + layout_ + ":v1\n"
                                         "  custom:\n"
                                         "    image: oci-layout:" + layout_ + ":v1\n"
                                         "    workdir: /var\n"
                                         "    envs: [MSB_IMAGE=overridden]\n"
                                         "    command: [sh, -c, 'echo \"custom $$MSB_IMAGE $$(pwd)\"; sleep 3600']\n";
  auto up = Msb({"up", "-f", dir + "/Sandboxfile"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_THAT(WaitForLogs("plain", "hello from an OCI image"), HasSubstr("image-cmd-ran"));
  EXPECT_THAT(WaitForLogs("custom", "custom overridden /var"), HasSubstr("custom overridden /var"));
  // One image, one unpack: both sandboxes share the base disk.
  size_t disks = 0;
  for (const auto& e : std::filesystem::directory_iterator(Home() + "/images/disks")) {
    if (e.path().extension() == ".ext4") ++disks;
  }
  EXPECT_EQ(disks, 1u);
  auto down = Msb({"down", "-f", dir + "/Sandboxfile"});
  EXPECT_EQ(down.code, 0) << down.err;
}

}  // namespace
}  // namespace msb::testing
