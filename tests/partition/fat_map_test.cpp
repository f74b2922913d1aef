// map_from_fat: the block map of an image without a .bmap, derived from its
// FAT. The oracle is independent of our reader: only the derived ranges are
// written onto a "used card" (a file full of 0xA5 bytes), then fsck.fat must
// pass on it and mtools must read back the same files. Hostile images give
// nullopt (write every byte), never a crash.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <random>

#include "partition/block_map.hpp"
#include "partition/image.hpp"
#include "partition/reader.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "test_support.hpp"

using namespace rpi::partition;
using rpi::test::shell_quoted;
using rpi::test::TempDir;
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t MiB = 1 << 20;

std::optional<BlockMap> derive(const fs::path& img) {
  rpi::Fd fd = rpi::open_or_throw(img.string(), O_RDONLY);
  return map_from_fat(fd.get(), fs::file_size(img), img.filename().string());
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(gen() & 0xFF);
  return s;
}

void sh_ok(const std::string& cmd) {
  auto r = rpi::test::sh(cmd);
  ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.out << r.err;
}

// A FAT volume made by mkfs.fat with `cluster_bytes` clusters and FAT `bits`,
// of `kib` KiB, with files and a folder copied by mtools, then some of them
// deleted (free gaps between data). The files are kept in `files` (name ->
// content) as they should read back.
struct Volume {
  fs::path part;
  std::vector<std::pair<std::string, std::string>> files;
};

Volume make_volume(const TempDir& dir, unsigned cluster_bytes, unsigned bits, unsigned kib) {
  Volume v;
  v.part = dir / "part.img";
  const unsigned spc = cluster_bytes / 512;
  sh_ok("mkfs.fat -C -F " + std::to_string(bits) + " -S 512 -s " + std::to_string(spc) + " -n TESTFAT " +
        shell_quoted(v.part) + " " + std::to_string(kib) + " >/dev/null");
  fs::create_directories(dir / "src");
  const std::vector<std::size_t> sizes = {100, 5000, 70000, 1, 300000, 4096, 12345, 2048, 777777};
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const std::string name = "file" + std::to_string(i) + ".bin";
    const std::string data = random_bytes(sizes[i], static_cast<unsigned>(i + 1));
    rpi::test::write_file(dir / "src" / name, data);
    const std::string where = i % 3 == 2 ? "::/sub/" : "::/";
    if (i == 2) sh_ok("MTOOLS_SKIP_CHECK=1 mmd -i " + shell_quoted(v.part) + " ::/sub");
    sh_ok("MTOOLS_SKIP_CHECK=1 mcopy -i " + shell_quoted(v.part) + " " + shell_quoted(dir / "src" / name) + " " +
          where);
    v.files.emplace_back(where.substr(3) + name, data);
  }
  // Free gaps between the data: every other file goes.
  std::vector<std::pair<std::string, std::string>> kept;
  for (std::size_t i = 0; i < v.files.size(); ++i) {
    if (i % 2 == 1)
      sh_ok("MTOOLS_SKIP_CHECK=1 mdel -i " + shell_quoted(v.part) + " ::/" + v.files[i].first);
    else
      kept.push_back(v.files[i]);
  }
  v.files = kept;
  return v;
}

// An MBR image: the volume at sector `start` (63: its data region is not
// 4 KiB-aligned), `tail` bytes of other data after it.
fs::path with_mbr(const TempDir& dir, const fs::path& part, std::uint64_t start, std::uint8_t type = 0x06) {
  const fs::path img = dir / "disk.img";
  const std::uint64_t part_sectors = fs::file_size(part) / 512;
  const std::uint64_t size = (start + part_sectors) * 512 + MiB;
  sh_ok("truncate -s " + std::to_string(size) + " " + shell_quoted(img));
  char t[8];
  snprintf(t, sizeof t, "%x", type);
  sh_ok("printf 'label: dos\\nstart=" + std::to_string(start) + ", size=" + std::to_string(part_sectors) +
        ", type=" + t + "\\n' | sfdisk --no-reread -q " + shell_quoted(img));
  sh_ok("dd if=" + shell_quoted(part) + " of=" + shell_quoted(img) + " bs=512 seek=" + std::to_string(start) +
        " conv=notrunc status=none");
  // Data in the gap before the partition and after it: kept as it is.
  sh_ok("printf 'gap-data' | dd of=" + shell_quoted(img) + " bs=1 seek=4096 conv=notrunc status=none");
  sh_ok("printf 'tail-data' | dd of=" + shell_quoted(img) + " bs=1 seek=" + std::to_string(size - 100) +
        " conv=notrunc status=none");
  return img;
}

