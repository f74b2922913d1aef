// The fetch library against a loopback mirror with faults. Oracles: sha256sum /
// sha512sum for digests, the server's own request log for what went over the
// wire, gpg and openssl for the keys and certificates.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
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

std::string sha512_of(const fs::path& p) {
  CommandResult r = run({"sha512sum", p.string()});
  return r.out.substr(0, r.out.find(' '));
}

using FetchTest = MirrorTest;

// ---- Resolution ----

TEST(ReleaseIndex, PicksTheTarGzAmongEntriesSharingTheFlavor) {
  const std::string yaml = R"(---
-
  title: "Raspberry Pi Disk Image"
  flavor: alpine-rpi
  file: alpine-rpi-3.22.2-aarch64.img.gz
  version: 3.22.2
  arch: aarch64
  branch: v3.22
  size: 10
  sha256: )" + std::string(64, 'a') +
                           R"(
-
  title: "Raspberry Pi"
  desc: |
    multi
    line
  flavor: alpine-rpi
  file: alpine-rpi-3.22.2-aarch64.tar.gz
  version: 3.22.2
  arch: aarch64
  branch: v3.22
  size: 1234
  sha256: )" + std::string(64, 'B') +
                           R"(
  sha512: )" + std::string(128, 'c') +
                           "\n";
  Release r = fetch::parse_release_index(yaml, "idx.yaml");
  EXPECT_EQ(r.file, "alpine-rpi-3.22.2-aarch64.tar.gz");
  EXPECT_EQ(r.size, 1234u);
  EXPECT_EQ(r.sha256, std::string(64, 'b'));
  EXPECT_EQ(r.sha512, std::string(128, 'c'));
  EXPECT_EQ(r.branch, "v3.22");
  EXPECT_EQ(r.version, "3.22.2");
}

TEST(ReleaseIndex, MalformedYamlNamesTheLine) {
  std::string msg = error_of(
      [] { fetch::parse_release_index("---\n- flavor: alpine-rpi\n  file: [unclosed\n", "idx.yaml"); }, Errc::input);
  EXPECT_TRUE(contains(msg, "idx.yaml:")) << msg;
  EXPECT_TRUE(contains(msg, "malformed YAML")) << msg;
}

TEST(ReleaseIndex, NoRpiTarballListsWhatIsOffered) {
  std::string msg = error_of(
      [] {
        fetch::parse_release_index(
            "- flavor: alpine-rpi\n  file: alpine-rpi-3.22.2-aarch64.img.gz\n"
            "- flavor: alpine-virt\n  file: alpine-virt-3.22.2-aarch64.iso\n",
            "idx.yaml");
      },
      Errc::input);
  EXPECT_TRUE(contains(msg, "no alpine-rpi .tar.gz entry")) << msg;
  EXPECT_TRUE(contains(msg, "alpine-virt-3.22.2-aarch64.iso")) << msg;
}

TEST(Versions, CompareNumerically) {
  EXPECT_GT(fetch::compare_versions("3.22.10", "3.22.9"), 0);
  EXPECT_LT(fetch::compare_versions("3.9.0", "3.22.0"), 0);
  EXPECT_EQ(fetch::compare_versions("3.22.1", "3.22.1"), 0);
}

TEST_F(FetchTest, ResolvesLatestStableBranchAndExact) {
  MirrorServer& s = serve();
  Release latest = fetch::resolve(query("latest-stable", s.url()), opts());
  EXPECT_EQ(latest.version, "3.22.2");
  EXPECT_EQ(latest.file, tree->latest_file);
  EXPECT_EQ(latest.size, fs::file_size(tree->latest));
  EXPECT_EQ(latest.sha256, sha256_of(tree->latest));
  EXPECT_EQ(latest.sha512, sha512_of(tree->latest));
  ASSERT_EQ(latest.urls.size(), 1u);
  EXPECT_EQ(latest.urls[0], s.url() + "/v3.22/releases/aarch64/" + tree->latest_file);

  Release branch = fetch::resolve(query("3.22", s.url()), opts());
  EXPECT_EQ(branch.version, "3.22.2");
  EXPECT_EQ(branch.sha256, latest.sha256);

  // 3.22.1 is not in the index: resolved through its .sha256/.sha512 companions.
  Release exact = fetch::resolve(query("3.22.1", s.url()), opts());
  EXPECT_EQ(exact.file, tree->older_file);
  EXPECT_EQ(exact.sha256, sha256_of(tree->older));
  EXPECT_EQ(exact.sha512, sha512_of(tree->older));
  EXPECT_EQ(s.requests(".sha256"), 1);
}

