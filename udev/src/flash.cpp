#include "udev/flash.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <tuple>

#include "partition/reader.hpp"
#include "rpi/fd.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"
#include "udev/capacity_probe.hpp"

namespace fs = std::filesystem;

namespace rpi::udev {

namespace {

constexpr std::uint64_t kMiB = 1u << 20;
constexpr std::size_t kAlign = 4096;

// One heap buffer aligned for O_DIRECT.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(std::size_t size) : size_(size) {
    if (::posix_memalign(&p_, kAlign, size) != 0) throw Error(Errc::io, "out of memory for an I/O buffer");
    std::memset(p_, 0, size);
  }
  ~AlignedBuffer() { std::free(p_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  unsigned char* data() const noexcept { return static_cast<unsigned char*>(p_); }
  std::size_t size() const noexcept { return size_; }

 private:
  void* p_ = nullptr;
  std::size_t size_;
};

struct Piece {
  std::uint64_t offset = 0, length = 0;
};

// The mapped ranges cut at multiples of `chunk` (so writes are chunk-aligned)
// and at 1 MiB (the MBR region, written last).
std::vector<Piece> pieces_of(const partition::BlockMap& map, std::uint64_t chunk) {
  std::vector<Piece> out;
  for (const auto& e : map.extents()) {
    std::uint64_t cur = e.offset, end = e.offset + e.length;
    while (cur < end) {
      std::uint64_t next = std::min(end, (cur / chunk + 1) * chunk);
      if (cur < kMiB) next = std::min(next, kMiB);
      out.push_back(Piece{cur, next - cur});
      cur = next;
    }
  }
  return out;
}

// An open target: the exclusive, locked descriptor and what we know about it.
struct Target {
  std::string path;
  Fd fd;
  bool block = false;
  bool direct = false;
  bool created = false;    // a file made for this write: every byte a hole, nothing old in it
  std::uint64_t size = 0;  // the device's or the file's size
};

std::string errno_text(int err) {
  return std::strerror(err);
}

void lock_exclusive(const Target& t) {
  // udevd holds LOCK_SH briefly while probing; wait a little for it.
  for (int i = 0; i < 60; ++i) {
    if (::flock(t.fd.get(), LOCK_EX | LOCK_NB) == 0) return;
    if (errno != EWOULDBLOCK && errno != EINTR) throw_errno("cannot lock " + t.path);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw Error(Errc::device, t.path + " is locked by another program (flock); wait for it to finish or close it");
}

Target open_block(const DeviceInfo& info, bool for_write) {
  Target t;
  t.path = info.path;
  t.block = true;
  int base = (for_write ? O_RDWR | O_EXCL : O_RDONLY) | O_CLOEXEC;
  int fd = ::open(info.path.c_str(), base | O_DIRECT);
  t.direct = fd >= 0;
  if (fd < 0 && errno == EINVAL) fd = ::open(info.path.c_str(), base);
  if (fd < 0) {
    int err = errno;
    if (err == EBUSY)
      throw Error(Errc::device, info.path +
                                    " is busy: another program holds it open exclusively or one of its "
                                    "partitions is mounted (" +
                                    errno_text(err) + "); unmount it or close that program");
    throw Error(Errc::device, "cannot open " + info.path + ": " + errno_text(err) +
                                  (err == EACCES ? " (run as root or join the rpi-provision group)" : ""));
  }
  t.fd.reset(fd);
  // The node must still be the device that was checked (no sdb -> sdc re-enumeration).
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno("cannot stat " + info.path);
  std::string devt = std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
  if (!S_ISBLK(st.st_mode) || (!info.devt.empty() && devt != info.devt))
    throw Error(Errc::device, info.path + " changed since it was checked (now " + devt + ", was " + info.devt +
                                  "); list the cards again");
  if (for_write) lock_exclusive(t);
  std::uint64_t size = 0;
  if (::ioctl(fd, BLKGETSIZE64, &size) != 0) throw_errno("cannot read the size of " + info.path);
  t.size = size;
  int ssz = 0;
  if (::ioctl(fd, BLKSSZGET, &ssz) == 0 && ssz != 512)
    throw Error(Errc::device, "refusing to write " + info.path + ": its logical sector size is " + std::to_string(ssz) +
                                  " bytes, not 512");
  return t;
}

// The card (or the file standing in for one) must hold the whole image.
void check_fits(const Target& t, std::uint64_t image_size) {
  if (t.size < image_size)
    throw Error(Errc::device, "refusing to write " + t.path + ": it has " + format_size(t.size) +
                                  " but the image needs " + format_size(image_size) + "; use a larger card");
}

// A regular file as a target. An existing one stands in for a card and is
// written like one: its size is kept (bytes beyond the image stay), and it
// must hold the image. A new one is created 0600 with the image's size, all
// holes. Either way it gets what a card can hold, secrets too (Wi-Fi keys,
// SSH host keys), so an existing file that group or others can read is made
// 0600 first (a "note" says so).
Target open_file_for_write(const DeviceInfo& info, std::uint64_t image_size, const EventSink& events) {
  Target t;
  t.path = info.path;
  // O_EXCL: a path that appeared since it was checked is not taken for new.
  int fd = ::open(info.path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  t.created = fd >= 0;
  if (fd < 0 && errno == EEXIST) fd = ::open(info.path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) throw_errno("cannot open " + info.path);
  t.fd.reset(fd);
  lock_exclusive(t);
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno("cannot stat " + info.path);
  if (!S_ISREG(st.st_mode))
    throw Error(Errc::device, info.path +
                                  " changed since it was checked (it is no longer a regular file); list the "
                                  "cards again");
  if (t.created) {
    if (::ftruncate(fd, static_cast<off_t>(image_size)) != 0) throw_errno("cannot resize " + info.path);
    t.size = image_size;
    return t;
  }
  t.size = static_cast<std::uint64_t>(st.st_size);
  check_fits(t, image_size);
  if (st.st_mode & (S_IRGRP | S_IROTH)) {
    const std::string was = octal_mode(st.st_mode);
    if (::fchmod(fd, S_IRUSR | S_IWUSR) != 0) {
      int err = errno;
      throw Error(Errc::device, "refusing to write " + info.path + ": group or others can read it (mode " + was +
                                    ") and it cannot be made private (" + errno_text(err) +
                                    "), but a card can hold secrets (Wi-Fi keys, SSH host keys); run "
                                    "`chmod 600 " +
                                    info.path + "` as its owner first");
    }
    emit(events, Event{"note", info.path, 0, 0,
                       info.path + " was readable by group or others (mode " + was +
                           "); a card can hold secrets (Wi-Fi keys, SSH host keys), so it is now mode 0600"});
  }
  return t;
}

void sync_target(const Target& t) {
  if (::fdatasync(t.fd.get()) != 0) throw_errno("cannot flush " + t.path + " (fdatasync)");
}

// Drops cached pages so the read-back really comes from the medium.
void drop_cache(const Target& t) {
  if (t.direct) return;
  if (t.block) (void)::ioctl(t.fd.get(), BLKFLSBUF, 0);  // needs CAP_SYS_ADMIN; fadvise below otherwise
  (void)::posix_fadvise(t.fd.get(), 0, 0, POSIX_FADV_DONTNEED);
}

void zero_range(const Target& t, std::uint64_t offset, std::uint64_t length, AlignedBuffer& zeros) {
  std::memset(zeros.data(), 0, zeros.size());
  while (length > 0) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(length, zeros.size()));
    pwrite_all(t.fd.get(), zeros.data(), n, offset, "cannot write " + t.path + " at byte " + std::to_string(offset));
    offset += n;
    length -= n;
  }
}

// Zeroes the first MiB (best effort): a card we could not finish must not look
// valid. False when that failed (e.g. the card is gone).
bool invalidate(const Target& t) {
  try {
    AlignedBuffer zeros(kMiB);
    zero_range(t, 0, std::min<std::uint64_t>(kMiB, t.size), zeros);
    return ::fdatasync(t.fd.get()) == 0;
  } catch (...) {
    return false;
  }
}

// A failed write to a card that is no longer there (or smaller than when it
// was opened) says so: "No space left on device" alone sends users looking
// for the wrong problem.
[[noreturn]] void rethrow_write_error(const Target& t, const Error& e) {
  std::uint64_t now = 0;
  if (t.block && ::ioctl(t.fd.get(), BLKGETSIZE64, &now) == 0 && now < t.size)
    throw Error(Errc::io, t.path + " disappeared or shrank while it was being written (it now has " +
                              std::to_string(now) + " bytes, it had " + std::to_string(t.size) +
                              "): was the card or reader removed? Insert it and write it again (" + e.what() + ")");
  throw e;
}

// Why a card that failed after it was opened does not look valid — or that it
// might: `zeroed_now` is invalidate()'s result, `head_zeroed` whether the old
// first MiB was already zeroed when writing began (the MBR is written last).
std::string invalid_note(const Target& t, bool zeroed_now, bool head_zeroed) {
  const std::string its = t.block ? "its" : "the file's";
  if (zeroed_now) return " (" + its + " first MiB was zeroed so it does not look valid); write it again";
  if (head_zeroed)
    return " (" + its +
           " first MiB was zeroed before writing began and the MBR is written last, so it does not look valid); "
           "write it again";
  return " (it could not be marked invalid: do not boot it); write it again";
}

std::uint64_t padded(const Target& t, std::uint64_t len) {
  return t.direct ? (len + 511) / 512 * 512 : len;
}

// Reads a piece of the image into buf (zero-padded to the O_DIRECT size).
void read_source(int src_fd, const FlashSource& src, const Piece& p, AlignedBuffer& buf, std::uint64_t pad_len) {
  std::size_t got = pread_full(src_fd, buf.data(), p.length, p.offset, "cannot read " + src.display_name());
  if (got != p.length)
    throw Error(Errc::input, src.display_name() + " is shorter than its block map says (at byte " +
                                 std::to_string(p.offset + got) + ")");
  if (pad_len > p.length) std::memset(buf.data() + p.length, 0, pad_len - p.length);
}

// Runs produce(i, buf) on a helper thread and consume(i, buf) on the calling
// thread with `depth` buffers in flight, so reading and hashing overlap the
// device I/O. An exception from either side stops both and is rethrown here
// (a producer error only after the pieces before it were consumed).
void pipelined(std::size_t n, std::size_t buf_size, const std::function<void(std::size_t, AlignedBuffer&)>& produce,
               const std::function<void(std::size_t, AlignedBuffer&)>& consume) {
  constexpr std::size_t kDepth = 3;
  if (n == 0) return;
  std::vector<std::unique_ptr<AlignedBuffer>> bufs;
  for (std::size_t i = 0; i < std::min(kDepth, n); ++i) bufs.push_back(std::make_unique<AlignedBuffer>(buf_size));
  std::mutex mu;
  std::condition_variable cv;
  std::size_t produced = 0, consumed = 0;
  bool stop = false;
  std::exception_ptr failure;
  std::thread helper([&] {
    try {
      for (std::size_t i = 0; i < n; ++i) {
        {
          std::unique_lock lock(mu);
          cv.wait(lock, [&] { return stop || i - consumed < bufs.size(); });
          if (stop) return;
        }
        produce(i, *bufs[i % bufs.size()]);
        {
          std::lock_guard lock(mu);
          produced = i + 1;
        }
        cv.notify_all();
      }
    } catch (...) {
      std::lock_guard lock(mu);
      failure = std::current_exception();
      cv.notify_all();
    }
  });
  try {
    for (std::size_t i = 0; i < n; ++i) {
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return produced > i || failure; });
        if (produced <= i) std::rethrow_exception(failure);
      }
      consume(i, *bufs[i % bufs.size()]);
      {
        std::lock_guard lock(mu);
        consumed = i + 1;
      }
      cv.notify_all();
    }
  } catch (...) {
    {
      std::lock_guard lock(mu);
      stop = true;
    }
    cv.notify_all();
    helper.join();
    throw;
  }
  helper.join();
}

