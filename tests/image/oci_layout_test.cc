// Tests of image/oci_layout: importing from a layout built offline with umoci
// (busybox-static in one layer, plus an empty image under a second tag), tag
// choice, a nested index followed to linux/amd64, and the errors for a
// missing tag, a missing or corrupt blob and a directory that is no layout.
#include "image/oci_layout.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/child.h"
#include "common/io.h"
#include "image/image_store.h"

namespace msb::image {
namespace {

using nlohmann::json;
namespace stdfs = std::filesystem;

// Runs a shell script; fails the test with its output when it fails.
void Sh(const std::string& script) {
  auto r = RunCapture({"/bin/sh", "-ec", script});
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->status.code, 0) << script << "\n" << r->output;
}

class OciLayoutTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/msb-oci-layout-test-XXXXXX";
    suite_dir_ = ::mkdtemp(tmpl);
    layout_ = suite_dir_ + "/layout";
    // v1: busybox in one gzip layer; empty: no layers.
    Sh("cd " + suite_dir_ +
       " && umoci init --layout layout && umoci new --image layout:v1"
       " && umoci unpack --rootless --image layout:v1 bundle >/dev/null"
       " && mkdir -p bundle/rootfs/bin && cp /bin/busybox bundle/rootfs/bin/busybox"
       " && umoci repack --image layout:v1 bundle >/dev/null && rm -rf bundle"
       " && umoci new --image layout:empty");
  }
  static void TearDownTestSuite() { stdfs::remove_all(suite_dir_); }

  void SetUp() override {
    char tmpl[] = "/tmp/msb-oci-layout-case-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    auto s = ImageStore::Open(dir_ + "/images");
    ASSERT_TRUE(s.ok());
    store_ = std::make_unique<ImageStore>(std::move(*s));
  }
  void TearDown() override { stdfs::remove_all(dir_); }

  // A private copy of the layout to damage.
  std::string CopyLayout() {
    std::string copy = dir_ + "/copy";
    stdfs::copy(layout_, copy, stdfs::copy_options::recursive);
    return copy;
  }
  static json Index(const std::string& layout) { return json::parse(*ReadFile(layout + "/index.json")); }
  static std::string EntryDigest(const std::string& layout, const std::string& tag) {
    json index = Index(layout);
    for (const auto& m : index["manifests"]) {
      if (m["annotations"]["org.opencontainers.image.ref.name"] == tag) return m["digest"];
    }
    return "";
  }
  static std::string BlobFile(const std::string& layout, const std::string& digest) {
    return layout + "/blobs/sha256/" + digest.substr(7);
  }

  static std::string suite_dir_, layout_;
  std::string dir_;
  std::unique_ptr<ImageStore> store_;
};
std::string OciLayoutTest::suite_dir_;
std::string OciLayoutTest::layout_;

TEST_F(OciLayoutTest, ImportsTheTaggedImageAndEveryBlob) {
  auto imp = ImportOciLayout(layout_, "v1", *store_);
  ASSERT_TRUE(imp.ok()) << imp.error().message();
  EXPECT_EQ(imp->name, "v1");
  EXPECT_EQ(imp->manifest_digest, EntryDigest(layout_, "v1"));
  EXPECT_EQ(imp->root_digest, imp->manifest_digest);
  EXPECT_EQ(imp->media_type, oci::kMediaTypeOciManifest);

  auto img = store_->ReadImage(imp->manifest_digest);
  ASSERT_TRUE(img.ok()) << img.error().message();
  EXPECT_TRUE(img->missing_blobs.empty());
  ASSERT_EQ(img->layers.size(), 1u);
  EXPECT_EQ(img->layers[0].compression, oci::LayerCompression::kGzip);
  EXPECT_EQ(img->config_digest, imp->config_digest);
  EXPECT_EQ(img->size_bytes, imp->size_bytes);
  EXPECT_GT(img->size_bytes, 500000);  // busybox, compressed
  // The stored bytes are the layout's bytes.
  for (const auto& d : {imp->manifest_digest, imp->config_digest, img->layers[0].digest}) {
    EXPECT_EQ(*ReadFile(store_->BlobPath(d)), *ReadFile(BlobFile(layout_, d))) << d;
  }
  // Only v1's blobs: the empty image's manifest was not imported.
  EXPECT_FALSE(store_->HasBlob(EntryDigest(layout_, "empty")));
  auto all = store_->ListBlobs();
  EXPECT_EQ(all->size(), 3u);

  // Again: nothing to do, same answer.
  auto again = ImportOciLayout(layout_, "v1", *store_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->manifest_digest, imp->manifest_digest);
}

