// agentd as the guest's PID 1 in a real QEMU microvm (TCG): the root
// assembled from disks found by serial, the writable layer that survives a
// reboot (or not, when ephemeral), users from the image's /etc/passwd, copy in,
// the sandbox CA in the image's trust and the environment, a boot failure
// reported through kReady, and shutdown ending QEMU. Checks
// the guest's output and files, not just exit codes. Skipped without a guest
// kernel ($MSB_KERNEL or `msb kernel path`), busybox or mkfs.ext4.
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "agent/channel.h"
#include "agent/flow.h"
#include "agent/messages.h"
#include "common/child.h"
#include "common/io.h"
#include "common/unix_socket.h"
#include "vm/initramfs.h"
#include "vm/kernel.h"
#include "vm/qemu_cmdline.h"

namespace msb::agent {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
constexpr milliseconds kBootWait(120000);  // TCG on a busy 2-core host

std::string Kernel() {
  if (const char* k = std::getenv("MSB_KERNEL"); k != nullptr && *k) return k;
  const char* b = std::getenv("MSB_BUILD_DIR");
  auto r = RunCapture({std::string(b ? b : ".") + "/bin/msb", "kernel", "path"}, false);
  if (!r.ok() || r->status.code != 0) return "";
  std::string p = r->output;
  while (!p.empty() && p.back() == '\n') p.pop_back();
  return ::access(p.c_str(), R_OK) == 0 ? p : "";
}

// One booted guest: QEMU, and the agent channel (QEMU connects to our socket).
class Guest {
 public:
  ~Guest() {
    if (qemu_.running()) qemu_.Kill(SIGKILL);
  }

  Status Start(const std::string& dir, const std::string& kernel, const std::string& upper) {
    std::string sock = dir + "/agent.sock";
    ::unlink(sock.c_str());
    MSB_TRY(UniqueFd listener, ListenUnix(sock, false, 1));
    vm::MicrovmConfig m;
    m.qemu = "qemu-system-x86_64";
    m.memory_mib = 256;
    m.kernel = kernel;
    m.initramfs = dir + "/initramfs.cpio";
    m.kernel_args = vm::TscKernelArg();
    auto line = vm::QemuCommandLine::ForMicrovm(m);
    line.AttachSerialConsole(dir + "/console.log");
    line.AttachBlock("base", vm::VmDisk{dir + "/base.img", "msb-base", true});
    line.AttachAgentPort(sock);
    if (!upper.empty()) line.AttachBlock("upper", vm::VmDisk{upper, "msb-upper", false});
    SpawnOptions o;
    o.argv = std::move(line).TakeArgv();
    o.stdout_fd = -2;
    MSB_TRY(qemu_, ChildProcess::Spawn(o));
    pollfd p{listener.get(), POLLIN, 0};
    if (::poll(&p, 1, 30000) != 1) return Error(ErrorCode::kTimeout, "QEMU did not connect the agent port");
    UniqueFd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) return Error::FromErrno("accept");
    chan_ = std::make_unique<FrameChannel>(std::move(conn));
    MSB_TRY(Frame hello, chan_->Receive(kBootWait));
    if (hello.kind != FrameKind::kHello) return Error(ErrorCode::kProtocol, "first frame not hello");
    return chan_->Send(Frame{kChannelId, FrameKind::kHello, Encode(Hello{kProtocolVersion, "test"})});
  }

  // Boots; returns kReady's error, if any; workload output lands in workload_out.
  Result<std::optional<std::string>> Boot(const BootConfig& boot) {
    MSB_TRY_STATUS(chan_->Send(Frame{kChannelId, FrameKind::kBoot, Encode(boot)}));
    auto deadline = Clock::now() + kBootWait;
    for (;;) {
      MSB_TRY(Frame f, chan_->Receive(deadline));
      if (f.kind == FrameKind::kReady) {
        MSB_TRY(Ready r, ParseReady(f.payload));
        return r.error;
      }
      Absorb(f);
    }
  }

