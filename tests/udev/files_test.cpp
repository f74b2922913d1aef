// The files shipped next to the library: the station's systemd unit (checked by
// systemd-analyze) and the flashing benchmark script (checked by shellcheck).
#include <gtest/gtest.h>

#include <sstream>

#include "test_support.hpp"

namespace rpi::test {
namespace {

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

TEST(UdevFiles, StationUnitPassesSystemdAnalyzeVerify) {
  RPI_REQUIRE_TOOL("systemd-analyze");
  TempDir tmp;
  std::string unit = read_file(source_dir() / "udev/rpi-provision-station.service");
  EXPECT_NE(unit.find("ExecStart=/usr/bin/rpi-provision watch --spec "), std::string::npos);
  // The installed path does not exist here: point it at the built binary.
  write_file(tmp / "rpi-provision-station.service", replace_all(unit, "/usr/bin/rpi-provision", cli_path().string()));
  auto r = run({"systemd-analyze", "verify", (tmp / "rpi-provision-station.service").string()});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  // The oracle can fail: a relative ExecStart is rejected.
  write_file(tmp / "broken.service", replace_all(unit, "/usr/bin/rpi-provision", "rpi-provision-relative"));
  EXPECT_NE(run({"systemd-analyze", "verify", (tmp / "broken.service").string()}).exit_code, 0);
}

TEST(UdevFiles, RulesGrantTheGroupOnlyOnWholeRemovableDisks) {
  std::string rules = read_file(source_dir() / "udev/60-rpi-provision.rules");
  EXPECT_NE(rules.find("ENV{DEVTYPE}!=\"disk\", GOTO=\"rpi_provision_end\""), std::string::npos);
  EXPECT_NE(rules.find("LABEL=\"rpi_provision_end\""), std::string::npos);
  // Every assignment of the group is paired with removable media criteria.
  std::istringstream in(rules);
  std::string line;
  int grants = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || line.find("GROUP=") == std::string::npos) continue;
    ++grants;
    EXPECT_NE(line.find("MODE=\"0660\""), std::string::npos) << line;
    bool removable = line.find("mmcblk") != std::string::npos ||
                     line.find("ATTR{removable}==\"1\"") != std::string::npos ||
                     line.find("ID_DRIVE_FLASH_SD") != std::string::npos;
    EXPECT_TRUE(removable) << line;
  }
  EXPECT_GE(grants, 2);
}

TEST(UdevFiles, BenchScriptPassesShellcheck) {
  RPI_REQUIRE_TOOL("shellcheck");
  auto r = run({"shellcheck", (source_dir() / "bench/flash").string()});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

}  // namespace
}  // namespace rpi::test
