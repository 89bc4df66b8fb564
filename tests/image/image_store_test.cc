// Tests of image/image_store: publication only of verified bytes, resume from a
// kept partial, one writer per digest across threads and processes, ENOSPC in
// a 1 MiB tmpfs (private mount namespace), per-image metadata, and garbage
// collection (prune, remove one image) with the GC lock.
#include "image/image_store.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/io.h"

namespace msb::image {
namespace {

using nlohmann::json;

std::string Pattern(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + (i * 7) % 251);
  return s;
}

bool Exists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

std::vector<std::string> Ls(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Waits until /proc/locks shows a blocked flock request ("->") on path's
// inode, i.e. a second writer is waiting for the first. False at the deadline.
bool WaitForFlockWaiter(const std::string& path, int deadline_ms = 10000) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return false;
  std::string ino = ":" + std::to_string(st.st_ino) + " ";
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadline_ms);
  while (std::chrono::steady_clock::now() < end) {
    std::ifstream in("/proc/locks");
    std::string line;
    while (std::getline(in, line)) {
      if (line.find("->") != std::string::npos && line.find("FLOCK") != std::string::npos &&
          line.find(ino) != std::string::npos) {
        return true;
      }
    }
    std::this_thread::yield();
  }
  return false;
}

class ImageStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-image-store-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    auto s = ImageStore::Open(dir_ + "/images");
    ASSERT_TRUE(s.ok()) << s.error().message();
    store_ = std::make_unique<ImageStore>(std::move(*s));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Ingest() const { return store_->root() + "/ingest"; }

  // Writes bytes through a sink and commits.
  Status Put(const std::string& digest, const std::string& bytes) {
    MSB_TRY(auto sink, store_->OpenBlob(digest, static_cast<int64_t>(bytes.size())));
    if (sink->Offset() == bytes.size()) return sink->Commit();  // already stored
    MSB_TRY_STATUS(sink->Write(bytes));
    return sink->Commit();
  }

  // A stored image: config and layers (gzip-typed), manifest; returns the
  // manifest digest. Layer contents are arbitrary bytes (the store does not
  // look inside layers).
  std::string MakeImage(const std::vector<std::string>& layers, const std::string& arch = "amd64",
                        bool store_layers = true) {
    json cfg = {{"architecture", arch}, {"os", "linux"}, {"rootfs", {{"type", "layers"}, {"diff_ids", json::array()}}},
                {"config", {{"Cmd", {"/bin/sh"}}}}};
    json man = {{"schemaVersion", 2}, {"mediaType", oci::kMediaTypeOciManifest}, {"layers", json::array()}};
    for (const auto& l : layers) {
      std::string d = oci::DigestOf(l);
      if (store_layers) EXPECT_TRUE(Put(d, l).ok());
      cfg["rootfs"]["diff_ids"].push_back(oci::DigestOf("diff:" + l));
      man["layers"].push_back({{"mediaType", oci::kMediaTypeOciLayerGzip}, {"digest", d}, {"size", l.size()}});
    }
    std::string cfg_bytes = cfg.dump();
    auto cd = store_->PutBlob(cfg_bytes);
    EXPECT_TRUE(cd.ok());
    man["config"] = {{"mediaType", oci::kMediaTypeOciConfig}, {"digest", *cd}, {"size", cfg_bytes.size()}};
    auto md = store_->PutBlob(man.dump());
    EXPECT_TRUE(md.ok());
    return *md;
  }

  std::string dir_;
  std::unique_ptr<ImageStore> store_;
};

