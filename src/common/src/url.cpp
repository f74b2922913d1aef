#include "rpi/url.hpp"

namespace rpi {

std::string redact_urls(std::string text) {
  for (std::size_t from = 0;;) {
    std::size_t sep = text.find("://", from);
    if (sep == std::string::npos) return text;
    std::size_t start = sep + 3;
    std::size_t end = text.find_first_of("/?# \t\r\n'\"<>", start);
    if (end == std::string::npos) end = text.size();
    std::size_t at = text.rfind('@', end == 0 ? 0 : end - 1);
    if (at != std::string::npos && at >= start && at < end) {
      std::size_t colon = text.find(':', start);
      std::size_t keep = colon != std::string::npos && colon < at ? colon + 1 : start;
      if (text.compare(keep, at - keep, "***") != 0) text.replace(keep, at - keep, "***");
      end = keep + 3 + 1;
    }
    from = end;
  }
}

}  // namespace rpi
