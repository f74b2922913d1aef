// What the tool prints, wherever it goes (a terminal, a file, a pipe): control
// characters from names and specs shown escaped, never raw, and never cutting
// a line or the output short; `apkovl -o -` on standard output; `cache list`
// and `cache prune` on a file, a missing folder and damaged entries; the
// leftover-temporary warning under -q; `--spec -` refused clearly.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cli_support.hpp"
#include "overlay/spec.hpp"
#include "reporter.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using rpi::test::capture_stdout;
using rpi::test::cli;
using rpi::test::contains;
using rpi::test::example;
using rpi::test::TempDir;

namespace {

// No C0 control character but newline and tab, no DEL, no NUL.
bool no_raw_controls(const std::string& s) {
  for (unsigned char c : s)
    if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) return false;
  return true;
}

const std::string kNul("\0", 1);

}  // namespace

// Notes, warnings and errors: a NUL does not end them, a NUL or an ESC is
// shown escaped; their line breaks stay (a message may list the cards, one a
// line).
TEST(OutputSafety, MessagesKeepTheirLinesWithControlsEscaped) {
  TempDir tmp;
  const std::string message = "bad name a" + kNul + "b\x1b[2J\nc é";
  const std::string err = rpi::test::capture_stderr(tmp / "err.txt", [&] {
    rpi::cli::Reporter r;
    r.configure(false, false);
    r.note(message);
    r.warn(message);
    r.error(rpi::Errc::io, message);
  });
  EXPECT_TRUE(no_raw_controls(err)) << err;
  const std::string shown = "bad name a\\x00b\\x1b[2J\nc é";
  EXPECT_TRUE(contains(err, shown + "\nwarning: " + shown + "\nrpi-provision: error: " + shown + "\n")) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 6) << err;
}

// The question that cannot be asked (no terminal) lists the cards, one a line.
TEST(OutputSafety, TheRefusedQuestionListsEachCardOnItsLine) {
  TempDir d;
  const fs::path img = d / "pi.img", tmp = d / "tmp";
  fs::create_directories(tmp);
  auto b = cli({"--spec", example("kiosk.toml").string(), "--tarball", rpi::test::tarball().string(), "--size", "64MiB",
                "--output", img.string()});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  for (const char* c : {"c1.bin", "c2.bin"}) rpi::test::write_file(d / c, std::string(64 << 20, '\0'));
  auto r = rpi::test::sh(rpi::test::tool_in(tmp) + " --image " + rpi::test::shell_quoted(img) + " --device " +
                         rpi::test::shell_quoted(d / "c1.bin") + " --device " + rpi::test::shell_quoted(d / "c2.bin") +
                         " < /dev/null");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "rpi-provision: error: about to overwrite 2 cards:\n  " + (d / "c1.bin").string()))
      << r.err;
  EXPECT_TRUE(contains(r.err, "\n  " + (d / "c2.bin").string() + "  ")) << r.err;
  EXPECT_TRUE(contains(r.err, "\nno terminal to confirm on: pass --yes")) << r.err;
}

// Results on a file or pipe (not a terminal): control characters escaped, the
// text's own line breaks kept, nothing cut at a NUL; --json escapes as JSON.
TEST(OutputSafety, ResultsOnAPipeAreEscapedNotCut) {
  TempDir tmp;
  const std::string out = capture_stdout(tmp / "out.txt", [&] {
    rpi::cli::Reporter r;
    r.configure(false, false);
    r.result("x", "line " + kNul + " one \x1b[2J\nline two", {});
  });
  EXPECT_EQ(out, "line \\x00 one \\x1b[2J\nline two\n");
  const std::string json = capture_stdout(tmp / "json.txt", [&] {
    rpi::cli::Reporter r;
    r.configure(true, false);
    rpi::cli::JsonObject o;
    o.add("v", "a" + kNul + "b\x1b");
    r.result("x", "", o);
  });
  EXPECT_TRUE(contains(json, "\"v\":\"a\\u0000b\\u001b\"")) << json;
}

// The redacted summary: a value with a line break, a NUL or an ESC stays on
// its line, escaped, and the lines after it are all there.
TEST(OutputSafety, SummaryEscapesSpecValues) {
  rpi::overlay::HostConfig h;
  h.hostname = "pi";
  rpi::overlay::WifiNetwork n;
  n.ssid = "x" + kNul + "y\x1b[2J\nz";
  n.entry = "[wifi]";
  h.wifi.networks.push_back(n);
  const std::string s = rpi::overlay::summary(h);
  EXPECT_TRUE(contains(s, "  wifi      ssid \"x\\x00y\\x1b[2J\\x0az\" psk (secret)")) << s;
  EXPECT_TRUE(no_raw_controls(s)) << s;
  EXPECT_TRUE(contains(s, "\n  install   ")) << s;
}

