// The writer: regular-file targets checked against bmaptool's output, and loop
// devices for the parallel batch, O_EXCL conflicts, mounted filesystems,
// ENOSPC midway, SIGKILL midway and corrupted read-back.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <regex>

#include "loop_device.hpp"
#include "partition/block_map.hpp"
#include "partition/image.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "test_support.hpp"
#include "udev/flash.hpp"

namespace rpi::test {
namespace {

namespace fs = std::filesystem;
using partition::BlockMap;
using udev::FlashJob;
using udev::FlashOptions;
using udev::FlashSource;

constexpr std::uint64_t kMiB = 1 << 20;
constexpr std::uint64_t kGiB = 1ull << 30;

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Mapped: the MBR area, a few scattered ranges, and the unaligned image tail.
BlockMap scattered_map(std::uint64_t size) {
  BlockMap m(size);
  m.add(0, 64 * 1024);
  m.add(kMiB - 4096, 8192);  // straddles the 1 MiB boundary
  m.add(3 * kMiB + 4096, 5 * kMiB + 123);
  m.add(12 * kMiB, 4096);
  m.add(size - 5000, 5000);
  return m;
}

std::shared_ptr<const FlashSource> source_with_bmap(const fs::path& img, BlockMap map) {
  Fd fd = open_or_throw(img.string(), O_RDONLY);
  map.compute_checksums(fd.get(), img.string());
  fs::path bmap = img;
  bmap += ".bmap";
  partition::write_bmap(bmap, map);
  return FlashSource::open(img);
}

std::string read_range(const fs::path& p, std::uint64_t off, std::uint64_t len) {
  Fd fd = open_or_throw(p.string(), O_RDONLY);
  std::string s(len, '\0');
  s.resize(pread_full(fd.get(), s.data(), len, off, p.string()));
  return s;
}

// `cmp` (an independent tool) on every mapped range of the image and the target.
void expect_mapped_equal(const fs::path& image, const fs::path& target, const BlockMap& map) {
  for (const auto& e : map.extents()) {
    auto r = run({"cmp", "-n", std::to_string(e.length), "-i",
                  std::to_string(e.offset) + ":" + std::to_string(e.offset), image.string(), target.string()});
    EXPECT_EQ(r.exit_code, 0) << "extent at " << e.offset << ": " << r.out << r.err;
  }
}

TEST(FlashFile, SameBytesAsBmaptoolCopy) {
  RPI_REQUIRE_TOOL("bmaptool");
  RPI_REQUIRE_TOOL("cmp");
  TempDir tmp;
  const std::uint64_t size = 16 * kMiB + 1000;  // not a multiple of the block size
  make_image(tmp / "pi.img", size, 1);
  auto src = source_with_bmap(tmp / "pi.img", scattered_map(size));
  ASSERT_GT(src->map.extents().size(), 3u);
  // A new file (an existing one stands in for a card: AnExistingFileIsWrittenLikeACard).
  std::vector<Event> events;
  FlashOptions opts;
  opts.events = [&](const Event& e) { events.push_back(e); };
  auto r = udev::flash_one(FlashJob{(tmp / "card.img").string(), src, "kiosk-01"}, opts);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(r.verified);
  EXPECT_EQ(r.bytes_written, src->map.mapped_bytes());
  EXPECT_EQ(r.identity, "kiosk-01");
  EXPECT_EQ(fs::file_size(tmp / "card.img"), size);
  // bmaptool writes the same mapped ranges; unmapped ranges are zero in both.
  auto b = run({"bmaptool", "-q", "copy", "--bmap", (tmp / "pi.img.bmap").string(), (tmp / "pi.img").string(),
                (tmp / "bmaptool.img").string()});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  auto c = run({"cmp", (tmp / "bmaptool.img").string(), (tmp / "card.img").string()});
  EXPECT_EQ(c.exit_code, 0) << c.out << c.err;
  expect_mapped_equal(tmp / "pi.img", tmp / "card.img", src->map);
  EXPECT_NE(read_range(tmp / "card.img", 2 * kMiB, 4096), read_range(tmp / "pi.img", 2 * kMiB, 4096));
  // Sparse: unmapped ranges are holes, so far fewer blocks than the image size.
  struct stat st {};
  ASSERT_EQ(::stat((tmp / "card.img").c_str(), &st), 0);
  EXPECT_LT(static_cast<std::uint64_t>(st.st_blocks) * 512, src->map.mapped_bytes() + 2 * kMiB);
  // Progress: write then verify events for this target, ending at the mapped total.
  bool saw_write_end = false, saw_verify_end = false;
  for (const auto& e : events) {
    EXPECT_EQ(e.subject, (tmp / "card.img").string());
    if (e.type == "write" && e.done == e.total) saw_write_end = true;
    if (e.type == "verify" && e.done == e.total) saw_verify_end = true;
  }
  EXPECT_TRUE(saw_write_end);
  EXPECT_TRUE(saw_verify_end);
}

TEST(FlashFile, NewFileIsPrivate) {
  TempDir tmp;
  make_image(tmp / "pi.img", 2 * kMiB, 2);
  auto r = udev::flash_one(FlashJob{(tmp / "new.img").string(), FlashSource::open(tmp / "pi.img"), "a"}, {});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(fs::status(tmp / "new.img").permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_EQ(read_file(tmp / "new.img"), read_file(tmp / "pi.img"));  // no .bmap: the whole image
}

// An existing file stands in for a card and is written like one: its size
// stays, and so do the old bytes the image does not map, inside the image and
// beyond it; the first and last MiB are zeroed (no stale MBR or GPT backup).
TEST(FlashFile, AnExistingFileIsWrittenLikeACard) {
  RPI_REQUIRE_TOOL("cmp");
  TempDir tmp;
  const std::uint64_t size = 16 * kMiB + 1000, card_size = 64 * kMiB;
  make_image(tmp / "pi.img", size, 16);
  auto src = source_with_bmap(tmp / "pi.img", scattered_map(size));
  const fs::path card = tmp / "card.img";
  old_card(card, card_size);  // 0xff and an MBR signature
  const std::string marker = "data beyond the image";
  {
    Fd fd = open_or_throw(card.string(), O_RDWR);
    pwrite_all(fd.get(), marker.data(), marker.size(), 40 * kMiB, card.string());
  }
  ASSERT_EQ(::chmod(card.c_str(), 0600), 0);
  std::vector<Event> events;
  FlashOptions opts;
  opts.events = [&](const Event& e) { events.push_back(e); };
  auto r = udev::flash_one(FlashJob{card.string(), src, "kiosk-01"}, opts);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(r.verified);
  EXPECT_EQ(r.bytes_written, src->map.mapped_bytes());
  EXPECT_EQ(fs::file_size(card), card_size) << "the file was resized";
  EXPECT_EQ(read_range(card, 40 * kMiB, marker.size()), marker) << "the data beyond the image is gone";
  expect_mapped_equal(tmp / "pi.img", card, src->map);
  // As on a card: the unmapped space keeps its old bytes, except the first and last MiB.
  EXPECT_EQ(read_range(card, 2 * kMiB, 4096), std::string(4096, '\xff'));
  EXPECT_EQ(read_range(card, 32 * kMiB, 4096), std::string(4096, '\xff'));
  EXPECT_EQ(read_range(card, 64 * 1024, 4096), std::string(4096, '\0'));
  EXPECT_EQ(read_range(card, card_size - kMiB, kMiB), std::string(kMiB, '\0')) << "a stale GPT backup";
  EXPECT_NO_THROW(udev::verify_target(card.string(), *src));
  EXPECT_EQ(fs::status(card).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  for (const auto& e : events) EXPECT_NE(e.type, "note") << e.message;
}

// The reported case: a 2 GiB file with data at 1500 MiB, written with a small
// image, was cut down to the image's size.
TEST(FlashFile, ALargeSparseFileKeepsItsSizeAndItsData) {
  TempDir tmp;
  make_image(tmp / "pi.img", 8 * kMiB, 17);
  const fs::path card = tmp / "rf.bin";
  const std::string marker = "MARKER at 1500 MiB";
  write_file(card, "");
  ASSERT_EQ(::truncate(card.c_str(), 2 * kGiB), 0);
  {
    Fd fd = open_or_throw(card.string(), O_RDWR);
    pwrite_all(fd.get(), marker.data(), marker.size(), 1500 * kMiB, card.string());
  }
  auto src = FlashSource::open(tmp / "pi.img");
  auto r = udev::flash_one(FlashJob{card.string(), src, "x"}, {});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(fs::file_size(card), 2 * kGiB);
  EXPECT_EQ(read_range(card, 1500 * kMiB, marker.size()), marker);
  EXPECT_EQ(read_range(card, 0, 8 * kMiB), read_file(tmp / "pi.img"));
}

// A file smaller than the image is refused with the message a card gets, and
// nothing of it changes: not its size, bytes or mode.
TEST(FlashFile, AFileSmallerThanTheImageIsRefusedLikeACard) {
  TempDir tmp;
  make_image(tmp / "pi.img", 8 * kMiB, 18);
  const fs::path card = tmp / "small.bin";
  old_card(card, 4 * kMiB);
  ASSERT_EQ(::chmod(card.c_str(), 0644), 0);
  const std::string before = read_file(card);
  std::vector<Event> events;
  FlashOptions opts;
  opts.events = [&](const Event& e) { events.push_back(e); };
  auto r = udev::flash_one(FlashJob{card.string(), FlashSource::open(tmp / "pi.img"), "x"}, opts);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.error_code, Errc::device);
  EXPECT_FALSE(r.changed);
  EXPECT_EQ(r.error,
            "refusing to write " + card.string() + ": it has 4 MiB but the image needs 8 MiB; use a larger card");
  EXPECT_TRUE(read_file(card) == before) << "the refused file was changed (now " << fs::file_size(card) << " bytes)";
  EXPECT_EQ(fs::status(card).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read);
  EXPECT_TRUE(events.empty());
}

// A file that group or others can read is made 0600 before the card's secrets
// go into it, and a note says so.
TEST(FlashFile, AFileOthersCanReadIsMadePrivateAndTheUserIsTold) {
  TempDir tmp;
  make_image(tmp / "pi.img", 4 * kMiB, 19);
  for (const mode_t mode : {0644, 0640, 0604}) {
    const fs::path card = tmp / ("card-" + std::to_string(mode) + ".bin");
    old_card(card, 8 * kMiB);
    ASSERT_EQ(::chmod(card.c_str(), mode), 0);
    std::vector<Event> events;
    FlashOptions opts;
    opts.events = [&](const Event& e) { events.push_back(e); };
    auto r = udev::flash_one(FlashJob{card.string(), FlashSource::open(tmp / "pi.img"), "x"}, opts);
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(fs::status(card).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", static_cast<unsigned>(mode));
    std::vector<std::string> notes;
    for (const auto& e : events)
      if (e.type == "note") {
        EXPECT_EQ(e.subject, card.string());
        notes.push_back(e.message);
      }
    ASSERT_EQ(notes.size(), 1u);
    EXPECT_EQ(notes[0], card.string() + " was readable by group or others (mode " + octal +
                            "); a card can hold secrets (Wi-Fi keys, SSH host keys), so it is now mode 0600");
  }
}

// After a wipe: no 0xff byte of the old card is left where the image (`size`
// bytes) maps nothing, nor beyond it.
void expect_no_old_data(const std::string& card, std::uint64_t size, const partition::BlockMap& map) {
  EXPECT_EQ(card.find('\xff', size), std::string::npos) << "old data beyond the image";
  auto mapped = [&](std::uint64_t at) {
    for (const auto& e : map.extents())
      if (at >= e.offset && at < e.offset + e.length) return true;
    return false;
  };
  for (std::uint64_t at = 0; at < size; at += 4096)
    if (!mapped(at)) {
      EXPECT_NE(card[at], '\xff') << "old data at byte " << at;
    }
}

// A ramfs (no fallocate, so no holes and no discard) at `dir`, or null with `why`.
std::unique_ptr<ScopedMount> mount_ramfs(const fs::path& dir, std::string& why) {
  fs::create_directory(dir);
  try {
    return std::make_unique<ScopedMount>(std::vector<std::string>{"-t", "ramfs", "ramfs"}, dir);
  } catch (const std::exception& e) {
    why = e.what();
    return nullptr;
  }
}

// --wipe on a file: nothing old is left, in the unmapped space of the image or
// beyond it, and the file keeps its size. `punches`: whether its file system
// can punch holes (else zeros are written, and a note says so).
void expect_file_wipe_erases_the_unused_space(const fs::path& dir, const fs::path& card, bool punches) {
  const std::uint64_t size = 16 * kMiB + 1000, card_size = 48 * kMiB;
  make_image(dir / "pi.img", size, 20);
  auto src = source_with_bmap(dir / "pi.img", scattered_map(size));
  old_card(card, card_size);
  FlashOptions o;
  o.wipe = true;
  std::vector<Event> events;
  o.events = [&](const Event& e) { events.push_back(e); };
  auto r = udev::flash_one({card.string(), src, "x"}, o);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(r.wiped);
  EXPECT_TRUE(r.verified);
  EXPECT_EQ(fs::file_size(card), card_size);
  expect_mapped_equal(dir / "pi.img", card, src->map);
  expect_no_old_data(read_file(card), size, src->map);
  bool wipe_done = false, zeros_note = false;
  for (const auto& e : events) {
    if (e.type == "wipe" && e.done == card_size && e.total == card_size) wipe_done = true;
    if (e.type == "note" && contains(e.message, card.string() + " cannot have holes punched")) zeros_note = true;
  }
  EXPECT_TRUE(wipe_done) << "a wipe progress event reaching the file's size";
  EXPECT_EQ(zeros_note, !punches) << "the note that zeros are written instead";
  if (punches) {
    struct stat st {};
    ASSERT_EQ(::stat(card.c_str(), &st), 0);
    EXPECT_LT(static_cast<std::uint64_t>(st.st_blocks) * 512, src->map.mapped_bytes() + 4 * kMiB)
        << "the old data's blocks are still allocated";
  }
}

TEST(FlashFile, WipePunchesHolesInAFile) {
  TempDir tmp;
  expect_file_wipe_erases_the_unused_space(tmp.path(), tmp / "card.bin", true);
}

// ramfs has no fallocate: the wipe writes zeros.
TEST(FlashFile, WipeWritesZerosWhereTheFileCannotHaveHoles) {
  TempDir tmp;
  std::string why;
  auto m = mount_ramfs(tmp / "ramfs", why);
  if (!m) GTEST_SKIP() << "cannot mount a ramfs: " << why;
  expect_file_wipe_erases_the_unused_space(tmp.path(), tmp / "ramfs" / "card.bin", false);
}

// The CLI, as reported: `--image h.img --device FILE` keeps the file's size,
// refuses a file smaller than the image, and tells that a readable file was
// made private.
TEST(FlashFile, TheCliWritesAFileLikeACard) {
  TempDir tmp;
  make_image(tmp / "h.img", 8 * kMiB, 21);
  const fs::path small = tmp / "small.bin", card = tmp / "rf2.bin";
  old_card(small, 4 * kMiB);
  old_card(card, 32 * kMiB);
  for (const auto& p : {small, card}) ASSERT_EQ(::chmod(p.c_str(), 0644), 0);
  auto r = cli({"--image", (tmp / "h.img").string(), "--device", small.string(), "--yes"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out + r.err, "refusing to write " + small.string() +
                                          ": it has 4 MiB but the image needs 8 MiB; use a larger card"))
      << r.out << r.err;
  EXPECT_EQ(fs::file_size(small), 4 * kMiB);
  r = cli({"--image", (tmp / "h.img").string(), "--device", card.string(), "--yes"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(fs::file_size(card), 32 * kMiB);
  EXPECT_EQ(read_range(card, 0, 8 * kMiB), read_file(tmp / "h.img"));
  EXPECT_TRUE(contains(r.err, card.string() + " was readable by group or others (mode 0644)")) << r.err;
  EXPECT_EQ(fs::status(card).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
}

TEST(FlashFile, VerifyNamesTheFirstCorruptedByte) {
  TempDir tmp;
  const std::uint64_t size = 16 * kMiB;
  make_image(tmp / "pi.img", size, 3);
  auto src = source_with_bmap(tmp / "pi.img", scattered_map(size));
  FlashOptions opts;
  opts.verify = false;
  auto r = udev::flash_one(FlashJob{(tmp / "card.img").string(), src, "x"}, opts);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_FALSE(r.verified);
  EXPECT_NO_THROW(udev::verify_target((tmp / "card.img").string(), *src));
  const std::uint64_t bad = 5 * kMiB + 777;  // inside the 3 MiB+4 KiB.. extent
  {
    Fd fd = open_or_throw((tmp / "card.img").string(), O_RDWR);
    char c = read_range(tmp / "card.img", bad, 1)[0];
    c = static_cast<char>(c ^ 0x10);
    pwrite_all(fd.get(), &c, 1, bad, "corrupt");
  }
  try {
    udev::verify_target((tmp / "card.img").string(), *src);
    FAIL() << "corruption not detected";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::verify);
    EXPECT_TRUE(contains(e.what(), "offset " + std::to_string(bad))) << e.what();
  }
}

TEST(FlashFile, StaleBmapIsRejected) {
  TempDir tmp;
  make_image(tmp / "pi.img", 4 * kMiB, 4);
  source_with_bmap(tmp / "pi.img", BlockMap::whole(4 * kMiB));
  make_image(tmp / "pi.img", 5 * kMiB, 4);  // the image changed, the bmap did not
  try {
    FlashSource::open(tmp / "pi.img");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::input);
    EXPECT_TRUE(contains(e.what(), "pi.img.bmap")) << e.what();
  }
}

// FlashSource::open's error for `img`; "" if it opens.
// FlashSource::open and check_source: "" when both pass, else the error text.
std::string open_error(const fs::path& img) {
  try {
    udev::check_source(*FlashSource::open(img));
    return "";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::input) << e.what();
    return e.what();
  }
}

// A raw image's block map under bmaptool's names (bmaptools/CLI.py,
// find_and_open_bmap): pi.img.bmap, else pi.bmap. The source names the file
// it read, and so do its errors.
TEST(FlashFile, ARawImageFindsItsBmapUnderBmaptoolsNames) {
  TempDir tmp;
  const std::uint64_t size = 16 * kMiB;
  make_image(tmp / "pi.img", size, 21);
  EXPECT_EQ(FlashSource::open(tmp / "pi.img")->bmap, fs::path());  // none: the whole image
  EXPECT_EQ(FlashSource::open(tmp / "pi.img")->map.mapped_bytes(), size);
  source_with_bmap(tmp / "pi.img", scattered_map(size));
  fs::rename(tmp / "pi.img.bmap", tmp / "pi.bmap");
  auto src = FlashSource::open(tmp / "pi.img");
  EXPECT_EQ(src->bmap, tmp / "pi.bmap");
  EXPECT_TRUE(src->check_ranges);
  EXPECT_EQ(src->map.to_bmap_xml(), partition::read_bmap(tmp / "pi.bmap").to_bmap_xml());
  EXPECT_LT(src->map.mapped_bytes(), size);
  // pi.img.bmap comes first: pi.bmap may then be anything.
  partition::write_bmap(tmp / "pi.img.bmap", BlockMap::whole(size));
  write_file(tmp / "pi.bmap", "not a block map");
  src = FlashSource::open(tmp / "pi.img");
  EXPECT_EQ(src->bmap, tmp / "pi.img.bmap");
  EXPECT_EQ(src->map.mapped_bytes(), size);
  // A pi.bmap of other bytes (the same size): the range check names it.
  fs::remove(tmp / "pi.img.bmap");
  make_image(tmp / "other.img", size, 22);
  source_with_bmap(tmp / "other.img", scattered_map(size));
  fs::copy_file(tmp / "other.img.bmap", tmp / "pi.bmap", fs::copy_options::overwrite_existing);
  const std::string err = open_error(tmp / "pi.img");
  EXPECT_TRUE(contains(err, (tmp / "pi.bmap").string() + ": checksum mismatch for blocks range ")) << err;
  // Of another size: refused when opened.
  make_image(tmp / "big.img", 2 * size, 23);
  source_with_bmap(tmp / "big.img", scattered_map(2 * size));
  fs::copy_file(tmp / "big.img.bmap", tmp / "pi.bmap", fs::copy_options::overwrite_existing);
  try {
    FlashSource::open(tmp / "pi.img");
    ADD_FAILURE() << "a pi.bmap of another size was taken";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::input);
    EXPECT_TRUE(contains(e.what(), (tmp / "pi.bmap").string() + " describes a " + std::to_string(2 * size)))
        << e.what();
  }
}

// "blocks range A-B" as named in an error message, "" if none.
std::string named_range(const std::string& message) {
  std::size_t at = message.find("blocks range ");
  if (at == std::string::npos) return "";
  std::size_t end = message.find_first_not_of("0123456789-", at + 13);
  return message.substr(at, end - at);
}

// One byte of a mapped range changed after the .bmap was written: same size,
// so only the ranges' checksums can tell.
TEST(FlashFile, ImageChangedInAMappedRangeIsRejected) {
  TempDir tmp;
  const std::uint64_t size = 16 * kMiB;
  make_image(tmp / "pi.img", size, 14);
  auto src = source_with_bmap(tmp / "pi.img", scattered_map(size));
  const std::uint64_t bad = 5 * kMiB + 777;  // inside the 3 MiB+4 KiB.. extent
  {
    Fd fd = open_or_throw((tmp / "pi.img").string(), O_RDWR);
    char c = static_cast<char>(read_range(tmp / "pi.img", bad, 1)[0] ^ 0x10);
    pwrite_all(fd.get(), &c, 1, bad, "corrupt");
  }
  auto hit = std::find_if(src->map.extents().begin(), src->map.extents().end(),
                          [&](const partition::Extent& e) { return e.offset <= bad && bad < e.offset + e.length; });
  ASSERT_NE(hit, src->map.extents().end());
  const std::uint64_t first = hit->offset, last = hit->offset + hit->length - 1;
  std::string err = open_error(tmp / "pi.img");
  EXPECT_TRUE(contains(err, (tmp / "pi.img.bmap").string() + ": checksum mismatch for blocks range " +
                                std::to_string(first / 4096) + "-" + std::to_string(last / 4096) + " (bytes " +
                                std::to_string(first) + "-" + std::to_string(last) + ") of " +
                                (tmp / "pi.img").string()))
      << err;
  EXPECT_TRUE(contains(err, "the image changed after its .bmap was made: rebuild the .bmap")) << err;
  // An unmapped byte is neither written nor checked.
  {
    Fd fd = open_or_throw((tmp / "pi.img").string(), O_RDWR);
    char c = static_cast<char>(read_range(tmp / "pi.img", bad, 1)[0] ^ 0x10);
    pwrite_all(fd.get(), &c, 1, bad, "restore");
    c = static_cast<char>(read_range(tmp / "pi.img", 2 * kMiB, 1)[0] ^ 0x10);
    pwrite_all(fd.get(), &c, 1, 2 * kMiB, "unmapped");
  }
  EXPECT_EQ(open_error(tmp / "pi.img"), "");
}

// The same stale image for a batch: checked once while the cards are written,
// every card fails naming the bad range, and none gets its MBR.
TEST(FlashFile, AStaleBmapFailsEveryCardOfABatchBeforeItsMbr) {
  TempDir tmp;
  const std::uint64_t size = 16 * kMiB;
  make_image(tmp / "pi.img", size, 15);
  {
    Fd fd = open_or_throw((tmp / "pi.img").string(), O_RDWR);
    pwrite_all(fd.get(), "\x55\xaa", 2, 510, "an MBR signature");
  }
  source_with_bmap(tmp / "pi.img", scattered_map(size));  // writes pi.img.bmap with its checksums
  {
    Fd fd = open_or_throw((tmp / "pi.img").string(), O_RDWR);
    char c = static_cast<char>(read_range(tmp / "pi.img", 12 * kMiB + 5, 1)[0] ^ 0x01);
    pwrite_all(fd.get(), &c, 1, 12 * kMiB + 5, "corrupt");
  }
  auto src = FlashSource::open(tmp / "pi.img");
  EXPECT_TRUE(src->check_ranges);
  old_card(tmp / "a.bin", 20 * kMiB);
  old_card(tmp / "b.bin", 20 * kMiB);
  auto results = udev::flash_all({{(tmp / "a.bin").string(), src, "one"}, {(tmp / "b.bin").string(), src, "two"}}, {});
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) {
    EXPECT_FALSE(r.ok()) << r.target;
    EXPECT_EQ(r.error_code, Errc::input) << r.error;
    EXPECT_TRUE(contains(r.error, "checksum mismatch for blocks range 3072-3072")) << r.error;
    EXPECT_EQ(read_range(r.target, 510, 2), std::string(2, '\0')) << r.target << " got an MBR signature";
  }
}

// The tester's case end to end: our own fresh image and .bmap pass; a file added
// to the image with mcopy afterwards (same size) is refused by rpi-provision
// --image with one clear error, exit status 1 and the card not touched, like
// bmaptool refuses it; so is an edited .bmap and another image's .bmap.
TEST(FlashFile, AnImageJustBuiltIsWrittenWithTheBuildsOwnMap) {
  RPI_REQUIRE_TOOL("cmp");
  TempDir tmp;
  const fs::path img = tmp / "b.img";
  auto built = partition::build_image(fixture_tarball({"--size-mb", "4"}), img, {});
  auto src = FlashSource::built(img, built.map);
  EXPECT_EQ(src->map.to_bmap_xml(), built.map.to_bmap_xml());
  // A zeroed card (a file is written like a card: unmapped bytes stay), so the
  // whole image compares equal only if the build's map covers all its data.
  write_file(tmp / "card.bin", "");
  ASSERT_EQ(::truncate((tmp / "card.bin").c_str(), static_cast<off_t>(built.image_size + kMiB)), 0);
  auto r = udev::flash_one(FlashJob{(tmp / "card.bin").string(), src, "x"}, {});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(r.verified);
  auto c = run({"cmp", "-n", std::to_string(built.image_size), img.string(), (tmp / "card.bin").string()});
  EXPECT_EQ(c.exit_code, 0) << c.out << c.err;
  // A file that is not the image the map was built for is refused.
  ASSERT_EQ(::truncate(img.c_str(), static_cast<off_t>(built.image_size + kMiB)), 0);
  std::string err;
  try {
    FlashSource::built(img, built.map);
  } catch (const Error& e) {
    err = e.what();
  }
  EXPECT_TRUE(contains(err, "but was built with " + std::to_string(built.image_size))) << err;
}

TEST(FlashFile, ImageOrBmapChangedAfterTheBuildNeverYieldsAValidCard) {
  RPI_REQUIRE_TOOL("mcopy");
  TempDir tmp;
  // A long name: the result table once cut error lines at 512 bytes.
  const std::string name = "classroom-image-" + std::string(100, 'e') + ".img";
  const fs::path img = tmp / name, bmap = tmp / (name + ".bmap");
  partition::ImageOptions io;
  io.extra_files.push_back({"hello.txt", "hello\n"});
  auto built = partition::build_image(fixture_tarball({"--size-mb", "4"}), img, io);
  const std::string fresh_bmap = read_file(bmap);
  EXPECT_EQ(open_error(img), "");
  auto r = udev::flash_one(FlashJob{(tmp / "fresh.bin").string(), FlashSource::open(img), "x"}, {});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(r.verified);

  old_card(tmp / "card.bin", built.image_size + kMiB);
  const std::string card = read_file(tmp / "card.bin");
  auto flash_cli = [&] { return cli({"--image", img.string(), "--device", (tmp / "card.bin").string(), "--yes"}); };

  // The image changed.
  write_file(tmp / "extra.bin", std::string(100000, 'x'));
  auto m = run({"mcopy", "-i", img.string() + "@@8M", (tmp / "extra.bin").string(), "::/extra.bin"});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  ASSERT_EQ(fs::file_size(img), built.image_size);
  std::string err = open_error(img);
  EXPECT_TRUE(contains(err, bmap.string() + ": checksum mismatch for blocks range ")) << err;
  EXPECT_TRUE(contains(err, "the image changed after its .bmap was made")) << err;
  // --dry-run checks at once and touches nothing.
  auto dry = cli({"--image", img.string(), "--device", (tmp / "card.bin").string(), "--yes", "--dry-run"});
  EXPECT_EQ(dry.exit_code, 1) << dry.out << dry.err;
  EXPECT_TRUE(contains(dry.err, err)) << dry.err;
  EXPECT_TRUE(read_file(tmp / "card.bin") == card) << "--dry-run wrote the card";
  // A station (watch) checks once before its first card.
  auto station = cli({"watch", "--image", img.string(), "--yes", "--dry-run"});
  EXPECT_EQ(station.exit_code, 1) << station.out << station.err;
  EXPECT_TRUE(contains(station.err, err)) << station.err;
  // A real run checks while writing, like bmaptool, but never writes the MBR:
  // the card does not look valid (its head was zeroed first).
  auto c = flash_cli();
  EXPECT_EQ(c.exit_code, 1) << c.out << c.err;
  EXPECT_TRUE(contains(c.out, err)) << c.out;  // the card's line of the result table, not cut however long
  EXPECT_TRUE(contains(c.out, "so it does not look valid); write it again\n")) << c.out;
  EXPECT_EQ(read_range(tmp / "card.bin", 0, 512), std::string(512, '\0')) << "the card has an MBR";
  write_file(tmp / "card.bin", card);
  if (have_tool("bmaptool")) {
    auto b = run({"bmaptool", "copy", "--bmap", bmap.string(), img.string(), (tmp / "bmaptool.bin").string()});
    EXPECT_NE(b.exit_code, 0);
    EXPECT_FALSE(named_range(err).empty()) << err;
    EXPECT_TRUE(contains(b.err, "checksum mismatch for " + named_range(err))) << b.err;
  }

  // Another image of the same size, with its own .bmap: each .bmap only fits its own image.
  io.extra_files.back().data = "other\n";
  auto other = partition::build_image(fixture_tarball({"--size-mb", "4"}), tmp / "other.img", io);
  ASSERT_EQ(other.image_size, built.image_size);
  EXPECT_EQ(open_error(tmp / "other.img"), "");
  write_file(bmap, read_file(tmp / "other.img.bmap"));
  EXPECT_TRUE(contains(open_error(img), "checksum mismatch for blocks range "));

  // The .bmap edited: one digit of a range checksum (as if to match an edited image).
  std::string edited = fresh_bmap;
  std::size_t at = edited.find("chksum=\"") + 8;
  edited[at] = edited[at] == '0' ? '1' : '0';
  write_file(bmap, edited);
  err = open_error(img);
  EXPECT_TRUE(contains(err, bmap.string() + ": BmapFileChecksum mismatch")) << err;
  EXPECT_TRUE(contains(err, "the .bmap was edited or damaged after it was made")) << err;
  c = flash_cli();
  EXPECT_EQ(c.exit_code, 1) << c.out << c.err;
  EXPECT_TRUE(contains(c.err, err)) << c.err;
  EXPECT_TRUE(read_file(tmp / "card.bin") == card) << "the card was written";
  if (have_tool("bmaptool")) {
    auto b = run({"bmaptool", "copy", "--bmap", bmap.string(), img.string(), (tmp / "bmaptool2.bin").string()});
    EXPECT_NE(b.exit_code, 0);
    EXPECT_TRUE(contains(b.err, "checksum mismatch for bmap file")) << b.err;
  }
}

TEST(FlashFile, CancelLeavesNoMbr) {
  TempDir tmp;
  make_image(tmp / "pi.img", 24 * kMiB, 5);
  old_card(tmp / "card.img", 24 * kMiB);
  std::atomic<bool> cancel{false};
  FlashOptions opts;
  opts.cancel = &cancel;
  opts.events = [&](const Event& e) {
    if (e.type == "write" && e.done >= 4 * kMiB) cancel = true;
  };
  auto r = udev::flash_one(FlashJob{(tmp / "card.img").string(), FlashSource::open(tmp / "pi.img"), "x"}, opts);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(r.cancelled);
  EXPECT_TRUE(contains(r.error, "without a valid MBR")) << r.error;
  EXPECT_LT(r.bytes_written, 24 * kMiB);
  EXPECT_EQ(read_range(tmp / "card.img", 510, 2), std::string(2, '\0'));
}

TEST(FlashFile, SameTargetTwiceFailsTheSecondOnly) {
  TempDir tmp;
  make_image(tmp / "pi.img", 2 * kMiB, 6);
  auto src = FlashSource::open(tmp / "pi.img");
  auto results = udev::flash_all({{(tmp / "a.img").string(), src, "one"}, {(tmp / "a.img").string(), src, "two"}}, {});
  ASSERT_EQ(results.size(), 2u);
  EXPECT_TRUE(results[0].ok()) << results[0].error;
  EXPECT_FALSE(results[1].ok());
  EXPECT_TRUE(contains(results[1].error, "given twice")) << results[1].error;
}

// The most targets busy at the same time, a target being busy from its first
// event to its last.
std::size_t most_at_once(const std::vector<std::string>& subjects) {
  std::map<std::string, std::pair<std::size_t, std::size_t>> span;
  for (std::size_t i = 0; i < subjects.size(); ++i) span.try_emplace(subjects[i], i, i).first->second.second = i;
  std::size_t most = 0;
  for (std::size_t i = 0; i < subjects.size(); ++i) {
    std::size_t busy = 0;
    for (const auto& [name, s] : span) busy += s.first <= i && i <= s.second;
    most = std::max(most, busy);
  }
  return most;
}

// --jobs: at most max_parallel cards are written at once, in the order given,
// and each is still written and verified.
TEST(FlashFile, MaxParallelLimitsHowManyCardsAreWrittenAtOnce) {
  TempDir tmp;
  make_image(tmp / "pi.img", 8 * kMiB, 8);
  const std::string image = read_file(tmp / "pi.img");
  auto src = FlashSource::open(tmp / "pi.img");
  for (unsigned limit : {1u, 2u}) {
    std::mutex m;
    std::vector<std::string> subjects;
    FlashOptions opts;
    opts.chunk_bytes = 256 * 1024;  // many events per card
    opts.max_parallel = limit;
    opts.events = [&](const Event& e) {
      std::lock_guard<std::mutex> lock(m);
      if (e.type == "write" || e.type == "verify") subjects.push_back(e.subject);
    };
    std::vector<FlashJob> jobs;
    for (const std::string name : {"a", "b", "c", "d"})
      jobs.push_back({(tmp / (name + std::to_string(limit) + ".img")).string(), src, name});
    auto results = udev::flash_all(jobs, opts);
    ASSERT_EQ(results.size(), jobs.size());
    for (const auto& r : results) {
      EXPECT_TRUE(r.ok() && r.verified) << r.target << ": " << r.error;
      EXPECT_TRUE(read_file(r.target) == image) << r.target;
    }
    EXPECT_LE(most_at_once(subjects), limit) << "limit " << limit;
    if (limit == 1) {
      std::vector<std::string> order;
      for (const auto& s : subjects)
        if (order.empty() || order.back() != s) order.push_back(s);
      std::vector<std::string> given;
      for (const auto& j : jobs) given.push_back(j.target);
      EXPECT_EQ(order, given);
    }
  }
}

// A cancel that lands after the card was opened but before the first piece of
// the image was written: 0 bytes written, yet the old first MiB is gone, so the
// card counts as changed (the report must not call it "not changed").
TEST(FlashFile, CancelBeforeTheFirstPieceStillChangedTheCard) {
  TempDir tmp;
  make_image(tmp / "pi.img", 8 * kMiB, 3);
  old_card(tmp / "card.img", 8 * kMiB);
  std::atomic<bool> cancel{false};
  FlashOptions opts;
  opts.cancel = &cancel;
  opts.events = [&](const Event& e) {
    if (e.type == "write") cancel = true;  // the first one: done == 0, before step 1
  };
  auto r = udev::flash_one(FlashJob{(tmp / "card.img").string(), FlashSource::open(tmp / "pi.img"), "x"}, opts);
  EXPECT_TRUE(r.cancelled);
  EXPECT_EQ(r.bytes_written, 0u);
  EXPECT_TRUE(r.changed);
  EXPECT_TRUE(contains(r.error, "without a valid MBR")) << r.error;
  EXPECT_EQ(read_range(tmp / "card.img", 510, 2), std::string(2, '\0'));
}

// A cancel while the first of three cards is written (one at a time) leaves the
// two waiting cards untouched: not even created.
TEST(FlashFile, CancelLeavesTheWaitingCardsUntouched) {
  TempDir tmp;
  make_image(tmp / "pi.img", 8 * kMiB, 9);
  auto src = FlashSource::open(tmp / "pi.img");
  std::atomic<bool> cancel{false};
  FlashOptions opts;
  opts.cancel = &cancel;
  opts.max_parallel = 1;
  opts.chunk_bytes = 256 * 1024;
  opts.events = [&](const Event& e) {
    if (e.type == "write" && e.done >= 2 * kMiB) cancel = true;
  };
  std::vector<FlashJob> jobs;
  for (const std::string name : {"a", "b", "c"}) jobs.push_back({(tmp / (name + ".img")).string(), src, name});
  auto results = udev::flash_all(jobs, opts);
  ASSERT_EQ(results.size(), 3u);
  EXPECT_TRUE(results[0].cancelled);
  EXPECT_TRUE(results[0].changed);
  EXPECT_TRUE(contains(results[0].error, "without a valid MBR")) << results[0].error;
  for (std::size_t i = 1; i < 3; ++i) {
    EXPECT_TRUE(results[i].cancelled);
    EXPECT_EQ(results[i].identity, jobs[i].identity);
    EXPECT_TRUE(contains(results[i].error, "was not changed")) << results[i].error;
    EXPECT_FALSE(results[i].changed);
    EXPECT_FALSE(fs::exists(jobs[i].target)) << jobs[i].target;
  }
}

FlashOptions loop_options() {
  FlashOptions o;
  o.safety.allow_non_removable = true;  // loop devices are not removable
  return o;
}

TEST(FlashLoop, TwoCardsInParallelAreWrittenAndVerified) {
  REQUIRE_LOOP();
  RPI_REQUIRE_TOOL("cmp");
  TempDir tmp;
  const std::uint64_t size = 16 * kMiB + 1000;
  make_image(tmp / "pi.img", size, 7);
  auto src = source_with_bmap(tmp / "pi.img", scattered_map(size));
  old_card(tmp / "a.bin", 32 * kMiB);
  old_card(tmp / "b.bin", 40 * kMiB);
  LoopDevice a(tmp / "a.bin"), b(tmp / "b.bin");
  auto results = udev::flash_all({{a.path(), src, "kiosk-01"}, {b.path(), src, "kiosk-02"}}, loop_options());
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) {
    EXPECT_TRUE(r.ok()) << r.target << ": " << r.error;
    EXPECT_TRUE(r.verified);
    EXPECT_EQ(r.bytes_written, src->map.mapped_bytes());
  }
  EXPECT_EQ(results[1].identity, "kiosk-02");
  EXPECT_EQ(results[1].target, b.path());
  for (const auto& [file, card_size] : {std::pair{tmp / "a.bin", 32 * kMiB}, std::pair{tmp / "b.bin", 40 * kMiB}}) {
    expect_mapped_equal(tmp / "pi.img", file, src->map);
    // Unmapped ranges inside the first MiB are zeroed; beyond it old data stays;
    // the last MiB (stale GPT backup) is zeroed.
    EXPECT_EQ(read_range(file, 512 * 1024, 4096), std::string(4096, '\0'));
    EXPECT_EQ(read_range(file, 2 * kMiB, 4096), std::string(4096, '\xff'));
    EXPECT_TRUE(read_range(file, card_size - kMiB, kMiB) == std::string(kMiB, '\0')) << "last MiB not zeroed";
  }
}

// The counterfeit-card probe on a genuine card: its test blocks (at 1 GiB,
// 2 GiB and in the last block) are written, read back and zeroed again; none
// with --no-verify.
TEST(FlashLoop, CapacityProbesReadBackAndLeaveNoTrace) {
  REQUIRE_LOOP();
  TempDir tmp;
  const std::uint64_t card_size = 2 * kGiB + 4 * kMiB;
  make_image(tmp / "pi.img", 4 * kMiB, 9);
  for (bool verify : {true, false}) {
    const fs::path card = tmp / (verify ? "v.bin" : "nv.bin");
    write_file(card, "");
    ASSERT_EQ(::truncate(card.c_str(), static_cast<off_t>(card_size)), 0);
    {
      Fd f = open_or_throw(card.string(), O_WRONLY);
      pwrite_all(f.get(), std::string(4096, '\xff').data(), 4096, kGiB, "old data at 1 GiB");
    }
    LoopDevice dev(card);
    FlashOptions o = loop_options();
    o.verify = verify;
    auto r = udev::flash_one({dev.path(), FlashSource::open(tmp / "pi.img"), "x"}, o);
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.capacity_checked, verify);
    EXPECT_EQ(r.capacity_probes, verify ? 3u : 0u);
    EXPECT_EQ(read_range(card, kGiB, 4096), std::string(4096, verify ? '\0' : '\xff'));
    EXPECT_EQ(read_range(card, 2 * kGiB, 4096), std::string(4096, '\0'));
    EXPECT_EQ(read_range(card, card_size - 4096, 4096), std::string(4096, '\0'));
    expect_mapped_equal(tmp / "pi.img", card, FlashSource::open(tmp / "pi.img")->map);
  }
}

