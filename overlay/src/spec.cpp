// Spec loading: toml++ parse, then a typed conversion per card that validates
// every value and reports "FILE:LINE:COL: message".
//
// [[hosts]] overrides are not merged by copying TOML trees (toml++ drops source
// positions on copy); instead a View looks a key up in the host's table first
// and the base table second, so every error still points at the line it came from.
#include <fcntl.h>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "base_system.hpp"
#include "checks.hpp"
#include "overlay/apkovl.hpp"
#include "overlay/spec.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"

namespace rpi::overlay {

struct Spec::Impl {
  std::filesystem::path path;
  std::string name;  // as shown in messages
  std::filesystem::path base_dir;
  toml::table doc;
  std::string source;  // the spec's text: errors show its lines (SpecProblem::excerpt)
  std::vector<const toml::table*> hosts;
  AlpineSource alpine;
  bool hostname_templated = false;
  std::vector<Warning> warnings;
  std::vector<SpecInput> files_read;
  LoadOptions options;
};

namespace {
std::string more_line(std::size_t more, bool at_least) {
  if (more == 0 && !at_least) return {};
  return "… and " + std::string(at_least ? "at least " : "") + std::to_string(more) +
         (more == 1 && !at_least ? " more error" : " more errors");
}
std::string joined(const std::vector<std::string>& messages, std::size_t more, bool at_least) {
  std::string all;
  for (const auto& m : messages) all += (all.empty() ? "" : "\n") + m;
  if (auto line = more_line(more, at_least); !line.empty()) all += (all.empty() ? "" : "\n") + line;
  return all;
}

// Allowed keys per table (design.md §4); the order is the documented one.
const std::vector<std::string_view> kTopKeys = {"alpine", "system", "network", "wifi", "apk",   "services",
                                                "users",  "root",   "ssh",     "ntp",  "files", "scripts",
                                                "lbu",    "boot",   "install", "hosts"};
const std::vector<std::string_view> kAlpineKeys = {"version", "arch", "mirror", "tarball", "sha256"};
const std::vector<std::string_view> kSystemKeys = {"hostname", "domain", "timezone", "keymap", "motd"};
const std::vector<std::string_view> kNetworkKeys = {"interfaces", "dns", "search", "proxy"};
const std::vector<std::string_view> kInterfaceKeys = {"name", "dhcp", "address", "gateway", "ipv6"};
const std::vector<std::string_view> kWifiKeys = {"ssid",      "psk",      "country", "hidden",
                                                 "interface", "priority", "networks"};
const std::vector<std::string_view> kWifiNetworkKeys = {"ssid", "psk", "hidden", "priority"};
const std::vector<std::string_view> kApkKeys = {"packages", "repositories", "keys", "cache"};
const std::vector<std::string_view> kServicesKeys = {"sysinit", "boot", "default", "shutdown", "disable"};
const std::vector<std::string_view> kUserKeys = {
    "name", "uid", "groups", "shell", "password", "password_hash", "ssh_authorized_keys", "admin"};
const std::vector<std::string_view> kRootKeys = {"password", "password_hash", "ssh_authorized_keys"};
const std::vector<std::string_view> kSshKeys = {"enable", "password_authentication", "permit_root_login", "host_keys"};
const std::vector<std::string_view> kNtpKeys = {"enable", "servers"};
const std::vector<std::string_view> kFileKeys = {"path", "content", "source", "mode", "owner"};
const std::vector<std::string_view> kScriptKeys = {"name", "run", "content", "source"};
const std::vector<std::string_view> kLbuKeys = {"media", "include", "exclude", "backup_limit"};
const std::vector<std::string_view> kBootKeys = {"label", "size", "cmdline", "config", "serial_console", "apkovl_url"};
const std::vector<std::string_view> kInstallKeys = {"mode", "disk"};

// --- excerpts: a spec's line shown under its error, never one with a secret

// Line `line` (1-based) of text, without its line break.
std::string_view source_line(std::string_view text, std::size_t line) {
  std::size_t start = 0;
  for (std::size_t l = 1; l < line; ++l) {
    auto nl = text.find('\n', start);
    if (nl == std::string_view::npos) return {};
    start = nl + 1;
  }
  auto end = text.find('\n', start);
  return text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
}

// The byte offset of column `col` (1-based, in code points as toml++ counts) of `l`.
std::size_t byte_of_column(std::string_view l, std::size_t col) {
  std::size_t i = 0;
  for (std::size_t c = 1; c < col && i < l.size(); ++c) {
    ++i;
    while (i < l.size() && (static_cast<unsigned char>(l[i]) & 0xc0) == 0x80) ++i;
  }
  return i;
}

// Words that make a line of a spec unfit to show: the keys of secrets (psk,
// password, password_hash, a file's content) and what users name theirs; and
// escapes, which could spell one of those keys.
bool secret_looking(std::string_view line) {
  const std::string l = ascii_lower(line);
  for (std::string_view w : {"psk", "pas", "secret", "content", "token", "private", "\\u"})
    if (l.find(w) != std::string::npos) return true;
  // Short words, only as words ("pin = ", "wifi_key", "key2"; not "keymap",
  // "authorized_keys"): a letter next to one makes it part of another word.
  auto letter = [&](std::size_t i) { return std::isalpha(static_cast<unsigned char>(l[i])) != 0; };
  for (std::string_view w : {"pw", "pwd", "pin", "key", "hash", "auth", "cred", "creds", "otp"})
    for (auto at = l.find(w); at != std::string::npos; at = l.find(w, at + 1))
      if ((at == 0 || !letter(at - 1)) && (at + w.size() == l.size() || !letter(at + w.size()))) return true;
  return false;
}

// What a rough TOML lexer sees of each line (index = line number, 1-based):
// `multiline` when a multi-line string starts, ends or continues on it;
// `open` when the line starts inside an array or inline table left open on an
// earlier line (its key is out of sight).
struct LineShapes {
  std::vector<bool> multiline, open;
};

LineShapes line_shapes(std::string_view text) {
  enum class S { normal, basic, literal, ml_basic, ml_literal, comment };
  LineShapes out;
  out.multiline.assign(2, false);
  out.open.assign(2, false);
  S s = S::normal;
  std::size_t line = 1;
  int depth = 0;
  auto at = [&](std::size_t i, std::string_view w) { return text.substr(i, w.size()) == w; };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n') {
      const bool ml = s == S::ml_basic || s == S::ml_literal;
      if (ml) out.multiline[line] = true;
      if (s == S::basic || s == S::literal || s == S::comment) s = S::normal;
      ++line;
      out.multiline.push_back(ml);
      out.open.push_back(depth > 0);
      continue;
    }
    switch (s) {
      case S::normal:
        if (c == '#') {
          s = S::comment;
        } else if (at(i, "\"\"\"")) {
          s = S::ml_basic;
          out.multiline[line] = true;
          i += 2;
        } else if (at(i, "'''")) {
          s = S::ml_literal;
          out.multiline[line] = true;
          i += 2;
        } else if (c == '"') {
          s = S::basic;
        } else if (c == '\'') {
          s = S::literal;
        } else if (c == '[' || c == '{') {
          ++depth;
        } else if ((c == ']' || c == '}') && depth > 0) {
          --depth;
        }
        break;
      case S::basic:
        if (c == '\\' && i + 1 < text.size() && text[i + 1] != '\n')
          ++i;
        else if (c == '"')
          s = S::normal;
        break;
      case S::literal:
        if (c == '\'') s = S::normal;
        break;
      case S::ml_basic:
        if (c == '\\' && i + 1 < text.size() && text[i + 1] != '\n') {
          ++i;
        } else if (at(i, "\"\"\"")) {
          s = S::normal;
          out.multiline[line] = true;
          i += 2;
        }
        break;
      case S::ml_literal:
        if (at(i, "'''")) {
          s = S::normal;
          out.multiline[line] = true;
          i += 2;
        }
        break;
      case S::comment:
        break;
    }
  }
  return out;
}

// The first key of a line that is no key of its table (check_keys says so): the
// line is shown only up to it, as what follows may be a secret under a mistyped
// key ("pasword = ..."). `column` as toml++ counts (code points).
struct UnknownKey {
  std::size_t column = 0;
  std::string key;
};
using UnknownKeys = std::map<std::size_t, UnknownKey>;  // by line

// The lines of every value under a secret-looking key of `t`, at any depth
// (arrays and tables spanning lines included).
// A key that `unknown` holds (its line's first unknown key) is left to it: its
// line is cut before the value, and the value's other lines are hidden.
void secret_lines(const toml::node& n, bool secret, std::set<std::size_t>& out, const UnknownKeys& unknown) {
  if (secret) {
    const auto& r = n.source();
    for (std::size_t l = r.begin.line; l > 0 && l <= r.end.line && l - r.begin.line < 100000; ++l) out.insert(l);
  }
  if (const auto* t = n.as_table()) {
    for (auto&& [k, v] : *t) {
      const auto& b = k.source().begin;
      if (auto u = unknown.find(b.line); !secret && u != unknown.end() && u->second.column == b.column) continue;
      const bool sk = secret || secret_looking(k.str());
      if (sk && b.line > 0) out.insert(b.line);
      secret_lines(v, sk, out, unknown);
    }
  } else if (const auto* a = n.as_array()) {
    for (const auto& e : *a) secret_lines(e, secret, out, unknown);
  }
}

// The keys allowed in a table of `kind` (a top-level key, "hosts" for a
// [[hosts]] entry, "interfaces" / "networks" for their entries, "" the spec);
// the kind of the table (or array of tables) under key `k` of it, "" none.
const std::vector<std::string_view>& keys_of_kind(std::string_view kind) {
  static const std::vector<std::string_view> kHostKeys = [] {
    std::vector<std::string_view> out = {"hostname", "mac"};
    for (auto k : kTopKeys)
      if (k != "hosts") out.push_back(k);
    return out;
  }();
  static const std::map<std::string_view, const std::vector<std::string_view>*> kKinds = {
      {"", &kTopKeys},
      {"hosts", &kHostKeys},
      {"alpine", &kAlpineKeys},
      {"system", &kSystemKeys},
      {"network", &kNetworkKeys},
      {"interfaces", &kInterfaceKeys},
      {"wifi", &kWifiKeys},
      {"networks", &kWifiNetworkKeys},
      {"apk", &kApkKeys},
      {"services", &kServicesKeys},
      {"users", &kUserKeys},
      {"root", &kRootKeys},
      {"ssh", &kSshKeys},
      {"ntp", &kNtpKeys},
      {"files", &kFileKeys},
      {"scripts", &kScriptKeys},
      {"lbu", &kLbuKeys},
      {"boot", &kBootKeys},
      {"install", &kInstallKeys}};
  return *kKinds.at(kind);
}
std::string_view kind_under(std::string_view kind, std::string_view k) {
  if (kind.empty() || kind == "hosts") return k == "hostname" || k == "mac" ? std::string_view() : k;
  if (kind == "network" && k == "interfaces") return k;
  if (kind == "wifi" && k == "networks") return k;
  return {};
}

// Every key of the spec no table allows, as check_keys finds them (worked out
// up front, so that no message, whatever its order, shows what follows one);
// `hidden` gets the other lines of their values.
void unknown_keys(const toml::table& t, std::string_view kind, UnknownKeys& out, std::set<std::size_t>& hidden) {
  const auto& allowed = keys_of_kind(kind);
  for (auto&& [k, v] : t) {
    if (std::find(allowed.begin(), allowed.end(), k.str()) == allowed.end()) {
      const auto& b = k.source().begin;
      if (b.line > 0) {
        auto [it, added] = out.try_emplace(b.line, UnknownKey{b.column, std::string(k.str())});
        if (!added && b.column < it->second.column) it->second = UnknownKey{b.column, std::string(k.str())};
      }
      const auto& r = v.source();
      for (std::size_t l = std::max<std::size_t>(r.begin.line, 1); l <= r.end.line && l - r.begin.line < 100000; ++l)
        if (l != b.line) hidden.insert(l);
      continue;
    }
    const std::string_view sub = kind_under(kind, k.str());
    if (sub.empty()) continue;
    if (const auto* st = v.as_table()) {
      unknown_keys(*st, sub, out, hidden);
    } else if (const auto* a = v.as_array()) {
      for (const auto& e : *a)
        if (const auto* et = e.as_table()) unknown_keys(*et, sub, out, hidden);
    }
  }
}

// Line `l` cut after its unknown key `u` (" = …" for the value that follows),
// or as is for a table header ("[sytem]"); nullopt: not to be shown (a quoted
// or dotted key, or a secret-looking text before it).
std::optional<std::string> masked_line(std::string_view l, const UnknownKey& u) {
  const std::size_t at = byte_of_column(l, u.column);
  if (u.key.empty() || l.substr(at, u.key.size()) != u.key) return std::nullopt;
  for (char c : u.key)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return std::nullopt;
  const std::string_view before = l.substr(0, at);
  std::string_view rest = l.substr(at + u.key.size());
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
  if (secret_looking(before)) return std::nullopt;
  const auto first = before.find_first_not_of(" \t");
  if (first != std::string_view::npos && before[first] == '[' && rest.find('=') == std::string_view::npos &&
      !secret_looking(l))
    return std::string(l);  // a header: no value on it
  std::string out(l.substr(0, at + u.key.size()));
  if (rest.starts_with('=')) return out + " = \u2026";
  if (rest.empty()) return out;
  return std::nullopt;
}

// Line `line` of `text` fit to show under an error at it, else "" (see
// SpecProblem::excerpt). `doc`: the parsed spec (its secret values' lines are
// left out), or null for a syntax error: then every line inside an array or
// inline table opened on an earlier line is left out too.
std::string excerpt_of(std::string_view text, const LineShapes& shapes, const std::set<std::size_t>* secrets,
                       std::size_t line, const UnknownKeys* unknown = nullptr) {
  if (line == 0 || line >= shapes.multiline.size() || shapes.multiline[line]) return {};
  if (secrets ? secrets->count(line) > 0 : shapes.open[line]) return {};
  std::string_view l = source_line(text, line);
  if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
  // toml++ skips a byte-order mark and counts columns after it.
  if (line == 1 && l.starts_with("\xef\xbb\xbf")) l.remove_prefix(3);
  while (!l.empty() && (l.back() == ' ' || l.back() == '\t')) l.remove_suffix(1);
  std::optional<std::string> masked;
  if (unknown)
    if (auto u = unknown->find(line); u != unknown->end()) {
      masked = masked_line(l, u->second);
      if (!masked) return {};
    }
  if (l.empty() || l.size() > 160 || (!masked && secret_looking(l))) return {};
  // A comment says nothing of a place (it is where a problem of the whole spec
  // lands when the spec begins with one).
  if (l.substr(std::min(l.find_first_not_of(" \t"), l.size())).starts_with('#')) return {};
  std::string out = masked ? *masked : std::string(l);
  std::replace(out.begin(), out.end(), '\t', ' ');
  // Control characters, bidirectional overrides and bytes that are not UTF-8
  // would change what is shown (or the terminal): not shown at all.
  if (printable(out) != out) return {};
  return out;
}

