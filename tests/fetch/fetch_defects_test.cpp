// Regression tests for the fetch module's tester report: silent mirror
// fallback, endless trickles, silent cache repairs, offline provenance, up-front
// option checks, signature messages, mirror validation, prune, the resume
// validator, proxies and CA files, redaction. Each test fails without its fix.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "fetch/fetch.hpp"
#include "mirror_fixture.hpp"
#include "rpi/error.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace rpi;
using namespace rpi::test;
using rpi::fetch::Options;
using rpi::fetch::Query;
using rpi::fetch::Release;

namespace {

// Sets an environment variable for one scope, restoring the old value after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

using FetchDefects = MirrorTest;

// ---- 1. A failing mirror is reported before the next one is tried ----

TEST_F(FetchDefects, TamperedMirrorIsWarnedAboutBeforeTheNextMirror) {
  MirrorServer& s = serve();
  s.set_faults(R"([{"path": "tar.gz", "kind": "flip", "n": 4242, "times": -1}])");
  std::string mirror = s.url();
  mirror.insert(mirror.find("://") + 3, "user:s3cret@");
  Release r = fetch::resolve(query_on("3.22", {mirror, tree->root.string()}), opts());
  ASSERT_EQ(r.urls.size(), 2u);
  fs::path p = fetch::fetch_release(r, opts());
  EXPECT_EQ(sha256_of(p), sha256_of(tree->latest));
  auto w = said("warning", "trying the next mirror");
  ASSERT_EQ(w.size(), 1u) << said_all();
  EXPECT_TRUE(contains(w[0], "127.0.0.1:" + std::to_string(s.port()))) << w[0];
  EXPECT_TRUE(contains(w[0], "SHA-256 mismatch: expected " + r.sha256 + ", got ")) << w[0];
  EXPECT_FALSE(contains(said_all(), "s3cret")) << said_all();
}

TEST_F(FetchDefects, UnreachableMirrorIsWarnedAboutDuringResolution) {
  MirrorServer& s = serve();
  Options o = opts();
  o.retries = 0;
  Release r = fetch::resolve(query_on("3.22", {"http://127.0.0.1:9/alpine", s.url()}), o);
  EXPECT_EQ(r.version, "3.22.2");
  auto w = said("warning", "trying the next mirror");
  ASSERT_EQ(w.size(), 1u) << said_all();
  EXPECT_TRUE(contains(w[0], "http://127.0.0.1:9/alpine")) << w[0];
}

// ---- 2. A trickling server is given up for the next mirror ----

TEST_F(FetchDefects, TricklingServerIsGivenUpForTheNextMirror) {
  MirrorServer& s = serve();
  // Six trickled responses, each making a little progress before its timeout.
  s.set_faults(R"([{"path": "tar.gz", "kind": "trickle", "n": 100, "times": 6}])");
  Options o = opts();
  o.low_speed_limit = 100000;
  o.low_speed_time_s = 1;
  o.max_stalls = 2;
  Release r = fetch::resolve(query_on("3.22", {s.url(), tree->root.string()}), o);
  fs::path p = fetch::fetch_release(r, o);
  EXPECT_EQ(sha256_of(p), r.sha256);
  EXPECT_EQ(s.requests(".tar.gz"), 2) << "after two stalls the server is given up, progress or not";
  auto w = said("warning", "stalled 2 times");
  ASSERT_EQ(w.size(), 1u) << said_all();
  EXPECT_TRUE(contains(w[0], "trying the next mirror")) << w[0];
}

// ---- 3. A damaged cache entry is explained, online and offline ----

TEST_F(FetchDefects, DamagedCacheEntryIsExplained) {
  MirrorServer& s = serve();
  Release r = fetch::resolve(query_on("3.22", {s.url()}), opts());
  fs::path p = fetch::fetch_release(r, opts());
  auto damage = [&] {
    std::string bytes = read_file(p);
    bytes[1000] ^= 1;
    write_file(p, bytes);
  };
  damage();
  fetch::fetch_release(r, opts());
  auto w = said("warning", "failed its SHA-256 check");
  ASSERT_EQ(w.size(), 1u) << said_all();
  EXPECT_TRUE(contains(w[0], "the cached copy of " + r.file)) << w[0];
  EXPECT_TRUE(contains(w[0], "(expected " + r.sha256 + ", got ")) << w[0];
  EXPECT_TRUE(contains(w[0], "was removed; downloading again")) << w[0];

  damage();
  Options off = opts();
  off.offline = true;
  std::string msg = error_of([&] { fetch::fetch_release(r, off); }, Errc::network);
  EXPECT_TRUE(contains(msg, "failed its SHA-256 check")) << msg;
  EXPECT_FALSE(contains(msg, "not in the cache")) << msg;
}

// ---- 4. Offline, a version is only what a release index vouched for ----

TEST_F(FetchDefects, OfflineResolutionIgnoresPinnedTarballs) {
  // `fetch --tarball FILE --sha256`: named like a release, checked against nothing but the user's digest.
  fetch::fetch_url(tree->latest.string(), sha256_of(tree->latest), opts());
  Options off = opts();
  off.offline = true;
  for (std::string v : {"3.22.2", "3.22", "latest-stable"}) {
    std::string msg = error_of([&] { fetch::resolve(query_on(v, {}), off); }, Errc::network);
    EXPECT_TRUE(contains(msg, "not from a release index")) << msg;
  }
  // Through the index, the same bytes do stand for 3.22.2 (one entry per digest).
  MirrorServer& s = serve();
  fetch::fetch_release(fetch::resolve(query_on("3.22", {s.url()}), opts()), opts());
  EXPECT_EQ(fetch::resolve(query_on("3.22.2", {}), off).version, "3.22.2");
  // Entries written before provenance was recorded are not trusted for a version either.
  auto entries = fetch::list_cache(cache);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].provenance, "index");
  fs::path info = entries[0].path.parent_path() / "info";
  std::string text = read_file(info);
  text.erase(text.find("provenance="), std::string("provenance=index\n").size());
  write_file(info, text);
  EXPECT_EQ(fetch::list_cache(cache).size(), 1u) << "old info files are still read";
  error_of([&] { fetch::resolve(query_on("3.22.2", {}), off); }, Errc::network);
  EXPECT_EQ(sha256_of(fetch::fetch_release(entries[0], off)), sha256_of(tree->latest)) << "still usable by digest";
}

