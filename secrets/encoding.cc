// Percent and base64 coding and the placeholder scanner. See encoding.h.
#include "secrets/encoding.h"

#include <algorithm>
#include <array>

namespace msb::secrets {

namespace {

// Below this many shared leading bytes the scanner looks for each
// placeholder on its own.
constexpr size_t kMinAnchor = 6;

constexpr std::array<const char*, 4> kFormNames = {"raw", "percent-encoded", "percent-encoded twice", "base64"};
static_assert(kFormNames.size() == static_cast<size_t>(Form::kBase64) + 1);

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsBase64Char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

size_t Count(std::string_view text, std::string_view needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string_view::npos; pos = text.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}

bool ContainsAny(std::string_view text, const std::vector<std::string>& needles) {
  return std::any_of(needles.begin(), needles.end(),
                     [&](const std::string& n) { return text.find(n) != std::string_view::npos; });
}

}  // namespace

const char* ToString(Form form) {
  auto i = static_cast<size_t>(form);
  return i < kFormNames.size() ? kFormNames[i] : "?";
}

PercentDecoded PercentDecode(std::string_view text) {
  PercentDecoded out;
  out.text.reserve(text.size());
  out.source.reserve(text.size() + 1);
  for (size_t i = 0; i < text.size();) {
    out.source.push_back(i);
    int hi = -1, lo = -1;
    if (text[i] == '%' && i + 2 < text.size()) {
      hi = HexValue(text[i + 1]);
      lo = HexValue(text[i + 2]);
    }
    if (hi >= 0 && lo >= 0) {
      out.text.push_back(static_cast<char>(hi << 4 | lo));
      i += 3;
    } else {
      out.text.push_back(text[i]);
      i += 1;
    }
  }
  out.source.push_back(text.size());
  return out;
}

std::string PercentEncode(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(bytes.size() * 3);
  for (char c : bytes) {
    auto u = static_cast<unsigned char>(c);
    bool unreserved = (u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') || (u >= '0' && u <= '9') || u == '-' ||
                      u == '.' || u == '_' || u == '~';
    if (unreserved) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

std::optional<std::string> DecodeBase64Strict(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  size_t pad = 0;
  while (pad < 2 && pad < text.size() && text[text.size() - 1 - pad] == '=') ++pad;
  for (size_t i = 0; i < text.size() - pad; ++i) {
    if (!IsBase64Char(text[i])) return std::nullopt;
  }
  auto out = Base64Decode(text);
  if (!out.ok()) return std::nullopt;
  return *std::move(out);
}

std::vector<std::string> Base64Cores(std::string_view needle) {
  std::vector<std::string> cores;
  for (size_t shift = 0; shift < 3; ++shift) {
    std::string buf(shift, '\0');
    buf.append(needle);
    std::string enc = Base64Encode(buf);
    // Character i carries bits [6i, 6i+6); the needle has bits [8s, 8s+8L).
    size_t first = (8 * shift + 5) / 6;
    size_t last = (8 * shift + 8 * needle.size()) / 6;
    if (last <= first) continue;
    std::string core = enc.substr(first, last - first);
    std::string url = core;
    std::replace(url.begin(), url.end(), '+', '-');
    std::replace(url.begin(), url.end(), '/', '_');
    for (std::string* c : {&core, &url}) {
      if (std::find(cores.begin(), cores.end(), *c) == cores.end()) cores.push_back(*c);
    }
  }
  return cores;
}

PlaceholderScanner::PlaceholderScanner(std::vector<std::string> placeholders) : placeholders_(std::move(placeholders)) {
  if (!placeholders_.empty()) {
    std::string_view anchor = placeholders_[0];
    for (const std::string& p : placeholders_) {
      size_t n = 0;
      while (n < anchor.size() && n < p.size() && anchor[n] == p[n]) ++n;
      anchor = anchor.substr(0, n);
    }
    if (anchor.size() >= kMinAnchor) {
      anchor_ = std::string(anchor);
      prefix_cores_ = Base64Cores(anchor_);
    }
  }
  for (const std::string& p : placeholders_) cores_.push_back(Base64Cores(p));
}

void PlaceholderScanner::FindPlain(std::string_view text, const PercentDecoded* decoded, std::vector<Hit>* hits) const {
  std::string_view searched = decoded != nullptr ? std::string_view(decoded->text) : text;
  auto add = [&](size_t secret, size_t pos) {
    size_t len = placeholders_[secret].size();
    Hit h;
    h.secret = secret;
    h.begin = decoded != nullptr ? decoded->source[pos] : pos;
    h.end = decoded != nullptr ? decoded->source[pos + len] : pos + len;
    h.form = h.end - h.begin == len ? Form::kRaw : Form::kPercent;
    hits->push_back(h);
  };
  if (!anchor_.empty()) {
    for (size_t pos = searched.find(anchor_); pos != std::string_view::npos; pos = searched.find(anchor_, pos + 1)) {
      for (size_t s = 0; s < placeholders_.size(); ++s) {
        if (searched.compare(pos, placeholders_[s].size(), placeholders_[s]) == 0) {
          add(s, pos);
          break;
        }
      }
    }
  } else {
    for (size_t s = 0; s < placeholders_.size(); ++s) {
      const std::string& p = placeholders_[s];
      if (p.empty()) continue;
      for (size_t pos = searched.find(p); pos != std::string_view::npos; pos = searched.find(p, pos + p.size())) {
        add(s, pos);
      }
    }
  }
  std::sort(hits->begin(), hits->end(), [](const Hit& a, const Hit& b) { return a.begin < b.begin; });
  // Placeholders that overlap each other are not distinct: keep the first.
  std::vector<Hit> kept;
  for (const Hit& h : *hits) {
    if (kept.empty() || h.begin >= kept.back().end) kept.push_back(h);
  }
  *hits = std::move(kept);
}

std::vector<Hit> PlaceholderScanner::Scan(std::string_view text) const {
  std::vector<Hit> hits;
  if (placeholders_.empty()) return hits;
  bool has_percent = text.find('%') != std::string_view::npos;
  PercentDecoded decoded;
  if (has_percent) decoded = PercentDecode(text);
  FindPlain(text, has_percent ? &decoded : nullptr, &hits);

  std::vector<bool> nested(placeholders_.size(), false);
  if (has_percent) {
    std::string current = decoded.text;
    for (int depth = 2; depth <= kMaxPercentDecodeDepth; ++depth) {
      if (current.find('%') == std::string::npos) break;
      std::string next = PercentDecode(current).text;
      for (size_t s = 0; s < placeholders_.size(); ++s) {
        if (!nested[s] && Count(next, placeholders_[s]) > Count(current, placeholders_[s])) {
          nested[s] = true;
          hits.push_back({s, Form::kNested, 0, 0});
        }
      }
      current = std::move(next);
    }
  }

  std::vector<bool> base64(placeholders_.size(), false);
  std::vector<std::string_view> texts = {text};
  if (has_percent) texts.push_back(decoded.text);
  for (std::string_view t : texts) {
    if (!anchor_.empty() && !ContainsAny(t, prefix_cores_)) continue;
    for (size_t s = 0; s < placeholders_.size(); ++s) {
      if (!base64[s] && ContainsAny(t, cores_[s])) {
        base64[s] = true;
        hits.push_back({s, Form::kBase64, 0, 0});
      }
    }
  }
  return hits;
}

}  // namespace msb::secrets
