// The host side of unpacking layers in a builder microVM (unpack.h).
//
// One builder boot handles up to agent::kMaxUnpackLayers layers (microvm's
// virtio-mmio transports run out beyond); more layers take more boots onto
// the same target disk. Per boot: listen on <work>/agent.sock, start QEMU
// (PDEATHSIG, killed and reaped by ChildProcess on every early return),
// accept its agent chardev, hello ⇄ hello, unpack → layer* result, then
// shutdown and wait for QEMU to exit. Everything the guest sends is hostile:
// frames are bounded by FrameChannel, bodies validated by the Parse*
// decoders, the layer index must be the next one, and the reported diff_id
// must equal the expected one, else the unpack fails right away.
#include "image/flatten.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>

#include "agent/channel.h"
#include "agent/messages.h"
#include "agent/protocol.h"
#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"
#include "common/log.h"
#include "common/unix_socket.h"
#include "storage/disk.h"
#include "image/oci.h"
#include "vm/kernel.h"
#include "vm/spec.h"

namespace msb::image {
namespace {

using agent::Clock;
using agent::Frame;
using agent::FrameKind;
constexpr uint64_t kMiB = 1ull << 20;
constexpr const char* kTargetSerial = "msb-target";
constexpr const char* kDiskLabel = "msb-base";
// How long a guest gets to power off after the unpack before it is killed.
constexpr auto kShutdownGrace = std::chrono::seconds(20);
constexpr size_t kMaxGuestText = 2000;

std::string LayerSerial(size_t i) { return "msb-layer-" + std::to_string(i); }

// A QEMU option value: commas doubled.
std::string QemuEscape(const std::string& s) {
  std::string out;
  for (char c : s) out += c == ',' ? std::string(",,") : std::string(1, c);
  return out;
}

// Guest text for an error message: printable, bounded.
std::string GuestText(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, kMaxGuestText)) {
    auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 && c != '\n') || u == 0x7f ? '?' : c;
  }
  if (s.size() > kMaxGuestText) out += "...";
  return out;
}

std::string Tail(const std::string& path, int lines) {
  auto text = ReadFile(path);
  if (!text.ok() || text->empty()) return "(nothing)";
  std::string s = text->size() > 8192 ? text->substr(text->size() - 8192) : *text;
  size_t pos = s.size();
  if (!s.empty() && s.back() == '\n') --pos;
  int n = 0;
  while (pos > 0) {
    if (s[pos - 1] == '\n' && ++n == lines) break;
    --pos;
  }
  return GuestText(s.substr(pos));
}