// Only the mapped ranges of `img` written onto a file of 0xA5 bytes.
fs::path write_mapped(const TempDir& dir, const fs::path& img, const BlockMap& map) {
  const fs::path card = dir / "card.img";
  const std::uint64_t size = fs::file_size(img);
  {
    rpi::Fd out = rpi::open_or_throw(card.string(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    const std::string a5(size, '\xA5');
    rpi::pwrite_all(out.get(), a5.data(), a5.size(), 0, "card");
    rpi::Fd in = rpi::open_or_throw(img.string(), O_RDONLY);
    for (const Extent& e : map.extents()) {
      std::string buf(e.length, '\0');
      EXPECT_EQ(rpi::pread_full(in.get(), buf.data(), buf.size(), e.offset, "img"), buf.size());
      rpi::pwrite_all(out.get(), buf.data(), buf.size(), e.offset, "card");
    }
  }
  return card;
}

// fsck.fat -n passes on the volume at `offset` of `card` and mtools reads the files back.
void expect_volume_intact(const TempDir& dir, const fs::path& card, std::uint64_t offset, std::uint64_t bytes,
                          const Volume& v) {
  const fs::path cut = dir / "cut.img";
  sh_ok("dd if=" + shell_quoted(card) + " of=" + shell_quoted(cut) + " bs=512 skip=" + std::to_string(offset / 512) +
        " count=" + std::to_string(bytes / 512) + " status=none");
  auto f = rpi::test::run({"fsck.fat", "-n", cut.string()});
  EXPECT_EQ(f.exit_code, 0) << f.out << f.err;
  for (const auto& [name, data] : v.files) {
    const fs::path got = dir / "got.bin";
    fs::remove(got);
    sh_ok("MTOOLS_SKIP_CHECK=1 mcopy -n -i " + shell_quoted(card) + "@@" + std::to_string(offset) + " ::/" + name +
          " " + shell_quoted(got));
    EXPECT_TRUE(rpi::test::read_file(got) == data) << name << " differs after a write of the derived ranges";
  }
}

class FatMapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* t : {"mkfs.fat", "fsck.fat", "mcopy", "mmd", "mdel", "sfdisk"}) RPI_REQUIRE_TOOL(t);
  }
  TempDir dir;
};

struct Shape {
  unsigned cluster_bytes, bits, kib;
};

void check_mbr_volume(const TempDir& dir, const Shape& s) {
  const Volume v = make_volume(dir, s.cluster_bytes, s.bits, s.kib);
  const fs::path img = with_mbr(dir, v.part, 63);
  const std::optional<BlockMap> map = derive(img);
  ASSERT_TRUE(map.has_value()) << s.cluster_bytes;
  EXPECT_EQ(map->image_size(), fs::file_size(img));
  // Much smaller than the image (it is mostly free clusters), more than the kept files.
  std::uint64_t data = 0;
  for (const auto& f : v.files) data += f.second.size();
  EXPECT_LT(map->mapped_bytes(), map->image_size() / 2) << s.cluster_bytes;
  EXPECT_GT(map->mapped_bytes(), data);
  for (const Extent& e : map->extents()) {
    EXPECT_EQ(e.offset % BlockMap::kBlockSize, 0u);
    EXPECT_TRUE(e.sha256.empty());
  }
  const fs::path card = write_mapped(dir, img, *map);
  expect_volume_intact(dir, card, 63 * 512, fs::file_size(v.part), v);
  // The MBR, the gap before the partition and the space after it are written as they are.
  const std::string a = rpi::test::read_file(img), b = rpi::test::read_file(card);
  EXPECT_EQ(a.substr(0, 63 * 512), b.substr(0, 63 * 512));
  const std::uint64_t end = 63 * 512 + fs::file_size(v.part);
  EXPECT_TRUE(a.substr(end) == b.substr(end));
}

}  // namespace

