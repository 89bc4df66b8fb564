// virtiofsd children of the supervisor (virtiofs.h): the listening socket,
// the command line, and reaping. Not the jail each one starts in (vm/jail.cc).
#include "vm/virtiofs.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "common/fd.h"
#include "common/log.h"
#include "common/unix_socket.h"
#include "vm/jail.h"

namespace msb::vm {
namespace {

// The fd number virtiofsd finds its listening socket on.
constexpr int kSocketFd = 3;

// Escapes a value inside virtiofsd's comma-separated -o list (libfuse's
// fuse_opt takes a backslash before a character literally).
std::string FuseOptEscape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == ',' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

Result<std::string> FindVirtiofsd() {
  if (const char* v = std::getenv("MSB_VIRTIOFSD"); v != nullptr && *v != '\0') {
    if (::access(v, X_OK) != 0)
      return Error(ErrorCode::kUnavailable,
                   std::string("MSB_VIRTIOFSD points at ") + v + ", which is not an executable");
    return std::string(v);
  }
  for (const char* cand : {"/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd"}) {
    if (::access(cand, X_OK) == 0) return std::string(cand);
  }
  return Error(ErrorCode::kUnavailable,
               "virtiofsd (needed to share host directories) was not found at "
               "/usr/lib/qemu/virtiofsd; install the Debian package qemu-system-common, "
               "or set MSB_VIRTIOFSD");
}

std::vector<std::string> VirtiofsdArgv(const std::string& binary, const std::string& share_source, int fd) {
  return {binary,
          "--fd=" + std::to_string(fd),
          "-o", "source=" + FuseOptEscape(share_source),
          "-o", "cache=auto",
          "-o", "sandbox=namespace",
          // Inside its user namespace it is root; none of these may act
          // on the share's files beyond what their owner may do.
          "-o", "modcaps=-chown:-dac_override:-fowner:-fsetid:-setgid:-setuid:-mknod:-setfcap",
          // The jail raised the descriptor limit as far as it may go.
          "--rlimit-nofile=0",
          "-o", "log_level=warn"};
}

Status VirtiofsDaemons::Start(const std::vector<VmShare>& shares, const std::string& dir,
                              const std::string& log_path) {
  Stop();
  if (shares.empty()) return OkStatus();
  MSB_TRY(std::string binary, FindVirtiofsd());
  UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!log) return Error::FromErrno("cannot open " + log_path);
  for (size_t i = 0; i < shares.size(); ++i) {
    const VmShare& share = shares[i];
    auto fail = [&](const Error& e) {
      Stop();
      return e.Wrap("sharing " + share.source + (share.read_only ? " read-only" : ""));
    };
    struct stat st;
    if (::stat(share.source.c_str(), &st) != 0) return fail(Error::FromErrno(share.source));
    if (!S_ISDIR(st.st_mode))
      return fail(Error(ErrorCode::kInvalidArgument, share.source + " is not a directory"));
    // Blocking: virtiofsd accepts on it itself.
    auto listen = ListenUnix(ShareSocket(dir, i), false, 1);
    if (!listen.ok()) return fail(listen.error());
    const int listen_fd = listen->get();
    SpawnOptions o;
    o.argv = VirtiofsdArgv(binary, kFileServerSource, kSocketFd);
    o.stdout_fd = log.get();
    o.stderr_fd = log.get();
    o.parent_death_signal = SIGKILL;
    o.before_exec = [listen_fd]() -> int {
      if (listen_fd == kSocketFd) {
        if (::fcntl(kSocketFd, F_SETFD, 0) != 0) return errno;
      } else if (::dup2(listen_fd, kSocketFd) < 0) {
        return errno;
      }
      return 0;
    };
    if (auto st = ConfineFileServer(share.source, share.read_only, &o); !st.ok()) return fail(st.error());
    auto child = ChildProcess::Spawn(o);
    if (!child.ok()) return fail(child.error().Wrap("starting virtiofsd (details in " + log_path + ")"));
    MSB_LOG(kInfo, "virtiofs") << "virtiofsd pid " << child->pid() << " shares " << share.source
                               << (share.read_only ? " read-only" : "") << " as " << share.tag;
    daemons_.push_back(Daemon{share, std::move(*child)});
  }
  return OkStatus();
}

std::vector<std::string> VirtiofsDaemons::Reap() {
  std::vector<std::string> out;
  for (Daemon& d : daemons_) {
    if (!d.child.running()) continue;
    if (auto st = d.child.TryWait()) out.push_back("virtiofsd for " + d.share.source + " " + st->ToString());
  }
  return out;
}

void VirtiofsDaemons::Stop() {
  for (Daemon& d : daemons_) {
    d.child.Kill(SIGKILL);
    d.child.Wait();
  }
  daemons_.clear();
}

std::vector<pid_t> VirtiofsDaemons::Pids() const {
  std::vector<pid_t> out;
  for (const Daemon& d : daemons_) {
    if (d.child.running()) out.push_back(d.child.pid());
  }
  return out;
}

}  // namespace msb::vm
