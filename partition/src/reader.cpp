// The read-only MBR + FAT12/16/32 reader (see reader.hpp). Every number read
// from the disk is validated before it is used as an offset, a count or a
// cluster; all arithmetic on them is done in 64 bits.
#include "partition/reader.hpp"

#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>
#include <unordered_set>

#include "le.hpp"
#include "partition/apkovl_check.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"

namespace rpi::partition {

namespace {

using le::get16;
using le::get32;

[[noreturn]] void bad(const std::string& name, const std::string& what) {
  throw Error(Errc::input, name + ": " + what);
}

std::string hex(std::uint64_t v, int width) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%0*llx", width, static_cast<unsigned long long>(v));
  return buf;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// The upper half of code page 437, the OEM code page Linux's vfat assumes by
// default (codepage=437) for bytes >= 0x80 in 8.3 names and labels.
constexpr std::uint16_t kCp437High[128] = {
    0x00C7, 0x00FC, 0x00E9, 0x00E2, 0x00E4, 0x00E0, 0x00E5, 0x00E7, 0x00EA, 0x00EB, 0x00E8, 0x00EF, 0x00EE,
    0x00EC, 0x00C4, 0x00C5, 0x00C9, 0x00E6, 0x00C6, 0x00F4, 0x00F6, 0x00F2, 0x00FB, 0x00F9, 0x00FF, 0x00D6,
    0x00DC, 0x00A2, 0x00A3, 0x00A5, 0x20A7, 0x0192, 0x00E1, 0x00ED, 0x00F3, 0x00FA, 0x00F1, 0x00D1, 0x00AA,
    0x00BA, 0x00BF, 0x2310, 0x00AC, 0x00BD, 0x00BC, 0x00A1, 0x00AB, 0x00BB, 0x2591, 0x2592, 0x2593, 0x2502,
    0x2524, 0x2561, 0x2562, 0x2556, 0x2555, 0x2563, 0x2551, 0x2557, 0x255D, 0x255C, 0x255B, 0x2510, 0x2514,
    0x2534, 0x252C, 0x251C, 0x2500, 0x253C, 0x255E, 0x255F, 0x255A, 0x2554, 0x2569, 0x2566, 0x2560, 0x2550,
    0x256C, 0x2567, 0x2568, 0x2564, 0x2565, 0x2559, 0x2558, 0x2552, 0x2553, 0x256B, 0x256A, 0x2518, 0x250C,
    0x2588, 0x2584, 0x258C, 0x2590, 0x2580, 0x03B1, 0x00DF, 0x0393, 0x03C0, 0x03A3, 0x03C3, 0x00B5, 0x03C4,
    0x03A6, 0x0398, 0x03A9, 0x03B4, 0x221E, 0x03C6, 0x03B5, 0x2229, 0x2261, 0x00B1, 0x2265, 0x2264, 0x2320,
    0x2321, 0x00F7, 0x2248, 0x00B0, 0x2219, 0x00B7, 0x221A, 0x207F, 0x00B2, 0x25A0, 0x00A0,
};

// A byte of an 8.3 name or a label as printable UTF-8: control bytes and
// path separators become '?', OEM bytes (>= 0x80) are decoded as CP437.
void append_oem_byte(std::string& out, std::uint8_t b) {
  if (b < 0x20 || b == 0x7F || b == '/' || b == '\\')
    out += '?';
  else if (b >= 0x80)
    append_utf8(out, kCp437High[b - 0x80]);
  else
    out += static_cast<char>(b);
}

// CP437 lower case, as Linux's nls_cp437 maps it, for NT case flags.
std::uint8_t oem_lower(std::uint8_t b) {
  if (b >= 'A' && b <= 'Z') return static_cast<std::uint8_t>(b - 'A' + 'a');
  switch (b) {
    case 0x80:
      return 0x87;  // Ç
    case 0x8E:
      return 0x84;  // Ä
    case 0x8F:
      return 0x86;  // Å
    case 0x90:
      return 0x82;  // É
    case 0x92:
      return 0x91;  // Æ
    case 0x99:
      return 0x94;  // Ö
    case 0x9A:
      return 0x81;  // Ü
    case 0xA5:
      return 0xA4;  // Ñ
    default:
      return b;
  }
}

// A space-padded name field as UTF-8. `kanji` maps a leading 0x05 back to
// 0xE5 (only in the first byte of a directory entry or a label); `lower`
// applies an NT lower-case flag.
std::string trimmed_field(const std::uint8_t* p, std::size_t n, bool kanji = true, bool lower = false) {
  while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == 0)) --n;
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint8_t b = (kanji && i == 0 && p[i] == 0x05) ? 0xE5 : p[i];
    append_oem_byte(out, lower ? oem_lower(b) : b);
  }
  return out;
}

bool valid_bytes_per_sector(std::uint32_t b) {
  return b == 512 || b == 1024 || b == 2048 || b == 4096;
}
bool power_of_two_1_128(std::uint32_t v) {
  return v >= 1 && v <= 128 && (v & (v - 1)) == 0;
}

