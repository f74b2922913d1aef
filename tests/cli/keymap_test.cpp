// [system] keymap against the keymaps of the tarball's kbd-bkeymaps apk: a
// keymap the card's package does not have stops the build (exit 2, at the
// keymap's place in the spec, with a did-you-mean from the apk's own list)
// and leaves no file behind. Oracles: the spec's text (line and column), the
// fixture's apk listed by GNU tar, the folder's contents after the run.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace fs = std::filesystem;
using rpi::test::TempDir;

namespace {

// The fixture tarball with a kbd-bkeymaps apk (scripts/make-fixture-tarball --kbd-bkeymaps).
fs::path keymap_tarball() {
  return rpi::test::fixture_tarball({"--size-mb", "4", "--kbd-bkeymaps"});
}

bool has(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

// A spec whose keymap is `keymap`, on line 3 (its value at column 10).
fs::path spec_with(const TempDir& dir, const std::string& keymap) {
  const fs::path p = dir / "kiosk.toml";
  rpi::test::write_file(
      p, "[system]\nhostname = \"pi\"\nkeymap = \"" + keymap + "\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  return p;
}

rpi::test::CommandResult build(const fs::path& spec, const fs::path& tarball, const fs::path& output,
                               std::vector<std::string> more = {}) {
  std::vector<std::string> args{"--spec",   spec.string(),   "--tarball", tarball.string(),
                                "--output", output.string(), "--size",    "64MiB"};
  args.insert(args.end(), more.begin(), more.end());
  return rpi::test::cli(args);
}

// Every name in `dir` but the spec, one per line (hidden temporaries too).
std::string left_in(const fs::path& dir) {
  std::string out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename() != "kiosk.toml") out += e.path().filename().string() + "\n";
  return out;
}

}  // namespace

TEST(Keymap, FixtureApkHasTheKeymapsTheTestsUse) {
  RPI_REQUIRE_TOOL("tar");
  TempDir d;
  auto r = rpi::test::sh("tar -xzOf '" + keymap_tarball().string() +
                         "' ./apks/aarch64/kbd-bkeymaps-2.7.4-r0.apk | tar -tzf - 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(has(r.out, "usr/share/bkeymaps/de/de-nodeadkeys.bmap.gz\n")) << r.out;
  EXPECT_TRUE(has(r.out, "usr/share/bkeymaps/fr/fr-azerty.bmap.gz\n")) << r.out;
  EXPECT_FALSE(has(r.out, "usr/share/bkeymaps/de/de-nodeadkey.bmap.gz")) << r.out;
  EXPECT_FALSE(has(r.out, "usr/share/bkeymaps/xx/")) << r.out;
}

TEST(Keymap, AKeymapThePackageLacksStopsTheBuildAndLeavesNothing) {
  TempDir d;
  auto r = build(spec_with(d, "de de-nodeadkey"), keymap_tarball(), d / "pi.img");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(has(r.err, "kiosk.toml:3:10: [system].keymap \"de de-nodeadkey\" is not in Alpine 3.22.2's kbd-bkeymaps"))
      << r.err;
  EXPECT_TRUE(has(r.err, "(did you mean \"de de-nodeadkeys\"?)")) << r.err;
  EXPECT_EQ(left_in(d.path()), "");

  // No close one: the layout's own maps, or that there is no such layout.
  r = build(spec_with(d, "fr fr-bepo-latin9"), keymap_tarball(), d / "pi.img");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(has(r.err, "(the layout fr has fr, fr-azerty)")) << r.err;
  r = build(spec_with(d, "xx xx"), keymap_tarball(), d / "pi.img");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(has(r.err, "(it has no layout \"xx\")")) << r.err;
  EXPECT_EQ(left_in(d.path()), "");
}

// The Alpine release, when the tarball's name (or the mirror) tells it, names the package.
TEST(Keymap, TheMessageNamesTheAlpineRelease) {
  TempDir d;
  const fs::path named = d / "alpine-rpi-3.22.2-aarch64.tar.gz";
  fs::copy_file(keymap_tarball(), named);
  auto r = build(spec_with(d, "de de-nodeadkey"), named, d / "pi.img");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(has(r.err,
                  "kiosk.toml:3:10: [system].keymap \"de de-nodeadkey\" is not in Alpine 3.22.2's "
                  "kbd-bkeymaps: the Pi's keyboard would stay US (did you mean \"de de-nodeadkeys\"?)"))
      << r.err;
  EXPECT_EQ(left_in(d.path()), "alpine-rpi-3.22.2-aarch64.tar.gz\n");
}

// The tarball's own .alpine-release ("alpine-rpi-3.21.4 251010") names the
// release when its file name does not; it wins over the name.
TEST(Keymap, TheMessageNamesTheReleaseOfTheTarballsAlpineRelease) {
  TempDir d;
  const fs::path older = rpi::test::fixture_tarball({"--size-mb", "4", "--kbd-bkeymaps", "--version", "3.21.4"});
  ASSERT_TRUE(has(rpi::test::sh("tar -xzOf '" + older.string() + "' ./.alpine-release").out, "alpine-rpi-3.21.4 "))
      << "the fixture does not do what it claims";
  for (const std::string name : {"boot.tar.gz", "alpine-rpi-3.22.2-aarch64.tar.gz"}) {
    SCOPED_TRACE(name);
    const fs::path tb = d / name;
    fs::copy_file(older, tb, fs::copy_options::overwrite_existing);
    for (const bool dry_run : {false, true}) {
      auto r = build(spec_with(d, "de de-nodeadkey"), tb, d / "pi.img",
                     dry_run ? std::vector<std::string>{"--dry-run"} : std::vector<std::string>{});
      EXPECT_EQ(r.exit_code, 2) << r.err;
      EXPECT_TRUE(has(r.err,
                      "kiosk.toml:3:10: [system].keymap \"de de-nodeadkey\" is not in Alpine 3.21.4's "
                      "kbd-bkeymaps: the Pi's keyboard would stay US (did you mean \"de de-nodeadkeys\"?)"))
          << r.err;
    }
    fs::remove(tb);
    EXPECT_EQ(left_in(d.path()), "");
  }
}

// Without .alpine-release and a release in its name, the message names the package.
TEST(Keymap, WithoutAReleaseTheMessageNamesThePackage) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  const fs::path tb = d / "keymaps.tar.gz";
  auto made = rpi::test::run(
      {"python3", (rpi::test::source_dir() / "tests/partition/make_tarball.py").string(), "keymaps", tb.string()});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  auto r = build(spec_with(d, "de de-nodeadkey"), tb, d / "pi.img");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(has(r.err,
                  "kiosk.toml:3:10: [system].keymap \"de de-nodeadkey\" is not in the tarball's "
                  "apks/aarch64/kbd-bkeymaps-2.7.4-r0.apk"))
      << r.err;
}

TEST(Keymap, AKeymapThePackageHasBuilds) {
  TempDir d;
  auto r = build(spec_with(d, "de de-nodeadkeys"), keymap_tarball(), d / "pi.img");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(d / "pi.img"));
  EXPECT_TRUE(fs::exists(d / "pi.img.bmap"));
}

