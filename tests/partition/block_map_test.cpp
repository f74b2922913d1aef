#include <fcntl.h>

#include <gtest/gtest.h>

#include "partition/block_map.hpp"
#include "rpi/digest.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "test_support.hpp"

using namespace rpi::partition;
using rpi::test::TempDir;
namespace fs = std::filesystem;

namespace {

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Bytes that differ block to block, so a checksum of one range never fits another.
std::string patterned(std::size_t size) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>((i * 131 + i / 4096 * 7) & 0xff);
  return s;
}

void flip_byte(const fs::path& p, std::uint64_t offset) {
  rpi::Fd fd = rpi::open_or_throw(p.string(), O_RDWR);
  char c = 0;
  ASSERT_EQ(rpi::pread_full(fd.get(), &c, 1, offset, "read"), 1u);
  c = static_cast<char>(c ^ 0x40);
  rpi::pwrite_all(fd.get(), &c, 1, offset, "write");
}

// check_bmap_against on the image file: "" when it passes, else the error text.
std::string check(const BlockMap& m, const fs::path& img) {
  rpi::Fd fd = rpi::open_or_throw(img.string(), O_RDONLY);
  try {
    check_bmap_against(m, fd.get(), img.string(), img.string() + ".bmap");
    return "";
  } catch (const rpi::Error& e) {
    EXPECT_EQ(e.code(), rpi::Errc::input);
    return e.what();
  }
}

// read_bmap: "" when it accepts the file, else the error text.
std::string read_error(const fs::path& bmap) {
  try {
    read_bmap(bmap);
    return "";
  } catch (const rpi::Error& e) {
    EXPECT_EQ(e.code(), rpi::Errc::input);
    return e.what();
  }
}

}  // namespace

TEST(BlockMap, AddMergesAndAligns) {
  BlockMap m(100 * 4096 + 100);
  m.add(10, 20);              // block 0
  m.add(4096 * 5, 4096 * 2);  // blocks 5-6
  m.add(4096 * 1, 4096 * 4);  // blocks 1-4: joins both
  ASSERT_EQ(m.extents().size(), 1u);
  EXPECT_EQ(m.extents()[0].offset, 0u);
  EXPECT_EQ(m.extents()[0].length, 7u * 4096);
  m.add(100 * 4096, 50);  // the partial last block, clipped at the image end
  ASSERT_EQ(m.extents().size(), 2u);
  EXPECT_EQ(m.extents()[1].length, 100u);
  EXPECT_EQ(m.mapped_bytes(), 7u * 4096 + 100);
}

TEST(BlockMap, SplitBoundsPieces) {
  BlockMap m(64 << 20);
  m.add(0, 10 << 20);
  m.split(4 << 20);
  ASSERT_EQ(m.extents().size(), 3u);
  EXPECT_EQ(m.extents()[2].length, 2u << 20);
}

TEST(BlockMap, XmlRoundTripAndFileChecksum) {
  BlockMap m(10 * 4096 + 10);
  m.add(0, 4096);
  m.add(5 * 4096, 4096 * 5 + 10);
  std::string xml = m.to_bmap_xml();
  EXPECT_NE(xml.find("<bmap version=\"2.0\">"), std::string::npos);
  EXPECT_NE(xml.find("<BlocksCount> 11 </BlocksCount>"), std::string::npos);
  EXPECT_NE(xml.find("<MappedBlocksCount> 7 </MappedBlocksCount>"), std::string::npos);
  EXPECT_NE(xml.find("<Range> 5-10 </Range>"), std::string::npos);
  // BmapFileChecksum = sha256 of the file with that field zeroed.
  std::size_t at = xml.find("<BmapFileChecksum> ") + 19;
  std::string sum = xml.substr(at, 64);
  std::string zeroed = xml;
  zeroed.replace(at, 64, std::string(64, '0'));
  EXPECT_EQ(sum, rpi::sha256_hex(zeroed));
  BlockMap back = BlockMap::from_bmap_xml(xml, "x.bmap");
  EXPECT_EQ(back.image_size(), m.image_size());
  ASSERT_EQ(back.extents().size(), 2u);
  EXPECT_EQ(back.extents()[1].offset, 5u * 4096);
  EXPECT_EQ(back.extents()[1].length, 5u * 4096 + 10);
}

