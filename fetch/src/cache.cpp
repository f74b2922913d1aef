#include "cache.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "rpi/atomic_file.hpp"
#include "rpi/digest.hpp"
#include "rpi/error.hpp"

namespace rpi::fetch {

namespace fs = std::filesystem;

fs::path default_cache_dir() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && *xdg == '/') return fs::path(xdg) / "rpi-provision";
  const char* home = std::getenv("HOME");
  if (home && *home) return fs::path(home) / ".cache" / "rpi-provision";
  return {};
}

namespace detail {

bool is_hex(const std::string& s, std::size_t len) {
  return s.size() == len &&
         std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

std::string to_lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

fs::path cache_root(const Options& opts) {
  if (opts.cache_dir.empty())
    throw Error(Errc::usage, "no cache directory: HOME and XDG_CACHE_HOME are unset; pass --cache-dir DIR");
  std::error_code ec;
  fs::create_directories(opts.cache_dir / "tarballs", ec);
  if (!ec) fs::create_directories(opts.cache_dir / "partial", ec);
  if (ec) throw Error(Errc::io, "cannot create the cache directory " + opts.cache_dir.string() + ": " + ec.message());
  return opts.cache_dir;
}

fs::path entry_dir(const fs::path& cache, const std::string& sha256) {
  return cache / "tarballs" / sha256;
}

fs::path part_path(const fs::path& cache, const std::string& sha256, const std::string& file) {
  return cache / "partial" / (sha256 + "-" + file + ".part");
}

EntryLock::EntryLock(const fs::path& cache, const std::string& sha256, bool wait, const Options* opts,
                     const std::string& subject) {
  fs::path p = cache / "partial" / (sha256 + ".lock");
  fd_ = open_or_throw(p.string(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (::flock(fd_.get(), LOCK_EX | LOCK_NB) == 0) {
    locked_ = true;
    return;
  }
  if (errno != EWOULDBLOCK) throw_errno("cannot lock " + p.string());
  if (!wait) return;
  if (opts)
    emit(opts->events, Event{"note", subject, 0, 0, "waiting for another rpi-provision that is fetching " + subject});
  while (::flock(fd_.get(), LOCK_EX) != 0) {
    if (errno != EINTR) throw_errno("cannot lock " + p.string());
  }
  locked_ = true;
}

std::optional<CacheEntry> read_entry(const fs::path& dir) {
  std::ifstream in(dir / "info");
  if (!in) return std::nullopt;
  std::map<std::string, std::string> kv;
  std::string line;
  while (std::getline(in, line)) {
    std::size_t eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  CacheEntry e;
  e.file = kv["file"];
  e.sha256 = kv["sha256"];
  if (e.file.empty() || e.file.find('/') != std::string::npos || e.sha256 != dir.filename().string())
    return std::nullopt;
  e.path = dir / e.file;
  std::error_code ec;
  if (!fs::is_regular_file(e.path, ec)) return std::nullopt;
  e.version = kv["version"];
  e.arch = kv["arch"];
  e.branch = kv["branch"];
  e.sha512 = kv["sha512"];
  if (!kv["url"].empty()) e.urls.push_back(kv["url"]);
  e.size = std::strtoull(kv["size"].c_str(), nullptr, 10);
  e.fetched_unix = std::strtoll(kv["fetched"].c_str(), nullptr, 10);
  return e;
}

std::optional<fs::path> lookup(const fs::path& cache, const std::string& file, const std::string& sha256,
                               std::uint64_t size) {
  fs::path dir = entry_dir(cache, sha256);
  // A tarball with this digest under another name is still the same bytes, so
  // `file` only names it in messages.
  (void)file;
  auto e = read_entry(dir);
  if (!e) return std::nullopt;
  std::error_code ec;
  std::uint64_t actual = fs::file_size(e->path, ec);
  bool ok = !ec && actual == e->size && (!size || actual == size) && sha256_file_hex(e->path.string()) == sha256;
  if (!ok) {
    fs::remove_all(dir, ec);  // damaged: never hand it out, fetch again
    return std::nullopt;
  }
  return e->path;
}

fs::path store(const fs::path& cache, const CacheEntry& meta, const fs::path& part, const std::string& asc) {
  fs::path dir = entry_dir(cache, meta.sha256);
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  if (ec) throw Error(Errc::io, "cannot create " + dir.string() + ": " + ec.message());
  std::ostringstream info;
  auto now = std::chrono::system_clock::now().time_since_epoch();
  info << "file=" << meta.file << "\nversion=" << meta.version << "\narch=" << meta.arch << "\nbranch=" << meta.branch
       << "\nsize=" << meta.size << "\nsha256=" << meta.sha256 << "\nsha512=" << meta.sha512
       << "\nurl=" << (meta.urls.empty() ? "" : meta.urls.front())
       << "\nfetched=" << std::chrono::duration_cast<std::chrono::seconds>(now).count() << "\n";
  write_file_atomic(dir / "info", info.str());
  if (!asc.empty()) write_file_atomic(dir / (meta.file + ".asc"), asc);
  fs::path target = dir / meta.file;
  if (::rename(part.c_str(), target.c_str()) != 0) throw_errno("cannot move " + part.string() + " into the cache");
  fs::path validator = part;
  validator += ".validator";
  fs::remove(validator, ec);
  return target;
}

bool parse_file_name(const std::string& file, std::string& version, std::string& arch) {
  const std::string prefix = "alpine-rpi-", suffix = ".tar.gz";
  if (file.size() <= prefix.size() + suffix.size() || file.rfind(prefix, 0) != 0 ||
      file.compare(file.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  std::string mid = file.substr(prefix.size(), file.size() - prefix.size() - suffix.size());
  std::size_t dash = mid.rfind('-');
  if (dash == std::string::npos || dash == 0) return false;
  version = mid.substr(0, dash);
  arch = mid.substr(dash + 1);
  return true;
}

}  // namespace detail

int compare_versions(const std::string& a, const std::string& b) {
  // Numeric runs compare as numbers, everything else character by character.
  std::size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      std::size_t i2 = i, j2 = j;
      while (i2 < a.size() && std::isdigit(static_cast<unsigned char>(a[i2]))) ++i2;
      while (j2 < b.size() && std::isdigit(static_cast<unsigned char>(b[j2]))) ++j2;
      std::string na = a.substr(i, i2 - i), nb = b.substr(j, j2 - j);
      na.erase(0, std::min(na.find_first_not_of('0'), na.size()));
      nb.erase(0, std::min(nb.find_first_not_of('0'), nb.size()));
      if (na.size() != nb.size()) return na.size() < nb.size() ? -1 : 1;
      if (na != nb) return na < nb ? -1 : 1;
      i = i2;
      j = j2;
    } else {
      if (a[i] != b[j]) return a[i] < b[j] ? -1 : 1;
      ++i;
      ++j;
    }
  }
  if (i < a.size()) return 1;
  if (j < b.size()) return -1;
  return 0;
}

std::vector<CacheEntry> list_cache(const fs::path& cache_dir) {
  std::vector<CacheEntry> out;
  std::error_code ec;
  fs::path root = cache_dir / "tarballs";
  if (!fs::is_directory(root, ec)) return out;
  for (const auto& d : fs::directory_iterator(root, ec)) {
    if (!d.is_directory(ec)) continue;
    if (auto e = detail::read_entry(d.path())) out.push_back(*e);
  }
  std::sort(out.begin(), out.end(), [](const CacheEntry& x, const CacheEntry& y) {
    if (int c = compare_versions(x.version, y.version)) return c > 0;
    if (x.arch != y.arch) return x.arch < y.arch;
    if (x.fetched_unix != y.fetched_unix) return x.fetched_unix > y.fetched_unix;
    return x.sha256 < y.sha256;
  });
  return out;
}

std::vector<CacheEntry> prune_cache(const fs::path& cache_dir, std::size_t keep) {
  std::vector<CacheEntry> removed;
  std::map<std::string, std::size_t> kept_per_arch;
  std::error_code ec;
  for (const CacheEntry& e : list_cache(cache_dir)) {
    if (kept_per_arch[e.arch] < keep) {
      ++kept_per_arch[e.arch];
      continue;
    }
    // Skip entries another run is creating or replacing right now.
    detail::EntryLock lock(cache_dir, e.sha256, false);
    if (!lock.locked()) continue;
    fs::remove_all(e.path.parent_path(), ec);
    if (ec) throw Error(Errc::io, "cannot remove " + e.path.parent_path().string() + ": " + ec.message());
    removed.push_back(e);
  }
  // Leftover partial downloads of finished or abandoned fetches.
  fs::path partial = cache_dir / "partial";
  if (fs::is_directory(partial, ec)) {
    std::vector<fs::path> parts;
    for (const auto& d : fs::directory_iterator(partial, ec))
      if (d.path().extension() == ".part") parts.push_back(d.path());
    for (const fs::path& p : parts) {
      std::string name = p.filename().string();
      std::string sha = name.substr(0, std::min<std::size_t>(64, name.size()));
      if (!detail::is_hex(sha, 64)) continue;
      detail::EntryLock lock(cache_dir, sha, false);
      if (!lock.locked()) continue;
      fs::remove(p, ec);
      fs::path v = p;
      v += ".validator";
      fs::remove(v, ec);
    }
  }
  return removed;
}

}  // namespace rpi::fetch
