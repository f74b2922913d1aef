// --image - (the image read from standard input, raw or compressed) and
// --bmap FILE with --image (the block map given instead of the one beside the
// image). Oracles: an image this tool built with --output and its .bmap; the
// compressors' own tools make the compressed streams; the file standing in for
// a card compared with the image (its FAT checked with fsck.fat and mtools when
// there is no .bmap, or the .bmap's ranges, with the card's old 'c' bytes
// elsewhere); the card byte for byte as it was after a
// refusal; what is left in the run's $TMPDIR (its scratch folders); `wc -c` of
// what a --dry-run left unread on its standard input.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "cli_support.hpp"
#include "test_support.hpp"

extern char** environ;

namespace fs = std::filesystem;
using rpi::test::cli;
using rpi::test::contains;
using rpi::test::expect_same_fat;
using rpi::test::TempDir;

namespace {

std::string q(const fs::path& p) {
  return "'" + p.string() + "'";
}

// One 64 MiB image with its .bmap, and another of the same size (other
// bytes, other .bmap), built once.
struct Images {
  TempDir dir;
  fs::path kiosk = dir / "pi.img", other = dir / "other.img";
};
const Images& images() {
  static std::unique_ptr<Images> im;
  if (!im) {
    im = std::make_unique<Images>();
    for (const auto& [spec, out] : {std::pair{"kiosk.toml", im->kiosk}, std::pair{"headless.toml", im->other}}) {
      auto r = cli({"--spec", rpi::test::example(spec).string(), "--tarball", rpi::test::tarball().string(), "--size",
                    "64MiB", "--output", out.string()});
      EXPECT_EQ(r.exit_code, 0) << r.err;
    }
  }
  return *im;
}

// A file standing in for a card: `size` bytes of 'c'.
fs::path card(const fs::path& path, std::uint64_t size = 64u << 20) {
  rpi::test::write_file(path, std::string(size, 'c'));
  return path;
}

// Every path under `dir`, one per line ("" when empty).
std::string left_in(const fs::path& dir) {
  std::string out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) out += e.path().string() + "\n";
  return out;
}

// The command line of the tool with its scratch folders in `tmp`.
std::string tool(const fs::path& tmp) {
  return "TMPDIR=" + q(tmp) + " " + q(rpi::test::cli_path());
}

// `written` holds `image` in the ranges of `bmap`, and still the card's 'c' somewhere else.
void expect_mapped_ranges(const std::string& written, const std::string& image, const fs::path& bmap) {
  ASSERT_EQ(written.size(), image.size());
  const auto ranges = rpi::test::bmap_ranges(bmap);
  ASSERT_FALSE(ranges.empty());
  for (const auto& [a, b] : ranges)
    EXPECT_TRUE(written.compare(a * 4096, (b - a + 1) * 4096, image, a * 4096, (b - a + 1) * 4096) == 0)
        << "blocks " << a << "-" << b;
  EXPECT_NE(written.find(std::string(4096, 'c')), std::string::npos) << "unmapped blocks were written";
}

// `bmap` with one range checksum changed and its BmapFileChecksum left out
// (then nothing tells the edit but the ranges' checksums).
std::string with_bad_range_checksum(const fs::path& bmap) {
  std::string xml = rpi::test::read_file(bmap);
  xml = std::regex_replace(xml, std::regex(R"(\s*<BmapFileChecksum>[^<]*</BmapFileChecksum>)"), "");
  const std::size_t at = xml.find("chksum=\"");
  EXPECT_NE(at, std::string::npos) << xml;
  if (at != std::string::npos) {
    char& c = xml[at + 8];
    c = c == '0' ? '1' : '0';
  }
  return xml;
}

}  // namespace

