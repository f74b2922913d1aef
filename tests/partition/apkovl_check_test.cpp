// check_apkovl (--apkovl FILE) against the Pi's own unpacker: busybox tar,
// which the initramfs runs as `tar -zxf`. Where the decision is about the
// gzip layer, `busybox tar -tzf` must agree with ours; where it is our policy
// (hard links out of the overlay, size), busybox is shown to accept the input
// so the test is about the policy and not a broken fixture.
#include <dlfcn.h>
#include <fnmatch.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <atomic>
#include <optional>

#include "partition/apkovl_check.hpp"
#include "partition/reader.hpp"
#include "rpi/archive_reader.hpp"
#include "rpi/error.hpp"
#include "test_support.hpp"

using namespace rpi::partition;
using rpi::test::TempDir;
namespace fs = std::filesystem;

namespace {

// An apkovl made by tests/partition/make_apkovl.py (Python tarfile + zlib).
fs::path make(const TempDir& dir, const std::string& kind, const std::string& arg = "") {
  fs::path out = dir / (kind + ".apkovl.tar.gz");
  std::vector<std::string> argv = {"python3", (rpi::test::source_dir() / "tests/partition/make_apkovl.py").string(),
                                   kind, out.string()};
  if (!arg.empty()) argv.push_back(arg);
  auto r = rpi::test::run(argv);
  if (r.exit_code != 0) throw std::runtime_error("make_apkovl.py " + kind + ": " + r.err);
  return out;
}

fs::path write(const TempDir& dir, const std::string& name, const std::string& data) {
  fs::path p = dir / name;
  rpi::test::write_file(p, data);
  return p;
}

bool busybox_lists(const fs::path& p) {
  return rpi::test::run({"busybox", "tar", "-tzf", p.string()}).exit_code == 0;
}

// The check's result, or the message it refused with.
struct Outcome {
  std::optional<ApkovlCheck> ok;
  std::string error;
};
Outcome check(const fs::path& p) {
  Outcome o;
  try {
    o.ok = check_apkovl(p.string(), rpi::test::read_file(p));
  } catch (const rpi::Error& e) {
    EXPECT_EQ(e.code(), rpi::Errc::input) << e.what();
    o.error = e.what();
  }
  return o;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += s + "\n";
  return out;
}

}  // namespace

TEST(ApkovlCheck, LbuLikeOverlayWithRunlevelSymlinksIsAcceptedQuietly) {
  RPI_REQUIRE_TOOL("busybox");
  TempDir d;
  fs::path p = make(d, "ok");
  ASSERT_TRUE(busybox_lists(p));
  Outcome o = check(p);
  ASSERT_TRUE(o.ok) << o.error;
  EXPECT_EQ(o.ok->card_name, "ok.apkovl.tar.gz");
  EXPECT_EQ(o.ok->members, 7u);
  EXPECT_TRUE(o.ok->warnings.empty()) << joined(o.ok->warnings);
}

