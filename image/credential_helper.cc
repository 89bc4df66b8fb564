// Running docker-credential-NAME with bounded output and time; see
// credential_helper.h.
#include "image/credential_helper.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"

namespace msb::image {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct HelperRun {
  ExitStatus status;
  std::string out;  // stdout
  std::string err;  // stderr
};

std::string Program(const std::string& helper) { return "docker-credential-" + helper; }

// The first line of a helper's message, short and printable, for errors.
std::string Excerpt(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  std::string out;
  for (char c : line.substr(0, 200)) out.push_back(static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

Result<HelperRun> RunHelper(const std::string& helper, const std::string& verb, const std::string& registry,
                            const std::string& input, std::chrono::milliseconds timeout) {
  std::string program = Program(helper);
  if (helper.empty() || helper.find('/') != std::string::npos) {
    return Error(ErrorCode::kInvalidArgument, "docker's config names the credential helper \"" + helper.substr(0, 80) +
                                                  "\" for registry " + registry +
                                                  ", which is not a helper name; fix credsStore or credHelpers");
  }
  // stdin is an anonymous in-memory file holding the input: no pipe to
  // break (and no SIGPIPE) when a helper exits without reading it.
  UniqueFd in_fd(::memfd_create("msb-credential-helper-input", MFD_CLOEXEC));
  if (!in_fd) return Error::FromErrno("memfd_create");
  MSB_TRY_STATUS(WriteAll(in_fd.get(), input));
  if (::lseek(in_fd.get(), 0, SEEK_SET) != 0) return Error::FromErrno("lseek");
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return Error::FromErrno("pipe2");
  UniqueFd out_r(out[0]), out_w(out[1]);
  if (::pipe2(err, O_CLOEXEC) != 0) return Error::FromErrno("pipe2");
  UniqueFd err_r(err[0]), err_w(err[1]);
  SpawnOptions so;
  so.argv = {program, verb};  // found on PATH; nothing secret in argv or the environment
  so.stdin_fd = in_fd.get();
  so.stdout_fd = out_w.get();
  so.stderr_fd = err_w.get();
  auto child = ChildProcess::Spawn(so);
  if (!child.ok()) {
    if (child.error().sys_errno() == ENOENT) {
      return Error(ErrorCode::kUnavailable,
                   "docker's config names the credential helper " + program + " for registry " + registry +
                       ", but it is not on PATH; install it, or remove credsStore/credHelpers for " + registry +
                       " from docker's config.json");
    }
    return child.error().Wrap("credential helper for registry " + registry);
  }
  in_fd.Reset();
  out_w.Reset();
  err_w.Reset();
  HelperRun run;
  auto deadline = Clock::now() + timeout;
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      child->Kill(SIGKILL);
      child->Wait();
      return Error(ErrorCode::kTimeout, "credential helper " + program + " did not answer for registry " + registry +
                                            " within " + std::to_string(timeout.count() / 1000) +
                                            " s; check it with: echo " + HelperServerUrl(registry) + " | " + program +
                                            " get");
    }
    pollfd p[2] = {{out_open ? out_r.get() : -1, POLLIN, 0}, {err_open ? err_r.get() : -1, POLLIN, 0}};
    int n = ::poll(p, 2, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::FromErrno("waiting for " + program);
    for (int i = 0; i < 2; ++i) {
      if (p[i].fd < 0 || p[i].revents == 0) continue;
      char buf[4096];
      ssize_t r = ::read(p[i].fd, buf, sizeof buf);
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (r <= 0) {
        (i == 0 ? out_open : err_open) = false;
        continue;
      }
      std::string& dst = i == 0 ? run.out : run.err;
      dst.append(buf, static_cast<size_t>(r));
      if (dst.size() > kHelperOutputLimit) {
        child->Kill(SIGKILL);
        child->Wait();
        return Error(ErrorCode::kProtocol, "credential helper " + program + " wrote more than " +
                                               std::to_string(kHelperOutputLimit) + " bytes for registry " +
                                               registry + "; check the helper");
      }
    }
  }
  run.status = child->Wait();
  return run;
}

// secret: text never to repeat, should a broken helper echo it.
Error Failed(const std::string& helper, const std::string& verb, const std::string& registry, const HelperRun& run,
             const std::string& secret = "") {
  std::string msg = Excerpt(!run.err.empty() ? run.err : run.out);
  if (!secret.empty() && msg.find(secret) != std::string::npos) msg = "its message is withheld: it holds the secret";
  return Error(ErrorCode::kUnavailable, "credential helper " + Program(helper) + " failed to " + verb +
                                            " credentials for registry " + registry + " (" + run.status.ToString() +
                                            (msg.empty() ? "" : ": " + msg) +
                                            "); fix the helper, or remove credsStore/credHelpers for " + registry +
                                            " from docker's config.json");
}

}  // namespace

std::string HelperServerUrl(const std::string& registry) {
  if (registry == "docker.io" || registry == "index.docker.io" || registry == "registry-1.docker.io") {
    return "https://index.docker.io/v1/";
  }
  return registry;
}

Result<std::optional<Credentials>> HelperGet(const std::string& helper, const std::string& registry,
                                             std::chrono::milliseconds timeout) {
  MSB_TRY(HelperRun run, RunHelper(helper, "get", registry, HelperServerUrl(registry), timeout));
  if (run.status.ShellCode() != 0) {
    if (run.out.find("credentials not found") != std::string::npos ||
        run.err.find("credentials not found") != std::string::npos) {
      return std::optional<Credentials>();
    }
    return Failed(helper, "get", registry, run);
  }
  json j = json::parse(run.out, nullptr, false);
  auto field = [&j](const char* name) -> std::optional<std::string> {
    auto it = j.find(name);
    if (it == j.end() || !it->is_string()) return std::nullopt;
    return it->get<std::string>();
  };
  // Never quote the output here: it holds the secret.
  if (j.is_discarded() || !j.is_object() || !field("Username") || !field("Secret")) {
    return Error(ErrorCode::kProtocol, "credential helper " + Program(helper) + " answered for registry " + registry +
                                           " with something other than {\"Username\", \"Secret\"}; check the helper");
  }
  Credentials c{*field("Username"), *field("Secret")};
  if (c.username == "<token>") {
    return Error(ErrorCode::kInvalidArgument,
                 "credential helper " + Program(helper) + " holds an identity token for registry " + registry +
                     ", which msb cannot use; run msb login " + registry + " with a user name and password or token");
  }
  if (c.username.empty() && c.password.empty()) return std::optional<Credentials>();
  return std::optional<Credentials>(std::move(c));
}

Status HelperStore(const std::string& helper, const std::string& registry, const Credentials& creds,
                   std::chrono::milliseconds timeout) {
  json doc = {{"ServerURL", HelperServerUrl(registry)}, {"Username", creds.username}, {"Secret", creds.password}};
  MSB_TRY(HelperRun run, RunHelper(helper, "store", registry, doc.dump(), timeout));
  if (run.status.ShellCode() != 0) return Failed(helper, "store", registry, run, creds.password);
  return OkStatus();
}

Status HelperErase(const std::string& helper, const std::string& registry, std::chrono::milliseconds timeout) {
  MSB_TRY(HelperRun run, RunHelper(helper, "erase", registry, HelperServerUrl(registry), timeout));
  if (run.status.ShellCode() != 0) {
    if (run.out.find("credentials not found") != std::string::npos ||
        run.err.find("credentials not found") != std::string::npos) {
      return OkStatus();
    }
    return Failed(helper, "erase", registry, run);
  }
  return OkStatus();
}

}  // namespace msb::image
