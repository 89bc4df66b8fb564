// agentd in serve mode (`agentd --serve-fd 0`) driven over a socketpair: the
// real binary, the real protocol, real processes. Every wait is a deadline on
// poll(); nothing sleeps to synchronise.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "agent/channel.h"
#include "agent/flow.h"
#include "agent/messages.h"
#include "common/child.h"
#include "common/io.h"

namespace msb::agent {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
constexpr milliseconds kWait(10000);

struct Outcome {
  std::string out, err;
  std::optional<ExitInfo> exit;
  std::vector<Frame> errors;
};

class AgentdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    SpawnOptions opts;
    opts.argv = {AGENTD_PATH, "--serve-fd", "0"};
    opts.stdin_fd = sv[1];
    opts.stdout_fd = -2;
    auto child = ChildProcess::Spawn(opts);
    ::close(sv[1]);
    ASSERT_TRUE(child.ok()) << child.error().message();
    agentd_ = std::move(*child);
    chan_ = std::make_unique<FrameChannel>(UniqueFd(sv[0]));
    Frame hello = Recv();
    ASSERT_EQ(hello.kind, FrameKind::kHello);
    auto h = ParseHello(hello.payload);
    ASSERT_TRUE(h.ok());
    EXPECT_EQ(h->version, kProtocolVersion);
    EXPECT_EQ(h->software, "agentd");
  }

  void Handshake() { Send(kChannelId, FrameKind::kHello, Encode(Hello{kProtocolVersion, "test"})); }

  void Send(uint32_t id, FrameKind kind, std::string payload) {
    auto s = chan_->Send(Frame{id, kind, std::move(payload)});
    ASSERT_TRUE(s.ok()) << s.error().message();
  }

  Frame Recv(milliseconds timeout = kWait) {
    auto f = chan_->Receive(timeout);
    EXPECT_TRUE(f.ok()) << f.error().message();
    if (!f.ok()) return Frame{0, FrameKind::kError, "receive failed: " + f.error().message()};
    return *f;
  }

  // Starts `req` under `id`; the pid agentd reports, or 0.
  int64_t Exec(uint32_t id, const ExecRequest& req) {
    Send(id, FrameKind::kExec, Encode(req));
    Frame f = Recv();
    EXPECT_EQ(f.kind, FrameKind::kStarted) << ToString(f.kind) << " " << f.payload;
    EXPECT_EQ(f.id, id);
    auto started = ParseStarted(f.payload);
    return f.kind == FrameKind::kStarted && started.ok() ? started->pid : 0;
  }

  // A barrier in agentd's loop: sends a malformed exec on id `probe`, waits
  // for its kError, then does the same on `probe + 1`, and returns every
  // other frame that came before the second kError. agentd handles the
  // frames it read and then the sessions' fds that poll() reported in the
  // same iteration (agentd/server.cc, Server::Run), so output it read in the
  // iteration that answered the first probe may follow that answer; the
  // second probe is read only after the first answer went out, in a later
  // iteration, so output from any fd that was readable when the first probe
  // was sent, and that agentd polls, precedes the second answer.
  std::vector<Frame> FramesBeforeTwoRoundTrips(uint32_t probe) {
    std::vector<Frame> others;
    auto deadline = Clock::now() + kWait;
    for (uint32_t id : {probe, probe + 1}) {
      Send(id, FrameKind::kExec, "{not json");
      for (;;) {
        auto f = chan_->Receive(deadline);
        if (!f.ok()) {
          ADD_FAILURE() << "no answer to the probe on id " << id << ": " << f.error().message();
          return others;
        }
        if (f->id == id && f->kind == FrameKind::kError) break;
        others.push_back(*f);
      }
    }
    return others;
  }

  // Collects the output of `id` until its kExit, returning credit as it
  // reads. Other ids' frames are not expected.
  Outcome Collect(uint32_t id, milliseconds timeout = kWait) {
    Outcome o;
    auto deadline = Clock::now() + timeout;
    while (!o.exit) {
      auto f = chan_->Receive(deadline);
      if (!f.ok()) {
        ADD_FAILURE() << "waiting for the exit of id " << id << ": " << f.error().message();
        return o;
      }
      EXPECT_EQ(f->id, id) << ToString(f->kind) << " " << f->payload;
      switch (f->kind) {
        case FrameKind::kStdout: o.out += f->payload; break;
        case FrameKind::kStderr: o.err += f->payload; break;
        case FrameKind::kExit: o.exit = *ParseExitInfo(f->payload); continue;
        case FrameKind::kCredit: continue;
        default: o.errors.push_back(*f); continue;
      }
      Send(id, FrameKind::kCredit, Encode(Credit{static_cast<uint32_t>(f->payload.size())}));
    }
    return o;
  }

  Outcome Run(uint32_t id, ExecRequest req) {
    Exec(id, req);
    return Collect(id);
  }

  // Waits for agentd to exit (pidfd + poll, with a deadline).
  std::optional<ExitStatus> WaitAgentd(milliseconds timeout) {
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, agentd_.pid(), 0));
    if (pidfd < 0) return std::nullopt;
    UniqueFd guard(pidfd);
    pollfd p{pidfd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
    return agentd_.TryWait();
  }

  ChildProcess agentd_;
  std::unique_ptr<FrameChannel> chan_;
};

