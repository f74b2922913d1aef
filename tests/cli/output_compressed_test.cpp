// --output pi.img.xz (.gz, .zst, .bz2): a compressed image and a .bmap of the
// image uncompressed. Oracles: the compressors' own command-line tools (test
// and decompress), cmp against a raw --output of the same spec, bmaptool copy
// (which must discover the .bmap), fsck.fat, stat, and the files left in the
// folder after failures and signals.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "partition/compress.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using rpi::Fd;
using rpi::partition::Compression;
using rpi::test::shell_quoted;
using rpi::test::TempDir;

namespace {

fs::path tarball() {
  return rpi::test::fixture_tarball({"--size-mb", "4"});
}

// A spec whose images are the same bytes every time (no random keys or salts).
fs::path spec_in(const TempDir& dir) {
  fs::path p = dir / "pi.toml";
  rpi::test::write_file(p, "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  return p;
}

// The main command building `output` from the spec in `dir` (64 MiB: quick to compress).
rpi::test::CommandResult build(const TempDir& dir, const fs::path& output, std::vector<std::string> more = {}) {
  std::vector<std::string> args{"--spec",   spec_in(dir).string(), "--tarball", tarball().string(),
                                "--output", output.string(),       "--size",    "64MiB"};
  args.insert(args.end(), more.begin(), more.end());
  return rpi::test::cli(args);
}

// The names in `dir` but those in `keep`, one per line (hidden temporaries included).
std::string others_in(const fs::path& dir, const std::set<std::string>& keep) {
  std::string out;
  for (const auto& e : fs::directory_iterator(dir))
    if (!keep.count(e.path().filename().string())) out += e.path().filename().string() + "\n";
  return out;
}

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 ? st.st_mode & 07777 : 0;
}

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

struct Format {
  std::string ext, tool, name;  // ".xz", the command-line tool, the JSON "compression"
};

class CompressedOutput : public ::testing::TestWithParam<Format> {};

}  // namespace