// The "detail" events -v shows, on a block device: the capacity probes
// written before the image and read back after verify, each timed and naming
// the card, and the partition table re-read at the end (refused and ignored
// on a loop device without partition scanning: sysfs says which to expect).
// None about probes with --no-verify.
TEST(FlashLoop, DetailsTellTheCapacityProbesAndThePartitionTableReread) {
  REQUIRE_LOOP();
  TempDir tmp;
  const std::uint64_t card_size = 2 * kGiB + 4 * kMiB;
  make_image(tmp / "pi.img", 4 * kMiB, 11);
  for (bool verify : {true, false}) {
    SCOPED_TRACE(verify ? "verify" : "--no-verify");
    const fs::path card = tmp / (verify ? "v.bin" : "nv.bin");
    write_file(card, "");
    ASSERT_EQ(::truncate(card.c_str(), static_cast<off_t>(card_size)), 0);
    LoopDevice dev(card);
    FlashOptions o = loop_options();
    o.verify = verify;
    std::vector<Event> details;
    std::mutex mu;
    o.events = [&](const Event& e) {
      std::lock_guard lock(mu);
      if (e.type == "detail") details.push_back(e);
    };
    auto r = udev::flash_one({dev.path(), FlashSource::open(tmp / "pi.img"), "x"}, o);
    ASSERT_TRUE(r.ok()) << r.error;
    std::string all;
    for (const auto& e : details) all += e.subject + " | " + e.message + "\n";
    // The index of the first detail about this card that starts with `what`; details.size() when none.
    auto find = [&](const std::string& what) {
      std::size_t i = 0;
      while (i < details.size() && !(details[i].subject == dev.path() && details[i].message.starts_with(what))) ++i;
      return i;
    };
    const auto timed = [](const std::string& m) {
      return std::regex_search(m, std::regex(R"((in|after) [0-9]+\.[0-9]{2} s)"));
    };
    const std::size_t written = find(dev.path() + ": capacity probes: 3 test blocks written in ");
    const std::size_t body = find(dev.path() + ": body (all but the first MiB): ");
    const std::size_t verified = find(dev.path() + ": verify: ");
    const std::size_t checked = find(dev.path() + ": capacity check: 3 test blocks read back and erased in ");
    const std::size_t reread = find(dev.path() + ": partition table ");
    ASSERT_LT(body, details.size()) << all;
    ASSERT_LT(reread, details.size()) << all;
    if (verify) {
      ASSERT_LT(written, details.size()) << all;
      ASSERT_LT(verified, details.size()) << all;
      ASSERT_LT(checked, details.size()) << all;
      EXPECT_LT(written, body) << "the probes are written before the image:\n" << all;
      EXPECT_LT(verified, checked) << "and read back after verify:\n" << all;
      EXPECT_LT(checked, reread) << all;
      EXPECT_TRUE(timed(details[written].message)) << details[written].message;
      EXPECT_TRUE(timed(details[checked].message)) << details[checked].message;
    } else {
      for (const auto& e : details) EXPECT_FALSE(contains(e.message, "capacity")) << e.message;
    }
    // Partition scanning on or off for this loop device (losetup -P, or loop's max_part).
    const std::string partscan = read_file("/sys/block/" + fs::path(dev.path()).filename().string() + "/loop/partscan");
    const std::string& m = details[reread].message;
    if (partscan.starts_with("1"))
      EXPECT_TRUE(m.starts_with(dev.path() + ": partition table re-read by the kernel (BLKRRPART) in ")) << m;
    else
      EXPECT_TRUE(m.starts_with(dev.path() + ": partition table not re-read: the kernel refused BLKRRPART (") &&
                  contains(m, "ignored"))
          << m;
    EXPECT_TRUE(timed(m)) << m;
    EXPECT_EQ(reread, details.size() - 1) << "the re-read is the last step:\n" << all;
  }
}

