// The spec model: examples load, templating, [[hosts]] overrides, secrets, and
// the folder of bad specs (tests/overlay/data/bad: NAME.toml must fail with the
// exact located message in NAME.expected).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "overlay/spec.hpp"
#include "rpi/error.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace rpi;
using namespace rpi::overlay;

namespace {

fs::path examples() {
  return test::source_dir() / "examples";
}
fs::path bad_dir() {
  return test::source_dir() / "tests" / "overlay" / "data" / "bad";
}

// Every warning of a spec, "FILE:LINE:COL: message" one per line.
std::string warnings_of(const std::string& text) {
  const Spec spec = parse_spec(text, "t.toml", ".");
  std::string all;
  for (const auto& w : spec.warnings()) all += w.text() + "\n";
  return all;
}

std::string error_of(const std::string& text, const fs::path& base = ".") {
  try {
    parse_spec(text, "t.toml", base);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::spec);
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(Spec, ExamplesLoad) {
  for (auto name : {"headless.toml", "kiosk.toml", "fleet.toml"}) {
    SCOPED_TRACE(name);
    auto spec = load_spec(examples() / name);
    auto h = resolve_host(spec, 1);
    EXPECT_FALSE(h.hostname.empty());
  }
}

TEST(Spec, DefaultsGiveAWorkingHeadlessPi) {
  auto spec = parse_spec("[system]\nhostname = \"pi\"\n", "t.toml", ".");
  auto h = resolve_host(spec, 1);
  EXPECT_EQ(h.hostname, "pi");
  ASSERT_EQ(h.network.interfaces.size(), 1u);
  EXPECT_EQ(h.network.interfaces[0].name, "eth0");
  EXPECT_TRUE(h.network.interfaces[0].dhcp);
  EXPECT_TRUE(h.ssh.enable);
  EXPECT_FALSE(h.ssh.password_authentication);
  EXPECT_EQ(h.ssh.permit_root_login, "prohibit-password");
  EXPECT_TRUE(h.ntp.enable);
  EXPECT_EQ(h.alpine.version, "latest-stable");
  EXPECT_EQ(h.alpine.arch, "aarch64");
  EXPECT_EQ(h.boot.label, "ALPINE");
  EXPECT_EQ(h.install.mode, "diskless");
  EXPECT_EQ(h.lbu.media, "mmcblk0p1");
  EXPECT_EQ(spec.host_count(), 0);
}

TEST(Spec, FleetHostsInOrderWithOverrides) {
  auto spec = load_spec(examples() / "fleet.toml");
  EXPECT_EQ(spec.host_count(), 10);
  auto cards = resolve_hosts(spec, 1, 10);
  ASSERT_EQ(cards.size(), 10u);
  EXPECT_EQ(cards[0].hostname, "class-01");
  EXPECT_EQ(cards[0].mac, "b8:27:eb:00:00:01");
  EXPECT_EQ(cards[0].network.interfaces.at(0).address, "10.20.0.11/24");
  EXPECT_EQ(cards[9].hostname, "class-10");
  EXPECT_EQ(cards[9].mac, "b8:27:eb:00:00:0a");
  EXPECT_TRUE(cards[9].boot.serial_console);        // override from [hosts.boot]
  EXPECT_FALSE(cards[8].boot.serial_console);       // not leaked to others
  EXPECT_EQ(cards[4].users.at(0).name, "teacher");  // base tables still apply
  EXPECT_EQ(cards[4].timezone, "Europe/Vienna");
  // --first N starts at the N-th entry; --host NAME picks one.
  EXPECT_EQ(resolve_hosts(spec, 3, 1).at(0).hostname, "class-03");
  auto h = resolve_host(spec, 0, std::string("class-07"));
  EXPECT_EQ(h.index, 7);
  EXPECT_EQ(h.network.interfaces.at(0).address, "10.20.0.17/24");
  // Beyond the list with a fixed hostname per host: the base hostname has {n:02}.
  EXPECT_EQ(resolve_host(spec, 11).hostname, "class-11");
  try {
    resolve_host(spec, 0, std::string("class-7"));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::usage);
    EXPECT_NE(std::string(e.what()).find("did you mean 'class-07'"), std::string::npos) << e.what();
  }
}

TEST(Spec, Templating) {
  auto spec = parse_spec(
      "[system]\nhostname = \"pi-{n:03}\"\nmotd = \"card {n} of the lab, {MAC} stays\"\n"
      "[[network.interfaces]]\naddress = \"10.0.0.{n}/24\"\n",
      "t.toml", ".");
  auto h = resolve_host(spec, 7);
  EXPECT_EQ(h.hostname, "pi-007");
  EXPECT_EQ(h.motd, "card 7 of the lab, {MAC} stays");
  EXPECT_EQ(h.network.interfaces.at(0).address, "10.0.0.7/24");
  EXPECT_EQ(resolve_host(spec, 12).hostname, "pi-012");
  EXPECT_TRUE(spec.hostname_templated());
}

TEST(Spec, HostsWithoutTemplateStopAtTheList) {
  auto spec = parse_spec("[system]\nhostname = \"x\"\n[[hosts]]\nhostname = \"a\"\n", "t.toml", ".");
  EXPECT_EQ(resolve_host(spec, 1).hostname, "a");
  EXPECT_THROW(resolve_host(spec, 2), Error);
}

TEST(Spec, SecretsFromEnvAndFile) {
  test::TempDir dir;
  test::write_file(dir / "pw.txt", "file-secret-value\n");
  ::setenv("RPI_SPEC_TEST_PSK", "env-secret-passphrase", 1);
  auto spec = parse_spec(
      "[system]\nhostname = \"pi\"\n[wifi]\nssid = \"Net\"\npsk = { env = \"RPI_SPEC_TEST_PSK\" }\n"
      "[root]\npassword = { file = \"pw.txt\" }\n",
      "t.toml", dir.path());
  auto h = resolve_host(spec, 1);
  ASSERT_EQ(h.wifi.networks.size(), 1u);
  EXPECT_EQ(h.wifi.networks[0].psk, "env-secret-passphrase");
  EXPECT_EQ(h.root.password, "file-secret-value");  // trailing newline dropped
  EXPECT_TRUE(spec.warnings().empty());
  ::unsetenv("RPI_SPEC_TEST_PSK");
}

// The CLI refuses outputs that are one of these files: every file an entry reads
// is listed with the entry, over all [[hosts]], never with its content.
TEST(Spec, FilesReadNameTheirEntries) {
  test::TempDir dir;
  test::write_file(dir / "psk", "file-secret-psk\n");
  test::write_file(dir / "b.psk", "other-secret-psk\n");
  test::write_file(dir / "motd.txt", "hello\n");
  auto spec = parse_spec(
      "[system]\nhostname = \"pi{n}\"\n[wifi]\nssid = \"Net\"\npsk = { file = \"psk\" }\n"
      "[[files]]\npath = \"/etc/motd\"\nsource = \"motd.txt\"\n"
      "[[hosts]]\nhostname = \"a\"\n[[hosts]]\nhostname = \"b\"\nwifi = { ssid = \"B\", psk = { file = \"b.psk\" } }\n",
      "t.toml", dir.path());
  std::vector<std::pair<std::string, std::string>> got;
  for (const auto& f : spec.files_read()) got.emplace_back(f.entry, f.path.string());
  const std::vector<std::pair<std::string, std::string>> want = {
      {"[wifi].psk", (dir / "psk").string()},
      {"[[files]].source for /etc/motd", (dir / "motd.txt").string()},
      {"[wifi].psk", (dir / "b.psk").string()},
  };
  EXPECT_EQ(got, want);
}

// A Pi that reads its apkovl from a web server never reads what lbu commit
// saved on its card: first-boot host keys would be new at every boot.
TEST(Spec, NetworkBootedApkovlWithFirstBootKeysWarns) {
  auto spec = parse_spec(
      "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n"
      "[boot]\napkovl_url = \"http://srv/{MAC}.apkovl.tar.gz\"\n",
      "t.toml", ".");
  ASSERT_EQ(spec.warnings().size(), 1u);
  EXPECT_EQ(spec.warnings()[0].location, "t.toml:5:1");
  EXPECT_NE(spec.warnings()[0].message.find("new SSH host keys at every boot; use host_keys = \"generate\""),
            std::string::npos)
      << spec.warnings()[0].message;
  EXPECT_TRUE(parse_spec("[system]\nhostname = \"pi\"\n[boot]\napkovl_url = \"http://srv/{MAC}.apkovl.tar.gz\"\n",
                         "t.toml", ".")
                  .warnings()
                  .empty());
}

TEST(Spec, LiteralSecretsWarnWithLocation) {
  auto spec = parse_spec(
      "[system]\nhostname = \"pi\"\n[wifi]\nssid = \"Net\"\npsk = \"literal-passphrase\"\n"
      "[[users]]\nname = \"bob\"\npassword = \"hunter2hunter2\"\n",
      "t.toml", ".");
  ASSERT_EQ(spec.warnings().size(), 2u);
  EXPECT_EQ(spec.warnings()[0].location, "t.toml:5:7");
  EXPECT_NE(spec.warnings()[0].message.find("{ env = \"NAME\" }"), std::string::npos);
  EXPECT_EQ(spec.warnings()[1].location, "t.toml:8:12");
  for (const auto& w : spec.warnings()) {
    EXPECT_EQ(w.text().find("literal-passphrase"), std::string::npos);
    EXPECT_EQ(w.text().find("hunter2"), std::string::npos);
  }
}

// sshd refuses a user whose login shell does not exist: a shell from outside
// Alpine's base system must come with its package.
TEST(Spec, ALoginShellOutsideTheBaseSystemNeedsItsPackage) {
  auto warnings_for = [](const std::string& shell, const std::string& packages) {
    return warnings_of("[system]\nhostname = \"pi\"\n[apk]\npackages = [" + packages +
                       "]\n[[users]]\nname = \"bob\"\nshell = \"" + shell + "\"\n");
  };
  std::string w = warnings_for("/bin/bash", "");
  EXPECT_NE(w.find("t.toml:7:9"), std::string::npos) << w;
  EXPECT_NE(w.find("shell /bin/bash of user bob is not part of Alpine's base system: add \"bash\" to [apk].packages"),
            std::string::npos)
      << w;
  EXPECT_EQ(warnings_for("/bin/bash", "\"bash\"").find("shell"), std::string::npos);
  EXPECT_EQ(warnings_for("/usr/bin/zsh", "\"zsh@edge\"").find("shell"), std::string::npos);
  EXPECT_EQ(warnings_for("/bin/ash", "").find("shell"), std::string::npos);
  EXPECT_EQ(warnings_for("/sbin/nologin", "").find("shell"), std::string::npos);
  EXPECT_NE(warnings_for("/opt/x/myshell", "\"bash\"").find("make sure a package in [apk].packages provides it"),
            std::string::npos);
}

// "name@tag" without a "@tag URL" repository: apk could never install it,
// and every later apk add or upgrade on the Pi would fail.
TEST(Spec, ATaggedPackageNeedsItsTaggedRepository) {
  auto warnings_for = [](const std::string& apk) { return warnings_of("[system]\nhostname = \"pi\"\n[apk]\n" + apk); };
  std::string w = warnings_for("packages = [\"foo@testing\"]\n");
  EXPECT_NE(w.find("t.toml:4:13: package foo@testing asks for the repository tagged @testing, but "
                   "[apk].repositories has no \"@testing URL\" entry"),
            std::string::npos)
      << w;
  EXPECT_EQ(warnings_for("packages = [\"foo@testing>=1.2\"]\nrepositories = "
                         "[\"@testing https://dl-cdn.alpinelinux.org/alpine/edge/testing\"]\n"),
            "");
}

TEST(Spec, SummaryRedactsSecrets) {
  auto spec = parse_spec(
      "[system]\nhostname = \"pi\"\n[wifi]\nssid = \"Net\"\npsk = \"literal-passphrase\"\n"
      "[[users]]\nname = \"bob\"\npassword = \"hunter2hunter2\"\n"
      "[[files]]\npath = \"/etc/token\"\ncontent = \"file-content-secret\"\nmode = \"0600\"\n",
      "t.toml", ".");
  auto text = summary(resolve_host(spec, 1));
  EXPECT_EQ(text.find("literal-passphrase"), std::string::npos) << text;
  EXPECT_EQ(text.find("hunter2"), std::string::npos) << text;
  EXPECT_EQ(text.find("file-content-secret"), std::string::npos) << text;
  EXPECT_NE(text.find("psk (secret)"), std::string::npos) << text;
  EXPECT_NE(text.find("/etc/token 0600 root:root"), std::string::npos) << text;
}

TEST(Spec, SummaryHidesAMirrorPassword) {
  auto spec =
      parse_spec("[system]\nhostname = \"pi\"\n[alpine]\nmirror = \"https://fleet:mirror-pw@mirror.example/alpine\"\n",
                 "t.toml", ".");
  auto text = summary(resolve_host(spec, 1));
  EXPECT_EQ(text.find("mirror-pw"), std::string::npos) << text;
  EXPECT_NE(text.find("https://fleet:***@mirror.example/alpine"), std::string::npos) << text;
}

TEST(Spec, TypeAndValueErrorsAreLocated) {
  EXPECT_EQ(error_of("[system]\nhostname = 5\n"), "t.toml:2:12: [system].hostname must be a string, not an integer");
  EXPECT_EQ(error_of("[system]\nhostname = \"pi\"\n[boot]\nsize = \"lots\"\n"),
            "t.toml:4:8: [boot].size must be a size like \"1GiB\" or \"max\"");
  EXPECT_EQ(error_of("[system]\nhostname = \"pi\"\n[boot]\nlabel = \"cidata\"\n"),
            "t.toml:4:9: [boot].label must not be CIDATA: it triggers tiny-cloud at boot");
  EXPECT_EQ(error_of("[system]\nhostname = \"pi\"\n[alpine]\narch = \"arm64\"\n"),
            "t.toml:4:8: [alpine].arch must be \"aarch64\", \"armv7\" or \"armhf\" (did you mean 'aarch64'?)");
  EXPECT_EQ(
      error_of("[system]\nhostname = \"pi\"\n[[files]]\npath = \"/etc/x\"\ncontent = \"a\"\nowner = \"root:nogrp\"\n"),
      "t.toml:6:9: group \"nogrp\" of /etc/x names no group");
}

TEST(Spec, BootSizes) {
  auto h = resolve_host(parse_spec("[system]\nhostname = \"pi\"\n[boot]\nsize = \"1GiB\"\n", "t.toml", "."), 1);
  ASSERT_TRUE(h.boot.size.has_value());
  EXPECT_EQ(*h.boot.size, 1ull << 30);
  auto m = resolve_host(parse_spec("[system]\nhostname = \"pi\"\n[boot]\nsize = \"max\"\n", "t.toml", "."), 1);
  EXPECT_TRUE(m.boot.size_max);
  EXPECT_FALSE(m.boot.size.has_value());
}

TEST(Spec, AlpineTableForFetch) {
  auto spec =
      parse_spec("[system]\nhostname = \"pi\"\n[alpine]\nversion = \"3.22.1\"\narch = \"armv7\"\n", "t.toml", ".");
  EXPECT_EQ(spec.alpine().version, "3.22.1");
  EXPECT_EQ(spec.alpine().arch, "armv7");
  EXPECT_EQ(spec.alpine().branch(), "v3.22");
  EXPECT_EQ(spec.alpine().mirror, "https://dl-cdn.alpinelinux.org/alpine");
}

TEST(Spec, BadSpecFolder) {
  int count = 0;
  for (const auto& entry : fs::directory_iterator(bad_dir())) {
    if (entry.path().extension() != ".toml") continue;
    ++count;
    auto name = entry.path().filename().string();
    SCOPED_TRACE(name);
    auto expected_path = entry.path();
    expected_path.replace_extension(".expected");
    ASSERT_TRUE(fs::exists(expected_path)) << "missing " << expected_path;
    std::string expected = test::read_file(expected_path);
    while (!expected.empty() && expected.back() == '\n') expected.pop_back();
    std::string got = "(no error)";
    try {
      // Named as in the folder so messages are stable; files resolve against it.
      auto spec = parse_spec(test::read_file(entry.path()), name, bad_dir());
      (void)spec;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::spec);
      got = e.what();
    }
    // Messages name missing files by their resolved path: make it folder-relative.
    std::string prefix = (bad_dir() / "").string();
    if (auto pos = got.find(prefix); pos != std::string::npos) got.erase(pos, prefix.size());
    EXPECT_EQ(got, expected);
  }
  EXPECT_GE(count, 25);
}

// --- tester findings (defects 1-13)

namespace {
bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}
const std::string kPi = "[system]\nhostname = \"pi\"\n";
}  // namespace

