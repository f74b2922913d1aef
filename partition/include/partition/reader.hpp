// A read-only reader for what a card or image holds: the MBR, a FAT12/16/32
// volume (boot sector, FATs, directories with long names, files) and the
// apkovl found at the FAT root. It works on image files and block devices
// alike (anything readable with pread) and on cards made by other tools.
//
// Everything on disk is treated as hostile: every offset, count, cluster
// number, chain and length is bounds-checked before use, cluster-chain loops
// are detected, sizes are never trusted for allocation. Problems that make a
// structure unusable throw rpi::Error(Errc::input, "<name>: ...") naming the
// image and the entry; oddities that a reader can live with (a long name with
// a bad checksum, FSInfo disagreeing with the FAT) are collected as warnings.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rpi::partition {

// ---- sizes --------------------------------------------------------------

// The byte size of a regular file or block device (BLKGETSIZE64). Throws
// Errc::input for other file types, Errc::io when the size cannot be read.
std::uint64_t fd_size(int fd, const std::string& name);

// ---- MBR ----------------------------------------------------------------

struct MbrEntry {
  unsigned number = 0;          // 1..4
  std::uint8_t status = 0;      // 0x80 = bootable, 0x00 = not; anything else is invalid
  std::uint8_t type = 0;        // partition type code; 0 = unused slot
  std::uint32_t start_lba = 0;  // in 512-byte sectors
  std::uint32_t sectors = 0;
  bool used() const noexcept { return type != 0 && sectors != 0; }
  bool bootable() const noexcept { return status == 0x80; }
  std::uint64_t offset() const noexcept { return std::uint64_t(start_lba) * 512; }
  std::uint64_t bytes() const noexcept { return std::uint64_t(sectors) * 512; }
};

struct MbrInfo {
  std::uint32_t disk_id = 0;  // bytes 440..443, little-endian
  std::array<MbrEntry, 4> entries{};
  bool gpt_protective = false;        // an entry of type 0xEE: "GPT, not supported"
  std::vector<std::string> warnings;  // entries past the end of the disk, overlaps, bad status bytes
};

// True if `sector` (512 bytes) looks like a FAT boot sector with a sane BPB
// (a "superfloppy": a FAT volume without a partition table).
bool looks_like_fat_boot_sector(const std::uint8_t* sector) noexcept;

// True if `sector` (512 bytes) ends in the boot signature 55 AA, as an MBR and
// a FAT boot sector do: the first sector of a disk image.
inline bool has_boot_signature(const std::uint8_t* sector) noexcept {
  return sector[510] == 0x55 && sector[511] == 0xAA;
}

// The least size a disk image must have by what its first sector (512 bytes)
// says: where the last partition of its MBR ends, or, for a FAT volume without
// a partition table, the volume's size. nullopt when the sector is no MBR to go
// by without doubt (no 55 AA, a GPT's protective MBR, anything parse_mbr warns
// of, no partition at all).
std::optional<std::uint64_t> least_disk_bytes(const std::uint8_t* sector);

// Reads the MBR in sector 0 of a disk of `disk_size` bytes. Throws
// Errc::input if the 55 AA signature is missing or the sector is a FAT boot
// sector (check looks_like_fat_boot_sector first for superfloppies).
MbrInfo read_mbr(int fd, std::uint64_t disk_size, const std::string& name = "image");
// The same for sector 0 already read: `got` bytes of it at `sector` (fewer
// than 512: "file shorter than 512 bytes").
MbrInfo parse_mbr(const std::uint8_t* sector, std::size_t got, std::uint64_t disk_size,
                  const std::string& name = "image");

// "FAT32 (LBA)", "Linux", "GPT protective", ... or "unknown" for a type code.
const char* mbr_type_name(std::uint8_t type) noexcept;
// True for the FAT type codes (01 04 06 0B 0C 0E, and EF = EFI system partition).
bool is_fat_type(std::uint8_t type) noexcept;

// ---- FAT ----------------------------------------------------------------

enum class FatKind { fat12, fat16, fat32 };
const char* fat_kind_name(FatKind k) noexcept;  // "FAT12" / "FAT16" / "FAT32"

struct FatInfo {
  FatKind kind = FatKind::fat32;
  std::string oem_name;  // BS_OEMName, informational
  std::uint32_t bytes_per_sector = 0;
  std::uint32_t sectors_per_cluster = 0;
  std::uint32_t reserved_sectors = 0;
  std::uint32_t num_fats = 0;
  std::uint32_t root_entries = 0;  // FAT12/16 fixed root size; 0 on FAT32
  std::uint32_t total_sectors = 0;
  std::uint32_t fat_sectors = 0;  // per copy
  std::uint32_t hidden_sectors = 0;
  std::uint8_t media = 0;
  std::uint32_t root_cluster = 0;       // FAT32 only
  std::uint32_t first_data_sector = 0;  // relative to the volume
  std::uint32_t clusters = 0;           // CountOfClusters; valid cluster numbers are 2..clusters+1
  std::uint32_t active_fat = 0;         // the FAT copy that is read (ExtFlags on FAT32)
  bool has_volume_id = false;           // extended boot signature 0x28/0x29 present
  std::uint32_t volume_id = 0;
  std::string boot_label;                         // BS_VolLab, trailing spaces removed ("" if absent)
  std::string root_label;                         // the root directory's VOLUME_ID entry ("" if none)
  std::uint32_t free_clusters = 0;                // counted in the FAT
  std::uint32_t bad_clusters = 0;                 // counted in the FAT
  std::optional<std::uint32_t> fsinfo_free;       // FAT32 FSInfo's claim (nullopt: unknown/absent)
  std::optional<std::uint32_t> fsinfo_next_free;  // FAT32 FSInfo's allocation hint
  bool fats_identical = true;                     // every FAT copy equals the active one

