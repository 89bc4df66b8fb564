// OCI/Docker document parsing with nlohmann::json in its non-throwing mode:
// every field is type-checked before it is read, so hostile input yields an
// error naming the field, never an exception.
#include "image/oci.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "common/hex.h"
#include "common/sha256.h"

namespace msb::image::oci {
namespace {

using nlohmann::json;

Error Invalid(std::string_view doc, const std::string& field, const std::string& what) {
  std::string msg(doc);
  msg += ": ";
  if (!field.empty()) msg += field + ": ";
  msg += what;
  return Error(ErrorCode::kInvalidArgument, msg);
}

Result<json> ParseJson(std::string_view bytes, std::string_view doc) {
  if (bytes.size() > kMaxDocumentBytes) {
    return Invalid(doc, "", "document is " + std::to_string(bytes.size()) + " bytes, more than the limit of " +
                                std::to_string(kMaxDocumentBytes));
  }
  json j = json::parse(bytes.begin(), bytes.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Invalid(doc, "", "not valid JSON");
  if (!j.is_object()) return Invalid(doc, "", "not a JSON object");
  return j;
}

const char* TypeName(const json& j) { return j.type_name(); }

// Field readers: absent (or null, when allowed) yields the default.
Result<std::string> GetString(const json& obj, const char* key, std::string_view doc, const std::string& path,
                              bool required = false) {
  auto it = obj.find(key);
  std::string field = path.empty() ? key : path + "." + key;
  if (it == obj.end() || it->is_null()) {
    if (required) return Invalid(doc, field, "missing");
    return std::string();
  }
  if (!it->is_string()) return Invalid(doc, field, std::string("expected a string, found ") + TypeName(*it));
  return it->get<std::string>();
}

Result<std::vector<std::string>> GetStringArray(const json& obj, const char* key, std::string_view doc,
                                                const std::string& path) {
  std::vector<std::string> out;
  auto it = obj.find(key);
  std::string field = path.empty() ? key : path + "." + key;
  if (it == obj.end() || it->is_null()) return out;
  if (!it->is_array()) return Invalid(doc, field, std::string("expected an array, found ") + TypeName(*it));
  for (size_t i = 0; i < it->size(); ++i) {
    const json& e = (*it)[i];
    if (!e.is_string()) {
      return Invalid(doc, field + "[" + std::to_string(i) + "]",
                     std::string("expected a string, found ") + TypeName(e));
    }
    out.push_back(e.get<std::string>());
  }
  return out;
}

Result<std::map<std::string, std::string>> GetStringMap(const json& obj, const char* key, std::string_view doc,
                                                        const std::string& path) {
  std::map<std::string, std::string> out;
  auto it = obj.find(key);
  std::string field = path.empty() ? key : path + "." + key;
  if (it == obj.end() || it->is_null()) return out;
  if (!it->is_object()) return Invalid(doc, field, std::string("expected an object, found ") + TypeName(*it));
  for (auto e = it->begin(); e != it->end(); ++e) {
    if (!e.value().is_string()) {
      return Invalid(doc, field + "." + e.key(), std::string("expected a string, found ") + TypeName(e.value()));
    }
    out[e.key()] = e.value().get<std::string>();
  }
  return out;
}

Result<int> GetSchemaVersion(const json& obj, std::string_view doc) {
  auto it = obj.find("schemaVersion");
  if (it == obj.end()) return Invalid(doc, "schemaVersion", "missing");
  if (!it->is_number_integer()) {
    return Invalid(doc, "schemaVersion", std::string("expected an integer, found ") + TypeName(*it));
  }
  int64_t v = it->get<int64_t>();
  if (v < 0 || v > 1000) return Invalid(doc, "schemaVersion", "out of range");
  return static_cast<int>(v);
}

Error SchemaOne() {
  return Error(ErrorCode::kInvalidArgument,
               "schema 1 manifests are not supported; push the image again with a current client");
}

bool IsSchemaOneType(std::string_view t) {
  return t == kMediaTypeDockerManifestV1 || t == kMediaTypeDockerManifestV1Signed ||
         t == "application/json";  // some registries label schema 1 so
}

// Media types may carry parameters ("...+json; charset=utf-8").
std::string_view BareType(std::string_view t) {
  size_t semi = t.find(';');
  if (semi != std::string_view::npos) t = t.substr(0, semi);
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
  while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
  return t;
}

Result<Platform> ParsePlatform(const json& j, std::string_view doc, const std::string& path) {
  if (!j.is_object()) return Invalid(doc, path, std::string("expected an object, found ") + TypeName(j));
  Platform p;
  MSB_TRY(p.architecture, GetString(j, "architecture", doc, path, true));
  MSB_TRY(p.os, GetString(j, "os", doc, path, true));
  MSB_TRY(p.variant, GetString(j, "variant", doc, path));
  return p;
}

Result<Descriptor> ParseDescriptor(const json& j, std::string_view doc, const std::string& path) {
  if (!j.is_object()) return Invalid(doc, path, std::string("expected an object, found ") + TypeName(j));
  Descriptor d;
  MSB_TRY(d.media_type, GetString(j, "mediaType", doc, path, true));
  MSB_TRY(d.digest, GetString(j, "digest", doc, path, true));
  if (!IsValidDigest(d.digest)) {
    return Invalid(doc, path + ".digest", "\"" + d.digest.substr(0, 100) + "\" is not sha256:<64 lowercase hex>");
  }
  auto it = j.find("size");
  if (it == j.end()) return Invalid(doc, path + ".size", "missing");
  if (!it->is_number_integer()) {
    return Invalid(doc, path + ".size", std::string("expected an integer, found ") + TypeName(*it));
  }
  if (it->is_number_unsigned()) {
    uint64_t u = it->get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return Invalid(doc, path + ".size", "too large");
    d.size = static_cast<int64_t>(u);
  } else {
    d.size = it->get<int64_t>();
  }
  if (d.size < 0) return Invalid(doc, path + ".size", "negative");
  MSB_TRY(d.urls, GetStringArray(j, "urls", doc, path));
  MSB_TRY(d.annotations, GetStringMap(j, "annotations", doc, path));
  auto p = j.find("platform");
  if (p != j.end() && !p->is_null()) {
    MSB_TRY(Platform plat, ParsePlatform(*p, doc, path + ".platform"));
    d.platform = std::move(plat);
  }
  return d;
}

bool IsIndexType(std::string_view t) { return t == kMediaTypeOciIndex || t == kMediaTypeDockerManifestList; }
bool IsManifestType(std::string_view t) { return t == kMediaTypeOciManifest || t == kMediaTypeDockerManifest; }

}  // namespace

bool IsValidDigest(std::string_view digest) {
  constexpr std::string_view kPrefix = "sha256:";
  return digest.substr(0, kPrefix.size()) == kPrefix && IsHex64(digest.substr(kPrefix.size()));
}

Status ValidateDigest(std::string_view digest, std::string_view what) {
  if (IsValidDigest(digest)) return OkStatus();
  std::string shown(digest.substr(0, 100));
  return Error(ErrorCode::kInvalidArgument,
               std::string(what) + ": digest \"" + shown + "\" is not sha256:<64 lowercase hex>");
}

std::string DigestOf(std::string_view bytes) { return "sha256:" + Sha256Hex(bytes); }

std::string_view DigestHex(std::string_view digest) {
  return digest.size() > 7 ? digest.substr(7) : std::string_view();
}

std::string Platform::ToString() const {
  std::string s = os + "/" + architecture;
  if (!variant.empty()) s += "/" + variant;
  return s;
}

const char* ToString(DocumentKind kind) {
  switch (kind) {
    case DocumentKind::kIndex: return "index";
    case DocumentKind::kManifest: return "manifest";
  }
  return "?";
}

const char* ToString(LayerCompression c) {
  switch (c) {
    case LayerCompression::kNone: return "none";
    case LayerCompression::kGzip: return "gzip";
    case LayerCompression::kZstd: return "zstd";
  }
  return "?";
}

Result<DocumentKind> ClassifyDocument(std::string_view bytes, std::string_view content_type) {
  MSB_TRY(json j, ParseJson(bytes, "manifest"));
  auto sv = j.find("schemaVersion");
  if (sv != j.end() && sv->is_number_integer() && sv->get<int64_t>() == 1) return SchemaOne();
  MSB_TRY(std::string media, GetString(j, "mediaType", "manifest", ""));
  if (!media.empty()) {
    if (IsIndexType(media)) return DocumentKind::kIndex;
    if (IsManifestType(media)) return DocumentKind::kManifest;
    if (IsSchemaOneType(media)) return SchemaOne();
    return Invalid("manifest", "mediaType", "\"" + media.substr(0, 100) + "\" is not an image index or manifest");
  }
  std::string_view ct = BareType(content_type);
  if (IsIndexType(ct)) return DocumentKind::kIndex;
  if (IsManifestType(ct)) return DocumentKind::kManifest;
  if (ct == kMediaTypeDockerManifestV1 || ct == kMediaTypeDockerManifestV1Signed) return SchemaOne();
  if (j.contains("manifests")) return DocumentKind::kIndex;
  if (j.contains("layers") || j.contains("config")) return DocumentKind::kManifest;
  if (j.contains("fsLayers")) return SchemaOne();
  return Invalid("manifest", "", "neither an image index (no \"manifests\") nor a manifest (no \"layers\")");
}

Result<Index> ParseIndex(std::string_view bytes) {
  constexpr std::string_view kDoc = "image index";
  MSB_TRY(json j, ParseJson(bytes, kDoc));
  MSB_TRY(int version, GetSchemaVersion(j, kDoc));
  if (version != 2) return Invalid(kDoc, "schemaVersion", "is " + std::to_string(version) + ", expected 2");
  Index index;
  MSB_TRY(index.media_type, GetString(j, "mediaType", kDoc, ""));
  if (!index.media_type.empty() && !IsIndexType(index.media_type)) {
    return Invalid(kDoc, "mediaType", "\"" + index.media_type.substr(0, 100) + "\" is not an index media type");
  }
  auto m = j.find("manifests");
  if (m == j.end() || m->is_null()) return Invalid(kDoc, "manifests", "missing");
  if (!m->is_array()) return Invalid(kDoc, "manifests", std::string("expected an array, found ") + TypeName(*m));
  for (size_t i = 0; i < m->size(); ++i) {
    MSB_TRY(Descriptor d, ParseDescriptor((*m)[i], kDoc, "manifests[" + std::to_string(i) + "]"));
    index.manifests.push_back(std::move(d));
  }
  return index;
}

Result<Manifest> ParseManifest(std::string_view bytes) {
  constexpr std::string_view kDoc = "manifest";
  MSB_TRY(json j, ParseJson(bytes, kDoc));
  MSB_TRY(int version, GetSchemaVersion(j, kDoc));
  if (version == 1) return SchemaOne();
  if (version != 2) return Invalid(kDoc, "schemaVersion", "is " + std::to_string(version) + ", expected 2");
  Manifest man;
  MSB_TRY(man.media_type, GetString(j, "mediaType", kDoc, ""));
  if (IsSchemaOneType(man.media_type)) return SchemaOne();
  if (IsIndexType(man.media_type)) {
    return Invalid(kDoc, "mediaType", "is an image index, not a manifest");
  }
  if (!man.media_type.empty() && !IsManifestType(man.media_type)) {
    return Invalid(kDoc, "mediaType", "\"" + man.media_type.substr(0, 100) + "\" is not a manifest media type");
  }
  auto c = j.find("config");
  if (c == j.end() || c->is_null()) return Invalid(kDoc, "config", "missing");
  MSB_TRY(man.config, ParseDescriptor(*c, kDoc, "config"));
  auto l = j.find("layers");
  if (l == j.end() || l->is_null()) return Invalid(kDoc, "layers", "missing");
  if (!l->is_array()) return Invalid(kDoc, "layers", std::string("expected an array, found ") + TypeName(*l));
  for (size_t i = 0; i < l->size(); ++i) {
    MSB_TRY(Descriptor d, ParseDescriptor((*l)[i], kDoc, "layers[" + std::to_string(i) + "]"));
    man.layers.push_back(std::move(d));
  }
  MSB_TRY(man.annotations, GetStringMap(j, "annotations", kDoc, ""));
  return man;
}

Result<ImageConfig> ParseImageConfig(std::string_view bytes) {
  constexpr std::string_view kDoc = "image config";
  MSB_TRY(json j, ParseJson(bytes, kDoc));
  ImageConfig cfg;
  MSB_TRY(cfg.architecture, GetString(j, "architecture", kDoc, "", true));
  MSB_TRY(cfg.os, GetString(j, "os", kDoc, "", true));
  MSB_TRY(cfg.variant, GetString(j, "variant", kDoc, ""));
  MSB_TRY(cfg.created, GetString(j, "created", kDoc, ""));
  auto c = j.find("config");
  if (c != j.end() && !c->is_null()) {
    if (!c->is_object()) return Invalid(kDoc, "config", std::string("expected an object, found ") + TypeName(*c));
    MSB_TRY(cfg.entrypoint, GetStringArray(*c, "Entrypoint", kDoc, "config"));
    MSB_TRY(cfg.cmd, GetStringArray(*c, "Cmd", kDoc, "config"));
    MSB_TRY(cfg.env, GetStringArray(*c, "Env", kDoc, "config"));
    MSB_TRY(cfg.working_dir, GetString(*c, "WorkingDir", kDoc, "config"));
    MSB_TRY(cfg.user, GetString(*c, "User", kDoc, "config"));
    auto p = c->find("ExposedPorts");
    if (p != c->end() && !p->is_null()) {
      if (!p->is_object()) {
        return Invalid(kDoc, "config.ExposedPorts", std::string("expected an object, found ") + TypeName(*p));
      }
      for (auto e = p->begin(); e != p->end(); ++e) cfg.exposed_ports.push_back(e.key());
      std::sort(cfg.exposed_ports.begin(), cfg.exposed_ports.end());
    }
  }
  auto r = j.find("rootfs");
  if (r == j.end() || r->is_null()) return Invalid(kDoc, "rootfs", "missing");
  if (!r->is_object()) return Invalid(kDoc, "rootfs", std::string("expected an object, found ") + TypeName(*r));
  MSB_TRY(std::string type, GetString(*r, "type", kDoc, "rootfs", true));
  if (type != "layers") return Invalid(kDoc, "rootfs.type", "is \"" + type.substr(0, 100) + "\", expected \"layers\"");
  MSB_TRY(cfg.diff_ids, GetStringArray(*r, "diff_ids", kDoc, "rootfs"));
  for (size_t i = 0; i < cfg.diff_ids.size(); ++i) {
    if (!IsValidDigest(cfg.diff_ids[i])) {
      return Invalid(kDoc, "rootfs.diff_ids[" + std::to_string(i) + "]",
                     "\"" + cfg.diff_ids[i].substr(0, 100) + "\" is not sha256:<64 lowercase hex>");
    }
  }
  return cfg;
}

Result<Descriptor> SelectPlatform(const Index& index, std::string_view image_name, std::string_view os,
                                  std::string_view architecture) {
  std::vector<std::string> have;
  for (const auto& d : index.manifests) {
    if (!d.platform) {
      have.push_back("unknown");
      continue;
    }
    if (d.platform->os == os && d.platform->architecture == architecture && IsManifestType(d.media_type)) {
      return d;
    }
    have.push_back(d.platform->ToString());
  }
  std::string list;
  for (size_t i = 0; i < have.size(); ++i) {
    if (i > 0) list += ", ";
    list += have[i];
  }
  if (list.empty()) list = "nothing";
  return Error(ErrorCode::kNotFound, "image " + std::string(image_name) + " has no " + std::string(os) + "/" +
                                         std::string(architecture) + " manifest; it has: " + list);
}

Result<LayerCompression> ClassifyLayer(std::string_view media_type) {
  std::string_view t = BareType(media_type);
  if (t == kMediaTypeOciLayer) return LayerCompression::kNone;
  if (t == kMediaTypeOciLayerGzip || t == kMediaTypeDockerLayer) return LayerCompression::kGzip;
  if (t == kMediaTypeOciLayerZstd) return LayerCompression::kZstd;
  if (t.substr(0, kMediaTypeOciLayerNondistributablePrefix.size()) == kMediaTypeOciLayerNondistributablePrefix ||
      t == kMediaTypeDockerForeignLayer) {
    return Error(ErrorCode::kInvalidArgument,
                 "layer media type " + std::string(t) +
                     " is a non-distributable (foreign) layer that must be fetched from outside the registry; "
                     "msb does not fetch those");
  }
  return Error(ErrorCode::kInvalidArgument,
               "layer media type \"" + std::string(t.substr(0, 100)) +
                   "\" is not a tar layer (expected tar, tar+gzip or tar+zstd)");
}

}  // namespace msb::image::oci
