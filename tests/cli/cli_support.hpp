// Helpers shared by the CLI tests: the example specs, the fixture tarball.
#pragma once

#include <filesystem>
#include <string>

#include "test_support.hpp"

namespace rpi::test {

inline std::filesystem::path example(const std::string& name) {
  return source_dir() / "examples" / name;
}
// The small fixture tarball most CLI tests build from.
inline std::filesystem::path tarball() {
  return fixture_tarball({"--size-mb", "4"});
}
inline bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

}  // namespace rpi::test
