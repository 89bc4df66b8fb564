// msb sync's argument checks, URL redaction, key and default project name,
// and the fetch's argv (orchestrator/sync.h). No git, no VM: the
// integration test tests/integration/sync_test.cc runs the real thing.
#include "orchestrator/sync.h"

#include <gtest/gtest.h>

namespace msb::orchestrator {
namespace {

TEST(SyncUrlTest, RedactsUserInformationOfSchemeUrls) {
  EXPECT_EQ(RedactUrl("https://user:s3cret@git.example.test/org/app.git"),
            "https://git.example.test/org/app.git");
  EXPECT_EQ(RedactUrl("https://token@git.example.test:8443/app"), "https://git.example.test:8443/app");
  EXPECT_EQ(RedactUrl("ssh://git@host/srv/app.git"), "ssh://host/srv/app.git");
  // An '@' in the path is not user information.
  EXPECT_EQ(RedactUrl("https://host/a@b/app.git"), "https://host/a@b/app.git");
  // A password holding '@' is removed whole (the last '@' of the authority ends it).
  EXPECT_EQ(RedactUrl("https://u:p@ss@host/app"), "https://host/app");
  // Nothing to remove.
  EXPECT_EQ(RedactUrl("git://127.0.0.1:9418/app.git"), "git://127.0.0.1:9418/app.git");
  EXPECT_EQ(RedactUrl("git@github.com:org/app.git"), "git@github.com:org/app.git");
  EXPECT_EQ(RedactUrl("/srv/git/app.git"), "/srv/git/app.git");
}

TEST(SyncUrlTest, AcceptsTheFiveTransportsAndLocalPaths) {
  for (const char* url : {"git://127.0.0.1:9418/app.git", "https://h/app.git", "http://h/app",
                          "ssh://git@h/app.git", "file:///srv/app.git", "git@github.com:org/app.git",
                          "/srv/git/app.git", "relative/app", "HTTPS://h/app"}) {
    EXPECT_TRUE(CheckRepoUrl(url).ok()) << url << ": " << CheckRepoUrl(url).error().message();
  }
}

TEST(SyncUrlTest, RefusesOptionsHelpersOtherSchemesAndControlCharacters) {
  auto refused = [](const std::string& url, const std::string& why) {
    auto st = CheckRepoUrl(url);
    ASSERT_FALSE(st.ok()) << url;
    EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(st.error().message().find(why), std::string::npos) << st.error().message();
  };
  refused("", "empty");
  refused("--upload-pack=touch /tmp/x", "may not start with '-'");
  refused("-oProxyCommand=x", "may not start with '-'");
  refused("ext::sh -c touch% /tmp/pwned", "spaces");
  refused("ext::sh", "remote helpers (ext::)");
  refused("fd::3", "remote helpers (fd::)");
  refused("ftp://h/app.git", "transport ftp is refused");
  refused("ftps://h/app.git", "transport ftps is refused");
  refused("https://h/app\n.git", "control characters");
  refused("https://", "names no repository");
  // The credentials of a refused URL are not in its message.
  auto st = CheckRepoUrl("ftp://user:s3cret@h/app.git");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message().find("s3cret"), std::string::npos) << st.error().message();
}

TEST(SyncRefTest, AcceptsBranchesTagsAndFullRefs) {
  for (const char* ref : {"", "main", "release/1.2", "refs/heads/main", "refs/tags/v1.0", "HEAD", "v1.0-rc1"}) {
    EXPECT_TRUE(CheckRef(ref).ok()) << ref;
  }
}

TEST(SyncRefTest, RefusesOptionsRefspecsAndInvalidNames) {
  for (const char* ref : {"-main", "--upload-pack=x", "main:refs/heads/x", "+main", "a..b", "main~1", "main^",
                          "ma in", "a\tb", "*", "main@{1}", "/main", "main/", "main.", "a//b", ".hidden",
                          "x/.y", "main.lock", "@", "a\\b", "a?b", "a[b"}) {
    auto st = CheckRef(ref);
    EXPECT_FALSE(st.ok()) << ref;
  }
}

TEST(SyncPathTest, NormalisesRelativePathsAndRefusesLeavingTheRepository) {
  EXPECT_EQ(*NormaliseRepoPath(""), "");
  EXPECT_EQ(*NormaliseRepoPath("."), "");
  EXPECT_EQ(*NormaliseRepoPath("./"), "");
  EXPECT_EQ(*NormaliseRepoPath("deploy"), "deploy");
  EXPECT_EQ(*NormaliseRepoPath("./deploy//prod/"), "deploy/prod");
  EXPECT_FALSE(NormaliseRepoPath("/etc").ok());
  EXPECT_FALSE(NormaliseRepoPath("..").ok());
  EXPECT_FALSE(NormaliseRepoPath("deploy/../../x").ok());
  EXPECT_FALSE(NormaliseRepoPath("-x").ok());
  EXPECT_FALSE(NormaliseRepoPath("a\nb").ok());
}

TEST(SyncKeyTest, NamesComeFromTheRepositoryAndThePath) {
  EXPECT_EQ(DefaultSyncProjectName("git://127.0.0.1:9418/shop.git", ""), "shop");
  EXPECT_EQ(DefaultSyncProjectName("https://u:p@h/org/My.App.git/", "deploy/prod"), "my-app-deploy-prod");
  EXPECT_EQ(DefaultSyncProjectName("git@github.com:org/api.git", ""), "api");
  EXPECT_EQ(DefaultSyncProjectName("/srv/git/web", ""), "web");
  std::string long_name = DefaultSyncProjectName("git://h/" + std::string(100, 'a'), "b");
  EXPECT_LE(long_name.size(), 63u);
}

TEST(SyncKeyTest, TwoSyncsOfOneRepositoryOrOnePathNeverShareAKey) {
  std::string a = SyncKey("git://h/app.git", "");
  EXPECT_EQ(a, SyncKey("git://h/app.git", ""));  // stable
  EXPECT_NE(a, SyncKey("git://h/app.git", "deploy"));
  EXPECT_NE(a, SyncKey("git://other/app.git", ""));
  // Credentials are not part of the key (nor, redacted, of the directory name).
  EXPECT_EQ(SyncKey("https://u:one@h/app.git", ""), SyncKey("https://u:two@h/app.git", ""));
  EXPECT_EQ(SyncKey("https://u:one@h/app.git", "").find("one"), std::string::npos);
  EXPECT_EQ(a.rfind("app-", 0), 0u) << a;
  EXPECT_EQ(a.size(), 4u + 12u);
}

TEST(SyncGitTest, TheUrlComesAfterDoubleDashAndTheRefIsForcedIntoAPrivateRef) {
  auto argv = GitFetchArgv("/h/sync/k/repo.git", "git://127.0.0.1/app.git", "main");
  std::vector<std::string> want = {"git",      "--git-dir=/h/sync/k/repo.git", "fetch",   "--quiet",
                                   "--no-tags", "--no-recurse-submodules",     "--depth=1", "--force",
                                   "--",        "git://127.0.0.1/app.git",     "+main:refs/msb/fetched"};
  EXPECT_EQ(argv, want);
  EXPECT_EQ(GitFetchArgv("/r", "/srv/app", "").back(), "+HEAD:refs/msb/fetched");
}

}  // namespace
}  // namespace msb::orchestrator
