// The redacted summary `check` prints: every secret appears as "(secret)", or as
// "not set (env NAME)" when `check` went on without its variable.
#include <algorithm>
#include <sstream>
#include <string_view>
#include <vector>

#include "checks.hpp"
#include "overlay/spec.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"
#include "rpi/url.hpp"

namespace rpi::overlay {

namespace {
// A value of the spec as one line of the summary: a line break, a NUL or an
// ESC in it (a name, an ssid) shown escaped, so it can neither end the line
// nor the summary, nor drive a terminal.
std::string shown(std::string_view s) {
  return printable(s);
}
std::string shown(const std::vector<std::string>& list, std::string_view sep = ", ") {
  return printable(join(list, sep));
}
std::string keys(std::size_t n) {
  return std::to_string(n) + (n == 1 ? " ssh key" : " ssh keys");
}
// A secret's presence: "(secret)", or "not set (env NAME)" without its variable.
std::string secret_shown(const std::string& unset_env) {
  return unset_env.empty() ? "(secret)" : "not set (env " + printable(unset_env) + ")";
}
}  // namespace

std::vector<UnsetSecret> unset_secrets(const HostConfig& h) {
  std::vector<UnsetSecret> out;
  auto add = [&](std::string entry, const std::string& variable) {
    if (!variable.empty()) out.push_back({std::move(entry), variable});
  };
  for (const auto& n : h.wifi.networks)
    add(n.entry == "[wifi]" ? "[wifi].psk" : n.entry + ".psk for " + n.ssid, n.psk_unset_env);
  for (const auto& u : h.users) add("[[users]].password for " + u.name, u.password_unset_env);
  add("[root].password", h.root.password_unset_env);
  for (const auto& f : h.files) add("[[files]].content for " + f.path, f.content_unset_env);
  for (const auto& s : h.scripts) add("[[scripts]].content for " + s.name, s.content_unset_env);
  return out;
}

std::string summary(const HostConfig& h) {
  std::ostringstream o;
  o << "card " << h.index << ": " << shown(h.hostname) << (h.domain.empty() ? "" : "." + shown(h.domain));
  if (!h.mac.empty()) o << " (mac " << shown(h.mac) << ")";
  o << "\n";
  o << "  alpine    " << shown(h.alpine.version) << " " << shown(h.alpine.arch) << " from "
    << shown(redact_urls(h.alpine.tarball.empty() ? h.alpine.mirror : h.alpine.tarball)) << "\n";
  o << "  system    timezone " << shown(h.timezone) << (h.keymap.empty() ? "" : ", keymap " + shown(h.keymap))
    << (h.motd.empty() ? "" : ", motd") << "\n";
  for (const auto& i : h.network.interfaces) {
    o << "  network   " << shown(i.name) << " " << (i.dhcp ? "dhcp" : shown(i.address));
    if (!i.gateway.empty()) o << " via " << shown(i.gateway);
    o << ", ipv6 " << shown(i.ipv6) << "\n";
  }
  if (!h.network.dns.empty()) o << "  dns       " << shown(h.network.dns) << "\n";
  if (!h.network.proxy.empty()) o << "  proxy     " << shown(redact_urls(h.network.proxy)) << "\n";
  // One line per network; the first also names the country and the interface, which are for all.
  for (std::size_t i = 0; i < h.wifi.networks.size(); ++i) {
    const WifiNetwork& n = h.wifi.networks[i];
    o << "  wifi      ssid \"" << shown(n.ssid) << "\" psk " << secret_shown(n.psk_unset_env);
    if (i == 0 && !h.wifi.country.empty()) o << " country " << shown(h.wifi.country);
    if (n.hidden) o << " hidden";
    if (n.priority) o << " priority " << *n.priority;
    if (i == 0) o << " on " << shown(h.wifi.interface);
    o << "\n";
  }
  o << "  packages  " << (h.apk.packages.empty() ? "(base only)" : shown(h.apk.packages, " "))
    << (h.apk.cache ? " [apk cache on card]" : "") << "\n";
  for (const auto& u : h.users) {
    o << "  user      " << shown(u.name) << " uid " << u.uid;
    if (!u.groups.empty()) o << " groups " << shown(u.groups, ",");
    o << (u.admin ? " admin" : "") << (u.password_given() ? " password " + secret_shown(u.password_unset_env) : "")
      << (!u.password_hash.empty() ? " password_hash (secret)" : "") << ", " << keys(u.ssh_authorized_keys.size());
    // Whether the account opens a shell: "admin" alone would suggest it does.
    if (auto why = checks::no_login_reason(h, u); !why.empty()) o << " (no interactive login: " << shown(why) << ")";
    o << "\n";
  }
  switch (root_login(h)) {
    case RootLogin::as_configured: {
      // A locked hash ("*" or "!": no secret in its first character) is no password.
      const auto& ph = h.root.password_hash;
      const bool locked = ph.starts_with("*") || ph.starts_with("!");
      const auto& ks = h.root.ssh_authorized_keys;
      o << "  root      "
        << (h.root.password_given() ? "password " + secret_shown(h.root.password_unset_env) + ", " : "")
        << (locked ? "password locked (password_hash \"" + ph.substr(0, 1) + "\"), " : "")
        << (!ph.empty() && !locked ? "password_hash (secret), " : "") << keys(ks.size());
      // Whether sshd takes those keys: a count alone would suggest root logs in with them.
      switch (root_keys(h)) {
        case RootKeys::none:
          break;
        case RootKeys::usable:
          if (ph.starts_with("!"))
            o << " (refused: password_hash \"!\" locks root for sshd)";
          else if (std::all_of(ks.begin(), ks.end(),
                               [](const std::string& k) { return checks::ssh_key_forces_command(k); }))
            o << " (forced commands only, no interactive login)";
          else if (std::none_of(ks.begin(), ks.end(),
                                [](const std::string& k) { return checks::ssh_key_opens_shell(k); }))
            o << " (no interactive login: rpi-provision's example key, whose private key nobody has)";
          break;
        case RootKeys::sshd_off:
          o << " (unused: ssh is disabled)";
          break;
        case RootKeys::refused:
          o << " (refused: root login " << shown(h.ssh.permit_root_login)
            << (h.ssh.permit_root_login == "no" ? "" : " and no key has command=") << ")";
          break;
        case RootKeys::forced_commands:
          o << " (forced commands only, no interactive login)";
          break;
      }
      o << "\n";
      break;
    }
    case RootLogin::locked:
      o << "  root      no password login (the admins use doas)\n";
      break;
    case RootLogin::empty_password:
      o << "  root      empty password: anyone at the console is root (Alpine's default; add an admin user who "
           "can log in, or a [root] password)\n";
      break;
  }
  if (!checks::anyone_logs_in(h))
    o << "  login     nobody: no account opens a shell, at the console or over SSH (see the warning)\n";
  if (h.ssh.enable)
    o << "  ssh       password authentication " << (h.ssh.password_authentication ? "yes" : "no") << ", root login "
      << shown(h.ssh.permit_root_login) << ", host keys " << shown(h.ssh.host_keys) << "\n";
  else
    o << "  ssh       disabled\n";
  o << "  ntp       " << (h.ntp.enable ? (h.ntp.servers.empty() ? "pool.ntp.org" : shown(h.ntp.servers)) : "disabled")
    << "\n";
  for (const auto& f : h.files) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", f.mode);
    o << "  file      " << shown(f.path) << " " << mode << " " << shown(f.owner) << ":" << shown(f.group)
      << (f.content_unset_env.empty() ? " (" + std::to_string(f.content.size()) + " bytes)"
                                      : ", content " + secret_shown(f.content_unset_env))
      << "\n";
  }
  for (const auto& s : h.scripts)
    o << "  script    " << shown(s.name) << " (" << (s.first_boot ? "first-boot" : "every-boot") << ")"
      << (s.content_unset_env.empty() ? "" : ", content " + secret_shown(s.content_unset_env)) << "\n";
  o << "  boot      label " << shown(h.boot.label) << ", size "
    << (h.boot.size_max ? "max"
        : h.boot.size   ? rpi::format_size(*h.boot.size)
                        : "auto");
  if (!h.boot.cmdline.empty()) o << ", cmdline +" << shown(h.boot.cmdline, " ");
  if (h.boot.serial_console) o << ", serial console";
  o << ", apkovl " << (h.boot.apkovl_url.empty() ? "on the card" : "from " + shown(h.boot.apkovl_url)) << "\n";
  o << "  install   " << shown(h.install.mode) << (h.install.mode == "sys" ? " on " + shown(h.install.disk) : "")
    << ", lbu media " << shown(h.lbu.media) << "\n";
  return o.str();
}

}  // namespace rpi::overlay
