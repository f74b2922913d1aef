#include "test_support.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace rpi::test {

CommandResult run(const std::vector<std::string>& argv, const std::string& input) {
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) || pipe2(out_pipe, O_CLOEXEC) || pipe2(err_pipe, O_CLOEXEC))
    throw std::runtime_error("pipe failed");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in_pipe[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  CommandResult r;
  if (rc != 0) {
    close(in_pipe[1]);
    close(out_pipe[0]);
    close(err_pipe[0]);
    r.exit_code = 127;
    r.err = "cannot run " + argv[0];
    return r;
  }
  std::size_t written = 0;
  if (input.empty()) {
    close(in_pipe[1]);
    in_pipe[1] = -1;
  } else {
    fcntl(in_pipe[1], F_SETFL, O_NONBLOCK);
  }
  bool out_open = true, err_open = true;
  char buf[65536];
  while (out_open || err_open) {
    std::vector<pollfd> fds;
    if (out_open) fds.push_back({out_pipe[0], POLLIN, 0});
    if (err_open) fds.push_back({err_pipe[0], POLLIN, 0});
    if (in_pipe[1] >= 0) fds.push_back({in_pipe[1], POLLOUT, 0});
    if (poll(fds.data(), fds.size(), -1) < 0) continue;
    for (auto& p : fds) {
      if (!p.revents) continue;
      if (p.fd == in_pipe[1]) {
        ssize_t n = write(in_pipe[1], input.data() + written, input.size() - written);
        if (n > 0) written += static_cast<std::size_t>(n);
        if (n < 0 || written == input.size()) {
          close(in_pipe[1]);
          in_pipe[1] = -1;
        }
        continue;
      }
      ssize_t n = read(p.fd, buf, sizeof buf);
      if (n <= 0) {
        if (p.fd == out_pipe[0])
          out_open = false;
        else
          err_open = false;
        continue;
      }
      (p.fd == out_pipe[0] ? r.out : r.err).append(buf, static_cast<std::size_t>(n));
    }
  }
  if (in_pipe[1] >= 0) close(in_pipe[1]);
  close(out_pipe[0]);
  close(err_pipe[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

CommandResult sh(const std::string& command) {
  return run({"/bin/sh", "-c", command});
}

CommandResult cli(const std::vector<std::string>& args, const std::string& input) {
  std::vector<std::string> argv{cli_path().string()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, input);
}

std::uint64_t sectors_read(const std::string& dev) {
  std::ifstream in("/sys/block/" + std::filesystem::path(dev).filename().string() + "/stat");
  std::uint64_t ios = 0, merges = 0, sectors = 0;
  in >> ios >> merges >> sectors;
  return sectors;
}

bool have_tool(const std::string& tool) {
  if (tool.find('/') != std::string::npos) return access(tool.c_str(), X_OK) == 0;
  return sh("command -v '" + tool + "' >/dev/null 2>&1").exit_code == 0;
}

TempDir::TempDir() {
  std::filesystem::path base = binary_dir() / "test-tmp";
  std::filesystem::create_directories(base);
  std::string pattern = (base / "t-XXXXXX").string();
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::filesystem::path source_dir() {
  return RPI_SOURCE_DIR;
}
std::filesystem::path binary_dir() {
  return RPI_BINARY_DIR;
}
std::filesystem::path cli_path() {
  return RPI_CLI;
}

std::filesystem::path fixture_tarball(const std::vector<std::string>& args) {
  std::string key = "fixture";
  for (const auto& a : args) {
    key += "_";
    for (char c : a) key += std::isalnum(static_cast<unsigned char>(c)) ? c : '-';
  }
  std::filesystem::path dir = binary_dir() / "fixtures";
  std::filesystem::create_directories(dir);
  std::filesystem::path out = dir / (key + ".tar.gz");
  if (std::filesystem::exists(out)) return out;
  std::filesystem::path tmp = out;
  tmp += ".tmp" + std::to_string(getpid());
  std::vector<std::string> argv{(source_dir() / "scripts" / "make-fixture-tarball").string(), "--output", tmp.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = run(argv);
  if (r.exit_code != 0) throw std::runtime_error("make-fixture-tarball failed: " + r.err);
  std::filesystem::rename(tmp, out);
  return out;
}

std::vector<std::string> without_leak_check(std::vector<std::string> argv) {
  const char* now = std::getenv("ASAN_OPTIONS");
  std::string options = "ASAN_OPTIONS=";
  if (now && *now) options += std::string(now) + ":";
  argv.insert(argv.begin(), {"env", options + "detect_leaks=0"});
  return argv;
}

std::string shell_quoted(const std::filesystem::path& p) {
  std::string out = "'";
  for (char c : p.string()) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string files_under(const std::filesystem::path& dir) {
  std::string out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) out += e.path().string() + "\n";
  return out;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::filesystem::path& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write " + p.string());
  out << data;
}

// The mapped block ranges of a .bmap file, [first, last] in 4 KiB blocks.
std::vector<std::pair<std::uint64_t, std::uint64_t>> bmap_ranges(const std::filesystem::path& bmap) {
  const std::string xml = read_file(bmap);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  const std::regex range(R"(<Range[^>]*>\s*(\d+)(?:\s*-\s*(\d+))?\s*</Range>)");
  for (std::sregex_iterator it(xml.begin(), xml.end(), range), end; it != end; ++it) {
    const std::uint64_t a = std::stoull((*it)[1]);
    out.emplace_back(a, (*it)[2].matched ? std::stoull((*it)[2]) : a);
  }
  return out;
}

}  // namespace rpi::test
