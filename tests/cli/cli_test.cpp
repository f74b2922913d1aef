// The command line as a user meets it: help, usage errors, --dry-run, --json,
// the pipeline from a spec to images and to several cards, and station mode.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>

#include <chrono>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <thread>

#include "cli_support.hpp"
#include "rpi/fd.hpp"
#include "test_support.hpp"

using rpi::test::cli;
using rpi::test::contains;
using rpi::test::example;
using rpi::test::tarball;
using rpi::test::TempDir;
namespace fs = std::filesystem;

namespace {

// Every stdout line must be one JSON object; returns the "type"s in order.
std::vector<std::string> json_types(const std::string& out) {
  auto r = rpi::test::run({"python3", "-c",
                           "import json,sys\n"
                           "for line in sys.stdin:\n"
                           "    print(json.loads(line)['type'])\n"},
                          out);
  EXPECT_EQ(r.exit_code, 0) << "not JSON Lines:\n" << out.substr(0, 2000) << r.err;
  std::vector<std::string> types;
  std::string cur;
  for (char c : r.out) {
    if (c == '\n')
      types.push_back(cur), cur.clear();
    else
      cur.push_back(c);
  }
  return types;
}

}  // namespace

TEST(Cli, HelpNamesEverySubcommandAndVersionNamesLibraries) {
  auto h = cli({"--help"});
  EXPECT_EQ(h.exit_code, 0);
  for (const char* sub : {"check", "apkovl", "fetch", "cache", "devices", "watch", "inspect"})
    EXPECT_TRUE(contains(h.out, sub)) << sub;
  for (const char* opt : {"--spec", "--device", "--output", "--dry-run", "--json"})
    EXPECT_TRUE(contains(h.out, opt)) << opt;
  EXPECT_TRUE(contains(h.out, "Examples:")) << h.out;
  // The main command's examples are its own, not every subcommand's.
  for (std::vector<std::string> sub : {std::vector<std::string>{"fetch"}, {"watch"}, {"cache", "list"}}) {
    sub.push_back("--help");
    auto s = cli(sub);
    EXPECT_EQ(s.exit_code, 0) << s.err;
    EXPECT_FALSE(contains(s.out, "Examples:")) << s.out;
    EXPECT_TRUE(contains(s.out, "See man rpi-provision")) << s.out;
  }
  auto v = cli({"--version"});
  EXPECT_EQ(v.exit_code, 0);
  for (const char* lib : {"rpi-provision", "libarchive", "libcurl", "libfdisk"})
    EXPECT_TRUE(contains(v.out, lib)) << v.out;
}

