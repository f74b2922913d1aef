#include "rpi/folder_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cerrno>
#include <map>
#include <utility>

namespace rpi {

FolderLocks::FolderLocks(const std::vector<std::filesystem::path>& files) {
  std::map<std::pair<dev_t, ino_t>, Fd> dirs;
  for (const auto& file : files) {
    const std::filesystem::path dir = file.parent_path();
    Fd fd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    struct stat st {};
    if (!fd || ::fstat(fd.get(), &st) != 0) continue;
    dirs.try_emplace({st.st_dev, st.st_ino}, std::move(fd));
  }
  for (auto& [id, fd] : dirs) {
    int rc;
    while ((rc = ::flock(fd.get(), LOCK_EX)) != 0 && errno == EINTR) {
    }
    if (rc == 0) held_.push_back(std::move(fd));
  }
}

}  // namespace rpi
