// Tests of image/image_archive: docker-archive and oci-archive files made by
// skopeo from a umoci-built layout, and hand-made tars (libarchive writer)
// for gzip layers, links between entries, hostile names, and the errors: not
// a tar, neither format, a missing layer, a corrupt blob.
#include "image/image_archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/child.h"
#include "common/io.h"

namespace msb::image {
namespace {

using nlohmann::json;
namespace stdfs = std::filesystem;

void Sh(const std::string& script) {
  auto r = RunCapture({"/bin/sh", "-ec", script});
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->status.code, 0) << script << "\n" << r->output;
}

struct TarEntry {
  std::string name;
  std::string data;
  std::string symlink;   // when set: a symbolic link to this
  std::string hardlink;  // when set: a hard link to this entry
};

void WriteTar(const std::string& path, const std::vector<TarEntry>& entries) {
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  ASSERT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK);
  for (const auto& e : entries) {
    archive_entry* en = archive_entry_new();
    archive_entry_set_pathname(en, e.name.c_str());
    archive_entry_set_perm(en, 0644);
    if (!e.symlink.empty()) {
      archive_entry_set_filetype(en, AE_IFLNK);
      archive_entry_set_symlink(en, e.symlink.c_str());
    } else if (!e.hardlink.empty()) {
      archive_entry_set_filetype(en, AE_IFREG);
      archive_entry_set_hardlink(en, e.hardlink.c_str());
    } else {
      archive_entry_set_filetype(en, AE_IFREG);
      archive_entry_set_size(en, static_cast<la_int64_t>(e.data.size()));
    }
    ASSERT_EQ(archive_write_header(a, en), ARCHIVE_OK) << archive_error_string(a);
    if (e.symlink.empty() && e.hardlink.empty() && !e.data.empty()) {
      ASSERT_EQ(archive_write_data(a, e.data.data(), e.data.size()), static_cast<la_ssize_t>(e.data.size()));
    }
    archive_entry_free(en);
  }
  archive_write_close(a);
  archive_write_free(a);
}

class ImageArchiveTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/msb-image-archive-test-XXXXXX";
    suite_ = ::mkdtemp(tmpl);
    Sh("cd " + suite_ +
       " && umoci init --layout layout && umoci new --image layout:v1"
       " && umoci unpack --rootless --image layout:v1 bundle >/dev/null"
       " && mkdir -p bundle/rootfs/bin && cp /bin/busybox bundle/rootfs/bin/busybox"
       " && umoci repack --image layout:v1 bundle >/dev/null && rm -rf bundle"
       " && skopeo copy -q oci:layout:v1 docker-archive:docker.tar:busybox:v1"
       " && skopeo copy -q oci:layout:v1 oci-archive:oci.tar:v1");
  }
  static void TearDownTestSuite() { stdfs::remove_all(suite_); }

  void SetUp() override {
    char tmpl[] = "/tmp/msb-image-archive-case-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    auto s = ImageStore::Open(dir_ + "/images");
    ASSERT_TRUE(s.ok());
    store_ = std::make_unique<ImageStore>(std::move(*s));
  }
  void TearDown() override { stdfs::remove_all(dir_); }

  static std::string LayoutFile(const std::string& rel) { return *ReadFile(suite_ + "/layout/" + rel); }
  static json LayoutManifest() {
    json index = json::parse(LayoutFile("index.json"));
    std::string d = index["manifests"][0]["digest"];
    return json::parse(LayoutFile("blobs/sha256/" + d.substr(7)));
  }
  static std::string suite_;
  std::string dir_;
  std::unique_ptr<ImageStore> store_;
};
std::string ImageArchiveTest::suite_;

