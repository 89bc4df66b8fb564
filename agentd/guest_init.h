// What agentd does only as the guest's PID 1: the early mounts, finding the
// agent port and the disks by name, assembling the root (base ext4 read-only
// + writable upper + overlayfs), switching into it, and powering off. Not
// used in serve mode (tests), and nothing here talks to the host.
#pragma once

#include <string>

#include "agent/messages.h"
#include "common/result.h"

namespace msb::agent {

// Loads every kernel module file in dir in name order with finit_module(2)
// (a module already present is fine). The initramfs holds them only for a
// modular kernel (vm/initramfs.h: /lib/modules/msb, dependencies first); a
// missing dir means a kernel with the drivers built in. The error names the
// first module that does not load.
Status LoadModules(const std::string& dir);

// devtmpfs on /dev, devpts (ptmxmode=0666) on /dev/pts, tmpfs on /dev/shm,
// proc on /proc, sysfs on /sys. Already-mounted targets are fine.
Status MountEarly();

// A VM restored from a booted template (vm/template.h) resumes with the
// template's kernel state. These undo what that state must not decide:
// AddEntropy credits `hex` (host randomness) to the kernel's pool with
// RNDADDENTROPY and forces a reseed (RNDRESEEDCRNG), so the guest's random
// output (and /proc/sys/kernel/random/boot_id, made on first read) differs
// from every other VM of the template. SetClock sets CLOCK_REALTIME.
// ReprobeDisks unbinds every virtio-blk device from its driver and binds it
// again: the template's kernel probed placeholder disks, and a new probe
// reads the real ones' capacity and drops any page cache of the old ones.
Status AddEntropy(std::string_view hex);
Status SetClock(int64_t ns_since_epoch);
Status ReprobeDisks();

// "/dev/vportNpM" for the virtio-serial port whose name is `name`, looking in
// /sys/class/virtio-ports; retries for up to `wait_ms` while devices appear.
Result<std::string> FindPortDevice(const std::string& name, int wait_ms);

// "/dev/vdX" for the virtio-blk disk whose serial is `serial`
// (/sys/block/vd*/serial), never by probe order. With a prefix (a new root
// that /dev and /sys were moved into), both paths are looked up below it.
Result<std::string> FindDiskBySerial(const std::string& serial, int wait_ms,
                                     const std::string& prefix = "");

// Where the writable layer's file system is mounted (in the initramfs's
// tree, hidden once the root is switched: open it before, to freeze it).
inline constexpr const char* kUpperMount = "/run/msb/upper";

// Mounts the base read-only, each lower layer read-only (ext4, journal not
// replayed: /run/msb/layer<i>), and the upper (disk or tmpfs), and assembles
// the overlay at new_root with lowerdir = the layers' upper/ directories,
// newest first, then the base; moves /dev, /proc and /sys below it.
Status AssembleRoot(const RootConfig& root, const std::string& new_root);

// Makes new_root the root: chdir, mount --move new_root /, chroot ".". (An
// initramfs cannot pivot_root.)
Status SwitchRoot(const std::string& new_root);

// Makes / read-only (security.read_only_root): the root's file system and
// its mount both, once agentd has written what it writes there. Mounts
// below / (tmpfs, volumes, shares) keep their own flags.
Status MakeRootReadOnly();

// sync, unmount what can be unmounted, remount / read-only, then reset the
// VM (QEMU must run with -no-reboot, so that a reset ends it).
// Never returns.
[[noreturn]] void PowerOff();

// Brings up the loopback interface (127.0.0.1 and ::1 come with it), as a
// container runtime does: workloads and health checks talk to themselves.
Status LoopbackUp();

}  // namespace msb::agent
