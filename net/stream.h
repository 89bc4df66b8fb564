// The framing of QEMU's stream netdev (`-netdev stream`): each Ethernet frame
// travels as a 4-byte big-endian length followed by the frame. StreamDecoder
// splits a byte stream into frames (pure, for tests and the fuzzer);
// StreamLink runs one connected socket on the Dispatcher. Not a NIC model: a
// frame that does not fit the bounded output queue is dropped, as a full NIC
// ring would drop it, and TCP retransmission recovers.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/dispatcher.h"
#include "common/fd.h"
#include "common/result.h"

namespace msb::net {

inline constexpr size_t kMaxStreamFrame = 65535 + 14;  // bigger lengths end the link
inline constexpr size_t kMaxStreamQueue = 8 << 20;     // bytes queued towards QEMU

class StreamDecoder {
 public:
  using OnFrame = std::function<void(std::span<const uint8_t>)>;
  // Appends bytes and calls on_frame for each complete frame. An impossible
  // length (0 or above kMaxStreamFrame) is an error; the decoder is then dead.
  Status Feed(std::span<const uint8_t> bytes, const OnFrame& on_frame);

 private:
  std::vector<uint8_t> buf_;
  bool failed_ = false;
};

// Appends the 4-byte header and the frame to out.
void EncodeStreamFrame(std::span<const uint8_t> frame, std::vector<uint8_t>& out);

class StreamLink {
 public:
  using OnFrame = StreamDecoder::OnFrame;
  using OnClose = std::function<void(Status)>;

  // Takes ownership of fd (a connected stream socket). on_close runs once when
  // the peer closes, a read fails or the framing breaks; the link is idle
  // afterwards. dispatcher must outlive the link.
  StreamLink(Dispatcher& dispatcher, UniqueFd fd, OnFrame on_frame, OnClose on_close);
  ~StreamLink();

  void Send(std::span<const uint8_t> frame);
  uint64_t frames_dropped() const { return dropped_; }
  bool open() const { return fd_.valid(); }

 private:
  void OnReady(short flags);
  void Flush();
  void Close(Status why);
  void Rewatch();

  Dispatcher& dispatcher_;
  UniqueFd fd_;
  OnFrame on_frame_;
  OnClose on_close_;
  EventHandle watch_;
  bool watching_write_ = false;
  StreamDecoder decoder_;
  std::vector<uint8_t> in_;
  std::vector<uint8_t> out_;
  size_t out_off_ = 0;
  uint64_t dropped_ = 0;
};

}  // namespace msb::net
