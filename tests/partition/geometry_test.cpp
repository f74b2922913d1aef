#include <gtest/gtest.h>

#include "partition/fat.hpp"
#include "partition/image.hpp"
#include "rpi/error.hpp"

using namespace rpi::partition;

namespace {
constexpr std::uint64_t MiB = 1 << 20;

void expect_valid(const FatGeometry& g) {
  // First data sector 4 MiB aligned on the whole disk.
  EXPECT_EQ((g.part_start_lba + g.first_data_sector) % 8192, 0u);
  EXPECT_EQ(g.first_data_sector, g.reserved_sectors + 2 * g.fat_sectors + g.root_dir_sectors);
  EXPECT_LE(g.reserved_sectors, 65535u);
  // The FAT covers every cluster.
  std::uint64_t entry = g.type == FatType::fat32 ? 4 : 2;
  EXPECT_GE(std::uint64_t(g.fat_sectors) * 512 / entry, std::uint64_t(g.clusters) + 2);
  EXPECT_EQ(g.clusters, (g.total_sectors - g.first_data_sector) / g.sectors_per_cluster);
  if (g.type == FatType::fat32) {
    EXPECT_GE(g.clusters, 65525u + 16);
    EXPECT_GE(g.reserved_sectors, 8u);  // boot, FSInfo, backups at 6 and 7
    EXPECT_EQ(g.root_dir_sectors, 0u);
  } else {
    EXPECT_GE(g.clusters, 4087u);
    EXPECT_LE(g.clusters, 65524u - 16);
    EXPECT_EQ(g.root_entries, 512u);
  }
  EXPECT_LE(g.cluster_bytes(), 32768u);
}
}  // namespace

TEST(Geometry, Fat16BelowThe65525ClusterLine) {
  for (std::uint64_t mib : {8, 16, 24, 28, 32}) {
    FatGeometry g = compute_fat_geometry(16384, mib * MiB / 512);
    EXPECT_EQ(g.type, FatType::fat16) << mib << " MiB";
    expect_valid(g);
  }
}

TEST(Geometry, Fat32FromAbout40MiB) {
  for (std::uint64_t mib : {40, 48, 64, 128, 256, 512, 1024, 2048, 8192, 16384, 32768, 65536}) {
    FatGeometry g = compute_fat_geometry(16384, mib * MiB / 512);
    EXPECT_EQ(g.type, FatType::fat32) << mib << " MiB";
    expect_valid(g);
  }
}

TEST(Geometry, EverySizeNearTheBoundaryIsConsistent) {
  // Walk 4 MiB steps across the FAT16/FAT32 boundary: never FAT12, always valid.
  for (std::uint64_t mib = 8; mib <= 80; mib += 4) {
    FatGeometry g = compute_fat_geometry(16384, mib * MiB / 512);
    expect_valid(g);
  }
}

TEST(Geometry, ClusterSizes) {
  EXPECT_EQ(fat32_sectors_per_cluster(512 * MiB / 512), 1u);
  EXPECT_EQ(fat32_sectors_per_cluster(1024 * MiB / 512), 1u);
  EXPECT_EQ(fat32_sectors_per_cluster(4096 * MiB / 512), 8u);
  EXPECT_EQ(fat32_sectors_per_cluster(16384 * MiB / 512), 16u);
  EXPECT_EQ(fat32_sectors_per_cluster(32768 * MiB / 512), 32u);
  EXPECT_EQ(fat32_sectors_per_cluster(65536 * MiB / 512), 64u);
}

TEST(Geometry, TooSmallIsAClearError) {
  try {
    // 4 MiB cannot hold the metadata and a 4 MiB-aligned data region.
    compute_fat_geometry(16384, 4 * MiB / 512);
    FAIL() << "expected an error";
  } catch (const rpi::Error& e) {
    EXPECT_EQ(e.code(), rpi::Errc::usage);
    EXPECT_NE(std::string(e.what()).find("too small"), std::string::npos) << e.what();
  }
}

TEST(Geometry, ImageSizes) {
  // The partition starts at 8 MiB and is a multiple of 4 MiB.
  FatGeometry g = image_geometry(1024 * MiB, "ALPINE");
  EXPECT_EQ(g.part_start_lba, 16384u);
  EXPECT_EQ(std::uint64_t(g.total_sectors) * 512, 1016 * MiB);
  g = image_geometry(1024 * MiB + 12345, "ALPINE");
  EXPECT_EQ(std::uint64_t(g.total_sectors) * 512, 1016 * MiB);
  EXPECT_EQ(default_image_size(100 * MiB), 8 * MiB + 512 * MiB);
  EXPECT_EQ(default_image_size(200 * MiB), 8 * MiB + 704 * MiB);
  EXPECT_THROW(image_geometry(10 * MiB, "ALPINE"), rpi::Error);
}
