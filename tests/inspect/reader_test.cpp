// The reader against images made by standard tools, compared with what went
// in and with independent readers: mtools (mdir, mtype), sfdisk --json,
// blkid -p, fsck.fat -v.
#include <fcntl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <regex>
#include <set>
#include <sstream>

#include "inspect_support.hpp"
#include "partition/boot_fat.hpp"
#include "partition/reader.hpp"
#include "rpi/error.hpp"

namespace rpi::test::inspect {
namespace {

using namespace rpi::partition;

struct Opened {
  Fd fd;
  std::uint64_t size = 0;
};
Opened open_image(const fs::path& p) {
  Opened o{open_or_throw(p.string(), O_RDONLY), 0};
  o.size = fd_size(o.fd.get(), p.string());
  return o;
}

std::string env_export(const std::string& out, const std::string& key) {
  std::smatch m;
  std::regex re("(^|\n)" + key + "=([^\n]*)");
  return std::regex_search(out, m, re) ? m[2].str() : "<missing " + key + ">";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

class ReaderTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReaderTest, ListingAndContentMatchWhatWentIn) {
  RPI_REQUIRE_IMAGE_TOOLS();
  TempDir dir;
  BuiltImage b = build_image(dir, GetParam(), true);
  Opened o = open_image(b.image);

  MbrInfo mbr = read_mbr(o.fd.get(), o.size, "card.img");
  EXPECT_EQ(mbr.disk_id, 0xcafef00du);
  EXPECT_EQ(mbr.entries[0].type, 0x0c);
  EXPECT_EQ(mbr.entries[0].start_lba, 16384u);
  EXPECT_FALSE(mbr.entries[1].used());
  EXPECT_TRUE(mbr.warnings.empty());

  // sfdisk is the oracle for the partition table.
  auto sf = run({"sfdisk", "--json", b.image.string()});
  ASSERT_EQ(sf.exit_code, 0) << sf.err;
  EXPECT_NE(sf.out.find("\"id\": \"0xcafef00d\""), std::string::npos) << sf.out;
  EXPECT_NE(sf.out.find("\"size\": " + std::to_string(mbr.entries[0].sectors)), std::string::npos) << sf.out;

  FatVolume vol = FatVolume::open(o.fd.get(), mbr.entries[0].offset(), mbr.entries[0].bytes(), "card.img");
  const FatInfo& fi = vol.info();
  EXPECT_STREQ(fat_kind_name(fi.kind), ("FAT" + GetParam()).c_str());
  EXPECT_EQ(fi.label(), "RPITEST");
  EXPECT_EQ(fi.boot_label, "RPITEST");
  EXPECT_EQ(fi.volume_id_string(), "1234-ABCD");
  EXPECT_TRUE(fi.fats_identical);

  // blkid is the oracle for type, label and ID.
  auto bl = run({"blkid", "-p", "-O", std::to_string(kPartOffset), "-o", "export", b.image.string()});
  ASSERT_EQ(bl.exit_code, 0) << bl.err;
  EXPECT_EQ(env_export(bl.out, "VERSION"), fat_kind_name(fi.kind));
  EXPECT_EQ(env_export(bl.out, "LABEL"), fi.label());
  EXPECT_EQ(env_export(bl.out, "UUID"), fi.volume_id_string());

  // Every file that went in, found by its path, with the same bytes.
  for (auto& [rel, data] : b.files) {
    auto e = vol.stat(rel);
    ASSERT_TRUE(e) << rel;
    EXPECT_EQ(e->size, data.size()) << rel;
    EXPECT_EQ(vol.read_file(rel, 1 << 20), data) << rel;
  }
  // Lookups are case-insensitive, also by the short name.
  EXPECT_EQ(vol.read_file("CONFIG.TXT", 4096), b.files["config.txt"]);
  EXPECT_EQ(vol.read_file("boot/INITRAMFS-RPI", 1 << 20), b.files["boot/initramfs-rpi"]);
  EXPECT_EQ(vol.read_file("LONGFI~1.DAT", 4096), b.files["longfilename_here.dat"]);
  EXPECT_FALSE(vol.stat("no/such/file"));
  EXPECT_THROW(vol.read_file("boot/initramfs-rpi", 1000), Error);  // over max_bytes
  EXPECT_THROW(vol.read_file("boot", 1000), Error);

