// RotatingLog and LogFollower: see vm/log_file.h.
#include "vm/log_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "common/io.h"

namespace msb::vm {

Result<RotatingLog> RotatingLog::Open(std::string path, uint64_t max_bytes) {
  RotatingLog log;
  log.path_ = std::move(path);
  log.max_ = max_bytes < kMinLogMaxBytes ? kMinLogMaxBytes : max_bytes;
  log.fd_ = UniqueFd(::open(log.path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!log.fd_) return Error::FromErrno("cannot open " + log.path_);
  struct stat st;
  if (::fstat(log.fd_.get(), &st) == 0) log.size_ = static_cast<uint64_t>(st.st_size);
  return log;
}

Status RotatingLog::Append(std::string_view record) {
  std::string cut;
  if (record.size() > max_) {
    // Cut, and still a line: the next record starts on its own.
    cut = std::string(record.substr(0, max_ - 1)) + "\n";
    record = cut;
  }
  if (size_ > 0 && size_ + record.size() > max_) {
    std::string old = path_ + ".1";
    if (::rename(path_.c_str(), old.c_str()) != 0) return Error::FromErrno("cannot rotate " + path_);
    UniqueFd fd(::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!fd) return Error::FromErrno("cannot open " + path_);
    fd_ = std::move(fd);
    size_ = 0;
    ++rotations_;
  }
  MSB_TRY_STATUS(WriteAll(fd_.get(), record));
  size_ += record.size();
  return OkStatus();
}

std::string LogFollower::Drain() {
  std::string out;
  if (!fd_) return out;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd_.get(), buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

std::string LogFollower::Read() {
  std::string got;
  if (!started_) {
    started_ = true;
    // The previous generation first, when there is one.
    UniqueFd old(::open((path_ + ".1").c_str(), O_RDONLY | O_CLOEXEC));
    UniqueFd cur(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
    if (old) {
      std::swap(fd_, old);
      got = Drain();
    }
    fd_ = std::move(cur);
  } else {
    got = Drain();
  }
  // Rotated since: the rest of the old file was drained above; go on in
  // the new one.
  struct stat st, mine;
  if (::stat(path_.c_str(), &st) == 0 && (!fd_ || (::fstat(fd_.get(), &mine) == 0 && mine.st_ino != st.st_ino))) {
    got += Drain();
    fd_ = UniqueFd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  }
  got += Drain();
  std::string text = std::move(partial_) + got;
  size_t end = text.rfind('\n');
  if (end == std::string::npos) {
    partial_ = std::move(text);
    return {};
  }
  partial_ = text.substr(end + 1);
  text.resize(end + 1);
  return text;
}

}  // namespace msb::vm