// The apkovl is unpacked before Alpine's packages: a file below one of the
// base layout's links would make it a folder nothing reads, and /run and /tmp
// are emptied at boot.
TEST(Spec, FilesBelowBaseLinksOrEmptiedFoldersAreRefused) {
  auto at = [](const std::string& path) {
    return error_of(kPi + "[[files]]\npath = \"" + path + "\"\ncontent = \"a\"\n");
  };
  EXPECT_EQ(at("/var/spool/cron/crontabs/root"),
            "t.toml:4:8: [[files]] path /var/spool/cron/crontabs/root is below /var/spool/cron/crontabs, which "
            "Alpine makes a link to /etc/crontabs: write the file there");
  EXPECT_TRUE(has(at("/var/run/app.pid"), "is below /var/run, which Alpine makes a link to /run")) << at("/var/run/x");
  EXPECT_TRUE(has(at("/tmp/seed"), "is below /tmp, which is emptied at boot")) << at("/tmp/seed");
  EXPECT_TRUE(has(at("/run/x"), "is below /run, which is emptied at boot")) << at("/run/x");
  EXPECT_NO_THROW(parse_spec(kPi + "[[files]]\npath = \"/etc/crontabs/root\"\ncontent = \"a\"\n"
                                   "[[files]]\npath = \"/var/tmp/x\"\ncontent = \"a\"\n",
                             "t.toml", "."));
}

// Files that sshd, ssh or doas check, or that hold secrets: private by
// default, and a mode the program would refuse is a spec error, not a Pi
// whose sshd or doas does not start.
TEST(Spec, SensitiveFilesArePrivateAndUnsafeModesRefused) {
  auto mode_of = [](const std::string& path) {
    auto spec = parse_spec(kPi + "[[files]]\npath = \"" + path + "\"\ncontent = \"a\"\n", "t.toml", ".");
    return resolve_host(spec, 1).files.at(0).mode;
  };
  for (const char* p : {"/etc/shadow", "/etc/ssh/ssh_host_ed25519_key", "/etc/doas.d/ops.conf",
                        "/etc/wpa_supplicant/wpa_supplicant.conf", "/root/.ssh/id_ed25519"})
    EXPECT_EQ(mode_of(p), 0600u) << p;
  EXPECT_EQ(mode_of("/etc/ssh/ssh_host_ed25519_key.pub"), 0644u);
  EXPECT_EQ(mode_of("/etc/motd.d/x"), 0644u);
  auto with_mode = [](const std::string& path, const std::string& mode) {
    return error_of(kPi + "[[files]]\npath = \"" + path + "\"\ncontent = \"a\"\nmode = \"" + mode + "\"\n");
  };
  EXPECT_EQ(with_mode("/etc/ssh/ssh_host_rsa_key", "0640"),
            "t.toml:6:8: [[files]] /etc/ssh/ssh_host_rsa_key with mode 0640: ssh refuses a private key that others may "
            "read; use \"0600\"");
  EXPECT_TRUE(has(with_mode("/etc/doas.d/x.conf", "0666"), "doas refuses a configuration that others may change"));
  EXPECT_TRUE(has(with_mode("/etc/shadow", "0644"), "password hashes"));
  EXPECT_TRUE(has(with_mode("/home/bob/.ssh/authorized_keys", "0666"), "sshd ignores authorized_keys"));
  EXPECT_EQ(with_mode("/etc/shadow", "0640"), "(no error)");  // 0640 root:shadow is Alpine's own
}

TEST(Spec, FilesThatWouldBeFileAndFolderAreRefused) {
  // One [[files]] path inside another: busybox tar would abort at boot.
  auto e = error_of(kPi + "[[files]]\npath = \"/etc/foo\"\ncontent = \"a\"\n[[files]]\npath = \"/etc/foo/bar\"\n" +
                    "content = \"b\"\n");
  EXPECT_EQ(e,
            "t.toml:7:8: [[files]] path /etc/foo/bar is inside /etc/foo, which another [[files]] entry (line 4) "
            "makes a file");
  e = error_of(kPi + "[[files]]\npath = \"/etc/foo/bar\"\ncontent = \"b\"\n[[files]]\npath = \"/etc/foo\"\n" +
               "content = \"a\"\n");
  EXPECT_TRUE(has(e, "t.toml:7:8: [[files]] path /etc/foo would have to be the folder of /etc/foo/bar")) << e;
  // A generated folder, a file inside a generated file.
  e = error_of(kPi + "[[files]]\npath = \"/etc/network\"\ncontent = \"a\"\n");
  EXPECT_EQ(e,
            "t.toml:4:8: [[files]] path /etc/network is a folder rpi-provision writes (it holds "
            "/etc/network/interfaces); it cannot be a file");
  e = error_of(kPi + "[[files]]\npath = \"/etc/hostname/x\"\ncontent = \"a\"\n");
  EXPECT_EQ(e,
            "t.toml:4:8: [[files]] path /etc/hostname/x is inside /etc/hostname, which rpi-provision writes as a "
            "file");
  e = error_of(kPi + "[[users]]\nname = \"bob\"\n[[files]]\npath = \"/home/bob\"\ncontent = \"a\"\n");
  EXPECT_EQ(e, "t.toml:6:8: [[files]] path /home/bob is a folder rpi-provision writes; it cannot be a file");
  // Replacing a generated file is allowed (documented) but not silent.
  auto spec = parse_spec(kPi + "[[files]]\npath = \"/etc/hostname\"\ncontent = \"x\\n\"\n", "t.toml", ".");
  ASSERT_EQ(spec.warnings().size(), 1u);
  EXPECT_EQ(spec.warnings()[0].text(),
            "t.toml:4:8: [[files]] path /etc/hostname replaces the file rpi-provision generates there");
}

TEST(Spec, EmptyPasswordsAndPskAreRefused) {
  test::TempDir dir;
  test::write_file(dir / "empty.txt", "");
  test::write_file(dir / "nl.txt", "\n");
  ::setenv("RPI_T_EMPTY", "", 1);
  EXPECT_EQ(error_of(kPi + "[root]\npassword = \"\"\n"), "t.toml:4:12: [root].password is empty");
  EXPECT_EQ(error_of(kPi + "[root]\npassword = { env = \"RPI_T_EMPTY\" }\n"),
            "t.toml:4:20: [root].password (env RPI_T_EMPTY) is empty");
  EXPECT_EQ(error_of(kPi + "[root]\npassword = { file = \"empty.txt\" }\n", dir.path()),
            "t.toml:4:21: [root].password (file empty.txt) is empty");
  EXPECT_EQ(error_of(kPi + "[root]\npassword = { file = \"nl.txt\" }\n", dir.path()),
            "t.toml:4:21: [root].password (file nl.txt) is empty");
  EXPECT_EQ(error_of(kPi + "[[users]]\nname = \"bob\"\npassword = { env = \"RPI_T_EMPTY\" }\n"),
            "t.toml:5:20: [[users]].password (env RPI_T_EMPTY) is empty");
  EXPECT_EQ(error_of(kPi + "[wifi]\nssid = \"Net\"\npsk = { env = \"RPI_T_EMPTY\" }\n"),
            "t.toml:5:15: [wifi].psk (env RPI_T_EMPTY) is empty");
  ::unsetenv("RPI_T_EMPTY");
}

TEST(Spec, OneTrailingNewlineIsDroppedFromSecretFiles) {
  test::TempDir dir;
  test::write_file(dir / "crlf.txt", "pw-with-crlf\r\n");
  test::write_file(dir / "two.txt", "line-one\nline-two\n");
  test::write_file(dir / "blank.txt", "pw\n\n");
  auto h = resolve_host(parse_spec(kPi + "[root]\npassword = { file = \"crlf.txt\" }\n", "t.toml", dir.path()), 1);
  EXPECT_EQ(h.root.password, "pw-with-crlf");
  for (auto f : {"two.txt", "blank.txt"}) {
    SCOPED_TRACE(f);
    auto e = error_of(kPi + "[root]\npassword = { file = \"" + f + "\" }\n", dir.path());
    EXPECT_EQ(e, "t.toml:4:21: [root].password (file " + std::string(f) +
                     ") has more than one line (only one trailing newline is dropped from a file)");
    EXPECT_FALSE(has(e, "line-one"));
  }
}

// crypt(3) reads up to the first NUL: "\0abc" would become the empty password.
TEST(Spec, PasswordsWithANulByteAreRefused) {
  test::TempDir dir;
  test::write_file(dir / "nul.bin", std::string("\0whatever\n", 10));
  test::write_file(dir / "mid.bin", std::string("abc\0xyz", 7));
  for (auto f : {"nul.bin", "mid.bin"}) {
    SCOPED_TRACE(f);
    auto e = error_of(kPi + "[root]\npassword = { file = \"" + f + "\" }\n", dir.path());
    EXPECT_EQ(e, "t.toml:4:21: [root].password (file " + std::string(f) +
                     ") contains a NUL byte, which would cut the password short; remove it");
    EXPECT_FALSE(has(e, "whatever")) << e;
    EXPECT_FALSE(has(e, "xyz")) << e;
  }
  auto e = error_of(kPi + "[[users]]\nname = \"bob\"\nadmin = true\npassword = \"\\u0000\"\n");
  // Refused where the spec is read, as every string holding a NUL is.
  EXPECT_EQ(e, "t.toml:6:12: password holds a NUL character (\\u0000), which no file or setting can hold");
}

// A secret typed where its variable's name belongs is not echoed.
TEST(Spec, EnvReferenceMustBeAName) {
  for (const char* bad : {"hunter2-pass!", "1PASS", "my secret", ""}) {
    SCOPED_TRACE(bad);
    auto e = error_of(kPi + "[wifi]\nssid = \"Net\"\npsk = { env = \"" + bad + "\" }\n");
    EXPECT_EQ(e,
              "t.toml:5:15: [wifi].psk.env must name an environment variable (letters, digits and _, e.g. "
              "WIFI_PSK), not hold the value itself");
  }
  ::unsetenv("RPI_T_UNSET_9");
  EXPECT_TRUE(has(error_of(kPi + "[wifi]\nssid = \"Net\"\npsk = { env = \"RPI_T_UNSET_9\" }\n"),
                  "environment variable RPI_T_UNSET_9 (for [wifi].psk) is not set"));
}

TEST(Spec, ProxyIsRedactedInTheSummary) {
  auto h = resolve_host(
      parse_spec(kPi + "[network]\nproxy = \"http://user:pa$$w0rd@proxy.example:3128/\"\n", "t.toml", "."), 1);
  auto text = summary(h);
  EXPECT_FALSE(has(text, "pa$$w0rd")) << text;
  EXPECT_TRUE(has(text, "proxy     http://user:***@proxy.example:3128/")) << text;
  EXPECT_EQ(error_of(kPi + "[network]\nproxy = \"socks5://proxy:1080\"\n"),
            "t.toml:4:9: [network].proxy must start with one of http://, https://");
}

TEST(Spec, InstallDiskAllowsOnlyDevicePaths) {
  for (auto bad :
       {"/dev/sda; echo pwned", "/dev/sda$(reboot)", "/dev/sd a", "/dev/'x'", "/dev/../etc/passwd", "/dev/"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(error_of(kPi + "[install]\nmode = \"sys\"\ndisk = \"" + bad + "\"\n"),
              "t.toml:5:8: [install].disk must be a device path like /dev/mmcblk0 (letters, digits, '/', '_', '.', "
              "':', '-')");
  }
  auto h = resolve_host(
      parse_spec(kPi + "[install]\nmode = \"sys\"\ndisk = \"/dev/disk/by-id/usb-X_1.0:0-part1\"\n", "t.toml", "."), 1);
  EXPECT_EQ(h.install.disk, "/dev/disk/by-id/usb-X_1.0:0-part1");
}

TEST(Spec, GeneratedScriptNamesAreReserved) {
  EXPECT_EQ(error_of(kPi + "[[scripts]]\nname = \"zz-install-sys\"\nrun = \"first-boot\"\ncontent = \"x\"\n"),
            "t.toml:4:8: script name \"zz-install-sys\" is reserved for a script rpi-provision generates");
  EXPECT_EQ(error_of(kPi + "[[scripts]]\nname = \"00-rpi-provision-first-boot\"\ncontent = \"x\"\n"),
            "t.toml:4:8: script name \"00-rpi-provision-first-boot\" is reserved for a script rpi-provision "
            "generates");
}

TEST(Spec, SecretFileContentDefaultsToMode0600) {
  test::TempDir dir;
  test::write_file(dir / "token", "secret-token\n");
  ::setenv("RPI_T_TOKEN", "secret-token", 1);
  auto h =
      resolve_host(parse_spec(kPi + "[[files]]\npath = \"/etc/a\"\ncontent = { env = \"RPI_T_TOKEN\" }\n"
                                    "[[files]]\npath = \"/etc/b\"\ncontent = { file = \"token\" }\n"
                                    "[[files]]\npath = \"/etc/c\"\ncontent = { file = \"token\" }\nmode = \"0640\"\n"
                                    "[[files]]\npath = \"/etc/d\"\ncontent = \"plain\"\n",
                              "t.toml", dir.path()),
                   1);
  ::unsetenv("RPI_T_TOKEN");
  ASSERT_EQ(h.files.size(), 4u);
  EXPECT_EQ(h.files[0].mode, 0600u);
  EXPECT_EQ(h.files[1].mode, 0600u);
  EXPECT_EQ(h.files[2].mode, 0640u);  // an explicit mode wins
  EXPECT_EQ(h.files[3].mode, 0644u);
}

TEST(Spec, PasswdAndShadowFieldsCannotBeSplit) {
  EXPECT_EQ(error_of(kPi + "[[users]]\nname = \"bob\"\nshell = \"/bin/ash:x\"\n"),
            "t.toml:5:9: shell of user bob must not contain ':' (the /etc/passwd separator)");
  EXPECT_EQ(error_of(kPi + "[[users]]\nname = \"bob\"\nshell = \"/bin/a\\tsh\"\n"),
            "t.toml:5:9: shell must not contain control characters");
  EXPECT_EQ(error_of(kPi + "[root]\npassword_hash = \"$6$abc\\nevil::0:::::\"\n"),
            "t.toml:4:17: [root].password_hash must be a crypt(3) hash like \"$6$...\"");
  EXPECT_EQ(error_of(kPi + "[root]\npassword_hash = \"$6$abc\\r\"\n"),
            "t.toml:4:17: [root].password_hash must be a crypt(3) hash like \"$6$...\"");
  EXPECT_EQ(error_of(kPi + "[[users]]\nname = \"bob\"\npassword_hash = \"$6$a\\tb\"\n"),
            "t.toml:5:17: password_hash of user bob must be a crypt(3) hash like \"$6$...\"");
}

TEST(Spec, UserNamesMayNotBeBaseGroups) {
  for (auto g : {"video", "wheel", "users", "input", "abuild"}) {
    SCOPED_TRACE(g);
    EXPECT_EQ(error_of(kPi + "[[users]]\nname = \"" + g + "\"\n"),
              "t.toml:4:8: user name \"" + std::string(g) +
                  "\" is a group of Alpine's base layout (its own group would appear twice in /etc/group)");
  }
}

TEST(Spec, LoadSpecNeedsARegularFile) {
  test::TempDir dir;
  fs::create_directory(dir / "folder");
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
  for (auto name : {"folder", "fifo"}) {
    SCOPED_TRACE(name);
    try {
      load_spec(dir / name);  // must not block on the FIFO
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::spec);
      EXPECT_EQ(std::string(e.what()), (dir / name).string() + ": the spec is not a regular file");
    }
  }
}

TEST(Spec, TomlSyntaxErrorsDoNotQuoteTheValue) {
  auto e = error_of(kPi + "[root]\npassword = tru\nx = 1\n");
  EXPECT_TRUE(e.rfind("t.toml:4:", 0) == 0) << e;
  EXPECT_FALSE(has(e, "saw")) << e;
  EXPECT_FALSE(has(e, "tru'")) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  auto e2 = error_of(kPi + "[root]\npassword = \"abc\ndef\"\n");
  EXPECT_EQ(e2.find('\n'), std::string::npos) << e2;
  EXPECT_FALSE(has(e2, "abc")) << e2;
}

