// Hostile devices (issue #7): a card that vanishes mid-write, a read-only
// device, a --device that is a symlink to the system disk (real and fake), and
// a symlink to nothing. Every case: one error naming the device, the right Errc
// or exit code, no device changed. Loop devices and their backing files live
// in a folder under /dev/shm (else /tmp) and are removed whatever happens.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>

#include "fake_sys.hpp"
#include "loop_device.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "test_support.hpp"
#include "udev/device.hpp"
#include "udev/flash.hpp"

namespace rpi::test {
namespace {

namespace fs = std::filesystem;
using udev::FlashOptions;
using udev::FlashSource;
using udev::SafetyOptions;

constexpr std::uint64_t kMiB = 1 << 20;

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// A private folder in RAM (/dev/shm, else /tmp) for images and backing files:
// small, fast, and never on the disk being protected.
class ShmDir {
 public:
  ShmDir() {
    std::error_code ec;
    fs::path base = fs::is_directory("/dev/shm", ec) ? "/dev/shm" : "/tmp";
    std::string pattern = (base / "rpi-hostile-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed in " + base.string());
    path_ = pattern;
  }
  ~ShmDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ShmDir(const ShmDir&) = delete;
  ShmDir& operator=(const ShmDir&) = delete;
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

std::string read_range(const fs::path& p, std::uint64_t off, std::uint64_t len) {
  Fd fd = open_or_throw(p.string(), O_RDONLY);
  std::string s(len, '\0');
  s.resize(pread_full(fd.get(), s.data(), len, off, p.string()));
  return s;
}

FlashOptions loop_options() {
  FlashOptions o;
  o.safety.allow_non_removable = true;  // loop devices are not removable
  return o;
}

// ---- A card that vanishes mid-write ----

// Flashes two loop devices in one batch; once 4 MiB reached the first, its
// backing file is cut to `left` bytes and the loop device told so (losetup -c):
// from then on the card has only `left` bytes, as when a reader loses its card
// (losetup -d would not do: the kernel defers it while the writer holds the
// device open, and writes keep succeeding).
void vanish_midway(std::uint64_t left) {
  ShmDir shm;
  make_image(shm / "pi.img", 24 * kMiB, 21);
  old_card(shm / "vanish.bin", 32 * kMiB);
  old_card(shm / "good.bin", 32 * kMiB);
  LoopDevice vanish(shm / "vanish.bin"), good(shm / "good.bin");
  auto src = FlashSource::open(shm / "pi.img");
  std::atomic<bool> gone{false};
  std::mutex mu;
  std::string cut_error;
  FlashOptions opts = loop_options();
  opts.events = [&](const Event& e) {
    if (e.type != "write" || e.subject != vanish.path() || e.done < 4 * kMiB || gone.exchange(true)) return;
    fs::resize_file(shm / "vanish.bin", left);
    auto r = run({"losetup", "-c", vanish.path()});
    std::lock_guard lock(mu);
    if (r.exit_code != 0) cut_error = "losetup -c failed: " + r.err;
  };
  auto results = udev::flash_all({{vanish.path(), src, "one"}, {good.path(), src, "two"}}, opts);
  ASSERT_TRUE(gone) << "the writer never reached 4 MiB on " << vanish.path();
  ASSERT_TRUE(cut_error.empty()) << cut_error;
  ASSERT_EQ(results.size(), 2u);
  const auto& lost = results[0];
  EXPECT_FALSE(lost.ok());
  EXPECT_FALSE(lost.verified);
  EXPECT_EQ(errc_name(lost.error_code), std::string(errc_name(Errc::io))) << lost.error;
  EXPECT_TRUE(contains(lost.error, vanish.path())) << lost.error;
  EXPECT_TRUE(contains(lost.error, "No space left") || contains(lost.error, "Input/output error") ||
              contains(lost.error, "No such device"))
      << lost.error;
  // Says what happened and what to do, not only the errno text.
  EXPECT_TRUE(contains(
      lost.error, "disappeared or shrank while it was being written (it now has " + std::to_string(left) + " bytes"))
      << lost.error;
  EXPECT_TRUE(contains(lost.error, "Insert it and write it again")) << lost.error;
  EXPECT_TRUE(contains(lost.error, "does not look valid")) << lost.error;
  EXPECT_LT(lost.bytes_written, 24 * kMiB);
  // The other card of the batch is written and verified regardless.
  EXPECT_TRUE(results[1].ok()) << results[1].error;
  EXPECT_TRUE(results[1].verified);
  EXPECT_TRUE(read_range(shm / "good.bin", 0, 24 * kMiB) == read_file(shm / "pi.img")) << "good card differs";
  // What is left of the lost card does not look valid (the old card did).
  EXPECT_EQ(fs::file_size(shm / "vanish.bin"), left);
  EXPECT_EQ(run({"blockdev", "--getsize64", vanish.path()}).out, std::to_string(left) + "\n");
  if (left >= 512) {
    EXPECT_EQ(read_range(shm / "vanish.bin", 510, 2), std::string(2, '\0'));
    Fd fd = open_or_throw(vanish.path(), O_RDONLY);
    (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
    EXPECT_EQ(read_range(vanish.path(), 510, 2), std::string(2, '\0'));
  }
}

TEST(FlashHostile, CardVanishingMidWriteFailsThatCardOnly) {
  REQUIRE_LOOP();
  RPI_REQUIRE_TOOL("blockdev");
  vanish_midway(0);
}

TEST(FlashHostile, CardShrinkingMidWriteKeepsNoMbrInWhatIsLeft) {
  REQUIRE_LOOP();
  RPI_REQUIRE_TOOL("blockdev");
  vanish_midway(kMiB);  // the first MiB stays readable
}

// ---- A read-only device ----

TEST(FlashHostile, ReadOnlyDeviceIsRefusedAndUntouched) {
  REQUIRE_LOOP();
  ShmDir shm;
  make_image(shm / "pi.img", 4 * kMiB, 22);
  old_card(shm / "ro.bin", 16 * kMiB);
  const std::string before = read_file(shm / "ro.bin");
  LoopDevice ro(shm / "ro.bin", true);
  auto r = udev::flash_one({ro.path(), FlashSource::open(shm / "pi.img"), "x"}, loop_options());
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(errc_name(r.error_code), std::string(errc_name(Errc::device))) << r.error;
  EXPECT_TRUE(contains(r.error, "refusing to write " + ro.path())) << r.error;
  EXPECT_TRUE(contains(r.error, "it is read-only")) << r.error;
  EXPECT_EQ(r.bytes_written, 0u);
  // Through the CLI: exit 1, the same reason.
  auto c = cli({"--image", (shm / "pi.img").string(), "--device", ro.path(), "--yes", "--allow-non-removable"});
  EXPECT_EQ(c.exit_code, 1) << c.out << c.err;
  EXPECT_TRUE(contains(c.err, ro.path()) && contains(c.err, "read-only")) << c.err;
  EXPECT_TRUE(read_file(shm / "ro.bin") == before) << "the read-only card was changed";
}

// ---- A --device that is a symlink to the system disk ----

// The whole disk that holds /, found without udev/src/device.cpp: the devt of
// / in /proc/self/mountinfo, then /sys/dev/block/<devt> (a partition's parent
// folder is its disk). Empty when / is on no block device (overlay, tmpfs).
std::string root_disk() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line, devt;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, dev, root, mountpoint;
    ls >> id >> parent >> dev >> root >> mountpoint;
    if (mountpoint == "/") devt = dev;  // the last mount on / is the visible one
  }
  if (devt.empty() || devt.rfind("0:", 0) == 0) return {};
  std::error_code ec;
  fs::path sys = fs::canonical("/sys/dev/block/" + devt, ec);
  if (ec) return {};
  if (fs::exists(sys / "partition", ec)) sys = sys.parent_path();
  fs::path node = "/dev" / sys.filename();
  return fs::exists(node, ec) ? node.string() : std::string();
}

// The first KiB of a disk (boot code / a filesystem's unused boot block: the
// writer zeroes it first). Empty when it cannot be read.
std::string first_kib(const std::string& disk) {
  try {
    return read_range(disk, 0, 1024);
  } catch (const Error&) {
    return {};
  }
}

// Every flag that loosens a check; the system-disk rule must not care.
SafetyOptions loosest() {
  SafetyOptions s;
  s.allow_non_removable = true;
  s.allow_large = true;
  return s;
}

TEST(FlashHostile, SymlinkToTheSystemDiskIsRefusedNamingTheDisk) {
  const std::string disk = root_disk();
  if (disk.empty())
    GTEST_SKIP() << "/ is on no block device here; SymlinkToAFakeSystemDiskIsRefusedNamingTheDisk covers the rule";
  TempDir tmp;
  fs::create_symlink(disk, tmp / "card");
  fs::create_directories(tmp / "by-id");
  fs::create_symlink("../card", tmp / "by-id/usb-Generic_STORAGE_DEVICE-0:0");  // a chain, relative
  make_image(tmp / "pi.img", 2 * kMiB, 23);
  auto src = FlashSource::open(tmp / "pi.img");
  const std::string before = first_kib(disk);
  for (const fs::path& link : {tmp / "card", tmp / "by-id/usb-Generic_STORAGE_DEVICE-0:0"}) {
    SCOPED_TRACE(link.string());
    try {
      udev::prepare_target(link.string(), loosest());
      ADD_FAILURE() << "the system disk " << disk << " was accepted through " << link;
      return;  // never go on to the writer
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::device) << e.what();
      EXPECT_TRUE(contains(e.what(), "refusing to write " + disk + " (")) << "names the real disk: " << e.what();
      EXPECT_TRUE(contains(e.what(), "it is a system disk")) << e.what();
    }
    FlashOptions fo;
    fo.safety = loosest();
    auto r = udev::flash_one({link.string(), src, "x"}, fo);
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.target, link.string());
    EXPECT_EQ(errc_name(r.error_code), std::string(errc_name(Errc::device))) << r.error;
    EXPECT_TRUE(contains(r.error, disk) && contains(r.error, "system disk")) << r.error;
    EXPECT_EQ(r.bytes_written, 0u);
  }
  auto c = cli(
      {"--image", (tmp / "pi.img").string(), "--device", (tmp / "card").string(), "--yes", "--allow-non-removable"});
  EXPECT_EQ(c.exit_code, 1) << c.out << c.err;
  EXPECT_TRUE(contains(c.err, disk) && contains(c.err, "system disk")) << c.err;
  EXPECT_EQ(first_kib(disk), before) << "the system disk changed";
}

