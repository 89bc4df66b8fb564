// LayerStream in-process: each layer's bytes arrive in order and whole
// (gzip, zstd, uncompressed), with the SHA-256 of all of them; the reader
// reads ahead into the next layer but never holds more than its bound; a
// corrupt layer is an error for that layer only after the earlier ones; a
// stream dropped half-read stops its reader. Layers are memfds.
#include "agentd/layer_stream.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/mman.h>

#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "common/archive_ptr.h"
#include "common/fd.h"
#include "common/io.h"
#include "common/sha256.h"

namespace msb::agent {
namespace {

using std::chrono::seconds;

enum class Compression { kNone, kGzip, kZstd };

la_ssize_t AppendTo(archive*, void* out, const void* buf, size_t n) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

// bytes compressed as one raw stream.
std::string Compress(const std::string& bytes, Compression c) {
  if (c == Compression::kNone) return bytes;
  std::string out;
  ArchiveWritePtr a(archive_write_new());
  archive_write_set_format_raw(a.get());
  if (c == Compression::kGzip) EXPECT_EQ(archive_write_add_filter_gzip(a.get()), ARCHIVE_OK);
  else EXPECT_EQ(archive_write_add_filter_zstd(a.get()), ARCHIVE_OK);
  archive_write_set_bytes_in_last_block(a.get(), 1);
  EXPECT_EQ(archive_write_open(a.get(), &out, nullptr, AppendTo, nullptr), ARCHIVE_OK);
  ArchiveEntryPtr en(archive_entry_new());
  archive_entry_set_pathname(en.get(), "data");
  archive_entry_set_filetype(en.get(), AE_IFREG);
  archive_entry_set_size(en.get(), static_cast<la_int64_t>(bytes.size()));
  EXPECT_EQ(archive_write_header(a.get(), en.get()), ARCHIVE_OK);
  EXPECT_EQ(archive_write_data(a.get(), bytes.data(), bytes.size()), static_cast<la_ssize_t>(bytes.size()));
  EXPECT_EQ(archive_write_close(a.get()), ARCHIVE_OK);
  return out;
}

// Bytes that do not compress, so that every layer is many chunks.
std::string Noise(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// The layers' blobs in memfds, and their sources.
struct Blobs {
  std::vector<UniqueFd> fds;
  std::vector<LayerSource> sources;

  void Add(const std::string& blob) {
    UniqueFd fd(::memfd_create("layer", MFD_CLOEXEC));
    ASSERT_TRUE(fd.valid());
    ASSERT_TRUE(WriteAll(fd.get(), blob).ok());
    sources.push_back({fd.get(), blob.size()});
    fds.push_back(std::move(fd));
  }
};

// Reads layer `index` to its end.
std::string ReadLayer(LayerStream& stream, uint32_t index) {
  std::string out;
  for (;;) {
    auto chunk = stream.Next(index);
    EXPECT_TRUE(chunk.ok()) << chunk.error().message();
    if (!chunk.ok() || chunk->empty()) return out;
    out.append(chunk->data(), chunk->size());
  }
}

TEST(LayerStream, LayersArriveInOrderWholeAndHashed) {
  std::vector<std::string> layers = {Noise(3 << 20, 1), "a small layer", Noise(2 << 20, 2), Noise(3 << 20, 3)};
  std::vector<Compression> kinds = {Compression::kGzip, Compression::kNone, Compression::kZstd,
                                    Compression::kNone};
  Blobs blobs;
  for (size_t i = 0; i < layers.size(); ++i) blobs.Add(Compress(layers[i], kinds[i]));
  constexpr size_t kBound = 2 << 20;
  LayerStream stream(blobs.sources, kBound);
  for (uint32_t i = 0; i < layers.size(); ++i) {
    EXPECT_EQ(ReadLayer(stream, i), layers[i]) << "layer " << i;
    auto digest = stream.Finish(i);
    ASSERT_TRUE(digest.ok()) << digest.error().message();
    EXPECT_EQ(digest->diff_id, "sha256:" + Sha256Hex(layers[i]));
    EXPECT_EQ(digest->bytes, layers[i].size());
  }
  // 11 MiB passed through a queue of at most 2 MiB (no chunk is larger).
  EXPECT_LE(stream.peak_buffered(), kBound);
  EXPECT_GT(stream.peak_buffered(), 0u);
}

// Nothing read yet: the reader has finished layer 0 and gone on into layer
// 1, then waits at the bound.
TEST(LayerStream, ReadsAheadIntoTheNextLayerUpToItsBound) {
  std::string small = "layer zero";
  std::string big = Noise(8 << 20, 4);
  Blobs blobs;
  blobs.Add(Compress(small, Compression::kGzip));
  blobs.Add(Compress(big, Compression::kNone));
  constexpr size_t kBound = 3 << 20;
  LayerStream stream(blobs.sources, kBound);
  ASSERT_TRUE(stream.WaitUntilReaderWaits(std::chrono::duration_cast<std::chrono::milliseconds>(seconds(30))));
  EXPECT_GT(stream.peak_buffered(), small.size());
  EXPECT_LE(stream.peak_buffered(), kBound);
  // Finish skips what the applier does not read; the hash covers it.
  auto chunk = stream.Next(0);
  ASSERT_TRUE(chunk.ok());
  EXPECT_EQ(*chunk, small);
  auto d0 = stream.Finish(0);
  ASSERT_TRUE(d0.ok());
  EXPECT_EQ(d0->diff_id, "sha256:" + Sha256Hex(small));
  auto first = stream.Next(1);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(big.compare(0, first->size(), *first), 0);
  auto d1 = stream.Finish(1);
  ASSERT_TRUE(d1.ok());
  EXPECT_EQ(d1->diff_id, "sha256:" + Sha256Hex(big));
  EXPECT_EQ(d1->bytes, big.size());
  EXPECT_LE(stream.peak_buffered(), kBound);
}

TEST(LayerStream, ACorruptLayerFailsAfterTheLayersBeforeIt) {
  std::string good = Noise(1 << 20, 5);
  std::string gz = Compress(Noise(1 << 20, 6), Compression::kGzip);
  // A gzip header and then garbage.
  std::string bad = gz.substr(0, 10) + Noise(4096, 7);
  Blobs blobs;
  blobs.Add(Compress(good, Compression::kZstd));
  blobs.Add(bad);
  blobs.Add(Compress("never read", Compression::kNone));
  LayerStream stream(blobs.sources, 1 << 20);
  EXPECT_EQ(ReadLayer(stream, 0), good);
  ASSERT_TRUE(stream.Finish(0).ok());
  Result<std::string_view> r = std::string_view();
  while ((r = stream.Next(1)).ok() && !r->empty()) {
  }
  ASSERT_FALSE(r.ok());
  std::string message = r.error().message();
  EXPECT_FALSE(message.empty());
  // The error stays.
  auto again = stream.Finish(1);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().message(), message);
}

TEST(LayerStream, ALayerThatIsNotCompressedTarDataIsStillBytes) {
  // The stream holds bytes; what they mean is the tar reader's business.
  Blobs blobs;
  blobs.Add("plain bytes");
  LayerStream stream(blobs.sources);
  EXPECT_EQ(ReadLayer(stream, 0), "plain bytes");
  auto d = stream.Finish(0);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->diff_id, "sha256:" + Sha256Hex("plain bytes"));
}

TEST(LayerStream, ABlobShorterThanItsSizeIsAnError) {
  std::string blob = Compress(Noise(4096, 8), Compression::kNone);
  Blobs blobs;
  blobs.Add(blob);
  blobs.sources[0].size = blob.size() + 100;
  LayerStream stream(blobs.sources);
  Result<std::string_view> r = std::string_view();
  while ((r = stream.Next(0)).ok() && !r->empty()) {
  }
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("ends at byte"), std::string::npos) << r.error().message();
}

// A consumer that gives up (an entry failed) destroys the stream while the
// reader waits for room: the destructor returns.
TEST(LayerStream, DroppedHalfReadStopsTheReader) {
  Blobs blobs;
  for (uint32_t i = 0; i < 3; ++i) blobs.Add(Compress(Noise(4 << 20, 10 + i), Compression::kNone));
  auto stream = std::make_unique<LayerStream>(blobs.sources, 1 << 20);
  ASSERT_TRUE(stream->Next(0).ok());
  ASSERT_TRUE(stream->WaitUntilReaderWaits(std::chrono::duration_cast<std::chrono::milliseconds>(seconds(30))));
  stream.reset();
}

}  // namespace
}  // namespace msb::agent
