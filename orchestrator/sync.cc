// msb sync: the checks of its arguments, git as a child process, the work
// trees under $MSB_HOME/sync/<key>/, and the pass and loop that apply a
// fetched commit through Up (up.h). The layout on disk is sync.h's.
#include "orchestrator/sync.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <set>

#include "common/child.h"
#include "common/io.h"
#include "common/sha256.h"
#include "schema/interpolate.h"
#include "schema/sandboxfile.h"
#include "schema/values.h"

extern char** environ;

namespace msb::orchestrator {

namespace {

bool HasControlOrSpace(std::string_view s) {
  for (unsigned char c : s) {
    if (c <= 0x20 || c == 0x7f) return true;
  }
  return false;
}

// The scheme of "scheme://...", lower-cased; empty when the URL has none.
std::string SchemeOf(std::string_view url) {
  size_t sep = url.find("://");
  if (sep == std::string_view::npos || sep == 0) return "";
  std::string scheme;
  for (char c : url.substr(0, sep)) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') return "";
    scheme += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return scheme;
}

// The last component of the URL's path, without a trailing ".git".
std::string RepoBaseName(std::string_view url) {
  std::string u = RedactUrl(url);
  while (!u.empty() && u.back() == '/') u.pop_back();
  if (u.size() > 4 && u.compare(u.size() - 4, 4, ".git") == 0) u.resize(u.size() - 4);
  size_t cut = u.find_last_of("/:");
  return cut == std::string::npos ? u : u.substr(cut + 1);
}

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

std::string Short(const std::string& commit) { return commit.substr(0, 12); }

bool IsDir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool PathExists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

namespace {

// "user:password" of scheme://user:password@host/...; empty when none.
std::string UserInfo(std::string_view url) {
  size_t sep = url.find("://");
  if (sep == std::string_view::npos || SchemeOf(url).empty()) return "";
  size_t host = sep + 3;
  size_t end = url.find_first_of("/?#", host);
  std::string_view authority = url.substr(host, end == std::string_view::npos ? std::string_view::npos : end - host);
  size_t at = authority.rfind('@');
  return at == std::string_view::npos ? "" : std::string(authority.substr(0, at));
}

}  // namespace

std::string RedactUrl(std::string_view url) {
  std::string userinfo = UserInfo(url);
  if (userinfo.empty()) return std::string(url);
  size_t at = url.find("://") + 3;  // UserInfo found the scheme
  return std::string(url.substr(0, at)) + std::string(url.substr(at + userinfo.size() + 1));
}

Status CheckRepoUrl(std::string_view url) {
  auto bad = [&](const std::string& why) {
    return Error(ErrorCode::kInvalidArgument, "--repo " + RedactUrl(url) + ": " + why);
  };
  if (url.empty()) return Error(ErrorCode::kInvalidArgument, "--repo is empty");
  if (url[0] == '-') return bad("a URL may not start with '-'");
  if (HasControlOrSpace(url)) return bad("a URL may not hold spaces or control characters");
  // git's "<transport>::<address>" runs a remote helper (ext:: runs a command).
  size_t helper = url.find("::");
  if (helper != std::string_view::npos && url.substr(0, helper).find('/') == std::string_view::npos) {
    return bad("git remote helpers (" + std::string(url.substr(0, helper)) +
               "::) are refused; use a file, git, http, https or ssh URL");
  }
  std::string scheme = SchemeOf(url);
  if (url.find("://") != std::string_view::npos && scheme.empty()) return bad("not a URL git reads");
  if (!scheme.empty()) {
    static const std::set<std::string> allowed = {"file", "git", "http", "https", "ssh"};
    if (!allowed.count(scheme)) {
      return bad("transport " + scheme + " is refused; use file, git, http, https or ssh");
    }
    if (url.size() == scheme.size() + 3) return bad("the URL names no repository");
  }
  return OkStatus();
}

Status CheckRef(std::string_view ref) {
  auto bad = [&](const std::string& why) {
    return Error(ErrorCode::kInvalidArgument, "--ref " + std::string(ref) + ": " + why);
  };
  if (ref.empty()) return OkStatus();
  if (ref[0] == '-' || ref[0] == '+') return bad("a ref may not start with '-' or '+'");
  if (HasControlOrSpace(ref)) return bad("a ref may not hold spaces or control characters");
  for (char c : ref) {
    if (std::strchr(":~^?*[\\", c) != nullptr) {
      return bad(std::string("a ref may not hold '") + c + "' (name a branch, a tag or refs/...)");
    }
  }
  if (ref.find("..") != std::string_view::npos || ref.find("@{") != std::string_view::npos ||
      ref.find("//") != std::string_view::npos) {
    return bad("not a valid ref name ('..', '@{' and '//' are not allowed)");
  }
  if (ref.front() == '/' || ref.back() == '/' || ref.back() == '.' || ref == "@") {
    return bad("not a valid ref name");
  }
  for (size_t start = 0; start <= ref.size();) {
    size_t end = ref.find('/', start);
    std::string_view part = ref.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (part.front() == '.' || (part.size() >= 5 && part.substr(part.size() - 5) == ".lock")) {
      return bad("a component may not start with '.' or end with .lock");
    }
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return OkStatus();
}

Result<std::string> NormaliseRepoPath(std::string_view path) {
  auto bad = [&](const std::string& why) {
    return Error(ErrorCode::kInvalidArgument, "--path " + std::string(path) + ": " + why);
  };
  if (!path.empty() && path[0] == '/') return bad("give a directory relative to the repository's root");
  if (!path.empty() && path[0] == '-') return bad("a path may not start with '-'");
  for (unsigned char c : path) {
    if (c < 0x20 || c == 0x7f) return bad("a path may not hold control characters");
  }
  std::string out;
  for (size_t start = 0; start <= path.size();) {
    size_t end = path.find('/', start);
    std::string_view part = path.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (part == "..") return bad("'..' would leave the repository");
    if (!part.empty() && part != ".") {
      if (!out.empty()) out += '/';
      out += part;
    }
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return out;
}

std::string DefaultSyncProjectName(std::string_view url, std::string_view path) {
  std::string words = RepoBaseName(url);
  if (!path.empty()) words += "-" + std::string(path);
  std::string name = schema::NameFromDirectory(words);
  while (!name.empty() && name.back() == '-') name.pop_back();
  if (!schema::IsValidName(name)) name = "sync";
  return name;
}

std::string SyncKey(std::string_view url, std::string_view path) {
  std::string prefix = DefaultSyncProjectName(url, path).substr(0, 40);
  std::string hashed = RedactUrl(url) + '\n' + std::string(path);
  return prefix + "-" + Sha256Hex(hashed).substr(0, 12);
}

std::string SyncDirectory(const std::string& key) { return MsbHome() + "/sync/" + key; }

std::vector<std::string> GitFetchArgv(const std::string& git_dir, const std::string& url,
                                      const std::string& ref) {
  return {"git",          "--git-dir=" + git_dir, "fetch",   "--quiet",
          "--no-tags",    "--no-recurse-submodules", "--depth=1", "--force",
          "--",           url,                    "+" + (ref.empty() ? std::string("HEAD") : ref) +
                                                      ":refs/msb/fetched"};
}

Result<SyncLock> SyncLock::Acquire(const std::string& key) {
  std::string dir = SyncDirectory(key);
  MSB_TRY_STATUS(MakeDirs(dir, 0700));
  std::string path = dir + "/lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return Error::FromErrno("cannot open " + path);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return Error(ErrorCode::kAlreadyExists,
                   "another msb sync of this repository and path is running (it holds " + path + ")");
    }
    return Error::FromErrno("cannot lock " + path);
  }
  return SyncLock(std::move(fd));
}

namespace {

// git with a fixed argv and an environment that allows only kSyncProtocols,
// never prompts on a terminal, and ignores a caller's GIT_DIR and friends.
// Hooks and fsmonitor are off for every command. Its output on success; on
// failure an error with what it wrote to stderr, `url` in it redacted.
Result<std::string> RunGit(std::vector<std::string> args, const std::string& url) {
  std::vector<std::string> argv = {args[0], "-c", "core.hooksPath=/dev/null", "-c",
                                   "core.fsmonitor=false", "-c", "protocol.allow=never"};
  for (const char* p : {"file", "git", "http", "https", "ssh"}) {
    argv.push_back("-c");
    argv.push_back(std::string("protocol.") + p + ".allow=always");
  }
  argv.insert(argv.end(), args.begin() + 1, args.end());
  static const std::set<std::string> dropped = {
      "GIT_DIR",         "GIT_WORK_TREE",   "GIT_INDEX_FILE",      "GIT_OBJECT_DIRECTORY",
      "GIT_COMMON_DIR",  "GIT_NAMESPACE",   "GIT_ALLOW_PROTOCOL",  "GIT_TERMINAL_PROMPT",
      "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_PROTOCOL_FROM_USER"};
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string kv = *e;
    if (!dropped.count(kv.substr(0, kv.find('=')))) env.push_back(kv);
  }
  env.push_back(std::string("GIT_ALLOW_PROTOCOL=") + kSyncProtocols);
  env.push_back("GIT_TERMINAL_PROMPT=0");

  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return Error::FromErrno("pipe2");
  UniqueFd out_rd(out[0]), out_wr(out[1]);
  if (::pipe2(err, O_CLOEXEC) != 0) return Error::FromErrno("pipe2");
  UniqueFd err_rd(err[0]), err_wr(err[1]);
  SpawnOptions opts;
  opts.argv = argv;
  opts.env = env;
  opts.stdout_fd = out_wr.get();
  opts.stderr_fd = err_wr.get();
  auto child = ChildProcess::Spawn(opts);
  if (!child.ok()) {
    return child.error().Wrap("cannot run git (install Debian's git: apt-get install git)");
  }
  out_wr.Reset();
  err_wr.Reset();
  std::string stdout_text, stderr_text;
  pollfd fds[2] = {{out_rd.get(), POLLIN, 0}, {err_rd.get(), POLLIN, 0}};
  int open_fds = 2;
  while (open_fds > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return Error::FromErrno("poll");
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        fds[i].fd = -1;
        --open_fds;
        continue;
      }
      (i == 0 ? stdout_text : stderr_text).append(buf, static_cast<size_t>(n));
    }
  }
  ExitStatus status = child->Wait();
  if (status.code == 0 && status.signal == 0) return stdout_text;
  // git names the URL, or only its host part, in its messages: the URL, its
  // user information and the password alone never reach msb's.
  auto replace_all = [&](const std::string& from, const std::string& to) {
    if (from.empty()) return;
    for (size_t at = 0; (at = stderr_text.find(from, at)) != std::string::npos; at += to.size()) {
      stderr_text.replace(at, from.size(), to);
    }
  };
  replace_all(url, RedactUrl(url));
  std::string userinfo = UserInfo(url);
  replace_all(userinfo + "@", "");
  replace_all(userinfo, "***");
  if (size_t colon = userinfo.find(':'); colon != std::string::npos) {
    replace_all(userinfo.substr(colon + 1), "***");
  }
  while (!stderr_text.empty() && (stderr_text.back() == '\n' || stderr_text.back() == ' ')) {
    stderr_text.pop_back();
  }
  return Error(ErrorCode::kIo, "git " + args[1] + " " + status.ToString() +
                                   (stderr_text.empty() ? "" : ": " + stderr_text));
}

