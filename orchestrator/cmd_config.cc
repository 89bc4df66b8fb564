// msb validate / msb config.
#include "orchestrator/cli.h"

namespace msb::cli {
void RegisterConfigCommands(CLI::App& app) {}
}  // namespace msb::cli
