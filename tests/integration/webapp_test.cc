// examples/webapp as it is, on its Debian image (scripts/make-debian-image
// --webapp): the real msb brings up redis-server and the Python app, a row
// POSTed from the host through the app's published port is read back after
// app is replaced (a new GREETING) and again after db is replaced (a new
// REDIS_MAXMEMORY; Redis's data is on the named volume). Not a test of Redis
// or Python: of the Sandboxfile's promises on real software.
#include <nlohmann/json.hpp>

#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct HttpAnswer {
  std::string status;  // "201", or "" when nothing came
  nlohmann::json body;
};

class WebappTest : public MsbTest {
 protected:
  void SetUp() override {
    MsbTest::SetUp();
    if (IsSkipped()) return;
    auto rootfs = WebappRootfs();
    ASSERT_TRUE(rootfs.ok()) << rootfs.error().message();
    file_ = SourceDir() + "/examples/webapp/Sandboxfile";
    port_ = FreeLoopbackPort();
    // Every variable the example reads, so neither the test's environment
    // nor an examples/webapp/.env of the source tree decides anything.
    env_["WEBAPP_IMAGE"] = *rootfs;
    env_["WEBAPP_PORT"] = std::to_string(port_);
    env_["GREETING"] = "hello";
    env_["REDIS_MAXMEMORY"] = "64mb";
  }

  MsbResult Project(std::vector<std::string> args, int deadline_s = 180) {
    args.insert(args.begin() + 1, {"-f", file_});
    return Msb(args, "", deadline_s);
  }

  HttpAnswer Http(const std::string& method, const std::string& path, const std::string& body = "") {
    std::string error;
    std::string got = HostHttp(port_, method, path, body, 30, &error);
    HttpAnswer a;
    // "HTTP/1.0 201 Created\r\n...\r\n\r\n{...}"
    size_t sp = got.find(' ');
    size_t head_end = got.find("\r\n\r\n");
    EXPECT_TRUE(sp != std::string::npos && head_end != std::string::npos)
        << method << " " << path << ": " << error << got;
    if (sp == std::string::npos || head_end == std::string::npos) return a;
    a.status = got.substr(sp + 1, 3);
    a.body = nlohmann::json::parse(got.substr(head_end + 4), nullptr, false);
    return a;
  }

  // The id Redis gives each start of its server: the same id, the same process.
  std::string RedisRunId() {
    auto info = Msb({"exec", "db", "--", "redis-cli", "info", "server"});
    EXPECT_EQ(info.code, 0) << info.err;
    size_t at = info.out.find("run_id:");
    if (at == std::string::npos) return "";
    return info.out.substr(at + 7, info.out.find_first_of("\r\n", at) - at - 7);
  }

  std::string file_;
  uint16_t port_ = 0;
};