// Unquoted text is the common TOML slip: say that it needs quotes, with the key,
// and never the value (it may be a secret). A missing closing quote says so.
TEST(Spec, TomlSyntaxErrorsSayWhatToDo) {
  const std::string wifi = kPi + "[wifi]\nssid = \"home\"\n";
  auto e = error_of(wifi + "psk = TOPSECRET2\n");
  EXPECT_EQ(e, "t.toml:5:7: invalid value: only true and false go without quotes (text needs quotes: psk = \"...\")");
  EXPECT_EQ(error_of(wifi + "psk = topsecret\n"),
            "t.toml:5:8: invalid value: only true and false go without quotes (text needs quotes: psk = \"...\")");
  EXPECT_EQ(error_of(wifi + "psk = secret word\n"),
            "t.toml:5:7: invalid value: TOML has no bare text (text needs quotes: psk = \"...\")");
  EXPECT_EQ(error_of(wifi + "psk = 12345678abc\n"), "t.toml:5:15: invalid number (text needs quotes: psk = \"...\")");
  EXPECT_EQ(error_of(wifi + "psk = Ninja2000\n"), "t.toml:5:7: invalid number (text needs quotes: psk = \"...\")");
  EXPECT_EQ(error_of(kPi + "[alpine]\nversion = 3.22.1\n"),
            "t.toml:4:15: invalid number (text needs quotes: version = \"...\")");
  // In an inline table the key is the inner one; in an array there is none to name.
  EXPECT_EQ(error_of(kPi + "[root]\npassword = { env = WIFI_PSK }\n"),
            "t.toml:4:20: invalid value: TOML has no bare text (text needs quotes: env = \"...\")");
  EXPECT_EQ(error_of(kPi + "[apk]\npackages = [\"chromium\", vim]\n"),
            "t.toml:4:25: invalid value: TOML has no bare text (text needs quotes: \"...\")");
  for (const std::string secret : {"TOPSECRET2", "topsecret", "secret word", "12345678abc", "Ninja2000"}) {
    auto m = error_of(wifi + "psk = " + secret + "\n");
    EXPECT_FALSE(has(m, secret.substr(0, 3))) << m;
    EXPECT_FALSE(has(m, secret.substr(secret.size() - 3))) << m;
  }
  // The closing quote: on its line, and at the end of the file.
  const std::string closing =
      "the closing quote of this string is missing (a quoted value ends on the line it starts on; text of several "
      "lines goes in triple quotes)";
  EXPECT_EQ(error_of(wifi + "psk = \"TOPSECRET2\nx = 1\n"), "t.toml:5:18: " + closing);
  EXPECT_EQ(error_of(wifi + "psk = \"TOPSECRET2\r\nx = 1\n"), "t.toml:5:18: " + closing);
  EXPECT_EQ(error_of(wifi + "psk = 'TOPSECRET2\n"), "t.toml:5:18: " + closing);
  EXPECT_EQ(error_of(wifi + "psk = \"TOPSECRET2"),
            "t.toml:5:18: the closing quote of this string is missing: it runs to the end of the file");
  EXPECT_TRUE(has(error_of(wifi + "psk = \"\"\"TOPSECRET2\n"), "the closing quote of this string is missing: it runs"));
  // What we do not recognise stays toml++'s, still located and without the value.
  EXPECT_EQ(error_of(kPi + "x = [1, 2,, 3]\n"),
            "t.toml:3:11: Error while parsing array: expected value or closing ']'");
  EXPECT_EQ(error_of(kPi + "x = @\n"), "t.toml:3:5: Error while parsing value: could not determine value type");
  auto ctl = error_of(wifi + "psk = \"TOP\x01SECRET\"\n");
  EXPECT_TRUE(has(ctl, "t.toml:5:11: Error while parsing string: unescaped control characters")) << ctl;
}

// [system].keymap names /usr/share/bkeymaps/LAYOUT/VARIANT.bmap.gz of kbd-bkeymaps,
// where VARIANT is LAYOUT or LAYOUT-XKBVARIANT; the usual slips say what to write.
TEST(Spec, KeymapIsLayoutAndVariant) {
  for (const char* ok : {"us us", "de de", "de de-nodeadkeys", "de de-T3", "fi fi-kotoistus", "us us-alt-intl",
                         "gb gb-extd", "ch ch-de_nodeadkeys"}) {
    auto spec = parse_spec(kPi + "keymap = \"" + ok + "\"\n", "t.toml", ".");
    EXPECT_EQ(resolve_host(spec, 1).keymap, ok);
  }
  auto err = [](const std::string& keymap) { return error_of(kPi + "keymap = \"" + keymap + "\"\n"); };
  const std::string form = "(LAYOUT VARIANT, the file /usr/share/bkeymaps/LAYOUT/VARIANT.bmap.gz)";
  EXPECT_EQ(err("us"),
            "t.toml:3:10: [system].keymap \"us\" needs a variant too: write \"us us\" for the plain layout " + form);
  EXPECT_EQ(
      err("de-nodeadkeys"),
      "t.toml:3:10: [system].keymap \"de-nodeadkeys\" needs the layout first: write \"de de-nodeadkeys\" " + form);
  EXPECT_EQ(err("de nodeadkeys"),
            "t.toml:3:10: [system].keymap \"de nodeadkeys\" has a variant that does not begin with its layout: write "
            "\"de de-nodeadkeys\" (or \"de de\" for the plain layout) " +
                form);
  EXPECT_EQ(err("us de-nodeadkeys"),
            "t.toml:3:10: [system].keymap \"us de-nodeadkeys\" has the variant de-nodeadkeys, which belongs to the "
            "layout de: write \"de de-nodeadkeys\" " +
                form);
  EXPECT_EQ(
      err("de(nodeadkeys)"),
      "t.toml:3:10: [system].keymap \"de(nodeadkeys)\" is in X11's form; Alpine's is \"de de-nodeadkeys\" " + form);
  EXPECT_EQ(err("DE DE"),
            "t.toml:3:10: [system].keymap \"DE DE\" has a layout with capitals; layouts are lower-case: "
            "write \"de de\"");
  EXPECT_EQ(err("fi fi"),
            "t.toml:3:10: [system].keymap \"fi fi\" names a map kbd-bkeymaps does not have: Alpine "
            "ships the plain Finnish layout as \"fi fi-kotoistus\"");
  EXPECT_EQ(err(""),
            "t.toml:3:10: [system].keymap \"\" is empty: leave it out for the kernel's default (US), or "
            "write e.g. \"de de-nodeadkeys\"");
  for (const char* bad : {"de  de", " de de", "de de ", "us us us", "de\tde"})
    EXPECT_TRUE(has(err(bad), "must be two words separated by one space")) << bad << ": " << err(bad);
  for (const char* bad : {"de de/../x", "de de.bmap", "us/us"})
    EXPECT_TRUE(has(err(bad), "may contain only letters, digits, '_' and '-' in its two words")) << err(bad);
  EXPECT_TRUE(has(err("de-x de-x"), "has a layout with a '-'")) << err("de-x de-x");
}

// --- audit findings (static IPv6 with ipv6 = "off", root lock-out, firmware files)

// ipv6 = "off" disables IPv6 on the interface before ifupdown-ng adds a static
// IPv6 address, which the kernel then refuses ("IPv6 is disabled on this device").
TEST(Spec, StaticIpv6AddressWithIpv6OffIsRefused) {
  EXPECT_EQ(error_of(kPi + "[[network.interfaces]]\nname = \"eth0\"\naddress = \"2001:db8::2/64\"\nipv6 = \"off\"\n"),
            "t.toml:5:11: interface eth0 has the static IPv6 address 2001:db8::2/64 but ipv6 = \"off\" disables IPv6 "
            "on it, so the address could not be set; drop the address, or drop ipv6 = \"off\" (the default \"auto\" "
            "keeps a static address)");
  // A static IPv4 address with IPv6 off, and a static IPv6 address with the default, stay valid.
  EXPECT_EQ(warnings_of(kPi + "[[network.interfaces]]\naddress = \"192.168.1.2/24\"\nipv6 = \"off\"\n"
                              "[network]\ndns = [\"1.1.1.1\"]\n"),
            "");
  EXPECT_EQ(warnings_of(kPi + "[[network.interfaces]]\naddress = \"2001:db8::2/64\"\n[network]\ndns = [\"::1\"]\n"),
            "");
}

namespace {
// Not one of the examples' keys (those let nobody in): a key its owner has.
const std::string kKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop";
const std::string kForcedKey = "command=\"/usr/local/bin/backup\",no-pty " + kKey;
// A spec whose root logs in with kKey only, plus `more`.
std::string root_with(const std::string& key, const std::string& more) {
  return kPi + "[root]\nssh_authorized_keys = ['" + key + "']\n" + more;
}
}  // namespace

// Root with SSH keys and no password gets "*": when sshd will not take the
// keys and no admin can log in, nobody can log in at all.
TEST(Spec, RootKeysThatSshdRefusesAreNoWayIn) {
  const std::string key_list = "([root].ssh_authorized_keys: \"ssh-ed25519 me@laptop\")";
  const std::string nobody =
      ", and root has no password ([root].password) and no [[users]] admin can log in: nobody "
      "could log in to this Pi; set [root].password, ";
  EXPECT_EQ(error_of(root_with(kKey, "[ssh]\npermit_root_login = \"no\"\n")),
            "t.toml:6:21: [ssh].permit_root_login = \"no\" makes sshd refuse root's SSH keys " + key_list + nobody +
                "let root in over SSH ([ssh].permit_root_login = \"prohibit-password\"), or add a [[users]] entry "
                "with admin = true and an SSH key or a password");
  EXPECT_EQ(error_of(root_with(kKey, "[ssh]\npermit_root_login = \"forced-commands-only\"\n")),
            "t.toml:6:21: [ssh].permit_root_login = \"forced-commands-only\" makes sshd refuse root's SSH keys " +
                key_list + ", since none of them has a command=\"...\" option" + nobody +
                "let root in over SSH ([ssh].permit_root_login = \"prohibit-password\"), or add a [[users]] entry "
                "with admin = true and an SSH key or a password");
  EXPECT_EQ(error_of(root_with(kKey, "[ssh]\nenable = false\n")),
            "t.toml:6:10: [ssh].enable = false: sshd does not run, so root's SSH keys " + key_list + " are never used" +
                nobody +
                "turn SSH on ([ssh].enable = true), or add a [[users]] entry with admin = true and a password");
  // A locked password hash is no way in either; a user who logs in with a key
  // needs sshd, and one without a login shell is no way in.
  EXPECT_TRUE(has(error_of(root_with(kKey, "password_hash = \"*\"\n[ssh]\npermit_root_login = \"no\"\n")),
                  "nobody could log in to this Pi"));
  EXPECT_TRUE(has(error_of(root_with(kKey,
                                     "[ssh]\nenable = false\n[[users]]\nname = \"ops\"\nadmin = true\n"
                                     "ssh_authorized_keys = ['" +
                                         kKey + "']\n")),
                  "nobody could log in to this Pi"));
  EXPECT_TRUE(has(error_of(root_with(kKey,
                                     "[ssh]\npermit_root_login = \"no\"\n[[users]]\nname = \"ops\"\n"
                                     "admin = true\nshell = \"/sbin/nologin\"\npassword_hash = \"$6$s$h\"\n")),
                  "nobody could log in to this Pi"));
  // In a [[hosts]] entry the error points at the host's setting.
  EXPECT_EQ(
      error_of(root_with(kKey, "[[hosts]]\nhostname = \"a\"\n[hosts.ssh]\npermit_root_login = \"no\"\n")).substr(0, 12),
      "t.toml:8:21:");
}

TEST(Spec, RootKeysRefusedWithSomeoneElseToLogInWarn) {
  // A user without doas can log in, but nobody can become root.
  auto w = warnings_of(root_with(kKey,
                                 "[ssh]\npermit_root_login = \"no\"\n[[users]]\nname = \"kiosk\"\n"
                                 "ssh_authorized_keys = ['" +
                                     kKey + "']\n"));
  EXPECT_TRUE(has(w, "t.toml:6:21: [ssh].permit_root_login = \"no\" makes sshd refuse root's SSH keys")) << w;
  EXPECT_TRUE(has(w, "nobody can become root on this Pi; set [root].password")) << w;
  // Every key forcing a command: deliberate, but there is no interactive login.
  w = warnings_of(root_with(kForcedKey, "[ssh]\npermit_root_login = \"forced-commands-only\"\n"));
  EXPECT_EQ(w,
            "t.toml:6:21: [ssh].permit_root_login = \"forced-commands-only\" lets root's SSH keys "
            "([root].ssh_authorized_keys: \"ssh-ed25519 me@laptop\") run only their command=\"...\" option, root has "
            "no password ([root].password) and no [[users]] admin can log in: nobody can get an interactive login on "
            "this Pi; set [root].password or add a [[users]] entry with admin = true if that is not intended\n");
  auto h = resolve_host(
      parse_spec(root_with(kForcedKey, "[ssh]\npermit_root_login = \"forced-commands-only\"\n"), "t.toml", "."), 1);
  EXPECT_TRUE(has(summary(h), "  root      1 ssh key (forced commands only, no interactive login)\n")) << summary(h);
}

TEST(Spec, RootAccessThatWorksStaysClean) {
  const std::string admin = "[[users]]\nname = \"ops\"\nadmin = true\nssh_authorized_keys = ['" + kKey + "']\n";
  for (const std::string& ok : {
           root_with(kKey, ""),                                                    // prohibit-password (default)
           root_with(kKey, "[ssh]\npermit_root_login = \"prohibit-password\"\n"),  // said explicitly
           root_with(kKey, "[ssh]\npermit_root_login = \"yes\"\n"),
           root_with(kKey, "password_hash = \"$6$salt$hash\"\n[ssh]\npermit_root_login = \"no\"\n"),
           root_with(kKey, "password_hash = \"$6$salt$hash\"\n[ssh]\nenable = false\n"),
           root_with(kKey, "[ssh]\npermit_root_login = \"no\"\n" + admin),
           root_with(kKey, "[ssh]\npermit_root_login = \"forced-commands-only\"\n" + admin),
           kPi + "[ssh]\npermit_root_login = \"no\"\n" + admin,
           kPi + "[ssh]\nenable = false\n",  // root keeps Alpine's empty password: check says so
       }) {
    SCOPED_TRACE(ok);
    EXPECT_EQ(warnings_of(ok), "");
  }
  // check's root line says the keys are refused rather than just counting them.
  auto h = resolve_host(parse_spec(root_with(kKey, "[ssh]\npermit_root_login = \"no\"\n" + admin), "t.toml", "."), 1);
  EXPECT_TRUE(has(summary(h), "  root      1 ssh key (refused: root login no)\n")) << summary(h);
  h = resolve_host(
      parse_spec(root_with(kKey, "password_hash = \"$6$salt$hash\"\n[ssh]\nenable = false\n"), "t.toml", "."), 1);
  EXPECT_TRUE(has(summary(h), "  root      password_hash (secret), 1 ssh key (unused: ssh is disabled)\n"))
      << summary(h);
  h = resolve_host(parse_spec(root_with(kKey, ""), "t.toml", "."), 1);
  EXPECT_TRUE(has(summary(h), "  root      1 ssh key\n")) << summary(h);
}

// Every way in locked ([root].password_hash "*" or "!", no key sshd lets open
// a shell, no [[users]] entry that can log in): nobody can log in. A sealed
// appliance may mean it, so it warns, naming the setting; check's summary says so.
TEST(Spec, NobodyCanLogInWarns) {
  const std::string todo =
      ": nobody can log in to this Pi, at the console or over SSH; if that is not intended, set [root].password, or "
      "give root or a [[users]] entry an SSH key without command=\"...\" or a password\n";
  EXPECT_EQ(warnings_of(kPi + "[root]\npassword_hash = \"*\"\n"),
            "t.toml:4:17: [root].password_hash = \"*\" locks root's password and root has no SSH key, and there is "
            "no [[users]] entry" +
                todo);
  // "!" also makes sshd refuse root's keys (Alpine's OpenSSH has no PAM): one warning says both.
  EXPECT_EQ(warnings_of(kPi + "[root]\npassword_hash = \"!\"\nssh_authorized_keys = ['" + kKey + "']\n"),
            "t.toml:4:17: [root].password_hash = \"!\" locks root, so sshd refuses its SSH keys, and there is no "
            "[[users]] entry" +
                todo);
  // Keys that all force a command open no shell, whatever permit_root_login says; each user says why not.
  EXPECT_EQ(warnings_of(root_with(kForcedKey,
                                  "[[users]]\nname = \"svc\"\nshell = \"/sbin/nologin\"\n"
                                  "password_hash = \"$6$s$h\"\n[[users]]\nname = \"ops\"\nadmin = true\n"
                                  "ssh_authorized_keys = ['" +
                                      kForcedKey + "']\n[[users]]\nname = \"off\"\npassword_hash = \"*\"\n")),
            "t.toml:4:23: every key in [root].ssh_authorized_keys forces a command=\"...\", and no [[users]] entry "
            "can log in (svc: shell /sbin/nologin refuses logins; ops: every SSH key forces a command=\"...\", so no "
            "shell; off: no password and no SSH key)" +
                todo);
  // In a [[hosts]] entry the warning points at the host's setting.
  EXPECT_EQ(warnings_of(kPi + "[[hosts]]\nhostname = \"a\"\n[hosts.root]\npassword_hash = \"*\"\n").substr(0, 12),
            "t.toml:6:17:");
  auto h = resolve_host(parse_spec(kPi + "[root]\npassword_hash = \"*\"\n", "t.toml", "."), 1);
  EXPECT_TRUE(has(summary(h),
                  "  root      password locked (password_hash \"*\"), 0 ssh keys\n  login     nobody: no "
                  "account opens a shell, at the console or over SSH (see the warning)\n"))
      << summary(h);

  // One way in is enough.
  for (const std::string& ok : {
           kPi,  // no [root], no users: root keeps Alpine's empty password (the console)
           kPi + "[ssh]\nenable = false\n",
           kPi + "[root]\npassword_hash = \"*\"\n[[users]]\nname = \"ops\"\npassword_hash = \"$6$s$h\"\n",
           kPi + "[root]\npassword_hash = \"*\"\n[[users]]\nname = \"ops\"\nssh_authorized_keys = ['" + kKey + "']\n",
           kPi + "[root]\npassword_hash = \"*\"\nssh_authorized_keys = ['" + kKey + "', '" + kForcedKey + "']\n",
           root_with(kForcedKey, "password_hash = \"$6$s$h\"\n"),
       }) {
    SCOPED_TRACE(ok);
    EXPECT_EQ(warnings_of(ok), "");
    EXPECT_FALSE(has(summary(resolve_host(parse_spec(ok, "t.toml", "."), 1)), "  login     nobody"));
  }
}

