#include "mirror_fixture.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace rpi::test {

namespace fs = std::filesystem;

using rpi::test::shell_quoted;

namespace {
fs::path script(const char* name) {
  return source_dir() / "tests" / "fetch" / name;
}
}  // namespace

MirrorTree::MirrorTree(const fs::path& dir) : root(dir / "mirror") {
  fs::path a = fixture_tarball({"--size-mb", "2", "--version", "3.22.2"});
  fs::path b = fixture_tarball({"--size-mb", "1", "--version", "3.22.1", "--seed", "7"});
  CommandResult r = run({"python3", script("make_mirror.py").string(), "--root", root.string(), "--release",
                         "3.22.2=" + a.string(), "--release", "3.22.1=" + b.string(), "--apkindex"});
  if (r.exit_code != 0) throw std::runtime_error("make_mirror.py failed: " + r.err);
  latest = root / "v3.22/releases/aarch64" / latest_file;
  older = root / "v3.22/releases/aarch64" / older_file;
}

MirrorServer::MirrorServer(const fs::path& root, const fs::path& state_dir, const fs::path& cert, const fs::path& key,
                           const std::string& autoindex)
    : state_(state_dir), tls_(!cert.empty()) {
  fs::create_directories(state_);
  std::vector<std::string> argv{"python3",      script("mirror_server.py").string(), "--root", root.string(), "--state",
                                state_.string()};
  if (tls_) {
    argv.insert(argv.end(), {"--cert", cert.string(), "--key", key.string()});
  }
  if (!autoindex.empty()) argv.insert(argv.end(), {"--autoindex", autoindex});
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  std::string logfile = (state_ / "server.stderr").string();
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, logfile.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  int rc = posix_spawnp(&pid_, "python3", &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot start mirror_server.py");
  // Wait for the port file (the server writes it once it listens).
  for (int i = 0; i < 3000; ++i) {
    if (fs::exists(state_ / "port")) {
      port_ = std::stoi(read_file(state_ / "port"));
      return;
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("mirror_server.py exited: " + read_file(logfile));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw std::runtime_error("mirror_server.py did not start listening");
}

MirrorServer::~MirrorServer() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
}

std::string MirrorServer::url() const {
  return std::string(tls_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_);
}

void MirrorServer::set_faults(const std::string& json) {
  write_file(state_ / "faults.json.tmp", json);
  fs::rename(state_ / "faults.json.tmp", state_ / "faults.json");
}

std::vector<LogEntry> MirrorServer::log() const {
  // A client may see the whole response before the server has logged it: wait
  // until no request is in flight (a stalled trickle ends within ~1 s).
  for (int i = 0; i < 1000; ++i) {
    if (fs::exists(state_ / "active") && read_file(state_ / "active") == "0") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::vector<LogEntry> out;
  if (!fs::exists(state_ / "log.jsonl")) return out;
  std::istringstream in(read_file(state_ / "log.jsonl"));
  std::string line;
  // The server writes json.dumps() lines: "key": "text" or "key": number.
  auto field = [](const std::string& l, const std::string& key) {
    std::size_t at = l.find("\"" + key + "\": ");
    return at == std::string::npos ? std::string::npos : at + key.size() + 4;
  };
  auto str = [&](const std::string& l, const std::string& key) {
    std::size_t at = field(l, key);
    std::string text;
    if (at == std::string::npos || l[at] != '"') return text;
    for (std::size_t i = at + 1; i < l.size() && l[i] != '"'; ++i) {
      if (l[i] == '\\' && i + 1 < l.size()) ++i;  // \" and \\ escapes
      text += l[i];
    }
    return text;
  };
  auto num = [&](const std::string& l, const std::string& key) {
    std::size_t at = field(l, key);
    return at == std::string::npos ? 0ull : std::strtoull(l.c_str() + at, nullptr, 10);
  };
  while (std::getline(in, line)) {
    LogEntry e;
    e.path = str(line, "path");
    e.range = str(line, "range");
    e.if_range = str(line, "if_range");
    e.user_agent = str(line, "user_agent");
    e.status = static_cast<int>(num(line, "status"));
    e.sent = num(line, "sent");
    e.client_port = static_cast<int>(num(line, "client_port"));
    out.push_back(e);
  }
  return out;
}

int MirrorServer::requests(const std::string& needle) const {
  int n = 0;
  for (const auto& e : log())
    if (e.path.find(needle) != std::string::npos) ++n;
  return n;
}

std::uint64_t MirrorServer::bytes_sent(const std::string& needle) const {
  std::uint64_t n = 0;
  for (const auto& e : log())
    if (e.path.find(needle) != std::string::npos) n += e.sent;
  return n;
}

TestPki::TestPki(const fs::path& dir) {
  fs::create_directories(dir);
  ca_cert = dir / "ca.pem";
  server_cert = dir / "server.pem";
  server_key = dir / "server.key";
  fs::path ext = dir / "ext.cnf";
  write_file(ext,
             "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
             "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n");
  std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  std::string cmd = "set -e; cd " + shell_quoted(dir) + "; openssl req -x509 " + ec +
                    " -keyout ca.key -out ca.pem -days 2 -subj '/CN=rpi-provision test CA'"
                    " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>&1;"
                    " openssl req " +
                    ec +
                    " -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>&1;"
                    " openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem"
                    " -days 2 -extfile ext.cnf 2>&1";
  CommandResult r = sh(cmd);
  ok = r.exit_code == 0;
  error = r.out + r.err;
}

TestGpg::TestGpg(const fs::path& dir, const std::string& name) {
  (void)dir;
  // gpg-agent's socket lives in the home; keep its path short (sun_path limit).
  std::string pattern = (fs::temp_directory_path() / "rpi-gpg-XXXXXX").string();
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) {
    error = "mkdtemp failed";
    return;
  }
  home = buf.data();
  keyring = home / "keyring.asc";
  std::string g = "gpg --homedir " + shell_quoted(home) + " --batch ";
  CommandResult r =
      sh(g + "--passphrase '' --quick-gen-key '" + name + " <signer@example.invalid>' ed25519 sign 1d 2>&1");
  if (r.exit_code != 0) {
    error = "gpg --quick-gen-key failed: " + r.out;
    return;
  }
  r = sh(g + "--with-colons --list-keys 2>/dev/null | awk -F: '$1==\"fpr\"{print $10; exit}'");
  fingerprint = r.out.substr(0, r.out.find('\n'));
  if (fingerprint.size() != 40) {
    error = "no fingerprint: " + r.out;
    return;
  }
  r = sh(g + "--armor --export " + fingerprint + " > " + shell_quoted(keyring));
  ok = r.exit_code == 0 && fs::file_size(keyring) > 0;
  if (!ok) error = "gpg --export failed";
}

bool TestGpg::sign(const fs::path& file, const fs::path& out) const {
  return sh("gpg --homedir " + shell_quoted(home) + " --batch --yes --pinentry-mode loopback --passphrase '' --armor " +
            "--detach-sign -o " + shell_quoted(out) + " " + shell_quoted(file) + " 2>&1")
             .exit_code == 0;
}

TestGpg::~TestGpg() {
  if (home.empty()) return;
  sh("gpgconf --homedir " + shell_quoted(home) + " --kill gpg-agent >/dev/null 2>&1");
  // The agent may still be removing its sockets as it exits: retry the removal.
  for (int i = 0; i < 100 && fs::exists(home); ++i) {
    std::error_code ec;
    fs::remove_all(home, ec);
    if (fs::exists(home)) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace rpi::test
