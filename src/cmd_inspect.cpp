// `rpi-provision inspect IMAGE|DEVICE|APKOVL|FOLDER`: what a card or image
// holds — the partition table, the boot FAT (type, label, ID, cluster size,
// free space), its top-level files, .alpine-release, cmdline.txt and a
// summary of the apkovl — or the same summary of a bare apkovl file (as
// `lbu package` or `rpi-provision apkovl` write it), or of each apkovl in a
// folder (`apkovl --out-dir`). Read-only: the target is opened O_RDONLY and
// never written, so it is safe on a card that is in use. Nothing secret is
// shown (see reader.hpp).
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "app.hpp"
#include "partition/apkovl_check.hpp"
#include "partition/boot_fat.hpp"
#include "partition/reader.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"
#include "udev/flash.hpp"

namespace rpi::cli {
namespace {

using namespace rpi::partition;

constexpr std::uint64_t kSmallTextMax = 64 * 1024;  // .alpine-release, cmdline.txt

std::string hex2(std::uint8_t v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", v);
  return buf;
}

// First line of a text file, control characters shown as '?'.
std::string first_line(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\n' || c == '\r') break;
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) ? '?' : c;
  }
  return out;
}

// `s` padded with spaces to `width` characters (UTF-8 aware, for the columns).
std::string pad(const std::string& s, std::size_t width) {
  std::size_t chars = 0;
  for (unsigned char c : s) chars += (c & 0xC0) != 0x80;
  return chars >= width ? s : s + std::string(width - chars, ' ');
}

std::string json_array(const std::vector<std::string>& items) {
  std::string s = "[";
  for (std::size_t i = 0; i < items.size(); ++i) s += (i ? "," : "") + items[i];
  return s + "]";
}
std::string json_string(const std::string& s) {
  return json_escape(s);
}  // quotes included
std::string json_strings(const std::vector<std::string>& v) {
  std::vector<std::string> q;
  for (auto& s : v) q.push_back(json_string(s));
  return json_array(q);
}

