// libFuzzer target for `msb load`: the input is a docker-archive or
// oci-archive (plain or compressed: whatever libarchive reads), written to a
// file and loaded by LoadImageArchive (image/image_archive.h) into a fresh
// image store. Files larger than kMaxFile cannot be written (RLIMIT_FSIZE,
// SIGXFSZ ignored), so a decompression bomb meets the store's write error
// path instead of filling the disk. Oracles: every published blob's bytes
// hash to its digest, no unnamed blob is left in ingest/, nothing
// is written outside the store, and every image the loader reports reads back
// from the store (ReadImage) with the config it named and its manifest and
// config published. Not a test of which archives are accepted.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <set>
#include <string>
#include <string_view>

#include "common/io.h"
#include "common/sha256.h"
#include "fuzz/work_dir.h"
#include "image/image_archive.h"
#include "image/image_store.h"

namespace {

constexpr rlim_t kMaxFile = 16 << 20;

std::string g_work;

[[noreturn]] void Die(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "image_archive_fuzz: %s\n%s\n", what, detail.c_str());
  std::abort();
}

void Check(bool cond, const char* what, const std::string& detail = {}) {
  if (!cond) Die(what, detail);
}

std::set<std::string> Names(const std::string& dir) {
  std::set<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") out.insert(n);
    }
    ::closedir(d);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_work = msb::fuzz::MakeWorkDir("image-archive");
  ::signal(SIGXFSZ, SIG_IGN);
  rlimit lim{kMaxFile, kMaxFile};
  Check(::setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit failed");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace msb::image;
  const std::string input = g_work + "/input.tar";
  const std::string root = g_work + "/store";
  {
    msb::UniqueFd fd(::open(input.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    Check(fd && msb::WriteAll(fd.get(), std::string_view(reinterpret_cast<const char*>(data), size)).ok(),
          "cannot write the input");
  }
  auto store = ImageStore::Open(root);
  Check(store.ok(), "cannot open the store", store.ok() ? "" : store.error().message());
  auto loaded = LoadImageArchive(input, *store);
  if (std::getenv("MSB_FUZZ_VERBOSE") != nullptr) {
    std::fprintf(stderr, "%s\n", loaded.ok() ? "loaded" : loaded.error().message().c_str());
  }
  if (!loaded.ok()) {
    Check(!loaded.error().message().empty(), "an error without a message");
  } else {
    for (const LoadedImage& img : *loaded) {
      Check(store->HasBlob(img.manifest_digest), "a loaded manifest is not in the store", img.manifest_digest);
      Check(store->HasBlob(img.config_digest), "a loaded config is not in the store", img.config_digest);
      Check(img.size_bytes >= 0, "a negative image size");
      auto read = store->ReadImage(img.manifest_digest);
      Check(read.ok(), "a loaded image does not read back", read.ok() ? "" : read.error().message());
      Check(read->config_digest == img.config_digest, "the image reads back with another config");
    }
  }

  // The store holds only verified blobs, under their digests.
  auto blobs = store->ListBlobs();
  Check(blobs.ok(), "cannot list the blobs", blobs.ok() ? "" : blobs.error().message());
  for (const std::string& digest : *blobs) {
    auto hex = msb::Sha256File(store->BlobPath(digest));
    Check(hex.ok() && "sha256:" + *hex == digest, "a blob stored under another digest", digest);
  }
  // A blob of unknown digest is discarded when not committed; the prefix of
  // a named one stays to be resumed (image/image_store.h), as do locks.
  for (const std::string& n : Names(root + "/ingest")) {
    Check(n.rfind("new-", 0) != 0, "an uncommitted blob of unknown digest was left in ingest/", n);
  }
  Check(Names(g_work) == std::set<std::string>{"input.tar", "store"}, "a file written outside the store");
  msb::fuzz::RemoveTree(root);
  return 0;
}
