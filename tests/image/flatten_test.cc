// image::FlattenLayers with a real builder microVM (TCG) and the real agentd:
// layers written here with libarchive (gzip, zstd, uncompressed), flattened
// into an ext4 disk that is inspected with debugfs, never mounted. Covers the
// OCI changeset rules (whiteouts, opaque directories, replacements, hard and
// symbolic links, devices, fifos, owners, setuid, xattrs, mtimes), hostile
// names confined to the root, refused escapes, diff_id mismatches, and more
// layers than one builder boot takes. Skipped without a guest kernel.
#include "image/flatten.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <clocale>
#include <filesystem>
#include <map>
#include <set>

#include "common/archive_ptr.h"
#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"
#include "common/sha256.h"
#include "common/result.h"
#include "vm/initramfs.h"
#include "vm/kernel.h"

namespace msb::image {
namespace {

namespace sfs = std::filesystem;


// One tar entry to write.
struct E {
  std::string name;
  mode_t type = AE_IFREG;
  int mode = 0644;
  std::string data;     // regular files
  std::string link;     // symlink target
  std::string hardlink; // hard link target (type ignored)
  int64_t uid = 0, gid = 0;
  unsigned major = 0, minor = 0;
  std::map<std::string, std::string> xattrs;
  int64_t mtime = 1700000000;
};

E File(std::string name, std::string data, int mode = 0644) {
  E e;
  e.name = std::move(name);
  e.data = std::move(data);
  e.mode = mode;
  return e;
}
E Dir(std::string name, int mode = 0755) {
  E e;
  e.name = std::move(name);
  e.type = AE_IFDIR;
  e.mode = mode;
  return e;
}
E Symlink(std::string name, std::string target) {
  E e;
  e.name = std::move(name);
  e.type = AE_IFLNK;
  e.mode = 0777;
  e.link = std::move(target);
  return e;
}
E Hardlink(std::string name, std::string target) {
  E e;
  e.name = std::move(name);
  e.hardlink = std::move(target);
  return e;
}

la_ssize_t AppendTo(archive*, void* out, const void* buf, size_t n) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

// An uncompressed pax tar of entries.
std::string Tar(const std::vector<E>& entries) {
  std::string out;
  ArchiveWritePtr a(archive_write_new());
  archive_write_set_format_pax_restricted(a.get());
  archive_write_add_filter_none(a.get());
  archive_write_set_bytes_in_last_block(a.get(), 1);
  EXPECT_EQ(archive_write_open(a.get(), &out, nullptr, AppendTo, nullptr), ARCHIVE_OK);
  for (const E& e : entries) {
    ArchiveEntryPtr en(archive_entry_new());
    archive_entry_set_pathname(en.get(), e.name.c_str());
    archive_entry_set_uid(en.get(), e.uid);
    archive_entry_set_gid(en.get(), e.gid);
    archive_entry_set_mtime(en.get(), e.mtime, 0);
    if (!e.hardlink.empty()) {
      archive_entry_set_filetype(en.get(), AE_IFREG);
      archive_entry_set_perm(en.get(), e.mode);
      archive_entry_set_hardlink(en.get(), e.hardlink.c_str());
      archive_entry_set_size(en.get(), 0);
    } else {
      archive_entry_set_filetype(en.get(), e.type);
      archive_entry_set_perm(en.get(), e.mode);
      if (e.type == AE_IFLNK) archive_entry_set_symlink(en.get(), e.link.c_str());
      if (e.type == AE_IFCHR || e.type == AE_IFBLK) {
        archive_entry_set_rdevmajor(en.get(), e.major);
        archive_entry_set_rdevminor(en.get(), e.minor);
      }
      archive_entry_set_size(en.get(), e.type == AE_IFREG ? static_cast<la_int64_t>(e.data.size()) : 0);
    }
    for (const auto& [k, v] : e.xattrs) archive_entry_xattr_add_entry(en.get(), k.c_str(), v.data(), v.size());
    EXPECT_EQ(archive_write_header(a.get(), en.get()), ARCHIVE_OK) << e.name << ": " << archive_error_string(a.get());
    if (e.type == AE_IFREG && e.hardlink.empty() && !e.data.empty())
      EXPECT_EQ(archive_write_data(a.get(), e.data.data(), e.data.size()), static_cast<la_ssize_t>(e.data.size()));
  }
  EXPECT_EQ(archive_write_close(a.get()), ARCHIVE_OK);
  return out;
}

enum class Compression { kNone, kGzip, kZstd };

// bytes compressed as one raw stream.
std::string Compress(const std::string& bytes, Compression c) {
  if (c == Compression::kNone) return bytes;
  std::string out;
  ArchiveWritePtr a(archive_write_new());
  archive_write_set_format_raw(a.get());
  if (c == Compression::kGzip) EXPECT_EQ(archive_write_add_filter_gzip(a.get()), ARCHIVE_OK);
  else EXPECT_EQ(archive_write_add_filter_zstd(a.get()), ARCHIVE_OK) << archive_error_string(a.get());
  archive_write_set_bytes_in_last_block(a.get(), 1);
  EXPECT_EQ(archive_write_open(a.get(), &out, nullptr, AppendTo, nullptr), ARCHIVE_OK);
  ArchiveEntryPtr en(archive_entry_new());
  archive_entry_set_pathname(en.get(), "data");
  archive_entry_set_filetype(en.get(), AE_IFREG);
  archive_entry_set_size(en.get(), static_cast<la_int64_t>(bytes.size()));
  EXPECT_EQ(archive_write_header(a.get(), en.get()), ARCHIVE_OK);
  EXPECT_EQ(archive_write_data(a.get(), bytes.data(), bytes.size()), static_cast<la_ssize_t>(bytes.size()));
  EXPECT_EQ(archive_write_close(a.get()), ARCHIVE_OK);
  return out;
}

// debugfs's answer on stdout (its banner, on stderr, is dropped).
std::string DebugfsOut(const std::string& image, const std::string& request) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return "";
  UniqueFd rd(p[0]), wr(p[1]);
  SpawnOptions opts;
  opts.argv = {"debugfs", "-R", request, image};
  opts.stdout_fd = wr.get();
  opts.stderr_fd = -2;
  auto child = ChildProcess::Spawn(opts);
  EXPECT_TRUE(child.ok());
  if (!child.ok()) return "";
  wr.Reset();
  std::string out;
  char buf[8192];
  for (ssize_t n; (n = ::read(rd.get(), buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  EXPECT_EQ(child->Wait().code, 0) << request;
  return out;
}

// Every path in the image (debugfs "ls -p", recursively), with its mode.
void Walk(const std::string& image, const std::string& dir, std::map<std::string, unsigned>* out, int depth = 0) {
  ASSERT_LT(depth, 32);
  std::string listing = DebugfsOut(image, "ls -p \"" + (dir.empty() ? "/" : dir) + "\"");
  size_t pos = 0;
  while (pos < listing.size()) {
    size_t end = listing.find('\n', pos);
    if (end == std::string::npos) end = listing.size();
    std::string line = listing.substr(pos, end - pos);
    pos = end + 1;
    // /inode/mode/uid/gid/name/size/
    std::vector<std::string> f;
    size_t s = 0;
    while (s < line.size()) {
      size_t e = line.find('/', s);
      if (e == std::string::npos) e = line.size();
      f.push_back(line.substr(s, e - s));
      s = e + 1;
    }
    if (f.size() < 6) continue;
    const std::string& name = f[5];
    if (name == "." || name == ".." || name.empty()) continue;
    unsigned mode = static_cast<unsigned>(std::stoul(f[2], nullptr, 8));
    std::string path = dir + "/" + name;
    (*out)[path] = mode;
    if ((mode & 0170000) == 0040000 && name != "lost+found") Walk(image, path, out, depth + 1);
  }
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : sfs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Scratch directories the unpacker left in dir (the test's own TMPDIR, so
// that unpacks of other tests running at the same time are not counted).
int CountUnpackScratch(const std::string& dir) {
  int n = 0;
  for (const auto& e : sfs::directory_iterator(dir))
    if (e.path().filename().string().rfind("msb-unpack-", 0) == 0) ++n;
  return n;
}

class UnpackTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // libarchive writes non-ASCII names as UTF-8 pax records only when the
    // locale says what the bytes are.
    std::setlocale(LC_ALL, "C.UTF-8");
    auto kernel = vm::FindKernel();
    if (!kernel.ok() || ::access("/usr/sbin/debugfs", X_OK) != 0 || ::access("/usr/sbin/mkfs.ext4", X_OK) != 0)
      return;
    kernel_ = *kernel;
    char tmpl[] = "/tmp/msb-unpacktest-suite-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    suite_dir_ = tmpl;
    ASSERT_TRUE(vm::BuildInitramfs(AGENTD_PATH, suite_dir_ + "/initramfs.cpio").ok());
  }
  static void TearDownTestSuite() {
    if (!suite_dir_.empty()) sfs::remove_all(suite_dir_);
  }
  void SetUp() override {
    if (kernel_.empty()) GTEST_SKIP() << "needs a guest kernel (msb kernel build), debugfs and mkfs.ext4";
    char tmpl[] = "/tmp/msb-unpacktest-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    char tmp_tmpl[] = "/tmp/msb-unpacktmp-XXXXXX";
    ASSERT_NE(::mkdtemp(tmp_tmpl), nullptr);
    tmp_ = tmp_tmpl;
    ::setenv("TMPDIR", tmp_.c_str(), 1);
    scratch_before_ = CountUnpackScratch(tmp_);
    // Builder templates (vm/builder_vm.h) go into the test's own $MSB_HOME.
    home_ = dir_ + "-home";
    ASSERT_TRUE(MakeDirs(home_).ok());
    ::setenv("MSB_HOME", home_.c_str(), 1);
    ::unsetenv("MSB_BOOT");
  }
  void TearDown() override {
    ::unsetenv("TMPDIR");
    ::unsetenv("MSB_HOME");
    ::unsetenv("MSB_BOOT");
    if (!dir_.empty()) sfs::remove_all(dir_);
    if (!tmp_.empty()) sfs::remove_all(tmp_);
    if (!home_.empty()) sfs::remove_all(home_);
  }

  // Writes a layer blob; returns its spec (diff_id of the uncompressed tar).
  UnpackLayerSpec Layer(const std::vector<E>& entries, Compression c) {
    std::string tar = Tar(entries);
    std::string blob = Compress(tar, c);
    std::string path = dir_ + "/layer" + std::to_string(layers_written_++);
    EXPECT_TRUE(WriteFileAtomic(path, blob, 0644).ok());
    UnpackLayerSpec l;
    l.path = path;
    l.size = blob.size();
    l.diff_id = "sha256:" + Sha256Hex(tar);
    l.media_type = c == Compression::kNone   ? "application/vnd.oci.image.layer.v1.tar"
                   : c == Compression::kGzip ? "application/vnd.oci.image.layer.v1.tar+gzip"
                                             : "application/vnd.oci.image.layer.v1.tar+zstd";
    tar_sizes_.push_back(tar.size());
    return l;
  }

  FlattenRequest Request(std::vector<UnpackLayerSpec> layers) {
    FlattenRequest r;
    r.layers = std::move(layers);
    r.output = dir_ + "/base.ext4";
    r.vm.kernel = kernel_;
    r.vm.initramfs = suite_dir_ + "/initramfs.cpio";
    r.timeout = std::chrono::minutes(4);
    return r;
  }

  // After a failure: no output, no temporary disk, no scratch directory.
  void ExpectNothingLeft(const std::vector<std::string>& before) {
    EXPECT_EQ(ListDir(dir_), before);
    EXPECT_EQ(CountUnpackScratch(tmp_), scratch_before_);
  }

  std::string Stat(const std::string& path) { return DebugfsOut(dir_ + "/base.ext4", "stat \"" + path + "\""); }
  std::string Cat(const std::string& path) { return DebugfsOut(dir_ + "/base.ext4", "cat \"" + path + "\""); }

  static inline std::string kernel_, suite_dir_;
  std::string dir_;
  std::string tmp_;  // TMPDIR of the test: where the unpacker makes its scratch directory
  std::string home_;  // MSB_HOME of the test: its builder templates
  int layers_written_ = 0;
  int scratch_before_ = 0;
  std::vector<size_t> tar_sizes_;
};

// A valid VFS_CAP_REVISION_2 security.capability granting cap_net_bind_service.
std::string CapNetBindService() {
  uint32_t words[5] = {0x02000001u, 1u << 10, 0, 0, 0};
  return std::string(reinterpret_cast<const char*>(words), sizeof words);
}

TEST_F(UnpackTest, FlattensLayersAndConfinesHostileNames) {
  std::vector<UnpackLayerSpec> layers;
  // Layer 0, gzip: the lower content.
  layers.push_back(Layer(
      {Dir("etc"), File("etc/passwd", "root:x:0:0::/root:/bin/sh\n"), Dir("bin"),
       File("bin/busy", "v1", 0755), Dir("usr"), Dir("usr/lib"), File("usr/lib/keep.txt", "keep"),
       Symlink("lib", "usr/lib"), Symlink("abs", "/etc/passwd"), Dir("opaque"), File("opaque/old1", "old"),
       Dir("opaque/sub"), File("opaque/sub/old2", "old"), Dir("opaque/kept"), File("opaque/kept/old3", "old"),
       File("gone.txt", "bye"), Dir("gonedir"), File("gonedir/f", "bye"), Dir("dir2file"),
       File("dir2file/child", "x"), File("file2dir", "x"), File("samelayer", "x")},
      Compression::kGzip));
  // Layer 1, uncompressed: whiteouts, opaque, replacements, special files.
  E su = File("bin/su", "su", 04755);
  E owned = File("home/user/f", "mine", 0640);
  owned.uid = owned.gid = 1000;
  E null_dev;
  null_dev.name = "dev/null";
  null_dev.type = AE_IFCHR;
  null_dev.mode = 0666;
  null_dev.major = 1;
  null_dev.minor = 3;
  E sda = null_dev;
  sda.name = "dev/sda";
  sda.type = AE_IFBLK;
  sda.mode = 0660;
  sda.major = 8;
  sda.minor = 0;
  E fifo;
  fifo.name = "run/fifo";
  fifo.type = AE_IFIFO;
  fifo.mode = 0600;
  E cap = File("bin/cap", "cap", 0755);
  cap.xattrs = {{"security.capability", CapNetBindService()}, {"user.test", "hello"}, {"trusted.evil", "x"}};
  E old = File("mtime", "t");
  old.mtime = 1234567890;
  layers.push_back(Layer(
      {File(".wh.gone.txt", ""), File(".wh.gonedir", ""), Dir("opaque"), File("opaque/early", "same layer"),
       Dir("opaque/kept"), File("opaque/kept/new3", "new"), File("opaque/.wh..wh..opq", ""),
       File("opaque/new1", "new"), File("dir2file", "now a file"), Dir("file2dir"),
       File("file2dir/child", "child"), Hardlink("bin/hard", "bin/busy"), su, Hardlink("bin/su2", "bin/su"),
       owned, null_dev, sda, fifo, cap, old, File("lib/through.txt", "via lib"), File("/etc/abs_name", "abs"),
       File("samelayer2", "x"), File(".wh.samelayer2", ""), File(".wh..wh.plnk", ""),
       File("utf8/caf\xc3\xa9", "non-ascii")},
      Compression::kNone));
  // Layer 2, zstd: escapes that must stay inside the root, and a replacement.
  layers.push_back(Layer({Symlink("escape", "/"), File("escape/etc/pwned", "inside"),
                          Symlink("up", "../../.."), File("up/pwned2", "inside too"),
                          Symlink("etc2", "/etc"), File("etc2/via_abs", "in etc"),
                          File("./a/../b/c.txt", "cleaned"), File("bin/busy", "v2", 0755)},
                         Compression::kZstd));
  auto before = ListDir(dir_);
  auto start = std::chrono::steady_clock::now();
  auto r = FlattenLayers(Request(layers));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  ASSERT_TRUE(r.ok()) << r.error().message();
  std::printf("unpacked 3 small layers in %lld ms\n", static_cast<long long>(ms.count()));

  // Reports: the guest's diff_ids and byte counts are the ones computed here.
  ASSERT_EQ(r->layers.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(r->layers[i].diff_id, layers[i].diff_id);
    EXPECT_EQ(r->layers[i].bytes, tar_sizes_[i]);
  }
  EXPECT_EQ(r->layers[0].entries, 22u);
  EXPECT_EQ(r->boots, 1);
  // Only the output appeared next to the blobs; no scratch directory is left.
  auto after = before;
  after.push_back("base.ext4");
  std::sort(after.begin(), after.end());
  EXPECT_EQ(ListDir(dir_), after);
  EXPECT_EQ(CountUnpackScratch(tmp_), scratch_before_);
  EXPECT_FALSE(sfs::exists("/etc/pwned"));
  EXPECT_FALSE(sfs::exists("/pwned2"));

  // The guest unmounted it cleanly: consistent, and no journal to replay
  // (sandboxes mount it read-only).
  auto fsck = RunCapture({"e2fsck", "-fn", dir_ + "/base.ext4"});
  ASSERT_TRUE(fsck.ok());
  EXPECT_EQ(fsck->status.code, 0) << fsck->output;

  std::map<std::string, unsigned> tree;
  Walk(dir_ + "/base.ext4", "", &tree);
  std::string all;
  for (const auto& [p, m] : tree) all += p + " ";
  for (const auto& [p, m] : tree) EXPECT_EQ(p.find("/.wh."), std::string::npos) << "whiteout file created: " << p;
  // Whiteouts and opaque directories.
  for (const char* gone : {"/gone.txt", "/gonedir", "/gonedir/f", "/opaque/old1", "/opaque/sub",
                           "/opaque/kept/old3", "/dir2file/child"})
    EXPECT_EQ(tree.count(gone), 0u) << gone << " in " << all;
  for (const char* kept : {"/opaque/early", "/opaque/new1", "/opaque/kept/new3", "/samelayer2", "/samelayer",
                           "/usr/lib/keep.txt"})
    EXPECT_EQ(tree.count(kept), 1u) << kept << " in " << all;
  // Replacements: file over directory, directory over file, new content.
  EXPECT_EQ(tree["/dir2file"] & 0170000, 0100000u);
  EXPECT_EQ(Cat("/dir2file"), "now a file");
  EXPECT_EQ(tree["/file2dir"] & 0170000, 0040000u);
  EXPECT_EQ(Cat("/file2dir/child"), "child");
  EXPECT_EQ(Cat("/bin/busy"), "v2");
  EXPECT_EQ(Cat("/bin/hard"), "v1");  // linked to the inode layer 2 replaced
  // Hard links share the inode.
  EXPECT_NE(Stat("/bin/su").find("Links: 2"), std::string::npos) << Stat("/bin/su");
  EXPECT_EQ(Cat("/bin/su2"), "su");
  // Symlinks stored as written; writes through them resolved inside the root.
  EXPECT_NE(Stat("/lib").find("Fast link dest: \"usr/lib\""), std::string::npos) << Stat("/lib");
  EXPECT_NE(Stat("/abs").find("Fast link dest: \"/etc/passwd\""), std::string::npos);
  EXPECT_NE(Stat("/escape").find("Fast link dest: \"/\""), std::string::npos);
  EXPECT_NE(Stat("/up").find("Fast link dest: \"../../..\""), std::string::npos);
  EXPECT_EQ(Cat("/usr/lib/through.txt"), "via lib");
  EXPECT_EQ(Cat("/etc/pwned"), "inside");
  EXPECT_EQ(Cat("/pwned2"), "inside too");
  EXPECT_EQ(Cat("/etc/via_abs"), "in etc");
  EXPECT_EQ(Cat("/etc/abs_name"), "abs");
  EXPECT_EQ(Cat("/b/c.txt"), "cleaned");
  EXPECT_EQ(Cat("/utf8/caf\xc3\xa9"), "non-ascii");
  EXPECT_EQ(tree.count("/a"), 0u);
  // Owners, modes, devices, fifos, xattrs, times.
  std::string s = Stat("/bin/su");
  EXPECT_NE(s.find("Mode:  04755"), std::string::npos) << s;
  EXPECT_NE(s.find("User:     0   Group:     0"), std::string::npos) << s;
  s = Stat("/home/user/f");
  EXPECT_NE(s.find("Mode:  0640"), std::string::npos) << s;
  EXPECT_NE(s.find("User:  1000   Group:  1000"), std::string::npos) << s;
  s = Stat("/dev/null");
  EXPECT_NE(s.find("Type: character special"), std::string::npos) << s;
  EXPECT_NE(s.find("Device major/minor number: 01:03"), std::string::npos) << s;
  EXPECT_NE(s.find("Mode:  0666"), std::string::npos) << s;
  s = Stat("/dev/sda");
  EXPECT_NE(s.find("Type: block special"), std::string::npos) << s;
  EXPECT_NE(s.find("Device major/minor number: 08:00"), std::string::npos) << s;
  EXPECT_NE(Stat("/run/fifo").find("Type: FIFO"), std::string::npos);
  s = Stat("/bin/cap");
  EXPECT_NE(s.find("security.capability (20)"), std::string::npos) << s;
  EXPECT_NE(s.find("user.test (5) = \"hello\""), std::string::npos) << s;
  EXPECT_EQ(s.find("trusted.evil"), std::string::npos) << s;
  EXPECT_NE(Stat("/mtime").find("mtime: 0x499602d2"), std::string::npos) << Stat("/mtime");
}

TEST_F(UnpackTest, RefusesANameThatLeavesTheRoot) {
  auto first = Layer({File("ok", "fine")}, Compression::kGzip);
  auto evil = Layer({File("fine", "x"), File("../../etc/evil", "evil")}, Compression::kNone);
  auto before = ListDir(dir_);
  auto r = FlattenLayers(Request({first, evil}));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("layer 1 (" + evil.path + ")"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("\"../../etc/evil\""), std::string::npos) << r.error().message();
  ExpectNothingLeft(before);
  EXPECT_FALSE(sfs::exists("/etc/evil"));
}

TEST_F(UnpackTest, RefusesAHardLinkOutOfTheRoot) {
  auto evil = Layer({File("x", "x"), Hardlink("link", "../outside")}, Compression::kGzip);
  auto before = ListDir(dir_);
  auto r = FlattenLayers(Request({evil}));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("layer 0"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("\"link\": hard link target"), std::string::npos) << r.error().message();
  ExpectNothingLeft(before);
}

TEST_F(UnpackTest, ADiffIdMismatchLeavesNoOutput) {
  auto a = Layer({File("a", "a")}, Compression::kGzip);
  auto b = Layer({File("b", "b")}, Compression::kZstd);
  b.diff_id = a.diff_id;  // what a tampered blob looks like to the host
  auto before = ListDir(dir_);
  auto r = FlattenLayers(Request({a, b}));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("layer 1 (" + b.path + ")"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("diff_id"), std::string::npos) << r.error().message();
  ExpectNothingLeft(before);
}

// A layer larger than the disk ends with an error that says so, not a hang.
TEST_F(UnpackTest, AFullDiskIsACleanError) {
  auto big = Layer({File("small", "x"), File("big", std::string(24u << 20, '\0'))}, Compression::kGzip);
  auto before = ListDir(dir_);
  auto req = Request({big});
  req.disk_bytes = 8u << 20;
  auto r = FlattenLayers(req);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("layer 0 (" + big.path + "): entry \"big\""), std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("the target disk is full"), std::string::npos) << r.error().message();
  ExpectNothingLeft(before);
}

// Our children (every thread's /proc children list).
std::string Children() {
  std::string all;
  for (const auto& t : sfs::directory_iterator("/proc/self/task")) {
    auto c = ReadFile(t.path().string() + "/children");
    if (c.ok()) all += *c;
  }
  return all;
}

// The deadline ends the builder: QEMU is killed and reaped, nothing is left.
TEST_F(UnpackTest, ADeadlineKillsTheBuilder) {
  auto l = Layer({File("a", "a")}, Compression::kGzip);
  auto before = ListDir(dir_);
  auto req = Request({l});
  req.timeout = std::chrono::milliseconds(300);
  // Cold: a restored builder could finish this one-file unpack in time.
  req.vm.boot_mode = "cold";
  auto r = FlattenLayers(req);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("in time"), std::string::npos) << r.error().message();
  EXPECT_EQ(Children(), "");
  ExpectNothingLeft(before);
}

// More layers than one builder boot attaches: a second boot continues on the
// same disk, and a whiteout there removes a file of the first.
TEST_F(UnpackTest, ManyLayersTakeSeveralBoots) {
  std::vector<UnpackLayerSpec> layers;
  for (int i = 0; i < 22; ++i) {
    std::vector<E> entries = {File("n/" + std::to_string(i), std::to_string(i))};
    if (i == 21) entries.push_back(File("n/.wh.0", ""));
    layers.push_back(Layer(entries, i % 2 ? Compression::kNone : Compression::kGzip));
  }
  auto r = FlattenLayers(Request(layers));
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->boots, 2);
  ASSERT_EQ(r->layers.size(), 22u);
  std::map<std::string, unsigned> tree;
  Walk(dir_ + "/base.ext4", "", &tree);
  EXPECT_EQ(tree.count("/n/0"), 0u);
  for (int i = 1; i < 22; ++i) EXPECT_EQ(Cat("/n/" + std::to_string(i)), std::to_string(i));
}

// ---- builder templates (vm/builder_vm.h) ----

// Builder VMs with templates under the test's own $MSB_HOME.
class BuilderTemplateTest : public UnpackTest {
 protected:
  // The templates' directories (keys), sorted.
  std::vector<std::string> Keys() {
    std::vector<std::string> keys;
    std::error_code ec;
    for (const auto& e : sfs::directory_iterator(home_ + "/templates", ec))
      if (e.is_directory() && e.path().filename().string()[0] != '.') keys.push_back(e.path().filename().string());
    std::sort(keys.begin(), keys.end());
    return keys;
  }
  std::string State(const std::string& key) { return home_ + "/templates/" + key + "/state"; }
  // Flattens one layer holding `name` with `content` into base.ext4.
  Result<FlattenResult> FlattenOne(const std::string& name, const std::string& content) {
    sfs::remove(dir_ + "/base.ext4");
    return FlattenLayers(Request({Layer({File(name, content)}, Compression::kGzip)}));
  }
};

// The first unpack of a disk layout builds the template and restores it;
// the next one restores the same template, not a new one. Its kernel probed
// empty placeholder disks: the unpack writing the real target disk (and
// reading the real layer) is the guest's probe of them again.
TEST_F(BuilderTemplateTest, IsMadeOnceAndRestoredByTheNextUnpack) {
  auto a = FlattenOne("a", "first");
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_EQ(a->boots, 1);
  EXPECT_EQ(a->restored, 1);
  EXPECT_EQ(Cat("/a"), "first");
  auto keys = Keys();
  ASSERT_EQ(keys.size(), 1u);
  auto meta = ReadFile(home_ + "/templates/" + keys[0] + "/meta.json");
  ASSERT_TRUE(meta.ok());
  EXPECT_NE(meta->find(R"("kind": "builder")"), std::string::npos) << *meta;
  struct stat first{};
  ASSERT_EQ(::stat(State(keys[0]).c_str(), &first), 0);

  auto b = FlattenOne("b", std::string(300000, 'b'));
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_EQ(b->restored, 1);
  EXPECT_EQ(Cat("/b"), std::string(300000, 'b'));
  EXPECT_EQ(Stat("/a").find("Inode"), std::string::npos) << "the second disk holds only its own layer";
  EXPECT_EQ(Keys(), keys);
  struct stat second{};
  ASSERT_EQ(::stat(State(keys[0]).c_str(), &second), 0);
  EXPECT_EQ(second.st_ino, first.st_ino);
  EXPECT_EQ(second.st_mtim.tv_sec, first.st_mtim.tv_sec);
  EXPECT_EQ(second.st_mtim.tv_nsec, first.st_mtim.tv_nsec);
  EXPECT_EQ(CountUnpackScratch(tmp_), scratch_before_);
  EXPECT_EQ(Children(), "");
}

// A stream QEMU cannot load (its file identity made to match, so that only
// QEMU can tell): that unpack boots cold and succeeds, the template is
// removed, and the next unpack builds a new one.
TEST_F(BuilderTemplateTest, AStreamQemuCannotLoadIsRemovedAndTheUnpackBootsCold) {
  ASSERT_TRUE(FlattenOne("a", "a").ok());
  auto keys = Keys();
  ASSERT_EQ(keys.size(), 1u);
  const std::string state = State(keys[0]);
  {
    UniqueFd fd(::open(state.c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    std::string junk(64 * 1024, '\x5a');
    ASSERT_EQ(::pwrite(fd.get(), junk.data(), junk.size(), 0), static_cast<ssize_t>(junk.size()));
  }
  struct stat st{};
  ASSERT_EQ(::stat(state.c_str(), &st), 0);
  const std::string meta_path = home_ + "/templates/" + keys[0] + "/meta.json";
  auto meta = nlohmann::json::parse(*ReadFile(meta_path));
  meta["file"]["mtime_ns"] = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  meta["file"]["ctime_ns"] = static_cast<int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
  ASSERT_TRUE(WriteFileAtomic(meta_path, meta.dump(), 0600).ok());

  auto cold = FlattenOne("b", "b");
  ASSERT_TRUE(cold.ok()) << cold.error().message();
  EXPECT_EQ(cold->restored, 0);
  EXPECT_EQ(Cat("/b"), "b");
  EXPECT_TRUE(Keys().empty());
  EXPECT_EQ(Children(), "");

  auto again = FlattenOne("c", "c");
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(again->restored, 1);
  EXPECT_EQ(Keys().size(), 1u);
}

// MSB_BOOT=cold boots the builder cold and makes no template; other memory
// is another template.
TEST_F(BuilderTemplateTest, ColdWhenAskedAndOneTemplatePerMachine) {
  ::setenv("MSB_BOOT", "cold", 1);
  auto cold = FlattenOne("a", "a");
  ASSERT_TRUE(cold.ok()) << cold.error().message();
  EXPECT_EQ(cold->restored, 0);
  EXPECT_TRUE(Keys().empty());
  ::unsetenv("MSB_BOOT");

  ASSERT_TRUE(FlattenOne("a", "a").ok());
  EXPECT_EQ(Keys().size(), 1u);
  sfs::remove(dir_ + "/base.ext4");
  auto req = Request({Layer({File("m", "m")}, Compression::kNone)});
  req.vm.memory_bytes = 384ull << 20;
  auto other = FlattenLayers(req);
  ASSERT_TRUE(other.ok()) << other.error().message();
  EXPECT_EQ(other->restored, 1);
  EXPECT_EQ(Cat("/m"), "m");
  EXPECT_EQ(Keys().size(), 2u);
}

// A key another start holds (building it) is a cold boot now, not a wait;
// a load that times out boots cold too and keeps the template, which the
// next unpack restores.
TEST_F(BuilderTemplateTest, AHeldKeyOrASlowLoadBootsColdAndKeepsTheTemplate) {
  ASSERT_TRUE(FlattenOne("a", "a").ok());
  auto keys = Keys();
  ASSERT_EQ(keys.size(), 1u);
  struct stat before{};
  ASSERT_EQ(::stat(State(keys[0]).c_str(), &before), 0);
  {
    UniqueFd lock(::open((home_ + "/templates/" + keys[0] + ".lock").c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(lock);
    ASSERT_EQ(::flock(lock.get(), LOCK_EX), 0);
    auto held = FlattenOne("b", "b");
    ASSERT_TRUE(held.ok()) << held.error().message();
    EXPECT_EQ(held->restored, 0);
    EXPECT_EQ(Cat("/b"), "b");
  }
  ::setenv("MSB_RESTORE_TIMEOUT_MS", "1", 1);
  auto slow = FlattenOne("c", "c");
  ::unsetenv("MSB_RESTORE_TIMEOUT_MS");
  ASSERT_TRUE(slow.ok()) << slow.error().message();
  EXPECT_EQ(slow->restored, 0);
  EXPECT_EQ(Cat("/c"), "c");
  EXPECT_EQ(Keys(), keys);
  EXPECT_EQ(CountUnpackScratch(tmp_), scratch_before_);
  EXPECT_EQ(Children(), "");

  auto again = FlattenOne("d", "d");
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(again->restored, 1);
  struct stat after{};
  ASSERT_EQ(::stat(State(keys[0]).c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
}

}  // namespace
}  // namespace msb::image
