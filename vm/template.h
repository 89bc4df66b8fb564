// Booted templates: a QEMU migration stream of a sandbox VM whose agentd has
// sent its hello and waits for the host's hello and boot message, before it
// has opened any disk or network device. Restoring one (`-incoming fd:0`)
// with the sandbox's own disks and sockets at the same slots replaces the
// kernel boot. Not the supervisor's restore logic (vm/supervisor.cc) and not
// the guest's side of a resume (agentd/guest_init.h AddEntropy, SetClock,
// ReprobeDisks).
//
// Layout: $MSB_HOME/templates/<key>/ holds `state` (the stream, written by
// QEMU through a descriptor passed over QMP `getfd`, `migrate fd:…`) and
// `meta.json` (what it was made of, its SHA-256, and the stream's file
// identity: device, inode, size, modification and change times, checked
// before every use, so a stream changed or replaced on disk in any way is
// never restored; a stream damaged below the file system is QEMU's to
// refuse, which the supervisor's fallback handles). A template is built in templates/.build-XXXXXX (QEMU jailed
// as a sandbox's, with empty placeholder disks at the sandbox's slots) and
// renamed into place whole, under templates/<key>.lock (flock), so parallel
// starts build it once.
//
// Key (TemplateKey): SHA-256 of kTemplateFormat, the kernel's, the
// initramfs's and the QEMU binary's paths and file identities, and
// the whole QEMU command line of the sandbox with its paths normalised:
// accelerator, CPUs, memory, machine options, kernel command line, and the
// device layout (which disks at which slot, read-only or not, serials, the
// network device and its MAC). A config that changes any of these gets
// another key; nothing else decides whether a template fits.
//
// Builder VMs (vm/builder_vm.h) keep templates here too, of their own kind:
// their key covers their own command line (TemplateKeyOf), and they build
// them through PrepareTemplateFor with their own plan (TemplateVm).
//
// Not migratable: vhost-user-fs (virtio-fs shares) blocks migration in QEMU
// 7.2, so a sandbox with shares boots cold (ColdBootReason).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/messages.h"
#include "common/result.h"
#include "vm/jail.h"
#include "vm/spec.h"

namespace msb::vm {

// Bumped when what a template holds changes meaning (agentd's resume steps).
inline constexpr int kTemplateFormat = 1;

// $MSB_HOME/templates.
std::string TemplatesDir();

// Why `spec` must boot cold ("" when a template may be used): MSB_BOOT=cold,
// spec.boot_mode "cold" (the Sandboxfile's `boot: cold`), or shares.
std::string ColdBootReason(const VmSpec& spec);

// Kinds of template (meta.json "kind").
inline constexpr char kSandboxTemplate[] = "sandbox";
inline constexpr char kBuilderTemplate[] = "builder";

// The template key for spec (hex, 32 digits) run by `qemu`.
Result<std::string> TemplateKey(const VmSpec& spec, const std::string& qemu);

// The key of a template of `kind`: `files` (name, path; "" paths skipped) by
// path and identity, and `argv`, the VM's QEMU command line with every path
// in it normalised (the same for every VM that may share the template).
Result<std::string> TemplateKeyOf(std::string_view kind,
                                  const std::vector<std::pair<std::string, std::string>>& files,
                                  const std::vector<std::string>& argv);

// What a start will restore from, or why it boots cold.
struct TemplateChoice {
  std::string key;         // empty: cold boot
  std::string state_path;  // the migration stream
  std::string identity;    // the stream's file identity as checked (RemoveTemplateTried)
  std::string why_cold;    // when key is empty
  bool built = false;      // this call built it
};

// Finds the template for spec, checks its file identity (a changed one is
// removed) or builds it (blocking: a cold boot and the save, bounded by
// spec.boot_timeout_ms). Never fails: any problem is a cold boot with a reason.
TemplateChoice PrepareTemplate(const VmSpec& spec, const std::string& qemu);

// How to build one template in the build directory `work`: QEMU's command
// line (without -incoming) and jail, with every path in `work`. QEMU connects
// to the sockets, which the build listens on; it boots the guest until
// agentd's hello and saves it over the monitor.
struct TemplateVm {
  std::vector<std::string> argv;
  VmmJail jail;
  std::vector<std::string> placeholders;  // empty files made first: its disks
  std::string qmp_socket;
  std::string agent_socket;
  std::string console_socket;  // "" = QEMU writes console_log itself
  std::string console_log;     // its tail goes into a failed build's error
  std::string net_socket;      // "" = no network device
};

// What meta.json records of a template (msb template ls).
struct TemplateMeta {
  std::string kind = kSandboxTemplate;
  // What the key took by path and identity (TemplateKeyOf's `files`):
  // recorded so that `msb template prune` finds templates no start can use.
  std::vector<std::pair<std::string, std::string>> files;
  int cpus = 0;
  uint64_t memory_mib = 0;
  std::string accel;
  std::string kernel;
  int disks = 0;
  bool network = false;
};

// PrepareTemplate for any VM: finds and checks templates/<key>, or builds it
// from plan(work) within timeout_ms. Never fails: any problem is a cold boot
// with a reason. With `wait` false, a key another process holds (building
// it, most likely) is a cold boot now rather than a wait.
TemplateChoice PrepareTemplateFor(const std::string& key, const TemplateMeta& what, int timeout_ms,
                                  const std::function<TemplateVm(const std::string& work)>& plan,
                                  bool wait = true);

// How long a restore may take before the start boots cold instead:
// MSB_RESTORE_TIMEOUT_MS when it is a positive number of ms, else
// `fallback_ms` (the supervisor's and the builder VM's own limits).
int RestoreTimeoutMs(int fallback_ms);

// What a guest does first on every start, restored or cold (agentd/
// guest_init.h): 64 bytes of fresh host randomness (hex; "" when getrandom
// fails, which the caller decides about), the host's wall clock, `restored`.
agent::GuestStart FreshGuestStart(bool restored);

// Removes templates/<key> (a template that failed to restore).
void RemoveTemplate(const std::string& key);
// Removes the template `tried` restored from, under its key's lock, only if
// its stream is still the one tried (not one rebuilt since by another
// start) and nobody holds the lock; else leaves it.
void RemoveTemplateTried(const TemplateChoice& tried);

struct TemplateInfo {
  std::string key;
  std::string kind;       // kSandboxTemplate or kBuilderTemplate
  uint64_t size = 0;      // bytes of the stream
  std::string created;    // ISO 8601 UTC
  int cpus = 0;
  uint64_t memory_mib = 0;
  std::string accel;
  std::string kernel;     // path it was built with
  int disks = 0;
  bool network = false;
  bool valid = false;     // meta.json readable and of kTemplateFormat
  // A file its key took (kernel, initramfs, QEMU) is gone or changed since
  // (TemplateMeta::files): no start has this key any more. Never for a
  // template made before files were recorded.
  std::string stale;      // "" or which file, e.g. "its initramfs changed"
};
// Every templates/<key>, sorted by key.
std::vector<TemplateInfo> ListTemplates();

}  // namespace msb::vm