// check_source() on a thread of its own, once per source however many cards
// write it, started before the first card is opened: at card speed it costs
// no time (bmaptool checks as it writes, too). A card waits for its verdict
// only before writing its first MiB, so a stale .bmap never yields a card
// that looks valid.
class SourceCheck {
 public:
  explicit SourceCheck(const FlashSource& src) {
    if (!src.check_ranges) {
      done_ = true;
      return;
    }
    thread_ = std::thread([this, &src] {
      std::optional<Error> failed;
      try {
        Fd fd = open_or_throw(src.image.string(), O_RDONLY);
        (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
        partition::check_bmap_against(src.map, fd.get(), src.image.string(), src.bmap.string(), &stop_);
      } catch (const Error& e) {
        failed = e;
      } catch (const std::exception& e) {
        failed = Error(Errc::internal, e.what());
      }
      std::lock_guard lock(mu_);
      error_ = std::move(failed);
      done_ = true;
      cv_.notify_all();
    });
  }
  ~SourceCheck() {
    stop_ = true;  // nobody waits any more (cards done or cancelled)
    if (thread_.joinable()) thread_.join();
  }
  SourceCheck(const SourceCheck&) = delete;
  SourceCheck& operator=(const SourceCheck&) = delete;

  // Blocks until the check is done; throws its error.
  void wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return done_; });
    if (error_) throw Error(error_->code(), error_->what());
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::optional<Error> error_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// The capacity probe's block I/O on an open card (O_DIRECT-aligned buffers).
class TargetProbeIo : public ProbeDevice {
 public:
  explicit TargetProbeIo(const Target& t) : t_(t), buf_(kProbeBlock) {}
  void write(std::uint64_t offset, const unsigned char* data) override {
    std::memcpy(buf_.data(), data, kProbeBlock);
    try {
      pwrite_all(t_.fd.get(), buf_.data(), kProbeBlock, offset,
                 "write to " + t_.path + " failed at byte " + std::to_string(offset));
    } catch (const Error& e) {
      rethrow_write_error(t_, e);
    }
  }
  void read(std::uint64_t offset, unsigned char* data) override {
    std::size_t got = pread_full(t_.fd.get(), buf_.data(), kProbeBlock, offset, "cannot read back " + t_.path);
    if (got < kProbeBlock) std::memset(buf_.data() + got, 0, kProbeBlock - got);
    std::memcpy(data, buf_.data(), kProbeBlock);
  }

