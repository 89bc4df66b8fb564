// libFuzzer target for the network stack's input from the guest: the input is
// cut into frames by QEMU's stream framing (net/stream.h) and each frame is
// fed to a fresh net::Stack whose policy denies every flow and whose DNS
// handler answers at once, so TCP to gateway:53 exercises the TCP endpoint.
// Oracles: no crash or sanitizer report, and every frame the stack emits
// parses back and fits the MTU.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "common/dispatcher.h"
#include "net/packet.h"
#include "net/stack.h"
#include "net/stream.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace msb::net;
  static msb::Dispatcher* dispatcher = new msb::Dispatcher();
  StackConfig cfg;
  Stack stack(
      *dispatcher, cfg,
      [&cfg](std::span<const uint8_t> frame) {
        if (!ParseFrame(frame)) std::abort();
        if (frame.size() > cfg.mtu + kEthHeader) std::abort();
      },
      [](const FlowKey&) { return FlowVerdict{FlowAction::kDeny}; },
      [](std::string_view query, DnsReply reply) { reply(std::string(query)); });
  StreamDecoder decoder;
  (void)decoder.Feed({data, size}, [&](std::span<const uint8_t> frame) { stack.OnFrame(frame); });
  // Also the whole input as one frame: the parser sees every byte pattern.
  stack.OnFrame({data, size});
  return 0;
}
