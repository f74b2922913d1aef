// End-to-end tests of the image engine, checked with independent tools:
// fsck.fat, mtools, sfdisk, blkid, bmaptool, tar.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>

#include "partition/image.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "test_support.hpp"

using namespace rpi::partition;
using rpi::test::TempDir;
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t MiB = 1 << 20;

fs::path crafted(const std::string& kind, const TempDir& dir) {
  fs::path out = dir / (kind + ".tar.gz");
  auto r = rpi::test::run(
      {"python3", (rpi::test::source_dir() / "tests/partition/make_tarball.py").string(), kind, out.string()});
  if (r.exit_code != 0) throw std::runtime_error("make_tarball.py " + kind + ": " + r.err);
  return out;
}

// A small apkovl as `lbu package` makes it: relative etc/... members.
fs::path make_apkovl(const TempDir& dir, const std::string& host = "myhost") {
  fs::create_directories(dir / "ovl/etc");
  rpi::test::write_file(dir / "ovl/etc/hostname", host + "\n");
  fs::path out = dir / (host + ".apkovl.tar.gz");
  auto r = rpi::test::sh("tar -C '" + (dir / "ovl").string() + "' -czf '" + out.string() + "' etc");
  if (r.exit_code != 0) throw std::runtime_error("tar failed: " + r.err);
  return out;
}

ImageOptions with_apkovl(const fs::path& apkovl) {
  ImageOptions o;
  o.extra_files.push_back({apkovl.filename().string(), rpi::test::read_file(apkovl)});
  return o;
}

// The partition cut out of the image, for fsck.fat (which has no offset option).
fs::path cut_partition(const fs::path& img, const ImageResult& r, const TempDir& dir) {
  fs::path part = dir / "part.img";
  rpi::Fd in = rpi::open_or_throw(img.string(), O_RDONLY);
  rpi::Fd out = rpi::open_or_throw(part.string(), O_RDWR | O_CREAT | O_TRUNC);
  std::uint64_t start = r.geometry.partition_offset(), len = r.geometry.partition_bytes();
  EXPECT_EQ(ftruncate(out.get(), static_cast<off_t>(len)), 0);
  // Copy only what is not a hole: the sparse-aware way, so 64 GiB images stay cheap.
  std::vector<char> buf(4 << 20);
  off_t pos = static_cast<off_t>(start);
  const off_t end = static_cast<off_t>(start + len);
  while (pos < end) {
    off_t data = lseek(in.get(), pos, SEEK_DATA);
    if (data < 0 || data >= end) break;
    off_t hole = std::min<off_t>(lseek(in.get(), data, SEEK_HOLE), end);
    for (off_t p = data; p < hole;) {
      std::size_t n = static_cast<std::size_t>(std::min<off_t>(static_cast<off_t>(buf.size()), hole - p));
      rpi::pread_full(in.get(), buf.data(), n, static_cast<std::uint64_t>(p), "read");
      rpi::pwrite_all(out.get(), buf.data(), n, static_cast<std::uint64_t>(p) - start, "write");
      p += static_cast<off_t>(n);
    }
    pos = hole;
  }
  return part;
}

// fsck.fat -n must exit 0 and say nothing beyond its version and summary lines.
void expect_fsck_clean(const fs::path& part) {
  auto r = rpi::test::run({"fsck.fat", "-n", part.string()});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  int lines = 0;
  for (char c : r.out) lines += c == '\n';
  EXPECT_LE(lines, 2) << "fsck.fat reported:\n" << r.out << r.err;
}

std::string mtools_target(const fs::path& img) {
  return img.string() + "@@" + std::to_string(8 * MiB);
}