  // Names as mtools shows them: mcopy stored "config.txt" as a short name
  // with NT case flags, "Mixed.TXT" with a long name.
  std::map<std::string, FatEntry> root;
  for (auto& e : vol.list("/")) root[e.name] = e;
  ASSERT_TRUE(root.count("config.txt"));
  EXPECT_FALSE(root["config.txt"].has_long_name);
  EXPECT_EQ(root["config.txt"].short_name, "CONFIG.TXT");
  ASSERT_TRUE(root.count("Mixed.TXT"));
  EXPECT_TRUE(root["Mixed.TXT"].has_long_name);
  EXPECT_EQ(root["Mixed.TXT"].short_name, "MIXED.TXT");
  EXPECT_EQ(root["longfilename_here.dat"].short_name, "LONGFI~1.DAT");
  EXPECT_TRUE(root.count("Grüße aus Berlin.txt"));
  EXPECT_TRUE(root["boot"].is_directory());

  // The walk equals mdir's recursive bare listing.
  std::set<std::string> ours;
  vol.walk(
      [&](const std::string& path, const FatEntry& e) { ours.insert("::/" + path + (e.is_directory() ? "/" : "")); });
  auto md = sh("LANG=C.UTF-8 MTOOLS_SKIP_CHECK=1 mdir -/ -b -i '" + b.image.string() + "@@" +
               std::to_string(kPartOffset) + "' ::");
  ASSERT_EQ(md.exit_code, 0) << md.err;
  std::set<std::string> theirs;
  std::istringstream lines(md.out);
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) theirs.insert(line);
  EXPECT_EQ(ours, theirs);
  EXPECT_TRUE(vol.warnings().empty()) << vol.warnings().front();

  auto ovl = find_apkovls(vol);
  ASSERT_EQ(ovl.size(), 1u);
  EXPECT_EQ(ovl[0].name, "kiosk.apkovl.tar.gz");
}

TEST_P(ReaderTest, FreeClustersAgreeWithFsckAndFsinfo) {
  RPI_REQUIRE_IMAGE_TOOLS();
  RPI_REQUIRE_TOOL("fsck.fat");
  TempDir dir;
  BuiltImage b = build_image(dir, GetParam(), true);
  Opened o = open_image(b.image);
  FatVolume vol = FatVolume::open(o.fd.get(), kPartOffset, o.size - kPartOffset, "card.img");
  const FatInfo& fi = vol.info();

  // fsck.fat -v prints "N files, USED/TOTAL clusters" for the partition cut out.
  fs::path part = dir / "part.img";
  auto cut = run({"dd", "if=" + b.image.string(), "of=" + part.string(), "bs=1M", "skip=8", "status=none"});
  ASSERT_EQ(cut.exit_code, 0) << cut.err;
  auto fsck = run({"fsck.fat", "-n", "-v", part.string()});
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out << fsck.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(fsck.out, m, std::regex("(\\d+)/(\\d+) clusters"))) << fsck.out;
  const std::uint64_t used = std::stoull(m[1]), total = std::stoull(m[2]);
  EXPECT_EQ(total, fi.clusters);
  EXPECT_EQ(fi.free_clusters, total - used);