// What excerpt_of needs of a spec, worked out once: its lines' shapes and,
// when it parsed, the lines of its secrets.
struct Excerpts {
  LineShapes shapes;
  std::optional<std::set<std::size_t>> secrets;  // none: the text did not parse
  UnknownKeys unknown;
  Excerpts(std::string_view text, const toml::table* doc) : shapes(line_shapes(text)) {
    if (!doc) return;
    unknown_keys(*doc, "", unknown, secrets.emplace());
    secret_lines(*doc, false, *secrets, unknown);
  }
  std::string at(std::string_view text, std::size_t line) const {
    return excerpt_of(text, shapes, secrets ? &*secrets : nullptr, line, &unknown);
  }
};

std::vector<std::string> messages_of(const std::vector<SpecProblem>& problems) {
  std::vector<std::string> out;
  out.reserve(problems.size());
  for (const auto& p : problems) out.push_back(p.message);
  return out;
}
}  // namespace

SpecErrors::SpecErrors(std::vector<SpecProblem> problems, std::size_t more, bool at_least)
    : Error(Errc::spec, joined(messages_of(problems), more, at_least)),
      problems_(std::make_shared<const std::vector<SpecProblem>>(std::move(problems))),
      messages_(std::make_shared<const std::vector<std::string>>(messages_of(*problems_))),
      more_(more),
      at_least_(at_least) {}

std::string SpecErrors::more_text() const {
  return more_line(more_, at_least_);
}

std::string Place::text() const {
  if (line == 0) return file;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

SpecProblem Place::problem(std::string message) const {
  return {std::move(message), line, column, line == 0 ? std::string() : excerpt, file};
}

Place place_in(std::string_view text, const std::string& name, std::size_t line, std::size_t column) {
  std::optional<toml::table> doc;
  try {
    doc = toml::parse(text, name);
  } catch (const toml::parse_error&) {
  }
  return {name, line, column, Excerpts(text, doc ? &*doc : nullptr).at(text, line)};
}

const std::filesystem::path& Spec::path() const {
  return impl_->path;
}
const AlpineSource& Spec::alpine() const {
  return impl_->alpine;
}
int Spec::host_count() const {
  return static_cast<int>(impl_->hosts.size());
}
bool Spec::hostname_templated() const {
  return impl_->hostname_templated;
}
const std::vector<Warning>& Spec::warnings() const {
  return impl_->warnings;
}
const std::vector<SpecInput>& Spec::files_read() const {
  return impl_->files_read;
}

namespace {
// A [[users]] account someone can get a shell on (checks::no_login_reason).
bool logs_in(const HostConfig& h, const User& u) {
  return checks::no_login_reason(h, u).empty();
}
// An admin who can log in and become root with doas.
bool admin_logs_in(const HostConfig& h) {
  return std::any_of(h.users.begin(), h.users.end(), [&](const User& u) { return u.admin && logs_in(h, u); });
}
// An admin meant to log in: as admin_logs_in, but rpi-provision's example key
// counts as the key it stands for. The card does not change when the user puts
// their own key in its place, and a card built from an unchanged example keeps
// root locked (the example key is warned about) instead of opening root's empty
// password at the console.
bool admin_meant_to_log_in(const HostConfig& h) {
  if (admin_logs_in(h)) return true;
  return std::any_of(h.users.begin(), h.users.end(), [&](const User& u) {
    if (!u.admin) return false;
    // The user's own key in place of an example key that would open a shell.
    const bool stands_for_a_shell = std::any_of(
        u.ssh_authorized_keys.begin(), u.ssh_authorized_keys.end(),
        [](const std::string& k) { return checks::ssh_key_is_example(k) && !checks::ssh_key_forces_command(k); });
    if (!stands_for_a_shell) return false;
    User own = u;
    own.ssh_authorized_keys = {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRoZSB1c2VyJ3Mgb3duIGtleSBzdGFuZHMgaGVyZQ"};
    return logs_in(h, own);
  });
}
}  // namespace

RootLogin root_login(const HostConfig& h) {
  if (h.root.password_given() || !h.root.password_hash.empty() || !h.root.ssh_authorized_keys.empty())
    return RootLogin::as_configured;
  return admin_meant_to_log_in(h) ? RootLogin::locked : RootLogin::empty_password;
}

RootKeys root_keys(const HostConfig& h) {
  const auto& keys = h.root.ssh_authorized_keys;
  if (keys.empty()) return RootKeys::none;
  if (!h.ssh.enable) return RootKeys::sshd_off;
  const auto& p = h.ssh.permit_root_login;
  if (p == "no") return RootKeys::refused;
  if (p == "forced-commands-only")
    return std::any_of(keys.begin(), keys.end(), [](const std::string& k) { return checks::ssh_key_forces_command(k); })
               ? RootKeys::forced_commands
               : RootKeys::refused;
  return RootKeys::usable;
}

std::string AlpineSource::branch() const {
  if (version == "edge" || version == "latest-stable") return version;
  auto first = version.find('.');
  auto second = version.find('.', first + 1);
  return "v" + version.substr(0, second);
}

namespace {

using namespace std::string_literals;
namespace fs = std::filesystem;

const char* type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a number";
    case toml::node_type::boolean:
      return "a boolean";
    default:
      return "a date/time";
  }
}

// A table as seen by one card: the host's table (if any) layered over the base.
struct View {
  std::vector<const toml::table*> layers;  // most specific first
  std::string name;                        // "[system]"
  bool empty() const { return layers.empty(); }
  const toml::node* get(std::string_view key) const {
    for (auto* t : layers)
      if (auto* n = t->get(key)) return n;
    return nullptr;
  }
  // The most specific table: where an error about the whole entry points.
  const toml::table& anchor() const {
    if (layers.empty() || !layers.front()) throw Error(Errc::internal, "spec view " + name + " has no table");
    return *layers.front();
  }
  // The key's value when it is set, else the entry.
  const toml::node& at(std::string_view key) const {
    const toml::node* n = get(key);
    return n ? *n : anchor();
  }
};

// A file the spec names, or the spec itself: a regular file of at most 16 MiB
// (not /dev/zero, not a FIFO, which would block), or why not.
struct FileRead {
  enum class Failure { none, missing, denied, not_regular, too_large, other };
  Failure failure = Failure::none;
  int err = 0;  // errno, for Failure::other
  std::string bytes;
};
FileRead read_regular_file(const fs::path& p) {
  constexpr std::size_t kMax = 16u << 20;
  FileRead r;
  auto failed = [&r](int e) {
    r.err = e;
    r.failure = e == ENOENT || e == ENOTDIR ? FileRead::Failure::missing
                : e == EACCES || e == EPERM ? FileRead::Failure::denied
                                            : FileRead::Failure::other;
    r.bytes.clear();
    return r;
  };
  // O_NONBLOCK: a FIFO opens at once (and is refused below) instead of waiting for a writer.
  Fd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd) return failed(errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return failed(errno);
  if (!S_ISREG(st.st_mode)) {
    r.failure = FileRead::Failure::not_regular;
    return r;
  }
  if (static_cast<std::uintmax_t>(st.st_size) > kMax) {
    r.failure = FileRead::Failure::too_large;
    return r;
  }
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failed(errno);
    if (n == 0) break;
    r.bytes.append(buf, static_cast<std::size_t>(n));
    if (r.bytes.size() > kMax) {
      r.bytes.clear();
      r.failure = FileRead::Failure::too_large;
      return r;
    }
  }
  return r;
}
// Why it could not be opened or read, after "cannot read X: ".
std::string read_failure_reason(const FileRead& r) {
  switch (r.failure) {
    case FileRead::Failure::missing:
      return "no such file";
    case FileRead::Failure::denied:
      return "permission denied";
    default: {
      std::string m = std::error_code(r.err, std::generic_category()).message();
      if (!m.empty()) m[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(m[0])));
      return m;
    }
  }
}

// A UTF-8 byte-order mark, as Notepad puts at the start of a file it saves as UTF-8.
bool starts_with_bom(std::string_view s) {
  return s.substr(0, 3) == "\xEF\xBB\xBF";
}
const std::string kBom = "starts with a byte-order mark (EF BB BF, as Notepad saves UTF-8)";

// A secret's value and where it came from: messages about the value say where
// it came from (the spec, a variable, a file), never what it is.
struct Secret {
  std::string value;
  std::string what;          // "[wifi].psk", "[wifi].psk (env WIFI_PSK)", "[root].password (file root.pw)"
  const toml::node* node{};  // where errors point: the literal, or the variable's or file's name
  bool from_file = false;
  // MissingEnv::warn: the { env = } variable that was not set (warned); value is then empty.
  std::string unset_env;
};
// "[wifi].psk (env WIFI_PSK)": every message about a referenced secret's value names it so.
std::string secret_origin(const std::string& label, std::string_view kind, const std::string& ref) {
  return label + " (" + std::string(kind) + " " + ref + ")";
}

// Long quoted values in messages are shortened: a 10 MB hostname must give a
// one-line error, not 10 MB of stderr.
std::string shorten_quoted(const std::string& msg) {
  constexpr std::size_t kKeep = 40, kMax = 80;
  std::string out;
  std::size_t pos = 0;
  for (;;) {
    std::size_t open = msg.find('"', pos);
    std::size_t close = open == std::string::npos ? std::string::npos : msg.find('"', open + 1);
    if (close == std::string::npos) {
      out.append(msg, pos, std::string::npos);
      break;
    }
    out.append(msg, pos, open + 1 - pos);
    std::size_t len = close - open - 1;
    if (len > kMax)
      out += msg.substr(open + 1, kKeep) + "…(" + std::to_string(len) + " characters)";
    else
      out.append(msg, open + 1, len);
    out.push_back('"');
    pos = close + 1;
  }
  return out.size() > 2000 ? out.substr(0, 2000) + "…" : out;
}

// A spec error at one place of the spec: what() is "NAME:LINE:COL: message", as
// the user reads it, and the place is data too (Converter::record takes it from
// here, never from the text). Caught by Converter::guard; none leaves the loader.
class PlacedError : public Error {
 public:
  PlacedError(const std::string& text, std::size_t line, std::size_t column)
      : Error(Errc::spec, text), line_(line), column_(column) {}
  std::size_t line() const noexcept { return line_; }
  std::size_t column() const noexcept { return column_; }

 private:
  std::size_t line_, column_;
};

class Converter {
 public:
  Converter(const Spec::Impl& impl, std::vector<Warning>& warnings) : s_(impl), warnings_(warnings) {}
  // Where to list every file an entry reads (load_spec's Spec::files_read); none when unset.
  void record_files_read(std::vector<SpecInput>* into) { files_read_ = into; }

  std::string where(const toml::source_region& r) const {
    return s_.name + ":" + std::to_string(r.begin.line) + ":" + std::to_string(r.begin.column);
  }
  // Where r begins, as data, with the spec's line there when it is fit to show.
  Place place(const toml::source_region& r) const {
    return {s_.name, r.begin.line, r.begin.column, excerpt(r.begin.line)};
  }
  // The spec's line `line` fit to show under a message at it (SpecProblem::excerpt), else "".
  std::string excerpt(std::size_t line) const {
    if (!excerpts_) excerpts_.emplace(s_.source, &s_.doc);
    return excerpts_->at(s_.source, line);
  }
  std::string located(const toml::source_region& r, const std::string& msg) const {
    return where(r) + ": " + shorten_quoted(msg);
  }
  [[noreturn]] void fail(const toml::source_region& r, const std::string& msg) const {
    throw PlacedError(located(r, msg), r.begin.line, r.begin.column);
  }
  [[noreturn]] void fail(const toml::node& n, const std::string& msg) const { fail(n.source(), msg); }

  // Every problem of a spec is collected, not only the first: a section (a
  // table, an entry of an array of tables) stops at its first problem, which
  // guard() records, and the next one is checked. One place is said once: a
  // base table is seen by every [[hosts]] entry, and a second problem at the
  // same place is one the first caused.
  // `text` as the user reads it, at `line`:`column` (0:0: no place).
  void record(const std::string& text, std::size_t line, std::size_t column);
  void record(const PlacedError& e) { record(e.what(), e.line(), e.column()); }
  void record(const toml::source_region& r, const std::string& msg) {
    record(located(r, msg), r.begin.line, r.begin.column);
  }
  // Runs f, recording the Errc::spec error it throws; false when it threw one.
  // Other errors (io, internal) go on up, as do EnoughErrors.
  template <class F>
  bool guard(F&& f) {
    try {
      f();
      return true;
    } catch (const PlacedError& e) {
      record(e);
      return false;
    } catch (const Error& e) {
      if (e.code() != Errc::spec) throw;
      record(e.what(), 0, 0);  // none today: every spec error of the checks is a PlacedError
      return false;
    }
  }
  // The last convert() found a problem (possibly one an earlier card found too).
  bool failed() const { return failed_; }
  // The last convert() found the card's hostname, and it is valid: it can be
  // compared with other cards' even when something else of the card is wrong.
  bool hostname_ok() const { return hostname_ok_; }
  // Throws what was found as SpecErrors. Nothing when none.
  void throw_found();
  void warn(const toml::source_region& r, const std::string& msg) {
    Warning w{where(r), msg, s_.name, r.begin.line, r.begin.column, {}};
    for (const auto& x : warnings_)
      if (x.location == w.location && x.message == w.message) return;
    // A warning about the whole spec is at its start, but no line of it is the place.
    const toml::source_region& doc = s_.doc.source();
    if (r.begin != doc.begin || r.end != doc.end) w.excerpt = excerpt(w.line);
    warnings_.push_back(std::move(w));
  }

  // Every unknown key of t is recorded, the last one thrown: the table is not
  // checked further (a value under a mistyped key would be missing). `meant`
  // gets the keys they probably stand for.
  void check_keys(const toml::table& t, const std::vector<std::string_view>& allowed, const std::string& name,
                  std::set<std::string>* meant = nullptr) {
    std::optional<std::pair<toml::source_region, std::string>> last;
    for (auto&& [k, v] : t) {
      if (std::find(allowed.begin(), allowed.end(), k.str()) != allowed.end()) continue;
      std::string msg = "unknown key '" + std::string(k.str()) + "' in " + name;
      std::string best = synonym(name, k.str(), checks::closest(k.str(), allowed));
      // "network" with a table or list under it in [wifi] is meant for more networks, not the ssid.
      if (name == "[wifi]" && ascii_lower(k.str()) == "network" && (v.is_table() || v.is_array())) best = "networks";
      if (!best.empty()) msg += " (did you mean '" + best + "'?)";
      if (meant && !best.empty()) meant->insert(best);
      if (last) record(last->first, last->second);
      last.emplace(k.source(), std::move(msg));
    }
    if (last) fail(last->first, last->second);
  }
  // The key a user means by another word they often type for it ("passphrase"
  // for [wifi].psk), any case; else `fallback`.
  static std::string synonym(const std::string& table, std::string_view key, const std::string& fallback) {
    struct Synonym {
      std::string_view table, typed, meant;
    };
    static constexpr Synonym kSynonyms[] = {
        {"[wifi]", "passphrase", "psk"},
        {"[wifi]", "password", "psk"},
        {"[wifi]", "key", "psk"},
        {"[wifi]", "pass", "psk"},
        {"[wifi]", "wpa_passphrase", "psk"},
        {"[wifi]", "network", "ssid"},
        {"[[wifi.networks]]", "name", "ssid"},  // and [wifi]'s above, for the same keys
        {"[system]", "tz", "timezone"},
        {"[system]", "time_zone", "timezone"},
        {"[system]", "host", "hostname"},
        {"[system]", "host_name", "hostname"},
        {"[[users]]", "username", "name"},
        {"[[users]]", "user", "name"},
        {"[[users]]", "authorized_keys", "ssh_authorized_keys"},
        {"[[users]]", "sudo", "admin"},
        {"[root]", "authorized_keys", "ssh_authorized_keys"},
    };
    const std::string lower = ascii_lower(key);
    // A [[wifi.networks]] entry has [wifi]'s network keys: their synonyms too.
    const bool network_entry = table == "[[wifi.networks]]";
    for (const auto& s : kSynonyms)
      if ((s.table == table || (network_entry && s.table == "[wifi]")) && s.typed == lower) return std::string(s.meant);
    return fallback;
  }
  // Each layer's unknown keys (the host's and the base's), then the first error thrown.
  void check_keys(const View& v, const std::vector<std::string_view>& allowed) {
    std::optional<PlacedError> first;
    for (auto* t : v.layers) {
      try {
        check_keys(*t, allowed, v.name);
      } catch (const PlacedError& e) {
        if (first)
          record(e);
        else
          first.emplace(e);
      }
    }
    if (first) throw PlacedError(*first);
  }

