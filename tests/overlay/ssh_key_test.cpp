// [[users]] / [root] ssh_authorized_keys entries are checked as OpenSSH reads them.
// The oracle is OpenSSH itself: ssh-keygen makes real keys of every type it can
// (they must pass), and `ssh-keygen -l -f FILE` must refuse every sample we refuse.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "overlay/spec.hpp"
#include "rpi/error.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace rpi;
using namespace rpi::overlay;
using namespace std::string_literals;

namespace {

bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// The spec error for one [root] key (a TOML literal string), or "" if it passes.
std::string key_error(const std::string& entry) {
  try {
    parse_spec("[system]\nhostname = \"pi\"\n[root]\nssh_authorized_keys = ['" + entry + "']\n", "t.toml", ".");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::spec);
    return e.what();
  }
  return "";
}

// True if OpenSSH reads `line` as an authorized_keys / public key line.
bool openssh_reads(const test::TempDir& dir, const std::string& line) {
  static int n = 0;
  const fs::path f = dir / ("sample" + std::to_string(++n) + ".pub");
  test::write_file(f, line + "\n");
  return test::run({"ssh-keygen", "-l", "-f", f.string()}).exit_code == 0;
}

// A new key of this type from ssh-keygen: its .pub line without the newline.
std::string generate(const test::TempDir& dir, const std::vector<std::string>& type_args) {
  static int n = 0;
  const fs::path key = dir / ("key" + std::to_string(++n));
  std::vector<std::string> argv = {"ssh-keygen", "-q", "-N", "", "-C", "me@laptop", "-f", key.string()};
  argv.insert(argv.end(), type_args.begin(), type_args.end());
  auto r = test::run(argv);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::string pub = test::read_file(key.string() + ".pub");
  while (!pub.empty() && (pub.back() == '\n' || pub.back() == '\r')) pub.pop_back();
  return pub;
}

// Word i (0-based) of a .pub line.
std::string word(const std::string& line, int i) {
  std::size_t start = 0;
  for (int k = 0; k < i; ++k) start = line.find(' ', start) + 1;
  return line.substr(start, line.find(' ', start) - start);
}

std::string b64_encode(const std::string& in) {
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < in.size(); i += 3) {
    std::uint32_t v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    if (i + 2 < in.size()) v |= static_cast<unsigned char>(in[i + 2]);
    out += abc[(v >> 18) & 63];
    out += abc[(v >> 12) & 63];
    out += i + 1 < in.size() ? abc[(v >> 6) & 63] : '=';
    out += i + 2 < in.size() ? abc[v & 63] : '=';
  }
  return out;
}

std::string b64_decode(const std::string& in) {
  std::string out;
  std::uint32_t v = 0;
  int bits = 0;
  for (char c : in) {
    int d = c >= 'A' && c <= 'Z'   ? c - 'A'
            : c >= 'a' && c <= 'z' ? c - 'a' + 26
            : c >= '0' && c <= '9' ? c - '0' + 52
            : c == '+'             ? 62
            : c == '/'             ? 63
                                   : -1;
    if (d < 0) break;
    v = (v << 6) | static_cast<std::uint32_t>(d);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((v >> bits) & 0xff);
    }
  }
  return out;
}

// One SSH wire-format field: uint32 big-endian length, then the bytes.
std::string field(const std::string& data) {
  std::string out(4, '\0');
  const auto n = static_cast<std::uint32_t>(data.size());
  for (int i = 0; i < 4; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>(n >> (24 - 8 * i));
  return out + data;
}

// The fields of a key blob (base64 in a .pub line).
std::vector<std::string> fields_of(const std::string& b64) {
  std::string blob = b64_decode(b64);
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i + 4 <= blob.size()) {
    std::uint32_t n = 0;
    for (int k = 0; k < 4; ++k) n = (n << 8) | static_cast<unsigned char>(blob[i + static_cast<std::size_t>(k)]);
    out.push_back(blob.substr(i + 4, n));
    i += 4 + n;
  }
  return out;
}

std::string blob(const std::vector<std::string>& fields) {
  std::string out;
  for (const auto& f : fields) out += field(f);
  return b64_encode(out);
}

}  // namespace

