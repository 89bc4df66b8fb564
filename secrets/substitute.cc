// The substitution engine: find placeholders in every part of a request,
// judge the gates, rewrite. See substitute.h for the theory of operation.
#include "secrets/substitute.h"

#include <algorithm>
#include <array>
#include <set>
#include <utility>

#include "schema/values.h"

namespace msb::secrets {

namespace {

constexpr std::array<const char*, 3> kVerdictNames = {"pass-through", "substituted", "blocked"};
static_assert(kVerdictNames.size() == static_cast<size_t>(Verdict::kBlocked) + 1);

// Where in a request a placeholder was found.
enum class Place : int {
  kRequestLine = 0,  // method or version
  kPath = 1,         // the target up to '?'
  kQuery = 2,
  kFieldName = 3,
  kFieldValue = 4,
  kBasicAuth = 5,  // the decoded credentials of Authorization: Basic
  kBody = 6,
  kTrailer = 7,
};

struct Found {
  size_t secret = 0;
  Place place = Place::kRequestLine;
  Form form = Form::kRaw;
  size_t field = 0;  // the field's index for kFieldName, kFieldValue, kBasicAuth
};

// A short printable quote of guest bytes for a reason line.
std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < 64; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    out += (c >= 0x20 && c < 0x7f && c != '"') ? static_cast<char>(c) : '?';
  }
  if (s.size() > 64) out += "...";
  return out + "\"";
}

// text with every secret value replaced by "[secret NAME]".
std::string RedactValues(std::string_view text, const std::vector<SecretBinding>& secrets) {
  std::string out(text);
  for (const SecretBinding& s : secrets) {
    if (s.value.empty()) continue;
    std::string mark = "[secret " + s.name + "]";
    for (size_t pos = out.find(s.value); pos != std::string::npos; pos = out.find(s.value, pos + mark.size())) {
      out.replace(pos, s.value.size(), mark);
    }
  }
  return out;
}

// Where a placeholder was found, in words; a field's name is guest text.
std::string PlaceName(const Found& f, const HttpRequest& request, const std::vector<SecretBinding>& secrets) {
  switch (f.place) {
    case Place::kRequestLine: return "the request line";
    case Place::kPath: return "the request path";
    case Place::kQuery: return "the query";
    case Place::kFieldName: return "a field name";
    case Place::kFieldValue: {
      std::string name = RedactValues(request.headers[f.field].name, secrets);
      return "the " + (name.size() > 64 ? name.substr(0, 64) + "..." : name) + " field";
    }
    case Place::kBasicAuth: return "the Authorization: Basic credentials";
    case Place::kBody: return "the body";
    case Place::kTrailer: return "the trailers";
  }
  return "?";
}

// The inject flag that allows a place, or nullptr when nothing does.
const char* InjectFlagName(Place place) {
  switch (place) {
    case Place::kFieldValue: return "headers";
    case Place::kBasicAuth: return "basic_auth";
    case Place::kQuery: return "query";
    case Place::kBody: return "body";
    default: return nullptr;
  }
}

bool FlagFor(const InjectFlags& inject, Place place) {
  switch (place) {
    case Place::kFieldValue: return inject.headers;
    case Place::kBasicAuth: return inject.basic_auth;
    case Place::kQuery: return inject.query;
    case Place::kBody: return inject.body;
    default: return false;
  }
}

// Forms a place can substitute: raw everywhere injectable; percent-encoded
// once in the query and the body.
bool FormAllowed(Place place, Form form) {
  if (form == Form::kRaw) return InjectFlagName(place) != nullptr;
  if (form == Form::kPercent) return place == Place::kQuery || place == Place::kBody;
  return false;
}

// The value is written into a field as it is: it must be a valid field value.
bool ValidInField(std::string_view value) {
  for (char c : value) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 && u != '\t') return false;
    if (u == 0x7f) return false;
  }
  return true;
}

