#include "udev/capacity_probe.hpp"

#include <algorithm>
#include <cstring>
#include <random>

namespace rpi::udev {

namespace {

constexpr std::uint64_t kGiB = 1ull << 30;
constexpr std::uint64_t kMiB = 1ull << 20;

bool mapped(const partition::BlockMap& image, std::uint64_t offset) {
  for (const auto& e : image.extents())
    if (offset < e.offset + e.length && e.offset < offset + kProbeBlock) return true;
  return false;
}

// The next block at or after `offset` that the image leaves alone, below `limit`.
std::optional<std::uint64_t> free_block(const partition::BlockMap& image, std::uint64_t offset, std::uint64_t limit) {
  for (; offset + kProbeBlock <= limit; offset += kProbeBlock)
    if (!mapped(image, offset)) return offset;
  return std::nullopt;
}

// splitmix64: a cheap, well-mixed stream for the block contents.
std::uint64_t mix(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<std::uint64_t> probe_offsets(std::uint64_t size, const partition::BlockMap& image) {
  std::vector<std::uint64_t> out;
  if (size < 2 * kMiB) return out;
  const std::uint64_t tail = (size - kMiB) / kProbeBlock * kProbeBlock;  // the last MiB, block-aligned
  for (std::uint64_t at = kGiB; at + kProbeBlock <= tail; at *= 2) {
    auto b = free_block(image, at, tail);
    if (b && (out.empty() || *b > out.back())) out.push_back(*b);
  }
  const std::uint64_t last = (size - kProbeBlock) / kProbeBlock * kProbeBlock;
  if (!mapped(image, last) && (out.empty() || last > out.back())) out.push_back(last);
  return out;
}

CapacityProbe::CapacityProbe(std::vector<std::uint64_t> offsets) : offsets_(std::move(offsets)) {
  std::random_device rd;
  for (auto& n : nonce_) n = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

std::vector<unsigned char> CapacityProbe::block(std::uint64_t offset) const {
  std::vector<unsigned char> b(kProbeBlock);
  static constexpr char kTag[] = "rpi-provision capacity probe";
  std::memcpy(b.data(), kTag, sizeof kTag);
  std::uint64_t state = nonce_[0] ^ (offset * 0x2545f4914f6cdd1dull) ^ nonce_[1];
  for (std::size_t i = 64; i + 8 <= b.size(); i += 8) {
    std::uint64_t v = mix(state);
    std::memcpy(b.data() + i, &v, 8);
  }
  std::memcpy(b.data() + 32, &offset, 8);
  return b;
}

void CapacityProbe::write(ProbeDevice& dev) const {
  for (std::uint64_t o : offsets_) dev.write(o, block(o).data());
}

std::optional<std::uint64_t> CapacityProbe::first_bad(ProbeDevice& dev) const {
  std::vector<unsigned char> got(kProbeBlock);
  for (std::uint64_t o : offsets_) {
    dev.read(o, got.data());
    if (got != block(o)) return o;
  }
  return std::nullopt;
}

void CapacityProbe::erase(ProbeDevice& dev) const {
  const std::vector<unsigned char> zeros(kProbeBlock, 0);
  for (std::uint64_t o : offsets_) dev.write(o, zeros.data());
}

}  // namespace rpi::udev
