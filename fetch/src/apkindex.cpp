// A repository's APKINDEX: which packages it has, what they depend on and
// provide, and how big their .apk files are. Read to check a spec's
// [apk].packages before a card is made (a misspelt name otherwise fails only
// on the Pi, in a log) and to size the card for its apk cache.
#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <sstream>

#include "fetch/fetch.hpp"
#include "rpi/archive_reader.hpp"
#include "rpi/atomic_file.hpp"
#include "rpi/digest.hpp"
#include "rpi/error.hpp"
#include "rpi/events.hpp"
#include "rpi/size.hpp"
#include "transfer.hpp"

namespace rpi::fetch {

namespace fs = std::filesystem;

namespace {

// Alpine's biggest index (community) is a few MB unpacked; this leaves room
// while still refusing a decompression bomb.
constexpr std::size_t kMaxIndexText = 64u << 20;
constexpr std::size_t kMaxIndexFile = 32u << 20;

std::uint64_t number(std::string_view v) {
  std::uint64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  return ec == std::errc() && p == v.data() + v.size() ? n : 0;
}

std::vector<std::string> words(std::string_view v, bool strip_version) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < v.size()) {
    while (i < v.size() && v[i] == ' ') ++i;
    std::size_t j = i;
    while (j < v.size() && v[j] != ' ') ++j;
    if (j > i) {
      std::string w(v.substr(i, j - i));
      if (strip_version) w = w.substr(0, w.find('='));
      out.push_back(std::move(w));
    }
    i = j;
  }
  return out;
}

void add_package(PackageIndex& idx, Package&& p) {
  if (p.name.empty()) return;
  const std::size_t i = idx.packages.size();
  // A repository lists each name once; should it not, the first one counts.
  idx.by_name.emplace(p.name, i);
  for (const auto& pr : p.provides) idx.by_provide.emplace(pr, i);
  idx.packages.push_back(std::move(p));
}

void parse_text(PackageIndex& idx, std::string_view text) {
  Package cur;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty()) {
      add_package(idx, std::move(cur));
      cur = Package{};
      continue;
    }
    if (line.size() < 2 || line[1] != ':') continue;  // not a field: ignored, as apk does
    std::string_view v = line.substr(2);
    switch (line[0]) {
      case 'P':
        cur.name = v;
        break;
      case 'V':
        cur.version = v;
        break;
      case 'S':
        cur.size = number(v);
        break;
      case 'I':
        cur.installed_size = number(v);
        break;
      case 'D':
        cur.depends = words(v, false);
        break;
      case 'p':
        cur.provides = words(v, true);
        break;
      default:
        break;
    }
  }
  add_package(idx, std::move(cur));
}

// <cache>/indexes/<sha256 of the URL, 16 digits>-APKINDEX.tar.gz
fs::path cached_index(const Options& opts, const std::string& url) {
  return opts.cache_dir / "indexes" / (sha256_hex(url).substr(0, 16) + "-APKINDEX.tar.gz");
}

}  // namespace

const Package* PackageIndex::find(const std::string& name) const {
  if (auto it = by_name.find(name); it != by_name.end()) return &packages[it->second];
  if (auto it = by_provide.find(name); it != by_provide.end()) return &packages[it->second];
  return nullptr;
}

PackageIndex parse_package_index(const std::string& tar_gz, const std::string& source) {
  ArchiveReader a(archive_read_new());
  if (!a) throw Error(Errc::internal, "archive_read_new failed");
  archive_read_support_filter_gzip(a.get());
  archive_read_support_format_tar(a.get());
  // Alpine cuts the signature tar before its end blocks, so the two members read
  // as one tar; an index signed by other tools may not be cut.
  archive_read_set_format_option(a.get(), "tar", "read_concatenated_archives", "1");
  auto why = [&] {
    const char* m = archive_error_string(a.get());
    return std::string(m ? m : "unreadable");
  };
  if (archive_read_open_memory(a.get(), tar_gz.data(), tar_gz.size()) != ARCHIVE_OK)
    throw Error(Errc::input, source + " is not an APKINDEX.tar.gz (" + why() + ")");
  PackageIndex idx;
  idx.source = source;
  archive_entry* e = nullptr;
  for (;;) {
    int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) throw Error(Errc::input, source + " is not an APKINDEX.tar.gz (" + why() + ")");
    const char* name = archive_entry_pathname(e);
    if (!name || std::string_view(name) != "APKINDEX") continue;
    std::string text;
    char buf[64 << 10];
    for (;;) {
      la_ssize_t n = archive_read_data(a.get(), buf, sizeof buf);
      if (n == 0) break;
      if (n < 0) throw Error(Errc::input, source + ": cannot read its APKINDEX (" + why() + ")");
      text.append(buf, static_cast<std::size_t>(n));
      if (text.size() > kMaxIndexText)
        throw Error(Errc::input, source + ": its APKINDEX is larger than " + format_size(kMaxIndexText));
    }
    parse_text(idx, text);
    return idx;
  }
  throw Error(Errc::input, source + " holds no APKINDEX file: not an Alpine package index");
}

