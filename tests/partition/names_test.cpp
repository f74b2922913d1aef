#include <gtest/gtest.h>

#include <set>

#include "partition/fat_names.hpp"

using namespace rpi::partition::fatname;

namespace {
ShortName sn(const std::string& s) {
  ShortName n;
  n.fill(' ');
  for (std::size_t i = 0; i < s.size(); ++i) n[i] = s[i];
  return n;
}

// Short names for `names` created in this order in one directory.
std::vector<std::string> shorts(const std::vector<std::string>& names, std::vector<bool>* lfn = nullptr) {
  std::set<std::string> taken;
  std::vector<std::string> out;
  for (const auto& name : names) {
    auto r =
        make_short_name(name, [&](const ShortName& c) { return taken.count(std::string(c.begin(), c.end())) > 0; });
    taken.insert(std::string(r.name.begin(), r.name.end()));
    out.push_back(short_name_text(r.name));
    if (lfn) lfn->push_back(r.needs_lfn);
  }
  return out;
}
}  // namespace

TEST(Names, LfnChecksumKnownValues) {
  EXPECT_EQ(lfn_checksum(sn("MIXED   TXT")), 0x46);
  EXPECT_EQ(lfn_checksum(sn("LONGFI~1DAT")), 0xC5);
}

TEST(Names, LinuxMixedStyle) {
  std::vector<bool> lfn;
  auto s = shorts({"config.txt", "UPPER.TXT", "Mixed.TXT", "longfilename_here.dat", "overlays", "BOOTCODE.BIN"}, &lfn);
  EXPECT_EQ(s, (std::vector<std::string>{"CONFIG.TXT", "UPPER.TXT", "MIXED.TXT", "LONGFI~1.DAT", "OVERLAYS",
                                         "BOOTCODE.BIN"}));
  // An LFN for every name that is not already plain upper-case 8.3.
  EXPECT_EQ(lfn, (std::vector<bool>{true, false, true, true, true, false}));
}

TEST(Names, TailsThenDeterministicHashes) {
  std::vector<std::string> names;
  for (int i = 0; i < 12; ++i) names.push_back("hifiberry-dac" + std::to_string(i) + ".dtbo");
  auto s = shorts(names);
  EXPECT_EQ(s[0], "HIFIBE~1.DTB");
  EXPECT_EQ(s[3], "HIFIBE~4.DTB");
  std::set<std::string> unique(s.begin(), s.end());
  EXPECT_EQ(unique.size(), s.size());
  for (std::size_t i = 4; i < s.size(); ++i) {
    EXPECT_EQ(s[i].substr(0, 2), "HI") << s[i];
    EXPECT_EQ(s[i][6], '~') << s[i];
  }
  EXPECT_EQ(shorts(names), s);  // deterministic
}

TEST(Names, LossyAndSpecialNames) {
  auto s = shorts({".alpine-release", "a.b.c", "Grüße.txt", "con.txt", "name with spaces.txt", "x+y.txt"});
  EXPECT_EQ(s[0], "ALPINE~1");
  EXPECT_EQ(s[1], "AB~1.C");
  EXPECT_EQ(s[2], "GR__E~1.TXT");  // ü and ß each become _
  EXPECT_EQ(s[3], "CON~1.TXT");
  EXPECT_EQ(s[4], "NAMEWI~1.TXT");
  EXPECT_EQ(s[5], "X_Y~1.TXT");
}

TEST(Names, CollisionWithExistingPlainName) {
  auto s = shorts({"README.TXT", "readme.txt2"});
  EXPECT_EQ(s[1], "README~1.TXT");
}

TEST(Names, LfnSlotsPadding) {
  std::vector<std::uint8_t> out;
  std::u16string name = to_utf16("config.txt");  // 10 chars: one slot, terminator, then 0xFFFF
  append_lfn_slots(out, name, 0x12);
  ASSERT_EQ(out.size(), 32u);
  EXPECT_EQ(out[0], 0x41);   // last (and only) slot
  EXPECT_EQ(out[11], 0x0F);  // LFN attribute
  EXPECT_EQ(out[13], 0x12);
  // Character index 10 is the 0x0000 terminator (offset 24); 11 and 12 are 0xFFFF.
  EXPECT_EQ(out[24], 0x00);
  EXPECT_EQ(out[25], 0x00);
  EXPECT_EQ(out[28], 0xFF);
  EXPECT_EQ(out[31], 0xFF);

  out.clear();
  std::u16string exact = to_utf16("abcdefghijklm");  // exactly 13: no terminator
  append_lfn_slots(out, exact, 0);
  ASSERT_EQ(out.size(), 32u);
  EXPECT_EQ(out[30], 'm');

  out.clear();
  append_lfn_slots(out, to_utf16(std::string(30, 'x')), 0);  // 3 slots, last piece first
  ASSERT_EQ(out.size(), 96u);
  EXPECT_EQ(out[0], 0x43);
  EXPECT_EQ(out[32], 0x02);
  EXPECT_EQ(out[64], 0x01);
}

TEST(Names, Validation) {
  EXPECT_FALSE(invalid_reason("config.txt"));
  EXPECT_FALSE(invalid_reason("日本語.txt"));
  EXPECT_TRUE(invalid_reason("a:b"));
  EXPECT_TRUE(invalid_reason("a*b"));
  EXPECT_TRUE(invalid_reason("a\\b"));
  EXPECT_TRUE(invalid_reason("trailing."));
  EXPECT_TRUE(invalid_reason("trailing "));
  EXPECT_TRUE(invalid_reason(std::string("ctl\x01", 4)));
  EXPECT_TRUE(invalid_reason("\xff\xfe"));
  EXPECT_TRUE(invalid_reason(std::string(256, 'a')));
  EXPECT_FALSE(invalid_reason(std::string(255, 'a')));
}

TEST(Names, CaseFolding) {
  EXPECT_EQ(fold_case(to_utf16("Config.TXT")), fold_case(to_utf16("config.txt")));
  EXPECT_NE(fold_case(to_utf16("a")), fold_case(to_utf16("b")));
  EXPECT_EQ(to_utf16("😀").size(), 2u);                        // surrogate pair
  EXPECT_THROW(to_utf16("\xc0\xaf"), std::invalid_argument);  // overlong
}
