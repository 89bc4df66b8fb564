// Tests for PeekClientHello: hellos made by OpenSSL's client and by hand,
// every split across TCP segments and TLS records, other protocols, each
// malformation rule, the byte bound, and properties over random input.
#include "secrets/client_hello.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <rapidcheck/gtest.h>

#include <string>
#include <vector>

#include "common/c_ptr.h"

namespace msb::secrets {
namespace {

using Bytes = std::vector<uint8_t>;

HelloResult Peek(const Bytes& b) { return PeekClientHello(b); }

void Put16(Bytes* b, size_t v) {
  b->push_back(static_cast<uint8_t>(v >> 8));
  b->push_back(static_cast<uint8_t>(v));
}

Bytes Vec16(const Bytes& inner) {
  Bytes b;
  Put16(&b, inner.size());
  b.insert(b.end(), inner.begin(), inner.end());
  return b;
}

Bytes Ext(uint16_t type, const Bytes& data) {
  Bytes b;
  Put16(&b, type);
  Bytes v = Vec16(data);
  b.insert(b.end(), v.begin(), v.end());
  return b;
}

Bytes SniExt(const std::string& name, uint8_t type = 0) {
  Bytes entry = {type};
  Bytes n = Vec16(Bytes(name.begin(), name.end()));
  entry.insert(entry.end(), n.begin(), n.end());
  return Ext(0, Vec16(entry));
}

Bytes AlpnExt(const std::vector<std::string>& names) {
  Bytes list;
  for (const std::string& n : names) {
    list.push_back(static_cast<uint8_t>(n.size()));
    list.insert(list.end(), n.begin(), n.end());
  }
  return Ext(16, Vec16(list));
}

// A handshake message (type + 24-bit length + body) from a ClientHello body.
Bytes Handshake(const Bytes& body, uint8_t type = 1) {
  Bytes h = {type, static_cast<uint8_t>(body.size() >> 16), static_cast<uint8_t>(body.size() >> 8),
             static_cast<uint8_t>(body.size())};
  h.insert(h.end(), body.begin(), body.end());
  return h;
}

Bytes HelloBody(const std::vector<Bytes>& extensions, bool extension_block = true) {
  Bytes b = {0x03, 0x03};
  b.insert(b.end(), 32, 0xab);  // random
  b.push_back(0);               // session id
  Put16(&b, 2);
  b.push_back(0x13);
  b.push_back(0x01);
  b.push_back(1);  // compression methods
  b.push_back(0);
  if (extension_block) {
    Bytes all;
    for (const Bytes& e : extensions) all.insert(all.end(), e.begin(), e.end());
    Bytes v = Vec16(all);
    b.insert(b.end(), v.begin(), v.end());
  }
  return b;
}

// Handshake bytes in records of at most fragment bytes each.
Bytes Records(const Bytes& handshake, size_t fragment = 16384, uint8_t type = 22) {
  Bytes out;
  for (size_t i = 0; i < handshake.size(); i += fragment) {
    size_t n = std::min(fragment, handshake.size() - i);
    out.push_back(type);
    out.push_back(0x03);
    out.push_back(0x01);
    Put16(&out, n);
    out.insert(out.end(), handshake.begin() + static_cast<ptrdiff_t>(i),
               handshake.begin() + static_cast<ptrdiff_t>(i + n));
  }
  return out;
}

Bytes HandHello(const std::vector<Bytes>& extensions) { return Records(Handshake(HelloBody(extensions))); }

// The first flight of OpenSSL's TLS client.
Bytes OpensslHello(const char* sni, const std::vector<std::string>& alpn) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  SslPtr ssl(SSL_new(ctx.get()));
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl.get(), in, out);  // the SSL owns both
  if (sni != nullptr) SSL_set_tlsext_host_name(ssl.get(), sni);
  if (!alpn.empty()) {
    Bytes wire;
    for (const std::string& a : alpn) {
      wire.push_back(static_cast<uint8_t>(a.size()));
      wire.insert(wire.end(), a.begin(), a.end());
    }
    SSL_set_alpn_protos(ssl.get(), wire.data(), static_cast<unsigned>(wire.size()));
  }
  EXPECT_EQ(SSL_connect(ssl.get()), -1);  // waits for the server
  char* data = nullptr;
  long len = BIO_get_mem_data(out, &data);
  return Bytes(data, data + len);
}