// The same with the fake trees, so the rule is tested where / is on overlay:
// the fake system disk gets a real block node (a devt no device here has, so
// it opens nothing even if a check failed) and the /sys/dev/block link the
// kernel provides.
TEST(FlashHostile, SymlinkToAFakeSystemDiskIsRefusedNamingTheDisk) {
  if (::geteuid() != 0) GTEST_SKIP() << "mknod of a block device node needs root";
  const unsigned maj = 259, min = 999990;  // 259: blkext; minors this high are not handed out here
  const std::string devt = std::to_string(maj) + ":" + std::to_string(min);
  ASSERT_FALSE(fs::exists("/sys/dev/block/" + devt)) << devt << " exists on this machine";
  TempDir tmp;
  FakeSystem fake(tmp / "root");
  fake.add({.name = "nvme0n1",
            .devt = devt,
            .sectors = 1000215216,
            .bus = "nvme",
            .model = "Samsung SSD 980",
            .serial = "S64DNX0R",
            .partitions = {{"nvme0n1p1", std::to_string(maj) + ":" + std::to_string(min + 1), 999000000, {}}}});
  fake.mount(std::to_string(maj) + ":" + std::to_string(min + 1), "/dev/nvme0n1p1", "/", "ext4");
  const fs::path node = fake.root() / "dev/nvme0n1";
  fs::remove(node);
  if (::mknod(node.c_str(), S_IFBLK | 0600, makedev(maj, min)) != 0)
    GTEST_SKIP() << "mknod " << node << ": " << std::strerror(errno);
  fs::create_directories(fake.root() / "sys/dev/block");
  fs::create_symlink("../../block/nvme0n1", fake.root() / "sys/dev/block" / devt);
  fs::create_symlink(node, tmp / "card");
  fs::create_directories(tmp / "by-id");
  fs::create_symlink("../card", tmp / "by-id/nvme-Samsung_SSD_980_S64DNX0R");
  make_image(tmp / "pi.img", 2 * kMiB, 24);
  auto src = FlashSource::open(tmp / "pi.img");
  for (const fs::path& link : {tmp / "card", tmp / "by-id/nvme-Samsung_SSD_980_S64DNX0R"}) {
    SCOPED_TRACE(link.string());
    try {
      udev::prepare_target(link.string(), loosest(), fake.roots());
      ADD_FAILURE() << "the fake system disk was accepted through " << link;
      return;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::device) << e.what();
      EXPECT_TRUE(contains(e.what(), "refusing to write " + node.string() + " (Samsung SSD 980"))
          << "names the real disk: " << e.what();
      EXPECT_TRUE(contains(e.what(), "it is a system disk: it holds /")) << e.what();
    }
    FlashOptions fo;
    fo.safety = loosest();
    fo.roots = fake.roots();
    auto r = udev::flash_one({link.string(), src, "x"}, fo);
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(errc_name(r.error_code), std::string(errc_name(Errc::device))) << r.error;
    EXPECT_TRUE(contains(r.error, node.string()) && contains(r.error, "system disk")) << r.error;
    EXPECT_EQ(r.bytes_written, 0u);
  }
  EXPECT_TRUE(fs::is_block_file(node));
}

