// Error construction helpers and the invariant-failure path.
#include "common/result.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace msb {

const char* ToString(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kNotFound: return "not found";
    case ErrorCode::kAlreadyExists: return "already exists";
    case ErrorCode::kIo: return "I/O error";
    case ErrorCode::kProtocol: return "protocol error";
    case ErrorCode::kTimeout: return "timeout";
    case ErrorCode::kUnavailable: return "unavailable";
    case ErrorCode::kState: return "invalid state";
    case ErrorCode::kInternal: return "internal error";
  }
  return "unknown error";
}

Error Error::FromErrno(std::string what) { return FromErrno(std::move(what), errno); }

Error Error::FromErrno(std::string what, int sys_errno) {
  what += ": ";
  what += std::strerror(sys_errno);
  return Error(ErrorCode::kIo, std::move(what), sys_errno);
}

Error Error::Wrap(const std::string& context) const {
  return Error(code_, context + ": " + message_, errno_);
}

void CheckFailed(const char* file, int line, const char* expr, const std::string& msg) {
  std::fprintf(stderr, "msb: internal invariant broken at %s:%d (%s): %s\n", file, line, expr,
               msg.c_str());
  std::abort();
}

}  // namespace msb
