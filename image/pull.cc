// The pull engine: manifest resolution, then blobs through the BlobTarget on
// a few worker threads with retries and resume. See pull.h.
#include "image/pull.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/io.h"
#include "common/log.h"
#include "common/sha256.h"
#include "image/registry.h"

namespace msb::image {
namespace {

bool Retryable(const Error& e) {
  return e.code() == ErrorCode::kIo || e.code() == ErrorCode::kTimeout || e.code() == ErrorCode::kUnavailable;
}

std::chrono::milliseconds Backoff(const PullOptions& o, int attempt) {
  auto d = o.initial_backoff * (1 << std::min(attempt - 1, 10));
  return std::min<std::chrono::milliseconds>(d, std::chrono::milliseconds(8000));
}

// Serialises progress callbacks and carries the stop flag.
struct Shared {
  const ProgressFn* progress = nullptr;
  std::mutex mu;
  std::atomic<bool> stop{false};
  void Emit(const PullProgress& p) {
    if (progress == nullptr || !*progress) return;
    std::lock_guard<std::mutex> lock(mu);
    (*progress)(p);
  }
};

Status WriteSmallBlob(BlobTarget& target, const std::string& digest, const std::string& bytes) {
  if (target.HasBlob(digest)) return OkStatus();
  MSB_TRY(std::unique_ptr<BlobSink> sink, target.OpenBlob(digest, static_cast<int64_t>(bytes.size())));
  if (sink->Offset() != 0) MSB_TRY_STATUS(sink->Restart());
  MSB_TRY_STATUS(sink->Write(bytes));
  return sink->Commit();
}

// Fetches a manifest with retries on transport errors and 5xx.
Result<FetchedManifest> GetManifestRetrying(RegistryClient& client, const ImageReference& ref,
                                            const std::string& reference, const PullOptions& o) {
  for (int attempt = 1;; ++attempt) {
    auto m = client.GetManifest(ref.repository, reference);
    if (m.ok() || !Retryable(m.error()) || attempt >= o.max_attempts) return m;
    MSB_LOG(kInfo, "pull") << "retrying manifest " << reference << ": " << m.error().message();
    std::this_thread::sleep_for(Backoff(o, attempt));
  }
}

// The config: small, fetched into memory, verified, then written.
Result<std::string> FetchConfig(RegistryClient& client, const ImageReference& ref, const oci::Descriptor& d,
                                const PullOptions& o) {
  if (d.size > static_cast<int64_t>(oci::kMaxDocumentBytes)) {
    return Error(ErrorCode::kInvalidArgument, "image " + ref.ToString() + ": config " + d.digest + " is " +
                                                  std::to_string(d.size) + " bytes, over the limit");
  }
  for (int attempt = 1;; ++attempt) {
    std::string bytes;
    Status st = client.GetBlob(
        ref.repository, d.digest, 0, nullptr, [&](std::string_view b) -> Status {
          if (bytes.size() + b.size() > static_cast<uint64_t>(d.size)) {
            return Error(ErrorCode::kProtocol, "registry " + ref.registry + " sent more than the " +
                                                   std::to_string(d.size) + " bytes of config " + d.digest);
          }
          bytes.append(b);
          return OkStatus();
        });
    if (st.ok()) {
      if (bytes.size() != static_cast<uint64_t>(d.size)) {
        return Error(ErrorCode::kProtocol, "registry " + ref.registry + " sent " + std::to_string(bytes.size()) +
                                               " bytes of config " + d.digest + ", expected " + std::to_string(d.size));
      }
      if (oci::DigestOf(bytes) != d.digest) {
        return Error(ErrorCode::kProtocol, "config blob " + d.digest + " of " + ref.ToString() +
                                               " does not match its digest (the registry's copy is corrupt)");
      }
      return bytes;
    }
    if (!Retryable(st.error()) || attempt >= o.max_attempts) return st.error();
    std::this_thread::sleep_for(Backoff(o, attempt));
  }
}

// Downloads one layer into the target with retries and resume.
Status PullLayer(RegistryClient& client, const ImageReference& ref, const oci::Descriptor& d, int index,
                 BlobTarget& target, const PullOptions& o, Shared& shared) {
  const uint64_t size = static_cast<uint64_t>(d.size);
  std::string name = "layer " + std::to_string(index + 1) + " (" + d.digest + ") of " + ref.ToString();
  if (target.HasBlob(d.digest)) {
    shared.Emit({PullProgress::Kind::kSkipped, index, d.digest, size, size, 1, ""});
    return OkStatus();
  }
  MSB_TRY(std::unique_ptr<BlobSink> sink, target.OpenBlob(d.digest, d.size));
  // Another writer may have published it while OpenBlob waited.
  if (target.HasBlob(d.digest)) {
    shared.Emit({PullProgress::Kind::kSkipped, index, d.digest, size, size, 1, ""});
    return OkStatus();
  }
  for (int attempt = 1;; ++attempt) {
    if (shared.stop) return Error(ErrorCode::kState, name + ": stopped because another blob failed");
    uint64_t offset = sink->Offset();
    if (offset > size) {
      MSB_TRY_STATUS(sink->Restart());
      offset = 0;
    }
    uint64_t done = offset;
    bool hashing = offset == 0;  // a resumed prefix is verified by Commit
    Sha256 hash;
    shared.Emit({PullProgress::Kind::kStarted, index, d.digest, done, size, attempt, ""});
    auto last_emit = std::chrono::steady_clock::now();
    Status st = OkStatus();
    if (offset < size || size == 0) {
      st = client.GetBlob(
          ref.repository, d.digest, offset,
          [&](uint64_t start, int64_t total) -> Status {
            if (start == 0 && offset > 0) {
              // The server ignored the Range: begin again.
              MSB_TRY_STATUS(sink->Restart());
              done = 0;
              hashing = true;
              hash.Reset();
            }
            if (total >= 0 && static_cast<uint64_t>(total) != size) {
              return Error(ErrorCode::kProtocol, name + ": the registry says it has " + std::to_string(total) +
                                                     " bytes, the manifest says " + std::to_string(size));
            }
            return OkStatus();
          },
          [&](std::string_view b) -> Status {
            if (shared.stop) return Error(ErrorCode::kState, name + ": stopped because another blob failed");
            if (done + b.size() > size) {
              return Error(ErrorCode::kProtocol,
                           name + ": the registry sent more than the " + std::to_string(size) + " bytes it should have");
            }
            MSB_TRY_STATUS(sink->Write(b));
            if (hashing) hash.Update(b);
            done += b.size();
            auto now = std::chrono::steady_clock::now();
            if (now - last_emit > std::chrono::milliseconds(100)) {
              last_emit = now;
              shared.Emit({PullProgress::Kind::kBytes, index, d.digest, done, size, attempt, ""});
            }
            return OkStatus();
          });
    }
    if (st.ok() && done != size) {
      st = Error(ErrorCode::kIo, name + ": the download ended after " + std::to_string(done) + " of " +
                                     std::to_string(size) + " bytes");
    }
    if (st.ok()) {
      if (hashing) {
        std::string got = hash.DigestFinal();
        if (got != d.digest) {
          (void)sink->Restart();  // drop the bad bytes: nothing resumes from them
          return Error(ErrorCode::kProtocol, name + " does not match its digest: the bytes hash to " + got +
                                                 " (the registry's copy is corrupt); nothing was stored for it");
        }
      }
      Status c = sink->Commit();
      if (!c.ok()) {
        return c.error().Wrap(name + " failed verification; nothing was stored for it");
      }
      shared.Emit({PullProgress::Kind::kDone, index, d.digest, size, size, attempt, ""});
      return OkStatus();
    }
    if (!Retryable(st.error()) || attempt >= o.max_attempts || shared.stop) {
      return st.error().code() == ErrorCode::kState ? st.error() : st.error().Wrap("pulling " + name);
    }
    MSB_LOG(kInfo, "pull") << name << ": attempt " << attempt << " failed: " << st.error().message();
    shared.Emit({PullProgress::Kind::kRetrying, index, d.digest, done, size, attempt, st.error().message()});
    std::this_thread::sleep_for(Backoff(o, attempt));
  }
}

}  // namespace

std::string ImageReference::ToString() const {
  std::string s = registry + "/" + repository;
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest;
  return s;
}

const char* ToString(PullProgress::Kind kind) {
  switch (kind) {
    case PullProgress::Kind::kStarted: return "started";
    case PullProgress::Kind::kBytes: return "bytes";
    case PullProgress::Kind::kRetrying: return "retrying";
    case PullProgress::Kind::kDone: return "done";
    case PullProgress::Kind::kSkipped: return "skipped";
  }
  return "?";
}

namespace {

// The manifest's sizes against the limits, before any blob is fetched. Sizes
// are >= 0 (oci::ParseManifest) and each at most max_blob_bytes before it is
// added, so the sum does not overflow.
Status CheckDeclaredSizes(const oci::Manifest& m, const std::string& image, const PullOptions& options) {
  uint64_t total = static_cast<uint64_t>(m.config.size);
  for (size_t i = 0; i < m.layers.size(); ++i) {
    const auto size = static_cast<uint64_t>(m.layers[i].size);
    if (size > options.max_blob_bytes) {
      return Error(ErrorCode::kInvalidArgument,
                   "image " + image + ": layer " + std::to_string(i + 1) + " (" + m.layers[i].digest + ") is " +
                       std::to_string(size) + " bytes, over the limit of " + std::to_string(options.max_blob_bytes) +
                       " for one blob; raise MSB_PULL_MAX_BLOB_SIZE to pull it");
    }
    total += size;
    if (total > options.max_image_bytes) {
      return Error(ErrorCode::kInvalidArgument,
                   "image " + image + " is over the limit of " + std::to_string(options.max_image_bytes) +
                       " bytes for one image (its first " + std::to_string(i + 1) + " of " +
                       std::to_string(m.layers.size()) + " layers and config make " + std::to_string(total) +
                       "); raise MSB_PULL_MAX_IMAGE_SIZE to pull it");
    }
  }
  return OkStatus();
}

}  // namespace

Result<PullResult> Pull(const ImageReference& ref, const PullOptions& options, BlobTarget& target,
                        const ProgressFn& progress) {
  if (ref.registry.empty() || ref.repository.empty() || (ref.tag.empty() && ref.digest.empty())) {
    return Error(ErrorCode::kInvalidArgument, "image reference " + ref.ToString() + " lacks a registry, repository or tag");
  }
  if (!ref.digest.empty()) MSB_TRY_STATUS(oci::ValidateDigest(ref.digest, "image " + ref.ToString()));
  RegistryClient client(ref.registry, options.registries, options.credentials);
  PullResult result;
  const std::string image = ref.ToString();

  MSB_TRY(FetchedManifest top, GetManifestRetrying(client, ref, ref.digest.empty() ? ref.tag : ref.digest, options));
  auto kind = oci::ClassifyDocument(top.bytes, top.content_type);
  if (!kind.ok()) return kind.error().Wrap("image " + image);
  FetchedManifest man = top;
  if (*kind == oci::DocumentKind::kIndex) {
    auto index = oci::ParseIndex(top.bytes);
    if (!index.ok()) return index.error().Wrap("image " + image);
    MSB_TRY(oci::Descriptor chosen, oci::SelectPlatform(*index, image, options.os, options.architecture));
    result.index_digest = top.digest;
    result.index_bytes = top.bytes;
    MSB_TRY(man, GetManifestRetrying(client, ref, chosen.digest, options));
    if (man.bytes.size() != static_cast<uint64_t>(chosen.size)) {
      return Error(ErrorCode::kProtocol, "image " + image + ": manifest " + chosen.digest + " is " +
                                             std::to_string(man.bytes.size()) + " bytes, the index says " +
                                             std::to_string(chosen.size));
    }
    auto k2 = oci::ClassifyDocument(man.bytes, man.content_type);
    if (!k2.ok()) return k2.error().Wrap("image " + image);
    if (*k2 != oci::DocumentKind::kManifest) {
      return Error(ErrorCode::kInvalidArgument, "image " + image + ": the index entry " + chosen.digest +
                                                    " is itself an index; nested indexes are not supported");
    }
  }
  auto parsed = oci::ParseManifest(man.bytes);
  if (!parsed.ok()) return parsed.error().Wrap("image " + image);
  result.manifest_digest = man.digest;
  result.manifest_bytes = man.bytes;
  result.manifest = std::move(*parsed);
  result.layers = result.manifest.layers;
  const std::string& cmt = result.manifest.config.media_type;
  if (cmt != oci::kMediaTypeOciConfig && cmt != oci::kMediaTypeDockerConfig) {
    return Error(ErrorCode::kInvalidArgument, "image " + image + " is not a container image: its config has media type " +
                                                  cmt.substr(0, 100));
  }
  for (size_t i = 0; i < result.layers.size(); ++i) {
    auto c = oci::ClassifyLayer(result.layers[i].media_type);
    if (!c.ok()) return c.error().Wrap("image " + image + ": layer " + std::to_string(i + 1));
  }
  MSB_TRY_STATUS(CheckDeclaredSizes(result.manifest, image, options));

  // Config: fetched, verified, parsed, checked against the layers.
  Shared shared;
  shared.progress = &progress;
  const oci::Descriptor& cd = result.manifest.config;
  if (target.HasBlob(cd.digest)) {
    MSB_TRY(result.config_bytes, ReadFile(target.BlobPath(cd.digest)));
  } else {
    MSB_TRY(result.config_bytes, FetchConfig(client, ref, cd, options));
  }
  auto cfg = oci::ParseImageConfig(result.config_bytes);
  if (!cfg.ok()) return cfg.error().Wrap("image " + image);
  result.config = std::move(*cfg);
  if (result.config.os != options.os || result.config.architecture != options.architecture) {
    return Error(ErrorCode::kInvalidArgument, "image " + image + " is built for " + result.config.os + "/" +
                                                  result.config.architecture + ", not " + options.os + "/" +
                                                  options.architecture);
  }
  if (result.config.diff_ids.size() != result.layers.size()) {
    return Error(ErrorCode::kInvalidArgument, "image " + image + ": the config lists " +
                                                  std::to_string(result.config.diff_ids.size()) +
                                                  " layer diff_ids but the manifest has " +
                                                  std::to_string(result.layers.size()) + " layers");
  }

  // Layers on worker threads.
  std::mutex mu;
  size_t next = 0;
  std::optional<Error> first_error;
  auto worker = [&]() {
    for (;;) {
      size_t i;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (next >= result.layers.size() || first_error) return;
        i = next++;
      }
      Status st = PullLayer(client, ref, result.layers[i], static_cast<int>(i), target, options, shared);
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (!first_error || first_error->code() == ErrorCode::kState) first_error = st.error();
        shared.stop = true;
        return;
      }
    }
  };
  int n = std::max(1, std::min<int>(options.concurrency, static_cast<int>(result.layers.size())));
  std::vector<std::thread> threads;
  for (int t = 0; t < n; ++t) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  if (first_error) return *first_error;

  // Config, manifest, index last: a target that has the root has everything.
  MSB_TRY_STATUS(WriteSmallBlob(target, cd.digest, result.config_bytes));
  MSB_TRY_STATUS(WriteSmallBlob(target, result.manifest_digest, result.manifest_bytes));
  if (!result.index_digest.empty()) {
    MSB_TRY_STATUS(WriteSmallBlob(target, result.index_digest, result.index_bytes));
  }
  return result;
}

}  // namespace msb::image
