// Station mode on real (loop) devices. `watch` writes the next disk that
// appears, so each test shows its station only the loop devices it attached
// (CardSlots: fake sysfs and /dev trees of its own, --sysfs-root/--dev-root):
// another test's loop device, or a second run of this suite at the same time,
// is never taken for a card. Scratch images go to the test's own TMPDIR.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <mutex>
#include <regex>
#include <sstream>
#include <thread>

#include "cli_support.hpp"
#include "test_support.hpp"

using rpi::test::cli;
using rpi::test::contains;
using rpi::test::example;
using rpi::test::tarball;
using rpi::test::TempDir;
namespace fs = std::filesystem;

namespace {
// The image the --image stations write: the headless example in 64 MiB.
void build_headless_image(const fs::path& img) {
  auto r = cli({"--spec", example("headless.toml").string(), "--tarball", tarball().string(), "--output", img.string(),
                "--size", "64MiB"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

// The card slots of one test's station: loop devices this process attached,
// linked into a sysfs and a /dev tree of the test's own (a mkdtemp folder),
// the only disks the station looks at. Detaches what is left at the end.
class CardSlots {
 public:
  CardSlots() {
    fs::create_directories(root_ / "sys" / "block");
    fs::create_directories(root_ / "dev");
  }
  ~CardSlots() {
    std::vector<std::string> left;
    {
      std::lock_guard lock(mu_);
      left = attached_;
    }
    for (const auto& dev : left) remove(dev);
  }
  CardSlots(const CardSlots&) = delete;
  CardSlots& operator=(const CardSlots&) = delete;

  // Attaches `file` to a free loop device and shows it to the station (the
  // /dev node first: a disk counts once its sysfs entry is there); "/dev/loopN",
  // or "" when no loop device could be attached.
  std::string insert(const fs::path& file) {
    auto r = rpi::test::run({"losetup", "--show", "-f", file.string()});
    const std::string dev = r.out.substr(0, r.out.find('\n'));
    if (r.exit_code != 0 || dev.empty()) return "";
    const std::string name = fs::path(dev).filename().string();
    std::lock_guard lock(mu_);
    attached_.push_back(dev);
    std::error_code ec;
    fs::create_symlink(dev, root_ / "dev" / name, ec);
    fs::create_symlink("/sys/class/block/" + name, root_ / "sys" / "block" / name, ec);
    return dev;
  }
  // Hides `dev` from the station (it sees the card go), then detaches it.
  void remove(const std::string& dev) {
    const std::string name = fs::path(dev).filename().string();
    {
      std::lock_guard lock(mu_);
      auto it = std::find(attached_.begin(), attached_.end(), dev);
      if (it == attached_.end()) return;
      attached_.erase(it);
      std::error_code ec;
      fs::remove(root_ / "sys" / "block" / name, ec);
      fs::remove(root_ / "dev" / name, ec);
    }
    rpi::test::run({"losetup", "-d", dev});
  }
  // The options that point `watch` at these slots.
  std::vector<std::string> args() const {
    return {"--sysfs-root", (root_ / "sys").string(), "--dev-root", (root_ / "dev").string()};
  }

 private:
  TempDir root_;
  std::mutex mu_;
  std::vector<std::string> attached_;
};

// `rpi-provision watch ARGS --poll --allow-non-removable --yes` seeing only the
// cards of `slots`, with its scratch images in `tmp`, stopped (SIGINT) after
// `limit` s at most: a station that misses a card would wait for ever.
rpi::test::CommandResult watch(const std::vector<std::string>& args, const CardSlots& slots, const fs::path& tmp,
                               int limit = 300) {
  fs::create_directories(tmp);
  std::vector<std::string> argv{"env", "TMPDIR=" + tmp.string(), "timeout", "-s", "INT", std::to_string(limit)};
  argv.push_back(rpi::test::cli_path().string());
  argv.push_back("watch");
  argv.insert(argv.end(), args.begin(), args.end());
  for (const char* x : {"--poll", "--allow-non-removable", "--yes"}) argv.emplace_back(x);
  for (const auto& a : slots.args()) argv.push_back(a);
  return rpi::test::run(argv);
}

// A sparse file of `mib` MiB: a blank card.
fs::path blank_card(const fs::path& p, std::uint64_t mib) {
  rpi::test::write_file(p, "");
  fs::resize_file(p, mib << 20);
  return p;
}
}  // namespace

namespace {
// The files left in `dir` and below, one a line.
std::string left_in(const fs::path& dir) {
  std::string out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    out += it->path().string() + "\n";
  return out;
}

// The line of `err` that holds `part`, from `part` on ("" when none).
std::string line_from(const std::string& err, const std::string& part) {
  const std::size_t at = err.find(part);
  return at == std::string::npos ? "" : err.substr(at, err.find('\n', at) - at);
}
}  // namespace

// watch --image refuses a file that is not a disk image (no MBR signature in
// its first sector; of a compressed one, in its first sector decompressed)
// with the root command's error, before it waits for any card: a station
// that took it would wait (here until it is stopped after 60 s).
TEST(Cli, WatchRefusesAnImageWithoutAnMbrAsTheRootCommandDoes) {
  TempDir d;
  const fs::path text = d / "notes.img", packed = d / "notes.img.gz";
  rpi::test::write_file(text, std::string(1 << 20, 'x'));
  std::vector<fs::path> files{text};
  if (rpi::test::have_tool("gzip")) {
    ASSERT_EQ(rpi::test::sh("gzip -c '" + text.string() + "' > '" + packed.string() + "'").exit_code, 0);
    files.push_back(packed);
  } else {
    std::cout << "[  NOTE    ] gzip not installed: a compressed file not tried\n";
  }
  const fs::path card = blank_card(d / "card.bin", 64);
  CardSlots slots;
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    auto root = cli({"--image", f.string(), "--device", card.string(), "--dry-run"});
    EXPECT_EQ(root.exit_code, 2) << root.out << root.err;
    const std::string msg = line_from(root.err, "--image " + f.string());
    EXPECT_TRUE(contains(msg, ": not a disk image: no MBR signature")) << root.err;
    EXPECT_TRUE(contains(msg, "give a disk image such as one made with --output")) << root.err;
    EXPECT_EQ(contains(msg, "(gzip-compressed)"), f == packed) << msg;
    for (const bool dry : {true, false}) {
      std::vector<std::string> args{"--image", f.string()};
      if (dry) args.emplace_back("--dry-run");
      auto r = watch(args, slots, d / "tmp", 60);
      EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
      EXPECT_EQ(line_from(r.err, "--image " + f.string()), msg) << r.err;
      EXPECT_FALSE(contains(r.err, "watching for cards")) << r.err;
      EXPECT_EQ(left_in(d / "tmp"), "");
    }
  }
  EXPECT_EQ(rpi::test::read_file(card), std::string(64u << 20, '\0'));
}

// watch checks its options before it reads the image through: a --state that
// is a folder, that is the image itself, or that cannot be written (its folder
// does not exist) is an error before anything is decompressed (no "decompress"
// event, nothing in the scratch folder).
TEST(Cli, WatchChecksItsOptionsBeforeDecompressing) {
  RPI_REQUIRE_TOOL("xz");
  TempDir d;
  const fs::path img = d / "pi.img", packed = d / "pi.img.xz", tmp = d / "tmp";
  ASSERT_NO_FATAL_FAILURE(build_headless_image(img));
  ASSERT_EQ(rpi::test::sh("xz -0 -T1 -c '" + img.string() + "' > '" + packed.string() + "'").exit_code, 0);
  fs::create_directories(d / "folder");
  const std::string missing = (d / "no-such-folder" / "next-card").string();
  CardSlots slots;
  for (const auto& [state, expect] :
       {std::pair{(d / "folder").string(), "--state " + (d / "folder").string() + " is a folder"},
        std::pair{packed.string(), "--state " + packed.string()},
        std::pair{missing, "cannot create a file in " + (d / "no-such-folder").string()}}) {
    SCOPED_TRACE(state);
    auto r = watch({"--image", packed.string(), "--state", state, "--json"}, slots, tmp, 60);
    EXPECT_NE(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(contains(r.out + r.err, expect)) << r.out << r.err;
    EXPECT_FALSE(contains(r.out, "\"type\":\"decompress\"")) << "decompressed first: " << r.out;
    EXPECT_EQ(left_in(tmp), "");
  }
  EXPECT_FALSE(fs::exists(missing));
}

// watch --image: a card too small for the image is passed over with a note, as
// with a spec, and the station goes on to the next card; card-done names no host.
TEST(Cli, WatchWithAnImagePassesOverACardTooSmall) {
  if (geteuid() != 0 || access("/dev/loop-control", W_OK) != 0) GTEST_SKIP() << "needs root and /dev/loop-control";
  RPI_REQUIRE_TOOL("losetup");
  TempDir d;
  const fs::path img = d / "pi.img";
  ASSERT_NO_FATAL_FAILURE(build_headless_image(img));
  const fs::path small = blank_card(d / "small.bin", 32), big = blank_card(d / "big.bin", 128);
  CardSlots slots;
  std::vector<std::string> devs;
  std::thread plug([&] {
    for (const auto& p : {small, big}) {
      std::this_thread::sleep_for(std::chrono::seconds(3));
      devs.push_back(slots.insert(p));
    }
  });
  auto r = watch({"--image", img.string(), "--count", "1", "--json"}, slots, d / "tmp");
  plug.join();
  ASSERT_EQ(devs.size(), 2u);
  ASSERT_FALSE(devs[0].empty() || devs[1].empty()) << "losetup failed";
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "not writing " + devs[0]) && contains(r.out, "it has 32 MiB but the image needs 64 MiB"))
      << r.out;
  EXPECT_TRUE(contains(r.out, "\"target\":\"" + devs[1] + "\",\"hostname\":\"\"")) << r.out;
  EXPECT_TRUE(contains(r.out, "\"failed\":0")) << r.out;
}

TEST(Cli, WatchWritesACardAttachedAfterStart) {
  if (geteuid() != 0 || access("/dev/loop-control", W_OK) != 0) GTEST_SKIP() << "needs root and /dev/loop-control";
  RPI_REQUIRE_TOOL("losetup");
  TempDir d;
  fs::path before = d / "before.bin", after = d / "after.bin";
  for (const auto& p : {before, after}) {
    rpi::test::write_file(p, "");
    ASSERT_EQ(truncate(p.c_str(), 600ll << 20), 0);
  }
  CardSlots slots;
  const std::string dev_before = slots.insert(before);  // present when the station starts
  ASSERT_FALSE(dev_before.empty());
  std::string dev_after;
  std::thread plug([&] {
    std::this_thread::sleep_for(std::chrono::seconds(3));
    dev_after = slots.insert(after);
  });
  // An earlier run left keys: another host's stays, this host's old one goes.
  const fs::path known = d / "known_hosts";
  rpi::test::write_file(
      known,
      "other-pi ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDJr/JUeeTwyQgTafSTTwOdJ8yYzVQz3dKkrzad36D9t\npi-headless "
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKRMOQkbzqh1jnL1p2QYhq1DB3vij5b8WXbX1mtUDe89\n");
  rpi::test::write_file(d / "next-card", "7\n");  // a restarted station goes on at card 7
  auto r = watch({"--spec", example("headless.toml").string(), "--tarball", tarball().string(), "--count", "1",
                  "--json", "--known-hosts", known.string(), "--state", (d / "next-card").string()},
                 slots, d / "tmp");
  plug.join();
  ASSERT_FALSE(dev_after.empty());
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "\"target\":\"" + dev_after + "\"")) << r.out;
  EXPECT_FALSE(contains(r.out, "\"target\":\"" + dev_before + "\"")) << r.out;
  EXPECT_TRUE(contains(r.out, "\"verified\":true")) << r.out;
  EXPECT_TRUE(contains(r.out, "\"index\":7")) << r.out;
  EXPECT_EQ(rpi::test::read_file(d / "next-card"), "8\n");
  // --known-hosts holds the card's host keys, the ones it reported.
  const std::string kh = rpi::test::read_file(known);
  EXPECT_EQ(kh.rfind("other-pi ssh-ed25519 "
                     "AAAAC3NzaC1lZDI1NTE5AAAAIDJr/JUeeTwyQgTafSTTwOdJ8yYzVQz3dKkrzad36D9t\npi-headless ssh-ed25519 ",
                     0),
            0u)
      << kh;
  EXPECT_FALSE(contains(kh, "AAAAC3NzaC1lZDI1NTE5AAAAIKRMOQkbzqh1jnL1p2QYhq1DB3vij5b8WXbX1mtUDe89")) << kh;
  const std::string ours = kh.substr(kh.find('\n') + 1);
  EXPECT_TRUE(contains(r.out, ours.substr(0, ours.find('\n')))) << kh << "\n" << r.out;
  // The card attached later holds the image; the one present at start is untouched.
  auto ls = rpi::test::run({"mdir", "-i", after.string() + "@@8M", "::/"});
  EXPECT_TRUE(contains(ls.out, ".apkovl.tar.gz")) << ls.out << ls.err;
  EXPECT_EQ(rpi::test::read_file(before).substr(0, 512), std::string(512, '\0'));
}