TEST_F(FetchTest, UnknownVersionsAndArchesAreClearErrors) {
  MirrorServer& s = serve();
  std::string msg = error_of([&] { fetch::resolve(query("3.22.9", s.url()), opts()); }, Errc::usage);
  EXPECT_TRUE(contains(msg, "3.22.9")) << msg;
  EXPECT_TRUE(contains(msg, "offers 3.22.2")) << msg;
  msg = error_of([&] { fetch::resolve(query("3.99", s.url()), opts()); }, Errc::usage);
  EXPECT_TRUE(contains(msg, "v3.99/releases/aarch64/latest-releases.yaml")) << msg;
  Query q = query("3.22", s.url());
  q.arch = "x86_64";
  msg = error_of([&] { fetch::resolve(q, opts()); }, Errc::usage);
  EXPECT_TRUE(contains(msg, "x86_64")) << msg;
  msg = error_of([&] { fetch::resolve(query("three", s.url()), opts()); }, Errc::usage);
}

TEST_F(FetchTest, MalformedIndexOnTheMirror) {
  write_file(tree->root / "v3.22/releases/aarch64/latest-releases.yaml", "---\n- flavor: [\n");
  MirrorServer& s = serve();
  std::string msg = error_of([&] { fetch::resolve(query("3.22", s.url()), opts()); }, Errc::input);
  EXPECT_TRUE(contains(msg, "latest-releases.yaml")) << msg;
  EXPECT_TRUE(contains(msg, "malformed YAML")) << msg;
}

// ---- Download and cache ----

TEST_F(FetchTest, DownloadsVerifiesAndReusesTheCache) {
  MirrorServer& s = serve();
  Options o = opts();
  Release r = fetch::resolve(query("3.22", s.url()), o);
  fs::path p = fetch::fetch_release(r, o);
  EXPECT_TRUE(p.string().starts_with(cache.string()));
  EXPECT_EQ(sha256_of(p), sha256_of(tree->latest));
  EXPECT_EQ(s.requests(tree->latest_file), 1);
  EXPECT_EQ(count_files(cache, ".part"), 0u);
  // The User-Agent names the tool; the index and the tarball came over one connection.
  std::set<int> ports;
  for (const auto& e : s.log()) {
    EXPECT_TRUE(e.user_agent.starts_with("rpi-provision/")) << e.user_agent;
    ports.insert(e.client_port);
  }
  EXPECT_EQ(s.log().size(), 2u);
  EXPECT_EQ(ports.size(), 1u) << "each request opened a connection of its own";
  // Progress events carry done/total and reach the end.
  bool saw_end = false;
  for (const auto& e : events)
    if (e.type == "download" && e.total == r.size && e.done == r.size) saw_end = true;
  EXPECT_TRUE(saw_end);

  fs::path again = fetch::fetch_release(r, o);
  EXPECT_EQ(again, p);
  EXPECT_EQ(s.requests(tree->latest_file), 1) << "a cache hit must not download";

  // A damaged cache entry is noticed (size+sha256 re-checked) and replaced.
  {
    std::string bytes = read_file(p);
    bytes[1000] ^= 1;
    write_file(p, bytes);
  }
  fs::path fixed = fetch::fetch_release(r, o);
  EXPECT_EQ(sha256_of(fixed), r.sha256);
  EXPECT_EQ(s.requests(tree->latest_file), 2);

  auto listed = fetch::list_cache(cache);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].version, "3.22.2");
  EXPECT_EQ(listed[0].sha256, r.sha256);
}