TEST(BlockMap, BadXmlIsAnInputError) {
  for (const char* bad : {"", "<bmap>", "<bmap version=\"3.0\"></bmap>",
                          "<bmap version=\"2.0\"><ImageSize>10</ImageSize><BlockSize>4096</BlockSize>"
                          "<BlocksCount>9</BlocksCount><BlockMap></BlockMap></bmap>",
                          "<bmap version=\"2.0\"><ImageSize>8192</ImageSize><BlockSize>4096</BlockSize>"
                          "<BlocksCount>2</BlocksCount><BlockMap><Range>1-0</Range></BlockMap></bmap>",
                          "<bmap version=\"2.0\"><ImageSize>8192</ImageSize><BlockSize>4096</BlockSize>"
                          "<BlocksCount>2</BlocksCount><BlockMap><Range chksum=\"zz\">0</Range></BlockMap></bmap>"}) {
    try {
      BlockMap::from_bmap_xml(bad, "bad.bmap");
      ADD_FAILURE() << "accepted: " << bad;
    } catch (const rpi::Error& e) {
      EXPECT_EQ(e.code(), rpi::Errc::input);
      EXPECT_NE(std::string(e.what()).find("bad.bmap"), std::string::npos);
    }
  }
}

TEST(BlockMap, ReadsBmaptoolFilesWithComments) {
  // bmaptool create writes comments that name elements; they must not confuse the reader.
  std::string xml =
      "<?xml version=\"1.0\" ?>\n<!-- This file contains the block map for an image file. BlocksCount is the\n"
      " number of blocks; <BlocksCount> 999 </BlocksCount> -->\n<bmap version=\"2.0\">\n"
      "    <!-- Image size in bytes: 8.0 KiB -->\n    <ImageSize> 8192 </ImageSize>\n"
      "    <BlockSize> 4096 </BlockSize>\n    <BlocksCount> 2 </BlocksCount>\n"
      "    <MappedBlocksCount> 1 </MappedBlocksCount>\n    <ChecksumType> sha256 </ChecksumType>\n"
      "    <BlockMap>\n        <Range> 1 </Range>\n    </BlockMap>\n</bmap>\n";
  BlockMap m = BlockMap::from_bmap_xml(xml, "c.bmap");
  ASSERT_EQ(m.extents().size(), 1u);
  EXPECT_EQ(m.extents()[0].offset, 4096u);
}

// The image changed after its bmap was made: the first range whose bytes no
// longer match is named in blocks (as bmaptool does) and in bytes.
TEST(BlockMap, CheckAgainstImageNamesTheFirstChangedRange) {
  TempDir tmp;
  const std::uint64_t size = 10 * 4096 + 100;
  rpi::test::write_file(tmp / "e.img", patterned(size));
  BlockMap m(size);
  m.add(0, 4096);
  m.add(2 * 4096, 2 * 4096);
  m.add(6 * 4096, 4096);
  m.add(10 * 4096, 100);  // the partial last block
  {
    rpi::Fd fd = rpi::open_or_throw((tmp / "e.img").string(), O_RDONLY);
    m.compute_checksums(fd.get(), "e.img");
  }
  EXPECT_EQ(check(m, tmp / "e.img"), "");
  flip_byte(tmp / "e.img", 5 * 4096 + 3);  // unmapped: not written, not checked
  EXPECT_EQ(check(m, tmp / "e.img"), "");
  flip_byte(tmp / "e.img", 10 * 4096 + 99);  // the last byte of the image, in the last range
  std::string err = check(m, tmp / "e.img");
  EXPECT_TRUE(contains(err, "checksum mismatch for blocks range 10-10 (bytes 40960-41059)")) << err;
  flip_byte(tmp / "e.img", 3 * 4096 + 17);  // an earlier range: that one is named
  err = check(m, tmp / "e.img");
  EXPECT_TRUE(
      contains(err, (tmp / "e.img.bmap").string() + ": checksum mismatch for blocks range 2-3 (bytes 8192-16383)"))
      << err;
  EXPECT_TRUE(contains(err, "the image changed after its .bmap was made")) << err;
  EXPECT_TRUE(contains(err, "rebuild the .bmap")) << err;
  EXPECT_TRUE(contains(err, "remove it to write the whole image")) << err;
}

