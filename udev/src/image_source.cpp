// Compressed images for --image: gzip, xz, zstd and bzip2, told by their first
// bytes, decompressed once into a sparse private file that the writer then
// reads like any image (it needs random access: cards in parallel, verify).
// gzip goes through zlib, which checks every member's CRC-32 and length (the
// libarchive gzip filter does not); xz, zstd and bzip2 through libarchive's
// raw format, whose decoders check their own CRCs and checksums.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "partition/compress.hpp"
#include "rpi/archive_reader.hpp"
#include "rpi/digest.hpp"
#include "rpi/fd.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"
#include "udev/flash.hpp"

namespace fs = std::filesystem;

namespace rpi::udev {

namespace {

constexpr std::size_t kBlock = partition::BlockMap::kBlockSize;
constexpr std::size_t kChunk = 4u << 20;                  // decompressed bytes handled at a time
constexpr std::uint64_t kMaxIndex = 64u << 20;            // an xz index larger than this is not read for a plan
constexpr std::chrono::milliseconds kProgressEvery{200};  // "decompress" events: at most one per this

std::uint64_t le(const unsigned char* p, int n) {
  std::uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

std::uint64_t file_size_of(int fd) {
  const off_t end = ::lseek(fd, 0, SEEK_END);
  return end > 0 ? static_cast<std::uint64_t>(end) : 0;
}

// Exactly `n` bytes at `offset`, or false when the file ends first.
bool read_at(int fd, unsigned char* buf, std::size_t n, std::uint64_t offset, const std::string& name) {
  return pread_full(fd, buf, n, offset, "cannot read " + name) == n;
}

std::uint32_t crc32_of(const unsigned char* p, std::size_t n) {
  return static_cast<std::uint32_t>(::crc32(::crc32(0L, Z_NULL, 0), p, static_cast<uInt>(n)));
}

// One xz multibyte integer (at most 9 bytes, no needless trailing zero byte).
bool read_vli(const unsigned char*& p, const unsigned char* end, std::uint64_t& v) {
  v = 0;
  for (int i = 0; i < 9 && p < end; ++i) {
    const unsigned char b = *p++;
    v |= static_cast<std::uint64_t>(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) return !(b == 0 && i > 0);
  }
  return false;
}

// The uncompressed size an xz file records: the sum over its streams (read
// from the end: footer, index, header) of the index's uncompressed sizes.
// Throws Errc::input when the file does not end with a stream footer (it was
// cut short) or a footer, index or header fails its CRC-32 or does not fit;
// nothing when an index is too large to read for this.
std::optional<std::uint64_t> xz_size(int fd, std::uint64_t size, const std::string& name) {
  const auto bad = [&](const std::string& what) {
    return Error(Errc::input, name + " is truncated or damaged: " + what + "; download it again (xz -t " +
                                  shell_word(name) + " tests it)");
  };
  if (size % 4 != 0)
    throw bad("an xz file is a multiple of 4 bytes long and ends with a stream footer, and it has " +
              std::to_string(size) + " bytes");
  std::uint64_t pos = size, total = 0;
  while (pos > 0) {
    unsigned char f[12];
    if (!read_at(fd, f, 4, pos - 4, name)) throw bad("it cannot be read to its end");
    if (le(f, 4) == 0) {  // stream padding (after a stream: a footer never ends in zeros)
      pos -= 4;
      if (pos == 0) throw bad("it holds no xz stream");
      continue;
    }
    if (pos < 24 || !read_at(fd, f, 12, pos - 12, name) || f[10] != 'Y' || f[11] != 'Z')
      throw bad("it does not end with an xz stream footer (at byte " + std::to_string(pos) + ")");
    if (crc32_of(f + 4, 6) != le(f, 4))
      throw bad("the xz stream footer ending at byte " + std::to_string(pos) + " fails its CRC-32");
    const std::uint64_t index_size = (le(f + 4, 4) + 1) * 4;
    if (index_size > pos - 24) throw bad("the xz index before byte " + std::to_string(pos - 12) + " does not fit");
    if (index_size > kMaxIndex) return std::nullopt;
    const std::uint64_t index_at = pos - 12 - index_size;
    std::vector<unsigned char> idx(index_size);
    if (!read_at(fd, idx.data(), idx.size(), index_at, name) ||
        crc32_of(idx.data(), idx.size() - 4) != le(idx.data() + idx.size() - 4, 4))
      throw bad("the xz index at byte " + std::to_string(index_at) + " fails its CRC-32");
    const unsigned char* p = idx.data();
    const unsigned char* end = idx.data() + idx.size() - 4;
    std::uint64_t records = 0, blocks = 0;
    if (*p++ != 0 || !read_vli(p, end, records))
      throw bad("the xz index at byte " + std::to_string(index_at) + " is not one");
    for (std::uint64_t r = 0; r < records; ++r) {
      std::uint64_t unpadded = 0, uncompressed = 0;
      if (!read_vli(p, end, unpadded) || !read_vli(p, end, uncompressed) || unpadded == 0 ||
          unpadded > (std::numeric_limits<std::uint64_t>::max() >> 2))
        throw bad("the xz index at byte " + std::to_string(index_at) + " has a bad record");
      blocks += (unpadded + 3) & ~std::uint64_t{3};
      total += uncompressed;
      if (blocks > pos || total < uncompressed)
        throw bad("the xz index at byte " + std::to_string(index_at) + " records more than the file holds");
    }
    while ((p - idx.data()) % 4 != 0 && p < end)
      if (*p++ != 0) throw bad("the xz index at byte " + std::to_string(index_at) + " has bad padding");
    if (p != end) throw bad("the xz index at byte " + std::to_string(index_at) + " has bad padding");
    if (index_at < blocks + 12) throw bad("the xz blocks before byte " + std::to_string(index_at) + " do not fit");
    const std::uint64_t start = index_at - blocks - 12;
    unsigned char h[12];
    if (!read_at(fd, h, 12, start, name) ||
        std::memcmp(h,
                    "\xfd"
                    "7zXZ\0",
                    6) != 0 ||
        crc32_of(h + 6, 2) != le(h + 8, 4) || h[6] != f[8] || h[7] != f[9])
      throw bad("no xz stream header where its index says the stream begins (byte " + std::to_string(start) + ")");
    pos = start;
  }
  return total;
}

// The uncompressed size zstd frames record (Frame_Content_Size, which the
// zstd tool writes), summed over the frames; nothing when a frame does not
// record it or the frames do not add up to the file (the decoder then says
// what is wrong). Skippable frames count nothing.
std::optional<std::uint64_t> zstd_size(int fd, std::uint64_t size, const std::string& name) {
  std::uint64_t pos = 0, total = 0;
  unsigned char b[18];
  while (pos < size) {
    if (!read_at(fd, b, 8, pos, name)) return std::nullopt;
    const std::uint64_t magic = le(b, 4);
    if ((magic & 0xfffffff0u) == 0x184d2a50u) {  // a skippable frame
      pos += 8 + le(b + 4, 4);
      continue;
    }
    if (magic != 0xfd2fb528u) return std::nullopt;
    const unsigned fhd = b[4];
    if (fhd & 0x08) return std::nullopt;  // the reserved bit
    const bool single = fhd & 0x20;
    const unsigned did_bytes[] = {0, 1, 2, 4};
    const unsigned fcs_flag = fhd >> 6;
    const unsigned fcs_bytes = fcs_flag == 0 ? (single ? 1 : 0) : 1u << fcs_flag;
    if (fcs_bytes == 0) return std::nullopt;  // this frame does not say
    const std::uint64_t fcs_at = pos + 5 + (single ? 0 : 1) + did_bytes[fhd & 3];
    if (!read_at(fd, b, fcs_bytes, fcs_at, name)) return std::nullopt;
    total += le(b, static_cast<int>(fcs_bytes)) + (fcs_bytes == 2 ? 256 : 0);
    std::uint64_t p = fcs_at + fcs_bytes;
    for (bool last = false; !last;) {
      if (!read_at(fd, b, 3, p, name)) return std::nullopt;
      const std::uint64_t header = le(b, 3);
      last = header & 1;
      const unsigned type = (header >> 1) & 3;
      if (type == 3) return std::nullopt;
      p += 3 + (type == 1 ? 1 : header >> 3);
      if (p > size) return std::nullopt;
    }
    pos = p + ((fhd & 0x04) ? 4 : 0);  // the content checksum
  }
  if (pos != size) return std::nullopt;
  return total;
}

// A zlib inflate stream that reads gzip (every member's CRC-32 and length checked).
class Inflater {
 public:
  Inflater() {
    if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK) throw Error(Errc::internal, "zlib initialisation failed");
  }
  ~Inflater() { inflateEnd(&zs_); }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;
  z_stream* get() noexcept { return &zs_; }
  const z_stream* get() const noexcept { return &zs_; }

 private:
  z_stream zs_{};
};

// Decompressed bytes, a piece at a time.
class Decoder {
 public:
  Decoder(std::string name, std::string format, std::uint64_t file_size)
      : name_(std::move(name)), format_(std::move(format)), file_size_(file_size) {}
  virtual ~Decoder() = default;
  // Up to `cap` bytes into `out`; 0 at the end of the data. Throws Errc::input.
  virtual std::size_t read(unsigned char* out, std::size_t cap) = 0;
  // Bytes of the compressed file read so far.
  virtual std::uint64_t consumed() const = 0;
  std::uint64_t produced = 0;  // decompressed bytes returned so far

