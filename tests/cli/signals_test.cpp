// What a run does when its environment goes away: a signal (Ctrl-C, a closed
// terminal, a reader of stdout that quit), a stdout that cannot be written, or
// standard file descriptors that were closed before it started. Oracles: the
// files left in the folder, the exit status, cmp against a normal build.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <thread>

#include "pipeline.hpp"
#include "rpi/atomic_file.hpp"
#include "rpi/fd.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using rpi::Fd;
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

std::string quoted(const fs::path& p) {
  return "'" + p.string() + "'";
}

// Everything in `dir` but the files named in `keep`, one per line.
std::string others_in(const fs::path& dir, const std::set<std::string>& keep) {
  std::string out;
  for (const auto& e : fs::directory_iterator(dir))
    if (!keep.count(e.path().filename().string())) out += e.path().filename().string() + "\n";
  return out;
}

// Runs `body` in a child process; returns its wait status.
template <typename F>
int in_child(F&& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    body();
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

}  // namespace

// A signal while an output is half-written removes its temporary, then ends
// the process by that signal. SIGPIPE is the one a `--json | head` run gets.
TEST(Signals, EachEndingSignalRemovesTheHalfWrittenOutput) {
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) {
    TempDir dir;
    int status = in_child([&] {
      rpi::remove_temporaries_on_signals();
      rpi::AtomicFile out(dir / "card.img", 0600);
      if (sig == SIGPIPE) {
        int p[2];
        if (::pipe(p) != 0) ::_exit(90);
        ::close(p[0]);
        (void)!::write(p[1], "x", 1);  // the reader is gone: SIGPIPE
      } else {
        ::raise(sig);
      }
      ::_exit(91);  // not reached
    });
    ASSERT_TRUE(WIFSIGNALED(status)) << strsignal(sig) << ": status " << status;
    EXPECT_EQ(WTERMSIG(status), sig);
    EXPECT_EQ(others_in(dir.path(), {}), "") << strsignal(sig) << " left a temporary behind";
  }
}

// Card writes stop cooperatively (the card is invalidated, the scratch images
// removed): the process must survive the signal and remember which it was.
TEST(Signals, CardWritesAreCancelledByHangupAndBrokenPipeToo) {
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) {
    int status = in_child([&] {
      const std::atomic<bool>* cancel = rpi::cli::install_cancel_handler();
      ::raise(sig);
      ::_exit(cancel->load() && rpi::cli::cancel_signal() == sig ? 0 : 1);
    });
    ASSERT_TRUE(WIFEXITED(status)) << strsignal(sig) << " killed the card writer instead of cancelling it";
    EXPECT_EQ(WEXITSTATUS(status), 0) << strsignal(sig);
  }
}

// stdout on a full disk: the image is complete, but its summary was lost. The
// run says so on stderr and fails, in text and in --json mode.
TEST(Signals, UnwritableStdoutFailsTheRun) {
  TempDir dir;
  const fs::path img = dir / "pi.img";
  const std::string base = quoted(rpi::test::cli_path()) + " --spec " + quoted(spec_in(dir)) + " --tarball " +
                           quoted(tarball()) + " --output " + quoted(img);
  for (std::string mode : {"", " --json"}) {
    auto r = rpi::test::sh(base + mode + " > /dev/full");
    EXPECT_EQ(r.exit_code, 1) << mode << r.err;
    EXPECT_NE(r.err.find("cannot write to standard output: No space left on device"), std::string::npos) << r.err;
  }
  // A run that fails anyway keeps its exit code, and with --json its error
  // (whose event was lost with stdout) still reaches stderr.
  auto r = rpi::test::sh(quoted(rpi::test::cli_path()) + " --json check --spec " + quoted(dir / "nope.toml") +
                         " > /dev/full");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("nope.toml"), std::string::npos) << r.err;
}

