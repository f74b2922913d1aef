// `rpi-provision fetch --list` and fetch::list_releases: which Alpine releases
// a mirror offers, from its listings (a folder, or an nginx/Apache/lighttpd
// autoindex page) or, without listings, from its latest-releases.yaml files.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "fetch/fetch.hpp"
#include "mirror_fixture.hpp"
#include "rpi/text.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace rpi;
using namespace rpi::test;
using Strings = std::vector<std::string>;

namespace {

// ---- The HTML listing reader (pure) ----

TEST(ListingHrefs, NginxAutoindex) {
  const std::string page =
      "<html>\r\n<head><title>Index of /alpine/</title></head>\r\n<body>\r\n<h1>Index of /alpine/</h1><hr><pre>"
      "<a href=\"../\">../</a>\r\n"
      "<a href=\"edge/\">edge/</a>                                              08-Jan-2025 10:10    -\r\n"
      "<a href=\"latest-stable/\">latest-stable/</a>                            30-May-2025 10:10    -\r\n"
      "<a href=\"v3.21/\">v3.21/</a>                                            05-Dec-2024 10:10    -\r\n"
      "<a href=\"v3.22/\">v3.22/</a>                                            30-May-2025 10:10    -\r\n"
      "<a href=\"MIRRORS.txt\">MIRRORS.txt</a>                                  01-Jan-2025 10:10    1234\r\n"
      "</pre><hr></body>\r\n</html>\r\n";
  EXPECT_EQ(fetch::listing_hrefs(page), (Strings{"../", "edge/", "latest-stable/", "v3.21/", "v3.22/", "MIRRORS.txt"}));
  EXPECT_EQ(fetch::listing_entries(page), (Strings{"edge/", "latest-stable/", "v3.21/", "v3.22/", "MIRRORS.txt"}));
}

TEST(ListingHrefs, ApacheAutoindexWithAbsoluteHrefsAndSortLinks) {
  const std::string page =
      "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN\"><html><body><h1>Index of /alpine/v3.22/releases/"
      "aarch64</h1><table><tr><th><a href=\"?C=N;O=D\">Name</a></th><th><A HREF=\"?C=M;O=A\">Last modified</A></th>"
      "</tr><tr><td><a href=\"/alpine/v3.22/releases/\">Parent Directory</a></td></tr>"
      "<tr><td><img src=\"/icons/compressed.gif\" alt=\"[   ]\"></td><td>"
      "<a href=\"/alpine/v3.22/releases/aarch64/alpine-rpi-3.22.0-aarch64.tar.gz\">alpine-rpi-3.22.0-aarch64.tar.gz"
      "</a></td></tr><tr><td><a href=\"https://mirror.example/alpine/v3.22/releases/aarch64/"
      "alpine-rpi-3.22.1-aarch64.tar.gz?x=1\">x</a></td></tr>"
      "<tr><td><a href=\"alpine-rpi-3.22.2-aarch64.tar.gz.sha256\">sha</a></td></tr></table>"
      "<address><a href=\"mailto:webmaster@example.org\">webmaster</a> <a href=\"https://example.org\">site</a>"
      "</address></body></html>";
  EXPECT_EQ(fetch::listing_entries(page),
            (Strings{"releases/", "alpine-rpi-3.22.0-aarch64.tar.gz", "alpine-rpi-3.22.1-aarch64.tar.gz",
                     "alpine-rpi-3.22.2-aarch64.tar.gz.sha256"}));
}

TEST(ListingHrefs, LighttpdAutoindexWithSingleQuotesAndEntities) {
  const std::string page =
      "<?xml version=\"1.0\" encoding=\"utf-8\"?><html><body><table><tbody>"
      "<tr class=\"d\"><td class=\"n\"><a href=\"../\">..</a>/</td></tr>"
      "<tr><td class='n'><a class='x' href='v3.20/'>v3.20</a>/</td></tr>"
      "<tr><td class='n'><a\thref = v3.19/ >v3.19</a>/</td></tr>"
      "<tr><td class='n'><a href='odd%20name&amp;more/'>odd</a>/</td></tr>"
      "<!-- <a href='v9.9/'>commented out</a> -->"
      "</tbody></table></body></html>";
  EXPECT_EQ(fetch::listing_hrefs(page), (Strings{"../", "v3.20/", "v3.19/", "odd%20name&more/"}));
  EXPECT_EQ(fetch::listing_entries(page), (Strings{"v3.20/", "v3.19/", "odd name&more/"}));
}

TEST(ListingHrefs, HostilePages) {
  EXPECT_TRUE(fetch::listing_hrefs("").empty());
  EXPECT_TRUE(fetch::listing_hrefs("no links here, only <b>bold</b> and <abbr title=x>").empty());
  EXPECT_TRUE(fetch::listing_hrefs("<a href=\"unterminated").empty());
  EXPECT_TRUE(fetch::listing_hrefs("<a name=x>anchor</a><area href=\"v3.1/\"><!-- <a href='x'>").empty());
  // An overlong href is dropped, the next one kept.
  std::string page = "<a href=\"" + std::string(5000, 'v') + "/\">x</a><a href=\"v3.22/\">v3.22/</a>";
  EXPECT_EQ(fetch::listing_hrefs(page), (Strings{"v3.22/"}));
  // A page of 300000 links: at most 100000 are read.
  std::string huge;
  for (int i = 0; i < 300000; ++i) huge += "<a href=a>";
  EXPECT_EQ(fetch::listing_hrefs(huge).size(), 100000U);
  // Names that are no entry of the folder: "..", ".", paths that escape.
  EXPECT_TRUE(fetch::listing_entries("<a href='.'>.</a><a href='..'>..</a><a href='a/%2e%2e'>x</a>"
                                     "<a href='javascript:alert(1)'>x</a><a href='#top'>top</a>")
                  .empty());
}

// ---- A small mirror: 8 stable branches and edge, tiny "tarballs" ----

constexpr const char* kVersions[] = {"3.22.0", "3.22.1", "3.22.2", "3.21.3", "3.21.4", "3.20.5",
                                     "3.19.1", "3.18.4", "3.17.2", "3.16.0", "3.15.8", "20250108"};

class ListMirror : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_tool("python3")) GTEST_SKIP() << "tool not installed: python3 (makes and serves the test mirror)";
    root = tmp / "mirror";
    write_file(tmp / "t.tar.gz", "not really a tarball\n");
    std::vector<std::string> argv{"python3", (source_dir() / "tests/fetch/make_mirror.py").string(), "--root",
                                  root.string()};
    for (const char* v : kVersions)
      argv.insert(argv.end(), {"--release", std::string(v) + "=" + (tmp / "t.tar.gz").string()});
    CommandResult r = run(argv);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    cache = tmp / "cache";
  }
  MirrorServer& serve(const std::string& autoindex) {
    server = std::make_unique<MirrorServer>(root, tmp / ("state-" + autoindex), fs::path(), fs::path(), autoindex);
    return *server;
  }
  fetch::Options opts() {
    fetch::Options o;
    o.cache_dir = cache;
    o.retries = 1;
    o.retry_delay = std::chrono::milliseconds(10);
    o.events = [this](const Event& e) { events.push_back(e); };
    return o;
  }
  std::vector<fetch::BranchReleases> list(const std::string& mirror, bool all = false,
                                          const std::string& arch = "aarch64") {
    fetch::ListQuery q;
    q.arch = arch;
    q.mirrors = {mirror};
    q.all = all;
    return fetch::list_releases(q, opts());
  }
  static Strings branches(const std::vector<fetch::BranchReleases>& v) {
    Strings out;
    for (const auto& b : v) out.push_back(b.branch);
    return out;
  }
  static const fetch::BranchReleases& branch(const std::vector<fetch::BranchReleases>& v, const std::string& name) {
    static const fetch::BranchReleases none;
    auto it = std::find_if(v.begin(), v.end(), [&](const auto& b) { return b.branch == name; });
    EXPECT_NE(it, v.end()) << name;
    return it == v.end() ? none : *it;
  }
  // Every point release, newest 6 stable branches and edge, latest-stable marked.
  static void expect_full_list(const std::vector<fetch::BranchReleases>& v) {
    EXPECT_EQ(branches(v), (Strings{"v3.22", "v3.21", "v3.20", "v3.19", "v3.18", "v3.17", "edge"}));
    EXPECT_EQ(branch(v, "v3.22").releases, (Strings{"3.22.0", "3.22.1", "3.22.2"}));
    EXPECT_EQ(branch(v, "v3.21").releases, (Strings{"3.21.3", "3.21.4"}));
    EXPECT_EQ(branch(v, "edge").releases, (Strings{"20250108"}));
    EXPECT_EQ(branch(v, "v3.22").source, "listing");
    for (const auto& b : v) EXPECT_EQ(b.latest_stable, b.branch == "v3.22") << b.branch;
  }

  TempDir tmp;
  fs::path root, cache;
  std::unique_ptr<MirrorServer> server;
  std::vector<Event> events;
};