namespace {

// The cards of a station run that sees one card again: card A is attached and,
// once written (--state says 2), detached and attached again; after a while it
// is detached and card B attached. Holds the devices attached, in that order
// (A, A again, B), and A's bytes as the station left them the first time.
struct Reinsert {
  std::vector<std::string> devs;
  std::string a_written;
  bool a_done = false;
};

bool wait_for_file(const fs::path& p, const std::string& text, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  std::error_code ec;
  while (std::chrono::steady_clock::now() < end) {
    if (fs::exists(p, ec) && rpi::test::read_file(p) == text) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

// Runs `watch ARGS --state STATE --count 2` while Reinsert's cards come and go.
rpi::test::CommandResult run_reinsert(const std::vector<std::string>& args, const fs::path& a, const fs::path& b,
                                      const fs::path& state, const fs::path& tmp, Reinsert& out) {
  CardSlots slots;
  std::vector<std::string> argv = args;
  argv.insert(argv.end(), {"--count", "2", "--state", state.string()});
  std::thread plug([&] {
    std::this_thread::sleep_for(std::chrono::seconds(3));
    out.devs.push_back(slots.insert(a));
    out.a_done = wait_for_file(state, "2\n", std::chrono::seconds(240));
    slots.remove(out.devs.back());
    std::this_thread::sleep_for(std::chrono::seconds(2));  // the station sees it go
    out.a_written = rpi::test::read_file(a);
    if (!out.a_done) return;
    out.devs.push_back(slots.insert(a));
    std::this_thread::sleep_for(std::chrono::seconds(5));  // the station reads it and passes it over
    slots.remove(out.devs.back());
    std::this_thread::sleep_for(std::chrono::seconds(2));
    out.devs.push_back(slots.insert(b));
  });
  auto r = watch(argv, slots, tmp);
  plug.join();
  return r;
}

}  // namespace

// A card this run wrote, inserted again, is not written with the next identity:
// a note says what it holds, its bytes stay as they were, and the next card
// inserted gets the identity the station was at (class-02, not class-03).
TEST(Cli, WatchPassesOverACardItWroteInsertedAgain) {
  if (geteuid() != 0 || access("/dev/loop-control", W_OK) != 0) GTEST_SKIP() << "needs root and /dev/loop-control";
  RPI_REQUIRE_TOOL("losetup");
  TempDir d;
  const fs::path spec = d / "class.toml";
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"class-{n:02}\"\n[root]\nssh_authorized_keys = [\"ssh-ed25519 "
                        "AAAAC3NzaC1lZDI1NTE5AAAAIHeLguboJt2OAmYzeA/Z4TVxebKDh2PkgXgHJPUhfUjq admin@example\"]\n");
  const fs::path a = blank_card(d / "a.bin", 128), b = blank_card(d / "b.bin", 128);
  Reinsert cards;
  auto r = run_reinsert({"--spec", spec.string(), "--tarball", tarball().string(), "--size", "64MiB"}, a, b,
                        d / "next-card", d / "tmp", cards);
  ASSERT_TRUE(cards.a_done) << r.out << r.err;
  ASSERT_EQ(cards.devs.size(), 3u) << r.out << r.err;
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "class-01 written to " + cards.devs[0])) << r.out;
  EXPECT_TRUE(
      contains(r.out, "card " + cards.devs[1] + " already holds class-01 (card 1), written by this station at "))
      << r.out;
  EXPECT_TRUE(contains(r.out, ": not written again; remove it\n")) << r.out;
  // The identity was not used up: the next card inserted is class-02.
  EXPECT_TRUE(contains(r.out, "class-02 written to " + cards.devs[2])) << r.out;
  EXPECT_FALSE(contains(r.out, "class-03")) << r.out;
  EXPECT_TRUE(contains(r.out, "2 card(s) written, 0 failed")) << r.out;
  EXPECT_EQ(rpi::test::read_file(d / "next-card"), "3\n");
  // Card A is byte for byte what the first write left.
  EXPECT_TRUE(rpi::test::read_file(a) == cards.a_written) << "card A was changed when inserted again";
  // Independent of the tool: the apkovls on the two cards.
  auto la = rpi::test::run({"mdir", "-b", "-i", a.string() + "@@8M", "::/"});
  auto lb = rpi::test::run({"mdir", "-b", "-i", b.string() + "@@8M", "::/"});
  EXPECT_TRUE(contains(la.out, "class-01.apkovl.tar.gz") && !contains(la.out, "class-02")) << la.out << la.err;
  EXPECT_TRUE(contains(lb.out, "class-02.apkovl.tar.gz")) << lb.out << lb.err;
}