 private:
  const Target& t_;
  AlignedBuffer buf_;
};

class Writer {
 public:
  Writer(const FlashJob& job, const FlashOptions& opts, Target& t, int src_fd, SourceCheck* check)
      : job_(job), opts_(opts), t_(t), src_fd_(src_fd), check_(check) {}

  std::uint64_t bytes_written = 0;
  bool head_zeroed = false;  // the old first MiB is gone (step 1 reached the medium)
  bool wiped = false;        // the whole card was erased first (--wipe)

  void write_all_pieces(std::vector<Piece>& pieces) {
    const auto& src = *job_.source;
    std::uint64_t total = src.map.mapped_bytes();
    // 0. With --wipe, erase everything: nothing old stays in the unmapped space.
    if (opts_.wipe) {
      if (t_.block)
        wipe();
      else
        wipe_file();
    }
    emit(opts_.events, Event{"write", t_.path, 0, total, job_.identity});
    AlignedBuffer zeros(kMiB);
    // 1. Invalidate the old card: first and last MiB (a stale GPT backup lives there).
    Stopwatch step;
    zero_range(t_, 0, std::min<std::uint64_t>(kMiB, t_.size), zeros);
    const bool tail_zeroed = !t_.created && t_.size > kMiB;
    if (tail_zeroed) {
      std::uint64_t tail = std::max(t_.size - kMiB, kMiB);
      zero_range(t_, tail, t_.size - tail, zeros);
    }
    sync_target(t_);
    head_zeroed = true;
    say(std::string("invalidated: first ") + (tail_zeroed ? "and last MiB" : "MiB") + " zeroed and flushed in " +
        step.lap());
    // 1b. With verify, on a card: the capacity probes, before the image (which
    // overwrites a probe that a counterfeit card wraps onto its start).
    if (opts_.verify && t_.block) {
      probe_.emplace(probe_offsets(t_.size, src.map));
      TargetProbeIo io(t_);
      probe_->write(io);
      say("capacity probes: " + std::to_string(probe_->offsets().size()) + " test blocks written in " + step.lap());
    }
    // 2. Everything except the first MiB, then 3. flush, 4. the first MiB, flush.
    std::vector<Piece*> body, head;
    for (auto& p : pieces) (p.offset >= kMiB ? body : head).push_back(&p);
    write_pieces(body, total);
    say("body (all but the first MiB): " + format_size(bytes_written) + " written in " + step.lap());
    sync_target(t_);
    say("flush (fdatasync) in " + step.lap());
    // The image matches its .bmap (else the card keeps its zeroed head).
    if (check_) {
      check_->wait();
      if (job_.source->check_ranges)
        say("the .bmap's range checksums matched " + job_.source->display_name() + " (waited " + step.lap() + ")");
    }
    const std::uint64_t before_head = bytes_written;
    write_pieces(head, total);
    say("head (the first MiB, MBR last): " + format_size(bytes_written - before_head) + " written in " + step.lap());
    sync_target(t_);
    say("flush (fdatasync) in " + step.lap());
  }

