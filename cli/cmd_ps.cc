// msb ps: the current project's sandboxes (every project's with -a or when
// there is no current project) as a table, as references only (-q) or as
// JSON (--format json; the fields are in docs/compose.md). Printing only:
// each record is corrected by its supervisor's liveness and live status
// (orchestrator/launch.h).
#include <ctime>
#include <map>
#include <optional>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "orchestrator/launch.h"
#include "orchestrator/sandbox_ref.h"
#include "orchestrator/store.h"
#include "vm/spec.h"

namespace msb::cli {
namespace {

using orchestrator::SandboxRecord;
using orchestrator::Store;

struct PsArgs {
  std::string project;
  bool all = false;
  bool quiet = false;
  bool json = false;  // --json: --format json
  std::string format = "table";
};

std::string FormatAge(int64_t since) {
  if (since <= 0) return "-";
  int64_t d = static_cast<int64_t>(::time(nullptr)) - since;
  if (d < 60) return std::to_string(d) + "s";
  if (d < 3600) return std::to_string(d / 60) + "m";
  if (d < 86400) return std::to_string(d / 3600) + "h";
  return std::to_string(d / 86400) + "d";
}

// Published ports as docker prints them: "127.0.0.1:8000->8000/tcp", from the
// sandbox's VM spec (what its supervisor binds); empty when none or unreadable.
std::vector<vm::VmNetwork::Port> PublishedPorts(const SandboxRecord& r) {
  if (r.sandbox_dir.empty()) return {};
  auto spec = vm::ReadSpec(r.sandbox_dir);
  if (!spec.ok() || !spec->network) return {};
  return spec->network->ports;
}

std::string PortText(const vm::VmNetwork::Port& p) {
  std::string ip = p.host_ip.find(':') != std::string::npos ? "[" + p.host_ip + "]" : p.host_ip;
  return ip + ":" + std::to_string(p.host_port) + "->" + std::to_string(p.guest_port) + "/" + p.proto;
}

int Ps(const PsArgs& a) {
  const bool json_out = a.json || a.format == "json";
  if (a.quiet && json_out) return Fail("ps: -q prints references only; it takes no --format json");
  auto store = Store::Open(Store::DefaultPath());
  if (!store.ok()) return Fail(store.error().message());
  const std::string scope = a.all ? "" : CurrentProject(a.project);
  auto listed = scope.empty() ? store->ListAllSandboxes() : store->ListSandboxes(scope);
  if (!listed.ok()) return Fail(listed.error().message());
  if (a.quiet) {
    // What `msb rm REF` run here (same directory, same $MSB_PROJECT_NAME,
    // no -p) resolves to this sandbox.
    auto everything = store->ListAllSandboxes();
    if (!everything.ok()) return Fail(everything.error().message());
    const std::string here = CurrentProject("");
    for (const auto& r : *listed) std::cout << orchestrator::ShortestSandboxRef(*everything, r, here) << "\n";
    return 0;
  }
  // Where a project synced by `msb sync` comes from (orchestrator/sync.h).
  std::map<std::string, std::optional<orchestrator::SyncRecord>> sources;
  auto source_of = [&](const std::string& project) -> const std::optional<orchestrator::SyncRecord>& {
    auto it = sources.find(project);
    if (it == sources.end()) {
      auto got = store->GetSyncOfProject(project);
      it = sources.emplace(project, got.ok() ? *got : std::nullopt).first;
    }
    return it->second;
  };
  nlohmann::json arr = nlohmann::json::array();
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"PROJECT", "NAME", "STATE", "HEALTH", "IMAGE", "UPTIME", "RESTARTS", "PORTS", "DENIED"});
  for (auto r : *listed) {
    r = orchestrator::Observe(*store, r);
    const bool up = r.status == orchestrator::SandboxStatus::kRunning;
    // Health and the network's counters are re-observed from the supervisor, never stored.
    std::string health;
    nlohmann::json net;
    if (up) {
      if (auto live = orchestrator::LiveStatus(r); live.ok()) {
        health = live->value("health", "");
        if (auto it = live->find("net"); it != live->end() && it->is_object()) net = *it;
      }
    }
    nlohmann::json ports = nlohmann::json::array();
    std::string ports_text;
    for (const auto& p : PublishedPorts(r)) {
      ports.push_back({{"host_ip", p.host_ip}, {"host_port", p.host_port},
                       {"guest_port", p.guest_port}, {"protocol", p.proto}});
      ports_text += (ports_text.empty() ? "" : ",") + PortText(p);
    }
    // Unknown or not applicable is null, never "" or 0 (docs/compose.md).
    auto text_or_null = [](const std::string& v) { return v.empty() ? nlohmann::json() : nlohmann::json(v); };
    nlohmann::json entry = {{"project", r.project},
                            {"name", r.name},
                            {"state", orchestrator::ToString(r.status)},
                            {"reason", text_or_null(r.status_reason)},
                            {"image", r.image_ref},
                            {"health", text_or_null(health)},
                            {"started_at", r.started_at > 0 ? nlohmann::json(r.started_at) : nlohmann::json()},
                            {"restarts", r.restarts},
                            {"exit_code", r.exit_code ? nlohmann::json(*r.exit_code) : nlohmann::json()},
                            {"ports", ports},
                            {"config_hash", r.config_hash}};
    if (!net.is_null()) entry["net"] = net;
    nlohmann::json source;
    if (const auto& s = source_of(r.project); s && !s->applied_commit.empty()) {
      source = {{"repo", s->repo},
                {"ref", text_or_null(s->ref)},
                {"path", text_or_null(s->path)},
                {"commit", s->applied_commit},
                {"applied_at", s->applied_at},
                {"error", text_or_null(s->error)}};
    }
    entry["source"] = source;
    arr.push_back(std::move(entry));
    std::string state = orchestrator::ToString(r.status);
    if (r.exit_code && r.status == orchestrator::SandboxStatus::kExited) {
      state += " (" + std::to_string(*r.exit_code) + ")";
    }
    std::string denied = "-";
    if (net.is_object() && net.contains("denied") && net["denied"].is_number_unsigned()) {
      denied = std::to_string(net["denied"].get<uint64_t>());
    }
    rows.push_back({r.project, r.name, state, health.empty() ? "-" : health, r.image_ref,
                    up ? FormatAge(r.started_at) : "-",
                    std::to_string(r.restarts), ports_text.empty() ? "-" : ports_text, denied});
  }
  if (json_out) {
    std::cout << arr.dump(2) << "\n";
    return 0;
  }
  PrintTable(rows);
  // One line per synced project listed: its repository, commit and apply time.
  for (const auto& [project, s] : sources) {
    if (!s || s->applied_commit.empty()) continue;
    std::cout << "\n" << project << ": from " << s->repo << (s->ref.empty() ? "" : " " + s->ref)
              << (s->path.empty() ? "" : " (" + s->path + ")") << ", commit " << s->applied_commit.substr(0, 12)
              << ", applied " << FormatAge(s->applied_at) << " ago"
              << (s->error.empty() ? "" : "; last error: msb sync status") << "\n";
  }
  return 0;
}

}  // namespace

void RegisterPsCommand(CLI::App& app) {
  auto a = std::make_shared<PsArgs>();
  auto* cmd = app.add_subcommand("ps", "List the current project's sandboxes (-a: every project's)");
  auto* all = cmd->add_flag("-a,--all", a->all, "every project's sandboxes, msb run's included");
  auto* project = cmd->add_option("-p,--project-name", a->project,
                                   "this project's sandboxes (default: $MSB_PROJECT_NAME, else the "
                                   "current directory's Sandboxfile's; every project's when there is none)");
  all->excludes(project);
  cmd->add_flag("-q,--quiet", a->quiet, "references only, one a line, each one msb rm takes (NAME or PROJECT/NAME)");
  cmd->add_option("--format", a->format, "table (default) or json")->check(CLI::IsMember({"table", "json"}));
  cmd->add_flag("--json", a->json, "the same as --format json");
  OnRun(cmd, [a]() { return Ps(*a); });
}

}  // namespace msb::cli
