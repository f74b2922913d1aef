#include "gzip_source.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "rpi/error.hpp"

namespace rpi::partition {

GzipSource::GzipSource(int fd, std::string name) : fd_(fd), name_(std::move(name)), in_(1 << 20), out_(1 << 20) {
  // 16 + MAX_WBITS: gzip wrapper only, with CRC-32 and ISIZE checked by zlib.
  if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK) throw Error(Errc::internal, "zlib initialisation failed");
}

GzipSource::~GzipSource() {
  inflateEnd(&zs_);
}

bool GzipSource::fill() {
  if (eof_) return false;
  ssize_t n;
  do n = ::read(fd_, in_.data(), in_.size());
  while (n < 0 && errno == EINTR);
  if (n < 0) throw_errno("cannot read " + name_);
  if (n == 0) {
    eof_ = true;
    return false;
  }
  zs_.next_in = in_.data();
  zs_.avail_in = static_cast<uInt>(n);
  consumed_ += static_cast<std::uint64_t>(n);
  if (tap_) tap_(in_.data(), static_cast<std::size_t>(n));
  return true;
}

std::size_t GzipSource::read(const void** out) {
  *out = out_.data();
  if (done_) return 0;
  zs_.next_out = out_.data();
  zs_.avail_out = static_cast<uInt>(out_.size());
  while (zs_.avail_out == out_.size()) {
    if (zs_.avail_in == 0 && !fill()) {
      if (!started_) throw Error(Errc::input, name_ + " is empty, not a gzip-compressed tar archive");
      throw Error(Errc::input, name_ + " is truncated (the gzip data ends early)");
    }
    if (!started_) {
      started_ = true;
      if (zs_.avail_in < 2 || zs_.next_in[0] != 0x1f || zs_.next_in[1] != 0x8b)
        throw Error(Errc::input, name_ + " is not gzip-compressed (expected a .tar.gz)");
    }
    int rc = inflate(&zs_, Z_NO_FLUSH);
    if (rc == Z_STREAM_END) {
      // Another gzip member may follow (as `gzip -dc` accepts); trailing zeros are padding.
      while (zs_.avail_in == 0 && fill()) {
      }
      bool zeros_only = std::all_of(zs_.next_in, zs_.next_in + zs_.avail_in, [](unsigned char c) { return c == 0; });
      if (zs_.avail_in == 0 || zeros_only) {
        while (zeros_only && fill())
          zeros_only = std::all_of(zs_.next_in, zs_.next_in + zs_.avail_in, [](unsigned char c) { return c == 0; });
        if (!zeros_only) throw Error(Errc::input, name_ + " has unexpected data after its gzip stream");
        done_ = true;
        break;
      }
      if (zs_.next_in[0] != 0x1f) throw Error(Errc::input, name_ + " has unexpected data after its gzip stream");
      inflateReset(&zs_);
      continue;
    }
    if (rc == Z_DATA_ERROR) {
      std::string msg = zs_.msg ? zs_.msg : "corrupt data";
      throw Error(Errc::input, name_ + " is corrupt (gzip: " + msg + "); download it again");
    }
    if (rc == Z_MEM_ERROR) throw Error(Errc::internal, "zlib: out of memory");
    if (rc == Z_NEED_DICT) throw Error(Errc::input, name_ + " is not a plain gzip stream");
    // Z_OK or Z_BUF_ERROR (needs more input): loop.
  }
  return out_.size() - zs_.avail_out;
}

}  // namespace rpi::partition
