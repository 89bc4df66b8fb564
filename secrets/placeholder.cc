// Placeholders from the OpenSSL CSPRNG and SecretValue's protected memory.
// See placeholder.h. Not thread-safe per object; no global state.
#include "secrets/placeholder.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <utility>

#include "common/fd.h"

namespace msb::secrets {

namespace {

constexpr char kBase32[] = "abcdefghijklmnopqrstuvwxyz234567";

bool IsBase32Char(char c) { return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7'); }

size_t PageSize() {
  long page = ::sysconf(_SC_PAGESIZE);
  return page > 0 ? static_cast<size_t>(page) : 4096;
}

}  // namespace

Result<std::string> NewPlaceholder() {
  static_assert(kPlaceholderRandomBits % 40 == 0, "base32 packs 40 bits into 8 characters");
  std::array<unsigned char, kPlaceholderRandomBits / 8> random{};
  if (RAND_bytes(random.data(), static_cast<int>(random.size())) != 1) {
    return Error(ErrorCode::kUnavailable, "the OpenSSL random generator could not produce a placeholder");
  }
  std::string out(kPlaceholderPrefix);
  out.reserve(kPlaceholderSize);
  // Five bytes become eight characters of five bits each.
  for (size_t i = 0; i < random.size(); i += 5) {
    uint64_t group = 0;
    for (size_t j = 0; j < 5; ++j) group = (group << 8) | random[i + j];
    for (int shift = 35; shift >= 0; shift -= 5) out.push_back(kBase32[(group >> shift) & 31]);
  }
  OPENSSL_cleanse(random.data(), random.size());
  return out;
}

bool IsPlaceholder(std::string_view text) {
  if (text.size() != kPlaceholderSize || text.substr(0, kPlaceholderPrefix.size()) != kPlaceholderPrefix) {
    return false;
  }
  for (char c : text.substr(kPlaceholderPrefix.size())) {
    if (!IsBase32Char(c)) return false;
  }
  return true;
}

Result<SecretValue> SecretValue::Allocate(size_t capacity) {
  size_t page = PageSize();
  size_t map_size = ((capacity == 0 ? 1 : capacity) + page - 1) / page * page;
  void* mem = ::mmap(nullptr, map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return Error::FromErrno("mapping memory for a secret");
  SecretValue v;
  v.mem_ = mem;
  v.map_size_ = map_size;
  // Both are best effort: a low RLIMIT_MEMLOCK or an old kernel leaves the
  // value in ordinary memory, which the accessors report.
  v.dontdump_ = ::madvise(mem, map_size, MADV_DONTDUMP) == 0;
  v.locked_ = ::mlock(mem, map_size) == 0;
  ::madvise(mem, map_size, MADV_DONTFORK);
  return v;
}

Result<SecretValue> SecretValue::Create(std::string_view bytes) {
  if (bytes.size() > kMaxSecretBytes) {
    return Error(ErrorCode::kInvalidArgument,
                 "the secret is larger than " + std::to_string(kMaxSecretBytes) + " bytes");
  }
  MSB_TRY(SecretValue v, Allocate(bytes.size()));
  if (!bytes.empty()) std::memcpy(v.mem_, bytes.data(), bytes.size());
  v.size_ = bytes.size();
  return v;
}

Result<SecretValue> SecretValue::ReadFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd) return Error::FromErrno("opening secret file " + path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Error::FromErrno("reading secret file " + path);
  if (!S_ISREG(st.st_mode)) return Error(ErrorCode::kInvalidArgument, "secret file " + path + " is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > kMaxSecretBytes) {
    return Error(ErrorCode::kInvalidArgument,
                 "secret file " + path + " is larger than " + std::to_string(kMaxSecretBytes) + " bytes");
  }
  // One byte more than allowed tells a file that grew after fstat.
  MSB_TRY(SecretValue v, Allocate(kMaxSecretBytes + 1));
  char* buf = static_cast<char*>(v.mem_);
  size_t len = 0;
  while (len <= kMaxSecretBytes) {
    size_t room = kMaxSecretBytes + 1 - len;
    ssize_t n = ::read(fd.get(), buf + len, room);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::FromErrno("reading secret file " + path);
    if (n == 0) break;
    len += static_cast<size_t>(n);
  }
  if (len > kMaxSecretBytes) {
    return Error(ErrorCode::kInvalidArgument,
                 "secret file " + path + " is larger than " + std::to_string(kMaxSecretBytes) + " bytes");
  }
  if (len > 0 && buf[len - 1] == '\n') {
    --len;
    if (len > 0 && buf[len - 1] == '\r') --len;
  }
  v.size_ = len;
  return v;
}

SecretValue::SecretValue(SecretValue&& other) noexcept
    : mem_(std::exchange(other.mem_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      map_size_(std::exchange(other.map_size_, 0)),
      locked_(std::exchange(other.locked_, false)),
      dontdump_(std::exchange(other.dontdump_, false)) {}

SecretValue& SecretValue::operator=(SecretValue&& other) noexcept {
  if (this != &other) {
    Release();
    mem_ = std::exchange(other.mem_, nullptr);
    size_ = std::exchange(other.size_, 0);
    map_size_ = std::exchange(other.map_size_, 0);
    locked_ = std::exchange(other.locked_, false);
    dontdump_ = std::exchange(other.dontdump_, false);
  }
  return *this;
}

SecretValue::~SecretValue() { Release(); }

void SecretValue::Release() {
  if (mem_ == nullptr) return;
  OPENSSL_cleanse(mem_, map_size_);
  if (locked_) ::munlock(mem_, map_size_);
  ::munmap(mem_, map_size_);
  mem_ = nullptr;
  size_ = 0;
  map_size_ = 0;
  locked_ = false;
  dontdump_ = false;
}

void WipeString(std::string* s) {
  if (!s->empty()) OPENSSL_cleanse(s->data(), s->size());
  s->clear();
}

Status ProtectProcessMemory() {
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return Error::FromErrno("prctl(PR_SET_DUMPABLE, 0)");
  return OkStatus();
}

}  // namespace msb::secrets
