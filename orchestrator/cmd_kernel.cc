// msb kernel build / msb kernel path.
#include "orchestrator/cli.h"

namespace msb::cli {
void RegisterKernelCommands(CLI::App& app) {}
}  // namespace msb::cli
