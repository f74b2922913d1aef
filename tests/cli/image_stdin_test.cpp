// --image - (the image read from standard input, raw or compressed) and
// --bmap FILE with --image (the block map given instead of the one beside the
// image). Oracles: an image this tool built with --output and its .bmap; the
// compressors' own tools make the compressed streams; the file standing in for
// a card compared with the image (its FAT checked with fsck.fat and mtools when
// there is no .bmap, or the .bmap's ranges, with the card's old 'c' bytes
// elsewhere); the card byte for byte as it was after a
// refusal; what is left in the run's $TMPDIR (its scratch folders); `wc -c` of
// what a --dry-run left unread on its standard input. Also: "read" progress
// while standard input is read; a raw image whose MBR says it is larger than
// every card refused as soon as its first bytes are in (a pipe the test keeps
// open, the rest never written: a run that waited for it would not end); the
// plan's "map" (bmap, fat, whole, unknown), with the image's partition typed
// Linux for "whole" (no FAT volume to derive a map from); the -v line about a
// derived map; the reporter's drawing of a progress whose total is unknown.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "cli_support.hpp"
#include "reporter.hpp"
#include "test_support.hpp"

extern char** environ;

namespace fs = std::filesystem;
using rpi::test::capture_stderr;
using rpi::test::cli;
using rpi::test::contains;
using rpi::test::expect_same_fat;
using rpi::test::files_under;
using rpi::test::shell_quoted;
using rpi::test::TempDir;
using rpi::test::tool_in;

namespace {

// One 64 MiB image with its .bmap, and another of the same size (other
// bytes, other .bmap), built once; a copy of the first without its .bmap,
// and one whose partition is typed Linux (0x83): no FAT volume to derive a map from.
struct Images {
  TempDir dir;
  fs::path kiosk = dir / "pi.img", other = dir / "other.img", bare = dir / "bare" / "pi.img",
           linux_typed = dir / "linux" / "pi.img";
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
    fs::create_directories(im->bare.parent_path());
    fs::create_directories(im->linux_typed.parent_path());
    fs::copy_file(im->kiosk, im->bare);
    std::string bytes = rpi::test::read_file(im->kiosk);
    EXPECT_EQ(static_cast<unsigned char>(bytes[446 + 4]), 0x0C);  // partition 1: FAT32 (LBA)
    bytes[446 + 4] = static_cast<char>(0x83);
    rpi::test::write_file(im->linux_typed, bytes);
  }
  return *im;
}

