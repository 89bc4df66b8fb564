// Tests for placeholders and SecretValue: the shape and freshness of
// placeholders, values copied and read into protected memory, moves, the
// size bound, and the non-dumpable process (checked in a child).
#include "secrets/placeholder.h"

#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>

namespace msb::secrets {
namespace {

std::string TempFile(const std::string& content) {
  char path[] = "/tmp/msb-secret-test.XXXXXX";
  int fd = ::mkstemp(path);
  EXPECT_GE(fd, 0);
  ::close(fd);
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

TEST(PlaceholderTest, ShapeAndFreshness) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    auto p = NewPlaceholder();
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p->size(), kPlaceholderSize);
    EXPECT_EQ(p->rfind("msb-secret-", 0), 0u);
    EXPECT_TRUE(IsPlaceholder(*p)) << *p;
    EXPECT_TRUE(seen.insert(*p).second);
  }
  static_assert(kPlaceholderRandomBits >= 128);
  EXPECT_FALSE(IsPlaceholder("msb-secret-"));
  EXPECT_FALSE(IsPlaceholder("msb-secret-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
  EXPECT_FALSE(IsPlaceholder("msb-secret-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"));
  EXPECT_TRUE(IsPlaceholder("msb-secret-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa7"));
}

TEST(PlaceholderTest, EveryBase32CharacterAppears) {
  std::set<char> chars;
  for (int i = 0; i < 200; ++i) {
    std::string p = *NewPlaceholder();
    chars.insert(p.begin() + static_cast<ptrdiff_t>(kPlaceholderPrefix.size()), p.end());
  }
  EXPECT_EQ(chars.size(), 32u);
}

TEST(SecretValueTest, HoldsTheBytesInProtectedMemory) {
  std::string bytes("tok\0en\xff", 7);
  auto v = SecretValue::Create(bytes);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->view(), bytes);
  EXPECT_EQ(v->size(), 7u);
  EXPECT_TRUE(v->dontdump());  // MADV_DONTDUMP exists on every supported kernel
  SecretValue moved = std::move(*v);
  EXPECT_EQ(moved.view(), bytes);
  EXPECT_EQ(v->size(), 0u);
  EXPECT_TRUE(v->view().empty());
  SecretValue other = *SecretValue::Create("x");
  other = std::move(moved);
  EXPECT_EQ(other.view(), bytes);
  EXPECT_TRUE(SecretValue::Create("").ok());
}

TEST(SecretValueTest, SizeIsBounded) {
  EXPECT_TRUE(SecretValue::Create(std::string(kMaxSecretBytes, 'a')).ok());
  auto big = SecretValue::Create(std::string(kMaxSecretBytes + 1, 'a'));
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code(), ErrorCode::kInvalidArgument);
}

TEST(SecretValueTest, ReadFileDropsOneTrailingNewline) {
  for (auto [content, want] : std::vector<std::pair<std::string, std::string>>{
           {"token\n", "token"}, {"token\r\n", "token"}, {"token\n\n", "token\n"}, {"tok en", "tok en"}, {"", ""}}) {
    std::string path = TempFile(content);
    auto v = SecretValue::ReadFile(path);
    ASSERT_TRUE(v.ok()) << v.error().message();
    EXPECT_EQ(v->view(), want);
    std::remove(path.c_str());
  }
}

TEST(SecretValueTest, ReadFileRefusesLargeFilesDirectoriesAndMissingFiles) {
  std::string path = TempFile(std::string(kMaxSecretBytes + 1, 'a'));
  auto big = SecretValue::ReadFile(path);
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.error().message().find(path), std::string::npos);
  std::remove(path.c_str());
  std::string exact = TempFile(std::string(kMaxSecretBytes, 'b'));
  EXPECT_EQ(SecretValue::ReadFile(exact)->size(), kMaxSecretBytes);
  std::remove(exact.c_str());
  EXPECT_FALSE(SecretValue::ReadFile("/tmp").ok());
  auto missing = SecretValue::ReadFile("/nonexistent/secret");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kIo);
}

TEST(SecretValueTest, WipeStringZeroesAndEmpties) {
  std::string s = "value";
  const char* data = s.data();
  WipeString(&s);
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(std::string(data, 5), std::string(5, '\0'));  // the small-string buffer stays
}

TEST(ProtectProcessMemoryTest, MakesTheProcessNonDumpable) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    bool ok = ProtectProcessMemory().ok() && ::prctl(PR_GET_DUMPABLE) == 0;
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace msb::secrets
