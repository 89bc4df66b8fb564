// Building and finding the guest kernel (see kernel.h). Not the boot itself.
//
// Boot measurements: whole VM lifetime (QEMU start -> kernel -> static test
// init writes a line -> power-off -> QEMU exits), QEMU 7.2 microvm, TCG,
// -smp 1 -m 256M, "console=ttyS0 quiet panic=-1 reboot=t tsc_early_khz=...",
// 0.75 MB initramfs, on the 2-core machine shared with other builds (load
// 3-4, so absolute numbers wander; compare within one run):
//   interleaved, 10 rounds    median    min       (uncompressed cpio)
//     PVH vmlinux             0.650 s   0.589 s
//     LZ4 bzImage             0.721 s   0.680 s
//   the same with an LZ4 cpio: PVH 0.634 s / 0.606 s, bzImage 0.726 s / 0.655 s
//   hyperfine, 10 runs        mean +- sd         QEMU user CPU
//     PVH vmlinux, cpio       865 +- 20 ms       545 ms
//     LZ4 bzImage, cpio       982 +- 58 ms       600 ms
//     PVH vmlinux, cpio.lz4   774 +- 90 ms       551 ms
// PVH wins every way it was measured (no set-up stub, no decompression of the
// kernel), so FindKernel returns vmlinux; bzImage stays in the cache for
// loaders without PVH. Kernel build with make -j2 on the shared cores: 587 s
// and 902 s (another kernel build ran beside the second); 349 s for a lighter
// variant of the fragment on a quieter machine.
//
// Cache layout, all under $MSB_HOME/kernels/:
//   <key>/vmlinux, <key>/bzImage   both images of one build
//   <key>/config                   the final .config
//   <key>/source-version           linux-source-6.1 version the key was made from
//   <key>/fragment                 the fragment the key was made from
//   <key>/build.log                the make output
//   .build-<key>-XXXXXX/           an unfinished build (removed by the next one)
//   build-<key>.lock               serialises concurrent builds of one key
//   build-<key>.log                make output while building or after a failure
#include "vm/kernel.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <thread>
#include <vector>

#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"
#include "common/sha256.h"
#include "vm/kernel_config.h"  // generated from vm/kernel.config
#include "vm/kernel_modules.h"

#if defined(__x86_64__)
#include <time.h>
#include <x86intrin.h>
#endif

