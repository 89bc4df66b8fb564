// Creating, starting, updating, observing, stopping and removing one sandbox:
// the mechanics shared by `msb run` and `msb up` (orchestrator/up.h), and the
// one place a declared sandbox becomes a LaunchRequest. Decides nothing about
// *whether* to act; callers decide. Not the supervisor itself (vm/).
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agent/messages.h"
#include "common/result.h"
#include "orchestrator/images.h"
#include "orchestrator/store.h"
#include "schema/model.h"
#include "vm/builder_vm.h"
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
  // A snapshot's layers over the base disk, oldest first (ResolvedImage).
  std::vector<std::string> lower_disks;
  int cpus = 1;
  uint64_t memory_bytes = 512ull << 20;
  uint64_t disk_bytes = 2ull << 30;
  bool ephemeral = false;
  // security.read_only_root: no writable layer (no upper disk; a small tmpfs
  // takes what agentd writes at boot) and / read-only in the guest.
  bool read_only_root = false;
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
  bool cold_boot = false;  // `boot: cold`: never from a booted template (vm/template.h)
  uint64_t log_max_bytes = 0;  // `logs.max_size`; 0: MSB_LOG_MAX_SIZE, else the default
  std::optional<vm::VmNetwork> network;  // absent: no network device
  // The sandbox's secrets: sources and hosts, never values; StartSupervisor
  // reads the values each time it starts the supervisor.
  std::vector<vm::VmSecret> secrets;
  // The workload held back by LaunchOptions::boot_workload off, for the
  // caller to exec once the guest is ready; Launch does not use it.
  std::vector<std::string> exec_command;
};

// What a launch asks beyond its declared sandbox; the defaults are `msb up`'s.
// `msb run` boots an idle guest and execs its command itself, may have no
// network device, keeps its temporary sandboxes out of any group and may set
// the interface's MTU and the boot deadline.
struct LaunchOptions {
  // On: the workload (the image's entrypoint + the sandbox's command, else its
  // start script, else the image's cmd) is the guest's boot command. Off: the
  // guest boots with none and LaunchRequest::exec_command holds it.
  bool boot_workload = true;
  // Off: no network device at all.
  bool network_device = true;
  // On: the sandbox joins its project's group (vm/spec.h VmNetwork::group_dir),
  // reachable by name from the project's other sandboxes.
  bool network_group = true;
  int mtu = 0;              // the guest interface's MTU; 0: vm::VmNetwork's
  int boot_timeout_ms = 0;  // 0: LaunchRequest's
};

// The launch request for a declared sandbox of `project` booting `image`.
Result<LaunchRequest> MakeLaunchRequest(const schema::Project& project, const schema::Sandbox& sb,
                                        const ResolvedImage& image,
                                        const LaunchOptions& options = {});

// The supervisor's policy (vm/lifecycle_policy.h JSON) for a declared sandbox.
nlohmann::json SupervisorPolicy(const schema::Sandbox& sb);

// Prepares disks and the sandbox directory, records the sandbox, starts its
// supervisor and waits until the guest is ready or failed. On failure nothing
// is left running and the record says why.
Result<SandboxRecord> Launch(Store& store, const LaunchRequest& request);
// The two halves of Launch: Prepare records the sandbox (status created) with
// its directory, writable layer and spec; StartSupervisor boots a prepared or
// stopped sandbox (its writable layer kept) and waits for ready.
Result<SandboxRecord> Prepare(Store& store, const LaunchRequest& request);

// A sandbox's secrets as the supervisor's spec carries them.
std::vector<vm::VmSecret> VmSecretsOf(const schema::Sandbox& sb);
// Every secret's value read from its source now, as transfer text
// (secrets/transfer.h): the caller wipes it (secrets::WipeString). The error
// names the sandbox, the variable and what is wrong with the source.
Result<std::string> ReadSecretValues(const std::string& sandbox, const std::vector<vm::VmSecret>& secrets);
// The values of every running sandbox of `names` that has secrets, handed to
// its supervisor in place (ControlKind::kUpdateSecrets).
Status RefreshSecrets(Store& store, const schema::Project& project, const std::vector<std::string>& names);