  void verify_pieces(const std::vector<Piece>& pieces) {
    check_cancel();
    Stopwatch took;
    drop_cache(t_);
    verify_target_pieces(t_, *job_.source, src_fd_, pieces, opts_.events, opts_.cancel, job_.identity,
                         opts_.chunk_bytes);
    say("verify: " + format_size(job_.source->map.mapped_bytes()) + " read back" +
        (t_.direct ? " (O_DIRECT)" : " (page cache dropped)") + " and compared in " + took.elapsed());
  }

  // Erases the whole card in 1 GiB steps by discarding; where the card cannot
  // discard (common behind USB readers), zeroes it in 64 MiB steps instead.
  void wipe() {
    erase_all({"discard",
               "cannot discard",
               {EOPNOTSUPP, EINVAL, ENOTTY, EIO},
               [this](std::uint64_t off, std::uint64_t n) {
                 std::uint64_t range[2] = {off, n};
                 return ::ioctl(t_.fd.get(), BLKDISCARD, range) == 0 ? 0 : errno;
               },
               [this](std::uint64_t off, std::uint64_t n) {
                 std::uint64_t range[2] = {off, n};
                 if (::ioctl(t_.fd.get(), BLKZEROOUT, range) != 0)
                   rethrow_write_error(t_, Error(Errc::io, "cannot erase " + t_.path + " (zeros at byte " +
                                                               std::to_string(off) + "): " + errno_text(errno)));
               }});
  }

