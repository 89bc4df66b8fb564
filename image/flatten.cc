// The host side of unpacking layers in a builder microVM (flatten.h).
//
// One builder boot handles up to agent::kMaxUnpackLayers layers (microvm's
// virtio-mmio transports run out beyond); more layers take more boots onto
// the same target disk. Per boot: vm::BuilderVm boots QEMU with the target
// disk and the batch's layer blobs and connects its agent port (on every
// early return it kills and reaps QEMU and removes its scratch directory);
// then hello ⇄ hello, unpack → layer* result, and BuilderVm::PowerOff.
// Everything the guest sends is hostile: frames are bounded by FrameChannel,
// bodies validated by the Parse* decoders, the layer index must be the next
// one, and the reported diff_id must equal the expected one, else the unpack
// fails right away.
#include "image/flatten.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "agent/channel.h"
#include "agent/messages.h"
#include "agent/protocol.h"
#include "common/fd.h"
#include "common/log.h"
#include "image/oci.h"
#include "storage/disk.h"
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

std::string LayerSerial(size_t i) { return "msb-layer-" + std::to_string(i); }

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

// Runs the unpack protocol for one batch after another onto one disk.
class Unpacker {
 public:
  Unpacker(const FlattenRequest& req, vm::BuilderVmOptions vm, std::string disk, Clock::time_point deadline)
      : req_(req), vm_(std::move(vm)), disk_(std::move(disk)), deadline_(deadline) {}

  Status Run(const Batch& batch, std::vector<LayerResult>* results);
  int restored() const { return restored_; }

 private:
  std::string LayerName(size_t global) const {
    const UnpackLayerSpec& l = req_.layers[global];
    return "layer " + std::to_string(global) + " (" + (l.digest.empty() ? l.path : l.digest) + ")";
  }
  Error GuestError(const Batch& batch, const std::string& text) const;

  const FlattenRequest& req_;
  vm::BuilderVmOptions vm_;
  std::string disk_;
  Clock::time_point deadline_;
  int restored_ = 0;
};

// "layer N: rest" from the guest (N within the batch) → the request's layer.
Error Unpacker::GuestError(const Batch& batch, const std::string& text) const {
  std::string t = vm::BoundedGuestText(text);
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

Status Unpacker::Run(const Batch& batch, std::vector<LayerResult>* results) {
  vm::BuilderVmBoot boot;
  boot.name = "the image builder VM";
  boot.scratch_prefix = "msb-unpack-";
  boot.deadline = deadline_;
  boot.disks.push_back(vm::VmDisk{disk_, kTargetSerial, false});
  for (size_t i = 0; i < batch.count; ++i)
    boot.disks.push_back(vm::VmDisk{req_.layers[batch.first + i].path, LayerSerial(i), true});
  auto started = Clock::now();
  auto ms_since = [&started] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
  };
  MSB_TRY(vm::BuilderVm builder, vm::BuilderVm::Boot(vm_, boot));
  if (builder.restored()) ++restored_;
  agent::FrameChannel& chan = builder.channel();
  MSB_TRY_STATUS(builder.ExchangeHello("msb-unpack", deadline_));
  MSB_LOG(kDebug, "unpack") << "builder boot " << batch.first << " (" << builder.how() << "): hello after "
                            << ms_since() << " ms";
  agent::UnpackRequest ureq;
  ureq.target_serial = kTargetSerial;
  MSB_TRY(ureq.start, builder.Start());
  for (size_t i = 0; i < batch.count; ++i) {
    const UnpackLayerSpec& l = req_.layers[batch.first + i];
    ureq.layers.push_back({LayerSerial(i), l.size, l.media_type});
  }
  MSB_TRY_STATUS(chan.Send(Frame{agent::kChannelId, FrameKind::kUnpack, agent::Encode(ureq)}, deadline_));

  size_t next = 0;
  for (;;) {
    MSB_TRY(Frame f, builder.Receive(deadline_));
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
      MSB_LOG(kDebug, "unpack") << LayerName(global) << " applied after " << ms_since() << " ms ("
                                << r->entries << " entries, " << r->bytes << " bytes)";
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
      return Error(ErrorCode::kProtocol, "the image builder refused the request: " +
                                             vm::BoundedGuestText(e.ok() ? e->message : f.payload));
    }
  }

  // The guest has unmounted the target: the result is on the disk already.
  MSB_LOG(kDebug, "unpack") << "builder boot " << batch.first << ": result after " << ms_since() << " ms";
  (void)builder.PowerOff(std::min(deadline_, Clock::now() + kShutdownGrace));
  MSB_LOG(kDebug, "unpack") << "builder boot " << batch.first << ": powered off after " << ms_since() << " ms";
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
  // QEMU is looked up once, before any disk is made.
  vm::BuilderVmOptions vm_options = req.vm;
  if (vm_options.qemu.empty()) {
    MSB_TRY(vm_options.qemu, vm::FindQemu());
  }
  auto started = Clock::now();
  auto deadline = started + (req.timeout.count() > 0 ? req.timeout : UnpackTimeout(req.layers));
  FlattenResult result;
  result.disk_bytes = req.disk_bytes > 0 ? req.disk_bytes : EstimateDiskBytes(req.layers);

  const std::string tmp = req.output + ".tmp";
  ::unlink(tmp.c_str());  // a stale one from a builder that died
  MSB_TRY_STATUS(storage::CreateSparseExt4(tmp, result.disk_bytes, kDiskLabel));
  FileGuard tmp_guard(tmp);
  MSB_LOG(kDebug, "unpack") << "empty target disk made after "
                            << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count()
                            << " ms";
  Unpacker unpacker(req, std::move(vm_options), tmp, deadline);
  for (size_t first = 0; first < req.layers.size(); first += agent::kMaxUnpackLayers) {
    Batch batch{first, std::min(agent::kMaxUnpackLayers, req.layers.size() - first)};
    MSB_TRY_STATUS(unpacker.Run(batch, &result.layers));
    ++result.boots;
  }
  result.restored = unpacker.restored();

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
