#include "udev/device.hpp"

#include <blkid.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "rpi/error.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"

namespace fs = std::filesystem;

namespace rpi::udev {

namespace {

std::string trim(std::string s) {
  auto not_space = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

// A sysfs attribute, trimmed; "" when absent or unreadable.
std::string attr(const fs::path& p) {
  std::ifstream in(p);
  if (!in) return {};
  std::stringstream ss;
  ss << in.rdbuf();
  return trim(ss.str());
}

std::uint64_t attr_u64(const fs::path& p) {
  std::string s = attr(p);
  if (s.empty()) return 0;
  try {
    return std::stoull(s);
  } catch (...) {
    return 0;
  }
}

std::vector<std::string> list_dir(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    out.push_back(it->path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mount(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() + 0 && std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8)));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

struct Mount {
  std::string devt, mountpoint, source;
};

std::vector<Mount> read_mounts(const SystemRoots& roots) {
  std::vector<Mount> out;
  std::ifstream in(roots.proc / "self" / "mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, devt, root, mp, tok;
    ls >> id >> parent >> devt >> root >> mp;
    while (ls >> tok && tok != "-") {
    }
    std::string fstype, source;
    ls >> fstype >> source;
    out.push_back(Mount{devt, unescape_mount(mp), unescape_mount(source)});
  }
  return out;
}

std::vector<std::string> read_swaps(const SystemRoots& roots) {
  std::vector<std::string> out;
  std::ifstream in(roots.proc / "swaps");
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string name, type;
    ls >> name >> type;
    if (type == "partition") out.push_back(unescape_mount(name));
  }
  return out;
}

// The subsystem names of a sysfs device and its ancestors (lsblk's hotplug rule).
std::vector<std::string> subsystems(const fs::path& sys_root, const fs::path& dev_dir) {
  std::vector<std::string> out;
  std::error_code ec;
  fs::path root = fs::weakly_canonical(sys_root, ec);
  fs::path p = fs::weakly_canonical(dev_dir, ec);
  if (ec) return out;
  while (!p.empty() && p != root && p != p.root_path()) {
    std::error_code ec2;
    fs::path link = fs::read_symlink(p / "subsystem", ec2);
    if (!ec2) out.push_back(link.filename().string());
    p = p.parent_path();
  }
  return out;
}

std::string transport_of(const std::string& name, const std::vector<std::string>& subs) {
  auto has = [&](const char* s) { return std::find(subs.begin(), subs.end(), s) != subs.end(); };
  if (has("usb")) return "usb";
  if (has("mmc")) return "mmc";
  if (has("nvme")) return "nvme";
  if (name.rfind("loop", 0) == 0) return "loop";
  if (name.rfind("dm-", 0) == 0) return "dm";
  if (name.rfind("md", 0) == 0) return "md";
  if (has("virtio")) return "virtio";
  if (has("scsi")) return "scsi";
  return "";
}

// Serial number: mmc/SD cards have device/serial; USB readers carry it on the
// USB device, an ancestor of the disk; virtio/nvme have it on the disk.
std::string serial_of(const fs::path& sys_root, const fs::path& disk_dir) {
  for (const char* rel : {"device/serial", "serial", "device/wwid"}) {
    std::string s = attr(disk_dir / rel);
    if (!s.empty()) return s;
  }
  std::error_code ec;
  fs::path root = fs::weakly_canonical(sys_root, ec);
  fs::path p = fs::weakly_canonical(disk_dir, ec);
  while (!ec && !p.empty() && p != root && p != p.root_path()) {
    std::error_code ec2;
    fs::path link = fs::read_symlink(p / "subsystem", ec2);
    if (!ec2 && link.filename() == "usb") {
      std::string s = attr(p / "serial");
      if (!s.empty()) return s;
    }
    p = p.parent_path();
  }
  return {};
}

struct Probe {
  std::string pttype, fstype, label;
  DeviceInfo::Content content = DeviceInfo::Content::not_read;
};

// libblkid's view of a device node; empty when it can not be read (fake trees,
// no medium, no permission).
Probe probe(const fs::path& node) {
  Probe r;
  std::error_code ec;
  if (!fs::exists(node, ec)) return r;
  blkid_probe pr = blkid_new_probe_from_filename(node.c_str());
  if (!pr) return r;
  blkid_probe_enable_partitions(pr, 1);
  blkid_probe_set_partitions_flags(pr, BLKID_PARTS_ENTRY_DETAILS);
  blkid_probe_enable_superblocks(pr, 1);
  blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_LABEL);
  const int rc = blkid_do_safeprobe(pr);
  if (rc == 1) r.content = DeviceInfo::Content::read;  // nothing libblkid knows
  if (rc == -2) r.content = DeviceInfo::Content::ambivalent;
  if (rc == 0) {
    r.content = DeviceInfo::Content::read;
    const char* v = nullptr;
    if (blkid_probe_lookup_value(pr, "PTTYPE", &v, nullptr) == 0 && v) r.pttype = v;
    if (blkid_probe_lookup_value(pr, "TYPE", &v, nullptr) == 0 && v) r.fstype = v;
    if (blkid_probe_lookup_value(pr, "LABEL", &v, nullptr) == 0 && v) r.label = v;
  }
  blkid_free_probe(pr);
  return r;
}

void append_unique(std::vector<std::string>& v, const std::string& s) {
  if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
}

// One whole-disk device from roots.sys/block/<name>, without the system-wide
// context (mounts, swaps, system disk) that discover() adds.
DeviceInfo read_disk(const SystemRoots& roots, const std::string& name, bool with_probe = true) {
  fs::path dir = roots.sys / "block" / name;
  DeviceInfo d;
  d.name = name;
  d.path = (roots.dev / name).string();
  d.devt = attr(dir / "dev");
  d.size = attr_u64(dir / "size") * 512;  // always 512-byte units
  std::uint64_t lbs = attr_u64(dir / "queue" / "logical_block_size");
  d.logical_sector = lbs ? static_cast<std::uint32_t>(lbs) : 512;
  d.removable = attr(dir / "removable") == "1";
  d.ro = attr(dir / "ro") == "1";
  d.vendor = attr(dir / "device" / "vendor");
  if (d.vendor.rfind("0x", 0) == 0) d.vendor.clear();  // a PCI/virtio vendor id, not a name
  d.model = attr(dir / "device" / "model");
  if (d.model.empty()) d.model = attr(dir / "device" / "name");  // mmc/SD: the card's product name
  d.serial = serial_of(roots.sys, dir);
  d.transport = transport_of(name, subsystems(roots.sys, dir));
  d.holders = list_dir(dir / "holders");
  for (const auto& sub : list_dir(dir)) {
    fs::path pdir = dir / sub;
    std::error_code ec;
    if (!fs::exists(pdir / "partition", ec)) continue;
    PartitionInfo p;
    p.name = sub;
    p.path = (roots.dev / sub).string();
    p.devt = attr(pdir / "dev");
    p.size = attr_u64(pdir / "size") * 512;
    p.holders = list_dir(pdir / "holders");
    for (const auto& h : p.holders) append_unique(d.holders, h);
    d.partitions.push_back(std::move(p));
  }
  if (with_probe && d.size > 0) {
    Probe pr = probe(d.path);
    d.pttype = pr.pttype;
    d.fstype = pr.fstype;
    d.label = pr.label;
    d.content = pr.content;
    for (auto& p : d.partitions) {
      Probe pp = probe(p.path);
      p.fstype = pp.fstype;
      p.label = pp.label;
      p.content_read = pp.content != DeviceInfo::Content::not_read;
    }
  }
  return d;
}

bool skipped(const DeviceInfo& d) {
  auto starts = [&](const char* p) { return d.name.rfind(p, 0) == 0; };
  if (starts("ram") || starts("zram")) return true;
  return d.size == 0 && (starts("loop") || starts("nbd"));
}

// The whole-disk names that a device (disk, partition, dm or md node) lives on,
// following dm/md slaves down to real disks.
void underlying_disks(const std::vector<DeviceInfo>& disks, const SystemRoots& roots, const std::string& name,
                      std::set<std::string>& out, int depth = 0) {
  if (depth > 8) return;
  for (const auto& d : disks) {
    bool is_disk = d.name == name;
    bool is_part = std::any_of(d.partitions.begin(), d.partitions.end(), [&](auto& p) { return p.name == name; });
    if (!is_disk && !is_part) continue;
    fs::path dir = is_disk ? roots.sys / "block" / name : roots.sys / "block" / d.name / name;
    auto slaves = list_dir(dir / "slaves");
    if (slaves.empty()) {
      out.insert(d.name);
    } else {
      for (const auto& s : slaves) underlying_disks(disks, roots, s, out, depth + 1);
    }
  }
}

// The kernel name of a block device node given as a mount source or swap file
// ("/dev/sda2", "/dev/mapper/root"), or of a devt; "" when not a block device.
std::string name_for(const std::vector<DeviceInfo>& disks, const SystemRoots& roots, const std::string& devt,
                     const std::string& source) {
  if (!devt.empty() && devt.rfind("0:", 0) != 0) {
    for (const auto& d : disks) {
      if (d.devt == devt) return d.name;
      for (const auto& p : d.partitions)
        if (p.devt == devt) return p.name;
    }
  }
  if (source.rfind("/dev/", 0) == 0) {
    fs::path node = roots.dev / source.substr(5);
    std::error_code ec;
    fs::path real = fs::canonical(node, ec);
    std::string base = (ec ? node : real).filename().string();
    for (const auto& d : disks) {
      if (d.name == base) return d.name;
      for (const auto& p : d.partitions)
        if (p.name == base) return p.name;
    }
  }
  return {};
}

// Adds mounts, swaps and the system-disk flag to every disk.
void add_context(std::vector<DeviceInfo>& disks, const SystemRoots& roots) {
  auto mounts = read_mounts(roots);
  auto swaps = read_swaps(roots);
  for (auto& d : disks) {
    for (const auto& m : mounts) {
      bool by_source = m.source == "/dev/" + d.name;
      if ((!d.devt.empty() && m.devt == d.devt) || by_source) append_unique(d.mountpoints, m.mountpoint);
      for (auto& p : d.partitions)
        if ((!p.devt.empty() && m.devt == p.devt) || m.source == "/dev/" + p.name)
          append_unique(p.mountpoints, m.mountpoint);
    }
    for (const auto& s : swaps) {
      if (s == "/dev/" + d.name) d.swap = true;
      for (auto& p : d.partitions)
        if (s == "/dev/" + p.name) p.swap = d.swap = true;
    }
  }
  // The disks under /, /boot and active swap, through dm/md holders.
  auto mark = [&](const std::string& name, const std::string& what) {
    if (name.empty()) return;
    std::set<std::string> under;
    underlying_disks(disks, roots, name, under);
    // The device itself (a dm/md node holding swap or /) is as untouchable as its slaves.
    for (const auto& d : disks)
      if (d.name == name ||
          std::any_of(d.partitions.begin(), d.partitions.end(), [&](auto& p) { return p.name == name; }))
        under.insert(d.name);
    for (auto& d : disks) {
      if (!under.count(d.name) || d.system) continue;
      d.system = true;
      d.system_reason = what + (name == d.name || what.find(name) != std::string::npos ? "" : " (on " + name + ")");
    }
  };
  for (const auto& m : mounts) {
    if (m.mountpoint == "/" || m.mountpoint == "/boot" || m.mountpoint == "/boot/efi" || m.mountpoint == "/usr")
      mark(name_for(disks, roots, m.devt, m.source), "it holds " + m.mountpoint);
  }
  for (const auto& s : swaps) mark(name_for(disks, roots, "", s), "it holds active swap " + s);
}

}  // namespace

