// msb validate / msb config: load the Sandboxfile and report every problem,
// or print its canonical form or per-sandbox config hashes. Read-only: these
// commands never start, stop or contact anything.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "cli/cli.h"
#include "schema/sandboxfile.h"

namespace msb::cli {

std::optional<schema::Project> LoadProjectOrReport(const std::string& file) {
  schema::LoadOptions options;
  options.file = file;
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
  return std::move(project).value();
}

namespace {
std::optional<schema::Project> Load(const std::string& file) { return LoadProjectOrReport(file); }
}  // namespace

void RegisterConfigCommands(CLI::App& app) {
  struct Flags {
    std::string file;
    bool hash = false;
    bool json = false;
  };
  auto flags = std::make_shared<Flags>();

  CLI::App* validate = app.add_subcommand("validate", "Check the Sandboxfile; print ok or every error");
  validate->add_option("-f,--file", flags->file, "Sandboxfile to read (default: ./Sandboxfile, else ./msb.yaml)");
  OnRun(validate, [flags] {
    if (!Load(flags->file)) return 1;
    std::puts("ok");
    return 0;
  });

  CLI::App* config = app.add_subcommand(
      "config", "Print the canonical form of the Sandboxfile (defaults filled, paths absolute)");
  config->add_option("-f,--file", flags->file, "Sandboxfile to read (default: ./Sandboxfile, else ./msb.yaml)");
  config->add_flag("--hash", flags->hash, "Print NAME HASH per sandbox (the config hash that decides replacement)");
  config->add_flag("--json", flags->json, "Print JSON instead of YAML");
  OnRun(config, [flags] {
    auto project = Load(flags->file);
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
