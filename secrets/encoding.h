// The encodings a placeholder can hide in, and the scanner that finds
// placeholders in them: raw, percent-encoded (once, any mix of escaped and
// literal bytes, any case of hex), percent-encoded more than once, and inside
// base64 (standard or URL-safe alphabet, at any byte alignment). Pure; no
// knowledge of where in a request the text came from (secrets/substitute.h
// decides that).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/base64.h"

namespace msb::secrets {

// Percent-decoding rounds tried when looking for a placeholder encoded more
// than once ("%256D..." is "%6D..." is "m...").
inline constexpr int kMaxPercentDecodeDepth = 3;

// Percent-decoded text with, for each decoded byte i, the offset in the
// source where it starts (source[i]); source[text.size()] is the source size.
// A '%' not followed by two hex digits stays a literal '%'.
struct PercentDecoded {
  std::string text;
  std::vector<size_t> source;
};
PercentDecoded PercentDecode(std::string_view text);

// Escapes every byte but the unreserved ones (ALPHA DIGIT - . _ ~) as %XX
// with upper-case hex: safe in a query, a form body or a path segment.
std::string PercentEncode(std::string_view bytes);

// Base64 as an HTTP client writes Basic credentials, strictly: the standard
// alphabet, a multiple of four characters, padding only at the end. nullopt
// for anything else. (Encoding: common/base64.h.)
std::optional<std::string> DecodeBase64Strict(std::string_view text);

// The substrings that the base64 of any text holding needle must hold: for
// each of the three byte alignments, the characters whose six bits all come
// from needle, in the standard and the URL-safe alphabet (six strings,
// duplicates removed).
std::vector<std::string> Base64Cores(std::string_view needle);

// How a placeholder was written.
enum class Form : int {
  kRaw = 0,      // as it is
  kPercent = 1,  // percent-encoded once (at least one byte escaped)
  kNested = 2,   // percent-encoded two or more times
  kBase64 = 3,   // inside base64 text
};
const char* ToString(Form form);

// One placeholder found in a text. begin/end delimit it in the scanned text
// for kRaw and kPercent; kNested and kBase64 say only that it is there.
struct Hit {
  size_t secret = 0;  // index into the placeholders given to the scanner
  Form form = Form::kRaw;
  size_t begin = 0;
  size_t end = 0;
  bool operator==(const Hit&) const = default;
};

// Finds placeholders of a fixed set in texts. The placeholders share a
// prefix (placeholder.h), which the scanner looks for first so that text
// without any placeholder costs a few linear searches. Immutable after
// construction; holds copies of the placeholders.
class PlaceholderScanner {
 public:
  explicit PlaceholderScanner(std::vector<std::string> placeholders);
  // Hits in text, kRaw/kPercent ordered by begin and never overlapping, then
  // kNested and kBase64 (at most one each per secret).
  std::vector<Hit> Scan(std::string_view text) const;

 private:
  void FindPlain(std::string_view text, const PercentDecoded* decoded, std::vector<Hit>* hits) const;

  std::vector<std::string> placeholders_;
  std::string anchor_;  // the shared prefix; empty when shorter than kMinAnchor
  std::vector<std::string> prefix_cores_;
  std::vector<std::vector<std::string>> cores_;  // per placeholder
};

}  // namespace msb::secrets
