// msb template ls / rm / prune: the booted templates under
// $MSB_HOME/templates (vm/template.h). Sandboxes build and restore them by
// themselves; this file only lists and removes them.
#include <sys/file.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/json_output.h"
#include "common/fd.h"
#include "schema/values.h"
#include "vm/template.h"

namespace msb::cli {
namespace {

// A build directory older than this has no builder left (a build is bounded
// by the boot timeout).
constexpr auto kStaleBuild = std::chrono::hours(1);

nlohmann::json TemplateJson(const vm::TemplateInfo& t) {
  return {{"key", t.key},     {"kind", t.kind},     {"valid", t.valid},   {"size", t.size},   {"created", t.created},
          {"cpus", t.cpus},   {"memory_mib", t.memory_mib}, {"accel", t.accel}, {"kernel", t.kernel},
          {"disks", t.disks}, {"network", t.network}, {"stale", t.stale}};
}

int Ls(bool json_out) {
  auto all = vm::ListTemplates();
  nlohmann::json arr = nlohmann::json::array();
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"KEY", "FOR", "CPUS", "MEMORY", "DISKS", "NETWORK", "ACCEL", "SIZE", "CREATED"});
  for (const auto& t : all) {
    arr.push_back(TemplateJson(t));
    if (!t.valid) {
      rows.push_back({t.key, "-", "-", "-", "-", "-", "-", "-", "invalid (msb template prune removes it)"});
      continue;
    }
    rows.push_back({t.key, t.kind, std::to_string(t.cpus), schema::FormatSize(t.memory_mib << 20), std::to_string(t.disks),
                    t.network ? "yes" : "no", t.accel, schema::FormatSize(t.size), t.created});
  }
  if (json_out) {
    std::cout << JsonText(arr);
    return 0;
  }
  PrintTable(rows);
  return 0;
}

int Rm(const std::vector<std::string>& keys) {
  std::set<std::string> known;
  for (const auto& t : vm::ListTemplates()) known.insert(t.key);
  int rc = 0;
  for (const auto& key : keys) {
    if (known.count(key) == 0) {
      rc = Fail("no template " + key + " (msb template ls lists them)");
      continue;
    }
    vm::RemoveTemplate(key);
    std::cout << "removed template " << key << std::endl;
  }
  return rc;
}

// Invalid templates, those whose kernel is gone or whose kernel, initramfs
// or QEMU is not the file its key took any more (no start can use them),
// and build leftovers; with all, every template.
int Prune(bool all) {
  std::error_code ec;
  const std::string root = vm::TemplatesDir();
  for (const auto& t : vm::ListTemplates()) {
    std::string why = all                                      ? ""
                      : !t.valid                               ? "invalid"
                      : ::access(t.kernel.c_str(), F_OK) != 0  ? "its kernel is gone"
                      : !t.stale.empty()                       ? t.stale
                                                               : "keep";
    if (why == "keep") continue;
    vm::RemoveTemplate(t.key);
    std::cout << "removed template " << t.key << (why.empty() ? "" : " (" + why + ")") << std::endl;
  }
  const auto now = std::filesystem::file_time_type::clock::now();
  for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    const std::string path = e.path().string();
    if (name.rfind(".build-", 0) == 0 || name.rfind(".ready-", 0) == 0) {
      auto mtime = std::filesystem::last_write_time(e.path(), ec);
      if (!ec && now - mtime > kStaleBuild) std::filesystem::remove_all(e.path(), ec);
    } else if (name.size() > 5 && name.ends_with(".lock") &&
               !std::filesystem::exists(root + "/" + name.substr(0, name.size() - 5))) {
      // Only a lock nobody holds.
      UniqueFd lock(::open(path.c_str(), O_RDWR | O_CLOEXEC));
      if (lock && ::flock(lock.get(), LOCK_EX | LOCK_NB) == 0) ::unlink(path.c_str());
    }
  }
  return 0;
}

}  // namespace

void RegisterTemplateCommands(CLI::App& app) {
  auto* tmpl = app.add_subcommand("template", "List or remove booted templates (saved VMs that sandboxes start from)");
  tmpl->require_subcommand(1);
  {
    auto json = std::make_shared<bool>(false);
    auto* cmd = tmpl->add_subcommand("ls", "List booted templates");
    AddJsonFlags(cmd, json.get());
    OnRun(cmd, [json]() { return Ls(*json); });
  }
  {
    auto keys = std::make_shared<std::vector<std::string>>();
    auto* cmd = tmpl->add_subcommand("rm", "Remove booted templates (the next start that needs one builds it again)");
    cmd->add_option("keys", *keys, "template keys (msb template ls)")->required();
    OnRun(cmd, [keys]() { return Rm(*keys); });
  }
  {
    auto all = std::make_shared<bool>(false);
    auto* cmd = tmpl->add_subcommand("prune", "Remove invalid templates, those no start can use (kernel, initramfs or QEMU gone or changed), and build leftovers");
    cmd->add_flag("-a,--all", *all, "remove every template");
    OnRun(cmd, [all]() { return Prune(*all); });
  }
}

}  // namespace msb::cli