// An admin whose SSH keys all carry command="..." and who has no password gets
// no shell: no way in, as root's keys under "forced-commands-only" are not.
TEST(Spec, AdminWithOnlyForcedCommandKeysIsNoWayIn) {
  const std::string forced_admin =
      "[[users]]\nname = \"ops\"\nadmin = true\nssh_authorized_keys = ['" + kForcedKey + "']\n";
  // So root's refused keys leave nobody who can become root (a warning, as for
  // a sealed appliance: the forced commands still run).
  const std::string refused = warnings_of(root_with(kKey, "[ssh]\npermit_root_login = \"no\"\n" + forced_admin));
  EXPECT_TRUE(has(refused, "t.toml:6:21: [ssh].permit_root_login = \"no\" makes sshd refuse root's SSH keys"))
      << refused;
  EXPECT_TRUE(has(refused, "no [[users]] admin can log in: nobody can become root on this Pi")) << refused;
  // The same for a non-admin whose keys only run a forced command.
  const std::string backup = "[[users]]\nname = \"backup\"\nssh_authorized_keys = ['" + kForcedKey + "']\n";
  EXPECT_TRUE(has(warnings_of(root_with(kKey, "[ssh]\npermit_root_login = \"no\"\n" + backup)),
                  "nobody can become root on this Pi"));
  // Without [root], root keeps Alpine's empty password (the console) rather than
  // being locked for an admin who could never run doas: the load says so (a
  // build prints no summary), and check's summary too.
  EXPECT_EQ(warnings_of(kPi + forced_admin),
            "t.toml:5:9: admin ops cannot log in (every SSH key forces a command=\"...\", so no shell), so root's "
            "password login is not locked: root keeps Alpine's empty password and whoever sits at the keyboard is "
            "root; give ops a password or an SSH key without command=\"...\", or set [root].password\n");
  auto h = resolve_host(parse_spec(kPi + forced_admin, "t.toml", "."), 1);
  EXPECT_EQ(root_login(h), RootLogin::empty_password);
  EXPECT_TRUE(has(summary(h),
                  "  user      ops uid 1000 admin, 1 ssh key (no interactive login: every SSH key forces a "
                  "command=\"...\", so no shell)\n  root      empty password"))
      << summary(h);
  // A password, or one key without command=, is a way in.
  for (const std::string& more : {std::string("password_hash = \"$6$s$h\"\n"),
                                  "ssh_authorized_keys = ['" + kForcedKey + "', '" + kKey + "']\n"}) {
    const std::string admin = "[[users]]\nname = \"ops\"\nadmin = true\n" + more;
    SCOPED_TRACE(admin);
    h = resolve_host(parse_spec(kPi + admin, "t.toml", "."), 1);
    EXPECT_EQ(root_login(h), RootLogin::locked);
    EXPECT_TRUE(has(summary(h), "  root      no password login (the admins use doas)\n")) << summary(h);
    EXPECT_FALSE(has(summary(h), "no interactive login")) << summary(h);
    EXPECT_EQ(warnings_of(root_with(kKey, "[ssh]\npermit_root_login = \"no\"\n" + admin)), "");
  }
}

// Alpine's OpenSSH takes an account whose password starts with '!' as locked and
// refuses its keys: a "!" next to SSH keys warns, with the "*" that works.
TEST(Spec, LockedHashNextToSshKeysWarns) {
  const std::string fix = "; use password_hash = \"*\" (no password) for an account that logs in with SSH keys only\n";
  const std::string ops = "[[users]]\nname = \"ops\"\npassword_hash = \"$6$s$h\"\n";
  EXPECT_EQ(warnings_of(kPi + "[[users]]\nname = \"bob\"\npassword_hash = \"!\"\nssh_authorized_keys = ['" + kKey +
                        "']\n" + ops),
            "t.toml:5:17: password_hash = \"!\" locks user bob, so sshd refuses their SSH keys "
            "([[users]].ssh_authorized_keys)" +
                fix);
  EXPECT_EQ(warnings_of(root_with(kKey, "password_hash = \"!\"\n" + ops)),
            "t.toml:5:17: [root].password_hash = \"!\" locks root, so sshd refuses root's SSH keys "
            "([root].ssh_authorized_keys)" +
                fix);
  auto h = resolve_host(parse_spec(root_with(kKey, "password_hash = \"!\"\n" + ops), "t.toml", "."), 1);
  EXPECT_TRUE(has(summary(h),
                  "  root      password locked (password_hash \"!\"), 1 ssh key (refused: password_hash "
                  "\"!\" locks root for sshd)\n"))
      << summary(h);
  // "*" is no password and lets the keys in; "!" without keys, or with sshd off, has nothing to refuse.
  EXPECT_EQ(warnings_of(root_with(kKey, "password_hash = \"*\"\n")), "");
  EXPECT_EQ(warnings_of(kPi + "[[users]]\nname = \"bob\"\npassword_hash = \"!\"\n" + ops), "");
  EXPECT_EQ(warnings_of(kPi +
                        "[ssh]\nenable = false\n[[users]]\nname = \"bob\"\npassword_hash = \"!\"\n"
                        "ssh_authorized_keys = ['" +
                        kKey + "']\n" + ops),
            "");
}

// docs/spec.schema.json is what editors show next to the key: any SSH key in
// it (an "examples" value, say) must pass our own check, or copying it fails.
TEST(Spec, SchemaShowsNoSshKeyTheCheckRefuses) {
  const std::string schema = test::read_file(test::source_dir() / "docs" / "spec.schema.json");
  ASSERT_TRUE(has(schema, "\"ssh_keys\"")) << "the schema has no ssh_keys definition";
  for (const std::string type : {"\"ssh-", "\"ecdsa-sha2-", "\"sk-"}) {
    for (auto at = schema.find(type); at != std::string::npos; at = schema.find(type, at + 1)) {
      const std::string key = schema.substr(at + 1, schema.find('"', at + 1) - at - 1);
      if (key.find(' ') == std::string::npos) continue;  // a pattern or a key type, not a key
      SCOPED_TRACE(key);
      EXPECT_EQ(error_of(root_with(key, "")), "(no error)");
    }
  }
}

// Alpine's tarball ships start.elf, fixup.dat, start4.elf and fixup4.dat only
// (alpine-facts §2): lines that make the firmware load another file warn.
TEST(Spec, BootConfigNeedingFirmwareAlpineLacksWarns) {
  auto warn = [](const std::string& line) {
    return warnings_of(kPi + "[boot]\nconfig = [\"hdmi_force_hotplug=1\", \"" + line + "\"]\n");
  };
  EXPECT_EQ(warn("start_x=1"),
            "t.toml:4:35: [boot].config line \"start_x=1\" makes the firmware of a Pi 1-4 load the camera firmware "
            "start_x.elf and fixup_x.dat (start4x.elf and fixup4x.dat on a Pi 4), which Alpine's tarball does not "
            "ship (it has start.elf, fixup.dat, start4.elf and fixup4.dat): remove the line\n");
  EXPECT_TRUE(has(warn("start_debug=1"),
                  "load the debug firmware start_db.elf and fixup_db.dat (start4db.elf and "
                  "fixup4db.dat on a Pi 4)"));
  EXPECT_EQ(warn("gpu_mem=16"),
            "t.toml:4:35: [boot].config line \"gpu_mem=16\" makes the firmware of a Pi 1-4 load the cut-down "
            "firmware start_cd.elf and fixup_cd.dat (start4cd.elf and fixup4cd.dat on a Pi 4), which Alpine's "
            "tarball does not ship (it has start.elf, fixup.dat, start4.elf and fixup4.dat): give gpu_mem more than "
            "16 or remove the line\n");
  EXPECT_TRUE(has(warn("gpu_mem=8"), "start_cd.elf"));
  // gpu_mem_256/512/1024 are gpu_mem for a Pi with that much RAM.
  EXPECT_EQ(warn("gpu_mem_256=16"),
            "t.toml:4:35: [boot].config line \"gpu_mem_256=16\" makes the firmware of a Pi with 256 MB of RAM load "
            "the cut-down firmware start_cd.elf and fixup_cd.dat, which Alpine's tarball does not ship (it has "
            "start.elf, fixup.dat, start4.elf and fixup4.dat): give gpu_mem_256 more than 16 or remove the line\n");
  EXPECT_TRUE(has(warn("gpu_mem_512=8"), "a Pi with 512 MB of RAM load the cut-down firmware start_cd.elf"));
  EXPECT_TRUE(has(warn("gpu_mem_1024=16"),
                  "a Pi with 1024 MB of RAM load the cut-down firmware start_cd.elf and fixup_cd.dat (start4cd.elf and "
                  "fixup4cd.dat on a Pi 4)"));
  EXPECT_EQ(warn("start_file=start_db.elf"),
            "t.toml:4:35: [boot].config line \"start_file=start_db.elf\" makes the firmware load start_db.elf, which "
            "Alpine's tarball does not ship (its start files are start.elf and start4.elf): remove the line\n");
  EXPECT_EQ(warn("fixup_file=fixup_x.dat"),
            "t.toml:4:35: [boot].config line \"fixup_file=fixup_x.dat\" makes the firmware load fixup_x.dat, which "
            "Alpine's tarball does not ship (its fixup files are fixup.dat and fixup4.dat): remove the line\n");
  for (const char* fine :
       {"start_x=0", "start_debug=0", "gpu_mem=17", "gpu_mem=128", "start_file=start4.elf", "start_file=START.ELF",
        "fixup_file=fixup4.dat", "# start_x=1", "gpu_mem_256=17", "gpu_mem_1024=256", "gpu_mem_2048=16"}) {
    SCOPED_TRACE(fine);
    EXPECT_EQ(warn(fine), "");
  }
}

// --- new-user audit: example keys, secrets in errors, encodings, hints

namespace {
// "FILE:LINE:COL" of the first string on the line of `path` that contains `needle`,
// read from the file itself.
std::string place_of(const fs::path& path, const std::string& needle) {
  const std::string text = test::read_file(path);
  const auto at = text.find(needle);
  if (at == std::string::npos) return "(not found: " + needle + ")";
  const auto line_start = text.rfind('\n', at) + 1;  // npos + 1 == 0 on the first line
  const auto quote = text.find('"', line_start);
  const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n');
  return path.string() + ":" + std::to_string(line) + ":" + std::to_string(quote - line_start + 1);
}
std::string all_warnings(const Spec& spec) {
  std::string all;
  for (const auto& w : spec.warnings()) all += w.text() + "\n";
  return all;
}
const std::string kExampleWarning =
    " is rpi-provision's example key; nobody has its private key: replace it with your own public key";
}  // namespace

// The examples ship public keys whose private keys nobody has: a card built
// from them unchanged lets nobody in over SSH. Each says so where the key is,
// and the key is no way in for the login rules.
TEST(Spec, ExampleKeysWarnWhereTheyAreAndLetNobodyIn) {
  const fs::path headless = examples() / "headless.toml", kiosk = examples() / "kiosk.toml",
                 fleet = examples() / "fleet.toml";
  auto spec = load_spec(headless);
  std::string w = all_warnings(spec);
  EXPECT_TRUE(
      has(w, place_of(headless, "admin@example") + ": root's SSH key \"ssh-ed25519 admin@example\"" + kExampleWarning))
      << w;
  // Root has only that key: nobody can log in, and the summary says so.
  EXPECT_TRUE(has(w,
                  ": root's SSH key is rpi-provision's example key, whose private key nobody has, and there is no "
                  "[[users]] entry: nobody can log in to this Pi"))
      << w;
  EXPECT_TRUE(has(summary(resolve_host(spec, 1)), "  login     nobody")) << summary(resolve_host(spec, 1));

  // An admin whose only key is the example's: the card is what it will be with
  // the user's own key (root locked), and nobody can log in until then.
  spec = load_spec(kiosk);
  w = all_warnings(spec);
  EXPECT_TRUE(has(
      w, place_of(kiosk, "admin@example") + ": user admin's SSH key \"ssh-ed25519 admin@example\"" + kExampleWarning))
      << w;
  EXPECT_TRUE(has(w,
                  "root's password is locked (there is no [root], so the admins' SSH keys are to be the way in, "
                  "and rpi-provision's example key stands in for the admin's own), and no [[users]] entry can log "
                  "in (admin: no password, and its SSH key is rpi-provision's example key"))
      << w;
  EXPECT_TRUE(has(w, "nobody can log in to this Pi")) << w;
  EXPECT_FALSE(has(w, "root's password login is not locked")) << w;
  EXPECT_EQ(root_login(resolve_host(spec, 1)), RootLogin::locked);

  spec = load_spec(fleet);
  w = all_warnings(spec);
  EXPECT_TRUE(has(w, place_of(fleet, "teacher@school.example") +
                         ": user teacher's SSH key \"ssh-ed25519 teacher@school.example\"" + kExampleWarning))
      << w;
  // Said once for the ten cards that share the key.
  EXPECT_EQ(std::count(w.begin(), w.end(), '\n'), 2) << w;
}

TEST(Spec, AnExampleKeyIsKnownByItsKeyDataAndIsNoWayIn) {
  const std::string blob = "AAAAC3NzaC1lZDI1NTE5AAAAIHeLguboJt2OAmYzeA/Z4TVxebKDh2PkgXgHJPUhfUjq";
  // Another comment, options before it: still the example's key.
  for (const std::string& key : {"ssh-ed25519 " + blob + " me@laptop", "no-pty ssh-ed25519 " + blob,
                                 "from=\"10.0.0.0/8\" ssh-ed25519 " + blob + " renamed"}) {
    SCOPED_TRACE(key);
    const std::string admin = kPi + "[[users]]\nname = \"ops\"\nadmin = true\nssh_authorized_keys = ['" + key + "']\n";
    const std::string w = warnings_of(admin);
    EXPECT_TRUE(has(w, "t.toml:6:24: user ops's SSH key \"ssh-ed25519 ")) << w;
    EXPECT_TRUE(has(w, kExampleWarning)) << w;
    const auto h = resolve_host(parse_spec(admin, "t.toml", "."), 1);
    EXPECT_EQ(root_login(h), RootLogin::locked) << "the card is what the user's own key will give";
    EXPECT_TRUE(has(summary(h), "(no interactive login: no password, and its SSH key is rpi-provision's example key"))
        << summary(h);
  }
  // Next to a key its owner has, the admin logs in: only the example key is warned about.
  const std::string both = kPi + "[[users]]\nname = \"ops\"\nadmin = true\nssh_authorized_keys = ['ssh-ed25519 " +
                           blob + " x', '" + kKey + "']\n";
  const std::string w = warnings_of(both);
  EXPECT_EQ(std::count(w.begin(), w.end(), '\n'), 1) << w;
  EXPECT_EQ(root_login(resolve_host(parse_spec(both, "t.toml", "."), 1)), RootLogin::locked);
  // Root with the example key and a forced-command key: no shell for anyone.
  const std::string root = kPi + "[root]\nssh_authorized_keys = ['ssh-ed25519 " + blob + " x', '" + kForcedKey + "']\n";
  EXPECT_TRUE(has(warnings_of(root),
                  "t.toml:4:23: every key in [root].ssh_authorized_keys forces a command=\"...\" or is rpi-provision's "
                  "example key, and there is no [[users]] entry: nobody can log in to this Pi"))
      << warnings_of(root);
  const auto h = resolve_host(parse_spec(root, "t.toml", "."), 1);
  EXPECT_TRUE(has(summary(h), "2 ssh keys (no interactive login: rpi-provision's example key")) << summary(h);
  // sshd refusing root's keys, and an admin with the example key only: nobody could log in.
  EXPECT_TRUE(has(error_of(root_with(kKey,
                                     "[ssh]\npermit_root_login = \"no\"\n[[users]]\nname = \"ops\"\n"
                                     "admin = true\nssh_authorized_keys = ['ssh-ed25519 " +
                                         blob + "']\n")),
                  "nobody could log in to this Pi"));
}

