// Tests of image/oci: index/list platform choice, manifest and config parsing,
// schema 1 refusal, digest validation, layer media types, and that no input
// makes the parsers throw.
#include "image/oci.h"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

namespace msb::image::oci {
namespace {

const std::string kD1 = "sha256:" + std::string(64, 'a');
const std::string kD2 = "sha256:" + std::string(64, 'b');
const std::string kD3 = "sha256:" + std::string(64, 'c');

std::string IndexJson(const std::string& media_type, const std::string& entries) {
  return R"({"schemaVersion":2,"mediaType":")" + media_type + R"(","manifests":[)" + entries + "]}";
}

std::string Entry(const std::string& digest, const std::string& os, const std::string& arch,
                  const std::string& variant = "",
                  const std::string& mt = std::string(kMediaTypeOciManifest)) {
  std::string p = R"({"os":")" + os + R"(","architecture":")" + arch + "\"";
  if (!variant.empty()) p += R"(,"variant":")" + variant + "\"";
  p += "}";
  return R"({"mediaType":")" + mt + R"(","digest":")" + digest + R"(","size":500,"platform":)" + p + "}";
}

TEST(OciDigest, Validation) {
  EXPECT_TRUE(IsValidDigest(kD1));
  EXPECT_TRUE(IsValidDigest("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
  EXPECT_FALSE(IsValidDigest("sha256:" + std::string(64, 'A')));
  EXPECT_FALSE(IsValidDigest("sha256:" + std::string(63, 'a')));
  EXPECT_FALSE(IsValidDigest("sha256:" + std::string(65, 'a')));
  EXPECT_FALSE(IsValidDigest("sha512:" + std::string(64, 'a')));
  EXPECT_FALSE(IsValidDigest("sha256:" + std::string(63, 'a') + "g"));
  EXPECT_FALSE(IsValidDigest(std::string(64, 'a')));
  EXPECT_FALSE(IsValidDigest(""));
  auto s = ValidateDigest("sha256:xyz", "layer 2");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(), "layer 2: digest \"sha256:xyz\" is not sha256:<64 lowercase hex>");
  EXPECT_EQ(DigestOf(""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(OciIndex, PicksLinuxAmd64IgnoringVariant) {
  std::string doc = IndexJson(std::string(kMediaTypeOciIndex),
                              Entry(kD1, "linux", "arm64", "v8") + "," + Entry(kD2, "linux", "amd64", "v3") + "," +
                                  Entry(kD3, "linux", "amd64"));
  auto kind = ClassifyDocument(doc);
  ASSERT_TRUE(kind.ok()) << kind.error().message();
  EXPECT_EQ(*kind, DocumentKind::kIndex);
  auto idx = ParseIndex(doc);
  ASSERT_TRUE(idx.ok()) << idx.error().message();
  ASSERT_EQ(idx->manifests.size(), 3u);
  auto d = SelectPlatform(*idx, "reg/x:1");
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ(d->digest, kD2);
  EXPECT_EQ(d->size, 500);
}

TEST(OciIndex, DockerListWithoutAmd64NamesWhatItHas) {
  std::string mt(kMediaTypeDockerManifest);
  std::string doc = IndexJson(std::string(kMediaTypeDockerManifestList),
                              Entry(kD1, "linux", "arm64", "v8", mt) + "," + Entry(kD2, "linux", "s390x", "", mt) +
                                  "," + Entry(kD3, "windows", "amd64", "", mt));
  auto idx = ParseIndex(doc);
  ASSERT_TRUE(idx.ok()) << idx.error().message();
  auto d = SelectPlatform(*idx, "reg.internal/team/api:1.0");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(d.error().message(),
            "image reg.internal/team/api:1.0 has no linux/amd64 manifest; it has: linux/arm64/v8, linux/s390x, "
            "windows/amd64");
}

TEST(OciIndex, AttestationEntriesAreNotChosen) {
  std::string doc = IndexJson(std::string(kMediaTypeOciIndex),
                              Entry(kD1, "unknown", "unknown") + "," +
                                  Entry(kD2, "linux", "amd64", "", "application/vnd.in-toto+json"));
  auto idx = ParseIndex(doc);
  ASSERT_TRUE(idx.ok()) << idx.error().message();
  EXPECT_FALSE(SelectPlatform(*idx, "x").ok());
}

TEST(OciIndex, BadEntryNamesTheField) {
  std::string doc = IndexJson(std::string(kMediaTypeOciIndex),
                              Entry(kD1, "linux", "amd64") + R"(,{"mediaType":"x","digest":"sha256:abc","size":1})");
  auto idx = ParseIndex(doc);
  ASSERT_FALSE(idx.ok());
  EXPECT_EQ(idx.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(idx.error().message().find("manifests[1].digest"), std::string::npos) << idx.error().message();
}

const char* kManifest = R"({
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
             "digest": "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "size": 123},
  "layers": [
    {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
     "digest": "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "size": 1000},
    {"mediaType": "application/vnd.oci.image.layer.v1.tar",
     "digest": "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc", "size": 0}
  ],
  "annotations": {"org.opencontainers.image.ref.name": "1.0"}
})";

TEST(OciManifest, Parses) {
  auto kind = ClassifyDocument(kManifest);
  ASSERT_TRUE(kind.ok());
  EXPECT_EQ(*kind, DocumentKind::kManifest);
  auto m = ParseManifest(kManifest);
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_EQ(m->config.digest, kD1);
  EXPECT_EQ(m->config.size, 123);
  ASSERT_EQ(m->layers.size(), 2u);
  EXPECT_EQ(m->layers[0].media_type, kMediaTypeOciLayerGzip);
  EXPECT_EQ(m->layers[0].size, 1000);
  EXPECT_EQ(m->layers[1].digest, kD3);
  EXPECT_EQ(m->annotations.at("org.opencontainers.image.ref.name"), "1.0");
}

TEST(OciManifest, DockerSchema2WithoutMediaTypeUsesContentType) {
  std::string doc = std::string(kManifest);
  doc.replace(doc.find("\"mediaType\": \"application/vnd.oci.image.manifest.v1+json\","),
              std::string("\"mediaType\": \"application/vnd.oci.image.manifest.v1+json\",").size(), "");
  auto kind = ClassifyDocument(doc, "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8");
  ASSERT_TRUE(kind.ok()) << kind.error().message();
  EXPECT_EQ(*kind, DocumentKind::kManifest);
  EXPECT_TRUE(ParseManifest(doc).ok());
}

TEST(OciManifest, SchemaOneRefused) {
  const char* v1 = R"({"schemaVersion":1,"name":"x","tag":"1","fsLayers":[{"blobSum":"sha256:aa"}]})";
  auto kind = ClassifyDocument(v1);
  ASSERT_FALSE(kind.ok());
  EXPECT_EQ(kind.error().message(),
            "schema 1 manifests are not supported; push the image again with a current client");
  auto m = ParseManifest(v1);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().message(), kind.error().message());
  auto by_type = ClassifyDocument(R"({"schemaVersion":2})", "application/vnd.docker.distribution.manifest.v1+prettyjws");
  ASSERT_FALSE(by_type.ok());
  EXPECT_NE(by_type.error().message().find("schema 1"), std::string::npos);
}

TEST(OciManifest, FieldErrors) {
  struct Case {
    std::string doc;
    std::string field;
  };
  std::vector<Case> cases = {
      {R"({"schemaVersion":2,"layers":[]})", "config: missing"},
      {R"({"schemaVersion":2,"config":{"mediaType":"a","digest":")" + kD1 + R"(","size":-1},"layers":[]})",
       "config.size: negative"},
      {R"({"schemaVersion":2,"config":{"mediaType":"a","digest":")" + kD1 + R"(","size":"1"},"layers":[]})",
       "config.size: expected an integer"},
      {R"({"schemaVersion":2,"config":{"mediaType":"a","digest":")" + kD1 + R"(","size":1.5},"layers":[]})",
       "config.size: expected an integer"},
      {R"({"schemaVersion":2,"config":{"mediaType":"a","digest":")" + kD1 + R"(","size":1},"layers":{}})",
       "layers: expected an array"},
      {R"({"schemaVersion":2,"config":{"mediaType":"a","digest":")" + kD1 + R"(","size":1},"layers":[{"digest":")" +
           kD2 + R"(","size":1}]})",
       "layers[0].mediaType: missing"},
      {R"({"schemaVersion":"2"})", "schemaVersion: expected an integer"},
      {R"({"schemaVersion":3})", "schemaVersion: is 3, expected 2"},
      {R"([1,2])", "not a JSON object"},
      {R"({"schemaVersion":2,)", "not valid JSON"},
  };
  for (const auto& c : cases) {
    auto m = ParseManifest(c.doc);
    ASSERT_FALSE(m.ok()) << c.doc;
    EXPECT_EQ(m.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(m.error().message().find(c.field), std::string::npos) << m.error().message();
    EXPECT_EQ(m.error().message().rfind("manifest: ", 0), 0u) << m.error().message();
  }
}

