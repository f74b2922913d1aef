// Hostile mirrors (issue #7): an index naming another file than the one served,
// an index file name that is a path, endless responses, redirects that leave
// https. Every case: one error naming the URL, the right Errc, nothing in the
// cache (no .part promoted, none left behind) and no hang. Oracles: sha256sum,
// the mirror's own request log, and a forked child with a deadline for the
// cases that could hang.
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <memory>

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

// How a call run by within() ended.
struct Outcome {
  bool finished = false;  // false: still running at the deadline, killed
  std::string code;       // errc_name of the rpi::Error, "ok", or "exception"
  std::string message;    // its what(), or the call's result
};

// Runs `f` (returning a string) in a forked child, so that a hang fails the
// test instead of hanging it: the child reports through a pipe and is killed
// with SIGKILL after `seconds`. The child never returns into the test (no
// destructor of the parent's temp folders or servers runs there).
template <class F>
Outcome within(int seconds, F&& f) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::close(fds[0]);
    std::string report;
    try {
      report = "ok\n" + f();
    } catch (const Error& e) {
      report = std::string(errc_name(e.code())) + "\n" + e.what();
    } catch (const std::exception& e) {
      report = std::string("exception\n") + e.what();
    }
    for (std::size_t done = 0; done < report.size();) {
      ssize_t n = ::write(fds[1], report.data() + done, report.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  Outcome out;
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) {
      out.finished = true;  // EOF: the child wrote its report and exited
      break;
    }
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  if (!out.finished) ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  out.code = text.substr(0, text.find('\n'));
  out.message = text.find('\n') == std::string::npos ? "" : text.substr(text.find('\n') + 1);
  return out;
}

class FetchHostile : public MirrorTest {
 protected:
  void SetUp() override {
    MirrorTest::SetUp();
    if (IsSkipped()) return;
    original_index = read_file(index());
  }
  fs::path index() const { return tree->root / "v3.22/releases/aarch64/latest-releases.yaml"; }
  std::string index_url(const MirrorServer& s) const {
    return s.url() + "/v3.22/releases/aarch64/latest-releases.yaml";
  }
  // The v3.22 index with its alpine-rpi tarball entry's `file:` set to `yaml_value`
  // (size and digests still those of the 3.22.2 tarball).
  void index_names(const std::string& yaml_value) {
    std::string y = original_index;
    const std::string from = "file: " + tree->latest_file;
    std::size_t at = y.find(from);
    ASSERT_NE(at, std::string::npos) << y;
    y.replace(at, from.size(), "file: " + yaml_value);
    write_file(index(), y);
  }
  // Serves `bytes` as the 3.22.2 tarball. The tree's tarballs are hard links
  // to the shared fixture cache: unlink first, never write through the link.
  void serve_as_latest(const std::string& bytes) {
    fs::remove(tree->latest);
    write_file(tree->latest, bytes);
  }
  // Nothing verified, nothing half-downloaded, no tarball anywhere in the cache.
  void expect_cache_empty() {
    EXPECT_TRUE(fetch::list_cache(cache).empty());
    EXPECT_EQ(count_files(cache, ".part"), 0u) << "a part file was left behind";
    EXPECT_EQ(count_files(cache, ".tar.gz"), 0u) << "a tarball reached the cache";
  }

  std::string original_index;
};

// ---- An index that names another file than the one served ----

TEST_F(FetchHostile, IndexNamingAFileTheMirrorLacksIsANotFound) {
  const std::string missing = "alpine-rpi-3.22.3-aarch64.tar.gz";
  index_names(missing);
  MirrorServer s(tree->root, tmp / "state");
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  ASSERT_EQ(r.file, missing);
  ASSERT_EQ(r.urls.size(), 1u);
  std::string msg = error_of([&] { fetch::fetch_release(r, opts()); }, Errc::network);
  EXPECT_TRUE(contains(msg, s.url() + "/v3.22/releases/aarch64/" + missing)) << msg;
  EXPECT_TRUE(contains(msg, "404")) << msg;
  EXPECT_EQ(s.requests(missing), 1) << "a 404 is not retried";
  expect_cache_empty();
}

TEST_F(FetchHostile, AnotherFileOfTheSameSizeIsADigestMismatch) {
  std::string other = read_file(tree->latest);
  for (char& c : other) c = static_cast<char>(c ^ 0x5a);
  MirrorServer s(tree->root, tmp / "state");
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  serve_as_latest(other);  // after resolving: the index keeps the old digests
  const std::string got = sha256_of(tree->latest);
  ASSERT_NE(got, r.sha256);
  std::string msg = error_of([&] { fetch::fetch_release(r, opts()); }, Errc::verify);
  EXPECT_TRUE(contains(msg, r.urls[0])) << msg;
  EXPECT_TRUE(contains(msg, "SHA-256 mismatch: expected " + r.sha256 + ", got " + got)) << msg;
  EXPECT_TRUE(contains(msg, "deleted")) << msg;
  expect_cache_empty();
}

