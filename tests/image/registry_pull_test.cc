// Pulls from a real docker-registry (plain HTTP; TLS + Basic; TLS + Bearer
// tokens) into a directory BlobTarget: by tag and by digest, an index to its
// amd64 manifest, an index without one, unknown tags, refused credentials,
// an untrusted CA, a blob corrupted in the registry's storage, and a
// download that breaks mid-way and resumes from the sink's offset.
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include <nlohmann/json.hpp>

#include "common/fd.h"
#include "common/io.h"
#include "common/sha256.h"
#include "image/image_store.h"
#include "image/pull.h"
#include "image/registry.h"
#include "tests/support/dir_target.h"
#include "tests/support/registry_server.h"

namespace msb::image {
namespace {

using msb::testing::DirTarget;
using msb::testing::RegistryMode;
using msb::testing::RegistryServer;
using nlohmann::json;

std::string MakeTempDir() {
  char tmpl[] = "/tmp/msb-pull-test-XXXXXX";
  return ::mkdtemp(tmpl);
}

// One registry per mode, the test image pushed to each, for the whole suite.
class PullTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir());
    auto layout = msb::testing::CachedTestLayout("1.0");
    ASSERT_TRUE(layout.ok()) << layout.error().message();
    layout_ = new std::string(*layout);
  }
  static void TearDownTestSuite() {
    for (auto*& r : registries_) {
      delete r;
      r = nullptr;
    }
    if (dir_) std::filesystem::remove_all(*dir_);
    delete dir_;
    delete layout_;
  }
  void SetUp() override { target_dir_ = MakeTempDir(); }
  void TearDown() override { std::filesystem::remove_all(target_dir_); }

  // Started on first use: ctest runs each test in a process of its own.
  static RegistryServer& Reg(RegistryMode m) {
    RegistryServer*& slot = registries_[static_cast<int>(m)];
    if (slot == nullptr) {
      auto r = RegistryServer::Start(m, *dir_ + "/reg" + std::to_string(static_cast<int>(m)));
      MSB_CHECK(r.ok(), r.error().message());
      auto pushed = (*r)->Push(*layout_, "1.0", "team/api:1.0");
      MSB_CHECK(pushed.ok(), pushed.error().message());
      slot = r->release();
    }
    return *slot;
  }

  static PullOptions OptionsFor(const RegistryServer& r, bool with_creds = true) {
    PullOptions o;
    o.initial_backoff = std::chrono::milliseconds(20);
    if (r.mode() == RegistryMode::kPlain) {
      o.registries.registries[r.host_port()].insecure = true;
    } else {
      o.registries.registries[r.host_port()].ca_file = r.ca_file();
      if (with_creds) o.credentials = Credentials{r.username(), r.password()};
    }
    if (r.mode() == RegistryMode::kTlsToken) o.registries.registries[r.token_host_port()].insecure = true;
    return o;
  }

  static ImageReference Ref(const RegistryServer& r, const std::string& tag, const std::string& digest = "") {
    return ImageReference{r.host_port(), "team/api", tag, digest};
  }

  // The pushed layout's own manifest, read from its directory.
  static oci::Manifest LayoutManifest() {
    auto index = ReadFile(*layout_ + "/index.json");
    MSB_CHECK(index.ok(), "layout index.json");
    auto idx = oci::ParseIndex(*index);
    MSB_CHECK(idx.ok() && !idx->manifests.empty(), "layout index");
    auto bytes = ReadFile(*layout_ + "/blobs/sha256/" + std::string(oci::DigestHex(idx->manifests[0].digest)));
    MSB_CHECK(bytes.ok(), "layout manifest");
    auto m = oci::ParseManifest(*bytes);
    MSB_CHECK(m.ok(), "layout manifest parse");
    return *m;
  }

  void ExpectComplete(const PullResult& res, DirTarget& target) {
    EXPECT_TRUE(oci::IsValidDigest(res.manifest_digest));
    oci::Manifest pushed = LayoutManifest();
    EXPECT_EQ(res.manifest.config.digest, pushed.config.digest);
    ASSERT_EQ(res.layers.size(), pushed.layers.size());
    for (size_t i = 0; i < pushed.layers.size(); ++i) EXPECT_EQ(res.layers[i].digest, pushed.layers[i].digest);
    ASSERT_EQ(res.layers.size(), 3u);
    EXPECT_FALSE(res.config.entrypoint.empty());
    EXPECT_EQ(res.config.working_dir, "/srv");
    EXPECT_EQ(res.config.exposed_ports, std::vector<std::string>{"8080/tcp"});
    EXPECT_EQ(res.config.diff_ids.size(), 3u);
    EXPECT_EQ(oci::DigestOf(res.config_bytes), res.manifest.config.digest);
    EXPECT_TRUE(target.HasBlob(res.manifest_digest));
    EXPECT_TRUE(target.HasBlob(res.manifest.config.digest));
    for (const auto& l : res.layers) {
      ASSERT_TRUE(target.HasBlob(l.digest)) << l.digest;
      auto hex = Sha256File(target.BlobPath(l.digest));
      ASSERT_TRUE(hex.ok());
      EXPECT_EQ("sha256:" + *hex, l.digest);
    }
    auto manifest = ReadFile(target.BlobPath(res.manifest_digest));
    ASSERT_TRUE(manifest.ok());
    EXPECT_EQ(*manifest, res.manifest_bytes);
  }

  std::string target_dir_;
  static std::string* dir_;
  static std::string* layout_;
  static RegistryServer* registries_[3];
};
std::string* PullTest::dir_ = nullptr;
std::string* PullTest::layout_ = nullptr;
RegistryServer* PullTest::registries_[3] = {nullptr, nullptr, nullptr};