TEST(ClientHelloTest, OpensslClientHelloGivesSniAndAlpn) {
  Bytes hello = OpensslHello("API.GitHub.com", {"h2", "http/1.1"});
  HelloResult r = Peek(hello);
  ASSERT_EQ(r.verdict, HelloVerdict::kTls) << r.reason;
  EXPECT_EQ(r.hello.sni, "api.github.com");
  EXPECT_EQ(r.hello.alpn, (std::vector<std::string>{"h2", "http/1.1"}));
  EXPECT_TRUE(r.hello.offers_tls13);
  EXPECT_EQ(r.hello.legacy_version, 0x0303);
  EXPECT_FALSE(r.hello.has_ech);
}

TEST(ClientHelloTest, NoSniIsTlsWithoutName) {
  HelloResult r = Peek(OpensslHello(nullptr, {}));
  ASSERT_EQ(r.verdict, HelloVerdict::kTls) << r.reason;
  EXPECT_FALSE(r.hello.sni);
  EXPECT_TRUE(r.hello.alpn.empty());
}

TEST(ClientHelloTest, EveryProperPrefixNeedsMore) {
  Bytes hello = OpensslHello("example.com", {"http/1.1"});
  for (size_t n = 0; n < hello.size(); ++n) {
    Bytes prefix(hello.begin(), hello.begin() + static_cast<ptrdiff_t>(n));
    ASSERT_EQ(Peek(prefix).verdict, HelloVerdict::kNeedMore) << "prefix of " << n << " bytes";
  }
}

TEST(ClientHelloTest, HelloSplitAcrossRecordsOfAnySize) {
  Bytes one = OpensslHello("a.example.com", {"http/1.1"});
  Bytes handshake(one.begin() + 5, one.end());
  for (size_t fragment : {1, 2, 3, 4, 5, 7, 64, 300}) {
    Bytes records = Records(handshake, fragment);
    HelloResult r = Peek(records);
    ASSERT_EQ(r.verdict, HelloVerdict::kTls) << "fragments of " << fragment << ": " << r.reason;
    EXPECT_EQ(r.hello.sni, "a.example.com");
    if (records.size() < kMaxClientHelloBytes) {
      Bytes partial(records.begin(), records.end() - 1);
      EXPECT_EQ(Peek(partial).verdict, HelloVerdict::kNeedMore) << fragment;
    }
  }
}

TEST(ClientHelloTest, BytesAfterTheHelloAreNotLookedAt) {
  Bytes hello = HandHello({SniExt("x.example.org")});
  hello.insert(hello.end(), {0x17, 0x03, 0x03, 0x00, 0x01, 0xff, 0x00});
  HelloResult r = Peek(hello);
  ASSERT_EQ(r.verdict, HelloVerdict::kTls) << r.reason;
  EXPECT_EQ(r.hello.sni, "x.example.org");
}

TEST(ClientHelloTest, OtherProtocolsAreNotTls) {
  for (std::string s : {"GET / HTTP/1.1\r\n", "SSH-2.0-OpenSSH_9.6\r\n", "PRI * HTTP/2.0", "\x80\x2e\x01\x03\x01"}) {
    Bytes b(s.begin(), s.end());
    EXPECT_EQ(Peek(b).verdict, HelloVerdict::kNotTls) << s;
  }
  EXPECT_EQ(Peek(Bytes{0x16}).verdict, HelloVerdict::kNeedMore);
  EXPECT_EQ(Peek(Bytes{0x16, 0x02}).verdict, HelloVerdict::kNotTls);
  EXPECT_EQ(Peek(Bytes{}).verdict, HelloVerdict::kNeedMore);
}