char ascii_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
bool ci_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> parts;
  std::size_t i = 0;
  while (i < path.size()) {
    std::size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i) parts.emplace_back(path.substr(i, j - i));
    i = j + 1;
  }
  return parts;
}

std::uint8_t short_name_checksum(const std::uint8_t* name11) {
  std::uint8_t sum = 0;
  for (int i = 0; i < 11; ++i) sum = static_cast<std::uint8_t>(((sum & 1) << 7) + (sum >> 1) + name11[i]);
  return sum;
}

// Decodes the UTF-16 units of a long name; nullopt if it is not a valid name
// (unpaired surrogate, control character, slash, empty, "." or "..").
std::optional<std::string> decode_long_name(const std::uint16_t* units, std::size_t count) {
  std::size_t len = 0;
  while (len < count && units[len] != 0) ++len;
  if (len == 0) return std::nullopt;
  std::string out;
  for (std::size_t i = 0; i < len; ++i) {
    std::uint32_t u = units[i];
    if (u >= 0xD800 && u <= 0xDBFF) {
      if (i + 1 >= len || units[i + 1] < 0xDC00 || units[i + 1] > 0xDFFF) return std::nullopt;
      u = 0x10000 + ((u - 0xD800) << 10) + (units[i + 1] - 0xDC00);
      ++i;
    } else if (u >= 0xDC00 && u <= 0xDFFF) {
      return std::nullopt;
    }
    if (u < 0x20 || u == 0x7F || (u >= 0x80 && u <= 0x9F) || u == '/' || u == '\\') return std::nullopt;
    append_utf8(out, u);
  }
  if (out == "." || out == "..") return std::nullopt;
  return out;
}

}  // namespace

// ---- sizes and MBR ---------------------------------------------------------

std::uint64_t fd_size(int fd, const std::string& name) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno("cannot stat " + name);
  if (S_ISREG(st.st_mode)) return static_cast<std::uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    std::uint64_t bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0) throw_errno("cannot read the size of " + name);
    return bytes;
  }
  bad(name, "not a regular file or block device");
}

bool looks_like_fat_boot_sector(const std::uint8_t* s) noexcept {
  if (s[510] != 0x55 || s[511] != 0xAA) return false;
  if (!((s[0] == 0xEB && s[2] == 0x90) || s[0] == 0xE9)) return false;
  if (!valid_bytes_per_sector(get16(s + 11)) || !power_of_two_1_128(s[13])) return false;
  if (get16(s + 14) == 0 || s[16] == 0) return false;
  if (get16(s + 19) == 0 && get32(s + 32) == 0) return false;
  return s[21] == 0xF0 || s[21] >= 0xF8;
}

std::optional<std::uint64_t> least_disk_bytes(const std::uint8_t* s) {
  if (!has_boot_signature(s)) return std::nullopt;
  if (looks_like_fat_boot_sector(s)) {
    const std::uint32_t sectors = get16(s + 19) != 0 ? get16(s + 19) : get32(s + 32);
    return std::uint64_t(sectors) * get16(s + 11);
  }
  MbrInfo mbr;
  try {
    mbr = parse_mbr(s, 512, UINT64_MAX);  // no disk size: none is too small for an entry
  } catch (const Error&) {
    return std::nullopt;
  }
  if (mbr.gpt_protective || !mbr.warnings.empty()) return std::nullopt;
  std::uint64_t end = 0;
  for (const MbrEntry& e : mbr.entries)
    if (e.used()) end = std::max(end, e.offset() + e.bytes());
  return end ? std::optional<std::uint64_t>(end) : std::nullopt;
}

const char* mbr_type_name(std::uint8_t type) noexcept {
  switch (type) {
    case 0x00:
      return "empty";
    case 0x01:
      return "FAT12";
    case 0x04:
      return "FAT16 <32M";
    case 0x05:
      return "Extended";
    case 0x06:
      return "FAT16";
    case 0x07:
      return "HPFS/NTFS/exFAT";
    case 0x0b:
      return "W95 FAT32";
    case 0x0c:
      return "W95 FAT32 (LBA)";
    case 0x0e:
      return "W95 FAT16 (LBA)";
    case 0x0f:
      return "W95 Ext'd (LBA)";
    case 0x1c:
      return "Hidden W95 FAT32 (LBA)";
    case 0x82:
      return "Linux swap";
    case 0x83:
      return "Linux";
    case 0x85:
      return "Linux extended";
    case 0x8e:
      return "Linux LVM";
    case 0xda:
      return "Non-FS data";
    case 0xee:
      return "GPT protective";
    case 0xef:
      return "EFI (FAT-12/16/32)";
    case 0xfd:
      return "Linux raid autodetect";
    default:
      return "unknown";
  }
}

bool is_fat_type(std::uint8_t type) noexcept {
  switch (type) {
    case 0x01:
    case 0x04:
    case 0x06:
    case 0x0b:
    case 0x0c:
    case 0x0e:
    case 0xef:
      return true;
    default:
      return false;
  }
}

