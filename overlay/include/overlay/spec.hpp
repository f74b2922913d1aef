// The TOML spec (docs/spec.md): loading, validation with located errors,
// secrets, {n} templating and per-card [[hosts]] overrides.
//
// load_spec() parses and validates the whole file (every [[hosts]] entry is
// resolved once, so a bad entry fails early); resolve_host() turns it into the
// fully typed HostConfig of one card. A bad spec throws SpecErrors (an
// rpi::Error, Errc::spec) whose messages start "FILE:LINE:COL: ", each problem's
// file, line and column also given as data; a spec that cannot be read throws
// a plain rpi::Error. No message, and no excerpt of the
// spec, ever contains a secret value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rpi/error.hpp"

namespace rpi::overlay {

// One problem of a spec and where it is.
struct SpecProblem {
  std::string message;               // "FILE:LINE:COL: text", one line
  std::size_t line = 0, column = 0;  // 1-based; 0 when the problem has no place
  // The spec's line `line` as written (a tab as one space), to be shown under
  // the message with a caret at `column`. Empty when that line may hold a
  // secret (a psk, password, hash or a file's content, also inside a string
  // or array spanning lines), is not printable UTF-8, or is over 160 bytes.
  std::string excerpt;
  // FILE of the message: the spec's name as load_spec/parse_spec were given it.
  std::string file;
};

// A place in a spec, as data: where an entry is written, for an error or a
// warning about it found after loading (packages a repository lacks, a keymap
// the tarball lacks). The loader fills it in, `excerpt` by the rule of
// SpecProblem::excerpt.
struct Place {
  std::string file;                  // the spec's name as load_spec/parse_spec were given it
  std::size_t line = 0, column = 0;  // 1-based; 0 when there is no place (then `file` alone, or nothing)
  std::string excerpt;               // the spec's line `line`, fit to show; empty when it may hold a secret
  // "FILE:LINE:COL"; FILE when there is no line; "" when there is neither.
  std::string text() const;
  // The problem `message` is, at this place: `message` is its whole text, which
  // starts with text() + ": " (only that is shown: the place is data here).
  SpecProblem problem(std::string message) const;
};

// The place `line`:`column` of a spec whose text is `text`, named `name`, for
// a reader of the spec outside load_spec (fetch --spec reads [alpine] alone).
// Its excerpt follows the loader's rule: the text is parsed to find the lines
// of secrets (a text that does not parse: the rule for a syntax error).
Place place_in(std::string_view text, const std::string& name, std::size_t line, std::size_t column);

// The problems found in one spec (Errc::spec): one or several, each message
// "FILE:LINE:COL: message", in file order (line, then column), each place said
// once (a base table seen by every [[hosts]] entry included). At most kShown
// are kept; what() is their messages one per line, then more_text() when some
// were left out (a single problem's what() is its message).
class SpecErrors : public Error {
 public:
  static constexpr std::size_t kShown = 20;
  // `more`: problems found beyond `problems`; `at_least`: the search stopped
  // before the end of the spec, so there may be more still.
  SpecErrors(std::vector<SpecProblem> problems, std::size_t more, bool at_least = false);
  const std::vector<SpecProblem>& problems() const noexcept { return *problems_; }
  const std::vector<std::string>& messages() const noexcept { return *messages_; }
  std::size_t more() const noexcept { return more_; }
  // "… and 3 more errors" ("… and at least 3 more errors"); empty when none was left out.
  std::string more_text() const;

