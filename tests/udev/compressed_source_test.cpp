// FlashSource::decompress and what it reads without decompressing (the xz
// index, zstd frame headers, bmaptool's names for the .bmap). Oracles: the
// gzip, xz, zstd and bzip2 tools make the files; the decompressed copy is
// compared byte for byte with the data they were made from; the sizes with
// that file's size.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "partition/block_map.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "test_support.hpp"
#include "udev/flash.hpp"

namespace rpi::test {
using rpi::test::shell_quoted;

namespace {

namespace fs = std::filesystem;
using partition::BlockMap;
using udev::FlashSource;

constexpr std::uint64_t kMiB = 1 << 20;

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

struct Compressor {
  std::string tool, ext, command;  // command: compresses the file it is given to stdout
};
const std::vector<Compressor> kCompressors = {{"gzip", ".gz", "gzip -c"},
                                              {"xz", ".xz", "xz -c -T1"},
                                              {"zstd", ".zst", "zstd -q -c"},
                                              {"bzip2", ".bz2", "bzip2 -c"}};

// An "image" of `size` bytes: 55 AA at byte 510, random data in some 4 KiB
// blocks, zeros elsewhere, a short random tail (the size need not be a
// multiple of 4096).
std::string test_image(std::uint64_t size, unsigned seed) {
  std::string img(size, '\0');
  std::mt19937 rng(seed);
  for (std::uint64_t b = 0; b * 4096 < size; ++b)
    if (b % 7 == 0 || b % 11 == 3)
      for (std::uint64_t i = b * 4096; i < std::min(size, (b + 1) * 4096); ++i) img[i] = static_cast<char>(rng());
  for (std::uint64_t i = size - std::min<std::uint64_t>(size, 777); i < size; ++i) img[i] = static_cast<char>(rng());
  img[510] = '\x55';
  img[511] = '\xaa';
  return img;
}

fs::path compressed(const TempDir& d, const std::string& name, const std::string& data, const Compressor& c,
                    const std::string& extra = "") {
  const fs::path raw = d / (name + ".raw");
  write_file(raw, data);
  const fs::path out = d / (name + c.ext);
  const CommandResult r = sh(c.command + " " + extra + " " + shell_quoted(raw) + " > " + shell_quoted(out));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  fs::remove(raw);
  return out;
}

std::size_t entries(const fs::path& dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

udev::DecompressOptions options_in(const fs::path& folder) {
  udev::DecompressOptions o;
  o.folder = folder;
  return o;
}

// Every compressor: the copy holds exactly the data, in a private file, sparse
// where the data is zeros (where the file system has holes), removed with the
// last source that holds it; progress counts the compressed file's bytes.
TEST(CompressedSource, EachCompressionDecompressesToTheSameBytes) {
  const std::string data = test_image(9 * kMiB + 1234, 1);
  int tried = 0;
  for (const auto& c : kCompressors) {
    if (!have_tool(c.tool)) {
      std::cout << "[  NOTE    ] " << c.tool << " not installed: not tried\n";
      continue;
    }
    ++tried;
    SCOPED_TRACE(c.tool);
    TempDir d;
    fs::create_directories(d / "scratch");
    const fs::path file = compressed(d, "pi.img", data, c);
    EXPECT_EQ(udev::compression_of_file(file), c.tool);
    std::vector<Event> events, details;  // progress; -v's details apart
    udev::DecompressOptions o = options_in(d / "scratch");
    o.events = [&](const Event& e) { (e.type == "detail" ? details : events).push_back(e); };
    std::shared_ptr<const FlashSource> src = FlashSource::decompress(file, o);
    EXPECT_EQ(read_file(src->image), data);
    EXPECT_EQ(src->image.parent_path(), d / "scratch");
    EXPECT_EQ(src->name, file.string() + " (decompressed)");
    EXPECT_FALSE(src->check_ranges);
    // No .bmap: the whole image is written (its zero blocks are not free space).
    EXPECT_EQ(src->map.image_size(), data.size());
    EXPECT_EQ(src->map.mapped_bytes(), data.size());
    struct stat st {};
    ASSERT_EQ(::stat(src->image.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    // Holes: the file takes less room than its size (where the file system has holes at all).
    {
      const fs::path probe = d / "hole-probe";
      Fd fd = open_or_throw(probe.string(), O_RDWR | O_CREAT, 0600);
      ASSERT_EQ(::ftruncate(fd.get(), 8 * kMiB), 0);
      struct stat ps {};
      ASSERT_EQ(::fstat(fd.get(), &ps), 0);
      if (ps.st_blocks == 0) {
        const std::uint64_t data_blocks = (data.size() / 4096) / 7 + (data.size() / 4096) / 11 + 2;
        EXPECT_LE(static_cast<std::uint64_t>(st.st_blocks) * 512, (data_blocks + 16) * 4096)
            << "the zero blocks were written, not left as holes";
      }
    }
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.front().type, "decompress");
    EXPECT_EQ(events.front().subject, file.string());
    EXPECT_EQ(events.back().done, fs::file_size(file));
    EXPECT_EQ(events.back().total, fs::file_size(file));
    // The details: what the probe found, then the decompression's bytes in and out.
    ASSERT_EQ(details.size(), 2u);
    EXPECT_TRUE(details[0].message.starts_with("probed " + file.string() + " in ")) << details[0].message;
    EXPECT_TRUE(details[1].message.starts_with("decompressed " + file.string() + " (" + c.tool + "): ") &&
                details[1].message.find(" read, 9.0 MiB out (") != std::string::npos)
        << details[1].message;
    // Copies of the source share the file; the last one removes it.
    auto copy = std::make_shared<FlashSource>(*src);
    const fs::path image = src->image;
    src.reset();
    EXPECT_TRUE(fs::exists(image));
    copy.reset();
    EXPECT_FALSE(fs::exists(image));
    EXPECT_EQ(entries(d / "scratch"), 0u);
  }
  if (tried == 0) GTEST_SKIP() << "none of gzip, xz, zstd, bzip2 is installed";
}

// The file's own records of the uncompressed size: an xz index (one stream or
// several, several blocks, stream padding, other checks) and zstd frame
// headers; none for gzip and bzip2, nor for zstd without them.
TEST(CompressedSource, TheSizeIsReadFromTheXzIndexAndTheZstdFrames) {
  const std::string data = test_image(3 * kMiB + 4321, 2);
  const std::string more = test_image(kMiB + 17, 3);
  if (have_tool("xz")) {
    TempDir d;
    const Compressor xz = kCompressors[1];
    for (const char* extra : {"", "--check=sha256", "--check=none", "-T2 --block-size=300000"}) {
      SCOPED_TRACE(extra);
      const fs::path f = compressed(d, "one", data, xz, extra);
      EXPECT_EQ(udev::probe_compressed(f).size, data.size());
    }
    // Two streams, with stream padding between and after them, as xz reads it.
    const fs::path a = compressed(d, "a", data, xz), b = compressed(d, "b", more, xz);
    const fs::path both = d / "both.xz";
    write_file(both, read_file(a) + std::string(8, '\0') + read_file(b) + std::string(4, '\0'));
    ASSERT_EQ(sh("xz -t " + shell_quoted(both)).exit_code, 0) << "xz itself does not take this file";
    EXPECT_EQ(udev::probe_compressed(both).size, data.size() + more.size());
    udev::DecompressOptions o = options_in(d.path());
    EXPECT_EQ(read_file(FlashSource::decompress(both, o)->image), data + more);
    // Cut short: refused from its end, as `xz -t` refuses it.
    const std::string whole = read_file(a);
    for (std::size_t cut : {std::size_t{4}, std::size_t{12}, whole.size() / 2}) {
      const fs::path t = d / ("cut" + std::to_string(cut) + ".xz");
      write_file(t, whole.substr(0, whole.size() - cut));
      EXPECT_NE(sh("xz -t " + shell_quoted(t) + " 2>/dev/null").exit_code, 0);
      try {
        udev::probe_compressed(t);
        ADD_FAILURE() << "a truncated xz file was taken";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), Errc::input);
        EXPECT_TRUE(contains(e.what(), t.string() + " is truncated or damaged")) << e.what();
      }
    }
  }
  if (have_tool("zstd")) {
    TempDir d;
    const Compressor zstd = kCompressors[2];
    EXPECT_EQ(udev::probe_compressed(compressed(d, "z", data, zstd)).size, data.size());
    // Several frames (as zstd writes for concatenated files).
    const fs::path a = compressed(d, "a", data, zstd), b = compressed(d, "b", more, zstd);
    const fs::path both = d / "both.zst";
    write_file(both, read_file(a) + read_file(b));
    EXPECT_EQ(udev::probe_compressed(both).size, data.size() + more.size());
    // Without the size in its frame header (--no-content-size).
    const fs::path none = compressed(d, "none", data, zstd, "--no-content-size");
    EXPECT_FALSE(udev::probe_compressed(none).size.has_value());
    EXPECT_EQ(read_file(FlashSource::decompress(none, options_in(d.path()))->image), data);
  }
  for (const auto& c : {kCompressors[0], kCompressors[3]})
    if (have_tool(c.tool)) {
      TempDir d;
      EXPECT_FALSE(udev::probe_compressed(compressed(d, "x", data, c)).size.has_value()) << c.tool;
    }
  if (!have_tool("xz") && !have_tool("zstd")) GTEST_SKIP() << "neither xz nor zstd is installed";
}

// bmaptool's names (bmaptools/CLI.py, find_and_open_bmap): IMAGE.bmap, then
// one extension less at a time.
TEST(CompressedSource, TheBmapIsFoundByBmaptoolsNames) {
  TempDir d;
  const fs::path img = d / "pi.img.xz";
  EXPECT_EQ(udev::bmap_candidates(img),
            (std::vector<fs::path>{d / "pi.img.xz.bmap", d / "pi.img.bmap", d / "pi.bmap"}));
  EXPECT_EQ(udev::bmap_candidates(d / ".hidden.xz"),
            (std::vector<fs::path>{d / ".hidden.xz.bmap", d / ".hidden.bmap"}));
  EXPECT_EQ(udev::bmap_candidates(fs::path("a.b/pi")), (std::vector<fs::path>{"a.b/pi.bmap"}));
  EXPECT_EQ(udev::find_bmap(img), fs::path());
  write_file(d / "pi.bmap", "x");
  EXPECT_EQ(udev::find_bmap(img), d / "pi.bmap");
  write_file(d / "pi.img.bmap", "x");
  EXPECT_EQ(udev::find_bmap(img), d / "pi.img.bmap");
  fs::create_directories(d / "pi.img.xz.bmap");  // a folder is no block map
  EXPECT_EQ(udev::find_bmap(img), d / "pi.img.bmap");
  fs::remove(d / "pi.img.xz.bmap");
  write_file(d / "pi.img.xz.bmap", "x");
  EXPECT_EQ(udev::find_bmap(img), d / "pi.img.xz.bmap");
}

// A .bmap made for the data: its map is the source's, its ranges checked as
// the data goes by. One for other data of the same size, or of another size,
// is refused naming it, and nothing stays in the folder.
TEST(CompressedSource, ABmapIsComparedWithTheDecompressedData) {
  if (!have_tool("gzip")) GTEST_SKIP() << "tool not installed: gzip";
  TempDir d;
  fs::create_directories(d / "scratch");
  const std::string data = test_image(5 * kMiB, 4);
  const fs::path file = compressed(d, "pi.img", data, kCompressors[0]);  // pi.img.gz: bmaptool looks for pi.img.bmap
  auto bmap_for = [&](const std::string& bytes) {
    const fs::path raw = d / "raw";
    write_file(raw, bytes);
    BlockMap m(bytes.size());
    m.add(0, 64 * 1024);
    m.add(2 * kMiB, 300000);
    m.add(bytes.size() - 4096, 4096);
    m.split(64 * 1024);
    Fd fd = open_or_throw(raw.string(), O_RDONLY);
    m.compute_checksums(fd.get(), raw.string());
    partition::write_bmap(d / "pi.img.bmap", m);
    fs::remove(raw);
    return m;
  };
  const BlockMap good = bmap_for(data);
  auto src = FlashSource::decompress(file, options_in(d / "scratch"));
  EXPECT_EQ(read_file(src->image), data);
  EXPECT_EQ(src->map.mapped_bytes(), good.mapped_bytes());
  EXPECT_FALSE(src->check_ranges);
  src.reset();
  // One byte different inside a mapped range, the same size.
  std::string other = data;
  other[2 * kMiB + 100000] ^= 1;
  bmap_for(other);
  try {
    FlashSource::decompress(file, options_in(d / "scratch"));
    ADD_FAILURE() << "a block map of other data was taken";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::input);
    EXPECT_TRUE(contains(e.what(), (d / "pi.img.bmap").string() + ": checksum mismatch for blocks range")) << e.what();
  }
  EXPECT_EQ(entries(d / "scratch"), 0u);
  // Another size: gzip does not record it, so this shows once decompressed.
  bmap_for(data + std::string(4096, '\0'));
  try {
    FlashSource::decompress(file, options_in(d / "scratch"));
    ADD_FAILURE() << "a block map of another size was taken";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "describes a " + std::to_string(data.size() + 4096) + "-byte image")) << e.what();
  }
  EXPECT_EQ(entries(d / "scratch"), 0u);
}