 protected:
  Error damaged(const std::string& reason) const {
    const std::uint64_t at = std::min(consumed(), file_size_);
    return Error(Errc::input, name_ + " cannot be decompressed: " + reason + " (" + format_ + " data, near byte " +
                                  std::to_string(at) + " of its " + std::to_string(file_size_) + ", after " +
                                  std::to_string(produced) +
                                  " bytes of the image): it is damaged or truncated; download it again");
  }
  Error truncated() const {
    return Error(Errc::input, name_ + " is truncated: its " + format_ + " data ends at byte " +
                                  std::to_string(file_size_) + " before the compressed stream does (after " +
                                  std::to_string(produced) + " bytes of the image); download it again");
  }

  std::string name_, format_;
  std::uint64_t file_size_;
};

class GzipDecoder : public Decoder {
 public:
  GzipDecoder(Fd fd, const std::string& name, std::uint64_t file_size)
      : Decoder(name, "gzip", file_size), fd_(std::move(fd)), in_(1u << 20) {}

  std::size_t read(unsigned char* out, std::size_t cap) override {
    z_stream* zs = z_.get();
    zs->next_out = out;
    zs->avail_out = static_cast<uInt>(cap);
    while (!done_ && zs->avail_out == cap) {
      if (zs->avail_in == 0 && !fill()) throw truncated();
      const int rc = inflate(zs, Z_NO_FLUSH);
      if (rc == Z_STREAM_END) {
        next_member();
        continue;
      }
      if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT) {
        const std::string msg = zs->msg ? zs->msg : "corrupt data";
        throw damaged(msg == "incorrect data check"     ? "the CRC-32 of a gzip member does not match its data"
                      : msg == "incorrect length check" ? "the length a gzip member records does not match its data"
                                                        : "gzip: " + msg);
      }
      if (rc == Z_MEM_ERROR) throw Error(Errc::internal, "zlib: out of memory");
      // Z_OK, or Z_BUF_ERROR: more input needed.
    }
    const std::size_t n = cap - zs->avail_out;
    produced += n;
    return n;
  }
  std::uint64_t consumed() const override { return read_ - z_.get()->avail_in; }

