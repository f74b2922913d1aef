#include "partition/apk_keymaps.hpp"

#include <algorithm>
#include <set>

#include "partition/compress.hpp"
#include "rpi/archive_reader.hpp"
#include "rpi/error.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"

namespace rpi::partition {

namespace {
// What an apk may unpack to: kbd-bkeymaps' data tar has about 1 MiB.
constexpr std::int64_t kMaxUnpacked = 64ll << 20;
constexpr std::string_view kPrefix = "usr/share/bkeymaps/";
constexpr std::string_view kSuffix = ".bmap.gz";
}  // namespace

bool is_keymap_apk(const std::vector<std::string>& parts) {
  constexpr std::string_view kName = "kbd-bkeymaps-";
  if (parts.size() != 3 || parts[0] != "apks") return false;
  const std::string_view f = parts[2];
  if (f.size() <= kName.size() + 4 || f.substr(0, kName.size()) != kName || f.substr(f.size() - 4) != ".apk")
    return false;
  // What follows the name is VER-rN: one '-' (a package kbd-bkeymaps-foo-1.0-r0 is another one).
  const std::string_view version = f.substr(kName.size(), f.size() - kName.size() - 4);
  const auto dash = version.find('-');
  return dash != std::string_view::npos && dash > 0 && dash == version.rfind('-') && dash + 1 < version.size();
}

std::vector<std::string> apk_keymaps(std::string_view apk, const std::string& name) {
  const auto unreadable = [&](const std::string& why) {
    return Error(Errc::input, name + " is not a readable Alpine package (" + why + ")");
  };
  if (compression_of(apk) != Compression::gzip) throw unreadable("not gzip data");
  ArchiveReader a(archive_read_new());
  if (!a) throw Error(Errc::internal, "libarchive: out of memory");
  // libarchive's gzip filter reads the three gzip streams one after the other;
  // abuild cuts the end blocks of the first two tars, so that they read as
  // one tar (and, should a tool not cut them, the option reads on past them).
  archive_read_support_filter_gzip(a.get());
  archive_read_support_format_tar(a.get());
  archive_read_set_format_option(a.get(), "tar", "read_concatenated_archives", "1");
  const auto why = [&] {
    const char* m = archive_error_string(a.get());
    return std::string(m ? m : "unreadable");
  };
  if (archive_read_open_memory(a.get(), apk.data(), apk.size()) != ARCHIVE_OK) throw unreadable(why());
  std::set<std::string> maps;
  for (;;) {
    archive_entry* e = nullptr;
    const int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) throw unreadable(why());
    // Skipping an entry unpacks it: a few bytes must not make gigabytes.
    const std::int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
    if (archive_filter_bytes(a.get(), 0) + std::max<std::int64_t>(size, 0) > kMaxUnpacked)
      throw unreadable("it unpacks to more than " + format_size(static_cast<std::uint64_t>(kMaxUnpacked)));
    if (archive_entry_filetype(e) != AE_IFREG) continue;
    const char* raw = archive_entry_pathname(e);
    std::string_view path = raw ? raw : "";
    while (path.substr(0, 2) == "./") path.remove_prefix(2);
    if (path.substr(0, kPrefix.size()) != kPrefix) continue;
    path.remove_prefix(kPrefix.size());
    const auto slash = path.find('/');
    if (slash == std::string_view::npos || slash == 0) continue;
    const std::string_view layout = path.substr(0, slash), file = path.substr(slash + 1);
    if (file.size() <= kSuffix.size() || file.find('/') != std::string_view::npos ||
        file.substr(file.size() - kSuffix.size()) != kSuffix)
      continue;
    maps.insert(std::string(layout) + " " + std::string(file.substr(0, file.size() - kSuffix.size())));
  }
  if (maps.empty())
    throw Error(Errc::input, name + " holds no keymap (usr/share/bkeymaps/LAYOUT/VARIANT" + std::string(kSuffix) + ")");
  return {maps.begin(), maps.end()};
}

bool BootKeymaps::has(std::string_view keymap) const {
  return std::binary_search(keymaps.begin(), keymaps.end(), keymap);
}

std::string closest_keymap(std::string_view wanted, const std::vector<std::string>& keymaps) {
  const std::string_view layout = wanted.substr(0, wanted.find(' '));
  std::string best;
  std::size_t best_d = 0;
  bool best_same_layout = false;
  for (const auto& k : keymaps) {
    const std::size_t d = edit_distance(wanted, k);
    if (d == 0 || d > 3 || d * 3 > wanted.size()) continue;
    const bool same_layout = k.substr(0, k.find(' ')) == layout;
    if (best.empty() || d < best_d || (d == best_d && same_layout && !best_same_layout)) {
      best = k;
      best_d = d;
      best_same_layout = same_layout;
    }
  }
  return best;
}

}  // namespace rpi::partition
