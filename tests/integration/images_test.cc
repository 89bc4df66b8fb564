// The image commands of the real msb binary against a fresh MSB_HOME:
// `msb load` of docker-archive and oci-archive files made by skopeo from a
// umoci-built layout, `msb images` (table and JSON), `msb rmi` (refused while
// a sandbox record uses the image, naming it), and `msb image prune` keeping
// what references and sandboxes hold. No VM is booted.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/child.h"
#include "common/io.h"
#include "orchestrator/store.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace stdfs = std::filesystem;

class ImagesTest : public MsbTest {
 protected:
  void SetUp() override {
    MsbTest::SetUp();
    if (IsSkipped()) return;
    work_ = Home() + "/work";
    ASSERT_TRUE(MakeDirs(work_).ok());
    auto r = RunCapture({"/bin/sh", "-ec",
                         "cd " + work_ +
                             " && umoci init --layout layout && umoci new --image layout:v1"
                             " && umoci unpack --rootless --image layout:v1 bundle >/dev/null"
                             " && mkdir -p bundle/rootfs/bin && cp /bin/busybox bundle/rootfs/bin/busybox"
                             " && umoci repack --image layout:v1 bundle >/dev/null && rm -rf bundle"
                             " && skopeo copy -q oci:layout:v1 docker-archive:busybox.tar:busybox:v1"
                             " && skopeo copy -q oci:layout:v1 oci-archive:busybox-oci.tar:v1"});
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->status.code, 0) << r->output;
  }

  std::vector<std::string> Blobs() const {
    std::vector<std::string> out;
    std::string dir = Home() + "/images/blobs/sha256";
    if (!stdfs::exists(dir)) return out;
    for (const auto& e : stdfs::directory_iterator(dir)) out.push_back("sha256:" + e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  nlohmann::json ImagesJson() {
    auto r = Msb({"images", "--json"});
    EXPECT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_TRUE(j.is_array()) << r.out;
    return j;
  }
  // Records a sandbox of `msb run` built from reference/digest.
  void AddSandbox(const std::string& name, const std::string& reference, const std::string& digest) {
    auto store = orchestrator::Store::Open(Home() + "/state.db");
    ASSERT_TRUE(store.ok()) << store.error().message();
    orchestrator::SandboxRecord r;
    r.project = orchestrator::Store::kRunProject;
    r.name = name;
    r.config_hash = "h";
    r.image_ref = reference;
    r.image_digest = digest;
    r.spec_json = "{}";
    r.sandbox_dir = Home() + "/sandboxes/" + name;
    ASSERT_TRUE(store->UpsertSandbox(r).ok());
    orchestrator::SandboxStatusUpdate stopped;
    stopped.status = orchestrator::SandboxStatus::kStopped;
    stopped.reason = "test";
    ASSERT_TRUE(store->UpdateSandboxStatus(r.project, name, stopped).ok());
  }
  void RemoveSandbox(const std::string& name) {
    auto store = orchestrator::Store::Open(Home() + "/state.db");
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE(store->DeleteSandbox(orchestrator::Store::kRunProject, name).ok());
  }

  std::string work_;
};

TEST_F(ImagesTest, LoadListRemove) {
  auto empty = Msb({"images"});
  ASSERT_EQ(empty.code, 0) << empty.err;
  EXPECT_EQ(empty.out, "REFERENCE  DIGEST  SIZE  CREATED  IN USE\n");

  auto d = Msb({"load", work_ + "/busybox.tar"});
  ASSERT_EQ(d.code, 0) << d.err;
  EXPECT_THAT(d.out, ::testing::MatchesRegex("Loaded image docker.io/library/busybox:v1 \\(sha256:[0-9a-f]{64}\\)\n"));
  std::string docker_digest = d.out.substr(d.out.find("(") + 1, 71);

  auto o = Msb({"image", "load", "-t", "example.com/tools/busybox:oci", work_ + "/busybox-oci.tar"});
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("Loaded image oci-archive:" + work_ + "/busybox-oci.tar:v1 (sha256:"));
  EXPECT_THAT(o.out, HasSubstr("Loaded image example.com/tools/busybox:oci (sha256:"));

  auto table = Msb({"images"});
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("REFERENCE"));
  EXPECT_THAT(table.out, ::testing::ContainsRegex("docker.io/library/busybox:v1 +" + docker_digest.substr(7, 12) +
                                                  " +[0-9.]+[KM]?i?B +[0-9]+s ago +-\n"));

  auto j = ImagesJson();
  ASSERT_EQ(j.size(), 3u);
  EXPECT_EQ(j[0]["reference"], "docker.io/library/busybox:v1");
  EXPECT_EQ(j[0]["digest"], docker_digest);
  EXPECT_EQ(j[0]["media_type"], "application/vnd.docker.distribution.manifest.v2+json");
  EXPECT_GT(j[0]["size_bytes"].get<int64_t>(), 1000000);
  EXPECT_EQ(j[1]["reference"], "example.com/tools/busybox:oci");
  EXPECT_EQ(j[1]["media_type"], "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(j[1]["digest"], j[2]["digest"]);
  // Every image's blobs are in the store, each once: docker (manifest, layer),
  // OCI (manifest, gzip layer) and one config they share.
  EXPECT_EQ(Blobs().size(), 5u);

  // rmi of one of two references to a digest removes no blob.
  auto r1 = Msb({"rmi", "example.com/tools/busybox:oci"});
  ASSERT_EQ(r1.code, 0) << r1.err;
  EXPECT_EQ(r1.out, "Untagged example.com/tools/busybox:oci\n");
  EXPECT_EQ(Blobs().size(), 5u);

  // rmi by the short name as written: the docker image's own blobs go.
  auto r2 = Msb({"rmi", "busybox:v1"});
  ASSERT_EQ(r2.code, 0) << r2.err;
  EXPECT_THAT(r2.out, HasSubstr("Untagged docker.io/library/busybox:v1\nDeleted " + docker_digest.substr(7, 12) +
                                ": 2 blob(s)"));
  EXPECT_EQ(Blobs().size(), 3u);
  EXPECT_FALSE(stdfs::exists(Home() + "/images/blobs/sha256/" + docker_digest.substr(7)));

  auto unknown = Msb({"rmi", "busybox:v1"});
  EXPECT_EQ(unknown.code, 1);
  EXPECT_EQ(unknown.err, "msb: no image busybox:v1 (see msb images)\n");
}