// ---- 5. Keyring and fingerprint are checked before any download ----

TEST_F(FetchDefects, BadKeyringOrFingerprintIsRefusedBeforeAnyDownload) {
  MirrorServer& s = serve();
  Release r = fetch::resolve(query_on("3.22", {s.url()}), opts());
  const int served = s.requests("");
  Options o = opts();
  o.verify_signature = true;
  o.keyring = tmp / "no-such-keyring.asc";
  std::string msg = error_of([&] { fetch::fetch_release(r, o); }, Errc::usage);
  EXPECT_TRUE(contains(msg, "--keyring " + o.keyring.string() + " does not exist")) << msg;
  error_of([&] { fetch::resolve(query_on("3.22", {s.url()}), o); }, Errc::usage);
  o.keyring = tmp / "keyring.asc";
  write_file(o.keyring, "keys");
  o.signing_key_fingerprint = "ABCD1234";
  msg = error_of([&] { fetch::fetch_release(r, o); }, Errc::usage);
  EXPECT_TRUE(contains(msg, "--signing-key-fingerprint 'ABCD1234' is not 40 hex digits")) << msg;
  EXPECT_EQ(s.requests(""), served) << "nothing was downloaded";
  EXPECT_EQ(count_files(cache, ".part"), 0u);
}

// ---- 12. --ca-cert is checked up front, and a bad one is named ----

