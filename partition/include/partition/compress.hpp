// Compressed image files (pi.img.xz, .gz, .zst, .bz2) for sharing: the raw
// image streamed through one compressor, the same bytes for the same image.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "rpi/events.hpp"

namespace rpi::partition {

enum class Compression { none, gzip, xz, zstd, bzip2 };

// The compression an image file's name asks for: .gz, .xz, .zst or .bz2, in
// lower case (the only spelling bmaptool and the command-line tools take for
// compressed); none for any other name.
Compression compression_for(const std::filesystem::path& file);
// The compression whose magic `head` (a file's first bytes) starts with:
// what the data is, whatever its name (none: not compressed, or not by these).
Compression compression_of(std::string_view head) noexcept;

// "gzip", "xz", "zstd" or "bzip2" ("" for none): also the command-line tool.
std::string compression_name(Compression c);
// The file name extension that asks for `c`: ".gz", ".xz", ".zst" or ".bz2" ("" for none).
std::string compression_extension(Compression c);
// How this tool compresses, in words: "xz (level 6, 2 threads)".
std::string compression_settings(Compression c);

struct CompressOptions {
  EventSink events;     // "compress" progress: bytes of the image read so far, of its size
  std::string subject;  // what the progress events name (the compressed file)
  // When set (by a signal handler), compression stops at the next block and
  // throws rpi::Cancelled; the caller removes what was written.
  const std::atomic<bool>* cancel = nullptr;
};

// Streams the first `size` bytes of the image `in_fd` (holes read as zeros) as
// one compressed stream of kind `c` to `out_fd` (at its current position) and
// returns how many bytes it wrote there. The same image gives the same bytes:
// no file name or time in the stream, a fixed level and (xz) thread count.
// Throws rpi::Error naming `in_name` or `out_name` (Errc::io when reading or
// writing fails, e.g. the disk is full). After a throw (or rpi::Cancelled)
// nothing more is written to `out_fd`. After an error the stream is finished
// into nothing (what the encoder holds is compressed and dropped: xz, up to
// two 24 MiB blocks), so that the encoder is freed, xz's worker threads
// joined, before it returns. A cancel returns at once instead: libarchive
// then keeps the encoder (and xz's idle threads) until the process ends, as
// a cancelled run does right after.
std::uint64_t compress_image(int in_fd, const std::string& in_name, std::uint64_t size, int out_fd,
                             const std::string& out_name, Compression c, const CompressOptions& options = {});

}  // namespace rpi::partition
