// Compressed image files: libarchive's "raw" format (one stream, no archive
// around it) through its gzip, xz, zstd or bzip2 filter.
#include "partition/compress.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <memory>
#include <vector>

#include "rpi/error.hpp"
#include "rpi/fd.hpp"

namespace rpi::partition {

namespace {

// Progress: at most one event per 8 MiB and per 200 ms (a fast compressor
// passes 8 MiB hundreds of times a second), then the final one.
constexpr std::uint64_t kProgressStep = 8ull << 20;
constexpr std::chrono::milliseconds kProgressInterval{200};
constexpr std::size_t kChunk = 1 << 20;
// xz: the default level (8 MiB dictionary), and a fixed thread count: the
// multi-threaded encoder cuts the stream into 24 MiB blocks whatever the count,
// but one thread would use the single-threaded encoder and give other bytes.
// A libarchive built without liblzma's multi-threaded encoder
// (HAVE_LZMA_STREAM_ENCODER_MT) takes the "threads" option all the same and
// uses the single-threaded one: a valid .xz, in one block, other bytes (hence
// "the same bytes with the same library versions"); a liblzma that cannot start
// its threads fails archive_write_open, which is an error here, not a fallback.
constexpr const char* kXzLevel = "6";
constexpr const char* kXzThreads = "2";

struct ArchiveWriteFree {
  void operator()(archive* a) const { archive_write_free(a); }
};
using ArchiveWriter = std::unique_ptr<archive, ArchiveWriteFree>;

struct ArchiveEntryFree {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};
using ArchiveEntry = std::unique_ptr<archive_entry, ArchiveEntryFree>;

// Where libarchive's compressed blocks go. A C callback must not throw: the
// failure is kept here and thrown once libarchive has returned. `discard`:
// the blocks are accepted and dropped (Discarding).
struct Output {
  int fd = -1;
  int error = 0;  // errno of the first failed write
  std::uint64_t written = 0;
  bool discard = false;
};

// Ends a writer whose stream was not finished (an error): the output is
// switched to discard mode first, then the stream is closed, so libarchive
// finishes it into nothing, and not a byte more reaches out_fd. Closing is
// what ends the encoder (libarchive's gzip, xz and bzip2 filters end their
// streams, lzma_end included, only in close; archive_write_free skips the
// close of a writer in ARCHIVE_STATE_FATAL): its memory is freed and xz's
// worker threads are joined. It costs the compression of what the encoder
// holds (xz: the blocks under way, up to 24 MiB of input each, seconds).
// A cancel does not wait for that (abandon): the user asked to stop now, and
// the run ends, which frees what libarchive keeps.
class Discarding {
 public:
  Discarding(archive* a, Output& out) : a_(a), out_(out) {}
  ~Discarding() {
    if (!a_) return;
    out_.discard = true;
    if (abandoned_)
      archive_write_fail(a_);
    else
      archive_write_close(a_);  // its result: the failure thrown already says what went wrong
  }
  Discarding(const Discarding&) = delete;
  Discarding& operator=(const Discarding&) = delete;
  void finished() { a_ = nullptr; }
  void abandon() { abandoned_ = true; }