// --wipe: the card's old data is gone from the space the image does not map
// too. `card_file` backs the loop device; `discards`: whether it can discard.
void expect_wipe_erases_the_unused_space(const fs::path& dir, const fs::path& card_file, bool discards) {
  const std::uint64_t size = 16 * kMiB + 1000;
  make_image(dir / "pi.img", size, 10);
  auto src = source_with_bmap(dir / "pi.img", scattered_map(size));
  old_card(card_file, 48 * kMiB);
  LoopDevice dev(card_file);
  FlashOptions o = loop_options();
  o.wipe = true;
  std::vector<Event> events;
  std::mutex mu;
  o.events = [&](const Event& e) {
    std::lock_guard lock(mu);
    events.push_back(e);
  };
  auto r = udev::flash_one({dev.path(), src, "x"}, o);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(r.wiped);
  EXPECT_TRUE(r.verified);
  expect_mapped_equal(dir / "pi.img", card_file, src->map);
  expect_no_old_data(read_file(card_file), size, src->map);
  bool wipe_done = false, zeros_note = false;
  for (const auto& e : events) {
    if (e.type == "wipe" && e.done == 48 * kMiB && e.total == 48 * kMiB) wipe_done = true;
    if (e.type == "note" && contains(e.message, dev.path() + " cannot discard")) zeros_note = true;
  }
  EXPECT_TRUE(wipe_done) << "a wipe progress event reaching the card's size";
  EXPECT_EQ(zeros_note, !discards) << "the note that zeros are written instead";
}