// The "Basic" credentials of an Authorization value, when it has that form.
std::optional<std::string_view> BasicToken(std::string_view value) {
  size_t sp = value.find(' ');
  if (sp == std::string_view::npos || !EqualsIgnoreCase(value.substr(0, sp), "Basic")) return std::nullopt;
  std::string_view token = value.substr(sp + 1);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  return token;
}

// The authority of an absolute-form target ("https://host:443/x" -> "host:443").
std::optional<std::string_view> AbsoluteAuthority(std::string_view target) {
  size_t scheme_end = target.find("://");
  if (scheme_end == std::string_view::npos || target.front() == '/') return std::nullopt;
  std::string_view rest = target.substr(scheme_end + 3);
  return rest.substr(0, rest.find_first_of("/?"));
}

// How a value is written in a place: as it is, or percent-encoded.
enum class Writing { kAsIs, kPercentEncoded, kLikeTheHit };

// text with its kRaw/kPercent hits replaced by their secrets' values. Copies
// of a value made on the way are wiped.
std::string Rewrite(std::string_view text, const std::vector<Hit>& hits, const std::vector<SecretBinding>& secrets,
                    Writing writing) {
  std::string out;
  out.reserve(text.size() + 64);
  size_t at = 0;
  for (const Hit& h : hits) {
    if (h.form != Form::kRaw && h.form != Form::kPercent) continue;
    out.append(text.substr(at, h.begin - at));
    std::string_view value = secrets[h.secret].value;
    bool encode = writing == Writing::kPercentEncoded || (writing == Writing::kLikeTheHit && h.form == Form::kPercent);
    if (encode) {
      std::string encoded = PercentEncode(value);
      out.append(encoded);
      WipeString(&encoded);
    } else {
      out.append(value);
    }
    at = h.end;
  }
  out.append(text.substr(at));
  return out;
}

// Every part of a request scanned once: the findings and, for the parts
// that can be rewritten, their hits.
struct Scanned {
  std::vector<Found> found;
  std::vector<Hit> query;
  std::vector<std::vector<Hit>> fields;           // per header: hits in the value
  std::vector<std::optional<std::string>> basic;  // per header: decoded Basic credentials
  std::vector<std::vector<Hit>> basic_hits;
  std::vector<Hit> body;
};

void Note(const std::vector<Hit>& hits, Place place, size_t field, std::vector<Found>* found) {
  for (const Hit& h : hits) found->push_back({h.secret, place, h.form, field});
}

Scanned ScanRequest(const PlaceholderScanner& scanner, const HttpRequest& request) {
  Scanned s;
  Note(scanner.Scan(request.method), Place::kRequestLine, 0, &s.found);
  Note(scanner.Scan(request.version), Place::kRequestLine, 0, &s.found);
  std::string_view target = request.target;
  size_t q = target.find('?');
  Note(scanner.Scan(target.substr(0, q)), Place::kPath, 0, &s.found);
  if (q != std::string_view::npos) {
    s.query = scanner.Scan(target.substr(q + 1));
    Note(s.query, Place::kQuery, 0, &s.found);
  }
  size_t n = request.headers.size();
  s.fields.resize(n);
  s.basic.resize(n);
  s.basic_hits.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const HttpHeader& h = request.headers[i];
    Note(scanner.Scan(h.name), Place::kFieldName, i, &s.found);
    if (EqualsIgnoreCase(h.name, "Authorization")) {
      if (auto token = BasicToken(h.value)) {
        s.basic[i] = DecodeBase64Strict(*token);
      }
    }
    if (s.basic[i]) {
      // Valid base64 holds no raw or percent-encoded placeholder: only the
      // decoded credentials can.
      s.basic_hits[i] = scanner.Scan(*s.basic[i]);
      Note(s.basic_hits[i], Place::kBasicAuth, i, &s.found);
    } else {
      s.fields[i] = scanner.Scan(h.value);
      Note(s.fields[i], Place::kFieldValue, i, &s.found);
    }
  }
  if (!request.body.empty()) {
    s.body = scanner.Scan(request.body);
    Note(s.body, Place::kBody, 0, &s.found);
  }
  for (const HttpHeader& t : request.trailers) {
    Note(scanner.Scan(t.name), Place::kTrailer, 0, &s.found);
    Note(scanner.Scan(t.value), Place::kTrailer, 0, &s.found);
  }
  return s;
}

}  // namespace

