// libFuzzer target for DNS messages from the guest or an upstream server:
// the parser, the builder (oracle: what parses builds, and what builds
// parses back the same), TCP deframing, and the answer filter with the
// input as the upstream's answer. No sockets, no event loop.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "net/dns.h"
#include "net/dns_server.h"
#include "net/policy.h"
#include "schema/network_rule.h"

namespace {

using msb::net::dns::Message;

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
    static msb::net::PinSet pins(msb::net::PinSet::Options{256, std::chrono::seconds(60), std::chrono::seconds(3600)});
    Message query;
    query.header = parsed->header;
    query.questions = parsed->questions;
    Message out = msb::net::FilterUpstreamAnswer(query, *parsed, FuzzPolicy(), pins,
                                                 msb::net::PinSet::Clock::now(), nullptr);
    Check(out.answers.size() <= parsed->answers.size());
    Check(pins.size() <= 256);
  }
  return 0;
}
