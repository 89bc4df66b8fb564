// SandboxSecrets: what one supervisor holds for the secrets bound to its
// sandbox (docs/secrets.md): the values (SecretValues, handed over by msb
// on an inherited descriptor or the control socket, secrets/transfer.h), one
// placeholder per secret made at supervisor start, the sandbox's CA, and the
// interception proxy (vm/secret_proxy.h) the network attachment hands TCP
// flows to. Not the network policy: flows reach the proxy only once the
// policy allowed them (vm/network.h).
//
// The guest sees the placeholders in its environment (GuestEnv, added to
// the boot message's env, so the workload, exec sessions and health checks
// all have them) and the CA certificate (CaPem, installed by agentd). Values
// never leave this process but upstream, inside requests the proxy's gates
// let through. New values for the same names (Replace) apply in place:
// placeholders and the CA stay, so the guest notices nothing.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/dispatcher.h"
#include "common/result.h"
#include "secrets/placeholder.h"
#include "vm/secret_proxy.h"
#include "secrets/substitute.h"
#include "vm/spec.h"

namespace msb::vm {

class SandboxSecrets {
 public:
  // Every secret of `secrets` must have its value in `values`, and no other
  // value may be there. tls_ca_file: network.tls.ca ("" none), read now.
  // pinned: gate 2, this sandbox's DNS pin set.
  static Result<std::unique_ptr<SandboxSecrets>> Create(Dispatcher& dispatcher,
                                                        const std::vector<VmSecret>& secrets,
                                                        std::map<std::string, secrets::SecretValue> values,
                                                        const std::string& tls_ca_file,
                                                        secrets::PinCheck pinned);

  // "VAR=msb-secret-...", one per secret.
  std::vector<std::string> GuestEnv() const;
  std::string CaPem() const { return proxy_->CaPem(); }
  SecretProxy& proxy() { return *proxy_; }
  // New values for exactly the same names; the old ones are wiped.
  Status Replace(std::map<std::string, secrets::SecretValue> values);
  // {"VAR": {"substituted": N, "blocked": N}}
  nlohmann::json CountersJson() const { return proxy_->CountersJson(); }

 private:
  SandboxSecrets() = default;
  std::vector<secrets::SecretBinding> Bindings() const;
  Status CheckNames(const std::map<std::string, secrets::SecretValue>& values) const;

  std::vector<VmSecret> secrets_;
  std::map<std::string, std::string> placeholders_;  // by name
  std::map<std::string, secrets::SecretValue> values_;
  std::unique_ptr<SecretProxy> proxy_;
};

}  // namespace msb::vm
