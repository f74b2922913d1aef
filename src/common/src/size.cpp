#include "rpi/size.hpp"

#include <cctype>
#include <cstdio>
#include <limits>

#include "rpi/error.hpp"

namespace rpi {

std::uint64_t parse_size(std::string_view text, const std::string& what) {
  auto bad = [&]() {
    return Error(Errc::usage,
                 what + ": '" + std::string(text) + "' is not a size (use e.g. 512MiB, 1GiB, 8GB or a byte count)");
  };
  std::size_t i = 0;
  std::uint64_t value = 0;
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0]))) throw bad();
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    unsigned digit = static_cast<unsigned>(text[i] - '0');
    if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) throw bad();
    value = value * 10 + digit;
    ++i;
  }
  std::string unit;
  for (; i < text.size(); ++i) {
    if (text[i] == ' ' && unit.empty()) continue;
    unit.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(text[i]))));
  }
  // As coreutils (truncate, dd) read them: K, M, G, T and KiB … TiB are powers
  // of 1024; KB, MB, GB, TB are powers of 1000, as printed on a card ("8 GB").
  static const struct {
    const char* unit;
    std::uint64_t factor;
  } units[] = {{"", 1},
               {"b", 1},
               {"k", 1ull << 10},
               {"kib", 1ull << 10},
               {"kb", 1000ull},
               {"m", 1ull << 20},
               {"mib", 1ull << 20},
               {"mb", 1000ull * 1000},
               {"g", 1ull << 30},
               {"gib", 1ull << 30},
               {"gb", 1000ull * 1000 * 1000},
               {"t", 1ull << 40},
               {"tib", 1ull << 40},
               {"tb", 1000ull * 1000 * 1000 * 1000}};
  for (const auto& u : units) {
    if (unit != u.unit) continue;
    if (value > std::numeric_limits<std::uint64_t>::max() / u.factor) throw bad();
    return value * u.factor;
  }
  throw bad();
}

std::string format_size(std::uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  double v = static_cast<double>(bytes);
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0 || v == static_cast<double>(static_cast<std::uint64_t>(v)))
    std::snprintf(buf, sizeof buf, "%llu %s", static_cast<unsigned long long>(v), units[u]);
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace rpi
