// msb snapshot create / ls / rm / export: disk snapshots of sandboxes
// (orchestrator/snapshot.h). `msb run snapshot:NAME` and `image:
// snapshot:NAME` boot them; this file only parses flags and prints.
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/json_output.h"
#include "orchestrator/launch.h"
#include "orchestrator/snapshot.h"
#include "orchestrator/store.h"
#include "schema/values.h"

namespace msb::cli {
namespace {

using orchestrator::Store;

std::string Age(int64_t since) {
  if (since <= 0) return "-";
  int64_t d = static_cast<int64_t>(std::time(nullptr)) - since;
  if (d < 0) d = 0;
  if (d < 60) return std::to_string(d) + "s ago";
  if (d < 3600) return std::to_string(d / 60) + "m ago";
  if (d < 86400) return std::to_string(d / 3600) + "h ago";
  return std::to_string(d / 86400) + "d ago";
}

int Create(const std::string& sandbox, const std::string& name, const std::string& project) {
  if (auto st = orchestrator::CheckSnapshotName(name); !st.ok()) return Fail(st.error().message());
  auto store = Store::Open(Store::DefaultPath());
  if (!store.ok()) return Fail(store.error().message());
  auto rec = orchestrator::FindSandbox(*store, sandbox, CurrentProject(project), "snapshot create");
  if (!rec.ok()) return Fail(rec.error().message());
  auto snap = orchestrator::CreateSnapshot(*store, *rec, name);
  if (!snap.ok()) return Fail(snap.error().message());
  std::cout << "snapshot " << snap->name << " of " << snap->source << ": " << snap->digest << " ("
            << schema::FormatSize(static_cast<uint64_t>(snap->size_bytes)) << ")" << std::endl;
  return 0;
}

int Ls(bool json_out) {
  auto store = Store::Open(Store::DefaultPath());
  if (!store.ok()) return Fail(store.error().message());
  auto snaps = store->ListSnapshots();
  if (!snaps.ok()) return Fail(snaps.error().message());
  nlohmann::json arr = nlohmann::json::array();
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"NAME", "SOURCE", "IMAGE", "DIGEST", "SIZE", "CREATED"});
  for (const auto& s : *snaps) {
    auto layers = orchestrator::SnapshotLayers(s);
    arr.push_back(SnapshotJson(s, layers.ok() ? layers->size() : 0));
    std::string digest = s.digest.size() > 19 ? s.digest.substr(7, 12) : s.digest;
    rows.push_back({s.name, s.source, s.source_image, digest,
                    schema::FormatSize(static_cast<uint64_t>(s.size_bytes)), Age(s.created_at)});
  }
  if (json_out) {
    std::cout << JsonText(arr);
    return 0;
  }
  PrintTable(rows);
  return 0;
}

int Rm(const std::vector<std::string>& names) {
  auto store = Store::Open(Store::DefaultPath());
  if (!store.ok()) return Fail(store.error().message());
  int rc = 0;
  for (const auto& name : names) {
    if (auto st = orchestrator::RemoveSnapshot(*store, name); !st.ok()) {
      rc = Fail(st.error().message());
      continue;
    }
    std::cout << "removed snapshot " << name << std::endl;
  }
  return rc;
}

// "104.0 MiB".
std::string MiB(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

int Export(const std::string& name, const std::string& output, const std::string& ref_name, bool quiet) {
  if (output.empty()) return Fail("snapshot export: give the archive to write with -o FILE.tar (or -o - for stdout)");
  if (output == "-" && ::isatty(STDOUT_FILENO)) {
    return Fail("snapshot export: -o - writes a tar to stdout, which is a terminal; redirect it to a file or pipe");
  }
  auto store = Store::Open(Store::DefaultPath());
  if (!store.ok()) return Fail(store.error().message());
  orchestrator::SnapshotExportOptions o;
  o.output = output;
  o.ref_name = ref_name;
  o.quiet = quiet;
  auto r = orchestrator::ExportSnapshot(*store, name, o);
  if (!r.ok()) return Fail(r.error().message());
  if (output != "-" && !quiet) {
    std::cout << "exported snapshot " << name << " to " << output << ": " << r->manifest_digest << " ("
              << r->image_layers << " image + " << r->snapshot_layers << " snapshot layers, " << MiB(r->bytes)
              << ")" << std::endl;
  }
  return 0;
}

}  // namespace

void RegisterSnapshotCommands(CLI::App& app) {
  auto* snapshot = app.add_subcommand("snapshot", "Save, list, remove or export disk snapshots of sandboxes");
  snapshot->require_subcommand(1);
  {
    struct CreateArgs {
      std::string sandbox, name, project;
    };
    auto a = std::make_shared<CreateArgs>();
    auto* cmd = snapshot->add_subcommand(
        "create", "Save a sandbox's root file system (image + writable layer) as snapshot NAME");
    cmd->add_option("sandbox", a->sandbox, "the sandbox: NAME or PROJECT/NAME")->required();
    cmd->add_option("name", a->name, "the snapshot's name")->required();
    AddProjectNameFlag(cmd, &a->project);
    OnRun(cmd, [a]() { return Create(a->sandbox, a->name, a->project); });
  }
  {
    auto json = std::make_shared<bool>(false);
    auto* cmd = snapshot->add_subcommand("ls", "List snapshots");
    AddJsonFlags(cmd, json.get());
    OnRun(cmd, [json]() { return Ls(*json); });
  }
  {
    auto names = std::make_shared<std::vector<std::string>>();
    auto* cmd = snapshot->add_subcommand("rm", "Remove snapshots (refused while a sandbox or snapshot uses one)");
    cmd->add_option("names", *names, "snapshot names")->required();
    OnRun(cmd, [names]() { return Rm(*names); });
  }
  {
    struct ExportArgs {
      std::string name, output, ref_name;
      bool quiet = false;
    };
    auto a = std::make_shared<ExportArgs>();
    auto* cmd = snapshot->add_subcommand(
        "export", "Write snapshot NAME as an OCI image archive (msb load, skopeo copy oci-archive:)");
    cmd->add_option("name", a->name, "the snapshot")->required();
    cmd->add_option("-o,--output", a->output, "the archive to write (FILE.tar, or - for stdout)")->required();
    cmd->add_option("--ref-name", a->ref_name,
                    "the image's org.opencontainers.image.ref.name in the archive (default: NAME)");
    cmd->add_flag("-q,--quiet", a->quiet, "print nothing but errors");
    OnRun(cmd, [a]() { return Export(a->name, a->output, a->ref_name, a->quiet); });
  }
}

}  // namespace msb::cli
