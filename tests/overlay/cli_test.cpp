// `rpi-provision check` and `rpi-provision apkovl` as a user runs them: exit
// codes, files written (and not written on failure), --out-dir naming for
// network boot, and no secret value anywhere in stdout, stderr or --json.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include <cstdlib>
#include <filesystem>

#include "test_support.hpp"

namespace fs = std::filesystem;
using rpi::test::cli;
using rpi::test::TempDir;

namespace {

std::string example(const std::string& name) {
  return (rpi::test::source_dir() / "examples" / name).string();
}

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

}  // namespace

TEST(CheckCommand, ExamplesPass) {
  for (auto name : {"headless.toml", "kiosk.toml", "fleet.toml"}) {
    SCOPED_TRACE(name);
    auto r = cli({"check", "--spec", example(name)});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find(": OK ("), std::string::npos) << r.out;
  }
  auto fleet = cli({"check", "--spec", example("fleet.toml")});
  EXPECT_NE(fleet.out.find("card 10: class-10.school.example (mac b8:27:eb:00:00:0a)"), std::string::npos) << fleet.out;
  // The teacher's key is the example's: said once for the ten cards, with what it means for root.
  EXPECT_NE(fleet.out.find("OK (10 cards, 2 warnings)"), std::string::npos) << fleet.out;
  EXPECT_NE(fleet.err.find("user teacher's SSH key \"ssh-ed25519 teacher@school.example\" is rpi-provision's example "
                           "key; nobody has its private key: replace it with your own public key"),
            std::string::npos)
      << fleet.err;
  auto kiosk = cli({"check", "--spec", example("kiosk.toml")});
  EXPECT_NE(kiosk.err.find("warning: " + example("kiosk.toml") + ":"), std::string::npos) << kiosk.err;
  EXPECT_NE(kiosk.err.find("user admin's SSH key \"ssh-ed25519 admin@example\" is rpi-provision's example key"),
            std::string::npos)
      << kiosk.err;
  EXPECT_EQ(kiosk.err.find("group \"seat\""), std::string::npos) << "seatd, in [apk].packages, makes that group";
  EXPECT_NE(kiosk.out.find("psk (secret)"), std::string::npos);
  auto headless = cli({"check", "--spec", example("headless.toml")});
  EXPECT_NE(headless.err.find("nobody can log in to this Pi"), std::string::npos) << headless.err;
  EXPECT_NE(headless.out.find("  login     nobody"), std::string::npos) << headless.out;
}

TEST(CheckCommand, BadSpecExitsTwoWithLocatedMessage) {
  auto spec = (rpi::test::source_dir() / "tests/overlay/data/bad/unknown_key.toml").string();
  auto r = cli({"check", "--spec", spec});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(spec + ":2:1: unknown key 'hostnme' in [system] (did you mean 'hostname'?)"), std::string::npos)
      << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  auto missing = cli({"check", "--spec", "/nonexistent/spec.toml"});
  EXPECT_EQ(missing.exit_code, 2);
}

