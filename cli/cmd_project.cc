// msb plan / up / down / start / restart: the project commands. Flags and
// printing only: the reconcile pass and --watch are orchestrator/up.h.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <functional>
#include <iostream>
#include <set>

#include "cli/cli.h"
#include "cli/json_output.h"
#include "orchestrator/launch.h"
#include "orchestrator/launch_mounts.h"
#include "orchestrator/up.h"
#include "schema/sandboxfile.h"

namespace msb::cli {
namespace {

using orchestrator::Store;

struct UpArgs {
  ProjectFlags project;
  std::vector<std::string> names;
  bool wait = false;
  bool watch = false;
  bool force_recreate = false;
  bool no_recreate = false;
  bool detach = false;  // -d: what msb up always does
  int wait_timeout_s = 300;
  RegistryFlags registry;
};

orchestrator::UpOptions MakeUpOptions(const UpArgs& a) {
  orchestrator::UpOptions o;
  o.plan.force_recreate = a.force_recreate;
  o.plan.no_recreate = a.no_recreate;
  o.plan.selection = a.names;
  o.images.insecure_registries = a.registry.insecure;
  o.images.registry_cas = a.registry.cas;
  o.wait = a.wait;
  o.wait_timeout_s = a.wait_timeout_s;
  o.watch = a.watch;
  o.report = [](const std::string& line) { std::cout << line << std::endl; };
  o.report_error = [](const std::string& message) { Fail(message); };
  return o;
}

int Plan(const ProjectFlags& flags, bool json) {
  auto project = LoadProjectOrReport(flags);
  if (!project) return 1;
  orchestrator::UpOptions o = MakeUpOptions(UpArgs{});
  o.report = [](const std::string& line) { std::cerr << "msb: " << line << std::endl; };
  auto plan = orchestrator::PlanProject(*project, o);
  if (!plan.ok()) return Fail(plan.error().message());
  std::cout << (json ? JsonText(PlanJson(project->name, *plan)) : plan->ToText());
  return 0;
}

// Under --watch the first SIGINT or SIGTERM ends the loop once the running
// steps finish; the handler is then the default again, so a second one (or
// the re-raise after the loop) ends msb as the signal always did.
std::atomic<int> g_stop_signal{0};

void OnStopSignal(int signo) { g_stop_signal.store(signo); }

void CatchStopSignals() {
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sa.sa_flags = SA_RESETHAND | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

int Up(const UpArgs& a) {
  auto project = LoadProjectOrReport(a.project);
  if (!project) return 1;
  orchestrator::UpOptions o = MakeUpOptions(a);
  if (a.watch) {
    o.reload = [flags = a.project]() { return LoadProjectOrReport(flags); };
    o.cancelled = []() { return g_stop_signal.load() != 0; };
    CatchStopSignals();
  }
  auto st = orchestrator::Up(*project, o);
  if (int signo = g_stop_signal.load(); signo != 0) ::raise(signo);
  if (!st.ok()) return Fail(st.error().message());
  return 0;
}

// Reverse dependency order of the project's sandboxes (dependents first).
std::vector<std::string> StopOrder(const schema::Project* project,
                                   const std::vector<orchestrator::SandboxRecord>& records) {
  std::vector<std::string> order;
  std::set<std::string> seen;
  std::function<void(const std::string&)> visit = [&](const std::string& n) {
    if (!seen.insert(n).second) return;
    if (project != nullptr) {
      // Dependents go before what they depend on.
      for (const auto& [name, sb] : project->sandboxes) {
        if (sb.depends_on.count(n)) visit(name);
      }
    }
    order.push_back(n);
  };
  for (const auto& r : records) visit(r.name);
  return order;
}

int StartOrRestart(const std::string& name, const std::string& project, bool restart) {
  auto store = Store::Open(Store::DefaultPath());
  if (!store.ok()) return Fail(store.error().message());
  auto rec = orchestrator::FindSandbox(*store, name, CurrentProject(project),
                                       restart ? "restart" : "start");
  if (!rec.ok()) return Fail(rec.error().message());
  if (rec->status == orchestrator::SandboxStatus::kRunning) {
    if (!restart) {
      std::cout << name << " is already running\n";
      return 0;
    }
    if (auto st = orchestrator::Stop(*store, *rec); !st.ok()) return Fail(st.error().message());
  }
  auto started = orchestrator::StartSupervisor(*store, *rec);
  if (!started.ok()) return Fail(started.error().message());
  std::cout << (restart ? "restarted " : "started ") << name << std::endl;
  return 0;
}

}  // namespace

int Down(const ProjectFlags& flags, const std::vector<std::string>& names, bool volumes) {
  auto project = LoadProjectOrReport(flags);
  if (!project) return 1;
  auto lock = orchestrator::ProjectLock::Acquire(project->name);
  if (!lock.ok()) return Fail(lock.error().message());
  auto store = Store::Open(Store::DefaultPath());
  if (!store.ok()) return Fail(store.error().message());
  auto owner = orchestrator::CheckProjectDirectory(
      *store, *project, /*take_over=*/true,
      [](const std::string& line) { std::cerr << "msb: " << line << std::endl; });
  if (!owner.ok()) return Fail(owner.error().message());
  auto records = orchestrator::ObserveProject(*store, project->name);
  if (!records.ok()) return Fail(records.error().message());
  int rc = 0;
  for (const auto& name : StopOrder(&*project, *records)) {
    if (!names.empty() && std::find(names.begin(), names.end(), name) == names.end()) continue;
    for (const auto& r : *records) {
      if (r.name != name) continue;
      auto st = orchestrator::Remove(*store, r);
      if (!st.ok()) {
        rc = Fail("removing " + name + ": " + st.error().message());
      } else {
        std::cout << "removed " << name << std::endl;
      }
    }
  }
  if (volumes) {
    auto vols = store->ListVolumes(project->name);
    if (vols.ok()) {
      for (const auto& v : *vols) {
        // `down NAMES --volumes` leaves sandboxes behind: keep what they attach.
        if (auto users = orchestrator::VolumeUsers(*store, v.path); users.ok() && !users->empty()) {
          std::cout << "kept volume " << v.name << ": " << (*users)[0].name << " still uses it"
                    << std::endl;
          continue;
        }
        ::unlink(v.path.c_str());
        (void)store->DeleteVolume(v.project, v.name);
        std::cout << "removed volume " << v.name << std::endl;
      }
    }
  }
  // With nothing of it left, the name is free for another directory.
  auto left = store->ListSandboxes(project->name);
  auto vols = store->ListVolumes(project->name);
  if (left.ok() && left->empty() && vols.ok() && vols->empty()) {
    auto recorded = store->GetProject(project->name);
    if (recorded.ok() && recorded->has_value()) (void)store->DeleteProject(project->name);
  }
  return rc;
}

void RegisterProjectCommands(CLI::App& app) {
  {
    auto flags = std::make_shared<ProjectFlags>();
    auto json = std::make_shared<bool>(false);
    auto* cmd = app.add_subcommand("plan", "Show what msb up would do, and why");
    AddProjectFlags(cmd, flags.get());
    AddJsonFlags(cmd, json.get());
    OnRun(cmd, [flags, json]() { return Plan(*flags, *json); });
  }
  {
    auto a = std::make_shared<UpArgs>();
    auto* cmd = app.add_subcommand("up", "Create, replace or remove sandboxes until they match the Sandboxfile");
    AddProjectFlags(cmd, &a->project);
    cmd->add_option("names", a->names, "only these sandboxes (and their dependencies)");
    cmd->add_flag("-d,--detach", a->detach,
                  "accepted as docker compose's: msb up always leaves the sandboxes running in the background");
    cmd->add_flag("--wait", a->wait, "wait until every sandbox is running and healthy");
    cmd->add_option("--wait-timeout", a->wait_timeout_s, "seconds --wait waits (default 300)");
    cmd->add_flag("--watch", a->watch, "keep reconciling when the file changes or a sandbox dies");
    cmd->add_flag("--force-recreate", a->force_recreate, "replace sandboxes even when unchanged");
    cmd->add_flag("--no-recreate", a->no_recreate, "never replace existing sandboxes");
    AddRegistryFlags(cmd, &a->registry);
    OnRun(cmd, [a]() { return Up(*a); });
  }
  {
    struct DownArgs {
      ProjectFlags project;
      std::vector<std::string> names;
      bool volumes = false;
    };
    auto a = std::make_shared<DownArgs>();
    auto* cmd = app.add_subcommand("down", "Stop and remove the project's sandboxes");
    AddProjectFlags(cmd, &a->project);
    cmd->add_option("names", a->names, "only these sandboxes");
    cmd->add_flag("--volumes", a->volumes, "also remove the project's named volumes");
    OnRun(cmd, [a]() { return Down(a->project, a->names, a->volumes); });
  }
  for (bool restart : {false, true}) {
    auto name = std::make_shared<std::string>();
    auto project = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand(restart ? "restart" : "start",
                                   restart ? "Restart a sandbox" : "Start a stopped sandbox");
    cmd->add_option("sandbox", *name, "sandbox name, or PROJECT/NAME")->required();
    AddProjectNameFlag(cmd, project.get());
    OnRun(cmd, [name, project, restart]() { return StartOrRestart(*name, *project, restart); });
  }
}

}  // namespace msb::cli
