// msb volume ls / rm: the named volumes in the store. A volume is created by
// the first `msb up` that mounts it and lives until `msb volume rm` or
// `msb down --volumes`; rm refuses while a sandbox has it attached.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/json_output.h"
#include "orchestrator/launch_mounts.h"
#include "orchestrator/up.h"
#include "orchestrator/store.h"
#include "schema/values.h"

namespace msb::cli {
namespace {

using orchestrator::Store;
using orchestrator::VolumeRecord;

std::string UsersText(const std::vector<orchestrator::VolumeUser>& users, const std::string& project) {
  std::string out;
  for (const auto& u : users) {
    out += (out.empty() ? "" : ", ") + (u.project != project ? u.project + "/" : "") + u.name + " (" +
           orchestrator::ToString(u.status) + (u.read_only ? ", ro" : "") + ")";
  }
  return out;
}

int Ls(const std::string& project, bool json_out) {
  auto store = Store::Open(Store::DefaultPath());
  if (!store.ok()) return Fail(store.error().message());
  auto vols = project.empty() ? store->ListAllVolumes() : store->ListVolumes(project);
  if (!vols.ok()) return Fail(vols.error().message());
  nlohmann::json arr = nlohmann::json::array();
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"PROJECT", "NAME", "SIZE", "USED BY"});
  for (const VolumeRecord& v : *vols) {
    auto users = orchestrator::VolumeUsers(*store, v.path);
    if (!users.ok()) return Fail(users.error().message());
    arr.push_back(VolumeJson(v, *users));
    std::string by = UsersText(*users, v.project);
    rows.push_back({v.project, v.name, schema::FormatSize(static_cast<uint64_t>(v.size_bytes)),
                    by.empty() ? "-" : by});
  }
  if (json_out) {
    std::cout << JsonText(arr);
    return 0;
  }
  PrintTable(rows);
  return 0;
}

int Rm(const std::vector<std::string>& names, const std::string& project) {
  auto store = Store::Open(Store::DefaultPath());
  if (!store.ok()) return Fail(store.error().message());
  int rc = 0;
  for (const std::string& name : names) {
    auto all = store->ListAllVolumes();
    if (!all.ok()) return Fail(all.error().message());
    std::vector<VolumeRecord> hits;
    for (const auto& v : *all) {
      if (v.name == name && (project.empty() || v.project == project)) hits.push_back(v);
    }
    if (hits.empty()) {
      rc = Fail("no volume named " + name + (project.empty() ? "" : " in project " + project) +
                " (see msb volume ls)");
      continue;
    }
    if (hits.size() > 1) {
      std::string which;
      for (const auto& h : hits) which += (which.empty() ? "" : ", ") + h.project;
      rc = Fail("volume name " + name + " is used in several projects (" + which +
                "); choose one with -p PROJECT");
      continue;
    }
    const VolumeRecord& v = hits[0];
    // No `up` of the project may attach it while it goes away.
    auto lock = orchestrator::ProjectLock::Acquire(v.project);
    if (!lock.ok()) return Fail(lock.error().message());
    auto users = orchestrator::VolumeUsers(*store, v.path);
    if (!users.ok()) return Fail(users.error().message());
    if (!users->empty()) {
      rc = Fail("volume " + name + " is in use by " + UsersText(*users, v.project) +
                "; remove the sandbox first (msb down, or msb rm NAME)");
      continue;
    }
    if (::unlink(v.path.c_str()) != 0 && errno != ENOENT) {
      rc = Fail("removing volume " + name + ": " + v.path + ": " + std::strerror(errno));
      continue;
    }
    if (auto st = store->DeleteVolume(v.project, v.name); !st.ok()) {
      rc = Fail(st.error().message());
      continue;
    }
    std::cout << "removed volume " << name << std::endl;
  }
  return rc;
}

}  // namespace

void RegisterVolumeCommands(CLI::App& app) {
  auto* volume = app.add_subcommand("volume", "List or remove named volumes");
  volume->require_subcommand(1);
  {
    struct LsArgs {
      std::string project;
      bool json = false;
    };
    auto a = std::make_shared<LsArgs>();
    auto* cmd = volume->add_subcommand("ls", "List named volumes and the sandboxes using them");
    cmd->add_option("-p,--project", a->project, "only this project's volumes");
    AddJsonFlags(cmd, &a->json);
    OnRun(cmd, [a]() { return Ls(a->project, a->json); });
  }
  {
    struct RmArgs {
      std::vector<std::string> names;
      std::string project;
    };
    auto a = std::make_shared<RmArgs>();
    auto* cmd = volume->add_subcommand("rm", "Remove named volumes (refused while a sandbox uses one)");
    cmd->add_option("names", a->names, "volume names")->required();
    cmd->add_option("-p,--project", a->project, "the project the volume belongs to");
    OnRun(cmd, [a]() { return Rm(a->names, a->project); });
  }
}

}  // namespace msb::cli