std::vector<std::string> DeviceInfo::all_mountpoints() const {
  std::vector<std::string> out = mountpoints;
  for (const auto& p : partitions)
    for (const auto& m : p.mountpoints) append_unique(out, m);
  return out;
}

std::string DeviceInfo::describe() const {
  std::vector<std::string> parts;
  if (!vendor.empty()) parts.push_back(vendor);
  if (!model.empty()) parts.push_back(model);
  if (is_file) parts.push_back("file");
  parts.push_back(format_size(size));
  if (!serial.empty()) parts.push_back("serial " + serial);
  return join(parts, " ");
}

std::string DeviceInfo::contents() const {
  if (is_file || content == Content::not_read) return {};
  if (content == Content::ambivalent)
    return "signatures that contradict each other (libblkid will not say which is valid)";
  auto labelled = [](const std::string& type, const std::string& lbl) {
    std::string s = type.empty() ? std::string("no file system libblkid knows") : type;
    if (!lbl.empty()) s += " \"" + printable(lbl) + "\"";  // the card's bytes: no line breaks, no escapes
    return s;
  };
  if (!fstype.empty()) return "a whole-disk " + labelled(fstype, label) + ", no partition table";
  if (pttype.empty()) return "no partition table or file system libblkid knows (blank, or unknown data)";
  std::string s = "a " + pttype + " partition table";
  if (partitions.empty()) return s + " (the kernel lists no partitions of it)";
  constexpr std::size_t kShown = 6;
  std::vector<std::string> parts;
  for (std::size_t i = 0; i < partitions.size() && i < kShown; ++i)
    parts.push_back(partitions[i].name + " " +
                    (partitions[i].content_read ? labelled(partitions[i].fstype, partitions[i].label)
                                                : std::string("(could not be read)")));
  if (partitions.size() > kShown) parts.push_back(std::to_string(partitions.size() - kShown) + " more");
  return s + ": " + join(parts, ", ");
}