// The Sandboxfile in dir, read and validated as msb up reads one (the .env
// beside it, the process environment over that), its messages naming it as
// `display` (its path in the repository).
Result<schema::Project> LoadFromTree(const std::string& dir, const std::string& repo_dir) {
  schema::LoadOptions find;
  find.dir = dir;
  auto path = schema::FindSandboxfile(find);
  if (!path.ok()) {
    return Error(ErrorCode::kNotFound, std::string("no ") + schema::kDefaultFileNames[0] + " or " +
                                           schema::kDefaultFileNames[1] + " in " +
                                           (repo_dir.empty() ? "the repository's root" : repo_dir + "/"));
  }
  std::string name = path->substr(path->rfind('/') + 1);
  std::string display = repo_dir.empty() ? name : repo_dir + "/" + name;
  MSB_TRY(std::string text, ReadFile(*path));
  schema::Diagnostics diags;
  schema::Env env;
  std::string dotenv = dir + "/.env";
  if (PathExists(dotenv)) {
    MSB_TRY(std::string env_text, ReadFile(dotenv));
    env = schema::ParseDotEnv(env_text, repo_dir.empty() ? ".env" : repo_dir + "/.env", &diags);
  }
  for (auto& [key, value] : schema::ProcessEnv()) env[key] = value;
  schema::ParseOptions parse;
  parse.display_name = display;
  parse.path_exists = PathExists;
  parse.diagnostics = &diags;
  auto project = schema::ParseSandboxfile(text, *path, env, parse);
  if (!project.ok() || diags.ErrorCount() > 0) {
    std::string all;
    for (const auto& d : diags.items()) {
      if (d.severity == schema::Diagnostic::Severity::kError) all += d.ToString() + "\n";
    }
    if (!all.empty()) all.pop_back();
    if (all.empty() && !project.ok()) all = project.error().message();
    return Error(ErrorCode::kInvalidArgument, all);
  }
  return project;
}

