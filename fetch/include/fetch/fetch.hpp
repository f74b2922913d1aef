// Resolve, download, verify and cache the Alpine Raspberry Pi boot tarball.
//
//   Release r = fetch::resolve({.version = "3.22", .arch = "aarch64"}, opts);
//   std::filesystem::path tarball = fetch::fetch_release(r, opts);   // verified, cached
//
// Every byte handed out has been checked against the release's size and
// SHA-256 (and SHA-512 when known); downloads land in a `.part` file and are
// renamed into the cache only after the digests match. Errors are rpi::Error:
// Errc::usage (bad version/arch), Errc::network (download failed, offline miss),
// Errc::input (malformed index, no RPi tarball), Errc::verify (digest/signature).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "rpi/error.hpp"
#include "rpi/events.hpp"
#include "rpi/url.hpp"

namespace rpi::fetch {

// The pinned fingerprint of Alpine's release signing key (Natanael Copa).
inline constexpr const char* kAlpineSigningKey = "0482D84022F52DF1C4E7CD43293ACD0907D9495A";
// The default mirror root.
inline constexpr const char* kDefaultMirror = "https://dl-cdn.alpinelinux.org/alpine";

struct Query {
  std::string version = "latest-stable";  // latest-stable | edge | X.Y | X.Y.Z
  std::string arch = "aarch64";           // aarch64 | armv7 | armhf
  // Mirror roots tried in order: https://, http://, file:// or a plain directory
  // with the Alpine layout. Empty: kDefaultMirror.
  std::vector<std::string> mirrors;
  // What gave the mirrors, as an error about one names it: "--mirror", or a
  // spec's "[alpine].mirror".
  std::string mirrors_from = "--mirror";
};

struct Release {
  std::string version;            // "3.22.2"
  std::string arch;               // "aarch64"
  std::string branch;             // "v3.22" or "edge"
  std::string file;               // "alpine-rpi-3.22.2-aarch64.tar.gz"
  std::vector<std::string> urls;  // one per mirror, in the order to try
  std::uint64_t size = 0;         // 0 when unknown (exact version without an index entry)
  std::string sha256;             // lower-case hex, always set
  std::string sha512;             // lower-case hex, empty when the mirror publishes none
  // Where the digests came from: "index" (a latest-releases.yaml), "companion"
  // (the mirror's <file>.sha256), or empty (pinned by the user: `--tarball URL
  // --sha256`, or a cache entry written before this was recorded). Offline
  // resolution of a version only trusts "index" and "companion" cache entries.
  std::string provenance;
};

// $XDG_CACHE_HOME/rpi-provision, else $HOME/.cache/rpi-provision (empty if
// neither variable is set; then every cache operation fails with a clear error).
std::filesystem::path default_cache_dir();

struct Options {
  std::filesystem::path cache_dir = default_cache_dir();
  bool offline = false;                        // never touch the network: cache only
  std::filesystem::path ca_cert;               // extra CA bundle for private HTTPS mirrors
  bool verify_signature = false;               // fetch <file>.asc and check it with gpgme
  std::filesystem::path keyring;               // OpenPGP public key(s), armoured or binary
  std::string signing_key_fingerprint;         // empty: kAlpineSigningKey
  EventSink events;                            // "download" events (done/total bytes), notes
  int retries = 4;                             // extra attempts per URL on transient failures
  std::chrono::milliseconds retry_delay{500};  // first backoff, doubled per attempt
  long connect_timeout_s = 30;
  long low_speed_limit = 1024;  // bytes/s below which...
  long low_speed_time_s = 30;   // ...for this long a transfer counts as stalled
  // Stalls (low-speed timeouts) one URL may have, even when every attempt made
  // some progress: a server trickling bytes is then given up for the next mirror.
  int max_stalls = 5;
  // A download no index gives a size for (`--tarball URL --sha256`) stops here:
  // Alpine's boot tarballs are ~100 MB, and an endless response must not fill the disk.
  std::uint64_t max_unknown_size = std::uint64_t{1} << 30;
  // When set (by a signal handler), transfers and retry waits stop within
  // about a second and throw rpi::Cancelled; a partial download is kept for
  // resuming.
  const std::atomic<bool>* cancel = nullptr;
};

// What fetch_release throws when opts.cancel stops a download that had
// received bytes: an rpi::Cancelled (code that catches that needs no change)
// whose what() says what was kept for the next run, e.g. "cancelled: 23.0 MiB
// of alpine-rpi-3.22.1-aarch64.tar.gz kept in C/partial/; run again to resume".
// A cancel with nothing kept throws a plain rpi::Cancelled.
class DownloadCancelled : public Cancelled {
 public:
  explicit DownloadCancelled(std::string message) : message_(std::move(message)) {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

// Turns a query into a release with digests: from the mirror's
// latest-releases.yaml (branches, latest-stable, edge, and exact versions it
// lists) or the file's .sha256/.sha512 companions (other exact versions).
// Offline: from the cache only; the error says exactly what is missing.
// Online, a mirror that cannot be reached (Errc::network) while the cache holds
// what --offline would use adds "the cache holds FILE; add --offline to use it";
// a missing latest-stable/ or edge/ asks whether the mirror root is right.
Release resolve(const Query& query, const Options& opts);

// What resolve checks before it asks any mirror, alone: the options (the
// keyring and CA files, the signer's fingerprint) and the mirrors (their
// schemes, folders that exist). Throws Errc::usage naming the option.
void check_settings(const Query& query, const Options& opts);

// Returns the verified cached tarball, downloading it (resumably, trying each
// URL in turn) when absent. With opts.verify_signature also checks <file>.asc.
// A download that fails (Errc::network) or is cancelled (DownloadCancelled)
// after bytes arrived says how much was kept in <cache>/partial/ for resuming.
std::filesystem::path fetch_release(const Release& release, const Options& opts);

// `--tarball URL --sha256 HEX`: the file at `url` (http(s)://, file:// or a
// path), cached under its digest, verified against `sha256_hex`.
std::filesystem::path fetch_url(const std::string& url, const std::string& sha256_hex, const Options& opts);

// Text with every URL's secrets hidden: passwords as rpi::redact_urls
// (rpi/url.hpp) does, and query-string values too ("?token=***"), since
// presigned URLs carry their credentials there. Used in everything the
// library says or stores.
std::string redact_urls(std::string text);

// ---- Which releases a mirror offers (`fetch --list`) ----

struct ListQuery {
  std::string arch = "aarch64";           // aarch64 | armv7 | armhf
  std::vector<std::string> mirrors;       // as in Query; empty: kDefaultMirror
  std::string mirrors_from = "--mirror";  // as in Query
  // Every branch the mirror has (and those without an RPi tarball, as skipped);
  // otherwise the newest kListedStableBranches stable branches with one, and edge.
  bool all = false;
};
inline constexpr std::size_t kListedStableBranches = 6;

// One branch of a mirror and the alpine-rpi tarballs it offers for the arch.
struct BranchReleases {
  std::string branch;                 // "v3.22" or "edge"
  std::vector<std::string> releases;  // versions, oldest first ("3.22.0", "3.22.1"); empty: skipped
  std::vector<std::string> cached;    // those of `releases` whose tarball is in opts.cache_dir
  bool latest_stable = false;         // latest-stable/ is this branch
  // Where the versions came from: "listing" (the releases folder's listing,
  // every point release) or "index" (its latest-releases.yaml: the newest only).
  std::string source;
  std::string mirror;  // the mirror root that answered (secrets hidden)
};

// Which Alpine releases the first mirror that answers offers for the arch:
// the branches from the root's listing (a folder's entries, or the HTML index
// page of an nginx/Apache/lighttpd autoindex), else from latest-stable's
// latest-releases.yaml `branch`, walking down vX.(Y-1)... while they exist (at
// most 20). Per branch: the `alpine-rpi-VERSION-ARCH.tar.gz` names of its
// releases/<arch>/ listing, else its latest-releases.yaml entry. Stable branches
// newest first, then edge. Only listings and yaml files are read; nothing is
// downloaded. Throws Errc::usage (offline, bad arch, a mirror with neither a
// listing nor latest-stable/), Errc::network, Errc::input.
std::vector<BranchReleases> list_releases(const ListQuery& query, const Options& opts);

// The href values of the links in an HTML page (an autoindex listing), in
// order, with &amp;-style entities decoded; at most 100000 links of at most
// 4096 bytes each (longer ones are dropped). Pure: for tests.
std::vector<std::string> listing_hrefs(std::string_view html);
// The entries an autoindex page lists: each href's last path segment (a
// folder keeps its trailing '/'), without query, fragment, "../" or links that
// leave the page ("?C=N;O=D", "mailto:"), percent-decoded. Pure: for tests.
std::vector<std::string> listing_entries(std::string_view html);

// ---- Package repositories ----

// One package of a repository's APKINDEX.
struct Package {
  std::string name, version;
  std::uint64_t size = 0;             // the .apk file (S:)
  std::uint64_t installed_size = 0;   // unpacked (I:)
  std::vector<std::string> depends;   // D: as written ("so:libc.musl-aarch64.so.1", "!foo", "bar>=1.2")
  std::vector<std::string> provides;  // p: names without their "=version" ("so:libfoo.so.1", "cmd:foo")
};

// A repository's packages for one arch, looked up by name or by what they provide.
struct PackageIndex {
  std::string source;  // the index's URL or path (secrets hidden)
  std::vector<Package> packages;
  std::unordered_map<std::string, std::size_t> by_name, by_provide;  // → packages[i]
  // The package named `name`, else the first one that provides it; nullptr: none.
  const Package* find(const std::string& name) const;
};

// apk's order of versions: -1, 0 or 1 as `a` is older than, the same as or
// newer than `b`; nullopt when either is not a valid apk version. Versions are
// "1.2.3", "1.2a", "1.0_rc2", "2.6_p20250503", "1.2~c0ffee" (a commit), each
// with an optional "-rN". With `prefix`, `a` also counts as the same when the
// parts both have are equal ("1.2.3-r1" for "1.2"): what "~1.2" asks for (as
// apk 2.14 reads it; apk 3 also wants "1.2" to be the shorter one).
std::optional<int> compare_apk_versions(std::string_view a, std::string_view b, bool prefix = false);

// Whether a package of `version` satisfies a world entry's constraint, e.g.
// op ">=" and wanted "1.2" from "foo>=1.2". "=" is exact, so "foo=1.2" is not
// satisfied by 1.2-r0; "~" is the prefix match. nullopt: cannot tell (an
// invalid version, or a checksum constraint "><").
std::optional<bool> version_satisfies(std::string_view version, std::string_view op, std::string_view wanted);

// Parses an APKINDEX.tar.gz (a signature tar and the index tar, gzip members
// one after the other, as Alpine publishes them). `source` names it in errors.
// Throws Errc::input when it holds no readable APKINDEX.
PackageIndex parse_package_index(const std::string& tar_gz, const std::string& source);

// The index of `repository` (a URL or path as in /etc/apk/repositories, e.g.
// https://dl-cdn.alpinelinux.org/alpine/v3.22/main) for `arch`:
// <repository>/<arch>/APKINDEX.tar.gz. A copy is kept in opts.cache_dir and
// used for `max_age`; offline, any cached copy is used. nullopt when the
// repository has no such file (HTTP 404, no local file), or offline with no
// copy. Throws Errc::network (unreachable) or Errc::input (not an index).
std::optional<PackageIndex> load_package_index(const std::string& repository, const std::string& arch,
                                               const Options& opts,
                                               std::chrono::seconds max_age = std::chrono::hours(24));

// ---- Pieces exposed for tests and the `cache` command ----

// Parses a latest-releases.yaml text and picks the alpine-rpi .tar.gz entry.
// `source` names the file/URL in errors. Throws Errc::input.
Release parse_release_index(const std::string& yaml_text, const std::string& source);

// Checks `signature` (armoured detached .asc) over the file `data_file` with the
// keys in `keyring`, accepting only a good signature by `fingerprint`.
// Throws Errc::verify (bad/unknown signer) or Errc::input (unreadable keyring).
// `subject` names the signed file in errors (default: data_file's name).
void verify_detached_signature(const std::filesystem::path& data_file, const std::string& signature,
                               const std::filesystem::path& keyring, const std::string& fingerprint,
                               const std::string& subject = {});

// A cached tarball: the release it is (urls holds the one URL it came from,
// passwords redacted) plus where it lies and when it arrived.
struct CacheEntry : Release {
  std::filesystem::path path;     // the tarball
  std::int64_t fetched_unix = 0;  // when it entered the cache
};

// Complete entries, newest version first (then by arch, then fetch time).
std::vector<CacheEntry> list_cache(const std::filesystem::path& cache_dir);
// Unfinished downloads in <cache>/partial (resumable .part files).
struct PartialSummary {
  std::size_t count = 0;    // .part files
  std::uint64_t bytes = 0;  // their size (with their validators)
};
PartialSummary partial_downloads(const std::filesystem::path& cache_dir);
// Copies of package indexes in <cache>/indexes (load_package_index). `cache
// prune` leaves them: they are small, and offline they are what [apk].packages
// is checked against.
PartialSummary package_index_copies(const std::filesystem::path& cache_dir);
// An entry folder of the cache (<cache>/tarballs/<sha256>) that no run can
// use: its info file is missing, unreadable or garbled, or the tarball it
// names is gone. The next fetch of that tarball replaces it; `cache prune`
// removes it. Entries another run is making right now are not listed.
struct DamagedEntry {
  std::filesystem::path dir;
  std::string problem;      // "it has no info file", "its info file is damaged (...)", ...
  std::uint64_t bytes = 0;  // what its files take
};
std::vector<DamagedEntry> damaged_cache_entries(const std::filesystem::path& cache_dir);
// Keeps the newest `keep` distinct versions per group, a group being an arch's
// stable releases or its edge snapshots (tarballs without a release version
// count one each, newest fetched first), and removes the other entries. Also
// removes the partial downloads and lock files nobody is using (reported in
// `*partials` when given), and every damaged entry (listed in `*damaged` when
// given). Entries another run holds locked are skipped. Returns the removed
// entries.
std::vector<CacheEntry> prune_cache(const std::filesystem::path& cache_dir, std::size_t keep,
                                    PartialSummary* partials = nullptr, std::vector<DamagedEntry>* damaged = nullptr);

// Compares Alpine version strings numerically ("3.22.10" > "3.22.9").
int compare_versions(const std::string& a, const std::string& b);

}  // namespace rpi::fetch
