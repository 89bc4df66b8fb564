// PeekClientHello: decides from the first bytes a guest sent on a TCP flow
// whether the flow is TLS and, if so, which server name (SNI) and application
// protocols (ALPN) its ClientHello asks for. A pure function over the bytes
// buffered so far; it consumes nothing and answers the same for the same
// bytes. Not a TLS implementation: it reads one message and verifies nothing.
//
// Theory of operation
//
// Scope: the first flight of a TLS 1.0-1.3 client, which is one handshake
// message, ClientHello (RFC 8446 §4.1.2), carried in one or more TLSPlaintext
// records (§5.1) that may arrive in any split of TCP segments. The supervisor
// uses the answer to choose between relaying the flow untouched and
// intercepting it (secrets/substitute.h: SniMatchesAnySecret); nothing goes
// upstream before the answer is final.
//
// Goals: a final answer from at most kMaxClientHelloBytes of buffered input;
// every length read from the input checked against the bytes that are there
// (a record's length against the record layer, the handshake length against
// the reassembled handshake bytes, each vector against its enclosing one);
// the server name validated as a DNS host name and returned lower-case.
// Non-goals: SSLv2-compatible hellos (answered kNotTls), anything after the
// ClientHello, ECH (an encrypted inner hello is opaque; has_ech says one was
// offered and sni is then the outer, public name).
//
// Answers (HelloVerdict):
//   kNeedMore  the bytes so far are a valid beginning; feed more.
//   kNotTls    the first byte is not a handshake record (22) or the record
//              version's major byte is not 3: another protocol, or SSLv2.
//   kTls       a complete, well-formed ClientHello: see ClientHello.
//   kMalformed the bytes claim to be TLS and are not a valid ClientHello, or
//              the hello did not complete within kMaxClientHelloBytes. reason
//              says which rule failed.
// kNotTls, kTls and kMalformed are final: more bytes never change them.
//
// Record layer: each record is type(1) version(2) length(2) fragment. Every
// record up to the end of the ClientHello must be a handshake record with a
// fragment of 1..kMaxRecordFragment bytes (RFC 8446 §5.1 forbids empty
// handshake fragments and interleaving other record types). The fragments are
// concatenated; the handshake header is type(1) = client_hello, length(3), and
// the body is parsed once length bytes are there. Bytes after the ClientHello
// (a second record, early data) are not looked at.
//
// ClientHello body: legacy_version(2) random(32) session_id<0..32>
// cipher_suites<2..2^16-2> (even) compression_methods<1..2^8-1>, then either
// nothing or extensions<0..2^16-1> filling the body exactly. Each extension
// type may appear once. server_name (0): a list with exactly one entry of
// type host_name (0), a DNS name without a trailing dot. ALPN (16): a
// non-empty list of non-empty names. supported_versions (43) and
// encrypted_client_hello (0xfe0d) are noted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace msb::secrets {

// The most bytes looked at before the answer is final.
inline constexpr size_t kMaxClientHelloBytes = 16 * 1024;
// The largest TLSPlaintext fragment (2^14, RFC 8446 §5.1).
inline constexpr size_t kMaxRecordFragment = 16 * 1024;

enum class HelloVerdict : int { kNeedMore = 0, kNotTls = 1, kTls = 2, kMalformed = 3 };
const char* ToString(HelloVerdict verdict);

struct ClientHello {
  uint16_t record_version = 0;     // of the first record
  uint16_t legacy_version = 0;     // in the hello (0x0303 for TLS 1.2 and 1.3)
  std::optional<std::string> sni;  // validated, lower-case; none when not sent
  std::vector<std::string> alpn;   // in the client's order, as sent
  bool offers_tls13 = false;       // supported_versions was sent and lists 0x0304
  bool has_ech = false;            // encrypted_client_hello was sent
};

struct HelloResult {
  HelloVerdict verdict = HelloVerdict::kNeedMore;
  ClientHello hello;   // kTls only
  std::string reason;  // kMalformed only: one line
};

// Judges the bytes the guest sent so far on a flow (from its first byte).
HelloResult PeekClientHello(std::span<const uint8_t> bytes);

}  // namespace msb::secrets