TEST_F(PullTest, PlainHttpByTagThenAgainSkipsEverything) {
  DirTarget target(target_dir_);
  std::mutex mu;
  std::map<int, PullProgress::Kind> last;
  ProgressFn progress = [&](const PullProgress& p) {
    std::lock_guard<std::mutex> lock(mu);
    last[p.layer] = p.kind;
    EXPECT_LE(p.done, p.total);
  };
  auto& r = Reg(RegistryMode::kPlain);
  auto res = Pull(Ref(r, "1.0"), OptionsFor(r), target, progress);
  ASSERT_TRUE(res.ok()) << res.error().message();
  ExpectComplete(*res, target);
  EXPECT_TRUE(res->index_digest.empty());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(last[i], PullProgress::Kind::kDone) << i;
  size_t published = target.PublishedCount();
  EXPECT_EQ(published, 5u);  // manifest, config, 3 layers

  last.clear();
  auto again = Pull(Ref(r, "1.0"), OptionsFor(r), target, progress);
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(again->manifest_digest, res->manifest_digest);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(last[i], PullProgress::Kind::kSkipped) << i;
  for (const auto& l : res->layers) EXPECT_EQ(target.StatsFor(l.digest).opens, 1) << l.digest;
}

TEST_F(PullTest, ByDigest) {
  auto& r = Reg(RegistryMode::kPlain);
  DirTarget first(target_dir_ + "/a");
  auto by_tag = Pull(Ref(r, "1.0"), OptionsFor(r), first);
  ASSERT_TRUE(by_tag.ok()) << by_tag.error().message();
  DirTarget target(target_dir_ + "/b");
  auto res = Pull(Ref(r, "", by_tag->manifest_digest), OptionsFor(r), target);
  ASSERT_TRUE(res.ok()) << res.error().message();
  EXPECT_EQ(res->manifest_digest, by_tag->manifest_digest);
  ExpectComplete(*res, target);
  // A digest that is not in the registry.
  auto missing = Pull(Ref(r, "", "sha256:" + std::string(64, '1')), OptionsFor(r), target);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound) << missing.error().message();
}

TEST_F(PullTest, TlsWithBasicAuth) {
  auto& r = Reg(RegistryMode::kTlsBasic);
  DirTarget target(target_dir_);
  auto res = Pull(Ref(r, "1.0"), OptionsFor(r), target);
  ASSERT_TRUE(res.ok()) << res.error().message();
  ExpectComplete(*res, target);
}

TEST_F(PullTest, TlsWithBearerTokens) {
  auto& r = Reg(RegistryMode::kTlsToken);
  int before = r.token_requests();
  DirTarget target(target_dir_);
  auto res = Pull(Ref(r, "1.0"), OptionsFor(r), target);
  ASSERT_TRUE(res.ok()) << res.error().message();
  ExpectComplete(*res, target);
  EXPECT_GT(r.token_requests(), before);
}

