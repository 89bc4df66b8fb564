// libFuzzer target for the HTTP/1.1 request parser and the substitution
// engine over what a guest sends on an intercepted flow. The first byte sets
// how the stream is split into Feed() calls. Oracles: every request read
// serializes to bytes that parse back the same, its raw bytes parse alone to
// the same request, and the engine's answer keeps its promises (pass-through
// is the raw bytes, a block never carries a value, a substitution is one
// valid request without the placeholders it replaced).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "secrets/http_request.h"
#include "secrets/substitute.h"

namespace {

using namespace msb::secrets;

constexpr std::string_view kValueOne = "VALUE-ONE";
constexpr std::string_view kValueTwo = "VALUE\r\nTWO";

void Check(bool cond) {
  if (!cond) __builtin_trap();
}

const SubstitutionEngine& Engine() {
  static const SubstitutionEngine engine = [] {
    SecretBinding one;
    one.name = "ONE";
    one.placeholder = "msb-secret-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    one.value = kValueOne;
    one.allow = {"api.example.com"};
    one.inject = {true, true, true, true};
    SecretBinding two;
    two.name = "TWO";
    two.placeholder = "msb-secret-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    two.value = kValueTwo;
    two.allow = {"*.example.com"};
    return SubstitutionEngine({one, two});
  }();
  return engine;
}

std::vector<ParseOutcome> ParseAll(std::string_view stream, size_t step) {
  HttpRequestParser parser;
  std::vector<ParseOutcome> out;
  for (size_t i = 0; i < stream.size(); i += step) {
    parser.Feed(stream.substr(i, step));
    for (ParseOutcome o = parser.Next(); o.status != ParseStatus::kNeedMore; o = parser.Next()) {
      bool refused = o.status == ParseStatus::kRefused;
      out.push_back(std::move(o));
      if (refused) return out;
    }
  }
  return out;
}

void CheckJudgement(const Substitution& s, const ParseOutcome& o) {
  switch (s.verdict) {
    case Verdict::kPassThrough: Check(s.upstream == o.raw); break;
    case Verdict::kBlocked:
      Check(s.upstream.empty() && !s.reason.empty() && !s.blocked_secret.empty());
      Check(s.reason.find('\n') == std::string::npos);
      for (std::string_view v : {kValueOne, kValueTwo}) {
        Check(s.response.find(v) == std::string::npos && s.reason.find(v) == std::string::npos);
      }
      break;
    case Verdict::kSubstituted: {
      Check(!s.substituted.empty());
      auto again = ParseAll(s.upstream, s.upstream.size() + 1);
      Check(again.size() == 1 && again[0].status == ParseStatus::kRequest && again[0].raw == s.upstream);
      for (const SecretBinding& b : Engine().secrets()) {
        for (const std::string& name : s.substituted) {
          if (name == b.name) Check(s.upstream.find(b.placeholder) == std::string::npos);
        }
      }
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t step = 1 + data[0] % 64;
  std::string_view stream(reinterpret_cast<const char*>(data + 1), size - 1);

  FlowContext tls;
  tls.sni = "api.example.com";
  tls.dest_ip = "192.0.2.1";
  tls.pinned = [](std::string_view name, std::string_view ip) { return ip == "192.0.2.1"; };
  FlowContext plain;
  plain.dest_ip = "192.0.2.1";

  for (const ParseOutcome& o : ParseAll(stream, step)) {
    if (o.status == ParseStatus::kRefused) {
      Check(!o.refusal.reason.empty() && o.refusal.status >= 400);
      continue;
    }
    std::string bytes = SerializeRequest(o.request);
    auto back = ParseAll(bytes, bytes.size() + 1);
    Check(back.size() == 1 && back[0].status == ParseStatus::kRequest && back[0].request == o.request);
    auto alone = ParseAll(o.raw, o.raw.size() + 1);
    Check(alone.size() == 1 && alone[0].status == ParseStatus::kRequest && alone[0].request == o.request);

    CheckJudgement(Engine().Judge(tls, o.request, o.raw), o);
    Substitution clear = Engine().Judge(plain, o.request, o.raw);
    CheckJudgement(clear, o);
    Check(clear.verdict != Verdict::kSubstituted);
  }
  return 0;
}
