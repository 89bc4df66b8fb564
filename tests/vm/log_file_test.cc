// Tests for the bounded workload log: rotation keeps at most two
// generations of at most max_bytes each with the newest records in PATH, and
// a follower reads every record once, in order, across rotations.
#include "vm/log_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace msb::vm {
namespace {

class LogFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-logfile-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/workload.log";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  uint64_t Size(const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  }
  std::string dir_, path_;
};

std::string Record(int i) { return "record " + std::to_string(i) + " " + std::string(1000, 'x') + "\n"; }

TEST_F(LogFileTest, RotationBoundsTheDiskAndKeepsTheNewestRecords) {
  auto log = RotatingLog::Open(path_, kMinLogMaxBytes);
  ASSERT_TRUE(log.ok());
  LogFollower follower(path_);
  std::string followed;
  const int n = 20000;  // ~20 MB through a 1 MiB log: many rotations
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(log->Append(Record(i)).ok());
    if (i % 7 == 0) followed += follower.Read();
  }
  followed += follower.Read();
  EXPECT_GT(log->rotations(), 10u);
  EXPECT_LE(Size(path_), kMinLogMaxBytes);
  EXPECT_LE(Size(path_ + ".1"), kMinLogMaxBytes);
  // The follower saw every record once and in order.
  std::string want;
  for (int i = 0; i < n; ++i) want += Record(i);
  EXPECT_EQ(followed, want);
  // A new reader starts from the previous generation and ends at the newest.
  std::string fresh = LogFollower(path_).Read();
  EXPECT_EQ(fresh.substr(fresh.size() - Record(n - 1).size()), Record(n - 1));
  EXPECT_LE(fresh.size(), 2 * kMinLogMaxBytes);
}

TEST_F(LogFileTest, OversizedRecordsAreCutAndPartialLinesWait) {
  auto log = RotatingLog::Open(path_, 1);  // raised to the minimum
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE(log->Append(std::string(3 * kMinLogMaxBytes, 'y')).ok());
  EXPECT_EQ(Size(path_), kMinLogMaxBytes);
  LogFollower follower(path_);
  std::string first = follower.Read();
  EXPECT_EQ(first.size(), kMinLogMaxBytes);  // the cut record, still a line
  EXPECT_EQ(first.back(), '\n');
  ASSERT_TRUE(log->Append("z").ok());
  EXPECT_EQ(follower.Read(), "");  // no newline yet: nothing complete
  ASSERT_TRUE(log->Append("z\n").ok());
  EXPECT_EQ(follower.Read(), "zz\n");
}

}  // namespace
}  // namespace msb::vm
