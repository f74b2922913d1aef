// RAII for libfdisk handles.
#pragma once

#include <libfdisk.h>

#include <memory>

namespace rpi::partition {

struct FdiskContextFree {
  void operator()(fdisk_context* c) const { fdisk_unref_context(c); }
};
struct FdiskPartitionFree {
  void operator()(fdisk_partition* p) const { fdisk_unref_partition(p); }
};
using FdiskContext = std::unique_ptr<fdisk_context, FdiskContextFree>;
using FdiskPartition = std::unique_ptr<fdisk_partition, FdiskPartitionFree>;

// Assigning a device and deassigning it are a pair: this guard deassigns (without a global sync).
class FdiskAssignment {
 public:
  explicit FdiskAssignment(fdisk_context* c) : c_(c) {}
  FdiskAssignment(const FdiskAssignment&) = delete;
  FdiskAssignment& operator=(const FdiskAssignment&) = delete;
  ~FdiskAssignment() { fdisk_deassign_device(c_, 1); }

 private:
  fdisk_context* c_;
};

}  // namespace rpi::partition
