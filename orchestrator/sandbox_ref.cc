// Sandbox references: the current project first, then the whole store.
#include "orchestrator/sandbox_ref.h"

namespace msb::orchestrator {

Result<SandboxRecord> ResolveSandboxRef(const std::vector<SandboxRecord>& all, std::string_view ref,
                                        const std::string& current_project,
                                        const std::string& command) {
  std::string project, name(ref);
  if (size_t slash = ref.find('/'); slash != std::string_view::npos) {
    project = std::string(ref.substr(0, slash));
    name = std::string(ref.substr(slash + 1));
    if (project.empty() || name.empty() || name.find('/') != std::string::npos) {
      return Error(ErrorCode::kInvalidArgument,
                   "sandbox " + std::string(ref) + ": use NAME or PROJECT/NAME");
    }
    for (const auto& r : all) {
      if (r.project == project && r.name == name) return r;
    }
    return Error(ErrorCode::kNotFound, "no sandbox named " + name + " in project " + project +
                                           " (see msb ps)");
  }
  std::vector<const SandboxRecord*> hits;
  for (const auto& r : all) {
    if (r.name != name) continue;
    if (!current_project.empty() && r.project == current_project) return r;
    hits.push_back(&r);
  }
  if (hits.empty()) {
    return Error(ErrorCode::kNotFound,
                 "no sandbox named " + name +
                     (current_project.empty() ? "" : " in project " + current_project + " or any other") +
                     " (see msb ps)");
  }
  if (hits.size() == 1) return *hits[0];
  std::string message = "sandbox name " + name + " is used in several projects";
  if (!current_project.empty()) message += ", none of them " + current_project;
  message += "; name one:";
  for (const auto* h : hits) {
    message += "\n  msb " + command + " " + h->project + "/" + h->name + " ...";
  }
  return Error(ErrorCode::kInvalidArgument, message);
}

std::string ShortestSandboxRef(const std::vector<SandboxRecord>& all, const SandboxRecord& record,
                               const std::string& current_project) {
  auto found = ResolveSandboxRef(all, record.name, current_project, "");
  if (found.ok() && found->project == record.project && found->name == record.name) return record.name;
  return record.project + "/" + record.name;
}

}  // namespace msb::orchestrator
