// MSB_ACCEL=auto (vm/accel.h) on this host: the probe's verdict is cached in
// $MSB_HOME/accel.json, and when it is TCG every msb command that starts VMs
// says so exactly once on stderr, with the reason; MSB_ACCEL=tcg is quiet.
#include <nlohmann/json.hpp>

#include "common/io.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;

constexpr const char* kNote = "msb: note: no usable KVM (";

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

class AccelTest : public ProjectTest {};

TEST_F(AccelTest, AutoSaysOnceWhenItFallsBackToTcg) {
  env_["MSB_ACCEL"] = "auto";
  WriteSandboxfile("name: accel\nsandboxes:\n  a:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    command: " + std::string(kKeepAliveCommand) + "\n"
                   "  b:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    command: " + std::string(kKeepAliveCommand) + "\n");
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  auto cache = ReadFile(Home() + "/accel.json");
  ASSERT_TRUE(cache.ok()) << "the probe's verdict was not cached";
  auto verdict = nlohmann::json::parse(*cache);
  const bool tcg = verdict.at("accel") == "tcg";
  SCOPED_TRACE("probe verdict: " + *cache);
  if (tcg) {
    // Two sandboxes, one note, carrying the probe's reason.
    EXPECT_EQ(Count(up.err, kNote), 1u) << up.err;
    EXPECT_THAT(up.err, HasSubstr(verdict.at("reason").get<std::string>()));
    EXPECT_FALSE(verdict.at("reason").get<std::string>().empty());
  } else {
    EXPECT_EQ(Count(up.err, kNote), 0u) << up.err;
  }

  // The cached verdict says the same, once, in the next command. No -q:
  // the note's absence below must not come from a flag that silences output.
  auto run = Msb({"run", Rootfs(), "--", "true"});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_EQ(Count(run.err, kNote), tcg ? 1u : 0u) << run.err;

  env_["MSB_ACCEL"] = "tcg";
  auto quiet = Msb({"run", Rootfs(), "--", "true"});
  ASSERT_EQ(quiet.code, 0) << quiet.err;
  EXPECT_EQ(Count(quiet.err, kNote), 0u) << quiet.err;
  EXPECT_EQ(InProject({"down"}).code, 0);
}

}  // namespace
}  // namespace msb::testing
