#include "partition/tarball_rules.hpp"

#include <archive_entry.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include "partition/fat_names.hpp"
#include "rpi/error.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"

namespace rpi::partition {

EntryPath parse_entry_path(const char* raw, const std::string& tarball) {
  EntryPath p;
  if (!raw) throw Error(Errc::input, tarball + ": an entry has a name that is not valid UTF-8");
  for (const char* c = raw; *c; ++c) {
    unsigned char u = static_cast<unsigned char>(*c);
    if (u < 0x20 || u == 0x7F) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\x%02x", u);
      p.display += esc;
    } else {
      p.display.push_back(*c);
    }
  }
  if (p.display.empty()) throw Error(Errc::input, tarball + ": an entry has an empty name");
  if (p.display.front() == '/')
    throw Error(Errc::input, tarball + ": entry '" + p.display + "' has an absolute path; refusing it");
  const std::string name = raw;
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t slash = name.find('/', start);
    std::string comp = name.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (comp == "..")
      throw Error(Errc::input, tarball + ": entry '" + p.display + "' has a '..' component; refusing it");
    if (!comp.empty() && comp != ".") p.parts.push_back(comp);
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (p.parts.size() > kMaxEntryDepth)
    throw Error(Errc::input,
                tarball + ": entry '" + p.display + "' is nested deeper than " + std::to_string(kMaxEntryDepth));
  return p;
}

void check_entry(unsigned filetype, bool hard_link, std::int64_t declared, const std::string& tarball,
                 const std::string& display) {
  if (filetype == AE_IFDIR) return;
  if (filetype == AE_IFLNK)
    throw Error(Errc::input, tarball + ": entry '" + display + "' is a symbolic link; FAT cannot store links");
  if (!hard_link && filetype != AE_IFREG) {
    const char* what = filetype == AE_IFCHR || filetype == AE_IFBLK ? "a device node"
                       : filetype == AE_IFIFO                       ? "a FIFO"
                       : filetype == AE_IFSOCK                      ? "a socket"
                                                                    : "of an unknown type";
    throw Error(Errc::input,
                tarball + ": entry '" + display + "' is " + what + "; FAT can store only files and directories");
  }
  if (declared > 0xFFFFFFFFll)
    throw Error(Errc::input, tarball + ": entry '" + display + "' has " +
                                 format_size(static_cast<std::uint64_t>(declared)) +
                                 ", more than FAT's file size limit of 4 GiB - 1");
}

bool is_old_apkovl(std::string_view root_name) {
  return ascii_lower(root_name).find(".apkovl.tar.gz") != std::string::npos;
}

std::string left_out_apkovl_note(const std::string& name) {
  return "left out the tarball's " + name + " (the card gets exactly one apkovl)";
}

std::string alpine_release_of(std::string_view text) {
  const std::size_t start = text.find_first_not_of(" \t");
  if (start == std::string_view::npos) return {};
  std::string_view word = text.substr(start, text.find_first_of(" \t\r\n", start) - start);
  if (const std::size_t dash = word.rfind('-'); dash != std::string_view::npos) word.remove_prefix(dash + 1);
  if (word.empty() || word.size() > 32 || word.front() < '0' || word.front() > '9' ||
      word.find('.') == std::string_view::npos)
    return {};
  for (char c : word)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '.' || c == '_')) return {};
  return std::string(word);
}

std::string folder_for_file_message(const std::string& tarball, const EntryPath& path, const std::string& file) {
  return tarball + ": it has a folder '" + printable(path.parts.front()) + "' (entry '" + path.display +
         "') where the card needs its own file " + file + "; take the folder out of the tarball";
}

bool same_fat_name(std::string_view a, std::string_view b) {
  if (ascii_lower(a) == ascii_lower(b)) return true;
  const auto ascii = [](std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  };
  if (ascii(a) && ascii(b)) return false;
  try {
    return fatname::fold_case(fatname::to_utf16(a)) == fatname::fold_case(fatname::to_utf16(b));
  } catch (const std::invalid_argument&) {
    return false;
  }
}

Edits::const_iterator find_edit(const Edits& edits, std::string_view name) {
  for (auto it = edits.begin(); it != edits.end(); ++it)
    if (same_fat_name(it->first, name)) return it;
  return edits.end();
}

void check_edit_size(const std::string& tarball, const std::string& display, std::uint64_t bytes) {
  if (bytes > kMaxEditedBytes)
    throw Error(Errc::input,
                tarball + ": entry '" + display + "' is too large to edit (over " + format_size(kMaxEditedBytes) + ")");
}

std::vector<std::string> missing_boot_files(const RootLookup& root) {
  std::vector<std::string> missing;
  for (const char* file : {"cmdline.txt", "config.txt"})
    if (const std::optional<bool> dir = root(file); !dir || *dir) missing.push_back(file);
  if (const std::optional<bool> dir = root("boot"); !dir || !*dir) missing.push_back("boot/");
  return missing;
}

void require_boot_files(const std::string& tarball, const std::vector<std::string>& missing) {
  if (missing.empty()) return;
  throw Error(Errc::input, tarball + " does not look like an Alpine Raspberry Pi tarball (no " + join(missing) +
                               "); use --force to write it anyway");
}

bool edit_finds_no_file(const RootLookup& root, const std::string& name) {
  const std::optional<bool> dir = root(name);
  return !dir || *dir;
}

std::string edit_not_applied_warning(const std::string& name) {
  return "the tarball has no " + name + ": the changes the spec makes to it are not applied";
}

}  // namespace rpi::partition
