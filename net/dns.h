// DNS messages (RFC 1035): parsing and building of the header, questions and
// resource records, name compression, and the TCP length-prefix framing.
// Not a resolver (dns_server.h) and not an EDNS implementation: an OPT record
// is carried as an opaque record.
//
// Theory of operation. Input comes from the guest or from an upstream
// server and is hostile: every read is bounds-checked against the message,
// a name is at most kMaxNameWire bytes on the wire and kMaxLabel per label,
// compression pointers must point before every byte the name has read so
// far (the bound only decreases, so a pointer loop cannot exist), and at most
// kMaxPointers pointers are followed per name. Section counts are checked
// against what the remaining bytes can hold before anything is allocated.
//
// Names are text without the trailing dot ("www.example.com"; the root is
// ""). Label bytes other than [A-Za-z0-9_-] are written as \DDD (decimal),
// so a label holding '.' or binary cannot be confused with two labels; Build
// reverses the escaping. Record data of A, AAAA and CNAME is decoded
// (address, target); other types keep their raw data, which Build writes as
// is (so it must hold no compression pointers — msb never forwards those).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "net/address.h"

namespace msb::net::dns {

constexpr size_t kHeaderSize = 12;
constexpr size_t kMaxLabel = 63;
constexpr size_t kMaxNameWire = 255;
constexpr int kMaxPointers = 64;
constexpr size_t kMaxMessage = 65535;
constexpr size_t kMaxUdpPlain = 512;  // without EDNS (RFC 1035 4.2.1)

enum class Type : uint16_t {
  kA = 1, kNs = 2, kCname = 5, kSoa = 6, kPtr = 12, kMx = 15, kTxt = 16,
  kAaaa = 28, kSrv = 33, kOpt = 41, kHttps = 65, kAny = 255,
};
constexpr uint16_t kClassIn = 1;

enum class Rcode : uint8_t {
  kNoError = 0, kFormErr = 1, kServFail = 2, kNxDomain = 3, kNotImp = 4, kRefused = 5,
};
const char* ToString(Rcode rcode);

struct Header {
  uint16_t id = 0;
  bool qr = false;  // response
  uint8_t opcode = 0;
  bool aa = false, tc = false, rd = false, ra = false;
  uint8_t rcode = 0;  // low 4 bits
};

struct Question {
  std::string name;
  uint16_t type = 0;
  uint16_t klass = kClassIn;
};

struct Record {
  std::string name;
  uint16_t type = 0;
  uint16_t klass = kClassIn;
  uint32_t ttl = 0;
  std::optional<IpAddress> address;  // A, AAAA
  std::string target;                // CNAME
  std::string rdata;                 // other types: raw
};

struct Message {
  Header header;
  std::vector<Question> questions;
  std::vector<Record> answers;
  std::vector<Record> authority;
  std::vector<Record> additional;
};

// Reads the 12-byte header only (its counts are ignored): the ID of a query
// whose body is malformed, so the FORMERR answer can echo it.
std::optional<Header> ParseHeader(std::string_view bytes);
// The whole message. Errors (kProtocol) say which part is malformed and where.
Result<Message> Parse(std::string_view bytes);
// Wire form. Names compressed when compress is true. Errors (kInvalidArgument):
// a name or label too long, a bad escape, A/AAAA without a matching address,
// more than 65535 bytes or records.
Result<std::string> Build(const Message& message, bool compress = true);

// A record's size on the wire is not known before building; this trims
// answers from the end (then authority and additional) until the message fits
// in max_size, setting TC when anything was dropped.
Result<std::string> BuildTruncated(Message message, size_t max_size);

// The EDNS UDP payload size a query advertises (its OPT record's class), or
// 0 when it has none.
uint16_t EdnsUdpSize(const Message& message);

// TCP framing: a 2-byte big-endian length before each message.
std::string FrameTcp(std::string_view message);

// Splits a TCP byte stream into messages. Feed bytes as they arrive; Next()
// returns each complete message. A zero length prefix is a protocol error
// (failed() turns true and stays).
class TcpDeframer {
 public:
  void Feed(std::string_view bytes);
  std::optional<std::string> Next();
  bool failed() const { return failed_; }
  size_t buffered() const { return buf_.size(); }

 private:
  std::string buf_;
  bool failed_ = false;
};

}  // namespace msb::net::dns
