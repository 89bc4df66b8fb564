// agentd's mount list: the boot message's `mounts` (encoding and every
// validation rule) and the resolution of a target inside a root that holds
// hostile symlinks (run on the host against a temporary directory).
#include "agentd/mounts.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "agent/messages.h"
#include "common/io.h"

namespace msb::agent {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/msb-mounts-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(MountConfigTest, RoundTripsEveryType) {
  BootConfig b;
  b.mounts.push_back({MountConfig::Type::kDisk, "msb-vol-0", "/var/lib/db", false, 0, 01777});
  b.mounts.push_back({MountConfig::Type::kVirtiofs, "msbfs0", "/src", true, 0, 01777});
  b.mounts.push_back({MountConfig::Type::kTmpfs, "", "/tmp", false, 64 << 20, 0700});
  auto again = ParseBootConfig(Encode(b));
  ASSERT_TRUE(again.ok()) << again.error().message();
  ASSERT_EQ(again->mounts.size(), 3u);
  EXPECT_EQ(again->mounts[0].type, MountConfig::Type::kDisk);
  EXPECT_EQ(again->mounts[0].source, "msb-vol-0");
  EXPECT_EQ(again->mounts[0].target, "/var/lib/db");
  EXPECT_EQ(again->mounts[1].type, MountConfig::Type::kVirtiofs);
  EXPECT_TRUE(again->mounts[1].read_only);
  EXPECT_EQ(again->mounts[2].type, MountConfig::Type::kTmpfs);
  EXPECT_EQ(again->mounts[2].size_bytes, 64u << 20);
  EXPECT_EQ(again->mounts[2].mode, 0700u);
  // An empty or absent list is no mounts.
  EXPECT_TRUE(ParseBootConfig(R"({"mounts":[]})")->mounts.empty());
  EXPECT_TRUE(ParseBootConfig(R"({"mounts":null})")->mounts.empty());
  EXPECT_TRUE(ParseBootConfig("{}")->mounts.empty());
}

std::string BootError(const std::string& mount_json) {
  auto b = ParseBootConfig(R"({"mounts":[)" + mount_json + "]}");
  return b.ok() ? "ok" : b.error().message();
}

TEST(MountConfigTest, RefusesMalformedMounts) {
  EXPECT_EQ(BootError(R"({"type":"tmpfs","target":"/t"})"), "ok");
  EXPECT_EQ(BootError(R"({"type":"nfs","target":"/t"})"),
            "boot.mounts[0]: field \"type\": expected disk, virtiofs or tmpfs");
  EXPECT_EQ(BootError(R"({"type":"tmpfs"})"), "boot.mounts[0]: field \"target\": missing");
  EXPECT_EQ(BootError(R"({"type":"tmpfs","target":"t"})"),
            "boot.mounts[0]: field \"target\": not an absolute path");
  EXPECT_EQ(BootError(R"({"type":"tmpfs","target":"/"})"),
            "boot.mounts[0]: field \"target\": cannot mount over the root");
  EXPECT_EQ(BootError(R"({"type":"tmpfs","target":"/a/../etc"})"),
            "boot.mounts[0]: field \"target\": \"/a/../etc\" has an empty, \".\" or \"..\" component");
  EXPECT_NE(BootError(R"({"type":"tmpfs","target":"/a//b"})"), "ok");
  EXPECT_NE(BootError(R"({"type":"tmpfs","target":"/a/./b"})"), "ok");
  EXPECT_EQ(BootError(R"({"type":"tmpfs","target":"/a\u0000b"})"),
            "boot.mounts[0]: field \"target\": contains a NUL byte");
  EXPECT_NE(BootError(R"({"type":"tmpfs","target":")" + std::string(kMaxMountTarget, 'a') + "\"}"),
            "ok");
  EXPECT_EQ(BootError(R"({"type":"disk","target":"/d"})"),
            "boot.mounts[0]: field \"source\": expected 1 to 20 printable bytes");
  EXPECT_NE(BootError(R"({"type":"disk","source":"123456789012345678901","target":"/d"})"), "ok");
  EXPECT_EQ(BootError(R"({"type":"disk","source":"12345678901234567890","target":"/d"})"), "ok");
  EXPECT_NE(BootError(R"({"type":"virtiofs","source":"a b","target":"/d"})"), "ok");
  EXPECT_NE(BootError(R"({"type":"virtiofs","source":")" + std::string(37, 't') + R"(","target":"/d"})"),
            "ok");
  EXPECT_EQ(BootError(R"({"type":"tmpfs","source":"x","target":"/t"})"),
            "boot.mounts[0]: field \"source\": a tmpfs has none");
  EXPECT_EQ(BootError(R"({"type":"tmpfs","target":"/t","read_only":true})"),
            "boot.mounts[0]: field \"read_only\": a tmpfs is writable");
  EXPECT_EQ(BootError(R"({"type":"tmpfs","target":"/t","mode":4096})"),
            "boot.mounts[0]: field \"mode\": must be between 0 and 4095");
  EXPECT_NE(BootError(R"({"type":"tmpfs","target":"/t","size_bytes":-1})"), "ok");
  EXPECT_EQ(BootError("1"), "boot.mounts[0]: expected an object");
  EXPECT_EQ(ParseBootConfig(R"({"mounts":{}})").error().message(),
            "boot: field \"mounts\": expected an array of objects");
  std::string many = R"({"mounts":[)";
  for (size_t i = 0; i <= kMaxBootMounts; ++i) many += std::string(i ? "," : "") + R"({"type":"tmpfs","target":"/t"})";
  EXPECT_FALSE(ParseBootConfig(many + "]}").ok());
}

// The inode of a path on the host, for comparing where a resolution ended.
ino_t Inode(const std::string& path) {
  struct stat st{};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_ino;
}
ino_t Inode(int fd) {
  struct stat st{};
  EXPECT_EQ(::fstat(fd, &st), 0);
  return st.st_ino;
}

class OpenDirInRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_.path() + "/root";
    outside_ = tmp_.path() + "/outside";
    ASSERT_TRUE(MakeDirs(root_ + "/etc").ok());
    ASSERT_TRUE(MakeDirs(outside_).ok());
    fd_ = UniqueFd(::open(root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(fd_.valid());
  }
  TempDir tmp_;
  std::string root_, outside_;
  UniqueFd fd_;
};

TEST_F(OpenDirInRootTest, CreatesMissingDirectories) {
  auto d = OpenDirInRoot(fd_.get(), "/var/lib/db", true);
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ(Inode(d->get()), Inode(root_ + "/var/lib/db"));
  EXPECT_FALSE(OpenDirInRoot(fd_.get(), "/not/there", false).ok());
  EXPECT_FALSE(fs::exists(root_ + "/not"));
}

TEST_F(OpenDirInRootTest, AbsoluteSymlinksResolveInsideTheRoot) {
  // /link -> <the host's absolute path of outside>: inside the root that path
  // does not exist, so the directories are created under the root.
  fs::create_symlink(outside_, root_ + "/link");
  auto d = OpenDirInRoot(fd_.get(), "/link/x", true);
  ASSERT_FALSE(d.ok());  // the symlink dangles inside the root: refused
  EXPECT_NE(d.error().message().find("/link is a symlink to a path that does not exist"),
            std::string::npos)
      << d.error().message();
  EXPECT_TRUE(fs::is_empty(outside_));

  fs::create_symlink("/etc", root_ + "/etclink");
  auto e = OpenDirInRoot(fd_.get(), "/etclink/conf", true);
  ASSERT_TRUE(e.ok()) << e.error().message();
  EXPECT_EQ(Inode(e->get()), Inode(root_ + "/etc/conf"));
}

TEST_F(OpenDirInRootTest, DotDotSymlinksStopAtTheRoot) {
  // /up -> ../../../../.. climbs no higher than the root.
  fs::create_symlink("../../../../..", root_ + "/up");
  fs::create_symlink("/", root_ + "/slash");
  auto d = OpenDirInRoot(fd_.get(), "/up/data", true);
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ(Inode(d->get()), Inode(root_ + "/data"));
  auto s = OpenDirInRoot(fd_.get(), "/slash/up/slash/data", true);
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(Inode(s->get()), Inode(root_ + "/data"));
  EXPECT_FALSE(fs::exists(tmp_.path() + "/data"));
}

TEST_F(OpenDirInRootTest, RefusesFilesAndMagicLinks) {
  ASSERT_TRUE(WriteFileAtomic(root_ + "/file", "x").ok());
  auto f = OpenDirInRoot(fd_.get(), "/file/sub", true);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.error().message(), "/file is not a directory");
  // A /proc-style magic link would jump out of any root: refused.
  ASSERT_TRUE(MakeDirs(root_ + "/p").ok());
  fs::create_symlink("/proc/self/root", root_ + "/p/self");
  auto host_root = "/p/self" + outside_;
  // Inside the root, /proc/self/root does not exist (no /proc there): nothing
  // is created outside either way.
  (void)OpenDirInRoot(fd_.get(), host_root + "/x", true);
  EXPECT_TRUE(fs::is_empty(outside_));
  EXPECT_FALSE(OpenDirInRoot(fd_.get(), "/a/../b", true).ok());
}

}  // namespace
}  // namespace msb::agent
