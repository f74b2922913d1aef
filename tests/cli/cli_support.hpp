// Helpers shared by the CLI tests: the example specs, the fixture tarball, a
// written card's FAT against its image.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>

#include "test_support.hpp"

namespace rpi::test {

inline std::filesystem::path example(const std::string& name) {
  return source_dir() / "examples" / name;
}
// The small fixture tarball most CLI tests build from.
inline std::filesystem::path tarball() {
  return fixture_tarball({"--size-mb", "4"});
}
// The command line of the built tool with its scratch folders in `tmp`.
inline std::string tool_in(const std::filesystem::path& tmp) {
  return "TMPDIR=" + shell_quoted(tmp) + " " + shell_quoted(cli_path());
}
inline bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

// The FAT partition (MBR entry 1) of `card`, written from `image` without a
// .bmap (only where its FAT holds data): fsck.fat -n passes on it, mtools reads
// the same files from it as from the image, and the card still holds its old
// 'c' bytes somewhere (not every byte was written). Scratch files go to `work`.
// Oracles independent of rpi-provision: the MBR bytes, fsck.fat, mtools, diff.
inline void expect_same_fat(const std::filesystem::path& card, const std::filesystem::path& image,
                            const std::filesystem::path& work) {
  std::string mbr(512, '\0');
  {
    std::ifstream in(image, std::ios::binary);
    in.read(mbr.data(), 512);
  }
  auto le32 = [&](std::size_t at) {
    std::uint64_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(mbr[at + i]);
    return v;
  };
  const std::uint64_t start = le32(454), sectors = le32(458);
  ASSERT_GT(sectors, 0u);
  std::filesystem::remove_all(work);
  std::filesystem::create_directories(work / "card");
  std::filesystem::create_directories(work / "image");
  const std::filesystem::path cut = work / "part.img";
  auto r = sh("dd if='" + card.string() + "' of='" + cut.string() + "' bs=512 skip=" + std::to_string(start) +
              " count=" + std::to_string(sectors) + " status=none");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run({"fsck.fat", "-n", cut.string()});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string at = "@@" + std::to_string(start * 512);
  for (const auto& [from, to] : {std::pair{card, work / "card"}, std::pair{image, work / "image"}}) {
    r = run({"mcopy", "-s", "-n", "-m", "-i", from.string() + at, "::/*", to.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  r = run({"diff", "-r", (work / "card").string(), (work / "image").string()});
  EXPECT_EQ(r.exit_code, 0) << "the card's files are not the image's: " << r.out << r.err;
  EXPECT_NE(read_file(card).find(std::string(4096, 'c')), std::string::npos)
      << "every byte was written: free clusters too";
  std::filesystem::remove_all(work);
}

}  // namespace rpi::test