// "1 problem", "2 warnings".
std::string count_of(std::size_t n, const char* noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

// The fields of a result without a boot FAT: null where nothing could be
// read, so that every result has the same keys. `apkovls`: the JSON objects
// of bare apkovl files (none for a medium).
void add_no_fat(JsonObject& out, const std::vector<std::string>& warnings,
                const std::vector<std::string>& apkovls = {}) {
  out.add_raw("fat", "null")
      .add_raw("files", "[]")
      .add_raw("alpine_release", "null")
      .add_raw("cmdline", "null")
      .add_raw("apkovls", json_array(apkovls))
      .add_raw("warnings", json_strings(warnings));
}

// One apkovl's part of a result: its lines and its object in "apkovls".
struct ApkovlPart {
  std::string text;
  std::string json;
};

// What inspect shows of one apkovl: what `--apkovl` would refuse or warn
// about (added to `warnings`, once each) and the summary. `name` is its file
// name (the JSON "name"), `shown` how messages name it (on a card, the same;
// a bare file, its path). `read` gives its data (throws Error when it cannot);
// with a `not_read` reason it is judged by its name alone (encrypted).
ApkovlPart describe_apkovl(const std::string& name, const std::string& shown, std::uint64_t size,
                           const std::function<std::string()>& read, const std::string& not_read,
                           std::vector<std::string>& warnings) {
  std::optional<ApkovlSummary> summary;
  std::string problem;                 // why there is no summary
  std::optional<ApkovlReview> review;  // --apkovl's checks (none if the file could not be read)
  // A finding reported twice (the gzip layer's refusal is also why there is no summary) is listed once.
  auto warn_once = [&](const std::string& w) {
    if (std::find(warnings.begin(), warnings.end(), w) == warnings.end()) warnings.push_back(w);
  };
  std::optional<std::string> data;
  if (!not_read.empty()) {
    problem = not_read;
  } else {
    try {
      data = read();
    } catch (const Error& err) {
      problem = err.what();
      warn_once(err.what());
    }
  }
  // What `--apkovl` checks, as findings: an apkovl already on a card (or
  // about to go on one) is reported, never refused (an encrypted one is
  // judged by its name alone). The checks and the summary come from one pass
  // over the data.
  try {
    std::optional<ApkovlInspection> seen;
    if (data)
      seen = inspect_apkovl(shown, *data);
    else if (!not_read.empty())
      seen = ApkovlInspection{review_apkovl(shown, std::string()), std::nullopt, ""};
    if (seen) {
      review = std::move(seen->review);
      for (const auto& w : review->refusals) warn_once(w);
      for (const auto& w : review->check.warnings) warn_once(w);
    }
    if (data) {
      if (seen->summary) {
        summary = std::move(seen->summary);
      } else {
        problem = seen->problem;
        warn_once(seen->problem);
      }
    }
  } catch (const Error& err) {  // zlib or libarchive unusable: no findings, the rest is still shown
    if (data) problem = err.what();
    warn_once(err.what());
  }
  ApkovlPart part;
  std::string& text = part.text;
  JsonObject j;
  j.add("name", name).add("size", size);
  if (review) {
    JsonObject c;
    c.add_bool("accepted", review->refusals.empty())
        .add_raw("problems", json_strings(review->refusals))
        .add_raw("warnings", json_strings(review->check.warnings));
    j.add_raw("check", c.str());
  } else {
    j.add_raw("check", "null");
  }
  text += "apkovl: " + printable(name) + " (" + std::to_string(size) + " bytes";
  if (!summary) {
    text += "): " + printable(problem) + "\n";
    j.add("problem", problem);
    part.json = j.str();
    return part;
  }
  const ApkovlSummary& s = *summary;
  text += ", " + std::to_string(s.members) + " members)\n";
  text += "  hostname       " + (s.hostname.empty() ? std::string("(not set)") : printable(s.hostname)) + "\n";
  text += "  packages       " + join(s.world, " ") + "\n";
  std::vector<std::string> lv;
  JsonObject rl;
  for (auto& [level, svcs] : s.runlevels) {
    lv.push_back(level + ": " + join(svcs, " "));
    rl.add_raw(level, json_strings(svcs));
  }
  text += "  services       " + join(lv, "; ") + "\n";
  std::vector<std::string> us, uj;
  for (auto& u : s.users) {
    us.push_back(u.name + " (" + std::to_string(u.uid) + ", " + u.shell + ")");
    JsonObject x;
    x.add("name", u.name).add("uid", static_cast<std::uint64_t>(u.uid)).add("shell", u.shell);
    uj.push_back(x.str());
  }
  text += "  users          " + join(us, ", ") + "\n";
  text += std::string("  ssh host keys  ") + (s.ssh_host_keys ? "yes" : "no") + "\n";
  std::string ssids;  // the networks it joins, never a psk
  for (const auto& n : s.wifi_ssids) ssids += (ssids.empty() ? ": \"" : ", \"") + n + "\"";
  text += std::string("  wifi config    ") + (s.wifi_config ? "yes" + ssids : std::string("no")) + "\n";
  if (review) {
    const std::uint64_t problems = review->problems, odd = review->warnings;
    text += "  check          " +
            (problems ? "--apkovl would refuse it: " + count_of(problems, "problem") +
                            (odd ? ", " + count_of(odd, "warning") : std::string()) + " (under Warnings)"
             : odd ? "passes --apkovl's checks, with " + count_of(odd, "warning") + " (under Warnings)"
                   : std::string("passes --apkovl's checks")) +
            "\n";
  }
  for (auto& w : s.warnings)
    // The review above already names such a member, as the refusal --apkovl gives.
    if (!review || w.rfind("member with an absolute or '..' path", 0) != 0) warnings.push_back(shown + ": " + w);
  j.add("members", s.members)
      .add("hostname", s.hostname)
      .add_raw("world", json_strings(s.world))
      .add_raw("runlevels", rl.str())
      .add_raw("users", json_array(uj))
      .add_bool("ssh_host_keys", s.ssh_host_keys)
      .add_bool("wifi_config", s.wifi_config)
      .add_raw("wifi_networks", json_strings(s.wifi_ssids))
      .add_bool("shadow", s.shadow);
  part.json = j.str();
  return part;
}

// The largest apkovl file inspect reads (as `--apkovl` does); the summary
// stops at kApkovlMaxBytes and says so.
constexpr std::size_t kApkovlFileMax = 256u << 20;

// Bare apkovl files (`paths`: the one file given, or those of a folder): a
// result of the card's shape, null where only a medium has something, each
// file in "apkovls" and as a section of the text.
void inspect_apkovl_files(const std::string& target, const std::vector<std::string>& paths, bool folder,
                          AppContext& ctx) {
  std::string text;
  std::vector<std::string> warnings, ovl_json;
  std::uint64_t total = 0;
  if (folder) text += printable(target) + ": " + count_of(paths.size(), "apkovl file") + ", by name\n";
  for (const auto& path : paths) {
    struct stat st {};
    const std::uint64_t size = ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
    total += size;
    const std::string name = std::filesystem::path(path).filename().string();
    std::vector<std::string> own;  // this file's warnings
    ApkovlPart part = describe_apkovl(
        name, path, size, [&] { return read_regular_file(path, kApkovlFileMax); },
        is_encrypted_apkovl_name(name) ? "encrypted; not read" : "", own);
    if (folder) text += "\n";
    text +=
        printable(path) + ": " + std::to_string(size) + " bytes (" + format_size(size) + "), an apkovl\n" + part.text;
    if (!own.empty()) {
      text += "Warnings:\n";
      for (auto& w : own) text += "  " + printable(w) + "\n";
    }
    warnings.insert(warnings.end(), own.begin(), own.end());
    ovl_json.push_back(std::move(part.json));
  }
  JsonObject out;
  out.add("kind", folder ? "folder" : "apkovl")
      .add("path", target)
      .add("size", total)
      .add_raw("partition_table", "null");
  add_no_fat(out, warnings, ovl_json);
  ctx.reporter.result("inspect", text, std::move(out));
}

// The files of a folder that the initramfs glob `*.apkovl.tar.gz*` matches
// (not hidden ones: `apkovl`'s temporaries), regular files (or links to
// them), sorted by name.
std::vector<std::string> folder_apkovls(const std::string& folder) {
  std::error_code ec;
  std::vector<std::string> names;
  for (std::filesystem::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code type_ec;
    if (name.empty() || name.front() == '.' || !is_apkovl_name(name) || !it->is_regular_file(type_ec)) continue;
    names.push_back(name);
  }
  if (ec) throw Error(Errc::io, "cannot read the folder " + folder + ": " + ec.message());
  std::sort(names.begin(), names.end());
  std::vector<std::string> paths;
  for (const auto& n : names) paths.push_back((std::filesystem::path(folder) / n).string());
  return paths;
}

// What inspect says of a compressed disk image (`z`: "gzip", "xz", "zstd" or
// "bzip2"): decompress it with the tool of that name (to the name without its
// suffix, as `-dk` makes it; to pi.img when it has none), or write it to a
// card. The paths as words of a command line the user may paste.
std::string compressed_image_error(const std::string& target, const std::string& z) {
  const std::string suffix = z == "gzip" ? ".gz" : z == "xz" ? ".xz" : z == "zstd" ? ".zst" : ".bz2";
  const std::string name = std::filesystem::path(target).filename().string();
  const bool suffixed = name.size() > suffix.size() && name.ends_with(suffix);
  const std::string image = suffixed ? target.substr(0, target.size() - suffix.size()) : "pi.img";
  const std::string command =
      z + (suffixed ? " -dk " + shell_word(target) : " -dc " + shell_word(target) + " > " + shell_word(image));
  return target + " is " + (z == "xz" ? "an " : "a ") + z + "-compressed disk image: decompress it first (`" + command +
         "`) and inspect " + shell_word(image) + ", or write it to a card (`rpi-provision --image " +
         shell_word(target) + " --device /dev/sdX` decompresses it) and inspect the card";
}

// Whether the regular file `target` is a bare apkovl: named like one, or a
// gzip-compressed tar that is no boot tarball. Throws Errc::input naming what
// other compressed files are (a boot tarball, a compressed image: gzip, xz,
// zstd or bzip2, told by their first bytes) and what to do; false for the
// rest (read as a disk image).
bool is_apkovl_file(const std::string& target) {
  if (is_apkovl_name(std::filesystem::path(target).filename().string())) return true;
  Fd fd = open_or_throw(target, O_RDONLY);
  std::string head(kGzipGuessBytes, '\0');
  head.resize(pread_full(fd.get(), head.data(), head.size(), 0, "cannot read " + target));
  const GzipGuess g = guess_gzip_content(head);
  switch (g.content) {
    case GzipContent::not_gzip:
      break;
    case GzipContent::tar:
      return true;
    case GzipContent::boot_tarball:
      throw Error(Errc::input, target + " is an Alpine boot tarball (it holds " + g.why +
                                   "), not an apkovl: inspect reads cards, disk images and apkovls. Make an image "
                                   "from it (`rpi-provision --tarball " +
                                   shell_word(target) + " --spec FILE --output pi.img`) and inspect that");
    case GzipContent::disk_image:
      throw Error(Errc::input, compressed_image_error(target, "gzip"));
    case GzipContent::damaged:
      throw Error(Errc::input, target + " is gzip-compressed, but its data is damaged from the start (gzip: " + g.why +
                                   "): neither an apkovl nor a disk image can be read from it; copy it again");
    case GzipContent::other:
      throw Error(Errc::input, target +
                                   " is gzip-compressed, but holds neither a tar archive (an apkovl) nor a disk "
                                   "image: inspect reads cards, disk images, apkovls (`lbu package`, `rpi-provision "
                                   "apkovl`) and folders of apkovls");
  }
  // xz, zstd or bzip2 (as --image and the writer tell them): a disk image
  // when its decompressed start is an MBR or a FAT boot sector; an apkovl is
  // never one of these (the initramfs reads only gzip).
  const std::string z = udev::compression_of(head);
  if (z.empty()) return false;
  std::string start;
  try {
    start = udev::decompressed_head(target, 512);
  } catch (const Error& err) {
    if (err.code() != Errc::input) throw;  // the decompressor unusable: its own error
    throw Error(Errc::input, target + " is " + z + "-compressed, but its data is damaged from the start (`" + z +
                                 " -t " + shell_word(target) +
                                 "` says where): neither an apkovl nor a disk image can be read from it; copy it "
                                 "again");
  }
  const auto* u = reinterpret_cast<const std::uint8_t*>(start.data());
  if (start.size() == 512 && partition::has_boot_signature(u))
    throw Error(Errc::input, compressed_image_error(target, z));
  throw Error(Errc::input, target + " is " + z +
                               "-compressed, but holds no disk image: inspect reads cards, disk images, apkovls "
                               "(gzip-compressed tar archives, as `lbu package` and `rpi-provision apkovl` write "
                               "them) and folders of apkovls");
}

void run_inspect(const std::string& target, AppContext& ctx) {
  // A bare apkovl, or a folder of them: no medium.
  struct stat st {};
  if (::stat(target.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    const std::vector<std::string> paths = folder_apkovls(target);
    if (paths.empty())
      throw Error(Errc::input, target +
                                   " is a folder without *.apkovl.tar.gz files: inspect reads a card, a disk image, "
                                   "an apkovl, or a folder of apkovls (as `rpi-provision apkovl --out-dir` writes)");
    inspect_apkovl_files(target, paths, true, ctx);
    return;
  }
  if (S_ISREG(st.st_mode) && is_apkovl_file(target)) {
    inspect_apkovl_files(target, {target}, false, ctx);
    return;
  }

  Fd fd = open_or_throw(target, O_RDONLY);
  const std::uint64_t medium_size = fd_size(fd.get(), target);  // not a file or device: only the error
  BootFat boot = [&] {
    try {
      return open_boot_fat(fd.get(), target);
    } catch (const Error& err) {
      // A medium that was read but holds neither a partition table nor a FAT
      // at byte 0 (zeroed, random, too small), or whose FAT at byte 0 does
      // not open: with --json, the result says so (null and empty), then the
      // error. One that could not be read (Errc::io) gets only the error.
      if (err.code() == Errc::input && ctx.reporter.json()) {
        JsonObject out;
        out.add("kind", "medium").add("path", target).add("size", medium_size).add_raw("partition_table", "null");
        add_no_fat(out, {});
        ctx.reporter.result("inspect", "", std::move(out));
      }
      throw;
    }
  }();
  const std::uint64_t size = boot.size;

  std::vector<std::string> warnings;
  for (const auto& n : boot.notes) warnings.push_back(n.message);
  std::string text;
  JsonObject out;
  out.add("kind", "medium").add("path", target).add("size", size);
  text += printable(target) + ": " + std::to_string(size) + " bytes (" + format_size(size) + ")\n";

  // Partition table, or a FAT without one ("superfloppy").
  if (boot.superfloppy()) {
    text += "Partition table: none (the FAT file system starts at byte 0)\n";
    out.add_raw("partition_table", "null");
  } else {
    const MbrInfo& mbr = *boot.mbr;
    text += "Partition table: MBR, disk id " + hex32(mbr.disk_id) +
            (mbr.gpt_protective ? " (GPT, not supported)" : "") + "\n";
    text += "  #  boot  type                          start      sectors  size\n";
    std::vector<std::string> parts;
    for (const auto& e : mbr.entries) {
      if (e.type == 0 && e.sectors == 0 && e.start_lba == 0) continue;
      char line[160];
      std::snprintf(line, sizeof line, "  %u  %-4s  %s %-23s %10u %12u  %s\n", e.number, e.bootable() ? "*" : "",
                    hex2(e.type).c_str(), mbr_type_name(e.type), e.start_lba, e.sectors,
                    format_size(e.bytes()).c_str());
      text += line;
      JsonObject p;
      p.add("number", e.number)
          .add("type", hex2(e.type))
          .add("type_name", mbr_type_name(e.type))
          .add_bool("bootable", e.bootable())
          .add("start", static_cast<std::uint64_t>(e.start_lba))
          .add("sectors", static_cast<std::uint64_t>(e.sectors));
      parts.push_back(p.str());
    }
    JsonObject pt;
    pt.add("type", mbr.gpt_protective ? "gpt" : "mbr")
        .add("disk_id", hex32(mbr.disk_id))
        .add_raw("partitions", json_array(parts));
    out.add_raw("partition_table", pt.str());
    if (!boot.volume) {  // a GPT, or no FAT partition that opens
      // What was read, and null where nothing could be: the same fields as a full result.
      add_no_fat(out, warnings);
      ctx.reporter.result("inspect", text, std::move(out));
      throw Error(boot.error->code(), boot.error->what());
    }
  }
  const FatVolume& vol = *boot.volume;
  const unsigned fat_partition = boot.partition;
  const std::uint64_t fat_offset = boot.offset;

  const FatInfo& fi = vol.info();
  text += "File system" +
          (fat_partition
               ? " (partition " + std::to_string(fat_partition) + ", byte offset " + std::to_string(fat_offset) + ")"
               : std::string()) +
          ": " + fat_kind_name(fi.kind) + "\n";
  text += "  label        " + (fi.label().empty() ? std::string("(none)") : printable(fi.label())) +
          (fi.boot_label != fi.root_label ? "  [boot sector: " + printable(fi.boot_label) + "]" : "") + "\n";
  text += "  volume id    " + (fi.has_volume_id ? fi.volume_id_string() : std::string("(none)")) + "\n";
  text += "  clusters     " + std::to_string(fi.clusters) + " of " + std::to_string(fi.cluster_bytes()) + " bytes (" +
          format_size(fi.volume_bytes()) + " volume)\n";
  text += "  free         " + std::to_string(fi.free_clusters) + " clusters (" + format_size(fi.free_bytes()) + ")" +
          (fi.kind == FatKind::fat32 ? (fi.fsinfo_free ? "; FSInfo says " + std::to_string(*fi.fsinfo_free)
                                                       : std::string("; FSInfo: unknown"))
                                     : std::string()) +
          "\n";
  JsonObject fj;
  fj.add("partition", fat_partition)
      .add("offset", fat_offset)
      .add("type", fat_kind_name(fi.kind))
      .add("label", fi.label())
      .add("boot_label", fi.boot_label)
      .add("volume_id", fi.volume_id_string())
      .add("bytes_per_sector", fi.bytes_per_sector)
      .add("sectors_per_cluster", fi.sectors_per_cluster)
      .add("cluster_size", fi.cluster_bytes())
      .add("reserved_sectors", fi.reserved_sectors)
      .add("fats", fi.num_fats)
      .add("fat_sectors", fi.fat_sectors)
      .add("hidden_sectors", fi.hidden_sectors)
      .add("total_sectors", fi.total_sectors)
      .add("clusters", fi.clusters)
      .add("free_clusters", fi.free_clusters)
      .add("free_bytes", fi.free_bytes());
  if (fi.fsinfo_free)
    fj.add("fsinfo_free_clusters", *fi.fsinfo_free);
  else
    fj.add_raw("fsinfo_free_clusters", "null");

  // Whole-tree totals; a broken subdirectory is reported, not fatal.
  std::uint64_t files = 0, dirs = 0, bytes = 0;
  try {
    vol.walk([&](const std::string&, const FatEntry& e) {
      if (e.is_directory())
        ++dirs;
      else {
        ++files;
        bytes += e.size;
      }
    });
  } catch (const Error& err) {
    warnings.push_back(std::string("the directory tree is damaged: ") + err.what());
  }
  text += "  contents     " + std::to_string(files) + " files, " + std::to_string(dirs) + " directories, " +
          format_size(bytes) + "\n";
  fj.add("files", files).add("directories", dirs).add("file_bytes", bytes);
  out.add_raw("fat", fj.str());

  text += "Top-level entries:\n";
  std::vector<std::string> top;
  for (const auto& e : vol.list("")) {
    char size_col[32];
    std::snprintf(size_col, sizeof size_col, "%12s", e.is_directory() ? "-" : std::to_string(e.size).c_str());
    text += "  " + pad(printable(e.name) + (e.is_directory() ? "/" : ""), 32) + " " + size_col + "\n";
    JsonObject f;
    f.add("name", e.name).add("short_name", e.short_name).add_bool("directory", e.is_directory()).add("size", e.size);
    top.push_back(f.str());
  }
  out.add_raw("files", json_array(top));

  auto small_text = [&](const char* path, const char* key) {
    auto e = vol.stat(path);
    if (!e || e->is_directory()) {
      text += std::string(path) + ": (absent)\n";
      out.add_raw(key, "null");
      return;
    }
    try {
      std::string line = first_line(vol.read_file(path, kSmallTextMax));
      text += std::string(path) + ": " + printable(line) + "\n";
      out.add(key, line);
    } catch (const Error& err) {
      warnings.push_back(err.what());
      out.add_raw(key, "null");
    }
  };
  small_text(".alpine-release", "alpine_release");
  small_text("cmdline.txt", "cmdline");

  // The apkovl(s): exactly one is expected at the top level.
  const std::vector<FatEntry> found = find_apkovls(vol);
  if (found.size() > 1)
    warnings.push_back(std::to_string(found.size()) +
                       " apkovl files at the FAT root: the initramfs uses only the first it finds, in directory order; "
                       "leave exactly one");
  if (found.empty()) text += "apkovl: none at the FAT root (the Pi boots an unconfigured Alpine)\n";
  std::vector<std::string> ovl_json;
  for (const auto& e : found) {
    const std::string& n = e.name;
    const bool gz = n.size() >= 7 && n.compare(n.size() - 7, 7, ".tar.gz") == 0;
    ApkovlPart part = describe_apkovl(
        n, n, e.size, [&] { return vol.read_file(n, kApkovlMaxBytes); },
        gz ? "" : "encrypted or not a .tar.gz; not read", warnings);
    text += part.text;
    ovl_json.push_back(std::move(part.json));
  }
  out.add_raw("apkovls", json_array(ovl_json));

  for (auto& w : vol.warnings()) warnings.push_back(w);
  if (!warnings.empty()) {
    text += "Warnings:\n";
    for (auto& w : warnings) text += "  " + printable(w) + "\n";
  }
  out.add_raw("warnings", json_strings(warnings));
  ctx.reporter.result("inspect", text, std::move(out));
}

rpi::cli::CommandRegistration reg(70, [](CLI::App& app, AppContext& ctx) {
  auto target = std::make_shared<std::string>();
  CLI::App* sub =
      app.add_subcommand("inspect", "Show what an image, card or apkovl holds: partitions, FAT, apkovl (read-only)");
  sub->add_option("target", *target,
                  "an image file, a block device, an apkovl (.apkovl.tar.gz), or a folder of apkovls")
      ->required();
  // The main command's --json, made the subcommand's own so that `inspect --help` lists it.
  sub->add_flag("--json", ctx.json, "one JSON object on stdout (\"type\": \"inspect\")")->group("Output");
  sub->callback([target, &ctx] {
    ctx.reporter.configure(ctx.json, ctx.quiet);
    run_inspect(*target, ctx);
  });
});

}  // namespace
}  // namespace rpi::cli