namespace msb::vm {
namespace {

// The image FindKernel returns: the PVH entry of the uncompressed ELF boots
// faster than the LZ4 bzImage under TCG (numbers at the top of this file).
constexpr char kBootImage[] = "vmlinux";
constexpr int kLogTailLines = 40;

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool IsExecutableOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string p = path != nullptr ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string dir = p.substr(start, end - start);
    if (!dir.empty() && ::access((dir + "/" + name).c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

// Lines of a kconfig file as option -> value ("y", "64", "\"str\"", or "n"
// for "# CONFIG_X is not set"). Other lines are ignored.
std::map<std::string, std::string> ParseKconfig(std::string_view text) {
  std::map<std::string, std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.remove_suffix(1);
    constexpr std::string_view kNotSetPrefix = "# CONFIG_";
    constexpr std::string_view kNotSetSuffix = " is not set";
    if (line.starts_with(kNotSetPrefix) && line.ends_with(kNotSetSuffix)) {
      std::string_view name = line.substr(2, line.size() - 2 - kNotSetSuffix.size());
      out[std::string(name)] = "n";
    } else if (line.starts_with("CONFIG_")) {
      size_t eq = line.find('=');
      if (eq == std::string_view::npos) continue;
      out[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
    }
  }
  return out;
}

// The cached image of key, if complete.
std::string CachedImage(const std::string& key) {
  std::string path = KernelsDir() + "/" + key + "/" + kBootImage;
  return IsRegularFile(path) ? path : std::string();
}

// When linux-source-6.1 is not installed (a machine that got the cache some
// other way), accept a cached build of this very fragment.
std::string CachedImageForFragment() {
  std::error_code ec;
  std::string want = std::string(KernelConfigFragment());
  for (const auto& e : std::filesystem::directory_iterator(KernelsDir(), ec)) {
    std::string name = e.path().filename().string();
    if (name.size() != 64) continue;
    auto frag = ReadFile(e.path().string() + "/fragment");
    if (frag.ok() && *frag == want) {
      if (std::string img = CachedImage(name); !img.empty()) return img;
    }
  }
  return "";
}

class BuildLog {
 public:
  static Result<BuildLog> Open(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) return Error::FromErrno("cannot create build log " + path);
    return BuildLog(path, std::move(fd));
  }
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  void Note(std::string_view line) {
    auto st = WriteAll(fd_.get(), "### msb: " + std::string(line) + "\n");
    (void)st;
  }
  // The error for a failed step, with the log's tail.
  Error Failure(const std::string& what) const {
    std::string tail;
    if (auto log = ReadFile(path_); log.ok()) tail = LastLines(*log, kLogTailLines);
    return Error(ErrorCode::kInternal, what + " (full log: " + path_ + "); last lines:\n" + tail);
  }

 private:
  BuildLog(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  UniqueFd fd_;
};

// Waits for child; with a heartbeat, calls it every kHeartbeat while the child
// runs (a kernel compile is silent for minutes otherwise).
constexpr int kHeartbeatMs = 30'000;
ExitStatus WaitWithHeartbeat(ChildProcess& child, const std::function<void()>& heartbeat) {
  if (heartbeat) {
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, child.pid(), 0)));
    while (pidfd) {
      struct pollfd pfd = {pidfd.get(), POLLIN, 0};
      int r = ::poll(&pfd, 1, kHeartbeatMs);
      if (r < 0 && errno == EINTR) continue;
      if (r != 0) break;  // exited (or poll failed: fall back to a plain wait)
      heartbeat();
    }
  }
  return child.Wait();
}

Status RunLogged(BuildLog& log, const std::vector<std::string>& argv, const std::string& step,
                 const std::function<void()>& heartbeat = nullptr) {
  std::string cmd;
  for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  log.Note(cmd);
  SpawnOptions opts;
  opts.argv = argv;
  opts.stdout_fd = log.fd();
  opts.stderr_fd = log.fd();
  auto child = ChildProcess::Spawn(opts);
  if (!child.ok()) return child.error().Wrap(step);
  ExitStatus st = WaitWithHeartbeat(*child, heartbeat);
  if (st.ShellCode() != 0) return log.Failure(step + " failed: " + cmd + " " + st.ToString());
  return OkStatus();
}

// Holds an flock on a file for the lifetime of the object.
class FileLock {
 public:
  static Result<FileLock> Acquire(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd) return Error::FromErrno("cannot open lock " + path);
    while (::flock(fd.get(), LOCK_EX) != 0) {
      if (errno != EINTR) return Error::FromErrno("cannot lock " + path);
    }
    return FileLock(std::move(fd));
  }

 private:
  explicit FileLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

Status CheckBuildTools() {
  std::string missing;
  for (const char* tool : {"make", "gcc", "tar", "xz", "bc", "bison", "flex", "perl"}) {
    if (!IsExecutableOnPath(tool)) missing += std::string(missing.empty() ? "" : ", ") + tool;
  }
  if (!IsRegularFile(kKernelSourceTarball)) {
    missing += std::string(missing.empty() ? "" : ", ") + kKernelSourceTarball;
  }
  if (missing.empty()) return OkStatus();
  return Error(ErrorCode::kUnavailable,
               "cannot build the guest kernel: missing " + missing +
                   "; install them with: apt-get install -y linux-source-6.1 build-essential "
                   "bc bison flex libelf-dev libssl-dev xz-utils");
}

// Removes unfinished builds of key left by an interrupted run. Caller holds the lock.
void RemoveStaleBuilds(const std::string& key) {
  std::error_code ec;
  std::string prefix = ".build-" + key + "-";
  for (const auto& e : std::filesystem::directory_iterator(KernelsDir(), ec)) {
    if (e.path().filename().string().starts_with(prefix)) std::filesystem::remove_all(e.path(), ec);
  }
}

Status RenameFile(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return Error::FromErrno("cannot move " + from + " to " + to);
  }
  return OkStatus();
}

