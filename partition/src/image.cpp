// The image assembler: tarball entries → FAT (streamed), extra files, MBR,
// block map, all-or-nothing output.
#include "partition/image.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <locale.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "fat_writer.hpp"
#include "gzip_source.hpp"
#include "partition/mbr.hpp"
#include "partition/tarball_rules.hpp"
#include "rpi/archive_reader.hpp"
#include "rpi/atomic_file.hpp"
#include "rpi/digest.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "rpi/folder_lock.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"

namespace rpi::partition {

namespace {

constexpr std::uint64_t MiB = 1ull << 20;
constexpr std::uint64_t kChecksumPiece = 4 * MiB;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The label as stored: upper case, at most 11 bytes, none of the characters
// mkfs.fat refuses, and never BOOT or CIDATA (alpine-facts §7).
std::string check_label(const std::string& label) {
  std::string up;
  for (char c : label) up.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  if (up.empty()) throw Error(Errc::usage, "the volume label must not be empty");
  if (up.size() > 11) throw Error(Errc::usage, "the volume label '" + label + "' is longer than 11 characters");
  if (up.front() == ' ') throw Error(Errc::usage, "the volume label must not start with a space");
  for (char c : up) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7F || std::string_view("*?.,;:/\\|+=<>[]\"").find(c) != std::string_view::npos)
      // Half of a UTF-8 character is not printed: it would make the message (and --json) invalid text.
      throw Error(Errc::usage, "the volume label '" + label + "' has a character FAT labels cannot hold" +
                                   (u >= 0x20 && u < 0x7F ? " ('" + std::string(1, c) + "')" : std::string()) +
                                   "; use A-Z, 0-9, - and _");
  }
  std::string trimmed = up.substr(0, up.find_last_not_of(' ') + 1);
  if (trimmed == "NO NAME")
    throw Error(Errc::usage, "the volume label NO NAME is how FAT says \"no label\"; use another one, e.g. ALPINE");
  if (trimmed == "BOOT")
    throw Error(Errc::usage,
                "the volume label BOOT is refused: the Pi firmware then fails to load boot/ files "
                "(raspberrypi/firmware#1529); use e.g. ALPINE");
  if (trimmed == "CIDATA")
    throw Error(Errc::usage, "the volume label CIDATA is refused: it makes Alpine start tiny-cloud; use e.g. ALPINE");
  return up;
}

// The uncompressed size a gzip file claims in its trailer (ISIZE, modulo 4 GiB):
// a cheap estimate of the content, used only to pick the automatic size.
std::optional<std::uint64_t> gzip_size_hint(int fd, std::uint64_t file_size) {
  if (file_size < 18) return std::nullopt;
  unsigned char head[2], tail[4];
  if (pread_full(fd, head, 2, 0, "") != 2 || head[0] != 0x1f || head[1] != 0x8b) return std::nullopt;
  if (pread_full(fd, tail, 4, file_size - 4, "") != 4) return std::nullopt;
  std::uint64_t isize = std::uint64_t(tail[0]) | (std::uint64_t(tail[1]) << 8) | (std::uint64_t(tail[2]) << 16) |
                        (std::uint64_t(tail[3]) << 24);
  // Wrapped past 4 GiB, or not a trailer at all (a truncated file): ignore.
  if (isize < file_size / 2 || isize / 64 > file_size) return std::nullopt;
  return isize;
}

std::string archive_message(archive* a) {
  const char* m = archive_error_string(a);
  return m ? m : "unknown libarchive error";
}

// "openssh-server-9.9_p2-r0" from apks/<arch>/openssh-server-9.9_p2-r0.apk:
// the package name is what precedes the last two '-'-separated fields.
std::optional<std::string> boot_package_name(const std::vector<std::string>& parts) {
  if (parts.size() != 3 || parts[0] != "apks") return std::nullopt;
  const std::string& f = parts[2];
  if (f.size() <= 4 || f.compare(f.size() - 4, 4, ".apk") != 0) return std::nullopt;
  const std::string stem = f.substr(0, f.size() - 4);
  const auto rel = stem.rfind('-');
  if (rel == std::string::npos || rel == 0) return std::nullopt;
  const auto ver = stem.rfind('-', rel - 1);
  if (ver == std::string::npos || ver == 0) return std::nullopt;
  return stem.substr(0, ver);
}

// The tarball, opened to read: a regular file of *size bytes.
Fd open_tarball(const std::string& tname, std::uint64_t* size) {
  Fd fd = open_or_throw(tname, O_RDONLY);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno("cannot read " + tname);
  if (!S_ISREG(st.st_mode)) throw Error(Errc::input, tname + " is not a regular file");
  *size = static_cast<std::uint64_t>(st.st_size);
  return fd;
}

