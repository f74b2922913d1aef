#include "app.hpp"

#include <archive.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <libfdisk.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <clocale>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <utility>

#include "rpi/atomic_file.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "rpi/size.hpp"

#ifndef RPI_VERSION
#define RPI_VERSION "0.0.0"
#endif

namespace rpi::cli {

namespace {
std::vector<std::pair<int, Registrar>>& registry() {
  static std::vector<std::pair<int, Registrar>> r;
  return r;
}

int exit_code_for(Errc code) {
  switch (code) {
    case Errc::usage:
    case Errc::spec:
      return 2;
    default:
      return 1;
  }
}
}  // namespace

CommandRegistration::CommandRegistration(int order, Registrar registrar) {
  registry().emplace_back(order, std::move(registrar));
}

void register_all(CLI::App& app, AppContext& ctx) {
  auto& r = registry();
  std::stable_sort(r.begin(), r.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [order, fn] : r) fn(app, ctx);
}

std::optional<std::int64_t> source_date_epoch() {
  const char* s = std::getenv("SOURCE_DATE_EPOCH");
  if (!s || !*s) return std::nullopt;
  char* end = nullptr;
  long long v = std::strtoll(s, &end, 10);
  if (*end || v < 0) throw Error(Errc::usage, "SOURCE_DATE_EPOCH='" + std::string(s) + "' is not a number of seconds");
  return v;
}

std::string read_regular_file(const std::string& path, std::size_t limit) {
  Fd fd = open_or_throw(path, O_RDONLY);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno("cannot read " + path);
  if (!S_ISREG(st.st_mode)) throw Error(Errc::input, path + " is not a regular file");
  std::string data;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("cannot read " + path);
    if (n == 0) break;
    data.append(buf, static_cast<std::size_t>(n));
    if (data.size() > limit) throw Error(Errc::input, path + " is larger than " + format_size(limit));
  }
  return data;
}

std::optional<std::string> read_seed_file(const std::string& path) {
  if (path.empty()) return std::nullopt;
  std::string seed;
  try {
    seed = read_regular_file(path, 64 << 10);  // /dev/zero read until memory ran out, a FIFO waited for ever
  } catch (const Error& e) {
    if (e.code() != Errc::input) throw Error(Errc::usage, std::string("--seed-file: ") + e.what());
    throw Error(Errc::usage,
                "--seed-file " + std::string(e.what()) +
                    "; a seed is a regular file of at least 16 random bytes: head -c 32 /dev/urandom > FILE");
  }
  if (seed.size() < 16) throw Error(Errc::usage, "--seed-file " + path + " must hold at least 16 bytes");
  return seed;
}

void note_leftovers(AppContext& ctx, const std::vector<std::string>& outputs) {
  for (const auto& out : outputs)
    for (const auto& t : out.empty() ? std::vector<std::filesystem::path>{} : leftover_temporaries(out)) {
      std::error_code ec;
      const auto size = std::filesystem::file_size(t, ec);
      ctx.reporter.note(t.string() + (ec ? "" : " (" + format_size(size) + ")") +
                        " was left by an interrupted run (killed, or a power cut) unless another rpi-provision is "
                        "writing " +
                        out + " now; it may hold secrets: remove it");
    }
}

std::vector<std::string> seed_file_warnings(const std::string& path, const std::optional<std::string>& seed) {
  std::vector<std::string> out;
  if (!seed) return out;
  std::set<unsigned char> values(seed->begin(), seed->end());
  if (values.size() < 8)
    out.push_back("--seed-file " + path + " holds only " + std::to_string(values.size()) +
                  (values.size() == 1 ? " byte value, repeated," : " different byte values,") +
                  " which is guessable, not random; whoever guesses it can derive every "
                  "card's SSH host keys: make one with head -c 32 /dev/urandom > " +
                  path);
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 044) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    out.push_back("--seed-file " + path + " can be read by other users (mode " + mode +
                  "), and whoever reads it can derive every card's SSH host keys and password salts: chmod 600 " +
                  path);
  }
  return out;
}

