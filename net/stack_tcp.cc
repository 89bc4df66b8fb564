// TCP flows: each guest TCP connection is terminated in a TcpEndpoint (tcp.h)
// and spliced to a host stream socket; connections to gateway:53 carry DNS;
// inbound connections (published ports, the group) run the other way. Not
// the TCP state machine itself (tcp.h): this file is the glue between the
// endpoint, host sockets, timers and the policy.
//
// Theory of operation
//
// Flows (TcpFlow in Impl::tcp, keyed by the 4-tuple; Impl::tcp_by_id finds
// them from late DNS replies). On a guest SYN that belongs to no flow the
// policy is asked once (FlowProto::kTcp): kDeny, or kAllow to the gateway in
// any form (Impl::IsGateway), answers RST (stats.tcp_denied); a connection
// to gateway:53 is DNS only at the gateway's own address. kAllow makes a
// non-blocking connect to the destination, or takes the stream
// FlowVerdict::connect returns (an invalid one answers RST,
// stats.tcp_refused); every host socket counts in stats.host_sockets;
// kAllowToHostLoopback connects to 127.0.0.1:dport. The SYN-ACK goes to the
// guest only when the host side is connected (stats.tcp_opened); a failed
// connect answers RST (stats.tcp_refused), so the guest sees "connection
// refused" as it would from the real destination. A segment of no flow that
// is not a SYN gets a RST (SendStrayRst, RFC 793 reset generation); a RST of
// no flow is ignored.
//
// Limits: at most StackConfig::max_tcp_flows flows, and no new one while
// the flows hold StackConfig::max_flow_fds host sockets or the memory budget
// is exhausted (BudgetFull): new SYNs are then answered RST (stats.
// tcp_refused) and OpenInbound fails. Each flow is charged kFlowCost plus
// its buffers' memory (Recharge, after every event that may change them);
// while the budget is exhausted guest segments lose their payload before the
// endpoint sees them (the guest retransmits), host sockets are not read, and
// DNS replies are dropped; OnBudgetRoom resumes the reads. Each
// direction of a flow buffers StackConfig::tcp_buffer bytes in the endpoint
// (TcpParams::snd_buf, rcv_buf), and the host socket's SO_SNDBUF is set to
// the same, so a slow host peer closes the guest's window instead of
// queueing megabytes per flow. The endpoint's MSS is StackConfig::mtu less
// the IP and TCP headers (Impl::Mss). At most kTcpReadsPerWake reads of
// kHostReadChunk bytes per readiness.
//
// States of a flow, besides the endpoint's own (TcpEndpoint::State):
// connecting (the host connect is in progress; only write readiness is
// watched), spliced (host reads and writes follow the buffers), host_eof
// (the host peer sent FIN), host_wr_shut (the guest's FIN was passed on),
// dead (removed from the tables, its deletion deferred). dns flows have no
// host socket; inbound flows start reading the host socket only once the
// guest completed the handshake (TcpEndpoint::State::kEstablished).
//
// Timeouts. StackConfig::tcp_connect_timeout: aux_timer while connecting; on
// expiry the endpoint refuses the SYN (RST to the guest, stats.tcp_refused)
// and the flow goes. StackConfig::tcp_idle: aux_timer once connected (and
// for dns and inbound flows from the start); on expiry it re-arms for the
// remainder if a guest segment arrived or host bytes were read within
// tcp_idle (TcpFlow::last), else the flow is reset both ways (RST to the
// guest, SO_LINGER 0 on the host socket). The retransmission and persist timer: rto_timer, armed and
// disarmed by the endpoint through its timer function (tcp.h). The delayed
// ACK: ack_timer, StackConfig::delayed_ack after the endpoint asks for it
// (kAckDelayed), then TcpEndpoint::FlushAck.
//
// Data flow, guest → host: segments go to TcpEndpoint::OnSegment; in-order
// bytes wait in the endpoint's receive buffer (RecvSize) until FlushToHost
// writes them to the host socket (write readiness is watched while bytes
// wait); the window advertised to the guest shrinks meanwhile. The guest's
// FIN becomes shutdown(SHUT_WR) once its bytes are written. Host → guest:
// ReadHost reads at most SendSpace() bytes (room in the endpoint's send
// buffer, which the guest's window drains) and hands them to
// TcpEndpoint::Send; host reads stop while SendSpace() is 0 and resume on
// kSendSpace. EOF from the host becomes our FIN (TcpEndpoint::Shutdown).
// A reset either way is passed on: a host read or write error aborts the
// endpoint (RST to the guest), a RST from the guest (kReset) closes the host
// socket with SO_LINGER 0. A flow whose endpoint closed and whose received
// bytes are written leaves the tables.
//
// DNS over TCP: a connection to gateway:53 is accepted at once, whatever the
// policy, within the same limits as any flow (max_tcp_flows, the budget). Bytes accumulate in TcpFlow::dns_in (at most kMaxDnsTcpBuffer, or
// the connection is aborted); each two-byte length-prefixed message goes to
// the DnsHandler (stats.dns_queries), and each reply is sent back framed
// the same way as it arrives. A reply for a flow that is gone, or larger
// than a length prefix can say, is dropped.
// After the guest's FIN, our FIN follows the last pending reply.
//
// Inbound (OpenInbound): a flow from gateway:<port> to guest:guest_port, the
// port handed out round robin from kEphemeralFirst, skipping ports in use.
// The stack sends SYN (TcpEndpoint::Connect, stats.tcp_inbound); the
// handshake counts in stats.tcp_opened; a RST from the guest closes host_fd.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "common/log.h"
#include "net/stack_impl.h"