// Damaged or cut short: an input error naming the file, nothing left behind.
// gzip's CRC-32 is checked (a flipped byte in stored data inflates fine).
TEST(CompressedSource, DamagedOrTruncatedFilesAreRefused) {
  const std::string data = test_image(6 * kMiB, 5);
  int tried = 0;
  for (const auto& c : kCompressors) {
    if (!have_tool(c.tool)) continue;
    ++tried;
    SCOPED_TRACE(c.tool);
    TempDir d;
    fs::create_directories(d / "scratch");
    const std::string whole = read_file(compressed(d, "pi.img", data, c));
    const fs::path cut = d / ("cut" + c.ext);
    write_file(cut, whole.substr(0, whole.size() * 2 / 3));
    std::string flipped = whole;
    flipped[whole.size() / 2] ^= 0x10;
    const fs::path bad = d / ("bad" + c.ext);
    write_file(bad, flipped);
    for (const fs::path& f : {cut, bad}) {
      // The tool itself refuses it: the oracle that it is damaged.
      ASSERT_NE(sh(c.tool + " -t " + shell_quoted(f) + " 2>/dev/null").exit_code, 0) << f;
      try {
        FlashSource::decompress(f, options_in(d / "scratch"));
        ADD_FAILURE() << f << " was taken";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), Errc::input) << e.what();
        EXPECT_TRUE(contains(e.what(), f.string())) << e.what();
        EXPECT_TRUE(contains(e.what(), "download it again")) << e.what();
      }
      EXPECT_EQ(entries(d / "scratch"), 0u) << f;
    }
  }
  if (tried == 0) GTEST_SKIP() << "none of gzip, xz, zstd, bzip2 is installed";
}

