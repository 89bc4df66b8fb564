// The real msb binary's `msb export kubernetes`: the YAML on stdout is the
// exporter's (orchestrator/kube_export.h), warnings go to stderr, flags
// reach the objects, and -o DIR writes one file per object, replaces a
// previous export whole, and leaves DIR as it was on an error.
#include <stdlib.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "common/child.h"
#include "common/io.h"
#include "orchestrator/kube_export.h"
#include "schema/sandboxfile.h"

namespace msb {
namespace {

namespace fs = std::filesystem;

class ExportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-cli-export.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ::setenv("MSB_HOME", (dir_ + "/home").c_str(), 1);
    msb_ = std::string(MSB_TEST_BUILD_DIR) + "/bin/msb";
    file_ = dir_ + "/Sandboxfile";
    Write(kFile);
  }
  void TearDown() override {
    ::unsetenv("MSB_HOME");
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  static constexpr const char* kFile =
      "name: shop\n"
      "sandboxes:\n"
      "  web:\n"
      "    image: registry.example.com/shop/web:1.0\n"
      "    ports: [\"8080:80\"]\n"
      "    network:\n"
      "      rules: [\"allow@api.example.com:tcp:443\"]\n"
      "    secrets:\n"
      "      API_TOKEN: { from_env: SHOP_API_TOKEN_UNSET, allow: [api.example.com] }\n"
      "  db:\n"
      "    image: registry.example.com/shop/db:1.0\n"
      "    volumes: [\"data:/var/lib/db\"]\n"
      "volumes:\n"
      "  data: { size: 1G }\n";

  void Write(const std::string& yaml) { ASSERT_TRUE(WriteFileAtomic(file_, yaml).ok()); }

  struct Out {
    int code = -1;
    std::string out, err;
  };
  // msb with args; stdout and stderr apart (stderr through a file).
  Out Msb(const std::vector<std::string>& args) {
    std::string cmd = "exec \"$0\" \"$@\" 2>" + dir_ + "/stderr";
    std::vector<std::string> argv = {"/bin/sh", "-c", cmd, msb_};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = RunCapture(argv, /*merge_stderr=*/false);
    EXPECT_TRUE(r.ok()) << r.error().message();
    Out o;
    if (!r.ok()) return o;
    o.code = r->status.code;
    o.out = r->output;
    auto err = ReadFile(dir_ + "/stderr");
    o.err = err.ok() ? *err : "";
    return o;
  }

  // What the exporter makes of the file as it is now.
  orchestrator::KubeExport Expected(const orchestrator::KubeExportOptions& options = {}) {
    schema::LoadOptions lo;
    lo.file = file_;
    schema::Env env;
    lo.env = &env;
    auto p = schema::LoadSandboxfile(lo);
    EXPECT_TRUE(p.ok()) << p.error().message();
    auto e = orchestrator::ExportKubernetes(*p, options);
    EXPECT_TRUE(e.ok()) << e.error().message();
    return e.ok() ? *e : orchestrator::KubeExport{};
  }

  std::set<std::string> Files(const std::string& d) {
    std::set<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(d, ec)) out.insert(e.path().filename().string());
    return out;
  }

  static std::string Text(const std::string& path) {
    auto r = ReadFile(path);
    return r.ok() ? *r : "";
  }

  std::string dir_, msb_, file_;
};

TEST_F(ExportTest, StdoutIsTheExportersStreamAndWarningsGoToStderr) {
  Out o = Msb({"export", "kubernetes", "-f", file_});
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, orchestrator::KubeYamlStream(Expected()));
  EXPECT_EQ(o.out.rfind("---\napiVersion: apps/v1\nkind: StatefulSet\n", 0), 0u) << o.out;
  EXPECT_NE(o.err.find("msb: warning: sandbox web: secret API_TOKEN: on Kubernetes the value enters the VM"),
            std::string::npos)
      << o.err;
  EXPECT_NE(o.err.find("msb: warning: sandbox web: rule 1 (allow:egress@api.example.com:tcp:443)"),
            std::string::npos)
      << o.err;
  EXPECT_EQ(o.out.find("warning"), std::string::npos);
}