TEST_F(FetchTest, ResumeAfterACutFetchesOnlyTheRest) {
  MirrorServer& s = serve();
  const std::uint64_t size = fs::file_size(tree->latest);
  const std::uint64_t cut = size / 2;
  s.set_faults(R"([{"path": "tar.gz", "kind": "cut", "n": )" + std::to_string(cut) + R"(, "times": 1}])");
  Options o = opts();
  o.retries = 0;  // the first run fails and leaves its part file
  Release r = fetch::resolve(query("3.22", s.url()), o);
  std::string msg = error_of([&] { fetch::fetch_release(r, o); }, Errc::network);
  EXPECT_EQ(count_files(cache, ".part"), 1u);
  EXPECT_TRUE(fetch::list_cache(cache).empty()) << "nothing cached before verification";

  fs::path p = fetch::fetch_release(r, opts());  // a second run resumes
  EXPECT_EQ(sha256_of(p), r.sha256);
  auto log = s.log();
  std::vector<LogEntry> tar;
  for (const auto& e : log)
    if (contains(e.path, ".tar.gz")) tar.push_back(e);
  ASSERT_EQ(tar.size(), 2u);
  EXPECT_EQ(tar[0].sent, cut);
  EXPECT_EQ(tar[1].range, "bytes=" + std::to_string(cut) + "-");
  EXPECT_EQ(tar[1].status, 206);
  EXPECT_FALSE(tar[1].if_range.empty()) << "resume must send If-Range";
  EXPECT_EQ(s.bytes_sent(".tar.gz"), size) << "only the missing bytes are fetched again";
  EXPECT_EQ(count_files(cache, ".part"), 0u);
}

TEST_F(FetchTest, RetriesACutWithinOneRun) {
  MirrorServer& s = serve();
  const std::uint64_t size = fs::file_size(tree->latest);
  s.set_faults(R"([{"path": "tar.gz", "kind": "cut", "n": 100000, "times": 2}])");
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  fs::path p = fetch::fetch_release(r, opts());
  EXPECT_EQ(sha256_of(p), r.sha256);
  EXPECT_EQ(s.requests(".tar.gz"), 3);
  EXPECT_EQ(s.bytes_sent(".tar.gz"), size);
}

TEST_F(FetchTest, CorruptByteIsAnErrorAndNothingIsCached) {
  MirrorServer& s = serve();
  s.set_faults(R"([{"path": "tar.gz", "kind": "flip", "n": 4242, "times": -1}])");
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  std::string msg = error_of([&] { fetch::fetch_release(r, opts()); }, Errc::verify);
  EXPECT_TRUE(contains(msg, "SHA-256 mismatch")) << msg;
  EXPECT_TRUE(contains(msg, "expected " + r.sha256)) << msg;
  EXPECT_TRUE(fetch::list_cache(cache).empty());
  EXPECT_EQ(count_files(cache, ".part"), 0u);
  EXPECT_EQ(count_files(cache, ".tar.gz"), 0u);
}

TEST_F(FetchTest, ServerErrorThenSuccessIsRetried) {
  MirrorServer& s = serve();
  s.set_faults(R"([{"path": "tar.gz", "kind": "status", "n": 500, "times": 2}])");
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  fs::path p = fetch::fetch_release(r, opts());
  EXPECT_EQ(sha256_of(p), r.sha256);
  EXPECT_EQ(s.requests(".tar.gz"), 3);
  bool noted = false;
  for (const auto& e : events)
    if (e.type == "note" && contains(e.message, "retrying")) noted = true;
  EXPECT_TRUE(noted);
}

TEST_F(FetchTest, NotFoundIsNotRetriedAndNamesTheUrl) {
  MirrorServer& s = serve();
  std::string url = s.url() + "/v3.22/releases/aarch64/missing.tar.gz";
  std::string msg = error_of([&] { fetch::fetch_url(url, std::string(64, 'a'), opts()); }, Errc::network);
  EXPECT_TRUE(contains(msg, url)) << msg;
  EXPECT_TRUE(contains(msg, "404")) << msg;
  EXPECT_EQ(s.requests("missing.tar.gz"), 1);
  EXPECT_EQ(count_files(cache, ".part"), 0u) << "no empty part file is left behind";
}