// The compiled-in list follows the keys that examples/, the README and the docs
// show: every real key there must be one of them (placeholders are refused anyway).
TEST(Spec, EveryKeyShownInExamplesAndDocsIsAKnownExampleKey) {
  std::vector<fs::path> files = {test::source_dir() / "README.md", test::source_dir() / "docs" / "spec.md",
                                 test::source_dir() / "docs" / "rpi-provision.1"};
  for (const auto& e : fs::directory_iterator(examples()))
    if (e.path().extension() == ".toml") files.push_back(e.path());
  int keys = 0;
  for (const auto& f : files) {
    std::string text = test::read_file(f);
    // roff: "\-" is a hyphen, "\|" and "\&" print nothing.
    for (const auto& [escape, is] : {std::pair<std::string, std::string>{"\\-", "-"}, {"\\|", ""}, {"\\&", ""}})
      for (std::size_t at; (at = text.find(escape)) != std::string::npos;) text.replace(at, 2, is);
    for (const std::string type : {"ssh-ed25519 AAAA", "ssh-rsa AAAA", "ecdsa-sha2-nistp256 AAAA"}) {
      for (auto at = text.find(type); at != std::string::npos; at = text.find(type, at + 1)) {
        auto end = text.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
                                          at + type.size() - 4);
        if (end == std::string::npos) end = text.size();
        const std::string key = text.substr(at, end - at);
        if (text.compare(end, 3, "...") == 0 || text.compare(end, 3, "…") == 0) continue;  // a placeholder
        SCOPED_TRACE(f.string() + ": " + key);
        ++keys;
        EXPECT_EQ(error_of(root_with(key, "")), "(no error)");
        EXPECT_TRUE(has(warnings_of(root_with(key, "")), kExampleWarning));
      }
    }
  }
  EXPECT_GE(keys, 3) << "the examples have three keys";
}

// A { file = } path may be the passphrase typed in the wrong place: errors about
// the file never show it. Source and key files are no secrets and keep their path.
TEST(Spec, ASecretsFileIsNotNamedWhenItCannotBeRead) {
  test::TempDir dir;
  fs::create_directory(dir / "folder");
  const std::string wifi = kPi + "[wifi]\nssid = \"home\"\n";
  for (const auto& [spec, want] : std::vector<std::pair<std::string, std::string>>{
           {wifi + "psk = { file = \"correct horse battery staple\" }\n",
            "t.toml:5:16: cannot read the file given for [wifi].psk: no such file (path relative to t.toml's folder)"},
           {wifi + "psk = { file = \"/correct horse battery staple\" }\n",
            "t.toml:5:16: cannot read the file given for [wifi].psk: no such file"},
           {wifi + "psk = { file = \"folder\" }\n", "t.toml:5:16: the file given for [wifi].psk is not a regular file"},
           {kPi + "[root]\npassword = { file = \"correct horse battery staple\" }\n",
            "t.toml:4:21: cannot read the file given for [root].password: no such file (path relative to t.toml's "
            "folder)"},
           {kPi + "[[files]]\npath = \"/etc/token\"\ncontent = { file = \"correct horse battery staple\" }\n",
            "t.toml:5:20: cannot read the file given for [[files]].content: no such file (path relative to t.toml's "
            "folder)"},
       }) {
    SCOPED_TRACE(spec);
    const std::string e = error_of(spec, dir.path());
    EXPECT_EQ(e, want);
    EXPECT_FALSE(has(e, "horse")) << e;
    EXPECT_FALSE(has(e, "folder\"")) << e;
  }
  EXPECT_EQ(error_of(kPi + "[[files]]\npath = \"/etc/motd\"\nsource = \"motd.txt\"\n", dir.path()),
            "t.toml:5:10: cannot read " + (dir / "motd.txt").string() + " (source of /etc/motd): no such file");
  EXPECT_EQ(error_of(kPi + "[apk]\nkeys = [\"my.rsa.pub\"]\n", dir.path()),
            "t.toml:4:9: cannot read " + (dir / "my.rsa.pub").string() + " ([apk].keys): no such file");
}

// A rejected value names where it came from, as the "more than one line" error
// always did: the spec line shows only the reference.
TEST(Spec, ARejectedSecretSaysWhereItCameFrom) {
  test::TempDir dir;
  test::write_file(dir / "short.psk", "shortpw\n");
  test::write_file(dir / "long.psk", std::string(70, 'x') + "\n");
  ::setenv("RPI_T_SHORT_PSK", "shortpw", 1);
  const std::string wifi = kPi + "[wifi]\nssid = \"home\"\n";
  const std::string rule = " must be a passphrase of 8 to 63 printable ASCII characters (or 64 hex digits)";
  EXPECT_EQ(error_of(wifi + "psk = { env = \"RPI_T_SHORT_PSK\" }\n"),
            "t.toml:5:15: [wifi].psk (env RPI_T_SHORT_PSK)" + rule);
  EXPECT_EQ(error_of(wifi + "psk = { file = \"short.psk\" }\n", dir.path()),
            "t.toml:5:16: [wifi].psk (file short.psk)" + rule);
  EXPECT_EQ(error_of(wifi + "psk = { file = \"long.psk\" }\n", dir.path()),
            "t.toml:5:16: [wifi].psk (file long.psk)" + rule);
  EXPECT_EQ(error_of(wifi + "psk = \"shortpw\"\n"), "t.toml:5:7: [wifi].psk" + rule);
  ::unsetenv("RPI_T_SHORT_PSK");
  for (const auto& m :
       {error_of(wifi + "psk = { file = \"short.psk\" }\n", dir.path()), error_of(wifi + "psk = \"shortpw\"\n")})
    EXPECT_FALSE(has(m, "shortpw")) << m;
}

// Notepad saves UTF-8 with a byte-order mark: in a passphrase or password it
// would be part of the secret, in a script it hides the #! line, in an apk key
// it hides the key from apk. Copied files keep it, with a warning.
TEST(Spec, AByteOrderMarkInAFileTheSpecReadsIsSaidSo) {
  test::TempDir dir;
  const std::string bom = "\xEF\xBB\xBF";
  test::write_file(dir / "bom.psk", bom + "correct horse\r\n");
  test::write_file(dir / "bom.pw", bom + "hunter2hunter2\n");
  test::write_file(dir / "bom.sh", bom + "#!/bin/sh\necho hi\n");
  test::write_file(dir / "bom.rsa.pub", bom + "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n");
  test::write_file(dir / "bom.conf", bom + "key=value\n");
  const std::string marks = " starts with a byte-order mark (EF BB BF, as Notepad saves UTF-8)";
  EXPECT_EQ(error_of(kPi + "[wifi]\nssid = \"home\"\npsk = { file = \"bom.psk\" }\n", dir.path()),
            "t.toml:5:16: [wifi].psk (file bom.psk)" + marks + "; save it as UTF-8 without BOM");
  EXPECT_EQ(error_of(kPi + "[[users]]\nname = \"bob\"\npassword = { file = \"bom.pw\" }\n", dir.path()),
            "t.toml:5:21: [[users]].password (file bom.pw)" + marks + "; save it as UTF-8 without BOM");
  const std::string script =
      ", which hides its #! line and makes the shell read the mark as part of the first "
      "command: save it as UTF-8 without BOM";
  EXPECT_EQ(error_of(kPi + "[[scripts]]\nname = \"hello\"\nsource = \"bom.sh\"\n", dir.path()),
            "t.toml:5:10: script hello: source bom.sh" + marks + script);
  EXPECT_EQ(error_of(kPi + "[[scripts]]\nname = \"hello\"\ncontent = { file = \"bom.sh\" }\n", dir.path()),
            "t.toml:5:20: script hello: [[scripts]].content (file bom.sh)" + marks + script);
  EXPECT_EQ(error_of(kPi + "[apk]\nkeys = [\"bom.rsa.pub\"]\n", dir.path()),
            "t.toml:4:9: [apk].keys file bom.rsa.pub" + marks +
                ", so apk would not find the key in it: save it as UTF-8 without BOM (or copy the file from the "
                "repository as it is)");
  const std::string copied =
      ", which is copied too and may confuse what reads the file on the Pi: save it as UTF-8 without BOM if it is "
      "text\n";
  auto spec = parse_spec(kPi + "[[files]]\npath = \"/etc/a.conf\"\nsource = \"bom.conf\"\n" +
                             "[[files]]\npath = \"/etc/b.conf\"\ncontent = { file = \"bom.conf\" }\n",
                         "t.toml", dir.path());
  EXPECT_EQ(all_warnings(spec), "t.toml:5:10: [[files]] /etc/a.conf: source bom.conf" + marks + copied +
                                    "t.toml:8:20: [[files]] /etc/b.conf: [[files]].content (file bom.conf)" + marks +
                                    copied);
  EXPECT_EQ(resolve_host(spec, 1).files.at(0).content, bom + "key=value\n") << "copied byte for byte";
  // Without the mark, the same files are fine.
  test::write_file(dir / "ok.psk", "correct horse\n");
  EXPECT_EQ(error_of(kPi + "[wifi]\nssid = \"home\"\npsk = { file = \"ok.psk\" }\n", dir.path()), "(no error)");
}

// A spec saved with a UTF-8 byte-order mark reads as without; one saved as
// UTF-16 ("Unicode" in Windows editors) or Latin-1 says how to save it.
TEST(Spec, SpecEncodingsAreSaidPlainly) {
  test::TempDir dir;
  test::write_file(dir / "bom.toml", "\xEF\xBB\xBF" + kPi);
  EXPECT_EQ(resolve_host(load_spec(dir / "bom.toml"), 1).hostname, "pi");
  auto utf16 = [](const std::string& ascii, bool big_endian) {
    std::string out;
    for (char c : ascii) out += big_endian ? std::string{'\0', c} : std::string{c, '\0'};
    return out;
  };
  for (const auto& text :
       {"\xFF\xFE" + utf16(kPi, false), "\xFE\xFF" + utf16(kPi, true), utf16(kPi, false), utf16(kPi, true)}) {
    EXPECT_EQ(error_of(text), "t.toml:1:1: the spec is UTF-16 text; save it as UTF-8");
  }
  EXPECT_EQ(error_of(std::string("\xFF\xFE\0\0[\0\0\0", 8)), "t.toml:1:1: the spec is UTF-32 text; save it as UTF-8");
  EXPECT_EQ(error_of(kPi + "motd = \"M\xFCnchen\"\n"),
            "t.toml:3:9: this line holds text that is not UTF-8 (was the file saved as Latin-1 or Windows-1252?); "
            "save the spec as UTF-8");
}

TEST(Spec, LoadSpecSaysWhyItCannotReadTheSpec) {
  test::TempDir dir;
  try {
    load_spec(dir / "nope.toml");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::spec);
    EXPECT_EQ(std::string(e.what()), (dir / "nope.toml").string() + ": cannot read the spec: no such file");
  }
  if (::geteuid() == 0) GTEST_SKIP() << "root reads any file: CheckCommand.PermissionDeniedIsSaid runs as nobody";
  test::write_file(dir / "locked.toml", kPi);
  test::write_file(dir / "locked.psk", "correct horse\n");
  ::chmod((dir / "locked.toml").c_str(), 0);
  ::chmod((dir / "locked.psk").c_str(), 0);
  try {
    load_spec(dir / "locked.toml");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), (dir / "locked.toml").string() + ": cannot read the spec: permission denied");
  }
  EXPECT_EQ(error_of(kPi + "[wifi]\nssid = \"home\"\npsk = { file = \"locked.psk\" }\n", dir.path()),
            "t.toml:5:16: cannot read the file given for [wifi].psk: permission denied");
}

// toml++ says "cannot redefine existing string 'timezone'": say which key, where
// the first one is, and what to do.
TEST(Spec, AKeySetTwiceSaysWhereTheFirstOneIs) {
  EXPECT_EQ(error_of(kPi + "timezone = \"UTC\"\nkeymap = \"us us\"\ntimezone = \"Europe/Berlin\"\n"),
            "t.toml:5:12: timezone is set twice (first at 3:1); keep one");
  EXPECT_EQ(error_of(kPi + "[[users]]\nname = \"a\"\n[[users]]\nname = \"b\"\nshell = \"/bin/sh\"\n  name = \"c\"\n"),
            "t.toml:8:10: name is set twice (first at 6:1); keep one");
  EXPECT_EQ(error_of(kPi + "[[hosts]]\nhostname = \"a\"\n[hosts.wifi]\nssid = \"x\"\nssid = \"y\"\n"),
            "t.toml:7:8: ssid is set twice (first at 6:1); keep one");
  EXPECT_EQ(error_of(kPi + "[wifi]\nssid = \"x\"\n[system]\ntimezone = \"UTC\"\n"),
            "t.toml:5:1: [system] appears twice (first at 1:1); put its keys under one [system] header");
  // In an inline table the lines before do not show the first one.
  EXPECT_EQ(error_of(kPi + "wifi = { ssid = \"a\", ssid = \"b\" }\n"), "t.toml:3:29: ssid is set twice; keep one");
  // Not taken for a key of the same name in the table around it.
  EXPECT_EQ(error_of(kPi + "x = { hostname = \"a\", hostname = \"b\" }\n"),
            "t.toml:3:34: hostname is set twice; keep one");
}

// Unknown keys: besides spellings, the same key in other capitals and the words
// users often type for it.
TEST(Spec, UnknownKeysSuggestOtherCaseAndCommonWords) {
  auto unknown = [](const std::string& spec) { return error_of(spec).substr(error_of(spec).find(": ") + 2); };
  const std::string wifi = kPi + "[wifi]\nssid = \"home\"\n";
  for (const char* word : {"passphrase", "password", "key", "Passphrase", "PSK"})
    EXPECT_EQ(unknown(wifi + word + " = \"x\"\n"),
              "unknown key '" + std::string(word) + "' in [wifi] (did you mean 'psk'?)");
  EXPECT_EQ(unknown(kPi + "[wifi]\nSSID = \"home\"\n"), "unknown key 'SSID' in [wifi] (did you mean 'ssid'?)");
  EXPECT_EQ(unknown("[system]\nHostname = \"pi\"\n"), "unknown key 'Hostname' in [system] (did you mean 'hostname'?)");
  EXPECT_EQ(unknown(kPi + "tz = \"UTC\"\n"), "unknown key 'tz' in [system] (did you mean 'timezone'?)");
  EXPECT_EQ(unknown(kPi + "[WiFi]\nssid = \"home\"\n"), "unknown key 'WiFi' in the spec (did you mean 'wifi'?)");
  EXPECT_EQ(unknown(kPi + "[[users]]\nusername = \"bob\"\n"),
            "unknown key 'username' in [[users]] (did you mean 'name'?)");
  EXPECT_EQ(unknown(kPi + "[[users]]\nname = \"bob\"\nauthorized_keys = []\n"),
            "unknown key 'authorized_keys' in [[users]] (did you mean 'ssh_authorized_keys'?)");
  // "password" is a key of [root] and [[users]]: not taken for anything there.
  EXPECT_EQ(error_of(kPi + "[root]\npassword_hash = \"*\"\n").find("unknown"), std::string::npos);
}

TEST(Spec, AMistypedTimeZoneSuggestsTheZone) {
  auto tz = [](const std::string& zone) { return error_of(kPi + "timezone = \"" + zone + "\"\n"); };
  for (const auto& [typed, meant] : std::vector<std::pair<std::string, std::string>>{
           {"Europe/Berln", "Europe/Berlin"},
           {"europe/berlin", "Europe/Berlin"},
           {"Berlin", "Europe/Berlin"},
           {"America/New York", "America/New_York"},
           {"Asia/Kolkatta", "Asia/Kolkata"},
       }) {
    EXPECT_EQ(tz(typed),
              "t.toml:3:12: unknown time zone \"" + typed + "\" in [system].timezone (did you mean '" + meant + "'?)");
  }
  EXPECT_EQ(tz("Mars/Olympus_Mons"),
            "t.toml:3:12: unknown time zone \"Mars/Olympus_Mons\" in [system].timezone (use an IANA name like "
            "Europe/Berlin)");
}

