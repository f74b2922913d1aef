// Regression tests for the fetch module's tester report: silent mirror
// fallback, endless trickles, silent cache repairs, offline provenance, up-front
// option checks, signature messages, mirror validation, prune, the resume
// validator, proxies and CA files, redaction. Each test fails without its fix.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "fetch/fetch.hpp"
#include "mirror_fixture.hpp"
#include "rpi/error.hpp"
#include "rpi/size.hpp"
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

// The command the offline error offers quotes as rpi::shell_word does: a
// relative --cache-dir that starts with '-' would read as an option.
TEST_F(FetchDefects, OfflineHintKeepsALeadingDashCacheDirAWord) {
  struct Cwd {
    fs::path old = fs::current_path();
    ~Cwd() { fs::current_path(old); }
  } back;
  fs::current_path(tmp.path());
  Options off = opts();
  off.offline = true;
  off.cache_dir = "-cache";
  std::string msg =
      error_of([&] { fetch::resolve(query_on("3.22", {"https://mirror.example/alpine"}), off); }, Errc::network);
  EXPECT_TRUE(contains(msg, "--mirror https://mirror.example/alpine --cache-dir ./-cache`")) << msg;
  off.cache_dir = tmp / "my cache";
  msg = error_of([&] { fetch::resolve(query_on("3.22", {"https://mirror.example/alpine"}), off); }, Errc::network);
  EXPECT_TRUE(contains(msg, "--cache-dir '" + (tmp / "my cache").string() + "'`")) << msg;
}

TEST_F(FetchDefects, MissingLocalTarballIsNoSuchFile) {
  std::string msg = error_of([&] { fetch::fetch_url("/nope/x.tar.gz", std::string(64, 'a'), opts()); }, Errc::network);
  EXPECT_TRUE(contains(msg, "/nope/x.tar.gz: no such file")) << msg;
  EXPECT_FALSE(contains(msg, "mirror")) << msg;
  msg = error_of([&] { fetch::fetch_url("ftp://h/x.tar.gz", std::string(64, 'a'), opts()); }, Errc::usage);
  EXPECT_TRUE(contains(msg, "unsupported scheme ftp://")) << msg;
}

// ---- 18. Network errors that say what to do (new-user audit, task H6) ----

// A port on 127.0.0.1 nobody listens on: bound by the kernel's choice, then closed.
int closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 9;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 9;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

// The part file of `r` in `cache`: its size, 0 when there is none.
std::uint64_t part_size(const fs::path& cache, const Release& r) {
  std::error_code ec;
  std::uint64_t n = fs::file_size(cache / "partial" / (r.sha256 + "-" + r.file + ".part"), ec);
  return ec ? 0 : n;
}

