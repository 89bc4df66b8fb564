// msb: the host binary. Parses the command line and dispatches to the command
// registered by each component; see cli.h.
#include <cstdio>

#include "orchestrator/cli.h"

namespace msb::cli {
namespace {
int g_exit = 0;
}

void OnRun(CLI::App* cmd, std::function<int()> fn) {
  cmd->callback([fn = std::move(fn)]() { g_exit = fn(); });
}
int ExitCode() { return g_exit; }

int Fail(const std::string& message) {
  std::fprintf(stderr, "msb: %s\n", message.c_str());
  return 1;
}

}  // namespace msb::cli

int main(int argc, char** argv) {
  CLI::App app{"msb: run untrusted code in microVMs declared in a Sandboxfile", "msb"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every command");
  msb::cli::RegisterConfigCommands(app);
  msb::cli::RegisterProjectCommands(app);
  msb::cli::RegisterSandboxCommands(app);
  msb::cli::RegisterSupervisorCommand(app);
  msb::cli::RegisterKernelCommands(app);
  msb::cli::RegisterVolumeCommands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  return msb::cli::ExitCode();
}
