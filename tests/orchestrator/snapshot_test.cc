// Tests of the snapshot bookkeeping without a VM (orchestrator/snapshot.h):
// the name rule, the digest, the layer list's bounds, the freeze timeout,
// `snapshot rm` refusing while a sandbox or another snapshot uses one, and
// excluding an `msb run` between resolving a snapshot and recording its
// sandbox.
#include "orchestrator/snapshot.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "agent/protocol.h"
#include "common/fd.h"
#include "common/io.h"

namespace msb::orchestrator {
namespace {

class SnapshotBookkeepingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-snapshot-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ::setenv("MSB_HOME", dir_.c_str(), 1);
  }
  void TearDown() override {
    ::unsetenv("MSB_HOME");
    std::filesystem::remove_all(dir_);
  }
  SnapshotRecord Record(const std::string& name, const std::string& digest, const std::string& parent) {
    SnapshotRecord r;
    r.name = name;
    r.digest = digest;
    r.parent_digest = parent;
    r.source = "_run/src";
    r.dir = SnapshotRoot() + "/" + name;
    r.lowers_json = nlohmann::json(std::vector<std::string>{SnapshotLayerPath(r.dir)}).dump();
    r.defaults_json = "{}";
    return r;
  }
  std::string dir_;
};

TEST_F(SnapshotBookkeepingTest, NamesFollowTheProjectNameRule) {
  EXPECT_TRUE(CheckSnapshotName("base-1").ok());
  EXPECT_TRUE(CheckSnapshotName("a").ok());
  for (const std::string& bad : std::vector<std::string>{"", "Bad", "-x", "a/b", "..", "a b", std::string(64, 'a')}) {
    auto st = CheckSnapshotName(bad);
    ASSERT_FALSE(st.ok()) << bad;
    EXPECT_NE(st.error().message().find("is not valid"), std::string::npos);
  }
}

TEST_F(SnapshotBookkeepingTest, DigestCoversParentAndLayer) {
  std::string d = SnapshotDigest("sha256:aa", "sha256:bb");
  EXPECT_EQ(d.rfind("sha256:", 0), 0u);
  EXPECT_EQ(d.size(), 71u);
  EXPECT_EQ(d, SnapshotDigest("sha256:aa", "sha256:bb"));
  EXPECT_NE(d, SnapshotDigest("sha256:ab", "sha256:bb"));
  EXPECT_NE(d, SnapshotDigest("sha256:aa", "sha256:bc"));
}

TEST_F(SnapshotBookkeepingTest, LayerListIsCheckedAndBounded) {
  SnapshotRecord r = Record("s", "sha256:1", "sha256:0");
  auto one = SnapshotLayers(r);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->size(), 1u);
  std::vector<std::string> many(agent::kMaxLowerLayers + 1, "/x");
  r.lowers_json = nlohmann::json(many).dump();
  EXPECT_FALSE(SnapshotLayers(r).ok());
  many.pop_back();
  r.lowers_json = nlohmann::json(many).dump();
  EXPECT_TRUE(SnapshotLayers(r).ok());
  for (const char* bad : {"[]", "{}", "[1]", "not json"}) {
    r.lowers_json = bad;
    EXPECT_FALSE(SnapshotLayers(r).ok()) << bad;
  }
}

TEST_F(SnapshotBookkeepingTest, RemoveIsRefusedWhileUsedThenRemovesTheDirectory) {
  auto store = Store::Open(Store::DefaultPath());
  ASSERT_TRUE(store.ok()) << store.error().message();
  SnapshotRecord base = Record("base", "sha256:b1", "sha256:img");
  SnapshotRecord child = Record("child", "sha256:c1", "sha256:b1");
  child.lowers_json = nlohmann::json(std::vector<std::string>{SnapshotLayerPath(base.dir),
                                                              SnapshotLayerPath(child.dir)}).dump();
  // Same bytes, another name: neither its users nor base's by digest.
  SnapshotRecord twin = Record("twin", "sha256:b1", "sha256:img");
  ASSERT_TRUE(store->InsertSnapshot(twin).ok());
  ASSERT_TRUE(store->InsertSnapshot(base).ok());
  ASSERT_TRUE(store->InsertSnapshot(child).ok());
  ASSERT_TRUE(MakeDirs(base.dir, 0700).ok());
  ASSERT_TRUE(WriteFileAtomic(SnapshotLayerPath(base.dir), "layer", 0444).ok());
  SandboxRecord sb;
  sb.project = Store::kRunProject;
  sb.name = "user";
  sb.image_ref = "snapshot:base";
  sb.image_digest = "sha256:b1";
  ASSERT_TRUE(store->UpsertSandbox(sb).ok());

  auto users = SnapshotUsers(*store, base);
  ASSERT_TRUE(users.ok());
  EXPECT_EQ(*users, (std::vector<std::string>{"sandbox _run/user (created)", "snapshot child"}));
  auto twin_users = SnapshotUsers(*store, twin);
  ASSERT_TRUE(twin_users.ok());
  EXPECT_TRUE(twin_users->empty());
  ASSERT_TRUE(RemoveSnapshot(*store, "twin").ok());
  auto refused = RemoveSnapshot(*store, "base");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("sandbox _run/user"), std::string::npos);
  EXPECT_NE(refused.error().message().find("snapshot child"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(SnapshotLayerPath(base.dir)));

  ASSERT_TRUE(store->DeleteSandbox(Store::kRunProject, "user").ok());
  ASSERT_TRUE(RemoveSnapshot(*store, "child").ok());
  ASSERT_TRUE(RemoveSnapshot(*store, "base").ok());
  EXPECT_FALSE(std::filesystem::exists(base.dir));
  auto gone = RemoveSnapshot(*store, "base");
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code(), ErrorCode::kNotFound);
}

