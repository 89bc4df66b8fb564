// Tests of net/dns and net/dns_server: wire format (golden bytes,
// compression, hostile input, TCP framing), the answer filter (CNAME chain,
// rebinding defence, pins), the server's local answers, and the server
// against a real dnsmasq on 127.0.0.1.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include "common/child.h"
#include "common/dispatcher.h"
#include "common/fd.h"
#include "net/dns.h"
#include "net/dns_server.h"
#include "schema/network_rule.h"

namespace msb::net {
namespace {

using dns::Message;
using dns::Question;
using dns::Rcode;
using dns::Record;
using dns::Type;

IpAddress Ip(const char* text) { return *IpAddress::Parse(text); }

std::string Hex(std::string_view s) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (char c : s) {
    out.push_back(d[static_cast<uint8_t>(c) >> 4]);
    out.push_back(d[static_cast<uint8_t>(c) & 15]);
  }
  return out;
}

std::string Unhex(std::string_view h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<char>(std::stoi(std::string(h.substr(i, 2)), nullptr, 16)));
  return out;
}

Message Query(const std::string& name, Type type, uint16_t id = 0x1234) {
  Message m;
  m.header.id = id;
  m.header.rd = true;
  m.questions.push_back(Question{name, static_cast<uint16_t>(type), dns::kClassIn});
  return m;
}

std::string QueryBytes(const std::string& name, Type type, uint16_t id = 0x1234) {
  auto b = dns::Build(Query(name, type, id));
  EXPECT_TRUE(b.ok());
  return *b;
}

Record A(const std::string& name, const char* ip, uint32_t ttl = 300) {
  Record r;
  r.name = name;
  r.type = Ip(ip).is_v4() ? static_cast<uint16_t>(Type::kA) : static_cast<uint16_t>(Type::kAaaa);
  r.ttl = ttl;
  r.address = Ip(ip);
  return r;
}

Record Cname(const std::string& name, const std::string& target, uint32_t ttl = 300) {
  Record r;
  r.name = name;
  r.type = static_cast<uint16_t>(Type::kCname);
  r.ttl = ttl;
  r.target = target;
  return r;
}

std::vector<std::string> AddressesOf(const Message& m) {
  std::vector<std::string> out;
  for (const Record& r : m.answers) {
    if (r.address) out.push_back(r.address->ToString());
  }
  return out;
}

// ---- wire format ----

TEST(DnsWire, QueryMatchesGoldenBytes) {
  // dig +noedns public.test A, ID 0x1234.
  const std::string golden = "123401000001000000000000067075626c696304746573740000010001";
  EXPECT_EQ(Hex(QueryBytes("public.test", Type::kA)), golden);
  auto m = dns::Parse(Unhex(golden));
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_EQ(m->header.id, 0x1234);
  EXPECT_TRUE(m->header.rd);
  EXPECT_FALSE(m->header.qr);
  ASSERT_EQ(m->questions.size(), 1u);
  EXPECT_EQ(m->questions[0].name, "public.test");
  EXPECT_EQ(m->questions[0].type, 1);
}

TEST(DnsWire, ParsesACompressedAnswerFromDnsmasq) {
  // dnsmasq's answer for public.test A (the answer's name is a pointer to 12).
  auto m = dns::Parse(Unhex("123485800001000100000000067075626c696304746573740000010001c00c000100010000000000045db8d822"));
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_TRUE(m->header.qr);
  EXPECT_TRUE(m->header.aa);
  EXPECT_TRUE(m->header.ra);
  ASSERT_EQ(m->answers.size(), 1u);
  EXPECT_EQ(m->answers[0].name, "public.test");
  EXPECT_EQ(m->answers[0].address, Ip("93.184.216.34"));
}

