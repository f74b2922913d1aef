// RAII loop devices for the writer and hotplug tests (root + /dev/loop-control).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace rpi::test {

// Empty when loop devices can be used here, else why not (for GTEST_SKIP).
std::string loop_unavailable_reason();

// Skips the test, saying why, where loop devices cannot be used.
#define REQUIRE_LOOP()                                        \
  do {                                                        \
    std::string why = ::rpi::test::loop_unavailable_reason(); \
    if (!why.empty()) GTEST_SKIP() << why;                    \
  } while (0)

// A card image for the writer tests: pseudo-random bytes everywhere (so
// unmapped ranges are not accidentally zero) and an MBR signature at 510.
void make_image(const std::filesystem::path& p, std::uint64_t size, unsigned seed);
// A card with old content that still looks valid: 0xFF and an MBR signature.
void old_card(const std::filesystem::path& p, std::uint64_t size);

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