// Cancelled once decompressing began (the flag turns true at the first
// progress event, when the file for the image exists): Cancelled, and that
// file is gone.
TEST(CompressedSource, CancellingRemovesThePartlyWrittenFile) {
  if (!have_tool("gzip")) GTEST_SKIP() << "tool not installed: gzip";
  TempDir d;
  fs::create_directories(d / "scratch");
  std::string data(24 * kMiB, '\0');
  std::mt19937 rng(6);
  for (auto& ch : data) ch = static_cast<char>(rng());
  const fs::path file = compressed(d, "pi.img", data, {"gzip", ".gz", "gzip -1 -c"});
  std::atomic<bool> cancel{false};
  std::size_t files = 0, events = 0;
  udev::DecompressOptions o = options_in(d / "scratch");
  o.cancel = &cancel;
  o.events = [&](const Event& e) {
    if (e.type != "decompress") return;
    ++events;
    files = entries(d / "scratch");
    cancel = true;
  };
  EXPECT_THROW(FlashSource::decompress(file, o), Cancelled);
  EXPECT_EQ(events, 1u) << "went on after the cancel";
  EXPECT_EQ(files, 1u) << "no file was made before the first progress event";
  EXPECT_EQ(entries(d / "scratch"), 0u);
}

// "decompress" progress at most every 200 ms plus the last one (the JSON
// stream's "a few times per second"), however fast the data comes: between
// the first (0) and the last event, no more than the time taken allows. The
// last says the whole file; `done` never goes back.
TEST(CompressedSource, ProgressIsLimitedInRate) {
  if (!have_tool("gzip")) GTEST_SKIP() << "tool not installed: gzip";
  TempDir d;
  fs::create_directories(d / "scratch");
  std::string data(12 * kMiB, '\0');
  std::mt19937 rng(8);
  for (auto& ch : data) ch = static_cast<char>(rng());  // incompressible: 12 MiB of input
  const fs::path file = compressed(d, "pi.img", data, {"gzip", ".gz", "gzip -1 -c"});
  ASSERT_GT(fs::file_size(file), 4 * kMiB);  // the old rule (every MiB read) would send more than 4
  std::vector<Event> events;
  udev::DecompressOptions o = options_in(d / "scratch");
  o.events = [&](const Event& e) {
    if (e.type == "decompress") events.push_back(e);  // progress only, not -v's details
  };
  const auto start = std::chrono::steady_clock::now();
  auto src = FlashSource::decompress(file, o);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.front().done, 0u);
  EXPECT_EQ(events.back().done, fs::file_size(file));
  for (std::size_t i = 1; i < events.size(); ++i) EXPECT_LE(events[i - 1].done, events[i].done);
  // Events in between: each at least 200 ms after the one before it.
  const std::size_t between = events.size() - 2;
  EXPECT_LE(between, static_cast<std::size_t>(took / std::chrono::milliseconds(200)))
      << events.size() << " events in " << std::chrono::duration<double>(took).count() << " s";
}

