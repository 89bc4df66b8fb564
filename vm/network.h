// NetworkAttachment: the supervisor's end of a sandbox's network. It listens
// on <sandbox dir>/net.sock before QEMU starts, accepts QEMU's stream netdev
// connection and runs a net::Stack on the supervisor's Dispatcher, fed by a
// net::StreamLink. One attachment per VM start: a restarted VM gets a fresh
// stack (the old flows die with the old guest). Not the policy: until
// net/policy is wired in, InterimPolicy() allows the spec's CIDRs and
// forwards the spec's gateway ports to the host's 127.0.0.1, denying the rest.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/dispatcher.h"
#include "common/fd.h"
#include "common/result.h"
#include "net/stack.h"
#include "net/stream.h"
#include "vm/spec.h"

namespace msb::vm {

// The stack's addresses from the spec; the error names the bad field.
Result<net::StackConfig> StackConfigFor(const VmNetwork& n);
// allow_cidrs → kAllow; gateway4/gateway6 with a port in host_ports →
// kAllowToHostLoopback; everything else kDeny.
Result<net::PolicyFn> InterimPolicy(const VmNetwork& n);
// spec.boot with its "network" object filled from spec.network (the guest's
// addresses, the gateway as router and DNS server), or spec.boot unchanged.
nlohmann::json BootWithNetwork(const VmSpec& spec);

class NetworkAttachment {
 public:
  // dispatcher must outlive the attachment.
  NetworkAttachment(Dispatcher& dispatcher, VmNetwork network, std::string socket_path);
  ~NetworkAttachment();

  // Builds the stack and listens on the socket path (replacing a stale one).
  Status Start();
  net::Stack* stack() { return stack_.get(); }
  bool connected() const { return link_ != nullptr && link_->open(); }

 private:
  void OnAccept();

  Dispatcher& dispatcher_;
  VmNetwork network_;
  std::string socket_path_;
  UniqueFd listen_;
  EventHandle accept_;
  std::unique_ptr<net::StreamLink> link_;
  std::unique_ptr<net::Stack> stack_;
};

}  // namespace msb::vm
