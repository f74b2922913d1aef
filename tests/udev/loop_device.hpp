// RAII loop devices for the writer and hotplug tests (root + /dev/loop-control).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace rpi::test {

// Empty when loop devices can be used here, else why not (for GTEST_SKIP).
std::string loop_unavailable_reason();

class LoopDevice {
 public:
  // losetup --show -f [-r] <file>; throws std::runtime_error with losetup's message.
  explicit LoopDevice(const std::filesystem::path& backing, bool read_only = false);
  ~LoopDevice();  // losetup -d
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A mount that is undone at destruction (umount -l as a last resort).
class ScopedMount {
 public:
  ScopedMount(const std::vector<std::string>& mount_args, std::filesystem::path mountpoint);
  ~ScopedMount();
  ScopedMount(const ScopedMount&) = delete;
  ScopedMount& operator=(const ScopedMount&) = delete;

 private:
  std::filesystem::path mountpoint_;
};

}  // namespace rpi::test
