// Spec hardening: no secret under a mistyped key in an excerpt (parsed specs
// and syntax errors), names too long for the apkovl's tar, integers out of
// range, hostnames compared ignoring case, MACs no card has, NUL characters.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "overlay/spec.hpp"
#include "rpi/error.hpp"
#include "test_support.hpp"

using namespace rpi;
using namespace rpi::overlay;
using rpi::test::cli;
using rpi::test::TempDir;

namespace {

const std::string kPi = "[system]\nhostname = \"pi\"\n";

// The problems of a spec that must not load.
std::vector<SpecProblem> problems_of(const std::string& text) {
  try {
    parse_spec(text, "t.toml", ".");
  } catch (const SpecErrors& e) {
    return e.problems();
  }
  ADD_FAILURE() << "loaded: " << text;
  return {};
}

std::string all_of(const std::vector<SpecProblem>& ps) {
  std::string out;
  for (const auto& p : ps) out += p.message + "\n" + p.excerpt + "\n";
  return out;
}

// `check` and the build's --dry-run of `text` as a user runs them, text and
// --json: none shows `secret`.
void expect_cli_hides(const std::string& text, const std::string& secret) {
  TempDir dir;
  rpi::test::write_file(dir / "t.toml", text);
  for (int how = 0; how < 4; ++how) {
    const bool json = how % 2 == 1;
    // check, and the build's --dry-run (which reads the spec first).
    std::vector<std::string> args = how < 2 ? std::vector<std::string>{"check", "--spec", (dir / "t.toml").string()}
                                            : std::vector<std::string>{"--dry-run", "--spec", (dir / "t.toml").string(),
                                                                       "-o", (dir / "x.img").string()};
    if (json) args.insert(args.begin(), "--json");
    auto r = cli(args);
    EXPECT_NE(r.exit_code, 0) << text;
    EXPECT_EQ(r.err.find(secret), std::string::npos) << r.err;
    EXPECT_EQ(r.out.find(secret), std::string::npos) << r.out;
    EXPECT_NE(r.err.size() + r.out.size(), 0u);
  }
}

}  // namespace

// --- 1. excerpts never show the value of an unknown key

TEST(SpecExcerpt, UnknownKeyLineIsCutAfterTheKey) {
  auto ps = problems_of("[system]\nhostnme = \"pi\"\n");
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_EQ(ps[0].excerpt, "hostnme = \u2026");
  EXPECT_EQ(ps[0].column, 1u);
  ps = problems_of(kPi + "[[users]]\nname = \"u\"\npasword = \"hunter2\"\n");
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_EQ(ps[0].excerpt, "pasword = \u2026");
  // A header of an unknown table has no value: shown as it is.
  ps = problems_of("[sytem]\nhostname = \"pi\"\n");
  ASSERT_FALSE(ps.empty());
  EXPECT_EQ(ps[0].excerpt, "[sytem]");
}

TEST(SpecExcerpt, SecretsUnderMistypedKeysNeverShown) {
  const std::vector<std::string> specs = {
      kPi + "[[users]]\nname = \"u\"\npasword = \"hunter2\"\n",
      kPi + "[[users]]\nname = \"u\"\npwd = \"hunter2\"\n",
      kPi + "[[users]]\nname = \"u\"\npw = \"hunter2\"\n",
      kPi + "[[users]]\nname = \"u\"\npin = \"hunter2\"\n",
      kPi + "[[users]]\nname = \"u\"\nkey = \"hunter2\"\n",
      kPi + "[[users]]\nname = \"u\"\nhash = \"hunter2\"\n",
      kPi + "[wifi]\nssid = \"n\"\npwd = \"hunter2\"\n",
      kPi + "[wifi]\nssid = \"n\"\npin = \"hunter2\"\n",
      kPi + "[wifi]\nssid = \"n\"\nkey = \"hunter2\"\n",
      kPi + "[wifi]\nssid = \"n\"\npw = \"hunter2\"\n",
      // Words no list holds, inline, quoted, dotted, and a value over lines.
      kPi + "[[users]]\nname = \"u\"\nlogin = \"hunter2\"\n",
      kPi + "users = [{ name = \"u\", secretword = \"hunter2\" }]\n",
      kPi + "[[users]]\nname = \"u\"\n\"word\" = \"hunter2\"\n",
      kPi + "[[users]]\nname = \"u\"\nword.x = \"hunter2\"\n",
      kPi + "[[users]]\nname = \"u\"\nword = [\"a\",\n\"hunter2\"]\n",
      "[system]\nsystem = { hostnme = \"hunter2\", motd = \"é\" }\n",
  };
  for (const auto& s : specs) {
    SCOPED_TRACE(s);
    const std::string all = all_of(problems_of(s));
    EXPECT_EQ(all.find("hunter2"), std::string::npos) << all;
  }
  // A known key before the unknown one stays; what follows it does not; the
  // columns count characters, not bytes.
  auto ps = problems_of(kPi + "[apk]\npackages = [\"é\"] # é\n[network]\ninterfaces = [{ name = \"é\", word = 1 }]\n");
  bool seen = false;
  for (const auto& p : ps)
    if (p.message.find("unknown key 'word'") != std::string::npos) {
      seen = true;
      EXPECT_EQ(p.excerpt, "interfaces = [{ name = \"é\", word = \u2026");
    }
  EXPECT_TRUE(seen) << all_of(ps);
}