TEST(DnsWire, BuildsWithAndWithoutCompression) {
  Message m = Query("www.example.com", Type::kA);
  m.header.qr = true;
  m.answers = {Cname("www.example.com", "edge.example.com"), A("edge.example.com", "93.184.216.34"),
               A("edge.example.com", "93.184.216.35")};
  m.additional = {A("ns.example.com", "2001:db8::53")};
  auto small = dns::Build(m, true);
  auto big = dns::Build(m, false);
  ASSERT_TRUE(small.ok() && big.ok());
  EXPECT_LT(small->size(), big->size());
  for (const std::string* bytes : {&*small, &*big}) {
    auto back = dns::Parse(*bytes);
    ASSERT_TRUE(back.ok()) << back.error().message();
    ASSERT_EQ(back->answers.size(), 3u);
    EXPECT_EQ(back->answers[0].target, "edge.example.com");
    EXPECT_EQ(back->answers[2].name, "edge.example.com");
    EXPECT_EQ(back->answers[2].address, Ip("93.184.216.35"));
    EXPECT_EQ(back->additional[0].address, Ip("2001:db8::53"));
    auto again = dns::Build(*back, true);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *small);
  }
}

TEST(DnsWire, EscapesOddLabelBytes) {
  Message m = Query("a\\046b.\\000x.test", Type::kA);
  auto bytes = dns::Build(m);
  ASSERT_TRUE(bytes.ok()) << bytes.error().message();
  // Two real labels "a.b" and "\0x", not three.
  EXPECT_EQ(Hex(bytes->substr(12, 10)), "03612e62020078047465");
  auto back = dns::Parse(*bytes);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->questions[0].name, "a\\046b.\\000x.test");
}

TEST(DnsWire, RefusesHostileInput) {
  auto bad = [](const std::string& hex, const std::string& what) {
    auto m = dns::Parse(Unhex(hex));
    EXPECT_FALSE(m.ok()) << hex;
    if (!m.ok()) {
      EXPECT_NE(m.error().message().find(what), std::string::npos) << m.error().message();
    }
  };
  const std::string h1 = "123401000001000000000000";  // one question
  bad("1234", "12-byte header");
  bad(h1 + "c00c00010001", "backwards");                // points at itself
  bad(h1 + "c00e0001000100", "backwards");              // points forwards
  bad(h1 + "03616263c00c00010001", "backwards");        // abc then back to its own start: a loop
  bad(h1 + "41610000000000", "label type");
  bad(h1 + "3f616161616161616161", "past the end");
  bad(h1 + "0361626300", "question truncated");
  bad("1234010000ff000000000000" + std::string(20, '0'), "section counts");
  std::string long_name;
  for (int i = 0; i < 5; ++i) long_name += "3f" + std::string(126, '6');  // 5 labels of 63
  bad(h1 + long_name + "0000010001", "255");
  const std::string h_ans = "123481800000000100000000";  // one answer
  bad(h_ans + "00000100010000003c0003010203", "address record of 3 bytes");
  bad(h_ans + "00000500010000003c000401610000", "CNAME data longer");
  bad(h_ans + "00000100010000003c0004", "runs past the end");
  // The header alone still yields the ID (for FORMERR).
  auto h = dns::ParseHeader(Unhex(h1 + "ff"));
  ASSERT_TRUE(h);
  EXPECT_EQ(h->id, 0x1234);
  EXPECT_FALSE(dns::ParseHeader("short"));
}

TEST(DnsWire, BuildRefusesBadNames) {
  EXPECT_FALSE(dns::Build(Query(std::string(64, 'a') + ".test", Type::kA)).ok());
  EXPECT_FALSE(dns::Build(Query("a..b", Type::kA)).ok());
  EXPECT_FALSE(dns::Build(Query("a\\", Type::kA)).ok());
  std::string name;
  for (int i = 0; i < 5; ++i) name += std::string(60, 'a') + ".";
  EXPECT_FALSE(dns::Build(Query(name, Type::kA)).ok());
  Message m = Query("x.test", Type::kA);
  m.answers.push_back(A("x.test", "2001:db8::1"));
  m.answers.back().type = static_cast<uint16_t>(Type::kA);
  EXPECT_FALSE(dns::Build(m).ok());
}

TEST(DnsWire, TruncatesToFit) {
  Message m = Query("many.test", Type::kA);
  m.header.qr = true;
  for (int i = 0; i < 100; ++i) m.answers.push_back(A("many.test", ("93.184.216." + std::to_string(i)).c_str()));
  auto full = dns::Build(m);
  ASSERT_GT(full->size(), 512u);
  auto cut = dns::BuildTruncated(m, 512);
  ASSERT_TRUE(cut.ok());
  EXPECT_LE(cut->size(), 512u);
  auto back = dns::Parse(*cut);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->header.tc);
  EXPECT_LT(back->answers.size(), 100u);
  EXPECT_GT(back->answers.size(), 10u);
  auto fits = dns::BuildTruncated(Query("x.test", Type::kA), 512);
  EXPECT_FALSE(dns::Parse(*fits)->header.tc);
}