// libarchive reads the tar stream from our GzipSource through this callback.
// Exceptions must not cross libarchive's C frames: they are parked here and
// rethrown once libarchive reports the failure.
struct TarFeed {
  GzipSource* src;
  std::exception_ptr error;
};

la_ssize_t feed_read(archive* a, void* data, const void** buf) {
  auto* feed = static_cast<TarFeed*>(data);
  try {
    return static_cast<la_ssize_t>(feed->src->read(buf));
  } catch (...) {
    feed->error = std::current_exception();
    archive_set_error(a, EIO, "read failed");
    return -1;
  }
}

void rethrow_feed(const TarFeed& feed) {
  if (feed.error) std::rethrow_exception(feed.error);
}

}  // namespace

std::uint64_t default_image_size(std::uint64_t content_bytes) {
  // Room for `lbu commit` backups and an apk cache on the card: twice the
  // content plus 256 MiB, at least a 512 MiB partition (as Raspberry Pi OS),
  // rounded up to 64 MiB.
  std::uint64_t part = std::max<std::uint64_t>(512 * MiB, 2 * content_bytes + 256 * MiB);
  part = (part + 64 * MiB - 1) / (64 * MiB) * (64 * MiB);
  return kPartitionStart + part;
}

namespace {
std::optional<FatGeometry> try_geometry(std::uint64_t image_size) {
  if (image_size < kPartitionStart + kSizeAlign) return std::nullopt;
  try {
    return compute_fat_geometry(kPartitionStart / 512, (image_size - kPartitionStart) / kSizeAlign * kSizeAlign / 512);
  } catch (const Error&) {
    return std::nullopt;
  }
}
// Bytes of files a volume holds (a few clusters stay free for the tail).
std::uint64_t capacity_of(const FatGeometry& g) {
  return std::uint64_t(g.clusters - kTailSlackClusters) * g.cluster_bytes();
}
}  // namespace

std::uint64_t min_image_size() {
  static const std::uint64_t min = [] {
    std::uint64_t s = kPartitionStart + kSizeAlign;
    while (!try_geometry(s)) s += kSizeAlign;
    return s;
  }();
  return min;
}

std::uint64_t min_image_size_for(std::uint64_t content_bytes) {
  // Room for the half-empty last cluster of every file and the directories: 5 % + 1 MiB.
  const std::uint64_t want = content_bytes + content_bytes / 20 + MiB;
  for (std::uint64_t s = min_image_size();; s += kSizeAlign) {
    std::optional<FatGeometry> g = try_geometry(s);
    if (g && capacity_of(*g) >= want) return s;
  }
}

FatGeometry image_geometry(std::uint64_t image_size, const std::string&) {
  if (image_size < min_image_size())
    throw Error(Errc::usage, "an image of " + format_size(image_size) + " is too small: the smallest is " +
                                 format_size(min_image_size()) + " (8 MiB before the partition, then a FAT16 volume)");
  std::uint64_t part = (image_size - kPartitionStart) / kSizeAlign * kSizeAlign;
  return compute_fat_geometry(kPartitionStart / 512, part / 512);
}

std::uint64_t max_image_size() {
  return kPartitionStart + (0xFFFFFFFFull * 512) / kSizeAlign * kSizeAlign;
}

std::string size_fix(const ImageOptions& o, const std::string& to) {
  if (!o.image_size) return "use --size " + to;
  switch (o.size_from) {
    case ImageOptions::SizeFrom::spec:
      return "set [boot] size to " + to + ", or leave it out";
    case ImageOptions::SizeFrom::card:
      return "use a card of " + to;
    default:
      return "use --size " + to + ", or leave --size out";
  }
}

Errc size_errc(const ImageOptions& o) {
  switch (o.size_from) {
    case ImageOptions::SizeFrom::spec:
      return Errc::spec;
    case ImageOptions::SizeFrom::card:
      return Errc::device;
    default:
      return Errc::usage;
  }
}

