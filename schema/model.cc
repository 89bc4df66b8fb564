// Names of the model's enums, as they are spelt in a Sandboxfile.
#include "schema/model.h"

#include <iterator>

namespace msb::schema {
namespace {

template <typename E, size_t N>
const char* Name(const char* const (&table)[N], E value) {
  size_t i = static_cast<size_t>(value);
  return i < N ? table[i] : "unknown";
}

constexpr const char* kImageKinds[] = {"registry", "local-dir", "oci-layout", "snapshot"};
static_assert(std::size(kImageKinds) == static_cast<size_t>(Image::Kind::kSnapshot) + 1);
constexpr const char* kMountKinds[] = {"bind", "volume"};
static_assert(std::size(kMountKinds) == static_cast<size_t>(Mount::Kind::kVolume) + 1);
constexpr const char* kProtocols[] = {"tcp", "udp", "icmp", "any"};
static_assert(std::size(kProtocols) == static_cast<size_t>(Protocol::kAny) + 1);
constexpr const char* kConditions[] = {"started", "healthy", "completed"};
static_assert(std::size(kConditions) == static_cast<size_t>(DependCondition::kCompleted) + 1);
constexpr const char* kRestarts[] = {"no", "always", "on-failure", "unless-stopped"};
static_assert(std::size(kRestarts) == static_cast<size_t>(Restart::Policy::kUnlessStopped) + 1);
constexpr const char* kPolicies[] = {"none", "group", "public", "any"};
static_assert(std::size(kPolicies) == static_cast<size_t>(NetworkPolicy::kAny) + 1);
constexpr const char* kActions[] = {"allow", "deny"};
static_assert(std::size(kActions) == static_cast<size_t>(NetworkRule::Action::kDeny) + 1);
constexpr const char* kDirections[] = {"egress", "ingress"};
static_assert(std::size(kDirections) == static_cast<size_t>(NetworkRule::Direction::kIngress) + 1);
constexpr const char* kTargetKinds[] = {"group", "ip", "cidr", "host", "domain-suffix"};
static_assert(std::size(kTargetKinds) ==
              static_cast<size_t>(NetworkRule::TargetKind::kDomainSuffix) + 1);
constexpr const char* kSecretSources[] = {"env", "file"};
static_assert(std::size(kSecretSources) == static_cast<size_t>(Secret::Source::kFile) + 1);

}  // namespace

const char* ToString(Image::Kind kind) { return Name(kImageKinds, kind); }
const char* ToString(Mount::Kind kind) { return Name(kMountKinds, kind); }
const char* ToString(Protocol proto) { return Name(kProtocols, proto); }
const char* ToString(DependCondition condition) { return Name(kConditions, condition); }
const char* ToString(Restart::Policy policy) { return Name(kRestarts, policy); }
const char* ToString(NetworkPolicy policy) { return Name(kPolicies, policy); }
const char* ToString(NetworkRule::Action action) { return Name(kActions, action); }
const char* ToString(NetworkRule::Direction direction) { return Name(kDirections, direction); }
const char* ToString(NetworkRule::TargetKind kind) { return Name(kTargetKinds, kind); }
const char* ToString(Secret::Source source) { return Name(kSecretSources, source); }

std::string ToString(const Restart& restart) {
  std::string out = ToString(restart.policy);
  if (restart.policy == Restart::Policy::kOnFailure && restart.max_retries > 0) {
    out += ":" + std::to_string(restart.max_retries);
  }
  return out;
}

}  // namespace msb::schema
