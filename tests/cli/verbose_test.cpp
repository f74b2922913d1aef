// -v: the step-by-step trail ("debug: " lines on stderr, "detail" JSON events
// with --json) of where the tarball comes from, the requests made, the cache,
// the image build and each phase of a card write. Only presence, absence and
// form are checked: never how long a step took.
#include <gtest/gtest.h>

#include <algorithm>
#include <regex>
#include <string>
#include <vector>

#include "mirror_fixture.hpp"
#include "test_support.hpp"

using rpi::test::cli;
using rpi::test::contains;
using rpi::test::TempDir;
namespace fs = std::filesystem;

namespace {

// The stderr lines that are details, without their "debug: " prefix.
std::vector<std::string> details(const std::string& err) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at < err.size()) {
    std::size_t nl = err.find('\n', at);
    if (nl == std::string::npos) nl = err.size();
    const std::string line = err.substr(at, nl - at);
    if (line.starts_with("debug: ")) out.push_back(line.substr(7));
    at = nl + 1;
  }
  return out;
}

// The one detail that contains every one of `parts` ("" when none does).
std::string detail_with(const std::vector<std::string>& lines, const std::vector<std::string>& parts) {
  for (const auto& l : lines) {
    bool all = true;
    for (const auto& p : parts) all = all && contains(l, p);
    if (all) return l;
  }
  return {};
}

// A step's time as details write it: "in 0.84 s" (any number).
bool timed(const std::string& line) {
  return std::regex_search(line, std::regex(R"((in|after|waited) [0-9]+\.[0-9]{2} s)"));
}

std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

// The small fixture tarball of the other CLI tests (cli_support.hpp, whose
// contains() mirror_fixture.hpp has too).
fs::path tarball() {
  return rpi::test::fixture_tarball({"--size-mb", "4"});
}

fs::path small_spec(const TempDir& d) {
  const fs::path spec = d / "pi.toml";
  rpi::test::write_file(spec, "[system]\nhostname = \"pi-v\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  return spec;
}

}  // namespace

// An --output build: with -v the tarball's source and cache, the walk of the
// tarball and the image written; without -v not one of them.
TEST(Verbose, AnOutputBuildTellsItsStepsOnlyWithV) {
  TempDir d;
  const std::string t = tarball().string();
  const std::string img = (d / "v.img").string();
  const std::vector<std::string> args = {"--spec", small_spec(d).string(), "--tarball",           t, "--output",
                                         img,      "--cache-dir",          (d / "cache").string()};
  std::vector<std::string> with_v = args;
  with_v.push_back("-v");
  auto v = cli(with_v);
  ASSERT_EQ(v.exit_code, 0) << v.err;
  const auto lines = details(v.err);
  EXPECT_NE(detail_with(lines, {"tarball: " + t + " (local file); cache: " + (d / "cache").string()}), "") << v.err;
  const std::string walk = detail_with(lines, {"read " + t + " (", "entries", "of files into " + img});
  EXPECT_NE(walk, "") << v.err;
  EXPECT_TRUE(timed(walk)) << walk;
  const std::string wrote = detail_with(lines, {"wrote " + img + ": ", "files", "mapped"});
  EXPECT_NE(wrote, "") << v.err;
  EXPECT_TRUE(timed(wrote)) << wrote;
  // Details go to stderr: stdout has the result alone.
  EXPECT_FALSE(contains(v.out, "debug: ")) << v.out;

  fs::remove(img);
  fs::remove(img + ".bmap");
  auto plain = cli(args);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_FALSE(contains(plain.err + plain.out, "debug: ")) << plain.err;
  EXPECT_FALSE(contains(plain.err, "entries")) << plain.err;
  EXPECT_TRUE(fs::exists(img));
}

