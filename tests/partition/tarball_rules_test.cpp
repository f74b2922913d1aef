// The rules a boot tarball meets (partition/tarball_rules.hpp), one by one,
// and scan_tarball (what --dry-run reads) against build_images on the same
// tarballs: the same errors, the same root files (read back with tar), the
// same apkovls left out.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <locale.h>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "partition/image.hpp"
#include "partition/tarball_rules.hpp"
#include "rpi/error.hpp"
#include "test_support.hpp"

using namespace rpi::partition;
using rpi::test::TempDir;
namespace fs = std::filesystem;

namespace {

// What `fn` throws as rpi::Error, or "" when it returns.
template <class F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const rpi::Error& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

fs::path crafted(const std::string& kind, const TempDir& dir) {
  fs::path out = dir / (kind + ".tar.gz");
  auto r = rpi::test::run(
      {"python3", (rpi::test::source_dir() / "tests/partition/make_tarball.py").string(), kind, out.string()});
  if (r.exit_code != 0) throw std::runtime_error("make_tarball.py " + kind + ": " + r.err);
  return out;
}

// A root that holds `entries` (name -> is a folder), matched without case as FAT does.
RootLookup root_of(std::map<std::string, bool> entries) {
  return [entries](const std::string& name) -> std::optional<bool> {
    for (const auto& [n, dir] : entries)
      if (same_fat_name(n, name)) return dir;
    return std::nullopt;
  };
}

}  // namespace

TEST(TarballRules, EntryPathsAreNormalisedOrRefused) {
  EntryPath p = parse_entry_path("./boot//./vmlinuz-rpi", "t.tar.gz");
  EXPECT_EQ(p.parts, (std::vector<std::string>{"boot", "vmlinuz-rpi"}));
  EXPECT_EQ(p.display, "./boot//./vmlinuz-rpi");
  EXPECT_TRUE(parse_entry_path("./", "t.tar.gz").parts.empty());
  EXPECT_EQ(parse_entry_path("a\x01"
                             "b",
                             "t.tar.gz")
                .display,
            "a\\x01b");

  EXPECT_TRUE(has(error_of([] { parse_entry_path("/etc/passwd", "t.tar.gz"); }),
                  "t.tar.gz: entry '/etc/passwd' has an absolute path"));
  EXPECT_TRUE(has(error_of([] { parse_entry_path("a/../../b", "t.tar.gz"); }), "has a '..' component"));
  EXPECT_TRUE(has(error_of([] { parse_entry_path(nullptr, "t.tar.gz"); }), "not valid UTF-8"));
  EXPECT_TRUE(has(error_of([] { parse_entry_path("", "t.tar.gz"); }), "an empty name"));
  // kMaxEntryDepth levels, and one more.
  std::string deep;
  for (std::size_t i = 0; i < kMaxEntryDepth; ++i) deep += "d/";
  EXPECT_EQ(parse_entry_path((deep + "f").substr(0, deep.size() - 1).c_str(), "t").parts.size(), kMaxEntryDepth);
  EXPECT_TRUE(has(error_of([&] { parse_entry_path((deep + "f").c_str(), "t"); }), "nested deeper than 32"));
}

TEST(TarballRules, OnlyFilesFolderAndHardLinksWithinFatsLimitAreStored) {
  EXPECT_EQ(error_of([] { check_entry(S_IFREG, false, 0xFFFFFFFFll, "t", "f"); }), "");
  EXPECT_EQ(error_of([] { check_entry(S_IFDIR, false, 0, "t", "d"); }), "");
  EXPECT_EQ(error_of([] { check_entry(S_IFREG, true, 0, "t", "l"); }), "");
  EXPECT_TRUE(has(error_of([] { check_entry(S_IFREG, false, 0x100000000ll, "t", "f"); }),
                  "t: entry 'f' has 4 GiB, more than FAT's file size limit of 4 GiB - 1"));
  EXPECT_TRUE(has(error_of([] { check_entry(S_IFLNK, false, 0, "t", "l"); }), "'l' is a symbolic link"));
  EXPECT_TRUE(has(error_of([] { check_entry(S_IFCHR, false, 0, "t", "c"); }), "'c' is a device node"));
  EXPECT_TRUE(has(error_of([] { check_entry(S_IFBLK, false, 0, "t", "b"); }), "'b' is a device node"));
  EXPECT_TRUE(has(error_of([] { check_entry(S_IFIFO, false, 0, "t", "p"); }), "'p' is a FIFO"));
  EXPECT_TRUE(has(error_of([] { check_entry(S_IFSOCK, false, 0, "t", "s"); }), "'s' is a socket"));
}

