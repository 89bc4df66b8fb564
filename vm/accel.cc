// The KVM boot probe: boot the guest kernel with no usable init and panic=-1;
// a working accelerator reaches the panic and QEMU exits by itself well within
// the deadline. A broken one (kvm_pvm here) is slow or dies with an internal
// error. Anything but a clean, prompt exit with the panic on the console means
// TCG.
#include "vm/accel.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>

#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"
#include "common/log.h"
#include "vm/qemu_cmdline.h"

namespace msb::vm {
namespace {

constexpr auto kProbeDeadline = std::chrono::seconds(8);

// Empty when KVM works; else why it does not.
std::string ProbeKvm(const std::string& kernel, const std::string& qemu) {
  UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm) return std::string("/dev/kvm cannot be opened: ") + std::strerror(errno);
  kvm.Reset();
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return std::string("pipe2: ") + std::strerror(errno);
  UniqueFd rd(p[0]), wr(p[1]);
  SpawnOptions o;
  // The sandbox's machine with no devices: the kernel finds no init and panics.
  MicrovmConfig m;
  m.qemu = qemu;
  m.kvm = true;
  m.memory_mib = 128;
  m.kernel = kernel;
  m.kernel_args = "rdinit=/msb-accel-probe";
  QemuCommandLine line = QemuCommandLine::ForMicrovm(m);
  line.AttachSerialStdio();
  o.argv = std::move(line).TakeArgv();
  o.stdout_fd = wr.get();
  o.stderr_fd = wr.get();
  o.parent_death_signal = SIGKILL;
  auto child = ChildProcess::Spawn(o);
  if (!child.ok()) return "the KVM test boot did not start: " + child.error().message();
  wr.Reset();
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + kProbeDeadline;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {  // too slow: the child is killed on return
      return "a test boot under KVM did not finish within " +
             std::to_string(std::chrono::duration_cast<std::chrono::seconds>(kProbeDeadline).count()) +
             " s (a KVM that cannot run this kernel)";
    }
    pollfd pfd{rd.get(), POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(rd.get(), buf, sizeof buf);
    if (n <= 0) break;
    if (out.size() < (1 << 20)) out.append(buf, static_cast<size_t>(n));
  }
  ExitStatus st = child->Wait();
  if (out.find("KVM internal error") != std::string::npos) return "a test boot under KVM hit a KVM internal error";
  if (st.signal != 0 || out.find("Kernel panic") == std::string::npos) {
    return "a test boot under KVM did not reach its end (" + st.ToString() + ")";
  }
  return "";
}

// Once per msb process: TCG chosen by auto is a weaker boundary than KVM.
void NoteTcgFallback(const std::string& why) {
  static std::once_flag once;
  std::call_once(once, [&why] {
    std::fprintf(stderr,
                 "msb: note: no usable KVM (%s); microVMs run under TCG, so their isolation rests on "
                 "QEMU's emulator rather than hardware virtualization. MSB_ACCEL=tcg chooses TCG "
                 "without this note.\n",
                 why.c_str());
  });
}

}  // namespace

Result<std::string> ChooseAccel(const std::string& kernel, const std::string& qemu) {
  const char* env = std::getenv("MSB_ACCEL");
  std::string want = env != nullptr && *env != '\0' ? env : "auto";
  if (want == "kvm" || want == "tcg") return want;
  if (want != "auto") {
    return Error(ErrorCode::kInvalidArgument,
                 "MSB_ACCEL is \"" + want + "\"; use kvm, tcg or auto");
  }
  std::string cache = MsbHome() + "/accel.json";
  if (auto text = ReadFile(cache); text.ok()) {
    auto j = nlohmann::json::parse(*text, nullptr, false);
    if (j.is_object() && j.value("kernel", "") == kernel && j.value("qemu", "") == qemu &&
        j.contains("accel") && j["accel"].is_string()) {
      std::string accel = j["accel"].get<std::string>();
      if (accel != "kvm") NoteTcgFallback(j.value("reason", "the cached probe found none"));
      return accel;
    }
  }
  std::string why = ProbeKvm(kernel, qemu);
  std::string verdict = why.empty() ? "kvm" : "tcg";
  MSB_LOG(kInfo, "vm") << "accelerator probe: " << verdict << (why.empty() ? "" : " (" + why + ")");
  (void)MakeDirs(MsbHome());
  (void)WriteFileAtomic(cache, nlohmann::json{{"kernel", kernel}, {"qemu", qemu}, {"accel", verdict},
                                              {"reason", why}}
                                   .dump());
  if (!why.empty()) NoteTcgFallback(why);
  return verdict;
}

}  // namespace msb::vm
