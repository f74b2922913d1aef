#include "partition/mbr.hpp"

#include <cstdio>
#include <cstring>
#include <string>

#include "fdisk_handles.hpp"
#include "rpi/error.hpp"

namespace rpi::partition {

namespace {
void check(int rc, const std::string& name, const std::string& what) {
  if (rc < 0) throw Error(Errc::io, name + ": cannot " + what + ": " + std::strerror(-rc));
}
}  // namespace

void write_mbr(int fd, const std::string& name, std::uint32_t disk_id, const std::vector<MbrPartition>& parts) {
  if (parts.empty() || parts.size() > 4) throw Error(Errc::internal, "write_mbr: 1 to 4 partitions");
  FdiskContext cxt(fdisk_new_context());
  if (!cxt) throw Error(Errc::io, "libfdisk: out of memory");
  check(fdisk_assign_device_by_fd(cxt.get(), fd, name.c_str(), 0), name, "open the partition table");
  FdiskAssignment assigned(cxt.get());
  check(fdisk_create_disklabel(cxt.get(), "dos"), name, "create an MBR");
  // libfdisk parses the id with base 0: always pass the 0x form (tech-brief §3.2).
  char id[16];
  std::snprintf(id, sizeof id, "0x%08x", disk_id);
  check(fdisk_set_disklabel_id_from_string(cxt.get(), id), name, "set the disk identifier");
  fdisk_label* label = fdisk_get_label(cxt.get(), nullptr);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const MbrPartition& p = parts[i];
    FdiskPartition pa(fdisk_new_partition());
    if (!pa) throw Error(Errc::io, "libfdisk: out of memory");
    check(fdisk_partition_set_partno(pa.get(), i), name, "number partition " + std::to_string(i + 1));
    check(fdisk_partition_set_start(pa.get(), p.start_lba), name, "place partition " + std::to_string(i + 1));
    check(fdisk_partition_set_size(pa.get(), p.sectors), name, "size partition " + std::to_string(i + 1));
    fdisk_parttype* type = fdisk_label_get_parttype_from_code(label, p.type);
    if (!type) throw Error(Errc::internal, "libfdisk does not know partition type " + std::to_string(p.type));
    check(fdisk_partition_set_type(pa.get(), type), name, "set the partition type");
    std::size_t partno = 0;
    check(fdisk_add_partition(cxt.get(), pa.get(), &partno), name, "add partition " + std::to_string(i + 1));
    if (partno != i) throw Error(Errc::internal, "libfdisk numbered the partition " + std::to_string(partno + 1));
    if (p.bootable) check(fdisk_toggle_partition_flag(cxt.get(), partno, DOS_FLAG_ACTIVE), name, "set the boot flag");
  }
  check(fdisk_write_disklabel(cxt.get()), name, "write the partition table");
}

}  // namespace rpi::partition