  struct Out {
    std::string out, err;
    ExitInfo exit;
  };
  Result<Out> Exec(uint32_t id, const ExecRequest& req) {
    MSB_TRY_STATUS(chan_->Send(Frame{id, FrameKind::kExec, Encode(req)}));
    Out o;
    auto deadline = Clock::now() + kBootWait;
    for (;;) {
      MSB_TRY(Frame f, chan_->Receive(deadline));
      if (f.id != id) {
        Absorb(f);
        continue;
      }
      if (f.kind == FrameKind::kError) return Error(ErrorCode::kProtocol, f.payload);
      if (f.kind == FrameKind::kStdout) o.out += f.payload;
      if (f.kind == FrameKind::kStderr) o.err += f.payload;
      if (f.kind == FrameKind::kStdout || f.kind == FrameKind::kStderr)
        MSB_TRY_STATUS(Credit(id, f.payload.size()));
      if (f.kind == FrameKind::kExit) {
        MSB_TRY(o.exit, ParseExitInfo(f.payload));
        return o;
      }
    }
  }

  Result<ResultMsg> CopyIn(uint32_t id, const std::string& path, const std::string& tar) {
    MSB_TRY_STATUS(chan_->Send(Frame{id, FrameKind::kCopyIn, Encode(PathRequest{path})}));
    MSB_TRY_STATUS(chan_->Send(Frame{id, FrameKind::kData, tar}));  // below one window
    MSB_TRY_STATUS(chan_->Send(Frame{id, FrameKind::kData, ""}));
    auto deadline = Clock::now() + kBootWait;
    for (;;) {
      MSB_TRY(Frame f, chan_->Receive(deadline));
      if (f.id == id && f.kind == FrameKind::kResult) return ParseResultMsg(f.payload);
      if (f.id != id) Absorb(f);
    }
  }

  // Shutdown, then QEMU must end by itself.
  Result<ExitStatus> Shutdown() {
    MSB_TRY_STATUS(chan_->Send(Frame{kChannelId, FrameKind::kShutdown, Encode(agent::Shutdown{5000})}));
    auto deadline = Clock::now() + kBootWait;
    for (;;) {
      MSB_TRY(Frame f, chan_->Receive(deadline));
      if (f.id == kChannelId && f.kind == FrameKind::kResult) break;
      Absorb(f);
    }
    // The guest resets; with -no-reboot QEMU exits. The channel closing shows it.
    for (;;) {
      auto f = chan_->Receive(deadline);
      if (!f.ok() && f.error().code() == ErrorCode::kTimeout) return f.error();
      if (!f.ok()) break;
    }
    return qemu_.Wait();
  }

  std::string workload_out;
  std::optional<ExitInfo> workload_exit;

 private:
  Status Credit(uint32_t id, size_t n) {
    return chan_->Send(Frame{id, FrameKind::kCredit, Encode(agent::Credit{static_cast<uint32_t>(n)})});
  }
  void Absorb(const Frame& f) {
    if (f.id != kWorkloadId) return;
    if (f.kind == FrameKind::kStdout || f.kind == FrameKind::kStderr) {
      workload_out += f.payload;
      (void)Credit(f.id, f.payload.size());
    } else if (f.kind == FrameKind::kExit) {
      workload_exit = *ParseExitInfo(f.payload);
    }
  }

  ChildProcess qemu_;
  std::unique_ptr<FrameChannel> chan_;
};

class AgentdVmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    kernel_ = Kernel();
    if (kernel_.empty() || ::access("/usr/bin/busybox", X_OK) != 0 ||
        ::access("/usr/sbin/mkfs.ext4", X_OK) != 0)
      return;
    char tmpl[] = "/tmp/msb-agentd-vm-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_TRUE(vm::BuildInitramfs(AGENTD_PATH, dir_ + "/initramfs.cpio").ok());
    // A busybox image with two users and a group.
    std::string root = dir_ + "/rootfs";
    ASSERT_TRUE(MakeDirs(root + "/bin").ok() && MakeDirs(root + "/etc").ok() &&
                MakeDirs(root + "/root").ok() && MakeDirs(root + "/tmp").ok());
    fs::copy_file("/usr/bin/busybox", root + "/bin/busybox");
    for (const char* c : {"sh", "cat", "echo", "id", "hostname", "tty", "stty", "ls", "sleep", "stat"})
      fs::create_symlink("busybox", root + "/bin/" + c);
    std::ofstream(root + "/etc/passwd") << "root:x:0:0:root:/root:/bin/sh\n"
                                           "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n";
    std::ofstream(root + "/etc/group") << "root:x:0:\nalice:x:1000:\nstaff:x:50:alice\n";
    // A Debian-style CA bundle, and Alpine's link to it.
    ASSERT_TRUE(MakeDirs(root + "/etc/ssl/certs").ok());
    std::ofstream(root + "/etc/ssl/certs/ca-certificates.crt") << kSystemPem;
    fs::create_symlink("certs/ca-certificates.crt", root + "/etc/ssl/cert.pem");
    auto mk = RunCapture({"mkfs.ext4", "-q", "-F", "-d", root, dir_ + "/base.img", "32M"});
    ASSERT_TRUE(mk.ok() && mk->status.code == 0) << (mk.ok() ? mk->output : mk.error().message());
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  void SetUp() override {
    if (dir_.empty()) GTEST_SKIP() << "needs a guest kernel (msb kernel build), busybox and mkfs.ext4";
  }
  std::string NewUpper(const std::string& name) {
    std::string p = dir_ + "/" + name;
    auto mk = RunCapture({"mkfs.ext4", "-q", "-F", p, "64M"});
    EXPECT_TRUE(mk.ok() && mk->status.code == 0);
    return p;
  }
  std::string Console() {
    auto c = ReadFile(dir_ + "/console.log");
    return c.ok() ? *c : "";
  }

  static BootConfig Boot(std::vector<std::string> command) {
    BootConfig b;
    b.hostname = "guest1";
    b.env = {"GREETING=hello"};
    b.command = std::move(command);
    return b;
  }

  static constexpr const char* kSystemPem =
      "-----BEGIN CERTIFICATE-----\nU1lTVEVN\n-----END CERTIFICATE-----\n";
  static inline std::string kernel_;
  static inline std::string dir_;
};

ExecRequest Cmd(std::vector<std::string> argv) {
  ExecRequest r;
  r.argv = std::move(argv);
  return r;
}

// A one-file tar (ustar) made by hand: name, mode, contents.
std::string OneFileTar(const std::string& name, const std::string& data, int mode) {
  std::string h(512, '\0');
  auto put = [&](size_t off, const std::string& s) { h.replace(off, s.size(), s); };
  auto octal = [](unsigned long v, int width) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%0*lo", width - 1, v);
    return std::string(buf);
  };
  put(0, name);
  put(100, octal(mode, 8));
  put(108, octal(0, 8));
  put(116, octal(0, 8));
  put(124, octal(data.size(), 12));
  put(136, octal(0, 12));
  put(148, "        ");
  h[156] = '0';
  put(257, "ustar");
  put(263, "00");
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  put(148, octal(sum, 7));
  std::string body = data + std::string((512 - data.size() % 512) % 512, '\0');
  return h + body + std::string(1024, '\0');
}