// Every file of the tarball (minus its apkovl) plus `apkovl` must be on the
// FAT with identical bytes, per mtools.
void expect_same_files(const fs::path& img, const fs::path& tarball, const fs::path& apkovl, const TempDir& dir) {
  fs::path want = dir / "want", got = dir / "got";
  fs::create_directories(want);
  fs::create_directories(got);
  ASSERT_EQ(rpi::test::sh("tar -xzf '" + tarball.string() + "' -C '" + want.string() + "'").exit_code, 0);
  for (auto& e : fs::directory_iterator(want))
    if (e.path().filename().string().find(".apkovl.tar.gz") != std::string::npos) fs::remove(e.path());
  if (!apkovl.empty()) fs::copy_file(apkovl, want / apkovl.filename());
  auto r = rpi::test::run({"mcopy", "-s", "-n", "-m", "-i", mtools_target(img), "::/*", got.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto d = rpi::test::run({"diff", "-r", want.string(), got.string()});
  EXPECT_EQ(d.exit_code, 0) << d.out.substr(0, 2000) << d.err;
}

std::string blkid_fs(const fs::path& img) {
  return rpi::test::run({"blkid", "-p", "-O", std::to_string(8 * MiB), img.string()}).out;
}

}  // namespace

class ImageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* t : {"fsck.fat", "mcopy", "mdir", "sfdisk", "blkid"}) RPI_REQUIRE_TOOL(t);
  }
  TempDir dir;
};

// A card run's Ctrl-C reaches the build through ImageOptions::cancel: it stops
// at the next block of the tarball and leaves no image, .bmap or temporary.
TEST(ImageCancel, StopsTheBuildAndLeavesNothing) {
  TempDir dir;
  fs::path tarball = rpi::test::fixture_tarball({"--size-mb", "8"});
  std::atomic<bool> cancel{false};
  ImageOptions opt;
  int events = 0;
  opt.cancel = &cancel;
  opt.events = [&](const rpi::Event& e) {
    if (e.type == "build" && ++events == 1) cancel = true;  // the first, at the first file
  };
  EXPECT_THROW(build_image(tarball, dir / "pi.img", opt), rpi::Cancelled);
  EXPECT_EQ(events, 1) << "the build went on after the cancel";
  EXPECT_TRUE(fs::is_empty(dir.path())) << "something was left in " << dir.path();
}