TEST(DnsWire, TcpFraming) {
  std::string a = QueryBytes("a.test", Type::kA, 1), b = QueryBytes("b.test", Type::kAaaa, 2);
  std::string stream = dns::FrameTcp(a) + dns::FrameTcp(b);
  EXPECT_EQ(static_cast<uint8_t>(stream[1]), a.size());
  dns::TcpDeframer d;
  for (char c : stream.substr(0, 5)) d.Feed(std::string_view(&c, 1));
  EXPECT_FALSE(d.Next());
  d.Feed(stream.substr(5));
  EXPECT_EQ(d.Next(), a);
  EXPECT_EQ(d.Next(), b);
  EXPECT_FALSE(d.Next());
  EXPECT_EQ(d.buffered(), 0u);
  d.Feed(std::string("\0\0", 2));
  EXPECT_FALSE(d.Next());
  EXPECT_TRUE(d.failed());
}

RC_GTEST_PROP(DnsProperties, ParseNeverCrashesAndRoundTrips, (std::vector<uint8_t> noise, uint16_t at)) {
  // A valid message with noise written over part of it.
  Message m = Query("www.example.com", Type::kA);
  m.header.qr = true;
  m.answers = {Cname("www.example.com", "edge.example.com"), A("edge.example.com", "93.184.216.34")};
  std::string bytes = *dns::Build(m);
  bytes.resize(std::max<size_t>(bytes.size(), at % 600));
  for (size_t i = 0; i < noise.size(); ++i) bytes[(at + i) % bytes.size()] = static_cast<char>(noise[i]);
  auto parsed = dns::Parse(bytes);
  if (!parsed.ok()) return;
  auto rebuilt = dns::Build(*parsed, true);
  if (!rebuilt.ok()) return;  // e.g. an A record that parsed from raw bytes of another type
  auto again = dns::Parse(*rebuilt);
  RC_ASSERT(again.ok());
  RC_ASSERT(again->questions.size() == parsed->questions.size());
  RC_ASSERT(again->answers.size() == parsed->answers.size());
  for (size_t i = 0; i < again->answers.size(); ++i) {
    RC_ASSERT(again->answers[i].name == parsed->answers[i].name);
    RC_ASSERT(again->answers[i].address == parsed->answers[i].address);
    RC_ASSERT(again->answers[i].target == parsed->answers[i].target);
  }
}

// ---- the answer filter ----

Policy MakePolicy(schema::NetworkPolicy profile, std::vector<std::string> rules, bool rebind = true) {
  schema::Network n;
  n.policy = profile;
  n.rebind_protection = rebind;
  for (const auto& r : rules) n.rules.push_back(*schema::ParseNetworkRule(r));
  PolicyContext ctx;
  ctx.gateways = {IpAddress::V4(10, 0, 2, 2)};
  ctx.group_members = {IpAddress::V4(10, 0, 3, 15)};
  return std::move(*Policy::Compile(n, ctx));
}