  // The same for a file standing in for a card: holes punched (they read as
  // zeros, like discarded blocks); where the file system cannot punch holes,
  // zeros written. Its size stays.
  void wipe_file() {
    std::unique_ptr<AlignedBuffer> zeros;  // made when first needed
    erase_all({"punching a hole",
               "cannot have holes punched",
               {EOPNOTSUPP, ENOSYS, EINVAL},
               [this](std::uint64_t off, std::uint64_t n) {
                 return ::fallocate(t_.fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                                    static_cast<off_t>(n)) == 0
                            ? 0
                            : errno;
               },
               [this, &zeros](std::uint64_t off, std::uint64_t n) {
                 if (!zeros) zeros = std::make_unique<AlignedBuffer>(kMiB);
                 zero_range(t_, off, n, *zeros);
               }});
  }

  // How a target is erased: a fast step that returns 0 or an errno (the
  // errnos in `unsupported` mean "not on this target"), and writing zeros.
  struct Eraser {
    const char* fast_step;  // for an error: "cannot erase X (<fast_step> at byte N)"
    const char* cannot;     // for the note: "X <cannot> (reason): ..."
    std::vector<int> unsupported;
    std::function<int(std::uint64_t, std::uint64_t)> fast;
    std::function<void(std::uint64_t, std::uint64_t)> zero;
  };

  // The fast way in 1 GiB steps while it works, then zeros in 64 MiB steps
  // with a note saying why it is slow; "wipe" events along the way.
  void erase_all(const Eraser& e) {
    Stopwatch took;
    emit(opts_.events, Event{"wipe", t_.path, 0, t_.size, job_.identity});
    bool fast = true;
    for (std::uint64_t off = 0; off < t_.size;) {
      check_cancel();
      const std::uint64_t n = std::min<std::uint64_t>(t_.size - off, fast ? 1ull << 30 : 64 * kMiB);
      if (fast) {
        if (const int err = e.fast(off, n); err != 0) {
          if (std::find(e.unsupported.begin(), e.unsupported.end(), err) == e.unsupported.end())
            throw Error(Errc::io, "cannot erase " + t_.path + " (" + e.fast_step + " at byte " + std::to_string(off) +
                                      "): " + errno_text(err));
          fast = false;
          emit(opts_.events, Event{"note", t_.path, 0, 0,
                                   t_.path + " " + e.cannot + " (" + errno_text(err) +
                                       "): --wipe writes zeros over all of it, which takes as long as writing "
                                       "every byte"});
          continue;
        }
      } else {
        e.zero(off, n);
      }
      off += n;
      emit(opts_.events, Event{"wipe", t_.path, off, t_.size, job_.identity});
    }
    wiped = true;
    say("wipe: " + format_size(t_.size) + " erased (" +
        (fast ? (t_.block ? "discarded" : "holes punched") : "zeros written") + ") in " + took.elapsed());
  }

  // After verify: every probe reads back as written (then it is erased), or the
  // card holds less than it reports. The number of probes checked (0: none).
  std::size_t check_capacity() {
    if (!probe_) return 0;
    check_cancel();
    Stopwatch took;
    drop_cache(t_);
    TargetProbeIo io(t_);
    if (auto bad = probe_->first_bad(io))
      throw Error(Errc::verify, t_.path + " is probably a counterfeit card: it reports " + format_size(t_.size) +
                                    ", but the test block written at byte " + std::to_string(*bad) + " (" +
                                    format_size(*bad) +
                                    ") did not read back, so it holds less and a Pi would lose data on it; "
                                    "use another card (f3probe, from the f3 package, measures its real size)");
    probe_->erase(io);
    sync_target(t_);
    say("capacity check: " + std::to_string(probe_->offsets().size()) + " test blocks read back and erased in " +
        took.elapsed());
    return probe_->offsets().size();
  }