TEST_F(ImageTest, Fat32ImageReadsCorrectlyWithEveryOracle) {
  fs::path tarball = rpi::test::fixture_tarball({"--size-mb", "8"});
  fs::path apkovl = make_apkovl(dir);
  fs::path img = dir / "pi.img";
  ImageResult r = build_image(tarball, img, with_apkovl(apkovl));

  EXPECT_EQ(r.geometry.type, FatType::fat32);
  EXPECT_EQ(r.geometry.cluster_bytes(), 512u);
  EXPECT_EQ(r.dropped, std::vector<std::string>{"rpi.apkovl.tar.gz"});
  struct stat st {};
  ASSERT_EQ(stat(img.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "images may hold secrets";
  EXPECT_TRUE(fs::exists(dir / "pi.img.bmap"));

  auto sf = rpi::test::run({"sfdisk", "--json", img.string()});
  ASSERT_EQ(sf.exit_code, 0) << sf.err;
  EXPECT_NE(sf.out.find("\"start\": 16384"), std::string::npos) << sf.out;
  EXPECT_NE(sf.out.find("\"type\": \"c\""), std::string::npos) << sf.out;
  char id[16];
  snprintf(id, sizeof id, "0x%08x", r.disk_id);
  EXPECT_NE(sf.out.find(id), std::string::npos) << sf.out;
  std::uint64_t size_sectors = r.geometry.total_sectors;
  EXPECT_NE(sf.out.find("\"size\": " + std::to_string(size_sectors)), std::string::npos) << sf.out;
  EXPECT_EQ(size_sectors * 512 % (4 * MiB), 0u);

  std::string b = blkid_fs(img);
  EXPECT_NE(b.find("TYPE=\"vfat\""), std::string::npos) << b;
  EXPECT_NE(b.find("VERSION=\"FAT32\""), std::string::npos) << b;
  EXPECT_NE(b.find("LABEL=\"ALPINE\""), std::string::npos) << b;
  EXPECT_NE(b.find("LABEL_FATBOOT=\"ALPINE\""), std::string::npos) << b;

  expect_fsck_clean(cut_partition(img, r, dir));
  expect_same_files(img, tarball, apkovl, dir);

  // Long names for lower-case 8.3 names (shortname=mixed style), exactly one apkovl at the root.
  auto ls = rpi::test::run({"mdir", "-i", mtools_target(img), "::/"});
  EXPECT_NE(ls.out.find("CONFIG   TXT"), std::string::npos) << ls.out;
  EXPECT_NE(ls.out.find("config.txt"), std::string::npos) << ls.out;
  EXPECT_NE(ls.out.find("myhost.apkovl.tar.gz"), std::string::npos) << ls.out;
  EXPECT_EQ(ls.out.find("rpi.apkovl.tar.gz"), std::string::npos) << ls.out;
}

TEST_F(ImageTest, BmaptoolCopyOntoADirtyCardGivesTheSameFilesystem) {
  RPI_REQUIRE_TOOL("bmaptool");
  fs::path tarball = rpi::test::fixture_tarball({"--size-mb", "8"});
  fs::path apkovl = make_apkovl(dir);
  fs::path img = dir / "pi.img";
  ImageResult r = build_image(tarball, img, with_apkovl(apkovl));
  // A "used card": random bytes everywhere, then only the mapped ranges written.
  fs::path card = dir / "card.img";
  ASSERT_EQ(
      rpi::test::sh("head -c " + std::to_string(r.image_size) + " /dev/urandom > '" + card.string() + "'").exit_code,
      0);
  auto c = rpi::test::run({"bmaptool", "copy", "--bmap", (dir / "pi.img.bmap").string(), img.string(), card.string()});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  // Mapped ranges equal byte for byte; the FAT on the card is clean and holds the same files.
  rpi::Fd a = rpi::open_or_throw(img.string(), O_RDONLY), b = rpi::open_or_throw(card.string(), O_RDONLY);
  std::vector<char> x(1 << 20), y(1 << 20);
  for (const auto& e : r.map.extents()) {
    for (std::uint64_t off = 0; off < e.length; off += x.size()) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(x.size(), e.length - off));
      rpi::pread_full(a.get(), x.data(), n, e.offset + off, "img");
      rpi::pread_full(b.get(), y.data(), n, e.offset + off, "card");
      ASSERT_EQ(0, memcmp(x.data(), y.data(), n)) << "mapped range differs at " << e.offset + off;
    }
  }
  TempDir d2;
  fs::path part = d2 / "card-part.img";
  ASSERT_EQ(
      rpi::test::sh("dd if='" + card.string() + "' of='" + part.string() + "' bs=1M skip=8 status=none").exit_code, 0);
  expect_fsck_clean(part);
  expect_same_files(card, tarball, apkovl, d2);
}

TEST_F(ImageTest, SameInputGivesTheSameBytes) {
  fs::path tarball = rpi::test::fixture_tarball({"--size-mb", "4"});
  fs::path apkovl = make_apkovl(dir);
  ImageResult a = build_image(tarball, dir / "a.img", with_apkovl(apkovl));
  ImageResult b = build_image(tarball, dir / "b.img", with_apkovl(apkovl));
  EXPECT_EQ(a.disk_id, b.disk_id);
  EXPECT_EQ(rpi::test::run({"cmp", (dir / "a.img").string(), (dir / "b.img").string()}).exit_code, 0);
  EXPECT_EQ(rpi::test::read_file(dir / "a.img.bmap"), rpi::test::read_file(dir / "b.img.bmap"));
  // A different apkovl gives different identifiers.
  fs::path other = make_apkovl(dir, "otherhost");
  ImageResult c = build_image(tarball, dir / "c.img", with_apkovl(other));
  EXPECT_NE(a.disk_id, c.disk_id);
  // So does a different edit alone (cmdline.txt's apkovl=URL per host, same apkovl).
  auto edited = [&](const std::string& host) {
    ImageOptions o = with_apkovl(apkovl);
    o.edits["cmdline.txt"] = [host](const std::string& s) {
      return s.substr(0, s.find('\n')) + " apkovl=http://10.0.0.1/" + host + ".apkovl.tar.gz\n";
    };
    return o;
  };
  ImageResult d = build_image(tarball, dir / "d.img", edited("pi-01"));
  ImageResult e = build_image(tarball, dir / "e.img", edited("pi-02"));
  EXPECT_NE(d.disk_id, e.disk_id);
  EXPECT_NE(d.disk_id, a.disk_id);
}