// The same with --image: a card already holding this run's image is passed
// over (a card-already-written event, neither written nor failed).
TEST(Cli, WatchWithAnImagePassesOverACardItWroteInsertedAgain) {
  if (geteuid() != 0 || access("/dev/loop-control", W_OK) != 0) GTEST_SKIP() << "needs root and /dev/loop-control";
  RPI_REQUIRE_TOOL("losetup");
  TempDir d;
  const fs::path img = d / "pi.img";
  ASSERT_NO_FATAL_FAILURE(build_headless_image(img));
  const fs::path a = blank_card(d / "a.bin", 128), b = blank_card(d / "b.bin", 128);
  Reinsert cards;
  auto r = run_reinsert({"--image", img.string(), "--json"}, a, b, d / "next-card", d / "tmp", cards);
  ASSERT_TRUE(cards.a_done) << r.out << r.err;
  ASSERT_EQ(cards.devs.size(), 3u) << r.out << r.err;
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "{\"type\":\"card-already-written\",\"target\":\"" + cards.devs[1] +
                                  "\",\"hostname\":\"\",\"index\":1,\"written_at\":"))
      << r.out;
  EXPECT_TRUE(contains(r.out, "\"target\":\"" + cards.devs[2] + "\",\"hostname\":\"\",\"index\":2,\"ok\":true"))
      << r.out;
  EXPECT_TRUE(contains(r.out, "{\"type\":\"summary\",\"cards\":2,\"ok\":2,\"failed\":0")) << r.out;
  EXPECT_EQ(rpi::test::read_file(d / "next-card"), "3\n");
  EXPECT_TRUE(rpi::test::read_file(a) == cards.a_written) << "card A was changed when inserted again";
}

