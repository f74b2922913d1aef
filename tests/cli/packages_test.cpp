// [apk].packages against the repositories' package indexes: the rules on their
// own (check_packages), then whole runs against the loopback mirror, whose
// main/ and community/ indexes make_mirror.py writes.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>

#include "mirror_fixture.hpp"
#include "packages.hpp"
#include "rpi/error.hpp"
#include "test_support.hpp"

using rpi::test::cli;
using rpi::test::TempDir;
namespace fs = std::filesystem;
using rpi::cli::check_packages;
using rpi::cli::PackageRepo;
using rpi::fetch::Package;

namespace {

std::shared_ptr<const rpi::fetch::PackageIndex> index_of(const std::vector<Package>& pkgs) {
  auto idx = std::make_shared<rpi::fetch::PackageIndex>();
  for (const auto& p : pkgs) {
    idx->by_name.emplace(p.name, idx->packages.size());
    for (const auto& pr : p.provides) idx->by_provide.emplace(pr, idx->packages.size());
    idx->packages.push_back(p);
  }
  return idx;
}

Package pkg(const std::string& name, std::uint64_t size, std::vector<std::string> depends = {},
            std::vector<std::string> provides = {}) {
  Package p;
  p.name = name;
  p.version = "1.0-r0";
  p.size = size;
  p.depends = std::move(depends);
  p.provides = std::move(provides);
  return p;
}

std::vector<PackageRepo> release_repos() {
  return {
      PackageRepo{"", "main",
                  index_of({pkg("musl", 400, {}, {"so:libc.musl-aarch64.so.1"}),
                            pkg("seatd", 40, {"so:libc.musl-aarch64.so.1"}, {"so:libseat.so.1", "cmd:seatd"}),
                            pkg("python3", 20000, {"so:libc.musl-aarch64.so.1"}), pkg("py3-requests", 90, {"python3"}),
                            pkg("font-dejavu", 2000)}),
                  ""},
      PackageRepo{"", "community",
                  index_of({pkg("cage", 30, {"so:libseat.so.1", "!cage-legacy", "so:libc.musl-aarch64.so.1"}),
                            pkg("chromium", 300000, {"font-dejavu", "seatd>=0.8", "so:libc.musl-aarch64.so.1"})}),
                  ""},
      PackageRepo{"@testing", "testing", index_of({pkg("foo", 7, {"musl"})}), ""},
  };
}

TEST(PackageCheck, FindsNamesAndCountsWhatTheyNeedOnce) {
  auto r = check_packages({"cage", "chromium", "seatd>=0.8"}, release_repos());
  EXPECT_TRUE(r.checked);
  EXPECT_TRUE(r.unknown.empty());
  EXPECT_EQ(r.found, 3u);
  // cage, chromium, seatd, musl (through so:libc, a provide), font-dejavu; the conflict !cage-legacy is no need.
  EXPECT_EQ(r.download_count, 5u);
  EXPECT_EQ(r.download_bytes, 30u + 300000u + 40u + 400u + 2000u);
}

TEST(PackageCheck, AMisspeltNameIsCertainAndGetsAHint) {
  auto r = check_packages({"chromiun", "python3-requests", "seatd", "zzzzzzzz"}, release_repos());
  EXPECT_TRUE(r.certain);
  EXPECT_EQ(r.unknown, (std::vector<std::string>{"chromiun (did you mean 'chromium'?)",
                                                 "python3-requests (did you mean 'py3-requests'?)", "zzzzzzzz"}));
  EXPECT_EQ(r.found, 1u);
}

TEST(PackageCheck, ATaggedRepositoryServesOnlyEntriesWithItsTag) {
  auto untagged = check_packages({"foo"}, release_repos());
  EXPECT_EQ(untagged.unknown, std::vector<std::string>{"foo"}) << "apk takes an untagged name from untagged repos only";
  EXPECT_TRUE(untagged.certain);
  auto tagged = check_packages({"foo@testing"}, release_repos());
  EXPECT_TRUE(tagged.unknown.empty());
  EXPECT_EQ(tagged.download_count, 2u) << "foo and musl (from main: a tagged package's needs may come from untagged)";
}

TEST(PackageCheck, ARepositoryNotReadTurnsCertaintyIntoAGuess) {
  auto repos = release_repos();
  repos.push_back(PackageRepo{"", "https://example.org/private", nullptr, "HTTP 403"});
  auto r = check_packages({"chromiun", "cage"}, repos);
  EXPECT_FALSE(r.certain) << "the private repository may have it";
  EXPECT_EQ(r.unknown.size(), 1u);
  EXPECT_EQ(r.unread, std::vector<std::string>{"https://example.org/private (HTTP 403)"});
  // Nothing readable at all: not checked, rather than every name unknown.
  auto none = check_packages({"cage"}, {PackageRepo{"", "main", nullptr, "offline"}});
  EXPECT_TRUE(none.unknown.empty());
  EXPECT_EQ(none.unchecked, 1u);
}

TEST(PackageCheck, SizesAMirrorExaggeratesSaturateInsteadOfWrapping) {
  const std::uint64_t huge = UINT64_MAX / 2 + 1;
  auto r = check_packages({"a"}, {PackageRepo{"", "main", index_of({pkg("a", huge, {"b"}), pkg("b", huge)}), ""}});
  EXPECT_EQ(r.download_count, 2u);
  EXPECT_EQ(r.download_bytes, UINT64_MAX) << "a wrapped sum would size the card for almost nothing";
}

// apk's version order, on versions of the kind Alpine's indexes hold. Each
// pair is checked both ways round.
TEST(ApkVersion, OrdersAsApkDoes) {
  using rpi::fetch::compare_apk_versions;
  const std::vector<std::pair<std::string, std::string>> older_newer = {
      {"1.2.5-r9", "1.2.5-r10"},                 // revisions are numbers
      {"1.2.5", "1.2.5-r0"},                     // a revision is newer than none
      {"1.2.5-r3", "1.2.6"},                     // a further part beats a revision
      {"3.4", "3.4.1"},                          // more parts, newer
      {"3.9", "3.10"},                           // parts are numbers, not strings
      {"0.9", "006"},                            // so is the first, leading zeros or not
      {"1.02", "1.1"},                           // after a dot, a leading zero compares as a string
      {"6.5_p20250503-r0", "6.5_p20250610-r0"},  // post-release patches
      {"6.5", "6.5_p1"},                         // a post-release suffix is newer than none
      {"2.0_rc1", "2.0"},                        // a pre-release one older
      {"2.0_alpha", "2.0_beta"},                 // alpha < beta < pre < rc
      {"2.0_pre3", "2.0_rc1"},                   //
      {"1.0_alpha_pre1", "1.0_alpha"},           // even after another suffix
      {"2.0_git20240101", "2.0_p1"},             // cvs < svn < git < hg < p
      {"1.1", "1.1a"},                           // a letter is newer than none
      {"1.1a", "1.1b"},                          //
      {"1.1z", "1.1.1"},                         // a further part beats a letter
      {"138.0.7204.157-r0", "138.0.7204.168-r0"},
      {"99999999999999999999999", "100000000000000000000000"},  // beyond 64 bits
  };
  for (const auto& [a, b] : older_newer) {
    EXPECT_EQ(compare_apk_versions(a, b), -1) << a << " < " << b;
    EXPECT_EQ(compare_apk_versions(b, a), 1) << b << " > " << a;
  }
  for (const char* v : {"1.2.5-r10", "6.5_p20250503-r0", "2.0~c0ffee-r1", "0"})
    EXPECT_EQ(compare_apk_versions(v, v), 0) << v;
  for (const char* bad : {"", "v1.2", "1.2.", "1..2", "1.2-3", "1.2_foo", "1.2-r", "1.2ab", "1.2a3", "1.2~", "1.2 "})
    EXPECT_EQ(compare_apk_versions(bad, "1.2"), std::nullopt) << "'" << bad << "' is no apk version";
}

TEST(ApkVersion, ConstraintsAsWorldEntriesMeanThem) {
  using rpi::fetch::version_satisfies;
  EXPECT_EQ(version_satisfies("0.9.1-r0", ">=", "0.8"), true);
  EXPECT_EQ(version_satisfies("0.9.1-r0", "<", "0.9.1"), false);
  EXPECT_EQ(version_satisfies("0.9.1-r0", ">", "0.9.1"), true) << "the -r0 makes it newer";
  EXPECT_EQ(version_satisfies("0.9.1-r0", "=", "0.9.1"), false) << "\"=\" is exact";
  EXPECT_EQ(version_satisfies("0.9.1-r0", "=", "0.9.1-r0"), true);
  EXPECT_EQ(version_satisfies("0.9.1-r0", "~", "0.9"), true) << "\"~\" matches the leading parts";
  EXPECT_EQ(version_satisfies("0.9.1-r0", "=~", "0.9.1"), true);
  EXPECT_EQ(version_satisfies("0.10.1-r0", "~", "0.1"), false) << "parts, not characters";
  EXPECT_EQ(version_satisfies("1.2-r0", "~", "1.2.3"), true) << "apk 2.14 (Alpine up to 3.22) takes it";
  EXPECT_EQ(version_satisfies("0.9.1-r0", "<=", "0.9.1-r0"), true);
  EXPECT_EQ(version_satisfies("0.9.1-r0", "><", "Q1abc"), std::nullopt) << "a checksum is not judged";
  EXPECT_EQ(version_satisfies("not-a-version", ">=", "1"), std::nullopt);
}

TEST(PackageCheck, AVersionNoRepositoryHasIsCertainAndGetsAHint) {
  auto repos = release_repos();  // every package there is 1.0-r0
  auto r = check_packages({"seatd>=0.8", "cage~1", "chromium=1.0", "python3<1", "musl>=2"}, repos);
  EXPECT_TRUE(r.unknown.empty());
  EXPECT_TRUE(r.certain);
  EXPECT_EQ(r.unmatched, (std::vector<std::string>{
                             "chromium=1.0 (the repositories have 1.0-r0; did you mean 'chromium~1.0'?)",
                             "python3<1 (the repositories have 1.0-r0)", "musl>=2 (the repositories have 1.0-r0)"}));
  EXPECT_EQ(r.found, 2u);
  // A name only provided is not judged by version: a provide's version is not kept.
  EXPECT_TRUE(check_packages({"cmd:seatd>=99"}, repos).unmatched.empty());
  // Another repository with the name and a version that fits: apk takes that one.
  Package newer = pkg("python3", 9);
  newer.version = "3.12.11-r0";
  repos.push_back(PackageRepo{"", "newer", index_of({newer}), ""});
  EXPECT_TRUE(check_packages({"python3>=3.12"}, repos).unmatched.empty());
  // A repository not read could have it: a guess, not an error.
  repos.push_back(PackageRepo{"", "private", nullptr, "offline"});
  EXPECT_FALSE(check_packages({"musl>=2"}, repos).certain);
}

// ---- Whole runs against the loopback mirror ----

class PackagesRun : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!rpi::test::have_tool("python3")) GTEST_SKIP() << "tool not installed: python3 (runs the test mirror)";
    tree = std::make_unique<rpi::test::MirrorTree>(d.path());
    server = std::make_unique<rpi::test::MirrorServer>(tree->root, d / "state");
  }
  fs::path spec_with(const std::string& apk) {
    fs::path spec = d / "pi.toml";
    rpi::test::write_file(spec, "[alpine]\nversion = \"3.22\"\nmirror = \"" + server->url() +
                                    "\"\n[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n[apk]\n" +
                                    apk);
    return spec;
  }
  rpi::test::CommandResult build(const fs::path& spec, const fs::path& out, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--spec",     spec.string(), "--output",
                                  out.string(), "--cache-dir", (d / "cache").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return cli(args);
  }
  TempDir d;
  std::unique_ptr<rpi::test::MirrorTree> tree;
  std::unique_ptr<rpi::test::MirrorServer> server;
};

