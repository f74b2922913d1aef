// All-or-nothing output: the file is written under a temporary name in the
// target's folder and renamed over the target by commit(). If commit() is never
// reached (an exception, a failed check), the destructor removes the temporary;
// after remove_temporaries_on_signals(), so does a SIGINT, SIGTERM, SIGHUP or SIGPIPE.
// A symbolic link target is followed; anything but a regular file is refused.
#pragma once

#include <filesystem>
#include <vector>

#include "rpi/fd.hpp"

namespace rpi {

// What a replaced file's permissions become: `mode` as given, or `mode` with
// the group and group bits of the file being replaced, so that access a user
// granted to a served file (chgrp www-data; chmod 640) survives a rebuild.
// Owner and other bits always come from `mode`. The old group bits are taken
// only where the old group could be set too (else they would apply to another
// group): otherwise `mode` is used as given.
enum class Permissions { given, keep_existing };

class AtomicFile {
 public:
  // Creates the temporary file with `mode` (e.g. 0600 for files holding secrets).
  explicit AtomicFile(std::filesystem::path target, unsigned mode = 0644, Permissions perms = Permissions::given);
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

// Temporaries of `target` that a killed run left (SIGKILL, power loss: no
// handler ran), by name: ".<target's name>.tmp-XXXXXX" in its folder, and what
// a compressed output (pi.img.xz) builds beside such a temporary T: "T.bmap"
// and the image builder's ".T.tmp-XXXXXX" and ".T.bmap.tmp-XXXXXX" (the raw
// image, with its secrets). One that a run writing `target` right now uses
// looks the same.
std::vector<std::filesystem::path> leftover_temporaries(const std::filesystem::path& target);

// Writes `data` to `target` all-or-nothing with the given mode.
void write_file_atomic(const std::filesystem::path& target, const std::string& data, unsigned mode = 0644,
                       Permissions perms = Permissions::given);

// Creates `dir` and its missing parents with `mode` (less the umask), like
// `mkdir -p -m`: a umask of 0 must not leave folders writable by everyone.
// Folders that exist are left as they are. Throws Errc::io naming `what`.
void create_directories(const std::filesystem::path& dir, const std::string& what, unsigned mode = 0755);

}  // namespace rpi