  View sub(const View& v, std::string_view key, const std::string& name) const {
    View out{{}, name};
    for (auto* t : v.layers) {
      auto* n = t->get(key);
      if (!n) continue;
      if (!n->is_table()) fail(*n, name + " must be a table, not " + type_name(n->type()));
      out.layers.push_back(n->as_table());
    }
    return out;
  }

  // A string value with {n} expanded.
  std::optional<std::string> str(const View& v, std::string_view key) {
    auto* n = v.get(key);
    if (!n) return std::nullopt;
    if (!n->is_string()) fail(*n, label(v, key) + " must be a string, not " + type_name(n->type()));
    return checks::expand_template(n->as_string()->get(), n_);
  }
  std::string str(const View& v, std::string_view key, const std::string& def) {
    auto x = str(v, key);
    return x ? *x : def;
  }
  bool boolean(const View& v, std::string_view key, bool def) {
    auto* n = v.get(key);
    if (!n) return def;
    if (!n->is_boolean()) fail(*n, label(v, key) + " must be true or false, not " + type_name(n->type()));
    return n->as_boolean()->get();
  }
  std::optional<std::int64_t> integer(const View& v, std::string_view key) {
    auto* n = v.get(key);
    if (!n) return std::nullopt;
    if (!n->is_integer()) fail(*n, label(v, key) + " must be an integer, not " + type_name(n->type()));
    return n->as_integer()->get();
  }
  std::vector<std::string> str_array(const View& v, std::string_view key) {
    std::vector<std::string> out;
    auto* n = v.get(key);
    if (!n) return out;
    if (!n->is_array()) fail(*n, label(v, key) + " must be an array of strings, not " + type_name(n->type()));
    for (auto& e : *n->as_array()) {
      if (!e.is_string()) fail(e, label(v, key) + " must contain only strings, not " + type_name(e.type()));
      out.push_back(checks::expand_template(e.as_string()->get(), n_));
    }
    return out;
  }
  // Each element with its node, for located errors.
  std::vector<std::pair<std::string, const toml::node*>> str_array_nodes(const View& v, std::string_view key) {
    std::vector<std::pair<std::string, const toml::node*>> out;
    auto strings = str_array(v, key);
    if (strings.empty()) return out;
    auto* arr = v.get(key)->as_array();
    for (std::size_t i = 0; i < strings.size(); ++i) out.emplace_back(strings[i], arr->get(i));
    return out;
  }
  std::vector<View> table_array(const View& v, std::string_view key, const std::string& name) {
    std::vector<View> out;
    auto* n = v.get(key);
    if (!n) return out;
    if (!n->is_array()) fail(*n, name + " must be an array of tables, not " + type_name(n->type()));
    for (auto& e : *n->as_array())
      if (!e.is_table()) fail(e, name + " entries must be tables, not " + type_name(e.type()));
    for (auto& e : *n->as_array()) out.push_back(View{{e.as_table()}, name});
    return out;
  }

  // A secret: literal string (warned), { env = "NAME" } or { file = "path" }.
  // With `password` set (passwords, the Wi-Fi psk): one trailing "\n" or "\r\n" is
  // dropped from a file (env and literal values are taken as they are), and the
  // value must be one non-empty line.
  std::optional<Secret> secret(const View& v, std::string_view key, bool password, bool warn_literal) {
    auto* n = v.get(key);
    if (!n) return std::nullopt;
    Secret out;
    if (n->is_string()) {
      if (warn_literal)
        warn(n->source(), label(v, key) + " is written in the spec; prefer { env = \"NAME\" } or { file = \"path\" }");
      out.value = n->as_string()->get();
      out.what = label(v, key);
      out.node = n;
      if (password) check_password_secret(out);
      return out;
    }
    if (!n->is_table())
      fail(*n,
           label(v, key) + " must be a string, { env = \"NAME\" } or { file = \"path\" }, not " + type_name(n->type()));
    const auto& t = *n->as_table();
    if (t.size() != 1 || !(t.contains("env") || t.contains("file")))
      fail(*n, label(v, key) + " must be { env = \"NAME\" } or { file = \"path\" } (exactly one key)");
    auto [k, val] = *t.begin();
    if (!val.is_string()) fail(val, label(v, key) + "." + std::string(k.str()) + " must be a string");
    std::string ref(val.as_string()->get());
    out.node = &val;
    if (k.str() == "env") {
      // Not echoed unless it looks like a name: a secret typed here by mistake must not be printed.
      const bool name = !ref.empty() && std::isdigit(static_cast<unsigned char>(ref[0])) == 0 &&
                        std::all_of(ref.begin(), ref.end(), [](char c) {
                          return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
                        });
      if (!name)
        fail(val, label(v, key) + ".env must name an environment variable (letters, digits and _, e.g. " +
                      "WIFI_PSK), not hold the value itself");
      const char* e = std::getenv(ref.c_str());
      // `check` goes on without the secrets (MissingEnv::warn); a password or psk
      // can never be empty, so an empty one is a secret CI does not have.
      if (s_.options.missing_env == MissingEnv::warn && (!e || (password && *e == '\0'))) {
        warn(n->source(), label(v, key) + ": environment variable " + ref +
                              (e ? " is empty; check went on without it, but building needs its value"
                                 : " is not set; check went on without it, but building needs it"));
        out.what = secret_origin(label(v, key), "env", ref);
        out.unset_env = ref;
        return out;
      }
      if (!e)
        fail(val, "environment variable " + ref + " (for " + label(v, key) + ") is not set; export it or use " +
                      "{ file = \"path\" }");
      out.value = e;
      out.what = secret_origin(label(v, key), "env", ref);
    } else {
      // The path is not echoed until the file is read: a passphrase typed here by mistake must not be printed.
      out.value = read_bounded(val, resolve_path(ref), "for " + label(v, key), label(v, key), true);
      out.what = secret_origin(label(v, key), "file", ref);
      out.from_file = true;
      if (password && !out.value.empty() && out.value.back() == '\n') {
        out.value.pop_back();
        if (!out.value.empty() && out.value.back() == '\r') out.value.pop_back();
      }
    }
    if (password) check_password_secret(out);
    return out;
  }
  // Never shows the value: only where it came from.
  void check_password_secret(const Secret& s) const {
    if (s.from_file && starts_with_bom(s.value)) fail(*s.node, s.what + " " + kBom + "; save it as UTF-8 without BOM");
    if (s.value.empty()) fail(*s.node, s.what + " is empty");
    // crypt(3) stops at a NUL: "\0abc" would hash as the empty password, "ab\0c" as "ab".
    if (s.value.find('\0') != std::string::npos)
      fail(*s.node, s.what + " contains a NUL byte, which would cut the password short; remove it");
    if (s.value.find_first_of("\r\n") != std::string::npos)
      fail(*s.node, s.what + " has more than one line (only one trailing newline is dropped from a file)");
  }

  fs::path resolve_path(const std::string& p) const {
    fs::path path(p);
    if (path.is_absolute() || s_.base_dir.empty() || s_.base_dir == ".") return path;
    return s_.base_dir / path;
  }
  // `entry` names the spec entry that reads the file ("[[files]].source for /etc/x").
  std::string read_source(const toml::node& n, const std::string& what, const std::string& entry) const {
    return read_bounded(n, resolve_path(std::string(n.as_string()->get())), what, entry, false);
  }
  // Files named by the spec: regular files of at most 16 MiB (not /dev/zero, not a FIFO).
  // With `secret_path`, messages do not show the path ({ file = } of a secret: a
  // passphrase typed there by mistake), only the entry it was given for.
  std::string read_bounded(const toml::node& n, const fs::path& p, const std::string& what, const std::string& entry,
                           bool secret_path) const {
    if (files_read_) {
      SpecInput in{entry, p};
      if (std::none_of(files_read_->begin(), files_read_->end(),
                       [&](const SpecInput& x) { return x.entry == in.entry && x.path == in.path; }))
        files_read_->push_back(std::move(in));
    }
    FileRead r = read_regular_file(p);
    using F = FileRead::Failure;
    if (r.failure == F::none) return std::move(r.bytes);
    const std::string file = secret_path ? "the file given for " + entry : p.string() + " (" + what + ")";
    if (r.failure == F::not_regular) fail(n, file + " is not a regular file");
    if (r.failure == F::too_large) fail(n, file + " is larger than 16 MiB");
    std::string msg = "cannot read " + file + ": " + read_failure_reason(r);
    if (secret_path && r.failure == F::missing && !fs::path(n.as_string()->get()).is_absolute())
      msg += " (path relative to " + fs::path(s_.name).filename().string() + "'s folder)";
    fail(n, msg);
  }

  static std::string label(const View& v, std::string_view key) { return v.name + "." + std::string(key); }

  HostConfig convert(const toml::table* host, int n, int host_pos);

 private:
  void convert_alpine(const View& root, AlpineSource& a);
  void convert_system(const View& root, const toml::table* host, int host_pos, HostConfig& h);
  void convert_network(const View& root, HostConfig& h);
  void convert_wifi(const View& root, HostConfig& h);
  void convert_wifi_network(const View& v, std::vector<std::pair<std::string, const toml::node*>>& seen, HostConfig& h);
  void convert_apk(const View& root, HostConfig& h);
  void convert_services(const View& root, HostConfig& h);
  void convert_users(const View& root, HostConfig& h);
  void convert_root(const View& root, HostConfig& h);
  void convert_ssh(const View& root, HostConfig& h);
  void convert_ntp(const View& root, HostConfig& h);
  void convert_files(const View& root, HostConfig& h);
  void convert_scripts(const View& root, HostConfig& h);
  void convert_lbu(const View& root, HostConfig& h);
  void convert_boot(const View& root, HostConfig& h);
  void convert_install(const View& root, HostConfig& h);
  void check_keys_list(const View& v, std::string_view key, const toml::node*& where_node,
                       std::vector<std::string>& out);

  void check_files_against_generated(const HostConfig& h);
  void check_root_access(const View& root, const HostConfig& h);
  void check_locked_keys(const View& root, const HostConfig& h);
  void check_someone_logs_in(const View& root, const HostConfig& h);
  void check_admins_log_in(const View& root, const HostConfig& h);

  const Spec::Impl& s_;
  mutable std::optional<Excerpts> excerpts_;  // of s_, worked out at the first excerpt
  std::vector<Warning>& warnings_;
  int n_ = 1;
  std::vector<std::pair<std::string, const toml::node*>> file_nodes_;  // [[files]] paths of this card
  std::vector<SpecInput>* files_read_ = nullptr;

  // A problem found: where (0:0 when it has no place) and the message.
  struct Found {
    std::size_t line = 0, column = 0;
    std::string text;
  };
  std::vector<Found> found_;      // in the order found, over every card converted
  std::set<std::string> places_;  // "LINE:COL" of each (the message when it has none)
  bool stopped_ = false;          // kMaxFound reached: the rest of the spec was not checked
  bool failed_ = false;           // this convert() found a problem
  // This card: the tables not checked (a mistyped key probably meant them, or
  // they are not tables), and whether its [[users]] may be missing an entry.
  std::set<std::string> skip_;
  bool users_unsure_ = false;
  bool hostname_ok_ = false;  // see hostname_ok()
};

// The search stops after this many problems: a spec that is mostly mistakes
// (or a generated one) is not checked to its end, and memory stays bounded.
constexpr std::size_t kMaxFound = 1000;
// Thrown when kMaxFound problems were found; no guard catches it.
struct EnoughErrors {};

void Converter::record(const std::string& text, std::size_t line, std::size_t column) {
  failed_ = true;
  Found f;
  f.line = line;
  f.column = column;
  f.text = text;
  const std::string place = line == 0 ? text : std::to_string(line) + ":" + std::to_string(column);
  if (!places_.insert(place).second) return;
  found_.push_back(std::move(f));
  if (found_.size() >= kMaxFound) {
    stopped_ = true;
    throw EnoughErrors{};
  }
}

void Converter::throw_found() {
  if (found_.empty()) return;
  // Those without a place (none today) after the others.
  std::stable_sort(found_.begin(), found_.end(), [](const Found& a, const Found& b) {
    auto key = [](const Found& f) {
      return f.line == 0 ? std::pair(std::numeric_limits<std::size_t>::max(), std::size_t{0})
                         : std::pair(f.line, f.column);
    };
    return key(a) < key(b);
  });
  std::vector<SpecProblem> shown;
  for (std::size_t i = 0; i < found_.size() && i < SpecErrors::kShown; ++i) {
    const Found& f = found_[i];
    shown.push_back({f.text, f.line, f.column, excerpt(f.line), s_.name});
  }
  const std::size_t more = found_.size() - shown.size();
  throw SpecErrors(std::move(shown), more, stopped_);
}