TEST(FlashLoop, WipeDiscardsTheUnusedSpace) {
  REQUIRE_LOOP();
  TempDir tmp;
  expect_wipe_erases_the_unused_space(tmp.path(), tmp / "card.bin", true);
}

// A loop device over ramfs cannot discard (no fallocate): the wipe writes zeros.
TEST(FlashLoop, WipeWritesZerosWhereTheCardCannotDiscard) {
  REQUIRE_LOOP();
  TempDir tmp;
  std::string why;
  auto m = mount_ramfs(tmp / "ramfs", why);
  if (!m) GTEST_SKIP() << "cannot mount a ramfs: " << why;
  expect_wipe_erases_the_unused_space(tmp.path(), tmp / "ramfs" / "card.bin", false);
}

TEST(FlashLoop, ExclusiveHolderIsAClearError) {
  REQUIRE_LOOP();
  TempDir tmp;
  make_image(tmp / "pi.img", 2 * kMiB, 8);
  old_card(tmp / "a.bin", 8 * kMiB);
  LoopDevice a(tmp / "a.bin");
  Fd holder = open_or_throw(a.path(), O_RDONLY | O_EXCL);
  auto r = udev::flash_one({a.path(), FlashSource::open(tmp / "pi.img"), "x"}, loop_options());
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.error_code, Errc::device);
  EXPECT_TRUE(contains(r.error, a.path() + " is busy")) << r.error;
  EXPECT_EQ(read_range(tmp / "a.bin", 510, 2), "\x55\xAA");  // untouched
}

