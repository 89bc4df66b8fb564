// BuilderVm: a one-shot microVM that boots agentd with a list of disks and
// hands its caller the agent channel and the QEMU process; the image builder
// (image/flatten.cc) unpacks layers in one. Not a sandbox: no supervisor,
// network, shares, restarts or event loop; and no protocol beyond the
// opening hello and powering off: the caller speaks its requests over
// channel(). Its command line is vm/qemu_cmdline.h's, like the sandbox's.
//
// Builder templates: like a sandbox (vm/template.h), a builder VM is
// restored from a saved VM whose agentd said hello, when one fits, instead
// of booting its kernel. Its key covers the builder's command line with the
// disks at their slots; the disks are padded with empty read-only ones to
// 2, 3, 5, 9, 17 or 21 (PaddedDiskCount), so images of nearby layer counts
// share a template. The first boot of a layout builds it (a cold boot and
// a save, under templates/<key>.lock); a builder that finds the lock held
// boots cold rather than wait. The restore starts QEMU with `-incoming fd:0`
// and its monitor, and waits until QEMU has loaded the stream and runs the
// guest (query-status "inmigrate", then the RESUME event); a stream QEMU
// refuses (it exits, or the guest is not running after the load) removes
// the template, a load that timed out keeps it, and either boots cold,
// saying why in the log. The restored agentd already said hello, so
// ExchangeHello only answers it, and the caller's request carries Start()
// (restored: the guest probes its disks again, reseeds and sets its clock
// first). Builders restored from one template share its kernel's and
// agentd's address layout and boot-time random values (docs/design.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agent/channel.h"
#include "agent/messages.h"
#include "common/child.h"
#include "common/result.h"
#include "vm/devices.h"
#include "vm/guest_text.h"

namespace msb::vm {

// How to run a builder VM. kernel and initramfs are required (vm::FindKernel,
// vm::CachedInitramfs(agentd)); the rest has defaults.
struct BuilderVmOptions {
  std::string qemu;        // "" = vm::FindQemu()
  std::string kernel;
  std::string initramfs;   // holding agentd as /init
  std::string accel = "tcg";  // "tcg" or "kvm" (vm::ChooseAccel)
  // Guest RAM (at least 64 MiB is given); TCG and KVM allocate it as the
  // guest touches it.
  uint64_t memory_bytes = 512ull << 20;
  // vCPUs (1 to 8). More than one lets unpack mode decompress the next layer
  // on another vCPU while it applies one (agentd/layer_stream.h). Under TCG
  // each vCPU is a host thread and guest atomics can stop them all; on a
  // busy 2-core host two unpacked slower than one (bench/README.md "pull"),
  // hence 1.
  int cpus = 1;
  // Extra guest kernel arguments; "" = vm::TscKernelArg(), measured once
  // per process (TCG boots hang without a known TSC rate on a busy host).
  std::string kernel_args;
  // QEMU starts in its jail (vm/jail.h). Off only for a stand-in QEMU in
  // tests that needs the host around it; then there is no template either.
  bool jail = true;
  // "auto": restore a builder template when one fits, building it on first
  // use; "cold": always boot the kernel. MSB_BOOT=cold forces cold too.
  std::string boot_mode = "auto";
};

// One boot: its disks, and how its errors and scratch directory are named.
struct BuilderVmBoot {
  // Attached in order as virtio-blk; the guest finds them by serial.
  std::vector<VmDisk> disks;
  // Errors begin with it: "<name> did not start in time; its console: ...".
  std::string name = "the builder VM";
  // The scratch directory (agent.sock, console.log, qemu.log) is
  // <$TMPDIR>/<scratch_prefix>XXXXXX, or under /tmp when $TMPDIR is unset or
  // too long for a socket path.
  std::string scratch_prefix = "msb-builder-";
  // Until the VM's agent port is connected: bounds a template's build (at
  // most 60 s) and its restore (at most 30 s) as well as a cold start.
  agent::Clock::time_point deadline = agent::Clock::time_point::max();
};

// One running builder VM. Move-only; single-threaded. Destroying it closes the
// channel, kills and reaps QEMU if it still runs, and removes the scratch
// directory.
class BuilderVm {
 public:
  using Clock = agent::Clock;