TEST_F(OciLayoutTest, TagChoice) {
  auto empty = ImportOciLayout(layout_, "empty", *store_);
  ASSERT_TRUE(empty.ok()) << empty.error().message();
  EXPECT_EQ(empty->manifest_digest, EntryDigest(layout_, "empty"));

  auto missing = ImportOciLayout(layout_, "v9", *store_);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(missing.error().message(), "OCI layout " + layout_ + ": no image tagged v9 (tags: v1, empty)");

  auto ambiguous = ImportOciLayout(layout_, "", *store_);
  ASSERT_FALSE(ambiguous.ok());
  EXPECT_NE(ambiguous.error().message().find("holds 2 images (v1, empty); name one as oci-layout:PATH:TAG"),
            std::string::npos)
      << ambiguous.error().message();

  // With one image, no tag is needed.
  std::string copy = CopyLayout();
  json index = Index(copy);
  index["manifests"].erase(1);
  ASSERT_TRUE(WriteFileAtomic(copy + "/index.json", index.dump()).ok());
  auto only = ImportOciLayout(copy, "", *store_);
  ASSERT_TRUE(only.ok()) << only.error().message();
  EXPECT_EQ(only->manifest_digest, EntryDigest(layout_, "v1"));
}

TEST_F(OciLayoutTest, FollowsANestedIndexToAmd64) {
  std::string copy = CopyLayout();
  std::string v1 = EntryDigest(copy, "v1");
  std::string empty = EntryDigest(copy, "empty");
  json nested = {{"schemaVersion", 2},
                 {"mediaType", oci::kMediaTypeOciIndex},
                 {"manifests",
                  {{{"mediaType", oci::kMediaTypeOciManifest}, {"digest", empty}, {"size", 192},
                    {"platform", {{"os", "linux"}, {"architecture", "arm64"}}}},
                   {{"mediaType", oci::kMediaTypeOciManifest},
                    {"digest", v1},
                    {"size", stdfs::file_size(BlobFile(copy, v1))},
                    {"platform", {{"os", "linux"}, {"architecture", "amd64"}}}}}}};
  std::string bytes = nested.dump();
  std::string nd = oci::DigestOf(bytes);
  ASSERT_TRUE(WriteFileAtomic(BlobFile(copy, nd), bytes).ok());
  json index = Index(copy);
  index["manifests"].push_back({{"mediaType", oci::kMediaTypeOciIndex},
                                {"digest", nd},
                                {"size", bytes.size()},
                                {"annotations", {{"org.opencontainers.image.ref.name", "multi"}}}});
  ASSERT_TRUE(WriteFileAtomic(copy + "/index.json", index.dump()).ok());

  auto imp = ImportOciLayout(copy, "multi", *store_);
  ASSERT_TRUE(imp.ok()) << imp.error().message();
  EXPECT_EQ(imp->root_digest, nd);
  EXPECT_EQ(imp->manifest_digest, v1);
  EXPECT_FALSE(store_->HasBlob(empty));  // the arm64 entry is not fetched

  // An index without linux/amd64 is refused, naming what it has.
  nested["manifests"].erase(1);
  bytes = nested.dump();
  std::string arm_only = oci::DigestOf(bytes);
  ASSERT_TRUE(WriteFileAtomic(BlobFile(copy, arm_only), bytes).ok());
  index["manifests"].push_back({{"mediaType", oci::kMediaTypeOciIndex},
                                {"digest", arm_only},
                                {"size", bytes.size()},
                                {"annotations", {{"org.opencontainers.image.ref.name", "arm"}}}});
  ASSERT_TRUE(WriteFileAtomic(copy + "/index.json", index.dump()).ok());
  auto arm = ImportOciLayout(copy, "arm", *store_);
  ASSERT_FALSE(arm.ok());
  EXPECT_NE(arm.error().message().find("no linux/amd64 manifest"), std::string::npos) << arm.error().message();
  EXPECT_NE(arm.error().message().find("linux/arm64"), std::string::npos);
}

