#include "rpi/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "rpi/error.hpp"

namespace rpi {

namespace {

// Temporary files a signal handler may remove: fixed storage, so the handler
// touches nothing but atomics, static buffers and unlink(2).
constexpr std::size_t kSlots = 64;
enum : int { kFree = 0, kClaimed = 1, kArmed = 2 };
std::array<std::atomic<int>, kSlots> g_state{};
char g_paths[kSlots][4096];

int arm_cleanup(const std::string& path) {
  if (path.size() >= sizeof g_paths[0]) return -1;
  for (std::size_t i = 0; i < kSlots; ++i) {
    int expected = kFree;
    if (!g_state[i].compare_exchange_strong(expected, kClaimed)) continue;
    std::memcpy(g_paths[i], path.c_str(), path.size() + 1);
    g_state[i].store(kArmed);
    return static_cast<int>(i);
  }
  return -1;  // more than 64 at once: still removed by the destructor, just not on a signal
}

void disarm_cleanup(int slot) {
  if (slot >= 0) g_state[static_cast<std::size_t>(slot)].store(kFree);
}

extern "C" void remove_temps_and_die(int sig) {
  for (std::size_t i = 0; i < kSlots; ++i)
    if (g_state[i].load() == kArmed) ::unlink(g_paths[i]);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

std::string kind_of(mode_t m) {
  if (S_ISBLK(m)) return "a block device";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISDIR(m)) return "a folder";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

// Where the temporaries of `target` go, less the six random characters:
// "<folder>/.<name>.tmp-". The name must fit in NAME_MAX (255) with them: a
// long but valid output name (say 241 bytes) is shortened here, not refused.
std::filesystem::path temp_prefix(const std::filesystem::path& target) {
  std::filesystem::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  std::string stem = target.filename().string();
  if (stem.size() > 200) stem.resize(200);
  return dir / ("." + stem + ".tmp-");
}

}  // namespace

void remove_temporaries_on_signals() {
  struct sigaction sa {};
  sa.sa_handler = remove_temps_and_die;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) sigaction(sig, &sa, nullptr);
}

AtomicFile::AtomicFile(std::filesystem::path target, unsigned mode, Permissions perms) : target_(std::move(target)) {
  // A symbolic link is followed (the file it names is replaced, the link stays);
  // a device node, folder or FIFO is never replaced by a regular file: `-o
  // /dev/sdb` or `--known-hosts /dev/null` must not swap out a device.
  std::error_code ec;
  if (std::filesystem::is_symlink(target_, ec)) {
    std::filesystem::path real = std::filesystem::weakly_canonical(target_, ec);
    if (!ec) target_ = real;
  }
  struct stat st {};
  const bool exists = ::stat(target_.c_str(), &st) == 0;
  if (exists && !S_ISREG(st.st_mode))
    throw Error(Errc::usage, target_.string() + " is " + kind_of(st.st_mode) +
                                 ", not a file this tool may replace; choose another name");
  std::string pattern = temp_prefix(target_).string() + "XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  int fd = ::mkostemp(buf.data(), O_CLOEXEC);
  if (fd < 0) throw_errno("cannot create a file in " + temp_prefix(target_).parent_path().string());
  fd_.reset(fd);
  temp_ = buf.data();
  slot_ = arm_cleanup(temp_.string());
  // Only the group's bits are taken over: the owner's and everybody else's
  // stay as asked (a 0644 file from elsewhere must not make secrets public).
  if (perms == Permissions::keep_existing && exists && ::fchown(fd, static_cast<uid_t>(-1), st.st_gid) == 0)
    mode = (mode & ~070u) | (st.st_mode & 070u);
  if (::fchmod(fd, mode) != 0) {
    int err = errno;
    ::unlink(temp_.c_str());
    disarm_cleanup(slot_);
    throw_errno("cannot set the mode of " + temp_.string(), err);
  }
}

AtomicFile::~AtomicFile() {
  if (!committed_) {
    fd_.reset();
    ::unlink(temp_.c_str());
  }
  disarm_cleanup(slot_);
}

void AtomicFile::commit() {
  int fd = fd_.release();
  if (::close(fd) != 0) throw_errno("cannot write " + target_.string());
  if (::rename(temp_.c_str(), target_.c_str()) != 0) throw_errno("cannot create " + target_.string());
  committed_ = true;
  disarm_cleanup(slot_);
}

void write_file_atomic(const std::filesystem::path& target, const std::string& data, unsigned mode, Permissions perms) {
  AtomicFile out(target, mode, perms);
  write_all(out.fd(), data.data(), data.size(), "cannot write " + target.string());
  out.commit();
}

void create_directories(const std::filesystem::path& dir, const std::string& what, unsigned mode) {
  std::filesystem::path built;
  for (const auto& part : dir) {
    built /= part;
    if (part.empty() || part == "/" || part == "." || part == "..") continue;
    if (::mkdir(built.c_str(), mode) == 0 || errno == EEXIST) continue;
    throw_errno("cannot create " + what + " " + dir.string() + " (at " + built.string() + ")");
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw Error(Errc::io, "cannot create " + what + " " + dir.string() + ": it exists and is not a folder");
}

namespace {

// Whether `name` is `pattern` with any character where it has '?' (mkostemp's
// six), or — `cut` — its first 200 bytes (a temporary of a long name: temp_prefix).
bool fits(std::string_view name, std::string_view pattern, bool cut) {
  if (name.size() != pattern.size() && !(cut && name.size() == 200 && pattern.size() > 200)) return false;
  for (std::size_t i = 0; i < name.size(); ++i)
    if (pattern[i] != '?' && pattern[i] != name[i]) return false;
  return true;
}

// Whether `name` is a temporary of `target` (".<name>.tmp-XXXXXX", `prefix`
// then six characters), or one of what a compressed output builds beside its
// own temporary T: T.bmap (the raw image's block map), and the image
// builder's temporaries of T and T.bmap (".T.tmp-XXXXXX", ".T.bmap.tmp-XXXXXX").
bool is_leftover_name(const std::string& name, const std::string& prefix) {
  const std::string own = prefix + "??????";
  if (fits(name, own, false) || fits(name, own + ".bmap", false)) return true;
  // ".<inner, cut to 200 bytes>.tmp-XXXXXX", as temp_prefix names it.
  constexpr std::string_view kTail = ".tmp-??????";
  if (name.size() < 1 + kTail.size() || name[0] != '.' || !fits(name.substr(name.size() - kTail.size()), kTail, false))
    return false;
  const std::string_view inner = std::string_view(name).substr(1, name.size() - 1 - kTail.size());
  return fits(inner, own, true) || fits(inner, own + ".bmap", true);
}

}  // namespace

std::vector<std::filesystem::path> leftover_temporaries(const std::filesystem::path& target) {
  std::vector<std::filesystem::path> found;
  const std::filesystem::path first = temp_prefix(target);
  const std::string prefix = first.filename().string();
  const std::filesystem::path dir = first.parent_path();
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (is_leftover_name(name, prefix) && it->is_regular_file(ec)) found.push_back(it->path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

}  // namespace rpi
