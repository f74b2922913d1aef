// The parallel verified writer: one worker thread per card, each with its own
// O_EXCL + flock'ed descriptor. Sequence per card (tech-brief §4.2): zero the
// first and last MiB, fdatasync, write the mapped ranges except the first MiB in
// 4 MiB aligned chunks (O_DIRECT where possible), fdatasync, write the first MiB
// (the MBR) last, fdatasync, verify by reading back past the page cache and
// comparing byte for byte with the image, BLKRRPART. An interrupted card never carries a
// valid MBR. An existing regular file may stand in for a card and is written
// like one: its size is kept (bytes beyond the image stay), one smaller than the
// image is refused like a card, --wipe punches holes in it (else writes zeros),
// and one that group or others can read is made 0600 first ("note" event). A
// path that does not exist yet becomes a new file of the image's size, mode
// 0600, sparse (holes where unmapped).
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "partition/block_map.hpp"
#include "rpi/error.hpp"
#include "rpi/events.hpp"
#include "udev/device.hpp"

namespace rpi::udev {

// A file this process made for one run (a decompressed image): removed when
// this object goes.
class ScratchFile {
 public:
  explicit ScratchFile(std::filesystem::path path) : path_(std::move(path)) {}
  ~ScratchFile();
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

struct DecompressOptions;
struct CompressedImage;

// An image file and the ranges of it that must be written. Shared (read-only)
// by every job that writes the same identity.
struct FlashSource {
  std::filesystem::path image;
  partition::BlockMap map;
  // The .bmap file `map` was read from (find_bmap); "" when there is none
  // (the whole image, or a map a build computed).
  std::filesystem::path bmap;
  // How messages name the image when `image` is not the user's file (a
  // decompressed copy: "pi.img.xz (decompressed)"); "" names `image`.
  std::string name;
  // The decompressed copy `image` is, removed with the last source that
  // holds it (copies of a source share it).
  std::shared_ptr<const ScratchFile> scratch;
  // The ranges' SHA-256 in `map` (from a .bmap file) still have to be compared
  // with the image: flash_one/flash_all do it on a thread of their own while
  // the cards' bodies are written, and no card gets its first MiB (the MBR)
  // before the check passed; check_source() does it at once.
  bool check_ranges = false;
  // Where `map` comes from: "bmap" (a .bmap file), "fat" (no .bmap: derived
  // from the image's FAT volumes, their free clusters left out:
  // partition::map_from_fat), "whole" (no .bmap and no FAT map: every byte),
  // "built" (the map a build computed).
  std::string map_from = "whole";

