// Tests of orchestrator/kube_export: whole exports against golden text
// (tests/orchestrator/kube/golden/; MSB_UPDATE_GOLDEN=1 rewrites them, see
// tests/README.md), the errors, and the public profile's exceptions against
// net/address.h's table. tests/orchestrator/kube/validate.mjs checks every
// golden object against the Kubernetes API schemas.
#include "orchestrator/kube_export.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "net/address.h"
#include "schema/sandboxfile.h"

namespace msb::orchestrator {
namespace {

std::string SourceDir() { return MSB_TEST_SOURCE_DIR; }
std::string GoldenDir() { return SourceDir() + "/tests/orchestrator/kube/golden"; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The file parsed as if it were at display_path, with every bind source
// present and no variables set: the same model on every machine.
schema::Project Parse(const std::string& file, const std::string& display_path) {
  std::string text = ReadFile(SourceDir() + "/" + file);
  EXPECT_FALSE(text.empty()) << file;
  schema::ParseOptions options;
  options.path_exists = [](const std::string&) { return true; };
  auto p = schema::ParseSandboxfile(text, display_path, schema::Env{}, options);
  EXPECT_TRUE(p.ok()) << (p.ok() ? "" : p.error().message());
  return p.ok() ? *p : schema::Project{};
}

// The YAML stream, then the warnings as comments: the golden text.
std::string Rendered(const KubeExport& e) {
  std::string out = KubeYamlStream(e);
  for (const auto& w : e.warnings) out += "# warning: " + w + "\n";
  return out;
}

void ExpectGolden(const std::string& name, const std::string& actual) {
  std::string path = GoldenDir() + "/" + name + ".yaml";
  const char* update = std::getenv("MSB_UPDATE_GOLDEN");
  if (update != nullptr && std::string(update) == "1") {
    std::ofstream(path) << actual;
    return;
  }
  std::string expected = ReadFile(path);
  ASSERT_FALSE(expected.empty()) << path << " is missing; MSB_UPDATE_GOLDEN=1 writes it";
  EXPECT_EQ(actual, expected) << "export differs from " << path << " (MSB_UPDATE_GOLDEN=1 rewrites it)";
}

const std::string kEverything = "tests/orchestrator/kube/Sandboxfile.everything";

TEST(KubeExport, QuickstartGolden) {
  auto p = Parse("examples/quickstart/Sandboxfile", "/src/quickstart/Sandboxfile");
  auto e = ExportKubernetes(p, {});
  ASSERT_TRUE(e.ok()) << e.error().message();
  ASSERT_EQ(e->objects.size(), 3u);
  EXPECT_EQ(e->objects[0].kind, "Deployment");
  ExpectGolden("quickstart", Rendered(*e));
}

TEST(KubeExport, WebappGolden) {
  auto p = Parse("examples/webapp/Sandboxfile", "/src/webapp/Sandboxfile");
  KubeExportOptions options;
  options.allow_host_path = true;
  auto e = ExportKubernetes(p, options);
  ASSERT_TRUE(e.ok()) << e.error().message();
  ExpectGolden("webapp", Rendered(*e));
}

TEST(KubeExport, WebappBindMountIsAnErrorWithoutAllowHostPath) {
  auto p = Parse("examples/webapp/Sandboxfile", "/src/webapp/Sandboxfile");
  auto e = ExportKubernetes(p, {});
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().message(),
            "sandbox app: bind mounts have no portable Kubernetes form: /src/webapp/app:/srv/app:ro "
            "(/src/webapp/Sandboxfile:34:9); use a named volume, or --allow-host-path for hostPath volumes "
            "(the directory on the node)");
}

TEST(KubeExport, EverythingCommentGolden) {
  auto p = Parse(kEverything, "/src/kitchen/Sandboxfile");
  KubeExportOptions options;
  options.allow_host_path = true;
  auto e = ExportKubernetes(p, options);
  ASSERT_TRUE(e.ok()) << e.error().message();
  for (const auto& obj : e->objects) EXPECT_NE(obj.kind, "CiliumNetworkPolicy");
  ExpectGolden("everything-comment", Rendered(*e));
}

TEST(KubeExport, EverythingCiliumGolden) {
  auto p = Parse(kEverything, "/src/kitchen/Sandboxfile");
  KubeExportOptions options;
  options.allow_host_path = true;
  options.fqdn_policy = FqdnPolicy::kCilium;
  options.name_space = "kitchen-prod";
  options.runtime_class = "kata-fc";
  options.publish_as = PublishAs::kNodePort;
  auto e = ExportKubernetes(p, options);
  ASSERT_TRUE(e.ok()) << e.error().message();
  int cilium = 0;
  for (const auto& obj : e->objects) {
    cilium += obj.kind == "CiliumNetworkPolicy";
    EXPECT_EQ(obj.body["metadata"]["namespace"], "kitchen-prod") << obj.kind << " " << obj.name;
  }
  EXPECT_EQ(cilium, 2);  // web and crawler have host-name rules
  ExpectGolden("everything-cilium", Rendered(*e));
}

TEST(KubeExport, EveryObjectIsLabelledAndCarriesTheConfigHash) {
  auto p = Parse(kEverything, "/src/kitchen/Sandboxfile");
  KubeExportOptions options;
  options.allow_host_path = true;
  options.fqdn_policy = FqdnPolicy::kCilium;
  auto e = ExportKubernetes(p, options);
  ASSERT_TRUE(e.ok()) << e.error().message();
  std::set<std::string> sandboxes;
  for (const auto& obj : e->objects) {
    const auto& md = obj.body["metadata"];
    EXPECT_EQ(md["labels"][kPartOfLabel], "kitchen");
    EXPECT_EQ(md["labels"][kNameLabel], obj.sandbox);
    EXPECT_EQ(md["annotations"][kConfigHashAnnotation], schema::ConfigHash(p.sandboxes.at(obj.sandbox)));
    sandboxes.insert(obj.sandbox);
  }
  EXPECT_EQ(sandboxes, (std::set<std::string>{"crawler", "db", "web", "worker"}));
}

TEST(KubeExport, AChangedSandboxChangesOnlyItsOwnObjects) {
  auto before = Parse(kEverything, "/src/kitchen/Sandboxfile");
  auto after = before;
  after.sandboxes.at("worker").memory *= 2;
  KubeExportOptions options;
  options.allow_host_path = true;
  auto a = ExportKubernetes(before, options);
  auto b = ExportKubernetes(after, options);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->objects.size(), b->objects.size());
  std::set<std::string> changed;
  for (size_t i = 0; i < a->objects.size(); ++i) {
    if (KubeYaml(a->objects[i]) != KubeYaml(b->objects[i])) changed.insert(a->objects[i].sandbox);
  }
  EXPECT_EQ(changed, std::set<std::string>{"worker"});
}

TEST(KubeExport, BindMountsAreErrorsNamingEachWithoutAllowHostPath) {
  auto p = Parse(kEverything, "/src/kitchen/Sandboxfile");
  auto e = ExportKubernetes(p, {});
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message().find("/src/kitchen/src:/app/src:rw (/src/kitchen/Sandboxfile:24:9)"), std::string::npos)
      << e.error().message();
  EXPECT_NE(e.error().message().find("/src/kitchen/config:/etc/kitchen:ro"), std::string::npos);
}

