// agentd's own diagnostics: one "agentd: ..." line per write(2) to the
// diagnostics fd (/dev/console when PID 1, stderr in serve mode). Not the
// workload's output, which travels over the agent channel.
#pragma once

#include <string_view>

namespace msb::agent {

void SetDiagFd(int fd);
void Diag(std::string_view message);

}  // namespace msb::agent