TEST_F(ListMirror, FolderMirror) {
  expect_full_list(list(root.string()));
  // --all: every branch.
  auto all = list(root.string(), true);
  EXPECT_EQ(branches(all), (Strings{"v3.22", "v3.21", "v3.20", "v3.19", "v3.18", "v3.17", "v3.16", "v3.15", "edge"}));
}

TEST_F(ListMirror, FileUrlMirror) {
  expect_full_list(list("file://" + root.string()));
}

TEST_F(ListMirror, NginxApacheAndLighttpdListings) {
  for (const char* style : {"nginx", "apache", "lighttpd"}) {
    SCOPED_TRACE(style);
    MirrorServer& s = serve(style);
    expect_full_list(list(s.url()));
    // Only listings and yaml files were asked for: no tarball, no digest.
    EXPECT_EQ(s.requests(".tar.gz"), 0);
    EXPECT_GT(s.requests("/releases/aarch64/"), 0);
    server.reset();
  }
}

TEST_F(ListMirror, WithoutListingsTheYamlFilesAreWalkedDown) {
  MirrorServer& s = serve("");  // folders are 404
  auto v = list(s.url(), true);
  EXPECT_EQ(branches(v), (Strings{"v3.22", "v3.21", "v3.20", "v3.19", "v3.18", "v3.17", "v3.16", "v3.15", "edge"}));
  // One release per branch: what its latest-releases.yaml names.
  EXPECT_EQ(branch(v, "v3.22").releases, (Strings{"3.22.2"}));
  EXPECT_EQ(branch(v, "v3.22").source, "index");
  EXPECT_TRUE(branch(v, "v3.22").latest_stable);
  EXPECT_EQ(branch(v, "edge").releases, (Strings{"20250108"}));
  // The walk stopped at the first branch that is not there.
  EXPECT_GT(s.requests("/v3.14/"), 0);
  EXPECT_EQ(s.requests("/v3.13/"), 0);
}

