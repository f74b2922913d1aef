// `rpi-provision fetch` and `rpi-provision cache` end to end, through the built
// binary, against the loopback mirror.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <thread>

#include "mirror_fixture.hpp"
#include "rpi/size.hpp"
#include "test_support.hpp"

extern char** environ;

namespace fs = std::filesystem;
using namespace rpi::test;

namespace {

std::string first_line(const std::string& s) {
  return s.substr(0, s.find('\n'));
}

// The CLI against the test mirror: MirrorTest's tree and server, and the cache
// as the command-line argument it is here.
class FetchCli : public MirrorTest {
 protected:
  void SetUp() override {
    MirrorTest::SetUp();
    if (IsSkipped()) return;
    serve();
    cache_dir = cache.string();
  }
  std::string cache_dir;
};

TEST_F(FetchCli, JsonShowsDownloadProgressAndTheResult) {
  CommandResult r =
      cli({"--json", "fetch", "--version", "3.22.2", "--mirror", server->url(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string size = std::to_string(fs::file_size(tree->latest));
  EXPECT_NE(r.out.find("\"type\":\"download\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"done\":" + size + ",\"total\":" + size), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"type\":\"fetch\""), std::string::npos) << r.out;
}

TEST_F(FetchCli, PinnedTarballUrl) {
  std::string url = server->url() + "/v3.22/releases/aarch64/" + tree->older_file;
  CommandResult r = cli({"fetch", "--tarball", url, "--sha256", sha256_of(tree->older), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(sha256_of(first_line(r.out)), sha256_of(tree->older));
  r = cli({"fetch", "--tarball", url, "--sha256", sha256_of(tree->latest), "--cache-dir", cache_dir + "2"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("SHA-256 mismatch"), std::string::npos) << r.err;
  r = cli({"fetch", "--tarball", url, "--cache-dir", cache_dir});
  EXPECT_EQ(r.exit_code, 2);
}

TEST_F(FetchCli, FetchPrintsTheVerifiedCachedPath) {
  CommandResult r =
      cli({"fetch", "--version", "3.22", "--arch", "aarch64", "--mirror", server->url(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  fs::path p = first_line(r.out);
  EXPECT_TRUE(fs::exists(p)) << r.out;
  EXPECT_EQ(sha256_of(p), sha256_of(tree->latest));
  EXPECT_TRUE(p.string().starts_with(cache_dir));

  // --json: one result line with the path and digest; progress as events.
  r = cli({"--json", "fetch", "--version", "3.22", "--mirror", server->url(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"type\":\"fetch\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"sha256\":\"" + sha256_of(tree->latest) + "\""), std::string::npos) << r.out;

  // Offline from the cache, no mirror reachable.
  r = cli({"fetch", "--version", "3.22", "--offline", "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(fs::path(first_line(r.out)), p);
  r = cli({"fetch", "--version", "3.21", "--offline", "--cache-dir", cache_dir});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("offline"), std::string::npos) << r.err;
}

TEST_F(FetchCli, FetchFromTheSpecsAlpineTable) {
  fs::path spec = tmp / "kiosk.toml";
  write_file(spec, "[system]\nhostname = \"kiosk\"\n\n[alpine]\nversion = \"3.22.1\"\narch = \"aarch64\"\nmirror = \"" +
                       server->url() + "\"\n");
  CommandResult r = cli({"fetch", "--spec", spec.string(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(sha256_of(first_line(r.out)), sha256_of(tree->older));

  write_file(spec, "[alpine]\nversion = 3.22\n");
  r = cli({"fetch", "--spec", spec.string(), "--cache-dir", cache_dir});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("kiosk.toml:2:"), std::string::npos) << r.err;

  write_file(spec, "[alpine]\nverison = \"3.22\"\n");
  r = cli({"fetch", "--spec", spec.string(), "--cache-dir", cache_dir});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("verison"), std::string::npos) << r.err;
}

// A spec whose [alpine].tarball is a file here: nothing to download; the file
// is checked as a build would use it (relative to the spec, against its sha256).
TEST_F(FetchCli, ASpecsLocalTarballIsCheckedNotDownloaded) {
  fs::copy_file(tree->older, tmp / "local.tar.gz");
  fs::path spec = tmp / "local.toml";
  write_file(spec, "[alpine]\ntarball = \"local.tar.gz\"\n");
  CommandResult r = cli({"fetch", "--spec", spec.string(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(first_line(r.out), (tmp / "local.tar.gz").string());
  EXPECT_NE(r.err.find("is a local file: nothing to download, and with no sha256 pinned nothing to verify"),
            std::string::npos)
      << r.err;
  // A file:// URL without a digest is the same local file (the spec asks a digest only of http).
  write_file(spec, "[alpine]\ntarball = \"file://" + (tmp / "local.tar.gz").string() + "\"\n");
  r = cli({"fetch", "--spec", spec.string(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(first_line(r.out), (tmp / "local.tar.gz").string());
  // Pinned: copied into the cache, verified (man: --tarball).
  write_file(spec, "[alpine]\ntarball = \"local.tar.gz\"\nsha256 = \"" + sha256_of(tree->older) + "\"\n");
  r = cli({"fetch", "--spec", spec.string(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(first_line(r.out).rfind(cache_dir, 0), 0u) << r.out;
  write_file(spec, "[alpine]\ntarball = \"gone.tar.gz\"\n");
  r = cli({"fetch", "--spec", spec.string(), "--cache-dir", cache_dir});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("[alpine].tarball " + (tmp / "gone.tar.gz").string() + " is not a file"), std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("--sha256"), std::string::npos) << "no flag was given\n" << r.err;
}

TEST_F(FetchCli, UsageErrorsExitTwo) {
  CommandResult r =
      cli({"fetch", "--version", "3.22", "--arch", "riscv64", "--mirror", server->url(), "--cache-dir", cache_dir});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("riscv64"), std::string::npos) << r.err;
  r = cli({"fetch", "--verify-signature", "--mirror", server->url(), "--cache-dir", cache_dir});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--keyring"), std::string::npos) << r.err;
}

// Station mode takes the same download flags: it fetches the tarball before the
// first card, so a missing signature stops it there, with nothing cached.
TEST_F(FetchCli, WatchUsesTheDownloadFlags) {
  fs::path spec = tmp / "station.toml";
  write_file(spec, "[system]\nhostname = \"pi-{n}\"\n\n[alpine]\nversion = \"3.22\"\n");
  // Looks like a key (the up-front check); the missing .asc is what fails.
  fs::path keyring = tmp / "keyring.asc";
  write_file(keyring, "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n-----END PGP PUBLIC KEY BLOCK-----\n");
  CommandResult r = cli({"watch", "--spec", spec.string(), "--mirror", server->url(), "--cache-dir", cache_dir,
                         "--verify-signature", "--keyring", keyring.string(), "--signing-key-fingerprint",
                         std::string(40, 'A'), "--poll", "--count", "1", "--yes"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find(".asc was not found"), std::string::npos) << r.err;
  EXPECT_GE(server->requests(".tar.gz"), 1);
  EXPECT_EQ(run({"sh", "-c", "find '" + cache_dir + "' -name '*.tar.gz' | grep -q ."}).exit_code, 1)
      << "an unverified tarball was cached";
}

TEST_F(FetchCli, TwoConcurrentFetchesShareOneCache) {
  std::string cmd = "'" + cli_path().string() + "' -q fetch --version 3.22 --mirror " + server->url() +
                    " --cache-dir '" + cache_dir + "'";
  CommandResult r = sh("(" + cmd + " > " + (tmp / "a.out").string() + " 2>&1) & (" + cmd + " > " +
                       (tmp / "b.out").string() + " 2>&1) & wait");
  std::string a = read_file(tmp / "a.out"), b = read_file(tmp / "b.out");
  fs::path pa = first_line(a), pb = first_line(b);
  ASSERT_TRUE(fs::exists(pa)) << a;
  EXPECT_EQ(pa, pb) << a << b;
  EXPECT_EQ(sha256_of(pa), sha256_of(tree->latest));
  EXPECT_EQ(server->requests(".tar.gz"), 1) << "the second run waits for the first and reuses its download";
}

TEST_F(FetchCli, CacheListAndPrune) {
  for (std::string v : {"3.22.1", "3.22.2"}) {
    CommandResult r = cli({"-q", "fetch", "--version", v, "--mirror", server->url(), "--cache-dir", cache_dir});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  CommandResult r = cli({"cache", "list", "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("3.22.2"), 0u) << "newest first: " << r.out;
  EXPECT_NE(r.out.find("3.22.1"), std::string::npos) << r.out;

  r = cli({"cache", "prune", "--keep", "1", "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("removed 3.22.1"), std::string::npos) << r.out;
  r = cli({"--json", "cache", "list", "--cache-dir", cache_dir});
  EXPECT_NE(r.out.find("\"version\":\"3.22.2\""), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("3.22.1"), std::string::npos) << r.out;
}

// ---- Tester report: cache/fetch CLI details ----

TEST_F(FetchCli, PruneRefusesANegativeKeep) {
  CommandResult r = cli({"cache", "prune", "--keep", "-1", "--cache-dir", cache_dir});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_EQ(r.out.find("18446744073709551615"), std::string::npos) << r.out;
}

TEST_F(FetchCli, JsonOmitsUnknownVersionAndLowerCasesTheDigest) {
  // A tarball under a name that is no release: no version, no arch.
  fs::path local = tmp / "custom.tar.gz";
  fs::copy_file(tree->older, local);
  std::string hex = sha256_of(tree->older);
  std::string upper = hex;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  CommandResult r = cli({"--json", "fetch", "--tarball", local.string(), "--sha256", upper, "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"sha256\":\"" + hex + "\""), std::string::npos) << r.out;
  r = cli({"--json", "cache", "list", "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"type\":\"cache-entry\""), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\"version\":\"\""), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\"arch\":\"\""), std::string::npos) << r.out;
}

TEST_F(FetchCli, Sha256WithoutTarballIsAUsageError) {
  CommandResult r =
      cli({"fetch", "--sha256", std::string(64, 'a'), "--mirror", server->url(), "--cache-dir", cache_dir});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--sha256"), std::string::npos) << r.err;
  EXPECT_EQ(server->requests(""), 0);
}

// --version and --arch with --tarball would go unused: refused, nothing fetched.
TEST_F(FetchCli, VersionOrArchWithTarballIsAUsageError) {
  const std::string url = server->url() + "/v3.22/releases/aarch64/" + tree->older.filename().string();
  for (const auto& [flag, value] : {std::pair{"--version", "3.21"}, std::pair{"--arch", "armv7"}}) {
    CommandResult r =
        cli({"fetch", "--tarball", url, "--sha256", sha256_of(tree->older), flag, value, "--cache-dir", cache_dir});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_TRUE(contains(r.err, std::string(flag) + " " + value + " has no effect with --tarball")) << r.err;
  }
  EXPECT_EQ(server->requests(""), 0);
}

TEST_F(FetchCli, ListAndPruneTellAboutPartialDownloads) {
  fs::path partial = fs::path(cache_dir) / "partial";
  fs::create_directories(partial);
  write_file(partial / (std::string(64, 'a') + "-alpine-rpi-3.22.2-aarch64.tar.gz.part"), std::string(2048, 'x'));
  CommandResult r = cli({"cache", "list", "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("partial downloads: 1 (2 KiB"), std::string::npos) << r.out;
  r = cli({"cache", "prune", "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("1 partial download(s) (2 KiB)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("2 KiB freed"), std::string::npos) << r.out;
}

// ---- Network errors that say what to do (task H6) ----

// The mirror cannot be reached but the cache holds the release: the error
// says so and names --offline; following that advice works (the oracle).
TEST_F(FetchCli, AnUnreachableMirrorOffersTheCachedTarballWithOffline) {
  CommandResult r = cli({"-q", "fetch", "--mirror", server->url(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string cached = first_line(r.out);
  const std::string dead = server->url();
  server.reset();  // nobody listens on its port now
  r = cli({"fetch", "--mirror", dead, "--cache-dir", cache_dir});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(
      contains(r.err, "rpi-provision: error: " + dead + "/latest-stable/releases/aarch64/latest-releases.yaml: " +
                          "cannot connect to 127.0.0.1 port " + dead.substr(dead.rfind(':') + 1) +
                          " (connection refused); the cache holds " + tree->latest_file + "; add --offline to use it"))
      << r.err;
  r = cli({"fetch", "--mirror", dead, "--cache-dir", cache_dir, "--offline"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(first_line(r.out), cached);
  // An empty cache: nothing to offer.
  r = cli({"fetch", "--mirror", dead, "--cache-dir", cache_dir + "-empty"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_FALSE(contains(r.err, "--offline")) << r.err;
}

TEST_F(FetchCli, AWrongMirrorRootIsAUsageErrorThatSaysWhatARootIs) {
  CommandResult r = cli({"fetch", "--mirror", server->url() + "/alpine", "--cache-dir", cache_dir});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "the mirror " + server->url() + "/alpine has no latest-stable/ (")) << r.err;
  EXPECT_TRUE(contains(r.err,
                       "is the mirror root right? It is the folder that holds latest-stable/, edge/, v3.22/, "
                       "e.g. https://dl-cdn.alpinelinux.org/alpine"))
      << r.err;
}

// A retried failure is said on stderr (not after the fact, not silently), and
// with --json as a note event.
TEST_F(FetchCli, RetriesAreShownOnStderrAndAsJsonNotes) {
  const std::string url = server->url() + "/v3.22/releases/aarch64/" + tree->latest_file;
  server->set_faults(R"([{"path": "tar.gz", "kind": "status", "n": 503, "times": 1}])");
  CommandResult r = cli({"fetch", "--mirror", server->url(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "retrying in 0.5 s (attempt 2 of 5): " + url + ": HTTP 503 (service unavailable)\n"))
      << r.err;
  server->set_faults(R"([{"path": "tar.gz", "kind": "status", "n": 503, "times": 1}])");
  r = cli({"--json", "fetch", "--mirror", server->url(), "--cache-dir", cache_dir + "-json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, R"({"type":"note","subject":")" + tree->latest_file +
                                  R"(","message":"retrying in 0.5 s (attempt 2 of 5): )" + url +
                                  R"j(: HTTP 503 (service unavailable)"})j"))
      << r.out;
  EXPECT_EQ(r.err, "") << "--json keeps stderr quiet";
}

// fetch --spec with --arch (or --version) fetches what the flag says, and says
// that a build from the spec may not use it.
TEST_F(FetchCli, FlagsThatOverrideTheSpecAreSaid) {
  const fs::path spec = tmp / "pi.toml";
  write_file(spec, "[system]\nhostname = \"pi\"\n[alpine]\nversion = \"3.22\"\n");
  CommandResult r = cli({"fetch", "--spec", spec.string(), "--arch", "armv7", "--version", "3.22.1", "--mirror",
                         server->url(), "--cache-dir", cache_dir});
  EXPECT_TRUE(contains(r.err, "--arch armv7 overrides the spec's [alpine] arch (aarch64, the default): a build from " +
                                  spec.string() + " may not use this tarball"))
      << r.err;
  EXPECT_FALSE(contains(r.err, "--version 3.22.1 overrides")) << "3.22.1 is one of the spec's 3.22 releases\n" << r.err;
  r = cli({"fetch", "--spec", spec.string(), "--mirror", server->url(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "overrides")) << r.err;
}

// Runs the tool with `args` while the server trickles the tarball, presses
// Ctrl-C once part of it is in `part`, and returns the exit status (-1 when
// killed by the signal) with stdout and stderr.
struct Interrupted {
  int exit_code = -1;
  std::string out, err;
  bool started = false;
};
Interrupted interrupt_download(std::vector<std::string> argv, const fs::path& part, const fs::path& tmp) {
  const fs::path out = tmp / "run.out", err = tmp / "run.err";
  argv.insert(argv.begin(), cli_path().string());
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  Interrupted r;
  if (rc != 0) return r;
  for (int i = 0; i < 600 && !r.started; ++i) {  // a hang guard, not a timing check
    std::error_code ec;
    r.started = fs::file_size(part, ec) >= 8192 && !ec;
    if (!r.started) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(pid, SIGINT);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}

// Ctrl-C during `fetch`: the download stops, the error says how much was kept
// and where (the oracle: the part file), the exit status is 130, and the next
// run asks the server for the rest only.
TEST_F(FetchCli, CtrlCSaysWhatWasKeptAndTheNextRunResumes) {
  server->set_faults(R"([{"path": "tar.gz", "kind": "trickle", "n": 4096, "times": 1}])");
  const fs::path part = fs::path(cache_dir) / "partial" / (sha256_of(tree->latest) + "-" + tree->latest_file + ".part");
  Interrupted run =
      interrupt_download({"fetch", "--mirror", server->url(), "--cache-dir", cache_dir}, part, tmp.path());
  ASSERT_TRUE(run.started) << run.err;
  ASSERT_NE(run.exit_code, -1) << "killed by the signal instead of stopping the download";
  EXPECT_EQ(run.exit_code, 130);
  const std::uint64_t kept = fs::file_size(part);
  EXPECT_TRUE(contains(run.err, "rpi-provision: error: cancelled: " + rpi::format_size(kept) + " of " +
                                    tree->latest_file + " kept in " + cache_dir + "/partial/; run again to resume\n"))
      << run.err;
  EXPECT_EQ(run.out, "") << "no result for a cancelled fetch";

  CommandResult r = cli({"fetch", "--mirror", server->url(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(sha256_of(first_line(r.out)), sha256_of(tree->latest));
  bool resumed = false;
  for (const auto& e : server->log())
    if (contains(e.path, ".tar.gz") && e.range == "bytes=" + std::to_string(kept) + "-") resumed = true;
  EXPECT_TRUE(resumed) << "the next run did not ask for the rest only";
}

// The same for an image build: Ctrl-C while its tarball downloads says what was
// kept (it used to end the run without a word), and leaves no image behind.
TEST_F(FetchCli, CtrlCDuringAnImageBuildsDownloadSaysWhatWasKept) {
  server->set_faults(R"([{"path": "tar.gz", "kind": "trickle", "n": 4096, "times": 1}])");
  const fs::path part = fs::path(cache_dir) / "partial" / (sha256_of(tree->latest) + "-" + tree->latest_file + ".part");
  const fs::path spec = tmp / "pi.toml", dir = tmp / "images";
  write_file(spec, "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  fs::create_directories(dir);
  Interrupted run = interrupt_download({"--spec", spec.string(), "--output", (dir / "pi.img").string(), "--mirror",
                                        server->url(), "--cache-dir", cache_dir},
                                       part, tmp.path());
  ASSERT_TRUE(run.started) << run.err;
  ASSERT_NE(run.exit_code, -1) << "killed by the signal instead of stopping the download";
  EXPECT_EQ(run.exit_code, 130);
  EXPECT_TRUE(contains(run.err, "rpi-provision: error: cancelled: " + rpi::format_size(fs::file_size(part)) + " of " +
                                    tree->latest_file + " kept in " + cache_dir + "/partial/; run again to resume\n"))
      << run.err;
  EXPECT_TRUE(fs::is_empty(dir)) << "an image or its temporary was left";
}

}  // namespace

// ---- The card's apk repositories follow the tarball's release ----

class FetchCliRepositories : public FetchCli {
 protected:
  void SetUp() override {
    FetchCli::SetUp();
    if (IsSkipped()) return;
    RPI_REQUIRE_TOOL("mcopy");
    RPI_REQUIRE_TOOL("tar");
  }
  // A spec with the default [alpine].version (latest-stable), fetching from the test mirror.
  fs::path spec() {
    fs::path p = tmp / "pi.toml";
    write_file(p, "[alpine]\nmirror = \"" + server->url() + "\"\n[system]\nhostname = \"pi\"\n");
    return p;
  }
  // /etc/apk/repositories of the apkovl on the image's FAT partition.
  std::string repositories(const fs::path& img) {
    fs::path ovl = tmp / (img.filename().string() + ".apkovl.tar.gz");
    CommandResult c = run({"mcopy", "-n", "-i", img.string() + "@@8M", "::/pi.apkovl.tar.gz", ovl.string()});
    EXPECT_EQ(c.exit_code, 0) << c.err;
    CommandResult t = run({"tar", "-xzOf", ovl.string(), "--wildcards", "*etc/apk/repositories"});
    EXPECT_EQ(t.exit_code, 0) << t.err;
    return t.out;
  }
};

TEST_F(FetchCliRepositories, LatestStableIsPinnedToTheReleaseTheIndexResolved) {
  fs::path img = tmp / "pi.img";
  CommandResult r = cli({"--spec", spec().string(), "--output", img.string(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string repos = repositories(img);
  EXPECT_TRUE(contains(repos, server->url() + "/v3.22/main\n")) << repos;
  EXPECT_TRUE(contains(repos, server->url() + "/v3.22/community\n")) << repos;
  EXPECT_FALSE(contains(repos, "latest-stable")) << repos;
}

TEST_F(FetchCliRepositories, LatestStableIsPinnedToTheReleaseInTheTarballsName) {
  fs::path named = tmp / "alpine-rpi-3.21.7-aarch64.tar.gz";
  fs::copy_file(tree->older, named);
  fs::path img = tmp / "named.img";
  CommandResult r =
      cli({"--spec", spec().string(), "--tarball", named.string(), "--output", img.string(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(repositories(img), "/v3.21/main\n")) << repositories(img);
  EXPECT_FALSE(contains(r.err, "latest-stable")) << r.err;

  // Another name: the tarball's own .alpine-release (3.22.1) tells the release, and the user is told.
  fs::path other = tmp / "boot-files.tar.gz";
  fs::copy_file(tree->older, other);
  img = tmp / "other.img";
  r = cli({"--spec", spec().string(), "--tarball", other.string(), "--output", img.string(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(repositories(img), "/v3.22/main\n")) << repositories(img);
  EXPECT_FALSE(contains(repositories(img), "latest-stable")) << repositories(img);
  EXPECT_TRUE(contains(r.err, "the tarball's .alpine-release says Alpine 3.22.1")) << r.err;
  // Its --dry-run says the same before anything is written.
  r = cli({"--spec", spec().string(), "--tarball", other.string(), "--output", (tmp / "plan.img").string(),
           "--cache-dir", cache_dir, "--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "the tarball's .alpine-release says Alpine 3.22.1")) << r.out;
  EXPECT_FALSE(fs::exists(tmp / "plan.img"));

  // Neither a release in its name nor an .alpine-release: the repositories stay latest-stable, and the user is told.
  fs::path bare = tmp / "bare-boot-files.tar.gz";
  fs::copy_file(fixture_tarball({"--size-mb", "1", "--no-alpine-release"}), bare);
  img = tmp / "bare.img";
  r = cli({"--spec", spec().string(), "--tarball", bare.string(), "--output", img.string(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(repositories(img), "/latest-stable/main\n")) << repositories(img);
  EXPECT_TRUE(contains(r.err, "the tarball's Alpine release is unknown (neither its name")) << r.err;
  EXPECT_TRUE(contains(r.err, "set [alpine].version")) << r.err;
}

// A spec that asks for one branch with a tarball of another gets a warning at
// its [alpine].version line, in the plan and in the run; its repositories
// follow what it asked for.
TEST_F(FetchCliRepositories, AVersionThatIsNotTheTarballsReleaseIsWarnedAbout) {
  fs::path other = tmp / "boot-files.tar.gz";
  fs::copy_file(tree->older, other);  // Alpine 3.22.1, by its .alpine-release only
  fs::path p = tmp / "old.toml";
  write_file(p, "[alpine]\nversion = \"3.21\"\nmirror = \"" + server->url() + "\"\n[system]\nhostname = \"pi\"\n");
  const std::string warning = p.string() +
                              ":2:11: [alpine].version is \"3.21\", but the tarball is Alpine 3.22.1: the cards' apk "
                              "repositories would follow v3.21 while their kernel and boot packages are 3.22's";
  CommandResult r = cli({"--spec", p.string(), "--tarball", other.string(), "--output", (tmp / "plan.img").string(),
                         "--cache-dir", cache_dir, "--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "warning: " + warning)) << r.err;  // as the run warns: not a line of the plan
  r = cli({"--json", "--spec", p.string(), "--tarball", other.string(), "--output", (tmp / "plan.img").string(),
           "--cache-dir", cache_dir, "--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "\"release\":\"3.22.1\"")) << r.out;
  EXPECT_TRUE(contains(r.out, "{\"type\":\"warning\",\"message\":\"" + p.string() + ":2:11: [alpine].version is"))
      << r.out;
  fs::path img = tmp / "old.img";
  r = cli({"--spec", p.string(), "--tarball", other.string(), "--output", img.string(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, warning)) << r.err;
  EXPECT_TRUE(contains(repositories(img), "/v3.21/main\n")) << repositories(img);
  // The same branch in another spelling is no mismatch.
  write_file(p, "[alpine]\nversion = \"3.22.1\"\nmirror = \"" + server->url() + "\"\n[system]\nhostname = \"pi\"\n");
  r = cli({"--spec", p.string(), "--tarball", other.string(), "--output", (tmp / "same.img").string(), "--cache-dir",
           cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "[alpine].version is")) << r.err;
}

TEST_F(FetchCliRepositories, ApkovlAloneSaysItsRepositoriesFollowLatestStable) {
  CommandResult r = cli({"apkovl", "--spec", spec().string(), "-o", (tmp / "pi.apkovl.tar.gz").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "follow latest-stable")) << r.err;
  fs::path pinned = tmp / "pinned.toml";
  write_file(pinned, "[alpine]\nversion = \"3.22\"\n[system]\nhostname = \"pi\"\n");
  r = cli({"apkovl", "--spec", pinned.string(), "-o", (tmp / "p.apkovl.tar.gz").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "latest-stable")) << r.err;
}

// ---- apkovl and check follow the release of the spec's own local tarball ----

class FetchCliSpecTarball : public FetchCliRepositories {
 protected:
  // A boot tarball of Alpine 3.21.4 named as its owner likes: only its
  // .alpine-release tells the release (another branch than the mirror's
  // latest-stable, 3.22).
  fs::path boot_files(const std::vector<std::string>& extra = {}) {
    fs::path p = tmp / "boot-files.tar.gz";
    std::vector<std::string> args = {"--size-mb", "1", "--version", "3.21.4"};
    args.insert(args.end(), extra.begin(), extra.end());
    fs::remove(p);
    fs::copy_file(fixture_tarball(args), p);
    return p;
  }
  // A spec whose [alpine] names `tarball` (as written: relative to the spec's folder, or a file:// URL).
  fs::path spec_with(const std::string& tarball, const std::string& alpine = "", const std::string& rest = "") {
    fs::path p = tmp / "local.toml";
    write_file(p, "[alpine]\ntarball = \"" + tarball + "\"\nmirror = \"" + server->url() + "\"\n" + alpine +
                      "[system]\nhostname = \"pi\"\n" + rest);
    return p;
  }
  // /etc/apk/repositories of an apkovl file.
  std::string apkovl_repositories(const fs::path& ovl) {
    CommandResult t = run({"tar", "-xzOf", ovl.string(), "--wildcards", "*etc/apk/repositories"});
    EXPECT_EQ(t.exit_code, 0) << t.err;
    return t.out;
  }
  const std::string note = "the tarball's .alpine-release says Alpine 3.21.4: the cards' apk repositories follow v3.21";
};

TEST_F(FetchCliSpecTarball, ApkovlRepositoriesFollowTheReleaseAsTheImageBuildsDo) {
  boot_files();
  const fs::path spec = spec_with("boot-files.tar.gz");
  const fs::path ovl = tmp / "pi.apkovl.tar.gz";
  CommandResult r = cli({"apkovl", "--spec", spec.string(), "-o", ovl.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string repos = apkovl_repositories(ovl);
  EXPECT_TRUE(contains(repos, server->url() + "/v3.21/main\n")) << repos;
  EXPECT_TRUE(contains(repos, server->url() + "/v3.21/community\n")) << repos;
  EXPECT_FALSE(contains(repos, "latest-stable")) << repos;
  EXPECT_TRUE(contains(r.err, note)) << r.err;
  EXPECT_FALSE(contains(r.err, "follow latest-stable")) << r.err;

  // An image built from the same spec carries the same repositories.
  const fs::path img = tmp / "pi.img";
  r = cli({"--spec", spec.string(), "--output", img.string(), "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, note)) << r.err;
  EXPECT_EQ(repositories(img), repos);

  // The tarball as a file:// URL without a digest is a local file too.
  r = cli(
      {"apkovl", "--spec", spec_with("file://" + (tmp / "boot-files.tar.gz").string()).string(), "-o", ovl.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(apkovl_repositories(ovl), repos);
  EXPECT_TRUE(contains(r.err, note)) << r.err;
}

TEST_F(FetchCliSpecTarball, ApkovlOutDirServesTheTarballsRelease) {
  boot_files();
  const fs::path spec = spec_with("boot-files.tar.gz", "",
                                  "[[hosts]]\nhostname = \"pi-a\"\nmac = \"DC:A6:32:01:02:03\"\n"
                                  "[[hosts]]\nhostname = \"pi-b\"\nmac = \"dc:a6:32:01:02:04\"\n");
  const fs::path dir = tmp / "served";
  CommandResult r = cli({"apkovl", "--spec", spec.string(), "--out-dir", dir.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* mac : {"dc:a6:32:01:02:03", "dc:a6:32:01:02:04"}) {
    const std::string repos = apkovl_repositories(dir / (std::string(mac) + ".apkovl.tar.gz"));
    EXPECT_TRUE(contains(repos, server->url() + "/v3.21/main\n")) << mac << ": " << repos;
    EXPECT_FALSE(contains(repos, "latest-stable")) << mac << ": " << repos;
  }
  EXPECT_TRUE(contains(r.err, note)) << r.err;
  EXPECT_FALSE(contains(r.err, "follow latest-stable")) << r.err;
}

TEST_F(FetchCliSpecTarball, CheckShowsAndUsesTheTarballsBranch) {
  boot_files();
  fs::path spec = spec_with("boot-files.tar.gz");
  CommandResult r = cli({"check", "--spec", spec.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "\n  repos     v3.21 (the tarball's release, Alpine 3.21.4)\n")) << r.out;
  EXPECT_TRUE(contains(r.err, note)) << r.err;
  EXPECT_TRUE(contains(r.out, "OK (1 card, 0 warnings)")) << r.out;
  // The package check reads the indexes of that branch, not of the mirror's latest-stable
  // (the test mirror has none: the check says which it could not read).
  spec = spec_with("boot-files.tar.gz", "", "[apk]\npackages = [\"htop\"]\n");
  r = cli({"check", "--spec", spec.string(), "--packages", "--cache-dir", cache_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, server->url() + "/v3.21/main")) << r.err;
  EXPECT_FALSE(contains(r.err, "/v3.22/")) << r.err;
  EXPECT_FALSE(contains(r.err, "latest-stable")) << r.err;
  // Its own [apk].repositories: no line about the default ones.
  spec = spec_with("boot-files.tar.gz", "", "[apk]\nrepositories = [\"https://example.org/alpine/main\"]\n");
  r = cli({"check", "--spec", spec.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.out, "  repos ")) << r.out;
}

TEST_F(FetchCliSpecTarball, AVersionOfAnotherBranchIsWarnedAboutByApkovlAndCheck) {
  boot_files();
  const fs::path spec = spec_with("boot-files.tar.gz", "version = \"3.22\"\n");
  const std::string warning = spec.string() +
                              ":4:11: [alpine].version is \"3.22\", but the tarball is Alpine 3.21.4: the cards' apk "
                              "repositories would follow v3.22 while their kernel and boot packages are 3.21's";
  const fs::path ovl = tmp / "pi.apkovl.tar.gz";
  CommandResult r = cli({"apkovl", "--spec", spec.string(), "-o", ovl.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "warning: " + warning)) << r.err;
  EXPECT_TRUE(contains(apkovl_repositories(ovl), "/v3.22/main\n")) << apkovl_repositories(ovl);  // as asked
  r = cli({"check", "--spec", spec.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "warning: " + warning)) << r.err;
  EXPECT_TRUE(contains(r.out, "OK (1 card, 1 warning)")) << r.out;
  EXPECT_FALSE(contains(r.out, "  repos ")) << r.out;
  // The build says the same.
  r = cli({"--spec", spec.string(), "--output", (tmp / "plan.img").string(), "--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "warning: " + warning)) << r.err;
}

// A local tarball pinned by [alpine].sha256: check reads it as the build
// does, and refuses a digest the build would refuse, with the build's words
// and exit code.
TEST_F(FetchCliSpecTarball, CheckVerifiesThePinnedDigestAsTheBuildDoes) {
  const fs::path tarball = boot_files();
  const std::string good = sha256_of(tarball);
  fs::path spec = spec_with("boot-files.tar.gz", "sha256 = \"" + good + "\"\n");
  CommandResult r = cli({"-v", "check", "--spec", spec.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "debug: " + tarball.string() + ": SHA-256 matches [alpine].sha256, read in ")) << r.err;
  EXPECT_TRUE(contains(r.out, "OK (1 card, 0 warnings)")) << r.out;
  r = cli({"check", "--spec", spec.string()});  // without -v: no line
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "SHA-256 matches")) << r.err;

  // Another digest: the build refuses the tarball; check says the same, with the same exit code.
  const std::string other = sha256_of(tree->older);
  ASSERT_NE(other, good);
  spec = spec_with("boot-files.tar.gz", "sha256 = \"" + other + "\"\n");
  const std::string refusal = tarball.string() + ": sha256 is " + good + ", expected " + other + "; refusing to use it";
  const CommandResult build =
      cli({"--spec", spec.string(), "--output", (tmp / "pi.img").string(), "--cache-dir", cache_dir});
  EXPECT_EQ(build.exit_code, 1) << build.err;
  EXPECT_TRUE(contains(build.err, "error: " + refusal + "\n")) << build.err;
  EXPECT_FALSE(fs::exists(tmp / "pi.img"));
  r = cli({"-v", "check", "--spec", spec.string()});
  EXPECT_EQ(r.exit_code, build.exit_code) << r.err;
  EXPECT_TRUE(contains(r.err, "error: " + refusal + "\n")) << r.err;
  EXPECT_FALSE(contains(r.err, "SHA-256 matches")) << r.err;
  EXPECT_FALSE(contains(r.out, "OK (")) << r.out;
  // --json: the error event the build's --json gives.
  r = cli({"--json", "check", "--spec", spec.string()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.out, "{\"type\":\"error\",\"code\":\"verify\",\"message\":\"" + refusal + "\"}")) << r.out;

  // The message names the file and the digests, never what the file holds.
  const std::string secret = "not a tarball but private text 4f1c9e\n";
  write_file(tmp / "boot-files.tar.gz", secret);
  const std::string text_digest = sha256_of(tmp / "boot-files.tar.gz");
  r = cli({"check", "--spec", spec.string()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, ": sha256 is " + text_digest + ", expected " + other)) << r.err;
  EXPECT_FALSE(contains(r.err + r.out, "private text")) << r.err << r.out;

  // A tarball URL is not downloaded to be checked: the build checks it as it downloads it.
  spec = spec_with(server->url() + "/v3.22/releases/aarch64/" + tree->older_file, "sha256 = \"" + good + "\"\n");
  r = cli({"-v", "check", "--spec", spec.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "sha256 is")) << r.err;
  EXPECT_EQ(server->requests(".tar.gz"), 0);
}

// What `check` does with the tarball a spec pins, seen from outside: the
// file's opens and the bytes read from it, as `strace -y` shows them (each
// openat of `file` and each read of a descriptor open on it). Skips when
// strace is missing or may not trace.
struct TarballReads {
  int opens = 0;
  std::uint64_t bytes = 0;
};
TarballReads traced_reads(const fs::path& dir, const fs::path& file, const std::vector<std::string>& args,
                          CommandResult& r) {
  const fs::path log = dir / "strace.log";
  std::vector<std::string> argv{"strace",
                                "-f",
                                "-qq",
                                "-y",
                                "-s",
                                "0",
                                "-e",
                                "trace=openat,open,read,pread64,readv",
                                "-o",
                                log.string(),
                                cli_path().string()};
  argv.insert(argv.end(), args.begin(), args.end());
  r = run(without_leak_check(argv));
  TarballReads t;
  const std::string tag = "<" + fs::canonical(file).string() + ">";
  std::istringstream in(read_file(log));
  // "PID read(3</tmp/x/boot-files.tar.gz>, ""..., 1048576) = 1048576"; "PID openat(…) = 3</tmp/x/…>".
  for (std::string line; std::getline(in, line);) {
    const std::size_t paren = line.find('('), eq = line.rfind(") = ");
    if (paren == std::string::npos || eq == std::string::npos) continue;
    const std::string call = line.substr(0, paren);
    const std::string name = call.substr(call.find_last_of(' ') + 1);
    const std::string first_arg = line.substr(paren + 1, line.find(',', paren) - paren - 1);
    const std::string result = line.substr(eq + 4);
    if (name == "openat" || name == "open") {
      if (result.find(tag) != std::string::npos) ++t.opens;
    } else if (first_arg.find(tag) != std::string::npos) {
      t.bytes += std::strtoull(result.c_str(), nullptr, 10);
    }
  }
  return t;
}

// A tarball pinned by [alpine].sha256 whose release only its .alpine-release
// tells: check hashes it and reads that release in one pass (it was read
// whole for the digest, then again from its start for the release). Oracle:
// strace — one open, and exactly the file's size read from it. It cannot see
// a second pass that re-reads through the same descriptor after a seek that
// strace does not trace (it would show as more bytes than the file has).
TEST_F(FetchCliSpecTarball, CheckReadsAPinnedTarballOnce) {
  if (!have_tool("strace")) GTEST_SKIP() << "tool not installed: strace (the oracle of the file's reads)";
  if (run({"strace", "-qq", "-o", "/dev/null", "true"}).exit_code != 0)
    GTEST_SKIP() << "strace cannot trace here (ptrace not permitted)";
  const fs::path tarball = boot_files({"--size-mb", "3"});
  const fs::path spec = spec_with("boot-files.tar.gz", "sha256 = \"" + sha256_of(tarball) + "\"\n");
  CommandResult r;
  const TarballReads t = traced_reads(tmp.path(), tarball, {"-v", "check", "--spec", spec.string()}, r);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The -v details of both, and what the release gives.
  EXPECT_TRUE(contains(r.err, "debug: " + tarball.string() + ": SHA-256 matches [alpine].sha256, read in ")) << r.err;
  EXPECT_TRUE(contains(r.err, "debug: " + tarball.string() + ": its .alpine-release says 3.21.4, read in ")) << r.err;
  EXPECT_TRUE(contains(r.err, note)) << r.err;
  EXPECT_TRUE(contains(r.out, "  repos     v3.21 (the tarball's release, Alpine 3.21.4)")) << r.out;
  EXPECT_EQ(t.opens, 1) << r.err;
  EXPECT_EQ(t.bytes, fs::file_size(tarball));

  // A tarball without a release is read whole for its digest, still once.
  boot_files({"--size-mb", "3", "--no-alpine-release"});
  const fs::path bare = spec_with("boot-files.tar.gz", "sha256 = \"" + sha256_of(tarball) + "\"\n");
  const TarballReads u = traced_reads(tmp.path(), tarball, {"-v", "check", "--spec", bare.string()}, r);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, tarball.string() + ": its .alpine-release gives no release")) << r.err;
  EXPECT_EQ(u.opens, 1) << r.err;
  EXPECT_EQ(u.bytes, fs::file_size(tarball));
}

// [alpine].tarball = "file:///…" pinned by [alpine].sha256: the build copies
// the file into the cache, verified; check reads it as it reads a path: it
// must be there, its digest is verified, its release pins the repositories.
TEST_F(FetchCliSpecTarball, CheckReadsAPinnedFileUrlAsALocalPath) {
  const fs::path tarball = boot_files();
  const std::string good = sha256_of(tarball);
  const std::string other = sha256_of(tree->older);
  ASSERT_NE(good, other);
  const std::string url = "file://" + tarball.string();
  fs::path spec = spec_with(url, "sha256 = \"" + good + "\"\n");
  CommandResult r = cli({"-v", "check", "--spec", spec.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "debug: " + tarball.string() + ": SHA-256 matches [alpine].sha256, read in ")) << r.err;
  EXPECT_TRUE(contains(r.err, note)) << r.err;
  EXPECT_TRUE(contains(r.out, "  repos     v3.21 (the tarball's release, Alpine 3.21.4)")) << r.out;
  EXPECT_TRUE(contains(r.out, "OK (1 card, 0 warnings)")) << r.out;
  EXPECT_EQ(server->requests(".tar.gz"), 0);
  // apkovl pins the repositories to it as well, as an image built from the spec has them.
  const fs::path ovl = tmp / "pi.apkovl.tar.gz";
  r = cli({"apkovl", "--spec", spec.string(), "-o", ovl.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(apkovl_repositories(ovl), "/v3.21/main\n")) << apkovl_repositories(ovl);
  // file://localhost/ names the same file.
  r = cli(
      {"check", "--spec", spec_with("file://localhost" + tarball.string(), "sha256 = \"" + good + "\"\n").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "  repos     v3.21 (the tarball's release, Alpine 3.21.4)")) << r.out;

  // Another digest: refused naming the file, exit 1 as the build's.
  spec = spec_with(url, "sha256 = \"" + other + "\"\n");
  r = cli({"check", "--spec", spec.string()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(
      r.err, "error: " + tarball.string() + ": sha256 is " + good + ", expected " + other + "; refusing to use it\n"))
      << r.err;
  EXPECT_FALSE(contains(r.out, "OK (")) << r.out;
  const CommandResult build =
      cli({"--spec", spec.string(), "--output", (tmp / "pi.img").string(), "--cache-dir", cache_dir});
  EXPECT_EQ(build.exit_code, r.exit_code) << build.err;
  EXPECT_FALSE(fs::exists(tmp / "pi.img"));

  // Not there: the spec is refused, as for a path.
  fs::remove(tarball);
  r = cli({"check", "--spec", spec.string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "[alpine].tarball " + tarball.string() + " is not a file")) << r.err;
}

TEST_F(FetchCliSpecTarball, WithoutAKnownReleaseTheOldAdviceStays) {
  // No .alpine-release and a name that tells nothing: latest-stable, and the advice to set a version.
  boot_files({"--no-alpine-release"});
  const fs::path spec = spec_with("boot-files.tar.gz");
  const fs::path ovl = tmp / "pi.apkovl.tar.gz";
  CommandResult r = cli({"apkovl", "--spec", spec.string(), "-o", ovl.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(apkovl_repositories(ovl), "/latest-stable/main\n")) << apkovl_repositories(ovl);
  EXPECT_TRUE(contains(r.err, "the apkovl's apk repositories follow latest-stable")) << r.err;
  r = cli({"check", "--spec", spec.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.out, "  repos ")) << r.out;

  // A damaged tarball: no pinning, and no error from apkovl or check (the build refuses it).
  write_file(tmp / "boot-files.tar.gz", "this is not gzip data\n");
  r = cli({"apkovl", "--spec", spec.string(), "-o", ovl.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(apkovl_repositories(ovl), "/latest-stable/main\n")) << apkovl_repositories(ovl);
  EXPECT_TRUE(contains(r.err, "the apkovl's apk repositories follow latest-stable")) << r.err;
  r = cli({"check", "--spec", spec.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.out, "  repos ")) << r.out;

  // A missing one: apkovl goes on as before, check refuses the spec as before.
  fs::remove(tmp / "boot-files.tar.gz");
  r = cli({"apkovl", "--spec", spec.string(), "-o", ovl.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "the apkovl's apk repositories follow latest-stable")) << r.err;
  r = cli({"check", "--spec", spec.string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "[alpine].tarball " + (tmp / "boot-files.tar.gz").string() + " is not a file")) << r.err;

  // A release in the tarball's name pins without a note, as in a build.
  fs::copy_file(fixture_tarball({"--size-mb", "1", "--version", "3.21.4", "--no-alpine-release"}),
                tmp / "alpine-rpi-3.21.4-aarch64.tar.gz");
  r = cli({"apkovl", "--spec", spec_with("alpine-rpi-3.21.4-aarch64.tar.gz").string(), "-o", ovl.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(apkovl_repositories(ovl), "/v3.21/main\n")) << apkovl_repositories(ovl);
  EXPECT_FALSE(contains(r.err, "latest-stable")) << r.err;
}

// A release the mirror lacks is an error at the spec's [alpine].version line
// (or its [alpine] table), as other spec errors are; exit 2, no image.
TEST_F(FetchCli, AReleaseTheMirrorLacksPointsAtTheSpecsLine) {
  const fs::path spec = tmp / "pi.toml";
  const fs::path img = tmp / "pi.img";
  write_file(spec, "[system]\nhostname = \"pi\"\n\n[alpine]\nmirror = \"" + server->url() + "\"\nversion = \"3.99\"\n");
  CommandResult r = cli({"--spec", spec.string(), "--output", img.string(), "--cache-dir", cache_dir});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "rpi-provision: error: " + spec.string() + ":6:11: no release index for Alpine 3.99"))
      << r.err;
  EXPECT_FALSE(fs::exists(img));
  // Without a version key the table is named: here the arch has no release.
  write_file(spec, "[system]\nhostname = \"pi\"\n\n[alpine]\nmirror = \"" + server->url() + "\"\narch = \"armhf\"\n");
  r = cli({"--spec", spec.string(), "--output", img.string(), "--cache-dir", cache_dir});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "rpi-provision: error: " + spec.string() + ":4:1: ")) << r.err;
  EXPECT_FALSE(fs::exists(img));
}
