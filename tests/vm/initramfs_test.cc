// Tests of vm/initramfs.h: the archive is read back with libarchive and its
// entries, modes, device node and /init bytes checked; the cache key follows
// the init binary.
#include "vm/initramfs.h"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/io.h"

namespace msb::vm {
namespace {

class TempDir {
 public:
  TempDir() {
    std::string tmpl =
        std::filesystem::temp_directory_path().string() + "/msb-initramfs-test-XXXXXX";
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct Entry {
  mode_t type = 0;
  mode_t perm = 0;
  unsigned rdev_major = 0;
  unsigned rdev_minor = 0;
  int64_t uid = -1;
  int64_t gid = -1;
  std::string data;
};

struct ReadFree {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

// Entries by path, in a map; the order is checked separately.
std::map<std::string, Entry> ReadBack(const std::string& path, int* format,
                                      std::vector<std::string>* order) {
  std::unique_ptr<struct archive, ReadFree> a(archive_read_new());
  archive_read_support_format_all(a.get());
  archive_read_support_filter_all(a.get());
  std::map<std::string, Entry> out;
  if (archive_read_open_filename(a.get(), path.c_str(), 4096) != ARCHIVE_OK) {
    ADD_FAILURE() << "cannot open " << path << ": " << archive_error_string(a.get());
    return out;
  }
  struct archive_entry* e;
  while (archive_read_next_header(a.get(), &e) == ARCHIVE_OK) {
    Entry ent;
    ent.type = archive_entry_filetype(e);
    ent.perm = archive_entry_perm(e);
    ent.rdev_major = archive_entry_rdevmajor(e);
    ent.rdev_minor = archive_entry_rdevminor(e);
    ent.uid = archive_entry_uid(e);
    ent.gid = archive_entry_gid(e);
    char buf[8192];
    la_ssize_t n;
    while ((n = archive_read_data(a.get(), buf, sizeof buf)) > 0) ent.data.append(buf, n);
    if (format != nullptr) *format = archive_format(a.get());
    if (order != nullptr) order->push_back(archive_entry_pathname(e));
    out[archive_entry_pathname(e)] = ent;
  }
  return out;
}

std::string FakeElf(const std::string& tag) {
  std::string bytes = "\x7f" "ELF";
  bytes.append(1, '\2');
  bytes += "fake static init " + tag;
  bytes.append(5000, '\0');  // something longer than one small buffer
  return bytes;
}

// Where `name` is in the archive's order; a name that is not there fails
// the test and sorts last, so an order check cannot pass without it.
size_t Position(const std::vector<std::string>& order, const std::string& name) {
  auto it = std::find(order.begin(), order.end(), name);
  if (it == order.end()) {
    ADD_FAILURE() << name << " is not in the archive";
    return order.size() + 1;
  }
  return static_cast<size_t>(it - order.begin());
}

TEST(BuildInitramfs, HoldsInitDevicesAndMountPoints) {
  TempDir dir;
  std::string init = dir.path() + "/agentd";
  std::string bytes = FakeElf("a");
  ASSERT_TRUE(WriteFileAtomic(init, bytes, 0700).ok());
  std::string out = dir.path() + "/initramfs.cpio";
  auto st = BuildInitramfs(init, out);
  ASSERT_TRUE(st.ok()) << st.error().message();

  int format = 0;
  std::vector<std::string> order;
  auto entries = ReadBack(out, &format, &order);
  EXPECT_EQ(format, ARCHIVE_FORMAT_CPIO_SVR4_NOCRC);  // "newc", what the kernel reads
  auto raw = ReadFile(out);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->substr(0, 6), "070701");  // uncompressed newc magic
  ASSERT_EQ(entries.size(), 6u);

  const Entry& i = entries["init"];
  EXPECT_EQ(i.type, static_cast<mode_t>(AE_IFREG));
  EXPECT_EQ(i.perm, 0755u);
  EXPECT_EQ(i.data, bytes);

  const Entry& c = entries["dev/console"];
  EXPECT_EQ(c.type, static_cast<mode_t>(AE_IFCHR));
  EXPECT_EQ(c.rdev_major, 5u);
  EXPECT_EQ(c.rdev_minor, 1u);
  EXPECT_EQ(c.perm, 0600u);

  for (const char* d : {"dev", "proc", "sys", "mnt"}) {
    ASSERT_EQ(entries.count(d), 1u) << d;
    EXPECT_EQ(entries[d].type, static_cast<mode_t>(AE_IFDIR)) << d;
    EXPECT_EQ(entries[d].perm, 0755u) << d;
  }
  for (const auto& [path, e] : entries) {
    EXPECT_EQ(e.uid, 0) << path;
    EXPECT_EQ(e.gid, 0) << path;
  }
  // A directory comes before what is in it (the kernel creates in order).
  EXPECT_LT(Position(order, "dev"), Position(order, "dev/console"));
}

// A modular kernel's modules go in by load position, after their
// directories; another module set gives another cached archive.
TEST(BuildInitramfs, ModulesGoInByLoadPosition) {
  TempDir dir;
  std::string init = dir.path() + "/agentd";
  ASSERT_TRUE(WriteFileAtomic(init, FakeElf("a"), 0700).ok());
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/virtio_ring.ko", "ring", 0600).ok());
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/virtio.ko", "virtio", 0600).ok());
  std::string out = dir.path() + "/initramfs.cpio";
  auto st = BuildInitramfs(init, out, {dir.path() + "/virtio_ring.ko", dir.path() + "/virtio.ko"});
  ASSERT_TRUE(st.ok()) << st.error().message();
  std::vector<std::string> order;
  auto entries = ReadBack(out, nullptr, &order);
  ASSERT_EQ(entries.size(), 11u);
  EXPECT_EQ(entries["lib/modules/msb/000-virtio_ring.ko"].data, "ring");
  EXPECT_EQ(entries["lib/modules/msb/001-virtio.ko"].data, "virtio");
  EXPECT_EQ(entries["lib/modules/msb/001-virtio.ko"].perm, 0644u);
  EXPECT_EQ(entries["lib/modules/msb"].type, static_cast<mode_t>(AE_IFDIR));
  EXPECT_LT(Position(order, "lib"), Position(order, "lib/modules"));
  EXPECT_LT(Position(order, "lib/modules"), Position(order, "lib/modules/msb"));
  EXPECT_LT(Position(order, "lib/modules/msb"), Position(order, "lib/modules/msb/000-virtio_ring.ko"));

  auto missing = BuildInitramfs(init, out, {dir.path() + "/nope.ko"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find(dir.path() + "/nope.ko"), std::string::npos);

  ::setenv("MSB_HOME", dir.path().c_str(), 1);
  auto plain = CachedInitramfs(init);
  auto with = CachedInitramfs(init, {dir.path() + "/virtio.ko"});
  ::unsetenv("MSB_HOME");
  ASSERT_TRUE(plain.ok() && with.ok());
  EXPECT_NE(*plain, *with);
  EXPECT_EQ(ReadBack(*with, nullptr, nullptr)["lib/modules/msb/000-virtio.ko"].data, "virtio");
}

TEST(BuildInitramfs, IsDeterministicAndLeavesNoTemporaryFiles) {
  TempDir dir;
  std::string init = dir.path() + "/agentd";
  ASSERT_TRUE(WriteFileAtomic(init, FakeElf("b"), 0755).ok());
  ASSERT_TRUE(BuildInitramfs(init, dir.path() + "/one.cpio").ok());
  ASSERT_TRUE(BuildInitramfs(init, dir.path() + "/two.cpio").ok());
  auto one = ReadFile(dir.path() + "/one.cpio");
  auto two = ReadFile(dir.path() + "/two.cpio");
  ASSERT_TRUE(one.ok() && two.ok());
  EXPECT_EQ(*one, *two);
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
    ++files;
  }
  EXPECT_EQ(files, 3);
}

TEST(BuildInitramfs, RejectsANonElfInit) {
  TempDir dir;
  std::string init = dir.path() + "/script";
  ASSERT_TRUE(WriteFileAtomic(init, "#!/bin/sh\necho hi\n", 0755).ok());
  auto st = BuildInitramfs(init, dir.path() + "/out.cpio");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("not an ELF"), std::string::npos) << st.error().message();
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/out.cpio"));
}

TEST(BuildInitramfs, MissingInitIsAnError) {
  TempDir dir;
  auto st = BuildInitramfs(dir.path() + "/nope", dir.path() + "/out.cpio");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find(dir.path() + "/nope"), std::string::npos);
}

TEST(CachedInitramfs, RebuildsOnlyWhenTheInitChanges) {
  TempDir dir;
  const char* old_home = std::getenv("MSB_HOME");
  std::optional<std::string> saved = old_home ? std::optional<std::string>(old_home) : std::nullopt;
  ::setenv("MSB_HOME", dir.path().c_str(), 1);

  std::string init = dir.path() + "/agentd";
  ASSERT_TRUE(WriteFileAtomic(init, FakeElf("v1"), 0755).ok());
  auto first = CachedInitramfs(init);
  ASSERT_TRUE(first.ok()) << first.error().message();
  EXPECT_EQ(first->rfind(dir.path() + "/initramfs/", 0), 0u) << *first;
  struct stat st1;
  ASSERT_EQ(::stat(first->c_str(), &st1), 0);

  auto again = CachedInitramfs(init);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *first);
  struct stat st2;
  ASSERT_EQ(::stat(again->c_str(), &st2), 0);
  EXPECT_EQ(st1.st_ino, st2.st_ino);  // not rewritten

  ASSERT_TRUE(WriteFileAtomic(init, FakeElf("v2"), 0755).ok());
  auto changed = CachedInitramfs(init);
  ASSERT_TRUE(changed.ok());
  EXPECT_NE(*changed, *first);
  EXPECT_EQ(ReadBack(*changed, nullptr, nullptr)["init"].data, FakeElf("v2"));

  if (saved) {
    ::setenv("MSB_HOME", saved->c_str(), 1);
  } else {
    ::unsetenv("MSB_HOME");
  }
}

}  // namespace
}  // namespace msb::vm