TEST(FlashLoop, MountedFilesystemIsRefusedAndUnmountWorks) {
  REQUIRE_LOOP();
  RPI_REQUIRE_TOOL("mkfs.ext2");
  TempDir tmp;
  make_image(tmp / "pi.img", 4 * kMiB, 9);
  write_file(tmp / "a.bin", "");
  fs::resize_file(tmp / "a.bin", 16 * kMiB);
  LoopDevice a(tmp / "a.bin");
  ASSERT_EQ(run({"mkfs.ext2", "-q", "-F", a.path()}).exit_code, 0);
  fs::create_directories(tmp / "mnt");
  ScopedMount m({"-t", "ext2", a.path()}, tmp / "mnt");
  auto src = FlashSource::open(tmp / "pi.img");
  auto r = udev::flash_one({a.path(), src, "x"}, loop_options());
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.error, (tmp / "mnt").string())) << r.error;
  EXPECT_TRUE(contains(r.error, "--unmount")) << r.error;
  auto opts = loop_options();
  opts.safety.unmount = true;
  std::vector<std::string> notes;
  opts.events = [&](const Event& e) {
    if (e.type == "note") notes.push_back(e.message);
  };
  r = udev::flash_one({a.path(), src, "x"}, opts);
  EXPECT_TRUE(r.ok()) << r.error;
  ASSERT_FALSE(notes.empty());
  EXPECT_TRUE(contains(notes[0], "unmounted " + a.path())) << notes[0];
  EXPECT_NE(run({"mountpoint", "-q", (tmp / "mnt").string()}).exit_code, 0);
  EXPECT_EQ(read_range(tmp / "a.bin", 0, 4 * kMiB), read_file(tmp / "pi.img"));
}