TEST_F(FetchDefects, CaCertProblemsAreNamed) {
  MirrorServer& s = serve();
  Options o = opts();
  o.ca_cert = tmp / "missing.pem";
  std::string msg = error_of([&] { fetch::resolve(query_on("3.22", {s.url()}), o); }, Errc::usage);
  EXPECT_TRUE(contains(msg, "--ca-cert " + o.ca_cert.string() + " does not exist")) << msg;
  EXPECT_EQ(s.requests(""), 0);

  RPI_REQUIRE_TOOL("openssl");
  TestPki pki(tmp / "pki");
  ASSERT_TRUE(pki.ok) << pki.error;
  MirrorServer tls(tree->root, tmp / "tls-state", pki.server_cert, pki.server_key);
  o.ca_cert = tmp / "garbage.pem";
  write_file(o.ca_cert, "this is not a certificate\n");
  msg = error_of([&] { fetch::resolve(query_on("3.22", {tls.url()}), o); }, Errc::usage);
  EXPECT_TRUE(contains(msg, "--ca-cert " + o.ca_cert.string() + " is not a PEM CA certificate")) << msg;
  EXPECT_FALSE(contains(msg, "pass its CA certificate with --ca-cert")) << msg;
}

// ---- 7. Mirror values ----

TEST_F(FetchDefects, MirrorValuesAreValidatedBeforeAnyRequest) {
  MirrorServer& s = serve();
  struct Case {
    std::string mirror, says;
  };
  for (const Case& c : std::vector<Case>{{"ftp://example.org/alpine", "unsupported scheme ftp:// in --mirror"},
                                         {"", "empty mirror"},
                                         {"http://", "has no host name"},
                                         {"https:///alpine", "has no host name"},
                                         {"/nonexistent/mirror", "mirror folder /nonexistent/mirror does not exist"},
                                         {"file:///nonexistent/mirror", "/nonexistent/mirror does not exist"}}) {
    std::string msg = error_of([&] { fetch::resolve(query_on("3.22", {c.mirror}), opts()); }, Errc::usage);
    EXPECT_TRUE(contains(msg, c.says)) << c.mirror << ": " << msg;
    EXPECT_FALSE(contains(msg, "an existing branch")) << msg;
    // Also when a good mirror comes first: every mirror is checked before any request.
    msg = error_of([&] { fetch::resolve(query_on("3.22", {s.url(), c.mirror}), opts()); }, Errc::usage);
    EXPECT_TRUE(contains(msg, c.says)) << c.mirror << ": " << msg;
  }
  EXPECT_EQ(s.requests(""), 0);
  // An upper-case scheme is still http.
  std::string upper = s.url();
  upper.replace(0, 4, "HTTP");
  Release r = fetch::resolve(query_on("3.22", {upper}), opts());
  EXPECT_EQ(sha256_of(fetch::fetch_release(r, opts())), sha256_of(tree->latest));
}

TEST_F(FetchDefects, MissingArchOnAnExistingBranchIsSaidSo) {
  MirrorServer& s = serve();
  Query q = query_on("3.22", {s.url()});
  q.arch = "armhf";
  std::string msg = error_of([&] { fetch::resolve(q, opts()); }, Errc::usage);
  EXPECT_TRUE(contains(msg, "Alpine v3.22 has no armhf release on this mirror")) << msg;
  EXPECT_FALSE(contains(msg, "an existing branch")) << msg;
}

TEST_F(FetchDefects, SeveralFailingMirrorsGiveTheSameCodeInAnyOrder) {
  MirrorServer& s = serve();
  Options o = opts();
  o.retries = 0;
  const std::string dead = "http://127.0.0.1:9/alpine";
  // One mirror has no such branch (usage), the other cannot be reached (network).
  std::string a = error_of([&] { fetch::resolve(query_on("3.99", {dead, s.url()}), o); }, Errc::network);
  std::string b = error_of([&] { fetch::resolve(query_on("3.99", {s.url(), dead}), o); }, Errc::network);
  EXPECT_TRUE(contains(a, "no mirror could resolve")) << a;
  EXPECT_TRUE(contains(b, "no mirror could resolve")) << b;
}

// ---- 6. Signature messages ----

class FetchSignatureDefects : public SignedMirrorTest {
 protected:
  fs::path served_asc() const {
    fs::path asc = tree->latest;
    asc += ".asc";
    return asc;
  }
};