TEST(KubeExport, NamesKubernetesRefusesAreErrors) {
  auto p = Parse("examples/quickstart/Sandboxfile", "/src/quickstart/Sandboxfile");
  p.sandboxes["my_box"] = p.sandboxes.at("hello");
  p.sandboxes["my_box"].name = "my_box";
  KubeExportOptions options;
  options.name_space = "Prod";
  options.runtime_class = "kata_qemu";
  auto e = ExportKubernetes(p, options);
  ASSERT_FALSE(e.ok());
  const std::string& m = e.error().message();
  EXPECT_NE(m.find("--namespace Prod"), std::string::npos) << m;
  EXPECT_NE(m.find("--runtime-class kata_qemu"), std::string::npos) << m;
  EXPECT_NE(m.find("sandbox my_box: the name is not a Kubernetes Service name"), std::string::npos) << m;
  EXPECT_EQ(m.find("sandbox hello"), std::string::npos) << m;
}

TEST(KubeExport, SecretValuesAreNeverRead) {
  // The secret's source is an unset variable and a missing file: the export
  // neither needs nor reads them, and writes a reference only.
  auto p = Parse(kEverything, "/src/kitchen/Sandboxfile");
  auto& web = p.sandboxes.at("web");
  web.secrets["API_KEY"] = {schema::Secret::Source::kFile, "/nonexistent/key", {"api.github.com"}};
  KubeExportOptions options;
  options.allow_host_path = true;
  auto e = ExportKubernetes(p, options);
  ASSERT_TRUE(e.ok()) << e.error().message();
  std::string all = KubeYamlStream(*e);
  EXPECT_EQ(all.find("/nonexistent/key"), std::string::npos);
  EXPECT_NE(all.find("name: web-api-key"), std::string::npos);
  int secret_warnings = 0;
  for (const auto& w : e->warnings) secret_warnings += w.find("on Kubernetes the value enters the VM") != std::string::npos;
  EXPECT_EQ(secret_warnings, 2);
}

