// Damaged and hostile images: every case must end in one clear rpi::Error
// (Errc::input, naming the image) or a warning, never a crash or a hang.
#include <fcntl.h>
#include <gtest/gtest.h>

#include <random>

#include "inspect_support.hpp"
#include "partition/reader.hpp"
#include "rpi/error.hpp"

namespace rpi::test::inspect {
namespace {

using namespace rpi::partition;

struct Fixture {
  TempDir dir;
  BuiltImage b;
  Fd fd;
  std::uint64_t size = 0;
  FatInfo info;
  std::uint64_t fat_at(std::uint32_t cluster) const {  // absolute offset of a FAT32 entry in FAT 1
    return kPartOffset + std::uint64_t(info.reserved_sectors) * 512 + std::uint64_t(cluster) * 4;
  }
  std::uint64_t cluster_at(std::uint32_t cluster) const {
    return kPartOffset + (std::uint64_t(info.first_data_sector) + (cluster - 2) * info.sectors_per_cluster) * 512;
  }
  FatVolume open() const { return FatVolume::open(fd.get(), kPartOffset, size - kPartOffset, "card.img"); }
  // The root directory's bytes, following its chain in the FAT with this
  // test's own decoding, and the absolute offset of each cluster.
  std::vector<std::pair<std::uint64_t, std::string>> root_clusters() const {
    std::vector<std::pair<std::uint64_t, std::string>> out;
    const std::string img = read_file(b.image);
    for (std::uint32_t c = info.root_cluster; c >= 2 && c < 0x0FFFFFF8 && out.size() < 1000;) {
      out.emplace_back(cluster_at(c), img.substr(cluster_at(c), info.cluster_bytes()));
      const auto* p = reinterpret_cast<const unsigned char*>(img.data() + fat_at(c));
      c = (p[0] | (p[1] << 8) | (p[2] << 16) | (std::uint32_t(p[3]) << 24)) & 0x0FFFFFFF;
    }
    return out;
  }
  // Every root directory slot in chain order: absolute offset and 32 bytes.
  std::vector<std::pair<std::uint64_t, std::string>> root_slots() const {
    std::vector<std::pair<std::uint64_t, std::string>> out;
    for (auto& [at, bytes] : root_clusters())
      for (std::size_t i = 0; i + 32 <= bytes.size(); i += 32) out.emplace_back(at + i, bytes.substr(i, 32));
    return out;
  }
  // Absolute offset of the root directory slot whose 11-byte name is `name11`.
  std::uint64_t root_slot(const std::string& name11) const {
    for (auto& [at, bytes] : root_slots())
      if (bytes.compare(0, 11, name11) == 0) return at;
    throw std::runtime_error("no root entry " + name11);
  }
};

std::unique_ptr<Fixture> make_fat32() {
  auto f = std::make_unique<Fixture>();
  f->b = build_image(f->dir, "32", true);
  f->fd = open_or_throw(f->b.image.string(), O_RDONLY);
  f->size = fd_size(f->fd.get(), "card.img");
  f->info = f->open().info();
  return f;
}

// Expects `fn` to throw Errc::input whose message contains `needle`.
template <class F>
void expect_input_error(F fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::input) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("card.img"), std::string::npos) << e.what();
  }
}

TEST(Hostile, TruncatedImage) {
  RPI_REQUIRE_IMAGE_TOOLS();
  auto f = make_fat32();
  fs::resize_file(f->b.image, kPartOffset + 64 * 1024);  // cuts into the FATs
  const std::uint64_t size = fd_size(f->fd.get(), "card.img");
  MbrInfo mbr = read_mbr(f->fd.get(), size, "card.img");
  ASSERT_FALSE(mbr.warnings.empty());  // the partition ends past the end of the disk
  EXPECT_NE(mbr.warnings[0].find("past the end"), std::string::npos);
  expect_input_error([&] { FatVolume::open(f->fd.get(), kPartOffset, size - kPartOffset, "card.img"); }, "truncated");
  // Even when the caller trusts the partition size, reads past the end fail cleanly.
  expect_input_error(
      [&] { FatVolume::open(f->fd.get(), kPartOffset, mbr.entries[0].bytes(), "card.img").walk([](auto&, auto&) {}); },
      "truncated");
}

TEST(Hostile, ClusterChainLoopInAFile) {
  RPI_REQUIRE_IMAGE_TOOLS();
  auto f = make_fat32();
  auto e = f->open().stat("boot/initramfs-rpi");
  ASSERT_TRUE(e);
  ASSERT_GT(e->size, 4 * f->info.cluster_bytes());
  patch(f->b.image, f->fat_at(e->first_cluster + 2), le32s(e->first_cluster));  // third cluster -> first
  expect_input_error([&] { f->open().read_file("boot/initramfs-rpi", 1 << 20); }, "loops back");
}

