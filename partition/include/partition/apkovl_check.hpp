// Checks a bring-your-own apkovl (e.g. from `lbu package`) before it goes on a
// card: the name the initramfs looks for, gzip+tar as busybox `tar -zxf`
// unpacks it, and member names that Alpine's init and apk accept
// (alpine-facts §1.2, §1.6).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "partition/reader.hpp"

namespace rpi::partition {

struct ApkovlCheck {
  std::string card_name;  // the name it gets at the FAT root
  std::size_t members = 0;
  std::uint64_t unpacked = 0;  // bytes of tar the gzip data holds (0 if encrypted)
  // The name the Pi sets from etc/hostname (the last such member, as tar
  // leaves it; see hostname_from_file), when it is a valid host name (see
  // valid_hostname). "" when there is none, it is not a regular file, it is
  // invalid, or the apkovl is encrypted.
  std::string hostname;
  std::vector<std::string> warnings;  // harmless-but-odd findings (among them: an
                                      // etc/hostname that gives no valid host name,
                                      // see hostname_finding)
  // That finding about etc/hostname (absent, not a regular file, too big, or
  // no valid host name in it), as it stands in `warnings` (unless past
  // kApkovlMaxFindings); "" when the Pi gets a valid host name from it or
  // the apkovl is encrypted.
  std::string hostname_warning;
};

// Whether a file at the FAT root named `file_name` is an apkovl to Alpine's
// initramfs: nlplug-findfs takes the top-level files that fnmatch(3), without
// flags, matches to `*.apkovl.tar.gz*` (case-sensitive; '*' matches a leading
// '.' too), alpine-facts §1.2.
bool is_apkovl_name(std::string_view file_name) noexcept;
// Whether the initramfs takes apkovl `file_name` (is_apkovl_name) for an
// encrypted one: the text after its last '.' is not "gz" but, it assumes, an
// OpenSSL cipher ("host.apkovl.tar.gz.aes-256-cbc"), alpine-facts §1.6.
bool is_encrypted_apkovl_name(std::string_view file_name) noexcept;

// Above this an apkovl still boots but costs that much RAM on every boot
// (the diskless root is a tmpfs): warned about. Above kApkovlMaxUnpacked
// (reader.hpp) it is refused.
inline constexpr std::uint64_t kApkovlWarnUnpacked = 64ull << 20;

// Throws rpi::Error(input) for names the initramfs would not find, files
// that are not gzip (busybox `tar -z` needs the gzip magic) or whose gzip data
// is damaged (CRC-32/length trailer, truncation), more than kApkovlMaxUnpacked
// unpacked bytes, and members with absolute paths or "..", or hard links
// to such targets. Warns about device nodes, FIFOs, root members, big
// overlays and an etc/hostname that gives no valid host name (absent, empty,
// only comments, CR LF line ends, not a regular file: see hostname_finding).
// Encrypted apkovls (is_encrypted_apkovl_name) are accepted unread.
ApkovlCheck check_apkovl(const std::string& path, const std::string& data);

// The same checks with nothing thrown for what the data holds, for `inspect`,
// which reports an apkovl already on a card instead of refusing it:
// `refusals` lists what check_apkovl refuses (its first is the message
// check_apkovl throws). After a refusal of the name the data is still read;
// after one of the gzip or tar layer nothing more can be. Each list stops at
// kApkovlMaxFindings entries and then says how many more there are. Throws
// only rpi::Error(internal) (zlib or libarchive unusable).
struct ApkovlReview {
  ApkovlCheck check;                  // what could be read (and its warnings)
  std::vector<std::string> refusals;  // empty: check_apkovl accepts it
  std::uint64_t problems = 0;         // how many refusals there were, beyond the cap too
  std::uint64_t warnings = 0;         // the same for check.warnings
};
inline constexpr std::size_t kApkovlMaxFindings = 20;
ApkovlReview review_apkovl(const std::string& path, const std::string& data);

// Everything `inspect` shows about an apkovl, from one pass over its data
// (one decompression, one walk of the tar): the review above and the
// summary (reader.hpp). The summary is judged as summarize_apkovl judges it:
// when that would throw, `summary` is empty and `problem` is its message.
// Throws only rpi::Error(internal) (zlib or libarchive unusable).
struct ApkovlInspection {
  ApkovlReview review;
  std::optional<ApkovlSummary> summary;
  std::string problem;  // why there is no summary; "" when there is one
};
ApkovlInspection inspect_apkovl(const std::string& path, const std::string& data);

// The host name Alpine's `hostname` service sets from the text of
// etc/hostname: it runs busybox `hostname -F`, which skips blank lines and
// lines whose first non-blank character is '#', takes the first word of each
// other line (up to a space, tab or '#'; a CR stays part of it) and sets each
// in turn, so the last one wins; a word longer than 64 bytes fails and ends
// it there. Lines ending in '\' continue on the next. "" when nothing is set.
std::string hostname_from_file(std::string_view text);

// A host name as sethostname(2) and DNS take it: at most 64 characters,
// labels of 1..63 letters, digits and '-' (RFC 1123), not starting or ending
// in '-'.
bool valid_hostname(std::string_view name) noexcept;

// The review's warning about the text of an apkovl's etc/hostname (a regular
// file) that gives no valid host name as hostname_from_file reads it, prefixed
// with `path`: why (empty, only blank and comment lines, a name longer than 64
// bytes, Windows CR LF line ends, an invalid name), what the Pi is called then
// (the name busybox `hostname -F` sets; 'localhost' for an empty file, as
// Alpine's hostname service skips `-F` for one; the kernel's default when it
// sets none) and how to fix it. "" when the text gives a valid host name.
std::string hostname_finding(const std::string& path, std::string_view text);

// What a gzip-compressed file holds, judged from its first bytes (pass at
// least kGzipGuessBytes of the file when it is that long): for `inspect FILE`,
// which reads disk images and apkovls and says what other files are.
enum class GzipContent {
  not_gzip,      // no gzip magic: not this function's business
  tar,           // a tar archive with none of the members below: an apkovl
  boot_tarball,  // a tar with an Alpine boot tarball's members (boot/, apks/, cmdline.txt, ...)
  disk_image,    // a compressed disk image (an MBR or a FAT boot sector first)
  other,         // gzip, but neither a tar nor a disk image
  damaged,       // gzip data that does not decompress from the start
};
struct GzipGuess {
  GzipContent content = GzipContent::not_gzip;
  std::string why;  // boot_tarball: the member that tells ("./cmdline.txt"); damaged: zlib's message
};
inline constexpr std::size_t kGzipGuessBytes = 1u << 20;
// Throws only rpi::Error(internal) (zlib unusable).
GzipGuess guess_gzip_content(const std::string& head);

// The gzip layer alone, judged as busybox's gunzip judges it: the data must
// start with a gzip header; every member's CRC-32 and length are checked;
// another member follows when the next two bytes are the gzip magic, and
// anything else after a member is ignored (counted in `trailing`).
struct ApkovlGzip {
  std::uint64_t unpacked = 0;  // decompressed bytes, all members
  std::uint64_t trailing = 0;  // bytes after the last member
};
// Throws rpi::Error(input) naming `name` if the data is not gzip, damaged,
// truncated, or unpacks to more than `max_unpacked` bytes (it stops there).
ApkovlGzip check_apkovl_gzip(const std::string& name, const std::string& data, std::uint64_t max_unpacked);

}  // namespace rpi::partition