TEST_F(WebappTest, RowsSurviveReplacingTheAppAndTheDatabase) {
  auto plan = Project({"plan"});
  ASSERT_EQ(plan.code, 0) << plan.err;
  EXPECT_EQ(plan.out,
            "+ create db\n+ create app\n"
            "plan: 2 to create, 0 to replace, 0 to update, 0 to start, 0 to remove, 0 unchanged\n");
  auto up = Project({"up", "--wait", "--wait-timeout", "150"});
  ASSERT_EQ(up.code, 0) << up.out << up.err;
  // app waited for db's health check (redis-cli ping answering PONG): the
  // supervisors' records show app's VM started after db reported healthy.
  const int64_t db_healthy = SupervisorLogTime(Home(), "db", "db: health healthy");
  const int64_t app_started = SupervisorLogTime(Home(), "app", "starting QEMU for app");
  ASSERT_GT(db_healthy, 0);
  ASSERT_GT(app_started, 0);
  EXPECT_GE(app_started, db_healthy);
  auto ps = Msb({"ps", "--json"});
  auto sandboxes = nlohmann::json::parse(ps.out, nullptr, false);
  ASSERT_TRUE(sandboxes.is_array()) << ps.out;
  ASSERT_EQ(sandboxes.size(), 2u) << ps.out;
  for (const auto& s : sandboxes) {
    EXPECT_EQ(s["health"], "healthy") << s.dump();
  }
  EXPECT_EQ(Msb({"exec", "db", "--", "redis-cli", "ping"}).out, "PONG\n");

  // A row written from the host, through the published port, the app and the
  // group connection to db; Redis itself holds it.
  auto posted = Http("POST", "/rows", "first row, from the host");
  ASSERT_EQ(posted.status, "201") << posted.body.dump();
  EXPECT_EQ(posted.body, nlohmann::json::parse(
                             R"({"greeting": "hello", "id": 1, "text": "first row, from the host"})"));
  EXPECT_EQ(Msb({"exec", "db", "--", "redis-cli", "hget", "rows", "1"}).out, "first row, from the host\n");
  const std::string db_run = RedisRunId();
  ASSERT_EQ(db_run.size(), 40u);

  // A new greeting replaces app, and only app.
  env_["GREETING"] = "bonjour";
  plan = Project({"plan"});
  EXPECT_EQ(plan.out,
            "= db up to date\n-/+ replace app (envs.GREETING hello -> bonjour)\n"
            "plan: 0 to create, 1 to replace, 0 to update, 0 to start, 0 to remove, 1 unchanged\n");
  up = Project({"up", "--wait", "--wait-timeout", "120"});
  ASSERT_EQ(up.code, 0) << up.out << up.err;
  EXPECT_THAT(up.out, HasSubstr("replaced app"));
  EXPECT_THAT(up.out, HasSubstr("unchanged db"));
  EXPECT_THAT(up.out, Not(HasSubstr("replaced db")));
  EXPECT_EQ(RedisRunId(), db_run);  // the same redis-server
  // The new app, with the new environment, reads the row the old one wrote.
  auto rows = Http("GET", "/rows");
  ASSERT_EQ(rows.status, "200") << rows.body.dump();
  EXPECT_EQ(rows.body, nlohmann::json::parse(
                           R"({"greeting": "bonjour", "rows": [{"id": 1, "text": "first row, from the host"}]})"));

  // A new memory bound replaces db, and only db; its volume keeps the rows.
  env_["REDIS_MAXMEMORY"] = "48mb";
  plan = Project({"plan"});
  EXPECT_EQ(plan.out,
            "-/+ replace db (envs.REDIS_MAXMEMORY 64mb -> 48mb)\n= app up to date\n"
            "plan: 0 to create, 1 to replace, 0 to update, 0 to start, 0 to remove, 1 unchanged\n");
  up = Project({"up", "--wait", "--wait-timeout", "120"});
  ASSERT_EQ(up.code, 0) << up.out << up.err;
  EXPECT_THAT(up.out, HasSubstr("replaced db"));
  EXPECT_THAT(up.out, HasSubstr("unchanged app"));
  EXPECT_THAT(up.out, Not(HasSubstr("replaced app")));
  // A new redis-server, started with the new environment.
  EXPECT_NE(RedisRunId(), db_run);
  EXPECT_EQ(Msb({"exec", "db", "--", "redis-cli", "config", "get", "maxmemory"}).out,
            "maxmemory\n50331648\n");
  // The app that was not replaced reaches the new db and reads the row back;
  // the row counter came back too.
  auto row = Http("GET", "/rows/1");
  ASSERT_EQ(row.status, "200") << row.body.dump();
  EXPECT_EQ(row.body, nlohmann::json::parse(
                          R"({"greeting": "bonjour", "id": 1, "text": "first row, from the host"})"));
  posted = Http("POST", "/rows", "second row");
  ASSERT_EQ(posted.status, "201") << posted.body.dump();
  EXPECT_EQ(posted.body.value("id", 0), 2);

  // down keeps the named volume; removing it is a separate step.
  auto down = Project({"down"});
  EXPECT_EQ(down.code, 0) << down.err;
  EXPECT_EQ(down.out, "removed app\nremoved db\n");
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
  auto volumes = nlohmann::json::parse(Msb({"volume", "ls", "--json"}).out, nullptr, false);
  ASSERT_TRUE(volumes.is_array());
  ASSERT_EQ(volumes.size(), 1u) << volumes.dump();
  EXPECT_EQ(volumes[0].value("project", ""), "webapp");
  EXPECT_EQ(volumes[0].value("name", ""), "dbdata");
  EXPECT_EQ(Msb({"volume", "rm", "-p", "webapp", "dbdata"}).code, 0);
  EXPECT_EQ(Msb({"volume", "ls", "--json"}).out, "[]\n");
}

}  // namespace
}  // namespace msb::testing