  std::uint32_t cluster_bytes() const noexcept { return sectors_per_cluster * bytes_per_sector; }
  std::uint64_t volume_bytes() const noexcept { return std::uint64_t(total_sectors) * bytes_per_sector; }
  std::uint64_t free_bytes() const noexcept { return std::uint64_t(free_clusters) * cluster_bytes(); }
  // "1234-ABCD" (high 16 bits first, as blkid prints it); "" without a volume id.
  std::string volume_id_string() const;
  // The label tools show: the root entry if present, else the boot sector's;
  // "" when neither is set or the boot sector says "NO NAME".
  std::string label() const;
};

struct FatEntry {
  std::string name;        // the long name (UTF-8) if valid, else the 8.3 name with NT case flags
  std::string short_name;  // the 8.3 name as stored, "NAME.EXT" (uppercase unless flagged)
  bool has_long_name = false;
  std::uint8_t attributes = 0;
  std::uint32_t first_cluster = 0;
  std::uint32_t size = 0;                        // bytes; 0 for directories
  std::uint16_t write_date = 0, write_time = 0;  // FAT encoding

  bool is_directory() const noexcept { return (attributes & 0x10) != 0; }
  // "YYYY-MM-DD HH:MM:SS" (FAT local time, no zone).
  std::string mtime() const;
};

class FatVolume {
 public:
  // Opens the FAT volume at byte `offset` of `fd`; `size` is how many bytes
  // the volume may occupy there (the partition, clipped to the disk). `name`
  // prefixes every error message. Reads the boot sector, validates the BPB,
  // counts free clusters, reads FSInfo and the root label. `fd` must stay
  // open while the volume is used; it is not owned.
  static FatVolume open(int fd, std::uint64_t offset, std::uint64_t size, std::string name);

  FatVolume(FatVolume&&) noexcept;
  FatVolume& operator=(FatVolume&&) noexcept;
  ~FatVolume();

  const FatInfo& info() const noexcept;
  // The entries of the directory at `path` ("" or "/" = root), without the
  // volume label, "." and ".." and deleted slots, in on-disk order. Lookup is
  // case-insensitive on the long and the short names.
  std::vector<FatEntry> list(std::string_view path) const;
  // The entry at `path`, or nullopt when a component does not exist.
  std::optional<FatEntry> stat(std::string_view path) const;
  // The content of the file at `path`. Throws Errc::input if it is a
  // directory, missing, larger than `max_bytes`, or its chain is broken.
  std::string read_file(std::string_view path, std::uint64_t max_bytes) const;
  // Every entry below the root, depth first in on-disk order, with its full
  // path ("boot/vmlinuz-rpi"). Stops descending at `max_depth`.
  void walk(const std::function<void(const std::string& path, const FatEntry& entry)>& visit,
            unsigned max_depth = 32) const;
  // The active FAT's entry for cluster `c` (2 .. info().clusters + 1; 0 for
  // any other c): 0 free, else the next cluster or a bad or end-of-chain mark.
  std::uint32_t fat_entry(std::uint32_t c) const;
  // Oddities noticed so far (grows as directories are read).
  std::vector<std::string> warnings() const;

 private:
  struct Impl;
  explicit FatVolume(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---- apkovl -------------------------------------------------------------

// Top-level files whose name matches the initramfs glob `*.apkovl.tar.gz*`
// (alpine-facts §1.2: only the top level is searched).
std::vector<FatEntry> find_apkovls(const FatVolume& volume);

struct ApkovlUser {
  std::string name;
  std::uint32_t uid = 0;
  std::string shell;
};

// What an apkovl configures, without any secret: never the content of
// etc/shadow or keys, only whether they are present; of wpa_supplicant.conf
// only the networks' ssid lines (never a psk).
struct ApkovlSummary {
  std::uint64_t members = 0;
  std::string hostname;                                       // etc/hostname as the Pi sets it (hostname_from_file)
  std::vector<std::string> world;                             // etc/apk/world
  std::map<std::string, std::vector<std::string>> runlevels;  // runlevel -> services (symlinks)
  std::vector<ApkovlUser> users;                              // etc/passwd: name, uid, shell
  bool ssh_host_keys = false;                                 // any etc/ssh/ssh_host_* member
  bool wifi_config = false;                                   // etc/wpa_supplicant/wpa_supplicant.conf present
  std::vector<std::string> wifi_ssids;                        // its networks' ssids, in order (hex ones decoded)
  bool shadow = false;                                        // etc/shadow present
  std::vector<std::string> warnings;                          // absolute or ".." member names, truncated files
};

// Limits for reading an untrusted apkovl.
inline constexpr std::uint64_t kApkovlMaxBytes = 64ull << 20;      // compressed file on the FAT
inline constexpr std::uint64_t kApkovlMaxUnpacked = 512ull << 20;  // all members, decompressed
inline constexpr std::uint64_t kApkovlMaxMembers = 200000;

// Summarises a gzip-compressed tar (only gzip + tar are accepted). Throws
// Errc::input "<name>: ..." if it is not one or exceeds the limits above.
// (inspect_apkovl in apkovl_check.hpp gives this and the review in one pass.)
ApkovlSummary summarize_apkovl(const std::string& data, const std::string& name);

}  // namespace rpi::partition