// Removes every tree but `keep` that no recorded sandbox of the project
// names (their bind mounts and local images live there), then lets git
// forget the removed ones.
void CollectTrees(const std::string& dir, const std::string& project, const std::string& keep) {
  std::error_code ec;
  std::vector<std::string> specs;
  if (auto store = Store::Open(Store::DefaultPath()); store.ok() && !project.empty()) {
    auto records = store->ListSandboxes(project);
    if (!records.ok()) return;  // in doubt, keep everything
    for (const auto& r : *records) specs.push_back(r.spec_json);
  }
  bool removed = false;
  for (const auto& entry : std::filesystem::directory_iterator(dir + "/trees", ec)) {
    std::string name = entry.path().filename();
    if (name == keep) continue;
    std::string prefix = entry.path().string() + "/";
    std::string exact = entry.path().string() + "\"";
    bool used = false;
    for (const auto& spec : specs) {
      if (spec.find(prefix) != std::string::npos || spec.find(exact) != std::string::npos) used = true;
    }
    if (used) continue;
    std::filesystem::remove_all(entry.path(), ec);
    removed = true;
  }
  if (removed) (void)RunGit({"git", "--git-dir=" + dir + "/repo.git", "worktree", "prune"}, "");
}

Status Record(const SyncRecord& r) {
  MSB_TRY(Store store, Store::Open(Store::DefaultPath()));
  return store.UpsertSync(r);
}

