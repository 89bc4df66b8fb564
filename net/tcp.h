// TcpEndpoint: the guest-facing end of one TCP connection terminated in the
// stack. A pure state machine: segments in (OnSegment), segments out (the emit
// callback), a retransmission timer the owner arms (the timer callback) and
// fires (OnTimer), and byte buffers towards and from the owner. It knows
// nothing of host sockets, addresses or the event loop: net/stack_tcp.cc glues
// it to a host socket; tests/net/tcp_test.cc drives it with a fake timer.
// Not a general TCP: no SACK, no timestamps, no out-of-order queue, no
// congestion control (the link to the guest is an in-memory stream).
//
// Theory of operation
//
// States (State): kSynSent (we sent SYN to the guest: inbound connections),
// kSynReceived (the guest's SYN was accepted and our SYN-ACK sent), kEstablished
// (data both ways; half-closes are flags, not states), kClosed (both FINs
// exchanged and acknowledged, or a reset). Half-close is two flags:
// guest_fin_ (the guest's FIN has been received: no more data from the guest)
// and fin_queued_/fin_sent_ (the owner called Shutdown(): a FIN follows the
// last queued byte; once the guest acknowledged it, fin_acked_).
//
// Host → guest (the send side): Send() appends to snd_ (bounded by
// TcpParams::snd_buf, SendSpace() says how much fits). snd_ holds the bytes
// from snd_una_ on; bytes [snd_una_, snd_nxt_) are in flight. TrySend()
// transmits while in-flight < snd_wnd_ (the guest's window, scaled by the
// guest's shift) in segments of at most mss_. An ACK that advances snd_una_
// frees buffer space (event kSendSpace) so the owner reads more from the host
// socket; when snd_ is full the owner stops reading the host socket: that is
// the flow control towards the host peer.
//
// Guest → host (the receive side): in-order data at rcv_nxt_ is appended to
// rcv_ (bounded by TcpParams::rcv_buf); the advertised window is the free space
// in rcv_ (shifted by kOurWscale). Data beyond the window is trimmed,
// out-of-order data dropped with a duplicate ACK. The owner drains rcv_ into
// the host socket with PeekRecv/ConsumeRecv; when a slow host peer leaves rcv_
// full the window advertised to the guest shrinks to zero, and ConsumeRecv
// sends a window update once the window reopens by at least one MSS.
//
// ACKs: every data segment from the guest is acknowledged at once, unless
// TcpParams::delay_acks: then in-order data is acknowledged at once only when
// two full segments are owed (or on a FIN, a gap, a full buffer) and otherwise
// when the owner calls FlushAck() after a short delay (kAckDelayed).
//
// Timer: one timer per endpoint. With bytes or SYN/FIN in flight it is the
// retransmission timeout: rto_ starts at kRtoInitial, doubles on each expiry
// (go-back-N from snd_una_) up to kRtoMax, and resets when an ACK makes
// progress; after kMaxRetries expiries the connection is reset (kReset). With
// nothing in flight but data waiting on a zero window it is the persist timer:
// on expiry one byte is sent past the window as a probe. Three duplicate ACKs
// retransmit the first unacknowledged segment at once.
//
// Events are returned as a bitmask from OnSegment/OnTimer/ConsumeRecv so the
// owner reacts after the endpoint's state is consistent (no re-entrancy).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "net/packet.h"

namespace msb::net {

// Sequence-space comparisons (RFC 793 modulo 2^32).
inline bool SeqLt(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) < 0; }
inline bool SeqLe(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) <= 0; }
inline bool SeqGt(uint32_t a, uint32_t b) { return SeqLt(b, a); }
inline bool SeqGe(uint32_t a, uint32_t b) { return SeqLe(b, a); }

// A byte FIFO in one growable circular buffer, bounded by a capacity.
class ByteRing {
 public:
  explicit ByteRing(size_t capacity) : cap_(capacity) {}
  size_t size() const { return size_; }
  size_t capacity() const { return cap_; }
  size_t free() const { return cap_ - size_; }
  // Bytes of memory held (grows by doubling; an emptied ring of more than
  // kKeepEmpty gives its memory back).
  size_t allocated() const { return buf_.capacity(); }
  static constexpr size_t kKeepEmpty = 16 * 1024;
  // Appends as much of data as fits; returns the count.
  size_t Append(std::span<const uint8_t> data);
  // Copies up to out.size() bytes starting at offset into out; returns the count.
  size_t Copy(size_t offset, std::span<uint8_t> out) const;
  // The first contiguous readable run starting at offset.
  std::span<const uint8_t> Contiguous(size_t offset = 0) const;
  void Consume(size_t n);

 private:
  std::vector<uint8_t> buf_;
  size_t cap_;
  size_t head_ = 0;
  size_t size_ = 0;
};

struct TcpParams {
  uint16_t mss = 1460;        // what we accept from the guest (MTU − headers)
  size_t snd_buf = 512 * 1024;
  size_t rcv_buf = 512 * 1024;
  // Delayed ACKs: in-order data is acknowledged at once only every second
  // full segment; otherwise OnSegment returns kAckDelayed and the owner calls
  // FlushAck() a little later. The guest's Nagle then coalesces small writes.
  bool delay_acks = false;
};

