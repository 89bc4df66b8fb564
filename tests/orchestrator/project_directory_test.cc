// CheckProjectDirectory (orchestrator/up.h): a project name belongs to one
// directory. Another existing directory is refused naming both and the ways
// out; a recorded directory that no longer exists is taken over.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "orchestrator/store.h"
#include "orchestrator/up.h"

namespace msb::orchestrator {
namespace {

class ProjectDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-projdir-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::filesystem::create_directories(dir_ + "/a/app");
    std::filesystem::create_directories(dir_ + "/b/app");
    auto s = Store::Open(dir_ + "/state.db");
    ASSERT_TRUE(s.ok()) << s.error().message();
    store_.emplace(std::move(s).value());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  schema::Project In(const std::string& sub) {
    schema::Project p;
    p.name = "app";
    p.base_dir = dir_ + "/" + sub;
    p.source_path = p.base_dir + "/Sandboxfile";
    return p;
  }
  void Record(const schema::Project& p) {
    ASSERT_TRUE(store_->UpsertProject(ProjectRecord{p.name, p.base_dir, p.source_path, 0}).ok());
  }

  std::string dir_;
  std::optional<Store> store_;
  std::vector<std::string> notes_;
  std::function<void(const std::string&)> note_ = [this](const std::string& l) { notes_.push_back(l); };
};

TEST_F(ProjectDirectoryTest, UnrecordedAndSameDirectoryPass) {
  EXPECT_TRUE(CheckProjectDirectory(*store_, In("a/app"), true, note_).ok());
  Record(In("a/app"));
  EXPECT_TRUE(CheckProjectDirectory(*store_, In("a/app"), true, note_).ok());
  // The same directory through a symbolic link is the same directory.
  std::filesystem::create_directory_symlink(dir_ + "/a/app", dir_ + "/link");
  EXPECT_TRUE(CheckProjectDirectory(*store_, In("link"), true, note_).ok());
  EXPECT_TRUE(notes_.empty());
}

TEST_F(ProjectDirectoryTest, AnotherExistingDirectoryIsRefusedNamingBothAndTheWaysOut) {
  Record(In("a/app"));
  auto st = CheckProjectDirectory(*store_, In("b/app"), true, note_);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(st.error().message(),
            "project app belongs to " + dir_ + "/a/app; this Sandboxfile is in " + dir_ +
                "/b/app. Give this one another name with -p OTHER_NAME (or "
                "MSB_PROJECT_NAME=OTHER_NAME), or remove the other first: run `msb down -p app` in " +
                dir_ + "/a/app. (A project whose directory no longer exists is taken over.)");
  auto got = store_->GetProject("app");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->directory, dir_ + "/a/app");

  // With named volumes, freeing the name means removing them too.
  ASSERT_TRUE(store_->UpsertVolume(VolumeRecord{"app", "data", 1, dir_ + "/v.ext4", 0}).ok());
  st = CheckProjectDirectory(*store_, In("b/app"), true, note_);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("`msb down --volumes -p app`"), std::string::npos)
      << st.error().message();
}

TEST_F(ProjectDirectoryTest, AVanishedDirectoryIsTakenOverWithANote) {
  Record(In("a/app"));
  std::filesystem::remove_all(dir_ + "/a");
  // plan only says so.
  ASSERT_TRUE(CheckProjectDirectory(*store_, In("b/app"), false, note_).ok());
  ASSERT_EQ(notes_.size(), 1u);
  EXPECT_EQ(notes_[0], "project app was recorded for " + dir_ +
                           "/a/app, which no longer exists; msb up will take it over");
  auto got = store_->GetProject("app");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->directory, dir_ + "/a/app");
  // up moves the record.
  ASSERT_TRUE(CheckProjectDirectory(*store_, In("b/app"), true, note_).ok());
  ASSERT_EQ(notes_.size(), 2u);
  EXPECT_EQ(notes_[1], "project app was recorded for " + dir_ +
                           "/a/app, which no longer exists; taking it over");
  got = store_->GetProject("app");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->directory, dir_ + "/b/app");
  EXPECT_EQ((*got)->sandboxfile, dir_ + "/b/app/Sandboxfile");
}

}  // namespace
}  // namespace msb::orchestrator
