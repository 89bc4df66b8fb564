// Frame encoding and the incremental reader (see frame.h and
// docs/agent-protocol.md for the byte layout).
#include "agent/frame.h"

#include "common/result.h"

namespace msb::agent {
namespace {

uint32_t LoadBe32(const char* p) {
  auto b = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

void StoreBe32(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>(v >> 24));
  out.push_back(static_cast<char>(v >> 16));
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}

}  // namespace

void AppendFrame(std::string& out, uint32_t id, FrameKind kind, std::string_view payload) {
  MSB_CHECK(payload.size() <= kMaxPayload, "frame payload above kMaxPayload");
  out.reserve(out.size() + kHeaderSize + payload.size());
  StoreBe32(out, static_cast<uint32_t>(payload.size()));
  StoreBe32(out, id);
  out.push_back(static_cast<char>(kind));
  out.append(payload);
}

std::string EncodeFrame(const Frame& frame) {
  std::string out;
  AppendFrame(out, frame.id, frame.kind, frame.payload);
  return out;
}

void FrameReader::Feed(std::string_view bytes) {
  if (poisoned_) return;
  // Compact before growing so the buffer holds only unconsumed bytes.
  if (pos_ > 0 && (pos_ >= buf_.size() / 2 || buf_.size() - pos_ + bytes.size() > buf_.capacity())) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  buf_.append(bytes);
}

size_t FrameReader::wanted() const {
  size_t have = buffered();
  if (have < kHeaderSize) return kHeaderSize - have;
  uint32_t len = LoadBe32(buf_.data() + pos_);
  if (len > kMaxPayload) return 0;
  size_t total = kHeaderSize + len;
  return have >= total ? 0 : total - have;
}

Result<std::optional<Frame>> FrameReader::Next() {
  if (poisoned_) return Error(ErrorCode::kProtocol, poison_message_);
  size_t have = buffered();
  if (have < kHeaderSize) return std::optional<Frame>();
  const char* p = buf_.data() + pos_;
  uint32_t len = LoadBe32(p);
  if (len > kMaxPayload) {
    poisoned_ = true;
    poison_message_ = "agent frame declares a " + std::to_string(len) +
                      "-byte payload, above the limit of " + std::to_string(kMaxPayload) +
                      " bytes; closing the channel";
    buf_.clear();
    pos_ = 0;
    return Error(ErrorCode::kProtocol, poison_message_);
  }
  if (have < kHeaderSize + len) return std::optional<Frame>();
  Frame f;
  f.id = LoadBe32(p + 4);
  f.kind = static_cast<FrameKind>(static_cast<uint8_t>(p[8]));
  f.payload.assign(p + kHeaderSize, len);
  pos_ += kHeaderSize + len;
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  }
  return std::optional<Frame>(std::move(f));
}

}  // namespace msb::agent
