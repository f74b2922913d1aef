// The block map: every byte range of an image that must be written to a card,
// zeros included (MBR area, reserved sectors, both FATs, directories, file
// data) and nothing else. Built by the image writer from its own allocation —
// never from FIEMAP/SEEK_HOLE — and saved as a bmap 2.0 file for bmaptool.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rpi::partition {

struct Extent {
  std::uint64_t offset = 0;  // bytes, a multiple of BlockMap::kBlockSize
  std::uint64_t length = 0;  // bytes; a multiple of kBlockSize except at the end of the image
  std::string sha256;        // hex digest of the image bytes of this extent ("" = not computed)
};

class BlockMap {
 public:
  static constexpr std::uint32_t kBlockSize = 4096;

  explicit BlockMap(std::uint64_t image_size = 0) : image_size_(image_size) {}

  // Marks [offset, offset+length) as mapped; widened to whole blocks (clipped
  // at the image end) and merged with neighbouring extents.
  void add(std::uint64_t offset, std::uint64_t length);
  // Splits extents longer than `max_len` bytes (a multiple of kBlockSize), so
  // that each checksum covers a bounded piece: verification can then name the
  // first bad piece, and writers can hash as they go.
  void split(std::uint64_t max_len);
  // Reads every extent from `fd` (the image) and records its SHA-256.
  void compute_checksums(int fd, const std::string& image_name);

  std::uint64_t image_size() const noexcept { return image_size_; }
  const std::vector<Extent>& extents() const noexcept { return extents_; }
  std::uint64_t mapped_bytes() const noexcept;
  std::uint64_t blocks_count() const noexcept { return (image_size_ + kBlockSize - 1) / kBlockSize; }

  // bmap format 2.0, accepted by `bmaptool copy`.
  std::string to_bmap_xml() const;
  // Parses a bmap 1.4/2.0 file (sha256 checksums); throws rpi::Error(input) naming `name`.
  static BlockMap from_bmap_xml(std::string_view xml, const std::string& name);
  // A map that covers the whole image (for images without a .bmap).
  static BlockMap whole(std::uint64_t image_size);

 private:
  std::uint64_t image_size_;
  std::vector<Extent> extents_;
};

// The map of an image without a .bmap, derived from what it holds: the
// whole image minus the free clusters (FAT entry 0) of each MBR partition (or
// of a FAT volume without a partition table) that is a FAT12/16/32 volume the
// reader (reader.hpp) reads without any error or warning. Everything else stays
// mapped: sector 0 and the gap before the first partition, reserved sectors,
// both FATs, the root directory, every allocated cluster (bad- and
// reserved-marked ones too), the slack after the last cluster, other
// partitions, the space after them. Only whole 4 KiB blocks that hold nothing
// but free-cluster bytes are left out. Any doubt gives nullopt (write every
// byte): no 55 AA, a GPT, an MBR or reader warning or error, overlapping
// partitions, a FAT chain that loops, is cross-linked, leaves the volume or
// runs into a free cluster, a directory entry that starts in a free cluster.
// No range checksums (Extent::sha256 ""). `size` is the image's size; `name`
// names it in nothing that escapes (reader errors become nullopt).
std::optional<BlockMap> map_from_fat(int fd, std::uint64_t size, const std::string& name);

// A .bmap is created 0600 like its image: its SHA-256 per range would let
// anyone who can read it test guesses of the secrets in the image (a Wi-Fi
// passphrase) by rebuilding the image and comparing.
inline constexpr unsigned kBmapMode = 0600;

void write_bmap(const std::filesystem::path& path, const BlockMap& map);
// Reads and parses a bmap file. When it carries a BmapFileChecksum, that is
// checked first as bmaptool does (SHA-256 of the file with the checksum's own
// 64 hex digits replaced by '0's): a mismatch means the file was edited or
// damaged, rpi::Error(input) naming it.
BlockMap read_bmap(const std::filesystem::path& path);

// Compares every range that has a checksum with the bytes of the image open
// at `image_fd` (ranges without one are not checked); throws rpi::Error(input)
// naming `bmap_name` and the first bad range when the image changed after its
// bmap was made. Costs one extra read of the mapped data. When `stop` turns
// true the check ends early with rpi::Error(internal) (its caller gave up).
void check_bmap_against(const BlockMap& map, int image_fd, const std::string& image_name, const std::string& bmap_name,
                        const std::atomic<bool>* stop = nullptr);

}  // namespace rpi::partition
