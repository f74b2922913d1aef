// Station mode on real (loop) devices: `watch` writes the next card that
// appears, so these tests run alone (RUN_SERIAL): a loop device another test
// attaches meanwhile would be taken for a card.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
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
}  // namespace

// watch --image: a card too small for the image is passed over with a note, as
// with a spec, and the station goes on to the next card; card-done names no host.
TEST(Cli, WatchWithAnImagePassesOverACardTooSmall) {
  if (geteuid() != 0 || access("/dev/loop-control", W_OK) != 0) GTEST_SKIP() << "needs root and /dev/loop-control";
  RPI_REQUIRE_TOOL("losetup");
  TempDir d;
  const fs::path img = d / "pi.img";
  ASSERT_NO_FATAL_FAILURE(build_headless_image(img));
  fs::path small = d / "small.bin", big = d / "big.bin";
  rpi::test::write_file(small, "");
  fs::resize_file(small, 32ull << 20);
  rpi::test::write_file(big, "");
  fs::resize_file(big, 128ull << 20);
  std::vector<std::string> devs;
  std::mutex mu;
  std::thread plug([&] {
    for (const auto& p : {small, big}) {
      std::this_thread::sleep_for(std::chrono::seconds(3));
      auto r = rpi::test::run({"losetup", "--show", "-f", p.string()});
      std::lock_guard lock(mu);
      devs.push_back(r.out.substr(0, r.out.find('\n')));
    }
  });
  auto r =
      cli({"watch", "--image", img.string(), "--poll", "--count", "1", "--allow-non-removable", "--yes", "--json"});
  plug.join();
  for (const auto& dev : devs)
    if (!dev.empty()) rpi::test::run({"losetup", "-d", dev});
  ASSERT_EQ(devs.size(), 2u);
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
  auto attach = [](const fs::path& p) {
    auto r = rpi::test::run({"losetup", "--show", "-f", p.string()});
    std::string dev = r.out.substr(0, r.out.find('\n'));
    return dev;
  };
  std::string dev_before = attach(before);
  ASSERT_FALSE(dev_before.empty());
  std::string dev_after;
  std::thread plug([&] {
    std::this_thread::sleep_for(std::chrono::seconds(3));
    dev_after = attach(after);
  });
  // An earlier run left keys: another host's stays, this host's old one goes.
  const fs::path known = d / "known_hosts";
  rpi::test::write_file(
      known,
      "other-pi ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDJr/JUeeTwyQgTafSTTwOdJ8yYzVQz3dKkrzad36D9t\npi-headless "
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKRMOQkbzqh1jnL1p2QYhq1DB3vij5b8WXbX1mtUDe89\n");
  rpi::test::write_file(d / "next-card", "7\n");  // a restarted station goes on at card 7
  auto r = cli({"watch", "--spec", example("headless.toml").string(), "--tarball", tarball().string(), "--poll",
                "--count", "1", "--allow-non-removable", "--yes", "--json", "--known-hosts", known.string(), "--state",
                (d / "next-card").string()});
  plug.join();
  rpi::test::run({"losetup", "-d", dev_before});
  if (!dev_after.empty()) rpi::test::run({"losetup", "-d", dev_after});
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

std::string attach(const fs::path& p) {
  auto r = rpi::test::run({"losetup", "--show", "-f", p.string()});
  return r.out.substr(0, r.out.find('\n'));
}

bool wait_for_file(const fs::path& p, const std::string& text, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  std::error_code ec;
  while (std::chrono::steady_clock::now() < end) {
    if (fs::exists(p, ec) && rpi::test::read_file(p) == text) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

// Runs `watch ARGS --state STATE --count 2` under `timeout` (a station that
// misses a card would wait for ever) while Reinsert's cards come and go.
rpi::test::CommandResult run_reinsert(const std::vector<std::string>& args, const fs::path& a, const fs::path& b,
                                      const fs::path& state, Reinsert& out) {
  std::vector<std::string> argv{"timeout", "-s", "INT", "300", rpi::test::cli_path().string(), "watch"};
  argv.insert(argv.end(), args.begin(), args.end());
  for (const char* x : {"--poll", "--count", "2", "--allow-non-removable", "--yes", "--state"}) argv.emplace_back(x);
  argv.push_back(state.string());
  std::thread plug([&] {
    std::this_thread::sleep_for(std::chrono::seconds(3));
    out.devs.push_back(attach(a));
    out.a_done = wait_for_file(state, "2\n", std::chrono::seconds(240));
    rpi::test::run({"losetup", "-d", out.devs.back()});
    std::this_thread::sleep_for(std::chrono::seconds(2));  // the station sees it go
    out.a_written = rpi::test::read_file(a);
    if (!out.a_done) return;
    out.devs.push_back(attach(a));
    std::this_thread::sleep_for(std::chrono::seconds(5));  // the station reads it and passes it over
    rpi::test::run({"losetup", "-d", out.devs.back()});
    std::this_thread::sleep_for(std::chrono::seconds(2));
    out.devs.push_back(attach(b));
  });
  auto r = rpi::test::run(argv);
  plug.join();
  if (out.devs.size() == 3) rpi::test::run({"losetup", "-d", out.devs.back()});
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
  fs::path a = d / "a.bin", b = d / "b.bin";
  for (const auto& p : {a, b}) {
    rpi::test::write_file(p, "");
    fs::resize_file(p, 128ull << 20);
  }
  Reinsert cards;
  auto r = run_reinsert({"--spec", spec.string(), "--tarball", tarball().string(), "--size", "64MiB"}, a, b,
                        d / "next-card", cards);
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
  fs::path a = d / "a.bin", b = d / "b.bin";
  for (const auto& p : {a, b}) {
    rpi::test::write_file(p, "");
    fs::resize_file(p, 128ull << 20);
  }
  Reinsert cards;
  auto r = run_reinsert({"--image", img.string(), "--json"}, a, b, d / "next-card", cards);
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
