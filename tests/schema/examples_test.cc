// The Sandboxfiles under examples/ load as they are, mean what their
// comments say, and their canonical form loads back to the same hashes.
#include <gtest/gtest.h>

#include <cstdlib>
#include <algorithm>
#include <filesystem>

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

TEST(ExamplesTest, WebappValidates) {
  Project p = LoadExample("webapp");
  EXPECT_EQ(p.name, "webapp");
  ASSERT_EQ(p.sandboxes.size(), 2u);
  const std::string dir = SourceDir() + "/examples/webapp";
  const Sandbox& app = p.sandboxes.at("app");
  const Sandbox& db = p.sandboxes.at("db");
  // One local image for both, ./rootfs unless WEBAPP_IMAGE says otherwise.
  EXPECT_EQ(app.image.kind, Image::Kind::kLocalDir);
  EXPECT_EQ(app.image.path, dir + "/rootfs");
  EXPECT_EQ(db.image.path, dir + "/rootfs");
  // app: its code mounted read-only, the greeting, db by name, the port on
  // 127.0.0.1, started once db is healthy, reaching only the project.
  EXPECT_EQ(app.command, (std::vector<std::string>{"python3", "-u", "/srv/app/app.py"}));
  ASSERT_EQ(app.volumes.size(), 1u);
  EXPECT_EQ(app.volumes[0].kind, Mount::Kind::kBind);
  EXPECT_EQ(app.volumes[0].source, dir + "/app");
  EXPECT_EQ(app.volumes[0].target, "/srv/app");
  EXPECT_TRUE(app.volumes[0].read_only);
  EXPECT_EQ(app.envs.at("GREETING"), "hello");
  EXPECT_EQ(app.envs.at("REDIS_HOST"), "db");
  ASSERT_EQ(app.ports.size(), 1u);
  EXPECT_EQ(app.ports[0].host_ip, "127.0.0.1");
  EXPECT_EQ(app.ports[0].host_port, 8000);
  EXPECT_EQ(app.ports[0].guest_port, 8000);
  EXPECT_EQ(app.depends_on.at("db").condition, DependCondition::kHealthy);
  EXPECT_EQ(app.network.policy, NetworkPolicy::kGroup);
  EXPECT_EQ(app.security.cap_drop, std::vector<std::string>{"ALL"});
  // db: redis-server with its data on the named volume, written through,
  // healthy when redis-cli ping answers PONG, reachable only on 6379.
  ASSERT_EQ(db.command.size(), 3u);
  EXPECT_EQ(db.command[0], "/bin/sh");
  EXPECT_NE(db.command[2].find("--dir /var/lib/redis --appendonly yes --appendfsync always"),
            std::string::npos) << db.command[2];
  EXPECT_NE(db.command[2].find("--maxmemory \"${REDIS_MAXMEMORY}\""), std::string::npos) << db.command[2];
  EXPECT_EQ(db.envs.at("REDIS_MAXMEMORY"), "64mb");
  ASSERT_EQ(db.volumes.size(), 1u);
  EXPECT_EQ(db.volumes[0].kind, Mount::Kind::kVolume);
  EXPECT_EQ(db.volumes[0].source, "dbdata");
  EXPECT_EQ(db.volumes[0].target, "/var/lib/redis");
  EXPECT_FALSE(db.volumes[0].read_only);
  ASSERT_TRUE(db.healthcheck.has_value());
  EXPECT_EQ(db.healthcheck->command,
            (std::vector<std::string>{"sh", "-c", "test \"$(redis-cli ping)\" = PONG"}));
  EXPECT_EQ(db.network.policy, NetworkPolicy::kNone);
  ASSERT_EQ(db.network.rules.size(), 1u);
  EXPECT_EQ(db.network.rules[0].direction, NetworkRule::Direction::kIngress);
  EXPECT_EQ(db.network.rules[0].target, "group");
  EXPECT_EQ(p.volumes.at("dbdata").size, 256 * kMiB);
  ExpectCanonicalRoundTrip(p);
}

// tests/schema/sandboxfiles/: what scripts/check-sandboxfile-schema holds
// against the JSON Schema, here against the loader alone.
std::vector<std::string> Fixtures(const std::string& kind) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(SourceDir() + "/tests/schema/sandboxfiles/" + kind)) {
    out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(ExamplesTest, SchemaFixturesLoadOrFailAsTheirDirectorySays) {
  Env env;
  std::vector<std::string> valid = Fixtures("valid"), invalid = Fixtures("invalid");
  ASSERT_GE(valid.size(), 4u);
  ASSERT_GE(invalid.size(), 8u);
  for (const std::string& file : valid) {
    LoadOptions options;
    options.file = file;
    options.env = &env;
    auto p = LoadSandboxfile(options);
    EXPECT_TRUE(p.ok()) << file << ": " << (p.ok() ? "" : p.error().message());
    if (p.ok()) ExpectCanonicalRoundTrip(*p);
  }
  for (const std::string& file : invalid) {
    LoadOptions options;
    options.file = file;
    options.env = &env;
    EXPECT_FALSE(LoadSandboxfile(options).ok()) << file;
  }
}

TEST(ExamplesTest, LegacyFixtureKeepsItsScriptsAsShellText) {
  LoadOptions options;
  options.file = SourceDir() + "/tests/schema/sandboxfiles/valid/legacy-microsandbox.yaml";
  Env env;
  options.env = &env;
  auto p = LoadSandboxfile(options);
  ASSERT_TRUE(p.ok()) << p.error().message();
  const Sandbox& app = p->sandboxes.at("app");
  EXPECT_EQ(app.shell, "/bin/bash");
  EXPECT_EQ(app.command, (std::vector<std::string>{"/bin/bash", "-c", "python -m http.server $PORT"}));
  EXPECT_EQ(app.scripts.at("where"),
            (std::vector<std::string>{"/bin/bash", "-c", "echo \"home is $HOME, user ${USER:-nobody}, pid $$\""}));
  EXPECT_EQ(app.memory, 1024 * kMiB);
  EXPECT_EQ(app.envs.at("PORT"), "8080");
}

}  // namespace
}  // namespace msb::schema