  // Restores a builder template (building it first when missing and no
  // other start holds its key), or else boots cold: makes the scratch
  // directory, listens on its agent.sock, starts QEMU (killed by the kernel
  // if this thread dies) and waits until QEMU connects the agent port (and,
  // restored, runs the guest). On an error nothing is left: no process, no
  // directory.
  static Result<BuilderVm> Boot(const BuilderVmOptions& options, const BuilderVmBoot& boot);

  BuilderVm(BuilderVm&&) = default;
  BuilderVm& operator=(BuilderVm&&) = delete;
  ~BuilderVm() = default;

  agent::FrameChannel& channel() { return channel_; }
  ChildProcess& process() { return qemu_; }

  // Restored from a builder template (else booted cold); how, or why not.
  bool restored() const { return restored_; }
  const std::string& how() const { return how_; }

  // What the caller's request (unpack, export) carries for agentd to do
  // first: fresh host randomness, the clock, restored().
  Result<agent::GuestStart> Start() const;

  // kUnavailable "<name> <what>; its console:\n<tail>\nQEMU:\n<tail>".
  Error Fail(const std::string& what) const;

  // The next frame from agentd; a deadline passed or a closed channel is a
  // Fail() naming it.
  Result<agent::Frame> Receive(Clock::time_point deadline);

  // The opening of the protocol: agentd's hello, which must come first and
  // speak agent::kProtocolVersion, then the host's, naming `software`. A
  // restored agentd said its hello to the template's build: only the host's
  // is sent.
  Status ExchangeHello(const std::string& software, Clock::time_point deadline);

  // Asks agentd to power off (kShutdown), waits until the channel closes and
  // QEMU exits, and kills QEMU when `deadline` passes first; returns how QEMU
  // ended. Whatever the guest wrote to its disks before it was asked is on
  // them either way.
  ExitStatus PowerOff(Clock::time_point deadline);

 private:
  // The scratch directory, removed with everything in it.
  class ScratchDir {
   public:
    ScratchDir() = default;
    ScratchDir(ScratchDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
    ScratchDir& operator=(ScratchDir&&) = delete;
    ~ScratchDir();
    Status Create(const std::string& prefix);
    const std::string& path() const { return path_; }

   private:
    std::string path_;
  };

  BuilderVm(ScratchDir scratch, ChildProcess qemu, UniqueFd agent, std::string name)
      : scratch_(std::move(scratch)), qemu_(std::move(qemu)), channel_(std::move(agent)),
        name_(std::move(name)) {}
  static Error Fail(const std::string& name, const std::string& dir, const std::string& what);
  static Result<BuilderVm> BootCold(const BuilderVmOptions& options, const std::string& qemu,
                                    const BuilderVmBoot& boot);
  // *refused: QEMU, once started, exited, closed its monitor or did not run
  // the guest after the load (the template is bad); not on a timeout or a
  // host failure before QEMU ran.
  static Result<BuilderVm> Restore(const BuilderVmOptions& options, const std::string& qemu,
                                   const BuilderVmBoot& boot, const std::string& state_path, bool* refused);

  // Destroyed in reverse: the channel, then QEMU, then the directory.
  ScratchDir scratch_;
  ChildProcess qemu_;
  agent::FrameChannel channel_;
  std::string name_;
  bool restored_ = false;
  std::string how_;
};

// The builder's disks padded for a template: 2, 3, 5, 9, 17, then 21 (the
// most an unpack attaches); more than 21 are not padded.
size_t PaddedDiskCount(size_t disks);

}  // namespace msb::vm