// The public profile's ipBlocks except every range of net/address.h's table
// of their family, read from the table itself: a range added there shows up.
TEST(KubeExport, PublicExceptsEverySpecialPurposeRange) {
  nlohmann::json blocks = PublicIpBlocks();
  ASSERT_EQ(blocks.size(), 2u);
  std::map<std::string, std::set<std::string>> except;
  for (const auto& b : blocks) {
    for (const auto& e : b["except"]) except[b["cidr"]].insert(e.get<std::string>());
  }
  ASSERT_EQ(except.count("0.0.0.0/0"), 1u);
  ASSERT_EQ(except.count("::/0"), 1u);
  size_t checked = 0;
  for (const auto& r : net::SpecialRanges()) {
    const auto& family = r.cidr.base().is_v4() ? except["0.0.0.0/0"] : except["::/0"];
    EXPECT_EQ(family.count(r.cidr.ToString()), 1u) << r.what;
    ++checked;
  }
  EXPECT_EQ(checked, net::SpecialRanges().size());
  // No IPv6 exception is written in a dotted (mapped) form, which the API
  // server reads as IPv4 and refuses inside ::/0.
  for (const auto& e : except["::/0"]) EXPECT_EQ(e.find('.'), std::string::npos) << e;
  EXPECT_EQ(except["::/0"].count("2002::/16"), 1u);  // 6to4 embeds any IPv4 address
  EXPECT_GT(checked, 30u);
  // And the export uses them: web's NetworkPolicy (public) holds the same.
  auto p = Parse(kEverything, "/src/kitchen/Sandboxfile");
  KubeExportOptions options;
  options.allow_host_path = true;
  auto e = ExportKubernetes(p, options);
  ASSERT_TRUE(e.ok());
  bool found = false;
  for (const auto& obj : e->objects) {
    if (obj.kind != "NetworkPolicy" || obj.sandbox != "web") continue;
    for (const auto& entry : obj.body["spec"]["egress"]) {
      if (!entry.contains("to")) continue;
      for (const auto& peer : entry["to"]) {
        if (peer.contains("ipBlock") && peer["ipBlock"]["cidr"] == "0.0.0.0/0" && !entry.contains("ports")) {
          EXPECT_EQ(peer["ipBlock"], blocks[0]);
          found = true;
        }
      }
    }
  }
  EXPECT_TRUE(found);
}

TEST(KubeExport, YamlQuotesWhatWouldReadBackAsAnotherType) {
  KubeObject obj;
  obj.kind = "ConfigMap";
  obj.name = "x";
  obj.comments = {"a comment"};
  obj.body = {{"a", "1"}, {"b", "true"}, {"c", "no"}, {"d", "1.5"}, {"e", ""}, {"f", "plain text"}, {"g", 7},
              {"h", false}, {"i", "0x1f"}, {"j", "null"}, {"k", "7597a5fb3c"}, {"l", "2001-12-14"}, {"m", "1_000"},
              {"n", "12:30"}, {"o", "1e3"}, {"p", "v1.2"}};
  EXPECT_EQ(KubeYaml(obj),
            "# a comment\n"
            "a: \"1\"\nb: \"true\"\nc: \"no\"\nd: \"1.5\"\ne: \"\"\nf: plain text\ng: 7\nh: false\ni: \"0x1f\"\n"
            "j: \"null\"\nk: 7597a5fb3c\nl: \"2001-12-14\"\nm: \"1_000\"\n\"n\": \"12:30\"\no: \"1e3\"\np: v1.2\n");
  EXPECT_EQ(obj.FileName(), "configmap-x.yaml");
}

}  // namespace
}  // namespace msb::orchestrator