// A raw image and its xz-, gzip-, zstd- and bzip2-compressed streams on
// standard input: no .bmap, so the map is derived from the image's FAT: the
// card's FAT passes fsck.fat and holds the image's files, its free clusters
// keep the card's old bytes; the bytes written are far below the image's
// size, the verify step passes, and the scratch folder is gone.
TEST(ImageStdin, RawAndCompressedStreamsAreWrittenWhereTheirFatHoldsData) {
  for (const char* t : {"fsck.fat", "mcopy", "diff"}) RPI_REQUIRE_TOOL(t);
  const Images& im = images();
  TempDir d;
  const fs::path tmp = d / "tmp", target = d / "card.bin";
  fs::create_directories(tmp);
  const std::string image = rpi::test::read_file(im.kiosk);
  std::vector<std::string> feeds = {"cat " + q(im.kiosk)};
  for (const std::string t : {"xz", "gzip", "zstd", "bzip2"})
    if (rpi::test::have_tool(t)) feeds.push_back(t + " -c " + (t == "zstd" ? "-q " : "") + q(im.kiosk));
  for (const auto& feed : feeds) {
    card(target);
    auto r = rpi::test::sh(feed + " | " + tool(tmp) + " --image - --device " + q(target) + " --yes");
    EXPECT_EQ(r.exit_code, 0) << feed << ": " << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "standard input")) << r.out;
    EXPECT_TRUE(contains(r.err,
                         "no block map for standard input (give --bmap FILE for one): written where its FAT "
                         "holds data ("))
        << r.err;
    EXPECT_TRUE(contains(r.err, "the map derived from its FAT; free clusters are left as the card has them)")) << r.err;
    EXPECT_FALSE(contains(r.err, "every byte")) << r.err;
    expect_same_fat(target, im.kiosk, d / "check");
    EXPECT_EQ(left_in(tmp), "") << feed;
    // The card event: far fewer bytes written than the image has; verified.
    card(target);
    auto j = rpi::test::sh(feed + " | " + tool(tmp) + " --image - --device " + q(target) + " --yes --json");
    EXPECT_EQ(j.exit_code, 0) << feed << ": " << j.out << j.err;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(j.out, m, std::regex(R"("bytes":(\d+),)"))) << j.out;
    EXPECT_LT(std::stoull(m[1]), image.size() / 4) << j.out;
    EXPECT_TRUE(contains(j.out, "\"verified\":true")) << j.out;
    expect_same_fat(target, im.kiosk, d / "check");
    EXPECT_EQ(left_in(tmp), "") << feed;
  }
  if (feeds.size() < 3) GTEST_SKIP() << "raw checked; fewer than two of xz, gzip, zstd, bzip2 are installed";
}

// --bmap FILE with --image -: only its ranges are written (the card keeps 'c'
// elsewhere), and they hold the image; with a compressed stream too.
TEST(ImageStdin, BmapGivenWritesItsRanges) {
  const Images& im = images();
  TempDir d;
  const fs::path tmp = d / "tmp", target = d / "card.bin", bmap = d / "maps" / "kiosk.bmap";
  fs::create_directories(tmp);
  fs::create_directories(bmap.parent_path());
  fs::copy_file(im.kiosk.string() + ".bmap", bmap);
  const std::string image = rpi::test::read_file(im.kiosk);
  std::vector<std::string> feeds = {"cat " + q(im.kiosk)};
  if (rpi::test::have_tool("gzip")) feeds.push_back("gzip -c " + q(im.kiosk));
  for (const auto& feed : feeds) {
    card(target);
    auto r =
        rpi::test::sh(feed + " | " + tool(tmp) + " --image - --bmap " + q(bmap) + " --device " + q(target) + " --yes");
    EXPECT_EQ(r.exit_code, 0) << feed << ": " << r.out << r.err;
    EXPECT_FALSE(contains(r.err, "no block map")) << r.err;
    expect_mapped_ranges(rpi::test::read_file(target), image, bmap);
    EXPECT_EQ(left_in(tmp), "") << feed;
  }
}

