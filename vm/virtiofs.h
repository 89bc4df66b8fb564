// The filesystem broker: one virtiofsd (Debian's /usr/lib/qemu/virtiofsd,
// QEMU 7.2's C daemon) per shared host directory, owned by the supervisor,
// started before QEMU and gone with it. Not the guest side (agentd/mounts.h)
// and not the QEMU arguments (vm/devices.h).
//
// How a share is served:
//  - The supervisor creates the vhost-user listening socket
//    (ShareSocket(dir, i)) and hands it to virtiofsd as fd 3 (`--fd=3`), so
//    QEMU can connect the moment it starts: there is no waiting for a socket
//    file to appear. virtiofsd serves exactly one connection and exits when
//    QEMU closes it.
//  - virtiofsd runs as a child with PR_SET_PDEATHSIG(SIGKILL): a supervisor
//    that dies takes it along (its own sandbox child has a death signal too,
//    and loses QEMU's connection in any case).
//  - Each daemon starts in its jail (vm/jail.h, ConfineFileServer): a private
//    mount namespace where the share is bound at kFileServerSource —
//    read-only there when the share is, so a guest that remounts its view
//    read-write gets EROFS from the host kernel — the identity of the share's
//    owner, a user namespace mapping only its root to that owner, and a
//    seccomp filter against set-id bits and device nodes. Every capability
//    virtiofsd would keep is dropped (`-o modcaps=...`).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/child.h"
#include "common/result.h"
#include "vm/devices.h"

namespace msb::vm {

// $MSB_VIRTIOFSD, else /usr/lib/qemu/virtiofsd or /usr/libexec/virtiofsd; the
// error names the Debian package when none is there.
Result<std::string> FindVirtiofsd();

// virtiofsd's command line serving share_source (inside its jail:
// kFileServerSource), listening on fd `fd`.
std::vector<std::string> VirtiofsdArgv(const std::string& binary, const std::string& share_source, int fd);

// The daemons of one sandbox. Single-threaded (the supervisor's dispatcher
// thread, which must outlive them: the death signal follows that thread).
// Destruction kills and reaps every daemon.
class VirtiofsDaemons {
 public:
  // Starts one daemon per share, stopping any earlier ones first (a VM that is
  // booted again needs new daemons: each serves one connection). Daemon
  // output is appended to log_path. On error none is left running.
  Status Start(const std::vector<VmShare>& shares, const std::string& dir,
               const std::string& log_path);
  // Reaps daemons that exited; a sentence for each ("virtiofsd for /src
  // exited with code 1").
  std::vector<std::string> Reap();
  // SIGKILL and reap every daemon.
  void Stop();
  std::vector<pid_t> Pids() const;

 private:
  struct Daemon {
    VmShare share;
    ChildProcess child;
  };
  std::vector<Daemon> daemons_;
};

}  // namespace msb::vm
