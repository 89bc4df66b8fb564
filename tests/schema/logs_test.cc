// Tests for the `logs:` section (schema/model.h Logs): parsing and validation
// with positions, the canonical form, and the config hash.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/schema/schema_test_util.h"

namespace msb::schema {
namespace {

using testing::Errors;
using testing::MustParse;
using testing::Web;
using ::testing::HasSubstr;

Sandbox WebOf(const std::string& body) { return MustParse(Web(body)).sandboxes["web"]; }

TEST(LogsTest, MaxSizeParsesAndNoSectionIsTheDefault) {
  EXPECT_EQ(WebOf("    logs:\n      max_size: 4M\n").logs.max_size, 4u << 20);
  EXPECT_TRUE(WebOf("").logs.IsDefault());
  EXPECT_TRUE(WebOf("    logs: {}\n").logs.IsDefault());
}

TEST(LogsTest, BadValuesSayWhereAndWhatIsValid) {
  std::string small = Errors(Web("    logs:\n      max_size: 4K\n"));
  EXPECT_THAT(small, HasSubstr("Sandboxfile:5:17:"));
  EXPECT_THAT(small, HasSubstr("sandboxes.web.logs.max_size: expected at least 1M, got \"4K\""));
  EXPECT_THAT(Errors(Web("    logs: {max_size: 2G}\n")), HasSubstr("expected at most 1G"));
  EXPECT_THAT(Errors(Web("    logs: {max_size: lots}\n")), HasSubstr("sandboxes.web.logs.max_size"));
  EXPECT_THAT(Errors(Web("    logs: {max_sise: 4M}\n")), HasSubstr("did you mean \"max_size\"?"));
  EXPECT_THAT(Errors(Web("    logs: 4M\n")), HasSubstr("sandboxes.web.logs: expected a map with max_size"));
}

TEST(LogsTest, CanonicalFormRoundTripsAndShowsTheSectionOnlyWhenSet) {
  EXPECT_FALSE(CanonicalJson(WebOf("")).contains("logs"));
  EXPECT_EQ(CanonicalJson(WebOf("    logs: {max_size: 2M}\n"))["logs"].dump(), R"({"max_size":2097152})");
  Project p = MustParse(Web("    logs: {max_size: 2M}\n"));
  std::string yaml = CanonicalYaml(p);
  EXPECT_THAT(yaml, HasSubstr("logs:\n      max_size: 2M\n"));
  auto again = ParseSandboxfile(yaml, "/proj/Sandboxfile", Env{});
  ASSERT_TRUE(again.ok()) << again.error().message() << "\n" << yaml;
  EXPECT_EQ(CanonicalJson(*again), CanonicalJson(p)) << yaml;
}

TEST(LogsTest, MaxSizeIsHashedAndNoSectionKeepsTheOldHash) {
  const std::string base = "    command: x\n";
  const std::string h = ConfigHash(WebOf(base));
  EXPECT_EQ(ConfigHash(WebOf(base + "    logs: {}\n")), h);
  const std::string two = ConfigHash(WebOf(base + "    logs: {max_size: 2M}\n"));
  EXPECT_NE(two, h);
  EXPECT_NE(ConfigHash(WebOf(base + "    logs: {max_size: 3M}\n")), two);
}

}  // namespace
}  // namespace msb::schema