Result<std::string> BuildUnderLock(const KernelBuildOptions& options, const std::string& version,
                                   const std::string& key) {
  auto progress = [&](std::string_view line) {
    if (options.progress) options.progress(line);
  };
  const std::string kernels = KernelsDir();
  MSB_TRY_STATUS(CheckBuildTools());
  progress("removing unfinished builds, if any");
  RemoveStaleBuilds(key);

  std::string tmpl = kernels + "/.build-" + key + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) return Error::FromErrno("cannot create " + tmpl);
  const std::string work = buf.data();
  // Removes the work tree on every exit path; a crash leaves it for RemoveStaleBuilds.
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{work};

  MSB_TRY(BuildLog log, BuildLog::Open(kernels + "/build-" + key + ".log"));
  const std::string src = work + "/linux-source-6.1";
  const std::string out = work + "/out";
  const std::string result = work + "/result";
  int jobs = options.jobs > 0 ? options.jobs
                              : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  auto started = std::chrono::steady_clock::now();

  progress("extracting " + std::string(kKernelSourceTarball) + " (" + version + ")");
  MSB_TRY_STATUS(RunLogged(log, {"tar", "-xf", kKernelSourceTarball, "-C", work}, "extracting"));
  MSB_TRY_STATUS(MakeDirs(out));
  MSB_TRY_STATUS(MakeDirs(result));

  progress("configuring: tinyconfig + vm/kernel.config + olddefconfig");
  const std::vector<std::string> make = {"make", "-C", src, "O=" + out, "ARCH=x86_64"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = make;
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  };
  MSB_TRY_STATUS(RunLogged(log, with({"tinyconfig"}), "make tinyconfig"));
  MSB_TRY(std::string tiny, ReadFile(out + "/.config"));
  MSB_TRY_STATUS(WriteFileAtomic(out + "/.config",
                                 tiny + "\n# msb: vm/kernel.config\n" +
                                     std::string(KernelConfigFragment())));
  MSB_TRY_STATUS(RunLogged(log, with({"olddefconfig"}), "make olddefconfig"));
  MSB_TRY(std::string dot_config, ReadFile(out + "/.config"));
  if (auto st = CheckKernelConfig(KernelConfigFragment(), dot_config); !st.ok()) {
    log.Note(st.error().message());
    return st.error().Wrap("the kernel config fragment does not apply (log: " + log.path() + ")");
  }

  progress("compiling with make -j" + std::to_string(jobs) + " (log: " + log.path() + ")");
  auto heartbeat = [&]() {
    auto elapsed = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::steady_clock::now() - started).count();
    size_t compiled = 0;
    if (auto text = ReadFile(log.path()); text.ok()) {
      for (size_t p = text->find("\n  CC "); p != std::string::npos; p = text->find("\n  CC ", p + 1)) {
        ++compiled;
      }
    }
    progress("still compiling after " + std::to_string(elapsed) + " s (" +
             std::to_string(compiled) + " files so far, about 1500 in all)");
  };
  MSB_TRY_STATUS(RunLogged(log, with({"-j" + std::to_string(jobs), "bzImage"}), "make bzImage",
                           options.progress ? std::function<void()>(heartbeat) : nullptr));

  MSB_TRY_STATUS(RenameFile(out + "/vmlinux", result + "/vmlinux"));
  MSB_TRY_STATUS(RenameFile(out + "/arch/x86/boot/bzImage", result + "/bzImage"));
  MSB_TRY_STATUS(WriteFileAtomic(result + "/config", dot_config));
  MSB_TRY_STATUS(WriteFileAtomic(result + "/source-version", version + "\n"));
  MSB_TRY_STATUS(WriteFileAtomic(result + "/fragment", KernelConfigFragment()));
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::steady_clock::now() - started).count();
  log.Note("built in " + std::to_string(secs) + " s");
  MSB_TRY_STATUS(RenameFile(log.path(), result + "/build.log"));

  const std::string final_dir = kernels + "/" + key;
  // Only an incomplete directory can be in the way here (CachedImage said no).
  std::error_code ec;
  std::filesystem::remove_all(final_dir, ec);
  MSB_TRY_STATUS(RenameFile(result, final_dir));
  progress("built in " + std::to_string(secs) + " s: " + final_dir);
  return final_dir + "/" + kBootImage;
}

}  // namespace