 private:
  // shared: copying an exception must not throw
  std::shared_ptr<const std::vector<SpecProblem>> problems_;
  std::shared_ptr<const std::vector<std::string>> messages_;
  std::size_t more_;
  bool at_least_;
};

// [alpine]: which release tarball the card is built from (used by fetch).
struct AlpineSource {
  std::string version = "latest-stable";  // "3.22", "3.22.1", "latest-stable", "edge"
  std::string arch = "aarch64";           // aarch64 | armv7 | armhf
  std::string mirror = "https://dl-cdn.alpinelinux.org/alpine";
  std::string tarball;  // path (resolved against the spec's folder) or URL; empty = resolve
  std::string sha256;   // lower-case hex; empty = unknown
  // Where [alpine].version is written, else the [alpine] table; no place
  // (Place::text() "") when the spec has neither: where an error about the
  // release the mirror lacks, or a warning about the tarball's, points.
  Place location;
  // "v3.22", "edge" or "latest-stable": the repository branch for version.
  std::string branch() const;
};

struct Interface {
  std::string name = "eth0";
  bool dhcp = true;
  std::string address;  // "192.168.1.20/24" when static
  std::string gateway;
  std::string ipv6 = "auto";  // auto | dhcp | off
};

struct Network {
  std::vector<Interface> interfaces;  // never empty after resolution (default: eth0 dhcp)
  std::vector<std::string> dns, search;
  std::string proxy;
};

// One Wi-Fi network: [wifi]'s own (ssid, psk, hidden, priority) or a
// [[wifi.networks]] entry.
struct WifiNetwork {
  std::string ssid;
  std::string psk;  // SECRET: the passphrase (8..63 chars) or already 64 hex digits
  // Only with MissingEnv::warn (`check`): the variable psk = { env = } names, not
  // set; psk is then empty and counts as given. Empty otherwise.
  std::string psk_unset_env;
  bool hidden = false;
  std::optional<std::int64_t> priority;  // wpa_supplicant's priority= (higher wins); unset: not written
  std::string entry;                     // "[wifi]" or "[[wifi.networks]]": where it was given
};

struct Wifi {
  bool enabled = false;  // true when [wifi] gives at least one network
  // In spec order: [wifi]'s own network first (when it has an ssid), then each
  // [[wifi.networks]] entry. SSIDs are unique.
  std::vector<WifiNetwork> networks;
  std::string country;  // for all networks
  std::string interface = "wlan0";
};

struct ApkKey {
  std::string name;     // file name under /etc/apk/keys
  std::string content;  // the public key
};

// The package a world entry names: "seatd" for "seatd", "seatd>=0.8" or "seatd@edge".
inline std::string package_name(const std::string& world_entry) {
  return world_entry.substr(0, world_entry.find_first_of("<>=~@"));
}
// The repository tag it asks for: "@edge" for "seatd@edge" or "seatd@edge>=0.8", else "".
inline std::string package_tag(const std::string& world_entry) {
  const auto at = world_entry.find('@');
  return at == std::string::npos ? std::string() : world_entry.substr(at, world_entry.find_first_of("<>=~", at) - at);
}

// A line of /etc/apk/repositories: its tag ("@edge", or "" for an untagged
// one) and its URL or path.
struct RepositoryLine {
  std::string tag, location;
};
inline RepositoryLine repository_line(const std::string& line) {
  if (line.rfind('@', 0) != 0) return {"", line};
  const auto sp = line.find(' ');
  return {line.substr(0, sp), sp == std::string::npos ? std::string() : line.substr(sp + 1)};
}

struct Apk {
  std::vector<std::string> packages;
  std::vector<Place> package_locations;   // where each of packages is written
  std::vector<std::string> repositories;  // empty = default (card apks + main + community)
  std::vector<ApkKey> keys;
  bool cache = false;
};

struct Services {
  std::vector<std::string> sysinit, boot, default_, shutdown, disable;
};

struct User {
  std::string name;
  int uid = 1000;
  std::vector<std::string> groups;
  std::string shell = "/bin/ash";
  std::string password;            // SECRET: plain text, hashed at build time
  std::string password_unset_env;  // as WifiNetwork::psk_unset_env, for password
  std::string password_hash;       // passed through
  std::vector<std::string> ssh_authorized_keys;
  bool admin = false;

  // A plain password is given (its variable may be unset in `check`).
  bool password_given() const { return !password.empty() || !password_unset_env.empty(); }
  // A password to log in with: a plain one, or a hash that is not locked
  // ("*", "!" or "!$6$…").
  bool has_password() const {
    return password_given() || (!password_hash.empty() && password_hash[0] != '*' && password_hash[0] != '!');
  }
};

struct Root {
  std::string password;            // SECRET
  std::string password_unset_env;  // as WifiNetwork::psk_unset_env, for password
  std::string password_hash;
  std::vector<std::string> ssh_authorized_keys;

