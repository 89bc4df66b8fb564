// The host side of exporting snapshot layers in a builder microVM
// (layer_export.h).
//
// One boot: vm::BuilderVm with, per layer i, the layer disk (read-only,
// serial msb-layer-<i>) and a sparse output file (msb-out-<i>); then hello ⇄
// hello, export → exported* result, and BuilderVm::PowerOff. Everything the
// guest sends is hostile: frames are bounded by FrameChannel, bodies
// validated by the Parse* decoders, the layer index must be the next one and
// the byte count must fit the output disk. The tar is then only cut to that
// length and hashed, never read as a tar.
#include "image/layer_export.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "agent/channel.h"
#include "agent/messages.h"
#include "agent/protocol.h"
#include "common/fd.h"
#include "common/sha256.h"
#include "vm/guest_text.h"
#include "vm/spec.h"

namespace msb::image {
namespace {

using agent::Clock;
using agent::Frame;
using agent::FrameKind;
constexpr uint64_t kMiB = 1ull << 20;
constexpr auto kShutdownGrace = std::chrono::seconds(20);

std::string LayerSerial(size_t i) { return "msb-layer-" + std::to_string(i); }
std::string OutputSerial(size_t i) { return "msb-out-" + std::to_string(i); }

// Removes the files unless Keep() was called.
class FilesGuard {
 public:
  ~FilesGuard() {
    for (const auto& p : paths_) ::unlink(p.c_str());
  }
  void Add(const std::string& p) { paths_.push_back(p); }
  void Keep() { paths_.clear(); }

 private:
  std::vector<std::string> paths_;
};

Result<std::string> HashFile(const std::string& path, uint64_t size) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::FromErrno("opening " + path);
  Sha256 h;
  std::vector<char> buf(1 << 20);
  uint64_t left = size;
  while (left > 0) {
    ssize_t n = ::read(fd.get(), buf.data(), std::min<uint64_t>(buf.size(), left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Error::FromErrno("reading " + path);
    h.Update(buf.data(), static_cast<size_t>(n));
    left -= static_cast<uint64_t>(n);
  }
  return "sha256:" + h.HexFinal();
}

}  // namespace

uint64_t ExportDiskBytes(uint64_t layer_bytes) {
  uint64_t bytes = layer_bytes * 2 + 64 * kMiB;
  return (bytes + kMiB - 1) / kMiB * kMiB;
}

Result<std::vector<ExportedLayer>> ExportLayers(const LayerExportRequest& req) {
  const size_t n = req.layer_disks.size();
  if (n == 0 || n > agent::kMaxExportLayers)
    return Error(ErrorCode::kInvalidArgument, "export: 1 to " + std::to_string(agent::kMaxExportLayers) +
                                                  " layers, not " + std::to_string(n));
  if (req.vm.kernel.empty() || req.vm.initramfs.empty())
    return Error(ErrorCode::kInvalidArgument, "export: the builder VM needs a kernel and an initramfs");
  uint64_t total = 0;
  std::vector<uint64_t> limits;
  for (const auto& d : req.layer_disks) {
    struct stat st{};
    if (::stat(d.c_str(), &st) != 0) return Error::FromErrno("export: layer disk " + d);
    if (!S_ISREG(st.st_mode)) return Error(ErrorCode::kInvalidArgument, "export: " + d + " is not a regular file");
    total += static_cast<uint64_t>(st.st_size);
    limits.push_back(ExportDiskBytes(static_cast<uint64_t>(st.st_size)));
  }
  auto timeout = req.timeout.count() > 0 ? req.timeout
                                         : std::chrono::milliseconds(120000 + (total / kMiB) * 4000);
  auto deadline = Clock::now() + timeout;

  FilesGuard guard;
  vm::BuilderVmBoot boot;
  boot.name = "the export builder VM";
  boot.scratch_prefix = "msb-export-";
  boot.deadline = deadline;
  std::vector<ExportedLayer> out(n);
  for (size_t i = 0; i < n; ++i) {
    out[i].path = req.work_dir + "/layer-" + std::to_string(i) + ".tar";
    UniqueFd fd(::open(out[i].path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) return Error::FromErrno("export: creating " + out[i].path);
    guard.Add(out[i].path);
    if (::ftruncate(fd.get(), static_cast<off_t>(limits[i])) != 0)
      return Error::FromErrno("export: sizing " + out[i].path);
    boot.disks.push_back(vm::VmDisk{req.layer_disks[i], LayerSerial(i), true});
    boot.disks.push_back(vm::VmDisk{out[i].path, OutputSerial(i), false});
  }

  vm::BuilderVmOptions options = req.vm;
  if (options.qemu.empty()) {
    MSB_TRY(options.qemu, vm::FindQemu());
  }
  MSB_TRY(vm::BuilderVm builder, vm::BuilderVm::Boot(options, boot));
  agent::FrameChannel& chan = builder.channel();
  MSB_TRY_STATUS(builder.ExchangeHello("msb-export", deadline));
  agent::ExportRequest ereq;
  for (size_t i = 0; i < n; ++i) ereq.layers.push_back({LayerSerial(i), OutputSerial(i)});
  MSB_TRY(ereq.start, builder.Start());
  MSB_TRY_STATUS(chan.Send(Frame{agent::kChannelId, FrameKind::kExport, agent::Encode(ereq)}, deadline));

  size_t next = 0;
  for (;;) {
    MSB_TRY(Frame f, builder.Receive(deadline));
    if (f.id != agent::kChannelId) continue;
    if (f.kind == FrameKind::kExported) {
      auto r = agent::ParseExportReport(f.payload);
      if (!r.ok()) return Error(ErrorCode::kProtocol, "the export builder: " + r.error().message());
      if (r->index != next || next >= n)
        return Error(ErrorCode::kProtocol, "the export builder reported layer " + std::to_string(r->index) +
                                               " where layer " + std::to_string(next) + " was due");
      if (r->bytes == 0 || r->bytes > limits[next])
        return Error(ErrorCode::kProtocol, "the export builder reported " + std::to_string(r->bytes) +
                                               " bytes for layer " + std::to_string(next) + ", whose output disk has " +
                                               std::to_string(limits[next]));
      out[next].size = r->bytes;
      out[next].entries = r->entries;
      ++next;
    } else if (f.kind == FrameKind::kResult) {
      MSB_TRY(agent::ResultMsg res, agent::ParseResultMsg(f.payload));
      if (res.error) {
        // The guest's text names the layer ("layer I: ...").
        return Error(ErrorCode::kInvalidArgument, "cannot export " + req.layer_disks[std::min(next, n - 1)] + ": " +
                                                      vm::BoundedGuestText(*res.error));
      }
      if (next != n)
        return Error(ErrorCode::kProtocol, "the export builder finished after " + std::to_string(next) + " of " +
                                               std::to_string(n) + " layers");
      break;
    } else if (f.kind == FrameKind::kError) {
      auto e = agent::ParseErrorMsg(f.payload);
      return Error(ErrorCode::kProtocol, "the export builder refused the request: " +
                                             vm::BoundedGuestText(e.ok() ? e->message : f.payload));
    }
  }
  (void)builder.PowerOff(std::min(deadline, Clock::now() + kShutdownGrace));

  for (auto& l : out) {
    if (::truncate(l.path.c_str(), static_cast<off_t>(l.size)) != 0) return Error::FromErrno("export: cutting " + l.path);
    MSB_TRY(l.digest, HashFile(l.path, l.size));
  }
  guard.Keep();
  return out;
}

}  // namespace msb::image