// [[files]] against what the generator writes: replacing a generated file is
// allowed (documented; warned), but a file where the generator needs a folder,
// or inside a generated file, would make busybox tar abort at boot.
void Converter::check_files_against_generated(const HostConfig& h) {
  if (file_nodes_.empty()) return;
  HostConfig without_files = h;
  without_files.files.clear();
  auto generated = generated_paths(without_files);
  // Links of Alpine's base layout: the apkovl is unpacked before the packages
  // are installed, so a file below one of them would turn the link into a
  // folder that the system no longer reads (or one that /run's tmpfs hides).
  static const std::pair<const char*, const char*> kBaseLinks[] = {
      {"/var/run/", "/run, a tmpfs mounted at boot: nothing of the apkovl stays there"},
      {"/var/lock/", "/run/lock, on a tmpfs mounted at boot: nothing of the apkovl stays there"},
      {"/var/spool/cron/crontabs/", "/etc/crontabs: write the file there"},
      {"/var/spool/mail/", "/var/mail: write the file there"},
  };
  for (const auto& [path, node] : file_nodes_) {
    for (const auto& [link, to] : kBaseLinks)
      if (path.rfind(link, 0) == 0 || path + "/" == link)
        fail(*node, "[[files]] path " + path + " is below " + std::string(link, std::strlen(link) - 1) +
                        ", which Alpine makes a link to " + to);
    for (const char* run : {"/run/", "/tmp/"})
      if (path.rfind(run, 0) == 0)
        fail(*node, "[[files]] path " + path + " is below " + std::string(run, std::strlen(run) - 1) +
                        ", which is emptied at boot (a tmpfs or cleaned by bootmisc); use a path that stays, "
                        "and a [[scripts]] every-boot entry to copy it there if needed");
  }
  for (const auto& [path, node] : file_nodes_) {
    std::string p = path.substr(1);
    for (const auto& [g, is_dir] : generated) {
      if (g.rfind(p + "/", 0) == 0)
        fail(*node,
             "[[files]] path " + path + " is a folder rpi-provision writes (it holds /" + g + "); it cannot be a file");
    }
    for (const auto& [g, is_dir] : generated) {
      if (p == g && is_dir)
        fail(*node, "[[files]] path " + path + " is a folder rpi-provision writes; it cannot be a file");
      if (p == g)
        warn(node->source(), "[[files]] path " + path + " replaces the file rpi-provision generates there");
      else if (!is_dir && p.rfind(g + "/", 0) == 0)
        fail(*node, "[[files]] path " + path + " is inside /" + g + ", which rpi-provision writes as a file");
    }
  }
}

void Converter::convert_alpine(const View& root, AlpineSource& a) {
  View v = sub(root, "alpine", "[alpine]");
  check_keys(v, kAlpineKeys);
  if (const toml::node* n = v.get("version"))
    a.location = place(n->source());
  else if (!v.empty())
    a.location = place(v.anchor().source());
  if (auto x = str(v, "version")) {
    const auto& s = *x;
    bool ok = s == "latest-stable" || s == "edge";
    if (!ok) {
      int dots = 0;
      ok = !s.empty() && std::isdigit(static_cast<unsigned char>(s[0]));
      for (std::size_t i = 0; ok && i < s.size(); ++i) {
        if (s[i] == '.') {
          ok = i + 1 < s.size() && s[i - 1] != '.';
          ++dots;
        } else {
          ok = std::isdigit(static_cast<unsigned char>(s[i])) != 0;
        }
      }
      ok = ok && (dots == 1 || dots == 2);
    }
    if (!ok) fail(*v.get("version"), "[alpine].version must be \"3.22\", \"3.22.1\", \"latest-stable\" or \"edge\"");
    a.version = s;
  }
  if (auto x = str(v, "arch")) {
    if (*x != "aarch64" && *x != "armv7" && *x != "armhf") {
      std::string msg = "[alpine].arch must be \"aarch64\", \"armv7\" or \"armhf\"";
      if (*x == "arm64") msg += " (did you mean 'aarch64'?)";
      fail(*v.get("arch"), msg);
    }
    a.arch = *x;
  }
  if (auto x = str(v, "mirror")) {
    if (!x->empty() && (*x)[0] != '/') {
      if (auto why = checks::url(*x, {"https://", "http://", "file://"}); !why.empty())
        fail(*v.get("mirror"), "[alpine].mirror " + why + " (or is an absolute directory)");
    }
    while (x->size() > 1 && x->back() == '/') x->pop_back();
    a.mirror = *x;
  }
  if (auto x = str(v, "tarball")) {
    bool is_url = x->rfind("http://", 0) == 0 || x->rfind("https://", 0) == 0 || x->rfind("file://", 0) == 0;
    a.tarball = is_url ? *x : resolve_path(*x).string();
  }
  if (auto x = str(v, "sha256")) {
    const std::string h = ascii_lower(*x);
    if (h.size() != 64 || h.find_first_not_of("0123456789abcdef") != std::string::npos)
      fail(*v.get("sha256"), "[alpine].sha256 must be 64 hexadecimal digits");
    a.sha256 = h;
  }
  if (!a.tarball.empty() && a.sha256.empty() && a.tarball.rfind("http", 0) == 0)
    fail(*v.get("tarball"), "[alpine].tarball is a URL, so [alpine].sha256 is required to pin it");
}

void Converter::convert_system(const View& root, const toml::table* host, int host_pos, HostConfig& h) {
  View v = sub(root, "system", "[system]");
  check_keys(v, kSystemKeys);
  const toml::node* name_node = nullptr;
  if (host && host->get("hostname")) {
    name_node = host->get("hostname");
    if (!name_node->is_string()) fail(*name_node, "[[hosts]].hostname must be a string");
    h.hostname = checks::expand_template(name_node->as_string()->get(), n_);
  } else if (auto x = str(v, "hostname")) {
    name_node = v.get("hostname");
    h.hostname = *x;
    const toml::node* base_name = nullptr;
    if (auto* sys = s_.doc.get("system"); sys && sys->is_table()) base_name = sys->as_table()->get("hostname");
    if (host && name_node == base_name && !checks::has_template(name_node->as_string()->get()))
      fail(host->source(), "[[hosts]] entry " + std::to_string(host_pos) +
                               " has no hostname and [system].hostname has no {n} to tell the cards apart");
  } else {
    if (host)
      fail(host->source(),
           "[[hosts]] entry " + std::to_string(host_pos) + " has no hostname (and [system].hostname is not set)");
    fail(v.empty() ? s_.doc.source() : v.layers.front()->source(),
         "[system].hostname is required (or give every [[hosts]] entry a hostname)");
  }
  if (auto why = checks::hostname_label(h.hostname); !why.empty())
    fail(*name_node, "hostname \"" + h.hostname + "\" " + why);
  hostname_ok_ = true;
  if (auto x = str(v, "domain")) {
    if (auto why = checks::domain_name(*x); !why.empty()) fail(*v.get("domain"), "[system].domain " + why);
    h.domain = *x;
  }
  if (auto x = str(v, "timezone")) {
    if (!checks::is_timezone(*x)) {
      std::string msg = "unknown time zone \"" + *x + "\" in [system].timezone";
      if (auto best = checks::closest_timezone(*x); !best.empty())
        msg += " (did you mean '" + best + "'?)";
      else
        msg += " (use an IANA name like Europe/Berlin)";
      fail(*v.get("timezone"), msg);
    }
    h.timezone = *x;
  }
  if (auto x = str(v, "keymap")) {
    if (auto why = checks::keymap(*x); !why.empty()) fail(*v.get("keymap"), "[system].keymap \"" + *x + "\" " + why);
    h.keymap = *x;
    h.keymap_location = place(v.get("keymap")->source());
  }
  h.motd = str(v, "motd", "");
}

void Converter::convert_network(const View& root, HostConfig& h) {
  View v = sub(root, "network", "[network]");
  check_keys(v, kNetworkKeys);
  std::set<std::string> names;
  for (auto& iv : table_array(v, "interfaces", "[[network.interfaces]]"))
    guard([&] {
      check_keys(iv, kInterfaceKeys);
      Interface itf;
      itf.name = str(iv, "name", "eth0");
      if (auto why = checks::interface_name(itf.name); !why.empty()) fail(iv.at("name"), "interface name " + why);
      if (!names.insert(itf.name).second)
        fail(iv.anchor(), "interface " + itf.name + " is listed twice in [[network.interfaces]]");
      auto addr = str(iv, "address");
      itf.dhcp = boolean(iv, "dhcp", !addr.has_value());
      if (itf.dhcp && addr)
        fail(*iv.get("address"), "interface " + itf.name + " has both dhcp = true and an address; choose one");
      if (!itf.dhcp && !addr)
        fail(iv.anchor(), "interface " + itf.name + " has dhcp = false but no address (e.g. \"192.168.1.20/24\")");
      std::optional<checks::Cidr> cidr;
      if (addr) {
        cidr = checks::parse_cidr(*addr);
        if (!cidr)
          fail(*iv.get("address"),
               "invalid address \"" + *addr + "\" for " + itf.name + ": expected CIDR like 192.168.1.20/24");
        itf.address = *addr;
      }
      if (auto gw = str(iv, "gateway")) {
        auto ip = checks::parse_ip(*gw);
        if (!ip) fail(*iv.get("gateway"), "invalid gateway \"" + *gw + "\" for " + itf.name + ": not an IP address");
        if (cidr && !checks::same_subnet(*cidr, *ip))
          fail(*iv.get("gateway"), "gateway " + *gw + " is outside " + itf.name + "'s network " + *addr);
        if (itf.dhcp)
          fail(*iv.get("gateway"), "interface " + itf.name + " uses DHCP; a gateway needs a static address");
        itf.gateway = *gw;
      }
      itf.ipv6 = str(iv, "ipv6", "auto");
      if (itf.ipv6 != "auto" && itf.ipv6 != "dhcp" && itf.ipv6 != "off")
        fail(*iv.get("ipv6"), "[[network.interfaces]].ipv6 must be \"auto\", \"dhcp\" or \"off\"");
      if (itf.ipv6 == "dhcp" && cidr && cidr->ip.family == 6)
        fail(*iv.get("ipv6"), "interface " + itf.name + " has a static IPv6 address and ipv6 = \"dhcp\"; choose one");
      // "off" disables IPv6 on the interface before ifupdown-ng adds the address,
      // which the kernel then refuses: the interface would come up without one.
      if (itf.ipv6 == "off" && cidr && cidr->ip.family == 6)
        fail(*iv.get("address"),
             "interface " + itf.name + " has the static IPv6 address " + itf.address +
                 " but ipv6 = \"off\" disables IPv6 on it, so the address could not be set; drop "
                 "the address, or drop ipv6 = \"off\" (the default \"auto\" keeps a static address)");
      h.network.interfaces.push_back(std::move(itf));
    });
  for (auto& [dns, node] : str_array_nodes(v, "dns"))
    if (!checks::parse_ip(dns)) fail(*node, "[network].dns entry \"" + dns + "\" is not an IP address");
  h.network.dns = str_array(v, "dns");

  for (auto& [d, node] : str_array_nodes(v, "search"))
    if (auto why = checks::domain_name(d); !why.empty()) fail(*node, "[network].search entry \"" + d + "\" " + why);
  h.network.search = str_array(v, "search");
  // Own search domains replace what DHCP says, name servers included: without
  // [network].dns the card would have none.
  if (!h.network.search.empty() && h.network.dns.empty())
    fail(*v.get("search"),
         "[network].search needs [network].dns too: the card's resolv.conf then comes from the "
         "spec instead of DHCP (list the name servers, e.g. dns = [\"192.168.1.1\"])");
  if (auto p = str(v, "proxy")) {
    if (auto why = checks::url(*p, {"http://", "https://"}); !why.empty())
      fail(*v.get("proxy"), "[network].proxy " + why);
    h.network.proxy = *p;
  }
}