// A file standing in for a card: `size` bytes of 'c'.
fs::path card(const fs::path& path, std::uint64_t size = 64u << 20) {
  rpi::test::write_file(path, std::string(size, 'c'));
  return path;
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

// The tool run with `args`, its standard input the read end of a pipe whose
// write end the test holds: the first `head` bytes of `image` are written,
// and nothing more until the run has ended. Its exit status (-1: still
// running after a bounded wait; then it is killed) and stderr.
struct Stalled {
  int status = -1;
  std::string err;
  bool rest_refused = false;  // writing on after the run ended failed (EPIPE): nobody reads the pipe any more
};
Stalled run_with_stalled_stdin(const fs::path& tmp, const std::vector<std::string>& args, const std::string& image,
                               std::size_t head, const fs::path& err_path) {
  Stalled s;
  std::signal(SIGPIPE, SIG_IGN);
  int in[2];
  EXPECT_EQ(::pipe2(in, O_CLOEXEC), 0);
  const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  EXPECT_GE(err, 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, err, 2);
  std::vector<std::string> argv{"env", "TMPDIR=" + tmp.string(), rpi::test::cli_path().string()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargs;
  for (const auto& a : argv) cargs.push_back(const_cast<char*>(a.c_str()));
  cargs.push_back(nullptr);
  pid_t pid = 0;
  EXPECT_EQ(posix_spawnp(&pid, "env", &fa, nullptr, cargs.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(err);
  // The head fits in the pipe's buffer (64 KiB at least): this write does not wait for the reader.
  EXPECT_LE(head, 4096u);
  EXPECT_EQ(::write(in[1], image.data(), head), static_cast<ssize_t>(head));
  // A bounded wait for the end of the run (not a timing: a run that waits for the rest never ends).
  int status = 0;
  bool ended = false;
  for (int i = 0; i < 6000 && !ended; ++i) {
    const pid_t got = ::waitpid(pid, &status, WNOHANG);
    if (got == pid) ended = true;
    if (!ended) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!ended) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  } else {
    s.status = status;
    // The writer goes on only now: the pipe has no reader left.
    const ssize_t n = ::write(in[1], image.data() + head, 4096);
    s.rest_refused = n < 0 && errno == EPIPE;
  }
  ::close(in[1]);
  s.err = rpi::test::read_file(err_path);
  return s;
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
  std::vector<std::string> feeds = {"cat " + shell_quoted(im.kiosk)};
  for (const std::string t : {"xz", "gzip", "zstd", "bzip2"})
    if (rpi::test::have_tool(t)) feeds.push_back(t + " -c " + (t == "zstd" ? "-q " : "") + shell_quoted(im.kiosk));
  for (const auto& feed : feeds) {
    card(target);
    auto r = rpi::test::sh(feed + " | " + tool_in(tmp) + " --image - --device " + shell_quoted(target) + " --yes");
    EXPECT_EQ(r.exit_code, 0) << feed << ": " << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "standard input")) << r.out;
    EXPECT_TRUE(contains(r.err,
                         "no block map for standard input (give --bmap FILE for one): written where its FAT "
                         "holds data ("))
        << r.err;
    EXPECT_TRUE(contains(r.err, "the map derived from its FAT; free clusters are left as the card has them)")) << r.err;
    EXPECT_FALSE(contains(r.err, "every byte")) << r.err;
    expect_same_fat(target, im.kiosk, d / "check");
    EXPECT_EQ(files_under(tmp), "") << feed;
    // The card event: far fewer bytes written than the image has; verified.
    card(target);
    auto j =
        rpi::test::sh(feed + " | " + tool_in(tmp) + " --image - --device " + shell_quoted(target) + " --yes --json");
    EXPECT_EQ(j.exit_code, 0) << feed << ": " << j.out << j.err;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(j.out, m, std::regex(R"("bytes":(\d+),)"))) << j.out;
    EXPECT_LT(std::stoull(m[1]), image.size() / 4) << j.out;
    EXPECT_TRUE(contains(j.out, "\"verified\":true")) << j.out;
    expect_same_fat(target, im.kiosk, d / "check");
    EXPECT_EQ(files_under(tmp), "") << feed;
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
  std::vector<std::string> feeds = {"cat " + shell_quoted(im.kiosk)};
  if (rpi::test::have_tool("gzip")) feeds.push_back("gzip -c " + shell_quoted(im.kiosk));
  for (const auto& feed : feeds) {
    card(target);
    auto r = rpi::test::sh(feed + " | " + tool_in(tmp) + " --image - --bmap " + shell_quoted(bmap) + " --device " +
                           shell_quoted(target) + " --yes");
    EXPECT_EQ(r.exit_code, 0) << feed << ": " << r.out << r.err;
    EXPECT_FALSE(contains(r.err, "no block map")) << r.err;
    expect_mapped_ranges(rpi::test::read_file(target), image, bmap);
    EXPECT_EQ(files_under(tmp), "") << feed;
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

  auto piped = rpi::test::sh(tool_in(tmp) + " --image - --bmap " + shell_quoted(ranges) + " --device " +
                             shell_quoted(target) + " --yes < " + shell_quoted(file));
  EXPECT_EQ(piped.exit_code, 1) << piped.out << piped.err;
  EXPECT_TRUE(contains(piped.err, "checksum mismatch for blocks range")) << piped.err;
  EXPECT_TRUE(contains(piped.err, "of standard input")) << piped.err;
  EXPECT_FALSE(contains(piped.err, tmp.string())) << "names the scratch file: " << piped.err;
  EXPECT_TRUE(rpi::test::read_file(target) == before) << "the card was changed";
  EXPECT_EQ(files_under(tmp), "");
}

// An image larger than the card: refused while it is read, the card as it
// was, nothing left in the scratch folder.
TEST(ImageStdin, AnImageLargerThanTheCardIsRefused) {
  const Images& im = images();
  TempDir d;
  const fs::path tmp = d / "tmp", target = card(d / "card.bin", 32u << 20);
  fs::create_directories(tmp);
  const std::string before = rpi::test::read_file(target);
  auto r = rpi::test::sh(tool_in(tmp) + " --image - --device " + shell_quoted(target) + " --yes < " +
                         shell_quoted(im.kiosk));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "standard input holds a larger image than any card")) << r.err;
  EXPECT_TRUE(rpi::test::read_file(target) == before) << "the card was changed";
  EXPECT_EQ(files_under(tmp), "");
}

