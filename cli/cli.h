// The msb command line: each component's commands register themselves on the
// CLI11 app through one function here. Not the logic of any command.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <optional>

#include "schema/model.h"

namespace msb::cli {

// Attaches fn as the command's action; its return value is msb's exit code.
void OnRun(CLI::App* cmd, std::function<int()> fn);
int ExitCode();

// Prints "msb: message" to stderr and returns 1 (for `return Fail(...)`).
int Fail(const std::string& message);

// Prints rows (the first is the header) as left-aligned columns on stdout.
void PrintTable(const std::vector<std::vector<std::string>>& rows);

// Loads the Sandboxfile (-f FILE, else the current directory's), printing
// every diagnostic to stderr; nullopt (exit 1) when there is any error.
std::optional<schema::Project> LoadProjectOrReport(const std::string& file);

// --insecure-registry and --registry-ca, for commands that may pull.
struct RegistryFlags {
  std::vector<std::string> insecure;  // HOST[:PORT]
  std::vector<std::string> cas;       // HOST[:PORT]=FILE
};
void AddRegistryFlags(CLI::App* cmd, RegistryFlags* flags);

void RegisterConfigCommands(CLI::App& app);   // validate, config
void RegisterProjectCommands(CLI::App& app);  // plan, up, down, start, restart
void RegisterSandboxCommands(CLI::App& app);  // run, exec, shell, logs, cp, stop, rm, ps, kernel
void RegisterSupervisorCommand(CLI::App& app);  // hidden: the per-sandbox supervisor
void RegisterKernelCommands(CLI::App& app);     // kernel build, kernel path
void RegisterVolumeCommands(CLI::App& app);     // volume ls, volume rm
void RegisterPullCommand(CLI::App& app);        // pull
void RegisterImageCommands(CLI::App& app);      // images, rmi, load, image ls/rm/load/prune
void RegisterLoginCommands(CLI::App& app);      // login, logout
void RegisterNetCommands(CLI::App& app);        // net check

}  // namespace msb::cli
