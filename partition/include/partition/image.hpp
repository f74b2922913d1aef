// Builds a bootable Raspberry Pi image from an Alpine RPi tarball: an MBR with
// one FAT partition, the tarball's files streamed straight into their clusters,
// the tarball's own apkovl dropped and the given one written at the FAT root.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "partition/apk_keymaps.hpp"
#include "partition/block_map.hpp"
#include "partition/fat.hpp"
#include "rpi/error.hpp"
#include "rpi/events.hpp"

namespace rpi::partition {

inline constexpr std::uint64_t kPartitionStart = 8ull << 20;  // 8 MiB (LBA 16384)
inline constexpr std::uint64_t kSizeAlign = 4ull << 20;       // partition sizes are multiples of 4 MiB

// A file placed at the FAT root after the tarball (replacing one of the same name).
struct ExtraFile {
  std::string name;  // root-level file name, e.g. "kiosk.apkovl.tar.gz", "usercfg.txt"
  std::string data;
};

struct ImageOptions {
  std::uint64_t image_size = 0;  // bytes; 0 = automatic (content plus headroom)
  // Where a given image_size came from: what the error asks the user to
  // change when the files do not fit, and what kind of error that is.
  enum class SizeFrom { option, spec, card };
  SizeFrom size_from = SizeFrom::option;
  std::string label = "ALPINE";
  std::optional<std::uint32_t> disk_id;           // MBR disk identifier; default derived from the input
  std::optional<std::uint32_t> volume_id;         // FAT serial; default derived from the input
  std::optional<std::int64_t> source_date_epoch;  // clamp for every timestamp
  bool force = false;                             // accept tarballs that lack the Alpine boot files
  // Root-level files of the tarball whose content is rewritten on the way
  // (e.g. "cmdline.txt"): called with the original bytes, returns the new ones.
  std::map<std::string, std::function<std::string(const std::string&)>> edits;
  std::vector<ExtraFile> extra_files;   // written at the root, in this order
  std::vector<std::string> extra_dirs;  // empty directories created at the root (e.g. "cache" for apk)
  // Bytes the Pi will add to the volume (the .apk files of an apk cache on the
  // card): the automatic size counts them as content. Not used with image_size.
  std::uint64_t reserve_bytes = 0;
  EventSink events;  // "build" progress and "note" events
  // When set (by a signal handler), the build stops at the next block of the
  // tarball and throws rpi::Cancelled; no output is left (the first job's flag
  // counts for a batch).
  const std::atomic<bool>* cancel = nullptr;
  // When set, called with the keymaps of the tarball's kbd-bkeymaps once the
  // tarball is read, before any output is made (not when they are unknown):
  // what it throws stops the build, and no output is left.
  std::function<void(const BootKeymaps&)> check_keymaps;
};

struct ImageResult {
  std::filesystem::path image;  // the committed image file
  std::filesystem::path bmap;   // its block map, "<image>.bmap"
  std::uint64_t image_size = 0;
  std::uint32_t disk_id = 0;
  FatGeometry geometry;
  BlockMap map;
  std::uint64_t files = 0;           // regular files written
  std::uint64_t directories = 0;     // directories created
  std::uint64_t content_bytes = 0;   // bytes of file data
  std::uint64_t free_bytes = 0;      // what further files may take on the volume (the Pi's apk cache, lbu)
  std::vector<std::string> dropped;  // tarball members left out (old apkovls)
  // The packages of the card's boot repository (apks/<arch>/NAME-VER-rN.apk):
  // what Alpine's initramfs can install without network. Empty: none there.
  std::vector<std::string> boot_packages;
  // The keymaps of its kbd-bkeymaps package (BootKeymaps::apk "": none there).
  BootKeymaps keymaps;
  std::string size_reason;  // how the image size was chosen
};

// The partition and FAT geometry an image of `image_size` bytes gets.
FatGeometry image_geometry(std::uint64_t image_size, const std::string& label);

// The automatic image size for `content_bytes` of files: see README "Image size".
std::uint64_t default_image_size(std::uint64_t content_bytes);

// The smallest image this tool makes (8 MiB before the partition, then the
// smallest FAT16 volume), and the smallest that holds `content_bytes` of files.
std::uint64_t min_image_size();
std::uint64_t min_image_size_for(std::uint64_t content_bytes);

// The largest image this tool makes: 8 MiB before the partition, then a FAT
// partition of at most 2^32 - 1 sectors (2 TiB).
std::uint64_t max_image_size();

// What to change when the image size `options` got does not work, and what a
// problem with it is (Errc): "--size" (usage), "[boot] size" (spec) or the
// card's size (device; [boot] size = "max"). `to` names the size to use.
std::string size_fix(const ImageOptions& options, const std::string& to);
Errc size_errc(const ImageOptions& options);

// What build_images makes of `options` before it reads a byte of the tarball
// (and what --dry-run shows): the label as stored, the image size as built and
// why, the geometry and how many bytes of files it holds. `tarball_content` is
// the estimated size of the tarball's files; without it an automatic size stays
// unknown (image_size 0). Throws what build_images would for the same options.
struct ImagePlan {
  std::string label;
  std::uint64_t image_size = 0;
  std::string size_reason;
  FatGeometry geometry;
  std::uint64_t capacity = 0;
};
ImagePlan plan_image(const ImageOptions& options, std::optional<std::uint64_t> tarball_content);
// The size of the files in a .tar.gz as its gzip trailer states it (or twice
// the file's size when the trailer is implausible); throws when unreadable or
// not a regular file, as build_images does.
std::uint64_t tarball_content_estimate(const std::filesystem::path& tarball);

// Reads the tarball (a .tar.gz file), writes `output` (created 0600: it may hold
// secrets) and `output`.bmap, all-or-nothing. Throws rpi::Error naming the entry.
ImageResult build_image(const std::filesystem::path& tarball, const std::filesystem::path& output,
                        const ImageOptions& options);

// Several images from one pass over the tarball (a batch of cards with their
// own identities decompresses it once). Progress goes to the first job's
// events. All-or-nothing for the whole batch. `before_commit`, when given, runs
// once every image and .bmap is complete under its temporary name, before any
// replaces its target: if it throws, no output is touched (a caller's own file
// that must go with the images, such as a known_hosts file, is prepared there).
struct ImageJob {
  std::filesystem::path output;
  ImageOptions options;
};
std::vector<ImageResult> build_images(const std::filesystem::path& tarball, const std::vector<ImageJob>& jobs,
                                      const std::function<void()>& before_commit = {});

}  // namespace rpi::partition
