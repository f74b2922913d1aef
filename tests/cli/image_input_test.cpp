// --image with a compressed image (gzip, xz, zstd, bzip2, told by its first
// bytes): decompressed once into the run's scratch folder, then written like
// the raw image. Oracles: the compressors' own tools make the files from an
// image this tool built with --output; the .bmap's own ranges; without a
// .bmap, fsck.fat and mtools on the FAT of the file standing in for a card; the
// scratch folder ($TMPDIR) left empty.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <tuple>
#include <vector>

#include "cli_support.hpp"
#include "test_support.hpp"

using rpi::test::cli;
using rpi::test::contains;
using rpi::test::example;
using rpi::test::expect_same_fat;
using rpi::test::shell_quoted;
using rpi::test::tarball;
using rpi::test::TempDir;
namespace fs = std::filesystem;

namespace {

struct Compressor {
  std::string tool, ext;
};
const std::vector<Compressor> kCompressors = {{"gzip", ".gz"}, {"xz", ".xz"}, {"zstd", ".zst"}, {"bzip2", ".bz2"}};

// `tool` compresses `img` into `out` (the tool's defaults, as users share images).
void compress(const Compressor& c, const fs::path& img, const fs::path& out) {
  auto r =
      rpi::test::sh(c.tool + " -c " + (c.tool == "zstd" ? "-q " : "") + shell_quoted(img) + " > " + shell_quoted(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

// The images the tests compress, built once: kiosk and headless in 64 MiB
// (same size, other bytes), and kiosk in 128 MiB.
struct Images {
  TempDir dir;
  fs::path kiosk = dir / "pi.img", other = dir / "other.img", big = dir / "big.img";
};
const Images& images() {
  static std::unique_ptr<Images> im;
  if (!im) {
    im = std::make_unique<Images>();
    for (const auto& [spec, out, size] :
         {std::tuple{"kiosk.toml", im->kiosk, "64MiB"}, std::tuple{"headless.toml", im->other, "64MiB"},
          std::tuple{"kiosk.toml", im->big, "128MiB"}}) {
      auto r = cli({"--spec", example(spec).string(), "--tarball", tarball().string(), "--size", size, "--output",
                    out.string()});
      EXPECT_EQ(r.exit_code, 0) << r.err;
    }
  }
  return *im;
}

// $TMPDIR for the runs of one test: where their scratch folders go; it must be
// empty again afterwards.
class Scratch {
 public:
  Scratch() {
    if (const char* t = std::getenv("TMPDIR")) old_ = t;
    ::setenv("TMPDIR", dir_.path().c_str(), 1);
  }
  ~Scratch() {
    if (old_)
      ::setenv("TMPDIR", old_->c_str(), 1);
    else
      ::unsetenv("TMPDIR");
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  const fs::path& path() const { return dir_.path(); }
  std::string left() const {
    std::string out;
    for (const auto& e : fs::recursive_directory_iterator(dir_.path())) out += e.path().string() + "\n";
    return out;
  }

 private:
  TempDir dir_;
  std::optional<std::string> old_;
};

// A file standing in for a card: `size` bytes of `fill`.
fs::path card(const fs::path& path, std::uint64_t size = 64u << 20, char fill = 'c') {
  rpi::test::write_file(path, std::string(size, fill));
  return path;
}

const Compressor* first_available(const std::vector<std::string>& preferred) {
  for (const auto& t : preferred)
    for (const auto& c : kCompressors)
      if (c.tool == t && rpi::test::have_tool(t)) return &c;
  return nullptr;
}

}  // namespace

// Each compressor's file is written as the image it was made from, over a card
// full of 'c': no .bmap, so where the image's FAT holds data (the map derived
// from its FAT): the card's FAT passes fsck.fat and holds the image's files;
// the content says what it is, not the name.
TEST(ImageInput, EachCompressionIsWrittenWhereItsFatHoldsData) {
  for (const char* t : {"fsck.fat", "mcopy", "diff"}) RPI_REQUIRE_TOOL(t);
  const Images& im = images();
  Scratch scratch;
  TempDir d;
  int tried = 0;
  for (const auto& c : kCompressors) {
    if (!rpi::test::have_tool(c.tool)) {
      std::cout << "[  NOTE    ] " << c.tool << " not installed: not tried\n";
      continue;
    }
    ++tried;
    SCOPED_TRACE(c.tool);
    // One of them under a name that says nothing.
    const fs::path file = d / (c.tool == "zstd" ? "pi-image.bin" : "pi.img" + c.ext);
    ASSERT_NO_FATAL_FAILURE(compress(c, im.kiosk, file));
    const fs::path target = card(d / "card.bin");
    auto r = cli({"--image", file.string(), "--device", target.string(), "--yes"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "ok — safe to remove")) << r.out;
    EXPECT_TRUE(contains(r.err, "no block map for " + file.string())) << r.err;
    EXPECT_TRUE(contains(r.err, "): written where its FAT holds data (")) << r.err;
    EXPECT_FALSE(contains(r.err, "every byte")) << r.err;
    expect_same_fat(target, im.kiosk, d / "check");
    EXPECT_EQ(scratch.left(), "");
  }
  if (tried == 0) GTEST_SKIP() << "none of gzip, xz, zstd, bzip2 is installed";
}

// A .bmap under bmaptool's names: pi.img.bmap for pi.img.xz, and
// pi.img.xz.bmap before it. Only its ranges are written (the card keeps its
// 'c' elsewhere), and those are the image's.
TEST(ImageInput, ABmapBesideItIsUsedUnderBmaptoolsNames) {
  const Images& im = images();
  const Compressor* c = first_available({"xz", "zstd", "gzip", "bzip2"});
  if (!c) GTEST_SKIP() << "none of gzip, xz, zstd, bzip2 is installed";
  Scratch scratch;
  TempDir d;
  const fs::path file = d / ("pi.img" + c->ext);
  ASSERT_NO_FATAL_FAILURE(compress(*c, im.kiosk, file));
  const fs::path bmap = im.kiosk.string() + ".bmap";
  const auto ranges = rpi::test::bmap_ranges(bmap);
  ASSERT_FALSE(ranges.empty());
  std::uint64_t mapped = 0;
  for (const auto& [a, b] : ranges) mapped += (b - a + 1) * 4096;
  const std::string image = rpi::test::read_file(im.kiosk);
  for (const std::string& name : {std::string("pi.img.bmap"), "pi.img" + c->ext + ".bmap"}) {
    SCOPED_TRACE(name);
    fs::copy_file(bmap, d / name, fs::copy_options::overwrite_existing);
    if (name != "pi.img.bmap")  // the first name wins: the other one may be anything
      fs::copy_file(im.other.string() + ".bmap", d / "pi.img.bmap", fs::copy_options::overwrite_existing);
    const fs::path target = card(d / "card.bin");
    auto r = cli({"--image", file.string(), "--device", target.string(), "--yes", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "\"bytes\":" + std::to_string(mapped) + ",")) << r.out;
    EXPECT_FALSE(contains(r.out, "no block map")) << r.out;
    const std::string written = rpi::test::read_file(target);
    ASSERT_EQ(written.size(), image.size());
    for (const auto& [a, b] : ranges)
      EXPECT_TRUE(written.compare(a * 4096, (b - a + 1) * 4096, image, a * 4096, (b - a + 1) * 4096) == 0)
          << "blocks " << a << "-" << b;
    EXPECT_NE(written.find(std::string(4096, 'c')), std::string::npos) << "unmapped blocks were written";
    EXPECT_EQ(scratch.left(), "");
  }
}

// A raw image finds its .bmap under bmaptool's names too: pi.bmap beside
// pi.img when there is no pi.img.bmap. Only its ranges are written (the card
// keeps its 'c' elsewhere), and those are the image's; the plan names the file
// it uses, or the names it looked for.
TEST(ImageInput, ARawImageFindsItsBmapUnderBmaptoolsNames) {
  const Images& im = images();
  TempDir d;
  const fs::path file = d / "pi.img", target = card(d / "card.bin");
  fs::copy_file(im.kiosk, file);
  auto plan = cli({"--image", file.string(), "--device", target.string(), "--dry-run"});
  EXPECT_EQ(plan.exit_code, 0) << plan.out << plan.err;
  EXPECT_TRUE(contains(plan.out, "block map: none (looked for " + file.string() + ".bmap, " + (d / "pi.bmap").string() +
                                     "): written where its FAT holds data ("))
      << plan.out;
  fs::copy_file(im.kiosk.string() + ".bmap", d / "pi.bmap");
  const auto ranges = rpi::test::bmap_ranges(d / "pi.bmap");
  ASSERT_FALSE(ranges.empty());
  std::uint64_t mapped = 0;
  for (const auto& [a, b] : ranges) mapped += (b - a + 1) * 4096;
  plan = cli({"--image", file.string(), "--device", target.string(), "--dry-run"});
  EXPECT_EQ(plan.exit_code, 0) << plan.out << plan.err;
  EXPECT_TRUE(contains(plan.out, "block map: " + (d / "pi.bmap").string() + ", ")) << plan.out;
  auto r = cli({"--image", file.string(), "--device", target.string(), "--yes", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "\"bytes\":" + std::to_string(mapped) + ",")) << r.out;
  EXPECT_FALSE(contains(r.out, "no block map")) << r.out;
  const std::string image = rpi::test::read_file(file), written = rpi::test::read_file(target);
  ASSERT_EQ(written.size(), image.size());
  for (const auto& [a, b] : ranges)
    EXPECT_TRUE(written.compare(a * 4096, (b - a + 1) * 4096, image, a * 4096, (b - a + 1) * 4096) == 0)
        << "blocks " << a << "-" << b;
  EXPECT_NE(written.find(std::string(4096, 'c')), std::string::npos) << "unmapped blocks were written";
}

// A raw image without a .bmap (a 64 MiB image holding far less) over a card
// full of 'c': written where its FAT holds data, the map derived from its FAT.
// The bytes written (the card event) are far below the image's size, the
// verify step passes, the card's FAT passes fsck.fat and holds the image's
// files; the plan and the note say how it is written.
TEST(ImageInput, ARawImageWithoutBmapIsWrittenWhereItsFatHoldsData) {
  for (const char* t : {"fsck.fat", "mcopy", "diff"}) RPI_REQUIRE_TOOL(t);
  const Images& im = images();
  TempDir d;
  const fs::path file = d / "pi.img", target = card(d / "card.bin");
  fs::copy_file(im.kiosk, file);
  auto plan = cli({"--image", file.string(), "--device", target.string(), "--dry-run"});
  EXPECT_EQ(plan.exit_code, 0) << plan.out << plan.err;
  EXPECT_TRUE(contains(plan.out, "the map derived from its FAT; free clusters are left as the card has them)"))
      << plan.out;
  auto r = cli({"--image", file.string(), "--device", target.string(), "--yes", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"("bytes":(\d+),)"))) << r.out;
  EXPECT_LT(std::stoull(m[1]), fs::file_size(file) / 4) << r.out;
  EXPECT_GT(std::stoull(m[1]), 0u) << r.out;
  EXPECT_TRUE(contains(r.out, "\"verified\":true")) << r.out;
  EXPECT_TRUE(contains(r.out, "written where its FAT holds data (")) << r.out;
  expect_same_fat(target, file, d / "check");
}

// The plan's --json names the block map the run would use, as watch's plan
// does: the .bmap found under bmaptool's names (pi.bmap beside pi.img,
// pi.img.bmap beside pi.img.xz), "" when there is none. Oracle: watch
// --dry-run --json on the same image says the same.
TEST(ImageInput, ThePlanNamesItsBlockMapInJsonAsWatchDoes) {
  const Images& im = images();
  TempDir d;
  const fs::path target = card(d / "card.bin");
  auto bmap_in_plan = [](const std::string& out) -> std::string {
    static const std::regex plan(R"re(\{"type":"plan"[^\n]*?"bmap":"([^"]*)")re");
    std::smatch m;
    return std::regex_search(out, m, plan) ? m[1].str() : "(no bmap field in the plan)";
  };
  auto check = [&](const fs::path& file, const std::string& want) {
    auto r = cli({"--image", file.string(), "--device", target.string(), "--dry-run", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(bmap_in_plan(r.out), want) << r.out;
    auto w = cli({"watch", "--image", file.string(), "--dry-run", "--json"});
    EXPECT_EQ(w.exit_code, 0) << w.out << w.err;
    EXPECT_EQ(bmap_in_plan(w.out), want) << w.out;
  };
  const fs::path raw = d / "raw" / "pi.img";
  fs::create_directories(raw.parent_path());
  fs::copy_file(im.kiosk, raw);
  check(raw, "");
  fs::copy_file(im.kiosk.string() + ".bmap", raw.parent_path() / "pi.bmap");
  check(raw, (raw.parent_path() / "pi.bmap").string());
  const Compressor* c = first_available({"xz", "gzip", "zstd", "bzip2"});
  if (!c) GTEST_SKIP() << "none of gzip, xz, zstd, bzip2 is installed (the raw image was checked)";
  const fs::path packed = d / "packed" / ("pi.img" + c->ext);
  fs::create_directories(packed.parent_path());
  ASSERT_NO_FATAL_FAILURE(compress(*c, im.kiosk, packed));
  check(packed, "");
  fs::copy_file(im.kiosk.string() + ".bmap", packed.parent_path() / "pi.img.bmap");
  check(packed, (packed.parent_path() / "pi.img.bmap").string());
}

// A wrong pi.bmap beside a raw pi.img: one of another size is refused before
// a card is opened (the card byte for byte as it was); one of other bytes of
// the same size by the plan, and by the run before the card's MBR, naming it.
TEST(ImageInput, AWrongBmapOfARawImageIsRefused) {
  const Images& im = images();
  TempDir d;
  const fs::path file = d / "pi.img", bmap = d / "pi.bmap", target = card(d / "card.bin");
  fs::copy_file(im.kiosk, file);
  const std::string before = rpi::test::read_file(target);
  fs::copy_file(im.big.string() + ".bmap", bmap);
  auto r = cli({"--image", file.string(), "--device", target.string(), "--yes"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, bmap.string() + " describes a " + std::to_string(128u << 20) + "-byte image but " +
                                  file.string() + " has " + std::to_string(64u << 20) + " bytes"))
      << r.err;
  EXPECT_FALSE(contains(r.out, target.string())) << r.out;
  EXPECT_TRUE(rpi::test::read_file(target) == before) << "the card was changed";
  fs::copy_file(im.other.string() + ".bmap", bmap, fs::copy_options::overwrite_existing);
  const std::string msg = bmap.string() + ": checksum mismatch for blocks range ";
  auto plan = cli({"--image", file.string(), "--device", target.string(), "--dry-run"});
  EXPECT_EQ(plan.exit_code, 1) << plan.out << plan.err;
  EXPECT_TRUE(contains(plan.err, msg)) << plan.err;
  EXPECT_TRUE(rpi::test::read_file(target) == before) << "the plan changed the card";
  r = cli({"--image", file.string(), "--device", target.string(), "--yes"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, msg)) << r.out;
  EXPECT_EQ(rpi::test::read_file(target).substr(0, 512), std::string(512, '\0')) << "the card has an MBR";
}

// A .bmap of other bytes (the same size), or of another size: refused before
// any card is written, naming it; the card is as it was, nothing is left.
TEST(ImageInput, AMismatchingBmapIsRefusedBeforeAnyCard) {
  const Images& im = images();
  Scratch scratch;
  TempDir d;
  int tried = 0;
  for (const char* tool : {"xz", "gzip"}) {
    const Compressor* c = first_available({tool});
    if (!c) continue;
    ++tried;
    SCOPED_TRACE(tool);
    const fs::path file = d / ("pi.img" + c->ext), bmap = d / "pi.img.bmap";
    ASSERT_NO_FATAL_FAILURE(compress(*c, im.kiosk, file));
    const fs::path target = card(d / "card.bin");
    const std::string before = rpi::test::read_file(target);
    fs::copy_file(im.other.string() + ".bmap", bmap, fs::copy_options::overwrite_existing);
    auto r = cli({"--image", file.string(), "--device", target.string(), "--yes"});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_TRUE(contains(r.err, bmap.string() + ": checksum mismatch for blocks range")) << r.err;
    EXPECT_TRUE(rpi::test::read_file(target) == before) << "the card was changed";
    EXPECT_EQ(scratch.left(), "");
    // Another size: known before decompressing from the xz index (the plan
    // refuses it too); gzip does not record it, and the first range of other
    // bytes is refused as it goes by.
    fs::copy_file(im.big.string() + ".bmap", bmap, fs::copy_options::overwrite_existing);
    const std::string msg =
        bmap.string() + " describes a " + std::to_string(128u << 20) + "-byte image but " + file.string();
    r = cli({"--image", file.string(), "--device", target.string(), "--yes"});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_TRUE(contains(r.err, c->tool == "xz" ? msg : bmap.string() + ": checksum mismatch")) << r.err;
    EXPECT_TRUE(rpi::test::read_file(target) == before) << "the card was changed";
    EXPECT_EQ(scratch.left(), "");
    if (c->tool == "xz") {
      auto plan = cli({"--image", file.string(), "--device", target.string(), "--dry-run"});
      EXPECT_EQ(plan.exit_code, 1) << plan.out << plan.err;
      EXPECT_TRUE(contains(plan.err, msg + " holds 67108864 bytes decompressed (its xz index says)")) << plan.err;
    }
    fs::remove(bmap);
  }
  if (tried == 0) GTEST_SKIP() << "neither xz nor gzip is installed";
}

// Cut short or damaged: an input error naming the file, no card written or
// created, no scratch file left. A truncated xz file is refused from its end
// before anything else; a gzip member's CRC-32 is checked.
TEST(ImageInput, ATruncatedOrDamagedFileIsRefusedAndNothingIsLeft) {
  const Images& im = images();
  Scratch scratch;
  TempDir d;
  int tried = 0;
  for (const auto& c : kCompressors) {
    if (!rpi::test::have_tool(c.tool)) continue;
    ++tried;
    SCOPED_TRACE(c.tool);
    const fs::path whole = d / ("whole" + c.ext);
    ASSERT_NO_FATAL_FAILURE(compress(c, im.kiosk, whole));
    const std::string bytes = rpi::test::read_file(whole);
    const fs::path cut = d / ("cut.img" + c.ext);
    rpi::test::write_file(cut, bytes.substr(0, bytes.size() - 4096));
    const fs::path target = card(d / "card.bin");
    const std::string before = rpi::test::read_file(target);
    auto r = cli({"--image", cut.string(), "--device", target.string(), "--yes"});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_TRUE(contains(r.err, cut.string() + (c.tool == "xz" ? " is truncated or damaged: it does not end with an "
                                                                 "xz stream footer"
                                                               : "")))
        << r.err;
    EXPECT_TRUE(contains(r.err, "download it again")) << r.err;
    EXPECT_TRUE(rpi::test::read_file(target) == before) << "the card was changed";
    EXPECT_EQ(scratch.left(), "");
    // A card path that does not exist yet is not created.
    const fs::path missing = d / "new-card.bin";
    r = cli({"--image", cut.string(), "--device", missing.string(), "--yes"});
    EXPECT_NE(r.exit_code, 0);
    EXPECT_FALSE(fs::exists(missing));
    if (c.tool == "gzip") {
      // One byte changed in the middle: what only the CRC-32 may catch.
      std::string flipped = bytes;
      flipped[bytes.size() / 2] ^= 0x01;
      const fs::path bad = d / "bad.img.gz";
      rpi::test::write_file(bad, flipped);
      ASSERT_NE(rpi::test::sh("gzip -t " + shell_quoted(bad) + " 2>/dev/null").exit_code, 0);
      r = cli({"--image", bad.string(), "--device", target.string(), "--yes"});
      EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
      EXPECT_TRUE(contains(r.err, bad.string() + " cannot be decompressed")) << r.err;
      EXPECT_TRUE(rpi::test::read_file(target) == before) << "the card was changed";
      EXPECT_EQ(scratch.left(), "");
    }
  }
  if (tried == 0) GTEST_SKIP() << "none of gzip, xz, zstd, bzip2 is installed";
}

// Compressed, but no disk image inside: the usage error a raw file gets.
TEST(ImageInput, NotADiskImageInsideGzipIsRefused) {
  RPI_REQUIRE_TOOL("gzip");
  Scratch scratch;
  TempDir d;
  const fs::path text = d / "notes.txt", file = d / "notes.img.gz";
  rpi::test::write_file(text, std::string(1 << 20, 'x'));
  ASSERT_EQ(rpi::test::sh("gzip -c " + shell_quoted(text) + " > " + shell_quoted(file)).exit_code, 0);
  const fs::path target = card(d / "card.bin");
  auto r = cli({"--image", file.string(), "--device", target.string(), "--yes"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "--image " + file.string() + " (gzip-compressed): not a disk image: no MBR signature"))
      << r.err;
  EXPECT_TRUE(contains(r.err, "give a disk image such as one made with --output")) << r.err;
  EXPECT_TRUE(rpi::test::read_file(target) == std::string(64u << 20, 'c')) << "the card was changed";
  EXPECT_EQ(scratch.left(), "");
}

// --dry-run decompresses nothing: the size from the xz index (and a card too
// small for it refused as the run refuses it), "known once it is
// decompressed" for gzip; no scratch folder is made.
TEST(ImageInput, APlanDoesNotDecompress) {
  const Images& im = images();
  Scratch scratch;
  TempDir d;
  const fs::path target = card(d / "card.bin", 64u << 20, '\0');
  if (rpi::test::have_tool("xz")) {
    const fs::path file = d / "pi.img.xz";
    ASSERT_NO_FATAL_FAILURE(compress(kCompressors[1], im.kiosk, file));
    auto r = cli({"--image", file.string(), "--device", target.string(), "--dry-run"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "image: " + file.string() + ", xz-compressed: 64 MiB decompressed (its xz index says)"))
        << r.out;
    EXPECT_TRUE(contains(r.out, "block map: none (looked for " + file.string() + ".bmap, " +
                                    (d / "pi.img.bmap").string() + ", " + (d / "pi.bmap").string() +
                                    "): derived from its FAT once it is decompressed"))
        << r.out;
    auto j = cli({"--image", file.string(), "--device", target.string(), "--dry-run", "--json"});
    EXPECT_TRUE(contains(j.out, "\"compression\":\"xz\"")) << j.out;
    EXPECT_TRUE(contains(j.out, "\"image_size\":67108864")) << j.out;
    // A card too small: the plan fails as the run does.
    const fs::path small = card(d / "small.bin", 32u << 20, '\0');
    const std::string msg = "refusing to write " + small.string() + ": it has 32 MiB but the image needs 64 MiB";
    auto plan = cli({"--image", file.string(), "--device", small.string(), "--dry-run"});
    auto run = cli({"--image", file.string(), "--device", small.string(), "--yes"});
    EXPECT_EQ(plan.exit_code, 1) << plan.out << plan.err;
    EXPECT_EQ(run.exit_code, 1) << run.out << run.err;
    EXPECT_TRUE(contains(plan.out, msg)) << plan.out;
    EXPECT_TRUE(contains(run.out, msg)) << run.out;
  }
  if (rpi::test::have_tool("gzip")) {
    const fs::path file = d / "pi.img.gz";
    ASSERT_NO_FATAL_FAILURE(compress(kCompressors[0], im.kiosk, file));
    auto r = cli({"--image", file.string(), "--device", target.string(), "--dry-run"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "gzip-compressed: its size is known once it is decompressed")) << r.out;
    auto j = cli({"--image", file.string(), "--device", target.string(), "--dry-run", "--json"});
    EXPECT_TRUE(contains(j.out, "\"compression\":\"gzip\"")) << j.out;
    EXPECT_FALSE(contains(j.out, "image_size")) << j.out;
  }
  EXPECT_EQ(rpi::test::read_file(target), std::string(64u << 20, '\0')) << "the plan wrote to the card";
  // The plans made no scratch folder, the run above removed its own.
  EXPECT_EQ(scratch.left(), "");
}

// $TMPDIR too small for the decompressed image: an error naming it and
// TMPDIR, the card untouched, nothing left (a 1 MiB tmpfs in a mount
// namespace of its own).
TEST(ImageInput, NotEnoughScratchSpaceSaysWhereAndWhatToDo) {
  const Images& im = images();
  const Compressor* c = first_available({"xz", "gzip", "zstd", "bzip2"});
  if (!c) GTEST_SKIP() << "none of gzip, xz, zstd, bzip2 is installed";
  RPI_REQUIRE_TOOL("unshare");
  TempDir d;
  const fs::path file = d / ("pi.img" + c->ext), small = d / "small";
  ASSERT_NO_FATAL_FAILURE(compress(*c, im.kiosk, file));
  fs::create_directories(small);
  if (rpi::test::sh("unshare -Urm sh -c " + shell_quoted("mount -t tmpfs -o size=1m tmpfs " + small.string()))
          .exit_code != 0)
    GTEST_SKIP() << "cannot mount a small tmpfs in a mount namespace (unshare -Urm) here";
  const fs::path target = card(d / "card.bin");
  const std::string inner = "mount -t tmpfs -o size=1m tmpfs " + shell_quoted(small) +
                            " && TMPDIR=" + shell_quoted(small) + " " + shell_quoted(rpi::test::cli_path()) +
                            " --image " + shell_quoted(file) + " --device " + shell_quoted(target) +
                            " --yes; rc=$?; echo \"left:[$(ls -A " + shell_quoted(small) + ")]\"; exit $rc";
  auto r = rpi::test::run({"unshare", "-Urm", "sh", "-c", inner});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "no space left in " + small.string() + "/")) << r.err;
  EXPECT_TRUE(contains(r.err, "set TMPDIR to a folder with more room (now " + small.string() + ")")) << r.err;
  EXPECT_TRUE(contains(r.out, "left:[]")) << r.out;
  EXPECT_TRUE(rpi::test::read_file(target) == std::string(64u << 20, 'c')) << "the card was changed";
}

// Ctrl-C while the image is decompressed: the decompression stops, no card is
// touched, the scratch folder is removed, exit 130. The run is stopped
// (SIGSTOP) at its first "decompress" event, signalled, and let go on.
TEST(ImageInput, CtrlCWhileDecompressingTouchesNoCard) {
  const Images& im = images();
  const Compressor* c = first_available({"bzip2", "gzip", "xz", "zstd"});  // the slowest to decompress first
  if (!c) GTEST_SKIP() << "none of gzip, xz, zstd, bzip2 is installed";
  Scratch scratch;
  TempDir d;
  const fs::path file = d / ("big.img" + c->ext), target = d / "card.bin";
  ASSERT_NO_FATAL_FAILURE(compress(*c, im.big, file));
  rpi::test::write_file(target, "");
  fs::resize_file(target, 128u << 20);  // sparse: any write to it allocates blocks
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const std::string bin = rpi::test::cli_path().string();
  std::vector<std::string> args = {bin, "--image", file.string(), "--device", target.string(), "--yes", "--json"};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 2);
    ::close(out[0]);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  // The last "decompress" event: the image was decompressed to its end.
  const std::string size = std::to_string(fs::file_size(file));
  const std::string finished = "\"done\":" + size + ",\"total\":" + size;
  std::string seen, line;
  bool stopped = false;
  char ch;
  while (::read(out[0], &ch, 1) == 1) {
    seen += ch;
    if (ch != '\n') {
      line += ch;
      continue;
    }
    if (!stopped && contains(line, "\"type\":\"decompress\"")) {
      ::kill(pid, SIGSTOP);
      stopped = true;
      // What it printed before it stopped: a card already being written means
      // the decompression was over before the signal could come.
      ::fcntl(out[0], F_SETFL, O_NONBLOCK);
      while (::read(out[0], &ch, 1) == 1) seen += ch;
      ::fcntl(out[0], F_SETFL, 0);
      if (contains(seen, finished) || contains(seen, "\"type\":\"write\"")) {
        ::kill(pid, SIGCONT);
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        ::close(out[0]);
        GTEST_SKIP() << "the image was decompressed before the run could be stopped (a loaded machine)";
      }
      ::kill(pid, SIGINT);
      ::kill(pid, SIGCONT);
    }
    line.clear();
  }
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(stopped) << seen;
  ASSERT_TRUE(WIFEXITED(status)) << seen;
  EXPECT_EQ(WEXITSTATUS(status), 130) << seen;
  EXPECT_TRUE(contains(seen, "cancelled: " + target.string() + " was not changed")) << seen;
  EXPECT_FALSE(contains(seen, "\"type\":\"write\"")) << seen;
  EXPECT_FALSE(contains(seen, finished)) << "the decompression went on to its end:\n" << seen;
  struct stat st {};
  ASSERT_EQ(::stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_blocks, 0) << "the card was written to";
  EXPECT_EQ(st.st_size, 128 << 20);
  EXPECT_EQ(scratch.left(), "");
}

// watch --image with a compressed image: the plan says it is decompressed
// once, before the first card, and decompresses nothing; a truncated one is
// refused as the main command refuses it.
TEST(ImageInput, WatchPlansACompressedImageWithoutDecompressing) {
  RPI_REQUIRE_TOOL("xz");
  const Images& im = images();
  Scratch scratch;
  TempDir d;
  const fs::path file = d / "pi.img.xz";
  ASSERT_NO_FATAL_FAILURE(compress(kCompressors[1], im.kiosk, file));
  fs::copy_file(im.kiosk.string() + ".bmap", d / "pi.img.bmap");
  auto r = cli({"watch", "--image", file.string(), "--dry-run"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, file.string() +
                                  " is xz-compressed: the station decompresses it once, before the first card (64 "
                                  "MiB), and writes what " +
                                  (d / "pi.img.bmap").string() + " maps"))
      << r.err;
  EXPECT_TRUE(contains(r.out, "image: " + file.string())) << r.out;
  EXPECT_EQ(scratch.left(), "");
  const std::string bytes = rpi::test::read_file(file);
  const fs::path cut = d / "cut.img.xz";
  rpi::test::write_file(cut, bytes.substr(0, bytes.size() / 2));
  r = cli({"watch", "--image", cut.string(), "--dry-run"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, cut.string() + " is truncated or damaged")) << r.err;
}

// An image larger than every card: a file that does not record its size
// (gzip; zstd written from a pipe) is decompressed only until it passes the
// largest card, then refused naming how much came out; one that records it
// (xz index) is not decompressed at all, each card refused as the plan refuses
// it. The cards are as they were, the scratch folder is empty. Oracle: the
// image is the first MiB of a built one and 127 MiB of zeros (a sparse file
// that would grow without bound).
TEST(ImageInput, AnImageLargerThanEveryCardIsNotDecompressedToItsEnd) {
  const Images& im = images();
  Scratch scratch;
  TempDir d;
  const std::string stream =
      "{ head -c 1048576 " + shell_quoted(im.kiosk) + "; head -c " + std::to_string(127u << 20) + " /dev/zero; } | ";
  const fs::path small = card(d / "small.bin", 8u << 20), larger = card(d / "larger.bin", 16u << 20);
  int tried = 0;
  for (const std::string tool : {"gzip", "zstd"}) {
    if (!rpi::test::have_tool(tool)) continue;
    ++tried;
    SCOPED_TRACE(tool);
    const fs::path file = d / ("huge.img" + std::string(tool == "gzip" ? ".gz" : ".zst"));
    ASSERT_EQ(rpi::test::sh(stream + tool + " -1 -c -q > " + shell_quoted(file)).exit_code, 0);
    auto r = cli({"--image", file.string(), "--device", small.string(), "--device", larger.string(), "--yes"});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    std::smatch got;
    ASSERT_TRUE(
        std::regex_search(r.err, got,
                          std::regex(std::regex_replace(file.string(), std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") +
                                     R"( is larger than any card: stopped after (\d+) MiB of it decompressed)")))
        << r.err;
    const std::uint64_t mib = std::stoull(got[1]);
    EXPECT_GT(mib, 16u) << r.err;
    EXPECT_LT(mib, 128u) << "decompressed to its end: " << r.err;
    EXPECT_TRUE(contains(r.err, "the largest card, " + larger.string() + ", has 16 MiB; use a larger card")) << r.err;
    EXPECT_FALSE(contains(r.out, "safe to remove")) << r.out;
    EXPECT_TRUE(rpi::test::read_file(small) == std::string(8u << 20, 'c')) << "the small card was changed";
    EXPECT_TRUE(rpi::test::read_file(larger) == std::string(16u << 20, 'c')) << "the larger card was changed";
    EXPECT_EQ(scratch.left(), "");
  }
  if (rpi::test::have_tool("xz")) {
    ++tried;
    const fs::path file = d / "huge.img.xz";
    ASSERT_EQ(rpi::test::sh(stream + "xz -0 -T1 -c > " + shell_quoted(file)).exit_code, 0);
    auto r =
        cli({"--image", file.string(), "--device", small.string(), "--device", larger.string(), "--yes", "--json"});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    for (const auto& [c, size] : {std::pair{small, "8 MiB"}, std::pair{larger, "16 MiB"}})
      EXPECT_TRUE(contains(r.out, "refusing to write " + c.string() + ": it has " + size +
                                      " but the image needs 128 MiB; use a larger card"))
          << r.out;
    EXPECT_FALSE(contains(r.out, "\"type\":\"decompress\"")) << "it was decompressed: " << r.out;
    EXPECT_TRUE(rpi::test::read_file(small) == std::string(8u << 20, 'c')) << "the small card was changed";
    EXPECT_TRUE(rpi::test::read_file(larger) == std::string(16u << 20, 'c')) << "the larger card was changed";
    EXPECT_EQ(scratch.left(), "");
  }
  if (tried == 0) GTEST_SKIP() << "none of gzip, zstd, xz is installed";
}

// A card (a loop device): the plan says what it holds now (libblkid's
// reading), as the question before writing does; a run with --yes, which shows
// neither, reads nothing of the card (libblkid's probe is about 1 MiB of reads).
TEST(ImageInputLoop, ThePlanSaysWhatTheCardHoldsAndYesReadsNothingOfIt) {
  if (geteuid() != 0 || access("/dev/loop-control", W_OK) != 0) GTEST_SKIP() << "needs root and /dev/loop-control";
  RPI_REQUIRE_TOOL("losetup");
  RPI_REQUIRE_TOOL("sfdisk");
  TempDir d;
  const fs::path backing = d / "card.bin";
  rpi::test::write_file(backing, "");
  fs::resize_file(backing, 128u << 20);
  ASSERT_EQ(rpi::test::sh("echo 'start=2048, type=83' | sfdisk -q " + shell_quoted(backing)).exit_code, 0);
  auto attached = rpi::test::run({"losetup", "--show", "-f", backing.string()});
  if (attached.exit_code != 0) GTEST_SKIP() << "losetup failed: " << attached.err;
  std::string dev = attached.out;
  while (!dev.empty() && (dev.back() == '\n' || dev.back() == ' ')) dev.pop_back();
  struct Detach {
    std::string dev;
    ~Detach() { rpi::test::run({"losetup", "-d", dev}); }
  } detach{dev};
  const std::string img = images().kiosk.string();
  const std::vector<std::string> base = {"--image", img, "--device", dev, "--allow-non-removable"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  auto plan = cli(with({"--dry-run"}));
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_TRUE(contains(plan.out, "  card 1: device " + dev + "  128 MiB\n    holds now: a dos partition table"))
      << plan.out;
  auto json = cli(with({"--dry-run", "--json"}));
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_TRUE(contains(json.out, "\"holds\":\"a dos partition table")) << json.out;
  // The question names what is on the card too (no terminal: it is refused with the question as the error).
  auto asked = cli(base);
  EXPECT_EQ(asked.exit_code, 2) << asked.err;
  EXPECT_TRUE(contains(asked.err, "    holds now: a dos partition table")) << asked.err;

  const std::uint64_t before = rpi::test::sectors_read(dev);
  auto run = cli(with({"--yes", "--no-verify"}));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(rpi::test::sectors_read(dev), before) << "a run with --yes and --no-verify read the card";
  EXPECT_GT(before, 0u) << "the stat file counts nothing: the test proves nothing";
  // Now it holds the image: a dos table, a FAT32 partition (not scanned by the kernel: no partitions listed).
  auto again = cli(with({"--dry-run"}));
  EXPECT_TRUE(contains(again.out, "holds now: a dos partition table")) << again.out;
}
