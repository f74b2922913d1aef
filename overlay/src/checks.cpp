#include "checks.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "rpi/text.hpp"

namespace rpi::overlay::checks {

namespace {
bool alnum(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0;
}
bool all_of(std::string_view s, auto pred) {
  return std::all_of(s.begin(), s.end(), pred);
}
}  // namespace

std::string hostname_label(std::string_view s) {
  if (s.empty()) return "is empty";
  if (s.size() > 63) return "is longer than 63 characters";
  if (!all_of(s, [](char c) { return alnum(c) || c == '-'; }))
    return "may contain only letters, digits and '-' (RFC 1123)";
  if (s.front() == '-' || s.back() == '-') return "must not begin or end with '-'";
  return {};
}

std::string domain_name(std::string_view s) {
  if (s.size() > 253) return "is longer than 253 characters";
  std::size_t start = 0;
  while (true) {
    auto dot = s.find('.', start);
    auto label = s.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (auto why = hostname_label(label); !why.empty()) return "has a label that " + why;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return {};
}

static const char* const kZones[] = {
#include "zones.inc"
};

bool is_timezone(std::string_view s) {
  return std::binary_search(std::begin(kZones), std::end(kZones), s,
                            [](std::string_view a, std::string_view b) { return a < b; });
}

std::string package_name(std::string_view s) {
  // name[@tag][op version], e.g. "chromium", "py3-requests", "foo@testing", "bar>=1.2".
  if (s.empty()) return "is empty";
  std::size_t i = 0;
  auto name_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '+' || c == '-';
  };
  if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
    return "must start with a lower-case letter or digit";
  while (i < s.size() && name_char(s[i])) ++i;
  if (i < s.size() && s[i] == '@') {
    std::size_t j = ++i;
    while (i < s.size() && (alnum(s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.')) ++i;
    if (i == j) return "has an empty repository tag after '@'";
  }
  if (i < s.size() && (s[i] == '<' || s[i] == '>' || s[i] == '=' || s[i] == '~')) {
    while (i < s.size() && (s[i] == '<' || s[i] == '>' || s[i] == '=' || s[i] == '~')) ++i;
    std::size_t j = i;
    while (i < s.size() && (alnum(s[i]) || s[i] == '.' || s[i] == '_' || s[i] == '-' || s[i] == '+')) ++i;
    if (i == j) return "has a version constraint without a version";
  }
  if (i != s.size()) return "contains a character not allowed in an Alpine package name";
  return {};
}

std::string service_name(std::string_view s) {
  if (s.empty()) return "is empty";
  if (!alnum(s[0])) return "must start with a letter or digit";
  if (!all_of(s, [](char c) { return alnum(c) || c == '.' || c == '_' || c == '-'; }))
    return "may contain only letters, digits, '.', '_' and '-'";
  return {};
}

std::string user_name(std::string_view s) {
  if (s.empty()) return "is empty";
  if (s.size() > 32) return "is longer than 32 characters";
  if (!((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_')) return "must start with a lower-case letter or '_'";
  if (!all_of(s, [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'; }))
    return "may contain only lower-case letters, digits, '_' and '-'";
  return {};
}

std::string interface_name(std::string_view s) {
  if (s.empty() || s.size() > 15) return "must be 1 to 15 characters";
  if (!all_of(s, [](char c) { return alnum(c) || c == '.' || c == '_' || c == '-'; }))
    return "may contain only letters, digits, '.', '_' and '-'";
  return {};
}

std::string script_name(std::string_view s) {
  if (s.empty() || s.size() > 64) return "must be 1 to 64 characters";
  if (!all_of(s, [](char c) { return alnum(c) || c == '_' || c == '-'; }))
    return "may contain only letters, digits, '_' and '-'";
  return {};
}

std::string abs_path(std::string_view s) {
  if (s.empty() || s[0] != '/') return "must be an absolute path (start with '/')";
  if (s.size() == 1) return "must name a file, not '/'";
  if (s.back() == '/') return "must not end with '/'";
  std::size_t start = 1;
  while (start <= s.size()) {
    auto slash = s.find('/', start);
    auto comp = s.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (comp.empty()) return "must not contain '//'";
    if (comp == "..") return "must not contain '..'";
    if (comp == ".") return "must not contain '.' components";
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  if (!all_of(s, [](char c) { return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f; }))
    return "must not contain control characters";
  return {};
}

std::optional<unsigned> octal_mode(std::string_view s) {
  if (s.size() < 3 || s.size() > 4) return std::nullopt;
  unsigned v = 0;
  for (char c : s) {
    if (c < '0' || c > '7') return std::nullopt;
    v = v * 8 + static_cast<unsigned>(c - '0');
  }
  return v;
}

std::optional<Ip> parse_ip(std::string_view s) {
  std::string str(s);
  Ip ip;
  if (inet_pton(AF_INET, str.c_str(), ip.bytes) == 1) {
    ip.family = 4;
    return ip;
  }
  if (inet_pton(AF_INET6, str.c_str(), ip.bytes) == 1) {
    ip.family = 6;
    return ip;
  }
  return std::nullopt;
}

std::optional<Cidr> parse_cidr(std::string_view s) {
  auto slash = s.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto ip = parse_ip(s.substr(0, slash));
  if (!ip) return std::nullopt;
  auto p = s.substr(slash + 1);
  if (p.empty() || p.size() > 3 || !all_of(p, [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  int prefix = std::stoi(std::string(p));
  if (prefix > (ip->family == 4 ? 32 : 128)) return std::nullopt;
  return Cidr{*ip, prefix};
}

bool same_subnet(const Cidr& net, const Ip& ip) {
  if (net.ip.family != ip.family) return false;
  int bits = net.prefix;
  for (int i = 0; bits > 0; ++i, bits -= 8) {
    unsigned mask = bits >= 8 ? 0xffu : (0xffu << (8 - bits)) & 0xffu;
    if ((net.ip.bytes[i] & mask) != (ip.bytes[i] & mask)) return false;
  }
  return true;
}

std::string netmask4(int prefix) {
  std::uint32_t m = prefix == 0 ? 0 : 0xffffffffu << (32 - prefix);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%u.%u.%u.%u", m >> 24, (m >> 16) & 0xff, (m >> 8) & 0xff, m & 0xff);
  return buf;
}

std::optional<std::string> normalize_mac(std::string_view s) {
  if (s.size() != 17) return std::nullopt;
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (i % 3 == 2) {
      if (c != ':' && c != '-') return std::nullopt;
      if (c != s[2]) return std::nullopt;  // one separator style
      out += ':';
    } else {
      if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
  }
  return out;
}

std::string ssh_public_key(std::string_view s) {
  auto sp = s.find(' ');
  if (sp == std::string_view::npos) return "is not an OpenSSH public key (\"TYPE BASE64 [COMMENT]\")";
  auto type = s.substr(0, sp);
  static const std::string_view types[] = {"ssh-ed25519",
                                           "ssh-rsa",
                                           "ecdsa-sha2-nistp256",
                                           "ecdsa-sha2-nistp384",
                                           "ecdsa-sha2-nistp521",
                                           "sk-ssh-ed25519@openssh.com",
                                           "sk-ecdsa-sha2-nistp256@openssh.com"};
  // Options before the type ("from=..., ssh-ed25519 ...") are allowed in authorized_keys.
  bool known = std::find(std::begin(types), std::end(types), type) != std::end(types);
  if (!known && s.find(" ssh-") == std::string_view::npos && s.find(" ecdsa-") == std::string_view::npos &&
      s.find(" sk-") == std::string_view::npos)
    return "has an unknown key type";
  if (s.find('\n') != std::string_view::npos) return "must be a single line";
  return {};
}

std::string url(std::string_view s, const std::vector<std::string_view>& schemes) {
  for (auto sc : schemes) {
    if (s.substr(0, sc.size()) == sc && s.size() > sc.size()) {
      if (!all_of(s, [](char c) { return static_cast<unsigned char>(c) > 0x20 && c != 0x7f; }))
        return "must not contain spaces or control characters";
      return {};
    }
  }
  std::string list;
  for (auto sc : schemes) list += (list.empty() ? "" : ", ") + std::string(sc);
  return "must start with one of " + list;
}

std::string closest(std::string_view word, const std::vector<std::string_view>& candidates) {
  std::string best;
  std::size_t best_d = 3;
  for (auto c : candidates) {
    std::size_t d = rpi::edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  if (best.empty()) {
    // A shared stem of 4+ characters ("ssh_keys" -> "ssh_authorized_keys").
    std::size_t best_len = 3;
    for (auto c : candidates) {
      std::size_t l = 0;
      while (l < word.size() && l < c.size() && word[l] == c[l]) ++l;
      if (l > best_len) {
        best_len = l;
        best = c;
      }
    }
  }
  return best;
}

std::string expand_template(std::string_view s, int n) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    if (s.substr(i, 3) == "{n}") {
      out += std::to_string(n);
      i += 3;
    } else if (s.substr(i, 4) == "{n:0" && i + 6 <= s.size() && s[i + 4] >= '1' && s[i + 4] <= '9' && s[i + 5] == '}') {
      std::string num = std::to_string(n);
      std::size_t width = static_cast<std::size_t>(s[i + 4] - '0');
      if (num.size() < width) out.append(width - num.size(), '0');
      out += num;
      i += 6;
    } else {
      out += s[i++];
    }
  }
  return out;
}

bool has_template(std::string_view s) {
  return expand_template(s, 1) != expand_template(s, 2);
}

}  // namespace rpi::overlay::checks