TEST_F(ImageStoreTest, PublishesOnlyVerifiedBytesReadOnly) {
  std::string bytes = Pattern(300000, 'a');
  std::string digest = oci::DigestOf(bytes);
  EXPECT_FALSE(store_->HasBlob(digest));
  auto sink = store_->OpenBlob(digest, static_cast<int64_t>(bytes.size()));
  ASSERT_TRUE(sink.ok()) << sink.error().message();
  EXPECT_EQ((*sink)->Offset(), 0u);
  ASSERT_TRUE((*sink)->Write(std::string_view(bytes).substr(0, 1000)).ok());
  EXPECT_FALSE(store_->HasBlob(digest));  // not before Commit
  ASSERT_TRUE((*sink)->Write(std::string_view(bytes).substr(1000)).ok());
  ASSERT_TRUE((*sink)->Commit().ok());
  sink->reset();
  EXPECT_TRUE(store_->HasBlob(digest));
  EXPECT_EQ(store_->BlobPath(digest), store_->root() + "/blobs/sha256/" + digest.substr(7));
  auto back = ReadFile(store_->BlobPath(digest));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, bytes);
  struct stat st;
  ASSERT_EQ(::stat(store_->BlobPath(digest).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
  EXPECT_TRUE(Ls(Ingest()).empty());  // no partial, no lock left behind
  auto list = store_->ListBlobs();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, std::vector<std::string>{digest});
}

TEST_F(ImageStoreTest, RefusesInvalidDigestsAndSizes) {
  EXPECT_EQ(store_->BlobPath("sha256:../../etc/passwd"), "");
  EXPECT_FALSE(store_->HasBlob("sha512:" + std::string(64, 'a')));
  auto bad = store_->OpenBlob("sha256:" + std::string(64, 'A'), 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(bad.error().message().find("not sha256:<64 lowercase hex>"), std::string::npos);
  EXPECT_FALSE(store_->OpenBlob(oci::DigestOf("x"), -2).ok());
}

TEST_F(ImageStoreTest, DigestMismatchDiscardsAndNamesTheBlob) {
  std::string digest = oci::DigestOf("the right bytes");
  auto sink = store_->OpenBlob(digest, 15);
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->Write("the wrong bytes").ok());
  auto st = (*sink)->Commit();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kProtocol);
  EXPECT_NE(st.error().message().find("blob " + digest + " does not match its content"), std::string::npos)
      << st.error().message();
  EXPECT_NE(st.error().message().find(oci::DigestOf("the wrong bytes")), std::string::npos);
  EXPECT_FALSE((*sink)->Write("more").ok());  // the sink is spent
  sink->reset();
  EXPECT_FALSE(store_->HasBlob(digest));
  EXPECT_TRUE(Ls(Ingest()).empty());
}

TEST_F(ImageStoreTest, SizeMismatchIsRefused) {
  std::string bytes = "0123456789";
  std::string digest = oci::DigestOf(bytes);
  {
    auto sink = store_->OpenBlob(digest, 11);
    ASSERT_TRUE(sink.ok());
    ASSERT_TRUE((*sink)->Write(bytes).ok());
    auto st = (*sink)->Commit();
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message().find("got 10 bytes, its descriptor declares 11"), std::string::npos);
  }
  {
    auto sink = store_->OpenBlob(digest, 5);
    ASSERT_TRUE(sink.ok());
    auto st = (*sink)->Write(bytes);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message().find("more than the 5 bytes"), std::string::npos);
  }
  EXPECT_FALSE(store_->HasBlob(digest));
  EXPECT_TRUE(Ls(Ingest()).empty());
  // Size unknown (-1): whatever hashes right is accepted.
  auto sink = store_->OpenBlob(digest, -1);
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->Write(bytes).ok());
  ASSERT_TRUE((*sink)->Commit().ok());
  EXPECT_TRUE(store_->HasBlob(digest));
}

TEST_F(ImageStoreTest, ResumesFromTheKeptPartial) {
  std::string bytes = Pattern(3 << 20, 'r');
  std::string digest = oci::DigestOf(bytes);
  const size_t cut = (1 << 20) + 12345;
  {
    auto sink = store_->OpenBlob(digest, static_cast<int64_t>(bytes.size()));
    ASSERT_TRUE(sink.ok());
    ASSERT_TRUE((*sink)->Write(std::string_view(bytes).substr(0, cut)).ok());
    // Destroyed without Commit: an interrupted download.
  }
  EXPECT_FALSE(store_->HasBlob(digest));
  EXPECT_TRUE(Exists(Ingest() + "/" + digest.substr(7) + ".partial"));
  auto sink = store_->OpenBlob(digest, static_cast<int64_t>(bytes.size()));
  ASSERT_TRUE(sink.ok());
  EXPECT_EQ((*sink)->Offset(), cut);
  ASSERT_TRUE((*sink)->Write(std::string_view(bytes).substr(cut)).ok());
  ASSERT_TRUE((*sink)->Commit().ok()) << "the hash state was restored from the partial";
  EXPECT_EQ(*ReadFile(store_->BlobPath(digest)), bytes);
}