TEST_F(ImageTest, Fat16AtFortyMiB) {
  fs::path tarball = rpi::test::fixture_tarball({"--size-mb", "4"});
  fs::path apkovl = make_apkovl(dir);
  ImageOptions o = with_apkovl(apkovl);
  o.image_size = 40 * MiB;
  fs::path img = dir / "small.img";
  ImageResult r = build_image(tarball, img, o);
  EXPECT_EQ(r.geometry.type, FatType::fat16);
  EXPECT_NE(rpi::test::run({"sfdisk", "--json", img.string()}).out.find("\"type\": \"e\""), std::string::npos);
  EXPECT_NE(blkid_fs(img).find("VERSION=\"FAT16\""), std::string::npos) << blkid_fs(img);
  expect_fsck_clean(cut_partition(img, r, dir));
  expect_same_files(img, tarball, apkovl, dir);
}

// --dry-run shows plan_image; the build must make exactly that, and the size
// the "too small" messages suggest must be enough.
TEST_F(ImageTest, PlanMatchesTheBuildAndTheSuggestedSizeFits) {
  fs::path tarball = rpi::test::fixture_tarball({"--size-mb", "4"});
  fs::path apkovl = make_apkovl(dir);
  const std::uint64_t content = tarball_content_estimate(tarball);
  EXPECT_EQ(min_image_size(), 16 * MiB);
  for (std::uint64_t size : {min_image_size_for(content), 41 * MiB, 100 * MiB, std::uint64_t{0}}) {
    TempDir d;
    ImageOptions o = with_apkovl(apkovl);
    o.image_size = size;
    o.label = "lower";
    ImagePlan plan = plan_image(o, content);
    ImageResult r = build_image(tarball, d / "p.img", o);
    EXPECT_EQ(plan.label, "LOWER");
    EXPECT_EQ(plan.image_size, r.image_size) << size;
    EXPECT_EQ(plan.size_reason, r.size_reason) << size;
    EXPECT_EQ(plan.geometry.type, r.geometry.type) << size;
    EXPECT_EQ(plan.geometry.clusters, r.geometry.clusters) << size;
    EXPECT_NE(blkid_fs(d / "p.img").find("LABEL=\"LOWER\""), std::string::npos) << blkid_fs(d / "p.img");
    // Everything from the partition start to the data region is written, zeros included (tech-brief §1.16).
    const std::uint64_t from = r.geometry.partition_offset(), to = r.geometry.cluster_offset(2);
    std::uint64_t covered = from;
    for (const auto& e : r.map.extents())
      if (e.offset <= covered && e.offset + e.length > covered) covered = e.offset + e.length;
    EXPECT_GE(covered, to) << "unmapped from " << covered << " (data region at " << to << ")";
  }
  // One step below the suggestion still fits or fails with a message that suggests it again.
  ImageOptions o = with_apkovl(apkovl);
  o.image_size = min_image_size_for(content) - kSizeAlign;
  if (o.image_size >= min_image_size()) {
    try {
      build_image(tarball, dir / "tight.img", o);
    } catch (const rpi::Error& e) {
      EXPECT_NE(std::string(e.what()).find("use --size " + std::to_string(min_image_size_for(content) >> 20) + "MiB"),
                std::string::npos)
          << e.what();
    }
  }
  EXPECT_FALSE(plan_image(ImageOptions{}, std::nullopt).image_size) << "automatic size without a tarball: unknown";
}

TEST_F(ImageTest, LargerSizesIncludingSparse64GiB) {
  fs::path tarball = rpi::test::fixture_tarball({"--size-mb", "4"});
  fs::path apkovl = make_apkovl(dir);
  for (std::uint64_t size : {256 * MiB, 1024 * MiB, 65536 * MiB}) {
    TempDir d;
    ImageOptions o = with_apkovl(apkovl);
    o.image_size = size;
    fs::path img = d / "big.img";
    ImageResult r = build_image(tarball, img, o);
    EXPECT_EQ(fs::file_size(img), size);
    struct stat st {};
    ASSERT_EQ(stat(img.c_str(), &st), 0);
    EXPECT_LT(std::uint64_t(st.st_blocks) * 512, 64 * MiB) << "image not sparse at " << size;
    EXPECT_NE(blkid_fs(img).find("VERSION=\"FAT32\""), std::string::npos);
    expect_fsck_clean(cut_partition(img, r, d));
    auto t = rpi::test::run({"mtype", "-i", mtools_target(img), "::/config.txt"});
    EXPECT_NE(t.out.find("kernel=boot/vmlinuz-rpi"), std::string::npos) << size;
  }
}