TEST_F(FetchTest, WrongContentLengthRecovers) {
  MirrorServer& s = serve();
  s.set_faults(R"([{"path": "tar.gz", "kind": "badlen", "n": 5000, "times": 1}])");
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  fs::path p = fetch::fetch_release(r, opts());
  EXPECT_EQ(sha256_of(p), r.sha256);
}

TEST_F(FetchTest, IgnoredRangeStartsOverCleanly) {
  MirrorServer& s = serve();
  const std::uint64_t size = fs::file_size(tree->latest);
  s.set_faults(R"([{"path": "tar.gz", "kind": "cut", "n": 300000, "times": 1},)"
               R"( {"path": "tar.gz", "kind": "norange", "times": 1}])");
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  fs::path p = fetch::fetch_release(r, opts());
  EXPECT_EQ(sha256_of(p), r.sha256);
  auto log = s.log();
  ASSERT_GE(log.size(), 3u);
  EXPECT_EQ(s.bytes_sent(".tar.gz"), 300000 + size);
}

TEST_F(FetchTest, ChangedFileOnTheServerIsNotSpliced) {
  MirrorServer& s = serve();
  s.set_faults(R"([{"path": "tar.gz", "kind": "cut", "n": 200000, "times": 1}])");
  Options o = opts();
  o.retries = 0;
  Release r = fetch::resolve(query("3.22", s.url()), o);
  error_of([&] { fetch::fetch_release(r, o); }, Errc::network);
  // The file is replaced by a new upload with the same content but a new
  // modification time → new validator; If-Range makes the server send all of it.
  fs::path f = tree->latest;
  std::string bytes = read_file(f);
  fs::remove(f);
  write_file(f, bytes);
  fs::last_write_time(f, fs::file_time_type::clock::now() + std::chrono::hours(1));
  fs::path p = fetch::fetch_release(r, opts());
  EXPECT_EQ(sha256_of(p), r.sha256);
  auto log = s.log();
  ASSERT_EQ(log.back().status, 200);
}

TEST_F(FetchTest, SlowTrickleTimesOutAndRetries) {
  MirrorServer& s = serve();
  s.set_faults(R"([{"path": "tar.gz", "kind": "trickle", "n": 100, "times": 1}])");
  Options o = opts();
  o.low_speed_limit = 100000;
  o.low_speed_time_s = 1;
  Release r = fetch::resolve(query("3.22", s.url()), o);
  fs::path p = fetch::fetch_release(r, o);
  EXPECT_EQ(sha256_of(p), r.sha256);
  EXPECT_EQ(s.requests(".tar.gz"), 2);
  bool retried = false;
  for (const auto& e : events)
    if (e.type == "note" && contains(e.message, "retrying")) retried = true;
  EXPECT_TRUE(retried);
}

// Ctrl-C in a card run reaches the download through Options::cancel: a
// trickling transfer (which would take hours) stops, the bytes that came stay
// as the part file, and the next run asks only for the rest.
TEST_F(FetchTest, CancelStopsTheDownloadAndKeepsItForResuming) {
  MirrorServer& s = serve();
  s.set_faults(R"([{"path": "tar.gz", "kind": "trickle", "n": 4096, "times": 1}])");
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  std::atomic<bool> cancel{false};
  Options o = opts();
  o.cancel = &cancel;
  o.events = [&](const Event& e) {
    if (e.type == "download" && e.done >= 8192) cancel = true;
  };
  EXPECT_THROW(fetch::fetch_release(r, o), rpi::Cancelled);
  std::uint64_t kept = 0;
  for (const auto& e : fs::directory_iterator(cache / "partial"))
    if (e.path().extension() == ".part") kept = fs::file_size(e.path());
  EXPECT_GE(kept, 8192u) << "the bytes received were not kept";
  fs::path p = fetch::fetch_release(r, opts());
  EXPECT_EQ(sha256_of(p), r.sha256);
  // The trickling response is logged when the server notices the closed
  // connection, which may be after the second one: look for the resumed one.
  bool resumed = false;
  for (const auto& e : s.log())
    if (contains(e.path, ".tar.gz") && e.range == "bytes=" + std::to_string(kept) + "-") {
      resumed = true;
      EXPECT_EQ(e.sent, r.size - kept);
    }
  EXPECT_TRUE(resumed) << "the second run did not ask for the rest only";
}