TEST(DnsFilter, KeepsTheChainDropsDeniedAddressesAndPins) {
  Policy policy = MakePolicy(schema::NetworkPolicy::kPublic, {});
  PinSet pins;
  auto now = PinSet::Clock::time_point{} + std::chrono::hours(1);
  Message q = Query("WWW.example.com", Type::kA);
  Message up = q;
  up.header.qr = true;
  up.answers = {Cname("www.example.com", "edge.example.net", 30), A("edge.example.net", "93.184.216.34", 86400),
                A("edge.example.net", "10.0.0.7"), A("other.example.org", "93.184.216.99"),
                A("edge.example.net", "2001:4860::1"), A("edge.example.net", "127.0.0.1")};
  DnsServerStats stats;
  Message out = FilterUpstreamAnswer(q, up, policy, pins, now, &stats);
  EXPECT_EQ(out.header.id, 0x1234);
  EXPECT_EQ(out.questions[0].name, "WWW.example.com");
  EXPECT_EQ(out.header.rcode, 0);
  ASSERT_EQ(out.answers.size(), 2u);
  EXPECT_EQ(out.answers[0].target, "edge.example.net");
  EXPECT_EQ(AddressesOf(out), (std::vector<std::string>{"93.184.216.34"}));
  EXPECT_EQ(out.answers[1].ttl, 3600u);  // capped at the pin lifetime
  EXPECT_EQ(stats.dropped_addresses, 2u);
  EXPECT_EQ(pins.NamesFor(Ip("93.184.216.34"), now),
            (std::vector<std::string>{"edge.example.net", "www.example.com"}));
  EXPECT_TRUE(pins.NamesFor(Ip("10.0.0.7"), now).empty());
  EXPECT_TRUE(pins.NamesFor(Ip("93.184.216.99"), now).empty());  // off the chain
  // Everything dropped: NOERROR with the CNAME only.
  up.answers = {Cname("www.example.com", "edge.example.net"), A("edge.example.net", "192.168.1.1")};
  out = FilterUpstreamAnswer(q, up, policy, pins, now, &stats);
  EXPECT_EQ(out.header.rcode, 0);
  EXPECT_TRUE(AddressesOf(out).empty());
  EXPECT_EQ(out.answers.size(), 1u);
}

TEST(DnsFilter, RulesAndTheSwitchKeepAnswers) {
  PinSet pins;
  auto now = PinSet::Clock::time_point{} + std::chrono::hours(1);
  Message q = Query("db.corp.example", Type::kA);
  Message up = q;
  up.answers = {A("db.corp.example", "10.0.0.5")};
  // A host-name rule alone does not vouch for a private answer (rebinding);
  // a rule naming the range does.
  Policy by_name = MakePolicy(schema::NetworkPolicy::kPublic, {"allow@db.corp.example:tcp:5432"});
  EXPECT_TRUE(AddressesOf(FilterUpstreamAnswer(q, up, by_name, pins, now, nullptr)).empty());
  Policy suffix = MakePolicy(schema::NetworkPolicy::kPublic, {"allow@*.corp.example"});
  EXPECT_TRUE(AddressesOf(FilterUpstreamAnswer(q, up, suffix, pins, now, nullptr)).empty());
  Message ll_up = q;
  ll_up.answers = {A("db.corp.example", "169.254.7.7")};
  EXPECT_TRUE(AddressesOf(FilterUpstreamAnswer(q, ll_up, suffix, pins, now, nullptr)).empty());
  Policy by_range = MakePolicy(schema::NetworkPolicy::kPublic,
                               {"allow@*.corp.example:tcp:5432", "allow@10.0.0.0/24:tcp:5432"});
  EXPECT_EQ(AddressesOf(FilterUpstreamAnswer(q, up, by_range, pins, now, nullptr)),
            (std::vector<std::string>{"10.0.0.5"}));
  Policy by_group = MakePolicy(schema::NetworkPolicy::kPublic, {"allow@*.corp.example", "allow@private:tcp:1"});
  EXPECT_EQ(AddressesOf(FilterUpstreamAnswer(q, up, by_group, pins, now, nullptr)),
            (std::vector<std::string>{"10.0.0.5"}));
  Policy off = MakePolicy(schema::NetworkPolicy::kPublic, {}, /*rebind=*/false);
  EXPECT_EQ(AddressesOf(FilterUpstreamAnswer(q, up, off, pins, now, nullptr)),
            (std::vector<std::string>{"10.0.0.5"}));
  Policy deny = MakePolicy(schema::NetworkPolicy::kAny, {"deny@*.corp.example"});
  EXPECT_TRUE(AddressesOf(FilterUpstreamAnswer(q, up, deny, pins, now, nullptr)).empty());
  // An upstream failure passes its rcode and nothing else.
  up.header.rcode = static_cast<uint8_t>(Rcode::kServFail);
  Message out = FilterUpstreamAnswer(q, up, off, pins, now, nullptr);
  EXPECT_EQ(out.header.rcode, static_cast<uint8_t>(Rcode::kServFail));
  EXPECT_TRUE(out.answers.empty());
}

// ---- the server ----

