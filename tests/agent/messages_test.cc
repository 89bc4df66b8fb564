// Control-message encoding and validation: round trips, defaults for absent
// fields, and refusal of malformed or out-of-range input.
#include "agent/messages.h"

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include "agent/flow.h"
#include "agent/protocol.h"

namespace msb::agent {
namespace {

TEST(MessagesTest, ExecRoundTrip) {
  ExecRequest e;
  e.argv = {"sh", "-c", "echo hi"};
  e.env = {"A=1"};
  e.cwd = "/tmp";
  e.user = "1000:1000";
  e.tty = true;
  e.rows = 40;
  e.cols = 120;
  e.stdin_open = true;
  auto back = ParseExecRequest(Encode(e));
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back->argv, e.argv);
  EXPECT_EQ(back->env, e.env);
  EXPECT_EQ(back->cwd, "/tmp");
  EXPECT_EQ(back->user, "1000:1000");
  EXPECT_TRUE(back->tty);
  EXPECT_EQ(back->rows, 40);
  EXPECT_EQ(back->cols, 120);
  EXPECT_TRUE(back->stdin_open);
}

TEST(MessagesTest, ExecDefaultsAndErrors) {
  auto m = ParseExecRequest(R"({"argv":["true"]})");
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->tty);
  EXPECT_FALSE(m->stdin_open);
  EXPECT_EQ(m->rows, 24);

  auto missing = ParseExecRequest(R"({"env":[]})");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message(), "exec: field \"argv\": missing");
  EXPECT_FALSE(ParseExecRequest(R"({"argv":[]})").ok());
  EXPECT_FALSE(ParseExecRequest(R"({"argv":[1]})").ok());
  EXPECT_FALSE(ParseExecRequest(R"({"argv":["x"],"rows":-1})").ok());
  EXPECT_FALSE(ParseExecRequest(R"({"argv":["x"],"tty":"yes"})").ok());
  EXPECT_FALSE(ParseExecRequest("{not json").ok());
  EXPECT_FALSE(ParseExecRequest("[1,2]").ok());
  EXPECT_FALSE(ParseExecRequest(std::string(100000, '[')).ok());
}

TEST(MessagesTest, BootConfig) {
  auto b = ParseBootConfig(R"({"hostname":"web","env":["A=1"],"command":["/bin/sh"],
      "root":{"base_serial":"b","upper_serial":"u","ephemeral":true,"upper_size_bytes":1048576},
      "mounts":[],"network":null,"tty":false})");
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_EQ(b->hostname, "web");
  EXPECT_EQ(b->root.base_serial, "b");
  EXPECT_TRUE(b->root.ephemeral);
  EXPECT_EQ(b->root.upper_size_bytes, 1048576u);
  auto again = ParseBootConfig(Encode(*b));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->command, b->command);
  auto bad = ParseBootConfig(R"({"root":{"ephemeral":1}})");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(), "boot.root: field \"ephemeral\": expected true or false");
}

TEST(MessagesTest, BootSecurityAndReadOnlyRoot) {
  BootConfig b;
  b.root.read_only = true;
  b.security.no_new_privileges = true;
  b.security.capabilities = std::vector<std::string>{"CAP_KILL", "CAP_NET_BIND_SERVICE"};
  auto again = ParseBootConfig(Encode(b));
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_TRUE(again->root.read_only);
  EXPECT_TRUE(again->security.no_new_privileges);
  EXPECT_EQ(again->security.capabilities, b.security.capabilities);
  // An empty list keeps no capability; null or absent leaves them all.
  b.security.capabilities = std::vector<std::string>{};
  EXPECT_EQ(ParseBootConfig(Encode(b))->security.capabilities, std::vector<std::string>{});
  auto plain = ParseBootConfig(Encode(BootConfig{}));
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->root.read_only);
  EXPECT_FALSE(plain->security.no_new_privileges);
  EXPECT_FALSE(plain->security.capabilities.has_value());
  EXPECT_FALSE(ParseBootConfig("{}")->security.capabilities.has_value());
  auto bad = ParseBootConfig(R"({"security":{"capabilities":["CAP_KILL","NET_RAW"]}})");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(), "boot.security: field \"capabilities\": unknown capability \"NET_RAW\"");
  EXPECT_FALSE(ParseBootConfig(R"({"security":{"no_new_privileges":1}})").ok());
  EXPECT_FALSE(ParseBootConfig(R"({"security":{"capabilities":"ALL"}})").ok());
}