TEST_F(ImageStoreTest, RestartAndOverlongPartial) {
  std::string bytes = Pattern(5000, 'q');
  std::string digest = oci::DigestOf(bytes);
  {
    auto sink = store_->OpenBlob(digest, -1);
    ASSERT_TRUE(sink.ok());
    ASSERT_TRUE((*sink)->Write(Pattern(6000, 'z')).ok());
  }
  // The partial is longer than the size now declared: start again.
  auto sink = store_->OpenBlob(digest, 5000);
  ASSERT_TRUE(sink.ok());
  EXPECT_EQ((*sink)->Offset(), 0u);
  ASSERT_TRUE((*sink)->Write("garbage").ok());
  ASSERT_TRUE((*sink)->Restart().ok());
  EXPECT_EQ((*sink)->Offset(), 0u);
  ASSERT_TRUE((*sink)->Write(bytes).ok());
  ASSERT_TRUE((*sink)->Commit().ok());
}

TEST_F(ImageStoreTest, CorruptPartialFailsVerificationAndIsDropped) {
  std::string bytes = Pattern(10000, 'c');
  std::string digest = oci::DigestOf(bytes);
  {
    auto sink = store_->OpenBlob(digest, 10000);
    ASSERT_TRUE(sink.ok());
    ASSERT_TRUE((*sink)->Write(std::string_view(bytes).substr(0, 4000)).ok());
  }
  std::string partial = Ingest() + "/" + digest.substr(7) + ".partial";
  {
    std::fstream f(partial, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  auto sink = store_->OpenBlob(digest, 10000);
  ASSERT_TRUE(sink.ok());
  ASSERT_EQ((*sink)->Offset(), 4000u);
  ASSERT_TRUE((*sink)->Write(std::string_view(bytes).substr(4000)).ok());
  auto st = (*sink)->Commit();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find(digest), std::string::npos);
  EXPECT_FALSE(Exists(partial));
  sink->reset();
  auto again = store_->OpenBlob(digest, 10000);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->Offset(), 0u);
}

TEST_F(ImageStoreTest, SecondWriterOfOneBlobWaitsThenFindsItPublished) {
  std::string bytes = Pattern(200000, 't');
  std::string digest = oci::DigestOf(bytes);
  auto first = store_->OpenBlob(digest, static_cast<int64_t>(bytes.size()));
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE((*first)->Write(std::string_view(bytes).substr(0, 1000)).ok());

  std::atomic<bool> opened{false};
  uint64_t second_offset = 0;
  bool second_commit_ok = false, second_write_refused = false;
  std::thread second([&] {
    auto s = store_->OpenBlob(digest, static_cast<int64_t>(bytes.size()));
    opened = true;
    if (!s.ok()) return;
    second_offset = (*s)->Offset();
    second_write_refused = !(*s)->Write("x").ok();
    second_commit_ok = (*s)->Commit().ok();
  });
  ASSERT_TRUE(WaitForFlockWaiter(Ingest() + "/" + digest.substr(7) + ".lock"))
      << "the second writer never blocked on the first";
  EXPECT_FALSE(opened.load());
  ASSERT_TRUE((*first)->Write(std::string_view(bytes).substr(1000)).ok());
  ASSERT_TRUE((*first)->Commit().ok());
  second.join();
  EXPECT_TRUE(opened.load());
  EXPECT_EQ(second_offset, bytes.size());
  EXPECT_TRUE(second_write_refused);
  EXPECT_TRUE(second_commit_ok);
  first->reset();
  EXPECT_EQ(*ReadFile(store_->BlobPath(digest)), bytes);
  EXPECT_TRUE(Ls(Ingest()).empty());
}