TEST_F(PullTest, WrongPasswordIsRefused) {
  for (RegistryMode m : {RegistryMode::kTlsBasic, RegistryMode::kTlsToken}) {
    auto& r = Reg(m);
    PullOptions o = OptionsFor(r);
    o.credentials->password = "wrong";
    DirTarget target(target_dir_);
    auto res = Pull(Ref(r, "1.0"), o, target);
    ASSERT_FALSE(res.ok());
    EXPECT_NE(res.error().message().find("registry " + r.host_port() + " refused the credentials for"),
              std::string::npos)
        << res.error().message();
    EXPECT_NE(res.error().message().find("run msb login " + r.host_port()), std::string::npos);
    EXPECT_EQ(target.PublishedCount(), 0u);
  }
}

TEST_F(PullTest, NoCredentialsAsksForLogin) {
  auto& r = Reg(RegistryMode::kTlsBasic);
  DirTarget target(target_dir_);
  auto res = Pull(Ref(r, "1.0"), OptionsFor(r, /*with_creds=*/false), target);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().message().find("requires credentials"), std::string::npos) << res.error().message();
}

TEST_F(PullTest, UntrustedCaNamesHostAndFix) {
  auto& r = Reg(RegistryMode::kTlsBasic);
  PullOptions o = OptionsFor(r);
  o.registries.registries.clear();
  DirTarget target(target_dir_);
  auto res = Pull(Ref(r, "1.0"), o, target);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().message().find("TLS verification of " + r.host_port() + " failed"), std::string::npos)
      << res.error().message();
  EXPECT_NE(res.error().message().find("--registry-ca"), std::string::npos);
  EXPECT_NE(res.error().message().find("registries.yaml"), std::string::npos);
}

TEST_F(PullTest, TlsRegistryMarkedInsecureIsNotVerified) {
  auto& r = Reg(RegistryMode::kTlsBasic);
  PullOptions o = OptionsFor(r);
  o.registries.registries.clear();
  o.registries.registries[r.host_port()].insecure = true;
  DirTarget target(target_dir_);
  auto res = Pull(Ref(r, "1.0"), o, target);
  ASSERT_TRUE(res.ok()) << res.error().message();
  ExpectComplete(*res, target);
}

TEST_F(PullTest, CheckLoginOverBasicAndTokens) {
  for (RegistryMode m : {RegistryMode::kTlsBasic, RegistryMode::kTlsToken}) {
    auto& r = Reg(m);
    PullOptions o = OptionsFor(r);
    RegistryClient good(r.host_port(), o.registries, o.credentials);
    auto ok = good.CheckLogin();
    EXPECT_TRUE(ok.ok()) << ok.error().message();
    RegistryClient bad(r.host_port(), o.registries, Credentials{r.username(), "wrong"});
    auto refused = bad.CheckLogin();
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.error().message().find("refused the credentials"), std::string::npos)
        << refused.error().message();
  }
}

TEST_F(PullTest, PlainRegistryNotMarkedInsecureSaysHowToAllowIt) {
  auto& r = Reg(RegistryMode::kPlain);
  PullOptions o;
  DirTarget target(target_dir_);
  auto res = Pull(Ref(r, "1.0"), o, target);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().message().find(r.host_port() + " does not speak TLS"), std::string::npos)
      << res.error().message();
  EXPECT_NE(res.error().message().find("--insecure-registry " + r.host_port()), std::string::npos);
}

TEST_F(PullTest, KeepAliveReusesOneConnection) {
  auto& r = Reg(RegistryMode::kTlsBasic);
  http::ClientOptions co;
  std::string ca = r.ca_file();
  co.policy = [ca](const std::string&) { return http::HostPolicy{false, ca, ""}; };
  http::HttpClient client(co);
  http::Request req;
  req.url = *http::ParseUrl("https://" + r.host_port() + "/v2/");
  for (int i = 0; i < 3; ++i) {
    auto resp = client.Do(req);
    ASSERT_TRUE(resp.ok()) << resp.error().message();
    EXPECT_EQ(resp->status, 401);  // no credentials sent
    EXPECT_EQ(client.IdleConnections(), 1u);
  }
}

