// libFuzzer target for what a registry sends back: OCI/Docker documents
// (image/oci.h), WWW-Authenticate challenges and chunked bodies (image/http.h).
// Any input parses or yields an error, never a crash; a parsed manifest's
// descriptors always carry valid digests and sizes; chunked decoding of any
// split gives the same bytes. Not a test of which inputs are accepted.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "image/http.h"
#include "image/oci.h"

namespace {

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "oci_fuzz: %s\n", what);
  std::abort();
}

void CheckDescriptor(const msb::image::oci::Descriptor& d) {
  if (!msb::image::oci::IsValidDigest(d.digest)) Die("descriptor with an invalid digest accepted");
  if (d.size < 0) Die("descriptor with a negative size accepted");
}

std::string Decode(std::string_view in, size_t split, bool* ok) {
  msb::image::http::ChunkedDecoder dec;
  std::string out;
  auto sink = [&](std::string_view b) {
    out.append(b);
    return msb::OkStatus();
  };
  auto a = dec.Feed(in.substr(0, split), sink);
  *ok = a.ok();
  if (!a.ok()) return out;
  std::string rest(in.substr(0, split).substr(*a));
  rest += in.substr(split);
  if (!dec.Done()) {
    auto b = dec.Feed(rest, sink);
    *ok = b.ok();
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace msb::image;
  if (size > 256 * 1024) return 0;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)oci::ClassifyDocument(text, "application/vnd.oci.image.manifest.v1+json");
  if (auto idx = oci::ParseIndex(text); idx.ok()) {
    for (const auto& d : idx->manifests) CheckDescriptor(d);
    (void)oci::SelectPlatform(*idx, "fuzz");
  }
  if (auto m = oci::ParseManifest(text); m.ok()) {
    CheckDescriptor(m->config);
    for (const auto& d : m->layers) {
      CheckDescriptor(d);
      (void)oci::ClassifyLayer(d.media_type);
    }
  }
  if (auto c = oci::ParseImageConfig(text); c.ok()) {
    for (const auto& d : c->diff_ids) {
      if (!oci::IsValidDigest(d)) Die("invalid diff_id accepted");
    }
  }
  (void)http::ParseChallenge(text);
  bool ok_whole = false, ok_split = false;
  std::string whole = Decode(text, text.size(), &ok_whole);
  std::string split = Decode(text, text.size() / 2, &ok_split);
  if (ok_whole && ok_split && whole != split) Die("chunked decoding depends on the split");
  return 0;
}
