#include "rpi/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "rpi/error.hpp"

namespace rpi {

AtomicFile::AtomicFile(std::filesystem::path target, unsigned mode) : target_(std::move(target)) {
  std::filesystem::path dir = target_.parent_path();
  if (dir.empty()) dir = ".";
  std::string pattern = (dir / ("." + target_.filename().string() + ".tmp-XXXXXX")).string();
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  int fd = ::mkostemp(buf.data(), O_CLOEXEC);
  if (fd < 0) throw_errno("cannot create a file in " + dir.string());
  fd_.reset(fd);
  temp_ = buf.data();
  if (::fchmod(fd, mode) != 0) {
    int err = errno;
    ::unlink(temp_.c_str());
    throw_errno("cannot set the mode of " + temp_.string(), err);
  }
}

AtomicFile::~AtomicFile() {
  if (!committed_) {
    fd_.reset();
    ::unlink(temp_.c_str());
  }
}

void AtomicFile::commit() {
  int fd = fd_.release();
  if (::close(fd) != 0) throw_errno("cannot write " + target_.string());
  if (::rename(temp_.c_str(), target_.c_str()) != 0) throw_errno("cannot create " + target_.string());
  committed_ = true;
}

void write_file_atomic(const std::filesystem::path& target, const std::string& data, unsigned mode) {
  AtomicFile out(target, mode);
  write_all(out.fd(), data.data(), data.size(), "cannot write " + target.string());
  out.commit();
}

}  // namespace rpi