const char* ToString(Verdict verdict) {
  auto i = static_cast<size_t>(verdict);
  return i < kVerdictNames.size() ? kVerdictNames[i] : "?";
}

SecretBinding BindSecret(std::string name, const schema::Secret& spec, std::string placeholder,
                         const SecretValue& value) {
  SecretBinding b;
  b.name = std::move(name);
  b.placeholder = std::move(placeholder);
  b.value = value.view();
  b.allow = spec.allow;
  b.inject = {spec.inject_headers, spec.inject_basic_auth, spec.inject_query, spec.inject_body};
  return b;
}

bool AllowMatches(std::string_view pattern, std::string_view host) {
  if (pattern.size() >= 2 && pattern.substr(0, 2) == "*.") {
    std::string_view suffix = pattern.substr(1);  // ".domain"
    return host.size() > suffix.size() && host.substr(host.size() - suffix.size()) == suffix;
  }
  return !pattern.empty() && pattern == host;
}

bool SniMatchesAnySecret(const std::vector<SecretBinding>& secrets, std::string_view sni) {
  for (const SecretBinding& s : secrets) {
    for (const std::string& pattern : s.allow) {
      if (AllowMatches(pattern, sni)) return true;
    }
  }
  return false;
}

std::optional<std::string> NormalizeHost(std::string_view host) {
  if (host.empty() || host.front() == '[' || host.find('@') != std::string_view::npos) return std::nullopt;
  size_t colon = host.rfind(':');
  if (colon != std::string_view::npos) {
    if (host.substr(colon + 1) != "443") return std::nullopt;
    host = host.substr(0, colon);
  }
  return schema::CanonicalHostName(host);  // one trailing dot is dropped, "name.." refused
}

SubstitutionEngine::SubstitutionEngine(std::vector<SecretBinding> secrets)
    : secrets_(std::move(secrets)), scanner_([this] {
        std::vector<std::string> placeholders;
        for (const SecretBinding& s : secrets_) placeholders.push_back(s.placeholder);
        return placeholders;
      }()) {}

std::string SubstitutionEngine::Redact(std::string_view guest_text) const { return RedactValues(guest_text, secrets_); }

