// Summarises an apkovl (gzip + tar only, as Alpine's initramfs reads it) for
// `inspect`. It reads only the few members whose meaning it reports, caps
// every size, and never keeps or returns the content of secret-bearing files
// (etc/shadow, wpa_supplicant.conf, keys): only whether they are present.
// The pass over the data is apkovl_check.cpp's (one for the review and the
// summary); this file decides what the summary keeps of each member.
#include <string_view>

#include "apkovl_summary.hpp"
#include "partition/apkovl_check.hpp"
#include "partition/reader.hpp"
#include "rpi/error.hpp"

namespace rpi::partition {

namespace {

// libarchive may have no message (NULL); never append a NULL to a string.
std::string archive_message(archive* a) {
  const char* m = archive_error_string(a);
  return m ? m : "unreadable data";
}

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

namespace detail {

SummaryCollector::SummaryCollector(std::string name, std::uint64_t compressed) : name_(std::move(name)) {
  if (compressed > kApkovlMaxBytes)
    fail(name_ + ": " + std::to_string(compressed) + " bytes, larger than the " + std::to_string(kApkovlMaxBytes) +
         " bytes accepted for an apkovl");
}

void SummaryCollector::not_a_tar(archive* a) {
  fail(name_ + ": not a readable tar.gz: " + archive_message(a));
}

bool SummaryCollector::header(int rc, archive* a) {
  if (rc == ARCHIVE_FATAL || rc == ARCHIVE_RETRY)
    fail(name_ + ": broken tar.gz after " + std::to_string(sum_.members) + " members: " + archive_message(a));
  return on();
}

bool SummaryCollector::member(archive_entry* e) {
  want_ = Want::none;
  if (++sum_.members > kApkovlMaxMembers) {
    fail(name_ + ": more than " + std::to_string(kApkovlMaxMembers) + " members");
    return false;
  }
  const la_int64_t size = archive_entry_size(e);
  if (size > 0) declared_ += static_cast<std::uint64_t>(size);
  if (declared_ > kApkovlMaxUnpacked) {
    fail(name_ + ": members add up to more than " + std::to_string(kApkovlMaxUnpacked) + " bytes");
    return false;
  }

  const char* raw = archive_entry_pathname_utf8(e);
  if (!raw) raw = archive_entry_pathname(e);
  if (!raw) return false;
  bool suspicious = false;
  path_ = normalise(raw, suspicious);
  if (suspicious) sum_.warnings.push_back("member with an absolute or '..' path: " + printable(raw));
  const bool hardlink = archive_entry_hardlink(e) != nullptr;
  const auto type = archive_entry_filetype(e);
  const bool regular = !hardlink && type == AE_IFREG;

  if (path_.rfind("etc/ssh/ssh_host_", 0) == 0) sum_.ssh_host_keys = true;
  if (path_ == "etc/wpa_supplicant/wpa_supplicant.conf") sum_.wifi_config = true;
  if (path_ == "etc/shadow") sum_.shadow = true;

  if (path_.rfind("etc/runlevels/", 0) == 0 && type != AE_IFDIR) {
    auto parts = split_any(std::string_view(path_).substr(14), "/");
    if (parts.size() == 2) sum_.runlevels[printable(parts[0])].push_back(printable(parts[1]));
    return false;
  }
  if (!regular) return false;
  if (path_ == "etc/hostname")
    want_ = Want::hostname;
  else if (path_ == "etc/apk/world")
    want_ = Want::world;
  else if (path_ == "etc/passwd")
    want_ = Want::passwd;
  else if (path_ == "etc/wpa_supplicant/wpa_supplicant.conf")
    want_ = Want::wifi;
  else
    return false;
  if (size > static_cast<la_int64_t>(kSmallFileMax)) {
    sum_.warnings.push_back(path_ + " is larger than " + std::to_string(kSmallFileMax) + " bytes; not read");
    want_ = Want::none;
  }
  return want_ != Want::none;
}

void SummaryCollector::data_failed(const std::string& why) {
  fail(name_ + ": member " + path_ + why);
}

void SummaryCollector::data(const std::string& text) {
  switch (want_) {
    case Want::none:
      return;
    case Want::hostname:
      sum_.hostname = printable(hostname_from_file(text));
      return;
    case Want::world:
      sum_.world.clear();
      for (auto& p : split_any(text, " \t\r\n")) sum_.world.push_back(printable(p));
      return;
    case Want::wifi:
      // Only `ssid=` lines: `ssid="name"`, or the name's bytes in hex. A psk
      // (passphrase or derived key) is on other lines and never looked at.
      sum_.wifi_ssids.clear();
      for (auto& line : split_any(text, "\n")) {
        const std::size_t start = line.find_first_not_of(" \t");
        if (start == std::string::npos || line.compare(start, 5, "ssid=") != 0) continue;
        std::string v = line.substr(start + 5);
        while (!v.empty() && (v.back() == '\r' || v.back() == ' ' || v.back() == '\t')) v.pop_back();
        if (v.size() >= 2 && v.front() == '"' && v.back() == '"') {
          v = v.substr(1, v.size() - 2);
        } else if (!v.empty() && v.size() % 2 == 0 &&
                   v.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos) {
          std::string bytes;
          for (std::size_t i = 0; i < v.size(); i += 2)
            bytes.push_back(static_cast<char>(std::stoi(v.substr(i, 2), nullptr, 16)));
          v = bytes;
        }
        sum_.wifi_ssids.push_back(printable(v));
      }
      return;
    case Want::passwd:
      sum_.users.clear();
      // name:password:uid:gid:gecos:home:shell — only name, uid and shell are
      // kept; the password field may hold a hash and is never looked at.
      for (auto& line : split_any(text, "\n")) {
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
          if (!line.empty() && line[0] != '#') sum_.warnings.push_back("etc/passwd has a malformed line");
          continue;
        }
        std::uint64_t uid = std::stoull(f[2]);
        if (uid > 0xFFFFFFFFull) continue;
        while (!f[6].empty() && f[6].back() == '\r') f[6].pop_back();
        sum_.users.push_back({printable(f[0]), static_cast<std::uint32_t>(uid), printable(f[6])});
      }
      return;
  }
}

}  // namespace detail

ApkovlSummary summarize_apkovl(const std::string& data, const std::string& name) {
  ApkovlInspection r = detail::apkovl_pass(name, data, false, true);
  if (!r.summary) throw Error(Errc::input, r.problem);
  return std::move(*r.summary);
}

}  // namespace rpi::partition
