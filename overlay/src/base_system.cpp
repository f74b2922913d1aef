#include "base_system.hpp"

namespace rpi::overlay::base {

// alpine-baselayout's passwd (facts: same ids in every release since 3.x).
const std::vector<Account>& accounts() {
  static const std::vector<Account> a = {
      {"root", 0, 0, "root", "/root", "/bin/sh"},
      {"bin", 1, 1, "bin", "/bin", "/sbin/nologin"},
      {"daemon", 2, 2, "daemon", "/sbin", "/sbin/nologin"},
      {"adm", 3, 4, "adm", "/var/adm", "/sbin/nologin"},
      {"lp", 4, 7, "lp", "/var/spool/lpd", "/sbin/nologin"},
      {"sync", 5, 0, "sync", "/sbin", "/bin/sync"},
      {"shutdown", 6, 0, "shutdown", "/sbin", "/sbin/shutdown"},
      {"halt", 7, 0, "halt", "/sbin", "/sbin/halt"},
      {"mail", 8, 12, "mail", "/var/mail", "/sbin/nologin"},
      {"news", 9, 13, "news", "/usr/lib/news", "/sbin/nologin"},
      {"uucp", 10, 14, "uucp", "/var/spool/uucppublic", "/sbin/nologin"},
      {"operator", 11, 0, "operator", "/root", "/sbin/nologin"},
      {"postmaster", 14, 12, "postmaster", "/var/mail", "/sbin/nologin"},
      {"cron", 16, 16, "cron", "/var/spool/cron", "/sbin/nologin"},
      {"ftp", 21, 21, "", "/var/lib/ftp", "/sbin/nologin"},
      {"sshd", 22, 22, "sshd", "/dev/null", "/sbin/nologin"},
      {"squid", 31, 31, "Squid", "/var/cache/squid", "/sbin/nologin"},
      {"xfs", 33, 33, "X Font Server", "/etc/X11/fs", "/sbin/nologin"},
      {"games", 35, 35, "games", "/usr/games", "/sbin/nologin"},
      {"cyrus", 85, 12, "", "/usr/cyrus", "/sbin/nologin"},
      {"vpopmail", 89, 89, "", "/var/vpopmail", "/sbin/nologin"},
      {"ntp", 123, 123, "NTP", "/var/empty", "/sbin/nologin"},
      {"smmsp", 209, 209, "smmsp", "/var/spool/mqueue", "/sbin/nologin"},
      {"guest", 405, 100, "guest", "/dev/null", "/sbin/nologin"},
      {"nobody", 65534, 65534, "nobody", "/", "/sbin/nologin"},
  };
  return a;
}

// alpine-baselayout's group.
const std::vector<Group>& groups() {
  static const std::vector<Group> g = {
      {"root", 0, "root"},
      {"bin", 1, "root,bin,daemon"},
      {"daemon", 2, "root,bin,daemon"},
      {"sys", 3, "root,bin,adm"},
      {"adm", 4, "root,adm,daemon"},
      {"tty", 5, ""},
      {"disk", 6, "root,adm"},
      {"lp", 7, "lp"},
      {"mem", 8, ""},
      {"kmem", 9, ""},
      {"wheel", 10, "root"},
      {"floppy", 11, "root"},
      {"mail", 12, "mail"},
      {"news", 13, "news"},
      {"uucp", 14, "uucp"},
      {"cron", 16, "cron"},
      {"console", 17, ""},
      {"audio", 18, ""},
      {"cdrom", 19, ""},
      {"dialout", 20, "root"},
      {"ftp", 21, ""},
      {"sshd", 22, ""},
      {"input", 23, ""},
      {"tape", 26, "root"},
      {"video", 27, "root"},
      {"netdev", 28, ""},
      {"squid", 31, "squid"},
      {"xfs", 33, "xfs"},
      {"kvm", 34, "kvm"},
      {"games", 35, ""},
      {"shadow", 42, ""},
      {"cdrw", 80, ""},
      {"www-data", 82, ""},
      {"usb", 85, ""},
      {"vpopmail", 89, ""},
      {"users", 100, "games"},
      {"ntp", 123, ""},
      {"nofiles", 200, ""},
      {"smmsp", 209, "smmsp"},
      {"locate", 245, ""},
      {"abuild", 300, ""},
      {"utmp", 406, ""},
      {"ping", 999, ""},
      {"nogroup", 65533, ""},
      {"nobody", 65534, ""},
  };
  return g;
}

const Account* find_account(std::string_view name) {
  for (const auto& a : accounts())
    if (a.name == name) return &a;
  return nullptr;
}

const Group* find_group(std::string_view name) {
  for (const auto& g : groups())
    if (g.name == name) return &g;
  return nullptr;
}

}  // namespace rpi::overlay::base