// [wifi]'s own network (v is [wifi]) or a [[wifi.networks]] entry: appended to
// h.wifi.networks. `seen` holds the ssids so far and where they were given.
void Converter::convert_wifi_network(const View& v, std::vector<std::pair<std::string, const toml::node*>>& seen,
                                     HostConfig& h) {
  const bool own = v.name == "[wifi]";
  WifiNetwork net;
  net.entry = v.name;
  auto ssid = str(v, "ssid");
  if (!ssid)
    fail(v.anchor(),
         own ? "[wifi] needs an ssid (or [[wifi.networks]] entries)" : "[[wifi.networks]] entry needs an ssid");
  const toml::node& ssid_node = *v.get("ssid");
  if (ssid->empty() || ssid->size() > 32) fail(ssid_node, v.name + ".ssid must be 1 to 32 bytes");
  for (const auto& [other, node] : seen)
    if (other == *ssid)
      fail(ssid_node,
           "Wi-Fi network \"" + *ssid + "\" is given twice (first at " + where(node->source()) + "); keep one");
  seen.emplace_back(*ssid, &ssid_node);
  net.ssid = *ssid;
  auto psk = secret(v, "psk", true, true);
  if (!psk)
    fail(v.anchor(), own ? "[wifi] needs a psk (the passphrase, e.g. psk = { env = \"WIFI_PSK\" })"
                         : "[[wifi.networks]] entry \"" + net.ssid +
                               "\" needs a psk (the passphrase, e.g. psk = { env = \"STAFF_PSK\" })");
  const std::string& pass = psk->value;
  bool hex64 = pass.size() == 64 && pass.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
  bool printable = std::all_of(pass.begin(), pass.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
  if (psk->unset_env.empty() && !hex64 && (pass.size() < 8 || pass.size() > 63 || !printable))
    fail(*psk->node, psk->what + " must be a passphrase of 8 to 63 printable ASCII characters (or 64 hex digits)");
  net.psk = pass;
  net.psk_unset_env = psk->unset_env;
  net.hidden = boolean(v, "hidden", false);
  if (auto p = integer(v, "priority")) {
    // wpa_supplicant reads priority= as a C int.
    using Int = std::numeric_limits<std::int32_t>;
    if (*p < Int::min() || *p > Int::max())
      fail(*v.get("priority"),
           v.name + ".priority must be between " + std::to_string(Int::min()) + " and " + std::to_string(Int::max()));
    net.priority = *p;
  }
  h.wifi.networks.push_back(std::move(net));
}

// [wifi] and its [[wifi.networks]]. In a [[hosts]] entry, [hosts.wifi] keys
// override the base's one by one like every table's; `networks` is one key, so
// a host's list replaces the base's whole (networks = [] drops them).
void Converter::convert_wifi(const View& root, HostConfig& h) {
  View v = sub(root, "wifi", "[wifi]");
  check_keys(v, kWifiKeys);
  if (v.empty()) return;
  auto entries = table_array(v, "networks", "[[wifi.networks]]");
  std::vector<std::pair<std::string, const toml::node*>> seen;
  if (v.get("ssid") || entries.empty()) {
    guard([&] { convert_wifi_network(v, seen, h); });
  } else {
    for (const char* key : {"psk", "hidden", "priority"})
      guard([&] {
        if (const toml::node* n = v.get(key))
          fail(*n, "[wifi]." + std::string(key) +
                       " is for the network [wifi].ssid names, and [wifi] has no ssid; add one, or move it into a "
                       "[[wifi.networks]] entry");
      });
  }
  for (const auto& nv : entries)
    guard([&] {
      check_keys(nv, kWifiNetworkKeys);
      convert_wifi_network(nv, seen, h);
    });
  h.wifi.enabled = true;
  if (auto c = str(v, "country")) {
    if (c->size() != 2 || !std::isupper(static_cast<unsigned char>((*c)[0])) ||
        !std::isupper(static_cast<unsigned char>((*c)[1])))
      fail(*v.get("country"), "[wifi].country must be a two-letter ISO 3166 code in capitals, like \"DE\"");
    h.wifi.country = *c;
  }
  h.wifi.interface = str(v, "interface", "wlan0");
  if (auto why = checks::interface_name(h.wifi.interface); !why.empty())
    fail(*v.get("interface"), "[wifi].interface " + why);
}

void Converter::convert_apk(const View& root, HostConfig& h) {
  View v = sub(root, "apk", "[apk]");
  check_keys(v, kApkKeys);
  h.apk.packages.clear();
  h.apk.package_locations.clear();
  for (auto& [p, node] : str_array_nodes(v, "packages")) {
    if (auto why = checks::package_name(p); !why.empty()) fail(*node, "package name \"" + p + "\" " + why);
    h.apk.packages.push_back(p);
    h.apk.package_locations.push_back(place(node->source()));
  }
  for (auto& [r, node] : str_array_nodes(v, "repositories")) {
    const std::string body = repository_line(r).location;
    if (body.empty() || (body[0] != '/' && !checks::url(body, {"http://", "https://", "ftp://"}).empty()))
      fail(*node, "[apk].repositories entry \"" + r + "\" must be a URL or an absolute path");
  }
  h.apk.repositories = str_array(v, "repositories");
  // "name@tag" needs a "@tag URL" repository line, or apk can satisfy neither
  // it nor, from then on, any other add or upgrade.
  for (auto& [p, node] : str_array_nodes(v, "packages")) {
    const std::string tag = package_tag(p);
    if (tag.empty()) continue;
    const bool listed = std::any_of(h.apk.repositories.begin(), h.apk.repositories.end(),
                                    [&](const std::string& r) { return repository_line(r).tag == tag; });
    if (!listed)
      warn(node->source(), "package " + p + " asks for the repository tagged " + tag +
                               ", but [apk].repositories has no \"" + tag +
                               " URL\" entry: apk cannot install it, and its other adds and upgrades fail too");
  }
  for (auto& [k, node] : str_array_nodes(v, "keys")) {
    ApkKey key;
    key.name = fs::path(k).filename().string();
    if (key.name.size() < 5 || key.name.substr(key.name.size() - 4) != ".pub")
      fail(*node, "[apk].keys entry \"" + k + "\" must be a public key file ending in .pub");
    if (auto why = checks::name_too_long(key.name); !why.empty())
      fail(*node, "[apk].keys file name " + key.name + " " + why);
    key.content = read_source(*node, "[apk].keys", "[apk].keys");
    if (starts_with_bom(key.content))
      fail(*node, "[apk].keys file " + k + " " + kBom +
                      ", so apk would not find the key in it: save it as UTF-8 "
                      "without BOM (or copy the file from the repository as it is)");
    h.apk.keys.push_back(std::move(key));
  }
  h.apk.cache = boolean(v, "cache", false);
}

void Converter::convert_services(const View& root, HostConfig& h) {
  View v = sub(root, "services", "[services]");
  check_keys(v, kServicesKeys);
  auto get = [&](std::string_view key) {
    for (auto& [s, node] : str_array_nodes(v, key))
      if (auto why = checks::service_name(s); !why.empty()) fail(*node, "service name \"" + s + "\" " + why);
    return str_array(v, key);
  };
  h.services.sysinit = get("sysinit");
  h.services.boot = get("boot");
  h.services.default_ = get("default");
  h.services.shutdown = get("shutdown");
  h.services.disable = get("disable");
}

// Paths whose program refuses them when others may read or write them, or
// that hold secrets: the mode bits that are not allowed, and why.
struct SensitiveFile {
  unsigned forbidden;
  const char* why;
};
std::optional<SensitiveFile> sensitive_file(const std::string& path) {
  auto ends_with = [&](const char* s) {
    const std::size_t n = std::strlen(s);
    return path.size() >= n && path.compare(path.size() - n, n, s) == 0;
  };
  const std::string name = path.substr(path.rfind('/') + 1);
  if (path == "/etc/shadow" || path == "/etc/gshadow")
    return SensitiveFile{07, "it holds password hashes, which every user could read"};
  if (path == "/etc/wpa_supplicant/wpa_supplicant.conf")
    return SensitiveFile{07, "it holds the Wi-Fi key, which every user could read"};
  if (path == "/etc/doas.conf" || path.rfind("/etc/doas.d/", 0) == 0)
    return SensitiveFile{022, "doas refuses a configuration that others may change"};
  if ((path.rfind("/etc/ssh/ssh_host_", 0) == 0 || (path.find("/.ssh/id_") != std::string::npos)) && !ends_with(".pub"))
    return SensitiveFile{077, "ssh refuses a private key that others may read"};
  if (name == "authorized_keys" && path.find("/.ssh/") != std::string::npos)
    return SensitiveFile{022, "sshd ignores authorized_keys that others may change"};
  return std::nullopt;
}

// The package a login shell comes from, when Alpine's base system lacks it:
// its file name for the usual shells (bash, zsh, fish, ...), "" for one we do
// not know, nullopt for busybox's sh/ash and the no-login shells.
std::optional<std::string> shell_package(const std::string& shell) {
  for (const char* base : {"/bin/sh", "/bin/ash", "/bin/busybox", "/sbin/nologin", "/bin/false", "/bin/true"})
    if (shell == base) return std::nullopt;
  const std::string name = shell.substr(shell.rfind('/') + 1);
  for (const char* known : {"bash", "zsh", "fish", "dash", "mksh", "tcsh", "oksh", "yash", "loksh", "nushell"})
    if (name == known) return name;
  return std::string();
}

// True when `packages` ([apk].packages, world entries) names package `name`,
// with or without a version constraint or repository tag.
bool lists_package(const std::vector<std::string>& packages, const std::string& name) {
  for (const auto& p : packages)
    if (package_name(p) == name) return true;
  return false;
}

// A crypt(3) hash, "*" or "!": one /etc/shadow field (no ':', no control characters).
bool password_hash_ok(const std::string& ph) {
  if (ph.empty() || (ph[0] != '$' && ph != "*" && ph != "!")) return false;
  return std::all_of(ph.begin(), ph.end(),
                     [](char c) { return c != ':' && static_cast<unsigned char>(c) >= 0x20 && c != 0x7f; });
}

// Why a [boot].config line makes the firmware load a file Alpine's tarball
// lacks, or empty. The tarball ships bootcode.bin, start.elf, fixup.dat,
// start4.elf and fixup4.dat only: none of the _x, _db or _cd variants
// (alpine-facts §2). A Pi 5 has its firmware in the EEPROM and reads none of them.
std::string missing_firmware(const std::string& line) {
  static const std::string shipped =
      ", which Alpine's tarball does not ship (it has start.elf, fixup.dat, start4.elf and fixup4.dat)";
  auto variant = [&](const std::string& what, const std::string& v, const std::string& fix) {
    return "[boot].config line \"" + line + "\" makes the firmware of a Pi 1-4 load " + what + " start_" + v +
           ".elf and fixup_" + v + ".dat (start4" + v + ".elf and fixup4" + v + ".dat on a Pi 4)" + shipped + ": " +
           fix;
  };
  const auto eq = line.find('=');
  if (eq == std::string::npos) return {};
  const std::string key = line.substr(0, eq), value = line.substr(eq + 1);
  if (key == "start_x" && value == "1") return variant("the camera firmware", "x", "remove the line");
  if (key == "start_debug" && value == "1") return variant("the debug firmware", "db", "remove the line");
  // gpu_mem_256/512/1024 set gpu_mem on a Pi with that much RAM, and pick the firmware the same way.
  const bool small = !value.empty() && value.size() <= 3 &&
                     std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
                     std::stoi(value) <= 16;
  if (key == "gpu_mem" && small)
    return variant("the cut-down firmware", "cd", "give gpu_mem more than 16 or remove the line");
  for (const char* ram : {"256", "512", "1024"})
    if (key == "gpu_mem_"s + ram && small)
      return "[boot].config line \"" + line + "\" makes the firmware of a Pi with " + ram +
             " MB of RAM load the cut-down firmware start_cd.elf and fixup_cd.dat" +
             (key == "gpu_mem_1024" ? " (start4cd.elf and fixup4cd.dat on a Pi 4)" : "") + shipped + ": give " + key +
             " more than 16 or remove the line";
  // FAT names are case-insensitive.
  if (key == "start_file" && !value.empty() && ascii_lower(value) != "start.elf" && ascii_lower(value) != "start4.elf")
    return "[boot].config line \"" + line + "\" makes the firmware load " + value +
           ", which Alpine's tarball does not ship (its start files are start.elf and start4.elf): remove the line";
  if (key == "fixup_file" && !value.empty() && ascii_lower(value) != "fixup.dat" && ascii_lower(value) != "fixup4.dat")
    return "[boot].config line \"" + line + "\" makes the firmware load " + value +
           ", which Alpine's tarball does not ship (its fixup files are fixup.dat and fixup4.dat): remove the line";
  return {};
}

// Groups a package creates when it is installed (its pre-install script runs
// addgroup -S), which its users must be in: with the package in [apk].packages,
// the group the spec creates for a user is the one the package wants (its
// addgroup then finds it), so there is nothing to warn about.
constexpr std::pair<std::string_view, std::string_view> kPackageGroups[] = {
    {"seat", "seatd"},     // aports community/seatd: seatd.pre-install, and seatd -g seat in seatd.initd
    {"docker", "docker"},  // aports community/docker: docker.pre-install
};

// The warning for one of rpi-provision's example keys in the spec; `whose` is
// "user admin's" or "root's".
std::string example_key_warning(const std::string& whose, const std::string& key) {
  return whose + " SSH key \"" + checks::ssh_key_label(key) +
         "\" is rpi-provision's example key; nobody has its private key: replace it with your own public key (the "
         "line of ~/.ssh/id_ed25519.pub, or of the .pub file ssh-keygen made)";
}

bool base_gid(int id) {
  for (const auto& g : base::groups())
    if (static_cast<int>(g.gid) == id) return true;
  return false;
}

void Converter::convert_users(const View& root, HostConfig& h) {
  std::set<std::string> names;
  std::set<int> uids;
  auto users = table_array(root, "users", "[[users]]");
  // A uid that is not an integer is said at its entry.
  for (auto& uv : users)
    if (const toml::node* uid = uv.get("uid"); uid && uid->is_integer())
      uids.insert(static_cast<int>(uid->as_integer()->get()));
  int next_uid = 1000;
  std::set<int> seen_uids;
  std::vector<const View*> user_views;  // the entry of each of h.users
  // Each entry on its own: a problem in one does not hide the next one's.
  for (auto& uv : users) {
    const bool ok = guard([&] {
      check_keys(uv, kUserKeys);
      User u;
      auto name = str(uv, "name");
      if (!name) fail(uv.anchor(), "[[users]] entry needs a name");
      if (auto why = checks::user_name(*name); !why.empty())
        fail(*uv.get("name"), "user name \"" + *name + "\" " + why);
      if (*name == "root") fail(*uv.get("name"), "configure root in [root], not [[users]]");
      if (base::find_account(*name))
        fail(*uv.get("name"), "user name \"" + *name + "\" is a system account of Alpine's base layout");
      if (base::find_group(*name))
        fail(*uv.get("name"), "user name \"" + *name + "\" is a group of Alpine's base layout (its own group would " +
                                  "appear twice in /etc/group)");
      if (!names.insert(*name).second) fail(*uv.get("name"), "duplicate user \"" + *name + "\"");
      u.name = *name;
      if (auto uid = integer(uv, "uid")) {
        if (*uid < 1 || *uid > 65533) fail(*uv.get("uid"), "uid must be between 1 and 65533");
        u.uid = static_cast<int>(*uid);
      } else {
        while (uids.count(next_uid) || base_gid(next_uid)) ++next_uid;
        u.uid = next_uid++;
      }
      if (!seen_uids.insert(u.uid).second) fail(uv.at("uid"), "duplicate uid " + std::to_string(u.uid));
      for (const auto& a : base::accounts())
        if (static_cast<int>(a.uid) == u.uid)
          fail(uv.at("uid"), "uid " + std::to_string(u.uid) + " belongs to the system account " + std::string(a.name));
      // The user's primary group gets gid = uid, so it must not be a base group's gid.
      for (const auto& g : base::groups())
        if (static_cast<int>(g.gid) == u.uid)
          fail(uv.at("uid"), "uid " + std::to_string(u.uid) + " would give user " + u.name + " the gid of group " +
                                 std::string(g.name) + "; choose another uid");
      for (auto& [g, node] : str_array_nodes(uv, "groups"))
        if (auto why = checks::user_name(g); !why.empty()) fail(*node, "group name \"" + g + "\" " + why);
      u.groups = str_array(uv, "groups");
      u.shell = str(uv, "shell", "/bin/ash");
      if (auto why = checks::abs_path(u.shell); !why.empty()) fail(*uv.get("shell"), "shell " + why);
      if (u.shell.find(':') != std::string::npos)
        fail(*uv.get("shell"), "shell of user " + u.name + " must not contain ':' (the /etc/passwd separator)");
      // sshd refuses a user whose shell does not exist: possibly the only admin.
      if (auto pkg = shell_package(u.shell); pkg && !(!pkg->empty() && lists_package(h.apk.packages, *pkg)))
        warn(uv.get("shell")->source(), "shell " + u.shell + " of user " + u.name +
                                            " is not part of Alpine's base system: " +
                                            (pkg->empty() ? "make sure a package in [apk].packages provides it"
                                                          : "add \"" + *pkg + "\" to [apk].packages") +
                                            ", or the user cannot log in");
      if (auto pw = secret(uv, "password", true, true)) {
        u.password = pw->value;
        u.password_unset_env = pw->unset_env;
      }
      if (auto ph = str(uv, "password_hash")) {
        if (!u.password.empty() || uv.get("password"))
          fail(*uv.get("password_hash"), "user " + u.name + " has both password and password_hash; choose one");
        if (!password_hash_ok(*ph))
          fail(*uv.get("password_hash"),
               "password_hash of user " + u.name + " must be a crypt(3) hash like \"$6$...\"");
        u.password_hash = *ph;
      }
      for (auto& [k, node] : str_array_nodes(uv, "ssh_authorized_keys")) {
        if (auto why = checks::ssh_public_key(k); !why.empty()) fail(*node, "ssh_authorized_keys entry " + why);
        if (checks::ssh_key_is_example(k)) warn(node->source(), example_key_warning("user " + u.name + "'s", k));
      }
      u.ssh_authorized_keys = str_array(uv, "ssh_authorized_keys");
      u.admin = boolean(uv, "admin", false);
      h.users.push_back(std::move(u));
    });
    if (ok)
      user_views.push_back(&uv);
    else
      users_unsure_ = true;
  }
  // Supplementary groups unknown to the base layout get gids from 1100 upwards.
  std::set<unsigned> used;
  for (const auto& g : base::groups()) used.insert(g.gid);
  for (const auto& u : h.users) used.insert(static_cast<unsigned>(u.uid));
  unsigned next_gid = 1100;
  for (std::size_t i = 0; i < h.users.size(); ++i) {
    for (const auto& g : h.users[i].groups) {
      if (base::find_group(g) || names.count(g)) continue;
      bool have = false;
      for (auto& [n, gid] : h.extra_groups) have = have || n == g;
      if (have) continue;
      while (used.count(next_gid)) ++next_gid;
      used.insert(next_gid);
      h.extra_groups.emplace_back(g, next_gid);
      const auto* made_by = std::find_if(std::begin(kPackageGroups), std::end(kPackageGroups),
                                         [&](const auto& pg) { return pg.first == g; });
      const bool by_package = made_by != std::end(kPackageGroups);
      if (by_package && lists_package(h.apk.packages, std::string(made_by->second))) continue;
      auto* node = user_views[i]->get("groups");
      warn(node->source(), "group \"" + g + "\" is not in Alpine's base layout; it is created with gid " +
                               std::to_string(next_gid) +
                               (by_package ? " (it is the group of the " + std::string(made_by->second) +
                                                 " package, which is not in [apk].packages)"
                                           : ""));
    }
  }
}

void Converter::convert_root(const View& root, HostConfig& h) {
  View v = sub(root, "root", "[root]");
  check_keys(v, kRootKeys);
  if (v.empty()) return;
  if (auto pw = secret(v, "password", true, true)) {
    h.root.password = pw->value;
    h.root.password_unset_env = pw->unset_env;
  }
  if (auto ph = str(v, "password_hash")) {
    if (v.get("password")) fail(*v.get("password_hash"), "[root] has both password and password_hash; choose one");
    if (!password_hash_ok(*ph))
      fail(*v.get("password_hash"), "[root].password_hash must be a crypt(3) hash like \"$6$...\"");
    h.root.password_hash = *ph;
  }
  for (auto& [k, node] : str_array_nodes(v, "ssh_authorized_keys")) {
    if (auto why = checks::ssh_public_key(k); !why.empty()) fail(*node, "[root].ssh_authorized_keys entry " + why);
    if (checks::ssh_key_is_example(k)) warn(node->source(), example_key_warning("root's", k));
  }
  h.root.ssh_authorized_keys = str_array(v, "ssh_authorized_keys");
}

void Converter::convert_ssh(const View& root, HostConfig& h) {
  View v = sub(root, "ssh", "[ssh]");
  check_keys(v, kSshKeys);
  h.ssh.enable = boolean(v, "enable", true);
  h.ssh.password_authentication = boolean(v, "password_authentication", false);
  h.ssh.permit_root_login = str(v, "permit_root_login", "prohibit-password");
  const auto& p = h.ssh.permit_root_login;
  if (p != "yes" && p != "no" && p != "prohibit-password" && p != "forced-commands-only")
    fail(*v.get("permit_root_login"),
         "[ssh].permit_root_login must be \"yes\", \"no\", \"prohibit-password\" or \"forced-commands-only\"");
  h.ssh.host_keys = str(v, "host_keys", "generate");
  if (h.ssh.host_keys != "generate" && h.ssh.host_keys != "first-boot")
    fail(*v.get("host_keys"), "[ssh].host_keys must be \"generate\" or \"first-boot\"");
}

void Converter::convert_ntp(const View& root, HostConfig& h) {
  View v = sub(root, "ntp", "[ntp]");
  check_keys(v, kNtpKeys);
  h.ntp.enable = boolean(v, "enable", true);
  for (auto& [s, node] : str_array_nodes(v, "servers"))
    if (!checks::parse_ip(s) && !checks::domain_name(s).empty())
      fail(*node, "[ntp].servers entry \"" + s + "\" is neither a host name nor an IP address");
  h.ntp.servers = str_array(v, "servers");
}

void Converter::convert_files(const View& root, HostConfig& h) {
  std::set<std::string> paths;
  for (auto& fv : table_array(root, "files", "[[files]]"))
    guard([&] {
      check_keys(fv, kFileKeys);
      File f;
      auto path = str(fv, "path");
      if (!path) fail(fv.anchor(), "[[files]] entry needs a path");
      if (auto why = checks::abs_path(*path); !why.empty())
        fail(*fv.get("path"), "[[files]].path \"" + *path + "\" " + why);
      if (!paths.insert(*path).second) fail(*fv.get("path"), "duplicate [[files]] path " + *path);
      // A file and a directory of one name cannot both be in the tarball (busybox tar aborts).
      for (const auto& [other, node] : file_nodes_) {
        if (path->rfind(other + "/", 0) == 0)
          fail(*fv.get("path"), "[[files]] path " + *path + " is inside " + other +
                                    ", which another [[files]] entry (line " +
                                    std::to_string(node->source().begin.line) + ") makes a file");
        if (other.rfind(*path + "/", 0) == 0)
          fail(*fv.get("path"), "[[files]] path " + *path + " would have to be the folder of " + other +
                                    ", which another [[files]] entry (line " +
                                    std::to_string(node->source().begin.line) + ") makes a file");
      }
      file_nodes_.emplace_back(*path, fv.get("path"));
      f.path = *path;
      bool has_content = fv.get("content") != nullptr, has_source = fv.get("source") != nullptr;
      if (has_content == has_source)
        fail(fv.anchor(), "[[files]] entry " + f.path + " needs exactly one of content or source");
      // Copied byte for byte, so a byte-order mark stays: warned, since it may be binary data.
      const std::string bom_todo =
          ", which is copied too and may confuse what reads the file on the Pi: save it as UTF-8 without BOM if it "
          "is text";
      if (has_content) {
        auto content = *secret(fv, "content", false, false);
        if (content.from_file && starts_with_bom(content.value))
          warn(content.node->source(), "[[files]] " + f.path + ": " + content.what + " " + kBom + bom_todo);
        f.content = std::move(content.value);
        f.content_unset_env = content.unset_env;
        // Content from { env } or { file } is a secret: private unless a mode is given.
        if (fv.get("content")->is_table()) f.mode = 0600;
      } else {
        auto* node = fv.get("source");
        if (!node->is_string()) fail(*node, "[[files]].source must be a string (a local file path)");
        f.content = read_source(*node, "source of " + f.path, "[[files]].source for " + f.path);
        if (starts_with_bom(f.content))
          warn(node->source(),
               "[[files]] " + f.path + ": source " + std::string(node->as_string()->get()) + " " + kBom + bom_todo);
      }
      if (auto* m = fv.get("mode")) {
        std::optional<unsigned> mode;
        if (m->is_string()) mode = checks::octal_mode(m->as_string()->get());
        if (!mode || *mode > 07777) fail(*m, "[[files]].mode must be an octal string like \"0644\" (in quotes)");
        f.mode = *mode;
      }
      // Files that hold secrets or that their program checks: private unless a
      // mode is given, and a mode the program would refuse is an error here
      // rather than a Pi whose sshd or doas will not start.
      if (auto rule = sensitive_file(f.path)) {
        if (!fv.get("mode"))
          f.mode = 0600;
        else if (f.mode & rule->forbidden) {
          char text[16];
          std::snprintf(text, sizeof text, "%04o", f.mode);
          fail(*fv.get("mode"), "[[files]] " + f.path + " with mode " + text + ": " + rule->why + "; use \"0600\"");
        }
      }
      if (auto o = str(fv, "owner")) {
        auto colon = o->find(':');
        f.owner = o->substr(0, colon);
        f.group = colon == std::string::npos ? "" : o->substr(colon + 1);
        bool user_ok = base::find_account(f.owner) != nullptr;
        std::string primary;
        for (const auto& u : h.users)
          if (u.name == f.owner) user_ok = true;
        // With a [[users]] entry that has a problem, the owner may be that user.
        if (!user_ok && !users_unsure_)
          fail(*fv.get("owner"), "owner \"" + f.owner + "\" of " + f.path + " names no user");
        if (f.group.empty()) {
          auto* a = base::find_account(f.owner);
          f.group = a ? std::string(base::groups().front().name) : f.owner;
          if (a)
            for (const auto& g : base::groups())
              if (g.gid == a->gid) f.group = g.name;
        }
        bool group_ok = base::find_group(f.group) != nullptr;
        for (const auto& u : h.users) group_ok = group_ok || u.name == f.group;
        for (const auto& [g, gid] : h.extra_groups) group_ok = group_ok || g == f.group;
        if (!group_ok && !users_unsure_)
          fail(*fv.get("owner"), "group \"" + f.group + "\" of " + f.path + " names no group");
      }
      h.files.push_back(std::move(f));
    });
}

void Converter::convert_scripts(const View& root, HostConfig& h) {
  std::set<std::string> names;
  for (auto& sv : table_array(root, "scripts", "[[scripts]]"))
    guard([&] {
      check_keys(sv, kScriptKeys);
      Script sc;
      auto name = str(sv, "name");
      if (!name) fail(sv.anchor(), "[[scripts]] entry needs a name");
      if (auto why = checks::script_name(*name); !why.empty())
        fail(*sv.get("name"), "script name \"" + *name + "\" " + why);
      if (*name == kFirstBootRunnerName || *name == kInstallerName)
        fail(*sv.get("name"), "script name \"" + *name + "\" is reserved for a script rpi-provision generates");
      if (!names.insert(*name).second) fail(*sv.get("name"), "duplicate script name \"" + *name + "\"");
      sc.name = *name;
      auto run = str(sv, "run", "every-boot");
      if (run != "first-boot" && run != "every-boot")
        fail(*sv.get("run"), "[[scripts]].run must be \"first-boot\" or \"every-boot\"");
      sc.first_boot = run == "first-boot";
      bool has_content = sv.get("content") != nullptr, has_source = sv.get("source") != nullptr;
      if (has_content == has_source) fail(sv.anchor(), "script " + sc.name + " needs exactly one of content or source");
      // A byte-order mark hides the #! line from the kernel, and the shell takes it as part of the first command.
      const std::string bom_todo =
          ", which hides its #! line and makes the shell read the mark as part of the first command: save it as "
          "UTF-8 without BOM";
      if (has_content) {
        auto content = *secret(sv, "content", false, false);
        if (starts_with_bom(content.value))
          fail(*content.node, "script " + sc.name + ": " + content.what + " " + kBom + bom_todo);
        sc.content = std::move(content.value);
        sc.content_unset_env = content.unset_env;
      } else {
        auto* node = sv.get("source");
        if (!node->is_string()) fail(*node, "[[scripts]].source must be a string (a local file path)");
        sc.content = read_source(*node, "source of script " + sc.name, "[[scripts]].source for " + sc.name);
        if (starts_with_bom(sc.content))
          fail(*node,
               "script " + sc.name + ": source " + std::string(node->as_string()->get()) + " " + kBom + bom_todo);
      }
      h.scripts.push_back(std::move(sc));
    });
}

void Converter::convert_lbu(const View& root, HostConfig& h) {
  View v = sub(root, "lbu", "[lbu]");
  check_keys(v, kLbuKeys);
  h.lbu.media = str(v, "media", "mmcblk0p1");
  if (h.lbu.media.empty() || !std::all_of(h.lbu.media.begin(), h.lbu.media.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
      }))
    fail(*v.get("media"), "[lbu].media must be a device name under /media, like \"mmcblk0p1\"");
  if (auto why = checks::name_too_long(h.lbu.media); !why.empty()) fail(*v.get("media"), "[lbu].media " + why);
  for (auto key : {"include", "exclude"}) {
    for (auto& [p, node] : str_array_nodes(v, key))
      if (auto why = checks::abs_path(p); !why.empty()) fail(*node, "[lbu]." + std::string(key) + " entry " + why);
  }
  h.lbu.include = str_array(v, "include");
  h.lbu.exclude = str_array(v, "exclude");
  if (auto b = integer(v, "backup_limit")) {
    if (*b < 0 || *b > 1000) fail(*v.get("backup_limit"), "[lbu].backup_limit must be between 0 and 1000");
    h.lbu.backup_limit = static_cast<int>(*b);
  }
}