// The decompressed image larger than max_size (the largest card): refused
// before anything is decompressed when the file records its size (xz index,
// zstd frame header), else as soon as more than that came out; Errc::device,
// saying how much was decompressed, ending with the caller's text; nothing
// stays in the folder. An image of exactly max_size is taken.
TEST(CompressedSource, AnImageLargerThanAnyCardStopsEarly) {
  const std::string zeros(64 * kMiB, '\0');  // decompressed in full, a sparse 64 MiB file
  const std::uint64_t max = 8 * kMiB;
  const std::string end = "the largest card, /dev/sdz, has 8 MiB; use a larger card";
  int tried = 0;
  for (const auto& [c, extra] :
       {std::pair{kCompressors[0], ""}, std::pair{kCompressors[1], ""}, std::pair{kCompressors[2], ""},
        std::pair{kCompressors[2], "--no-content-size"}, std::pair{kCompressors[3], ""}}) {
    if (!have_tool(c.tool)) continue;
    ++tried;
    SCOPED_TRACE(c.tool + " " + extra);
    TempDir d;
    fs::create_directories(d / "scratch");
    const fs::path file = compressed(d, "zeros.img", zeros, c, extra);
    const bool recorded = udev::probe_compressed(file).size.has_value();
    EXPECT_EQ(recorded, c.tool == "xz" || (c.tool == "zstd" && std::string(extra).empty()));
    std::vector<Event> events;
    std::size_t files = 0;
    udev::DecompressOptions o = options_in(d / "scratch");
    o.max_size = max;
    o.too_large = end;
    o.events = [&](const Event& e) {
      events.push_back(e);
      files = std::max(files, entries(d / "scratch"));
    };
    try {
      FlashSource::decompress(file, o);
      ADD_FAILURE() << "an image larger than max_size was decompressed";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_EQ(e.code(), Errc::device) << m;
      EXPECT_TRUE(contains(m, file.string() + " is larger than any card: ")) << m;
      EXPECT_TRUE(m.ends_with("; " + end)) << m;
      if (recorded) {
        EXPECT_TRUE(contains(m, "it decompresses to 64 MiB (its " +
                                    std::string(c.tool == "xz" ? "xz index says" : "zstd frame headers say") + ")"))
            << m;
        EXPECT_TRUE(events.empty()) << "decompressing began";
      } else {
        std::smatch got;
        ASSERT_TRUE(std::regex_search(m, got, std::regex(R"(stopped after (\d+) MiB of it decompressed \()"))) << m;
        const std::uint64_t mib = std::stoull(got[1]);
        EXPECT_GT(mib * kMiB, max) << m;
        EXPECT_LE(mib * kMiB, max + 4 * kMiB) << "went on past the bound: " << m;
        EXPECT_TRUE(contains(m, " file read); ")) << m;
        EXPECT_EQ(files, 1u);
      }
    }
    EXPECT_EQ(entries(d / "scratch"), 0u);
    // Exactly the bound: taken; one byte less: refused.
    const std::string data = test_image(2 * kMiB + 100, 9);
    const fs::path small = compressed(d, "small.img", data, c, extra);
    o.max_size = data.size() - 1;
    EXPECT_THROW(FlashSource::decompress(small, o), Error);
    EXPECT_EQ(entries(d / "scratch"), 0u);
    o.max_size = data.size();
    EXPECT_EQ(read_file(FlashSource::decompress(small, o)->image), data);
  }
  if (tried == 0) GTEST_SKIP() << "none of gzip, xz, zstd, bzip2 is installed";
}

