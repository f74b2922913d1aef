// The apkovl's content, file by file (alpine-facts §1.6, §5, §6). Decisions:
// - Full runlevel set, no /etc/.default_boot_services marker: the marker makes
//   the init add its own defaults but skips networking; listing every link is
//   explicit and shows up in golden listings. hwclock/swclock are left to the init.
// - A full /etc/ssh/sshd_config, not a drop-in: Alpine's package only gained
//   "Include /etc/ssh/sshd_config.d/*.conf" in 2023 (3.19; earlier releases have
//   no Include), and sshd takes the first value it reads, so a complete file is
//   correct on every release the spec may pick.
// - Time zone: /etc/localtime -> /usr/share/zoneinfo/<zone> plus tzdata in world
//   (setup-timezone -i style; we have no zone file bytes to copy at build time).
// - First-boot scripts run from /etc/local.d/00-rpi-provision-first-boot.start,
//   which keeps "done" markers both in /etc/rpi-provision/done (survives lbu
//   commit and setup-disk) and on the boot media (survives a diskless reboot).
#include "overlay/apkovl.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "base_system.hpp"
#include "checks.hpp"
#include "overlay/secrets.hpp"
#include "rpi/error.hpp"
#include "rpi/text.hpp"
#include "tar_writer.hpp"

namespace rpi::overlay {

namespace {

class Tree {
 public:
  void dir(const std::string& path, unsigned mode = 0755, unsigned uid = 0, unsigned gid = 0,
           const std::string& uname = "root", const std::string& gname = "root") {
    put(Member{path, 'd', mode, uid, gid, uname, gname, {}});
  }
  void file(const std::string& path, std::string data, unsigned mode = 0644, unsigned uid = 0, unsigned gid = 0,
            const std::string& uname = "root", const std::string& gname = "root") {
    put(Member{path, 'f', mode, uid, gid, uname, gname, std::move(data)});
  }
  void link(const std::string& path, const std::string& target) {
    put(Member{path, 'l', 0777, 0, 0, "root", "root", target});
  }
  // Later calls replace earlier ones ([[files]] win over generated files), but a
  // folder and a file (or link) of one name cannot coexist: busybox tar aborts
  // on such a tarball and the Pi boots unconfigured. The spec refuses these; this
  // is the safety net.
  void put(Member m) {
    auto it = members_.find(m.path);
    if (it != members_.end() && (it->second.type == 'd') != (m.type == 'd'))
      throw Error(Errc::internal, "apkovl: " + m.path + " would be both a folder and a file");
    members_[m.path] = std::move(m);
  }

  std::vector<Member> sorted() {
    // Parent directories that were not given explicitly, shortest first: the
    // base layout's mode where it has a special one (unpacking over / would
    // otherwise make /var/tmp 0755 for good: apk does not repair it), else
    // 0755 owned like their own parent, so that ~/.config of a [[files]]
    // entry in a home belongs to that user.
    std::set<std::string> parents;
    for (const auto& [path, m] : members_)
      for (auto pos = path.find('/'); pos != std::string::npos; pos = path.find('/', pos + 1))
        parents.insert(path.substr(0, pos));
    std::vector<std::string> order(parents.begin(), parents.end());
    std::stable_sort(order.begin(), order.end(), [](const std::string& a, const std::string& b) {
      return std::count(a.begin(), a.end(), '/') < std::count(b.begin(), b.end(), '/');
    });
    for (const auto& p : order) {
      auto it = members_.find(p);
      if (it != members_.end()) {
        if (it->second.type != 'd')
          throw Error(Errc::internal, "apkovl: " + p + " would be both a file and the folder of other members");
        continue;
      }
      Member d{p, 'd', 0755, 0, 0, "root", "root", {}};
      if (p == "tmp" || p == "var/tmp")
        d.mode = 01777;
      else if (p == "root")
        d.mode = 0700;
      else if (auto slash = p.rfind('/'); slash != std::string::npos) {
        const Member& up = members_.at(p.substr(0, slash));
        if (up.uid != 0) d.uid = up.uid, d.gid = up.gid, d.uname = up.uname, d.gname = up.gname;
      }
      members_[p] = std::move(d);
    }
    std::vector<Member> out;
    for (auto& [path, m] : members_) out.push_back(m);
    std::sort(out.begin(), out.end(), [](const Member& a, const Member& b) { return path_less(a.path, b.path); });
    return out;
  }

