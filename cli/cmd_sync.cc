// msb sync and msb sync status: a project kept in step with a git
// repository. Flags, the signal-aware wait between passes, and printing; the
// passes themselves are orchestrator/sync.h's.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/json_output.h"
#include "common/fd.h"
#include "orchestrator/store.h"
#include "orchestrator/sync.h"
#include "schema/values.h"

namespace msb::cli {
namespace {

struct SyncArgs {
  std::string repo;
  std::string ref;
  std::string path;
  std::string interval = "30s";
  bool once = false;
  std::string project;
  RegistryFlags registry;
};

// The first SIGINT or SIGTERM ends the loop: the flag is set, and a byte on
// the self-pipe wakes the wait at once (a signal that lands just before the
// poll is not lost). The handler is then the default again, so a second
// signal ends msb as it always would.
std::atomic<int> g_stop{0};
int g_wake_fd = -1;

void OnStop(int signo) {
  g_stop.store(signo);
  if (g_wake_fd >= 0) {
    char b = 1;
    (void)!::write(g_wake_fd, &b, 1);
  }
}

std::string Utc(int64_t t) {
  if (t <= 0) return "-";
  std::time_t tt = static_cast<std::time_t>(t);
  struct tm tm_buf;
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&tt, &tm_buf));
  return buf;
}

int Sync(const SyncArgs& a) {
  if (a.repo.empty()) {
    std::fprintf(stderr, "msb: sync: --repo URL is required (or: msb sync status)\n");
    return 2;
  }
  orchestrator::SyncOptions o;
  o.repo = a.repo;
  o.ref = a.ref;
  o.path = a.path;
  if (auto st = orchestrator::CheckRepoUrl(a.repo); !st.ok()) return Fail(st.error().message());
  if (auto st = orchestrator::CheckRef(a.ref); !st.ok()) return Fail(st.error().message());
  if (auto p = orchestrator::NormaliseRepoPath(a.path); !p.ok()) return Fail(p.error().message());
  auto interval = schema::ParseDuration(a.interval);
  if (!interval.ok() || *interval < 1000) {
    return Fail("--interval " + a.interval + ": give a duration of at least 1s (30s, 5m, 1h)");
  }
  std::string name = ProjectNameOverride(a.project);
  if (!name.empty() && !schema::IsValidName(name)) {
    return Fail("invalid project name \"" + name + "\" (" + (a.project.empty() ? "MSB_PROJECT_NAME" : "-p") +
                "): use " + schema::kNameRule);
  }
  o.project_name = name;
  o.up.images.insecure_registries = a.registry.insecure;
  o.up.images.registry_cas = a.registry.cas;
  o.up.report = [](const std::string& line) { std::cout << line << std::endl; };
  o.up.report_error = [](const std::string& message) { Fail(message); };

  std::string key = orchestrator::SyncKey(a.repo, *orchestrator::NormaliseRepoPath(a.path));
  auto lock = orchestrator::SyncLock::Acquire(key);
  if (!lock.ok()) return Fail(lock.error().message());

  if (a.once) {
    auto r = orchestrator::SyncOnce(o);
    if (!r.ok()) return Fail(r.error().message());
    if (r->applied) std::cout << "applied commit " << r->commit.substr(0, 12) << std::endl;
    return 0;
  }

  int p[2];
  if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return Fail(std::string("pipe2: ") + std::strerror(errno));
  UniqueFd wake_rd(p[0]), wake_wr(p[1]);
  g_wake_fd = wake_wr.get();
  struct sigaction sa {};
  sa.sa_handler = OnStop;
  sa.sa_flags = SA_RESETHAND | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  o.up.cancelled = []() { return g_stop.load() != 0; };
  const int64_t interval_ms = *interval;
  std::cout << "syncing " << orchestrator::RedactUrl(a.repo) << " every " << a.interval
            << " (Ctrl-C to stop)" << std::endl;
  // Waits for the interval on a monotonic deadline; false when a stop
  // signal came (before or during the wait).
  auto wait = [&]() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(interval_ms);
    for (;;) {
      if (g_stop.load() != 0) return false;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return true;
      pollfd pf{wake_rd.get(), POLLIN, 0};
      ::poll(&pf, 1, static_cast<int>(std::min<int64_t>(left.count(), 60000)));
    }
  };
  auto st = orchestrator::SyncLoop(o, wait);
  g_wake_fd = -1;
  if (!st.ok()) return Fail(st.error().message());
  if (g_stop.load() != 0) std::cout << "stopped" << std::endl;
  return 0;
}