std::string_view KernelConfigFragment() { return kKernelConfigFragment; }

std::string KernelCacheKey(std::string_view source_version, std::string_view fragment) {
  // Length-prefixed so that no (version, fragment) pair collides with another.
  std::string material = "msb-kernel-v1\n" + std::string(kKernelSourcePackage) + "\n" +
                         std::to_string(source_version.size()) + ":" +
                         std::string(source_version) + "\n" + std::to_string(fragment.size()) +
                         ":" + std::string(fragment);
  return Sha256Hex(material);
}

Result<std::string> KernelSourceVersion() {
  auto rr = RunCapture({"dpkg-query", "-W", "-f", "${Version}", kKernelSourcePackage},
                       /*merge_stderr=*/false);
  if (!rr.ok()) return rr.error().Wrap("cannot ask dpkg for the version of " + std::string(kKernelSourcePackage));
  if (rr->status.ShellCode() != 0 || rr->output.empty()) {
    return Error(ErrorCode::kUnavailable,
                 std::string(kKernelSourcePackage) +
                     " is not installed; install it with: apt-get install -y " +
                     kKernelSourcePackage);
  }
  return rr->output;
}

std::string KernelsDir() { return MsbHome() + "/kernels"; }

#if defined(__x86_64__)
namespace {
struct TscSample {
  unsigned long long tsc = 0;
  long long ns = 0;
};
// The (TSC, time) pair with the narrowest clock bracket of a few tries, so a
// preemption between the two reads does not skew it.
TscSample SampleTsc() {
  TscSample best;
  long long best_width = -1;
  for (int i = 0; i < 8; ++i) {
    struct timespec a, b;
    ::clock_gettime(CLOCK_MONOTONIC_RAW, &a);
    unsigned long long t = __rdtsc();
    ::clock_gettime(CLOCK_MONOTONIC_RAW, &b);
    long long na = a.tv_sec * 1'000'000'000LL + a.tv_nsec;
    long long width = b.tv_sec * 1'000'000'000LL + b.tv_nsec - na;
    if (best_width < 0 || width < best_width) {
      best_width = width;
      best = {t, na + width / 2};
    }
  }
  return best;
}
}  // namespace

Result<long> HostTscKhz() {
  TscSample a = SampleTsc();
  struct timespec wait = {0, 20'000'000};
  while (::nanosleep(&wait, &wait) != 0 && errno == EINTR) {
  }
  TscSample b = SampleTsc();
  long long ns = b.ns - a.ns;
  if (ns <= 0 || b.tsc <= a.tsc) return Error(ErrorCode::kInternal, "the host TSC did not advance");
  return static_cast<long>(static_cast<double>(b.tsc - a.tsc) * 1e6 / static_cast<double>(ns));
}
#else
Result<long> HostTscKhz() {
  return Error(ErrorCode::kUnavailable, "the TSC is an x86-64 notion");
}
#endif

std::string TscKernelArg() {
  auto khz = HostTscKhz();
  if (!khz.ok() || *khz <= 0) return "";
  return "tsc_early_khz=" + std::to_string(*khz);
}

