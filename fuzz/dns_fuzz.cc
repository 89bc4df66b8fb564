// libFuzzer target for DNS messages from the guest or an upstream server:
// the parser, the builder (oracle: what parses builds, and what builds
// parses back the same), TCP deframing, and the answer filter with the
// input as the upstream's answer (oracles: what it keeps is on the question's
// CNAME chain, of the asked type, capped in TTL, and an address the policy
// may reach under the chain's names, so the rebinding defence holds; the
// guest's answer builds within its UDP size). No sockets, no event loop.
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <string_view>
#include <vector>

#include "net/dns.h"
#include "net/dns_server.h"
#include "net/policy.h"
#include "schema/network_rule.h"

namespace {

using msb::net::dns::Message;
using msb::net::dns::Record;

const msb::net::Policy& FuzzPolicy() {
  static const msb::net::Policy policy = [] {
    msb::schema::Network n;
    for (const char* r : {"allow@*.example.com:tcp:443", "deny@10.0.0.0/8", "allow@host:tcp:5432"}) {
      n.rules.push_back(*msb::schema::ParseNetworkRule(r));
    }
    msb::net::PolicyContext ctx;
    ctx.gateways = {msb::net::IpAddress::V4(10, 0, 2, 2)};
    return std::move(*msb::net::Policy::Compile(n, ctx));
  }();
  return policy;
}

void Check(bool cond) {
  if (!cond) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);

  msb::net::dns::TcpDeframer deframer;
  deframer.Feed(bytes);
  for (int i = 0; i < 64 && deframer.Next(); ++i) {
  }

  auto parsed = msb::net::dns::Parse(bytes);
  if (!parsed.ok()) return 0;
  for (bool compress : {true, false}) {
    auto built = msb::net::dns::Build(*parsed, compress);
    if (!built.ok()) continue;  // e.g. a record's raw data too long after decompression
    auto again = msb::net::dns::Parse(*built);
    Check(again.ok());
    Check(again->questions.size() == parsed->questions.size());
    Check(again->answers.size() == parsed->answers.size());
    for (size_t i = 0; i < again->questions.size(); ++i) {
      Check(again->questions[i].name == parsed->questions[i].name);
    }
    for (size_t i = 0; i < again->answers.size(); ++i) {
      Check(again->answers[i].name == parsed->answers[i].name);
      Check(again->answers[i].address == parsed->answers[i].address);
      Check(again->answers[i].target == parsed->answers[i].target);
    }
  }
  (void)msb::net::dns::BuildTruncated(*parsed, 512);

  if (parsed->questions.size() == 1) {
    // The input as an upstream server's answer to the guest's query for its
    // question (with the name's case flipped, as the guest may ask it): the
    // chain filter and the rebinding defence (DnsServer::Answer).
    static msb::net::PinSet pins(msb::net::PinSet::Options{256, std::chrono::seconds(60), std::chrono::seconds(3600)});
    Message query;
    query.header = parsed->header;
    query.questions = parsed->questions;
    for (char& c : query.questions[0].name) {
      if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    }
    msb::net::DnsServerStats stats;
    Message out = msb::net::FilterUpstreamAnswer(query, *parsed, FuzzPolicy(), pins,
                                                 msb::net::PinSet::Clock::now(), &stats);
    Check(out.answers.size() <= parsed->answers.size());
    Check(pins.size() <= 256);
    Check(out.header.id == query.header.id && out.questions.size() == 1 &&
          out.questions[0].name == query.questions[0].name);
    Check(out.authority.empty() && out.additional.empty());
    // The chain: the question's name and the targets of the CNAMEs kept.
    std::vector<std::string> chain = {msb::net::NormalizeName(query.questions[0].name)};
    for (const Record& r : out.answers) {
      if (r.type == static_cast<uint16_t>(msb::net::dns::Type::kCname)) chain.push_back(msb::net::NormalizeName(r.target));
    }
    for (const Record& r : out.answers) {
      Check(r.ttl <= 3600);  // capped at the pin set's max_ttl
      Check(std::find(chain.begin(), chain.end(), msb::net::NormalizeName(r.name)) != chain.end());
      if (r.type == static_cast<uint16_t>(msb::net::dns::Type::kCname)) continue;
      // An address kept is one the policy may reach under those names, and
      // of the type asked for.
      Check(r.address.has_value() && r.type == query.questions[0].type);
      Check(FuzzPolicy().MayReach(*r.address, chain).allow);
    }
    // What the guest receives: built within the UDP size, truncated with TC
    // when it does not fit, and parsing back.
    for (size_t max : {size_t{512}, size_t{1232}}) {
      auto bytes = msb::net::dns::BuildTruncated(out, max);
      if (!bytes.ok()) continue;
      Check(bytes->size() <= max);
      auto back = msb::net::dns::Parse(*bytes);
      Check(back.ok() && back->header.id == out.header.id && back->answers.size() <= out.answers.size());
    }
  }
  return 0;
}
