#include "partition/apkovl_check.hpp"

#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <string_view>

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

}  // namespace

// busybox's unpack_gz_stream (what `tar -zxf` in the initramfs runs) reads a
// gzip member, checks its CRC-32 and length trailer, then starts another
// member if the next two bytes are 1f 8b and otherwise ignores the rest.
// zlib's gzip mode checks the same trailer; it is stricter than busybox only
// about header fields busybox skips (header CRC, reserved flags), so the
// difference can only refuse a hand-made oddity, never accept a broken file.
// libarchive is not used for this: it stops at the tar end-of-archive blocks
// without reading the trailer, and it reads uncompressed tar as well.
ApkovlGzip check_apkovl_gzip(const std::string& name, const std::string& data, std::uint64_t max_unpacked) {
  const auto* in = reinterpret_cast<const unsigned char*>(data.data());
  if (data.size() < 2 || in[0] != 0x1F || in[1] != 0x8B)
    throw Error(Errc::input, name + " " + not_gzip_what(data) +
                                 ": Alpine's initramfs unpacks an apkovl with busybox `tar -zxf`, which refuses it "
                                 "(the Pi would boot unconfigured); compress it with `gzip`, or " +
                                 kHowToMake);
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw Error(Errc::internal, "zlib initialisation failed");
  struct End {
    z_stream* z;
    ~End() { inflateEnd(z); }
  } end{&zs};
  std::vector<unsigned char> out(256u << 10);
  ApkovlGzip res;
  std::size_t fed = 0;  // input bytes handed to zlib so far
  for (;;) {
    if (zs.avail_in == 0) {
      if (fed == data.size())
        throw Error(Errc::input, name + " is truncated (its gzip data ends early); copy it again, or " + kHowToMake);
      std::size_t n = std::min<std::size_t>(data.size() - fed, 1u << 30);
      zs.next_in = const_cast<Bytef*>(in + fed);
      zs.avail_in = static_cast<uInt>(n);
      fed += n;
    }
    zs.next_out = out.data();
    zs.avail_out = static_cast<uInt>(out.size());
    int rc = inflate(&zs, Z_NO_FLUSH);
    res.unpacked += out.size() - zs.avail_out;
    if (res.unpacked > max_unpacked)
      throw Error(Errc::input, name + " unpacks to more than " + mib(max_unpacked) + " (from " + mib(data.size()) +
                                   "): the Pi keeps its whole root file system, this overlay included, in RAM; leave "
                                   "big files out of the overlay (`lbu exclude`) and keep them on a disk");
    if (rc == Z_STREAM_END) {
      const std::size_t at = fed - zs.avail_in;  // just after this member's trailer
      if (data.size() - at >= 2 && in[at] == 0x1F && in[at + 1] == 0x8B) {
        inflateReset(&zs);
        continue;
      }
      res.trailing = data.size() - at;
      return res;
    }
    if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT) {
      std::string msg = zs.msg ? zs.msg : "corrupt data";
      throw Error(Errc::input, name + " is damaged (gzip: " + msg +
                                   "); busybox `tar -zxf` on the Pi stops with an error on it. Copy it again, or " +
                                   kHowToMake);
    }
    if (rc == Z_MEM_ERROR) throw Error(Errc::internal, "zlib: out of memory");
    // Z_OK, or Z_BUF_ERROR (it needs more input): go on.
  }
}

