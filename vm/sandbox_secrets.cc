// SandboxSecrets: placeholders, values, the CA and the proxy of one
// supervisor; see vm/sandbox_secrets.h.
#include "vm/sandbox_secrets.h"

#include <chrono>
#include <set>

#include "common/io.h"
#include "secrets/ca.h"

namespace msb::vm {

Status SandboxSecrets::CheckNames(const std::map<std::string, secrets::SecretValue>& values) const {
  std::set<std::string> want;
  for (const auto& s : secrets_) want.insert(s.name);
  for (const auto& s : secrets_) {
    if (!values.count(s.name)) {
      return Error(ErrorCode::kInvalidArgument, "no value was handed over for secret " + s.name);
    }
  }
  for (const auto& [name, _] : values) {
    if (!want.count(name)) {
      return Error(ErrorCode::kInvalidArgument, "a value was handed over for " + name + ", which is not a secret of this sandbox");
    }
  }
  return OkStatus();
}

std::vector<secrets::SecretBinding> SandboxSecrets::Bindings() const {
  std::vector<secrets::SecretBinding> out;
  for (const auto& s : secrets_) {
    secrets::SecretBinding b;
    b.name = s.name;
    b.placeholder = placeholders_.at(s.name);
    b.value = values_.at(s.name).view();
    b.allow = s.allow;
    b.inject = {s.inject_headers, s.inject_basic_auth, s.inject_query, s.inject_body};
    out.push_back(std::move(b));
  }
  return out;
}

Result<std::unique_ptr<SandboxSecrets>> SandboxSecrets::Create(
    Dispatcher& dispatcher, const std::vector<VmSecret>& secrets,
    std::map<std::string, secrets::SecretValue> values, const std::string& tls_ca_file,
    secrets::PinCheck pinned) {
  std::unique_ptr<SandboxSecrets> out(new SandboxSecrets());
  out->secrets_ = secrets;
  MSB_TRY_STATUS(out->CheckNames(values));
  out->values_ = std::move(values);
  std::vector<std::string> permitted;
  for (const auto& s : secrets) {
    MSB_TRY(std::string p, secrets::NewPlaceholder());
    out->placeholders_[s.name] = std::move(p);
    permitted.insert(permitted.end(), s.allow.begin(), s.allow.end());
  }
  secrets::CertificateAuthority::Options ca_options;
  ca_options.permitted = permitted;
  MSB_TRY(secrets::CertificateAuthority ca,
          secrets::CertificateAuthority::Create(ca_options, std::chrono::system_clock::now()));
  ProxyOptions options;
  if (!tls_ca_file.empty()) {
    auto pem = ReadFile(tls_ca_file);
    if (!pem.ok()) return pem.error().Wrap("reading network.tls.ca");
    options.extra_ca_pem = std::move(*pem);
  }
  MSB_TRY(out->proxy_, SecretProxy::Create(dispatcher, out->Bindings(), std::move(ca),
                                                    std::move(options), std::move(pinned)));
  return out;
}

std::vector<std::string> SandboxSecrets::GuestEnv() const {
  std::vector<std::string> env;
  for (const auto& s : secrets_) env.push_back(s.name + "=" + placeholders_.at(s.name));
  return env;
}

Status SandboxSecrets::Replace(std::map<std::string, secrets::SecretValue> values) {
  MSB_TRY_STATUS(CheckNames(values));
  // The proxy takes bindings viewing the new values before the old ones go.
  std::map<std::string, secrets::SecretValue> old = std::exchange(values_, std::move(values));
  proxy_->ReplaceBindings(Bindings());
  return OkStatus();  // `old` is wiped as it goes out of scope
}

}  // namespace msb::vm
