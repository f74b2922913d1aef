// The keymaps of a boot tarball's kbd-bkeymaps apk (partition/apk_keymaps.hpp):
// read from apks made by tests/partition/make_tarball.py as abuild makes them
// (three concatenated gzip streams), against GNU tar's listing of the same
// apk; and how build_images / scan_tarball pass them on, check them before
// any output is made, and leave them unknown for an apk they cannot read.
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "partition/apk_keymaps.hpp"
#include "partition/image.hpp"
#include "partition/tarball_rules.hpp"
#include "rpi/error.hpp"
#include "test_support.hpp"

using namespace rpi::partition;
using rpi::test::TempDir;
namespace fs = std::filesystem;

namespace {

fs::path crafted(const std::string& kind, const TempDir& dir) {
  fs::path out = dir / (kind + ".bin");
  auto r = rpi::test::run(
      {"python3", (rpi::test::source_dir() / "tests/partition/make_tarball.py").string(), kind, out.string()});
  if (r.exit_code != 0) throw std::runtime_error("make_tarball.py " + kind + ": " + r.err);
  return out;
}

// The keymaps GNU tar lists in `apk` (gzip reads the concatenated streams).
std::vector<std::string> tar_listing(const fs::path& apk) {
  auto r = rpi::test::sh("tar -tzf '" + apk.string() +
                         "' 2>/dev/null | sed -n 's|^usr/share/bkeymaps/\\([^/]*\\)/\\([^/]*\\)\\.bmap\\.gz$|\\1 "
                         "\\2|p' | LC_ALL=C sort");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> out;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::string error_of(const std::string& apk, const std::string& name) {
  try {
    apk_keymaps(apk, name);
  } catch (const rpi::Error& e) {
    EXPECT_EQ(e.code(), rpi::Errc::input);
    return e.what();
  }
  return "";
}

bool has(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

}  // namespace

TEST(ApkKeymaps, ReadsTheDataTarOfARealFormatApk) {
  RPI_REQUIRE_TOOL("tar");
  TempDir d;
  const fs::path apk = crafted("apk-keymaps", d);
  const std::vector<std::string> want = tar_listing(apk);
  ASSERT_GE(want.size(), 5u);
  EXPECT_NE(std::find(want.begin(), want.end(), "de de-nodeadkeys"), want.end());
  EXPECT_EQ(apk_keymaps(rpi::test::read_file(apk), "kbd.apk"), want);
  // Three gzip streams whose tars keep their end blocks read the same way.
  const fs::path uncut = crafted("apk-uncut", d);
  EXPECT_EQ(apk_keymaps(rpi::test::read_file(uncut), "kbd.apk"), want);
}

TEST(ApkKeymaps, UnreadableApksAreErrorsNamingThem) {
  TempDir d;
  EXPECT_TRUE(has(error_of(rpi::test::read_file(crafted("apk-random", d)), "apks/x/kbd.apk"), "apks/x/kbd.apk"));
  EXPECT_TRUE(has(error_of(rpi::test::read_file(crafted("apk-truncated", d)), "k.apk"), "not a readable"));
  EXPECT_TRUE(has(error_of(rpi::test::read_file(crafted("apk-other-package", d)), "k.apk"), "holds no keymap"));
  EXPECT_TRUE(has(error_of(rpi::test::read_file(crafted("apk-bomb", d)), "k.apk"), "unpacks to more than 64 MiB"));
  EXPECT_TRUE(has(error_of("", "k.apk"), "not gzip"));
}

TEST(ApkKeymaps, KnowsTheBootRepositorysPackageByName) {
  EXPECT_TRUE(is_keymap_apk({"apks", "aarch64", "kbd-bkeymaps-2.7.4-r0.apk"}));
  EXPECT_FALSE(is_keymap_apk({"apks", "aarch64", "kbd-bkeymaps-extra-1.0-r0.apk"}));
  EXPECT_FALSE(is_keymap_apk({"apks", "aarch64", "kbd-2.7.4-r0.apk"}));
  EXPECT_FALSE(is_keymap_apk({"apks", "kbd-bkeymaps-2.7.4-r0.apk"}));
  EXPECT_FALSE(is_keymap_apk({"other", "aarch64", "kbd-bkeymaps-2.7.4-r0.apk"}));
  EXPECT_FALSE(is_keymap_apk({"apks", "aarch64", "kbd-bkeymaps-2.7.4-r0.apk.sig"}));
}

TEST(ApkKeymaps, ClosestKeymap) {
  const std::vector<std::string> maps = {"de de", "de de-neo", "de de-nodeadkeys", "fr fr", "us us"};
  EXPECT_EQ(closest_keymap("de de-nodeadkey", maps), "de de-nodeadkeys");
  EXPECT_EQ(closest_keymap("de de-ne", maps), "de de-neo");
  EXPECT_EQ(closest_keymap("fr fr-bepo", maps), "");
  EXPECT_EQ(closest_keymap("xx yy", maps), "");
  EXPECT_EQ(closest_keymap("us us", maps), "");  // nothing else for what is there
}

// build_images reads the apk on its way to the card (one pass), gives its
// keymaps to check_keymaps before any output is made, and reports them;
// scan_tarball (--dry-run) reads the same.
TEST(ApkKeymaps, TheBuildChecksTheKeymapsBeforeAnyOutput) {
  RPI_REQUIRE_TOOL("tar");
  TempDir d;
  const fs::path tb = crafted("keymaps", d);
  const std::vector<std::string> want = tar_listing(crafted("apk-keymaps", d));

  ImageOptions o;
  int calls = 0;
  o.check_keymaps = [&](const BootKeymaps& k) {
    ++calls;
    EXPECT_EQ(k.apk, "apks/aarch64/kbd-bkeymaps-2.7.4-r0.apk");
    EXPECT_EQ(k.keymaps, want);
    if (!k.has("de de-nodeadkey")) throw rpi::Error(rpi::Errc::spec, "no such keymap");
  };
  try {
    build_image(tb, d / "pi.img", o);
    ADD_FAILURE() << "the check did not stop the build";
  } catch (const rpi::Error& e) {
    EXPECT_EQ(e.code(), rpi::Errc::spec);
    EXPECT_STREQ(e.what(), "no such keymap");
  }
  EXPECT_EQ(calls, 1);
  for (const auto& entry : fs::directory_iterator(d.path()))
    EXPECT_FALSE(has(entry.path().filename().string(), "pi.img")) << entry.path();

  o.check_keymaps = [&](const BootKeymaps& k) {
    ++calls;
    EXPECT_TRUE(k.has("de de-nodeadkeys"));
  };
  const ImageResult r = build_image(tb, d / "pi.img", o);
  EXPECT_EQ(calls, 2);
  EXPECT_TRUE(r.keymaps.known());
  EXPECT_EQ(r.keymaps.keymaps, want);
  EXPECT_TRUE(fs::exists(d / "pi.img"));

  const TarballScan s = scan_tarball(tb, {});
  EXPECT_TRUE(s.keymaps.known());
  EXPECT_EQ(s.keymaps.keymaps, want);
}

// No kbd-bkeymaps apk: nothing to check against. An apk that cannot be read
// (damaged, not an apk, larger than is buffered): unknown, with a note, and
// the build goes on.
TEST(ApkKeymaps, UnknownKeymapsAreNotChecked) {
  TempDir d;
  for (const std::string kind : {"ok", "keymaps-truncated", "keymaps-random", "keymaps-huge"}) {
    SCOPED_TRACE(kind);
    const fs::path tb = crafted(kind, d);
    ImageOptions o;
    std::vector<std::string> notes;
    o.events = [&](const rpi::Event& e) {
      if (e.type == "note") notes.push_back(e.message);
    };
    o.check_keymaps = [](const BootKeymaps&) { ADD_FAILURE() << "checked against unknown keymaps"; };
    const ImageResult r = build_image(tb, d / (kind + ".img"), o);
    EXPECT_FALSE(r.keymaps.known());
    EXPECT_TRUE(r.keymaps.keymaps.empty());
    const TarballScan s = scan_tarball(tb, {});
    EXPECT_FALSE(s.keymaps.known());
    if (kind == "ok") {
      EXPECT_EQ(r.keymaps.apk, "");
      EXPECT_TRUE(notes.empty());
      continue;
    }
    EXPECT_EQ(r.keymaps.apk, "apks/aarch64/kbd-bkeymaps-2.7.4-r0.apk");
    EXPECT_FALSE(r.keymaps.unknown.empty());
    EXPECT_EQ(s.keymaps.unknown, r.keymaps.unknown);
    ASSERT_EQ(notes.size(), 1u);
    EXPECT_TRUE(has(notes[0], "[system].keymap is not checked")) << notes[0];
    if (kind == "keymaps-huge") {
      EXPECT_TRUE(has(notes[0], "larger than 4 MiB")) << notes[0];
    }
  }
}