// The scratch directory for sockets and logs; removed with everything in it.
class WorkDir {
 public:
  ~WorkDir() {
    if (!path_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  Status Create() {
    const char* tmp = std::getenv("TMPDIR");
    std::string base = tmp != nullptr && *tmp != '\0' && std::strlen(tmp) < 60 ? tmp : "/tmp";
    std::string tmpl = base + "/msb-unpack-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) return Error::FromErrno("creating a directory in " + base);
    path_ = tmpl;
    return OkStatus();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Removes the file unless Keep() was called.
class FileGuard {
 public:
  explicit FileGuard(std::string path) : path_(std::move(path)) {}
  ~FileGuard() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  void Keep() { path_.clear(); }

 private:
  std::string path_;
};

struct Batch {
  size_t first = 0;  // index of its first layer in the request
  size_t count = 0;
};

class Builder {
 public:
  Builder(const FlattenRequest& req, std::string qemu, std::string disk, std::string work,
          Clock::time_point deadline)
      : req_(req), qemu_bin_(std::move(qemu)), disk_(std::move(disk)), work_(std::move(work)),
        deadline_(deadline) {}

  Status Run(const Batch& batch, std::vector<LayerResult>* results);

 private:
  std::vector<std::string> Argv(const Batch& batch) const;
  Error Fail(const std::string& what) const;
  std::string LayerName(size_t global) const {
    return "layer " + std::to_string(global) + " (" + req_.layers[global].path + ")";
  }
  Error GuestError(const Batch& batch, const std::string& text) const;

  const FlattenRequest& req_;
  std::string qemu_bin_, disk_, work_;
  Clock::time_point deadline_;
};

std::vector<std::string> Builder::Argv(const Batch& batch) const {
  const bool kvm = req_.vm.accel == "kvm";
  std::string kargs = req_.vm.kernel_args.empty() ? vm::TscKernelArg() : req_.vm.kernel_args;
  std::vector<std::string> a = {
      qemu_bin_,
      "-M", std::string("microvm,accel=") + (kvm ? "kvm" : "tcg") + ",rtc=on",
      "-cpu", kvm ? "host" : "max",
      "-smp", "1",
      "-m", std::to_string(std::max<uint64_t>(req_.vm.memory_bytes >> 20, 64)) + "M",
      "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
      "-kernel", req_.vm.kernel,
      "-initrd", req_.vm.initramfs,
      "-append", "console=ttyS0 quiet panic=-1 reboot=t " + kargs,
      "-chardev", "file,id=con,path=" + QemuEscape(work_ + "/console.log"),
      "-serial", "chardev:con",
      "-device", "virtio-serial-device",
      "-chardev", "socket,id=agent,path=" + QemuEscape(work_ + "/agent.sock"),
      "-device", "virtserialport,chardev=agent,name=" + std::string(agent::kPortName),
      "-drive", "id=target,file=" + QemuEscape(disk_) + ",format=raw,if=none,discard=unmap",
      "-device", std::string("virtio-blk-device,drive=target,serial=") + kTargetSerial,
  };
  for (size_t i = 0; i < batch.count; ++i) {
    const UnpackLayerSpec& l = req_.layers[batch.first + i];
    std::string id = "layer" + std::to_string(i);
    a.insert(a.end(), {"-drive", "id=" + id + ",file=" + QemuEscape(l.path) + ",format=raw,if=none,readonly=on",
                       "-device", "virtio-blk-device,drive=" + id + ",serial=" + LayerSerial(i)});
  }
  return a;
}

Error Builder::Fail(const std::string& what) const {
  return Error(ErrorCode::kUnavailable, "the image builder VM " + what + "; its console:\n" +
                                            Tail(work_ + "/console.log", 12) + "\nQEMU:\n" +
                                            Tail(work_ + "/qemu.log", 5));
}

// "layer N: rest" from the guest (N within the batch) → the request's layer.
Error Builder::GuestError(const Batch& batch, const std::string& text) const {
  std::string t = GuestText(text);
  if (t.rfind("layer ", 0) == 0) {
    size_t colon = t.find(": ");
    char* end = nullptr;
    std::string num = t.substr(6, colon == std::string::npos ? 0 : colon - 6);
    unsigned long n = std::strtoul(num.c_str(), &end, 10);
    if (!num.empty() && end != nullptr && *end == '\0' && n < batch.count)
      return Error(ErrorCode::kInvalidArgument,
                   "cannot unpack " + LayerName(batch.first + n) + ": " + t.substr(colon + 2));
  }
  return Error(ErrorCode::kInvalidArgument, "cannot unpack the image: " + t);
}

Status Builder::Run(const Batch& batch, std::vector<LayerResult>* results) {
  std::string sock = work_ + "/agent.sock";
  ::unlink(sock.c_str());
  MSB_TRY(UniqueFd listener, ListenUnix(sock, false, 1));
  UniqueFd log(::open((work_ + "/qemu.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  ::unlink((work_ + "/console.log").c_str());
  SpawnOptions opts;
  opts.argv = Argv(batch);
  opts.stdout_fd = log.valid() ? log.get() : -2;
  opts.stderr_fd = log.valid() ? log.get() : -2;
  opts.parent_death_signal = SIGKILL;
  MSB_TRY(ChildProcess qemu, ChildProcess::Spawn(opts));

  // QEMU connects to the agent socket as soon as it starts.
  UniqueFd conn;
  while (!conn) {
    if (Clock::now() >= deadline_) return Fail("did not start in time");
    if (auto st = qemu.TryWait()) return Fail("exited at start (" + st->ToString() + ")");
    pollfd p{listener.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) == 1) conn.Reset(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  }
  listener.Reset();
  agent::FrameChannel chan(std::move(conn));
  auto receive = [&]() -> Result<Frame> {
    auto f = chan.Receive(deadline_);
    if (f.ok()) return f;
    if (f.error().code() == ErrorCode::kTimeout) return Fail("did not finish in time");
    return Fail("closed the agent channel (" + f.error().message() + ")");
  };

  MSB_TRY(Frame hello, receive());
  if (hello.kind != FrameKind::kHello) return Fail("sent " + agent::ToString(hello.kind) + " before hello");
  MSB_TRY(agent::Hello h, agent::ParseHello(hello.payload));
  if (h.version != agent::kProtocolVersion)
    return Error(ErrorCode::kUnavailable, "the builder's agentd speaks agent protocol version " +
                                              std::to_string(h.version) + ", msb speaks " +
                                              std::to_string(agent::kProtocolVersion) + "; rebuild agentd");
  MSB_TRY_STATUS(chan.Send(Frame{agent::kChannelId, FrameKind::kHello,
                                 agent::Encode(agent::Hello{agent::kProtocolVersion, "msb-unpack"})},
                           deadline_));
  agent::UnpackRequest ureq;
  ureq.target_serial = kTargetSerial;
  for (size_t i = 0; i < batch.count; ++i) {
    const UnpackLayerSpec& l = req_.layers[batch.first + i];
    ureq.layers.push_back({LayerSerial(i), l.size, l.media_type});
  }
  MSB_TRY_STATUS(chan.Send(Frame{agent::kChannelId, FrameKind::kUnpack, agent::Encode(ureq)}, deadline_));

  size_t next = 0;
  for (;;) {
    MSB_TRY(Frame f, receive());
    if (f.id != agent::kChannelId) continue;
    if (f.kind == FrameKind::kLayer) {
      auto r = agent::ParseLayerReport(f.payload);
      if (!r.ok()) return Error(ErrorCode::kProtocol, "the image builder: " + r.error().message());
      if (r->index != next || next >= batch.count)
        return Error(ErrorCode::kProtocol, "the image builder reported layer " + std::to_string(r->index) +
                                               " where layer " + std::to_string(next) + " was due");
      size_t global = batch.first + next;
      const std::string& want = req_.layers[global].diff_id;
      if (r->diff_id != want)
        return Error(ErrorCode::kInvalidArgument,
                     LayerName(global) + ": its uncompressed content has diff_id " + r->diff_id +
                         " but the image config says " + want +
                         "; the image is corrupt or was tampered with: pull it again");
      results->push_back(LayerResult{r->diff_id, r->entries, r->bytes});
      ++next;
    } else if (f.kind == FrameKind::kResult) {
      MSB_TRY(agent::ResultMsg res, agent::ParseResultMsg(f.payload));
      if (res.error) return GuestError(batch, *res.error);
      if (next != batch.count)
        return Error(ErrorCode::kProtocol, "the image builder finished after " + std::to_string(next) +
                                               " of " + std::to_string(batch.count) + " layers");
      break;
    } else if (f.kind == FrameKind::kError) {
      auto e = agent::ParseErrorMsg(f.payload);
      return Error(ErrorCode::kProtocol,
                   "the image builder refused the request: " + GuestText(e.ok() ? e->message : f.payload));
    }
  }

  // The guest has unmounted the target; shut it down and wait for QEMU.
  auto stop_deadline = std::min(deadline_, Clock::now() + kShutdownGrace);
  (void)chan.Send(Frame{agent::kChannelId, FrameKind::kShutdown, agent::Encode(agent::Shutdown{1000})},
                  stop_deadline);
  for (;;) {
    auto f = chan.Receive(stop_deadline);
    if (!f.ok()) break;  // closed (QEMU exited) or the grace ran out
  }
  for (;;) {
    if (auto st = qemu.TryWait()) {
      if (st->code != 0) MSB_LOG(kWarn, "unpack") << "builder QEMU ended with " << st->ToString();
      break;
    }
    if (Clock::now() >= stop_deadline) {
      // The result is on the disk already (the guest unmounted it).
      qemu.Kill(SIGKILL);
      qemu.Wait();
      break;
    }
    ::poll(nullptr, 0, 20);
  }
  return OkStatus();
}

Status ValidateRequest(const FlattenRequest& req) {
  if (req.layers.empty()) return Error(ErrorCode::kInvalidArgument, "unpack: an image needs at least one layer");
  if (req.output.empty()) return Error(ErrorCode::kInvalidArgument, "unpack: no output path");
  if (req.vm.kernel.empty() || req.vm.initramfs.empty())
    return Error(ErrorCode::kInvalidArgument, "unpack: the builder VM needs a kernel and an initramfs");
  if (req.vm.accel != "tcg" && req.vm.accel != "kvm")
    return Error(ErrorCode::kInvalidArgument, "unpack: accel must be tcg or kvm, not " + req.vm.accel);
  for (size_t i = 0; i < req.layers.size(); ++i) {
    const UnpackLayerSpec& l = req.layers[i];
    std::string what = "layer " + std::to_string(i) + " (" + l.path + ")";
    if (auto c = oci::ClassifyLayer(l.media_type); !c.ok()) return c.error().Wrap(what);
    MSB_TRY_STATUS(oci::ValidateDigest(l.diff_id, what + " diff_id"));
    struct stat st;
    if (::stat(l.path.c_str(), &st) != 0) return Error::FromErrno(what);
    if (!S_ISREG(st.st_mode)) return Error(ErrorCode::kInvalidArgument, what + " is not a regular file");
    if (static_cast<uint64_t>(st.st_size) != l.size)
      return Error(ErrorCode::kInvalidArgument, what + " has " + std::to_string(st.st_size) +
                                                    " bytes, its descriptor says " + std::to_string(l.size));
    if (l.size == 0) return Error(ErrorCode::kInvalidArgument, what + " is empty");
  }
  struct stat st;
  if (::lstat(req.output.c_str(), &st) == 0)
    return Error(ErrorCode::kAlreadyExists, "unpack: " + req.output + " already exists", EEXIST);
  return OkStatus();
}

}  // namespace

uint64_t EstimateDiskBytes(const std::vector<UnpackLayerSpec>& layers) {
  uint64_t compressed = 0;
  for (const auto& l : layers) compressed += l.size;
  uint64_t bytes = std::max<uint64_t>(64 * kMiB, compressed * 8 + 128 * kMiB);
  return (bytes + kMiB - 1) / kMiB * kMiB;
}

std::chrono::milliseconds UnpackTimeout(const std::vector<UnpackLayerSpec>& layers) {
  uint64_t compressed = 0;
  for (const auto& l : layers) compressed += l.size;
  uint64_t boots = (layers.size() + agent::kMaxUnpackLayers - 1) / agent::kMaxUnpackLayers;
  return std::chrono::milliseconds(boots * 120000 + (compressed / kMiB) * 4000);
}

Result<FlattenResult> FlattenLayers(const FlattenRequest& req) {
  MSB_TRY_STATUS(ValidateRequest(req));
  std::string qemu = req.vm.qemu;
  if (qemu.empty()) {
    MSB_TRY(qemu, vm::FindQemu());
  }
  auto started = Clock::now();
  auto deadline = started + (req.timeout.count() > 0 ? req.timeout : UnpackTimeout(req.layers));
  FlattenResult result;
  result.disk_bytes = req.disk_bytes > 0 ? req.disk_bytes : EstimateDiskBytes(req.layers);

  const std::string tmp = req.output + ".tmp";
  ::unlink(tmp.c_str());  // a stale one from a builder that died
  MSB_TRY_STATUS(storage::CreateSparseExt4(tmp, result.disk_bytes, kDiskLabel));
  FileGuard tmp_guard(tmp);
  WorkDir work;
  MSB_TRY_STATUS(work.Create());

  Builder builder(req, qemu, tmp, work.path(), deadline);
  for (size_t first = 0; first < req.layers.size(); first += agent::kMaxUnpackLayers) {
    Batch batch{first, std::min(agent::kMaxUnpackLayers, req.layers.size() - first)};
    MSB_TRY_STATUS(builder.Run(batch, &result.layers));
    ++result.boots;
  }

  {
    UniqueFd fd(::open(tmp.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd || ::fsync(fd.get()) != 0) return Error::FromErrno("fsync " + tmp);
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, req.output.c_str(), RENAME_NOREPLACE) != 0)
    return Error::FromErrno("publishing " + req.output);
  tmp_guard.Keep();
  std::string dir = req.output.substr(0, req.output.rfind('/') == std::string::npos ? 0 : req.output.rfind('/'));
  if (!dir.empty()) {
    UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d) ::fsync(d.get());
  }
  MSB_LOG(kInfo, "unpack") << "unpacked " << req.layers.size() << " layers into " << req.output << " in "
                           << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count()
                           << " ms (" << result.boots << " builder boots)";
  return result;
}

}  // namespace msb::image