// `check` on a pipe: the spec's name (and a spec's values, while the loader
// takes them) escaped; the summary not cut short.
TEST(OutputSafety, CheckOnAPipeShowsNoRawControls) {
  TempDir tmp;
  const fs::path spec = tmp / "a\x1b[2J\nb.toml";
  rpi::test::write_file(spec, "[system]\nhostname = \"pi\"\n");
  auto r = cli({"check", "--spec", spec.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(no_raw_controls(r.out)) << r.out;
  EXPECT_TRUE(contains(r.out, "a\\x1b[2J\\x0ab.toml: OK (1 card")) << r.out;

  rpi::test::write_file(tmp / "w.toml",
                        "[system]\nhostname = \"pi\"\n[wifi]\nssid = \"x\\u0000y\\u001b[2J\\nz\"\n"
                        "psk = { env = \"RPI_TEST_UNSET_PSK\" }\ncountry = \"DE\"\n");
  r = cli({"check", "--spec", (tmp / "w.toml").string()});
  EXPECT_TRUE(no_raw_controls(r.out)) << r.out;
  EXPECT_TRUE(no_raw_controls(r.err)) << r.err;
  if (r.exit_code != 0) {
    // The loader refuses such an ssid (a control character): said on one line.
    EXPECT_EQ(r.exit_code, 2) << r.err;
    return;
  }
  EXPECT_TRUE(contains(r.out, "ssid \"x\\x00y\\x1b[2J\\x0az\"")) << r.out;
  EXPECT_TRUE(contains(r.out, "\n  install   ")) << r.out;
  EXPECT_TRUE(contains(r.out, "w.toml: OK")) << r.out;
}

// A name in an error (a file that does not exist): its ESC escaped.
TEST(OutputSafety, ErrorNamingAFileWithAnEscapeShowsItEscaped) {
  TempDir tmp;
  auto r = cli({"check", "--spec", (tmp / "no\x1b[2Jsuch.toml").string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "no\\x1b[2Jsuch.toml")) << r.err;
  EXPECT_TRUE(no_raw_controls(r.err)) << r.err;
}

// `apkovl -o -`: the archive on standard output, the same bytes as -o FILE
// (same --seed-file); the result on standard error; no file named "-".
TEST(OutputSafety, ApkovlToStandardOutput) {
  RPI_REQUIRE_TOOL("tar");
  TempDir tmp;
  const fs::path seed = tmp / "seed";
  rpi::test::write_file(seed, "0123456789abcdef0123456789abcdef-some-seed-bytes");
  ::chmod(seed.c_str(), 0600);
  const std::string base = "cd " + rpi::test::shell_quoted(tmp.path()) + " && " + rpi::test::tool_in(tmp.path()) +
                           " apkovl --spec " + rpi::test::shell_quoted(example("kiosk.toml")) + " --seed-file seed";
  auto piped = rpi::test::sh(base + " -o - 2>err.txt | tar -tzf -");
  EXPECT_EQ(piped.exit_code, 0) << piped.err << rpi::test::read_file(tmp / "err.txt");
  EXPECT_TRUE(contains(piped.out, "etc/hostname")) << piped.out;
  EXPECT_TRUE(contains(rpi::test::read_file(tmp / "err.txt"), "wrote standard output (")) << "the result: on stderr";
  EXPECT_FALSE(fs::exists(tmp / "-")) << "no file named -";

  auto r =
      rpi::test::sh(base + " -o - >stdout.tgz 2>/dev/null && " + rpi::test::tool_in(tmp.path()) + " apkovl --spec " +
                    rpi::test::shell_quoted(example("kiosk.toml")) + " --seed-file seed -o file.tgz 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(rpi::test::read_file(tmp / "stdout.tgz"), rpi::test::read_file(tmp / "file.tgz"));
  struct stat st {};
  ASSERT_EQ(::stat((tmp / "stdout.tgz").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "a redirected apkovl holds secrets: made private";

  // ./- is a file named -.
  r = rpi::test::sh(base + " -o ./- >/dev/null 2>&1");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(fs::exists(tmp / "-"));
}

TEST(OutputSafety, ApkovlStandardOutputRefusals) {
  TempDir tmp;
  const std::string spec = example("kiosk.toml").string();
  auto r = cli({"--json", "apkovl", "--spec", spec, "-o", "-"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.out, "use -o FILE.apkovl.tar.gz with --json")) << r.out;
  r = cli({"apkovl", "--spec", spec, "--out-dir", "-"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--out-dir - : ")) << r.err;
  r = rpi::test::sh("cd " + rpi::test::shell_quoted(tmp.path()) + " && " + rpi::test::tool_in(tmp.path()) +
                    " apkovl --spec " + rpi::test::shell_quoted(spec) + " -o - >out.bin 2>&1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(rpi::test::read_file(tmp / "out.bin"), "(2>&1?)"));
  EXPECT_FALSE(fs::exists(tmp / "-"));
}

// A regular file as --cache-dir is an error naming it; a folder that does not
// exist has no cache (exit 0), and neither command creates it.
TEST(OutputSafety, CacheDirThatIsAFileOrMissing) {
  TempDir tmp;
  rpi::test::write_file(tmp / "afile", "x");
  for (const char* cmd : {"list", "prune"}) {
    auto r = cli({"cache", cmd, "--cache-dir", (tmp / "afile").string()});
    EXPECT_EQ(r.exit_code, 2) << cmd;
    EXPECT_TRUE(contains(r.err, "--cache-dir " + (tmp / "afile").string() + " is not a folder")) << r.err;
    r = cli({"cache", cmd, "--cache-dir", (tmp / "none").string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(contains(r.err, "no cache exists at " + (tmp / "none").string())) << r.err;
    EXPECT_FALSE(contains(r.err, "holds no tarballs")) << r.err;
    EXPECT_FALSE(fs::exists(tmp / "none"));
  }
}

// An entry whose info file is garbage: listed as damaged (what is wrong, what
// to do), and removed by prune, which says so.
TEST(OutputSafety, CacheDamagedEntryListedAndPruned) {
  TempDir tmp;
  const std::string sha(64, 'a');
  const fs::path entry = tmp / "cache" / "tarballs" / sha;
  fs::create_directories(entry);
  rpi::test::write_file(entry / "info", "garbage\n");
  rpi::test::write_file(entry / "alpine-rpi-3.22.0-aarch64.tar.gz", std::string(1000, 'z'));
  const std::string dir = (tmp / "cache").string();
  auto r = cli({"cache", "list", "--cache-dir", dir});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "damaged  ")) << r.out;
  EXPECT_TRUE(contains(r.out, entry.string() + ": its info file is damaged")) << r.out;
  EXPECT_TRUE(contains(r.out, "`cache prune` removes it")) << r.out;
  r = cli({"--json", "cache", "list", "--cache-dir", dir});
  EXPECT_TRUE(contains(r.out, "{\"type\":\"cache-damaged\",\"path\":")) << r.out;
  r = cli({"cache", "prune", "--cache-dir", dir});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "removed damaged entry " + entry.string())) << r.out;
  EXPECT_TRUE(contains(r.out, "1 damaged entry")) << r.out;
  EXPECT_FALSE(fs::exists(entry));
}

// A temporary a killed run left "may hold secrets": a warning, shown with -q.
TEST(OutputSafety, LeftoverTemporaryIsAWarningEvenWhenQuiet) {
  TempDir tmp;
  const fs::path left = tmp / ".k.apkovl.tar.gz.tmp-Zz99Yy";
  rpi::test::write_file(left, "x");
  auto r = cli({"-q", "apkovl", "--spec", example("kiosk.toml").string(), "-o", (tmp / "k.apkovl.tar.gz").string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "warning: " + left.string())) << r.err;
  EXPECT_TRUE(contains(r.err, "it may hold secrets: remove it")) << r.err;
}

// `--spec -`: a clear refusal (a spec is a file), whichever command.
TEST(OutputSafety, SpecFromStandardInputIsRefusedClearly) {
  const std::vector<std::vector<std::string>> runs = {
      {"--spec", "-", "--output", "x.img"}, {"check", "--spec", "-"}, {"apkovl", "--spec", "-", "-o", "x"}};
  for (const auto& args : runs) {
    auto r = cli(args, "[system]\nhostname = \"pi\"\n");
    EXPECT_EQ(r.exit_code, 2) << args[0];
    EXPECT_TRUE(contains(r.err, "--spec -: a spec is read from a file, not from standard input")) << r.err;
    EXPECT_TRUE(contains(r.err, "save it to a file")) << r.err;
    EXPECT_FALSE(contains(r.err, "no such file")) << r.err;
  }
}
