// The hotplug monitor: devices present at start are ignored, new ones are
// reported, through the sysfs polling fallback (no udevd here, or forced).
#include <gtest/gtest.h>

#include "fake_sys.hpp"
#include "loop_device.hpp"
#include "test_support.hpp"
#include "udev/hotplug.hpp"

namespace rpi::test {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

FakeDisk card(const std::string& name, const std::string& devt, std::uint64_t sectors) {
  return FakeDisk{.name = name,
                  .devt = devt,
                  .sectors = sectors,
                  .bus = "usb",
                  .removable = true,
                  .vendor = "Generic",
                  .model = "Reader"};
}

TEST(Hotplug, FakeTreeReportsOnlyNewCards) {
  TempDir tmp;
  FakeSystem f(tmp.path());
  f.add(card("sdb", "8:16", 65536));  // present at start
  f.add(card("sdc", "8:32", 0));      // an empty reader at start
  udev::HotplugMonitor mon({.roots = f.roots(), .force_polling = true, .poll_interval = 20ms});
  EXPECT_FALSE(mon.using_udev());
  EXPECT_EQ(mon.next(150ms), std::nullopt);
  // A card goes into the empty reader: its size becomes non-zero.
  write_file(tmp / "sys/block/sdc/size", "65536\n");
  EXPECT_EQ(mon.next(3s), (tmp / "dev/sdc").string());
  EXPECT_EQ(mon.next(100ms), std::nullopt);  // reported once
  // A new reader with a card; then sdc's card is removed and put back.
  f.add(card("sdd", "8:48", 65536));
  EXPECT_EQ(mon.next(3s), (tmp / "dev/sdd").string());
  write_file(tmp / "sys/block/sdc/size", "0\n");
  EXPECT_EQ(mon.next(100ms), std::nullopt);
  write_file(tmp / "sys/block/sdc/size", "65536\n");
  EXPECT_EQ(mon.next(3s), (tmp / "dev/sdc").string());
  // sdb, present at start, was never reported.
}

TEST(Hotplug, CancelStopsWaiting) {
  TempDir tmp;
  FakeSystem f(tmp.path());
  udev::HotplugMonitor mon({.roots = f.roots(), .force_polling = true, .poll_interval = 20ms});
  std::atomic<bool> cancel{true};
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(mon.next(60s, &cancel), std::nullopt);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 50s);  // returned on cancel, not on the timeout
}

TEST(Hotplug, LoopDeviceAttachedAfterStartIsFoundByPolling) {
  std::string why = loop_unavailable_reason();
  if (!why.empty()) GTEST_SKIP() << why;
  TempDir tmp;
  write_file(tmp / "old.bin", std::string(1 << 20, 'o'));
  write_file(tmp / "new.bin", std::string(1 << 20, 'n'));
  LoopDevice before(tmp / "old.bin");
  udev::HotplugMonitor mon({.force_polling = true, .poll_interval = 50ms});
  EXPECT_FALSE(mon.using_udev());
  LoopDevice after(tmp / "new.bin");
  // Other tests may attach loop devices at the same time: wait for ours.
  std::optional<std::string> got;
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    got = mon.next(1s);
    ASSERT_NE(got, before.path()) << "a device present at start was reported";
    if (got == after.path()) break;
  }
  EXPECT_EQ(got, after.path());
}

}  // namespace
}  // namespace rpi::test