TEST_F(ImageTest, ManyEntriesLongAndNonAsciiNames) {
  TempDir d;
  fs::path tarball = crafted("names", d);
  fs::path apkovl = make_apkovl(dir);
  fs::path img = dir / "names.img";
  ImageResult r = build_image(tarball, img, with_apkovl(apkovl));
  expect_fsck_clean(cut_partition(img, r, dir));
  expect_same_files(img, tarball, apkovl, dir);
  auto ls = rpi::test::run({"mdir", "-i", mtools_target(img), "::/many"});
  EXPECT_NE(ls.out.find("file-number-04999.dat"), std::string::npos);
  EXPECT_NE(ls.out.find("5002 files"), std::string::npos)
      << ls.out.substr(ls.out.size() > 300 ? ls.out.size() - 300 : 0);  // . and .. count
}

TEST_F(ImageTest, HardLinksAreCopies) {
  TempDir d;
  fs::path img = dir / "hl.img";
  ImageResult r = build_image(crafted("hardlink", d), img, with_apkovl(make_apkovl(dir)));
  expect_fsck_clean(cut_partition(img, r, dir));
  auto a = rpi::test::run({"mtype", "-i", mtools_target(img), "::/boot/vmlinuz-rpi"});
  auto b = rpi::test::run({"mtype", "-i", mtools_target(img), "::/boot/kernel-copy"});
  EXPECT_EQ(a.out.size(), 5000u);
  EXPECT_EQ(a.out, b.out);
}

TEST_F(ImageTest, EditsExtraFilesAndSourceDateEpoch) {
  fs::path tarball = rpi::test::fixture_tarball({"--size-mb", "4"});
  ImageOptions o;
  o.edits["cmdline.txt"] = [](const std::string& s) { return s.substr(0, s.find('\n')) + " console=serial0,115200\n"; };
  o.extra_files.push_back({"usercfg.txt", "enable_uart=1\n"});
  o.source_date_epoch = 946684800;  // 2000-01-01, earlier than the tarball's times
  o.label = "pifleet";
  fs::path img = dir / "e.img";
  ImageResult r = build_image(tarball, img, o);
  expect_fsck_clean(cut_partition(img, r, dir));
  auto c = rpi::test::run({"mtype", "-i", mtools_target(img), "::/cmdline.txt"});
  EXPECT_EQ(c.out, "modules=loop,squashfs,sd-mod,usb-storage quiet console=tty1 console=serial0,115200\n");
  EXPECT_EQ(rpi::test::run({"mtype", "-i", mtools_target(img), "::/usercfg.txt"}).out, "enable_uart=1\n");
  auto ls = rpi::test::run({"mdir", "-i", mtools_target(img), "::/"});
  EXPECT_NE(ls.out.find("2000-01-01"), std::string::npos) << ls.out;
  EXPECT_EQ(ls.out.find("2025-"), std::string::npos) << ls.out;
  EXPECT_NE(blkid_fs(img).find("LABEL=\"PIFLEET\""), std::string::npos);
}

TEST_F(ImageTest, ForceAcceptsATarballWithoutBootFiles) {
  TempDir d;
  fs::path t = crafted("no-boot-files", d);
  EXPECT_THROW(build_image(t, dir / "x.img", ImageOptions{}), rpi::Error);
  EXPECT_FALSE(fs::exists(dir / "x.img"));
  ImageOptions o;
  o.force = true;
  o.image_size = 40 * MiB;
  // The spec's changes to cmdline.txt cannot be made: said as a warning, not dropped silently.
  o.edits["cmdline.txt"] = [](const std::string& s) { return s + " consoleblank=0"; };
  std::vector<std::string> warnings;
  o.events = [&](const rpi::Event& e) {
    if (e.type == "warning") warnings.push_back(e.message);
  };
  ImageResult r = build_image(t, dir / "x.img", o);
  expect_fsck_clean(cut_partition(dir / "x.img", r, dir));
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("no cmdline.txt"), std::string::npos) << warnings[0];
}

