// Image archives with libarchive's streaming reader: one pass over the tar in
// which top-level documents (manifest.json, index.json, oci-layout) are kept
// in memory, blobs/sha256/<hex> entries go into the store under their named
// digest (the store verifies) and any other regular file goes in under the
// digest of its bytes. Symbolic and hard links between entries (docker save
// shares identical layers so) are resolved lexically among the entry names.
// Then the images are put together from what the store holds.
#include "image/image_archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include <nlohmann/json.hpp>

#include "common/archive_ptr.h"
#include "common/fd.h"
#include "common/hex.h"
#include "image/oci_layout.h"

namespace msb::image {
namespace {

constexpr size_t kChunk = 64 << 10;  // as the tar is read (archive_read_open_filename)
constexpr int kMaxLinkHops = 40;

constexpr const char* kFormatNames[] = {"docker-archive", "oci-archive"};
static_assert(std::size(kFormatNames) == static_cast<size_t>(ArchiveFormat::kOciArchive) + 1,
              "kFormatNames must name every ArchiveFormat");

// A name as a key: components split on '/', "" and "." dropped, ".." taking
// the previous component away (or kept when there is none). Lexical only.
std::string NormalizeName(std::string_view name) {
  std::vector<std::string_view> parts;
  while (!name.empty()) {
    size_t slash = name.find('/');
    std::string_view part = name.substr(0, slash);
    name = slash == std::string_view::npos ? std::string_view() : name.substr(slash + 1);
    if (part.empty() || part == ".") continue;
    if (part == ".." && !parts.empty() && parts.back() != "..") {
      parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  std::string out;
  for (auto p : parts) {
    if (!out.empty()) out += '/';
    out += p;
  }
  return out;
}

std::string DirOf(const std::string& key) {
  size_t slash = key.rfind('/');
  return slash == std::string::npos ? "" : key.substr(0, slash);
}

struct Stored {
  std::string digest;
  int64_t size = 0;
};

// What one pass over the tar found.
struct Contents {
  std::map<std::string, std::string> docs;   // top-level documents by name
  std::map<std::string, Stored> files;       // regular entries now in the store
  std::map<std::string, std::string> links;  // entry -> the entry it names
};

bool IsTopDocument(const std::string& key) {
  return key == "manifest.json" || key == "index.json" || key == "oci-layout" || key == "repositories";
}

// Legacy docker save per-layer metadata: not needed, not stored.
bool IsLegacyMetadata(const std::string& key) {
  return key.find('/') != std::string::npos &&
         (key.size() >= 5 && (key.substr(key.size() - 5) == "/json" ||
                              (key.size() >= 8 && key.substr(key.size() - 8) == "/VERSION")));
}

class Loader {
 public:
  Loader(std::string path, ImageStore& store) : path_(std::move(path)), store_(store) {}

  Result<std::vector<LoadedImage>> Run() {
    MSB_TRY_STATUS(ReadTar());
    if (c_.docs.count("manifest.json")) return Docker();
    if (c_.docs.count("index.json")) return Oci();
    return Error(ErrorCode::kInvalidArgument,
                 path_ + " is not a docker or OCI archive: it has no manifest.json or index.json at the top level");
  }

 private:
  Error Bad(const std::string& what) const { return Error(ErrorCode::kInvalidArgument, path_ + ": " + what); }

  Status ReadTar() {
    ArchiveReadPtr a(archive_read_new());
    MSB_CHECK(a != nullptr, "archive_read_new");
    archive_read_support_filter_all(a.get());
    archive_read_support_format_tar(a.get());
    if (::access(path_.c_str(), R_OK) != 0) return Error::FromErrno("cannot read " + path_);
    if (archive_read_open_filename(a.get(), path_.c_str(), 1 << 16) != ARCHIVE_OK) {
      return Bad("not a docker or OCI archive (tar): " + ArchiveErrorString(a.get()));
    }
    bool any = false;
    for (;;) {
      archive_entry* e = nullptr;
      int r = archive_read_next_header(a.get(), &e);
      if (r == ARCHIVE_EOF) break;
      if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
        std::string msg = ArchiveErrorString(a.get());
        if (!any) return Bad("not a docker or OCI archive (tar): " + msg);
        return Bad("the tar is damaged after " + std::to_string(c_.files.size()) + " entries: " + msg);
      }
      any = true;
      const char* raw = archive_entry_pathname(e);
      if (raw == nullptr) continue;
      std::string key = NormalizeName(raw);
      if (key.empty()) continue;
      if (const char* hard = archive_entry_hardlink(e); hard != nullptr) {
        c_.links[key] = NormalizeName(hard);
        continue;
      }
      if (archive_entry_filetype(e) == AE_IFLNK) {
        const char* target = archive_entry_symlink(e);
        if (target == nullptr) continue;
        std::string t = target;
        c_.links[key] = NormalizeName(t.rfind('/', 0) == 0 ? t : DirOf(key) + "/" + t);
        continue;
      }
      if (archive_entry_filetype(e) != AE_IFREG) continue;
      int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
      Status st = OkStatus();
      if (IsTopDocument(key)) {
        st = ReadDocument(a.get(), key);
      } else if (key.rfind("blobs/", 0) == 0) {
        if (key.rfind("blobs/sha256/", 0) == 0 && IsHex64(std::string_view(key).substr(13))) {
          st = StoreNamedBlob(a.get(), key, "sha256:" + key.substr(13), size);
        }
      } else if (!IsLegacyMetadata(key)) {
        st = StoreBlob(a.get(), key);
      }
      if (!st.ok()) return st;
    }
    if (!any) return Bad("not a docker or OCI archive: the tar is empty");
    return OkStatus();
  }

  Status ReadDocument(archive* a, const std::string& key) {
    std::string out;
    char buf[65536];
    for (;;) {
      la_ssize_t n = archive_read_data(a, buf, sizeof buf);
      if (n < 0) return Bad("entry " + key + ": " + ArchiveErrorString(a));
      if (n == 0) break;
      out.append(buf, static_cast<size_t>(n));
      if (out.size() > oci::kMaxDocumentBytes) {
        return Bad("entry " + key + " is larger than " + std::to_string(oci::kMaxDocumentBytes) + " bytes");
      }
    }
    c_.docs[key] = std::move(out);
    return OkStatus();
  }

  // Streams the entry's data to fn in chunks.
  template <typename Fn>
  Status Stream(archive* a, const std::string& key, Fn&& fn) {
    if (chunk_.empty()) chunk_.resize(kChunk);  // one buffer for every entry
    for (;;) {
      la_ssize_t n = archive_read_data(a, chunk_.data(), chunk_.size());
      if (n < 0) return Bad("entry " + key + ": " + ArchiveErrorString(a));
      if (n == 0) return OkStatus();
      MSB_TRY_STATUS(fn(std::string_view(chunk_.data(), static_cast<size_t>(n))));
    }
  }

  Status StoreNamedBlob(archive* a, const std::string& key, const std::string& digest, int64_t size) {
    if (!store_.HasBlob(digest)) {
      auto sink = store_.OpenBlob(digest, size);
      if (!sink.ok()) return sink.error().Wrap(path_ + ": entry " + key);
      if (!store_.HasBlob(digest)) {  // else another writer published it while we waited
        if ((*sink)->Offset() > 0) MSB_TRY_STATUS((*sink)->Restart());
        MSB_TRY_STATUS(Stream(a, key, [&](std::string_view b) { return (*sink)->Write(b); }));
      }
      if (auto st = (*sink)->Commit(); !st.ok()) return st.error().Wrap(path_ + ": entry " + key);
    }
    c_.files[key] = Stored{digest, size};
    return OkStatus();
  }

  Status StoreBlob(archive* a, const std::string& key) {
    auto w = store_.CreateBlob();
    if (!w.ok()) return w.error().Wrap(path_ + ": entry " + key);
    MSB_TRY_STATUS(Stream(a, key, [&](std::string_view b) { return (*w)->Write(b); }));
    auto digest = (*w)->Commit();
    if (!digest.ok()) return digest.error().Wrap(path_ + ": entry " + key);
    c_.files[key] = Stored{*digest, static_cast<int64_t>((*w)->size())};
    return OkStatus();
  }

  // The stored file an entry name leads to, through links.
  Result<Stored> Lookup(const std::string& name, const std::string& field) const {
    std::string key = NormalizeName(name);
    for (int hop = 0; hop <= kMaxLinkHops; ++hop) {
      if (auto f = c_.files.find(key); f != c_.files.end()) return f->second;
      auto l = c_.links.find(key);
      if (l == c_.links.end()) break;
      key = l->second;
    }
    return Error(ErrorCode::kNotFound,
                 path_ + ": " + field + " names \"" + name.substr(0, 200) + "\", which is not a file in the archive");
  }

  // The layer media type from the blob's first bytes.
  Result<std::string> LayerMediaType(const std::string& digest) const {
    UniqueFd fd(::open(store_.BlobPath(digest).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return Error::FromErrno("cannot open layer " + digest);
    unsigned char m[4] = {0, 0, 0, 0};
    ssize_t n = ::read(fd.get(), m, sizeof m);
    if (n >= 2 && m[0] == 0x1f && m[1] == 0x8b) return std::string(oci::kMediaTypeDockerLayer);
    if (n == 4 && m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd) {
      return std::string(oci::kMediaTypeOciLayerZstd);
    }
    return std::string(oci::kMediaTypeOciLayer);
  }

  Result<std::vector<LoadedImage>> Docker() {
    using nlohmann::json;
    const std::string& text = c_.docs["manifest.json"];
    json j = json::parse(text.begin(), text.end(), nullptr, false);
    if (j.is_discarded() || !j.is_array()) return Bad("manifest.json is not a JSON array");
    if (j.empty()) return Bad("manifest.json lists no images");
    std::vector<LoadedImage> out;
    for (size_t i = 0; i < j.size(); ++i) {
      const json& m = j[i];
      std::string at = "manifest.json[" + std::to_string(i) + "]";
      if (!m.is_object()) return Bad(at + " is not an object");
      auto cfg_it = m.find("Config");
      if (cfg_it == m.end() || !cfg_it->is_string()) return Bad(at + ".Config is missing or not a string");
      LoadedImage img;
      img.format = ArchiveFormat::kDockerArchive;
      if (auto t = m.find("RepoTags"); t != m.end() && !t->is_null()) {
        if (!t->is_array()) return Bad(at + ".RepoTags is not an array");
        for (const auto& tag : *t) {
          if (!tag.is_string()) return Bad(at + ".RepoTags holds a non-string");
          img.names.push_back(tag.get<std::string>());
        }
      }
      auto layers_it = m.find("Layers");
      if (layers_it == m.end() || !layers_it->is_array()) return Bad(at + ".Layers is missing or not an array");

      MSB_TRY(Stored cfg, Lookup(cfg_it->get<std::string>(), at + ".Config"));
      auto cfg_bytes = store_.ReadDocument(cfg.digest);
      if (!cfg_bytes.ok()) return cfg_bytes.error().Wrap(path_ + ": " + at + ".Config");
      auto config = oci::ParseImageConfig(*cfg_bytes);
      if (!config.ok()) return config.error().Wrap(path_ + ": " + at + ".Config");
      if (config->os != "linux" || config->architecture != "amd64") {
        std::string plat = config->os + "/" + config->architecture;
        return Bad(at + ": the image is " + plat.substr(0, 60) + "; msb runs linux/amd64 images");
      }
      if (config->diff_ids.size() != layers_it->size()) {
        return Bad(at + " lists " + std::to_string(layers_it->size()) + " layers but its config has " +
                   std::to_string(config->diff_ids.size()) + " diff_ids");
      }
      json man;
      man["schemaVersion"] = 2;
      man["mediaType"] = oci::kMediaTypeDockerManifest;
      man["config"] = {{"mediaType", oci::kMediaTypeDockerConfig},
                       {"size", static_cast<int64_t>(cfg_bytes->size())},
                       {"digest", cfg.digest}};
      man["layers"] = json::array();
      img.size_bytes = static_cast<int64_t>(cfg_bytes->size());
      for (size_t k = 0; k < layers_it->size(); ++k) {
        const json& l = (*layers_it)[k];
        std::string lat = at + ".Layers[" + std::to_string(k) + "]";
        if (!l.is_string()) return Bad(lat + " is not a string");
        MSB_TRY(Stored layer, Lookup(l.get<std::string>(), lat));
        MSB_TRY(std::string media, LayerMediaType(layer.digest));
        man["layers"].push_back({{"mediaType", media}, {"size", layer.size}, {"digest", layer.digest}});
        img.size_bytes += layer.size;
      }
      std::string man_bytes = man.dump();
      MSB_TRY_STATUS(oci::ParseManifest(man_bytes));  // what we write must read back
      auto digest = store_.PutBlob(man_bytes);
      if (!digest.ok()) return digest.error().Wrap(path_ + ": storing the manifest of " + at);
      img.manifest_digest = *digest;
      img.media_type = std::string(oci::kMediaTypeDockerManifest);
      img.config_digest = cfg.digest;
      img.size_bytes += static_cast<int64_t>(man_bytes.size());
      out.push_back(std::move(img));
    }
    return out;
  }

  Result<std::vector<LoadedImage>> Oci() {
    std::string where = "oci-archive " + path_;
    auto layout = c_.docs.find("oci-layout");
    if (layout == c_.docs.end()) return Bad("has index.json but no oci-layout file: not an OCI archive");
    MSB_TRY_STATUS(CheckLayoutVersion(layout->second, where));
    MSB_TRY(auto entries, LayoutEntries(c_.docs["index.json"], where));
    if (entries.empty()) return Bad("index.json lists no images");
    EnsureBlobFn ensure = [&](const oci::Descriptor& d, const std::string& what) -> Status {
      if (store_.HasBlob(d.digest)) return OkStatus();
      return Error(ErrorCode::kNotFound,
                   where + ": " + what + " " + d.digest + " is not in the archive (no blobs/sha256/" +
                       std::string(oci::DigestHex(d.digest)) + ")");
    };
    std::vector<LoadedImage> out;
    for (const auto& entry : entries) {
      MSB_TRY(ImportedImage imp, ImportLayoutEntry(entry, store_, ensure, where));
      LoadedImage img;
      img.format = ArchiveFormat::kOciArchive;
      if (!imp.name.empty()) img.names.push_back(imp.name);
      img.manifest_digest = imp.manifest_digest;
      img.media_type = imp.media_type;
      img.config_digest = imp.config_digest;
      img.size_bytes = imp.size_bytes;
      out.push_back(std::move(img));
    }
    return out;
  }

  std::string path_;
  ImageStore& store_;
  Contents c_;
  std::string chunk_;  // Stream's read buffer
};

}  // namespace

const char* ToString(ArchiveFormat format) {
  auto i = static_cast<size_t>(format);
  return i < std::size(kFormatNames) ? kFormatNames[i] : "unknown";
}

Result<std::vector<LoadedImage>> LoadImageArchive(const std::string& path, ImageStore& store) {
  return Loader(path, store).Run();
}

}  // namespace msb::image