MbrInfo read_mbr(int fd, std::uint64_t disk_size, const std::string& name) {
  if (disk_size < 512) bad(name, "only " + std::to_string(disk_size) + " bytes: too small to be a disk image");
  std::uint8_t s[512];
  const std::size_t got = pread_full(fd, s, sizeof s, 0, "cannot read " + name);
  return parse_mbr(s, got, disk_size, name);
}

MbrInfo parse_mbr(const std::uint8_t* s, std::size_t got, std::uint64_t disk_size, const std::string& name) {
  if (disk_size < 512) bad(name, "only " + std::to_string(disk_size) + " bytes: too small to be a disk image");
  if (got < 512) bad(name, "cannot read sector 0 (file shorter than 512 bytes)");
  if (s[510] != 0x55 || s[511] != 0xAA)
    bad(name,
        "not a disk image: no MBR signature (55 AA) at byte 510 (found " + hex(s[510], 2) + " " + hex(s[511], 2) + ")");
  if (looks_like_fat_boot_sector(s)) bad(name, "sector 0 is a FAT boot sector, not an MBR (no partition table)");

  MbrInfo info;
  info.disk_id = get32(s + 440);
  for (unsigned i = 0; i < 4; ++i) {
    const std::uint8_t* e = s + 446 + 16 * i;
    MbrEntry& m = info.entries[i];
    m.number = i + 1;
    m.status = e[0];
    m.type = e[4];
    m.start_lba = get32(e + 8);
    m.sectors = get32(e + 12);
    if (m.type == 0) continue;
    const std::string which = "partition " + std::to_string(m.number);
    if (m.type == 0xEE) info.gpt_protective = true;
    if (m.status != 0 && m.status != 0x80)
      info.warnings.push_back(which + " has an invalid status byte " + hex(m.status, 2));
    if (m.sectors == 0) info.warnings.push_back(which + " has a type but no sectors");
    if (m.start_lba == 0 && m.sectors != 0) info.warnings.push_back(which + " starts at sector 0, over the MBR");
    if (m.offset() + m.bytes() > disk_size && m.type != 0xEE)
      info.warnings.push_back(which + " ends at byte " + std::to_string(m.offset() + m.bytes()) +
                              ", past the end of the disk (" + std::to_string(disk_size) + " bytes)");
    if (m.type == 0x05 || m.type == 0x0f || m.type == 0x85)
      info.warnings.push_back(which + " is an extended partition; logical partitions are not read");
  }
  for (unsigned i = 0; i < 4; ++i)
    for (unsigned j = i + 1; j < 4; ++j) {
      const MbrEntry &a = info.entries[i], &b = info.entries[j];
      if (!a.used() || !b.used()) continue;
      if (a.offset() < b.offset() + b.bytes() && b.offset() < a.offset() + a.bytes())
        info.warnings.push_back("partitions " + std::to_string(a.number) + " and " + std::to_string(b.number) +
                                " overlap");
    }
  return info;
}

// ---- FAT -------------------------------------------------------------------

const char* fat_kind_name(FatKind k) noexcept {
  switch (k) {
    case FatKind::fat12:
      return "FAT12";
    case FatKind::fat16:
      return "FAT16";
    case FatKind::fat32:
      return "FAT32";
  }
  return "FAT";
}

std::string FatInfo::volume_id_string() const {
  if (!has_volume_id) return "";
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04X-%04X", volume_id >> 16, volume_id & 0xFFFF);
  return buf;
}

std::string FatInfo::label() const {
  if (!root_label.empty()) return root_label;
  if (boot_label == "NO NAME") return "";
  return boot_label;
}

std::string FatEntry::mtime() const {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04u-%02u-%02u %02u:%02u:%02u", 1980u + (write_date >> 9), (write_date >> 5) & 15u,
                write_date & 31u, write_time >> 11, (write_time >> 5) & 63u, (write_time & 31u) * 2);
  return buf;
}

struct FatVolume::Impl {
  int fd = -1;
  std::uint64_t offset = 0;  // of the volume on the disk
  std::uint64_t size = 0;    // bytes available to the volume
  std::string name;
  FatInfo info;
  unsigned fat_bits = 32;
  std::uint64_t fat_offset = 0;  // active FAT, relative to the volume
  std::uint64_t fat_bytes = 0;
  std::uint64_t root_offset = 0;  // FAT12/16 fixed root region
  std::uint64_t root_bytes = 0;

  mutable std::vector<std::uint8_t> window;  // cached piece of the active FAT
  mutable std::uint64_t window_start = UINT64_MAX;
  mutable std::vector<std::string> warnings;
  mutable std::set<std::string> warned;

  static constexpr std::uint64_t kWindow = 64 * 1024;
  static constexpr std::uint64_t kMaxDirBytes = 65536ull * 32;  // Linux's directory size limit

  void warn(const std::string& w) const {
    if (warned.insert(w).second) warnings.push_back(w);
  }