// Every hostile or broken tarball: a clear message naming the problem, exit
// code 1 from the CLI, and no file left behind (not even a temporary).
struct BadCase {
  const char* kind;
  const char* message;
};

class BadTarball : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadTarball, IsRefusedCleanly) {
  TempDir d;
  const BadCase& c = GetParam();
  fs::path t;
  if (std::string(c.kind) == "truncated" || std::string(c.kind) == "corrupt") {
    fs::path good = rpi::test::fixture_tarball({"--size-mb", "4"});
    std::string bytes = rpi::test::read_file(good);
    if (std::string(c.kind) == "truncated")
      bytes.resize(bytes.size() / 2);
    else
      for (std::size_t i = bytes.size() / 2; i < bytes.size() / 2 + 16; ++i)
        bytes[i] = static_cast<char>(bytes[i] ^ 0x5A);
    t = d / (std::string(c.kind) + ".tar.gz");
    rpi::test::write_file(t, bytes);
  } else {
    t = crafted(c.kind, d);
  }
  fs::path out_dir = d / "out";
  fs::create_directories(out_dir);
  fs::path apkovl = make_apkovl(d);
  auto r = rpi::test::cli({"--tarball", t.string(), "--apkovl", apkovl.string(), "--output",
                           (out_dir / "pi.img").string(), "--size", "40MiB"});
  // Too big for the size given: the size is what to change (usage); the others are bad input.
  EXPECT_EQ(r.exit_code, std::string(c.kind) == "too-big" ? 2 : 1) << r.err;
  EXPECT_NE(r.err.find(c.message), std::string::npos) << "stderr: " << r.err;
  EXPECT_TRUE(fs::is_empty(out_dir)) << "output left behind";
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadTarball,
    ::testing::Values(BadCase{"absolute", "has an absolute path"}, BadCase{"dotdot", "has a '..' component"},
                      BadCase{"dotdot-middle", "'a/../../b.txt' has a '..' component"},
                      BadCase{"colon", "the character ':'"}, BadCase{"control-char", "bad\\x01name.txt"},
                      BadCase{"trailing-dot", "trailing dot"}, BadCase{"case-collision", "differ only by case"},
                      BadCase{"duplicate", "appears twice"}, BadCase{"symlink", "is a symbolic link"},
                      BadCase{"symlink-dir", "is a symbolic link"}, BadCase{"hardlink-missing", "is a hard link"},
                      BadCase{"device", "is a device node"}, BadCase{"fifo", "is a FIFO"},
                      BadCase{"huge-entry", "more than FAT's file size limit"},
                      BadCase{"too-big", "the files do not fit"}, BadCase{"empty", "is an empty archive"},
                      BadCase{"no-boot-files", "use --force"}, BadCase{"not-tar", "not a gzip-compressed tar archive"},
                      BadCase{"random", "not gzip-compressed"}, BadCase{"bad-utf8", "not valid UTF-8"},
                      BadCase{"deep", "nested deeper"}, BadCase{"truncated", "is truncated"},
                      BadCase{"corrupt", "is corrupt"}),
    [](const ::testing::TestParamInfo<BadCase>& i) {
      std::string n = i.param.kind;
      for (char& ch : n)
        if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return n;
    });

