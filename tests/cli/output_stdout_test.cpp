// --output -: the raw image on standard output, for pipes. Oracles: cmp
// against an --output FILE.img of the same inputs, the files left in the
// folders (no .bmap, the scratch folder in $TMPDIR removed), stat (a 0644
// file stdout points at ends up 0600), the exit status and stderr when the
// reader goes away (`| head -c 4096`) or a signal stops the copy, and the
// refusals (--json, a terminal) that write nothing. --bmap FILE: bmaptool
// copies the captured image with it; with --output FILE.img it replaces FILE.img.bmap.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "cli_support.hpp"
#include "test_support.hpp"

extern char** environ;

namespace fs = std::filesystem;
using rpi::test::contains;
using rpi::test::shell_quoted;
using rpi::test::TempDir;

namespace {

constexpr const char* kEpoch = "1700000000";

// A spec whose images are the same bytes every time (no random keys or salts).
fs::path spec_in(const TempDir& dir) {
  fs::path p = dir / "pi.toml";
  rpi::test::write_file(p, "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  return p;
}

// The command line building from the spec in `dir` (64 MiB: quick to copy)
// with `more` appended, its scratch folders in `tmp`.
std::string command(const TempDir& dir, const fs::path& tmp, const std::string& more) {
  return "TMPDIR=" + shell_quoted(tmp) + " SOURCE_DATE_EPOCH=" + kEpoch + " " + shell_quoted(rpi::test::cli_path()) +
         " --spec " + shell_quoted(spec_in(dir)) + " --tarball " + shell_quoted(rpi::test::tarball()) +
         " --size 64MiB " + more;
}

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 ? st.st_mode & 07777 : 0;
}

// Every file under `dir` whose name ends with `suffix`, one per line.
std::string files_ending(const fs::path& dir, const std::string& suffix) {
  std::string out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().ends_with(suffix)) out += e.path().string() + "\n";
  return out;
}

// What is left in a $TMPDIR, one name per line ("" when empty).
std::string left_in(const fs::path& dir) {
  std::string out;
  for (const auto& e : fs::directory_iterator(dir)) out += e.path().filename().string() + "\n";
  return out;
}

fs::path made_dir(const fs::path& p) {
  fs::create_directories(p);
  return p;
}

}  // namespace

// `--output - > file`: the same bytes as --output FILE.img of the same inputs;
// the summary on stderr, no .bmap anywhere, the scratch folder gone, and the
// 0644 file stdout points at made 0600 (the image holds secrets).
TEST(OutputStdout, RedirectedToAFileIsTheImageFileByteForByte) {
  TempDir dir;
  const fs::path tmp = made_dir(dir / "tmp"), piped = dir / "piped.img", file = dir / "file.img";
  rpi::test::write_file(piped, "old");
  ASSERT_EQ(::chmod(piped.c_str(), 0644), 0);
  auto r = rpi::test::sh(command(dir, tmp, "--output - >" + shell_quoted(piped) + " 2>" + shell_quoted(dir / "err")));
  const std::string err = rpi::test::read_file(dir / "err");
  ASSERT_EQ(r.exit_code, 0) << err;
  auto f = rpi::test::sh(command(dir, tmp, "-q --output " + shell_quoted(file)));
  ASSERT_EQ(f.exit_code, 0) << f.err << f.out;

  EXPECT_EQ(fs::file_size(piped), fs::file_size(file));
  auto same = rpi::test::run({"cmp", piped.string(), file.string()});
  EXPECT_EQ(same.exit_code, 0) << same.out << same.err;
  EXPECT_EQ(mode_of(piped), 0600u);
  EXPECT_TRUE(contains(err, " was readable by group or others (mode 0644)")) << err;
  EXPECT_TRUE(contains(err, "so it is now mode 0600")) << err;
  // The results on stderr, naming no scratch path.
  EXPECT_TRUE(contains(err, "standard output: 64 MiB image, ")) << err;
  EXPECT_TRUE(contains(err, "every byte written to standard output (no .bmap)")) << err;
  EXPECT_TRUE(contains(err, "--output -: no .bmap; give --bmap FILE for one")) << err;
  EXPECT_FALSE(contains(err, tmp.string() + "/")) << err;
  // Only the file --output file.img made has a .bmap; the scratch folder is gone.
  EXPECT_EQ(files_ending(dir.path(), ".bmap"), file.string() + ".bmap\n");
  EXPECT_EQ(left_in(tmp), "");

  // `>>`: an output opened with O_APPEND, which sendfile refuses (EINVAL): read and write instead.
  const fs::path appended = dir / "appended.img";
  rpi::test::write_file(appended, "");
  auto a = rpi::test::sh(command(dir, tmp, "-q --output - >>" + shell_quoted(appended)));
  ASSERT_EQ(a.exit_code, 0) << a.err;
  auto same_appended = rpi::test::run({"cmp", appended.string(), file.string()});
  EXPECT_EQ(same_appended.exit_code, 0) << same_appended.out << same_appended.err;
  EXPECT_EQ(left_in(tmp), "");
}