// With --json, details are "detail" lines (type, subject, message: nothing
// else) among the other JSON lines, only with -v; -q -v prints no detail.
TEST(Verbose, JsonDetailsAreParseableLinesAndQuietWinsForHumans) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  const std::string t = tarball().string();
  const std::string img = (d / "j.img").string();
  const std::vector<std::string> base = {"--spec", small_spec(d).string(), "--tarball", t, "--output", img};
  // Each line: its type; a detail: "detail", then its subject and message, or BAD with its keys.
  const std::string script =
      "import json,sys\n"
      "for line in sys.stdin:\n"
      "    e = json.loads(line)\n"
      "    if e['type'] != 'detail':\n"
      "        print(e['type'])\n"
      "    elif set(e) <= {'type','subject','message'} and isinstance(e['message'], str) and "
      "isinstance(e.get('subject', ''), str):\n"
      "        print('detail\\t' + e.get('subject', '') + '\\t' + e['message'])\n"
      "    else:\n"
      "        print('BAD ' + ' '.join(sorted(e)))\n";
  std::vector<std::string> args = base;
  args.insert(args.end(), {"--json", "-v"});
  auto j = cli(args);
  ASSERT_EQ(j.exit_code, 0) << j.err << j.out;
  EXPECT_EQ(j.err, "") << "--json writes nothing on stderr";
  auto parsed = rpi::test::run({"python3", "-c", script}, j.out);
  ASSERT_EQ(parsed.exit_code, 0) << "not JSON Lines:\n" << j.out << parsed.err;
  EXPECT_FALSE(contains(parsed.out, "BAD")) << parsed.out;
  EXPECT_TRUE(contains(parsed.out, "detail\ttarball\ttarball: " + t + " (local file); cache: ")) << parsed.out;
  EXPECT_TRUE(contains(parsed.out, "\tread " + t + " (")) << parsed.out;
  EXPECT_TRUE(contains(parsed.out, "detail\t" + img + "\twrote " + img + ": ")) << parsed.out;
  EXPECT_TRUE(contains(parsed.out, "build\n")) << parsed.out;  // the result is still there

  fs::remove(img);
  fs::remove(img + ".bmap");
  args = base;
  args.push_back("--json");
  auto no_v = cli(args);
  ASSERT_EQ(no_v.exit_code, 0) << no_v.err;
  EXPECT_FALSE(contains(no_v.out, "\"detail\"")) << no_v.out;

  fs::remove(img);
  fs::remove(img + ".bmap");
  args = base;
  args.insert(args.end(), {"-q", "-v"});
  auto q = cli(args);
  ASSERT_EQ(q.exit_code, 0) << q.err;
  EXPECT_FALSE(contains(q.err, "debug: ")) << q.err;
  EXPECT_FALSE(contains(q.err, "entries")) << q.err;
}

