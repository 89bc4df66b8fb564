// msb sync: a project kept in step with a git repository. Each pass fetches
// the ref with Debian's git (a child process with a fixed argv, never a
// shell), checks the fetched commit out (detached) into a work tree of its
// own, loads and validates the Sandboxfile there, pulls its images, and then
// reconciles exactly as `msb up` does (up.h). A commit that fails any of
// those is not applied: what runs stays, and the error names the commit and
// file:line:column. Not git itself, not the reconcile pass.
//
// On disk, $MSB_HOME/sync/<key>/ (the key comes from the repository URL and
// the path in it, so two syncs never share it):
//   repo.git/           a private bare repository; the URL is passed to each
//                       fetch and never written to its config
//   trees/<commit>/     one work tree per commit tried; a running sandbox's
//                       bind mounts and local images stay in the tree of the
//                       commit it was started from
//   tree -> trees/<c>   the applied commit's tree: the project's directory as
//                       the store records it (up.h CheckProjectDirectory), the
//                       same for every commit
//   lock                held by the msb sync of that key while it runs
// After a pass, trees are removed unless they are the applied one or a
// recorded sandbox of the project still names a path in them.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/fd.h"
#include "common/result.h"
#include "orchestrator/store.h"
#include "orchestrator/up.h"

namespace msb::orchestrator {

// The transports a sync may use, as git's GIT_ALLOW_PROTOCOL spells them.
inline constexpr const char* kSyncProtocols = "file:git:http:https:ssh";

// The URL as msb prints and stores it: the user information of a
// scheme://user:password@host/... URL removed (scp-like user@host:path and
// local paths are left as they are: they carry no password).
std::string RedactUrl(std::string_view url);
// --repo: not empty, not starting with '-', no control characters or
// spaces, no git transport helper (`ext::`, `fd::`, any `NAME::`), and a
// scheme (when it has one) of file, git, http, https or ssh.
Status CheckRepoUrl(std::string_view url);
// --ref: a branch, tag or ref name as git-check-ref-format allows (one level
// allowed), never starting with '-', never a refspec (no ':').
Status CheckRef(std::string_view ref);
// --path, normalised: relative, without '.' or '..' components or a
// trailing '/'; "" for the repository's root.
Result<std::string> NormaliseRepoPath(std::string_view path);
// The key of $MSB_HOME/sync/<key>: a readable prefix from the repository's
// name and the path, then 12 hex digits of a hash of the redacted URL and
// the path.
std::string SyncKey(std::string_view url, std::string_view path);
// The project name when neither -p, $MSB_PROJECT_NAME nor the file's name:
// gives one: the repository's name (without .git), then the path's
// components, joined by '-', as a project name.
std::string DefaultSyncProjectName(std::string_view url, std::string_view path);
// The argv of the fetch (a test checks it): fixed options, the URL after
// "--", the ref into refs/msb/fetched.
std::vector<std::string> GitFetchArgv(const std::string& git_dir, const std::string& url,
                                      const std::string& ref);

struct SyncOptions {
  std::string repo;          // as given; may hold credentials, never stored or printed
  std::string ref;           // empty: the remote's HEAD
  std::string path;          // the Sandboxfile's directory in the repository
  std::string project_name;  // -p or $MSB_PROJECT_NAME, checked; empty: none
  // Registry settings, report, report_error and cancelled as for msb up.
  UpOptions up;
};

// What one pass did.
struct SyncOutcome {
  std::string commit;  // what the ref pointed at
  bool applied = false;  // this pass made the project match a new commit
  bool unchanged = false;  // the commit was already applied (reconciled again)
};

// Holds $MSB_HOME/sync/<key>/lock for one msb sync. Released on destruction.
class SyncLock {
 public:
  // kAlreadyExists when another msb sync of the key holds it.
  static Result<SyncLock> Acquire(const std::string& key);

 private:
  explicit SyncLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// One pass (the caller holds the SyncLock): fetch, check out, validate, pull,
// reconcile, record. A commit already applied is reconciled again (dead
// sandboxes restarted; ones stopped on request stay stopped). The error of
// a commit that is not applied starts "commit <12 hex>: "; it is recorded
// with the commit, and the record's applied commit is left as it was.
Result<SyncOutcome> SyncOnce(const SyncOptions& options);

// The loop: a pass, then wait() (the interval) until it returns false
// (cancelled). A commit that was not applied is tried again at each pass
// (an image may pull later); its error goes to options.up.report_error once,
// not again while the same commit fails validation the same way.
Status SyncLoop(const SyncOptions& options, const std::function<bool()>& wait);

// $MSB_HOME/sync/<key>.
std::string SyncDirectory(const std::string& key);

}  // namespace msb::orchestrator