Status CheckKernelConfig(std::string_view fragment, std::string_view dot_config) {
  auto want = ParseKconfig(fragment);
  auto got = ParseKconfig(dot_config);
  std::string problems;
  for (const auto& [name, value] : want) {
    auto it = got.find(name);
    std::string have = it == got.end() ? "n" : it->second;
    if (have != value) {
      problems += "\n  " + name + ": asked for " + value + ", got " +
                  (it == got.end() ? "unset (unknown option or unmet dependency)" : have);
    }
  }
  if (problems.empty()) return OkStatus();
  return Error(ErrorCode::kInvalidArgument,
               "olddefconfig dropped or changed options of vm/kernel.config:" + problems);
}

Result<std::string> FindKernel() {
  if (const char* env = std::getenv(kKernelEnv); env != nullptr && *env != '\0') {
    if (!IsRegularFile(env)) {
      return Error(ErrorCode::kNotFound, std::string(kKernelEnv) + "=" + env +
                                             ": no such kernel image; unset " + kKernelEnv +
                                             " to use the one msb builds (msb kernel build)");
    }
    return std::string(env);
  }
  auto version = KernelSourceVersion();
  if (version.ok()) {
    if (std::string img = CachedImage(KernelCacheKey(*version, KernelConfigFragment()));
        !img.empty()) {
      return img;
    }
  } else if (std::string img = CachedImageForFragment(); !img.empty()) {
    return img;
  }
  return Error(ErrorCode::kNotFound, kNoKernelMessage);
}

std::string DebianKernelsDir() { return KernelsDir() + "/debian"; }

Result<GuestKernel> FindGuestKernel() {
  const std::vector<std::string> wanted(std::begin(kGuestModules), std::end(kGuestModules));
  auto tuned = FindKernel();
  if (tuned.ok()) {
    const char* mods = std::getenv(kKernelModulesEnv);
    if (mods == nullptr || *mods == '\0' || std::getenv(kKernelEnv) == nullptr) return GuestKernel{*tuned, {}, ""};
    // A user's own modular kernel: its modules from the directory named.
    auto order = ModuleLoadOrder(mods, wanted);
    if (!order.ok()) return order.error().Wrap(std::string(kKernelModulesEnv) + "=" + mods);
    return GuestKernel{*tuned, std::move(*order), ""};
  }
  if (const char* env = std::getenv(kKernelEnv); env != nullptr && *env != '\0') return tuned.error();
  // The newest fetched version with both its image and its modules.
  std::vector<std::string> versions;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(DebianKernelsDir(), ec)) {
    versions.push_back(e.path().filename().string());
  }
  std::sort(versions.rbegin(), versions.rend());
  for (const auto& v : versions) {
    const std::string dir = DebianKernelsDir() + "/" + v;
    const std::string image = dir + "/boot/vmlinuz-" + v;
    const std::string modules = dir + "/lib/modules/" + v;
    if (!IsRegularFile(image) || !std::filesystem::is_directory(modules, ec)) continue;
    auto order = ModuleLoadOrder(modules, wanted);
    if (!order.ok()) return order.error().Wrap("Debian kernel " + v);
    return GuestKernel{image, std::move(*order), v};
  }
  return tuned.error();
}

Result<std::string> BuildKernel(const KernelBuildOptions& options) {
  MSB_TRY(std::string version, KernelSourceVersion());
  const std::string key = KernelCacheKey(version, KernelConfigFragment());
  if (std::string img = CachedImage(key); !img.empty()) {
    if (options.progress) options.progress("cached: " + img);
    return img;
  }
  MSB_TRY_STATUS(MakeDirs(KernelsDir()));
  MSB_TRY(FileLock lock, FileLock::Acquire(KernelsDir() + "/build-" + key + ".lock"));
  // Another msb may have finished the same build while we waited for the lock.
  if (std::string img = CachedImage(key); !img.empty()) {
    if (options.progress) options.progress("cached: " + img);
    return img;
  }
  return BuildUnderLock(options, version, key);
}

}  // namespace msb::vm
