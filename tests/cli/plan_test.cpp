// --dry-run against the run it describes: each plan here is compared with
// what the real run then does (the card's partition table read by sfdisk, the
// files read back with mtools, the exit code and the message). Also where
// --mirror and an --apkovl's name end up on the card.
#include <unistd.h>

#include <gtest/gtest.h>

#include <cctype>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "cli_support.hpp"
#include "test_support.hpp"

using rpi::test::cli;
using rpi::test::contains;
using rpi::test::tarball;
using rpi::test::TempDir;
namespace fs = std::filesystem;

namespace {

fs::path card_file(const fs::path& p, long long bytes) {
  rpi::test::write_file(p, "");
  EXPECT_EQ(truncate(p.c_str(), bytes), 0);
  return p;
}

// The first partition's size in MiB, as sfdisk reads the card's MBR.
long long partition_mib(const fs::path& card) {
  auto r = rpi::test::run({"sfdisk", "--json", card.string()});
  std::smatch m;
  if (r.exit_code != 0 || !std::regex_search(r.out, m, std::regex("\"size\": ([0-9]+)"))) return -1;
  return std::stoll(m[1]) * 512 / (1 << 20);
}

std::string json_field(const std::string& out, const std::string& type, const std::string& expr) {
  auto r = rpi::test::run({"python3", "-c",
                           "import json,sys\n"
                           "for l in sys.stdin:\n"
                           "    e=json.loads(l)\n"
                           "    if e['type']==sys.argv[1]: print(eval(sys.argv[2]))\n",
                           type, expr},
                          out);
  EXPECT_EQ(r.exit_code, 0) << r.err << out;
  return r.out;
}

// etc/apk/repositories of the apkovl NAME on the FAT of `image`.
std::string card_repositories(const fs::path& image, const std::string& name) {
  auto r = rpi::test::sh("mtype -i '" + image.string() + "@@8M' '::/" + name + "' | tar -xzOf - etc/apk/repositories");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

}  // namespace

// [boot] size = "max": the plan shows the card's size and the image that fills
// it, as the card then gets it.
TEST(Plan, SizeMaxShowsTheCardsOwnImage) {
  RPI_REQUIRE_TOOL("sfdisk");
  TempDir d;
  const fs::path spec = d / "max.toml", card = card_file(d / "card.bin", 2ll << 30);
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n[boot]\nsize = \"max\"\n");
  std::vector<std::string> args = {"--spec", spec.string(), "--tarball", tarball().string(), "--device", card.string()};
  auto plan_args = args;
  plan_args.push_back("--dry-run");
  auto plan = cli(plan_args);
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_TRUE(contains(plan.out, "card 1: device " + card.string() + " (2 GiB)")) << plan.out;
  EXPECT_TRUE(contains(plan.out, "4 KiB clusters")) << plan.out;
  EXPECT_FALSE(contains(plan.err, "applies to cards")) << plan.err;
  plan_args.push_back("--json");
  auto jplan = cli(plan_args);
  ASSERT_EQ(jplan.exit_code, 0) << jplan.err;
  args.insert(args.end(), {"--yes", "--no-verify"});
  auto run = cli(args);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  // The oracle: the partition the card got (it starts at 8 MiB and ends with the image).
  const long long part = partition_mib(card);
  ASSERT_GT(part, 1024) << "the card was not filled";
  EXPECT_EQ(json_field(jplan.out, "plan", "[(c['image_size'] >> 20, c['cluster_bytes']) for c in e['cards']]"),
            "[(" + std::to_string(part + 8) + ", 4096)]\n")
      << jplan.out;
}

