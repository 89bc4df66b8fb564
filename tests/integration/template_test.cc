// Booted templates (vm/template.h) on real microVMs under TCG: what a
// restored guest must not share with its template's other guests, which
// configs get their own template, and the fallbacks to a cold boot.
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/io.h"
#include "common/sha256.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;

class TemplateTest : public MsbTest {
 protected:
  // The template keys under $MSB_HOME/templates (build directories excluded).
  std::set<std::string> Keys() const {
    std::set<std::string> keys;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(Home() + "/templates", ec)) {
      std::string name = e.path().filename().string();
      if (e.is_directory() && name[0] != '.') keys.insert(name);
    }
    return keys;
  }

  // supervisor.log of the sandbox called name ("" when there is none).
  std::string SupervisorLog(const std::string& name) const {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(Home() + "/sandboxes", ec)) {
      auto spec = ReadFile(e.path().string() + "/spec.json");
      if (!spec.ok()) continue;
      auto j = nlohmann::json::parse(*spec, nullptr, false);
      if (!j.is_object() || j.value("name", "") != name) continue;
      auto log = ReadFile(e.path().string() + "/supervisor.log");
      return log.ok() ? *log : "";
    }
    return "";
  }

  // Runs `script` in a new kept sandbox `name`; its output.
  MsbResult RunKept(const std::string& name, const std::string& script,
                    std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"run", "--keep", "--name", name};
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(), {Rootfs(), "--", "sh", "-c", script});
    return Msb(args);
  }

  void Remove(const std::vector<std::string>& names) {
    for (const auto& n : names) EXPECT_EQ(Msb({"rm", n}).code, 0) << n;
  }

  static int64_t Now() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch()).count();
  }
};

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// Two sandboxes restored from one template: their own boot_id, random
// output and clock, and their own disks (a named volume written by the first
// is read by the second).
TEST_F(TemplateTest, TwoSandboxesFromOneTemplateDiffer) {
  const std::string probe =
      "cat /proc/sys/kernel/random/boot_id; head -c16 /dev/urandom | od -An -tx1 | tr -d ' '; date +%s";
  // One after the other: the named volume's disk is locked while a sandbox uses it.
  int64_t before = Now();
  auto a = RunKept("a", probe + "; echo from-a > /data/f", {"-v", "data:/data"});
  int64_t after_a = Now();
  std::string log_a = SupervisorLog("a");
  Remove({"a"});
  int64_t before_b = Now();
  auto b = RunKept("b", probe + "; cat /data/f", {"-v", "data:/data"});
  int64_t after = Now();
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(b.code, 0) << b.err;
  auto la = Lines(a.out), lb = Lines(b.out);
  ASSERT_EQ(la.size(), 3u) << a.out;
  ASSERT_EQ(lb.size(), 4u) << b.out;
  EXPECT_EQ(la[0].size(), 36u) << a.out;
  EXPECT_NE(la[0], lb[0]) << "boot_id";
  EXPECT_EQ(la[1].size(), 32u) << a.out;
  EXPECT_NE(la[1], lb[1]) << "random output";
  // The guest's clock is the host's (to the second, with a margin for the
  // time the command took to start).
  int64_t ta = std::stoll(la[2]), tb = std::stoll(lb[2]);
  EXPECT_GE(ta, before - 3);
  EXPECT_LE(ta, after_a + 3);
  EXPECT_GE(tb, before_b - 3);
  EXPECT_LE(tb, after + 3);
  EXPECT_EQ(lb[3], "from-a");
  // One template, both restored from it; the first start built it.
  EXPECT_EQ(Keys().size(), 1u);
  std::string log_b = SupervisorLog("b");
  EXPECT_THAT(log_a, HasSubstr("(built for this start)"));
  EXPECT_THAT(log_a, HasSubstr("restored from booted template"));
  EXPECT_THAT(log_b, HasSubstr("restored from booted template"));
  EXPECT_EQ(log_b.find("built for this start"), std::string::npos) << log_b;
  Remove({"b"});
}