TEST_F(FetchSignatureDefects, FailedDownloadSignatureNamesTheTarballAndAscUrlAndLeavesNothing) {
  ASSERT_TRUE(gpg->sign(tree->older, served_asc()));  // over other bytes
  MirrorServer& s = serve();
  Release r = fetch::resolve(query_on("3.22", {s.url()}), signed_opts());
  std::string msg = error_of([&] { fetch::fetch_release(r, signed_opts()); }, Errc::verify);
  EXPECT_TRUE(contains(msg, "signature check failed for " + r.file + " (signature " + r.urls[0] + ".asc)")) << msg;
  EXPECT_FALSE(contains(msg, ".part")) << msg;
  EXPECT_TRUE(contains(msg, "was not cached")) << msg;
  EXPECT_EQ(count_files(cache, ".part"), 0u);
  EXPECT_EQ(count_files(cache, ".validator"), 0u) << "the part's validator is removed with it";
}

TEST_F(FetchSignatureDefects, FailedSignatureOfACacheHitSaysTheEntryStays) {
  ASSERT_TRUE(gpg->sign(tree->older, served_asc()));
  MirrorServer& s = serve();
  Release r = fetch::resolve(query_on("3.22", {s.url()}), opts());
  fs::path p = fetch::fetch_release(r, opts());  // cached without a signature check
  std::string msg = error_of([&] { fetch::fetch_release(r, signed_opts()); }, Errc::verify);
  EXPECT_FALSE(contains(msg, "was not cached")) << msg;
  EXPECT_TRUE(contains(msg, "was not used (it stays in the cache)")) << msg;
  EXPECT_TRUE(fs::exists(p));
}

TEST_F(FetchSignatureDefects, CorruptCachedSignatureIsNamedAndFetchedAgain) {
  ASSERT_TRUE(gpg->sign(tree->latest, served_asc()));
  MirrorServer& s = serve();
  Release r = fetch::resolve(query_on("3.22", {s.url()}), signed_opts());
  fs::path p = fetch::fetch_release(r, signed_opts());
  fs::path cached_asc = p;
  cached_asc += ".asc";
  ASSERT_TRUE(fs::exists(cached_asc));
  write_file(cached_asc, "garbage");

  Options off = signed_opts();
  off.offline = true;
  std::string msg = error_of([&] { fetch::fetch_release(r, off); }, Errc::verify);
  EXPECT_TRUE(contains(msg, cached_asc.string())) << msg;

  EXPECT_EQ(fetch::fetch_release(r, signed_opts()), p);
  EXPECT_EQ(s.requests(".asc"), 2) << "fetched once more from the mirror";
  EXPECT_EQ(read_file(cached_asc), read_file(served_asc()));
  auto w = said("warning", cached_asc.string());
  ASSERT_EQ(w.size(), 1u) << said_all();
}

// ---- 8, 9. Prune ----

// A hand-made cache entry (the layout of fetch/src/cache.hpp).
void make_entry(const fs::path& cache, const std::string& file, const std::string& version, const std::string& branch,
                char seed, std::int64_t fetched) {
  const std::string sha(64, seed);
  fs::path dir = cache / "tarballs" / sha;
  fs::create_directories(dir);
  fs::create_directories(cache / "partial");
  write_file(dir / file, std::string(100, seed));
  write_file(dir / "info", "file=" + file + "\nversion=" + version + "\narch=aarch64\nbranch=" + branch +
                               "\nsize=100\nsha256=" + sha + "\nprovenance=index\nfetched=" + std::to_string(fetched) +
                               "\n");
}

