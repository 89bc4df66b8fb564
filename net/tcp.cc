// TcpEndpoint: see tcp.h for the theory of operation.
#include "net/tcp.h"

#include <algorithm>
#include <cstring>

namespace msb::net {

// --- ByteRing ----------------------------------------------------------------

size_t ByteRing::Append(std::span<const uint8_t> data) {
  size_t n = std::min(data.size(), free());
  if (n == 0) return 0;
  if (size_ + n > buf_.size()) {
    size_t grown = std::min(cap_, std::max({size_ + n, buf_.size() * 2, size_t{4096}}));
    std::vector<uint8_t> next(grown);
    Copy(0, {next.data(), size_});
    buf_ = std::move(next);
    head_ = 0;
  }
  size_t tail = (head_ + size_) % buf_.size();
  size_t first = std::min(n, buf_.size() - tail);
  std::memcpy(buf_.data() + tail, data.data(), first);
  std::memcpy(buf_.data(), data.data() + first, n - first);
  size_ += n;
  return n;
}

size_t ByteRing::Copy(size_t offset, std::span<uint8_t> out) const {
  if (offset >= size_) return 0;
  size_t n = std::min(out.size(), size_ - offset);
  size_t start = (head_ + offset) % buf_.size();
  size_t first = std::min(n, buf_.size() - start);
  std::memcpy(out.data(), buf_.data() + start, first);
  std::memcpy(out.data() + first, buf_.data(), n - first);
  return n;
}

std::span<const uint8_t> ByteRing::Contiguous(size_t offset) const {
  if (offset >= size_) return {};
  size_t start = (head_ + offset) % buf_.size();
  size_t n = std::min(size_ - offset, buf_.size() - start);
  return {buf_.data() + start, n};
}

void ByteRing::Consume(size_t n) {
  n = std::min(n, size_);
  size_ -= n;
  head_ = size_ == 0 ? 0 : (head_ + n) % buf_.size();
  if (size_ == 0 && buf_.size() > kKeepEmpty) std::vector<uint8_t>().swap(buf_);
}

// --- TcpEndpoint -------------------------------------------------------------

TcpEndpoint::TcpEndpoint(TcpParams params, uint32_t iss, Emit emit, ArmTimer arm_timer)
    : params_(params),
      emit_(std::move(emit)),
      arm_timer_(std::move(arm_timer)),
      snd_(params.snd_buf),
      rcv_(params.rcv_buf),
      iss_(iss),
      snd_una_(iss),
      snd_nxt_(iss) {}

uint16_t TcpEndpoint::AdvertisedWindow() {
  size_t free = rcv_.free();
  size_t shift = wscale_ok_ ? kOurWscale : 0;
  size_t w = std::min<size_t>(free >> shift, 65535);
  last_adv_bytes_ = w << shift;
  return static_cast<uint16_t>(w);
}

void TcpEndpoint::SendControl(uint8_t flags, uint32_t seq, bool with_options) {
  TcpHeader h;
  h.seq = seq;
  h.flags = flags;
  if (flags & kTcpAck) h.ack = rcv_nxt_;
  if (flags & kTcpSyn) {
    h.window = static_cast<uint16_t>(std::min<size_t>(rcv_.free(), 65535));
    last_adv_bytes_ = h.window;
  } else if (!(flags & kTcpRst)) {
    h.window = AdvertisedWindow();
  }
  if (with_options) {
    h.options.mss = params_.mss;
    if (state_ == State::kSynSent || wscale_ok_) h.options.wscale = kOurWscale;
  }
  if (flags & kTcpAck) {
    ack_pending_ = false;
    ack_owed_ = 0;
  }
  emit_(h, {});
}

void TcpEndpoint::OnGuestSyn(const TcpHeader& syn) {
  rcv_nxt_ = syn.seq + 1;
  mss_ = std::min<uint16_t>(syn.options.mss.value_or(536), params_.mss);
  if (mss_ < 64) mss_ = 64;
  if (syn.options.wscale) {
    wscale_ok_ = true;
    snd_wscale_ = std::min<uint8_t>(*syn.options.wscale, 14);
  }
  snd_wnd_ = syn.window;
  state_ = State::kSynReceived;
}

void TcpEndpoint::AcceptSyn() {
  if (state_ != State::kSynReceived || snd_nxt_ != iss_) return;
  SendControl(kTcpSyn | kTcpAck, iss_, true);
  snd_nxt_ = iss_ + 1;
  UpdateTimer();
}

void TcpEndpoint::Refuse() {
  TcpHeader h;
  h.flags = kTcpRst | kTcpAck;
  h.ack = rcv_nxt_;
  emit_(h, {});
  state_ = State::kClosed;
  UpdateTimer();
}

void TcpEndpoint::Connect() {
  state_ = State::kSynSent;
  SendControl(kTcpSyn, iss_, true);
  snd_nxt_ = iss_ + 1;
  UpdateTimer();
}

void TcpEndpoint::Abort() {
  if (closed()) return;
  if (state_ == State::kSynReceived && snd_nxt_ == iss_) {
    Refuse();
    return;
  }
  SendControl(kTcpRst | kTcpAck, snd_nxt_);
  state_ = State::kClosed;
  UpdateTimer();
}

size_t TcpEndpoint::Send(std::span<const uint8_t> data) {
  if (SendSpace() == 0) return 0;
  size_t n = snd_.Append(data);
  TrySend();
  UpdateTimer();
  return n;
}

void TcpEndpoint::Shutdown() {
  if (closed() || fin_queued_) return;
  fin_queued_ = true;
  // Before the handshake completes snd_una_ still covers our SYN.
  bool syn_unacked = state_ == State::kSynSent || state_ == State::kSynReceived;
  fin_seq_ = snd_una_ + (syn_unacked ? 1 : 0) + static_cast<uint32_t>(snd_.size());
  TrySend();
  UpdateTimer();
}

void TcpEndpoint::SendRange(uint32_t seq, size_t len, bool fin) {
  scratch_.resize(len);
  size_t got = snd_.Copy(seq - snd_una_, scratch_);
  scratch_.resize(got);
  TcpHeader h;
  h.seq = seq;
  h.ack = rcv_nxt_;
  h.flags = kTcpAck | (got ? kTcpPsh : 0) | (fin ? kTcpFin : 0);
  h.window = AdvertisedWindow();
  ack_pending_ = false;
  ack_owed_ = 0;
  emit_(h, scratch_);
}

void TcpEndpoint::TrySend() {
  if (state_ != State::kEstablished) return;
  for (;;) {
    if (fin_queued_ && SeqGt(snd_nxt_, fin_seq_)) return;  // everything and the FIN is out
    uint32_t in_flight = snd_nxt_ - snd_una_;
    size_t off = in_flight;
    size_t unsent = snd_.size() > off ? snd_.size() - off : 0;
    size_t room = snd_wnd_ > in_flight ? snd_wnd_ - in_flight : 0;
    size_t len = std::min({unsent, room, static_cast<size_t>(mss_)});
    bool fin = fin_queued_ && len == unsent;
    if (len == 0 && !fin) return;
    SendRange(snd_nxt_, len, fin);
    snd_nxt_ += static_cast<uint32_t>(len) + (fin ? 1 : 0);
    if (fin) return;
  }
}

bool TcpEndpoint::HasUnsent() const {
  if (state_ != State::kEstablished) return false;
  if (fin_queued_ && SeqGt(snd_nxt_, fin_seq_)) return false;
  return snd_.size() > static_cast<size_t>(snd_nxt_ - snd_una_) || fin_queued_;
}

void TcpEndpoint::UpdateTimer() {
  bool want = !closed() && (snd_nxt_ != snd_una_ || (snd_wnd_ == 0 && HasUnsent()));
  if (want && !timer_armed_) {
    arm_timer_(rto_);
    timer_armed_ = true;
  } else if (!want && timer_armed_) {
    arm_timer_(std::chrono::milliseconds(0));
    timer_armed_ = false;
  }
}

uint32_t TcpEndpoint::CheckClosed() {
  if (!closed() && guest_fin_ && fin_acked_) {
    state_ = State::kClosed;
    UpdateTimer();
    return kClosedEvent;
  }
  return 0;
}

uint32_t TcpEndpoint::OnTimer() {
  timer_armed_ = false;
  if (closed()) return 0;
  if (snd_nxt_ != snd_una_) {
    if (++retries_ > kMaxRetries) {
      SendControl(kTcpRst | kTcpAck, snd_nxt_);
      state_ = State::kClosed;
      return kReset;
    }
    rto_ = std::min(rto_ * 2, kRtoMax);
    if (state_ == State::kSynSent) {
      SendControl(kTcpSyn, iss_, true);
    } else if (state_ == State::kSynReceived) {
      SendControl(kTcpSyn | kTcpAck, iss_, true);
    } else {
      snd_nxt_ = snd_una_;  // go back N
      TrySend();
      if (snd_nxt_ == snd_una_ && HasUnsent()) {
        // The window closed under data in flight: probe with one byte.
        bool fin = snd_.size() == 0;
        SendRange(snd_nxt_, fin ? 0 : 1, fin);
        snd_nxt_ += 1;
      }
    }
  } else if (snd_wnd_ == 0 && HasUnsent()) {
    // Persist: one byte past the zero window.
    bool fin = snd_.size() == 0;
    SendRange(snd_nxt_, fin ? 0 : 1, fin);
    snd_nxt_ += 1;
    rto_ = std::min(rto_ * 2, kRtoMax);
  }
  UpdateTimer();
  return 0;
}

uint32_t TcpEndpoint::OnSegment(const TcpHeader& h, std::span<const uint8_t> payload) {
  if (closed()) return 0;
  if (h.flags & kTcpRst) {
    bool ok;
    if (state_ == State::kSynSent) {
      ok = (h.flags & kTcpAck) && h.ack == snd_nxt_;
    } else {
      ok = SeqGe(h.seq, rcv_nxt_) && SeqLt(h.seq, rcv_nxt_ + std::max<uint32_t>(rcv_.free(), 1));
    }
    if (!ok) return 0;
    state_ = State::kClosed;
    UpdateTimer();
    return kReset;
  }
  if (state_ == State::kSynSent) {
    if ((h.flags & kTcpAck) && h.ack != snd_nxt_) {
      TcpHeader r;
      r.seq = h.ack;
      r.flags = kTcpRst;
      emit_(r, {});
      return 0;
    }
    if ((h.flags & (kTcpSyn | kTcpAck)) != (kTcpSyn | kTcpAck)) return 0;
    rcv_nxt_ = h.seq + 1;
    mss_ = std::max<uint16_t>(64, std::min<uint16_t>(h.options.mss.value_or(536), params_.mss));
    if (h.options.wscale) {
      wscale_ok_ = true;
      snd_wscale_ = std::min<uint8_t>(*h.options.wscale, 14);
    }
    snd_wnd_ = h.window;  // unscaled in a SYN
    snd_una_ = h.ack;
    state_ = State::kEstablished;
    rto_ = kRtoInitial;
    retries_ = 0;
    timer_armed_ = false;
    SendAck();
    TrySend();
    UpdateTimer();
    return kEstablishedEvent | kSendSpace;
  }
  if (h.flags & kTcpSyn) {
    if (state_ == State::kSynReceived && h.seq + 1 == rcv_nxt_ && snd_nxt_ != iss_) {
      SendControl(kTcpSyn | kTcpAck, iss_, true);  // our SYN-ACK was lost
    } else if (state_ != State::kSynReceived) {
      SendAck();  // challenge ACK (RFC 5961)
    }
    return 0;
  }
  if (!(h.flags & kTcpAck)) return 0;

  uint32_t events = 0;
  if (state_ == State::kSynReceived) {
    if (snd_nxt_ == iss_) return 0;  // SYN-ACK not sent yet
    if (h.ack != iss_ + 1) {
      TcpHeader r;
      r.seq = h.ack;
      r.flags = kTcpRst;
      emit_(r, {});
      return 0;
    }
    // The SYN-ACK is acknowledged: its sequence number is not data.
    snd_una_ = iss_ + 1;
    state_ = State::kEstablished;
    events |= kEstablishedEvent;
    retries_ = 0;
    rto_ = kRtoInitial;
    timer_armed_ = false;
    arm_timer_(std::chrono::milliseconds(0));
  }

  // Acknowledgement.
  uint32_t window = static_cast<uint32_t>(h.window) << (wscale_ok_ ? snd_wscale_ : 0);
  if (SeqGt(h.ack, snd_nxt_)) {
    SendAck();  // acknowledges something never sent
    return events;
  }
  if (SeqGt(h.ack, snd_una_)) {
    uint32_t data_end = h.ack;
    if (fin_queued_ && SeqGt(h.ack, fin_seq_)) {
      data_end = fin_seq_;
      fin_acked_ = true;
    }
    size_t freed = data_end - snd_una_;
    snd_.Consume(freed);
    snd_una_ = h.ack;
    dup_acks_ = 0;
    retries_ = 0;
    rto_ = kRtoInitial;
    timer_armed_ = false;  // restart the RTO from now
    arm_timer_(std::chrono::milliseconds(0));
    if (freed > 0 && !fin_queued_) events |= kSendSpace;
  } else if (h.ack == snd_una_ && payload.empty() && !(h.flags & kTcpFin) &&
             snd_nxt_ != snd_una_ && window == snd_wnd_) {
    if (++dup_acks_ == 3) {
      size_t len = std::min<size_t>(mss_, snd_nxt_ - snd_una_);
      bool fin = fin_queued_ && snd_una_ + len == fin_seq_ + 1;
      SendRange(snd_una_, fin ? len - 1 : len, fin);
    }
  }
  if (window == 0 && snd_wnd_ == 0) retries_ = 0;  // a live guest answering probes
  snd_wnd_ = window;

  // Data and FIN.
  bool need_ack = false;
  bool ack_now = !params_.delay_acks;
  if (!payload.empty() || (h.flags & kTcpFin)) {
    need_ack = true;
    uint32_t seq = h.seq;
    bool fin = h.flags & kTcpFin;
    if (!guest_fin_) {
      if (SeqLt(seq, rcv_nxt_)) {
        size_t skip = rcv_nxt_ - seq;
        ack_now = true;  // a retransmission: the guest is missing our ACK
        if (skip > payload.size()) {
          payload = {};
          fin = false;  // a FIN before rcv_nxt_ cannot be new
        } else {
          payload = payload.subspan(skip);
        }
        seq = rcv_nxt_;
      }
      if (seq != rcv_nxt_) ack_now = true;  // a gap: duplicate ACK at once
      if (seq == rcv_nxt_) {
        size_t n = rcv_.Append(payload);
        rcv_nxt_ += static_cast<uint32_t>(n);
        ack_owed_ += n;
        if (n > 0) events |= kData;
        if (n < payload.size() || fin || ack_owed_ >= 2u * mss_ || rcv_.free() < 2u * mss_) ack_now = true;
        if (fin && n == payload.size()) {
          rcv_nxt_ += 1;
          guest_fin_ = true;
          events |= kGuestFin;
        }
      }
    }
  }
  if (need_ack) ack_pending_ = true;
  TrySend();  // a data segment carries the ACK and clears ack_pending_
  if (ack_pending_) {
    if (ack_now || guest_fin_) {
      SendAck();
    } else {
      events |= kAckDelayed;
    }
  }
  UpdateTimer();
  return events | CheckClosed();
}

void TcpEndpoint::FlushAck() {
  if (ack_pending_ && !closed()) SendAck();
}

uint32_t TcpEndpoint::ConsumeRecv(size_t n) {
  rcv_.Consume(n);
  if (state_ == State::kEstablished && !guest_fin_) {
    size_t shift = wscale_ok_ ? kOurWscale : 0;
    size_t now = std::min<size_t>(rcv_.free() >> shift, 65535) << shift;
    if (now >= last_adv_bytes_ + mss_ || (last_adv_bytes_ == 0 && now > 0)) SendAck();
  }
  return 0;
}

}  // namespace msb::net
