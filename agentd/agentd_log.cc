// Diag(): agentd's console/stderr lines (agentd_log.h).
#include "agentd/agentd_log.h"

#include <unistd.h>

#include <atomic>
#include <string>

namespace msb::agent {
namespace {
std::atomic<int> g_diag_fd{2};
}  // namespace

void SetDiagFd(int fd) { g_diag_fd.store(fd); }

void Diag(std::string_view message) {
  std::string line = "agentd: ";
  line += message;
  line += '\n';
  ssize_t unused = ::write(g_diag_fd.load(), line.data(), line.size());
  (void)unused;
}

}  // namespace msb::agent