ImagePlan plan_image(const ImageOptions& o, std::optional<std::uint64_t> tarball_content) {
  ImagePlan p;
  p.label = check_label(o.label);
  std::uint64_t extras = 0;
  for (const auto& x : o.extra_files) extras += x.data.size();
  if (o.image_size) {
    if (o.image_size < min_image_size())
      throw Error(
          size_errc(o),
          "an image of " + format_size(o.image_size) + " is too small: the smallest is " +
              format_size(min_image_size()) + " (8 MiB before the partition, then a FAT16 volume)" +
              (tarball_content
                   ? ", and these files need about " + format_size(min_image_size_for(*tarball_content + extras))
                   : std::string()) +
              "; " +
              size_fix(o,
                       std::to_string(
                           (tarball_content ? min_image_size_for(*tarball_content + extras) : min_image_size()) >> 20) +
                           "MiB or more"));
    if (o.image_size > max_image_size())
      throw Error(size_errc(o), "an image of " + format_size(o.image_size) + " is too large: a FAT partition holds " +
                                    "at most 2 TiB, so the largest image is " + format_size(max_image_size()) + "; " +
                                    size_fix(o, std::to_string(max_image_size() >> 20) + "MiB at most"));
    p.image_size = kPartitionStart + (o.image_size - kPartitionStart) / kSizeAlign * kSizeAlign;
    p.size_reason = "as requested";
    if (p.image_size != o.image_size)
      p.size_reason += " (rounded down to " + format_size(p.image_size) + ": the partition is a multiple of 4 MiB)";
  } else if (tarball_content) {
    const std::uint64_t content = *tarball_content + extras + o.reserve_bytes;
    p.image_size = default_image_size(content);
    p.size_reason =
        "automatic: about " + format_size(content) + " of content" +
        (o.reserve_bytes ? " (" + format_size(o.reserve_bytes) + " of it packages for the apk cache)" : "") +
        ", twice that plus 256 MiB of room, at least a 512 MiB partition";
  } else {
    p.size_reason = std::string("automatic: the content") + (o.reserve_bytes ? " and the apk cache's packages" : "") +
                    " × 2 + 256 MiB, at least a 512 MiB partition";
    return p;
  }
  p.geometry = image_geometry(p.image_size, p.label);
  p.capacity = capacity_of(p.geometry);
  return p;
}

std::uint64_t tarball_content_estimate(const std::filesystem::path& tarball) {
  std::uint64_t size = 0;
  Fd fd = open_tarball(tarball.string(), &size);
  return gzip_size_hint(fd.get(), size).value_or(size * 2);
}

namespace {
// libarchive hands out UTF-8 names (pax paths) and towupper folds non-ASCII
// case only under a UTF-8 locale; the library must not depend on the caller's
// global locale, so it uses its own for this thread while it runs.
class Utf8ThreadLocale {
 public:
  Utf8ThreadLocale() : loc_(newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(0))) {
    if (loc_) old_ = uselocale(loc_);
  }
  ~Utf8ThreadLocale() {
    if (loc_) {
      uselocale(old_);
      freelocale(loc_);
    }
  }
  Utf8ThreadLocale(const Utf8ThreadLocale&) = delete;
  Utf8ThreadLocale& operator=(const Utf8ThreadLocale&) = delete;

 private:
  locale_t loc_;
  locale_t old_ = static_cast<locale_t>(0);
};
}  // namespace