  // Reads exactly `len` bytes at volume offset `at`, or throws naming `what`.
  void read(void* buf, std::uint64_t len, std::uint64_t at, const std::string& what) const {
    if (at > size || len > size - at)
      bad(name, what + " at byte " + std::to_string(at) + " (+" + std::to_string(len) + ") lies outside the volume (" +
                    std::to_string(size) + " bytes)");
    std::size_t got = pread_full(fd, buf, static_cast<std::size_t>(len), offset + at, "cannot read " + name);
    if (got != len)
      bad(name, "the image ends at byte " + std::to_string(offset + at + got) + " while reading " + what +
                    " (truncated image?)");
  }

  std::uint8_t fat_byte(std::uint64_t pos) const {
    std::uint64_t start = pos / kWindow * kWindow;
    if (start != window_start) {
      std::uint64_t len = std::min<std::uint64_t>(kWindow, fat_bytes - start);
      window.resize(static_cast<std::size_t>(len));
      window_start = UINT64_MAX;
      read(window.data(), len, fat_offset + start, "the FAT");
      window_start = start;
    }
    return window[static_cast<std::size_t>(pos - start)];
  }

  // The FAT entry of cluster c (c <= clusters + 1, guaranteed to fit the FAT).
  std::uint32_t fat_entry(std::uint32_t c) const {
    std::uint64_t n = c;
    switch (fat_bits) {
      case 12: {
        std::uint64_t pos = n + n / 2;
        std::uint32_t v = fat_byte(pos) | (std::uint32_t(fat_byte(pos + 1)) << 8);
        return (n & 1) ? (v >> 4) : (v & 0xFFF);
      }
      case 16:
        return fat_byte(n * 2) | (std::uint32_t(fat_byte(n * 2 + 1)) << 8);
      default: {
        std::uint64_t p = n * 4;
        std::uint32_t v = fat_byte(p) | (std::uint32_t(fat_byte(p + 1)) << 8) | (std::uint32_t(fat_byte(p + 2)) << 16) |
                          (std::uint32_t(fat_byte(p + 3)) << 24);
        return v & 0x0FFFFFFF;
      }
    }
  }
  std::uint32_t eoc_min() const { return fat_bits == 12 ? 0xFF8 : fat_bits == 16 ? 0xFFF8 : 0x0FFFFFF8; }
  std::uint32_t bad_mark() const { return fat_bits == 12 ? 0xFF7 : fat_bits == 16 ? 0xFFF7 : 0x0FFFFFF7; }
  bool valid_cluster(std::uint64_t c) const { return c >= 2 && c <= std::uint64_t(info.clusters) + 1; }

  std::uint64_t cluster_offset(std::uint32_t c) const {
    return (std::uint64_t(info.first_data_sector) + std::uint64_t(c - 2) * info.sectors_per_cluster) *
           info.bytes_per_sector;
  }

  // Follows the chain from `first`. With `exact` set it stops after `limit`
  // clusters and fails if the chain ends earlier; otherwise it fails if the
  // chain is longer than `limit`. Loops, free or bad clusters and pointers
  // outside the volume are errors.
  std::vector<std::uint32_t> chain(std::uint32_t first, std::uint64_t limit, bool exact,
                                   const std::string& what) const {
    if (!valid_cluster(first))
      bad(name, what + ": first cluster " + std::to_string(first) + " is outside the volume (2.." +
                    std::to_string(std::uint64_t(info.clusters) + 1) + ")");
    std::vector<std::uint32_t> out;
    std::unordered_set<std::uint32_t> seen;
    std::uint32_t c = first;
    for (;;) {
      if (!seen.insert(c).second) bad(name, what + ": the cluster chain loops back to cluster " + std::to_string(c));
      out.push_back(c);
      if (exact && out.size() == limit) return out;
      if (!exact && out.size() > limit)
        bad(name, what + ": the cluster chain is longer than " + std::to_string(limit) + " clusters");
      std::uint32_t v = fat_entry(c);
      if (v >= eoc_min()) break;
      if (v == bad_mark()) bad(name, what + ": cluster " + std::to_string(c) + " of its chain is marked bad");
      if (v == 0) bad(name, what + ": the cluster chain runs into free cluster " + std::to_string(c));
      if (!valid_cluster(v))
        bad(name, what + ": the FAT entry of cluster " + std::to_string(c) + " points to " + std::to_string(v) +
                      ", outside the volume (2.." + std::to_string(std::uint64_t(info.clusters) + 1) + ")");
      c = v;
    }
    if (exact && out.size() < limit)
      bad(name, what + ": the cluster chain ends after " + std::to_string(out.size()) +
                    " clusters, but its size needs " + std::to_string(limit));
    return out;
  }