// Started with stdout and stderr closed, the image file must not become fd 1
// or 2 (the progress text would land in it): the image is the same bytes as a
// normal build's, and the lost output makes the run fail.
TEST(Signals, ClosedStandardDescriptorsNeverReceiveTheOutputFiles) {
  TempDir dir;
  const std::string base = quoted(rpi::test::cli_path()) + " --spec " + quoted(spec_in(dir)) + " --tarball " +
                           quoted(tarball()) + " --output ";
  auto normal = rpi::test::sh(base + quoted(dir / "a.img") + " > /dev/null 2>&1");
  ASSERT_EQ(normal.exit_code, 0);
  auto closed = rpi::test::sh(base + quoted(dir / "b.img") + " >&- 2>&-");
  EXPECT_EQ(closed.exit_code, 1);
  auto same = rpi::test::run({"cmp", (dir / "a.img").string(), (dir / "b.img").string()});
  EXPECT_EQ(same.exit_code, 0) << same.out << same.err;
  EXPECT_EQ(others_in(dir.path(), {"pi.toml", "a.img", "a.img.bmap", "b.img", "b.img.bmap"}), "");
}

// A FIFO given as an input used to block the run in open() for ever (waiting
// for a writer); /dev/zero as the seed was read until memory ran out. Each is
// now refused at once, naming the option.
TEST(HostileFiles, FifosAndEndlessFilesAreRefusedWithoutWaiting) {
  TempDir dir;
  const fs::path fifo = dir / "in.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string tool = "timeout 10 " + quoted(rpi::test::cli_path());
  const std::string spec = quoted(spec_in(dir));
  const std::string out = " --output " + quoted(dir / "x.img");
  struct Case {
    std::string args, says;
    int code;
  } cases[] = {
      {" --spec " + spec + " --tarball " + quoted(fifo) + out, "is not a regular file", 1},
      {" inspect " + quoted(fifo), "not a regular file or block device", 1},
      {" --apkovl " + quoted(fifo) + " --tarball " + quoted(tarball()) + out, "is not a regular file", 1},
      {" --spec " + spec + " --tarball " + quoted(tarball()) + out + " --seed-file " + quoted(fifo),
       "--seed-file " + fifo.string() + " is not a regular file", 2},
      {" --spec " + spec + " --tarball " + quoted(tarball()) + out + " --seed-file /dev/zero",
       "--seed-file /dev/zero is not a regular file", 2},
      {" apkovl --spec " + spec + " -o " + quoted(dir / "x.apkovl.tar.gz") + " --seed-file /dev/zero",
       "--seed-file /dev/zero is not a regular file", 2},
  };
  for (const auto& c : cases) {
    auto r = rpi::test::sh(tool + c.args);
    EXPECT_EQ(r.exit_code, c.code) << c.args << "\n" << r.err;  // 124: timeout killed a hung run
    EXPECT_NE(r.err.find(c.says), std::string::npos) << c.args << "\n" << r.err;
  }
  EXPECT_EQ(others_in(dir.path(), {"pi.toml", "in.fifo"}), "");
}