namespace {

// Everything that belongs to one output image of a batch.
struct Job {
  const ImageOptions* options = nullptr;
  std::filesystem::path output;
  std::string oname;
  std::string label;
  ImageResult res;
  std::uint64_t capacity = 0;
  std::uint64_t content_estimate = 0;  // the tarball's files, from its gzip trailer
  std::unique_ptr<AtomicFile> img;
  std::unique_ptr<FatWriter> fw;
  std::map<std::string, std::string> extra_names;  // extra_names(): lower-case name -> name
  std::unique_ptr<Digest> fingerprint;
  bool skip_current = false;  // this job leaves the current entry out
  FatWriter::NodeId current_parent = 0;
};

std::string no_space_message(const Job& j, std::uint64_t needed, const std::string& entry) {
  std::uint64_t extras = 0;
  for (const auto& x : j.options->extra_files) extras += x.data.size();
  const std::uint64_t total = std::max(j.content_estimate + extras, needed);
  const std::string mib = std::to_string(min_image_size_for(total) >> 20) + "MiB";
  return j.oname + ": the files do not fit: the " + format_size(j.res.geometry.partition_bytes()) +
         " partition holds " + format_size(j.capacity) + ", full at entry '" + entry + "' (" + format_size(needed) +
         " so far, about " + format_size(total) + " in all); " + size_fix(*j.options, mib + " or more");
}

// The kind of error files that do not fit are: the size given is what to
// change; with the automatic size the tarball's content surprised the
// estimate (input).
Errc no_space_code(const Job& j) {
  return j.options->image_size ? size_errc(*j.options) : Errc::input;
}

// The names of the files `o` places at the FAT root (they replace the
// tarball's files of those names), under their lower-case forms; throws for a
// name FAT cannot hold there.
std::map<std::string, std::string> extra_names(const ImageOptions& o) {
  std::map<std::string, std::string> names;
  for (const auto& x : o.extra_files) {
    if (x.name.empty() || x.name.find('/') != std::string::npos || fatname::invalid_reason(x.name))
      throw Error(Errc::usage, "cannot place a file named '" + x.name + "' at the FAT root");
    names.emplace(lower(x.name), x.name);
  }
  return names;
}

// What the pass over the tarball found, the same for every job.
struct Walk {
  std::int64_t newest = 0;           // the latest (clamped) time of an entry
  std::vector<std::string> dropped;  // the tarball's own apkovls, left out
  std::set<std::string> boot_packages;
  std::map<std::string, std::string> originals;  // names of edits -> the tarball's bytes (without write_data)
  BootKeymaps keymaps;
  std::uint64_t entries = 0;  // tarball entries read
};

// Takes in the keymaps of kbd-bkeymaps apk `rel` (its bytes `apk`, or
// `too_big`), and notes when they cannot be known.
void take_keymap_apk(Walk& w, const std::string& rel, const std::string& apk, bool too_big, const EventSink& events,
                     const std::string& progress_name) {
  std::string unknown;
  std::vector<std::string> maps;
  if (too_big) {
    unknown = "it is larger than " + format_size(kMaxKeymapApkBytes);
  } else {
    try {
      maps = apk_keymaps(apk, rel);
    } catch (const Error& e) {
      unknown = e.what();
    }
  }
  BootKeymaps& k = w.keymaps;
  k.apk += (k.apk.empty() ? "" : ", ") + rel;
  if (!unknown.empty()) {
    k.unknown = unknown;
    emit(events, Event{"note", progress_name, 0, 0,
                       "cannot read the keymaps of the tarball's " + rel + " (" + unknown +
                           "): [system].keymap is not checked against them"});
  }
  std::vector<std::string> all;
  std::set_union(k.keymaps.begin(), k.keymaps.end(), maps.begin(), maps.end(), std::back_inserter(all));
  k.keymaps = k.unknown.empty() ? std::move(all) : std::vector<std::string>{};
}

// Reads the tar stream `feed` gives (GzipSource: the build's gzip checks)
// with `a`; throws the build's error for a file that is not a gzip-compressed tar.
void open_tar(archive* a, TarFeed& feed, const std::string& tname) {
  archive_read_support_format_tar(a);
  if (archive_read_open(a, &feed, nullptr, feed_read, nullptr) != ARCHIVE_OK) {
    rethrow_feed(feed);
    throw Error(Errc::input, tname + " is not a gzip-compressed tar archive (" + archive_message(a) + ")");
  }
}

// The next entry of `a` (nullptr at the end). After `entries` entries, the
// last named `current`: a damaged tarball is refused naming where it broke.
archive_entry* next_entry(archive* a, TarFeed& feed, const std::string& tname, std::uint64_t entries,
                          const std::string& current) {
  archive_entry* e = nullptr;
  const int rc = archive_read_next_header(a, &e);
  if (rc == ARCHIVE_EOF) return nullptr;
  if (rc < ARCHIVE_WARN) {
    rethrow_feed(feed);
    const std::string msg = archive_message(a);
    if (entries == 0) throw Error(Errc::input, tname + " is not a gzip-compressed tar archive (" + msg + ")");
    throw Error(Errc::input, tname + " is damaged after entry '" + current + "': " + msg);
  }
  return e;
}

// The one pass over the tarball: every entry is checked by the rules of
// tarball_rules.hpp and placed in the FAT of every job. With `write_data`
// false (scan_tarball) the data are read and checked all the same, and only
// the names go into the FATs; edited files' bytes are kept in Walk::originals.
Walk walk_tarball(int tar_fd, const std::string& tname, std::uint64_t tar_size, std::vector<Job>& jobs, bool write_data,
                  const std::string& progress_name) {
  const ImageOptions& first = *jobs.front().options;
  const EventSink& events = first.events;
  const std::optional<std::int64_t> sde = first.source_date_epoch;
  const std::atomic<bool>* cancel = first.cancel;

  ArchiveReader a(archive_read_new());
  if (!a) throw Error(Errc::internal, "libarchive: out of memory");
  GzipSource gz(tar_fd, tname);
  TarFeed feed{&gz, nullptr};
  open_tar(a.get(), feed, tname);

  Walk w;
  std::uint64_t entries = 0;
  std::uint64_t next_progress = 0;
  std::string current;
  std::uint64_t current_size = 0;
  auto clamp_time = [&](std::int64_t t) { return sde && t > *sde ? *sde : t; };
  auto for_each_job = [&](auto&& fn) {
    for (Job& j : jobs) {
      if (j.skip_current) continue;
      try {
        fn(j);
      } catch (const NoSpace&) {
        throw Error(no_space_code(j), no_space_message(j, std::max(j.fw->bytes_written(), current_size), current));
      }
    }
  };

  for (;;) {
    if (cancelled(cancel)) throw Cancelled{};
    archive_entry* e = next_entry(a.get(), feed, tname, entries, current);
    if (!e) break;
    EntryPath path = parse_entry_path(archive_entry_pathname_utf8(e), tname);
    current = path.display;
    ++entries;
    if (path.parts.empty()) continue;  // the "./" root entry
    const std::string rel = join(path.parts, "/");
    const std::int64_t mtime = clamp_time(archive_entry_mtime(e));
    w.newest = std::max(w.newest, mtime);
    const DosTime dt = DosTime::from_unix(mtime);
    const char* hardlink = archive_entry_hardlink_utf8(e);
    const auto type = archive_entry_filetype(e);
    const std::int64_t declared = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
    if (write_data) {
      const std::string fp_line =
          rel + "\n" + std::to_string(type) + " " + std::to_string(declared) + " " + std::to_string(mtime) + "\n";
      for (Job& j : jobs) j.fingerprint->update(fp_line);
    }
    for (Job& j : jobs) j.skip_current = false;
    const std::vector<std::string> parent_parts(path.parts.begin(), path.parts.end() - 1);
    const std::string& name = path.parts.back();
    const bool at_root = parent_parts.empty();
    current_size = std::max<std::int64_t>(declared, 0);

    // A root folder (or what is in one) named like a file a job places at the
    // root after the tarball: the card cannot have both.
    if (type == AE_IFDIR || !at_root)
      for (const Job& j : jobs)
        if (auto x = j.extra_names.find(lower(path.parts.front())); x != j.extra_names.end())
          throw Error(Errc::input, folder_for_file_message(tname, path, x->second));

    if (type == AE_IFDIR) {
      for_each_job([&](Job& j) { j.fw->make_dir(path.parts, dt, true, path.display); });
      continue;
    }
    check_entry(type, hardlink != nullptr, declared, tname, path.display);
    if (auto pkg = boot_package_name(path.parts)) w.boot_packages.insert(*pkg);
    // kbd-bkeymaps' bytes are kept on their way to the card: its keymaps are
    // what [system].keymap can name.
    const bool keymap_apk = is_keymap_apk(path.parts);
    std::string keymap_bytes;
    bool keymap_too_big = keymap_apk && current_size > kMaxKeymapApkBytes;
    // .alpine-release names the release the keymaps are of (BootKeymaps::release).
    const bool release_file = at_root && name == ".alpine-release";
    std::string release_text;
    if (at_root && is_old_apkovl(name)) {
      w.dropped.push_back(rel);
      emit(events, Event{"note", progress_name, 0, 0, left_out_apkovl_note(rel)});
      continue;
    }
    bool any = false;
    for (Job& j : jobs) {
      j.skip_current = at_root && j.extra_names.count(lower(name));
      if (j.skip_current) j.res.dropped.push_back(rel);
      any = any || !j.skip_current;
    }
    if (!any) continue;
    const bool read_only = (archive_entry_perm(e) & 0222) == 0;
    for_each_job([&](Job& j) { j.current_parent = j.fw->make_dir(parent_parts, dt, false, path.display); });

    bool edited = false;
    for (Job& j : jobs)
      if (!j.skip_current && at_root && find_edit(j.options->edits, name) != j.options->edits.end()) edited = true;

    if (hardlink && declared <= 0) {
      EntryPath target = parse_entry_path(hardlink, tname);
      // The link is stored as a copy of its target, already written: its
      // changes could not be made.
      if (edited)
        throw Error(Errc::input, tname + ": entry '" + path.display + "' is a hard link to '" + target.display +
                                     "', and the changes the spec makes to " + name +
                                     " can be made only to a file of its own; store it in the tarball as a regular "
                                     "file");
      for_each_job([&](Job& j) {
        auto src = j.fw->find(target.parts);
        if (!src || j.fw->is_dir(*src))
          throw Error(Errc::input, tname + ": entry '" + path.display + "' is a hard link to '" + target.display +
                                       "', which is not a file earlier in the archive");
        j.fw->copy_file(*src, j.current_parent, name, dt, path.display);
      });
      continue;
    }

    for_each_job([&](Job& j) { j.fw->begin_file(j.current_parent, name, dt, read_only, path.display); });
    if (edited) {
      check_edit_size(tname, path.display, static_cast<std::uint64_t>(current_size));
      std::string original;
      char buf[65536];
      for (;;) {
        la_ssize_t n = archive_read_data(a.get(), buf, sizeof buf);
        if (n < 0) {
          rethrow_feed(feed);
          throw Error(Errc::input, tname + ": entry '" + path.display + "': " + archive_message(a.get()));
        }
        if (n == 0) break;
        original.append(buf, static_cast<std::size_t>(n));
        check_edit_size(tname, path.display, original.size());
      }
      for_each_job([&](Job& j) {
        auto it = find_edit(j.options->edits, name);
        if (!write_data) {
          if (it != j.options->edits.end()) w.originals[it->first] = original;
          return;
        }
        std::string bytes = it == j.options->edits.end() ? original : it->second(original);
        // The edited bytes name the image too: two cards that differ only in
        // cmdline.txt (apkovl=URL per host) must not share a disk id.
        if (it != j.options->edits.end()) j.fingerprint->update("edit " + name + " " + sha256_hex(bytes) + "\n");
        j.fw->write(bytes.data(), bytes.size());
      });
    } else {
      std::uint64_t pos = 0;
      for (;;) {
        const void* buf = nullptr;
        std::size_t len = 0;
        la_int64_t off = 0;
        if (cancelled(cancel)) throw Cancelled{};
        int r = archive_read_data_block(a.get(), &buf, &len, &off);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) {
          rethrow_feed(feed);
          throw Error(Errc::input, tname + ": entry '" + path.display + "': " + archive_message(a.get()));
        }
        const std::uint64_t gap = static_cast<std::uint64_t>(off) > pos ? static_cast<std::uint64_t>(off) - pos : 0;
        if (release_file && release_text.size() < kMaxReleaseFileBytes)
          release_text.append(static_cast<const char*>(buf), std::min(len, kMaxReleaseFileBytes - release_text.size()));
        if (keymap_apk && !keymap_too_big) {
          keymap_too_big = keymap_bytes.size() + gap + len > kMaxKeymapApkBytes;
          if (keymap_too_big) {
            std::string().swap(keymap_bytes);
          } else {
            keymap_bytes.append(gap, '\0');
            keymap_bytes.append(static_cast<const char*>(buf), len);
          }
        }
        if (write_data)
          for_each_job([&](Job& j) {
            if (gap) j.fw->write_zeros(gap);
            j.fw->write(buf, len);
          });
        pos = static_cast<std::uint64_t>(off) + len;
      }
      if (write_data && declared > 0 && pos < static_cast<std::uint64_t>(declared))  // sparse tail
        for_each_job([&](Job& j) { j.fw->write_zeros(static_cast<std::uint64_t>(declared) - pos); });
    }
    for_each_job([&](Job& j) { j.fw->end_file(); });
    if (keymap_apk) take_keymap_apk(w, rel, keymap_bytes, keymap_too_big, events, progress_name);
    if (release_file) w.keymaps.release = alpine_release_of(release_text);
    if (write_data && jobs.front().fw->bytes_written() >= next_progress) {
      next_progress = jobs.front().fw->bytes_written() + 8 * MiB;
      emit(events, Event{"build", progress_name, gz.compressed_bytes(), tar_size, ""});
    }
  }
  if (entries == 0) throw Error(Errc::input, tname + " is an empty archive");
  w.entries = entries;
  return w;
}