// A symlink to nothing is no new image file: writing through it would create
// its target, here a regular file where the fake /dev node of a gone card was.
TEST(FlashHostile, DanglingSymlinkIsRefusedAndItsTargetNotCreated) {
  TempDir tmp;
  FakeSystem fake(tmp / "root");
  const fs::path gone = fake.root() / "dev/sdz";
  fs::create_symlink(gone, tmp / "card");
  make_image(tmp / "pi.img", 2 * kMiB, 25);
  try {
    udev::prepare_target((tmp / "card").string(), loosest(), fake.roots());
    ADD_FAILURE() << "a dangling symlink was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::device) << e.what();
    EXPECT_TRUE(contains(e.what(), (tmp / "card").string() + " is a symbolic link to " + gone.string())) << e.what();
    EXPECT_TRUE(contains(e.what(), "does not exist")) << e.what();
  }
  FlashOptions fo;
  fo.roots = fake.roots();
  auto r = udev::flash_one({(tmp / "card").string(), FlashSource::open(tmp / "pi.img"), "x"}, fo);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(errc_name(r.error_code), std::string(errc_name(Errc::device))) << r.error;
  EXPECT_FALSE(fs::exists(gone)) << "the writer created " << gone;
}

}  // namespace
}  // namespace rpi::test