// The fields a restored VM needs (vm/template.h): round trip, defaults, bounds.
TEST(MessagesTest, BootEntropyClockAndRestored) {
  BootConfig b;
  b.entropy = std::string(2 * kMaxBootEntropy, 'a');
  b.time_ns = 1765000000123456789;
  b.restored = true;
  auto again = ParseBootConfig(Encode(b));
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(again->entropy, b.entropy);
  EXPECT_EQ(again->time_ns, b.time_ns);
  EXPECT_TRUE(again->restored);
  auto none = ParseBootConfig("{}");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->entropy, "");
  EXPECT_EQ(none->time_ns, 0);
  EXPECT_FALSE(none->restored);
  for (const std::string& bad : {std::string(2 * kMaxBootEntropy + 2, 'a'), std::string("abc"), std::string("AB"),
                                 std::string("zz")}) {
    auto r = ParseBootConfig(R"({"entropy":")" + bad + "\"}");
    EXPECT_FALSE(r.ok()) << bad;
  }
  EXPECT_FALSE(ParseBootConfig(R"({"time_ns":-1})").ok());
  EXPECT_FALSE(ParseBootConfig(R"({"time_ns":"1"})").ok());
  EXPECT_FALSE(ParseBootConfig(R"({"restored":1})").ok());
}

TEST(MessagesTest, BootCaPem) {
  const std::string pem = "-----BEGIN CERTIFICATE-----\r\nQUFB\r\n-----END CERTIFICATE-----\r\n";
  BootConfig b;
  b.ca_pem = pem;
  auto again = ParseBootConfig(Encode(b));
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(again->ca_pem, pem);
  EXPECT_EQ(ParseBootConfig("{}")->ca_pem, "");
  EXPECT_EQ(ParseBootConfig(Encode(BootConfig{}))->ca_pem, "");
  EXPECT_EQ(ParseBootConfig(R"({"ca_pem":""})")->ca_pem, "");

  auto error = [](const std::string& payload) {
    auto r = ParseBootConfig(payload);
    return r.ok() ? std::string("ok") : r.error().message();
  };
  EXPECT_EQ(error(R"({"ca_pem":1})"), "boot: field \"ca_pem\": expected a string");
  EXPECT_EQ(error(R"({"ca_pem":"-----BEGIN PRIVATE KEY-----\n"})"),
            "boot: field \"ca_pem\": does not start with \"-----BEGIN CERTIFICATE-----\"");
  EXPECT_EQ(error(R"({"ca_pem":"\n-----BEGIN CERTIFICATE-----\n"})"),
            "boot: field \"ca_pem\": does not start with \"-----BEGIN CERTIFICATE-----\"");
  for (const char* bad : {"\\t", "\\u0000", "\\u007f", "\\u00e9"}) {
    EXPECT_EQ(error(std::string(R"({"ca_pem":"-----BEGIN CERTIFICATE-----)") + bad + "\"}"),
              "boot: field \"ca_pem\": holds a byte that is not printable ASCII, CR or LF")
        << bad;
  }
  std::string header(kCaPemHeader);
  BootConfig big;
  big.ca_pem = header + std::string(kMaxCaPem - header.size(), 'A');
  EXPECT_TRUE(ParseBootConfig(Encode(big)).ok());
  big.ca_pem += "A";
  EXPECT_EQ(error(Encode(big)), "boot: field \"ca_pem\": longer than 16384 bytes");
}