TEST_F(ImageStoreTest, RestartOnAPublishedBlobOnlyChecks) {
  std::string bytes = Pattern(4000, 'k');
  std::string digest = oci::DigestOf(bytes);
  ASSERT_TRUE(Put(digest, bytes).ok());
  // A writer that lost the race and writes its copy again from the start.
  auto sink = store_->OpenBlob(digest, 4000);
  ASSERT_TRUE(sink.ok());
  EXPECT_EQ((*sink)->Offset(), 4000u);
  ASSERT_TRUE((*sink)->Restart().ok());
  EXPECT_EQ((*sink)->Offset(), 0u);
  ASSERT_TRUE((*sink)->Write(bytes).ok());
  EXPECT_TRUE((*sink)->Commit().ok());
  // Wrong bytes are refused and the stored blob stays as it was.
  auto bad = store_->OpenBlob(digest, 4000);
  ASSERT_TRUE(bad.ok());
  ASSERT_TRUE((*bad)->Restart().ok());
  ASSERT_TRUE((*bad)->Write(Pattern(4000, 'x')).ok());
  auto st = (*bad)->Commit();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("the stored blob is unchanged"), std::string::npos);
  EXPECT_EQ(*ReadFile(store_->BlobPath(digest)), bytes);
  // A descriptor of another size for a stored blob is an error.
  auto other = store_->OpenBlob(digest, 3999);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE((*other)->Commit().ok());
}

TEST_F(ImageStoreTest, WritersInTwoProcessesDoTheWorkOnce) {
  std::string bytes = Pattern(100000, 'p');
  std::string digest = oci::DigestOf(bytes);
  // Forked before the first writer opens: a child must not inherit its lock.
  int p[2], go[2];
  ASSERT_EQ(::pipe(p), 0);
  ASSERT_EQ(::pipe(go), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(p[0]);
    ::close(go[1]);
    char c;
    if (::read(go[0], &c, 1) != 1) ::_exit(1);
    auto s = store_->OpenBlob(digest, static_cast<int64_t>(bytes.size()));
    std::string report = !s.ok() ? "open failed" : std::to_string((*s)->Offset()) + ((*s)->Commit().ok() ? " ok" : " bad");
    (void)!::write(p[1], report.data(), report.size());
    ::_exit(0);
  }
  ::close(go[0]);
  UniqueFd go_wr(go[1]);
  auto first = store_->OpenBlob(digest, static_cast<int64_t>(bytes.size()));
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(::write(go_wr.get(), "g", 1), 1);
  ::close(p[1]);
  UniqueFd rd(p[0]);
  ASSERT_TRUE(WaitForFlockWaiter(Ingest() + "/" + digest.substr(7) + ".lock"));
  ASSERT_TRUE((*first)->Write(bytes).ok());
  ASSERT_TRUE((*first)->Commit().ok());
  std::string got;
  char buf[64];
  ssize_t n;
  while ((n = ::read(rd.get(), buf, sizeof buf)) > 0) got.append(buf, static_cast<size_t>(n));
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_EQ(got, std::to_string(bytes.size()) + " ok");
}