TEST_F(PackagesRun, AMisspeltPackageStopsTheRunBeforeTheDownloadWithItsLine) {
  fs::path spec = spec_with("packages = [\"cage\", \"chromiun\"]\n");
  auto r = build(spec, d / "pi.img");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(spec.string() +
                       ":9:21: [apk].packages chromiun (did you mean 'chromium'?) is in none of "
                       "the card's repositories for aarch64 (" +
                       server->url() + "/v3.22/main, " + server->url() + "/v3.22/community)"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(d / "pi.img"));
  EXPECT_EQ(server->requests(tree->latest_file), 0) << "the tarball was downloaded for a run that could not succeed";

  // check --packages says the same; plain check stays offline and passes.
  auto chk = cli({"check", "--spec", spec.string(), "--packages", "--cache-dir", (d / "cache").string()});
  EXPECT_EQ(chk.exit_code, 2) << chk.err;
  EXPECT_NE(chk.err.find("chromiun (did you mean 'chromium'?)"), std::string::npos) << chk.err;
  EXPECT_EQ(cli({"check", "--spec", spec.string()}).exit_code, 0);
}

TEST_F(PackagesRun, TheApkCacheGetsRoomForWhatThePiDownloads) {
  RPI_REQUIRE_TOOL("sfdisk");
  const std::string packages = "packages = [\"cage\", \"chromium\"]\n";
  fs::path spec = spec_with(packages + "cache = true\n");
  auto plan = build(spec, d / "plan.img", {"--dry-run"});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_NE(plan.out.find("packages: 2 packages, 2 found; the Pi downloads about 302.8 MiB (6 packages with their "
                          "dependencies, kept in the card's apk cache)"),
            std::string::npos)
      << plan.out;
  auto cached = build(spec, d / "cached.img");
  ASSERT_EQ(cached.exit_code, 0) << cached.err;
  EXPECT_NE(cached.out.find("(384 MiB of it packages for the apk cache)"), std::string::npos) << cached.out;

  spec = spec_with(packages);  // no cache: nothing to make room for
  auto plain = build(spec, d / "plain.img");
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  // The oracle: the partition sfdisk reads in each image.
  auto part_size = [](const fs::path& img) {
    auto r = rpi::test::run({"sfdisk", "--json", img.string()});
    auto at = r.out.find("\"size\":");
    return at == std::string::npos ? 0ull : std::stoull(r.out.substr(at + 7));
  };
  const auto with_cache = part_size(d / "cached.img"), without = part_size(d / "plain.img");
  EXPECT_EQ(without * 512, 512ull << 20) << "a small fixture: the smallest automatic partition";
  // 2 × (fixture + apkovl + 384 MiB) + 256 MiB, rounded up to 64 MiB.
  EXPECT_GE(with_cache * 512, (2 * 384ull + 256) << 20);
  EXPECT_LE(with_cache * 512, (2 * 384ull + 256 + 64 + 2 * 8) << 20);
}