// The first bytes of the image are an MBR: the stream starts with the image,
// nothing before it (no summary, no note), also without -q.
TEST(OutputStdout, StdoutHoldsOnlyTheImage) {
  TempDir dir;
  const fs::path tmp = made_dir(dir / "tmp");
  auto r = rpi::test::sh(command(dir, tmp, "--output - 2>/dev/null | od -A n -t x1 -j 510 -N 2"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "55 aa")) << r.out;
  EXPECT_EQ(left_in(tmp), "");
}

// A reader that goes away: exit 1 (not killed by SIGPIPE), the message, the scratch folder gone.
TEST(OutputStdout, ReaderThatGoesAwayIsAnErrorNotASilentDeath) {
  TempDir dir;
  const fs::path tmp = made_dir(dir / "tmp"), rc = dir / "rc";
  auto r = rpi::test::sh("{ " + command(dir, tmp, "--output - 2>" + shell_quoted(dir / "err")) + "; echo $? >" +
                         shell_quoted(rc) + "; } | head -c 4096 >/dev/null");
  const std::string err = rpi::test::read_file(dir / "err");
  EXPECT_EQ(rpi::test::read_file(rc), "1\n") << err;
  EXPECT_TRUE(contains(err, "standard output was closed after ")) << err;
  EXPECT_TRUE(contains(err, " bytes of 67108864: the image is incomplete")) << err;
  EXPECT_FALSE(contains(err, "standard output: 64 MiB image")) << "no summary for an incomplete image: " << err;
  EXPECT_EQ(left_in(tmp), "");
}

// SIGTERM while the copy waits for a reader that does not read: 143, said,
// the scratch folder removed.
TEST(OutputStdout, SignalDuringTheCopyRemovesTheScratchFolder) {
  TempDir dir;
  const fs::path tmp = made_dir(dir / "tmp"), err_path = dir / "err";
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(err, 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err, 2);
  const std::vector<std::string> argv{"env",
                                      "TMPDIR=" + tmp.string(),
                                      std::string("SOURCE_DATE_EPOCH=") + kEpoch,
                                      rpi::test::cli_path().string(),
                                      "--spec",
                                      spec_in(dir).string(),
                                      "--tarball",
                                      rpi::test::tarball().string(),
                                      "--size",
                                      "64MiB",
                                      "--output",
                                      "-"};
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawnp(&pid, "env", &fa, nullptr, args.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  ::close(err);
  // The copy has begun once its progress names standard output (the pipe holds 64 KiB of 64 MiB).
  bool copying = false;
  for (int i = 0; i < 3000 && !copying; ++i) {
    copying = contains(rpi::test::read_file(err_path), "write standard output");
    if (!copying) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(copying) << rpi::test::read_file(err_path);
  ::kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ::close(out[0]);
  const std::string text = rpi::test::read_file(err_path);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status) << ": " << text;
  EXPECT_EQ(WEXITSTATUS(status), 143) << text;
  EXPECT_TRUE(contains(text, "cancelled after ")) << text;
  EXPECT_TRUE(contains(text, "the image on standard output is incomplete")) << text;
  EXPECT_EQ(left_in(tmp), "");
}

// --json: its events go to stdout, where the image would: refused (exit 2), nothing built.
TEST(OutputStdout, JsonIsRefused) {
  TempDir dir;
  const fs::path tmp = made_dir(dir / "tmp");
  auto r = rpi::test::sh(command(dir, tmp, "--json --output -"));
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(
      contains(r.out + r.err, "--json writes its events to standard output, and --output - writes a disk image"))
      << r.out << r.err;
  EXPECT_TRUE(r.out.starts_with("{\"type\":\"error\"")) << r.out;
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "one event, the error: " << r.out;
  EXPECT_EQ(left_in(tmp), "");
}

// `2>&1`: the messages would be mixed into the image: refused (exit 2), the file left empty.
TEST(OutputStdout, StderrIntoTheSameFileIsRefused) {
  TempDir dir;
  const fs::path tmp = made_dir(dir / "tmp"), out = dir / "out.img";
  auto r = rpi::test::sh(command(dir, tmp, "--output - >" + shell_quoted(out) + " 2>&1"));
  EXPECT_EQ(r.exit_code, 2);
  const std::string text = rpi::test::read_file(out);
  EXPECT_TRUE(contains(text, "standard error goes where standard output does (2>&1?)")) << text;
  EXPECT_LT(text.size(), 1000u) << "no image after the message";
  EXPECT_EQ(left_in(tmp), "");
}

// A terminal as stdout: refused (exit 2) before anything is built.
TEST(OutputStdout, TerminalIsRefused) {
  if (!rpi::test::have_tool("script"))
    GTEST_SKIP() << "`script` (util-linux) is not installed: no terminal to test with";
  TempDir dir;
  const fs::path tmp = made_dir(dir / "tmp");
  auto r = rpi::test::run({"script", "-qec", command(dir, tmp, "--output -"), "/dev/null"});
  if (contains(r.out + r.err, "openpty") || contains(r.out + r.err, "failed to create pseudo-terminal"))
    GTEST_SKIP() << "no pseudo-terminal here: " << r.out << r.err;
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "refusing to write a disk image to a terminal: pipe it or redirect it")) << r.out;
  EXPECT_EQ(left_in(tmp), "");
}

