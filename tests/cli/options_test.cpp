// The main command's options: refused when the chosen input ignores them,
// checked before anything is resolved or downloaded, and CLI11's parse
// errors said in the tool's own words.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "cli_support.hpp"
#include "test_support.hpp"

using rpi::test::cli;
using rpi::test::contains;
using rpi::test::example;
using rpi::test::tarball;
using rpi::test::TempDir;
namespace fs = std::filesystem;

namespace {

struct Case {
  std::vector<std::string> args;
  std::string message;
};

void expect_usage_errors(const std::vector<Case>& cases) {
  for (const auto& c : cases) {
    auto r = cli(c.args);
    std::string line;
    for (const auto& a : c.args) line += a + " ";
    EXPECT_EQ(r.exit_code, 2) << line << "\n" << r.err;
    EXPECT_TRUE(contains(r.err, c.message)) << line << "\nwanted: " << c.message << "\ngot: " << r.err;
    // One message, no plan or result.
    EXPECT_TRUE(r.out.empty()) << line << "\n" << r.out;
  }
}

std::vector<std::string> with(std::vector<std::string> base, const std::vector<std::string>& more) {
  base.insert(base.end(), more.begin(), more.end());
  return base;
}

bool is_empty_dir(const fs::path& p) {
  return fs::is_directory(p) && fs::is_empty(p);
}

}  // namespace