TEST_F(FetchHostile, AFileLongerThanTheIndexSaysIsCutAndDiscarded) {
  MirrorServer s(tree->root, tmp / "state");
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  serve_as_latest(read_file(tree->latest) + std::string(1 << 20, 'x'));
  std::string msg = error_of([&] { fetch::fetch_release(r, opts()); }, Errc::verify);
  EXPECT_TRUE(contains(msg, r.urls[0])) << msg;
  EXPECT_TRUE(contains(msg, "more than the expected " + std::to_string(r.size) + " bytes")) << msg;
  // Not retried (more bytes will not come out right), and what did arrive is
  // not kept to be resumed later.
  EXPECT_EQ(s.requests(".tar.gz"), 1);
  expect_cache_empty();
}

TEST_F(FetchHostile, AFileShorterThanTheIndexSaysFailsWithoutHanging) {
  MirrorServer s(tree->root, tmp / "state");
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  const std::uint64_t served = fs::file_size(tree->older);
  serve_as_latest(read_file(tree->older));  // the 3.22.1 tarball under the 3.22.2 name
  Outcome out = within(30, [&] { return fetch::fetch_release(r, opts()).string(); });
  ASSERT_TRUE(out.finished) << "fetch_release still running after 30 s";
  EXPECT_NE(out.code, "ok") << out.message;
  EXPECT_TRUE(contains(out.message, r.urls[0])) << out.message;
  EXPECT_TRUE(contains(out.message, std::to_string(served)) && contains(out.message, std::to_string(r.size)))
      << "says expected vs got: " << out.message;
  expect_cache_empty();
}

// ---- An index `file:` that is not a plain file name ----

TEST_F(FetchHostile, IndexFileNameThatIsAPathIsRefusedBeforeAnyDownload) {
  // Each would be a usable file on the mirror: refusing must not depend on a 404.
  fs::path releases = tree->root / "v3.22/releases/aarch64";
  fs::create_directories(releases / "sub");
  fs::copy_file(tree->latest, releases / "sub/x.tar.gz");
  fs::copy_file(tree->latest, tree->root / "v3.22/evil.tar.gz");
  MirrorServer s(tree->root, tmp / "state");
  // YAML value → how the error must show it.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"../../evil.tar.gz", "../../evil.tar.gz"},
      {"/abs.tar.gz", "/abs.tar.gz"},
      {"sub/x.tar.gz", "sub/x.tar.gz"},
      {"..tar.gz", "..tar.gz"},
      {"'..%2F..%2Fevil.tar.gz'", "..%2F..%2Fevil.tar.gz"},
      {"'x?y=../z.tar.gz'", "x?y=../z.tar.gz"},
      {"\"x\\e[2Jy.tar.gz\"", "x\\x1b[2Jy.tar.gz"},  // a terminal escape: shown escaped
  };
  for (const auto& [yaml, shown] : cases) {
    SCOPED_TRACE(yaml);
    index_names(yaml);
    std::string msg = error_of([&] { fetch::resolve(query("3.22", s.url()), opts()); }, Errc::input);
    EXPECT_TRUE(contains(msg, index_url(s))) << msg;
    EXPECT_TRUE(contains(msg, "'" + shown + "' is not a plain file name")) << msg;
    EXPECT_TRUE(contains(msg, "--mirror")) << "says what to do: " << msg;
    EXPECT_FALSE(contains(msg, "\x1b")) << "raw control character in the message";
  }
  EXPECT_EQ(s.requests(".tar.gz"), 0) << "nothing may be downloaded";
  EXPECT_FALSE(fs::exists(tmp / "evil.tar.gz"));
  EXPECT_FALSE(fs::exists(cache / "evil.tar.gz"));
  expect_cache_empty();

  // A Release made by hand (the library API) is held to the same rule.
  write_file(index(), original_index);
  Release r = fetch::resolve(query("3.22", "file://" + tree->root.string()), opts());
  for (std::string bad : {"..", ".", "../x.tar.gz", "a\nb.tar.gz"}) {
    r.file = bad;
    std::string msg = error_of([&] { fetch::fetch_release(r, opts()); }, Errc::usage);
    EXPECT_TRUE(contains(msg, "plain file name")) << msg;
  }
  expect_cache_empty();
}

// ---- Endless responses ----

