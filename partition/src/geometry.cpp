// FAT geometry as a pure function (tech-brief §1.5, §1.6, §1.8).
#include <string>

#include "partition/fat.hpp"
#include "rpi/error.hpp"
#include "rpi/size.hpp"

namespace rpi::partition {

namespace {

constexpr std::uint64_t kAlign = 8192;  // 4 MiB in sectors: the first data sector is erase-block aligned
constexpr std::uint32_t kMargin = 64;   // keep cluster counts well clear of the type limits
constexpr std::uint32_t kFat16Min = 4087;
constexpr std::uint32_t kFat16Max = 65524;
constexpr std::uint32_t kFat32Min = 65525;

// Lays out a volume of type `type` with `spc` sectors per cluster; clusters may
// come out outside the type's limits — the caller checks.
FatGeometry layout(FatType type, std::uint64_t start, std::uint64_t sectors, std::uint32_t spc) {
  FatGeometry g;
  g.type = type;
  g.part_start_lba = start;
  g.total_sectors = static_cast<std::uint32_t>(sectors);
  g.sectors_per_cluster = spc;
  const bool fat32 = type == FatType::fat32;
  g.root_entries = fat32 ? 0 : 512;
  g.root_dir_sectors = fat32 ? 0 : 32;
  g.reserved_sectors = fat32 ? 32 : 1;
  const std::uint64_t entry_bytes = fat32 ? 4 : 2;

  // Grow the FAT until it covers every cluster the remaining space holds.
  std::uint64_t fat = 0;
  std::uint64_t clusters = 0;
  for (;;) {
    std::uint64_t overhead = g.reserved_sectors + 2 * fat + g.root_dir_sectors;
    clusters = sectors > overhead ? (sectors - overhead) / spc : 0;
    std::uint64_t need = ((clusters + 2) * entry_bytes + 511) / 512;
    if (need <= fat) break;
    fat = need;
  }
  // Pad the reserved region so the data region starts on a 4 MiB boundary of the disk.
  std::uint64_t before_data = start + g.reserved_sectors + 2 * fat + g.root_dir_sectors;
  g.reserved_sectors += static_cast<std::uint32_t>((kAlign - before_data % kAlign) % kAlign);
  std::uint64_t overhead = g.reserved_sectors + 2 * fat + g.root_dir_sectors;
  clusters = sectors > overhead ? (sectors - overhead) / spc : 0;
  g.fat_sectors = static_cast<std::uint32_t>(fat);
  g.clusters = static_cast<std::uint32_t>(clusters);
  g.first_data_sector = static_cast<std::uint32_t>(overhead);
  return g;
}

}  // namespace

std::uint32_t fat32_sectors_per_cluster(std::uint64_t part_sectors) {
  constexpr std::uint64_t GiB = 2097152;  // sectors
  // 512-byte clusters up to 1 GiB, as Raspberry Pi OS does (most compatible with
  // the Pi firmware); above that the fatgen103 table, capped at 32 KiB clusters.
  if (part_sectors <= 1 * GiB) return 1;
  if (part_sectors <= 8 * GiB) return 8;
  if (part_sectors <= 16 * GiB) return 16;
  if (part_sectors <= 32 * GiB) return 32;
  return 64;
}

FatGeometry compute_fat_geometry(std::uint64_t part_start_lba, std::uint64_t part_sectors) {
  if (part_sectors > 0xFFFFFFFFull)
    throw Error(Errc::usage, "a FAT partition of " + format_size(part_sectors * 512) + " is too large (at most 2 TiB)");
  if (part_start_lba % kAlign)
    throw Error(Errc::internal, "partition start " + std::to_string(part_start_lba) + " is not 4 MiB aligned");

  for (std::uint32_t spc : {fat32_sectors_per_cluster(part_sectors), 1u}) {
    FatGeometry g = layout(FatType::fat32, part_start_lba, part_sectors, spc);
    if (g.clusters >= kFat32Min + kMargin && g.clusters <= 0x0FFFFFF5u) return g;
  }
  // Too small for FAT32: FAT16 with the smallest cluster that keeps the count below its limit.
  for (std::uint32_t spc = 1; spc <= 64; spc *= 2) {
    FatGeometry g = layout(FatType::fat16, part_start_lba, part_sectors, spc);
    if (g.clusters > kFat16Max - kMargin) continue;
    if (g.clusters >= kFat16Min + kMargin + kTailSlackClusters) return g;
    break;
  }
  throw Error(Errc::usage, "a FAT partition of " + format_size(part_sectors * 512) +
                               " is too small to hold a FAT16 volume; use a larger --size");
}

}  // namespace rpi::partition