// A cancel during the wait between two attempts ends the wait (here one hour).
TEST_F(FetchTest, CancelEndsTheWaitBeforeARetry) {
  MirrorServer& s = serve();
  s.set_faults(R"([{"path": "tar.gz", "kind": "status", "n": 503, "times": 5}])");
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  std::atomic<bool> cancel{false};
  Options o = opts();
  o.retry_delay = std::chrono::hours(1);
  o.cancel = &cancel;
  o.events = [&](const Event& e) {
    if (e.type == "note" && contains(e.message, "retrying")) cancel = true;
  };
  EXPECT_THROW(fetch::fetch_release(r, o), rpi::Cancelled);
  EXPECT_EQ(s.requests(".tar.gz"), 1);
}

TEST_F(FetchTest, OfflineHitAndMiss) {
  Options off = opts();
  off.offline = true;
  std::string msg = error_of([&] { fetch::resolve(query("3.22", "http://127.0.0.1:9"), off); }, Errc::network);
  EXPECT_TRUE(contains(msg, "offline")) << msg;
  EXPECT_TRUE(contains(msg, "holds no Alpine 3.22")) << msg;
  EXPECT_TRUE(contains(msg, "nothing")) << msg;

  {
    MirrorServer& s = serve();
    Release r = fetch::resolve(query("3.22", s.url()), opts());
    fetch::fetch_release(r, opts());
  }
  server.reset();  // no network from here on
  for (std::string v : {"3.22", "3.22.2", "latest-stable"}) {
    Release r = fetch::resolve(query(v, "http://127.0.0.1:9"), off);
    EXPECT_EQ(r.version, "3.22.2") << v;
    fs::path p = fetch::fetch_release(r, off);
    EXPECT_EQ(sha256_of(p), sha256_of(tree->latest));
  }
  msg = error_of([&] { fetch::resolve(query("3.22.1", ""), off); }, Errc::network);
  EXPECT_TRUE(contains(msg, "3.22.1")) << msg;
  EXPECT_TRUE(contains(msg, tree->latest_file)) << "says what the cache does hold: " << msg;
  Release unknown;
  unknown.file = "alpine-rpi-3.22.1-aarch64.tar.gz";
  unknown.sha256 = std::string(64, 'e');
  msg = error_of([&] { fetch::fetch_release(unknown, off); }, Errc::network);
  EXPECT_TRUE(contains(msg, "not in the cache")) << msg;
}

TEST_F(FetchTest, FileUrlAndDirectoryMirrors) {
  for (std::string mirror : {"file://" + tree->root.string(), tree->root.string()}) {
    Options o = opts();
    o.cache_dir = tmp / ("cache-" + std::to_string(mirror.size()));
    Release r = fetch::resolve(query("latest-stable", mirror), o);
    EXPECT_EQ(r.version, "3.22.2");
    fs::path p = fetch::fetch_release(r, o);
    EXPECT_EQ(sha256_of(p), sha256_of(tree->latest));
    Release older = fetch::resolve(query("3.22.1", mirror), o);
    EXPECT_EQ(sha256_of(fetch::fetch_release(older, o)), sha256_of(tree->older));
  }
}