// An unreachable mirror while the cache holds what --offline would use: the
// error says "cannot connect … (connection refused)" for people and offers
// --offline, naming the tarball --offline resolves to (the oracle: resolve
// offline). Nothing is offered when --offline would not find one.
TEST_F(FetchDefects, UnreachableMirrorOffersTheCachedTarballWithOffline) {
  const std::string dead = "http://127.0.0.1:" + std::to_string(closed_port());
  Options o = opts();
  o.retries = 0;
  // An empty cache: the plain error, no offer.
  std::string msg = error_of([&] { fetch::resolve(query("latest-stable", dead), o); }, Errc::network);
  EXPECT_TRUE(contains(msg, dead + "/latest-stable/releases/aarch64/latest-releases.yaml: ")) << msg;
  EXPECT_TRUE(
      contains(msg, "cannot connect to 127.0.0.1 port " + dead.substr(dead.rfind(':') + 1) + " (connection refused)"))
      << msg;
  EXPECT_FALSE(contains(msg, "Couldn't connect")) << msg;
  EXPECT_FALSE(contains(msg, "--offline")) << msg;

  {
    MirrorServer& s = serve();
    fetch::fetch_release(fetch::resolve(query("3.22", s.url()), opts()), opts());
  }
  server.reset();
  Options off = o;
  off.offline = true;
  for (std::string v : {"latest-stable", "3.22", "3.22.2"}) {
    const Release cached = fetch::resolve(query(v, dead), off);
    msg = error_of([&] { fetch::resolve(query(v, dead), o); }, Errc::network);
    EXPECT_TRUE(contains(msg, "(connection refused); the cache holds " + cached.file + "; add --offline to use it"))
        << v << ": " << msg;
    EXPECT_EQ(cached.file, tree->latest_file);
  }
  // Several mirrors, all unreachable: once, at the end.
  msg = error_of([&] { fetch::resolve(query_on("3.22", {dead, dead + "/alpine"}), o); }, Errc::network);
  EXPECT_TRUE(contains(msg, "no mirror could resolve")) << msg;
  EXPECT_TRUE(msg.ends_with("; the cache holds " + tree->latest_file + "; add --offline to use it")) << msg;
  // What --offline would not find is not offered: another branch, edge, another arch.
  for (std::string v : {"3.21", "3.22.1", "edge"}) {
    EXPECT_THROW(fetch::resolve(query(v, dead), off), Error) << v;
    msg = error_of([&] { fetch::resolve(query(v, dead), o); }, Errc::network);
    EXPECT_FALSE(contains(msg, "--offline")) << v << ": " << msg;
  }
  Query armv7 = query("3.22", dead);
  armv7.arch = "armv7";
  msg = error_of([&] { fetch::resolve(armv7, o); }, Errc::network);
  EXPECT_FALSE(contains(msg, "--offline")) << msg;
  // Nor a tarball cached by --tarball (--offline does not take it for a release).
  Options pinned = o;
  pinned.cache_dir = tmp / "pinned-cache";
  fetch::fetch_url(tree->older.string(), sha256_of(tree->older), pinned);
  Options pinned_off = pinned;
  pinned_off.offline = true;
  EXPECT_THROW(fetch::resolve(query("3.22.1", dead), pinned_off), Error);
  msg = error_of([&] { fetch::resolve(query("3.22.1", dead), pinned); }, Errc::network);
  EXPECT_FALSE(contains(msg, "--offline")) << msg;
}

TEST_F(FetchDefects, UnknownHostIsSaidForPeople) {
  Options o = opts();
  o.retries = 0;
  std::string msg =
      error_of([&] { fetch::resolve(query("3.22", "http://no-such-host.invalid/alpine"), o); }, Errc::network);
  EXPECT_TRUE(contains(msg, "http://no-such-host.invalid/alpine/v3.22/releases/aarch64/latest-releases.yaml: ")) << msg;
  EXPECT_TRUE(contains(msg, "cannot find the host no-such-host.invalid")) << msg;
}

// latest-stable/ and edge/ are on every Alpine mirror: their index missing
// means the root is wrong (here one folder too deep), and the error says what
// a root is. A vX.Y keeps its branch hint and mentions the root too. Plain
// http, file:// and a directory alike.
TEST_F(FetchDefects, AWrongMirrorRootIsSaidSo) {
  MirrorServer& s = serve();
  fs::create_directories(tmp / "deeper" / "alpine");
  for (const std::string& root : {s.url() + "/alpine", "file://" + (tmp / "deeper").string(), tmp.path().string()}) {
    for (std::string v : {"latest-stable", "edge"}) {
      std::string msg = error_of([&] { fetch::resolve(query(v, root), opts()); }, Errc::usage);
      EXPECT_TRUE(contains(msg, "the mirror " + root + " has no " + v + "/ (" + root + "/" + v +
                                    "/releases/aarch64/latest-releases.yaml was not found): is the mirror root "
                                    "right? It is the folder that holds latest-stable/, edge/, v3.22/, e.g. "
                                    "https://dl-cdn.alpinelinux.org/alpine"))
          << msg;
      EXPECT_FALSE(contains(msg, "an existing branch")) << msg;
    }
    std::string msg = error_of([&] { fetch::resolve(query("3.21", root), opts()); }, Errc::usage);
    EXPECT_TRUE(contains(msg, "is '3.21' an existing branch")) << msg;
    EXPECT_TRUE(contains(msg, "is the mirror root right? It is the folder that holds latest-stable/")) << msg;
  }
  // The right root: a missing branch is still only a branch question there.
  std::string msg = error_of([&] { fetch::resolve(query("3.21", s.url()), opts()); }, Errc::usage);
  EXPECT_TRUE(contains(msg, "is '3.21' an existing branch")) << msg;
}

