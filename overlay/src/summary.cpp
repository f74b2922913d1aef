// The redacted summary `check` prints: every secret appears as "(secret)", or as
// "not set (env NAME)" when `check` went on without its variable.
#include <algorithm>
#include <sstream>

#include "checks.hpp"
#include "overlay/spec.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"
#include "rpi/url.hpp"

namespace rpi::overlay {

namespace {
std::string keys(std::size_t n) {
  return std::to_string(n) + (n == 1 ? " ssh key" : " ssh keys");
}
// A secret's presence: "(secret)", or "not set (env NAME)" without its variable.
std::string secret_shown(const std::string& unset_env) {
  return unset_env.empty() ? "(secret)" : "not set (env " + unset_env + ")";
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
  o << "card " << h.index << ": " << h.hostname << (h.domain.empty() ? "" : "." + h.domain);
  if (!h.mac.empty()) o << " (mac " << h.mac << ")";
  o << "\n";
  o << "  alpine    " << h.alpine.version << " " << h.alpine.arch << " from "
    << redact_urls(h.alpine.tarball.empty() ? h.alpine.mirror : h.alpine.tarball) << "\n";
  o << "  system    timezone " << h.timezone << (h.keymap.empty() ? "" : ", keymap " + h.keymap)
    << (h.motd.empty() ? "" : ", motd") << "\n";
  for (const auto& i : h.network.interfaces) {
    o << "  network   " << i.name << " " << (i.dhcp ? "dhcp" : i.address);
    if (!i.gateway.empty()) o << " via " << i.gateway;
    o << ", ipv6 " << i.ipv6 << "\n";
  }
  if (!h.network.dns.empty()) o << "  dns       " << join(h.network.dns) << "\n";
  if (!h.network.proxy.empty()) o << "  proxy     " << redact_urls(h.network.proxy) << "\n";
  // One line per network; the first also names the country and the interface, which are for all.
  for (std::size_t i = 0; i < h.wifi.networks.size(); ++i) {
    const WifiNetwork& n = h.wifi.networks[i];
    o << "  wifi      ssid \"" << n.ssid << "\" psk " << secret_shown(n.psk_unset_env);
    if (i == 0 && !h.wifi.country.empty()) o << " country " << h.wifi.country;
    if (n.hidden) o << " hidden";
    if (n.priority) o << " priority " << *n.priority;
    if (i == 0) o << " on " << h.wifi.interface;
    o << "\n";
  }
  o << "  packages  " << (h.apk.packages.empty() ? "(base only)" : join(h.apk.packages, " "))
    << (h.apk.cache ? " [apk cache on card]" : "") << "\n";
  for (const auto& u : h.users) {
    o << "  user      " << u.name << " uid " << u.uid;
    if (!u.groups.empty()) o << " groups " << join(u.groups, ",");
    o << (u.admin ? " admin" : "") << (u.password_given() ? " password " + secret_shown(u.password_unset_env) : "")
      << (!u.password_hash.empty() ? " password_hash (secret)" : "") << ", " << keys(u.ssh_authorized_keys.size());
    // Whether the account opens a shell: "admin" alone would suggest it does.
    if (auto why = checks::no_login_reason(h, u); !why.empty()) o << " (no interactive login: " << why << ")";
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
          o << " (refused: root login " << h.ssh.permit_root_login
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
      << h.ssh.permit_root_login << ", host keys " << h.ssh.host_keys << "\n";
  else
    o << "  ssh       disabled\n";
  o << "  ntp       " << (h.ntp.enable ? (h.ntp.servers.empty() ? "pool.ntp.org" : join(h.ntp.servers)) : "disabled")
    << "\n";
  for (const auto& f : h.files) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", f.mode);
    o << "  file      " << f.path << " " << mode << " " << f.owner << ":" << f.group
      << (f.content_unset_env.empty() ? " (" + std::to_string(f.content.size()) + " bytes)"
                                      : ", content " + secret_shown(f.content_unset_env))
      << "\n";
  }
  for (const auto& s : h.scripts)
    o << "  script    " << s.name << " (" << (s.first_boot ? "first-boot" : "every-boot") << ")"
      << (s.content_unset_env.empty() ? "" : ", content " + secret_shown(s.content_unset_env)) << "\n";
  o << "  boot      label " << h.boot.label << ", size "
    << (h.boot.size_max ? "max"
        : h.boot.size   ? rpi::format_size(*h.boot.size)
                        : "auto");
  if (!h.boot.cmdline.empty()) o << ", cmdline +" << join(h.boot.cmdline, " ");
  if (h.boot.serial_console) o << ", serial console";
  o << ", apkovl " << (h.boot.apkovl_url.empty() ? "on the card" : "from " + h.boot.apkovl_url) << "\n";
  o << "  install   " << h.install.mode << (h.install.mode == "sys" ? " on " + h.install.disk : "") << ", lbu media "
    << h.lbu.media << "\n";
  return o.str();
}

}  // namespace rpi::overlay
