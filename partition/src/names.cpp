#include <cwctype>
#include <stdexcept>

#include "partition/fat_names.hpp"

namespace rpi::partition::fatname {

namespace {

constexpr std::string_view kForbiddenLong = "\\/:*?\"<>|";
constexpr std::string_view kReplacedInShort = "+,;=[]";

bool is_short_char(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  if (u >= 'A' && u <= 'Z') return true;
  if (u >= '0' && u <= '9') return true;
  return std::string_view("$%'-_@~`!(){}^#&").find(c) != std::string_view::npos;
}

bool is_reserved_device(std::string_view base) {
  static const char* names[] = {"CON", "PRN", "AUX", "NUL"};
  for (const char* n : names)
    if (base == n) return true;
  if (base.size() == 4 && (base.substr(0, 3) == "COM" || base.substr(0, 3) == "LPT") && base[3] >= '1' &&
      base[3] <= '9')
    return true;
  return false;
}

// FNV-1a over the UTF-16 code units: the source of the hashed tail.
std::uint32_t name_hash(std::string_view name) {
  std::u16string u = to_utf16(name);
  std::uint32_t h = 2166136261u;
  for (char16_t c : u) {
    h ^= static_cast<std::uint32_t>(c & 0xFF);
    h *= 16777619u;
    h ^= static_cast<std::uint32_t>(c >> 8);
    h *= 16777619u;
  }
  return h;
}

}  // namespace

std::optional<std::string> invalid_reason(std::string_view name) {
  if (name.empty()) return "an empty name";
  if (name == "." || name == "..") return "'" + std::string(name) + "' is not a file name";
  for (char c : name) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) return "a control character";
    if (kForbiddenLong.find(c) != std::string_view::npos)
      return std::string("the character '") + c + "', which FAT cannot store";
  }
  if (name.back() == '.' || name.back() == ' ') return "a trailing dot or space, which FAT drops";
  std::u16string u;
  try {
    u = to_utf16(name);
  } catch (const std::invalid_argument&) {
    return "bytes that are not valid UTF-8";
  }
  if (u.size() > 255) return "more than 255 characters";
  return std::nullopt;
}

std::u16string to_utf16(std::string_view s) {
  std::u16string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    std::uint32_t cp;
    std::size_t len;
    if (c < 0x80) {
      cp = c;
      len = 1;
    } else if ((c & 0xE0) == 0xC0) {
      cp = c & 0x1F;
      len = 2;
    } else if ((c & 0xF0) == 0xE0) {
      cp = c & 0x0F;
      len = 3;
    } else if ((c & 0xF8) == 0xF0) {
      cp = c & 0x07;
      len = 4;
    } else {
      throw std::invalid_argument("bad UTF-8");
    }
    if (i + len > s.size()) throw std::invalid_argument("bad UTF-8");
    for (std::size_t k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) throw std::invalid_argument("bad UTF-8");
      cp = (cp << 6) | (cc & 0x3F);
    }
    static const std::uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      throw std::invalid_argument("bad UTF-8");
    if (cp >= 0x10000) {
      cp -= 0x10000;
      out.push_back(static_cast<char16_t>(0xD800 + (cp >> 10)));
      out.push_back(static_cast<char16_t>(0xDC00 + (cp & 0x3FF)));
    } else {
      out.push_back(static_cast<char16_t>(cp));
    }
    i += len;
  }
  return out;
}

std::u16string fold_case(const std::u16string& name) {
  std::u16string out = name;
  for (char16_t& c : out) {
    if (c >= u'a' && c <= u'z')
      c = static_cast<char16_t>(c - 32);
    else if (c >= 0x80 && (c < 0xD800 || c > 0xDFFF))
      c = static_cast<char16_t>(std::towupper(static_cast<wint_t>(c)));
  }
  return out;
}

bool is_plain_short(std::string_view name) {
  std::size_t dot = name.find('.');
  std::string_view base = name.substr(0, dot);
  std::string_view ext = dot == std::string_view::npos ? std::string_view() : name.substr(dot + 1);
  if (base.empty() || base.size() > 8 || ext.size() > 3) return false;
  if (dot != std::string_view::npos && ext.empty()) return false;
  for (char c : base)
    if (!is_short_char(c)) return false;
  for (char c : ext)
    if (!is_short_char(c)) return false;
  return !is_reserved_device(base);
}

