// Tests for the canonical form and the config hash (schema/canonical.cc):
// the JSON is golden text; the YAML loads back; the hash covers what shapes
// the VM and nothing else.
#include <gtest/gtest.h>

#include "schema/sandboxfile.h"
#include "tests/schema/schema_test_util.h"

namespace msb::schema {
namespace {

using testing::MustParse;
using testing::Web;

TEST(CanonicalTest, JsonHasEveryDefaultSortedKeysBytesAndMilliseconds) {
  Project p = MustParse(
      "sandboxes:\n"
      "  web:\n"
      "    image: alpine:3.19\n"
      "    memory: 1G\n"
      "    command: echo hi\n"
      "    volumes: [./src:/app, cache:/var/cache]\n"
      "    tmpfs: [/tmp:size=64M]\n"
      "    ports: [8080:80]\n"
      "    healthcheck: {command: [true], interval: 1m30s}\n"
      "    network: {rules: [allow@api.github.com:tcp:443]}\n"
      "    secrets: {T: {from_env: GH, allow: [api.github.com]}}\n"
      "volumes: {cache: {}}\n");
  EXPECT_EQ(CanonicalJson(p).dump(),
            R"({"name":"proj","sandboxes":{"web":{"command":["/bin/sh","-c","echo hi"],"cpus":1,"depends_on":{},)"
            R"("disk":2147483648,"envs":{},"ephemeral":false,"healthcheck":{"command":["true"],"interval":90000,)"
            R"("retries":3,"start_period":0,"timeout":5000},"image":"docker.io/library/alpine:3.19",)"
            R"("memory":1073741824,"network":{"dns":{"rebind_protection":true,"servers":[]},"policy":"public",)"
            R"("rules":["allow:egress@api.github.com:tcp:443"]},"ports":[{"guest_port":80,"host_ip":"127.0.0.1",)"
            R"("host_port":8080,"protocol":"tcp"}],"restart":"no","scripts":{},"secrets":{"T":{"allow":)"
            R"(["api.github.com"],"from_env":"GH","inject":{"basic_auth":true,"body":false,"headers":true,)"
            R"("query":false}}},"shell":"/bin/sh","tmpfs":[{"mode":"1777","size":67108864,"target":"/tmp"}],)"
            R"("volumes":[{"read_only":false,"source":"/proj/src","target":"/app","type":"bind"},)"
            R"({"read_only":false,"source":"cache","target":"/var/cache","type":"volume"}]}},)"
            R"("volumes":{"cache":{"size":10737418240}}})");
}

TEST(CanonicalTest, YamlLoadsBackToTheSameModel) {
  Project p = MustParse(
      "meta: {description: \"a: b # c\"}\n"
      "sandboxes:\n"
      "  web:\n"
      "    image: oci-layout:./layout:v1\n"
      "    user: \"1000\"\n"
      "    workdir: /w\n"
      "    envs: {A: \"$$x\", B: \"null\", C: \"\", D: \"- [x]: {y}\", E: \" lead\", F: \"multi\\nline\", G: yes}\n"
      "    command: [\"#\", \"'\", \"\\\"\", \"&a\", \"*b\", \"!c\", \"%d\", \"@e\", \"`f\"]\n"
      "    ports: [\"[::1]:8080:80/udp\"]\n"
      "    restart: on-failure:2\n"
      "    depends_on: {db: {condition: completed}}\n"
      "    network: {rules: [allow@db, \"deny@[fe80::/10]\"], dns: {servers: [\"::1\"]}}\n"
      "  db: {image: snapshot:s1, ephemeral: true}\n");
  std::string yaml = CanonicalYaml(p);
  auto again = ParseSandboxfile(yaml, "/other/place/Sandboxfile", Env{});
  ASSERT_TRUE(again.ok()) << again.error().message() << "\n" << yaml;
  EXPECT_EQ(CanonicalJson(*again), CanonicalJson(p)) << yaml;
  EXPECT_EQ(again->sandboxes["web"].envs["A"], "$x");
  EXPECT_EQ(again->sandboxes["web"].envs["B"], "null");
  EXPECT_EQ(again->sandboxes["web"].envs["F"], "multi\nline");
}

TEST(CanonicalTest, HashIsHexSha256AndStableAcrossParses) {
  Project a = MustParse(Web("    cpus: 2\n"));
  Project b = MustParse("# comment\nsandboxes:\n  web: {cpus: \"2\",   image: \"docker.io/library/alpine\"}\n");
  std::string h = ConfigHash(a.sandboxes["web"]);
  EXPECT_EQ(h.size(), 64u);
  EXPECT_EQ(h.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(ConfigHash(b.sandboxes["web"]), h);
}

TEST(CanonicalTest, HashLeavesOutDependsOnRestartAndHealthcheck) {
  std::string base = "sandboxes:\n  db: {image: x, healthcheck: {command: x}}\n  web:\n    image: alpine\n";
  std::string h = ConfigHash(MustParse(base).sandboxes["web"]);
  EXPECT_EQ(ConfigHash(MustParse(base + "    depends_on: [db]\n").sandboxes["web"]), h);
  EXPECT_EQ(ConfigHash(MustParse(base + "    restart: always\n").sandboxes["web"]), h);
  EXPECT_EQ(ConfigHash(MustParse(base + "    healthcheck: {command: y}\n").sandboxes["web"]), h);
  EXPECT_EQ(ConfigHash(MustParse(base + "    meta: {description: d}\n").sandboxes["web"]), h);
  EXPECT_NE(ConfigHash(MustParse(base + "    cpus: 2\n").sandboxes["web"]), h);
  EXPECT_NE(ConfigHash(MustParse(base + "    secrets: {T: {from_env: A, allow: [h.com]}}\n").sandboxes["web"]), h);
  EXPECT_NE(ConfigHash(MustParse(base + "    secrets: {T: {from_env: A, allow: [h.com]}}\n").sandboxes["web"]),
            ConfigHash(MustParse(base + "    secrets: {T: {from_env: A, allow: [h.org]}}\n").sandboxes["web"]));
}

TEST(CanonicalTest, ImageDigestIsMixedInWhenKnown) {
  Sandbox sb = MustParse(Web("")).sandboxes["web"];
  std::string d1 = "sha256:" + std::string(64, '1');
  std::string d2 = "sha256:" + std::string(64, '2');
  EXPECT_NE(ConfigHash(sb, d1), ConfigHash(sb));
  EXPECT_NE(ConfigHash(sb, d1), ConfigHash(sb, d2));
  EXPECT_EQ(ConfigHash(sb, d1), ConfigHash(sb, d1));
  EXPECT_EQ(ConfigHash(sb, ""), ConfigHash(sb));
}

}  // namespace
}  // namespace msb::schema