TEST(TarballRules, OldApkovlsAreTheRootApkovlsInAnyCase) {
  EXPECT_TRUE(is_old_apkovl("rpi.apkovl.tar.gz"));
  EXPECT_TRUE(is_old_apkovl("RPI.APKOVL.TAR.GZ"));
  EXPECT_TRUE(is_old_apkovl("host.apkovl.tar.gz.aes-256-cbc"));  // encrypted by lbu
  EXPECT_FALSE(is_old_apkovl("apkovl.tar.gz"));
  EXPECT_FALSE(is_old_apkovl("cmdline.txt"));
  EXPECT_EQ(left_out_apkovl_note("rpi.apkovl.tar.gz"),
            "left out the tarball's rpi.apkovl.tar.gz (the card gets exactly one apkovl)");
}

TEST(TarballRules, EditsFindTheirFileInAnyCase) {
  EXPECT_TRUE(same_fat_name("cmdline.txt", "CMDLINE.TXT"));
  EXPECT_TRUE(same_fat_name("cmdline.txt", "CmdLine.txt"));
  EXPECT_FALSE(same_fat_name("cmdline.txt", "cmdline.txt "));
  EXPECT_FALSE(same_fat_name("cmdline.txt", "cmdline.tx"));
  EXPECT_FALSE(same_fat_name("\xff", "\xfe"));
  Edits edits;
  edits["cmdline.txt"] = nullptr;
  EXPECT_EQ(find_edit(edits, "CMDLINE.TXT"), edits.begin());
  EXPECT_EQ(find_edit(edits, "config.txt"), edits.end());
}

TEST(TarballRules, NonAsciiLettersFoldAsOnTheFat) {
  // As build_images and scan_tarball run: under a UTF-8 locale.
  locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(0));
  if (!utf8) GTEST_SKIP() << "no C.UTF-8 locale";
  locale_t old = uselocale(utf8);
  EXPECT_TRUE(same_fat_name("Ärger.txt", "ärger.txt"));
  EXPECT_FALSE(same_fat_name("Ärger.txt", "arger.txt"));
  uselocale(old);
  freelocale(utf8);
}

TEST(TarballRules, AnEditReadsAtMostOneMiB) {
  EXPECT_EQ(error_of([] { check_edit_size("t", "cmdline.txt", kMaxEditedBytes); }), "");
  EXPECT_EQ(error_of([] { check_edit_size("t", "cmdline.txt", kMaxEditedBytes + 1); }),
            "t: entry 'cmdline.txt' is too large to edit (over 1 MiB)");
}

TEST(TarballRules, BootFilesAreTwoFilesAndAFolder) {
  EXPECT_TRUE(missing_boot_files(root_of({{"cmdline.txt", false}, {"config.txt", false}, {"boot", true}})).empty());
  EXPECT_TRUE(missing_boot_files(root_of({{"CMDLINE.TXT", false}, {"Config.txt", false}, {"BOOT", true}})).empty());
  EXPECT_EQ(missing_boot_files(root_of({})), (std::vector<std::string>{"cmdline.txt", "config.txt", "boot/"}));
  EXPECT_EQ(missing_boot_files(root_of({{"cmdline.txt", true}, {"config.txt", false}, {"boot", false}})),
            (std::vector<std::string>{"cmdline.txt", "boot/"}));
  EXPECT_EQ(error_of([] { require_boot_files("t", {}); }), "");
  EXPECT_EQ(error_of([] {
              require_boot_files("t", {"config.txt", "boot/"});
            }),
            "t does not look like an Alpine Raspberry Pi tarball (no config.txt, boot/); use --force to write it "
            "anyway");
  EXPECT_FALSE(edit_finds_no_file(root_of({{"CMDLINE.TXT", false}}), "cmdline.txt"));
  EXPECT_TRUE(edit_finds_no_file(root_of({{"cmdline.txt", true}}), "cmdline.txt"));
  EXPECT_TRUE(edit_finds_no_file(root_of({}), "cmdline.txt"));
  EXPECT_EQ(edit_not_applied_warning("cmdline.txt"),
            "the tarball has no cmdline.txt: the changes the spec makes to it are not applied");
}

