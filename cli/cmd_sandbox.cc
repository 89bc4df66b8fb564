// msb run / exec / shell / cp / stop / rm: commands on one sandbox (logs and
// ps, registered here in their place, are cmd_logs.cc and cmd_ps.cc).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <random>
#include <tuple>

#include "common/io.h"
#include "cli/cli.h"
#include "orchestrator/control_client.h"
#include "orchestrator/host_tar.h"
#include "orchestrator/images.h"
#include "orchestrator/launch.h"
#include "orchestrator/snapshot.h"
#include "orchestrator/store.h"
#include "schema/image_ref.h"
#include "schema/sandboxfile.h"
#include "schema/network_rule.h"
#include "schema/security.h"
#include "schema/values.h"
#include "secrets/placeholder.h"

namespace msb::cli {
namespace {

using orchestrator::ControlClient;
using orchestrator::SandboxRecord;
using orchestrator::Store;

Result<Store> OpenStore() { return Store::Open(Store::DefaultPath()); }

// `msb run` and `msb exec` exit as docker's do: the command's own status,
// else 125 for a failure of msb's (bad flags, an image that will not pull, a
// VM that will not boot), 126 for a command that cannot be run and 127 for
// one that is not there (agent::ShellExitCode).
constexpr int kMsbFailed = 125;

int RunFail(const std::string& message) {
  Fail(message);
  return kMsbFailed;
}

// The command after SANDBOX or IMAGE, as docker takes it: msb's own options
// end at the first word after it, `--` or not (`msb exec web ls -l`). CLI11
// stops parsing at the first positional no option takes (prefix_command);
// `command` is such an option, never filled (its check refuses every word),
// so that a `--` after SANDBOX stays with this subcommand. The words come
// back from TrailingCommand.
void AddTrailingCommand(CLI::App* cmd, const std::string& help) {
  cmd->prefix_command();
  cmd->validate_positionals();
  cmd->add_option("command", help)
      ->check(CLI::Validator([](std::string&) { return std::string("taken from the rest of the line"); }, ""));
}

Result<std::vector<std::string>> TrailingCommand(const CLI::App* cmd) {
  std::vector<std::string> rest = cmd->remaining();
  if (!rest.empty() && rest.front() == "--") {
    rest.erase(rest.begin());
  } else if (!rest.empty() && rest.front().size() > 1 && rest.front()[0] == '-') {
    // An option CLI11 did not know, before any command word.
    return Error(ErrorCode::kInvalidArgument,
                 "msb " + cmd->get_name() + ": unknown option " + rest.front() + " (see msb " + cmd->get_name() +
                     " --help; a command that starts with - goes after --)");
  }
  return rest;
}

struct RunArgs {
  std::string image;
  int cpus = 1;
  std::string memory = "512M";
  std::string disk = "2G";
  std::vector<std::string> env;
  std::string workdir;
  std::string user;
  std::string name;
  bool interactive = false;
  bool tty = false;
  bool keep = false;
  bool remove = false;  // --rm: the default for a foreground run
  bool detach = false;  // -d: the command is the workload, left running
  std::vector<std::string> volumes;  // -v HOST:GUEST[:ro], -v VOLUME:GUEST[:ro]
  std::vector<std::string> command;
  bool quiet = false;
  RegistryFlags registry;
  // The network: a profile ("off": no network device), rules, published ports.
  std::string net_policy = "public";
  std::vector<std::string> net_rules;
  std::vector<int> net_host_ports;
  std::vector<std::string> net_allow;
  std::vector<std::string> secrets;  // --secret VAR=SOURCE:FROM@hosts
  std::string tls_ca;                // --net-tls-ca FILE
  std::vector<std::string> publish;
  int net_mtu = 0;
  // Hardening, in docker's spellings (schema/security.h).
  bool read_only = false;
  std::vector<std::string> security_opts;  // no-new-privileges[:true|:false]
  std::vector<std::string> cap_drop, cap_add;
};

// The flags' `security:`: --read-only, --security-opt no-new-privileges,
// --cap-drop and --cap-add as the Sandboxfile's fields.
Status RunSecurity(const RunArgs& a, schema::Sandbox& sb) {
  sb.security.read_only_root = a.read_only;
  for (const std::string& opt : a.security_opts) {
    if (opt == "no-new-privileges" || opt == "no-new-privileges:true" || opt == "no-new-privileges=true") {
      sb.security.no_new_privileges = true;
    } else if (opt == "no-new-privileges:false" || opt == "no-new-privileges=false") {
      sb.security.no_new_privileges = false;
    } else {
      return Error(ErrorCode::kInvalidArgument,
                   "--security-opt " + opt + ": not an option msb knows; it takes only no-new-privileges, "
                   "no-new-privileges:true or no-new-privileges:false");
    }
  }
  for (auto [flag, names, list] : {std::tuple{"--cap-drop", &a.cap_drop, &sb.security.cap_drop},
                                   std::tuple{"--cap-add", &a.cap_add, &sb.security.cap_add}}) {
    for (const std::string& name : *names) {
      auto cap = schema::CanonicalCapability(name);
      if (!cap.ok()) return Error(ErrorCode::kInvalidArgument, std::string(flag) + " " + cap.error().message());
      schema::AddCapability(list, *cap);
    }
  }
  return OkStatus();
}

std::optional<schema::NetworkPolicy> NetworkPolicyNamed(const std::string& name) {
  for (auto p : {schema::NetworkPolicy::kNone, schema::NetworkPolicy::kGroup,
                 schema::NetworkPolicy::kPublic, schema::NetworkPolicy::kAny}) {
    if (name == schema::ToString(p)) return p;
  }
  return std::nullopt;
}

// The flags' network as a declared sandbox's: --network (but "off", which is
// no device at all), rules, the --net-allow and --net-host-port shorthands
// (a CIDR allowed as it is, a gateway port reaching the host), published ports.
Status RunNetwork(const RunArgs& a, schema::Sandbox& sb) {
  if (auto policy = NetworkPolicyNamed(a.net_policy)) sb.network.policy = *policy;
  auto add_rule = [&](const std::string& flag, const std::string& value,
                      const std::string& text) -> Status {
    auto rule = schema::ParseNetworkRule(text);
    if (!rule.ok()) {
      return Error(ErrorCode::kInvalidArgument, flag + " " + value + ": " + rule.error().message());
    }
    sb.network.rules.push_back(*rule);
    return OkStatus();
  };
  for (const auto& text : a.net_rules) MSB_TRY_STATUS(add_rule("--net-rule", text, text));
  for (const auto& cidr : a.net_allow) {
    std::string text = "allow@" + (cidr.find(':') != std::string::npos ? "[" + cidr + "]" : cidr);
    MSB_TRY_STATUS(add_rule("--net-allow", cidr, text));
  }
  for (int port : a.net_host_ports) {
    std::string text = "allow:egress@host:tcp:" + std::to_string(port);
    MSB_TRY_STATUS(add_rule("--net-host-port", std::to_string(port), text));
  }
  for (const auto& text : a.publish) {
    auto pm = schema::ParsePortMapping(text);
    if (!pm.ok()) {
      return Error(ErrorCode::kInvalidArgument, "--publish " + text + ": " + pm.error().message());
    }
    sb.ports.push_back(*pm);
  }
  return OkStatus();
}

// -v as a declared sandbox's volumes: a host directory (absolute, or relative
// to the current one) or a named volume of the run project, at an absolute
// guest path, each guest path once.
Status RunVolumes(const RunArgs& a, const std::string& cwd, const std::string& home, schema::Project& project,
                  schema::Sandbox& sb) {
  for (const std::string& text : a.volumes) {
    auto spec = schema::ParseVolumeSpec(text);
    if (!spec.ok()) return Error(ErrorCode::kInvalidArgument, "-v " + text + ": " + spec.error().message());
    schema::Mount m;
    m.kind = spec->kind;
    m.target = spec->target;
    m.read_only = spec->read_only;
    if (spec->kind == schema::Mount::Kind::kBind) {
      auto abs = schema::ResolveHostPath(spec->source, cwd, home);
      if (!abs.ok()) return Error(ErrorCode::kInvalidArgument, "-v " + text + ": " + abs.error().message());
      struct stat st;
      if (::stat(abs->c_str(), &st) != 0) {
        return Error(ErrorCode::kNotFound, "-v " + text + ": host path " + *abs +
                                               " does not exist; create the directory first (only existing "
                                               "directories are shared)");
      }
      if (!S_ISDIR(st.st_mode)) {
        return Error(ErrorCode::kInvalidArgument,
                     "-v " + text + ": host path " + *abs + " is not a directory; only directories can be shared");
      }
      m.source = *abs;
    } else {
      m.source = spec->source;
      project.volumes.emplace(m.source, schema::Volume{});
    }
    for (const schema::Mount& other : sb.volumes) {
      if (other.target == m.target) {
        return Error(ErrorCode::kInvalidArgument, "-v " + text + ": " + m.target + " is already mounted by -v " +
                                                      other.source + ":" + other.target);
      }
    }
    sb.volumes.push_back(std::move(m));
  }
  return OkStatus();
}

// `msb run` as a declared sandbox of the run project: the same
// MakeLaunchRequest as `msb up`, booting no workload (the command is exec'd
// once the guest is ready, for its stdin, terminal and exit code).
int Run(const RunArgs& a) {
  std::string home = std::getenv("HOME") ? std::getenv("HOME") : "";
  std::string cwd = std::filesystem::current_path().string();
  auto image = schema::ParseImage(a.image, cwd, home);
  if (!image.ok()) return RunFail("image " + a.image + ": " + image.error().message());
  if (image->kind == schema::Image::Kind::kLocalDir) {
    struct stat st;
    if (::stat(image->path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return RunFail("image " + a.image + ": " + image->path + " is not a directory");
    }
  }
  auto mem = schema::ParseSize(a.memory, 1ull << 20);
  if (!mem.ok()) return RunFail("--memory " + a.memory + ": " + mem.error().message());
  auto disk = schema::ParseSize(a.disk, 1ull << 20);
  if (!disk.ok()) return RunFail("--disk " + a.disk + ": " + disk.error().message());
  if (a.cpus < 1 || a.cpus > 64) return RunFail("--cpus must be between 1 and 64");
  for (const auto& e : a.env) {
    if (e.find('=') == std::string::npos || e.front() == '=') {
      return RunFail("-e " + e + ": expected KEY=VALUE");
    }
  }
  schema::Project project;
  project.name = Store::kRunProject;
  schema::Sandbox sb;
  sb.image = *image;
  sb.cpus = a.cpus;
  sb.memory = *mem;
  sb.disk = *disk;
  for (const auto& e : a.env) {
    auto eq = e.find('=');
    sb.envs[e.substr(0, eq)] = e.substr(eq + 1);
  }
  sb.workdir = a.workdir;
  sb.user = a.user;
  sb.command = a.command;
  if (a.detach && (a.interactive || a.tty)) {
    return RunFail("-d runs the command in the background: -i and -t need it in the foreground");
  }
  if (a.detach && a.remove) {
    return RunFail("-d keeps the sandbox until msb rm NAME; --rm applies to a foreground run only");
  }
  if (a.keep && a.remove) return RunFail("--keep and --rm contradict each other; give one");
  if (!a.name.empty() && !schema::IsValidName(a.name)) {
    return RunFail("--name " + a.name + ": use " + schema::kNameRule);
  }
  if (auto st = RunVolumes(a, cwd, home, project, sb); !st.ok()) return RunFail(st.error().message());
  if (auto st = RunNetwork(a, sb); !st.ok()) return RunFail(st.error().message());
  if (auto st = RunSecurity(a, sb); !st.ok()) return RunFail(st.error().message());
  if (!a.tls_ca.empty()) {
    auto abs = schema::ResolveHostPath(a.tls_ca, cwd, home);
    if (!abs.ok()) return RunFail("--net-tls-ca " + a.tls_ca + ": " + abs.error().message());
    sb.network.tls_ca = *abs;
  }
  for (const auto& text : a.secrets) {
    auto secret = schema::ParseSecretFlag(text, sb.network, cwd, home);
    if (!secret.ok()) return RunFail(secret.error().message());
    if (a.net_policy == "off") return RunFail("--secret " + text + ": the sandbox has no network (--network off)");
    sb.secrets[secret->first] = secret->second;
  }
  orchestrator::LaunchOptions lo;
  // Detached, the command is the workload (its output is msb logs); in the
  // foreground it is exec'd for its stdin, terminal and exit status.
  lo.boot_workload = a.detach;
  lo.network_device = a.net_policy != "off";
  lo.network_group = false;
  lo.mtu = a.net_mtu;
  if (const char* t = std::getenv("MSB_BOOT_TIMEOUT_MS"); t != nullptr && std::atoi(t) > 0) {
    lo.boot_timeout_ms = std::atoi(t);
  }

  auto store = OpenStore();
  if (!store.ok()) return RunFail(store.error().message());
  orchestrator::ImageOptions io;
  io.insecure_registries = a.registry.insecure;
  io.registry_cas = a.registry.cas;
  io.quiet = a.quiet;
  // A snapshot is held against `msb snapshot rm` until the record of the
  // sandbox booting it exists (orchestrator/snapshot.h ResolveRunImage).
  auto resolved = orchestrator::ResolveRunImage(*store, *image, io);
  if (!resolved.ok()) return RunFail("image " + a.image + ": " + resolved.error().message());
  if (a.name.empty()) {
    std::random_device rd;
    char buf[16];
    std::snprintf(buf, sizeof buf, "run-%06x", rd() & 0xffffff);
    sb.name = buf;
  } else {
    sb.name = a.name;
  }
  auto req = orchestrator::MakeLaunchRequest(project, sb, resolved->image, lo);
  if (!req.ok()) return RunFail(req.error().message());
  if (!req->secrets.empty()) {
    // Every source readable before anything is made.
    auto values = orchestrator::ReadSecretValues(req->name, req->secrets);
    if (!values.ok()) return RunFail(values.error().message());
    secrets::WipeString(&*values);
  }
  // entrypoint + (the command, else the image's cmd), as `up` would boot it.
  const std::vector<std::string>& argv = a.detach ? req->boot.command : req->exec_command;
  if (argv.empty()) {
    return RunFail("no command given and image " + a.image +
                   " has none: msb run IMAGE COMMAND [ARGS...]");
  }
  if (!a.name.empty()) {
    auto existing = store->GetSandbox(req->project, req->name);
    if (existing.ok() && *existing) return RunFail("a sandbox named " + a.name + " already exists");
  }
  // Launch in its two halves: the hold ends once the record exists.
  auto rec = orchestrator::Prepare(*store, *req);
  resolved->hold.reset();
  if (rec.ok()) rec = orchestrator::StartSupervisor(*store, *rec);
  if (!rec.ok()) {
    // A temporary sandbox that never started leaves nothing behind.
    if (auto failed = store->GetSandbox(req->project, req->name); failed.ok() && *failed) {
      (void)orchestrator::Remove(*store, **failed);
    }
    return RunFail(rec.error().message());
  }
  if (a.detach) {
    std::printf("%s\n", rec->name.c_str());
    // The supervisor runs on in its own session; this msb does not wait for it.
    return 0;
  }

  auto client = ControlClient::Connect(rec->control_socket);
  int code;
  if (!client.ok()) {
    code = RunFail(client.error().message());
  } else {
    agent::ExecRequest ex;
    ex.argv = argv;
    ex.env = a.env;
    ex.cwd = req->boot.workdir;
    ex.user = req->boot.user;
    orchestrator::ExecIo io;
    io.forward_stdin = a.interactive;
    io.tty = a.tty;
    auto r = client->Exec(ex, io);
    code = r.ok() ? *r : RunFail(r.error().message());
  }
  if (!a.keep) {
    auto st = orchestrator::Remove(*store, *rec);
    if (!st.ok()) Fail("removing " + rec->name + ": " + st.error().message());
  }
  // The supervisor was our child: reap it.
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
  return code;
}

// The sandbox `ref` (NAME or PROJECT/NAME) names for `command`, looked up in
// the current project first (-p, $MSB_PROJECT_NAME, ./Sandboxfile).
Result<orchestrator::SandboxRecord> Find(Store& store, const std::string& ref,
                                         const std::string& project, const std::string& command) {
  return orchestrator::FindSandbox(store, ref, CurrentProject(project), command);
}

// What `msb exec --script` and `msb shell` run, from the sandbox's recorded
// canonical spec (what it was started with, not the file as it is now):
// script `script` with cmd as its arguments; with no script, the shell when
// shell is set, else cmd.
Result<std::vector<std::string>> ExecArgv(const SandboxRecord& rec, const std::string& script, bool shell,
                                          const std::vector<std::string>& cmd) {
  auto spec = nlohmann::json::parse(rec.spec_json, nullptr, /*allow_exceptions=*/false);
  const nlohmann::json* canonical = spec.is_object() && spec.contains("canonical") ? &spec["canonical"] : nullptr;
  std::string sh = schema::kDefaultShell;
  if (canonical && canonical->contains("shell") && (*canonical)["shell"].is_string()) {
    sh = (*canonical)["shell"].get<std::string>();
  }
  if (script.empty()) return shell ? std::vector<std::string>{sh} : cmd;
  std::string known;
  if (canonical && canonical->contains("scripts") && (*canonical)["scripts"].is_object()) {
    const nlohmann::json& scripts = (*canonical)["scripts"];
    auto it = scripts.find(script);
    if (it != scripts.end() && it->is_array()) {
      return schema::ScriptCommand(it->get<std::vector<std::string>>(), sh, script, cmd);
    }
    for (const auto& [name, _] : scripts.items()) known += (known.empty() ? "" : ", ") + name;
  }
  return Error(ErrorCode::kNotFound, "sandbox " + rec.name + " has no script \"" + script + "\" (" +
                                         (known.empty() ? "it has none" : "its scripts: " + known) +
                                         "; scripts: in the Sandboxfile, applied by msb up)");
}

// `fail_code` is what msb's own failures exit with: 125 for exec (docker's),
// 1 for shell.
int Exec(const std::string& name, const std::string& project, const std::vector<std::string>& cmd,
         bool interactive, bool tty, const std::vector<std::string>& env, const std::string& workdir,
         const std::string& user, const std::string& command, int fail_code, const std::string& script = "") {
  auto fail = [fail_code](const std::string& message) {
    Fail(message);
    return fail_code;
  };
  auto store = OpenStore();
  if (!store.ok()) return fail(store.error().message());
  auto rec = Find(*store, name, project, command);
  if (!rec.ok()) return fail(rec.error().message());
  if (rec->status != orchestrator::SandboxStatus::kRunning) {
    return fail("sandbox " + name + " is " + orchestrator::ToString(rec->status) +
                "; start it with: msb start " + name);
  }
  auto argv = ExecArgv(*rec, script, command == "shell", cmd);
  if (!argv.ok()) return fail(argv.error().message());
  auto client = ControlClient::Connect(rec->control_socket);
  if (!client.ok()) return fail(client.error().message());
  agent::ExecRequest ex;
  ex.argv = *argv;
  ex.env = env;
  ex.cwd = workdir;
  ex.user = user;
  orchestrator::ExecIo io;
  io.forward_stdin = interactive;
  io.tty = tty;
  auto r = client->Exec(ex, io);
  if (!r.ok()) return fail(r.error().message());
  return *r;
}

// "box:/path" -> {"box", "/path"}; "project/box:/path" -> {"project/box",
// "/path"} when both are valid names. Other host paths have no colon before
// a slash.
std::optional<std::pair<std::string, std::string>> SplitSandboxPath(const std::string& s) {
  auto colon = s.find(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  auto slash = s.find('/');
  if (slash != std::string::npos && slash < colon) {
    bool project_ref = schema::IsValidName(s.substr(0, slash)) &&
                       schema::IsValidName(s.substr(slash + 1, colon - slash - 1)) &&
                       s.compare(colon + 1, 1, "/") == 0;
    if (!project_ref) return std::nullopt;
  }
  return std::make_pair(s.substr(0, colon), s.substr(colon + 1));
}

std::string BaseName(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  auto s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

std::string DirName(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  auto s = p.rfind('/');
  if (s == std::string::npos) return ".";
  if (s == 0) return "/";
  return p.substr(0, s);
}

// Tar headers allowed around --max-size of contents in the stream.
constexpr uint64_t kCopyHeaderSlack = 16ull << 20;

int Copy(const std::string& src, const std::string& dst, const std::string& project, uint64_t max_bytes) {
  auto s = SplitSandboxPath(src);
  auto d = SplitSandboxPath(dst);
  if ((s && d) || (!s && !d)) {
    return Fail("msb cp copies between the host and a sandbox: one side must be SANDBOX:/path");
  }
  auto store = OpenStore();
  if (!store.ok()) return Fail(store.error().message());
  auto rec = Find(*store, s ? s->first : d->first, project, "cp");
  if (!rec.ok()) return Fail(rec.error().message());
  auto client = ControlClient::Connect(rec->control_socket);
  if (!client.ok()) return Fail(client.error().message());
  if (d) {  // host -> sandbox
    const std::string& guest = d->second;
    if (guest.empty() || guest[0] != '/') return Fail("the path in the sandbox must be absolute");
    // Into an existing directory keeps the name, as cp does; otherwise rename.
    int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    orchestrator::ExecIo io{false, false, devnull, devnull, devnull};
    agent::ExecRequest test_dir;
    test_dir.argv = {"test", "-d", guest};
    auto is_dir = client->Exec(test_dir, io);
    ::close(devnull);
    bool into = is_dir.ok() && *is_dir == 0;
    std::string target_dir = into ? guest : DirName(guest);
    std::string top = into ? BaseName(src) : BaseName(guest);
    auto st = client->CopyIn(target_dir, [&](const ControlClient::Sink& sink) {
      return orchestrator::PackHostPath(src, top, sink);
    });
    if (!st.ok()) return Fail("copying " + src + " to " + dst + ": " + st.error().message());
    return 0;
  }
  // sandbox -> host: spool the stream, then unpack it with the secure flags.
  const std::string& guest = s->second;
  struct stat st;
  bool into = ::stat(dst.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  std::string dest_dir = into ? dst : DirName(dst);
  std::string top = into ? BaseName(guest) : BaseName(dst);
  // The stream goes to a private, unnamed spool, bounded while it arrives:
  // the contents by max_bytes, the tar headers around them by kCopyHeaderSlack.
  auto spool = orchestrator::OpenSpool(dest_dir);
  if (!spool.ok()) return Fail(spool.error().message());
  const uint64_t stream_max = max_bytes + kCopyHeaderSlack;
  uint64_t spooled = 0;
  auto res = client->CopyOut(guest, [&](std::string_view chunk) -> Status {
    spooled += chunk.size();
    if (spooled > stream_max) {
      return Error(ErrorCode::kInvalidArgument, "the sandbox sent more than " + std::to_string(stream_max) +
                                                    " bytes; raise --max-size to copy more");
    }
    return WriteAll(spool->get(), chunk);
  });
  if (res.ok()) res = orchestrator::UnpackGuestTar(spool->get(), dest_dir, BaseName(guest), top, max_bytes, UserUmask());
  if (!res.ok()) return Fail("copying " + src + " to " + dst + ": " + res.error().message());
  return 0;
}

}  // namespace

int UsageExitCode(const CLI::App& app) {
  for (const char* name : {"run", "exec"}) {
    if (app.got_subcommand(name)) return kMsbFailed;
  }
  return 2;
}

void RegisterSandboxCommands(CLI::App& app) {
  {
    auto a = std::make_shared<RunArgs>();
    auto* cmd = app.add_subcommand("run", "Run a command in a new temporary sandbox");
    cmd->add_option("image", a->image,
                    "image: a registry reference, ./dir, or oci-layout:PATH[:tag]")->required();
    cmd->add_flag("-q,--quiet", a->quiet, "no pull progress");
    AddRegistryFlags(cmd, &a->registry);
    cmd->add_option("--cpus", a->cpus, "virtual CPUs");
    cmd->add_option("--memory,-m", a->memory, "memory, e.g. 512M or 1G");
    cmd->add_option("--disk", a->disk, "size of the writable layer");
    cmd->add_option("-e,--env", a->env, "environment variable KEY=VALUE (repeatable)")->allow_extra_args(false);
    cmd->add_option("-w,--workdir", a->workdir, "working directory in the guest");
    cmd->add_option("-u,--user", a->user, "user in the guest (uid, uid:gid or name)");
    cmd->add_option("--name", a->name, "name of the sandbox");
    cmd->add_flag("-i,--interactive", a->interactive, "forward standard input");
    cmd->add_flag("-t,--tty", a->tty, "allocate a terminal");
    cmd->add_flag("--keep", a->keep, "keep the sandbox running after the command (remove it with msb rm NAME)");
    cmd->add_flag("--rm", a->remove, "remove the sandbox when the command ends (the default)");
    cmd->add_flag("-d,--detach", a->detach,
                  "run the command as the sandbox's workload in the background, print the sandbox's name and "
                  "return; msb logs NAME shows its output, msb rm NAME removes it");
    cmd->add_option("-v,--volume", a->volumes,
                    "mount HOST_DIR:GUEST_PATH[:ro] or VOLUME:GUEST_PATH[:ro] (a named volume, kept across runs; "
                    "repeatable)")
        ->allow_extra_args(false);
    cmd->add_option("--network", a->net_policy,
                    "network profile: none, group, public (default), any; off: no network device")
        ->check(CLI::IsMember({"off", "none", "group", "public", "any"}));
    cmd->add_option("--net-rule", a->net_rules, "a network rule, e.g. allow@10.1.2.3:tcp:5432 (repeatable)")
        ->allow_extra_args(false);
    cmd->add_option("-p,--publish", a->publish, "publish a port: [IP:]HOST:GUEST[/tcp|udp] (repeatable)")
        ->allow_extra_args(false);
    cmd->add_option("--net-host-port", a->net_host_ports,
                    "let the gateway's PORT reach the host's 127.0.0.1:PORT (allow@host:tcp:PORT)")
        ->allow_extra_args(false);
    cmd->add_option("--net-allow", a->net_allow, "allow destinations in CIDR (allow@CIDR; repeatable)")
        ->allow_extra_args(false);
    cmd->add_option("--net-mtu", a->net_mtu, "MTU of the guest's interface (default 65520)");
    cmd->add_option("--secret", a->secrets,
                    "a secret: VAR=env:HOSTVAR@host[,host] or VAR=file:PATH@host (repeatable)")
        ->allow_extra_args(false);
    cmd->add_option("--net-tls-ca", a->tls_ca, "extra CA certificates (PEM) for upstreams of secrets");
    cmd->add_flag("--read-only", a->read_only, "no writable layer: the guest's / is read-only (tmpfs stays writable)");
    cmd->add_option("--security-opt", a->security_opts,
                    "no-new-privileges: processes cannot gain privileges through execve (repeatable)")
        ->allow_extra_args(false);
    cmd->add_option("--cap-drop", a->cap_drop, "drop a capability, or ALL (repeatable)")->allow_extra_args(false);
    cmd->add_option("--cap-add", a->cap_add, "keep a capability, e.g. NET_BIND_SERVICE (repeatable)")
        ->allow_extra_args(false);
    AddTrailingCommand(cmd, "COMMAND [ARGS...] after IMAGE (or after --); default: the image's");
    OnRun(cmd, [a, cmd]() {
      auto command = TrailingCommand(cmd);
      if (!command.ok()) return RunFail(command.error().message());
      a->command = std::move(*command);
      return Run(*a);
    });
  }
  {
    struct ExecArgs {
      std::string name, project, workdir, user, script;
      std::vector<std::string> cmd, env;
      bool i = false, t = false;
    };
    auto a = std::make_shared<ExecArgs>();
    auto* cmd = app.add_subcommand("exec", "Run a command in a running sandbox");
    cmd->add_flag("-i,--interactive", a->i, "forward standard input");
    cmd->add_flag("-t,--tty", a->t, "allocate a terminal");
    cmd->add_option("-e,--env", a->env, "environment variable KEY=VALUE (repeatable)")->allow_extra_args(false);
    cmd->add_option("-w,--workdir", a->workdir, "working directory");
    cmd->add_option("-u,--user", a->user, "user (uid, uid:gid or name)");
    AddProjectNameFlag(cmd, &a->project);
    cmd->add_option("--script", a->script, "run the sandbox's script NAME (its scripts:); COMMAND gives its arguments");
    cmd->add_option("sandbox", a->name, "sandbox name, or PROJECT/NAME; NAME~SCRIPT runs a script")->required();
    AddTrailingCommand(cmd, "COMMAND [ARGS...] after SANDBOX (or after --); with a script, its arguments");
    OnRun(cmd, [a, cmd]() {
      auto command = TrailingCommand(cmd);
      if (!command.ok()) return RunFail(command.error().message());
      std::string name = a->name, script = a->script;
      if (auto ref = schema::SplitScriptRef(name)) {
        if (!script.empty()) return RunFail("give the script once: " + name + " or --script " + script);
        std::tie(name, script) = *ref;
        if (!schema::IsScriptName(script)) {
          return RunFail("\"" + a->name + "\": expected SANDBOX~SCRIPT, a script name being letters, digits, '_', '.' and '-'");
        }
      }
      if (command->empty() && script.empty()) {
        return RunFail("msb exec: no command given: msb exec SANDBOX COMMAND [ARGS...], or a script: msb exec "
                       "SANDBOX --script NAME, msb exec SANDBOX~NAME");
      }
      return Exec(name, a->project, *command, a->i, a->t, a->env, a->workdir, a->user, "exec", kMsbFailed, script);
    });
  }
  {
    auto name = std::make_shared<std::string>();
    auto project = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand("shell", "Open an interactive shell (the sandbox's shell:) in a running sandbox");
    cmd->add_option("sandbox", *name, "sandbox name, or PROJECT/NAME")->required();
    AddProjectNameFlag(cmd, project.get());
    OnRun(cmd, [name, project]() {
      bool tty = ::isatty(0) != 0;
      return Exec(*name, *project, {}, true, tty, {}, "", "", "shell", 1);
    });
  }
  RegisterLogsCommand(app);
  {
    auto src = std::make_shared<std::string>(), dst = std::make_shared<std::string>();
    auto project = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand("cp", "Copy files between the host and a sandbox");
    cmd->add_option("src", *src, "SRC (host path, SANDBOX:/path or PROJECT/SANDBOX:/path)")->required();
    cmd->add_option("dst", *dst, "DST (host path, SANDBOX:/path or PROJECT/SANDBOX:/path)")->required();
    auto max_size = std::make_shared<std::string>("1G");
    cmd->add_option("--max-size", *max_size,
                    "out of a sandbox: the most file contents to write (default 1G)");
    AddProjectNameFlag(cmd, project.get());
    OnRun(cmd, [src, dst, project, max_size]() {
      auto max_bytes = schema::ParseSize(*max_size);
      if (!max_bytes.ok()) return Fail("--max-size " + *max_size + ": " + max_bytes.error().message());
      return Copy(*src, *dst, *project, *max_bytes);
    });
  }
  {
    auto name = std::make_shared<std::string>();
    auto project = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand("stop", "Stop a sandbox");
    cmd->add_option("sandbox", *name, "sandbox name, or PROJECT/NAME")->required();
    AddProjectNameFlag(cmd, project.get());
    OnRun(cmd, [name, project]() {
      auto store = OpenStore();
      if (!store.ok()) return Fail(store.error().message());
      auto rec = Find(*store, *name, *project, "stop");
      if (!rec.ok()) return Fail(rec.error().message());
      auto st = orchestrator::Stop(*store, *rec);
      if (!st.ok()) return Fail(st.error().message());
      return 0;
    });
  }
  {
    auto name = std::make_shared<std::string>();
    auto project = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand("rm", "Stop and remove a sandbox");
    cmd->add_option("sandbox", *name, "sandbox name, or PROJECT/NAME")->required();
    AddProjectNameFlag(cmd, project.get());
    OnRun(cmd, [name, project]() {
      auto store = OpenStore();
      if (!store.ok()) return Fail(store.error().message());
      auto rec = Find(*store, *name, *project, "rm");
      if (!rec.ok()) return Fail(rec.error().message());
      auto st = orchestrator::Remove(*store, *rec);
      if (!st.ok()) return Fail(st.error().message());
      return 0;
    });
  }
  RegisterPsCommand(app);
}

}  // namespace msb::cli