namespace {
// The sectors of the first partition of the MBR on `card`, as sfdisk reads it
// (0 when it finds none).
std::uint64_t first_partition_sectors(const fs::path& card, std::uint64_t* start) {
  auto r = rpi::test::run({"sfdisk", "-J", card.string()});
  std::smatch m;
  if (r.exit_code != 0 || !std::regex_search(r.out, m, std::regex(R"("start":\s*(\d+),\s*"size":\s*(\d+))"))) return 0;
  *start = std::stoull(m[1]);
  return std::stoull(m[2]);
}

// The known_hosts lines the station printed after "NAME written to DEV (".
std::string keys_printed(const std::string& out, const std::string& what) {
  std::size_t at = out.find(what);
  if (at == std::string::npos) return "";
  std::string keys;
  for (at = out.find('\n', at); at != std::string::npos && out.compare(at + 1, 15, "  known_hosts: ") == 0;
       at = out.find('\n', at + 1))
    keys += out.substr(at + 1, out.find('\n', at + 1) - at);
  return keys;
}
}  // namespace

// Every card the same, [boot] size = "max": each card gets an image that fills
// it, as with --device, not the first card's, and every card the same host
// keys (one identity); the scratch folder keeps at most two images however
// many sizes come by.
TEST(Cli, WatchFillsEachCardWithSizeMax) {
  if (geteuid() != 0 || access("/dev/loop-control", W_OK) != 0) GTEST_SKIP() << "needs root and /dev/loop-control";
  RPI_REQUIRE_TOOL("losetup");
  RPI_REQUIRE_TOOL("sfdisk");
  TempDir d;
  const fs::path spec = d / "station.toml";
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"pi-station\"\n[boot]\nsize = \"max\"\n[root]\nssh_authorized_keys = "
                        "[\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeLguboJt2OAmYzeA/Z4TVxebKDh2PkgXgHJPUhfUjq "
                        "admin@example\"]\n");
  // In the order inserted (MiB); the third is the first's size again.
  const std::vector<std::uint64_t> mib{96, 160, 96, 224, 160};
  std::vector<fs::path> files;
  for (std::size_t i = 0; i < mib.size(); ++i)
    files.push_back(blank_card(d / ("card" + std::to_string(i) + ".bin"), mib[i]));
  const fs::path state = d / "next-card", tmp = d / "tmp";
  CardSlots slots;
  std::vector<std::string> devs;
  std::vector<std::size_t> images_kept;  // image files in the scratch folder after each card
  std::thread plug([&] {
    for (std::size_t i = 0; i < files.size(); ++i) {
      std::this_thread::sleep_for(std::chrono::seconds(2));
      devs.push_back(slots.insert(files[i]));  // the cards stay in: each keeps its own /dev/loopN
      if (!wait_for_file(state, std::to_string(i + 2) + "\n", std::chrono::seconds(120))) return;
      std::size_t n = 0;
      std::error_code ec;
      for (fs::recursive_directory_iterator it(tmp, ec), end; !ec && it != end; it.increment(ec))
        if (it->is_regular_file() && it->path().extension() == ".img") ++n;
      images_kept.push_back(n);
    }
  });
  auto r = watch({"--spec", spec.string(), "--tarball", tarball().string(), "--count", std::to_string(mib.size()),
                  "--state", state.string()},
                 slots, tmp);
  plug.join();
  ASSERT_EQ(devs.size(), mib.size()) << r.out << r.err;
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "5 card(s) written, 0 failed")) << r.out << r.err;
  // sfdisk: the partition starts at 8 MiB and runs to the card's end (its sizes are multiples of 4 MiB).
  for (std::size_t i = 0; i < files.size(); ++i) {
    std::uint64_t start = 0;
    EXPECT_EQ(first_partition_sectors(files[i], &start), ((mib[i] - 8) << 20) / 512) << "card " << i << " " << mib[i];
    EXPECT_EQ(start, (8u << 20) / 512) << "card " << i;
  }
  // One identity, one set of generated host keys, whatever image each card got
  // (the partition sizes above show each size was built for its card).
  const std::string k0 = keys_printed(r.out, "pi-station written to " + devs[0] + " (");
  EXPECT_TRUE(contains(k0, "pi-station ssh-ed25519 ")) << r.out;
  for (std::size_t i = 1; i < devs.size(); ++i)
    EXPECT_EQ(keys_printed(r.out, "pi-station written to " + devs[i] + " ("), k0) << "card " << i << "\n" << r.out;
  // Three sizes built, never more than two images kept.
  ASSERT_EQ(images_kept.size(), mib.size()) << r.out << r.err;
  for (std::size_t i = 0; i < images_kept.size(); ++i) EXPECT_LE(images_kept[i], 2u) << "after card " << i;
  EXPECT_EQ(images_kept[3], 2u);
}