TEST_F(PackagesRun, AGivenSizeTooSmallForTheApkCacheIsWarnedAbout) {
  fs::path spec = spec_with("packages = [\"cage\", \"chromium\"]\ncache = true\n");
  auto small = build(spec, d / "small.img", {"--size", "300MiB"});
  ASSERT_EQ(small.exit_code, 0) << small.err;
  EXPECT_NE(small.err.find("free, but [apk].packages and their dependencies take about 302.8 MiB in the apk cache: "
                           "apk fails once it is full. Leave --size and [boot] size out"),
            std::string::npos)
      << small.err;
  auto big = build(spec, d / "big.img", {"--size", "1GiB"});
  ASSERT_EQ(big.exit_code, 0) << big.err;
  EXPECT_EQ(big.err.find("apk fails once it is full"), std::string::npos) << big.err;
}

TEST_F(PackagesRun, RepositoriesThatCannotBeReadAreNamedNotGuessedAbout) {
  // Offline with no copy of the indexes (the tarball is cached first).
  fs::path spec = spec_with("packages = [\"cage\"]\n");
  ASSERT_EQ(
      cli({"fetch", "--version", "3.22", "--mirror", server->url(), "--cache-dir", (d / "cache").string()}).exit_code,
      0);
  fs::remove_all(d / "cache" / "indexes");
  auto off = build(spec, d / "off.img", {"--offline"});
  ASSERT_EQ(off.exit_code, 0) << off.err;
  EXPECT_NE(off.err.find("[apk].packages not checked against " + server->url() +
                         "/v3.22/main (offline, and the cache has no copy of its index)"),
            std::string::npos)
      << off.err;

  // check --packages was asked to check: nothing checked is a warning there, and counted.
  auto chk_off = cli({"check", "--spec", spec.string(), "--packages", "--offline", "--cache-dir",
                      (d / "cache").string(), "--mirror", server->url()});
  EXPECT_EQ(chk_off.exit_code, 0) << chk_off.err;
  EXPECT_NE(chk_off.err.find("warning: [apk].packages not checked against " + server->url() + "/v3.22/main"),
            std::string::npos)
      << chk_off.err;
  EXPECT_NE(chk_off.out.find("(1 card, 1 warning)"), std::string::npos) << chk_off.out;
  EXPECT_NE(chk_off.out.find("(indexes from " + server->url() + ")"), std::string::npos) << chk_off.out;

  // A private repository that refuses: the unknown name is a warning, the run goes on.
  fs::path priv =
      spec_with("packages = [\"cage\", \"in-house-kiosk\"]\nrepositories = [\"" + server->url() + "/v3.22/main\", \"" +
                server->url() + "/v3.22/community\", \"" + server->url() + "/private\", \"ftp://127.0.0.1/alpine\"]\n");
  auto r = build(priv, d / "priv.img");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: " + priv.string() +
                       ":9:21: [apk].packages in-house-kiosk is in none of the "
                       "repositories read"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("not read: " + server->url() + "/private (it has no aarch64/APKINDEX.tar.gz)"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("ftp://127.0.0.1/alpine (only http and https repositories are read)"), std::string::npos)
      << r.err;
  auto chk = cli({"check", "--spec", priv.string(), "--packages", "--cache-dir", (d / "cache").string()});
  EXPECT_EQ(chk.exit_code, 0) << chk.err;
  EXPECT_NE(chk.out.find(": OK (1 card, 1 warning)"), std::string::npos) << "the warning counts\n" << chk.out;
}