TEST_F(PullTest, UnknownTagAndRepository) {
  auto& r = Reg(RegistryMode::kPlain);
  DirTarget target(target_dir_);
  auto res = Pull(Ref(r, "nope"), OptionsFor(r), target);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(res.error().message().find("registry " + r.host_port() + " has no manifest team/api:nope"),
            std::string::npos)
      << res.error().message();
  auto repo = Pull(ImageReference{r.host_port(), "team/none", "1.0", ""}, OptionsFor(r), target);
  ASSERT_FALSE(repo.ok());
  EXPECT_EQ(repo.error().code(), ErrorCode::kNotFound) << repo.error().message();
}

// Uploads an index over the plain registry, with a second manifest (the
// first plus an annotation) to stand for another platform.
class IndexPullTest : public PullTest {
 protected:
  struct Pushed {
    std::string amd64_digest;
    std::string other_digest;
    size_t amd64_size = 0, other_size = 0;
  };
  static Result<Pushed> PushVariants(RegistryClient& client, const std::string& base_manifest) {
    Pushed p;
    p.amd64_digest = oci::DigestOf(base_manifest);
    p.amd64_size = base_manifest.size();
    json m = json::parse(base_manifest);
    m["annotations"]["org.example.platform"] = "arm64";
    std::string other = m.dump();
    p.other_digest = oci::DigestOf(other);
    p.other_size = other.size();
    MSB_TRY_STATUS(client.PutManifest("team/api", p.other_digest, std::string(oci::kMediaTypeOciManifest), other));
    return p;
  }
  static std::string Entry(const std::string& digest, size_t size, const std::string& arch) {
    return json({{"mediaType", oci::kMediaTypeOciManifest},
                 {"digest", digest},
                 {"size", size},
                 {"platform", {{"architecture", arch}, {"os", "linux"}}}})
        .dump();
  }
};

TEST_F(IndexPullTest, IndexResolvesToAmd64) {
  auto& r = Reg(RegistryMode::kPlain);
  DirTarget first(target_dir_ + "/a");
  auto base = Pull(Ref(r, "1.0"), OptionsFor(r), first);
  ASSERT_TRUE(base.ok()) << base.error().message();
  RegistryClient client(r.host_port(), OptionsFor(r).registries, std::nullopt);
  auto pushed = PushVariants(client, base->manifest_bytes);
  ASSERT_TRUE(pushed.ok()) << pushed.error().message();
  std::string index = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[)" +
                      Entry(pushed->other_digest, pushed->other_size, "arm64") + "," +
                      Entry(pushed->amd64_digest, pushed->amd64_size, "amd64") + "]}";
  ASSERT_TRUE(client.PutManifest("team/api", "multi", std::string(oci::kMediaTypeOciIndex), index).ok());
  DirTarget target(target_dir_ + "/b");
  auto res = Pull(Ref(r, "multi"), OptionsFor(r), target);
  ASSERT_TRUE(res.ok()) << res.error().message();
  EXPECT_EQ(res->manifest_digest, pushed->amd64_digest);
  EXPECT_EQ(res->index_digest, oci::DigestOf(index));
  ExpectComplete(*res, target);
  EXPECT_FALSE(target.HasBlob(pushed->other_digest));
  EXPECT_TRUE(target.HasBlob(res->index_digest));

  // The same into the image store, which reads the image back from the index.
  auto store = ImageStore::Open(target_dir_ + "/store");
  ASSERT_TRUE(store.ok()) << store.error().message();
  auto into_store = Pull(Ref(r, "multi"), OptionsFor(r), *store);
  ASSERT_TRUE(into_store.ok()) << into_store.error().message();
  auto image = store->ReadImage(into_store->index_digest);
  ASSERT_TRUE(image.ok()) << image.error().message();
  EXPECT_EQ(image->manifest_digest, pushed->amd64_digest);
  EXPECT_TRUE(image->missing_blobs.empty());
  ASSERT_EQ(image->layers.size(), 3u);
  EXPECT_EQ(image->layers[0].diff_id, into_store->config.diff_ids[0]);
}

