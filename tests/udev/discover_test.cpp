// Discovery and every safety refusal, against fake sysfs/proc/dev trees: a USB
// reader, an mmc slot, an NVMe system disk, a mounted card, dm holders, swap...
#include <gtest/gtest.h>

#include <algorithm>

#include "fake_sys.hpp"
#include "rpi/error.hpp"
#include "test_support.hpp"
#include "udev/device.hpp"

namespace rpi::test {
namespace {

using udev::DeviceInfo;

constexpr std::uint64_t kGiBSectors = (1ull << 30) / 512;

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + " | ";
  return s;
}

// A machine with one of everything.
class DiscoverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FakeSystem& f = fake;
    // A USB SD reader with a 32 GB card: the one card that is offered.
    f.add({.name = "sdb",
           .devt = "8:16",
           .sectors = 62333952,
           .bus = "usb",
           .removable = true,
           .vendor = "Generic",
           .model = "STORAGE DEVICE",
           .serial = "000000001206",
           .partitions = {{"sdb1", "8:17", 524288, {}}}});
    // The Pi-style built-in SD slot: removable=0, but mmc.
    f.add({.name = "mmcblk0",
           .devt = "179:0",
           .sectors = 31116288,
           .bus = "mmc",
           .model = "SC32G",
           .serial = "0x1b2c3d4e"});
    // The NVMe system disk: / and /boot/efi.
    f.add({.name = "nvme0n1",
           .devt = "259:0",
           .sectors = 1000215216,
           .bus = "nvme",
           .model = "Samsung SSD 980",
           .serial = "S64DNX0R",
           .partitions = {{"nvme0n1p1", "259:1", 1048576, {}}, {"nvme0n1p2", "259:2", 999000000, {}}}});
    f.mount("259:2", "/dev/nvme0n1p2", "/", "ext4");
    f.mount("259:1", "/dev/nvme0n1p1", "/boot/efi", "vfat");
    // A card with its FAT partition automounted (path with a space, escaped as \040).
    f.add({.name = "sdc",
           .devt = "8:32",
           .sectors = 31116288,
           .bus = "usb",
           .removable = true,
           .vendor = "SanDisk",
           .model = "SDDR-B531",
           .serial = "AA11",
           .partitions = {{"sdc1", "8:33", 524288, {}}}});
    f.mount("8:33", "/dev/sdc1", "/media/pi/my\\040boot");
    // A SATA disk whose sda2 is a dm-0 (LUKS) used as swap: a system disk through its holder.
    f.add({.name = "sda",
           .devt = "8:0",
           .sectors = 500 * kGiBSectors,
           .bus = "sata",
           .model = "WDC WD5000",
           .partitions = {{"sda1", "8:1", 1000000, {}}, {"sda2", "8:2", 2000000, {"dm-0"}}}});
    f.add({.name = "dm-0", .devt = "254:0", .sectors = 2000000, .bus = "virtual", .slaves = {"sda2"}});
    f.swap("/dev/dm-0");
    // A USB stick that is a member of an md array (holder md127), not mounted.
    f.add({.name = "sdd",
           .devt = "8:48",
           .sectors = 31116288,
           .bus = "usb",
           .removable = true,
           .vendor = "Kingston",
           .model = "DataTraveler",
           .partitions = {{"sdd1", "8:49", 31000000, {"md127"}}}});
    // Write-protected card, 1 TB USB disk, empty reader, 4Kn disk, swap on a card.
    f.add({.name = "sde",
           .devt = "8:64",
           .sectors = 31116288,
           .bus = "usb",
           .removable = true,
           .ro = true,
           .vendor = "Generic",
           .model = "SD Reader"});
    f.add({.name = "sdf", .devt = "8:80", .sectors = 1953525168, .bus = "usb", .vendor = "WD", .model = "Elements"});
    f.add({.name = "sdg",
           .devt = "8:96",
           .sectors = 0,
           .bus = "usb",
           .removable = true,
           .vendor = "Generic",
           .model = "MS Reader"});
    f.add({.name = "sdh",
           .devt = "8:112",
           .sectors = 31116288,
           .bus = "usb",
           .removable = true,
           .logical_block_size = 4096,
           .vendor = "Odd",
           .model = "4Kn"});
    f.add({.name = "sdi",
           .devt = "8:128",
           .sectors = 31116288,
           .bus = "usb",
           .removable = true,
           .vendor = "Generic",
           .model = "Swap Card",
           .partitions = {{"sdi1", "8:129", 100000, {}}, {"sdi2", "8:130", 100000, {}}}});
    f.swap("/dev/sdi2");
    // Loop devices: an unattached one (hidden) and an attached one (non-removable).
    f.add({.name = "loop0", .devt = "7:0", .sectors = 0, .bus = "virtual"});
    f.add({.name = "loop1", .devt = "7:1", .sectors = 65536, .bus = "virtual"});
    f.add({.name = "zram0", .devt = "253:0", .sectors = 65536, .bus = "virtual"});
    devices = udev::discover(fake.roots());
  }

  const DeviceInfo& dev(const std::string& name) {
    auto it = std::find_if(devices.begin(), devices.end(), [&](auto& d) { return d.name == name; });
    if (it == devices.end()) throw std::runtime_error("not discovered: " + name);
    return *it;
  }

  TempDir tmp;
  FakeSystem fake{tmp.path()};
  std::vector<DeviceInfo> devices;
};

