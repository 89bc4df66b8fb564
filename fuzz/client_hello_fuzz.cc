// libFuzzer target for the ClientHello peek: any bytes a guest may send first
// on a TCP flow. Oracles: the answer is a function of the bytes, a final
// answer on a prefix is the answer on the whole input, and a server name it
// returns is a lower-case DNS name. No sockets.
#include <cstddef>
#include <cstdint>
#include <span>

#include "secrets/client_hello.h"

namespace {

using msb::secrets::HelloResult;
using msb::secrets::HelloVerdict;
using msb::secrets::PeekClientHello;

void Check(bool cond) {
  if (!cond) __builtin_trap();
}

bool SameAnswer(const HelloResult& a, const HelloResult& b) {
  return a.verdict == b.verdict && a.hello.sni == b.hello.sni && a.hello.alpn == b.hello.alpn &&
         a.hello.offers_tls13 == b.hello.offers_tls13 && a.hello.has_ech == b.hello.has_ech;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> bytes(data, size);
  HelloResult whole = PeekClientHello(bytes);
  Check(SameAnswer(whole, PeekClientHello(bytes)));
  Check((whole.verdict == HelloVerdict::kMalformed) == !whole.reason.empty());
  if (whole.verdict == HelloVerdict::kTls && whole.hello.sni) {
    const std::string& sni = *whole.hello.sni;
    Check(!sni.empty() && sni.size() <= 253 && sni.back() != '.');
    for (char c : sni) {
      Check((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.');
    }
  }
  for (size_t cut : {size / 2, size / 3, size > 0 ? size - 1 : 0}) {
    HelloResult prefix = PeekClientHello(bytes.first(cut));
    if (prefix.verdict != HelloVerdict::kNeedMore) Check(SameAnswer(prefix, whole));
  }
  return 0;
}