TEST(SpecExcerpt, SyntaxErrorsOnSecretLookingLinesHidden) {
  for (const std::string line :
       {"pasword = \"hunter2\" x", "key = \"hunter2\",", "pwd = \"hunter2\" x", "user_pin = \"hunter2\" x",
        "auth = \"hunter2\" x", "creds = \"hunter2\" x", "otp = \"hunter2\" x", "passphrase2 = \"hunter2\" x"}) {
    SCOPED_TRACE(line);
    auto ps = problems_of(kPi + "[[users]]\nname = \"u\"\n" + line + "\n");
    ASSERT_EQ(ps.size(), 1u);
    EXPECT_EQ(ps[0].line, 5u);
    EXPECT_EQ(ps[0].excerpt, "");
  }
  // Words that only hold one of those are still shown.
  for (const std::string line : {"keymap = \"us\" x", "authorized_keys = \"k\" x", "ssh_authorized_keys = 1 x"}) {
    SCOPED_TRACE(line);
    auto ps = problems_of(kPi + "[[users]]\nname = \"u\"\n" + line + "\n");
    ASSERT_EQ(ps.size(), 1u);
    EXPECT_EQ(ps[0].excerpt, line);
  }
  // And in a parsed spec: a wrong keymap type is shown with its line.
  auto ps = problems_of(kPi + "keymap = 5\n");
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_EQ(ps[0].excerpt, "keymap = 5");
}

TEST(SpecExcerpt, CliHidesSecretsOfMistypedKeys) {
  for (const std::string& s :
       {kPi + "[[users]]\nname = \"u\"\npasword = \"hunter2\"\n", kPi + "[wifi]\nssid = \"n\"\nkey = \"hunter2\"\n",
        kPi + "[[users]]\nname = \"u\"\npasword = \"hunter2\" x\n", kPi + "[wifi]\nssid = \"n\"\nkey = \"hunter2\",\n"})
    expect_cli_hides(s, "hunter2");
  TempDir dir;
  rpi::test::write_file(dir / "t.toml", "[system]\nhostnme = \"pi\"\n");
  auto r = cli({"check", "--spec", (dir / "t.toml").string()});
  EXPECT_NE(r.err.find("    2 | hostnme = \u2026\n      | ^~~~~~~"), std::string::npos) << r.err;
}

// --- 2. names and paths the apkovl's tar can hold

TEST(SpecLimits, LongFilePathsRefused) {
  const std::string long_name(256, 'a');
  auto ps = problems_of(kPi + "[[files]]\npath = \"/etc/" + long_name + "\"\ncontent = \"x\"\n");
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_NE(ps[0].message.find("has a name of 256 bytes"), std::string::npos) << ps[0].message;
  EXPECT_NE(ps[0].message.find("at most 255 bytes"), std::string::npos) << ps[0].message;
  EXPECT_EQ(ps[0].line, 4u);
  std::string deep;
  for (int i = 0; i < 21; ++i) deep += "/" + std::string(200, 'b');
  ps = problems_of(kPi + "[[files]]\npath = \"" + deep + "\"\ncontent = \"x\"\n");
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_NE(ps[0].message.find("is 4221 bytes long, and a path may be at most 4095 bytes"), std::string::npos)
      << ps[0].message;
  // 255 is fine.
  EXPECT_NO_THROW(
      parse_spec(kPi + "[[files]]\npath = \"/etc/" + std::string(255, 'a') + "\"\ncontent = \"x\"\n", "t.toml", "."));
  ps = problems_of(kPi + "[services]\ndefault = [\"" + std::string(256, 's') + "\"]\n");
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_NE(ps[0].message.find("at most 255 bytes"), std::string::npos) << ps[0].message;
  ps = problems_of(kPi + "[lbu]\ninclude = [\"/etc/" + long_name + "\"]\n");
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_NE(ps[0].message.find("at most 255 bytes"), std::string::npos) << ps[0].message;
  ps = problems_of(kPi + "[lbu]\nmedia = \"" + long_name + "\"\n");
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_NE(ps[0].message.find("at most 255 bytes"), std::string::npos) << ps[0].message;
}