 private:
  bool fill() {
    if (eof_) return false;
    ssize_t n;
    do n = ::read(fd_.get(), in_.data(), in_.size());
    while (n < 0 && errno == EINTR);
    if (n < 0) throw_errno("cannot read " + name_);
    if (n == 0) {
      eof_ = true;
      return false;
    }
    z_.get()->next_in = in_.data();
    z_.get()->avail_in = static_cast<uInt>(n);
    read_ += static_cast<std::uint64_t>(n);
    return true;
  }

  // After a member: another one (as `gzip -d` reads them), zeros to the end
  // (padding), or the end.
  void next_member() {
    z_stream* zs = z_.get();
    while (zs->avail_in == 0 && fill()) {
    }
    if (zs->avail_in == 0) {
      done_ = true;
      return;
    }
    if (zs->next_in[0] == 0x1f) {
      inflateReset(zs);
      return;
    }
    for (;;) {
      if (std::any_of(zs->next_in, zs->next_in + zs->avail_in, [](unsigned char c) { return c != 0; }))
        throw Error(Errc::input, name_ + " has data after its gzip stream (at byte " + std::to_string(consumed()) +
                                     ") that is not gzip: it is damaged; download it again");
      zs->avail_in = 0;
      if (!fill()) break;
    }
    done_ = true;
  }

