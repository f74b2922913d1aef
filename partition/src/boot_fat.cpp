#include "partition/boot_fat.hpp"

#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <algorithm>

#include "rpi/fd.hpp"

namespace rpi::partition {

BootFat open_boot_fat(int fd, const std::string& name, BootFatRead read) {
  BootFat res;
  res.size = fd_size(fd, name);
  if (res.size < 512)
    throw Error(Errc::input, name + ": only " + std::to_string(res.size) + " bytes: not a disk image");
  std::uint8_t sector0[512];
  if (pread_full(fd, sector0, sizeof sector0, 0, "cannot read " + name) != sizeof sector0)
    throw Error(Errc::input, name + ": cannot read sector 0");

  // The MBR counts 512-byte sectors; on a 4Kn device its numbers mean something else.
  struct stat st {};
  int logical = 512;
  if (::fstat(fd, &st) == 0 && S_ISBLK(st.st_mode) && ::ioctl(fd, BLKSSZGET, &logical) == 0 && logical != 512)
    res.notes.push_back({BootFatNote::Kind::sector_size, 0,
                         name + " has " + std::to_string(logical) +
                             "-byte logical sectors; this reader assumes 512 (Raspberry Pi cards use 512)"});

  // A FAT without a partition table.
  if (looks_like_fat_boot_sector(sector0)) {
    if (read == BootFatRead::volume) res.volume = FatVolume::open(fd, 0, res.size, name);
    return res;
  }

  res.mbr = read_mbr(fd, res.size, name);
  for (const auto& w : res.mbr->warnings) res.notes.push_back({BootFatNote::Kind::partition_table, 0, w});
  if (res.mbr->gpt_protective) {
    res.error = Error(Errc::input, name + ": GPT partition table, not supported (Raspberry Pi cards need an MBR)");
    return res;
  }
  if (read == BootFatRead::table) return res;

  // The first FAT partition whose file system opens is the boot partition.
  std::optional<Error> first_error;  // of the first FAT partition that did not open
  std::string past_end;              // the first FAT partition that starts past the end
  for (const auto& e : res.mbr->entries) {
    if (!e.used() || !is_fat_type(e.type)) continue;
    const std::string which = "partition " + std::to_string(e.number);
    if (e.offset() >= res.size) {
      std::string w = which + " starts at byte " + std::to_string(e.offset()) + ", past the end (" +
                      std::to_string(res.size) + " bytes)";
      if (past_end.empty()) past_end = w;
      res.notes.push_back({BootFatNote::Kind::past_end, e.number, std::move(w)});
      continue;
    }
    try {
      res.volume = FatVolume::open(fd, e.offset(), std::min(e.bytes(), res.size - e.offset()), name + " " + which);
      res.partition = e.number;
      res.offset = e.offset();
      break;
    } catch (const Error& err) {  // damaged, or unreadable (Errc::io): the next FAT partition may do
      res.notes.push_back({BootFatNote::Kind::unreadable, e.number, err.what()});
      if (!first_error) first_error = err;
    }
  }
  if (res.volume) {
    for (auto& n : res.notes)
      if (n.kind == BootFatNote::Kind::unreadable)
        n.message += "; partition " + std::to_string(res.partition) + " is read instead";
    return res;
  }
  // The notes of unreadable partitions repeat `error` (the first) and each
  // other's reason: without a volume they are dropped, `error` says it.
  std::erase_if(res.notes, [](const BootFatNote& n) { return n.kind == BootFatNote::Kind::unreadable; });
  if (first_error)
    res.error = std::move(first_error);
  else if (!past_end.empty())
    res.error = Error(Errc::input,
                      name + ": " + past_end + ": a truncated image, or a card smaller than its partition table says");
  else
    res.error =
        Error(Errc::input, name + ": no FAT partition (a Raspberry Pi boots from a FAT partition of type 0x0c)");
  return res;
}

}  // namespace rpi::partition