// Defect: a plain tar named .apkovl.tar.gz was accepted (libarchive reads
// uncompressed tar too); busybox `tar -z` says "invalid magic" and the Pi
// boots unconfigured.
TEST(ApkovlCheck, PlainTarIsRefusedLikeBusybox) {
  RPI_REQUIRE_TOOL("busybox");
  TempDir d;
  fs::path p = make(d, "plain-tar");
  EXPECT_FALSE(busybox_lists(p));
  Outcome o = check(p);
  ASSERT_FALSE(o.ok) << "a plain tar was accepted";
  EXPECT_TRUE(contains(o.error, p.string() + " is a plain (uncompressed) tar archive")) << o.error;
  EXPECT_TRUE(contains(o.error, "lbu package")) << o.error;
  EXPECT_TRUE(contains(o.error, "tar -czf")) << o.error;
  // Other compressions busybox `tar -z` does not undo either.
  const std::string tar = rpi::test::read_file(p);
  for (const auto& [module, what] : {std::pair<std::string, std::string>{"lzma", "xz"}, {"bz2", "bzip2"}}) {
    fs::path raw = write(d, "raw.tar", tar);
    fs::path out = d / (what + ".apkovl.tar.gz");
    auto r = rpi::test::run({"python3", "-c",
                             "import sys," + module + "\nopen(sys.argv[2], 'wb').write(" + module +
                                 ".compress(open(sys.argv[1], 'rb').read()))\n",
                             raw.string(), out.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_FALSE(busybox_lists(out)) << what;
    Outcome c = check(out);
    ASSERT_FALSE(c.ok) << what << " accepted";
    EXPECT_TRUE(contains(c.error, out.string() + " is " + what + "-compressed: Alpine's initramfs")) << c.error;
  }
  // Not a tar either: still "not gzip".
  Outcome text = check(write(d, "text.apkovl.tar.gz", "hostname=myhost\n"));
  ASSERT_FALSE(text.ok);
  EXPECT_TRUE(contains(text.error, "is not gzip-compressed")) << text.error;
}

// Defect: a flipped byte in the 8-byte gzip trailer (CRC-32, then length) was
// accepted; busybox reports "crc error" / "incorrect length" and exits 1.
TEST(ApkovlCheck, DamagedGzipTrailerIsRefusedLikeBusybox) {
  RPI_REQUIRE_TOOL("busybox");
  TempDir d;
  const std::string good = rpi::test::read_file(make(d, "ok"));
  for (std::size_t i = 1; i <= 8; ++i) {
    std::string bad = good;
    bad[bad.size() - i] = static_cast<char>(bad[bad.size() - i] ^ 0x01);
    fs::path p = write(d, "crc" + std::to_string(i) + ".apkovl.tar.gz", bad);
    EXPECT_FALSE(busybox_lists(p)) << "trailer byte -" << i;
    Outcome o = check(p);
    ASSERT_FALSE(o.ok) << "trailer byte -" << i << " flipped, yet accepted";
    EXPECT_TRUE(
        contains(o.error, p.string() + " is damaged (gzip: incorrect " + (i <= 4 ? "length" : "data") + " check)"))
        << o.error;
  }
}

// Every way of ending or joining gzip data that busybox's gunzip treats in a
// particular way: our accept/refuse decision must be busybox's.
TEST(ApkovlCheck, GzipLayerDecisionAgreesWithBusybox) {
  RPI_REQUIRE_TOOL("busybox");
  TempDir d;
  const std::string good = rpi::test::read_file(make(d, "ok"));
  const std::string tar = rpi::test::read_file(make(d, "plain-tar"));
  auto gz = [&](const std::string& data) {
    fs::path raw = write(d, "raw", data);
    auto r = rpi::test::run({"gzip", "-nc", raw.string()});
    if (r.exit_code != 0) throw std::runtime_error("gzip: " + r.err);
    return r.out;
  };
  struct Case {
    std::string name, data;
    bool accepted;
  };
  std::vector<Case> cases = {
      {"good", good, true},
      {"two-gzip-members", good + good, true},  // gunzip reads both
      {"tar-split-over-members", gz(tar.substr(0, 1000)) + gz(tar.substr(1000)), true},
      {"trailing-zeros", good + std::string(4096, '\0'), true},  // ignored by busybox
      {"trailing-garbage", good + "garbage", true},              // ignored by busybox
      {"trailing-1f", good + "\x1f", true},                      // < 2 bytes: ignored
      {"trailing-magic-only", good + "\x1f\x8b", false},         // a member must follow
      {"trailing-magic-junk", good + "\x1f\x8b" + std::string(20, 'x'), false},
      {"truncated-1", good.substr(0, good.size() - 1), false},
      {"truncated-8", good.substr(0, good.size() - 8), false},
      {"truncated-half", good.substr(0, good.size() / 2), false},
      {"second-member-bad-crc", good + good.substr(0, good.size() - 8) + std::string(8, '\0'), false},
      {"empty", "", false},
      {"gzip-magic-only", "\x1f\x8b", false},
  };
  for (const auto& c : cases) {
    fs::path p = write(d, c.name + ".apkovl.tar.gz", c.data);
    Outcome o = check(p);
    EXPECT_EQ(busybox_lists(p), c.accepted) << c.name << ": the fixture does not do what it claims";
    EXPECT_EQ(o.ok.has_value(), c.accepted) << c.name << ": " << o.error;
    if (o.ok && c.name == "trailing-garbage") {
      EXPECT_TRUE(contains(joined(o.ok->warnings), p.string() + ": 7 bytes after its gzip data, not gzip; busybox"))
          << joined(o.ok->warnings);
    } else if (o.ok && c.name == "trailing-1f") {
      EXPECT_TRUE(contains(joined(o.ok->warnings), p.string() + ": 1 byte after its gzip data, not gzip; busybox"))
          << joined(o.ok->warnings);
    } else if (o.ok) {
      EXPECT_TRUE(o.ok->warnings.empty()) << c.name << ": " << joined(o.ok->warnings);
    }
  }
}

// `inspect` (summarize_apkovl) judges the gzip layer of an apkovl on a card
// the same way.
TEST(ApkovlCheck, InspectJudgesTheGzipLayerTheSameWay) {
  TempDir d;
  const std::string good = rpi::test::read_file(make(d, "ok"));
  std::string bad_crc = good;
  bad_crc[bad_crc.size() - 8] = static_cast<char>(bad_crc[bad_crc.size() - 8] ^ 0x01);
  EXPECT_NO_THROW(summarize_apkovl(good + good, "x.apkovl.tar.gz"));
  try {
    summarize_apkovl(bad_crc, "x.apkovl.tar.gz");
    ADD_FAILURE() << "a bad CRC passed inspect";
  } catch (const rpi::Error& e) {
    EXPECT_TRUE(contains(e.what(), "x.apkovl.tar.gz is damaged (gzip: incorrect data check)")) << e.what();
  }
  try {
    summarize_apkovl(rpi::test::read_file(make(d, "plain-tar")), "x.apkovl.tar.gz");
    ADD_FAILURE() << "a plain tar passed inspect";
  } catch (const rpi::Error& e) {
    EXPECT_TRUE(contains(e.what(), "x.apkovl.tar.gz is a plain (uncompressed) tar archive")) << e.what();
  }
}

// Hard links are refused when their target is absolute or goes through ".."
// (busybox lists them fine: this is our policy, as for absolute member names).
TEST(ApkovlCheck, HardLinksOutOfTheOverlayAreRefused) {
  RPI_REQUIRE_TOOL("busybox");
  TempDir d;
  struct Case {
    std::string kind, message;
  } cases[] = {
      {"hardlink-absolute",
       ": member 'etc/shadow.lnk' is a hard link to '/etc/shadow', an absolute path outside the overlay; remove"},
      {"hardlink-dotdot",
       ": member 'etc/shadow.lnk' is a hard link to 'etc/../../etc/shadow', which leaves the overlay through '..'"},
  };
  for (const auto& c : cases) {
    fs::path p = make(d, c.kind);
    EXPECT_TRUE(busybox_lists(p)) << c.kind;
    Outcome o = check(p);
    ASSERT_FALSE(o.ok) << c.kind << " was accepted";
    EXPECT_TRUE(contains(o.error, p.string() + c.message)) << o.error;
  }
  // A link between the overlay's own files is fine.
  Outcome inside = check(make(d, "hardlink"));
  ASSERT_TRUE(inside.ok) << inside.error;
  EXPECT_TRUE(inside.ok->warnings.empty()) << joined(inside.ok->warnings);
}

TEST(ApkovlCheck, DeviceNodesAndFifosAreWarnedAbout) {
  RPI_REQUIRE_TOOL("busybox");
  TempDir d;
  struct Case {
    std::string kind, message;
  } cases[] = {
      {"chardev", ": member 'etc/console' is a character device node; lbu never packs one"},
      {"blockdev", ": member 'etc/disk' is a block device node; lbu never packs one"},
      {"fifo", ": member 'etc/pipe' is a FIFO; lbu never packs one"},
  };
  for (const auto& c : cases) {
    fs::path p = make(d, c.kind);
    EXPECT_TRUE(busybox_lists(p)) << c.kind;
    Outcome o = check(p);
    ASSERT_TRUE(o.ok) << c.kind << ": " << o.error;
    ASSERT_EQ(o.ok->warnings.size(), 1u) << joined(o.ok->warnings);
    EXPECT_TRUE(contains(o.ok->warnings[0], p.string() + c.message)) << o.ok->warnings[0];
  }
}

// The Pi's root is a tmpfs: an overlay's unpacked size is RAM at every boot.
TEST(ApkovlCheck, BigOverlayIsWarnedAbout) {
  TempDir d;
  fs::path p = make(d, "big", "80");  // 80 MiB of zeros, ~370 kB compressed
  Outcome o = check(p);
  ASSERT_TRUE(o.ok) << o.error;
  EXPECT_GT(o.ok->unpacked, 80ull << 20);
  ASSERT_EQ(o.ok->warnings.size(), 1u) << joined(o.ok->warnings);
  EXPECT_TRUE(contains(o.ok->warnings[0], p.string() + " unpacks to 80.0 MiB, all of it kept in the Pi's RAM"))
      << o.ok->warnings[0];
}

TEST(ApkovlCheck, OverlayUnpackingBeyondTheLimitIsRefused) {
  RPI_REQUIRE_TOOL("busybox");
  TempDir d;
  fs::path p = make(d, "big", "1024");  // 1 GiB of zeros in ~4.6 MB, as the audit found
  EXPECT_TRUE(busybox_lists(p));
  Outcome o = check(p);
  ASSERT_FALSE(o.ok) << "1 GiB overlay accepted";
  EXPECT_TRUE(
      contains(o.error, p.string() + " unpacks to more than 512 MiB (from 4.5 MiB): the Pi keeps its whole root"))
      << o.error;
  EXPECT_TRUE(contains(o.error, "lbu exclude")) << o.error;
}

// Unchanged rules, kept: absolute and ".." member names are refused.
TEST(ApkovlCheck, AbsoluteAndDotDotMemberNamesAreRefused) {
  TempDir d;
  for (const std::string name : {"/etc/hostname", "etc/../../root/x"}) {
    fs::path p = d / "names.apkovl.tar.gz";
    auto r = rpi::test::run({"python3", "-c",
                             "import io,sys,tarfile\n"
                             "ti = tarfile.TarInfo(sys.argv[2]); ti.size = 2\n"
                             "with tarfile.open(sys.argv[1], 'w:gz') as t: t.addfile(ti, io.BytesIO(b'x\\n'))\n",
                             p.string(), name});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    Outcome o = check(p);
    ASSERT_FALSE(o.ok) << name;
    EXPECT_TRUE(contains(o.error, "member '" + name + "'")) << o.error;
  }
}

namespace {

// The host name busybox `hostname -F FILE` (Alpine's hostname service) sets
// from `text`: the real busybox, in a user and UTS namespace of its own
// (`unshare -r -u`) so that nothing is set on this machine. "" when it sets
// none; nullopt when busybox or such a namespace is not available here.
std::optional<std::string> busybox_sets(const TempDir& dir, const std::string& text) {
  static const bool usable = rpi::test::have_tool("busybox") && rpi::test::have_tool("unshare") &&
                             rpi::test::run({"unshare", "-r", "-u", "busybox", "hostname", "x"}).exit_code == 0;
  if (!usable) return std::nullopt;
  const fs::path f = dir / "hostname-for-busybox";
  rpi::test::write_file(f, text);
  // A sentinel first: what is still set afterwards was not set by the file.
  auto r =
      rpi::test::run({"unshare", "-r", "-u", "sh", "-c",
                      "busybox hostname h1-sentinel && { busybox hostname -F \"$1\" 2>/dev/null; busybox hostname; }",
                      "sh", f.string()});
  if (r.exit_code != 0 || r.out.empty() || r.out.back() != '\n')
    throw std::runtime_error("busybox hostname: " + r.err + r.out);
  const std::string name = r.out.substr(0, r.out.size() - 1);
  return name == "h1-sentinel" ? std::string() : name;
}

// etc/hostname as busybox tar leaves it on the Pi (the file extracted by
// `busybox tar -xzf`; "" if it is not a regular file), read by busybox
// `hostname -F`. nullopt when busybox_sets cannot run here.
std::optional<std::string> busybox_hostname(const TempDir& dir, const fs::path& apkovl) {
  fs::path root = dir / ("x-" + apkovl.filename().string());
  fs::create_directories(root);
  auto r = rpi::test::run({"busybox", "tar", "-xzf", apkovl.string(), "-C", root.string()});
  if (r.exit_code != 0) throw std::runtime_error("busybox tar -xzf " + apkovl.string() + ": " + r.err);
  const fs::path f = root / "etc/hostname";
  if (fs::is_symlink(f) || !fs::is_regular_file(f)) return std::string();
  return busybox_sets(dir, rpi::test::read_file(f));
}

// An apkovl named `name` whose etc/hostname holds `text` (make_apkovl.py hostname).
fs::path with_hostname(const TempDir& dir, const std::string& name, const std::string& text) {
  fs::path out = dir / name;
  auto r = rpi::test::run({"python3", (rpi::test::source_dir() / "tests/partition/make_apkovl.py").string(), "hostname",
                           out.string(), text});
  if (r.exit_code != 0) throw std::runtime_error("make_apkovl.py hostname: " + r.err);
  return out;
}

}  // namespace

// --apkovl names the card after the host name the Pi sets from the overlay's
// etc/hostname: the file busybox tar leaves on the Pi (the last member of
// that name), read as busybox `hostname -F` reads it. inspect's summary shows
// the same name.
TEST(ApkovlCheck, HostnameIsWhatBusyboxSetsFromEtcHostnameAsTarLeavesIt) {
  RPI_REQUIRE_TOOL("busybox");
  TempDir d;
  if (!busybox_sets(d, "x\n")) GTEST_SKIP() << "cannot run busybox hostname in a user+UTS namespace (unshare -r -u)";
  struct Case {
    fs::path apkovl;
    std::string expected;
  } cases[] = {
      {make(d, "ok"), "myhost"},
      {make(d, "dot-slash"), "myhost"},
      {make(d, "hostname-twice"), "second"},
      {with_hostname(d, "blanks.apkovl.tar.gz", " \tkiosk-07 \r\n\n\tsecond-line\t\n"), "second-line"},
      {with_hostname(d, "comment.apkovl.tar.gz", "# the kiosk by the door\nkiosk-07\n"), "kiosk-07"},
      {with_hostname(d, "words.apkovl.tar.gz", "kiosk-07 # was kiosk-06\n"), "kiosk-07"},
      {with_hostname(d, "fqdn.apkovl.tar.gz", "pi.example.org"), "pi.example.org"},
  };
  for (const auto& c : cases) {
    ASSERT_EQ(busybox_hostname(d, c.apkovl), c.expected) << c.apkovl << ": the fixture does not do what it claims";
    Outcome o = check(c.apkovl);
    ASSERT_TRUE(o.ok) << o.error;
    EXPECT_EQ(o.ok->hostname, c.expected) << c.apkovl;
    EXPECT_TRUE(o.ok->warnings.empty()) << joined(o.ok->warnings);
    EXPECT_EQ(summarize_apkovl(rpi::test::read_file(c.apkovl), "x.apkovl.tar.gz").hostname, c.expected) << c.apkovl;
  }
}

// No usable etc/hostname: no hostname (the card keeps the file name), and the
// apkovl is still accepted.
TEST(ApkovlCheck, HostnameIsEmptyWhenAbsentInvalidOrNotARegularFile) {
  RPI_REQUIRE_TOOL("busybox");
  TempDir d;
  std::vector<fs::path> files = {make(d, "no-hostname"), make(d, "hostname-symlink")};
  for (const auto& f : files) EXPECT_EQ(busybox_hostname(d, f).value_or(""), "") << f;  // absent; a symlink
  int i = 0;
  const std::vector<std::string> invalid = {"", "\n", "   \n", "# only a comment\n", "my_host\n", "-lead\n", "trail-\n",
                                            "-two words\n", "a..b\n", ".dot\n", "dot.\n",
                                            // CR LF line ends: busybox keeps the CR in the name it sets
                                            "kiosk-07\r\n",
                                            "h\xc3\xbc"
                                            "bsch\n",
                                            std::string(65, 'a'), std::string(64, 'a') + "x",
                                            // 65 characters in labels of 32: only the total is too long
                                            std::string(32, 'a') + "." + std::string(32, 'b'), "x\x1b[2J\n",
                                            std::string(5000, 'a')};
  for (const std::string& text : invalid) {
    files.push_back(with_hostname(d, "bad" + std::to_string(i++) + ".apkovl.tar.gz", text));
  }
  for (const auto& f : files) {
    Outcome o = check(f);
    ASSERT_TRUE(o.ok) << f << ": " << o.error;
    EXPECT_EQ(o.ok->hostname, "") << f;
    EXPECT_EQ(o.ok->members, f.filename().string().rfind("no-hostname", 0) == 0 ? 6u : 7u) << f;
  }
  // The longest valid names are taken: a 63-character label, 64 characters in all.
  const std::string label63(63, 'b'), name64 = "a." + std::string(62, 'c');
  for (const auto& name : {label63, name64}) {
    Outcome o = check(with_hostname(d, "long.apkovl.tar.gz", name + "\n"));
    ASSERT_TRUE(o.ok) << o.error;
    EXPECT_EQ(o.ok->hostname, name);
  }
  // An encrypted apkovl is not read: no hostname.
  fs::path enc = d / "myhost.apkovl.tar.gz.aes-256-cbc";
  fs::copy_file(make(d, "ok"), enc);
  Outcome e = check(enc);
  ASSERT_TRUE(e.ok) << e.error;
  EXPECT_EQ(e.ok->hostname, "");
}

// `inspect` reviews an apkovl already on a card: the same findings, none thrown.
TEST(ApkovlCheck, ReviewListsWhatCheckRefusesWithoutThrowing) {
  RPI_REQUIRE_TOOL("busybox");
  TempDir d;
  fs::path hostile = make(d, "hostile");
  EXPECT_TRUE(busybox_lists(hostile));
  const std::string data = rpi::test::read_file(hostile);
  ApkovlReview r = review_apkovl("card.apkovl.tar.gz", data);
  ASSERT_EQ(r.refusals.size(), 1u) << joined(r.refusals);
  EXPECT_TRUE(contains(r.refusals[0],
                       "card.apkovl.tar.gz: member 'etc/shadow.lnk' is a hard link to '/etc/shadow', an absolute path"))
      << r.refusals[0];
  ASSERT_EQ(r.check.warnings.size(), 2u) << joined(r.check.warnings);
  EXPECT_TRUE(contains(r.check.warnings[0], "member 'etc/console' is a character device node"))
      << joined(r.check.warnings);
  EXPECT_TRUE(contains(r.check.warnings[1], "member 'etc/pipe' is a FIFO")) << joined(r.check.warnings);
  EXPECT_EQ(r.check.members, 10u);  // read to the end
  EXPECT_EQ(r.check.hostname, "myhost");
  // check_apkovl throws exactly the first refusal.
  try {
    check_apkovl("card.apkovl.tar.gz", data);
    ADD_FAILURE() << "the hostile apkovl was accepted";
  } catch (const rpi::Error& e) {
    EXPECT_EQ(std::string(e.what()), r.refusals[0]);
  }
  // A layer that cannot be read ends the review with one refusal.
  ApkovlReview plain = review_apkovl("p.apkovl.tar.gz", rpi::test::read_file(make(d, "plain-tar")));
  ASSERT_EQ(plain.refusals.size(), 1u) << joined(plain.refusals);
  EXPECT_TRUE(contains(plain.refusals[0], "p.apkovl.tar.gz is a plain (uncompressed) tar archive"))
      << plain.refusals[0];
  ApkovlReview empty = review_apkovl("e.apkovl.tar.gz", "");
  ASSERT_EQ(empty.refusals.size(), 1u) << joined(empty.refusals);
  // A name the initramfs would not find is refused, and the data still read.
  ApkovlReview noname = review_apkovl(".apkovl.tar.gz", data);
  ASSERT_EQ(noname.refusals.size(), 2u) << joined(noname.refusals);
  EXPECT_TRUE(contains(noname.refusals[0], "an apkovl must be named <host>.apkovl.tar.gz")) << noname.refusals[0];
  EXPECT_EQ(noname.check.warnings.size(), 2u) << joined(noname.check.warnings);
}

// A hostile archive can hold a million odd members: each list stops at
// kApkovlMaxFindings and then counts the rest.
TEST(ApkovlCheck, FindingsStopAtTheLimitAndCountTheRest) {
  RPI_REQUIRE_TOOL("busybox");
  TempDir d;
  fs::path p = make(d, "fifos", "30");
  auto listed = rpi::test::run({"busybox", "tar", "-tvzf", p.string()});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  std::size_t fifos = 0;
  for (std::size_t at = 0; (at = listed.out.find("\np", at)) != std::string::npos; ++at) ++fifos;
  ASSERT_EQ(fifos + (listed.out.rfind('p', 0) == 0 ? 1 : 0), 30u) << listed.out;
  Outcome o = check(p);
  ASSERT_TRUE(o.ok) << o.error;
  ASSERT_EQ(o.ok->warnings.size(), kApkovlMaxFindings + 1) << joined(o.ok->warnings);
  EXPECT_TRUE(contains(o.ok->warnings[kApkovlMaxFindings - 1], "member 'etc/pipe19' is a FIFO"))
      << joined(o.ok->warnings);
  EXPECT_EQ(o.ok->warnings.back(), p.string() + ": 10 more warnings like those above");
  // The counts are of the findings, not of the lines that list them.
  const ApkovlReview r = review_apkovl(p.string(), rpi::test::read_file(p));
  EXPECT_EQ(r.warnings, 30u);
  EXPECT_EQ(r.problems, 0u);
}

namespace {

// etc/hostname texts, with the name busybox 1.35 `hostname -F` sets from
// each (as seen running it), "" for none.
struct HostnameCase {
  const char* what;
  std::string text;
  std::string sets;
};
const std::vector<HostnameCase>& hostname_cases() {
  static const std::vector<HostnameCase> cases = {
      {"one line", "kiosk-07\n", "kiosk-07"},
      {"no final newline", "kiosk-07", "kiosk-07"},
      {"a comment first", "# the kiosk by the door\nkiosk-07\n", "kiosk-07"},
      {"an indented comment", "  \t# old: kiosk-06\nkiosk-07\n", "kiosk-07"},
      {"blank lines", "\n\n  \n\t\nkiosk-07\n\n\n", "kiosk-07"},
      {"trailing spaces and a tab", "kiosk-07 \t \n", "kiosk-07"},
      {"leading blanks", " \t kiosk-07\n", "kiosk-07"},
      {"CR LF line ends (the CR stays)", "kiosk-07\r\n", "kiosk-07\r"},
      {"several names: the last wins", "first\nsecond\nthird\n", "third"},
      {"several names with CR LF", "first\r\nsecond\r\n", "second\r"},
      {"only comments", "# one\n  # two\n#\n", ""},
      {"empty", "", ""},
      {"only blank lines", "\n \n\t\n", ""},
      {"the first word of a line", "kiosk-07 kiosk-08\n", "kiosk-07"},
      {"a comment after the name", "kiosk-07# was kiosk-06\n", "kiosk-07"},
      {"a comment line after the name", "kiosk-07\n# kiosk-08\n", "kiosk-07"},
      {"a continued line", "kio\\\nsk-07\n", "kiosk-07"},
      {"a name longer than 64 bytes ends it", "kiosk-07\n" + std::string(65, 'a') + "\nkiosk-08\n", "kiosk-07"},
      {"64 bytes are taken", std::string(64, 'b') + "\n", std::string(64, 'b')},
      {"a NUL ends the line", std::string("kiosk-07\0-x\n", 12), "kiosk-07"},
  };
  return cases;
}

}  // namespace

TEST(Hostname, FromFileIsWhatBusyboxHostnameDashFSets) {
  for (const auto& c : hostname_cases()) EXPECT_EQ(hostname_from_file(c.text), c.sets) << c.what;
  // Whether the card is named after it.
  EXPECT_TRUE(valid_hostname("kiosk-07"));
  EXPECT_FALSE(valid_hostname("kiosk-07\r"));
  EXPECT_FALSE(valid_hostname(""));
}

// The same cases against the real busybox.
TEST(Hostname, FromFileAgreesWithBusybox) {
  TempDir d;
  if (!busybox_sets(d, "x\n")) GTEST_SKIP() << "cannot run busybox hostname in a user+UTS namespace (unshare -r -u)";
  for (const auto& c : hostname_cases()) {
    ASSERT_EQ(busybox_sets(d, c.text), c.sets) << c.what << ": busybox does not do what the case says";
    EXPECT_EQ(hostname_from_file(c.text), c.sets) << c.what;
  }
}

// inspect reviews and summarises an apkovl from one decompression: every
// gzip decompression starts with inflateInit2_ (zlib's, or libarchive's gzip
// filter's), counted here by standing in for zlib's.
namespace {
std::atomic<int> inflate_inits{0};
}  // namespace
extern "C" int inflateInit2_(z_streamp strm, int window_bits, const char* version, int stream_size) {
  using Real = int (*)(z_streamp, int, const char*, int);
  static const Real real = reinterpret_cast<Real>(::dlsym(RTLD_NEXT, "inflateInit2_"));
  if (!real) return Z_VERSION_ERROR;
  ++inflate_inits;
  return real(strm, window_bits, version, stream_size);
}

TEST(ApkovlCheck, InspectDecompressesOnce) {
  TempDir d;
  const std::string data = rpi::test::read_file(make(d, "hostile"));
  // The count sees this library's zlib use and libarchive's.
  inflate_inits = 0;
  (void)check_apkovl_gzip("x.apkovl.tar.gz", data, kApkovlMaxUnpacked);
  if (inflate_inits != 1) GTEST_SKIP() << "zlib's inflateInit2_ cannot be stood in for here";
  inflate_inits = 0;
  {
    rpi::ArchiveReader a(archive_read_new());
    archive_read_support_filter_gzip(a.get());
    archive_read_support_format_tar(a.get());
    ASSERT_EQ(archive_read_open_memory(a.get(), data.data(), data.size()), ARCHIVE_OK);
    archive_entry* e = nullptr;
    while (archive_read_next_header(a.get(), &e) == ARCHIVE_OK) {
    }
  }
  const bool sees_libarchive = inflate_inits > 0;

  inflate_inits = 0;
  const ApkovlInspection seen = inspect_apkovl("card.apkovl.tar.gz", data);
  EXPECT_EQ(inflate_inits, 1) << (sees_libarchive ? "" : "(libarchive's own decompressions are not counted here)");
  // And it is the whole answer: the findings of --apkovl and the summary.
  ASSERT_EQ(seen.review.refusals.size(), 1u) << joined(seen.review.refusals);
  EXPECT_TRUE(contains(seen.review.refusals[0], "member 'etc/shadow.lnk' is a hard link to '/etc/shadow'"));
  EXPECT_EQ(seen.review.check.warnings.size(), 2u) << joined(seen.review.check.warnings);
  EXPECT_EQ(seen.review.check.hostname, "myhost");
  ASSERT_TRUE(seen.summary) << seen.problem;
  EXPECT_EQ(seen.summary->members, 10u);
  EXPECT_EQ(seen.summary->hostname, "myhost");
  EXPECT_EQ(seen.summary->world, (std::vector<std::string>{"alpine-base", "openssh"}));
  EXPECT_EQ(seen.summary->runlevels.at("default"), std::vector<std::string>{"sshd"});
  // A gzip layer that fails decides both, still from one decompression.
  std::string bad_crc = data;
  bad_crc[bad_crc.size() - 8] = static_cast<char>(bad_crc[bad_crc.size() - 8] ^ 0x01);
  inflate_inits = 0;
  const ApkovlInspection damaged = inspect_apkovl("card.apkovl.tar.gz", bad_crc);
  EXPECT_EQ(inflate_inits, 1);
  ASSERT_EQ(damaged.review.refusals.size(), 1u) << joined(damaged.review.refusals);
  EXPECT_TRUE(contains(damaged.review.refusals[0], "card.apkovl.tar.gz is damaged (gzip: incorrect data check)"))
      << damaged.review.refusals[0];
  EXPECT_TRUE(damaged.review.check.warnings.empty()) << joined(damaged.review.check.warnings);
  EXPECT_FALSE(damaged.summary);
  EXPECT_EQ(damaged.problem, damaged.review.refusals[0]);
}

// ---- an etc/hostname that gives no valid host name -----------------------------

namespace {

// A name as the warning quotes it: a CR as \r.
std::string quoted(const std::string& name) {
  std::string out = "'";
  for (char c : name) out += c == '\r' ? std::string("\\r") : std::string(1, c);
  return out + "'";
}

}  // namespace

// The warning agrees with what busybox `hostname -F` sets (hostname_cases,
// seen running busybox in FromFileAgreesWithBusybox): none for a valid name;
// for an invalid one, that name as what the Pi is called; for none, that the
// Pi keeps its name.
TEST(Hostname, FindingSaysWhatThePiIsCalled) {
  for (const auto& c : hostname_cases()) {
    const std::string w = hostname_finding("x.apkovl.tar.gz", c.text);
    if (valid_hostname(c.sets)) {
      EXPECT_EQ(w, "") << c.what;
      continue;
    }
    ASSERT_FALSE(w.empty()) << c.what;
    EXPECT_EQ(w.rfind("x.apkovl.tar.gz: etc/hostname ", 0), 0u) << w;
    if (c.text.empty())
      EXPECT_TRUE(contains(w, "is empty: Alpine's hostname service then calls the Pi 'localhost'")) << w;
    else if (c.sets.empty())
      EXPECT_TRUE(contains(w, "busybox `hostname -F` sets none, and the Pi keeps the kernel's default host name")) << w;
    else
      EXPECT_TRUE(contains(w, "the Pi is called " + quoted(c.sets))) << c.what << ": " << w;
    EXPECT_TRUE(contains(w, "setup-hostname") || contains(w, "dos2unix")) << "says how to fix it: " << w;
  }
  // Why, where the text shows it.
  EXPECT_TRUE(contains(hostname_finding("p", "kiosk-07\r\n"), "Windows (CR LF) line ends")) << "CR LF";
  EXPECT_TRUE(contains(hostname_finding("p", "kiosk-07\r\n"), "`dos2unix etc/hostname`")) << "CR LF";
  EXPECT_TRUE(contains(hostname_finding("p", "# one\n\n"), "only blank and '#' comment lines"));
  EXPECT_TRUE(contains(hostname_finding("p", std::string(65, 'a') + "\n"), "longer than 64 characters"));
  EXPECT_TRUE(contains(hostname_finding("p", "my_host\n"), "names 'my_host', which is no valid host name"));
  // Bytes that are no text are shown escaped, never raw.
  const std::string esc = hostname_finding("p", "x\x1b[2J\n");
  EXPECT_TRUE(contains(esc, "'x\\x1b[2J'")) << esc;
  EXPECT_FALSE(contains(esc, "\x1b")) << esc;
}

// Each apkovl whose etc/hostname gives the Pi no valid host name gets one
// warning, from check_apkovl (--apkovl) and from inspect's review alike; the
// Pi's own tools are the oracle for the name where they run here.
TEST(ApkovlCheck, AnEtcHostnameWithoutAValidNameIsWarnedAbout) {
  TempDir d;
  const bool have_busybox = rpi::test::have_tool("busybox");
  const bool can_set = have_busybox && busybox_sets(d, "x\n").has_value();
  struct Case {
    fs::path apkovl;
    std::string says;
  };
  const std::vector<Case> cases = {
      {with_hostname(d, "crlf.apkovl.tar.gz", "kiosk-07\r\n"), "the Pi is called 'kiosk-07\\r'"},
      {with_hostname(d, "empty.apkovl.tar.gz", ""),
       "is empty: Alpine's hostname service then calls the Pi 'localhost'"},
      {with_hostname(d, "comments.apkovl.tar.gz", "# kiosk-07\n\n"), "only blank and '#' comment lines"},
      {with_hostname(d, "under.apkovl.tar.gz", "my_host\n"), "the Pi is called 'my_host' all the same"},
      {make(d, "no-hostname"), "has no etc/hostname: Alpine's hostname service then calls the Pi 'localhost'"},
      {make(d, "hostname-symlink"),
       "etc/hostname is a symbolic link to '/etc/other', not a file holding the host name"},
  };
  for (const auto& c : cases) {
    Outcome o = check(c.apkovl);
    ASSERT_TRUE(o.ok) << c.apkovl << ": " << o.error;
    ASSERT_EQ(o.ok->warnings.size(), 1u) << c.apkovl << ":\n" << joined(o.ok->warnings);
    EXPECT_EQ(o.ok->warnings[0].rfind(c.apkovl.string() + ": ", 0), 0u) << o.ok->warnings[0];
    EXPECT_TRUE(contains(o.ok->warnings[0], c.says)) << o.ok->warnings[0];
    EXPECT_EQ(o.ok->hostname, "") << c.apkovl;
    // inspect's review (cards and bare apkovls) has the same warning.
    const ApkovlInspection seen = inspect_apkovl(c.apkovl.string(), rpi::test::read_file(c.apkovl));
    EXPECT_EQ(seen.review.check.warnings, o.ok->warnings);
    EXPECT_EQ(seen.review.warnings, 1u);
  }
  // The name busybox sets on the Pi from the CR LF file, CR included.
  if (can_set) {
    EXPECT_EQ(busybox_hostname(d, cases[0].apkovl), "kiosk-07\r");
  }
  // A valid name, also after a CR-free second line: no warning.
  for (const std::string text : {"kiosk-07\n", "kiosk-07 \r\n", "old\r\nkiosk-07\n"}) {
    const fs::path p = with_hostname(d, "fine.apkovl.tar.gz", text);
    if (can_set) {
      ASSERT_EQ(busybox_hostname(d, p), "kiosk-07") << "the fixture does not do what it claims";
    }
    Outcome o = check(p);
    ASSERT_TRUE(o.ok) << o.error;
    EXPECT_TRUE(o.ok->warnings.empty()) << joined(o.ok->warnings);
    EXPECT_EQ(o.ok->hostname, "kiosk-07");
  }
  // The last etc/hostname counts, as tar leaves it: a bad one replaced by a good one is fine.
  Outcome twice = check(make(d, "hostname-twice"));
  ASSERT_TRUE(twice.ok) << twice.error;
  EXPECT_TRUE(twice.ok->warnings.empty()) << joined(twice.ok->warnings);
  // An encrypted apkovl is not read: only the encryption is warned about.
  fs::path enc = d / "myhost.apkovl.tar.gz.aes-256-cbc";
  fs::copy_file(make(d, "no-hostname"), enc);
  Outcome e = check(enc);
  ASSERT_TRUE(e.ok) << e.error;
  ASSERT_EQ(e.ok->warnings.size(), 1u) << joined(e.ok->warnings);
  EXPECT_TRUE(contains(e.ok->warnings[0], "is encrypted")) << e.ok->warnings[0];
}

// ---- what a gzip file holds (inspect FILE) ---------------------------------------

TEST(GzipGuess, TellsApkovlsFromBootTarballsAndCompressedImages) {
  RPI_REQUIRE_TOOL("python3");
  RPI_REQUIRE_TOOL("gzip");
  TempDir d;
  auto guess = [](const fs::path& p) {
    std::string head = rpi::test::read_file(p);
    if (head.size() > kGzipGuessBytes) head.resize(kGzipGuessBytes);
    return guess_gzip_content(head);
  };
  auto gz = [&](const fs::path& p) {
    auto r = rpi::test::sh("gzip -nkf '" + p.string() + "'");
    if (r.exit_code != 0) throw std::runtime_error("gzip: " + r.err);
    return fs::path(p.string() + ".gz");
  };
  // Apkovls: Python's tarfile, GNU tar (names with and without "./"), lbu's layout.
  EXPECT_EQ(guess(make(d, "ok")).content, GzipContent::tar);
  EXPECT_EQ(guess(make(d, "dot-slash")).content, GzipContent::tar);
  EXPECT_EQ(guess(make(d, "hostile")).content, GzipContent::tar);
  fs::create_directories(d / "tree/etc/apk");
  rpi::test::write_file(d / "tree/etc/hostname", "pi\n");
  rpi::test::write_file(d / "tree/etc/apk/world", "alpine-base\n");
  ASSERT_EQ(rpi::test::sh("tar -czf '" + (d / "gnu.tgz").string() + "' -C '" + (d / "tree").string() + "' .").exit_code,
            0);
  EXPECT_EQ(guess(d / "gnu.tgz").content, GzipContent::tar);
  // A boot tarball, as make_tarball.py makes one for the image engine's tests.
  const fs::path boot = d / "boot.tar.gz";
  auto r = rpi::test::run(
      {"python3", (rpi::test::source_dir() / "tests/partition/make_tarball.py").string(), "ok", boot.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const GzipGuess b = guess(boot);
  EXPECT_EQ(b.content, GzipContent::boot_tarball);
  EXPECT_FALSE(b.why.empty());
  // Compressed disk images: an MBR written by sfdisk, a FAT without one by mkfs.vfat.
  if (rpi::test::have_tool("sfdisk")) {
    const fs::path img = d / "mbr.img";
    ASSERT_EQ(rpi::test::sh("truncate -s 4M '" + img.string() +
                            "' && printf 'label: dos\\nstart=2048, type=c\\n' | "
                            "sfdisk -q '" +
                            img.string() + "'")
                  .exit_code,
              0);
    EXPECT_EQ(guess(gz(img)).content, GzipContent::disk_image);
  }
  if (rpi::test::have_tool("mkfs.vfat")) {
    const fs::path img = d / "fat.img";
    ASSERT_EQ(
        rpi::test::sh("truncate -s 4M '" + img.string() + "' && mkfs.vfat '" + img.string() + "' >/dev/null").exit_code,
        0);
    EXPECT_EQ(guess(gz(img)).content, GzipContent::disk_image);
  }
  // Other gzip data, damaged gzip data, no gzip at all.
  rpi::test::write_file(d / "notes.txt", "hostname=pi\n");
  EXPECT_EQ(guess(gz(d / "notes.txt")).content, GzipContent::other);
  const GzipGuess bad =
      guess_gzip_content(std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", 10) + std::string(600, '\xff'));
  EXPECT_EQ(bad.content, GzipContent::damaged);
  EXPECT_FALSE(bad.why.empty());
  EXPECT_EQ(guess(make(d, "plain-tar")).content, GzipContent::not_gzip);
  EXPECT_EQ(guess_gzip_content("").content, GzipContent::not_gzip);
  // Only the start is needed: an apkovl cut after 200 bytes is still one.
  std::string start = rpi::test::read_file(make(d, "ok"));
  EXPECT_EQ(guess_gzip_content(start.substr(0, std::min<std::size_t>(start.size(), 200))).content, GzipContent::tar);
}

namespace {

// `data` gzip-compressed by zlib (gzip wrapper).
std::string gzip_bytes(const std::string& data) {
  z_stream zs{};
  if (deflateInit2(&zs, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw std::runtime_error("deflateInit2");
  std::string out(deflateBound(&zs, data.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) throw std::runtime_error("deflate");
  return out;
}

}  // namespace

// Tar headers are hostile input too: sizes, names, GNU and pax records
// mangled at random never make the guess read out of bounds or loop.
TEST(GzipGuess, MangledTarHeadersAreJudgedSafely) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  const std::string tar = rpi::test::read_file(make(d, "plain-tar"));
  ASSERT_GE(tar.size(), 2048u);
  EXPECT_EQ(guess_gzip_content(gzip_bytes(tar)).content, GzipContent::tar);
  std::uint32_t x = 12345;
  auto next = [&] {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
  };
  for (int i = 0; i < 500; ++i) {
    std::string t = tar;
    for (int k = 0, n = 1 + static_cast<int>(next() % 8); k < n; ++k) {
      const std::size_t at = next() % 2048;
      // Size fields and type flags most often; anything else too.
      const std::size_t block = at / 512 * 512;
      const std::size_t pos = next() % 3 == 0 ? block + 124 + next() % 12 : next() % 3 == 0 ? block + 156 : at;
      t[pos] = static_cast<char>(next() % 3 == 0 ? '7' : next() % 256);
    }
    const GzipGuess g = guess_gzip_content(gzip_bytes(t));
    EXPECT_TRUE(g.content == GzipContent::tar || g.content == GzipContent::boot_tarball ||
                g.content == GzipContent::other || g.content == GzipContent::disk_image)
        << i;
  }
}

// ---- the names the initramfs takes (alpine-facts §1.2, §1.6) ----------------

// nlplug-findfs: fnmatch("*.apkovl.tar.gz*", name, 0); initramfs-init: the text
// after the last '.' is "gz" (tar -z) or an OpenSSL cipher. The oracle for the
// glob is fnmatch(3) itself.
TEST(ApkovlNames, AsTheInitramfsMatchesAndUnpacksThem) {
  struct Case {
    const char* name;
    bool apkovl, encrypted;
  };
  for (const Case& c : std::vector<Case>{{"pi.apkovl.tar.gz", true, false},
                                         {"pi.apkovl.tar.gz.aes-256-cbc", true, true},
                                         {"pi.apkovl.tar.gzaes", true, true},
                                         {"pi.apkovl.tar.gz.gz", true, false},
                                         {"pi.apkovl.tar.gz.bak.gz", true, false},
                                         {".apkovl.tar.gz", true, false},
                                         {"pi.APKOVL.tar.gz", false, false},
                                         {"pi.apkovl.tgz", false, false},
                                         {"pi.tar.gz", false, false}}) {
    EXPECT_EQ(is_apkovl_name(c.name), ::fnmatch("*.apkovl.tar.gz*", c.name, 0) == 0) << c.name;
    EXPECT_EQ(is_apkovl_name(c.name), c.apkovl) << c.name;
    EXPECT_EQ(is_encrypted_apkovl_name(c.name), c.encrypted) << c.name;
  }
}

// "pi.apkovl.tar.gz.gz" is unpacked with busybox tar -z like any other: it is
// read (it was taken for encrypted and left unread), and its host name counts.
TEST(ApkovlNames, AGzSuffixAfterTheNameIsReadNotTakenForACipher) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  const fs::path gz = d / "pi.apkovl.tar.gz.gz";
  fs::copy_file(make(d, "hostname", "kiosk-07\n"), gz);
  Outcome o = check(gz);
  ASSERT_TRUE(o.ok) << o.error;
  EXPECT_EQ(o.ok->hostname, "kiosk-07");
  EXPECT_TRUE(o.ok->warnings.empty()) << joined(o.ok->warnings);
  EXPECT_EQ(o.ok->hostname_warning, "");
  // One that is a cipher is not read.
  const fs::path enc = d / "pi.apkovl.tar.gzaes";
  fs::copy_file(gz, enc);
  o = check(enc);
  ASSERT_TRUE(o.ok) << o.error;
  EXPECT_EQ(o.ok->hostname, "");
  EXPECT_EQ(o.ok->hostname_warning, "");
  ASSERT_EQ(o.ok->warnings.size(), 1u) << joined(o.ok->warnings);
  EXPECT_TRUE(contains(o.ok->warnings[0], "is encrypted")) << o.ok->warnings[0];
}

// The finding about etc/hostname is named apart, as it stands among the
// warnings: --apkovl merges it with its own note about the file's name.
TEST(ApkovlNames, TheHostnameFindingIsNamedApart) {
  RPI_REQUIRE_TOOL("python3");
  TempDir d;
  Outcome o = check(make(d, "hostname", "pi-lab\r\n"));
  ASSERT_TRUE(o.ok) << o.error;
  EXPECT_TRUE(contains(o.ok->hostname_warning, "`dos2unix etc/hostname`")) << o.ok->hostname_warning;
  EXPECT_EQ(o.ok->warnings, std::vector<std::string>{o.ok->hostname_warning});
  o = check(make(d, "no-hostname"));
  ASSERT_TRUE(o.ok) << o.error;
  EXPECT_TRUE(contains(o.ok->hostname_warning, "has no etc/hostname")) << o.ok->hostname_warning;
}
