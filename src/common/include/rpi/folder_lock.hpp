// The lock a run takes on an output folder while it renames its finished files
// into place: two runs writing the same output at once must not leave one's
// image beside the other's .bmap (it happened: bmaptool then failed the
// checksums). An exclusive flock of each folder, held only for the renames:
// builds into one folder still run side by side.
#pragma once

#include <filesystem>
#include <vector>

#include "rpi/fd.hpp"

namespace rpi {

class FolderLocks {
 public:
  // Locks the folder of each file in `files` (the current folder for a bare
  // name), waiting for other holders. Each folder is locked once (by device and
  // inode) and in that order, so two runs cannot deadlock. A folder that cannot
  // be opened or locked (NFS without locks) is left unlocked: the renames go
  // ahead, and report what is wrong themselves.
  explicit FolderLocks(const std::vector<std::filesystem::path>& files);
  FolderLocks(const FolderLocks&) = delete;
  FolderLocks& operator=(const FolderLocks&) = delete;
  ~FolderLocks() = default;  // closing a descriptor releases its lock

 private:
  std::vector<Fd> held_;
};

}  // namespace rpi