// scan_tarball reads what the build reads: for each tarball, the build's error
// (or none) is the scan's.
TEST(TarballScan, FailsWhereTheBuildFailsWithItsMessage) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  ImageOptions o;
  o.edits["cmdline.txt"] = [](const std::string& s) { return s + " consoleblank=0"; };
  o.extra_files.push_back({"usercfg.txt", "enable_uart=1\n"});
  o.image_size = 64ull << 20;
  ImageOptions forced = o;
  forced.force = true;
  const std::vector<std::string> kinds = {"ok",
                                          "absolute",
                                          "dotdot",
                                          "colon",
                                          "control-char",
                                          "trailing-dot",
                                          "case-collision",
                                          "duplicate",
                                          "symlink",
                                          "hardlink",
                                          "hardlink-missing",
                                          "device",
                                          "fifo",
                                          "huge-entry",
                                          "empty",
                                          "no-boot-files",
                                          "not-tar",
                                          "random",
                                          "bad-utf8",
                                          "deep",
                                          "crc",
                                          "truncated-gzip",
                                          "isize",
                                          "trailing-garbage",
                                          "zero-bytes",
                                          "folder",
                                          "upper-cmdline",
                                          "big-cmdline",
                                          "hardlink-cmdline",
                                          "dir-cmdline",
                                          "nested-apkovl",
                                          "nonascii-collision",
                                          "dir-usercfg",
                                          "in-usercfg"};
  int failures = 0;
  for (const auto& kind : kinds) {
    const fs::path t = crafted(kind, d);
    for (const ImageOptions* opt : {&o, &forced}) {
      const std::string built = error_of([&] { build_image(t, d / "x.img", *opt); });
      const std::string scanned = error_of([&] { scan_tarball(t, *opt); });
      EXPECT_EQ(scanned, built) << kind << (opt->force ? " (force)" : "");
      failures += !built.empty();
      fs::remove(d / "x.img");
      fs::remove(d / "x.img.bmap");
    }
  }
  // Every case but ok, hardlink, upper-cmdline and nested-apkovl is refused; no-boot-files and
  // dir-cmdline only without force.
  EXPECT_EQ(failures, 58);
}

// A root folder named like a file the card places at the root (usercfg.txt
// here), or a member inside one, is refused by name by both: the build said
// "appears twice" (the folder's entry came first), the scan passed it.
TEST(TarballScan, AFolderWhereTheCardNeedsItsFileIsRefusedByBoth) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  ImageOptions o;
  o.extra_files.push_back({"usercfg.txt", "enable_uart=1\n"});
  for (const auto& [kind, entry] :
       std::vector<std::pair<std::string, std::string>>{{"dir-usercfg", "'usercfg.txt' (entry './usercfg.txt/')"},
                                                        {"in-usercfg", "'USERCFG.TXT' (entry './USERCFG.TXT/note')"}}) {
    const fs::path t = crafted(kind, d);
    const std::string want = t.string() + ": it has a folder " + entry +
                             " where the card needs its own file usercfg.txt; take the folder out of the tarball";
    EXPECT_EQ(error_of([&] { build_image(t, d / "x.img", o); }), want) << kind;
    EXPECT_EQ(error_of([&] { scan_tarball(t, o); }), want) << kind;
    EXPECT_FALSE(fs::exists(d / "x.img")) << kind;
    // A card without a usercfg.txt of its own takes the folder.
    EXPECT_EQ(error_of([&] { scan_tarball(t, ImageOptions{}); }), "") << kind;
  }
}

// .alpine-release: "<image name>-<release> <build date>" (alpine-facts §2).
TEST(TarballRules, AlpineReleaseIsTheReleaseNumberOfItsFirstWord) {
  EXPECT_EQ(alpine_release_of("alpine-rpi-3.22.2 251010\n"), "3.22.2");
  EXPECT_EQ(alpine_release_of("alpine-rpi-3.12.0 200529\n"), "3.12.0");
  EXPECT_EQ(alpine_release_of("3.21.4\n"), "3.21.4");
  EXPECT_EQ(alpine_release_of("3.21.4"), "3.21.4");
  EXPECT_EQ(alpine_release_of("alpine-rpi-3.23.0_rc1 251101\r\n"), "3.23.0_rc1");
  for (const char* bad : {"", "\n", "alpine-rpi-edge 251010\n", "hello", "3", "alpine-rpi-3.22.2$(x) 1\n",
                          "alpine-rpi-3.22.2\x1b[2J 1\n", "x-.3.22\n"})
    EXPECT_EQ(alpine_release_of(bad), "") << bad;
}

