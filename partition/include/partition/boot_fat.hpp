// The boot FAT of a medium (an image file or a block device): the FAT file
// system at byte 0 (a "superfloppy"), else the first FAT partition of the MBR
// whose file system opens. The one place that knows how to find it, for
// `inspect` (which shows everything found on the way) and `watch` (which
// recognises the cards it wrote). Read-only; prints nothing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "partition/reader.hpp"
#include "rpi/error.hpp"

namespace rpi::partition {

// Something noticed on the way to the boot FAT that a reader can live with.
struct BootFatNote {
  enum class Kind {
    sector_size,      // a block device whose logical sectors are not 512 bytes
    partition_table,  // an oddity of the MBR (one of MbrInfo::warnings)
    past_end,         // a FAT partition that starts past the end of the medium: skipped
    unreadable,       // a FAT partition whose file system did not open, before the one that did: skipped
  };
  Kind kind = Kind::partition_table;
  unsigned partition = 0;  // 1..4 for past_end and unreadable, else 0
  std::string message;     // a sentence for the user (no secret: only the layout of the medium)
};

struct BootFat {
  std::uint64_t size = 0;           // of the medium, in bytes
  std::optional<MbrInfo> mbr;       // nullopt: no partition table (a superfloppy)
  unsigned partition = 0;           // the MBR entry (1..4) holding `volume`; 0 for a superfloppy or without one
  std::uint64_t offset = 0;         // byte offset of `volume` on the medium
  std::optional<FatVolume> volume;  // the boot FAT; nullopt when there is none (see `error`) or it was not asked for
  std::vector<BootFatNote> notes;   // in the order found
  // Why there is no volume: a GPT, no FAT partition, the first FAT partition
  // past the end of the medium, or the first FAT partition's own error when
  // none opens. nullopt when `volume` is set or only the table was asked for.
  std::optional<Error> error;

  bool superfloppy() const noexcept { return !mbr; }
  bool gpt() const noexcept { return mbr && mbr->gpt_protective; }
};

enum class BootFatRead {
  table,   // sector 0 only: the partition table (or that there is none); `volume` stays empty
  volume,  // and then the boot FAT, opened (which reads its FATs and root directory)
};

// Finds the boot FAT on `fd` (not owned; it must stay open while the volume
// is used). `name` names the medium in every message; the volume of partition
// N is named "<name> partition N". A GPT (protective MBR) is reported, not
// read: its FAT partitions are not looked for. Throws Errc::input when the
// medium has under 512 bytes or sector 0 is neither an MBR nor a FAT boot
// sector, Errc::io when it cannot be read.
BootFat open_boot_fat(int fd, const std::string& name, BootFatRead read = BootFatRead::volume);

}  // namespace rpi::partition
