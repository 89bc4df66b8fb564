// The agent protocol's constants and frame kinds: the one header both the host
// (supervisor, CLI) and agentd (the guest's PID 1) build against. The grammar
// and message semantics are written down in docs/agent-protocol.md; this header
// holds only the numbers. Not the codec (frame.h) and not the JSON bodies
// (messages.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace msb::agent {

// Bumped on any incompatible change; exchanged in kHello (both directions).
inline constexpr int kProtocolVersion = 1;

// Frame header: u32 payload length (BE) | u32 id (BE) | u8 kind.
inline constexpr size_t kHeaderSize = 9;
// A frame whose declared payload length exceeds this closes the channel.
inline constexpr uint32_t kMaxPayload = 1u << 20;  // 1 MiB

// Ids. 0 addresses the channel itself (hello, boot, ready, shutdown, channel
// errors); 1 is the workload started by kBoot; host-chosen exec / copy ids
// start at kFirstHostId.
inline constexpr uint32_t kChannelId = 0;
inline constexpr uint32_t kWorkloadId = 1;
inline constexpr uint32_t kFirstHostId = 2;

// Flow control: per id and per direction, a sender may have at most this many
// stream bytes (kStdin, kStdout, kStderr, kData payloads) not yet returned by
// a kCredit from the receiver. Both sides start with a full window.
inline constexpr uint32_t kCreditWindow = 256 * 1024;
// The largest stream payload agentd puts in one frame (well below kMaxPayload).
inline constexpr uint32_t kMaxChunk = 64 * 1024;

// The virtio-serial port name and the default virtio-blk serials.
inline constexpr const char* kPortName = "msb.agent";
inline constexpr const char* kBaseSerial = "msb-base";
inline constexpr const char* kUpperSerial = "msb-upper";
// Read-only layers between the base and the upper (a snapshot's chain):
// serials kLowerSerialPrefix + "<i>", at most kMaxLowerLayers of them.
inline constexpr const char* kLowerSerialPrefix = "msb-lower-";
inline constexpr size_t kMaxLowerLayers = 8;
// A frozen upper layer is thawed by agentd itself after at most this long:
// long enough to copy a large writable layer without a reflink
// (orchestrator/snapshot.h SnapshotFreezeMs).
inline constexpr int64_t kMaxFreezeMs = 10 * 60 * 1000;

enum class FrameKind : uint8_t {
  kHello = 1,      // both: {"version":N, ...}; agent first, host answers
  kBoot = 2,       // host→agent: boot configuration (BootConfig)
  kReady = 3,      // agent→host: {} or {"error":"..."}
  kExec = 16,      // host→agent: ExecRequest, under a fresh host id
  kStarted = 17,   // agent→host: {"pid":N}
  kStdin = 18,     // host→agent: raw bytes; empty payload = EOF
  kStdout = 19,    // agent→host: raw bytes
  kStderr = 20,    // agent→host: raw bytes
  kExit = 21,      // agent→host: {"code":N,"signal":N}; last frame of an exec id
  kSignal = 22,    // host→agent: {"signal":N}
  kResize = 23,    // host→agent: {"rows":N,"cols":N}
  kCredit = 24,    // both: {"bytes":N}, returns window for that id
  kCopyIn = 32,    // host→agent: {"path":"/dir"}; then kData tar stream
  kCopyOut = 33,   // host→agent: {"path":"/file-or-dir"}; agent answers kData
  kData = 34,      // both: raw tar bytes; empty payload = end of stream
  kResult = 35,    // agent→host: {"ok":true} or {"error":"..."}
  kShutdown = 48,  // host→agent: {"timeout_ms":N}
  kFreeze = 49,    // host→agent, fresh host id: {"timeout_ms":N}; kResult once the upper is frozen
  kThaw = 50,      // host→agent, fresh host id: {}; kResult (an error when it was not frozen)
  kUnpack = 64,    // host→agent, instead of kBoot: UnpackRequest (unpack mode)
  kLayer = 65,     // agent→host: LayerReport, one per layer applied
  kExport = 66,    // host→agent, instead of kBoot: ExportRequest (export mode)
  kExported = 67,  // agent→host: ExportReport, one per layer written
  kError = 127,    // both: {"message":"..."} about that id
};

// "hello", "exec", ...; "kind(N)" for a value outside the enum.
std::string ToString(FrameKind kind);
// True for the values listed in FrameKind.
bool IsKnownKind(uint8_t kind);
// True for the kinds whose payload is raw bytes counted against credit.
inline bool IsStreamKind(FrameKind k) {
  return k == FrameKind::kStdin || k == FrameKind::kStdout || k == FrameKind::kStderr ||
         k == FrameKind::kData;
}

struct Frame {
  uint32_t id = 0;
  FrameKind kind = FrameKind::kError;
  std::string payload;

  bool operator==(const Frame&) const = default;
};

}  // namespace msb::agent