TEST(MessagesTest, SmallBodies) {
  EXPECT_EQ(Encode(ResultMsg{}), R"({"ok":true})");
  EXPECT_EQ(*ParseResultMsg(R"({"error":"x"})")->error, "x");
  EXPECT_FALSE(ParseResultMsg("{}").ok());
  EXPECT_EQ(ParseExitInfo(Encode(ExitInfo{-1, 9}))->signal, 9);
  EXPECT_EQ(Encode(ExitInfo{127, 0}), R"({"code":127,"signal":0})");
  EXPECT_EQ(Encode(ExitInfo{127, 0, StartFailure::kNotFound}),
            R"({"code":127,"signal":0,"start_failure":"not_found"})");
  for (auto k : {StartFailure::kNone, StartFailure::kNotFound, StartFailure::kNotExecutable, StartFailure::kSetup}) {
    EXPECT_EQ(ParseExitInfo(Encode(ExitInfo{126, 0, k}))->start_failure, k);
  }
  // Only the three names: nothing else a guest writes there is accepted.
  EXPECT_FALSE(ParseExitInfo(R"({"code":-1,"signal":0})").ok());
  EXPECT_FALSE(ParseExitInfo(R"({"code":0,"signal":9})").ok());
  EXPECT_FALSE(ParseExitInfo(R"({"code":1,"signal":0,"start_failure":"none"})").ok());
  EXPECT_FALSE(ParseExitInfo(R"({"code":1,"signal":0,"start_failure":"Not_Found"})").ok());
  EXPECT_FALSE(ParseExitInfo(R"({"code":1,"signal":0,"start_failure":2})").ok());
  EXPECT_FALSE(ParseSignalRequest(R"({"signal":0})").ok());
  EXPECT_EQ(ParseCredit(R"({"bytes":4294967295})")->bytes, 4294967295u);
  EXPECT_FALSE(ParseCredit(R"({"bytes":4294967296})").ok());
  EXPECT_EQ(ParseHello(Encode(Hello{1, "test"}))->version, 1);
  // Invalid UTF-8 in a string never makes encoding throw.
  std::string enc = Encode(ErrorMsg{"bad \xff byte"});
  EXPECT_TRUE(ParseErrorMsg(enc).ok());
}

TEST(MessagesTest, FreezeTimeoutIsRequiredAndBounded) {
  EXPECT_EQ(ParseFreeze(Encode(Freeze{1500}))->timeout_ms, 1500);
  EXPECT_EQ(ParseFreeze(R"({"timeout_ms":600000})")->timeout_ms, kMaxFreezeMs);
  EXPECT_FALSE(ParseFreeze("{}").ok());
  EXPECT_FALSE(ParseFreeze(R"({"timeout_ms":0})").ok());
  EXPECT_FALSE(ParseFreeze(R"({"timeout_ms":600001})").ok());
  EXPECT_FALSE(ParseFreeze(R"({"timeout_ms":"1"})").ok());
  EXPECT_EQ(ToString(FrameKind::kFreeze), "freeze");
  EXPECT_EQ(ToString(FrameKind::kThaw), "thaw");
  EXPECT_TRUE(IsKnownKind(49));
  EXPECT_TRUE(IsKnownKind(50));
}

TEST(MessagesTest, BootLowerLayersRoundTripAndAreBounded) {
  BootConfig b;
  b.root.lower_serials = {"msb-lower-0", "msb-lower-1"};
  auto back = ParseBootConfig(Encode(b));
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back->root.lower_serials, b.root.lower_serials);
  EXPECT_TRUE(ParseBootConfig("{}")->root.lower_serials.empty());

  b.root.lower_serials.clear();
  for (size_t i = 0; i <= kMaxLowerLayers; ++i) b.root.lower_serials.push_back("msb-lower-" + std::to_string(i));
  auto many = ParseBootConfig(Encode(b));
  ASSERT_FALSE(many.ok());
  EXPECT_NE(many.error().message().find("lower_serials"), std::string::npos);
  b.root.lower_serials.pop_back();
  EXPECT_TRUE(ParseBootConfig(Encode(b)).ok());

  b.root.lower_serials = {std::string(kMaxDiskSerial + 1, 'x')};
  EXPECT_FALSE(ParseBootConfig(Encode(b)).ok());
  b.root.lower_serials = {""};
  EXPECT_FALSE(ParseBootConfig(Encode(b)).ok());
  EXPECT_FALSE(ParseBootConfig(R"({"root":{"lower_serials":[1]}})").ok());
}

// The status msb run and exec exit with, from what the guest reported.
TEST(MessagesTest, ShellExitCodeFollowsTheStartFailureThenTheSignal) {
  EXPECT_EQ(ShellExitCode(ExitInfo{0, 0}), 0);
  EXPECT_EQ(ShellExitCode(ExitInfo{125, 0}), 125);
  EXPECT_EQ(ShellExitCode(ExitInfo{127, 0}), 127);
  EXPECT_EQ(ShellExitCode(ExitInfo{-1, 9}), 137);
  // The reason decides, whatever code the guest put beside it.
  EXPECT_EQ(ShellExitCode(ExitInfo{0, 0, StartFailure::kNotFound}), 127);
  EXPECT_EQ(ShellExitCode(ExitInfo{0, 0, StartFailure::kNotExecutable}), 126);
  EXPECT_EQ(ShellExitCode(ExitInfo{1, 0, StartFailure::kSetup}), 126);
}