TEST_F(DiscoverTest, ListsWholeDisksAndSkipsUnattachedLoopsAndZram) {
  std::vector<std::string> names;
  for (const auto& d : devices) names.push_back(d.name);
  std::vector<std::string> want{"dm-0", "loop1", "mmcblk0", "nvme0n1", "sda", "sdb", "sdc",
                                "sdd",  "sde",   "sdf",     "sdg",     "sdh", "sdi"};
  EXPECT_EQ(names, want);
}

TEST_F(DiscoverTest, UsbReaderIsOfferedWithIdentity) {
  const auto& d = dev("sdb");
  EXPECT_EQ(d.path, (fake.root() / "dev/sdb").string());
  EXPECT_EQ(d.devt, "8:16");
  EXPECT_EQ(d.size, 62333952ull * 512);
  EXPECT_EQ(d.transport, "usb");
  EXPECT_TRUE(d.removable);
  EXPECT_EQ(d.vendor, "Generic");  // trailing SCSI padding trimmed
  EXPECT_EQ(d.model, "STORAGE DEVICE");
  EXPECT_EQ(d.serial, "000000001206");  // from the USB device, an ancestor
  ASSERT_EQ(d.partitions.size(), 1u);
  EXPECT_EQ(d.partitions[0].name, "sdb1");
  EXPECT_TRUE(d.refusals.empty()) << joined(d.refusals);
  EXPECT_NO_THROW(udev::check_target(d, {}));
}

TEST_F(DiscoverTest, MmcSlotIsOfferedAlthoughNotRemovable) {
  const auto& d = dev("mmcblk0");
  EXPECT_FALSE(d.removable);
  EXPECT_EQ(d.transport, "mmc");
  EXPECT_EQ(d.model, "SC32G");
  EXPECT_EQ(d.serial, "0x1b2c3d4e");
  EXPECT_TRUE(d.refusals.empty()) << joined(d.refusals);
}

TEST_F(DiscoverTest, SystemDiskIsAlwaysRefused) {
  const auto& d = dev("nvme0n1");
  EXPECT_EQ(d.transport, "nvme");
  EXPECT_EQ(d.serial, "S64DNX0R");
  EXPECT_TRUE(d.system);
  ASSERT_EQ(d.refusals.size(), 1u) << joined(d.refusals);
  EXPECT_TRUE(contains(d.refusals[0], "system disk")) << d.refusals[0];
  EXPECT_TRUE(contains(d.refusals[0], "holds /")) << d.refusals[0];
  // No flag makes it writable.
  udev::SafetyOptions all{.allow_non_removable = true, .allow_large = true, .unmount = true};
  try {
    udev::check_target(d, all);
    FAIL() << "system disk accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::device);
    EXPECT_TRUE(contains(e.what(), d.path)) << e.what();
    EXPECT_TRUE(contains(e.what(), "system disk")) << e.what();
  }
}

