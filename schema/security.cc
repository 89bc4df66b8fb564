// The `security:` section (security.h): capability names, levels, the
// capability set, and the walk of one sandbox's `security` map (loader.h).
#include "schema/security.h"

#include <algorithm>
#include <cctype>

#include "common/capabilities.h"
#include "schema/diagnostics.h"
#include "schema/loader.h"

namespace msb::schema {
namespace {

constexpr const char* kLevelNames[] = {"default", "strict"};
static_assert(std::size(kLevelNames) == static_cast<size_t>(SecurityLevel::kStrict) + 1);

std::string ValidCapabilities() {
  std::string out;
  for (std::string_view name : kCapabilityNames) out += (out.empty() ? "" : ", ") + std::string(name);
  return out;
}

}  // namespace

Result<std::string> CanonicalCapability(std::string_view text) {
  std::string upper;
  for (char c : text) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (upper == "ALL") return upper;
  std::string name = upper.rfind("CAP_", 0) == 0 ? upper : "CAP_" + upper;
  if (CapabilityNumber(name)) return name;
  std::vector<std::string_view> candidates(kCapabilityNames.begin(), kCapabilityNames.end());
  std::string hint = DidYouMean(name, candidates);
  if (hint.empty() && name.size() > 4) {
    // A cut-off name ("NET_BIND"): the one capability it begins.
    std::vector<std::string_view> longer;
    for (std::string_view c : kCapabilityNames) {
      if (c.rfind(name, 0) == 0) longer.push_back(c);
    }
    if (longer.size() == 1) hint = "; did you mean \"" + std::string(longer[0]) + "\"?";
  }
  return Error(ErrorCode::kInvalidArgument,
               "unknown capability \"" + std::string(text) + "\"" + hint +
                   "; expected ALL or one of " + ValidCapabilities() +
                   " (the CAP_ prefix and case are optional)");
}

void AddCapability(std::vector<std::string>* list, const std::string& name) {
  auto it = std::lower_bound(list->begin(), list->end(), name);
  if (it == list->end() || *it != name) list->insert(it, name);
}

const char* ToString(SecurityLevel level) {
  auto i = static_cast<size_t>(level);
  return i < std::size(kLevelNames) ? kLevelNames[i] : "?";
}

Result<SecurityLevel> ParseSecurityLevel(std::string_view text) {
  for (size_t i = 0; i < std::size(kLevelNames); ++i) {
    if (text == kLevelNames[i]) return static_cast<SecurityLevel>(i);
  }
  return Error(ErrorCode::kInvalidArgument,
               "unknown level \"" + std::string(text) + "\"" +
                   DidYouMean(text, {kLevelNames[0], kLevelNames[1]}) + "; expected default or strict");
}

Security SecurityOf(SecurityLevel level) {
  Security s;
  if (level == SecurityLevel::kStrict) {
    s.read_only_root = true;
    s.no_new_privileges = true;
    s.cap_drop = {"ALL"};
  }
  return s;
}

std::optional<NetworkPolicy> NetworkPolicyOf(SecurityLevel level) {
  if (level == SecurityLevel::kStrict) return NetworkPolicy::kNone;
  return std::nullopt;
}

std::optional<uint64_t> EffectiveCapabilities(const Security& security) {
  if (security.cap_drop.empty() && security.cap_add.empty()) return std::nullopt;
  auto has_all = [](const std::vector<std::string>& names) {
    return std::find(names.begin(), names.end(), "ALL") != names.end();
  };
  auto mask = [&](const std::vector<std::string>& names) {
    return has_all(names) ? kAllCapabilities : CapabilityMask(names);
  };
  // Docker's TweakCapabilities, with every capability as the basic set.
  if (has_all(security.cap_add)) {
    return has_all(security.cap_drop) ? kAllCapabilities : kAllCapabilities & ~mask(security.cap_drop);
  }
  if (has_all(security.cap_drop)) return mask(security.cap_add);
  return (kAllCapabilities & ~mask(security.cap_drop)) | mask(security.cap_add);
}

std::vector<std::string> CapabilityNames(uint64_t mask) {
  std::vector<std::string> out;
  for (size_t i = 0; i < kCapabilityNames.size(); ++i) {
    if (mask & (uint64_t{1} << i)) out.emplace_back(kCapabilityNames[i]);
  }
  return out;
}

}  // namespace msb::schema

namespace msb::schema::internal {

void LoadSecurity(Ctx& ctx, const Field& f, Sandbox* sb) {
  constexpr size_t kLevel = KeyIndex(kSecurityKeys, "level");
  constexpr size_t kReadOnlyRoot = KeyIndex(kSecurityKeys, "read_only_root");
  constexpr size_t kNoNewPrivileges = KeyIndex(kSecurityKeys, "no_new_privileges");
  constexpr size_t kCapDrop = KeyIndex(kSecurityKeys, "cap_drop");
  constexpr size_t kCapAdd = KeyIndex(kSecurityKeys, "cap_add");
  if (!ctx.ExpectMap(f, "a map with level, read_only_root, no_new_privileges, cap_drop, cap_add")) return;
  std::vector<Field> k = ctx.ReadMap(f.value, f.path, f.pos, kSecurityKeys);
  SecurityLevel level = SecurityLevel::kDefault;
  if (k[kLevel].present) {
    if (auto s = ctx.Scalar(k[kLevel], "default or strict")) {
      auto l = ParseSecurityLevel(*s);
      if (l.ok()) level = *l;
      else ctx.Error(k[kLevel].pos, k[kLevel].path, l.error().message());
    }
  }
  // The level first; every field the file sets replaces what it gave.
  Security sec = SecurityOf(level);
  // Network is loaded after this and keeps this policy unless the file names one.
  if (auto policy = NetworkPolicyOf(level)) sb->network.policy = *policy;
  if (k[kReadOnlyRoot].present) {
    if (auto b = ctx.Bool(k[kReadOnlyRoot])) sec.read_only_root = *b;
  }
  if (k[kNoNewPrivileges].present) {
    if (auto b = ctx.Bool(k[kNoNewPrivileges])) sec.no_new_privileges = *b;
  }
  for (size_t key : {kCapDrop, kCapAdd}) {
    if (!k[key].present) continue;
    std::vector<std::string>& list = key == kCapDrop ? sec.cap_drop : sec.cap_add;
    list.clear();
    if (!k[key].value.IsNull() && !k[key].value.IsSequence()) {
      ctx.Error(k[key].pos, k[key].path,
                std::string("expected a list of capabilities like [ALL] or [CAP_NET_BIND_SERVICE], got ") +
                    TypeName(k[key].value));
      continue;
    }
    for (const Field& item : ctx.Items(k[key])) {
      auto s = ctx.Scalar(item, "a capability like CAP_NET_BIND_SERVICE, or ALL");
      if (!s) continue;
      auto name = CanonicalCapability(*s);
      if (name.ok()) AddCapability(&list, *name);
      else ctx.Error(item.pos, item.path, name.error().message());
    }
  }
  sb->security = std::move(sec);
}

}  // namespace msb::schema::internal
