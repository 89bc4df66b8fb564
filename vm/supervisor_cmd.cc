// The hidden `msb supervisor` command.
#include "orchestrator/cli.h"

namespace msb::cli {
void RegisterSupervisorCommand(CLI::App& app) {}
}  // namespace msb::cli
