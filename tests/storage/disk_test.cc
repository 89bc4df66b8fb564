// Tests of storage/disk: base disks from directories (contents checked with
// debugfs, never by mounting), the content cache, and sparse ext4 disks.
#include "storage/disk.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"

namespace msb::storage {
namespace {

std::string Tool(const std::string& name) {
  for (const char* dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) {
    std::string p = std::string(dir) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return name;
}

// debugfs's answer to one request (stdout only: its banner goes to stderr,
// which is dropped).
std::string Debugfs(const std::string& image, const std::string& request) {
  int p[2];
  if (::pipe(p) != 0) return "";
  UniqueFd rd(p[0]), wr(p[1]);
  SpawnOptions opts;
  opts.argv = {Tool("debugfs"), "-R", request, image};
  opts.stdout_fd = wr.get();
  opts.stderr_fd = -2;
  auto child = ChildProcess::Spawn(opts);
  EXPECT_TRUE(child.ok());
  if (!child.ok()) return "";
  wr.Reset();
  std::string out;
  char buf[8192];
  for (ssize_t n; (n = ::read(rd.get(), buf, sizeof buf)) > 0;) out.append(buf, n);
  EXPECT_EQ(child->Wait().code, 0) << request;
  return out;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

void Write(const std::string& path, const std::string& data, int mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd.valid()) << path;
  ASSERT_TRUE(WriteAll(fd.get(), data).ok());
  ASSERT_EQ(::fchmod(fd.get(), mode), 0);  // exact bits, whatever the umask
}

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

class DiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-disk-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    root_ = dir_ + "/rootfs";
    cache_ = dir_ + "/cache";
    MakeTree(root_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void MakeTree(const std::string& root) {
    ASSERT_TRUE(MakeDirs(root + "/sub/deeper").ok());
    ASSERT_TRUE(MakeDirs(root + "/bin").ok());
    Write(root + "/hello.txt", "hello\n", 0640);
    Write(root + "/bin/run.sh", "#!/bin/sh\necho run\n", 0755);
    Write(root + "/bin/suid", "x", 04755);
    Write(root + "/sub/deeper/data", std::string(100000, 'd'), 0600);
    ASSERT_EQ(::chmod((root + "/sub").c_str(), 0750), 0);
    ASSERT_EQ(::chmod((root + "/sub/deeper").c_str(), 01777), 0);
    ASSERT_EQ(::symlink("hello.txt", (root + "/link").c_str()), 0);
    long_target_ = "/usr/share/" + std::string(100, 'l');
    ASSERT_EQ(::symlink(long_target_.c_str(), (root + "/sub/longlink").c_str()), 0);
    ASSERT_EQ(::link((root + "/hello.txt").c_str(), (root + "/sub/hard").c_str()), 0);
    ASSERT_EQ(::mkfifo((root + "/fifo").c_str(), 0620), 0);
    ASSERT_EQ(::chmod((root + "/fifo").c_str(), 0620), 0);
    if (::geteuid() == 0) {
      ASSERT_EQ(::chown((root + "/hello.txt").c_str(), 1000, 1001), 0);
      have_device_ = ::mknod((root + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0;
      if (have_device_) {
        ASSERT_EQ(::chmod((root + "/null").c_str(), 0666), 0);
      }
    }
  }

  std::string BuildOrDie(const std::string& root) {
    auto r = BuildBaseDiskFromDir(root, cache_);
    EXPECT_TRUE(r.ok()) << r.error().message();
    return r.ok() ? *r : "";
  }

  std::string dir_, root_, cache_, long_target_;
  bool have_device_ = false;
};

// The summary of the walk that keyed the disk is the tree's HashTree (msb run
// of a directory takes its digest from it instead of walking twice), also
// through a symlink to the root.
TEST_F(DiskTest, BaseDiskSummaryIsTheTreeHash) {
  storage::TreeSummary sum;
  auto r = BuildBaseDiskFromDir(root_, cache_, &sum);
  ASSERT_TRUE(r.ok()) << r.error().message();
  auto hashed = HashTree(root_);
  ASSERT_TRUE(hashed.ok());
  EXPECT_EQ(sum.sha256, hashed->sha256);
  ASSERT_EQ(::symlink(root_.c_str(), (dir_ + "/link").c_str()), 0);
  storage::TreeSummary via_link;
  ASSERT_TRUE(BuildBaseDiskFromDir(dir_ + "/link", cache_, &via_link).ok());
  EXPECT_EQ(via_link.sha256, hashed->sha256);
  // Another content, another summary.
  ASSERT_EQ(::unlink((root_ + "/hello.txt").c_str()), 0);
  storage::TreeSummary changed;
  ASSERT_TRUE(BuildBaseDiskFromDir(root_, cache_, &changed).ok());
  EXPECT_NE(changed.sha256, hashed->sha256);
}

TEST_F(DiskTest, BaseDiskHoldsTheTree) {
  std::string image = BuildOrDie(root_);
  ASSERT_FALSE(image.empty());
  EXPECT_EQ(image.rfind(cache_ + "/", 0), 0u) << image;
  EXPECT_EQ(image.substr(image.size() - 5), ".ext4");
  struct stat st;
  ASSERT_EQ(::stat(image.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
  // Only the finished image is left in the cache.
  EXPECT_EQ(Names(cache_), std::vector<std::string>{image.substr(cache_.size() + 1)});

  EXPECT_EQ(Debugfs(image, "cat /hello.txt"), "hello\n");
  EXPECT_EQ(Debugfs(image, "cat /bin/run.sh"), "#!/bin/sh\necho run\n");
  EXPECT_EQ(Debugfs(image, "cat /sub/deeper/data"), std::string(100000, 'd'));

  std::string hello = Debugfs(image, "stat /hello.txt");
  EXPECT_TRUE(Contains(hello, "Type: regular    Mode:  0640")) << hello;
  EXPECT_TRUE(Contains(hello, "Links: 2")) << hello;  // /sub/hard
  if (::geteuid() == 0) {
    EXPECT_TRUE(Contains(hello, "User:  1000   Group:  1001")) << hello;
  }
  EXPECT_TRUE(Contains(Debugfs(image, "stat /bin/suid"), "Mode:  04755"));
  EXPECT_TRUE(Contains(Debugfs(image, "stat /bin/run.sh"), "Mode:  0755"));
  EXPECT_TRUE(Contains(Debugfs(image, "stat /sub"), "Type: directory    Mode:  0750"));
  EXPECT_TRUE(Contains(Debugfs(image, "stat /sub/deeper"), "Mode:  01777"));
  EXPECT_EQ(Debugfs(image, "cat /sub/hard"), "hello\n");
  // Same inode number as /hello.txt: a hard link, not a copy.
  std::string ls_root = Debugfs(image, "ls -l /");
  std::string ls_sub = Debugfs(image, "ls -l /sub");
  auto inode_of = [](const std::string& listing, const std::string& name) {
    std::istringstream in(listing);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string ino, mode, paren, uid, gid, size, date, time, n;
      f >> ino >> mode >> paren >> uid >> gid >> size >> date >> time >> n;
      if (n == name) return ino;
    }
    return std::string("?");
  };
  EXPECT_NE(inode_of(ls_root, "hello.txt"), "?") << ls_root;
  EXPECT_EQ(inode_of(ls_root, "hello.txt"), inode_of(ls_sub, "hard")) << ls_root << ls_sub;

  std::string link = Debugfs(image, "stat /link");
  EXPECT_TRUE(Contains(link, "Type: symlink")) << link;
  EXPECT_TRUE(Contains(link, "Fast link dest: \"hello.txt\"")) << link;
  // A slow symlink keeps its target in a data block.
  std::string longlink = Debugfs(image, "stat /sub/longlink");
  EXPECT_TRUE(Contains(longlink, "Type: symlink")) << longlink;
  EXPECT_TRUE(Contains(longlink, "Size: " + std::to_string(long_target_.size()))) << longlink;
  EXPECT_EQ(Debugfs(image, "cat /sub/longlink"), long_target_);

  std::string fifo = Debugfs(image, "stat /fifo");
  EXPECT_TRUE(Contains(fifo, "Type: FIFO    Mode:  0620")) << fifo;
  if (have_device_) {
    std::string dev = Debugfs(image, "stat /null");
    EXPECT_TRUE(Contains(dev, "Type: character special    Mode:  0666")) << dev;
    EXPECT_TRUE(Contains(dev, "Device major/minor number: 01:03")) << dev;
  }

  std::string stats = Debugfs(image, "stats");
  EXPECT_TRUE(Contains(stats, "Filesystem volume name:   msb-base")) << stats;
  EXPECT_FALSE(Contains(stats, "has_journal")) << stats;
  EXPECT_TRUE(Contains(stats, "Block size:               4096")) << stats;
  std::string root_dir = Debugfs(image, "stat /");
  EXPECT_TRUE(Contains(root_dir, "User:     0   Group:     0")) << root_dir;
}

TEST_F(DiskTest, SameContentIsACacheHitWithoutRebuild) {
  std::string first = BuildOrDie(root_);
  struct stat before;
  ASSERT_EQ(::stat(first.c_str(), &before), 0);
  std::string second = BuildOrDie(root_);
  EXPECT_EQ(first, second);
  struct stat after;
  ASSERT_EQ(::stat(second.c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);
  EXPECT_EQ(before.st_mtim.tv_sec, after.st_mtim.tv_sec);
  EXPECT_EQ(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);

  // Content, not location or timestamps, is the key.
  std::string copy = dir_ + "/copy";
  MakeTree(copy);
  timespec old_times[2] = {{1000, 0}, {1000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (copy + "/hello.txt").c_str(), old_times, 0), 0);
  EXPECT_EQ(BuildOrDie(copy), first);
  ASSERT_EQ(::stat(first.c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);
}

TEST_F(DiskTest, ChangedContentGivesAnotherImage) {
  std::string first = BuildOrDie(root_);
  Write(root_ + "/hello.txt", "hello, world\n", 0640);
  std::string second = BuildOrDie(root_);
  EXPECT_NE(first, second);
  EXPECT_EQ(Debugfs(second, "cat /hello.txt"), "hello, world\n");
  EXPECT_EQ(Debugfs(first, "cat /hello.txt"), "hello\n");  // the old one is intact

  ASSERT_EQ(::chmod((root_ + "/bin/run.sh").c_str(), 0700), 0);
  std::string third = BuildOrDie(root_);
  EXPECT_NE(third, second);
  EXPECT_TRUE(Contains(Debugfs(third, "stat /bin/run.sh"), "Mode:  0700"));
}

TEST_F(DiskTest, HashCoversMetadataButNotTimestamps) {
  auto base = HashTree(root_);
  ASSERT_TRUE(base.ok()) << base.error().message();
  EXPECT_EQ(base->sha256.size(), 64u);
  EXPECT_EQ(base->content_bytes, 6u + 19u + 1u + 100000u);  // hard link counted once

  timespec old_times[2] = {{1000, 0}, {1000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (root_ + "/hello.txt").c_str(), old_times, 0), 0);
  EXPECT_EQ(HashTree(root_)->sha256, base->sha256);

  ASSERT_EQ(::unlink((root_ + "/link").c_str()), 0);
  ASSERT_EQ(::symlink("bin/run.sh", (root_ + "/link").c_str()), 0);
  auto retargeted = HashTree(root_);
  ASSERT_TRUE(retargeted.ok());
  EXPECT_NE(retargeted->sha256, base->sha256);

  ASSERT_EQ(::chmod((root_ + "/sub").c_str(), 0755), 0);
  auto rechmod = HashTree(root_);
  ASSERT_TRUE(rechmod.ok());
  EXPECT_NE(rechmod->sha256, retargeted->sha256);

  // A hard link and a copy with equal bytes are different trees.
  ASSERT_EQ(::unlink((root_ + "/sub/hard").c_str()), 0);
  Write(root_ + "/sub/hard", "hello\n", 0640);
  if (::geteuid() == 0) {
    ASSERT_EQ(::chown((root_ + "/sub/hard").c_str(), 1000, 1001), 0);
  }
  auto copied = HashTree(root_);
  ASSERT_TRUE(copied.ok());
  EXPECT_NE(copied->sha256, rechmod->sha256);
}

// Many small files and directories: the size and inode estimate must hold.
TEST_F(DiskTest, ManySmallFilesFit) {
  std::string many = dir_ + "/many";
  for (int d = 0; d < 40; ++d) {
    std::string sub = many + "/dir-" + std::to_string(d) + "/" + std::string(200, 'n');
    ASSERT_TRUE(MakeDirs(sub).ok());
    for (int f = 0; f < 100; ++f) {
      Write(sub + "/file-with-a-rather-long-name-" + std::to_string(f), std::to_string(f), 0644);
    }
  }
  auto sum = HashTree(many);
  ASSERT_TRUE(sum.ok());
  EXPECT_EQ(sum->entries, 1u + 40u * 2u + 40u * 100u);
  std::string image = BuildOrDie(many);
  ASSERT_FALSE(image.empty());
  EXPECT_EQ(Debugfs(image, "cat /dir-39/" + std::string(200, 'n') + "/file-with-a-rather-long-name-99"),
            "99");
}

TEST_F(DiskTest, MissingDirectoryIsNamed) {
  std::string missing = dir_ + "/no-such-rootfs";
  auto r = BuildBaseDiskFromDir(missing, cache_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(Contains(r.error().message(), missing)) << r.error().message();
}

TEST_F(DiskTest, FileInsteadOfDirectoryIsRefused) {
  auto r = BuildBaseDiskFromDir(root_ + "/hello.txt", cache_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(Contains(r.error().message(), root_ + "/hello.txt")) << r.error().message();
}

TEST_F(DiskTest, CacheInsideTheTreeIsRefused) {
  auto r = BuildBaseDiskFromDir(root_, root_ + "/cache");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(DiskTest, LeftoversOfADeadBuilderAreRemoved) {
  // A pid that certainly no longer runs: a reaped child's.
  pid_t dead = ::fork();
  ASSERT_GE(dead, 0);
  if (dead == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(dead, nullptr, 0), dead);
  ASSERT_TRUE(MakeDirs(cache_).ok());
  std::string leftover = cache_ + "/.tmp-abc-" + std::to_string(dead) + "-42.ext4";
  std::string live = cache_ + "/.tmp-abc-" + std::to_string(::getpid()) + "-42.ext4";
  Write(leftover, "half", 0644);
  Write(live, "in progress", 0644);
  std::string image = BuildOrDie(root_);
  EXPECT_FALSE(std::filesystem::exists(leftover));
  EXPECT_TRUE(std::filesystem::exists(live));
  EXPECT_TRUE(std::filesystem::exists(image));
}

TEST_F(DiskTest, SparseExt4IsEmptySparseAndJournalled) {
  std::string path = dir_ + "/sandboxes/a/upper.ext4";
  constexpr uint64_t kSize = 256ull << 20;
  Status st = CreateSparseExt4(path, kSize, "msb-upper");
  ASSERT_TRUE(st.ok()) << st.error().message();
  struct stat s;
  ASSERT_EQ(::stat(path.c_str(), &s), 0);
  EXPECT_EQ(static_cast<uint64_t>(s.st_size), kSize);
  EXPECT_LT(static_cast<uint64_t>(s.st_blocks) * 512, kSize / 4) << "not sparse";
  EXPECT_EQ(Names(dir_ + "/sandboxes/a"), std::vector<std::string>{"upper.ext4"});

  std::string stats = Debugfs(path, "stats");
  EXPECT_TRUE(Contains(stats, "Filesystem volume name:   msb-upper")) << stats;
  EXPECT_TRUE(Contains(stats, "has_journal")) << stats;
  std::string root_dir = Debugfs(path, "stat /");
  EXPECT_TRUE(Contains(root_dir, "User:     0   Group:     0")) << root_dir;
  std::string ls = Debugfs(path, "ls /");
  EXPECT_TRUE(Contains(ls, "lost+found")) << ls;
}

TEST_F(DiskTest, SparseExt4NeverOverwrites) {
  std::string path = dir_ + "/vol.ext4";
  Write(path, "precious", 0600);
  Status st = CreateSparseExt4(path, 64 << 20, "vol");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_TRUE(Contains(st.error().message(), path));
  EXPECT_EQ(*ReadFile(path), "precious");
  EXPECT_EQ(Names(dir_), (std::vector<std::string>{"rootfs", "vol.ext4"}));
}

TEST_F(DiskTest, SparseExt4ChecksItsArguments) {
  EXPECT_EQ(CreateSparseExt4(dir_ + "/a.ext4", 64 << 20, "a-label-that-is-too-long")
                .error()
                .code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(CreateSparseExt4(dir_ + "/b.ext4", 4096, "b").error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/a.ext4"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/b.ext4"));
}

}  // namespace
}  // namespace msb::storage

namespace msb::storage {
namespace {

// A sparse file: `size` bytes with `data` written at each offset.
void WriteSparse(const std::string& path, off_t size, const std::vector<std::pair<off_t, std::string>>& data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  MSB_CHECK(fd.valid(), "open");
  for (const auto& [off, bytes] : data) {
    MSB_CHECK(::pwrite(fd.get(), bytes.data(), bytes.size(), off) == static_cast<ssize_t>(bytes.size()), "pwrite");
  }
  MSB_CHECK(::ftruncate(fd.get(), size) == 0, "ftruncate");
}

class DiskCopyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-disk-copy-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(DiskCopyTest, CopyKeepsBytesAndHolesAndTheDigestFollowsTheBytes) {
  const off_t size = 64 << 20;
  const std::string src = dir_ + "/src", dst = dir_ + "/dst";
  WriteSparse(src, size, {{0, "head"}, {32 << 20, std::string(8192, 'x')}, {size - 3, "end"}});
  auto copy = CopyDiskFile(src, dst);
  ASSERT_TRUE(copy.ok()) << copy.error().message();
  auto a = ReadFile(src), b = ReadFile(dst);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), static_cast<size_t>(size));
  EXPECT_TRUE(*a == *b);
  struct stat st{};
  ASSERT_EQ(::stat(dst.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Holes stay holes (a clone shares the source's extents either way).
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 8ull << 20);
  if (!copy->cloned) EXPECT_LT(copy->bytes_copied, 8ull << 20);

  auto da = DiskDigest(src), db = DiskDigest(dst);
  ASSERT_TRUE(da.ok() && db.ok());
  EXPECT_EQ(da->rfind("sha256:", 0), 0u);
  EXPECT_EQ(da->size(), 71u);
  EXPECT_EQ(*da, *db);
  EXPECT_EQ(copy->digest, *db);
  // One byte more changes it.
  WriteSparse(dst, size, {{0, "head"}, {32 << 20, std::string(8191, 'x') + "y"}, {size - 3, "end"}});
  auto dc = DiskDigest(dst);
  ASSERT_TRUE(dc.ok());
  EXPECT_NE(*dc, *da);
  // So does the size alone.
  ASSERT_EQ(::truncate(src.c_str(), size + 4096), 0);
  EXPECT_NE(*DiskDigest(src), *da);
}

TEST_F(DiskCopyTest, RefusesAnExistingDestinationAndAMissingSource) {
  const std::string src = dir_ + "/src", dst = dir_ + "/dst";
  WriteSparse(src, 4096, {{0, "a"}});
  ASSERT_TRUE(WriteFileAtomic(dst, "keep", 0600).ok());
  auto exists = CopyDiskFile(src, dst);
  ASSERT_FALSE(exists.ok());
  EXPECT_EQ(*ReadFile(dst), "keep");
  auto missing = CopyDiskFile(dir_ + "/none", dir_ + "/out");
  ASSERT_FALSE(missing.ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/out"));
  EXPECT_FALSE(DiskDigest(dir_ + "/none").ok());
}

}  // namespace
}  // namespace msb::storage