// The checks of the tree a job's FAT got from the tarball: the Alpine boot
// files (unless forced); returns the warnings about edits that found no file.
std::vector<std::string> check_tree(const FatWriter& fw, const ImageOptions& o, const std::string& tname) {
  const RootLookup root = [&fw](const std::string& name) -> std::optional<bool> {
    auto n = fw.find({name});
    return n ? std::optional<bool>(fw.is_dir(*n)) : std::nullopt;
  };
  if (!o.force) require_boot_files(tname, missing_boot_files(root));
  std::vector<std::string> warnings;
  for (const auto& [name, fn] : o.edits)
    if (edit_finds_no_file(root, name)) warnings.push_back(edit_not_applied_warning(name));
  return warnings;
}

}  // namespace

ImageResult build_image(const std::filesystem::path& tarball, const std::filesystem::path& output,
                        const ImageOptions& options) {
  return build_images(tarball, {ImageJob{output, options}}).front();
}

std::vector<ImageResult> build_images(const std::filesystem::path& tarball, const std::vector<ImageJob>& specs,
                                      const std::function<void()>& before_commit) {
  Utf8ThreadLocale utf8;
  if (specs.empty()) return {};
  const std::string tname = tarball.string();
  const EventSink& events = specs.front().options.events;
  const std::string progress_name =
      specs.size() == 1 ? specs.front().output.filename().string() : std::to_string(specs.size()) + " images";

  Stopwatch step;
  std::uint64_t tar_size = 0;
  Fd tar_fd = open_tarball(tname, &tar_size);
  const std::optional<std::uint64_t> hint = gzip_size_hint(tar_fd.get(), tar_size);

  std::vector<Job> jobs(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    Job& j = jobs[i];
    const ImageOptions& o = specs[i].options;
    j.options = &o;
    j.output = specs[i].output;
    j.oname = j.output.string();
    j.extra_names = extra_names(o);
    j.content_estimate = hint ? *hint : tar_size * 2;
    ImagePlan plan = plan_image(o, j.content_estimate);
    j.label = plan.label;
    j.res.image_size = plan.image_size;
    j.res.size_reason = plan.size_reason;
    j.res.geometry = plan.geometry;
    j.capacity = plan.capacity;
    const FatGeometry& g = j.res.geometry;
    // Created 0600 (an apkovl holds password hashes and keys), renamed at the end.
    j.img = std::make_unique<AtomicFile>(j.output, 0600);
    if (::ftruncate(j.img->fd(), static_cast<off_t>(j.res.image_size)) != 0) throw_errno("cannot size " + j.oname);
    j.fw = std::make_unique<FatWriter>(j.img->fd(), j.oname, g);
    j.fw->set_context(tname);
    j.fingerprint = std::make_unique<Digest>(Digest::Algo::sha256);
  }

  const Walk walk = walk_tarball(tar_fd.get(), tname, tar_size, jobs, true, progress_name);
  emit_detail(events, progress_name,
              "read " + tname + " (" + format_size(tar_size) + " compressed): " + std::to_string(walk.entries) +
                  " entries, " + format_size(jobs.front().fw->bytes_written()) + " of files into " +
                  (jobs.size() == 1 ? jobs.front().oname : progress_name) + " in " + step.lap());
  for (Job& j : jobs) {
    j.res.keymaps = walk.keymaps;
    if (j.options->check_keymaps && walk.keymaps.known()) j.options->check_keymaps(walk.keymaps);
  }
  emit(events, Event{"build", progress_name, tar_size, tar_size, ""});

  const std::int64_t build_time = walk.newest ? walk.newest : specs.front().options.source_date_epoch.value_or(0);
  const DosTime bt = DosTime::from_unix(build_time);
  for (Job& j : jobs) {
    FatWriter& fw = *j.fw;
    const ImageOptions& o = *j.options;
    for (const auto& w : check_tree(fw, o, tname)) emit(events, Event{"warning", j.oname, 0, 0, w});
    j.res.dropped.insert(j.res.dropped.begin(), walk.dropped.begin(), walk.dropped.end());
    j.res.boot_packages.assign(walk.boot_packages.begin(), walk.boot_packages.end());
    try {
      for (const auto& x : o.extra_files) {
        fw.begin_file(fw.root(), x.name, bt, false, x.name);
        fw.write(x.data.data(), x.data.size());
        fw.end_file();
        j.fingerprint->update("extra " + x.name + " " + sha256_hex(x.data) + "\n");
      }
      for (const auto& d : o.extra_dirs) {
        if (d.empty() || d.find('/') != std::string::npos)
          throw Error(Errc::usage, "cannot create a directory named '" + d + "' at the FAT root");
        fw.make_dir({d}, bt, true, d);
        j.fingerprint->update("dir " + d + "\n");
      }
      j.fingerprint->update("label " + j.label + " size " + std::to_string(j.res.image_size) + "\n");
      std::string fp = j.fingerprint->finish();
      auto word = [&fp](std::size_t at) {
        std::uint32_t v = 0;
        for (std::size_t k = 0; k < 4; ++k) v = (v << 8) | static_cast<unsigned char>(fp[at + k]);
        return v;
      };
      j.res.disk_id = o.disk_id.value_or(word(0) ? word(0) : 1);
      const std::uint32_t volume_id = o.volume_id.value_or(word(4));
      j.res.map = BlockMap(j.res.image_size);
      fw.finish(j.label, volume_id, bt, j.res.map);
    } catch (const NoSpace& e) {
      throw Error(Errc::input, j.oname + ": " + e.what() + ": the " + format_size(j.res.geometry.partition_bytes()) +
                                   " partition holds " + format_size(j.capacity) + " and " +
                                   format_size(fw.bytes_written()) + " are taken; use a larger --size");
    }
    const FatGeometry& g = j.res.geometry;
    write_mbr(j.img->fd(), j.oname, j.res.disk_id,
              {MbrPartition{kPartitionStart / 512, g.total_sectors,
                            std::uint8_t(g.type == FatType::fat32 ? 0x0C : 0x0E), true}});
    j.res.map.split(kChecksumPiece);
    j.res.map.compute_checksums(j.img->fd(), j.oname);
    j.res.files = fw.file_count();
    j.res.directories = fw.dir_count();
    j.res.content_bytes = fw.bytes_written();
    j.res.free_bytes = fw.bytes_free();
    emit_detail(events, j.oname,
                "wrote " + j.oname + ": " + std::to_string(j.res.files) + " files, " +
                    format_size(j.res.content_bytes) + " of " + format_size(j.res.image_size) + " (" +
                    (g.type == FatType::fat32 ? "FAT32" : "FAT16") + ") and the MBR; " +
                    format_size(j.res.map.mapped_bytes()) + " mapped and checksummed for the .bmap, in " + step.lap());
  }

  // Commit only when every image of the batch is complete.
  std::vector<ImageResult> out;
  std::vector<std::unique_ptr<AtomicFile>> bmaps;
  for (Job& j : jobs) {
    std::filesystem::path bmap_path = j.output;
    bmap_path += ".bmap";
    auto bmap = std::make_unique<AtomicFile>(bmap_path, kBmapMode);
    std::string xml = j.res.map.to_bmap_xml();
    write_all(bmap->fd(), xml.data(), xml.size(), "cannot write " + bmap_path.string());
    j.res.image = j.output;
    j.res.bmap = bmap_path;
    bmaps.push_back(std::move(bmap));
  }
  if (before_commit) before_commit();
  std::vector<std::filesystem::path> outputs;
  for (const Job& j : jobs) outputs.push_back(j.output);
  FolderLocks renaming(outputs);
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    jobs[i].img->commit();
    bmaps[i]->commit();
    out.push_back(std::move(jobs[i].res));
  }
  return out;
}

