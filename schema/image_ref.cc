// Image reference parsing and normalisation (image_ref.h), following the OCI
// distribution reference grammar: [registry[:port]/]path[:tag][@sha256:hex].
#include "schema/image_ref.h"

#include <algorithm>
#include <cctype>
#include <vector>

#include "common/hex.h"
#include "schema/values.h"

namespace msb::schema {
namespace {

constexpr const char* kForms =
    " (expected name[:tag], name@sha256:<digest>, ./dir, /dir, oci-layout:PATH[:tag] or "
    "snapshot:NAME)";

std::string Quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
bool IsTag(std::string_view t) {
  if (t.empty() || t.size() > 128 || t[0] == '.' || t[0] == '-') return false;
  return std::all_of(t.begin(), t.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
}

// [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
bool IsPathComponent(std::string_view c) {
  if (c.empty() || !IsLowerAlnum(c.front()) || !IsLowerAlnum(c.back())) return false;
  for (size_t i = 0; i < c.size(); ++i) {
    char ch = c[i];
    if (IsLowerAlnum(ch) || ch == '-') continue;
    if (ch == '.' || ch == '_') {
      // One '.', one '_' or "__" between alphanumerics.
      if (ch == '_' && i + 1 < c.size() && c[i + 1] == '_') ++i;
      if (!IsLowerAlnum(c[i + 1])) return false;
      continue;
    }
    return false;
  }
  return true;
}

// host[:port] with host made of [A-Za-z0-9.-].
bool IsRegistryHost(std::string_view r) {
  size_t colon = r.find(':');
  std::string_view host = r.substr(0, colon);
  if (host.empty() || host.front() == '-' || host.front() == '.' || host.back() == '-' || host.back() == '.') return false;
  for (char c : host) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-')) return false;
  }
  if (colon == std::string_view::npos) return true;
  auto port = ParseInteger(r.substr(colon + 1), 1, 65535);
  return port.ok() && std::isdigit(static_cast<unsigned char>(r[colon + 1]));
}

// Splits "name:tag" when the last ':' is after the last '/'.
void SplitTag(std::string_view in, std::string_view* name, std::string_view* tag) {
  size_t colon = in.rfind(':');
  size_t slash = in.rfind('/');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    *name = in.substr(0, colon);
    *tag = in.substr(colon + 1);
    return;
  }
  *name = in;
  *tag = {};
}

Result<Image> ParseRegistry(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return Error(ErrorCode::kInvalidArgument, "invalid image reference " + Quote(text) + ": " + why + kForms);
  };
  Image img;
  img.kind = Image::Kind::kRegistry;
  std::string_view rest = text;
  size_t at = rest.find('@');
  if (at != std::string_view::npos) {
    std::string_view digest = rest.substr(at + 1);
    bool ok = digest.substr(0, 7) == "sha256:" && IsHex64(digest.substr(7));
    if (!ok) return bad("digest " + Quote(digest) + " must be sha256: and 64 lower-case hex digits");
    img.digest = std::string(digest);
    rest = rest.substr(0, at);
  }
  std::string_view name, tag;
  SplitTag(rest, &name, &tag);
  if (!tag.empty() || rest.size() != name.size()) {
    if (!IsTag(tag)) return bad("tag " + Quote(tag) + " must be 1-128 characters from A-Z, a-z, 0-9, '_', '.', '-'");
    img.tag = std::string(tag);
  }
  if (name.empty()) return bad("the name is empty");
  if (name.size() > 255) return bad("the name is longer than 255 characters");
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (;;) {
    size_t slash = name.find('/', start);
    parts.push_back(name.substr(start, slash == std::string_view::npos ? slash : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  if (parts.size() > 1 && (parts[0].find_first_of(".:") != std::string_view::npos || parts[0] == "localhost")) {
    if (!IsRegistryHost(parts[0])) return bad("registry " + Quote(parts[0]) + " is not a host[:port]");
    img.registry = std::string(parts[0]);
    parts.erase(parts.begin());
  } else {
    img.registry = "docker.io";
  }
  if (img.registry == "index.docker.io" || img.registry == "registry-1.docker.io") img.registry = "docker.io";
  for (std::string_view p : parts) {
    if (!IsPathComponent(p)) {
      bool upper = std::any_of(p.begin(), p.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
      if (upper) return bad("repository names are lower case, got " + Quote(p));
      return bad("repository component " + Quote(p) + " must be lower-case letters and digits separated by '.', '_', '__' or '-'");
    }
  }
  if (img.registry == "docker.io" && parts.size() == 1) img.repository = "library/";
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) img.repository += '/';
    img.repository += parts[i];
  }
  if (img.tag.empty() && img.digest.empty()) img.tag = "latest";
  img.reference = img.registry + "/" + img.repository;
  if (!img.tag.empty()) img.reference += ":" + img.tag;
  if (!img.digest.empty()) img.reference += "@" + img.digest;
  return img;
}

}  // namespace

Result<Image> ParseImage(std::string_view text, const std::string& base_dir, const std::string& home) {
  auto bad = [&](const std::string& why) {
    return Error(ErrorCode::kInvalidArgument, "invalid image " + Quote(text) + ": " + why + kForms);
  };
  if (text.empty()) return bad("it is empty");
  Image img;
  if (text[0] == '/' || text[0] == '.' || text.substr(0, 2) == "~/") {
    auto path = ResolveHostPath(text, base_dir, home);
    if (!path.ok()) return bad(path.error().message());
    img.kind = Image::Kind::kLocalDir;
    img.path = *path;
    img.reference = *path;
    return img;
  }
  if (text.substr(0, 11) == "oci-layout:") {
    std::string_view rest = text.substr(11), dir, tag;
    SplitTag(rest, &dir, &tag);
    if (dir.size() != rest.size() && !IsTag(tag)) return bad("tag " + Quote(tag) + " is not a valid tag");
    if (dir.empty()) return bad("the layout directory is empty");
    auto path = ResolveHostPath(dir, base_dir, home);
    if (!path.ok()) return bad(path.error().message());
    if (path->find(':', path->rfind('/')) != std::string::npos) {
      return bad("the layout directory's name must not contain ':' (it would read as a tag)");
    }
    img.kind = Image::Kind::kOciLayout;
    img.path = *path;
    img.tag = std::string(tag);
    img.reference = "oci-layout:" + *path + (tag.empty() ? "" : ":" + std::string(tag));
    return img;
  }
  if (text.substr(0, 9) == "snapshot:") {
    std::string_view name = text.substr(9);
    if (!IsValidName(name)) return bad("snapshot name " + Quote(name) + " must be " + kNameRule);
    img.kind = Image::Kind::kSnapshot;
    img.path = std::string(name);
    img.reference = "snapshot:" + std::string(name);
    return img;
  }
  return ParseRegistry(text);
}

}  // namespace msb::schema