struct ServerFixture {
  ServerFixture(schema::NetworkPolicy profile, std::vector<std::string> rules, std::vector<std::string> servers)
      : policy(MakePolicy(profile, std::move(rules))) {
    DnsServer::Options o;
    o.servers = std::move(servers);
    o.timeout = std::chrono::milliseconds(500);
    auto s = DnsServer::Create(dispatcher, policy, pins, o);
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message());
    if (s.ok()) server = std::move(*s);
  }

  // Handles one query and runs the loop until the reply (10 s deadline).
  std::optional<std::string> Ask(const std::string& query, DnsServer::Transport t = DnsServer::Transport::kUdp) {
    std::optional<std::string> got;
    bool timed_out = false;
    EventHandle deadline = dispatcher.Timer([&] {
      timed_out = true;
      dispatcher.Exit();
    });
    deadline.Arm(std::chrono::seconds(10));
    server->Handle(query, [&](std::string r) {
      got = std::move(r);
      dispatcher.Exit();
    }, t);
    if (!got) dispatcher.Run();
    EXPECT_FALSE(timed_out) << "no DNS answer within 10 s";
    return got;
  }

  Message AskParsed(const std::string& query) {
    auto bytes = Ask(query);
    EXPECT_TRUE(bytes && !bytes->empty());
    auto m = dns::Parse(bytes.value_or(""));
    EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error().message());
    return m.ok() ? *m : Message{};
  }

  Dispatcher dispatcher;
  Policy policy;
  PinSet pins;
  std::unique_ptr<DnsServer> server;
};

TEST(DnsServer, AnswersBadQueriesLocally) {
  // Port 9 on loopback: nothing is ever sent there by these cases.
  ServerFixture f(schema::NetworkPolicy::kPublic, {}, {"127.0.0.1:9"});
  ASSERT_TRUE(f.server);
  EXPECT_EQ(f.Ask("tiny"), std::string());
  Message resp = Query("x.test", Type::kA);
  resp.header.qr = true;
  EXPECT_EQ(f.Ask(*dns::Build(resp)), std::string());  // a response is not answered

  Message formerr = f.AskParsed(Unhex("beef01000001000000000000c00c00010001"));
  EXPECT_EQ(formerr.header.id, 0xbeef);
  EXPECT_EQ(formerr.header.rcode, static_cast<uint8_t>(Rcode::kFormErr));
  EXPECT_TRUE(formerr.header.qr);

  Message notify = Query("x.test", Type::kA);
  notify.header.opcode = 4;
  EXPECT_EQ(f.AskParsed(*dns::Build(notify)).header.rcode, static_cast<uint8_t>(Rcode::kNotImp));

  Message two = Query("x.test", Type::kA);
  two.questions.push_back(two.questions[0]);
  EXPECT_EQ(f.AskParsed(*dns::Build(two)).header.rcode, static_cast<uint8_t>(Rcode::kFormErr));

  Message chaos = Query("version.bind", Type::kTxt);
  chaos.questions[0].klass = 3;
  EXPECT_EQ(f.AskParsed(*dns::Build(chaos)).header.rcode, static_cast<uint8_t>(Rcode::kRefused));
  EXPECT_EQ(f.AskParsed(QueryBytes("a\\000b.test", Type::kA)).header.rcode, static_cast<uint8_t>(Rcode::kRefused));

  Message mx = f.AskParsed(QueryBytes("example.com", Type::kMx, 77));
  EXPECT_EQ(mx.header.id, 77);
  EXPECT_EQ(mx.header.rcode, 0);
  EXPECT_TRUE(mx.answers.empty());
  ASSERT_EQ(mx.questions.size(), 1u);
  EXPECT_EQ(mx.questions[0].type, static_cast<uint16_t>(Type::kMx));
  EXPECT_EQ(f.server->stats().forwarded, 0u);
}