TEST(Hostile, ClusterChainLoopInTheRootDirectory) {
  RPI_REQUIRE_IMAGE_TOOLS();
  auto f = make_fat32();
  patch(f->b.image, f->fat_at(f->info.root_cluster), le32s(f->info.root_cluster));
  expect_input_error([&] { f->open(); }, "loops back");
  auto r = cli({"inspect", f->b.image.string()});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("loops back"), std::string::npos) << r.err;
}

TEST(Hostile, FatEntryPointingOutsideTheVolume) {
  RPI_REQUIRE_IMAGE_TOOLS();
  auto f = make_fat32();
  auto e = f->open().stat("boot/vmlinuz-rpi");
  ASSERT_TRUE(e);
  patch(f->b.image, f->fat_at(e->first_cluster), le32s(f->info.clusters + 50));
  expect_input_error([&] { f->open().read_file("boot/vmlinuz-rpi", 1 << 20); }, "outside the volume");
  // A directory entry whose first cluster is outside the volume.
  auto d = f->open().stat("overlays");
  ASSERT_TRUE(d);
  patch(f->b.image, f->fat_at(e->first_cluster), le32s(0x0FFFFFFF));  // repair the file
  // Point the "overlays" short entry far away (FstClusHI).
  patch(f->b.image, f->root_slot("OVERLAYS   ") + 20, le16s(0x7FFF));
  expect_input_error([&] { f->open().list("overlays"); }, "outside the volume");
}

