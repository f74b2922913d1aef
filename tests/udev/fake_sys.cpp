#include "fake_sys.hpp"

#include <fstream>

namespace fs = std::filesystem;

namespace rpi::test {

namespace {
void put(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text << "\n";
}
// `dir/subsystem` -> <sys>/bus/<name> (or class/<name>), as in the kernel.
void subsystem(const fs::path& sys, const fs::path& dir, const std::string& kind, const std::string& name) {
  fs::create_directories(dir);
  std::error_code ec;
  if (!fs::is_symlink(dir / "subsystem", ec)) fs::create_directory_symlink(sys / kind / name, dir / "subsystem");
}
}  // namespace

FakeSystem::FakeSystem(fs::path root) : root_(std::move(root)) {
  fs::create_directories(root_ / "sys" / "block");
  fs::create_directories(root_ / "sys" / "devices");
  fs::create_directories(root_ / "proc" / "self");
  fs::create_directories(root_ / "dev");
  flush();
}

void FakeSystem::add(const FakeDisk& d) {
  fs::path sys = root_ / "sys";
  fs::path parent;  // the disk's `device`, if any
  fs::path disk;
  if (d.bus == "usb") {
    fs::path hc = sys / "devices/pci0000:00/0000:00:14.0/usb1";
    fs::path udev_dir = hc / ("1-" + d.name);
    subsystem(sys, hc, "bus", "usb");
    subsystem(sys, udev_dir, "bus", "usb");
    if (!d.serial.empty()) put(udev_dir / "serial", d.serial);
    fs::path intf = udev_dir / ("1-" + d.name + ":1.0");
    subsystem(sys, intf, "bus", "usb");
    parent = intf / "host6/target6:0:0/6:0:0:0";
    subsystem(sys, parent, "bus", "scsi");
    put(parent / "vendor", d.vendor + "    ");  // SCSI strings are space-padded
    put(parent / "model", d.model + "   ");
  } else if (d.bus == "mmc") {
    fs::path host = sys / "devices/platform/fe340000.mmc/mmc_host/mmc0";
    parent = host / ("mmc0:" + d.name);
    subsystem(sys, parent, "bus", "mmc");
    put(parent / "name", d.model);
    if (!d.serial.empty()) put(parent / "serial", d.serial);
  } else if (d.bus == "nvme") {
    fs::path pci = sys / "devices/pci0000:00/0000:00:1d.0";
    subsystem(sys, pci, "bus", "pci");
    parent = pci / "nvme/nvme0";
    subsystem(sys, parent, "class", "nvme");
    put(parent / "model", d.model);
    put(parent / "serial", d.serial);
    disk = parent / d.name;
  } else if (d.bus == "sata") {
    parent = sys / ("devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:" + d.name);
    subsystem(sys, parent, "bus", "scsi");
    put(parent / "vendor", "ATA     ");
    put(parent / "model", d.model);
  }
  if (disk.empty()) disk = parent.empty() ? sys / "devices/virtual/block" / d.name : parent / "block" / d.name;
  subsystem(sys, disk, "class", "block");
  if (!parent.empty()) fs::create_directory_symlink(parent, disk / "device");
  put(disk / "dev", d.devt);
  put(disk / "size", std::to_string(d.sectors));
  put(disk / "removable", d.removable ? "1" : "0");
  put(disk / "ro", d.ro ? "1" : "0");
  put(disk / "queue/logical_block_size", std::to_string(d.logical_block_size));
  fs::create_directories(disk / "holders");
  fs::create_directories(disk / "slaves");
  for (const auto& h : d.holders) put(disk / "holders" / h / "dev", "254:0");
  for (const auto& s : d.slaves) put(disk / "slaves" / s / "dev", "0:0");
  for (const auto& p : d.partitions) {
    fs::path pd = disk / p.name;
    put(pd / "partition", "1");
    put(pd / "dev", p.devt);
    put(pd / "size", std::to_string(p.sectors));
    fs::create_directories(pd / "holders");
    for (const auto& h : p.holders) put(pd / "holders" / h / "dev", "254:0");
    put(root_ / "dev" / p.name, "");
  }
  fs::create_directory_symlink(disk, sys / "block" / d.name);
  put(root_ / "dev" / d.name, "");
}

void FakeSystem::remove(const std::string& name) {
  fs::remove(root_ / "sys/block" / name);
  fs::remove(root_ / "dev" / name);
}

void FakeSystem::mount(const std::string& devt, const std::string& source, const std::string& mountpoint,
                       const std::string& fstype) {
  mountinfo_.push_back(std::to_string(next_mount_id_++) + " 1 " + devt + " / " + mountpoint +
                       " rw,relatime shared:1 - " + fstype + " " + source + " rw");
  flush();
}

void FakeSystem::swap(const std::string& device) {
  swaps_.push_back(device + "\t\t\t\tpartition\t1048572\t\t0\t\t-2");
  flush();
}

udev::SystemRoots FakeSystem::roots() const {
  return {root_ / "sys", root_ / "proc", root_ / "dev"};
}

void FakeSystem::flush() const {
  std::ofstream mi(root_ / "proc/self/mountinfo");
  mi << "22 27 0:21 / /proc rw,relatime - proc proc rw\n";
  for (const auto& l : mountinfo_) mi << l << "\n";
  std::ofstream sw(root_ / "proc/swaps");
  sw << "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
  for (const auto& l : swaps_) sw << l << "\n";
}

}  // namespace rpi::test
