// DirTarget: see dir_target.h.
#include "tests/support/dir_target.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/fd.h"
#include "common/io.h"
#include "common/sha256.h"

namespace msb::testing {

DirTarget::DirTarget(std::string root) : root_(std::move(root)) {
  (void)MakeDirs(root_ + "/partial");
  (void)MakeDirs(root_ + "/blobs");
}

bool DirTarget::HasBlob(const std::string& digest) const { return ::access(BlobPath(digest).c_str(), F_OK) == 0; }

std::string DirTarget::BlobPath(const std::string& digest) const { return root_ + "/blobs/" + digest.substr(7); }

size_t DirTarget::PublishedCount() const {
  size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator(root_ + "/blobs")) n += e.is_regular_file() ? 1 : 0;
  return n;
}

class DirSink : public image::BlobSink {
 public:
  DirSink(DirTarget* t, std::string digest, int64_t size, UniqueFd fd, std::string partial)
      : t_(t), digest_(std::move(digest)), size_(size), fd_(std::move(fd)), partial_(std::move(partial)) {}
  uint64_t Offset() const override {
    struct stat st;
    ::fstat(fd_.get(), &st);
    std::lock_guard<std::mutex> lock(t_->mu_);
    t_->stats_[digest_].offsets_seen.push_back(st.st_size);
    return st.st_size;
  }
  Status Restart() override {
    {
      std::lock_guard<std::mutex> lock(t_->mu_);
      t_->stats_[digest_].restarts++;
    }
    if (::ftruncate(fd_.get(), 0) != 0) return Error::FromErrno("ftruncate");
    return OkStatus();
  }
  Status Write(std::string_view bytes) override {
    {
      std::lock_guard<std::mutex> lock(t_->mu_);
      auto& s = t_->stats_[digest_];
      if (digest_ == t_->fail_digest_ && !t_->failed_ && s.bytes_written + bytes.size() > t_->fail_after_) {
        t_->failed_ = true;
        size_t part = t_->fail_after_ - s.bytes_written;
        s.bytes_written += part;
        (void)WriteAll(fd_.get(), bytes.substr(0, part));
        return Error(ErrorCode::kIo, "injected write failure", EIO);
      }
      s.bytes_written += bytes.size();
    }
    return WriteAll(fd_.get(), bytes);
  }
  Status Commit() override {
    struct stat st;
    ::fstat(fd_.get(), &st);
    auto hex = Sha256File(partial_);
    if (!hex.ok()) return hex.error();
    if ((size_ >= 0 && st.st_size != size_) || "sha256:" + *hex != digest_) {
      ::unlink(partial_.c_str());
      return Error(ErrorCode::kProtocol, "blob " + digest_ + " does not match its digest");
    }
    if (::rename(partial_.c_str(), t_->BlobPath(digest_).c_str()) != 0) return Error::FromErrno("rename");
    return OkStatus();
  }

 private:
  DirTarget* t_;
  std::string digest_;
  int64_t size_;
  UniqueFd fd_;
  std::string partial_;
};

Result<std::unique_ptr<image::BlobSink>> DirTarget::OpenBlob(const std::string& digest, int64_t size) {
  std::string partial = root_ + "/partial/" + digest.substr(7);
  UniqueFd fd(::open(partial.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!fd) return Error::FromErrno("open " + partial);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_[digest].opens++;
  }
  return std::unique_ptr<image::BlobSink>(new DirSink(this, digest, size, std::move(fd), partial));
}

}  // namespace msb::testing
