#include "rpi/error.hpp"

#include <cstring>

namespace rpi {

void throw_errno(const std::string& what, int err) {
  throw Error(Errc::io, what + ": " + std::strerror(err));
}

const char* errc_name(Errc code) noexcept {
  switch (code) {
    case Errc::usage:
      return "usage";
    case Errc::spec:
      return "spec";
    case Errc::input:
      return "input";
    case Errc::io:
      return "io";
    case Errc::network:
      return "network";
    case Errc::verify:
      return "verify";
    case Errc::device:
      return "device";
    case Errc::internal:
      return "internal";
  }
  return "internal";
}

}  // namespace rpi