// Each compression: the tool's own test passes, the tool decompresses it to the
// raw image's bytes, the .bmap beside it is the raw image's, both are 0600,
// the result names the compressed file and its size, and a second build gives
// the same bytes.
TEST_P(CompressedOutput, DecompressesToTheRawImageWithItsBmap) {
  const Format& f = GetParam();
  RPI_REQUIRE_TOOL(f.tool);
  TempDir dir;
  const fs::path raw = dir / "pi.img", packed = dir / ("pi.img" + f.ext);
  ASSERT_EQ(build(dir, raw, {"-q"}).exit_code, 0);
  auto r = build(dir, packed, {"--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;

  auto t = rpi::test::run({f.tool, "-t", packed.string()});
  EXPECT_EQ(t.exit_code, 0) << f.tool << " -t: " << t.out << t.err;
  auto same = rpi::test::sh(f.tool + " -dc " + shell_quoted(packed) + " | cmp - " + shell_quoted(raw));
  EXPECT_EQ(same.exit_code, 0) << same.out << same.err;
  auto bmap = rpi::test::run({"cmp", (dir / "pi.img.bmap").string(), packed.string() + ".bmap"});
  EXPECT_EQ(bmap.exit_code, 0) << "the .bmap must describe the image uncompressed: " << bmap.out;
  EXPECT_EQ(mode_of(packed), 0600u);
  EXPECT_EQ(mode_of(packed.string() + ".bmap"), 0600u);
  EXPECT_EQ(others_in(dir.path(), {"pi.toml", "pi.img", "pi.img.bmap", packed.filename().string(),
                                   packed.filename().string() + ".bmap"}),
            "");

  const std::string size = std::to_string(fs::file_size(packed)), raw_size = std::to_string(fs::file_size(raw));
  EXPECT_TRUE(contains(r.out, "\"image\":\"" + packed.string() + "\"")) << r.out;
  EXPECT_TRUE(contains(r.out, "\"bmap\":\"" + packed.string() + ".bmap\"")) << r.out;
  EXPECT_TRUE(contains(r.out, "\"image_size\":" + raw_size + ",")) << r.out;
  EXPECT_TRUE(contains(r.out, "\"compression\":\"" + f.name + "\",\"compressed_size\":" + size)) << r.out;
  EXPECT_TRUE(contains(r.out, "{\"type\":\"compress\",\"subject\":\"" + packed.filename().string() +
                                  "\",\"done\":" + raw_size + ",\"total\":" + raw_size + "}"))
      << r.out;
  EXPECT_FALSE(contains(r.out, ".tmp-")) << "a temporary name reached the output: " << r.out;

  // Reproducible: built again elsewhere (a second later, too), the same bytes.
  TempDir again;
  ASSERT_EQ(build(again, again / packed.filename().string(), {"-q"}).exit_code, 0);
  auto cmp = rpi::test::run({"cmp", packed.string(), (again / packed.filename().string()).string()});
  EXPECT_EQ(cmp.exit_code, 0) << cmp.out;
  if (f.ext == ".gz") {
    // RFC 1952 header: no FNAME/FCOMMENT flags, MTIME zero.
    const std::string head = rpi::test::read_file(packed).substr(0, 10);
    EXPECT_EQ(head[3], '\0') << "gzip header flags";
    EXPECT_EQ(head.substr(4, 4), std::string(4, '\0')) << "gzip header time";
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, CompressedOutput,
                         ::testing::Values(Format{".xz", "xz", "xz"}, Format{".gz", "gzip", "gzip"},
                                           Format{".zst", "zstd", "zstd"}, Format{".bz2", "bzip2", "bzip2"}),
                         [](const auto& p) { return p.param.name; });

// bmaptool finds the .bmap of pi.img.xz by its own lookup, uses it, and the
// file it writes is the raw image, with a clean FAT.
TEST(CompressedOutputTools, BmaptoolCopyFindsTheBmapAndGivesTheImage) {
  RPI_REQUIRE_TOOL("bmaptool");
  RPI_REQUIRE_TOOL("fsck.fat");
  TempDir dir;
  const fs::path raw = dir / "pi.img", packed = dir / "pi.img.xz", target = dir / "card.img";
  ASSERT_EQ(build(dir, raw, {"-q"}).exit_code, 0);
  ASSERT_EQ(build(dir, packed, {"-q"}).exit_code, 0);
  fs::rename(raw.string() + ".bmap", dir / "raw.bmap");  // only the compressed image's .bmap is there to find
  auto c = rpi::test::run({"bmaptool", "copy", packed.string(), target.string()});
  ASSERT_EQ(c.exit_code, 0) << c.out << c.err;
  EXPECT_TRUE(contains(c.err + c.out, "discovered bmap file '" + packed.string() + ".bmap'")) << c.err;
  EXPECT_TRUE(contains(c.err + c.out, "using bmap file 'pi.img.xz.bmap'")) << c.err;
  EXPECT_EQ(rpi::test::run({"cmp", raw.string(), target.string()}).exit_code, 0);
  const fs::path part = dir / "part.img";
  ASSERT_EQ(rpi::test::sh("dd if=" + shell_quoted(target) + " of=" + shell_quoted(part) + " bs=1M skip=8 status=none")
                .exit_code,
            0);
  auto fsck = rpi::test::run({"fsck.fat", "-n", part.string()});
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out << fsck.err;
}

// --dry-run says how the image would be compressed, and writes nothing.
TEST(CompressedOutputTools, DryRunSaysHowTheImageIsCompressed) {
  TempDir dir;
  const fs::path packed = dir / "pi.img.zst";
  auto r = build(dir, packed, {"--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "compressed once built: zstd (level 3); " + packed.string() + ".bmap describes"))
      << r.out;
  auto j = build(dir, packed, {"--dry-run", "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  EXPECT_TRUE(contains(j.out, "\"output\":\"" + packed.string() + "\",\"compression\":\"zstd\"")) << j.out;
  EXPECT_EQ(others_in(dir.path(), {"pi.toml"}), "");
}

// Names bmaptool or the decompressors would not take for a compressed image,
// and archive formats, are refused before anything is built.
TEST(CompressedOutputTools, NamesTheToolsWouldNotTakeAreRefused) {
  TempDir dir;
  const std::string d = dir.path().string() + "/";
  struct Case {
    std::string name, says;
  } cases[] = {
      {"pi.img.XZ", "name it " + d + "pi.img.xz (lower case): bmaptool and xz take only that spelling"},
      {"pi.img.Gz", "name it " + d + "pi.img.gz (lower case)"},
      {"pi.img.zstd", "name it " + d + "pi.img.zst: bmaptool and zstd take a zstd-compressed image only as .zst"},
      {"pi.img.zip", "a .zip is an archive of files, and --output writes one disk image; name it " + d + "pi.img.xz"},
      {"pi.tar.gz", "a .tar.gz is a tar archive, and --output writes a disk image; name it " + d + "pi.img.gz"},
  };
  for (const auto& c : cases) {
    auto r = build(dir, dir / c.name);
    EXPECT_EQ(r.exit_code, 2) << c.name << ": " << r.err;
    EXPECT_TRUE(contains(r.err, c.says)) << c.name << ": " << r.err;
  }
  EXPECT_EQ(others_in(dir.path(), {"pi.toml"}), "");
}

// A build that fails leaves no compressed file, no .bmap and no temporary, and
// its message names the output, not a temporary.
TEST(CompressedOutputTools, AFailedBuildLeavesNothing) {
  TempDir dir;
  const fs::path packed = dir / "small.img.gz";
  auto r = rpi::test::cli({"--spec", spec_in(dir).string(), "--tarball",
                           rpi::test::fixture_tarball({"--size-mb", "16"}).string(), "--output", packed.string(),
                           "--size", "20MiB"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, packed.string() + ": the files do not fit")) << r.err;
  EXPECT_FALSE(contains(r.err, ".tmp-")) << r.err;
  EXPECT_EQ(others_in(dir.path(), {"pi.toml"}), "");
}

namespace {

// Starts the CLI with stdout on a pipe; returns its pid and the pipe's read end.
pid_t spawn(const std::vector<std::string>& args, Fd& out) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return -1;
  const std::string tool = rpi::test::cli_path().string();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(p[1], 1);
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 2);
    std::vector<char*> argv{const_cast<char*>(tool.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(tool.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(p[1]);
  out.reset(p[0]);
  return pid;
}

// Reads `fd` until `what` was seen (true) or the stream ended (false).
bool read_until(int fd, const std::string& what) {
  std::string seen;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return false;
    seen.append(buf, static_cast<std::size_t>(n));
    if (contains(seen, what)) return true;
  }
}

}  // namespace

// Ctrl-C (or TERM, HUP) while the image is being compressed: the run ends by
// that signal and leaves neither the compressed file, nor its .bmap, nor the
// raw image it was compressing.
TEST(CompressedOutputSignals, ASignalWhileCompressingLeavesNoFile) {
  RPI_REQUIRE_TOOL("xz");
  for (int sig : {SIGINT, SIGTERM}) {
    TempDir dir;
    Fd out;
    // 1 GiB of image to compress: seconds of work, stopped after its first MiB.
    const pid_t pid = spawn({"--json", "--spec", spec_in(dir).string(), "--tarball", tarball().string(), "--size",
                             "1GiB", "--output", (dir / "pi.img.xz").string()},
                            out);
    ASSERT_GT(pid, 0);
    const bool compressing = read_until(out.get(), "{\"type\":\"compress\"");
    ::kill(pid, sig);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(compressing) << "the run ended before it compressed: status " << status;
    ASSERT_TRUE(WIFSIGNALED(status)) << strsignal(sig) << ": status " << status;
    EXPECT_EQ(WTERMSIG(status), sig);
    EXPECT_EQ(others_in(dir.path(), {"pi.toml"}), "") << strsignal(sig);
  }
}

namespace {

// Whether process `pid` waits for a flock of the folder `dir` (a "->" line of /proc/locks).
bool waits_for_lock(pid_t pid, const fs::path& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return false;
  std::istringstream locks(rpi::test::read_file("/proc/locks"));
  for (std::string line; std::getline(locks, line);) {
    std::istringstream f(line);
    std::string id, arrow, type, advisory, mode, lock_pid, where;
    f >> id >> arrow >> type >> advisory >> mode >> lock_pid >> where;
    if (arrow == "->" && type == "FLOCK" && lock_pid == std::to_string(pid) &&
        where.ends_with(":" + std::to_string(st.st_ino)))
      return true;
  }
  return false;
}

// Whether a signal sent to `pid` as a whole is still pending (not yet taken by a handler).
bool signal_pending(pid_t pid) {
  std::istringstream status(rpi::test::read_file("/proc/" + std::to_string(pid) + "/status"));
  for (std::string line; std::getline(status, line);)
    if (line.starts_with("ShdPnd:"))
      return line.find_first_not_of("0", line.find_first_not_of(" \t", 7)) != std::string::npos;
  return false;
}

bool exited(pid_t pid, int& status) {
  return ::waitpid(pid, &status, WNOHANG) == pid;
}

// Polls `done` until it holds or about a minute has passed (a loaded machine):
// a limit against hanging, never what a test checks.
template <class F>
bool eventually(F done) {
  for (int i = 0; i < 6000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

// Starts a build of pi.img.xz in `dir` while this test holds the folder's lock,
// and returns once the run waits for it at its renames (the raw image and its
// .bmap finished, passing from the image builder to the compressor).
pid_t run_until_the_renames(const TempDir& dir, Fd& folder, Fd& out) {
  const fs::path spec = spec_in(dir);
  folder.reset(::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!folder || ::flock(folder.get(), LOCK_EX) != 0) return -1;
  const pid_t pid = spawn({"-q", "--spec", spec.string(), "--tarball", tarball().string(), "--size", "64MiB",
                           "--output", (dir / "pi.img.xz").string()},
                          out);
  if (pid > 0 && !eventually([&] { return waits_for_lock(pid, dir.path()); })) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return -1;
  }
  return pid;
}

}  // namespace

// A signal that comes while the finished raw image and its .bmap pass from the
// image builder to the compressor (held here: the builder's renames wait for
// the folder's lock) waits until they are where a signal removes them, then
// ends the run: no file is left.
TEST(CompressedOutputSignals, ASignalAtTheRenamesEndsTheRunWithoutLeftovers) {
  TempDir dir;
  Fd folder, out;
  const pid_t pid = run_until_the_renames(dir, folder, out);
  ASSERT_GT(pid, 0) << "the run never waited for the folder's lock at its renames";
  ASSERT_EQ(::kill(pid, SIGINT), 0);
  // Taken by the run's handler, which holds it back: the run waits for the lock again.
  int status = 0;
  ASSERT_TRUE(eventually([&] { return exited(pid, status) || !signal_pending(pid); })) << "never taken";
  const bool waits_again = eventually([&] { return exited(pid, status) || waits_for_lock(pid, dir.path()); });
  EXPECT_TRUE(waits_again && !exited(pid, status)) << "the signal did not wait for the renames: status " << status;
  folder.reset();  // releases the lock: the renames go on, then the signal ends the run
  if (!WIFSIGNALED(status)) ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status;
  EXPECT_EQ(WTERMSIG(status), SIGINT);
  EXPECT_EQ(others_in(dir.path(), {"pi.toml"}), "");
}

// A run killed outright (no handler runs) at its renames leaves the raw image
// (with the card's secrets), its .bmap and the compressor's temporaries: the
// next run names every one of them.
TEST(CompressedOutputSignals, WhatAKilledRunLeftIsNamedByTheNextRun) {
  TempDir dir;
  Fd folder, out;
  const pid_t pid = run_until_the_renames(dir, folder, out);
  ASSERT_GT(pid, 0) << "the run never waited for the folder's lock at its renames";
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  folder.reset();
  const std::string left = others_in(dir.path(), {"pi.toml"});
  ASSERT_TRUE(contains(left, ".bmap.tmp-")) << "the kill came before the renames:\n" << left;
  auto r = build(dir, dir / "pi.img.xz", {"--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream names(left);
  for (std::string name; std::getline(names, name);)
    EXPECT_TRUE(contains(r.err, (dir / name).string() + " (")) << name << " is not named:\n" << r.err;
}

// Hand-made names of each kind a killed compressed-output run leaves are named;
// names of other files are not.
TEST(CompressedOutputSignals, LeftoverNamesOfACompressedOutputAreNamed) {
  TempDir dir;
  const std::vector<std::string> ours{".pi.img.xz.tmp-Ab12Cd", ".pi.img.xz.tmp-Ab12Cd.bmap",
                                      "..pi.img.xz.tmp-Ab12Cd.tmp-Ef34Gh", "..pi.img.xz.tmp-Ab12Cd.bmap.tmp-Ij56Kl",
                                      ".pi.img.xz.bmap.tmp-Mn78Op"};
  const std::vector<std::string> others{".pi.img.xz.tmp-Ab12Cd.old", "..pi.img.xz.tmp-Ab12.tmp-Ef34Gh",
                                        ".pi.img.gz.tmp-Ab12Cd", "..pi.img.xz.tmp-Ab12Cd.tmp-Ef34"};
  for (const auto& n : ours) rpi::test::write_file(dir / n, "x");
  for (const auto& n : others) rpi::test::write_file(dir / n, "x");
  auto r = build(dir, dir / "pi.img.xz", {"--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const auto& n : ours)
    EXPECT_TRUE(contains(r.err, (dir / n).string() + " (")) << n << " is not named:\n" << r.err;
  for (const auto& n : others) EXPECT_FALSE(contains(r.err, (dir / n).string() + " (")) << n << " is named:\n" << r.err;
}

// The library function itself: which names ask for compression, a failed write
// named with its reason, and a cancel flag that stops it.
TEST(CompressImage, NamesAskForCompressionInLowerCaseOnly) {
  using rpi::partition::compression_for;
  EXPECT_EQ(compression_for("a/pi.img.xz"), Compression::xz);
  EXPECT_EQ(compression_for("pi.img.gz"), Compression::gzip);
  EXPECT_EQ(compression_for("pi.img.zst"), Compression::zstd);
  EXPECT_EQ(compression_for("pi.img.bz2"), Compression::bzip2);
  EXPECT_EQ(compression_for("pi.img"), Compression::none);
  EXPECT_EQ(compression_for("pi.img.XZ"), Compression::none);
  EXPECT_EQ(compression_for("pi.xz/pi.img"), Compression::none);
}

namespace {

// Runs `body` in a child process that ends with _exit, and returns what it
// returned ("" when it passed) or how the child ended (a sanitizer's report
// ends it). The failure paths change the process (signal handlers, file size
// limits) and count its threads: a child has only the thread that forked it.
// After a cancel compress_image leaves libarchive's encoder allocated
// (compress.hpp): a leak checker at this binary's exit would report that.
std::string in_child(const std::function<std::string()>& body) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return "pipe failed";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    std::string r;
    try {
      r = body();
    } catch (const std::exception& e) {
      r = std::string("unexpected exception: ") + e.what();
    }
    (void)!::write(p[1], r.data(), r.size());
    ::_exit(0);
  }
  ::close(p[1]);
  std::string r;
  char buf[4096];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;) r.append(buf, static_cast<std::size_t>(n));
  ::close(p[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) r += "; the child ended with status " + std::to_string(status);
  return r;
}

// `size` bytes of an image that compresses somewhat (text-like bytes), in `dir`.
fs::path image_in(const TempDir& dir, std::size_t size) {
  std::string data(size, '\0');
  std::uint32_t x = 1;
  for (auto& c : data) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>('a' + (x >> 16) % 16);
  }
  const fs::path p = dir / "in.img";
  rpi::test::write_file(p, data);
  return p;
}

std::uint64_t size_of(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
}

// The threads of this process ("Threads:" in /proc/self/status; 0 when it
// cannot be read), read with async-signal-safe calls only: a signal handler
// counts them too.
std::size_t threads_now() {
  static constexpr char kKey[] = "\nThreads:";
  char buf[8192];
  const int fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  std::size_t have = 0;
  for (ssize_t n; have < sizeof buf - 1 && (n = ::read(fd, buf + have, sizeof buf - 1 - have)) > 0;)
    have += static_cast<std::size_t>(n);
  ::close(fd);
  buf[have] = '\0';
  const char* p = std::strstr(buf, kKey);
  if (!p) return 0;
  p += sizeof kKey - 1;
  while (*p == ' ' || *p == '\t') ++p;
  std::size_t n = 0;
  for (; *p >= '0' && *p <= '9'; ++p) n = n * 10 + static_cast<std::size_t>(*p - '0');
  return n;
}

// Writes past RLIMIT_FSIZE tried so far (the kernel raises SIGXFSZ for each),
// and the threads of the process at the first.
volatile std::sig_atomic_t g_xfsz = 0;
volatile std::sig_atomic_t g_threads_at_xfsz = 0;
extern "C" void count_xfsz(int) {
  if (g_xfsz == 0) g_threads_at_xfsz = static_cast<std::sig_atomic_t>(threads_now());
  g_xfsz = g_xfsz + 1;
}

const std::pair<Compression, const char*> kKinds[] = {
    {Compression::xz, "xz"}, {Compression::gzip, "gzip"}, {Compression::zstd, "zstd"}, {Compression::bzip2, "bzip2"}};

}  // namespace

TEST(CompressImage, AFailedWriteIsAnIoErrorNamingTheFile) {
  TempDir dir;
  const fs::path in = dir / "in.img";
  rpi::test::write_file(in, std::string(1 << 20, 'x'));
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  EXPECT_EQ(
      in_child([&]() -> std::string {
        Fd src = rpi::open_or_throw(in.string(), O_RDONLY);
        Fd full(::open("/dev/full", O_WRONLY | O_CLOEXEC));
        try {
          rpi::partition::compress_image(src.get(), in.string(), 1 << 20, full.get(), "out.img.gz", Compression::gzip);
          return "writing to /dev/full succeeded";
        } catch (const rpi::Error& e) {
          if (e.code() != rpi::Errc::io) return std::string("not an io error: ") + e.what();
          if (!contains(e.what(), "cannot write out.img.gz: No space left on device")) return e.what();
        }
        // An image shorter than the size asked for: named, not padded.
        Fd sink(::open("/dev/null", O_WRONLY | O_CLOEXEC));
        try {
          rpi::partition::compress_image(src.get(), in.string(), 2 << 20, sink.get(), "out.img.gz", Compression::gzip);
          return "a short image was compressed";
        } catch (const rpi::Error& e) {
          if (!contains(e.what(), in.string() + ": it ends after 1048576 of 2097152 bytes")) return e.what();
        }
        return "";
      }),
      "");
}

// A write that fails part-way (the file may grow no further: EFBIG; xz holds
// these 4 MiB in one block, so it fails at the end of the stream) stops the
// compression there: an io error naming the file, no final progress event,
// and nothing more written after it (the stream is not finished).
TEST(CompressImage, AWriteErrorPartWayStopsThere) {
  TempDir dir;
  const fs::path in = image_in(dir, 4 << 20);
  for (const auto& [kind, name] : kKinds) {
    EXPECT_EQ(in_child([&, kind = kind]() -> std::string {
                std::signal(SIGXFSZ, SIG_IGN);
                constexpr rlim_t kLimit = 64 << 10;
                const struct rlimit lim { kLimit, kLimit };
                if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) return "setrlimit failed";
                Fd src = rpi::open_or_throw(in.string(), O_RDONLY);
                Fd dst(::open((dir / "out").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
                bool final_event = false;
                auto sink = [&](const rpi::Event& ev) { final_event = final_event || ev.done == ev.total; };
                try {
                  rpi::partition::compress_image(src.get(), in.string(), 4 << 20, dst.get(), "out.img", kind,
                                                 {sink, "out.img", nullptr});
                  return "the file grew past its limit";
                } catch (const rpi::Error& e) {
                  if (e.code() != rpi::Errc::io || !contains(e.what(), "cannot write out.img: File too large"))
                    return e.what();
                }
                if (final_event) return "a final progress event after a failure";
                if (size_of(dst.get()) > kLimit) return "more than the limit was written";
                return "";
              }),
              "")
        << name;
  }
}

// A cancel part-way (here from the first progress event) ends the compression
// at the next block: rpi::Cancelled, and not a byte more reaches the file. It
// does not wait for the encoder to finish what it holds (the run ends: see
// compress.hpp); a write error does (the next test).
TEST(CompressImage, ACancelPartWayWritesNothingMore) {
  TempDir dir;
  const fs::path in = image_in(dir, 16 << 20);
  for (const auto& [kind, name] : kKinds) {
    EXPECT_EQ(in_child([&, kind = kind]() -> std::string {
                Fd src = rpi::open_or_throw(in.string(), O_RDONLY);
                Fd dst(::open((dir / "out").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
                std::atomic<bool> cancel{false};
                std::uint64_t at_cancel = 0, events = 0;
                auto sink = [&](const rpi::Event& ev) {
                  if (ev.type != "compress" || ev.done == 0 || ev.done >= ev.total) return;
                  if (!events++) at_cancel = size_of(dst.get()), cancel = true;
                };
                try {
                  rpi::partition::compress_image(src.get(), in.string(), 16 << 20, dst.get(), "out.img", kind,
                                                 {sink, "out.img", &cancel});
                  return "not cancelled";
                } catch (const rpi::Cancelled&) {
                }
                if (events != 1) return "progress events after the cancel: " + std::to_string(events);
                if (size_of(dst.get()) != at_cancel)
                  return "written after the cancel: " + std::to_string(size_of(dst.get()) - at_cancel) + " bytes";
                return "";
              }),
              "")
        << name;
  }
}

// A write that fails part-way through the data (not at the end of the stream)
// frees the encoder: the process has as many threads as before, where xz had
// started its worker threads (counted when the write failed), and no write is tried after the failed one
// (each write past RLIMIT_FSIZE raises a SIGXFSZ, counted here: finishing the
// stream into the file would raise more). The image: 1 MiB that does not
// compress, then zeros (a hole) up to 64 MiB: xz (24 MiB blocks, two threads)
// needs a free thread for its third block, that is the first block done, and
// its output fails to be written while the second block is compressed.
TEST(CompressImage, AWriteErrorPartWayFreesTheEncoderAndTriesNoMoreWrites) {
  TempDir dir;
  const fs::path in = dir / "in.img";
  {
    std::string noise(1 << 20, '\0');
    std::uint64_t x = 88172645463325252ull;
    for (auto& c : noise) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      c = static_cast<char>(x >> 56);
    }
    rpi::test::write_file(in, noise);
    fs::resize_file(in, 256 << 20);
  }
  for (const auto& [kind, name] : kKinds) {
    EXPECT_EQ(in_child([&, kind = kind]() -> std::string {
                struct sigaction sa {};
                sa.sa_handler = count_xfsz;
                ::sigemptyset(&sa.sa_mask);
                if (::sigaction(SIGXFSZ, &sa, nullptr) != 0) return "sigaction failed";
                constexpr rlim_t kLimit = 16 << 10;
                const struct rlimit lim { kLimit, kLimit };
                if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) return "setrlimit failed";
                Fd src = rpi::open_or_throw(in.string(), O_RDONLY);
                Fd dst(::open((dir / "out").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
                const std::size_t threads = threads_now();
                if (threads == 0) return "cannot read the threads from /proc/self/status";
                try {
                  rpi::partition::compress_image(src.get(), in.string(), 256 << 20, dst.get(), "out.img", kind);
                  return "the file grew past its limit";
                } catch (const rpi::Error& e) {
                  if (e.code() != rpi::Errc::io || !contains(e.what(), "cannot write out.img: File too large"))
                    return e.what();
                }
                if (g_xfsz != 1) return "writes tried past the limit: " + std::to_string(g_xfsz) + ", not 1";
                if (size_of(dst.get()) != kLimit)
                  return "the file has " + std::to_string(size_of(dst.get())) + " bytes";
                if (kind == Compression::xz && static_cast<std::size_t>(g_threads_at_xfsz) <= threads)
                  return "xz had started no worker thread when the write failed";
                if (threads_now() != threads)
                  return "threads after the failure: " + std::to_string(threads_now()) +
                         ", before: " + std::to_string(threads);
                return "";
              }),
              "")
        << name;
  }
}
