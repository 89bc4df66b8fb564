// msb run / exec / cp / logs / ps / stop / rm on real microVMs under TCG.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>

#include <filesystem>
#include <fstream>
#include <set>

#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"
#include "common/sha256.h"
#include <nlohmann/json.hpp>
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;

class RunTest : public MsbTest {};

TEST_F(RunTest, OutputStreamsAndExitCode) {
  auto r = Msb({"run", Rootfs(), "--", "sh", "-c", "echo out-line; echo err-line >&2; exit 7"});
  EXPECT_EQ(r.code, 7) << r.err;
  EXPECT_EQ(r.out, "out-line\n");
  EXPECT_THAT(r.err, HasSubstr("err-line"));
  // Removed afterwards: nothing listed, nothing running.
  auto ps = Msb({"ps"});
  EXPECT_EQ(ps.out.find("run-"), std::string::npos) << ps.out;
  EXPECT_TRUE(WaitNoProcess(Home(), 10));
}

TEST_F(RunTest, StdinIsForwardedWithInteractive) {
  std::string input;
  for (int i = 0; i < 2000; ++i) input += "line " + std::to_string(i) + "\n";
  auto r = Msb({"run", "-i", Rootfs(), "--", "sh", "-c", "cat; echo done"}, input);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, input + "done\n");
}

TEST_F(RunTest, MissingCommandExits127WithTheGuestMessage) {
  auto r = Msb({"run", Rootfs(), "--", "no-such-command"});
  EXPECT_EQ(r.code, 127);
  EXPECT_THAT(r.err, HasSubstr("no-such-command"));
  r = Msb({"run", Rootfs(), "--", "/no/such"});
  EXPECT_EQ(r.code, 127);
  EXPECT_THAT(r.err, HasSubstr("/no/such: command not found"));
}