TEST_F(ImageStoreTest, DiskFullIsACleanErrorWithNothingLeft) {
  // A child in its own mount namespace mounts a 1 MiB tmpfs and writes a
  // 2 MiB blob into a store there; it reports through its exit code.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::unshare(CLONE_NEWNS) != 0) ::_exit(77);
    if (::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) ::_exit(77);
    std::string mnt = dir_ + "/small";
    ::mkdir(mnt.c_str(), 0755);
    if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=1m") != 0) ::_exit(77);
    auto s = ImageStore::Open(mnt + "/images");
    if (!s.ok()) ::_exit(10);
    std::string bytes = Pattern(2 << 20, 'f');
    std::string digest = oci::DigestOf(bytes);
    auto sink = s->OpenBlob(digest, static_cast<int64_t>(bytes.size()));
    if (!sink.ok()) ::_exit(11);
    Status st = OkStatus();
    for (size_t off = 0; off < bytes.size() && st.ok(); off += 65536) {
      st = (*sink)->Write(std::string_view(bytes).substr(off, 65536));
    }
    if (st.ok()) st = (*sink)->Commit();
    if (st.ok()) ::_exit(12);
    if (st.error().sys_errno() != ENOSPC) ::_exit(13);
    if (st.error().message().find(digest) == std::string::npos) ::_exit(14);
    if (st.error().message().find("free some space") == std::string::npos) ::_exit(15);
    if (s->HasBlob(digest)) ::_exit(16);
    if (Exists(mnt + "/images/ingest/" + digest.substr(7) + ".partial")) ::_exit(17);
    sink->reset();
    // Space came back: a small blob still goes in.
    auto small = s->PutBlob("after");
    if (!small.ok()) ::_exit(18);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "cannot make a private mount namespace with a tmpfs here";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "see the exit codes in the child";
}

TEST_F(ImageStoreTest, BlobWriterPublishesUnderTheContentDigest) {
  auto w = store_->CreateBlob();
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Write("hello ").ok());
  ASSERT_TRUE((*w)->Write("world").ok());
  EXPECT_EQ((*w)->size(), 11u);
  auto d = (*w)->Commit();
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, oci::DigestOf("hello world"));
  EXPECT_TRUE(store_->HasBlob(*d));
  auto again = store_->PutBlob("hello world");  // already there: same digest, no error
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *d);
  {
    auto dropped = store_->CreateBlob();
    ASSERT_TRUE(dropped.ok());
    ASSERT_TRUE((*dropped)->Write("never committed").ok());
  }
  EXPECT_FALSE(store_->HasBlob(oci::DigestOf("never committed")));
  EXPECT_TRUE(Ls(Ingest()).empty());
}

TEST_F(ImageStoreTest, ReadDocumentRecheck) {
  auto d = store_->PutBlob("{\"a\":1}");
  ASSERT_TRUE(d.ok());
  auto doc = store_->ReadDocument(*d);
  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(*doc, "{\"a\":1}");
  auto missing = store_->ReadDocument(oci::DigestOf("nope"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  // Damage at rest is noticed and named.
  std::string path = store_->BlobPath(*d);
  ::chmod(path.c_str(), 0644);
  ASSERT_TRUE(WriteFileAtomic(path, "{\"a\":2}").ok());
  auto bad = store_->ReadDocument(*d);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("blob " + *d), std::string::npos);
  EXPECT_NE(bad.error().message().find("no longer matches"), std::string::npos);
}

TEST_F(ImageStoreTest, ReadImageListsLayersInOrder) {
  std::string md = MakeImage({"layer-one", "layer-two"});
  auto img = store_->ReadImage(md);
  ASSERT_TRUE(img.ok()) << img.error().message();
  EXPECT_EQ(img->manifest_digest, md);
  EXPECT_EQ(img->manifest_media_type, oci::kMediaTypeOciManifest);
  ASSERT_EQ(img->layers.size(), 2u);
  EXPECT_EQ(img->layers[0].digest, oci::DigestOf("layer-one"));
  EXPECT_EQ(img->layers[1].diff_id, oci::DigestOf("diff:layer-two"));
  EXPECT_EQ(img->layers[0].compression, oci::LayerCompression::kGzip);
  EXPECT_EQ(img->layers[1].path, store_->BlobPath(oci::DigestOf("layer-two")));
  EXPECT_TRUE(img->missing_blobs.empty());
  EXPECT_EQ(img->config.cmd, std::vector<std::string>{"/bin/sh"});
  EXPECT_EQ(img->base_disk, store_->root() + "/disks/" + md.substr(7) + ".ext4");
  auto man = store_->ReadDocument(md);
  auto cfg = store_->ReadDocument(img->config_digest);
  EXPECT_EQ(img->size_bytes, static_cast<int64_t>(man->size() + cfg->size() + 9 + 9));

  // Layers not yet stored are reported, not an error.
  std::string partial_img = MakeImage({"absent-layer"}, "amd64", false);
  auto p = store_->ReadImage(partial_img);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->missing_blobs, std::vector<std::string>{oci::DigestOf("absent-layer")});

  // An index is followed to linux/amd64.
  std::string arm = MakeImage({"arm-layer"}, "arm64");
  json index = {{"schemaVersion", 2},
                {"mediaType", oci::kMediaTypeOciIndex},
                {"manifests",
                 {{{"mediaType", oci::kMediaTypeOciManifest}, {"digest", arm}, {"size", 1},
                   {"platform", {{"os", "linux"}, {"architecture", "arm64"}}}},
                  {{"mediaType", oci::kMediaTypeOciManifest}, {"digest", md}, {"size", 1},
                   {"platform", {{"os", "linux"}, {"architecture", "amd64"}}}}}}};
  auto id = store_->PutBlob(index.dump());
  ASSERT_TRUE(id.ok());
  auto via = store_->ReadImage(*id);
  ASSERT_TRUE(via.ok()) << via.error().message();
  EXPECT_EQ(via->root_digest, *id);
  EXPECT_EQ(via->manifest_digest, md);
  auto blobs = store_->ImageBlobs(*id);
  ASSERT_TRUE(blobs.ok());
  EXPECT_TRUE(blobs->count(oci::DigestOf("arm-layer")));
  EXPECT_TRUE(blobs->count(oci::DigestOf("layer-one")));
  EXPECT_EQ(blobs->size(), 1u + 3 + 4);  // index; arm: manifest, config, layer; amd64: + 2 layers

  auto none = store_->ReadImage(oci::DigestOf("not stored"));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code(), ErrorCode::kNotFound);
}

