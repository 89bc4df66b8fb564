// msb up / plan: the pass, the step runner handed to the executor, --wait and
// --watch. The runner opens its own Store connection per step (a Store is per
// thread; steps run on the executor's threads).
#include "orchestrator/up.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include "common/io.h"
#include "orchestrator/executor.h"
#include "orchestrator/launch.h"
#include "secrets/placeholder.h"

namespace msb::orchestrator {

Result<ProjectLock> ProjectLock::Take(const std::string& project, int operation) {
  std::string dir = MsbHome() + "/locks";
  MSB_TRY_STATUS(MakeDirs(dir, 0700));
  std::string path = dir + "/" + project + ".lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return Error::FromErrno("cannot open " + path);
  if (::flock(fd.get(), operation | LOCK_NB) != 0) {
    std::fprintf(stderr, "msb: another msb command is changing project %s; waiting for it\n",
                 project.c_str());
    if (::flock(fd.get(), operation) != 0) return Error::FromErrno("cannot lock " + path);
  }
  return ProjectLock(std::move(fd));
}

Result<ProjectLock> ProjectLock::Acquire(const std::string& project) { return Take(project, LOCK_EX); }

Result<ProjectLock> ProjectLock::AcquireShared(const std::string& project) { return Take(project, LOCK_SH); }

bool ProjectLock::Held(const std::string& project) {
  std::string path = MsbHome() + "/locks/" + project + ".lock";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  if (::flock(fd.get(), LOCK_SH | LOCK_NB) != 0) return errno == EWOULDBLOCK;
  (void)::flock(fd.get(), LOCK_UN);
  return false;
}

namespace {

bool SameDirectory(const std::string& a, const std::string& b) {
  if (a == b) return true;
  struct stat sa {}, sb {};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

bool DirectoryExists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

Status CheckProjectDirectory(Store& store, const schema::Project& project, bool take_over,
                             const std::function<void(const std::string&)>& note) {
  MSB_TRY(auto recorded, store.GetProject(project.name));
  if (!recorded || SameDirectory(recorded->directory, project.base_dir)) return OkStatus();
  const std::string& other = recorded->directory;
  if (!DirectoryExists(other)) {
    if (take_over) {
      ProjectRecord moved = *recorded;
      moved.directory = project.base_dir;
      moved.sandboxfile = project.source_path;
      MSB_TRY_STATUS(store.MoveProject(moved));
    }
    if (note) {
      note("project " + project.name + " was recorded for " + other +
           ", which no longer exists; " + (take_over ? "taking it over" : "msb up will take it over"));
    }
    return OkStatus();
  }
  MSB_TRY(auto volumes, store.ListVolumes(project.name));
  return Error(ErrorCode::kAlreadyExists,
               "project " + project.name + " belongs to " + other + "; this Sandboxfile is in " +
                   project.base_dir + ". Give this one another name with -p OTHER_NAME (or " +
                   "MSB_PROJECT_NAME=OTHER_NAME), or remove the other first: run `msb down " +
                   (volumes.empty() ? "" : "--volumes ") + "-p " + project.name + "` in " + other +
                   ". (A project whose directory no longer exists is taken over.)");
}

Result<std::vector<SandboxRecord>> ObserveProject(Store& store, const std::string& project) {
  MSB_TRY(auto records, store.ListSandboxes(project));
  for (auto& r : records) r = Observe(store, r);
  return records;
}

Status WaitForCondition(const std::string& project, const std::string& name,
                        schema::DependCondition condition, int deadline_s) {
  MSB_TRY(Store store, Store::Open(Store::DefaultPath()));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(deadline_s);
  std::string last = "no answer";
  while (std::chrono::steady_clock::now() < deadline) {
    MSB_TRY(auto rec, store.GetSandbox(project, name));
    if (!rec) return Error(ErrorCode::kNotFound, name + " does not exist");
    SandboxRecord r = Observe(store, *rec);
    if (condition == schema::DependCondition::kCompleted) {
      if (r.status == SandboxStatus::kExited || r.status == SandboxStatus::kStopped) {
        if (r.exit_code.value_or(-1) == 0) return OkStatus();
        return Error(ErrorCode::kState, name + " did not complete successfully (" +
                                            (r.exit_code ? "exit code " + std::to_string(*r.exit_code)
                                                         : r.status_reason) + ")");
      }
      if (r.status == SandboxStatus::kFailed) {
        return Error(ErrorCode::kState, name + " failed: " + r.status_reason);
      }
    } else {
      if (r.status == SandboxStatus::kFailed || r.status == SandboxStatus::kExited ||
          r.status == SandboxStatus::kStopped) {
        return Error(ErrorCode::kState, name + " is " + ToString(r.status) +
                                            (r.status_reason.empty() ? "" : ": " + r.status_reason));
      }
      if (r.status == SandboxStatus::kRunning) {
        if (condition == schema::DependCondition::kStarted) return OkStatus();
        auto st = LiveStatus(r);
        if (st.ok()) {
          std::string health = st->value("health", std::string());
          if (health == "healthy") return OkStatus();
          if (health == "unhealthy") return Error(ErrorCode::kState, name + " is unhealthy");
          if (health.empty()) return Error(ErrorCode::kState, name + " has no health check");
          last = "health " + health;
        }
      }
    }
    pollfd none{};
    ::poll(&none, 0, 200);
  }
  return Error(ErrorCode::kTimeout, name + " did not become " + schema::ToString(condition) +
                                        " within " + std::to_string(deadline_s) + " s (" + last + ")");
}

namespace {

// What a pass decided: every declared sandbox's image, and the plan.
struct Decision {
  std::map<std::string, ResolvedImage> images;
  Plan plan;
};

Result<Decision> Decide(Store& store, const schema::Project& project, const UpOptions& options,
                        bool fetch) {
  ImageOptions io = options.images;
  io.fetch = fetch;
  Decision d;
  MSB_TRY(d.images, ResolveImages(store, project, io));
  MSB_TRY(auto observed, ObserveProject(store, project.name));
  MSB_TRY(d.plan, MakePlan(project, DigestsOf(d.images), observed, options.plan));
  return d;
}

Status WaitForDependencies(const schema::Project& project, const std::string& name) {
  auto it = project.sandboxes.find(name);
  if (it == project.sandboxes.end()) return OkStatus();
  for (const auto& [dep, d] : it->second.depends_on) {
    if (d.condition == schema::DependCondition::kStarted) continue;
    auto st = WaitForCondition(project.name, dep, d.condition, 300);
    if (!st.ok()) return st.error().Wrap("waiting for dependency " + dep);
  }
  return OkStatus();
}

// The runner the executor is given: each StepKind to its launch.h mechanics.
// The line it reports is "<done> NAME"; a noop's ("unchanged NAME") only
// when report_unchanged.
Status RunStep(const schema::Project& project, const std::map<std::string, ResolvedImage>& images,
               const Step& step, bool report_unchanged, std::string* done_text) {
  if (step.kind == StepKind::kNoop) {
    if (report_unchanged) *done_text = "unchanged " + step.name;
    return OkStatus();
  }
  MSB_TRY(Store store, Store::Open(Store::DefaultPath()));
  auto find_record = [&]() -> Result<SandboxRecord> {
    MSB_TRY(auto rec, store.GetSandbox(project.name, step.name));
    if (!rec) return Error(ErrorCode::kNotFound, "record of " + step.name + " vanished");
    return *rec;
  };
  // The digest the sandbox is declared with now, else the one it was created from.
  auto digest_of = [&](const SandboxRecord& rec) {
    auto image = images.find(step.name);
    return image != images.end() ? image->second.digest : rec.image_digest;
  };
  auto launch_declared = [&]() -> Status {
    auto image = images.find(step.name);
    if (image == images.end()) {
      return Error(ErrorCode::kInternal, "no resolved image for " + step.name);
    }
    MSB_TRY(LaunchRequest req, MakeLaunchRequest(project, project.sandboxes.at(step.name), image->second));
    MSB_TRY_STATUS(Launch(store, req));
    return OkStatus();
  };
  if (step.kind == StepKind::kCreate || step.kind == StepKind::kReplace ||
      step.kind == StepKind::kStart) {
    MSB_TRY_STATUS(WaitForDependencies(project, step.name));
  }
  switch (step.kind) {
    case StepKind::kNoop:
      return OkStatus();
    case StepKind::kCreate:
      MSB_TRY_STATUS(launch_declared());
      *done_text = "created " + step.name;
      return OkStatus();
    case StepKind::kReplace: {
      MSB_TRY(auto old, store.GetSandbox(project.name, step.name));
      if (old) MSB_TRY_STATUS(Remove(store, *old));
      MSB_TRY_STATUS(launch_declared());
      *done_text = "replaced " + step.name;
      return OkStatus();
    }
    case StepKind::kStart: {
      MSB_TRY(SandboxRecord rec, find_record());
      MSB_TRY_STATUS(StartPrepared(store, rec, project.sandboxes.at(step.name), digest_of(rec)));
      *done_text = "started " + step.name;
      return OkStatus();
    }
    case StepKind::kUpdate: {
      MSB_TRY(SandboxRecord rec, find_record());
      MSB_TRY_STATUS(UpdateInPlace(store, rec, project.sandboxes.at(step.name), digest_of(rec)));
      *done_text = "updated " + step.name;
      return OkStatus();
    }
    case StepKind::kRemove: {
      MSB_TRY(auto rec, store.GetSandbox(project.name, step.name));
      if (rec) MSB_TRY_STATUS(Remove(store, *rec));
      *done_text = "removed " + step.name;
      return OkStatus();
    }
  }
  return OkStatus();
}

// --wait: every selected sandbox running, and healthy where it has a check.
Status WaitUntilReady(const schema::Project& project, const UpOptions& options) {
  const auto& names = options.plan.selection;
  std::vector<std::string> bad;
  for (const auto& [name, sb] : project.sandboxes) {
    if (!names.empty() && std::find(names.begin(), names.end(), name) == names.end()) continue;
    auto cond = sb.healthcheck ? schema::DependCondition::kHealthy : schema::DependCondition::kStarted;
    auto st = WaitForCondition(project.name, name, cond, options.wait_timeout_s);
    if (!st.ok()) bad.push_back(st.error().message());
  }
  if (bad.empty()) return OkStatus();
  std::string msg = "not ready:";
  for (const auto& b : bad) msg += "\n  " + b;
  return Error(ErrorCode::kState, msg);
}

// Reads (and wipes) every secret of the sandboxes the plan starts or keeps,
// so that an unset variable or a missing file fails `up` before any step.
Status CheckSecretSources(const schema::Project& project, const Plan& plan) {
  for (const auto& step : plan.steps) {
    if (step.kind == StepKind::kRemove) continue;
    auto sb = project.sandboxes.find(step.name);
    if (sb == project.sandboxes.end() || sb->second.secrets.empty()) continue;
    MSB_TRY(std::string values, ReadSecretValues(step.name, VmSecretsOf(sb->second)));
    secrets::WipeString(&values);
  }
  return OkStatus();
}

bool Cancelled(const UpOptions& options) { return options.cancelled && options.cancelled(); }

// Reads the pending inotify events; true when one names a watched file.
bool WatchedFileChanged(int ino, const schema::Project& project) {
  // The files whose change triggers a new pass.
  const std::vector<std::string> watched = {project.source_path, project.base_dir + "/.env"};
  bool changed = false;
  alignas(inotify_event) char buf[8192];
  ssize_t n;
  while ((n = ::read(ino, buf, sizeof buf)) > 0) {
    for (char* ptr = buf; ptr < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(ptr);
      std::string name = ev->len > 0 ? ev->name : "";
      for (const auto& f : watched) {
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
  return changed;
}

// One pass (ReconcileOnce). Under --watch the passes after the first report
// only what they change: no "unchanged" lines, nothing when nothing changed.
Status ReconcilePass(const schema::Project& project, const UpOptions& options, bool quiet_when_unchanged);

// --watch: a file with errors leaves everything as it is.
Status Watch(schema::Project project, const UpOptions& options) {
  MSB_CHECK(static_cast<bool>(options.reload), "--watch needs a way to reload the Sandboxfile");
  UniqueFd ino(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!ino) return Error::FromErrno("inotify");
  ::inotify_add_watch(ino.get(), project.base_dir.c_str(),
                      IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE);
  if (options.report) options.report("watching " + project.source_path + " (Ctrl-C to stop)");
  auto report_error = [&](const std::string& msg) {
    if (options.report_error) options.report_error(msg);
  };
  for (;;) {
    if (Cancelled(options)) return OkStatus();
    pollfd p{ino.get(), POLLIN, 0};
    int r = ::poll(&p, 1, kWatchPeriodMs);
    if (Cancelled(options)) return OkStatus();
    if (r > 0 && WatchedFileChanged(ino.get(), project)) {
      auto reloaded = options.reload();
      if (!reloaded) {
        report_error("the Sandboxfile has errors; leaving everything as it is");
        continue;
      }
      project = std::move(*reloaded);
      if (options.report) options.report("the Sandboxfile changed; reconciling");
    }
    // A sandbox the user stopped stays stopped until msb start or an up.
    UpOptions pass = options;
    pass.plan.keep_stopped = true;
    if (auto st = ReconcilePass(project, pass, /*quiet_when_unchanged=*/true); !st.ok()) {
      report_error(st.error().message());
    }
  }
}

}  // namespace

Result<Plan> PlanProject(const schema::Project& project, const UpOptions& options) {
  MSB_TRY(Store store, Store::Open(Store::DefaultPath()));
  MSB_TRY_STATUS(CheckProjectDirectory(store, project, /*take_over=*/false, options.report));
  MSB_TRY(Decision d, Decide(store, project, options, /*fetch=*/false));
  return std::move(d.plan);
}

Status ReconcileOnce(const schema::Project& project, const UpOptions& options) {
  return ReconcilePass(project, options, options.quiet_unchanged);
}

namespace {

Status ReconcilePass(const schema::Project& project, const UpOptions& options, bool quiet_when_unchanged) {
  MSB_TRY(Store store, Store::Open(Store::DefaultPath()));
  MSB_TRY_STATUS(CheckProjectDirectory(store, project, /*take_over=*/true, options.report));
  MSB_TRY(Decision d, Decide(store, project, options, /*fetch=*/true));
  // Every secret's source is readable before anything starts.
  MSB_TRY_STATUS(CheckSecretSources(project, d.plan));
  // Sandboxes that keep running get their secrets' current values in place.
  std::vector<std::string> kept;
  for (const auto& step : d.plan.steps) {
    if (step.kind == StepKind::kNoop || step.kind == StepKind::kUpdate) kept.push_back(step.name);
  }
  if (d.plan.NothingToDo()) {
    MSB_TRY_STATUS(RefreshSecrets(store, project, kept));
    if (options.report && !quiet_when_unchanged) {
      for (const auto& step : d.plan.steps) options.report("unchanged " + step.name);
      size_t n = project.sandboxes.size();
      options.report("nothing to do: " + std::to_string(n) + (n == 1 ? " sandbox" : " sandboxes") +
                     " up to date");
    }
    return OkStatus();
  }
  ProjectRecord pr;
  pr.name = project.name;
  pr.directory = project.base_dir;
  pr.sandboxfile = project.source_path;
  // The check above let through the same directory reached another way
  // (a symbolic link): keep the recorded spelling, which UpsertProject matches.
  MSB_TRY(auto recorded, store.GetProject(project.name));
  if (recorded) pr.directory = recorded->directory;
  MSB_TRY_STATUS(store.UpsertProject(pr));
  ExecuteOptions eo;
  eo.parallelism = options.parallelism;
  eo.report = options.report;
  eo.cancelled = options.cancelled;
  StepRunner runner = [&](const Step& step, std::string* done_text) {
    return RunStep(project, d.images, step, !quiet_when_unchanged, done_text);
  };
  auto st = Execute(d.plan, runner, eo);
  if (!st.ok()) {
    return Error(st.error().code(), "some sandboxes did not come up:\n" + st.error().message());
  }
  return RefreshSecrets(store, project, kept);
}

}  // namespace

Status Up(const schema::Project& project, const UpOptions& options) {
  MSB_TRY(ProjectLock lock, ProjectLock::Acquire(project.name));
  Status first = ReconcileOnce(project, options);
  if (first.ok() && options.wait) first = WaitUntilReady(project, options);
  if (!options.watch) return first;
  if (!first.ok() && options.report_error) options.report_error(first.error().message());
  return Watch(project, options);
}

}  // namespace msb::orchestrator
