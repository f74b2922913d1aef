// Small pieces every command relies on: reading sizes as a user types them and
// writing JSON that any parser accepts, whatever bytes a path or message holds.
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "json.hpp"
#include "rpi/atomic_file.hpp"
#include "rpi/error.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"
#include "test_support.hpp"

TEST(Size, BinaryAndDecimalUnitsAsCoreutilsReadThem) {
  EXPECT_EQ(rpi::parse_size("4096", "--size"), 4096u);
  EXPECT_EQ(rpi::parse_size("512MiB", "--size"), 512ull << 20);
  EXPECT_EQ(rpi::parse_size("1G", "--size"), 1ull << 30);
  EXPECT_EQ(rpi::parse_size("1 GiB", "--size"), 1ull << 30);
  // A card sold as "8 GB" holds 8 000 000 000 bytes or a little more, never 8 GiB.
  EXPECT_EQ(rpi::parse_size("8GB", "--size"), 8000000000ull);
  EXPECT_EQ(rpi::parse_size("64mb", "--size"), 64000000ull);
  EXPECT_EQ(rpi::parse_size("2TB", "--size"), 2000000000000ull);
  for (const char* bad : {"", "abc", "1.5GiB", "-5MiB", "12XB", "99999999999999999999", "20000000TiB"}) {
    try {
      rpi::parse_size(bad, "--size");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const rpi::Error& e) {
      EXPECT_NE(std::string(e.what()).find("--size: '"), std::string::npos) << e.what();
    }
  }
}

// What reaches a terminal: names from cards, images and mirrors may hold escape
// sequences (a USB stick's model string, a file name in an image).
TEST(Printable, EscapesWhatCouldDriveATerminalAndKeepsTheRest) {
  using rpi::printable;
  EXPECT_EQ(printable("Zürich ✓ 𝄞 plain/path.img"), "Zürich ✓ 𝄞 plain/path.img");
  EXPECT_EQ(printable("a\x1b]0;title\x07"
                      "b"),
            "a\\x1b]0;title\\x07b");
  EXPECT_EQ(printable("cr\rdel\x7f"), "cr\\x0ddel\\x7f");
  // C1 CSI, a right-to-left override and an isolate, as UTF-8.
  EXPECT_EQ(printable("\xc2\x9b"
                      "31m"),
            "\\u009b31m");
  EXPECT_EQ(printable("gpj.\xe2\x80\xae"
                      "exe"),
            "gpj.\\u202eexe");
  EXPECT_EQ(printable("\xe2\x81\xa6x"), "\\u2066x");
  // Not UTF-8: each stray byte shown, the valid text around it kept.
  EXPECT_EQ(printable("bad\xff\x9b.img"), "bad\\xff\\x9b.img");
  EXPECT_EQ(printable("cut \xc3"), "cut \\xc3");
  // Line breaks: escaped in a single field, kept in a message.
  EXPECT_EQ(printable("two\nlines\tx"), "two\\x0alines\\x09x");
  EXPECT_EQ(printable("two\nlines\tx", true), "two\nlines\tx");
  EXPECT_EQ(printable("", true), "");
}

// The caret under a spec error stands where a terminal shows the place.
TEST(Text, TerminalColumnsCountWideCharactersTwice) {
  EXPECT_EQ(rpi::terminal_columns(""), 0u);
  EXPECT_EQ(rpi::terminal_columns("label = 1"), 9u);
  EXPECT_EQ(rpi::terminal_columns("gr\u00fcn"), 4u) << "a Latin letter with two bytes is one column";
  EXPECT_EQ(rpi::terminal_columns("\u65e5\u672c"), 4u) << "CJK: two each";
  EXPECT_EQ(rpi::terminal_columns("\uff21"), 2u) << "fullwidth A";
  EXPECT_EQ(rpi::terminal_columns("\U0001f600"), 2u) << "emoji";
  EXPECT_EQ(rpi::terminal_columns("\u20ac"), 1u) << "the euro sign is narrow";
  EXPECT_EQ(rpi::terminal_columns("gru\u0308n"), 4u) << "u + a combining diaeresis is one column";
  EXPECT_EQ(rpi::terminal_columns("a\u200bb"), 2u) << "a zero-width space takes none";
  EXPECT_EQ(rpi::terminal_columns("\u845b\U000e0100"), 2u) << "an ideographic variation selector takes none";
  EXPECT_EQ(rpi::terminal_columns("a\xff"
                                  "b"),
            3u)
      << "a byte that is not UTF-8 counts one";
}

