// A minimal JSON object writer for JSON Lines events.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace rpi::cli {

std::string json_escape(std::string_view s);

class JsonObject {
 public:
  JsonObject& add(std::string_view key, std::string_view value);
  JsonObject& add(std::string_view key, const char* value) { return add(key, std::string_view(value)); }
  JsonObject& add(std::string_view key, const std::string& value) { return add(key, std::string_view(value)); }
  JsonObject& add(std::string_view key, std::int64_t value);
  JsonObject& add(std::string_view key, std::uint64_t value);
  JsonObject& add(std::string_view key, int value) { return add(key, static_cast<std::int64_t>(value)); }
  JsonObject& add(std::string_view key, unsigned value) { return add(key, static_cast<std::uint64_t>(value)); }
  JsonObject& add(std::string_view key, double value);
  JsonObject& add_bool(std::string_view key, bool value);
  // `raw_json` must already be valid JSON (an array or object).
  JsonObject& add_raw(std::string_view key, std::string_view raw_json);
  std::string str() const { return body_.empty() ? "{}" : "{" + body_ + "}"; }

 private:
  void key(std::string_view k);
  std::string body_;
};

}  // namespace rpi::cli