// tarball_release reads the root .alpine-release wherever it is in the tarball
// (the oracle: tar itself), nothing from a folder's, and fails as the build
// fails on what is not a tar.gz.
TEST(TarballRelease, IsTheRootAlpineReleaseAsTarReadsIt) {
  RPI_REQUIRE_TOOL("python3");
  RPI_REQUIRE_TOOL("tar");
  TempDir d;
  const fs::path first = rpi::test::fixture_tarball({"--size-mb", "1", "--version", "3.23.0_rc1"});
  const auto tar_reads = [](const fs::path& t) {
    return rpi::test::run({"tar", "-xzOf", t.string(), "./.alpine-release"}).out;
  };
  EXPECT_EQ(tar_reads(first), "alpine-rpi-3.23.0_rc1 251010\n");
  EXPECT_EQ(tarball_release(first), "3.23.0_rc1");
  const fs::path last = crafted("release-last", d);
  EXPECT_EQ(tar_reads(last), "alpine-rpi-3.21.4 251010\n");
  EXPECT_EQ(tarball_release(last), "3.21.4");
  EXPECT_EQ(tarball_release(crafted("release-in-folder", d)), "");
  EXPECT_EQ(tarball_release(rpi::test::fixture_tarball({"--size-mb", "1", "--no-alpine-release"})), "");
  EXPECT_EQ(tarball_release(crafted("ok", d)), "");
  for (const char* bad : {"not-tar", "random"}) {
    const fs::path t = crafted(bad, d);
    const std::string e = error_of([&] { tarball_release(t); });
    EXPECT_FALSE(e.empty()) << bad;
    EXPECT_EQ(e, error_of([&] { build_image(t, d / "x.img", ImageOptions{}); })) << bad;
  }
  EXPECT_TRUE(has(error_of([&] { tarball_release(d / "missing.tar.gz"); }), "missing.tar.gz")) << "names the file";
}

// tarball_release with every block asked for: the same answer, and the blocks
// are the whole file, in order, once (so check hashes a pinned tarball in the
// pass that reads its release) — where the release is first, last, or absent.
TEST(TarballRelease, EveryBlockIsTheWholeFileOnce) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  const fs::path big = rpi::test::fixture_tarball({"--size-mb", "3", "--version", "3.22.2"});
  for (const fs::path& t :
       {big, crafted("release-last", d), rpi::test::fixture_tarball({"--size-mb", "3", "--no-alpine-release"})}) {
    std::string seen;
    const std::string release =
        tarball_release(t, [&](const void* p, std::size_t n) { seen.append(static_cast<const char*>(p), n); });
    EXPECT_EQ(release, tarball_release(t)) << t;
    EXPECT_TRUE(seen == rpi::test::read_file(t)) << t << ": " << seen.size() << " bytes seen of " << fs::file_size(t);
  }
  EXPECT_GT(fs::file_size(big), std::uintmax_t{2} << 20) << "more than the decompressor's first read";
}

// The walk reads the release from the tarball's .alpine-release, for the keymap message.
TEST(TarballScan, KeymapsKnowTheReleaseOfTheTarball) {
  RPI_REQUIRE_TOOL("python3");
  const fs::path t = rpi::test::fixture_tarball({"--size-mb", "4", "--kbd-bkeymaps", "--version", "3.21.4"});
  const TarballScan s = scan_tarball(t, ImageOptions{});
  EXPECT_TRUE(s.keymaps.known());
  EXPECT_EQ(s.keymaps.release, "3.21.4");
  TempDir d;
  EXPECT_EQ(scan_tarball(crafted("keymaps", d), ImageOptions{}).keymaps.release, "") << "it has no .alpine-release";
  const ImageResult r = build_image(t, d / "x.img", ImageOptions{});
  EXPECT_EQ(r.keymaps.release, "3.21.4");
}

TEST(TarballScan, KeepsTheEditedFilesAndTheApkovlsTheBuildLeavesOut) {
  RPI_REQUIRE_TOOL("tar");
  const fs::path t = rpi::test::fixture_tarball({"--size-mb", "4"});
  ImageOptions o;
  o.edits["cmdline.txt"] = [](const std::string& s) { return s; };
  o.edits["nothere.txt"] = [](const std::string& s) { return s; };
  const TarballScan s = scan_tarball(t, o);
  EXPECT_EQ(s.root_files.at("cmdline.txt"), rpi::test::run({"tar", "-xzOf", t.string(), "./cmdline.txt"}).out);
  EXPECT_EQ(s.root_files.count("nothere.txt"), 0u);
  EXPECT_EQ(s.apkovls, (std::vector<std::string>{"rpi.apkovl.tar.gz"}));
  EXPECT_EQ(s.warnings, (std::vector<std::string>{edit_not_applied_warning("nothere.txt")}));

  TempDir d;
  std::vector<std::string> warnings;
  o.events = [&](const rpi::Event& e) {
    if (e.type == "warning") warnings.push_back(e.message);
  };
  const ImageResult r = build_image(t, d / "x.img", o);
  EXPECT_EQ(r.dropped, s.apkovls);
  EXPECT_EQ(warnings, s.warnings);
}