TEST_F(AgentdVmTest, BootsExecsAndPersistsTheWritableLayer) {
  std::string upper = NewUpper("upper.img");
  {
    Guest g;
    ASSERT_TRUE(g.Start(dir_, kernel_, upper).ok()) << Console();
    auto ready = g.Boot(Boot({"sh", "-c", "echo $GREETING from $(hostname)"}));
    ASSERT_TRUE(ready.ok()) << ready.error().message() << Console();
    ASSERT_FALSE(*ready) << **ready;

    auto mounts = g.Exec(2, Cmd({"cat", "/proc/mounts"}));
    ASSERT_TRUE(mounts.ok()) << mounts.error().message();
    EXPECT_NE(mounts->out.find("overlay / overlay"), std::string::npos) << mounts->out;

    auto id = g.Exec(3, [] {
      ExecRequest r = Cmd({"id"});
      r.user = "alice";
      return r;
    }());
    ASSERT_TRUE(id.ok());
    EXPECT_EQ(id->out, "uid=1000(alice) gid=1000(alice) groups=50(staff)\n");

    auto tty = g.Exec(4, [] {
      ExecRequest r = Cmd({"sh", "-c", "tty; stty size"});
      r.tty = true;
      r.rows = 30;
      r.cols = 90;
      return r;
    }());
    ASSERT_TRUE(tty.ok());
    EXPECT_EQ(tty->out, "/dev/pts/0\r\n30 90\r\n");

    auto missing = g.Exec(5, Cmd({"no-such-tool"}));
    ASSERT_TRUE(missing.ok());
    EXPECT_EQ(missing->exit.code, 127);
    EXPECT_EQ(missing->err, "msb: no-such-tool: command not found\n");

    auto in = g.CopyIn(6, "/srv/drop", OneFileTar("note.txt", "carried in\n", 0640));
    ASSERT_TRUE(in.ok());
    EXPECT_FALSE(in->error) << *in->error;
    ASSERT_TRUE(g.Exec(7, Cmd({"sh", "-c", "echo kept > /root/state"})).ok());

    auto status = g.Shutdown();
    ASSERT_TRUE(status.ok()) << status.error().message();
    EXPECT_EQ(status->code, 0);
    EXPECT_EQ(g.workload_out, "hello from guest1\n");
    EXPECT_NE(Console().find("agentd: powering off"), std::string::npos) << Console();
  }
  {
    // Same upper disk: the files are still there.
    Guest g;
    ASSERT_TRUE(g.Start(dir_, kernel_, upper).ok()) << Console();
    auto ready = g.Boot(Boot({}));
    ASSERT_TRUE(ready.ok() && !*ready);
    auto out = g.Exec(2, Cmd({"sh", "-c", "cat /root/state /srv/drop/note.txt; stat -c %a /srv/drop/note.txt"}));
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(out->out, "kept\ncarried in\n640\n");
    ASSERT_TRUE(g.Shutdown().ok());
  }
}

TEST_F(AgentdVmTest, EphemeralLayerStartsEmpty) {
  for (int boot = 0; boot < 2; ++boot) {
    Guest g;
    ASSERT_TRUE(g.Start(dir_, kernel_, "").ok()) << Console();
    BootConfig b = Boot({});
    b.root.ephemeral = true;
    b.root.upper_size_bytes = 8 << 20;
    auto ready = g.Boot(b);
    ASSERT_TRUE(ready.ok() && !*ready) << (ready.ok() ? **ready : ready.error().message());
    auto out = g.Exec(2, Cmd({"sh", "-c", "cat /root/state 2>/dev/null || echo absent; echo x > /root/state"}));
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(out->out, "absent\n") << "boot " << boot;
    ASSERT_TRUE(g.Shutdown().ok());
  }
}