TEST(Cli, UsageErrorsExitTwoWithAMessage) {
  TempDir d;
  struct Case {
    std::vector<std::string> args;
    const char* message;
  };
  std::vector<Case> cases = {
      {{"--no-such-option"}, "no-such-option"},
      {{"--spec", example("kiosk.toml").string()}, "--output FILE.img or --device"},
      {{"--spec", example("kiosk.toml").string(), "--apkovl", "x.apkovl.tar.gz", "--output", (d / "x.img").string()},
       "exclude each other"},
      {{"--spec", example("kiosk.toml").string(), "--output", (d / "x.img").string(), "--device", "/dev/null"},
       "exclude each other"},
      {{"--tarball", "https://example.org/alpine.tar.gz", "--spec", example("kiosk.toml").string(), "--output",
        (d / "x.img").string()},
       "--sha256"},
      {{"--spec", example("kiosk.toml").string(), "--tarball", tarball().string(), "--output", (d / "x.img").string(),
        "--size", "lots"},
       "not a size"},
      {{"--image", (d / "x.img").string()}, "--output"},
      {{"--spec", example("kiosk.toml").string(), "--tarball", tarball().string(), "--output", (d / "x.img").string(),
        "--jobs", "2"},
       "there is no --device"},
      {{"--spec", example("kiosk.toml").string(), "--device", (d / "x.img").string(), "--jobs", "0"},
       "--jobs: '0' is not a number of cards (1 to 999999)"},
      // An option of the main command given to a subcommand was taken and ignored.
      {{"check", "--spec", example("kiosk.toml").string(), "--output", (d / "x.img").string()},
       "--output is an option of the main command, not of `rpi-provision check`"},
      {{"watch", "--spec", example("fleet.toml").string(), "--host", "class-02", "--dry-run"},
       "--host is an option of the main command, not of `rpi-provision watch`"},
      {{"--jobs", "2", "fetch", "--offline"}, "--jobs is an option of the main command, not of `rpi-provision fetch`"},
      // Counts and card numbers start at 1 (a --count of 0 meant "no limit").
      {{"watch", "--spec", example("fleet.toml").string(), "--count", "0", "--dry-run"},
       "--count: '0' is not a number of cards (1 to 999999) (see rpi-provision watch --help)"},
      {{"watch", "--spec", example("fleet.toml").string(), "--count", "-3", "--dry-run"},
       "--count: '-3' is not a number of cards (1 to 999999)"},
      {{"check", "--spec", example("kiosk.toml").string(), "--first", "0"},
       "--first: '0' is not a card number (1 to 999999) (see rpi-provision check --help)"},
      {{"check", "--spec", example("kiosk.toml").string(), "--first", "1000000"},
       "--first: '1000000' is not a card number (1 to 999999)"},
      {{"--apkovl", (d / "a.apkovl.tar.gz").string(), "--output", (d / "x.img").string()},
       "--apkovl needs --tarball FILE|URL"},
  };
  ASSERT_EQ(
      cli({"apkovl", "--spec", example("headless.toml").string(), "-o", (d / "a.apkovl.tar.gz").string()}).exit_code,
      0);
  for (const auto& c : cases) {
    auto r = cli(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args.front() << ": " << r.err;
    EXPECT_TRUE(contains(r.err, c.message)) << r.err;
    EXPECT_FALSE(fs::exists(d / "x.img"));
  }
}

TEST(Cli, DryRunPrintsThePlanAndWritesNothing) {
  TempDir d;
  fs::path out = d / "kiosk.img";
  auto r = cli({"--spec", example("kiosk.toml").string(), "--tarball", tarball().string(), "--output", out.string(),
                "--size", "1GiB", "--dry-run"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "nothing is written")) << r.out;
  EXPECT_TRUE(contains(r.out, "FAT32")) << r.out;
  EXPECT_TRUE(contains(r.out, "kiosk.apkovl.tar.gz")) << r.out;
  EXPECT_TRUE(fs::is_empty(d.path()));
  // Devices too: nothing is opened for writing, the card file is untouched.
  // A file standing in for a card: 1 MiB of marks, then a hole up to 256 MiB.
  auto make_card = [&](const fs::path& p) {
    rpi::test::write_file(p, std::string(1 << 20, 'x'));
    fs::resize_file(p, 256u << 20);
  };
  auto untouched = [&](const fs::path& p) {
    const std::string bytes = rpi::test::read_file(p);
    return bytes.size() == (256u << 20) && bytes.compare(0, 1 << 20, std::string(1 << 20, 'x')) == 0 &&
           bytes.find_first_not_of('\0', 1 << 20) == std::string::npos;
  };
  fs::path card = d / "card.bin";
  make_card(card);
  auto dv = cli({"--spec", example("fleet.toml").string(), "--tarball", tarball().string(), "--device", card.string(),
                 "--dry-run", "--json"});
  EXPECT_EQ(dv.exit_code, 0) << dv.err;
  // The plan, after the warnings about the example's SSH key.
  std::vector<std::string> types = json_types(dv.out);
  std::erase(types, "warning");
  EXPECT_EQ(types, std::vector<std::string>{"plan"}) << dv.out;
  EXPECT_TRUE(contains(dv.out, "\"jobs\":1")) << dv.out;
  EXPECT_TRUE(untouched(card));
  make_card(d / "card2.bin");
  make_card(d / "card3.bin");
  dv =
      cli({"--spec", example("fleet.toml").string(), "--tarball", tarball().string(), "--device", card.string(),
           "--device", (d / "card2.bin").string(), "--device", (d / "card3.bin").string(), "--jobs", "1", "--dry-run"});
  EXPECT_EQ(dv.exit_code, 0) << dv.err;
  EXPECT_TRUE(contains(dv.out, "writes: one card after another (--jobs 1)")) << dv.out;
  EXPECT_TRUE(untouched(card));
  EXPECT_TRUE(untouched(d / "card2.bin"));
  EXPECT_TRUE(untouched(d / "card3.bin"));
}

// Without {n} every card is the same Pi, generated host keys included: said, once.
TEST(Cli, CardsSharingAnIdentityAndItsHostKeysAreWarnedAbout) {
  TempDir d;
  for (const char* c : {"c1.bin", "c2.bin", "c3.bin"}) rpi::test::write_file(d / c, std::string(64 << 20, '\0'));
  auto run = [&](const std::string& spec_text) {
    rpi::test::write_file(d / "pi.toml", spec_text);
    return cli({"--spec", (d / "pi.toml").string(), "--tarball", tarball().string(), "--device",
                (d / "c1.bin").string(), "--device", (d / "c2.bin").string(), "--device", (d / "c3.bin").string(),
                "--dry-run"});
  };
  const std::string warning = "3 cards get the same identity kiosk and so the same SSH host keys";
  auto same = run("[system]\nhostname = \"kiosk\"\n");
  EXPECT_EQ(same.exit_code, 0) << same.err;
  EXPECT_TRUE(contains(same.err, warning)) << same.err;
  EXPECT_EQ(same.err.find(warning), same.err.rfind(warning)) << same.err;
  for (const char* fine : {"[system]\nhostname = \"kiosk-{n}\"\n",
                           "[system]\nhostname = \"kiosk\"\n[ssh]\nhost_keys = \"first-boot\"\n"}) {
    SCOPED_TRACE(fine);
    auto r = run(fine);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_FALSE(contains(r.err, "same SSH host keys")) << r.err;
  }
  // A station writes card after card: the same, once, before the first.
  rpi::test::write_file(d / "pi.toml", "[system]\nhostname = \"kiosk\"\n");
  auto w = cli({"watch", "--spec", (d / "pi.toml").string(), "--tarball", tarball().string(), "--dry-run"});
  EXPECT_EQ(w.exit_code, 0) << w.err;
  EXPECT_TRUE(contains(w.err, "every card of this station gets the same identity kiosk and so the same SSH host keys"))
      << w.err;
  rpi::test::write_file(d / "pi.toml", "[system]\nhostname = \"kiosk-{n}\"\n");
  w = cli({"watch", "--spec", (d / "pi.toml").string(), "--tarball", tarball().string(), "--dry-run"});
  EXPECT_FALSE(contains(w.err, "same SSH host keys")) << w.err;
}

// What a SIGKILL leaves (no handler runs) is named on the next run, not removed:
// it may be another run's file in progress.
TEST(Cli, TemporaryLeftByAKilledRunIsNamed) {
  TempDir d;
  const fs::path left = d / ".k.img.tmp-Ab12Cd", other = d / ".other.img.tmp-Ab12Cd";
  rpi::test::write_file(left, std::string(4096, 'x'));
  rpi::test::write_file(other, "x");
  auto r = cli(
      {"--spec", example("kiosk.toml").string(), "--tarball", tarball().string(), "--output", (d / "k.img").string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, left.string() + " (4 KiB, last changed ")) << r.err;
  EXPECT_TRUE(contains(r.err, " ago) was left by an interrupted run")) << r.err;
  EXPECT_FALSE(contains(r.err, other.string())) << r.err;
  EXPECT_TRUE(fs::exists(left));
  auto q = cli({"--spec", example("kiosk.toml").string(), "--tarball", tarball().string(), "--output",
                (d / "k.img").string(), "--dry-run", "-q"});
  EXPECT_TRUE(contains(q.err, "warning: " + left.string())) << "something to act on: a warning, shown with -q too";
  // apkovl -o too: its temporary holds the same secrets.
  const fs::path ovl_left = d / ".k.apkovl.tar.gz.tmp-Zz99Yy";
  rpi::test::write_file(ovl_left, "x");
  auto a = cli({"apkovl", "--spec", example("kiosk.toml").string(), "-o", (d / "k.apkovl.tar.gz").string()});
  EXPECT_EQ(a.exit_code, 0) << a.err;
  EXPECT_TRUE(contains(a.err, ovl_left.string() + " (1 B, last changed ")) << a.err;
}

namespace {

// A folder in /tmp, removed with its contents: tests of who may reach a file
// cannot use the build folder (a CI clone sits in a 0700 folder).
struct TmpFolder {
  fs::path path;
  TmpFolder() {
    char made[] = "/tmp/rpi-h2-XXXXXX";
    if (!::mkdtemp(made)) throw std::runtime_error("mkdtemp in /tmp failed");
    path = made;
  }
  ~TmpFolder() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TmpFolder(const TmpFolder&) = delete;
  TmpFolder& operator=(const TmpFolder&) = delete;
};

// A card run with TMPDIR=`tmp`, writing a 1 GiB sparse file standing in for a card.
rpi::test::CommandResult card_run(const fs::path& tmp, const fs::path& card,
                                  const std::vector<std::string>& more = {}) {
  if (!fs::exists(card)) {
    rpi::test::write_file(card, "");
    if (::truncate(card.c_str(), 1ll << 30) != 0) throw std::runtime_error("truncate failed");
  }
  std::vector<std::string> argv{"env",
                                "TMPDIR=" + tmp.string(),
                                rpi::test::cli_path().string(),
                                "--spec",
                                example("kiosk.toml").string(),
                                "--tarball",
                                tarball().string(),
                                "--device",
                                card.string(),
                                "--yes"};
  argv.insert(argv.end(), more.begin(), more.end());
  return rpi::test::run(argv);
}

void set_mtime(const fs::path& p, std::time_t when) {
  const struct timespec t[2] = {{when, 0}, {when, 0}};
  if (::utimensat(AT_FDCWD, p.c_str(), t, AT_SYMLINK_NOFOLLOW) != 0) throw std::runtime_error("utimensat failed");
}

}  // namespace

// A card run killed outright (SIGKILL, a power cut) leaves its scratch folder,
// with whole card images and their secrets: the next card run names this
// user's, once, and removes none (a concurrent run's look the same).
TEST(Cli, ScratchFoldersLeftByKilledCardRunsAreNamed) {
  TempDir d;
  const fs::path tmp = d / "tmp";
  fs::create_directory(tmp);
  const fs::path old = tmp / "rpi-provision.Ab12Cd", recent = tmp / "rpi-provision.x9Y8z7";
  for (const auto& f : {old, recent}) fs::create_directory(f);
  rpi::test::write_file(old / "1-kiosk.img", std::string(5 << 10, 'x'));
  rpi::test::write_file(old / "2-kiosk.img", std::string(3 << 10, 'x'));
  const std::time_t days_ago = std::time(nullptr) - 3 * 86400 - 600;
  set_mtime(old / "1-kiosk.img", days_ago);
  set_mtime(old / "2-kiosk.img", days_ago);
  set_mtime(old, days_ago);
  // Not a scratch folder: another name, or a file or link by that name.
  const fs::path short_name = tmp / "rpi-provision.Ab12C", odd = tmp / "rpi-provision.Ab-2Cd",
                 file = tmp / "rpi-provision.Fi1eZz", link = tmp / "rpi-provision.L1nkZz", other = tmp / "other.Ab12Cd";
  for (const auto& f : {short_name, odd, other}) fs::create_directory(f);
  rpi::test::write_file(file, "x");
  fs::create_directory_symlink(old, link);

  const fs::path card = d / "card.bin";
  auto r = card_run(tmp, card);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string said = "2 scratch folders were left in " + tmp.string() + " by killed rpi-provision runs";
  EXPECT_TRUE(contains(r.err, "warning: " + said)) << r.err;
  EXPECT_EQ(r.err.find(said), r.err.rfind(said)) << "once: " << r.err;
  EXPECT_TRUE(contains(r.err, old.string() + " (8 KiB, last changed 3 days ago)")) << r.err;
  EXPECT_TRUE(contains(r.err, recent.string() + " (0 B, last changed ")) << r.err;
  EXPECT_TRUE(contains(r.err, "remove them (rm -r) when no other rpi-provision run is active")) << r.err;
  // (" (": rpi-provision.Ab12C is the start of a name that is listed)
  for (const auto& f : {short_name, odd, file, link, other}) EXPECT_FALSE(contains(r.err, f.string() + " (")) << r.err;
  // Nothing removed, and this run's own folder is gone.
  for (const auto& f : {old, recent, short_name, odd, file, link, other})
    EXPECT_TRUE(fs::exists(fs::symlink_status(f))) << f;
  std::size_t entries = 0;
  for (const auto& e : fs::directory_iterator(tmp)) entries += e.path().empty() ? 0 : 1;
  EXPECT_EQ(entries, 7u) << "this run's scratch folder was left";

  // --json: a warning event, nothing on stderr; -q keeps it (it is a warning).
  fs::remove_all(recent);
  auto j = card_run(tmp, card, {"--json", "-q"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  EXPECT_TRUE(contains(j.out, "{\"type\":\"warning\",\"message\":\"a scratch folder was left in " + tmp.string() +
                                  " by a killed rpi-provision run"))
      << j.out;
  EXPECT_TRUE(contains(j.out, old.string() + " (8 KiB, last changed 3 days ago)")) << j.out;
  EXPECT_FALSE(contains(j.err, "scratch folder")) << j.err;

  // A clean $TMPDIR: nothing said.
  const fs::path clean = d / "clean";
  fs::create_directory(clean);
  auto c = card_run(clean, card);
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_FALSE(contains(c.err, "scratch folder")) << c.err;
  EXPECT_TRUE(fs::is_empty(clean));
}

// A scratch folder a live run holds (its flock: the other end of a pipe) is
// no leftover: not named, while one nobody holds is.
TEST(Cli, ScratchFoldersOfLiveRunsAreNotNamed) {
  TempDir d;
  const fs::path tmp = d / "tmp", live = tmp / "rpi-provision.L1veAa", dead = tmp / "rpi-provision.DeadAa";
  fs::create_directories(live);
  fs::create_directory(dead);
  rpi::test::write_file(dead / ".in-use", "");  // a killed run's: there, held by none
  rpi::Fd held(::open((live / ".in-use").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(held);
  ASSERT_EQ(::flock(held.get(), LOCK_EX | LOCK_NB), 0);
  auto r = card_run(tmp, d / "card.bin");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "a scratch folder was left in " + tmp.string())) << r.err;
  EXPECT_TRUE(contains(r.err, dead.string())) << r.err;
  EXPECT_FALSE(contains(r.err, live.string())) << r.err;
  // Two runs at once, each sees none of the other's folder: the documented pipe.
  fs::remove_all(dead);
  held = rpi::Fd();
  fs::remove_all(live);
  rpi::test::write_file(d / "card2.bin", std::string(64 << 20, '\0'));
  auto p = rpi::test::sh(rpi::test::tool_in(tmp) + " --spec " + rpi::test::shell_quoted(example("kiosk.toml")) +
                         " --tarball " + rpi::test::shell_quoted(tarball()) + " --size 64MiB --output - 2>" +
                         rpi::test::shell_quoted(d / "producer.err") + " | " + rpi::test::tool_in(tmp) +
                         " --image - --device " + rpi::test::shell_quoted(d / "card2.bin") + " --yes --no-verify");
  EXPECT_EQ(p.exit_code, 0) << p.err;
  EXPECT_FALSE(contains(p.err + rpi::test::read_file(d / "producer.err"), "scratch folder"))
      << p.err << rpi::test::read_file(d / "producer.err");
}

// Another user's scratch folder is theirs to remove: not named.
TEST(Cli, ScratchFoldersOfOtherUsersAreNotNamed) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to make a folder another user owns";
  TempDir d;
  const fs::path tmp = d / "tmp", theirs = d / "tmp" / "rpi-provision.Th31rs",
                 mine = d / "tmp" / "rpi-provision.M1neAa";
  fs::create_directories(theirs);
  fs::create_directory(mine);
  ASSERT_EQ(::chown(theirs.c_str(), 65534, 65534), 0);
  auto r = card_run(tmp, d / "card.bin");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "a scratch folder was left in " + tmp.string())) << r.err;
  EXPECT_TRUE(contains(r.err, mine.string())) << r.err;
  EXPECT_FALSE(contains(r.err, theirs.string())) << r.err;
}

