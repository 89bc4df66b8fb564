// agentd's export mode in-process (export.h): the export messages, and the
// tar WriteUpperTar makes of an overlayfs-style upper directory built on the
// host (a 0/0 character device whiteout, a directory with
// trusted.overlay.opaque=y, hard and symbolic links, a FIFO, a socket, owners,
// modes and xattrs), read back with libarchive; and the output limit.
// Whiteouts and the trusted.* xattr need root: skipped without.
#include "agentd/export.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <cstring>
#include <map>

#include "common/fd.h"
#include "common/io.h"

namespace msb::agent {
namespace {

namespace stdfs = std::filesystem;

TEST(ExportMessages, RoundTripAndBounds) {
  ExportRequest req;
  req.layers = {{"msb-layer-0", "msb-out-0"}, {"msb-layer-1", "msb-out-1"}};
  auto back = ParseExportRequest(Encode(req));
  ASSERT_TRUE(back.ok()) << back.error().message();
  ASSERT_EQ(back->layers.size(), 2u);
  EXPECT_EQ(back->layers[1].serial, "msb-layer-1");
  EXPECT_EQ(back->layers[1].output_serial, "msb-out-1");
  EXPECT_FALSE(back->start.restored);
  req.start = GuestStart{"abcd", 42, true};
  back = ParseExportRequest(Encode(req));
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back->start.entropy, "abcd");
  EXPECT_EQ(back->start.time_ns, 42);
  EXPECT_TRUE(back->start.restored);
  EXPECT_FALSE(ParseExportRequest(R"({"layers":[{"serial":"a","output_serial":"o"}],"entropy":"xyz0"})").ok());
  EXPECT_FALSE(ParseExportRequest(R"({"layers":[{"serial":"a","output_serial":"o"}],"restored":1})").ok());
  EXPECT_FALSE(ParseExportRequest(R"({"layers":[]})").ok());
  EXPECT_FALSE(ParseExportRequest(R"({"layers":[{"serial":"a"}]})").ok());
  EXPECT_FALSE(ParseExportRequest(R"({"layers":[{"serial":"a b","output_serial":"o"}]})").ok());
  std::string many = R"({"layers":[)";
  for (size_t i = 0; i <= kMaxExportLayers; ++i)
    many += std::string(i ? "," : "") + R"({"serial":"a","output_serial":"o"})";
  EXPECT_FALSE(ParseExportRequest(many + "]}").ok());

  auto r = ParseExportReport(Encode(ExportReport{3, 10240, 7}));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->index, 3u);
  EXPECT_EQ(r->bytes, 10240u);
  EXPECT_EQ(r->entries, 7u);
  EXPECT_FALSE(ParseExportReport(R"({"index":8,"bytes":1,"entries":1})").ok());
  EXPECT_FALSE(ParseExportReport(R"({"index":0,"bytes":-1,"entries":1})").ok());
  EXPECT_FALSE(ParseExportReport(R"({"index":0,"entries":1})").ok());
}

TEST(ExportClassify, WhiteoutsSocketsAndXattrs) {
  EXPECT_EQ(ClassifyUpperEntry(S_IFCHR | 0, makedev(0, 0)), UpperKind::kWhiteout);
  EXPECT_EQ(ClassifyUpperEntry(S_IFCHR | 0644, makedev(1, 3)), UpperKind::kCopy);
  EXPECT_EQ(ClassifyUpperEntry(S_IFBLK | 0644, makedev(0, 0)), UpperKind::kCopy);
  EXPECT_EQ(ClassifyUpperEntry(S_IFSOCK | 0755, 0), UpperKind::kSkip);
  EXPECT_EQ(ClassifyUpperEntry(S_IFREG | 0644, 0), UpperKind::kCopy);
  EXPECT_FALSE(ExportXattr("trusted.overlay.opaque"));
  EXPECT_FALSE(ExportXattr("trusted.overlay.redirect"));
  EXPECT_TRUE(ExportXattr("user.note"));
  EXPECT_TRUE(ExportXattr("security.capability"));
  EXPECT_TRUE(ExportXattr("trusted.other"));
}

struct Seen {
  char type = '?';  // f d l h c p
  std::string link;
  unsigned perm = 0;
  int64_t uid = -1, gid = -1;
  std::string data;
  std::map<std::string, std::string> xattrs;
};

std::map<std::string, Seen> ReadTar(const std::string& path) {
  std::map<std::string, Seen> out;
  archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  EXPECT_EQ(archive_read_open_filename(a, path.c_str(), 10240), ARCHIVE_OK);
  archive_entry* e;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    Seen s;
    switch (archive_entry_filetype(e)) {
      case AE_IFREG: s.type = 'f'; break;
      case AE_IFDIR: s.type = 'd'; break;
      case AE_IFLNK: s.type = 'l'; s.link = archive_entry_symlink(e); break;
      case AE_IFCHR: s.type = 'c'; break;
      case AE_IFIFO: s.type = 'p'; break;
      default: break;
    }
    if (archive_entry_hardlink(e) != nullptr) {
      s.type = 'h';
      s.link = archive_entry_hardlink(e);
    }
    s.perm = archive_entry_perm(e);
    s.uid = archive_entry_uid(e);
    s.gid = archive_entry_gid(e);
    char buf[4096];
    la_ssize_t n;
    while ((n = archive_read_data(a, buf, sizeof buf)) > 0) s.data.append(buf, static_cast<size_t>(n));
    archive_entry_xattr_reset(e);
    const char* name;
    const void* value;
    size_t size;
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK)
      s.xattrs[name] = std::string(static_cast<const char*>(value), size);
    out[archive_entry_pathname(e)] = s;
  }
  archive_read_free(a);
  return out;
}

class UpperTarTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "whiteout devices and trusted.* xattrs need root";
    char tmpl[] = "/tmp/msb-export-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    upper_ = dir_ + "/upper";
    ASSERT_TRUE(MakeDirs(upper_ + "/etc").ok());
    ASSERT_TRUE(MakeDirs(upper_ + "/opt/replaced/sub").ok());
    ASSERT_TRUE(WriteFileAtomic(upper_ + "/data.txt", "one\n", 04751).ok());
    ASSERT_EQ(::chown((upper_ + "/data.txt").c_str(), 12, 34), 0);
    ASSERT_EQ(::chmod((upper_ + "/data.txt").c_str(), 04751), 0);
    ASSERT_EQ(::link((upper_ + "/data.txt").c_str(), (upper_ + "/data-hard").c_str()), 0);
    ASSERT_EQ(::symlink("data.txt", (upper_ + "/data-sym").c_str()), 0);
    ASSERT_EQ(::mkfifo((upper_ + "/fifo").c_str(), 0640), 0);
    ASSERT_EQ(::mknod((upper_ + "/etc/group").c_str(), S_IFCHR | 0, makedev(0, 0)), 0);
    ASSERT_TRUE(WriteFileAtomic(upper_ + "/opt/replaced/sub/new", "new\n").ok());
    ASSERT_EQ(::setxattr((upper_ + "/opt/replaced").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
    ASSERT_EQ(::setxattr((upper_ + "/data.txt").c_str(), "user.note", "kept", 4, 0), 0);
    ASSERT_EQ(::setxattr((upper_ + "/data.txt").c_str(), "trusted.overlay.origin", "x", 1, 0), 0);
    // A socket: not representable in a tar.
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string sp = upper_ + "/sock";
    ASSERT_LT(sp.size(), sizeof addr.sun_path);
    std::memcpy(addr.sun_path, sp.c_str(), sp.size());
    ASSERT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) stdfs::remove_all(dir_, ec);
  }
  Result<ExportReport> Write(uint64_t limit) {
    UniqueFd fd(::open((dir_ + "/out.tar").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    EXPECT_TRUE(fd.valid());
    return WriteUpperTar(upper_, fd.get(), limit);
  }
  std::string dir_, upper_;
};

TEST_F(UpperTarTest, ConvertsOverlayMarkersAndKeepsMetadata) {
  auto r = Write(1 << 30);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->bytes, stdfs::file_size(dir_ + "/out.tar"));
  auto tar = ReadTar(dir_ + "/out.tar");
  std::vector<std::string> names;
  for (const auto& [n, s] : tar) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"data-hard", "data-sym", "data.txt", "etc/", "etc/.wh.group", "fifo",
                                             "opt/", "opt/replaced/", "opt/replaced/.wh..wh..opq",
                                             "opt/replaced/sub/", "opt/replaced/sub/new"}));
  EXPECT_EQ(r->entries, names.size());
  // The first name in byte order holds the data, the second links to it.
  EXPECT_EQ(tar["data-hard"].type, 'f');
  EXPECT_EQ(tar["data-hard"].data, "one\n");
  EXPECT_EQ(tar["data.txt"].type, 'h');
  EXPECT_EQ(tar["data.txt"].link, "data-hard");
  EXPECT_EQ(tar["data-hard"].perm, 04751u);
  EXPECT_EQ(tar["data-hard"].uid, 12);
  EXPECT_EQ(tar["data-hard"].gid, 34);
  EXPECT_EQ(tar["data-hard"].xattrs, (std::map<std::string, std::string>{{"user.note", "kept"}}));
  EXPECT_EQ(tar["data-sym"].type, 'l');
  EXPECT_EQ(tar["data-sym"].link, "data.txt");
  EXPECT_EQ(tar["fifo"].type, 'p');
  EXPECT_EQ(tar["etc/.wh.group"].type, 'f');
  EXPECT_EQ(tar["etc/.wh.group"].perm, 0u);
  EXPECT_EQ(tar["etc/.wh.group"].data, "");
  EXPECT_EQ(tar["opt/replaced/.wh..wh..opq"].type, 'f');
  EXPECT_TRUE(tar["opt/replaced/"].xattrs.empty());
  EXPECT_EQ(tar["opt/replaced/sub/new"].data, "new\n");
}

TEST_F(UpperTarTest, StopsAtTheOutputLimit) {
  auto r = Write(2048);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("larger than its output disk"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace msb::agent
