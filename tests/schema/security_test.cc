// Tests for the `security:` section (schema/security.{h,cc}): parsing and
// validation with positions, the strict level and what overrides it, the
// canonical form and the config hash, and docker's capability arithmetic.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/capabilities.h"
#include "schema/security.h"
#include "tests/schema/schema_test_util.h"

namespace msb::schema {
namespace {

using testing::Errors;
using testing::MustParse;
using testing::Web;
using ::testing::HasSubstr;

Sandbox WebOf(const std::string& body) { return MustParse(Web(body)).sandboxes["web"]; }

uint64_t Bit(const char* name) { return uint64_t{1} << *CapabilityNumber(name); }

TEST(SecurityTest, FieldsParseAndCapabilitiesAreNormalisedSortedAndUnique) {
  Sandbox sb = WebOf(
      "    security:\n"
      "      read_only_root: true\n"
      "      no_new_privileges: true\n"
      "      cap_drop: [net_raw, CAP_SYS_ADMIN, NET_RAW]\n"
      "      cap_add: [Net_Bind_Service]\n");
  EXPECT_TRUE(sb.security.read_only_root);
  EXPECT_TRUE(sb.security.no_new_privileges);
  EXPECT_EQ(sb.security.cap_drop, (std::vector<std::string>{"CAP_NET_RAW", "CAP_SYS_ADMIN"}));
  EXPECT_EQ(sb.security.cap_add, (std::vector<std::string>{"CAP_NET_BIND_SERVICE"}));
  // The network is untouched without a level.
  EXPECT_EQ(sb.network.policy, NetworkPolicy::kPublic);
}

TEST(SecurityTest, NoSectionIsTheDefault) {
  Sandbox sb = WebOf("");
  EXPECT_TRUE(sb.security.IsDefault());
  EXPECT_FALSE(EffectiveCapabilities(sb.security).has_value());
}

TEST(SecurityTest, UnknownCapabilityNamesWhereAndWhatIsValid) {
  std::string e = Errors(Web("    security:\n      cap_drop: [ALL]\n      cap_add: [CAP_NET_BIND, bogus]\n"));
  EXPECT_THAT(e, HasSubstr("Sandboxfile:6:"));
  EXPECT_THAT(e, HasSubstr("sandboxes.web.security.cap_add[0]"));
  EXPECT_THAT(e, HasSubstr("unknown capability \"CAP_NET_BIND\""));
  EXPECT_THAT(e, HasSubstr("did you mean \"CAP_NET_BIND_SERVICE\"?"));
  EXPECT_THAT(e, HasSubstr("expected ALL or one of CAP_CHOWN, "));
  EXPECT_THAT(e, HasSubstr("CAP_CHECKPOINT_RESTORE"));
  EXPECT_THAT(e, HasSubstr("sandboxes.web.security.cap_add[1]"));
  EXPECT_THAT(e, HasSubstr("unknown capability \"bogus\""));
}

TEST(SecurityTest, WrongTypesUnknownKeysAndLevelsAreErrors) {
  EXPECT_THAT(Errors(Web("    security: {cap_drop: ALL}\n")),
              HasSubstr("sandboxes.web.security.cap_drop: expected a list of capabilities"));
  EXPECT_THAT(Errors(Web("    security: {read_only_root: yes}\n")), HasSubstr("YAML 1.1 boolean"));
  EXPECT_THAT(Errors(Web("    security: {read_only_rot: true}\n")), HasSubstr("did you mean \"read_only_root\"?"));
  EXPECT_THAT(Errors(Web("    security: {level: strikt}\n")),
              HasSubstr("sandboxes.web.security.level: unknown level \"strikt\"; did you mean \"strict\"?"));
  EXPECT_THAT(Errors(Web("    security: [strict]\n")), HasSubstr("sandboxes.web.security"));
}

TEST(SecurityTest, StrictExpandsToEveryControlAndNetworkNone) {
  Sandbox sb = WebOf("    security: {level: strict}\n");
  EXPECT_TRUE(sb.security.read_only_root);
  EXPECT_TRUE(sb.security.no_new_privileges);
  EXPECT_EQ(sb.security.cap_drop, (std::vector<std::string>{"ALL"}));
  EXPECT_TRUE(sb.security.cap_add.empty());
  EXPECT_EQ(sb.network.policy, NetworkPolicy::kNone);
  EXPECT_EQ(EffectiveCapabilities(sb.security), uint64_t{0});
}

TEST(SecurityTest, ExplicitFieldsOverrideTheLevel) {
  Sandbox sb = WebOf(
      "    security: {level: strict, read_only_root: false, cap_add: [NET_BIND_SERVICE]}\n"
      "    network: {policy: public}\n");
  EXPECT_FALSE(sb.security.read_only_root);
  EXPECT_TRUE(sb.security.no_new_privileges);
  EXPECT_EQ(sb.security.cap_drop, (std::vector<std::string>{"ALL"}));
  EXPECT_EQ(EffectiveCapabilities(sb.security), Bit("CAP_NET_BIND_SERVICE"));
  EXPECT_EQ(sb.network.policy, NetworkPolicy::kPublic);
  // The legacy scope names a policy too; a cap_drop replaces the level's.
  Sandbox scoped = WebOf("    scope: any\n    security: {level: strict, cap_drop: [NET_RAW]}\n");
  EXPECT_EQ(scoped.network.policy, NetworkPolicy::kAny);
  EXPECT_EQ(scoped.security.cap_drop, (std::vector<std::string>{"CAP_NET_RAW"}));
  // Rules alone leave the level's profile.
  EXPECT_EQ(WebOf("    security: {level: strict}\n    network: {rules: [allow@db]}\n").network.policy,
            NetworkPolicy::kNone);
  EXPECT_TRUE(WebOf("    security: {level: default}\n").security.IsDefault());
}

TEST(SecurityTest, StrictNetworkNoneStillChecksSecretHosts) {
  std::string e = Errors(Web("    security: {level: strict}\n"
                             "    secrets: {T: {from_env: GH, allow: [api.github.com]}}\n"));
  EXPECT_THAT(e, HasSubstr("network policy none"));
  MustParse(Web("    security: {level: strict}\n"
                "    network: {rules: [allow@api.github.com:tcp:443]}\n"
                "    secrets: {T: {from_env: GH, allow: [api.github.com]}}\n"));
}

TEST(SecurityTest, ReadOnlyRootWarnsThatDiskHasNoEffect) {
  auto p = testing::ParseText(Web("    disk: 4G\n    security: {read_only_root: true}\n"));
  ASSERT_TRUE(p.project.has_value()) << p.diagnostics;
  EXPECT_THAT(p.diagnostics, HasSubstr("disk has no effect with security.read_only_root"));
}

TEST(SecurityTest, CanonicalJsonShowsTheExpansionOnlyWhenSet) {
  EXPECT_FALSE(CanonicalJson(WebOf("")).contains("security"));
  EXPECT_FALSE(CanonicalJson(WebOf("    security: {}\n")).contains("security"));
  auto j = CanonicalJson(WebOf("    security: {level: strict, cap_add: [kill]}\n"));
  EXPECT_EQ(j["security"].dump(),
            R"({"cap_add":["CAP_KILL"],"cap_drop":["ALL"],"no_new_privileges":true,"read_only_root":true})");
  EXPECT_EQ(j["network"]["policy"], "none");
}

TEST(SecurityTest, YamlWithSecurityLoadsBackToTheSameModel) {
  Project p = MustParse(Web("    security: {level: strict, cap_add: [CAP_KILL, NET_BIND_SERVICE]}\n"));
  std::string yaml = CanonicalYaml(p);
  EXPECT_THAT(yaml, HasSubstr("security:"));
  EXPECT_THAT(yaml, ::testing::Not(HasSubstr("level")));
  auto again = ParseSandboxfile(yaml, "/proj/Sandboxfile", Env{});
  ASSERT_TRUE(again.ok()) << again.error().message() << "\n" << yaml;
  EXPECT_EQ(CanonicalJson(*again), CanonicalJson(p)) << yaml;
}

TEST(SecurityTest, EveryFieldIsHashedAndTheDefaultKeepsTheOldHash) {
  const std::string base = "    command: x\n";
  const std::string h = ConfigHash(WebOf(base));
  EXPECT_EQ(ConfigHash(WebOf(base + "    security: {}\n")), h);
  EXPECT_EQ(ConfigHash(WebOf(base + "    security: {level: default, cap_drop: []}\n")), h);
  std::vector<std::string> variants = {
      "    security: {read_only_root: true}\n",
      "    security: {no_new_privileges: true}\n",
      "    security: {cap_drop: [ALL]}\n",
      "    security: {cap_drop: [NET_RAW]}\n",
      "    security: {cap_add: [NET_RAW]}\n",
      "    security: {cap_drop: [ALL], cap_add: [NET_RAW]}\n",
  };
  std::set<std::string> hashes = {h};
  for (const std::string& v : variants) {
    EXPECT_TRUE(hashes.insert(ConfigHash(WebOf(base + v))).second) << v;
  }
  // A level hashes as what it expands to.
  EXPECT_EQ(ConfigHash(WebOf(base + "    security: {level: strict}\n")),
            ConfigHash(WebOf(base + "    network: {policy: none}\n    security: {read_only_root: true, "
                                    "no_new_privileges: true, cap_drop: [all]}\n")));
}

TEST(SecurityTest, CapabilityArithmeticFollowsDocker) {
  auto caps = [](std::vector<std::string> drop, std::vector<std::string> add) {
    Security s;
    s.cap_drop = std::move(drop);
    s.cap_add = std::move(add);
    return EffectiveCapabilities(s);
  };
  EXPECT_EQ(caps({"ALL"}, {}), uint64_t{0});
  EXPECT_EQ(caps({"ALL"}, {"CAP_KILL", "CAP_CHOWN"}), Bit("CAP_KILL") | Bit("CAP_CHOWN"));
  EXPECT_EQ(caps({"CAP_NET_RAW"}, {}), kAllCapabilities & ~Bit("CAP_NET_RAW"));
  // Drop then add: the add wins, as docker does.
  EXPECT_EQ(caps({"CAP_NET_RAW"}, {"CAP_NET_RAW"}), kAllCapabilities);
  EXPECT_EQ(caps({}, {"CAP_SYS_ADMIN"}), kAllCapabilities);
  EXPECT_EQ(caps({"CAP_KILL"}, {"ALL"}), kAllCapabilities & ~Bit("CAP_KILL"));
  EXPECT_EQ(CapabilityNames(Bit("CAP_KILL") | Bit("CAP_CHOWN")),
            (std::vector<std::string>{"CAP_CHOWN", "CAP_KILL"}));
  EXPECT_EQ(CapabilityNames(kAllCapabilities).size(), kCapabilityNames.size());
}

TEST(SecurityTest, CanonicalCapabilitySpellings) {
  EXPECT_EQ(*CanonicalCapability("all"), "ALL");
  EXPECT_EQ(*CanonicalCapability("sys_admin"), "CAP_SYS_ADMIN");
  EXPECT_EQ(*CanonicalCapability("cap_sys_admin"), "CAP_SYS_ADMIN");
  EXPECT_FALSE(CanonicalCapability("").ok());
  EXPECT_FALSE(CanonicalCapability("CAP_").ok());
  EXPECT_FALSE(CanonicalCapability("CAP_CAP_KILL").ok());
}

}  // namespace
}  // namespace msb::schema
