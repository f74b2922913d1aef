// A gzip decompressor for untrusted tarballs. libarchive 3.6's gzip filter does
// not check the gzip CRC, so a corrupted tarball could reach a card unnoticed;
// this source inflates with zlib, checks CRC-32 and length at the end of every
// member, and hands plain tar bytes to libarchive.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace rpi::partition {

class GzipSource {
 public:
  GzipSource(int fd, std::string name);
  GzipSource(const GzipSource&) = delete;
  GzipSource& operator=(const GzipSource&) = delete;
  ~GzipSource();

  // Next block of decompressed bytes; 0 at the end. Throws rpi::Error(input)
  // for data that is not gzip, is corrupt or is truncated.
  std::size_t read(const void** out);
  std::uint64_t compressed_bytes() const noexcept { return consumed_; }
  // Every block of compressed bytes read from the file, in order, is given to
  // `tap` too (e.g. to hash the file in the same pass).
  void set_tap(std::function<void(const void*, std::size_t)> tap) { tap_ = std::move(tap); }

 private:
  bool fill();
  int fd_;
  std::string name_;
  z_stream zs_{};
  std::vector<unsigned char> in_, out_;
  std::uint64_t consumed_ = 0;
  std::function<void(const void*, std::size_t)> tap_;
  bool eof_ = false;      // no more compressed input
  bool done_ = false;     // last member ended
  bool started_ = false;  // at least one member begun
};

}  // namespace rpi::partition
