// msb plan / up / down / start / restart: the project commands. They load the
// Sandboxfile, observe, plan (planner.h) and execute (executor.h).
#include <sys/inotify.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <algorithm>
#include <cstring>
#include <functional>
#include <mutex>
#include <set>

#include "common/io.h"
#include "cli/cli.h"
#include "orchestrator/launch_mounts.h"
#include "orchestrator/executor.h"
#include "schema/sandboxfile.h"

namespace msb::cli {
namespace {

using orchestrator::Store;

struct UpArgs {
  std::string file;
  std::vector<std::string> names;
  bool wait = false;
  bool watch = false;
  bool force_recreate = false;
  bool no_recreate = false;
  int wait_timeout_s = 300;
  RegistryFlags registry;
};

// One reconcile pass. Returns the exit code.
int ReconcileOnce(const schema::Project& project, const UpArgs& a, bool print_plan_only) {
  auto store = Store::Open(Store::DefaultPath());
  if (!store.ok()) return Fail(store.error().message());
  orchestrator::ImageOptions io;
  io.fetch = !print_plan_only;
  io.insecure_registries = a.registry.insecure;
  io.registry_cas = a.registry.cas;
  auto images = orchestrator::ResolveImages(*store, project, io);
  if (!images.ok()) return Fail(images.error().message());
  auto digests = orchestrator::DigestsOf(*images);
  auto observed = orchestrator::ObserveProject(*store, project.name);
  if (!observed.ok()) return Fail(observed.error().message());
  orchestrator::PlanOptions po;
  po.force_recreate = a.force_recreate;
  po.no_recreate = a.no_recreate;
  po.selection = a.names;
  auto plan = orchestrator::MakePlan(project, digests, *observed, po);
  if (!plan.ok()) return Fail(plan.error().message());
  if (print_plan_only) {
    std::cout << plan->ToText();
    return 0;
  }
  if (plan->NothingToDo()) {
    std::cout << "nothing to do: " << project.sandboxes.size()
              << (project.sandboxes.size() == 1 ? " sandbox" : " sandboxes") << " up to date\n";
    return 0;
  }
  orchestrator::ProjectRecord pr;
  pr.name = project.name;
  pr.directory = project.base_dir;
  pr.sandboxfile = project.source_path;
  if (auto st = store->UpsertProject(pr); !st.ok()) return Fail(st.error().message());
  std::mutex out_mu;
  orchestrator::ExecuteOptions eo;
  eo.report = [&](const std::string& line) {
    std::lock_guard g(out_mu);
    std::cout << line << std::endl;
  };
  auto st = orchestrator::Execute(project, *images, *plan, eo);
  if (!st.ok()) return Fail("some sandboxes did not come up:\n" + st.error().message());
  return 0;
}

// --wait: every selected sandbox running, and healthy where it has a check.
int WaitAll(const schema::Project& project, const UpArgs& a) {
  std::vector<std::string> bad;
  for (const auto& [name, sb] : project.sandboxes) {
    if (!a.names.empty() && std::find(a.names.begin(), a.names.end(), name) == a.names.end()) continue;
    auto cond = sb.healthcheck ? schema::DependCondition::kHealthy : schema::DependCondition::kStarted;
    auto st = orchestrator::WaitForCondition(project.name, name, cond, a.wait_timeout_s);
    if (!st.ok()) bad.push_back(st.error().message());
  }
  if (bad.empty()) return 0;
  std::string msg = "not ready:";
  for (const auto& b : bad) msg += "\n  " + b;
  return Fail(msg);
}

int Plan(const std::string& file) {
  auto project = LoadProjectOrReport(file);
  if (!project) return 1;
  UpArgs a;
  return ReconcileOnce(*project, a, true);
}

// The files whose change triggers a new pass under --watch.
std::vector<std::string> WatchedFiles(const schema::Project& p) {
  return {p.source_path, p.base_dir + "/.env"};
}

int Up(const UpArgs& a) {
  auto project = LoadProjectOrReport(a.file);
  if (!project) return 1;
  auto lock = orchestrator::ProjectLock::Acquire(project->name);
  if (!lock.ok()) return Fail(lock.error().message());
  int rc = ReconcileOnce(*project, a, false);
  if (rc == 0 && a.wait) rc = WaitAll(*project, a);
  if (!a.watch) return rc;

  // --watch: reconcile again when the file or its .env changes (debounced),
  // and every few seconds to restore sandboxes that died. A file with errors
  // leaves everything as it is.
  int ino = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (ino < 0) return Fail("inotify: " + std::string(std::strerror(errno)));
  ::inotify_add_watch(ino, project->base_dir.c_str(),
                      IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE);
  std::cout << "watching " << project->source_path << " (Ctrl-C to stop)" << std::endl;
  for (;;) {
    pollfd p{ino, POLLIN, 0};
    int r = ::poll(&p, 1, 5000);
    bool changed = false;
    if (r > 0) {
      alignas(inotify_event) char buf[8192];
      ssize_t n;
      while ((n = ::read(ino, buf, sizeof buf)) > 0) {
        for (char* ptr = buf; ptr < buf + n;) {
          auto* ev = reinterpret_cast<inotify_event*>(ptr);
          std::string name = ev->len > 0 ? ev->name : "";
          for (const auto& f : WatchedFiles(*project)) {
            if (!name.empty() && f.size() >= name.size() &&
                f.compare(f.size() - name.size(), name.size(), name) == 0) {
              changed = true;
            }
          }
          ptr += sizeof(inotify_event) + ev->len;
        }
      }
      // Debounce: editors write in bursts; wait for 300 ms of quiet.
      while (changed) {
        pollfd q{ino, POLLIN, 0};
        if (::poll(&q, 1, 300) <= 0) break;
        while (::read(ino, buf, sizeof buf) > 0) {
        }
      }
    }
    if (changed) {
      auto reloaded = LoadProjectOrReport(a.file);
      if (!reloaded) {
        std::cerr << "msb: the Sandboxfile has errors; leaving everything as it is\n";
        continue;
      }
      project = std::move(reloaded);
      std::cout << "the Sandboxfile changed; reconciling" << std::endl;
    }
    ReconcileOnce(*project, a, false);
  }
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

int Down(const std::string& file, const std::vector<std::string>& names, bool volumes) {
  auto project = LoadProjectOrReport(file);
  if (!project) return 1;
  auto lock = orchestrator::ProjectLock::Acquire(project->name);
  if (!lock.ok()) return Fail(lock.error().message());
  auto store = Store::Open(Store::DefaultPath());
  if (!store.ok()) return Fail(store.error().message());
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
  return rc;
}

int StartOrRestart(const std::string& name, bool restart) {
  auto store = Store::Open(Store::DefaultPath());
  if (!store.ok()) return Fail(store.error().message());
  auto rec = orchestrator::FindSandbox(*store, name);
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

void RegisterProjectCommands(CLI::App& app) {
  {
    auto file = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand("plan", "Show what msb up would do, and why");
    cmd->add_option("-f,--file", *file, "Sandboxfile");
    OnRun(cmd, [file]() { return Plan(*file); });
  }
  {
    auto a = std::make_shared<UpArgs>();
    auto* cmd = app.add_subcommand("up", "Create, replace or remove sandboxes until they match the Sandboxfile");
    cmd->add_option("-f,--file", a->file, "Sandboxfile");
    cmd->add_option("names", a->names, "only these sandboxes (and their dependencies)");
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
      std::string file;
      std::vector<std::string> names;
      bool volumes = false;
    };
    auto a = std::make_shared<DownArgs>();
    auto* cmd = app.add_subcommand("down", "Stop and remove the project's sandboxes");
    cmd->add_option("-f,--file", a->file, "Sandboxfile");
    cmd->add_option("names", a->names, "only these sandboxes");
    cmd->add_flag("--volumes", a->volumes, "also remove the project's named volumes");
    OnRun(cmd, [a]() { return Down(a->file, a->names, a->volumes); });
  }
  for (bool restart : {false, true}) {
    auto name = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand(restart ? "restart" : "start",
                                   restart ? "Restart a sandbox" : "Start a stopped sandbox");
    cmd->add_option("sandbox", *name, "sandbox name")->required();
    OnRun(cmd, [name, restart]() { return StartOrRestart(*name, restart); });
  }
}

}  // namespace msb::cli