// A card run on a file standing in for a card: how it was opened and each
// phase of the write, one line each, naming the card.
TEST(Verbose, AFlashToAFileTellsEachPhase) {
  TempDir d;
  const fs::path card = d / "card.bin";
  rpi::test::write_file(card, std::string(1 << 20, 'x'));
  fs::resize_file(card, 128u << 20);
  const std::string c = card.string();
  auto r = cli({"--spec", small_spec(d).string(), "--tarball", tarball().string(), "--size", "64MiB", "--device", c,
                "--yes", "--wipe", "-v"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const auto lines = details(r.err);
  const std::string all = joined(lines);
  EXPECT_NE(detail_with(lines, {c + ": regular file of 128 MiB, opened buffered", "64 MiB"}), "") << all;
  // The phases in the order they run, each timed.
  const std::vector<std::string> phases = {c + ": wipe: 128 MiB erased (",
                                           c + ": invalidated: first and last MiB zeroed and flushed in ",
                                           c + ": body (all but the first MiB): ",
                                           c + ": flush (fdatasync) in ",
                                           c + ": head (the first MiB, MBR last): ",
                                           c + ": flush (fdatasync) in ",
                                           c + ": verify: "};
  std::size_t from = 0;
  for (const auto& p : phases) {
    std::size_t i = from;
    while (i < lines.size() && !lines[i].starts_with(p)) ++i;
    ASSERT_LT(i, lines.size()) << "no '" << p << "' after the line " << from << ":\n" << all;
    EXPECT_TRUE(timed(lines[i])) << lines[i];
    from = i + 1;
  }
  // A file has no capacity probes (those are for block devices).
  EXPECT_EQ(detail_with(lines, {"capacity"}), "") << all;

  auto quiet = cli(
      {"--spec", small_spec(d).string(), "--tarball", tarball().string(), "--size", "64MiB", "--device", c, "--yes"});
  ASSERT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_FALSE(contains(quiet.err, "debug: ")) << quiet.err;
}

// A download from the loopback mirror: each request's URL and answer, the
// resumed request's Range, the mirror moved on to, the digests and the cache
// hit of the next run; the mirror's password never shows.
TEST(Verbose, AFetchNamesItsRequestsAndNeverThePassword) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  rpi::test::MirrorTree tree(d.path());
  rpi::test::MirrorServer server(tree.root, d / "state");
  // The first tarball request is cut after 100000 bytes: the retry resumes there.
  server.set_faults(R"([{"path": "tar.gz", "kind": "cut", "n": 100000, "times": 1}])");
  const std::string password = "pw-7Hq2kXz9";
  const std::string url = server.url();  // http://127.0.0.1:PORT
  const std::string with_password = "http://mirror-user:" + password + "@" + url.substr(7);
  const std::string shown = "http://mirror-user:***@" + url.substr(7);
  const std::string dead = "http://127.0.0.1:1";  // nothing listens there: refused at once
  const std::string cache = (d / "cache").string();
  const std::vector<std::string> args = {"fetch",    "--version",   "3.22",        "--mirror", dead,
                                         "--mirror", with_password, "--cache-dir", cache,      "-v"};
  auto r = cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_FALSE(contains(r.out + r.err, password)) << r.err;
  const auto lines = details(r.err);
  const std::string all = joined(lines);
  EXPECT_NE(detail_with(lines, {"GET " + dead + "/v3.22/releases/aarch64/latest-releases.yaml: no answer"}), "") << all;
  EXPECT_NE(detail_with(lines, {"moving on to mirror " + shown, dead + " failed after "}), "") << all;
  const std::string index =
      detail_with(lines, {"GET " + shown + "/v3.22/releases/aarch64/latest-releases.yaml: HTTP 200, "});
  EXPECT_NE(index, "") << all;
  EXPECT_TRUE(timed(index)) << index;
  const std::string tar_url = shown + "/v3.22/releases/aarch64/" + tree.latest_file;
  EXPECT_NE(detail_with(lines, {"GET " + tar_url}), "") << all;
  EXPECT_NE(detail_with(lines, {"GET " + tar_url + " (Range: bytes=100000-"}), "") << all;
  const std::string resumed = detail_with(lines, {tar_url + ": HTTP 206, "});
  EXPECT_NE(resumed, "") << all;
  EXPECT_TRUE(timed(resumed)) << resumed;
  EXPECT_NE(detail_with(lines, {"cache miss: " + tree.latest_file}), "") << all;
  const std::string digests = detail_with(lines, {tree.latest_file + ": " + std::to_string(fs::file_size(tree.latest)) +
                                                  " bytes, sha256 " + rpi::test::sha256_of(tree.latest)});
  EXPECT_NE(digests, "") << all;
  EXPECT_TRUE(timed(digests)) << digests;

  // Again: from the cache, checked.
  auto hit = cli(args);
  ASSERT_EQ(hit.exit_code, 0) << hit.err;
  const std::string hit_line = detail_with(details(hit.err), {"cache hit: ", tree.latest_file, "size and sha256"});
  EXPECT_NE(hit_line, "") << hit.err;
  EXPECT_TRUE(timed(hit_line)) << hit_line;
  EXPECT_FALSE(contains(hit.out + hit.err, password)) << hit.err;

  // The same in JSON: the password is in no detail either.
  std::vector<std::string> json_args = args;
  json_args.push_back("--json");
  auto j = cli(json_args);
  ASSERT_EQ(j.exit_code, 0) << j.err;
  EXPECT_TRUE(contains(j.out, "\"type\":\"detail\"")) << j.out;
  EXPECT_FALSE(contains(j.out + j.err, password)) << j.out;
}

// --image pi.img.xz: the probe (the xz index and the .bmap read before any
// card is opened) and the decompression (bytes read and out), each a timed
// detail naming the compressed file; without -v neither.
TEST(Verbose, ACompressedImageTellsItsProbeAndItsDecompression) {
  TempDir d;
  const fs::path xz = d / "pi.img.xz";
  auto built = cli(
      {"--spec", small_spec(d).string(), "--tarball", tarball().string(), "--size", "64MiB", "--output", xz.string()});
  ASSERT_EQ(built.exit_code, 0) << built.err;
  ASSERT_TRUE(fs::exists(d / "pi.img.xz.bmap")) << "--output writes a .bmap with the image";
  const std::string x = xz.string();
  const fs::path card = d / "card.img";  // a file standing in for a card
  rpi::test::write_file(card, std::string(1 << 20, 'x'));
  fs::resize_file(card, 128u << 20);
  const std::vector<std::string> args = {"--image", x, "--device", card.string(), "--yes"};
  std::vector<std::string> with_v = args;
  with_v.push_back("-v");
  auto v = cli(with_v);
  ASSERT_EQ(v.exit_code, 0) << v.err << v.out;
  const auto lines = details(v.err);
  const std::string all = joined(lines);
  const std::string probe =
      detail_with(lines, {"probed " + x + " in ", ": xz, ",
                          "; 64 MiB decompressed (its xz index says); block map " + x + ".bmap (64 MiB image, "});
  EXPECT_NE(probe, "") << all;
  EXPECT_TRUE(timed(probe)) << probe;
  const std::string dec = detail_with(
      lines, {"decompressed " + x + " (xz): ", " read", " out (", " range checksums in " + x + ".bmap matched"});
  EXPECT_NE(dec, "") << all;
  EXPECT_TRUE(timed(dec)) << dec;
  // Probed, then decompressed, then the card written.
  const auto at = [&](const std::string& line) { return std::find(lines.begin(), lines.end(), line) - lines.begin(); };
  const std::string opened = detail_with(lines, {card.string() + ": regular file of 128 MiB"});
  ASSERT_NE(opened, "") << all;
  EXPECT_LT(at(probe), at(dec)) << all;
  EXPECT_LT(at(dec), at(opened)) << all;

  auto plain = cli(args);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_FALSE(contains(plain.err + plain.out, "debug: ")) << plain.err;
  EXPECT_FALSE(contains(plain.err, "probed ")) << plain.err;

  // --dry-run probes the same way (it decompresses nothing): the same probe line.
  with_v.push_back("--dry-run");
  auto plan = cli(with_v);
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  const auto plan_lines = details(plan.err);
  const std::string planned =
      detail_with(plan_lines, {"probed " + x + " in ", ": xz, ", "; 64 MiB decompressed (its xz index says)"});
  EXPECT_NE(planned, "") << joined(plan_lines);
  EXPECT_EQ(detail_with(plan_lines, {"decompressed " + x}), "") << joined(plan_lines);
}

// [apk].packages are checked against the mirror's indexes: downloaded the
// first time (bytes, packages, time), the kept copy the next (its age); each
// a detail naming the index's URL. Without -v neither.
TEST(Verbose, ThePackageIndexCheckTellsWhetherItDownloadedOrUsedTheCopy) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  rpi::test::MirrorTree tree(d.path());
  rpi::test::MirrorServer server(tree.root, d / "state");
  const fs::path spec = d / "pkg.toml";
  rpi::test::write_file(spec, "[alpine]\nversion = \"3.22\"\nmirror = \"" + server.url() +
                                  "\"\n[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n[apk]\n"
                                  "packages = [\"cage\"]\n");
  const std::vector<std::string> args = {
      "--spec", spec.string(), "--output", (d / "pi.img").string(), "--dry-run", "--cache-dir", (d / "cache").string()};
  std::vector<std::string> with_v = args;
  with_v.push_back("-v");
  auto first = cli(with_v);
  ASSERT_EQ(first.exit_code, 0) << first.err << first.out;
  auto lines = details(first.err);
  for (const char* repo : {"main", "community"}) {
    SCOPED_TRACE(repo);
    const std::string url = server.url() + "/v3.22/" + repo + "/aarch64/APKINDEX.tar.gz";
    const std::string got = detail_with(lines, {"package index " + url + ": downloaded, ", " packages, in "});
    EXPECT_NE(got, "") << joined(lines);
    EXPECT_TRUE(timed(got)) << got;
    EXPECT_TRUE(contains(got, "a copy kept in " + (d / "cache" / "indexes").string())) << got;
  }
  EXPECT_EQ(server.requests("APKINDEX"), 2);

  auto again = cli(with_v);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  lines = details(again.err);
  const std::string main_url = server.url() + "/v3.22/main/aarch64/APKINDEX.tar.gz";
  const std::string copy = detail_with(
      lines, {"package index " + main_url + ": the copy kept in " + (d / "cache" / "indexes").string() + " from ",
              " minutes ago used (younger than 24 hours: not downloaded again)"});
  EXPECT_NE(copy, "") << joined(lines);
  EXPECT_TRUE(timed(copy)) << copy;
  EXPECT_EQ(detail_with(lines, {": downloaded, "}), "") << joined(lines);
  EXPECT_EQ(server.requests("APKINDEX"), 2) << "a fresh copy is not downloaded again";

  auto plain = cli(args);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_FALSE(contains(plain.err + plain.out, "package index ")) << plain.err;
}