TEST_F(FetchHostile, EndlessTarballStopsAtTheIndexSize) {
  MirrorServer s(tree->root, tmp / "state");
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  s.set_faults(R"([{"path": "tar.gz", "kind": "endless", "times": -1}])");
  Outcome out = within(30, [&] { return fetch::fetch_release(r, opts()).string(); });
  ASSERT_TRUE(out.finished) << "the download of an endless body did not stop within 30 s";
  EXPECT_EQ(out.code, "verify") << out.message;
  EXPECT_TRUE(contains(out.message, r.urls[0])) << out.message;
  EXPECT_TRUE(contains(out.message, "more than the expected " + std::to_string(r.size) + " bytes")) << out.message;
  // The server's handler ended (the client hung up) and logged it; not retried.
  EXPECT_EQ(s.requests(".tar.gz"), 1);
  expect_cache_empty();
}

TEST_F(FetchHostile, EndlessIndexAndDigestFilesHitTheirByteCaps) {
  MirrorServer s(tree->root, tmp / "state");
  s.set_faults(R"([{"path": "latest-releases.yaml", "kind": "endless", "times": -1}])");
  Outcome out = within(30, [&] { return fetch::resolve(query("3.22", s.url()), opts()).file; });
  ASSERT_TRUE(out.finished) << "reading an endless index did not stop within 30 s";
  EXPECT_EQ(out.code, "input") << out.message;
  EXPECT_TRUE(contains(out.message, index_url(s) + ": larger than 4 MiB")) << out.message;
  // A .sha256 companion (exact versions the index does not list) has a 4 KiB cap.
  s.set_faults(R"([{"path": ".sha256", "kind": "endless", "times": -1}])");
  out = within(30, [&] { return fetch::resolve(query("3.22.1", s.url()), opts()).file; });
  ASSERT_TRUE(out.finished) << "reading an endless .sha256 did not stop within 30 s";
  EXPECT_EQ(out.code, "input") << out.message;
  EXPECT_TRUE(contains(out.message, tree->older_file + ".sha256: larger than")) << out.message;
  expect_cache_empty();
}

TEST_F(FetchHostile, EndlessTarballOfUnknownSizeIsBounded) {
  MirrorServer s(tree->root, tmp / "state");
  s.set_faults(R"([{"path": "tar.gz", "kind": "endless", "times": -1}])");
  const std::string url = s.url() + "/v3.22/releases/aarch64/" + tree->latest_file;
  Outcome out = within(30, [&] {
    // A guard for this test only: the child may not write more than 256 MiB.
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit lim{256u << 20, 256u << 20};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    Options o = opts();
    o.max_unknown_size = 32u << 20;  // the default (1 GiB) would take long
    return fetch::fetch_url(url, sha256_of(tree->latest), o).string();
  });
  ASSERT_TRUE(out.finished) << "the download of an endless body did not stop within 30 s";
  EXPECT_NE(out.code, "ok") << out.message;
  EXPECT_TRUE(contains(out.message, url)) << out.message;
  EXPECT_FALSE(contains(out.message, "File too large")) << "stopped by the test's guard, not by fetch: " << out.message;
  expect_cache_empty();
}

// ---- Redirects ----

TEST_F(FetchHostile, HttpsToHttpRedirectIsRefused) {
  RPI_REQUIRE_TOOL("openssl");
  TestPki pki(tmp / "pki");
  ASSERT_TRUE(pki.ok) << pki.error;
  MirrorServer https(tree->root, tmp / "tls-state", pki.server_cert, pki.server_key);
  MirrorServer plain(tree->root, tmp / "plain-state");
  Options o = opts();
  o.ca_cert = pki.ca_cert;
  Release r = fetch::resolve(query("3.22", https.url()), o);
  const std::string to = plain.url() + "/v3.22/releases/aarch64/" + tree->latest_file;
  https.set_faults(R"([{"path": "tar.gz", "kind": "redirect", "n": 302, "to": ")" + to + R"(", "times": -1}])");
  std::string msg = error_of([&] { fetch::fetch_release(r, o); }, Errc::network);
  EXPECT_TRUE(contains(msg, r.urls[0])) << msg;
  // Says that a redirect was refused, where it pointed, and why.
  EXPECT_TRUE(contains(msg, "redirect")) << msg;
  EXPECT_TRUE(contains(msg, to)) << msg;
  EXPECT_TRUE(contains(msg, "drop TLS")) << msg;
  EXPECT_EQ(https.requests(".tar.gz"), 1) << "a refused redirect is not retried";
  EXPECT_EQ(plain.requests(".tar.gz"), 0) << "a plain http request was made";
  expect_cache_empty();
}