TEST_F(ImageStoreTest, PruneKeepsWhatIsReferencedAndRemovesTheRest) {
  std::string a = MakeImage({"shared-layer", "a-layer"});
  std::string b = MakeImage({"shared-layer", "b-layer"});
  auto orphan = store_->PutBlob("orphan");
  ASSERT_TRUE(orphan.ok());
  ASSERT_TRUE(WriteFileAtomic(store_->DiskPath(a), "disk a").ok());
  ASSERT_TRUE(WriteFileAtomic(store_->DiskPath(b), "disk b").ok());
  ASSERT_TRUE(WriteFileAtomic(store_->root() + "/disks/not-a-disk-name", "x").ok());
  // Base disks of local directories, by tree hash: one in use, one not.
  std::string local_dir_digest = oci::DigestOf("a local directory tree");
  std::string local_disk = store_->root() + "/local/" + local_dir_digest.substr(7) + ".ext4";
  std::string stale_local = store_->root() + "/local/" + oci::DigestOf("an old tree").substr(7) + ".ext4";
  ASSERT_TRUE(MakeDirs(store_->root() + "/local").ok());
  ASSERT_TRUE(WriteFileAtomic(local_disk, "dir disk").ok());
  ASSERT_TRUE(WriteFileAtomic(stale_local, "old dir disk").ok());
  // An interrupted download, and one in progress.
  std::string idle = Pattern(1000, 'i'), busy = Pattern(1000, 'j');
  {
    auto s = store_->OpenBlob(oci::DigestOf(idle), 1000);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->Write(idle.substr(0, 10)).ok());
  }
  auto busy_sink = store_->OpenBlob(oci::DigestOf(busy), 1000);
  ASSERT_TRUE(busy_sink.ok());
  ASSERT_TRUE((*busy_sink)->Write(busy.substr(0, 10)).ok());

  {
    auto import = store_->LockForImport();
    ASSERT_TRUE(import.ok());
    auto refused = store_->LockForGc();
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().code(), ErrorCode::kState);
    EXPECT_NE(refused.error().message().find("in use by a pull or load"), std::string::npos);
  }
  auto gc = store_->LockForGc();
  ASSERT_TRUE(gc.ok());
  auto dry = store_->Prune({a, local_dir_digest}, *gc, /*dry_run=*/true);
  ASSERT_TRUE(dry.ok());
  EXPECT_TRUE(store_->HasBlob(b));
  auto rep = store_->Prune({a, local_dir_digest}, *gc);
  ASSERT_TRUE(rep.ok()) << rep.error().message();
  EXPECT_EQ(rep->blobs, dry->blobs);
  EXPECT_EQ(rep->disks, dry->disks);
  EXPECT_EQ(rep->partials, dry->partials);

  auto a_blobs = store_->ImageBlobs(a);
  ASSERT_TRUE(a_blobs.ok());
  EXPECT_EQ(a_blobs->size(), 4u);  // manifest, config, two layers: each must be kept
  EXPECT_TRUE(a_blobs->count(oci::DigestOf("shared-layer")));
  for (const auto& d : *a_blobs) EXPECT_TRUE(store_->HasBlob(d)) << d;
  EXPECT_FALSE(store_->HasBlob(b));
  EXPECT_FALSE(store_->HasBlob(oci::DigestOf("b-layer")));
  EXPECT_FALSE(store_->HasBlob(*orphan));
  EXPECT_TRUE(store_->HasBlob(oci::DigestOf("shared-layer")));
  // b's manifest, config, layer and the orphan.
  EXPECT_EQ(rep->blobs.size(), 4u);
  EXPECT_TRUE(Exists(store_->DiskPath(a)));
  EXPECT_FALSE(Exists(store_->DiskPath(b)));
  EXPECT_TRUE(Exists(local_disk));
  EXPECT_FALSE(Exists(stale_local));
  EXPECT_TRUE(Exists(store_->root() + "/disks/not-a-disk-name"));
  EXPECT_EQ(rep->disks, (std::vector<std::string>{store_->DiskPath(b), stale_local}));
  EXPECT_EQ(rep->partials, std::vector<std::string>{Ingest() + "/" + oci::DigestOf(idle).substr(7) + ".partial"});
  // The busy writer is untouched and still completes.
  ASSERT_TRUE((*busy_sink)->Write(busy.substr(10)).ok());
  ASSERT_TRUE((*busy_sink)->Commit().ok());
}