// docker's exit statuses: 126 for a command that exists but cannot be run;
// the workload's own status passes unchanged, 125 included (which therefore
// looks like msb's own failure: docker has the same property).
TEST_F(RunTest, ExitStatusesAreDockers) {
  auto r = Msb({"run", Rootfs(), "/etc/passwd"});
  EXPECT_EQ(r.code, 126) << r.err;
  EXPECT_THAT(r.err, HasSubstr("/etc/passwd: Permission denied"));
  r = Msb({"run", Rootfs(), "sh", "-c", "echo ran; exit 125"});
  EXPECT_EQ(r.code, 125) << r.err;
  EXPECT_EQ(r.out, "ran\n");
  // A missing image is msb's failure: 125, and nothing was started.
  r = Msb({"run", Home() + "/no-such-image", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_THAT(r.err, HasSubstr("no-such-image"));
  EXPECT_TRUE(MyQemus().empty());
}

// -d keeps the sandbox running its command as the workload; exec takes the
// command without --; -v shares a host directory read-write or read-only and
// mounts a named volume that outlives the sandbox; msb rm cleans up.
TEST_F(RunTest, DetachedRunWithVolumesThenExecAndRm) {
  const std::string rw = Home() + "/shared-rw", ro = Home() + "/shared-ro";
  ASSERT_TRUE(MakeDirs(rw).ok());
  ASSERT_TRUE(MakeDirs(ro).ok());
  ASSERT_TRUE(WriteFileAtomic(ro + "/from-host", "host data\n", 0644).ok());
  auto run = Msb({"run", "-d", "--name", "bg", "-v", rw + ":/rw", "-v", ro + ":/ro:ro", "-v", "cache:/cache", Rootfs(),
                  "sh", "-c", std::string("echo detached-up; ") + kKeepAlive});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_EQ(run.out, "bg\n");
  EXPECT_EQ(WaitForLogs("bg", "detached-up"), "detached-up\n");

  // The command after the sandbox, no --: its own options are its own.
  auto ls = Msb({"exec", "bg", "ls", "-l", "/ro"});
  EXPECT_EQ(ls.code, 0) << ls.err;
  EXPECT_THAT(ls.out, HasSubstr("-rw-r--r--"));
  EXPECT_THAT(ls.out, HasSubstr("from-host"));
  // A command named like an msb command is still the guest's.
  auto ps = Msb({"exec", "bg", "ps"});
  EXPECT_EQ(ps.code, 0) << ps.err;
  EXPECT_THAT(ps.out, HasSubstr("cat /dev/keep-alive"));
  EXPECT_EQ(Msb({"exec", "bg", "--", "cat", "/ro/from-host"}).out, "host data\n");

  // Exit statuses through exec, as through run.
  EXPECT_EQ(Msb({"exec", "bg", "sh", "-c", "exit 1"}).code, 1);
  EXPECT_EQ(Msb({"exec", "bg", "sh", "-c", "exit 125"}).code, 125);
  EXPECT_EQ(Msb({"exec", "bg", "/no/such"}).code, 127);
  EXPECT_EQ(Msb({"exec", "bg", "/etc/passwd"}).code, 126);

  // rw: the guest's write is on the host; ro: the write fails, nothing lands.
  ASSERT_EQ(Msb({"exec", "bg", "sh", "-c", "echo from-guest > /rw/out"}).code, 0);
  auto out = ReadFile(rw + "/out");
  EXPECT_EQ(out.ok() ? *out : out.error().message(), "from-guest\n");
  auto ro_write = Msb({"exec", "bg", "sh", "-c", "echo no > /ro/out"});
  EXPECT_NE(ro_write.code, 0);
  EXPECT_THAT(ro_write.err, HasSubstr("Read-only file system"));
  EXPECT_FALSE(std::filesystem::exists(ro + "/out"));
  ASSERT_EQ(Msb({"exec", "bg", "sh", "-c", "echo kept > /cache/f && sync"}).code, 0);

  EXPECT_EQ(Msb({"rm", "bg"}).code, 0);
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
  EXPECT_EQ(Msb({"ps", "--json"}).out, "[]\n");

  // The named volume outlived its sandbox: a second run reads it, and lists it.
  auto again = Msb({"run", "-v", "cache:/cache", Rootfs(), "cat", "/cache/f"});
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(again.out, "kept\n");
  auto vols = nlohmann::json::parse(Msb({"volume", "ls", "--format", "json"}).out, nullptr, false);
  ASSERT_TRUE(vols.is_array() && vols.size() == 1) << vols.dump();
  EXPECT_EQ(vols[0]["name"], "cache");
  EXPECT_EQ(vols[0]["used_by"], nlohmann::json::array());
}

TEST_F(RunTest, KilledBySignalGives128PlusSignal) {
  auto r = Msb({"run", Rootfs(), "--", "sh", "-c", "kill -9 $$"});
  EXPECT_EQ(r.code, 128 + SIGKILL) << r.err;
}

TEST_F(RunTest, SignalsToMsbReachTheGuestProcess) {
  // msb run in the background; once the guest says it is ready, SIGINT msb.
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  UniqueFd rd(out[0]), wr(out[1]);
  auto child = SpawnMsb({"run", Rootfs(), "--", "sh", "-c",
                         "trap 'echo got-int; exit 5' INT; echo ready; while :; do sleep 1; done"},
                        wr.get());
  ASSERT_TRUE(child.running());
  wr.Reset();
  std::string got;
  auto read_until = [&](const std::string& text) { return ReadUntil(rd.get(), &got, text); };
  ASSERT_TRUE(read_until("ready")) << got;
  child.Kill(SIGINT);
  EXPECT_TRUE(read_until("got-int")) << got;
  EXPECT_EQ(child.Wait().ShellCode(), 5);
}

TEST_F(RunTest, TtyGivesAPseudoTerminalWithTheEnvironment) {
  auto r = Msb({"run", "-t", "-e", "GREETING=hi there", Rootfs(), "--", "sh", "-c",
                "tty; echo \"$GREETING\""});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("/dev/pts/"));
  EXPECT_THAT(r.out, HasSubstr("hi there"));
}

TEST_F(RunTest, ExecCopyAndWritesStayInTheirOwnUpperLayer) {
  std::string base_before;
  ASSERT_EQ(Msb({"run", "--keep", "--name", "a", Rootfs(), "--", "true"}).code, 0);
  ASSERT_EQ(Msb({"run", "--keep", "--name", "b", Rootfs(), "--", "true"}).code, 0);
  auto ps = Msb({"ps"});
  EXPECT_THAT(ps.out, HasSubstr("running"));

  // cp in: contents and mode arrive.
  std::string host_file = Home() + "/payload.sh";
  ASSERT_TRUE(WriteFileAtomic(host_file, "#!/bin/sh\necho payload ran\n", 0751).ok());
  auto cp_in = Msb({"cp", host_file, "a:/root/payload.sh"});
  ASSERT_EQ(cp_in.code, 0) << cp_in.err;
  auto ran = Msb({"exec", "a", "--", "/root/payload.sh"});
  EXPECT_EQ(ran.code, 0) << ran.err;
  EXPECT_EQ(ran.out, "payload ran\n");
  auto mode = Msb({"exec", "a", "--", "stat", "-c", "%a", "/root/payload.sh"});
  EXPECT_EQ(mode.out, "751\n");

  // The other sandbox of the same image does not see the write.
  auto other = Msb({"exec", "b", "--", "ls", "/root/payload.sh"});
  EXPECT_NE(other.code, 0);

  // cp out: a file the guest made, contents and mode compared.
  ASSERT_EQ(Msb({"exec", "a", "--", "sh", "-c",
                 "mkdir -p /out/sub && printf 'guest data' > /out/sub/f && chmod 640 /out/sub/f"})
                .code,
            0);
  std::string dest = Home() + "/copied";
  auto cp_out = Msb({"cp", "a:/out", dest});
  ASSERT_EQ(cp_out.code, 0) << cp_out.err;
  auto got = ReadFile(dest + "/sub/f");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "guest data");
  struct stat st;
  ASSERT_EQ(::stat((dest + "/sub/f").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);

  // The shared base disk was never written.
  std::string base_dir = Home() + "/images/local";
  std::vector<std::string> bases;
  for (auto& e : std::filesystem::directory_iterator(base_dir)) bases.push_back(e.path());
  ASSERT_EQ(bases.size(), 1u);
  auto hash_before = Sha256File(bases[0]);
  ASSERT_EQ(Msb({"exec", "b", "--", "sh", "-c", "echo x > /etc/written && sync"}).code, 0);
  EXPECT_EQ(Msb({"stop", "b"}).code, 0);
  EXPECT_EQ(*Sha256File(bases[0]), *hash_before);

  EXPECT_EQ(Msb({"rm", "a"}).code, 0);
  EXPECT_EQ(Msb({"rm", "b"}).code, 0);
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
}

TEST_F(RunTest, StopStartAndRestartKeepTheWritableLayer) {
  ASSERT_EQ(Msb({"run", "--keep", "--name", "keep", Rootfs(), "--", "sh", "-c",
                 "echo persisted > /root/f"}).code, 0);
  EXPECT_EQ(Msb({"stop", "keep"}).code, 0);
  EXPECT_TRUE(MyQemus().empty());
  auto ps = Msb({"ps"});
  EXPECT_THAT(ps.out, HasSubstr("stopped"));
  auto exec_stopped = Msb({"exec", "keep", "--", "true"});
  EXPECT_EQ(exec_stopped.code, 125);  // msb's own failure, as docker's
  EXPECT_THAT(exec_stopped.err, HasSubstr("msb start keep"));
  EXPECT_EQ(Msb({"start", "keep"}).out, "started keep\n");
  EXPECT_EQ(Msb({"exec", "keep", "--", "cat", "/root/f"}).out, "persisted\n");
  EXPECT_EQ(Msb({"restart", "keep"}).out, "restarted keep\n");
  EXPECT_EQ(Msb({"exec", "keep", "--", "cat", "/root/f"}).out, "persisted\n");
  EXPECT_EQ(MyQemus().size(), 1u);
  EXPECT_EQ(Msb({"rm", "keep"}).code, 0);
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
}

TEST_F(RunTest, KillingTheSupervisorTakesTheVmWithIt) {
  ASSERT_EQ(Msb({"run", "--keep", "--name", "victim", Rootfs(), "--", "true"}).code, 0);
  auto mine = MySupervisors();
  ASSERT_EQ(mine.size(), 1u);
  ASSERT_EQ(::kill(mine[0], SIGKILL), 0);
  EXPECT_TRUE(WaitNoProcess(Home(), 20)) << "QEMU outlived its supervisor";
  auto ps = Msb({"ps"});
  EXPECT_THAT(ps.out, HasSubstr("failed"));
  EXPECT_EQ(Msb({"rm", "victim"}).code, 0);
}

TEST_F(RunTest, KillingQemuMarksTheSandboxFailed) {
  ASSERT_EQ(Msb({"run", "--keep", "--name", "victim", Rootfs(), "--", "true"}).code, 0);
  auto qemus = MyQemus();
  ASSERT_EQ(qemus.size(), 1u);
  ASSERT_EQ(::kill(qemus[0], SIGKILL), 0);
  EXPECT_TRUE(WaitNoProcess(Home(), 20)) << "the supervisor outlived its VM";
  auto ps = Msb({"ps", "--json"});
  EXPECT_THAT(ps.out, HasSubstr("\"failed\""));
  EXPECT_THAT(ps.out, HasSubstr("exited unexpectedly"));
}

TEST_F(RunTest, LogsShowTheWorkloadOutput) {
  // A sandbox whose workload is set at boot is made by msb up; here the
  // exec'd command's output is not the workload's, so logs are empty and
  // the command succeeds.
  ASSERT_EQ(Msb({"run", "--keep", "--name", "quiet", Rootfs(), "--", "true"}).code, 0);
  auto logs = Msb({"logs", "quiet"});
  EXPECT_EQ(logs.code, 0) << logs.err;
  EXPECT_EQ(logs.out, "");
  EXPECT_EQ(Msb({"rm", "quiet"}).code, 0);
}

TEST_F(RunTest, MissingKernelNamesTheSetUpStep) {
  env_["MSB_KERNEL"] = Home() + "/no-kernel";
  auto r = Msb({"run", Rootfs(), "--", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_THAT(r.err, HasSubstr("msb kernel build"));
}

TEST_F(RunTest, AGuestThatNeverAnswersTimesOutWithTheConsoleAndLeavesNothing) {
  env_["MSB_AGENTD"] = MSB_TEST_SILENT_INIT;
  env_["MSB_BOOT_TIMEOUT_MS"] = "8000";
  auto r = Msb({"run", Rootfs(), "--", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_THAT(r.err, HasSubstr("did not report ready"));
  EXPECT_THAT(r.err, HasSubstr("silent-init: waiting forever"));  // a console line
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
}

TEST_F(RunTest, AGuestSendingAnOversizedFrameIsMarkedFailed) {
  env_["MSB_AGENTD"] = MSB_TEST_EVIL_INIT;
  auto r = Msb({"run", Rootfs(), "--", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_THAT(r.err, HasSubstr("broke the agent protocol"));
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
}

// A guest's boot error reaches the terminal as text: its escape sequences
// (a title change, a screen clear, colours) arrive as '?'.
TEST_F(RunTest, AGuestsBootErrorIsPrintedWithItsControlBytesEscaped) {
  env_["MSB_AGENTD"] = MSB_TEST_BADREADY_INIT;
  auto r = Msb({"run", Rootfs(), "--", "true"});
  EXPECT_EQ(r.code, 125);
  EXPECT_THAT(r.err, HasSubstr("the guest failed to boot: no root ?]0;owned??[2J?[31mdisk"));
  EXPECT_EQ(r.err.find('\x1b'), std::string::npos);
  EXPECT_EQ(r.err.find('\x07'), std::string::npos);
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
}

// `msb cp` out of a hostile agent's hand-made tar streams: only regular
// files, directories and symlinks under the requested name land, inside the
// destination, with the host's umask and no setuid bits; `..`, absolute
// names, hard links, device nodes and writes through a symlink do not; an
// endless stream stops at --max-size; no spool file is left behind.
TEST_F(RunTest, CopyOutOfAHostileGuestStaysInTheDestinationAndStopsAtItsLimit) {
  env_["MSB_AGENTD"] = MSB_TEST_CPOUT_INIT;
  auto run = Msb({"run", "--keep", "--name", "hostile", Rootfs(), "--", "true"});
  ASSERT_EQ(run.code, 0) << run.err;
  const std::string dest = Home() + "/dest";
  const std::string outside = Home() + "/outside";
  ASSERT_EQ(::mkdir(dest.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
  const mode_t mask = ::umask(022);
  ::umask(mask);
  auto listing = [](const std::string& dir) {
    std::set<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir)) names.insert(e.path().filename().string());
    return names;
  };

  auto evil = Msb({"cp", "hostile:/evil", dest});
  ASSERT_EQ(evil.code, 0) << evil.err;
  EXPECT_EQ(ReadFile(dest + "/evil/ok.txt").ok() ? *ReadFile(dest + "/evil/ok.txt") : "", "fine\n");
  EXPECT_EQ(ReadFile(dest + "/evil/after.txt").ok() ? *ReadFile(dest + "/evil/after.txt") : "", "after\n");
  struct stat st;
  ASSERT_EQ(::stat((dest + "/evil/ok.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0777 & ~mask);  // 06777 from the guest
  ASSERT_EQ(::stat((dest + "/evil").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0777 & ~mask);
  EXPECT_EQ(listing(dest + "/evil"), (std::set<std::string>{"ok.txt", "after.txt", "link"}));
  ASSERT_EQ(::lstat((dest + "/evil/link").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));  // a symlink lands as a symlink, nothing through it
  EXPECT_FALSE(std::filesystem::exists("/tmp/msb-cp-absolute"));

  // A file under a symlink the stream made: the symlink gives way to a
  // directory (libarchive's ARCHIVE_EXTRACT_SECURE_SYMLINKS with _UNLINK).
  auto through = Msb({"cp", "hostile:/through", dest});
  EXPECT_EQ(through.code, 0) << through.err;
  ASSERT_EQ(::lstat((dest + "/through/link").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_TRUE(std::filesystem::exists(dest + "/through/link/pwned"));
  auto dotdot = Msb({"cp", "hostile:/dotdot", dest});
  EXPECT_EQ(dotdot.code, 1);
  EXPECT_THAT(dotdot.err, HasSubstr("msb-cp-dotdot"));
  EXPECT_FALSE(std::filesystem::exists(Home() + "/msb-cp-dotdot"));
  EXPECT_TRUE(listing(outside).empty());

  // 500 channel errors from the guest: a handful of lines in supervisor.log.
  auto errors = Msb({"cp", "hostile:/errors", dest});
  EXPECT_EQ(errors.code, 1);
  EXPECT_THAT(errors.err, HasSubstr("made noise"));
  std::string sandbox_dir;
  for (const auto& e : std::filesystem::directory_iterator(Home() + "/sandboxes")) sandbox_dir = e.path().string();
  auto slog = ReadFile(sandbox_dir + "/supervisor.log");
  ASSERT_TRUE(slog.ok());
  size_t lines = 0;
  for (size_t at = 0; (at = slog->find("reported an error on the channel", at)) != std::string::npos; ++at) ++lines;
  EXPECT_GE(lines, 1u);
  EXPECT_LE(lines, 10u);

  auto endless = Msb({"cp", "--max-size", "1M", "hostile:/endless", dest}, "", 120);
  EXPECT_EQ(endless.code, 1);
  EXPECT_THAT(endless.err, HasSubstr("raise --max-size"));
  EXPECT_FALSE(std::filesystem::exists(dest + "/endless"));
  // No spool left in the destination, whatever the outcome.
  for (const std::string& name : listing(dest)) EXPECT_TRUE(name == "evil" || name == "through" || name == "dotdot") << name;
  EXPECT_EQ(Msb({"rm", "hostile"}).code, 0);
  EXPECT_TRUE(WaitNoProcess(Home(), 30));
}

}  // namespace
}  // namespace msb::testing
