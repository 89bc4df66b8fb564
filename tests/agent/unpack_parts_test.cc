// The pure parts of agentd's unpack mode, in-process: entry name cleaning
// (a property against a reference model), whiteout classification, the xattr
// filter, and the unpack / layer message decoders. Applying layers needs a
// chroot and runs in the builder VM test (tests/fs/unpack_test.cc).
#include "agent/unpack.h"

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include "agent/messages.h"

namespace msb::agent {
namespace {

TEST(CleanEntryPath, Examples) {
  EXPECT_EQ(*CleanEntryPath("etc/passwd"), "etc/passwd");
  EXPECT_EQ(*CleanEntryPath("./etc/passwd"), "etc/passwd");
  EXPECT_EQ(*CleanEntryPath("/etc/x"), "etc/x");
  EXPECT_EQ(*CleanEntryPath("//etc//x/"), "etc/x");
  EXPECT_EQ(*CleanEntryPath("a/../b/./c"), "b/c");
  EXPECT_EQ(*CleanEntryPath("./"), "");
  EXPECT_EQ(*CleanEntryPath("/"), "");
  EXPECT_FALSE(CleanEntryPath("../../etc/evil").ok());
  EXPECT_FALSE(CleanEntryPath("a/../../x").ok());
  EXPECT_FALSE(CleanEntryPath("/../x").ok());
  EXPECT_FALSE(CleanEntryPath(std::string("a\0b", 3)).ok());
  EXPECT_FALSE(CleanEntryPath(std::string(256, 'a')).ok());
  EXPECT_TRUE(CleanEntryPath(std::string(255, 'a')).ok());
  std::string deep;
  for (int i = 0; i < 2100; ++i) deep += "a/";
  EXPECT_FALSE(CleanEntryPath(deep).ok());
}

// Any name built from ordinary, ".", ".." and empty components cleans to what
// a stack model says, or fails exactly when the model climbs above the root;
// a cleaned path never has an empty, "." or ".." component or a leading "/".
RC_GTEST_PROP(CleanEntryPath, MatchesAStackModel, ()) {
  auto parts = *rc::gen::container<std::vector<std::string>>(
      rc::gen::element<std::string>("a", "bb", ".", "..", "", ".wh.x", "..a"));
  bool absolute = *rc::gen::arbitrary<bool>();
  std::string name = absolute ? "/" : "";
  for (size_t i = 0; i < parts.size(); ++i) name += (i ? "/" : "") + parts[i];
  std::vector<std::string> stack;
  bool escapes = false;
  for (const auto& p : parts) {
    if (p == "..") {
      if (stack.empty()) {
        escapes = true;
        break;
      }
      stack.pop_back();
    } else if (!p.empty() && p != ".") {
      stack.push_back(p);
    }
  }
  auto got = CleanEntryPath(name);
  RC_ASSERT(got.ok() == !escapes);
  if (!got.ok()) return;
  std::string want;
  for (const auto& s : stack) want += (want.empty() ? "" : "/") + s;
  RC_ASSERT(*got == want);
}

TEST(ClassifyWhiteout, Kinds) {
  auto w = ClassifyWhiteout("etc/.wh.passwd");
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->kind, Whiteout::Kind::kRemove);
  EXPECT_EQ(w->target, "etc/passwd");
  w = ClassifyWhiteout(".wh.top");
  EXPECT_EQ(w->kind, Whiteout::Kind::kRemove);
  EXPECT_EQ(w->target, "top");
  w = ClassifyWhiteout("var/.wh..wh..opq");
  EXPECT_EQ(w->kind, Whiteout::Kind::kOpaque);
  EXPECT_EQ(w->target, "var");
  w = ClassifyWhiteout(".wh..wh..opq");
  EXPECT_EQ(w->kind, Whiteout::Kind::kOpaque);
  EXPECT_EQ(w->target, "");
  EXPECT_EQ(ClassifyWhiteout("a/.wh..wh.plnk")->kind, Whiteout::Kind::kIgnore);
  EXPECT_EQ(ClassifyWhiteout("a/wh.x")->kind, Whiteout::Kind::kNone);
  EXPECT_EQ(ClassifyWhiteout("a/x.wh.y")->kind, Whiteout::Kind::kNone);
  EXPECT_FALSE(ClassifyWhiteout("a/.wh.").ok());
  EXPECT_FALSE(ClassifyWhiteout("a/.wh..").ok());
  EXPECT_FALSE(ClassifyWhiteout("a/.wh...").ok());
}

TEST(XattrAllowed, OnlyUserCapabilitiesAndAcls) {
  EXPECT_TRUE(XattrAllowed("user.mime_type"));
  EXPECT_TRUE(XattrAllowed("security.capability"));
  EXPECT_TRUE(XattrAllowed("system.posix_acl_access"));
  EXPECT_FALSE(XattrAllowed("trusted.overlay.opaque"));
  EXPECT_FALSE(XattrAllowed("security.selinux"));
  EXPECT_FALSE(XattrAllowed("security.capabilityx"));
  EXPECT_FALSE(XattrAllowed("userx"));
}

TEST(UnpackMessages, RoundTrip) {
  UnpackRequest req;
  req.target_serial = "msb-target";
  req.layers = {{"msb-layer-0", 123, "application/vnd.oci.image.layer.v1.tar+gzip"}, {"msb-layer-1", 7, ""}};
  auto back = ParseUnpackRequest(Encode(req));
  ASSERT_TRUE(back.ok()) << back.error().message();
  ASSERT_EQ(back->layers.size(), 2u);
  EXPECT_EQ(back->layers[0].size, 123u);
  EXPECT_EQ(back->layers[1].serial, "msb-layer-1");
  LayerReport r{3, "sha256:" + std::string(64, 'a'), 10, 4096};
  auto rb = ParseLayerReport(Encode(r));
  ASSERT_TRUE(rb.ok()) << rb.error().message();
  EXPECT_EQ(rb->index, 3u);
  EXPECT_EQ(rb->diff_id, r.diff_id);
  EXPECT_EQ(rb->bytes, 4096u);
}

TEST(UnpackMessages, RefusesBadRequestsAndReports) {
  EXPECT_FALSE(ParseUnpackRequest(R"({"target_serial":"t","layers":[]})").ok());
  EXPECT_FALSE(ParseUnpackRequest(R"({"layers":[{"serial":"a","size":1}]})").ok());
  EXPECT_FALSE(ParseUnpackRequest(R"({"target_serial":"t","layers":[{"serial":"a b","size":1}]})").ok());
  EXPECT_FALSE(ParseUnpackRequest(R"({"target_serial":"t","layers":[{"serial":"a","size":-1}]})").ok());
  EXPECT_FALSE(ParseUnpackRequest(
                   R"({"target_serial":"123456789012345678901","layers":[{"serial":"a","size":1}]})")
                   .ok());
  std::string many = R"({"target_serial":"t","layers":[)";
  for (size_t i = 0; i <= kMaxUnpackLayers; ++i) many += std::string(i ? "," : "") + R"({"serial":"a","size":1})";
  many += "]}";
  EXPECT_FALSE(ParseUnpackRequest(many).ok());
  EXPECT_FALSE(ParseLayerReport(R"({"index":0,"diff_id":"sha256:AB","entries":1,"bytes":1})").ok());
  EXPECT_FALSE(ParseLayerReport(R"({"index":20,"diff_id":"sha256:)" + std::string(64, 'a') +
                                R"(","entries":1,"bytes":1})")
                   .ok());
  EXPECT_FALSE(ParseLayerReport(R"({"index":0,"diff_id":"sha256:)" + std::string(64, 'a') + R"("})").ok());
}

}  // namespace
}  // namespace msb::agent
