// agentd's entry point. As the guest's PID 1 (getpid() == 1) it
// mounts the early file systems, opens the "msb.agent" virtio-serial port and
// serves the agent protocol; `--serve-fd N` / `--serve-stdio` serve the same
// protocol on an already-connected fd without mounting anything (tests, and
// agentd run by hand).
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "agentd/agentd_log.h"
#include "agentd/guest_init.h"
#include "agent/protocol.h"
#include "agentd/server.h"

namespace msb::agent {
namespace {

constexpr const char* kUsage =
    "usage: agentd                  (as PID 1 in an msb guest)\n"
    "       agentd --serve-fd N     serve the agent protocol on connected fd N\n"
    "       agentd --serve-stdio    serve it reading fd 0, writing fd 1\n"
    "       agentd --version\n";

// Where the initramfs holds a modular kernel's modules (vm/initramfs.h).
constexpr char kModulesDir[] = "/lib/modules/msb";

[[noreturn]] void Pid1Main() {
  Status modules = LoadModules(kModulesDir);
  Status early = MountEarly();
  int console = ::open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (console >= 0) {
    SetDiagFd(console);
    // Anything written to the standard fds ends on the console too.
    for (int fd = 0; fd < 3; ++fd) ::dup2(console, fd);
  }
  if (!modules.ok()) Diag("kernel modules: " + modules.error().message());
  if (!early.ok()) Diag("early mounts: " + early.error().message());
  auto port = FindPortDevice(kPortName, 10000);
  if (!port.ok()) {
    Diag(port.error().message());
    PowerOff();
  }
  int fd = ::open(port->c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    Diag("open " + *port + ": " + std::strerror(errno));
    PowerOff();
  }
  Server server(ServerMode::kPid1, UniqueFd(fd), UniqueFd());
  server.Run();
  Diag("server loop ended");
  PowerOff();
}

int ServeMain(int in_fd, int out_fd) {
  if (::fcntl(in_fd, F_GETFD) < 0 || (out_fd >= 0 && ::fcntl(out_fd, F_GETFD) < 0)) {
    std::fprintf(stderr, "agentd: fd %d is not open\n", ::fcntl(in_fd, F_GETFD) < 0 ? in_fd : out_fd);
    return 2;
  }
  Server server(ServerMode::kServe, UniqueFd(in_fd), out_fd >= 0 ? UniqueFd(out_fd) : UniqueFd());
  return server.Run();
}

}  // namespace
}  // namespace msb::agent

int main(int argc, char** argv) {
  using namespace msb::agent;
  // The kernel hands init the command-line words it does not know, so as PID 1
  // the arguments are ignored.
  if (::getpid() == 1) Pid1Main();
  if (argc == 2 && std::strcmp(argv[1], "--serve-stdio") == 0) return ServeMain(0, 1);
  if (argc == 3 && std::strcmp(argv[1], "--serve-fd") == 0) {
    char* end = nullptr;
    long fd = std::strtol(argv[2], &end, 10);
    if (end == argv[2] || *end != '\0' || fd < 0 || fd > 1 << 20) {
      std::fprintf(stderr, "agentd: --serve-fd needs a file descriptor number, not \"%s\"\n", argv[2]);
      return 2;
    }
    return ServeMain(static_cast<int>(fd), -1);
  }
  if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
    std::printf("agentd, agent protocol version %d\n", kProtocolVersion);
    return 0;
  }
  std::fputs(kUsage, stderr);
  return 2;
}
