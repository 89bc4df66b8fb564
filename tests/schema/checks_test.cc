// Tests for the rules that span sandboxes (schema/checks.cc): dependencies
// and their cycles, published host addresses, declared volumes, bind sources.
#include <gtest/gtest.h>

#include "schema/sandboxfile.h"
#include "tests/schema/schema_test_util.h"

namespace msb::schema {
namespace {

using testing::Errors;
using testing::MustParse;
using testing::ParseText;

TEST(ChecksTest, DependsOnMustNameASandbox) {
  EXPECT_EQ(Errors("sandboxes:\n  web:\n    image: a\n    depends_on: [dbb]\n  db:\n    image: a\n"),
            "Sandboxfile:4:18: sandboxes.web.depends_on[0]: depends on unknown sandbox \"dbb\"; did you mean \"db\"?\n");
  Project p = MustParse("sandboxes:\n  web:\n    image: a\n    depends_on: [db]\n  db:\n    image: a\n");
  EXPECT_EQ(p.sandboxes["web"].depends_on.at("db").condition, DependCondition::kStarted);
}

TEST(ChecksTest, DependsOnConditions) {
  Project p = MustParse(
      "sandboxes:\n  web:\n    image: a\n    depends_on:\n      db: {condition: healthy}\n      init: "
      "{condition: completed}\n      cache:\n  db:\n    image: a\n    healthcheck: {command: x}\n  init: {image: "
      "a}\n  cache: {image: a}\n");
  const auto& deps = p.sandboxes["web"].depends_on;
  EXPECT_EQ(deps.at("db").condition, DependCondition::kHealthy);
  EXPECT_EQ(deps.at("init").condition, DependCondition::kCompleted);
  EXPECT_EQ(deps.at("cache").condition, DependCondition::kStarted);
  EXPECT_EQ(Errors("sandboxes:\n  web:\n    image: a\n    depends_on:\n      db: {condition: healthy}\n  db: {image: a}\n"),
            "Sandboxfile:5:11: sandboxes.web.depends_on.db: condition healthy needs a healthcheck on sandbox \"db\", "
            "which has none\n");
  EXPECT_EQ(Errors("sandboxes:\n  web:\n    image: a\n    depends_on:\n      db: {condition: ready}\n  db: {image: a}\n"),
            "Sandboxfile:5:23: sandboxes.web.depends_on.db.condition: expected started, healthy or completed, got "
            "\"ready\"\n");
}

TEST(ChecksTest, CyclesAreNamed) {
  EXPECT_EQ(Errors("sandboxes:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n"),
            "Sandboxfile:7:18: sandboxes.b.depends_on: depends_on cycle: a -> b -> a\n");
  EXPECT_EQ(Errors("sandboxes:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [c]}\n"
                   "  c: {image: x, depends_on: [a]}\n"),
            "Sandboxfile:4:30: sandboxes.c.depends_on: depends_on cycle: a -> b -> c -> a\n");
  EXPECT_EQ(Errors("sandboxes:\n  a: {image: x, depends_on: [a]}\n"),
            "Sandboxfile:2:30: sandboxes.a.depends_on[0]: a sandbox cannot depend on itself\n");
  // A diamond is not a cycle.
  MustParse("sandboxes:\n  a: {image: x, depends_on: [b, c]}\n  b: {image: x, depends_on: [d]}\n"
            "  c: {image: x, depends_on: [d]}\n  d: {image: x}\n");
}

TEST(ChecksTest, PublishedHostAddressesAreUnique) {
  EXPECT_EQ(Errors("sandboxes:\n  a:\n    image: x\n    ports: [\"8080:80\"]\n  b:\n    image: x\n    ports: "
                   "[\"127.0.0.1:8080:81\"]\n"),
            "Sandboxfile:7:13: sandboxes.b.ports[0]: host address 127.0.0.1:8080/tcp is already published by "
            "sandboxes.a.ports[0] (line 4)\n");
  EXPECT_EQ(Errors("sandboxes:\n  a:\n    image: x\n    ports: [\"0.0.0.0:53:53/udp\", \"10.0.0.1:53:54/udp\"]\n"),
            "Sandboxfile:4:34: sandboxes.a.ports[1]: host address 10.0.0.1:53/udp is already published by "
            "sandboxes.a.ports[0] (line 4)\n");
  // Other protocol, other address or other port: no conflict.
  MustParse("sandboxes:\n  a:\n    image: x\n    ports: [\"8080:80\", \"8080:80/udp\", \"10.0.0.1:8080:80\", "
            "\"8081:80\"]\n");
}

TEST(ChecksTest, NamedVolumesMustBeDeclared) {
  EXPECT_EQ(Errors("sandboxes:\n  a:\n    image: x\n    volumes: [\"cahce:/c\"]\nvolumes:\n  cache: {}\n"),
            "Sandboxfile:4:15: sandboxes.a.volumes[0]: volume \"cahce\" is not declared in the top-level "
            "volumes section; did you mean \"cache\"? (a host path starts with ./ or /)\n");
  Project p = MustParse("sandboxes:\n  a:\n    image: x\n    volumes: [\"cache:/c\"]\nvolumes:\n  cache: {size: 1G}\n");
  EXPECT_EQ(p.volumes["cache"].size, kGiB);
  EXPECT_EQ(p.sandboxes["a"].volumes[0].kind, Mount::Kind::kVolume);
}

TEST(ChecksTest, AVolumeIsWrittenByOneMountOrOnlyRead) {
  EXPECT_EQ(Errors("sandboxes:\n  a:\n    image: x\n    volumes: [\"data:/d\"]\n"
                   "  b:\n    image: x\n    volumes: [\"data:/d:ro\"]\nvolumes:\n  data: {}\n"),
            "Sandboxfile:7:15: sandboxes.b.volumes[0]: volume \"data\" is also mounted by "
            "sandboxes.a.volumes[0] (line 4) and one of them writes to it: a volume is a disk only one "
            "VM may write; mount it :ro everywhere, or share a host directory with a bind mount\n");
  // Twice in one sandbox is two attachments of one disk as well.
  EXPECT_NE(Errors("sandboxes:\n  a:\n    image: x\n    volumes: [\"data:/d\", \"data:/e\"]\n"
                   "volumes:\n  data: {}\n"),
            "");
  // Read-only everywhere: shared.
  MustParse("sandboxes:\n  a:\n    image: x\n    volumes: [\"data:/d:ro\"]\n"
            "  b:\n    image: x\n    volumes: [\"data:/d:ro\"]\nvolumes:\n  data: {}\n");
}

TEST(ChecksTest, BindSourcesMustExistRelativeToTheFile) {
  std::string text = "sandboxes:\n  a:\n    image: x\n    volumes: [\"./src:/src\", \"../data:/data:ro\"]\n";
  auto missing = ParseText(text, testing::TestEnv(), std::set<std::string>{"/proj/src"});
  EXPECT_FALSE(missing.project.has_value());
  EXPECT_EQ(missing.diagnostics,
            "Sandboxfile:4:29: sandboxes.a.volumes[1]: host path /data does not exist (relative paths start at "
            "/proj)\n");
  auto present = ParseText(text, testing::TestEnv(), std::set<std::string>{"/proj/src", "/data"});
  EXPECT_TRUE(present.project.has_value()) << present.diagnostics;
}

}  // namespace
}  // namespace msb::schema