TEST(FlowTest, ReceiveCreditBatchesAndRefusesOverrun) {
  ReceiveCredit rc;
  ASSERT_TRUE(rc.OnReceive(kCreditWindow).ok());
  EXPECT_FALSE(rc.OnReceive(1).ok());
  EXPECT_EQ(rc.OnConsumed(1000), 0u);  // batched
  EXPECT_EQ(rc.OnConsumed(kCreditWindow / 4), kCreditWindow / 4 + 1000);
  EXPECT_TRUE(rc.OnReceive(1000).ok());
  SendCredit sc;
  sc.Consume(kCreditWindow);
  EXPECT_EQ(sc.available(), 0u);
  sc.Grant(0xffffffffu);
  sc.Grant(0xffffffffu);
  EXPECT_EQ(sc.available(), 1u << 30);
}

// A relay's view: credit passed on from its own receiver frees the window,
// never below nothing outstanding; a receiver that consumes each frame at once
// returns exactly that frame.
TEST(FlowTest, ReceiveCreditReturnedByARelay) {
  ReceiveCredit relay;
  ASSERT_TRUE(relay.OnReceive(kCreditWindow - 10).ok());
  relay.OnReturned(100);
  EXPECT_EQ(relay.outstanding(), kCreditWindow - 110);
  EXPECT_TRUE(relay.OnReceive(110).ok());
  EXPECT_FALSE(relay.OnReceive(1).ok());
  relay.OnReturned(0xffffffffu);
  EXPECT_EQ(relay.outstanding(), 0u);
  EXPECT_TRUE(relay.OnReceive(kCreditWindow).ok());

  ReceiveCredit direct;
  ASSERT_TRUE(direct.OnReceive(7).ok());
  EXPECT_EQ(direct.OnConsumed(7), 7u);
  ASSERT_TRUE(direct.OnReceive(0).ok());
  EXPECT_EQ(direct.OnConsumed(0), 0u);
}

}  // namespace
}  // namespace msb::agent

namespace msb::agent {
namespace {

// Whatever bytes arrive, the decoders answer with a value or an Error; they
// never throw or crash (the host parses what a hostile guest sends).
RC_GTEST_PROP(MessagesPropertyTest, DecodersNeverThrow, (const std::string& junk)) {
  std::string payloads[] = {junk, "{\"argv\":" + junk + "}", "{\"code\":" + junk + "}",
                            "{\"error\":" + junk + "}", std::string(junk.size() % 64, '[') + junk};
  for (const auto& p : payloads) {
    (void)ParseHello(p);
    (void)ParseBootConfig(p);
    (void)ParseReady(p);
    (void)ParseExecRequest(p);
    (void)ParseStarted(p);
    (void)ParseExitInfo(p);
    (void)ParseSignalRequest(p);
    (void)ParseResize(p);
    (void)ParseCredit(p);
    (void)ParsePathRequest(p);
    (void)ParseResultMsg(p);
    (void)ParseShutdown(p);
    (void)ParseErrorMsg(p);
  }
}

RC_GTEST_PROP(MessagesPropertyTest, ExecRequestRoundTrips,
              (const std::vector<std::string>& argv, const std::vector<std::string>& env,
               const std::string& cwd, bool tty, bool stdin_open)) {
  RC_PRE(!argv.empty());
  ExecRequest e;
  e.argv = argv;
  e.env = env;
  e.cwd = cwd;
  e.tty = tty;
  e.stdin_open = stdin_open;
  e.rows = *rc::gen::inRange(0, 65536);
  e.cols = *rc::gen::inRange(0, 65536);
  auto back = ParseExecRequest(Encode(e));
  RC_ASSERT(back.ok());
  // Strings survive, except invalid UTF-8, which encoding replaces by U+FFFD.
  if (back->cwd != cwd) RC_ASSERT(back->cwd.find("\xef\xbf\xbd") != std::string::npos);
  RC_ASSERT(back->argv.size() == argv.size());
  RC_ASSERT(back->tty == tty);
  RC_ASSERT(back->stdin_open == stdin_open);
  RC_ASSERT(back->rows == e.rows);
  RC_ASSERT(back->cols == e.cols);
}

}  // namespace
}  // namespace msb::agent