TEST(CheckCommand, JsonLines) {
  auto r = cli({"--json", "check", "--spec", example("fleet.toml")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  int cards = 0;
  std::size_t start = 0;
  while (start < r.out.size()) {
    auto end = r.out.find('\n', start);
    auto line = r.out.substr(start, end - start);
    EXPECT_EQ(line.front(), '{') << line;
    EXPECT_EQ(line.back(), '}') << line;
    if (line.find("\"type\":\"card\"") != std::string::npos) ++cards;
    start = end + 1;
  }
  EXPECT_EQ(cards, 10);
  EXPECT_NE(r.out.find("\"hostname\":\"class-03\""), std::string::npos);
}

TEST(ApkovlCommand, WritesOneCard) {
  TempDir dir;
  auto out = dir / "kiosk.apkovl.tar.gz";
  auto kh = dir / "known_hosts";
  auto r = cli({"apkovl", "--spec", example("kiosk.toml"), "-o", out.string(), "--known-hosts", kh.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(mode_of(out), 0600u) << "the overlay holds hashes, the PSK and host keys";
  EXPECT_NE(r.out.find("known_hosts: kiosk,kiosk.lan ssh-ed25519 AAAA"), std::string::npos) << r.out;
  auto lines = rpi::test::read_file(kh);
  EXPECT_EQ(lines.rfind("kiosk,kiosk.lan ssh-ed25519 AAAA", 0), 0u) << lines;
  if (rpi::test::have_tool("busybox")) {
    auto t = rpi::test::run({"busybox", "tar", "-tzf", out.string()});
    EXPECT_EQ(t.exit_code, 0);
    EXPECT_NE(t.out.find("etc/hostname\n"), std::string::npos);
  }
  // --json: every line parses, and the host keys come as a list of strings.
  RPI_REQUIRE_TOOL("python3");
  auto j = cli({"--json", "apkovl", "--spec", example("kiosk.toml"), "-o", out.string()});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  auto p = rpi::test::run({"python3", "-c",
                           "import json,sys\n"
                           "for line in sys.stdin:\n"
                           "    e = json.loads(line)\n"
                           "    if e['type'] == 'apkovl': print(e['known_hosts'][0].split()[1])\n"},
                          j.out);
  EXPECT_EQ(p.exit_code, 0) << j.out << p.err;
  EXPECT_EQ(p.out, "ssh-ed25519\n") << j.out;
}

TEST(ApkovlCommand, ReproducibleWithSeedFileAndSourceDateEpoch) {
  TempDir dir;
  rpi::test::write_file(dir / "seed", "0123456789abcdef0123456789abcdef");
  std::string base = "SOURCE_DATE_EPOCH=1700000000 '" + rpi::test::cli_path().string() + "' apkovl --spec '" +
                     example("kiosk.toml") + "' --seed-file '" + (dir / "seed").string() + "' -o ";
  ASSERT_EQ(rpi::test::sh(base + "'" + (dir / "a.tar.gz").string() + "'").exit_code, 0);
  ASSERT_EQ(rpi::test::sh(base + "'" + (dir / "b.tar.gz").string() + "'").exit_code, 0);
  EXPECT_EQ(rpi::test::read_file(dir / "a.tar.gz"), rpi::test::read_file(dir / "b.tar.gz"));
}

// --out-dir writes one file per host: none of them may be the spec (or a file
// it reads), and the refusal comes before the first is written.
TEST(ApkovlCommand, OutDirNeverReplacesTheSpec) {
  TempDir dir;
  const fs::path spec = dir / "b8:27:eb:00:00:02.apkovl.tar.gz";
  fs::copy_file(example("fleet.toml"), spec);
  const std::string bytes = rpi::test::read_file(spec);
  auto r = cli({"apkovl", "--spec", spec.string(), "--out-dir", dir.path().string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("the apkovl of class-02, " + spec.string() + " is the file given as --spec"), std::string::npos)
      << r.err;
  EXPECT_EQ(rpi::test::read_file(spec), bytes);
  EXPECT_FALSE(fs::exists(dir / "b8:27:eb:00:00:01.apkovl.tar.gz")) << "written before the refusal";
}

// A refused run says only why: no advice about the apkovl it did not write.
TEST(ApkovlCommand, ARefusalComesAlone) {
  TempDir dir;
  const fs::path spec = dir / "pi.toml";
  rpi::test::write_file(spec, "[system]\nhostname = \"pi\"\n");  // [alpine].version: latest-stable
  auto r = cli({"apkovl", "--spec", spec.string(), "-o", spec.string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err.find("latest-stable"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  // A run that writes still gives the advice.
  auto ok = cli({"apkovl", "--spec", spec.string(), "-o", (dir / "pi.apkovl.tar.gz").string()});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.err.find("latest-stable"), std::string::npos) << ok.err;
}

TEST(CheckCommand, CountsOneWarningInTheSingular) {
  TempDir dir;
  const fs::path spec = dir / "pi.toml";
  rpi::test::write_file(spec, "[system]\nhostname = \"pi\"\n[[users]]\nname = \"bob\"\nshell = \"/bin/bash\"\n");
  auto r = cli({"check", "--spec", spec.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("OK (1 card, 1 warning)"), std::string::npos) << r.out;
}

TEST(ApkovlCommand, OutDirNamesFilesAsTheInitramfsRequestsThem) {
  TempDir dir;
  auto www = dir / "www";
  auto r = cli({"apkovl", "--spec", example("fleet.toml"), "--out-dir", www.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  int files = 0;
  for (const auto& e : fs::directory_iterator(www)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 10);
  // {MAC} is substituted in colon form from /sys/class/net/*/address (lower case).
  EXPECT_TRUE(fs::exists(www / "b8:27:eb:00:00:01.apkovl.tar.gz"));
  EXPECT_TRUE(fs::exists(www / "b8:27:eb:00:00:0a.apkovl.tar.gz"));
  if (rpi::test::have_tool("busybox")) {
    auto t =
        rpi::test::run({"busybox", "tar", "-xzOf", (www / "b8:27:eb:00:00:03.apkovl.tar.gz").string(), "etc/hostname"});
    EXPECT_EQ(t.out, "class-03\n");
  }
  TempDir one;
  auto r1 = cli({"apkovl", "--spec", example("fleet.toml"), "--out-dir", one.path().string(), "--host", "class-05"});
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  EXPECT_TRUE(fs::exists(one / "b8:27:eb:00:00:05.apkovl.tar.gz"));
  auto none = cli({"apkovl", "--spec", example("headless.toml"), "--out-dir", one.path().string()});
  EXPECT_EQ(none.exit_code, 2) << none.err;
}

TEST(ApkovlCommand, FailureLeavesNoOutput) {
  TempDir dir;
  auto out = dir / "x.apkovl.tar.gz";
  auto bad = (rpi::test::source_dir() / "tests/overlay/data/bad/bad_cidr.toml").string();
  auto r = cli({"apkovl", "--spec", bad, "-o", out.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(fs::is_empty(dir.path())) << "no temporary left behind";
  auto both = cli({"apkovl", "--spec", example("headless.toml")});
  EXPECT_EQ(both.exit_code, 2) << "needs -o or --out-dir";
  auto host = cli({"apkovl", "--spec", example("fleet.toml"), "--host", "class-99", "-o", out.string()});
  EXPECT_EQ(host.exit_code, 2);
  EXPECT_FALSE(fs::exists(out));
}

TEST(Secrets, NeverInOutputErrorsOrJson) {
  TempDir dir;
  const std::string psk = "leak-marker-psk-7f3a";
  const std::string pw = "leak-marker-pw-91c2";
  const std::string file_secret = "leak-marker-file-55d1";
  ::setenv("RPI_LEAK_PSK", psk.c_str(), 1);
  ::setenv("RPI_LEAK_PW", pw.c_str(), 1);
  ::setenv("RPI_LEAK_FILE", file_secret.c_str(), 1);
  ::setenv("RPI_LEAK_SHORT", "leak7", 1);
  std::string good =
      "[system]\nhostname = \"pi\"\n[wifi]\nssid = \"Net\"\npsk = { env = \"RPI_LEAK_PSK\" }\n"
      "[[users]]\nname = \"bob\"\npassword = { env = \"RPI_LEAK_PW\" }\n[root]\npassword = { env = \"RPI_LEAK_PW\" }\n"
      "[[files]]\npath = \"/etc/token\"\ncontent = { env = \"RPI_LEAK_FILE\" }\nmode = \"0600\"\n";
  rpi::test::write_file(dir / "good.toml", good);
  // Errors raised after the secrets were read, and about a secret's value itself.
  rpi::test::write_file(dir / "late-error.toml", good + "[boot]\nlabel = \"BOOT\"\n");
  rpi::test::write_file(dir / "bad-psk.toml",
                        "[system]\nhostname = \"pi\"\n[wifi]\nssid = \"Net\"\npsk = { env = \"RPI_LEAK_SHORT\" }\n");
  rpi::test::write_file(dir / "literal.toml", "[system]\nhostname = \"pi\"\n[wifi]\nssid = \"Net\"\npsk = \"" + psk +
                                                  "\"\n[[users]]\nname = \"bob\"\n"
                                                  "password = \"" +
                                                  pw + "\"\n");
  auto out = dir / "o.apkovl.tar.gz";
  std::vector<std::vector<std::string>> runs;
  for (auto spec : {"good.toml", "late-error.toml", "bad-psk.toml", "literal.toml"}) {
    auto s = (dir / spec).string();
    runs.push_back({"check", "--spec", s});
    runs.push_back({"--json", "check", "--spec", s});
    runs.push_back({"-v", "apkovl", "--spec", s, "-o", out.string()});
    runs.push_back({"--json", "apkovl", "--spec", s, "-o", out.string()});
  }
  int ok = 0, failed = 0;
  for (const auto& args : runs) {
    auto r = cli(args);
    (r.exit_code == 0 ? ok : failed)++;
    for (const auto& secret : {psk, pw, file_secret, std::string("leak7")}) {
      EXPECT_EQ(r.out.find(secret), std::string::npos) << args[1] << " " << args.back() << " stdout: " << r.out;
      EXPECT_EQ(r.err.find(secret), std::string::npos) << args[1] << " " << args.back() << " stderr: " << r.err;
    }
  }
  EXPECT_EQ(ok, 8) << "good.toml and literal.toml succeed";
  EXPECT_EQ(failed, 8) << "late-error.toml and bad-psk.toml fail";
  // In the overlay: only the derived PSK and hashes; the file content is the file's.
  ASSERT_EQ(cli({"apkovl", "--spec", (dir / "good.toml").string(), "-o", out.string()}).exit_code, 0);
  auto tar = rpi::test::sh("gzip -dc '" + out.string() + "'");
  EXPECT_EQ(tar.out.find(psk), std::string::npos);
  EXPECT_EQ(tar.out.find(pw), std::string::npos);
  EXPECT_NE(tar.out.find(file_secret), std::string::npos);
  auto literal = cli({"check", "--spec", (dir / "literal.toml").string()});
  EXPECT_NE(literal.err.find("literal.toml:5:7: [wifi].psk is written in the spec"), std::string::npos) << literal.err;
}

// A passphrase typed as a { file = } path is not printed when the file is not
// there: not on stderr, not in --json.
TEST(CheckCommand, ASecretsFilePathIsNeverPrinted) {
  TempDir dir;
  const fs::path spec = dir / "x.toml";
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"pi\"\n\n[wifi]\nssid = \"home\"\ncountry = \"DE\"\n"
                        "psk = { file = \"correct horse battery staple\" }\n");
  auto r = cli({"check", "--spec", spec.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(spec.string() +
                       ":7:16: cannot read the file given for [wifi].psk: no such file (path relative to x.toml's "
                       "folder)"),
            std::string::npos)
      << r.err;
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"check", "--spec", spec.string()},
           {"--json", "check", "--spec", spec.string()},
           {"--json", "apkovl", "--spec", spec.string(), "-o", (dir / "o.tar.gz").string()}}) {
    auto run = cli(args);
    EXPECT_EQ(run.exit_code, 2) << run.err;
    for (const std::string part : {"correct horse", "battery staple"}) {
      EXPECT_EQ(run.out.find(part), std::string::npos) << run.out;
      EXPECT_EQ(run.err.find(part), std::string::npos) << run.err;
    }
  }
}

// "no such file" and "permission denied" are different fixes: the spec's own
// file errors say which, for the spec too. Root reads any file, so a test run
// as root checks it as nobody.
TEST(CheckCommand, PermissionDeniedIsSaid) {
  TempDir dir;
  ::chmod(dir.path().c_str(), 0755);
  const fs::path spec = dir / "s.toml", locked = dir / "locked.toml";
  rpi::test::write_file(dir / "wifi.psk", "correct horse battery staple\n");
  ::chmod((dir / "wifi.psk").c_str(), 0);
  rpi::test::write_file(spec, "[system]\nhostname = \"pi\"\n[wifi]\nssid = \"home\"\npsk = { file = \"wifi.psk\" }\n");
  ::chmod(spec.c_str(), 0644);
  rpi::test::write_file(locked, "[system]\nhostname = \"pi\"\n");
  ::chmod(locked.c_str(), 0);
  std::vector<std::string> as_user;
  if (::geteuid() == 0) {
    RPI_REQUIRE_TOOL("setpriv");
    as_user = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
    auto can =
        rpi::test::run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "test", "-r", spec.string()});
    if (can.exit_code != 0) GTEST_SKIP() << "user nobody cannot reach " << dir.path() << " (a folder above is private)";
  }
  auto check = [&](const fs::path& s) {
    std::vector<std::string> argv = as_user;
    argv.push_back(rpi::test::cli_path().string());
    for (const std::string a : {"check", "--spec"}) argv.push_back(a);
    argv.push_back(s.string());
    return rpi::test::run(argv);
  };
  auto r = check(spec);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(spec.string() + ":5:16: cannot read the file given for [wifi].psk: permission denied"),
            std::string::npos)
      << r.err;
  r = check(locked);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(locked.string() + ": cannot read the spec: permission denied"), std::string::npos) << r.err;
  r = check(dir / "nope.toml");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find((dir / "nope.toml").string() + ": cannot read the spec: no such file"), std::string::npos)
      << r.err;
}

// A spec that names its secrets with { env = } is checked without them (in CI,
// by a colleague): a warning per variable, exit 0. Whatever builds or plans a
// card still stops at the first one, exit 2, and writes nothing.
TEST(CheckCommand, GoesOnWithoutEnvSecretsThatABuildNeeds) {
  TempDir dir;
  const fs::path spec = dir / "pi.toml";
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"pi\"\n\n[wifi]\nssid = \"home\"\npsk = { env = \"RPI_H2_CLI_PSK\" }\n"
                        "\n[[users]]\nname = \"me\"\nadmin = true\npassword = { env = \"RPI_H2_CLI_PW\" }\n");
  ::unsetenv("RPI_H2_CLI_PSK");
  ::unsetenv("RPI_H2_CLI_PW");
  auto r = cli({"check", "--spec", spec.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: " + spec.string() +
                       ":6:7: [wifi].psk: environment variable RPI_H2_CLI_PSK is not set; check went on without it, "
                       "but building needs it"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find(spec.string() + ":11:12: [[users]].password: environment variable RPI_H2_CLI_PW is not set"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.out.find("psk not set (env RPI_H2_CLI_PSK)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("user      me uid 1000 admin password not set (env RPI_H2_CLI_PW), 0 ssh keys\n"),
            std::string::npos)
      << r.out;
  // The admin's password counts: root is locked for doas, somebody logs in.
  EXPECT_NE(r.out.find("  root      no password login (the admins use doas)"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("nobody"), std::string::npos) << r.out;
  EXPECT_EQ(r.err.find("nobody"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("OK (1 card, 2 warnings)"), std::string::npos) << r.out;

  auto json = cli({"--json", "check", "--spec", spec.string()});
  EXPECT_EQ(json.exit_code, 0) << json.err;
  EXPECT_NE(json.out.find("\"not_set\":[{\"entry\":\"[wifi].psk\",\"env\":\"RPI_H2_CLI_PSK\"},"
                          "{\"entry\":\"[[users]].password for me\",\"env\":\"RPI_H2_CLI_PW\"}]"),
            std::string::npos)
      << json.out;

  const std::string stops = "environment variable RPI_H2_CLI_PSK (for [wifi].psk) is not set";
  const fs::path img = dir / "pi.img", ovl = dir / "pi.apkovl.tar.gz";
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"--spec", spec.string(), "--output", img.string(), "--dry-run"},
                                             {"--spec", spec.string(), "--output", img.string()},
                                             {"apkovl", "--spec", spec.string(), "-o", ovl.string()},
                                             {"--json", "apkovl", "--spec", spec.string(), "-o", ovl.string()}}) {
    SCOPED_TRACE(args[args.size() - 1]);
    auto b = cli(args);
    EXPECT_EQ(b.exit_code, 2) << b.err;
    EXPECT_NE((b.err + b.out).find(spec.string() + ":6:15: " + stops), std::string::npos) << b.err << b.out;
    EXPECT_FALSE(fs::exists(img));
    EXPECT_FALSE(fs::exists(ovl));
  }

  // With the variables set, the same spec builds: the variable was all that stopped it.
  ::setenv("RPI_H2_CLI_PSK", "h2-cli-passphrase", 1);
  ::setenv("RPI_H2_CLI_PW", "h2-cli-password", 1);
  auto with = cli({"check", "--spec", spec.string()});
  EXPECT_EQ(with.exit_code, 0) << with.err;
  EXPECT_NE(with.out.find("psk (secret)"), std::string::npos) << with.out;
  EXPECT_NE(with.out.find("OK (1 card, 0 warnings)"), std::string::npos) << with.out;
  EXPECT_EQ(cli({"apkovl", "--spec", spec.string(), "-o", ovl.string()}).exit_code, 0);
  EXPECT_TRUE(fs::exists(ovl));
  ::unsetenv("RPI_H2_CLI_PSK");
  ::unsetenv("RPI_H2_CLI_PW");
}

// `check` with several Wi-Fi networks: every ssid in the summary and in --json,
// no passphrase anywhere; an entry's unset variable is a warning there (named
// with its ssid in "not_set") and stops a build.
TEST(CheckCommand, ListsEveryWifiNetworkNeverAPsk) {
  TempDir dir;
  const fs::path spec = dir / "pi.toml";
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"pi\"\n"
                        "[wifi]\ncountry = \"DE\"\nssid = \"classroom\"\npsk = { env = \"RPI_W_CLI_CLASS\" }\n"
                        "[[wifi.networks]]\nssid = \"staff\"\npsk = { env = \"RPI_W_CLI_STAFF\" }\nhidden = true\n"
                        "priority = 5\n"
                        "[[wifi.networks]]\nssid = \"home\"\npsk = { file = \"home.psk\" }\n");
  const std::string class_psk = "leak-marker-class-4e1b", staff_psk = "leak-marker-staff-90aa",
                    home_psk = "leak-marker-home-c3d7";
  rpi::test::write_file(dir / "home.psk", home_psk + "\n");
  ::setenv("RPI_W_CLI_CLASS", class_psk.c_str(), 1);
  ::setenv("RPI_W_CLI_STAFF", staff_psk.c_str(), 1);
  auto text = cli({"check", "--spec", spec.string()});
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("  wifi      ssid \"classroom\" psk (secret) country DE on wlan0\n"
                          "  wifi      ssid \"staff\" psk (secret) hidden priority 5\n"
                          "  wifi      ssid \"home\" psk (secret)\n"),
            std::string::npos)
      << text.out;
  auto json = cli({"--json", "check", "--spec", spec.string()});
  EXPECT_EQ(json.exit_code, 0) << json.err;
  EXPECT_NE(json.out.find("\"wifi\":true,\"wifi_networks\":[\"classroom\",\"staff\",\"home\"]"), std::string::npos)
      << json.out;
  const fs::path ovl = dir / "pi.apkovl.tar.gz";
  auto built = cli({"apkovl", "--spec", spec.string(), "-o", ovl.string()});
  EXPECT_EQ(built.exit_code, 0) << built.err;
  EXPECT_EQ(mode_of(ovl), 0600u);
  const auto tar = rpi::test::sh("gzip -dc '" + ovl.string() + "'");
  for (const auto& r : {text, json, built, tar})
    for (const auto& secret : {class_psk, staff_psk, home_psk}) {
      EXPECT_EQ(r.out.find(secret), std::string::npos) << r.out;
      EXPECT_EQ(r.err.find(secret), std::string::npos) << r.err;
    }

  ::unsetenv("RPI_W_CLI_STAFF");
  auto unset = cli({"--json", "check", "--spec", spec.string()});
  EXPECT_EQ(unset.exit_code, 0) << unset.err;
  EXPECT_NE(unset.out.find("\"not_set\":[{\"entry\":\"[[wifi.networks]].psk for staff\",\"env\":\"RPI_W_CLI_STAFF\"}]"),
            std::string::npos)
      << unset.out;
  auto stops = cli({"apkovl", "--spec", spec.string(), "-o", (dir / "no.apkovl.tar.gz").string()});
  EXPECT_EQ(stops.exit_code, 2) << stops.err;
  EXPECT_NE(stops.err.find(spec.string() +
                           ":9:15: environment variable RPI_W_CLI_STAFF (for [[wifi.networks]].psk) is not set"),
            std::string::npos)
      << stops.err;
  EXPECT_FALSE(fs::exists(dir / "no.apkovl.tar.gz"));
  ::unsetenv("RPI_W_CLI_CLASS");
}

namespace {
// A JSON string as the JSON events write it (the texts here need only '"' and '\' escaped).
std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}
}  // namespace

// Every mistake of a spec in one run: each its own "error:" line on stderr, and
// in --json one error event that lists them; a spec with one mistake reads as before.
TEST(CheckCommand, SaysEveryErrorOfTheSpecAtOnce) {
  TempDir dir;
  const fs::path spec = dir / "bad.toml";
  ::setenv("RPI_MANY_PSK", "leak7mk", 1);  // too short: an error about a secret's value
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"pi\"\ncolour = \"blue\"\n"
                        "[network]\ndns = [\"999.1.1.1\"]\n"
                        "[wifi]\nssid = \"home\"\npsk = { env = \"RPI_MANY_PSK\" }\n"
                        "[boot]\nlabel = \"BOOT\"\n");
  const std::string s = spec.string();
  const std::vector<std::string> messages = {
      s + ":3:1: unknown key 'colour' in [system]",
      s + ":5:8: [network].dns entry \"999.1.1.1\" is not an IP address",
      s + ":8:15: [wifi].psk (env RPI_MANY_PSK) must be a passphrase of 8 to 63 printable ASCII characters (or 64 "
          "hex digits)",
      s + ":10:9: [boot].label must not be BOOT: the Pi firmware then fails to load boot/ files "
          "(raspberrypi/firmware#1529)",
  };
  for (const auto& cmd : {std::vector<std::string>{"check", "--spec", s},
                          std::vector<std::string>{"apkovl", "--spec", s, "-o", (dir / "o.apkovl.tar.gz").string()}}) {
    SCOPED_TRACE(cmd.front());
    auto r = cli(cmd);
    EXPECT_EQ(r.exit_code, 2);
    // Each with the line it points at and a caret under the place, compilers' way; the psk's line is not shown.
    const std::vector<std::string> excerpts = {
        "    3 | colour = \u2026\n      | ^~~~~~\n",  // an unknown key's value is never shown
        "    5 | dns = [\"999.1.1.1\"]\n      |        ^~~~~~~~~~~\n",
        "",
        "   10 | label = \"BOOT\"\n      |         ^~~~~~\n",
    };
    std::string want;
    for (std::size_t i = 0; i < messages.size(); ++i)
      want += "rpi-provision: error: " + messages[i] + "\n" + excerpts[i];
    EXPECT_EQ(r.err, want);
    EXPECT_TRUE(r.out.empty()) << r.out;
    std::vector<std::string> json_cmd = {"--json"};
    json_cmd.insert(json_cmd.end(), cmd.begin(), cmd.end());
    auto j = cli(json_cmd);
    EXPECT_EQ(j.exit_code, 2);
    // Each with its place as data too: file, line and column (1-based); no excerpt.
    const std::vector<std::pair<int, int>> places = {{3, 1}, {5, 8}, {8, 15}, {10, 9}};
    auto place = [&](std::size_t i) {
      return ",\"file\":" + quoted(s) + ",\"line\":" + std::to_string(places[i].first) +
             ",\"column\":" + std::to_string(places[i].second);
    };
    std::string list, problems;
    for (std::size_t i = 0; i < messages.size(); ++i) {
      list += (list.empty() ? "" : ",") + quoted(messages[i]);
      problems += std::string(problems.empty() ? "" : ",") + "{\"message\":" + quoted(messages[i]) + place(i) + "}";
    }
    EXPECT_EQ(j.out, "{\"type\":\"error\",\"code\":\"spec\",\"message\":" + quoted(messages.front()) + place(0) +
                         ",\"messages\":[" + list + "],\"problems\":[" + problems + "]}\n");
    for (const auto& out : {r.out, r.err, j.out, j.err}) EXPECT_EQ(out.find("leak7mk"), std::string::npos) << out;
  }
  EXPECT_FALSE(fs::exists(dir / "o.apkovl.tar.gz"));
  ::unsetenv("RPI_MANY_PSK");

  // One mistake: the one line, and an event with its place but without "messages" or "problems".
  const fs::path one = dir / "one.toml";
  rpi::test::write_file(one, "[system]\nhostname = \"pi\"\n[boot]\nlabel = \"BOOT\"\n");
  const std::string m = one.string() +
                        ":4:9: [boot].label must not be BOOT: the Pi firmware then fails to load boot/ files "
                        "(raspberrypi/firmware#1529)";
  auto r = cli({"check", "--spec", one.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "rpi-provision: error: " + m + "\n    4 | label = \"BOOT\"\n      |         ^~~~~~\n");
  auto j = cli({"--json", "check", "--spec", one.string()});
  EXPECT_EQ(j.exit_code, 2);
  EXPECT_EQ(j.out, "{\"type\":\"error\",\"code\":\"spec\",\"message\":" + quoted(m) +
                       ",\"file\":" + quoted(one.string()) + ",\"line\":4,\"column\":9}\n");

  // Over 20: twenty lines, then the count of the others.
  const fs::path many = dir / "many.toml";
  std::string text = "[system]\nhostname = \"pi\"\n";
  for (int i = 0; i < 23; ++i) text += "[[users]]\nname = \"Bad" + std::to_string(i) + "\"\n";
  rpi::test::write_file(many, text);
  auto lots = cli({"check", "--spec", many.string()});
  EXPECT_EQ(lots.exit_code, 2);
  EXPECT_EQ(std::count(lots.err.begin(), lots.err.end(), '\n'), 21 + 2 * 20) << "each error, its line and caret";
  EXPECT_NE(lots.err.find("rpi-provision: error: " + many.string() + ":42:8: user name \"Bad19\""), std::string::npos)
      << lots.err;
  EXPECT_TRUE(lots.err.ends_with("\nrpi-provision: error: … and 3 more errors\n")) << lots.err;
  auto lots_json = cli({"--json", "check", "--spec", many.string()});
  EXPECT_NE(lots_json.out.find(",\"more_errors\":3}"), std::string::npos) << lots_json.out;
  EXPECT_NE(lots_json.out.find(",\"line\":42,\"column\":8}"), std::string::npos) << "the 20th in \"problems\"";
  EXPECT_EQ(lots_json.out.find(",\"line\":44,"), std::string::npos) << "those left out are not listed";
  EXPECT_EQ(std::count(lots_json.out.begin(), lots_json.out.end(), '\n'), 1) << lots_json.out;
}

// An error without a place in a spec (a spec file that is missing, an unknown
// option) gives an error event without "file", "line", "column" or "problems".
TEST(CheckCommand, JsonErrorsWithoutAPlaceHaveNoPosition) {
  TempDir dir;
  const std::string missing = (dir / "missing.toml").string();
  for (const auto& cmd : {std::vector<std::string>{"--json", "check", "--spec", missing},
                          std::vector<std::string>{"--json", "check", "--no-such-option"}}) {
    SCOPED_TRACE(cmd.back());
    auto j = cli(cmd);
    EXPECT_EQ(j.exit_code, 2) << j.err;
    EXPECT_TRUE(j.out.starts_with("{\"type\":\"error\",")) << j.out;
    for (const char* field : {"\"file\"", "\"line\"", "\"column\"", "\"problems\"", "\"messages\""})
      EXPECT_EQ(j.out.find(field), std::string::npos) << field << " in " << j.out;
  }
  // Control: the same spec with a mistake in it says where.
  rpi::test::write_file(missing, "[system]\nhostname = \"pi\"\ncolour = 1\n");
  auto j = cli({"--json", "check", "--spec", missing});
  EXPECT_EQ(j.exit_code, 2) << j.err;
  EXPECT_NE(j.out.find(",\"file\":" + quoted(missing) + ",\"line\":3,\"column\":1}"), std::string::npos) << j.out;
}

// A spec's warnings say where they are as data too, as its errors do; the
// secret the warning is about is in no field.
TEST(CheckCommand, JsonWarningsOfTheSpecGiveTheirPlace) {
  TempDir dir;
  const std::string spec = (dir / "w.toml").string();
  rpi::test::write_file(spec, "[system]\nhostname = \"pi\"\n\n[wifi]\nssid = \"x\"\npsk = \"hunter2hunter2\"\n");
  auto j = cli({"--json", "check", "--spec", spec});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  EXPECT_NE(
      j.out.find(
          "{\"type\":\"warning\",\"message\":" +
          quoted(spec + ":6:7: [wifi].psk is written in the spec; prefer { env = \"NAME\" } or { file = \"path\" }") +
          ",\"file\":" + quoted(spec) + ",\"line\":6,\"column\":7}\n"),
      std::string::npos)
      << j.out;
  EXPECT_EQ(j.out.find("hunter2"), std::string::npos) << j.out;
}

// check --json names the branch each card's default repositories follow.
TEST(CheckCommand, JsonNamesTheBranchTheRepositoriesFollow) {
  TempDir dir;
  const std::string base = "[system]\nhostname = \"pi\"\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "\"repositories\":\"latest-stable\""},
      {"[alpine]\nversion = \"3.21\"\n", "\"repositories\":\"v3.21\""},
      {"[alpine]\nversion = \"3.21.4\"\n", "\"repositories\":\"v3.21\""},
      {"[alpine]\nversion = \"edge\"\n", "\"repositories\":\"edge\""},
      {"[apk]\nrepositories = [\"https://mirror.example/alpine/v3.22/main\"]\n", ""},
  };
  for (const auto& [extra, want] : cases) {
    SCOPED_TRACE(extra);
    rpi::test::write_file(dir / "s.toml", base + extra);
    auto r = cli({"--json", "check", "--spec", (dir / "s.toml").string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    if (want.empty())
      EXPECT_EQ(r.out.find("\"repositories\""), std::string::npos) << "the card's own repositories: " << r.out;
    else
      EXPECT_NE(r.out.find(want), std::string::npos) << r.out;
  }
}

// The caret stands under the place on a terminal also after (and under) wide
// characters, which take two columns.
TEST(CheckCommand, TheCaretCountsWideCharactersAsTwoColumns) {
  TempDir dir;
  rpi::test::write_file(dir / "wide.toml", "[system]\nhostname = \"pi\"\nmotd = \"日本\" x\n");
  auto r = cli({"check", "--spec", (dir / "wide.toml").string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(":3:13: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("\n    3 | motd = \"日本\" x\n      |               ^\n"), std::string::npos) << r.err;
  rpi::test::write_file(dir / "label.toml", "[system]\nhostname = \"pi\"\n[boot]\nlabel = \"ラベル\"\n");
  r = cli({"check", "--spec", (dir / "label.toml").string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("\n    4 | label = \"ラベル\"\n      |         ^~~~~~~~\n"), std::string::npos) << r.err;
}