// Memory shapes the VM before its boot message: another size, another key.
TEST_F(TemplateTest, OtherMemoryGetsItsOwnTemplate) {
  auto a = RunKept("a", "echo a");
  ASSERT_EQ(a.code, 0) << a.err;
  auto keys = Keys();
  ASSERT_EQ(keys.size(), 1u);
  auto b = RunKept("b", "grep MemTotal /proc/meminfo", {"-m", "384M"});
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(Keys().size(), 2u);
  EXPECT_THAT(SupervisorLog("b"), HasSubstr("(built for this start)"));
  EXPECT_THAT(SupervisorLog("b"), HasSubstr("restored from booted template"));
  // The guest has the memory it asked for, not the first template's.
  auto kb = Lines(b.out);
  ASSERT_FALSE(kb.empty());
  std::istringstream in(kb[0]);
  std::string label;
  int64_t total_kib = 0;
  in >> label >> total_kib;
  EXPECT_GT(total_kib, 300 * 1024) << b.out;
  EXPECT_LT(total_kib, 384 * 1024) << b.out;
  Remove({"a", "b"});
}

// A template whose file changed is found by its identity and removed; one
// whose recorded identity was made to match but that QEMU cannot load fails
// the restore: both boot cold, and say why in the supervisor log.
TEST_F(TemplateTest, CorruptTemplateFallsBackToColdBoot) {
  ASSERT_EQ(RunKept("a", "true").code, 0);
  auto keys = Keys();
  ASSERT_EQ(keys.size(), 1u);
  const std::string dir = Home() + "/templates/" + *keys.begin();
  auto state = ReadFile(dir + "/state");
  ASSERT_TRUE(state.ok());
  ASSERT_GT(state->size(), 4096u);

  std::string flipped = *state;
  flipped[flipped.size() / 2] ^= 0x5a;
  ASSERT_TRUE(WriteFileAtomic(dir + "/state", flipped, 0600).ok());
  auto b = RunKept("b", "echo cold-b");
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(b.out, "cold-b\n");
  std::string log_b = SupervisorLog("b");
  EXPECT_THAT(log_b, HasSubstr("is corrupt"));
  EXPECT_THAT(log_b, HasSubstr("cold boot"));
  EXPECT_EQ(log_b.find("restored from booted template"), std::string::npos) << log_b;
  EXPECT_TRUE(Keys().empty());

  // A new template, then a stream QEMU cannot load behind a matching checksum.
  ASSERT_EQ(RunKept("c", "true").code, 0);
  ASSERT_EQ(Keys(), keys);
  auto fresh = ReadFile(dir + "/state");
  ASSERT_TRUE(fresh.ok());
  std::string cut = fresh->substr(0, fresh->size() / 2);
  ASSERT_TRUE(WriteFileAtomic(dir + "/state", cut, 0600).ok());
  auto meta = nlohmann::json::parse(*ReadFile(dir + "/meta.json"));
  struct stat st{};
  ASSERT_EQ(::stat((dir + "/state").c_str(), &st), 0);
  auto ns = [](const timespec& t) { return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec; };
  meta["sha256"] = Sha256Hex(cut);
  meta["size"] = cut.size();
  meta["file"] = {{"dev", static_cast<uint64_t>(st.st_dev)}, {"ino", static_cast<uint64_t>(st.st_ino)},
                  {"size", static_cast<int64_t>(st.st_size)}, {"mtime_ns", ns(st.st_mtim)},
                  {"ctime_ns", ns(st.st_ctim)}};
  ASSERT_TRUE(WriteFileAtomic(dir + "/meta.json", meta.dump(), 0600).ok());
  auto d = RunKept("d", "echo cold-d");
  ASSERT_EQ(d.code, 0) << d.err;
  EXPECT_EQ(d.out, "cold-d\n");
  std::string log_d = SupervisorLog("d");
  EXPECT_THAT(log_d, HasSubstr("did not restore"));
  EXPECT_THAT(log_d, HasSubstr("falling back to a cold boot"));
  EXPECT_TRUE(Keys().empty()) << "a stream QEMU could not load is removed";
  Remove({"a", "b", "c", "d"});
}

