// Block-device discovery and the safety rules that decide which devices may be
// written. Everything is read from sysfs, /proc and /dev under injectable roots,
// so discovery and every refusal are unit-tested against fake trees.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace rpi::udev {

// Where the kernel's views live. Tests point these at fake trees.
struct SystemRoots {
  std::filesystem::path sys = "/sys";
  std::filesystem::path proc = "/proc";
  std::filesystem::path dev = "/dev";
};

struct PartitionInfo {
  std::string name;                      // "sdb1"
  std::string path;                      // "/dev/sdb1"
  std::string devt;                      // "8:17"
  std::uint64_t size = 0;                // bytes
  std::string fstype;                    // from libblkid ("vfat", "ext4"; "" = unknown/unreadable)
  std::string label;                     // from libblkid
  bool content_read = false;             // libblkid could read it (fstype "" then means: nothing it knows)
  std::vector<std::string> mountpoints;  // from mountinfo
  std::vector<std::string> holders;      // dm-0, md127 ...
  bool swap = false;                     // active swap (/proc/swaps)
};

struct DeviceInfo {
  std::string name;  // kernel name: "sdb", "mmcblk0", "loop3"; "" for a regular file
  std::string path;  // "/dev/sdb" (under SystemRoots::dev), or the regular file's path
  std::string devt;  // "8:16"
  bool is_file = false;
  std::uint64_t size = 0;  // bytes
  std::uint32_t logical_sector = 512;
  bool removable = false;  // sysfs removable flag
  bool ro = false;
  std::string vendor, model, serial;  // trimmed; any may be empty
  std::string transport;              // "usb", "mmc", "nvme", "virtio", "scsi", "loop", "dm", "md", "" (unknown)
  std::string pttype;                 // partition table from libblkid: "dos", "gpt", "" (none/unreadable)
  std::string fstype;                 // a filesystem directly on the disk (libblkid)
  std::string label;                  // that filesystem's label (libblkid)
  // What libblkid made of the card: read (pttype/fstype say what it holds,
  // both empty: nothing it knows), ambivalent (signatures that contradict each
  // other), or not read (no permission, no medium, a file, or not probed).
  enum class Content { not_read, read, ambivalent } content = Content::not_read;
  std::vector<PartitionInfo> partitions;
  std::vector<std::string> mountpoints;  // of the whole disk itself
  std::vector<std::string> holders;      // of the disk and all its partitions
  bool swap = false;                     // the disk or one of its partitions is active swap
  bool system = false;                   // holds /, /boot, active swap, or a holder of them
  std::string system_reason;             // "/ is mounted from dm-0 on sda2"
  // Why this device is not offered with default safety options (empty = offered).
  std::vector<std::string> refusals;

  // Mount points of the disk and of every partition.
  std::vector<std::string> all_mountpoints() const;
  // "SanDisk Ultra 32 GiB" style description for confirmations and messages.
  std::string describe() const;
  // What the card holds now, for the question before it is overwritten and
  // the plan: "a dos partition table: sdb1 vfat \"bootfs\", sdb2 ext4
  // \"rootfs\"", "no partition table or file system libblkid knows", ...;
  // "" when the content was not read. Labels are the card's own bytes: print
  // it with rpi::printable.
  std::string contents() const;
};

struct SafetyOptions {
  bool allow_non_removable = false;  // --allow-non-removable
  bool allow_large = false;          // --allow-large (> kLargeDevice)
  bool unmount = false;              // --unmount (mounted partitions are unmounted by prepare_target)
};

inline constexpr std::uint64_t kLargeDevice = 512ull << 30;  // 512 GiB

// Every whole-disk block device under roots.sys/block, sorted by name. Unattached
// loop/nbd devices and ram disks (size 0) are skipped. `refusals` is filled with
// refusal_reasons(info, {}).
std::vector<DeviceInfo> discover(const SystemRoots& roots = {});

// Why `info` may not be written with `opts`; each reason says what was found and,
// where one exists, which flag would change it. Empty = allowed.
std::vector<std::string> refusal_reasons(const DeviceInfo& info, const SafetyOptions& opts);

// Throws rpi::Error(Errc::device) listing refusal_reasons(info, opts), if any.
void check_target(const DeviceInfo& info, const SafetyOptions& opts);

// Resolves `path` (symlinks such as /dev/disk/by-id/...), and describes it. A
// regular file (or a path that does not exist yet outside roots.dev) is a file
// target. Throws Errc::device for a partition (naming its disk), a character
// device, a directory, or a block device missing from sysfs.
// With ContentProbe::read, libblkid reads what the card holds (pttype, fstype,
// the partitions' file systems and labels; about 1 MiB of reads, most of it
// ZFS's labels at both ends); ContentProbe::skip leaves `content` not_read.
enum class ContentProbe { read, skip };
DeviceInfo inspect_target(const std::string& path, const SystemRoots& roots = {},
                          ContentProbe probe = ContentProbe::read);

// Unmounts every mounted partition of `info` (umount2); returns "<source> from
// <mountpoint>" for each. Throws Errc::device naming the mount point on failure.
std::vector<std::string> unmount_all(const DeviceInfo& info);

// inspect_target + (with opts.unmount) unmount_all + inspect again + check_target.
// `unmounted` receives what was unmounted. The card's content is not probed:
// the checks need only sysfs and the mount table, and each probe costs a card
// about 1 MiB of reads just before it is written.
DeviceInfo prepare_target(const std::string& path, const SafetyOptions& opts, const SystemRoots& roots = {},
                          std::vector<std::string>* unmounted = nullptr);

}  // namespace rpi::udev