TEST(FetchPrune, KeepsVersionsNotEntriesAndEdgeApart) {
  TempDir tmp;
  fs::path cache = tmp / "cache";
  // 3.22.2 twice (re-uploaded: another digest), 3.22.1, and an edge snapshot.
  make_entry(cache, "alpine-rpi-3.22.2-aarch64.tar.gz", "3.22.2", "v3.22", 'a', 100);
  make_entry(cache, "alpine-rpi-3.22.2-aarch64.tar.gz", "3.22.2", "v3.22", 'b', 200);
  make_entry(cache, "alpine-rpi-3.22.1-aarch64.tar.gz", "3.22.1", "v3.22", 'c', 50);
  make_entry(cache, "alpine-rpi-20250612-aarch64.tar.gz", "20250612", "edge", 'd', 300);
  ASSERT_EQ(fetch::list_cache(cache).size(), 4u);
  EXPECT_TRUE(fetch::prune_cache(cache, 2).empty()) << "two stable versions and one edge: nothing to prune";
  auto removed = fetch::prune_cache(cache, 1);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].version, "3.22.1");
  EXPECT_EQ(fetch::list_cache(cache).size(), 3u);
}

TEST(FetchPrune, ReportsPartialsAndRemovesStaleLocksButKeepsALockedPartial) {
  TempDir tmp;
  fs::path cache = tmp / "cache";
  fs::path partial = cache / "partial";
  fs::create_directories(partial);
  const std::string a(64, 'a'), b(64, 'b'), c(64, 'c');
  write_file(partial / (a + "-x.tar.gz.part"), std::string(1000, 'x'));
  write_file(partial / (a + "-x.tar.gz.part.validator"), "http://h/x\n\"etag\"\n");
  write_file(partial / (a + ".lock"), "");
  write_file(partial / (b + ".lock"), "");  // a finished fetch's lock
  write_file(partial / (c + "-y.tar.gz.part"), std::string(500, 'y'));
  write_file(partial / (c + ".lock"), "");
  // Someone is downloading c right now.
  int fd = ::open((partial / (c + ".lock")).c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);

  fetch::PartialSummary before = fetch::partial_downloads(cache);
  EXPECT_EQ(before.count, 2u);
  fetch::PartialSummary gone;
  fetch::prune_cache(cache, 2, &gone);
  ::close(fd);
  EXPECT_EQ(gone.count, 1u);
  EXPECT_EQ(gone.bytes, 1000u + std::string("http://h/x\n\"etag\"\n").size());
  EXPECT_FALSE(fs::exists(partial / (a + "-x.tar.gz.part")));
  EXPECT_FALSE(fs::exists(partial / (a + "-x.tar.gz.part.validator")));
  EXPECT_FALSE(fs::exists(partial / (a + ".lock")));
  EXPECT_FALSE(fs::exists(partial / (b + ".lock"))) << "a lock nobody holds is removed";
  EXPECT_TRUE(fs::exists(partial / (c + "-y.tar.gz.part"))) << "a partial being downloaded stays";
  EXPECT_TRUE(fs::exists(partial / (c + ".lock")));
  EXPECT_EQ(fetch::partial_downloads(cache).count, 1u);
}