  // The raw bytes of a directory: the fixed root (cluster 0 on FAT12/16) or a chain.
  std::vector<std::uint8_t> dir_bytes(std::uint32_t first_cluster, const std::string& what) const {
    std::vector<std::uint8_t> buf;
    if (first_cluster == 0 && info.kind != FatKind::fat32) {
      buf.resize(static_cast<std::size_t>(root_bytes));
      read(buf.data(), root_bytes, root_offset, "the root directory");
      return buf;
    }
    std::uint64_t limit = (kMaxDirBytes + info.cluster_bytes() - 1) / info.cluster_bytes();
    auto clusters = chain(first_cluster, limit, false, what);
    buf.resize(clusters.size() * std::size_t(info.cluster_bytes()));
    for (std::size_t i = 0; i < clusters.size(); ++i)
      read(buf.data() + i * info.cluster_bytes(), info.cluster_bytes(), cluster_offset(clusters[i]), what);
    return buf;
  }

  std::uint32_t root_first_cluster() const { return info.kind == FatKind::fat32 ? info.root_cluster : 0; }

  // Parses directory slots. `label` receives the volume label entry (root only).
  std::vector<FatEntry> parse_dir(const std::vector<std::uint8_t>& buf, const std::string& what,
                                  std::string* label) const {
    std::vector<FatEntry> out;
    std::array<std::uint16_t, 20 * 13> units{};
    bool lfn_active = false;
    unsigned lfn_slots = 0, lfn_next = 0;
    std::uint8_t lfn_sum = 0;
    auto reset = [&] { lfn_active = false; };

    for (std::size_t off = 0; off + 32 <= buf.size(); off += 32) {
      const std::uint8_t* e = buf.data() + off;
      if (e[0] == 0x00) break;
      if (e[0] == 0xE5) {
        reset();
        continue;
      }
      const std::uint8_t attr = e[11];
      if ((attr & 0x3F) == 0x0F) {
        const unsigned ord = e[0] & 0x3F;
        if (e[0] & 0x40) {
          if (lfn_active) warn(what + ": an unfinished long name was dropped");
          if (ord < 1 || ord > 20) {
            warn(what + ": a long-name slot has an invalid sequence number");
            reset();
            continue;
          }
          lfn_active = true;
          lfn_slots = ord;
          lfn_sum = e[13];
          units.fill(0);
        } else if (!lfn_active || ord != lfn_next || e[13] != lfn_sum || ord == 0) {
          warn(what + ": a stray long-name slot was ignored");
          reset();
          continue;
        }
        static constexpr int kPos[13] = {1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30};
        for (int k = 0; k < 13; ++k) units[(ord - 1) * 13 + k] = get16(e + kPos[k]);
        lfn_next = ord - 1;
        continue;
      }

      // A short entry; take the pending long name with it.
      std::optional<std::string> long_name;
      if (lfn_active) {
        if (lfn_next != 0) {
          warn(what + ": an incomplete long name before '" + trimmed_field(e, 11) + "' was ignored");
        } else if (short_name_checksum(e) != lfn_sum) {
          warn(what + ": the long name of '" + trimmed_field(e, 8) +
               (e[8] != ' ' ? "." + trimmed_field(e + 8, 3, false) : "") +
               "' has a bad checksum; the short name is used");
        } else {
          long_name = decode_long_name(units.data(), lfn_slots * 13);
          if (!long_name) warn(what + ": an invalid long name (bad UTF-16 or forbidden character) was ignored");
        }
      }
      reset();

      if (attr & 0x08) {  // volume label (or garbage with the bit set): never a file
        if (label && label->empty() && !(attr & 0x10)) *label = trimmed_field(e, 11);
        continue;
      }
      if (e[0] == '.' && (e[1] == ' ' || (e[1] == '.' && e[2] == ' '))) continue;  // "." and ".."

      FatEntry f;
      std::string base = trimmed_field(e, 8), ext = trimmed_field(e + 8, 3, false);
      if (base.empty()) base = "?";
      f.short_name = ext.empty() ? base : base + "." + ext;
      if (long_name) {
        f.name = *long_name;
        f.has_long_name = true;
      } else {
        std::string b = trimmed_field(e, 8, true, (e[12] & 0x08) != 0);
        std::string x = trimmed_field(e + 8, 3, false, (e[12] & 0x10) != 0);
        if (b.empty()) b = "?";
        f.name = x.empty() ? b : b + "." + x;
      }
      f.attributes = attr;
      f.first_cluster = get16(e + 26);
      if (info.kind == FatKind::fat32) f.first_cluster |= std::uint32_t(get16(e + 20)) << 16;
      f.size = (attr & 0x10) ? 0 : get32(e + 28);
      f.write_time = get16(e + 22);
      f.write_date = get16(e + 24);
      out.push_back(std::move(f));
    }
    return out;
  }

  std::vector<FatEntry> list_cluster(std::uint32_t first, const std::string& what) const {
    return parse_dir(dir_bytes(first, what), what, nullptr);
  }

  std::vector<FatEntry> list_root() const {
    return parse_dir(dir_bytes(root_first_cluster(), "the root directory"), "the root directory", nullptr);
  }