TEST_F(ImageArchiveTest, DockerArchiveFromSkopeo) {
  auto loaded = LoadImageArchive(suite_ + "/docker.tar", *store_);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  ASSERT_EQ(loaded->size(), 1u);
  const LoadedImage& img = (*loaded)[0];
  EXPECT_EQ(img.format, ArchiveFormat::kDockerArchive);
  EXPECT_EQ(img.names, std::vector<std::string>{"docker.io/library/busybox:v1"});
  EXPECT_EQ(img.media_type, oci::kMediaTypeDockerManifest);
  EXPECT_EQ(img.config_digest, LayoutManifest()["config"]["digest"]);

  auto stored = store_->ReadImage(img.manifest_digest);
  ASSERT_TRUE(stored.ok()) << stored.error().message();
  EXPECT_TRUE(stored->missing_blobs.empty());
  ASSERT_EQ(stored->layers.size(), 1u);
  // docker-archive layers are uncompressed: the blob digest is the diff_id.
  EXPECT_EQ(stored->layers[0].compression, oci::LayerCompression::kNone);
  EXPECT_EQ(stored->layers[0].media_type, oci::kMediaTypeOciLayer);
  EXPECT_EQ(stored->layers[0].digest, stored->layers[0].diff_id);
  EXPECT_EQ(stored->size_bytes, img.size_bytes);
  auto layer = ReadFile(stored->layers[0].path);
  ASSERT_TRUE(layer.ok());
  EXPECT_EQ(oci::DigestOf(*layer), stored->layers[0].digest);
  EXPECT_GT(layer->size(), 1000000u);  // busybox, uncompressed

  // Loading again writes nothing new and yields the same manifest.
  auto before = store_->ListBlobs();
  auto again = LoadImageArchive(suite_ + "/docker.tar", *store_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)[0].manifest_digest, img.manifest_digest);
  EXPECT_EQ(*store_->ListBlobs(), *before);
  EXPECT_TRUE(stdfs::is_empty(store_->root() + "/ingest"));
}

TEST_F(ImageArchiveTest, OciArchiveFromSkopeo) {
  auto loaded = LoadImageArchive(suite_ + "/oci.tar", *store_);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  ASSERT_EQ(loaded->size(), 1u);
  const LoadedImage& img = (*loaded)[0];
  EXPECT_EQ(img.format, ArchiveFormat::kOciArchive);
  EXPECT_EQ(img.names, std::vector<std::string>{"v1"});
  json index = json::parse(LayoutFile("index.json"));
  EXPECT_EQ(img.manifest_digest, index["manifests"][0]["digest"]);
  auto stored = store_->ReadImage(img.manifest_digest);
  ASSERT_TRUE(stored.ok()) << stored.error().message();
  EXPECT_TRUE(stored->missing_blobs.empty());
  EXPECT_EQ(stored->layers[0].compression, oci::LayerCompression::kGzip);
  EXPECT_EQ(stored->size_bytes, img.size_bytes);
}

TEST_F(ImageArchiveTest, GzipLayersLinksAndHostileNames) {
  // A gzip layer reached through a symlink and a hard link; an entry whose
  // name climbs out of any directory must stay a key.
  std::string work = dir_ + "/work";
  stdfs::create_directory(work);
  Sh("cd " + work + " && mkdir -p root/etc && echo hi > root/etc/greeting && tar -C root -cf layer.tar etc" +
     " && gzip -n -c layer.tar > layer.tar.gz");
  std::string layer_tar = *ReadFile(work + "/layer.tar");
  std::string layer_gz = *ReadFile(work + "/layer.tar.gz");
  json config = {{"architecture", "amd64"},
                 {"os", "linux"},
                 {"config", {{"Cmd", {"/bin/cat", "/etc/greeting"}}}},
                 {"rootfs", {{"type", "layers"}, {"diff_ids", {oci::DigestOf(layer_tar), oci::DigestOf(layer_tar)}}}}};
  json manifest = json::array({{{"Config", "./cfg.json"},
                                {"RepoTags", {"example.com/app:1", "app:latest"}},
                                {"Layers", {"sub/layer.tar.gz", "hard/layer.tar.gz"}}}});
  std::string escape = "/tmp/msb-archive-escape-" + std::to_string(::getpid());
  WriteTar(dir_ + "/made.tar", {{"real/layer.gz", layer_gz, "", ""},
                                {"sub/layer.tar.gz", "", "../real/layer.gz", ""},
                                {"hard/layer.tar.gz", "", "", "real/layer.gz"},
                                {"../../../../.." + escape, "escaped?", "", ""},
                                {"cfg.json", config.dump(), "", ""},
                                {"manifest.json", manifest.dump(), "", ""}});
  auto loaded = LoadImageArchive(dir_ + "/made.tar", *store_);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_FALSE(stdfs::exists(escape));
  ASSERT_EQ(loaded->size(), 1u);
  EXPECT_EQ((*loaded)[0].names, (std::vector<std::string>{"example.com/app:1", "app:latest"}));
  auto stored = store_->ReadImage((*loaded)[0].manifest_digest);
  ASSERT_TRUE(stored.ok()) << stored.error().message();
  ASSERT_EQ(stored->layers.size(), 2u);
  for (const auto& l : stored->layers) {
    EXPECT_EQ(l.digest, oci::DigestOf(layer_gz));
    EXPECT_EQ(l.media_type, oci::kMediaTypeDockerLayer);
    EXPECT_EQ(l.compression, oci::LayerCompression::kGzip);
    EXPECT_EQ(l.diff_id, oci::DigestOf(layer_tar));
  }
  EXPECT_EQ(stored->config.cmd, (std::vector<std::string>{"/bin/cat", "/etc/greeting"}));
}