// Real keys of every type ssh-keygen makes pass, alone, with a comment or without,
// after authorized_keys options, and for [[users]] too.
TEST(SshKeys, KeysFromSshKeygenPass) {
  RPI_REQUIRE_TOOL("ssh-keygen");
  test::TempDir dir;
  const std::vector<std::vector<std::string>> types = {{"-t", "ed25519"},
                                                       {"-t", "rsa", "-b", "3072"},
                                                       {"-t", "rsa", "-b", "1024"},
                                                       {"-t", "ecdsa", "-b", "256"},
                                                       {"-t", "ecdsa", "-b", "384"},
                                                       {"-t", "ecdsa", "-b", "521"}};
  for (const auto& t : types) {
    const std::string pub = generate(dir, t);
    SCOPED_TRACE(pub);
    ASSERT_TRUE(openssh_reads(dir, pub));
    EXPECT_EQ(key_error(pub), "");
    EXPECT_EQ(key_error(word(pub, 0) + " " + word(pub, 1)), "") << "without a comment";
    EXPECT_EQ(key_error(pub + " and more words"), "");
    EXPECT_EQ(key_error("\t " + pub), "") << "leading blanks";
    const std::string with_options =
        "from=\"10.0.0.0/8,192.168.1.*\",command=\"echo \\\"hi there\\\"\",no-pty,No-Agent-Forwarding,restrict " + pub;
    ASSERT_TRUE(openssh_reads(dir, with_options));
    EXPECT_EQ(key_error(with_options), "");
    // sshd's own spellings (auth-options.c): no-verify-required, and a backslash
    // that escapes only a quote, so a value may end in one.
    EXPECT_EQ(key_error("no-verify-required,verify-required " + pub), "");
    EXPECT_EQ(key_error("command=\"echo a\\b\" " + pub), "") << "a backslash before a letter is itself";
    EXPECT_NE(key_error("command=\"echo a\\\\\" " + pub).find("unterminated quote"), std::string::npos)
        << "\\\\\" is a backslash and an escaped quote for sshd: the value goes on";
  }
  const std::string ed = generate(dir, {"-t", "ed25519"});
  auto spec = parse_spec(
      "[system]\nhostname = \"pi\"\n[[users]]\nname = \"me\"\nadmin = true\nssh_authorized_keys = ['" + ed + "']\n",
      "t.toml", ".");
  EXPECT_EQ(resolve_host(spec, 1).users.at(0).ssh_authorized_keys.at(0), ed);
}

// Security-key (FIDO) keys need a token to make, so they are assembled from real
// keys' fields, the way OpenSSH lays them out; ssh-keygen reads them.
TEST(SshKeys, SecurityKeysPass) {
  RPI_REQUIRE_TOOL("ssh-keygen");
  test::TempDir dir;
  auto ed = fields_of(word(generate(dir, {"-t", "ed25519"}), 1));
  auto ec = fields_of(word(generate(dir, {"-t", "ecdsa", "-b", "256"}), 1));
  ASSERT_EQ(ed.size(), 2u);
  ASSERT_EQ(ec.size(), 3u);
  const std::string sk_ed = "sk-ssh-ed25519@openssh.com " + blob({"sk-ssh-ed25519@openssh.com", ed[1], "ssh:"}) + " k";
  const std::string sk_ec =
      "sk-ecdsa-sha2-nistp256@openssh.com " + blob({"sk-ecdsa-sha2-nistp256@openssh.com", ec[1], ec[2], "ssh:"}) + " k";
  for (const auto& line : {sk_ed, sk_ec}) {
    SCOPED_TRACE(line);
    ASSERT_TRUE(openssh_reads(dir, line));
    EXPECT_EQ(key_error(line), "");
  }
}