  Fd fd_;
  Inflater z_;
  std::vector<unsigned char> in_;
  std::uint64_t read_ = 0;
  bool eof_ = false, done_ = false;
};

class ArchiveDecoder : public Decoder {
 public:
  // Reads `fd` (the file open_decoder opened, measured and advised) from where it is.
  ArchiveDecoder(Fd fd, const std::string& name, const std::string& format, std::uint64_t file_size)
      : Decoder(name, format, file_size), fd_(std::move(fd)), a_(archive_read_new()) {
    archive* a = a_.get();
    if (!a) throw Error(Errc::internal, "libarchive: out of memory");
    // Only the filter the magic named: nothing else is tried on the data.
    const int rc = format == "xz"     ? archive_read_support_filter_xz(a)
                   : format == "zstd" ? archive_read_support_filter_zstd(a)
                                      : archive_read_support_filter_bzip2(a);
    if (rc < ARCHIVE_WARN) throw Error(Errc::internal, "libarchive cannot decompress " + format + ": " + message());
    archive_read_support_format_raw(a);
    // Its first block is read and decoded here already.
    if (archive_read_open_fd(a, fd_.get(), 1 << 20) != ARCHIVE_OK) throw damaged(message());
    archive_entry* e = nullptr;
    const int h = archive_read_next_header(a, &e);
    if (h == ARCHIVE_EOF) {
      done_ = true;
      return;
    }
    if (h < ARCHIVE_WARN) throw damaged(message());
    if (archive_filter_count(a) < 2) throw Error(Errc::input, name + " is not " + format + "-compressed");
  }

  std::size_t read(unsigned char* out, std::size_t cap) override {
    if (done_) return 0;
    const la_ssize_t n = archive_read_data(a_.get(), out, cap);
    if (n < 0) throw damaged(message());
    if (n == 0) done_ = true;
    produced += static_cast<std::uint64_t>(n);
    return static_cast<std::size_t>(n);
  }
  std::uint64_t consumed() const override {
    const la_int64_t n = archive_filter_bytes(a_.get(), -1);
    return n > 0 ? static_cast<std::uint64_t>(n) : 0;
  }

 private:
  std::string message() const {
    const char* m = archive_error_string(a_.get());
    return m ? m : "unreadable (libarchive gives no reason)";
  }