TEST_F(DiscoverTest, DiskUnderSwapOnDmHolderIsSystem) {
  const auto& d = dev("sda");
  EXPECT_TRUE(d.system);
  EXPECT_TRUE(contains(d.system_reason, "swap")) << d.system_reason;
  EXPECT_TRUE(contains(d.system_reason, "dm-0")) << d.system_reason;
  EXPECT_EQ(d.holders, std::vector<std::string>{"dm-0"});
  EXPECT_TRUE(dev("dm-0").system);
}

TEST_F(DiscoverTest, MountedCardNeedsUnmount) {
  const auto& d = dev("sdc");
  ASSERT_EQ(d.partitions.size(), 1u);
  EXPECT_EQ(d.partitions[0].mountpoints, std::vector<std::string>{"/media/pi/my boot"});
  ASSERT_EQ(d.refusals.size(), 1u) << joined(d.refusals);
  EXPECT_TRUE(contains(d.refusals[0], "/media/pi/my boot"));
  EXPECT_TRUE(contains(d.refusals[0], "--unmount"));
  EXPECT_THROW(udev::check_target(d, {}), Error);
  EXPECT_NO_THROW(udev::check_target(d, {.unmount = true}));
}

TEST_F(DiscoverTest, HolderIsRefused) {
  const auto& d = dev("sdd");
  EXPECT_FALSE(d.system);
  ASSERT_EQ(d.refusals.size(), 1u) << joined(d.refusals);
  EXPECT_TRUE(contains(d.refusals[0], "md127")) << d.refusals[0];
  udev::SafetyOptions all{.allow_non_removable = true, .allow_large = true, .unmount = true};
  EXPECT_THROW(udev::check_target(d, all), Error);
}

TEST_F(DiscoverTest, ReadOnlyEmptyAnd4KnAreRefusedRegardlessOfFlags) {
  udev::SafetyOptions all{.allow_non_removable = true, .allow_large = true, .unmount = true};
  struct Case {
    const char* name;
    const char* reason;
  } cases[] = {{"sde", "read-only"}, {"sdg", "size is 0"}, {"sdh", "sector size is 4096"}};
  for (const auto& c : cases) {
    const auto& d = dev(c.name);
    ASSERT_EQ(d.refusals.size(), 1u) << c.name << ": " << joined(d.refusals);
    EXPECT_TRUE(contains(d.refusals[0], c.reason)) << d.refusals[0];
    EXPECT_EQ(udev::refusal_reasons(d, all).size(), 1u) << c.name;
  }
}

TEST_F(DiscoverTest, SwapOnCardMakesItSystem) {
  const auto& d = dev("sdi");
  EXPECT_TRUE(d.swap);
  EXPECT_TRUE(d.system);
  EXPECT_TRUE(d.partitions[1].swap);
  EXPECT_TRUE(contains(d.refusals.at(0), "swap"));
}

TEST_F(DiscoverTest, LargeDiskNeedsAllowLarge) {
  const auto& d = dev("sdf");
  EXPECT_FALSE(d.removable);  // USB disks say removable=0; usb transport is enough
  ASSERT_EQ(d.refusals.size(), 1u) << joined(d.refusals);
  EXPECT_TRUE(contains(d.refusals[0], "larger than 512 GiB"));
  EXPECT_TRUE(contains(d.refusals[0], "--allow-large"));
  EXPECT_NO_THROW(udev::check_target(d, {.allow_large = true}));
}

TEST_F(DiscoverTest, LoopNeedsAllowNonRemovable) {
  const auto& d = dev("loop1");
  EXPECT_EQ(d.transport, "loop");
  ASSERT_EQ(d.refusals.size(), 1u) << joined(d.refusals);
  EXPECT_TRUE(contains(d.refusals[0], "--allow-non-removable"));
  try {
    udev::check_target(d, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::device);
    EXPECT_TRUE(contains(e.what(), "refusing to write " + d.path)) << e.what();
  }
  EXPECT_NO_THROW(udev::check_target(d, {.allow_non_removable = true}));
}