TEST_F(FatMapTest, Fat16With512ByteClustersSurvivesAWriteOfTheDerivedRanges) {
  check_mbr_volume(dir, {512, 16, 16 * 1024});
}

TEST_F(FatMapTest, Fat12With2KiBClustersSurvivesAWriteOfTheDerivedRanges) {
  check_mbr_volume(dir, {2048, 12, 6 * 1024});
}

TEST_F(FatMapTest, Fat12With32KiBClustersSurvivesAWriteOfTheDerivedRanges) {
  check_mbr_volume(dir, {32768, 12, 12 * 1024});
}

TEST_F(FatMapTest, SuperfloppySurvivesAWriteOfTheDerivedRanges) {
  const Volume v = make_volume(dir, 2048, 16, 16 * 1024);
  const std::optional<BlockMap> map = derive(v.part);
  ASSERT_TRUE(map.has_value());
  EXPECT_LT(map->mapped_bytes(), map->image_size() / 2);
  const fs::path card = write_mapped(dir, v.part, *map);
  expect_volume_intact(dir, card, 0, fs::file_size(v.part), v);
}

// The engine's own exact map (its .bmap) is covered: nothing it writes is left out.
TEST_F(FatMapTest, CoversTheImageEnginesOwnMap) {
  const fs::path tarball = rpi::test::fixture_tarball({"--size-mb", "8"});
  const fs::path img = dir / "pi.img";
  ImageOptions o;
  o.image_size = 96 * MiB;
  const ImageResult r = build_image(tarball, img, o);
  const std::optional<BlockMap> map = derive(img);
  ASSERT_TRUE(map.has_value());
  EXPECT_LT(map->mapped_bytes(), r.image_size / 3);
  for (const Extent& e : r.map.extents()) {
    bool covered = false;
    for (const Extent& f : map->extents())
      covered = covered || (f.offset <= e.offset && e.offset + e.length <= f.offset + f.length);
    EXPECT_TRUE(covered) << "the engine's range " << e.offset << "+" << e.length << " is not in the derived map";
  }
}

// ---- hostile or doubtful images: nullopt -----------------------------------

namespace {

// A FAT16 image with files (MBR at sector 2048) and where its FATs are.
struct Fat16Disk {
  fs::path img;
  std::uint64_t part_offset = 0;
  std::uint64_t fat_offset = 0;  // first FAT, image bytes
  std::uint64_t fat_bytes = 0;
  unsigned fats = 0;
};

Fat16Disk fat16_disk(const TempDir& dir) {
  Fat16Disk d;
  const Volume v = make_volume(dir, 2048, 16, 16 * 1024);
  d.img = with_mbr(dir, v.part, 2048);
  d.part_offset = 2048 * 512;
  const std::string boot = rpi::test::read_file(v.part).substr(0, 512);
  auto u16 = [&](int at) { return unsigned(std::uint8_t(boot[at])) | (unsigned(std::uint8_t(boot[at + 1])) << 8); };
  d.fat_offset = d.part_offset + std::uint64_t(u16(14)) * 512;
  d.fat_bytes = std::uint64_t(u16(22)) * 512;
  d.fats = std::uint8_t(boot[16]);
  return d;
}

// Sets FAT16 entry `c` to `value` in every FAT copy (so that the copies agree).
void set_entry(const Fat16Disk& d, std::uint32_t c, std::uint16_t value) {
  rpi::Fd fd = rpi::open_or_throw(d.img.string(), O_RDWR);
  const std::uint8_t b[2] = {std::uint8_t(value & 0xFF), std::uint8_t(value >> 8)};
  for (unsigned k = 0; k < d.fats; ++k) rpi::pwrite_all(fd.get(), b, 2, d.fat_offset + k * d.fat_bytes + c * 2, "fat");
}

std::uint32_t first_cluster(const Fat16Disk& d, const std::string& path) {
  rpi::Fd fd = rpi::open_or_throw(d.img.string(), O_RDONLY);
  const FatVolume vol = FatVolume::open(fd.get(), d.part_offset, 16 * MiB, "disk");
  const auto e = vol.stat(path);
  return e ? e->first_cluster : 0;
}

}  // namespace