TEST(OciConfig, Parses) {
  std::string doc = R"({
    "architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
    "config": {"Entrypoint": ["/bin/api"], "Cmd": ["--port", "80"], "Env": ["PATH=/usr/bin", "A=b=c"],
               "WorkingDir": "/srv", "User": "1000:1000",
               "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}},
    "rootfs": {"type": "layers", "diff_ids": [")" + kD1 + R"(", ")" + kD2 + R"("]},
    "history": [{"created_by": "x"}]
  })";
  auto c = ParseImageConfig(doc);
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->architecture, "amd64");
  EXPECT_EQ(c->os, "linux");
  EXPECT_EQ(c->created, "2024-01-02T03:04:05Z");
  EXPECT_EQ(c->entrypoint, std::vector<std::string>{"/bin/api"});
  EXPECT_EQ(c->cmd, (std::vector<std::string>{"--port", "80"}));
  EXPECT_EQ(c->env, (std::vector<std::string>{"PATH=/usr/bin", "A=b=c"}));
  EXPECT_EQ(c->working_dir, "/srv");
  EXPECT_EQ(c->user, "1000:1000");
  EXPECT_EQ(c->exposed_ports, (std::vector<std::string>{"53/udp", "8080/tcp"}));
  EXPECT_EQ(c->diff_ids, (std::vector<std::string>{kD1, kD2}));
}