// With a .bmap that has a checksum for every range and a file that records
// its size, decompression stops after the last mapped block, as bmaptool's
// does: the rest is never written. Oracle: a check value at the end of the
// file is damaged (the tool's own -t refuses the file, and so do we without
// the .bmap), yet the image decompresses, its mapped bytes equal the data,
// and its size is the .bmap's. bzip2 records no size: it is read to the end.
TEST(CompressedSource, DecompressingStopsAfterTheLastMappedBlock) {
  std::string data = test_image(2 * kMiB, 12);
  data.resize(40 * kMiB, '\0');  // a file system's free space
  int tried = 0;
  for (const auto& c : kCompressors) {
    if (!have_tool(c.tool)) continue;
    ++tried;
    SCOPED_TRACE(c.tool);
    TempDir d;
    fs::create_directories(d / "scratch");
    const fs::path file = compressed(d, "pi.img", data, c, c.tool == "xz" ? "--check=crc32" : "");
    std::string bytes = read_file(file);
    // The check value the decoder compares last.
    std::size_t at = 0;
    if (c.tool == "gzip") at = bytes.size() - 8;   // CRC-32, before ISIZE
    if (c.tool == "zstd") at = bytes.size() - 4;   // the frame's content checksum
    if (c.tool == "bzip2") at = bytes.size() - 5;  // the stream's combined CRC
    if (c.tool == "xz") {                          // the one block's CRC-32, from xz's own listing
      const CommandResult l = sh("xz --robot -lvv " + shell_quoted(file));
      ASSERT_EQ(l.exit_code, 0) << l.err;
      std::smatch m;
      // block <stream> <block in stream> <block in file> <c. offset> <u. offset> <total size> ...
      ASSERT_TRUE(std::regex_search(l.out, m, std::regex(R"(\nblock\t1\t1\t1\t(\d+)\t\d+\t(\d+)\t)"))) << l.out;
      const std::size_t start = std::stoull(m[1]), total = std::stoull(m[2]);
      at = start + total - 4;  // a CRC-32 check ends the block (4-byte aligned: no padding after it)
    }
    ASSERT_LT(at, bytes.size());
    bytes[at] = static_cast<char>(bytes[at] ^ 0x5a);
    write_file(file, bytes);
    ASSERT_NE(sh(c.tool + " -t " + shell_quoted(file) + " 2>/dev/null").exit_code, 0) << "the damage does not show";
    EXPECT_THROW(FlashSource::decompress(file, options_in(d / "scratch")), Error) << "read to the end without a .bmap";
    // A .bmap of the first 2 MiB, with checksums.
    const fs::path raw = d / "raw";
    write_file(raw, data);
    BlockMap map(data.size());
    map.add(0, 2 * kMiB);
    map.split(64 * 1024);
    {
      Fd fd = open_or_throw(raw.string(), O_RDONLY);
      map.compute_checksums(fd.get(), raw.string());
    }
    fs::remove(raw);
    partition::write_bmap(d / "pi.img.bmap", map);
    if (c.tool == "bzip2") {
      EXPECT_THROW(FlashSource::decompress(file, options_in(d / "scratch")), Error) << "bzip2 records no size";
      continue;
    }
    std::shared_ptr<const FlashSource> src = FlashSource::decompress(file, options_in(d / "scratch"));
    EXPECT_EQ(fs::file_size(src->image), data.size());
    EXPECT_EQ(src->map.image_size(), data.size());
    EXPECT_EQ(src->map.mapped_bytes(), 2 * kMiB);
    EXPECT_EQ(read_file(src->image).substr(0, 2 * kMiB), data.substr(0, 2 * kMiB));
    src.reset();
    // A range without a checksum: nothing would compare the bytes, the stream's own check must.
    BlockMap bare(data.size());
    bare.add(0, 2 * kMiB);
    partition::write_bmap(d / "pi.img.bmap", bare);
    EXPECT_THROW(FlashSource::decompress(file, options_in(d / "scratch")), Error) << "a range without a checksum";
    EXPECT_EQ(entries(d / "scratch"), 0u);
  }
  if (tried == 0) GTEST_SKIP() << "none of gzip, xz, zstd, bzip2 is installed";
}

