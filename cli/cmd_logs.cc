// msb logs: workload output. One named sandbox's is printed as it was
// written (stdout and stderr apart); the current project's sandboxes', or
// several named ones', are merged by time, each line after its sandbox's
// name. Reading and following the files only: cutting, merging and
// formatting lines is orchestrator/log_view.h.
#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "common/fd.h"
#include "common/io.h"
#include "orchestrator/launch.h"
#include "orchestrator/log_view.h"
#include "orchestrator/store.h"
#include "orchestrator/up.h"
#include "schema/values.h"
#include "vm/log_file.h"

namespace msb::cli {
namespace {

using orchestrator::LogLine;
using orchestrator::SandboxRecord;
using orchestrator::Store;

struct LogArgs {
  std::vector<std::string> names;
  std::string project, since, tail = "all";
  bool follow = false, timestamps = false, no_color = false, no_prefix = false;
};

// How long -f sleeps at most between looks at whether the sandboxes still run.
constexpr int kLivenessPollMs = 1000;

// Watches each sandbox directory for writes to its workload.log: the
// directory, not the file, since a rotation makes a new workload.log.
class LogWatch {
 public:
  explicit LogWatch(const std::vector<std::string>& dirs)
      : fd_(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK)) {
    if (!fd_) return;
    for (const auto& d : dirs) Add(d);
  }
  void Add(const std::string& dir) {
    if (fd_) ::inotify_add_watch(fd_.get(), dir.c_str(), IN_MODIFY | IN_CREATE | IN_MOVED_TO);
  }
  // Until something was written, or timeout_ms (which bounds how late the
  // end of a sandbox is noticed).
  void Wait(int timeout_ms) {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, fd_ ? 1 : 0, timeout_ms) > 0) {
      char buf[4096];
      while (::read(fd_.get(), buf, sizeof buf) > 0) {
      }
    }
  }

 private:
  UniqueFd fd_;
};

// Prints the data of workload.log records as it was written, to stdout or
// stderr; records older than `since` (log_view.h: "t" compared as text) are
// skipped.
void PrintRaw(const std::string& records, const std::string& since) {
  size_t pos = 0;
  for (;;) {
    size_t nl = records.find('\n', pos);
    if (nl == std::string::npos) return;
    auto j = nlohmann::json::parse(records.substr(pos, nl - pos), nullptr, false);
    pos = nl + 1;
    if (!j.is_object()) continue;
    auto data = j.find("data");
    auto stream = j.find("stream");
    auto t = j.find("t");
    if (data == j.end() || !data->is_string()) continue;
    if (!since.empty() && (t == j.end() || !t->is_string() || t->get_ref<const std::string&>() < since)) continue;
    bool err = stream != j.end() && stream->is_string() && *stream == "stderr";
    (void)WriteAll(err ? 2 : 1, data->get_ref<const std::string&>());
  }
}

// One sandbox, as it was written; -f until its supervisor is gone.
int Raw(const SandboxRecord& rec, bool follow, const std::string& since) {
  std::optional<LogWatch> watch;
  if (follow) watch.emplace(std::vector<std::string>{rec.sandbox_dir});
  vm::LogFollower log(rec.sandbox_dir + "/workload.log");
  for (;;) {
    // Alive before the read: whatever it wrote before it ended is read now.
    bool alive = follow && orchestrator::SupervisorAlive(rec);
    PrintRaw(log.Read(), since);
    if (!alive) return 0;
    watch->Wait(kLivenessPollMs);
  }
}

struct Source {
  std::string label;
  SandboxRecord rec;
  vm::LogFollower follower;
  orchestrator::LogLineSplitter splitter;
  bool ended = false;
};

// The project's sandboxes as the store has them now. With -f on a whole
// project, sandboxes created or replaced after logs started are followed too.
struct Relist {
  std::function<std::vector<SandboxRecord>()> list;
  // Whether an `msb up` or `down` is changing the project: while one is, the
  // project is followed even when none of its sandboxes runs (a replaced one
  // is removed before its successor exists).
  std::function<bool()> changing;
};

