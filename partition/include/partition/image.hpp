// Builds a bootable Raspberry Pi image from an Alpine RPi tarball: an MBR with
// one FAT partition, the tarball's files streamed straight into their clusters,
// the tarball's own apkovl dropped and the given one written at the FAT root.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "partition/block_map.hpp"
#include "partition/fat.hpp"
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
  EventSink events;                     // "build" progress and "note" events
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
  std::vector<std::string> dropped;  // tarball members left out (old apkovls)
  std::string size_reason;           // how the image size was chosen
};

// The partition and FAT geometry an image of `image_size` bytes gets.
FatGeometry image_geometry(std::uint64_t image_size, const std::string& label);

// The automatic image size for `content_bytes` of files: see README "Image size".
std::uint64_t default_image_size(std::uint64_t content_bytes);

// Reads the tarball (a .tar.gz file), writes `output` (created 0600: it may hold
// secrets) and `output`.bmap, all-or-nothing. Throws rpi::Error naming the entry.
ImageResult build_image(const std::filesystem::path& tarball, const std::filesystem::path& output,
                        const ImageOptions& options);

// Several images from one pass over the tarball (a batch of cards with their
// own identities decompresses it once). Progress goes to the first job's
// events. All-or-nothing for the whole batch.
struct ImageJob {
  std::filesystem::path output;
  ImageOptions options;
};
std::vector<ImageResult> build_images(const std::filesystem::path& tarball, const std::vector<ImageJob>& jobs);

}  // namespace rpi::partition
