#include "json.hpp"

#include <cstdio>

#include "rpi/text.hpp"

namespace rpi::cli {

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else if (c < 0x80) {
          out.push_back(static_cast<char>(c));
        } else if (std::size_t n = utf8_sequence(s, i)) {
          out.append(s.substr(i, n));
          i += n - 1;
        } else {
          out += "\\ufffd";  // JSON is UTF-8: a stray byte (a non-UTF-8 file name) becomes U+FFFD
        }
    }
  }
  out.push_back('"');
  return out;
}

void JsonObject::key(std::string_view k) {
  if (!body_.empty()) body_.push_back(',');
  body_ += json_escape(k);
  body_.push_back(':');
}

JsonObject& JsonObject::add(std::string_view k, std::string_view value) {
  key(k);
  body_ += json_escape(value);
  return *this;
}

JsonObject& JsonObject::add(std::string_view k, std::int64_t value) {
  key(k);
  body_ += std::to_string(value);
  return *this;
}

JsonObject& JsonObject::add(std::string_view k, std::uint64_t value) {
  key(k);
  body_ += std::to_string(value);
  return *this;
}

JsonObject& JsonObject::add(std::string_view k, double value) {
  key(k);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", value);
  body_ += buf;
  return *this;
}

JsonObject& JsonObject::add_bool(std::string_view k, bool value) {
  key(k);
  body_ += value ? "true" : "false";
  return *this;
}

JsonObject& JsonObject::add_raw(std::string_view k, std::string_view raw_json) {
  key(k);
  body_ += raw_json;
  return *this;
}

}  // namespace rpi::cli