// The server dies in the middle of the download: the retry finds nobody
// listening. The error says so, how much of the tarball was kept where, and
// that the next run resumes from there (the oracle: the server's cut and the
// part file's size).
TEST_F(FetchDefects, AServerDyingMidDownloadSaysWhatWasKeptForResuming) {
  MirrorServer& s = serve();
  const std::string port = std::to_string(s.port());
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  s.set_faults(R"([{"path": "tar.gz", "kind": "cut", "n": 300000, "times": 1}])");
  Options o = opts();
  o.events = [&](const Event& e) {
    if (e.type == "note" && contains(e.message, "retrying")) server.reset();  // dies before the retry
  };
  std::string msg = error_of([&] { fetch::fetch_release(r, o); }, Errc::network);
  EXPECT_EQ(part_size(cache, r), 300000u);
  EXPECT_TRUE(contains(msg, r.urls.front() + ": cannot connect to 127.0.0.1 port " + port + " (connection refused)"))
      << msg;
  // 300000 bytes = 292.97 KiB
  EXPECT_TRUE(msg.ends_with("; 293.0 KiB kept in " + (cache / "partial").string() + "/; run again to resume")) << msg;

  // No retries, a server that lives on: the cut itself is the error, said for
  // people, and the next run does resume from what was kept.
  MirrorServer again(tree->root, tmp / "state2");
  r = fetch::resolve(query("3.22", again.url()), opts());
  const fs::path other = tmp / "cache2";
  again.set_faults(R"([{"path": "tar.gz", "kind": "cut", "n": 300000, "times": 1}])");
  o = opts();
  o.cache_dir = other;
  o.retries = 0;
  msg = error_of([&] { fetch::fetch_release(r, o); }, Errc::network);
  EXPECT_TRUE(contains(msg, r.urls.front() +
                                ": the connection closed before the whole file had arrived; 293.0 KiB "
                                "kept in " +
                                (other / "partial").string() + "/; run again to resume"))
      << msg;
  o.retries = 3;
  EXPECT_EQ(sha256_of(fetch::fetch_release(r, o)), r.sha256);
  bool resumed = false;
  for (const auto& e : again.log())
    if (contains(e.path, ".tar.gz") && e.range == "bytes=300000-") resumed = true;
  EXPECT_TRUE(resumed) << "the next run did not ask for the rest only";
}

// Nothing received, nothing kept: no promise of a resume. A transient failure
// that outlasts its retries says how many attempts were made.
TEST_F(FetchDefects, AFailureWithNothingKeptPromisesNoResume) {
  MirrorServer& s = serve();
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  s.set_faults(R"([{"path": "tar.gz", "kind": "status", "n": 503, "times": -1}])");
  std::string msg = error_of([&] { fetch::fetch_release(r, opts()); }, Errc::network);
  EXPECT_TRUE(contains(msg, r.urls.front() + ": HTTP 503 (service unavailable); gave up after 4 attempts")) << msg;
  EXPECT_FALSE(contains(msg, "kept in")) << msg;
  EXPECT_EQ(s.requests(".tar.gz"), 4);
  EXPECT_EQ(count_files(cache, ".part"), 0u);
}

// Every retry is said before its wait, with the wait, the attempt and the
// reason; for the index (subject: its URL) and the tarball (its file name).
TEST_F(FetchDefects, RetriesAreSaidWithTheWaitTheAttemptAndTheReason) {
  MirrorServer& s = serve();
  s.set_faults(R"([{"path": "yaml", "kind": "status", "n": 502, "times": 1},)"
               R"( {"path": "tar.gz", "kind": "status", "n": 503, "times": 2}])");
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  EXPECT_EQ(sha256_of(fetch::fetch_release(r, opts())), r.sha256);
  const std::string index = s.url() + "/v3.22/releases/aarch64/latest-releases.yaml";
  std::vector<Event> notes;
  for (const Event& e : events)
    if (e.type == "note" && contains(e.message, "retrying")) notes.push_back(e);
  ASSERT_EQ(notes.size(), 3u) << said_all();
  EXPECT_EQ(notes[0].subject, index);
  EXPECT_EQ(notes[0].message, "retrying in 10 ms (attempt 2 of 4): " + index + ": HTTP 502 (bad gateway)");
  EXPECT_EQ(notes[1].subject, r.file);
  EXPECT_EQ(notes[1].message,
            "retrying in 10 ms (attempt 2 of 4): " + r.urls.front() + ": HTTP 503 (service unavailable)");
  EXPECT_EQ(notes[2].message,
            "retrying in 20 ms (attempt 3 of 4): " + r.urls.front() + ": HTTP 503 (service unavailable)");
  EXPECT_EQ(s.requests(".tar.gz"), 3);
}