ShortNameResult make_short_name(std::string_view name, const std::function<bool(const ShortName&)>& taken) {
  // The basis name: upper case ASCII, spaces and extra dots dropped, characters
  // a short name cannot hold replaced by '_' ("lossy": then a tail is needed).
  bool lossy = false;
  std::string_view rest = name;
  while (!rest.empty() && rest.front() == '.') {
    rest.remove_prefix(1);
    lossy = true;
  }
  std::size_t last_dot = rest.rfind('.');
  std::string_view base_src = rest.substr(0, last_dot);
  std::string_view ext_src = last_dot == std::string_view::npos ? std::string_view() : rest.substr(last_dot + 1);
  auto convert = [&lossy](std::string_view src, std::size_t max) {
    std::string out;
    for (std::size_t i = 0; i < src.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(src[i]);
      char mapped;
      if (c == ' ' || c == '.') {
        lossy = true;
        continue;
      }
      if (c >= 0x80) {
        while (i + 1 < src.size() && (static_cast<unsigned char>(src[i + 1]) & 0xC0) == 0x80) ++i;
        mapped = '_';
        lossy = true;
      } else if (c >= 'a' && c <= 'z') {
        mapped = static_cast<char>(c - 32);
      } else if (kReplacedInShort.find(static_cast<char>(c)) != std::string_view::npos) {
        mapped = '_';
        lossy = true;
      } else {
        mapped = static_cast<char>(c);
      }
      if (out.size() == max) {
        lossy = true;  // does not fit 8.3
        break;
      }
      out.push_back(mapped);
    }
    return out;
  };
  std::string base = convert(base_src, 8);
  std::string ext = convert(ext_src, 3);
  if (base.empty()) {
    base = "_";
    lossy = true;
  }
  if (is_reserved_device(base)) lossy = true;

  auto compose = [&](const std::string& b) {
    ShortName sn;
    sn.fill(' ');
    for (std::size_t i = 0; i < b.size() && i < 8; ++i) sn[i] = b[i];
    for (std::size_t i = 0; i < ext.size(); ++i) sn[8 + i] = ext[i];
    return sn;
  };

  const bool plain = is_plain_short(name);
  if (!lossy) {
    ShortName sn = compose(base);
    if (!taken(sn)) return {sn, !plain};
  }
  for (int n = 1; n <= 4; ++n) {
    std::string tail = "~" + std::to_string(n);
    ShortName sn = compose(base.substr(0, 8 - tail.size()) + tail);
    if (!taken(sn)) return {sn, true};
  }
  static const char* hex = "0123456789ABCDEF";
  std::uint32_t h = name_hash(name);
  for (std::uint32_t attempt = 0; attempt < 65536; ++attempt) {
    std::uint32_t v = (h + attempt * 2654435761u) & 0xFFFF;
    std::string stem = base.substr(0, 2);
    for (int shift = 12; shift >= 0; shift -= 4) stem.push_back(hex[(v >> shift) & 15]);
    for (int n = 1; n <= 9; ++n) {
      ShortName sn = compose(stem + "~" + std::to_string(n));
      if (!taken(sn)) return {sn, true};
    }
  }
  throw std::runtime_error("no free short name for " + std::string(name));
}

std::uint8_t lfn_checksum(const ShortName& name) {
  std::uint8_t sum = 0;
  for (char c : name) sum = static_cast<std::uint8_t>(((sum & 1) << 7) + (sum >> 1) + static_cast<std::uint8_t>(c));
  return sum;
}

std::size_t lfn_slot_count(const std::u16string& name) {
  return (name.size() + 12) / 13;
}

void append_lfn_slots(std::vector<std::uint8_t>& out, const std::u16string& name, std::uint8_t checksum) {
  static const int pos[13] = {1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30};
  std::size_t n = lfn_slot_count(name);
  for (std::size_t slot = n; slot >= 1; --slot) {
    std::uint8_t e[32] = {};
    e[0] = static_cast<std::uint8_t>(slot | (slot == n ? 0x40 : 0));
    e[11] = 0x0F;
    e[13] = checksum;
    for (int k = 0; k < 13; ++k) {
      std::size_t idx = (slot - 1) * 13 + static_cast<std::size_t>(k);
      std::uint16_t ch;
      if (idx < name.size())
        ch = name[idx];
      else if (idx == name.size())
        ch = 0x0000;
      else
        ch = 0xFFFF;
      e[pos[k]] = static_cast<std::uint8_t>(ch & 0xFF);
      e[pos[k] + 1] = static_cast<std::uint8_t>(ch >> 8);
    }
    out.insert(out.end(), e, e + 32);
  }
}

std::string printable(std::string_view name) {
  std::string out;
  for (char c : name) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out.push_back(hex[u >> 4]);
      out.push_back(hex[u & 15]);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string short_name_text(const ShortName& name) {
  std::string base(name.begin(), name.begin() + 8);
  std::string ext(name.begin() + 8, name.end());
  while (!base.empty() && base.back() == ' ') base.pop_back();
  while (!ext.empty() && ext.back() == ' ') ext.pop_back();
  return ext.empty() ? base : base + "." + ext;
}

}  // namespace rpi::partition::fatname