// An image cut short (an interrupted download or copy) is refused before
// any card is touched, whether a file, compressed, or standard input, and in
// the plan too: its first sector says how large it is at least.
TEST(ImageFileCutShort, IsRefusedAndTheCardIsUntouched) {
  const Images& im = images();
  TempDir d;
  const fs::path tmp = d / "tmp", target = card(d / "card.bin");
  fs::create_directories(tmp);
  const std::string before = rpi::test::read_file(target);
  const std::string whole = rpi::test::read_file(im.kiosk);
  const fs::path cut = d / "cut.img";
  rpi::test::write_file(cut, whole.substr(0, 10'000'000));
  const std::string cut_text =
      "is cut short: its partition table says it has at least " + std::to_string(whole.size()) + " bytes (64 MiB), but";
  auto expect_refused = [&](const rpi::test::CommandResult& r, const std::string& what) {
    EXPECT_EQ(r.exit_code, 1) << what << "\n" << r.out << r.err;
    EXPECT_TRUE(contains(r.err, cut_text)) << what << "\n" << r.err;
    EXPECT_FALSE(contains(r.err, "safe to remove")) << what << "\n" << r.err;
    EXPECT_TRUE(rpi::test::read_file(target) == before) << what << ": the card was changed";
    EXPECT_EQ(files_under(tmp), "") << what;
  };
  const std::string dev = " --device " + shell_quoted(target) + " --yes";
  auto r = rpi::test::sh(tool_in(tmp) + " --image " + shell_quoted(cut) + dev);
  expect_refused(r, "--image FILE");
  EXPECT_TRUE(contains(r.err, "it has 10000000 (9.5 MiB): it was probably truncated")) << r.err;
  EXPECT_TRUE(contains(r.err, "truncate -s " + std::to_string(whole.size()) + " FILE")) << r.err;
  expect_refused(rpi::test::sh(tool_in(tmp) + " --image " + shell_quoted(cut) + dev + " --dry-run"), "--dry-run");
  expect_refused(rpi::test::sh(tool_in(tmp) + " --image -" + dev + " < " + shell_quoted(cut)), "--image -");
  // Only its first sector: still refused.
  expect_refused(rpi::test::sh("head -c 1000 " + shell_quoted(cut) + " | " + tool_in(tmp) + " --image -" + dev),
                 "1000 bytes on standard input");
  // Compressed whole, but what it holds is cut: no truncate advice for it.
  ASSERT_EQ(rpi::test::sh("gzip -1 -c " + shell_quoted(cut) + " > " + shell_quoted(d / "cut.img.gz")).exit_code, 0);
  r = rpi::test::sh(tool_in(tmp) + " --image " + shell_quoted(d / "cut.img.gz") + dev);
  expect_refused(r, "gzip");
  EXPECT_FALSE(contains(r.err, "truncate -s")) << r.err;

  // The whole image is written as always.
  r = rpi::test::sh(tool_in(tmp) + " --image " + shell_quoted(im.bare) + dev + " --no-verify");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// A FAT volume without a partition table, cut short: its boot sector says its size.
TEST(ImageFileCutShort, AFatVolumeWithoutAPartitionTableToo) {
  RPI_REQUIRE_TOOL("mkfs.fat");
  TempDir d;
  const fs::path vol = d / "vol.img", target = card(d / "card.bin");
  ASSERT_EQ(rpi::test::sh("mkfs.fat -C " + shell_quoted(vol) + " 32768 >/dev/null").exit_code, 0);  // 32 MiB
  fs::resize_file(vol, 1u << 20);
  const std::string before = rpi::test::read_file(target);
  auto r = cli({"--image", vol.string(), "--device", target.string(), "--yes"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err,
                       "is cut short: its FAT volume says it has at least 33554432 bytes (32 MiB), but it has "
                       "1048576 (1 MiB)"))
      << r.err;
  EXPECT_TRUE(rpi::test::read_file(target) == before) << "the card was changed";
}

// Standard input a terminal: refused (exit 2) before anything is read or written.
TEST(ImageStdin, TerminalIsRefused) {
  if (!rpi::test::have_tool("script"))
    GTEST_SKIP() << "`script` (util-linux) is not installed: no terminal to test with";
  TempDir d;
  const fs::path tmp = d / "tmp", target = card(d / "card.bin");
  fs::create_directories(tmp);
  const std::string before = rpi::test::read_file(target);
  auto r = rpi::test::run(
      {"script", "-qec", tool_in(tmp) + " --image - --device " + shell_quoted(target) + " --yes", "/dev/null"});
  if (contains(r.out + r.err, "openpty") || contains(r.out + r.err, "failed to create pseudo-terminal"))
    GTEST_SKIP() << "no pseudo-terminal here: " << r.out << r.err;
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "--image - reads the image from standard input, and that is a terminal")) << r.out;
  EXPECT_TRUE(rpi::test::read_file(target) == before) << "the card was changed";
  EXPECT_EQ(files_under(tmp), "");
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
  auto ask = rpi::test::sh("{ " + tool_in(tmp) + " --image - --device " + shell_quoted(target) +
                           "; echo rc=$?; wc -c; } < " + shell_quoted(im.kiosk));
  EXPECT_TRUE(contains(ask.out, "rc=2\n" + size)) << ask.out << ask.err;
  EXPECT_TRUE(contains(ask.err, "pass --yes")) << ask.err;
  auto plan = rpi::test::sh("{ " + tool_in(tmp) + " --image - --device " + shell_quoted(target) +
                            " --dry-run; echo rc=$?; wc -c; } < " + shell_quoted(im.kiosk));
  EXPECT_TRUE(contains(plan.out, "rc=0\n" + size)) << plan.out << plan.err;
  EXPECT_TRUE(contains(plan.out, "image: standard input (--image -), read when the run starts")) << plan.out;
  EXPECT_TRUE(contains(plan.out, "block map: none")) << plan.out;
  EXPECT_EQ(rpi::test::read_file(target), std::string(64u << 20, 'c'));
  EXPECT_EQ(files_under(tmp), "");
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
  EXPECT_EQ(files_under(tmp), "") << text;
}