TEST_F(DiscoverTest, RegularFileIsATarget) {
  write_file(tmp / "card.img", std::string(4096, 'x'));
  auto d = udev::inspect_target((tmp / "card.img").string(), fake.roots());
  EXPECT_TRUE(d.is_file);
  EXPECT_EQ(d.size, 4096u);
  EXPECT_NO_THROW(udev::check_target(d, {}));
  // A new file may be created, a missing /dev node is an error.
  EXPECT_TRUE(udev::inspect_target((tmp / "new.img").string(), fake.roots()).is_file);
  EXPECT_THROW(udev::inspect_target("/dev/rpi-provision-no-such-disk"), Error);
  EXPECT_THROW(udev::inspect_target(tmp.path().string(), fake.roots()), Error);  // a directory
}

std::vector<std::string> cli_roots(const FakeSystem& f) {
  return {"--sysfs-root", (f.root() / "sys").string(), "--procfs-root", (f.root() / "proc").string(),
          "--dev-root",   (f.root() / "dev").string()};
}

// What the question before writing and the plan say a card holds (libblkid's
// findings, set here as read_disk sets them).
TEST(DeviceContents, SaysWhatTheCardHoldsInOneLine) {
  DeviceInfo d;
  d.name = "sdb";
  EXPECT_EQ(d.contents(), "") << "not probed: nothing is claimed";
  d.content = DeviceInfo::Content::read;
  EXPECT_EQ(d.contents(), "no partition table or file system libblkid knows (blank, or unknown data)");
  d.fstype = "vfat";
  d.label = "NO NAME";
  EXPECT_EQ(d.contents(), "a whole-disk vfat \"NO NAME\", no partition table");
  d.fstype.clear();
  d.label.clear();
  d.pttype = "dos";
  EXPECT_EQ(d.contents(), "a dos partition table (the kernel lists no partitions of it)");
  for (int i = 1; i <= 8; ++i) {
    udev::PartitionInfo p;
    p.name = "sdb" + std::to_string(i);
    p.content_read = i != 7;  // sdb7: no /dev node, say (no udev), or no permission
    if (i == 1) p.fstype = "vfat", p.label = "bootfs";
    if (i == 2) p.fstype = "ext4", p.label = "root\x1b[2J\nfs";  // a label is the card's bytes
    d.partitions.push_back(p);
  }
  const std::string c = d.contents();
  EXPECT_EQ(c.rfind("a dos partition table: sdb1 vfat \"bootfs\", sdb2 ext4 \"root", 0), 0u) << c;
  EXPECT_TRUE(contains(c, ", sdb3 no file system libblkid knows, ")) << c;
  EXPECT_TRUE(contains(c, ", sdb6 no file system libblkid knows, 2 more")) << c;
  d.partitions.resize(7);
  EXPECT_TRUE(contains(d.contents(), ", sdb6 no file system libblkid knows, 1 more")) << d.contents();
  d.partitions.erase(d.partitions.begin(), d.partitions.begin() + 6);
  EXPECT_EQ(d.contents(), "a dos partition table: sdb7 (could not be read)");
  EXPECT_EQ(c.find('\x1b'), std::string::npos) << "a label must not drive the terminal: " << c;
  EXPECT_EQ(c.find('\n'), std::string::npos) << "one line: " << c;
  d.content = DeviceInfo::Content::ambivalent;
  EXPECT_TRUE(contains(d.contents(), "contradict each other")) << d.contents();
  d.is_file = true;
  EXPECT_EQ(d.contents(), "") << "an image file standing in for a card is not probed";
}

TEST_F(DiscoverTest, DevicesCommandText) {
  auto args = std::vector<std::string>{"devices"};
  for (auto& a : cli_roots(fake)) args.push_back(a);
  auto r = cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string offered = r.out.substr(0, r.out.find("Not offered:"));
  std::string others = r.out.substr(r.out.find("Not offered:"));
  EXPECT_TRUE(contains(offered, "DEVICE")) << r.out;
  EXPECT_TRUE(contains(offered, "/dev/sdb")) << r.out;
  EXPECT_TRUE(contains(offered, "Generic STORAGE DEVICE")) << r.out;
  EXPECT_TRUE(contains(offered, "000000001206")) << r.out;
  EXPECT_TRUE(contains(offered, "/dev/mmcblk0")) << r.out;
  EXPECT_FALSE(contains(offered, "/dev/nvme0n1")) << r.out;
  EXPECT_FALSE(contains(r.out, "loop0")) << r.out;
  // Every other disk is listed with its reason.
  for (const char* n : {"nvme0n1", "sda", "sdc", "sdd", "sde", "sdf", "sdg", "sdh", "sdi", "loop1"})
    EXPECT_TRUE(contains(others, std::string("/dev/") + n + " (")) << n << "\n" << r.out;
  EXPECT_TRUE(contains(others, "--unmount")) << r.out;
}