// The commit's work tree, checked out (detached) when not there yet.
Result<std::string> CheckOut(const std::string& dir, const std::string& commit) {
  std::string tree = dir + "/trees/" + commit;
  if (IsDir(tree)) return tree;
  MSB_TRY_STATUS(MakeDirs(dir + "/trees", 0700));
  std::string git_dir = "--git-dir=" + dir + "/repo.git";
  (void)RunGit({"git", git_dir, "worktree", "prune"}, "");
  auto st = RunGit({"git", git_dir, "worktree", "add", "--quiet", "--detach", "--force", "--", tree, commit}, "");
  if (!st.ok()) {
    std::error_code ec;
    std::filesystem::remove_all(tree, ec);
    return st.error().Wrap("checking out " + Short(commit));
  }
  return tree;
}

// Points dir/tree at the applied commit's tree (a new link renamed over the old).
Status PointTreeAt(const std::string& dir, const std::string& commit) {
  std::string link = dir + "/tree";
  std::string tmp = link + ".new";
  ::unlink(tmp.c_str());
  if (::symlink(("trees/" + commit).c_str(), tmp.c_str()) != 0) return Error::FromErrno("symlink " + tmp);
  if (::rename(tmp.c_str(), link.c_str()) != 0) return Error::FromErrno("rename " + tmp);
  return OkStatus();
}

}  // namespace