void Converter::convert_boot(const View& root, HostConfig& h) {
  View v = sub(root, "boot", "[boot]");
  check_keys(v, kBootKeys);
  if (auto l = str(v, "label")) {
    std::string up = *l;
    std::transform(up.begin(), up.end(), up.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    if (up.empty() || up.size() > 11 || !std::all_of(up.begin(), up.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
        }))
      fail(*v.get("label"), "[boot].label must be 1 to 11 letters, digits, '_' or '-'");
    if (up == "BOOT")
      fail(*v.get("label"),
           "[boot].label must not be BOOT: the Pi firmware then fails to load boot/ files "
           "(raspberrypi/firmware#1529)");
    if (up == "CIDATA") fail(*v.get("label"), "[boot].label must not be CIDATA: it triggers tiny-cloud at boot");
    h.boot.label = up;
  }
  if (auto* sz = v.get("size")) {
    if (sz->is_string() && sz->as_string()->get() == "max") {
      h.boot.size_max = true;
    } else if (sz->is_string()) {
      try {
        h.boot.size = rpi::parse_size(sz->as_string()->get(), "[boot].size");
      } catch (const Error& e) {
        fail(*sz, std::string("[boot].size must be a size like \"1GiB\" or \"max\""));
      }
      // The smallest image there is (as for --size): whether the files fit is the image engine's to say.
      if (*h.boot.size < (16ull << 20))
        fail(*sz, "[boot].size must be at least 16MiB (8 MiB before the partition, then the smallest FAT volume)");
    } else {
      fail(*sz, "[boot].size must be a string like \"1GiB\" or \"max\"");
    }
  }
  for (auto& [p, node] : str_array_nodes(v, "cmdline")) {
    if (p.empty() || p.find_first_of(" \t\r\n") != std::string::npos)
      fail(*node, "[boot].cmdline entries must be single kernel parameters without spaces");
  }
  h.boot.cmdline = str_array(v, "cmdline");
  for (auto& [l, node] : str_array_nodes(v, "config")) {
    if (l.size() > 98) fail(*node, "[boot].config line is longer than 98 characters (the firmware's limit)");
    if (l.find_first_of("\r\n") != std::string::npos) fail(*node, "[boot].config entries must be single lines");
    if (auto why = missing_firmware(l); !why.empty()) warn(node->source(), why);
  }
  h.boot.config = str_array(v, "config");
  h.boot.serial_console = boolean(v, "serial_console", false);
  if (auto u = str(v, "apkovl_url")) {
    if (auto why = checks::url(*u, {"http://", "https://", "ftp://"}); !why.empty())
      fail(*v.get("apkovl_url"), "[boot].apkovl_url " + why);
    h.boot.apkovl_url = *u;
  }
}

void Converter::convert_install(const View& root, HostConfig& h) {
  View v = sub(root, "install", "[install]");
  check_keys(v, kInstallKeys);
  h.install.mode = str(v, "mode", "diskless");
  if (h.install.mode != "diskless" && h.install.mode != "sys")
    fail(*v.get("mode"), "[install].mode must be \"diskless\" or \"sys\"");
  h.install.disk = str(v, "disk", "/dev/mmcblk0");
  // It ends up in a root shell script: only ^/dev/[A-Za-z0-9/_.:-]+$ (and no "..").
  const auto& d = h.install.disk;
  bool disk_ok =
      d.rfind("/dev/", 0) == 0 && d.size() > 5 && checks::abs_path(d).empty() &&
      std::all_of(d.begin(), d.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '_' || c == '.' || c == ':' || c == '-';
      });
  if (!disk_ok)
    fail(*v.get("disk"),
         "[install].disk must be a device path like /dev/mmcblk0 (letters, digits, '/', '_', '.', ':', '-')");
}