TEST(Cli, WipeIsForCardsAndShowsInThePlan) {
  TempDir d;
  auto r = cli({"--spec", example("kiosk.toml").string(), "--tarball", tarball().string(), "--output",
                (d / "k.img").string(), "--wipe"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "--wipe erases --device cards")) << r.err;
  EXPECT_TRUE(fs::is_empty(d.path()));
  fs::path card = d / "card.bin";
  rpi::test::write_file(card, std::string(1 << 20, 'x'));
  fs::resize_file(card, 256u << 20);
  r = cli({"--spec", example("kiosk.toml").string(), "--tarball", tarball().string(), "--device", card.string(),
           "--wipe", "--dry-run"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "first: erase each whole card (--wipe)")) << r.out;
  r = cli({"--spec", example("kiosk.toml").string(), "--tarball", tarball().string(), "--device", card.string(),
           "--wipe", "--dry-run", "--json"});
  EXPECT_TRUE(contains(r.out, "\"wipe\":true")) << r.out;
  const std::string bytes = rpi::test::read_file(card);
  EXPECT_EQ(bytes.size(), 256u << 20);
  EXPECT_EQ(bytes.substr(0, 1 << 20), std::string(1 << 20, 'x'));
  EXPECT_EQ(bytes.find_first_not_of('\0', 1 << 20), std::string::npos);
}

// `--device sdb` (the /dev/ forgotten) used to become a new 520 MiB file in the
// current folder, reported as a written card.
TEST(Cli, ADevicePathThatDoesNotExistIsRefusedAndNothingIsCreated) {
  TempDir d;
  for (bool dry : {true, false}) {
    std::vector<std::string> args{"--spec",   example("kiosk.toml").string(), "--tarball", tarball().string(),
                                  "--device", (d / "sdb").string(),           "--yes"};
    if (dry) args.push_back("--dry-run");
    auto r = cli(args);
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_TRUE(contains(r.err, "--device " + (d / "sdb").string() + ": no such card or file")) << r.err;
    EXPECT_TRUE(contains(r.err, "a card is a /dev path such as /dev/sdb")) << r.err;
    EXPECT_TRUE(contains(r.err, "use --output " + (d / "sdb.img").string())) << r.err;
    EXPECT_TRUE(fs::is_empty(d.path())) << "nothing is created";
  }
}

// --jobs 2 with three cards: all written, two at a time, and the user is told.
TEST(Cli, JobsLimitsHowManyCardsAreWrittenAtOnce) {
  RPI_REQUIRE_TOOL("mdir");
  TempDir d;
  std::vector<std::string> args{
      "--spec", example("fleet.toml").string(), "--tarball", tarball().string(), "--jobs", "2", "--yes", "--json"};
  for (const char* name : {"a.bin", "b.bin", "c.bin"}) {
    const fs::path p = d / name;
    ASSERT_EQ(truncate((rpi::test::write_file(p, ""), p).c_str(), 1ll << 30), 0);
    args.insert(args.end(), {"--device", p.string()});
  }
  auto r = cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> types = json_types(r.out);
  EXPECT_EQ(std::count(types.begin(), types.end(), "card-done"), 3);
  EXPECT_TRUE(contains(r.out, "writing 2 of the 3 cards at a time")) << r.out;
  EXPECT_TRUE(
      contains(rpi::test::run({"mdir", "-i", (d / "c.bin").string() + "@@8M", "::/"}).out, "class-03.apkovl.tar.gz"));
}

