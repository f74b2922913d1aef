// Helpers shared by every test binary.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace rpi::test {

struct CommandResult {
  int exit_code = -1;  // -1 if killed by a signal
  std::string out;
  std::string err;
};

// Runs `argv` (no shell) with optional stdin text; captures stdout and stderr.
CommandResult run(const std::vector<std::string>& argv, const std::string& input = "");
// Runs a shell command line with /bin/sh -c.
CommandResult sh(const std::string& command);
// Runs the built rpi-provision with these arguments.
CommandResult cli(const std::vector<std::string>& args, const std::string& input = "");

// `argv` run under a tracer (strace, gdb): through env(1) with ASAN_OPTIONS
// ending in detect_leaks=0, since LeakSanitizer cannot work under ptrace and
// fails the traced program's exit (in a sanitizer build; harmless elsewhere).
std::vector<std::string> without_leak_check(std::vector<std::string> argv);

// True if `tool` is on PATH (or is an absolute executable path).
bool have_tool(const std::string& tool);
// Sectors read from the block device `dev` (/dev/NAME) so far: field 3 of
// /sys/block/NAME/stat (0 when it cannot be read).
std::uint64_t sectors_read(const std::string& dev);

// A fresh folder under the build tree, removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

std::filesystem::path source_dir();
std::filesystem::path binary_dir();
std::filesystem::path cli_path();

// The Alpine-like RPi fixture tarball made by scripts/make-fixture-tarball, cached
// in the build tree by its arguments (e.g. {"--size-mb", "4"}).
std::filesystem::path fixture_tarball(const std::vector<std::string>& args = {});

std::string read_file(const std::filesystem::path& p);
void write_file(const std::filesystem::path& p, const std::string& data);

// `p` as one word of a shell command line (single-quoted; a ' in it too).
std::string shell_quoted(const std::filesystem::path& p);
// Every path under `dir`, at any depth, one per line ("" when it is empty):
// what a run left in its scratch folder.
std::string files_under(const std::filesystem::path& dir);

// Everything written to `fd` (1 or 2, whose stdio stream is `stream`) while
// `f` runs, by way of `file`.
template <class F>
std::string capture_fd(int fd, std::FILE* stream, const std::filesystem::path& file, F&& f) {
  std::fflush(stream);
  const int saved = ::dup(fd);
  const int to = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ::dup2(to, fd);
  ::close(to);
  f();
  std::fflush(stream);
  ::dup2(saved, fd);
  ::close(saved);
  return read_file(file);
}
// Everything written to standard error (fd 2) while `f` runs, by way of `file`.
template <class F>
std::string capture_stderr(const std::filesystem::path& file, F&& f) {
  return capture_fd(2, stderr, file, std::forward<F>(f));
}
// Everything written to standard output (fd 1) while `f` runs, by way of `file`.
template <class F>
std::string capture_stdout(const std::filesystem::path& file, F&& f) {
  return capture_fd(1, stdout, file, std::forward<F>(f));
}

// The mapped block ranges of a .bmap file, [first, last] in 4 KiB blocks.
std::vector<std::pair<std::uint64_t, std::uint64_t>> bmap_ranges(const std::filesystem::path& bmap);

}  // namespace rpi::test

// Skips the current test, visibly, when a tool is missing.
#define RPI_REQUIRE_TOOL(tool)                                                         \
  do {                                                                                 \
    if (!::rpi::test::have_tool(tool)) GTEST_SKIP() << "tool not installed: " << tool; \
  } while (0)
