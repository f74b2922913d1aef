// A move-only owner of a POSIX file descriptor, plus the full-length I/O
// helpers every module needs (short reads and writes and EINTR handled).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace rpi {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept;
  ~Fd();

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept;
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

// Opens or throws Errc::io naming the path.
Fd open_or_throw(const std::string& path, int flags, unsigned mode = 0644);

// Write all of buf at offset; throws Errc::io with `what` as context.
void pwrite_all(int fd, const void* buf, std::size_t len, std::uint64_t offset, const std::string& what);
// Read exactly len bytes at offset (fewer only at end of file); returns bytes read.
std::size_t pread_full(int fd, void* buf, std::size_t len, std::uint64_t offset, const std::string& what);
// Sequential write of all of buf.
void write_all(int fd, const void* buf, std::size_t len, const std::string& what);
// Reads fd from where it is to its end, 1 MiB at a time, each block handed to
// `each`; a read error throws Errc::io with `what` as context.
void read_to_end(int fd, const std::string& what, const std::function<void(const char*, std::size_t)>& each);

}  // namespace rpi
