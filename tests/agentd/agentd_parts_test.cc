// agentd's building blocks in-process: user resolution against a fake /etc,
// environment assembly, and the tar helpers (run in a child, as agentd does),
// including the extraction guards.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "agentd/spawn.h"
#include "agentd/tar.h"
#include "agentd/users.h"
#include "common/io.h"

namespace msb::agent {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/msb-agentd-parts-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(UsersTest, ResolvesNamesIdsAndGroups) {
  TempDir etc;
  std::ofstream(etc.path() + "/passwd") << "root:x:0:0:root:/root:/bin/sh\n"
                                           "# comment\n"
                                           "broken line\n"
                                           "alice:x:1000:1001:Alice:/home/alice:/bin/sh\n";
  std::ofstream(etc.path() + "/group") << "root:x:0:\nusers:x:1001:\nstaff:x:50:bob,alice\nwheel:x:10:alice\n";

  auto a = ResolveUser("alice", etc.path());
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_EQ(a->uid, 1000u);
  EXPECT_EQ(a->gid, 1001u);
  EXPECT_EQ(a->home, "/home/alice");
  EXPECT_EQ(a->groups, (std::vector<gid_t>{50, 10}));

  auto by_id = ResolveUser("1000", etc.path());
  ASSERT_TRUE(by_id.ok());
  EXPECT_EQ(by_id->gid, 1001u);
  EXPECT_EQ(by_id->home, "/home/alice");

  auto unknown_id = ResolveUser("4242", etc.path());
  ASSERT_TRUE(unknown_id.ok());
  EXPECT_EQ(unknown_id->uid, 4242u);
  EXPECT_EQ(unknown_id->gid, 0u);
  EXPECT_EQ(unknown_id->home, "/");

  auto pair = ResolveUser("4242:77", etc.path());
  ASSERT_TRUE(pair.ok());
  EXPECT_EQ(pair->gid, 77u);

  auto named_group = ResolveUser("alice:staff", etc.path());
  ASSERT_TRUE(named_group.ok());
  EXPECT_EQ(named_group->gid, 50u);
  EXPECT_EQ(named_group->groups, (std::vector<gid_t>{10}));

  auto nobody = ResolveUser("mallory", etc.path());
  ASSERT_FALSE(nobody.ok());
  EXPECT_EQ(nobody.error().message(), "user \"mallory\" not found in " + etc.path() + "/passwd");
  EXPECT_FALSE(ResolveUser("alice:nogroup", etc.path()).ok());
  EXPECT_FALSE(ResolveUser("alice:", etc.path()).ok());
  EXPECT_FALSE(ResolveUser(":1", etc.path()).ok());
}

TEST(SpawnTest, BuildEnvOverlaysInOrder) {
  auto env = BuildEnv({{"A=1", "PATH=/x"}, {"A=2", "B=", "=bad"}}, "/home/u", true);
  EXPECT_EQ(env, (std::vector<std::string>{"PATH=/x", "HOME=/home/u", "TERM=xterm", "A=2", "B="}));
  auto plain = BuildEnv({}, "/root", false);
  ASSERT_EQ(plain.size(), 2u);
  EXPECT_EQ(plain[1], "HOME=/root");
}

// Runs fn in a child, as agentd's copy helpers do; returns its exit code and stderr.
std::pair<int, std::string> InChild(const std::function<int()>& fn, const std::string& input,
                                    std::string* output = nullptr) {
  auto p = SpawnFunction(fn, !input.empty());
  EXPECT_TRUE(p.ok());
  if (!input.empty()) {
    int flags = ::fcntl(p->in.get(), F_GETFL);
    ::fcntl(p->in.get(), F_SETFL, flags & ~O_NONBLOCK);
    (void)WriteAll(p->in.get(), input);
    p->in.Reset();
  }
  for (int fd : {p->out.get(), p->err.get()}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  std::string out, err;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(p->out.get(), buf, sizeof buf)) > 0) out.append(buf, n);
  while ((n = ::read(p->err.get(), buf, sizeof buf)) > 0) err.append(buf, n);
  int status = 0;
  ::waitpid(p->pid, &status, 0);
  if (output != nullptr) *output = out;
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, err};
}

std::function<int()> Extract(const std::string& dir) {
  return [dir] {
    Status s = ExtractTar(0, dir);
    if (s.ok()) return 0;
    std::string m = s.error().message();
    (void)::write(2, m.data(), m.size());
    return 1;
  };
}

// A one-entry ustar archive with a chosen name (and link target for symlinks).
std::string Tar(const std::string& name, const std::string& data, char type = '0',
                const std::string& link = "") {
  std::string h(512, '\0');
  auto put = [&](size_t off, const std::string& s) { h.replace(off, s.size(), s); };
  auto octal = [](unsigned long v, int width) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%0*lo", width - 1, v);
    return std::string(buf);
  };
  put(0, name);
  put(100, octal(0644, 8));
  put(108, octal(0, 8));
  put(116, octal(0, 8));
  put(124, octal(type == '0' ? data.size() : 0, 12));
  put(136, octal(0, 12));
  put(148, "        ");
  h[156] = type;
  put(157, link);
  put(257, "ustar");
  put(263, "00");
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  put(148, octal(sum, 7));
  std::string body = type == '0' ? data + std::string((512 - data.size() % 512) % 512, '\0') : "";
  return h + body + std::string(1024, '\0');
}

TEST(TarTest, ExtractRefusesEscapes) {
  TempDir d;
  std::string dest = d.path() + "/dest";
  auto [code, err] = InChild(Extract(dest), Tar("../escaped", "x"));
  EXPECT_EQ(code, 1);
  EXPECT_NE(err.find(".."), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(d.path() + "/escaped"));

  std::tie(code, err) = InChild(Extract(dest), Tar(d.path() + "/abs", "x"));
  EXPECT_EQ(code, 1) << err;
  EXPECT_FALSE(fs::exists(d.path() + "/abs"));

  // A symlink pointing out, then a file written through it.
  std::string evil = Tar("link", "", '2', d.path());
  evil.resize(evil.size() - 1024);  // drop the end-of-archive blocks, append another entry
  evil += Tar("link/through", "x");
  std::tie(code, err) = InChild(Extract(dest), evil);
  EXPECT_EQ(code, 1);
  EXPECT_FALSE(fs::exists(d.path() + "/through"));
}

TEST(TarTest, WriteThenExtractKeepsNamesAndModes) {
  TempDir d;
  ASSERT_TRUE(MakeDirs(d.path() + "/tree/a").ok());
  std::ofstream(d.path() + "/tree/a/f") << "data";
  ::chmod((d.path() + "/tree/a/f").c_str(), 0751);
  std::string tar;
  auto [code, err] = InChild([&] { return WriteTar(1, d.path() + "/tree/") ? 0 : 1; }, "", &tar);
  ASSERT_EQ(code, 0) << err;
  auto [code2, err2] = InChild(Extract(d.path() + "/out"), tar);
  ASSERT_EQ(code2, 0) << err2;
  EXPECT_EQ(*ReadFile(d.path() + "/out/tree/a/f"), "data");
  struct stat st;
  ASSERT_EQ(::stat((d.path() + "/out/tree/a/f").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0751u);
}

}  // namespace
}  // namespace msb::agent