TEST(ClientHelloTest, NoExtensionBlockIsTls) {
  HelloResult r = Peek(Records(Handshake(HelloBody({}, false))));
  ASSERT_EQ(r.verdict, HelloVerdict::kTls) << r.reason;
  EXPECT_FALSE(r.hello.sni);
}

TEST(ClientHelloTest, EchIsNoted) {
  HelloResult r = Peek(HandHello({SniExt("public.example.com"), Ext(0xfe0d, {1, 2, 3})}));
  ASSERT_EQ(r.verdict, HelloVerdict::kTls) << r.reason;
  EXPECT_TRUE(r.hello.has_ech);
  EXPECT_EQ(r.hello.sni, "public.example.com");
}

struct MalformedCase {
  const char* what;
  Bytes bytes;
};

TEST(ClientHelloTest, MalformedHellosAreFinal) {
  Bytes body = HelloBody({SniExt("ok.example.com")});
  Bytes bad_ext_len = body;
  bad_ext_len[bad_ext_len.size() - SniExt("ok.example.com").size() - 1] += 1;  // extensions length off by one
  Bytes two_names_entry = {0};
  {
    Bytes n1 = Vec16(Bytes{'a', '.', 'c', 'o'});
    two_names_entry.insert(two_names_entry.end(), n1.begin(), n1.end());
    two_names_entry.push_back(0);
    two_names_entry.insert(two_names_entry.end(), n1.begin(), n1.end());
  }
  std::vector<MalformedCase> cases = {
      {"not a ClientHello", Records(Handshake(body, 2))},
      {"duplicate extension", HandHello({SniExt("a.example.com"), AlpnExt({"x"}), AlpnExt({"y"})})},
      {"two host names", HandHello({Ext(0, Vec16(two_names_entry))})},
      {"IP address as name", HandHello({SniExt("192.168.1.1")})},
      {"trailing dot", HandHello({SniExt("example.com.")})},
      {"empty name", HandHello({SniExt("")})},
      {"space in name", HandHello({SniExt("exa mple.com")})},
      {"NUL in name", HandHello({SniExt(std::string("a\0b.com", 7))})},
      {"empty ALPN list", HandHello({Ext(16, Vec16({}))})},
      {"empty ALPN name", HandHello({AlpnExt({"http/1.1", ""})})},
      {"ALPN trailing bytes", HandHello({Ext(16, Bytes{0, 2, 1, 'x', 9})})},
      {"bad supported_versions", HandHello({Ext(43, Bytes{3, 3, 4, 3})})},
      {"extensions length", Records(Handshake(bad_ext_len))},
      {"truncated extension", Records(Handshake([&] {
         Bytes b = HelloBody({});
         b.resize(b.size() - 2);
         Put16(&b, 3);
         b.insert(b.end(), {0, 0, 0});
         return b;
       }()))},
      {"odd cipher suites", Records(Handshake([&] {
         Bytes b = {3, 3};
         b.insert(b.end(), 32, 0);
         b.push_back(0);
         Put16(&b, 3);
         b.insert(b.end(), {1, 2, 3, 1, 0});
         return b;
       }()))},
      {"session id too long", Records(Handshake([&] {
         Bytes b = {3, 3};
         b.insert(b.end(), 32, 0);
         b.push_back(33);
         b.insert(b.end(), 33, 0);
         Put16(&b, 2);
         b.insert(b.end(), {0x13, 1, 1, 0});
         return b;
       }()))},
      {"empty record", Bytes{22, 3, 1, 0, 0}},
      {"oversized record", Bytes{22, 3, 1, 0x40, 0x01}},
      {"alert record mid-hello",
       [&] {
         Bytes r = Records(Handshake(body), 10);
         r[15] = 21;  // the second record's type
         return r;
       }()},
      {"record version 2.x mid-hello",
       [&] {
         Bytes r = Records(Handshake(body), 10);
         r[16] = 2;
         return r;
       }()},
      {"hello length beyond the bound", Records(Bytes{1, 0x01, 0x00, 0x00, 3, 3})},
  };
  for (const MalformedCase& c : cases) {
    HelloResult r = Peek(c.bytes);
    EXPECT_EQ(r.verdict, HelloVerdict::kMalformed) << c.what;
    EXPECT_FALSE(r.reason.empty()) << c.what;
    // Final: more bytes do not change the answer.
    Bytes more = c.bytes;
    more.insert(more.end(), 100, 0);
    EXPECT_EQ(Peek(more).verdict, HelloVerdict::kMalformed) << c.what;
  }
}