TEST_F(ImageStoreTest, PruneRefusesWhenAKeptImageIsDamaged) {
  std::string a = MakeImage({"only-layer"});
  auto orphan = store_->PutBlob("orphan");
  std::string path = store_->BlobPath(a);
  ::chmod(path.c_str(), 0644);
  ASSERT_TRUE(WriteFileAtomic(path, "{}").ok());
  auto gc = store_->LockForGc();
  ASSERT_TRUE(gc.ok());
  auto rep = store_->Prune({a}, *gc);
  ASSERT_FALSE(rep.ok());
  EXPECT_NE(rep.error().message().find(a), std::string::npos);
  EXPECT_TRUE(store_->HasBlob(*orphan));  // nothing removed
}

TEST_F(ImageStoreTest, RemoveImageTakesOnlyWhatNobodyElseHolds) {
  std::string a = MakeImage({"shared-layer", "a-layer"});
  std::string b = MakeImage({"shared-layer", "b-layer"});
  auto orphan = store_->PutBlob("orphan");
  ASSERT_TRUE(WriteFileAtomic(store_->DiskPath(b), "disk b").ok());
  auto gc = store_->LockForGc();
  ASSERT_TRUE(gc.ok());
  auto kept = store_->RemoveImage(b, {a, b}, *gc);  // still referenced elsewhere
  ASSERT_TRUE(kept.ok());
  EXPECT_TRUE(kept->blobs.empty());
  auto rep = store_->RemoveImage(b, {a}, *gc);
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->blobs.size(), 3u);
  EXPECT_FALSE(store_->HasBlob(b));
  EXPECT_FALSE(store_->HasBlob(oci::DigestOf("b-layer")));
  EXPECT_TRUE(store_->HasBlob(oci::DigestOf("shared-layer")));
  EXPECT_TRUE(store_->HasBlob(*orphan));  // not b's: prune's business
  EXPECT_FALSE(Exists(store_->DiskPath(b)));
  EXPECT_EQ(rep->disks, std::vector<std::string>{store_->DiskPath(b)});
}

}  // namespace
}  // namespace msb::image