TarballScan scan_tarball(const std::filesystem::path& tarball, const ImageOptions& options) {
  Utf8ThreadLocale utf8;
  const std::string tname = tarball.string();
  std::uint64_t tar_size = 0;
  Fd tar_fd = open_tarball(tname, &tar_size);
  // What the scan finds, it returns: no events, and the edits only by name.
  ImageOptions o;
  o.force = options.force;
  for (const auto& [name, fn] : options.edits) o.edits.emplace(name, nullptr);
  std::vector<Job> jobs(1);
  Job& j = jobs.front();
  j.options = &o;
  j.oname = tname;
  j.extra_names = extra_names(options);
  // The FAT of the build without its bytes: it checks the names as the build's
  // does, and nothing is written through it (it has no file).
  j.fw = std::make_unique<FatWriter>(-1, tname, image_geometry(min_image_size(), ""));
  j.fw->set_context(tname);
  Walk walk = walk_tarball(tar_fd.get(), tname, tar_size, jobs, false, tname);
  TarballScan scan;
  scan.warnings = check_tree(*j.fw, o, tname);
  scan.root_files = std::move(walk.originals);
  scan.apkovls = std::move(walk.dropped);
  scan.keymaps = std::move(walk.keymaps);
  return scan;
}

std::string tarball_release(const std::filesystem::path& tarball) {
  return tarball_release(tarball, {});
}

