// The ClientHello reader: record reassembly and the hello's vectors, each
// length checked against its enclosing bytes. See client_hello.h.
#include "secrets/client_hello.h"

#include <algorithm>
#include <array>
#include <set>
#include <string_view>

#include "schema/values.h"

namespace msb::secrets {

namespace {

constexpr uint8_t kContentHandshake = 22;
constexpr uint8_t kHandshakeClientHello = 1;
constexpr size_t kRecordHeader = 5;
constexpr size_t kHandshakeHeader = 4;
constexpr uint16_t kExtServerName = 0;
constexpr uint16_t kExtAlpn = 16;
constexpr uint16_t kExtSupportedVersions = 43;
constexpr uint16_t kExtEch = 0xfe0d;
constexpr uint8_t kNameTypeHostName = 0;

constexpr std::array<const char*, 4> kVerdictNames = {"need-more", "not-tls", "tls", "malformed"};
static_assert(kVerdictNames.size() == static_cast<size_t>(HelloVerdict::kMalformed) + 1);

// A cursor over bytes whose reads fail, never overrun, when too few remain.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  size_t remaining() const { return bytes_.size() - pos_; }
  bool empty() const { return remaining() == 0; }

  bool U8(uint8_t* out) {
    if (remaining() < 1) return false;
    *out = bytes_[pos_++];
    return true;
  }
  bool U16(uint16_t* out) {
    if (remaining() < 2) return false;
    *out = static_cast<uint16_t>(bytes_[pos_] << 8 | bytes_[pos_ + 1]);
    pos_ += 2;
    return true;
  }
  bool Skip(size_t n) {
    if (remaining() < n) return false;
    pos_ += n;
    return true;
  }
  // A vector with a length prefix of prefix_bytes (1 or 2).
  bool Vector(size_t prefix_bytes, std::span<const uint8_t>* out) {
    size_t len = 0;
    if (prefix_bytes == 1) {
      uint8_t l = 0;
      if (!U8(&l)) return false;
      len = l;
    } else {
      uint16_t l = 0;
      if (!U16(&l)) return false;
      len = l;
    }
    if (remaining() < len) return false;
    *out = bytes_.subspan(pos_, len);
    pos_ += len;
    return true;
  }

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

HelloResult Malformed(std::string reason) {
  HelloResult r;
  r.verdict = HelloVerdict::kMalformed;
  r.reason = std::move(reason);
  return r;
}

// server_name (RFC 6066 §3): exactly one host_name, a DNS name.
bool ParseServerName(std::span<const uint8_t> data, ClientHello* hello, std::string* why) {
  Reader r(data);
  std::span<const uint8_t> list;
  if (!r.Vector(2, &list) || !r.empty() || list.empty()) {
    *why = "server_name extension: bad list length";
    return false;
  }
  Reader entries(list);
  while (!entries.empty()) {
    uint8_t type = 0;
    std::span<const uint8_t> name;
    if (!entries.U8(&type) || !entries.Vector(2, &name)) {
      *why = "server_name extension: truncated entry";
      return false;
    }
    if (type != kNameTypeHostName) continue;  // unknown name types are skipped
    if (hello->sni) {
      *why = "server_name extension: more than one host_name";
      return false;
    }
    std::string_view text(reinterpret_cast<const char*>(name.data()), name.size());
    std::optional<std::string> canonical;
    if (!text.empty() && text.back() != '.') canonical = schema::CanonicalHostName(text);
    if (!canonical) {
      *why = "server_name is not a DNS host name";
      return false;
    }
    hello->sni = std::move(*canonical);
  }
  return true;
}

// application_layer_protocol_negotiation (RFC 7301 §3.1).
bool ParseAlpn(std::span<const uint8_t> data, ClientHello* hello, std::string* why) {
  Reader r(data);
  std::span<const uint8_t> list;
  if (!r.Vector(2, &list) || !r.empty() || list.empty()) {
    *why = "ALPN extension: bad list length";
    return false;
  }
  Reader names(list);
  while (!names.empty()) {
    std::span<const uint8_t> name;
    if (!names.Vector(1, &name) || name.empty()) {
      *why = "ALPN extension: empty or truncated protocol name";
      return false;
    }
    hello->alpn.emplace_back(reinterpret_cast<const char*>(name.data()), name.size());
  }
  return true;
}

// supported_versions in a ClientHello (RFC 8446 §4.2.1): versions<2..254>.
bool ParseSupportedVersions(std::span<const uint8_t> data, ClientHello* hello, std::string* why) {
  Reader r(data);
  std::span<const uint8_t> list;
  if (!r.Vector(1, &list) || !r.empty() || list.size() < 2 || list.size() % 2 != 0) {
    *why = "supported_versions extension: bad list length";
    return false;
  }
  for (size_t i = 0; i < list.size(); i += 2) {
    if (list[i] == 0x03 && list[i + 1] == 0x04) hello->offers_tls13 = true;
  }
  return true;
}

bool ParseBody(std::span<const uint8_t> body, ClientHello* hello, std::string* why) {
  Reader r(body);
  std::span<const uint8_t> session_id, suites, compression;
  if (!r.U16(&hello->legacy_version) || !r.Skip(32)) {
    *why = "ClientHello truncated before the session id";
    return false;
  }
  if (!r.Vector(1, &session_id) || session_id.size() > 32) {
    *why = "ClientHello: bad session id";
    return false;
  }
  if (!r.Vector(2, &suites) || suites.size() < 2 || suites.size() % 2 != 0) {
    *why = "ClientHello: bad cipher suite list";
    return false;
  }
  if (!r.Vector(1, &compression) || compression.empty()) {
    *why = "ClientHello: bad compression method list";
    return false;
  }
  if (r.empty()) return true;  // no extensions (TLS 1.0-1.2 only)
  std::span<const uint8_t> extensions;
  if (!r.Vector(2, &extensions) || !r.empty()) {
    *why = "ClientHello: extensions do not fill the message exactly";
    return false;
  }
  Reader ext(extensions);
  std::set<uint16_t> seen;
  while (!ext.empty()) {
    uint16_t type = 0;
    std::span<const uint8_t> data;
    if (!ext.U16(&type) || !ext.Vector(2, &data)) {
      *why = "ClientHello: truncated extension";
      return false;
    }
    if (!seen.insert(type).second) {
      *why = "ClientHello: extension " + std::to_string(type) + " appears twice";
      return false;
    }
    switch (type) {
      case kExtServerName:
        if (!ParseServerName(data, hello, why)) return false;
        break;
      case kExtAlpn:
        if (!ParseAlpn(data, hello, why)) return false;
        break;
      case kExtSupportedVersions:
        if (!ParseSupportedVersions(data, hello, why)) return false;
        break;
      case kExtEch: hello->has_ech = true; break;
      default: break;
    }
  }
  return true;
}

}  // namespace

const char* ToString(HelloVerdict verdict) {
  auto i = static_cast<size_t>(verdict);
  return i < kVerdictNames.size() ? kVerdictNames[i] : "?";
}

HelloResult PeekClientHello(std::span<const uint8_t> bytes) {
  if (bytes.size() > kMaxClientHelloBytes) bytes = bytes.first(kMaxClientHelloBytes);
  if (bytes.empty()) return {};
  if (bytes[0] != kContentHandshake) return {HelloVerdict::kNotTls, {}, {}};
  if (bytes.size() >= 2 && bytes[1] != 0x03) return {HelloVerdict::kNotTls, {}, {}};

  // Reassembles the handshake bytes of consecutive handshake records, the
  // last one possibly partial, and judges the handshake header and body as
  // soon as their bytes are there.
  std::vector<uint8_t> handshake;
  ClientHello hello;
  size_t pos = 0;
  while (true) {
    if (handshake.size() >= kHandshakeHeader) {
      if (handshake[0] != kHandshakeClientHello) {
        return Malformed("the first handshake message is not a ClientHello");
      }
      size_t len = size_t{handshake[1]} << 16 | size_t{handshake[2]} << 8 | handshake[3];
      if (len > kMaxClientHelloBytes - kRecordHeader - kHandshakeHeader) {
        return Malformed("a ClientHello of " + std::to_string(len) + " bytes (more than fits in " +
                         std::to_string(kMaxClientHelloBytes) + ")");
      }
      if (handshake.size() >= kHandshakeHeader + len) {
        std::string why;
        if (!ParseBody(std::span(handshake).subspan(kHandshakeHeader, len), &hello, &why)) {
          return Malformed(why);
        }
        return {HelloVerdict::kTls, std::move(hello), {}};
      }
    }
    if (pos == bytes.size()) break;
    // The next record's header, judged as far as it is there.
    size_t avail = bytes.size() - pos;
    if (bytes[pos] != kContentHandshake) return Malformed("a non-handshake record before the ClientHello ended");
    if (avail >= 2 && bytes[pos + 1] != 0x03) return Malformed("a record with a version other than 3.x");
    if (avail < kRecordHeader) break;
    size_t len = size_t{bytes[pos + 3]} << 8 | bytes[pos + 4];
    if (len == 0) return Malformed("an empty handshake record");
    if (len > kMaxRecordFragment) return Malformed("a record longer than 2^14 bytes");
    if (pos == 0) hello.record_version = static_cast<uint16_t>(bytes[1] << 8 | bytes[2]);
    auto fragment = bytes.subspan(pos + kRecordHeader, std::min(len, avail - kRecordHeader));
    handshake.insert(handshake.end(), fragment.begin(), fragment.end());
    pos += kRecordHeader + fragment.size();
  }
  if (bytes.size() >= kMaxClientHelloBytes) {
    return Malformed("no complete ClientHello in the first " + std::to_string(kMaxClientHelloBytes) + " bytes");
  }
  return {};
}

}  // namespace msb::secrets
