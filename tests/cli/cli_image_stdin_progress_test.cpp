// --image -: "read" progress while standard input is read; a raw image whose
// MBR says it is larger than every card refused as soon as its first bytes are in
// (a pipe the test keeps open, the rest never written: a run that waited for
// it would not end); the plan's "map" (bmap, fat, whole, unknown); the -v
// line about a map derived from the FAT; the reporter's drawing of a progress
// whose total is unknown. Oracles: an image this tool built with --output and
// its .bmap; the same image with its partition's type made Linux (no FAT
// volume to derive a map from); the card files byte for byte as they were;
// what is left in the run's $TMPDIR.
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
using rpi::test::cli;
using rpi::test::contains;
using rpi::test::TempDir;

namespace {

std::string q(const fs::path& p) {
  return "'" + p.string() + "'";
}

// A 64 MiB image with its .bmap, a copy without one, and a copy whose
// partition is typed Linux (0x83): no FAT volume to derive a map from.
struct Images {
  TempDir dir;
  fs::path kiosk = dir / "pi.img", bare = dir / "bare" / "pi.img", linux_typed = dir / "linux" / "pi.img";
};
const Images& images() {
  static std::unique_ptr<Images> im;
  if (!im) {
    im = std::make_unique<Images>();
    auto r = cli({"--spec", rpi::test::example("kiosk.toml").string(), "--tarball", rpi::test::tarball().string(),
                  "--size", "64MiB", "--output", im->kiosk.string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
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
fs::path card(const fs::path& path, std::uint64_t size) {
  rpi::test::write_file(path, std::string(size, 'c'));
  return path;
}

std::string left_in(const fs::path& dir) {
  std::string out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) out += e.path().string() + "\n";
  return out;
}

std::string tool(const fs::path& tmp) {
  return "TMPDIR=" + q(tmp) + " " + q(rpi::test::cli_path());
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

// Everything written to stderr while `f` runs.
template <class F>
std::string capture_stderr(const fs::path& file, F&& f) {
  std::fflush(stderr);
  const int saved = ::dup(2);
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ::dup2(fd, 2);
  ::close(fd);
  f();
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  return rpi::test::read_file(file);
}

}  // namespace

// --json: "read" events for standard input ("-"), done growing, total 0 until
// the last one, whose done and total are the image's size; without --json
// (stderr no terminal) plain "read standard input" lines, no percentage.
TEST(ImageStdinProgress, ReadEventsGrowUntilTheImageIsIn) {
  const Images& im = images();
  TempDir d;
  const fs::path tmp = d / "tmp", target = card(d / "card.bin", 64u << 20);
  fs::create_directories(tmp);
  const std::uint64_t size = fs::file_size(im.kiosk);
  auto j =
      rpi::test::sh("cat " + q(im.kiosk) + " | " + tool(tmp) + " --image - --device " + q(target) + " --yes --json");
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

  auto t = rpi::test::sh("cat " + q(im.kiosk) + " | " + tool(tmp) + " --image - --device " + q(target) + " --yes");
  EXPECT_EQ(t.exit_code, 0) << t.out << t.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(t.err, m, std::regex("read standard input [^\n]*"))) << t.err;
  EXPECT_FALSE(contains(m[0], "%")) << m[0];
  EXPECT_FALSE(contains(m[0], "ETA")) << m[0];
  EXPECT_EQ(left_in(tmp), "");
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
  EXPECT_EQ(left_in(tmp), "");
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
  EXPECT_EQ(left_in(tmp), "");
  // Its words, in the results on standard output; an empty standard input is
  // not even looked at (read, it would be "standard input is empty").
  auto r = rpi::test::sh(tool(tmp) + " --image - --bmap " + q(im.kiosk.string() + ".bmap") + " --device " + q(target) +
                         " --yes < /dev/null");
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
  auto r =
      rpi::test::sh(tool(tmp) + " --image - --device " + q(big) + " --device " + q(small) + " --yes < " + q(im.kiosk));
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  const std::string words =
      "refusing to write " + small.string() + ": it has 32 MiB but the image needs 64 MiB; use a larger card";
  EXPECT_TRUE(contains(r.out + r.err, words)) << r.out << r.err;
  EXPECT_EQ(rpi::test::read_file(small), std::string(32u << 20, 'c')) << "the small card was changed";
  EXPECT_EQ(rpi::test::read_file(big).substr(0, 512), image.substr(0, 512))
      << "the larger card has not the image's MBR";
  EXPECT_EQ(left_in(tmp), "");
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

  auto piped = rpi::test::sh(q(rpi::test::cli_path()) + " --image - --device " + q(target) + " --dry-run --json < " +
                             q(im.kiosk));
  EXPECT_EQ(piped.exit_code, 0) << piped.out << piped.err;
  EXPECT_EQ(map_of(piped.out), "unknown") << piped.out;
  auto given = rpi::test::sh(q(rpi::test::cli_path()) + " --image - --bmap " + q(im.kiosk.string() + ".bmap") +
                             " --device " + q(target) + " --dry-run --json < " + q(im.kiosk));
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
    r.on_event(rpi::Event{"read", "-", 0, 0, {}});
    r.on_event(rpi::Event{"read", "-", 2 * mib, 0, {}});  // not due yet (5 s between plain lines): not shown
    // The next plain line is due 5 s after the first (stderr is no terminal here).
    std::this_thread::sleep_for(std::chrono::milliseconds(5200));
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
