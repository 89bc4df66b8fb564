#include "common/io.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "common/fd.h"

namespace msb {
namespace {

class IoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-io-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  // path holds `content` with permission bits `mode`.
  static void ExpectFile(const std::string& path, const std::string& content, unsigned mode) {
    auto r = ReadFile(path);
    ASSERT_TRUE(r.ok()) << path;
    EXPECT_EQ(*r, content);
    struct stat st;
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, mode);
  }
  // How many entries dir holds.
  static int Entries(const std::string& dir) {
    int n = 0;
    for (auto& e : std::filesystem::directory_iterator(dir)) { (void)e; ++n; }
    return n;
  }
  std::string dir_;
};

TEST_F(IoTest, AtomicWriteReplacesAndLeavesNoTemporary) {
  std::string p = dir_ + "/f";
  ASSERT_TRUE(WriteFileAtomic(p, "one").ok());
  ASSERT_TRUE(WriteFileAtomic(p, "two", 0600).ok());
  ExpectFile(p, "two", 0600);
  EXPECT_EQ(Entries(dir_), 1);
}

TEST_F(IoTest, AtomicWriteAtIsRelativeToTheDirectoryFd) {
  ASSERT_EQ(::mkdir((dir_ + "/d").c_str(), 0755), 0);
  UniqueFd d(::open((dir_ + "/d").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(d.valid());
  ASSERT_TRUE(WriteFileAtomicAt(d.get(), "f", "one").ok());
  ASSERT_TRUE(WriteFileAtomicAt(d.get(), "f", "two").ok());
  auto r = ReadFile(dir_ + "/d/f");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "two");
  EXPECT_EQ(Entries(dir_ + "/d"), 1);
  auto missing = WriteFileAtomicAt(d.get(), "no/f", "x");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("cannot create no/f.tmp."), std::string::npos);
}

// ReplaceFile: the same replacement without the flush; an open reader keeps
// the old contents, and a failed write leaves the old file and no temporary.
TEST_F(IoTest, ReplaceFileSwapsWholeFilesAndLeavesNoTemporary) {
  std::string p = dir_ + "/f";
  ASSERT_TRUE(ReplaceFile(p, "one").ok());
  UniqueFd reader(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(reader.valid());
  ASSERT_TRUE(ReplaceFile(p, "two", 0600).ok());
  char buf[8] = {};
  ASSERT_EQ(::read(reader.get(), buf, sizeof buf), 3);
  EXPECT_EQ(std::string(buf), "one");
  ExpectFile(p, "two", 0600);
  ASSERT_EQ(::mkdir((dir_ + "/d").c_str(), 0755), 0);
  UniqueFd d(::open((dir_ + "/d").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(ReplaceFileAt(d.get(), "g", "three").ok());
  EXPECT_EQ(*ReadFile(dir_ + "/d/g"), "three");
  EXPECT_FALSE(ReplaceFileAt(d.get(), "no/g", "x").ok());
  EXPECT_EQ(Entries(dir_), 2);  // f and d
  EXPECT_EQ(Entries(dir_ + "/d"), 1);
}

TEST_F(IoTest, ReadMissingFileSaysWhich) {
  auto r = ReadFile(dir_ + "/nope");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find(dir_ + "/nope"), std::string::npos);
  EXPECT_EQ(r.error().sys_errno(), ENOENT);
}

TEST_F(IoTest, MakeDirsCreatesNested) {
  ASSERT_TRUE(MakeDirs(dir_ + "/a/b/c").ok());
  EXPECT_TRUE(std::filesystem::is_directory(dir_ + "/a/b/c"));
  EXPECT_TRUE(MakeDirs(dir_ + "/a/b/c").ok());
}

TEST(SetNonBlockingTest, AddsTheFlagAndKeepsTheOthers) {
  UniqueFd null(::open("/dev/null", O_WRONLY | O_APPEND | O_CLOEXEC));
  ASSERT_TRUE(null.valid());
  ASSERT_EQ(::fcntl(null.get(), F_GETFL) & O_NONBLOCK, 0);
  ASSERT_TRUE(SetNonBlocking(null.get()).ok());
  int flags = ::fcntl(null.get(), F_GETFL);
  EXPECT_NE(flags & O_NONBLOCK, 0);
  EXPECT_NE(flags & O_APPEND, 0);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  EXPECT_EQ(::fcntl(rd.get(), F_GETFL) & O_NONBLOCK, 0);
  // A read with nothing written now fails at once instead of blocking.
  ASSERT_TRUE(SetNonBlocking(rd.get()).ok());
  char c;
  EXPECT_EQ(::read(rd.get(), &c, 1), -1);
  EXPECT_EQ(errno, EAGAIN);
}

TEST(SetNonBlockingTest, BadDescriptorIsAnError) {
  Status st = SetNonBlocking(-1);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kIo);
  EXPECT_EQ(st.error().sys_errno(), EBADF);
  EXPECT_EQ(st.error().message().rfind("fcntl: ", 0), 0u);
}

TEST_F(IoTest, MakeDirPrivateTightensOnlyWhatIsOpen) {
  struct stat st;
  const std::string open_dir = dir_ + "/open", closed = dir_ + "/closed", shared = dir_ + "/shared";
  ASSERT_EQ(::mkdir(open_dir.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(open_dir.c_str(), 0755), 0);
  auto was = MakeDirPrivate(open_dir);
  ASSERT_TRUE(was.ok()) << was.error().message();
  ASSERT_TRUE(was->has_value());
  EXPECT_EQ(**was, 0755u);
  ASSERT_EQ(::stat(open_dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  // Once private, nothing more to say.
  was = MakeDirPrivate(open_dir);
  ASSERT_TRUE(was.ok());
  EXPECT_FALSE(was->has_value());

  ASSERT_EQ(::mkdir(closed.c_str(), 0700), 0);
  was = MakeDirPrivate(closed);
  ASSERT_TRUE(was.ok());
  EXPECT_FALSE(was->has_value());

  // Missing: left for its creator (under the private umask).
  was = MakeDirPrivate(dir_ + "/missing");
  ASSERT_TRUE(was.ok());
  EXPECT_FALSE(was->has_value());
  EXPECT_NE(::access((dir_ + "/missing").c_str(), F_OK), 0);

  // A shared directory (sticky, like /tmp) is never chmod-ed.
  ASSERT_EQ(::mkdir(shared.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(shared.c_str(), 01777), 0);
  was = MakeDirPrivate(shared);
  ASSERT_FALSE(was.ok());
  EXPECT_NE(was.error().message().find("is a shared directory (mode 1777)"), std::string::npos)
      << was.error().message();
  ASSERT_EQ(::stat(shared.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 01777u);
}

TEST(MsbHomeTest, FollowsEnvironmentOrder) {
  setenv("MSB_HOME", "/x/home", 1);
  EXPECT_EQ(MsbHome(), "/x/home");
  unsetenv("MSB_HOME");
  setenv("XDG_DATA_HOME", "/x/data", 1);
  EXPECT_EQ(MsbHome(), "/x/data/msb");
  unsetenv("XDG_DATA_HOME");
  setenv("HOME", "/x/user", 1);
  EXPECT_EQ(MsbHome(), "/x/user/.local/share/msb");
}

}  // namespace
}  // namespace msb
