// Tests of storage/volume: where a named volume's disk lives, that it is created
// once (label: the name cut to 16 bytes) and never overwritten.
#include "storage/volume.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "common/child.h"
#include "common/io.h"

namespace msb::storage {
namespace {

std::string Dumpe2fsHeader(const std::string& image) {
  for (const char* p : {"/usr/sbin/dumpe2fs", "/sbin/dumpe2fs"}) {
    if (::access(p, X_OK) != 0) continue;
    auto r = RunCapture({p, "-h", image}, false);
    return r.ok() ? r->output : "";
  }
  return "";
}

class VolumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-volume-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(VolumeTest, PathAndLabel) {
  EXPECT_EQ(VolumeDiskPath("/h", "shop", "cache"), "/h/volumes/shop/cache.ext4");
  EXPECT_EQ(VolumeLabel("cache"), "cache");
  EXPECT_EQ(VolumeLabel("a-very-long-volume-name"), "a-very-long-volu");
}

TEST_F(VolumeTest, CreatedOnceAndNeverOverwritten) {
  std::string path = VolumeDiskPath(dir_, "proj", "a-very-long-volume-name");
  auto made = EnsureVolumeDisk(path, 16ull << 20, "a-very-long-volume-name");
  ASSERT_TRUE(made.ok()) << made.error().message();
  EXPECT_TRUE(*made);
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 16 << 20);
  EXPECT_LT(st.st_blocks * 512, st.st_size);  // sparse
  std::string header = Dumpe2fsHeader(path);
  EXPECT_NE(header.find("Filesystem volume name:   a-very-long-volu\n"), std::string::npos) << header;
  EXPECT_NE(header.find("has_journal"), std::string::npos);

  // A second use finds it: nothing is rewritten, whatever size is asked now.
  ino_t ino = st.st_ino;
  auto again = EnsureVolumeDisk(path, 32ull << 20, "a-very-long-volume-name");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_ino, ino);
  EXPECT_EQ(st.st_size, 16 << 20);
}

TEST_F(VolumeTest, RefusesWhatIsNotADiskFile) {
  std::string path = VolumeDiskPath(dir_, "proj", "odd");
  ASSERT_TRUE(MakeDirs(path).ok());
  auto r = EnsureVolumeDisk(path, 16ull << 20, "odd");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("is not a regular file"), std::string::npos);
}

}  // namespace
}  // namespace msb::storage
