// DNS message parsing and building (dns.h holds the theory of operation).
#include "net/dns.h"

#include <cctype>
#include <cstdio>
#include <map>

namespace msb::net::dns {

const char* ToString(Rcode rcode) {
  switch (rcode) {
    case Rcode::kNoError: return "NOERROR";
    case Rcode::kFormErr: return "FORMERR";
    case Rcode::kServFail: return "SERVFAIL";
    case Rcode::kNxDomain: return "NXDOMAIN";
    case Rcode::kNotImp: return "NOTIMP";
    case Rcode::kRefused: return "REFUSED";
  }
  return "?";
}

namespace {

Error Bad(const std::string& what, size_t at) {
  return Error(ErrorCode::kProtocol, "malformed DNS message: " + what + " at byte " + std::to_string(at));
}

class Reader {
 public:
  explicit Reader(std::string_view b) : b_(b) {}
  size_t pos() const { return pos_; }
  size_t left() const { return b_.size() - pos_; }
  bool U8(uint8_t* v) {
    if (left() < 1) return false;
    *v = static_cast<uint8_t>(b_[pos_++]);
    return true;
  }
  bool U16(uint16_t* v) {
    if (left() < 2) return false;
    *v = static_cast<uint16_t>((static_cast<uint8_t>(b_[pos_]) << 8) | static_cast<uint8_t>(b_[pos_ + 1]));
    pos_ += 2;
    return true;
  }
  bool U32(uint32_t* v) {
    uint16_t hi = 0, lo = 0;
    if (left() < 4) return false;
    U16(&hi);
    U16(&lo);
    *v = (uint32_t{hi} << 16) | lo;
    return true;
  }
  bool Bytes(size_t n, std::string_view* out) {
    if (left() < n) return false;
    *out = b_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  std::string_view all() const { return b_; }
  void Seek(size_t p) { pos_ = p; }

 private:
  std::string_view b_;
  size_t pos_ = 0;
};

bool PlainLabelByte(uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

void AppendLabel(std::string* out, std::string_view label) {
  if (!out->empty()) out->push_back('.');
  for (char ch : label) {
    auto c = static_cast<uint8_t>(ch);
    if (PlainLabelByte(c)) {
      out->push_back(ch);
    } else {
      char esc[5];
      std::snprintf(esc, sizeof esc, "\\%03u", c);
      out->append(esc);
    }
  }
}

// Reads a possibly compressed name at r's position; leaves r after the name's
// in-place part.
Result<std::string> ReadName(Reader& r) {
  std::string_view msg = r.all();
  size_t pos = r.pos();
  size_t limit = pos;        // a pointer must point before this; it only decreases
  size_t end_of_inline = 0;  // where r continues, once the first pointer is seen
  bool jumped = false;
  int pointers = 0;
  size_t wire = 0;
  std::string name;
  for (;;) {
    if (pos >= msg.size()) return Bad("name runs past the end", pos);
    auto len = static_cast<uint8_t>(msg[pos]);
    if ((len & 0xc0) == 0xc0) {
      if (pos + 1 >= msg.size()) return Bad("name pointer runs past the end", pos);
      size_t target = (static_cast<size_t>(len & 0x3f) << 8) | static_cast<uint8_t>(msg[pos + 1]);
      // Before every byte this name has read so far: limit strictly
      // decreases, so pointers cannot loop.
      if (target >= limit) return Bad("name pointer does not point backwards", pos);
      limit = target;
      if (++pointers > kMaxPointers) return Bad("too many name pointers", pos);
      if (!jumped) end_of_inline = pos + 2;
      jumped = true;
      pos = target;
      continue;
    }
    if ((len & 0xc0) != 0) return Bad("unsupported label type", pos);
    wire += 1 + len;
    if (wire > kMaxNameWire) return Bad("name longer than 255 bytes", pos);
    if (len == 0) {
      r.Seek(jumped ? end_of_inline : pos + 1);
      return name;
    }
    if (pos + 1 + len > msg.size()) return Bad("label runs past the end", pos);
    AppendLabel(&name, msg.substr(pos + 1, len));
    pos += 1 + len;
  }
}

Result<Record> ReadRecord(Reader& r) {
  Record rec;
  MSB_TRY(rec.name, ReadName(r));
  uint16_t rdlen;
  size_t at = r.pos();
  if (!r.U16(&rec.type) || !r.U16(&rec.klass) || !r.U32(&rec.ttl) || !r.U16(&rdlen)) {
    return Bad("record header truncated", at);
  }
  size_t rd_start = r.pos();
  std::string_view rdata;
  if (!r.Bytes(rdlen, &rdata)) return Bad("record data runs past the end", rd_start);
  if (rec.type == static_cast<uint16_t>(Type::kA) || rec.type == static_cast<uint16_t>(Type::kAaaa)) {
    size_t want = rec.type == static_cast<uint16_t>(Type::kA) ? 4 : 16;
    if (rdlen != want) return Bad("address record of " + std::to_string(rdlen) + " bytes", rd_start);
    rec.address = IpAddress::FromBytes(reinterpret_cast<const uint8_t*>(rdata.data()), rdlen);
  } else if (rec.type == static_cast<uint16_t>(Type::kCname)) {
    // The target may be compressed against the whole message.
    Reader sub(r.all().substr(0, rd_start + rdlen));
    sub.Seek(rd_start);
    MSB_TRY(rec.target, ReadName(sub));
    if (sub.pos() != rd_start + rdlen) return Bad("CNAME data longer than its name", rd_start);
  } else {
    rec.rdata = std::string(rdata);
  }
  return rec;
}

Header DecodeHeader(std::string_view b) {
  auto u8 = [&](size_t i) { return static_cast<uint8_t>(b[i]); };
  Header h;
  h.id = static_cast<uint16_t>((u8(0) << 8) | u8(1));
  uint8_t f1 = u8(2), f2 = u8(3);
  h.qr = f1 & 0x80;
  h.opcode = (f1 >> 3) & 0x0f;
  h.aa = f1 & 0x04;
  h.tc = f1 & 0x02;
  h.rd = f1 & 0x01;
  h.ra = f2 & 0x80;
  h.rcode = f2 & 0x0f;
  return h;
}

// Name text -> labels (undoing \DDD and \c escapes).
Result<std::vector<std::string>> SplitName(std::string_view name) {
  std::vector<std::string> labels;
  if (name.empty() || name == ".") return labels;
  std::string cur;
  size_t wire = 1;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (c == '.') {
      if (cur.empty()) return Error(ErrorCode::kInvalidArgument, "DNS name \"" + std::string(name) + "\" has an empty label");
      wire += 1 + cur.size();
      labels.push_back(std::move(cur));
      cur.clear();
      continue;
    }
    if (c == '\\') {
      if (i + 3 < name.size() && isdigit(static_cast<unsigned char>(name[i + 1])) &&
          isdigit(static_cast<unsigned char>(name[i + 2])) && isdigit(static_cast<unsigned char>(name[i + 3]))) {
        int v = (name[i + 1] - '0') * 100 + (name[i + 2] - '0') * 10 + (name[i + 3] - '0');
        if (v > 255) return Error(ErrorCode::kInvalidArgument, "DNS name escape out of range");
        cur.push_back(static_cast<char>(v));
        i += 3;
      } else if (i + 1 < name.size()) {
        cur.push_back(name[++i]);
      } else {
        return Error(ErrorCode::kInvalidArgument, "DNS name ends in a backslash");
      }
    } else {
      cur.push_back(c);
    }
    if (cur.size() > kMaxLabel) {
      return Error(ErrorCode::kInvalidArgument, "DNS label longer than 63 bytes in \"" + std::string(name) + "\"");
    }
  }
  if (!cur.empty()) {
    wire += 1 + cur.size();
    labels.push_back(std::move(cur));
  }
  if (wire > kMaxNameWire) return Error(ErrorCode::kInvalidArgument, "DNS name longer than 255 bytes");
  return labels;
}

class Writer {
 public:
  explicit Writer(bool compress) : compress_(compress) {}
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U16(uint16_t v) {
    U8(static_cast<uint8_t>(v >> 8));
    U8(static_cast<uint8_t>(v));
  }
  void U32(uint32_t v) {
    U16(static_cast<uint16_t>(v >> 16));
    U16(static_cast<uint16_t>(v));
  }
  void Raw(std::string_view s) { out_.append(s); }
  Status Name(std::string_view text) {
    MSB_TRY(auto labels, SplitName(text));
    for (size_t i = 0; i < labels.size(); ++i) {
      std::string suffix = Key(labels, i);
      if (compress_) {
        auto it = offsets_.find(suffix);
        if (it != offsets_.end()) {
          U16(static_cast<uint16_t>(0xc000 | it->second));
          return OkStatus();
        }
        if (out_.size() < 0x4000) offsets_.emplace(suffix, out_.size());
      }
      U8(static_cast<uint8_t>(labels[i].size()));
      Raw(labels[i]);
    }
    U8(0);
    return OkStatus();
  }
  std::string& out() { return out_; }

