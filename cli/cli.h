// The msb command line: each component's commands register themselves on the
// CLI11 app through one function here. Not the logic of any command.
#pragma once

#include <sys/types.h>

#include <CLI/CLI.hpp>

#include <functional>
#include <optional>

#include "schema/model.h"

namespace msb::cli {

// Attaches fn as the command's action; its return value is msb's exit code.
void OnRun(CLI::App* cmd, std::function<int()> fn);
int ExitCode();

// The umask msb was started with, before it set kPrivateUmask for its own
// files: what files msb writes for the user outside $MSB_HOME are masked by.
mode_t UserUmask();
void SetUserUmask(mode_t mask);

// The exit code of a command line CLI11 refused: 125 for run and exec (as
// docker's), 2 for every other command.
int UsageExitCode(const CLI::App& app);

// Prints "msb: message" to stderr and returns 1 (for `return Fail(...)`).
int Fail(const std::string& message);

// Prints rows (the first is the header) as left-aligned columns on stdout.
void PrintTable(const std::vector<std::vector<std::string>>& rows);

// -f FILE and -p NAME, for every command that reads a Sandboxfile.
struct ProjectFlags {
  std::string file;  // empty: ./Sandboxfile, else ./msb.yaml
  std::string name;  // -p; empty: $MSB_PROJECT_NAME, else the file's name:, else the directory's
};
void AddProjectFlags(CLI::App* cmd, ProjectFlags* flags);
// -p NAME alone, for per-sandbox commands (the current project, see below).
void AddProjectNameFlag(CLI::App* cmd, std::string* name);

// The project name given by -p (flag), else by $MSB_PROJECT_NAME; empty
// when neither is set.
std::string ProjectNameOverride(const std::string& flag);

// Loads the Sandboxfile (-f FILE, else the current directory's) and names
// the project (-p, else $MSB_PROJECT_NAME, else name:, else the directory),
// printing every diagnostic to stderr; nullopt (exit 1) when there is any
// error, an invalid -p or $MSB_PROJECT_NAME included.
std::optional<schema::Project> LoadProjectOrReport(const ProjectFlags& flags);

// msb down: removes the project's sandboxes (only `names` when not empty),
// dependents first, and with `volumes` its named volumes no sandbox still
// attaches; forgets the project once nothing of it is left. Exit code.
int Down(const ProjectFlags& flags, const std::vector<std::string>& names, bool volumes);

// The project a per-sandbox command looks in first: -p, else
// $MSB_PROJECT_NAME, else the name of the current directory's Sandboxfile
// (found as msb up finds it; its diagnostics are not printed); empty when
// there is none or it does not load.
std::string CurrentProject(const std::string& flag);

// --json, and --format json as its synonym: one JSON document on stdout
// (cli/json_output.h builds each; docs/cli-json.md lists the fields).
void AddJsonFlags(CLI::App* cmd, bool* json);

// --insecure-registry and --registry-ca, for commands that may pull.
struct RegistryFlags {
  std::vector<std::string> insecure;  // HOST[:PORT]
  std::vector<std::string> cas;       // HOST[:PORT]=FILE
};
void AddRegistryFlags(CLI::App* cmd, RegistryFlags* flags);

void RegisterConfigCommands(CLI::App& app);   // validate, config
void RegisterProjectCommands(CLI::App& app);  // plan, up, down, start, restart
void RegisterSyncCommands(CLI::App& app);     // sync, sync status
void RegisterSandboxCommands(CLI::App& app);  // run, exec, shell, logs, cp, stop, rm, ps, kernel
void RegisterLogsCommand(CLI::App& app);      // logs (called by RegisterSandboxCommands)
void RegisterPsCommand(CLI::App& app);        // ps (called by RegisterSandboxCommands)
void RegisterSupervisorCommand(CLI::App& app);  // hidden: the per-sandbox supervisor
void RegisterKernelCommands(CLI::App& app);     // kernel build, kernel path
void RegisterVolumeCommands(CLI::App& app);     // volume ls, volume rm
void RegisterSnapshotCommands(CLI::App& app);   // snapshot create, ls, rm
void RegisterTemplateCommands(CLI::App& app);   // template ls, rm, prune
void RegisterPullCommand(CLI::App& app);        // pull
void RegisterImageCommands(CLI::App& app);      // images, rmi, load, image ls/rm/load/prune
void RegisterLoginCommands(CLI::App& app);      // login, logout
void RegisterNetCommands(CLI::App& app);        // net check
void RegisterExportCommands(CLI::App& app);     // export kubernetes
// Last: help groups, --version and version, hidden __complete and __man.
void RegisterHelpCommands(CLI::App& app);

// "msb 0.1.0 (git describe of the source tree)", or "msb 0.1.0" when built
// outside a git checkout.
std::string VersionLine();

}  // namespace msb::cli