TEST(FlashLoop, FullBackingStoreFailsOneCardOnly) {
  REQUIRE_LOOP();
  TempDir tmp;
  make_image(tmp / "pi.img", 24 * kMiB, 10);
  fs::create_directories(tmp / "small");
  ScopedMount m({"-t", "tmpfs", "-o", "size=8m", "tmpfs"}, tmp / "small");
  write_file(tmp / "small/card.bin", "");
  fs::resize_file(tmp / "small/card.bin", 32 * kMiB);  // sparse: room runs out at 8 MiB
  old_card(tmp / "good.bin", 32 * kMiB);
  LoopDevice bad(tmp / "small/card.bin"), good(tmp / "good.bin");
  auto src = FlashSource::open(tmp / "pi.img");
  auto results = udev::flash_all({{bad.path(), src, "one"}, {good.path(), src, "two"}}, loop_options());
  EXPECT_FALSE(results[0].ok());
  EXPECT_TRUE(contains(results[0].error, bad.path())) << results[0].error;
  EXPECT_TRUE(contains(results[0].error, "No space left") || contains(results[0].error, "Input/output error"))
      << results[0].error;
  EXPECT_LT(results[0].bytes_written, 24 * kMiB);
  EXPECT_TRUE(results[1].ok()) << results[1].error;
  EXPECT_TRUE(results[1].verified);
  EXPECT_EQ(read_range(tmp / "good.bin", 0, 24 * kMiB), read_file(tmp / "pi.img"));
  EXPECT_NE(read_range(tmp / "small/card.bin", 510, 2), "\x55\xAA");
}

