// Secret values from their host sources to the supervisor: see
// secrets/transfer.h.
#include "secrets/transfer.h"

#include <cstdlib>

#include "common/base64.h"

namespace msb::secrets {
namespace {

bool IsName(std::string_view s) {
  if (s.empty() || s.size() > 255 || (s[0] >= '0' && s[0] <= '9')) return false;
  for (char c : s) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

Result<SecretValue> ReadSecretSource(std::string_view source, const std::string& from) {
  if (source == "env") {
    const char* v = std::getenv(from.c_str());
    if (v == nullptr) {
      return Error(ErrorCode::kInvalidArgument,
                   "from_env " + from + " is not set in msb's environment (export it before running msb)");
    }
    std::string_view value(v);
    if (value.empty()) {
      return Error(ErrorCode::kInvalidArgument, "from_env " + from + " is set but empty");
    }
    auto sv = SecretValue::Create(value);
    if (!sv.ok()) return sv.error().Wrap("from_env " + from);
    return sv;
  }
  if (source == "file") {
    auto sv = SecretValue::ReadFile(from);
    if (!sv.ok()) return sv.error().Wrap("from_file " + from);
    if (sv->size() == 0) {
      return Error(ErrorCode::kInvalidArgument, "from_file " + from + " is empty");
    }
    return sv;
  }
  return Error(ErrorCode::kInvalidArgument, "unknown secret source \"" + std::string(source) + "\"");
}

std::string EncodeValues(const std::vector<std::pair<std::string, std::string_view>>& values) {
  // Sized once: growing would leave copies of the values in freed memory.
  size_t size = 0;
  for (const auto& [name, value] : values) size += name.size() + 2 + (value.size() + 2) / 3 * 4;
  std::string out;
  out.reserve(size);
  for (const auto& [name, value] : values) {
    std::string b64 = Base64Encode(value);
    out += name;
    out += ' ';
    out += b64;
    out += '\n';
    WipeString(&b64);
  }
  return out;
}

Result<std::map<std::string, SecretValue>> DecodeValues(std::string_view text) {
  auto bad = [](const std::string& why) {
    return Error(ErrorCode::kProtocol, "malformed secret values: " + why);
  };
  if (text.size() > kMaxTransferBytes) return bad("too large");
  std::map<std::string, SecretValue> out;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    if (nl == std::string_view::npos) return bad("the last line is not terminated");
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl + 1);
    size_t sp = line.find(' ');
    if (sp == std::string_view::npos) return bad("a line without a value");
    std::string name(line.substr(0, sp));
    if (!IsName(name)) return bad("an invalid name");
    if (out.count(name)) return bad(name + " twice");
    if (out.size() >= kMaxTransferSecrets) return bad("too many secrets");
    auto decoded = Base64Decode(line.substr(sp + 1));
    if (!decoded.ok()) return bad(name + " is not base64");
    auto value = SecretValue::Create(*decoded);
    WipeString(&*decoded);
    if (!value.ok()) return value.error().Wrap("secret " + name);
    out.emplace(std::move(name), std::move(*value));
  }
  return out;
}

}  // namespace msb::secrets