TEST_F(PackagesRun, IndexCopiesAreListedAndAPruneLeavesThemForOfflineChecks) {
  fs::path spec = spec_with("packages = [\"cage\"]\n");
  ASSERT_EQ(build(spec, d / "a.img").exit_code, 0);
  const std::string cache = (d / "cache").string();
  auto list = cli({"cache", "list", "--cache-dir", cache});
  EXPECT_NE(list.out.find("package indexes: 2 ("), std::string::npos) << list.out;
  auto prune = cli({"cache", "prune", "--keep", "0", "--cache-dir", cache});
  ASSERT_EQ(prune.exit_code, 0) << prune.err;
  list = cli({"cache", "list", "--cache-dir", cache});
  EXPECT_NE(list.out.find("package indexes: 2 ("), std::string::npos) << "a prune removed the index copies\n"
                                                                      << list.out;
  // Offline (the pruned tarball fetched again first): the check reads the copies.
  ASSERT_EQ(cli({"fetch", "--version", "3.22", "--mirror", server->url(), "--cache-dir", cache}).exit_code, 0);
  fs::path typo = spec_with("packages = [\"cagee\"]\n");
  auto off = build(typo, d / "b.img", {"--offline"});
  EXPECT_EQ(off.exit_code, 2) << off.err;
  EXPECT_NE(off.err.find("cagee (did you mean 'cage'?)"), std::string::npos) << off.err;
}

