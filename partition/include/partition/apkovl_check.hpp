// Checks a bring-your-own apkovl (e.g. from `lbu package`) before it goes on a
// card: the name the initramfs looks for, gzip+tar as busybox `tar -zxf`
// unpacks it, and member names that Alpine's init and apk accept
// (alpine-facts §1.2, §1.6).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rpi::partition {

struct ApkovlCheck {
  std::string card_name;  // the name it gets at the FAT root
  std::size_t members = 0;
  std::uint64_t unpacked = 0;  // bytes of tar the gzip data holds (0 if encrypted)
  // The first line of etc/hostname (the last such member, as tar leaves it),
  // blanks trimmed, when it is a valid host name: RFC 1123 labels of letters,
  // digits and '-', at most 64 characters. "" when there is none, it is not
  // a regular file, it is invalid, or the apkovl is encrypted.
  std::string hostname;
  std::vector<std::string> warnings;  // harmless-but-odd findings
};

// Above this an apkovl still boots but costs that much RAM on every boot
// (the diskless root is a tmpfs): warned about. Above kApkovlMaxUnpacked
// (reader.hpp) it is refused.
inline constexpr std::uint64_t kApkovlWarnUnpacked = 64ull << 20;

// Throws rpi::Error(input) for names the initramfs would not find, files
// that are not gzip (busybox `tar -z` needs the gzip magic) or whose gzip data
// is damaged (CRC-32/length trailer, truncation), more than kApkovlMaxUnpacked
// unpacked bytes, and members with absolute paths or "..", or hard links
// to such targets. Warns about device nodes, FIFOs, root members and big
// overlays. Encrypted apkovls (".apkovl.tar.gz.<cipher>") are accepted unread.
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
