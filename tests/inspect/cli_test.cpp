// `rpi-provision inspect` end to end: human and JSON output on images made by
// standard tools and by our own engine; no secret ever printed.
#include <gtest/gtest.h>

#include <algorithm>

#include "inspect_support.hpp"
#include "partition/apkovl_check.hpp"
#include "partition/reader.hpp"
#include "rpi/error.hpp"

namespace rpi::test::inspect {
namespace {

void expect_no_secrets(const CommandResult& r) {
  for (const char* s : kSecrets) {
    EXPECT_EQ(r.out.find(s), std::string::npos) << "secret in stdout: " << s;
    EXPECT_EQ(r.err.find(s), std::string::npos) << "secret in stderr: " << s;
  }
}

TEST(InspectCli, HumanOutput) {
  RPI_REQUIRE_IMAGE_TOOLS();
  TempDir dir;
  BuiltImage b = build_image(dir, "32", true);
  auto r = cli({"inspect", b.image.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  for (const char* want : {"disk id 0xcafef00d",
                           "0x0c W95 FAT32 (LBA)",
                           "16384",
                           ": FAT32",
                           "RPITEST",
                           "1234-ABCD",
                           "alpine-rpi-3.22.1 250101",
                           "modules=loop,squashfs,sd-mod,usb-storage quiet console=tty1",
                           "kiosk.apkovl.tar.gz",
                           "kiosk-07",
                           "alpine-base openssh chrony",
                           "networking",
                           "sshd",
                           "pi (1000, /bin/sh)",
                           "ssh host keys  yes",
                           "wifi config    yes",
                           "check          passes --apkovl's checks\n",
                           "longfilename_here.dat",
                           "Grüße aus Berlin.txt",
                           "boot/"})
    EXPECT_NE(r.out.find(want), std::string::npos) << "missing '" << want << "' in:\n" << r.out;
  EXPECT_EQ(r.out.find("Warnings:"), std::string::npos) << r.out;
  expect_no_secrets(r);
}

TEST(InspectCli, JsonOutputIsOneInspectObject) {
  RPI_REQUIRE_IMAGE_TOOLS();
  RPI_REQUIRE_TOOL("python3");
  TempDir dir;
  BuiltImage b = build_image(dir, "16", true);
  auto r = cli({"inspect", b.image.string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  expect_no_secrets(r);
  write_file(dir / "out.json", r.out);
  // An independent parser checks the structure and the values.
  auto py = run({"python3", "-c",
                 "import json,sys\n"
                 "lines=[l for l in open(sys.argv[1]) if l.strip()]\n"
                 "res=[json.loads(l) for l in lines if json.loads(l)['type']=='inspect']\n"
                 "assert len(res)==1, lines\n"
                 "o=res[0]\n"
                 "assert o['partition_table']['disk_id']=='0xcafef00d'\n"
                 "p=o['partition_table']['partitions'][0]\n"
                 "assert p['start']==16384 and p['type']=='0x0c', p\n"
                 "f=o['fat']\n"
                 "assert f['type']=='FAT16' and f['label']=='RPITEST' and f['volume_id']=='1234-ABCD', f\n"
                 "names={e['name']:e for e in o['files']}\n"
                 "assert names['cmdline.txt']['size']==60, names\n"
                 "assert names['boot']['directory'] is True\n"
                 "a=o['apkovls'][0]\n"
                 "assert a['hostname']=='kiosk-07' and a['ssh_host_keys'] is True, a\n"
                 "assert sorted(a['runlevels']['default'])==['chronyd','sshd'], a\n"
                 "assert [u['name'] for u in a['users']]==['root','pi'], a\n"
                 "assert a['check']=={'accepted':True,'problems':[],'warnings':[]}, a\n"
                 "assert o['alpine_release']=='alpine-rpi-3.22.1 250101'\n"
                 "assert o['warnings']==[], o['warnings']\n"
                 "print(f['free_clusters'])\n",
                 (dir / "out.json").string()});
  ASSERT_EQ(py.exit_code, 0) << py.err << r.out;
}

TEST(InspectCli, TwoApkovlsAreAProblem) {
  RPI_REQUIRE_IMAGE_TOOLS();
  TempDir dir;
  BuiltImage b = build_image(dir, "32", true);
  auto cp = sh("MTOOLS_SKIP_CHECK=1 mcopy -i '" + b.image.string() + "@@" + std::to_string(kPartOffset) + "' '" +
               (dir / "src/kiosk.apkovl.tar.gz").string() + "' ::/other.apkovl.tar.gz");
  ASSERT_EQ(cp.exit_code, 0) << cp.err;
  auto r = cli({"inspect", b.image.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("2 apkovl files at the FAT root"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("leave exactly one"), std::string::npos) << r.out;
}

TEST(InspectCli, GptIsNotSupported) {
  RPI_REQUIRE_TOOL("sfdisk");
  TempDir dir;
  fs::path img = dir / "gpt.img";
  auto r0 = sh("truncate -s 16M '" + img.string() + "' && echo 'label: gpt' | sfdisk -q '" + img.string() + "'");
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  auto r = cli({"inspect", img.string()});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("GPT"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("GPT, not supported"), std::string::npos) << r.out;
}

TEST(InspectCli, NoFatPartition) {
  RPI_REQUIRE_TOOL("sfdisk");
  TempDir dir;
  fs::path img = dir / "linux.img";
  auto r0 = sh("truncate -s 16M '" + img.string() + "' && printf 'label: dos\\nstart=2048, type=83\\n' | sfdisk -q '" +
               img.string() + "'");
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  auto r = cli({"inspect", img.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no FAT partition"), std::string::npos) << r.err;
  // --json (the subcommand's own flag): what could be read, and null for the FAT, then the error.
  auto j = cli({"inspect", "--json", img.string()});
  EXPECT_EQ(j.exit_code, 1);
  auto check = rpi::test::run({"python3", "-c",
                               "import json,sys\n"
                               "e=[json.loads(l) for l in sys.stdin]\n"
                               "i=e[0]; assert i['type']=='inspect', i\n"
                               "assert i['fat'] is None and i['files']==[] and i['apkovls']==[], i\n"
                               "assert i['partition_table']['partitions'][0]['type']=='0x83', i\n"
                               "assert e[-1]['type']=='error', e\n"},
                              j.out);
  EXPECT_EQ(check.exit_code, 0) << j.out << check.err;
}

TEST(InspectCli, TruncatedBeforeItsFatPartitionSaysSo) {
  RPI_REQUIRE_TOOL("sfdisk");
  TempDir dir;
  fs::path img = dir / "cut.img";
  // sfdisk (the oracle) writes a table for a 16 MiB disk; the file is then cut to its first MiB.
  auto r0 = sh("truncate -s 16M '" + img.string() + "' && printf 'label: dos\\nstart=8192, type=c\\n' | sfdisk -q '" +
               img.string() + "' && truncate -s 1M '" + img.string() + "'");
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  auto r = cli({"inspect", img.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("partition 1 starts at byte 4194304, past the end (1048576 bytes)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("truncated image"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("no FAT partition"), std::string::npos) << r.err;
}

// A first FAT partition that does not open: the next one is shown, and the
// warning names the one passed over.
TEST(InspectCli, ABrokenFirstFatPartitionIsNamedAndTheNextShown) {
  RPI_REQUIRE_IMAGE_TOOLS();
  TempDir dir;
  fs::path img = dir / "two.img";
  auto r0 = sh("set -e; truncate -s 48M '" + img.string() +
               "'; printf 'label: dos\\nstart=2048, size=16384, type=c\\nstart=18432, type=c\\n' | sfdisk -q '" +
               img.string() + "'; mkfs.vfat -F 16 -n SECOND --offset 18432 '" + img.string() + "' >/dev/null");
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  auto r = cli({"inspect", img.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("File system (partition 2, byte offset " + std::to_string(18432ull * 512) + "): FAT16"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("SECOND"), std::string::npos) << r.out;
  const std::size_t w = r.out.find("Warnings:\n");
  ASSERT_NE(w, std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  " + img.string() + " partition 1: ", w), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("; partition 2 is read instead\n", w), std::string::npos) << r.out;
}

// An image from our own engine (rpi-provision --tarball T --apkovl A --output).
TEST(InspectCli, ImageBuiltByTheEngine) {
  RPI_REQUIRE_TOOL("tar");
  TempDir dir;
  fs::path tarball;
  try {
    tarball = fixture_tarball({"--size-mb", "4"});
  } catch (const std::exception& e) {
    GTEST_SKIP() << "fixture tarball unavailable: " << e.what();
  }
  make_apkovl(dir.path(), dir / "kiosk.apkovl.tar.gz");
  fs::path img = dir / "pi.img";
  auto build = cli(
      {"--tarball", tarball.string(), "--apkovl", (dir / "kiosk.apkovl.tar.gz").string(), "--output", img.string()});
  if (build.exit_code != 0 || !fs::exists(img))
    GTEST_SKIP() << "the image engine could not build an image yet (exit " << build.exit_code << "): " << build.err;
  auto r = cli({"inspect", img.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  expect_no_secrets(r);
  EXPECT_NE(r.out.find(": FAT"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("kiosk-07"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("cmdline.txt: "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("Warnings:"), std::string::npos) << r.out;
}

// The same card through a read-only loop device: one code path for images and
// block devices, and the device is only read.
TEST(InspectCli, ReadOnlyLoopDevice) {
  RPI_REQUIRE_IMAGE_TOOLS();
  RPI_REQUIRE_TOOL("losetup");
  TempDir dir;
  BuiltImage b = build_image(dir, "32", true);
  auto lo = run({"losetup", "--find", "--show", "--read-only", b.image.string()});
  if (lo.exit_code != 0) GTEST_SKIP() << "cannot attach a loop device (needs root and /dev/loop*): " << lo.err;
  std::string dev = lo.out.substr(0, lo.out.find('\n'));
  struct Detach {
    std::string dev;
    ~Detach() { run({"losetup", "-d", dev}); }
  } detach{dev};
  const std::string before = read_file(b.image);
  auto from_dev = cli({"inspect", dev});
  auto from_img = cli({"inspect", b.image.string()});
  ASSERT_EQ(from_dev.exit_code, 0) << from_dev.out << from_dev.err;
  ASSERT_EQ(from_img.exit_code, 0) << from_img.err;
  // Identical apart from the first line, which names the target.
  EXPECT_EQ(from_dev.out.substr(from_dev.out.find('\n')), from_img.out.substr(from_img.out.find('\n')));
  EXPECT_NE(from_dev.out.find("kiosk-07"), std::string::npos);
  EXPECT_EQ(read_file(b.image), before);
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Puts `apkovl` on the image's FAT as `name`, replacing a file of that name.
void put_on_card(const BuiltImage& b, const fs::path& apkovl, const std::string& name) {
  auto cp = sh("MTOOLS_SKIP_CHECK=1 mcopy -o -i '" + b.image.string() + "@@" + std::to_string(kPartOffset) + "' '" +
               apkovl.string() + "' ::/" + name);
  ASSERT_EQ(cp.exit_code, 0) << cp.err;
}

// An apkovl made by tests/partition/make_apkovl.py (Python's tarfile).
fs::path crafted_apkovl(const TempDir& dir, const std::string& kind) {
  fs::path out = dir / (kind + ".crafted");
  auto r = run({"python3", (source_dir() / "tests/partition/make_apkovl.py").string(), kind, out.string()});
  if (r.exit_code != 0) throw std::runtime_error("make_apkovl.py " + kind + ": " + r.err);
  return out;
}

// What `--apkovl` refuses (check_apkovl's message) or warns about in the file.
struct CheckOutcome {
  std::string refusal;
  std::vector<std::string> warnings;
};
CheckOutcome apkovl_option_says(const fs::path& file, const std::string& name) {
  CheckOutcome c;
  try {
    c.warnings = rpi::partition::check_apkovl(name, read_file(file)).warnings;
  } catch (const rpi::Error& e) {
    c.refusal = e.what();
  }
  return c;
}

// An apkovl on a card that `--apkovl` would refuse (a hard link to
// /etc/shadow) or warn about (a device node, a FIFO): inspect reports the
// same findings, as warnings, and still summarises the rest; it does not fail.
TEST(InspectCli, ApkovlFindingsOfTheApkovlOptionAreReported) {
  RPI_REQUIRE_IMAGE_TOOLS();
  RPI_REQUIRE_TOOL("python3");
  RPI_REQUIRE_TOOL("busybox");
  TempDir dir;
  BuiltImage b = build_image(dir, "32", true);
  fs::path hostile = crafted_apkovl(dir, "hostile");
  ASSERT_EQ(run({"busybox", "tar", "-tzf", hostile.string()}).exit_code, 0);  // the Pi's tar would unpack it
  put_on_card(b, hostile, "kiosk.apkovl.tar.gz");
  const CheckOutcome said = apkovl_option_says(hostile, "kiosk.apkovl.tar.gz");
  ASSERT_TRUE(contains(said.refusal, "kiosk.apkovl.tar.gz: member 'etc/shadow.lnk' is a hard link to '/etc/shadow'"))
      << said.refusal;

  auto r = cli({"inspect", b.image.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "  hostname       myhost\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "  check          --apkovl would refuse it: 1 problem, 2 warnings (under Warnings)\n"))
      << r.out;
  const std::string listed = r.out.substr(r.out.find("Warnings:\n"));
  EXPECT_TRUE(contains(listed, "  " + said.refusal + "\n")) << r.out;
  // check_apkovl refuses at the hard link; the warnings are those of the file without it.
  const CheckOutcome warned = apkovl_option_says(crafted_apkovl(dir, "chardev"), "kiosk.apkovl.tar.gz");
  ASSERT_EQ(warned.warnings.size(), 1u);
  EXPECT_TRUE(contains(listed, "  " + warned.warnings[0] + "\n")) << r.out;
  EXPECT_TRUE(contains(listed, "  kiosk.apkovl.tar.gz: member 'etc/pipe' is a FIFO; lbu never packs one")) << r.out;

  auto j = cli({"inspect", "--json", b.image.string()});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  write_file(dir / "out.json", j.out);
  write_file(dir / "refusal.txt", said.refusal);
  auto py = run({"python3", "-c",
                 "import json,sys\n"
                 "o=json.loads(open(sys.argv[1]).read())\n"
                 "refusal=open(sys.argv[2]).read()\n"
                 "a=o['apkovls'][0]\n"
                 "c=a['check']\n"
                 "assert c['accepted'] is False and c['problems']==[refusal], c\n"
                 "assert len(c['warnings'])==2 and 'character device' in c['warnings'][0], c\n"
                 "assert 'FIFO' in c['warnings'][1], c\n"
                 "assert a['hostname']=='myhost' and 'problem' not in a, a\n"
                 "assert o['warnings']==c['problems']+c['warnings'], o['warnings']\n",
                 (dir / "out.json").string(), (dir / "refusal.txt").string()});
  EXPECT_EQ(py.exit_code, 0) << py.err << j.out;
}

// A member leaving the overlay is named once: as the refusal --apkovl gives,
// not a second time by the summary's own check.
TEST(InspectCli, AMemberLeavingTheOverlayIsNamedOnce) {
  RPI_REQUIRE_IMAGE_TOOLS();
  RPI_REQUIRE_TOOL("python3");
  TempDir dir;
  BuiltImage b = build_image(dir, "32", true);
  fs::path bad = crafted_apkovl(dir, "dotdot-member");
  put_on_card(b, bad, "kiosk.apkovl.tar.gz");
  const CheckOutcome said = apkovl_option_says(bad, "kiosk.apkovl.tar.gz");
  ASSERT_TRUE(contains(said.refusal, "etc/../../escape")) << said.refusal;
  auto r = cli({"inspect", b.image.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string listed = r.out.substr(r.out.find("Warnings:\n"));
  EXPECT_TRUE(contains(listed, "  " + said.refusal + "\n")) << r.out;
  EXPECT_EQ(listed.find("etc/../../escape"), listed.rfind("etc/../../escape")) << r.out;
}

// A refusal of the gzip layer is also why there is no summary: reported once.
// An encrypted apkovl is not read; the warning --apkovl gives is shown.
TEST(InspectCli, UnreadableAndEncryptedApkovlsGetTheApkovlOptionsFindings) {
  RPI_REQUIRE_IMAGE_TOOLS();
  RPI_REQUIRE_TOOL("python3");
  TempDir dir;
  BuiltImage b = build_image(dir, "32", true);
  fs::path plain = crafted_apkovl(dir, "plain-tar");
  put_on_card(b, plain, "kiosk.apkovl.tar.gz");
  put_on_card(b, crafted_apkovl(dir, "ok"), "kiosk.apkovl.tar.gz.aes-256-cbc");
  const std::string refusal = apkovl_option_says(plain, "kiosk.apkovl.tar.gz").refusal;
  ASSERT_TRUE(contains(refusal, "is a plain (uncompressed) tar archive")) << refusal;

  auto r = cli({"inspect", b.image.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string listed = r.out.substr(r.out.find("Warnings:\n"));
  std::size_t times = 0;
  for (std::size_t at = 0; (at = listed.find(refusal, at)) != std::string::npos; at += refusal.size()) ++times;
  EXPECT_EQ(times, 1u) << r.out;
  EXPECT_TRUE(contains(listed, "  kiosk.apkovl.tar.gz.aes-256-cbc is encrypted: the Pi asks for its password"))
      << r.out;

  auto j = cli({"inspect", "--json", b.image.string()});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  auto py = run({"python3", "-c",
                 "import json,sys\n"
                 "o=json.loads(sys.stdin.read())\n"
                 "a={x['name']:x for x in o['apkovls']}\n"
                 "p=a['kiosk.apkovl.tar.gz']\n"
                 "assert p['check']['accepted'] is False and p['check']['problems']==[p['problem']], p\n"
                 "e=a['kiosk.apkovl.tar.gz.aes-256-cbc']['check']\n"
                 "assert e['accepted'] is True and e['problems']==[] and 'encrypted' in e['warnings'][0], e\n"
                 "assert o['warnings'].count(p['problem'])==1, o['warnings']\n"},
                j.out);
  EXPECT_EQ(py.exit_code, 0) << py.err << j.out;
}

// The keys docs/json-events.md documents for the `inspect` result, checked by
// Python's json module on the JSON Lines given on stdin. argv[1]: "fat" (a FAT
// was read: one event, the FAT's fields filled in) or the partition table
// expected without one: "none", "mbr" or "gpt" (null and empty fields, then
// an error event). Keys are checked as a subset: new fields may appear.
const char* const kInspectShape = R"PY(
import json, sys
mode = sys.argv[1]
events = [json.loads(l) for l in sys.stdin if l.strip()]
ins = [e for e in events if e['type'] == 'inspect']
assert len(ins) == 1, events
o = ins[0]
assert events[0] is o, events
top = {'kind', 'path', 'size', 'partition_table', 'fat', 'files', 'alpine_release', 'cmdline', 'apkovls', 'warnings'}
assert top <= set(o), ('missing', sorted(top - set(o)), o)
assert o['kind'] == 'medium', o
assert isinstance(o['path'], str) and isinstance(o['size'], int) and o['size'] > 0, o
assert isinstance(o['files'], list) and isinstance(o['apkovls'], list), o
assert isinstance(o['warnings'], list) and all(isinstance(w, str) for w in o['warnings']), o
pt = o['partition_table']
if pt is not None:
    assert {'type', 'disk_id', 'partitions'} <= set(pt), pt
    assert pt['partitions'], pt
    for p in pt['partitions']:
        assert {'number', 'type', 'type_name', 'bootable', 'start', 'sectors'} <= set(p), p
if mode == 'fat':
    assert len(events) == 1, events
    f = o['fat']
    fat_keys = {'partition', 'offset', 'type', 'label', 'boot_label', 'volume_id', 'bytes_per_sector',
                'sectors_per_cluster', 'cluster_size', 'reserved_sectors', 'fats', 'fat_sectors',
                'hidden_sectors', 'total_sectors', 'clusters', 'free_clusters', 'free_bytes',
                'fsinfo_free_clusters', 'files', 'directories', 'file_bytes'}
    assert isinstance(f, dict) and fat_keys <= set(f), ('missing', sorted(fat_keys - set(f or {})), f)
    assert o['files'], o
    for e in o['files']:
        assert {'name', 'short_name', 'directory', 'size'} <= set(e), e
    assert isinstance(o['alpine_release'], str) and isinstance(o['cmdline'], str), o
    assert o['apkovls'], o
    for a in o['apkovls']:
        keys = {'name', 'size', 'check', 'members', 'hostname', 'world', 'runlevels', 'users',
                'ssh_host_keys', 'wifi_config', 'wifi_networks', 'shadow'}
        assert keys <= set(a), ('missing', sorted(keys - set(a)), a)
        assert {'accepted', 'problems', 'warnings'} <= set(a['check']), a
        for u in a['users']:
            assert {'name', 'uid', 'shell'} <= set(u), u
else:
    assert o['fat'] is None and o['files'] == [] and o['apkovls'] == [], o
    assert o['alpine_release'] is None and o['cmdline'] is None, o
    assert len(events) == 2 and events[1]['type'] == 'error', events
    assert events[1]['code'] == 'input', events
    if mode == 'none':
        assert pt is None, pt
    else:
        assert pt is not None and pt['type'] == mode, pt
print(mode)
)PY";

// `inspect --json TARGET`: the exit status, and the shape checked by kInspectShape.
void expect_inspect_shape(const fs::path& target, const std::string& mode, int exit_code) {
  auto j = cli({"inspect", "--json", target.string()});
  EXPECT_EQ(j.exit_code, exit_code) << j.out << j.err;
  EXPECT_EQ(j.err, "") << "--json keeps stderr quiet";
  auto py = run({"python3", "-c", kInspectShape, mode}, j.out);
  EXPECT_EQ(py.exit_code, 0) << py.err << j.out;
  EXPECT_EQ(py.out, mode + "\n") << py.err << j.out;
}

TEST(InspectJsonShape, ZeroedMedium) {
  RPI_REQUIRE_TOOL("python3");
  TempDir dir;
  fs::path img = dir / "zero.img";
  write_file(img, std::string(4u << 20, '\0'));
  expect_inspect_shape(img, "none", 1);
  // The human output is unchanged: nothing on stdout, the error on stderr.
  auto r = cli({"inspect", img.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find(img.string()), std::string::npos) << r.err;
  // Under one sector: the same shape.
  fs::path tiny = dir / "tiny.img";
  write_file(tiny, std::string(100, '\0'));
  expect_inspect_shape(tiny, "none", 1);
}

TEST(InspectJsonShape, RandomBytes) {
  RPI_REQUIRE_TOOL("python3");
  TempDir dir;
  fs::path img = dir / "random.img";
  const std::string data = pseudo_random(1u << 20, 42);
  // Precondition: sector 0 is neither an MBR (55 AA) nor a FAT boot sector.
  ASSERT_FALSE(data[510] == '\x55' && data[511] == '\xAA');
  ASSERT_FALSE(rpi::partition::looks_like_fat_boot_sector(reinterpret_cast<const std::uint8_t*>(data.data())));
  write_file(img, data);
  expect_inspect_shape(img, "none", 1);
}

TEST(InspectJsonShape, Gpt) {
  RPI_REQUIRE_TOOL("sfdisk");
  RPI_REQUIRE_TOOL("python3");
  TempDir dir;
  fs::path img = dir / "gpt.img";
  // An EFI system partition: a FAT, but behind a GPT, which inspect does not read.
  auto r0 = sh("truncate -s 16M '" + img.string() +
               "' && printf 'label: gpt\\nstart=2048, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\\n' | sfdisk -q '" +
               img.string() + "'");
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  expect_inspect_shape(img, "gpt", 1);
}

TEST(InspectJsonShape, MbrWithoutFatPartition) {
  RPI_REQUIRE_TOOL("sfdisk");
  RPI_REQUIRE_TOOL("python3");
  TempDir dir;
  fs::path img = dir / "linux.img";
  auto r0 = sh("truncate -s 16M '" + img.string() + "' && printf 'label: dos\\nstart=2048, type=83\\n' | sfdisk -q '" +
               img.string() + "'");
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  expect_inspect_shape(img, "mbr", 1);
}

TEST(InspectJsonShape, NormalImages) {
  RPI_REQUIRE_IMAGE_TOOLS();
  RPI_REQUIRE_TOOL("python3");
  TempDir dir;
  BuiltImage b = build_image(dir, "32", true);
  expect_inspect_shape(b.image, "fat", 0);
  // A FAT without a partition table: partition_table is null, the rest is there.
  TempDir bare_dir;
  BuiltImage bare = build_image(bare_dir, "16", false);
  auto j = cli({"inspect", "--json", bare.image.string()});
  ASSERT_EQ(j.exit_code, 0) << j.out << j.err;
  auto py = run({"python3", "-c", std::string(kInspectShape) + "assert pt is None, pt\n", "fat"}, j.out);
  EXPECT_EQ(py.exit_code, 0) << py.err << j.out;
}

// A target that cannot be opened is no medium: only the error event.
TEST(InspectJsonShape, MissingTargetIsOnlyAnError) {
  RPI_REQUIRE_TOOL("python3");
  TempDir dir;
  auto j = cli({"inspect", "--json", (dir / "absent.img").string()});
  EXPECT_EQ(j.exit_code, 1) << j.out << j.err;
  auto py = run({"python3", "-c",
                 "import json,sys\n"
                 "e=[json.loads(l) for l in sys.stdin if l.strip()]\n"
                 "assert [x['type'] for x in e]==['error'], e\n"},
                j.out);
  EXPECT_EQ(py.exit_code, 0) << py.err << j.out;
}

// ---- a bare apkovl, a folder of them, and gzip files that are neither ---------

// What Python's tarfile reads from the apkovl argv[1] (the oracle), checked
// against the `inspect --json` output on stdin: hostname (etc/hostname's
// first word), world, users (etc/passwd names), and that no secret of it
// (etc/shadow password fields, the psk= of wpa_supplicant.conf, the lines of
// private SSH host keys) is anywhere in the output. argv[2]: the expected kind.
const char* const kBareApkovlOracle = R"PY(
import json, sys, tarfile
path, kind = sys.argv[1], sys.argv[2]
raw = sys.stdin.read()
events = [json.loads(l) for l in raw.splitlines() if l.strip()]
assert [e['type'] for e in events] == ['inspect'], events
o = events[0]
assert o['kind'] == kind and o['partition_table'] is None and o['fat'] is None, o
assert o['files'] == [] and o['alpine_release'] is None and o['cmdline'] is None, o
def norm(n):
    while n.startswith('./'):
        n = n[2:]
    return n.lstrip('/')
t = tarfile.open(path, 'r:gz')
files = {norm(m.name): t.extractfile(m).read().decode() for m in t.getmembers() if m.isfile()}
a = [x for x in o['apkovls'] if x['name'] == path.rsplit('/', 1)[-1]]
assert len(a) == 1, o['apkovls']
a = a[0]
assert a['hostname'] == files['etc/hostname'].split()[0], (a['hostname'], files['etc/hostname'])
assert a['world'] == files['etc/apk/world'].split(), (a['world'], files['etc/apk/world'])
assert [u['name'] for u in a['users']] == [l.split(':')[0] for l in files['etc/passwd'].splitlines() if l], a['users']
assert a['members'] == len(t.getmembers()), (a['members'], len(t.getmembers()))
ssids = []
for l in files.get('etc/wpa_supplicant/wpa_supplicant.conf', '').splitlines():
    l = l.strip()
    if l.startswith('ssid='):
        v = l[5:]
        ssids.append(v[1:-1] if v.startswith('"') else bytes.fromhex(v).decode())
assert a['wifi_networks'] == ssids, (a['wifi_networks'], ssids)
secrets = []
for l in files.get('etc/shadow', '').splitlines():
    f = l.split(':')
    if len(f) > 1 and len(f[1]) > 2:
        secrets.append(f[1])
for l in files.get('etc/wpa_supplicant/wpa_supplicant.conf', '').splitlines():
    if l.strip().startswith('psk='):
        secrets.append(l.strip()[4:].strip('"'))
for n, text in files.items():
    if n.startswith('etc/ssh/ssh_host_') and not n.endswith('.pub'):
        secrets += [l for l in text.splitlines() if len(l) > 16 and 'PRIVATE KEY' not in l]
for s in secrets:
    assert s not in raw, 'a secret is in the output'
print(len(secrets))
)PY";

// `rpi-provision apkovl -o` writes an apkovl; `inspect` reads it as a file:
// the summary, the checks of --apkovl, no secret, and the documented shape.
TEST(InspectApkovl, AFileWrittenByTheApkovlCommand) {
  RPI_REQUIRE_TOOL("python3");
  TempDir dir;
  const fs::path ovl = dir / "kiosk.apkovl.tar.gz";
  auto made = cli({"apkovl", "--spec", (source_dir() / "examples/kiosk.toml").string(), "-o", ovl.string()});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const std::string psk = read_file(source_dir() / "examples/kiosk-wifi.psk");

  auto r = cli({"inspect", ovl.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out.rfind(ovl.string() + ": " + std::to_string(fs::file_size(ovl)) + " bytes (", 0), 0u) << r.out;
  EXPECT_TRUE(contains(r.out, "), an apkovl\napkovl: kiosk.apkovl.tar.gz (")) << r.out;
  EXPECT_TRUE(contains(r.out, "  hostname       kiosk\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "  check          passes --apkovl's checks\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "  ssh host keys  yes\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "  wifi config    yes: \"Office\"\n")) << r.out;
  EXPECT_FALSE(contains(r.out, "Warnings:")) << r.out;
  EXPECT_FALSE(contains(r.out, "Partition table")) << r.out;
  EXPECT_FALSE(contains(r.out + r.err, psk.substr(0, psk.find('\n')))) << "the Wi-Fi passphrase is shown";

  auto j = cli({"inspect", "--json", ovl.string()});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  EXPECT_EQ(j.err, "");
  auto py = run({"python3", "-c", kBareApkovlOracle, ovl.string(), "apkovl"}, j.out);
  ASSERT_EQ(py.exit_code, 0) << py.err << j.out;
  EXPECT_NE(py.out, "0\n") << "the oracle found no secret to look for (host keys, the PSK)";
  auto shape = run({"python3", "-c",
                    "import json,sys\n"
                    "o=json.loads(sys.stdin.read())\n"
                    "assert o['path']==sys.argv[1] and o['size']==int(sys.argv[2]), o\n"
                    "a=o['apkovls'][0]\n"
                    "assert a['size']==o['size'] and a['check']=={'accepted':True,'problems':[],'warnings':[]}, a\n"
                    "assert o['warnings']==[], o\n",
                    ovl.string(), std::to_string(fs::file_size(ovl))},
                   j.out);
  EXPECT_EQ(shape.exit_code, 0) << shape.err << j.out;
}

// The same apkovl as a file and on a card: the same apkovl object and lines.
TEST(InspectApkovl, AFileIsReportedAsOnACard) {
  RPI_REQUIRE_IMAGE_TOOLS();
  RPI_REQUIRE_TOOL("python3");
  TempDir dir;
  BuiltImage b = build_image(dir, "32", true);
  fs::path ovl = dir / "kiosk.apkovl.tar.gz";
  fs::copy_file(dir / "src/kiosk.apkovl.tar.gz", ovl);
  auto card = cli({"inspect", "--json", b.image.string()});
  auto file = cli({"inspect", "--json", ovl.string()});
  ASSERT_EQ(card.exit_code, 0) << card.err;
  ASSERT_EQ(file.exit_code, 0) << file.err;
  write_file(dir / "card.json", card.out);
  auto py = run({"python3", "-c",
                 "import json,sys\n"
                 "c=json.loads(open(sys.argv[1]).read())\n"
                 "f=json.loads(sys.stdin.read())\n"
                 "assert c['kind']=='medium' and f['kind']=='apkovl', (c['kind'], f['kind'])\n"
                 "assert f['apkovls']==c['apkovls'], (f['apkovls'], c['apkovls'])\n",
                 (dir / "card.json").string()},
                file.out);
  EXPECT_EQ(py.exit_code, 0) << py.err << file.out;
  auto card_text = cli({"inspect", b.image.string()}).out;
  auto file_text = cli({"inspect", ovl.string()}).out;
  const std::size_t at = card_text.find("apkovl: kiosk.apkovl.tar.gz");
  ASSERT_NE(at, std::string::npos) << card_text;
  const std::string block = card_text.substr(at, card_text.find("\n  check", at) - at);
  EXPECT_TRUE(contains(file_text, block)) << file_text << "\n--- card:\n" << card_text;
  expect_no_secrets(file);
  expect_no_secrets(cli({"inspect", ovl.string()}));
}

// `apkovl --out-dir` writes one apkovl per MAC: `inspect DIR` reports each, by
// name, in one `inspect` object; hidden files (the command's temporaries) and
// other files are not apkovls.
TEST(InspectApkovl, AFolderWrittenByApkovlOutDir) {
  RPI_REQUIRE_TOOL("python3");
  TempDir dir;
  const fs::path out = dir / "ovl";
  auto made = cli({"apkovl", "--spec", (source_dir() / "examples/fleet.toml").string(), "--out-dir", out.string()});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  write_file(out / ".b8:27:eb:00:00:01.apkovl.tar.gz.tmp-Zz99Yy", "x");
  write_file(out / "index.html", "<html></html>\n");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(out)) {
    const std::string n = e.path().filename().string();
    if (n.front() != '.' && contains(n, ".apkovl.tar.gz")) names.push_back(n);
  }
  std::sort(names.begin(), names.end());
  ASSERT_GE(names.size(), 2u);

  auto r = cli({"inspect", out.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out.rfind(out.string() + ": " + std::to_string(names.size()) + " apkovl files, by name\n", 0), 0u)
      << r.out;
  std::size_t at = 0;
  for (const auto& n : names) {  // one section each, in order
    const std::size_t next = r.out.find("\n" + (out / n).string() + ": ", at);
    ASSERT_NE(next, std::string::npos) << n << " missing or out of order:\n" << r.out;
    at = next + 1;
  }
  EXPECT_FALSE(contains(r.out, "index.html")) << r.out;
  EXPECT_FALSE(contains(r.out, "tmp-Zz99Yy")) << r.out;

  auto j = cli({"inspect", "--json", out.string()});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  std::string list;
  for (const auto& n : names) list += n + "\n";
  write_file(dir / "names.txt", list);
  auto py = run({"python3", "-c",
                 "import json,sys\n"
                 "o=json.loads(sys.stdin.read())\n"
                 "names=open(sys.argv[2]).read().split()\n"
                 "assert o['kind']=='folder' and o['path']==sys.argv[1], o\n"
                 "assert [a['name'] for a in o['apkovls']]==names, ([a['name'] for a in o['apkovls']], names)\n"
                 "assert o['size']==sum(a['size'] for a in o['apkovls']), o\n"
                 "assert all(a['check']['accepted'] for a in o['apkovls']), o\n",
                 out.string(), (dir / "names.txt").string()},
                j.out);
  EXPECT_EQ(py.exit_code, 0) << py.err << j.out;
  for (const auto& n : names) {  // each against Python's reading of its file
    auto each = run({"python3", "-c", kBareApkovlOracle, (out / n).string(), "folder"}, j.out);
    EXPECT_EQ(each.exit_code, 0) << n << ": " << each.err;
  }
  // A folder without apkovls is an error.
  fs::create_directories(dir / "empty");
  auto none = cli({"inspect", (dir / "empty").string()});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_TRUE(contains(none.err, "is a folder without *.apkovl.tar.gz files")) << none.err;
}

// An apkovl made by busybox tar or Python's tarfile, with findings: the same
// findings as --apkovl gives, and exit 0; an encrypted one is judged by name.
TEST(InspectApkovl, FindingsOfAFileAreThoseOfTheApkovlOption) {
  RPI_REQUIRE_TOOL("python3");
  TempDir dir;
  fs::path hostile = dir / "hostile.apkovl.tar.gz";
  fs::copy_file(crafted_apkovl(dir, "hostile"), hostile);
  const CheckOutcome said = apkovl_option_says(hostile, hostile.string());
  ASSERT_FALSE(said.refusal.empty());
  auto r = cli({"inspect", hostile.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "  check          --apkovl would refuse it: 1 problem, 2 warnings (under Warnings)\n"))
      << r.out;
  EXPECT_TRUE(contains(r.out, "Warnings:\n  " + said.refusal + "\n")) << r.out;

  if (have_tool("busybox")) {
    fs::create_directories(dir / "tree/etc");
    write_file(dir / "tree/etc/hostname", "bb-host\n");
    const fs::path bb = dir / "bb.apkovl.tar.gz";
    auto t = sh("cd '" + (dir / "tree").string() + "' && busybox tar -czf '" + bb.string() + "' etc");
    ASSERT_EQ(t.exit_code, 0) << t.err;
    auto b = cli({"inspect", bb.string()});
    ASSERT_EQ(b.exit_code, 0) << b.out << b.err;
    EXPECT_TRUE(contains(b.out, "  hostname       bb-host\n")) << b.out;
    EXPECT_TRUE(contains(b.out, "  check          passes --apkovl's checks\n")) << b.out;
  }

  // Named otherwise (`lbu package FILE` takes any name): an apkovl by its
  // content, and --apkovl's refusal of the name.
  fs::path other = dir / "backup.tar.gz";
  fs::copy_file(crafted_apkovl(dir, "ok"), other);
  auto o = cli({"inspect", other.string()});
  ASSERT_EQ(o.exit_code, 0) << o.out << o.err;
  EXPECT_TRUE(contains(o.out, "  hostname       myhost\n")) << o.out;
  EXPECT_TRUE(contains(o.out, "an apkovl must be named <host>.apkovl.tar.gz")) << o.out;

  // Encrypted: not read, the warning --apkovl gives.
  fs::path enc = dir / "myhost.apkovl.tar.gz.aes-256-cbc";
  write_file(enc, "Salted__" + pseudo_random(200, 3));
  auto e = cli({"inspect", "--json", enc.string()});
  ASSERT_EQ(e.exit_code, 0) << e.err;
  auto py = run({"python3", "-c",
                 "import json,sys\n"
                 "o=json.loads(sys.stdin.read())\n"
                 "a=o['apkovls'][0]\n"
                 "assert a['problem']=='encrypted; not read' and a['check']['accepted'] is True, a\n"
                 "assert 'encrypted' in a['check']['warnings'][0], a\n"},
                e.out);
  EXPECT_EQ(py.exit_code, 0) << py.err << e.out;
}

// etc/hostname with CR LF line ends: the Pi gets an invalid name. Warned
// about on a card, in a bare apkovl and in an --apkovl run alike.
TEST(InspectApkovl, AnEtcHostnameWithCrLfIsWarnedAboutEverywhere) {
  RPI_REQUIRE_IMAGE_TOOLS();
  RPI_REQUIRE_TOOL("python3");
  TempDir dir;
  const fs::path crlf = dir / "kiosk.apkovl.tar.gz";
  auto m = run({"python3", (source_dir() / "tests/partition/make_apkovl.py").string(), "hostname", crlf.string(),
                "kiosk-07\r\n"});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  const std::string warning =
      "etc/hostname has Windows (CR LF) line ends: busybox `hostname -F` keeps the CR, and "
      "the Pi is called 'kiosk-07\\r'";
  auto file = cli({"inspect", crlf.string()});
  ASSERT_EQ(file.exit_code, 0) << file.err;
  EXPECT_TRUE(contains(file.out, "  " + crlf.string() + ": " + warning)) << file.out;
  EXPECT_TRUE(contains(file.out, "dos2unix")) << file.out;
  EXPECT_TRUE(contains(file.out, "passes --apkovl's checks, with 1 warning (under Warnings)")) << file.out;

  BuiltImage b = build_image(dir, "32", true);
  put_on_card(b, crlf, "kiosk.apkovl.tar.gz");
  auto card = cli({"inspect", "--json", b.image.string()});
  ASSERT_EQ(card.exit_code, 0) << card.err;
  write_file(dir / "warning.txt", "kiosk.apkovl.tar.gz: " + warning);
  auto py = run({"python3", "-c",
                 "import json,sys\n"
                 "o=json.loads(sys.stdin.read())\n"
                 "w=open(sys.argv[1]).read()\n"
                 "c=o['apkovls'][0]['check']\n"
                 "assert c['accepted'] and len(c['warnings'])==1 and c['warnings'][0].startswith(w), c\n"
                 "assert c['warnings'][0] in o['warnings'], o['warnings']\n",
                 (dir / "warning.txt").string()},
                card.out);
  EXPECT_EQ(py.exit_code, 0) << py.err << card.out;

  fs::path tarball;
  try {
    tarball = fixture_tarball({"--size-mb", "4"});
  } catch (const std::exception& e) {
    GTEST_SKIP() << "fixture tarball unavailable: " << e.what();
  }
  auto run_it = cli(
      {"--tarball", tarball.string(), "--apkovl", crlf.string(), "--output", (dir / "o.img").string(), "--dry-run"});
  ASSERT_EQ(run_it.exit_code, 0) << run_it.err;
  EXPECT_TRUE(contains(run_it.err, crlf.string() + ": " + warning)) << run_it.err;
}

// Gzip files that are no apkovl say what they are and what to do; with
// --json only the error event.
TEST(InspectApkovl, OtherGzipFilesSayWhatTheyAre) {
  RPI_REQUIRE_TOOL("python3");
  RPI_REQUIRE_TOOL("gzip");
  RPI_REQUIRE_TOOL("sfdisk");
  TempDir dir;
  fs::path tarball;
  try {
    tarball = fixture_tarball({"--size-mb", "4"});
  } catch (const std::exception& e) {
    GTEST_SKIP() << "fixture tarball unavailable: " << e.what();
  }
  const fs::path img = dir / "pi.img";
  ASSERT_EQ(sh("truncate -s 8M '" + img.string() + "' && printf 'label: dos\\nstart=2048, type=c\\n' | sfdisk -q '" +
               img.string() + "' && gzip -n '" + img.string() + "'")
                .exit_code,
            0);
  write_file(dir / "notes.txt", "hello\n");
  ASSERT_EQ(sh("gzip -n '" + (dir / "notes.txt").string() + "'").exit_code, 0);
  struct Case {
    fs::path file;
    std::vector<std::string> says;
  } cases[] = {
      {tarball, {" is an Alpine boot tarball (it holds ", "not an apkovl", "--tarball"}},
      {dir / "pi.img.gz",
       {" is a gzip-compressed disk image: decompress it first (`gzip -dk ", "`rpi-provision --image "}},
      {dir / "notes.txt.gz", {" is gzip-compressed, but holds neither a tar archive (an apkovl) nor a disk image"}},
  };
  for (const auto& c : cases) {
    auto r = cli({"inspect", c.file.string()});
    EXPECT_EQ(r.exit_code, 1) << c.file << r.out;
    EXPECT_EQ(r.out, "") << c.file;
    EXPECT_EQ(r.err.find(c.file.string()), r.err.find(c.file.string() + " is ")) << r.err;
    for (const auto& s : c.says) EXPECT_TRUE(contains(r.err, s)) << c.file << ": " << r.err;
    auto j = cli({"inspect", "--json", c.file.string()});
    EXPECT_EQ(j.exit_code, 1);
    auto py = run({"python3", "-c",
                   "import json,sys\n"
                   "e=[json.loads(l) for l in sys.stdin if l.strip()]\n"
                   "assert [x['type'] for x in e]==['error'] and e[0]['code']=='input', e\n"},
                  j.out);
    EXPECT_EQ(py.exit_code, 0) << py.err << j.out;
  }
}

// The text between the `n`th pair of backticks of `s` ("" when there is none).
std::string quoted_command(const std::string& s, int n) {
  std::size_t at = 0;
  for (int i = 0; i <= n; ++i) {
    at = s.find('`', at);
    if (at == std::string::npos) return "";
    const std::size_t end = s.find('`', at + 1);
    if (end == std::string::npos) return "";
    if (i == n) return s.substr(at + 1, end - at - 1);
    at = end + 1;
  }
  return "";
}

// What the POSIX shell makes of `word` (one word of a command line, as the
// error quotes it): the oracle for the paths in the suggested commands.
std::string unquoted(const std::string& word) {
  return sh("printf '%s' " + word).out;
}

// A disk image compressed with gzip, xz, zstd or bzip2 (as --output writes
// them) is told by its first bytes, not read as a disk image: the error says
// how to decompress it, and the commands it gives, pasted into a shell, work
// for a path with a space (and, without a suffix the tool knows, a quote).
TEST(InspectCompressed, ImagesSayHowToDecompressThem) {
  RPI_REQUIRE_IMAGE_TOOLS();
  RPI_REQUIRE_TOOL("python3");
  TempDir dir;
  const BuiltImage b = build_image(dir, "32", true);
  const fs::path sub = dir / "my cards";
  fs::create_directories(sub);
  const fs::path raw = sub / "pi 1.img";
  struct Case {
    std::string tool, suffix, says;
  };
  int tried = 0;
  for (const Case& c : {Case{"gzip", ".gz", "a gzip"}, Case{"xz", ".xz", "an xz"}, Case{"zstd", ".zst", "a zstd"},
                        Case{"bzip2", ".bz2", "a bzip2"}}) {
    if (!have_tool(c.tool)) continue;
    ++tried;
    SCOPED_TRACE(c.tool);
    fs::copy_file(b.image, raw, fs::copy_options::overwrite_existing);
    ASSERT_EQ(run({c.tool, "-q", "-k", raw.string()}).exit_code, 0);
    fs::remove(raw);
    const fs::path packed = raw.string() + c.suffix;
    for (const fs::path& target : {packed, sub / "pi 'named' oddly"}) {
      if (target != packed) fs::copy_file(packed, target);
      auto r = cli({"inspect", target.string()});
      EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
      EXPECT_EQ(r.out, "");
      EXPECT_TRUE(contains(r.err, target.string() + " is " + c.says + "-compressed disk image: decompress it first (`"))
          << r.err;
      EXPECT_FALSE(contains(r.err, "MBR signature")) << r.err;
      // The decompression it suggests, pasted into a shell, makes the image it then names.
      const std::string decompress = quoted_command(r.err, 0);
      const auto image_at = r.err.find("`) and inspect ") + 15;
      const std::string image_word = r.err.substr(image_at, r.err.find(", or write it") - image_at);
      const fs::path image = sub / unquoted(image_word);
      EXPECT_EQ(image, target == packed ? raw : sub / "pi.img") << r.err;
      auto d = sh("cd '" + sub.string() + "' && " + decompress);
      ASSERT_EQ(d.exit_code, 0) << decompress << ": " << d.err;
      auto ok = cli({"inspect", image.string()});
      EXPECT_EQ(ok.exit_code, 0) << ok.err;
      EXPECT_TRUE(contains(ok.out, "RPITEST")) << ok.out;
      fs::remove(image);
      // The card writer is given the file as the shell reads the word.
      const std::string write = quoted_command(r.err, 1);
      EXPECT_TRUE(write.starts_with("rpi-provision --image ")) << r.err;
      EXPECT_EQ(unquoted(write.substr(22, write.find(" --device") - 22)), target.string()) << write;
      auto j = cli({"inspect", "--json", target.string()});
      EXPECT_EQ(j.exit_code, 1);
      EXPECT_TRUE(contains(j.out, "\"type\":\"error\"")) << j.out;
      EXPECT_FALSE(contains(j.out, "\"type\":\"inspect\"")) << j.out;
    }
    fs::remove(packed);
    fs::remove(sub / "pi 'named' oddly");
  }
  if (tried == 0) GTEST_SKIP() << "none of gzip, xz, zstd, bzip2 installed";
}

// An xz, zstd or bzip2 file that holds no disk image, or whose data is
// damaged from the start: neither is read as a disk image.
TEST(InspectCompressed, OtherCompressedFilesSayWhatTheyAre) {
  TempDir dir;
  int tried = 0;
  for (const auto& [tool, suffix] :
       std::vector<std::pair<std::string, std::string>>{{"xz", ".xz"}, {"zstd", ".zst"}, {"bzip2", ".bz2"}}) {
    if (!have_tool(tool)) continue;
    ++tried;
    SCOPED_TRACE(tool);
    const fs::path notes = dir / "notes.txt";
    write_file(notes, std::string(4000, 'x') + "\n");
    ASSERT_EQ(run({tool, "-q", "-f", notes.string()}).exit_code, 0);
    const fs::path packed = notes.string() + suffix;
    auto r = cli({"inspect", packed.string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_TRUE(contains(r.err, packed.string() + " is " + tool + "-compressed, but holds no disk image")) << r.err;
    // The magic, then bytes no decompressor takes.
    std::string damaged = read_file(packed).substr(0, 6) + pseudo_random(2000, 7);
    write_file(packed, damaged);
    r = cli({"inspect", packed.string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_TRUE(
        contains(r.err, packed.string() + " is " + tool + "-compressed, but its data is damaged from the start"))
        << r.err;
    EXPECT_FALSE(contains(r.err, "MBR signature")) << r.err;
    // The test it suggests finds the damage too.
    const std::string test = quoted_command(r.err, 0);
    EXPECT_TRUE(test.starts_with(tool + " -t ")) << r.err;
    EXPECT_NE(sh(test).exit_code, 0) << test;
    fs::remove(packed);
  }
  if (tried == 0) GTEST_SKIP() << "none of xz, zstd, bzip2 installed";
}

}  // namespace
}  // namespace rpi::test::inspect