// watch --dry-run with --image names the block map it would use, found under
// bmaptool's names as the root command finds it (pi.img.bmap, then pi.bmap),
// or the names it looked for (and then the map derived from its FAT); --json
// has it as "bmap" ("" for none).
TEST(Cli, WatchPlanNamesTheBlockMapOfItsImage) {
  TempDir d;
  const fs::path img = d / "pi.img";
  ASSERT_NO_FATAL_FAILURE(build_headless_image(img));
  const fs::path own = d / "pi.img.bmap", short_name = d / "pi.bmap";
  ASSERT_TRUE(fs::exists(own));
  CardSlots slots;
  auto plan = [&] { return watch({"--image", img.string(), "--dry-run"}, slots, d / "tmp", 60); };
  auto r = plan();
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "  block map: " + own.string() + ", ")) << r.out;
  fs::rename(own, short_name);
  r = plan();
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "  block map: " + short_name.string() + ", ")) << r.out;
  auto j = watch({"--image", img.string(), "--dry-run", "--json"}, slots, d / "tmp", 60);
  EXPECT_TRUE(contains(j.out, "\"bmap\":\"" + short_name.string() + "\"")) << j.out;
  fs::remove(short_name);
  r = plan();
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "  block map: none (looked for " + own.string() + ", " + short_name.string() +
                                  "): written where its FAT holds data ("))
      << r.out;
}

