// Replays every committed fuzz input through its target, with the normal
// (g++) build and — in `scripts/test --full` — under ASan/UBSan:
//   tests/fuzz/regressions/<target>/*  inputs that once crashed (must now be handled)
//   tests/fuzz/corpus/<target>/*       the seed corpus (must never crash either)
// A target whose input lets an exception other than rpi::Error escape fails
// here; a crash or sanitizer report kills the test binary, which fails too.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "targets.hpp"
#include "test_support.hpp"

namespace rpi::fuzz {
// Test names show the target, not the bytes of the struct.
void PrintTo(const NamedTarget& t, std::ostream* os) {
  *os << t.name;
}
}  // namespace rpi::fuzz

namespace {

namespace fs = std::filesystem;

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename().string()[0] != '.') out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

class Replay : public ::testing::TestWithParam<rpi::fuzz::NamedTarget> {};

TEST_P(Replay, CorpusAndRegressionsAreHandled) {
  const auto& t = GetParam();
  const fs::path base = rpi::test::source_dir() / "tests" / "fuzz";
  auto inputs = files_in(base / "corpus" / t.name);
  ASSERT_FALSE(inputs.empty()) << "no seed corpus in tests/fuzz/corpus/" << t.name;
  auto regressions = files_in(base / "regressions" / t.name);
  inputs.insert(inputs.end(), regressions.begin(), regressions.end());
  for (const auto& p : inputs) {
    SCOPED_TRACE(p.string());
    const std::string bytes = rpi::test::read_file(p);
    try {
      t.run(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    } catch (const std::exception& e) {
      ADD_FAILURE() << "exception other than rpi::Error escaped: " << e.what();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, Replay, ::testing::ValuesIn(rpi::fuzz::all_targets()),
                         [](const ::testing::TestParamInfo<rpi::fuzz::NamedTarget>& i) {
                           return std::string(i.param.name);
                         });

}  // namespace
