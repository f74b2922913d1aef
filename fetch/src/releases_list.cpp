// Reading an autoindex page (nginx, Apache, lighttpd): the links it lists.
// Pure text functions; list_releases (fetch.cpp) asks the mirror.
#include <cctype>
#include <string>
#include <string_view>
#include <vector>

#include "fetch/fetch.hpp"

namespace rpi::fetch {

namespace {

constexpr std::size_t kMaxLinks = 100000;
constexpr std::size_t kMaxHref = 4096;

char lower(char c) {
  return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// &amp; &lt; &gt; &quot; &apos; &#NN; &#xNN; (ASCII only); anything else stays.
std::string decode_entities(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out += s[i];
      continue;
    }
    std::size_t semi = s.find(';', i);
    if (semi == std::string_view::npos || semi - i > 8) {
      out += s[i];
      continue;
    }
    std::string_view name = s.substr(i + 1, semi - i - 1);
    int c = -1;
    if (name == "amp")
      c = '&';
    else if (name == "lt")
      c = '<';
    else if (name == "gt")
      c = '>';
    else if (name == "quot")
      c = '"';
    else if (name == "apos")
      c = '\'';
    else if (name.size() > 1 && name[0] == '#') {
      int v = 0;
      bool hex = name[1] == 'x' || name[1] == 'X';
      bool ok = name.size() > (hex ? 2U : 1U);
      for (std::size_t k = hex ? 2 : 1; ok && k < name.size(); ++k) {
        int d = hex ? hex_value(name[k]) : (std::isdigit(static_cast<unsigned char>(name[k])) ? name[k] - '0' : -1);
        if (d < 0 || v > 0x10000)
          ok = false;
        else
          v = v * (hex ? 16 : 10) + d;
      }
      if (ok && v > 0 && v < 0x80) c = v;
    }
    if (c < 0) {
      out += s[i];
      continue;
    }
    out += static_cast<char>(c);
    i = semi;
  }
  return out;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> listing_hrefs(std::string_view html) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (out.size() < kMaxLinks) {
    i = html.find('<', i);
    if (i == std::string_view::npos) break;
    ++i;
    // Comments hide their links.
    if (html.substr(i, 3) == "!--") {
      std::size_t end = html.find("-->", i + 3);
      if (end == std::string_view::npos) break;
      i = end + 3;
      continue;
    }
    if (i >= html.size() || lower(html[i]) != 'a' || i + 1 >= html.size() || !is_space(html[i + 1])) continue;
    // The attributes of <a ...>: name=value, value quoted with " or ' or bare.
    std::size_t j = i + 1;
    while (j < html.size() && html[j] != '>') {
      while (j < html.size() && is_space(html[j])) ++j;
      std::size_t name_start = j;
      while (j < html.size() && !is_space(html[j]) && html[j] != '=' && html[j] != '>') ++j;
      std::string name;
      for (char c : html.substr(name_start, j - name_start)) name += lower(c);
      while (j < html.size() && is_space(html[j])) ++j;
      if (j >= html.size() || html[j] != '=') {
        if (j == name_start && j < html.size() && html[j] != '>') ++j;  // stray character
        continue;
      }
      ++j;
      while (j < html.size() && is_space(html[j])) ++j;
      std::string_view value;
      if (j < html.size() && (html[j] == '"' || html[j] == '\'')) {
        char quote = html[j];
        std::size_t end = html.find(quote, j + 1);
        if (end == std::string_view::npos) {
          j = html.size();
          break;
        }
        value = html.substr(j + 1, end - j - 1);
        j = end + 1;
      } else {
        std::size_t start = j;
        while (j < html.size() && !is_space(html[j]) && html[j] != '>') ++j;
        value = html.substr(start, j - start);
      }
      if (name == "href") {
        if (value.size() <= kMaxHref) out.push_back(decode_entities(value));
        break;  // one href per link
      }
    }
    i = j;
  }
  return out;
}

std::vector<std::string> listing_entries(std::string_view html) {
  std::vector<std::string> out;
  for (std::string href : listing_hrefs(html)) {
    // Trim surrounding blanks, then drop the query and fragment.
    while (!href.empty() && is_space(href.back())) href.pop_back();
    std::size_t lead = 0;
    while (lead < href.size() && is_space(href[lead])) ++lead;
    href.erase(0, lead);
    href = href.substr(0, href.find_first_of("?#"));
    if (href.empty()) continue;  // "?C=N;O=D" sort links, "#top"
    // Links elsewhere: another scheme than http(s) (mailto:, javascript:).
    if (std::size_t colon = href.find(':'); colon != std::string::npos && href.find('/') > colon) {
      std::string scheme;
      for (char c : href.substr(0, colon)) scheme += lower(c);
      if (scheme != "http" && scheme != "https") continue;
    }
    const bool folder = href.back() == '/';
    while (!href.empty() && href.back() == '/') href.pop_back();
    std::string name = percent_decode(href.substr(href.find_last_of('/') + 1));
    if (href.find("://") != std::string::npos && href.find('/', href.find("://") + 3) == std::string::npos)
      continue;  // "https://host": a site, not an entry
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) continue;
    if (name.find('\0') != std::string::npos) continue;
    out.push_back(folder ? name + "/" : name);
  }
  return out;
}

}  // namespace rpi::fetch
