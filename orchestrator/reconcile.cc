// The executor: a small scheduler over the plan's edges. Each running step
// has its own thread and its own Store connection (a Store is per thread).
#include "orchestrator/reconcile.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "common/io.h"
#include "fs/disk.h"
#include "schema/sandboxfile.h"

namespace msb::orchestrator {

Result<ProjectLock> ProjectLock::Acquire(const std::string& project) {
  std::string dir = MsbHome() + "/locks";
  MSB_TRY_STATUS(MakeDirs(dir, 0700));
  std::string path = dir + "/" + project + ".lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return Error::FromErrno("cannot open " + path);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    std::fprintf(stderr, "msb: another msb command is changing project %s; waiting for it\n",
                 project.c_str());
    if (::flock(fd.get(), LOCK_EX) != 0) return Error::FromErrno("cannot lock " + path);
  }
  return ProjectLock(std::move(fd));
}

Result<std::vector<SandboxRecord>> ObserveProject(Store& store, const std::string& project) {
  MSB_TRY(auto records, store.ListSandboxes(project));
  for (auto& r : records) r = Observe(store, r);
  return records;
}

Result<std::map<std::string, std::string>> ResolveImages(const schema::Project& project) {
  std::map<std::string, std::string> digests;
  std::map<std::string, std::string> by_path;  // one hash per directory
  for (const auto& [name, sb] : project.sandboxes) {
    if (sb.image.kind != schema::Image::Kind::kLocalDir) {
      return Error(ErrorCode::kUnavailable,
                   "sandbox " + name + ": image " + sb.image.reference +
                       ": only local root file system directories can be run so far");
    }
    auto it = by_path.find(sb.image.path);
    if (it == by_path.end()) {
      auto sum = fs::HashTree(sb.image.path);
      if (!sum.ok()) return sum.error().Wrap("sandbox " + name + ": image " + sb.image.reference);
      it = by_path.emplace(sb.image.path, "sha256:" + sum->sha256).first;
    }
    digests[name] = it->second;
  }
  return digests;
}

Result<LaunchRequest> MakeLaunchRequest(const schema::Project& project, const schema::Sandbox& sb,
                                        const std::string& digest) {
  LaunchRequest req;
  req.project = project.name;
  req.name = sb.name;
  req.image_ref = sb.image.reference;
  req.image_dir = sb.image.path;
  req.cpus = sb.cpus;
  req.memory_bytes = sb.memory;
  req.disk_bytes = sb.disk;
  req.ephemeral = sb.ephemeral;
  for (const auto& [k, v] : sb.envs) req.boot.env.push_back(k + "=" + v);
  req.boot.user = sb.user;
  req.boot.workdir = sb.workdir;
  req.boot.command = sb.command;
  if (req.boot.command.empty()) {
    auto start = sb.scripts.find("start");
    if (start != sb.scripts.end()) req.boot.command = start->second;
  }
  req.config_hash = schema::ConfigHash(sb, digest);
  req.spec_json = RecordSpecJson(sb, digest);
  req.image_digest = digest;
  return req;
}

