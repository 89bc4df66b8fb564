// libFuzzer target for the host side of `msb cp SANDBOX:/top DST`: the input
// is the tar stream the guest sends, unpacked by UnpackGuestTar
// (orchestrator/host_tar.h) into a fresh directory, renaming the top-level
// entry "top" to "copy" (or keeping it, for inputs of even length), with the
// user's umask 022 under msb's private process umask. The work directory W
// holds root/dest (the destination; root/again during the round trip below) and sentinel/victim, a file next to it
// that the seeds aim at through symlinks, "..", absolute names and hard links.
// Oracles: nothing is created, changed or linked outside dest (W holds only
// root and sentinel, root only dest, sentinel only victim with its bytes,
// mode and one link); in dest, walked without following symlinks, everything
// is under the renamed top, only files, directories and symlinks, no
// set-id/sticky bit or mode the umask takes away, no hard link, no file whose
// real path leaves dest, no more file bytes than the bound; the working
// directory is restored. Then the tree is packed again (PackHostPath) and
// unpacked into a second directory, which must hold the same tree.
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <string_view>

#include "common/fd.h"
#include "common/io.h"
#include "fuzz/work_dir.h"
#include "orchestrator/host_tar.h"

namespace {

using msb::UniqueFd;

constexpr uint64_t kMaxBytes = 64 << 10;
constexpr mode_t kUserUmask = 022;
constexpr std::string_view kVictim = "victim\n";

[[noreturn]] void Die(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "cp_tar_fuzz: %s\n%s\n", what, detail.c_str());
  std::abort();
}

void Check(bool cond, const char* what, const std::string& detail = {}) {
  if (!cond) Die(what, detail);
}

std::string g_work;  // W

using msb::fuzz::RemoveTree;

// The names in a directory, sorted.
std::string Listing(const std::string& dir) {
  std::map<std::string, int> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names[n] = 1;
    }
    ::closedir(d);
  }
  std::string out;
  for (const auto& [n, _] : names) out += n + "\n";
  return out;
}

// One line per entry under dir, walked without following symlinks: relative
// path, type, mode, and contents or link target. Checks the per-entry
// oracles on the way.
struct Walk {
  std::string root;       // dest, as given
  std::string real_root;  // its real path
  std::string top;        // the only name allowed at the top
  std::map<std::string, std::string> entries;
  uint64_t file_bytes = 0;
};
Walk* g_walk = nullptr;

int VisitEntry(const char* path, const struct stat* st, int flag, struct FTW*) {
  Walk& w = *g_walk;
  std::string rel = std::string(path).substr(w.root.size());
  if (rel.empty()) return 0;
  rel.erase(0, 1);  // the '/'
  std::string first = rel.substr(0, rel.find('/'));
  Check(first == w.top, "an entry outside the renamed top-level entry", rel);
  Check(flag != FTW_NS && flag != FTW_DNR, "an unreadable entry", rel);
  std::string line;
  if (S_ISLNK(st->st_mode)) {
    char target[PATH_MAX];
    ssize_t n = ::readlink(path, target, sizeof target);
    Check(n >= 0, "readlink failed", rel);
    line = "l " + std::string(target, static_cast<size_t>(n));
  } else {
    Check(S_ISREG(st->st_mode) || S_ISDIR(st->st_mode), "neither file, directory nor symlink", rel);
    Check((st->st_mode & 07000) == 0, "a set-id or sticky bit", rel);
    Check((st->st_mode & kUserUmask) == 0, "a mode bit the user's umask takes away", rel);
    char real[PATH_MAX];
    Check(::realpath(path, real) != nullptr, "realpath failed", rel);
    std::string r = real;
    Check(r == w.real_root || r.rfind(w.real_root + "/", 0) == 0, "an entry whose real path leaves dest",
          rel + " -> " + r);
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", st->st_mode & 0777);
    if (S_ISDIR(st->st_mode)) {
      line = std::string("d ") + mode;
    } else {
      Check(st->st_nlink == 1, "a file with another link", rel);
      w.file_bytes += static_cast<uint64_t>(st->st_size);
      auto bytes = msb::ReadFile(path);
      Check(bytes.ok(), "cannot read an extracted file", rel);
      line = std::string("f ") + mode + " " + *bytes;
    }
  }
  w.entries[rel] = line;
  return 0;
}

Walk WalkTree(const std::string& dest, const std::string& top) {
  Walk w;
  w.root = dest;
  char real[PATH_MAX];
  Check(::realpath(dest.c_str(), real) != nullptr, "realpath of dest failed");
  w.real_root = real;
  w.top = top;
  g_walk = &w;
  Check(::nftw(dest.c_str(), VisitEntry, 16, FTW_PHYS) == 0, "walking dest failed");
  g_walk = nullptr;
  return w;
}