// Lines: several sandboxes, or one with -t or --tail.
int Lines(std::vector<Source>& sources, const orchestrator::LogFormat& format, bool follow,
          std::optional<size_t> tail, const std::string& since, const Relist& relist) {
  auto print = [&](std::vector<std::vector<LogLine>> batch) {
    for (const auto& l : orchestrator::MergeByTime(std::move(batch))) {
      // Prefixed lines all go to stdout, as docker compose prints them.
      int fd = !format.prefix && l.line.stderr_stream ? 2 : 1;
      (void)WriteAll(fd, orchestrator::FormatLogLine(format, sources[l.source].label, l.source, l.line));
    }
  };
  // Sandboxes recorded but whose supervisor has not started yet: followed as
  // live until it has, so a sandbox being created is not taken for an ended one.
  std::set<std::string> pending;
  // Reads what each running sandbox appended; an ended one gives its last
  // incomplete line too and is read no more.
  auto read_all = [&]() {
    std::vector<std::vector<LogLine>> batch(sources.size());
    for (size_t i = 0; i < sources.size(); ++i) {
      Source& s = sources[i];
      if (s.ended) continue;
      // Alive before the read: whatever it wrote before it ended is read now.
      bool alive = follow && (orchestrator::SupervisorAlive(s.rec) || pending.count(s.rec.sandbox_dir) > 0);
      s.splitter.Feed(s.follower.Read(), &batch[i]);
      if (!alive) {
        s.splitter.Flush(&batch[i]);
        s.ended = true;
      }
    }
    return batch;
  };
  // Watching before the first read: a write in between wakes the loop.
  std::optional<LogWatch> watch;
  std::set<std::string> known;
  if (follow) {
    std::vector<std::string> dirs;
    for (const auto& s : sources) {
      dirs.push_back(s.rec.sandbox_dir);
      known.insert(s.rec.sandbox_dir);
    }
    watch.emplace(dirs);
  }
  // Takes in the project's sandboxes that appeared since the last look.
  auto adopt = [&]() {
    if (!relist.list) return;
    pending.clear();
    for (auto& r : relist.list()) {
      if (r.sandbox_dir.empty()) continue;
      if (r.status == orchestrator::SandboxStatus::kCreated) pending.insert(r.sandbox_dir);
      if (!known.insert(r.sandbox_dir).second) continue;
      watch->Add(r.sandbox_dir);
      std::string path = r.sandbox_dir + "/workload.log";
      std::string label = r.name;
      sources.push_back(Source{label, std::move(r), vm::LogFollower(path), orchestrator::LogLineSplitter(since)});
    }
  };
  if (follow) adopt();
  auto batch = read_all();
  if (tail) {
    for (auto& lines : batch) orchestrator::KeepLast(&lines, *tail);
  }
  print(std::move(batch));
  if (!follow) return 0;
  for (;;) {
    bool running = false;
    for (const auto& s : sources) running = running || !s.ended;
    if (!running && !(relist.changing && relist.changing())) return 0;
    watch->Wait(kLivenessPollMs);
    adopt();
    print(read_all());
  }
}

// "--since 10m" as the records' time text, "" when not given.
Result<std::string> SinceText(const std::string& since) {
  if (since.empty()) return std::string();
  auto ms = schema::ParseDuration(since);
  if (!ms.ok()) return Error(ErrorCode::kInvalidArgument, "--since " + since + ": " + ms.error().message());
  std::time_t t = std::time(nullptr) - static_cast<std::time_t>(*ms / 1000);
  char buf[40];
  struct tm tm_buf;
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", gmtime_r(&t, &tm_buf));
  return std::string(buf);
}