// --json: "read" events for standard input ("-"), done growing, total 0 until
// the last one, whose done and total are the image's size; without --json
// (stderr no terminal) plain "read standard input" lines, no percentage.
TEST(ImageStdinProgress, ReadEventsGrowUntilTheImageIsIn) {
  const Images& im = images();
  TempDir d;
  const fs::path tmp = d / "tmp", target = card(d / "card.bin", 64u << 20);
  fs::create_directories(tmp);
  const std::uint64_t size = fs::file_size(im.kiosk);
  auto j = rpi::test::sh("cat " + shell_quoted(im.kiosk) + " | " + tool_in(tmp) + " --image - --device " +
                         shell_quoted(target) + " --yes --json");
  EXPECT_EQ(j.exit_code, 0) << j.out << j.err;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> reads;  // done, total
  const std::regex event(R"(\{"type":"read","subject":"-","done":(\d+),"total":(\d+)\})");
  for (auto it = std::sregex_iterator(j.out.begin(), j.out.end(), event); it != std::sregex_iterator(); ++it)
    reads.emplace_back(std::stoull((*it)[1]), std::stoull((*it)[2]));
  ASSERT_GE(reads.size(), 2u) << j.out;
  for (std::size_t k = 1; k < reads.size(); ++k) EXPECT_GT(reads[k].first, reads[k - 1].first) << j.out;
  for (std::size_t k = 0; k + 1 < reads.size(); ++k) EXPECT_EQ(reads[k].second, 0u) << j.out;
  EXPECT_EQ(reads.back().first, size) << j.out;
  EXPECT_EQ(reads.back().second, size) << j.out;
  // Read before any card is written.
  EXPECT_LT(j.out.find("\"type\":\"read\""), j.out.find("\"type\":\"write\"")) << j.out;

  auto t = rpi::test::sh("cat " + shell_quoted(im.kiosk) + " | " + tool_in(tmp) + " --image - --device " +
                         shell_quoted(target) + " --yes");
  EXPECT_EQ(t.exit_code, 0) << t.out << t.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(t.err, m, std::regex("read standard input [^\n]*"))) << t.err;
  EXPECT_FALSE(contains(m[0], "%")) << m[0];
  EXPECT_FALSE(contains(m[0], "ETA")) << m[0];
  EXPECT_EQ(files_under(tmp), "");
}

