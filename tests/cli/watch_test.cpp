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

// watch --image: a card too small for the image is passed over with a note, as
// with a spec, and the station goes on to the next card; card-done names no host.
TEST(Cli, WatchWithAnImagePassesOverACardTooSmall) {
  if (geteuid() != 0 || access("/dev/loop-control", W_OK) != 0) GTEST_SKIP() << "needs root and /dev/loop-control";
  RPI_REQUIRE_TOOL("losetup");
  TempDir d;
  const fs::path img = d / "pi.img";
  ASSERT_EQ(cli({"--spec", example("headless.toml").string(), "--tarball", tarball().string(), "--output", img.string(),
                 "--size", "64MiB"})
                .exit_code,
            0);
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
