// msb validate / msb config: load the Sandboxfile and report every problem,
// or print its canonical form or per-sandbox config hashes. Read-only: these
// commands never start, stop or contact anything.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "cli/cli.h"
#include "cli/json_output.h"
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

void AddJsonFlags(CLI::App* cmd, bool* json) {
  cmd->add_flag("--json", *json, "print one JSON document (fields: docs/cli-json.md)");
  cmd->add_option_function<std::string>(
         "--format", [json](const std::string&) { *json = true; }, "output format: json (the same as --json)")
      ->check(CLI::IsMember({"json"}));
}

namespace {

// The project, or why not: an invalid -p or $MSB_PROJECT_NAME, a file not
// found or unreadable (nothing in *diags), or the file's errors (in *diags).
Result<schema::Project> LoadProject(const ProjectFlags& flags, schema::Diagnostics* diags) {
  MSB_TRY(std::string name, NameOverride(flags.name));
  schema::LoadOptions options;
  options.file = flags.file;
  options.diagnostics = diags;
  MSB_TRY(schema::Project project, schema::LoadSandboxfile(options));
  if (!name.empty()) project.name = name;
  return project;
}

int ErrorCountFail(const schema::Diagnostics& diags) {
  size_t n = diags.ErrorCount();
  return Fail(std::to_string(n) + (n == 1 ? " error" : " errors"));
}

}  // namespace

std::optional<schema::Project> LoadProjectOrReport(const ProjectFlags& flags) {
  schema::Diagnostics diags;
  auto project = LoadProject(flags, &diags);
  if (diags.items().empty() && !project.ok()) {  // bad -p, not found, unreadable
    Fail(project.error().message());
    return std::nullopt;
  }
  std::fputs(diags.ToString().c_str(), stderr);
  if (!project.ok()) {
    ErrorCountFail(diags);
    return std::nullopt;
  }
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
  auto validate_json = std::make_shared<bool>(false);
  AddJsonFlags(validate, validate_json.get());
  OnRun(validate, [flags, validate_json] {
    if (!*validate_json) {
      if (!Load(flags->project)) return 1;
      std::puts("ok");
      return 0;
    }
    // Every diagnostic, warnings included, as JSON on stdout; the count of
    // errors on stderr, as without --json.
    schema::Diagnostics diags;
    auto project = LoadProject(flags->project, &diags);
    if (diags.items().empty() && !project.ok()) return Fail(project.error().message());
    std::string file = flags->project.file;
    if (file.empty() && !diags.items().empty()) file = diags.items().front().file;
    std::fputs(JsonText(ValidateJson(file, project.ok() ? &*project : nullptr, diags)).c_str(), stdout);
    return project.ok() ? 0 : ErrorCountFail(diags);
  });

  CLI::App* config = app.add_subcommand(
      "config", "Print the canonical form of the Sandboxfile (defaults filled, paths absolute)");
  AddProjectFlags(config, &flags->project);
  config->add_flag("--hash", flags->hash, "Print NAME HASH per sandbox (the config hash that decides replacement)");
  config->add_flag("--json", flags->json, "Print JSON instead of YAML");
  config->add_option_function<std::string>(
            "--format", [flags](const std::string&) { flags->json = true; }, "output format: json (the same as --json)")
      ->check(CLI::IsMember({"json"}));
  OnRun(config, [flags] {
    auto project = Load(flags->project);
    if (!project) return 1;
    if (flags->hash) {
      if (flags->json) {
        std::fputs(JsonText(ConfigHashJson(*project)).c_str(), stdout);
        return 0;
      }
      for (const auto& [name, sb] : project->sandboxes) {  // std::map: sorted by name
        std::printf("%s %s\n", name.c_str(), schema::ConfigHash(sb).c_str());
      }
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
