// The whole job from a spec alone: resolve the release on a mirror, download
// and verify it into the cache, build the image; then again offline.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "mirror_fixture.hpp"
#include "test_support.hpp"

using rpi::test::cli;
using rpi::test::TempDir;
namespace fs = std::filesystem;

TEST(Pipeline, SpecToImageThroughTheLoopbackMirrorThenOffline) {
  RPI_REQUIRE_TOOL("python3");
  RPI_REQUIRE_TOOL("mdir");
  TempDir d;
  rpi::test::MirrorTree tree(d.path());
  rpi::test::MirrorServer server(tree.root, d / "state");
  fs::path spec = d / "pi.toml";
  rpi::test::write_file(spec, "[alpine]\nversion = \"3.22\"\narch = \"aarch64\"\nmirror = \"" + server.url() +
                                  "\"\n\n[system]\nhostname = \"mirror-pi\"\n\n[ssh]\nhost_keys = \"first-boot\"\n");
  fs::path cache = d / "cache";
  auto r = cli({"--spec", spec.string(), "--output", (d / "a.img").string(), "--cache-dir", cache.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(server.requests(tree.latest_file), 1) << "the tarball is downloaded once";
  auto ls = rpi::test::run({"mdir", "-i", (d / "a.img").string() + "@@8M", "::/"});
  EXPECT_NE(ls.out.find("mirror-pi.apkovl.tar.gz"), std::string::npos) << ls.out;

  // The plan names the release and its digest.
  auto plan =
      cli({"--spec", spec.string(), "--output", (d / "p.img").string(), "--cache-dir", cache.string(), "--dry-run"});
  EXPECT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_NE(plan.out.find(tree.latest_file), std::string::npos) << plan.out;
  // The tarball is in the cache: the plan knows the image's size.
  EXPECT_NE(plan.out.find("    size: automatic: about"), std::string::npos) << plan.out;
  EXPECT_FALSE(fs::exists(d / "p.img"));
  auto unsized = cli({"--spec", spec.string(), "--output", (d / "p.img").string(), "--cache-dir",
                      (d / "fresh").string(), "--dry-run"});
  EXPECT_NE(unsized.out.find("(the size is known once the tarball is in the cache)"), std::string::npos) << unsized.out;

  // Offline, from the cache: no request reaches the server, the same image comes out.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let the server log the earlier requests
  int before = static_cast<int>(server.log().size());
  auto off =
      cli({"--spec", spec.string(), "--output", (d / "b.img").string(), "--cache-dir", cache.string(), "--offline"});
  ASSERT_EQ(off.exit_code, 0) << off.err;
  auto log = server.log();
  std::string paths;
  for (std::size_t i = static_cast<std::size_t>(before); i < log.size(); ++i) paths += log[i].path + "\n";
  EXPECT_EQ(static_cast<int>(log.size()), before) << "requests made offline:\n" << paths;
  // Nothing generated at random (host keys at first boot): the whole pipeline is reproducible.
  EXPECT_EQ(rpi::test::run({"cmp", (d / "a.img").string(), (d / "b.img").string()}).exit_code, 0)
      << "same spec and tarball: same image";

  // Offline with an empty cache: a clear error, no image.
  auto miss = cli({"--spec", spec.string(), "--output", (d / "c.img").string(), "--cache-dir", (d / "empty").string(),
                   "--offline"});
  EXPECT_NE(miss.exit_code, 0);
  EXPECT_NE(miss.err.find("offline"), std::string::npos) << miss.err;
  EXPECT_FALSE(fs::exists(d / "c.img"));
}

// Ctrl-C in a card run while the tarball is still downloading: the run stops
// there (it used to finish a download that could take minutes, then build the
// image, and only then give up), exits 130, says no card was changed, leaves the
// card as it was and keeps the partial download for the next run.
TEST(Pipeline, CtrlCDuringTheDownloadOfACardRunStopsAtOnce) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  rpi::test::MirrorTree tree(d.path());
  rpi::test::MirrorServer server(tree.root, d / "state");
  server.set_faults(R"([{"path": "tar.gz", "kind": "trickle", "n": 4096, "times": 1}])");
  fs::path spec = d / "pi.toml";
  rpi::test::write_file(spec, "[alpine]\nversion = \"3.22\"\nmirror = \"" + server.url() +
                                  "\"\n[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  const fs::path card = d / "card.img";
  rpi::test::write_file(card, std::string(1 << 20, 'x'));
  const fs::path cache = d / "cache";
  // The trickle sends 4 KiB every half second: without the cancel reaching the
  // download this run would take hours.
  auto r = rpi::test::sh("'" + rpi::test::cli_path().string() + "' --spec '" + spec.string() + "' --device '" +
                         card.string() + "' --yes --cache-dir '" + cache.string() + "' > '" + (d / "out").string() +
                         "' 2> '" + (d / "err").string() +
                         "' & pid=$!\n"
                         "for i in $(seq 600); do\n"
                         "  for f in '" +
                         cache.string() +
                         "'/partial/*.part; do [ -s \"$f\" ] && break 2; done\n"
                         "  sleep 0.05\n"
                         "done\n"
                         "kill -INT $pid\n"
                         // Bounded: a run that ignores the cancel is killed (exit 137), not waited for.
                         "for i in $(seq 600); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done\n"
                         "kill -KILL $pid 2>/dev/null; wait $pid; echo \"exit $?\"");
  const std::string out = rpi::test::read_file(d / "out"), err = rpi::test::read_file(d / "err");
  EXPECT_EQ(r.out, "exit 130\n") << out << err;
  EXPECT_NE(out.find("cancelled: " + card.string() + " was not changed"), std::string::npos) << out << err;
  EXPECT_NE(err.find("the cards that had not started were not changed"), std::string::npos) << err;
  EXPECT_EQ(rpi::test::read_file(card), std::string(1 << 20, 'x')) << "the card was touched";
  std::uint64_t kept = 0;
  for (const auto& e : fs::directory_iterator(cache / "partial"))
    if (e.path().extension() == ".part") kept = fs::file_size(e.path());
  EXPECT_GT(kept, 0u) << "the partial download was not kept for resuming";
}

// A card that fetches its apkovl over HTTP carries none: the image build must
// not generate host keys (and a known_hosts file) the Pi never gets; the
// served apkovls are where the keys are.
TEST(Pipeline, AnImageWithoutAnApkovlWritesNoKnownHosts) {
  TempDir d;
  fs::path spec = d / "net.toml";
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"pi-{n}\"\n[ssh]\nhost_keys = \"generate\"\n[boot]\n"
                        "apkovl_url = \"http://10.0.0.1/{MAC}.apkovl.tar.gz\"\n[[hosts]]\nhostname = \"a\"\n"
                        "mac = \"dc:a6:32:01:02:03\"\n");
  const std::string img = (d / "net.img").string();
  auto r = cli({"--spec", spec.string(), "--output", img, "--tarball", rpi::test::fixture_tarball().string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(img + ".known_hosts")) << rpi::test::read_file(img + ".known_hosts");
  EXPECT_EQ(r.err.find("known_hosts lines written"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("apkovl: none on the card"), std::string::npos) << r.out;
  // The served apkovl has keys, and says so.
  auto served =
      cli({"apkovl", "--spec", spec.string(), "--out-dir", (d / "www").string(), "--known-hosts", (d / "kh").string()});
  ASSERT_EQ(served.exit_code, 0) << served.err;
  EXPECT_NE(rpi::test::read_file(d / "kh").find("ssh-ed25519 "), std::string::npos);
}

// --quiet drops progress and notes, not what the user must act on.
TEST(Pipeline, QuietKeepsWarnings) {
  TempDir d;
  fs::path spec = d / "q.toml";
  rpi::test::write_file(
      spec, "[system]\nhostname = \"q\"\n[ssh]\nhost_keys = \"first-boot\"\n[apk]\npackages = [\"htop\"]\n");
  auto r = cli({"-q", "--spec", spec.string(), "--output", (d / "q.img").string(), "--tarball",
                rpi::test::fixture_tarball().string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: [apk].packages htop is not in the card's boot repository"), std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("left out the tarball's"), std::string::npos) << "a note in quiet mode\n" << r.err;
  EXPECT_EQ(r.err.find("build "), std::string::npos) << "progress in quiet mode\n" << r.err;
}

// --host and --first both choose the card: both given, one would be ignored.
TEST(Pipeline, HostAndFirstTogetherAreRefused) {
  TempDir d;
  const std::string fleet = (rpi::test::source_dir() / "examples" / "fleet.toml").string();
  for (const std::vector<std::string>& args : {std::vector<std::string>{"check", "--spec", fleet},
                                               {"apkovl", "--spec", fleet, "-o", (d / "x").string()},
                                               {"--spec", fleet, "--output", (d / "x.img").string()}}) {
    std::vector<std::string> a = args;
    a.insert(a.end(), {"--host", "class-03", "--first", "5"});
    auto r = cli(a);
    EXPECT_EQ(r.exit_code, 2) << args[0] << "\n" << r.err;
    EXPECT_NE(r.err.find("--host class-03 picks a [[hosts]] entry by name and --first picks the card by number"),
              std::string::npos)
        << r.err;
  }
  EXPECT_FALSE(fs::exists(d / "x")) << "nothing written";
  EXPECT_EQ(cli({"check", "--spec", fleet, "--host", "class-03"}).exit_code, 0);
}

// Values that would quietly mean the default are refused, and a size too
// small for the files is the size's fault (exit 2), like one below the smallest image.
TEST(Pipeline, EmptyOrZeroSizesAndLabelsAreRefused) {
  TempDir d;
  fs::path spec = d / "s.toml";
  rpi::test::write_file(spec, "[system]\nhostname = \"s\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  const std::string img = (d / "s.img").string();
  auto run = [&](std::vector<std::string> extra, const std::string& tarball) {
    std::vector<std::string> a{"--spec", spec.string(), "--output", img, "--tarball", tarball};
    a.insert(a.end(), extra.begin(), extra.end());
    return cli(a);
  };
  const std::string small = rpi::test::fixture_tarball().string();
  for (const auto& [extra, message] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--size", "0"}, "--size 0 is too small: the smallest image is 16 MiB"},
           {{"--size", ""}, "--size needs a size such as 1GiB"},
           {{"--label", ""}, "--label needs a name"}}) {
    auto r = run(extra, small);
    EXPECT_EQ(r.exit_code, 2) << extra[0] << " '" << extra[1] << "'\n" << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
  }
  auto tight = run({"--size", "17MiB"}, rpi::test::fixture_tarball({"--size-mb", "8"}).string());
  EXPECT_EQ(tight.exit_code, 2) << tight.err;
  EXPECT_NE(tight.err.find("the files do not fit"), std::string::npos) << tight.err;
  EXPECT_FALSE(fs::exists(img));
}

// A spec naming a local tarball that is not there: check says so, as the build
// would, naming the spec; --tarball on the command line takes its place.
TEST(Pipeline, AMissingLocalTarballInTheSpecIsASpecError) {
  TempDir d;
  fs::path spec = d / "t.toml";
  rpi::test::write_file(spec,
                        "[alpine]\ntarball = \"nope-rpi.tar.gz\"\n[system]\nhostname = \"t\"\n[ssh]\n"
                        "host_keys = \"first-boot\"\n");
  const std::string want = spec.string() + ": [alpine].tarball " + (d / "nope-rpi.tar.gz").string() + " is not a file";
  auto chk = cli({"check", "--spec", spec.string()});
  EXPECT_EQ(chk.exit_code, 2);
  EXPECT_NE(chk.err.find(want), std::string::npos) << chk.err;
  auto b = cli({"--spec", spec.string(), "--output", (d / "t.img").string()});
  EXPECT_EQ(b.exit_code, 2);
  EXPECT_NE(b.err.find(want), std::string::npos) << b.err;
  EXPECT_EQ(cli({"--spec", spec.string(), "--output", (d / "t.img").string(), "--tarball",
                 rpi::test::fixture_tarball().string()})
                .exit_code,
            0);
  // A file:// URL without sha256 (which the spec allows) is that local file.
  rpi::test::write_file(spec, "[alpine]\ntarball = \"file://" + rpi::test::fixture_tarball().string() +
                                  "\"\n[system]\nhostname = \"t\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  EXPECT_EQ(cli({"check", "--spec", spec.string()}).exit_code, 0);
  auto f = cli({"--spec", spec.string(), "--output", (d / "f.img").string()});
  EXPECT_EQ(f.exit_code, 0) << f.err;
}

// An empty file given as a card holds nothing: refused by name, the others written.
TEST(Pipeline, AnEmptyFileAsACardIsRefused) {
  TempDir d;
  fs::path spec = d / "e.toml", one = d / "one.bin", empty = d / "empty.bin";
  rpi::test::write_file(spec, "[system]\nhostname = \"e\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  rpi::test::write_file(empty, "");
  rpi::test::write_file(one, "");
  fs::resize_file(one, 1ull << 30);
  auto r = cli({"--spec", spec.string(), "--tarball", rpi::test::fixture_tarball().string(), "--device", one.string(),
                "--device", empty.string(), "--yes"});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_NE(r.out.find("FAILED: refusing to write " + empty.string() + ": it is an empty file"), std::string::npos)
      << r.out;
  EXPECT_EQ(fs::file_size(empty), 0u);
  EXPECT_EQ(fs::file_size(one), 1ull << 30) << "a file standing in for a card keeps its size";
}

// The hint for an empty file as a card is a command to paste: its path quoted
// as one shell word (rpi::shell_word); it was pasted in raw.
TEST(Pipeline, TheEmptyFileHintQuotesThePath) {
  TempDir d;
  fs::path spec = d / "e.toml", empty = d / "my card.bin";
  rpi::test::write_file(spec, "[system]\nhostname = \"e\"\n[ssh]\nhost_keys = \"first-boot\"\n");
  rpi::test::write_file(empty, "");
  auto r = cli({"--spec", spec.string(), "--tarball", rpi::test::fixture_tarball().string(), "--device", empty.string(),
                "--yes"});
  EXPECT_NE(r.exit_code, 0) << r.out << r.err;
  const std::string all = r.out + r.err;
  const std::size_t at = all.find("(truncate -s 8G ");
  ASSERT_NE(at, std::string::npos) << all;
  const std::string command = all.substr(at + 1, all.find("), or build", at) - at - 1);
  EXPECT_EQ(command, "truncate -s 8G '" + empty.string() + "'");
  // Pasted into a shell, it sizes that file and makes no other.
  ASSERT_EQ(rpi::test::sh(command).exit_code, 0);
  EXPECT_EQ(fs::file_size(empty), 8ull << 30);
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(d.path())) ++files;
  EXPECT_EQ(files, 2u) << "the spec and the card file";
}

// [boot] size has the floor --size has: the smallest image, then the files decide.
TEST(Pipeline, BootSizeHasTheFloorOfSize) {
  TempDir d;
  fs::path spec = d / "b.toml";
  auto with_size = [&](const std::string& size) {
    rpi::test::write_file(
        spec, "[system]\nhostname = \"b\"\n[ssh]\nhost_keys = \"first-boot\"\n[boot]\nsize = \"" + size + "\"\n");
    return cli({"--spec", spec.string(), "--output", (d / "b.img").string(), "--tarball",
                rpi::test::fixture_tarball().string()});
  };
  auto low = with_size("8MiB");
  EXPECT_EQ(low.exit_code, 2);
  EXPECT_NE(low.err.find(spec.string() + ":6:8: [boot].size must be at least 16MiB"), std::string::npos) << low.err;
  auto small = with_size("40MiB");
  EXPECT_EQ(small.exit_code, 0) << small.err;
  EXPECT_EQ(fs::file_size(d / "b.img"), 40ull << 20);
  // Too small for the files: the spec's line is what to change, not a --size nobody gave.
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"b\"\n[ssh]\nhost_keys = \"first-boot\"\n[boot]\nsize = "
                        "\"17MiB\"\n");
  auto tight = cli({"--spec", spec.string(), "--output", (d / "t.img").string(), "--tarball",
                    rpi::test::fixture_tarball({"--size-mb", "8"}).string()});
  EXPECT_EQ(tight.exit_code, 2) << tight.err;
  EXPECT_NE(tight.err.find("the files do not fit"), std::string::npos) << tight.err;
  EXPECT_NE(tight.err.find("set [boot] size to"), std::string::npos) << tight.err;
  EXPECT_EQ(tight.err.find("--size"), std::string::npos) << tight.err;
}

// Cards of different identities are each bounded by their own size: a host
// whose [boot] size needs a big card does not get a small card of another host refused.
TEST(Pipeline, EachHostsImageIsBoundedByItsOwnCard) {
  TempDir d;
  fs::path spec = d / "two.toml", a = d / "a.bin", b = d / "b.bin";
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"pi\"\n[ssh]\nhost_keys = \"first-boot\"\n"
                        "[[hosts]]\nhostname = \"big\"\n[hosts.boot]\nsize = \"64MiB\"\n"
                        "[[hosts]]\nhostname = \"small\"\n");
  for (const auto& [p, mib] : {std::pair{a, 128}, std::pair{b, 40}}) {
    rpi::test::write_file(p, "");
    fs::resize_file(p, static_cast<std::uintmax_t>(mib) << 20);
  }
  auto r = cli({"--spec", spec.string(), "--tarball", rpi::test::fixture_tarball().string(), "--device", a.string(),
                "--device", b.string(), "--yes"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out.find("FAILED"), std::string::npos) << r.out;
  // The other way round: the big host's card is the one too small, and only it fails.
  auto swapped = cli({"--spec", spec.string(), "--tarball", rpi::test::fixture_tarball().string(), "--device",
                      b.string(), "--device", a.string(), "--yes"});
  EXPECT_EQ(swapped.exit_code, 3) << swapped.out << swapped.err;
  EXPECT_NE(swapped.out.find("FAILED: refusing to write " + b.string() + ": it has 40 MiB but the image needs 64 MiB"),
            std::string::npos)
      << swapped.out;
  EXPECT_NE(swapped.out.find(a.string()), std::string::npos);
}
