// Human sizes: "512MiB", "1GiB", "1G" (= GiB), "8GB" (= 8 000 000 000 bytes), "4096" (bytes).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace rpi {

// Throws Errc::usage with `what` naming the option when the text is not a size.
std::uint64_t parse_size(std::string_view text, const std::string& what);
// "1 GiB", "512 MiB", "1.5 KiB", "17 B".
std::string format_size(std::uint64_t bytes);

}  // namespace rpi