  Fd fd_;  // libarchive reads it and leaves it open: closed after a_ is freed
  ArchiveReader a_;
  bool done_ = false;
};

std::unique_ptr<Decoder> open_decoder(const fs::path& image, const std::string& compression,
                                      std::uint64_t* file_size = nullptr) {
  Fd fd = open_or_throw(image.string(), O_RDONLY | O_CLOEXEC);
  const std::uint64_t size = file_size_of(fd.get());
  (void)::lseek(fd.get(), 0, SEEK_SET);
  (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  if (file_size) *file_size = size;
  if (compression == "gzip") return std::make_unique<GzipDecoder>(std::move(fd), image.string(), size);
  if (compression == "xz" || compression == "zstd" || compression == "bzip2")
    return std::make_unique<ArchiveDecoder>(std::move(fd), image.string(), compression, size);
  throw Error(Errc::input, image.string() + " is not compressed with gzip, xz, zstd or bzip2");
}

bool all_zero(const unsigned char* p, std::size_t n) {
  return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

// The ranges of a .bmap compared with the data as it streams past: each
// range's SHA-256 once its last byte went by.
class RangeCheck {
 public:
  RangeCheck(const partition::BlockMap& map, std::string bmap, std::string image)
      : map_(map), bmap_(std::move(bmap)), image_(std::move(image)) {}

  void feed(std::uint64_t offset, const unsigned char* p, std::size_t n) {
    const auto& ext = map_.extents();
    const std::uint64_t end = offset + n;
    while (i_ < ext.size()) {
      const partition::Extent& e = ext[i_];
      if (e.sha256.empty()) {  // nothing to compare with
        ++i_;
        continue;
      }
      if (e.offset >= end) return;
      const std::uint64_t a = std::max(offset, e.offset), b = std::min(end, e.offset + e.length);
      if (!digest_) digest_.emplace(Digest::Algo::sha256);
      digest_->update(p + (a - offset), static_cast<std::size_t>(b - a));
      if (b < e.offset + e.length) return;
      const bool same = digest_->finish_hex() == e.sha256;
      digest_.reset();
      if (!same) {
        const std::uint64_t first = e.offset / kBlock, last = (e.offset + e.length - 1) / kBlock;
        throw Error(Errc::input, bmap_ + ": checksum mismatch for blocks range " + std::to_string(first) + "-" +
                                     std::to_string(last) + " (bytes " + std::to_string(e.offset) + "-" +
                                     std::to_string(e.offset + e.length - 1) + ") of " + image_ +
                                     " decompressed: it is not the image this block map was made for; use the "
                                     ".bmap that came with it, or remove the .bmap to write the whole image");
      }
      ++i_;
    }
  }

 private:
  const partition::BlockMap& map_;
  std::string bmap_, image_;
  std::size_t i_ = 0;
  std::optional<Digest> digest_;
};

Error size_mismatch(const fs::path& bmap, std::uint64_t bmap_size, const fs::path& image, const std::string& what) {
  return Error(Errc::input, bmap.string() + " describes a " + std::to_string(bmap_size) + "-byte image but " +
                                image.string() + " " + what +
                                ": it is not this image's block map; use the .bmap that came with it, or remove it "
                                "to write the whole image");
}

// The decompressed image into `fd` (at `path`): non-zero blocks written,
// zero blocks left as holes.
class SparseWriter {
 public:
  SparseWriter(int fd, std::string path, std::string folder, std::string hint, std::optional<std::uint64_t> size,
               std::string image)
      : fd_(fd),
        path_(std::move(path)),
        folder_(std::move(folder)),
        hint_(std::move(hint)),
        size_(size),
        image_(std::move(image)) {}

  // `n` bytes at `offset`, a multiple of the block size.
  void write(std::uint64_t offset, const unsigned char* p, std::size_t n) {
    std::size_t k = 0;
    while (k < n) {
      const std::size_t len = std::min(kBlock, n - k);
      if (all_zero(p + k, len)) {
        k += len;
        continue;
      }
      std::size_t run = len;  // the non-zero blocks that follow, in one write
      while (k + run < n && !all_zero(p + k + run, std::min(kBlock, n - k - run))) run += std::min(kBlock, n - k - run);
      put(offset + k, p + k, run);
      k += run;
    }
  }
  // The bytes written so far that are not all-zero blocks.
  std::uint64_t data_bytes() const noexcept { return data_; }

 private:
  void put(std::uint64_t offset, const unsigned char* p, std::size_t n) {
    data_ += n;
    while (n > 0) {
      const ssize_t w = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        const int err = errno;
        if (err == ENOSPC || err == EDQUOT)
          throw Error(Errc::io, "no space left in " + folder_ + " for the decompressed image of " + image_ + " (" +
                                    format_size(offset) + " of it written" +
                                    (size_ ? ", " + format_size(*size_) + " in all" : std::string()) +
                                    "; all-zero blocks take no room): free space on that file system" +
                                    (hint_.empty() ? "" : ", or " + hint_));
        throw_errno("cannot write the decompressed image of " + image_ + " to " + path_, err);
      }
      p += w;
      n -= static_cast<std::size_t>(w);
      offset += static_cast<std::uint64_t>(w);
    }
  }

  int fd_;
  std::string path_, folder_, hint_;
  std::optional<std::uint64_t> size_;
  std::string image_;
  std::uint64_t data_ = 0;
};

// The probe's detail (-v): "probed pi.img.xz in 0.01 s: xz, 12.3 MiB; 64 MiB
// decompressed (its xz index says); block map pi.img.xz.bmap (...)".
std::string probe_text(const std::string& name, const CompressedImage& c, const std::string& took) {
  std::string s = "probed " + name + (took.empty() ? std::string() : " in " + took) + ": " + c.compression + ", " +
                  format_size(c.file_size) + "; ";
  if (c.size)
    s += format_size(*c.size) + " decompressed (" + c.size_source() + ")";
  else if (c.gzip_isize)
    s += "its size is known once it is decompressed (a gzip file records it modulo 4 GiB: " +
         std::to_string(*c.gzip_isize) + ")";
  else
    s += "its size is known once it is decompressed (" +
         std::string(c.compression == "zstd"    ? "its zstd frames do not all record it"
                     : c.compression == "bzip2" ? "bzip2 records none"
                                                : "it records none") +
         ")";
  if (c.map)
    s += "; block map " + c.bmap.string() + " (" + format_size(c.map->image_size()) + " image, " +
         format_size(c.map->mapped_bytes()) + " mapped in " + std::to_string(c.map->extents().size()) + " ranges)";
  else
    s += "; no block map: every byte is written";
  return s;
}

}  // namespace

std::string probe_detail(const std::string& name, const CompressedImage& c) {
  return probe_text(name, c, c.probed_in);
}

ScratchFile::~ScratchFile() {
  if (!path_.empty()) ::unlink(path_.c_str());
}

std::string compression_of(std::string_view head) {
  return partition::compression_name(partition::compression_of(head));
}

std::string compression_of_file(const fs::path& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) return "";
  char head[8];
  const ssize_t n = ::pread(fd.get(), head, sizeof head, 0);
  return n > 0 ? compression_of(std::string_view(head, static_cast<std::size_t>(n))) : "";
}

