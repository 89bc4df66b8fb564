// QemuCommandLine: the one builder of a QEMU `microvm` command line, for the
// sandbox (QemuArgv, vm/spec.h) and the builder VM (vm/builder_vm.h) alike.
// It only writes argv: it starts nothing, opens no file, checks no path, and
// does not wrap QEMU in anything (what runs the argv decides that).
//
// Shape: ForMicrovm() writes the machine (accel, CPU, memory, kernel,
// initramfs, kernel command line), then one Attach* call per device appends
// that device's options. Devices are attached in call order, and the order is
// the guest's view: microvm gives each virtio device the next virtio-mmio
// transport, so callers that must keep slots stable (a sandbox across
// restarts, a booted template) attach in a fixed order.
//
// Facts the flags rest on (QEMU 7.2, Debian 12):
// - Under TCG microvm's PIT and PIC stay on (their default): turning them off
//   wedges a guest without KVM. KVM uses the same line with `-accel kvm` and
//   `-cpu host`.
// - TCG's translation cache is held to kTcgCacheMiB (`-accel tcg,tb-size=`):
//   by default QEMU 7.2 lets it grow to 1 GiB of host memory per VM, which a
//   guest running much distinct code fills, and a sandbox's memory limit
//   (vm/cgroup.h) counts it.
// - microvm has 24 virtio-mmio transports (schema/model.h kVirtioTransports);
//   a 25th virtio device is refused when QEMU starts. transports() counts what
//   this line asks for; the sandbox's limit is checked when its Sandboxfile is
//   validated, not here.
// - vhost-user-fs needs guest RAM that its daemon can map (a memfd backend
//   with share=on, `-machine memory-backend=mem`) and modern virtio-mmio
//   (`-global virtio-mmio.force-legacy=false`); MicrovmConfig::vhost_user
//   asks for both. Other devices work on either transport.
// - The console is the 8250 UART (ttyS0); `panic=-1 reboot=t` with
//   `-no-reboot` turns a guest panic or reset into QEMU exiting, which is how
//   a guest powers off (agentd resets: microvm's power-off needs working ACPI,
//   agentd/guest_init.cc).
// - The agent's virtio-serial port is found by its name, agent::kPortName,
//   under /sys/class/virtio-ports/*/name in the guest (agentd/guest_init.h).
// - Disks are found by their virtio-blk serial (at most 20 bytes), never by
//   order or drive id. Read-write disks pass discard=unmap so the guest's
//   trims free blocks of the sparse host file.
// - A comma in a QEMU option value (-drive, -chardev, -object, -netdev,
//   -device) ends the value unless written twice: every caller-given string
//   put into one goes through QemuEscape. -kernel, -initrd and -append are
//   taken whole and are not escaped.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "vm/devices.h"

namespace msb::vm {

// MiB of host memory for TCG's translated code per VM (see above).
inline constexpr int kTcgCacheMiB = 128;

// `value` with every comma doubled, for a QEMU option value.
std::string QemuEscape(std::string_view value);

// The guest kernel's command line: the serial console, quiet, panic and reset
// end QEMU; then `extra` (space-separated arguments; may be empty).
std::string MicrovmKernelCmdline(std::string_view extra);

struct MicrovmConfig {
  std::string qemu;            // argv[0]
  bool kvm = false;            // else TCG; decided already (vm/accel.h)
  int cpus = 1;
  uint64_t memory_mib = 512;
  // Shared guest RAM and modern virtio-mmio: what AttachVhostUserFs needs.
  bool vhost_user = false;
  std::string kernel;
  std::string initramfs;       // empty: none
  std::string kernel_args;     // after MicrovmKernelCmdline's fixed part
};

// One command line being written. Not thread-safe; cheap to copy.
class QemuCommandLine {
 public:
  // The machine, without devices: QEMU gets no default devices, no user
  // configuration, no display and exits instead of rebooting.
  static QemuCommandLine ForMicrovm(const MicrovmConfig& config);

  // The serial console (ttyS0) written to a file, to a unix socket that QEMU
  // connects to (a sandbox's: vm/console_log.h bounds it), or to QEMU's stdout.
  void AttachSerialConsole(const std::string& log_path);
  void AttachSerialSocket(const std::string& socket);
  void AttachSerialStdio();
  // The QMP monitor on a unix socket that QEMU connects to.
  void AttachQmp(const std::string& socket);
  // A virtio-serial device with one port named agent::kPortName, whose
  // chardev connects to `socket`. One transport.
  void AttachAgentPort(const std::string& socket);
  // A raw disk on virtio-blk: drive `id` (unique on this line), readonly=on
  // when disk.read_only, else discard=unmap; the guest sees disk.serial.
  void AttachBlock(std::string_view id, const VmDisk& disk);
  // A virtio-fs device whose vhost-user back-end listens on `socket`; the
  // guest mounts it by `tag`. Needs MicrovmConfig::vhost_user (checked).
  void AttachVhostUserFs(std::string_view id, const std::string& socket, std::string_view tag);
  // virtio-net on a stream netdev that connects to the unix socket `socket`:
  // each frame goes as a 4-byte big-endian length and the frame.
  void AttachStreamNetwork(std::string_view id, const std::string& socket, std::string_view mac);
  // virtio-rng fed from the host's /dev/urandom.
  void AttachRng();

  // The virtio-mmio transports the devices so far take.
  int transports() const { return transports_; }
  const std::vector<std::string>& argv() const { return argv_; }
  std::vector<std::string> TakeArgv() && { return std::move(argv_); }

 private:
  QemuCommandLine() = default;
  void Add(std::initializer_list<std::string> args);

  std::vector<std::string> argv_;
  bool vhost_user_ = false;
  int transports_ = 0;
};

}  // namespace msb::vm
