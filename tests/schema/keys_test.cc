// The key tables (schema/keys.h) and the JSON Schema written from them:
// each pattern agrees with the scanner of its grammar (exactly for names,
// as a superset for the others: the schema never refuses what msb loads),
// and the schema has every key of the tables with its description.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <regex>

#include "schema/keys.h"
#include "schema/network_rule.h"
#include "schema/sandboxfile.h"
#include "schema/values.h"
#include "tests/schema/schema_test_util.h"

namespace msb::schema {
namespace {

using namespace internal;

bool Matches(std::string_view pattern, const std::string& s) {
  return std::regex_search(s, std::regex(std::string(pattern), std::regex::ECMAScript));
}

// 0 to 6 pieces of a grammar's vocabulary, so that valid texts are common.
rc::Gen<std::string> Pieces(std::vector<std::string> vocabulary) {
  return rc::gen::map(rc::gen::container<std::vector<std::string>>(rc::gen::elementOf(vocabulary)),
                      [](const std::vector<std::string>& parts) {
                        std::string out;
                        for (size_t i = 0; i < parts.size() && i < 6; ++i) out += parts[i];
                        return out;
                      });
}

rc::Gen<std::string> NameLike() {
  return rc::gen::container<std::string>(rc::gen::elementOf(std::string("abzAZ09_-.~/ $")));
}

RC_GTEST_PROP(KeyPatterns, NamesMatchExactlyWhatTheLoaderAccepts, ()) {
  std::string s = *NameLike();
  RC_ASSERT(Matches(kNamePattern, s) == IsValidName(s));
  RC_ASSERT(Matches(kEnvNamePattern, s) == IsEnvName(s));
  RC_ASSERT(Matches(kScriptNamePattern, s) == IsScriptName(s));
}

RC_GTEST_PROP(KeyPatterns, LongNamesToo, ()) {
  std::string s = *rc::gen::container<std::string>(*rc::gen::inRange(60, 70), rc::gen::elementOf(std::string("a0_")));
  RC_ASSERT(Matches(kNamePattern, s) == IsValidName(s));
  RC_ASSERT(Matches(kScriptNamePattern, s) == IsScriptName(s));
}

RC_GTEST_PROP(KeyPatterns, UserMatchesExactlyWhatTheLoaderAccepts, ()) {
  std::string s = *Pieces({"1000", ":", "app", "-x", ".", "_", "a b", "~", "0"});
  if (s.empty()) return;
  testing::Parsed p = testing::ParseText(testing::Web("    user: '" + s + "'\n"));
  RC_ASSERT(Matches(kUserPattern, s) == p.project.has_value());
}

RC_GTEST_PROP(KeyPatterns, SizesTheLoaderAcceptsMatch, ()) {
  std::string s = *Pieces({"0", "1", "512", ".", "5", "k", "K", "m", "M", "g", "G", "t", "T", "i", "I", "b", "B",
                           "x", " "});
  if (ParseSize(s).ok()) RC_ASSERT(Matches(kSizePattern, s));
}

RC_GTEST_PROP(KeyPatterns, DurationsTheLoaderAcceptsMatch, ()) {
  std::string s = *Pieces({"1", "30", ".", "5", "ms", "s", "m", "h", "x", " "});
  if (ParseDuration(s).ok()) RC_ASSERT(Matches(kDurationPattern, s));
}

RC_GTEST_PROP(KeyPatterns, PortsVolumesTmpfsRulesRestartsTheLoaderAcceptsMatch, ()) {
  std::string port = *Pieces({"0", "1", "80", "8080", "65535", "70000", ":", "/tcp", "/udp", "/sctp", "127.0.0.1",
                              "[::1]", "[", "]", "0.0.0.0"});
  if (ParsePortMapping(port).ok()) RC_ASSERT(Matches(kPortPattern, port));
  std::string volume = *Pieces({"./src", "/abs", "cache", "~/x", ":", "/app", "ro", "rw", ":ro", "x", ".."});
  if (ParseVolumeSpec(volume).ok()) RC_ASSERT(Matches(kVolumePattern, volume));
  std::string tmpfs = *Pieces({"/tmp", ":", "size=64M", ",", "mode=1777", "/", "x", ".."});
  if (ParseTmpfs(tmpfs).ok()) RC_ASSERT(Matches(kTmpfsPattern, tmpfs));
  std::string rule = *Pieces({"allow", "deny", ":", "egress", "ingress", "@", "api.github.com", "*.x.com",
                              "10.0.0.0/8", "tcp", "udp", "443", "80,443", "public"});
  if (ParseNetworkRule(rule).ok()) RC_ASSERT(Matches(kRulePattern, rule));
  std::string restart = *Pieces({"no", "always", "on-failure", ":", "0", "5", "1000000", "unless-stopped", "x"});
  if (ParseRestart(restart).ok()) {
    bool listed = std::find(std::begin(kRestartChoices), std::end(kRestartChoices), restart) !=
                  std::end(kRestartChoices);
    RC_ASSERT(listed || Matches(kRestartPattern, restart));
  }
}

// Valid texts built from each grammar: the loader takes every one, so the
// pattern must match every one.
RC_GTEST_PROP(KeyPatterns, EveryValidTextOfEachGrammarMatches, ()) {
  auto pick = [](std::vector<std::string> v) { return *rc::gen::elementOf(v); };
  std::string size = pick({"0", "1", "512", "1024"}) + pick({"", ".5", ".25"}) +
                     pick({"k", "K", "kb", "KiB", "m", "M", "MB", "mib", "g", "G", "Gi", "t", "T", "TB"});
  RC_ASSERT(ParseSize(size).ok());
  RC_ASSERT(Matches(kSizePattern, size));
  std::string plain = pick({"0", "7", "4096"}) + pick({"", "b", "B"});
  RC_ASSERT(ParseSize(plain).ok());
  RC_ASSERT(Matches(kSizePattern, plain));
  std::string duration = pick({"1", "30", "1.5"}) + pick({"s", "m", "h"}) + pick({"", "250ms", "5s"});
  RC_ASSERT(ParseDuration(duration).ok());
  RC_ASSERT(Matches(kDurationPattern, duration));
  std::string port = pick({"", "127.0.0.1:", "[::1]:", "0.0.0.0:"}) + pick({"80", "8080", "065535"}) +
                     pick({":80", ":1"}) + pick({"", "/tcp", "/udp"});
  if (*rc::gen::arbitrary<bool>()) port = pick({"80", "08080"}) + pick({"", "/udp"});  // a lone port
  RC_ASSERT(ParsePortMapping(port).ok());
  RC_ASSERT(Matches(kPortPattern, port));
  std::string volume = pick({"./src", "/abs/dir", "cache", "~/x", "../up"}) + ":" + pick({"/app", "/a/b/", "//c"}) +
                       pick({"", ":ro", ":rw"});
  RC_ASSERT(ParseVolumeSpec(volume).ok());
  RC_ASSERT(Matches(kVolumePattern, volume));
  std::string tmpfs = pick({"/tmp", "/run/x"}) + pick({"", ":size=64M", ":mode=1777", ":size=1G,mode=700"});
  RC_ASSERT(ParseTmpfs(tmpfs).ok());
  RC_ASSERT(Matches(kTmpfsPattern, tmpfs));
  std::string rule = pick({"allow", "deny"}) + pick({"", ":egress", ":ingress"}) + "@" +
                     pick({"api.github.com", "*.example.com", "10.0.0.0/8", "public", "[2001:db8::1]"}) +
                     pick({"", ":tcp", ":udp:53", ":tcp:80,443", ":any"});
  RC_ASSERT(ParseNetworkRule(rule).ok());
  RC_ASSERT(Matches(kRulePattern, rule));
  std::string restart = "on-failure:" + pick({"1", "5", "1000000"});
  RC_ASSERT(ParseRestart(restart).ok());
  RC_ASSERT(Matches(kRestartPattern, restart));
  std::string user = pick({"1000", "app", "_svc", "a.b"}) + pick({"", ":1000", ":staff", ":x-y"});
  RC_ASSERT(testing::ParseText(testing::Web("    user: '" + user + "'\n")).project.has_value());
  RC_ASSERT(Matches(kUserPattern, user));
}

TEST(KeyPatterns, EachSupersetPatternStillRefusesTheObviouslyWrong) {
  EXPECT_FALSE(Matches(kSizePattern, "1X"));
  EXPECT_FALSE(Matches(kDurationPattern, "5"));
  EXPECT_FALSE(Matches(kPortPattern, "80:80/sctp"));
  EXPECT_FALSE(Matches(kVolumePattern, "./src:app"));
  EXPECT_FALSE(Matches(kTmpfsPattern, "tmp"));
  EXPECT_FALSE(Matches(kRulePattern, "permit@x"));
  EXPECT_TRUE(Matches(kSizePattern, "1.5GiB"));
  EXPECT_TRUE(Matches(kDurationPattern, "1m30s"));
  EXPECT_TRUE(Matches(kPortPattern, "[::1]:8080:80/udp"));
}

// Every key of a table is a property of its object, with its description;
// unknown keys are refused where the loader refuses them.
void ExpectTable(const nlohmann::json& object, const Key* keys, size_t n, const std::string& where) {
  ASSERT_TRUE(object.contains("properties")) << where;
  EXPECT_EQ(object["additionalProperties"], false) << where;
  EXPECT_EQ(object["properties"].size(), n) << where;
  for (size_t i = 0; i < n; ++i) {
    std::string name(keys[i].name);
    ASSERT_TRUE(object["properties"].contains(name)) << where << "." << name;
    EXPECT_EQ(object["properties"][name]["description"], std::string(keys[i].description)) << where << "." << name;
    EXPECT_FALSE(keys[i].description.empty()) << where << "." << name;
  }
}

TEST(JsonSchemaTest, HoldsEveryKeyOfTheTablesWithItsDescription) {
  nlohmann::json s = JsonSchema();
  EXPECT_EQ(s["$schema"], "http://json-schema.org/draft-07/schema#");
  ExpectTable(s, kTopKeys, std::size(kTopKeys), "top");
  EXPECT_TRUE(s["patternProperties"].contains("^x-"));
  const nlohmann::json& sandbox = s["properties"]["sandboxes"]["additionalProperties"];
  ExpectTable(sandbox, kSandboxKeys, std::size(kSandboxKeys), "sandbox");
  EXPECT_EQ(sandbox["required"], nlohmann::json::array({"image"}));
  const nlohmann::json& props = sandbox["properties"];
  ExpectTable(props["network"], kNetworkKeys, std::size(kNetworkKeys), "network");
  ExpectTable(props["network"]["properties"]["dns"], kDnsKeys, std::size(kDnsKeys), "dns");
  ExpectTable(props["healthcheck"], kHealthKeys, std::size(kHealthKeys), "healthcheck");
  ExpectTable(props["security"], kSecurityKeys, std::size(kSecurityKeys), "security");
  ExpectTable(props["logs"], kLogsKeys, std::size(kLogsKeys), "logs");
  ExpectTable(props["meta"], kMetaKeys, std::size(kMetaKeys), "meta");
  ExpectTable(props["secrets"]["additionalProperties"], kSecretKeys, std::size(kSecretKeys), "secret");
  ExpectTable(s["properties"]["volumes"]["additionalProperties"], kVolumeKeys, std::size(kVolumeKeys), "volume");
  // Enums, bounds and patterns come from the same tables.
  EXPECT_EQ(props["network"]["properties"]["policy"]["anyOf"][0]["enum"],
            nlohmann::json::array({"none", "group", "public", "any"}));
  EXPECT_EQ(props["restart"]["anyOf"][0]["enum"],
            nlohmann::json::array({"no", "always", "on-failure", "unless-stopped"}));
  EXPECT_EQ(props["cpus"]["maximum"], 128);
  EXPECT_EQ(props["memory"]["minimum"], 32);  // a plain number counts MiB
  EXPECT_EQ(props["disk"]["minimum"], 64ull << 20);
  EXPECT_EQ(s["properties"]["sandboxes"]["propertyNames"]["pattern"], std::string(kNamePattern));
  EXPECT_EQ(s["properties"]["builds"]["not"], nlohmann::json::object());
}

}  // namespace
}  // namespace msb::schema