// A raw image whose MBR says 64 MiB, the card 32 MiB: refused once its first
// 4 KiB are in (the rest is never written while the run goes), the card as
// it was, the scratch folder gone.
TEST(ImageStdinProgress, AnMbrLargerThanTheCardStopsTheRunAtOnce) {
  const Images& im = images();
  TempDir d;
  const fs::path tmp = d / "tmp", target = card(d / "card.bin", 32u << 20);
  fs::create_directories(tmp);
  const std::string image = rpi::test::read_file(im.kiosk);
  const Stalled s =
      run_with_stalled_stdin(tmp, {"--image", "-", "--device", target.string(), "--yes"}, image, 4096, d / "err");
  ASSERT_NE(s.status, -1) << "the run waited for the rest of standard input: " << s.err;
  ASSERT_TRUE(WIFEXITED(s.status)) << s.err;
  EXPECT_EQ(WEXITSTATUS(s.status), 1) << s.err;
  EXPECT_TRUE(contains(s.err,
                       "standard input holds a larger image than any card: its partition table says it has "
                       "at least 64 MiB"))
      << s.err;
  EXPECT_TRUE(contains(s.err, "the card, " + target.string() + ", has 32 MiB; use a larger card")) << s.err;
  EXPECT_TRUE(s.rest_refused) << "standard input was still open after the run";
  EXPECT_EQ(rpi::test::read_file(target), std::string(32u << 20, 'c')) << "the card was changed";
  EXPECT_EQ(files_under(tmp), "");
}

// With --bmap the image's size is known before standard input is read: a
// card too small for it is refused at once, with the words of --image FILE,
// and nothing is read (not a byte is written into the pipe, which stays
// open: a run that waited for the image would not end).
TEST(ImageStdinProgress, WithABmapACardTooSmallIsRefusedBeforeReading) {
  const Images& im = images();
  TempDir d;
  const fs::path tmp = d / "tmp", target = card(d / "card.bin", 32u << 20);
  fs::create_directories(tmp);
  const Stalled s = run_with_stalled_stdin(
      tmp, {"--image", "-", "--bmap", im.kiosk.string() + ".bmap", "--device", target.string(), "--yes"},
      rpi::test::read_file(im.kiosk), 0, d / "err");
  ASSERT_NE(s.status, -1) << "the run waited for standard input: " << s.err;
  ASSERT_TRUE(WIFEXITED(s.status)) << s.err;
  EXPECT_EQ(WEXITSTATUS(s.status), 1) << s.err;
  EXPECT_EQ(rpi::test::read_file(target), std::string(32u << 20, 'c')) << "the card was changed";
  EXPECT_EQ(files_under(tmp), "");
  // Its words, in the results on standard output; an empty standard input is
  // not even looked at (read, it would be "standard input is empty").
  auto r = rpi::test::sh(tool_in(tmp) + " --image - --bmap " + shell_quoted(im.kiosk.string() + ".bmap") +
                         " --device " + shell_quoted(target) + " --yes < /dev/null");
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(
      r.out, "refusing to write " + target.string() + ": it has 32 MiB but the image needs 64 MiB; use a larger card"))
      << r.out << r.err;
  EXPECT_FALSE(contains(r.out + r.err, "standard input is empty")) << r.out << r.err;
}

