// The jail every QEMU and virtiofsd starts in: what a VMM or file server
// compromised by its guest can still reach on the host. Not the guest's own
// view (agentd) and not the network policy (net/).
//
// QEMU (ConfineVmm):
//  - clone(2) into new mount, PID, IPC, UTS, network and cgroup namespaces
//    (and a user namespace when msb is not root); QEMU needs no network: its
//    netdev, agent port, QMP and vhost-user devices are unix sockets.
//  - Its root is a fresh tmpfs holding /usr and the /lib directories
//    read-only, /etc/ld.so.cache, /dev/{null,zero,random,urandom} (and
//    /dev/kvm when it uses KVM), its own /proc, and the VM's files bound at
//    their host paths: read-only ones (kernel, initramfs, the shared base
//    disk) read-only, the writable ones (its upper disk, volumes, sockets; a
//    builder VM's console log) writable. Nothing else: no other sandbox's disks, no
//    $MSB_HOME/state.db. The root is remounted read-only after pivot_root.
//  - It runs as an unprivileged uid and gid of its own (JailIdFor) when msb
//    is root, or as the invoking user inside its user namespace otherwise,
//    with an empty bounding set, no capabilities, no_new_privs, and QEMU's
//    own seccomp filter (-sandbox, vm/qemu_cmdline.cc).
//
// virtiofsd (ConfineFileServer):
//  - A private mount namespace in which the shared directory is bound at
//    kFileServerSource (read-only when the share is), then the identity of
//    the share's owner, then a user namespace mapping only its uid 0 to that
//    owner: what the guest creates belongs to the owner, and a chown to any
//    other id fails (unmapped). virtiofsd's own -o sandbox=namespace then
//    works inside that user namespace.
//  - A seccomp filter (FileServerFilter) refuses set-id modes and device
//    nodes and turns the set*id calls virtiofsd makes to adopt the guest's
//    ids into no-ops, so nothing it creates on the host carries the guest's
//    uid, a setuid or setgid bit, or a device number.
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "common/child.h"
#include "common/result.h"

namespace msb::vm {

struct VmSpec;
struct BuilderVmOptions;
struct BuilderVmBoot;

// One host file or socket the VMM needs, bound into its jail at the same path.
struct JailPath {
  std::string path;
  bool writable = false;
};

struct VmmJail {
  // An empty directory on the host (created when missing); the jail's root
  // tmpfs is mounted on it inside the VMM's mount namespace only.
  std::string root;
  std::vector<JailPath> paths;
  bool kvm = false;  // binds /dev/kvm
};

// The uid and gid of the jail rooted at `root` when msb runs as root: one of
// 65536 ids from 0x6d730000 ("ms"), by a hash of the path, so a sandbox keeps
// its id across restarts and two sandboxes rarely share one.
uid_t JailIdFor(const std::string& root);

// What a sandbox's QEMU needs (vm/spec.h): kernel, initramfs and base disk
// read-only; upper disk, volumes (read-only ones read-only) and every socket
// it connects to (the console's among them: the supervisor writes
// console.log) writable. The root is <dir>/jail.
VmmJail SandboxJail(const VmSpec& spec);
// The same for a builder VM whose scratch directory is `dir`; with `qmp`,
// its monitor socket <dir>/qmp.sock too (a template's build and restore).
VmmJail BuilderJail(const BuilderVmOptions& options, const BuilderVmBoot& boot,
                    const std::string& dir, bool qmp = false);

// Prepares the host side (the root directory, ownership of the writable
// paths, read access to the read-only ones) and sets opts->clone_flags and
// opts->before_exec so that ChildProcess::Spawn(*opts) starts the program in
// the jail. Any before_exec already set runs first. The jail's plan must
// outlive the Spawn call; it is owned by opts->before_exec.
Status ConfineVmm(const VmmJail& jail, SpawnOptions* opts);

// Where virtiofsd finds the shared directory inside its mount namespace.
inline constexpr const char* kFileServerSource = "/mnt/share";

// Sets opts->before_exec (after any already set) so that virtiofsd runs with
// `source` at kFileServerSource (read-only when asked) as the owner of
// `source`, in a user namespace, under FileServerFilter. Raises the soft
// descriptor limit to the hard one (virtiofsd keeps a descriptor per inode the
// guest looks up; pass it --rlimit-nofile=0).
Status ConfineFileServer(const std::string& source, bool read_only, SpawnOptions* opts);

// The file server's seccomp program (x86-64): EPERM for chmod, fchmod,
// fchmodat, fchmodat2, creat, open and openat (when creating) with a setuid
// or setgid bit, for mknod and mknodat of devices or with those bits; ENOSYS
// for openat2 (its mode is out of a filter's reach; callers fall back to
// openat); success without effect for setuid, setgid, setreuid, setregid,
// setresuid, setresgid, setfsuid, setfsgid and setgroups; EPERM for every
// other architecture or ABI (i386, x32). Everything else is allowed.
std::vector<sock_filter> FileServerFilter();

}  // namespace msb::vm
