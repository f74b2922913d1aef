// All-or-nothing output: the file is written under a temporary name in the
// target's folder and renamed over the target by commit(). If commit() is never
// reached (an exception, a failed check), the destructor removes the temporary;
// after remove_temporaries_on_signals(), so does a SIGINT, SIGTERM, SIGHUP or SIGPIPE.
// A symbolic link target is followed; anything but a regular file is refused.
#pragma once

#include <filesystem>

#include "rpi/fd.hpp"

namespace rpi {

class AtomicFile {
 public:
  // Creates the temporary file with `mode` (e.g. 0600 for files holding secrets).
  explicit AtomicFile(std::filesystem::path target, unsigned mode = 0644);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  int fd() const noexcept { return fd_.get(); }
  const std::filesystem::path& target() const noexcept { return target_; }
  const std::filesystem::path& temp_path() const noexcept { return temp_; }

  // Closes the file and renames it over the target. Throws Errc::io on failure
  // (and then the temporary is removed by the destructor).
  void commit();

 private:
  std::filesystem::path target_;
  std::filesystem::path temp_;
  Fd fd_;
  bool committed_ = false;
  int slot_ = -1;  // in the signal handler's list of temporaries
};

// Installs handlers for SIGINT, SIGTERM, SIGHUP and SIGPIPE that remove every live
// AtomicFile temporary, then end the process by the same signal. Commands that
// cancel cooperatively (card writes) install their own handlers afterwards.
void remove_temporaries_on_signals();

// Writes `data` to `target` all-or-nothing with the given mode.
void write_file_atomic(const std::filesystem::path& target, const std::string& data, unsigned mode = 0644);

}  // namespace rpi
