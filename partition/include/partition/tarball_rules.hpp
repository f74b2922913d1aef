// The rules a boot tarball's entries meet on their way to the card, in one
// place. build_images applies them while it writes the images; scan_tarball
// (what --dry-run reads) makes the same pass over the tarball, writing
// nothing, so that the plan fails where the build fails, with its message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "partition/image.hpp"

namespace rpi::partition {

// The most bytes of a root file that ImageOptions::edits rewrites.
inline constexpr std::uint64_t kMaxEditedBytes = 1ull << 20;
// The deepest a member may be nested.
inline constexpr std::size_t kMaxEntryDepth = 32;

// A member's name, normalised: "./" prefixes, "//" and "." components dropped.
struct EntryPath {
  std::vector<std::string> parts;  // components below the FAT root; none for the "./" entry
  std::string display;             // as stored in the tarball, control characters shown as \xNN
};
// Throws rpi::Error(input), naming `tarball` and the entry, for a name that is
// missing (not UTF-8), empty, absolute, has a ".." component or is nested
// deeper than kMaxEntryDepth.
EntryPath parse_entry_path(const char* raw, const std::string& tarball);

// Throws rpi::Error(input) for a member FAT cannot store: a symbolic link, a
// device node, FIFO or socket (`filetype` as archive_entry_filetype gives it,
// S_IFREG, S_IFDIR, ...; a hard link is stored as a copy), or a file larger
// than FAT's limit of 4 GiB - 1 (`declared` bytes).
void check_entry(unsigned filetype, bool hard_link, std::int64_t declared, const std::string& tarball,
                 const std::string& display);

// Whether a file at the FAT root is an apkovl of the tarball's own (its name
// holds ".apkovl.tar.gz", in any case): it is left out, since a card gets
// exactly one apkovl.
bool is_old_apkovl(std::string_view root_name);
// The note that says so, for `name` (the member as normalised).
std::string left_out_apkovl_note(const std::string& name);

// The message of the rpi::Error(input) for entry `path` of `tarball` that is
// a root folder named like a file the card places at the root itself
// (ImageOptions::extra_files by their lower-case names: usercfg.txt of
// [boot].config, its apkovl), or is inside one: the card cannot have both.
std::string folder_for_file_message(const std::string& tarball, const EntryPath& path, const std::string& file);

// The Alpine release a boot tarball's .alpine-release names ("3.22.2" for
// "alpine-rpi-3.22.2 251010\n", alpine-facts §2; a bare "3.22.2" too): its
// first word, after the image name's last '-'; "" when that is no release
// number (a digit first, then digits, '.', '_' and lower-case letters, such as
// "3.23.0_rc1"). The walk reads the first kMaxReleaseFileBytes of the file.
inline constexpr std::size_t kMaxReleaseFileBytes = 256;
std::string alpine_release_of(std::string_view text);
// The release the root .alpine-release of `tarball` (a .tar.gz file) names, by
// alpine_release_of; "" when it has none. Reads the tarball only up to that
// entry. Throws rpi::Error(input) as build_images does for a file that is not
// a gzip-compressed tar, or is damaged before that entry.
std::string tarball_release(const std::filesystem::path& tarball);
// The same, reading the whole file once: every byte of it, in order, goes to
// `every_block` as it is read (the rest of the file after that entry too), so
// a caller can hash the file in the same pass. After a throw, `every_block`
// has seen only a part of the file.
std::string tarball_release(const std::filesystem::path& tarball,
                            const std::function<void(const void*, std::size_t)>& every_block);

// Whether two names are one name on FAT, which matches names regardless of
// case (case folded as FatWriter folds it: ASCII always, other letters under
// the UTF-8 locale build_images and scan_tarball run with). Names that are not
// UTF-8 match only by their ASCII letters.
bool same_fat_name(std::string_view a, std::string_view b);
// The edit of `edits` that applies to root file `name` (by same_fat_name), or end().
using Edits = std::map<std::string, std::function<std::string(const std::string&)>>;
Edits::const_iterator find_edit(const Edits& edits, std::string_view name);
// Throws rpi::Error(input) when root file `display` of `tarball`, which an
// edit rewrites, has more than kMaxEditedBytes (`bytes`: declared, or read so far).
void check_edit_size(const std::string& tarball, const std::string& display, std::uint64_t bytes);

// What the root of a FAT holds under `name` (in any case): nullopt when
// nothing, else whether it is a folder.
using RootLookup = std::function<std::optional<bool>(const std::string& name)>;
// What a tree lacks of an Alpine Raspberry Pi boot tarball: "cmdline.txt" and
// "config.txt" (files), "boot/" (a folder), in that order.
std::vector<std::string> missing_boot_files(const RootLookup& root);
// Throws rpi::Error(input) "TARBALL does not look like an Alpine Raspberry Pi
// tarball (no ...); use --force to write it anyway" when `missing` is not empty.
void require_boot_files(const std::string& tarball, const std::vector<std::string>& missing);
// Whether the changes an edit makes to root file `name` cannot be made (no
// such file), and the warning that says so.
bool edit_finds_no_file(const RootLookup& root, const std::string& name);
std::string edit_not_applied_warning(const std::string& name);

// What a build of `options` reads from `tarball`, without writing anything:
// one pass as build_images makes it (the same gzip checks, entry rules and FAT
// names, in the same order; a root file named like one of options.extra_files,
// in any case, left out as the build leaves it out), so it throws what the
// build would throw about the tarball's entries, and warns where it warns.
// Give it the card's own options (every edit and extra file): what the
// tarball may hold depends on them (usercfg.txt and USERCFG.TXT are refused
// unless the card brings its own usercfg.txt; a folder named like one of the
// extra files is refused, see folder_for_file_message). Only their names,
// `force` and the edits' names count. Not checked: the extra files and
// extra_dirs themselves, which the build adds after the tarball (a tarball
// folder named like an extra_dir is refused by the build only); the keymaps, which the caller checks
// (the build does so before the boot files); whether the files fit the image
// (its size is not known here) and the label and size (plan_image checks those).
struct TarballScan {
  // The tarball's bytes of each root file options.edits changes, under the
  // edit's name; a name the tarball has no file for is missing.
  std::map<std::string, std::string> root_files;
  std::vector<std::string> apkovls;   // its root apkovls, left out (ImageResult::dropped)
  std::vector<std::string> warnings;  // the build's warnings: edits that cannot be made
  BootKeymaps keymaps;                // its kbd-bkeymaps' keymaps (ImageResult::keymaps)
};
TarballScan scan_tarball(const std::filesystem::path& tarball, const ImageOptions& options);

}  // namespace rpi::partition