TEST(FlashLoop, SigkillMidwayLeavesNoMbrSignature) {
  REQUIRE_LOOP();
  TempDir tmp;
  make_image(tmp / "pi.img", 32 * kMiB, 11);
  old_card(tmp / "a.bin", 32 * kMiB);  // an old, valid-looking card
  LoopDevice a(tmp / "a.bin");
  auto src = FlashSource::open(tmp / "pi.img");
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The writer: announce when it is midway, then wait there to be killed.
    ::close(pipefd[0]);
    auto opts = loop_options();
    opts.events = [&](const Event& e) {
      if (e.type == "write" && e.done >= 8 * kMiB) {
        (void)!::write(pipefd[1], "k", 1);
        ::pause();
      }
    };
    udev::flash_one({a.path(), src, "x"}, opts);
    ::_exit(0);
  }
  ::close(pipefd[1]);
  pollfd p{pipefd[0], POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 120000), 1) << "the writer never got midway";
  char c;
  ASSERT_EQ(::read(pipefd[0], &c, 1), 1);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(pipefd[0]);
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(read_range(tmp / "a.bin", 510, 2), std::string(2, '\0'));
  EXPECT_TRUE(read_range(tmp / "a.bin", 0, kMiB) == std::string(kMiB, '\0')) << "the first MiB is not all zero";
}