 private:
  std::map<std::string, Member> members_;
};

void add_unique(std::vector<std::string>& v, const std::string& s) {
  if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
}

bool version_before(const std::string& version, int major, int minor) {
  if (version == "edge" || version == "latest-stable") return false;
  int a = 0, b = 0;
  if (std::sscanf(version.c_str(), "%d.%d", &a, &b) != 2) return false;
  return a < major || (a == major && b < minor);
}

std::string with_shebang(const std::string& content) {
  if (content.rfind("#!", 0) == 0) return content;
  return "#!/bin/sh\n" + content;
}

// A POSIX shell single-quoted word: 'it'\''s'.
std::string sh_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

// "scheme://user:password@host" or "scheme://token@host": the URL carries credentials.
bool url_has_credentials(const std::string& url) {
  auto scheme = url.find("://");
  if (scheme == std::string::npos) return false;
  auto start = scheme + 3;
  auto end = url.find_first_of("/?#", start);
  return url.find('@', start) < end;
}

std::string ensure_newline(std::string s) {
  if (!s.empty() && s.back() != '\n') s += '\n';
  return s;
}

// wpa_supplicant quotes: printable ASCII without '"' goes in quotes, else hex.
std::string ssid_value(const std::string& ssid) {
  bool plain = std::all_of(ssid.begin(), ssid.end(), [](char c) { return c >= 0x20 && c < 0x7f && c != '"'; });
  if (plain) return "\"" + ssid + "\"";
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : ssid) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

const char* kFirstBootRunner = R"SH(#!/bin/sh
# Generated by rpi-provision: runs each script in /etc/rpi-provision/first-boot
# exactly once per card. A diskless root is rebuilt from the apkovl at every boot,
# so deleting a script would not stick; instead a "done" marker is written
#  - to /etc/rpi-provision/done/NAME (kept by lbu commit and by setup-disk), and
#  - to the boot media, /media/$LBU_MEDIA/rpi-provision/HOST/NAME.done, remounted
#    read-write for a moment (kept across diskless reboots).
# The marker is written before the script runs, so a script that reboots the Pi
# (the sys installer) is not started again. Output goes to
# /var/log/rpi-provision/NAME.log and is copied next to the marker on the media.

# The scripts may print secrets: their logs are for root only.
umask 077
LBU_MEDIA=mmcblk0p1
# shellcheck source=/dev/null
[ -r /etc/lbu/lbu.conf ] && . /etc/lbu/lbu.conf
# [network].proxy reaches login shells through profile.d; the scripts too.
# shellcheck source=/dev/null
[ -r /etc/profile.d/proxy.sh ] && . /etc/profile.d/proxy.sh

scripts=/etc/rpi-provision/first-boot
state=/etc/rpi-provision/done
logs=/var/log/rpi-provision
media="/media/$LBU_MEDIA"
media_state="$media/rpi-provision/$(hostname)"

media_mounted() {
	grep -q " $media " /proc/mounts
}

# Copies the marker (and the log when given) to the boot media.
persist() {
	media_mounted || return 0
	mount -o remount,rw "$media" 2>/dev/null || return 0
	mkdir -p "$media_state" && : >"$media_state/$1.done"
	if [ -n "$2" ] && [ -f "$2" ]; then
		cp "$2" "$media_state/$1.log"
	fi
	sync
	mount -o remount,ro "$media"
}

run_once() {
	script=$1
	[ -x "$script" ] || return 0
	name=${script##*/}
	if [ -e "$state/$name" ] || [ -e "$media_state/$name.done" ]; then
		return 0
	fi
	: >"$state/$name"
	persist "$name" ""
	log="$logs/$name.log"
	"$script" >"$log" 2>&1
	echo "rpi-provision: $name exited with status $?" >>"$log"
	persist "$name" "$log"
}

mkdir -p "$state" "$logs"
for script in "$scripts"/*; do
	run_once "$script"
done
# The [install] mode = "sys" installer reboots: always last, whatever the names above.
run_once /etc/rpi-provision/zz-install-sys
)SH";

// The OpenRC service that finishes what the initramfs could not: it installs
// /etc/apk/world without network, so packages that were neither in the card's
// apks/ nor in its apk cache are skipped (alpine-facts §1.7).
const char* kPackagesService = R"SH(#!/sbin/openrc-run
# Generated by rpi-provision. Alpine's initramfs installs /etc/apk/world without
# network: packages that were neither in the card's boot repository (apks/) nor
# in its apk cache are skipped. Once the network is up this installs the ones
# still missing, keeps a copy in the card's apk cache when /etc/apk/cache leads
# there (so that the next boot installs them without network), and starts the
# services of this card's runlevels that came with them.
# shellcheck disable=SC2034 # read by openrc-run
description="Install the packages the boot could not (rpi-provision)"

depend() {
	need net
	after sshd chronyd ntpd firewall
	before local
}

# World entries whose package is not installed ("name", "name@tag", "name>=1").
missing_packages() {
	while read -r entry; do
		[ -n "$entry" ] || continue
		apk info -e "${entry%%[<>=~@]*}" >/dev/null 2>&1 || echo "$entry"
	done </etc/apk/world
}

# Runlevel services whose script is not there (yet): sysinit, boot, default.
absent_services() {
	for level in sysinit boot default; do
		for link in /etc/runlevels/"$level"/*; do
			[ -L "$link" ] || continue
			svc=${link##*/}
			[ -e /etc/init.d/"$svc" ] || echo "$svc"
		done
	done
}

start() {
	todo=$(missing_packages)
	[ -n "$todo" ] || return 0
	absent=$(absent_services)
	ebegin "Installing packages the boot could not: $(echo "$todo" | tr '\n' ' ')"
	media=""
	case "$(readlink /etc/apk/cache 2>/dev/null)" in
	/media/*/*)
		media=$(readlink /etc/apk/cache)
		media=${media%/*}
		mount -o remount,rw "$media" 2>/dev/null || media=""
		;;
	esac
	# A Pi has no clock of its own: an https mirror's certificate only checks
	# out once chrony has set the time (its socket works with cmdport 0), and
	# Wi-Fi may still be getting its lease. A minute of tries, then the next boot.
	command -v chronyc >/dev/null && chronyc waitsync 30 0 0 2 >/dev/null 2>&1
	# [network].proxy reaches login shells through profile.d; apk here too.
	# shellcheck source=/dev/null
	[ -r /etc/profile.d/proxy.sh ] && . /etc/profile.d/proxy.sh
	log=/var/log/rpi-provision/packages.log
	umask 077
	mkdir -p /var/log/rpi-provision
	tries=6
	while :; do
		# shellcheck disable=SC2086 # one argument per package
		apk add --update-cache --no-progress $todo >>"$log" 2>&1 && status=0 && break
		status=$?
		tries=$((tries - 1))
		[ "$tries" -gt 0 ] || break
		sleep 10
	done
	if [ -n "$media" ]; then
		sync
		mount -o remount,ro "$media"
	fi
	for svc in $absent; do
		[ -e /etc/init.d/"$svc" ] && rc-service "$svc" start
	done
	eend "$status"
}
)SH";

std::string installer_script(const Install& inst) {
  return R"SH(#!/bin/sh
# Generated by rpi-provision for [install] mode = "sys": installs Alpine on
# [install].disk with this card's configuration (setup-disk takes the running
# system's lbu package as the new /etc), then reboots into it. Run once by the
# first-boot runner after every first-boot script, so their "done" markers are
# carried over.
set -e
disk=)SH" +
         sh_quote(inst.disk) + R"SH(
export ERASE_DISKS="$disk"
echo "rpi-provision: installing Alpine (sys mode) on $disk"
yes | setup-disk -m sys "$disk"
echo "rpi-provision: installation finished, rebooting"
reboot
)SH";
}

struct Ids {
  unsigned uid, gid;
  std::string uname, gname;
};

// layout_only: the same paths without host keys or password hashes (placeholders)
// and without the [[files]] entries themselves.
std::vector<Member> members_of(const HostConfig& h, const BuildOptions& opt, std::vector<std::string>* known_hosts,
                               bool layout_only) {
  Tree t;
  const std::string seed = opt.seed.value_or("");
  const std::string fqdn = h.domain.empty() ? h.hostname : h.hostname + "." + h.domain;

  // --- identity
  t.file("etc/hostname", h.hostname + "\n");
  std::string hosts = "127.0.0.1\t" + (h.domain.empty() ? h.hostname : fqdn + " " + h.hostname) +
                      " localhost.localdomain localhost\n::1\t\tlocalhost localhost.localdomain\n";
  t.file("etc/hosts", hosts);
  if (!h.motd.empty()) t.file("etc/motd", ensure_newline(h.motd));

  // --- network (ifupdown-ng: an iface line's inet/inet6 word is ignored and
  // "dhcp" there means its one DHCP executor, so DHCPv6 is dhcpcd's job, and
  // the DHCP client is named wherever it matters)
  std::string ifs = "auto lo\niface lo inet loopback\n";
  std::vector<std::string> ipv6_off;
  const bool own_dns = !h.network.dns.empty();
  bool dhcpv6 = false;
  for (const auto& i : h.network.interfaces) dhcpv6 = dhcpv6 || i.ipv6 == "dhcp";
  for (const auto& i : h.network.interfaces) {
    ifs += "\nauto " + i.name + "\n";
    // dhcpcd for DHCPv6, started and stopped by the stanza's own commands:
    // ifupdown-ng up to 0.12.1 (Alpine 3.22) passes dhcp-opts to udhcpc only,
    // so "-6" and "--nohook resolv.conf" never reached dhcpcd. The commands
    // must not keep the interface up or down if they fail.
    auto dhcpcd = [&](const std::string& args) {
      ifs += "\tpost-up /sbin/dhcpcd " + args + (own_dns ? "--nohook resolv.conf " : "") + i.name + " || true\n";
      ifs += "\tpre-down /sbin/dhcpcd " + std::string(args.rfind("-6", 0) == 0 ? "-6 " : "") + "-k " + i.name +
             " || true\n";
    };
    if (i.dhcp && i.ipv6 == "dhcp" && own_dns) {
      // An IPv4 lease, router advertisements and DHCPv6 from one dhcpcd that
      // leaves the spec's resolv.conf alone.
      ifs += "iface " + i.name + "\n";
      dhcpcd("-h " + h.hostname + " ");
    } else if (i.dhcp) {
      ifs += "iface " + i.name + " inet dhcp\n";
      ifs += "\thostname " + h.hostname + "\n";
      if (i.ipv6 == "dhcp") {
        // dhcpcd: an IPv4 lease, router advertisements and DHCPv6.
        ifs += "\tdhcp-program dhcpcd\n";
      } else if (own_dns || dhcpv6) {
        // busybox udhcpc (dhcpcd, once installed, would be picked otherwise);
        // its script leaves resolv.conf alone with peer-dns no.
        ifs += "\tdhcp-program udhcpc\n";
        if (own_dns) ifs += "\tpeer-dns no\n";
      }
    } else {
      auto cidr = checks::parse_cidr(i.address);
      std::string addr = i.address.substr(0, i.address.find('/'));
      ifs += "iface " + i.name + (cidr->ip.family == 4 ? " inet" : " inet6") + " static\n";
      ifs += "\taddress " + addr + "\n";
      if (cidr->ip.family == 4)
        ifs += "\tnetmask " + checks::netmask4(cidr->prefix) + "\n";
      else
        ifs += "\tnetmask " + std::to_string(cidr->prefix) + "\n";
      if (!i.gateway.empty()) ifs += "\tgateway " + i.gateway + "\n";
      // The static IPv4 address stays; dhcpcd -6 asks for IPv6 only (the DHCP
      // executor would run a dual-stack client and add an IPv4 lease).
      if (i.ipv6 == "dhcp") dhcpcd("-6 ");
    }
    if (i.ipv6 == "off") {
      // sysctl.d (below) runs once at boot, before a late interface exists:
      // wlan0 waits for brcmfmac's firmware, a USB adapter for enumeration.
      // Again just before the interface comes up, then; a kernel without IPv6
      // or a read-only /proc must not keep the interface down (a failing
      // pre-up command would).
      const std::string knob = "/proc/sys/net/ipv6/conf/" + i.name + "/disable_ipv6";
      ifs += "\tpre-up test ! -e " + knob + " || echo 1 > " + knob + " || true\n";
      ipv6_off.push_back(i.name);
    } else if (i.ipv6 == "auto" && (i.dhcp || checks::parse_cidr(i.address)->ip.family == 4)) {
      ifs += "iface " + i.name + " inet6 auto\n";
    }
  }
  t.file("etc/network/interfaces", ifs);
  if (!ipv6_off.empty()) {
    std::string s = "# Generated by rpi-provision: ipv6 = \"off\"\n";
    // sysctl reads dots as separators: a VLAN's "eth0.10" needs the slash form,
    // which procps and busybox sysctl both take as a path below /proc/sys.
    for (const auto& n : ipv6_off)
      s += n.find('.') == std::string::npos ? "net.ipv6.conf." + n + ".disable_ipv6 = 1\n"
                                            : "net/ipv6/conf/" + n + "/disable_ipv6 = 1\n";
    t.file("etc/sysctl.d/90-rpi-provision-ipv6.conf", s);
  }
  if (!h.network.dns.empty()) {
    std::string r;
    if (!h.network.search.empty()) r += "search " + join(h.network.search, " ") + "\n";
    for (const auto& d : h.network.dns) r += "nameserver " + d + "\n";
    t.file("etc/resolv.conf", r);
  }
  if (!h.network.proxy.empty()) {
    // Single-quoted: a password may hold $, &, ; or quotes. With credentials the
    // file is 0600 (root only; /etc/profile skips unreadable profile.d files, so
    // other users simply get no proxy), without them 0644 so every user gets it.
    const auto p = sh_quote(h.network.proxy);
    t.file("etc/profile.d/proxy.sh",
           "# Generated by rpi-provision ([network].proxy)\nexport http_proxy=" + p + "\nexport https_proxy=" + p +
               "\nexport ftp_proxy=" + p + "\n",
           url_has_credentials(h.network.proxy) ? 0600 : 0644);
  }

  // --- Wi-Fi: only the derived PSK is stored, never the passphrase. One
  // network={} block per network, in spec order ([wifi]'s own first).
  if (h.wifi.enabled) {
    std::string w = "ctrl_interface=/var/run/wpa_supplicant\nctrl_interface_group=wheel\n";
    if (!h.wifi.country.empty()) w += "country=" + h.wifi.country + "\n";
    for (const auto& net : h.wifi.networks) {
      bool hex64 = net.psk.size() == 64 && net.psk.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
      const std::string psk = ascii_lower(hex64 ? net.psk : wifi_psk(net.psk, net.ssid));
      w += "\nnetwork={\n\tssid=" + ssid_value(net.ssid) + "\n";
      if (net.hidden) w += "\tscan_ssid=1\n";
      if (net.priority) w += "\tpriority=" + std::to_string(*net.priority) + "\n";
      w += "\tkey_mgmt=WPA-PSK\n\tpsk=" + psk + "\n}\n";
    }
    t.file("etc/wpa_supplicant/wpa_supplicant.conf", w, 0600);
    t.file("etc/conf.d/wpa_supplicant",
           "# Generated by rpi-provision\nwpa_supplicant_args=\"-i" + h.wifi.interface + "\"\n");
  }

  // --- time zone and keymap
  if (h.timezone != "UTC") t.link("etc/localtime", "/usr/share/zoneinfo/" + h.timezone);
  if (!h.keymap.empty()) {
    auto sp = h.keymap.find(' ');
    t.file("etc/conf.d/loadkmap",
           "KEYMAP=/usr/share/bkeymaps/" + h.keymap.substr(0, sp) + "/" + h.keymap.substr(sp + 1) + ".bmap.gz\n");
  }

  // --- packages
  std::vector<std::string> world = {"alpine-base"};
  bool any_admin = std::any_of(h.users.begin(), h.users.end(), [](const User& u) { return u.admin; });
  if (h.ssh.enable) world.push_back("openssh");
  if (h.ntp.enable) world.push_back("chrony");
  if (h.wifi.enabled) world.push_back("wpa_supplicant");
  if (h.timezone != "UTC") world.push_back("tzdata");
  if (!h.keymap.empty()) world.push_back("kbd-bkeymaps");
  if (std::any_of(h.network.interfaces.begin(), h.network.interfaces.end(),
                  [](const Interface& i) { return i.ipv6 == "dhcp"; }))
    world.push_back("dhcpcd");  // in the card's apks/ (Alpine's base profile)
  if (any_admin) world.push_back("doas");
  for (const auto& p : h.apk.packages) world.push_back(p);
  std::sort(world.begin(), world.end());
  world.erase(std::unique(world.begin(), world.end()), world.end());
  t.file("etc/apk/world", join(world, "\n") + "\n");
  std::vector<std::string> repos = h.apk.repositories;
  if (repos.empty()) {
    // [alpine].mirror is where the build fetched the tarball; a local folder or
    // file:// mirror is a path of the build machine, so the card uses the public one.
    std::string mirror = h.alpine.mirror;
    if (mirror.empty() || mirror[0] == '/' || mirror.rfind("file://", 0) == 0) mirror = AlpineSource{}.mirror;
    std::string base = mirror + "/" + h.alpine.branch();
    repos = {"/media/" + h.lbu.media + "/apks", base + "/main", base + "/community"};
  }
  // Like proxy.sh: a repository URL with a password is for root (apk) only.
  const bool secret_repo = std::any_of(repos.begin(), repos.end(), url_has_credentials);
  t.file("etc/apk/repositories", join(repos, "\n") + "\n", secret_repo ? 0600 : 0644);
  for (const auto& k : h.apk.keys) t.file("etc/apk/keys/" + k.name, k.content);
  if (h.apk.cache) t.link("etc/apk/cache", "/media/" + h.lbu.media + "/cache");

  // --- accounts
  std::map<std::string, Ids> user_ids;
  for (const auto& a : base::accounts()) {
    std::string gname = "root";
    for (const auto& g : base::groups())
      if (g.gid == a.gid) gname = g.name;
    user_ids[std::string(a.name)] = Ids{a.uid, a.gid, std::string(a.name), gname};
  }
  std::map<std::string, unsigned> group_ids;
  for (const auto& g : base::groups()) group_ids[std::string(g.name)] = g.gid;
  for (const auto& u : h.users) {
    auto uid = static_cast<unsigned>(u.uid);
    for (const auto& g : base::groups())
      if (g.gid == uid)
        throw Error(Errc::spec, "user " + u.name + ": uid " + std::to_string(uid) + " equals the gid of group " +
                                    std::string(g.name) + "; choose another uid");
    user_ids[u.name] = Ids{uid, uid, u.name, u.name};
    group_ids[u.name] = uid;
  }
  for (const auto& [g, gid] : h.extra_groups) group_ids[g] = gid;

  std::string passwd, shadow;
  for (const auto& a : base::accounts()) {
    passwd += std::string(a.name) + ":x:" + std::to_string(a.uid) + ":" + std::to_string(a.gid) + ":" +
              std::string(a.gecos) + ":" + std::string(a.home) + ":" + std::string(a.shell) + "\n";
    std::string pw = "!";
    if (a.name == "root") {
      if (!h.root.password.empty() && layout_only)
        pw = "*";
      else if (!h.root.password.empty())
        pw = sha512_crypt(h.root.password, derive_bytes(seed, "salt:" + h.hostname + ":root", 16));
      else if (!h.root.password_hash.empty())
        pw = h.root.password_hash;
      else if (!h.root.ssh_authorized_keys.empty())
        pw = "*";  // key-only: '!' would lock the account for sshd (alpine-facts §5)
      else if (root_login(h) == RootLogin::locked)
        pw = "*";  // an admin becomes root with doas; an empty password would let anyone at the console in
      else
        pw = "";  // Alpine's default: nobody else could administer the Pi
    }
    shadow += std::string(a.name) + ":" + pw + "::0:::::\n";
  }
  for (const auto& u : h.users) {
    passwd += u.name + ":x:" + std::to_string(u.uid) + ":" + std::to_string(u.uid) + ":" + u.name + ":/home/" + u.name +
              ":" + u.shell + "\n";
    std::string pw = "*";
    if (!u.password.empty() && layout_only)
      pw = "*";
    else if (!u.password.empty())
      pw = sha512_crypt(u.password, derive_bytes(seed, "salt:" + h.hostname + ":" + u.name, 16));
    else if (!u.password_hash.empty())
      pw = u.password_hash;
    shadow += u.name + ":" + pw + "::0:::::\n";
  }
  // Group members: base members plus the users that name the group (admins join wheel).
  std::map<std::string, std::vector<std::string>> members;
  for (const auto& u : h.users) {
    for (const auto& g : u.groups) add_unique(members[g], u.name);
    if (u.admin) add_unique(members["wheel"], u.name);
  }
  std::string group;
  for (const auto& g : base::groups()) {
    std::vector<std::string> m;
    std::string base_members(g.members);
    for (std::size_t s = 0; !base_members.empty() && s <= base_members.size();) {
      auto c = base_members.find(',', s);
      m.push_back(base_members.substr(s, c == std::string::npos ? std::string::npos : c - s));
      if (c == std::string::npos) break;
      s = c + 1;
    }
    for (const auto& x : members[std::string(g.name)]) add_unique(m, x);
    group += std::string(g.name) + ":x:" + std::to_string(g.gid) + ":" + join(m, ",") + "\n";
  }
  for (const auto& u : h.users)
    group += u.name + ":x:" + std::to_string(u.uid) + ":" + join(members[u.name], ",") + "\n";
  for (const auto& [g, gid] : h.extra_groups)
    group += g + ":x:" + std::to_string(gid) + ":" + join(members[g], ",") + "\n";
  t.file("etc/passwd", passwd);
  t.file("etc/group", group);
  t.file("etc/shadow", shadow, 0640, 0, base::kShadowGid, "root", "shadow");
  if (any_admin) {
    // doas asks for the admin's own password. An admin with none (SSH keys
    // only: "*" in shadow) could then never become root, since root's password
    // is empty and sshd refuses it; their key is the credential, so doas does
    // not ask them (the last matching rule wins).
    std::string rules = "permit persist :wheel\n";
    for (const auto& u : h.users)
      if (u.admin && !u.has_password()) rules += "permit nopass " + u.name + "\n";
    t.file("etc/doas.d/20-wheel.conf", rules, 0600);
  }

  std::vector<std::string> lbu_include;
  for (const auto& u : h.users) {
    const auto& id = user_ids[u.name];
    std::string home = "home/" + u.name;
    t.dir(home, 0755, id.uid, id.gid, id.uname, id.gname);
    lbu_include.push_back(home);
    if (!u.ssh_authorized_keys.empty()) {
      t.dir(home + "/.ssh", 0700, id.uid, id.gid, id.uname, id.gname);
      t.file(home + "/.ssh/authorized_keys", join(u.ssh_authorized_keys, "\n") + "\n", 0600, id.uid, id.gid, id.uname,
             id.gname);
    }
  }
  if (!h.root.ssh_authorized_keys.empty()) {
    t.dir("root", 0700);
    t.dir("root/.ssh", 0700);
    t.file("root/.ssh/authorized_keys", join(h.root.ssh_authorized_keys, "\n") + "\n", 0600);
    lbu_include.push_back("root");
  }

  // --- SSH
  if (h.ssh.enable) {
    std::string c = "# Generated by rpi-provision: the complete sshd configuration ([ssh] in the spec).\n";
    bool gen = h.ssh.host_keys == "generate";
    if (gen) c += "HostKey /etc/ssh/ssh_host_ed25519_key\nHostKey /etc/ssh/ssh_host_rsa_key\n";
    c += "PermitRootLogin " + h.ssh.permit_root_login + "\n";
    c += "PubkeyAuthentication yes\nAuthorizedKeysFile .ssh/authorized_keys\n";
    c += std::string("PasswordAuthentication ") + (h.ssh.password_authentication ? "yes" : "no") + "\n";
    c += "KbdInteractiveAuthentication no\nPermitEmptyPasswords no\n";
    c += "AllowTcpForwarding no\nGatewayPorts no\nX11Forwarding no\n";
    c += "Subsystem sftp internal-sftp\n";
    t.file("etc/ssh/sshd_config", c);
    if (gen && layout_only) {
      for (const std::string type : {"ed25519", "rsa"}) {
        t.file("etc/ssh/ssh_host_" + type + "_key", {}, 0600);
        t.file("etc/ssh/ssh_host_" + type + "_key.pub", {});
      }
    }
    if (gen) {
      t.file("etc/conf.d/sshd",
             "# Generated by rpi-provision: host keys come from the apkovl.\nsshd_disable_keygen=\"yes\"\n");
    }
    if (gen && !layout_only) {
      std::string comment = "root@" + h.hostname;
      auto ed = ed25519_host_key(derive_bytes(seed, "ssh-ed25519:" + h.hostname, 32), comment);
      auto rsa = rsa_host_key(seed.empty() ? "" : derive_bytes(seed, "ssh-rsa:" + h.hostname, 32), comment);
      for (const auto* k : {&ed, &rsa}) {
        t.file("etc/ssh/ssh_host_" + k->type + "_key", k->private_key, 0600);
        t.file("etc/ssh/ssh_host_" + k->type + "_key.pub", k->public_key, 0644);
      }
      if (known_hosts) {
        std::vector<std::string> names = {h.hostname};
        if (!h.domain.empty()) names.push_back(fqdn);
        for (const auto& i : h.network.interfaces)
          if (!i.address.empty()) names.push_back(i.address.substr(0, i.address.find('/')));
        for (const auto* k : {&ed, &rsa})
          known_hosts->push_back(join(names, ",") + " " + k->algorithm + " " + k->public_blob_b64);
      }
    }
  }

  // --- NTP (chrony steps the clock: a Pi without RTC boots with a stale time)
  if (h.ntp.enable) {
    std::string c = "# Generated by rpi-provision ([ntp])\n";
    if (h.ntp.servers.empty()) c += "pool pool.ntp.org iburst\n";
    for (const auto& s : h.ntp.servers) c += "server " + s + " iburst\n";
    c += "makestep 1 -1\ndriftfile /var/lib/chrony/chrony.drift\nrtcsync\ncmdport 0\n";
    t.file("etc/chrony/chrony.conf", c);
  }

  // --- scripts
  bool any_first_boot = h.install.mode == "sys";
  for (const auto& s : h.scripts) {
    if (s.first_boot) {
      any_first_boot = true;
      t.file("etc/rpi-provision/first-boot/" + s.name, with_shebang(s.content), 0700);
    } else {
      t.file("etc/local.d/" + s.name + ".start", with_shebang(s.content), 0700);
    }
  }
  // Scripts run as root and may carry secrets ({ env } / { file } content):
  // only root reads them (0700), and their logs (the runner's umask).
  if (h.install.mode == "sys")
    t.file("etc/rpi-provision/" + std::string(kInstallerName), installer_script(h.install), 0700);
  if (any_first_boot) t.file("etc/local.d/" + std::string(kFirstBootRunnerName) + ".start", kFirstBootRunner, 0755);
  if (!h.apk.packages.empty()) t.file("etc/init.d/" + std::string(kPackagesServiceName), kPackagesService, 0755);
  bool any_local =
      any_first_boot || std::any_of(h.scripts.begin(), h.scripts.end(), [](const Script& s) { return !s.first_boot; });

  // --- lbu: commit replaces <hostname>.apkovl.tar.gz on the same media.
  std::string lbu = "# Generated by rpi-provision ([lbu])\nLBU_MEDIA=" + h.lbu.media + "\n";
  if (h.lbu.backup_limit > 0) lbu += "BACKUP_LIMIT=" + std::to_string(h.lbu.backup_limit) + "\n";
  t.file("etc/lbu/lbu.conf", lbu);
  // lbu keeps /etc, except where apk protects only symlinks: /etc/init.d (a
  // custom service's script would vanish at the first `lbu commit`).
  for (const auto& f : h.files)
    if (f.path.rfind("/etc/", 0) != 0 || f.path.rfind("/etc/init.d/", 0) == 0) lbu_include.push_back(f.path.substr(1));
  // The same for the packages service: a commit must keep it.
  if (!h.apk.packages.empty()) lbu_include.push_back("etc/init.d/" + std::string(kPackagesServiceName));
  for (const auto& p : h.lbu.include) lbu_include.push_back(p.substr(1));
  std::string list;
  std::set<std::string> seen;
  for (const auto& p : lbu_include)
    if (seen.insert(p).second) list += "+" + p + "\n";
  for (const auto& p : h.lbu.exclude) list += "-" + p.substr(1) + "\n";
  if (!list.empty()) t.file("etc/apk/protected_paths.d/lbu.list", list);

  // --- runlevels (alpine-facts §5)
  std::map<std::string, std::vector<std::string>> levels;
  levels["sysinit"] = {"devfs", "dmesg", "mdev", "hwdrivers", "modloop"};
  levels["boot"] = {"modules", "sysctl", "hostname", "bootmisc", "syslog", "networking"};
  levels["boot"].push_back(version_before(h.alpine.version, 3, 17) ? "urandom" : "seedrng");
  if (!h.keymap.empty()) levels["boot"].push_back("loadkmap");
  if (h.wifi.enabled) levels["boot"].push_back("wpa_supplicant");
  levels["default"] = {"crond"};
  if (!h.apk.packages.empty()) levels["default"].push_back(std::string(kPackagesServiceName));
  if (h.ssh.enable) levels["default"].push_back("sshd");
  if (h.ntp.enable) levels["default"].push_back("chronyd");
  if (any_local) levels["default"].push_back("local");
  levels["shutdown"] = {"mount-ro", "killprocs", "savecache"};
  for (const auto& s : h.services.sysinit) add_unique(levels["sysinit"], s);
  for (const auto& s : h.services.boot) add_unique(levels["boot"], s);
  for (const auto& s : h.services.default_) add_unique(levels["default"], s);
  for (const auto& s : h.services.shutdown) add_unique(levels["shutdown"], s);
  for (auto& [lvl, svcs] : levels) {
    t.dir("etc/runlevels/" + lvl);
    for (const auto& s : svcs)
      if (std::find(h.services.disable.begin(), h.services.disable.end(), s) == h.services.disable.end())
        t.link("etc/runlevels/" + lvl + "/" + s, "/etc/init.d/" + s);
  }

  // --- [[files]] last: they replace generated files of the same path.
  if (layout_only) return t.sorted();
  for (const auto& f : h.files) {
    const auto& u = user_ids.count(f.owner) ? user_ids[f.owner] : user_ids["root"];
    unsigned gid = group_ids.count(f.group) ? group_ids[f.group] : 0;
    t.file(f.path.substr(1), f.content, f.mode, u.uid, gid, f.owner, f.group);
  }
  return t.sorted();
}

}  // namespace

std::vector<Member> apkovl_members(const HostConfig& h, const BuildOptions& opt,
                                   std::vector<std::string>* known_hosts) {
  return members_of(h, opt, known_hosts, false);
}

std::vector<std::pair<std::string, bool>> generated_paths(const HostConfig& host) {
  std::vector<std::pair<std::string, bool>> out;
  for (const auto& m : members_of(host, BuildOptions{}, nullptr, true)) out.emplace_back(m.path, m.type == 'd');
  return out;
}

Apkovl build_apkovl(const HostConfig& host, const BuildOptions& options) {
  // A card of a spec loaded for `check` (MissingEnv::warn) would carry empty
  // secrets: an open root console, a Wi-Fi that never joins. Never built.
  if (const auto unset = unset_secrets(host); !unset.empty())
    throw Error(Errc::spec, "environment variable " + unset.front().variable + " (for " + unset.front().entry +
                                ") is not set; export it and run again");
  Apkovl out;
  out.file_name = host.hostname + ".apkovl.tar.gz";
  auto members = apkovl_members(host, options, &out.known_hosts);
  out.bytes = write_tar_gz(members, options.source_date_epoch.value_or(kDefaultEpoch));
  return out;
}

std::string edit_cmdline(const Boot& boot, const std::string& original) {
  std::vector<std::string> words;
  std::istringstream in(original);
  for (std::string w; in >> w;) words.push_back(w);
  auto key_of = [](const std::string& w) { return w.substr(0, w.find('=')); };
  auto set_param = [&](const std::string& p) {
    // Parameters with a value replace one of the same key (except console=, which may repeat).
    if (std::find(words.begin(), words.end(), p) != words.end()) return;
    if (p.find('=') != std::string::npos && key_of(p) != "console") {
      for (auto& w : words)
        if (key_of(w) == key_of(p)) {
          w = p;
          return;
        }
    }
    words.push_back(p);
  };
  if (boot.serial_console) {
    std::string serial = "console=serial0,115200";
    if (std::find(words.begin(), words.end(), serial) == words.end()) {
      // Before the existing console=tty1: the last console= is /dev/console, keep the screen primary.
      auto it =
          std::find_if(words.begin(), words.end(), [](const std::string& w) { return w.rfind("console=", 0) == 0; });
      words.insert(it, serial);
    }
  }
  for (const auto& p : boot.cmdline) set_param(p);
  if (!boot.apkovl_url.empty()) set_param("apkovl=" + boot.apkovl_url);
  return join(words, " ") + "\n";
}

namespace {

// A config.txt conditional section header ("[pi4]", "[all]", "[gpio4=1]", ...).
bool section_header(std::string_view line) {
  while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
  return !line.empty() && line.front() == '[';
}

// Appends `setting` (KEY=VALUE) to the [boot].config lines so that it applies
// to every Pi: after the user's lines a model filter such as [pi4] may still be
// in force (alpine-facts §7), so an [all] line resets it first. Without section
// headers the lines are as before (no [all]): the same spec gives the same bytes.
void append_for_every_model(std::vector<std::string>& lines, const std::string& setting) {
  if (std::none_of(lines.begin(), lines.end(), [](const std::string& l) { return section_header(l); })) {
    if (std::find(lines.begin(), lines.end(), setting) == lines.end()) lines.push_back(setting);
    return;
  }
  const std::string key = setting.substr(0, setting.find('=') + 1);
  bool unconditional = true;  // no filter in force at this point of the lines
  bool already = false;       // the setting is in force for every model
  for (const auto& l : lines) {
    if (section_header(l)) {
      std::string_view h = l;
      while (!h.empty() && (h.back() == ' ' || h.back() == '\t')) h.remove_suffix(1);
      while (!h.empty() && (h.front() == ' ' || h.front() == '\t')) h.remove_prefix(1);
      unconditional = h == "[all]";
    } else if (l == setting) {
      already = already || unconditional;
    } else if (l.rfind(key, 0) == 0) {
      already = false;  // another value later, for every model or some
    }
  }
  if (already) return;
  if (!unconditional) lines.push_back("[all]");
  lines.push_back(setting);
}

}  // namespace

BootEdits boot_edits(const HostConfig& host) {
  BootEdits e;
  e.label = host.boot.label;
  e.size = host.boot.size;
  e.size_max = host.boot.size_max;
  e.carries_apkovl = host.boot.apkovl_url.empty();
  Boot boot = host.boot;
  e.edits["cmdline.txt"] = [boot](const std::string& original) { return edit_cmdline(boot, original); };
  std::vector<std::string> lines = host.boot.config;
  if (host.boot.serial_console) append_for_every_model(lines, "enable_uart=1");
  if (!lines.empty()) e.usercfg_txt = "# Generated by rpi-provision ([boot].config)\n" + join(lines, "\n") + "\n";
  if (host.apk.cache) e.directories.push_back("cache");
  return e;
}

std::vector<std::pair<std::string, std::string>> boot_root_files(const BootEdits& edits, const Apkovl& apkovl) {
  std::vector<std::pair<std::string, std::string>> out;
  if (edits.carries_apkovl) out.emplace_back(apkovl.file_name, apkovl.bytes);
  if (edits.usercfg_txt) out.emplace_back("usercfg.txt", *edits.usercfg_txt);
  return out;
}

std::string mac_file_name(const std::string& mac) {
  auto m = checks::normalize_mac(mac);
  if (!m) throw Error(Errc::usage, "not a MAC address: " + mac);
  if (auto why = checks::mac_not_a_card(*m); !why.empty())
    throw Error(Errc::usage, "not a network card's address: " + mac + " (" + why + ")");
  return *m + ".apkovl.tar.gz";
}

}  // namespace rpi::overlay
