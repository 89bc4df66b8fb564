// The JSON bodies of the agent protocol's control frames, as typed structs with
// an encoder and a validating decoder each. Decoders never throw: malformed or
// out-of-range input is an Error (kProtocol) naming the frame and the field.
// Not the framing (frame.h) and not the transport (channel.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace msb::agent {

// kHello, both directions.
struct Hello {
  int version = 0;
  std::string software;  // "agentd", "msb-supervisor", ... (informational)
};

struct RootConfig {
  std::string base_serial = "msb-base";
  std::string upper_serial = "msb-upper";
  bool ephemeral = false;          // upper layer on tmpfs instead of a disk
  uint64_t upper_size_bytes = 0;   // tmpfs size when ephemeral (0: kernel default)
};

// kBoot, host→agent. `mounts` and `network` are reserved: accepted, ignored.
struct BootConfig {
  std::string hostname;
  std::vector<std::string> env;  // "K=V"
  std::string user;              // "", "uid", "uid:gid" or a name in /etc/passwd
  std::string workdir;
  std::vector<std::string> command;  // empty: no workload (only exec service)
  RootConfig root;
  bool tty = false;
  int rows = 24;
  int cols = 80;
};

// kReady, agent→host.
struct Ready {
  std::optional<std::string> error;
};

// kExec, host→agent.
struct ExecRequest {
  std::vector<std::string> argv;  // non-empty
  std::vector<std::string> env;   // "K=V", overlays the sandbox's environment
  std::string cwd;
  std::string user;
  bool tty = false;
  int rows = 24;
  int cols = 80;
  bool stdin_open = false;  // JSON "stdin"; false: the process reads /dev/null (pipes mode)
};

struct Started { int64_t pid = 0; };
struct ExitInfo {
  int code = 0;    // exit code; -1 when killed by a signal
  int signal = 0;  // terminating signal, 0 when it exited
};
struct SignalRequest { int signal = 0; };
struct Resize { int rows = 0; int cols = 0; };
struct Credit { uint32_t bytes = 0; };
// kCopyIn / kCopyOut.
struct PathRequest { std::string path; };
// kResult.
struct ResultMsg {
  std::optional<std::string> error;  // none: {"ok":true}
};
struct Shutdown { int64_t timeout_ms = 10000; };
// kError.
struct ErrorMsg { std::string message; };

std::string Encode(const Hello& m);
std::string Encode(const BootConfig& m);
std::string Encode(const Ready& m);
std::string Encode(const ExecRequest& m);
std::string Encode(const Started& m);
std::string Encode(const ExitInfo& m);
std::string Encode(const SignalRequest& m);
std::string Encode(const Resize& m);
std::string Encode(const Credit& m);
std::string Encode(const PathRequest& m);
std::string Encode(const ResultMsg& m);
std::string Encode(const Shutdown& m);
std::string Encode(const ErrorMsg& m);

Result<Hello> ParseHello(std::string_view payload);
Result<BootConfig> ParseBootConfig(std::string_view payload);
Result<Ready> ParseReady(std::string_view payload);
Result<ExecRequest> ParseExecRequest(std::string_view payload);
Result<Started> ParseStarted(std::string_view payload);
Result<ExitInfo> ParseExitInfo(std::string_view payload);
Result<SignalRequest> ParseSignalRequest(std::string_view payload);
Result<Resize> ParseResize(std::string_view payload);
Result<Credit> ParseCredit(std::string_view payload);
Result<PathRequest> ParsePathRequest(std::string_view payload);
Result<ResultMsg> ParseResultMsg(std::string_view payload);
Result<Shutdown> ParseShutdown(std::string_view payload);
Result<ErrorMsg> ParseErrorMsg(std::string_view payload);

}  // namespace msb::agent
