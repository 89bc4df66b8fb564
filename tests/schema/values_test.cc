// Tests for the small value grammars (schema/values.h): each grammar has
// accepted and refused cases, and formatting reads back.
#include "schema/values.h"

#include <gtest/gtest.h>

namespace msb::schema {
namespace {

TEST(SizeTest, AcceptsUnitsFractionsAndBytes) {
  EXPECT_EQ(*ParseSize("512M"), 512 * kMiB);
  EXPECT_EQ(*ParseSize("1G"), kGiB);
  EXPECT_EQ(*ParseSize("1.5G"), 1536 * kMiB);
  EXPECT_EQ(*ParseSize("64Ki"), 64 * 1024u);
  EXPECT_EQ(*ParseSize("10MB"), 10 * kMiB);
  EXPECT_EQ(*ParseSize("2gib"), 2 * kGiB);
  EXPECT_EQ(*ParseSize("4096"), 4096u);
  EXPECT_EQ(*ParseSize("100B"), 100u);
  EXPECT_EQ(*ParseSize("1T"), 1024 * kGiB);
}

TEST(SizeTest, PlainNumberUsesTheFieldsUnit) {
  EXPECT_EQ(*ParseSize("1024", kMiB), kGiB);
  EXPECT_EQ(*ParseSize("1G", kMiB), kGiB);
}

TEST(SizeTest, RefusesMalformedSizesSayingWhatWasExpected) {
  EXPECT_EQ(ParseSize("lots").error().message(),
            "expected a size like 512M, 1G, 1.5G or a number of bytes, got \"lots\"");
  EXPECT_EQ(ParseSize("12Q", kMiB).error().message(),
            "expected a size like 512M, 1G, 1.5G or a whole number of MiB, got \"12Q\"");
  EXPECT_FALSE(ParseSize("").ok());
  EXPECT_FALSE(ParseSize("-1G").ok());
  EXPECT_FALSE(ParseSize("1..5G").ok());
  EXPECT_FALSE(ParseSize("1 G").ok());
  EXPECT_EQ(ParseSize("1.3B").error().message(), "size \"1.3B\" is not a whole number of bytes");
  EXPECT_EQ(ParseSize("99999999999T").error().message(), "size \"99999999999T\" is too large");
}

TEST(SizeTest, FormatPicksTheLargestExactUnitAndReadsBack) {
  EXPECT_EQ(FormatSize(512 * kMiB), "512M");
  EXPECT_EQ(FormatSize(1536 * kMiB), "1536M");
  EXPECT_EQ(FormatSize(kGiB), "1G");
  EXPECT_EQ(FormatSize(100), "100B");
  EXPECT_EQ(FormatSize(0), "0");
  for (uint64_t v : std::vector<uint64_t>{1, 1023, 1024, 3 * kMiB + 1024, 5 * kGiB, 7ull << 40}) {
    EXPECT_EQ(*ParseSize(FormatSize(v)), v) << v;
    if (v % kMiB == 0) EXPECT_EQ(*ParseSize(FormatSize(v), kMiB), v) << v;
  }
}

TEST(DurationTest, AcceptsUnitsAndCombinations) {
  EXPECT_EQ(*ParseDuration("5s"), 5000);
  EXPECT_EQ(*ParseDuration("1m30s"), 90'000);
  EXPECT_EQ(*ParseDuration("500ms"), 500);
  EXPECT_EQ(*ParseDuration("1h"), 3'600'000);
  EXPECT_EQ(*ParseDuration("1.5s"), 1500);
  EXPECT_EQ(*ParseDuration("0s"), 0);
}

TEST(DurationTest, RefusesMissingUnitsAndGarbage) {
  EXPECT_EQ(ParseDuration("5").error().message(),
            "expected a duration like 5s, 1m30s or 500ms (a unit is required), got \"5\"");
  EXPECT_EQ(ParseDuration("5 s").error().message(),
            "expected a duration like 5s, 1m30s or 500ms, got \"5 s\"");
  EXPECT_FALSE(ParseDuration("").ok());
  EXPECT_FALSE(ParseDuration("5d").ok());
  EXPECT_FALSE(ParseDuration("s").ok());
  EXPECT_FALSE(ParseDuration("-5s").ok());
  EXPECT_EQ(ParseDuration("1.0005s").error().message(),
            "duration \"1.0005s\" is not a whole number of milliseconds");
  EXPECT_FALSE(ParseDuration("99999999999h").ok());
}

TEST(DurationTest, FormatReadsBack) {
  EXPECT_EQ(FormatDuration(90'000), "1m30s");
  EXPECT_EQ(FormatDuration(500), "500ms");
  EXPECT_EQ(FormatDuration(0), "0s");
  EXPECT_EQ(FormatDuration(3'600'000 + 1), "1h1ms");
  for (int64_t v : {1, 999, 1000, 61'001, 7'200'000}) EXPECT_EQ(*ParseDuration(FormatDuration(v)), v);
}

TEST(IntegerTest, RangeIsEnforced) {
  EXPECT_EQ(*ParseInteger("3", 1, 5), 3);
  EXPECT_EQ(ParseInteger("0", 1, 5).error().message(), "expected an integer from 1 to 5, got \"0\"");
  EXPECT_FALSE(ParseInteger("2.0", 1, 5).ok());
  EXPECT_FALSE(ParseInteger("0x2", 1, 5).ok());
  EXPECT_FALSE(ParseInteger("99999999999999999999999", 1, 5).ok());
}

TEST(RestartTest, AcceptsTheFourPolicies) {
  EXPECT_EQ(ParseRestart("no")->policy, Restart::Policy::kNo);
  EXPECT_EQ(ParseRestart("always")->policy, Restart::Policy::kAlways);
  EXPECT_EQ(ParseRestart("unless-stopped")->policy, Restart::Policy::kUnlessStopped);
  auto r = ParseRestart("on-failure:5");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->policy, Restart::Policy::kOnFailure);
  EXPECT_EQ(r->max_retries, 5);
  EXPECT_EQ(ToString(*r), "on-failure:5");
  EXPECT_EQ(ToString(*ParseRestart("on-failure")), "on-failure");
}

TEST(RestartTest, RefusesOthersWithASuggestion) {
  EXPECT_EQ(ParseRestart("allways").error().message(),
            "expected no, always, on-failure[:N] or unless-stopped, got \"allways\"; did you mean \"always\"?");
  EXPECT_EQ(ParseRestart("on-failure:0").error().message(),
            "on-failure:N needs N from 1 to 1000000, got \"on-failure:0\"");
  EXPECT_FALSE(ParseRestart("on-failure:x").ok());
  EXPECT_FALSE(ParseRestart("false").ok());
}

TEST(PortMappingTest, AcceptsTheForms) {
  auto p = ParsePortMapping("8080:80");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->host_ip, "127.0.0.1");
  EXPECT_EQ(p->host_port, 8080);
  EXPECT_EQ(p->guest_port, 80);
  EXPECT_EQ(p->protocol, Protocol::kTcp);
  p = ParsePortMapping("0.0.0.0:5353:53/udp");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(FormatPortMapping(*p), "0.0.0.0:5353:53/udp");
  p = ParsePortMapping("[::1]:8443:443/tcp");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(FormatPortMapping(*p), "[::1]:8443:443/tcp");
  p = ParsePortMapping("3000");  // microsandbox: the same port on both sides
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(FormatPortMapping(*p), "127.0.0.1:3000:3000/tcp");
  EXPECT_EQ(FormatPortMapping(*ParsePortMapping("1:65535")), "127.0.0.1:1:65535/tcp");
}

TEST(PortMappingTest, RefusesOutOfRangeAndMalformed) {
  EXPECT_EQ(ParsePortMapping("0:80").error().message(),
            "invalid port mapping \"0:80\": host port \"0\" must be from 1 to 65535 (expected [ip:]host:guest[/tcp|udp])");
  EXPECT_EQ(ParsePortMapping("80:65536").error().message(),
            "invalid port mapping \"80:65536\": guest port \"65536\" must be from 1 to 65535 (expected [ip:]host:guest[/tcp|udp])");
  EXPECT_EQ(ParsePortMapping("80:80/sctp").error().message(),
            "invalid port mapping \"80:80/sctp\": protocol \"sctp\" must be tcp or udp (expected [ip:]host:guest[/tcp|udp])");
  EXPECT_FALSE(ParsePortMapping("1.2.3:80:80").ok());
  EXPECT_FALSE(ParsePortMapping("::1:80:80").ok());
  EXPECT_FALSE(ParsePortMapping("[1.2.3.4]:80:80").ok());
  EXPECT_FALSE(ParsePortMapping("a:b").ok());
  EXPECT_FALSE(ParsePortMapping("").ok());
}

TEST(VolumeSpecTest, TellsBindMountsFromNamedVolumes) {
  auto v = ParseVolumeSpec("./src:/app/src");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->kind, Mount::Kind::kBind);
  EXPECT_EQ(v->source, "./src");
  EXPECT_EQ(v->target, "/app/src");
  EXPECT_FALSE(v->read_only);
  v = ParseVolumeSpec("cache:/var/cache//x/:ro");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->kind, Mount::Kind::kVolume);
  EXPECT_EQ(v->target, "/var/cache/x");
  EXPECT_TRUE(v->read_only);
  EXPECT_EQ(ParseVolumeSpec("/abs:/x:rw")->kind, Mount::Kind::kBind);
  EXPECT_EQ(ParseVolumeSpec("~/d:/x")->kind, Mount::Kind::kBind);
}

TEST(VolumeSpecTest, RefusesRelativeGuestPathsAndBadModes) {
  EXPECT_EQ(ParseVolumeSpec("./src:app").error().message(),
            "invalid volume \"./src:app\": guest path \"app\" must be absolute (start with /) "
            "(expected HOST_PATH:GUEST_PATH[:ro|rw] or VOLUME:GUEST_PATH[:ro|rw])");
  EXPECT_FALSE(ParseVolumeSpec("./src:/a:rx").ok());
  EXPECT_FALSE(ParseVolumeSpec("./src").ok());
  EXPECT_FALSE(ParseVolumeSpec("a:/b:ro:x").ok());
  EXPECT_FALSE(ParseVolumeSpec("Cache:/b").ok());
  EXPECT_FALSE(ParseVolumeSpec("./x:/").ok());
  EXPECT_FALSE(ParseVolumeSpec("./x:/a/../b").ok());
}

TEST(TmpfsTest, ParsesOptionsAndFormatsBack) {
  auto t = ParseTmpfs("/tmp:size=64M");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->target, "/tmp");
  EXPECT_EQ(t->size, 64 * kMiB);
  EXPECT_EQ(t->mode, 01777u);
  t = ParseTmpfs("/run:mode=755,size=1G");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(FormatTmpfs(*t), "/run:size=1G,mode=755");
  EXPECT_EQ(ParseTmpfs("/x")->size, 0u);
}

TEST(TmpfsTest, RefusesBadOptions) {
  EXPECT_EQ(ParseTmpfs("/tmp:sise=1M").error().message(),
            "invalid tmpfs \"/tmp:sise=1M\": unknown option \"sise=1M\"; did you mean \"size\"? "
            "(expected GUEST_PATH[:size=SIZE][,mode=OCTAL])");
  EXPECT_FALSE(ParseTmpfs("tmp").ok());
  EXPECT_FALSE(ParseTmpfs("/tmp:mode=999").ok());
  EXPECT_FALSE(ParseTmpfs("/tmp:size=0").ok());
  EXPECT_FALSE(ParseTmpfs("/tmp:size").ok());
}

TEST(NameTest, FollowsTheNameRule) {
  EXPECT_TRUE(IsValidName("web"));
  EXPECT_TRUE(IsValidName("0db_1-x"));
  EXPECT_TRUE(IsValidName(std::string(63, 'a')));
  EXPECT_FALSE(IsValidName(std::string(64, 'a')));
  EXPECT_FALSE(IsValidName(""));
  EXPECT_FALSE(IsValidName("Web"));
  EXPECT_FALSE(IsValidName("-web"));
  EXPECT_FALSE(IsValidName("_web"));
  EXPECT_FALSE(IsValidName("we.b"));
  EXPECT_EQ(NameFromDirectory("My Project.v2"), "my-project-v2");
  EXPECT_EQ(NameFromDirectory("__x"), "x");
  EXPECT_EQ(NameFromDirectory("..."), "default");
  EXPECT_TRUE(IsValidName(NameFromDirectory(std::string(100, 'Z'))));
}

TEST(EnvNameTest, LettersDigitsUnderscore) {
  EXPECT_TRUE(IsEnvName("GITHUB_TOKEN"));
  EXPECT_TRUE(IsEnvName("_x1"));
  EXPECT_FALSE(IsEnvName("1X"));
  EXPECT_FALSE(IsEnvName("A-B"));
  EXPECT_FALSE(IsEnvName(""));
}

TEST(PathTest, GuestPathsAreAbsoluteAndNormalised) {
  EXPECT_EQ(*NormalizeGuestPath("/a//b/./c/"), "/a/b/c");
  EXPECT_EQ(*NormalizeGuestPath("/"), "/");
  EXPECT_EQ(NormalizeGuestPath("a/b").error().message(), "guest path \"a/b\" must be absolute (start with /)");
  EXPECT_FALSE(NormalizeGuestPath("/a/../b").ok());
}

TEST(PathTest, HostPathsResolveAgainstTheFilesDirectory) {
  EXPECT_EQ(*ResolveHostPath("./src", "/proj", ""), "/proj/src");
  EXPECT_EQ(*ResolveHostPath("../data/", "/proj/sub", ""), "/proj/data");
  EXPECT_EQ(*ResolveHostPath("/abs/./x", "/proj", ""), "/abs/x");
  EXPECT_EQ(*ResolveHostPath("~/d", "/proj", "/home/u"), "/home/u/d");
  EXPECT_FALSE(ResolveHostPath("~/d", "/proj", "").ok());
  EXPECT_FALSE(ResolveHostPath("~bob/d", "/proj", "/home/u").ok());
}

TEST(AddressTest, IpsAndHostNames) {
  EXPECT_EQ(*CanonicalIp("10.0.0.1"), "10.0.0.1");
  EXPECT_EQ(*CanonicalIp("2001:DB8:0:0::1"), "2001:db8::1");
  EXPECT_FALSE(CanonicalIp("10.0.0").has_value());
  EXPECT_FALSE(CanonicalIp("example.com").has_value());
  EXPECT_EQ(*CanonicalHostName("API.GitHub.com."), "api.github.com");
  EXPECT_EQ(*CanonicalHostName("db"), "db");
  EXPECT_FALSE(CanonicalHostName("-a.com").has_value());
  EXPECT_FALSE(CanonicalHostName("a..com").has_value());
  EXPECT_FALSE(CanonicalHostName("1.2.3").has_value());
  EXPECT_FALSE(CanonicalHostName("a b.com").has_value());
  EXPECT_FALSE(CanonicalHostName(std::string(64, 'a') + ".com").has_value());
}

}  // namespace
}  // namespace msb::schema