// Two cards, one too small for the image (its MBR says so at once, but the
// larger card can take it): the image is read whole, and as with --image
// FILE only the small card is refused, in the same words; the other is
// written (exit 3: not every card was written).
TEST(ImageStdinProgress, AnImageTooLargeForOneOfTheCardsFailsThatCardOnly) {
  const Images& im = images();
  TempDir d;
  const fs::path tmp = d / "tmp", big = card(d / "big.bin", 64u << 20), small = card(d / "small.bin", 32u << 20);
  fs::create_directories(tmp);
  const std::string image = rpi::test::read_file(im.kiosk);
  auto r = rpi::test::sh(tool_in(tmp) + " --image - --device " + shell_quoted(big) + " --device " +
                         shell_quoted(small) + " --yes < " + shell_quoted(im.kiosk));
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  const std::string words =
      "refusing to write " + small.string() + ": it has 32 MiB but the image needs 64 MiB; use a larger card";
  EXPECT_TRUE(contains(r.out + r.err, words)) << r.out << r.err;
  EXPECT_EQ(rpi::test::read_file(small), std::string(32u << 20, 'c')) << "the small card was changed";
  EXPECT_EQ(rpi::test::read_file(big).substr(0, 512), image.substr(0, 512))
      << "the larger card has not the image's MBR";
  EXPECT_EQ(files_under(tmp), "");
  // As --image FILE says it of the same card (the words reused).
  auto file = cli({"--image", im.kiosk.string(), "--device", small.string(), "--dry-run"});
  EXPECT_TRUE(contains(file.out + file.err, words)) << file.out << file.err;
}