// Names longer than ustar's 100 bytes (a 200-byte file name, a 756-byte path)
// are listed whole by busybox tar, which unpacks the apkovl on the Pi, and GNU tar.
TEST(SpecLimits, LongNamesInTheApkovl) {
  TempDir dir;
  const std::string name(200, 'b');
  const std::string deep = std::string(250, 'c') + "/" + std::string(250, 'c') + "/" + std::string(250, 'c');
  rpi::test::write_file(dir / "t.toml", kPi + "[[files]]\npath = \"/etc/" + name + "\"\ncontent = \"x\"\n" +
                                            "[[files]]\npath = \"/opt/" + deep + "\"\ncontent = \"y\"\n");
  auto r = cli({"apkovl", "--spec", (dir / "t.toml").string(), "-o", (dir / "o.tar.gz").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  bool any = false;
  for (std::string tar : {"/bin/busybox tar", "tar"}) {
    if (!rpi::test::have_tool(tar.substr(0, tar.find(' ')))) continue;
    any = true;
    auto l = rpi::test::sh(tar + " -tzf " + rpi::test::shell_quoted(dir / "o.tar.gz"));
    EXPECT_EQ(l.exit_code, 0) << tar << ": " << l.err;
    EXPECT_NE(l.out.find("etc/" + name + "\n"), std::string::npos) << tar;
    EXPECT_NE(l.out.find("opt/" + deep + "\n"), std::string::npos) << tar;
  }
  if (!any) GTEST_SKIP() << "neither busybox nor tar is installed";
  if (!rpi::test::have_tool("/bin/busybox")) GTEST_SKIP() << "/bin/busybox is absent: only GNU tar listed it";
}

// --- 3. integers too large for TOML

TEST(SpecLimits, IntegerOutOfRangeSaysSo) {
  for (const std::string v : {"99999999999999999999", "-99999999999999999999", "0x1ffffffffffffffffff"}) {
    SCOPED_TRACE(v);
    auto ps = problems_of(kPi + "[[users]]\nname = \"u\"\nuid = " + v + "\n");
    ASSERT_EQ(ps.size(), 1u);
    EXPECT_NE(ps[0].message.find("number out of range: uid must be between 1 and 65533"), std::string::npos)
        << ps[0].message;
    EXPECT_EQ(ps[0].message.find("needs quotes"), std::string::npos) << ps[0].message;
  }
  auto ps = problems_of(kPi + "[wifi]\nssid = \"n\"\npsk = \"12345678\"\nhidden = 99999999999999999999\n");
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_NE(ps[0].message.find("number out of range: hidden (a TOML integer) must be between -9223372036854775808 and "
                               "9223372036854775807"),
            std::string::npos)
      << ps[0].message;
  ps = problems_of(kPi + "[lbu]\nbackup_limit = 1e999\n");
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_NE(ps[0].message.find("number out of range"), std::string::npos) << ps[0].message;
  // A word is still text that needs quotes.
  ps = problems_of(kPi + "[[users]]\nname = \"u\"\nuid = 1x\n");
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_NE(ps[0].message.find("needs quotes"), std::string::npos) << ps[0].message;
}

// --- 4. hostnames ignoring case, MACs of no card

TEST(SpecLimits, HostnamesDifferingInCaseAreTheSame) {
  auto ps = problems_of("[[hosts]]\nhostname = \"x\"\n[[hosts]]\nhostname = \"X\"\n");
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_NE(ps[0].message.find("hostname \"X\" is used by two [[hosts]] entries"), std::string::npos) << ps[0].message;
  EXPECT_NO_THROW(parse_spec("[[hosts]]\nhostname = \"x\"\n[[hosts]]\nhostname = \"y\"\n", "t.toml", "."));
}

TEST(SpecLimits, MacsOfNoCardRefused) {
  for (const std::string mac :
       {"ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "01:00:5e:00:00:01", "33:33:00:00:00:01", "FF-FF-FF-FF-FF-FF"}) {
    SCOPED_TRACE(mac);
    auto ps = problems_of("[system]\nhostname = \"pi{n}\"\n[[hosts]]\nmac = \"" + mac + "\"\n");
    ASSERT_EQ(ps.size(), 1u);
    EXPECT_NE(ps[0].message.find("[[hosts]].mac is not a network card's address: "), std::string::npos)
        << ps[0].message;
  }
  for (const std::string mac : {"b8:27:eb:00:00:01", "dc:a6:32:01:02:03", "02:00:00:00:00:01"})
    EXPECT_NO_THROW(parse_spec("[system]\nhostname = \"pi{n}\"\n[[hosts]]\nmac = \"" + mac + "\"\n", "t.toml", "."))
        << mac;
}

// --- 5. NUL characters

TEST(SpecLimits, NulCharactersRefused) {
  auto ps = problems_of("[system]\nhostname = \"a\\u0000b\"\nmotd = \"x\\u0000\"\n");
  ASSERT_EQ(ps.size(), 2u) << all_of(ps);
  EXPECT_EQ(ps[0].message, "t.toml:2:12: hostname holds a NUL character (\\u0000), which no file or setting can hold");
  EXPECT_EQ(ps[1].line, 3u);
  EXPECT_NE(ps[1].message.find("motd holds a NUL character"), std::string::npos);
  ps = problems_of(kPi + "[apk]\npackages = [\"a\", \"b\\u0000\"]\n");
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_NE(ps[0].message.find("packages holds a NUL character"), std::string::npos) << ps[0].message;
  ps = problems_of(kPi + "\"k\\u0000\" = 1\n");
  ASSERT_FALSE(ps.empty());
  EXPECT_NE(ps[0].message.find("this key holds a NUL character"), std::string::npos) << ps[0].message;
  // Other control characters are as before: a tab in motd loads.
  EXPECT_NO_THROW(parse_spec(kPi + "motd = \"a\\tb\"\n", "t.toml", "."));
}
