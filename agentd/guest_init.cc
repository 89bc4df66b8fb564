// PID 1 set-up and tear-down (guest_init.h). Every step logs what failed and
// where, so a boot failure can be read on the guest console.
#include "agentd/guest_init.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/random.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <system_error>
#include <thread>
#include <vector>

#include "agent/protocol.h"
#include "agentd/agentd_log.h"
#include "common/fd.h"
#include "common/io.h"

namespace msb::agent {
namespace {

Status Mount(const std::string& source, const std::string& target, const char* type,
             unsigned long flags, const std::string& data) {
  if (auto s = MakeDirs(target); !s.ok()) return s;
  if (::mount(source.c_str(), target.c_str(), type, flags, data.empty() ? nullptr : data.c_str()) != 0)
    return Error::FromErrno("mount " + std::string(type ? type : "") + " " + source + " on " + target +
                            (data.empty() ? "" : " (" + data + ")"));
  return OkStatus();
}

// Mounts unless something is already mounted there (EBUSY).
Status MountIfAbsent(const std::string& source, const std::string& target, const char* type,
                     unsigned long flags, const std::string& data) {
  auto s = Mount(source, target, type, flags, data);
  if (!s.ok() && s.error().sys_errno() == EBUSY) return OkStatus();
  return s;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') out.push_back(e->d_name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// Calls probe() until it returns a value or wait_ms passes, 20 ms apart (at
// boot, a device node may lag its sysfs entry).
template <typename F>
Result<std::string> Retry(int wait_ms, F probe) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  for (;;) {
    Result<std::string> r = probe();
    if (r.ok() || std::chrono::steady_clock::now() >= deadline) return r;
    ::poll(nullptr, 0, 20);
  }
}

}  // namespace

Status LoadModules(const std::string& dir) {
  for (const auto& name : ListDir(dir)) {
    const std::string path = dir + "/" + name;
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return Error::FromErrno("cannot open kernel module " + path);
    if (::syscall(SYS_finit_module, fd.get(), "", 0) != 0 && errno != EEXIST) {
      return Error::FromErrno("cannot load kernel module " + path);
    }
  }
  return OkStatus();
}

Status MountEarly() {
  MSB_TRY_STATUS(MountIfAbsent("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"));
  MSB_TRY_STATUS(MountIfAbsent("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                               "ptmxmode=0666,mode=0620,gid=5"));
  MSB_TRY_STATUS(MountIfAbsent("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"));
  MSB_TRY_STATUS(MountIfAbsent("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, ""));
  MSB_TRY_STATUS(MountIfAbsent("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, ""));
  return OkStatus();
}

Status AddEntropy(std::string_view hex) {
  if (hex.empty()) return OkStatus();
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::vector<uint32_t> words((hex.size() / 2 + 3) / 4 + 2, 0);
  auto* info = reinterpret_cast<rand_pool_info*>(words.data());
  auto* bytes = reinterpret_cast<unsigned char*>(info->buf);
  const size_t n = hex.size() / 2;
  for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<unsigned char>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  info->buf_size = static_cast<int>(n);
  info->entropy_count = static_cast<int>(n * 8);
  UniqueFd fd(::open("/dev/urandom", O_WRONLY | O_CLOEXEC));
  if (!fd) return Error::FromErrno("open /dev/urandom");
  if (::ioctl(fd.get(), RNDADDENTROPY, info) != 0) return Error::FromErrno("RNDADDENTROPY");
  if (::ioctl(fd.get(), RNDRESEEDCRNG) != 0) return Error::FromErrno("RNDRESEEDCRNG");
  return OkStatus();
}

Status SetClock(int64_t ns) {
  if (ns <= 0) return OkStatus();
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  if (::clock_settime(CLOCK_REALTIME, &ts) != 0) return Error::FromErrno("clock_settime");
  return OkStatus();
}

namespace {
Status WriteSysfs(const std::string& path, const std::string& value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return Error::FromErrno("open " + path);
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size()))
    return Error::FromErrno("writing " + value + " to " + path);
  return OkStatus();
}
}  // namespace

Status ReprobeDisks() {
  const std::string driver = "/sys/bus/virtio/drivers/virtio_blk";
  std::vector<std::string> devices;
  for (const auto& name : ListDir(driver)) {
    if (name.rfind("virtio", 0) == 0) devices.push_back(name);
  }
  // Unbinding a disk waits for RCU grace periods (tens of ms each under
  // TCG); unbound one thread each, the waits overlap. Binding is quick.
  std::vector<Status> unbound(devices.size(), OkStatus());
  {
    std::vector<std::thread> threads;
    for (size_t i = 0; i < devices.size(); ++i) {
      auto unbind = [&, i] { unbound[i] = WriteSysfs(driver + "/unbind", devices[i]); };
      try {
        threads.emplace_back(unbind);
      } catch (const std::system_error&) {
        unbind();  // no thread to be had: this one waits in line
      }
    }
    for (std::thread& t : threads) t.join();
  }
  for (const Status& s : unbound) MSB_TRY_STATUS(s);
  for (const auto& dev : devices) {
    MSB_TRY_STATUS(WriteSysfs(driver + "/bind", dev));
  }
  return OkStatus();
}

Result<std::string> FindPortDevice(const std::string& name, int wait_ms) {
  return Retry(wait_ms, [&]() -> Result<std::string> {
    for (const auto& port : ListDir("/sys/class/virtio-ports")) {
      auto n = ReadFile("/sys/class/virtio-ports/" + port + "/name");
      if (!n.ok() || Trim(*n) != name) continue;
      std::string dev = "/dev/" + port;
      if (::access(dev.c_str(), F_OK) == 0) return dev;
    }
    // Say what there is, so a missing device and a missing driver differ.
    std::string seen;
    for (const auto& dev : ListDir("/sys/bus/virtio/devices")) {
      auto id = ReadFile("/sys/bus/virtio/devices/" + dev + "/device");
      seen += (seen.empty() ? "" : ", ") + dev + "=" + (id.ok() ? Trim(*id) : "?");
    }
    std::string ports;
    for (const auto& port : ListDir("/sys/class/virtio-ports")) ports += (ports.empty() ? "" : ", ") + port;
    return Error(ErrorCode::kNotFound,
                 "no virtio-serial port named \"" + name +
                     "\" under /sys/class/virtio-ports (ports: " + (ports.empty() ? "none" : ports) +
                     "; virtio devices: " + (seen.empty() ? "none" : seen) +
                     "); is the virtserialport device configured?");
  });
}

Result<std::string> FindDiskBySerial(const std::string& serial, int wait_ms,
                                     const std::string& prefix) {
  return Retry(wait_ms, [&]() -> Result<std::string> {
    std::string seen;
    for (const auto& dev : ListDir(prefix + "/sys/block")) {
      if (dev.rfind("vd", 0) != 0) continue;
      auto s = ReadFile(prefix + "/sys/block/" + dev + "/serial");
      std::string got = s.ok() ? Trim(*s) : "";
      seen += (seen.empty() ? "" : ", ") + dev + "=\"" + got + "\"";
      if (got == serial) {
        std::string path = prefix + "/dev/" + dev;
        if (::access(path.c_str(), F_OK) == 0) return path;
      }
    }
    return Error(ErrorCode::kNotFound, "no virtio-blk disk with serial \"" + serial +
                                           "\" (disks seen: " + (seen.empty() ? "none" : seen) + ")");
  });
}

Status AssembleRoot(const RootConfig& root, const std::string& new_root) {
  const std::string lower = "/run/msb/lower", upper = kUpperMount;
  MSB_TRY(std::string base_dev, FindDiskBySerial(root.base_serial, 5000));
  auto base = Mount(base_dev, lower, "ext4", MS_RDONLY, "");
  if (!base.ok()) {
    // An EROFS base image is accepted as well.
    if (!Mount(base_dev, lower, "erofs", MS_RDONLY, "").ok())
      return base.error().Wrap("mounting the base image");
  }
  // A snapshot's layers: each an ext4 disk the host attached read-only,
  // holding the upper/ directory of the sandbox it was copied from. Its
  // whiteouts and opaque directories hide what they hid there.
  if (root.lower_serials.size() > kMaxLowerLayers) {
    return Error(ErrorCode::kInvalidArgument, "more than " + std::to_string(kMaxLowerLayers) +
                                                  " snapshot layers");
  }
  std::string lowerdir = lower;
  for (size_t i = 0; i < root.lower_serials.size(); ++i) {
    const std::string point = "/run/msb/layer" + std::to_string(i);
    MSB_TRY(std::string dev, FindDiskBySerial(root.lower_serials[i], 5000));
    auto s = Mount(dev, point, "ext4", MS_RDONLY, "noload");
    if (!s.ok()) return s.error().Wrap("mounting snapshot layer " + std::to_string(i));
    struct stat st{};
    if (::lstat((point + "/upper").c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return Error(ErrorCode::kInvalidArgument,
                   "snapshot layer " + std::to_string(i) + " has no upper/ directory");
    }
    lowerdir = point + "/upper:" + lowerdir;
  }
  if (root.ephemeral) {
    std::string opts = "mode=0755";
    if (root.upper_size_bytes > 0) opts += ",size=" + std::to_string(root.upper_size_bytes);
    MSB_TRY_STATUS(Mount("upper", upper, "tmpfs", 0, opts));
  } else {
    MSB_TRY(std::string upper_dev, FindDiskBySerial(root.upper_serial, 5000));
    auto s = Mount(upper_dev, upper, "ext4", 0, "");
    if (!s.ok()) return s.error().Wrap("mounting the writable layer");
  }
  MSB_TRY_STATUS(MakeDirs(upper + "/upper"));
  MSB_TRY_STATUS(MakeDirs(upper + "/work"));
  MSB_TRY_STATUS(Mount("overlay", new_root, "overlay", 0,
                       "lowerdir=" + lowerdir + ",upperdir=" + upper + "/upper,workdir=" + upper + "/work"));
  for (const char* dir : {"/dev", "/proc", "/sys"}) {
    std::string target = new_root + dir;
    MSB_TRY_STATUS(MakeDirs(target));
    if (::mount(dir, target.c_str(), nullptr, MS_MOVE, nullptr) != 0)
      return Error::FromErrno(std::string("moving ") + dir + " into the new root");
  }
  return OkStatus();
}

Status SwitchRoot(const std::string& new_root) {
  if (::chdir(new_root.c_str()) != 0) return Error::FromErrno("chdir " + new_root);
  if (::mount(".", "/", nullptr, MS_MOVE, nullptr) != 0)
    return Error::FromErrno("moving " + new_root + " onto /");
  if (::chroot(".") != 0) return Error::FromErrno("chroot into the new root");
  if (::chdir("/") != 0) return Error::FromErrno("chdir / in the new root");
  return OkStatus();
}

Status MakeRootReadOnly() {
  if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_RDONLY, nullptr) != 0)
    return Error::FromErrno("remounting the root file system read-only");
  if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0)
    return Error::FromErrno("making the root mount read-only");
  return OkStatus();
}

void PowerOff() {
  ::sync();
  // Unmount in reverse order of mounting; the root is remounted read-only.
  std::vector<std::string> points;
  if (auto mounts = ReadFile("/proc/self/mounts"); mounts.ok()) {
    // "<device> <mount point> <type> ..." per line; no iostreams in agentd.
    size_t start = 0;
    while (start < mounts->size()) {
      size_t end = mounts->find('\n', start);
      if (end == std::string::npos) end = mounts->size();
      std::string line = mounts->substr(start, end - start);
      start = end + 1;
      size_t a = line.find(' ');
      if (a == std::string::npos) continue;
      size_t b = line.find(' ', a + 1);
      std::string point = line.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
      if (!point.empty() && point != "/") points.push_back(point);
    }
  }
  for (auto it = points.rbegin(); it != points.rend(); ++it) {
    if (*it == "/proc" || *it == "/dev" || *it == "/sys") continue;
    ::umount2(it->c_str(), MNT_DETACH);
  }
  if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_RDONLY, nullptr) != 0)
    Diag(std::string("remounting / read-only: ") + std::strerror(errno));
  ::sync();
  Diag("powering off");
  // A reset, not RB_POWER_OFF: on microvm, power-off needs working ACPI and
  // otherwise halts the CPU with QEMU still running, while a reset ends QEMU
  // whenever it runs with -no-reboot (which the supervisor passes).
  ::reboot(RB_AUTOBOOT);
  for (;;) ::pause();
}

Status LoopbackUp() {
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return Error::FromErrno("socket");
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(fd.get(), SIOCGIFFLAGS, &ifr) != 0) return Error::FromErrno("SIOCGIFFLAGS lo");
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
  if (::ioctl(fd.get(), SIOCSIFFLAGS, &ifr) != 0) return Error::FromErrno("SIOCSIFFLAGS lo");
  return OkStatus();
}

}  // namespace msb::agent