  // The image with its block map, found as bmaptool finds one (find_bmap:
  // pi.img.bmap, then pi.bmap), else the map derived from its FAT volumes
  // (map_without_bmap), else BlockMap::whole. Throws Errc::input when
  // the image is missing, or the bmap's size or own BmapFileChecksum does not
  // match (the range checksums: see check_ranges). A `bmap` given (--bmap) is
  // used instead of looking for one, and must be there.
  static std::shared_ptr<const FlashSource> open(const std::filesystem::path& image,
                                                 const std::filesystem::path& bmap = {});
  // An image this process has just built into a private folder, with the map
  // the build computed from the bytes it wrote: nothing to compare, so no
  // second read of the image. Throws Errc::input when the file's size is not
  // the map's.
  static std::shared_ptr<const FlashSource> built(const std::filesystem::path& image, partition::BlockMap map);
  // A compressed image (gzip, xz, zstd or bzip2: compression_of its first
  // bytes), decompressed once into a new 0600 file in opts.folder: holes
  // where a 4 KiB block is all zeros, "decompress" progress events. Its block
  // map is found as bmaptool finds one (find_bmap); its size and every range's
  // SHA-256 are compared with the data as it is decompressed, so a source
  // comes back checked (check_ranges false). Without one the map is derived
  // from the decompressed image's FAT volumes (map_without_bmap), else covers
  // the whole image: a zero block of an image is not free space (the end of a
  // directory), and the card's old bytes must not show through; only a FAT's
  // free clusters may keep them. Throws Errc::input for a damaged or truncated file (naming the
  // byte of it where the decoder stopped) or a block map that does not match,
  // Errc::device for an image larger than opts.max_size, Errc::io when
  // opts.folder fills up, Cancelled when opts.cancel turns true; the partly
  // written file is removed each time. "decompress" progress at most every
  // 200 ms, and once at the end. With opts.events, two "detail" events (for
  // -v) about the compressed file: what the probe learnt (format, the size it
  // records, the .bmap) and how long that took, then once it is decompressed:
  // the bytes read and out and the time.
  static std::shared_ptr<const FlashSource> decompress(const std::filesystem::path& image,
                                                       const DecompressOptions& opts);
  // `name`, or `image` when that is empty.
  std::string display_name() const { return name.empty() ? image.string() : name; }
};

struct DecompressOptions {
  std::filesystem::path folder;  // a private folder for the decompressed image (the run's scratch folder)
  EventSink events;              // "decompress" progress (subject: the compressed file), "note"s, "detail"s
  const std::atomic<bool>* cancel = nullptr;
  std::string full_hint;  // what else to do when `folder` fills up ("set TMPDIR to ...")
  // The largest image any card it is for can take: an image known to be
  // larger (its xz index or zstd frame headers) is refused before
  // anything is decompressed, one of unknown size as soon as more than this
  // came out (zeros would make a sparse file of any size). Errc::device,
  // naming how much was decompressed and ending with `too_large` ("the
  // largest card, /dev/sdb, has 7.4 GiB; use a larger card").
  std::optional<std::uint64_t> max_size;
  std::string too_large;
  // probe_compressed(image), when the caller has it already: not read again.
  const CompressedImage* probed = nullptr;
};

// The map of an image of `size` bytes at `image` that has no .bmap: the one
// partition::map_from_fat derives from its FAT volumes (map_from "fat"), else
// the whole image (map_from "whole"). Throws Errc::input when the image
// cannot be opened, or is cut short (refuse_cut_short; `decompressed`: it is
// what a compressed image decompressed to).
void map_without_bmap(FlashSource& src, std::uint64_t size, bool decompressed = false);

// Throws Errc::input when an image of `size` bytes is shorter than its first
// sector (`sector`, 512 bytes) says it is at least (partition::least_disk_bytes):
// cut short by an interrupted download or copy, it would be written as if
// whole and the card would not boot. `what` names the image; `decompressed`:
// `size` is what a compressed image decompresses to.
void refuse_cut_short(const std::uint8_t* sector, std::uint64_t size, const std::string& what, bool decompressed);

// "gzip", "xz", "zstd" or "bzip2" when `head` (the first bytes of a file)
// starts with that compressor's magic; "" otherwise.
std::string compression_of(std::string_view head);
// The same for the file at `path` ("" also when it cannot be read).
std::string compression_of_file(const std::filesystem::path& path);

// What can be learnt of a compressed image without decompressing it.
struct CompressedImage {
  std::string compression;                  // "gzip", "xz", "zstd", "bzip2"
  std::uint64_t file_size = 0;              // of the compressed file
  std::optional<std::uint64_t> size;        // uncompressed, when the file records it (xz index, zstd frame headers)
  std::optional<std::uint32_t> gzip_isize;  // a gzip file's last 4 bytes: its (last member's) size modulo 4 GiB
  std::filesystem::path bmap;               // find_bmap(image); "" when there is none
  std::optional<partition::BlockMap> map;   // read from `bmap` (its BmapFileChecksum checked)
  std::string probed_in;                    // how long probe_compressed took ("0.01 s"): for -v's detail
  // The image's size as the .bmap, else the file itself, gives it.
  std::optional<std::uint64_t> expected_size() const { return map ? std::optional(map->image_size()) : size; }
  // Where `size` comes from: "its xz index says", "its zstd frame headers say".
  std::string size_source() const { return compression == "xz" ? "its xz index says" : "its zstd frame headers say"; }
};
// Reads the xz index or the zstd frame headers (a gzip ISIZE is the size
// modulo 4 GiB, kept apart; bzip2 records none: no size for those), and the block map
// when there is one. Throws Errc::input when the file is not compressed, is an
// xz file that does not end with a stream footer or whose index is damaged
// (truncated: a download cut short), or when the block map cannot be read or
// describes an image of another size than the file records. A `bmap` given
// (--bmap) is read instead of looking for one beside the image.
CompressedImage probe_compressed(const std::filesystem::path& image, const std::filesystem::path& bmap = {});
// What probe_compressed found, for -v: "probed pi.img.xz in 0.01 s: xz,
// 12.3 MiB; 64 MiB decompressed (its xz index says); block map ...".
std::string probe_detail(const std::string& name, const CompressedImage& c);
// The first `n` bytes of the decompressed data (fewer when it is shorter);
// throws Errc::input when they cannot be decompressed.
std::string decompressed_head(const std::filesystem::path& image, std::size_t n);
// bmaptool's rule (bmaptools/CLI.py, find_and_open_bmap), for raw and
// compressed images alike: IMAGE.bmap, then with one extension less at a time,
// as long as the name has one: pi.img.xz.bmap, pi.img.bmap, pi.bmap (a raw
// pi.img: pi.img.bmap, pi.bmap). The first regular file found; "" when none.
std::filesystem::path find_bmap(const std::filesystem::path& image);
// The names find_bmap tries, in order.
std::vector<std::filesystem::path> bmap_candidates(const std::filesystem::path& image);

// Compares the range checksums of the source's .bmap with its image now (one
// read of the mapped data); throws Errc::input naming the first bad range.
// A no-op for sources without check_ranges.
void check_source(const FlashSource& src);

struct FlashJob {
  std::string target;  // /dev/sdb, /dev/disk/by-id/..., or a regular file
  std::shared_ptr<const FlashSource> source;
  std::string identity;  // "kiosk-01": shown in events and results
};

struct FlashOptions {
  bool verify = true;
  // Erase the whole card before writing: BLKDISCARD, or where the card cannot
  // discard, zeros (BLKZEROOUT: as slow as writing every byte); a regular file:
  // holes punched (fallocate), else zeros written. "wipe" progress events; the
  // unmapped space then holds nothing old.
  bool wipe = false;
  EventSink events;                           // "write"/"verify" progress (subject = target path), "note"s
  const std::atomic<bool>* cancel = nullptr;  // set (e.g. from SIGINT) to stop every card
  SafetyOptions safety;
  SystemRoots roots;
  std::uint32_t chunk_bytes = 4u << 20;  // write/verify piece; a multiple of 4096
  unsigned max_parallel = 0;             // flash_all: cards written at once (0: all; 1: one after another)
};

struct FlashResult {
  std::string target;
  std::string identity;
  std::uint64_t bytes_written = 0;
  double seconds = 0;
  bool verified = false;
  // Block devices with verify: test blocks written across the card's reported
  // size read back (udev/capacity_probe.hpp); `capacity_probes` of them.
  bool capacity_checked = false;
  bool wiped = false;  // the whole card was erased first (FlashOptions::wipe)
  std::size_t capacity_probes = 0;
  bool cancelled = false;
  // The target was opened for writing: from then on its old first MiB may be
  // gone, even when no byte of the image was written yet (bytes_written == 0).
  bool changed = false;
  std::string error;  // empty on success
  Errc error_code = Errc::internal;
  bool ok() const noexcept { return error.empty(); }
};

// Writes one card; never throws for card failures (they land in FlashResult).
FlashResult flash_one(const FlashJob& job, const FlashOptions& opts);

// One worker thread per job (at most opts.max_parallel at once, the others wait
// in job order); results in job order. One failing card never stops the others.
// The same target twice in `jobs` fails the later job. After a cancel, cards not
// started yet are not touched (cancelled, "was not changed").
std::vector<FlashResult> flash_all(const std::vector<FlashJob>& jobs, const FlashOptions& opts);

// Reads every mapped range of `target` back past the page cache and compares it
// with the image; throws Errc::verify naming the first differing byte offset.
void verify_target(const std::string& target, const FlashSource& source, const EventSink& events = {});

}  // namespace rpi::udev