TEST(ImageCli, DryRunWritesNothingAndLabelsAreChecked) {
  TempDir d;
  fs::path tarball = rpi::test::fixture_tarball({"--size-mb", "4"});
  fs::path apkovl = make_apkovl(d);
  fs::path out = d / "out.img";
  auto r = rpi::test::cli({"--tarball", tarball.string(), "--apkovl", apkovl.string(), "--output", out.string(),
                           "--size", "1GiB", "--dry-run"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("FAT32"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out));
  // Refused alike by the run and by --dry-run: the plan checks what the build checks.
  for (const char* label : {"BOOT", "boot", "CIDATA", "TOO-LONG-LABEL", "A:B", "no name", "\xc3\xa9"}) {
    for (bool dry : {false, true}) {
      std::vector<std::string> args = {"--tarball", tarball.string(), "--apkovl", apkovl.string(),
                                       "--output",  out.string(),     "--label",  label};
      if (dry) args.push_back("--dry-run");
      auto l = rpi::test::cli(args);
      EXPECT_EQ(l.exit_code, 2) << label << (dry ? " --dry-run" : "");
      EXPECT_NE(l.err.find("label"), std::string::npos) << l.err;
      // "é" is refused whole: half of it would make the message invalid UTF-8.
      EXPECT_EQ(l.err.find("'\xc3'"), std::string::npos) << l.err;
      EXPECT_FALSE(fs::exists(out));
    }
  }
  // The plan shows the label as stored, the size as rounded, and a size too small for the files.
  auto lower = rpi::test::cli({"--tarball", tarball.string(), "--apkovl", apkovl.string(), "--output", out.string(),
                               "--size", "41MiB", "--label", "pi", "--dry-run"});
  EXPECT_EQ(lower.exit_code, 0) << lower.err;
  EXPECT_NE(lower.out.find("image 40 MiB, FAT16"), std::string::npos) << lower.out;
  EXPECT_NE(lower.out.find("label PI"), std::string::npos) << lower.out;
  EXPECT_NE(lower.out.find("rounded down to 40 MiB"), std::string::npos) << lower.out;
  fs::path bigger = rpi::test::fixture_tarball({"--size-mb", "8"});  // about 7.6 MiB: more than 16 MiB hold
  for (bool dry : {false, true}) {
    std::vector<std::string> args = {"--tarball", bigger.string(), "--apkovl", apkovl.string(),
                                     "--output",  out.string(),    "--size",   "16MiB"};
    if (dry) args.push_back("--dry-run");
    auto small = rpi::test::cli(args);
    EXPECT_EQ(small.exit_code, dry ? 0 : 2) << "the size given is what to change";
    EXPECT_NE((dry ? small.out : small.err).find("use --size 24MiB or more"), std::string::npos)
        << small.out << small.err;
    EXPECT_FALSE(fs::exists(out));
  }
  auto tiny = rpi::test::cli(
      {"--tarball", tarball.string(), "--apkovl", apkovl.string(), "--output", out.string(), "--size", "10MiB"});
  EXPECT_EQ(tiny.exit_code, 2);
  EXPECT_NE(tiny.err.find("--size 10MiB is too small: the smallest image is 16 MiB"), std::string::npos) << tiny.err;
  // An apkovl the initramfs would not find is refused by name.
  fs::path badname = d / "config.tar.gz";
  fs::copy_file(apkovl, badname);
  auto b = rpi::test::cli({"--tarball", tarball.string(), "--apkovl", badname.string(), "--output", out.string()});
  EXPECT_EQ(b.exit_code, 1);
  EXPECT_NE(b.err.find("<host>.apkovl.tar.gz"), std::string::npos) << b.err;
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(ImageTest, ABatchEqualsSeparateBuilds) {
  // One pass over the tarball for three identities gives exactly the images
  // three separate builds give.
  fs::path tarball = rpi::test::fixture_tarball({"--size-mb", "4"});
  std::vector<ImageJob> jobs;
  for (const char* host : {"pi-01", "pi-02", "pi-03"}) {
    ImageOptions o = with_apkovl(make_apkovl(dir, host));
    o.edits["cmdline.txt"] = [host](const std::string& s) {
      return s.substr(0, s.find('\n')) + " host=" + host + "\n";
    };
    jobs.push_back({dir / (std::string(host) + "-batch.img"), o});
  }
  jobs[2].options.image_size = 40 * MiB;  // a different geometry in the same batch
  std::vector<ImageResult> batch = build_images(tarball, jobs);
  ASSERT_EQ(batch.size(), 3u);
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    fs::path single = dir / ("single-" + std::to_string(i) + ".img");
    build_image(tarball, single, jobs[i].options);
    EXPECT_EQ(rpi::test::run({"cmp", jobs[i].output.string(), single.string()}).exit_code, 0) << i;
  }
  EXPECT_NE(batch[0].disk_id, batch[1].disk_id);
  EXPECT_EQ(batch[2].geometry.type, FatType::fat16);
}