// A cache on a disk too small for the tarball fails before anything is
// fetched, names the cache and says what to do; nothing is left in it.
TEST_F(FetchTest, CacheWithoutRoomFailsBeforeDownloading) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs for the cache";
  MirrorServer& s = serve();
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  const fs::path small = tmp / "small";
  fs::create_directories(small);
  const std::string size = "size=" + std::to_string(r.size / 2);
  ASSERT_EQ(::mount("tmpfs", small.c_str(), "tmpfs", 0, size.c_str()), 0) << std::strerror(errno);
  struct Unmount {
    fs::path at;
    ~Unmount() { ::umount2(at.c_str(), MNT_DETACH); }
  } unmount{small};
  for (std::string mirror : {s.url(), tree->root.string()}) {
    Options o = opts();
    o.cache_dir = small / "cache";
    Release here = fetch::resolve(query("3.22", mirror), o);
    std::string msg = error_of([&] { fetch::fetch_release(here, o); }, Errc::io);
    EXPECT_TRUE(contains(msg, "not enough space in " + o.cache_dir.string())) << msg;
    EXPECT_TRUE(contains(msg, "--cache-dir")) << msg;
    EXPECT_TRUE(contains(msg, r.file)) << msg;
    EXPECT_EQ(count_files(o.cache_dir, ".part"), 0u) << mirror;
    EXPECT_TRUE(fetch::list_cache(o.cache_dir).empty()) << mirror;
  }
  EXPECT_EQ(s.requests(".tar.gz"), 0) << "the download started although the tarball cannot fit";
}

// A cache this run cannot write (a read-only mount; another user's cache)
// still serves its intact entries, offline too; anything else is one clear
// error naming the cache, instead of "cannot open <sha>.lock".
TEST_F(FetchTest, ReadOnlyCacheServesItsIntactEntries) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a read-only bind mount of the cache";
  Options o = opts();
  Release r = fetch::resolve(query("3.22", tree->root.string()), o);
  const fs::path cached = fetch::fetch_release(r, o);
  const fs::path ro = tmp / "ro-cache";
  fs::create_directories(ro);
  ASSERT_EQ(::mount(cache.c_str(), ro.c_str(), nullptr, MS_BIND, nullptr), 0) << std::strerror(errno);
  struct Unmount {
    fs::path at;
    ~Unmount() { ::umount2(at.c_str(), MNT_DETACH); }
  } unmount{ro};
  ASSERT_EQ(::mount(nullptr, ro.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr), 0)
      << std::strerror(errno);
  Options ro_opts = opts();
  ro_opts.cache_dir = ro;
  ro_opts.offline = true;
  fs::path p = fetch::fetch_release(fetch::resolve(query("3.22", tree->root.string()), ro_opts), ro_opts);
  EXPECT_EQ(p, ro / fs::relative(cached, cache));
  Release older = fetch::resolve(query("3.22.1", tree->root.string()), opts());
  ro_opts.offline = false;
  std::string msg = error_of([&] { fetch::fetch_release(older, ro_opts); }, Errc::io);
  EXPECT_TRUE(contains(msg, "the cache " + ro.string() + " cannot be written")) << msg;
  EXPECT_TRUE(contains(msg, "--cache-dir")) << msg;
}

TEST_F(FetchTest, MirrorFallback) {
  MirrorServer& s = serve();
  Query q;
  q.version = "3.22";
  q.mirrors = {"http://127.0.0.1:9/alpine", s.url()};  // port 9: nothing listens
  Options o = opts();
  o.retries = 0;
  Release r = fetch::resolve(q, o);
  ASSERT_EQ(r.urls.size(), 2u);
  EXPECT_TRUE(r.urls[0].starts_with(s.url()));
  EXPECT_EQ(sha256_of(fetch::fetch_release(r, o)), r.sha256);
}

TEST_F(FetchTest, FetchUrlWithPinnedDigest) {
  MirrorServer& s = serve();
  std::string url = s.url() + "/v3.22/releases/aarch64/" + tree->latest_file;
  fs::path p = fetch::fetch_url(url, sha256_of(tree->latest), opts());
  EXPECT_EQ(p.filename(), tree->latest_file);
  EXPECT_EQ(sha256_of(p), sha256_of(tree->latest));
  std::string msg = error_of([&] { fetch::fetch_url(url, std::string(64, '0'), opts()); }, Errc::verify);
  EXPECT_TRUE(contains(msg, "SHA-256 mismatch")) << msg;
  error_of([&] { fetch::fetch_url(url, "abc", opts()); }, Errc::usage);
}