std::vector<fs::path> bmap_candidates(const fs::path& image) {
  std::vector<fs::path> out;
  std::string path = image.string();
  for (;;) {
    out.push_back(path + ".bmap");
    // os.path.splitext: the last dot of the last component, leading dots not counted.
    const std::size_t slash = path.rfind('/');
    const std::size_t base = slash == std::string::npos ? 0 : slash + 1;
    const std::size_t first = path.find_first_not_of('.', base);
    const std::size_t dot = path.rfind('.');
    if (dot == std::string::npos || first == std::string::npos || dot < base || dot < first) return out;
    path.resize(dot);
  }
}

fs::path find_bmap(const fs::path& image) {
  for (const auto& candidate : bmap_candidates(image)) {
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec)) return candidate;
  }
  return {};
}

CompressedImage probe_compressed(const fs::path& image, const fs::path& bmap) {
  const Stopwatch took;
  Fd fd = open_or_throw(image.string(), O_RDONLY | O_CLOEXEC);
  CompressedImage c;
  c.file_size = file_size_of(fd.get());
  unsigned char head[8] = {};
  const std::size_t got = pread_full(fd.get(), head, sizeof head, 0, "cannot read " + image.string());
  c.compression = compression_of(std::string_view(reinterpret_cast<const char*>(head), got));
  if (c.compression.empty())
    throw Error(Errc::input, image.string() + " is not compressed with gzip, xz, zstd or bzip2");
  if (c.compression == "xz") c.size = xz_size(fd.get(), c.file_size, image.string());
  if (c.compression == "zstd") c.size = zstd_size(fd.get(), c.file_size, image.string());
  if (c.compression == "gzip" && c.file_size >= 18) {  // header 10 + trailer 8
    unsigned char t[4] = {};
    if (pread_full(fd.get(), t, sizeof t, c.file_size - 4, "cannot read " + image.string()) == sizeof t)
      c.gzip_isize = static_cast<std::uint32_t>(t[0] | t[1] << 8 | t[2] << 16 | static_cast<std::uint32_t>(t[3]) << 24);
  }
  c.bmap = bmap.empty() ? find_bmap(image) : bmap;
  if (!c.bmap.empty()) {
    c.map = partition::read_bmap(c.bmap);
    if (c.size && *c.size != c.map->image_size())
      throw size_mismatch(c.bmap, c.map->image_size(), image,
                          "holds " + std::to_string(*c.size) + " bytes decompressed (" + c.size_source() + ")");
  }
  c.probed_in = took.elapsed();
  return c;
}