TEST_F(ImagesTest, SandboxesHoldTheirImages) {
  auto d = Msb({"load", work_ + "/busybox.tar"});
  ASSERT_EQ(d.code, 0) << d.err;
  std::string digest = d.out.substr(d.out.find("(") + 1, 71);
  AddSandbox("web", "docker.io/library/busybox:v1", digest);

  auto table = Msb({"images"});
  EXPECT_THAT(table.out, ::testing::ContainsRegex("docker.io/library/busybox:v1 .* web\n"));
  auto j = ImagesJson();
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["in_use"][0]["name"], "web");
  EXPECT_EQ(j[0]["in_use"][0]["state"], "stopped");

  auto refused = Msb({"rmi", "busybox:v1"});
  EXPECT_EQ(refused.code, 1);
  EXPECT_EQ(refused.err,
            "msb: image docker.io/library/busybox:v1 is used by sandbox web (stopped); remove it first "
            "(msb rm web, or msb down for a project)\n");

  // Prune keeps what the reference and the sandbox hold; it takes an orphan
  // blob and an interrupted download.
  auto before = Blobs();
  ASSERT_EQ(before.size(), 3u);
  std::string orphan_hex(64, 'e');
  ASSERT_TRUE(WriteFileAtomic(Home() + "/images/blobs/sha256/" + orphan_hex, "orphan").ok());
  ASSERT_TRUE(WriteFileAtomic(Home() + "/images/ingest/" + std::string(64, 'd') + ".partial", "half").ok());
  auto pruned = Msb({"image", "prune"});
  ASSERT_EQ(pruned.code, 0) << pruned.err;
  EXPECT_EQ(pruned.out, "Deleted 1 blob(s), 1 partial download(s), 0 base disk(s); 10B freed\n");
  EXPECT_EQ(Blobs(), before);

  // The sandbox alone (its reference gone elsewhere) still holds the blobs.
  auto store = orchestrator::Store::Open(Home() + "/state.db");
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(store->DeleteImage("docker.io/library/busybox:v1").ok());
  auto again = Msb({"image", "prune"});
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(Blobs(), before);

  // Once the sandbox is gone, nothing holds them.
  RemoveSandbox("web");
  auto last = Msb({"image", "prune"});
  ASSERT_EQ(last.code, 0) << last.err;
  EXPECT_THAT(last.out, HasSubstr("Deleted 3 blob(s)"));
  EXPECT_TRUE(Blobs().empty());
}

TEST_F(ImagesTest, LoadErrors) {
  ASSERT_TRUE(WriteFileAtomic(work_ + "/notes.txt", "not an archive\n").ok());
  auto bad = Msb({"load", work_ + "/notes.txt"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_THAT(bad.err, HasSubstr("msb: load: " + work_ + "/notes.txt: not a docker or OCI archive (tar)"));

  auto r = RunCapture({"tar", "-C", work_, "-cf", work_ + "/plain.tar", "notes.txt"});
  ASSERT_TRUE(r.ok() && r->status.code == 0);
  auto plain = Msb({"load", work_ + "/plain.tar"});
  EXPECT_EQ(plain.code, 1);
  EXPECT_EQ(plain.err, "msb: load: " + work_ +
                           "/plain.tar is not a docker or OCI archive: it has no manifest.json or index.json at "
                           "the top level\n");

  auto missing = Msb({"load", work_ + "/absent.tar"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_THAT(missing.err, HasSubstr("cannot read " + work_ + "/absent.tar: No such file or directory"));

  // An OCI archive whose layer was damaged: the error names the blob.
  auto mk = RunCapture({"/bin/sh", "-ec",
                        "cd " + work_ + " && cp -r layout bad && f=$(ls -S bad/blobs/sha256 | head -1)"
                        " && printf XX | dd of=bad/blobs/sha256/$f bs=1 seek=4096 conv=notrunc 2>/dev/null"
                        " && tar -C bad -cf bad.tar . && echo $f"});
  ASSERT_TRUE(mk.ok() && mk->status.code == 0) << (mk.ok() ? mk->output : mk.error().message());
  std::string layer = "sha256:" + mk->output.substr(0, 64);
  auto corrupt = Msb({"load", work_ + "/bad.tar"});
  EXPECT_EQ(corrupt.code, 1);
  EXPECT_THAT(corrupt.err, HasSubstr("blob " + layer + " does not match its content"));
  EXPECT_FALSE(stdfs::exists(Home() + "/images/blobs/sha256/" + layer.substr(7)));

  auto two_tags = Msb({"load", "-t", "not a reference!", work_ + "/busybox.tar"});
  EXPECT_EQ(two_tags.code, 1);
  EXPECT_THAT(two_tags.err, HasSubstr("--tag not a reference! is not an image reference"));
  EXPECT_EQ(ImagesJson().size(), 0u);  // nothing recorded on failure
}

}  // namespace
}  // namespace msb::testing
