// The Sandboxfiles under examples/ load as they are, mean what their
// comments say, and their canonical form loads back to the same hashes.
#include <gtest/gtest.h>

#include <cstdlib>

#include "schema/sandboxfile.h"

namespace msb::schema {
namespace {

std::string SourceDir() {
  const char* dir = std::getenv("MSB_SOURCE_DIR");
  return dir ? dir : MSB_SOURCE_DIR_FALLBACK;
}

Project LoadExample(const std::string& name) {
  LoadOptions options;
  options.dir = SourceDir() + "/examples/" + name;
  Env env;  // hermetic: no ${VAR} from the test's environment
  options.env = &env;
  auto p = LoadSandboxfile(options);
  EXPECT_TRUE(p.ok()) << (p.ok() ? "" : p.error().message());
  return p.ok() ? *p : Project{};
}

void ExpectCanonicalRoundTrip(const Project& p) {
  ParseOptions options;
  auto again = ParseSandboxfile(CanonicalYaml(p), "/elsewhere/Sandboxfile", Env{}, options);
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(CanonicalJson(*again), CanonicalJson(p));
  for (const auto& [name, sb] : p.sandboxes) EXPECT_EQ(ConfigHash(again->sandboxes.at(name)), ConfigHash(sb));
}

TEST(ExamplesTest, QuickstartValidates) {
  Project p = LoadExample("quickstart");
  ASSERT_EQ(p.sandboxes.size(), 1u);
  const Sandbox& hello = p.sandboxes.at("hello");
  EXPECT_EQ(hello.image.kind, Image::Kind::kLocalDir);
  EXPECT_EQ(hello.image.path, SourceDir() + "/examples/quickstart/rootfs");
  EXPECT_EQ(hello.memory, 256 * kMiB);
  EXPECT_EQ(hello.cpus, 1);
  ASSERT_EQ(hello.command.size(), 3u);
  EXPECT_EQ(hello.command[0], "/bin/sh");
  ExpectCanonicalRoundTrip(p);
}

TEST(ExamplesTest, DevEnvValidates) {
  Project p = LoadExample("dev-env");
  EXPECT_EQ(p.name, "dev-env");
  ASSERT_EQ(p.sandboxes.size(), 2u);
  const Sandbox& app = p.sandboxes.at("app");
  EXPECT_EQ(app.depends_on.at("db").condition, DependCondition::kHealthy);
  EXPECT_EQ(app.envs.at("LOG_LEVEL"), "info");
  EXPECT_EQ(app.image.path, SourceDir() + "/examples/quickstart/rootfs");
  EXPECT_EQ(app.volumes.at(0).source, SourceDir() + "/examples/dev-env/src");
  EXPECT_TRUE(app.volumes.at(0).read_only);
  EXPECT_EQ(p.volumes.at("dbdata").size, 256 * kMiB);
  ExpectCanonicalRoundTrip(p);
}

}  // namespace
}  // namespace msb::schema