Result<SandboxRecord> StartSupervisor(Store& store, const SandboxRecord& record);

// Boots a prepared, stopped or failed sandbox with the in-place changes the
// start carries (the planner's kStart): the record's spec_json becomes
// RecordSpecJson(sb, image_digest) and the spec's policy SupervisorPolicy(sb);
// then StartSupervisor.
Result<SandboxRecord> StartPrepared(Store& store, const SandboxRecord& record,
                                    const schema::Sandbox& sb, const std::string& image_digest);

// Applies the in-place changes of the planner's kUpdate (restart policy,
// health check, depends_on) without a reboot: a live supervisor takes the new
// policy over its control socket (and keeps it in its spec), a dead one has it
// written into its spec; then the record's spec_json is rewritten.
Status UpdateInPlace(Store& store, const SandboxRecord& record, const schema::Sandbox& sb,
                     const std::string& image_digest);

// What is true now: the record, corrected when its supervisor is gone.
SandboxRecord Observe(Store& store, SandboxRecord record);
bool SupervisorAlive(const SandboxRecord& record);
// The lock file every supervisor holds while it lives: an exclusive open
// file description lock (fcntl F_OFD_SETLK), so that it belongs to the open
// file and not to a process. StartSupervisor takes it before it spawns the
// supervisor, which inherits the fd (`--lock-fd`): from before the spawn to
// the supervisor's end it is held, so a launcher killed at any moment never
// leaves a starting supervisor that looks dead.
std::string SupervisorLockPath(const std::string& sandbox_dir);
// Takes the lock on a new fd (numbered 3 or above, close-on-exec); an error
// with ErrorCode::kAlreadyExists while another open file holds it.
Result<UniqueFd> TakeSupervisorLock(const std::string& sandbox_dir);
// Takes it on fd, an open file of the lock: succeeds when that open file
// holds it already (an inherited fd), kAlreadyExists when another does.
Status HoldSupervisorLock(int fd);
// Whether a supervisor holds the lock. Only tests for it (F_OFD_GETLK): a
// probe never holds the lock, not even for a moment a launcher could hit.
// A supervisor started by an msb from before the OFD lock holds a flock(2)
// on the same file, which is probed too.
bool SupervisorRunning(const std::string& sandbox_dir);

// Live status of a sandbox from its supervisor: state and, when it has a
// health check, "health" (starting|healthy|unhealthy); kState error when it is
// not running.
Result<nlohmann::json> LiveStatus(const SandboxRecord& record);

// Graceful stop through the supervisor (agent shutdown → ACPI → kill), waiting
// at most timeout_ms plus the supervisor's own deadlines.
Status Stop(Store& store, const SandboxRecord& record, int timeout_ms = 10000);
// Stops if needed, deletes the sandbox directory and the record.
Status Remove(Store& store, const SandboxRecord& record);

// Finds a sandbox by "NAME" or "PROJECT/NAME" (sandbox_ref.h: the current
// project first, else any project when the name is unique; an ambiguity
// lists "msb <command> PROJECT/NAME" per candidate), observed.
Result<SandboxRecord> FindSandbox(Store& store, const std::string& ref,
                                  const std::string& current_project = "",
                                  const std::string& command = "exec");

// The host's TSC rate for the guest's command line (vm/kernel.h TscKernelArg),
// measured (20 ms) once per host boot and kept in $MSB_HOME/host-tsc.json.
// 0 when it cannot be measured.
uint64_t CachedTscKhz();

// The agentd binary to put in the initramfs: $MSB_AGENTD, else beside msb in
// a build tree, else <prefix>/libexec/msb/agentd (common/install_layout.h).
Result<std::string> FindAgentd();

// The guest kernel (vm::FindGuestKernel) and the initramfs for it and agentd.
// Booting Debian's kernel because the tuned one is not built yet prints one
// note per command saying so and how to build it.
struct BootFiles {
  std::string kernel;
  std::string initramfs;
};
Result<BootFiles> FindBootFiles();

// A builder VM's QEMU, kernel, initramfs, accelerator and TSC rate on this
// host (image unpack, snapshot export).
Result<vm::BuilderVmOptions> HostBuilderVmOptions();

}  // namespace msb::orchestrator