// The freeze lasts the floor plus the per-GiB allowance, rounded up to the
// millisecond, and never more than agentd accepts.
TEST(SnapshotFreezeTest, ScalesWithTheAllocatedSizeUpToTheCap) {
  constexpr uint64_t kGiB = uint64_t{1} << 30;
  EXPECT_EQ(SnapshotFreezeMs(0), kSnapshotFreezeFloorMs);
  EXPECT_EQ(SnapshotFreezeMs(1), kSnapshotFreezeFloorMs + 1);
  EXPECT_EQ(SnapshotFreezeMs(kGiB / 2), kSnapshotFreezeFloorMs + kSnapshotFreezeMsPerGiB / 2);
  EXPECT_EQ(SnapshotFreezeMs(kGiB), kSnapshotFreezeFloorMs + kSnapshotFreezeMsPerGiB);
  EXPECT_EQ(SnapshotFreezeMs(10 * kGiB), kSnapshotFreezeFloorMs + 10 * kSnapshotFreezeMsPerGiB);
  // The documented numbers: 30 s, 20 s per GiB, 10 min at 28.5 GiB.
  EXPECT_EQ(SnapshotFreezeMs(0), 30000);
  EXPECT_EQ(SnapshotFreezeMs(4 * kGiB), 110000);
  EXPECT_EQ(SnapshotFreezeMs(28 * kGiB), 590000);
  EXPECT_EQ(SnapshotFreezeMs(28 * kGiB + kGiB / 2), agent::kMaxFreezeMs);
  EXPECT_EQ(agent::kMaxFreezeMs, 600000);
  for (uint64_t big : {29 * kGiB, 1000 * kGiB, UINT64_MAX / kSnapshotFreezeMsPerGiB + 1, UINT64_MAX}) {
    EXPECT_EQ(SnapshotFreezeMs(big), agent::kMaxFreezeMs) << big;
  }
  // Never shorter for more bytes, and always what agentd accepts.
  int last = 0;
  for (uint64_t bytes = 0; bytes < 40 * kGiB; bytes += kGiB / 7 + 12345) {
    int ms = SnapshotFreezeMs(bytes);
    EXPECT_GE(ms, last) << bytes;
    EXPECT_GE(ms, 1);
    EXPECT_LE(ms, agent::kMaxFreezeMs);
    last = ms;
  }
}

// Whether a thread of this process waits for a flock(2) now (/proc/locks
// lists a waiter as "N: -> FLOCK ADVISORY WRITE PID ...").
bool ThisProcessWaitsForAFlock() {
  std::ifstream in("/proc/locks");
  const std::string pid = std::to_string(::getpid());
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::string index, arrow, type, advisory, mode, owner;
    words >> index >> arrow >> type >> advisory >> mode >> owner;
    if (arrow == "->" && type == "FLOCK" && mode == "WRITE" && owner == pid) return true;
  }
  return false;
}

