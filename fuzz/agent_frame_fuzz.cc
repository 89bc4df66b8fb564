// libFuzzer target for the agent protocol as the host decodes it: the input is
// the byte stream agentd sends up the virtio-serial port (the first byte sets
// the size of the reads that deliver it). It goes through FrameReader, each
// frame's payload through the decoders the supervisor, the CLI's control
// client and the flattener apply to what the guest sends (hello, ready,
// started, exit, result, error, credit, layer; the host-to-agent decoders too,
// whose host copy is the instrumented one), the per-id receive credit, and
// BoundedGuestText for guest text quoted in errors. Oracles: the frames
// re-encode to exactly the bytes they were read from, whatever the read
// sizes; a poisoned reader saw a header above kMaxPayload; every decoded
// message re-encodes to JSON that decodes to the same encoding; credit never
// lets more than kCreditWindow bytes be outstanding; quoted guest text is
// bounded and free of control bytes. Not a test of the supervisor's state
// machine (vm/supervisor.cc), which needs a QEMU.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "agent/flow.h"
#include "agent/frame.h"
#include "agent/messages.h"
#include "agent/protocol.h"
#include "vm/guest_text.h"

namespace {

using namespace msb::agent;

[[noreturn]] void Die(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "agent_frame_fuzz: %s\n%.*s\n", what, static_cast<int>(detail.size()), detail.data());
  std::abort();
}

void Check(bool cond, const char* what, std::string_view detail = {}) {
  if (!cond) Die(what, detail);
}

uint32_t LoadBe32(std::string_view s, size_t at) {
  auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(s[at + i])); };
  return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
}

// Decodes, re-encodes, decodes again: the two encodings must agree.
template <typename Parse>
void RoundTrip(Parse parse, std::string_view payload, const char* what) {
  auto first = parse(payload);
  if (!first.ok()) {
    Check(!first.error().message().empty(), "a decoder failed without a message", what);
    return;
  }
  std::string encoded = Encode(*first);
  auto again = parse(encoded);
  Check(again.ok(), "an encoding does not decode", encoded);
  Check(Encode(*again) == encoded, "a decoded encoding encodes differently", encoded);
}

void CheckGuestText(std::string_view text) {
  std::string quoted = msb::vm::BoundedGuestText(text);
  Check(quoted.size() <= 2000 + 3, "quoted guest text is not bounded");
  for (char c : quoted) {
    auto u = static_cast<unsigned char>(c);
    Check(!((u < 0x20 && c != '\n') || u == 0x7f), "quoted guest text holds a control byte", quoted);
  }
}

// Everything the host does with the payload of one frame from the guest.
void DecodePayload(const Frame& f) {
  const std::string& p = f.payload;
  (void)ToString(f.kind);
  (void)IsKnownKind(static_cast<uint8_t>(f.kind));
  RoundTrip(ParseHello, p, "hello");
  RoundTrip(ParseReady, p, "ready");
  RoundTrip(ParseStarted, p, "started");
  RoundTrip(ParseExitInfo, p, "exit");
  RoundTrip(ParseResultMsg, p, "result");
  RoundTrip(ParseErrorMsg, p, "error");
  RoundTrip(ParseCredit, p, "credit");
  RoundTrip(ParseLayerReport, p, "layer");
  RoundTrip(ParseExportReport, p, "exported");
  // What the host sends, decoded by agentd: the same code, instrumented here.
  RoundTrip(ParseBootConfig, p, "boot");
  RoundTrip(ParseExecRequest, p, "exec");
  RoundTrip(ParseSignalRequest, p, "signal");
  RoundTrip(ParseResize, p, "resize");
  RoundTrip(ParsePathRequest, p, "copy");
  RoundTrip(ParseShutdown, p, "shutdown");
  RoundTrip(ParseUnpackRequest, p, "unpack");
  RoundTrip(ParseExportRequest, p, "export");

  if (auto e = ParseExitInfo(p); e.ok()) {
    int code = ShellExitCode(*e);
    Check(code >= 0 && code <= 255, "ShellExitCode out of range", p);
  }
  if (auto r = ParseReady(p); r.ok() && r->error) CheckGuestText(*r->error);
  if (auto r = ParseResultMsg(p); r.ok() && r->error) CheckGuestText(*r->error);
  if (auto m = ParseErrorMsg(p); m.ok()) CheckGuestText(m->message);
  if (auto l = ParseLayerReport(p); l.ok()) {
    Check(l->index < kMaxUnpackLayers, "layer index out of range", p);
    Check(l->diff_id.size() == 7 + 64, "layer diff_id of the wrong length", p);
  }
  if (auto x = ParseExportReport(p); x.ok()) Check(x->index < kMaxExportLayers, "exported index out of range", p);
}