// A version the mirror does not have is stopped like a name it does not have;
// "~" is the way to ask for a release without its -rN.
TEST_F(PackagesRun, AVersionTheMirrorLacksStopsTheRunWithTheVersionsThereAre) {
  fs::path spec = spec_with("packages = [\"cage\", \"chromium=138.0.7204.157\"]\n");
  auto r = build(spec, d / "pi.img");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(spec.string() +
                       ":9:21: [apk].packages chromium=138.0.7204.157 (the repositories have 138.0.7204.157-r0; "
                       "did you mean 'chromium~138.0.7204.157'?): no version in the card's repositories for aarch64"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(d / "pi.img"));
  EXPECT_EQ(server->requests(tree->latest_file), 0);

  spec = spec_with("packages = [\"cage\", \"chromium~138\", \"seatd>=0.8\"]\n");
  auto ok = build(spec, d / "ok.img", {"--dry-run"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("packages: 3 packages, 3 found"), std::string::npos) << ok.out;
}

// A misspelt name and a version no repository has: both said in one run, each
// at its entry, in order (the next run would otherwise find the second).
TEST_F(PackagesRun, ANameAndAVersionAreBothSaidAtOnce) {
  fs::path spec = spec_with("packages = [\n  \"chromium=138.0\",\n  \"chromiun\",\n]\n");
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--spec", spec.string(), "--output", (d / "pi.img").string(), "--cache-dir",
                                 (d / "cache").string()},
        std::vector<std::string>{"check", "--spec", spec.string(), "--packages", "--cache-dir",
                                 (d / "cache").string()}}) {
    auto r = cli(args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    const std::size_t version = r.err.find(spec.string() + ":10:3: [apk].packages chromium=138.0");
    const std::size_t name = r.err.find(spec.string() + ":11:3: [apk].packages chromiun");
    EXPECT_NE(version, std::string::npos) << r.err;
    EXPECT_NE(name, std::string::npos) << r.err;
    EXPECT_LT(version, name) << r.err;
  }
  EXPECT_FALSE(fs::exists(d / "pi.img"));
}