// A group that a listed package creates at install (seatd's "seat", docker's
// "docker") is what the spec asks for: created ahead for the user, without a warning.
TEST(Spec, AGroupThatAListedPackageCreatesIsNotWarnedAbout) {
  auto with = [](const std::string& packages, const std::string& group) {
    return kPi + "[apk]\npackages = [" + packages + "]\n[[users]]\nname = \"kiosk\"\ngroups = [\"video\", \"" + group +
           "\"]\n";
  };
  EXPECT_EQ(warnings_of(with("\"seatd\"", "seat")), "");
  EXPECT_EQ(warnings_of(with("\"docker>=20\"", "docker")), "");
  EXPECT_EQ(warnings_of(with("", "seat")),
            "t.toml:7:10: group \"seat\" is not in Alpine's base layout; it is created with gid 1100 (it is the group "
            "of the seatd package, which is not in [apk].packages)\n");
  EXPECT_EQ(warnings_of(with("\"seatd\"", "kiosks")),
            "t.toml:7:10: group \"kiosks\" is not in Alpine's base layout; it is created with gid 1100\n");
  // Created either way, so the user is in it when the package arrives.
  const auto h = resolve_host(parse_spec(with("\"seatd\"", "seat"), "t.toml", "."), 1);
  ASSERT_EQ(h.extra_groups.size(), 1u);
  EXPECT_EQ(h.extra_groups[0], (std::pair<std::string, unsigned>{"seat", 1100}));
  // The kiosk example lists seatd: no word about its group.
  EXPECT_FALSE(has(all_warnings(load_spec(examples() / "kiosk.toml")), "group \"seat\""));
}

// `check` (MissingEnv::warn) goes on without a { env = } secret whose variable
// is not set, with a warning at the secret; a build (the default) stops there.
TEST(Spec, CheckWithoutAnEnvSecretWarnsWhereABuildFails) {
  const LoadOptions check{.missing_env = MissingEnv::warn};
  ::unsetenv("RPI_T_H2_PSK");
  const std::string text = kPi + "[wifi]\nssid = \"Net\"\npsk = { env = \"RPI_T_H2_PSK\" }\n";
  EXPECT_EQ(error_of(text),
            "t.toml:5:15: environment variable RPI_T_H2_PSK (for [wifi].psk) is not set; export it or use "
            "{ file = \"path\" }");
  const Spec spec = parse_spec(text, "t.toml", ".", check);
  EXPECT_EQ(all_warnings(spec),
            "t.toml:5:7: [wifi].psk: environment variable RPI_T_H2_PSK is not set; check went on without it, but "
            "building needs it\n");
  const HostConfig h = resolve_host(spec, 1);
  EXPECT_TRUE(h.wifi.enabled);
  ASSERT_EQ(h.wifi.networks.size(), 1u);
  EXPECT_TRUE(h.wifi.networks[0].psk.empty());
  EXPECT_EQ(h.wifi.networks[0].psk_unset_env, "RPI_T_H2_PSK");
  const std::string text_summary = summary(h);
  EXPECT_TRUE(has(text_summary, "  wifi      ssid \"Net\" psk not set (env RPI_T_H2_PSK) on wlan0\n")) << text_summary;
  EXPECT_FALSE(has(text_summary, "(secret)")) << text_summary;
  const auto unset = unset_secrets(h);
  ASSERT_EQ(unset.size(), 1u);
  EXPECT_EQ(unset[0].entry, "[wifi].psk");
  EXPECT_EQ(unset[0].variable, "RPI_T_H2_PSK");

  // The rest of the spec is still checked.
  try {
    parse_spec(text + "[ssh]\nhost_keys = \"never\"\n", "t.toml", ".", check);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "t.toml:7:13: [ssh].host_keys must be \"generate\" or \"first-boot\"");
  }
  // A { file = } secret lives beside the spec: a missing one is still an error.
  try {
    parse_spec(kPi + "[root]\npassword = { file = \"no-such-pw.txt\" }\n", "t.toml", ".", check);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "t.toml:4:21: cannot read the file given for [root].password: no such file")) << e.what();
  }

  // One warning for the [[hosts]] that share the secret; --host resolves the same way.
  const Spec hosts = parse_spec(
      "[system]\nhostname = \"a\"\n[wifi]\nssid = \"Net\"\npsk = { env = \"RPI_T_H2_PSK\" }\n"
      "[[hosts]]\nsystem.hostname = \"a\"\n[[hosts]]\nsystem.hostname = \"b\"\n",
      "t.toml", ".", check);
  EXPECT_EQ(hosts.warnings().size(), 1u) << all_warnings(hosts);
  EXPECT_EQ(resolve_host(hosts, 0, "b").wifi.networks.at(0).psk_unset_env, "RPI_T_H2_PSK");
}

// Empty is a value a password or psk can never have: CI passes a secret it does
// not have as an empty variable, so `check` takes it as not set. A build still
// refuses it (EmptyPasswordsAndPskAreRefused); an empty file content is a value.
TEST(Spec, CheckTakesAnEmptyPasswordVariableAsNotSet) {
  const LoadOptions check{.missing_env = MissingEnv::warn};
  ::setenv("RPI_T_H2_EMPTY", "", 1);
  const std::string text = kPi + "[wifi]\nssid = \"Net\"\npsk = { env = \"RPI_T_H2_EMPTY\" }\n";
  EXPECT_EQ(error_of(text), "t.toml:5:15: [wifi].psk (env RPI_T_H2_EMPTY) is empty");
  const Spec spec = parse_spec(text, "t.toml", ".", check);
  EXPECT_EQ(all_warnings(spec),
            "t.toml:5:7: [wifi].psk: environment variable RPI_T_H2_EMPTY is empty; check went on without it, but "
            "building needs its value\n");
  EXPECT_EQ(resolve_host(spec, 1).wifi.networks.at(0).psk_unset_env, "RPI_T_H2_EMPTY");
  const Spec file =
      parse_spec(kPi + "[[files]]\npath = \"/etc/a\"\ncontent = { env = \"RPI_T_H2_EMPTY\" }\n", "t.toml", ".", check);
  EXPECT_EQ(all_warnings(file), "");
  const HostConfig h = resolve_host(file, 1);
  ASSERT_EQ(h.files.size(), 1u);
  EXPECT_EQ(h.files[0].content_unset_env, "");
  EXPECT_TRUE(unset_secrets(h).empty());
  ::unsetenv("RPI_T_H2_EMPTY");

  // A value that is there is checked as in a build, and never shown.
  ::setenv("RPI_T_H2_SHORT", "h2short", 1);
  try {
    parse_spec(kPi + "[wifi]\nssid = \"Net\"\npsk = { env = \"RPI_T_H2_SHORT\" }\n", "t.toml", ".", check);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "t.toml:5:15: [wifi].psk (env RPI_T_H2_SHORT) must be a passphrase of 8 to 63 printable ASCII "
                 "characters (or 64 hex digits)");
  }
  ::unsetenv("RPI_T_H2_SHORT");
}

// What depends on a secret being there (who can log in, root's lock) comes out
// in `check` without the variable as in a build with it: the same warnings
// (plus the one per unset variable), the same error, the same summary.
TEST(Spec, AnUnsetEnvSecretCountsAsGivenInCheck) {
  const LoadOptions check{.missing_env = MissingEnv::warn};
  const std::string pw = "{ env = \"RPI_T_H2_SECRET\" }";
  const std::string marker = "check went on without it";
  const std::vector<std::string> specs = {
      // An admin with a password only: root is locked, somebody logs in.
      kPi + "[[users]]\nname = \"bob\"\nadmin = true\npassword = " + pw + "\n",
      // Root's password is the only way in.
      kPi + "[root]\npassword = " + pw + "\n",
      // sshd off with root's keys: root's password is what keeps the Pi reachable.
      kPi + "[root]\npassword = " + pw + "\nssh_authorized_keys = [\"" + kKey + "\"]\n[ssh]\nenable = false\n",
      // A plain user with a password, root locked; Wi-Fi from the same variable.
      kPi + "[wifi]\nssid = \"Net\"\npsk = " + pw + "\n[[users]]\nname = \"bob\"\npassword = " + pw +
          "\n[root]\npassword_hash = \"*\"\n",
  };
  auto outcome = [&](const std::string& text, const LoadOptions& options) {
    try {
      const Spec spec = parse_spec(text, "t.toml", ".", options);
      std::string out;
      for (const auto& w : spec.warnings())
        if (!has(w.message, marker)) out += w.text() + "\n";
      std::string s = summary(resolve_host(spec, 1));
      for (std::string::size_type at; (at = s.find("not set (env RPI_T_H2_SECRET)")) != std::string::npos;)
        s.replace(at, std::string("not set (env RPI_T_H2_SECRET)").size(), "(secret)");
      return out + s;
    } catch (const Error& e) {
      return std::string("error: ") + e.what();
    }
  };
  for (const auto& text : specs) {
    SCOPED_TRACE(text);
    ::setenv("RPI_T_H2_SECRET", "a-good-passphrase", 1);
    const std::string built = outcome(text, {});
    ::unsetenv("RPI_T_H2_SECRET");
    const std::string checked = outcome(text, check);
    EXPECT_EQ(checked, built);
    EXPECT_FALSE(has(checked, "error:")) << checked;
    EXPECT_FALSE(has(checked, "nobody")) << checked;
    EXPECT_TRUE(has(all_warnings(parse_spec(text, "t.toml", ".", check)), marker));
  }
  // The oracle can tell: without the passwords, the same specs lock everybody out.
  EXPECT_TRUE(has(warnings_of(kPi + "[[users]]\nname = \"bob\"\nadmin = true\n"), "cannot log in"));
  EXPECT_TRUE(has(warnings_of(kPi + "[root]\npassword_hash = \"*\"\n"), "nobody can log in"));
  EXPECT_TRUE(has(error_of(kPi + "[root]\nssh_authorized_keys = [\"" + kKey + "\"]\n[ssh]\nenable = false\n"),
                  "nobody could log in"));
}

// --- several Wi-Fi networks: [wifi]'s own, then [[wifi.networks]] in order

namespace {
// [wifi] with its own network and two more (line numbers in the tests below).
const std::string kThreeNetworks = kPi +                                  // 1-2
                                   "[wifi]\n"                             // 3
                                   "country = \"DE\"\n"                   // 4
                                   "ssid = \"classroom\"\n"               // 5
                                   "psk = { env = \"RPI_T_W_CLASS\" }\n"  // 6
                                   "[[wifi.networks]]\n"                  // 7
                                   "ssid = \"staff\"\n"                   // 8
                                   "psk = { env = \"RPI_T_W_STAFF\" }\n"  // 9
                                   "hidden = true\n"                      // 10
                                   "priority = 5\n"                       // 11
                                   "[[wifi.networks]]\n"                  // 12
                                   "ssid = \"lab-{n}\"\n"                 // 13
                                   "psk = { env = \"RPI_T_W_LAB\" }\n";   // 14
void set_network_secrets() {
  ::setenv("RPI_T_W_CLASS", "classroom-passphrase", 1);
  ::setenv("RPI_T_W_STAFF", "staff-room-passphrase", 1);
  ::setenv("RPI_T_W_LAB", "lab-bench-passphrase", 1);
}
}  // namespace

TEST(Spec, WifiNetworksFollowTheWifiTablesOwnInSpecOrder) {
  set_network_secrets();
  const HostConfig h = resolve_host(parse_spec(kThreeNetworks, "t.toml", "."), 3);
  ASSERT_TRUE(h.wifi.enabled);
  ASSERT_EQ(h.wifi.networks.size(), 3u);
  EXPECT_EQ(h.wifi.country, "DE");
  EXPECT_EQ(h.wifi.interface, "wlan0");
  const auto& n = h.wifi.networks;
  EXPECT_EQ(n[0].ssid, "classroom");
  EXPECT_EQ(n[0].psk, "classroom-passphrase");
  EXPECT_EQ(n[0].entry, "[wifi]");
  EXPECT_FALSE(n[0].hidden);
  EXPECT_FALSE(n[0].priority.has_value());
  EXPECT_EQ(n[1].ssid, "staff");
  EXPECT_EQ(n[1].psk, "staff-room-passphrase");
  EXPECT_EQ(n[1].entry, "[[wifi.networks]]");
  EXPECT_TRUE(n[1].hidden);
  EXPECT_EQ(n[1].priority, std::optional<std::int64_t>(5));
  EXPECT_EQ(n[2].ssid, "lab-3") << "{n} is expanded in an entry's ssid";
  EXPECT_EQ(n[2].psk, "lab-bench-passphrase");
  EXPECT_FALSE(n[2].hidden);
  EXPECT_FALSE(n[2].priority.has_value());
  // The summary lists every ssid, never a passphrase.
  const std::string s = summary(h);
  EXPECT_TRUE(has(s,
                  "  wifi      ssid \"classroom\" psk (secret) country DE on wlan0\n"
                  "  wifi      ssid \"staff\" psk (secret) hidden priority 5\n"
                  "  wifi      ssid \"lab-3\" psk (secret)\n"))
      << s;
  for (const char* secret : {"classroom-passphrase", "staff-room-passphrase", "lab-bench-passphrase"})
    EXPECT_FALSE(has(s, secret)) << s;
  // Only the wifi interface is added (once) for all of them.
  ASSERT_EQ(h.network.interfaces.size(), 2u);
  EXPECT_EQ(h.network.interfaces[1].name, "wlan0");

  // [wifi] may give only networks; [wifi].priority is its own network's.
  const HostConfig only = resolve_host(
      parse_spec(kPi + "[wifi]\ninterface = \"wlan1\"\nnetworks = [{ ssid = \"a\", psk = \"passphrase-a\", priority = "
                       "-2 }, { ssid = \"b\", psk = { env = \"RPI_T_W_LAB\" } }]\n",
                 "t.toml", "."),
      1);
  ASSERT_EQ(only.wifi.networks.size(), 2u);
  EXPECT_EQ(only.wifi.networks[0].ssid, "a");
  EXPECT_EQ(only.wifi.networks[0].priority, std::optional<std::int64_t>(-2));
  EXPECT_EQ(only.wifi.networks[1].ssid, "b");
  EXPECT_TRUE(has(summary(only), "  wifi      ssid \"a\" psk (secret) priority -2 on wlan1\n")) << summary(only);
  const HostConfig own =
      resolve_host(parse_spec(kPi + "[wifi]\nssid = \"a\"\npsk = \"passphrase-a\"\npriority = 3\n", "t.toml", "."), 1);
  ASSERT_EQ(own.wifi.networks.size(), 1u);
  EXPECT_EQ(own.wifi.networks[0].priority, std::optional<std::int64_t>(3));
}

