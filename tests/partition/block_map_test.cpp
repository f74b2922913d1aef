#include <gtest/gtest.h>

#include "partition/block_map.hpp"
#include "rpi/digest.hpp"
#include "rpi/error.hpp"

using namespace rpi::partition;

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