// A restored guest that is not ready within the restore timeout: the
// supervisor kills its QEMU and boots cold, says why in its log, and keeps
// the template (its stream loaded; a slow restore says nothing against it),
// which the next start restores from. MSB_TEST_HOLD_RESTORED_BOOT makes the
// supervisor withhold the restored guest's hello and boot message, so it
// never gets ready, whatever the host's speed; MSB_RESTORE_TIMEOUT_MS
// shortens the 30 s wait (vm/supervisor.h kRestoreTimeoutMs).
TEST_F(TemplateTest, RestoreNotReadyInTimeFallsBackToColdBoot) {
  ASSERT_EQ(RunKept("a", "true").code, 0);
  auto keys = Keys();
  ASSERT_EQ(keys.size(), 1u);
  const std::string state = Home() + "/templates/" + *keys.begin() + "/state";
  auto stream = ReadFile(state);
  ASSERT_TRUE(stream.ok());
  Remove({"a"});
  ASSERT_TRUE(WaitNoProcess(Home(), 30));

  env_["MSB_TEST_HOLD_RESTORED_BOOT"] = "1";
  env_["MSB_RESTORE_TIMEOUT_MS"] = "3000";
  auto b = RunKept("b", "echo cold-b; cat /proc/sys/kernel/random/boot_id");
  env_.erase("MSB_TEST_HOLD_RESTORED_BOOT");
  env_.erase("MSB_RESTORE_TIMEOUT_MS");
  ASSERT_EQ(b.code, 0) << b.err;
  auto lines = Lines(b.out);
  ASSERT_EQ(lines.size(), 2u) << b.out;
  EXPECT_EQ(lines[0], "cold-b");
  std::string log_b = SupervisorLog("b");
  EXPECT_THAT(log_b, HasSubstr("restoring booted template " + *keys.begin()));
  EXPECT_THAT(log_b, HasSubstr("did not restore: the restored guest did not answer within 3000 ms; falling back to a cold boot"));
  EXPECT_THAT(log_b, HasSubstr("cold boot: a template did not restore earlier"));
  EXPECT_EQ(log_b.find("restored from booted template"), std::string::npos) << log_b;
  EXPECT_EQ(log_b.find("removed it"), std::string::npos) << log_b;

  // b runs on its cold-booted VM: one QEMU, not the restoring one.
  auto alive = Msb({"exec", "b", "--", "cat", "/proc/sys/kernel/random/boot_id"});
  EXPECT_EQ(alive.code, 0) << alive.err;
  EXPECT_EQ(alive.out, lines[1] + "\n");
  auto ps = nlohmann::json::parse(Msb({"ps", "--json"}).out, nullptr, false);
  ASSERT_TRUE(ps.is_array()) << ps;
  std::string state_b;
  for (const auto& e : ps) {
    if (e.value("name", "") == "b") state_b = e.value("state", "");
  }
  EXPECT_EQ(state_b, "running") << ps;
  EXPECT_EQ(MyQemus().size(), 1u);
  EXPECT_TRUE(Mine("-incoming").empty()) << "the restoring QEMU is left over";

  // The template is kept, unchanged, and the next start restores from it.
  EXPECT_EQ(Keys(), keys);
  auto kept = ReadFile(state);
  ASSERT_TRUE(kept.ok());
  EXPECT_TRUE(*kept == *stream) << "the template's stream changed";
  auto c = RunKept("c", "echo restored-c");
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_EQ(c.out, "restored-c\n");
  EXPECT_THAT(SupervisorLog("c"), HasSubstr("restored from booted template " + *keys.begin()));

  Remove({"b", "c"});
  EXPECT_TRUE(WaitNoProcess(Home(), 30));
  EXPECT_TRUE(MyQemus().empty());
}

TEST_F(TemplateTest, MsbBootColdMakesNoTemplate) {
  env_["MSB_BOOT"] = "cold";
  auto a = RunKept("a", "cat /proc/sys/kernel/random/boot_id");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out.size(), 37u) << a.out;
  EXPECT_TRUE(Keys().empty());
  EXPECT_THAT(SupervisorLog("a"), HasSubstr("cold boot: MSB_BOOT=cold"));
  Remove({"a"});
}

// QEMU 7.2 cannot migrate vhost-user-fs: a sandbox with a shared directory
// boots cold, makes no template, and says why.
TEST_F(TemplateTest, SharedDirectoriesBootCold) {
  const std::string dir = Home() + "/shared";
  ASSERT_TRUE(MakeDirs(dir).ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/from-host", "host data\n", 0644).ok());
  auto a = RunKept("a", "cat /mnt/s/from-host", {"-v", dir + ":/mnt/s"});
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out, "host data\n");
  EXPECT_TRUE(Keys().empty());
  EXPECT_THAT(SupervisorLog("a"), HasSubstr("cold boot: its shared directories are virtio-fs devices"));
  Remove({"a"});
}