std::string decompressed_head(const fs::path& image, std::size_t n) {
  std::unique_ptr<Decoder> d = open_decoder(image, compression_of_file(image));
  std::string out(n, '\0');
  std::size_t have = 0;
  while (have < n) {
    const std::size_t got = d->read(reinterpret_cast<unsigned char*>(out.data()) + have, n - have);
    if (got == 0) break;
    have += got;
  }
  out.resize(have);
  return out;
}

std::shared_ptr<const FlashSource> FlashSource::decompress(const fs::path& image, const DecompressOptions& opts) {
  std::optional<CompressedImage> own;  // probed here when the caller did not
  const CompressedImage& c = opts.probed ? *opts.probed : own.emplace(probe_compressed(image));
  const std::string name = image.string();
  const std::optional<partition::BlockMap>& bmap = c.map;
  const std::optional<std::uint64_t> expected = c.expected_size();
  const std::string too_large_end = opts.too_large.empty() && opts.max_size
                                        ? "no card it is for has more than " + format_size(*opts.max_size)
                                        : opts.too_large;
  // Where decompressing may stop: after the last mapped block, as bmaptool's
  // does, when the .bmap has a checksum for every range (each is compared as
  // it goes by) and the file records its whole size as the .bmap's (xz index,
  // zstd frames, or a gzip's size modulo 4 GiB). The rest is never written to
  // a card: mostly the free space of the image's file system, all zeros, which
  // would cost as long to decompress as the data (a 4 GiB image with 200 MiB in it).
  std::optional<std::uint64_t> stop_at;
  if (bmap && !bmap->extents().empty() &&
      std::all_of(bmap->extents().begin(), bmap->extents().end(), [](const auto& e) { return !e.sha256.empty(); }) &&
      ((c.size && *c.size == bmap->image_size()) ||
       (c.gzip_isize && *c.gzip_isize == static_cast<std::uint32_t>(bmap->image_size())))) {
    const partition::Extent& last = bmap->extents().back();
    if (last.offset + last.length < bmap->image_size()) stop_at = last.offset + last.length;
  }
  // Recorded in the file (checked with the .bmap), or the .bmap's when
  // decompressing stops at its last block: nothing is decompressed. A .bmap's
  // size alone is not taken for it otherwise: a gzip or bzip2 file shows
  // whether the .bmap is its own only as it is decompressed.
  const std::optional<std::uint64_t> known = c.size ? c.size : stop_at ? expected : std::nullopt;
  if (opts.max_size && known && *known > *opts.max_size)
    throw Error(Errc::device, name + " is larger than any card: it decompresses to " + format_size(*known) + " (" +
                                  (c.size ? c.size_source() : std::string("its .bmap says")) + "); " + too_large_end);
  if (cancelled(opts.cancel)) throw Cancelled{};
  // Not refused: what the probe found (for -v), before it is decompressed.
  emit_detail(opts.events, name, probe_detail(name, c));
  // A private file (0600, in the caller's private folder), removed with its source.
  std::string tmpl = (opts.folder / "decompressed.XXXXXX").string();
  std::vector<char> buf_name(tmpl.begin(), tmpl.end());
  buf_name.push_back('\0');
  Fd out(::mkostemp(buf_name.data(), O_CLOEXEC));
  if (!out) throw_errno("cannot create a file for the decompressed image in " + opts.folder.string());
  auto file = std::make_shared<const ScratchFile>(fs::path(buf_name.data()));
  if (::fchmod(out.get(), S_IRUSR | S_IWUSR) != 0) throw_errno("cannot make " + file->path().string() + " private");
  if (expected) {
    struct statvfs vfs {};
    if (::statvfs(opts.folder.c_str(), &vfs) == 0 &&
        static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize < *expected)
      emit(opts.events, Event{"note", name, 0, 0,
                              "only " + format_size(static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize) +
                                  " free in " + opts.folder.string() + " for " + name + ", " + format_size(*expected) +
                                  " decompressed: it fits only if enough of it is zeros (they take no room)" +
                                  (opts.full_hint.empty() ? "" : "; if it does not, " + opts.full_hint)});
  }
  std::uint64_t file_size = 0;
  const Stopwatch took;  // the decompression, for its detail
  std::unique_ptr<Decoder> dec = open_decoder(image, c.compression, &file_size);
  SparseWriter writer(out.get(), file->path().string(), opts.folder.string(), opts.full_hint, expected, name);
  std::optional<RangeCheck> ranges;
  if (bmap) ranges.emplace(*bmap, c.bmap.string(), name);
  std::vector<unsigned char> buf(kChunk);
  std::uint64_t offset = 0;  // of buf[0] in the image
  std::size_t have = 0;
  // Progress at most every kProgressEvery, and once at the end.
  auto shown_at = std::chrono::steady_clock::now();
  emit(opts.events, Event{"decompress", name, 0, file_size, ""});
  for (bool end = false; !end;) {
    if (cancelled(opts.cancel)) throw Cancelled{};
    while (have < buf.size()) {
      const std::size_t got = dec->read(buf.data() + have, buf.size() - have);
      if (got == 0) {
        end = true;
        break;
      }
      have += got;
    }
    if (bmap && offset + have > bmap->image_size())
      throw size_mismatch(c.bmap, bmap->image_size(), image, "decompresses to more");
    // Whole blocks now; the last, partial one at the end.
    const std::size_t whole = end ? have : have / kBlock * kBlock;
    if (ranges) ranges->feed(offset, buf.data(), whole);  // a .bmap of other data: said first
    // Larger than every card: stop now, before zeros make a sparse file of
    // any size or data fills the folder (the file goes with `file`).
    if (opts.max_size && offset + have > *opts.max_size)
      throw Error(Errc::device, name + " is larger than any card: stopped after " + format_size(offset + have) +
                                    " of it decompressed (" + format_size(std::min(dec->consumed(), file_size)) +
                                    " of the " + format_size(file_size) + " file read); " + too_large_end);
    writer.write(offset, buf.data(), whole);
    offset += whole;
    std::memmove(buf.data(), buf.data() + whole, have - whole);
    have -= whole;
    if (stop_at && offset >= *stop_at) end = true;  // the rest is unmapped
    if (const auto now = std::chrono::steady_clock::now(); end || now - shown_at >= kProgressEvery) {
      emit(opts.events,
           Event{"decompress", name, end ? file_size : std::min(dec->consumed(), file_size), file_size, ""});
      shown_at = now;
    }
  }
  const std::uint64_t size = stop_at && offset >= *stop_at ? bmap->image_size() : offset;
  if (size == 0) throw Error(Errc::input, name + " decompresses to nothing: it holds no disk image");
  if (bmap && size != bmap->image_size())
    throw size_mismatch(c.bmap, bmap->image_size(), image, "decompresses to " + std::to_string(size) + " bytes");
  if (::ftruncate(out.get(), static_cast<off_t>(size)) != 0)
    throw_errno("cannot set the size of the decompressed image " + file->path().string());
  const std::uint64_t bytes_in = std::min(dec->consumed(), file_size);
  const auto checksums = bmap ? std::count_if(bmap->extents().begin(), bmap->extents().end(),
                                              [](const auto& e) { return !e.sha256.empty(); })
                              : 0;
  emit_detail(
      opts.events, name,
      "decompressed " + name + " (" + c.compression + "): " +
          (bytes_in < file_size ? std::to_string(bytes_in) + " of its " + std::to_string(file_size) + " bytes"
                                : format_size(bytes_in)) +
          " read, " + format_size(offset) + " out (" + format_size(writer.data_bytes()) +
          " of it data, all-zero blocks left as holes" +
          (size > offset ? "; stopped after the .bmap's last mapped block: the " + format_size(size - offset) +
                               " after it are not written to a card"
                         : std::string()) +
          (checksums ? "; the " + std::to_string(checksums) + " range checksums in " + c.bmap.string() + " matched"
                     : std::string()) +
          ") into a private scratch file in " + took.elapsed());
  auto src = std::make_shared<FlashSource>();
  src->image = file->path();
  src->name = name + " (decompressed)";
  src->bmap = c.bmap;
  if (bmap) {
    src->map = *bmap;
    src->map_from = "bmap";
  } else {
    map_without_bmap(*src, size, true);  // read from the decompressed copy
  }
  src->check_ranges = false;  // compared above, as the data went by
  src->scratch = std::move(file);
  return src;
}

}  // namespace rpi::udev