Result<SyncOutcome> SyncOnce(const SyncOptions& o) {
  MSB_TRY_STATUS(CheckRepoUrl(o.repo));
  MSB_TRY_STATUS(CheckRef(o.ref));
  MSB_TRY(std::string path, NormaliseRepoPath(o.path));
  const std::string key = SyncKey(o.repo, path);
  const std::string dir = SyncDirectory(key);
  const std::string repo_shown = RedactUrl(o.repo);
  MSB_TRY_STATUS(MakeDirs(dir, 0700));

  SyncRecord rec;
  {
    MSB_TRY(Store store, Store::Open(Store::DefaultPath()));
    MSB_TRY(auto found, store.GetSync(key));
    if (found) rec = *found;
  }
  rec.key = key;
  rec.repo = repo_shown;
  rec.ref = o.ref;
  rec.path = path;

  // Everything that fails from here is recorded with the commit it was about.
  auto failed = [&](const std::string& commit, const Error& e) -> Error {
    rec.error = e.message();
    rec.error_commit = commit;
    rec.error_at = Now();
    (void)Record(rec);
    return e;
  };

  // Fetch.
  const std::string git_dir = dir + "/repo.git";
  if (!IsDir(git_dir)) {
    auto init = RunGit({"git", "init", "--quiet", "--bare", "--", git_dir}, "");
    if (!init.ok()) return failed("", init.error());
  }
  auto fetched = RunGit(GitFetchArgv(git_dir, o.repo, o.ref), o.repo);
  if (!fetched.ok()) {
    return failed("", fetched.error().Wrap("fetching " + (o.ref.empty() ? "HEAD" : o.ref) + " of " + repo_shown));
  }
  auto parsed = RunGit({"git", "--git-dir=" + git_dir, "rev-parse", "--verify", "--quiet",
                        "refs/msb/fetched^{commit}"}, "");
  if (!parsed.ok()) return failed("", parsed.error().Wrap("reading the fetched commit"));
  SyncOutcome outcome;
  outcome.commit = *parsed;
  while (!outcome.commit.empty() && outcome.commit.back() == '\n') outcome.commit.pop_back();
  const std::string& commit = outcome.commit;
  rec.fetched_commit = commit;
  rec.checked_at = Now();
  outcome.unchanged = commit == rec.applied_commit && IsDir(dir + "/trees/" + commit);

  auto not_applied = [&](const Error& e) -> Error {
    Error wrapped(e.code(), "commit " + Short(commit) +
                                (outcome.unchanged ? " (applied before): " : " not applied: ") + e.message());
    CollectTrees(dir, rec.project, rec.applied_commit);
    return failed(commit, wrapped);
  };

  // Check out and validate.
  auto tree = CheckOut(dir, commit);
  if (!tree.ok()) return not_applied(tree.error());
  auto project = LoadFromTree(path.empty() ? *tree : *tree + "/" + path, path);
  if (!project.ok()) return not_applied(project.error());
  if (!o.project_name.empty()) {
    project->name = o.project_name;
  } else if (!project->name_from_file) {
    project->name = DefaultSyncProjectName(o.repo, path);
  }
  if (!rec.project.empty() && rec.project != project->name && !rec.applied_commit.empty()) {
    return not_applied(Error(ErrorCode::kInvalidArgument,
                             "the project name would change from " + rec.project + " to " +
                                 project->name + "; keep it with -p " + rec.project +
                                 ", or run `msb down -p " + rec.project + " -f " + dir +
                                 "/tree` and sync again"));
  }
  // The project's directory is the same for every commit.
  project->base_dir = dir + "/tree";

  // Every image is in the store before anything changes.
  {
    MSB_TRY(Store store, Store::Open(Store::DefaultPath()));
    ImageOptions io = o.up.images;
    io.fetch = true;
    for (const auto& [name, sb] : project->sandboxes) {
      auto image = EnsureImage(store, sb.image, io);
      if (!image.ok()) {
        // The file as the repository names it (its diagnostics do the same).
        std::string file = project->source_path.substr(project->source_path.rfind('/') + 1);
        std::string at = path.empty() ? file : path + "/" + file;
        return not_applied(Error(image.error().code(),
                                 at + ":" + std::to_string(sb.pos.line) + ":" + std::to_string(sb.pos.column) +
                                     ": sandboxes." + name + ": image " + sb.image.reference +
                                     " cannot be pulled: " + image.error().message()));
      }
    }
  }

  // Reconcile as msb up does.
  UpOptions up = o.up;
  up.plan.keep_stopped = true;
  up.wait = false;
  up.watch = false;
  up.quiet_unchanged = o.up.quiet_unchanged && outcome.unchanged;
  if (auto st = Up(*project, up); !st.ok()) {
    rec.project = project->name;
    return not_applied(st.error());
  }
  MSB_TRY_STATUS(PointTreeAt(dir, commit));
  if (!outcome.unchanged) {
    rec.applied_commit = commit;
    rec.applied_at = Now();
    outcome.applied = true;
  }
  rec.project = project->name;
  rec.error.clear();
  rec.error_commit.clear();
  rec.error_at = 0;
  MSB_TRY_STATUS(Record(rec));
  CollectTrees(dir, rec.project, commit);
  return outcome;
}

Status SyncLoop(const SyncOptions& options, const std::function<bool()>& wait) {
  SyncOptions o = options;
  std::string invalid_commit;  // failed validation: not tried again until the ref moves
  for (bool first = true;; first = false) {
    if (options.up.cancelled && options.up.cancelled()) return OkStatus();
    o.up.quiet_unchanged = !first;
    auto r = SyncOnce(o);
    if (!r.ok()) {
      // The same invalid commit again: say nothing new.
      const std::string& msg = r.error().message();
      bool repeat = !invalid_commit.empty() && msg.rfind("commit " + invalid_commit, 0) == 0;
      if (!repeat && options.up.report_error) options.up.report_error(msg);
      invalid_commit = r.error().code() == ErrorCode::kInvalidArgument && msg.rfind("commit ", 0) == 0
                           ? msg.substr(7, 12)
                           : "";
    } else {
      invalid_commit.clear();
      if (r->applied && options.up.report) options.up.report("applied commit " + Short(r->commit));
    }
    if (!wait()) return OkStatus();
  }
}

}  // namespace msb::orchestrator
