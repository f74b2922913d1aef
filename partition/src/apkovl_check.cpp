#include "partition/apkovl_check.hpp"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <optional>
#include <string_view>

#include "apkovl_summary.hpp"
#include "partition/compress.hpp"
#include "partition/reader.hpp"
#include "rpi/archive_reader.hpp"
#include "rpi/error.hpp"

namespace rpi::partition {

namespace {

constexpr const char* kHowToMake =
    "make it with `lbu package` on the Pi, or with `tar -czf HOST.apkovl.tar.gz -C DIR etc`";

// Member names go into messages: control characters and bytes >= 0x80 as '?'.
std::string printable(std::string_view s) {
  std::string out;
  for (char c : s) out += (c >= 0x20 && c < 0x7F) ? c : '?';
  return out;
}

// "512 MiB", "4.5 MiB".
std::string mib(std::uint64_t bytes) {
  if (bytes % (1u << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
  const std::uint64_t tenths = (bytes * 10 + (1u << 19)) >> 20;
  return std::to_string(tenths / 10) + "." + std::to_string(tenths % 10) + " MiB";
}

// What the data is instead of gzip, for the message (magic numbers of tar
// and of the compressions busybox `tar -z` does not undo).
std::string not_gzip_what(const std::string& d) {
  auto starts = [&](std::string_view magic) {
    return d.size() >= magic.size() && d.compare(0, magic.size(), magic) == 0;
  };
  if (d.size() >= 262 && d.compare(257, 5, "ustar") == 0) return "is a plain (uncompressed) tar archive";
  static constexpr char kXz[] = {'\xFD', '7', 'z', 'X', 'Z', '\0'};
  if (starts(std::string_view(kXz, sizeof kXz))) return "is xz-compressed";
  if (starts("BZh")) return "is bzip2-compressed";
  if (starts("\x28\xB5\x2F\xFD")) return "is zstd-compressed";
  return "is not gzip-compressed";
}

bool is_dotdot(const std::string& name) {
  return name == ".." || name.rfind("../", 0) == 0 || name.find("/../") != std::string::npos ||
         (name.size() >= 3 && name.compare(name.size() - 3, 3, "/..") == 0);
}

// The gzip layer as busybox judges it, decompressed as it is read.
//
// busybox's unpack_gz_stream (what `tar -zxf` in the initramfs runs) reads a
// gzip member, checks its CRC-32 and length trailer, then starts another
// member if the next two bytes are 1f 8b and otherwise ignores the rest.
// zlib's gzip mode checks the same trailer; it is stricter than busybox only
// about header fields busybox skips (header CRC, reserved flags), so the
// difference can only refuse a hand-made oddity, never accept a broken file.
// libarchive's gzip filter is not used for this: it stops at the tar
// end-of-archive blocks without reading the trailer, and it reads
// uncompressed tar as well. Instead libarchive reads the tar from this stream.
class Gunzip {
 public:
  // Throws rpi::Error(input) if `data` does not start with the gzip magic.
  // With `partial`, `data` is the start of a file: where it ends, read()
  // ends too instead of reporting a truncated file.
  Gunzip(const std::string& name, const std::string& data, std::uint64_t max_unpacked, bool partial = false)
      : name_(name), data_(data), max_(max_unpacked), partial_(partial), out_(256u << 10) {
    const auto* in = reinterpret_cast<const unsigned char*>(data.data());
    if (data.size() < 2 || in[0] != 0x1F || in[1] != 0x8B)
      throw Error(Errc::input, name + " " + not_gzip_what(data) +
                                   ": Alpine's initramfs unpacks an apkovl with busybox `tar -zxf`, which refuses "
                                   "it (the Pi would boot unconfigured); compress it with `gzip`, or " +
                                   kHowToMake);
    if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK) throw Error(Errc::internal, "zlib initialisation failed");
  }
  Gunzip(const Gunzip&) = delete;
  Gunzip& operator=(const Gunzip&) = delete;
  ~Gunzip() { inflateEnd(&zs_); }

  // The next decompressed bytes (at `*out`); 0 after the last gzip member.
  // Throws rpi::Error(input) if the data is damaged, truncated, or unpacks
  // to more than `max_unpacked` bytes (it stops there).
  std::size_t read(const void** out) {
    *out = out_.data();
    if (done_) return 0;
    const auto* in = reinterpret_cast<const unsigned char*>(data_.data());
    for (;;) {
      if (zs_.avail_in == 0) {
        if (fed_ == data_.size() && partial_) {
          done_ = true;
          return 0;
        }
        if (fed_ == data_.size())
          throw Error(Errc::input, name_ + " is truncated (its gzip data ends early); copy it again, or " + kHowToMake);
        const std::size_t n = std::min<std::size_t>(data_.size() - fed_, 1u << 30);
        zs_.next_in = const_cast<Bytef*>(in + fed_);
        zs_.avail_in = static_cast<uInt>(n);
        fed_ += n;
      }
      zs_.next_out = out_.data();
      zs_.avail_out = static_cast<uInt>(out_.size());
      const int rc = inflate(&zs_, Z_NO_FLUSH);
      const std::size_t produced = out_.size() - zs_.avail_out;
      unpacked_ += produced;
      if (unpacked_ > max_)
        throw Error(Errc::input, name_ + " unpacks to more than " + mib(max_) + " (from " + mib(data_.size()) +
                                     "): the Pi keeps its whole root file system, this overlay included, in RAM; "
                                     "leave big files out of the overlay (`lbu exclude`) and keep them on a disk");
      if (rc == Z_STREAM_END) {
        const std::size_t at = fed_ - zs_.avail_in;  // just after this member's trailer
        if (data_.size() - at >= 2 && in[at] == 0x1F && in[at + 1] == 0x8B) {
          inflateReset(&zs_);
        } else {
          trailing_ = data_.size() - at;
          done_ = true;
        }
        if (produced || done_) return produced;
        continue;
      }
      if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT) {
        const std::string msg = zs_.msg ? zs_.msg : "corrupt data";
        zlib_message_ = msg;
        throw Error(Errc::input, name_ + " is damaged (gzip: " + msg +
                                     "); busybox `tar -zxf` on the Pi stops with an error on it. Copy it again, "
                                     "or " +
                                     kHowToMake);
      }
      if (rc == Z_MEM_ERROR) throw Error(Errc::internal, "zlib: out of memory");
      // Z_OK, or Z_BUF_ERROR (it needs more input): go on.
      if (produced) return produced;
    }
  }
  // zlib's message when read() found the data damaged.
  const std::string& zlib_message() const noexcept { return zlib_message_; }
  // Reads to the end; what read() throws.
  ApkovlGzip finish() {
    const void* p = nullptr;
    while (read(&p) != 0) {
    }
    return {unpacked_, trailing_};
  }

 private:
  const std::string& name_;
  const std::string& data_;
  const std::uint64_t max_;
  const bool partial_;
  z_stream zs_{};
  std::vector<unsigned char> out_;
  std::size_t fed_ = 0;  // input bytes handed to zlib so far
  std::uint64_t unpacked_ = 0, trailing_ = 0;
  bool done_ = false;
  std::string zlib_message_;
};

}  // namespace

ApkovlGzip check_apkovl_gzip(const std::string& name, const std::string& data, std::uint64_t max_unpacked) {
  Gunzip gz(name, data, max_unpacked);
  return gz.finish();
}

// ---- what a gzip file holds ---------------------------------------------------

namespace {

// A tar header block: its checksum (bytes 148..155 counted as spaces) matches,
// as unsigned or (old tars) signed bytes, and it is not all zeros.
bool tar_header_ok(const unsigned char* h) {
  std::uint64_t want = 0;
  std::size_t i = 148;
  while (i < 156 && h[i] == ' ') ++i;
  const std::size_t digits = i;
  for (; i < 156 && h[i] >= '0' && h[i] <= '7'; ++i) want = want * 8 + (h[i] - '0');
  if (i == digits) return false;
  std::uint64_t sum = 0;
  std::int64_t ssum = 0;
  for (std::size_t k = 0; k < 512; ++k) {
    const unsigned char c = (k >= 148 && k < 156) ? ' ' : h[k];
    sum += c;
    ssum += static_cast<signed char>(c);
  }
  return sum != 8 * ' ' && (sum == want || ssum == static_cast<std::int64_t>(want));
}

// A NUL-terminated field of at most `n` bytes.
std::string tar_field(const unsigned char* p, std::size_t n) {
  std::size_t len = 0;
  while (len < n && p[len]) ++len;
  return std::string(reinterpret_cast<const char*>(p), len);
}

// The names of the first members whose headers lie in `tar` (the start of a
// tar archive), at most `max` of them; GNU long names and pax paths included.
std::vector<std::string> tar_member_names(const std::string& tar, std::size_t max) {
  const auto* u = reinterpret_cast<const unsigned char*>(tar.data());
  std::vector<std::string> names;
  std::string next_name;  // from a GNU 'L' or pax 'x' header
  std::size_t pos = 0;
  while (pos + 512 <= tar.size() && names.size() < max) {
    const unsigned char* h = u + pos;
    if (!tar_header_ok(h)) break;
    if (h[124] & 0x80) break;  // a base-256 size: not in an overlay's first members
    std::uint64_t size = 0;
    for (std::size_t i = 124; i < 136 && h[i] >= '0' && h[i] <= '7'; ++i) size = size * 8 + (h[i] - '0');
    const char type = static_cast<char>(h[156]);
    const bool has_data = size <= tar.size() - pos - 512;
    const std::string data = has_data ? tar.substr(pos + 512, size) : std::string();
    if (type == 'L') {
      next_name = tar_field(reinterpret_cast<const unsigned char*>(data.data()), data.size());
    } else if (type == 'x') {
      const std::size_t at = data.find(" path=");
      if (at != std::string::npos) next_name = data.substr(at + 6, data.find('\n', at) - at - 6);
    } else if (type != 'g' && type != 'K') {
      std::string name = tar_field(h, 100);
      const std::string prefix = std::memcmp(h + 257, "ustar", 5) == 0 ? tar_field(h + 345, 155) : std::string();
      if (!prefix.empty()) name = prefix + "/" + name;
      names.push_back(next_name.empty() ? name : next_name);
      next_name.clear();
    }
    if (!has_data) break;
    pos += 512 + (size + 511) / 512 * 512;
  }
  return names;
}

// A member only an Alpine boot tarball has (rpi-tarball-listing.txt): its
// boot/, apks/ and overlays/ folders, the firmware and config files, DTBs and
// the old default apkovl at its top. An overlay holds etc/, root/, home/, ...
bool boot_tarball_member(std::string_view name) {
  for (;;) {
    if (name.rfind("./", 0) == 0)
      name.remove_prefix(2);
    else if (!name.empty() && name.front() == '/')
      name.remove_prefix(1);
    else
      break;
  }
  if (name.empty()) return false;
  const std::size_t slash = name.find('/');
  const std::string_view top = name.substr(0, slash);
  if (slash != std::string_view::npos) return top == "boot" || top == "apks" || top == "overlays";
  static constexpr std::string_view kFiles[] = {".alpine-release", "cmdline.txt", "config.txt", "bootcode.bin",
                                                "fixup.dat",       "fixup4.dat",  "start.elf",  "start4.elf"};
  for (const auto f : kFiles)
    if (top == f) return true;
  return (top.size() > 4 && top.substr(top.size() - 4) == ".dtb") || top.find(".apkovl.tar.gz") != std::string::npos;
}

}  // namespace

GzipGuess guess_gzip_content(const std::string& head) {
  GzipGuess g;
  if (compression_of(head) != Compression::gzip) return g;
  constexpr std::size_t kLook = 256u << 10;  // decompressed bytes looked at
  std::string out;
  bool damaged = false;
  {
    const std::string name = "data";
    Gunzip gz(name, head, ~std::uint64_t{0}, true);
    try {
      const void* p = nullptr;
      while (out.size() < kLook) {
        const std::size_t n = gz.read(&p);
        if (n == 0) break;
        out.append(static_cast<const char*>(p), std::min(n, kLook - out.size()));
      }
    } catch (const Error& e) {
      if (e.code() != Errc::input) throw;
      damaged = true;
      g.why = gz.zlib_message();
    }
  }
  const auto* u = reinterpret_cast<const unsigned char*>(out.data());
  if (out.size() >= 512 && tar_header_ok(u)) {
    g.content = GzipContent::tar;
    g.why.clear();
    for (const auto& name : tar_member_names(out, 64))
      if (boot_tarball_member(name)) {
        g.content = GzipContent::boot_tarball;
        g.why = printable(name);
        break;
      }
    return g;
  }
  if (out.size() >= 512 && has_boot_signature(u)) {
    g.content = GzipContent::disk_image;
    g.why.clear();
    return g;
  }
  g.content = damaged ? GzipContent::damaged : GzipContent::other;
  return g;
}

// ---- names -------------------------------------------------------------------

bool is_apkovl_name(std::string_view file_name) noexcept {
  return file_name.find(".apkovl.tar.gz") != std::string_view::npos;
}

bool is_encrypted_apkovl_name(std::string_view file_name) noexcept {
  // initramfs-init: suffix=${ovl##*.}; "gz" is unpacked with tar -z, anything else is a cipher.
  return is_apkovl_name(file_name) && file_name.substr(file_name.rfind('.') + 1) != "gz";
}

// ---- host names --------------------------------------------------------------

bool valid_hostname(std::string_view s) noexcept {
  if (s.empty() || s.size() > 64) return false;
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = s.find('.', start);
    const std::string_view label =
        s.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    for (char c : label)
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-')) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

namespace {

struct HostnameRead {
  std::string set;        // the name set last; "" for none
  bool too_long = false;  // it stopped at a name longer than 64 bytes
};

// busybox 1.35 hostname.c: config_read(parser, &buf, 1, 1, "# \t",
// PARSE_NORMAL) per line, then sethostname(buf), which fails (and ends
// `hostname -F`) for more than 64 bytes (__NEW_UTS_LEN).
HostnameRead read_hostname_file(std::string_view text) {
  constexpr std::size_t kUtsLen = 64;
  HostnameRead r;
  std::size_t pos = 0;
  while (pos < text.size()) {
    // One line; a '\' at its end joins the next (busybox's config parser).
    std::string line;
    for (;;) {
      const std::size_t nl = text.find('\n', pos);
      std::string_view part = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
      pos = nl == std::string_view::npos ? text.size() : nl + 1;
      const bool joined = !part.empty() && part.back() == '\\';
      if (joined) part.remove_suffix(1);
      line += part;
      if (!joined || pos == text.size()) break;
    }
    line.resize(std::min(line.size(), line.find('\0')));  // a C string to busybox
    const std::size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;  // blank, or a comment
    const std::size_t end = line.find_first_of(" \t#", first);
    const std::string word = line.substr(first, end == std::string::npos ? std::string::npos : end - first);
    if (word.size() > kUtsLen) {  // sethostname: EINVAL, and busybox stops
      r.too_long = true;
      break;
    }
    r.set = word;
  }
  return r;
}

// A name as the Pi would set it, quoted for a message: a CR as \r, other
// control bytes and bytes >= 0x80 as \xNN.
std::string quoted_name(std::string_view name) {
  std::string out = "'";
  for (const char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\r') {
      out += "\\r";
    } else if (c >= 0x20 && c < 0x7F) {
      out += ch;
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  return out + "'";
}

constexpr const char* kSetHostname = "(on the Pi: `setup-hostname NAME`, then `lbu commit`)";

}  // namespace

std::string hostname_from_file(std::string_view text) {
  return read_hostname_file(text).set;
}

std::string hostname_finding(const std::string& path, std::string_view text) {
  const HostnameRead r = read_hostname_file(text);
  if (valid_hostname(r.set)) return "";
  // Alpine's hostname service: `[ -s /etc/hostname ]` ? `hostname -F /etc/hostname` : `hostname localhost`.
  if (text.empty())
    return path + ": etc/hostname is empty: Alpine's hostname service then calls the Pi 'localhost'; write its host " +
           "name in it " + kSetHostname;
  if (r.set.empty())
    return path + ": etc/hostname names no host (" +
           (r.too_long ? std::string("its name is longer than 64 characters, which `hostname -F` fails on")
                       : std::string("it holds only blank and '#' comment lines")) +
           "): busybox `hostname -F` sets none, and the Pi keeps the kernel's default host name; write its host name "
           "in it, on a line of its own " +
           kSetHostname;
  if (r.set.find('\r') != std::string::npos)
    return path +
           ": etc/hostname has Windows (CR LF) line ends: busybox `hostname -F` keeps the CR, and the Pi is called " +
           quoted_name(r.set) +
           ", which is no valid host name (DHCP, DNS and the file name `lbu commit` writes get it wrong); convert the "
           "file with `dos2unix etc/hostname` (busybox has it too: on the Pi, `dos2unix /etc/hostname`, then `lbu "
           "commit`) and pack the overlay again";
  const std::string quoted = quoted_name(r.set);
  return path + ": etc/hostname names " + quoted +
         ", which is no valid host name (letters, digits and '-', in labels of at most 63 separated by '.', none "
         "starting or ending in '-', 64 in all): the Pi is called " +
         quoted + " all the same, and DHCP and DNS do not take it; write a valid name in it " + kSetHostname;
}

namespace {

// A member's name as tar extracts it relative to "/": leading "./" dropped.
std::string_view extracted_name(std::string_view name) {
  while (name.rfind("./", 0) == 0) {
    name.remove_prefix(2);
    while (!name.empty() && name.front() == '/') name.remove_prefix(1);
  }
  return name;
}

// Appends messages to a list, at most kApkovlMaxFindings of them; finish()
// then adds one that counts the rest (a hostile archive may hold a million
// bad members).
struct Findings {
  std::vector<std::string>& list;
  std::uint64_t more = 0;
  void add(std::string message) {
    if (list.size() < kApkovlMaxFindings)
      list.push_back(std::move(message));
    else
      ++more;
  }
  // Everything `other` holds, after what this one holds.
  void add_all(const Findings& other) {
    for (const auto& m : other.list) add(m);
    more += other.more;
  }
  void finish(const std::string& path, const std::string& noun) {
    if (more)
      list.push_back(path + ": " + std::to_string(more) + " more " + noun + (more == 1 ? "" : "s") +
                     " like those above");
  }
};

// libarchive reads the tar from the Gunzip stream. An exception cannot cross
// libarchive's C code: it is kept here, and the read fails.
struct TarFeed {
  Gunzip& gz;
  std::exception_ptr error;
};
la_ssize_t feed_tar(archive* a, void* client, const void** buffer) {
  auto* feed = static_cast<TarFeed*>(client);
  try {
    return static_cast<la_ssize_t>(feed->gz.read(buffer));
  } catch (...) {
    feed->error = std::current_exception();
    archive_set_error(a, EIO, "the gzip layer is damaged");
    return -1;
  }
}

// The current member's data, at most detail::kSmallFileMax bytes; nullopt
// with `why` (": <libarchive's message>" or " is longer than declared").
std::optional<std::string> read_member(archive* a, std::string& why) {
  std::string out;
  char buf[8192];
  for (;;) {
    const la_ssize_t n = archive_read_data(a, buf, sizeof buf);
    if (n < 0) {
      const char* m = archive_error_string(a);
      why = std::string(": ") + (m ? m : "unreadable data");
      return std::nullopt;
    }
    if (n == 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > detail::kSmallFileMax) {
      why = " is longer than declared";
      return std::nullopt;
    }
  }
}

// What the review finds in the members (findings kept apart from those of
// the name and the gzip layer, which come first and decide whether these count).
struct MemberReview {
  const std::string& path;
  ApkovlCheck& res;
  Findings refuse, warn;
  bool on = true;
  bool stopped = false;  // by a tar error, reported

  // The last etc/hostname member, the one busybox tar leaves on the Pi.
  enum class HostFile { absent, not_regular, too_big, unread, read };
  HostFile host_file = HostFile::absent;
  std::string host_what{};  // not_regular: what it is instead
  std::string host_text{};  // read: its content

  std::string not_tar(const char* m) const {
    return path + " is gzip-compressed but holds no tar archive (" + std::string(m ? m : "unreadable") + "); " +
           kHowToMake;
  }
  void header_error(archive* a) {
    const char* m = archive_error_string(a);
    if (!res.members)
      refuse.add(not_tar(m));
    else
      refuse.add(path + " is damaged after " + std::to_string(res.members) + " members: " + (m ? m : "unreadable") +
                 "; copy it again, or " + kHowToMake);
    on = false;
    stopped = true;
  }
  // A member; true when its data is wanted (etc/hostname): then hostname() follows.
  bool member(archive_entry* e) {
    ++res.members;
    const char* raw = archive_entry_pathname(e);
    std::string name = raw ? raw : "";
    const std::string shown = printable(name);
    if (name.empty() || name.front() == '/')
      refuse.add(path + ": member '" + shown + "' has an absolute path; an apkovl holds etc/... paths");
    else if (is_dotdot(name))
      refuse.add(path + ": member '" + shown + "' has a '..' component");
    else if (name == "./" || name == ".")
      warn.add(path + ": has a root ('./') member; unpacking it changes the mode of / on the Pi");
    else if (name.find('/') == std::string::npos)
      warn.add(path + ": member '" + shown + "' has no '/'; apk stops reading the overlay list there");

    // A hard link names another file to link to. One with an absolute or '..'
    // target reaches outside the overlay (e.g. /etc/shadow of the system that
    // unpacks it): refused like an absolute member path. Links between the
    // overlay's own files (relative etc/... targets) are fine.
    const char* hl = archive_entry_hardlink(e);
    if (hl) {
      const std::string target = hl;
      if (target.empty() || target.front() == '/')
        refuse.add(path + ": member '" + shown + "' is a hard link to '" + printable(target) +
                   "', an absolute path outside the overlay; remove that member (an apkovl links only to its own "
                   "etc/... files)");
      else if (is_dotdot(target))
        refuse.add(path + ": member '" + shown + "' is a hard link to '" + printable(target) +
                   "', which leaves the overlay through '..'; remove that member");
    }
    // Symbolic links are normal (etc/runlevels/*/* -> /etc/init.d/*) and their
    // targets are resolved on the Pi, not while unpacking: no check.
    // Device nodes and FIFOs: lbu never packs one, but busybox tar would create
    // them in the Pi's root file system. Odd, possibly deliberate: a warning.
    const char* special = nullptr;
    switch (archive_entry_filetype(e)) {
      case AE_IFBLK:
        special = "a block device node";
        break;
      case AE_IFCHR:
        special = "a character device node";
        break;
      case AE_IFIFO:
        special = "a FIFO";
        break;
      default:
        break;
    }
    if (special)
      warn.add(path + ": member '" + shown + "' is " + special +
               "; lbu never packs one, and busybox tar creates it in the Pi's root file system; remove it unless "
               "you mean that");

    // etc/hostname: each such member replaces the one before, as on the Pi.
    if (extracted_name(name) != "etc/hostname") return false;
    res.hostname.clear();
    host_text.clear();
    const auto type = archive_entry_filetype(e);
    if (hl || type != AE_IFREG) {
      host_file = HostFile::not_regular;
      if (hl) {
        host_what = "a hard link to '" + printable(hl) + "'";
      } else if (type == AE_IFLNK) {
        const char* to = archive_entry_symlink(e);
        host_what = "a symbolic link to '" + printable(to ? to : "") + "'";
      } else {
        host_what = type == AE_IFDIR ? "a directory" : special ? special : "not a regular file";
      }
      return false;
    }
    if (archive_entry_size(e) < 0 || archive_entry_size(e) > static_cast<la_int64_t>(detail::kSmallFileMax)) {
      host_file = HostFile::too_big;
      return false;
    }
    host_file = HostFile::unread;  // until hostname() has its whole text
    return true;
  }
  void hostname(const std::string& text) {
    const std::string name = hostname_from_file(text);
    res.hostname = valid_hostname(name) ? name : std::string();
    host_file = HostFile::read;
    host_text = text;
  }
  // The warning when the Pi gets no valid host name from the overlay; "".
  std::string hostname_warning() const {
    switch (host_file) {
      case HostFile::absent:
        return path + ": has no etc/hostname: Alpine's hostname service then calls the Pi 'localhost'; add one " +
               "holding its host name " + kSetHostname;
      case HostFile::not_regular:
        return path + ": etc/hostname is " + host_what +
               ", not a file holding the host name: the name the Pi gets through it is not known here; make it a "
               "regular file holding the host name";
      case HostFile::too_big:
        return path + ": etc/hostname is larger than " + mib(detail::kSmallFileMax) +
               ", not read: a host name file holds one line; write the host name in it";
      case HostFile::unread:  // its data could not be read: reported as damage
        return "";
      case HostFile::read:
        return hostname_finding(path, host_text);
    }
    return "";
  }
};

}  // namespace

namespace detail {

// The name, then the gzip layer and the members in one go: libarchive walks
// the tar as Gunzip decompresses it, and the rest of the gzip data is checked
// after the tar's end. Findings are reported as if the gzip layer had been
// judged first: when it fails, its refusal replaces what the members showed.
ApkovlInspection apkovl_pass(const std::string& path, const std::string& data, bool review, bool summary) {
  ApkovlInspection out;
  ApkovlCheck& res = out.review.check;
  Findings refuse{out.review.refusals};
  Findings warn{res.warnings};
  std::vector<std::string> member_refusals, member_warnings;
  MemberReview members{path, res, {member_refusals}, {member_warnings}};
  members.on = review;
  SummaryCollector sum(path, data.size());
  if (!summary) sum.fail("not asked for");

  // The name the initramfs looks for.
  if (review) {
    const std::string base = std::filesystem::path(path).filename().string();
    res.card_name = base;
    if (!is_apkovl_name(base) || base.rfind(".apkovl.tar.gz", 0) == 0)
      refuse.add(path +
                 ": an apkovl must be named <host>.apkovl.tar.gz (the initramfs looks for *.apkovl.tar.gz* at the "
                 "top of the card); rename it");
    if (is_encrypted_apkovl_name(base)) {
      warn.add(base + " is encrypted: the Pi asks for its password on the console at every boot");
      members.on = false;  // not read
    }
  }
  const bool review_data = members.on;

  std::optional<ApkovlGzip> gz;
  std::optional<std::string> gz_refusal;  // the gzip layer's, which decides over everything after it
  auto gzip_failed = [&](const Error& e) {
    if (e.code() != Errc::input) throw e;
    gz_refusal = e.what();
  };
  if (review_data || sum.on()) {
    try {
      std::optional<Gunzip> stream;
      try {
        stream.emplace(path, data, kApkovlMaxUnpacked);
      } catch (const Error& e) {
        gzip_failed(e);
      }
      if (stream) {
        TarFeed feed{*stream, nullptr};
        ArchiveReader a(archive_read_new());
        if (!a) throw Error(Errc::internal, "archive_read_new failed");
        archive_read_support_format_tar(a.get());
        if (archive_read_open(a.get(), &feed, nullptr, feed_tar, nullptr) != ARCHIVE_OK) {
          if (members.on) members.refuse.add(members.not_tar(archive_error_string(a.get())));
          members.on = false;
          members.stopped = true;
          if (sum.on()) sum.not_a_tar(a.get());
        }
        while (members.on || sum.on()) {
          archive_entry* e = nullptr;
          const int rc = archive_read_next_header(a.get(), &e);
          if (rc == ARCHIVE_EOF) break;
          if (members.on && rc < ARCHIVE_WARN) members.header_error(a.get());
          const bool summarise = sum.on() && sum.header(rc, a.get());
          const bool review_member = members.on;
          if (!review_member && !summarise) break;
          const bool wanted_by_review = review_member && members.member(e);
          const bool wanted_by_summary = summarise && sum.member(e);
          if (!wanted_by_review && !wanted_by_summary) continue;  // the next header skips its data
          std::string why;
          const std::optional<std::string> text = read_member(a.get(), why);
          // A short or failed read leaves the review's hostname unknown (the next header reports damage).
          if (wanted_by_review && text && text->size() == static_cast<std::size_t>(archive_entry_size(e)))
            members.hostname(*text);
          if (wanted_by_summary) {
            if (text)
              sum.data(*text);
            else
              sum.data_failed(why);
          }
        }
        if (feed.error) std::rethrow_exception(feed.error);
        gz = stream->finish();  // the rest of the gzip data, after the tar's end
      }
    } catch (const Error& e) {
      gzip_failed(e);
    }
  }

  if (review_data) {
    if (gz_refusal) {
      refuse.add(*gz_refusal);
      res.members = 0;
      res.hostname.clear();
    } else {
      res.unpacked = gz->unpacked;
      if (std::any_of(data.end() - static_cast<std::ptrdiff_t>(gz->trailing), data.end(),
                      [](char c) { return c != 0; }))
        warn.add(path + ": " + std::to_string(gz->trailing) + (gz->trailing == 1 ? " byte" : " bytes") +
                 " after its gzip data, not gzip; busybox ignores them");
      // The Pi's root is a tmpfs: the whole overlay sits in RAM at every boot.
      if (gz->unpacked > kApkovlWarnUnpacked)
        warn.add(path + " unpacks to " + mib(gz->unpacked) +
                 ", all of it kept in the Pi's RAM (its root file system is a tmpfs) at every boot");
      if (!members.stopped && res.members == 0) members.refuse.add(path + " is an empty archive; " + kHowToMake);
      if (!members.stopped && res.members != 0) {
        res.hostname_warning = members.hostname_warning();
        if (!res.hostname_warning.empty()) members.warn.add(res.hostname_warning);
      }
      refuse.add_all(members.refuse);
      warn.add_all(members.warn);
    }
  }
  if (review) {
    out.review.problems = out.review.refusals.size() + refuse.more;
    out.review.warnings = res.warnings.size() + warn.more;
    refuse.finish(path, "problem");
    warn.finish(path, "warning");
  }

  if (summary) {
    // A summary problem found before the gzip layer (the size) stands; the
    // gzip layer's refusal comes before any found in the members.
    if (data.size() > kApkovlMaxBytes || (!gz_refusal && !sum.on()))
      out.problem = sum.problem();
    else if (gz_refusal)
      out.problem = *gz_refusal;
    else
      out.summary = std::move(sum.summary());
  }
  return out;
}

}  // namespace detail

ApkovlInspection inspect_apkovl(const std::string& path, const std::string& data) {
  return detail::apkovl_pass(path, data, true, true);
}

ApkovlReview review_apkovl(const std::string& path, const std::string& data) {
  return detail::apkovl_pass(path, data, true, false).review;
}

ApkovlCheck check_apkovl(const std::string& path, const std::string& data) {
  ApkovlReview rev = review_apkovl(path, data);
  if (!rev.refusals.empty()) throw Error(Errc::input, rev.refusals.front());
  return std::move(rev.check);
}

}  // namespace rpi::partition
