// The planner (planner.h): compares each declared sandbox's canonical form
// and config hash with what its record was created from, decides one step
// per sandbox, explains it, and orders the steps. Pure: it reads its
// arguments and returns a value; nothing here touches the store or a VM.
#include "orchestrator/planner.h"

#include <algorithm>
#include <iterator>
#include <set>

#include <nlohmann/json.hpp>

#include "schema/sandboxfile.h"
#include "schema/values.h"

namespace msb::orchestrator {
namespace {

using json = nlohmann::json;
using schema::DependCondition;

constexpr const char* kStepKinds[] = {"noop", "create", "replace", "update", "start", "remove"};
static_assert(std::size(kStepKinds) == static_cast<size_t>(StepKind::kRemove) + 1);

// Longest rendered value in a cause; longer ones keep their start and "...".
constexpr size_t kMaxValueChars = 48;
constexpr const char* kNone = "(none)";
constexpr const char* kNoRecreate = "not recreated (--no-recreate): ";

// Canonical keys the supervisor applies without a new VM (left out of the
// config hash, see schema::ConfigHash).
bool InPlaceKey(std::string_view top) {
  return top == "depends_on" || top == "restart" || top == "healthcheck";
}

Error Invalid(std::string message) { return Error(ErrorCode::kInvalidArgument, std::move(message)); }

std::string Join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (const std::string& p : parts) {
    if (!out.empty()) out += sep;
    out += p;
  }
  return out;
}

std::string Elide(std::string s) {
  if (s.size() <= kMaxValueChars) return s;
  size_t cut = kMaxValueChars - 3;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // UTF-8 boundary
  s.resize(cut);
  return s + "...";
}

// A string as it reads in a cause: bare unless empty or holding separators.
std::string Word(const std::string& s) {
  bool plain = !s.empty() && std::none_of(s.begin(), s.end(), [](char c) {
    return c == ' ' || c == ',' || c == ';' || c == '"' || c == '(' || c == ')' || c == '[' ||
           c == ']' || c == '{' || c == '}' || static_cast<unsigned char>(c) < 0x20;
  });
  return plain ? s : json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string Generic(const json& v) {
  if (v.is_null()) return kNone;
  if (v.is_string()) return Word(v.get<std::string>());
  if (v.is_array()) {
    std::vector<std::string> items;
    for (const json& e : v) items.push_back(Generic(e));
    return "[" + Join(items, ", ") + "]";
  }
  if (v.is_object()) {
    std::vector<std::string> items;
    for (const auto& [k, e] : v.items()) items.push_back(k + ": " + Generic(e));
    return "{" + Join(items, ", ") + "}";
  }
  return v.dump();
}

std::string Str(const json& v, const char* key) {
  auto it = v.find(key);
  return it != v.end() && it->is_string() ? it->get<std::string>() : std::string();
}
uint64_t U64(const json& v, const char* key) {
  auto it = v.find(key);
  return it != v.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

std::string Duration(const json& v) {
  return v.is_number_integer() ? schema::FormatDuration(v.get<int64_t>()) : Generic(v);
}

// One canonical list item, compactly: ports "8080:80" (127.0.0.1 and tcp
// implied), volumes "/src:/app" (":ro" when read-only), tmpfs as in a file.
std::string Item(std::string_view list, const json& e) {
  if (!e.is_object()) return Generic(e);
  if (list == "ports") {
    std::string ip = Str(e, "host_ip"), out;
    if (ip != "127.0.0.1") out = (ip.find(':') != std::string::npos ? "[" + ip + "]" : ip) + ":";
    out += std::to_string(U64(e, "host_port")) + ":" + std::to_string(U64(e, "guest_port"));
    if (Str(e, "protocol") != "tcp") out += "/" + Str(e, "protocol");
    return out;
  }
  if (list == "volumes") {
    auto ro = e.find("read_only");
    return Str(e, "source") + ":" + Str(e, "target") + (ro != e.end() && *ro == true ? ":ro" : "");
  }
  if (list == "tmpfs") {
    std::string out = Str(e, "target");
    std::string opts;
    if (U64(e, "size") != 0) opts = "size=" + schema::FormatSize(U64(e, "size"));
    if (Str(e, "mode") != "1777") opts += (opts.empty() ? "mode=" : ",mode=") + Str(e, "mode");
    return opts.empty() ? out : out + ":" + opts;
  }
  return Generic(e);
}

// A value of the canonical form at `path` (dotted), for a human.
std::string Render(const std::string& path, const json& v) {
  if (v.is_null()) return kNone;
  if ((path == "memory" || path == "disk") && v.is_number_unsigned()) {
    return schema::FormatSize(v.get<uint64_t>());
  }
  if (path == "healthcheck.interval" || path == "healthcheck.timeout" ||
      path == "healthcheck.start_period") {
    return Elide(Duration(v));
  }
  if (path == "healthcheck" && v.is_object()) {
    auto cmd = v.find("command");
    return Elide(Generic(cmd != v.end() ? *cmd : json())) + " every " +
           Duration(v.value("interval", json()));
  }
  if (path == "depends_on" && v.is_object()) {
    std::vector<std::string> items;
    for (const auto& [name, dep] : v.items()) {
      std::string cond = dep.is_object() ? Str(dep, "condition") : std::string();
      items.push_back(cond.empty() || cond == "started" ? name : name + ":" + cond);
    }
    return Elide("[" + Join(items, ", ") + "]");
  }
  if ((path == "ports" || path == "volumes" || path == "tmpfs") && v.is_array()) {
    std::vector<std::string> items;
    for (const json& e : v) items.push_back(Item(path, e));
    return Elide("[" + Join(items, ", ") + "]");
  }
  if (path == "security" && v.is_object()) {
    // The section appears or goes: name what it sets.
    std::vector<std::string> items;
    for (const auto& [k, e] : v.items()) {
      if (e == false || (e.is_array() && e.empty())) continue;
      items.push_back(k + ": " + Generic(e));
    }
    return Elide("{" + Join(items, ", ") + "}");
  }
  if (path.rfind("secrets.", 0) == 0 && std::count(path.begin(), path.end(), '.') == 1 &&
      v.is_object()) {
    std::string source = v.contains("from_env") ? "from_env" : "from_file";
    return Elide(source + " " + Word(Str(v, source.c_str())) + " allow " +
                 Generic(v.value("allow", json::array())));
  }
  return Elide(Generic(v));
}

// Maps whose changes are reported key by key.
bool Descend(const std::string& path) {
  if (path.empty() || path == "envs" || path == "scripts" || path == "secrets" ||
      path == "network" || path == "network.dns" || path == "healthcheck" || path == "security") {
    return true;
  }
  if (path.rfind("secrets.", 0) != 0) return false;
  auto dots = std::count(path.begin(), path.end(), '.');
  return dots == 1 || (dots == 2 && path.size() > 7 && path.ends_with(".inject"));
}

struct Change {
  std::string top;   // the canonical key it is under
  std::string text;  // "memory 512M -> 1G"
};

void Diff(const std::string& path, const json& old_v, const json& new_v, std::vector<Change>* out) {
  if (old_v == new_v) return;
  if (old_v.is_object() && new_v.is_object() && Descend(path)) {
    std::set<std::string> keys;
    for (const auto& [k, _] : old_v.items()) keys.insert(k);
    for (const auto& [k, _] : new_v.items()) keys.insert(k);
    for (const std::string& k : keys) {
      if (path.empty() && k == "meta") continue;  // informational
      auto o = old_v.find(k);
      auto n = new_v.find(k);
      Diff(path.empty() ? k : path + "." + k, o != old_v.end() ? *o : json(),
           n != new_v.end() ? *n : json(), out);
    }
    return;
  }
  std::string top = path.substr(0, path.find('.'));
  out->push_back({top, path + " " + Render(path, old_v) + " -> " + Render(path, new_v)});
}

// What a record was created from, read back from its spec_json.
struct RecordedSpec {
  bool readable = false;
  json canonical;
  std::string image_digest;
};

RecordedSpec ReadSpec(const SandboxRecord& rec) {
  RecordedSpec spec;
  spec.image_digest = rec.image_digest;
  json j = json::parse(rec.spec_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return spec;
  auto canonical = j.find("canonical");
  if (canonical == j.end() || !canonical->is_object()) return spec;
  spec.readable = true;
  spec.canonical = *canonical;
  auto digest = j.find("image_digest");
  if (digest != j.end() && digest->is_string()) spec.image_digest = digest->get<std::string>();
  return spec;
}

std::vector<std::string> RecordedDependencies(const SandboxRecord& rec) {
  std::vector<std::string> deps;
  RecordedSpec spec = ReadSpec(rec);
  if (!spec.readable) return deps;
  auto d = spec.canonical.find("depends_on");
  if (d == spec.canonical.end() || !d->is_object()) return deps;
  for (const auto& [name, _] : d->items()) deps.push_back(name);
  return deps;
}

bool IsRunning(SandboxStatus status) {
  return status == SandboxStatus::kRunning || status == SandboxStatus::kStarting;
}

// Why a declared sandbox is started: "was failed: supervisor died".
std::string StartReason(const SandboxRecord& rec) {
  if (rec.status == SandboxStatus::kCreated) return "was created, never started";
  std::string out = std::string("was ") + ToString(rec.status);
  if (rec.status == SandboxStatus::kExited && rec.exit_code) {
    out += " with code " + std::to_string(*rec.exit_code);
  }
  if (!rec.status_reason.empty()) out += ": " + rec.status_reason;
  return out;
}

// Kahn's algorithm over `nodes`; `before(n)` lists nodes that must come
// before n (others are ignored). Ready nodes are taken in name order. Nodes
// left on a cycle are returned in *cyclic (sorted) and not in the order.
std::vector<std::string> TopoOrder(
    const std::set<std::string>& nodes,
    const std::map<std::string, std::vector<std::string>>& before,
    std::vector<std::string>* cyclic) {
  std::map<std::string, int> pending;
  std::map<std::string, std::vector<std::string>> after;
  for (const std::string& n : nodes) {
    pending[n] = 0;
    auto it = before.find(n);
    if (it == before.end()) continue;
    std::set<std::string> unique(it->second.begin(), it->second.end());
    for (const std::string& b : unique) {
      if (b == n || !nodes.count(b)) continue;
      ++pending[n];
      after[b].push_back(n);
    }
  }
  std::set<std::string> ready;
  for (const auto& [n, count] : pending) {
    if (count == 0) ready.insert(n);
  }
  std::vector<std::string> order;
  while (!ready.empty()) {
    std::string n = *ready.begin();
    ready.erase(ready.begin());
    order.push_back(n);
    for (const std::string& a : after[n]) {
      if (--pending[a] == 0) ready.insert(a);
    }
  }
  for (const auto& [n, count] : pending) {
    if (count > 0) cyclic->push_back(n);
  }
  return order;
}

// The step for one declared sandbox (edges are added later).
Step Decide(const schema::Sandbox& sb, const std::string& resolved_digest, const SandboxRecord* rec,
            const PlanOptions& options) {
  Step step;
  step.name = sb.name;
  if (rec == nullptr) {
    step.kind = StepKind::kCreate;
    return step;
  }
  RecordedSpec spec = ReadSpec(*rec);
  std::string digest = resolved_digest.empty() ? spec.image_digest : resolved_digest;
  bool hash_changed = schema::ConfigHash(sb, digest) != rec->config_hash;
  bool running = IsRunning(rec->status);

  std::vector<Change> changes;
  if (spec.readable) Diff("", spec.canonical, schema::CanonicalJson(sb), &changes);
  std::vector<std::string> all, in_place;
  bool hashed_visible = false;
  for (const Change& c : changes) {
    all.push_back(c.text);
    if (InPlaceKey(c.top)) in_place.push_back(c.text);
    else hashed_visible = true;
  }
  if (!spec.readable) in_place.push_back("recorded spec unreadable");

  if (hash_changed) {
    bool image_ref_changed = std::any_of(changes.begin(), changes.end(),
                                         [](const Change& c) { return c.top == "image"; });
    if (digest != spec.image_digest && !image_ref_changed) {
      all.push_back("image digest changed");
      hashed_visible = true;
    }
    if (!hashed_visible) all.push_back("config changed");
    if (!options.no_recreate) {
      step.kind = StepKind::kReplace;
      step.cause = Join(all, "; ");
    } else if (running) {
      step.kind = StepKind::kNoop;
      step.cause = kNoRecreate + Join(all, "; ");
    } else {
      step.kind = StepKind::kStart;
      step.cause = StartReason(*rec) + "; " + kNoRecreate + Join(all, "; ");
    }
    return step;
  }

  std::vector<std::string> causes;
  if (options.force_recreate) causes.push_back("forced");
  if (!running) causes.push_back(StartReason(*rec));
  causes.insert(causes.end(), in_place.begin(), in_place.end());
  step.cause = Join(causes, "; ");
  if (options.force_recreate) step.kind = StepKind::kReplace;
  else if (!running && options.keep_stopped && rec->status == SandboxStatus::kStopped) {
    step.kind = StepKind::kNoop;
    step.cause += "; stopped on request, left stopped";
  } else if (!running) step.kind = StepKind::kStart;
  else if (!in_place.empty()) step.kind = StepKind::kUpdate;
  else step.kind = StepKind::kNoop;
  return step;
}

}  // namespace

const char* ToString(StepKind kind) {
  auto i = static_cast<size_t>(kind);
  return i < std::size(kStepKinds) ? kStepKinds[i] : "unknown";
}

std::string Step::ToText() const {
  std::string line;
  switch (kind) {
    case StepKind::kCreate: line = "+ create " + name; break;
    case StepKind::kReplace: line = "-/+ replace " + name; break;
    case StepKind::kUpdate: line = "~ update " + name; break;
    case StepKind::kStart: line = "> start " + name; break;
    case StepKind::kRemove: line = "- remove " + name; break;
    case StepKind::kNoop: return "= " + name + (cause.empty() ? " up to date" : " unchanged (" + cause + ")");
  }
  return cause.empty() ? line : line + " (" + cause + ")";
}

int Plan::Count(StepKind kind) const {
  return static_cast<int>(
      std::count_if(steps.begin(), steps.end(), [kind](const Step& s) { return s.kind == kind; }));
}

bool Plan::NothingToDo() const { return Count(StepKind::kNoop) == static_cast<int>(steps.size()); }

const Step* Plan::Find(std::string_view name) const {
  for (const Step& s : steps) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::string Plan::ToText() const {
  std::string out;
  for (const Step& s : steps) out += s.ToText() + "\n";
  std::string unchanged = std::to_string(Count(StepKind::kNoop)) + " unchanged";
  if (NothingToDo()) return out + "plan: nothing to do, " + unchanged + "\n";
  auto n = [this](StepKind k) { return std::to_string(Count(k)); };
  return out + "plan: " + n(StepKind::kCreate) + " to create, " + n(StepKind::kReplace) +
         " to replace, " + n(StepKind::kUpdate) + " to update, " + n(StepKind::kStart) +
         " to start, " + n(StepKind::kRemove) + " to remove, " + unchanged + "\n";
}

std::string Plan::EdgesText() const {
  std::string out;
  for (const Step& s : steps) {
    if (s.depends_on.empty()) continue;
    std::vector<std::string> items;
    for (const StepEdge& e : s.depends_on) {
      items.push_back(e.condition == DependCondition::kStarted
                          ? e.step
                          : e.step + " (" + schema::ToString(e.condition) + ")");
    }
    out += s.name + " after " + Join(items, ", ") + "\n";
  }
  return out;
}

std::string RecordSpecJson(const schema::Sandbox& sandbox, std::string_view image_digest) {
  json j = {{"canonical", schema::CanonicalJson(sandbox)}, {"image_digest", std::string(image_digest)}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Result<Plan> MakePlan(const schema::Project& project,
                      const std::map<std::string, std::string>& image_digests,
                      const std::vector<SandboxRecord>& observed, const PlanOptions& options) {
  if (options.force_recreate && options.no_recreate) {
    return Invalid("--force-recreate and --no-recreate cannot be used together");
  }
  std::map<std::string, const SandboxRecord*> records;
  for (const SandboxRecord& rec : observed) {
    MSB_CHECK(rec.project == project.name,
              "record " + rec.project + "/" + rec.name + " given for project " + project.name);
    MSB_CHECK(records.emplace(rec.name, &rec).second, "two records for sandbox " + rec.name);
  }

  // Declared sandboxes, dependencies first.
  std::set<std::string> declared;
  std::map<std::string, std::vector<std::string>> needs;
  for (const auto& [name, sb] : project.sandboxes) {
    declared.insert(name);
    for (const auto& [dep, _] : sb.depends_on) {
      if (!project.sandboxes.count(dep)) {
        return Invalid("sandbox " + name + " depends on " + dep + ", which is not declared");
      }
      needs[name].push_back(dep);
    }
  }
  std::vector<std::string> cyclic;
  std::vector<std::string> order = TopoOrder(declared, needs, &cyclic);
  if (!cyclic.empty()) {
    return Invalid("depends_on has a cycle among: " + Join(cyclic, ", "));
  }

  // The selection and everything it depends on.
  std::set<std::string> planned = declared;
  if (!options.selection.empty()) {
    planned.clear();
    std::vector<std::string> todo;
    for (const std::string& name : options.selection) {
      if (!declared.count(name)) {
        std::vector<std::string> names(declared.begin(), declared.end());
        return Invalid("no sandbox named " + name + " in the Sandboxfile (declared: " +
                       (names.empty() ? std::string("none") : Join(names, ", ")) + ")");
      }
      todo.push_back(name);
    }
    while (!todo.empty()) {
      std::string n = todo.back();
      todo.pop_back();
      if (!planned.insert(n).second) continue;
      for (const std::string& dep : needs[n]) todo.push_back(dep);
    }
  }

  Plan plan;
  // Orphans: dependents removed before what they depended on.
  if (options.selection.empty()) {
    std::set<std::string> orphans;
    std::map<std::string, std::vector<std::string>> dependents;  // removed before the key
    for (const auto& [name, rec] : records) {
      if (!declared.count(name)) orphans.insert(name);
    }
    for (const std::string& o : orphans) {
      for (const std::string& dep : RecordedDependencies(*records[o])) {
        if (!orphans.count(dep) || dep == o) continue;
        dependents[dep].push_back(o);
      }
    }
    std::vector<std::string> left;
    std::vector<std::string> removal = TopoOrder(orphans, dependents, &left);
    removal.insert(removal.end(), left.begin(), left.end());  // a recorded cycle: by name
    for (const std::string& o : removal) {
      Step step;
      step.name = o;
      step.kind = options.remove_orphans ? StepKind::kRemove : StepKind::kNoop;
      step.cause = options.remove_orphans ? "no longer declared" : "no longer declared, kept";
      if (options.remove_orphans) {
        std::set<std::string> waits(dependents[o].begin(), dependents[o].end());
        for (const std::string& w : waits) step.depends_on.push_back({w, DependCondition::kStarted});
      }
      plan.steps.push_back(std::move(step));
    }
  }
  std::vector<std::string> removals;
  for (const Step& s : plan.steps) {
    if (s.kind == StepKind::kRemove) removals.push_back(s.name);
  }

  std::map<std::string, StepKind> kinds;
  for (const std::string& name : order) {
    if (!planned.count(name)) continue;
    const schema::Sandbox& sb = project.sandboxes.at(name);
    auto digest = image_digests.find(name);
    auto rec = records.find(name);
    Step step = Decide(sb, digest != image_digests.end() ? digest->second : std::string(),
                       rec != records.end() ? rec->second : nullptr, options);
    kinds[name] = step.kind;
    if (step.kind != StepKind::kNoop) {
      for (const auto& [dep, d] : sb.depends_on) {
        if (kinds.at(dep) != StepKind::kNoop) step.depends_on.push_back({dep, d.condition});
      }
      if (step.kind != StepKind::kUpdate) {
        for (const std::string& r : removals) step.depends_on.push_back({r, DependCondition::kStarted});
      }
      std::sort(step.depends_on.begin(), step.depends_on.end(),
                [](const StepEdge& a, const StepEdge& b) { return a.step < b.step; });
    }
    plan.steps.push_back(std::move(step));
  }
  return plan;
}

}  // namespace msb::orchestrator