TEST_F(IndexPullTest, IndexWithoutAmd64IsAClearError) {
  auto& r = Reg(RegistryMode::kPlain);
  DirTarget first(target_dir_ + "/a");
  auto base = Pull(Ref(r, "1.0"), OptionsFor(r), first);
  ASSERT_TRUE(base.ok()) << base.error().message();
  RegistryClient client(r.host_port(), OptionsFor(r).registries, std::nullopt);
  auto pushed = PushVariants(client, base->manifest_bytes);
  ASSERT_TRUE(pushed.ok()) << pushed.error().message();
  std::string index = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[)" +
                      Entry(pushed->other_digest, pushed->other_size, "arm64") + "]}";
  ASSERT_TRUE(client.PutManifest("team/api", "armonly", std::string(oci::kMediaTypeOciIndex), index).ok());
  DirTarget target(target_dir_ + "/b");
  auto res = Pull(Ref(r, "armonly"), OptionsFor(r), target);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().message(), "image " + r.host_port() +
                                       "/team/api:armonly has no linux/amd64 manifest; it has: linux/arm64");
  EXPECT_EQ(target.PublishedCount(), 0u);
}

// Corruption and resume each get a registry of their own (blobs are shared
// across a registry's repositories).
class PrivateRegistryPullTest : public PullTest {
 protected:
  void StartOwn() {
    auto r = RegistryServer::Start(RegistryMode::kPlain, target_dir_ + "/reg");
    ASSERT_TRUE(r.ok()) << r.error().message();
    own_ = std::move(*r);
    auto pushed = own_->Push(*layout_, "1.0", "team/api:1.0");
    ASSERT_TRUE(pushed.ok()) << pushed.error().message();
  }
  // The largest layer of the pushed image.
  oci::Descriptor LargestLayer() {
    DirTarget probe(target_dir_ + "/probe");
    RegistryClient client(own_->host_port(), OptionsFor(*own_).registries, std::nullopt);
    auto m = client.GetManifest("team/api", "1.0");
    EXPECT_TRUE(m.ok());
    auto man = oci::ParseManifest(m->bytes);
    EXPECT_TRUE(man.ok());
    oci::Descriptor best = man->layers[0];
    for (const auto& l : man->layers) {
      if (l.size > best.size) best = l;
    }
    return best;
  }
  std::unique_ptr<RegistryServer> own_;
};

TEST_F(PrivateRegistryPullTest, CorruptBlobFailsNamingItAndPublishesNothingForIt) {
  StartOwn();
  oci::Descriptor layer = LargestLayer();
  std::string data = own_->BlobDataPath(layer.digest);
  auto bytes = ReadFile(data);
  ASSERT_TRUE(bytes.ok()) << bytes.error().message();
  ASSERT_GT(bytes->size(), 1000u);
  std::string corrupt = *bytes;
  corrupt[corrupt.size() / 2] ^= 0x55;  // same length, different bytes
  ASSERT_TRUE(WriteFileAtomic(data, corrupt).ok());

  DirTarget target(target_dir_ + "/t");
  auto res = Pull(Ref(*own_, "1.0"), OptionsFor(*own_), target);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().message().find(layer.digest), std::string::npos) << res.error().message();
  EXPECT_NE(res.error().message().find("does not match its digest"), std::string::npos) << res.error().message();
  EXPECT_FALSE(target.HasBlob(layer.digest));
  EXPECT_EQ(::access((target_dir_ + "/t/partial/" + layer.digest.substr(7)).c_str(), F_OK) == 0 &&
                std::filesystem::file_size(target_dir_ + "/t/partial/" + layer.digest.substr(7)) > 0,
            false)
      << "bad bytes kept for a later resume";
}

TEST_F(PrivateRegistryPullTest, InterruptedDownloadResumesAtTheSinkOffset) {
  StartOwn();
  oci::Descriptor layer = LargestLayer();
  ASSERT_GT(layer.size, 200000);
  DirTarget target(target_dir_ + "/t");
  target.FailOnce(layer.digest, 100000);
  std::vector<PullProgress> events;
  std::mutex mu;
  auto res = Pull(Ref(*own_, "1.0"), OptionsFor(*own_), target, [&](const PullProgress& p) {
    std::lock_guard<std::mutex> lock(mu);
    if (p.digest == layer.digest) events.push_back(p);
  });
  ASSERT_TRUE(res.ok()) << res.error().message();
  ExpectComplete(*res, target);
  auto stats = target.StatsFor(layer.digest);
  EXPECT_EQ(stats.restarts, 0);
  EXPECT_EQ(stats.bytes_written, static_cast<uint64_t>(layer.size));  // no byte written twice
  ASSERT_GE(stats.offsets_seen.size(), 2u);
  EXPECT_EQ(stats.offsets_seen.front(), 0u);
  EXPECT_EQ(stats.offsets_seen.back(), 100000u);
  bool retried = false;
  for (const auto& e : events) retried |= e.kind == PullProgress::Kind::kRetrying;
  EXPECT_TRUE(retried);
  EXPECT_EQ(events.back().kind, PullProgress::Kind::kDone);
}