// The plan's "map": "bmap" with a .bmap (beside or --bmap), "fat" without
// one, "whole" for an image without a FAT volume; "unknown" for --image -
// without --bmap (the plan reads nothing of it); watch's plan alike. With -v
// the plan says how the map came about.
TEST(ImageStdinProgress, ThePlanSaysWhichMap) {
  const Images& im = images();
  TempDir d;
  const fs::path target = card(d / "card.bin", 64u << 20);
  auto map_of = [](const std::string& out) {
    std::smatch m;
    return std::regex_search(out, m, std::regex(R"re("map":"([a-z]+)")re")) ? m[1].str() : std::string("(none)");
  };
  struct Case {
    fs::path image;
    std::string map;
  };
  for (const auto& [image, map] : {Case{im.kiosk, "bmap"}, Case{im.bare, "fat"}, Case{im.linux_typed, "whole"}}) {
    auto r = cli({"--image", image.string(), "--device", target.string(), "--dry-run", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(map_of(r.out), map) << r.out;
    auto w = cli({"watch", "--image", image.string(), "--dry-run", "--json", "--count", "1"});
    EXPECT_EQ(w.exit_code, 0) << w.out << w.err;
    EXPECT_EQ(map_of(w.out), map) << w.out;
  }
  auto fat = cli({"-v", "--image", im.bare.string(), "--device", target.string(), "--dry-run"});
  EXPECT_TRUE(std::regex_search(fat.err, std::regex(R"(debug: [^\n]*pi\.img: block map derived from its FAT in )"
                                                    R"([0-9.]+ s: \d+ ranges?, [0-9.]+ [KM]iB of 64 MiB to write)")))
      << fat.err;
  auto whole = cli({"-v", "--image", im.linux_typed.string(), "--device", target.string(), "--dry-run"});
  EXPECT_TRUE(contains(whole.err, "pi.img: no block map derived from its FAT (looked in ")) << whole.err;
  EXPECT_TRUE(contains(whole.err, "every byte of its 64 MiB is written")) << whole.err;

  auto piped = rpi::test::sh(shell_quoted(rpi::test::cli_path()) + " --image - --device " + shell_quoted(target) +
                             " --dry-run --json < " + shell_quoted(im.kiosk));
  EXPECT_EQ(piped.exit_code, 0) << piped.out << piped.err;
  EXPECT_EQ(map_of(piped.out), "unknown") << piped.out;
  auto given = rpi::test::sh(shell_quoted(rpi::test::cli_path()) + " --image - --bmap " +
                             shell_quoted(im.kiosk.string() + ".bmap") + " --device " + shell_quoted(target) +
                             " --dry-run --json < " + shell_quoted(im.kiosk));
  EXPECT_EQ(given.exit_code, 0) << given.out << given.err;
  EXPECT_EQ(map_of(given.out), "bmap") << given.out;
}

// The reporter: a progress whose total is unknown (0) shows bytes and a rate,
// never a percentage or an ETA; in --json its total is 0. A warning at a place
// still prints its line and excerpt (the text path warn_at shares).
TEST(ImageStdinProgress, ReporterDrawsAnUnknownTotal) {
  TempDir tmp;
  const std::uint64_t mib = 1024 * 1024;
  const std::string text = capture_stderr(tmp / "err.txt", [&] {
    rpi::cli::Reporter r;
    r.configure(false, false);
    r.set_plain_interval(std::chrono::milliseconds(300));  // 5 s in a run
    r.on_event(rpi::Event{"read", "-", 0, 0, {}});
    r.on_event(rpi::Event{"read", "-", 2 * mib, 0, {}});  // not due yet: not shown
    // The next plain line is due an interval after the first (stderr is no terminal here).
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    r.on_event(rpi::Event{"read", "-", 3 * mib, 0, {}});
    r.on_event(rpi::Event{"read", "-", 4 * mib, 4 * mib, {}});  // the end: always shown
    r.warn_at({"spec.toml:1:1: a warning", "hostname = \"x\"", 1, 1, "spec.toml"});
  });
  EXPECT_TRUE(contains(text, "read standard input 0 B\n")) << text;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(text, m, std::regex("read standard input 3 MiB[^\n]*"))) << text;
  EXPECT_TRUE(std::regex_search(m[0].str(), std::regex(R"(^read standard input 3 MiB [0-9.]+ [KM]iB/s$)"))) << m[0];
  EXPECT_FALSE(contains(text, "2 MiB")) << text;
  EXPECT_TRUE(contains(text, "read standard input [########################] 100% 4 MiB/4 MiB")) << text;
  EXPECT_FALSE(contains(text, "ETA")) << text;
  EXPECT_TRUE(contains(text, "warning: spec.toml:1:1: a warning\n    1 | hostname = \"x\"\n      | ^~~~~~~~\n"))
      << text;

  const std::string out_file = (tmp / "out.txt").string();
  std::fflush(stdout);
  const int saved = ::dup(1);
  const int fd = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ::dup2(fd, 1);
  ::close(fd);
  {
    rpi::cli::Reporter r;
    r.configure(true, false);
    r.on_event(rpi::Event{"read", "-", 65536, 0, {}});
    r.on_event(rpi::Event{"download", "x.tar.gz", 65536, 0, {}});
  }
  std::fflush(stdout);
  ::dup2(saved, 1);
  ::close(saved);
  const std::string json = rpi::test::read_file(out_file);
  EXPECT_TRUE(contains(json, R"({"type":"read","subject":"-","done":65536,"total":0})")) << json;
  EXPECT_TRUE(contains(json, R"({"type":"download","subject":"x.tar.gz","done":65536})")) << json;
}