HostConfig Converter::convert(const toml::table* host, int n, int host_pos) {
  n_ = n;
  file_nodes_.clear();
  failed_ = false;
  skip_.clear();
  users_unsure_ = false;
  hostname_ok_ = false;
  HostConfig h;
  h.index = n;
  // A mistyped table name ("sytem"): the table it stands for is not checked,
  // since what it lacks ([system].hostname) is the typo, not another mistake.
  guard([&] { check_keys(s_.doc, kTopKeys, "the spec", &skip_); });
  View root{{}, "the spec"};
  if (host) {
    std::vector<std::string_view> host_keys = {"hostname", "mac"};
    for (auto k : kTopKeys)
      if (k != "hosts") host_keys.push_back(k);
    std::set<std::string> meant;
    guard([&] { check_keys(*host, host_keys, "[[hosts]]", &meant); });
    for (const auto& m : meant) skip_.insert(m == "hostname" ? "system" : m);
    guard([&] {
      if (auto* a = host->get("alpine")) fail(*a, "[alpine] cannot differ per host: a batch is built from one tarball");
    });
    root.layers.push_back(host);
    guard([&] {
      if (auto* m = host->get("mac")) {
        if (!m->is_string()) fail(*m, "[[hosts]].mac must be a string");
        auto mac = checks::normalize_mac(m->as_string()->get());
        if (!mac) fail(*m, "[[hosts]].mac must be a MAC address like \"b8:27:eb:12:34:56\"");
        if (auto why = checks::mac_not_a_card(*mac); !why.empty())
          fail(*m, "[[hosts]].mac is not a network card's address: " + *mac + " (" + why + ")");
        h.mac = *mac;
      }
    });
  }
  root.layers.push_back(&s_.doc);
  // Type check of every top-level entry that must be a table (unknown keys are said above).
  for (auto* layer : root.layers)
    for (auto&& [k, v] : *layer) {
      std::string_view key = k.str();
      if (std::find(kTopKeys.begin(), kTopKeys.end(), key) == kTopKeys.end()) continue;
      bool array = key == "users" || key == "files" || key == "scripts" || key == "hosts";
      const toml::node& node = v;  // a structured binding is not captured by clang before 16
      const bool ok = guard([&] {
        if (array && !node.is_array()) fail(node, "[[" + std::string(key) + "]] must be an array of tables");
        if (!array && !node.is_table())
          fail(node, "[" + std::string(key) + "] must be a table, not " + type_name(node.type()));
      });
      if (!ok) skip_.insert(std::string(key));
    }
  // Each table on its own: a problem in one does not hide those of the next.
  auto section = [&](const std::string& name, auto&& convert_it) {
    const bool ok = !skip_.count(name) && guard(convert_it);
    if (!ok && name == "users") users_unsure_ = true;
  };
  View base_only{{&s_.doc}, "the spec"};
  section("alpine", [&] { convert_alpine(base_only, h.alpine); });
  section("system", [&] { convert_system(root, host, host_pos, h); });
  section("network", [&] { convert_network(root, h); });
  section("wifi", [&] { convert_wifi(root, h); });
  section("apk", [&] { convert_apk(root, h); });
  section("services", [&] { convert_services(root, h); });
  section("users", [&] { convert_users(root, h); });
  section("root", [&] { convert_root(root, h); });
  section("ssh", [&] { convert_ssh(root, h); });
  section("ntp", [&] { convert_ntp(root, h); });
  section("files", [&] { convert_files(root, h); });
  section("scripts", [&] { convert_scripts(root, h); });
  section("lbu", [&] { convert_lbu(root, h); });
  section("boot", [&] { convert_boot(root, h); });
  section("install", [&] { convert_install(root, h); });
  // Defaults that depend on other tables.
  if (h.network.interfaces.empty()) h.network.interfaces.push_back(Interface{});
  if (h.wifi.enabled) {
    bool listed = false;
    for (const auto& i : h.network.interfaces) listed = listed || i.name == h.wifi.interface;
    if (!listed) {
      Interface w;
      w.name = h.wifi.interface;
      h.network.interfaces.push_back(w);
    }
  }
  // What follows looks at the whole card: with a part of it missing, it would
  // say things that are not so (nobody can log in, no DHCP).
  if (failed_) return h;
  bool any_dhcp = false;
  for (const auto& i : h.network.interfaces) any_dhcp = any_dhcp || i.dhcp;
  if (!any_dhcp && h.network.dns.empty()) {
    View net = sub(root, "network", "[network]");
    warn(net.empty() ? s_.doc.source() : net.layers[0]->source(),
         "no interface uses DHCP and [network].dns is empty: the Pi will not resolve names");
  }
  // A Pi that takes its apkovl from a web server never reads what lbu commit
  // saves on its card: keys made at the first boot are made at every boot.
  if (!h.boot.apkovl_url.empty() && h.ssh.enable && h.ssh.host_keys == "first-boot") {
    View boot = sub(root, "boot", "[boot]");
    warn(boot.empty() ? s_.doc.source() : boot.layers[0]->source(),
         "[boot].apkovl_url with [ssh].host_keys = \"first-boot\": the Pi reads its apkovl from the server at every "
         "boot, not what lbu commit saves on the card, so it gets new SSH host keys at every boot; use host_keys = "
         "\"generate\" (the keys are then in the apkovl you serve)");
  }
  guard([&] { check_files_against_generated(h); });
  guard([&] { check_root_access(root, h); });
  return h;
}

// Root with SSH keys and no password gets "*" in /etc/shadow: when sshd will
// not take those keys and no admin can log in and use doas, nobody can
// administer the Pi, and with no other account nobody can log in at all.
void Converter::check_root_access(const View& root, const HostConfig& h) {
  check_locked_keys(root, h);
  check_admins_log_in(root, h);
  const RootKeys how = root_keys(h);
  if (how == RootKeys::none || how == RootKeys::usable) {
    check_someone_logs_in(root, h);
    return;
  }
  const auto& pw = h.root.password_hash;
  if (h.root.password_given() || (!pw.empty() && pw[0] != '*' && pw[0] != '!')) return;  // the console
  if (admin_logs_in(h)) return;
  // Someone still reaches the Pi when a user's keys only run forced commands:
  // then root is out of reach, not everybody. Example keys reach nothing.
  const bool someone = std::any_of(h.users.begin(), h.users.end(), [&](const User& u) {
    return logs_in(h, u) ||
           (h.ssh.enable && std::any_of(u.ssh_authorized_keys.begin(), u.ssh_authorized_keys.end(),
                                        [](const std::string& k) { return !checks::ssh_key_is_example(k); }));
  });

  const View ssh = sub(root, "ssh", "[ssh]");
  const toml::node* setting = ssh.get(how == RootKeys::sshd_off ? "enable" : "permit_root_login");
  if (!setting) return;  // the defaults let root's keys in
  std::string labels;
  for (const auto& k : h.root.ssh_authorized_keys)
    labels += (labels.empty() ? "\"" : ", \"") + checks::ssh_key_label(k) + "\"";
  const std::string keys = "root's SSH keys ([root].ssh_authorized_keys: " + labels + ")";
  const std::string nobody_else = "root has no password ([root].password) and no [[users]] admin can log in";

  if (how == RootKeys::forced_commands) {
    warn(setting->source(), "[ssh].permit_root_login = \"forced-commands-only\" lets " + keys +
                                " run only their command=\"...\" option, " + nobody_else + ": nobody can get " +
                                (someone ? "an interactive root login" : "an interactive login") +
                                " on this Pi; set [root].password or add a [[users]] entry with admin = true if "
                                "that is not intended");
    return;
  }
  const std::string refuses =
      how == RootKeys::sshd_off         ? "[ssh].enable = false: sshd does not run, so " + keys + " are never used"
      : h.ssh.permit_root_login == "no" ? "[ssh].permit_root_login = \"no\" makes sshd refuse " + keys
                                        : "[ssh].permit_root_login = \"forced-commands-only\" makes sshd refuse " +
                                              keys + ", since none of them has a command=\"...\" option";
  const std::string todo =
      how == RootKeys::sshd_off
          ? "set [root].password, turn SSH on ([ssh].enable = true), or add a [[users]] entry with admin = true and "
            "a password"
          : "set [root].password, let root in over SSH ([ssh].permit_root_login = \"prohibit-password\"), or add a "
            "[[users]] entry with admin = true and an SSH key or a password";
  if (someone)
    warn(setting->source(), refuses + ", and " + nobody_else + ": nobody can become root on this Pi; " + todo);
  else
    fail(*setting, refuses + ", and " + nobody_else + ": nobody could log in to this Pi; " + todo);
}

// Alpine's OpenSSH has no PAM: it takes an account whose password field starts
// with '!' as locked and refuses its SSH keys (alpine-facts §5).
void Converter::check_locked_keys(const View& root, const HostConfig& h) {
  if (!h.ssh.enable) return;
  const std::string fix = "; use password_hash = \"*\" (no password) for an account that logs in with SSH keys only";
  const View r = sub(root, "root", "[root]");
  // With nobody else to log in, check_someone_logs_in says it.
  if (h.root.password_hash.starts_with("!") && root_keys(h) == RootKeys::usable && r.get("password_hash") &&
      checks::anyone_logs_in(h))
    warn(r.get("password_hash")->source(),
         "[root].password_hash = \"!\" locks root, so sshd refuses root's SSH keys ([root].ssh_authorized_keys)" + fix);
  const auto users = table_array(root, "users", "[[users]]");
  for (std::size_t i = 0; i < h.users.size() && i < users.size(); ++i) {
    const User& u = h.users[i];
    if (u.password_hash.starts_with("!") && !u.ssh_authorized_keys.empty() && users[i].get("password_hash"))
      warn(users[i].get("password_hash")->source(),
           "password_hash = \"!\" locks user " + u.name +
               ", so sshd refuses their SSH keys ([[users]].ssh_authorized_keys)" + fix);
  }
}

// An admin who cannot log in does not lock root: with [root] unset, root
// keeps Alpine's empty password (root_login), so whoever sits at the keyboard
// is root. Said at load time, since a build prints no summary.
void Converter::check_admins_log_in(const View& root, const HostConfig& h) {
  if (root_login(h) != RootLogin::empty_password) return;
  const auto users = table_array(root, "users", "[[users]]");
  for (std::size_t i = 0; i < h.users.size() && i < users.size(); ++i) {
    const User& u = h.users[i];
    const toml::node* admin = users[i].get("admin");
    if (!u.admin || !admin) continue;
    warn(admin->source(), "admin " + u.name + " cannot log in (" + checks::no_login_reason(h, u) +
                              "), so root's password login is not locked: root keeps Alpine's empty password and "
                              "whoever sits at the keyboard is root; give " +
                              u.name + " a password or an SSH key without command=\"...\", or set [root].password");
    return;  // one is enough: the fix is the same
  }
}

// Every way in locked ([root] locked, no usable key, no [[users]] entry that
// can log in) builds a Pi nobody can log in to: a sealed appliance may mean
// that, so it warns. Without [root] nobody is locked out: root then keeps
// Alpine's empty password (root_login) and logs in at the console.
void Converter::check_someone_logs_in(const View& root, const HostConfig& h) {
  if (checks::anyone_logs_in(h)) return;
  const View r = sub(root, "root", "[root]");
  const toml::node* at = r.get("password_hash") ? r.get("password_hash") : r.get("ssh_authorized_keys");
  const auto& ph = h.root.password_hash;
  const auto& keys = h.root.ssh_authorized_keys;
  // ph is "*", "!" or unset here: any other hash is a password root logs in with.
  const std::string locks = "[root].password_hash = \"" + ph.substr(0, 1) + "\" locks root";
  // Why root's keys open no shell: forced commands, or keys nobody has the private key of.
  auto all = [&](bool (*pred)(std::string_view)) {
    return std::all_of(keys.begin(), keys.end(), [&](const std::string& k) { return pred(k); });
  };
  const std::string forced =
      all(checks::ssh_key_forces_command) ? "every key in [root].ssh_authorized_keys forces a command=\"...\""
      : all(checks::ssh_key_is_example)
          ? (keys.size() == 1 ? "root's SSH key is rpi-provision's example key, whose private key nobody has"
                              : "root's SSH keys are rpi-provision's example keys, whose private keys nobody has")
          : "every key in [root].ssh_authorized_keys forces a command=\"...\" or is rpi-provision's example key";
  std::string why;
  if (root_login(h) == RootLogin::locked)  // no [root]: locked for an admin whose key is the example's
    why =
        "root's password is locked (there is no [root], so the admins' SSH keys are to be the way in, and "
        "rpi-provision's example key stands in for the admin's own)";
  else if (keys.empty())
    why = locks + "'s password and root has no SSH key";
  else if (ph.starts_with("!"))
    why = locks + ", so sshd refuses its SSH keys";
  else
    why = ph.empty() ? forced : locks + "'s password and " + forced;
  std::string users;
  for (const auto& u : h.users) users += (users.empty() ? "" : "; ") + u.name + ": " + checks::no_login_reason(h, u);
  why += users.empty() ? ", and there is no [[users]] entry" : ", and no [[users]] entry can log in (" + users + ")";
  warn(at ? at->source() : (r.empty() ? s_.doc.source() : r.anchor().source()),
       why +
           ": nobody can log in to this Pi, at the console or over SSH; if that is not intended, set "
           "[root].password, or give root or a [[users]] entry an SSH key without command=\"...\" or a password");
}

// toml++'s description without its "saw '…'" part (it may quote part of a
// secret and span lines), on one line.
std::string parse_error_text(std::string_view description) {
  std::string d(description);
  for (std::string_view cut : {"; saw ", ", saw ", " saw "}) {
    if (auto pos = d.find(cut); pos != std::string::npos) {
      d.erase(pos);
      break;
    }
  }
  for (char& c : d)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  while (!d.empty() && d.back() == ' ') d.pop_back();
  return d;
}

// The key a bare value at byte `at` of line `l` belongs to, when the line shows it
// plainly ("psk = ...", "a.b = ...", "{ psk = ..."): a bare key before the last '='
// ahead of the value, with nothing but blanks and the value's start after it.
// Never any part of the value; empty when unsure (arrays, quoted keys).
std::string bare_key_before(std::string_view l, std::size_t at) {
  auto head = l.substr(0, at);
  auto eq = head.rfind('=');
  if (eq == std::string_view::npos) return {};
  if (head.substr(eq + 1).find_first_of("[{\"',") != std::string_view::npos) return {};
  auto key = head.substr(0, eq);
  if (auto open = key.find_last_of("{,"); open != std::string_view::npos) key.remove_prefix(open + 1);
  while (!key.empty() && (key.front() == ' ' || key.front() == '\t')) key.remove_prefix(1);
  while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.remove_suffix(1);
  if (key.empty() || key.size() > 64) return {};
  for (char c : key)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return {};
  return std::string(key);
}