TEST_F(FetchTest, PruneKeepsTheNewestPerArch) {
  MirrorServer& s = serve();
  for (std::string v : {"3.22.1", "3.22.2"}) fetch::fetch_release(fetch::resolve(query(v, s.url()), opts()), opts());
  ASSERT_EQ(fetch::list_cache(cache).size(), 2u);
  EXPECT_EQ(fetch::list_cache(cache)[0].version, "3.22.2");
  auto removed = fetch::prune_cache(cache, 1);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].version, "3.22.1");
  EXPECT_FALSE(fs::exists(removed[0].path));
  auto left = fetch::list_cache(cache);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].version, "3.22.2");
}

// ---- HTTPS ----

TEST_F(FetchTest, HttpsWithAPrivateCa) {
  RPI_REQUIRE_TOOL("openssl");
  TestPki pki(tmp / "pki");
  ASSERT_TRUE(pki.ok) << pki.error;
  MirrorServer s(tree->root, tmp / "tls-state", pki.server_cert, pki.server_key);
  ASSERT_TRUE(s.url().starts_with("https://"));
  Options o = opts();
  std::string msg = error_of([&] { fetch::resolve(query("3.22", s.url()), o); }, Errc::network);
  EXPECT_TRUE(contains(msg, "TLS")) << msg;
  EXPECT_TRUE(contains(msg, "--ca-cert")) << msg;
  o.ca_cert = pki.ca_cert;
  Release r = fetch::resolve(query("3.22", s.url()), o);
  EXPECT_EQ(sha256_of(fetch::fetch_release(r, o)), sha256_of(tree->latest));
  // One TLS handshake for the index and the tarball: the connection is reused.
  auto log = s.log();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].client_port, log[1].client_port) << log[0].path << " and " << log[1].path;
}

// ---- Signatures ----

using SignatureTest = SignedMirrorTest;

TEST_F(SignatureTest, GoodSignatureIsAccepted) {
  fs::path asc = tree->latest;
  asc += ".asc";
  ASSERT_TRUE(gpg->sign(tree->latest, asc));
  MirrorServer& s = serve();
  Release r = fetch::resolve(query("3.22", s.url()), signed_opts());
  fs::path p = fetch::fetch_release(r, signed_opts());
  EXPECT_EQ(sha256_of(p), r.sha256);
  EXPECT_EQ(s.requests(".asc"), 1);
  // Only the pinned fingerprint counts: Alpine's (the default) did not sign this.
  Options alpine_only = signed_opts();
  alpine_only.signing_key_fingerprint.clear();
  alpine_only.cache_dir = tmp / "cache2";
  std::string msg = error_of([&] { fetch::fetch_release(r, alpine_only); }, Errc::verify);
  EXPECT_TRUE(contains(msg, fetch::kAlpineSigningKey)) << msg;
  EXPECT_TRUE(fetch::list_cache(tmp / "cache2").empty());
}

// The check runs gpg in a throw-away home; it needs no gpg-agent. One started
// there used to outlive the run (and now and then kept its home in $TMPDIR
// alive): a daemon and a folder left per --verify-signature.
TEST_F(SignatureTest, TheCheckLeavesNoGpgAgentOrFolderBehind) {
  RPI_REQUIRE_TOOL("pgrep");
  fs::path asc = tree->latest;
  asc += ".asc";
  ASSERT_TRUE(gpg->sign(tree->latest, asc));
  MirrorServer& s = serve();
  const fs::path scratch = tmp / "tmpdir";
  fs::create_directories(scratch);
  const char* old = std::getenv("TMPDIR");
  const std::string saved = old ? old : "";
  ::setenv("TMPDIR", scratch.c_str(), 1);  // where the check makes its GnuPG home
  Release r = fetch::resolve(query("3.22", s.url()), signed_opts());
  fs::path p = fetch::fetch_release(r, signed_opts());
  if (old)
    ::setenv("TMPDIR", saved.c_str(), 1);
  else
    ::unsetenv("TMPDIR");
  EXPECT_EQ(sha256_of(p), r.sha256);
  EXPECT_EQ(s.requests(".asc"), 1);
  CommandResult agents = run({"pgrep", "-fa", "gpg-agent --homedir " + scratch.string()});
  EXPECT_EQ(agents.out, "") << "a gpg-agent outlives the check";
  EXPECT_TRUE(fs::is_empty(scratch)) << "the GnuPG home was left in TMPDIR";
}

