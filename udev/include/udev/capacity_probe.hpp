// A quick check for counterfeit cards: a card that reports more capacity than
// it holds either drops what is written past its real size or wraps it around
// onto lower addresses. The image at the start of such a card verifies fine,
// and the Pi loses data later. Distinct 4 KiB blocks written at 1, 2, 4, … GiB
// and in the last block before the image, and read back after it, show both
// kinds: a dropped block reads back wrong, a wrapped one is overwritten by a
// later block or by the image. (f3probe measures the real size; this only
// refuses the card.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "partition/block_map.hpp"

namespace rpi::udev {

constexpr std::size_t kProbeBlock = 4096;

// Block-sized reads and writes at 4 KiB-aligned offsets of a device.
class ProbeDevice {
 public:
  virtual ~ProbeDevice() = default;
  virtual void write(std::uint64_t offset, const unsigned char* data) = 0;
  virtual void read(std::uint64_t offset, unsigned char* data) = 0;
};

// Where the probes go on a device of `size` bytes that will hold `image`:
// 1 GiB, 2 GiB, 4 GiB, … while below the last MiB, and the last block; a block
// that the image maps is moved to the next free one (the image would overwrite
// it). Devices up to 1 GiB get the last block only.
std::vector<std::uint64_t> probe_offsets(std::uint64_t size, const partition::BlockMap& image);

class CapacityProbe {
 public:
  // A fresh random nonce: blocks left by an earlier run never count.
  explicit CapacityProbe(std::vector<std::uint64_t> offsets);

  const std::vector<std::uint64_t>& offsets() const noexcept { return offsets_; }
  // Writes every probe block, in increasing offset order.
  void write(ProbeDevice& dev) const;
  // The first offset whose block did not read back as written, if any.
  std::optional<std::uint64_t> first_bad(ProbeDevice& dev) const;
  // Zeroes the probe blocks again.
  void erase(ProbeDevice& dev) const;
  // The block written at `offset` (what first_bad expects to read).
  std::vector<unsigned char> block(std::uint64_t offset) const;

 private:
  std::vector<std::uint64_t> offsets_;
  std::uint64_t nonce_[2] = {0, 0};
};

}  // namespace rpi::udev