namespace msb::net {

void Stack::Impl::EmitTcp(TcpFlow& f, TcpHeader h, std::span<const uint8_t> payload) {
  h.sport = f.remote_port;
  h.dport = f.guest_port;
  BuildTcp(out, ToGuest(f.remote_ip, f.guest_ip), h, payload);
  Emit();
}

// A RST for a segment that belongs to no flow (RFC 793 "reset generation").
void Stack::Impl::SendStrayRst(const ParsedFrame& f) {
  const TcpHeader& in = *f.tcp;
  TcpHeader h;
  h.sport = in.dport;
  h.dport = in.sport;
  if (in.flags & kTcpAck) {
    h.seq = in.ack;
    h.flags = kTcpRst;
  } else {
    h.seq = 0;
    h.ack = in.seq + static_cast<uint32_t>(f.payload.size()) + ((in.flags & kTcpSyn) ? 1 : 0) +
            ((in.flags & kTcpFin) ? 1 : 0);
    h.flags = kTcpRst | kTcpAck;
  }
  BuildTcp(out, ToGuest(f.ip_dst, f.ip_src), h, {});
  Emit();
}

TcpFlow* Stack::Impl::NewTcpFlow(const TupleKey& tuple, const IpAddress& guest, uint16_t gport,
                                  const IpAddress& remote, uint16_t rport) {
  auto flow = std::make_unique<TcpFlow>();
  TcpFlow* f = flow.get();
  f->id = next_id++;
  f->tuple = tuple;
  f->guest_ip = guest;
  f->guest_port = gport;
  f->remote_ip = remote;
  f->remote_port = rport;
  f->last = FlowClock::now();
  TcpParams params;
  params.mss = Mss(guest.is_v6());
  params.snd_buf = params.rcv_buf = cfg.tcp_buffer;
  params.delay_acks = cfg.delayed_ack.count() > 0;
  f->rto_timer = dispatcher.Timer([this, f]() {
    if (f->dead) return;
    HandleEvents(f, f->ep->OnTimer());
    Recharge(f);
  });
  f->aux_timer = dispatcher.Timer([this, f]() { AuxTimer(f); });
  f->ack_timer = dispatcher.Timer([f]() {
    f->ack_armed = false;
    if (!f->dead) f->ep->FlushAck();
  });
  f->ep = std::make_unique<TcpEndpoint>(
      params, static_cast<uint32_t>(rng()),
      [this, f](const TcpHeader& h, std::span<const uint8_t> p) { EmitTcp(*f, h, p); },
      [f](std::chrono::milliseconds d) {
        if (d.count() == 0) {
          f->rto_timer.Disarm();
        } else {
          f->rto_timer.Arm(d);
        }
      });
  tcp.emplace(tuple, std::move(flow));
  tcp_by_id.emplace(f->id, f);
  Recharge(f);
  return f;
}

void Stack::Impl::RemoveTcp(TcpFlow* f) {
  if (f->dead) return;
  f->dead = true;
  if (cfg.budget != nullptr) cfg.budget->Release(std::exchange(f->charged, 0));
  f->watch.Reset();
  f->rto_timer.Disarm();
  f->aux_timer.Disarm();
  f->ack_timer.Disarm();
  tcp_by_id.erase(f->id);
  auto it = tcp.find(f->tuple);
  if (it == tcp.end()) return;
  dispatcher.DeferDelete(std::move(it->second));
  tcp.erase(it);
}

// Closes the host side with a RST (SO_LINGER 0) and forgets the flow.
void Stack::Impl::ResetHost(TcpFlow* f) {
  if (f->fd) {
    linger l{1, 0};
    setsockopt(f->fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    f->fd.Reset();
  }
  RemoveTcp(f);
}

void Stack::Impl::OnTcp(const ParsedFrame& fr) {
  const TcpHeader& h = *fr.tcp;
  TupleKey tuple = MakeTuple(fr.ip_src, fr.sport, fr.ip_dst, fr.dport);
  auto it = tcp.find(tuple);
  if (it != tcp.end()) {
    TcpFlow* f = it->second.get();
    f->last = FlowClock::now();
    if (!fr.payload.empty() && BudgetFull()) {
      // No room for the guest's bytes: the ACK still counts, the payload
      // (and a FIN after it) comes again when the guest retransmits.
      ++stats.frames_dropped;
      TcpHeader bare = h;
      bare.flags &= static_cast<uint8_t>(~kTcpFin);
      HandleEvents(f, f->ep->OnSegment(bare, {}));
    } else {
      HandleEvents(f, f->ep->OnSegment(h, fr.payload));
    }
    Recharge(f);
    return;
  }
  if (h.flags & kTcpRst) return;
  if (!(h.flags & kTcpSyn) || (h.flags & kTcpAck)) return SendStrayRst(fr);
  bool v6 = fr.ip_src.is_v6();
  bool to_gateway = IsGateway(fr.ip_dst);
  if (tcp.size() >= cfg.max_tcp_flows || FdsFull() || BudgetFull()) {
    ++stats.tcp_refused;
    return SendStrayRst(fr);
  }
  if (fr.ip_dst == Gateway(v6) && fr.dport == 53) {
    TcpFlow* f = NewTcpFlow(tuple, fr.ip_src, fr.sport, fr.ip_dst, fr.dport);
    f->dns = true;
    f->ep->OnGuestSyn(h);
    f->ep->AcceptSyn();
    f->aux_timer.Arm(cfg.tcp_idle);
    return;
  }
  FlowKey key{FlowProto::kTcp, fr.ip_src, fr.ip_dst, fr.sport, fr.dport};
  FlowVerdict v = policy ? policy(key) : FlowVerdict{};
  if (v.action == FlowAction::kDeny || (v.action == FlowAction::kAllow && to_gateway)) {
    ++stats.tcp_denied;
    MSB_LOG(kDebug, "net") << "tcp " << fr.ip_src.ToString() << ":" << fr.sport << " -> "
                           << fr.ip_dst.ToString() << ":" << fr.dport << " denied";
    return SendStrayRst(fr);
  }
  UniqueFd fd;
  ++stats.host_sockets;
  if (v.connect) {
    fd = v.connect();
    if (!fd) {
      ++stats.tcp_refused;
      return SendStrayRst(fr);
    }
  } else {
    IpAddress dst = v.action == FlowAction::kAllowToHostLoopback ? IpAddress::V4(127, 0, 0, 1) : fr.ip_dst;
    fd = UniqueFd(socket(dst.is_v6() ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_storage ss;
    socklen_t len = dst.ToSockaddr(fr.dport, &ss);
    if (!fd || (connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS)) {
      ++stats.tcp_refused;
      return SendStrayRst(fr);
    }
  }
  int one = 1;
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  // Bounds the kernel's buffering too, so a slow host peer closes the
  // guest's window instead of queueing megabytes per flow.
  int sndbuf = static_cast<int>(cfg.tcp_buffer);
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
  TcpFlow* f = NewTcpFlow(tuple, fr.ip_src, fr.sport, fr.ip_dst, fr.dport);
  f->connecting = true;
  f->ep->OnGuestSyn(h);
  f->aux_timer.Arm(cfg.tcp_connect_timeout);
  if (!v.intercept) {
    f->fd = std::move(fd);
    UpdateWatch(f);
    return;
  }
  // The interceptor owns the host socket; the flow stays connecting, with no
  // fd to watch, until it hands back the stream (InterceptReady).
  uint64_t id = f->id;
  std::weak_ptr<bool> alive_now = alive;
  v.intercept(std::move(fd), [this, id, alive_now](UniqueFd stream) {
    if (alive_now.expired()) return;
    InterceptReady(id, std::move(stream));
  });
}

void Stack::Impl::InterceptReady(uint64_t id, UniqueFd stream) {
  auto it = tcp_by_id.find(id);
  if (it == tcp_by_id.end() || it->second->dead || !it->second->connecting || it->second->fd) return;
  TcpFlow* f = it->second;
  if (!stream) {
    ++stats.tcp_refused;
    f->ep->Refuse();
    RemoveTcp(f);
    return;
  }
  int sndbuf = static_cast<int>(cfg.tcp_buffer);
  setsockopt(stream.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
  f->fd = std::move(stream);
  // Connected: HostReady's connect completion runs on the first readiness.
  UpdateWatch(f);
}

void Stack::Impl::AuxTimer(TcpFlow* f) {
  if (f->dead) return;
  if (f->connecting) {
    ++stats.tcp_refused;
    f->ep->Refuse();
    RemoveTcp(f);
    return;
  }
  auto idle = FlowClock::now() - f->last;
  if (idle >= cfg.tcp_idle) {
    f->ep->Abort();
    ResetHost(f);
    return;
  }
  f->aux_timer.Arm(std::chrono::duration_cast<std::chrono::milliseconds>(cfg.tcp_idle - idle) +
                   std::chrono::milliseconds(1));
}

void Stack::Impl::UpdateWatch(TcpFlow* f) {
  if (f->dead || !f->fd) return;
  short want = 0;
  if (f->connecting) {
    want = Dispatcher::kWrite;
  } else {
    bool started = !f->inbound || f->ep->state() == TcpEndpoint::State::kEstablished;
    if (started && !f->host_eof && f->ep->SendSpace() > 0 && !BudgetFull()) want |= Dispatcher::kRead;
    if (f->ep->RecvSize() > 0) want |= Dispatcher::kWrite;
  }
  if (want == f->watch_flags && (want == 0 || f->watch.active())) return;
  f->watch.Reset();
  f->watch_flags = want;
  if (want != 0) {
    f->watch = dispatcher.WatchFd(f->fd.get(), want, [this, f](short ready) { HostReady(f, ready); });
  }
}

void Stack::Impl::HostReady(TcpFlow* f, short ready) {
  if (f->dead) return;
  struct RechargeAfter {
    Impl* impl;
    TcpFlow* f;
    ~RechargeAfter() { impl->Recharge(f); }
  } recharge{this, f};
  if (f->connecting) {
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(f->fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      ++stats.tcp_refused;
      f->ep->Refuse();
      RemoveTcp(f);
      return;
    }
    f->connecting = false;
    ++stats.tcp_opened;
    f->ep->AcceptSyn();
    f->aux_timer.Arm(cfg.tcp_idle);
    UpdateWatch(f);
    return;
  }
  if (ready & Dispatcher::kRead) ReadHost(f);
  if (f->dead) return;
  if (ready & Dispatcher::kWrite) FlushToHost(f);
  if (f->dead) return;
  UpdateWatch(f);
}

void Stack::Impl::ReadHost(TcpFlow* f) {
  for (int i = 0; i < kTcpReadsPerWake; ++i) {
    size_t space = f->ep->SendSpace();
    if (cfg.budget != nullptr) space = std::min(space, cfg.budget->Room());
    if (space == 0 || f->host_eof) return;
    ssize_t n = recv(f->fd.get(), readbuf.data(), std::min(space, readbuf.size()), MSG_DONTWAIT);
    if (n > 0) {
      f->last = FlowClock::now();
      f->ep->Send({readbuf.data(), static_cast<size_t>(n)});
      continue;
    }
    if (n == 0) {
      f->host_eof = true;
      f->ep->Shutdown();
      return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    f->ep->Abort();  // the host peer reset: pass it on
    ResetHost(f);
    return;
  }
}

void Stack::Impl::FlushToHost(TcpFlow* f) {
  while (f->ep->RecvSize() > 0) {
    auto data = f->ep->PeekRecv();
    ssize_t n = send(f->fd.get(), data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
      f->ep->Abort();
      ResetHost(f);
      return;
    }
    f->ep->ConsumeRecv(static_cast<size_t>(n));
  }
  if (f->ep->RecvSize() == 0 && f->ep->guest_fin() && !f->host_wr_shut) {
    shutdown(f->fd.get(), SHUT_WR);
    f->host_wr_shut = true;
  }
  if (f->ep->closed() && f->ep->RecvSize() == 0) RemoveTcp(f);
}

void Stack::Impl::HandleEvents(TcpFlow* f, uint32_t ev) {
  if (f->dead) return;
  if ((ev & TcpEndpoint::kAckDelayed) && !f->ack_armed) {
    f->ack_armed = true;
    f->ack_timer.Arm(cfg.delayed_ack);
  }
  if (ev & TcpEndpoint::kReset) {
    ResetHost(f);
    return;
  }
  if (f->dns) {
    DnsTcp(f);
    if (f->ep->closed()) RemoveTcp(f);
    return;
  }
  if ((ev & (TcpEndpoint::kData | TcpEndpoint::kGuestFin)) && !f->connecting) FlushToHost(f);
  if (f->dead) return;
  if ((ev & TcpEndpoint::kEstablishedEvent) && f->inbound) ++stats.tcp_opened;
  if ((ev & TcpEndpoint::kSendSpace) && !f->connecting) ReadHost(f);
  if (f->dead) return;
  if (f->ep->closed() && f->ep->RecvSize() == 0) {
    RemoveTcp(f);
    return;
  }
  UpdateWatch(f);
}

void Stack::Impl::DnsTcp(TcpFlow* f) {
  while (f->ep->RecvSize() > 0) {
    auto data = f->ep->PeekRecv();
    size_t n = std::min(data.size(), kMaxDnsTcpBuffer - f->dns_in.size());
    if (n == 0) {
      f->ep->Abort();  // a message larger than any DNS message
      RemoveTcp(f);
      return;
    }
    f->dns_in.append(reinterpret_cast<const char*>(data.data()), n);
    f->ep->ConsumeRecv(n);
  }
  while (f->dns_in.size() >= 2) {
    size_t len = static_cast<uint8_t>(f->dns_in[0]) << 8 | static_cast<uint8_t>(f->dns_in[1]);
    if (f->dns_in.size() < 2 + len) break;
    std::string query = f->dns_in.substr(2, len);
    f->dns_in.erase(0, 2 + len);
    ++stats.dns_queries;
    if (!dns) continue;
    ++f->dns_pending;
    std::weak_ptr<bool> weak = alive;
    uint64_t id = f->id;
    dns(query, [this, weak, id](std::string reply) {
      if (weak.expired()) return;
      auto it = tcp_by_id.find(id);
      if (it == tcp_by_id.end() || it->second->dead) return;
      TcpFlow* fl = it->second;
      --fl->dns_pending;
      if (reply.size() <= 65535 && !BudgetFull()) {
        std::string framed;
        framed.push_back(static_cast<char>(reply.size() >> 8));
        framed.push_back(static_cast<char>(reply.size()));
        framed += reply;
        fl->ep->Send({reinterpret_cast<const uint8_t*>(framed.data()), framed.size()});
      }
      if (fl->ep->guest_fin() && fl->dns_pending == 0) fl->ep->Shutdown();
      Recharge(fl);
    });
    if (f->dead) return;
  }
  if (f->ep->guest_fin() && f->dns_pending == 0) f->ep->Shutdown();
}

void Stack::Impl::Recharge(TcpFlow* f) {
  if (cfg.budget == nullptr || f->dead) return;
  size_t now = kFlowCost + f->ep->BufferBytes() + f->dns_in.capacity();
  cfg.budget->Adjust(std::exchange(f->charged, now), now);
}

// The budget has room again: flows whose host reads paused start reading.
void Stack::Impl::OnBudgetRoom() {
  std::vector<TcpFlow*> flows;
  flows.reserve(tcp.size());
  for (auto& [k, f] : tcp) flows.push_back(f.get());
  for (TcpFlow* f : flows) UpdateWatch(f);
}

Status Stack::Impl::OpenInbound(UniqueFd host_fd, uint16_t guest_port, bool v6) {
  if (!host_fd) return Error(ErrorCode::kInvalidArgument, "inbound connection: no host socket");
  if (tcp.size() >= cfg.max_tcp_flows || FdsFull())
    return Error(ErrorCode::kUnavailable, "inbound connection to guest port " +
                                              std::to_string(guest_port) +
                                              ": the flow table is full (max_tcp_flows)");
  if (BudgetFull())
    return Error(ErrorCode::kUnavailable, "inbound connection to guest port " +
                                              std::to_string(guest_port) +
                                              ": the sandbox's network memory budget is spent");
  if (Status nb = SetNonBlocking(host_fd.get()); !nb.ok()) return nb.error().Wrap("inbound connection");
  const IpAddress& guest = Guest(v6);
  const IpAddress& gw = Gateway(v6);
  for (int tries = 0; tries < 65536 - kEphemeralFirst; ++tries) {
    uint16_t port = next_tcp_port;
    next_tcp_port = next_tcp_port == 65535 ? kEphemeralFirst : next_tcp_port + 1;
    TupleKey tuple = MakeTuple(guest, guest_port, gw, port);
    if (tcp.count(tuple)) continue;
    TcpFlow* f = NewTcpFlow(tuple, guest, guest_port, gw, port);
    f->fd = std::move(host_fd);
    f->inbound = true;
    ++stats.tcp_inbound;
    f->ep->Connect();
    f->aux_timer.Arm(cfg.tcp_idle);
    return OkStatus();
  }
  return Error(ErrorCode::kUnavailable, "inbound connection: no free gateway port");
}

}  // namespace msb::net
