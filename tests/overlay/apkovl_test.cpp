// The apkovl checked with independent readers: busybox tar (what Alpine's
// initramfs runs), GNU tar --numeric-owner, shellcheck, ssh-keygen, openssl
// (PBKDF2 and SHA-512 crypt), crypt(3). Golden listings live in
// tests/overlay/data/golden (regenerate with RPI_UPDATE_GOLDEN=1 and review the diff).
#include <crypt.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "overlay/apkovl.hpp"
#include "overlay/secrets.hpp"
#include "overlay/spec.hpp"
#include "rpi/error.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace rpi;
using namespace rpi::overlay;

namespace {

const std::string kSeed = "rpi-provision test seed: not a secret";

fs::path example(const std::string& name) {
  return test::source_dir() / "examples" / name;
}
fs::path golden_dir() {
  return test::source_dir() / "tests" / "overlay" / "data" / "golden";
}

BuildOptions seeded() {
  BuildOptions b;
  b.seed = kSeed;
  return b;
}

HostConfig host_of(const std::string& example_name, int n = 1) {
  return resolve_host(load_spec(example(example_name)), n);
}
HostConfig host_from(const std::string& text, int n = 1) {
  return resolve_host(parse_spec(text, "t.toml", "."), n);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// Writes the archive and returns its path inside `dir`.
fs::path save(const test::TempDir& dir, const Apkovl& a) {
  auto p = dir / a.file_name;
  test::write_file(p, a.bytes);
  return p;
}

// "mode owner name[ -> target]" per member, from `busybox tar -tvzf` (sizes and dates dropped).
std::string busybox_listing(const fs::path& archive) {
  auto r = test::run({"busybox", "tar", "-tvzf", archive.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::string out;
  for (const auto& line : lines_of(r.out)) {
    std::istringstream in(line);
    std::string mode, owner, size, date, time, rest;
    in >> mode >> owner >> size >> date >> time;
    std::getline(in, rest);
    out += mode + " " + owner + " " + rest.substr(1) + "\n";
  }
  return out;
}

// Extracts with busybox tar into a fresh folder (as root: modes and owners restored).
fs::path extract(const test::TempDir& dir, const fs::path& archive) {
  auto root = dir / "root";
  fs::create_directories(root);
  ::chmod(root.c_str(), 0755);
  auto r = test::run({"busybox", "tar", "-C", root.string(), "-xzf", archive.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return root;
}

void compare_golden(const std::string& name, const std::string& listing) {
  auto path = golden_dir() / (name + ".listing");
  if (const char* u = std::getenv("RPI_UPDATE_GOLDEN"); u && *u == '1') {
    fs::create_directories(golden_dir());
    test::write_file(path, listing);
  }
  ASSERT_TRUE(fs::exists(path)) << "missing golden " << path << " (run with RPI_UPDATE_GOLDEN=1)";
  EXPECT_EQ(listing, test::read_file(path)) << "golden " << path << " differs; if intended, regenerate";
}

struct Stat {
  unsigned mode = 0, uid = 0, gid = 0;
  char type = '?';
};
Stat stat_of(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  Stat s;
  s.mode = st.st_mode & 07777;
  s.uid = st.st_uid;
  s.gid = st.st_gid;
  s.type = S_ISDIR(st.st_mode) ? 'd' : S_ISLNK(st.st_mode) ? 'l' : S_ISREG(st.st_mode) ? 'f' : '?';
  return s;
}

// A small /etc/network/interfaces reader: stanzas per interface and family.
struct Stanza {
  std::string method;
  std::map<std::string, std::string> options;
};
std::map<std::string, Stanza> parse_interfaces(const std::string& text, std::set<std::string>& autos) {
  std::map<std::string, Stanza> out;
  Stanza* cur = nullptr;
  for (const auto& line : lines_of(text)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream in(line);
    std::string word;
    in >> word;
    if (word == "auto") {
      std::string n;
      in >> n;
      autos.insert(n);
      cur = nullptr;
    } else if (word == "iface") {
      std::string n, fam, method;
      in >> n >> fam >> method;
      // ifupdown-ng also takes a bare "iface NAME" (link only, then its commands).
      EXPECT_TRUE(fam.empty() || fam == "inet" || fam == "inet6") << line;
      cur = &out[fam.empty() ? n : n + " " + fam];
      cur->method = method;
    } else {
      EXPECT_TRUE(line[0] == '\t' || line[0] == ' ') << "option outside a stanza: " << line;
      EXPECT_NE(cur, nullptr) << line;
      std::string value;
      std::getline(in, value);
      if (cur) cur->options[word] = value.empty() ? "" : value.substr(1);
    }
  }
  return out;
}

// wpa_supplicant.conf: global key=value lines and network={...} blocks.
std::vector<std::map<std::string, std::string>> parse_wpa(const std::string& text,
                                                          std::map<std::string, std::string>& global) {
  std::vector<std::map<std::string, std::string>> nets;
  bool in_net = false;
  for (const auto& raw : lines_of(text)) {
    std::string line = raw;
    line.erase(0, line.find_first_not_of(" \t"));
    if (line.empty() || line[0] == '#') continue;
    if (line == "network={") {
      EXPECT_FALSE(in_net);
      in_net = true;
      nets.emplace_back();
      continue;
    }
    if (line == "}") {
      EXPECT_TRUE(in_net);
      in_net = false;
      continue;
    }
    auto eq = line.find('=');
    EXPECT_NE(eq, std::string::npos) << line;
    (in_net ? nets.back() : global)[line.substr(0, eq)] = line.substr(eq + 1);
  }
  EXPECT_FALSE(in_net) << "unterminated network block";
  return nets;
}

std::string gunzip(const fs::path& archive) {
  auto r = test::run({"busybox", "gzip", "-dc", archive.string()});
  EXPECT_EQ(r.exit_code, 0);
  return r.out;
}

}  // namespace

TEST(Apkovl, GoldenListings) {
  RPI_REQUIRE_TOOL("busybox");
  struct Case {
    std::string example, golden;
    int n;
  };
  for (const auto& c :
       {Case{"headless.toml", "headless", 1}, Case{"kiosk.toml", "kiosk", 1}, Case{"fleet.toml", "fleet-03", 3}}) {
    SCOPED_TRACE(c.example);
    test::TempDir dir;
    auto a = build_apkovl(host_of(c.example, c.n), seeded());
    compare_golden(c.golden, busybox_listing(save(dir, a)));
  }
}

TEST(Apkovl, FileNameFollowsHostname) {
  EXPECT_EQ(build_apkovl(host_of("headless.toml"), seeded()).file_name, "pi-headless.apkovl.tar.gz");
  EXPECT_EQ(build_apkovl(host_of("fleet.toml", 4), seeded()).file_name, "class-04.apkovl.tar.gz");
  EXPECT_EQ(mac_file_name("B8-27-EB-00-00-0A"), "b8:27:eb:00:00:0a.apkovl.tar.gz");
}

// A host loaded the way `check` loads it (an unset { env = } secret is a
// warning there) never becomes an apkovl: it would carry an empty psk/password.
TEST(Apkovl, RefusesAHostWithAnUnsetEnvSecret) {
  ::unsetenv("RPI_T_APKOVL_UNSET");
  const std::string pi = "[system]\nhostname = \"pi\"\n[root]\npassword = { env = \"RPI_T_APKOVL_UNSET\" }\n";
  const HostConfig h = resolve_host(parse_spec(pi, "t.toml", ".", LoadOptions{.missing_env = MissingEnv::warn}), 1);
  ASSERT_EQ(h.root.password_unset_env, "RPI_T_APKOVL_UNSET");
  try {
    build_apkovl(h, seeded());
    FAIL() << "built an apkovl without the root password";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::spec);
    EXPECT_EQ(std::string(e.what()),
              "environment variable RPI_T_APKOVL_UNSET (for [root].password) is not set; export it and run again");
  }
}

TEST(Apkovl, MemberNamesFollowTheInitramfsRules) {
  RPI_REQUIRE_TOOL("busybox");
  for (auto name : {"headless.toml", "kiosk.toml", "fleet.toml"}) {
    SCOPED_TRACE(name);
    test::TempDir dir;
    auto r = test::run({"busybox", "tar", "-tzf", save(dir, build_apkovl(host_of(name), seeded())).string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto names = lines_of(r.out);
    ASSERT_FALSE(names.empty());
    std::set<std::string> seen;
    for (const auto& n : names) {
      EXPECT_NE(n.find('/'), std::string::npos) << "apk rejects overlay names without '/': " << n;
      EXPECT_NE(n.rfind("./", 0), 0u) << n;
      EXPECT_NE(n[0], '/') << n;
      EXPECT_NE(n, ".");
      EXPECT_EQ(n.find("/../"), std::string::npos) << n;
      EXPECT_TRUE(seen.insert(n).second) << "duplicate " << n;
      // Parents come first (sorted by components).
      auto parent = n.substr(0, n.find_last_of('/', n.size() - 2) + 1);
      if (!parent.empty()) {
        EXPECT_TRUE(seen.count(parent)) << n << " before its parent " << parent;
      }
    }
  }
}

TEST(Apkovl, ReproducibleBytes) {
  auto h = host_of("kiosk.toml");
  auto a = build_apkovl(h, seeded());
  auto b = build_apkovl(h, seeded());
  EXPECT_EQ(a.bytes, b.bytes);
  EXPECT_EQ(a.known_hosts, b.known_hosts);
  BuildOptions other = seeded();
  other.seed = "another seed, another card";
  EXPECT_NE(build_apkovl(h, other).bytes, a.bytes);
  // Without secrets to generate, no seed is needed for identical output.
  auto plain = host_from("[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  EXPECT_EQ(build_apkovl(plain, {}).bytes, build_apkovl(plain, {}).bytes);
  // Unseeded generated keys differ between builds (documented exception).
  auto k1 = build_apkovl(host_from("[system]\nhostname = \"pi\"\n"), {});
  auto k2 = build_apkovl(host_from("[system]\nhostname = \"pi\"\n"), {});
  EXPECT_NE(k1.known_hosts, k2.known_hosts);
}

TEST(Apkovl, GzipHeaderHasNoNameOrTime) {
  auto a = build_apkovl(host_of("headless.toml"), seeded());
  ASSERT_GT(a.bytes.size(), 10u);
  EXPECT_EQ(static_cast<unsigned char>(a.bytes[0]), 0x1f);
  EXPECT_EQ(static_cast<unsigned char>(a.bytes[1]), 0x8b);
  EXPECT_EQ(a.bytes[3], 0) << "FLG: no FNAME/FCOMMENT/FEXTRA";
  EXPECT_EQ(a.bytes.substr(4, 4), std::string(4, '\0')) << "MTIME must be 0";
}

TEST(Apkovl, MtimesFromSourceDateEpoch) {
  RPI_REQUIRE_TOOL("tar");
  test::TempDir dir;
  BuildOptions b = seeded();
  b.source_date_epoch = 1700000000;  // 2023-11-14 22:13:20 UTC
  auto p = save(dir, build_apkovl(host_of("headless.toml"), b));
  auto r = test::run({"tar", "--utc", "--full-time", "-tvzf", p.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const auto& l : lines_of(r.out)) EXPECT_NE(l.find("2023-11-14 22:13:20"), std::string::npos) << l;
}

TEST(Apkovl, BusyboxExtractionAsRootKeepsModesOwnersLinks) {
  RPI_REQUIRE_TOOL("busybox");
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: busybox tar restores owners only as root (like the initramfs)";
  test::TempDir dir;
  auto root = extract(dir, save(dir, build_apkovl(host_of("kiosk.toml"), seeded())));
  EXPECT_EQ(stat_of(root).mode, 0755u) << "an archive root entry would have changed /";
  auto shadow = stat_of(root / "etc/shadow");
  EXPECT_EQ(shadow.mode, 0640u);
  EXPECT_EQ(shadow.uid, 0u);
  EXPECT_EQ(shadow.gid, 42u);
  EXPECT_EQ(stat_of(root / "etc/wpa_supplicant/wpa_supplicant.conf").mode, 0600u);
  EXPECT_EQ(stat_of(root / "etc/ssh/ssh_host_ed25519_key").mode, 0600u);
  EXPECT_EQ(stat_of(root / "etc/ssh/ssh_host_rsa_key").mode, 0600u);
  EXPECT_EQ(stat_of(root / "etc/ssh/ssh_host_rsa_key.pub").mode, 0644u);
  auto home = stat_of(root / "home/admin");
  EXPECT_EQ(home.type, 'd');
  EXPECT_EQ(home.uid, 1000u);
  EXPECT_EQ(home.gid, 1000u);
  auto ssh = stat_of(root / "home/admin/.ssh");
  EXPECT_EQ(ssh.mode, 0700u);
  EXPECT_EQ(ssh.uid, 1000u);
  auto keys = stat_of(root / "home/admin/.ssh/authorized_keys");
  EXPECT_EQ(keys.mode, 0600u);
  EXPECT_EQ(keys.uid, 1000u);
  EXPECT_EQ(stat_of(root / "home/kiosk").uid, 1001u);
  // Scripts may carry secrets ({ env } content): root only.
  EXPECT_EQ(stat_of(root / "etc/local.d/departures.start").mode, 0700u);
  for (auto [lvl, svc] : std::vector<std::pair<std::string, std::string>>{{"sysinit", "devfs"},
                                                                          {"boot", "networking"},
                                                                          {"boot", "wpa_supplicant"},
                                                                          {"default", "sshd"},
                                                                          {"default", "chronyd"},
                                                                          {"default", "local"},
                                                                          {"shutdown", "mount-ro"}}) {
    auto link = root / "etc/runlevels" / lvl / svc;
    EXPECT_EQ(stat_of(link).type, 'l') << link;
    EXPECT_EQ(fs::read_symlink(link).string(), "/etc/init.d/" + svc);
  }
  EXPECT_FALSE(fs::exists(fs::symlink_status(root / "etc/runlevels/sysinit/mdev"))) << "disabled in the example";
  EXPECT_EQ(fs::read_symlink(root / "etc/localtime").string(), "/usr/share/zoneinfo/Europe/Berlin");
  EXPECT_EQ(fs::read_symlink(root / "etc/apk/cache").string(), "/media/mmcblk0p1/cache");

  test::TempDir dir2;
  auto root2 = extract(dir2, save(dir2, build_apkovl(host_of("headless.toml"), seeded())));
  EXPECT_EQ(stat_of(root2 / "root").mode, 0700u);
  EXPECT_EQ(stat_of(root2 / "root/.ssh").mode, 0700u);
  EXPECT_EQ(stat_of(root2 / "root/.ssh/authorized_keys").mode, 0600u);
}

TEST(Apkovl, NumericOwnersMatchNames) {
  RPI_REQUIRE_TOOL("tar");
  RPI_REQUIRE_TOOL("busybox");
  test::TempDir dir;
  auto h = host_from(
      "[system]\nhostname = \"pi\"\n[[users]]\nname = \"bob\"\nuid = 1500\ngroups = [\"video\"]\n"
      "[[files]]\npath = \"/srv/app/config.json\"\ncontent = \"{}\"\nmode = \"0640\"\nowner = \"bob:video\"\n");
  auto p = save(dir, build_apkovl(h, seeded()));
  auto numeric = test::run({"tar", "--numeric-owner", "-tvzf", p.string()});
  ASSERT_EQ(numeric.exit_code, 0);
  EXPECT_NE(numeric.out.find("-rw-r----- 1500/27 "), std::string::npos) << numeric.out;
  EXPECT_NE(numeric.out.find("-rw-r----- 0/42 "), std::string::npos) << "shadow is root:shadow(42)";
  auto names = busybox_listing(p);
  EXPECT_NE(names.find("-rw-r----- bob/video srv/app/config.json"), std::string::npos) << names;
  // Files outside /etc are kept by a later lbu commit only if included.
  auto root = extract(dir, p);
  auto lbu = test::read_file(root / "etc/apk/protected_paths.d/lbu.list");
  EXPECT_NE(lbu.find("+srv/app/config.json\n"), std::string::npos) << lbu;
  EXPECT_NE(lbu.find("+home/bob\n"), std::string::npos) << lbu;
  auto group = test::read_file(root / "etc/group");
  EXPECT_NE(group.find("\nvideo:x:27:root,bob\n"), std::string::npos) << group;
  EXPECT_NE(group.find("\nbob:x:1500:\n"), std::string::npos) << group;
}

TEST(Apkovl, KeyFileContents) {
  RPI_REQUIRE_TOOL("busybox");
  test::TempDir dir;
  auto root = extract(dir, save(dir, build_apkovl(host_of("headless.toml"), seeded())));
  EXPECT_EQ(test::read_file(root / "etc/hostname"), "pi-headless\n");
  EXPECT_EQ(test::read_file(root / "etc/apk/world"), "alpine-base\nchrony\nopenssh\n");
  EXPECT_EQ(test::read_file(root / "etc/apk/repositories"),
            "/media/mmcblk0p1/apks\nhttps://dl-cdn.alpinelinux.org/alpine/latest-stable/main\n"
            "https://dl-cdn.alpinelinux.org/alpine/latest-stable/community\n");
  EXPECT_EQ(test::read_file(root / "etc/lbu/lbu.conf"), "# Generated by rpi-provision ([lbu])\nLBU_MEDIA=mmcblk0p1\n");
  auto sshd = test::read_file(root / "etc/ssh/sshd_config");
  EXPECT_NE(sshd.find("\nPasswordAuthentication no\n"), std::string::npos);
  EXPECT_NE(sshd.find("\nPermitRootLogin prohibit-password\n"), std::string::npos);
  EXPECT_NE(sshd.find("HostKey /etc/ssh/ssh_host_ed25519_key\n"), std::string::npos);
  auto shadow = lines_of(test::read_file(root / "etc/shadow"));
  EXPECT_EQ(shadow.at(0), "root:*::0:::::") << "key-only root: '*', not '!' (OpenSSH without PAM)";
  EXPECT_EQ(test::read_file(root / "root/.ssh/authorized_keys"),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeLguboJt2OAmYzeA/Z4TVxebKDh2PkgXgHJPUhfUjq admin@example\n");
  auto passwd = test::read_file(root / "etc/passwd");
  EXPECT_EQ(passwd.rfind("root:x:0:0:root:/root:/bin/sh\n", 0), 0u);
  EXPECT_NE(passwd.find("\nsshd:x:22:22:sshd:/dev/null:/sbin/nologin\n"), std::string::npos);
  EXPECT_NE(passwd.find("\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n"), std::string::npos);

  test::TempDir dir3;
  auto fleet = extract(dir3, save(dir3, build_apkovl(host_of("fleet.toml", 3), seeded())));
  EXPECT_EQ(test::read_file(fleet / "etc/hosts"),
            "127.0.0.1\tclass-03.school.example class-03 localhost.localdomain localhost\n"
            "::1\t\tlocalhost localhost.localdomain\n");
  EXPECT_EQ(test::read_file(fleet / "etc/resolv.conf"), "search school.example\nnameserver 10.20.0.1\n");
  EXPECT_EQ(test::read_file(fleet / "etc/sysctl.d/90-rpi-provision-ipv6.conf"),
            "# Generated by rpi-provision: ipv6 = \"off\"\nnet.ipv6.conf.eth0.disable_ipv6 = 1\n");
  // The teacher logs in with a key only: doas must not ask for a password they do not have.
  EXPECT_EQ(test::read_file(fleet / "etc/doas.d/20-wheel.conf"), "permit persist :wheel\npermit nopass teacher\n");
  EXPECT_EQ(test::read_file(fleet / "etc/apk/repositories"),
            "/media/mmcblk0p1/apks\nhttps://dl-cdn.alpinelinux.org/alpine/v3.22/main\n"
            "https://dl-cdn.alpinelinux.org/alpine/v3.22/community\n");
  EXPECT_NE(test::read_file(fleet / "etc/group").find("\nwheel:x:10:root,teacher\n"), std::string::npos);
  EXPECT_EQ(test::read_file(fleet / "etc/lbu/lbu.conf"),
            "# Generated by rpi-provision ([lbu])\nLBU_MEDIA=mmcblk0p1\nBACKUP_LIMIT=2\n");
}

TEST(Apkovl, InterfacesParse) {
  RPI_REQUIRE_TOOL("busybox");
  test::TempDir dir;
  auto root = extract(dir, save(dir, build_apkovl(host_of("fleet.toml", 3), seeded())));
  std::set<std::string> autos;
  auto st = parse_interfaces(test::read_file(root / "etc/network/interfaces"), autos);
  EXPECT_EQ(autos, (std::set<std::string>{"lo", "eth0"}));
  ASSERT_TRUE(st.count("eth0 inet"));
  EXPECT_EQ(st["eth0 inet"].method, "static");
  EXPECT_EQ(st["eth0 inet"].options["address"], "10.20.0.13");
  EXPECT_EQ(st["eth0 inet"].options["netmask"], "255.255.255.0");
  EXPECT_EQ(st["eth0 inet"].options["gateway"], "10.20.0.1");
  EXPECT_FALSE(st.count("eth0 inet6")) << "ipv6 = off";
  EXPECT_TRUE(st["eth0 inet"].options.count("pre-up")) << "ipv6 = off, again when eth0 comes up";
  EXPECT_EQ(st["lo inet"].method, "loopback");

  test::TempDir dir2;
  auto kiosk = extract(dir2, save(dir2, build_apkovl(host_of("kiosk.toml"), seeded())));
  autos.clear();
  st = parse_interfaces(test::read_file(kiosk / "etc/network/interfaces"), autos);
  EXPECT_EQ(autos, (std::set<std::string>{"lo", "eth0", "wlan0"}));
  EXPECT_EQ(st["wlan0 inet"].method, "dhcp");
  EXPECT_EQ(st["wlan0 inet6"].method, "auto");

  auto v6 = host_from(
      "[system]\nhostname = \"pi\"\n[[network.interfaces]]\nname = \"eth0\"\naddress = \"2001:db8::20/64\"\n"
      "gateway = \"2001:db8::1\"\n");
  test::TempDir dir3;
  auto r6 = extract(dir3, save(dir3, build_apkovl(v6, seeded())));
  autos.clear();
  st = parse_interfaces(test::read_file(r6 / "etc/network/interfaces"), autos);
  EXPECT_EQ(st["eth0 inet6"].method, "static");
  EXPECT_EQ(st["eth0 inet6"].options["address"], "2001:db8::20");
  EXPECT_EQ(st["eth0 inet6"].options["netmask"], "64");
}

// ipv6 = "off": the sysctl.d entry only reaches interfaces that exist when the
// boot runlevel's sysctl runs; wlan0 (firmware) and USB adapters come later.
// The stanza's pre-up command, run by busybox sh as ifupdown-ng runs it, turns
// IPv6 off on a real interface (a veth in a network namespace of its own), and
// succeeds without one: a failing pre-up would keep the interface down.
TEST(Apkovl, Ipv6OffIsAppliedWhenTheInterfaceComesUp) {
  RPI_REQUIRE_TOOL("busybox");
  RPI_REQUIRE_TOOL("unshare");
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a network namespace with a veth pair";
  auto h = host_from("[system]\nhostname = \"pi\"\n[[network.interfaces]]\nname = \"eth0.7\"\nipv6 = \"off\"\n");
  test::TempDir dir;
  auto root = extract(dir, save(dir, build_apkovl(h, seeded())));
  std::set<std::string> autos;
  auto st = parse_interfaces(test::read_file(root / "etc/network/interfaces"), autos);
  const std::string pre_up = st["eth0.7 inet"].options["pre-up"];
  ASSERT_FALSE(pre_up.empty());
  const std::string knob = "/proc/sys/net/ipv6/conf/eth0.7/disable_ipv6";
  std::string absent = pre_up;  // the same line for an interface that does not exist
  for (std::size_t at; (at = absent.find("eth0.7")) != std::string::npos;) absent.replace(at, 6, "nosuch");
  auto r = test::run({"unshare", "-n", "sh", "-c",
                      "ip link add eth0.7 type veth peer name peer0 && cat " + knob +
                          " && busybox sh -c \"$1\" && cat " + knob + " && busybox sh -c \"$2\" && echo ok",
                      "sh", pre_up, absent});
  if (r.exit_code != 0 && r.err.find("veth") != std::string::npos) GTEST_SKIP() << "no veth support: " << r.err;
  EXPECT_EQ(r.out, "0\n1\nok\n") << r.err;
}

// sysctl reads the dots of "net.ipv6.conf.eth0.7.disable_ipv6" as separators
// (procps looks for /proc/sys/net/ipv6/conf/eth0/7/disable_ipv6): a name with a
// dot (a VLAN) gets the slash form, others keep the dotted one. Oracles: busybox
// sysctl (Alpine's) and procps sysctl load the file in a network namespace with
// such interfaces (veths: a VLAN needs the 8021q module).
TEST(Apkovl, Ipv6OffSysctlLineNamesAnInterfaceWithADot) {
  auto h = host_from(
      "[system]\nhostname = \"pi\"\n[[network.interfaces]]\nname = \"eth0.7\"\nipv6 = \"off\"\n"
      "[[network.interfaces]]\nname = \"eth1\"\nipv6 = \"off\"\n");
  test::TempDir dir;
  auto root = extract(dir, save(dir, build_apkovl(h, seeded())));
  const fs::path conf = root / "etc/sysctl.d/90-rpi-provision-ipv6.conf";
  EXPECT_EQ(test::read_file(conf),
            "# Generated by rpi-provision: ipv6 = \"off\"\nnet/ipv6/conf/eth0.7/disable_ipv6 = 1\n"
            "net.ipv6.conf.eth1.disable_ipv6 = 1\n");

  RPI_REQUIRE_TOOL("busybox");
  RPI_REQUIRE_TOOL("unshare");
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a network namespace with a veth pair";
  std::vector<std::string> tools = {"busybox sysctl"};
  if (test::run({"sh", "-c", "sysctl --version 2>/dev/null | grep -q procps"}).exit_code == 0)
    tools.push_back("sysctl");
  for (const auto& tool : tools) {
    SCOPED_TRACE(tool);
    auto r = test::run({"unshare", "-n", "sh", "-c",
                        "ip link add eth0.7 type veth peer name eth1 && " + tool +
                            " -p \"$1\" >/dev/null && cat /proc/sys/net/ipv6/conf/eth0.7/disable_ipv6 "
                            "/proc/sys/net/ipv6/conf/eth1/disable_ipv6",
                        "sh", conf.string()});
    if (r.exit_code != 0 && r.err.find("veth") != std::string::npos) GTEST_SKIP() << "no veth support: " << r.err;
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "1\n1\n") << r.err;
  }
}

// ifupdown-ng ignores an iface line's inet/inet6 word and takes "dhcp" there as
// its one DHCP executor: "iface eth0 inet6 dhcp" after a static IPv4 stanza ran
// busybox udhcpc, which flushed the static address. DHCPv6 is dhcpcd's job, and
// the spec's DNS must survive a DHCP lease (busybox's udhcpc script rewrites
// resolv.conf unless peer-dns is "no").
TEST(Apkovl, Dhcpv6UsesDhcpcdAndKeepsTheStaticAddressAndTheSpecsDns) {
  RPI_REQUIRE_TOOL("busybox");
  auto h = host_from(
      "[system]\nhostname = \"pi\"\n[network]\ndns = [\"9.9.9.9\"]\nsearch = [\"lan\"]\n"
      "[[network.interfaces]]\nname = \"eth0\"\naddress = \"192.168.1.20/24\"\ngateway = \"192.168.1.1\"\n"
      "ipv6 = \"dhcp\"\n"
      "[[network.interfaces]]\nname = \"eth1\"\nipv6 = \"dhcp\"\n"
      "[[network.interfaces]]\nname = \"eth2\"\n");
  test::TempDir dir;
  auto root = extract(dir, save(dir, build_apkovl(h, seeded())));
  const std::string text = test::read_file(root / "etc/network/interfaces");
  EXPECT_EQ(text.find("inet6 dhcp"), std::string::npos) << text;
  std::set<std::string> autos;
  auto st = parse_interfaces(text, autos);
  EXPECT_EQ(st["eth0 inet"].method, "static");
  EXPECT_EQ(st["eth0 inet"].options["address"], "192.168.1.20");
  // dhcpcd through the stanza's own commands: ifupdown-ng up to 0.12.1 never
  // passed dhcp-opts to dhcpcd (IPv6 only, DNS from the spec).
  EXPECT_EQ(st["eth0 inet"].options.count("use"), 0u);
  EXPECT_EQ(st["eth0 inet"].options["post-up"], "/sbin/dhcpcd -6 --nohook resolv.conf eth0 || true");
  EXPECT_EQ(st["eth0 inet"].options["pre-down"], "/sbin/dhcpcd -6 -k eth0 || true");
  EXPECT_EQ(st["eth1"].method, "") << "no DHCP executor: dhcpcd is started by post-up";
  EXPECT_EQ(st["eth1"].options["post-up"], "/sbin/dhcpcd -h pi --nohook resolv.conf eth1 || true");
  EXPECT_EQ(st["eth1"].options["pre-down"], "/sbin/dhcpcd -k eth1 || true");
  EXPECT_EQ(st["eth2 inet"].method, "dhcp");
  EXPECT_EQ(st["eth2 inet"].options["dhcp-program"], "udhcpc") << "dhcpcd is installed: name the client";
  EXPECT_EQ(st["eth2 inet"].options["peer-dns"], "no");
  EXPECT_NE(test::read_file(root / "etc/apk/world").find("\ndhcpcd\n"), std::string::npos);
  EXPECT_EQ(test::read_file(root / "etc/resolv.conf"), "search lan\nnameserver 9.9.9.9\n");

  // Plain DHCP without own DNS: the lease's DNS is used, the client is left to ifupdown-ng.
  auto plain = host_from("[system]\nhostname = \"pi\"\n[[network.interfaces]]\nname = \"eth0\"\n");
  test::TempDir dir2;
  auto r2 = extract(dir2, save(dir2, build_apkovl(plain, seeded())));
  autos.clear();
  st = parse_interfaces(test::read_file(r2 / "etc/network/interfaces"), autos);
  EXPECT_EQ(st["eth0 inet"].options.count("peer-dns"), 0u);
  EXPECT_EQ(st["eth0 inet"].options.count("dhcp-program"), 0u);
  EXPECT_EQ(test::read_file(r2 / "etc/apk/world").find("dhcpcd"), std::string::npos);
}

// ifupdown-ng itself: Debian's package, downloaded once and unpacked into the
// build folder (never installed). Empty when it cannot be had.
fs::path ifupdown_ng() {
  const fs::path dir = test::binary_dir() / "fixtures" / "ifupdown-ng";
  const fs::path ifup = dir / "root" / "sbin" / "ifup";
  if (fs::exists(ifup)) return ifup;
  fs::create_directories(dir);
  test::sh("cd '" + dir.string() +
           "' && apt-get download ifupdown-ng >/dev/null 2>&1 && dpkg -x ifupdown-ng_*.deb root");
  return fs::exists(ifup) ? ifup : fs::path();
}

// The interfaces files we write, read by ifupdown-ng: `ifup -n` (no action)
// goes through each. It is lenient (an unknown line becomes a variable), so
// the check is the commands it would run, which must be the ones meant. Debian 12's
// ifupdown-ng is 0.11.4, whose DHCP executor (like 0.12.1's in Alpine 3.22)
// gives dhcpcd no dhcp-opts: dhcpcd is started by the stanza's commands.
TEST(Apkovl, IfupdownNgReadsEveryInterfacesFileAndRunsTheCommandsMeant) {
  const fs::path ifup = ifupdown_ng();
  if (ifup.empty()) GTEST_SKIP() << "ifupdown-ng could not be fetched (apt-get download ifupdown-ng failed)";
  const fs::path executors = ifup.parent_path().parent_path() / "usr" / "libexec" / "ifupdown-ng";
  std::vector<std::pair<std::string, HostConfig>> hosts = {
      {"kiosk", host_of("kiosk.toml")},
      {"headless", host_of("headless.toml")},
      {"fleet-3", host_of("fleet.toml", 3)},
      {"mix", host_from("[system]\nhostname = \"pi\"\n[network]\ndns = [\"9.9.9.9\"]\n"
                        "[[network.interfaces]]\nname = \"eth0\"\naddress = \"192.168.1.20/24\"\n"
                        "gateway = \"192.168.1.1\"\nipv6 = \"dhcp\"\n"
                        "[[network.interfaces]]\nname = \"eth1\"\nipv6 = \"dhcp\"\n"
                        "[[network.interfaces]]\nname = \"eth2\"\nipv6 = \"off\"\n")},
  };
  for (const auto& [name, h] : hosts) {
    test::TempDir dir;
    auto root = extract(dir, save(dir, build_apkovl(h, seeded())));
    auto r = test::run({ifup.string(), "-n", "-l", "-a", "-i", (root / "etc/network/interfaces").string(), "-E",
                        executors.string(), "-S", (dir / "state").string()});
    EXPECT_EQ(r.exit_code, 0) << name << ": " << r.err;
    if (name == "mix") {
      EXPECT_NE(r.out.find("/sbin/dhcpcd -6 --nohook resolv.conf eth0 || true"), std::string::npos) << r.out;
      EXPECT_NE(r.out.find("/sbin/dhcpcd -h pi --nohook resolv.conf eth1 || true"), std::string::npos) << r.out;
      EXPECT_NE(r.out.find("echo 1 > /proc/sys/net/ipv6/conf/eth2/disable_ipv6"), std::string::npos) << r.out;
    }
  }
}

TEST(Apkovl, WpaSupplicantHoldsOnlyTheDerivedPsk) {
  RPI_REQUIRE_TOOL("busybox");
  RPI_REQUIRE_TOOL("openssl");
  test::TempDir dir;
  auto p = save(dir, build_apkovl(host_of("kiosk.toml"), seeded()));
  auto root = extract(dir, p);
  std::map<std::string, std::string> global;
  auto nets = parse_wpa(test::read_file(root / "etc/wpa_supplicant/wpa_supplicant.conf"), global);
  EXPECT_EQ(global["country"], "DE");
  ASSERT_EQ(nets.size(), 1u);
  EXPECT_EQ(nets[0]["ssid"], "\"Office\"");
  // Independent oracle: OpenSSL's PBKDF2 over the example's passphrase file.
  auto kdf = test::run({"openssl", "kdf", "-keylen", "32", "-kdfopt", "digest:SHA1", "-kdfopt", "pass:departures-2024",
                        "-kdfopt", "salt:Office", "-kdfopt", "iter:4096", "PBKDF2"});
  ASSERT_EQ(kdf.exit_code, 0) << kdf.err;
  std::string hex;
  for (char c : kdf.out)
    if (std::isxdigit(static_cast<unsigned char>(c)))
      hex += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  EXPECT_EQ(nets[0]["psk"], hex);
  EXPECT_EQ(gunzip(p).find("departures-2024"), std::string::npos) << "the passphrase must never reach the card";
  EXPECT_EQ(test::read_file(root / "etc/conf.d/wpa_supplicant"),
            "# Generated by rpi-provision\nwpa_supplicant_args=\"-iwlan0\"\n");
  EXPECT_TRUE(fs::is_symlink(root / "etc/runlevels/boot/wpa_supplicant"));
}

TEST(Secrets, PskTestVector) {
  // IEEE 802.11i-2004 Annex H.4.
  EXPECT_EQ(wifi_psk("password", "IEEE"), "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e");
  EXPECT_EQ(wifi_psk("ThisIsAPassword", "ThisIsASSID"),
            "0dc0d6eb90555ed6419756b9a15ec3e3209b63df707dd508d14581f8982721af");
}

TEST(Secrets, Sha512CryptVerifiesWithCrypt3AndOpenssl) {
  auto hash = sha512_crypt("correct horse", derive_bytes(kSeed, "salt-test", 16));
  ASSERT_EQ(hash.rfind("$6$", 0), 0u);
  crypt_data data{};
  EXPECT_EQ(std::string(crypt_r("correct horse", hash.c_str(), &data)), hash);
  crypt_data data2{};
  EXPECT_NE(std::string(crypt_r("wrong horse", hash.c_str(), &data2)), hash);
  if (test::have_tool("openssl")) {
    auto salt = hash.substr(3, hash.find('$', 3) - 3);
    EXPECT_EQ(salt.size(), 16u);
    auto r = test::run({"openssl", "passwd", "-6", "-salt", salt, "correct horse"});
    ASSERT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.out, hash + "\n");
  }
  // Random salts without a seed.
  EXPECT_NE(sha512_crypt("x", derive_bytes("", "", 16)), sha512_crypt("x", derive_bytes("", "", 16)));
}

TEST(Secrets, UserPasswordsHashedInShadow) {
  RPI_REQUIRE_TOOL("busybox");
  ::setenv("RPI_APKOVL_TEST_PW", "Tr0ub4dor&3", 1);
  auto h = host_from(
      "[system]\nhostname = \"pi\"\n[[users]]\nname = \"bob\"\npassword = { env = \"RPI_APKOVL_TEST_PW\" }\n"
      "[[users]]\nname = \"eve\"\npassword_hash = \"$6$abc$def\"\n[root]\npassword = { env = \"RPI_APKOVL_TEST_PW\" "
      "}\n");
  ::unsetenv("RPI_APKOVL_TEST_PW");
  test::TempDir dir;
  auto p = save(dir, build_apkovl(h, seeded()));
  auto root = extract(dir, p);
  std::map<std::string, std::string> pw;
  for (const auto& l : lines_of(test::read_file(root / "etc/shadow"))) {
    auto c1 = l.find(':');
    pw[l.substr(0, c1)] = l.substr(c1 + 1, l.find(':', c1 + 1) - c1 - 1);
  }
  crypt_data d1{}, d2{};
  EXPECT_EQ(std::string(crypt_r("Tr0ub4dor&3", pw["bob"].c_str(), &d1)), pw["bob"]);
  EXPECT_EQ(std::string(crypt_r("Tr0ub4dor&3", pw["root"].c_str(), &d2)), pw["root"]);
  EXPECT_NE(pw["bob"], pw["root"]) << "each account gets its own salt";
  EXPECT_EQ(pw["eve"], "$6$abc$def");
  EXPECT_EQ(pw["bin"], "!");
  EXPECT_EQ(gunzip(p).find("Tr0ub4dor"), std::string::npos);
}

TEST(Secrets, HostKeysReadBackWithSshKeygen) {
  RPI_REQUIRE_TOOL("ssh-keygen");
  RPI_REQUIRE_TOOL("busybox");
  test::TempDir dir;
  auto a = build_apkovl(host_of("fleet.toml", 2), seeded());
  ASSERT_EQ(a.known_hosts.size(), 2u);
  EXPECT_EQ(a.known_hosts[0].rfind("class-02,class-02.school.example,10.20.0.12 ssh-ed25519 AAAA", 0), 0u)
      << a.known_hosts[0];
  EXPECT_EQ(a.known_hosts[1].rfind("class-02,class-02.school.example,10.20.0.12 ssh-rsa AAAA", 0), 0u);
  auto root = extract(dir, save(dir, a));
  for (std::string type : {"ed25519", "rsa"}) {
    SCOPED_TRACE(type);
    auto key = root / ("etc/ssh/ssh_host_" + type + "_key");
    ::chmod(key.c_str(), 0600);  // ssh-keygen refuses group/world-readable keys (non-root extraction)
    auto pub = test::read_file(root / ("etc/ssh/ssh_host_" + type + "_key.pub"));
    auto y = test::run({"ssh-keygen", "-y", "-f", key.string()});
    ASSERT_EQ(y.exit_code, 0) << y.err;
    auto fields = lines_of(pub).at(0);
    EXPECT_EQ(y.out.substr(0, y.out.find(' ', y.out.find(' ') + 1)),
              fields.substr(0, fields.find(' ', fields.find(' ') + 1)));
    auto l = test::run({"ssh-keygen", "-l", "-f", key.string()});
    ASSERT_EQ(l.exit_code, 0) << l.err;
    EXPECT_NE(l.out.find(type == "rsa" ? "3072 SHA256:" : "256 SHA256:"), std::string::npos) << l.out;
    // known_hosts carries the same public key.
    bool found = false;
    for (const auto& kh : a.known_hosts)
      found = found || kh.find(fields.substr(fields.find(' ') + 1, 40)) != std::string::npos;
    EXPECT_TRUE(found);
  }
  // ssh-keygen accepts the known_hosts lines themselves.
  test::write_file(dir / "known_hosts", a.known_hosts[0] + "\n" + a.known_hosts[1] + "\n");
  auto f = test::run({"ssh-keygen", "-F", "class-02", "-f", (dir / "known_hosts").string()});
  EXPECT_EQ(f.exit_code, 0) << f.out << f.err;
}

TEST(Apkovl, FirstBootKeysLeaveGenerationToThePi) {
  auto h = host_from("[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  std::vector<std::string> kh;
  auto members = apkovl_members(h, seeded(), &kh);
  EXPECT_TRUE(kh.empty());
  for (const auto& m : members) EXPECT_EQ(m.path.find("ssh_host_"), std::string::npos) << m.path;
}

TEST(Apkovl, ShellcheckEveryGeneratedScript) {
  RPI_REQUIRE_TOOL("shellcheck");
  RPI_REQUIRE_TOOL("busybox");
  auto sys = host_from(
      "[system]\nhostname = \"pi\"\n[install]\nmode = \"sys\"\ndisk = \"/dev/sda\"\n"
      "[[scripts]]\nname = \"hello\"\nrun = \"every-boot\"\ncontent = \"echo hello >/dev/console\\n\"\n");
  int checked = 0;
  for (const auto& h : {host_of("kiosk.toml"), sys}) {
    test::TempDir dir;
    auto root = extract(dir, save(dir, build_apkovl(h, seeded())));
    std::vector<fs::path> scripts;
    for (auto sub : {"etc/local.d", "etc/rpi-provision/first-boot"}) {
      if (!fs::exists(root / sub)) continue;
      for (const auto& e : fs::directory_iterator(root / sub)) scripts.push_back(e.path());
    }
    if (fs::exists(root / "etc/rpi-provision/zz-install-sys"))
      scripts.push_back(root / "etc/rpi-provision/zz-install-sys");
    for (const auto& path : scripts) {
      SCOPED_TRACE(path.string());
      auto r = test::run({"shellcheck", "--shell=sh", path.string()});
      EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
      EXPECT_EQ(test::read_file(path).rfind("#!/bin/sh\n", 0), 0u);
      ++checked;
    }
  }
  EXPECT_GE(checked, 6);
  // The OpenRC service that installs what the boot could not (kiosk has packages).
  test::TempDir dir;
  auto root = extract(dir, save(dir, build_apkovl(host_of("kiosk.toml"), seeded())));
  const fs::path svc = root / "etc/init.d/rpi-provision-packages";
  ASSERT_TRUE(fs::exists(svc));
  EXPECT_EQ(test::read_file(svc).rfind("#!/sbin/openrc-run\n", 0), 0u);
  auto r = test::run({"shellcheck", "--shell=sh", svc.string()});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST(Apkovl, SysInstallerRunsOnceAtFirstBoot) {
  RPI_REQUIRE_TOOL("busybox");
  auto h = host_from("[system]\nhostname = \"pi\"\n[install]\nmode = \"sys\"\ndisk = \"/dev/sda\"\n");
  test::TempDir dir;
  auto root = extract(dir, save(dir, build_apkovl(h, seeded())));
  // Outside first-boot/: the runner starts it after every first-boot script.
  EXPECT_FALSE(fs::exists(root / "etc/rpi-provision/first-boot/zz-install-sys"));
  auto inst = test::read_file(root / "etc/rpi-provision/zz-install-sys");
  EXPECT_NE(inst.find("setup-disk -m sys \"$disk\""), std::string::npos);
  EXPECT_NE(inst.find("disk='/dev/sda'\n"), std::string::npos);
  EXPECT_TRUE(fs::exists(root / "etc/local.d/00-rpi-provision-first-boot.start"));
  EXPECT_EQ(fs::read_symlink(root / "etc/runlevels/default/local").string(), "/etc/init.d/local");
}

// Runs the first-boot runner twice in a sandbox: the script must run once.
TEST(Apkovl, FirstBootRunnerRunsEachScriptOnce) {
  RPI_REQUIRE_TOOL("busybox");
  auto h = host_from(
      "[system]\nhostname = \"pi\"\n[[scripts]]\nname = \"count\"\nrun = \"first-boot\"\n"
      "content = \"echo ran >> \\\"$COUNT_FILE\\\"\\n\"\n");
  test::TempDir dir;
  auto root = extract(dir, save(dir, build_apkovl(h, seeded())));
  auto runner = test::read_file(root / "etc/local.d/00-rpi-provision-first-boot.start");
  // Point the runner's absolute paths into the sandbox.
  std::string sandboxed;
  for (const auto& l : lines_of(runner)) {
    std::string line = l;
    for (const std::string from : {"/etc/", "/var/log/", "/media/"}) {
      for (auto pos = line.find(from); pos != std::string::npos;
           pos = line.find(from, pos + root.string().size() + from.size()))
        line.insert(pos, root.string());
    }
    sandboxed += line + "\n";
  }
  test::write_file(dir / "runner.sh", sandboxed);
  auto count = dir / "count";
  std::string cmd = "COUNT_FILE='" + count.string() + "' busybox sh '" + (dir / "runner.sh").string() + "'";
  EXPECT_EQ(test::sh(cmd).exit_code, 0);
  EXPECT_EQ(test::sh(cmd).exit_code, 0);
  EXPECT_EQ(test::read_file(count), "ran\n");
  EXPECT_TRUE(fs::exists(root / "etc/rpi-provision/done/count"));
  EXPECT_NE(test::read_file(root / "var/log/rpi-provision/count.log").find("exited with status 0"), std::string::npos);
  // A script may print a secret: its log is for root only.
  EXPECT_EQ(stat_of(root / "var/log/rpi-provision/count.log").mode, 0600u);
}

// The packages service, run by busybox sh against the unpacked apkovl with apk,
// mount and rc-service replaced by recorders: it installs exactly the world
// entries that are missing, with the card's cache writable meanwhile, then
// starts the runlevel services those packages brought (sysinit first), and
// does nothing once everything is there.
TEST(Apkovl, PackagesServiceInstallsWhatTheBootCouldNot) {
  RPI_REQUIRE_TOOL("busybox");
  auto h = host_from(
      "[system]\nhostname = \"pi\"\n[network]\nproxy = \"http://proxy.lan:3128\"\n"
      "[apk]\npackages = [\"cage\", \"seatd>=0.8\", \"eudev\"]\ncache = true\n"
      "[services]\nsysinit = [\"udev\"]\ndefault = [\"seatd\"]\n");
  test::TempDir dir;
  auto root = extract(dir, save(dir, build_apkovl(h, seeded())));
  ASSERT_TRUE(fs::is_symlink(root / "etc/runlevels/default/rpi-provision-packages"));
  EXPECT_NE(test::read_file(root / "etc/apk/protected_paths.d/lbu.list").find("+etc/init.d/rpi-provision-packages\n"),
            std::string::npos);
  // Point the service's /etc and /var/log paths into the sandbox (the cache link keeps its /media target).
  std::string svc;
  for (const auto& l : lines_of(test::read_file(root / "etc/init.d/rpi-provision-packages"))) {
    std::string line = l;
    for (const std::string from : {"/etc/", "/var/log/"})
      for (auto pos = line.find(from); pos != std::string::npos;
           pos = line.find(from, pos + root.string().size() + from.size()))
        line.insert(pos, root.string());
    svc += line + "\n";
  }
  const fs::path bin = dir / "bin", installed = dir / "installed", log = dir / "log";
  fs::create_directories(bin);
  fs::create_directories(installed);
  for (const auto& w : lines_of(test::read_file(root / "etc/apk/world")))
    if (w != "cage" && w != "seatd>=0.8" && w != "eudev") test::write_file(installed / w, "");
  auto tool = [&](const std::string& name, const std::string& body) {
    test::write_file(bin / name, "#!/bin/sh\n" + body);
    fs::permissions(bin / name, fs::perms::owner_all);
  };
  tool("apk", "echo \"apk $*\" >>'" + log.string() +
                  "'\n"
                  "if [ \"$1\" = info ]; then [ -e '" +
                  installed.string() +
                  "'/\"$3\" ]; exit; fi\n"
                  "echo \"$https_proxy\" >'" +
                  (dir / "proxy").string() +
                  "'\n"
                  "shift 3\n"
                  // The first add fails (no lease or clock yet): the service tries again.
                  "[ -e '" +
                  (dir / "failed-once").string() + "' ] || { : >'" + (dir / "failed-once").string() +
                  "'; exit 1; }\n"
                  "for p; do n=${p%%[<>=~@]*}; : >'" +
                  installed.string() +
                  "'/\"$n\"\n"
                  "  [ \"$n\" = seatd ] && : >'" +
                  (root / "etc/init.d/seatd").string() +
                  "'\n"
                  "  [ \"$n\" = eudev ] && : >'" +
                  (root / "etc/init.d/udev").string() +
                  "'\n"
                  "done; exit 0\n");
  tool("rc-service", "echo \"rc-service $*\" >>'" + log.string() + "'\n");
  // busybox sh runs its own applets (mount, sync) before PATH: shell functions win.
  test::write_file(dir / "run.sh", "ebegin() { :; }\neend() { return \"$1\"; }\nmount() { echo \"mount $*\" >>'" +
                                       log.string() + "'; }\nsync() { :; }\nsleep() { :; }\n" + svc + "start\n");
  const std::string cmd = "PATH='" + bin.string() + ":/usr/bin:/bin' busybox sh '" + (dir / "run.sh").string() + "'";
  ASSERT_EQ(test::sh(cmd).exit_code, 0);
  std::string got;
  for (const auto& l : lines_of(test::read_file(log)))
    if (l.rfind("apk info", 0) != 0) got += l + "\n";
  EXPECT_EQ(got,
            "mount -o remount,rw /media/mmcblk0p1\n"
            "apk add --update-cache --no-progress cage eudev seatd>=0.8\n"
            "apk add --update-cache --no-progress cage eudev seatd>=0.8\n"
            "mount -o remount,ro /media/mmcblk0p1\n"
            "rc-service udev start\n"
            "rc-service seatd start\n");
  EXPECT_EQ(test::read_file(dir / "proxy"), "http://proxy.lan:3128\n") << "apk did not get [network].proxy";
  EXPECT_EQ(stat_of(root / "var/log/rpi-provision/packages.log").mode, 0600u);
  fs::remove(log);
  ASSERT_EQ(test::sh(cmd).exit_code, 0);
  const std::string again = fs::exists(log) ? test::read_file(log) : "";
  EXPECT_EQ(again.find("apk add"), std::string::npos) << "installed again:\n" << again;
}

TEST(Boot, CmdlineEdits) {
  const std::string original = "modules=loop,squashfs,sd-mod,usb-storage quiet console=tty1\n";
  Boot b;
  EXPECT_EQ(edit_cmdline(b, original), original);
  b.serial_console = true;
  b.cmdline = {"consoleblank=0", "quiet"};
  b.apkovl_url = "http://10.0.0.1/{MAC}.apkovl.tar.gz";
  EXPECT_EQ(edit_cmdline(b, original),
            "modules=loop,squashfs,sd-mod,usb-storage quiet console=serial0,115200 console=tty1 consoleblank=0 "
            "apkovl=http://10.0.0.1/{MAC}.apkovl.tar.gz\n");
  // Idempotent, and a parameter with a value replaces one of the same key.
  Boot c;
  c.cmdline = {"modules=loop,squashfs"};
  EXPECT_EQ(edit_cmdline(c, edit_cmdline(c, original)), "modules=loop,squashfs quiet console=tty1\n");
}

// enable_uart=1 must reach every Pi: after a [pi4] section of the user's lines
// it follows an [all] line (config.txt filters, alpine-facts §7). Lines
// without section headers get the same bytes as before.
TEST(Boot, SerialConsoleLineAppliesToEveryModel) {
  auto usercfg = [](const std::string& config) {
    auto e = boot_edits(
        host_from("[system]\nhostname = \"pi\"\n[boot]\nserial_console = true\nconfig = [" + config + "]\n"));
    return e.usercfg_txt.value_or("(none)");
  };
  const std::string head = "# Generated by rpi-provision ([boot].config)\n";
  EXPECT_EQ(usercfg("\"[pi4]\", \"arm_boost=1\""), head + "[pi4]\narm_boost=1\n[all]\nenable_uart=1\n");
  EXPECT_EQ(usercfg("\"[pi4]\", \"arm_boost=1\", \"[all]\", \"disable_overscan=1\""),
            head + "[pi4]\narm_boost=1\n[all]\ndisable_overscan=1\nenable_uart=1\n");
  EXPECT_EQ(usercfg("\"[pi4]\", \"enable_uart=1\""), head + "[pi4]\nenable_uart=1\n[all]\nenable_uart=1\n")
      << "the user's line covers a Pi 4 only";
  EXPECT_EQ(usercfg("\"enable_uart=1\", \"[pi4]\", \"arm_boost=1\""), head + "enable_uart=1\n[pi4]\narm_boost=1\n")
      << "already set for every model";
  // No section header: unchanged output.
  EXPECT_EQ(usercfg("\"hdmi_force_hotplug=1\""), head + "hdmi_force_hotplug=1\nenable_uart=1\n");
  EXPECT_EQ(usercfg("\"enable_uart=1\", \"hdmi_force_hotplug=1\""), head + "enable_uart=1\nhdmi_force_hotplug=1\n");
  EXPECT_EQ(usercfg(""), head + "enable_uart=1\n");
}

TEST(Boot, EditsForTheImageEngine) {
  auto h = host_of("kiosk.toml");
  auto e = boot_edits(h);
  EXPECT_EQ(e.label, "KIOSK");
  EXPECT_TRUE(e.carries_apkovl);
  ASSERT_TRUE(e.usercfg_txt.has_value());
  EXPECT_EQ(*e.usercfg_txt,
            "# Generated by rpi-provision ([boot].config)\ndisplay_hdmi_rotate=1\ndisable_overscan=1\n");
  ASSERT_TRUE(e.edits.count("cmdline.txt"));
  EXPECT_EQ(e.edits["cmdline.txt"]("quiet console=tty1"), "quiet console=tty1 consoleblank=0\n");

  auto f = boot_edits(host_of("fleet.toml", 10));
  ASSERT_TRUE(f.usercfg_txt.has_value());
  EXPECT_NE(f.usercfg_txt->find("enable_uart=1\n"), std::string::npos);
  EXPECT_FALSE(boot_edits(host_of("headless.toml")).usercfg_txt.has_value());

  EXPECT_EQ(e.directories, std::vector<std::string>{"cache"}) << "kiosk has [apk].cache = true";
  Apkovl a;
  a.file_name = "kiosk.apkovl.tar.gz";
  a.bytes = "tgz";
  auto files = boot_root_files(e, a);
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].first, "kiosk.apkovl.tar.gz");
  EXPECT_EQ(files[1].first, "usercfg.txt");
  EXPECT_TRUE(boot_edits(host_of("headless.toml")).directories.empty());

  auto net =
      boot_edits(host_from("[system]\nhostname = \"pi\"\n[boot]\napkovl_url = \"http://srv/{MAC}.apkovl.tar.gz\"\n"));
  EXPECT_FALSE(net.carries_apkovl);
  EXPECT_TRUE(boot_root_files(net, a).empty());
}

TEST(Apkovl, ApkKeysHiddenWifiAndHexSsid) {
  test::TempDir dir;
  test::write_file(dir / "my-repo.rsa.pub", "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n");
  test::write_file(dir / "wifi.psk", "a long enough passphrase\n");
  auto spec = parse_spec(
      "[system]\nhostname = \"pi\"\n[apk]\nkeys = [\"my-repo.rsa.pub\"]\nrepositories = "
      "[\"https://repo.example/main\"]\n"
      "[wifi]\nssid = \"Caf\\u00e9 \\\"5G\\\"\"\npsk = { file = \"wifi.psk\" }\nhidden = true\n",
      "t.toml", dir.path());
  std::vector<std::string> kh;
  auto members = apkovl_members(resolve_host(spec, 1), seeded(), &kh);
  std::map<std::string, std::string> files;
  for (const auto& m : members) files[m.path] = m.data;
  EXPECT_EQ(files["etc/apk/keys/my-repo.rsa.pub"], test::read_file(dir / "my-repo.rsa.pub"));
  EXPECT_EQ(files["etc/apk/repositories"], "https://repo.example/main\n");
  auto wpa = files["etc/wpa_supplicant/wpa_supplicant.conf"];
  EXPECT_NE(wpa.find("\tssid=436166c3a92022354722\n"), std::string::npos) << "hex for non-plain SSIDs\n" << wpa;
  EXPECT_NE(wpa.find("\tscan_ssid=1\n"), std::string::npos) << wpa;
}

// An admin with a password types it for doas; one with only SSH keys (or a
// locked hash) is not asked, or they could never become root: root's empty
// password is refused by sshd. A custom init script is kept by lbu commit.
TEST(Apkovl, DoasAsksOnlyAdminsThatHaveAPasswordAndLbuKeepsCustomServices) {
  ::setenv("RPI_TEST_PW", "Tr0ub4dor&3", 1);
  auto h = host_from(
      "[system]\nhostname = \"pi\"\n"
      "[[users]]\nname = \"keys\"\nadmin = true\nssh_authorized_keys = [\"ssh-ed25519 "
      "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl k@x\"]\n"
      "[[users]]\nname = \"pw\"\nadmin = true\npassword = { env = \"RPI_TEST_PW\" }\n"
      "[[users]]\nname = \"locked\"\nadmin = true\npassword_hash = \"!\"\n"
      "[[users]]\nname = \"plain\"\n"
      "[[files]]\npath = \"/etc/init.d/myapp\"\ncontent = \"#!/sbin/openrc-run\\n\"\nmode = \"0755\"\n"
      "[services]\ndefault = [\"myapp\"]\n");
  ::unsetenv("RPI_TEST_PW");
  test::TempDir dir;
  auto root = extract(dir, save(dir, build_apkovl(h, seeded())));
  EXPECT_EQ(test::read_file(root / "etc/doas.d/20-wheel.conf"),
            "permit persist :wheel\npermit nopass keys\npermit nopass locked\n");
  const std::string lbu = test::read_file(root / "etc/apk/protected_paths.d/lbu.list");
  EXPECT_NE(lbu.find("+etc/init.d/myapp\n"), std::string::npos) << lbu;
}

// Alpine's root has an empty password: anyone at the console of a kiosk is
// root. When an admin can log in (and become root with doas), root is locked
// instead; without one, the console is the only way in and stays open.
TEST(Apkovl, RootIsLockedWhenAnAdminCanLogIn) {
  RPI_REQUIRE_TOOL("busybox");
  const std::string key =
      "ssh_authorized_keys = [\"ssh-ed25519 "
      "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl k@x\"]\n";
  auto root_entry = [](const HostConfig& h) {
    test::TempDir dir;
    auto root = extract(dir, save(dir, build_apkovl(h, seeded())));
    return lines_of(test::read_file(root / "etc/shadow")).at(0);
  };
  EXPECT_EQ(root_entry(host_from("[system]\nhostname = \"pi\"\n[[users]]\nname = \"ops\"\nadmin = true\n" + key)),
            "root:*::0:::::");
  EXPECT_EQ(root_entry(host_from("[system]\nhostname = \"pi\"\n[[users]]\nname = \"ops\"\n" + key)), "root:::0:::::")
      << "no admin: root's console login is the only way to administer the Pi";
  EXPECT_EQ(root_entry(host_from(
                "[system]\nhostname = \"pi\"\n[[users]]\nname = \"ops\"\nadmin = true\npassword_hash = \"!\"\n")),
            "root:::0:::::")
      << "an admin who cannot log in administers nothing";
  EXPECT_EQ(root_entry(host_from("[system]\nhostname = \"pi\"\n[ssh]\nenable = false\n[[users]]\nname = \"ops\"\n"
                                 "admin = true\n" +
                                 key)),
            "root:::0:::::")
      << "a key is no way in without sshd";
  EXPECT_EQ(root_entry(host_from("[system]\nhostname = \"pi\"\n[[users]]\nname = \"ops\"\nadmin = true\n"
                                 "shell = \"/sbin/nologin\"\n" +
                                 key)),
            "root:::0:::::")
      << "nor with a shell that refuses logins";
  const std::string forced =
      "ssh_authorized_keys = [\"command=\\\"/usr/bin/backup\\\" ssh-ed25519 "
      "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl k@x\"]\n";
  EXPECT_EQ(root_entry(host_from("[system]\nhostname = \"pi\"\n[[users]]\nname = \"ops\"\nadmin = true\n" + forced)),
            "root:::0:::::")
      << "nor with keys that only run a forced command";
  EXPECT_EQ(root_entry(host_from("[system]\nhostname = \"pi\"\n[[users]]\nname = \"ops\"\nadmin = true\n" + key +
                                 "[root]\npassword_hash = \"$6$salt$hash\"\n")),
            "root:$6$salt$hash::0:::::")
      << "[root] decides when given";
  // check says which it is.
  EXPECT_NE(summary(host_from("[system]\nhostname = \"pi\"\n[[users]]\nname = \"ops\"\nadmin = true\n" + key))
                .find("  root      no password login (the admins use doas)\n"),
            std::string::npos);
  EXPECT_NE(
      summary(host_from("[system]\nhostname = \"pi\"\n")).find("  root      empty password: anyone at the console"),
      std::string::npos);
  // rpi-provision's example key (examples/kiosk.toml's admin) stands for the
  // user's own key: the card is the one their key will give, root locked
  // (rather than open at the console); the key itself is warned about.
  const std::string example_key =
      "ssh_authorized_keys = [\"ssh-ed25519 "
      "AAAAC3NzaC1lZDI1NTE5AAAAIHeLguboJt2OAmYzeA/Z4TVxebKDh2PkgXgHJPUhfUjq admin@example\"]\n";
  EXPECT_EQ(
      root_entry(host_from("[system]\nhostname = \"pi\"\n[[users]]\nname = \"ops\"\nadmin = true\n" + example_key)),
      "root:*::0:::::");
  EXPECT_EQ(root_entry(host_of("kiosk.toml")), "root:*::0:::::") << "the kiosk example's admin has the example key";
  // An example key that only runs a forced command stands for no shell: root keeps the console.
  const std::string forced_example =
      "ssh_authorized_keys = [\"command=\\\"/bin/true\\\" ssh-ed25519 "
      "AAAAC3NzaC1lZDI1NTE5AAAAIHeLguboJt2OAmYzeA/Z4TVxebKDh2PkgXgHJPUhfUjq admin@example\"]\n";
  EXPECT_EQ(
      root_entry(host_from("[system]\nhostname = \"pi\"\n[[users]]\nname = \"ops\"\nadmin = true\n" + forced_example)),
      "root:::0:::::");
}

TEST(Spec, UidMayNotCollideWithBaseGroups) {
  try {
    parse_spec("[system]\nhostname = \"pi\"\n[[users]]\nname = \"bob\"\nuid = 100\n", "t.toml", ".");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "t.toml:5:7: uid 100 would give user bob the gid of group users; choose another uid");
  }
}

// --- tester findings (defects 1, 3, 4, 5, 11)

namespace {
const Member* member(const std::vector<Member>& ms, const std::string& path) {
  for (const auto& m : ms)
    if (m.path == path) return &m;
  return nullptr;
}
}  // namespace

// Safety net behind the spec check: a file and a folder of one name never reach the tarball.
// Folders the apkovl creates only because a [[files]] entry lies below them:
// owned like the folder they are in (a user's ~/.config is theirs), with the
// base layout's mode where it has a special one (/var/tmp is 1777).
TEST(Apkovl, ImpliedFoldersBelongWhereTheyAre) {
  auto h = host_from(
      "[system]\nhostname = \"pi\"\n[[users]]\nname = \"alice\"\n"
      "[[files]]\npath = \"/home/alice/.config/app/app.conf\"\ncontent = \"x\"\nowner = \"alice\"\n"
      "[[files]]\npath = \"/var/tmp/cache/x\"\ncontent = \"x\"\n");
  auto ms = apkovl_members(h, seeded(), nullptr);
  auto dir = [&](const std::string& p) {
    const Member* m = member(ms, p);
    EXPECT_NE(m, nullptr) << p;
    return m ? *m : Member{};
  };
  EXPECT_EQ(dir("home/alice/.config").uid, 1000u);
  EXPECT_EQ(dir("home/alice/.config").uname, "alice");
  EXPECT_EQ(dir("home/alice/.config/app").uid, 1000u);
  EXPECT_EQ(dir("home/alice/.config").mode, 0755u);
  EXPECT_EQ(dir("var/tmp").mode, 01777u);
  EXPECT_EQ(dir("var").mode, 0755u);
  EXPECT_EQ(dir("var/tmp/cache").uid, 0u);
  EXPECT_EQ(dir("home").uid, 0u);
}

TEST(Apkovl, FileAndFolderOfOneNameIsAnInternalError) {
  for (const std::vector<std::string>& paths :
       {std::vector<std::string>{"/etc/foo", "/etc/foo/bar"}, std::vector<std::string>{"/etc/foo/bar", "/etc/foo"},
        std::vector<std::string>{"/etc/network"}, std::vector<std::string>{"/etc/hostname/x"}}) {
    SCOPED_TRACE(paths.front());
    auto h = host_from("[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n");
    for (const auto& p : paths) {
      File f;
      f.path = p;
      f.content = "x";
      h.files.push_back(f);
    }
    try {
      apkovl_members(h, seeded());
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::internal) << e.what();
    }
  }
}

TEST(Apkovl, ProxyIsSingleQuotedAndPrivateWithCredentials) {
  const std::string proxy = "http://user:pa$$w0rd'x@proxy.example:3128/?a=1&b=2";
  auto h = host_from("[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n[network]\nproxy = \"" + proxy +
                     "\"\n");
  auto ms = apkovl_members(h, seeded());
  auto* m = member(ms, "etc/profile.d/proxy.sh");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->mode, 0600u);
  test::TempDir dir;
  test::write_file(dir / "proxy.sh", m->data);
  auto r = test::sh(". '" + (dir / "proxy.sh").string() +
                    "' && printf '%s\\n%s\\n%s' \"$http_proxy\" \"$https_proxy\" \"$ftp_proxy\"");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, proxy + "\n" + proxy + "\n" + proxy);
  auto plain = host_from(
      "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n[network]\nproxy = \"http://proxy:3128\"\n");
  auto pm = apkovl_members(plain, seeded());
  ASSERT_NE(member(pm, "etc/profile.d/proxy.sh"), nullptr);
  EXPECT_EQ(member(pm, "etc/profile.d/proxy.sh")->mode, 0644u);
}

// A repository URL with a password is for root's apk only, as proxy.sh is.
TEST(Apkovl, RepositoriesArePrivateWithCredentials) {
  const std::string base = "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n[apk]\nrepositories = [";
  auto secret = host_from(base + "\"/media/mmcblk0p1/apks\", \"https://deploy:t0ken@repo.example/alpine/main\"]\n");
  auto ms = apkovl_members(secret, seeded());
  ASSERT_NE(member(ms, "etc/apk/repositories"), nullptr);
  EXPECT_EQ(member(ms, "etc/apk/repositories")->mode, 0600u);
  auto plain = host_from(base + "\"https://repo.example/alpine/main\"]\n");
  auto pm = apkovl_members(plain, seeded());
  ASSERT_NE(member(pm, "etc/apk/repositories"), nullptr);
  EXPECT_EQ(member(pm, "etc/apk/repositories")->mode, 0644u);
}

// The sys installer reboots: it must run after every first-boot script, whatever its name.
TEST(Apkovl, SysInstallerRunsAfterEveryFirstBootScript) {
  RPI_REQUIRE_TOOL("busybox");
  auto h = host_from(
      "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n[install]\nmode = \"sys\"\n"
      "disk = \"/dev/sda\"\n[[scripts]]\nname = \"zzz-late\"\nrun = \"first-boot\"\n"
      "content = \"echo zzz-late >> \\\"$ORDER\\\"\\n\"\n");
  test::TempDir dir;
  auto root = extract(dir, save(dir, build_apkovl(h, seeded())));
  auto runner = test::read_file(root / "etc/local.d/00-rpi-provision-first-boot.start");
  std::string sandboxed;
  for (const auto& l : lines_of(runner)) {
    std::string line = l;
    for (const std::string from : {"/etc/", "/var/log/", "/media/"}) {
      for (auto pos = line.find(from); pos != std::string::npos;
           pos = line.find(from, pos + root.string().size() + from.size()))
        line.insert(pos, root.string());
    }
    sandboxed += line + "\n";
  }
  test::write_file(dir / "runner.sh", sandboxed);
  fs::create_directories(dir / "bin");
  for (auto tool : {"setup-disk", "reboot"}) {
    test::write_file(dir / "bin" / tool, std::string("#!/bin/sh\necho ") + tool + " >> \"$ORDER\"\n");
    ::chmod((dir / "bin" / tool).c_str(), 0755);
  }
  auto order = dir / "order";
  std::string cmd = "PATH='" + (dir / "bin").string() + "':\"$PATH\" ORDER='" + order.string() + "' busybox sh '" +
                    (dir / "runner.sh").string() + "'";
  EXPECT_EQ(test::sh(cmd).exit_code, 0);
  EXPECT_EQ(test::read_file(order), "zzz-late\nsetup-disk\nreboot\n");
}

TEST(Apkovl, CardRepositoriesNeverNameABuildMachinePath) {
  for (auto mirror : {"/srv/alpine", "file:///srv/alpine"}) {
    SCOPED_TRACE(mirror);
    auto h = host_from(
        "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n[alpine]\nversion = \"3.22.1\"\n"
        "mirror = \"" +
        std::string(mirror) + "\"\n");
    auto ms = apkovl_members(h, seeded());
    auto* m = member(ms, "etc/apk/repositories");
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->data,
              "/media/mmcblk0p1/apks\nhttps://dl-cdn.alpinelinux.org/alpine/v3.22/main\n"
              "https://dl-cdn.alpinelinux.org/alpine/v3.22/community\n");
  }
  auto h = host_from(
      "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n[alpine]\nversion = \"3.21\"\n"
      "mirror = \"http://10.0.0.1/alpine\"\n");
  auto ms = apkovl_members(h, seeded());
  ASSERT_NE(member(ms, "etc/apk/repositories"), nullptr);
  EXPECT_EQ(member(ms, "etc/apk/repositories")->data,
            "/media/mmcblk0p1/apks\nhttp://10.0.0.1/alpine/v3.21/main\nhttp://10.0.0.1/alpine/v3.21/community\n");
}

// One network={} block per network, [wifi]'s first, in spec order: scan_ssid=1
// only for hidden ones, priority= only where the spec sets it (0 included), and
// each psk the PBKDF2 of its own passphrase and ssid, computed by Python's
// hashlib (the 802.11i definition: PBKDF2-HMAC-SHA1, ssid as salt, 4096
// rounds, 32 bytes). The passphrases never reach the card; the file stays 0600.
TEST(Apkovl, EveryWifiNetworkGetsItsOwnBlockInSpecOrder) {
  RPI_REQUIRE_TOOL("python3");
  RPI_REQUIRE_TOOL("busybox");
  const std::string hex_psk = "0123456789ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef";
  ::setenv("RPI_T_NETS_CLASS", "classroom-passphrase", 1);
  ::setenv("RPI_T_NETS_STAFF", "staff room passphrase!", 1);
  const HostConfig h = host_from(
      "[system]\nhostname = \"pi\"\n"
      "[wifi]\ncountry = \"DE\"\nssid = \"classroom\"\npsk = { env = \"RPI_T_NETS_CLASS\" }\n"
      "[[wifi.networks]]\nssid = \"staff\"\npsk = { env = \"RPI_T_NETS_STAFF\" }\nhidden = true\npriority = 5\n"
      "[[wifi.networks]]\nssid = \"lab\"\npsk = \"" +
      hex_psk + "\"\npriority = 0\n");
  ::unsetenv("RPI_T_NETS_CLASS");
  ::unsetenv("RPI_T_NETS_STAFF");
  auto oracle = [](const std::string& passphrase, const std::string& ssid) {
    auto r = test::run({"python3", "-c",
                        "import hashlib, sys; print(hashlib.pbkdf2_hmac('sha1', sys.argv[1].encode(), "
                        "sys.argv[2].encode(), 4096, 32).hex())",
                        passphrase, ssid});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out.substr(0, r.out.find('\n'));
  };

  const Member* conf = nullptr;
  const auto members = apkovl_members(h, seeded());
  for (const auto& m : members)
    if (m.path == "etc/wpa_supplicant/wpa_supplicant.conf") conf = &m;
  ASSERT_NE(conf, nullptr);
  EXPECT_EQ(conf->mode, 0600u);
  std::map<std::string, std::string> global;
  auto nets = parse_wpa(conf->data, global);
  EXPECT_EQ(global["country"], "DE");
  ASSERT_EQ(nets.size(), 3u) << conf->data;
  EXPECT_EQ(nets[0]["ssid"], "\"classroom\"");
  EXPECT_EQ(nets[1]["ssid"], "\"staff\"");
  EXPECT_EQ(nets[2]["ssid"], "\"lab\"");
  EXPECT_EQ(nets[0]["psk"], oracle("classroom-passphrase", "classroom"));
  EXPECT_EQ(nets[1]["psk"], oracle("staff room passphrase!", "staff"));
  EXPECT_NE(nets[0]["psk"], nets[1]["psk"]);
  EXPECT_EQ(nets[2]["psk"], "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
      << "64 hex digits are the PSK itself";
  EXPECT_EQ(nets[0].count("scan_ssid"), 0u);
  EXPECT_EQ(nets[1]["scan_ssid"], "1");
  EXPECT_EQ(nets[2].count("scan_ssid"), 0u);
  EXPECT_EQ(nets[0].count("priority"), 0u) << "not set: not written";
  EXPECT_EQ(nets[1]["priority"], "5");
  EXPECT_EQ(nets[2]["priority"], "0") << "set, even to wpa_supplicant's default: written";
  for (const auto& n : nets) EXPECT_EQ(n.at("key_mgmt"), "WPA-PSK");

  test::TempDir dir;
  const auto p = save(dir, build_apkovl(h, seeded()));
  const std::string tar = gunzip(p);
  for (const char* passphrase : {"classroom-passphrase", "staff room passphrase!"})
    EXPECT_EQ(tar.find(passphrase), std::string::npos) << "the passphrase must never reach the card";
  // The one service and interface for all of them.
  const auto root = extract(dir, p);
  EXPECT_EQ(test::read_file(root / "etc/conf.d/wpa_supplicant"),
            "# Generated by rpi-provision\nwpa_supplicant_args=\"-iwlan0\"\n");
  EXPECT_EQ(stat_of(root / "etc/wpa_supplicant/wpa_supplicant.conf").mode, 0600u);
}