TEST(ClientHelloTest, UnknownNameTypesAreSkipped) {
  HelloResult r = Peek(HandHello({SniExt("whatever", 7)}));
  ASSERT_EQ(r.verdict, HelloVerdict::kTls) << r.reason;
  EXPECT_FALSE(r.hello.sni);
}

TEST(ClientHelloTest, IncompleteHelloIsFinalAtTheBound) {
  // Records of one byte each: 6 bytes per handshake byte, so a 4 KiB hello
  // needs more than kMaxClientHelloBytes.
  Bytes big = HelloBody({Ext(21, Bytes(4000, 0)), SniExt("late.example.com")});
  Bytes records = Records(Handshake(big), 1);
  ASSERT_GT(records.size(), kMaxClientHelloBytes);
  Bytes at_bound(records.begin(), records.begin() + kMaxClientHelloBytes);
  Bytes below(records.begin(), records.begin() + kMaxClientHelloBytes - 1);
  EXPECT_EQ(Peek(below).verdict, HelloVerdict::kNeedMore);
  HelloResult r = Peek(at_bound);
  EXPECT_EQ(r.verdict, HelloVerdict::kMalformed);
  EXPECT_NE(r.reason.find("16384"), std::string::npos) << r.reason;
  EXPECT_EQ(Peek(records).verdict, HelloVerdict::kMalformed);
  // The same hello in one record fits.
  HelloResult whole = Peek(Records(Handshake(big)));
  ASSERT_EQ(whole.verdict, HelloVerdict::kTls) << whole.reason;
  EXPECT_EQ(whole.hello.sni, "late.example.com");
}

TEST(ClientHelloTest, VerdictNames) {
  EXPECT_STREQ(ToString(HelloVerdict::kNeedMore), "need-more");
  EXPECT_STREQ(ToString(HelloVerdict::kMalformed), "malformed");
}

// Any split of a valid hello into records gives the same answer.
RC_GTEST_PROP(ClientHelloProperty, RecordSplitsDoNotMatter, ()) {
  static const Bytes one = OpensslHello("svc.internal.example", {"http/1.1"});
  Bytes handshake(one.begin() + 5, one.end());
  Bytes records;
  size_t i = 0;
  while (i < handshake.size()) {
    size_t n = *rc::gen::inRange<size_t>(1, std::min<size_t>(handshake.size() - i, 400) + 1);
    Bytes part = Records(
        Bytes(handshake.begin() + static_cast<ptrdiff_t>(i), handshake.begin() + static_cast<ptrdiff_t>(i + n)));
    records.insert(records.end(), part.begin(), part.end());
    i += n;
  }
  HelloResult r = Peek(records);
  RC_ASSERT(r.verdict == HelloVerdict::kTls);
  RC_ASSERT(r.hello.sni == std::optional<std::string>("svc.internal.example"));
}

// A final answer on a prefix is the answer on the whole input.
RC_GTEST_PROP(ClientHelloProperty, FinalAnswersStayFinal, (std::vector<uint8_t> tail)) {
  Bytes bytes = *rc::gen::element(OpensslHello("p.example", {}), HandHello({SniExt("q.example")}), Bytes{22, 3, 1});
  bytes.insert(bytes.end(), tail.begin(), tail.end());
  size_t cut = *rc::gen::inRange<size_t>(0, bytes.size() + 1);
  HelloResult whole = Peek(bytes);
  HelloResult prefix = Peek(Bytes(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(cut)));
  if (prefix.verdict != HelloVerdict::kNeedMore) {
    RC_ASSERT(prefix.verdict == whole.verdict);
    RC_ASSERT(prefix.hello.sni == whole.hello.sni);
  }
}

}  // namespace
}  // namespace msb::secrets
