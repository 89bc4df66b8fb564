// The substitution engine: judges one HTTP request of an intercepted flow
// against the sandbox's secrets and answers pass it through unchanged,
// forward it with placeholders replaced by values, or block it with a 403.
// Pure: the flow's facts (SNI, destination, the DNS pin check) come in as
// values and a callback; no sockets, no clock, no logging (the owner logs
// the one-line reason, secrets/counters.h rate-limits it).
//
// Theory of operation
//
// Scope: requests parsed by secrets/http_request.h from the guest side of a
// flow. The owner intercepts a TLS flow only when SniMatchesAnySecret() holds
// for its ClientHello's SNI (secrets/client_hello.h); it may also run
// plain-HTTP flows through Substitute() with no SNI, so that placeholders
// sent in clear text are blocked.
//
// Detection: every part of the request is scanned (secrets/encoding.h) for
// each bound secret's placeholder: raw, percent-encoded once (any mix of
// escaped and literal bytes, any case of hex), percent-encoded more than once,
// and inside base64 text. The parts: the method and version, the request
// target's path (up to '?', the authority of an absolute-form target
// included) and query, each field name, each field value, the decoded
// credentials of `Authorization: Basic`, the decoded body, trailer fields.
// Not detected: placeholders in compressed bodies or other encodings (JSON
// \u escapes); they travel on as the placeholder text, which is harmless.
//
// Gates: a secret found anywhere is substituted only when all of these hold,
// checked in this order; the first that fails blocks the request:
//   0. the flow is TLS (an SNI is given): never a value in clear text;
//   1. the SNI matches one of the secret's allow entries (AllowMatches);
//   2. FlowContext::pinned(sni, dest_ip): the destination address is one
//      this sandbox's DNS answered for the SNI name;
//   3. the request has exactly one Host field and it equals the SNI after
//      NormalizeHost (case, trailing dot, default port 443); an
//      absolute-form target's authority must equal it too;
//   4. every occurrence is in a place and form the secret's inject allows:
//        headers     raw, in a field value (any field, Authorization: Bearer
//                    included); the value must be valid in a field value;
//        basic_auth  raw, inside the base64 credentials of
//                    `Authorization: Basic`, which are re-encoded;
//        query       raw or percent-encoded once, in the target's query;
//                    written percent-encoded (PercentEncode);
//        body        raw (written raw) or percent-encoded once (written
//                    percent-encoded), in the decoded body; Content-Length
//                    is recomputed, a chunked body is re-chunked.
//      Never: the path, the method or version, a field name, trailers, a
//      percent-encoded field value, base64 anywhere but Basic credentials,
//      a placeholder encoded more than once.
// A request with no placeholder at all is kPassThrough and its raw bytes go
// upstream unchanged; gates 0-3 are not judged for it.
//
// Blocking: kBlocked carries the first failing secret's name, a one-line
// reason naming the secret and the host (never a value: guest bytes it
// quotes are redacted first, SubstitutionEngine::Redact) and an
// ErrorResponse(403) for the guest. Nothing of the request goes upstream and
// the owner closes the connection after the response.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "schema/model.h"
#include "secrets/encoding.h"
#include "secrets/http_request.h"
#include "secrets/placeholder.h"

namespace msb::secrets {

struct InjectFlags {
  bool headers = true;
  bool basic_auth = true;
  bool query = false;
  bool body = false;
  bool operator==(const InjectFlags&) const = default;
};

struct SecretBinding {
  std::string name;                // the guest's variable; in logs and counters
  std::string placeholder;         // what the guest holds
  std::string_view value;          // bytes of a SecretValue that outlives the binding
  std::vector<std::string> allow;  // "host" or "*.domain", canonical (schema/sandbox.cc)
  InjectFlags inject;
};

// A binding from the Sandboxfile's secret (allow list and inject flags).
SecretBinding BindSecret(std::string name, const schema::Secret& spec, std::string placeholder,
                         const SecretValue& value);

// Host-name matching, both sides canonical (lower case, no trailing dot):
// "host" matches itself, "*.domain" matches names below domain, not domain
// itself (as network rules do: docs/sandboxfile.md).
bool AllowMatches(std::string_view pattern, std::string_view host);
// Whether a flow with this SNI is intercepted.
bool SniMatchesAnySecret(const std::vector<SecretBinding>& secrets, std::string_view sni);

// A Host field value (or an absolute-form authority) as a canonical host
// name: lower case, trailing dot and a ":443" port removed. nullopt for
// userinfo, another port, an IP literal or anything not a DNS name.
std::optional<std::string> NormalizeHost(std::string_view host);

// (name, destination address) -> whether this sandbox's DNS pinned the
// address for the name. dest_ip is FlowContext::dest_ip as given.
using PinCheck = std::function<bool(std::string_view name, std::string_view dest_ip)>;

struct FlowContext {
  std::optional<std::string> sni;  // the ClientHello's; none for plain HTTP
  std::string dest_ip;             // the address the policy judged, as text
  PinCheck pinned;                 // null means nothing is pinned
};

enum class Verdict : int { kPassThrough = 0, kSubstituted = 1, kBlocked = 2 };
const char* ToString(Verdict verdict);

// Substituted upstream bytes hold secret values: the owner writes them and
// then wipes them (WipeString, placeholder.h).
struct Substitution {
  Verdict verdict = Verdict::kPassThrough;
  std::string upstream;                  // kPassThrough: raw as received; kSubstituted: the rewritten request
  std::vector<std::string> substituted;  // kSubstituted: the secrets' names, in binding order
  std::string blocked_secret;            // kBlocked
  std::string reason;                    // kBlocked: one line
  std::string response;                  // kBlocked: the 403 for the guest
};

// Judges requests of one sandbox. Holds copies of the bindings (the values
// stay views: the SecretValues must outlive the engine). Immutable after
// construction, so one engine may serve all flows of the sandbox.
class SubstitutionEngine {
 public:
  explicit SubstitutionEngine(std::vector<SecretBinding> secrets);
  const std::vector<SecretBinding>& secrets() const { return secrets_; }

  // raw: the bytes the request spanned (ParseOutcome::raw).
  Substitution Judge(const FlowContext& flow, const HttpRequest& request, std::string_view raw) const;

  // guest_text with every secret value replaced by "[secret NAME]". Reasons
  // that quote guest bytes (Host, parser refusals) pass through it before
  // they are logged: a guest that learnt a value cannot get it into a log.
  std::string Redact(std::string_view guest_text) const;

 private:
  std::vector<SecretBinding> secrets_;
  PlaceholderScanner scanner_;
};

// One request judged by a one-off engine (tests, tools); the owner of many
// flows keeps a SubstitutionEngine.
Substitution Substitute(const std::vector<SecretBinding>& secrets, const FlowContext& flow, const HttpRequest& request,
                        std::string_view raw);

}  // namespace msb::secrets