// "Did you mean": a swap of two neighbours is one edit, as a typist makes it.
TEST(Text, EditDistanceCountsASwapAsOneEdit) {
  EXPECT_EQ(rpi::edit_distance("--outptu", "--output"), 1u);
  EXPECT_EQ(rpi::edit_distance("hsotname", "hostname"), 1u);
  EXPECT_EQ(rpi::edit_distance("ab", "ba"), 1u);
  EXPECT_EQ(rpi::edit_distance("abc", "ca"), 3u);  // no swap of letters that are not neighbours
  EXPECT_EQ(rpi::edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(rpi::edit_distance("", "abc"), 3u);
  EXPECT_EQ(rpi::edit_distance("same", "same"), 0u);
  EXPECT_EQ(rpi::ascii_lower("Cmdline.TXT"), "cmdline.txt");
  EXPECT_EQ(rpi::ascii_lower("\xc3\x84"), "\xc3\x84") << "bytes beyond ASCII stay";
}

TEST(Json, EscapesControlsAndKeepsOnlyValidUtf8) {
  using rpi::cli::json_escape;
  EXPECT_EQ(json_escape("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\u0001\"");
  EXPECT_EQ(json_escape("Zürich ✓ 𝄞"), "\"Zürich ✓ 𝄞\"");
  // A stray byte of a non-UTF-8 file name, a cut sequence, an overlong form and
  // a surrogate each become U+FFFD instead of making the line unparsable.
  EXPECT_EQ(json_escape("bad\xff.img"), "\"bad\\ufffd.img\"");
  EXPECT_EQ(json_escape("label '\xc3'"), "\"label '\\ufffd'\"");
  EXPECT_EQ(json_escape("\xc0\xaf"), "\"\\ufffd\\ufffd\"");
  EXPECT_EQ(json_escape("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");
}

namespace {
// Runs `f` with the process umask set to `mask`, then restores it.
template <class F>
void with_umask(mode_t mask, F f) {
  const mode_t old = ::umask(mask);
  try {
    f();
  } catch (...) {
    ::umask(old);
    throw;
  }
  ::umask(old);
}
mode_t mode_of(const std::filesystem::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}
}  // namespace

// `mkdir -p -m 0755`: a umask of 0 must not make folders anyone can write to
// (served apkovls, the download cache); a stricter umask still applies.
TEST(Files, CreatedFoldersAreNeverWritableByOthers) {
  rpi::test::TempDir dir;
  with_umask(0, [&] { rpi::create_directories(dir / "a/b/c", "--out-dir"); });
  for (const char* p : {"a", "a/b", "a/b/c"}) EXPECT_EQ(mode_of(dir / p), 0755u) << p;
  with_umask(077, [&] { rpi::create_directories(dir / "a/b/d/e", "--out-dir"); });
  EXPECT_EQ(mode_of(dir / "a/b/d/e"), 0700u);
  EXPECT_EQ(mode_of(dir / "a/b"), 0755u);  // existing folders are left alone
  rpi::test::write_file(dir / "f", "x");
  try {
    rpi::create_directories(dir / "f", "--out-dir");
    ADD_FAILURE() << "a file taken for a folder";
  } catch (const rpi::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--out-dir"), std::string::npos) << e.what();
  }
}

// A rebuilt served file keeps the group and mode the user gave the old one;
// a new file gets the mode asked for, and so does a replaced file by default.
TEST(Files, ReplacedFileKeepsItsGroupAndModeWhenAsked) {
  rpi::test::TempDir dir;
  const auto f = dir / "aa-bb.apkovl.tar.gz";
  rpi::write_file_atomic(f, "one", 0600, rpi::Permissions::keep_existing);
  EXPECT_EQ(mode_of(f), 0600u);
  // A group other than our own that we may give a file: as root any, else a
  // supplementary one of ours.
  gid_t other = ::getegid();
  if (::geteuid() == 0) {
    other = other == 1 ? 2 : 1;
  } else {
    std::vector<gid_t> groups(static_cast<std::size_t>(std::max(::getgroups(0, nullptr), 0)));
    groups.resize(static_cast<std::size_t>(std::max(::getgroups(static_cast<int>(groups.size()), groups.data()), 0)));
    for (gid_t g : groups)
      if (g != other) other = g;
    if (other == ::getegid()) GTEST_SKIP() << "needs root or a supplementary group to give the file another group";
  }
  ASSERT_EQ(::chown(f.c_str(), static_cast<uid_t>(-1), other), 0);
  ASSERT_EQ(::chmod(f.c_str(), 0640), 0);
  rpi::write_file_atomic(f, "two", 0600, rpi::Permissions::keep_existing);
  EXPECT_EQ(rpi::test::read_file(f), "two");
  EXPECT_EQ(mode_of(f), 0640u);
  struct stat st {};
  ASSERT_EQ(::stat(f.c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, other);
  // Never what others had: a file anyone could read or write is rebuilt private.
  ASSERT_EQ(::chmod(f.c_str(), 0666), 0);
  rpi::write_file_atomic(f, "three", 0600, rpi::Permissions::keep_existing);
  EXPECT_EQ(mode_of(f), 0660u);
  rpi::write_file_atomic(f, "four", 0600);
  EXPECT_EQ(mode_of(f), 0600u);
}

// Where the old group cannot be set (not root, not a member), its bits would
// apply to another group: the file gets the mode asked for.
TEST(Files, ReplacedFileWhoseGroupCannotBeKeptGetsTheGivenMode) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to make a file of a group the writer is not in";
  // In /tmp, not under the build folder: nobody must reach it (a CI clone
  // lives in a 0700 folder).
  char made[] = "/tmp/rpi-perms-XXXXXX";
  ASSERT_NE(::mkdtemp(made), nullptr);
  struct Remove {
    std::filesystem::path p;
    ~Remove() {
      std::error_code ec;
      std::filesystem::remove_all(p, ec);
    }
  } dir{made};
  ASSERT_EQ(::chmod(made, 0777), 0);
  const auto f = dir.p / "aa-bb.apkovl.tar.gz";
  rpi::test::write_file(f, "one");
  ASSERT_EQ(::chown(f.c_str(), 0, 1), 0);
  ASSERT_EQ(::chmod(f.c_str(), 0640), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // as nobody, in no group but nogroup
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
    if (::access(made, W_OK | X_OK) != 0) ::_exit(5);
    try {
      rpi::write_file_atomic(f, "two", 0600, rpi::Permissions::keep_existing);
    } catch (...) {
      ::_exit(4);
    }
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 5) GTEST_SKIP() << "user nobody cannot write to " << made;
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "exit status " << status;
  EXPECT_EQ(rpi::test::read_file(f), "two");
  EXPECT_EQ(mode_of(f), 0600u);
  struct stat st {};
  ASSERT_EQ(::stat(f.c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, 65534u);
}