namespace {

Status RunStep(const schema::Project& project, const std::map<std::string, std::string>& digests,
               const Step& step, std::string* done_text) {
  MSB_TRY(Store store, Store::Open(Store::DefaultPath()));
  auto find_record = [&]() -> Result<std::optional<SandboxRecord>> {
    return store.GetSandbox(project.name, step.name);
  };
  auto launch_declared = [&]() -> Status {
    const schema::Sandbox& sb = project.sandboxes.at(step.name);
    auto digest = digests.count(step.name) ? digests.at(step.name) : std::string();
    MSB_TRY(LaunchRequest req, MakeLaunchRequest(project, sb, digest));
    auto rec = Launch(store, req);
    if (!rec.ok()) return rec.error();
    return OkStatus();
  };
  switch (step.kind) {
    case StepKind::kNoop:
      return OkStatus();
    case StepKind::kCreate:
      MSB_TRY_STATUS(launch_declared());
      *done_text = "created " + step.name;
      return OkStatus();
    case StepKind::kReplace: {
      MSB_TRY(auto old, find_record());
      if (old) MSB_TRY_STATUS(Remove(store, *old));
      MSB_TRY_STATUS(launch_declared());
      *done_text = "replaced " + step.name;
      return OkStatus();
    }
    case StepKind::kStart: {
      MSB_TRY(auto rec, find_record());
      if (!rec) return Error(ErrorCode::kNotFound, "record of " + step.name + " vanished");
      // Record the in-place changes the start carries, then boot.
      const schema::Sandbox& sb = project.sandboxes.at(step.name);
      auto digest = digests.count(step.name) ? digests.at(step.name) : rec->image_digest;
      SandboxRecord updated = *rec;
      updated.spec_json = RecordSpecJson(sb, digest);
      MSB_TRY_STATUS(store.UpsertSandbox(updated));
      auto started = StartSupervisor(store, updated);
      if (!started.ok()) return started.error();
      *done_text = "started " + step.name;
      return OkStatus();
    }
    case StepKind::kUpdate: {
      MSB_TRY(auto rec, find_record());
      if (!rec) return Error(ErrorCode::kNotFound, "record of " + step.name + " vanished");
      const schema::Sandbox& sb = project.sandboxes.at(step.name);
      SandboxRecord updated = *rec;
      auto digest = digests.count(step.name) ? digests.at(step.name) : rec->image_digest;
      updated.spec_json = RecordSpecJson(sb, digest);
      MSB_TRY_STATUS(store.UpsertSandbox(updated));
      *done_text = "updated " + step.name;
      return OkStatus();
    }
    case StepKind::kRemove: {
      MSB_TRY(auto rec, find_record());
      if (rec) MSB_TRY_STATUS(Remove(store, *rec));
      *done_text = "removed " + step.name;
      return OkStatus();
    }
  }
  return OkStatus();
}

}  // namespace

Status Execute(const schema::Project& project, const std::map<std::string, std::string>& digests,
               const Plan& plan, const ExecuteOptions& options) {
  std::mutex mu;
  std::condition_variable cv;
  std::set<std::string> done, failed, running;
  std::map<std::string, std::string> errors;
  std::vector<std::thread> threads;
  std::vector<bool> started(plan.steps.size(), false);
  std::unique_lock lock(mu);
  for (;;) {
    // Start every step whose edges are satisfied, up to the parallelism.
    bool progressed = false;
    for (size_t i = 0; i < plan.steps.size(); ++i) {
      if (started[i]) continue;
      const Step& step = plan.steps[i];
      bool ready = true, blocked = false;
      std::string blocker;
      for (const auto& edge : step.depends_on) {
        if (failed.count(edge.step)) {
          blocked = true;
          blocker = edge.step;
        } else if (!done.count(edge.step)) {
          ready = false;
        }
      }
      if (blocked) {
        started[i] = true;
        failed.insert(step.name);
        errors[step.name] = "not started: its dependency " + blocker + " failed";
        progressed = true;
        continue;
      }
      if (!ready || running.size() >= static_cast<size_t>(options.parallelism)) continue;
      started[i] = true;
      running.insert(step.name);
      progressed = true;
      threads.emplace_back([&, i]() {
        std::string text;
        Status st = RunStep(project, digests, plan.steps[i], &text);
        std::lock_guard g(mu);
        running.erase(plan.steps[i].name);
        if (st.ok()) {
          done.insert(plan.steps[i].name);
          if (!text.empty() && options.report) options.report(text);
        } else {
          failed.insert(plan.steps[i].name);
          errors[plan.steps[i].name] = st.error().message();
        }
        cv.notify_all();
      });
    }
    bool all_started = std::all_of(started.begin(), started.end(), [](bool b) { return b; });
    if (all_started && running.empty()) break;
    if (!progressed && running.empty()) {
      // Only possible with an edge to a step that is not in the plan.
      for (size_t i = 0; i < plan.steps.size(); ++i) {
        if (!started[i]) errors[plan.steps[i].name] = "not started: waits for a step not planned";
      }
      break;
    }
    if (!progressed) cv.wait(lock);
  }
  lock.unlock();
  for (auto& t : threads) t.join();
  if (errors.empty()) return OkStatus();
  std::string msg;
  for (const auto& [name, err] : errors) {
    msg += (msg.empty() ? "" : "\n") + name + ": " + err;
  }
  return Error(ErrorCode::kUnavailable, msg);
}

}  // namespace msb::orchestrator
