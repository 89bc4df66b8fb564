// Creating, starting, observing, stopping and removing one sandbox: the
// mechanics shared by `msb run` and the reconciler. Decides nothing about
// *whether* to act; callers decide. Not the supervisor itself (vm/).
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "agent/messages.h"
#include "common/result.h"
#include "orchestrator/store.h"
#include "schema/model.h"
#include "vm/spec.h"

namespace msb::orchestrator {

struct LaunchRequest {
  std::string project;
  std::string name;
  std::string image_ref;  // as the user wrote it
  std::string image_dir;  // absolute local root file system directory
  std::string image_digest;  // content digest of the image, when resolved
  // The read-only base disk when already built (orchestrator/images.h);
  // empty: built here from image_dir.
  std::string base_disk;
  int cpus = 1;
  uint64_t memory_bytes = 512ull << 20;
  uint64_t disk_bytes = 2ull << 30;
  bool ephemeral = false;
  agent::BootConfig boot;
  // Mounts as declared; Prepare makes them devices and the guest's mount list
  // (orchestrator/launch_mounts.h). volume_sizes: each named volume's size, by name.
  std::vector<schema::Mount> mounts;
  std::vector<schema::Tmpfs> tmpfs;
  std::map<std::string, uint64_t> volume_sizes;
  nlohmann::json policy;  // vm/lifecycle_policy.h: restart policy and health check
  std::string config_hash;
  std::string spec_json;
  int boot_timeout_ms = 60000;
  std::optional<vm::VmNetwork> network;  // absent: no network device
};

// Prepares disks and the sandbox directory, records the sandbox, starts its
// supervisor and waits until the guest is ready or failed. On failure nothing
// is left running and the record says why.
Result<SandboxRecord> Launch(Store& store, const LaunchRequest& request);
// The two halves of Launch: Prepare records the sandbox (status created) with
// its directory, writable layer and spec; StartSupervisor boots a prepared or
// stopped sandbox (its writable layer kept) and waits for ready.
Result<SandboxRecord> Prepare(Store& store, const LaunchRequest& request);
Result<SandboxRecord> StartSupervisor(Store& store, const SandboxRecord& record);

// What is true now: the record, corrected when its supervisor is gone.
SandboxRecord Observe(Store& store, SandboxRecord record);
bool SupervisorAlive(const SandboxRecord& record);
// The lock file every supervisor holds (flock, exclusive) while it lives.
std::string SupervisorLockPath(const std::string& sandbox_dir);
bool SupervisorRunning(const std::string& sandbox_dir);

// Graceful stop through the supervisor (agent shutdown → ACPI → kill), waiting
// at most timeout_ms plus the supervisor's own deadlines.
Status Stop(Store& store, const SandboxRecord& record, int timeout_ms = 10000);
// Stops if needed, deletes the sandbox directory and the record.
Status Remove(Store& store, const SandboxRecord& record);

// Finds a sandbox by name: in `project` when given, else in any project when
// the name is unique (msb run's temporary sandboxes included).
Result<SandboxRecord> FindSandbox(Store& store, const std::string& name,
                                  const std::string& project = "");

// The host's TSC rate for the guest's command line (vm/kernel.h TscKernelArg),
// measured (20 ms) once per host boot and kept in $MSB_HOME/host-tsc.json.
// 0 when it cannot be measured.
uint64_t CachedTscKhz();

// The agentd binary to put in the initramfs: $MSB_AGENTD, else beside msb.
Result<std::string> FindAgentd();

}  // namespace msb::orchestrator
