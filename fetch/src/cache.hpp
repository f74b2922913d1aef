// Internal: the on-disk cache.
//
//   <cache>/tarballs/<sha256>/<file>        a verified tarball
//   <cache>/tarballs/<sha256>/info          key=value metadata (written first)
//   <cache>/tarballs/<sha256>/<file>.asc    its signature, when one was checked
//   <cache>/partial/<sha256>-<file>.part    an unverified download in progress
//   <cache>/partial/<sha256>.lock           flock held while an entry is made
//
// An entry counts only when both info and the tarball exist; the tarball is
// renamed into place after its digests matched, so readers never see a torn file.
// A folder with files but no usable info (or info naming a tarball that is not
// there) is a damaged entry: listed as such, removed by `cache prune`, replaced
// by the next fetch of its tarball.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "fetch/fetch.hpp"
#include "rpi/fd.hpp"

namespace rpi::fetch::detail {

// opts.cache_dir, created if needed; a clear error when it is empty.
std::filesystem::path cache_root(const Options& opts);
std::filesystem::path entry_dir(const std::filesystem::path& cache, const std::string& sha256);
std::filesystem::path part_path(const std::filesystem::path& cache, const std::string& sha256, const std::string& file);

// An exclusive flock on <cache>/partial/<sha256>.lock. The lock file may be
// removed (by `cache prune`) while held; a waiter then notices that it locked
// an unlinked file and locks the new one instead.
class EntryLock {
 public:
  // wait=false: try once; locked() tells whether it worked.
  EntryLock(const std::filesystem::path& cache, const std::string& sha256, bool wait, const Options* opts = nullptr,
            const std::string& subject = {});
  bool locked() const noexcept { return locked_; }
  // The cache cannot be written by us (a read-only mount, another user's
  // cache): not locked; only an intact entry can be used from it.
  bool read_only() const noexcept { return read_only_; }

 private:
  Fd fd_;
  bool locked_ = false;
  bool read_only_ = false;
};

std::optional<CacheEntry> read_entry(const std::filesystem::path& dir);
// What makes the entry folder `dir` unusable ("it has no info file", "its info
// file is damaged (...)", "its tarball (X) is missing"); "" when it is an
// entry, or empty (one being made).
std::string entry_damage(const std::filesystem::path& dir);
// Another run holds the entry's lock (it is making or replacing it). Creates
// no lock file.
bool entry_busy(const std::filesystem::path& cache, const std::string& sha256);

// The cached tarball for (file, sha256) when present and intact: size and
// SHA-256 are checked again; a damaged entry is removed, and `damage` (when
// given) then says why, e.g. "failed its SHA-256 check (expected X, got Y)".
// Call under EntryLock.
std::optional<std::filesystem::path> lookup(const std::filesystem::path& cache, const std::string& file,
                                            const std::string& sha256, std::uint64_t size,
                                            std::string* damage = nullptr);

// Moves a verified part file into the cache. `asc` (may be empty) is stored too.
std::filesystem::path store(const std::filesystem::path& cache, const CacheEntry& meta,
                            const std::filesystem::path& part, const std::string& asc);

// A cache hit reached through a release index (or digest companions) that was
// first cached some other way (`--tarball`): records the release's provenance,
// version and branch in its info. Call under EntryLock.
void record_release(const std::filesystem::path& cache, const Release& rel);

// Parses "alpine-rpi-<version>-<arch>.tar.gz"; false for other names.
bool parse_file_name(const std::string& file, std::string& version, std::string& arch);

bool is_hex(const std::string& s, std::size_t len);

}  // namespace rpi::fetch::detail