TEST_F(ExportTest, FlagsReachTheObjects) {
  Out o = Msb({"export", "kubernetes", "-f", file_, "-o", "-", "--runtime-class", "kata-clh", "--namespace",
               "shop-prod", "--publish-as", "loadbalancer", "--fqdn-policy", "cilium"});
  ASSERT_EQ(o.code, 0) << o.err;
  orchestrator::KubeExportOptions options;
  options.runtime_class = "kata-clh";
  options.name_space = "shop-prod";
  options.publish_as = orchestrator::PublishAs::kLoadBalancer;
  options.fqdn_policy = orchestrator::FqdnPolicy::kCilium;
  EXPECT_EQ(o.out, orchestrator::KubeYamlStream(Expected(options)));
  EXPECT_NE(o.out.find("runtimeClassName: kata-clh"), std::string::npos);
  EXPECT_NE(o.out.find("type: LoadBalancer"), std::string::npos);
  EXPECT_NE(o.out.find("kind: CiliumNetworkPolicy"), std::string::npos);
  EXPECT_NE(o.out.find("namespace: shop-prod"), std::string::npos);

  Out bad = Msb({"export", "kubernetes", "-f", file_, "--publish-as", "hostport"});
  EXPECT_EQ(bad.code, 2) << bad.err;
  EXPECT_EQ(bad.out, "");
}

TEST_F(ExportTest, DirectoryHoldsOneFilePerObjectAndIsReplacedWhole) {
  const std::string out = dir_ + "/k8s";
  Out o = Msb({"export", "kubernetes", "-f", file_, "-o", out});
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, "");
  auto expected = Expected();
  std::set<std::string> names;
  for (const auto& obj : expected.objects) {
    names.insert(obj.FileName());
    auto text = ReadFile(out + "/" + obj.FileName());
    ASSERT_TRUE(text.ok()) << obj.FileName();
    EXPECT_EQ(*text, orchestrator::KubeYaml(obj));
  }
  EXPECT_EQ(Files(out), names);
  EXPECT_TRUE(names.count("statefulset-db.yaml") && names.count("service-web-published.yaml"));

  // A sandbox removed from the file: its files go with the next export.
  Write(std::string(kFile).substr(0, std::string(kFile).find("  db:\n")));
  o = Msb({"export", "kubernetes", "-f", file_, "-o", out});
  ASSERT_EQ(o.code, 0) << o.err;
  std::set<std::string> now;
  for (const auto& obj : Expected().objects) now.insert(obj.FileName());
  EXPECT_EQ(Files(out), now);
  EXPECT_EQ(now.count("statefulset-db.yaml"), 0u);
  // Nothing left beside it.
  EXPECT_EQ(Files(dir_), (std::set<std::string>{"Sandboxfile", "k8s", "stderr"}));
}

TEST_F(ExportTest, AnErrorLeavesTheDirectoryAsItWas) {
  const std::string out = dir_ + "/k8s";
  ASSERT_EQ(Msb({"export", "kubernetes", "-f", file_, "-o", out}).code, 0);
  std::set<std::string> before = Files(out);
  auto service_before = ReadFile(out + "/service-web.yaml");
  ASSERT_TRUE(service_before.ok());

  // A bind mount without --allow-host-path: an error naming it, nothing written.
  ASSERT_TRUE(MakeDirs(dir_ + "/src").ok());
  std::string with_bind = std::string(kFile);
  with_bind.insert(with_bind.find("    ports:"), "    volumes: [\"./src:/src\"]\n");
  Write(with_bind);
  Out o = Msb({"export", "kubernetes", "-f", file_, "-o", out});
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.err.find("msb: sandbox web: bind mounts have no portable Kubernetes form: " + dir_ + "/src:/src:rw ("),
            std::string::npos)
      << o.err;
  EXPECT_EQ(Files(out), before);
  EXPECT_EQ(Text(out + "/service-web.yaml"), *service_before);

  // A directory holding something an export does not write is refused.
  Write(kFile);
  ASSERT_TRUE(WriteFileAtomic(out + "/notes.txt", "mine\n").ok());
  o = Msb({"export", "kubernetes", "-f", file_, "-o", out});
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.err.find(out + "/notes.txt, which is not a file an export writes"), std::string::npos) << o.err;
  EXPECT_EQ(Text(out + "/notes.txt"), "mine\n");
  EXPECT_EQ(Files(dir_), (std::set<std::string>{"Sandboxfile", "k8s", "src", "stderr"}));

  // And a new directory is not created at all on an error.
  Write(with_bind);
  o = Msb({"export", "kubernetes", "-f", file_, "-o", dir_ + "/fresh"});
  EXPECT_EQ(o.code, 1);
  EXPECT_FALSE(fs::exists(dir_ + "/fresh"));
}

}  // namespace
}  // namespace msb
