// map_from_fat: the block map of an image without a .bmap, derived from the
// FAT volumes it holds (the whole image minus their free clusters). Every
// structure is read with the hostile-safe reader (reader.hpp); only the active
// FAT's entries are looked at here, to find the free clusters and to make sure
// that the chains are sane (a FAT fsck.fat would repair is not trusted).
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "partition/block_map.hpp"
#include "partition/reader.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"

namespace rpi::partition {
namespace {

constexpr std::uint64_t kBlock = BlockMap::kBlockSize;
// A larger FAT (a FAT32 volume of several hundred GiB with small clusters) is
// not walked (three passes over every entry): such an image is written whole.
constexpr std::uint64_t kMaxFatBytes = 64ull << 20;

struct Hole {
  std::uint64_t begin = 0;  // image bytes, multiples of kBlock
  std::uint64_t end = 0;
};

// The first value that is not a cluster number: reserved (..F0-..F6), bad
// (..F7) and end-of-chain (..F8-..FF) marks all keep a cluster allocated.
std::uint32_t reserved_min(FatKind kind) {
  return kind == FatKind::fat12 ? 0xFF0 : kind == FatKind::fat16 ? 0xFFF0 : 0x0FFFFFF0;
}

// The holes (whole 4 KiB blocks of free clusters only) of the FAT volume at
// image byte `offset`, `avail` bytes long, added to `holes`; false when the
// volume gives any reason for doubt. Reader errors propagate (rpi::Error).
bool free_holes(int fd, std::uint64_t offset, std::uint64_t avail, const std::string& name, std::vector<Hole>& holes) {
  const FatVolume vol = FatVolume::open(fd, offset, avail, name);
  // Every directory is read (their chains checked, long names, nesting,
  // cross-linked directories); every entry's first cluster is kept.
  std::vector<std::uint32_t> firsts;
  vol.walk([&](const std::string&, const FatEntry& e) { firsts.push_back(e.first_cluster); });
  for (const FatEntry& e : vol.list("")) firsts.push_back(e.first_cluster);
  if (!vol.warnings().empty()) return false;

  const FatInfo& f = vol.info();
  if (!f.fats_identical) return false;
  const std::uint64_t bps = f.bytes_per_sector;
  const std::uint64_t cs = f.cluster_bytes();
  const std::uint64_t data_start = offset + std::uint64_t(f.first_data_sector) * bps;
  const std::uint64_t data_end = data_start + std::uint64_t(f.clusters) * cs;
  if (cs == 0 || f.volume_bytes() > avail || data_end > offset + f.volume_bytes()) return false;

  // The reader's own decoding of the active FAT (it checked that the FAT covers every cluster).
  if (std::uint64_t(f.fat_sectors) * bps > kMaxFatBytes) return false;
  const std::uint32_t marks = reserved_min(f.kind);

  const std::uint32_t last = f.clusters + 1;
  auto in_range = [&](std::uint32_t v) { return v >= 2 && v <= last; };
  // Every link must lead to an allocated cluster that no other links to.
  std::vector<bool> has_pred(std::size_t(last) + 1, false);
  for (std::uint32_t c = 2; c <= last; ++c) {
    const std::uint32_t v = vol.fat_entry(c);
    if (v == 0 || v >= marks) continue;
    if (!in_range(v) || vol.fat_entry(v) == 0 || has_pred[v])
      return false;  // out of range, into free space, cross-linked
    has_pred[v] = true;
  }
  // With at most one link into each cluster, what no chain head reaches is a loop.
  std::vector<bool> reached(std::size_t(last) + 1, false);
  for (std::uint32_t c = 2; c <= last; ++c) {
    if (vol.fat_entry(c) == 0 || has_pred[c]) continue;
    for (std::uint32_t k = c;;) {
      reached[k] = true;
      const std::uint32_t v = vol.fat_entry(k);
      if (v >= marks || !in_range(v) || reached[v]) break;
      k = v;
    }
  }
  for (std::uint32_t c = 2; c <= last; ++c)
    if (vol.fat_entry(c) != 0 && !reached[c]) return false;
  // A file or directory starts at the head of an allocated chain.
  if (f.kind == FatKind::fat32) firsts.push_back(f.root_cluster);
  for (const std::uint32_t first : firsts) {
    if (first == 0) continue;  // an empty file
    if (!in_range(first) || vol.fat_entry(first) == 0 || has_pred[first]) return false;
  }

  // Runs of free clusters; of each, the blocks that hold nothing else.
  for (std::uint32_t c = 2; c <= last;) {
    if (vol.fat_entry(c) != 0) {
      ++c;
      continue;
    }
    std::uint32_t e = c;
    while (e <= last && vol.fat_entry(e) == 0) ++e;
    const std::uint64_t begin = data_start + std::uint64_t(c - 2) * cs;
    const std::uint64_t end = data_start + std::uint64_t(e - 2) * cs;
    const std::uint64_t hb = (begin + kBlock - 1) / kBlock * kBlock;
    const std::uint64_t he = end / kBlock * kBlock;
    if (hb < he) holes.push_back({hb, he});
    c = e;
  }
  return true;
}

}  // namespace

std::optional<BlockMap> map_from_fat(int fd, std::uint64_t size, const std::string& name) {
  try {
    if (size < 512) return std::nullopt;
    std::uint8_t s0[512];
    if (pread_full(fd, s0, sizeof s0, 0, "cannot read " + name) != sizeof s0) return std::nullopt;
    if (!has_boot_signature(s0)) return std::nullopt;
    std::vector<Hole> holes;
    if (looks_like_fat_boot_sector(s0)) {
      // A superfloppy: the volume is the whole image.
      if (!free_holes(fd, 0, size, name, holes)) return std::nullopt;
    } else {
      const MbrInfo mbr = parse_mbr(s0, sizeof s0, size, name);
      if (mbr.gpt_protective || !mbr.warnings.empty()) return std::nullopt;
      std::vector<MbrEntry> parts;
      for (const MbrEntry& e : mbr.entries) {
        if (e.type == 0 && e.sectors == 0) continue;
        if (!e.used() || e.start_lba == 0 || e.offset() + e.bytes() > size) return std::nullopt;
        parts.push_back(e);
      }
      std::sort(parts.begin(), parts.end(),
                [](const MbrEntry& a, const MbrEntry& b) { return a.offset() < b.offset(); });
      for (std::size_t i = 1; i < parts.size(); ++i)
        if (parts[i].offset() < parts[i - 1].offset() + parts[i - 1].bytes()) return std::nullopt;  // overlap
      for (const MbrEntry& p : parts)
        if (is_fat_type(p.type) &&
            !free_holes(fd, p.offset(), p.bytes(), name + " partition " + std::to_string(p.number), holes))
          return std::nullopt;
    }
    if (holes.empty()) return std::nullopt;  // nothing to leave out: the whole image
    std::sort(holes.begin(), holes.end(), [](const Hole& a, const Hole& b) { return a.begin < b.begin; });
    BlockMap map(size);
    std::uint64_t at = 0;
    for (const Hole& h : holes) {
      if (h.begin > at) map.add(at, h.begin - at);
      at = std::max(at, h.end);
    }
    if (at < size) map.add(at, size - at);
    return map;
  } catch (const Error&) {
    return std::nullopt;  // the caller writes every byte
  }
}

}  // namespace rpi::partition
