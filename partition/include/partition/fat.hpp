// FAT16/FAT32 geometry and the streaming FAT writer. All on-disk structures are
// encoded explicitly little-endian; nothing relies on packed structs.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace rpi::partition {

enum class FatType { fat16, fat32 };

struct FatGeometry {
  FatType type = FatType::fat32;
  std::uint64_t part_start_lba = 0;       // P: partition start on the disk (hidden sectors)
  std::uint32_t total_sectors = 0;        // N: partition length in 512-byte sectors
  std::uint32_t sectors_per_cluster = 1;  // S
  std::uint32_t reserved_sectors = 0;     // R (padded for alignment)
  std::uint32_t fat_sectors = 0;          // per FAT copy
  std::uint32_t root_dir_sectors = 0;     // FAT16 only (32)
  std::uint32_t root_entries = 0;         // FAT16 only (512)
  std::uint32_t clusters = 0;             // CountOfClusters; valid clusters are 2..clusters+1
  std::uint32_t first_data_sector = 0;    // relative to the partition

  std::uint32_t cluster_bytes() const noexcept { return sectors_per_cluster * 512; }
  std::uint64_t partition_offset() const noexcept { return part_start_lba * 512; }
  // Absolute byte offset of cluster c (c >= 2) on the disk.
  std::uint64_t cluster_offset(std::uint32_t c) const noexcept {
    return partition_offset() + (std::uint64_t(first_data_sector) + std::uint64_t(c - 2) * sectors_per_cluster) * 512;
  }
  // Absolute byte offset where the data region starts.
  std::uint64_t data_offset() const noexcept { return partition_offset() + std::uint64_t(first_data_sector) * 512; }
  std::uint64_t partition_bytes() const noexcept { return std::uint64_t(total_sectors) * 512; }
};

// Clusters kept free at the end of the volume (Pi 4 EEPROMs before 2024-01
// failed on files in the last cluster).
inline constexpr std::uint32_t kTailSlackClusters = 64;

// FAT32 whenever the partition holds >= 65 525 clusters (plus a margin) at the
// chosen cluster size, FAT16 below; never FAT12. The first data sector is
// aligned to 4 MiB on the whole disk. Throws rpi::Error(usage) if too small.
FatGeometry compute_fat_geometry(std::uint64_t part_start_lba, std::uint64_t part_sectors);

// The FAT32 cluster size (sectors) used for a partition of `part_sectors`.
std::uint32_t fat32_sectors_per_cluster(std::uint64_t part_sectors);

}  // namespace rpi::partition