TEST_F(ListMirror, ARootThatIsNotAMirrorIsAClearError) {
  MirrorServer& s = serve("nginx");
  const std::string url = "http://user:hunter2@127.0.0.1:" + std::to_string(s.port()) + "/not-alpine";
  std::string msg = error_of([&] { list(url); }, Errc::usage);
  EXPECT_TRUE(contains(msg, "/not-alpine/latest-stable/releases/aarch64/latest-releases.yaml")) << msg;
  EXPECT_TRUE(contains(msg, "mirror root")) << msg;
  EXPECT_FALSE(contains(msg, "hunter2")) << msg;
}

TEST_F(ListMirror, AnArchWithoutAnRpiTarballSkipsEveryBranch) {
  auto v = list(root.string(), false, "armv7");
  EXPECT_TRUE(v.empty());
  v = list(root.string(), true, "armv7");  // --all says which were skipped
  ASSERT_EQ(v.size(), 9U);
  for (const auto& b : v) EXPECT_TRUE(b.releases.empty()) << b.branch;
  CommandResult r =
      cli({"fetch", "--list", "--arch", "armv7", "--mirror", root.string(), "--cache-dir", cache.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "no branch on the mirror " + root.string() + " has an alpine-rpi tarball for armv7"))
      << r.err;
  EXPECT_TRUE(contains(r.err, "--all")) << r.err;
}