namespace {

constexpr std::uint64_t kHostnameMax = 4096;  // a longer etc/hostname is not read

// A host name as sethostname(2) and DNS take it: at most 64 characters, labels
// of 1..63 letters, digits and '-' (RFC 1123), not starting or ending in '-'.
bool valid_hostname(std::string_view s) {
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

// The first line of an etc/hostname, blanks trimmed; "" unless a valid host name.
std::string hostname_of(std::string_view text) {
  std::string_view line = text.substr(0, text.find('\n'));
  const std::size_t first = line.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return "";
  line = line.substr(first, line.find_last_not_of(" \t\r") - first + 1);
  return valid_hostname(line) ? std::string(line) : std::string();
}

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
  void finish(const std::string& path, const std::string& noun) {
    if (more)
      list.push_back(path + ": " + std::to_string(more) + " more " + noun + (more == 1 ? "" : "s") +
                     " like those above");
  }
};

void review_members(const std::string& path, const std::string& data, ApkovlCheck& res, Findings& refuse,
                    Findings& warn) {
  ArchiveReader a(archive_read_new());
  if (!a) throw Error(Errc::internal, "archive_read_new failed");
  archive_read_support_filter_gzip(a.get());
  archive_read_support_format_tar(a.get());
  auto not_tar = [&](const char* m) {
    return path + " is gzip-compressed but holds no tar archive (" + std::string(m ? m : "unreadable") + "); " +
           kHowToMake;
  };
  if (archive_read_open_memory(a.get(), data.data(), data.size()) != ARCHIVE_OK) {
    refuse.add(not_tar(archive_error_string(a.get())));
    return;
  }
  for (;;) {
    archive_entry* e = nullptr;
    int rc = archive_read_next_header(a.get(), &e);
    if (rc == ARCHIVE_EOF) break;
    if (rc < ARCHIVE_WARN) {
      const char* m = archive_error_string(a.get());
      if (!res.members)
        refuse.add(not_tar(m));
      else
        refuse.add(path + " is damaged after " + std::to_string(res.members) + " members: " + (m ? m : "unreadable") +
                   "; copy it again, or " + kHowToMake);
      return;
    }
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
    if (extracted_name(name) == "etc/hostname") {
      res.hostname.clear();
      if (!hl && archive_entry_filetype(e) == AE_IFREG && archive_entry_size(e) >= 0 &&
          archive_entry_size(e) <= static_cast<la_int64_t>(kHostnameMax)) {
        std::string text(static_cast<std::size_t>(archive_entry_size(e)), '\0');
        const la_ssize_t n = archive_read_data(a.get(), text.data(), text.size());
        // A short or failed read leaves it unknown (the next header reports damage).
        if (n == static_cast<la_ssize_t>(text.size())) res.hostname = hostname_of(text);
      }
    }
  }
  if (res.members == 0) refuse.add(path + " is an empty archive; " + kHowToMake);
}

// The name, then the gzip layer, then the members; stops where nothing more can be read.
void review(const std::string& path, const std::string& data, ApkovlCheck& res, Findings& refuse, Findings& warn) {
  const std::string base = std::filesystem::path(path).filename().string();
  const std::size_t pos = base.find(".apkovl.tar.gz");
  res.card_name = base;
  if (pos == std::string::npos || pos == 0)
    refuse.add(path +
               ": an apkovl must be named <host>.apkovl.tar.gz (the initramfs looks for *.apkovl.tar.gz* at the top "
               "of the card); rename it");
  if (pos != std::string::npos && pos + 14 < base.size()) {
    warn.add(base + " is encrypted: the Pi asks for its password on the console at every boot");
    return;
  }

  // The gzip layer first: magic, every member's CRC/length, and the size it
  // unpacks to (which also bounds the work a gzip bomb can cause).
  ApkovlGzip gz;
  try {
    gz = check_apkovl_gzip(path, data, kApkovlMaxUnpacked);
  } catch (const Error& e) {
    if (e.code() != Errc::input) throw;
    refuse.add(e.what());
    return;
  }
  res.unpacked = gz.unpacked;
  if (std::any_of(data.end() - static_cast<std::ptrdiff_t>(gz.trailing), data.end(), [](char c) { return c != 0; }))
    warn.add(path + ": " + std::to_string(gz.trailing) + (gz.trailing == 1 ? " byte" : " bytes") +
             " after its gzip data, not gzip; busybox ignores them");
  // The Pi's root is a tmpfs: the whole overlay sits in RAM at every boot.
  if (gz.unpacked > kApkovlWarnUnpacked)
    warn.add(path + " unpacks to " + mib(gz.unpacked) +
             ", all of it kept in the Pi's RAM (its root file system is a tmpfs) at every boot");
  review_members(path, data, res, refuse, warn);
}

}  // namespace

ApkovlReview review_apkovl(const std::string& path, const std::string& data) {
  ApkovlReview rev;
  Findings refuse{rev.refusals};
  Findings warn{rev.check.warnings};
  review(path, data, rev.check, refuse, warn);
  rev.problems = rev.refusals.size() + refuse.more;
  rev.warnings = rev.check.warnings.size() + warn.more;
  refuse.finish(path, "problem");
  warn.finish(path, "warning");
  return rev;
}

ApkovlCheck check_apkovl(const std::string& path, const std::string& data) {
  ApkovlReview rev = review_apkovl(path, data);
  if (!rev.refusals.empty()) throw Error(Errc::input, rev.refusals.front());
  return std::move(rev.check);
}

}  // namespace rpi::partition