TEST(DnsServer, AnswersGroupNamesWhenThePolicyAllows) {
  ServerFixture f(schema::NetworkPolicy::kPublic, {}, {"127.0.0.1:9"});
  ASSERT_TRUE(f.server);
  f.server->SetGroupNames({{"DB", Ip("10.0.3.15")}, {"cache", Ip("10.0.3.99")}});
  Message a = f.AskParsed(QueryBytes("db.", Type::kA));
  EXPECT_EQ(a.header.rcode, 0);
  EXPECT_TRUE(a.header.aa);
  EXPECT_EQ(AddressesOf(a), (std::vector<std::string>{"10.0.3.15"}));
  EXPECT_EQ(a.answers[0].ttl, kGroupTtl);
  EXPECT_EQ(f.pins.NamesFor(Ip("10.0.3.15"), PinSet::Clock::now()), (std::vector<std::string>{"db"}));
  Message aaaa = f.AskParsed(QueryBytes("db", Type::kAaaa));
  EXPECT_EQ(aaaa.header.rcode, 0);
  EXPECT_TRUE(aaaa.answers.empty());
  // cache's address is no group member of this policy, and private.
  EXPECT_EQ(f.AskParsed(QueryBytes("cache", Type::kA)).header.rcode, static_cast<uint8_t>(Rcode::kNxDomain));
  EXPECT_EQ(f.server->stats().forwarded, 0u);

  ServerFixture none(schema::NetworkPolicy::kNone, {}, {"127.0.0.1:9"});
  none.server->SetGroupNames({{"db", Ip("10.0.3.15")}});
  EXPECT_EQ(none.AskParsed(QueryBytes("db", Type::kA)).header.rcode, static_cast<uint8_t>(Rcode::kNxDomain));
}

TEST(DnsServer, EchoesEdnsAndTruncatesUdp) {
  ServerFixture f(schema::NetworkPolicy::kPublic, {}, {"127.0.0.1:9"});
  Message q = Query("example.com", Type::kTxt);
  Record opt;
  opt.type = static_cast<uint16_t>(Type::kOpt);
  opt.klass = 4096;
  q.additional.push_back(opt);
  Message r = f.AskParsed(*dns::Build(q));
  ASSERT_EQ(r.additional.size(), 1u);
  EXPECT_EQ(r.additional[0].type, static_cast<uint16_t>(Type::kOpt));
  EXPECT_EQ(r.additional[0].klass, kMaxUdpEdns);
}

TEST(DnsServer, RefusesABadServerAddress) {
  Dispatcher d;
  Policy p = MakePolicy(schema::NetworkPolicy::kPublic, {});
  PinSet pins;
  DnsServer::Options o;
  o.servers = {"dns.example.com"};
  auto s = DnsServer::Create(d, p, pins, o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("dns.example.com"), std::string::npos);
  o.servers = {"127.0.0.1:99999"};
  EXPECT_FALSE(DnsServer::Create(d, p, pins, o).ok());
}

// ---- against dnsmasq on 127.0.0.1 ----

// A port that was free a moment ago (bound and released).
uint16_t FreeUdpPort() {
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return 0;
  socklen_t len = sizeof sa;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len);
  return ntohs(sa.sin_port);
}

// Asks 127.0.0.1:port directly until it answers, for at most 5 s.
bool WaitForDns(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string q = QueryBytes("public.test", Type::kA, 7);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    ::sendto(fd.get(), q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      char buf[512];
      if (::recv(fd.get(), buf, sizeof buf, 0) > 0) return true;
    }
  }
  return false;
}

class DnsmasqTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/usr/sbin/dnsmasq", X_OK) != 0) GTEST_SKIP() << "dnsmasq is not installed (scripts/setup)";
    for (int attempt = 0; attempt < 3 && !ready_; ++attempt) {
      port_ = FreeUdpPort();
      ASSERT_NE(port_, 0);
      SpawnOptions o;
      o.argv = {"/usr/sbin/dnsmasq", "--no-daemon", "--port=" + std::to_string(port_),
                "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                "--address=/rebind.test/127.0.0.1", "--address=/private.test/10.0.0.5",
                "--address=/public.test/93.184.216.34", "--conf-file=/dev/null", "--pid-file="};
      o.stdout_fd = -2;
      o.stderr_fd = -2;
      auto child = ChildProcess::Spawn(o);
      ASSERT_TRUE(child.ok()) << child.error().message();
      dnsmasq_ = std::move(*child);
      ready_ = WaitForDns(port_);  // another process may have taken the port: retry
    }
    ASSERT_TRUE(ready_) << "dnsmasq did not answer on 127.0.0.1:" << port_;
  }

  std::string Server() const { return "127.0.0.1:" + std::to_string(port_); }

  uint16_t port_ = 0;
  bool ready_ = false;
  ChildProcess dnsmasq_;
};

