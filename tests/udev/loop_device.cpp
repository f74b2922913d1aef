#include "loop_device.hpp"

#include <unistd.h>

#include <cstring>
#include <random>
#include <stdexcept>

#include "test_support.hpp"

namespace rpi::test {

std::string loop_unavailable_reason() {
  if (::geteuid() != 0) return "loop device tests need root";
  if (::access("/dev/loop-control", W_OK) != 0) return "no /dev/loop-control";
  if (!have_tool("losetup")) return "losetup not installed";
  return {};
}

LoopDevice::LoopDevice(const std::filesystem::path& backing, bool read_only) {
  std::vector<std::string> argv{"losetup", "--show", "-f"};
  if (read_only) argv.push_back("-r");
  argv.push_back(backing.string());
  auto r = run(argv);
  if (r.exit_code != 0) throw std::runtime_error("losetup failed: " + r.err);
  path_ = r.out.substr(0, r.out.find('\n'));
}

LoopDevice::~LoopDevice() {
  if (!path_.empty()) run({"losetup", "-d", path_});
}

ScopedMount::ScopedMount(const std::vector<std::string>& mount_args, std::filesystem::path mountpoint)
    : mountpoint_(std::move(mountpoint)) {
  std::vector<std::string> argv{"mount"};
  argv.insert(argv.end(), mount_args.begin(), mount_args.end());
  argv.push_back(mountpoint_.string());
  auto r = run(argv);
  if (r.exit_code != 0) throw std::runtime_error("mount failed: " + r.err);
}

ScopedMount::~ScopedMount() {
  // The test may already have unmounted it (the --unmount path).
  if (run({"mountpoint", "-q", mountpoint_.string()}).exit_code == 0) {
    if (run({"umount", mountpoint_.string()}).exit_code != 0) run({"umount", "-l", mountpoint_.string()});
  }
}

void make_image(const std::filesystem::path& p, std::uint64_t size, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::string data(size, '\0');
  for (std::uint64_t i = 0; i + 8 <= size; i += 8) {
    std::uint64_t v = rng();
    std::memcpy(&data[i], &v, 8);
  }
  data[510] = '\x55';
  data[511] = '\xAA';
  write_file(p, data);
}

void old_card(const std::filesystem::path& p, std::uint64_t size) {
  std::string s(size, '\xff');
  s[510] = '\x55';
  s[511] = '\xAA';
  write_file(p, s);
}

}  // namespace rpi::test
