// msb: the host binary. Parses the command line and dispatches to the command
// registered by each component; see cli.h.
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/cli.h"
#include "common/io.h"

namespace msb::cli {
namespace {
int g_exit = 0;
}

void OnRun(CLI::App* cmd, std::function<int()> fn) {
  cmd->callback([fn = std::move(fn)]() { g_exit = fn(); });
}
int ExitCode() { return g_exit; }

namespace {
mode_t g_user_umask = 022;
}  // namespace
mode_t UserUmask() { return g_user_umask; }
void SetUserUmask(mode_t mask) { g_user_umask = mask; }

int Fail(const std::string& message) {
  std::fprintf(stderr, "msb: %s\n", message.c_str());
  return 1;
}

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  if (rows.empty()) return;
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size() && i < width.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    line += '\n';
    std::fputs(line.c_str(), stdout);
  }
}

void AddRegistryFlags(CLI::App* cmd, RegistryFlags* flags) {
  cmd->add_option("--insecure-registry", flags->insecure,
                  "talk plain HTTP to this registry HOST:PORT (repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("--registry-ca", flags->cas,
                  "trust this CA file for a registry: HOST:PORT=FILE (repeatable)")
      ->allow_extra_args(false);
}

}  // namespace msb::cli

int main(int argc, char** argv) {
  // $MSB_HOME holds environment values, disks and logs: private to its
  // owner, whatever created it and whatever this process creates there.
  msb::cli::SetUserUmask(::umask(msb::kPrivateUmask));
  const std::string home = msb::MsbHome();
  if (auto was = msb::MakeDirPrivate(home); !was.ok()) {
    std::fprintf(stderr, "msb: warning: %s\n", was.error().message().c_str());
  } else if (*was) {
    std::fprintf(stderr, "msb: %s was mode %04o, open to other users; it is now 0700\n", home.c_str(), **was);
  }
  CLI::App app{"msb: run untrusted code in microVMs declared in a Sandboxfile", "msb"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every command");
  msb::cli::RegisterConfigCommands(app);
  msb::cli::RegisterProjectCommands(app);
  msb::cli::RegisterSyncCommands(app);
  msb::cli::RegisterSandboxCommands(app);
  msb::cli::RegisterSupervisorCommand(app);
  msb::cli::RegisterKernelCommands(app);
  msb::cli::RegisterVolumeCommands(app);
  msb::cli::RegisterSnapshotCommands(app);
  msb::cli::RegisterTemplateCommands(app);
  msb::cli::RegisterPullCommand(app);
  msb::cli::RegisterImageCommands(app);
  msb::cli::RegisterLoginCommands(app);
  msb::cli::RegisterNetCommands(app);
  msb::cli::RegisterExportCommands(app);
  msb::cli::RegisterHelpCommands(app);  // last: it groups the commands above
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : msb::cli::UsageExitCode(app);
  }
  return msb::cli::ExitCode();
}
