// Tests of image/oci_archive_writer: the documents of a base image plus an
// appended layer, read back with image/oci.h's parsers; the archive loaded
// again by image/image_archive.h into a fresh store and inspected by
// skopeo; and the errors (a config whose diff_ids do not match, a blob file
// of the wrong size).
#include "image/oci_archive_writer.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"
#include "image/image_archive.h"
#include "image/image_store.h"
#include "image/oci_layout.h"

namespace msb::image {
namespace {

using nlohmann::json;
namespace stdfs = std::filesystem;

// A one-file uncompressed tar at path; returns its bytes.
std::string MakeTar(const std::string& path, const std::string& name, const std::string& data) {
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  EXPECT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK);
  archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, name.c_str());
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_perm(e, 0644);
  archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
  EXPECT_EQ(archive_write_header(a, e), ARCHIVE_OK);
  EXPECT_EQ(archive_write_data(a, data.data(), data.size()), static_cast<la_ssize_t>(data.size()));
  archive_entry_free(e);
  archive_write_close(a);
  archive_write_free(a);
  auto bytes = ReadFile(path);
  EXPECT_TRUE(bytes.ok());
  return bytes.ok() ? *bytes : "";
}

class OciArchiveWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-oci-writer-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    std::string base_bytes = MakeTar(dir_ + "/base.tar", "etc/hello", "from the base\n");
    base_.media_type = std::string(OciLayerMediaType(oci::LayerCompression::kNone));
    base_.digest = oci::DigestOf(base_bytes);
    base_.size = static_cast<int64_t>(base_bytes.size());
    std::string top_bytes = MakeTar(dir_ + "/top.tar", "data.txt", "written in the sandbox\n");
    top_.path = dir_ + "/top.tar";
    top_.digest = oci::DigestOf(top_bytes);
    top_.size = top_bytes.size();
    top_.created_by = "msb snapshot create _run/src snap";
    top_.comment = "msb snapshot snap";
    config_ = json{{"architecture", "amd64"},
                   {"os", "linux"},
                   {"config", {{"Cmd", {"/bin/sh"}}, {"Env", {"PATH=/bin"}}}},
                   {"rootfs", {{"type", "layers"}, {"diff_ids", {base_.digest}}}},
                   {"history", {{{"created_by", "base"}}}},
                   {"x-kept", 7}}
                  .dump();
  }
  void TearDown() override {
    std::error_code ec;
    stdfs::remove_all(dir_, ec);
  }
  std::vector<ArchiveBlobFile> Blobs() const {
    return {{base_.digest, dir_ + "/base.tar", static_cast<uint64_t>(base_.size)},
            {top_.digest, top_.path, top_.size}};
  }

  std::string dir_;
  oci::Descriptor base_;
  AppendedLayer top_;
  std::string config_;
};

TEST_F(OciArchiveWriterTest, DocumentsAppendTheLayerToManifestConfigAndHistory) {
  auto docs = BuildArchiveDocuments(config_, {base_}, {top_}, "snap", "2026-01-02T03:04:05Z");
  ASSERT_TRUE(docs.ok()) << docs.error().message();

  auto kind = oci::ClassifyDocument(docs->manifest);
  ASSERT_TRUE(kind.ok());
  EXPECT_EQ(*kind, oci::DocumentKind::kManifest);
  auto m = oci::ParseManifest(docs->manifest);
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_EQ(m->media_type, oci::kMediaTypeOciManifest);
  EXPECT_EQ(m->config.media_type, oci::kMediaTypeOciConfig);
  EXPECT_EQ(m->config.digest, docs->config_digest);
  EXPECT_EQ(m->config.digest, oci::DigestOf(docs->config));
  EXPECT_EQ(m->config.size, static_cast<int64_t>(docs->config.size()));
  ASSERT_EQ(m->layers.size(), 2u);
  EXPECT_EQ(m->layers[0].digest, base_.digest);
  EXPECT_EQ(m->layers[1].digest, top_.digest);
  EXPECT_EQ(m->layers[1].size, static_cast<int64_t>(top_.size));
  EXPECT_EQ(m->layers[1].media_type, oci::kMediaTypeOciLayer);
  EXPECT_EQ(docs->manifest_digest, oci::DigestOf(docs->manifest));

  auto c = oci::ParseImageConfig(docs->config);
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->diff_ids, (std::vector<std::string>{base_.digest, top_.digest}));
  EXPECT_EQ(c->cmd, std::vector<std::string>{"/bin/sh"});
  EXPECT_EQ(c->created, "2026-01-02T03:04:05Z");
  json cj = json::parse(docs->config);
  EXPECT_EQ(cj.value("x-kept", 0), 7);
  ASSERT_EQ(cj["history"].size(), 2u);
  EXPECT_EQ(cj["history"][1].value("created_by", ""), top_.created_by);
  EXPECT_EQ(cj["history"][1].value("comment", ""), top_.comment);

  auto idx = oci::ParseIndex(docs->index);
  ASSERT_TRUE(idx.ok()) << idx.error().message();
  ASSERT_EQ(idx->manifests.size(), 1u);
  EXPECT_EQ(idx->manifests[0].digest, docs->manifest_digest);
  EXPECT_EQ(idx->manifests[0].annotations.at(std::string(kRefNameAnnotation)), "snap");

  // Without a history array, none is made up (it would not match the layers).
  json no_history = json::parse(config_);
  no_history.erase("history");
  auto d2 = BuildArchiveDocuments(no_history.dump(), {base_}, {top_}, "", "2026-01-02T03:04:05Z");
  ASSERT_TRUE(d2.ok());
  EXPECT_FALSE(json::parse(d2->config).contains("history"));
  EXPECT_FALSE(json::parse(d2->index)["manifests"][0].contains("annotations"));
}