 private:
  archive* a_;
  Output& out_;
  bool abandoned_ = false;
};

la_ssize_t write_cb(archive*, void* client, const void* buf, std::size_t len) {
  Output& out = *static_cast<Output*>(client);
  if (out.discard) return static_cast<la_ssize_t>(len);
  const char* p = static_cast<const char*>(buf);
  std::size_t left = len;
  while (left > 0) {
    const ssize_t n = ::write(out.fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      out.error = n < 0 ? errno : EIO;
      return -1;
    }
    p += n;
    left -= static_cast<std::size_t>(n);
    out.written += static_cast<std::uint64_t>(n);
  }
  return static_cast<la_ssize_t>(len);
}

std::string archive_message(archive* a) {
  const char* m = archive_error_string(a);
  return m ? m : "libarchive gives no reason";
}

}  // namespace

Compression compression_for(const std::filesystem::path& file) {
  const std::string name = file.filename().string();
  for (Compression c : {Compression::gzip, Compression::xz, Compression::zstd, Compression::bzip2})
    if (name.ends_with(compression_extension(c))) return c;
  return Compression::none;
}

Compression compression_of(std::string_view head) noexcept {
  if (head.starts_with("\x1f\x8b")) return Compression::gzip;
  if (head.starts_with(std::string_view("\xfd"
                                        "7zXZ\0",
                                        6)))
    return Compression::xz;
  if (head.starts_with("\x28\xb5\x2f\xfd")) return Compression::zstd;
  if (head.size() >= 4 && head.starts_with("BZh") && head[3] >= '1' && head[3] <= '9') return Compression::bzip2;
  return Compression::none;
}

std::string compression_extension(Compression c) {
  switch (c) {
    case Compression::gzip:
      return ".gz";
    case Compression::xz:
      return ".xz";
    case Compression::zstd:
      return ".zst";
    case Compression::bzip2:
      return ".bz2";
    case Compression::none:
      break;
  }
  return "";
}

std::string compression_name(Compression c) {
  switch (c) {
    case Compression::gzip:
      return "gzip";
    case Compression::xz:
      return "xz";
    case Compression::zstd:
      return "zstd";
    case Compression::bzip2:
      return "bzip2";
    case Compression::none:
      break;
  }
  return "";
}

std::string compression_settings(Compression c) {
  switch (c) {
    case Compression::gzip:
      return "gzip (level 6, no name or time in the header)";
    case Compression::xz:
      return std::string("xz (level ") + kXzLevel + ", " + kXzThreads + " threads)";
    case Compression::zstd:
      return "zstd (level 3)";
    case Compression::bzip2:
      return "bzip2 (level 9)";
    case Compression::none:
      break;
  }
  return "";
}

std::uint64_t compress_image(int in_fd, const std::string& in_name, std::uint64_t size, int out_fd,
                             const std::string& out_name, Compression c, const CompressOptions& options) {
  if (c == Compression::none) throw Error(Errc::internal, "compress_image: no compression asked for " + out_name);
  // Declared before the writer, so that they outlive it: closing or freeing a
  // writer that is still open calls write_cb with `out`, and its encoder may
  // still read the last block it was given from `buf`.
  Output out{out_fd};
  std::vector<char> buf(kChunk);
  ArchiveWriter a(archive_write_new());
  if (!a) throw Error(Errc::internal, "libarchive: out of memory");
  archive* w = a.get();
  auto check = [&](int rc, const std::string& what) {
    if (rc != ARCHIVE_OK)
      throw Error(Errc::internal, "cannot compress " + out_name + " with " + compression_name(c) + " (" + what +
                                      "): " + archive_message(w));
  };
  switch (c) {
    case Compression::gzip:
      check(archive_write_add_filter_gzip(w), "gzip filter");
      // Neither a time nor a file name in the header: the same image, the same file.
      check(archive_write_set_filter_option(w, "gzip", "timestamp", nullptr), "gzip options");
      break;
    case Compression::xz:
      check(archive_write_add_filter_xz(w), "xz filter");
      check(archive_write_set_filter_option(w, "xz", "compression-level", kXzLevel), "xz level");
      check(archive_write_set_filter_option(w, "xz", "threads", kXzThreads), "xz threads");
      break;
    case Compression::zstd:
      check(archive_write_add_filter_zstd(w), "zstd filter");
      break;
    case Compression::bzip2:
      check(archive_write_add_filter_bzip2(w), "bzip2 filter");
      break;
    case Compression::none:
      break;
  }
  check(archive_write_set_format_raw(w), "raw format");
  // Unblocked: no padding after the compressed stream (the tools would call it trailing garbage).
  check(archive_write_set_bytes_per_block(w, 0), "block size");
  check(archive_write_set_bytes_in_last_block(w, 1), "block size");
  auto failed = [&](const std::string& what) {
    if (out.error) throw_errno("cannot write " + out_name, out.error);
    throw Error(Errc::io, "cannot compress " + out_name + " (" + what + "): " + archive_message(w));
  };
  // From here on, a throw finishes the stream into nothing (see Discarding).
  Discarding discarding(w, out);
  if (archive_write_open(w, &out, nullptr, write_cb, nullptr) != ARCHIVE_OK) failed("open");
  ArchiveEntry e(archive_entry_new());
  if (!e) throw Error(Errc::internal, "libarchive: out of memory");
  archive_entry_set_pathname(e.get(), "image");
  archive_entry_set_filetype(e.get(), AE_IFREG);
  archive_entry_set_perm(e.get(), 0600);
  archive_entry_set_size(e.get(), static_cast<la_int64_t>(size));
  if (archive_write_header(w, e.get()) != ARCHIVE_OK) failed("header");

  std::uint64_t done = 0, next_progress = 0;
  auto next_time = std::chrono::steady_clock::time_point::min();
  while (done < size) {
    if (cancelled(options.cancel)) {
      discarding.abandon();
      throw Cancelled{};
    }
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), size - done));
    const std::size_t got = pread_full(in_fd, buf.data(), want, done, "cannot read " + in_name);
    if (got < want)
      throw Error(Errc::io, "cannot read " + in_name + ": it ends after " + std::to_string(done + got) + " of " +
                                std::to_string(size) + " bytes");
    const la_ssize_t n = archive_write_data(w, buf.data(), got);
    if (n < 0 || static_cast<std::size_t>(n) != got) failed("data");
    done += got;
    if (done >= next_progress && done < size && options.events) {
      if (const auto now = std::chrono::steady_clock::now(); now >= next_time) {
        next_progress = done + kProgressStep;
        next_time = now + kProgressInterval;
        emit(options.events, Event{"compress", options.subject, done, size, ""});
      }
    }
  }
  if (archive_write_close(w) != ARCHIVE_OK) failed("end of stream");
  discarding.finished();
  emit(options.events, Event{"compress", options.subject, size, size, ""});
  return out.written;
}

}  // namespace rpi::partition
