// Package indexes (APKINDEX.tar.gz) as Alpine publishes them: read, looked up,
// cached. The fixture is written by make_mirror.py (Python's tarfile and gzip);
// GNU tar and busybox tar confirm it is the layout apk reads, two gzip members
// that form one tar stream.
#include <gtest/gtest.h>

#include <chrono>
#include <regex>

#include "fetch/fetch.hpp"
#include "mirror_fixture.hpp"
#include "rpi/error.hpp"
#include "rpi/size.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace rpi;
using namespace rpi::test;

namespace {

using PackageIndexTest = MirrorTest;

// Writes `file` with Python: `members` is an expression of the bytes to write,
// in which tar(name, data) is a tar holding one file (end blocks included).
void make_index(const fs::path& file, const std::string& members) {
  CommandResult r = run({"python3", "-c",
                         "import gzip, io, sys, tarfile\n"
                         "def tar(name, data):\n"
                         "    buf = io.BytesIO()\n"
                         "    with tarfile.open(fileobj=buf, mode='w') as t:\n"
                         "        i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))\n"
                         "    return buf.getvalue()\n"
                         "open(sys.argv[1], 'wb').write(" +
                             members + ")\n",
                         file.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(PackageIndexTest, ReadsAlpinesTwoMemberIndexWithItsNamesSizesDependenciesAndProvides) {
  const fs::path file = tree->root / "v3.22/main/aarch64/APKINDEX.tar.gz";
  // The oracle for the layout: both tars see the signature, then the index.
  CommandResult gnu = run({"tar", "-tzf", file.string()});
  ASSERT_EQ(gnu.exit_code, 0) << gnu.err;
  EXPECT_EQ(gnu.out, ".SIGN.RSA.test@example.org-00000000.rsa.pub\nDESCRIPTION\nAPKINDEX\n");
  if (have_tool("busybox")) {
    CommandResult bb = run({"busybox", "tar", "-tzf", file.string()});
    EXPECT_EQ(bb.out, gnu.out) << bb.err;
  }

  fetch::PackageIndex idx = fetch::parse_package_index(read_file(file), "main");
  EXPECT_EQ(idx.packages.size(), 10u);
  const fetch::Package* htop = idx.find("htop");
  ASSERT_NE(htop, nullptr);
  EXPECT_EQ(htop->version, "3.4.1-r0");
  EXPECT_EQ(htop->size, 150000u);
  EXPECT_EQ(htop->installed_size, 450000u);
  EXPECT_EQ(htop->depends, (std::vector<std::string>{"so:libc.musl-aarch64.so.1", "so:libncursesw.so.6"}));
  EXPECT_EQ(htop->provides, (std::vector<std::string>{"cmd:htop"}));
  // What packages provide is looked up too, without its version.
  ASSERT_NE(idx.find("so:libncursesw.so.6"), nullptr);
  EXPECT_EQ(idx.find("so:libncursesw.so.6")->name, "ncurses-libs");
  ASSERT_NE(idx.find("cmd:sh"), nullptr);
  EXPECT_EQ(idx.find("cmd:sh")->name, "busybox");
  EXPECT_EQ(idx.find("chromium"), nullptr) << "chromium is in community, not main";
  EXPECT_EQ(idx.find("so:libncursesw.so.6=6.5"), nullptr);
}

// An index whose signature tar was not cut (end blocks before the index tar)
// is read too: other signing tools than abuild-tar leave them.
TEST(PackageIndex, ASignatureTarWithItsEndBlocksIsReadPast) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  const fs::path file = d / "APKINDEX.tar.gz";
  make_index(file,
             "gzip.compress(tar('.SIGN.RSA.k.rsa.pub', b'x' * 256)) + "
             "gzip.compress(tar('APKINDEX', b'P:htop\\nV:3.4.1-r0\\nS:150000\\n\\n'))");
  fetch::PackageIndex idx = fetch::parse_package_index(read_file(file), "uncut");
  ASSERT_NE(idx.find("htop"), nullptr);
  EXPECT_EQ(idx.find("htop")->size, 150000u);
}

TEST(PackageIndex, WhatIsNoIndexIsRefusedByName) {
  try {
    fetch::parse_package_index("not a tarball at all", "https://m/v3.22/main/aarch64/APKINDEX.tar.gz");
    FAIL() << "garbage was read as an index";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::input);
    EXPECT_NE(std::string(e.what()).find("https://m/v3.22/main/aarch64/APKINDEX.tar.gz is not an APKINDEX.tar.gz"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(fetch::parse_package_index("", "empty"), Error) << "an empty answer";
  // A real tar.gz without an APKINDEX member (a release tarball, say).
  TempDir d;
  write_file(d / "README", "hello\n");
  CommandResult t = run({"tar", "-czf", (d / "x.tar.gz").string(), "-C", d.path().string(), "README"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  try {
    fetch::parse_package_index(read_file(d / "x.tar.gz"), "x.tar.gz");
    FAIL() << "a tarball without APKINDEX was read as an index";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::input);
    EXPECT_NE(std::string(e.what()).find("x.tar.gz holds no APKINDEX file"), std::string::npos) << e.what();
  }
}

// A mirror's index that unpacks to more than any real one (a gzip bomb) is
// refused once 64 MiB are read, not read into memory to its end.
TEST(PackageIndex, AnIndexUnpackingPastItsCapIsRefused) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  const fs::path bomb = d / "APKINDEX.tar.gz";
  make_index(bomb, "gzip.compress(tar('APKINDEX', b'P:a\\n' * (24 << 20)), 9)");
  ASSERT_LT(fs::file_size(bomb), 1u << 20) << "the bomb is small on the wire";
  try {
    fetch::parse_package_index(read_file(bomb), "bomb");
    FAIL() << "72 MiB of index were read";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::input);
    EXPECT_STREQ(e.what(), "bomb: its APKINDEX is larger than 64 MiB");
  }
}

TEST_F(PackageIndexTest, IsFetchedOnceADayAndReadFromTheCacheOffline) {
  MirrorServer& s = serve();
  const std::string main = s.url() + "/v3.22/main";
  auto first = fetch::load_package_index(main, "aarch64", opts());
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->source, main + "/aarch64/APKINDEX.tar.gz");
  EXPECT_NE(first->find("htop"), nullptr);
  EXPECT_EQ(s.requests("APKINDEX"), 1);
  // Within the day: the copy. A trailing slash is the same repository.
  auto again = fetch::load_package_index(main + "/", "aarch64", opts());
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(s.requests("APKINDEX"), 1) << "a fresh copy must not be fetched again";
  // Older than allowed: fetched again.
  ASSERT_TRUE(fetch::load_package_index(main, "aarch64", opts(), std::chrono::seconds(0)).has_value());
  EXPECT_EQ(s.requests("APKINDEX"), 2);

  // Stale, and the repository fails: the old copy serves, and a note says so.
  s.set_faults(R"([{"path": "APKINDEX", "kind": "status", "n": 503, "times": 100}])");
  auto fallback = fetch::load_package_index(main, "aarch64", opts(), std::chrono::seconds(0));
  ASSERT_TRUE(fallback.has_value()) << said_all();
  EXPECT_EQ(said("note", "using the copy of " + main + "/aarch64/APKINDEX.tar.gz from 0 hours ago").size(), 1u)
      << said_all();
  s.set_faults("[]");
  const int before_offline = s.requests("APKINDEX");

  fetch::Options off = opts();
  off.offline = true;
  auto offline = fetch::load_package_index(main, "aarch64", off, std::chrono::seconds(0));
  ASSERT_TRUE(offline.has_value()) << "offline, any cached copy serves";
  EXPECT_EQ(offline->packages.size(), 10u);
  off.cache_dir = tmp / "empty-cache";
  EXPECT_FALSE(fetch::load_package_index(main, "aarch64", off).has_value());
  EXPECT_EQ(s.requests("APKINDEX"), before_offline) << "offline must not touch the network";

  // A repository without an index for the arch: nothing, not an error.
  EXPECT_FALSE(fetch::load_package_index(s.url() + "/v3.22/testing", "aarch64", opts()).has_value());
  EXPECT_FALSE(fetch::load_package_index(main, "armv7", opts()).has_value());
}

TEST_F(PackageIndexTest, ALocalMirrorIsReadInPlace) {
  auto idx = fetch::load_package_index((tree->root / "v3.22/community").string(), "aarch64", opts());
  ASSERT_TRUE(idx.has_value());
  ASSERT_NE(idx->find("chromium"), nullptr);
  EXPECT_EQ(idx->find("chromium")->size, 300000000u);
  auto by_url = fetch::load_package_index("file://" + (tree->root / "v3.22/community").string(), "aarch64", opts());
  ASSERT_TRUE(by_url.has_value());
  EXPECT_EQ(by_url->packages.size(), 2u);
  EXPECT_FALSE(fs::exists(cache / "indexes")) << "a local index needs no copy";
}

TEST_F(PackageIndexTest, AnUnreachableRepositoryIsANetworkErrorWithoutItsPassword) {
  fetch::Options o = opts();
  o.retries = 0;
  o.connect_timeout_s = 2;
  try {
    fetch::load_package_index("http://user:secret@127.0.0.1:1/alpine/v3.22/main", "aarch64", o);
    FAIL() << "port 1 answered";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::network) << e.what();
    EXPECT_EQ(std::string(e.what()).find("secret"), std::string::npos) << e.what();
  }
}

// The index request's "detail" (for -v) names the URL and its answer, with the
// repository's password hidden: load_package_index says nothing else with it.
TEST_F(PackageIndexTest, TheRequestDetailHidesThePassword) {
  MirrorServer& s = serve();
  const std::string port = s.url().substr(s.url().rfind(':') + 1);
  auto idx = fetch::load_package_index("http://u:pw-4kQz9@127.0.0.1:" + port + "/v3.22/main", "aarch64", opts());
  ASSERT_TRUE(idx.has_value());
  const auto got =
      said("detail", "GET http://u:***@127.0.0.1:" + port + "/v3.22/main/aarch64/APKINDEX.tar.gz: HTTP 200, ");
  EXPECT_EQ(got.size(), 1u) << said_all();
  std::lock_guard lock(mu);
  for (const auto& e : events) {
    EXPECT_EQ(e.message.find("pw-4kQz9"), std::string::npos) << e.type << ": " << e.message;
    EXPECT_EQ(e.subject.find("pw-4kQz9"), std::string::npos) << e.type << ": " << e.subject;
  }
}

// Each way an index is had is one "detail" (for -v) naming its URL, with the
// packages it holds and the time: downloaded (with its size, the copy kept),
// the fresh copy used (its age), downloaded again when the copy is too old,
// the old copy when the repository fails, offline with and without a copy,
// no index there, and a local repository read in place.
TEST_F(PackageIndexTest, EachWayTheIndexIsHadIsATimedDetail) {
  MirrorServer& s = serve();
  const std::string main = s.url() + "/v3.22/main";
  const std::string url = main + "/aarch64/APKINDEX.tar.gz";
  const std::string kept = (cache / "indexes").string();
  const std::regex timed(R"((in|after) [0-9]+\.[0-9]{2} s)");
  // The one detail said since the last call, which must start with `start` and contain `part`.
  std::size_t seen = 0;
  auto next_detail = [&](const std::string& start, const std::string& part) {
    std::lock_guard lock(mu);
    std::vector<std::string> got;
    for (std::size_t i = seen; i < events.size(); ++i)
      if (events[i].type == "detail" && events[i].message.starts_with("package index "))
        got.push_back(events[i].message);
    seen = events.size();
    EXPECT_EQ(got.size(), 1u);
    if (got.size() != 1) return;
    EXPECT_TRUE(got[0].starts_with(start)) << got[0];
    EXPECT_TRUE(contains(got[0], part)) << got[0];
    EXPECT_TRUE(std::regex_search(got[0], timed)) << got[0];
  };
  const std::size_t bytes = read_file(tree->root / "v3.22/main/aarch64/APKINDEX.tar.gz").size();
  ASSERT_TRUE(fetch::load_package_index(main, "aarch64", opts()).has_value());
  next_detail("package index " + url + ": downloaded, " + format_size(bytes) +
                  " (no copy in the cache); a copy kept in " + kept + ", 10 packages, in ",
              "");
  ASSERT_TRUE(fetch::load_package_index(main, "aarch64", opts()).has_value());
  next_detail("package index " + url + ": the copy kept in " + kept + " from 0 minutes ago used (younger than 24 hours",
              ", 10 packages, in ");
  ASSERT_TRUE(fetch::load_package_index(main, "aarch64", opts(), std::chrono::seconds(0)).has_value());
  next_detail("package index " + url + ": downloaded, ", "(the copy from 0 minutes ago was too old)");
  s.set_faults(R"([{"path": "APKINDEX", "kind": "status", "n": 503, "times": 100}])");
  ASSERT_TRUE(fetch::load_package_index(main, "aarch64", opts(), std::chrono::seconds(0)).has_value());
  next_detail("package index " + url + ": the repository failed after ", "; the copy from 0 minutes ago used instead");
  s.set_faults("[]");
  fetch::Options off = opts();
  off.offline = true;
  ASSERT_TRUE(fetch::load_package_index(main, "aarch64", off, std::chrono::seconds(0)).has_value());
  next_detail("package index " + url + ": the copy kept in ", "(offline: a copy of any age serves), 10 packages");
  off.cache_dir = tmp / "empty-cache";
  EXPECT_FALSE(fetch::load_package_index(main, "aarch64", off).has_value());
  {
    std::lock_guard lock(mu);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().message, "package index " + url + ": offline, and the cache has no copy of it");
    seen = events.size();
  }
  EXPECT_FALSE(fetch::load_package_index(main, "armv7", opts()).has_value());
  next_detail("package index " + main + "/armv7/APKINDEX.tar.gz: the repository has none (looked in ", "");
  const std::string local = (tree->root / "v3.22/community").string();
  ASSERT_TRUE(fetch::load_package_index(local, "aarch64", opts()).has_value());
  next_detail("package index " + local + "/aarch64/APKINDEX.tar.gz: read in place (a local repository: no copy kept)",
              ", 2 packages, in ");
}

}  // namespace