// A command the error suggests names the file as one shell word.
TEST(CompressedSource, SuggestedCommandsQuoteTheFileName) {
  if (!have_tool("xz")) GTEST_SKIP() << "tool not installed: xz";
  TempDir d;
  const std::string whole = read_file(compressed(d, "pi.img", test_image(kMiB, 10), kCompressors[1]));
  const fs::path cut = d / "my pi's $HOME.img.xz";
  write_file(cut, whole.substr(0, whole.size() - 8));
  try {
    udev::probe_compressed(cut);
    ADD_FAILURE() << "a truncated xz file was taken";
  } catch (const Error& e) {
    const std::string word = "'" + std::regex_replace(cut.string(), std::regex("'"), "'\\''") + "'";
    EXPECT_TRUE(contains(e.what(), "(xz -t " + word + " tests it)")) << e.what();
    // The oracle: a shell takes that word for the file.
    EXPECT_NE(sh("xz -t " + word + " 2>/dev/null").exit_code, 0);
    EXPECT_EQ(sh("test -f " + word).exit_code, 0);
  }
}

// Not compressed: said so, for the plan's probe and the decompressor alike.
TEST(CompressedSource, APlainFileIsNotTakenForCompressed) {
  TempDir d;
  const fs::path plain = d / "pi.img";
  write_file(plain, test_image(kMiB, 7));
  EXPECT_EQ(udev::compression_of_file(plain), "");
  EXPECT_EQ(udev::compression_of_file(d / "missing"), "");
  EXPECT_THROW(udev::probe_compressed(plain), Error);
  EXPECT_THROW(FlashSource::decompress(plain, options_in(d.path())), Error);
  EXPECT_EQ(udev::compression_of("BZh9"), "bzip2");
  EXPECT_EQ(udev::compression_of("BZh0"), "");
}

}  // namespace
}  // namespace rpi::test
