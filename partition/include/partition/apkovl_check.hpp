// Checks a bring-your-own apkovl (e.g. from `lbu package`) before it goes on a
// card: the name the initramfs looks for, gzip+tar, and member names that
// Alpine's init and apk accept (alpine-facts §1.2, §1.6).
#pragma once

#include <string>
#include <vector>

namespace rpi::partition {

struct ApkovlCheck {
  std::string card_name;  // the name it gets at the FAT root
  std::size_t members = 0;
  std::vector<std::string> warnings;  // harmless-but-odd findings
};

// Throws rpi::Error(input) for names the initramfs would not find, archives
// that are not tar.gz, and members with absolute paths or "..".
// Encrypted apkovls (".apkovl.tar.gz.<cipher>") are accepted unread.
ApkovlCheck check_apkovl(const std::string& path, const std::string& data);

}  // namespace rpi::partition