// The error points at the entry the parser read, in the [[hosts]] entry that
// has it: not at a comment or another table that happens to hold the same words.
TEST_F(PackagesRun, TheErrorPointsAtTheHostsOwnEntry) {
  fs::path spec = d / "hosts.toml";
  rpi::test::write_file(spec, "# we once had \"chromiun\" here\n[alpine]\nversion = \"3.22\"\nmirror = \"" +
                                  tree->root.string() +
                                  "\"\n[system]\nhostname = \"pi\"\n[apk]\npackages = [\"cage\"]\n"
                                  "[[hosts]]\nhostname = \"a\"\n"
                                  "[[hosts]]\nhostname = \"b\"\n[hosts.apk]\npackages = [\"cage\", \"chromiun\"]\n");
  auto r = cli({"check", "--spec", spec.string(), "--packages", "--cache-dir", (d / "cache").string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(spec.string() + ":14:21: [apk].packages chromiun (did you mean 'chromium'?)"), std::string::npos)
      << r.err;
}

// check --packages reads latest-stable as the release it is now, as a build
// does: the copies it leaves serve a later offline build.
TEST_F(PackagesRun, CheckReadsLatestStableAsTheBuildDoes) {
  fs::path spec = d / "latest.toml";
  rpi::test::write_file(spec, "[alpine]\nversion = \"latest-stable\"\nmirror = \"" + server->url() +
                                  "\"\n[system]\nhostname = \"pi\"\n[apk]\npackages = [\"cagee\"]\n");
  const std::string cache = (d / "cache").string();
  auto chk = cli({"check", "--spec", spec.string(), "--packages", "--cache-dir", cache});
  EXPECT_EQ(chk.exit_code, 2) << chk.err;
  EXPECT_NE(chk.err.find(server->url() + "/v3.22/main"), std::string::npos) << chk.err;
  ASSERT_EQ(cli({"fetch", "--version", "latest-stable", "--mirror", server->url(), "--cache-dir", cache}).exit_code, 0);
  auto off = build(spec, d / "off.img", {"--offline"});
  EXPECT_EQ(off.exit_code, 2) << off.err;
  EXPECT_NE(off.err.find("cagee (did you mean 'cage'?)"), std::string::npos) << "checked against the copies\n"
                                                                             << off.err;
}

TEST_F(PackagesRun, ALocalTarballIsNotCheckedAndThePlanSaysSo) {
  fs::path spec = spec_with("packages = [\"chromiun\"]\n");
  auto plan = build(spec, d / "p.img", {"--dry-run", "--tarball", tree->latest.string()});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_NE(plan.out.find("packages: 1 package, not checked: the tarball does not come from a mirror"),
            std::string::npos)
      << plan.out;
  EXPECT_EQ(server->requests("APKINDEX"), 0);
}

}  // namespace
