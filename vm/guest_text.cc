// Bounded, escaped guest text: see guest_text.h.
#include "vm/guest_text.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fd.h"
#include "common/io.h"

namespace msb::vm {
namespace {

constexpr size_t kMaxGuestText = 2000;
constexpr off_t kMaxTailRead = 16 << 10;

}  // namespace

std::string BoundedGuestText(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, kMaxGuestText)) {
    auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 && c != '\n') || u == 0x7f ? '?' : c;
  }
  if (s.size() > kMaxGuestText) out += "...";
  return out;
}

std::string GuestLogTail(const std::string& path, int lines) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || st.st_size <= 0) return "";
  off_t from = st.st_size > kMaxTailRead ? st.st_size - kMaxTailRead : 0;
  std::string text(static_cast<size_t>(st.st_size - from), '\0');
  ssize_t n = ::pread(fd.get(), text.data(), text.size(), from);
  if (n <= 0) return "";
  text.resize(static_cast<size_t>(n));
  // A tail keeps its end: the newest lines are the ones that explain.
  std::string tail = LastLines(text, lines);
  if (tail.size() <= kMaxGuestText) return BoundedGuestText(tail);
  return "..." + BoundedGuestText(std::string_view(tail).substr(tail.size() - kMaxGuestText));
}

}  // namespace msb::vm