TEST_F(AgentdVmTest, TrustsTheSandboxCaForOneBoot) {
  const std::string pem = "-----BEGIN CERTIFICATE-----\nU0FOREJPWA==\n-----END CERTIFICATE-----\n";
  std::string upper = NewUpper("upper-ca.img");
  {
    Guest g;
    ASSERT_TRUE(g.Start(dir_, kernel_, upper).ok()) << Console();
    BootConfig b = Boot({"sh", "-c", "echo \"$SSL_CERT_FILE $NODE_EXTRA_CA_CERTS\""});
    b.ca_pem = pem;
    b.env.push_back("CURL_CA_BUNDLE=/mine.pem");  // the sandbox's own setting wins
    auto ready = g.Boot(b);
    ASSERT_TRUE(ready.ok() && !*ready) << (ready.ok() ? **ready : ready.error().message()) << Console();
    auto files = g.Exec(2, Cmd({"sh", "-c",
                                "cat /usr/local/share/ca-certificates/msb.crt; echo --; cat /etc/ssl/cert.pem;"
                                " echo --; ls -l /etc/ssl/cert.pem; stat -c %a /etc/ssl/certs/ca-certificates.crt"}));
    ASSERT_TRUE(files.ok()) << files.error().message();
    std::string block = "# msb sandbox CA begin\n" + pem + "# msb sandbox CA end\n";
    EXPECT_EQ(files->out.substr(0, files->out.find("--\nlrwx")), pem + "--\n" + kSystemPem + block)
        << files->out;
    EXPECT_NE(files->out.find("/etc/ssl/cert.pem -> certs/ca-certificates.crt\n644\n"), std::string::npos)
        << files->out;
    auto env = g.Exec(3, Cmd({"sh", "-c", "echo \"$SSL_CERT_FILE $REQUESTS_CA_BUNDLE $CURL_CA_BUNDLE\""}));
    ASSERT_TRUE(env.ok()) << env.error().message();
    EXPECT_EQ(env->out, "/etc/ssl/msb-ca-bundle.pem /etc/ssl/msb-ca-bundle.pem /mine.pem\n");
    ASSERT_TRUE(g.Shutdown().ok());
    EXPECT_EQ(g.workload_out, "/etc/ssl/msb-ca-bundle.pem /usr/local/share/ca-certificates/msb.crt\n");
  }
  {
    // The same writable layer booted without a CA: the last one is gone.
    Guest g;
    ASSERT_TRUE(g.Start(dir_, kernel_, upper).ok()) << Console();
    auto ready = g.Boot(Boot({}));
    ASSERT_TRUE(ready.ok() && !*ready) << (ready.ok() ? **ready : ready.error().message()) << Console();
    auto out = g.Exec(2, Cmd({"sh", "-c",
                              "cat /etc/ssl/cert.pem; ls /usr/local/share/ca-certificates /etc/ssl;"
                              " echo \"[$SSL_CERT_FILE]\""}));
    ASSERT_TRUE(out.ok()) << out.error().message();
    EXPECT_EQ(out->out, std::string(kSystemPem) +
                            "/etc/ssl:\ncert.pem\ncerts\n\n/usr/local/share/ca-certificates:\n[]\n")
        << out->out;
    ASSERT_TRUE(g.Shutdown().ok());
  }
}

TEST_F(AgentdVmTest, MissingDiskIsABootErrorAndShutdownStillWorks) {
  Guest g;
  ASSERT_TRUE(g.Start(dir_, kernel_, "").ok()) << Console();
  auto ready = g.Boot(Boot({"true"}));  // not ephemeral, and no upper disk attached
  ASSERT_TRUE(ready.ok()) << ready.error().message();
  ASSERT_TRUE(*ready);
  EXPECT_NE((*ready)->find("no virtio-blk disk with serial \"msb-upper\" (disks seen: vda=\"msb-base\")"),
            std::string::npos)
      << **ready;
  auto exec = g.Exec(2, Cmd({"true"}));
  ASSERT_FALSE(exec.ok());
  EXPECT_NE(exec.error().message().find("not supported while boot failed"), std::string::npos);
  auto status = g.Shutdown();
  ASSERT_TRUE(status.ok()) << status.error().message();
  EXPECT_EQ(status->code, 0);
}

}  // namespace
}  // namespace msb::agent
