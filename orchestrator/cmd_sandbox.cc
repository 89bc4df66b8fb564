// msb run / exec / shell / logs / cp / stop / rm / ps / kernel.
#include "orchestrator/cli.h"

namespace msb::cli {
void RegisterSandboxCommands(CLI::App& app) {}
}  // namespace msb::cli
