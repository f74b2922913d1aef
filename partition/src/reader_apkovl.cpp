// Summarises an apkovl (gzip + tar only, as Alpine's initramfs reads it) for
// `inspect`. It reads only the few members whose meaning it reports, caps
// every size, and never keeps or returns the content of secret-bearing files
// (etc/shadow, wpa_supplicant.conf, keys): only whether they are present.
#include <archive.h>
#include <archive_entry.h>

#include <memory>
#include <string_view>

#include "partition/apkovl_check.hpp"
#include "partition/reader.hpp"
#include "rpi/archive_reader.hpp"
#include "rpi/error.hpp"

namespace rpi::partition {

namespace {
// libarchive may have no message (NULL); never append a NULL to a string.
std::string archive_message(archive* a) {
  const char* m = archive_error_string(a);
  return m ? m : "unreadable data";
}
}  // namespace

namespace {

constexpr std::uint64_t kSmallFileMax = 1 << 20;  // hostname, world, passwd

// Printable ASCII only: anything else (escape sequences, bytes >= 0x80) shown as '?'.
std::string printable(std::string_view s) {
  std::string out;
  for (char c : s) out += (c >= 0x20 && c < 0x7F) ? c : '?';
  return out;
}

// Member names as busybox tar extracts them: leading "./" and "/" removed.
std::string normalise(std::string path, bool& suspicious) {
  suspicious = !path.empty() && path[0] == '/';
  for (;;) {
    if (path.rfind("./", 0) == 0)
      path.erase(0, 2);
    else if (!path.empty() && path[0] == '/')
      path.erase(0, 1);
    else
      break;
  }
  if (path == "..") suspicious = true;
  if (path.rfind("../", 0) == 0 || path.find("/../") != std::string::npos ||
      (path.size() >= 3 && path.compare(path.size() - 3, 3, "/..") == 0))
    suspicious = true;
  while (!path.empty() && path.back() == '/') path.pop_back();
  return path;
}

std::vector<std::string> split_any(std::string_view s, std::string_view seps) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t j = s.find_first_of(seps, i);
    if (j == std::string_view::npos) j = s.size();
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

}  // namespace

ApkovlSummary summarize_apkovl(const std::string& data, const std::string& name) {
  if (data.size() > kApkovlMaxBytes)
    throw Error(Errc::input, name + ": " + std::to_string(data.size()) + " bytes, larger than the " +
                                 std::to_string(kApkovlMaxBytes) + " bytes accepted for an apkovl");
  // The gzip layer as busybox `tar -zxf` judges it, as `--apkovl` does: gzip
  // magic, every member's CRC-32/length trailer (libarchive below stops at
  // the tar end without reading it), and the decompressed size.
  (void)check_apkovl_gzip(name, data, kApkovlMaxUnpacked);

  ArchiveReader a(archive_read_new());
  if (!a) throw Error(Errc::internal, "archive_read_new failed");
  archive_read_support_filter_gzip(a.get());
  archive_read_support_format_tar(a.get());
  if (archive_read_open_memory(a.get(), data.data(), data.size()) != ARCHIVE_OK)
    throw Error(Errc::input, name + ": not a readable tar.gz: " + archive_message(a.get()));

  ApkovlSummary sum;
  std::uint64_t declared = 0;
  // Reads the current member's data, or nullopt (with a warning) if it is too big.
  auto read_small = [&](archive_entry* e, const std::string& path) -> std::optional<std::string> {
    if (archive_entry_size(e) > static_cast<la_int64_t>(kSmallFileMax)) {
      sum.warnings.push_back(path + " is larger than " + std::to_string(kSmallFileMax) + " bytes; not read");
      return std::nullopt;
    }
    std::string out;
    char buf[8192];
    for (;;) {
      la_ssize_t n = archive_read_data(a.get(), buf, sizeof buf);
      if (n < 0) throw Error(Errc::input, name + ": member " + path + ": " + archive_message(a.get()));
      if (n == 0) break;
      out.append(buf, static_cast<std::size_t>(n));
      if (out.size() > kSmallFileMax) throw Error(Errc::input, name + ": member " + path + " is longer than declared");
    }
    return out;
  };

  for (;;) {
    archive_entry* e = nullptr;
    int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r == ARCHIVE_FATAL || r == ARCHIVE_RETRY)
      throw Error(Errc::input, name + ": broken tar.gz after " + std::to_string(sum.members) +
                                   " members: " + archive_message(a.get()));
    if (++sum.members > kApkovlMaxMembers)
      throw Error(Errc::input, name + ": more than " + std::to_string(kApkovlMaxMembers) + " members");
    const la_int64_t size = archive_entry_size(e);
    if (size > 0) declared += static_cast<std::uint64_t>(size);
    if (declared > kApkovlMaxUnpacked)
      throw Error(Errc::input, name + ": members add up to more than " + std::to_string(kApkovlMaxUnpacked) + " bytes");

    const char* raw = archive_entry_pathname_utf8(e);
    if (!raw) raw = archive_entry_pathname(e);
    if (!raw) continue;
    bool suspicious = false;
    const std::string path = normalise(raw, suspicious);
    if (suspicious) sum.warnings.push_back("member with an absolute or '..' path: " + printable(raw));
    const bool hardlink = archive_entry_hardlink(e) != nullptr;
    const auto type = archive_entry_filetype(e);
    const bool regular = !hardlink && type == AE_IFREG;

    if (path.rfind("etc/ssh/ssh_host_", 0) == 0) sum.ssh_host_keys = true;
    if (path == "etc/wpa_supplicant/wpa_supplicant.conf") sum.wifi_config = true;
    if (path == "etc/shadow") sum.shadow = true;

    if (path.rfind("etc/runlevels/", 0) == 0 && type != AE_IFDIR) {
      auto parts = split_any(std::string_view(path).substr(14), "/");
      if (parts.size() == 2) sum.runlevels[printable(parts[0])].push_back(printable(parts[1]));
    } else if (path == "etc/hostname" && regular) {
      if (auto text = read_small(e, path)) {
        auto lines = split_any(*text, "\r\n");
        sum.hostname = lines.empty() ? "" : printable(lines[0]);
      }
    } else if (path == "etc/apk/world" && regular) {
      if (auto text = read_small(e, path)) {
        sum.world.clear();
        for (auto& p : split_any(*text, " \t\r\n")) sum.world.push_back(printable(p));
      }
    } else if (path == "etc/passwd" && regular) {
      if (auto text = read_small(e, path)) {
        sum.users.clear();
        // name:password:uid:gid:gecos:home:shell — only name, uid and shell are
        // kept; the password field may hold a hash and is never looked at.
        for (auto& line : split_any(*text, "\n")) {
          std::vector<std::string> f;
          std::size_t i = 0;
          for (;;) {
            std::size_t j = line.find(':', i);
            f.push_back(line.substr(i, j == std::string::npos ? std::string::npos : j - i));
            if (j == std::string::npos) break;
            i = j + 1;
          }
          if (f.size() < 7 || f[0].empty() || f[2].empty() || f[2].size() > 10 ||
              f[2].find_first_not_of("0123456789") != std::string::npos) {
            if (!line.empty() && line[0] != '#') sum.warnings.push_back("etc/passwd has a malformed line");
            continue;
          }
          std::uint64_t uid = std::stoull(f[2]);
          if (uid > 0xFFFFFFFFull) continue;
          while (!f[6].empty() && f[6].back() == '\r') f[6].pop_back();
          sum.users.push_back({printable(f[0]), static_cast<std::uint32_t>(uid), printable(f[6])});
        }
      }
    }
    // Any unread data is skipped by the next archive_read_next_header.
  }
  return sum;
}

}  // namespace rpi::partition
