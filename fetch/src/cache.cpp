#include "cache.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

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

fs::path cache_root(const Options& opts) {
  if (opts.cache_dir.empty())
    throw Error(Errc::usage, "no cache directory: HOME and XDG_CACHE_HOME are unset; pass --cache-dir DIR");
  // Folders made 0755 and partial/ 0700 whatever the umask: nobody else may
  // put bytes into a download between its digests and its move into the cache.
  rpi::create_directories(opts.cache_dir / "tarballs", "the cache directory");
  rpi::create_directories(opts.cache_dir / "partial", "the cache directory", 0700);
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
  bool noted = false;
  Stopwatch waited;
  for (;;) {
    int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 && (errno == EROFS || errno == EACCES)) {
      read_only_ = true;  // nobody writes here through this mount, or not us: nothing to lock against
      return;
    }
    if (fd < 0) throw_errno("cannot open " + p.string());
    fd_.reset(fd);
    if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK) throw_errno("cannot lock " + p.string());
      if (!wait) return;
      if (opts && !noted)
        emit(opts->events,
             Event{"note", subject, 0, 0, "waiting for another rpi-provision that is fetching " + subject});
      noted = true;
      if (opts && opts->cancel) {
        // Ctrl-C must end the wait too: asked again and again, not blocked in
        // flock (the signal may reach another thread, or come just before it).
        while (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
          if (errno != EWOULDBLOCK && errno != EINTR) throw_errno("cannot lock " + p.string());
          if (cancelled(opts->cancel)) throw Cancelled{};
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      } else {
        while (::flock(fd_.get(), LOCK_EX) != 0) {
          if (errno != EINTR) throw_errno("cannot lock " + p.string());
        }
      }
    }
    // `cache prune` removes unused lock files while holding them: a lock on a
    // file no longer at `p` guards nothing, so take the current one.
    struct stat held {
    }, now{};
    if (::fstat(fd_.get(), &held) != 0) throw_errno("cannot stat " + p.string());
    if (::stat(p.c_str(), &now) == 0 && now.st_ino == held.st_ino && now.st_dev == held.st_dev) break;
  }
  locked_ = true;
  if (opts && noted)
    emit_detail(opts->events, subject,
                "the other rpi-provision is done with " + subject + ": waited " + waited.elapsed());
}

