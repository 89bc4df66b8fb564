// Tests of `msb net check`: the real msb binary against a sandbox recorded in
// a temporary MSB_HOME (no VM is booted) and against a Sandboxfile (--file).
#include <stdlib.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "common/child.h"
#include "common/io.h"
#include "orchestrator/planner.h"
#include "orchestrator/store.h"
#include "schema/network_rule.h"

namespace msb {
namespace {

namespace fs = std::filesystem;
using orchestrator::Store;

class NetCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-netcheck.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    home_ = dir_ + "/home";
    ::setenv("MSB_HOME", home_.c_str(), 1);
    msb_ = std::string(MSB_TEST_BUILD_DIR) + "/bin/msb";
    auto store = Store::Open(home_ + "/state.db");
    ASSERT_TRUE(store.ok()) << store.error().message();
    orchestrator::ProjectRecord p;
    p.name = "shop";
    p.directory = dir_;
    p.sandboxfile = dir_ + "/Sandboxfile";
    ASSERT_TRUE(store->UpsertProject(p).ok());

    schema::Sandbox sb;
    sb.name = "web";
    sb.image.reference = "./rootfs";
    sb.network.policy = schema::NetworkPolicy::kPublic;
    for (const char* r : {"allow@host:tcp:5432", "deny@10.0.0.0/8", "allow@private:tcp:5432"}) {
      sb.network.rules.push_back(*schema::ParseNetworkRule(r));
    }
    Record(*store, "shop", "web", orchestrator::RecordSpecJson(sb, "sha256:00"));
    sb.name = "locked";
    sb.network = {};
    sb.network.policy = schema::NetworkPolicy::kNone;
    Record(*store, "shop", "locked", orchestrator::RecordSpecJson(sb, "sha256:00"));
    orchestrator::ProjectRecord run;
    run.name = Store::kRunProject;
    run.directory = dir_;
    (void)store->UpsertProject(run);
    Record(*store, Store::kRunProject, "run-abc", "");  // msb run records no spec
  }