// Ctrl-C mid-download: the library's Cancelled says what was kept (the
// oracle: the part file's size); with nothing kept it is a plain Cancelled.
TEST_F(FetchDefects, ACancelledDownloadSaysWhatWasKept) {
  MirrorServer& s = serve();
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  s.set_faults(R"([{"path": "tar.gz", "kind": "trickle", "n": 4096, "times": 1}])");
  std::atomic<bool> cancel{false};
  Options o = opts();
  o.cancel = &cancel;
  o.events = [&](const Event& e) {
    if (e.type == "download" && e.done >= 8192) cancel = true;
  };
  std::string what;
  try {
    fetch::fetch_release(r, o);
    ADD_FAILURE() << "not cancelled";
  } catch (const fetch::DownloadCancelled& e) {
    what = e.what();
  }
  const std::uint64_t kept = part_size(cache, r);
  EXPECT_GE(kept, 8192u);
  EXPECT_EQ(what, "cancelled: " + rpi::format_size(kept) + " of " + r.file + " kept in " +
                      (cache / "partial").string() + "/; run again to resume");

  // Cancelled in the wait before the first retry, nothing received: no promise.
  s.set_faults(R"([{"path": "tar.gz", "kind": "status", "n": 503, "times": 1}])");
  const fs::path fresh = tmp / "fresh";
  o = opts();
  o.cache_dir = fresh;
  o.cancel = &cancel;
  cancel = false;
  o.events = [&](const Event& e) {
    if (e.type == "note" && contains(e.message, "retrying")) cancel = true;
  };
  bool plain = false;
  try {
    fetch::fetch_release(r, o);
  } catch (const fetch::DownloadCancelled& e) {
    ADD_FAILURE() << "nothing was kept, yet: " << e.what();
  } catch (const Cancelled&) {
    plain = true;
  }
  EXPECT_TRUE(plain);
}

// A run waiting for another one's download of the same tarball stops on a
// cancel too (it used to sit in flock until the other run ended).
TEST_F(FetchDefects, ACancelEndsTheWaitForAnotherRunsDownload) {
  MirrorServer& s = serve();
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  fs::create_directories(cache / "partial");
  const fs::path lock = cache / "partial" / (r.sha256 + ".lock");
  int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);  // "another run" holds the entry
  std::atomic<bool> cancel{false};
  Options o = opts();
  o.cancel = &cancel;
  o.events = [&](const Event& e) {
    if (e.type == "note" && contains(e.message, "waiting for another")) cancel = true;
  };
  auto outcome = std::async(std::launch::async, [&]() -> std::string {
    try {
      fetch::fetch_release(r, o);
      return "fetched";
    } catch (const Cancelled&) {
      return "cancelled";
    } catch (const std::exception& e) {
      return e.what();
    }
  });
  // Not a timing check: a guard so that a wait that ignores the cancel fails
  // the test instead of hanging it (the lock is released either way).
  const bool ended = outcome.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  ::close(fd);
  EXPECT_TRUE(ended) << "the cancel did not end the wait for the lock";
  EXPECT_EQ(outcome.get(), "cancelled");
  EXPECT_EQ(s.requests(".tar.gz"), 0);
}

TEST(FetchRedact, QueryStringValuesAreHidden) {
  EXPECT_EQ(fetch::redact_urls("https://h/x.tar.gz?X-Amz-Signature=abc&token=s3cret: HTTP 403"),
            "https://h/x.tar.gz?X-Amz-Signature=***&token=***: HTTP 403");
  EXPECT_EQ(fetch::redact_urls("see https://u:pw@h/a?t=1#frag and http://h/b?x"),
            "see https://u:***@h/a?t=***#frag and http://h/b?x");
  EXPECT_EQ(fetch::redact_urls("no query http://h/a, done"), "no query http://h/a, done");
}

}  // namespace
