// Builds fake /sys, /proc and /dev trees shaped like the kernel's, so discovery
// and every safety rule can be tested without hardware.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "udev/device.hpp"

namespace rpi::test {

struct FakeDisk {
  std::string name;           // "sdb"
  std::string devt;           // "8:16"
  std::uint64_t sectors = 0;  // 512-byte units, as sysfs reports
  std::string bus = "usb";    // usb | mmc | nvme | sata | virtual
  bool removable = false, ro = false;
  std::uint32_t logical_block_size = 512;
  std::string vendor, model, serial;  // serial lands where the kernel puts it for that bus
  struct Part {
    std::string name, devt;
    std::uint64_t sectors = 0;
    std::vector<std::string> holders;
  };
  std::vector<Part> partitions;
  std::vector<std::string> holders;  // of the whole disk
  std::vector<std::string> slaves;   // for dm-N / mdN
};

class FakeSystem {
 public:
  explicit FakeSystem(std::filesystem::path root);
  void add(const FakeDisk& d);
  void remove(const std::string& name);
  // A /proc/self/mountinfo line for `devt` mounted from `source` at `mountpoint`.
  void mount(const std::string& devt, const std::string& source, const std::string& mountpoint,
             const std::string& fstype = "vfat");
  void swap(const std::string& device);
  udev::SystemRoots roots() const;
  const std::filesystem::path& root() const { return root_; }

 private:
  void flush() const;
  std::filesystem::path root_;
  std::vector<std::string> mountinfo_;
  std::vector<std::string> swaps_;
  int next_mount_id_ = 30;
};

}  // namespace rpi::test