class TcpEndpoint {
 public:
  enum class State : int { kSynSent = 0, kSynReceived = 1, kEstablished = 2, kClosed = 3 };
  // Event bits.
  static constexpr uint32_t kEstablishedEvent = 1u << 0;  // handshake completed
  static constexpr uint32_t kData = 1u << 1;              // new bytes in the receive buffer
  static constexpr uint32_t kGuestFin = 1u << 2;          // the guest will send no more
  static constexpr uint32_t kSendSpace = 1u << 3;         // the send buffer drained some
  static constexpr uint32_t kReset = 1u << 4;             // reset by the guest or timed out
  static constexpr uint32_t kClosedEvent = 1u << 5;       // both directions finished
  static constexpr uint32_t kAckDelayed = 1u << 6;        // call FlushAck() soon

  static constexpr uint8_t kOurWscale = 7;
  static constexpr std::chrono::milliseconds kRtoInitial{200};
  static constexpr std::chrono::milliseconds kRtoMax{8000};
  static constexpr int kMaxRetries = 8;

  // emit: a segment to the guest (ports and addresses are the owner's).
  // arm_timer: (re)arm the endpoint's one timer; 0 disarms.
  using Emit = std::function<void(const TcpHeader&, std::span<const uint8_t> payload)>;
  using ArmTimer = std::function<void(std::chrono::milliseconds)>;

  TcpEndpoint(TcpParams params, uint32_t iss, Emit emit, ArmTimer arm_timer);

  // Passive open: the guest's SYN. Records its options; replies nothing until
  // AcceptSyn() (SYN-ACK) or Refuse() (RST).
  void OnGuestSyn(const TcpHeader& syn);
  void AcceptSyn();
  void Refuse();
  // Active open: sends SYN to the guest.
  void Connect();

  uint32_t OnSegment(const TcpHeader& h, std::span<const uint8_t> payload);
  uint32_t OnTimer();

  // Host → guest.
  size_t SendSpace() const { return closed() || fin_queued_ ? 0 : snd_.free(); }
  // Memory the endpoint's buffers hold now (send and receive rings, the
  // segment scratch buffer).
  size_t BufferBytes() const { return snd_.allocated() + rcv_.allocated() + scratch_.capacity(); }
  size_t Send(std::span<const uint8_t> data);  // returns bytes queued
  void Shutdown();                             // FIN after the queued data
  void Abort();                                // RST now; state kClosed
  // Guest → host.
  size_t RecvSize() const { return rcv_.size(); }
  std::span<const uint8_t> PeekRecv() const { return rcv_.Contiguous(); }
  uint32_t ConsumeRecv(size_t n);
  // Sends the ACK that kAckDelayed postponed, if still owed.
  void FlushAck();

  State state() const { return state_; }
  bool closed() const { return state_ == State::kClosed; }
  bool guest_fin() const { return guest_fin_; }
  bool fin_acked() const { return fin_acked_; }
  size_t unacked() const { return snd_nxt_ - snd_una_; }
  uint32_t snd_una() const { return snd_una_; }
  uint32_t snd_nxt() const { return snd_nxt_; }
  uint32_t rcv_nxt() const { return rcv_nxt_; }
  int retries() const { return retries_; }

 private:
  uint16_t AdvertisedWindow();  // records last_adv_bytes_
  bool HasUnsent() const;
  void SendControl(uint8_t flags, uint32_t seq, bool with_options = false);
  void SendAck() { SendControl(kTcpAck, snd_nxt_); }
  void TrySend();
  void SendRange(uint32_t seq, size_t len, bool fin);
  void UpdateTimer();
  uint32_t CheckClosed();

  TcpParams params_;
  Emit emit_;
  ArmTimer arm_timer_;
  State state_ = State::kClosed;
  ByteRing snd_;
  ByteRing rcv_;
  uint32_t iss_ = 0;
  uint32_t snd_una_ = 0, snd_nxt_ = 0;
  uint32_t snd_wnd_ = 0;
  uint32_t rcv_nxt_ = 0;
  uint16_t mss_ = 536;  // segment size towards the guest
  uint8_t snd_wscale_ = 0;  // the guest's shift
  bool wscale_ok_ = false;
  bool guest_fin_ = false;
  bool fin_queued_ = false, fin_sent_ = false, fin_acked_ = false;
  uint32_t fin_seq_ = 0;     // sequence number of our FIN once queued
  size_t last_adv_bytes_ = 0;
  bool ack_pending_ = false;
  size_t ack_owed_ = 0;  // in-order bytes received since our last ACK
  int dup_acks_ = 0;
  int retries_ = 0;
  std::chrono::milliseconds rto_ = kRtoInitial;
  bool timer_armed_ = false;
  std::vector<uint8_t> scratch_;
};

}  // namespace msb::net