TEST_F(DnsmasqTest, PublicAnswerIsKeptAndPinned) {
  ServerFixture f(schema::NetworkPolicy::kPublic, {}, {Server()});
  ASSERT_TRUE(f.server);
  Message m = f.AskParsed(QueryBytes("Public.Test", Type::kA, 0x4242));
  EXPECT_EQ(m.header.id, 0x4242);
  EXPECT_EQ(m.header.rcode, 0);
  EXPECT_TRUE(m.header.rd);
  EXPECT_TRUE(m.header.ra);
  ASSERT_EQ(m.questions.size(), 1u);
  EXPECT_EQ(m.questions[0].name, "Public.Test");
  EXPECT_EQ(AddressesOf(m), (std::vector<std::string>{"93.184.216.34"}));
  EXPECT_EQ(f.pins.NamesFor(Ip("93.184.216.34"), PinSet::Clock::now()),
            (std::vector<std::string>{"public.test"}));
  // dnsmasq gives TTL 0; the pin still lives for the minimum.
  EXPECT_EQ(f.pins.NamesFor(Ip("93.184.216.34"), PinSet::Clock::now() + std::chrono::seconds(59)).size(), 1u);
  EXPECT_EQ(f.server->stats().forwarded, 1u);
  EXPECT_EQ(f.server->pending(), 0u);
  // The pinned name now lets a name rule match the flow.
  Policy by_name = MakePolicy(schema::NetworkPolicy::kNone, {"allow@public.test:tcp:443"});
  EgressFlow flow{Ip("93.184.216.34"), schema::Protocol::kTcp, 443,
                  f.pins.NamesFor(Ip("93.184.216.34"), PinSet::Clock::now())};
  EXPECT_TRUE(by_name.Decide(flow).allow);
  // Over TCP too (the stack frames it; the server only sizes the answer).
  auto tcp = f.Ask(QueryBytes("public.test", Type::kA, 9), DnsServer::Transport::kTcp);
  ASSERT_TRUE(tcp);
  EXPECT_EQ(AddressesOf(*dns::Parse(*tcp)), (std::vector<std::string>{"93.184.216.34"}));
}

TEST_F(DnsmasqTest, LoopbackAndPrivateAnswersAreDroppedUnderPublic) {
  ServerFixture f(schema::NetworkPolicy::kPublic, {}, {Server()});
  ASSERT_TRUE(f.server);
  for (const char* name : {"rebind.test", "private.test"}) {
    Message m = f.AskParsed(QueryBytes(name, Type::kA));
    EXPECT_EQ(m.header.rcode, 0) << name;
    EXPECT_TRUE(m.answers.empty()) << name;
  }
  EXPECT_EQ(f.server->stats().dropped_addresses, 2u);
  EXPECT_TRUE(f.pins.NamesFor(Ip("127.0.0.1"), PinSet::Clock::now()).empty());
  EXPECT_TRUE(f.pins.NamesFor(Ip("10.0.0.5"), PinSet::Clock::now()).empty());
}

TEST_F(DnsmasqTest, AnExplicitRuleKeepsAPrivateAnswer) {
  // An empty answer proves the defence only when upstream answered (an
  // upstream timeout is an empty SERVFAIL): NOERROR, one address dropped.
  ServerFixture by_name(schema::NetworkPolicy::kPublic, {"allow@private.test:tcp:5432"}, {Server()});
  Message dropped = by_name.AskParsed(QueryBytes("private.test", Type::kA));
  EXPECT_EQ(dropped.header.rcode, 0);
  EXPECT_TRUE(AddressesOf(dropped).empty());
  EXPECT_EQ(by_name.server->stats().dropped_addresses, 1u);
  EXPECT_TRUE(by_name.pins.NamesFor(Ip("10.0.0.5"), PinSet::Clock::now()).empty());
  ServerFixture by_ip(schema::NetworkPolicy::kPublic, {"allow@private.test:tcp:5432", "allow@10.0.0.5:tcp:5432"},
                      {Server()});
  EXPECT_EQ(AddressesOf(by_ip.AskParsed(QueryBytes("private.test", Type::kA))),
            (std::vector<std::string>{"10.0.0.5"}));
  EXPECT_EQ(by_ip.pins.NamesFor(Ip("10.0.0.5"), PinSet::Clock::now()), (std::vector<std::string>{"private.test"}));
  ServerFixture by_cidr(schema::NetworkPolicy::kPublic, {"allow@10.0.0.0/24"}, {Server()});
  EXPECT_EQ(AddressesOf(by_cidr.AskParsed(QueryBytes("private.test", Type::kA))),
            (std::vector<std::string>{"10.0.0.5"}));
  // A name rule does not make loopback reachable.
  ServerFixture loop(schema::NetworkPolicy::kPublic, {"allow@rebind.test"}, {Server()});
  Message rebound = loop.AskParsed(QueryBytes("rebind.test", Type::kA));
  EXPECT_EQ(rebound.header.rcode, 0);
  EXPECT_TRUE(AddressesOf(rebound).empty());
  EXPECT_EQ(loop.server->stats().dropped_addresses, 1u);
}