TEST(Cli, SpecToImageCarriesTheGeneratedApkovlAndBootEdits) {
  RPI_REQUIRE_TOOL("mdir");
  TempDir d;
  fs::path out = d / "kiosk.img";
  auto r = cli({"--spec", example("kiosk.toml").string(), "--tarball", tarball().string(), "--output", out.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string target = out.string() + "@@8M";
  auto ls = rpi::test::run({"mdir", "-i", target, "::/"});
  EXPECT_TRUE(contains(ls.out, "kiosk.apkovl.tar.gz")) << ls.out;
  EXPECT_FALSE(contains(ls.out, "rpi.apkovl.tar.gz")) << ls.out;
  auto blk = rpi::test::run({"blkid", "-p", "-O", std::to_string(8 << 20), out.string()});
  EXPECT_TRUE(contains(blk.out, "LABEL=\"KIOSK\"") || contains(blk.out, "LABEL=\"ALPINE\"")) << blk.out;
  struct stat st {};
  ASSERT_EQ(stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Generated host keys: known_hosts lines beside the image, and no private key in any output.
  EXPECT_TRUE(fs::exists(out.string() + ".known_hosts"));
  EXPECT_FALSE(contains(r.out + r.err, "PRIVATE KEY"));
  EXPECT_FALSE(contains(r.out + r.err, rpi::test::read_file(example("kiosk-wifi.psk")).substr(0, 8)));
}

// The file beside an image is the image's and is replaced; a --known-hosts file is
// shared: other hosts' lines stay, this host's old key goes.
TEST(Cli, KnownHostsBesideTheImageIsReplacedAndAGivenFileMerged) {
  TempDir d;
  const fs::path img = d / "kiosk.img", beside = d / "kiosk.img.known_hosts", shared = d / "fleet.known_hosts";
  rpi::test::write_file(
      beside, "old-image-host ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP+nYAMDkJCpCL35DnnyNqDRSAJkqxKDUllZ5jzydSPs\n");
  rpi::test::write_file(shared,
                        "# fleet\nother-pi ssh-ed25519 "
                        "AAAAC3NzaC1lZDI1NTE5AAAAIDJr/JUeeTwyQgTafSTTwOdJ8yYzVQz3dKkrzad36D9t\nkiosk,kiosk.lan "
                        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKRMOQkbzqh1jnL1p2QYhq1DB3vij5b8WXbX1mtUDe89\n");
  auto r = cli({"--spec", example("kiosk.toml").string(), "--tarball", tarball().string(), "--output", img.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string own = rpi::test::read_file(beside);
  EXPECT_EQ(own.rfind("kiosk,kiosk.lan ssh-ed25519 AAAA", 0), 0u) << own;
  EXPECT_FALSE(contains(own, "old-image-host")) << own;
  r = cli({"--spec", example("kiosk.toml").string(), "--tarball", tarball().string(), "--output", img.string(),
           "--known-hosts", shared.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string merged = rpi::test::read_file(shared);
  EXPECT_EQ(
      merged.rfind(
          "# fleet\nother-pi ssh-ed25519 "
          "AAAAC3NzaC1lZDI1NTE5AAAAIDJr/JUeeTwyQgTafSTTwOdJ8yYzVQz3dKkrzad36D9t\nkiosk,kiosk.lan ssh-ed25519 AAAA",
          0),
      0u)
      << merged;
  EXPECT_FALSE(contains(merged, "AAAAC3NzaC1lZDI1NTE5AAAAIKRMOQkbzqh1jnL1p2QYhq1DB3vij5b8WXbX1mtUDe89")) << merged;
  // A rebuild without generated keys leaves no stale file beside the image.
  fs::path nokeys = d / "nokeys.toml";
  rpi::test::write_file(nokeys, "[system]\nhostname = \"kiosk\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  r = cli({"--spec", nokeys.string(), "--tarball", tarball().string(), "--output", img.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(beside)) << "keys of an earlier build outlived it";
  // A symbolic link is followed: the file it names gets the lines, the link stays.
  fs::path target = d / "real.known_hosts", link = d / "link.known_hosts";
  rpi::test::write_file(target, "# mine\n");
  fs::create_symlink(target, link);
  r = cli({"--spec", example("kiosk.toml").string(), "--tarball", tarball().string(), "--output", img.string(),
           "--known-hosts", link.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_TRUE(contains(rpi::test::read_file(target), "kiosk,kiosk.lan ssh-ed25519")) << rpi::test::read_file(target);
}

// --output names a new or regular file, never an input or a device; anything
// refused leaves no image, .bmap or known_hosts behind.
TEST(Cli, OutputNeverReplacesAnInputOrADevice) {
  TempDir d;
  const fs::path spec = d / "kiosk.toml", tb = d / "alpine.tar.gz", fifo = d / "fifo";
  fs::copy_file(example("kiosk.toml"), spec);
  fs::copy_file(example("kiosk-wifi.psk"), d / "kiosk-wifi.psk");
  fs::copy_file(example("kiosk-departures.sh"), d / "kiosk-departures.sh");
  fs::copy_file(tarball(), tb);
  const std::string spec_bytes = rpi::test::read_file(spec);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto base = [&](const std::string& out) {
    return std::vector<std::string>{"--spec", spec.string(), "--tarball", tb.string(), "--output", out};
  };
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  std::vector<Case> cases = {
      {base(spec.string()), "--output " + spec.string() + " is the file given as --spec; choose another name"},
      {base(tb.string()), "--output " + tb.string() + " is the file given as --tarball; choose another name"},
      {base(fifo.string()), "exists and is not a regular file"},
      {base(d.path().string()), "is a folder: give the image a file name"},
      {base((d / "missing" / "x.img").string()), "the folder " + (d / "missing").string() + " does not exist"},
  };
  if (geteuid() == 0) {
    const fs::path blk = d / "sdz";
    ASSERT_EQ(::mknod(blk.c_str(), S_IFBLK | 0600, makedev(7, 250)), 0);
    cases.push_back({base(blk.string()), "is a block device; --output makes an image file. To write a card: --device"});
  }
  for (auto& c : cases) {
    auto dry = c.args;
    dry.push_back("--dry-run");
    for (const auto& args : {c.args, dry}) {
      auto r = cli(args);
      EXPECT_EQ(r.exit_code, 2) << args[5] << ": " << r.err;
      EXPECT_TRUE(contains(r.err, c.message)) << r.err;
    }
  }
  EXPECT_EQ(rpi::test::read_file(spec), spec_bytes);
  EXPECT_EQ(rpi::test::read_file(tb), rpi::test::read_file(tarball()));
  // A known_hosts target that is not a file: refused, and the image is not kept either.
  auto k = cli({"--spec", spec.string(), "--tarball", tb.string(), "--output", (d / "k.img").string(), "--known-hosts",
                fifo.string()});
  EXPECT_EQ(k.exit_code, 2) << k.err;
  EXPECT_TRUE(contains(k.err, "exists and is not a regular file")) << k.err;
  EXPECT_FALSE(fs::exists(d / "k.img"));
  EXPECT_FALSE(fs::exists(d / "k.img.bmap"));
  struct stat st {};
  ASSERT_EQ(::stat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
}

// Ctrl-C while an image is being built: no hidden temporary is left.
// No output — the image, its .bmap, the known_hosts file, a --device file —
// may be a file the run reads: the spec, --seed-file, or any file the spec
// reads ({ file = } secrets, sources), found through symbolic and hard links.
// Refused with exit 2 before anything is written, naming the path and the
// entry, never the secret.
TEST(Cli, NoOutputReplacesAFileTheRunReads) {
  TempDir d;
  const fs::path spec = d / "kiosk.toml", psk = d / "kiosk-wifi.psk", script = d / "kiosk-departures.sh",
                 seed = d / "seed", tb = d / "alpine.tar.gz", link = d / "link", hard = d / "hard",
                 bspec = d / "b.img.bmap";
  fs::copy_file(example("kiosk.toml"), spec);
  fs::copy_file(example("kiosk-wifi.psk"), psk);
  fs::copy_file(example("kiosk-departures.sh"), script);
  fs::copy_file(example("kiosk.toml"), bspec);
  fs::copy_file(tarball(), tb);
  rpi::test::write_file(seed, "0123456789abcdef0123456789abcdef\n");
  fs::create_symlink(psk, link);
  fs::create_hard_link(script, hard);
  std::map<fs::path, std::string> before;
  for (const auto& p : {spec, psk, script, seed, bspec}) before[p] = rpi::test::read_file(p);
  std::string secret = rpi::test::read_file(psk);
  while (!secret.empty() && secret.back() == '\n') secret.pop_back();
  auto build = [&](const std::string& out, std::vector<std::string> more = {}) {
    std::vector<std::string> a = {"--spec", spec.string(), "--tarball", tb.string(), "--output", out};
    a.insert(a.end(), more.begin(), more.end());
    return a;
  };
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::string img = (d / "k.img").string();
  std::vector<Case> cases = {
      {build(psk.string()), "--output " + psk.string() + " is the file [wifi].psk reads; choose another name"},
      {build(seed.string(), {"--seed-file", seed.string()}), "is the file given as --seed-file"},
      {build(link.string()), "--output " + link.string() + " is the file [wifi].psk reads"},
      {build(hard.string()), "is the file [[scripts]].source for departures reads"},
      {build(img, {"--known-hosts", spec.string()}), "--known-hosts " + spec.string() + " is the file given as --spec"},
      {build(img, {"--known-hosts", (d / "x" / ".." / "kiosk-wifi.psk").string()}), "is the file [wifi].psk reads"},
      {{"--spec", bspec.string(), "--tarball", tb.string(), "--output", (d / "b.img").string()},
       "its block map " + bspec.string() + " is the file given as --spec"},
      {{"--spec", spec.string(), "--tarball", tb.string(), "--device", seed.string(), "--seed-file", seed.string(),
        "--yes"},
       "--device " + seed.string() + " is the file given as --seed-file"},
      {{"apkovl", "--spec", spec.string(), "-o", spec.string()},
       "--output " + spec.string() + " is the file given as --spec"},
      {{"apkovl", "--spec", spec.string(), "-o", psk.string()}, "is the file [wifi].psk reads"},
      {{"apkovl", "--spec", spec.string(), "-o", seed.string(), "--seed-file", seed.string()},
       "is the file given as --seed-file"},
      {{"apkovl", "--spec", spec.string(), "-o", (d / "a.tar.gz").string(), "--known-hosts", spec.string()},
       "--known-hosts " + spec.string() + " is the file given as --spec"},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.message);
    auto r = cli(c.args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_TRUE(contains(r.err, c.message)) << r.err;
    EXPECT_FALSE(contains(r.err + r.out, secret)) << "a secret in a message";
  }
  for (const auto& [p, bytes] : before) EXPECT_EQ(rpi::test::read_file(p), bytes) << p;
  EXPECT_TRUE(fs::is_symlink(link));
  for (const char* made : {"k.img", "k.img.bmap", "k.img.known_hosts", "b.img", "a.tar.gz"})
    EXPECT_FALSE(fs::exists(d / made)) << made;
}

// A run that fails after the image is built (here: the --known-hosts folder is
// read-only) leaves an earlier image, its .bmap and its known_hosts file as they
// were; only a run that succeeds replaces them.
TEST(Cli, AFailedRebuildKeepsThePreviousImage) {
  TempDir d;
  const fs::path img = d / "keep.img", ro = d / "ro";
  fs::create_directories(ro);
  auto build = [&](std::vector<std::string> more = {}) {
    std::vector<std::string> a = {
        "--spec", example("kiosk.toml").string(), "--tarball", tarball().string(), "--output", img.string()};
    a.insert(a.end(), more.begin(), more.end());
    return cli(a);
  };
  auto first = build();
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const std::string image = rpi::test::read_file(img), bmap = rpi::test::read_file(d / "keep.img.bmap"),
                    keys = rpi::test::read_file(d / "keep.img.known_hosts");
  ASSERT_TRUE(contains(keys, "ssh-ed25519")) << "kiosk.toml generates host keys";
  struct Unmount {
    fs::path at;
    ~Unmount() {
      if (!at.empty()) ::umount2(at.c_str(), MNT_DETACH);
    }
  } unmount;
  if (geteuid() == 0) {
    // chmod does not stop root: a read-only tmpfs does.
    if (::mount("tmpfs", ro.c_str(), "tmpfs", MS_RDONLY, "size=1m") != 0)
      GTEST_SKIP() << "cannot mount a read-only tmpfs here (" << std::strerror(errno) << ")";
    unmount.at = ro;
  } else {
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
  }
  auto failed = build({"--known-hosts", (ro / "kh").string()});
  EXPECT_EQ(failed.exit_code, 1) << failed.err;
  EXPECT_TRUE(contains(failed.err, "cannot write the known_hosts file " + (ro / "kh").string())) << failed.err;
  EXPECT_TRUE(contains(failed.err, "the image was not written")) << failed.err;
  ASSERT_TRUE(fs::exists(img)) << "the previous image was deleted";
  EXPECT_TRUE(rpi::test::read_file(img) == image) << "the previous image was replaced";
  EXPECT_EQ(rpi::test::read_file(d / "keep.img.bmap"), bmap);
  EXPECT_EQ(rpi::test::read_file(d / "keep.img.known_hosts"), keys);
  for (const auto& e : fs::directory_iterator(d.path()))
    EXPECT_FALSE(e.path().filename().string().starts_with(".")) << "a temporary was left: " << e.path();
  if (geteuid() != 0) fs::permissions(ro, fs::perms::owner_all);
  // A rebuild that succeeds with another --known-hosts file replaces the image
  // and leaves no earlier keys beside it.
  auto ok = build({"--known-hosts", (d / "fleet.known_hosts").string()});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_FALSE(rpi::test::read_file(img) == image);
  EXPECT_FALSE(fs::exists(d / "keep.img.known_hosts"));
  EXPECT_TRUE(contains(rpi::test::read_file(d / "fleet.known_hosts"), "ssh-ed25519"));
}

TEST(Cli, InterruptedBuildLeavesNoTemporary) {
  TempDir d;
  const std::string cmd = "'" + rpi::test::cli_path().string() + "' -q --spec '" + example("kiosk.toml").string() +
                          "' --tarball '" + rpi::test::fixture_tarball({"--size-mb", "8"}).string() +
                          "' --size 1TiB --output '" + (d / "x.img").string() + "' & pid=$!; " +
                          "for i in $(seq 500); do ls -a '" + d.path().string() +
                          "' | grep -q tmp && break; sleep 0.01; done; kill -INT $pid; wait $pid; echo rc=$?";
  auto r = rpi::test::sh(cmd);
  EXPECT_TRUE(contains(r.out, "rc=130")) << r.out << r.err;
  EXPECT_TRUE(fs::is_empty(d.path())) << "left behind: " << rpi::test::sh("ls -a '" + d.path().string() + "'").out;
}

TEST(Cli, SeedFileMakesCardsWithGeneratedKeysReproducible) {
  TempDir d;
  fs::path spec = d / "pi.toml";
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"seeded-{n}\"\n[ssh]\nhost_keys = \"generate\"\n"
                        "[[users]]\nname = \"pi\"\npassword = \"correct horse battery\"\n");
  rpi::test::write_file(d / "seed", "a secret of more than sixteen bytes\n");
  rpi::test::write_file(d / "short", "too short");
  auto build = [&](const std::string& name, std::vector<std::string> extra) {
    std::vector<std::string> args{"--spec",           spec.string(), "--tarball",
                                  tarball().string(), "--output",    (d / name).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return cli(args);
  };
  auto same = [&](const std::string& a, const std::string& b) {
    return rpi::test::run({"cmp", "-s", (d / a).string(), (d / b).string()}).exit_code == 0;
  };
  ASSERT_EQ(build("a.img", {"--seed-file", (d / "seed").string()}).exit_code, 0);
  ASSERT_EQ(build("b.img", {"--seed-file", (d / "seed").string()}).exit_code, 0);
  ASSERT_EQ(build("c.img", {}).exit_code, 0);
  ASSERT_EQ(build("d.img", {"--seed-file", (d / "seed").string(), "--first", "2"}).exit_code, 0);
  EXPECT_TRUE(same("a.img", "b.img")) << "same spec, tarball and seed: the same card";
  EXPECT_EQ(rpi::test::read_file(d / "a.img.known_hosts"), rpi::test::read_file(d / "b.img.known_hosts"));
  EXPECT_FALSE(same("a.img", "c.img")) << "without a seed, host keys and salts are fresh";
  EXPECT_NE(rpi::test::read_file(d / "a.img.known_hosts"), rpi::test::read_file(d / "d.img.known_hosts"))
      << "each card's keys are its own";
  auto bad = build("e.img", {"--seed-file", (d / "short").string()});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(contains(bad.err, "--seed-file " + (d / "short").string() + " must hold at least 16 bytes")) << bad.err;
  EXPECT_FALSE(fs::exists(d / "e.img"));
}

// A seed anyone could guess or read gives away every card's host keys: said,
// not refused (the build is still what was asked for). "Read" means reached:
// a 0644 file in a folder nobody else may enter is not warned about. In /tmp,
// not the build folder, whose parents (a CI clone's) may be private.
TEST(Cli, SeedFileThatOthersCouldKnowIsWarnedAbout) {
  for (fs::path up = "/tmp"; !up.empty(); up = up.parent_path()) {
    if ((fs::status(up).permissions() & fs::perms::others_exec) == fs::perms::none)
      GTEST_SKIP() << up << " cannot be entered by other users: no folder in /tmp is open to them";
    if (up == up.parent_path()) break;
  }
  TmpFolder t;
  const fs::path& d = t.path;
  fs::path spec = d / "pi.toml";
  rpi::test::write_file(spec, "[system]\nhostname = \"seeded\"\n[ssh]\nhost_keys = \"generate\"\n");
  const fs::path pub = d / "pub", priv = d / "priv", grp = d / "grp", shut = d / "shut";
  using Modes = std::vector<std::pair<fs::path, mode_t>>;
  for (const auto& [f, mode] : Modes{{d, 0755}, {pub, 0755}, {priv, 0700}, {grp, 0750}, {shut, 0705}}) {
    fs::create_directories(f);
    ASSERT_EQ(::chmod(f.c_str(), mode), 0) << f;
  }
  const fs::path zeros = priv / "zeros", open = pub / "open", good = pub / "good", hidden = priv / "open",
                 linked = priv / "linked", group = grp / "seed", group_shut = shut / "seed";
  rpi::test::write_file(zeros, std::string(32, '\0'));
  for (const auto& f : {open, good, hidden, linked, group, group_shut})
    rpi::test::write_file(f, "0123456789abcdef0123456789abcdef");
  fs::create_hard_link(linked, pub / "other-name");
  for (const auto& [f, mode] : Modes{{zeros, 0600},
                                     {open, 0644},
                                     {good, 0600},
                                     {hidden, 0644},
                                     {linked, 0644},
                                     {group, 0640},
                                     {group_shut, 0640}})
    ASSERT_EQ(::chmod(f.c_str(), mode), 0) << f;
  auto apkovl = [&](const fs::path& seed) {
    return cli(
        {"apkovl", "--spec", spec.string(), "-o", (d / "x.apkovl.tar.gz").string(), "--seed-file", seed.string()});
  };
  auto z = apkovl(zeros);
  EXPECT_EQ(z.exit_code, 0) << z.err;
  EXPECT_TRUE(contains(z.err, "--seed-file " + zeros.string() + " holds only 1 byte value, repeated,")) << z.err;
  EXPECT_FALSE(contains(z.err, "can be read by")) << z.err;
  auto o = apkovl(open);
  EXPECT_EQ(o.exit_code, 0) << o.err;
  EXPECT_TRUE(contains(o.err, "--seed-file " + open.string() + " can be read by other users (mode 0644; its folder " +
                                  pub.string() + " (mode 0755) and those above it let them in)"))
      << o.err;
  EXPECT_TRUE(contains(o.err, "chmod 600 " + open.string())) << o.err;
  // The same file in a 0700 folder: nobody else gets to it.
  for (const auto& quiet : {good, hidden, group_shut}) {
    auto g = apkovl(quiet);
    EXPECT_EQ(g.exit_code, 0) << g.err;
    EXPECT_FALSE(contains(g.err, "--seed-file")) << quiet << ": " << g.err;
  }
  // Another name in an open folder lets them in whatever the folder of this one.
  auto l = apkovl(linked);
  EXPECT_TRUE(contains(l.err, "--seed-file " + linked.string() +
                                  " can be read by other users (mode 0644; it has "
                                  "other names (hard links)"))
      << l.err;
  // 0640 in a 0750 folder of the file's group: its members reach it.
  auto gr = apkovl(group);
  EXPECT_TRUE(contains(gr.err, "--seed-file " + group.string() + " can be read by the members of group ")) << gr.err;
  EXPECT_TRUE(contains(gr.err, "(mode 0640; its folder " + grp.string() + " (mode 0750)")) << gr.err;
  // The main command says it too (once, however many cards).
  auto b = cli({"--spec", spec.string(), "--tarball", tarball().string(), "--output", (d / "a.img").string(),
                "--seed-file", zeros.string()});
  EXPECT_EQ(b.exit_code, 0) << b.err;
  const std::string w = "holds only 1 byte value, repeated,";
  EXPECT_EQ(b.err.find(w), b.err.rfind(w)) << b.err;
  EXPECT_NE(b.err.find(w), std::string::npos) << b.err;
}

TEST(Cli, BatchOfCardsWithJsonAndACardTooSmall) {
  RPI_REQUIRE_TOOL("mtype");
  TempDir d;
  fs::path a = d / "card-a.bin", b = d / "card-b.bin";
  for (const auto& p : {a, b}) ASSERT_EQ(truncate((rpi::test::write_file(p, ""), p).c_str(), 1ll << 30), 0);
  auto r = cli({"--spec", example("fleet.toml").string(), "--tarball", tarball().string(), "--device", a.string(),
                "--device", b.string(), "--yes", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> types = json_types(r.out);
  EXPECT_EQ(std::count(types.begin(), types.end(), "card-done"), 2);
  EXPECT_EQ(types.back(), "summary");
  // Two identities: each card carries its own apkovl.
  EXPECT_TRUE(contains(rpi::test::run({"mdir", "-i", a.string() + "@@8M", "::/"}).out, "class-01.apkovl.tar.gz"));
  EXPECT_TRUE(contains(rpi::test::run({"mdir", "-i", b.string() + "@@8M", "::/"}).out, "class-02.apkovl.tar.gz"));

  // A card too small for the image fails on its own, naming itself; the others are written.
  fs::path small = d / "small.bin";
  rpi::test::write_file(small, "");
  ASSERT_EQ(truncate(small.c_str(), 16 << 20), 0);
  fs::remove(a);
  ASSERT_EQ(truncate((rpi::test::write_file(a, ""), a).c_str(), 1ll << 30), 0);
  auto big = cli({"--spec", example("fleet.toml").string(), "--tarball", tarball().string(), "--size", "64MiB",
                  "--device", a.string(), "--device", small.string(), "--yes"});
  EXPECT_EQ(big.exit_code, 3) << big.out << big.err;
  EXPECT_TRUE(contains(big.out, "FAILED: refusing to write " + small.string() +
                                    ": it has 16 MiB but the image needs 64 MiB; use a larger card, or a smaller "
                                    "--size or [boot] size"))
      << big.out;
  EXPECT_TRUE(contains(rpi::test::run({"mdir", "-i", a.string() + "@@8M", "::/"}).out, "class-01.apkovl.tar.gz"));
  // Automatic size, and files that need more than a card holds: the same, and all failing is exit 1.
  auto tiny = cli({"--spec", example("fleet.toml").string(), "--tarball", tarball().string(), "--device",
                   small.string(), "--yes", "--json"});
  EXPECT_EQ(tiny.exit_code, 1) << tiny.out << tiny.err;
  EXPECT_TRUE(
      contains(tiny.out, "\"error\":\"refusing to write " + small.string() + ": it has 16 MiB but the image needs"))
      << tiny.out;
  EXPECT_TRUE(contains(tiny.out, "\"exit_code\":1")) << tiny.out;
}

TEST(Cli, AFailingCardDoesNotStopTheOthersAndExitsThree) {
  TempDir d;
  fs::path good = d / "good.bin", locked = d / "locked.bin";
  for (const auto& p : {good, locked}) {
    rpi::test::write_file(p, "");
    ASSERT_EQ(truncate(p.c_str(), 1ll << 30), 0);
  }
  // An immutable file cannot be opened for writing, even by root: that card fails mid-batch.
  if (rpi::test::run({"chattr", "+i", locked.string()}).exit_code != 0)
    GTEST_SKIP() << "chattr +i is not supported here";
  auto m = cli({"--spec", example("fleet.toml").string(), "--tarball", tarball().string(), "--size", "64MiB",
                "--device", good.string(), "--device", locked.string(), "--yes"});
  rpi::test::run({"chattr", "-i", locked.string()});
  EXPECT_EQ(m.exit_code, 3) << m.out << m.err;
  EXPECT_TRUE(contains(m.out, "FAILED")) << m.out;
  EXPECT_TRUE(contains(m.out, "safe to remove")) << m.out;
  EXPECT_TRUE(contains(rpi::test::run({"mdir", "-i", good.string() + "@@8M", "::/"}).out, "class-01.apkovl.tar.gz"));
}

// Host keys of a card that was not written must not replace the key of the
// card of that name already in use; those of written cards are in --json.
TEST(Cli, OnlyWrittenCardsAddTheirHostKeys) {
  TempDir d;
  fs::path good = d / "good.bin", locked = d / "locked.bin", spec = d / "pi.toml", kh = d / "known_hosts";
  rpi::test::write_file(spec, "[system]\nhostname = \"pi-{n}\"\n[ssh]\nhost_keys = \"generate\"\n");
  rpi::test::write_file(kh, "pi-2 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC/0LM1SQIZbPWzvayvObEEvVl007I6YKsHZ63lJV+/x\n");
  for (const auto& p : {good, locked}) {
    rpi::test::write_file(p, "");
    ASSERT_EQ(truncate(p.c_str(), 1ll << 30), 0);
  }
  if (rpi::test::run({"chattr", "+i", locked.string()}).exit_code != 0)
    GTEST_SKIP() << "chattr +i is not supported here";
  auto m = cli({"--spec", spec.string(), "--tarball", tarball().string(), "--size", "64MiB", "--device", good.string(),
                "--device", locked.string(), "--yes", "--json", "--known-hosts", kh.string()});
  rpi::test::run({"chattr", "-i", locked.string()});
  EXPECT_EQ(m.exit_code, 3) << m.out << m.err;
  const std::string lines = rpi::test::read_file(kh);
  EXPECT_TRUE(contains(lines, "pi-1 ssh-ed25519 AAAA")) << lines;
  EXPECT_TRUE(contains(lines, "pi-2 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC/0LM1SQIZbPWzvayvObEEvVl007I6YKsHZ63lJV+/x"))
      << lines;
  auto p = rpi::test::run({"python3", "-c",
                           "import json,sys\n"
                           "for line in sys.stdin:\n"
                           "    e = json.loads(line)\n"
                           "    if e['type'] == 'card-done':\n"
                           "        print(e['hostname'], e['ok'], len(e.get('known_hosts', [])) > 0)\n"},
                          m.out);
  EXPECT_EQ(p.out, "pi-1 True True\npi-2 False False\n") << m.out;
}

// Cards that share one identity share one image and its host keys: the
// known_hosts lines are printed once, not once per card.
TEST(Cli, CardsOfOneIdentityPrintTheirKeysOnce) {
  TempDir d;
  fs::path spec = d / "pi.toml";
  rpi::test::write_file(spec, "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"generate\"\n");
  std::vector<std::string> args = {"--spec", spec.string(), "--tarball", tarball().string(),
                                   "--size", "64MiB",       "--yes",     "--no-verify"};
  for (const char* name : {"a.bin", "b.bin", "c.bin"}) {
    rpi::test::write_file(d / name, "");
    ASSERT_EQ(truncate((d / name).c_str(), 64ll << 20), 0);
    args.insert(args.end(), {"--device", (d / name).string()});
  }
  auto r = cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string keys = r.out.substr(r.out.find("known_hosts:"));
  EXPECT_EQ(std::count(keys.begin(), keys.end(), '\n'), 3) << "heading + ed25519 + rsa, each once:\n" << keys;
  EXPECT_EQ(rpi::test::read_file(d / "a.bin"), rpi::test::read_file(d / "c.bin"));
}

// One card under two names would be written twice (the second image wins):
// refused before anything is built. Cards smaller than the automatic size get
// an image that fills them.
TEST(Cli, TheSameCardTwiceIsRefusedAndSmallCardsGetAFittingImage) {
  TempDir d;
  fs::path card = d / "card.bin", alias = d / "alias.bin";
  rpi::test::write_file(card, "");
  ASSERT_EQ(truncate(card.c_str(), 100 << 20), 0);
  fs::create_symlink(card, alias);
  auto twice = cli({"--spec", example("fleet.toml").string(), "--tarball", tarball().string(), "--device",
                    card.string(), "--device", alias.string(), "--yes"});
  EXPECT_EQ(twice.exit_code, 2) << twice.err;
  EXPECT_TRUE(contains(twice.err, "is the same card as")) << twice.err;
  EXPECT_EQ(fs::file_size(card), 100u << 20);
  auto fits = cli({"--spec", example("headless.toml").string(), "--tarball", tarball().string(), "--device",
                   card.string(), "--yes"});
  EXPECT_EQ(fits.exit_code, 0) << fits.err;
  EXPECT_TRUE(contains(fits.err, "smaller than the automatic image size")) << fits.err;
  EXPECT_EQ(fs::file_size(card), 100u << 20) << "the card file grew";
  auto sf = rpi::test::run({"sfdisk", "--json", card.string()});
  EXPECT_TRUE(contains(sf.out, "\"size\": 188416")) << sf.out;  // 100 MiB - 8 MiB, rounded to 4 MiB: 92 MiB
}

TEST(Cli, WithoutATerminalOrYesNothingIsWritten) {
  TempDir d;
  fs::path card = d / "card.bin";
  rpi::test::write_file(card, std::string(4096, 'z'));
  ASSERT_EQ(truncate(card.c_str(), 1ll << 30), 0);
  auto r =
      cli({"--spec", example("headless.toml").string(), "--tarball", tarball().string(), "--device", card.string()});
  EXPECT_EQ(r.exit_code, 2) << "a usage error";
  EXPECT_TRUE(contains(r.err, "--yes")) << r.err;
  EXPECT_TRUE(contains(r.err, card.string() + "  file 1 GiB")) << "the prompt names the card: " << r.err;
  EXPECT_EQ(rpi::test::read_file(card).substr(0, 4096), std::string(4096, 'z'));
}

// --state keeps the next card number across restarts of a station; once every
// [[hosts]] entry is written there is nothing to do (exit 0, so systemd does not
// restart it), and a damaged file is named.
TEST(Cli, WatchStateFileContinuesAndStopsAfterTheLastHost) {
  TempDir d;
  const fs::path spec = d / "lab.toml", state = d / "next-card";
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"lab\"\n\n[[hosts]]\nhostname = \"lab-a\"\n\n[[hosts]]\n"
                        "hostname = \"lab-b\"\n");
  const std::vector<std::string> base{"watch",   "--spec",       spec.string(), "--tarball", tarball().string(),
                                      "--state", state.string(), "--poll",      "--yes"};
  rpi::test::write_file(state, "3\n");
  auto r = cli(base);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "continuing at card 3")) << r.err;
  EXPECT_TRUE(contains(r.out, "all 2 [[hosts]] entries")) << r.out;
  auto quiet = base;
  quiet.insert(quiet.begin(), "-q");
  EXPECT_TRUE(contains(cli(quiet).out, "nothing to do")) << "a quiet station that does nothing says why";
  // Written on Windows, or by hand: a CR or blanks at the end are no reason to refuse it.
  rpi::test::write_file(state, "3\r\n");
  r = cli(base);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "continuing at card 3")) << r.err;
  auto empty_label = base;
  empty_label.insert(empty_label.end(), {"--label", ""});
  EXPECT_EQ(cli(empty_label).exit_code, 2) << "watch refuses --label '' as the main command does";
  // With --json the reason is an event too.
  auto json = base;
  json.push_back("--json");
  r = cli(json);
  EXPECT_TRUE(contains(r.out, "\"type\":\"note\",\"message\":\"all 2 [[hosts]] entries")) << r.out;
  rpi::test::write_file(state, "three\n");
  r = cli(base);
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, state.string()) && contains(r.err, "'three'")) << r.err;
  auto first = base;
  first.insert(first.end(), {"--first", "3"});
  r = cli(first);
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "--first 3 is beyond the 2 [[hosts]] entries")) << r.err;
  // A state file that cannot be written is an error before any card, not after the first.
  auto unwritable = base;
  unwritable[6] = (d / "no-such-dir" / "next-card").string();
  r = cli(unwritable);
  EXPECT_NE(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "no-such-dir")) << r.err;
  EXPECT_FALSE(contains(r.err, "watching for cards")) << r.err;
  auto folder = base;
  folder[6] = d.path().string();
  r = cli(folder);
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "--state " + d.path().string() + " is a folder")) << r.err;
}

// watch --dry-run: the cards a station would write from where --state says it is,
// without a terminal or --yes, and without touching the state file or any device.
TEST(Cli, WatchDryRunListsTheCardsToComeAndWritesNothing) {
  TempDir d;
  const fs::path spec = d / "lab.toml", state = d / "next-card", known = d / "known_hosts";
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"lab\"\n\n[[hosts]]\nhostname = \"lab-a\"\n\n[[hosts]]\n"
                        "hostname = \"lab-b\"\n\n[[hosts]]\nhostname = \"lab-c\"\n");
  rpi::test::write_file(state, "2\n");
  auto r = cli({"watch", "--spec", spec.string(), "--tarball", tarball().string(), "--state", state.string(),
                "--known-hosts", known.string(), "--dry-run"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "card 2: lab-b\n    card 3: lab-c\n")) << r.out;
  EXPECT_FALSE(contains(r.out, "lab-a")) << r.out;
  EXPECT_TRUE(contains(r.out, "stops after card 3")) << r.out;
  EXPECT_TRUE(contains(r.out, "needs --yes")) << r.out;
  EXPECT_FALSE(contains(r.err, "watching for cards")) << r.err;
  EXPECT_EQ(rpi::test::read_file(state), "2\n");
  EXPECT_FALSE(fs::exists(known));
  // Templated hostnames go on without end; --count bounds them; --json says the same.
  r = cli({"watch", "--spec", example("fleet.toml").string(), "--tarball", tarball().string(), "--first", "5",
           "--count", "2", "--dry-run", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "\"first\":5")) << r.out;
  EXPECT_TRUE(contains(r.out, "\"last\":6")) << r.out;
  EXPECT_TRUE(contains(r.out, "\"index\":6")) << r.out;
  EXPECT_FALSE(contains(r.out, "\"index\":7")) << r.out;
}

TEST(Cli, EveryExampleInDocsSpecMdLoads) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  const fs::path script = rpi::test::source_dir() / "tests/cli/spec_doc_examples.py";
  const fs::path doc = rpi::test::source_dir() / "docs/spec.md";
  auto r =
      rpi::test::run({"python3", script.string(), rpi::test::cli_path().string(), doc.string(), (d / "ok").string()});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, ", 0 rejected")) << r.out;
  // Negative control: the same check rejects a doc whose example the loader refuses.
  std::string text = rpi::test::read_file(doc);
  std::size_t at = text.find("`\"Europe/Berlin\"`");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 17, "`\"Mars/Olympus\"`");
  rpi::test::write_file(d / "broken.md", text);
  auto b = rpi::test::run({"python3", script.string(), rpi::test::cli_path().string(), (d / "broken.md").string(),
                           (d / "broken").string()});
  EXPECT_EQ(b.exit_code, 1) << b.out;
  EXPECT_TRUE(contains(b.out, "Mars/Olympus")) << b.out;
}