// --image FILE --bmap FILE: the map given is used, not the one beside the
// image (another image's .bmap of the same size, which would be refused).
TEST(ImageFileBmap, TheBmapGivenIsUsedInsteadOfTheOneBeside) {
  const Images& im = images();
  TempDir d;
  const fs::path file = d / "pi.img", target = card(d / "card.bin"), bmap = d / "given.bmap";
  fs::copy_file(im.kiosk, file);
  fs::copy_file(im.other.string() + ".bmap", d / "pi.img.bmap");  // of other bytes: a mismatch if used
  fs::copy_file(im.kiosk.string() + ".bmap", bmap);
  auto plan = cli({"--image", file.string(), "--bmap", bmap.string(), "--device", target.string(), "--dry-run"});
  EXPECT_EQ(plan.exit_code, 0) << plan.out << plan.err;
  EXPECT_TRUE(contains(plan.out, "block map: " + bmap.string() + ", ")) << plan.out;
  auto r = cli({"--image", file.string(), "--bmap", bmap.string(), "--device", target.string(), "--yes"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  expect_mapped_ranges(rpi::test::read_file(target), rpi::test::read_file(file), bmap);
  // Without --bmap the one beside it is used, and refused: the oracle that --bmap mattered.
  card(target);
  auto beside = cli({"--image", file.string(), "--device", target.string(), "--yes"});
  EXPECT_EQ(beside.exit_code, 1) << beside.out << beside.err;
  EXPECT_TRUE(contains(beside.out + beside.err, "pi.img.bmap: checksum mismatch")) << beside.out << beside.err;
}

// A --bmap whose range checksum does not match the image, one edited after it
// was made (its BmapFileChecksum), or a missing one: an error before any card
// is opened, the card byte for byte as it was; the same from standard input,
// whose scratch folder is then gone.
TEST(ImageFileBmap, ABadOrMissingBmapIsRefusedAndTheCardIsUntouched) {
  const Images& im = images();
  TempDir d;
  const fs::path file = d / "pi.img", target = card(d / "card.bin"), tmp = d / "tmp";
  fs::create_directories(tmp);
  fs::copy_file(im.kiosk, file);
  const std::string before = rpi::test::read_file(target);
  const fs::path ranges = d / "ranges.bmap", edited = d / "edited.bmap";
  rpi::test::write_file(ranges, with_bad_range_checksum(im.kiosk.string() + ".bmap"));
  std::string xml = rpi::test::read_file(im.kiosk.string() + ".bmap");
  const std::size_t at = xml.find("<ImageSize>");
  ASSERT_NE(at, std::string::npos);
  xml.insert(at, "<!-- edited -->");
  rpi::test::write_file(edited, xml);

  auto bad = cli({"--image", file.string(), "--bmap", ranges.string(), "--device", target.string(), "--yes"});
  EXPECT_EQ(bad.exit_code, 1) << bad.out << bad.err;
  EXPECT_TRUE(contains(bad.err, ranges.string() + ": checksum mismatch for blocks range")) << bad.err;
  EXPECT_TRUE(rpi::test::read_file(target) == before) << "the card was changed";

  auto changed = cli({"--image", file.string(), "--bmap", edited.string(), "--device", target.string(), "--yes"});
  EXPECT_EQ(changed.exit_code, 1) << changed.out << changed.err;
  EXPECT_TRUE(contains(changed.err, edited.string())) << changed.err;
  EXPECT_TRUE(rpi::test::read_file(target) == before) << "the card was changed";

  auto missing =
      cli({"--image", file.string(), "--bmap", (d / "no.bmap").string(), "--device", target.string(), "--yes"});
  EXPECT_EQ(missing.exit_code, 2) << missing.out << missing.err;
  EXPECT_TRUE(contains(missing.err, "--bmap " + (d / "no.bmap").string() + ": No such file")) << missing.err;
  EXPECT_TRUE(rpi::test::read_file(target) == before) << "the card was changed";

  auto piped =
      rpi::test::sh(tool(tmp) + " --image - --bmap " + q(ranges) + " --device " + q(target) + " --yes < " + q(file));
  EXPECT_EQ(piped.exit_code, 1) << piped.out << piped.err;
  EXPECT_TRUE(contains(piped.err, "checksum mismatch for blocks range")) << piped.err;
  EXPECT_TRUE(contains(piped.err, "of standard input")) << piped.err;
  EXPECT_FALSE(contains(piped.err, tmp.string())) << "names the scratch file: " << piped.err;
  EXPECT_TRUE(rpi::test::read_file(target) == before) << "the card was changed";
  EXPECT_EQ(left_in(tmp), "");
}

// An image larger than the card: refused while it is read, the card as it
// was, nothing left in the scratch folder.
TEST(ImageStdin, AnImageLargerThanTheCardIsRefused) {
  const Images& im = images();
  TempDir d;
  const fs::path tmp = d / "tmp", target = card(d / "card.bin", 32u << 20);
  fs::create_directories(tmp);
  const std::string before = rpi::test::read_file(target);
  auto r = rpi::test::sh(tool(tmp) + " --image - --device " + q(target) + " --yes < " + q(im.kiosk));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "standard input holds a larger image than any card")) << r.err;
  EXPECT_TRUE(rpi::test::read_file(target) == before) << "the card was changed";
  EXPECT_EQ(left_in(tmp), "");
}

// Standard input a terminal: refused (exit 2) before anything is read or written.
TEST(ImageStdin, TerminalIsRefused) {
  if (!rpi::test::have_tool("script"))
    GTEST_SKIP() << "`script` (util-linux) is not installed: no terminal to test with";
  TempDir d;
  const fs::path tmp = d / "tmp", target = card(d / "card.bin");
  fs::create_directories(tmp);
  const std::string before = rpi::test::read_file(target);
  auto r = rpi::test::run({"script", "-qec", tool(tmp) + " --image - --device " + q(target) + " --yes", "/dev/null"});
  if (contains(r.out + r.err, "openpty") || contains(r.out + r.err, "failed to create pseudo-terminal"))
    GTEST_SKIP() << "no pseudo-terminal here: " << r.out << r.err;
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "--image - reads the image from standard input, and that is a terminal")) << r.out;
  EXPECT_TRUE(rpi::test::read_file(target) == before) << "the card was changed";
  EXPECT_EQ(left_in(tmp), "");
}

