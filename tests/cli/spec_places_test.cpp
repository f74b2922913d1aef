// Spec errors found outside the spec loader ([apk].packages against the
// repositories' indexes, [system].keymap against the tarball's kbd-bkeymaps,
// fetch --spec's own [alpine] reader) and the spec's warnings are shown as the
// loader's errors are: the message as before, then the spec's line with a
// caret under the place; in --json the error event gives file, line and
// column. A line that may hold a secret is never shown. Oracles: the spec's
// text as written here (its lines and columns counted by hand).
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "mirror_fixture.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using rpi::test::cli;
using rpi::test::TempDir;

namespace {

bool has(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// A JSON string's start: `s` quoted, without its closing quote.
std::string quoted_prefix(const std::string& s) {
  const std::string q = quoted(s);
  return q.substr(0, q.size() - 1);
}

// The line under an excerpt: the caret under `column` (1-based) and `width` - 1 tildes.
std::string caret(std::size_t column, std::size_t width) {
  return "      | " + std::string(column - 1, ' ') + "^" + std::string(width - 1, '~') + "\n";
}

// The fields --json gives a spec error's place, as the error event writes them.
std::string json_place(const std::string& file, std::size_t line, std::size_t column) {
  return ",\"file\":" + quoted(file) + ",\"line\":" + std::to_string(line) + ",\"column\":" + std::to_string(column);
}

}  // namespace

// ---- [apk].packages: a name none of the card's repositories has ----

TEST(SpecPlaces, AnUnknownPackageShowsItsLineWithACaretAndItsPlaceInJson) {
  if (!rpi::test::have_tool("python3")) GTEST_SKIP() << "tool not installed: python3 (writes the test mirror)";
  TempDir d;
  rpi::test::MirrorTree tree(d.path());
  const fs::path spec = d / "pi.toml";
  // Line 7, "chromiun" at column 21.
  rpi::test::write_file(spec, "[alpine]\nversion = \"3.22\"\nmirror = \"" + tree.root.string() +
                                  "\"\n[system]\nhostname = \"pi\"\n[apk]\npackages = [\"cage\", \"chromiun\"]\n");
  const std::string cache = (d / "cache").string();
  auto r = cli({"check", "--spec", spec.string(), "--packages", "--cache-dir", cache});
  ASSERT_EQ(r.exit_code, 2) << r.err;
  const std::string message =
      spec.string() + ":7:21: [apk].packages chromiun (did you mean 'chromium'?) is in none of ";
  ASSERT_TRUE(has(r.err, "rpi-provision: error: " + message)) << r.err;
  EXPECT_TRUE(has(r.err,
                  "Correct the name, or add the repository that has it to [apk].repositories\n"
                  "    7 | packages = [\"cage\", \"chromiun\"]\n" +
                      caret(21, 10)))
      << r.err;

  auto j = cli({"--json", "check", "--spec", spec.string(), "--packages", "--cache-dir", cache});
  ASSERT_EQ(j.exit_code, 2) << j.err;
  EXPECT_TRUE(has(j.out, "{\"type\":\"error\",\"code\":\"spec\",\"message\":" + quoted_prefix(message))) << j.out;
  EXPECT_TRUE(has(j.out, json_place(spec.string(), 7, 21) + "}\n")) << j.out;
  EXPECT_FALSE(has(j.out, "packages = [")) << "no excerpt in JSON\n" << j.out;
}

// ---- [system].keymap: one the tarball's kbd-bkeymaps lacks ----

TEST(SpecPlaces, AnUnknownKeymapShowsItsLineWithACaretAndItsPlaceInJson) {
  TempDir d;
  const fs::path tarball = rpi::test::fixture_tarball({"--size-mb", "4", "--kbd-bkeymaps"});
  const fs::path spec = d / "kiosk.toml";
  // Line 3, the value at column 10.
  rpi::test::write_file(
      spec, "[system]\nhostname = \"pi\"\nkeymap = \"de de-nodeadkey\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  const std::vector<std::string> args{"--spec",   spec.string(),           "--tarball", tarball.string(),
                                      "--output", (d / "pi.img").string(), "--size",    "64MiB"};
  auto r = cli(args);
  ASSERT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(has(r.err, "rpi-provision: error: " + spec.string() +
                             ":3:10: [system].keymap \"de de-nodeadkey\" is not in Alpine 3.22.2's kbd-bkeymaps: the "
                             "Pi's keyboard would stay US (did you mean \"de de-nodeadkeys\"?)\n"
                             "    3 | keymap = \"de de-nodeadkey\"\n" +
                             caret(10, 17)))
      << r.err;
  EXPECT_FALSE(fs::exists(d / "pi.img"));

  std::vector<std::string> json{"--json"};
  json.insert(json.end(), args.begin(), args.end());
  auto j = cli(json);
  ASSERT_EQ(j.exit_code, 2) << j.err;
  EXPECT_TRUE(has(j.out, "{\"type\":\"error\",\"code\":\"spec\",\"message\":" +
                             quoted_prefix(spec.string() + ":3:10: [system].keymap \"de de-nodeadkey\" is not in")))
      << j.out;
  EXPECT_TRUE(has(j.out, json_place(spec.string(), 3, 10) + "}\n")) << j.out;
}

// ---- [alpine].version: a release the mirror lacks, a tarball of another branch ----

TEST(SpecPlaces, AReleaseTheMirrorLacksShowsTheVersionLineWithACaretAndItsPlaceInJson) {
  if (!rpi::test::have_tool("python3")) GTEST_SKIP() << "tool not installed: python3 (writes the test mirror)";
  TempDir d;
  rpi::test::MirrorTree tree(d.path());
  const fs::path spec = d / "pi.toml";
  // Line 2, the value at column 11.
  rpi::test::write_file(
      spec, "[alpine]\nversion = \"3.99\"\nmirror = \"" + tree.root.string() + "\"\n[system]\nhostname = \"pi\"\n");
  const std::vector<std::string> args{"--spec",      spec.string(),         "--output", (d / "pi.img").string(),
                                      "--cache-dir", (d / "cache").string()};
  auto r = cli(args);
  ASSERT_EQ(r.exit_code, 2) << r.err;
  const std::string message = spec.string() + ":2:11: no release index for Alpine 3.99";
  EXPECT_TRUE(has(r.err, "rpi-provision: error: " + message)) << r.err;
  EXPECT_TRUE(has(r.err, "\n    2 | version = \"3.99\"\n" + caret(11, 6))) << r.err;
  EXPECT_FALSE(fs::exists(d / "pi.img"));

  std::vector<std::string> json{"--json"};
  json.insert(json.end(), args.begin(), args.end());
  auto j = cli(json);
  ASSERT_EQ(j.exit_code, 2) << j.err;
  EXPECT_TRUE(has(j.out, "{\"type\":\"error\",\"code\":\"spec\",\"message\":" + quoted_prefix(message))) << j.out;
  EXPECT_TRUE(has(j.out, json_place(spec.string(), 2, 11) + "}\n")) << j.out;
  EXPECT_FALSE(has(j.out, "version = ")) << "no excerpt in JSON\n" << j.out;
}

TEST(SpecPlaces, AVersionOfAnotherBranchThanTheTarballIsWarnedAboutAtItsLine) {
  TempDir d;
  fs::copy_file(rpi::test::fixture_tarball({"--size-mb", "1", "--version", "3.21.4"}), d / "boot.tar.gz");
  const fs::path spec = d / "pi.toml";
  // Line 3, the value at column 11.
  rpi::test::write_file(spec,
                        "[alpine]\ntarball = \"boot.tar.gz\"\nversion = \"3.22\"\n[system]\nhostname = "
                        "\"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  const std::string warning = "warning: " + spec.string() +
                              ":3:11: [alpine].version is \"3.22\", but the tarball is Alpine 3.21.4: the cards' apk "
                              "repositories would follow v3.22";
  const std::string excerpt = "\n    3 | version = \"3.22\"\n" + caret(11, 6);
  auto r = cli({"check", "--spec", spec.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(has(r.err, warning)) << r.err;
  EXPECT_TRUE(has(r.err, excerpt)) << r.err;
  // The build warns alike.
  r = cli({"--spec", spec.string(), "--output", (d / "pi.img").string(), "--size", "64MiB"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(has(r.err, warning)) << r.err;
  EXPECT_TRUE(has(r.err, excerpt)) << r.err;

  auto j = cli({"--json", "check", "--spec", spec.string()});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  EXPECT_TRUE(has(j.out, "{\"type\":\"warning\",\"message\":" +
                             quoted_prefix(spec.string() + ":3:11: [alpine].version is \"3.22\"")))
      << j.out;
  EXPECT_TRUE(has(j.out, json_place(spec.string(), 3, 11) + "}\n")) << j.out;
  EXPECT_FALSE(has(j.out, "| version = ")) << "no excerpt in JSON\n" << j.out;

  // The plan warns as the run would: with its line, and as a JSON event.
  const std::vector<std::string> plan{"--spec", spec.string(), "--output", (d / "plan.img").string(), "--dry-run"};
  r = cli(plan);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(has(r.err, warning)) << r.err;
  EXPECT_TRUE(has(r.err, excerpt)) << r.err;
  EXPECT_FALSE(has(r.out, "warning")) << "not a line of the plan\n" << r.out;
  std::vector<std::string> json_plan{"--json"};
  json_plan.insert(json_plan.end(), plan.begin(), plan.end());
  j = cli(json_plan);
  ASSERT_EQ(j.exit_code, 0) << j.err;
  EXPECT_TRUE(has(j.out, "{\"type\":\"warning\",\"message\":" +
                             quoted_prefix(spec.string() + ":3:11: [alpine].version is \"3.22\"")))
      << j.out;
  EXPECT_TRUE(has(j.out, "\"type\":\"plan\"")) << j.out;
  EXPECT_FALSE(fs::exists(d / "plan.img"));
}

// ---- fetch --spec: its own reader of [alpine] ----

TEST(SpecPlaces, FetchSpecErrorsShowTheirLineWithACaretAndTheirPlaceInJson) {
  TempDir d;
  const fs::path spec = d / "pi.toml";
  // Line 5, the value at column 8.
  rpi::test::write_file(spec, "[system]\nhostname = \"pi\"\n[alpine]\nversion = \"3.22\"\narch = 3\n");
  const std::string cache = (d / "cache").string();
  auto r = cli({"fetch", "--spec", spec.string(), "--offline", "--cache-dir", cache});
  ASSERT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err, "rpi-provision: error: " + spec.string() +
                       ":5:8: alpine.arch must be a string\n"
                       "    5 | arch = 3\n" +
                       caret(8, 1));
  auto j = cli({"--json", "fetch", "--spec", spec.string(), "--offline", "--cache-dir", cache});
  ASSERT_EQ(j.exit_code, 2) << j.err;
  EXPECT_TRUE(has(j.out, "{\"type\":\"error\",\"code\":\"spec\",\"message\":" +
                             quoted(spec.string() + ":5:8: alpine.arch must be a string") +
                             json_place(spec.string(), 5, 8) + "}\n"))
      << j.out;

  // A syntax error: the loader's rule for the line shown.
  rpi::test::write_file(spec, "[alpine]\nversion = 3.22.1\n");
  r = cli({"fetch", "--spec", spec.string(), "--offline", "--cache-dir", cache});
  ASSERT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(has(r.err, "\n    2 | version = 3.22.1\n")) << r.err;

  // An unknown key whose line holds a secret: the message as before, the line
  // cut after the key (its value is never shown).
  rpi::test::write_file(spec, "[alpine]\nversion = \"3.22\"\npassword = \"hunter2hunter2\"\n");
  r = cli({"fetch", "--spec", spec.string(), "--offline", "--cache-dir", cache});
  ASSERT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err, "rpi-provision: error: " + spec.string() +
                       ":3:12: unknown key alpine.password (known: version, arch, mirror, tarball, sha256)\n"
                       "    3 | password = \u2026\n      |            ^\n");
  EXPECT_FALSE(has(r.out + r.err, "hunter2")) << r.out << r.err;
}

// ---- warnings ----

TEST(SpecPlaces, AWarningShowsItsLineUnlessTheLineHoldsASecret) {
  TempDir d;
  const fs::path spec = d / "w.toml";
  // The [boot] table (line 5) is warned about; the psk line (7) holds the secret.
  const std::string secret = "hunter2hunter2";
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n"
                        "[boot]\napkovl_url = \"http://srv/{MAC}.apkovl.tar.gz\"\n[wifi]\nssid = \"x\"\npsk = \"" +
                            secret + "\"\ncountry = \"DE\"\n");
  auto r = cli({"check", "--spec", spec.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(has(r.err, "warning: " + spec.string() + ":5:1: ")) << r.err;
  EXPECT_TRUE(has(r.err, "new SSH host keys at every boot; use host_keys = \"generate\"")) << r.err;
  EXPECT_TRUE(has(r.err, "\n    5 | [boot]\n" + caret(1, 6))) << r.err;
  const std::string psk_warning = "warning: " + spec.string() +
                                  ":9:7: [wifi].psk is written in the spec; prefer { env = \"NAME\" } or { file = "
                                  "\"path\" }\n";
  ASSERT_TRUE(has(r.err, psk_warning)) << r.err;
  const std::string after = r.err.substr(r.err.find(psk_warning) + psk_warning.size());
  EXPECT_FALSE(after.starts_with("    9 |")) << "the psk's line was shown\n" << r.err;
  EXPECT_FALSE(has(r.err, "    9 |")) << r.err;
  EXPECT_FALSE(has(r.out + r.err, secret)) << r.out << r.err;

  // --json: the warning events as before, no excerpt, no secret.
  auto j = cli({"--json", "check", "--spec", spec.string()});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  EXPECT_TRUE(has(j.out, json_place(spec.string(), 5, 1) + "}\n")) << j.out;
  EXPECT_FALSE(has(j.out, "[boot]\"")) << j.out;
  EXPECT_FALSE(has(j.out + j.err, secret)) << j.out << j.err;
}

// An option's own error (a mirror given with --mirror, --verify-signature
// without --keyring) is not placed at the spec's [alpine].version; a mirror
// of the spec is named as the spec's.
TEST(SpecPlaces, AnOptionsErrorIsNotPlacedInTheSpec) {
  TempDir d;
  const fs::path spec = d / "pi.toml";
  rpi::test::write_file(spec, "[alpine]\nversion = \"3.22\"\n[system]\nhostname = \"pi\"\n");
  const std::vector<std::string> run{"--spec",      spec.string(),         "--output", (d / "pi.img").string(),
                                     "--cache-dir", (d / "cache").string()};
  struct Case {
    std::vector<std::string> flags;
    std::string error;
  };
  for (const Case& c : std::vector<Case>{
           {{"--mirror", "ftp://x"}, "rpi-provision: error: unsupported scheme ftp:// in --mirror ftp://x;"},
           {{"--mirror", (d / "none").string()},
            "rpi-provision: error: mirror folder " + (d / "none").string() + " does not exist (--mirror);"},
           {{"--verify-signature", "--mirror", d.path().string()},
            "rpi-provision: error: --verify-signature needs --keyring FILE"}}) {
    std::vector<std::string> args = run;
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    auto r = cli(args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_TRUE(has(r.err, c.error)) << r.err;
    EXPECT_FALSE(has(r.err, "| version")) << r.err;
    args.insert(args.begin(), "--json");
    auto j = cli(args);
    EXPECT_EQ(j.exit_code, 2) << j.err;
    EXPECT_TRUE(has(j.out, "\"code\":\"usage\"")) << j.out;
    EXPECT_FALSE(has(j.out, "\"line\"")) << j.out;
  }
  const std::string none = (d / "none").string();
  rpi::test::write_file(spec, "[alpine]\nversion = \"3.22\"\nmirror = \"" + none + "\"\n[system]\nhostname = \"pi\"\n");
  const std::string named = "mirror folder " + none + " does not exist ([alpine].mirror in " + spec.string() + ");";
  auto r = cli(run);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(has(r.err, named)) << r.err;
  r = cli({"fetch", "--spec", spec.string(), "--cache-dir", (d / "cache").string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(has(r.err, named)) << r.err;
  r = cli({"fetch", "--list", "--spec", spec.string(), "--cache-dir", (d / "cache").string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(has(r.err, named)) << r.err;
}