std::optional<PackageIndex> load_package_index(const std::string& repository, const std::string& arch,
                                               const Options& opts, std::chrono::seconds max_age) {
  const std::string url = detail::join_url(repository, arch + "/APKINDEX.tar.gz");
  const std::string shown = redact_urls(url);
  Stopwatch took;
  // The detail (-v) of how the index was had: "package index URL: <how>, N packages, in 0.12 s".
  auto told = [&](const std::string& how, const PackageIndex& idx) {
    emit_detail(opts.events, shown,
                "package index " + shown + ": " + how + ", " + std::to_string(idx.packages.size()) + " packages, in " +
                    took.elapsed());
  };
  if (!detail::is_remote(url)) {
    detail::Text t = detail::get_text(url, opts, kMaxIndexFile);
    if (!t.found) {
      emit_detail(opts.events, shown, "package index " + shown + ": no such file (looked in " + took.elapsed() + ")");
      return std::nullopt;
    }
    PackageIndex idx = parse_package_index(t.body, shown);
    told("read in place (a local repository: no copy kept), " + format_size(t.body.size()), idx);
    return idx;
  }
  // The copy kept from an earlier run: used while fresh, offline at any age,
  // and when the repository cannot be reached.
  fs::path copy;
  std::optional<std::chrono::hours> age;
  std::string age_text;  // "25 minutes", "3 hours": for the details
  bool copy_damaged = false;
  auto read_copy = [&]() -> std::optional<PackageIndex> {
    try {
      detail::Text t = detail::get_text(copy.string(), opts, kMaxIndexFile);
      if (t.found) return parse_package_index(t.body, shown);
    } catch (const Error&) {
      // A damaged copy: as good as none.
      copy_damaged = true;
    }
    return std::nullopt;
  };
  if (!opts.cache_dir.empty()) {
    copy = cached_index(opts, url);
    struct stat st {};
    if (::stat(copy.c_str(), &st) == 0) {
      const auto since = std::chrono::system_clock::now() - std::chrono::system_clock::from_time_t(st.st_mtime);
      age = std::chrono::duration_cast<std::chrono::hours>(since);
      const auto minutes = std::chrono::duration_cast<std::chrono::minutes>(since).count();
      age_text = minutes < 120 ? std::to_string(std::max<long long>(minutes, 0)) + " minutes"
                               : std::to_string(age->count()) + " hours";
      if (opts.offline || since < max_age)
        if (auto idx = read_copy()) {
          told("the copy kept in " + (opts.cache_dir / "indexes").string() + " from " + age_text + " ago used (" +
                   (opts.offline ? "offline: a copy of any age serves"
                                 : "younger than " +
                                       std::to_string(std::chrono::duration_cast<std::chrono::hours>(max_age).count()) +
                                       " hours: not downloaded again") +
                   ")",
               *idx);
          return idx;
        }
    }
  }
  if (opts.offline) {
    emit_detail(opts.events, shown,
                "package index " + shown + ": offline, and " +
                    (copy_damaged ? "the cached copy of it cannot be read" : "the cache has no copy of it"));
    return std::nullopt;
  }
  detail::Text t;
  try {
    t = detail::get_text(url, opts, kMaxIndexFile);
  } catch (const Error& e) {
    if (e.code() == Errc::network && age)
      if (auto idx = read_copy()) {
        emit(opts.events, Event{"note", shown, 0, 0,
                                "using the copy of " + shown + " from " + std::to_string(age->count()) +
                                    " hours ago: " + redact_urls(e.what())});
        told("the repository failed after " + took.lap() + "; the copy from " + age_text + " ago used instead", *idx);
        return idx;
      }
    throw Error(e.code(), redact_urls(e.what()));
  }
  if (!t.found) {
    emit_detail(opts.events, shown,
                "package index " + shown + ": the repository has none (looked in " + took.elapsed() + ")");
    return std::nullopt;
  }
  PackageIndex idx = parse_package_index(t.body, shown);
  std::string kept;
  if (!copy.empty()) {
    try {
      rpi::create_directories(copy.parent_path(), "the package index copy");
      write_file_atomic(copy, t.body);
      kept = "; a copy kept in " + copy.parent_path().string();
    } catch (const Error&) {
      // Only a copy: the check goes on with what was fetched.
      kept = "; no copy could be kept in " + copy.parent_path().string();
    }
  }
  told("downloaded, " + format_size(t.body.size()) +
           (age ? " (the copy from " + age_text + " ago was " + (copy_damaged ? "unreadable" : "too old") + ")"
                : std::string(copy.empty() ? "" : " (no copy in the cache)")) +
           kept,
       idx);
  return idx;
}

PartialSummary package_index_copies(const fs::path& cache_dir) {
  PartialSummary sum;
  std::error_code ec;
  for (const auto& d : fs::directory_iterator(cache_dir / "indexes", ec)) {
    if (!d.path().filename().string().ends_with("-APKINDEX.tar.gz")) continue;
    ++sum.count;
    std::uint64_t n = d.file_size(ec);
    if (!ec) sum.bytes += n;
  }
  return sum;
}

}  // namespace rpi::fetch