fetch::Options DownloadFlags::options(const EventSink& events) const {
  fetch::Options o;
  if (!cache_dir.empty()) o.cache_dir = cache_dir;
  o.offline = offline;
  o.ca_cert = ca_cert;
  o.verify_signature = verify_signature;
  o.keyring = keyring;
  o.signing_key_fingerprint = signing_key_fingerprint;
  o.events = events;
  return o;
}

void host_or_first(const std::string& host, const CLI::Option* first) {
  if (!host.empty() && first->count() > 0)
    throw Error(
        Errc::usage,
        "--host " + host + " picks a [[hosts]] entry by name and --first picks the card by number: give one of them");
}

void refuse_empty_size_or_label(const CLI::Option* size, const std::string& size_value, const CLI::Option* label,
                                const std::string& label_value) {
  if (size->count() && size_value.empty())
    throw Error(Errc::usage, "--size needs a size such as 1GiB; leave --size out for the automatic size");
  if (label->count() && label_value.empty())
    throw Error(Errc::usage,
                "--label needs a name (up to 11 characters); leave --label out for [boot].label or ALPINE");
}

std::function<std::string(const std::string&)> at_least_one(const std::string& what) {
  return [what](const std::string& v) -> std::string {
    if (!v.empty() && v.size() <= 6 && v.find_first_not_of("0123456789") == std::string::npos && std::stoi(v) > 0)
      return "";
    return "'" + v.substr(0, 20) + "' is not " + what + " (1 or more)";
  };
}

void add_download_flags(CLI::App& app, DownloadFlags& f, const std::string& group, bool signature) {
  app.add_option("--mirror", f.mirrors,
                 "Alpine mirror root (https://, http://, file:// or a folder); repeat to add fallbacks")
      ->group(group);
  app.add_option("--cache-dir", f.cache_dir, "download cache (default $XDG_CACHE_HOME/rpi-provision)")->group(group);
  app.add_flag("--offline", f.offline, "never use the network: only the cache (and mirrors that are local folders)")
      ->group(group);
  app.add_option("--ca-cert", f.ca_cert, "extra CA certificate (PEM) for a private HTTPS mirror")->group(group);
  if (!signature) return;
  app.add_flag("--verify-signature", f.verify_signature, "check the tarball's GPG signature (needs --keyring)")
      ->group(group);
  app.add_option("--keyring", f.keyring, "OpenPGP public key file for --verify-signature")->group(group);
  app.add_option("--signing-key-fingerprint", f.signing_key_fingerprint,
                 std::string("accept this signer instead of Alpine's ") + fetch::kAlpineSigningKey)
      ->group(group);
}

namespace {
// The same file: the same device and inode when both exist (through symbolic
// and hard links), else the same absolute path once normalized.
bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {
  }, sb{};
  if (::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0)
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  std::error_code ea, eb;
  const std::filesystem::path pa = std::filesystem::weakly_canonical(std::filesystem::absolute(a, ea), ea);
  const std::filesystem::path pb = std::filesystem::weakly_canonical(std::filesystem::absolute(b, eb), eb);
  return !ea && !eb && pa.lexically_normal() == pb.lexically_normal();
}
}  // namespace

std::vector<RunFile> run_inputs(const overlay::Spec* spec,
                                const std::vector<std::pair<std::string, std::string>>& given) {
  std::vector<RunFile> in;
  for (const auto& [flag, path] : given)
    if (!path.empty()) in.push_back({"given as " + flag, path});
  if (spec) {
    const std::string& tb = spec->alpine().tarball;
    if (!tb.empty() && tb.find("://") == std::string::npos) in.push_back({"[alpine].tarball names", tb});
    for (const auto& f : spec->files_read()) in.push_back({f.entry + " reads", f.path.string()});
  }
  return in;
}