  if (fi.kind == FatKind::fat32) {
    ASSERT_TRUE(fi.fsinfo_free);
    EXPECT_EQ(*fi.fsinfo_free, fi.free_clusters);
    // A wrong FSInfo count: fsck.fat complains, and so do we.
    patch(b.image, kPartOffset + 512 + 488, le32s(fi.free_clusters + 7));
    FatVolume again = FatVolume::open(o.fd.get(), kPartOffset, o.size - kPartOffset, "card.img");
    EXPECT_EQ(*again.info().fsinfo_free, fi.free_clusters + 7);
    EXPECT_EQ(again.info().free_clusters, fi.free_clusters);
    auto w = again.warnings();
    ASSERT_FALSE(w.empty());
    EXPECT_NE(w[0].find("FSInfo claims"), std::string::npos) << w[0];
    run({"dd", "if=" + b.image.string(), "of=" + part.string(), "bs=1M", "skip=8", "status=none"});
    EXPECT_NE(run({"fsck.fat", "-n", part.string()}).exit_code, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Fat, ReaderTest, ::testing::Values("16", "32"));

TEST(Reader, Fat12WithoutPartitionTable) {
  RPI_REQUIRE_IMAGE_TOOLS();
  TempDir dir;
  BuiltImage b = build_image(dir, "12", false, "4M");
  Opened o = open_image(b.image);
  std::uint8_t s0[512];
  ASSERT_EQ(pread_full(o.fd.get(), s0, 512, 0, "read"), 512u);
  EXPECT_TRUE(looks_like_fat_boot_sector(s0));
  EXPECT_THROW(read_mbr(o.fd.get(), o.size, "card.img"), Error);
  FatVolume vol = FatVolume::open(o.fd.get(), 0, o.size, "card.img");
  EXPECT_EQ(vol.info().kind, FatKind::fat12);
  for (auto& [rel, data] : b.files) EXPECT_EQ(vol.read_file(rel, 1 << 20), data) << rel;
}

// mtools stores "grüße.txt" as an 8.3 name with OEM bytes and case flags, no
// long name; the reader decodes it as code page 437 (Ü = 0x9A, ß = 0xE1) and
// applies the lower-case flag to Ü as Linux's nls_cp437 does.
TEST(Reader, OemShortNames) {
  RPI_REQUIRE_IMAGE_TOOLS();
  TempDir dir;
  fs::path img = dir / "oem.img";
  write_file(dir / "grüße.txt", "oem\n");
  auto r = sh("set -e; truncate -s 4M '" + img.string() + "'; mkfs.vfat -F 12 '" + img.string() +
              "' >/dev/null; LANG=C.UTF-8 MTOOLS_SKIP_CHECK=1 mcopy -i '" + img.string() + "' '" +
              (dir / "grüße.txt").string() + "' ::/");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Opened o = open_image(img);
  FatVolume vol = FatVolume::open(o.fd.get(), 0, o.size, "oem.img");
  auto entries = vol.list("");
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_FALSE(entries[0].has_long_name);
  EXPECT_EQ(entries[0].name, "grüße.txt");
  EXPECT_EQ(entries[0].short_name, "GRÜßE.TXT");  // as stored: mtools upper-cased ü to Ü (0x9A)
  EXPECT_EQ(vol.read_file("grüße.txt", 100), "oem\n");
  EXPECT_EQ(vol.read_file("GRÜßE.TXT", 100), "oem\n");
}

TEST(Reader, MtypeAgreesOnEveryFile) {
  RPI_REQUIRE_IMAGE_TOOLS();
  RPI_REQUIRE_TOOL("mtype");
  TempDir dir;
  BuiltImage b = build_image(dir, "32", true);
  Opened o = open_image(b.image);
  FatVolume vol = FatVolume::open(o.fd.get(), kPartOffset, o.size - kPartOffset, "card.img");
  int checked = 0;
  vol.walk([&](const std::string& path, const FatEntry& e) {
    if (e.is_directory()) return;
    fs::path out = dir / "mtype.out";
    auto r = sh("LANG=C.UTF-8 MTOOLS_SKIP_CHECK=1 mtype -i '" + b.image.string() + "@@" + std::to_string(kPartOffset) +
                "' '::/" + path + "' > '" + out.string() + "'");
    ASSERT_EQ(r.exit_code, 0) << path << r.err;
    EXPECT_EQ(vol.read_file(path, 1 << 20), read_file(out)) << path;
    ++checked;
  });
  EXPECT_EQ(checked, static_cast<int>(b.files.size()));
}

// ---- open_boot_fat: the boot FAT of an image, as inspect and watch find it --

// The boot FAT of `image` with the descriptor it reads through.
struct OpenedBootFat : BootFat {
  Fd fd;
};
OpenedBootFat boot_fat_of(const fs::path& image, BootFatRead read = BootFatRead::volume) {
  Fd fd = open_or_throw(image.string(), O_RDONLY);
  BootFat b = open_boot_fat(fd.get(), "card.img", read);
  return {std::move(b), std::move(fd)};
}

std::vector<BootFatNote::Kind> kinds(const BootFat& b) {
  std::vector<BootFatNote::Kind> k;
  for (const auto& n : b.notes) k.push_back(n.kind);
  return k;
}

TEST(BootFat, MbrImage) {
  RPI_REQUIRE_IMAGE_TOOLS();
  TempDir dir;
  BuiltImage b = build_image(dir, "32", true);
  OpenedBootFat bf = boot_fat_of(b.image);
  EXPECT_EQ(bf.size, fs::file_size(b.image));
  ASSERT_TRUE(bf.mbr);
  EXPECT_FALSE(bf.superfloppy());
  EXPECT_FALSE(bf.gpt());
  EXPECT_EQ(bf.mbr->disk_id, 0xcafef00du);  // as given to sfdisk
  EXPECT_EQ(bf.partition, 1u);
  EXPECT_EQ(bf.offset, kPartOffset);
  EXPECT_TRUE(bf.notes.empty());
  EXPECT_FALSE(bf.error);
  ASSERT_TRUE(bf.volume);
  EXPECT_EQ(bf.volume->info().label(), "RPITEST");  // as given to mkfs.vfat
  EXPECT_EQ(bf.volume->info().volume_id_string(), "1234-ABCD");
  EXPECT_EQ(bf.volume->read_file("cmdline.txt", 4096), b.files["cmdline.txt"]);

  // The table alone: the same partition table, no volume.
  OpenedBootFat table = boot_fat_of(b.image, BootFatRead::table);
  ASSERT_TRUE(table.mbr);
  EXPECT_EQ(table.mbr->disk_id, 0xcafef00du);
  EXPECT_FALSE(table.volume);
  EXPECT_FALSE(table.error);
  EXPECT_EQ(table.partition, 0u);
}

TEST(BootFat, Superfloppy) {
  RPI_REQUIRE_IMAGE_TOOLS();
  TempDir dir;
  BuiltImage b = build_image(dir, "12", false, "4M");
  OpenedBootFat bf = boot_fat_of(b.image);
  EXPECT_TRUE(bf.superfloppy());
  EXPECT_FALSE(bf.gpt());
  EXPECT_EQ(bf.partition, 0u);
  EXPECT_EQ(bf.offset, 0u);
  EXPECT_FALSE(bf.error);
  ASSERT_TRUE(bf.volume);
  EXPECT_EQ(bf.volume->info().kind, FatKind::fat12);
  EXPECT_EQ(bf.volume->read_file(".alpine-release", 4096), b.files[".alpine-release"]);
  EXPECT_FALSE(boot_fat_of(b.image, BootFatRead::table).volume);
}

// A GPT (its protective MBR) is reported and not read, even with a FAT
// partition in it.
TEST(BootFat, GptIsNotRead) {
  RPI_REQUIRE_TOOL("sfdisk");
  RPI_REQUIRE_TOOL("mkfs.vfat");
  TempDir dir;
  fs::path img = dir / "gpt.img";
  auto r = sh("set -e; truncate -s 16M '" + img.string() +
              "'; printf 'label: gpt\\nstart=2048, type=uefi\\n' | sfdisk -q '" + img.string() +
              "'; mkfs.vfat --offset 2048 '" + img.string() + "' 8192 >/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (BootFatRead read : {BootFatRead::volume, BootFatRead::table}) {
    OpenedBootFat bf = boot_fat_of(img, read);
    ASSERT_TRUE(bf.mbr);
    EXPECT_TRUE(bf.gpt());
    EXPECT_EQ(bf.mbr->entries[0].type, 0xEE);
    EXPECT_FALSE(bf.volume);
    ASSERT_TRUE(bf.error);
    EXPECT_EQ(bf.error->code(), Errc::input);
    EXPECT_EQ(std::string(bf.error->what()),
              "card.img: GPT partition table, not supported (Raspberry Pi cards need an MBR)");
  }
}

TEST(BootFat, NoFatPartition) {
  RPI_REQUIRE_TOOL("sfdisk");
  TempDir dir;
  fs::path img = dir / "linux.img";
  auto r = sh("truncate -s 16M '" + img.string() + "' && printf 'label: dos\\nstart=2048, type=83\\n' | sfdisk -q '" +
              img.string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  OpenedBootFat bf = boot_fat_of(img);
  ASSERT_TRUE(bf.mbr);
  EXPECT_EQ(bf.mbr->entries[0].type, 0x83);
  EXPECT_FALSE(bf.volume);
  EXPECT_TRUE(bf.notes.empty());
  ASSERT_TRUE(bf.error);
  EXPECT_EQ(std::string(bf.error->what()),
            "card.img: no FAT partition (a Raspberry Pi boots from a FAT partition of type 0x0c)");
  // Only the table asked for: no verdict on the FAT.
  EXPECT_FALSE(boot_fat_of(img, BootFatRead::table).error);
}

TEST(BootFat, TruncatedFiles) {
  RPI_REQUIRE_IMAGE_TOOLS();
  TempDir dir;
  // Cut before its FAT partition starts: sfdisk wrote the table for 16 MiB.
  fs::path cut = dir / "cut.img";
  auto r = sh("truncate -s 16M '" + cut.string() + "' && printf 'label: dos\\nstart=8192, type=c\\n' | sfdisk -q '" +
              cut.string() + "' && truncate -s 1M '" + cut.string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  OpenedBootFat bf = boot_fat_of(cut);
  EXPECT_FALSE(bf.volume);
  EXPECT_EQ(kinds(bf), (std::vector{BootFatNote::Kind::partition_table, BootFatNote::Kind::past_end}));
  EXPECT_TRUE(contains(bf.notes[0].message, "partition 1 ends at byte 16777216, past the end of the disk"))
      << bf.notes[0].message;
  EXPECT_EQ(bf.notes[1].partition, 1u);
  EXPECT_EQ(bf.notes[1].message, "partition 1 starts at byte 4194304, past the end (1048576 bytes)");
  ASSERT_TRUE(bf.error);
  EXPECT_TRUE(contains(bf.error->what(), "a truncated image, or a card smaller than its partition table says"))
      << bf.error->what();

  // Cut inside its FAT: the partition's own error, naming it.
  BuiltImage b = build_image(dir, "32", true);
  ASSERT_EQ(sh("truncate -s " + std::to_string(kPartOffset + 4096) + " '" + b.image.string() + "'").exit_code, 0);
  OpenedBootFat inside = boot_fat_of(b.image);
  EXPECT_FALSE(inside.volume);
  ASSERT_TRUE(inside.error);
  EXPECT_EQ(inside.error->code(), Errc::input);
  EXPECT_TRUE(contains(inside.error->what(), "card.img partition 1: ")) << inside.error->what();
  // The error says it; it is not a note as well.
  for (const auto& n : inside.notes) EXPECT_NE(n.kind, BootFatNote::Kind::unreadable) << n.message;

  // Shorter than a sector, and a sector 0 that is neither an MBR nor a FAT: no medium at all.
  write_file(dir / "tiny.img", std::string(100, '\0'));
  try {
    boot_fat_of(dir / "tiny.img");
    ADD_FAILURE() << "a 100-byte file was taken for a disk";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::input);
    EXPECT_EQ(std::string(e.what()), "card.img: only 100 bytes: not a disk image");
  }
  write_file(dir / "noise.img", pseudo_random(4096, 3));
  EXPECT_THROW(boot_fat_of(dir / "noise.img"), Error);
}

// A first FAT partition whose file system does not open is passed over for
// the next one, and said so.
TEST(BootFat, ABrokenFirstFatPartitionIsPassedOver) {
  RPI_REQUIRE_IMAGE_TOOLS();
  RPI_REQUIRE_TOOL("blkid");
  TempDir dir;
  fs::path img = dir / "two.img";
  auto r = sh("set -e; truncate -s 48M '" + img.string() +
              "'; printf 'label: dos\\nstart=2048, size=16384, type=c\\nstart=18432, type=c\\n' | sfdisk -q '" +
              img.string() + "'; mkfs.vfat -F 16 -n SECOND --offset 18432 '" + img.string() + "' >/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // blkid (the oracle) finds a FAT in partition 2 and nothing in partition 1.
  EXPECT_NE(run({"blkid", "-p", "-O", std::to_string(2048 * 512), img.string()}).exit_code, 0);
  EXPECT_EQ(run({"blkid", "-p", "-O", std::to_string(18432ull * 512), img.string()}).exit_code, 0);
  OpenedBootFat bf = boot_fat_of(img);
  ASSERT_TRUE(bf.volume);
  EXPECT_FALSE(bf.error);
  EXPECT_EQ(bf.partition, 2u);
  EXPECT_EQ(bf.offset, 18432ull * 512);
  EXPECT_EQ(bf.volume->info().label(), "SECOND");
  ASSERT_EQ(bf.notes.size(), 1u);
  EXPECT_EQ(bf.notes[0].kind, BootFatNote::Kind::unreadable);
  EXPECT_EQ(bf.notes[0].partition, 1u);
  EXPECT_TRUE(contains(bf.notes[0].message, "card.img partition 1: ")) << bf.notes[0].message;
  EXPECT_TRUE(contains(bf.notes[0].message, "; partition 2 is read instead")) << bf.notes[0].message;
}

TEST(Apkovl, SummaryWithoutSecrets) {
  RPI_REQUIRE_TOOL("tar");
  TempDir dir;
  make_apkovl(dir.path(), dir / "a.apkovl.tar.gz");
  ApkovlSummary s = summarize_apkovl(read_file(dir / "a.apkovl.tar.gz"), "a.apkovl.tar.gz");
  EXPECT_EQ(s.hostname, "kiosk-07");
  EXPECT_EQ(s.world, (std::vector<std::string>{"alpine-base", "openssh", "chrony"}));
  auto def = s.runlevels["default"];
  std::sort(def.begin(), def.end());  // tar stores them in directory order
  EXPECT_EQ(def, (std::vector<std::string>{"chronyd", "sshd"}));
  EXPECT_EQ(s.runlevels["boot"], std::vector<std::string>{"networking"});
  ASSERT_EQ(s.users.size(), 2u);
  EXPECT_EQ(s.users[1].name, "pi");
  EXPECT_EQ(s.users[1].uid, 1000u);
  EXPECT_EQ(s.users[1].shell, "/bin/sh");
  EXPECT_TRUE(s.ssh_host_keys);
  EXPECT_TRUE(s.wifi_config);
  // The ssid lines only ("staff" given in hex, as wpa_supplicant takes it); no psk.
  EXPECT_EQ(s.wifi_ssids, (std::vector<std::string>{"x", "staff"}));
  EXPECT_TRUE(s.shadow);
  // busybox tar (the initramfs' tar) counts the same members.
  if (have_tool("busybox")) {
    auto bb = run({"busybox", "tar", "-tzf", (dir / "a.apkovl.tar.gz").string()});
    ASSERT_EQ(bb.exit_code, 0) << bb.err;
    EXPECT_EQ(static_cast<std::uint64_t>(std::count(bb.out.begin(), bb.out.end(), '\n')), s.members);
  }
}

TEST(Apkovl, RejectsWhatIsNotTarGz) {
  EXPECT_THROW(summarize_apkovl("plain text, not gzip", "x.apkovl.tar.gz"), Error);
  EXPECT_THROW(summarize_apkovl(std::string("\x1f\x8b") + pseudo_random(500, 9), "x.apkovl.tar.gz"), Error);
  EXPECT_THROW(summarize_apkovl("", "x.apkovl.tar.gz"), Error);
  try {
    summarize_apkovl("nope", "bad.apkovl.tar.gz");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::input);
    EXPECT_NE(std::string(e.what()).find("bad.apkovl.tar.gz"), std::string::npos);
  }
}

TEST(Apkovl, WarnsAboutAbsoluteAndDotDotMembers) {
  RPI_REQUIRE_TOOL("python3");
  TempDir dir;
  fs::path out = dir / "evil.tar.gz";
  auto r = run({"python3", "-c",
                "import tarfile,io,sys\n"
                "t=tarfile.open(sys.argv[1],'w:gz')\n"
                "for n,d in [('/etc/hostname',b'abs\\n'),('../escape',b'x'),('./etc/apk/world',b'a b')]:\n"
                "  i=tarfile.TarInfo(n); i.size=len(d); t.addfile(i,io.BytesIO(d))\n"
                "t.close()\n",
                out.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ApkovlSummary s = summarize_apkovl(read_file(out), "evil.tar.gz");
  EXPECT_EQ(s.members, 3u);
  EXPECT_EQ(s.hostname, "abs");
  EXPECT_EQ(s.world, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(s.warnings.size(), 2u);
}

}  // namespace
}  // namespace rpi::test::inspect