std::vector<DeviceInfo> discover(const SystemRoots& roots) {
  std::vector<DeviceInfo> disks;
  for (const auto& name : list_dir(roots.sys / "block")) {
    DeviceInfo d = read_disk(roots, name);
    if (!skipped(d)) disks.push_back(std::move(d));
  }
  add_context(disks, roots);
  for (auto& d : disks) d.refusals = refusal_reasons(d, {});
  return disks;
}

std::vector<std::string> refusal_reasons(const DeviceInfo& d, const SafetyOptions& opts) {
  std::vector<std::string> r;
  if (d.is_file) return r;
  // No flag changes this one, so the other reasons (and their flags) are noise.
  if (d.system) return {"it is a system disk: " + d.system_reason + " (never written)"};
  if (d.swap && !d.system) r.push_back("it holds active swap");
  if (d.size == 0) r.push_back("its size is 0 (no medium in the reader?)");
  if (d.ro) r.push_back("it is read-only (check the card's write-protect switch)");
  if (d.logical_sector != 512)
    r.push_back("its logical sector size is " + std::to_string(d.logical_sector) + " bytes, not 512");
  if (!d.holders.empty())
    r.push_back("it is in use by " + join(d.holders, ", ") + " (device-mapper/RAID); stop those first");
  bool hotplug = d.transport == "usb" || d.transport == "mmc";
  if (!d.removable && !hotplug && !opts.allow_non_removable)
    r.push_back("it is not removable and not on USB/MMC (transport " +
                (d.transport.empty() ? std::string("unknown") : d.transport) + "); --allow-non-removable permits it");
  if (d.size > kLargeDevice && !opts.allow_large)
    r.push_back("it is larger than 512 GiB (" + format_size(d.size) + "); --allow-large permits it");
  auto mps = d.all_mountpoints();
  if (!mps.empty() && !opts.unmount && !d.system)
    r.push_back("it has mounted partitions (" + join(mps, ", ") + "); --unmount unmounts them first");
  return r;
}