void refuse_overwriting_inputs(const std::vector<RunFile>& outputs, const std::vector<RunFile>& inputs) {
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const RunFile& out = outputs[i];
    if (out.path.empty()) continue;
    for (const RunFile& in : inputs)
      if (same_file(out.path, in.path))
        throw Error(Errc::usage, out.what + " is the file " + in.what + "; choose another name");
    for (std::size_t k = 0; k < i; ++k)
      if (!outputs[k].path.empty() && same_file(out.path, outputs[k].path))
        throw Error(Errc::usage, out.what + " is also written as " + outputs[k].what + "; choose another name");
  }
}

KnownHostsUpdate::KnownHostsUpdate(std::string path, const std::vector<std::string>& lines, bool merge)
    : path_(std::move(path)) {
  if (lines.empty()) {
    // A replaced file belongs to its image: keys of an earlier build must not outlive it.
    remove_ = !merge;
    return;
  }
  std::string text;
  struct stat st {};
  // Checked before reading: merging from a FIFO would block, and AtomicFile refuses it anyway.
  if (::stat(path_.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    throw Error(Errc::usage,
                "the known_hosts file " + path_ + " exists and is not a regular file; choose another name");
  if (merge) {
    std::set<std::string> hosts;
    for (const auto& l : lines) hosts.insert(l.substr(0, l.find(' ')));
    std::ifstream in(path_);
    for (std::string line; std::getline(in, line);)
      if (!line.empty() && (line[0] == '#' || !hosts.count(line.substr(0, line.find(' '))))) text += line + "\n";
  }
  for (const auto& l : lines) text += l + "\n";
  try {
    file_ = std::make_unique<AtomicFile>(path_, 0644, merge ? Permissions::keep_existing : Permissions::given);
    write_all(file_->fd(), text.data(), text.size(), "cannot write " + path_);
  } catch (const Error& e) {
    throw Error(e.code(), "cannot write the known_hosts file " + path_ + ": " + e.what());
  }
}

KnownHostsUpdate::~KnownHostsUpdate() = default;

void KnownHostsUpdate::commit(AppContext& ctx) {
  if (file_) {
    try {
      file_->commit();
    } catch (const Error& e) {
      throw Error(e.code(), "cannot write the known_hosts file " + path_ + ": " + e.what());
    }
    file_.reset();
    ctx.reporter.note("known_hosts lines written to " + path_ + " (no trust-on-first-use needed)");
  } else if (remove_) {
    std::error_code ec;
    if (std::filesystem::remove(path_, ec))
      ctx.reporter.note("removed " + path_ + ": this build generated no SSH host keys");
    remove_ = false;
  }
}

void write_known_hosts(AppContext& ctx, const std::string& path, const std::vector<std::string>& lines, bool merge) {
  KnownHostsUpdate(path, lines, merge).commit(ctx);
}

std::string hex32(std::uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", v);
  return b;
}

std::string version_text() {
  std::string s = std::string("rpi-provision ") + RPI_VERSION + "\n";
  s += std::string(archive_version_details()) + "\n";
  s += std::string("libcurl ") + curl_version_info(CURLVERSION_NOW)->version + "\n";
  const char* fdisk_ver = nullptr;
  fdisk_get_library_version(&fdisk_ver);
  s += std::string("libfdisk ") + (fdisk_ver ? fdisk_ver : "?");
  return s;
}

namespace {

// Started with stdin, stdout or stderr closed (`>&-`), the first files the run
// opens would become fds 0-2: progress text would be written into an image or
// onto a card. Each closed one is pointed at /dev/null; returns which were.
std::array<bool, 3> reserve_standard_fds() {
  std::array<bool, 3> closed{};
  for (int fd = 0; fd < 3; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    closed[static_cast<std::size_t>(fd)] = true;
    int n = ::open("/dev/null", (fd == 0 ? O_RDONLY : O_WRONLY) | O_CLOEXEC);
    if (n >= 0 && n != fd) {
      ::dup2(n, fd);  // without O_CLOEXEC: fds 0-2 stay open across exec
      ::close(n);
    } else if (n == fd) {
      ::fcntl(fd, F_SETFD, 0);
    }
  }
  return closed;
}

// A run whose results could not be printed failed, whatever it wrote: a
// script reading the image's path or the known_hosts lines got nothing.
int checked_exit(AppContext& ctx, int code) {
  if (int err = ctx.reporter.output_error()) {
    // EPIPE: the reader quit on purpose (`| head`); SIGPIPE already set the code.
    if (err != EPIPE)
      std::fprintf(stderr, "rpi-provision: error: cannot write to standard output: %s\n", std::strerror(err));
    if (code == 0) code = 1;
  }
  return code;
}

}  // namespace

int run(int argc, char** argv) {
  const std::array<bool, 3> closed = reserve_standard_fds();
  // libarchive returns UTF-8 path names only under a UTF-8 locale (tech-brief §6.1).
  if (!std::setlocale(LC_CTYPE, "C.UTF-8")) std::setlocale(LC_CTYPE, "");
  // Ctrl-C while an image or apkovl is being written leaves no hidden temporary behind.
  remove_temporaries_on_signals();

  AppContext ctx;
  if (closed[1]) ctx.reporter.stdout_was_closed();
  CLI::App app{
      "rpi-provision — turn a TOML spec into ready-to-boot Raspberry Pi SD cards running Alpine Linux "
      "diskless.",
      "rpi-provision"};
  app.set_version_flag("--version", version_text());
  const std::set<const CLI::Option*> everywhere = {
      app.add_flag("--json", ctx.json, "JSON Lines events on stdout (progress, results, errors)")->group("Output"),
      app.add_flag("-q,--quiet", ctx.quiet, "no progress output and no notes (warnings and errors are still printed)")
          ->group("Output"),
      app.add_flag("-v,--verbose", ctx.verbose, "more detail")->group("Output")};
  app.require_subcommand(0, 1);
  // Fallthrough lets `devices --json` reach the options every command shares.
  app.fallthrough();
  register_all(app, ctx);
  // ...but an option of the main command given to a subcommand (`watch --host
  // b`, `check --output x.img`) would be taken and then ignored: refused before
  // anything runs.
  app.parse_complete_callback([&app, &everywhere] {
    const std::vector<CLI::App*> subs = app.get_subcommands();
    if (subs.empty()) return;
    for (const CLI::Option* opt : app.get_options())
      if (opt->count() > 0 && !everywhere.count(opt) && opt->get_name() != "--version")
        throw Error(Errc::usage, opt->get_name() + " is an option of the main command, not of `rpi-provision " +
                                     subs.front()->get_name() + "`; see rpi-provision " + subs.front()->get_name() +
                                     " --help");
  });
  // CLI11 copies a parent's footer into subcommands made after it: the main
  // command's examples do not belong under `fetch --help` and the others.
  std::function<void(CLI::App*)> plain_footer = [&](CLI::App* a) {
    for (CLI::App* sub : a->get_subcommands({})) {
      sub->footer("See man rpi-provision, section COMMANDS.");
      plain_footer(sub);
    }
  };
  plain_footer(&app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    ctx.reporter.configure(ctx.json, ctx.quiet);
    // A subcommand's own help describes its options.
    const std::vector<CLI::App*> subs = app.get_subcommands();
    ctx.reporter.error(Errc::usage, std::string(e.what()) + " (see rpi-provision " +
                                        (subs.empty() ? "" : subs.front()->get_name() + " ") + "--help)");
    return checked_exit(ctx, 2);
  } catch (const Error& e) {
    ctx.reporter.configure(ctx.json, ctx.quiet);
    ctx.reporter.error(e.code(), e.what());
    return checked_exit(ctx, exit_code_for(e.code()));
  } catch (const std::exception& e) {
    ctx.reporter.configure(ctx.json, ctx.quiet);
    ctx.reporter.error(Errc::internal, e.what());
    return checked_exit(ctx, 1);
  }
  return checked_exit(ctx, ctx.exit_code);
}

}  // namespace rpi::cli