int Logs(const LogArgs& a) {
  auto since = SinceText(a.since);
  if (!since.ok()) return Fail(since.error().message());
  auto tail = orchestrator::ParseTail(a.tail);
  if (!tail.ok()) return Fail(tail.error().message());
  auto store = Store::Open(Store::DefaultPath());
  if (!store.ok()) return Fail(store.error().message());
  std::vector<SandboxRecord> records;
  if (a.names.empty()) {
    std::string project = CurrentProject(a.project);
    if (project.empty()) {
      return Fail("msb logs without a sandbox name shows the current project's, and there is none: "
                  "run it in the directory of a Sandboxfile, give -p PROJECT, or name a sandbox "
                  "(msb ps -a lists them)");
    }
    auto listed = store->ListSandboxes(project);
    if (!listed.ok()) return Fail(listed.error().message());
    if (listed->empty()) {
      std::fprintf(stderr, "msb: project %s has no sandboxes (msb up creates them)\n", project.c_str());
      return 0;
    }
    records = std::move(*listed);
  } else {
    const std::string current = CurrentProject(a.project);
    for (const auto& name : a.names) {
      auto rec = orchestrator::FindSandbox(*store, name, current, "logs");
      if (!rec.ok()) return Fail(rec.error().message());
      records.push_back(std::move(*rec));
    }
  }
  orchestrator::LogFormat format;
  format.prefix = a.names.size() != 1 && !a.no_prefix;
  format.timestamps = a.timestamps;
  if (!format.prefix && !format.timestamps && !*tail && records.size() == 1) {
    return Raw(records[0], a.follow, *since);
  }
  // The name labels each line; PROJECT/NAME when two named ones share a name.
  std::map<std::string, int> uses;
  for (const auto& r : records) ++uses[r.name];
  std::vector<Source> sources;
  std::vector<std::string> labels;
  for (auto& r : records) {
    std::string label = uses[r.name] > 1 ? r.project + "/" + r.name : r.name;
    labels.push_back(label);
    std::string path = r.sandbox_dir + "/workload.log";
    sources.push_back(Source{label, std::move(r), vm::LogFollower(path), orchestrator::LogLineSplitter(*since)});
  }
  format.name_width = orchestrator::LogNameWidth(labels);
  format.colour = format.prefix &&
                  orchestrator::UseColour(::isatty(1) != 0, a.no_color, std::getenv("NO_COLOR"), std::getenv("TERM"));
  Relist relist;
  if (a.names.empty() && a.follow) {
    const std::string project = CurrentProject(a.project);
    relist.list = [&store, project]() {
      auto listed = store->ListSandboxes(project);
      return listed.ok() ? std::move(*listed) : std::vector<SandboxRecord>();
    };
    relist.changing = [project]() { return orchestrator::ProjectLock::Held(project); };
  }
  return Lines(sources, format, a.follow, *tail, *since, relist);
}

}  // namespace

void RegisterLogsCommand(CLI::App& app) {
  auto a = std::make_shared<LogArgs>();
  auto* cmd = app.add_subcommand(
      "logs", "Print workload output: one sandbox's, or the current project's with each line after its sandbox's name");
  cmd->add_flag("-f,--follow", a->follow, "keep printing new output until the sandboxes end (a project's: new ones too)");
  cmd->add_option("--since", a->since, "only output newer than this, e.g. 10m");
  cmd->add_option("-n,--tail", a->tail, "the last N lines of each sandbox (default: all)");
  cmd->add_flag("-t,--timestamps", a->timestamps, "the time each line was recorded (UTC), before it");
  cmd->add_flag("--no-color", a->no_color, "no colour in the names (the default when stdout is not a terminal)");
  cmd->add_flag("--no-log-prefix", a->no_prefix, "no sandbox name before each line");
  cmd->add_option("sandboxes", a->names, "sandbox names, or PROJECT/NAME (default: the current project's)");
  AddProjectNameFlag(cmd, &a->project);
  OnRun(cmd, [a]() { return Logs(*a); });
}

}  // namespace msb::cli