  static void verify_target_pieces(const Target& t, const FlashSource& src, int src_fd,
                                   const std::vector<Piece>& pieces, const EventSink& events,
                                   const std::atomic<bool>* cancel, const std::string& identity, std::uint64_t chunk) {
    std::uint64_t total = src.map.mapped_bytes(), done = 0;
    emit(events, Event{"verify", t.path, 0, total, identity});
    // Helper thread: read the card back; this thread: read the image (the page
    // cache's copy, usually) and compare byte for byte. (Hashing both, as this
    // did, cost a CPU twice the work of memcmp on fast media.)
    auto produce = [&](std::size_t i, AlignedBuffer& buf) {
      const Piece& p = pieces[i];
      if (cancelled(cancel)) throw Cancelled{};
      std::size_t got = pread_full(t.fd.get(), buf.data(), padded(t, p.length), p.offset, "cannot read back " + t.path);
      if (got < p.length)
        throw Error(Errc::verify, "verify failed: " + t.path + " ends at byte " + std::to_string(p.offset + got) +
                                      ", before the image does");
    };
    AlignedBuffer image(std::max<std::uint64_t>(chunk, kMiB));
    auto consume = [&](std::size_t i, AlignedBuffer& buf) {
      const Piece& p = pieces[i];
      read_source(src_fd, src, p, image, p.length);
      if (std::memcmp(buf.data(), image.data(), p.length) != 0) {
        // Name the first bad byte.
        std::uint64_t k = 0;
        while (k < p.length && image.data()[k] == buf.data()[k]) ++k;
        std::uint64_t bad = p.offset + k;
        char hex[32];
        std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(bad));
        throw Error(Errc::verify, "verify failed: " + t.path + " differs from " + src.display_name() +
                                      " at byte offset " + std::to_string(bad) + " (" + hex +
                                      "); the card may be failing or counterfeit, try another one");
      }
      done += p.length;
      emit(events, Event{"verify", t.path, done, total, identity});
    };
    pipelined(pieces.size(), padded(t, std::max<std::uint64_t>(chunk, kMiB)), produce, consume);
  }

 private:
  void check_cancel() const {
    if (cancelled(opts_.cancel)) throw Cancelled{};
  }
  // A "detail" about this card: "<target>: <what>".
  void say(const std::string& what) const { emit_detail(opts_.events, t_.path, t_.path + ": " + what); }

  // Helper thread: read the image; this thread: write.
  void write_pieces(const std::vector<Piece*>& list, std::uint64_t total) {
    auto produce = [&](std::size_t i, AlignedBuffer& buf) {
      const Piece& p = *list[i];
      read_source(src_fd_, *job_.source, p, buf, padded(t_, p.length));
    };
    auto consume = [&](std::size_t i, AlignedBuffer& buf) {
      check_cancel();
      const Piece& p = *list[i];
      std::uint64_t n = padded(t_, p.length);
      if (t_.block && p.offset + n > t_.size) throw Error(Errc::device, t_.path + " is smaller than the image");
      std::size_t len = t_.block ? n : p.length;
      try {
        pwrite_all(t_.fd.get(), buf.data(), len, p.offset,
                   "write to " + t_.path + " failed at byte " + std::to_string(p.offset));
      } catch (const Error& e) {
        rethrow_write_error(t_, e);
      }
      bytes_written += p.length;
      emit(opts_.events, Event{"write", t_.path, bytes_written, total, job_.identity});
    };
    pipelined(list.size(), padded(t_, std::max<std::uint64_t>(opts_.chunk_bytes, kMiB)), produce, consume);
  }

  const FlashJob& job_;
  const FlashOptions& opts_;
  Target& t_;
  int src_fd_;
  SourceCheck* check_;
  std::optional<CapacityProbe> probe_;
};

// Asks the kernel to read the new partition table (a file has none for it to
// read: nothing is done). A "detail" says how it went and how long it took.
void reread_partitions(const Target& t, const EventSink& events) {
  if (!t.block) return;
  Stopwatch took;
  if (::ioctl(t.fd.get(), BLKRRPART) == 0) {
    emit_detail(events, t.path, t.path + ": partition table re-read by the kernel (BLKRRPART) in " + took.elapsed());
    return;
  }
  int err = errno;
  if (err == EINVAL) {  // loop devices without partition scanning
    emit_detail(events, t.path,
                t.path + ": partition table not re-read: the kernel refused BLKRRPART (" + errno_text(err) +
                    ": a device without partition scanning, such as a loop device without -P), ignored, after " +
                    took.elapsed());
    return;
  }
  emit_detail(events, t.path,
              t.path + ": partition table not re-read: BLKRRPART failed (" + errno_text(err) + ") after " +
                  took.elapsed() + "; the card is written all the same (see the note)");
  emit(events, Event{"note", t.path, 0, 0,
                     "the kernel did not re-read the partition table of " + t.path + " (" + errno_text(err) +
                         "); unplug and re-insert the card to see its partitions"});
}

}  // namespace

