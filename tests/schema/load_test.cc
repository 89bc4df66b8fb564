// Tests for finding and reading a Sandboxfile from disk (LoadSandboxfile):
// default names, -f, the .env file beside it and the environment's priority.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "common/io.h"
#include "schema/sandboxfile.h"

namespace msb::schema {
namespace {

class LoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-schema-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/" + name, text).ok());
  }
  std::string dir_;
};

TEST_F(LoadTest, FindsSandboxfileThenMsbYaml) {
  LoadOptions options;
  options.dir = dir_;
  auto none = FindSandboxfile(options);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(none.error().message(), "no Sandboxfile or msb.yaml in " + dir_ + " (use -f FILE)");
  Write("msb.yaml", "sandboxes: {}\n");
  EXPECT_EQ(*FindSandboxfile(options), dir_ + "/msb.yaml");
  Write("Sandboxfile", "sandboxes: {}\n");
  EXPECT_EQ(*FindSandboxfile(options), dir_ + "/Sandboxfile");
  options.dir.clear();
  options.file = dir_;  // a directory given to -f is searched
  EXPECT_EQ(*FindSandboxfile(options), dir_ + "/Sandboxfile");
  options.file = dir_ + "/msb.yaml";
  EXPECT_EQ(*FindSandboxfile(options), dir_ + "/msb.yaml");
  options.file = dir_ + "/other.yaml";
  EXPECT_EQ(FindSandboxfile(options).error().message(), "no such file: " + dir_ + "/other.yaml");
}

TEST_F(LoadTest, DotEnvSuppliesVariablesAndTheEnvironmentWins) {
  Write(".env", "MSB_SCHEMA_TEST_A=from-dotenv\nMSB_SCHEMA_TEST_B=from-dotenv\n");
  Write("Sandboxfile",
        "sandboxes:\n  web:\n    image: alpine\n    envs:\n      A: ${MSB_SCHEMA_TEST_A}\n"
        "      B: ${MSB_SCHEMA_TEST_B}\n");
  ::setenv("MSB_SCHEMA_TEST_B", "from-environment", 1);
  LoadOptions options;
  options.file = dir_ + "/Sandboxfile";
  auto p = LoadSandboxfile(options);
  ::unsetenv("MSB_SCHEMA_TEST_B");
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_EQ(p->sandboxes["web"].envs["A"], "from-dotenv");
  EXPECT_EQ(p->sandboxes["web"].envs["B"], "from-environment");
}

TEST_F(LoadTest, DotEnvErrorsFailTheLoad) {
  Write(".env", "this is not a pair\n");
  Write("Sandboxfile", "sandboxes: {}\n");
  LoadOptions options;
  options.file = dir_ + "/Sandboxfile";
  Diagnostics diags;
  options.diagnostics = &diags;
  auto p = LoadSandboxfile(options);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(diags.ToString(), dir_ + "/.env:1:1: expected KEY=VALUE with KEY made of letters, digits and '_'\n");
}

TEST_F(LoadTest, BindSourcesAreCheckedOnDisk) {
  std::filesystem::create_directory(dir_ + "/src");
  Write("Sandboxfile", "sandboxes:\n  web:\n    image: alpine\n    volumes: [./src:/src, ./gone:/gone]\n");
  LoadOptions options;
  options.file = dir_ + "/Sandboxfile";
  Env env;
  options.env = &env;
  auto p = LoadSandboxfile(options);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().message(), dir_ + "/Sandboxfile:4:27: sandboxes.web.volumes[1]: host path " + dir_ +
                                     "/gone does not exist (relative paths start at " + dir_ + ")");
}

TEST_F(LoadTest, ProjectNameDefaultsToTheDirectory) {
  std::filesystem::create_directory(dir_ + "/My App");
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/My App/Sandboxfile", "sandboxes: {}\n").ok());
  LoadOptions options;
  options.dir = dir_ + "/My App";
  Env env;
  options.env = &env;
  auto p = LoadSandboxfile(options);
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_EQ(p->name, "my-app");
  EXPECT_EQ(p->base_dir, dir_ + "/My App");
}

}  // namespace
}  // namespace msb::schema