  std::vector<FatEntry> list_entry(const FatEntry& dir, const std::string& path) const {
    if (dir.first_cluster == 0) bad(name, "directory " + path + " has no cluster (first cluster 0)");
    return list_cluster(dir.first_cluster, "directory " + path);
  }

  std::optional<FatEntry> lookup(std::string_view path) const {
    auto parts = split_path(path);
    if (parts.empty()) return std::nullopt;
    std::vector<FatEntry> entries = list_root();
    std::string so_far;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const FatEntry* hit = nullptr;
      for (const auto& e : entries)
        if (ci_equal(e.name, parts[i]) || ci_equal(e.short_name, parts[i])) {
          hit = &e;
          break;
        }
      if (!hit) return std::nullopt;
      so_far += (so_far.empty() ? "" : "/") + hit->name;
      if (i + 1 == parts.size()) return *hit;
      if (!hit->is_directory()) return std::nullopt;
      entries = list_entry(*hit, so_far);
    }
    return std::nullopt;
  }

  void parse_boot_sector();
  void scan_fats();
  void read_fsinfo(std::uint32_t sector);
};

void FatVolume::Impl::parse_boot_sector() {
  if (size < 512) bad(name, "the volume is only " + std::to_string(size) + " bytes: too small for a FAT file system");
  std::uint8_t s[512];
  read(s, sizeof s, 0, "the boot sector");
  if (s[510] != 0x55 || s[511] != 0xAA)
    bad(name, "no FAT file system: no boot sector signature (55 AA) at byte 510 of the volume");
  if (!((s[0] == 0xEB) || s[0] == 0xE9))
    bad(name, "no FAT file system: the boot sector does not start with a jump instruction (" + hex(s[0], 2) + ")");

  FatInfo& f = info;
  f.oem_name = trimmed_field(s + 3, 8, false);
  f.bytes_per_sector = get16(s + 11);
  f.sectors_per_cluster = s[13];
  f.reserved_sectors = get16(s + 14);
  f.num_fats = s[16];
  f.root_entries = get16(s + 17);
  const std::uint32_t tot16 = get16(s + 19);
  f.media = s[21];
  const std::uint32_t fatsz16 = get16(s + 22);
  f.hidden_sectors = get32(s + 28);
  const std::uint32_t tot32 = get32(s + 32);

  if (!valid_bytes_per_sector(f.bytes_per_sector))
    bad(name, "invalid boot sector: " + std::to_string(f.bytes_per_sector) +
                  " bytes per sector (512, 1024, 2048 or 4096 expected)");
  if (!power_of_two_1_128(f.sectors_per_cluster))
    bad(name, "invalid boot sector: " + std::to_string(f.sectors_per_cluster) +
                  " sectors per cluster (a power of two 1..128 expected)");
  if (f.reserved_sectors == 0) bad(name, "invalid boot sector: 0 reserved sectors");
  if (f.num_fats == 0 || f.num_fats > 16) bad(name, "invalid boot sector: " + std::to_string(f.num_fats) + " FATs");
  if (f.media != 0xF0 && f.media < 0xF8) warn("unusual media descriptor " + hex(f.media, 2));
  f.total_sectors = tot16 != 0 ? tot16 : tot32;
  if (f.total_sectors == 0) bad(name, "invalid boot sector: the total sector count is 0");

  const bool fat32 = fatsz16 == 0;  // tech-brief §1.5: the rule Linux, Windows and blkid use
  const std::uint8_t* ext = s + (fat32 ? 64 : 36);
  if (fat32) {
    f.fat_sectors = get32(s + 36);
    if (f.fat_sectors == 0) bad(name, "invalid boot sector: FAT size is 0 (both FATSz16 and FATSz32)");
    const std::uint16_t flags = get16(s + 40);
    f.active_fat = (flags & 0x80) ? (flags & 0x0F) : 0;
    if (f.active_fat >= f.num_fats)
      bad(name,
          "invalid boot sector: active FAT " + std::to_string(f.active_fat) + " of " + std::to_string(f.num_fats));
    f.root_cluster = get32(s + 44);
    if (f.root_entries != 0)
      warn("FAT32 boot sector has a root entry count (" + std::to_string(f.root_entries) + "); ignored");
    f.root_entries = 0;
  } else {
    f.fat_sectors = fatsz16;
    if (f.root_entries == 0) bad(name, "invalid boot sector: a FAT12/16 volume with 0 root directory entries");
  }
  if (ext[2] == 0x29 || ext[2] == 0x28) {
    f.has_volume_id = true;
    f.volume_id = get32(ext + 3);
    if (ext[2] == 0x29) f.boot_label = trimmed_field(ext + 7, 11);
  }

  const std::uint64_t bps = f.bytes_per_sector;
  const std::uint64_t root_sectors = (std::uint64_t(f.root_entries) * 32 + bps - 1) / bps;
  const std::uint64_t first_data = f.reserved_sectors + std::uint64_t(f.num_fats) * f.fat_sectors + root_sectors;
  if (first_data >= f.total_sectors)
    bad(name, "invalid boot sector: the data region would start at sector " + std::to_string(first_data) +
                  ", past the end of the volume (" + std::to_string(f.total_sectors) + " sectors)");
  f.first_data_sector = static_cast<std::uint32_t>(first_data);
  f.clusters = static_cast<std::uint32_t>((f.total_sectors - first_data) / f.sectors_per_cluster);
  if (f.clusters == 0) bad(name, "invalid boot sector: no room for a single data cluster");
  if (f.volume_bytes() > size)
    bad(name, "the file system claims " + std::to_string(f.volume_bytes()) + " bytes but only " + std::to_string(size) +
                  " are available (truncated image, or a partition smaller than its file system)");

  if (fat32) {
    f.kind = FatKind::fat32;
    fat_bits = 32;
    if (f.clusters > 0x0FFFFFF5u) bad(name, "invalid boot sector: too many clusters for FAT32");
    if (f.clusters < 65525)
      warn("FAT32 with only " + std::to_string(f.clusters) +
           " clusters: tools that go by the cluster count (fatgen103, rpi-imager) read it as FAT16");
    if (!valid_cluster(f.root_cluster))
      bad(name,
          "invalid boot sector: root directory cluster " + std::to_string(f.root_cluster) + " is outside the volume");
  } else if (f.clusters <= 4084) {
    f.kind = FatKind::fat12;
    fat_bits = 12;
  } else {
    f.kind = FatKind::fat16;
    fat_bits = 16;
    if (f.clusters > 65524)
      bad(name,
          "invalid boot sector: " + std::to_string(f.clusters) + " clusters are too many for FAT16 (at most 65524)");
  }
  fat_bytes = std::uint64_t(f.fat_sectors) * bps;
  const std::uint64_t capacity = fat_bytes * 8 / fat_bits;
  if (capacity < std::uint64_t(f.clusters) + 2)
    bad(name, "invalid boot sector: a FAT of " + std::to_string(f.fat_sectors) + " sectors holds " +
                  std::to_string(capacity) + " entries, but the volume has " + std::to_string(f.clusters) +
                  " clusters");
  fat_offset = (f.reserved_sectors + std::uint64_t(f.active_fat) * f.fat_sectors) * bps;
  root_offset = (f.reserved_sectors + std::uint64_t(f.num_fats) * f.fat_sectors) * bps;
  root_bytes = std::uint64_t(f.root_entries) * 32;

  if (fat32) {
    read_fsinfo(get16(s + 48));
    // fsck.fat compares the backup boot sector with the boot sector.
    const std::uint32_t backup = get16(s + 50);
    if (backup != 0 && backup != 0xFFFF) {
      if (backup >= f.reserved_sectors) {
        warn("the backup boot sector number " + std::to_string(backup) + " is outside the reserved region");
      } else {
        std::uint8_t b[512];
        read(b, sizeof b, std::uint64_t(backup) * bps, "the backup boot sector");
        if (std::memcmp(b, s, sizeof b) != 0)
          warn("the backup boot sector (sector " + std::to_string(backup) + ") differs from the boot sector");
      }
    }
  }
}