// --dry-run --output -: the plan (on stdout: nothing else goes there) says
// where the image would go, and nothing is built.
TEST(OutputStdout, DryRunPlanSaysStandardOutput) {
  TempDir dir;
  const fs::path tmp = made_dir(dir / "tmp");
  auto r = rpi::test::sh(command(dir, tmp, "--dry-run --output -"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out.rfind("plan (nothing is written: --dry-run)\n", 0), 0u) << r.out;
  EXPECT_TRUE(contains(r.out, "  card 1: image to standard output (--output -)")) << r.out;
  EXPECT_TRUE(contains(r.out, "then copied to standard output")) << r.out;
  EXPECT_TRUE(contains(r.out, "no .bmap")) << r.out;
  EXPECT_FALSE(contains(r.out, "image -")) << r.out;
  EXPECT_EQ(left_in(tmp), "");
  EXPECT_FALSE(fs::exists(dir / "-"));
}

// Generated SSH host keys: kept in --known-hosts FILE when given, else a note
// says they were not (the image itself is still written).
TEST(OutputStdout, KnownHostsGoToKnownHostsFileOrAreSaidLost) {
  TempDir dir;
  const fs::path tmp = made_dir(dir / "tmp"), spec = dir / "keys.toml", seed = dir / "seed", kh = dir / "kh";
  rpi::test::write_file(spec, "[system]\nhostname = \"pi\"\n");
  rpi::test::write_file(seed, "0123456789abcdef-a-secret-seed");
  ASSERT_EQ(::chmod(seed.c_str(), 0600), 0);
  const std::string base = "TMPDIR=" + shell_quoted(tmp) + " " + shell_quoted(rpi::test::cli_path()) + " --spec " +
                           shell_quoted(spec) + " --tarball " + shell_quoted(rpi::test::tarball()) +
                           " --size 64MiB --seed-file " + shell_quoted(seed) + " --output - ";
  auto with = rpi::test::sh(base + "--known-hosts " + shell_quoted(kh) + " >" + shell_quoted(dir / "a.img"));
  ASSERT_EQ(with.exit_code, 0) << with.err;
  EXPECT_TRUE(contains(rpi::test::read_file(kh), "pi ssh-ed25519 ")) << rpi::test::read_file(kh);
  EXPECT_FALSE(fs::exists(dir / "a.img.known_hosts"));
  auto without = rpi::test::sh(base + ">" + shell_quoted(dir / "b.img"));
  ASSERT_EQ(without.exit_code, 0) << without.err;
  EXPECT_TRUE(contains(without.err, "known_hosts lines were not kept")) << without.err;
  EXPECT_TRUE(contains(without.err, "give --known-hosts FILE to keep them")) << without.err;
  auto same = rpi::test::run({"cmp", (dir / "a.img").string(), (dir / "b.img").string()});
  EXPECT_EQ(same.exit_code, 0) << "--seed-file: the same keys, the same image: " << same.out;
  EXPECT_EQ(files_ending(dir.path(), ".known_hosts"), "");
  EXPECT_EQ(left_in(tmp), "");
}

// A failed build writes nothing to stdout: a tarball that is not one, and a spec error.
TEST(OutputStdout, FailedBuildWritesNothing) {
  TempDir dir;
  const fs::path tmp = made_dir(dir / "tmp"), bad = dir / "not.tar.gz", out = dir / "out.img";
  rpi::test::write_file(bad, "this is not a tarball\n");
  auto r = rpi::test::sh("TMPDIR=" + shell_quoted(tmp) + " " + shell_quoted(rpi::test::cli_path()) + " --spec " +
                         shell_quoted(spec_in(dir)) + " --tarball " + shell_quoted(bad) + " --output - >" +
                         shell_quoted(out));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(fs::file_size(out), 0u) << r.err;
  EXPECT_FALSE(r.err.empty());
  EXPECT_EQ(left_in(tmp), "");

  const fs::path broken = dir / "broken.toml";
  rpi::test::write_file(broken, "[system]\nhostname = \"not a host name!\"\n");
  auto s = rpi::test::cli({"--spec", broken.string(), "--tarball", rpi::test::tarball().string(), "--output", "-"});
  EXPECT_EQ(s.exit_code, 2) << s.err;
  EXPECT_EQ(s.out, "");
  EXPECT_FALSE(s.err.empty());
}

// --output - --bmap F: F is the captured image's block map, as bmaptool
// checks it (its range checksums against the image); mode 0600 like the
// image; the summary names it and no other .bmap is left.
TEST(OutputStdout, BmapFileIsTheCapturedImagesBlockMap) {
  TempDir dir;
  const fs::path tmp = made_dir(dir / "tmp"), img = dir / "piped.img", bmap = made_dir(dir / "maps") / "k.bmap";
  auto r = rpi::test::sh(command(dir, tmp, "--output - --bmap " + shell_quoted(bmap) + " >" + shell_quoted(img)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(fs::exists(bmap)) << r.err;
  EXPECT_EQ(mode_of(bmap), 0600u);
  EXPECT_TRUE(contains(r.err, "every byte written to standard output; its block map (")) << r.err;
  EXPECT_TRUE(contains(r.err, " in " + bmap.string())) << r.err;
  EXPECT_FALSE(contains(r.err, "no .bmap")) << r.err;
  EXPECT_EQ(files_ending(dir.path(), ".bmap"), bmap.string() + "\n");
  EXPECT_EQ(left_in(tmp), "");
  // The same inputs with --output FILE.img: the same map (the oracle for its ranges).
  auto f = rpi::test::sh(command(dir, tmp, "-q --output " + shell_quoted(dir / "file.img")));
  ASSERT_EQ(f.exit_code, 0) << f.err;
  EXPECT_EQ(rpi::test::read_file(bmap), rpi::test::read_file(dir / "file.img.bmap"));
  if (!rpi::test::have_tool("bmaptool")) GTEST_SKIP() << "bmaptool is not installed (the map matched --output's)";
  const fs::path out = dir / "copied.img";
  auto b = rpi::test::run({"bmaptool", "copy", "--bmap", bmap.string(), img.string(), out.string()});
  EXPECT_EQ(b.exit_code, 0) << b.out << b.err;
  EXPECT_EQ(rpi::test::run({"cmp", img.string(), out.string()}).exit_code, 0);
  // Another image's map fails bmaptool's check: it is an oracle that can fail.
  const fs::path other = dir / "other.img";
  rpi::test::write_file(other, std::string(fs::file_size(img), '\0'));
  auto bad = rpi::test::run({"bmaptool", "copy", "--bmap", bmap.string(), other.string(), (dir / "o2.img").string()});
  EXPECT_NE(bad.exit_code, 0) << bad.out << bad.err;
}

// --output - --bmap F when the image does not get out whole (a failed build,
// a reader that goes away): no F, nor a temporary of it.
TEST(OutputStdout, NoBmapFileWithoutTheWholeImage) {
  TempDir dir;
  const fs::path tmp = made_dir(dir / "tmp"), bad = dir / "not.tar.gz", bmap = made_dir(dir / "maps") / "k.bmap";
  rpi::test::write_file(bad, "this is not a tarball\n");
  auto r = rpi::test::sh("TMPDIR=" + shell_quoted(tmp) + " " + shell_quoted(rpi::test::cli_path()) + " --spec " +
                         shell_quoted(spec_in(dir)) + " --tarball " + shell_quoted(bad) + " --output - --bmap " +
                         shell_quoted(bmap) + " >/dev/null");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  auto s = rpi::test::sh(
      "{ " + command(dir, tmp, "--output - --bmap " + shell_quoted(bmap) + " 2>" + shell_quoted(dir / "err")) +
      "; } | head -c 4096 >/dev/null");
  const std::string err = rpi::test::read_file(dir / "err");
  EXPECT_TRUE(contains(err, "standard output was closed after")) << err;
  EXPECT_EQ(left_in(dir / "maps"), "");
  EXPECT_EQ(left_in(tmp), "");
}

// --output FILE.img --bmap F: F written (bmaptool takes it with the image),
// no FILE.img.bmap; refusals of names another output or input has, a folder,
// and --bmap with cards only; --dry-run names F and writes nothing.
TEST(OutputFileBmap, TheBmapGoesToTheFileGiven) {
  TempDir dir;
  const fs::path tmp = made_dir(dir / "tmp"), img = dir / "x.img", bmap = made_dir(dir / "maps") / "x.bmap";
  auto plan =
      rpi::test::sh(command(dir, tmp, "--dry-run --output " + shell_quoted(img) + " --bmap " + shell_quoted(bmap)));
  EXPECT_EQ(plan.exit_code, 0) << plan.out << plan.err;
  EXPECT_TRUE(contains(plan.out, "block map: " + bmap.string() + " (--bmap; no " + img.string() + ".bmap)"))
      << plan.out;
  EXPECT_FALSE(fs::exists(bmap));
  EXPECT_FALSE(fs::exists(img));
  auto r = rpi::test::sh(command(dir, tmp, "--output " + shell_quoted(img) + " --bmap " + shell_quoted(bmap)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(bmap));
  EXPECT_FALSE(fs::exists(img.string() + ".bmap"));
  EXPECT_EQ(mode_of(bmap), 0600u);
  EXPECT_EQ(mode_of(img), 0600u);
  EXPECT_TRUE(contains(r.out, "bmaptool copy --bmap " + bmap.string() + " ")) << r.out;
  EXPECT_EQ(files_ending(dir.path(), ".bmap"), bmap.string() + "\n");
  using Case = std::pair<std::string, std::string>;
  for (const auto& [more, says] :
       {Case{"--output " + shell_quoted(img) + " --bmap " + shell_quoted(img),
             "--bmap " + img.string() + " is also written as"},
        Case{"--output " + shell_quoted(img) + " --bmap " + shell_quoted(dir / "pi.toml"),
             "is the file given as --spec"},
        Case{"--output " + shell_quoted(img) + " --bmap " + shell_quoted(dir / "maps"), "is a folder"},
        Case{"--output " + shell_quoted(img) + " --bmap " + shell_quoted(dir / "none" / "x.bmap"), "does not exist"},
        Case{"--device " + shell_quoted(img) + " --bmap " + shell_quoted(bmap),
             "--bmap names the block map of an --output image"}}) {
    auto bad = rpi::test::sh(command(dir, tmp, more));
    EXPECT_EQ(bad.exit_code, 2) << more << ": " << bad.err;
    EXPECT_TRUE(contains(bad.err, says)) << more << ": " << bad.err;
  }
  EXPECT_EQ(left_in(tmp), "");
  if (!rpi::test::have_tool("bmaptool")) GTEST_SKIP() << "bmaptool is not installed";
  const fs::path out = dir / "copied.img";
  auto b = rpi::test::run({"bmaptool", "copy", "--bmap", bmap.string(), img.string(), out.string()});
  EXPECT_EQ(b.exit_code, 0) << b.out << b.err;
  EXPECT_EQ(rpi::test::run({"cmp", img.string(), out.string()}).exit_code, 0);
}