TEST_F(ImageArchiveTest, NotAnArchive) {
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/junk.tar", std::string(4096, 'j')).ok());
  auto junk = LoadImageArchive(dir_ + "/junk.tar", *store_);
  ASSERT_FALSE(junk.ok());
  EXPECT_NE(junk.error().message().find(dir_ + "/junk.tar: not a docker or OCI archive (tar)"), std::string::npos)
      << junk.error().message();

  WriteTar(dir_ + "/other.tar", {{"README", "just a tar", "", ""}});
  auto other = LoadImageArchive(dir_ + "/other.tar", *store_);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().message(), dir_ +
                                         "/other.tar is not a docker or OCI archive: it has no manifest.json or "
                                         "index.json at the top level");

  auto missing = LoadImageArchive(dir_ + "/absent.tar", *store_);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("cannot read " + dir_ + "/absent.tar"), std::string::npos)
      << missing.error().message();
}

TEST_F(ImageArchiveTest, MissingLayerIsNamed) {
  json config = {{"architecture", "amd64"}, {"os", "linux"}, {"rootfs", {{"type", "layers"}, {"diff_ids", {oci::DigestOf("x")}}}}};
  json manifest = json::array({{{"Config", "cfg.json"}, {"RepoTags", {"a:1"}}, {"Layers", {"gone/layer.tar"}}}});
  WriteTar(dir_ + "/m.tar", {{"cfg.json", config.dump(), "", ""}, {"manifest.json", manifest.dump(), "", ""}});
  auto r = LoadImageArchive(dir_ + "/m.tar", *store_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), dir_ + "/m.tar: manifest.json[0].Layers[0] names \"gone/layer.tar\", which is not a "
                                        "file in the archive");
}

TEST_F(ImageArchiveTest, CorruptBlobInAnOciArchiveIsNamed) {
  json index = json::parse(LayoutFile("index.json"));
  json man = LayoutManifest();
  std::string layer_digest = man["layers"][0]["digest"];
  std::vector<TarEntry> entries = {{"oci-layout", LayoutFile("oci-layout"), "", ""},
                                   {"index.json", index.dump(), "", ""}};
  for (const auto& e : stdfs::directory_iterator(suite_ + "/layout/blobs/sha256")) {
    std::string hex = e.path().filename().string();
    std::string data = *ReadFile(e.path().string());
    if ("sha256:" + hex == layer_digest) data[data.size() / 2] ^= 0x55;
    entries.push_back({"blobs/sha256/" + hex, data, "", ""});
  }
  WriteTar(dir_ + "/bad.tar", entries);
  auto r = LoadImageArchive(dir_ + "/bad.tar", *store_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find(dir_ + "/bad.tar: entry blobs/sha256/" + layer_digest.substr(7) + ": blob " +
                                     layer_digest + " does not match its content"),
            std::string::npos)
      << r.error().message();
  EXPECT_FALSE(store_->HasBlob(layer_digest));
  EXPECT_TRUE(stdfs::is_empty(store_->root() + "/ingest"));
}

TEST_F(ImageArchiveTest, OciArchiveMissingBlobIsNamed) {
  json index = json::parse(LayoutFile("index.json"));
  std::string layer_digest = LayoutManifest()["layers"][0]["digest"];
  std::vector<TarEntry> entries = {{"oci-layout", LayoutFile("oci-layout"), "", ""},
                                   {"index.json", index.dump(), "", ""}};
  for (const auto& e : stdfs::directory_iterator(suite_ + "/layout/blobs/sha256")) {
    std::string hex = e.path().filename().string();
    if ("sha256:" + hex != layer_digest) entries.push_back({"blobs/sha256/" + hex, *ReadFile(e.path().string()), "", ""});
  }
  WriteTar(dir_ + "/short.tar", entries);
  auto r = LoadImageArchive(dir_ + "/short.tar", *store_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "oci-archive " + dir_ + "/short.tar: layers[0] " + layer_digest +
                                     " is not in the archive (no blobs/sha256/" + layer_digest.substr(7) + ")");
}

}  // namespace
}  // namespace msb::image