// The image store as the target: a pull interrupted mid-layer resumes from
// the store's partial in a second pull, and every blob ends up verified.
TEST_F(PrivateRegistryPullTest, ImageStoreKeepsThePartialForTheNextPull) {
  StartOwn();
  oci::Descriptor layer = LargestLayer();
  auto store = ImageStore::Open(target_dir_ + "/store");
  ASSERT_TRUE(store.ok()) << store.error().message();
  PullOptions o = OptionsFor(*own_);
  o.max_attempts = 1;
  // Stop the first pull once 100000 bytes of the layer are in.
  std::atomic<bool> cut{false};
  {
    struct Cutting : BlobTarget {
      ImageStore* s;
      std::string digest;
      std::atomic<bool>* cut;
      bool HasBlob(const std::string& d) const override { return s->HasBlob(d); }
      std::string BlobPath(const std::string& d) const override { return s->BlobPath(d); }
      Result<std::unique_ptr<BlobSink>> OpenBlob(const std::string& d, int64_t size) override {
        MSB_TRY(std::unique_ptr<BlobSink> inner, s->OpenBlob(d, size));
        if (d != digest) return inner;
        struct Sink : BlobSink {
          std::unique_ptr<BlobSink> in;
          std::atomic<bool>* cut;
          uint64_t written = 0;
          uint64_t Offset() const override { return in->Offset(); }
          Status Restart() override { return in->Restart(); }
          Status Write(std::string_view b) override {
            if (written + b.size() > 100000) {
              *cut = true;
              MSB_TRY_STATUS(in->Write(b.substr(0, 100000 - written)));
              written = 100000;
              return Error(ErrorCode::kInvalidArgument, "cut");  // not retried
            }
            written += b.size();
            return in->Write(b);
          }
          Status Commit() override { return in->Commit(); }
        };
        auto sink = std::make_unique<Sink>();
        sink->in = std::move(inner);
        sink->cut = cut;
        return std::unique_ptr<BlobSink>(std::move(sink));
      }
    } cutting;
    cutting.s = &*store;
    cutting.digest = layer.digest;
    cutting.cut = &cut;
    auto first = Pull(Ref(*own_, "1.0"), o, cutting);
    ASSERT_FALSE(first.ok());
    EXPECT_TRUE(cut);
    EXPECT_FALSE(store->HasBlob(layer.digest));
  }
  uint64_t resumed_from = 0;
  auto second = Pull(Ref(*own_, "1.0"), o, *store, [&](const PullProgress& p) {
    if (p.digest == layer.digest && p.kind == PullProgress::Kind::kStarted) resumed_from = p.done;
  });
  ASSERT_TRUE(second.ok()) << second.error().message();
  EXPECT_EQ(resumed_from, 100000u);
  auto image = store->ReadImage(second->manifest_digest);
  ASSERT_TRUE(image.ok()) << image.error().message();
  EXPECT_TRUE(image->missing_blobs.empty());
  for (const auto& l : image->layers) {
    auto hex = Sha256File(l.path);
    ASSERT_TRUE(hex.ok());
    EXPECT_EQ("sha256:" + *hex, l.digest);
  }
}


// A token that expires in the middle of a pull. The registry's own token
// server issues the pull's first token with a short lifetime; the pull is
// held before its first layer until the registry itself refuses that token
// (GET /v2/ with it answers 401), then goes on: the layer requests carry the
// expired token, the registry answers 401 with a Bearer challenge, and the
// client fetches a new token and completes.
class TokenExpiryPullTest : public PullTest {
 protected:
  void StartOwn() {
    auto r = RegistryServer::Start(RegistryMode::kTlsToken, target_dir_ + "/reg");
    ASSERT_TRUE(r.ok()) << r.error().message();
    own_ = std::move(*r);
    auto pushed = own_->Push(*layout_, "1.0", "team/api:1.0");
    ASSERT_TRUE(pushed.ok()) << pushed.error().message();
  }

