// One libFuzzer binary per target: compiled once for each with
// -DRPI_FUZZ_TARGET=<name> (see CMakeLists.txt).
#include <cstddef>
#include <cstdint>

#include "targets.hpp"

#ifndef RPI_FUZZ_TARGET
#error "define RPI_FUZZ_TARGET"
#endif

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  rpi::fuzz::RPI_FUZZ_TARGET(data, size);
  return 0;
}
