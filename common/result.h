// Result<T> and Error: the value type for failures that can happen (bad input,
// guest misbehaviour, I/O, a peer's answer). Broken invariants are not errors:
// they abort through MSB_CHECK. Not an exception mechanism.
#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace msb {

enum class ErrorCode : int {
  kInvalidArgument = 1,  // the user's input is wrong
  kNotFound = 2,
  kAlreadyExists = 3,
  kIo = 4,            // a system call failed; errno is set
  kProtocol = 5,      // a peer (guest, registry, QEMU) said something malformed
  kTimeout = 6,
  kUnavailable = 7,   // a dependency (QEMU, kernel, package) is missing
  kState = 8,         // not supported in the current state
  kInternal = 9,
};

const char* ToString(ErrorCode code);

// A human sentence with context, an error code and, for kIo, the errno.
class Error {
 public:
  Error(ErrorCode code, std::string message, int sys_errno = 0)
      : code_(code), errno_(sys_errno), message_(std::move(message)) {}

  // "what: strerror(errno)" with the current errno.
  static Error FromErrno(std::string what);
  static Error FromErrno(std::string what, int sys_errno);

  ErrorCode code() const { return code_; }
  int sys_errno() const { return errno_; }
  const std::string& message() const { return message_; }

  // Prefixes context: Error("x").Wrap("loading y") -> "loading y: x".
  Error Wrap(const std::string& context) const;

 private:
  ErrorCode code_;
  int errno_;
  std::string message_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

// Result<void>: success carries nothing.
struct Ok {};
using Status = Result<Ok>;
inline Status OkStatus() { return Ok{}; }

[[noreturn]] void CheckFailed(const char* file, int line, const char* expr, const std::string& msg);

}  // namespace msb

#define MSB_CHECK(cond, msg)                                       \
  do {                                                             \
    if (!(cond)) ::msb::CheckFailed(__FILE__, __LINE__, #cond, msg); \
  } while (0)

// Propagates an error: MSB_TRY(auto x, Foo()); or MSB_TRY_STATUS(Bar());
#define MSB_CONCAT_INNER(a, b) a##b
#define MSB_CONCAT(a, b) MSB_CONCAT_INNER(a, b)
#define MSB_TRY(decl, expr) MSB_TRY_IMPL(MSB_CONCAT(msb_try_, __LINE__), decl, expr)
#define MSB_TRY_IMPL(tmp, decl, expr)          \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return std::move(tmp).error(); \
  decl = std::move(tmp).value()
#define MSB_TRY_STATUS(expr)                              \
  do {                                                    \
    auto msb_status_ = (expr);                            \
    if (!msb_status_.ok()) return msb_status_.error();    \
  } while (0)