// What users paste by mistake is refused, with what is wrong and what to do, and
// OpenSSH refuses each of these lines too.
TEST(SshKeys, BrokenKeysAreRefusedAsOpenSshRefusesThem) {
  RPI_REQUIRE_TOOL("ssh-keygen");
  test::TempDir dir;
  const std::string ed = word(generate(dir, {"-t", "ed25519"}), 1);
  const std::string rsa = word(generate(dir, {"-t", "rsa", "-b", "2048"}), 1);
  const auto ec = fields_of(word(generate(dir, {"-t", "ecdsa", "-b", "256"}), 1));
  const auto edf = fields_of(ed);
  const auto rsaf = fields_of(rsa);
  std::string small_n = "\x00\xc0"s;  // a 512-bit modulus: positive, top bit set
  small_n.resize(65, '\x5a');
  std::string compressed = ec[2].substr(0, 33);
  compressed[0] = '\x02';

  struct Sample {
    std::string line, message;
  };
  const std::vector<Sample> samples = {
      {"ssh-ed25519 AAAA... me@laptop",
       "is a placeholder (AAAA...), not a key: replace it with your public key, the whole line of "
       "~/.ssh/id_ed25519.pub"},
      {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI\u2026 me@laptop", "is a placeholder"},
      {"ssh-ed25519 !!!notbase64 me",
       "is not a public key: its base64 does not decode (paste the whole line of ~/.ssh/id_ed25519.pub)"},
      {"ssh-ed25519 " + ed.substr(0, ed.size() - 1), "its base64 does not decode"},
      {"ssh-ed25519 " + ed.substr(0, ed.size() - 8),
       "is not a valid ssh-ed25519 key: its key data is cut short (paste the whole line of ~/.ssh/id_ed25519.pub)"},
      {"ssh-ed25519 AAAA", "is not a public key: its key data is cut short"},
      {"ssh-rsa " + ed + " me@laptop",
       "says ssh-rsa but holds an ssh-ed25519 key (write ssh-ed25519 before the base64, or paste the whole line of "
       "the key's .pub file)"},
      {"ssh-ed25519 " + rsa, "says ssh-ed25519 but holds an ssh-rsa key"},
      {"ecdsa-sha2-nistp384 " + blob(ec), "says ecdsa-sha2-nistp384 but holds an ecdsa-sha2-nistp256 key"},
      {"ecdsa-sha2-nistp256 " + blob({ec[0], "nistp384", ec[2]}),
       "says ecdsa-sha2-nistp256 but holds a key on the curve nistp384"},
      {"ecdsa-sha2-nistp256 " + blob({ec[0], ec[1], compressed}),
       "is not a valid ecdsa-sha2-nistp256 key: its public point is not the 65-byte uncompressed form OpenSSH reads"},
      {"ssh-ed25519 " + blob({edf[0], edf[1].substr(0, 31)}),
       "is not a valid ssh-ed25519 key: its key is 31 bytes, not 32 (paste the whole line of ~/.ssh/id_ed25519.pub)"},
      {"ssh-ed25519 " + blob({edf[0], edf[1], "x"}), "is not a valid ssh-ed25519 key: 5 bytes follow the key"},
      {"ssh-rsa " + blob({rsaf[0], rsaf[1], small_n}),
       "is an RSA key of 512 bits, which OpenSSH refuses (it needs at least 1024): make a new key with ssh-keygen -t "
       "ed25519"},
      {"ssh-rsa " + blob({rsaf[0], rsaf[1], "\x80"s + rsaf[2].substr(1)}),
       "is not a valid ssh-rsa key: its modulus is negative"},
      {"ssh-rsa SGVsbG8gd29ybGQh", "is not a public key: its key data does not begin with a key type"},
      {"ssh-ed2519 " + ed + " me", "has an unknown key type \"ssh-ed2519\" (did you mean \"ssh-ed25519\"?)"},
      {"SSH-ED25519 " + ed + " me", "(did you mean \"ssh-ed25519\"?)"},
      {"ssh-ed448 " + ed, "has an unknown key type \"ssh-ed448\""},
      {ed + " me@laptop", "has no key type before its base64 (paste the whole line of ~/.ssh/id_ed25519.pub"},
      {"ssh-ed25519", "has no key after ssh-ed25519 (paste the whole line of ~/.ssh/id_ed25519.pub)"},
      {"ecdsa-sha2-nistp521 ", "has no key after ecdsa-sha2-nistp521 (paste the whole line of ~/.ssh/id_ecdsa.pub)"},
      {"me@laptop", "is not an OpenSSH public key (TYPE BASE64 [COMMENT]): paste the whole line of"},
      {"", "is empty"},
      {"# my laptop", "is a comment, not a key"},
      {"from=\"10.0.0.1 ssh-ed25519 " + ed, "has options with an unterminated quote before the key"},
      {"no-pty", "has options but no key after them"},
  };
  for (const auto& s : samples) {
    SCOPED_TRACE(s.line);
    const std::string e = key_error(s.line);
    EXPECT_TRUE(has(e, "t.toml:4:24: [root].ssh_authorized_keys entry ")) << e;
    EXPECT_TRUE(has(e, s.message)) << e;
    EXPECT_FALSE(openssh_reads(dir, s.line)) << "OpenSSH reads what we refuse";
  }
}

// DSA: OpenSSH 10 dropped it and sshd has refused it by default since 7.0, but
// older ssh-keygen still prints its fingerprint, so it is no oracle here.
TEST(SshKeys, DsaKeysAreRefused) {
  const std::string dss = "ssh-dss " + blob({"ssh-dss", "\x01"s, "\x01"s, "\x01"s, "\x01"s}) + " old@box";
  EXPECT_TRUE(has(key_error(dss),
                  "entry is a DSA key (ssh-dss), which OpenSSH no longer accepts: make an Ed25519 key with "
                  "ssh-keygen -t ed25519 and paste the whole line of ~/.ssh/id_ed25519.pub"))
      << key_error(dss);
}

// sshd ignores a key whose options it does not know (sshd(8), AUTHORIZED_KEYS FILE
// FORMAT); ssh-keygen -l does not check options, so these have no oracle.
TEST(SshKeys, UnknownOrMalformedOptionsAreRefused) {
  const std::string key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPFB/Vl9sFnNdTSfmBzkZeynL0bzqkfdIQgPpCubXwqV me@laptop";
  EXPECT_EQ(key_error(key), "");
  EXPECT_EQ(key_error("cert-authority,principals=\"a,b\",expiry-time=\"20300101\",tunnel=\"1\",permitopen=\"h:22\","
                      "permitlisten=\"8080\",environment=\"A=b c\",no-touch-required,verify-required,"
                      "port-forwarding,x11-forwarding,user-rc,pty,agent-forwarding,no-user-rc,no-X11-forwarding " +
                      key),
            "");
  EXPECT_TRUE(has(key_error("no-ptty " + key),
                  "has an unknown option \"no-ptty\" before the key, so sshd would ignore the key (did you mean "
                  "\"no-pty\"?)"))
      << key_error("no-ptty " + key);
  EXPECT_TRUE(has(key_error("from=10.0.0.1 " + key), "has the option from without a quoted value (write from=\"...\")"))
      << key_error("from=10.0.0.1 " + key);
  EXPECT_TRUE(has(key_error("restrict=\"1\" " + key), "has the option restrict with a value, which it does not take"));
  EXPECT_TRUE(has(key_error("no-pty,,restrict " + key), "has an empty option before the key"));
  EXPECT_TRUE(has(key_error("from=\"a\"no-pty " + key), "has options that are not separated by commas"));
  EXPECT_TRUE(has(key_error("no-restrict " + key), "has an unknown option \"no-restrict\""));
}

// One key per entry; a line break would make a second authorized_keys line.
TEST(SshKeys, OneLinePerEntry) {
  const std::string key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPFB/Vl9sFnNdTSfmBzkZeynL0bzqkfdIQgPpCubXwqV";
  try {
    parse_spec("[system]\nhostname = \"pi\"\n[root]\nssh_authorized_keys = [\"" + key + "\\n" + key + "\"]\n", "t.toml",
               ".");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "entry must be one line (one key per array entry)")) << e.what();
  }
}

// The README's first spec shows a placeholder key: copied as it is, it gets the
// placeholder message, not a Pi nobody can log into.
TEST(SshKeys, TheReadmeExampleKeyIsAPlaceholderOrReal) {
  const std::string readme = test::read_file(test::source_dir() / "README.md");
  const auto key_at = readme.find("ssh_authorized_keys = [");
  ASSERT_NE(key_at, std::string::npos);
  const auto start = readme.rfind("```toml\n", key_at) + 8, end = readme.find("```", key_at);
  const std::string spec = readme.substr(start, end - start);
  const bool placeholder = has(spec, "AAAA...") || has(spec, "AAAA\u2026");
  ::setenv("WIFI_PSK", "correct horse battery staple", 1);
  try {
    parse_spec(spec, "README.toml", ".");
    EXPECT_FALSE(placeholder) << "the placeholder key passes the check";
  } catch (const Error& e) {
    EXPECT_TRUE(placeholder) << e.what();
    EXPECT_TRUE(has(e.what(), "ssh_authorized_keys entry is a placeholder (AAAA...), not a key")) << e.what();
  }
  ::unsetenv("WIFI_PSK");
}