void FatVolume::Impl::read_fsinfo(std::uint32_t sector) {
  if (sector == 0 || sector == 0xFFFF) return;
  if (sector >= info.reserved_sectors) {
    warn("the FSInfo sector number " + std::to_string(sector) + " is outside the reserved region");
    return;
  }
  std::uint8_t s[512];
  read(s, sizeof s, std::uint64_t(sector) * info.bytes_per_sector, "the FSInfo sector");
  if (get32(s) != 0x41615252 || get32(s + 484) != 0x61417272 || get32(s + 508) != 0xAA550000) {
    warn("the FSInfo sector has bad signatures; its free count is ignored");
    return;
  }
  std::uint32_t free = get32(s + 488), next = get32(s + 492);
  if (free != 0xFFFFFFFF) info.fsinfo_free = free;
  if (next != 0xFFFFFFFF) info.fsinfo_next_free = next;
}

void FatVolume::Impl::scan_fats() {
  std::uint32_t free = 0, bads = 0;
  const std::uint32_t last = info.clusters + 1;
  for (std::uint32_t c = 2;; ++c) {
    std::uint32_t v = fat_entry(c);
    if (v == 0)
      ++free;
    else if (v == bad_mark())
      ++bads;
    if (c == last) break;
  }
  info.free_clusters = free;
  info.bad_clusters = bads;
  if (info.fsinfo_free && *info.fsinfo_free != free)
    warn("FSInfo claims " + std::to_string(*info.fsinfo_free) + " free clusters, the FAT has " + std::to_string(free) +
         " (fsck.fat reports this)");

  // Every FAT copy should equal the active one (fsck.fat compares them too).
  std::vector<std::uint8_t> a, b;
  const std::uint64_t chunk = 1 << 20;
  const std::uint64_t base = std::uint64_t(info.reserved_sectors) * info.bytes_per_sector;
  for (std::uint32_t copy = 0; copy < info.num_fats && info.fats_identical; ++copy) {
    if (copy == info.active_fat) continue;
    for (std::uint64_t at = 0; at < fat_bytes; at += chunk) {
      std::uint64_t len = std::min(chunk, fat_bytes - at);
      a.resize(len);
      b.resize(len);
      read(a.data(), len, fat_offset + at, "the FAT");
      read(b.data(), len, base + copy * fat_bytes + at, "FAT copy " + std::to_string(copy + 1));
      if (a != b) {
        info.fats_identical = false;
        warn("FAT copy " + std::to_string(copy + 1) + " differs from the active FAT");
        break;
      }
    }
  }
}

