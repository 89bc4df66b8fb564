// The executor: a small scheduler over the plan's edges. Each running step
// has its own thread and its own Store connection (a Store is per thread).
#include "orchestrator/executor.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "common/io.h"
#include "storage/disk.h"
#include "orchestrator/control_client.h"
#include "vm/lifecycle_policy.h"
#include "vm/spec.h"
#include "schema/network_rule.h"
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

nlohmann::json SupervisorPolicy(const schema::Sandbox& sb) {
  vm::LifecyclePolicy p;
  p.restart.kind = static_cast<vm::RestartPolicy::Kind>(static_cast<int>(sb.restart.policy));
  p.restart.max_retries = sb.restart.max_retries;
  if (sb.healthcheck) {
    vm::HealthPolicy h;
    h.command = sb.healthcheck->command;
    h.interval_ms = sb.healthcheck->interval_ms;
    h.timeout_ms = sb.healthcheck->timeout_ms;
    h.retries = sb.healthcheck->retries;
    h.start_period_ms = sb.healthcheck->start_period_ms;
    p.health = h;
  }
  return vm::ToJson(p);
}

Result<LaunchRequest> MakeLaunchRequest(const schema::Project& project, const schema::Sandbox& sb,
                                        const ResolvedImage& image) {
  const std::string& digest = image.digest;
  LaunchRequest req;
  req.project = project.name;
  req.name = sb.name;
  req.image_ref = sb.image.reference;
  req.image_dir = sb.image.path;
  req.base_disk = image.base_disk;
  req.cpus = sb.cpus;
  req.memory_bytes = sb.memory;
  req.disk_bytes = sb.disk;
  req.ephemeral = sb.ephemeral;
  req.mounts = sb.volumes;
  req.tmpfs = sb.tmpfs;
  for (const auto& m : sb.volumes) {
    auto v = project.volumes.find(m.source);
    if (m.kind == schema::Mount::Kind::kVolume && v != project.volumes.end())
      req.volume_sizes[m.source] = v->second.size;
  }
  for (const auto& [k, v] : sb.envs) req.boot.env.push_back(k + "=" + v);
  req.boot.user = sb.user;
  req.boot.workdir = sb.workdir;
  req.boot.command = sb.command;
  if (req.boot.command.empty()) {
    auto start = sb.scripts.find("start");
    if (start != sb.scripts.end()) req.boot.command = start->second;
  }
  ApplyImageDefaults(image.defaults, !req.boot.command.empty(), req.boot);
  vm::VmNetwork net;
  net.profile = schema::ToString(sb.network.policy);
  for (const auto& rule : sb.network.rules) net.rules.push_back(schema::ToString(rule));
  net.dns_servers = sb.network.dns_servers;
  net.rebind_protection = sb.network.rebind_protection;
  for (const auto& p : sb.ports) {
    net.ports.push_back({p.host_ip, p.host_port, p.guest_port, schema::ToString(p.protocol)});
  }
  net.group_dir = MsbHome() + "/net/" + project.name;
  net.group_name = sb.name;
  req.network = net;
  req.policy = SupervisorPolicy(sb);
  req.config_hash = schema::ConfigHash(sb, digest);
  req.spec_json = RecordSpecJson(sb, digest);
  req.image_digest = digest;
  return req;
}

Result<nlohmann::json> LiveStatus(const SandboxRecord& record) {
  if (record.status != SandboxStatus::kRunning && record.status != SandboxStatus::kStarting) {
    return Error(ErrorCode::kState, record.name + " is " + ToString(record.status));
  }
  MSB_TRY(ControlClient client, ControlClient::Connect(record.control_socket));
  return client.GetStatus();
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

Status RunStep(const schema::Project& project, const std::map<std::string, ResolvedImage>& images,
               const Step& step, std::string* done_text) {
  MSB_TRY(Store store, Store::Open(Store::DefaultPath()));
  auto find_record = [&]() -> Result<std::optional<SandboxRecord>> {
    return store.GetSandbox(project.name, step.name);
  };
  auto launch_declared = [&]() -> Status {
    const schema::Sandbox& sb = project.sandboxes.at(step.name);
    auto image = images.find(step.name);
    if (image == images.end()) {
      return Error(ErrorCode::kInternal, "no resolved image for " + step.name);
    }
    MSB_TRY(LaunchRequest req, MakeLaunchRequest(project, sb, image->second));
    auto rec = Launch(store, req);
    if (!rec.ok()) return rec.error();
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
      auto digest = images.count(step.name) ? images.at(step.name).digest : rec->image_digest;
      SandboxRecord updated = *rec;
      updated.spec_json = RecordSpecJson(sb, digest);
      MSB_TRY_STATUS(store.UpsertSandbox(updated));
      if (auto spec = vm::ReadSpec(rec->sandbox_dir); spec.ok()) {
        spec->policy = SupervisorPolicy(sb);
        MSB_TRY_STATUS(vm::WriteSpec(*spec));
      }
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
      auto digest = images.count(step.name) ? images.at(step.name).digest : rec->image_digest;
      updated.spec_json = RecordSpecJson(sb, digest);
      // The supervisor applies the new policy in place and keeps it in its spec.
      nlohmann::json policy = SupervisorPolicy(sb);
      if (SupervisorAlive(*rec)) {
        MSB_TRY(ControlClient client, ControlClient::Connect(rec->control_socket));
        MSB_TRY_STATUS(client.UpdatePolicy(policy));
      } else if (auto spec = vm::ReadSpec(rec->sandbox_dir); spec.ok()) {
        spec->policy = policy;
        MSB_TRY_STATUS(vm::WriteSpec(*spec));
      }
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

Status Execute(const schema::Project& project, const std::map<std::string, ResolvedImage>& images,
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
        Status st = RunStep(project, images, plan.steps[i], &text);
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