// An output name near NAME_MAX (255 bytes) whose image and .bmap both fit was
// refused ("File name too long") because of the temporary's longer name.
TEST(HostileFiles, LongOutputNamesThatFitAreAccepted) {
  TempDir dir;
  const std::string name = std::string(241, 'n') + ".img";  // + ".bmap" = 250 bytes
  auto r = rpi::test::cli(
      {"-q", "--spec", spec_in(dir).string(), "--tarball", tarball().string(), "--output", (dir / name).string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(others_in(dir.path(), {"pi.toml", name, name + ".bmap"}), "");
}

// Two runs writing one --output at once left one's image beside the other's
// .bmap. The renames wait for an exclusive lock of the output folder: held
// here, the run gets as far as its finished temporaries and no further.
TEST(HostileFiles, ConcurrentRunsRenameTheirOutputsUnderAFolderLock) {
  TempDir dir;
  const fs::path spec = spec_in(dir), img = dir / "x.img";
  Fd folder(::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(folder);
  ASSERT_EQ(::flock(folder.get(), LOCK_EX), 0);
  const std::string tool = rpi::test::cli_path().string(), tar = tarball().string();
  pid_t pid = ::fork();
  if (pid == 0) {
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::execl(tool.c_str(), tool.c_str(), "-q", "--spec", spec.c_str(), "--tarball", tar.c_str(), "--output", img.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Both temporaries exist once the run is about to rename them.
  auto at_the_renames = [&] {
    int temps = 0;
    for (const auto& e : fs::directory_iterator(dir.path()))
      if (e.path().filename().string().find(".tmp-") != std::string::npos) ++temps;
    return temps >= 2;
  };
  for (int i = 0; i < 600 && !at_the_renames(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(at_the_renames()) << "the run never got to its renames";
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_FALSE(fs::exists(img)) << "the image was renamed while another run held the folder";
  folder.reset();  // releases the lock
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(fs::exists(img));
  EXPECT_EQ(others_in(dir.path(), {"pi.toml", "x.img", "x.img.bmap"}), "");
}

// The "write it with: bmaptool copy IMAGE /dev/sdX" hint is meant to be
// pasted: an image name with a space or a quote is one shell word in it.
TEST(HostileFiles, TheWriteItWithHintQuotesTheImageName) {
  TempDir dir;
  const fs::path img = dir / "it's my card.img";
  auto r = rpi::test::cli({"--spec", spec_in(dir).string(), "--tarball", tarball().string(), "--output", img.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string quoted_img = "'" + dir.path().string() + "/it'\\''s my card.img'";
  EXPECT_NE(r.out.find("bmaptool copy " + quoted_img + " /dev/sdX"), std::string::npos) << r.out;
  auto sh = rpi::test::sh("set -- " + quoted_img + "; test $# -eq 1 && test -f \"$1\"");
  EXPECT_EQ(sh.exit_code, 0) << "not one word naming the image: " << quoted_img;
}

// Names are shown, never obeyed: a path holding an escape sequence, a bell or
// a right-to-left override reaches stderr escaped, and stdout too, on a
// terminal (run under script(1)'s pty) and through a pipe or into a log alike;
// a script reads exact values from --json.
TEST(HostileFiles, ControlCharactersInNamesNeverReachTheTerminalRaw) {
  TempDir dir;
  const std::string evil = "a\x1b]0;owned\x07\xe2\x80\xae";
  auto r = rpi::test::cli({"--spec", (dir / (evil + ".toml")).string(), "--output", (dir / "x.img").string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("a\\x1b]0;owned\\x07\\u202e.toml"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find_first_of("\x1b\x07"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("\xe2\x80\xae"), std::string::npos) << r.err;

  const fs::path img = dir / (evil + ".img");
  const std::string args = "--spec " + quoted(spec_in(dir)) + " --tarball " + quoted(tarball()) + " --output ";
  auto p = rpi::test::sh("IMG=" + quoted(img) + "; " + quoted(rpi::test::cli_path()) + " " + args + "\"$IMG\"");
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_NE(p.out.find("a\\x1b]0;owned\\x07\\u202e.img"), std::string::npos) << "escaped on a pipe too: " << p.out;
  EXPECT_EQ(p.out.find_first_of("\x1b\x07"), std::string::npos) << p.out;
  EXPECT_EQ(p.out.find("\xe2\x80\xae"), std::string::npos) << p.out;
  auto j = rpi::test::sh("IMG=" + quoted(img) + "; " + quoted(rpi::test::cli_path()) + " --json " + args + "\"$IMG\"");
  ASSERT_EQ(j.exit_code, 0) << j.err;
  EXPECT_NE(j.out.find("a\\u001b]0;owned\\u0007\xe2\x80\xae.img"), std::string::npos)
      << "--json: exact, as JSON: " << j.out;
  ASSERT_TRUE(fs::exists(img));
  fs::remove(img);
  fs::remove(img.string() + ".bmap");
  if (!rpi::test::have_tool("script")) GTEST_SKIP() << "script(1) (bsdutils) is needed for a terminal";
  rpi::test::write_file(dir / "run.sh", quoted(rpi::test::cli_path()) + " " + args + "\"$IMG\"\n");
  auto t = rpi::test::sh("IMG=" + quoted(img) + " script -qec 'sh " + (dir / "run.sh").string() + "' /dev/null");
  ASSERT_EQ(t.exit_code, 0) << t.out << t.err;
  EXPECT_NE(t.out.find("a\\x1b]0;owned\\x07\\u202e.img"), std::string::npos) << t.out;
  EXPECT_EQ(t.out.find_first_of("\x07"), std::string::npos) << t.out;
  EXPECT_EQ(t.out.find("\xe2\x80\xae"), std::string::npos) << t.out;
}