TEST_F(DnsmasqTest, NoneAndGroupForwardOnlyNamesARuleCouldAllow) {
  for (auto profile : {schema::NetworkPolicy::kNone, schema::NetworkPolicy::kGroup}) {
    ServerFixture f(profile, {"allow@public.test:tcp:443"}, {Server()});
    ASSERT_TRUE(f.server);
    f.server->SetGroupNames({{"db", Ip("10.0.3.15")}});
    // Not a group name and no rule names it: refused here, nothing forwarded.
    for (const char* name : {"exfil-0123456789abcdef.public.test", "private.test", "rebind.test"}) {
      for (Type t : {Type::kA, Type::kAaaa, Type::kCname}) {
        EXPECT_EQ(f.AskParsed(QueryBytes(name, t)).header.rcode, static_cast<uint8_t>(Rcode::kRefused)) << name;
      }
    }
    EXPECT_EQ(f.server->stats().forwarded, 0u);
    EXPECT_EQ(f.server->stats().refused_names, 9u);
    // The name a rule allows goes upstream and comes back.
    EXPECT_EQ(AddressesOf(f.AskParsed(QueryBytes("public.test", Type::kA))),
              (std::vector<std::string>{"93.184.216.34"}));
    EXPECT_EQ(f.server->stats().forwarded, 1u);
  }
  // Group: its own names are still answered at home.
  ServerFixture g(schema::NetworkPolicy::kGroup, {}, {Server()});
  g.server->SetGroupNames({{"db", Ip("10.0.3.15")}});
  EXPECT_EQ(AddressesOf(g.AskParsed(QueryBytes("db", Type::kA))), (std::vector<std::string>{"10.0.3.15"}));
  EXPECT_EQ(g.AskParsed(QueryBytes("public.test", Type::kA)).header.rcode, static_cast<uint8_t>(Rcode::kRefused));
  EXPECT_EQ(g.server->stats().forwarded, 0u);
}

TEST_F(DnsmasqTest, UpstreamRefusalAndSilenceAreReported) {
  ServerFixture f(schema::NetworkPolicy::kPublic, {}, {Server()});
  // dnsmasq has no upstream for other names and refuses them; c-ares takes
  // that for a failed server (and would try the next one).
  Message m = f.AskParsed(QueryBytes("unknown.example", Type::kA));
  EXPECT_EQ(m.header.rcode, static_cast<uint8_t>(Rcode::kServFail));
  EXPECT_TRUE(m.answers.empty());
  // Killed: no answer at all, SERVFAIL after the timeout.
  dnsmasq_.Kill(SIGKILL);
  dnsmasq_.Wait();
  Message dead = f.AskParsed(QueryBytes("public.test", Type::kAaaa));
  EXPECT_EQ(dead.header.rcode, static_cast<uint8_t>(Rcode::kServFail));
  EXPECT_GE(f.server->stats().upstream_failures, 1u);
}

TEST_F(DnsmasqTest, DestroyingTheServerCancelsQueriesInFlight) {
  auto f = std::make_unique<ServerFixture>(schema::NetworkPolicy::kPublic, std::vector<std::string>{},
                                           std::vector<std::string>{Server()});
  bool replied = false;
  f->server->Handle(QueryBytes("public.test", Type::kA), [&](std::string) { replied = true; });
  EXPECT_EQ(f->server->pending(), 1u);
  f->server.reset();
  EXPECT_FALSE(replied);
}

}  // namespace
}  // namespace msb::net
