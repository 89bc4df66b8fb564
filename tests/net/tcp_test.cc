// TcpEndpoint driven segment by segment with a capturing emit and a fake
// timer: handshakes, windows both ways, retransmission, half-close, resets.
#include "net/tcp.h"

#include <gtest/gtest.h>

#include <deque>
#include <string>

namespace msb::net {
namespace {

struct Seg {
  TcpHeader h;
  std::string data;
};

class TcpTest : public ::testing::Test {
 protected:
  void Make(uint32_t iss = 1000, TcpParams p = TcpParams{}) {
    ep_ = std::make_unique<TcpEndpoint>(
        p, iss,
        [this](const TcpHeader& h, std::span<const uint8_t> d) {
          out_.push_back(Seg{h, std::string(d.begin(), d.end())});
        },
        [this](std::chrono::milliseconds ms) { timer_ = ms; });
  }
  Seg Pop() {
    EXPECT_FALSE(out_.empty());
    if (out_.empty()) return {};
    Seg s = out_.front();
    out_.pop_front();
    return s;
  }
  TcpHeader G(uint8_t flags, uint32_t seq, uint32_t ack, uint16_t window = 65535) {
    TcpHeader h;
    h.flags = flags;
    h.seq = seq;
    h.ack = ack;
    h.window = window;
    return h;
  }
  uint32_t Data(uint32_t seq, uint32_t ack, const std::string& s, uint8_t extra = 0, uint16_t window = 65535) {
    return ep_->OnSegment(G(kTcpAck | kTcpPsh | extra, seq, ack, window),
                          {reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  }
  std::string Recv() {
    std::string s;
    while (ep_->RecvSize() > 0) {
      auto p = ep_->PeekRecv();
      s.append(p.begin(), p.end());
      ep_->ConsumeRecv(p.size());
    }
    return s;
  }
  // Passive handshake; guest ISN 5000, wscale 0 (window in bytes).
  void Establish(uint32_t iss = 1000, uint16_t guest_window = 65535, TcpParams p = TcpParams{}) {
    Make(iss, p);
    TcpHeader syn = G(kTcpSyn, 5000, 0, guest_window);
    syn.options.mss = 1000;
    ep_->OnGuestSyn(syn);
    EXPECT_TRUE(out_.empty());
    ep_->AcceptSyn();
    Seg sa = Pop();
    EXPECT_EQ(sa.h.flags, kTcpSyn | kTcpAck);
    EXPECT_EQ(sa.h.seq, iss);
    EXPECT_EQ(sa.h.ack, 5001u);
    EXPECT_TRUE(sa.h.options.mss.has_value());
    EXPECT_FALSE(sa.h.options.wscale.has_value());  // the guest offered none
    uint32_t ev = ep_->OnSegment(G(kTcpAck, 5001, iss + 1, guest_window), {});
    EXPECT_TRUE(ev & TcpEndpoint::kEstablishedEvent);
    EXPECT_EQ(ep_->state(), TcpEndpoint::State::kEstablished);
  }
  std::unique_ptr<TcpEndpoint> ep_;
  std::deque<Seg> out_;
  std::chrono::milliseconds timer_{0};
};

TEST_F(TcpTest, RefusedSynGetsRstAck) {
  Make();
  ep_->OnGuestSyn(G(kTcpSyn, 77, 0));
  ep_->Refuse();
  Seg r = Pop();
  EXPECT_EQ(r.h.flags, kTcpRst | kTcpAck);
  EXPECT_EQ(r.h.ack, 78u);
  EXPECT_TRUE(ep_->closed());
}

TEST_F(TcpTest, GuestDataIsAckedAndDelivered) {
  Establish();
  uint32_t ev = Data(5001, 1001, "hello");
  EXPECT_TRUE(ev & TcpEndpoint::kData);
  Seg a = Pop();
  EXPECT_EQ(a.h.ack, 5006u);
  EXPECT_EQ(Recv(), "hello");
  // A retransmitted overlap is trimmed, a gap is dropped with a duplicate ACK.
  Data(5003, 1001, "llo world");
  EXPECT_EQ(Pop().h.ack, 5012u);
  Data(6000, 1001, "far");
  EXPECT_EQ(Pop().h.ack, 5012u);
  EXPECT_EQ(Recv(), " world");
}

TEST_F(TcpTest, SendRespectsMssAndGuestWindow) {
  Establish(1000, 2500);
  std::string big(5000, 'x');
  EXPECT_EQ(ep_->Send({reinterpret_cast<const uint8_t*>(big.data()), big.size()}), 5000u);
  // mss 1000 from the guest's SYN, window 2500: 1000 + 1000 + 500.
  ASSERT_EQ(out_.size(), 3u);
  EXPECT_EQ(Pop().data.size(), 1000u);
  EXPECT_EQ(Pop().data.size(), 1000u);
  Seg third = Pop();
  EXPECT_EQ(third.data.size(), 500u);
  EXPECT_EQ(third.h.seq, 1001u + 2000);
  EXPECT_GT(timer_.count(), 0);
  // The ACK frees space and opens the window again.
  uint32_t ev = ep_->OnSegment(G(kTcpAck, 5001, 1001 + 2500, 2500), {});
  EXPECT_TRUE(ev & TcpEndpoint::kSendSpace);
  EXPECT_EQ(out_.size(), 3u);
}

TEST_F(TcpTest, ZeroWindowStopsSendingAndProbes) {
  Establish(1000, 1000);
  std::string s(3000, 'y');
  ep_->Send({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  ASSERT_EQ(out_.size(), 1u);
  Pop();
  ep_->OnSegment(G(kTcpAck, 5001, 2001, 0), {});  // acked, but window now 0
  EXPECT_TRUE(out_.empty());
  EXPECT_GT(timer_.count(), 0);  // persist timer
  ep_->OnTimer();
  Seg probe = Pop();
  EXPECT_EQ(probe.data.size(), 1u);
  EXPECT_EQ(probe.h.seq, 2001u);
  ep_->OnSegment(G(kTcpAck, 5001, 2002, 4000), {});
  size_t sent = 0;
  while (!out_.empty()) sent += Pop().data.size();
  EXPECT_EQ(sent, 1999u);
}

TEST_F(TcpTest, LostSegmentIsRetransmittedWithBackoff) {
  Establish();
  std::string s = "retransmit me";
  ep_->Send({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  Seg first = Pop();  // "lost"
  auto rto1 = timer_;
  ep_->OnTimer();
  Seg again = Pop();
  EXPECT_EQ(again.h.seq, first.h.seq);
  EXPECT_EQ(again.data, s);
  EXPECT_EQ(timer_, rto1 * 2);
  ep_->OnSegment(G(kTcpAck, 5001, first.h.seq + s.size()), {});
  EXPECT_EQ(ep_->unacked(), 0u);
  EXPECT_EQ(timer_.count(), 0);  // disarmed
}

TEST_F(TcpTest, GivesUpAfterMaxRetries) {
  Establish();
  std::string s = "x";
  ep_->Send({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  uint32_t ev = 0;
  for (int i = 0; i <= TcpEndpoint::kMaxRetries && !(ev & TcpEndpoint::kReset); ++i) ev = ep_->OnTimer();
  EXPECT_TRUE(ev & TcpEndpoint::kReset);
  EXPECT_TRUE(ep_->closed());
}

TEST_F(TcpTest, ReceiveWindowShrinksWhileTheOwnerDoesNotRead) {
  TcpParams p;
  p.rcv_buf = 4000;
  Establish(1000, 65535, p);
  std::string chunk(1000, 'z');
  uint32_t seq = 5001;
  uint16_t last_window = 65535;
  for (int i = 0; i < 4; ++i) {
    Data(seq, 1001, chunk);
    seq += 1000;
    Seg a = Pop();
    EXPECT_LT(a.h.window, last_window);
    last_window = a.h.window;
  }
  EXPECT_EQ(last_window, 0);
  Data(seq, 1001, chunk);  // beyond the window: not accepted
  EXPECT_EQ(Pop().h.ack, seq);
  EXPECT_EQ(ep_->RecvSize(), 4000u);
  ep_->ConsumeRecv(4000);  // the host peer caught up: window update
  Seg upd = Pop();
  EXPECT_EQ(upd.h.window, 4000);
}

TEST_F(TcpTest, HalfCloseBothWaysThenClosed) {
  Establish();
  uint32_t ev = Data(5001, 1001, "bye", kTcpFin);
  EXPECT_TRUE(ev & TcpEndpoint::kGuestFin);
  EXPECT_EQ(Pop().h.ack, 5005u);  // data + FIN
  EXPECT_EQ(Recv(), "bye");
  // We can still send after the guest's FIN.
  std::string s = "late";
  ep_->Send({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  ep_->Shutdown();
  Seg d = Pop();
  Seg fin = out_.empty() ? d : Pop();
  EXPECT_TRUE(fin.h.flags & kTcpFin);
  ev = ep_->OnSegment(G(kTcpAck, 5005, 1001 + 4 + 1), {});
  EXPECT_TRUE(ev & TcpEndpoint::kClosedEvent);
  EXPECT_TRUE(ep_->closed());
}

TEST_F(TcpTest, RstInWindowResetsAndOutOfWindowIsIgnored) {
  Establish();
  EXPECT_EQ(ep_->OnSegment(G(kTcpRst, 5001 + 10000000, 0), {}), 0u);
  EXPECT_FALSE(ep_->closed());
  EXPECT_TRUE(ep_->OnSegment(G(kTcpRst, 5001, 0), {}) & TcpEndpoint::kReset);
  EXPECT_TRUE(ep_->closed());
}

TEST_F(TcpTest, ActiveOpenAcrossSequenceWrap) {
  Make(0xfffffffe);
  ep_->Connect();
  Seg syn = Pop();
  EXPECT_EQ(syn.h.flags, kTcpSyn);
  EXPECT_EQ(syn.h.options.wscale, TcpEndpoint::kOurWscale);
  TcpHeader sa = G(kTcpSyn | kTcpAck, 9000, 0xffffffff, 100);
  sa.options.wscale = 2;
  uint32_t ev = ep_->OnSegment(sa, {});
  EXPECT_TRUE(ev & TcpEndpoint::kEstablishedEvent);
  EXPECT_EQ(Pop().h.ack, 9001u);
  std::string s(300, 'w');
  ep_->Send({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  Seg d = Pop();
  EXPECT_EQ(d.h.seq, 0xffffffffu);
  EXPECT_EQ(d.data.size(), 100u);  // the SYN-ACK window is not scaled
  ep_->OnSegment(G(kTcpAck, 9001, 0xffffffffu + 100, 100), {});  // now scaled: 400 bytes
  EXPECT_EQ(Pop().data.size(), 200u);
  EXPECT_EQ(ep_->snd_nxt(), 0xffffffffu + 300);
}

TEST_F(TcpTest, DataAndFinQueuedBeforeTheHandshakeCompletes) {
  Make();
  ep_->OnGuestSyn(G(kTcpSyn, 5000, 0));
  ep_->AcceptSyn();
  Pop();
  std::string s = "early";
  ep_->Send({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  ep_->Shutdown();  // the host peer closed right after connecting
  EXPECT_TRUE(out_.empty());
  uint32_t ev = ep_->OnSegment(G(kTcpAck, 5001, 1001), {});
  EXPECT_TRUE(ev & TcpEndpoint::kEstablishedEvent);
  std::string got;
  bool fin = false;
  uint32_t fin_seq = 0;
  while (!out_.empty()) {
    Seg g = Pop();
    got += g.data;
    if (g.h.flags & kTcpFin) {
      fin = true;
      fin_seq = g.h.seq + g.data.size();
    }
  }
  EXPECT_EQ(got, "early");
  EXPECT_TRUE(fin);
  EXPECT_EQ(fin_seq, 1001u + 5);
  ep_->OnSegment(G(kTcpAck | kTcpFin, 5001, 1001 + 5 + 1), {});
  EXPECT_TRUE(ep_->closed());
}

TEST_F(TcpTest, DelayedAcksWaitForTwoSegmentsOrTheOwner) {
  TcpParams p;
  p.delay_acks = true;
  Establish(1000, 65535, p);  // the guest's MSS is 1000
  uint32_t ev = Data(5001, 1001, std::string(600, 'a'));
  EXPECT_TRUE(ev & TcpEndpoint::kAckDelayed);
  EXPECT_TRUE(out_.empty());
  ev = Data(5601, 1001, std::string(1400, 'b'));  // 2000 bytes owed: ACK now
  EXPECT_FALSE(ev & TcpEndpoint::kAckDelayed);
  EXPECT_EQ(Pop().h.ack, 7001u);
  Data(7001, 1001, "c");
  EXPECT_TRUE(out_.empty());
  ep_->FlushAck();
  EXPECT_EQ(Pop().h.ack, 7002u);
  ep_->FlushAck();  // nothing owed any more
  EXPECT_TRUE(out_.empty());
  Data(9000, 1001, "gap");  // out of order: duplicate ACK at once
  EXPECT_EQ(Pop().h.ack, 7002u);
}

TEST_F(TcpTest, RetransmittedSynGetsSynAckAgain) {
  Make();
  ep_->OnGuestSyn(G(kTcpSyn, 5000, 0));
  ep_->AcceptSyn();
  Pop();
  ep_->OnSegment(G(kTcpSyn, 5000, 0), {});
  EXPECT_EQ(Pop().h.flags, kTcpSyn | kTcpAck);
}

}  // namespace
}  // namespace msb::net