// A partial not named after a SHA-256 (a stray copy, an older version's) is
// counted by `cache list`, so prune removes it too: no download can hold it
// (a download's part file is <sha256>-<file>.part under its <sha256>.lock).
// A part file whose download runs is still left alone.
TEST(FetchPrune, RemovesPartialsOfAnyNameButKeepsALockedOne) {
  TempDir tmp;
  fs::path cache = tmp / "cache";
  fs::path partial = cache / "partial";
  fs::create_directories(partial);
  const std::string c(64, 'c');
  const std::string validator = "http://h/x\n\"etag\"\n";
  write_file(partial / "deadbeef.part", std::string(1000, 'x'));
  write_file(partial / "deadbeef.part.validator", validator);
  write_file(partial / "alpine-rpi-3.22.0-aarch64.tar.gz.part", std::string(300, 'z'));
  write_file(partial / "gone.part.validator", validator);  // its part file is gone
  write_file(partial / "notes.txt", "not ours");
  write_file(partial / (c + "-y.tar.gz.part"), std::string(500, 'y'));
  write_file(partial / (c + ".lock"), "");
  // Someone is downloading c right now.
  int fd = ::open((partial / (c + ".lock")).c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);

  EXPECT_EQ(fetch::partial_downloads(cache).count, 3u);
  fetch::PartialSummary gone;
  fetch::prune_cache(cache, 2, &gone);
  EXPECT_EQ(gone.count, 2u);
  EXPECT_EQ(gone.bytes, 1000u + validator.size() + 300u);
  EXPECT_FALSE(fs::exists(partial / "deadbeef.part"));
  EXPECT_FALSE(fs::exists(partial / "deadbeef.part.validator"));
  EXPECT_FALSE(fs::exists(partial / "alpine-rpi-3.22.0-aarch64.tar.gz.part"));
  EXPECT_FALSE(fs::exists(partial / "gone.part.validator"));
  EXPECT_TRUE(fs::exists(partial / "notes.txt")) << "only partial downloads and locks are removed";
  EXPECT_TRUE(fs::exists(partial / (c + "-y.tar.gz.part"))) << "a partial being downloaded stays";
  EXPECT_TRUE(fs::exists(partial / (c + ".lock")));
  EXPECT_EQ(fetch::partial_downloads(cache).count, 1u);
  // Nothing is left for a second prune while the download runs; then it is done.
  fetch::prune_cache(cache, 2, &gone);
  EXPECT_EQ(gone.count, 0u);
  EXPECT_TRUE(fs::exists(partial / (c + "-y.tar.gz.part")));
  ::close(fd);
  fetch::prune_cache(cache, 2, &gone);
  EXPECT_EQ(gone.count, 1u);
  EXPECT_EQ(fetch::partial_downloads(cache).count, 0u);
}

namespace {
// `r` downloaded into `cache` by a child process, which the caller kills (a
// Ctrl-C mid-download); its pid, or -1.
pid_t download_in_child(const Release& r, const fs::path& cache) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    try {
      Options o;
      o.cache_dir = cache;
      fetch::fetch_release(r, o);
    } catch (...) {
    }
    ::_exit(0);
  }
  return pid;
}
}  // namespace

