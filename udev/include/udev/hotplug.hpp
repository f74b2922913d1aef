// Station mode's eyes: reports whole-disk block devices that appear (or get a
// medium) after the monitor was created. Uses libudev's netlink monitor as a
// wake-up when udevd is running, and always re-scans sysfs, so it also works
// (by polling) where no udev is running, e.g. containers and CI.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "udev/device.hpp"

namespace rpi::udev {

class HotplugMonitor {
 public:
  struct Options {
    SystemRoots roots;
    bool force_polling = false;  // ignore udev even when it runs (tests)
    std::chrono::milliseconds poll_interval{250};
  };

  // Snapshots the devices present now: they are never reported (until removed
  // and inserted again).
  explicit HotplugMonitor(Options opts);
  HotplugMonitor() : HotplugMonitor(Options{}) {}
  ~HotplugMonitor();
  HotplugMonitor(const HotplugMonitor&) = delete;
  HotplugMonitor& operator=(const HotplugMonitor&) = delete;

  // Waits for the next new device and returns its path under roots.dev
  // ("/dev/sdc"); nullopt on timeout or when *cancel becomes true.
  std::optional<std::string> next(std::chrono::milliseconds timeout, const std::atomic<bool>* cancel = nullptr);

  // True when netlink events from udevd are used, false when only polling.
  bool using_udev() const noexcept;

 private:
  std::set<std::string> scan() const;  // names with a medium and a /dev node
  struct Udev;
  Options opts_;
  std::unique_ptr<Udev> udev_;
  std::set<std::string> known_;
};

}  // namespace rpi::udev
