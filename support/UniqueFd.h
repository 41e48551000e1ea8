// An owned file descriptor, closed when the owner goes (so an early return cannot leak it).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include <utility>

namespace mlir_rl::support {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd &&other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd &operator=(UniqueFd &&other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd &) = delete;
  UniqueFd &operator=(const UniqueFd &) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// A pipe's two ends, or an errno value when pipe2 failed (both ends then empty).
struct Pipe {
  UniqueFd read, write;
  int error = 0;
  static Pipe create(int flags) {
    Pipe p;
    int fds[2];
    if (::pipe2(fds, flags) != 0) {
      p.error = errno;
      return p;
    }
    p.read.reset(fds[0]);
    p.write.reset(fds[1]);
    return p;
  }
};

}  // namespace mlir_rl::support