ExecRequest Cmd(std::vector<std::string> argv) {
  ExecRequest r;
  r.argv = std::move(argv);
  return r;
}

// A process that runs until it gets a signal: after `before`, the shell
// becomes cat reading its stdin, which the test keeps open and never writes
// or closes. No timer ends it, however slow the machine.
ExecRequest UntilSignalled(const std::string& before = "") {
  ExecRequest r = Cmd({"sh", "-c", before + "exec cat >/dev/null"});
  r.stdin_open = true;
  return r;
}

// A FIFO nobody ever opens for writing: a process opening it for reading
// waits in open() until a signal ends it. Removed with its directory.
class Fifo {
 public:
  Fifo() {
    char tmpl[] = "/tmp/msb-agentd-fifo-XXXXXX";
    EXPECT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    EXPECT_EQ(::mkfifo(path().c_str(), 0600), 0);
  }
  ~Fifo() { std::filesystem::remove_all(dir_); }
  std::string path() const { return dir_ + "/never-written"; }

 private:
  std::string dir_;
};

// The pipe process `pid` writes its stdout to, opened for reading through
// /proc (agentd and its children run as this test's user). The test only
// polls it and never reads, so it takes nothing from agentd.
UniqueFd StdoutPipeOf(int64_t pid) {
  return UniqueFd(::open(("/proc/" + std::to_string(pid) + "/fd/1").c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
}

// True once bytes wait in `pipe` (within kWait).
bool BytesWaitIn(const UniqueFd& pipe) {
  pollfd p{pipe.get(), POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(kWait.count())) == 1 && (p.revents & POLLIN) != 0;
}

TEST_F(AgentdTest, OutputAndExitCode) {
  Handshake();
  Outcome o = Run(2, Cmd({"sh", "-c", "echo out; echo err >&2; exit 3"}));
  EXPECT_EQ(o.out, "out\n");
  EXPECT_EQ(o.err, "err\n");
  ASSERT_TRUE(o.exit);
  EXPECT_EQ(o.exit->code, 3);
  EXPECT_EQ(o.exit->signal, 0);
  EXPECT_TRUE(o.errors.empty());
}

TEST_F(AgentdTest, CwdEnvAndUser) {
  Handshake();
  ExecRequest r = Cmd({"sh", "-c", "pwd; echo $FOO; id -u; echo $HOME"});
  r.cwd = "/tmp";
  r.env = {"FOO=bar baz"};
  Outcome o = Run(2, r);
  EXPECT_EQ(o.out, "/tmp\nbar baz\n" + std::to_string(::geteuid()) + "\n/root\n");
  if (::geteuid() != 0) GTEST_SKIP() << "switching users needs root";
  r.user = "nobody";
  o = Run(3, r);
  EXPECT_EQ(o.out, "/tmp\nbar baz\n65534\n/nonexistent\n");
  r.user = "no-such-user";
  Send(4, FrameKind::kExec, Encode(r));
  Frame f = Recv();
  EXPECT_EQ(f.kind, FrameKind::kError);
  EXPECT_NE(f.payload.find("user \\\"no-such-user\\\" not found in /etc/passwd"), std::string::npos)
      << f.payload;
}

TEST_F(AgentdTest, StdinEchoThroughCatWithFlowControl) {
  Handshake();
  ExecRequest r = Cmd({"cat"});
  r.stdin_open = true;
  Exec(2, r);
  // More than one window in each direction, so both sides must return credit.
  std::string input;
  for (int i = 0; input.size() < 3 * kCreditWindow; ++i) input += "line " + std::to_string(i) + "\n";
  SendCredit credit;  // what agentd lets us send on id 2
  size_t sent = 0;
  std::string out;
  bool eof_sent = false;
  std::optional<ExitInfo> exit;
  auto deadline = Clock::now() + kWait;
  while (!exit) {
    while (sent < input.size() && credit.available() > 0) {
      size_t n = std::min<size_t>({credit.available(), kMaxChunk, input.size() - sent});
      credit.Consume(n);
      Send(2, FrameKind::kStdin, input.substr(sent, n));
      sent += n;
    }
    if (sent == input.size() && !eof_sent) {
      Send(2, FrameKind::kStdin, "");
      eof_sent = true;
    }
    auto f = chan_->Receive(deadline);
    ASSERT_TRUE(f.ok()) << f.error().message() << " after " << out.size() << " bytes out";
    ASSERT_EQ(f->id, 2u);
    if (f->kind == FrameKind::kCredit) {
      credit.Grant(ParseCredit(f->payload)->bytes);
    } else if (f->kind == FrameKind::kStdout) {
      out += f->payload;
      Send(2, FrameKind::kCredit, Encode(Credit{static_cast<uint32_t>(f->payload.size())}));
    } else if (f->kind == FrameKind::kExit) {
      exit = *ParseExitInfo(f->payload);
    } else {
      FAIL() << ToString(f->kind) << " " << f->payload;
    }
  }
  EXPECT_EQ(exit->code, 0);
  EXPECT_EQ(out.size(), input.size());
  EXPECT_TRUE(out == input);
}

TEST_F(AgentdTest, ExitBySignal) {
  Handshake();
  Outcome o = Run(2, Cmd({"sh", "-c", "echo before; kill -TERM $$"}));
  EXPECT_EQ(o.out, "before\n");
  ASSERT_TRUE(o.exit);
  EXPECT_EQ(o.exit->code, -1);
  EXPECT_EQ(o.exit->signal, SIGTERM);
}

TEST_F(AgentdTest, SignalForwarded) {
  Handshake();
  Exec(2, UntilSignalled("echo ready; "));
  Frame f = Recv();
  ASSERT_EQ(f.kind, FrameKind::kStdout);
  EXPECT_EQ(f.payload, "ready\n");
  Send(2, FrameKind::kSignal, Encode(SignalRequest{SIGKILL}));
  Send(2, FrameKind::kCredit, Encode(Credit{kCreditWindow}));
  Outcome o = Collect(2);
  ASSERT_TRUE(o.exit);
  EXPECT_EQ(o.exit->signal, SIGKILL);
}

TEST_F(AgentdTest, CommandNotFoundIs127WithMessage) {
  Handshake();
  Outcome o = Run(2, Cmd({"no-such-command-xyz", "arg"}));
  ASSERT_TRUE(o.exit);
  EXPECT_EQ(o.exit->code, 127);
  EXPECT_EQ(o.exit->start_failure, StartFailure::kNotFound);
  EXPECT_EQ(o.err, "msb: no-such-command-xyz: command not found\n");
  o = Run(3, Cmd({"/no/such/path"}));
  EXPECT_EQ(o.exit->code, 127);
  EXPECT_EQ(o.exit->start_failure, StartFailure::kNotFound);
  EXPECT_EQ(o.err, "msb: /no/such/path: command not found\n");
  o = Run(4, Cmd({"/etc/passwd"}));  // exists, not executable
  EXPECT_EQ(o.exit->code, 126);
  EXPECT_EQ(o.exit->start_failure, StartFailure::kNotExecutable);
  EXPECT_EQ(o.err, "msb: /etc/passwd: Permission denied\n");
  ExecRequest no_dir = Cmd({"true"});
  no_dir.cwd = "/no/such/dir";
  o = Run(5, no_dir);
  EXPECT_EQ(o.exit->code, 126);
  EXPECT_EQ(o.exit->start_failure, StartFailure::kSetup);
}

// A command that ran and exited 127 or 126 itself is not a start failure.
TEST_F(AgentdTest, ACommandExiting127ItselfIsNoStartFailure) {
  Handshake();
  Outcome o = Run(2, Cmd({"sh", "-c", "exit 127"}));
  ASSERT_TRUE(o.exit);
  EXPECT_EQ(o.exit->code, 127);
  EXPECT_EQ(o.exit->start_failure, StartFailure::kNone);
  o = Run(3, Cmd({"sh", "-c", "exit 126"}));
  ASSERT_TRUE(o.exit);
  EXPECT_EQ(o.exit->code, 126);
  EXPECT_EQ(o.exit->start_failure, StartFailure::kNone);
}

TEST_F(AgentdTest, TtyShowsPtsAndWindowSize) {
  Handshake();
  ExecRequest r = Cmd({"sh", "-c", "tty; stty size"});
  r.tty = true;
  r.rows = 33;
  r.cols = 101;
  Outcome o = Run(2, r);
  ASSERT_TRUE(o.exit);
  EXPECT_EQ(o.exit->code, 0);
  EXPECT_TRUE(std::regex_match(o.out, std::regex("/dev/pts/[0-9]+\r\n33 101\r\n"))) << o.out;
  EXPECT_EQ(o.err, "");
}

TEST_F(AgentdTest, TtyResizeAndInput) {
  Handshake();
  ExecRequest r = Cmd({"sh", "-c", "stty size; read line; stty size; echo got:$line"});
  r.tty = true;
  r.stdin_open = true;
  r.rows = 10;
  r.cols = 20;
  Exec(2, r);
  std::string out;
  auto deadline = Clock::now() + kWait;
  while (out.find("10 20\r\n") == std::string::npos) {
    auto f = chan_->Receive(deadline);
    ASSERT_TRUE(f.ok()) << f.error().message() << "; output so far: " << out;
    if (f->kind == FrameKind::kStdout) out += f->payload;
  }
  Send(2, FrameKind::kResize, Encode(Resize{50, 60}));
  Send(2, FrameKind::kStdin, "hello\n");
  Outcome o = Collect(2);
  out += o.out;
  ASSERT_TRUE(o.exit);
  EXPECT_EQ(o.exit->code, 0);
  EXPECT_NE(out.find("50 60\r\n"), std::string::npos) << out;
  EXPECT_NE(out.find("got:hello\r\n"), std::string::npos) << out;
}

TEST_F(AgentdTest, TtySignalGoesToProcessGroup) {
  Handshake();
  // The shell traps TERM and waits for its child (which prints "armed" and
  // becomes cat reading the terminal, keeping the default TERM action): only
  // a signal to the whole group ends the child.
  ExecRequest r = Cmd({"sh", "-c", "trap 'echo trapped' TERM; sh -c 'echo armed; exec cat >/dev/null'; echo after"});
  r.tty = true;
  r.stdin_open = true;
  Exec(2, r);
  std::string out;
  auto deadline = Clock::now() + kWait;
  while (out.find("armed") == std::string::npos) {
    auto f = chan_->Receive(deadline);
    ASSERT_TRUE(f.ok()) << f.error().message();
    out += f->payload;
  }
  Send(2, FrameKind::kSignal, Encode(SignalRequest{SIGTERM}));
  Outcome o = Collect(2);
  ASSERT_TRUE(o.exit);
  EXPECT_EQ(o.exit->code, 0);
  EXPECT_NE(o.out.find("trapped\r\nafter\r\n"), std::string::npos) << o.out;
}

TEST_F(AgentdTest, BackgroundProcessDoesNotHoldExit) {
  Handshake();
  // The exit arrives while the background process still runs: it waits in
  // open() of a FIFO nobody writes, so only the test's kill ends it, and it
  // is there to ask.
  Fifo fifo;
  Outcome o = Run(2, Cmd({"sh", "-c", "cat " + fifo.path() + " >/dev/null & echo $!"}));
  ASSERT_TRUE(o.exit);
  EXPECT_EQ(o.exit->code, 0);
  const pid_t background = static_cast<pid_t>(std::atoi(o.out.c_str()));
  ASSERT_GT(background, 0) << o.out;
  EXPECT_EQ(::kill(background, 0), 0) << "the background process ended before the exit arrived";
  ::kill(background, SIGKILL);
}

class CopyTest : public AgentdTest {
 protected:
  void SetUp() override {
    AgentdTest::SetUp();
    char tmpl[] = "/tmp/msb-agentd-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Copy-out of path: the tar bytes, and the kResult.
  std::pair<std::string, ResultMsg> CopyOut(uint32_t id, const std::string& path) {
    Send(id, FrameKind::kCopyOut, Encode(PathRequest{path}));
    std::string tar;
    auto deadline = Clock::now() + kWait;
    bool ended = false;
    for (;;) {
      auto f = chan_->Receive(deadline);
      if (!f.ok()) {
        ADD_FAILURE() << f.error().message();
        return {};
      }
      EXPECT_EQ(f->id, id);
      if (f->kind == FrameKind::kData) {
        EXPECT_FALSE(ended) << "data after the end of the stream";
        if (f->payload.empty()) ended = true;
        tar += f->payload;
        if (!f->payload.empty())
          Send(id, FrameKind::kCredit, Encode(Credit{static_cast<uint32_t>(f->payload.size())}));
      } else if (f->kind == FrameKind::kResult) {
        EXPECT_TRUE(ended) << "kResult before the empty kData";
        return {tar, *ParseResultMsg(f->payload)};
      } else {
        ADD_FAILURE() << ToString(f->kind) << " " << f->payload;
        return {};
      }
    }
  }

  ResultMsg CopyIn(uint32_t id, const std::string& path, const std::string& tar) {
    Send(id, FrameKind::kCopyIn, Encode(PathRequest{path}));
    SendCredit credit;
    size_t sent = 0;
    bool eof = false;
    auto deadline = Clock::now() + kWait;
    for (;;) {
      while (sent < tar.size() && credit.available() > 0) {
        size_t n = std::min<size_t>({credit.available(), kMaxChunk, tar.size() - sent});
        credit.Consume(n);
        Send(id, FrameKind::kData, tar.substr(sent, n));
        sent += n;
      }
      if (sent == tar.size() && !eof) {
        Send(id, FrameKind::kData, "");
        eof = true;
      }
      auto f = chan_->Receive(deadline);
      if (!f.ok()) {
        ADD_FAILURE() << f.error().message();
        return {};
      }
      EXPECT_EQ(f->id, id);
      if (f->kind == FrameKind::kCredit) credit.Grant(ParseCredit(f->payload)->bytes);
      else if (f->kind == FrameKind::kResult) return *ParseResultMsg(f->payload);
      else ADD_FAILURE() << ToString(f->kind) << " " << f->payload;
    }
  }

  std::string dir_;
};

void WriteFile(const std::string& path, const std::string& data, mode_t mode) {
  std::ofstream(path, std::ios::binary) << data;
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode;
}

TEST_F(CopyTest, DirectoryRoundTripKeepsContentsAndModes) {
  Handshake();
  std::string src = dir_ + "/src";
  ASSERT_TRUE(MakeDirs(src + "/sub/deeper").ok());
  std::string big;
  for (int i = 0; big.size() < 700 * 1024; ++i) big += std::to_string(i * 7919) + ",";
  WriteFile(src + "/big.bin", big, 0640);
  WriteFile(src + "/run.sh", "#!/bin/sh\necho hi\n", 0755);
  WriteFile(src + "/empty", "", 0600);
  WriteFile(src + "/sub/deeper/note.txt", "deep\n", 0444);
  ASSERT_EQ(::chmod((src + "/sub").c_str(), 0710), 0);
  ASSERT_EQ(::symlink("run.sh", (src + "/link").c_str()), 0);

  auto [tar, out_result] = CopyOut(2, src);
  ASSERT_FALSE(out_result.error) << *out_result.error;
  EXPECT_GT(tar.size(), big.size());

  std::string dst = dir_ + "/dst/nested";  // created by copy-in
  ResultMsg in_result = CopyIn(3, dst, tar);
  ASSERT_FALSE(in_result.error) << *in_result.error;

  // Copy-out names entries after the base name of the path.
  std::string got = dst + "/src";
  EXPECT_EQ(*ReadFile(got + "/big.bin"), big);
  EXPECT_EQ(*ReadFile(got + "/run.sh"), "#!/bin/sh\necho hi\n");
  EXPECT_EQ(*ReadFile(got + "/empty"), "");
  EXPECT_EQ(*ReadFile(got + "/sub/deeper/note.txt"), "deep\n");
  EXPECT_EQ(ModeOf(got + "/big.bin") & 07777, 0640u);
  EXPECT_EQ(ModeOf(got + "/run.sh") & 07777, 0755u);
  EXPECT_EQ(ModeOf(got + "/empty") & 07777, 0600u);
  EXPECT_EQ(ModeOf(got + "/sub/deeper/note.txt") & 07777, 0444u);
  EXPECT_EQ(ModeOf(got + "/sub") & 07777, 0710u);
  EXPECT_TRUE(S_ISLNK(ModeOf(got + "/link")));
  EXPECT_EQ(fs::read_symlink(got + "/link"), "run.sh");

  // The agent still serves after two copies.
  Outcome o = Run(4, Cmd({"true"}));
  EXPECT_EQ(o.exit->code, 0);
}

TEST_F(CopyTest, SingleFileRoundTrip) {
  Handshake();
  WriteFile(dir_ + "/one.txt", "just one\n", 0604);
  auto [tar, r] = CopyOut(2, dir_ + "/one.txt");
  ASSERT_FALSE(r.error) << *r.error;
  ASSERT_FALSE(CopyIn(3, dir_ + "/into", tar).error);
  EXPECT_EQ(*ReadFile(dir_ + "/into/one.txt"), "just one\n");
  EXPECT_EQ(ModeOf(dir_ + "/into/one.txt") & 07777, 0604u);
}

TEST_F(CopyTest, CopyOutOfMissingPathReportsError) {
  Handshake();
  auto [tar, r] = CopyOut(2, dir_ + "/missing");
  EXPECT_TRUE(tar.empty());
  ASSERT_TRUE(r.error);
  EXPECT_NE(r.error->find("No such file or directory"), std::string::npos) << *r.error;
}

TEST_F(CopyTest, CopyInOfGarbageReportsError) {
  Handshake();
  ResultMsg r = CopyIn(2, dir_ + "/x", std::string(10000, 'g'));
  ASSERT_TRUE(r.error);
  EXPECT_NE(r.error->find("tar"), std::string::npos) << *r.error;
}

TEST_F(AgentdTest, FloodStopsWithoutCredit) {
  Handshake();
  const int64_t pid = Exec(2, Cmd({"yes"}));
  ASSERT_GT(pid, 0);
  size_t got = 0;
  auto deadline = Clock::now() + kWait;
  while (got < kCreditWindow) {
    auto f = chan_->Receive(deadline);
    ASSERT_TRUE(f.ok()) << f.error().message() << " after " << got << " bytes";
    ASSERT_EQ(f->kind, FrameKind::kStdout);
    EXPECT_LE(f->payload.size(), kMaxChunk);
    got += f->payload.size();
  }
  EXPECT_EQ(got, kCreditWindow);
  // No credit returned: nothing more may arrive. yes keeps output waiting
  // in its pipe; once some is there, two round trips through agentd's loop
  // show that agentd did not read it (FramesBeforeTwoRoundTrips), however
  // slowly the machine runs.
  UniqueFd pipe = StdoutPipeOf(pid);
  ASSERT_TRUE(pipe.valid()) << "opening the stdout pipe of pid " << pid << ": " << std::strerror(errno);
  ASSERT_TRUE(BytesWaitIn(pipe)) << "yes wrote nothing beyond the window";
  auto beyond = FramesBeforeTwoRoundTrips(100);
  EXPECT_TRUE(beyond.empty()) << beyond.size() << " frames beyond the window, the first "
                              << ToString(beyond[0].kind) << " of " << beyond[0].payload.size() << " bytes";
  // A small grant lets exactly that much through.
  Send(2, FrameKind::kCredit, Encode(Credit{1000}));
  size_t extra = 0;
  while (extra < 1000) {
    auto f = chan_->Receive(deadline);
    ASSERT_TRUE(f.ok()) << f.error().message();
    ASSERT_EQ(f->kind, FrameKind::kStdout);
    extra += f->payload.size();
  }
  EXPECT_EQ(extra, 1000u);
  ASSERT_TRUE(BytesWaitIn(pipe)) << "yes wrote nothing beyond the grant";
  beyond = FramesBeforeTwoRoundTrips(102);
  EXPECT_TRUE(beyond.empty()) << beyond.size() << " frames beyond the grant, the first "
                              << ToString(beyond[0].kind) << " of " << beyond[0].payload.size() << " bytes";
  // Killing it ends the id once the host lets the pipe drain.
  Send(2, FrameKind::kSignal, Encode(SignalRequest{SIGKILL}));
  Send(2, FrameKind::kCredit, Encode(Credit{kCreditWindow}));
  Outcome o = Collect(2);
  ASSERT_TRUE(o.exit);
  EXPECT_EQ(o.exit->signal, SIGKILL);
}

TEST_F(AgentdTest, MalformedRequestsGetErrorsAndServiceContinues) {
  Send(2, FrameKind::kExec, Encode(Cmd({"true"})));
  Frame f = Recv();
  EXPECT_EQ(f.kind, FrameKind::kError);
  EXPECT_NE(f.payload.find("not supported while awaiting hello"), std::string::npos) << f.payload;

  Handshake();
  Send(5, FrameKind::kExec, "{bad json");
  f = Recv();
  EXPECT_EQ(f.kind, FrameKind::kError);
  EXPECT_EQ(f.id, 5u);
  EXPECT_EQ(ParseErrorMsg(f.payload)->message, "exec: malformed JSON");

  Send(6, FrameKind::kExec, R"({"argv":"not a list"})");
  f = Recv();
  EXPECT_EQ(ParseErrorMsg(f.payload)->message, "exec: field \"argv\": expected an array of strings");

  Send(1, FrameKind::kExec, Encode(Cmd({"true"})));
  f = Recv();
  EXPECT_EQ(f.kind, FrameKind::kError);
  EXPECT_NE(f.payload.find("reserved for the workload"), std::string::npos);

  Send(7, static_cast<FrameKind>(99), "");
  f = Recv();
  EXPECT_EQ(ParseErrorMsg(f.payload)->message, "unknown frame kind 99");

  Send(8, FrameKind::kStdout, "x");
  f = Recv();
  EXPECT_EQ(f.kind, FrameKind::kError);

  Send(9, FrameKind::kCopyIn, R"({"path":"relative/dir"})");
  f = Recv();
  EXPECT_NE(f.payload.find("not absolute"), std::string::npos) << f.payload;

  // An exec without stdin refuses kStdin; the complaint comes on the channel
  // id, naming id 10, which stays live (waiting on a FIFO nobody writes).
  Fifo fifo;
  Exec(10, Cmd({"cat", fifo.path()}));
  Send(10, FrameKind::kStdin, "data");
  f = Recv();
  EXPECT_EQ(f.kind, FrameKind::kError);
  EXPECT_EQ(f.id, kChannelId);
  auto complaint = ParseErrorMsg(f.payload);
  ASSERT_TRUE(complaint.ok());
  EXPECT_EQ(complaint->id, 10u);
  EXPECT_NE(complaint->message.find("stdin is not open"), std::string::npos) << f.payload;
  // Starting an id that is live is refused the same way.
  Send(10, FrameKind::kExec, Encode(Cmd({"true"})));
  f = Recv();
  EXPECT_EQ(f.id, kChannelId);
  EXPECT_NE(f.payload.find("id 10 is in use"), std::string::npos) << f.payload;
  Send(10, FrameKind::kSignal, Encode(SignalRequest{SIGKILL}));
  Outcome o = Collect(10);
  EXPECT_EQ(o.exit->signal, SIGKILL);

  // Frames for ids that have ended are dropped silently.
  Send(10, FrameKind::kCredit, Encode(Credit{5}));
  Send(10, FrameKind::kSignal, Encode(SignalRequest{SIGTERM}));
  o = Run(11, Cmd({"echo", "still serving"}));
  EXPECT_EQ(o.out, "still serving\n");
}

// Serve mode has no writable layer of its own to freeze: freeze and thaw
// are answered, each with an error on its own id, and service goes on. (The
// freeze itself is exercised on a booted VM: tests/integration/snapshot_test.cc.)
TEST_F(AgentdTest, FreezeAndThawWithoutAWritableLayerAreRefusedOnTheirId) {
  Handshake();
  Send(3, FrameKind::kFreeze, Encode(Freeze{1000}));
  Frame f = Recv();
  EXPECT_EQ(f.id, 3u);
  ASSERT_EQ(f.kind, FrameKind::kResult);
  auto r = ParseResultMsg(f.payload);
  ASSERT_TRUE(r.ok() && r->error);
  EXPECT_NE(r->error->find("no disk-backed writable layer"), std::string::npos) << *r->error;

  Send(4, FrameKind::kFreeze, R"({"timeout_ms":600001})");
  f = Recv();
  EXPECT_EQ(f.id, 4u);
  r = ParseResultMsg(f.payload);
  ASSERT_TRUE(r.ok() && r->error);
  EXPECT_NE(r->error->find("timeout_ms"), std::string::npos) << *r->error;

  Send(5, FrameKind::kThaw, "{}");
  f = Recv();
  EXPECT_EQ(f.id, 5u);
  r = ParseResultMsg(f.payload);
  ASSERT_TRUE(r.ok() && r->error);
  EXPECT_NE(r->error->find("not frozen"), std::string::npos) << *r->error;

  EXPECT_EQ(Run(6, Cmd({"echo", "still serving"})).out, "still serving\n");
}

TEST_F(AgentdTest, OversizedFrameClosesChannel) {
  Handshake();
  std::string header("\x00\x20\x00\x00\x00\x00\x00\x02\x12", 9);  // 2 MiB kStdin
  ASSERT_TRUE(WriteAll(chan_->fd(), header).ok());
  Frame f = Recv();
  EXPECT_EQ(f.kind, FrameKind::kError);
  EXPECT_EQ(f.id, kChannelId);
  EXPECT_NE(f.payload.find("above the limit"), std::string::npos) << f.payload;
  auto end = chan_->Receive(kWait);
  ASSERT_FALSE(end.ok());
  EXPECT_EQ(end.error().code(), ErrorCode::kUnavailable) << end.error().message();
  auto status = WaitAgentd(kWait);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->code, 1);
}

TEST_F(AgentdTest, VersionMismatchClosesChannel) {
  Send(kChannelId, FrameKind::kHello, Encode(Hello{kProtocolVersion + 1, "future"}));
  Frame f = Recv();
  EXPECT_EQ(f.kind, FrameKind::kError);
  EXPECT_NE(f.payload.find("version 2"), std::string::npos) << f.payload;
  auto end = chan_->Receive(kWait);
  ASSERT_FALSE(end.ok());
  EXPECT_EQ(end.error().code(), ErrorCode::kUnavailable);
}

TEST_F(AgentdTest, BootStartsWorkloadUnderId1) {
  Handshake();
  BootConfig boot;
  boot.hostname = "web";
  boot.env = {"GREETING=hello"};
  boot.command = {"sh", "-c", "echo $GREETING from $HOSTNAME in $(pwd)"};
  boot.workdir = "/tmp";
  Send(kChannelId, FrameKind::kBoot, Encode(boot));
  Frame started = Recv();
  EXPECT_EQ(started.kind, FrameKind::kStarted);
  EXPECT_EQ(started.id, kWorkloadId);
  Frame ready = Recv();
  EXPECT_EQ(ready.kind, FrameKind::kReady);
  EXPECT_FALSE(ParseReady(ready.payload)->error);
  Outcome o = Collect(kWorkloadId);
  EXPECT_EQ(o.out, "hello from web in /tmp\n");
  EXPECT_EQ(o.exit->code, 0);
  // Exec inherits the sandbox environment.
  o = Run(2, Cmd({"sh", "-c", "echo $GREETING"}));
  EXPECT_EQ(o.out, "hello\n");
  Send(kChannelId, FrameKind::kBoot, Encode(boot));
  EXPECT_NE(Recv().payload.find("already booted"), std::string::npos);
}

// The lines of /proc/<pid>/status a hardened process is judged by.
std::string HardeningLines(const std::string& status) {
  std::string out;
  std::istringstream in(status);
  for (std::string line; std::getline(in, line);) {
    for (const char* key : {"NoNewPrivs:", "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"}) {
      if (line.rfind(key, 0) == 0) out += line + "\n";
    }
  }
  return out;
}

TEST_F(AgentdTest, BootSecurityHardensTheWorkloadAndEveryExec) {
  if (::geteuid() != 0) GTEST_SKIP() << "cutting the bounding set needs CAP_SETPCAP";
  Handshake();
  const std::vector<std::string> status = {"cat", "/proc/self/status"};
  // Before the boot, a process is started as agentd itself is: the control.
  Outcome before = Run(2, Cmd(status));
  EXPECT_THAT(HardeningLines(before.out), ::testing::HasSubstr("NoNewPrivs:\t0\n"));
  EXPECT_THAT(HardeningLines(before.out), ::testing::Not(::testing::HasSubstr("CapBnd:\t0000000000000420\n")));

  BootConfig boot;
  boot.command = status;
  boot.security.no_new_privileges = true;
  boot.security.capabilities = std::vector<std::string>{"CAP_KILL", "CAP_NET_BIND_SERVICE"};
  Send(kChannelId, FrameKind::kBoot, Encode(boot));
  EXPECT_EQ(Recv().kind, FrameKind::kStarted);
  EXPECT_EQ(Recv().kind, FrameKind::kReady);
  // CAP_KILL is 5, CAP_NET_BIND_SERVICE 10: 0x420.
  const std::string root_expected =
      "NoNewPrivs:\t1\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000420\n"
      "CapEff:\t0000000000000420\nCapBnd:\t0000000000000420\nCapAmb:\t0000000000000000\n";
  auto ordered = [](std::string lines) {
    // /proc lists NoNewPrivs after the capability lines; compare as sets of lines.
    std::vector<std::string> v;
    std::istringstream in(lines);
    for (std::string l; std::getline(in, l);) v.push_back(l);
    std::sort(v.begin(), v.end());
    return v;
  };
  Outcome workload = Collect(kWorkloadId);
  EXPECT_EQ(ordered(HardeningLines(workload.out)), ordered(root_expected)) << workload.out;
  Outcome exec = Run(3, Cmd(status));
  EXPECT_EQ(ordered(HardeningLines(exec.out)), ordered(root_expected)) << exec.out;
  // Another user loses what it had when it stopped being root; the bounding set stays cut.
  ExecRequest as_user = Cmd(status);
  as_user.user = "65534:65534";
  Outcome user = Run(4, as_user);
  EXPECT_EQ(ordered(HardeningLines(user.out)),
            ordered("NoNewPrivs:\t1\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n"
                    "CapEff:\t0000000000000000\nCapBnd:\t0000000000000420\nCapAmb:\t0000000000000000\n"))
      << user.out << user.err;
}

TEST_F(AgentdTest, ShutdownTerminatesProcessesAndExits) {
  Handshake();
  Exec(2, UntilSignalled());
  Send(kChannelId, FrameKind::kShutdown, Encode(Shutdown{5000}));
  Outcome o = Collect(2);
  ASSERT_TRUE(o.exit);
  EXPECT_EQ(o.exit->signal, SIGTERM);
  Frame r = Recv();
  EXPECT_EQ(r.kind, FrameKind::kResult);
  EXPECT_EQ(r.id, kChannelId);
  auto status = WaitAgentd(kWait);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->code, 0);
}

TEST_F(AgentdTest, ShutdownKillsWhatIgnoresSigterm) {
  Handshake();
  // TERM ignored by the shell stays ignored by the cat it becomes.
  Exec(2, UntilSignalled("trap '' TERM; echo armed; "));
  Frame f = Recv();
  ASSERT_EQ(f.payload, "armed\n");
  auto start = Clock::now();
  Send(kChannelId, FrameKind::kShutdown, Encode(Shutdown{300}));
  Outcome o = Collect(2);
  ASSERT_TRUE(o.exit);
  EXPECT_EQ(o.exit->signal, SIGKILL);
  EXPECT_EQ(Recv().kind, FrameKind::kResult);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
}

TEST_F(AgentdTest, HostCloseEndsAgentd) {
  Handshake();
  Exec(2, UntilSignalled());
  chan_.reset();
  auto status = WaitAgentd(kWait);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->code, 0);
}

}  // namespace
}  // namespace msb::agent