FatVolume::FatVolume(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FatVolume::FatVolume(FatVolume&&) noexcept = default;
FatVolume& FatVolume::operator=(FatVolume&&) noexcept = default;
FatVolume::~FatVolume() = default;

FatVolume FatVolume::open(int fd, std::uint64_t offset, std::uint64_t size, std::string name) {
  auto impl = std::make_unique<Impl>();
  impl->fd = fd;
  impl->offset = offset;
  impl->size = size;
  impl->name = std::move(name);
  impl->parse_boot_sector();
  impl->scan_fats();
  // The root label entry; reading the root also validates its chain.
  std::string label;
  impl->parse_dir(impl->dir_bytes(impl->root_first_cluster(), "the root directory"), "the root directory", &label);
  impl->info.root_label = label;
  return FatVolume(std::move(impl));
}

const FatInfo& FatVolume::info() const noexcept {
  return impl_->info;
}

std::uint32_t FatVolume::fat_entry(std::uint32_t c) const {
  return impl_->valid_cluster(c) ? impl_->fat_entry(c) : 0;
}

std::vector<FatEntry> FatVolume::list(std::string_view path) const {
  if (split_path(path).empty()) return impl_->list_root();
  auto e = impl_->lookup(path);
  if (!e) bad(impl_->name, "no such directory on the FAT: " + std::string(path));
  if (!e->is_directory()) bad(impl_->name, "not a directory on the FAT: " + std::string(path));
  return impl_->list_entry(*e, std::string(path));
}

std::optional<FatEntry> FatVolume::stat(std::string_view path) const {
  return impl_->lookup(path);
}

std::string FatVolume::read_file(std::string_view path, std::uint64_t max_bytes) const {
  const Impl& m = *impl_;
  const std::string what = "file " + std::string(path);
  auto e = m.lookup(path);
  if (!e) bad(m.name, "no such file on the FAT: " + std::string(path));
  if (e->is_directory()) bad(m.name, what + " is a directory");
  if (e->size > max_bytes)
    bad(m.name, what + " is " + std::to_string(e->size) + " bytes, more than the " + std::to_string(max_bytes) +
                    " bytes this reader accepts");
  std::string data;
  if (e->size == 0) return data;
  const std::uint64_t cb = m.info.cluster_bytes();
  const std::uint64_t need = (e->size + cb - 1) / cb;
  if (need > m.info.clusters)
    bad(m.name, what + " claims " + std::to_string(e->size) + " bytes, more than the whole volume holds");
  auto clusters = m.chain(e->first_cluster, need, true, what);
  data.resize(e->size);
  std::uint64_t done = 0;
  for (std::uint32_t c : clusters) {
    std::uint64_t len = std::min<std::uint64_t>(cb, e->size - done);
    m.read(data.data() + done, len, m.cluster_offset(c), what);
    done += len;
  }
  return data;
}

void FatVolume::walk(const std::function<void(const std::string&, const FatEntry&)>& visit, unsigned max_depth) const {
  const Impl& m = *impl_;
  // Each directory cluster is expanded once: a directory linked twice (or
  // into its own subtree) would otherwise make the walk loop or explode.
  std::unordered_set<std::uint32_t> expanded{m.root_first_cluster()};
  std::function<void(const std::string&, const std::vector<FatEntry>&, unsigned)> rec =
      [&](const std::string& prefix, const std::vector<FatEntry>& entries, unsigned depth) {
        for (const auto& e : entries) {
          std::string path = prefix.empty() ? e.name : prefix + "/" + e.name;
          visit(path, e);
          if (!e.is_directory()) continue;
          if (depth + 1 > max_depth) {
            m.warn("directory " + path + " is nested deeper than " + std::to_string(max_depth) + " levels; not read");
            continue;
          }
          if (!expanded.insert(e.first_cluster).second) {
            m.warn("directory " + path + " shares its clusters with another directory (cross-linked); not read twice");
            continue;
          }
          rec(path, m.list_entry(e, path), depth + 1);
        }
      };
  rec("", m.list_root(), 0);
}

std::vector<std::string> FatVolume::warnings() const {
  return impl_->warnings;
}

std::vector<FatEntry> find_apkovls(const FatVolume& volume) {
  std::vector<FatEntry> out;
  for (auto& e : volume.list(""))
    if (!e.is_directory() && is_apkovl_name(e.name)) out.push_back(e);
  return out;
}

}  // namespace rpi::partition