std::string tarball_release(const std::filesystem::path& tarball,
                            const std::function<void(const void*, std::size_t)>& every_block) {
  const std::string tname = tarball.string();
  std::uint64_t tar_size = 0;
  Fd tar_fd = open_tarball(tname, &tar_size);
  // The rest of the file after what the decompressor read, when every block is asked for.
  auto rest = [&](std::string release) {
    if (every_block) read_to_end(tar_fd.get(), "cannot read " + tname, every_block);
    return release;
  };
  ArchiveReader a(archive_read_new());
  if (!a) throw Error(Errc::internal, "libarchive: out of memory");
  GzipSource gz(tar_fd.get(), tname);
  if (every_block) gz.set_tap(every_block);
  TarFeed feed{&gz, nullptr};
  open_tar(a.get(), feed, tname);
  std::string current;
  for (std::uint64_t entries = 0;; ++entries) {
    archive_entry* e = next_entry(a.get(), feed, tname, entries, current);
    if (!e) return rest({});
    const EntryPath path = parse_entry_path(archive_entry_pathname_utf8(e), tname);
    current = path.display;
    if (path.parts.size() != 1 || path.parts.front() != ".alpine-release" || archive_entry_filetype(e) != AE_IFREG)
      continue;
    // The walk keeps the same first bytes (kMaxReleaseFileBytes) of it.
    std::string text(kMaxReleaseFileBytes, '\0');
    std::size_t got = 0;
    while (got < text.size()) {
      const la_ssize_t n = archive_read_data(a.get(), text.data() + got, text.size() - got);
      if (n < 0) {
        rethrow_feed(feed);
        throw Error(Errc::input, tname + " is damaged in entry '" + current + "': " + archive_message(a.get()));
      }
      if (n == 0) break;
      got += static_cast<std::size_t>(n);
    }
    text.resize(got);
    return rest(alpine_release_of(text));
  }
}

}  // namespace rpi::partition
