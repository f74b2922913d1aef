// Damaged cache entries (<cache>/tarballs/<sha256> without a usable info file,
// or without the tarball its info names): listed by damaged_cache_entries,
// never by list_cache, removed by prune_cache whatever --keep says; intact
// entries, empty folders (an entry being made) and foreign folders are left.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "fetch/fetch.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using rpi::test::TempDir;
using rpi::test::write_file;

namespace {
fs::path entry(const fs::path& cache, char c) {
  return cache / "tarballs" / std::string(64, c);
}
// An intact entry: its info names the tarball beside it.
void intact(const fs::path& cache, char c, const std::string& version) {
  const fs::path d = entry(cache, c);
  fs::create_directories(d);
  const std::string file = "alpine-rpi-" + version + "-aarch64.tar.gz";
  write_file(d / file, "tarball");
  write_file(d / "info", "file=" + file + "\nversion=" + version +
                             "\narch=aarch64\nbranch=v3.22\nsize=7\nsha256=" + std::string(64, c) + "\nfetched=1\n");
}
}  // namespace

TEST(CacheDamage, GarbledInfoMissingInfoAndMissingTarball) {
  TempDir tmp;
  const fs::path cache = tmp / "cache";
  intact(cache, 'a', "3.22.0");
  fs::create_directories(entry(cache, 'b'));
  write_file(entry(cache, 'b') / "info", std::string("\x01\x02 garbage\n", 11));
  write_file(entry(cache, 'b') / "alpine-rpi-3.22.1-aarch64.tar.gz", std::string(100, 'x'));
  fs::create_directories(entry(cache, 'c'));
  write_file(entry(cache, 'c') / "alpine-rpi-3.22.2-aarch64.tar.gz", "x");  // no info at all
  intact(cache, 'd', "3.22.3");
  fs::remove(entry(cache, 'd') / "alpine-rpi-3.22.3-aarch64.tar.gz");  // info names a tarball that is gone
  fs::create_directories(entry(cache, 'e'));                           // empty: being made
  fs::create_directories(cache / "tarballs" / "not-an-entry");
  write_file(cache / "tarballs" / "not-an-entry" / "x", "x");

  ASSERT_EQ(rpi::fetch::list_cache(cache).size(), 1u);
  const auto damaged = rpi::fetch::damaged_cache_entries(cache);
  ASSERT_EQ(damaged.size(), 3u);
  EXPECT_EQ(damaged[0].dir, entry(cache, 'b'));
  EXPECT_EQ(damaged[0].problem, "its info file is damaged (it names no tarball: no file= line)");
  EXPECT_EQ(damaged[0].bytes, 111u);
  EXPECT_EQ(damaged[1].problem, "it has no info file");
  EXPECT_EQ(damaged[2].problem, "its tarball (alpine-rpi-3.22.3-aarch64.tar.gz) is missing");

  std::vector<rpi::fetch::DamagedEntry> removed_damaged;
  const auto removed = rpi::fetch::prune_cache(cache, 5, nullptr, &removed_damaged);
  EXPECT_TRUE(removed.empty()) << "--keep 5: every intact entry stays";
  EXPECT_EQ(removed_damaged.size(), 3u);
  EXPECT_FALSE(fs::exists(entry(cache, 'b')));
  EXPECT_FALSE(fs::exists(entry(cache, 'c')));
  EXPECT_FALSE(fs::exists(entry(cache, 'd')));
  EXPECT_TRUE(fs::exists(entry(cache, 'a') / "info"));
  EXPECT_TRUE(fs::exists(entry(cache, 'e'))) << "an empty folder may be an entry being made";
  EXPECT_TRUE(fs::exists(cache / "tarballs" / "not-an-entry" / "x"));
  EXPECT_TRUE(rpi::fetch::damaged_cache_entries(cache).empty());
  EXPECT_EQ(rpi::fetch::list_cache(cache).size(), 1u);
}