TEST(FlashLoop, VerifyNamesTheCorruptedOffset) {
  REQUIRE_LOOP();
  TempDir tmp;
  make_image(tmp / "pi.img", 8 * kMiB, 12);
  old_card(tmp / "a.bin", 8 * kMiB);
  LoopDevice a(tmp / "a.bin");
  auto src = FlashSource::open(tmp / "pi.img");
  auto opts = loop_options();
  opts.verify = false;
  auto r = udev::flash_one({a.path(), src, "x"}, opts);
  ASSERT_TRUE(r.ok()) << r.error;
  const std::uint64_t bad = 6 * kMiB + 12345;
  {
    Fd fd = open_or_throw(a.path(), O_RDWR);
    char byte = static_cast<char>(read_range(tmp / "pi.img", bad, 1)[0] ^ 1);
    pwrite_all(fd.get(), &byte, 1, bad, "corrupt");
    ASSERT_EQ(::fsync(fd.get()), 0);
  }
  try {
    udev::verify_target(a.path(), *src);
    FAIL() << "corruption not detected";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::verify);
    EXPECT_TRUE(contains(e.what(), "offset " + std::to_string(bad))) << e.what();
  }
}

TEST(FlashLoop, ImageLargerThanCardIsRefused) {
  REQUIRE_LOOP();
  TempDir tmp;
  make_image(tmp / "pi.img", 8 * kMiB, 13);
  old_card(tmp / "a.bin", 4 * kMiB);
  LoopDevice a(tmp / "a.bin");
  auto r = udev::flash_one({a.path(), FlashSource::open(tmp / "pi.img"), "x"}, loop_options());
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.error, "refusing to write " + a.path() + ": it has 4 MiB but the image needs 8 MiB; use a larger card")
      << "a file gets the same message: AFileSmallerThanTheImageIsRefusedLikeACard";
  EXPECT_EQ(read_range(tmp / "a.bin", 510, 2), "\x55\xAA");
}

// A 16 MiB card file: a DOS table with one FAT32 (LBA) partition from 1 MiB.
void make_partitioned_card(const fs::path& file) {
  write_file(file, "");
  fs::resize_file(file, 16 * kMiB);
  ASSERT_EQ(sh("echo 'start=2048, type=c' | sfdisk -q " + file.string()).exit_code, 0);
}

// The kernel learns `a`'s partitions (partx -a; waits up to a second for the
// first one's /dev node). "" when done, else why it could not be (a skip).
std::string add_partitions(const LoopDevice& a) {
  auto px = run({"partx", "-a", a.path()});
  if (px.exit_code != 0) return "partx -a failed: " + px.err;
  for (int i = 0; i < 50 && !fs::exists(a.path() + "p1"); ++i) ::usleep(20000);
  return {};
}

// The question before writing (and the plan) say what a card holds, from
// libblkid; the writer's own check just before writing reads nothing of the
// card (libblkid's probe costs about 1 MiB of reads, ZFS's labels at both ends).
TEST(FlashLoop, ContentIsProbedForTheQuestionNotBeforeWriting) {
  REQUIRE_LOOP();
  RPI_REQUIRE_TOOL("sfdisk");
  RPI_REQUIRE_TOOL("partx");
  RPI_REQUIRE_TOOL("mkfs.vfat");
  TempDir tmp;
  make_partitioned_card(tmp / "a.bin");
  LoopDevice a(tmp / "a.bin");
  if (const std::string why = add_partitions(a); !why.empty()) GTEST_SKIP() << why;
  const std::string part = a.path() + "p1";
  ASSERT_TRUE(fs::exists(part));
  ASSERT_EQ(run({"mkfs.vfat", "-n", "BOOTFS", part}).exit_code, 0);
  auto info = udev::inspect_target(a.path());
  EXPECT_EQ(info.content, udev::DeviceInfo::Content::read);
  const std::string name = fs::path(a.path()).filename().string();
  EXPECT_EQ(info.contents(), "a dos partition table: " + name + "p1 vfat \"BOOTFS\"");
  const std::uint64_t before = rpi::test::sectors_read(a.path());
  udev::SafetyOptions safety;
  safety.allow_non_removable = true;
  auto checked = udev::prepare_target(a.path(), safety);
  EXPECT_EQ(checked.content, udev::DeviceInfo::Content::not_read);
  EXPECT_EQ(checked.contents(), "");
  EXPECT_EQ(rpi::test::sectors_read(a.path()), before) << "the check before writing read the card";
  EXPECT_GT(rpi::test::sectors_read(a.path()), 0u) << "the stat file is not counting: the test proves nothing";
  run({"partx", "-d", a.path()});
}

TEST(FlashLoop, PartitionIsRejectedNamingTheDisk) {
  REQUIRE_LOOP();
  RPI_REQUIRE_TOOL("sfdisk");
  RPI_REQUIRE_TOOL("partx");
  TempDir tmp;
  make_partitioned_card(tmp / "a.bin");
  LoopDevice a(tmp / "a.bin");
  if (const std::string why = add_partitions(a); !why.empty()) GTEST_SKIP() << why;
  std::string part = a.path() + "p1";
  ASSERT_TRUE(fs::exists(part));
  try {
    udev::inspect_target(part);
    FAIL() << "partition accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::device);
    EXPECT_TRUE(contains(e.what(), "is a partition; give the whole disk " + a.path())) << e.what();
  }
  // libblkid sees the MBR written by sfdisk.
  auto info = udev::inspect_target(a.path());
  EXPECT_EQ(info.pttype, "dos");
  EXPECT_EQ(info.partitions.size(), 1u);
  run({"partx", "-d", a.path()});
}

}  // namespace
}  // namespace rpi::test