TEST(OciConfig, NullsAndErrors) {
  auto ok = ParseImageConfig(
      R"({"architecture":"amd64","os":"linux","config":{"Entrypoint":null,"Cmd":null},"rootfs":{"type":"layers","diff_ids":[]}})");
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_TRUE(ok->entrypoint.empty());
  auto bad = ParseImageConfig(
      R"({"architecture":"amd64","os":"linux","config":{"Env":["A=1",2]},"rootfs":{"type":"layers","diff_ids":[]}})");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(), "image config: config.Env[1]: expected a string, found number");
  auto bad_diff = ParseImageConfig(
      R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:AA"]}})");
  ASSERT_FALSE(bad_diff.ok());
  EXPECT_NE(bad_diff.error().message().find("rootfs.diff_ids[0]"), std::string::npos);
  auto no_rootfs = ParseImageConfig(R"({"architecture":"amd64","os":"linux"})");
  ASSERT_FALSE(no_rootfs.ok());
  EXPECT_EQ(no_rootfs.error().message(), "image config: rootfs: missing");
}

TEST(OciLayer, Classify) {
  EXPECT_EQ(*ClassifyLayer(kMediaTypeOciLayer), LayerCompression::kNone);
  EXPECT_EQ(*ClassifyLayer(kMediaTypeOciLayerGzip), LayerCompression::kGzip);
  EXPECT_EQ(*ClassifyLayer(kMediaTypeDockerLayer), LayerCompression::kGzip);
  EXPECT_EQ(*ClassifyLayer(kMediaTypeOciLayerZstd), LayerCompression::kZstd);
  auto foreign = ClassifyLayer(kMediaTypeDockerForeignLayer);
  ASSERT_FALSE(foreign.ok());
  EXPECT_NE(foreign.error().message().find("non-distributable"), std::string::npos);
  EXPECT_FALSE(ClassifyLayer("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip").ok());
  auto other = ClassifyLayer("application/vnd.cncf.helm.chart.content.v1.tar+gzip");
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.error().message().find("helm"), std::string::npos);
}

RC_GTEST_PROP(OciProperties, ParsersNeverThrow, (const std::string& bytes)) {
  // Arbitrary bytes and arbitrary JSON-ish splices of a valid manifest.
  (void)ClassifyDocument(bytes);
  (void)ParseIndex(bytes);
  (void)ParseManifest(bytes);
  (void)ParseImageConfig(bytes);
  std::string m = kManifest;
  size_t at = *rc::gen::inRange<size_t>(0, m.size());
  std::string spliced = m.substr(0, at) + bytes + m.substr(at);
  auto r = ParseManifest(spliced);
  if (!r.ok()) RC_ASSERT(r.error().code() == ErrorCode::kInvalidArgument);
}

RC_GTEST_PROP(OciProperties, DigestRoundTrip, (const std::string& bytes)) {
  std::string d = DigestOf(bytes);
  RC_ASSERT(IsValidDigest(d));
  RC_ASSERT(DigestHex(d).size() == 64u);
}

}  // namespace
}  // namespace msb::image::oci