TEST(Spec, WifiNetworkErrorsAreLocated) {
  set_network_secrets();
  const std::string wifi = kPi + "[wifi]\nssid = \"classroom\"\npsk = \"passphrase-1\"\n";  // lines 3-5
  // The same ssid twice names both places: [wifi]'s and an entry's, or two entries'.
  EXPECT_EQ(error_of(wifi + "[[wifi.networks]]\nssid = \"classroom\"\npsk = \"passphrase-2\"\n"),
            "t.toml:7:8: Wi-Fi network \"classroom\" is given twice (first at t.toml:4:8); keep one");
  EXPECT_EQ(error_of(kThreeNetworks + "[[wifi.networks]]\npsk = \"passphrase-3\"\nssid = \"staff\"\n"),
            "t.toml:17:8: Wi-Fi network \"staff\" is given twice (first at t.toml:8:8); keep one");
  // After {n}: two entries that only the template told apart.
  EXPECT_EQ(error_of(wifi + "[[wifi.networks]]\nssid = \"lab-{n}\"\npsk = \"passphrase-2\"\n"
                            "[[wifi.networks]]\nssid = \"lab-1\"\npsk = \"passphrase-3\"\n"),
            "t.toml:10:8: Wi-Fi network \"lab-1\" is given twice (first at t.toml:7:8); keep one");
  // Unknown keys in an entry, with a did-you-mean (a spelling, or a word meant for psk).
  EXPECT_EQ(error_of(wifi + "[[wifi.networks]]\nssid = \"staff\"\npsk = \"passphrase-2\"\nprio = 5\n"),
            "t.toml:9:1: unknown key 'prio' in [[wifi.networks]] (did you mean 'priority'?)");
  EXPECT_EQ(error_of(wifi + "[[wifi.networks]]\nssid = \"staff\"\npassphrase = \"passphrase-2\"\n"),
            "t.toml:8:1: unknown key 'passphrase' in [[wifi.networks]] (did you mean 'psk'?)");
  // country and interface are [wifi]'s, for all networks.
  EXPECT_EQ(error_of(wifi + "[[wifi.networks]]\nssid = \"staff\"\npsk = \"passphrase-2\"\ncountry = \"DE\"\n"),
            "t.toml:9:1: unknown key 'country' in [[wifi.networks]]");
  // "network" in [wifi] is the ssid as a string, more networks as a table or list.
  EXPECT_EQ(error_of(wifi + "[[wifi.network]]\nssid = \"staff\"\n"),
            "t.toml:6:8: unknown key 'network' in [wifi] (did you mean 'networks'?)");
  EXPECT_EQ(error_of(kPi + "[wifi]\nnetwork = \"home\"\n"),
            "t.toml:4:1: unknown key 'network' in [wifi] (did you mean 'ssid'?)");
  // A psk is required as in [wifi]; so is the ssid.
  EXPECT_EQ(error_of(wifi + "[[wifi.networks]]\nssid = \"staff\"\nhidden = true\n"),
            "t.toml:6:1: [[wifi.networks]] entry \"staff\" needs a psk (the passphrase, e.g. psk = { env = "
            "\"STAFF_PSK\" })");
  EXPECT_EQ(error_of(wifi + "[[wifi.networks]]\npsk = \"passphrase-2\"\n"),
            "t.toml:6:1: [[wifi.networks]] entry needs an ssid");
  EXPECT_EQ(error_of(wifi + "[[wifi.networks]]\nssid = \"\"\npsk = \"passphrase-2\"\n"),
            "t.toml:7:8: [[wifi.networks]].ssid must be 1 to 32 bytes");
  // The psk rules are [wifi].psk's, named after where the value came from (never the value).
  ::setenv("RPI_T_W_SHORT", "short", 1);
  EXPECT_EQ(error_of(wifi + "[[wifi.networks]]\nssid = \"staff\"\npsk = { env = \"RPI_T_W_SHORT\" }\n"),
            "t.toml:8:15: [[wifi.networks]].psk (env RPI_T_W_SHORT) must be a passphrase of 8 to 63 printable ASCII "
            "characters (or 64 hex digits)");
  ::unsetenv("RPI_T_W_SHORT");
  EXPECT_EQ(error_of(wifi + "[[wifi.networks]]\nssid = \"staff\"\npsk = { env = \"RPI_T_W_SHORT\" }\n"),
            "t.toml:8:15: environment variable RPI_T_W_SHORT (for [[wifi.networks]].psk) is not set; export it or "
            "use { file = \"path\" }");
  EXPECT_EQ(error_of(wifi + "[[wifi.networks]]\nssid = \"staff\"\npsk = \"passphrase-2\"\npriority = 2147483648\n"),
            "t.toml:9:12: [[wifi.networks]].priority must be between -2147483648 and 2147483647");
  EXPECT_EQ(error_of(wifi + "[[wifi.networks]]\nssid = \"staff\"\npsk = \"passphrase-2\"\npriority = \"5\"\n"),
            "t.toml:9:12: [[wifi.networks]].priority must be an integer, not a string");
  EXPECT_EQ(error_of(kPi + "[wifi]\nnetworks = { ssid = \"staff\" }\n"),
            "t.toml:4:12: [[wifi.networks]] must be an array of tables, not a table");
  // Without networks [wifi] still needs its ssid; with them, its psk has no network to go with.
  EXPECT_EQ(error_of(kPi + "[wifi]\ncountry = \"DE\"\n"),
            "t.toml:3:1: [wifi] needs an ssid (or [[wifi.networks]] entries)");
  EXPECT_EQ(error_of(kPi + "[wifi]\npsk = \"passphrase-1\"\n[[wifi.networks]]\nssid = \"staff\"\npsk = "
                           "\"passphrase-2\"\n"),
            "t.toml:4:7: [wifi].psk is for the network [wifi].ssid names, and [wifi] has no ssid; add one, or move "
            "it into a [[wifi.networks]] entry");
  EXPECT_EQ(error_of(wifi + "[[wifi.networks]]\nssid = \"staff\"\npsk = \"passphrase-2\"\n"), "(no error)");
}

// `check` without an entry's variable: a warning at it, the entry named with its
// ssid among the unset secrets, the summary says so; a build stops.
TEST(Spec, CheckGoesOnWithoutAWifiNetworksVariable) {
  set_network_secrets();
  ::unsetenv("RPI_T_W_STAFF");
  EXPECT_EQ(error_of(kThreeNetworks),
            "t.toml:9:15: environment variable RPI_T_W_STAFF (for [[wifi.networks]].psk) is not set; export it or "
            "use { file = \"path\" }");
  const Spec spec = parse_spec(kThreeNetworks, "t.toml", ".", LoadOptions{.missing_env = MissingEnv::warn});
  EXPECT_EQ(all_warnings(spec),
            "t.toml:9:7: [[wifi.networks]].psk: environment variable RPI_T_W_STAFF is not set; check went on "
            "without it, but building needs it\n");
  const HostConfig h = resolve_host(spec, 1);
  ASSERT_EQ(h.wifi.networks.size(), 3u);
  EXPECT_EQ(h.wifi.networks[1].psk_unset_env, "RPI_T_W_STAFF");
  const auto unset = unset_secrets(h);
  ASSERT_EQ(unset.size(), 1u);
  EXPECT_EQ(unset[0].entry, "[[wifi.networks]].psk for staff");
  EXPECT_EQ(unset[0].variable, "RPI_T_W_STAFF");
  EXPECT_TRUE(has(summary(h), "  wifi      ssid \"staff\" psk not set (env RPI_T_W_STAFF) hidden priority 5\n"))
      << summary(h);
}

// A host's [hosts.wifi] overrides key by key, like every table; `networks` is
// one key: a host's list replaces the base's whole, and `networks = []` drops it.
TEST(Spec, AHostsWifiNetworksReplaceTheBaseList) {
  set_network_secrets();
  const Spec spec = parse_spec(kThreeNetworks +
                                   "[[hosts]]\nhostname = \"keeps\"\n"
                                   "[[hosts]]\nhostname = \"own\"\n[hosts.wifi]\nssid = \"library\"\n"
                                   "[[hosts.wifi.networks]]\nssid = \"office\"\npsk = \"office-passphrase\"\n"
                                   "[[hosts]]\nhostname = \"none\"\nwifi.networks = []\n",
                               "t.toml", ".");
  auto ssids = [](const HostConfig& h) {
    std::vector<std::string> out;
    for (const auto& n : h.wifi.networks) out.push_back(n.ssid);
    return out;
  };
  const HostConfig keeps = resolve_host(spec, 0, "keeps");
  EXPECT_EQ(ssids(keeps), (std::vector<std::string>{"classroom", "staff", "lab-1"}));
  const HostConfig own = resolve_host(spec, 0, "own");
  EXPECT_EQ(ssids(own), (std::vector<std::string>{"library", "office"}));
  // The ssid is the host's, the psk and country still the base's.
  EXPECT_EQ(own.wifi.networks[0].psk, "classroom-passphrase");
  EXPECT_EQ(own.wifi.country, "DE");
  EXPECT_EQ(own.wifi.networks[1].psk, "office-passphrase");
  EXPECT_EQ(ssids(resolve_host(spec, 0, "none")), (std::vector<std::string>{"classroom"}));
  // A host's entry is checked against the base's [wifi].ssid, which it keeps.
  EXPECT_EQ(error_of(kThreeNetworks + "[[hosts]]\nhostname = \"a\"\n[[hosts.wifi.networks]]\nssid = \"classroom\"\n"
                                      "psk = \"passphrase-2\"\n"),
            "t.toml:18:8: Wi-Fi network \"classroom\" is given twice (first at t.toml:5:8); keep one");
}

// The docs' [wifi] example loads through the loader with the networks it shows.
TEST(Spec, TheDocsWifiExampleLoads) {
  const std::string doc = test::read_file(test::source_dir() / "docs" / "spec.md");
  const auto section = doc.find("## `[[wifi.networks]]`");
  ASSERT_NE(section, std::string::npos) << "docs/spec.md has no [[wifi.networks]] section";
  const auto open = doc.find("```toml\n", section);
  ASSERT_NE(open, std::string::npos);
  const auto body = open + 8;
  const std::string block = doc.substr(body, doc.find("```", body) - body);
  ::setenv("WIFI_PSK", "classroom-passphrase", 1);
  ::setenv("STAFF_PSK", "staff-room-passphrase", 1);
  const HostConfig h = resolve_host(parse_spec(kPi + block, "spec.md", "."), 1);
  ::unsetenv("WIFI_PSK");
  ::unsetenv("STAFF_PSK");
  EXPECT_GE(h.wifi.networks.size(), 2u) << block;
}

// --- every error of a spec at once

namespace {
// The messages of a spec with several errors (SpecErrors); none when it loads
// or has one error.
std::vector<std::string> errors_of(const std::string& text) {
  try {
    parse_spec(text, "t.toml", ".");
  } catch (const SpecErrors& e) {
    EXPECT_EQ(e.code(), Errc::spec);
    if (e.messages().size() == 1) ADD_FAILURE() << "one error only: " << e.what();
    return e.messages();
  }
  return {};
}
}  // namespace

// Three independent mistakes in three tables: all three, in line order (not the
// order the tables are checked in), each as the spec with only that mistake says it.
TEST(Spec, EveryErrorOfASpecIsSaidInLineOrder) {
  const std::string boot = "[boot]\nlabel = \"BOOT\"\n";
  const std::string system = "[system]\nhostname = \"pi\"\ncolour = \"blue\"\n";
  const std::string network = "[network]\ndns = [\"192.168.1.1\", \"999.1.1.1\"]\n";
  const std::string text = boot + system + network;
  const auto got = errors_of(text);
  // Each alone, at the line it has in the whole spec (blank lines keep the places).
  const std::string alone_boot = error_of(boot + "[system]\nhostname = \"pi\"\n");
  const std::string alone_system = error_of("\n\n" + system);
  const std::string alone_network = error_of(kPi + "\n\n\n" + network);
  EXPECT_EQ(alone_boot.substr(0, 11), "t.toml:2:9:");
  EXPECT_EQ(alone_system, "t.toml:5:1: unknown key 'colour' in [system]");
  EXPECT_EQ(alone_network, "t.toml:7:23: [network].dns entry \"999.1.1.1\" is not an IP address");
  EXPECT_EQ(got, (std::vector<std::string>{alone_boot, alone_system, alone_network}));
  // what() is them one per line: callers that print it show them all.
  EXPECT_EQ(error_of(text), alone_boot + "\n" + alone_system + "\n" + alone_network);
}

TEST(Spec, EveryBadEntryOfAnArrayOfTablesIsSaid) {
  const auto users =
      errors_of(kPi + "[[users]]\nname = \"Bad Name\"\n[[users]]\nname = \"ok\"\n[[users]]\nname = \"root\"\n");
  ASSERT_EQ(users.size(), 2u);
  EXPECT_TRUE(has(users[0], "t.toml:4:8: user name \"Bad Name\" ")) << users[0];
  EXPECT_EQ(users[1], "t.toml:8:8: configure root in [root], not [[users]]");
  const auto files =
      errors_of(kPi +
                "[[files]]\npath = \"relative\"\ncontent = \"a\"\n[[files]]\npath = \"/etc/b\"\nmode = \"999\"\n"
                "content = \"b\"\n[[scripts]]\nname = \"a\"\n[[scripts]]\nname = \"b\"\ncontent = \"\"\n");
  ASSERT_EQ(files.size(), 3u);
  EXPECT_TRUE(has(files[0], "t.toml:4:8: [[files]].path \"relative\" ")) << files[0];
  EXPECT_TRUE(has(files[1], "t.toml:8:8: [[files]].mode must be an octal string")) << files[1];
  EXPECT_EQ(files[2], "t.toml:10:1: script a needs exactly one of content or source");
  // An entry with a mistake still counts for the next ones: its ssid is taken.
  const auto nets = errors_of(kPi +
                              "[[network.interfaces]]\nname = \"eth0\"\ndhcp = false\n"
                              "[[network.interfaces]]\nname = \"eth1\"\naddress = \"10.0.0.300/24\"\n"
                              "[wifi]\ncountry = \"de\"\n[[wifi.networks]]\nssid = \"a\"\npsk = \"short\"\n"
                              "[[wifi.networks]]\nssid = \"a\"\npsk = \"long-enough\"\n");
  ASSERT_EQ(nets.size(), 5u);
  EXPECT_TRUE(has(nets[0], "t.toml:3:1: interface eth0 has dhcp = false but no address")) << nets[0];
  EXPECT_TRUE(has(nets[1], "t.toml:8:11: invalid address \"10.0.0.300/24\" for eth1")) << nets[1];
  EXPECT_TRUE(has(nets[2], "t.toml:10:11: [wifi].country must be")) << nets[2];
  EXPECT_TRUE(has(nets[3], "t.toml:13:7: [[wifi.networks]].psk must be a passphrase")) << nets[3];
  EXPECT_EQ(nets[4], "t.toml:15:8: Wi-Fi network \"a\" is given twice (first at t.toml:12:8); keep one");
}

// A base table is seen by every [[hosts]] entry: its mistake is said once. The
// hosts' own mistakes are each said.
TEST(Spec, AMistakeInABaseTableIsSaidOnceForAllHosts) {
  EXPECT_EQ(error_of("[system]\nhostname = \"pi-{n}\"\ncolour = \"blue\"\n[[hosts]]\n[[hosts]]\n[[hosts]]\n"),
            "t.toml:3:1: unknown key 'colour' in [system]");
  // A templated value gives each card its own text: still one place, one error.
  const std::string zone =
      error_of("[system]\nhostname = \"pi-{n}\"\ntimezone = \"Mars/{n}\"\n[[hosts]]\n[[hosts]]\n[[hosts]]\n");
  EXPECT_EQ(zone.find('\n'), std::string::npos) << zone;
  EXPECT_EQ(zone.substr(0, 12), "t.toml:3:12:") << zone;
  const auto macs = errors_of(
      "[system]\nhostname = \"pi-{n}\"\ncolour = \"blue\"\n[[hosts]]\nmac = \"x\"\n[[hosts]]\n[[hosts]]\nmac = "
      "\"y\"\n");
  EXPECT_EQ(macs, (std::vector<std::string>{
                      "t.toml:3:1: unknown key 'colour' in [system]",
                      "t.toml:5:7: [[hosts]].mac must be a MAC address like \"b8:27:eb:12:34:56\"",
                      "t.toml:8:7: [[hosts]].mac must be a MAC address like \"b8:27:eb:12:34:56\"",
                  }));
}

// A duplicate hostname or mac is said even when one of the cards has another
// problem (fixing that one would only reveal it); a hostname that is itself
// wrong is not compared.
TEST(Spec, ADuplicateIsSaidBesideACardsOtherProblem) {
  const auto dup = errors_of(
      "[system]\nhostname = \"pi\"\n[[hosts]]\nhostname = \"a\"\nmac = \"b8:27:eb:00:00:01\"\n"
      "[[hosts]]\nhostname = \"a\"\nmac = \"b8:27:eb:00:00:01\"\nnetwork = { dns = [\"x\"] }\n");
  EXPECT_EQ(dup, (std::vector<std::string>{
                     "t.toml:6:1: hostname \"a\" is used by two [[hosts]] entries",
                     "t.toml:9:20: [network].dns entry \"x\" is not an IP address",
                 }))
      << "one place, so the mac's duplicate (also at 6:1) is not said twice";
  const auto bad =
      errors_of("[system]\nhostname = \"pi\"\n[[hosts]]\nhostname = \"a b\"\n[[hosts]]\nhostname = \"a b\"\n");
  ASSERT_EQ(bad.size(), 2u);
  for (const auto& m : bad) EXPECT_EQ(m.find("used by two"), std::string::npos) << m;
}

// A check of the whole card does not run on a card with a problem: it would
// see the card without the broken part and say what is not so.
TEST(Spec, ABrokenEntryCausesNoErrorsAboutTheWholeCard) {
  const std::string refused = root_with(kKey, "[ssh]\npermit_root_login = \"no\"\n");
  // Control: without an admin, nobody could log in (an error).
  ASSERT_TRUE(has(error_of(refused), "nobody could log in to this Pi"));
  const std::string admin = "[[users]]\nname = \"ops\"\nadmin = true\nssh_authorized_keys = ['" + kKey + "']\n";
  const std::string owned = "[[files]]\npath = \"/etc/ops.conf\"\ncontent = \"a\"\nowner = \"ops\"\n";
  // Control: with a working admin who owns a file, the spec loads.
  EXPECT_NO_THROW(parse_spec(refused + admin + owned, "t.toml", "."));
  // The admin's entry has a mistake: that mistake alone, not "nobody could log
  // in", nor "owner ops names no user" for the file.
  EXPECT_EQ(error_of(refused + admin + "shell = \"bin/ash\"\n" + owned),
            "t.toml:11:9: shell must be an absolute path (start with '/')");
  // A mistyped table name: the typo, not "[system].hostname is required".
  EXPECT_EQ(error_of("sytem = { hostname = \"pi\" }\n"),
            "t.toml:1:1: unknown key 'sytem' in the spec (did you mean 'system'?)");
  // Nor a hostname the card lacks for a [[hosts]] entry's typo.
  EXPECT_EQ(error_of("[system]\nhostname = \"pi-{n}\"\n[[hosts]]\nhostnme = \"a\"\n"),
            "t.toml:4:1: unknown key 'hostnme' in [[hosts]] (did you mean 'hostname'?)");
  // A table that is not a table is said once, not again by its own check.
  EXPECT_EQ(error_of("users = 5\n" + kPi), "t.toml:1:9: [[users]] must be an array of tables");
}