// A card number that makes the spec wrong ({n} = 256 in addresses) gets the
// spec's errors, every one on its own line: at the start for the cards the
// station checks then (the first), and for a later card, naming that card,
// which is not written.
TEST(Cli, WatchSaysEachSpecErrorOfACardOnItsOwnLine) {
  if (geteuid() != 0 || access("/dev/loop-control", W_OK) != 0) GTEST_SKIP() << "needs root and /dev/loop-control";
  RPI_REQUIRE_TOOL("losetup");
  TempDir d;
  const fs::path spec = d / "lab.toml";
  rpi::test::write_file(spec,
                        "[system]\nhostname = \"lab-{n}\"\n[ssh]\nhost_keys = \"first-boot\"\n"
                        "[[network.interfaces]]\nname = \"eth0\"\naddress = \"10.0.{n}.2/24\"\n"
                        "[network]\ndns = [\"10.1.{n}.53\"]\n");
  // The error lines of `err`, without the "rpi-provision: error: " before them.
  const auto errors_in = [](const std::string& err) {
    std::vector<std::string> errors;
    std::istringstream lines(err);
    for (std::string l; std::getline(lines, l);)
      if (contains(l, "error: ")) errors.push_back(l.substr(l.find("error: ") + 7));
    return errors;
  };
  const fs::path state = d / "next-card";
  const fs::path a = blank_card(d / "a.bin", 64), b = blank_card(d / "b.bin", 64), c = blank_card(d / "c.bin", 64);
  {
    rpi::test::write_file(state, "256\n");
    CardSlots slots;
    auto r =
        watch({"--spec", spec.string(), "--tarball", tarball().string(), "--count", "1", "--state", state.string()},
              slots, d / "tmp", 120);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    const auto errors = errors_in(r.err);
    ASSERT_EQ(errors.size(), 2u) << r.err;
    EXPECT_EQ(errors[0].rfind(spec.string() + ":7:11: ", 0), 0u) << errors[0];
    EXPECT_EQ(errors[1].rfind(spec.string() + ":9:8: ", 0), 0u) << errors[1];
    EXPECT_FALSE(contains(r.err, "watching for cards")) << r.err;
  }
  // A station checks its first two cards at the start: cards 254 and 255 are
  // written, card 256 is refused when it comes.
  rpi::test::write_file(state, "254\n");
  CardSlots slots;
  std::vector<std::string> devs;
  std::thread plug([&] {
    std::this_thread::sleep_for(std::chrono::seconds(3));
    devs.push_back(slots.insert(a));
    if (!wait_for_file(state, "255\n", std::chrono::seconds(120))) return;
    devs.push_back(slots.insert(b));
    if (!wait_for_file(state, "256\n", std::chrono::seconds(120))) return;
    devs.push_back(slots.insert(c));
  });
  auto r = watch({"--spec", spec.string(), "--tarball", tarball().string(), "--state", state.string()}, slots,
                 d / "tmp", 300);
  plug.join();
  ASSERT_EQ(devs.size(), 3u) << r.err;
  EXPECT_EQ(r.exit_code, 3) << r.err;
  const auto errors = errors_in(r.err);
  ASSERT_EQ(errors.size(), 2u) << r.err;
  for (const auto& e : errors) EXPECT_EQ(e.rfind("card 256 on " + devs[2] + ": " + spec.string() + ":", 0), 0u) << e;
  EXPECT_TRUE(contains(errors[0], "10.0.256.2/24")) << errors[0];
  EXPECT_TRUE(contains(errors[1], "10.1.256.53")) << errors[1];
  // Each with the spec's line, as the command line's own check shows it.
  EXPECT_TRUE(contains(r.err, "\n    7 | address = \"10.0.{n}.2/24\"\n      |           ^~~~~~~~~~~~~~~\n")) << r.err;
  EXPECT_EQ(rpi::test::read_file(c), std::string(64u << 20, '\0'));
  auto ls = rpi::test::run({"mdir", "-i", a.string() + "@@8M", "::/"});
  EXPECT_TRUE(contains(ls.out, "lab-254.apkovl.tar.gz")) << ls.out << ls.err;
}