// Alpine's initramfs installs packages without network: what the tarball's
// apks/ lacks is skipped at boot. The build names exactly those (package names
// with dashes, versions and tags included), and says nothing when the kernel
// command line gives the initramfs a network.
TEST(Cli, PackagesMissingFromTheBootRepositoryAreNamed) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  // The fixture's apks/ holds pkg000..pkg095; add a name with dashes.
  const fs::path tb = d / "alpine-rpi-3.22.2-aarch64.tar.gz";
  auto py = rpi::test::run({"python3", "-c",
                            "import io, sys, tarfile\n"
                            "src, dst = sys.argv[1], sys.argv[2]\n"
                            "with tarfile.open(src) as i, tarfile.open(dst, 'w:gz') as o:\n"
                            "    for m in i.getmembers():\n"
                            "        o.addfile(m, i.extractfile(m) if m.isfile() else None)\n"
                            "    m = tarfile.TarInfo('./apks/aarch64/openssh-server-common-9.9_p2-r0.apk')\n"
                            "    m.size = 3\n"
                            "    o.addfile(m, io.BytesIO(b'apk'))\n",
                            tarball().string(), tb.string()});
  ASSERT_EQ(py.exit_code, 0) << py.err;
  auto build = [&](const std::string& extra) {
    fs::path spec = d / "pi.toml";
    rpi::test::write_file(spec,
                          "[system]\nhostname = \"pi\"\n[apk]\npackages = [\"pkg001\", \"chromium\", "
                          "\"openssh-server-common\", \"cage@edge\", \"seatd>=0.8\"]\n" +
                              extra);
    return cli({"--spec", spec.string(), "--tarball", tb.string(), "--output", (d / "pi.img").string()});
  };
  auto r = build("");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err,
                       "warning: [apk].packages chromium, cage, seatd are not in the card's boot repository "
                       "(apks/): the Pi installs them only once its network is up"))
      << r.err;
  EXPECT_TRUE(contains(r.err, "downloading again at every boot; [apk] cache = true keeps them on the card")) << r.err;
  // With the card's apk cache it is the expected course: a note.
  auto cached = build("cache = true\n");
  ASSERT_EQ(cached.exit_code, 0) << cached.err;
  EXPECT_FALSE(contains(cached.err, "warning: [apk]")) << cached.err;
  EXPECT_TRUE(contains(cached.err, "then from the card's apk cache at every boot")) << cached.err;
  auto wired = build("[boot]\ncmdline = [\"ip=dhcp\"]\n");
  ASSERT_EQ(wired.exit_code, 0) << wired.err;
  EXPECT_FALSE(contains(wired.err, "boot repository")) << wired.err;
}