// A bmap without chksum attributes (bmaptool create --no-checksum, or old
// formats) cannot be checked: its ranges are taken as they are.
TEST(BlockMap, RangesWithoutChecksumAreNotChecked) {
  TempDir tmp;
  const std::string image = patterned(3 * 4096);
  rpi::test::write_file(tmp / "e.img", image);
  const std::string xml =
      "<?xml version=\"1.0\" ?>\n<bmap version=\"2.0\">\n    <ImageSize> 12288 </ImageSize>\n"
      "    <BlockSize> 4096 </BlockSize>\n    <BlocksCount> 3 </BlocksCount>\n"
      "    <MappedBlocksCount> 2 </MappedBlocksCount>\n    <ChecksumType> sha256 </ChecksumType>\n"
      "    <BlockMap>\n        <Range chksum=\"" +
      rpi::sha256_hex(image.substr(0, 4096)) + "\"> 0 </Range>\n        <Range> 2 </Range>\n    </BlockMap>\n</bmap>\n";
  rpi::test::write_file(tmp / "e.img.bmap", xml);
  BlockMap m = read_bmap(tmp / "e.img.bmap");
  ASSERT_EQ(m.extents().size(), 2u);
  EXPECT_TRUE(m.extents()[1].sha256.empty());
  flip_byte(tmp / "e.img", 2 * 4096 + 5);  // in the range without a checksum
  EXPECT_EQ(check(m, tmp / "e.img"), "");
  flip_byte(tmp / "e.img", 5);  // in the range with one
  EXPECT_TRUE(contains(check(m, tmp / "e.img"), "blocks range 0-0 (bytes 0-4095)"));
}

// BmapFileChecksum, checked as bmaptool does: our own files and bmaptool's pass,
// an edited file is refused before its ranges are believed.
TEST(BlockMap, ReadBmapChecksTheFileChecksum) {
  TempDir tmp;
  BlockMap m(8 * 4096);
  m.add(0, 4096);
  m.add(4 * 4096, 2 * 4096);
  rpi::test::write_file(tmp / "e.img", patterned(8 * 4096));
  {
    rpi::Fd fd = rpi::open_or_throw((tmp / "e.img").string(), O_RDONLY);
    m.compute_checksums(fd.get(), "e.img");
  }
  write_bmap(tmp / "e.img.bmap", m);
  EXPECT_EQ(read_error(tmp / "e.img.bmap"), "");
  EXPECT_EQ(read_error(rpi::test::source_dir() / "tests/fuzz/corpus/bmap/bmaptool-2.0.bmap"), "");
  const std::string good = rpi::test::read_file(tmp / "e.img.bmap");

  // One digit of a range checksum changed: parseable, but not the file that was written.
  std::string edited = good;
  std::size_t at = edited.find("chksum=\"") + 8;
  edited[at] = edited[at] == 'a' ? 'b' : 'a';
  rpi::test::write_file(tmp / "e.img.bmap", edited);
  std::string err = read_error(tmp / "e.img.bmap");
  EXPECT_TRUE(contains(err, (tmp / "e.img.bmap").string() + ": BmapFileChecksum mismatch")) << err;
  EXPECT_TRUE(contains(err, "the .bmap was edited or damaged")) << err;

  // A comment changed: only the file checksum can tell.
  edited = good;
  edited.replace(edited.find("written by rpi-provision"), 7, "WRITTEN");
  rpi::test::write_file(tmp / "e.img.bmap", edited);
  EXPECT_TRUE(contains(read_error(tmp / "e.img.bmap"), "BmapFileChecksum mismatch"));

  // The checksum itself changed, or left all zeros (as bmaptool computes it).
  at = good.find("<BmapFileChecksum> ") + 19;
  edited = good;
  edited.replace(at, 64, std::string(64, '0'));
  rpi::test::write_file(tmp / "e.img.bmap", edited);
  EXPECT_TRUE(contains(read_error(tmp / "e.img.bmap"), "BmapFileChecksum mismatch"));
  edited = good;
  edited.replace(at, 3, "XYZ");
  rpi::test::write_file(tmp / "e.img.bmap", edited);
  EXPECT_TRUE(contains(read_error(tmp / "e.img.bmap"), "malformed BmapFileChecksum"));

  // Without a BmapFileChecksum (bmap 1.x before 1.4, hand-written files) there is nothing to check.
  edited = good;
  std::size_t line = edited.find("    <BmapFileChecksum>");
  edited.erase(line, edited.find('\n', line) + 1 - line);
  rpi::test::write_file(tmp / "e.img.bmap", edited);
  EXPECT_EQ(read_error(tmp / "e.img.bmap"), "");
}
