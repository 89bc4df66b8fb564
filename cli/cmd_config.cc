// msb validate / msb config: load the Sandboxfile and report every problem,
// or print its canonical form or per-sandbox config hashes. Read-only: these
// commands never start, stop or contact anything.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "cli/cli.h"
#include "schema/sandboxfile.h"
#include "schema/values.h"

namespace msb::cli {

void AddProjectFlags(CLI::App* cmd, ProjectFlags* flags) {
  cmd->add_option("-f,--file", flags->file, "Sandboxfile to read (default: ./Sandboxfile, else ./msb.yaml)");
  AddProjectNameFlag(cmd, &flags->name);
}

void AddProjectNameFlag(CLI::App* cmd, std::string* name) {
  cmd->add_option("-p,--project-name", *name,
                  "project name (default: $MSB_PROJECT_NAME, else the Sandboxfile's name:, else its "
                  "directory's name)");
}

std::string ProjectNameOverride(const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* env = std::getenv("MSB_PROJECT_NAME");
  return env != nullptr ? env : "";
}

namespace {

// The -p or $MSB_PROJECT_NAME name, checked as the file's name: is.
Result<std::string> NameOverride(const std::string& flag) {
  std::string name = ProjectNameOverride(flag);
  if (name.empty() || schema::IsValidName(name)) return name;
  std::string from = flag.empty() ? "MSB_PROJECT_NAME" : "-p";
  return Error(ErrorCode::kInvalidArgument,
               "invalid project name \"" + name + "\" (" + from + "): use " + schema::kNameRule);
}

}  // namespace

std::optional<schema::Project> LoadProjectOrReport(const ProjectFlags& flags) {
  auto name = NameOverride(flags.name);
  if (!name.ok()) {
    Fail(name.error().message());
    return std::nullopt;
  }
  schema::LoadOptions options;
  options.file = flags.file;
  schema::Diagnostics diags;
  options.diagnostics = &diags;
  auto project = schema::LoadSandboxfile(options);
  if (diags.items().empty() && !project.ok()) {  // not found, unreadable
    Fail(project.error().message());
    return std::nullopt;
  }
  std::fputs(diags.ToString().c_str(), stderr);
  if (!project.ok()) {
    size_t n = diags.ErrorCount();
    Fail(std::to_string(n) + (n == 1 ? " error" : " errors"));
    return std::nullopt;
  }
  if (!name->empty()) project->name = *name;
  return std::move(project).value();
}

std::string CurrentProject(const std::string& flag) {
  std::string name = ProjectNameOverride(flag);
  if (!name.empty()) return name;
  schema::LoadOptions options;
  schema::Diagnostics quiet;
  options.diagnostics = &quiet;
  auto project = schema::LoadSandboxfile(options);
  return project.ok() ? project->name : "";
}

namespace {
std::optional<schema::Project> Load(const ProjectFlags& flags) { return LoadProjectOrReport(flags); }
}  // namespace

void RegisterConfigCommands(CLI::App& app) {
  struct Flags {
    ProjectFlags project;
    bool hash = false;
    bool json = false;
  };
  auto flags = std::make_shared<Flags>();

  CLI::App* validate = app.add_subcommand("validate", "Check the Sandboxfile; print ok or every error");
  AddProjectFlags(validate, &flags->project);
  OnRun(validate, [flags] {
    if (!Load(flags->project)) return 1;
    std::puts("ok");
    return 0;
  });

  CLI::App* config = app.add_subcommand(
      "config", "Print the canonical form of the Sandboxfile (defaults filled, paths absolute)");
  AddProjectFlags(config, &flags->project);
  config->add_flag("--hash", flags->hash, "Print NAME HASH per sandbox (the config hash that decides replacement)");
  config->add_flag("--json", flags->json, "Print JSON instead of YAML");
  OnRun(config, [flags] {
    auto project = Load(flags->project);
    if (!project) return 1;
    if (flags->hash) {
      nlohmann::json hashes = nlohmann::json::object();
      for (const auto& [name, sb] : project->sandboxes) {  // std::map: sorted by name
        std::string hash = schema::ConfigHash(sb);
        if (flags->json) hashes[name] = hash;
        else std::printf("%s %s\n", name.c_str(), hash.c_str());
      }
      if (flags->json) std::puts(hashes.dump(2).c_str());
      return 0;
    }
    if (flags->json) {
      std::puts(schema::CanonicalJson(*project).dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      std::fputs(schema::CanonicalYaml(*project).c_str(), stdout);
    }
    return 0;
  });
}

}  // namespace msb::cli