TEST_F(OciLayoutTest, TwoImportsAtOnceShareTheWork) {
  // Two threads import one image into one store: both succeed, each blob is
  // published once and nothing is left in ingest.
  Result<ImportedImage> a = Error(ErrorCode::kInternal, "not run");
  Result<ImportedImage> b = Error(ErrorCode::kInternal, "not run");
  std::thread ta([&] { a = ImportOciLayout(layout_, "v1", *store_); });
  std::thread tb([&] { b = ImportOciLayout(layout_, "v1", *store_); });
  ta.join();
  tb.join();
  ASSERT_TRUE(a.ok()) << a.error().message();
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_EQ(a->manifest_digest, b->manifest_digest);
  EXPECT_EQ(store_->ListBlobs()->size(), 3u);
  EXPECT_TRUE(stdfs::is_empty(store_->root() + "/ingest"));
  auto img = store_->ReadImage(a->manifest_digest);
  ASSERT_TRUE(img.ok());
  EXPECT_EQ(oci::DigestOf(*ReadFile(img->layers[0].path)), img->layers[0].digest);
}

TEST_F(OciLayoutTest, MissingBlobIsNamed) {
  std::string copy = CopyLayout();
  auto m = json::parse(*ReadFile(BlobFile(copy, EntryDigest(copy, "v1"))));
  std::string layer = m["layers"][0]["digest"];
  stdfs::remove(BlobFile(copy, layer));
  auto imp = ImportOciLayout(copy, "v1", *store_);
  ASSERT_FALSE(imp.ok());
  EXPECT_EQ(imp.error().message(), "OCI layout " + copy + ": layers[0] " + layer + " is missing (no file " +
                                       BlobFile(copy, layer) + ")");
}

TEST_F(OciLayoutTest, CorruptBlobIsRefusedNamingTheDigest) {
  std::string copy = CopyLayout();
  auto m = json::parse(*ReadFile(BlobFile(copy, EntryDigest(copy, "v1"))));
  std::string layer = m["layers"][0]["digest"];
  {
    std::fstream f(BlobFile(copy, layer), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5000);
    f.put('\x42');
    f.put('\x43');
  }
  auto imp = ImportOciLayout(copy, "v1", *store_);
  ASSERT_FALSE(imp.ok());
  EXPECT_NE(imp.error().message().find("OCI layout " + copy + ": layers[0]: blob " + layer +
                                       " does not match its content"),
            std::string::npos)
      << imp.error().message();
  EXPECT_FALSE(store_->HasBlob(layer));
  EXPECT_TRUE(stdfs::is_empty(store_->root() + "/ingest"));
}

TEST_F(OciLayoutTest, NotALayout) {
  auto none = ImportOciLayout(dir_ + "/nope", "", *store_);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message().find("OCI layout " + dir_ + "/nope: No such file or directory"),
            std::string::npos);

  std::string plain = dir_ + "/plain";
  stdfs::create_directory(plain);
  auto no_marker = ImportOciLayout(plain, "", *store_);
  ASSERT_FALSE(no_marker.ok());
  EXPECT_NE(no_marker.error().message().find("not an OCI image layout: no readable oci-layout file"),
            std::string::npos);

  ASSERT_TRUE(WriteFileAtomic(plain + "/oci-layout", "{\"imageLayoutVersion\":\"2.0.0\"}").ok());
  auto v2 = ImportOciLayout(plain, "", *store_);
  ASSERT_FALSE(v2.ok());
  EXPECT_NE(v2.error().message().find("version \"2.0.0\" is not supported"), std::string::npos);

  ASSERT_TRUE(WriteFileAtomic(plain + "/oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}").ok());
  auto no_index = ImportOciLayout(plain, "", *store_);
  ASSERT_FALSE(no_index.ok());
  EXPECT_EQ(no_index.error().message(), "OCI layout " + plain + ": not an OCI image layout: no index.json");

  ASSERT_TRUE(WriteFileAtomic(plain + "/index.json", "{\"schemaVersion\":2,\"manifests\":[{\"digest\":1}]}").ok());
  auto bad_index = ImportOciLayout(plain, "", *store_);
  ASSERT_FALSE(bad_index.ok());
  EXPECT_NE(bad_index.error().message().find("OCI layout " + plain + ": index.json: image index: manifests[0]"),
            std::string::npos)
      << bad_index.error().message();
}

}  // namespace
}  // namespace msb::image