TEST(CliOptions, OptionsTheInputIgnoresAreRefused) {
  TempDir d;
  const std::string card = (d / "card.bin").string();
  rpi::test::write_file(card, std::string(1 << 20, 'c'));
  const std::string seed = (d / "seed").string();
  rpi::test::write_file(seed, "0123456789abcdefghijklmnopqrstuv");
  ::chmod(seed.c_str(), 0600);
  const std::vector<std::string> image = {"--image", (d / "pi.img").string(), "--device", card, "--yes"};
  std::vector<Case> cases;
  for (std::vector<std::string> opt : std::vector<std::vector<std::string>>{{"--label", "PI"},
                                                                            {"--disk-id", "0xcafef00d"},
                                                                            {"--size", "1GiB"},
                                                                            {"--seed-file", seed},
                                                                            {"--known-hosts", (d / "kh").string()},
                                                                            {"--host", "pi"},
                                                                            {"--first", "3"},
                                                                            {"--force"},
                                                                            {"--sha256", std::string(64, 'a')},
                                                                            {"--verify-signature"}})
    cases.push_back({with(image, opt), opt.front() + " has no effect with --image"});
  const std::vector<std::string> apkovl = {
      "--apkovl", (d / "a.apkovl.tar.gz").string(), "--tarball", "t.tar.gz", "--output", (d / "x.img").string()};
  for (std::vector<std::string> opt : std::vector<std::vector<std::string>>{
           {"--seed-file", seed}, {"--known-hosts", (d / "kh").string()}, {"--host", "pi"}, {"--first", "2"}})
    cases.push_back({with(apkovl, opt), opt.front() + " has no effect with --apkovl"});
  // --sha256 pins a --tarball (or the spec's [alpine].tarball); kiosk.toml has neither.
  const std::vector<std::string> spec = {
      "--spec",      example("kiosk.toml").string(), "--output", (d / "x.img").string(), "--offline",
      "--cache-dir", (d / "cache").string()};
  cases.push_back({with(spec, {"--sha256", std::string(64, '0')}), "--sha256 pins the digest of --tarball"});
  cases.push_back({with(spec, {"--sha256", "abc"}), "--sha256 must be 64 hex digits, got 'abc'"});
  // max fills a card: an image file has none.
  cases.push_back({with(spec, {"--size", "max"}), "--size max fills each card, and an --output image has no card"});
  expect_usage_errors(cases);
  EXPECT_EQ(rpi::test::read_file(card), std::string(1 << 20, 'c'));
  EXPECT_FALSE(fs::exists(d / "x.img"));
  EXPECT_FALSE(fs::exists(d / "kh"));

  // The same options where they do something are accepted.
  auto ok = cli({"--spec", example("fleet.toml").string(), "--tarball", tarball().string(), "--output",
                 (d / "y.img").string(), "--label", "PI", "--disk-id", "0xcafef00d", "--size", "64MiB", "--seed-file",
                 seed, "--first", "2", "--force", "--dry-run"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_TRUE(contains(ok.out, "label PI")) << ok.out;
}

TEST(CliOptions, ValuesAreCheckedBeforeAnythingIsDownloaded) {
  TempDir d;
  fs::create_directory(d / "cache");
  // Offline with an empty cache the run could only fail to find the release
  // (exit 1); a bad value must be the error, exit 2, with nothing fetched.
  const std::vector<std::string> base_no_output = {"--spec", example("kiosk.toml").string(), "--offline", "--cache-dir",
                                                   (d / "cache").string()};
  const std::vector<std::string> base = with(base_no_output, {"--output", (d / "x.img").string()});
  // A mirror no one answers on: the run fails (exit 1) if it reaches the network.
  const std::vector<std::string> dead = {
      "--spec",   example("kiosk.toml").string(), "--output",    (d / "x.img").string(),
      "--mirror", "http://127.0.0.1:9/alpine",    "--cache-dir", (d / "cache").string()};
  fs::create_directory(d / "ro");
  rpi::test::write_file(d / "empty.asc", "");
  rpi::test::write_file(d / "text.asc", "not a key\n");
  rpi::test::write_file(d / "ca.der", std::string("\x30\x82\x01\x0a", 4) + std::string(300, 'x'));
  const std::string t = tarball().string();
  std::vector<Case> cases = {
      {with(base, {"--size", "lots"}), "--size: 'lots' is not a size"},
      {with(dead, {"--size", "lots"}), "--size: 'lots' is not a size"},
      {with(base, {"--size", "1MiB"}), "--size 1MiB is too small: the smallest image is"},
      {with(base, {"--label", "BOOT"}), "--label 'BOOT': must not be BOOT"},
      {with(dead, {"--label", "BOOT"}), "--label 'BOOT': must not be BOOT"},
      {with(base, {"--disk-id", "zz"}), "--disk-id 'zz' is not a non-zero 32-bit hex number"},
      {with(dead, {"--disk-id", "0"}), "--disk-id '0' is not a non-zero 32-bit hex number"},
      {with(base, {"--keyring", (d / "missing.asc").string()}), "--keyring " + (d / "missing.asc").string()},
      {with(base, {"--keyring", (d / "empty.asc").string()}), "is empty"},
      {with(base, {"--keyring", (d / "ro").string()}), "is not a regular file"},
      {with(base, {"--keyring", (d / "text.asc").string()}), "holds no OpenPGP public key"},
      {with(dead, {"--ca-cert", (d / "ca.der").string()}), "holds no PEM certificate"},
      // A local tarball: the digest's form is checked, not the file hashed first.
      {{"--spec", example("kiosk.toml").string(), "--tarball", t, "--sha256", "xyz", "--output",
        (d / "x.img").string()},
       "--sha256 must be 64 hex digits, got 'xyz'"},
      {with(base_no_output, {"--output", (d / "x.img.zip").string()}),
       "a .zip is an archive of files, and --output writes one disk image; name it " + (d / "x.img.xz").string()},
      {{"apkovl", "--spec", example("headless.toml").string(), "-o", (d / "missing" / "a.apkovl.tar.gz").string()},
       "the folder " + (d / "missing").string() + " does not exist"},
  };
  expect_usage_errors(cases);
  EXPECT_TRUE(is_empty_dir(d / "cache"));
  EXPECT_FALSE(fs::exists(d / "x.img"));
  EXPECT_FALSE(fs::exists(d / "missing"));

  // A folder this user cannot create files in: said before the build, as a missing one is.
  fs::path locked = d / "locked";
  fs::create_directory(locked);
  ::chmod(locked.c_str(), 0500);
  if (::access(locked.c_str(), W_OK) != 0) {
    expect_usage_errors(
        {{with(base_no_output, {"--output", (locked / "x.img").string()}), "cannot create files in the folder"},
         {{"apkovl", "--spec", example("headless.toml").string(), "-o", (locked / "a.tgz").string()},
          "cannot create files in the folder"}});
    EXPECT_TRUE(is_empty_dir(d / "cache"));
  }
  ::chmod(locked.c_str(), 0700);
  if (::access("/proc/sys", W_OK) != 0 && ::geteuid() == 0)
    expect_usage_errors(
        {{with(base_no_output, {"--output", "/proc/sys/x.img"}), "cannot create files in the folder /proc/sys"}});
  else if (::geteuid() == 0)
    GTEST_SKIP() << "running as root with no read-only folder at hand: the unwritable-folder case is not checked";
}

TEST(CliOptions, Sha256OfALocalTarballIsComparedWhateverItsCase) {
  if (!rpi::test::have_tool("sha256sum")) GTEST_SKIP() << "no sha256sum to compute the digest independently";
  TempDir d;
  const std::string t = tarball().string();
  auto sum = rpi::test::sh("sha256sum '" + t + "' | cut -c1-64 | tr a-f A-F");
  ASSERT_EQ(sum.exit_code, 0);
  std::string upper = sum.out.substr(0, 64);
  auto r = cli({"--spec", example("kiosk.toml").string(), "--tarball", t, "--sha256", upper, "--output",
                (d / "x.img").string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(d / "x.img"));
  // A well-formed digest of something else is a mismatch, after hashing.
  upper[0] = upper[0] == 'A' ? 'B' : 'A';
  auto bad = cli({"--spec", example("kiosk.toml").string(), "--tarball", t, "--sha256", upper, "--output",
                  (d / "y.img").string()});
  EXPECT_EQ(bad.exit_code, 1) << bad.err;
  EXPECT_TRUE(contains(bad.err, "expected")) << bad.err;
  EXPECT_FALSE(fs::exists(d / "y.img"));
}

TEST(CliOptions, LabelFollowsTheSpecRule) {
  TempDir d;
  const std::vector<std::string> base = {"--spec",   example("kiosk.toml").string(), "--tarball", tarball().string(),
                                         "--output", (d / "x.img").string(),         "--dry-run"};
  // The rule [boot].label has in the spec (docs/spec.md): no spaces, dots or other punctuation.
  expect_usage_errors({{with(base, {"--label", "MY BOOT"}), "--label 'MY BOOT': must be 1 to 11 letters, digits"},
                       {with(base, {"--label", "pi.boot"}), "--label 'pi.boot': must be 1 to 11 letters, digits"},
                       {with(base, {"--label", "TWELVECHARSX"}), "must be 1 to 11 letters"},
                       {with(base, {"--label", "cidata"}), "must not be CIDATA"}});
  // ... as the spec refuses it.
  rpi::test::write_file(d / "s.toml", "[system]\nhostname = \"pi\"\n[boot]\nlabel = \"MY BOOT\"\n");
  auto spec = cli({"check", "--spec", (d / "s.toml").string()});
  EXPECT_EQ(spec.exit_code, 2) << spec.err;
  EXPECT_TRUE(contains(spec.err, "[boot].label must be 1 to 11 letters, digits")) << spec.err;
  auto ok = cli(with(base, {"--label", "my-pi_2"}));
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_TRUE(contains(ok.out, "label MY-PI_2")) << ok.out;
}

TEST(CliOptions, ImageMustBeARawDiskImage) {
  TempDir d;
  const fs::path img = d / "pi.img";
  auto b = cli({"--spec", example("kiosk.toml").string(), "--tarball", tarball().string(), "--size", "64MiB",
                "--output", img.string()});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const std::string card = (d / "card.bin").string();
  const std::string blank(64 << 20, 'c');
  rpi::test::write_file(card, blank);
  // A file that is no disk image, raw or compressed (compressed images are
  // written: tests/cli/image_input_test.cpp).
  std::vector<std::pair<fs::path, std::string>> packed;
  rpi::test::write_file(d / "random.bin", std::string(1 << 20, '\x5a'));
  packed.push_back({d / "random.bin", "no MBR signature (55 AA) at byte 510"});
  RPI_REQUIRE_TOOL("gzip");
  ASSERT_EQ(rpi::test::sh("gzip -k '" + (d / "random.bin").string() + "'").exit_code, 0);
  packed.push_back({d / "random.bin.gz", "(gzip-compressed): not a disk image: no MBR signature (55 AA) at byte 510"});
  std::vector<Case> cases;
  for (const auto& [file, message] : packed)
    for (bool force : {false, true}) {
      std::vector<std::string> args = {"--image", file.string(), "--device", card, "--yes"};
      if (force) args.push_back("--force");  // --force is about tarballs: refused with --image
      cases.push_back({args, force ? "--force has no effect with --image" : message});
    }
  expect_usage_errors(cases);
  EXPECT_TRUE(rpi::test::read_file(card) == blank) << "the card was changed";
  // The image itself is written.
  auto w = cli({"--image", img.string(), "--device", card, "--yes"});
  EXPECT_EQ(w.exit_code, 0) << w.err;
  EXPECT_TRUE(contains(w.out, "safe to remove")) << w.out;
}

TEST(CliOptions, DeviceFolderIsAUsageError) {
  TempDir d;
  expect_usage_errors({{{"--spec", example("kiosk.toml").string(), "--tarball", tarball().string(), "--device",
                         d.path().string(), "--yes"},
                        "is a folder; a card is a /dev path"},
                       {{"--image", (d / "pi.img").string(), "--device", d.path().string(), "--yes"},
                        "is a folder; a card is a /dev path"}});
}

TEST(CliOptions, ParseErrorsSayWhatIsWrong) {
  TempDir d;
  const std::string spec = example("kiosk.toml").string();
  expect_usage_errors({
      {{"--spec", spec, "--outptu", (d / "x.img").string()}, "unknown option --outptu (did you mean --output?)"},
      {{"--spec", spec, "--outptu=x.img"}, "unknown option --outptu (did you mean --output?)"},
      {{"--spec", spec, "--spec", spec, "--output", (d / "x.img").string()}, "--spec is given twice; give it once"},
      {{"--spec", spec, "--output"}, "--output needs a value"},
      {{"check", "--spce", spec}, "unknown option --spce (did you mean --spec?) (see rpi-provision check --help)"},
      {{"check", "--spec", spec, "--spec", spec}, "--spec is given twice"},
      {{"fetch", "--offline", "--verison", "3.22"}, "unknown option --verison (did you mean --version?)"},
      {{"chek", "--spec", spec}, "unknown command chek (did you mean check?)"},
      {{"--spec", spec, "--frobnicate"}, "unknown option --frobnicate (see rpi-provision --help)"},
  });
  // The raw CLI11 texts are gone.
  auto r = cli({"--spec", spec, "--outptu", (d / "x.img").string()});
  EXPECT_FALSE(contains(r.err, "were not expected")) << r.err;
  EXPECT_FALSE(contains(r.err, "At Most")) << r.err;
}

TEST(CliOptions, VerboseSaysWhereTheTarballComesFrom) {
  TempDir d;
  const std::string t = tarball().string();
  const std::vector<std::string> args = {
      "--spec",      example("kiosk.toml").string(), "--tarball", t, "--output", (d / "x.img").string(),
      "--cache-dir", (d / "cache").string(),         "--dry-run"};
  auto v = cli(with(args, {"-v"}));
  EXPECT_EQ(v.exit_code, 0) << v.err;
  EXPECT_TRUE(contains(v.err, "tarball: " + t + " (local file); cache: " + (d / "cache").string())) << v.err;
  auto q = cli(args);
  EXPECT_EQ(q.exit_code, 0) << q.err;
  EXPECT_FALSE(contains(q.err, "tarball: ")) << q.err;
}

// watch and fetch check the same values up front: a station must not find out
// about a bad --label when its first card goes in, nor fetch download first.
TEST(CliOptions, WatchAndFetchCheckTheirValuesBeforeWaitingOrDownloading) {
  TempDir d;
  const std::string spec = example("kiosk.toml").string();
  const std::string junk = (d / "junk").string();
  rpi::test::write_file(junk, "not a key\n");
  const std::string cache = (d / "cache").string();
  expect_usage_errors({
      {{"watch", "--spec", spec, "--label", "BOOT", "--dry-run"}, "BOOT"},
      {{"watch", "--spec", spec, "--size", "10MiB", "--dry-run"}, "--size 10MiB is too small"},
      {{"watch", "--spec", spec, "--keyring", junk, "--dry-run"}, "--keyring " + junk + " holds no OpenPGP public key"},
      {{"fetch", "--version", "3.22", "--keyring", junk, "--cache-dir", cache, "--mirror", "http://127.0.0.1:1"},
       "--keyring " + junk + " holds no OpenPGP public key"},
      {{"fetch", "--version", "3.22", "--ca-cert", junk, "--cache-dir", cache, "--mirror", "http://127.0.0.1:1"},
       "--ca-cert " + junk},
  });
  EXPECT_FALSE(fs::exists(cache)) << "nothing is resolved or cached for a run that cannot succeed";
}

// --mirror and the cards: a local folder leaves the spec's mirror on the card,
// credentials and --ca-cert are warned about (the password never shown), and
// watch refuses what its --image ignores, like the main command.
TEST(CliOptions, MirrorOverridesAreSaidAndWatchRefusesWhatItIgnores) {
  TempDir d;
  const std::string spec = (d / "s.toml").string();
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n[alpine]\nmirror = "
                        "\"https://private.example/alpine\"\nversion = \"3.22\"\n");
  fs::create_directories(d / "local");
  auto r = cli({"check", "--spec", spec, "--mirror", (d / "local").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "from https://private.example/alpine")) << r.out;
  EXPECT_TRUE(r.err.empty()) << r.err;
  // Any PEM file does for --ca-cert: check reads no mirror.
  const std::string pem = (d / "ca.pem").string();
  rpi::test::write_file(pem, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
  r = cli({"check", "--spec", spec, "--mirror", "https://bob:hunter2@m.example/alpine", "--ca-cert", pem});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "warning: --mirror https://bob:***@m.example/alpine carries credentials")) << r.err;
  EXPECT_TRUE(contains(r.err, "warning: --ca-cert is for this machine only")) << r.err;
  EXPECT_TRUE(contains(r.out, "from https://bob:***@m.example/alpine")) << r.out;
  EXPECT_FALSE(contains(r.out + r.err, "hunter2"));
  EXPECT_TRUE(contains(r.out, "warning")) << "the summary counts them\n" << r.out;
  expect_usage_errors({
      {{"watch", "--image", (d / "x.img").string(), "--label", "FOO"}, "--label has no effect with --image"},
      {{"watch", "--spec", spec, "--sha256", std::string(64, 'a'), "--dry-run"},
       "--sha256 pins the digest of --tarball"},
  });
}
