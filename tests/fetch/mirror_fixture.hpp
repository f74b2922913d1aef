// A generated Alpine-like mirror tree served by tests/fetch/mirror_server.py on
// 127.0.0.1 (random free port), with switchable faults and a request log.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "fetch/fetch.hpp"
#include "rpi/error.hpp"
#include "test_support.hpp"

namespace rpi::test {

// Builds <dir>/mirror with 3.22.2 (listed in the v3.22 index, and as
// latest-stable) and 3.22.1 (companions only), from two fixture tarballs.
struct MirrorTree {
  explicit MirrorTree(const std::filesystem::path& dir);
  std::filesystem::path root;
  std::filesystem::path latest;  // the 3.22.2 tarball in the tree
  std::filesystem::path older;   // the 3.22.1 tarball
  std::string latest_file = "alpine-rpi-3.22.2-aarch64.tar.gz";
  std::string older_file = "alpine-rpi-3.22.1-aarch64.tar.gz";
};

struct LogEntry {
  std::string path, range, if_range, user_agent;
  int status = 0;
  std::uint64_t sent = 0;
  int client_port = 0;  // the client's end of the TCP connection: equal ports = one connection
};

class MirrorServer {
 public:
  // tls: serve HTTPS with `cert`/`key`. autoindex: "nginx", "apache" or
  // "lighttpd" answers folders with that server's HTML listing; empty: 404.
  MirrorServer(const std::filesystem::path& root, const std::filesystem::path& state_dir,
               const std::filesystem::path& cert = {}, const std::filesystem::path& key = {},
               const std::string& autoindex = {});
  ~MirrorServer();
  MirrorServer(const MirrorServer&) = delete;
  MirrorServer& operator=(const MirrorServer&) = delete;

  std::string url() const;  // http(s)://127.0.0.1:PORT
  int port() const { return port_; }
  // Replaces the fault list (JSON array, see mirror_server.py).
  void set_faults(const std::string& json);
  std::vector<LogEntry> log() const;
  // Requests whose path contains `needle`, and the body bytes sent for them.
  int requests(const std::string& needle) const;
  std::uint64_t bytes_sent(const std::string& needle) const;

 private:
  std::filesystem::path state_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool tls_ = false;
};

// A throwaway CA and a server certificate for 127.0.0.1 made with the openssl CLI.
struct TestPki {
  explicit TestPki(const std::filesystem::path& dir);
  std::filesystem::path ca_cert, server_cert, server_key;
  bool ok = false;
  std::string error;
};

// A throwaway OpenPGP key in a temp GNUPGHOME made with the gpg CLI.
struct TestGpg {
  explicit TestGpg(const std::filesystem::path& dir, const std::string& name = "Test Signer");
  ~TestGpg();
  // Writes an armoured detached signature of `file` to `out`.
  bool sign(const std::filesystem::path& file, const std::filesystem::path& out) const;
  std::filesystem::path home, keyring;  // keyring: exported public key (armoured)
  std::string fingerprint;
  bool ok = false;
  std::string error;
};

// Runs `f`, expects an rpi::Error of `code`, returns its message.
template <class F>
std::string error_of(F&& f, Errc code) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(errc_name(e.code()), std::string(errc_name(code))) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error thrown";
  return {};
}

inline bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

// Regular files under `dir` (recursively) whose name ends with `ext`.
inline std::size_t count_files(const std::filesystem::path& dir, const std::string& ext) {
  std::size_t n = 0;
  if (!std::filesystem::exists(dir)) return 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().string().ends_with(ext)) ++n;
  return n;
}

// The sha256sum of `p` (an independent oracle: coreutils, not our digests).
inline std::string sha256_of(const std::filesystem::path& p) {
  CommandResult r = run({"sha256sum", p.string()});
  return r.out.substr(0, r.out.find(' '));
}

// What most fetch tests start from: a mirror tree in a temporary folder, a
// server on demand, a cache folder, and every event the library emitted.
class MirrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_tool("python3")) GTEST_SKIP() << "tool not installed: python3 (runs the test mirror)";
    RPI_REQUIRE_TOOL("sha256sum");
    tree = std::make_unique<MirrorTree>(tmp.path());
    cache = tmp / "cache";
  }
  // Quick retries; events recorded in `events`.
  fetch::Options opts() {
    fetch::Options o;
    o.cache_dir = cache;
    o.retries = 3;
    o.retry_delay = std::chrono::milliseconds(10);
    o.events = [this](const Event& e) {
      std::lock_guard lock(mu);
      events.push_back(e);
    };
    return o;
  }
  MirrorServer& serve() {
    server = std::make_unique<MirrorServer>(tree->root, tmp / "state");
    return *server;
  }
  fetch::Query query_on(const std::string& version, std::vector<std::string> mirrors) {
    fetch::Query q;
    q.version = version;
    q.mirrors = std::move(mirrors);
    return q;
  }
  fetch::Query query(const std::string& version, const std::string& mirror) { return query_on(version, {mirror}); }
  // The messages of the recorded events of `type` that contain `needle`.
  std::vector<std::string> said(const std::string& type, const std::string& needle) {
    std::lock_guard lock(mu);
    std::vector<std::string> out;
    for (const auto& e : events)
      if (e.type == type && contains(e.message, needle)) out.push_back(e.message);
    return out;
  }
  // Every recorded event, one "type: message" per line (for failure messages).
  std::string said_all() {
    std::lock_guard lock(mu);
    std::string out;
    for (const auto& e : events) out += e.type + ": " + e.message + "\n";
    return out;
  }

  TempDir tmp;
  std::unique_ptr<MirrorTree> tree;
  std::unique_ptr<MirrorServer> server;
  std::filesystem::path cache;
  std::mutex mu;
  std::vector<Event> events;
};

// MirrorTest with a throwaway OpenPGP key; signed_opts() asks for the
// signature check and pins that key's fingerprint.
class SignedMirrorTest : public MirrorTest {
 protected:
  void SetUp() override {
    MirrorTest::SetUp();
    if (IsSkipped()) return;
    RPI_REQUIRE_TOOL("gpg");
    gpg = std::make_unique<TestGpg>(tmp / "gpg");
    if (!gpg->ok) GTEST_SKIP() << "cannot make a throwaway gpg key: " << gpg->error;
  }
  fetch::Options signed_opts() {
    fetch::Options o = opts();
    o.verify_signature = true;
    o.keyring = gpg->keyring;
    o.signing_key_fingerprint = gpg->fingerprint;
    return o;
  }
  std::unique_ptr<TestGpg> gpg;
};

}  // namespace rpi::test