// The table of `t` (or below it, in tables and arrays of tables) that holds `key`.
const toml::table* table_holding(const toml::table& t, std::string_view key) {
  if (t.contains(key)) return &t;
  for (auto&& [k, v] : t) {
    if (const auto* sub = v.as_table()) {
      if (const auto* found = table_holding(*sub, key)) return found;
    } else if (const auto* arr = v.as_array()) {
      for (const auto& e : *arr)
        if (const auto* et = e.as_table())
          if (const auto* found = table_holding(*et, key)) return found;
    }
  }
  return nullptr;
}

// toml++'s "cannot redefine existing string 'timezone'" said as what to do:
// "timezone is set twice (first at 2:1); keep one", and the same for a table
// header given twice. The first one's place comes from parsing the lines before
// this one (with a probe key where this one is, to find the table it is in);
// left out when that does not find it. Empty for other errors.
std::string duplicate_text(std::string_view description, std::string_view text, std::size_t line, std::size_t column) {
  constexpr std::string_view kKeyValue = "Error while parsing key-value pair: cannot redefine existing ";
  constexpr std::string_view kHeader = "Error while parsing table header: cannot redefine existing table ";
  const bool header = description.starts_with(kHeader);
  if (!header && !description.starts_with(kKeyValue)) return {};
  const auto open = description.find('\'');
  if (open == std::string_view::npos || description.size() < open + 3 || description.back() != '\'') return {};
  const std::string key(description.substr(open + 1, description.size() - open - 2));
  auto said = [&](const std::string& first) {
    return header ? "[" + key + "] appears twice" + first + "; put its keys under one [" + key + "] header"
                  : key + " is set twice" + first + "; keep one";
  };
  // In an inline table ("wifi = { ssid = ..., ssid = ... }") the first one is on this line, inside it.
  const std::string_view here = source_line(text, line);
  if (here.substr(0, byte_of_column(here, column)).find('{') != std::string_view::npos) return said("");
  std::size_t cut = 0;
  for (std::size_t l = 1; l < line; ++l) {
    cut = text.find('\n', cut);
    if (cut == std::string_view::npos) return said("");
    ++cut;
  }
  constexpr std::string_view kProbe = "__rpi_provision_probe__";
  std::string before(text.substr(0, cut));
  if (!header) before += "\n" + std::string(kProbe) + " = 0\n";
  toml::table doc;
  try {
    doc = toml::parse(before);
  } catch (const toml::parse_error&) {
    return said("");
  }
  const toml::table* t = header ? &doc : table_holding(doc, kProbe);
  std::vector<std::string> parts;
  for (std::size_t start = 0;;) {
    const auto dot = key.find('.', start);
    parts.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  for (std::size_t i = 0; t && i + 1 < parts.size(); ++i) {
    const toml::node* n = t->get(parts[i]);
    t = n ? n->as_table() : nullptr;
  }
  if (!t) return said("");
  for (auto&& [k, v] : *t) {
    if (k.str() != parts.back()) continue;
    const auto& b = header && v.is_table() ? v.source().begin : k.source().begin;
    if (b.line == 0) break;
    return said(" (first at " + std::to_string(b.line) + ":" + std::to_string(b.column) + ")");
  }
  return said("");
}

// "UTF-16" or "UTF-32" when the text is in one of them: a byte-order mark, or
// ASCII with a NUL byte after (or before) every character; else empty.
std::string_view wide_encoding(std::string_view t) {
  using namespace std::string_view_literals;
  if (t.starts_with("\xFF\xFE\0\0"sv) || t.starts_with("\0\0\xFE\xFF"sv)) return "UTF-32";
  if (t.starts_with("\xFF\xFE"sv) || t.starts_with("\xFE\xFF"sv)) return "UTF-16";
  if (t.size() >= 4 &&
      ((t[0] != 0 && t[1] == 0 && t[2] != 0 && t[3] == 0) || (t[0] == 0 && t[1] != 0 && t[2] == 0 && t[3] != 0)))
    return "UTF-16";
  return {};
}

// Our message for a toml++ syntax error: the cases we recognise said plainly (an
// unquoted text value, a string without its closing quote), the others as toml++
// says them. Never any part of the value, which may be a secret.
std::string syntax_error_text(std::string_view description, std::string_view text, std::size_t line,
                              std::size_t column) {
  auto starts = [&](std::string_view p) { return description.substr(0, p.size()) == p; };
  auto has = [&](std::string_view p) { return description.find(p) != std::string_view::npos; };
  const std::string_view l = source_line(text, line);
  const std::size_t at = byte_of_column(l, column);

  if (starts("Encountered invalid utf-8"))
    return "this line holds text that is not UTF-8 (was the file saved as Latin-1 or Windows-1252?); save the spec "
           "as UTF-8";
  if (auto dup = duplicate_text(description, text, line, column); !dup.empty()) return dup;

  if ((starts("Error while parsing string:") && has("control characters")) ||
      (starts("Error while parsing literal string:") && has("control characters"))) {
    // A line break inside a one-line string: its closing quote is missing.
    if (at >= l.size() || (at + 1 == l.size() && l[at] == '\r'))
      return "the closing quote of this string is missing (a quoted value ends on the line it starts on; text of "
             "several lines goes in triple quotes)";
  }
  if ((starts("Error while parsing string:") || starts("Error while parsing literal string:")) && has("end-of-file"))
    return "the closing quote of this string is missing: it runs to the end of the file";

  // A number too large for TOML (64 bits), not a text: say so, with the range
  // of its key where the spec has one.
  // toml++ says a float beyond a double ("1e999") "could not be interpreted".
  bool huge_float = false;
  if (starts("Error while parsing floating-point:") && has("could not be interpreted")) {
    const auto q = description.find('\'');
    const auto q2 = q == std::string_view::npos ? q : description.find('\'', q + 1);
    if (q2 != std::string_view::npos) {
      const std::string_view num = description.substr(q + 1, q2 - q - 1);
      huge_float = num.find_first_not_of("0123456789+-._eE") == std::string_view::npos &&
                   num.find_first_of("eE") != std::string_view::npos && num.find_first_of("0123456789") == 0;
    }
  }
  if (has("is not representable in 64 bits") || huge_float) {
    std::string key;
    if (auto eq = l.rfind('=', std::min(at, l.size())); eq != std::string_view::npos) {
      const auto v = l.find_first_not_of(" \t", eq + 1);
      if (v != std::string_view::npos) key = bare_key_before(l, v);
    }
    const std::string last = key.substr(key.rfind('.') == std::string::npos ? 0 : key.rfind('.') + 1);
    static const std::map<std::string_view, std::string_view> kRanges = {
        {"uid", "between 1 and 65533"},
        {"priority", "between -2147483648 and 2147483647"},
        {"backup_limit", "between 0 and 1000"},
    };
    std::string msg = "number out of range: ";
    if (auto r = kRanges.find(last); r != kRanges.end()) return msg + key + " must be " + std::string(r->second);
    if (starts("Error while parsing floating-point:"))
      return msg + "too large for a TOML number" + (key.empty() ? "" : " (" + key + ")");
    return msg + (key.empty() ? "a TOML integer" : key + " (a TOML integer)") +
           " must be between -9223372036854775808 and 9223372036854775807";
  }
  std::string kind;
  if (starts("Error while parsing boolean:"))
    kind = "invalid value: only true and false go without quotes";
  else if (starts("Error while parsing floating-point:") || starts("Error while parsing decimal integer:"))
    kind = "invalid number";
  else if (starts("Error while parsing value: could not determine value type") ||
           starts("Error while parsing value: values may not begin with underscores")) {
    // Only a word: "x = @" or "x = =" are other mistakes.
    const unsigned char c = at < l.size() ? static_cast<unsigned char>(l[at]) : 0;
    if (std::isalnum(c) || c == '_' || c == '-' || c == '+' || c >= 0x80) kind = "invalid value: TOML has no bare text";
  }
  if (!kind.empty()) {
    const std::string key = bare_key_before(l, at);
    return kind + " (text needs quotes: " + (key.empty() ? "" : key + " = ") + "\"...\")";
  }
  return parse_error_text(description);
}

// Records each key and string of `n` holding a NUL character; true if any.
// `key`: the key `n` is under, for the message.
bool nul_strings(const toml::node& n, const std::string& key, Converter& c) {
  const std::string what = key.empty() ? "this text" : key;
  static const std::string kWhy = " holds a NUL character (\\u0000), which no file or setting can hold";
  bool found = false;
  if (const auto* t = n.as_table()) {
    for (auto&& [k, v] : *t) {
      const bool bad_key = k.str().find('\0') != std::string_view::npos;
      const std::string name = bad_key ? std::string() : std::string(k.str());
      if (bad_key) {
        c.record(k.source(), "this key" + kWhy);
        found = true;
      }
      found = nul_strings(v, name, c) || found;
    }
  } else if (const auto* a = n.as_array()) {
    for (const auto& e : *a) found = nul_strings(e, key, c) || found;
  } else if (const auto* str = n.as_string()) {
    if (str->get().find('\0') != std::string::npos) {
      c.record(n.source(), what + kWhy);
      found = true;
    }
  }
  return found;
}

std::shared_ptr<Spec::Impl> parse_impl(const std::string& text, const std::string& name, const fs::path& base_dir,
                                       const LoadOptions& options) {
  auto impl = std::make_shared<Spec::Impl>();
  impl->options = options;
  impl->name = name;
  impl->path = name;
  impl->base_dir = base_dir;
  // toml++ reads UTF-8 only (and skips a UTF-8 byte-order mark); Windows editors
  // may save UTF-16 ("Unicode"), which it would call an invalid UTF-8 sequence.
  if (auto enc = wide_encoding(text); !enc.empty())
    throw SpecErrors({{name + ":1:1: the spec is " + std::string(enc) + " text; save it as UTF-8", 1, 1, "", name}}, 0);
  try {
    impl->doc = toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    SpecProblem p{name + ":" + std::to_string(b.line) + ":" + std::to_string(b.column) + ": " +
                      shorten_quoted(syntax_error_text(e.description(), text, b.line, b.column)),
                  b.line, b.column, excerpt_of(text, line_shapes(text), nullptr, b.line), name};
    throw SpecErrors({std::move(p)}, 0);
  }
  impl->source = text;
  Converter c(*impl, impl->warnings);
  c.record_files_read(&impl->files_read);
  // A NUL ("\u0000") in any key or string: no file, name or setting can hold
  // one (C strings end at it), so it is refused here, for every value at once.
  try {
    if (nul_strings(impl->doc, "", c)) c.throw_found();
  } catch (const EnoughErrors&) {
    c.throw_found();
  }
  if (auto* hosts = impl->doc.get("hosts")) {
    if (!hosts->is_array_of_tables()) {
      c.record(hosts->source(), "[[hosts]] must be an array of tables");
      c.throw_found();
    }
    for (auto& e : *hosts->as_array()) impl->hosts.push_back(e.as_table());
  }
  if (auto* sys = impl->doc.get("system"); sys && sys->is_table())
    if (auto* hn = sys->as_table()->get("hostname"); hn && hn->is_string())
      impl->hostname_templated = checks::has_template(hn->as_string()->get());
  // Validate every card the file defines (the base alone when there are no hosts),
  // collecting the problems of all of them.
  std::set<std::string> names, macs;
  try {
    if (impl->hosts.empty()) {
      impl->alpine = c.convert(nullptr, 1, 0).alpine;
    } else {
      for (std::size_t i = 0; i < impl->hosts.size(); ++i) {
        auto h = c.convert(impl->hosts[i], static_cast<int>(i) + 1, static_cast<int>(i) + 1);
        impl->alpine = h.alpine;
        // A card with a problem is compared by what of it is known to be right:
        // a hostname that passed its checks, a mac (set only when valid).
        // Names are compared as DNS and mDNS do: ignoring case.
        if (c.hostname_ok() && !names.insert(ascii_lower(h.hostname)).second)
          c.record(impl->hosts[i]->source(), "hostname \"" + h.hostname + "\" is used by two [[hosts]] entries");
        if (!h.mac.empty() && !macs.insert(h.mac).second)
          c.record(impl->hosts[i]->source(), "mac " + h.mac + " is used by two [[hosts]] entries");
      }
    }
  } catch (const EnoughErrors&) {
  }
  c.throw_found();
  return impl;
}

// One card, its problems thrown.
HostConfig convert_checked(Converter& c, const toml::table* host, int n, int host_pos) {
  try {
    HostConfig h = c.convert(host, n, host_pos);
    c.throw_found();
    return h;
  } catch (const EnoughErrors&) {
    c.throw_found();
    throw;
  }
}

}  // namespace

Spec parse_spec(const std::string& text, const std::string& name, const fs::path& base_dir,
                const LoadOptions& options) {
  return Spec(parse_impl(text, name, base_dir, options));
}

Spec load_spec(const fs::path& path, const LoadOptions& options) {
  // Like { file = }: a regular file of at most 16 MiB (a FIFO would block, a folder reads as empty).
  FileRead r = read_regular_file(path);
  using F = FileRead::Failure;
  if (r.failure == F::not_regular) throw Error(Errc::spec, path.string() + ": the spec is not a regular file");
  if (r.failure == F::too_large) throw Error(Errc::spec, path.string() + ": the spec is larger than 16 MiB");
  if (r.failure != F::none)
    throw Error(Errc::spec, path.string() + ": cannot read the spec: " + read_failure_reason(r));
  auto base = path.parent_path();
  if (base.empty()) base = ".";
  auto impl = parse_impl(r.bytes, path.string(), base, options);
  impl->path = path;
  return Spec(impl);
}

HostConfig resolve_host(const Spec& spec, int n, const std::optional<std::string>& host_name) {
  const auto& impl = spec.impl();
  std::vector<Warning> scratch;
  Converter c(impl, scratch);
  if (host_name) {
    std::vector<std::string> known;
    for (std::size_t i = 0; i < impl.hosts.size(); ++i) {
      auto h = convert_checked(c, impl.hosts[i], static_cast<int>(i) + 1, static_cast<int>(i) + 1);
      if (ascii_lower(h.hostname) == ascii_lower(*host_name)) return h;
      known.push_back(h.hostname);
    }
    std::string msg = "no [[hosts]] entry has hostname \"" + *host_name + "\" in " + impl.name;
    std::vector<std::string_view> cands(known.begin(), known.end());
    if (auto best = checks::closest(*host_name, cands); !best.empty()) msg += " (did you mean '" + best + "'?)";
    throw Error(Errc::usage, msg);
  }
  if (n < 1) throw Error(Errc::usage, "card numbers start at 1 (--first " + std::to_string(n) + ")");
  if (static_cast<std::size_t>(n) <= impl.hosts.size())
    return convert_checked(c, impl.hosts[static_cast<std::size_t>(n) - 1], n, n);
  if (!impl.hosts.empty() && !impl.hostname_templated)
    throw Error(Errc::usage, "card " + std::to_string(n) + " is beyond the " + std::to_string(impl.hosts.size()) +
                                 " [[hosts]] entries of " + impl.name + " and [system].hostname has no {n} to name it");
  return convert_checked(c, nullptr, n, 0);
}

std::vector<HostConfig> resolve_hosts(const Spec& spec, int first, int count) {
  std::vector<HostConfig> out;
  for (int i = 0; i < count; ++i) out.push_back(resolve_host(spec, first + i));
  return out;
}

}  // namespace rpi::overlay
