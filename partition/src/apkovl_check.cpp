#include "partition/apkovl_check.hpp"

#include <filesystem>

#include "rpi/archive_reader.hpp"
#include "rpi/error.hpp"

namespace rpi::partition {

ApkovlCheck check_apkovl(const std::string& path, const std::string& data) {
  ApkovlCheck res;
  std::string base = std::filesystem::path(path).filename().string();
  std::size_t pos = base.find(".apkovl.tar.gz");
  if (pos == std::string::npos || pos == 0)
    throw Error(Errc::input, path +
                                 ": an apkovl must be named <host>.apkovl.tar.gz (the initramfs looks for "
                                 "*.apkovl.tar.gz* at the top of the card); rename it");
  res.card_name = base;
  std::string suffix = base.substr(pos + 14);
  if (!suffix.empty()) {
    res.warnings.push_back(base + " is encrypted: the Pi asks for its password on the console at every boot");
    return res;
  }
  ArchiveReader a(archive_read_new());
  archive_read_support_filter_gzip(a.get());
  archive_read_support_format_tar(a.get());
  if (archive_read_open_memory(a.get(), data.data(), data.size()) != ARCHIVE_OK)
    throw Error(Errc::input, path + " is not a gzip-compressed tar archive");
  for (;;) {
    archive_entry* e = nullptr;
    int rc = archive_read_next_header(a.get(), &e);
    if (rc == ARCHIVE_EOF) break;
    if (rc < ARCHIVE_WARN) {
      const char* m = archive_error_string(a.get());
      throw Error(Errc::input, path + (res.members ? " is damaged: " : " is not a gzip-compressed tar archive: ") +
                                   (m ? m : "unreadable"));
    }
    ++res.members;
    const char* raw = archive_entry_pathname(e);
    std::string name = raw ? raw : "";
    if (name.empty() || name.front() == '/')
      throw Error(Errc::input, path + ": member '" + name + "' has an absolute path; an apkovl holds etc/... paths");
    if (name == ".." || name.rfind("../", 0) == 0 || name.find("/../") != std::string::npos ||
        (name.size() >= 3 && name.compare(name.size() - 3, 3, "/..") == 0))
      throw Error(Errc::input, path + ": member '" + name + "' has a '..' component");
    if (name == "./" || name == ".")
      res.warnings.push_back(path + ": has a root ('./') member; unpacking it changes the mode of / on the Pi");
    else if (name.find('/') == std::string::npos)
      res.warnings.push_back(path + ": member '" + name + "' has no '/'; apk stops reading the overlay list there");
  }
  if (res.members == 0) throw Error(Errc::input, path + " is an empty archive");
  return res;
}

}  // namespace rpi::partition