// gpg may still be running (writing its trustdb) when gpgme hands back the
// result: an unreadable signature ends the operation early. A home removed at
// that moment kept the late file and stayed in $TMPDIR. Many checks, good and
// unreadable, two at a time, must leave nothing.
TEST_F(SignatureTest, ManyChecksAtOnceLeaveNoFolderBehind) {
  fs::path asc = tree->latest;
  asc += ".asc";
  ASSERT_TRUE(gpg->sign(tree->latest, asc));
  const std::string signature = read_file(asc);
  const fs::path scratch = tmp / "tmpdir";
  fs::create_directories(scratch);
  const char* old = std::getenv("TMPDIR");
  const std::string saved = old ? old : "";
  ::setenv("TMPDIR", scratch.c_str(), 1);  // where the check makes its GnuPG home
  std::atomic<int> failed{0}, refused{0};
  auto checks = [&] {
    for (int i = 0; i < 12; ++i) {
      try {
        fetch::verify_detached_signature(tree->latest, signature, gpg->keyring, gpg->fingerprint);
      } catch (const Error&) {
        ++failed;
      }
      try {
        fetch::verify_detached_signature(tree->latest, "garbage", gpg->keyring, gpg->fingerprint);
      } catch (const Error& e) {
        if (e.code() == Errc::verify) ++refused;
      }
    }
  };
  std::thread a(checks), b(checks);
  a.join();
  b.join();
  if (old)
    ::setenv("TMPDIR", saved.c_str(), 1);
  else
    ::unsetenv("TMPDIR");
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(refused.load(), 24);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(scratch)) left.push_back(e.path().filename().string());
  EXPECT_TRUE(left.empty()) << "GnuPG homes left in TMPDIR: " << testing::PrintToString(left);
}

TEST_F(SignatureTest, BadSignatureIsRejected) {
  fs::path asc = tree->latest;
  asc += ".asc";
  ASSERT_TRUE(gpg->sign(tree->older, asc));  // a signature over other bytes
  MirrorServer& s = serve();
  Release r = fetch::resolve(query("3.22", s.url()), signed_opts());
  std::string msg = error_of([&] { fetch::fetch_release(r, signed_opts()); }, Errc::verify);
  EXPECT_TRUE(contains(msg, "signature")) << msg;
  EXPECT_TRUE(fetch::list_cache(cache).empty());
  EXPECT_EQ(count_files(cache, ".part"), 0u);
}

TEST_F(SignatureTest, MissingSignatureIsAnErrorWhenAskedFor) {
  MirrorServer& s = serve();
  Release r = fetch::resolve(query("3.22", s.url()), signed_opts());
  std::string msg = error_of([&] { fetch::fetch_release(r, signed_opts()); }, Errc::verify);
  EXPECT_TRUE(contains(msg, ".asc was not found")) << msg;
  EXPECT_TRUE(fetch::list_cache(cache).empty());
  // Without --verify-signature the same release is fine.
  EXPECT_EQ(sha256_of(fetch::fetch_release(r, opts())), r.sha256);
}

TEST_F(FetchTest, VerifySignatureWithoutAKeyringIsRefusedBeforeAnyWork) {
  MirrorServer& s = serve();
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  fetch::fetch_release(r, opts());  // now a cache hit
  const int served = s.requests("");
  for (bool offline : {false, true}) {
    Options each = opts();
    each.verify_signature = true;  // but no keyring
    each.offline = offline;
    std::string msg = error_of([&] { fetch::fetch_release(r, each); }, Errc::usage);
    EXPECT_TRUE(contains(msg, "--verify-signature needs --keyring")) << msg;
    msg = error_of([&] { fetch::resolve(query("3.22", s.url()), each); }, Errc::usage);
    EXPECT_TRUE(contains(msg, "--verify-signature needs --keyring")) << msg;
  }
  EXPECT_EQ(s.requests(""), served);
}

}  // namespace