  // A plain password is given (its variable may be unset in `check`).
  bool password_given() const { return !password.empty() || !password_unset_env.empty(); }
};

struct Ssh {
  bool enable = true;
  bool password_authentication = false;
  std::string permit_root_login = "prohibit-password";  // yes | no | prohibit-password | forced-commands-only
  std::string host_keys = "generate";                   // generate | first-boot
};

struct Ntp {
  bool enable = true;
  std::vector<std::string> servers;
};

struct File {
  std::string path;               // absolute path on the Pi
  std::string content;            // SECRET-capable
  std::string content_unset_env;  // as WifiNetwork::psk_unset_env, for content = { env = }
  unsigned mode = 0644;
  std::string owner = "root", group = "root";
};

struct Script {
  std::string name;
  bool first_boot = false;  // run = "first-boot" (else every boot)
  std::string content;
  std::string content_unset_env;  // as WifiNetwork::psk_unset_env, for content = { env = }
};

struct Lbu {
  std::string media = "mmcblk0p1";
  std::vector<std::string> include, exclude;
  int backup_limit = 0;
};

struct Boot {
  std::string label = "ALPINE";
  bool size_max = false;              // size = "max": the whole card
  std::optional<std::uint64_t> size;  // bytes; unset = automatic
  std::vector<std::string> cmdline;   // extra kernel parameters
  std::vector<std::string> config;    // usercfg.txt lines
  bool serial_console = false;
  std::string apkovl_url;  // when set the card carries no apkovl
};

struct Install {
  std::string mode = "diskless";  // diskless | sys
  std::string disk = "/dev/mmcblk0";
};

// Everything one card needs, with templates expanded and secrets resolved.
struct HostConfig {
  int index = 1;  // {n}
  std::string hostname, domain, timezone = "UTC", keymap, motd;
  Place keymap_location;  // where keymap is written
  std::string mac;        // lower-case colon form, or empty
  AlpineSource alpine;
  Network network;
  Wifi wifi;
  Apk apk;
  Services services;
  std::vector<User> users;
  Root root;
  Ssh ssh;
  Ntp ntp;
  std::vector<File> files;
  std::vector<Script> scripts;
  Lbu lbu;
  Boot boot;
  Install install;
  // Supplementary groups named by users that alpine-baselayout lacks (e.g. "seat"),
  // created with these gids (first free from 1100) so packages that add them at boot reuse them.
  std::vector<std::pair<std::string, unsigned>> extra_groups;
};

// Root's password login when [root] sets no password, hash or key: locked
// ("*") when an admin can log in (a password, or an SSH key without
// command="..." with sshd on, and a login shell) and become root with doas;
// else Alpine's empty password, the
// only way in left.
enum class RootLogin { as_configured, locked, empty_password };
RootLogin root_login(const HostConfig& h);

// What sshd makes of [root].ssh_authorized_keys: none given; usable for a
// login; unused because sshd is off; refused by permit_root_login ("no", or
// "forced-commands-only" with no command="..." key); or only running the
// forced commands of the keys that have one ("forced-commands-only").
enum class RootKeys { none, usable, sshd_off, refused, forced_commands };
RootKeys root_keys(const HostConfig& h);

struct Warning {
  std::string location;  // "FILE:LINE:COL"
  std::string message;
  // The place of `location` as data: the spec's name as load_spec was given
  // it, and its 1-based line and column.
  std::string file;
  std::size_t line = 0, column = 0;
  // The spec's line `line`, to be shown under the warning with a caret at
  // `column`: SpecProblem::excerpt's rule (empty when it may hold a secret).
  std::string excerpt;
  std::string text() const { return location + ": " + message; }
};

// A file the spec reads: the entry that names it ("[wifi].psk", "[[files]].source
// for /etc/x") and its path, relative ones resolved against the spec's folder.
struct SpecInput {
  std::string entry;
  std::filesystem::path path;
};

class Spec {
 public:
  struct Impl;
  explicit Spec(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

  const std::filesystem::path& path() const;
  // The [alpine] table without per-host overrides (one tarball per batch).
  const AlpineSource& alpine() const;
  // Number of [[hosts]] entries (0: no entries, any number of cards).
  int host_count() const;
  // True when [system].hostname contains {n}, so cards beyond the [[hosts]] list are named.
  bool hostname_templated() const;
  // Non-fatal findings: literal secrets, unknown groups created, etc.
  const std::vector<Warning>& warnings() const;
  // Every file its entries read, over all [[hosts]]: { file = } secrets, [[files]] and
  // [[scripts]] sources, [apk].keys (not [alpine].tarball: see alpine()). Never their content.
  const std::vector<SpecInput>& files_read() const;
  const Impl& impl() const { return *impl_; }

 private:
  std::shared_ptr<const Impl> impl_;
};

// What a `{ env = "NAME" }` secret whose variable is not set does.
enum class MissingEnv {
  fail,  // an error: building and planning need the value
  // A warning at the secret, for `check` without the secrets (CI, a colleague):
  // the secret counts as given (a password to log in with, a Wi-Fi psk), its
  // value is not checked, and its *_unset_env field names the variable. A
  // password or psk variable that is set but empty is treated the same (CI
  // systems pass a secret they do not have as an empty variable); an empty
  // content = { env = } is an empty file, as when building.
  warn,
};
struct LoadOptions {
  MissingEnv missing_env = MissingEnv::fail;
};

// Parses and validates; throws SpecErrors with every problem it found (a TOML
// syntax error comes alone: parsing stops there), or a plain rpi::Error
// (Errc::spec) "FILE: ..." when the file cannot be read. resolve_host() on the result
// follows the same options.
Spec load_spec(const std::filesystem::path& path, const LoadOptions& options = {});
// Same, from text; `name` is used in messages and `base_dir` for { file = } / source.
Spec parse_spec(const std::string& text, const std::string& name, const std::filesystem::path& base_dir,
                const LoadOptions& options = {});

// The configuration of card number `n` ({n}). With `host_name`, the [[hosts]]
// entry of that hostname (its position gives n). Otherwise the n-th [[hosts]]
// entry, or the base tables when there are none or n is beyond them and the
// hostname is templated. Throws Errc::spec (or SpecErrors) / Errc::usage.
HostConfig resolve_host(const Spec& spec, int n, const std::optional<std::string>& host_name = std::nullopt);
// Cards first .. first+count-1.
std::vector<HostConfig> resolve_hosts(const Spec& spec, int first, int count);

// A human summary of a card for `check`, every secret shown as "(secret)", or
// as "not set (env NAME)" when its variable was not set (MissingEnv::warn).
std::string summary(const HostConfig& host);

// The secrets of a card whose { env = } variable was not set (MissingEnv::warn):
// the entry ("[wifi].psk", "[[wifi.networks]].psk for staff", "[[users]].password for
// bob") and the variable's name.
struct UnsetSecret {
  std::string entry, variable;
};
std::vector<UnsetSecret> unset_secrets(const HostConfig& host);

}  // namespace rpi::overlay