  // Holds every layer's download until the first token the pull was issued
  // (the one after `first_token`) is refused by the registry.
  struct HoldingTarget : BlobTarget {
    DirTarget* inner;
    RegistryServer* reg;
    std::set<std::string> layers;
    size_t first_token = 0;
    std::mutex mu;
    bool expired = false;
    std::string why;  // set when the wait failed
    bool HasBlob(const std::string& d) const override { return inner->HasBlob(d); }
    std::string BlobPath(const std::string& d) const override { return inner->BlobPath(d); }
    Result<std::unique_ptr<BlobSink>> OpenBlob(const std::string& d, int64_t size) override {
      if (layers.count(d) != 0) WaitUntilRefused();
      return inner->OpenBlob(d, size);
    }
    void WaitUntilRefused() {
      std::lock_guard<std::mutex> lock(mu);
      if (expired || !why.empty()) return;
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
      while (std::chrono::steady_clock::now() < deadline) {
        auto tokens = reg->IssuedTokens();
        if (tokens.size() <= first_token) {
          why = "the pull reached a layer without having been issued a token";
          return;
        }
        auto status = reg->StatusWithToken(tokens[first_token]);
        if (status.ok() && *status == 401) {
          expired = true;
          return;
        }
        if (!status.ok() || *status != 200) {
          why = status.ok() ? "GET /v2/ with the token answered " + std::to_string(*status)
                            : status.error().message();
          return;
        }
        ::poll(nullptr, 0, 250);  // the registry's clock decides; ask it again
      }
      why = "the registry still accepted the first token after 120 s";
    }
  };

  void Hold(HoldingTarget& t, DirTarget& inner) {
    t.inner = &inner;
    t.reg = own_.get();
    for (const auto& l : LayoutManifest().layers) t.layers.insert(l.digest);
    t.first_token = own_->IssuedTokens().size();
  }

  std::unique_ptr<RegistryServer> own_;
};

TEST_F(TokenExpiryPullTest, ExpiredTokenMidPullIsRenewedAndThePullCompletes) {
  StartOwn();
  // The pull's first token lives 15 s (manifest and config in that time),
  // the next one the default 600 s.
  own_->SetNextTokenLifetimes({15});
  DirTarget inner(target_dir_ + "/t");
  HoldingTarget target;
  Hold(target, inner);
  auto res = Pull(Ref(*own_, "1.0"), OptionsFor(*own_), target);
  ASSERT_TRUE(target.why.empty()) << target.why;
  ASSERT_TRUE(target.expired);
  ASSERT_TRUE(res.ok()) << res.error().message();
  ExpectComplete(*res, inner);
  // The registry refused the expired token on a layer, and the client came
  // back with a new token that it accepted.
  EXPECT_GE(own_->BlobFetches(401), 1);
  EXPECT_GE(own_->IssuedTokens().size(), target.first_token + 2);
  EXPECT_EQ(own_->BlobFetches(200), 4);  // the config and the three layers, each once
}

TEST_F(TokenExpiryPullTest, ARenewedTokenTheRegistryRefusesEndsThePullWithAClearError) {
  StartOwn();
  // The first token expires mid-pull; every new one is refused from the start
  // (as when the token server's clock is far behind the registry's).
  own_->SetNextTokenLifetimes({15, -1, -1, -1, -1, -1, -1, -1});
  DirTarget inner(target_dir_ + "/t");
  HoldingTarget target;
  Hold(target, inner);
  PullOptions o = OptionsFor(*own_);
  auto res = Pull(Ref(*own_, "1.0"), o, target);
  ASSERT_TRUE(target.why.empty()) << target.why;
  ASSERT_FALSE(res.ok());
  const std::string msg = res.error().message();
  EXPECT_NE(msg.find("registry " + own_->host_port() + " refused the token its token server had just issued for blob sha256:"),
            std::string::npos)
      << msg;
  bool names_a_layer = false;
  for (const auto& l : LayoutManifest().layers) names_a_layer |= msg.find(l.digest) != std::string::npos;
  EXPECT_TRUE(names_a_layer) << msg;
  EXPECT_NE(msg.find("(invalid_token"), std::string::npos) << msg;
  EXPECT_NE(msg.find("run msb login " + own_->host_port()), std::string::npos) << msg;
  // Nothing of the layers was published; each layer request was refused.
  for (const auto& l : LayoutManifest().layers) EXPECT_FALSE(inner.HasBlob(l.digest)) << l.digest;
  EXPECT_GE(own_->BlobFetches(401), 2);
}

}  // namespace
}  // namespace msb::image