// The question before writing reads its answer from standard input, which
// holds the image: --yes is required (exit 2), and nothing of it is read.
// A --dry-run reads nothing of standard input either: `wc -c` after it
// counts the whole image; its plan says where the image comes from.
TEST(ImageStdin, NeedsYesAndAPlanReadsNothing) {
  const Images& im = images();
  TempDir d;
  const fs::path tmp = d / "tmp", target = card(d / "card.bin");
  fs::create_directories(tmp);
  const std::string size = std::to_string(fs::file_size(im.kiosk));
  auto ask =
      rpi::test::sh("{ " + tool(tmp) + " --image - --device " + q(target) + "; echo rc=$?; wc -c; } < " + q(im.kiosk));
  EXPECT_TRUE(contains(ask.out, "rc=2\n" + size)) << ask.out << ask.err;
  EXPECT_TRUE(contains(ask.err, "pass --yes")) << ask.err;
  auto plan = rpi::test::sh("{ " + tool(tmp) + " --image - --device " + q(target) +
                            " --dry-run; echo rc=$?; wc -c; } < " + q(im.kiosk));
  EXPECT_TRUE(contains(plan.out, "rc=0\n" + size)) << plan.out << plan.err;
  EXPECT_TRUE(contains(plan.out, "image: standard input (--image -), read when the run starts")) << plan.out;
  EXPECT_TRUE(contains(plan.out, "block map: none")) << plan.out;
  EXPECT_EQ(rpi::test::read_file(target), std::string(64u << 20, 'c'));
  EXPECT_EQ(left_in(tmp), "");
}

// watch writes card after card and cannot read standard input again: refused.
TEST(ImageStdin, WatchRefusesIt) {
  auto r = cli({"watch", "--image", "-", "--dry-run"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "watch --image -: standard input is read once")) << r.err;
}

// --bmap with cards written from a spec (nothing to write it to or read it from): a usage error.
TEST(ImageStdin, BmapWithOnlyDevicesIsRefused) {
  TempDir d;
  const fs::path target = card(d / "card.bin");
  auto r = cli({"--spec", rpi::test::example("kiosk.toml").string(), "--tarball", rpi::test::tarball().string(),
                "--device", target.string(), "--bmap", (d / "x.bmap").string(), "--yes"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "--bmap names the block map of an --output image")) << r.err;
  EXPECT_FALSE(fs::exists(d / "x.bmap"));
  EXPECT_EQ(rpi::test::read_file(target), std::string(64u << 20, 'c'));
}

// Ctrl-C while standard input is read: exit 130, no card touched, the
// scratch folder (the part read so far) gone.
TEST(ImageStdin, CtrlCWhileReadingLeavesNothing) {
  const Images& im = images();
  TempDir d;
  const fs::path tmp = d / "tmp", target = card(d / "card.bin"), err_path = d / "err";
  fs::create_directories(tmp);
  std::signal(SIGPIPE, SIG_IGN);  // a run that ended early: write() fails, the test says so
  int in[2];
  ASSERT_EQ(::pipe2(in, O_CLOEXEC), 0);
  const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(err, 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, err, 2);
  const std::vector<std::string> argv{
      "env",  "TMPDIR=" + tmp.string(), rpi::test::cli_path().string(), "--image", "-", "--device", target.string(),
      "--yes"};
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawnp(&pid, "env", &fa, nullptr, args.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(err);
  // Half the image in, then wait until the spooled file holds some of it.
  const std::string image = rpi::test::read_file(im.kiosk);
  const std::string half = image.substr(0, image.size() / 2);
  for (std::size_t at = 0; at < half.size();) {
    const ssize_t n = ::write(in[1], half.data() + at, half.size() - at);
    ASSERT_GT(n, 0);
    at += static_cast<std::size_t>(n);
  }
  bool reading = false;
  for (int i = 0; i < 3000 && !reading; ++i) {
    for (const auto& e : fs::recursive_directory_iterator(tmp))
      if (e.path().filename() == "standard-input" && fs::file_size(e.path()) > 0) reading = true;
    if (!reading) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(reading) << rpi::test::read_file(err_path);
  ::kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ::close(in[1]);
  const std::string text = rpi::test::read_file(err_path);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status) << ": " << text;
  EXPECT_EQ(WEXITSTATUS(status), 130) << text;
  EXPECT_EQ(rpi::test::read_file(target), std::string(64u << 20, 'c')) << "the card was changed";
  EXPECT_EQ(left_in(tmp), "") << text;
}