TEST(Spec, AtMostTwentyErrorsThenHowManyMore) {
  std::string text = kPi;
  for (int i = 0; i < 25; ++i) text += "[[users]]\nname = \"Bad" + std::to_string(i) + "\"\n";
  try {
    parse_spec(text, "t.toml", ".");
    FAIL() << "no error";
  } catch (const SpecErrors& e) {
    ASSERT_EQ(e.messages().size(), 20u);
    EXPECT_EQ(e.more(), 5u);
    for (std::size_t i = 0; i < 20; ++i) {
      // Entry i is on line 4 + 2i, in file order.
      EXPECT_TRUE(has(e.messages()[i],
                      "t.toml:" + std::to_string(4 + 2 * i) + ":8: user name \"Bad" + std::to_string(i) + "\""))
          << e.messages()[i];
    }
    const std::string what = e.what();
    EXPECT_EQ(std::count(what.begin(), what.end(), '\n'), 20) << what;
    EXPECT_EQ(what.substr(what.rfind('\n') + 1), "… and 5 more errors");
    EXPECT_EQ(e.more_text(), "… and 5 more errors");
  }
}

// --- places as data (Place) for errors found after loading, and warnings' excerpts

// [apk].packages entries and [system].keymap carry their place and the line
// there: packages a repository lacks and a keymap the tarball lacks are found
// after loading, and shown like the loader's errors.
TEST(SpecPlace, PackagesAndKeymapCarryTheirPlaceAndLine) {
  auto spec =
      parse_spec(kPi + "keymap = \"de de-nodeadkeys\"\n[apk]\npackages = [\"cage\",\n  \"seatd\"]\n", "t.toml", ".");
  const HostConfig h = resolve_host(spec, 1);
  EXPECT_EQ(h.keymap_location.text(), "t.toml:3:10");
  EXPECT_EQ(h.keymap_location.file, "t.toml");
  EXPECT_EQ(h.keymap_location.line, 3u);
  EXPECT_EQ(h.keymap_location.column, 10u);
  EXPECT_EQ(h.keymap_location.excerpt, "keymap = \"de de-nodeadkeys\"");
  ASSERT_EQ(h.apk.package_locations.size(), 2u);
  EXPECT_EQ(h.apk.package_locations[0].text(), "t.toml:5:13");
  EXPECT_EQ(h.apk.package_locations[0].excerpt, "packages = [\"cage\",");
  // A line inside an array opened on an earlier line is shown too: the loader
  // knows it holds no secret.
  EXPECT_EQ(h.apk.package_locations[1].text(), "t.toml:6:3");
  EXPECT_EQ(h.apk.package_locations[1].excerpt, "  \"seatd\"]");

  const SpecProblem p = h.keymap_location.problem("t.toml:3:10: [system].keymap is wrong");
  EXPECT_EQ(p.message, "t.toml:3:10: [system].keymap is wrong");
  EXPECT_EQ(p.file, "t.toml");
  EXPECT_EQ(p.line, 3u);
  EXPECT_EQ(p.column, 10u);
  EXPECT_EQ(p.excerpt, h.keymap_location.excerpt);
  // No place: the spec's name alone, nothing shown under the message.
  const Place none{"t.toml", 0, 0, "x"};
  EXPECT_EQ(none.text(), "t.toml");
  EXPECT_EQ(none.problem("t.toml: m").excerpt, "");
  EXPECT_EQ(Place{}.text(), "");
}

// A warning carries the line it is at, unless that line may hold a secret.
TEST(SpecPlace, WarningsCarryTheirLineButNeverASecretOne) {
  auto spec =
      parse_spec(kPi +
                     "[ssh]\nhost_keys = \"first-boot\"\n[boot]\napkovl_url = \"http://srv/{MAC}.apkovl.tar.gz\"\n"
                     "[wifi]\nssid = \"Net\"\npsk = \"literal-passphrase\"\n"
                     "[[users]]\nname = \"bob\"\npassword = \"hunter2hunter2\"\n",
                 "t.toml", ".");
  bool boot = false;
  for (const auto& w : spec.warnings()) {
    if (w.location == "t.toml:5:1") {
      boot = true;
      EXPECT_EQ(w.excerpt, "[boot]");
    } else {
      EXPECT_EQ(w.excerpt, "") << w.text();
    }
    EXPECT_EQ(w.excerpt.find("literal-passphrase"), std::string::npos);
    EXPECT_EQ(w.excerpt.find("hunter2"), std::string::npos);
  }
  EXPECT_TRUE(boot) << "no warning at [boot]";
  EXPECT_GE(spec.warnings().size(), 3u);
}

// A warning about the whole spec (nobody can log in, with no [root] and no
// [[users]] entry to point at) is at 1:1, but neither line 1 nor a comment is
// shown as its place.
TEST(SpecPlace, AWarningAboutTheWholeSpecShowsNoLine) {
  const std::string admin =
      "[[users]]\nname = \"admin\"\nadmin = true\nssh_authorized_keys = [\"ssh-ed25519 "
      "AAAAC3NzaC1lZDI1NTE5AAAAIHeLguboJt2OAmYzeA/Z4TVxebKDh2PkgXgHJPUhfUjq admin@example\"]\n";
  for (const std::string& head : {std::string("# the lab's Pi\n"), std::string()}) {
    auto spec = parse_spec(head + kPi + admin, "t.toml", ".");
    bool whole = false;
    for (const auto& w : spec.warnings()) {
      if (w.message.find("nobody can log in") == std::string::npos) continue;
      whole = true;
      EXPECT_EQ(w.location, "t.toml:1:1");
      EXPECT_EQ(w.excerpt, "") << "head: " << head;
    }
    EXPECT_TRUE(whole) << "no warning that nobody can log in; head: " << head;
  }
  // Nor is a comment the place of anything found at its line.
  EXPECT_EQ(place_in("# note\n[system]\n", "s.toml", 1, 1).excerpt, "");
  EXPECT_EQ(place_in("  # note\n[system]\n", "s.toml", 1, 3).excerpt, "");
  EXPECT_EQ(place_in("[system] # note\n", "s.toml", 1, 1).excerpt, "[system] # note");
}

// place_in: the loader's rule for a reader outside it (fetch --spec).
TEST(SpecPlace, PlaceInFollowsTheLoadersRule) {
  const std::string text = "[alpine]\narch = 3\npassword = \"hunter2\"\n[apk]\npackages = [\n  \"a\",\n]\n";
  const Place arch = place_in(text, "s.toml", 2, 8);
  EXPECT_EQ(arch.text(), "s.toml:2:8");
  EXPECT_EQ(arch.excerpt, "arch = 3");
  EXPECT_EQ(place_in(text, "s.toml", 3, 12).excerpt, "password = \u2026") << "an unknown key's value is cut off";
  EXPECT_EQ(place_in(text, "s.toml", 6, 3).excerpt, "  \"a\",") << "the text parses: its secrets are known";
  EXPECT_EQ(place_in(text, "s.toml", 99, 1).excerpt, "");
  // A text that does not parse: a line inside an array opened earlier is not shown.
  const std::string broken = "[alpine]\nkey = [\n  \"s3cr3t\",\n  =\n]\n";
  EXPECT_EQ(place_in(broken, "s.toml", 3, 3).excerpt, "");
  EXPECT_EQ(place_in(broken, "s.toml", 1, 1).excerpt, "[alpine]");
}

// --- the spec's line under each error (SpecProblem::excerpt), never one with a secret

namespace {
// The problems of a spec that does not load (none when it does).
std::vector<SpecProblem> problems_of(const std::string& text) {
  try {
    parse_spec(text, "t.toml", ".");
  } catch (const SpecErrors& e) {
    EXPECT_EQ(e.messages().size(), e.problems().size());
    return e.problems();
  }
  ADD_FAILURE() << "the spec loaded:\n" << text;
  return {};
}
}  // namespace

TEST(SpecExcerpt, AnErrorCarriesItsPlaceAndTheLineAsWritten) {
  const auto p = problems_of(kPi + "\ttimezon = \"Europe/Berlin\"   \n[network]\ndns = [\"1.1.1.1\", \"x\"]\n");
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].message.rfind("t.toml:3:2: unknown key 'timezon' in [system] (did you mean 'timezone'?)", 0), 0u)
      << p[0].message;
  EXPECT_EQ(p[0].line, 3u);
  EXPECT_EQ(p[0].column, 2u);
  EXPECT_EQ(p[0].excerpt, " timezon = \u2026") << "a tab is one space; an unknown key's value is not shown";
  EXPECT_EQ(p[1].line, 5u);
  EXPECT_EQ(p[1].excerpt, "dns = [\"1.1.1.1\", \"x\"]");
  // One error is a SpecErrors too, what() its message alone.
  try {
    parse_spec(kPi + "colour = 1\n", "t.toml", ".");
    FAIL() << "loaded";
  } catch (const SpecErrors& e) {
    ASSERT_EQ(e.problems().size(), 1u);
    EXPECT_EQ(std::string(e.what()), e.problems()[0].message);
    EXPECT_EQ(e.problems()[0].excerpt, "colour = \u2026");
  }
}

TEST(SpecExcerpt, AByteOrderMarkAndWindowsLineEndsAreNotPartOfTheLine) {
  const auto p = problems_of(
      "\xef\xbb\xbf"
      "colour = 1\r\n[system]\r\nhostname = \"pi\"\r\nshape = 2\r\n");
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].line, 1u);
  EXPECT_EQ(p[0].column, 1u);
  EXPECT_EQ(p[0].excerpt, "colour = \u2026");
  EXPECT_EQ(p[1].line, 4u);
  EXPECT_EQ(p[1].excerpt, "shape = \u2026");
}

// Every problem carries its place as data (file, line, column), the place its
// message starts with: the command line gives it to --json as it is, never
// reading it back out of the text. Each way a problem is found: a table's
// check, an unknown key of a [[hosts]] entry beside the base's, a duplicate
// between cards, a [[hosts]] that is no array, a syntax error, a UTF-16 file.
TEST(SpecExcerpt, EveryProblemCarriesItsPlaceAsData) {
  using Place = std::pair<std::size_t, std::size_t>;
  auto utf16 = [](const std::string& ascii) {
    std::string out = "\xFF\xFE";
    for (char c : ascii) out += std::string{c, '\0'};
    return out;
  };
  struct Case {
    const char* what;
    std::string text;
    std::vector<Place> places;
  };
  const std::vector<Case> cases = {
      {"checks of several tables",
       kPi + "colour = 1\n[network]\ndns = [\"x\"]\n[boot]\nlabel = \"BOOT\"\n",
       {{3, 1}, {5, 8}, {7, 9}}},
      {"unknown keys of a card and of the base",
       "[system]\nhostname = \"pi-{n}\"\ncolour = 1\n[[hosts]]\nsystem = { shape = 2 }\n",
       {{3, 1}, {5, 12}}},
      {"a hostname two cards use", kPi + "[[hosts]]\nhostname = \"a\"\n[[hosts]]\nhostname = \"a\"\n", {{5, 1}}},
      {"[[hosts]] that is no array", "hosts = 5\n" + kPi, {{1, 9}}},
      {"a syntax error", kPi + "[network]\ndns = [\"1.1.1.1\" \"8.8.8.8\"]\n", {{4, 18}}},
      {"a UTF-16 spec", utf16(kPi), {{1, 1}}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const auto p = problems_of(c.text);
    std::vector<Place> places;
    for (const auto& x : p) {
      places.emplace_back(x.line, x.column);
      EXPECT_EQ(x.file, "t.toml") << x.message;
      const std::string prefix = "t.toml:" + std::to_string(x.line) + ":" + std::to_string(x.column) + ": ";
      EXPECT_EQ(x.message.rfind(prefix, 0), 0u) << x.message;
    }
    EXPECT_EQ(places, c.places);
  }
  EXPECT_EQ(error_of("hosts = 5\n" + kPi), "t.toml:1:9: [[hosts]] must be an array of tables") << "as ever";
  // load_spec: the file as it was named.
  test::TempDir dir;
  const fs::path path = dir / "bad.toml";
  test::write_file(path, kPi + "colour = 1\n");
  try {
    load_spec(path);
    FAIL() << "loaded";
  } catch (const SpecErrors& e) {
    ASSERT_EQ(e.problems().size(), 1u);
    EXPECT_EQ(e.problems()[0].file, path.string());
    EXPECT_EQ(e.problems()[0].line, 3u);
    EXPECT_EQ(e.problems()[0].column, 1u);
    EXPECT_EQ(std::string(e.what()), path.string() + ":3:1: unknown key 'colour' in [system]");
  }
}

TEST(SpecExcerpt, ASyntaxErrorShowsItsLine) {
  const auto p = problems_of(kPi + "[network]\ndns = [\"1.1.1.1\" \"8.8.8.8\"]\n");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].line, 4u);
  EXPECT_EQ(p[0].excerpt, "dns = [\"1.1.1.1\" \"8.8.8.8\"]");
}

TEST(SpecExcerpt, NoLineThatMayHoldASecretIsShown) {
  struct Case {
    const char* what;
    std::string text;
    std::size_t line;
    std::string shown;  // the excerpt at `line`
  };
  const std::string wifi = kPi + "[wifi]\nssid = \"lab\"\n";
  const std::vector<Case> cases = {
      {"a psk too short", wifi + "psk = \"hunter2\"\n", 5, ""},
      {"a password key", kPi + "[root]\npassword = 12345\n", 4, ""},
      {"an unknown key that is a password", kPi + "wifi_pass = \"hunter22\"\n", 3, "wifi_pass = \u2026"},
      {"an escape spelling psk", wifi + "\"\\u0070sk\" = \"hunter2\"\n", 5, ""},
      {"inside a multi-line string: a bad escape", wifi + "psk = \"\"\"\nhun\\qter22\n\"\"\"\n", 6, ""},
      {"inside an array spanning lines: a missing comma", wifi + "psk = [\n\"hunter22\" \"x\"\n]\n", 6, ""},
      {"a file's content in an array spanning lines",
       kPi + "[[files]]\npath = \"/etc/x\"\ncontent = [\n  \"hunter22\",\n]\n", 5, ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const auto p = problems_of(c.text);
    ASSERT_FALSE(p.empty());
    for (const auto& x : p) {
      EXPECT_EQ(x.excerpt.find("hunter2"), std::string::npos) << x.message;
      if (x.line == c.line) {
        EXPECT_EQ(x.excerpt, c.shown) << x.message;
      }
    }
    EXPECT_TRUE(std::any_of(p.begin(), p.end(), [&](const SpecProblem& x) { return x.line == c.line; }))
        << "no error at line " << c.line << ": " << p.front().message;
  }
  // A line over 160 bytes is left out, one of 160 is shown.
  for (std::size_t len : {160u, 161u}) {
    const std::string line = "motd = [\"" + std::string(len - 11, 'm') + "\"]";
    ASSERT_EQ(line.size(), len);
    const auto p = problems_of(kPi + line + "\n");
    ASSERT_EQ(p.size(), 1u);
    EXPECT_EQ(p[0].excerpt, len == 160 ? line : "");
  }
}

TEST(SpecExcerpt, ControlCharactersAndBrokenUtf8AreNotShown) {
  for (const std::string& bad :
       {std::string("motd = 1 # \x1b[2J"), std::string("motd = 1 # \xff"), std::string("motd = 1 # \xe2\x80\xae")}) {
    const auto p = problems_of(kPi + bad + "\n");
    ASSERT_FALSE(p.empty());
    EXPECT_EQ(p[0].line, 3u) << p[0].message;
    EXPECT_EQ(p[0].excerpt, "") << p[0].message;
  }
  const auto p = problems_of(kPi + "motd = [\"gr\u00fcn\"]\n");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].excerpt, "motd = [\"gr\u00fcn\"]") << "UTF-8 text is shown as it is";
}