Substitution SubstitutionEngine::Judge(const FlowContext& flow, const HttpRequest& request,
                                       std::string_view raw) const {
  Substitution out;
  Scanned scan = ScanRequest(scanner_, request);
  if (scan.found.empty()) {
    out.verdict = Verdict::kPassThrough;
    out.upstream = std::string(raw);
    return out;
  }

  auto hosts = FindHeaders(request.headers, "Host");
  // Guest text in a reason (the SNI, a field name) is redacted as a whole;
  // quoted text was redacted before quoting turned control bytes into '?'.
  auto block = [&](size_t secret, const std::string& reason) {
    out.verdict = Verdict::kBlocked;
    out.blocked_secret = secrets_[secret].name;
    out.reason = RedactValues(reason, secrets_);
    out.response = ErrorResponse(403, "blocked: " + out.reason);
    return out;
  };

  std::set<size_t> present;
  for (const Found& f : scan.found) present.insert(f.secret);

  // Gates 0-3, per secret found, in binding order.
  for (size_t i : present) {
    const SecretBinding& s = secrets_[i];
    const std::string who = "secret " + s.name;
    if (!flow.sni) {
      std::string host = hosts.size() == 1 ? Quote(Redact(hosts[0]->value)) : flow.dest_ip;
      return block(i, who + " in a plain-HTTP request to " + host + ": secrets are sent only over TLS");
    }
    const std::string& sni = *flow.sni;
    bool allowed =
        std::any_of(s.allow.begin(), s.allow.end(), [&](const std::string& p) { return AllowMatches(p, sni); });
    if (!allowed) return block(i, who + " may not be sent to " + sni + " (not in its allow list)");
    if (!flow.pinned || !flow.pinned(sni, flow.dest_ip)) {
      return block(i, who + ": " + sni + " was not resolved to " + flow.dest_ip + " by this sandbox's DNS");
    }
    if (hosts.size() != 1) {
      return block(i, who + ": a request to " + sni + " with " + std::to_string(hosts.size()) +
                          " Host fields (exactly one is needed)");
    }
    auto host = NormalizeHost(hosts[0]->value);
    if (!host || *host != sni) {
      return block(i, who + ": the request's Host " + Quote(Redact(hosts[0]->value)) + " is not " + sni);
    }
    if (auto authority = AbsoluteAuthority(request.target)) {
      auto a = NormalizeHost(*authority);
      if (!a || *a != sni) {
        return block(i, who + ": the request target's authority " + Quote(Redact(*authority)) + " is not " + sni);
      }
    }
  }

  // Gate 4: every occurrence in a place and form its secret's inject allows.
  for (const Found& f : scan.found) {
    const SecretBinding& s = secrets_[f.secret];
    const std::string where = PlaceName(f, request, secrets_) + " of a request to " + *flow.sni;
    const char* flag = InjectFlagName(f.place);
    if (flag == nullptr) {
      return block(f.secret, "secret " + s.name + " in " + where + ", where it is never substituted");
    }
    if (!FormAllowed(f.place, f.form)) {
      return block(f.secret,
                   "secret " + s.name + " " + ToString(f.form) + " in " + where + ", which is never substituted");
    }
    if (!FlagFor(s.inject, f.place)) {
      return block(f.secret, "secret " + s.name + " in " + where + ", where inject." + flag + " is off");
    }
    if (f.place == Place::kFieldValue && !ValidInField(s.value)) {
      return block(f.secret, "secret " + s.name + "'s value holds control characters and cannot go in " +
                                 PlaceName(f, request, secrets_));
    }
  }

  // Rewrite.
  HttpRequest rewritten = request;
  if (!scan.query.empty()) {
    size_t q = request.target.find('?');
    rewritten.target = request.target.substr(0, q + 1) + Rewrite(std::string_view(request.target).substr(q + 1),
                                                                 scan.query, secrets_, Writing::kPercentEncoded);
  }
  for (size_t i = 0; i < request.headers.size(); ++i) {
    HttpHeader& h = rewritten.headers[i];
    if (!scan.basic_hits[i].empty()) {
      std::string credentials = Rewrite(*scan.basic[i], scan.basic_hits[i], secrets_, Writing::kAsIs);
      std::string_view scheme = std::string_view(request.headers[i].value).substr(0, 5);
      h.value = std::string(scheme) + " " + Base64Encode(credentials);
      WipeString(&credentials);
    } else if (!scan.fields[i].empty()) {
      h.value = Rewrite(request.headers[i].value, scan.fields[i], secrets_, Writing::kAsIs);
    }
  }
  if (!scan.body.empty()) {
    rewritten.body = Rewrite(request.body, scan.body, secrets_, Writing::kLikeTheHit);
    if (!rewritten.chunked) {
      for (HttpHeader& h : rewritten.headers) {
        if (EqualsIgnoreCase(h.name, "Content-Length")) h.value = std::to_string(rewritten.body.size());
      }
    }
  }
  out.verdict = Verdict::kSubstituted;
  out.upstream = SerializeRequest(rewritten);
  WipeString(&rewritten.target);
  for (HttpHeader& h : rewritten.headers) WipeString(&h.value);
  WipeString(&rewritten.body);
  for (size_t i : present) out.substituted.push_back(secrets_[i].name);
  return out;
}

Substitution Substitute(const std::vector<SecretBinding>& secrets, const FlowContext& flow, const HttpRequest& request,
                        std::string_view raw) {
  return SubstitutionEngine(secrets).Judge(flow, request, raw);
}

}  // namespace msb::secrets