std::shared_ptr<const FlashSource> FlashSource::open(const fs::path& image, const fs::path& given_bmap) {
  std::error_code ec;
  auto size = fs::file_size(image, ec);
  if (ec) throw Error(Errc::input, "cannot read image " + image.string() + ": " + ec.message());
  auto src = std::make_shared<FlashSource>();
  src->image = image;
  const fs::path bmap =
      given_bmap.empty() ? find_bmap(image) : given_bmap;  // bmaptool's names, as for a compressed image
  if (!bmap.empty()) {
    src->bmap = bmap;
    src->map = partition::read_bmap(bmap);
    if (src->map.image_size() != size)
      throw Error(Errc::input, bmap.string() + " describes a " + std::to_string(src->map.image_size()) +
                                   "-byte image but " + image.string() + " has " + std::to_string(size) +
                                   " bytes; rebuild the image or remove the stale .bmap");
    // The same size is not the same image (a file added with mcopy, another
    // image's .bmap): the ranges' checksums are compared while the cards are
    // written (SourceCheck), as bmaptool does, but before any card's MBR.
    src->check_ranges = true;
    src->map_from = "bmap";
  } else {
    map_without_bmap(*src, size);
  }
  return src;
}

void refuse_cut_short(const std::uint8_t* sector, std::uint64_t size, const std::string& what, bool decompressed) {
  const std::optional<std::uint64_t> least = partition::least_disk_bytes(sector);
  if (!least || *least <= size) return;
  throw Error(
      Errc::input,
      what + " is cut short: its " +
          (partition::looks_like_fat_boot_sector(sector) ? "FAT volume" : "partition table") +
          " says it has at least " + std::to_string(*least) + " bytes (" + format_size(*least) + "), but " +
          (decompressed ? "decompressed it has " : "it has ") + std::to_string(size) + " (" + format_size(size) +
          "): it was probably truncated by an interrupted download or copy; get it again" +
          (decompressed ? ""
                        : " (or, when you know its end is only unused space, extend it with zeros: truncate -s " +
                              std::to_string(*least) + " FILE)"));
}

void map_without_bmap(FlashSource& src, std::uint64_t size, bool decompressed) {
  Fd fd = open_or_throw(src.image.string(), O_RDONLY | O_CLOEXEC);
  std::array<std::uint8_t, 512> sector{};
  if (size >= sector.size() &&
      pread_full(fd.get(), sector.data(), sector.size(), 0, "cannot read " + src.display_name()) == sector.size())
    refuse_cut_short(sector.data(), size, src.display_name(), decompressed);
  if (std::optional<partition::BlockMap> fat = partition::map_from_fat(fd.get(), size, src.display_name())) {
    src.map = std::move(*fat);
    src.map_from = "fat";
  } else {
    src.map = partition::BlockMap::whole(size);
    src.map_from = "whole";
  }
}