// The table says what each card holds (libblkid reads the /dev node: here
// files standing in for them), so the user can tell the cards apart.
TEST_F(DiscoverTest, DevicesCommandSaysWhatEachCardHolds) {
  RPI_REQUIRE_TOOL("sfdisk");
  RPI_REQUIRE_TOOL("mkfs.vfat");
  namespace fs = std::filesystem;
  const fs::path dev = fake.roots().dev;
  fs::resize_file(dev / "sdb", 4u << 20);
  ASSERT_EQ(rpi::test::sh("echo 'start=2048, type=c' | sfdisk -q " + (dev / "sdb").string()).exit_code, 0);
  fs::resize_file(dev / "sdb1", 1u << 20);
  ASSERT_EQ(rpi::test::run({"mkfs.vfat", "-n", "KIOSK", (dev / "sdb1").string()}).exit_code, 0);
  auto args = std::vector<std::string>{"devices"};
  for (auto& a : cli_roots(fake)) args.push_back(a);
  auto r = cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out.substr(0, r.out.find('\n')), "HOLDS")) << r.out;
  std::string row;
  for (std::size_t at = 0; at < r.out.size();) {
    const std::size_t end = r.out.find('\n', at);
    const std::string line = r.out.substr(at, end - at);
    if (line.rfind((dev / "sdb").string() + " ", 0) == 0) row = line;
    at = end == std::string::npos ? r.out.size() : end + 1;
  }
  EXPECT_TRUE(row.ends_with("a dos partition table: sdb1 vfat \"KIOSK\"")) << r.out;
}

TEST_F(DiscoverTest, DevicesCommandJson) {
  RPI_REQUIRE_TOOL("python3");
  TempDir out;
  auto args = std::vector<std::string>{"--json", "devices"};
  for (auto& a : cli_roots(fake)) args.push_back(a);
  auto r = cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  write_file(out / "devices.jsonl", r.out);
  // An independent JSON parser checks every line and the fields.
  auto py = run({"python3", "-c",
                 "import json,sys\n"
                 "d=[json.loads(l) for l in open(sys.argv[1])]\n"
                 "assert all(x['type']=='device' for x in d)\n"
                 "by={x['name']:x for x in d}\n"
                 "print(len(d), sorted(n for n in by if by[n]['offered']), by['sdb']['serial'], by['sdb']['size'],"
                 " by['sdc']['mountpoints'], by['nvme0n1']['system'], len(by['sdf']['refusals']))\n",
                 (out / "devices.jsonl").string()});
  ASSERT_EQ(py.exit_code, 0) << py.err << r.out;
  EXPECT_EQ(py.out, "13 ['mmcblk0', 'sdb'] 000000001206 31914983424 ['/media/pi/my boot'] True 1\n");
}

// `devices --help` lists --json (the man page's `devices [--json]`), and the
// flag works after the subcommand as well as before it.
TEST_F(DiscoverTest, DevicesHelpListsJson) {
  auto h = cli({"devices", "--help"});
  ASSERT_EQ(h.exit_code, 0) << h.err;
  EXPECT_TRUE(contains(h.out, "--json")) << h.out;
  EXPECT_FALSE(contains(h.out, "--sysfs-root")) << "the test-only options stay hidden: " << h.out;
  auto args = std::vector<std::string>{"devices", "--json"};
  for (auto& a : cli_roots(fake)) args.push_back(a);
  auto r = cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.out.starts_with("{\"type\":\"device\"")) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 13) << r.out;
}

}  // namespace
}  // namespace rpi::test
