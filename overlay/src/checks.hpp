// Pure syntax checks for spec values (no I/O). Each returns an empty string when
// the value is fine, else the reason (never containing the value of a secret).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rpi::overlay {
struct HostConfig;
struct User;
}  // namespace rpi::overlay

namespace rpi::overlay::checks {

std::string hostname_label(std::string_view s);  // RFC 1123 label, <= 63 chars
std::string domain_name(std::string_view s);     // dot-separated labels
bool is_timezone(std::string_view s);
std::string package_name(std::string_view s);
std::string service_name(std::string_view s);
std::string user_name(std::string_view s);
std::string interface_name(std::string_view s);
std::string script_name(std::string_view s);
// Absolute path without "..", ".", empty components or a trailing '/'.
// The limits of names in the apkovl, as Linux (and busybox tar, which
// extracts nothing of an archive with a longer one) sets them: a file or
// folder name of at most 255 bytes, a path of at most 4095.
inline constexpr std::size_t kMaxName = 255;
inline constexpr std::size_t kMaxPath = 4095;
// Why `name` (one file name) or `path` (names joined by '/') is too long; "" when not.
std::string name_too_long(std::string_view name);
std::string path_too_long(std::string_view path);
std::string abs_path(std::string_view s);
std::optional<unsigned> octal_mode(std::string_view s);

struct Ip {
  int family = 0;  // 4 or 6
  unsigned char bytes[16] = {};
};
std::optional<Ip> parse_ip(std::string_view s);
struct Cidr {
  Ip ip;
  int prefix = 0;
};
std::optional<Cidr> parse_cidr(std::string_view s);
bool same_subnet(const Cidr& net, const Ip& ip);
std::string netmask4(int prefix);  // "255.255.255.0"

// "b8:27:eb:12:34:56" from any of "B8:27:EB:12:34:56", "b8-27-eb-12-34-56"; nullopt if invalid.
std::optional<std::string> normalize_mac(std::string_view s);
// Why a normalized MAC is no network card's own address ("the broadcast
// address", "all zeros", "a multicast address"), or "" when it may be one.
std::string mac_not_a_card(std::string_view normalized);
// One authorized_keys entry: [OPTIONS] TYPE BASE64 [COMMENT], checked as OpenSSH
// reads it (known options, a key type it accepts, strict base64, and a key blob of
// that type). The reason names what is wrong and which .pub line to paste.
std::string ssh_public_key(std::string_view s);
// Whether an authorized_keys entry (checked by ssh_public_key) has a
// command="..." option: sshd then runs that command instead of a shell.
bool ssh_key_forces_command(std::string_view s);
// A key entry for messages: its type and comment ("ssh-ed25519 me@laptop"),
// never its base64 nor its options.
std::string ssh_key_label(std::string_view s);
// Whether an authorized_keys entry holds one of the public keys shipped in
// rpi-provision's examples/ (compared by key data, whatever its options and
// comment): nobody has its private key, so it lets nobody in.
bool ssh_key_is_example(std::string_view s);
// Whether an authorized_keys entry can give someone a shell: no command="..."
// option, and not an example key.
bool ssh_key_opens_shell(std::string_view s);
// Interactive logins (a shell at the console or over SSH). Why user u gets
// none on card h, or "" when they can: a login shell, and a password (the
// console) or, with sshd on, an SSH key that opens a shell (ssh_key_opens_shell)
// on an account sshd does not take as locked (a password_hash starting with
// '!'; Alpine's OpenSSH has no PAM). The reason is a short clause for
// messages, e.g. "no password and no SSH key".
std::string no_login_reason(const HostConfig& h, const User& u);
// Whether root gets a shell: a password (a hash that is not locked, or
// Alpine's empty one, see root_login) at the console, or an SSH key sshd takes
// that opens a shell.
bool root_logs_in(const HostConfig& h);
// Whether anybody (root or a [[users]] entry) gets a shell on card h.
bool anyone_logs_in(const HostConfig& h);
// [system].keymap: "LAYOUT VARIANT" as in /usr/share/bkeymaps/LAYOUT/VARIANT.bmap.gz
// (kbd-bkeymaps), e.g. "us us" or "de de-nodeadkeys". Form only: the list of
// layouts depends on the xkeyboard-config Alpine built the package from.
std::string keymap(std::string_view s);
std::string url(std::string_view s, const std::vector<std::string_view>& schemes);

// The closest candidate: one that differs only in case, else within distance 2
// (or a prefix match), else empty.
std::string closest(std::string_view word, const std::vector<std::string_view>& candidates);
// The IANA zone a mistyped [system].timezone probably means ("Europe/Berln",
// "europe/berlin", "America/New York", "Berlin"), else empty.
std::string closest_timezone(std::string_view s);

// Expands {n} and {n:0W} (W = 1..9) with the card number; other braces are kept.
std::string expand_template(std::string_view s, int n);
bool has_template(std::string_view s);

}  // namespace rpi::overlay::checks
