// The --json documents (json_output.h); field by field as docs/cli-json.md
// lists them.
#include "cli/json_output.h"

#include <algorithm>

#include "schema/sandboxfile.h"

namespace msb::cli {

using nlohmann::json;

std::string JsonText(const json& doc) {
  return doc.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

json PlanJson(const std::string& project, const orchestrator::Plan& plan) {
  using orchestrator::StepKind;
  json steps = json::array();
  for (const orchestrator::Step& s : plan.steps) {
    json after = json::array();
    for (const orchestrator::StepEdge& e : s.depends_on) {
      after.push_back({{"sandbox", e.step}, {"condition", schema::ToString(e.condition)}});
    }
    steps.push_back({{"action", orchestrator::ToString(s.kind)},
                     {"sandbox", s.name},
                     {"cause", s.cause},
                     {"text", s.ToText()},
                     {"after", std::move(after)}});
  }
  json summary = json::object();
  for (StepKind k : {StepKind::kCreate, StepKind::kReplace, StepKind::kUpdate, StepKind::kStart,
                     StepKind::kRemove, StepKind::kNoop}) {
    summary[orchestrator::ToString(k)] = plan.Count(k);
  }
  return {{"project", project},
          {"nothing_to_do", plan.NothingToDo()},
          {"steps", std::move(steps)},
          {"summary", std::move(summary)}};
}

json ValidateJson(const std::string& file, const schema::Project* project,
                  const schema::Diagnostics& diagnostics) {
  json items = json::array();
  size_t warnings = 0;
  for (const schema::Diagnostic& d : diagnostics.items()) {
    const bool warning = d.severity == schema::Diagnostic::Severity::kWarning;
    if (warning) ++warnings;
    const bool placed = d.pos.line > 0;
    items.push_back({{"severity", warning ? "warning" : "error"},
                     {"file", d.file},
                     {"line", placed ? json(d.pos.line) : json()},
                     {"column", placed ? json(d.pos.column) : json()},
                     {"path", d.path},
                     {"message", d.message}});
  }
  json sandboxes = json::array();
  if (project != nullptr) {
    for (const auto& [name, sb] : project->sandboxes) sandboxes.push_back(name);
  }
  return {{"valid", project != nullptr && !diagnostics.HasErrors()},
          {"file", project != nullptr ? project->source_path : file},
          {"project", project != nullptr ? json(project->name) : json()},
          {"sandboxes", std::move(sandboxes)},
          {"errors", diagnostics.ErrorCount()},
          {"warnings", warnings},
          {"diagnostics", std::move(items)}};
}

json ConfigHashJson(const schema::Project& project) {
  json hashes = json::object();
  for (const auto& [name, sb] : project.sandboxes) hashes[name] = schema::ConfigHash(sb);
  return hashes;
}

bool NetCheckReport::AllAllowed() const {
  return !decisions.empty() &&
         std::all_of(decisions.begin(), decisions.end(), [](const NetCheckDecision& d) { return d.allowed; });
}

json NetCheckJson(const NetCheckReport& r) {
  json decisions = json::array();
  for (const NetCheckDecision& d : r.decisions) {
    decisions.push_back({{"address", d.address},
                         {"flow", d.flow},
                         {"allowed", d.allowed},
                         {"reason", d.reason},
                         {"class", d.address_class},
                         {"to_host_loopback", d.to_host_loopback},
                         {"dropped_from_dns", d.dropped_from_dns}});
  }
  return {{"sandbox", r.sandbox},
          {"source", r.source},
          {"profile", r.profile},
          {"rules", r.rules},
          {"destination", r.destination},
          {"protocol", r.protocol ? json(*r.protocol) : json()},
          {"port", r.port ? json(*r.port) : json()},
          {"by_name", r.by_name},
          {"allowed", r.AllAllowed()},
          {"decisions", std::move(decisions)}};
}

json ImageJson(const orchestrator::ImageRecord& i, const std::vector<orchestrator::SandboxRecord>& users) {
  json used = json::array();
  for (const auto& u : users) {
    used.push_back({{"project", u.project}, {"name", u.name}, {"state", orchestrator::ToString(u.status)}});
  }
  return {{"reference", i.reference},   {"digest", i.digest},       {"config_digest", i.config_digest},
          {"media_type", i.media_type}, {"size_bytes", i.size_bytes}, {"base_disk", i.base_disk},
          {"created_at", i.created_at}, {"in_use", std::move(used)}};
}

json VolumeJson(const orchestrator::VolumeRecord& v, const std::vector<orchestrator::VolumeUser>& users) {
  json used = json::array();
  for (const auto& u : users) {
    used.push_back({{"project", u.project},
                    {"name", u.name},
                    {"state", orchestrator::ToString(u.status)},
                    {"read_only", u.read_only}});
  }
  return {{"project", v.project},       {"name", v.name},
          {"size_bytes", v.size_bytes}, {"path", v.path},
          {"created_at", v.created_at}, {"used_by", std::move(used)}};
}

nlohmann::json SyncJson(const orchestrator::SyncRecord& s, const std::string& directory) {
  auto text_or_null = [](const std::string& v) { return v.empty() ? nlohmann::json() : nlohmann::json(v); };
  auto time_or_null = [](int64_t t) { return t > 0 ? nlohmann::json(t) : nlohmann::json(); };
  nlohmann::json error;
  if (!s.error.empty()) {
    error = {{"message", s.error}, {"commit", text_or_null(s.error_commit)}, {"at", time_or_null(s.error_at)}};
  }
  return nlohmann::json{{"project", text_or_null(s.project)},
                        {"repo", s.repo},
                        {"ref", text_or_null(s.ref)},
                        {"path", text_or_null(s.path)},
                        {"directory", directory},
                        {"applied_commit", text_or_null(s.applied_commit)},
                        {"applied_at", time_or_null(s.applied_at)},
                        {"fetched_commit", text_or_null(s.fetched_commit)},
                        {"checked_at", time_or_null(s.checked_at)},
                        {"error", error}};
}

nlohmann::json SnapshotJson(const orchestrator::SnapshotRecord& s, size_t layers) {
  return nlohmann::json{{"name", s.name},
                        {"digest", s.digest},
                        {"parent_digest", s.parent_digest},
                        {"source", s.source},
                        {"source_image", s.source_image},
                        {"layers", layers},
                        {"size_bytes", s.size_bytes},
                        {"created_at", s.created_at}};
}

}  // namespace msb::cli