// `msb template ls`, `rm` and `prune` through the binary: what ls says of a
// template, rm of an unknown key, and what prune removes (an invalid
// template, old build leftovers, a lock nobody holds, a template whose
// initramfs is not the file its key took any more) and keeps (a usable
// template, a build in progress).
TEST_F(TemplateTest, LsRmAndPruneThroughTheCli) {
  ASSERT_EQ(RunKept("a", "true").code, 0);
  ASSERT_EQ(Keys().size(), 1u);
  const std::string key = *Keys().begin();
  const std::string root = Home() + "/templates";

  auto ls = Msb({"template", "ls", "--json"});
  ASSERT_EQ(ls.code, 0) << ls.err;
  auto arr = nlohmann::json::parse(ls.out, nullptr, false);
  ASSERT_TRUE(arr.is_array() && arr.size() == 1u) << ls.out;
  EXPECT_EQ(arr[0]["key"], key);
  EXPECT_EQ(arr[0]["kind"], "sandbox");
  EXPECT_EQ(arr[0]["valid"], true);
  EXPECT_EQ(arr[0]["stale"], "");
  EXPECT_GT(arr[0]["size"].get<uint64_t>(), 0u);
  auto table = Msb({"template", "ls"});
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("FOR"));
  EXPECT_THAT(table.out, HasSubstr(key + "  sandbox"));

  auto unknown = Msb({"template", "rm", "0123456789abcdef0123456789abcdef"});
  EXPECT_NE(unknown.code, 0);
  EXPECT_THAT(unknown.err, HasSubstr("no template 0123456789abcdef0123456789abcdef"));

  // Leftovers: an invalid template, an old and a fresh build directory, a
  // lock of no template.
  const std::string invalid = root + "/ffffffffffffffffffffffffffffffff";
  ASSERT_TRUE(MakeDirs(invalid).ok());
  ASSERT_TRUE(WriteFileAtomic(invalid + "/meta.json", "{}", 0600).ok());
  ASSERT_TRUE(MakeDirs(root + "/.build-old").ok());
  ASSERT_TRUE(MakeDirs(root + "/.build-new").ok());
  const auto two_hours_ago = std::filesystem::file_time_type::clock::now() - std::chrono::hours(2);
  std::filesystem::last_write_time(root + "/.build-old", two_hours_ago);
  ASSERT_TRUE(WriteFileAtomic(root + "/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.lock", "", 0600).ok());
  auto pruned = Msb({"template", "prune"});
  ASSERT_EQ(pruned.code, 0) << pruned.err;
  EXPECT_THAT(pruned.out, HasSubstr("removed template ffffffffffffffffffffffffffffffff (invalid)"));
  EXPECT_FALSE(std::filesystem::exists(invalid));
  EXPECT_FALSE(std::filesystem::exists(root + "/.build-old"));
  EXPECT_TRUE(std::filesystem::exists(root + "/.build-new"));
  EXPECT_FALSE(std::filesystem::exists(root + "/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.lock"));
  EXPECT_EQ(Keys(), std::set<std::string>{key});

  // A newer initramfs than the one the key took: no start has that key any
  // more, so prune removes it.
  auto meta = nlohmann::json::parse(*ReadFile(root + "/" + key + "/meta.json"));
  std::string initramfs;
  for (const auto& f : meta["files"])
    if (f["name"] == "initramfs") initramfs = f["path"];
  ASSERT_FALSE(initramfs.empty()) << meta.dump();
  std::filesystem::last_write_time(initramfs, std::filesystem::file_time_type::clock::now() + std::chrono::seconds(5));
  ls = Msb({"template", "ls", "--json"});
  arr = nlohmann::json::parse(ls.out, nullptr, false);
  ASSERT_TRUE(arr.is_array() && arr.size() == 1u) << ls.out;
  EXPECT_EQ(arr[0]["stale"], "its initramfs changed");
  pruned = Msb({"template", "prune"});
  ASSERT_EQ(pruned.code, 0) << pruned.err;
  EXPECT_THAT(pruned.out, HasSubstr("removed template " + key + " (its initramfs changed)"));
  EXPECT_TRUE(Keys().empty());

  // The next start makes a template of the new key; rm removes it.
  ASSERT_EQ(RunKept("b", "true").code, 0);
  ASSERT_EQ(Keys().size(), 1u);
  const std::string key2 = *Keys().begin();
  EXPECT_NE(key2, key);
  auto rm = Msb({"template", "rm", key2});
  ASSERT_EQ(rm.code, 0) << rm.err;
  EXPECT_THAT(rm.out, HasSubstr("removed template " + key2));
  EXPECT_TRUE(Keys().empty());
  Remove({"a", "b"});
}

}  // namespace
}  // namespace msb::testing