 private:
  // Suffix key: labels with their lengths. Case-sensitive, so a compressed
  // name keeps its own spelling (the guest may randomise case, 0x20).
  static std::string Key(const std::vector<std::string>& labels, size_t from) {
    std::string k;
    for (size_t i = from; i < labels.size(); ++i) {
      k.push_back(static_cast<char>(labels[i].size()));
      k.append(labels[i]);
    }
    return k;
  }
  bool compress_;
  std::string out_;
  std::map<std::string, size_t> offsets_;
};

Status WriteRecord(Writer& w, const Record& rec) {
  MSB_TRY_STATUS(w.Name(rec.name));
  w.U16(rec.type);
  w.U16(rec.klass);
  w.U32(rec.ttl);
  size_t len_at = w.out().size();
  w.U16(0);
  if (rec.type == static_cast<uint16_t>(Type::kA) || rec.type == static_cast<uint16_t>(Type::kAaaa)) {
    bool v4 = rec.type == static_cast<uint16_t>(Type::kA);
    if (!rec.address || rec.address->is_v4() != v4) {
      return Error(ErrorCode::kInvalidArgument, "DNS record " + rec.name + ": " + (v4 ? "A" : "AAAA") +
                                                    " record without an " + (v4 ? "IPv4" : "IPv6") + " address");
    }
    w.Raw(std::string_view(reinterpret_cast<const char*>(rec.address->bytes().data()), rec.address->size()));
  } else if (rec.type == static_cast<uint16_t>(Type::kCname)) {
    MSB_TRY_STATUS(w.Name(rec.target));
  } else {
    w.Raw(rec.rdata);
  }
  size_t rdlen = w.out().size() - len_at - 2;
  if (rdlen > 0xffff) return Error(ErrorCode::kInvalidArgument, "DNS record data longer than 65535 bytes");
  w.out()[len_at] = static_cast<char>(rdlen >> 8);
  w.out()[len_at + 1] = static_cast<char>(rdlen);
  return OkStatus();
}

}  // namespace

std::optional<Header> ParseHeader(std::string_view bytes) {
  if (bytes.size() < kHeaderSize) return std::nullopt;
  return DecodeHeader(bytes);
}

Result<Message> Parse(std::string_view bytes) {
  if (bytes.size() < kHeaderSize) return Bad("shorter than the 12-byte header", 0);
  if (bytes.size() > kMaxMessage) return Bad("longer than 65535 bytes", 0);
  Message m;
  m.header = DecodeHeader(bytes);
  Reader r(bytes);
  r.Seek(4);
  uint16_t qd, an, ns, ar;
  r.U16(&qd);
  r.U16(&an);
  r.U16(&ns);
  r.U16(&ar);
  // A question takes at least 5 bytes, a record at least 11: refuse counts
  // the message cannot hold before reserving anything.
  size_t min = size_t{qd} * 5 + (size_t{an} + ns + ar) * 11;
  if (min > r.left()) return Bad("section counts exceed the message size", 4);
  m.questions.reserve(qd);
  for (uint16_t i = 0; i < qd; ++i) {
    Question q;
    MSB_TRY(q.name, ReadName(r));
    size_t at = r.pos();
    if (!r.U16(&q.type) || !r.U16(&q.klass)) return Bad("question truncated", at);
    m.questions.push_back(std::move(q));
  }
  for (auto [count, section] : {std::pair{an, &m.answers}, {ns, &m.authority}, {ar, &m.additional}}) {
    section->reserve(count);
    for (uint16_t i = 0; i < count; ++i) {
      MSB_TRY(Record rec, ReadRecord(r));
      section->push_back(std::move(rec));
    }
  }
  return m;
}

Result<std::string> Build(const Message& m, bool compress) {
  for (size_t n : {m.questions.size(), m.answers.size(), m.authority.size(), m.additional.size()}) {
    if (n > 0xffff) return Error(ErrorCode::kInvalidArgument, "DNS section with more than 65535 entries");
  }
  Writer w(compress);
  const Header& h = m.header;
  w.U16(h.id);
  w.U8(static_cast<uint8_t>((h.qr ? 0x80 : 0) | ((h.opcode & 0x0f) << 3) | (h.aa ? 0x04 : 0) |
                            (h.tc ? 0x02 : 0) | (h.rd ? 0x01 : 0)));
  w.U8(static_cast<uint8_t>((h.ra ? 0x80 : 0) | (h.rcode & 0x0f)));
  w.U16(static_cast<uint16_t>(m.questions.size()));
  w.U16(static_cast<uint16_t>(m.answers.size()));
  w.U16(static_cast<uint16_t>(m.authority.size()));
  w.U16(static_cast<uint16_t>(m.additional.size()));
  for (const Question& q : m.questions) {
    MSB_TRY_STATUS(w.Name(q.name));
    w.U16(q.type);
    w.U16(q.klass);
  }
  for (const auto* section : {&m.answers, &m.authority, &m.additional}) {
    for (const Record& rec : *section) MSB_TRY_STATUS(WriteRecord(w, rec));
  }
  if (w.out().size() > kMaxMessage) return Error(ErrorCode::kInvalidArgument, "DNS message longer than 65535 bytes");
  return std::move(w.out());
}

Result<std::string> BuildTruncated(Message m, size_t max_size) {
  for (;;) {
    MSB_TRY(std::string out, Build(m, true));
    if (out.size() <= max_size) return out;
    m.header.tc = true;
    if (!m.answers.empty()) {
      m.answers.pop_back();
    } else if (!m.authority.empty()) {
      m.authority.pop_back();
    } else if (!m.additional.empty()) {
      m.additional.pop_back();
    } else {
      return Error(ErrorCode::kInvalidArgument,
                   "DNS message does not fit in " + std::to_string(max_size) + " bytes even without records");
    }
  }
}

uint16_t EdnsUdpSize(const Message& m) {
  for (const Record& r : m.additional) {
    if (r.type == static_cast<uint16_t>(Type::kOpt)) return r.klass;
  }
  return 0;
}

std::string FrameTcp(std::string_view message) {
  std::string out;
  out.reserve(message.size() + 2);
  out.push_back(static_cast<char>(message.size() >> 8));
  out.push_back(static_cast<char>(message.size()));
  out.append(message);
  return out;
}

void TcpDeframer::Feed(std::string_view bytes) {
  if (!failed_) buf_.append(bytes);
}

std::optional<std::string> TcpDeframer::Next() {
  if (failed_ || buf_.size() < 2) return std::nullopt;
  size_t len = (static_cast<size_t>(static_cast<uint8_t>(buf_[0])) << 8) | static_cast<uint8_t>(buf_[1]);
  if (len == 0) {
    failed_ = true;
    buf_.clear();
    return std::nullopt;
  }
  if (buf_.size() < 2 + len) return std::nullopt;
  std::string msg = buf_.substr(2, len);
  buf_.erase(0, 2 + len);
  return msg;
}

}  // namespace msb::net::dns