// A real download in another process (held mid-way by a trickling mirror):
// prune leaves its part file, and removes it once that process is gone.
TEST_F(FetchDefects, PruneLeavesTheLiveDownloadsPartFile) {
  MirrorServer& s = serve();
  Release r = fetch::resolve(query_on("3.22", {s.url()}), opts());
  s.set_faults(R"([{"path": "tar.gz", "kind": "trickle", "n": 1000, "times": 1}])");
  const fs::path part = cache / "partial" / (r.sha256 + "-" + r.file + ".part");
  const pid_t pid = download_in_child(r, cache);  // killed below, like a Ctrl-C mid-download
  ASSERT_GE(pid, 0);
  bool saw = false;
  for (int i = 0; i < 200 && !saw; ++i) {
    std::error_code ec;
    saw = fs::exists(part, ec) && fs::file_size(part, ec) > 0;
    if (!saw) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  fetch::PartialSummary gone;
  fetch::prune_cache(cache, 2, &gone);
  const bool kept = fs::exists(part);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(saw) << "the download did not start";
  EXPECT_TRUE(kept) << "prune removed the part file of a download in progress";
  EXPECT_EQ(gone.count, 0u);
  fetch::prune_cache(cache, 2, &gone);
  EXPECT_EQ(gone.count, 1u);
  EXPECT_FALSE(fs::exists(part));
}

// ---- 10. The resume validator is on disk while the body still arrives ----

TEST_F(FetchDefects, ResumeValidatorIsSavedBeforeTheDownloadEnds) {
  MirrorServer& s = serve();
  Release r = fetch::resolve(query_on("3.22", {s.url()}), opts());
  s.set_faults(R"([{"path": "tar.gz", "kind": "trickle", "n": 1000, "times": 1}])");
  const fs::path part = cache / "partial" / (r.sha256 + "-" + r.file + ".part");
  fs::path validator = part;
  validator += ".validator";
  const pid_t pid = download_in_child(r, cache);  // killed below, like a Ctrl-C mid-download
  ASSERT_GE(pid, 0);
  bool saw = false;
  for (int i = 0; i < 200 && !saw; ++i) {
    std::error_code ec;
    saw = fs::exists(part, ec) && fs::file_size(part, ec) > 0 && fs::exists(validator, ec);
    if (!saw) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(saw) << "no validator next to the part file while downloading";
  ASSERT_TRUE(fs::exists(part));
  s.set_faults("[]");
  EXPECT_EQ(sha256_of(fetch::fetch_release(r, opts())), r.sha256);
  // (The killed run's request may be logged last: it ends when the server notices.)
  std::vector<LogEntry> resumed;
  for (const auto& e : s.log())
    if (contains(e.path, ".tar.gz") && !e.range.empty()) resumed.push_back(e);
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(resumed[0].status, 206);
  EXPECT_FALSE(resumed[0].if_range.empty()) << "the resume after a kill sends If-Range";
}

// ---- 11. A dead proxy is named ----

TEST_F(FetchDefects, DeadProxyIsNamedWithoutItsPassword) {
  MirrorServer& s = serve();
  ScopedEnv np("no_proxy", nullptr), NP("NO_PROXY", nullptr);
  ScopedEnv proxy("http_proxy", "http://puser:proxy-pw@127.0.0.1:9");
  Options o = opts();
  o.retries = 0;
  std::string msg = error_of([&] { fetch::resolve(query_on("3.22", {s.url()}), o); }, Errc::network);
  EXPECT_TRUE(contains(msg, "via proxy http://puser:***@127.0.0.1:9 from http_proxy")) << msg;
  EXPECT_FALSE(contains(msg, "proxy-pw")) << msg;
}

// ---- 16. A local --tarball needs no network ----

TEST_F(FetchDefects, OfflineLocalTarballIsCopiedIn) {
  Options off = opts();
  off.offline = true;
  fs::path p = fetch::fetch_url(tree->older.string(), sha256_of(tree->older), off);
  EXPECT_EQ(sha256_of(p), sha256_of(tree->older));
  std::string msg =
      error_of([&] { fetch::fetch_url("http://127.0.0.1:9/x.tar.gz", std::string(64, 'a'), off); }, Errc::network);
  EXPECT_TRUE(contains(msg, "offline")) << msg;
}

// ---- 17. Smaller ones ----

TEST_F(FetchDefects, OfflineHintCarriesCacheDirAndMirror) {
  Options off = opts();
  off.offline = true;
  std::string msg =
      error_of([&] { fetch::resolve(query_on("3.22", {"https://mirror.example/alpine"}), off); }, Errc::network);
  EXPECT_TRUE(contains(msg,
                       "rpi-provision fetch --version 3.22 --arch aarch64 --mirror "
                       "https://mirror.example/alpine --cache-dir " +
                           cache.string()))
      << msg;
}

TEST_F(FetchDefects, MissingLocalTarballIsNoSuchFile) {
  std::string msg = error_of([&] { fetch::fetch_url("/nope/x.tar.gz", std::string(64, 'a'), opts()); }, Errc::network);
  EXPECT_TRUE(contains(msg, "/nope/x.tar.gz: no such file")) << msg;
  EXPECT_FALSE(contains(msg, "mirror")) << msg;
  msg = error_of([&] { fetch::fetch_url("ftp://h/x.tar.gz", std::string(64, 'a'), opts()); }, Errc::usage);
  EXPECT_TRUE(contains(msg, "unsupported scheme ftp://")) << msg;
}

TEST(FetchRedact, QueryStringValuesAreHidden) {
  EXPECT_EQ(fetch::redact_urls("https://h/x.tar.gz?X-Amz-Signature=abc&token=s3cret: HTTP 403"),
            "https://h/x.tar.gz?X-Amz-Signature=***&token=***: HTTP 403");
  EXPECT_EQ(fetch::redact_urls("see https://u:pw@h/a?t=1#frag and http://h/b?x"),
            "see https://u:***@h/a?t=***#frag and http://h/b?x");
  EXPECT_EQ(fetch::redact_urls("no query http://h/a, done"), "no query http://h/a, done");
}

}  // namespace