  void TearDown() override {
    ::unsetenv("MSB_HOME");
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void Record(Store& store, const std::string& project, const std::string& name, const std::string& spec) {
    orchestrator::SandboxRecord r;
    r.project = project;
    r.name = name;
    r.config_hash = "h";
    r.image_ref = "./rootfs";
    r.spec_json = spec;
    r.sandbox_dir = dir_ + "/" + name;
    auto st = store.UpsertSandbox(r);
    ASSERT_TRUE(st.ok()) << st.error().message();
  }

  RunResult Msb(std::vector<std::string> args) {
    args.insert(args.begin(), msb_);
    auto r = RunCapture(args, /*merge_stderr=*/true);
    EXPECT_TRUE(r.ok()) << r.error().message();
    return r.ok() ? *r : RunResult{};
  }

  std::string dir_, home_, msb_;
};

TEST_F(NetCheckTest, RecordedSpecDecidesWithTheRuleOrProfile) {
  RunResult r = Msb({"net", "check", "web", "10.1.2.3", "5432/tcp"});
  EXPECT_EQ(r.status.code, 1) << r.output;
  EXPECT_NE(r.output.find("deny tcp 10.1.2.3:5432: rule 2 (deny:egress@10.0.0.0/8:any) [private]"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("profile public, 3 rules (from the recorded spec of shop/web)"), std::string::npos)
      << r.output;

  r = Msb({"net", "check", "web", "192.168.4.4", "5432"});
  EXPECT_EQ(r.status.code, 0) << r.output;
  EXPECT_NE(r.output.find("allow tcp 192.168.4.4:5432: rule 3 (allow:egress@private:tcp:5432)"), std::string::npos)
      << r.output;

  r = Msb({"net", "check", "web", "93.184.216.34", "443"});
  EXPECT_EQ(r.status.code, 0) << r.output;
  EXPECT_NE(r.output.find("allow tcp 93.184.216.34:443: profile public: 93.184.216.34 is public"),
            std::string::npos)
      << r.output;

  r = Msb({"net", "check", "web", "::ffff:169.254.169.254", "80/tcp"});
  EXPECT_EQ(r.status.code, 1) << r.output;
  EXPECT_NE(r.output.find("(as 169.254.169.254) is meta"), std::string::npos) << r.output;

  r = Msb({"net", "check", "web", "host", "5432"});
  EXPECT_EQ(r.status.code, 0) << r.output;
  EXPECT_NE(r.output.find("connects to the host's 127.0.0.1"), std::string::npos) << r.output;
  EXPECT_EQ(Msb({"net", "check", "web", "host", "22"}).status.code, 1);

  // A name is resolved on the host and judged per address.
  r = Msb({"net", "check", "web", "localhost", "80"});
  EXPECT_EQ(r.status.code, 1) << r.output;
  EXPECT_NE(r.output.find("deny tcp 127.0.0.1:80: profile public: 127.0.0.1 is loopback"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("sandbox's own DNS"), std::string::npos) << r.output;

  r = Msb({"net", "check", "locked", "93.184.216.34"});
  EXPECT_EQ(r.status.code, 1) << r.output;
  EXPECT_NE(r.output.find("deny 93.184.216.34 (some port): profile none: 93.184.216.34 is public"),
            std::string::npos)
      << r.output;
  // A sibling sandbox's name is judged as a group member.
  r = Msb({"net", "check", "web", "locked", "80"});
  EXPECT_EQ(r.status.code, 0) << r.output;
  EXPECT_NE(r.output.find("allow tcp locked:80: profile public: locked is a group member [group]"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(Msb({"net", "check", "locked", "web", "80"}).status.code, 1);
  // No recorded spec: the default profile.
  r = Msb({"net", "check", "run-abc", "10.0.0.1", "icmp"});
  EXPECT_EQ(r.status.code, 1) << r.output;
  EXPECT_NE(r.output.find("deny icmp 10.0.0.1: profile public: 10.0.0.1 is private"), std::string::npos)
      << r.output;
}

TEST_F(NetCheckTest, ErrorsExitTwoAndSayWhatToDo) {
  RunResult r = Msb({"net", "check", "nosuch", "1.2.3.4"});
  EXPECT_EQ(r.status.code, 2);
  EXPECT_NE(r.output.find("no sandbox named nosuch"), std::string::npos) << r.output;
  r = Msb({"net", "check", "web", "1.2.3.4", "80/sctp"});
  EXPECT_EQ(r.status.code, 2);
  EXPECT_NE(r.output.find("expected 443, 443/tcp, 53/udp or icmp"), std::string::npos) << r.output;
}

TEST_F(NetCheckTest, FileReadsTheSandboxfile) {
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/Sandboxfile", R"(name: other
sandboxes:
  api:
    image: ./rootfs
    network:
      policy: any
      rules: ["deny@203.0.113.0/24:tcp"]
)").ok());
  ASSERT_TRUE(MakeDirs(dir_ + "/rootfs").ok());
  RunResult r = Msb({"net", "check", "api", "10.9.9.9", "22", "--file", dir_ + "/Sandboxfile"});
  EXPECT_EQ(r.status.code, 0) << r.output;
  EXPECT_NE(r.output.find("allow tcp 10.9.9.9:22: profile any: 10.9.9.9 is private"), std::string::npos)
      << r.output;
  r = Msb({"net", "check", "api", "203.0.113.5", "443", "-f", dir_ + "/Sandboxfile"});
  EXPECT_EQ(r.status.code, 1) << r.output;
  EXPECT_NE(r.output.find("rule 1 (deny:egress@203.0.113.0/24:tcp)"), std::string::npos) << r.output;
  r = Msb({"net", "check", "web", "1.2.3.4", "--file", dir_ + "/Sandboxfile"});
  EXPECT_EQ(r.status.code, 2);
  EXPECT_NE(r.output.find("it declares: api"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace msb
