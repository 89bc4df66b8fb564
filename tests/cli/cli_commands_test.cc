// The real msb binary's --json documents and exit codes, for the commands
// that need no VM: validate, plan, config --hash, net check, images, volume
// ls, and the failures of run and exec that come before any boot. Each test
// has its own MSB_HOME; records are put in its store as msb would write them.
#include <stdlib.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/child.h"
#include "common/io.h"
#include "orchestrator/planner.h"
#include "orchestrator/store.h"
#include "schema/sandboxfile.h"

namespace msb {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using orchestrator::Store;

class CliCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-cli.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    home_ = dir_ + "/home";
    ::setenv("MSB_HOME", home_.c_str(), 1);
    msb_ = std::string(MSB_TEST_BUILD_DIR) + "/bin/msb";
    ASSERT_TRUE(MakeDirs(dir_ + "/rootfs").ok());
    file_ = dir_ + "/Sandboxfile";
    Write(
        "name: shop\n"
        "sandboxes:\n"
        "  web:\n"
        "    image: ./rootfs\n"
        "    depends_on: [db]\n"
        "    network:\n"
        "      rules: [\"deny@203.0.113.0/24:tcp\"]\n"
        "  db:\n"
        "    image: ./rootfs\n"
        "    memory: 256M\n");
  }

  void TearDown() override {
    ::unsetenv("MSB_HOME");
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void Write(const std::string& yaml) { ASSERT_TRUE(WriteFileAtomic(file_, yaml).ok()); }

  // stdout alone (for JSON), or stdout and stderr merged (for messages).
  RunResult Msb(std::vector<std::string> args, bool merge_stderr = false) {
    args.insert(args.begin(), msb_);
    auto r = RunCapture(args, merge_stderr);
    EXPECT_TRUE(r.ok()) << r.error().message();
    return r.ok() ? *r : RunResult{};
  }

  // The one JSON document on stdout; fails the test when it is not one.
  json Doc(const RunResult& r) {
    json j = json::parse(r.output, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(j.is_discarded()) << "not one JSON document:\n" << r.output;
    return j;
  }

  std::string dir_, home_, msb_, file_;
};

TEST_F(CliCommandsTest, ValidateJsonOfAValidFile) {
  RunResult r = Msb({"validate", "-f", file_, "--json"});
  EXPECT_EQ(r.status.code, 0) << r.output;
  json j = Doc(r);
  EXPECT_EQ(j["valid"], true);
  EXPECT_EQ(j["project"], "shop");
  EXPECT_EQ(j["file"], file_);
  EXPECT_EQ(j["sandboxes"], json::parse(R"js(["db", "web"])js"));
  EXPECT_EQ(j["errors"], 0);
  EXPECT_EQ(j["diagnostics"], json::array());
}

TEST_F(CliCommandsTest, ValidateJsonReportsEveryErrorWithItsPositionAndExitsOne) {
  Write("sandboxes:\n  web:\n    image: ./rootfs\n    memroy: 1G\n    depends_on: [dbb]\n  db:\n    image: ./rootfs\n");
  RunResult r = Msb({"validate", "-f", file_, "--format", "json"});
  EXPECT_EQ(r.status.code, 1);
  json j = Doc(r);
  EXPECT_EQ(j["valid"], false);
  EXPECT_TRUE(j["project"].is_null());
  EXPECT_EQ(j["errors"], 2);
  ASSERT_EQ(j["diagnostics"].size(), 2u) << j.dump(2);
  EXPECT_EQ(j["diagnostics"][0]["severity"], "error");
  EXPECT_EQ(j["diagnostics"][0]["line"], 4);
  EXPECT_EQ(j["diagnostics"][0]["column"], 5);
  EXPECT_EQ(j["diagnostics"][0]["path"], "sandboxes.web.memroy");
  EXPECT_EQ(j["diagnostics"][0]["message"], "unknown key; did you mean \"memory\"?");
  EXPECT_EQ(j["diagnostics"][1]["line"], 5);
  EXPECT_EQ(j["diagnostics"][1]["column"], 18);
  EXPECT_NE(j["diagnostics"][1]["file"].get<std::string>().find("Sandboxfile"), std::string::npos);
  // The count still goes to stderr.
  RunResult merged = Msb({"validate", "-f", file_, "--json"}, true);
  EXPECT_NE(merged.output.find("msb: 2 errors"), std::string::npos) << merged.output;
}

TEST_F(CliCommandsTest, ValidateJsonOfAMissingFileIsAnErrorOnStderrOnly) {
  RunResult r = Msb({"validate", "-f", dir_ + "/nope/Sandboxfile", "--json"});
  EXPECT_EQ(r.status.code, 1);
  EXPECT_EQ(r.output, "");
  EXPECT_EQ(Msb({"validate", "--format", "yaml", "-f", file_}).status.code, 2);  // only json is a format
}

TEST_F(CliCommandsTest, PlanJsonMatchesThePlanText) {
  RunResult text = Msb({"plan", "-f", file_});
  ASSERT_EQ(text.status.code, 0) << text.output;
  EXPECT_EQ(text.output,
            "+ create db\n+ create web\n"
            "plan: 2 to create, 0 to replace, 0 to update, 0 to start, 0 to remove, 0 unchanged\n");
  RunResult r = Msb({"plan", "-f", file_, "--json"});
  ASSERT_EQ(r.status.code, 0);
  EXPECT_EQ(Doc(r), json::parse(R"js({
    "project": "shop",
    "nothing_to_do": false,
    "steps": [
      {"action": "create", "sandbox": "db", "cause": "", "text": "+ create db", "after": []},
      {"action": "create", "sandbox": "web", "cause": "", "text": "+ create web",
       "after": [{"sandbox": "db", "condition": "started"}]}
    ],
    "summary": {"create": 2, "replace": 0, "update": 0, "start": 0, "remove": 0, "noop": 0}
  })js"));
}

TEST_F(CliCommandsTest, ConfigHashJsonHasTheTextsHashes) {
  RunResult text = Msb({"config", "-f", file_, "--hash"});
  ASSERT_EQ(text.status.code, 0);
  json j = Doc(Msb({"config", "-f", file_, "--hash", "--format", "json"}));
  ASSERT_TRUE(j.is_object());
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(text.output, "db " + j["db"].get<std::string>() + "\nweb " + j["web"].get<std::string>() + "\n");
}

TEST_F(CliCommandsTest, NetCheckJsonCarriesTheDecisionAndTheExitCode) {
  RunResult r = Msb({"net", "check", "web", "203.0.113.5", "443", "-f", file_, "--json"});
  EXPECT_EQ(r.status.code, 1);
  json j = Doc(r);
  EXPECT_EQ(j["sandbox"], "web");
  EXPECT_EQ(j["profile"], "public");
  EXPECT_EQ(j["rules"], 1);
  EXPECT_EQ(j["destination"], "203.0.113.5");
  EXPECT_EQ(j["protocol"], "tcp");
  EXPECT_EQ(j["port"], 443);
  EXPECT_EQ(j["by_name"], false);
  EXPECT_EQ(j["allowed"], false);
  ASSERT_EQ(j["decisions"].size(), 1u);
  EXPECT_EQ(j["decisions"][0]["address"], "203.0.113.5");
  EXPECT_EQ(j["decisions"][0]["allowed"], false);
  EXPECT_EQ(j["decisions"][0]["reason"], "rule 1 (deny:egress@203.0.113.0/24:tcp)");

  r = Msb({"net", "check", "db", "93.184.216.34", "-f", file_, "--format", "json"});
  EXPECT_EQ(r.status.code, 0);
  j = Doc(r);
  EXPECT_EQ(j["allowed"], true);
  EXPECT_TRUE(j["port"].is_null());
  EXPECT_TRUE(j["protocol"].is_null());
  EXPECT_EQ(j["decisions"][0]["class"], "public");
  // Errors stay on stderr with exit 2; stdout has no document.
  r = Msb({"net", "check", "nosuch", "1.2.3.4", "-f", file_, "--json"});
  EXPECT_EQ(r.status.code, 2);
  EXPECT_EQ(r.output, "");
}

TEST_F(CliCommandsTest, ImagesAndVolumesListWhatTheStoreHolds) {
  EXPECT_EQ(Doc(Msb({"images", "--json"})), json::array());
  EXPECT_EQ(Doc(Msb({"volume", "ls", "--json"})), json::array());
  {
    auto store = Store::Open(home_ + "/state.db");
    ASSERT_TRUE(store.ok()) << store.error().message();
    orchestrator::ImageRecord image;
    image.reference = "registry.test:5000/team/api:1";
    image.digest = "sha256:" + std::string(64, 'a');
    image.size_bytes = 4096;
    image.created_at = 1700000000;
    ASSERT_TRUE(store->UpsertImage(image).ok());
    orchestrator::ProjectRecord p;
    p.name = "shop";
    p.directory = dir_;
    p.sandboxfile = file_;
    ASSERT_TRUE(store->UpsertProject(p).ok());
    orchestrator::VolumeRecord v;
    v.project = "shop";
    v.name = "data";
    v.size_bytes = 1 << 20;
    v.path = home_ + "/volumes/shop/data.ext4";
    ASSERT_TRUE(store->UpsertVolume(v).ok());
  }
  for (auto args : {std::vector<std::string>{"images", "--json"}, {"image", "ls", "--format", "json"}}) {
    json images = Doc(Msb(args));
    ASSERT_EQ(images.size(), 1u) << images.dump(2);
    EXPECT_EQ(images[0]["reference"], "registry.test:5000/team/api:1");
    EXPECT_EQ(images[0]["digest"], "sha256:" + std::string(64, 'a'));
    EXPECT_EQ(images[0]["size_bytes"], 4096);
    EXPECT_EQ(images[0]["in_use"], json::array());
  }
  json volumes = Doc(Msb({"volume", "ls", "--format", "json"}));
  ASSERT_EQ(volumes.size(), 1u);
  EXPECT_EQ(volumes[0]["project"], "shop");
  EXPECT_EQ(volumes[0]["name"], "data");
  EXPECT_EQ(volumes[0]["size_bytes"], 1 << 20);
  EXPECT_EQ(volumes[0]["used_by"], json::array());
}

// msb's own failures in run and exec exit 125, before any VM boots; other
// commands keep CLI11's 2 for a usage error and 1 for a failure.
TEST_F(CliCommandsTest, RunAndExecFailuresExit125) {
  auto expect = [&](std::vector<std::string> args, int code, const std::string& says) {
    RunResult r = Msb(args, true);
    EXPECT_EQ(r.status.code, code) << ::testing::PrintToString(args) << "\n" << r.output;
    EXPECT_NE(r.output.find(says), std::string::npos) << ::testing::PrintToString(args) << "\n" << r.output;
  };
  const std::string rootfs = dir_ + "/rootfs";
  expect({"run", "--no-such-flag", rootfs, "true"}, 125, "--no-such-flag");
  expect({"run"}, 125, "image is required");
  expect({"run", "--cpus", "0", rootfs, "true"}, 125, "--cpus must be between 1 and 64");
  expect({"run", dir_ + "/no-such-image", "true"}, 125, "is not a directory");
  expect({"run", "-v", "data:relative", rootfs, "true"}, 125, "must be absolute");
  expect({"run", "-v", dir_ + "/missing:/data", rootfs, "true"}, 125, "does not exist");
  expect({"run", "-v", file_ + ":/data", rootfs, "true"}, 125, "is not a directory");
  expect({"run", "-v", rootfs + ":/a", "-v", "vol:/a", rootfs, "true"}, 125, "/a is already mounted");
  expect({"run", "-d", "-t", rootfs, "true"}, 125, "-i and -t");
  expect({"run", "-d", "--rm", rootfs, "true"}, 125, "msb rm NAME");
  expect({"run", "--keep", "--rm", rootfs, "true"}, 125, "contradict");
  expect({"exec", "--no-such-flag", "web", "ls"}, 125, "--no-such-flag");
  expect({"exec"}, 125, "sandbox is required");
  expect({"exec", "web"}, 125, "no command given");
  expect({"exec", "nosuch", "ls"}, 125, "nosuch");
  expect({"exec", "nosuch", "--", "ls"}, 125, "nosuch");
  // Other commands as before.
  expect({"ps", "--no-such-flag"}, 2, "--no-such-flag");
  expect({"rm", "nosuch"}, 1, "nosuch");
}

}  // namespace
}  // namespace msb