// A tarball without kbd-bkeymaps (a custom one): nothing to check against.
TEST(Keymap, WithoutThePackageNothingIsChecked) {
  TempDir d;
  auto r = build(spec_with(d, "de de-nodeadkey"), rpi::test::fixture_tarball({"--size-mb", "4"}), d / "pi.img");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(d / "pi.img"));
}

// --dry-run fails where the run fails, with the run's message (the plan reads
// the same kbd-bkeymaps from the tarball); a keymap of the wrong form is a
// spec error before that.
TEST(Keymap, DryRunRefusesWhatTheBuildRefuses) {
  TempDir d;
  auto run = build(spec_with(d, "de de-nodeadkey"), keymap_tarball(), d / "pi.img");
  auto plan = build(spec_with(d, "de de-nodeadkey"), keymap_tarball(), d / "pi.img", {"--dry-run"});
  EXPECT_EQ(plan.exit_code, 2) << plan.err;
  // The error line itself (the spec's line with a caret may follow it).
  const auto error_line = [](const std::string& err) {
    const auto at = err.rfind("rpi-provision: error: ");
    return at == std::string::npos ? std::string() : err.substr(at, err.find('\n', at) - at);
  };
  ASSERT_EQ(run.exit_code, 2) << run.err;
  EXPECT_NE(error_line(run.err), "") << run.err;
  EXPECT_EQ(error_line(plan.err), error_line(run.err));
  EXPECT_TRUE(has(plan.err, "(did you mean \"de de-nodeadkeys\"?)")) << plan.err;
  EXPECT_EQ(left_in(d.path()), "");
  plan = build(spec_with(d, "de de-nodeadkeys"), keymap_tarball(), d / "pi.img", {"--dry-run"});
  EXPECT_EQ(plan.exit_code, 0) << plan.err;
  plan = build(spec_with(d, "de-nodeadkeys"), keymap_tarball(), d / "pi.img", {"--dry-run"});
  EXPECT_EQ(plan.exit_code, 2) << plan.err;
  EXPECT_TRUE(has(plan.err, "needs the layout first")) << plan.err;
}