// `msb run snapshot:NAME` between resolving the snapshot and recording its
// sandbox (ResolveRunImage's hold, then the record): a `snapshot rm`
// meanwhile waits for the hold, then finds the sandbox and refuses. Without
// the hold it would remove the layers the run is about to boot. A second run
// of the snapshot is not held up by the first.
TEST_F(SnapshotBookkeepingTest, RemoveWaitsForARunBetweenResolvingAndRecording) {
  auto store = Store::Open(Store::DefaultPath());
  ASSERT_TRUE(store.ok()) << store.error().message();
  SnapshotRecord base = Record("base", "sha256:b1", "sha256:img");
  base.base_disk = dir_ + "/base.ext4";
  ASSERT_TRUE(WriteFileAtomic(base.base_disk, "disk", 0444).ok());
  ASSERT_TRUE(MakeDirs(base.dir, 0700).ok());
  ASSERT_TRUE(WriteFileAtomic(SnapshotLayerPath(base.dir), "layer", 0444).ok());
  ASSERT_TRUE(store->InsertSnapshot(base).ok());
  schema::Image image;
  image.kind = schema::Image::Kind::kSnapshot;
  image.path = "base";
  image.reference = "snapshot:base";

  auto run = ResolveRunImage(*store, image, ImageOptions{});
  ASSERT_TRUE(run.ok()) << run.error().message();
  EXPECT_EQ(run->image.lower_disks, std::vector<std::string>{SnapshotLayerPath(base.dir)});
  EXPECT_TRUE(run->hold.has_value());

  // Another run resolves it meanwhile: runs share the hold.
  {
    int resolved[2];
    ASSERT_EQ(::pipe2(resolved, O_CLOEXEC), 0);
    UniqueFd resolved_rd(resolved[0]), resolved_wr(resolved[1]);
    std::thread second([&] {
      auto other = Store::Open(Store::DefaultPath());
      auto again = other.ok() ? ResolveRunImage(*other, image, ImageOptions{}) : other.error();
      char c = again.ok() ? 'y' : 'n';
      (void)!::write(resolved_wr.get(), &c, 1);
    });
    pollfd p{resolved_rd.get(), POLLIN, 0};
    int ready = ::poll(&p, 1, 20000);
    EXPECT_EQ(ready, 1) << "a second run waited for the first one's hold";
    if (ready != 1) run->hold.reset();  // let it finish, to join it
    second.join();
    char c = 0;
    EXPECT_EQ(::read(resolved_rd.get(), &c, 1), 1);
    EXPECT_EQ(c, 'y');
  }

  // snapshot rm, on its own store connection, while the run holds.
  int done[2];
  ASSERT_EQ(::pipe2(done, O_CLOEXEC), 0);
  UniqueFd done_rd(done[0]), done_wr(done[1]);
  Status removed = OkStatus();
  std::thread rm([&] {
    auto other = Store::Open(Store::DefaultPath());
    removed = other.ok() ? RemoveSnapshot(*other, "base") : Status(other.error());
    (void)!::write(done_wr.get(), "x", 1);
  });
  // Until it finished (it took no notice of the run) or waits for a lock.
  bool finished = false, waiting = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!finished && !waiting && std::chrono::steady_clock::now() < deadline) {
    pollfd p{done_rd.get(), POLLIN, 0};
    finished = ::poll(&p, 1, 10) == 1;
    waiting = !finished && ThisProcessWaitsForAFlock();
  }
  EXPECT_TRUE(waiting) << (finished ? "snapshot rm did not wait for the run's hold"
                                    : "snapshot rm neither finished nor waited for a lock in 20 s");
  // The run records its sandbox, then drops the hold.
  SandboxRecord sb;
  sb.project = Store::kRunProject;
  sb.name = "run-1";
  sb.image_ref = run->image.reference;
  sb.image_digest = run->image.digest;
  ASSERT_TRUE(store->UpsertSandbox(sb).ok());
  run->hold.reset();
  rm.join();
  ASSERT_FALSE(removed.ok()) << "snapshot rm removed a snapshot a run was recording a sandbox on";
  EXPECT_EQ(removed.error().code(), ErrorCode::kState);
  EXPECT_NE(removed.error().message().find("sandbox _run/run-1"), std::string::npos) << removed.error().message();
  EXPECT_TRUE(std::filesystem::exists(SnapshotLayerPath(base.dir)));

  // Once the sandbox is gone the removal goes through, and a run after it
  // finds no snapshot.
  ASSERT_TRUE(store->DeleteSandbox(Store::kRunProject, "run-1").ok());
  ASSERT_TRUE(RemoveSnapshot(*store, "base").ok());
  auto late = ResolveRunImage(*store, image, ImageOptions{});
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.error().code(), ErrorCode::kNotFound);
}

TEST_F(SnapshotBookkeepingTest, ResolvingAMissingSnapshotSaysHowToMakeOne) {
  auto store = Store::Open(Store::DefaultPath());
  ASSERT_TRUE(store.ok());
  auto r = ResolveSnapshotImage(*store, "nope");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("msb snapshot create SANDBOX nope"), std::string::npos);
  // A record whose layer file is gone is refused before any VM starts.
  ASSERT_TRUE(store->InsertSnapshot(Record("lost", "sha256:l", "sha256:0")).ok());
  auto lost = ResolveSnapshotImage(*store, "lost");
  ASSERT_FALSE(lost.ok());
  EXPECT_NE(lost.error().message().find("is missing"), std::string::npos);
}

}  // namespace
}  // namespace msb::orchestrator
