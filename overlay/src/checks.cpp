#include "checks.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "overlay/spec.hpp"
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
  if (auto why = name_too_long(s); !why.empty()) return why;
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

std::string name_too_long(std::string_view name) {
  if (name.size() <= kMaxName) return {};
  return "is " + std::to_string(name.size()) + " bytes long, and a file name may be at most " +
         std::to_string(kMaxName) + " bytes (busybox tar on the Pi would extract nothing of the apkovl)";
}

std::string path_too_long(std::string_view s) {
  if (s.size() > kMaxPath)
    return "is " + std::to_string(s.size()) + " bytes long, and a path may be at most " + std::to_string(kMaxPath) +
           " bytes (busybox tar on the Pi would extract nothing of the apkovl)";
  for (std::size_t start = 0; start < s.size();) {
    auto slash = s.find('/', start);
    if (slash == std::string_view::npos) slash = s.size();
    if (slash - start > kMaxName)
      return "has a name of " + std::to_string(slash - start) + " bytes (at byte " + std::to_string(start + 1) +
             "), and a file or folder name may be at most " + std::to_string(kMaxName) +
             " bytes (busybox tar on the Pi would extract nothing of the apkovl)";
    start = slash + 1;
  }
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
  return path_too_long(s);
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

std::string mac_not_a_card(std::string_view normalized) {
  if (normalized == "ff:ff:ff:ff:ff:ff") return "the broadcast address";
  if (normalized == "00:00:00:00:00:00") return "all zeros";
  // The lowest bit of the first octet set: a group (multicast) address.
  // The lowest bit of the first octet is that of its second hex digit.
  const char low = normalized.size() >= 2 ? normalized[1] : '0';
  const int digit = low >= 'a' ? low - 'a' + 10 : low - '0';
  if ((digit & 1) != 0) return "a multicast address: the first octet is odd";
  return {};
}

namespace {

// The key types OpenSSH accepts in authorized_keys, with the file ssh-keygen writes.
struct KeyKind {
  std::string_view type;
  std::string_view pub;
};
constexpr KeyKind kKeyKinds[] = {
    {"ssh-ed25519", "~/.ssh/id_ed25519.pub"},
    {"ssh-rsa", "~/.ssh/id_rsa.pub"},
    {"ecdsa-sha2-nistp256", "~/.ssh/id_ecdsa.pub"},
    {"ecdsa-sha2-nistp384", "~/.ssh/id_ecdsa.pub"},
    {"ecdsa-sha2-nistp521", "~/.ssh/id_ecdsa.pub"},
    {"sk-ssh-ed25519@openssh.com", "~/.ssh/id_ed25519_sk.pub"},
    {"sk-ecdsa-sha2-nistp256@openssh.com", "~/.ssh/id_ecdsa_sk.pub"},
};

const KeyKind* key_kind(std::string_view type) {
  for (const auto& k : kKeyKinds)
    if (k.type == type) return &k;
  return nullptr;
}

bool blank(char c) {
  return c == ' ' || c == '\t';
}
std::string_view skip_blanks(std::string_view s) {
  while (!s.empty() && blank(s.front())) s.remove_prefix(1);
  return s;
}
// The text up to the next space or tab.
std::string_view word(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size() && !blank(s[i])) ++i;
  return s.substr(0, i);
}
// At most 40 characters of a word from the entry, for a message.
std::string shown(std::string_view s) {
  return s.size() > 40 ? std::string(s.substr(0, 40)) + "…" : std::string(s);
}

// Strict base64 (RFC 4648, padded, no whitespace, zero bits after the last byte),
// as OpenSSH's decoder takes it; nullopt if it does not decode.
std::optional<std::string> base64_decode(std::string_view s) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (s.empty() || s.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(s.size() / 4 * 3);
  for (std::size_t i = 0; i < s.size(); i += 4) {
    const bool last = i + 4 == s.size();
    int v[4];
    int pad = 0;
    for (int j = 0; j < 4; ++j) {
      char c = s[i + static_cast<std::size_t>(j)];
      if (c == '=' && last && j >= 2) {
        v[j] = 0;
        ++pad;
        continue;
      }
      if (pad > 0) return std::nullopt;  // "=" then data
      v[j] = value(c);
      if (v[j] < 0) return std::nullopt;
    }
    std::uint32_t q = (static_cast<std::uint32_t>(v[0]) << 18) | (static_cast<std::uint32_t>(v[1]) << 12) |
                      (static_cast<std::uint32_t>(v[2]) << 6) | static_cast<std::uint32_t>(v[3]);
    if ((pad == 1 && (q & 0xff) != 0) || (pad == 2 && (q & 0xffff) != 0)) return std::nullopt;
    out += static_cast<char>(q >> 16);
    if (pad < 2) out += static_cast<char>((q >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(q & 0xff);
  }
  return out;
}

// The SSH wire format of a public key: a sequence of uint32 big-endian lengths,
// each followed by that many bytes.
class Wire {
 public:
  explicit Wire(std::string_view d) : d_(d) {}
  std::optional<std::string_view> field() {
    if (d_.size() < 4) return std::nullopt;
    std::uint32_t n = 0;
    for (int i = 0; i < 4; ++i) n = (n << 8) | static_cast<unsigned char>(d_[static_cast<std::size_t>(i)]);
    if (n > d_.size() - 4) return std::nullopt;
    auto f = d_.substr(4, n);
    d_.remove_prefix(4 + std::size_t{n});
    return f;
  }
  std::size_t left() const { return d_.size(); }

 private:
  std::string_view d_;
};

// authorized_keys options (sshd(8) "AUTHORIZED_KEYS FILE FORMAT"); sshd ignores a
// line with an option it does not know. Flags marked negatable also take "no-".
struct KeyOption {
  std::string_view name;
  bool value;      // name="..."
  bool negatable;  // no-name
};
constexpr KeyOption kKeyOptions[] = {
    {"agent-forwarding", false, true},
    {"cert-authority", false, false},
    {"command", true, false},
    {"environment", true, false},
    {"expiry-time", true, false},
    {"from", true, false},
    {"permitlisten", true, false},
    {"permitopen", true, false},
    {"port-forwarding", false, true},
    {"principals", true, false},
    {"pty", false, true},
    {"restrict", false, false},
    {"touch-required", false, true},
    {"tunnel", true, false},
    {"user-rc", false, true},
    {"verify-required", false, true},  // sshd also takes no-verify-required
    {"x11-forwarding", false, true},
};

// The length of the options field at the start of s (up to the first blank outside
// double quotes, where \" does not end a quote), or nullopt for an unterminated quote.
std::optional<std::size_t> options_length(std::string_view s) {
  bool quoted = false;
  std::size_t i = 0;
  for (; i < s.size() && (quoted || !blank(s[i])); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == '"')
      ++i;
    else if (s[i] == '"')
      quoted = !quoted;
  }
  if (quoted) return std::nullopt;
  return i;
}

// Why sshd would refuse these options, or empty. Values are never quoted back.
std::string check_options(std::string_view opts) {
  std::vector<std::string> spellings;  // every name sshd takes, "no-" forms too
  for (const auto& o : kKeyOptions) {
    spellings.emplace_back(o.name);
    if (o.negatable) spellings.push_back("no-" + std::string(o.name));
  }
  const std::vector<std::string_view> all(spellings.begin(), spellings.end());
  while (true) {
    std::size_t i = 0;
    while (i < opts.size() && opts[i] != '=' && opts[i] != ',') ++i;
    const std::string name = ascii_lower(opts.substr(0, i));
    const KeyOption* found = nullptr;
    bool negated = false;
    for (const auto& o : kKeyOptions) {
      if (name == o.name) found = &o;
      if (o.negatable && name.size() > 3 && name.compare(0, 3, "no-") == 0 && name.substr(3) == o.name) {
        found = &o;
        negated = true;
      }
    }
    if (!found) {
      if (name.empty()) return "has an empty option before the key (options are separated by single commas)";
      std::string msg = "has an unknown option \"" + shown(name) + "\" before the key, so sshd would ignore the key";
      if (auto best = closest(name, all); !best.empty()) msg += " (did you mean \"" + best + "\"?)";
      return msg;
    }
    opts.remove_prefix(i);
    if (found->value) {
      if (opts.empty() || opts[0] != '=' || opts.size() < 2 || opts[1] != '"')
        return "has the option " + name + " without a quoted value (write " + name + "=\"...\")";
      std::size_t j = 2;
      // Only \" escapes, as in sshd (a backslash before anything else is itself).
      while (j < opts.size() && opts[j] != '"')
        j += (opts[j] == '\\' && j + 1 < opts.size() && opts[j + 1] == '"') ? 2 : 1;
      if (j >= opts.size()) return "has the option " + name + " without its closing quote";
      opts.remove_prefix(j + 1);
    } else if (!opts.empty() && opts[0] == '=') {
      return "has the option " + std::string(negated ? "no-" : "") + std::string(found->name) +
             " with a value, which it does not take";
    }
    if (opts.empty()) return {};
    if (opts[0] != ',') return "has options that are not separated by commas before the key";
    opts.remove_prefix(1);
  }
}

// "is not a valid ssh-rsa key: WHY (paste the whole line of ~/.ssh/id_rsa.pub)".
std::string bad_key(const KeyKind& k, const std::string& why) {
  return "is not a valid " + std::string(k.type) + " key: " + why + " (paste the whole line of " + std::string(k.pub) +
         ")";
}

// The blob after its type string, for each type: the fields OpenSSH reads.
std::string check_key_fields(const KeyKind& k, Wire& w) {
  const std::string_view t = k.type;
  const std::string cut = bad_key(k, "its key data is cut short");
  if (t == "ssh-ed25519" || t == "sk-ssh-ed25519@openssh.com") {
    auto pk = w.field();
    if (!pk) return cut;
    if (pk->size() != 32) return bad_key(k, "its key is " + std::to_string(pk->size()) + " bytes, not 32");
  } else if (t == "ssh-rsa") {
    for (const char* what : {"exponent", "modulus"}) {
      auto mp = w.field();
      if (!mp) return cut;
      if (!mp->empty() && (static_cast<unsigned char>(mp->front()) & 0x80) != 0)
        return bad_key(k, std::string("its ") + what + " is negative");
      if (std::string_view(what) == "modulus") {
        while (!mp->empty() && mp->front() == '\0') mp->remove_prefix(1);
        std::size_t bits = mp->empty() ? 0 : (mp->size() - 1) * 8;
        for (unsigned b = mp->empty() ? 0u : static_cast<unsigned char>(mp->front()); b != 0; b >>= 1) ++bits;
        if (bits < 1024)
          return "is an RSA key of " + std::to_string(bits) +
                 " bits, which OpenSSH refuses (it needs at least 1024): make a new key with ssh-keygen -t ed25519";
        if (bits > 16384) return bad_key(k, "its modulus is longer than the 16384 bits OpenSSH reads");
      }
    }
  } else {  // ecdsa-sha2-nistpNNN and sk-ecdsa-sha2-nistp256@openssh.com
    const bool sk = t.substr(0, 3) == "sk-";
    const std::string_view curve = sk ? "nistp256" : t.substr(std::string_view("ecdsa-sha2-").size());
    auto c = w.field();
    if (!c) return cut;
    if (*c != curve) {
      const bool printable = !c->empty() && c->size() <= 16 && all_of(*c, [](char ch) { return alnum(ch); });
      return printable ? "says " + std::string(t) + " but holds a key on the curve " + std::string(*c) +
                             " (paste the whole line of " + std::string(k.pub) + ")"
                       : bad_key(k, "its key data does not name the curve " + std::string(curve));
    }
    const std::size_t coord = curve == "nistp256" ? 32 : curve == "nistp384" ? 48 : 66;
    auto q = w.field();
    if (!q) return cut;
    if (q->size() != 1 + 2 * coord || q->front() != '\x04')
      return bad_key(
          k, "its public point is not the " + std::to_string(1 + 2 * coord) + "-byte uncompressed form OpenSSH reads");
  }
  if (t.substr(0, 3) == "sk-" && !w.field()) return cut;  // the application, e.g. "ssh:"
  if (w.left() != 0) return bad_key(k, std::to_string(w.left()) + " bytes follow the key");
  return {};
}

// TYPE BASE64 [COMMENT], TYPE one of kKeyKinds or ssh-dss.
std::string check_key(std::string_view type, std::string_view rest) {
  if (type == "ssh-dss")
    return "is a DSA key (ssh-dss), which OpenSSH no longer accepts: make an Ed25519 key with ssh-keygen -t "
           "ed25519 and paste the whole line of ~/.ssh/id_ed25519.pub";
  const KeyKind& k = *key_kind(type);
  const std::string paste = "paste the whole line of " + std::string(k.pub);
  const std::string_view b64 = word(skip_blanks(rest));
  if (b64.empty()) return "has no key after " + std::string(type) + " (" + paste + ")";
  if (b64.find("...") != std::string_view::npos || b64.find("…") != std::string_view::npos)
    return "is a placeholder (AAAA...), not a key: replace it with your public key, the whole line of " +
           std::string(k.pub);
  auto blob = base64_decode(b64);
  if (!blob) return "is not a public key: its base64 does not decode (" + paste + ")";
  Wire w(*blob);
  auto inner = w.field();
  if (!inner) {
    const bool length_like = blob->size() >= 3 && (*blob)[0] == '\0' && (*blob)[1] == '\0' && (*blob)[2] == '\0';
    return std::string("is not a public key: its key data ") +
           (length_like ? "is cut short" : "does not begin with a key type") + " (" + paste + ")";
  }
  if (*inner != type) {
    const bool named = !inner->empty() && inner->size() <= 64 && all_of(*inner, [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '@' || c == '.';
    });
    if (!named)
      return "is not a public key: its key data does not begin with the key type " + std::string(type) + " (" + paste +
             ")";
    return "says " + std::string(type) + " but holds an " + std::string(*inner) + " key (write " + std::string(*inner) +
           " before the base64, or paste the whole line of the key's .pub file)";
  }
  return check_key_fields(k, w);
}

std::string unknown_type(std::string_view type) {
  std::vector<std::string_view> types;
  for (const auto& k : kKeyKinds) types.push_back(k.type);
  std::string msg = "has an unknown key type \"" + shown(type) + "\"";
  if (auto best = closest(ascii_lower(type), types); !best.empty()) return msg + " (did you mean \"" + best + "\"?)";
  msg += " (OpenSSH takes ";
  for (std::size_t i = 0; i < types.size(); ++i) msg += std::string(i ? ", " : "") + std::string(types[i]);
  return msg + ")";
}

bool is_type(std::string_view w) {
  return key_kind(w) != nullptr || w == "ssh-dss";
}

}  // namespace

std::string ssh_public_key(std::string_view s) {
  if (s.find_first_of("\r\n") != std::string_view::npos) return "must be one line (one key per array entry)";
  if (!all_of(s, [](char c) { return c == '\t' || (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f); }))
    return "must not contain control characters";
  const std::string_view line = skip_blanks(s);
  if (line.empty()) return "is empty (paste the whole line of ~/.ssh/id_ed25519.pub)";
  if (line.front() == '#') return "is a comment, not a key (paste the whole line of ~/.ssh/id_ed25519.pub)";
  const std::string_view first = word(line);
  if (is_type(first)) return check_key(first, line.substr(first.size()));
  if (first.substr(0, 4) == "AAAA")
    return "has no key type before its base64 (paste the whole line of ~/.ssh/id_ed25519.pub, which begins with "
           "it)";
  // Options come first ("from=\"10.0.0.0/8\",no-pty ssh-ed25519 ..."), or the type is misspelt.
  auto len = options_length(line);
  if (!len) return "has options with an unterminated quote before the key";
  const std::string_view opts = line.substr(0, *len);
  const std::string_view after = skip_blanks(line.substr(*len));
  const std::string_view second = word(after);
  const std::string opts_why = check_options(opts);
  if (opts_why.empty()) {
    if (is_type(second)) return check_key(second, after.substr(second.size()));
    if (second.empty()) return "has options but no key after them (paste the whole line of ~/.ssh/id_ed25519.pub)";
    if (second.substr(0, 4) == "AAAA")
      return "has no key type before its base64 (paste the whole line of ~/.ssh/id_ed25519.pub, which begins with "
             "it)";
    return unknown_type(second);
  }
  if (is_type(second)) return opts_why;
  const bool type_like = second.substr(0, 4) == "AAAA" || first.substr(0, 4) == "ssh-" ||
                         first.substr(0, 6) == "ecdsa-" || first.substr(0, 3) == "sk-";
  if (type_like) return unknown_type(first);
  if (first.find_first_of("=\",") != std::string_view::npos) return opts_why;
  return "is not an OpenSSH public key (TYPE BASE64 [COMMENT]): paste the whole line of ~/.ssh/id_ed25519.pub";
}

bool ssh_key_forces_command(std::string_view s) {
  const std::string_view line = skip_blanks(s);
  if (is_type(word(line))) return false;  // no options
  const auto len = options_length(line);
  if (!len) return false;
  std::string_view opts = line.substr(0, *len);
  // Options are separated by commas outside double quotes; sshd matches names without case.
  while (!opts.empty()) {
    std::size_t i = 0;
    while (i < opts.size() && opts[i] != '=' && opts[i] != ',') ++i;
    if (ascii_lower(opts.substr(0, i)) == "command") return true;
    bool quoted = false;
    for (; i < opts.size() && (quoted || opts[i] != ','); ++i) {
      if (opts[i] == '\\' && i + 1 < opts.size() && opts[i + 1] == '"')
        ++i;
      else if (opts[i] == '"')
        quoted = !quoted;
    }
    opts.remove_prefix(i < opts.size() ? i + 1 : i);
  }
  return false;
}

std::string ssh_key_label(std::string_view s) {
  std::string_view line = skip_blanks(s);
  if (!is_type(word(line))) {
    const auto len = options_length(line);
    line = skip_blanks(line.substr(len ? *len : line.size()));
  }
  const std::string_view type = word(line);
  const std::string_view rest = skip_blanks(line.substr(type.size()));
  std::string_view comment = skip_blanks(rest.substr(word(rest).size()));
  while (!comment.empty() && blank(comment.back())) comment.remove_suffix(1);
  return std::string(type) + (comment.empty() ? " (no comment)" : " " + std::string(comment));
}

namespace {
// The public keys in rpi-provision's own examples (examples/*.toml), by their
// base64 key data: a spec copied from an example keeps them until its user
// puts their own key in. spec_test checks that every key in examples/,
// README.md and docs/ is listed here.
constexpr std::string_view kExampleKeys[] = {
    "AAAAC3NzaC1lZDI1NTE5AAAAIHeLguboJt2OAmYzeA/Z4TVxebKDh2PkgXgHJPUhfUjq",  // admin@example
    "AAAAC3NzaC1lZDI1NTE5AAAAIC9rEgY6ab8O/+grY8f9RMuELezi+3sHCxBW+rmCmdjP",  // teacher@school.example
};
}  // namespace

bool ssh_key_is_example(std::string_view s) {
  std::string_view line = skip_blanks(s);
  if (!is_type(word(line))) {
    const auto len = options_length(line);
    line = skip_blanks(line.substr(len ? *len : line.size()));
  }
  const std::string_view rest = skip_blanks(line.substr(word(line).size()));
  const std::string_view b64 = word(rest);
  return std::find(std::begin(kExampleKeys), std::end(kExampleKeys), b64) != std::end(kExampleKeys);
}

bool ssh_key_opens_shell(std::string_view s) {
  return !ssh_key_forces_command(s) && !ssh_key_is_example(s);
}

std::string keymap(std::string_view s) {
  // kbd-bkeymaps (aports main/kbd) makes one map per xkeyboard-config layout and
  // layout-variant and stores it as LAYOUT/NAME.bmap.gz, LAYOUT being NAME up to its
  // first '-': so NAME is LAYOUT itself or "LAYOUT-XKBVARIANT". Finnish alone is
  // renamed fi-kotoistus.
  const std::string form = "(LAYOUT VARIANT, the file /usr/share/bkeymaps/LAYOUT/VARIANT.bmap.gz)";
  if (s.empty()) return "is empty: leave it out for the kernel's default (US), or write e.g. \"de de-nodeadkeys\"";
  auto word_ok = [](std::string_view w) { return all_of(w, [](char c) { return alnum(c) || c == '-' || c == '_'; }); };
  const std::string two_words =
      "must be two words separated by one space " + form + ", e.g. \"us us\" or \"de de-nodeadkeys\"";
  if (s.find_first_of("\t\n\r\v\f") != std::string_view::npos) return two_words;
  auto sp = s.find(' ');
  if (sp == std::string_view::npos) {
    if (auto open = s.find('('); open != std::string_view::npos && open > 0 && s.back() == ')') {
      auto layout = s.substr(0, open), variant = s.substr(open + 1, s.size() - open - 2);
      if (word_ok(layout) && !variant.empty() && word_ok(variant))
        return "is in X11's form; Alpine's is \"" + std::string(layout) + " " + std::string(layout) + "-" +
               std::string(variant) + "\" " + form;
    }
    if (!word_ok(s)) return "may contain only letters, digits, '_' and '-' in its two words " + form;
    auto dash = s.find('-');
    if (dash == std::string_view::npos)
      return "needs a variant too: write \"" + std::string(s) + " " + std::string(s) + "\" for the plain layout " +
             form;
    return "needs the layout first: write \"" + std::string(s.substr(0, dash)) + " " + std::string(s) + "\" " + form;
  }
  auto layout = s.substr(0, sp), variant = s.substr(sp + 1);
  if (layout.empty() || variant.empty() || variant.find(' ') != std::string_view::npos) return two_words;
  if (!word_ok(layout) || !word_ok(variant))
    return "may contain only letters, digits, '_' and '-' in its two words " + form;
  if (layout.find('-') != std::string_view::npos)
    return "has a layout with a '-'; the layout is the part of the variant before its first '-', e.g. \"de "
           "de-nodeadkeys\"";
  if (!all_of(layout, [](char c) { return !(c >= 'A' && c <= 'Z'); })) {
    std::string l(layout), v(variant);
    for (char& c : l) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    auto vdash = v.find('-');
    for (std::size_t i = 0; i < v.size() && i < vdash; ++i)
      v[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(v[i])));
    return "has a layout with capitals; layouts are lower-case: write \"" + l + " " + v + "\"";
  }
  if (variant == layout && layout == "fi")
    return "names a map kbd-bkeymaps does not have: Alpine ships the plain Finnish layout as \"fi fi-kotoistus\"";
  if (variant == layout || (variant.size() > layout.size() + 1 && variant.substr(0, layout.size()) == layout &&
                            variant[layout.size()] == '-'))
    return {};
  auto vdash = variant.find('-');
  if (vdash == std::string_view::npos)
    return "has a variant that does not begin with its layout: write \"" + std::string(layout) + " " +
           std::string(layout) + "-" + std::string(variant) + "\" (or \"" + std::string(layout) + " " +
           std::string(layout) + "\" for the plain layout) " + form;
  return "has the variant " + std::string(variant) + ", which belongs to the layout " +
         std::string(variant.substr(0, vdash)) + ": write \"" + std::string(variant.substr(0, vdash)) + " " +
         std::string(variant) + "\" " + form;
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
  // "SSID" for "ssid": the same word in other letters' case.
  for (auto c : candidates)
    if (ascii_lower(word) == ascii_lower(c)) return std::string(c);
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

std::string closest_timezone(std::string_view s) {
  // Compared in lower case, with spaces as the underscores IANA names use.
  auto norm = [](std::string_view z) {
    std::string out = ascii_lower(z);
    std::replace(out.begin(), out.end(), ' ', '_');
    return out;
  };
  const std::string want = norm(s);
  if (want.empty()) return {};
  for (const char* z : kZones)
    if (norm(z) == want) return z;
  // The city alone: "Berlin" for "Europe/Berlin".
  if (want.find('/') == std::string::npos)
    for (const char* z : kZones) {
      const std::string_view zone(z);
      const auto slash = zone.rfind('/');
      if (slash != std::string_view::npos && norm(zone.substr(slash + 1)) == want) return z;
    }
  std::string best;
  std::size_t best_d = 3;
  for (const char* z : kZones) {
    const std::size_t d = rpi::edit_distance(want, norm(z));
    if (d < best_d) {
      best_d = d;
      best = z;
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

std::string no_login_reason(const HostConfig& h, const User& u) {
  for (const char* refuses : {"/nologin", "/false", "/true"})
    if (u.shell.ends_with(refuses)) return "shell " + u.shell + " refuses logins";
  if (u.has_password()) return {};
  const auto& keys = u.ssh_authorized_keys;
  if (keys.empty()) return "no password and no SSH key";
  if (!h.ssh.enable) return "SSH keys only, and sshd is off ([ssh].enable = false)";
  if (u.password_hash.starts_with("!")) return "password_hash starts with '!', so sshd refuses its SSH keys";
  if (std::all_of(keys.begin(), keys.end(), [](const std::string& k) { return ssh_key_forces_command(k); }))
    return "every SSH key forces a command=\"...\", so no shell";
  if (std::all_of(keys.begin(), keys.end(), [](const std::string& k) { return ssh_key_is_example(k); }))
    return keys.size() == 1
               ? "no password, and its SSH key is rpi-provision's example key, whose private key nobody has"
               : "no password, and its SSH keys are rpi-provision's example keys, whose private keys "
                 "nobody has";
  if (std::none_of(keys.begin(), keys.end(), [](const std::string& k) { return ssh_key_opens_shell(k); }))
    return "no password, and every SSH key forces a command=\"...\" or is rpi-provision's example key";
  return {};
}

bool root_logs_in(const HostConfig& h) {
  const auto& ph = h.root.password_hash;
  const bool locked = !ph.empty() && (ph[0] == '*' || ph[0] == '!');
  if (h.root.password_given() || (!ph.empty() && !locked)) return true;  // the console
  if (root_login(h) == RootLogin::empty_password) return true;           // Alpine's empty password, ditto
  // A command="..." option forces its command whatever permit_root_login says.
  const auto& keys = h.root.ssh_authorized_keys;
  return root_keys(h) == RootKeys::usable && !ph.starts_with("!") &&
         std::any_of(keys.begin(), keys.end(), [](const std::string& k) { return ssh_key_opens_shell(k); });
}

bool anyone_logs_in(const HostConfig& h) {
  return root_logs_in(h) ||
         std::any_of(h.users.begin(), h.users.end(), [&](const User& u) { return no_login_reason(h, u).empty(); });
}

bool has_template(std::string_view s) {
  return expand_template(s, 1) != expand_template(s, 2);
}

}  // namespace rpi::overlay::checks