namespace {
// The entry in `dir`, or nullopt and (when `why` is given) what is wrong with it.
std::optional<CacheEntry> parse_entry(const fs::path& dir, std::string* why) {
  auto fail = [why](std::string problem) -> std::optional<CacheEntry> {
    if (why) *why = std::move(problem);
    return std::nullopt;
  };
  std::error_code ec;
  std::ifstream in(dir / "info");
  if (!in) return fail(fs::exists(dir / "info", ec) ? "its info file cannot be read" : "it has no info file");
  std::map<std::string, std::string> kv;
  std::string line;
  while (std::getline(in, line)) {
    std::size_t eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  if (in.bad()) return fail("its info file cannot be read");
  CacheEntry e;
  e.file = kv["file"];
  e.sha256 = kv["sha256"];
  if (e.file.empty()) return fail("its info file is damaged (it names no tarball: no file= line)");
  if (e.file.find('/') != std::string::npos || e.file == "." || e.file == "..")
    return fail("its info file is damaged (file= is not a file name)");
  if (e.sha256 != dir.filename().string())
    return fail("its info file is damaged (its sha256= is not the folder's name)");
  e.path = dir / e.file;
  if (!fs::is_regular_file(e.path, ec)) return fail("its tarball (" + e.file + ") is missing");
  e.version = kv["version"];
  e.arch = kv["arch"];
  e.branch = kv["branch"];
  e.sha512 = kv["sha512"];
  e.provenance = kv["provenance"];  // absent in entries made before it was recorded: unknown
  if (!kv["url"].empty()) e.urls.push_back(kv["url"]);
  e.size = std::strtoull(kv["size"].c_str(), nullptr, 10);
  e.fetched_unix = std::strtoll(kv["fetched"].c_str(), nullptr, 10);
  return e;
}
}  // namespace

std::optional<CacheEntry> read_entry(const fs::path& dir) {
  return parse_entry(dir, nullptr);
}

std::string entry_damage(const fs::path& dir) {
  std::error_code ec;
  // An empty folder is an entry being made (store() fills it under its lock).
  if (!fs::is_directory(dir, ec) || fs::is_empty(dir, ec) || ec) return {};
  std::string why;
  return parse_entry(dir, &why) ? std::string() : why;
}

bool entry_busy(const fs::path& cache, const std::string& sha256) {
  // Only looked at: a lock file is not created for this (`cache list` writes nothing).
  Fd fd(::open((cache / "partial" / (sha256 + ".lock")).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  if (::flock(fd.get(), LOCK_SH | LOCK_NB) == 0) return false;  // released when fd closes
  return errno == EWOULDBLOCK;
}

std::optional<fs::path> lookup(const fs::path& cache, const std::string& file, const std::string& sha256,
                               std::uint64_t size, std::string* damage) {
  fs::path dir = entry_dir(cache, sha256);
  // A tarball with this digest under another name is still the same bytes, so
  // `file` only names it in messages.
  (void)file;
  auto e = read_entry(dir);
  if (!e) return std::nullopt;
  std::error_code ec;
  std::uint64_t actual = fs::file_size(e->path, ec);
  std::string problem;
  if (ec)
    problem = "could not be read (" + ec.message() + ")";
  else if (actual != e->size || (size && actual != size))
    problem = "failed its size check (expected " + std::to_string(size ? size : e->size) + " bytes, got " +
              std::to_string(actual) + ")";
  else if (std::string got = sha256_file_hex(e->path.string()); got != sha256)
    problem = "failed its SHA-256 check (expected " + sha256 + ", got " + got + ")";
  if (!problem.empty()) {
    fs::remove_all(dir, ec);  // damaged: never hand it out, fetch again
    if (damage) *damage = problem;
    return std::nullopt;
  }
  return e->path;
}

namespace {
void write_info(const fs::path& dir, const CacheEntry& meta, std::int64_t fetched) {
  std::ostringstream info;
  info << "file=" << meta.file << "\nversion=" << meta.version << "\narch=" << meta.arch << "\nbranch=" << meta.branch
       << "\nsize=" << meta.size << "\nsha256=" << meta.sha256 << "\nsha512=" << meta.sha512
       << "\nprovenance=" << meta.provenance << "\nurl=" << (meta.urls.empty() ? "" : meta.urls.front())
       << "\nfetched=" << fetched << "\n";
  write_file_atomic(dir / "info", info.str());
}
}  // namespace

void record_release(const fs::path& cache, const Release& rel) {
  if (rel.provenance.empty()) return;
  auto e = read_entry(entry_dir(cache, rel.sha256));
  if (!e || e->provenance == "index" || e->provenance == rel.provenance) return;
  CacheEntry meta = *e;
  meta.version = rel.version;
  meta.arch = rel.arch;
  meta.branch = rel.branch;
  meta.provenance = rel.provenance;
  if (meta.sha512.empty()) meta.sha512 = rel.sha512;
  write_info(e->path.parent_path(), meta, e->fetched_unix);
}

fs::path store(const fs::path& cache, const CacheEntry& meta, const fs::path& part, const std::string& asc) {
  fs::path dir = entry_dir(cache, meta.sha256);
  std::error_code ec;
  fs::remove_all(dir, ec);
  rpi::create_directories(dir, "the cache entry");
  auto now = std::chrono::system_clock::now().time_since_epoch();
  write_info(dir, meta, std::chrono::duration_cast<std::chrono::seconds>(now).count());
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

std::vector<DamagedEntry> damaged_cache_entries(const fs::path& cache_dir) {
  std::vector<DamagedEntry> out;
  std::error_code ec;
  for (const auto& d : fs::directory_iterator(cache_dir / "tarballs", ec)) {
    const std::string sha = d.path().filename().string();
    // Folders named otherwise are not entries (nor the cache's to judge).
    if (!d.is_directory(ec) || !detail::is_hex(sha, 64)) continue;
    std::string problem = detail::entry_damage(d.path());
    if (problem.empty() || detail::entry_busy(cache_dir, sha)) continue;  // fine, or being made right now
    DamagedEntry e{d.path(), std::move(problem), 0};
    std::error_code walk;
    for (fs::recursive_directory_iterator it(d.path(), walk), end; !walk && it != end; it.increment(walk)) {
      std::error_code size_ec;
      if (it->is_regular_file(size_ec)) {
        const std::uint64_t n = it->file_size(size_ec);
        if (!size_ec) e.bytes += n;
      }
    }
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(), [](const DamagedEntry& x, const DamagedEntry& y) { return x.dir < y.dir; });
  return out;
}

PartialSummary partial_downloads(const fs::path& cache_dir) {
  PartialSummary sum;
  std::error_code ec;
  for (const auto& d : fs::directory_iterator(cache_dir / "partial", ec)) {
    if (d.path().extension() != ".part") continue;
    ++sum.count;
    std::uint64_t n = d.file_size(ec);
    if (!ec) sum.bytes += n;
  }
  return sum;
}

namespace {
// "aarch64 stable" / "aarch64 edge": the groups prune keeps N versions of.
std::string prune_group(const CacheEntry& e) {
  return e.arch + (e.branch == "edge" ? "\x1f"
                                        "edge"
                                      : "\x1f"
                                        "stable");
}
}  // namespace

std::vector<CacheEntry> prune_cache(const fs::path& cache_dir, std::size_t keep, PartialSummary* partials,
                                    std::vector<DamagedEntry>* damaged) {
  std::vector<CacheEntry> removed;
  std::map<std::string, std::vector<std::string>> kept_versions;  // per group, distinct versions kept
  std::error_code ec;
  if (fs::is_directory(cache_dir / "tarballs", ec))  // the locks
    rpi::create_directories(cache_dir / "partial", "the cache directory", 0700);
  // Damaged entries first: no run can use them (a reuse checks the tarball
  // against its info), and a fetch would replace them anyway.
  for (DamagedEntry& d : damaged_cache_entries(cache_dir)) {
    const std::string sha = d.dir.filename().string();
    detail::EntryLock lock(cache_dir, sha, false);
    if (!lock.locked()) continue;                       // being made or replaced right now
    if (detail::entry_damage(d.dir).empty()) continue;  // replaced meanwhile
    fs::remove_all(d.dir, ec);
    if (ec) throw Error(Errc::io, "cannot remove " + d.dir.string() + ": " + ec.message());
    if (damaged) damaged->push_back(std::move(d));
  }
  for (const CacheEntry& e : list_cache(cache_dir)) {
    // Newest version first; a tarball without a release version is a version of its own.
    std::vector<std::string>& kept = kept_versions[prune_group(e)];
    const std::string version = e.version.empty() ? "sha256:" + e.sha256 : e.version;
    if (std::find(kept.begin(), kept.end(), version) != kept.end()) continue;
    if (kept.size() < keep) {
      kept.push_back(version);
      continue;
    }
    // Skip entries another run is creating or replacing right now.
    detail::EntryLock lock(cache_dir, e.sha256, false);
    if (!lock.locked()) continue;
    fs::remove_all(e.path.parent_path(), ec);
    if (ec) throw Error(Errc::io, "cannot remove " + e.path.parent_path().string() + ": " + ec.message());
    removed.push_back(e);
  }
  // Leftover partial downloads of finished or abandoned fetches, and the lock
  // files nobody holds (each fetch leaves one behind).
  PartialSummary gone;
  fs::path partial = cache_dir / "partial";
  if (fs::is_directory(partial, ec)) {
    std::vector<fs::path> files;
    for (const auto& d : fs::directory_iterator(partial, ec)) files.push_back(d.path());
    std::sort(files.begin(), files.end());
    // Part files first, then the locks: a lock is removed only after its part.
    std::stable_partition(files.begin(), files.end(), [](const fs::path& p) { return p.extension() != ".lock"; });
    std::stable_partition(files.begin(), files.end(), [](const fs::path& p) { return p.extension() == ".part"; });
    for (const fs::path& p : files) {
      std::string name = p.filename().string();
      const bool part = p.extension() == ".part", lock_file = p.extension() == ".lock";
      // A download's files are named after its tarball's SHA-256 and it holds
      // <sha256>.lock all along: a file named otherwise is no running
      // download's (a stray copy, another tool's, an old version's), so it
      // needs no lock to be removed.
      const std::string sha = name.substr(0, std::min<std::size_t>(64, name.size()));
      const bool keyed = detail::is_hex(sha, 64);
      if (name.ends_with(".part.validator")) {
        // A validator whose part file is gone (an older version left these behind).
        fs::path owner = p;
        owner.replace_extension();
        if (fs::exists(owner, ec)) continue;
        std::optional<detail::EntryLock> lock;
        if (keyed) lock.emplace(cache_dir, sha, false);
        if ((!lock || lock->locked()) && !fs::exists(owner, ec)) fs::remove(p, ec);
        continue;
      }
      if (!part && !lock_file) continue;
      if (lock_file && (!keyed || name != sha + ".lock")) continue;
      if (!fs::exists(p, ec)) continue;  // a lock already removed with its part
      std::optional<detail::EntryLock> lock;
      if (keyed) {
        lock.emplace(cache_dir, sha, false);
        if (!lock->locked()) continue;  // someone is downloading it right now: keep it
      }
      if (part) {
        std::uint64_t n = fs::file_size(p, ec);
        if (ec) n = 0;
        fs::path v = p;
        v += ".validator";
        std::uint64_t vn = fs::file_size(v, ec);
        if (!ec) n += vn;
        if (!fs::remove(p, ec) || ec) continue;
        fs::remove(v, ec);
        ++gone.count;
        gone.bytes += n;
      }
      // Held by us: nobody else can be using it (a waiter re-checks the path).
      if (keyed) fs::remove(partial / (sha + ".lock"), ec);
    }
  }
  if (partials) *partials = gone;
  return removed;
}

}  // namespace rpi::fetch