// root_listing: what W/root holds (dest, and again during the round trip).
void CheckOutside(const std::string& root_listing) {
  Check(Listing(g_work) == "root\nsentinel\n", "something was created next to dest", Listing(g_work));
  Check(Listing(g_work + "/root") == root_listing, "something was created next to dest",
        Listing(g_work + "/root"));
  Check(Listing(g_work + "/sentinel") == "victim\n", "something was created in the sentinel",
        Listing(g_work + "/sentinel"));
  struct stat st;
  std::string victim = g_work + "/sentinel/victim";
  Check(::lstat(victim.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1 &&
            (st.st_mode & 07777) == 0644,
        "the sentinel file was replaced, linked or chmodded");
  auto bytes = msb::ReadFile(victim);
  Check(bytes.ok() && *bytes == kVictim, "the sentinel file was overwritten");
}

UniqueFd Spool(std::string_view bytes) {
  UniqueFd fd(::memfd_create("cp_tar_fuzz", MFD_CLOEXEC));
  Check(static_cast<bool>(fd), "memfd_create failed");
  Check(msb::WriteAll(fd.get(), bytes).ok(), "writing the spool failed");
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  ::umask(msb::kPrivateUmask);  // as msb runs (cli/main.cc)
  g_work = msb::fuzz::MakeWorkDir("cp-tar");
  Check(::mkdir((g_work + "/root").c_str(), 0700) == 0 && ::mkdir((g_work + "/sentinel").c_str(), 0700) == 0,
        "mkdir failed");
  std::string victim = g_work + "/sentinel/victim";
  UniqueFd v(::open(victim.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  Check(static_cast<bool>(v) && msb::WriteAll(v.get(), kVictim).ok() && ::fchmod(v.get(), 0644) == 0,
        "cannot write the sentinel");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1 << 20)) return 0;
  const std::string top = size % 2 == 1 ? "copy" : "top";
  const std::string dest = g_work + "/root/dest";
  const std::string again = g_work + "/root/again";
  Check(::mkdir(dest.c_str(), 0700) == 0, "mkdir dest failed");
  char cwd_before[PATH_MAX];
  Check(::getcwd(cwd_before, sizeof cwd_before) != nullptr, "getcwd failed");

  UniqueFd spool = Spool(std::string_view(reinterpret_cast<const char*>(data), size));
  msb::Status st = msb::orchestrator::UnpackGuestTar(spool.get(), dest, "top", top, kMaxBytes, kUserUmask);
  if (!st.ok()) Check(!st.error().message().empty(), "an error without a message");

  char cwd_after[PATH_MAX];
  Check(::getcwd(cwd_after, sizeof cwd_after) != nullptr && std::strcmp(cwd_before, cwd_after) == 0,
        "the working directory was not restored");
  CheckOutside("dest\n");
  Walk first = WalkTree(dest, top);
  Check(first.file_bytes <= kMaxBytes, "more file bytes than the bound");

  // Round trip: what landed, packed as msb cp packs a host path and unpacked
  // again, is the same tree.
  if (st.ok() && !first.entries.empty()) {
    std::string packed;
    msb::Status pack = msb::orchestrator::PackHostPath(dest + "/" + top, "top", [&](std::string_view b) {
      packed.append(b);
      return msb::OkStatus();
    });
    Check(pack.ok(), "packing the extracted tree failed", pack.ok() ? "" : pack.error().message());
    Check(::mkdir(again.c_str(), 0700) == 0, "mkdir again failed");
    UniqueFd spool2 = Spool(packed);
    msb::Status st2 = msb::orchestrator::UnpackGuestTar(spool2.get(), again, "top", top, kMaxBytes, kUserUmask);
    Check(st2.ok(), "the packed tree does not unpack", st2.ok() ? "" : st2.error().message());
    CheckOutside("again\ndest\n");
    Walk second = WalkTree(again, top);
    if (second.entries != first.entries) {
      std::string diff;
      for (const auto& [k, v] : first.entries) {
        auto it = second.entries.find(k);
        if (it == second.entries.end() || it->second != v) diff += "first:  " + k + " " + v.substr(0, 80) + "\n";
      }
      for (const auto& [k, v] : second.entries) {
        auto it = first.entries.find(k);
        if (it == first.entries.end() || it->second != v) diff += "second: " + k + " " + v.substr(0, 80) + "\n";
      }
      Die("the tree changed through pack and unpack", diff);
    }
    RemoveTree(again);
  }
  RemoveTree(dest);
  return 0;
}