// A card smaller than the automatic size: the plan shows the smaller image it
// gets; cards of one identity no longer all get the smallest card's image.
TEST(Plan, SmallCardsGetTheirOwnSizeInPlanAndRun) {
  RPI_REQUIRE_TOOL("sfdisk");
  TempDir d;
  const fs::path spec = d / "one.toml";
  rpi::test::write_file(spec, "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  const fs::path big = card_file(d / "big.bin", 1ll << 30), small = card_file(d / "small.bin", 300ll << 20);
  std::vector<std::string> args = {"--spec",   spec.string(), "--tarball", tarball().string(),
                                   "--device", big.string(),  "--device",  small.string()};
  auto plan_args = args;
  plan_args.push_back("--dry-run");
  auto plan = cli(plan_args);
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_TRUE(contains(plan.out, "the image fills the card")) << plan.out;
  plan_args.push_back("--json");
  auto jplan = cli(plan_args);
  ASSERT_EQ(jplan.exit_code, 0) << jplan.err;
  args.insert(args.end(), {"--yes", "--no-verify"});
  auto run = cli(args);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const long long big_part = partition_mib(big), small_part = partition_mib(small);
  EXPECT_GT(big_part, small_part) << "the big card got the small card's image";
  EXPECT_LE(small_part + 8, 300);
  EXPECT_EQ(json_field(jplan.out, "plan", "[c['image_size'] >> 20 for c in e['cards']]"),
            "[" + std::to_string(big_part + 8) + ", " + std::to_string(small_part + 8) + "]\n")
      << jplan.out;
  // One identity: the same apkovl on both cards, byte for byte.
  auto a = rpi::test::run({"mtype", "-i", big.string() + "@@8M", "::/pi.apkovl.tar.gz"});
  auto b = rpi::test::run({"mtype", "-i", small.string() + "@@8M", "::/pi.apkovl.tar.gz"});
  EXPECT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
}

// A card too small for the image: the plan fails as the run does, with the same message and exit code.
TEST(Plan, ACardTooSmallFailsThePlanAsTheRun) {
  TempDir d;
  const fs::path spec = d / "one.toml";
  rpi::test::write_file(spec, "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  const fs::path tiny = card_file(d / "tiny.bin", 100ll << 20);
  const std::string msg = "refusing to write " + tiny.string() + ": it has 100 MiB but the image needs 200 MiB";
  std::vector<std::string> args = {"--spec", spec.string(), "--tarball", tarball().string(),
                                   "--size", "200MiB",      "--device",  tiny.string()};
  auto plan_args = args;
  plan_args.push_back("--dry-run");
  auto plan = cli(plan_args);
  args.push_back("--yes");
  auto run = cli(args);
  EXPECT_EQ(run.exit_code, 1) << run.out << run.err;
  EXPECT_TRUE(contains(run.out, msg)) << run.out;
  EXPECT_EQ(plan.exit_code, run.exit_code) << plan.out << plan.err;
  EXPECT_TRUE(contains(plan.out + plan.err, msg)) << plan.out << plan.err;

  // --image: the same.
  const fs::path img = d / "s1.img";
  ASSERT_EQ(
      cli({"--spec", spec.string(), "--tarball", tarball().string(), "--size", "200MiB", "--output", img.string()})
          .exit_code,
      0);
  auto iplan = cli({"--image", img.string(), "--device", tiny.string(), "--dry-run", "--json"});
  auto irun = cli({"--image", img.string(), "--device", tiny.string(), "--yes"});
  EXPECT_EQ(irun.exit_code, 1) << irun.out << irun.err;
  EXPECT_TRUE(contains(irun.out, msg)) << irun.out;
  EXPECT_EQ(iplan.exit_code, 1) << iplan.out << iplan.err;
  EXPECT_TRUE(contains(iplan.out, msg)) << iplan.out;
  // The --image plan lists its cards (docs/json-events.md).
  EXPECT_EQ(json_field(iplan.out, "plan", "[c['target'] for c in e['cards']]"), "['" + tiny.string() + "']\n")
      << iplan.out;
  EXPECT_EQ(rpi::test::read_file(tiny), std::string(100 << 20, '\0')) << "the plan wrote to the card";
}

// The plan checks a local tarball as the run does: gzip, the Alpine boot files, --sha256.
TEST(Plan, ALocalTarballIsCheckedAsTheRunChecksIt) {
  RPI_REQUIRE_TOOL("tar");
  TempDir d;
  const fs::path spec = d / "one.toml";
  rpi::test::write_file(spec, "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  const fs::path notgz = d / "notgz.tar.gz", notrpi = d / "notrpi.tar.gz";
  fs::create_directories(d / "x");
  rpi::test::write_file(d / "x" / "hello.txt", "hello\n");
  ASSERT_EQ(rpi::test::run({"tar", "-cf", notgz.string(), "-C", (d / "x").string(), "hello.txt"}).exit_code, 0);
  ASSERT_EQ(rpi::test::run({"tar", "-czf", notrpi.string(), "-C", (d / "x").string(), "hello.txt"}).exit_code, 0);
  struct Case {
    std::vector<std::string> extra;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--tarball", notgz.string()}, "is not gzip-compressed"},
      {{"--tarball", notrpi.string()}, "does not look like an Alpine Raspberry Pi tarball"},
      {{"--tarball", tarball().string(), "--sha256", std::string(64, 'a')},
       "expected " + std::string(64, 'a') + "; refusing to use it"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = {"--spec", spec.string(), "--output", (d / "o.img").string()};
    args.insert(args.end(), c.extra.begin(), c.extra.end());
    auto run = cli(args);
    args.push_back("--dry-run");
    auto plan = cli(args);
    EXPECT_EQ(run.exit_code, 1) << c.message << run.err;
    EXPECT_TRUE(contains(run.err, c.message)) << run.err;
    EXPECT_EQ(plan.exit_code, run.exit_code) << c.message << plan.out << plan.err;
    const auto error_line = [](const std::string& err) {
      const auto at = err.find("rpi-provision: error: ");
      return at == std::string::npos ? std::string() : err.substr(at, err.find('\n', at) - at);
    };
    EXPECT_EQ(error_line(plan.err), error_line(run.err)) << "the plan's message differs from the run's";
    EXPECT_FALSE(error_line(plan.err).empty()) << plan.err;
    EXPECT_FALSE(fs::exists(d / "o.img"));
  }
}

// "edits /cmdline.txt" only when the card's cmdline.txt differs from the
// tarball's; the tarball's own apkovl is named as left out.
TEST(Plan, EditsAndLeftOutFilesAreThoseOfTheRun) {
  RPI_REQUIRE_TOOL("mtype");
  RPI_REQUIRE_TOOL("tar");
  TempDir d;
  const std::string original = rpi::test::run({"tar", "-xzOf", tarball().string(), "./cmdline.txt"}).out;
  ASSERT_FALSE(original.empty());
  for (const std::string boot : {"", "[boot]\ncmdline = [\"quiet\"]\n"}) {
    const fs::path spec = d / "s.toml", img = d / "s.img";
    rpi::test::write_file(spec, "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n" + boot);
    auto plan = cli({"--spec", spec.string(), "--tarball", tarball().string(), "--output", img.string(), "--dry-run"});
    ASSERT_EQ(plan.exit_code, 0) << plan.err;
    auto run = cli({"--spec", spec.string(), "--tarball", tarball().string(), "--output", img.string()});
    ASSERT_EQ(run.exit_code, 0) << run.err;
    const std::string on_card = rpi::test::run({"mtype", "-i", img.string() + "@@8M", "::/cmdline.txt"}).out;
    EXPECT_EQ(contains(plan.out, "edits /cmdline.txt"), on_card != original) << boot << plan.out;
    EXPECT_TRUE(contains(plan.out, "leaves out the tarball's rpi.apkovl.tar.gz")) << plan.out;
    EXPECT_TRUE(contains(run.out, "left out of the tarball: rpi.apkovl.tar.gz")) << run.out;
    fs::remove(img);
    fs::remove(fs::path(img.string() + ".bmap"));
  }
}

namespace {

// A tarball of tests/partition/make_tarball.py: the Alpine-like boot tree with one twist.
fs::path crafted_tarball(const std::string& kind, const TempDir& d) {
  const fs::path out = d / (kind + ".tar.gz");
  auto r = rpi::test::run(
      {"python3", (rpi::test::source_dir() / "tests/partition/make_tarball.py").string(), kind, out.string()});
  EXPECT_EQ(r.exit_code, 0) << kind << ": " << r.err;
  return out;
}

// The "rpi-provision: error: ..." line of `err`, or "".
std::string error_line(const std::string& err) {
  const auto at = err.find("rpi-provision: error: ");
  return at == std::string::npos ? std::string() : err.substr(at, err.find('\n', at) - at);
}

// The text of the first line of `out` that holds `what`, after "warning: ", or "".
std::string warning_with(const std::string& out, const std::string& what) {
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (contains(line, what) && contains(line, "warning: ")) return line.substr(line.find("warning: ") + 9);
  return "";
}

// A spec whose cards get a changed cmdline.txt.
fs::path editing_spec(const TempDir& d) {
  const fs::path spec = d / "edit.toml";
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n[boot]\ncmdline = "
                        "[\"consoleblank=0\"]\n");
  return spec;
}

struct TarballCase {
  const char* kind;     // of make_tarball.py
  const char* message;  // what the run says
  bool force = false;
};

void PrintTo(const TarballCase& c, std::ostream* os) {
  *os << c.kind << (c.force ? " --force" : "");
}

class PlanOnATarball : public ::testing::TestWithParam<TarballCase> {};

}  // namespace

// Each of these tarballs the plan once judged otherwise than the run (it
// passed it, or refused it with another message): both read it the same way
// now (partition::scan_tarball), and refuse it with one message and exit code.
TEST_P(PlanOnATarball, FailsAsTheRunFails) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  const TarballCase& c = GetParam();
  std::vector<std::string> args = {"--spec",    editing_spec(d).string(),
                                   "--tarball", crafted_tarball(c.kind, d).string(),
                                   "--output",  (d / "o.img").string()};
  if (c.force) args.push_back("--force");
  auto run = cli(args);
  args.push_back("--dry-run");
  auto plan = cli(args);
  EXPECT_EQ(run.exit_code, 1) << run.out << run.err;
  EXPECT_TRUE(contains(error_line(run.err), c.message)) << run.err;
  EXPECT_EQ(plan.exit_code, run.exit_code) << plan.out << plan.err;
  EXPECT_EQ(error_line(plan.err), error_line(run.err)) << "the plan's message differs from the run's";
  EXPECT_FALSE(fs::exists(d / "o.img"));
}

INSTANTIATE_TEST_SUITE_P(
    FormerDifferences, PlanOnATarball,
    ::testing::Values(
        // The gzip data: the plan read it with libarchive's filter, which checks no CRC.
        TarballCase{"crc", "is corrupt (gzip: incorrect data check)"},
        TarballCase{"isize", "is corrupt (gzip: incorrect length check)"},
        TarballCase{"trailing-garbage", "has unexpected data after its gzip stream"},
        TarballCase{"truncated-gzip", "is truncated (the gzip data ends early)"},
        TarballCase{"zero-bytes", "is empty, not a gzip-compressed tar archive"},
        TarballCase{"folder", "folder.tar.gz is not a regular file"},
        TarballCase{"not-tar", "is not a gzip-compressed tar archive (Unrecognized archive format)"},
        TarballCase{"empty", "is an empty archive"}, TarballCase{"empty", "is an empty archive", true},
        // The members' names and types: the plan checked none.
        TarballCase{"absolute", "has an absolute path"}, TarballCase{"dotdot", "has a '..' component"},
        TarballCase{"deep", "is nested deeper than 32"}, TarballCase{"control-char", "has a control character"},
        TarballCase{"bad-utf8", "not valid UTF-8"}, TarballCase{"symlink", "is a symbolic link"},
        TarballCase{"device", "is a device node"}, TarballCase{"fifo", "is a FIFO"},
        TarballCase{"hardlink-missing", "which is not a file earlier in the archive"},
        TarballCase{"huge-entry", "more than FAT's file size limit"},
        // FAT names, matched without case as on the card.
        TarballCase{"colon", "which FAT cannot store"}, TarballCase{"trailing-dot", "a trailing dot or space"},
        TarballCase{"duplicate", "appears twice"}, TarballCase{"case-collision", "differ only by case"},
        TarballCase{"nonascii-collision", "'Ärger.txt' and 'ärger.txt'"},
        // The file the spec edits: the plan skipped one over 1 MiB; a hard link was not edited by the run.
        TarballCase{"big-cmdline", "is too large to edit (over 1 MiB)"},
        TarballCase{"hardlink-cmdline", "is a hard link to './boot/cmdline.orig', and the changes the spec makes"}),
    [](const ::testing::TestParamInfo<TarballCase>& i) {
      std::string n = std::string(i.param.kind) + (i.param.force ? "_force" : "");
      for (char& ch : n)
        if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return n;
    });

// CMDLINE.TXT is cmdline.txt on FAT: the plan said it is edited, and the run
// now edits it (it left it as it was).
TEST(Plan, AnUpperCaseCmdlineIsEditedAsThePlanSays) {
  RPI_REQUIRE_TOOL("python3");
  RPI_REQUIRE_TOOL("mtype");
  TempDir d;
  const fs::path img = d / "o.img";
  std::vector<std::string> args = {"--spec",    editing_spec(d).string(),
                                   "--tarball", crafted_tarball("upper-cmdline", d).string(),
                                   "--output",  img.string()};
  auto run = cli(args);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  args.push_back("--dry-run");
  auto plan = cli(args);
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_TRUE(contains(plan.out, "edits /cmdline.txt")) << plan.out;
  const auto card = rpi::test::run({"mtype", "-i", img.string() + "@@8M", "::/CMDLINE.TXT"});
  EXPECT_EQ(card.out, "modules=loop,squashfs,sd-mod,usb-storage quiet console=tty1 consoleblank=0\n") << card.err;
}

// A folder named cmdline.txt (with --force): the same warning from plan and run.
TEST(Plan, AnEditWithoutItsFileWarnsInPlanAndRunAlike) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  std::vector<std::string> args = {
      "--spec",   editing_spec(d).string(), "--tarball", crafted_tarball("dir-cmdline", d).string(),
      "--output", (d / "o.img").string(),   "--force"};
  auto run = cli(args);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  args.push_back("--dry-run");
  auto plan = cli(args);
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  const std::string w = warning_with(run.err, "has no cmdline.txt");
  EXPECT_EQ(w, "the tarball has no cmdline.txt: the changes the spec makes to it are not applied") << run.err;
  EXPECT_EQ(warning_with(plan.out + plan.err, "has no cmdline.txt"), w) << plan.out << plan.err;
}

// ".//rpi.apkovl.tar.gz" is at the root: the plan names it as left out, as the run leaves it out.
TEST(Plan, AnApkovlNamedWithADoubleSlashIsLeftOutByPlanAndRun) {
  RPI_REQUIRE_TOOL("python3");
  RPI_REQUIRE_TOOL("mdir");
  TempDir d;
  const fs::path img = d / "o.img";
  std::vector<std::string> args = {"--spec",    editing_spec(d).string(),
                                   "--tarball", crafted_tarball("nested-apkovl", d).string(),
                                   "--output",  img.string()};
  auto run = cli(args);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  args.push_back("--dry-run");
  auto plan = cli(args);
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_TRUE(contains(run.out, "left out of the tarball: rpi.apkovl.tar.gz")) << run.out;
  EXPECT_TRUE(contains(plan.out, "leaves out the tarball's rpi.apkovl.tar.gz")) << plan.out;
  const std::string ls = rpi::test::run({"mdir", "-b", "-i", img.string() + "@@8M", "::/"}).out;
  EXPECT_FALSE(contains(ls, "rpi.apkovl.tar.gz")) << ls;
  EXPECT_TRUE(contains(ls, "pi.apkovl.tar.gz")) << ls;
}

// The card's own files replace the tarball's root files of their names (in
// any case), and the plan reads the tarball with the card's files as the run
// does: a tarball holding usercfg.txt and USERCFG.TXT, and an apkovl of the
// card's name in either case, makes a card whose spec writes usercfg.txt
// ([boot].config; the plan refused it), and is refused for a card whose spec
// does not, with one message from plan and run.
TEST(Plan, TheCardsOwnFilesReplaceTheTarballsInPlanAndRun) {
  RPI_REQUIRE_TOOL("tar");
  RPI_REQUIRE_TOOL("mtype");
  TempDir d;
  const fs::path tree = d / "tree";
  fs::create_directories(tree / "boot");
  const std::vector<std::pair<std::string, std::string>> files = {
      {"cmdline.txt", "modules=loop,squashfs quiet\n"},
      {"config.txt", "kernel=boot/vmlinuz-rpi\ninclude usercfg.txt\n"},
      {"boot/vmlinuz-rpi", "kernel\n"},
      {"usercfg.txt", "dtoverlay=lower\n"},
      {"USERCFG.TXT", "dtoverlay=upper\n"},
      {"pi.apkovl.tar.gz", "the tarball's own\n"},
      {"PI.APKOVL.TAR.GZ", "the tarball's own too\n"}};
  for (const auto& [name, data] : files) rpi::test::write_file(tree / name, data);
  const fs::path tb = d / "clash.tar.gz";
  ASSERT_EQ(rpi::test::run({"tar", "-czf", tb.string(), "-C", tree.string(), "."}).exit_code, 0);
  const fs::path img = d / "o.img";
  for (const bool own_usercfg : {true, false}) {
    SCOPED_TRACE(own_usercfg ? "the spec writes usercfg.txt" : "no usercfg.txt of the card's");
    const fs::path spec = d / "s.toml";
    rpi::test::write_file(spec, std::string("[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n") +
                                    (own_usercfg ? "[boot]\nconfig = [\"dtparam=audio=on\"]\n" : ""));
    std::vector<std::string> args = {"--spec", spec.string(), "--tarball", tb.string(), "--output", img.string()};
    args.push_back("--dry-run");
    auto plan = cli(args);
    args.pop_back();
    auto run = cli(args);
    EXPECT_EQ(plan.exit_code, run.exit_code) << plan.out << plan.err << run.err;
    EXPECT_EQ(error_line(plan.err), error_line(run.err)) << "the plan's message differs from the run's";
    if (!own_usercfg) {
      EXPECT_EQ(run.exit_code, 1);
      EXPECT_TRUE(contains(error_line(run.err), "'USERCFG.TXT' and 'usercfg.txt'")) << run.err;
      EXPECT_TRUE(contains(error_line(run.err), "differ only by case")) << run.err;
      EXPECT_FALSE(fs::exists(img));
      continue;
    }
    ASSERT_EQ(run.exit_code, 0) << run.err;
    EXPECT_TRUE(contains(plan.out, "adds /usercfg.txt")) << plan.out;
    for (const char* a : {"pi.apkovl.tar.gz", "PI.APKOVL.TAR.GZ"}) {
      EXPECT_TRUE(contains(plan.out, std::string("leaves out the tarball's ") + a)) << plan.out;
      EXPECT_TRUE(contains(run.out, std::string("left out of the tarball: ") + a)) << run.out;
    }
    // On the card: its own usercfg.txt and apkovl, none of the tarball's.
    const auto usercfg = rpi::test::run({"mtype", "-i", img.string() + "@@8M", "::/usercfg.txt"});
    EXPECT_TRUE(contains(usercfg.out, "dtparam=audio=on")) << usercfg.out << usercfg.err;
    EXPECT_FALSE(contains(usercfg.out, "dtoverlay=")) << usercfg.out;
    const auto hostname =
        rpi::test::sh("mtype -i '" + img.string() + "@@8M' ::/pi.apkovl.tar.gz | tar -xzOf - etc/hostname");
    EXPECT_EQ(hostname.out, "pi\n") << hostname.err;
    fs::remove(img);
    fs::remove(fs::path(img.string() + ".bmap"));
  }
}

// --mirror overrides [alpine].mirror on the card as the spec's mirror would;
// [apk].repositories given in the spec stay as written.
TEST(Plan, MirrorOptionReachesTheCardsRepositories) {
  RPI_REQUIRE_TOOL("mtype");
  RPI_REQUIRE_TOOL("tar");
  TempDir d;
  const fs::path spec = d / "m.toml", img = d / "m.img";
  rpi::test::write_file(
      spec, "[alpine]\nversion = \"3.22\"\n[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  const std::string mirror = "https://mirror.example.org/alpine";
  auto r = cli(
      {"--spec", spec.string(), "--tarball", tarball().string(), "--output", img.string(), "--mirror", mirror + "/"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string repos = card_repositories(img, "pi.apkovl.tar.gz");
  EXPECT_TRUE(contains(repos, mirror + "/v3.22/main\n")) << repos;
  EXPECT_FALSE(contains(repos, "dl-cdn")) << repos;
  // The same as the spec's own [alpine].mirror gives.
  const fs::path spec2 = d / "m2.toml", img2 = d / "m2.img";
  rpi::test::write_file(spec2, "[alpine]\nversion = \"3.22\"\nmirror = \"" + mirror +
                                   "\"\n[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  ASSERT_EQ(cli({"--spec", spec2.string(), "--tarball", tarball().string(), "--output", img2.string()}).exit_code, 0);
  EXPECT_EQ(card_repositories(img2, "pi.apkovl.tar.gz"), repos);

  // `apkovl` and `check` too.
  const fs::path ovl = d / "pi.apkovl.tar.gz";
  ASSERT_EQ(cli({"apkovl", "--spec", spec.string(), "-o", ovl.string(), "--mirror", mirror}).exit_code, 0);
  EXPECT_EQ(rpi::test::run({"tar", "-xzOf", ovl.string(), "etc/apk/repositories"}).out, repos);
  auto chk = cli({"check", "--spec", spec.string(), "--mirror", mirror});
  ASSERT_EQ(chk.exit_code, 0) << chk.err;
  EXPECT_TRUE(contains(chk.out, "mirror.example.org")) << chk.out;

  // Explicit repositories stay as written.
  const fs::path spec3 = d / "m3.toml", img3 = d / "m3.img";
  rpi::test::write_file(spec3,
                        "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n[apk]\nrepositories = "
                        "[\"https://own.example.net/main\"]\n");
  ASSERT_EQ(
      cli({"--spec", spec3.string(), "--tarball", tarball().string(), "--output", img3.string(), "--mirror", mirror})
          .exit_code,
      0);
  EXPECT_EQ(card_repositories(img3, "pi.apkovl.tar.gz"), "https://own.example.net/main\n");
}

// --apkovl FILE goes on the card as <hostname>.apkovl.tar.gz, the name
// `lbu commit` on that Pi writes; without a valid etc/hostname it keeps its
// name, with a warning.
TEST(Plan, AnApkovlIsNamedAfterItsHostOnTheCard) {
  RPI_REQUIRE_TOOL("python3");
  RPI_REQUIRE_TOOL("mdir");
  TempDir d;
  auto make = [&](const std::string& name, const std::string& hostname_file) {
    const fs::path out = d / name;
    auto r = rpi::test::run({"python3", (rpi::test::source_dir() / "tests/partition/make_apkovl.py").string(),
                             "hostname", out.string(), hostname_file});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return out;
  };
  const fs::path named = make("s1.apkovl.tar.gz", "pi-lab\n");
  const fs::path img = d / "o.img";
  auto plan = cli({"--tarball", tarball().string(), "--apkovl", named.string(), "--output", img.string(), "--dry-run"});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_TRUE(contains(plan.out, "adds /pi-lab.apkovl.tar.gz")) << plan.out;
  auto r = cli({"--tarball", tarball().string(), "--apkovl", named.string(), "--output", img.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string ls = rpi::test::run({"mdir", "-b", "-i", img.string() + "@@8M", "::/"}).out;
  EXPECT_TRUE(contains(ls, "pi-lab.apkovl.tar.gz")) << ls;
  EXPECT_FALSE(contains(ls, "s1.apkovl.tar.gz")) << ls;
  // The bytes are the file's own.
  EXPECT_EQ(rpi::test::run({"mtype", "-i", img.string() + "@@8M", "::/pi-lab.apkovl.tar.gz"}).out,
            rpi::test::read_file(named));

  const fs::path bad = make("bad.apkovl.tar.gz", "bad_host!\n");
  auto b = cli({"--tarball", tarball().string(), "--apkovl", bad.string(), "--output", img.string(), "--dry-run"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_TRUE(contains(b.out, "adds /bad.apkovl.tar.gz")) << b.out;
  EXPECT_TRUE(contains(b.err, "bad.apkovl.tar.gz keeps its name on the card")) << b.err;
}

// An etc/hostname with Windows line ends gives no valid host name: one
// warning says so, with its fix (dos2unix), and that the file keeps its name
// on the card (there were two, the second without the fix).
TEST(Plan, AnApkovlWithCrLfHostnameGetsOneWarningWithItsFix) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  const fs::path crlf = d / "crlf.apkovl.tar.gz";
  auto made = rpi::test::run({"python3", (rpi::test::source_dir() / "tests/partition/make_apkovl.py").string(),
                              "hostname", crlf.string(), "pi-lab\r\n"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  for (const bool dry_run : {true, false}) {
    SCOPED_TRACE(dry_run ? "--dry-run" : "the build");
    std::vector<std::string> args = {"--tarball",   tarball().string(), "--apkovl",
                                     crlf.string(), "--output",         (d / "o.img").string()};
    if (dry_run) args.push_back("--dry-run");
    auto r = cli(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::istringstream in(r.err);
    std::vector<std::string> warnings;
    for (std::string line; std::getline(in, line);)
      if (contains(line, "warning: ") && contains(line, "crlf.apkovl.tar.gz")) warnings.push_back(line);
    ASSERT_EQ(warnings.size(), 1u) << r.err;
    EXPECT_TRUE(contains(warnings[0], "etc/hostname has Windows (CR LF) line ends")) << warnings[0];
    EXPECT_TRUE(contains(warnings[0], "`dos2unix etc/hostname`")) << warnings[0];
    EXPECT_TRUE(contains(warnings[0], "crlf.apkovl.tar.gz keeps its name on the card")) << warnings[0];
    EXPECT_TRUE(contains(warnings[0], "lbu commit -d")) << warnings[0];
  }
}

// The initramfs takes an apkovl for encrypted when the text after its last
// '.' is not "gz" (alpine-facts §1.6): --apkovl says it keeps its name because
// it is encrypted (it said "no valid etc/hostname" unless a '.' followed
// ".apkovl.tar.gz"); "x.apkovl.tar.gz.gz" is unpacked with tar -z, so it is read.
TEST(Plan, AnApkovlIsEncryptedAsTheInitramfsJudgesItsName) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  const fs::path enc = d / "e.apkovl.tar.gzaes";
  rpi::test::write_file(enc, "Salted__ not read");
  auto r =
      cli({"--tarball", tarball().string(), "--apkovl", enc.string(), "--output", (d / "o.img").string(), "--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "e.apkovl.tar.gzaes keeps its name on the card: it is encrypted")) << r.err;
  EXPECT_FALSE(contains(r.err, "no valid etc/hostname")) << r.err;

  const fs::path gz = d / "g.apkovl.tar.gz.gz";
  auto made = rpi::test::run({"python3", (rpi::test::source_dir() / "tests/partition/make_apkovl.py").string(),
                              "hostname", gz.string(), "pi-gz\n"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  r = cli({"--tarball", tarball().string(), "--apkovl", gz.string(), "--output", (d / "o.img").string(), "--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "adds /pi-gz.apkovl.tar.gz")) << r.out << r.err;
  EXPECT_FALSE(contains(r.err, "encrypted")) << r.err;
}

// A tarball folder usercfg.txt (an entry of its own, or made by a member in
// it) where the card needs its file usercfg.txt ([boot].config): --dry-run
// passed it and the build said "appears twice"; both now refuse it with one
// message that says so, exit 1, and no image is left.
TEST(Plan, ATarballFolderWhereTheCardNeedsItsFileIsRefusedByPlanAndRun) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  const fs::path spec = d / "u.toml";
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n[boot]\nconfig = "
                        "[\"dtparam=audio=on\"]\n");
  for (const std::string kind : {"dir-usercfg", "in-usercfg"}) {
    SCOPED_TRACE(kind);
    const fs::path tb = crafted_tarball(kind, d);
    std::vector<std::string> args = {"--spec",    spec.string(), "--tarball",
                                     tb.string(), "--output",    (d / "o.img").string()};
    auto run = cli(args);
    args.push_back("--dry-run");
    auto plan = cli(args);
    EXPECT_EQ(run.exit_code, 1) << run.out << run.err;
    const std::string folder = kind == "dir-usercfg" ? "usercfg.txt" : "USERCFG.TXT";
    const std::string entry = kind == "dir-usercfg" ? "./usercfg.txt/" : "./USERCFG.TXT/note";
    EXPECT_EQ(error_line(run.err), "rpi-provision: error: " + tb.string() + ": it has a folder '" + folder +
                                       "' (entry '" + entry +
                                       "') where the card needs its own file usercfg.txt; take the folder out of "
                                       "the tarball")
        << run.err;
    EXPECT_EQ(plan.exit_code, run.exit_code) << plan.out << plan.err;
    EXPECT_EQ(error_line(plan.err), error_line(run.err)) << "the plan's message differs from the run's";
    EXPECT_FALSE(fs::exists(d / "o.img"));
    EXPECT_FALSE(fs::exists(d / "o.img.bmap"));
  }
  // Without a usercfg.txt of the card's, the folder is the tarball's own business.
  const fs::path plain = d / "p.toml";
  rpi::test::write_file(plain, "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  auto ok = cli({"--spec", plain.string(), "--tarball", crafted_tarball("dir-usercfg", d).string(), "--output",
                 (d / "o.img").string()});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

// A card beyond the [[hosts]] entries named by [system].hostname's {n} as an
// entry is (pi-{n} for card 3, an entry pi-3): refused by plan and run, before
// any card is touched; fewer cards, or a station's first cards, are fine.
TEST(Plan, ACardNamedByTheTemplateAsAnEntryIsRefused) {
  TempDir d;
  const std::string zeros(64 << 20, '\0');
  for (const char* c : {"c1.bin", "c2.bin", "c3.bin"}) rpi::test::write_file(d / c, zeros);
  rpi::test::write_file(d / "pi.toml", "[system]\nhostname = \"pi-{n}\"\n[[hosts]]\nhostname = \"PI-3\"\n");
  std::vector<std::string> args{"--spec", (d / "pi.toml").string(), "--tarball", tarball().string(), "--yes"};
  for (const char* c : {"c1.bin", "c2.bin", "c3.bin"}) {
    args.push_back("--device");
    args.push_back((d / c).string());
  }
  const std::string error = "card 3 (beyond the 1 [[hosts]] entry of " + (d / "pi.toml").string() +
                            ") would be named pi-3 by [system].hostname's {n}, and so is [[hosts]] entry 1 (card 1)";
  for (bool dry : {true, false}) {
    std::vector<std::string> a = args;
    if (dry) a.push_back("--dry-run");
    auto r = cli(a);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_TRUE(contains(r.err, error)) << r.err;
    for (const char* c : {"c1.bin", "c2.bin", "c3.bin"})
      EXPECT_TRUE(rpi::test::read_file(d / c) == zeros) << c << " was changed";
  }
  auto two = cli({"--spec", (d / "pi.toml").string(), "--tarball", tarball().string(), "--device",
                  (d / "c1.bin").string(), "--device", (d / "c2.bin").string(), "--dry-run"});
  EXPECT_EQ(two.exit_code, 0) << two.err;
}

// A size that does not work names where it came from, --size or [boot] size,
// in the plan's warning and the errors of plan and run.
TEST(Plan, ASizeProblemNamesWhereTheSizeCameFrom) {
  TempDir d;
  const fs::path spec = d / "pi.toml";
  auto run = [&](const std::string& boot, std::vector<std::string> more) {
    rpi::test::write_file(spec, "[system]\nhostname = \"pi\"\n" + boot);
    std::vector<std::string> args{"--spec",           spec.string(), "--tarball",
                                  tarball().string(), "--output",    (d / "pi.img").string()};
    args.insert(args.end(), more.begin(), more.end());
    return cli(args);
  };
  for (bool dry : {true, false}) {
    std::vector<std::string> more;
    if (dry) more.push_back("--dry-run");
    auto r = run("[boot]\nsize = \"4TiB\"\n", more);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_TRUE(contains(r.err, "an image of 4 TiB is too large: a FAT partition holds at most 2 TiB")) << r.err;
    EXPECT_TRUE(contains(r.err, "; set [boot] size to 2097156MiB at most, or leave it out")) << r.err;
    more.insert(more.end(), {"--size", "3TiB"});
    r = run("", more);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_TRUE(contains(r.err, "; use --size 2097156MiB at most, or leave --size out")) << r.err;
    EXPECT_FALSE(fs::exists(d / "pi.img"));
  }
  const fs::path big = rpi::test::fixture_tarball({"--size-mb", "12"});
  rpi::test::write_file(spec, "[system]\nhostname = \"pi\"\n[boot]\nsize = \"17MiB\"\n");
  auto r = cli({"--spec", spec.string(), "--tarball", big.string(), "--output", (d / "pi.img").string(), "--dry-run"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "MiB or more, or leave it out\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "may not fit in 4.0 MiB; set [boot] size to ")) << r.out;
  r = cli({"--spec", spec.string(), "--tarball", big.string(), "--output", (d / "pi.img").string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "the files do not fit")) << r.err;
  EXPECT_TRUE(contains(r.err, "; set [boot] size to ")) << r.err;
  EXPECT_FALSE(fs::exists(d / "pi.img"));
}
