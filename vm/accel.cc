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

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"
#include "common/log.h"
#include "vm/qemu_cmdline.h"

namespace msb::vm {
namespace {

constexpr auto kProbeDeadline = std::chrono::seconds(8);

bool ProbeKvm(const std::string& kernel, const std::string& qemu) {
  UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm) return false;
  kvm.Reset();
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return false;
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
  if (!child.ok()) return false;
  wr.Reset();
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + kProbeDeadline;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;  // too slow: the child is killed on return
    pollfd pfd{rd.get(), POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(rd.get(), buf, sizeof buf);
    if (n <= 0) break;
    if (out.size() < (1 << 20)) out.append(buf, static_cast<size_t>(n));
  }
  ExitStatus st = child->Wait();
  return st.signal == 0 && out.find("Kernel panic") != std::string::npos &&
         out.find("KVM internal error") == std::string::npos;
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
      return j["accel"].get<std::string>();
    }
  }
  std::string verdict = ProbeKvm(kernel, qemu) ? "kvm" : "tcg";
  MSB_LOG(kInfo, "vm") << "accelerator probe: " << verdict;
  (void)MakeDirs(MsbHome());
  (void)WriteFileAtomic(cache,
                        nlohmann::json{{"kernel", kernel}, {"qemu", qemu}, {"accel", verdict}}.dump());
  return verdict;
}

}  // namespace msb::vm
