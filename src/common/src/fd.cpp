#include "rpi/fd.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "rpi/error.hpp"

namespace rpi {

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) reset(other.release());
  return *this;
}

Fd::~Fd() {
  reset();
}

int Fd::release() noexcept {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

void Fd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Fd open_or_throw(const std::string& path, int flags, unsigned mode) {
  // Reading, open(2) of a FIFO waits for a writer: `--tarball fifo` hung for
  // ever. Opened without waiting, a FIFO reads as empty and every caller's
  // type or content check refuses it.
  const bool wait_free = (flags & O_ACCMODE) == O_RDONLY && !(flags & O_NONBLOCK);
  int fd = ::open(path.c_str(), flags | O_CLOEXEC | (wait_free ? O_NONBLOCK : 0), mode);
  if (fd < 0) throw_errno("cannot open " + path);
  Fd out(fd);
  if (wait_free) {
    const int now = ::fcntl(fd, F_GETFL);
    if (now < 0 || ::fcntl(fd, F_SETFL, now & ~O_NONBLOCK) != 0) throw_errno("cannot open " + path);
  }
  return out;
}

void pwrite_all(int fd, const void* buf, std::size_t len, std::uint64_t offset, const std::string& what) {
  const auto* p = static_cast<const unsigned char*>(buf);
  while (len > 0) {
    ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(what);
    }
    if (n == 0) throw Error(Errc::io, what + ": short write");
    p += n;
    len -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
}

std::size_t pread_full(int fd, void* buf, std::size_t len, std::uint64_t offset, const std::string& what) {
  auto* p = static_cast<unsigned char*>(buf);
  std::size_t done = 0;
  while (done < len) {
    ssize_t n = ::pread(fd, p + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(what);
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return done;
}

void write_all(int fd, const void* buf, std::size_t len, const std::string& what) {
  const auto* p = static_cast<const unsigned char*>(buf);
  while (len > 0) {
    ssize_t n = ::write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(what);
    }
    p += n;
    len -= static_cast<std::size_t>(n);
  }
}

void read_to_end(int fd, const std::string& what, const std::function<void(const char*, std::size_t)>& each) {
  std::vector<char> buf(std::size_t{1} << 20);
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(what);
    }
    if (n == 0) return;
    each(buf.data(), static_cast<std::size_t>(n));
  }
}

}  // namespace rpi
