// Tests for image references (schema/image_ref.h): normalisation of registry
// references, local directories resolved against the file, refusals.
#include "schema/image_ref.h"

#include <gtest/gtest.h>

namespace msb::schema {
namespace {

std::string Ref(std::string_view text) {
  auto r = ParseImage(text, "/proj", "/home/u");
  EXPECT_TRUE(r.ok()) << text << ": " << (r.ok() ? "" : r.error().message());
  return r.ok() ? r->reference : "";
}

TEST(ImageRefTest, RegistryReferencesAreNormalised) {
  EXPECT_EQ(Ref("alpine"), "docker.io/library/alpine:latest");
  EXPECT_EQ(Ref("alpine:3.19"), "docker.io/library/alpine:3.19");
  EXPECT_EQ(Ref("bitnami/redis"), "docker.io/bitnami/redis:latest");
  EXPECT_EQ(Ref("index.docker.io/library/alpine:1"), "docker.io/library/alpine:1");
  EXPECT_EQ(Ref("registry.example.com/shop/web:1.4"), "registry.example.com/shop/web:1.4");
  EXPECT_EQ(Ref("localhost:5000/x"), "localhost:5000/x:latest");
  std::string digest = "sha256:" + std::string(64, 'a');
  EXPECT_EQ(Ref("alpine@" + digest), "docker.io/library/alpine@" + digest);
  EXPECT_EQ(Ref("alpine:3@" + digest), "docker.io/library/alpine:3@" + digest);
  auto img = ParseImage("ghcr.io/org/app:v1", "/proj", "");
  ASSERT_TRUE(img.ok());
  EXPECT_EQ(img->kind, Image::Kind::kRegistry);
  EXPECT_EQ(img->registry, "ghcr.io");
  EXPECT_EQ(img->repository, "org/app");
  EXPECT_EQ(img->tag, "v1");
}

TEST(ImageRefTest, DirectoriesLayoutsAndSnapshots) {
  EXPECT_EQ(Ref("./rootfs"), "/proj/rootfs");
  EXPECT_EQ(Ref("../images/db/"), "/images/db");
  EXPECT_EQ(Ref("/srv/rootfs"), "/srv/rootfs");
  EXPECT_EQ(Ref("~/rootfs"), "/home/u/rootfs");
  EXPECT_EQ(Ref("oci-layout:./layout"), "oci-layout:/proj/layout");
  EXPECT_EQ(Ref("oci-layout:./layout:v2"), "oci-layout:/proj/layout:v2");
  EXPECT_EQ(Ref("snapshot:base-1"), "snapshot:base-1");
  EXPECT_EQ(ParseImage("./rootfs", "/proj", "")->kind, Image::Kind::kLocalDir);
  EXPECT_EQ(ParseImage("oci-layout:/l:t", "/proj", "")->kind, Image::Kind::kOciLayout);
  EXPECT_EQ(ParseImage("snapshot:s", "/proj", "")->kind, Image::Kind::kSnapshot);
}

TEST(ImageRefTest, RefusesMalformedReferences) {
  auto why = [](std::string_view text) {
    auto r = ParseImage(text, "/proj", "");
    EXPECT_FALSE(r.ok()) << text;
    return r.ok() ? std::string() : r.error().message();
  };
  EXPECT_NE(why("Alpine").find("repository names are lower case, got \"Alpine\""), std::string::npos);
  EXPECT_NE(why("alpine@sha256:abc").find("digest \"sha256:abc\" must be sha256:"), std::string::npos);
  EXPECT_NE(why("alpine:").find("tag \"\""), std::string::npos);
  EXPECT_NE(why("alpine:-x").find("tag \"-x\""), std::string::npos);
  EXPECT_NE(why("").find("it is empty"), std::string::npos);
  EXPECT_NE(why("snapshot:Bad").find("snapshot name \"Bad\""), std::string::npos);
  EXPECT_NE(why("oci-layout:").find("the layout directory is empty"), std::string::npos);
  EXPECT_NE(why("a//b").find("repository component \"\""), std::string::npos);
  EXPECT_NE(why("bad_host:99/x").find("registry \"bad_host:99\" is not a host[:port]"), std::string::npos);
  EXPECT_NE(why("~/x").find("HOME is not set"), std::string::npos);
}

}  // namespace
}  // namespace msb::schema