void check_target(const DeviceInfo& info, const SafetyOptions& opts) {
  auto r = refusal_reasons(info, opts);
  if (r.empty()) return;
  throw Error(Errc::device, "refusing to write " + info.path + " (" + info.describe() + "): " + join(r, "; "));
}

DeviceInfo inspect_target(const std::string& path, const SystemRoots& roots, ContentProbe probe) {
  std::error_code ec;
  fs::path real = fs::canonical(path, ec);
  if (ec) {
    // A symbolic link to nothing (a card that is gone, a stale by-id link) is not
    // a new image file: creating it would create its target, e.g. a regular file
    // where a /dev node belongs, which the check below cannot see.
    std::error_code lec;
    if (fs::is_symlink(fs::symlink_status(path, lec)))
      throw Error(Errc::device, path + " is a symbolic link to " + fs::read_symlink(path, lec).string() +
                                    ", which does not exist (is the card still there?); list cards with "
                                    "`rpi-provision devices`");
    // A new image file may be created, but never a node under /dev.
    fs::path abs = fs::absolute(path);
    fs::path devroot = fs::weakly_canonical(roots.dev);
    auto rel = fs::weakly_canonical(abs).lexically_relative(devroot);
    bool under_dev = !rel.empty() && rel.native().rfind("..", 0) != 0;
    if (under_dev || !fs::is_directory(abs.parent_path()))
      throw Error(Errc::device, path + " does not exist; list cards with `rpi-provision devices`");
    DeviceInfo d;
    d.path = path;
    d.is_file = true;
    return d;
  }
  struct stat st {};
  if (::stat(real.c_str(), &st) != 0) throw_errno("cannot stat " + real.string());
  if (S_ISREG(st.st_mode)) {
    DeviceInfo d;
    d.path = path;
    d.is_file = true;
    d.size = static_cast<std::uint64_t>(st.st_size);
    return d;
  }
  if (!S_ISBLK(st.st_mode))
    throw Error(Errc::device, path + " is neither a block device nor a regular file; give a card such as /dev/sdb");
  std::string devt = std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
  fs::path sysdir = fs::canonical(roots.sys / "dev" / "block" / devt, ec);
  if (ec)
    throw Error(Errc::device, path + " (block device " + devt + ") is not in " + roots.sys.string() + "/dev/block");
  if (fs::exists(sysdir / "partition")) {
    std::string disk = sysdir.parent_path().filename().string();
    throw Error(Errc::device, path + " is a partition; give the whole disk " + (roots.dev / disk).string());
  }
  std::string name = sysdir.filename().string();
  // The whole-system scan gives mounts, swaps and the system disk.
  std::vector<DeviceInfo> all;
  // libblkid only for the target: other disks may be slow or busy.
  for (const auto& n : list_dir(roots.sys / "block"))
    all.push_back(read_disk(roots, n, n == name && probe == ContentProbe::read));
  add_context(all, roots);
  for (auto& d : all) {
    if (d.name != name) continue;
    d.path = real.string();
    d.refusals = refusal_reasons(d, {});
    return d;
  }
  throw Error(Errc::device, path + " (" + name + ") is not a whole disk in " + roots.sys.string() + "/block");
}

