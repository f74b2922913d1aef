// The counterfeit-card check against in-memory cards that drop or wrap what is
// written past their real size (no device-mapper here to fake one as a block
// device); tests/udev/flash_test.cpp checks it on loop devices.
#include "udev/capacity_probe.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <vector>

namespace {

using rpi::partition::BlockMap;
using rpi::udev::CapacityProbe;
using rpi::udev::kProbeBlock;
using rpi::udev::probe_offsets;

constexpr std::uint64_t kMiB = 1ull << 20, kGiB = 1ull << 30;

// A card holding `real` bytes that reports more: past `real`, writes either wrap
// around (address mod real) or are dropped (reads give 0xff).
class FakeCard : public rpi::udev::ProbeDevice {
 public:
  enum class Past { wrap, drop };
  FakeCard(std::uint64_t real, Past past) : real_(real), past_(past) {}
  void write(std::uint64_t offset, const unsigned char* data) override {
    if (offset >= real_ && past_ == Past::drop) return;
    blocks_[home(offset)].assign(data, data + kProbeBlock);
  }
  void read(std::uint64_t offset, unsigned char* data) override {
    if (offset >= real_ && past_ == Past::drop) {
      std::memset(data, 0xff, kProbeBlock);
      return;
    }
    auto it = blocks_.find(home(offset));
    if (it == blocks_.end())
      std::memset(data, 0, kProbeBlock);
    else
      std::memcpy(data, it->second.data(), kProbeBlock);
  }
  // The image's first block (the MBR, written after the probes).
  void write_image_head() {
    std::vector<unsigned char> mbr(kProbeBlock, 0xaa);
    write(0, mbr.data());
  }
  bool all_zero(const std::vector<std::uint64_t>& offsets) {
    std::vector<unsigned char> b(kProbeBlock);
    for (auto o : offsets) {
      read(o, b.data());
      for (auto c : b)
        if (c) return false;
    }
    return true;
  }

 private:
  // Where a wrapping card really stores `offset`.
  std::uint64_t home(std::uint64_t offset) const { return real_ ? offset % real_ : offset; }
  std::uint64_t real_;
  Past past_;
  std::map<std::uint64_t, std::vector<unsigned char>> blocks_;
};

BlockMap image_map(std::uint64_t mapped_bytes) {
  BlockMap m(mapped_bytes);
  m.add(0, mapped_bytes);
  return m;
}

TEST(CapacityProbe, OffsetsDoubleFromOneGibAndEndInTheLastBlock) {
  const auto offs = probe_offsets(64 * kGiB, image_map(300 * kMiB));
  const std::vector<std::uint64_t> want{
      1 * kGiB, 2 * kGiB, 4 * kGiB, 8 * kGiB, 16 * kGiB, 32 * kGiB, 64 * kGiB - kProbeBlock};
  EXPECT_EQ(offs, want);
  EXPECT_EQ(probe_offsets(512 * kMiB, image_map(300 * kMiB)), std::vector<std::uint64_t>{512 * kMiB - kProbeBlock});
  EXPECT_TRUE(probe_offsets(kMiB, image_map(4096)).empty());
}

TEST(CapacityProbe, OffsetsAvoidWhatTheImageMaps) {
  BlockMap m(3 * kGiB);
  m.add(0, 8 * kMiB);
  m.add(kGiB - 4096, 8192);      // covers the 1 GiB block
  m.add(3 * kGiB - 4096, 4096);  // the last block
  const auto offs = probe_offsets(3 * kGiB, m);
  EXPECT_EQ(offs, (std::vector<std::uint64_t>{kGiB + 4096, 2 * kGiB}));
}

// What a flash does with a card that reports `reported` bytes: the probes, then
// the image (its first block, the MBR, is what a wrapped probe lands on), then
// the read-back. The first probe that did not read back, if any.
std::optional<std::uint64_t> flash_probe(FakeCard& card, std::uint64_t reported, CapacityProbe* kept = nullptr) {
  CapacityProbe p(probe_offsets(reported, image_map(300 * kMiB)));
  p.write(card);
  card.write_image_head();
  auto bad = p.first_bad(card);
  if (kept) *kept = p;
  return bad;
}

TEST(CapacityProbe, AGenuineCardPassesAndIsLeftClean) {
  FakeCard card(16 * kGiB, FakeCard::Past::wrap);
  CapacityProbe p({});
  EXPECT_EQ(flash_probe(card, 16 * kGiB, &p), std::nullopt);
  p.erase(card);
  EXPECT_TRUE(card.all_zero(p.offsets()));
}

TEST(CapacityProbe, ACardThatWrapsAroundIsCaught) {
  // Reports 64 GiB, holds 8 GiB: 8, 16 and 32 GiB land on its first block,
  // which the image's MBR overwrites.
  FakeCard card(8 * kGiB, FakeCard::Past::wrap);
  EXPECT_EQ(flash_probe(card, 64 * kGiB), std::optional<std::uint64_t>(8 * kGiB));
}

TEST(CapacityProbe, ACardThatWrapsOntoAnEarlierProbeIsCaught) {
  // Holds 1.5 GiB: 2 GiB wraps onto 0.5 GiB (nothing there), 4 GiB onto 1 GiB, the 1 GiB probe.
  FakeCard card(3 * kGiB / 2, FakeCard::Past::wrap);
  EXPECT_EQ(flash_probe(card, 8 * kGiB), std::optional<std::uint64_t>(kGiB));
}

TEST(CapacityProbe, ACardThatDropsWritesPastItsSizeIsCaught) {
  FakeCard card(4 * kGiB, FakeCard::Past::drop);
  EXPECT_EQ(flash_probe(card, 32 * kGiB), std::optional<std::uint64_t>(4 * kGiB));
}

TEST(CapacityProbe, BlocksOfAnEarlierRunDoNotCount) {
  const auto offs = probe_offsets(4 * kGiB, image_map(kMiB));
  CapacityProbe first(offs), second(offs);
  EXPECT_NE(first.block(offs.back()), second.block(offs.back())) << "each run has its own nonce";
  EXPECT_NE(first.block(offs[0]), first.block(offs[1])) << "each offset has its own block";
}

}  // namespace