TEST_F(FatMapTest, TheUntouchedDiskHasAMap) {
  const Fat16Disk d = fat16_disk(dir);
  EXPECT_TRUE(derive(d.img).has_value());  // else the tests below prove nothing
}

TEST_F(FatMapTest, NoBootSignatureGivesNone) {
  const Fat16Disk d = fat16_disk(dir);
  sh_ok("printf '\\0\\0' | dd of=" + shell_quoted(d.img) + " bs=1 seek=510 conv=notrunc status=none");
  EXPECT_FALSE(derive(d.img).has_value());
}

TEST_F(FatMapTest, GptGivesNone) {
  const Fat16Disk d = fat16_disk(dir);
  sh_ok(
      "printf 'label: gpt\\nstart=2048, size=32768, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\\n' | sfdisk "
      "--no-reread -q " +
      shell_quoted(d.img));
  EXPECT_FALSE(derive(d.img).has_value());
}

TEST_F(FatMapTest, AChainThatLoopsGivesNone) {
  const Fat16Disk d = fat16_disk(dir);
  const std::uint32_t c = first_cluster(d, "file4.bin");
  ASSERT_GE(c, 2u);
  set_entry(d, c + 3, static_cast<std::uint16_t>(c + 1));  // ... c+1 -> c+2 -> c+3 -> c+1
  EXPECT_FALSE(derive(d.img).has_value());
}

TEST_F(FatMapTest, AnOutOfRangeClusterGivesNone) {
  const Fat16Disk d = fat16_disk(dir);
  const std::uint32_t c = first_cluster(d, "file4.bin");
  ASSERT_GE(c, 2u);
  set_entry(d, c, 0xFF00);  // no such cluster, not an end-of-chain mark
  EXPECT_FALSE(derive(d.img).has_value());
}

TEST_F(FatMapTest, AFileStartingInAFreeClusterGivesNone) {
  const Fat16Disk d = fat16_disk(dir);
  const std::uint32_t c = first_cluster(d, "file0.bin");  // 100 bytes: one cluster
  ASSERT_GE(c, 2u);
  set_entry(d, c, 0);  // its data would be left out
  EXPECT_FALSE(derive(d.img).has_value());
}

TEST_F(FatMapTest, APartitionPastTheEndGivesNone) {
  const Fat16Disk d = fat16_disk(dir);
  fs::resize_file(d.img, d.part_offset + 8 * MiB);
  EXPECT_FALSE(derive(d.img).has_value());
}

TEST_F(FatMapTest, OverlappingPartitionsGiveNone) {
  const Fat16Disk d = fat16_disk(dir);
  // A second entry over the first: type 0x83 at sector 4096, 1000 sectors.
  rpi::Fd fd = rpi::open_or_throw(d.img.string(), O_RDWR);
  std::uint8_t e[16] = {0, 0, 0, 0, 0x83, 0, 0, 0, 0x00, 0x10, 0, 0, 0xE8, 0x03, 0, 0};
  rpi::pwrite_all(fd.get(), e, sizeof e, 446 + 16, "mbr");
  EXPECT_FALSE(derive(d.img).has_value());
}

TEST_F(FatMapTest, AFatTypeWithoutAFatGivesNone) {
  const Fat16Disk d = fat16_disk(dir);
  sh_ok("dd if=/dev/zero of=" + shell_quoted(d.img) + " bs=512 seek=2048 count=1 conv=notrunc status=none");
  EXPECT_FALSE(derive(d.img).has_value());
}

TEST_F(FatMapTest, TinyOrEmptyFilesGiveNone) {
  const fs::path a = dir / "empty.img", b = dir / "short.img";
  rpi::test::write_file(a, "");
  rpi::test::write_file(b, std::string(100, '\x55'));
  EXPECT_FALSE(derive(a).has_value());
  EXPECT_FALSE(derive(b).has_value());
}

TEST_F(FatMapTest, ANonFatPartitionIsNotMapped) {
  // A Linux partition only: nothing is derived (the whole image is written).
  const Volume v = make_volume(dir, 2048, 16, 16 * 1024);
  const fs::path img = with_mbr(dir, v.part, 2048, 0x83);
  EXPECT_FALSE(derive(img).has_value());
}
