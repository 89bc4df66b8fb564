// The JSON documents msb prints for --json (and --format json): one builder
// per command, from the data the command already has, so that every field
// name is fixed here and nowhere else. docs/cli-json.md is their reference;
// keep the two in step. Pure: no I/O, no clock, no store.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "orchestrator/launch_mounts.h"
#include "orchestrator/planner.h"
#include "orchestrator/store.h"
#include "schema/diagnostics.h"
#include "schema/model.h"

namespace msb::cli {

// The text printed for a document: indented by 2, invalid UTF-8 replaced,
// one trailing newline.
std::string JsonText(const nlohmann::json& doc);

// msb snapshot ls: {"name", "digest", "parent_digest", "source",
// "source_image", "layers", "size_bytes", "created_at"}; `layers` is how
// many layers a sandbox booting it attaches.
nlohmann::json SnapshotJson(const orchestrator::SnapshotRecord& snapshot, size_t layers);

// msb sync status: one object per sync, {"project", "repo", "ref", "path",
// "directory", "applied_commit", "applied_at", "fetched_commit",
// "checked_at", "error"}; `error` is null or {"message", "commit", "at"};
// `directory` is the project's (orchestrator/sync.h: <dir>/tree).
nlohmann::json SyncJson(const orchestrator::SyncRecord& sync, const std::string& directory);

// msb plan: {"project", "nothing_to_do", "steps": [{"action", "sandbox",
// "cause", "text", "after": [{"sandbox", "condition"}]}], "summary"}.
nlohmann::json PlanJson(const std::string& project, const orchestrator::Plan& plan);

// msb validate: {"valid", "file", "project", "sandboxes", "errors",
// "warnings", "diagnostics": [{"severity", "file", "line", "column", "path",
// "message"}]}. `project` is the loaded project, absent when it has errors;
// `file` is the Sandboxfile as found (project->source_path) or as named.
nlohmann::json ValidateJson(const std::string& file, const schema::Project* project,
                            const schema::Diagnostics& diagnostics);

// msb config --hash: {"<sandbox>": "<config hash>", ...}, sorted by name.
nlohmann::json ConfigHashJson(const schema::Project& project);

// What msb net check decided, per address of the destination.
struct NetCheckDecision {
  std::string address;  // the address judged ("10.0.2.2" for host; a sibling sandbox's name)
  std::string flow;     // "tcp 1.2.3.4:443", "icmp host (the gateway)", "1.2.3.4 (some port)"
  bool allowed = false;
  std::string reason;   // the deciding rule or profile
  std::string address_class;  // policy class: public, private, loopback, meta, host, group, ...
  bool to_host_loopback = false;  // a host rule: the connection goes to the host's 127.0.0.1
  bool dropped_from_dns = false;  // the sandbox's DNS drops this address from its answers
};
struct NetCheckReport {
  std::string sandbox;
  std::string source;  // where the policy came from: a Sandboxfile, or a recorded spec
  std::string profile;
  size_t rules = 0;
  std::string destination;              // as given
  std::optional<std::string> protocol;  // "tcp", "udp", "icmp"; none: any
  std::optional<int> port;              // none: any port (or icmp)
  bool by_name = false;                 // destination was a host name resolved on this host
  std::vector<NetCheckDecision> decisions;
  bool AllAllowed() const;
};
// msb net check: {"sandbox", "source", "profile", "rules", "destination",
// "protocol", "port", "by_name", "allowed", "decisions": [{"address", "flow",
// "allowed", "reason", "class", "to_host_loopback", "dropped_from_dns"}]}.
nlohmann::json NetCheckJson(const NetCheckReport& report);

// One element of msb images: {"reference", "digest", "config_digest",
// "media_type", "size_bytes", "base_disk", "created_at", "in_use":
// [{"project", "name", "state"}]}.
nlohmann::json ImageJson(const orchestrator::ImageRecord& image, const std::vector<orchestrator::SandboxRecord>& users);

// One element of msb volume ls: {"project", "name", "size_bytes", "path",
// "created_at", "used_by": [{"project", "name", "state", "read_only"}]}.
nlohmann::json VolumeJson(const orchestrator::VolumeRecord& volume,
                          const std::vector<orchestrator::VolumeUser>& users);

}  // namespace msb::cli
