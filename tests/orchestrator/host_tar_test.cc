// Tests of orchestrator/host_tar: unpacking a guest's tar stream on the host
// (`msb cp SANDBOX:PATH DST`) with hand-made headers, for what a hostile guest
// may send: a stream cut inside a GNU long-name entry (found by
// fuzz/cp_tar_fuzz.cc: libarchive gives no error message for it, which
// crashed msb), a symlink followed by a file through it, a name with "..";
// and packing a host directory whose names are not ASCII.
#include "orchestrator/host_tar.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "common/io.h"

namespace msb::orchestrator {
namespace {

namespace stdfs = std::filesystem;

// One 512-byte tar header (GNU magic), checksum filled in.
std::string Header(const std::string& name, char type, size_t size, const std::string& link = "") {
  std::string h(512, '\0');
  h.replace(0, name.size(), name);
  auto octal = [&](size_t at, size_t width, unsigned long v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%0*lo", static_cast<int>(width - 1), v);
    h.replace(at, width - 1, buf);
  };
  octal(100, 8, type == '5' ? 0755 : 0644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, size);
  octal(136, 12, 1700000000);
  h[156] = type;
  h.replace(157, link.size(), link);
  h.replace(257, 8, std::string("ustar  \0", 8));
  h.replace(148, 8, "        ");
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  char buf[8];
  std::snprintf(buf, sizeof buf, "%06o", sum);
  h.replace(148, 7, std::string(buf, 6) + '\0');
  return h;
}

std::string Padded(std::string data) {
  data.resize((data.size() + 511) / 512 * 512, '\0');
  return data;
}

class HostTarTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-host-tar-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    work_ = tmpl;
    dest_ = work_ + "/root/dest";
    stdfs::create_directories(dest_);
    stdfs::create_directories(work_ + "/sentinel");
  }
  void TearDown() override { stdfs::remove_all(work_); }

  Status Unpack(const std::string& stream) {
    UniqueFd fd(::memfd_create("host_tar_test", MFD_CLOEXEC));
    EXPECT_TRUE(fd);
    EXPECT_TRUE(WriteAll(fd.get(), stream).ok());
    return UnpackGuestTar(fd.get(), dest_, "top", "copy", 1 << 20, 022);
  }

  std::string work_, dest_;
};

TEST_F(HostTarTest, StreamCutInsideALongNameIsAnErrorWithAMessage) {
  // A directory, then a GNU long-name entry declaring 126 bytes of which 31
  // arrive: libarchive fails with no error string.
  std::string stream = Header("top/", '5', 0) + Header("././@LongLink", 'L', 126) +
                       "top/" + std::string(26, 'd') + std::string(1, '\0');
  Status st = Unpack(stream);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("the sandbox sent a malformed tar stream"), std::string::npos)
      << st.error().message();
}

TEST_F(HostTarTest, UnpacksUnderTheNewTopLevelName) {
  std::string stream = Header("top/", '5', 0) + Header("top/a.txt", '0', 6) + Padded("hello\n") +
                       Header("other/b", '0', 1) + Padded("x") + std::string(1024, '\0');
  Status st = Unpack(stream);
  ASSERT_TRUE(st.ok()) << st.error().message();
  auto a = ReadFile(dest_ + "/copy/a.txt");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, "hello\n");
  EXPECT_FALSE(stdfs::exists(dest_ + "/other"));
}

TEST_F(HostTarTest, NothingLandsThroughASymlinkOrDotDot) {
  std::string stream = Header("top/", '5', 0) + Header("top/out", '2', 0, "../../sentinel") +
                       Header("top/out/pwned", '0', 4) + Padded("bad\n") +
                       Header("top/../../sentinel/dotdot", '0', 4) + Padded("bad\n") +
                       std::string(1024, '\0');
  Status st = Unpack(stream);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("'..'"), std::string::npos) << st.error().message();
  EXPECT_TRUE(stdfs::is_empty(work_ + "/sentinel"));
  // libarchive (ARCHIVE_EXTRACT_UNLINK) replaced the symlink by a directory.
  EXPECT_FALSE(stdfs::is_symlink(dest_ + "/copy/out"));
  EXPECT_TRUE(stdfs::is_regular_file(dest_ + "/copy/out/pwned"));
}

// PackHostPath (`msb cp HOST SANDBOX:PATH`) under msb's C locale: a name
// libarchive cannot convert to UTF-8 gets a warning from the pax writer, and
// the file's bytes must still follow its header (found by
// fuzz/cp_tar_fuzz.cc's round trip: they were left out, so the file arrived
// as zeros).
TEST_F(HostTarTest, PackKeepsTheContentsOfFilesWithNonAsciiNames) {
  std::string src = work_ + "/src";
  stdfs::create_directories(src);
  const std::string names[] = {"caf\xc3\xa9.txt", "raw-\xff\xfe", "plain.txt"};
  for (const std::string& n : names) {
    UniqueFd fd(::open((src + "/" + n).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd);
    ASSERT_TRUE(WriteAll(fd.get(), "contents of " + n + "\n").ok());
  }
  std::string packed;
  Status st = PackHostPath(src, "top", [&](std::string_view b) {
    packed.append(b);
    return OkStatus();
  });
  ASSERT_TRUE(st.ok()) << st.error().message();
  st = Unpack(packed);
  ASSERT_TRUE(st.ok()) << st.error().message();
  for (const std::string& n : names) {
    auto got = ReadFile(dest_ + "/copy/" + n);
    ASSERT_TRUE(got.ok()) << n;
    EXPECT_EQ(*got, "contents of " + n + "\n") << n;
  }
}

}  // namespace
}  // namespace msb::orchestrator