// A subdirectory whose entry points back at the root: the walk must not loop.
TEST(Hostile, DirectoryLinkedBackToTheRoot) {
  RPI_REQUIRE_IMAGE_TOOLS();
  auto f = make_fat32();
  const std::uint64_t at = f->root_slot("OVERLAYS   ");
  patch(f->b.image, at + 20, le16s(static_cast<std::uint16_t>(f->info.root_cluster >> 16)));
  patch(f->b.image, at + 26, le16s(static_cast<std::uint16_t>(f->info.root_cluster & 0xFFFF)));
  FatVolume vol = f->open();
  int visits = 0;
  vol.walk([&](const std::string&, const FatEntry&) { ++visits; });
  EXPECT_LT(visits, 100);
  auto w = vol.warnings();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_NE(w[0].find("cross-linked"), std::string::npos) << w[0];
  auto r = cli({"inspect", f->b.image.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("cross-linked"), std::string::npos) << r.out;
}

TEST(Hostile, LongNameWithBadChecksumFallsBackToTheShortName) {
  RPI_REQUIRE_IMAGE_TOOLS();
  auto f = make_fat32();
  // Corrupt the checksum of every long-name slot in front of the short entry
  // (a short entry and its two slots may straddle clusters: read them one by one).
  auto all = f->root_slots();
  std::size_t idx = 0;
  while (idx < all.size() && all[idx].second.compare(0, 11, "LONGFI~1DAT") != 0) ++idx;
  ASSERT_LT(idx, all.size());
  int slots = 0;
  for (std::size_t i = idx; i > 0 && (static_cast<unsigned char>(all[i - 1].second[11]) & 0x3F) == 0x0F; --i, ++slots)
    patch(f->b.image, all[i - 1].first + 13, std::string(1, static_cast<char>(all[i - 1].second[13] ^ 0x5A)));
  ASSERT_EQ(slots, 2);
  FatVolume vol = f->open();
  auto e = vol.stat("LONGFI~1.DAT");
  ASSERT_TRUE(e);
  EXPECT_FALSE(e->has_long_name);
  EXPECT_EQ(e->name, "LONGFI~1.DAT");
  EXPECT_FALSE(vol.stat("longfilename_here.dat"));
  EXPECT_EQ(vol.read_file("LONGFI~1.DAT", 1 << 20), f->b.files["longfilename_here.dat"]);
  auto w = vol.warnings();
  ASSERT_EQ(w.size(), 1u);
  EXPECT_NE(w[0].find("bad checksum"), std::string::npos) << w[0];
  // mtools drops the long name too.
  if (have_tool("mdir")) {
    auto md =
        sh("MTOOLS_SKIP_CHECK=1 mdir -b -i '" + f->b.image.string() + "@@" + std::to_string(kPartOffset) + "' ::");
    EXPECT_EQ(md.out.find("longfilename_here.dat"), std::string::npos) << md.out;
  }
}

TEST(Hostile, ZeroedBootSectorFields) {
  RPI_REQUIRE_IMAGE_TOOLS();
  auto f = make_fat32();
  const std::string original = read_file(f->b.image).substr(kPartOffset, 512);
  struct Case {
    std::uint64_t off, len;
    const char* needle;
  };
  const Case cases[] = {{11, 2, "bytes per sector"},
                        {13, 1, "sectors per cluster"},
                        {14, 2, "reserved sectors"},
                        {16, 1, "FATs"},
                        {32, 4, "total sector count"},
                        {36, 4, "FAT size is 0"},
                        {510, 2, "55 AA"},
                        {44, 4, "root directory cluster"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.needle);
    patch(f->b.image, kPartOffset, original);
    patch(f->b.image, kPartOffset + c.off, std::string(c.len, '\0'));
    expect_input_error([&] { f->open(); }, c.needle);
    auto r = cli({"inspect", f->b.image.string()});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << r.err;
  }
}

TEST(Hostile, RandomBytesAreNotAnImage) {
  TempDir dir;
  fs::path p = dir / "random.bin";
  std::string data = pseudo_random(1 << 20, 42);
  data[510] = 0x12;  // make sure there is no boot signature
  write_file(p, data);
  auto r = cli({"inspect", p.string()});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("not a disk image"), std::string::npos) << r.err;
  write_file(p, "tiny");
  r = cli({"inspect", p.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not a disk image"), std::string::npos) << r.err;
  r = cli({"inspect", (dir / "missing.img").string()});
  EXPECT_EQ(r.exit_code, 1);
  r = cli({"inspect", dir.path().string()});  // a directory
  EXPECT_EQ(r.exit_code, 1);
}

// Random sector 0 with a valid signature: partition entries full of garbage.
TEST(Hostile, RandomPartitionTables) {
  TempDir dir;
  fs::path p = dir / "r.img";
  for (std::uint32_t seed = 1; seed <= 200; ++seed) {
    std::string data = pseudo_random(64 * 1024, seed);
    data[510] = 0x55;
    data[511] = static_cast<char>(0xAA);
    if (seed % 2) data[446 + 4] = 0x0c;  // force a FAT type on entry 1
    write_file(p, data);
    Fd fd = open_or_throw(p.string(), O_RDONLY);
    try {
      MbrInfo mbr = read_mbr(fd.get(), data.size(), "r.img");
      for (auto& e : mbr.entries) {
        if (!e.used() || e.offset() >= data.size()) continue;
        try {
          FatVolume::open(fd.get(), e.offset(), std::min<std::uint64_t>(e.bytes(), data.size() - e.offset()), "r.img")
              .walk([](auto&, auto&) {});
        } catch (const Error& err) {
          EXPECT_EQ(err.code(), Errc::input) << err.what();
        }
      }
    } catch (const Error& err) {
      EXPECT_EQ(err.code(), Errc::input) << err.what();
    }
  }
}

// Mutation fuzzing of the metadata (boot sector, FSInfo, FATs, root): the
// reader either works or throws rpi::Error; every mutation is undone.
TEST(Hostile, MutatedMetadataNeverCrashes) {
  RPI_REQUIRE_IMAGE_TOOLS();
  auto f = make_fat32();
  const std::uint64_t meta = (std::uint64_t(f->info.first_data_sector) + 64) * 512;
  const std::string original = read_file(f->b.image).substr(kPartOffset, meta);
  std::mt19937 rng(1234);
  int errors = 0, ok = 0;
  for (int round = 0; round < 300; ++round) {
    patch(f->b.image, kPartOffset, original);
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < flips; ++i) {
      // Half the mutations hit the boot sector, FSInfo and the FAT start.
      std::uint64_t at = (rng() % 2) ? rng() % 1024 : rng() % meta;
      if (rng() % 3 == 0) at = std::uint64_t(f->info.reserved_sectors) * 512 + rng() % 4096;
      if (rng() % 3 == 0) at = std::uint64_t(f->info.first_data_sector) * 512 + rng() % 4096;
      patch(f->b.image, kPartOffset + at, std::string(1, static_cast<char>(rng() & 0xFF)));
    }
    try {
      FatVolume vol = f->open();
      vol.walk([&](const std::string& path, const FatEntry& e) {
        if (!e.is_directory()) {
          try {
            vol.read_file(path, 1 << 20);
          } catch (const Error& err) {
            EXPECT_EQ(err.code(), Errc::input) << err.what();
          }
        }
      });
      find_apkovls(vol);
      ++ok;
    } catch (const Error& err) {
      EXPECT_EQ(err.code(), Errc::input) << err.what();
      ++errors;
    }
  }
  EXPECT_GT(ok, 0);
  EXPECT_GT(errors, 0);
}

}  // namespace
}  // namespace rpi::test::inspect