TEST_F(ListMirror, CachedReleasesAreMarked) {
  fetch::Options o = opts();
  fetch::Query q;
  q.version = "3.22.1";
  q.mirrors = {root.string()};
  fetch::fetch_release(fetch::resolve(q, o), o);
  auto v = list(root.string());
  EXPECT_EQ(branch(v, "v3.22").cached, (Strings{"3.22.1"}));
  EXPECT_TRUE(branch(v, "v3.21").cached.empty());

  CommandResult r = cli({"fetch", "--list", "--mirror", root.string(), "--cache-dir", cache.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "v3.22  3.22.0 3.22.1* 3.22.2   (latest-stable)\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "v3.21  3.21.3 3.21.4\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "edge   20250108\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "* in the cache (" + cache.string() + ")")) << r.out;
  EXPECT_TRUE(contains(r.out, "set [alpine] version = \"3.22\" (newest of a branch) or \"3.22.2\" (exactly)")) << r.out;
  EXPECT_FALSE(contains(r.out, "v3.16")) << r.out;  // without --all: the newest 6 stable branches
  r = cli({"fetch", "--list", "--all", "--mirror", root.string(), "--cache-dir", cache.string()});
  EXPECT_TRUE(contains(r.out, "v3.15  3.15.8\n")) << r.out;
}

TEST_F(ListMirror, JsonHasOneEventPerBranch) {
  fetch::Options o = opts();
  fetch::Query q;
  q.version = "3.21.3";
  q.mirrors = {root.string()};
  fetch::fetch_release(fetch::resolve(q, o), o);
  MirrorServer& s = serve("apache");
  CommandResult r = cli({"--json", "fetch", "--list", "--mirror", s.url(), "--cache-dir", cache.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out,
                       "{\"type\":\"release_branch\",\"branch\":\"v3.22\",\"arch\":\"aarch64\",\"releases\":"
                       "[\"3.22.0\",\"3.22.1\",\"3.22.2\"],\"latest_stable\":true,\"cached\":[]"))
      << r.out;
  EXPECT_TRUE(contains(r.out,
                       "\"branch\":\"v3.21\",\"arch\":\"aarch64\",\"releases\":[\"3.21.3\",\"3.21.4\"],"
                       "\"latest_stable\":false,\"cached\":[\"3.21.3\"]"))
      << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 7) << r.out;  // 6 stable + edge, no hint
  EXPECT_FALSE(contains(r.out, "set [alpine]")) << r.out;
}

TEST_F(ListMirror, VerboseShowsEachRequestAndHidesThePassword) {
  MirrorServer& s = serve("lighttpd");
  const std::string url = "http://user:hunter2@127.0.0.1:" + std::to_string(s.port());
  CommandResult r = cli({"-v", "fetch", "--list", "--mirror", url, "--cache-dir", cache.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "/v3.22/releases/aarch64/: HTTP 200")) << r.err;
  EXPECT_TRUE(contains(r.err, "latest-stable/releases/aarch64/latest-releases.yaml: HTTP 200")) << r.err;
  EXPECT_FALSE(contains(r.err + r.out, "hunter2")) << r.err << r.out;
}

// A folder mirror has no GET lines: each listing and yaml file it reads (or
// finds absent) gets a detail line of its own, and no file is told one by one.
TEST_F(ListMirror, VerboseTellsEachReadOfAFolderMirror) {
  expect_full_list(list(root.string()));
  std::vector<std::string> details;
  for (const auto& e : events)
    if (e.type == "detail") details.push_back(e.message);
  auto count = [&](const std::string& start) {
    return std::count_if(details.begin(), details.end(), [&](const std::string& d) { return d.starts_with(start); });
  };
  const std::string all = join(details, "\n");
  // 8 stable branches, edge and latest-stable.
  EXPECT_EQ(count("listed " + root.string() + "/: 10 entries in "), 1) << all;
  // The newest 6 stable branches and edge: their releases folders (each
  // release's tarball, .sha256 and .sha512, and the branch's yaml).
  for (const auto& [b, n] : std::vector<std::pair<std::string, int>>{
           {"v3.22", 10}, {"v3.21", 7}, {"v3.20", 4}, {"v3.19", 4}, {"v3.18", 4}, {"v3.17", 4}, {"edge", 4}})
    EXPECT_EQ(count("listed " + root.string() + "/" + b + "/releases/aarch64/: " + std::to_string(n) + " entries in "),
              1)
        << b << "\n"
        << all;
  EXPECT_EQ(count("listed " + root.string() + "/v3.16/"), 0) << all;  // not listed without --all
  // latest-stable's index tells its branch: read once (3 items: the tarball, an image, another flavor).
  EXPECT_EQ(count("read " + root.string() + "/latest-stable/releases/aarch64/latest-releases.yaml: 3 entries, "), 1)
      << all;
  // Those lines and the summary, nothing per file.
  EXPECT_EQ(details.size(), 10U) << all;
  EXPECT_FALSE(contains(all, ".tar.gz")) << all;

  // What is absent is said too: an arch the mirror has no folder or index for, through the CLI.
  const std::string url = "file://" + root.string();
  CommandResult r = cli({"-v", "fetch", "--list", "--arch", "armv7", "--mirror", url, "--cache-dir", cache.string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(
      contains(r.err, "debug: " + root.string() + "/latest-stable/releases/armv7/latest-releases.yaml: absent\n"))
      << r.err;
  EXPECT_TRUE(contains(r.err, "debug: " + root.string() + "/v3.22/releases/armv7/: absent (no such folder to list)\n"))
      << r.err;
  EXPECT_TRUE(contains(r.err, "debug: " + root.string() + "/v3.22/releases/armv7/latest-releases.yaml: absent\n"))
      << r.err;
  EXPECT_TRUE(contains(r.err, "debug: listed " + root.string() + "/: 10 entries in ")) << r.err;
}

// fetch --list -v of a folder mirror parses each latest-releases.yaml it reads
// once, for its detail line and for what it tells together (it was parsed
// for each). Oracle: gdb counts the calls of yaml-cpp's
// YAML::Load(std::istream&), which every parse of a text goes through, against
// the yaml files the detail lines say were read. It can miss a second parse
// made by another yaml-cpp entry point (none is used).
TEST_F(ListMirror, VerboseParsesEachYamlFileOnce) {
  if (!have_tool("gdb")) GTEST_SKIP() << "tool not installed: gdb (counts the parses)";
  CommandResult r = run(without_leak_check({"gdb", "-batch", "-nx", "-q", "-ex", "set breakpoint pending on", "-ex",
                                            "dprintf YAML::Load(std::istream&),\"yaml-parse\\n\"", "-ex", "run",
                                            "--args", cli_path().string(), "-v", "fetch", "--list", "--mirror",
                                            "file://" + root.string(), "--cache-dir", cache.string()}));
  if (!contains(r.out, "[Inferior 1 (process "))
    GTEST_SKIP() << "gdb cannot run the program here (ptrace not permitted?)\n" << r.out << r.err;
  ASSERT_TRUE(contains(r.out, "exited normally]")) << r.out << r.err;
  auto count = [](const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
    return n;
  };
  const std::size_t parses = count(r.out, "yaml-parse\n");
  if (parses == 0) GTEST_SKIP() << "gdb sees no YAML::Load (yaml-cpp linked statically or without symbols)";
  const std::size_t read = count(r.out + r.err, "debug: read " + root.string() + "/");
  EXPECT_EQ(read, 1U) << r.out << r.err;  // latest-stable's, which names the branch
  EXPECT_TRUE(contains(r.out + r.err, "/latest-stable/releases/aarch64/latest-releases.yaml: 3 entries, "))
      << r.out << r.err;
  EXPECT_EQ(parses, read) << r.out << r.err;
}

TEST_F(ListMirror, TheNextMirrorIsTriedWhenTheFirstFails) {
  MirrorServer& s = serve("nginx");
  CommandResult r = cli({"fetch", "--list", "--mirror", s.url() + "/nothing-here", "--mirror", root.string(),
                         "--cache-dir", cache.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "v3.22  3.22.0 3.22.1 3.22.2")) << r.out;
  EXPECT_TRUE(contains(r.err, "trying the next mirror")) << r.err;
}

TEST_F(ListMirror, UsageErrors) {
  CommandResult r = cli({"fetch", "--list", "--offline", "--mirror", root.string(), "--cache-dir", cache.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--offline")) << r.err;
  EXPECT_TRUE(contains(r.err, "rpi-provision cache list")) << r.err;
  for (const Strings& extra : {Strings{"--version", "3.22"}, Strings{"--tarball", "x.tar.gz"},
                               Strings{"--sha256", std::string(64, 'a')}, Strings{"--verify-signature"}}) {
    Strings args{"fetch", "--list", "--mirror", root.string(), "--cache-dir", cache.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    r = cli(args);
    EXPECT_EQ(r.exit_code, 2) << extra[0];
    EXPECT_TRUE(contains(r.err, extra[0] + " cannot be used with --list")) << r.err;
  }
  r = cli({"fetch", "--all", "--mirror", root.string(), "--cache-dir", cache.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--all goes with --list")) << r.err;
  r = cli({"fetch", "--list", "--arch", "riscv64", "--mirror", root.string(), "--cache-dir", cache.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "riscv64")) << r.err;
}

TEST_F(ListMirror, TheSpecGivesArchAndMirror) {
  write_file(tmp / "pi.toml", "[alpine]\nversion = \"3.21\"\narch = \"armhf\"\nmirror = \"" + root.string() + "\"\n");
  CommandResult r = cli({"fetch", "--list", "--spec", (tmp / "pi.toml").string(), "--cache-dir", cache.string()});
  EXPECT_EQ(r.exit_code, 2);  // the mirror has no armhf tarball: the spec's arch was used
  EXPECT_TRUE(contains(r.err, "for armhf")) << r.err;
  r = cli(
      {"fetch", "--list", "--spec", (tmp / "pi.toml").string(), "--arch", "aarch64", "--cache-dir", cache.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;  // the spec's mirror, the flag's arch
  EXPECT_TRUE(contains(r.out, "v3.21  3.21.3 3.21.4\n")) << r.out;
}

}  // namespace