TEST_F(FetchHostile, HttpsRedirectToAnotherHttpsServerIsFollowed) {
  RPI_REQUIRE_TOOL("openssl");
  TestPki pki(tmp / "pki");
  ASSERT_TRUE(pki.ok) << pki.error;
  MirrorServer first(tree->root, tmp / "tls-state", pki.server_cert, pki.server_key);
  MirrorServer second(tree->root, tmp / "tls-state-2", pki.server_cert, pki.server_key);
  ASSERT_NE(first.port(), second.port());
  Options o = opts();
  o.ca_cert = pki.ca_cert;
  Release r = fetch::resolve(query("3.22", first.url()), o);
  first.set_faults(R"([{"path": "tar.gz", "kind": "redirect", "n": 302, "to": ")" + second.url() +
                   "/v3.22/releases/aarch64/" + tree->latest_file + R"(", "times": -1}])");
  fs::path p = fetch::fetch_release(r, o);
  EXPECT_EQ(sha256_of(p), sha256_of(tree->latest));
  auto log = first.log();
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(log.back().status, 302);
  EXPECT_EQ(second.requests(".tar.gz"), 1);
  ASSERT_EQ(fetch::list_cache(cache).size(), 1u);
  EXPECT_EQ(count_files(cache, ".part"), 0u);
}

TEST_F(FetchHostile, RedirectLoopIsAClearError) {
  MirrorServer s(tree->root, tmp / "state");
  Release r = fetch::resolve(query("3.22", s.url()), opts());
  s.set_faults(R"([{"path": "tar.gz", "kind": "redirect", "n": 301, "to": ")" + r.urls[0] + R"(", "times": -1}])");
  Outcome out = within(30, [&] { return fetch::fetch_release(r, opts()).string(); });
  ASSERT_TRUE(out.finished) << "a redirect loop did not end within 30 s";
  EXPECT_EQ(out.code, "network") << out.message;
  EXPECT_TRUE(contains(out.message, r.urls[0])) << out.message;
  EXPECT_TRUE(contains(out.message, "redirect")) << out.message;
  EXPECT_LE(s.requests(".tar.gz"), 6) << "libcurl follows at most 5 redirects, and a loop is not retried";
  expect_cache_empty();
}

}  // namespace

// ---- Credentials in a mirror URL ----

TEST(FetchRedact, PasswordsInUrlsAreHidden) {
  EXPECT_EQ(fetch::redact_urls("https://user:s3cret@host/x: HTTP 404"), "https://user:***@host/x: HTTP 404");
  EXPECT_EQ(fetch::redact_urls("a http://tok@h:8080/p and file:///x@y"), "a http://***@h:8080/p and file:///x@y");
  EXPECT_EQ(fetch::redact_urls("http://u:p@a/ then https://v:q@b?x"), "http://u:***@a/ then https://v:***@b?x");
  EXPECT_EQ(fetch::redact_urls("no urls here, mail me@host"), "no urls here, mail me@host");
  EXPECT_EQ(fetch::redact_urls("http://h/a@b"), "http://h/a@b") << "an @ in the path is not a credential";
}

TEST_F(FetchHostile, MirrorPasswordNeverAppearsInErrorsNotesOrTheCache) {
  MirrorServer s(tree->root, tmp / "state");
  std::string mirror = s.url();
  mirror.insert(mirror.find("://") + 3, "mirror-user:s3cret-pw@");
  std::vector<std::string> said;
  Options o = opts();
  o.events = [&](const Event& e) { said.push_back(e.subject + " " + e.message); };
  // A retried 503 (notes), then a 404 (the error).
  s.set_faults(R"([{"path": "tar.gz", "kind": "status", "n": 503, "times": 1},
                   {"path": "tar.gz", "kind": "status", "n": 404, "times": -1}])");
  Release r = fetch::resolve(query("3.22", mirror), o);
  std::string msg = error_of([&] { fetch::fetch_release(r, o); }, Errc::network);
  EXPECT_FALSE(contains(msg, "s3cret")) << msg;
  EXPECT_TRUE(contains(msg, "mirror-user:***@")) << msg;
  ASSERT_FALSE(said.empty());
  for (const auto& line : said) EXPECT_FALSE(contains(line, "s3cret")) << line;
  // Once it works, the cache's record of where it came from has no password either.
  s.set_faults("[]");
  fs::path got = fetch::fetch_release(r, o);
  const auto entries = fetch::list_cache(cache);
  ASSERT_EQ(entries.size(), 1u);
  ASSERT_EQ(entries[0].urls.size(), 1u);
  EXPECT_FALSE(contains(entries[0].urls[0], "s3cret")) << entries[0].urls[0];
  EXPECT_TRUE(contains(entries[0].urls[0], "mirror-user:***@")) << entries[0].urls[0];
  std::string info = read_file(got.parent_path() / "info");
  EXPECT_FALSE(contains(info, "s3cret")) << info;
}