// msb sync rm PROJECT: forgets the sync of the project (its record and
// $MSB_HOME/sync/<key>). The project's sandboxes run from the synced work
// tree (their bind mounts and local images are in it), so while it has any
// this refuses, unless --down removes them first, as msb down would.
int Remove(const std::string& project, bool down, bool volumes) {
  if (volumes && !down) return Fail("--volumes removes volumes with the sandboxes: give --down as well");
  auto store = orchestrator::Store::Open(orchestrator::Store::DefaultPath());
  if (!store.ok()) return Fail(store.error().message());
  auto sync = store->GetSyncOfProject(project);
  if (!sync.ok()) return Fail(sync.error().message());
  if (!sync->has_value()) return Fail("no sync applies to project " + project + " (msb sync status lists them)");
  const orchestrator::SyncRecord rec = **sync;
  const std::string dir = orchestrator::SyncDirectory(rec.key);
  auto lock = orchestrator::SyncLock::Acquire(rec.key);
  if (!lock.ok()) {
    if (lock.error().code() == ErrorCode::kAlreadyExists) {
      return Fail("an msb sync of project " + project + " is running; stop it (Ctrl-C, or systemctl stop "
                  "msb-sync@...) and run msb sync rm again");
    }
    return Fail(lock.error().message());
  }
  auto left = store->ListSandboxes(project);
  if (!left.ok()) return Fail(left.error().message());
  if (!left->empty() && !down) {
    return Fail("project " + project + " still has " + std::to_string(left->size()) +
                " sandbox(es) running from the synced tree " + dir + "/tree; msb sync rm --down " + project +
                " removes them too (as msb down would)");
  }
  if (down && (!left->empty() || volumes)) {
    ProjectFlags flags;
    flags.file = dir + "/tree";
    flags.name = project;
    if (int rc = Down(flags, {}, volumes); rc != 0) {
      return Fail("project " + project + " was not taken down; the sync is kept");
    }
  }
  if (auto st = store->DeleteSync(rec.key); !st.ok()) return Fail(st.error().message());
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (ec) return Fail("removing " + dir + ": " + ec.message());
  std::cout << "removed the sync of project " << project << " (" << rec.repo << ")" << std::endl;
  return 0;
}

int Status(bool json) {
  auto store = orchestrator::Store::Open(orchestrator::Store::DefaultPath());
  if (!store.ok()) return Fail(store.error().message());
  auto syncs = store->ListSyncs();
  if (!syncs.ok()) return Fail(syncs.error().message());
  if (json) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& s : *syncs) arr.push_back(SyncJson(s, orchestrator::SyncDirectory(s.key) + "/tree"));
    std::cout << JsonText(arr);
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"PROJECT", "REPO", "REF", "PATH", "APPLIED", "APPLIED AT", "CHECKED AT", "ERROR"});
  std::vector<std::string> errors;
  for (const auto& s : *syncs) {
    std::string error = "-";
    if (!s.error.empty()) {
      error = s.error_commit.empty() ? "fetch failed" : "at " + s.error_commit.substr(0, 12);
      errors.push_back((s.project.empty() ? s.repo : s.project) + ": " + s.error);
    }
    rows.push_back({s.project.empty() ? "-" : s.project, s.repo, s.ref.empty() ? "HEAD" : s.ref,
                    s.path.empty() ? "." : s.path,
                    s.applied_commit.empty() ? "-" : s.applied_commit.substr(0, 12), Utc(s.applied_at),
                    Utc(s.checked_at), error});
  }
  PrintTable(rows);
  for (const auto& e : errors) std::cout << "\n" << e << "\n";
  return 0;
}

}  // namespace

void RegisterSyncCommands(CLI::App& app) {
  auto a = std::make_shared<SyncArgs>();
  auto* cmd = app.add_subcommand(
      "sync", "Keep a project in step with a Sandboxfile in a git repository (status: what was applied)");
  cmd->add_option("--repo", a->repo, "the repository: a file, git, http(s) or ssh URL, or a local path");
  cmd->add_option("--ref", a->ref, "branch, tag or ref to follow (default: the remote's HEAD)");
  cmd->add_option("--path", a->path, "the Sandboxfile's directory in the repository (default: its root)");
  cmd->add_option("--interval", a->interval, "time between fetches (default 30s)");
  cmd->add_flag("--once", a->once, "one fetch and apply, then exit (nonzero when the commit was not applied)");
  cmd->add_option("-p,--project-name", a->project,
                  "project name (default: $MSB_PROJECT_NAME, else the Sandboxfile's name:, else the "
                  "repository's name and the path)");
  AddRegistryFlags(cmd, &a->registry);
  auto json = std::make_shared<bool>(false);
  auto* status = cmd->add_subcommand("status", "Each synced project's repository, applied commit and last error");
  AddJsonFlags(status, json.get());
  OnRun(status, [json]() { return Status(*json); });
  auto rm_project = std::make_shared<std::string>();
  auto rm_down = std::make_shared<bool>(false);
  auto rm_volumes = std::make_shared<bool>(false);
  auto* rm = cmd->add_subcommand("rm", "Stop tracking a project's repository (--down: remove its sandboxes too)");
  rm->add_option("project", *rm_project, "the synced project's name (msb sync status)")->required();
  rm->add_flag("--down", *rm_down, "first remove the project's sandboxes, as msb down would");
  rm->add_flag("-v,--volumes", *rm_volumes, "with --down: remove its named volumes as well");
  OnRun(rm, [rm_project, rm_down, rm_volumes]() { return Remove(*rm_project, *rm_down, *rm_volumes); });
  OnRun(cmd, [a, status, rm]() {
    if (status->parsed() || rm->parsed()) return ExitCode();  // `msb sync status|rm` ran instead
    return Sync(*a);
  });
}

}  // namespace msb::cli
