// FrameKind names (protocol.h). The table is checked against the enum at
// compile time so that a new kind cannot go unnamed.
#include "agent/protocol.h"

#include <array>

namespace msb::agent {
namespace {

struct KindName {
  FrameKind kind;
  const char* name;
};

constexpr std::array<KindName, 24> kKindNames = {{
    {FrameKind::kHello, "hello"},     {FrameKind::kBoot, "boot"},
    {FrameKind::kReady, "ready"},     {FrameKind::kExec, "exec"},
    {FrameKind::kStarted, "started"}, {FrameKind::kStdin, "stdin"},
    {FrameKind::kStdout, "stdout"},   {FrameKind::kStderr, "stderr"},
    {FrameKind::kExit, "exit"},       {FrameKind::kSignal, "signal"},
    {FrameKind::kResize, "resize"},   {FrameKind::kCredit, "credit"},
    {FrameKind::kCopyIn, "copy-in"},  {FrameKind::kCopyOut, "copy-out"},
    {FrameKind::kData, "data"},       {FrameKind::kResult, "result"},
    {FrameKind::kShutdown, "shutdown"}, {FrameKind::kFreeze, "freeze"},
    {FrameKind::kThaw, "thaw"},       {FrameKind::kUnpack, "unpack"},
    {FrameKind::kLayer, "layer"},     {FrameKind::kExport, "export"},
    {FrameKind::kExported, "exported"}, {FrameKind::kError, "error"},
}};

// The table lists every enumerator once, in increasing order.
constexpr bool TableIsSorted() {
  for (size_t i = 1; i < kKindNames.size(); ++i) {
    if (static_cast<uint8_t>(kKindNames[i - 1].kind) >= static_cast<uint8_t>(kKindNames[i].kind))
      return false;
  }
  return true;
}
static_assert(TableIsSorted(), "kKindNames must be sorted and without duplicates");
static_assert(kKindNames.front().kind == FrameKind::kHello &&
                  kKindNames.back().kind == FrameKind::kError,
              "kKindNames must cover FrameKind from kHello to kError");

constexpr bool TableCovers(FrameKind k) {
  for (const auto& e : kKindNames)
    if (e.kind == k) return true;
  return false;
}
// Adding an enumerator without a name fails here.
static_assert(TableCovers(FrameKind::kHello) && TableCovers(FrameKind::kBoot) &&
              TableCovers(FrameKind::kReady) && TableCovers(FrameKind::kExec) &&
              TableCovers(FrameKind::kStarted) && TableCovers(FrameKind::kStdin) &&
              TableCovers(FrameKind::kStdout) && TableCovers(FrameKind::kStderr) &&
              TableCovers(FrameKind::kExit) && TableCovers(FrameKind::kSignal) &&
              TableCovers(FrameKind::kResize) && TableCovers(FrameKind::kCredit) &&
              TableCovers(FrameKind::kCopyIn) && TableCovers(FrameKind::kCopyOut) &&
              TableCovers(FrameKind::kData) && TableCovers(FrameKind::kResult) &&
              TableCovers(FrameKind::kShutdown) && TableCovers(FrameKind::kFreeze) &&
              TableCovers(FrameKind::kThaw) && TableCovers(FrameKind::kUnpack) &&
              TableCovers(FrameKind::kLayer) && TableCovers(FrameKind::kExport) &&
              TableCovers(FrameKind::kExported) && TableCovers(FrameKind::kError));

}  // namespace

std::string ToString(FrameKind kind) {
  for (const auto& e : kKindNames)
    if (e.kind == kind) return e.name;
  return "kind(" + std::to_string(static_cast<unsigned>(kind)) + ")";
}

bool IsKnownKind(uint8_t kind) {
  for (const auto& e : kKindNames)
    if (static_cast<uint8_t>(e.kind) == kind) return true;
  return false;
}

}  // namespace msb::agent