std::vector<std::string> unmount_all(const DeviceInfo& info) {
  std::vector<std::string> done;
  auto one = [&](const std::string& node, const std::vector<std::string>& mps) {
    // Deepest first, so nested mounts come off before their parents.
    std::vector<std::string> sorted = mps;
    std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.size() > b.size(); });
    for (const auto& mp : sorted) {
      if (::umount2(mp.c_str(), 0) != 0)
        throw Error(Errc::device, "cannot unmount " + mp + " (" + node + "): " + std::strerror(errno) +
                                      "; close the programs using it and try again");
      done.push_back(node + " from " + mp);
    }
  };
  one(info.path, info.mountpoints);
  for (const auto& p : info.partitions) one(p.path, p.mountpoints);
  return done;
}

DeviceInfo prepare_target(const std::string& path, const SafetyOptions& opts, const SystemRoots& roots,
                          std::vector<std::string>* unmounted) {
  DeviceInfo d = inspect_target(path, roots, ContentProbe::skip);
  if (opts.unmount && !d.is_file && !d.system && !d.all_mountpoints().empty()) {
    auto u = unmount_all(d);
    if (unmounted) unmounted->insert(unmounted->end(), u.begin(), u.end());
    d = inspect_target(path, roots, ContentProbe::skip);
  }
  check_target(d, opts);
  return d;
}

}  // namespace rpi::udev