void check_source(const FlashSource& src) {
  if (!src.check_ranges) return;
  Fd fd = open_or_throw(src.image.string(), O_RDONLY);
  (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  partition::check_bmap_against(src.map, fd.get(), src.image.string(), src.bmap.string());
}

std::shared_ptr<const FlashSource> FlashSource::built(const fs::path& image, partition::BlockMap map) {
  std::error_code ec;
  auto size = fs::file_size(image, ec);
  if (ec) throw Error(Errc::input, "cannot read image " + image.string() + ": " + ec.message());
  if (size != map.image_size())
    throw Error(Errc::input, image.string() + " has " + std::to_string(size) + " bytes but was built with " +
                                 std::to_string(map.image_size()));
  auto src = std::make_shared<FlashSource>();
  src->image = image;
  src->map = std::move(map);
  src->map_from = "built";
  return src;
}

namespace {
FlashResult flash_impl(const FlashJob& job, const FlashOptions& opts, SourceCheck* check) {
  FlashResult r;
  r.target = job.target;
  r.identity = job.identity;
  auto start = std::chrono::steady_clock::now();
  Target t;
  bool opened = false;
  bool head_zeroed = false;
  try {
    // Cancelled before it began (a card waiting for its turn): nothing is opened, unmounted or zeroed.
    if (cancelled(opts.cancel)) throw Cancelled{};
    if (!job.source) throw Error(Errc::internal, "flash job for " + job.target + " has no image");
    if (opts.chunk_bytes == 0 || opts.chunk_bytes % kAlign)
      throw Error(Errc::internal, "flash chunk not 4 KiB aligned");
    const auto& src = *job.source;
    std::vector<std::string> unmounted;
    DeviceInfo info = prepare_target(job.target, opts.safety, opts.roots, &unmounted);
    for (const auto& u : unmounted) emit(opts.events, Event{"note", job.target, 0, 0, "unmounted " + u});
    Fd src_fd = open_or_throw(src.image.string(), O_RDONLY);
    (void)::posix_fadvise(src_fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
    std::uint64_t image_size = src.map.image_size();
    if (info.is_file) {
      t = open_file_for_write(info, image_size, opts.events);
    } else {
      t = open_block(info, true);
      check_fits(t, image_size);
    }
    opened = true;
    emit_detail(opts.events, t.path,
                t.path + ": " +
                    (t.block     ? "block device"
                     : t.created ? "new file (sparse, mode 0600)"
                                 : "regular file") +
                    " of " + format_size(t.size) + ", opened " +
                    (t.block ? (t.direct ? "O_DIRECT|O_EXCL" : "O_EXCL (buffered: no O_DIRECT)") : "buffered") +
                    " and flock'ed; the image has " + format_size(image_size) + ", " +
                    format_size(src.map.mapped_bytes()) + " of it mapped");
    auto pieces = pieces_of(src.map, opts.chunk_bytes);
    Writer w(job, opts, t, src_fd.get(), check);
    try {
      w.write_all_pieces(pieces);
    } catch (...) {
      r.bytes_written = w.bytes_written;
      head_zeroed = w.head_zeroed;
      throw;
    }
    head_zeroed = w.head_zeroed;
    r.bytes_written = w.bytes_written;
    r.wiped = w.wiped;
    if (opts.verify) {
      w.verify_pieces(pieces);
      r.capacity_probes = w.check_capacity();
      r.capacity_checked = t.block;
      r.verified = true;
    }
    reread_partitions(t, opts.events);
  } catch (const Cancelled&) {
    r.cancelled = true;
    r.error_code = Errc::device;
    if (!opened) {
      r.error = "cancelled: " + job.target + " was not changed";
    } else {
      bool zeroed_now = invalidate(t);
      r.error = "cancelled: " + job.target +
                (zeroed_now || head_zeroed ? " was left without a valid MBR" : " was stopped mid-write") +
                invalid_note(t, zeroed_now, head_zeroed);
    }
  } catch (const Error& e) {
    r.error_code = e.code();
    r.error = e.what();
    // A card that failed mid-way or did not verify must not look bootable.
    if (opened && e.code() != Errc::device) r.error += invalid_note(t, invalidate(t), head_zeroed);
  } catch (const std::exception& e) {
    r.error_code = Errc::internal;
    r.error = e.what();
  }
  r.changed = opened;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace

FlashResult flash_one(const FlashJob& job, const FlashOptions& opts) {
  std::optional<SourceCheck> check;
  if (job.source) check.emplace(*job.source);
  return flash_impl(job, opts, check ? &*check : nullptr);
}

std::vector<FlashResult> flash_all(const std::vector<FlashJob>& jobs, const FlashOptions& opts) {
  std::vector<FlashResult> results(jobs.size());
  std::vector<std::pair<std::size_t, SourceCheck*>> queue;  // the jobs to run, in order
  std::map<std::string, std::size_t> seen;
  std::map<const FlashSource*, std::unique_ptr<SourceCheck>> checks;  // started here, before any card
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    std::error_code ec;
    fs::path real = fs::weakly_canonical(jobs[i].target, ec);
    std::string key = ec ? jobs[i].target : real.string();
    auto [it, fresh] = seen.emplace(key, i);
    if (!fresh) {
      results[i].target = jobs[i].target;
      results[i].identity = jobs[i].identity;
      results[i].error_code = Errc::usage;
      results[i].error = jobs[i].target + " is given twice (same device as " + jobs[it->second].target + ")";
      continue;
    }
    SourceCheck* check = nullptr;
    if (jobs[i].source) {
      auto& c = checks[jobs[i].source.get()];
      if (!c) c = std::make_unique<SourceCheck>(*jobs[i].source);
      check = c.get();
    }
    queue.emplace_back(i, check);
  }
  // Each worker takes the next job of the queue: cards start in the order given.
  std::atomic<std::size_t> next{0};
  auto work = [&] {
    for (std::size_t k = next++; k < queue.size(); k = next++) {
      const auto [i, check] = queue[k];
      results[i] = flash_impl(jobs[i], opts, check);
    }
  };
  std::size_t n_workers = queue.size();
  if (opts.max_parallel != 0) n_workers = std::min<std::size_t>(n_workers, opts.max_parallel);
  std::vector<std::thread> workers;
  for (std::size_t w = 0; w < n_workers; ++w) workers.emplace_back(work);
  for (auto& w : workers) w.join();
  return results;
}

void verify_target(const std::string& target, const FlashSource& source, const EventSink& events) {
  DeviceInfo info = inspect_target(target, {}, ContentProbe::skip);
  Target t;
  if (info.is_file) {
    t.path = target;
    t.fd = open_or_throw(target, O_RDONLY);
    t.size = info.size;
  } else {
    t = open_block(info, false);
  }
  drop_cache(t);
  Fd src_fd = open_or_throw(source.image.string(), O_RDONLY);
  Writer::verify_target_pieces(t, source, src_fd.get(), pieces_of(source.map, 4u << 20), events, nullptr, "", 4u << 20);
}

}  // namespace rpi::udev
