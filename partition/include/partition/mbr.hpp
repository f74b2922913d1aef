// The MBR (DOS) partition table, written with libfdisk. The same code serves an
// image file and a block device: it works on an open file descriptor.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rpi::partition {

struct MbrPartition {
  std::uint64_t start_lba = 0;
  std::uint64_t sectors = 0;
  std::uint8_t type = 0x0C;  // FAT32 LBA; 0x0E for FAT16 LBA
  bool bootable = true;      // harmless for the Pi firmware; U-Boot's distro boot looks for it
};

// Writes a DOS label with `disk_id` and these primary partitions to `fd`
// (already sized: libfdisk takes a file's size from st_size). `name` is for messages.
void write_mbr(int fd, const std::string& name, std::uint32_t disk_id, const std::vector<MbrPartition>& parts);

}  // namespace rpi::partition
