// Registry and OCI layout images end to end: the test image (tests/support/
// make-test-image) pushed with skopeo to a real docker-registry on 127.0.0.1,
// pulled, unpacked in a builder VM and booted by `msb run` and `msb up`.
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include <nlohmann/json.hpp>

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

// How BrokenLayerLayout breaks the layer.
enum class Break : int { kGzipCorrupt = 0, kGzipTruncated = 1, kZstdCorrupt = 2, kZstdTruncated = 3 };

// A copy of the test layout at dst whose largest layer is broken: its
// compressed stream (gzip as built, or recompressed with zstd) corrupted in
// the middle or cut in half. The manifest and the index name the broken
// bytes' own digest, so every blob matches its digest and only unpacking
// can find the fault. Returns the broken layer's digest.
Result<std::string> BrokenLayerLayout(const std::string& src, const std::string& dst, Break how) {
  std::error_code ec;
  std::filesystem::copy(src, dst, std::filesystem::copy_options::recursive, ec);
  if (ec) return Error(ErrorCode::kIo, "copying " + src + ": " + ec.message());
  auto blob = [&](const std::string& digest) { return dst + "/blobs/sha256/" + digest.substr(7); };
  auto put = [&](const std::string& bytes) -> Result<std::string> {
    std::string digest = "sha256:" + Sha256Hex(bytes);
    MSB_TRY_STATUS(WriteFileAtomic(blob(digest), bytes));
    return digest;
  };
  MSB_TRY(std::string index_text, ReadFile(dst + "/index.json"));
  auto index = nlohmann::json::parse(index_text);
  MSB_TRY(std::string manifest_text, ReadFile(blob(index["manifests"][0]["digest"])));
  auto manifest = nlohmann::json::parse(manifest_text);
  size_t largest = 0;
  for (size_t i = 0; i < manifest["layers"].size(); ++i) {
    if (manifest["layers"][i]["size"] > manifest["layers"][largest]["size"]) largest = i;
  }
  auto& layer = manifest["layers"][largest];
  std::string bytes;
  if (how == Break::kGzipCorrupt || how == Break::kGzipTruncated) {
    MSB_TRY(bytes, ReadFile(blob(layer["digest"])));
  } else {
    MSB_TRY(RunResult z, RunCapture({"sh", "-c", "gzip -dc '" + blob(layer["digest"]) + "' | zstd -q -c"}, false));
    if (z.status.ShellCode() != 0) return Error(ErrorCode::kIo, "recompressing with zstd failed");
    bytes = z.output;
    layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd";
  }
  if (how == Break::kGzipCorrupt || how == Break::kZstdCorrupt) {
    for (size_t i = bytes.size() / 2; i < bytes.size() / 2 + 64; ++i) bytes[i] = static_cast<char>(bytes[i] ^ 0x5a);
  } else {
    bytes.resize(bytes.size() / 2);
  }
  MSB_TRY(std::string broken, put(bytes));
  layer["digest"] = broken;
  layer["size"] = bytes.size();
  std::string new_manifest = manifest.dump();
  MSB_TRY(std::string manifest_digest, put(new_manifest));
  index["manifests"][0]["digest"] = manifest_digest;
  index["manifests"][0]["size"] = new_manifest.size();
  MSB_TRY_STATUS(WriteFileAtomic(dst + "/index.json", index.dump()));
  return broken;
}

// The files under dir (recursively), as paths relative to it.
std::set<std::string> FilesUnder(const std::string& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_directory()) out.insert(std::filesystem::relative(it->path(), dir).string());
  }
  return out;
}

// A layer whose compressed stream is corrupt or cut short (gzip and zstd)
// though every blob matches its digest: the pull fails naming the layer's
// digest, records no reference, builds no base disk and leaves no partial
// file; the good image then pulls and runs.
TEST_F(ImageRunTest, CorruptOrTruncatedCompressedLayerFailsThePullNamingItAndPublishesNothing) {
  auto reg = StartRegistry(RegistryMode::kPlain);
  ASSERT_NE(reg, nullptr);
  const std::string insecure = "--insecure-registry=" + reg->host_port();
  const std::vector<std::pair<Break, std::string>> cases = {{Break::kGzipCorrupt, "gzip-corrupt"},
                                                            {Break::kGzipTruncated, "gzip-truncated"},
                                                            {Break::kZstdCorrupt, "zstd-corrupt"},
                                                            {Break::kZstdTruncated, "zstd-truncated"}};
  for (const auto& [how, name] : cases) {
    SCOPED_TRACE(name);
    std::string layout = Home() + "/" + name;
    auto broken = BrokenLayerLayout(layout_, layout, how);
    ASSERT_TRUE(broken.ok()) << broken.error().message();
    ASSERT_TRUE(reg->Push(layout, "v1", "test/" + name + ":1").ok());
    auto before = FilesUnder(Home() + "/images");
    std::string ref = reg->host_port() + "/test/" + name + ":1";
    auto pull = Msb({"pull", "-q", insecure, ref});
    EXPECT_NE(pull.code, 0) << pull.out;
    EXPECT_THAT(pull.err, HasSubstr(*broken)) << pull.err;
    EXPECT_THAT(Msb({"images"}).out, Not(HasSubstr(ref)));
    // Nothing new but content-addressed blobs (each matching its digest)
    // and the store's own lock, made on its first use.
    for (const auto& f : FilesUnder(Home() + "/images")) {
      if (before.count(f) != 0 || f == "gc.lock") continue;
      EXPECT_EQ(f.rfind("blobs/sha256/", 0), 0u) << f << " left by the failed pull of " << ref;
    }
    std::cerr << name << ": " << pull.err;
  }
  auto good = Msb({"run", "-q", insecure, reg->host_port() + "/test/app:1", "--", "cat", "/srv/index.html"});
  EXPECT_EQ(good.code, 0) << good.err;
  EXPECT_EQ(good.out, "hello from an OCI image\n");
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
                                         "    command: [sh, -c, 'echo \"custom $$MSB_IMAGE $$(pwd)\"; mkfifo /dev/keep-alive && exec cat /dev/keep-alive']\n";
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