TEST_F(OciArchiveWriterTest, ArchiveLoadsBackAndSkopeoReadsIt) {
  auto docs = BuildArchiveDocuments(config_, {base_}, {top_}, "snap", "2026-01-02T03:04:05Z");
  ASSERT_TRUE(docs.ok());
  const std::string out = dir_ + "/out.tar";
  {
    UniqueFd fd(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd.valid());
    auto st = WriteOciArchive(fd.get(), *docs, Blobs());
    ASSERT_TRUE(st.ok()) << st.error().message();
  }
  auto store = ImageStore::Open(dir_ + "/store");
  ASSERT_TRUE(store.ok());
  auto loaded = LoadImageArchive(out, *store);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  ASSERT_EQ(loaded->size(), 1u);
  EXPECT_EQ((*loaded)[0].format, ArchiveFormat::kOciArchive);
  EXPECT_EQ((*loaded)[0].names, std::vector<std::string>{"snap"});
  EXPECT_EQ((*loaded)[0].manifest_digest, docs->manifest_digest);
  auto img = store->ReadImage(docs->manifest_digest);
  ASSERT_TRUE(img.ok()) << img.error().message();
  EXPECT_TRUE(img->missing_blobs.empty());
  ASSERT_EQ(img->layers.size(), 2u);
  EXPECT_EQ(img->layers[1].diff_id, top_.digest);
  auto top = ReadFile(img->layers[1].path);
  ASSERT_TRUE(top.ok());
  EXPECT_EQ(oci::DigestOf(*top), top_.digest);

  auto r = RunCapture({"skopeo", "inspect", "--raw", "oci-archive:" + out}, false);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->status.code, 0) << r->output;
  EXPECT_EQ(r->output, docs->manifest);
  r = RunCapture({"skopeo", "inspect", "--config", "--raw", "oci-archive:" + out}, false);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->status.code, 0) << r->output;
  EXPECT_EQ(r->output, docs->config);
}

TEST_F(OciArchiveWriterTest, ErrorsNameWhatIsWrong) {
  json two = json::parse(config_);
  two["rootfs"]["diff_ids"].push_back(top_.digest);
  auto bad = BuildArchiveDocuments(two.dump(), {base_}, {top_}, "", "t");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("lists 2 diff_ids for 1 layers"), std::string::npos) << bad.error().message();
  auto not_json = BuildArchiveDocuments("[1]", {base_}, {top_}, "", "t");
  EXPECT_FALSE(not_json.ok());

  auto docs = BuildArchiveDocuments(config_, {base_}, {top_}, "", "t");
  ASSERT_TRUE(docs.ok());
  auto blobs = Blobs();
  blobs[1].size += 1;  // the file is shorter than its descriptor
  UniqueFd fd(::open((dir_ + "/bad.tar").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  auto st = WriteOciArchive(fd.get(), *docs, blobs);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("is shorter than"), std::string::npos) << st.error().message();
}

}  // namespace
}  // namespace msb::image
