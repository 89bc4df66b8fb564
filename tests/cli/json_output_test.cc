// Tests of the --json documents (cli/json_output.cc): each builder from real
// inputs (a parsed Sandboxfile, a plan of the real planner, records as the
// store returns them), asserted as whole JSON values so that a renamed or
// dropped field fails here before a script that reads it does.
#include "cli/json_output.h"

#include <gtest/gtest.h>

#include "schema/sandboxfile.h"

namespace msb::cli {
namespace {

using nlohmann::json;

const schema::Env kEnv{{"HOME", "/home/u"}};

schema::Project Load(const std::string& yaml) {
  auto r = schema::ParseSandboxfile(yaml, "/proj/Sandboxfile", kEnv);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
  return r.ok() ? *r : schema::Project{};
}

TEST(JsonOutputTest, PlanListsEveryStepWithItsEdgesAndASummary) {
  schema::Project p = Load(
      "name: shop\n"
      "sandboxes:\n"
      "  web:\n"
      "    image: alpine\n"
      "    depends_on: {db: {condition: healthy}}\n"
      "  db:\n"
      "    image: alpine\n"
      "    healthcheck: {command: [true]}\n");
  // db was stopped (it starts); web is new; an orphan is removed.
  orchestrator::SandboxRecord db;
  db.project = "shop";
  db.name = "db";
  db.config_hash = schema::ConfigHash(p.sandboxes.at("db"));
  db.image_ref = p.sandboxes.at("db").image.reference;
  db.spec_json = orchestrator::RecordSpecJson(p.sandboxes.at("db"), "");
  db.status = orchestrator::SandboxStatus::kStopped;
  orchestrator::SandboxRecord old = db;
  old.name = "old";
  auto plan = orchestrator::MakePlan(p, {}, {db, old});
  ASSERT_TRUE(plan.ok()) << plan.error().message();
  EXPECT_EQ(PlanJson("shop", *plan), json::parse(R"js({
    "project": "shop",
    "nothing_to_do": false,
    "steps": [
      {"action": "remove", "sandbox": "old", "cause": "no longer declared",
       "text": "- remove old (no longer declared)", "after": []},
      {"action": "start", "sandbox": "db", "cause": "was stopped", "text": "> start db (was stopped)",
       "after": [{"sandbox": "old", "condition": "started"}]},
      {"action": "create", "sandbox": "web", "cause": "", "text": "+ create web",
       "after": [{"sandbox": "db", "condition": "healthy"}, {"sandbox": "old", "condition": "started"}]}
    ],
    "summary": {"create": 1, "replace": 0, "update": 0, "start": 1, "remove": 1, "noop": 0}
  })js")) << plan->ToText();
}

TEST(JsonOutputTest, PlanWithNothingToDoSaysSo) {
  orchestrator::Plan plan;
  plan.steps.push_back({orchestrator::StepKind::kNoop, "web", "", {}});
  json j = PlanJson("p", plan);
  EXPECT_EQ(j["nothing_to_do"], true);
  EXPECT_EQ(j["summary"]["noop"], 1);
  EXPECT_EQ(j["steps"][0]["action"], "noop");
}

TEST(JsonOutputTest, ValidateReportsEveryDiagnosticWithItsPosition) {
  schema::Diagnostics diags;
  schema::ParseOptions options;
  options.display_name = "Sandboxfile";
  options.diagnostics = &diags;
  auto r = schema::ParseSandboxfile(
      "sandboxes:\n  web:\n    image: a\n    memroy: 1G\n    depends_on: [dbb]\n  db:\n    image: a\n",
      "/proj/Sandboxfile", kEnv, options);
  ASSERT_FALSE(r.ok());
  json j = ValidateJson("Sandboxfile", nullptr, diags);
  EXPECT_EQ(j, json::parse(R"js({
    "valid": false,
    "file": "Sandboxfile",
    "project": null,
    "sandboxes": [],
    "errors": 2,
    "warnings": 0,
    "diagnostics": [
      {"severity": "error", "file": "Sandboxfile", "line": 4, "column": 5, "path": "sandboxes.web.memroy",
       "message": "unknown key; did you mean \"memory\"?"},
      {"severity": "error", "file": "Sandboxfile", "line": 5, "column": 18, "path": "sandboxes.web.depends_on[0]",
       "message": "depends on unknown sandbox \"dbb\"; did you mean \"db\"?"}
    ]
  })js")) << j.dump(2);
}

TEST(JsonOutputTest, ValidateOfAValidFileNamesItsProjectAndKeepsWarnings) {
  schema::Project p = Load("name: demo\nsandboxes:\n  web: {image: a}\n  db: {image: a}\n");
  schema::Diagnostics diags;
  diags.Warning("Sandboxfile", schema::Pos{3, 3}, "sandboxes.web", "a warning");
  diags.Warning("Sandboxfile", schema::Pos{}, "", "no position");
  json j = ValidateJson("ignored", &p, diags);
  EXPECT_EQ(j["valid"], true);
  EXPECT_EQ(j["file"], "/proj/Sandboxfile");
  EXPECT_EQ(j["project"], "demo");
  EXPECT_EQ(j["sandboxes"], json::parse(R"js(["db", "web"])js"));
  EXPECT_EQ(j["errors"], 0);
  EXPECT_EQ(j["warnings"], 2);
  EXPECT_EQ(j["diagnostics"][0]["severity"], "warning");
  EXPECT_EQ(j["diagnostics"][0]["line"], 3);
  // A diagnostic without a position has null line and column.
  EXPECT_TRUE(j["diagnostics"][1]["line"].is_null());
  EXPECT_TRUE(j["diagnostics"][1]["column"].is_null());
}

TEST(JsonOutputTest, ConfigHashMapsEachSandboxToItsHash) {
  schema::Project p = Load("sandboxes:\n  web: {image: a}\n  db: {image: a, memory: 1G}\n");
  json j = ConfigHashJson(p);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j["web"], schema::ConfigHash(p.sandboxes.at("web")));
  EXPECT_EQ(j["db"], schema::ConfigHash(p.sandboxes.at("db")));
  EXPECT_NE(j["web"], j["db"]);
}

TEST(JsonOutputTest, NetCheckIsAllowedOnlyWhenEveryAddressIs) {
  NetCheckReport r;
  r.sandbox = "web";
  r.source = "/proj/Sandboxfile";
  r.profile = "public";
  r.rules = 1;
  r.destination = "example.test";
  r.protocol = "tcp";
  r.port = 443;
  r.by_name = true;
  r.decisions.push_back({"93.184.216.34", "tcp 93.184.216.34:443", true, "profile public", "public", false, false});
  EXPECT_EQ(NetCheckJson(r), json::parse(R"js({
    "sandbox": "web", "source": "/proj/Sandboxfile", "profile": "public", "rules": 1,
    "destination": "example.test", "protocol": "tcp", "port": 443, "by_name": true, "allowed": true,
    "decisions": [{"address": "93.184.216.34", "flow": "tcp 93.184.216.34:443", "allowed": true,
                   "reason": "profile public", "class": "public", "to_host_loopback": false,
                   "dropped_from_dns": false}]
  })js"));
  r.decisions.push_back({"10.0.0.1", "tcp 10.0.0.1:443", false, "profile public: 10.0.0.1 is private", "private",
                         false, true});
  EXPECT_EQ(NetCheckJson(r)["allowed"], false);
  // Any port, any protocol: null, not 0 or "".
  r.protocol.reset();
  r.port.reset();
  EXPECT_TRUE(NetCheckJson(r)["protocol"].is_null());
  EXPECT_TRUE(NetCheckJson(r)["port"].is_null());
  r.decisions.clear();
  EXPECT_EQ(NetCheckJson(r)["allowed"], false);
}

TEST(JsonOutputTest, ImageAndVolumeNameTheirUsers) {
  orchestrator::ImageRecord image{"docker.io/library/alpine:3.20", "sha256:aa", 1234, "/h/images/disks/aa.ext4", 17,
                                  "sha256:cc", "application/vnd.oci.image.manifest.v1+json"};
  orchestrator::SandboxRecord user;
  user.project = "shop";
  user.name = "web";
  user.status = orchestrator::SandboxStatus::kRunning;
  EXPECT_EQ(ImageJson(image, {user}), json::parse(R"js({
    "reference": "docker.io/library/alpine:3.20", "digest": "sha256:aa", "config_digest": "sha256:cc",
    "media_type": "application/vnd.oci.image.manifest.v1+json", "size_bytes": 1234,
    "base_disk": "/h/images/disks/aa.ext4", "created_at": 17,
    "in_use": [{"project": "shop", "name": "web", "state": "running"}]
  })js"));
  orchestrator::VolumeRecord volume{"shop", "data", 4096, "/h/volumes/shop/data.ext4", 18};
  EXPECT_EQ(VolumeJson(volume, {{"shop", "web", orchestrator::SandboxStatus::kStopped, true}}), json::parse(R"js({
    "project": "shop", "name": "data", "size_bytes": 4096, "path": "/h/volumes/shop/data.ext4", "created_at": 18,
    "used_by": [{"project": "shop", "name": "web", "state": "stopped", "read_only": true}]
  })js"));
}

TEST(JsonOutputTest, SnapshotFields) {
  orchestrator::SnapshotRecord s;
  s.name = "base";
  s.digest = "sha256:bb";
  s.parent_digest = "sha256:aa";
  s.source = "_run/src";
  s.source_image = "/rootfs";
  s.size_bytes = 8192;
  s.created_at = 19;
  s.dir = "/not/printed";
  EXPECT_EQ(SnapshotJson(s, 2), json::parse(R"js({
    "name": "base", "digest": "sha256:bb", "parent_digest": "sha256:aa", "source": "_run/src",
    "source_image": "/rootfs", "layers": 2, "size_bytes": 8192, "created_at": 19
  })js"));
}

TEST(JsonOutputTest, SyncStatusNamesTheAppliedCommitAndTheLastError) {
  orchestrator::SyncRecord s;
  s.key = "app-0123456789ab";
  s.project = "app";
  s.repo = "git://127.0.0.1/app.git";
  s.applied_commit = "c1";
  s.applied_at = 5;
  s.fetched_commit = "c2";
  s.checked_at = 9;
  s.error = "commit c2 not applied: Sandboxfile:3:13: bad";
  s.error_commit = "c2";
  s.error_at = 9;
  EXPECT_EQ(SyncJson(s, "/h/sync/app-0123456789ab/tree"), json::parse(R"js({
    "project": "app", "repo": "git://127.0.0.1/app.git", "ref": null, "path": null,
    "directory": "/h/sync/app-0123456789ab/tree", "applied_commit": "c1", "applied_at": 5,
    "fetched_commit": "c2", "checked_at": 9,
    "error": {"message": "commit c2 not applied: Sandboxfile:3:13: bad", "commit": "c2", "at": 9}
  })js"));
  s.error.clear();
  s.ref = "main";
  s.path = "deploy";
  auto j = SyncJson(s, "/d");
  EXPECT_TRUE(j["error"].is_null());
  EXPECT_EQ(j["ref"], "main");
  EXPECT_EQ(j["path"], "deploy");
}

TEST(JsonOutputTest, TextIsOneIndentedDocumentEvenWithInvalidUtf8) {
  EXPECT_EQ(JsonText(json{{"a", 1}}), "{\n  \"a\": 1\n}\n");
  std::string text = JsonText(json{{"m", std::string("bad \xff byte")}});
  EXPECT_TRUE(json::accept(text)) << text;
}

}  // namespace
}  // namespace msb::cli
