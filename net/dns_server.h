// The DNS server the guest sees at its gateway: answers the names of the
// project's other sandboxes, forwards the rest to upstream resolvers with
// c-ares on the supervisor's event loop, drops answers the policy denies
// (rebinding defence) and pins the kept ones. Not a cache and not a
// recursive resolver; transport (UDP datagrams, TCP framing) is the stack's.
//
// Theory of operation. Handle() takes one query message and calls reply
// exactly once with the response bytes, possibly later from the loop; an
// empty response means "send nothing" (fewer than 12 bytes, or a message
// with QR set). Answers always echo the query's ID and question and carry
// RD from the query and RA.
//  - Malformed body: FORMERR (no question). Opcode other than QUERY: NOTIMP.
//    Not exactly one question: FORMERR. Class other than IN: REFUSED. A name
//    that is empty or holds bytes outside [A-Za-z0-9_-.]: REFUSED.
//  - Types other than A, AAAA and CNAME: NOERROR with no answers. Not
//    NOTIMP, which stub resolvers take for a broken server, and not
//    forwarded, since MX/SRV/TXT/HTTPS data carries names and addresses
//    (HTTPS address hints) that would bypass the rebinding filter and the
//    pin set.
//  - A group name (the map SetGroupNames gives, compared case-insensitively)
//    is answered here with kGroupTtl when the policy may reach its address;
//    when it may not, NXDOMAIN. It is never forwarded.
//  - A name the policy would not let the guest reach (Policy::MayResolve:
//    under profiles none and group, a name no egress allow rule could
//    allow) is answered REFUSED here; nothing leaves the host for it.
//  - Anything else is sent upstream (ares_query, no search domains). The
//    answer keeps the CNAME chain that starts at the question's name and the
//    A/AAAA records of the asked type owned by a name on that chain; records
//    off the chain, authority and additional sections are dropped. With
//    rebind protection, an address the policy may not reach
//    (Policy::MayReach with the chain's names; host-name rules never vouch
//    for private or link-local answers) is dropped. When every
//    address is dropped the answer is NOERROR with only the CNAMEs: the name
//    exists, it has no address this sandbox may use (NXDOMAIN would claim the
//    name does not exist and be cached for every type). Kept addresses are
//    pinned for every name on the chain; their TTL is capped at the pin set's
//    max_ttl so the guest never caches an address longer than it is pinned.
//  - Upstream: NXDOMAIN and NOERROR answers pass with their rcode. A server
//    answering SERVFAIL, REFUSED or NOTIMP counts as failed and c-ares asks
//    the next one; when no server gives an answer (timeouts included:
//    Options::timeout per try, Options::tries tries) the guest gets SERVFAIL.
//  - UDP size: 512 bytes, or the query's EDNS size clamped to
//    512..kMaxUdpEdns (an OPT record is then returned); larger answers are
//    truncated with TC set. TCP: 65535.
//  - At most Options::max_pending queries wait upstream; more get SERVFAIL.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/dispatcher.h"
#include "common/result.h"
#include "net/address.h"
#include "net/dns.h"
#include "net/policy.h"

namespace msb::net {

constexpr uint32_t kGroupTtl = 10;        // seconds, answers for group names
constexpr uint16_t kMaxUdpEdns = 1232;    // bytes, the DNS flag day 2020 size

struct DnsServerStats {
  uint64_t queries = 0;
  uint64_t malformed = 0;         // dropped or FORMERR
  uint64_t group_answers = 0;
  uint64_t forwarded = 0;
  uint64_t refused_names = 0;      // not forwarded: no rule could allow them (Policy::MayResolve)
  uint64_t upstream_failures = 0;  // SERVFAIL or a timeout from upstream
  uint64_t dropped_addresses = 0;  // by the rebinding defence
};

// The guest's answer to query q built from the upstream's answer (see the
// theory of operation above): chain filtering, rebinding defence, pinning.
// Pure but for pins and stats; exposed for tests.
dns::Message FilterUpstreamAnswer(const dns::Message& query, const dns::Message& upstream,
                                  const Policy& policy, PinSet& pins, PinSet::Clock::time_point now,
                                  DnsServerStats* stats);

// One per sandbox. Must be created, used and destroyed on the dispatcher's
// thread. The Dispatcher, Policy and PinSet must outlive it. Destroying it
// cancels queries in flight: their replies are never called. Do not destroy
// it from inside a reply callback (defer it with Dispatcher::DeferDelete).
class DnsServer {
 public:
  enum class Transport : int { kUdp = 0, kTcp = 1 };
  using Reply = std::function<void(std::string response)>;

  struct Options {
    // "1.1.1.1", "127.0.0.1:5353", "[::1]:53"; empty: the host's resolvers
    // (/etc/resolv.conf).
    std::vector<std::string> servers;
    std::chrono::milliseconds timeout{2000};  // per try
    int tries = 2;
    size_t max_pending = 256;
  };

  static Result<std::unique_ptr<DnsServer>> Create(Dispatcher& dispatcher, const Policy& policy,
                                                   PinSet& pins, Options options);
  ~DnsServer();
  DnsServer(const DnsServer&) = delete;
  DnsServer& operator=(const DnsServer&) = delete;

  // The project's other sandboxes: name -> address. Replaces the map.
  void SetGroupNames(std::map<std::string, IpAddress> names);

  void Handle(std::string_view query, Reply reply, Transport transport = Transport::kUdp);

  size_t pending() const { return pending_count_; }
  const DnsServerStats& stats() const { return stats_; }

 private:
  struct Channel;
  struct Pending;
  DnsServer(Dispatcher& dispatcher, const Policy& policy, PinSet& pins, Options options);
  static void OnSocketState(void* data, int fd, int readable, int writable);
  static void OnAnswer(void* arg, int status, int timeouts, unsigned char* abuf, int alen);
  void ArmTimer();
  void Answer(const Pending& p, int status, const unsigned char* abuf, int alen);

  Dispatcher& dispatcher_;
  const Policy& policy_;
  PinSet& pins_;
  Options options_;
  std::map<std::string, IpAddress> group_;  // normalised names
  std::unique_ptr<Channel> channel_;
  std::map<int, EventHandle> watches_;
  EventHandle timer_;
  size_t pending_count_ = 0;
  bool destroying_ = false;
  DnsServerStats stats_;
};

}  // namespace msb::net