// --apkovl: no spec names the host, so the apkovl's etc/hostname does (its
// file name when there is no valid one), in card-done, the build result and
// the lines that list the cards.
TEST(Cli, ApkovlCardsAreNamedByTheirEtcHostname) {
  RPI_REQUIRE_TOOL("python3");
  RPI_REQUIRE_TOOL("mdir");
  RPI_REQUIRE_TOOL("busybox");
  TempDir d;
  auto make = [&](const std::string& name, const std::string& hostname_file) {
    fs::path out = d / name;
    auto r = rpi::test::run({"python3", (rpi::test::source_dir() / "tests/partition/make_apkovl.py").string(),
                             "hostname", out.string(), hostname_file});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return out;
  };
  const fs::path named = make("mine.apkovl.tar.gz", "kiosk-07\n");
  // What the Pi's tar unpacks as etc/hostname (the oracle for the name).
  auto bb = rpi::test::run({"busybox", "tar", "-xzOf", named.string(), "etc/hostname"});
  ASSERT_EQ(bb.exit_code, 0) << bb.err;
  ASSERT_EQ(bb.out, "kiosk-07\n");
  fs::path card = d / "card.bin";
  ASSERT_EQ(truncate((rpi::test::write_file(card, ""), card).c_str(), 256 << 20), 0);
  auto hostname_in = [](const std::string& out, const std::string& type) {
    auto r = rpi::test::run({"python3", "-c",
                             "import json,sys\n"
                             "for l in sys.stdin:\n"
                             "    o=json.loads(l)\n"
                             "    if o['type']==sys.argv[1] and 'hostname' in o: print(o['hostname'])\n",
                             type},
                            out);
    EXPECT_EQ(r.exit_code, 0) << r.err << out;
    return r.out;
  };

  auto plan =
      cli({"--tarball", tarball().string(), "--apkovl", named.string(), "--device", card.string(), "--dry-run"});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_TRUE(contains(plan.out, "card 1: device " + card.string() + " (256 MiB) ← kiosk-07\n")) << plan.out;
  // On the card it is named after its host, as `lbu commit` on the Pi names it.
  EXPECT_TRUE(contains(plan.out, "adds /kiosk-07.apkovl.tar.gz")) << plan.out;

  auto dev =
      cli({"--tarball", tarball().string(), "--apkovl", named.string(), "--device", card.string(), "--yes", "--json"});
  ASSERT_EQ(dev.exit_code, 0) << dev.err;
  EXPECT_EQ(hostname_in(dev.out, "card-done"), "kiosk-07\n") << dev.out;
  const std::string root_dir = rpi::test::run({"mdir", "-i", card.string() + "@@8M", "::/"}).out;
  EXPECT_TRUE(contains(root_dir, "kiosk-07 apkovl.tar.gz") || contains(root_dir, "kiosk-07.apkovl.tar.gz")) << root_dir;
  EXPECT_FALSE(contains(root_dir, "mine.apkovl.tar.gz")) << root_dir;

  auto img =
      cli({"--tarball", tarball().string(), "--apkovl", named.string(), "--output", (d / "o.img").string(), "--json"});
  ASSERT_EQ(img.exit_code, 0) << img.err;
  EXPECT_EQ(hostname_in(img.out, "card-done"), "kiosk-07\n") << img.out;
  EXPECT_EQ(hostname_in(img.out, "build"), "kiosk-07\n") << img.out;

  // No etc/hostname, or one that is no host name: the file name, as before.
  for (const auto& [name, text] :
       {std::pair<std::string, std::string>{"bad.apkovl.tar.gz", "not_a_host!\n"}, {"blank.apkovl.tar.gz", ""}}) {
    fs::path p = make(name, text);
    auto r =
        cli({"--tarball", tarball().string(), "--apkovl", p.string(), "--device", card.string(), "--yes", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(hostname_in(r.out, "card-done"), name + "\n") << r.out;
  }
}
