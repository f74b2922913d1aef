// The one error type every rpi-provision library throws. Libraries never print
// and never exit: they throw rpi::Error with a message that already names the
// file, entry, URL or device involved; main() picks the text and exit code.
#pragma once

#include <atomic>
#include <cerrno>
#include <stdexcept>
#include <string>

namespace rpi {

enum class Errc {
  usage,     // bad command line (exit 2)
  spec,      // bad spec file (exit 2)
  input,     // bad input data: tarball, apkovl, image, bmap (exit 1)
  io,        // local file system or OS call failed (exit 1)
  network,   // download failed (exit 1)
  verify,    // a digest, signature or read-back did not match (exit 1)
  device,    // a target device was refused or failed (exit 1)
  internal,  // a bug (exit 1)
};

class Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& message) : std::runtime_error(message), code_(code) {}
  Errc code() const noexcept { return code_; }

 private:
  Errc code_;
};

// The user stopped the run (Ctrl-C, SIGTERM, ... seen through a cancel flag).
// Not an Error on purpose: nothing that retries, or tries the next mirror,
// after a failure may catch it. The caller that set the flag reports it.
class Cancelled : public std::exception {
 public:
  const char* what() const noexcept override { return "cancelled"; }
};

// True when `flag` is given and set.
inline bool cancelled(const std::atomic<bool>* flag) noexcept {
  return flag && flag->load(std::memory_order_relaxed);
}

// Throws Errc::io with "<what>: <strerror(err)>".
[[noreturn]] void throw_errno(const std::string& what, int err = errno);

// The textual name of an error class, as used in JSON events ("io", "spec", ...).
const char* errc_name(Errc code) noexcept;

}  // namespace rpi