// The frames of `stream` read `step` bytes at a time, with the byte offset
// where the reader stopped (the start of the incomplete or refused frame).
struct ReadResult {
  std::vector<Frame> frames;
  size_t consumed = 0;  // bytes of whole frames returned
  bool poisoned = false;
};

ReadResult ReadAll(std::string_view stream, size_t step) {
  FrameReader reader;
  ReadResult out;
  size_t fed = 0;
  while (fed < stream.size() && !out.poisoned) {
    size_t n = std::min(step, stream.size() - fed);
    reader.Feed(stream.substr(fed, n));
    fed += n;
    for (;;) {
      auto next = reader.Next();
      if (!next.ok()) {
        Check(reader.poisoned(), "Next() failed without poisoning the reader");
        Check(!next.error().message().empty(), "a reader error without a message");
        out.poisoned = true;
        // It keeps refusing.
        Check(!reader.Next().ok(), "a poisoned reader returned a frame");
        break;
      }
      if (!next->has_value()) {
        Check(reader.wanted() > 0, "the reader wants nothing but returned no frame");
        break;
      }
      out.consumed += kHeaderSize + (**next).payload.size();
      out.frames.push_back(std::move(**next));
    }
    if (!out.poisoned) {
      Check(reader.buffered() == fed - out.consumed, "the reader lost or invented bytes");
      Check(reader.mid_frame() == (reader.buffered() != 0), "mid_frame() disagrees with buffered()");
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t step = 1 + data[0] % 64;
  if (data[0] >= 0xc0) step = size;  // one read of everything
  std::string_view stream(reinterpret_cast<const char*>(data + 1), size - 1);

  ReadResult split = ReadAll(stream, step);
  ReadResult whole = ReadAll(stream, stream.size() + 1);
  Check(split.frames == whole.frames && split.poisoned == whole.poisoned,
        "the frames depend on how the stream was split into reads");

  // Oracle: the frames are exactly the bytes they came from.
  std::string again;
  for (const Frame& f : whole.frames) again += EncodeFrame(f);
  Check(again == stream.substr(0, whole.consumed), "frames do not re-encode to their bytes");
  if (whole.poisoned) {
    Check(stream.size() - whole.consumed >= 4 && LoadBe32(stream, whole.consumed) > kMaxPayload,
          "the reader refused a frame whose length is within kMaxPayload");
  } else if (stream.size() - whole.consumed >= 4) {
    Check(LoadBe32(stream, whole.consumed) <= kMaxPayload || stream.size() - whole.consumed < kHeaderSize,
          "an oversized header went unnoticed");
  }

  // The host's per-id handling: stream bytes against the receive window (as
  // the CLI and the supervisor keep it), credit grants to the send side.
  std::map<uint32_t, ReceiveCredit> receive;
  std::map<uint32_t, SendCredit> send;
  for (const Frame& f : whole.frames) {
    DecodePayload(f);
    if (IsStreamKind(f.kind)) {
      ReceiveCredit& rc = receive[f.id];
      if (rc.OnReceive(f.payload.size()).ok()) {
        (void)rc.OnConsumed(f.payload.size());
      }
      Check(rc.outstanding() <= kCreditWindow, "more than a window outstanding");
    } else if (f.kind == FrameKind::kCredit) {
      if (auto c = ParseCredit(f.payload); c.ok()) {
        send[f.id].Grant(c->bytes);
        receive[f.id].OnReturned(c->bytes);
        Check(send[f.id].available() <= (1u << 30), "send credit above its cap");
      }
    }
  }
  return 0;
}
