#include "app.hpp"

#include <archive.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <grp.h>
#include <libfdisk.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <clocale>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
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
#include "rpi/text.hpp"

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

// An error as the user sees it. A spec's problems (overlay::SpecErrors) each on
// its own "error:" line with the spec's line it points at under it, then the
// "… and N more errors" line; with
// --json one error event whose "message" is the first and "messages" all of them
// ("file", "line", "column" and "problems" say where they are).
void report_error(AppContext& ctx, const Error& e) {
  const auto* spec = dynamic_cast<const overlay::SpecErrors*>(&e);
  if (!spec || spec->problems().empty()) {
    ctx.reporter.error(e.code(), e.what());
    return;
  }
  std::vector<Reporter::Located> errors;
  for (const auto& p : spec->problems()) errors.push_back({p.message, p.excerpt, p.line, p.column, p.file});
  ctx.reporter.errors(e.code(), errors, spec->more(), spec->more_text());
}
}  // namespace

void report_spec_warnings(AppContext& ctx, const overlay::Spec& spec) {
  for (const auto& w : spec.warnings()) ctx.reporter.warn_at({w.text(), w.excerpt, w.line, w.column, w.file});
}

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

namespace {

// "4 KiB, last changed 3 h ago" for a leftover file or folder: the bytes of
// the regular files in it (symbolic links not followed) and its newest
// change, which tells a stale leftover from one a running process is filling.
std::string leftover_text(const std::filesystem::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return "";
  std::uint64_t bytes = S_ISREG(st.st_mode) ? static_cast<std::uint64_t>(st.st_size) : 0;
  std::time_t changed = st.st_mtime;
  if (S_ISDIR(st.st_mode)) {
    std::error_code ec;
    for (std::filesystem::recursive_directory_iterator it(p, ec), end; !ec && it != end; it.increment(ec)) {
      struct stat e {};
      if (::lstat(it->path().c_str(), &e) != 0) continue;
      if (S_ISREG(e.st_mode)) bytes += static_cast<std::uint64_t>(e.st_size);
      changed = std::max(changed, e.st_mtime);
    }
  }
  const long long s = std::max<long long>(0, static_cast<long long>(std::time(nullptr) - changed));
  const std::string age = s < 120      ? std::to_string(s) + " s"
                          : s < 7200   ? std::to_string(s / 60) + " min"
                          : s < 172800 ? std::to_string(s / 3600) + " h"
                                       : std::to_string(s / 86400) + " days";
  return format_size(bytes) + ", last changed " + age + " ago";
}

// mkdtemp's six characters: letters and digits.
bool is_mkdtemp_name(const std::string& name, const std::string& prefix) {
  return name.size() == prefix.size() + 6 && name.compare(0, prefix.size(), prefix) == 0 &&
         std::all_of(name.begin() + static_cast<std::ptrdiff_t>(prefix.size()), name.end(),
                     [](unsigned char c) { return std::isalnum(c) != 0; });
}

// Whether a live run holds the scratch folder at `path` (its ScratchDir keeps
// an exclusive flock on the folder's kScratchLockFile).
bool held_by_a_run(const std::filesystem::path& path) {
  Fd fd(::open((path / kScratchLockFile).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  return fd && ::flock(fd.get(), LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
}

}  // namespace

void require_stdout_for_data(const AppContext& ctx, const std::string& data, const std::string& flag,
                             const std::string& with_json) {
  if (ctx.json)
    throw Error(Errc::usage, "--json writes its events to standard output, and " + flag + " writes " + data +
                                 " there: use " + with_json + " with --json");
  const std::string file_named = flag.substr(0, flag.size() - 1) + "./-";  // "--output ./-"
  if (::isatty(1) == 1)
    throw Error(Errc::usage, "refusing to write " + data + " to a terminal: pipe it or redirect it (" + file_named +
                                 " writes a file named -)");
  struct stat out_st {
  }, err_st{};
  if (::fstat(1, &out_st) == 0 && ::fstat(2, &err_st) == 0 && out_st.st_dev == err_st.st_dev &&
      out_st.st_ino == err_st.st_ino && !S_ISCHR(out_st.st_mode))
    throw Error(Errc::usage, "standard error goes where standard output does (2>&1?): its messages would end up in " +
                                 data + "; send it elsewhere (2>FILE)");
}

void make_stdout_file_private(AppContext& ctx, int fd, const std::string& holds) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || !(st.st_mode & (S_IRGRP | S_IROTH))) return;
  const std::string was = octal_mode(st.st_mode);
  std::string name = "standard output";
  std::error_code ec;
  if (const auto target = std::filesystem::read_symlink("/proc/self/fd/" + std::to_string(fd), ec); !ec)
    name += " (" + target.string() + ")";
  if (::fchmod(fd, S_IRUSR | S_IWUSR) != 0) {
    const int err = errno;
    ctx.reporter.warn(name + " is readable by group or others (mode " + was + ") and could not be made private (" +
                      std::strerror(err) + "), but " + holds + "; chmod 600 it as its owner");
    return;
  }
  ctx.reporter.note(name + " was readable by group or others (mode " + was + "); " + holds +
                    ", so it is now mode 0600");
}

void note_leftovers(AppContext& ctx, const std::vector<std::string>& outputs) {
  for (const auto& out : outputs)
    for (const auto& t : out.empty() ? std::vector<std::filesystem::path>{} : leftover_temporaries(out)) {
      const std::string about = leftover_text(t);
      // A warning, not a note: something to act on (-q shows it too).
      ctx.reporter.warn(t.string() + (about.empty() ? "" : " (" + about + ")") +
                        " was left by an interrupted run (killed, or a power cut) unless another rpi-provision is "
                        "writing " +
                        out + " now; it may hold secrets: remove it");
    }
}

void warn_scratch_leftovers(AppContext& ctx, const std::filesystem::path& scratch) {
  const std::string prefix = kScratchPrefix;
  const std::filesystem::path parent = scratch.parent_path().lexically_normal();
  std::vector<std::filesystem::path> found;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    struct stat st {};
    // This user's folders only (another user's are theirs to clean), never a symbolic link, and not one
    // a live run holds.
    if (name != scratch.filename().string() && is_mkdtemp_name(name, prefix) && ::lstat(it->path().c_str(), &st) == 0 &&
        S_ISDIR(st.st_mode) && st.st_uid == ::geteuid() && !held_by_a_run(parent / name))
      found.push_back(parent / name);
  }
  if (found.empty()) return;
  std::sort(found.begin(), found.end());
  constexpr std::size_t kListed = 10;
  std::string list;
  for (std::size_t i = 0; i < found.size() && i < kListed; ++i) {
    const std::string about = leftover_text(found[i]);
    list += (i ? ", " : "") + found[i].string() + (about.empty() ? "" : " (" + about + ")");
  }
  if (found.size() > kListed) list += " and " + std::to_string(found.size() - kListed) + " more";
  const bool one = found.size() == 1;
  ctx.reporter.warn(std::string(one ? "a scratch folder was" : std::to_string(found.size()) + " scratch folders were") +
                    " left in " + parent.string() + " by " +
                    (one ? "a killed rpi-provision run" : "killed rpi-provision runs") + " (or a power cut), unless " +
                    (one ? "it belongs to" : "they belong to") + " another run active now: " + list + "; " +
                    (one ? "it holds" : "they hold") + " card images with the cards' secrets: remove " +
                    (one ? "it" : "them") + " (rm -r) when no other rpi-provision run is active");
}

namespace {

// Whether users other than the file's owner (and root) can reach `st`, the
// file at `path`, through its folders, by their mode bits: `others` for those
// outside the file's group, `group` for its members. A folder lets a class
// through with its x bit for that class; its owner always (when not the file's
// owner or root); its group bits also let through members of its group, who
// may be outside the file's group. The folders of the file's other names
// (hard links) are not known: then both stay true.
struct Reach {
  bool others = true, group = true;
  std::filesystem::path folder;  // the file's folder
  unsigned folder_mode = 0;
};
Reach reach_of(const std::string& path, const struct stat& st) {
  Reach r;
  std::error_code ec;
  const std::filesystem::path real = std::filesystem::canonical(path, ec);
  if (ec) return r;  // cannot tell: as if open
  r.folder = real.parent_path();
  struct stat f {};
  if (::stat(r.folder.c_str(), &f) == 0) r.folder_mode = f.st_mode & 07777;
  if (st.st_nlink > 1) return r;
  for (std::filesystem::path dir = r.folder;; dir = dir.parent_path()) {
    struct stat d {};
    if (::stat(dir.c_str(), &d) != 0) break;
    const bool owner = d.st_uid != st.st_uid && d.st_uid != 0 && (d.st_mode & S_IXUSR);
    const bool ox = d.st_mode & S_IXOTH, gx = d.st_mode & S_IXGRP;
    r.others = r.others && (owner || ox || (gx && d.st_gid != st.st_gid));
    r.group = r.group && (owner || (d.st_gid == st.st_gid ? gx : ox || gx));
    if ((!r.others && !r.group) || dir == dir.parent_path()) break;
  }
  return r;
}

std::string mode_text(unsigned mode) {
  char m[8];
  std::snprintf(m, sizeof m, "%04o", mode & 07777);
  return m;
}

}  // namespace

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
  if (::stat(path.c_str(), &st) != 0 || (st.st_mode & 044) == 0) return out;
  const Reach r = reach_of(path, st);
  const bool others = (st.st_mode & S_IROTH) && r.others, group = (st.st_mode & S_IRGRP) && r.group;
  if (!others && !group) return out;  // a private folder keeps them out
  std::string who = "other users";
  if (!others) {
    const struct group* g = ::getgrgid(st.st_gid);
    who = "the members of group " + (g ? std::string(g->gr_name) : std::to_string(st.st_gid));
  }
  std::string where;
  if (st.st_nlink > 1)
    where = "; it has other names (hard links), whose folders are not checked";
  else if (!r.folder.empty())
    where =
        "; its folder " + r.folder.string() + " (mode " + mode_text(r.folder_mode) + ") and those above it let them in";
  out.push_back("--seed-file " + path + " can be read by " + who + " (mode " + mode_text(st.st_mode) + where +
                "), and whoever reads it can derive every card's SSH host keys and password salts: chmod 600 " + path);
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

std::string checked_sha256(const std::string& hex) {
  const std::string lower = ascii_lower(hex);
  if (lower.size() != 64 || lower.find_first_not_of("0123456789abcdef") != std::string::npos)
    throw Error(Errc::usage, "--sha256 must be 64 hex digits, got '" + printable(hex.substr(0, 80), false) + "'");
  return lower;
}

void check_label_option(const std::string& label) {
  // The spec's own check of [boot].label, on a two-line spec: one rule for both.
  // Characters a TOML string would need escaped are all refused by that rule:
  // '?' stands in for them, so that the spec's message, not TOML's, is given.
  std::string value;
  for (char c : label) {
    const auto u = static_cast<unsigned char>(c);
    value.push_back(u < 0x20 || u >= 0x7F || c == '"' || c == '\\' ? '?' : c);
  }
  try {
    overlay::parse_spec("[system]\nhostname = \"pi\"\n[boot]\nlabel = \"" + value + "\"\n", "--label", ".");
  } catch (const Error& e) {
    std::string why = e.what();
    const std::size_t at = why.find("[boot].label");
    if (at == std::string::npos) throw;
    why = why.substr(at + std::string_view("[boot].label").size());
    throw Error(Errc::usage, "--label '" + printable(label, false) + "':" + why.substr(0, why.find('\n')));
  }
}

std::uint32_t parse_disk_id(const std::string& text) {
  std::string_view hex = text;
  if (hex.starts_with("0x") || hex.starts_with("0X")) hex.remove_prefix(2);
  // strtoull alone would also take " 12", "+12" and "-1".
  const bool digits = !hex.empty() && hex.size() <= 8 && hex.find_first_not_of("0123456789abcdefABCDEF") == hex.npos;
  const unsigned long long v = digits ? std::strtoull(std::string(hex).c_str(), nullptr, 16) : 0;
  if (v == 0)
    throw Error(Errc::usage, "--disk-id '" + printable(text.substr(0, 40), false) +
                                 "' is not a non-zero 32-bit hex number (e.g. 0xcafef00d)");
  return static_cast<std::uint32_t>(v);
}

namespace {
// The first `n` bytes of the file `flag` names, after checking that it is a
// readable, non-empty regular file (a FIFO is not opened for reading).
std::string head_of_option_file(const std::string& flag, const std::string& path, std::size_t n) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw Error(Errc::usage, flag + " " + path + ": " + std::strerror(errno) +
                                 (errno == ENOENT ? "" : "; it must be a readable file"));
  if (!S_ISREG(st.st_mode)) throw Error(Errc::usage, flag + " " + path + " is not a regular file");
  if (st.st_size == 0) throw Error(Errc::usage, flag + " " + path + " is empty");
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) throw Error(Errc::usage, flag + " " + path + " cannot be read: " + std::strerror(errno));
  std::string head(n, '\0');
  const ssize_t got = ::pread(fd.get(), head.data(), head.size(), 0);
  if (got < 0) throw Error(Errc::usage, flag + " " + path + " cannot be read: " + std::strerror(errno));
  head.resize(static_cast<std::size_t>(got));
  return head;
}
}  // namespace

void check_download_files(const DownloadFlags& f) {
  if (!f.keyring.empty()) {
    const std::string head = head_of_option_file("--keyring", f.keyring, 64 << 10);
    // An armoured key block, or binary OpenPGP packets starting with a public
    // key (tag 6, old or new packet format), or a GnuPG keybox.
    const auto first = head.empty() ? 0u : static_cast<unsigned char>(head[0]);
    const bool armoured = head.find("-----BEGIN PGP PUBLIC KEY BLOCK-----") != std::string::npos;
    const bool binary = first == 0x98 || first == 0x99 || first == 0x9a || first == 0xc6;
    const bool keybox = head.size() >= 12 && head.compare(8, 4, "KBXf") == 0;
    if (!armoured && !binary && !keybox)
      throw Error(Errc::usage, "--keyring " + f.keyring +
                                   " holds no OpenPGP public key (neither an armoured \"BEGIN PGP PUBLIC KEY BLOCK\" "
                                   "nor a binary key); Alpine's is https://alpinelinux.org/keys/ncopa.asc");
  }
  if (!f.ca_cert.empty()) {
    const std::string head = head_of_option_file("--ca-cert", f.ca_cert, 1 << 20);
    if (head.find("-----BEGIN CERTIFICATE-----") == std::string::npos &&
        head.find("-----BEGIN TRUSTED CERTIFICATE-----") == std::string::npos)
      throw Error(Errc::usage, "--ca-cert " + f.ca_cert +
                                   " holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\"); convert a DER one "
                                   "with: openssl x509 -inform der -in CERT -out ca.pem");
  }
}

void check_output_folder(const std::string& flag, const std::string& path) {
  const std::filesystem::path dir =
      std::filesystem::path(path).parent_path().empty() ? "." : std::filesystem::path(path).parent_path();
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw Error(Errc::usage, flag + " " + path + ": the folder " + dir.string() + " does not exist");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw Error(Errc::usage, flag + " " + path + ": cannot create files in the folder " + dir.string() + " (" +
                                 std::strerror(errno) + "); choose another folder");
}

std::function<std::string(const std::string&)> at_least_one(const std::string& what) {
  return [what](const std::string& v) -> std::string {
    if (!v.empty() && v.size() <= 6 && v.find_first_not_of("0123456789") == std::string::npos && std::stoi(v) > 0)
      return "";
    return "'" + v.substr(0, 20) + "' is not " + what + " (1 to 999999)";
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

// The one of `names` that `word` probably meant: the nearest within a few
// edits, or the only one it begins; "" when none is close.
std::string closest(const std::string& word, const std::vector<std::string>& names) {
  std::string best, prefixed;
  std::size_t best_d = std::max<std::size_t>(1, std::min<std::size_t>(2, word.size() / 4)) + 1;
  int prefixes = 0;
  for (const auto& n : names) {
    const std::size_t dist = rpi::edit_distance(word, n);
    if (dist < best_d) best_d = dist, best = n;
    if (word.size() >= 4 && n.starts_with(word)) ++prefixes, prefixed = n;
  }
  return !best.empty() ? best : prefixes == 1 ? prefixed : "";
}

// CLI11's messages in this tool's words: "unknown option --outptu (did you
// mean --output?)", "--spec is given twice", "--spec needs a value". `cmd` is
// the command being parsed (the main one or a subcommand).
std::string parse_error_text(const CLI::App& app, const CLI::App& cmd, const CLI::ParseError& e) {
  const std::string what = e.what();
  std::vector<std::string> options, commands;
  for (const CLI::App* a : {&cmd, &app})
    for (const CLI::Option* opt : a->get_options()) {
      // Of the main command's, a subcommand takes only those every command shares.
      if (a != &cmd && !opt->check_lname("json") && !opt->check_lname("quiet") && !opt->check_lname("verbose"))
        continue;
      for (const auto& l : opt->get_lnames()) options.push_back("--" + l);
      for (const auto& s : opt->get_snames()) options.push_back("-" + s);
    }
  for (const CLI::App* sub : cmd.get_subcommands({})) commands.push_back(sub->get_name());
  const std::vector<std::string> extra = app.remaining(true);
  // An unknown option first, whatever CLI11 complained about (`check --spce x`
  // is "--spec is required" to it): a word after it is most likely its value.
  for (const auto& x : extra)
    if (x.size() > 1 && x[0] == '-') {
      const std::string name = x.substr(0, x.find('='));
      const std::string guess = closest(name, options);
      return "unknown option " + printable(name) + (guess.empty() ? "" : " (did you mean " + guess + "?)");
    }
  if (dynamic_cast<const CLI::ExtrasError*>(&e)) {
    if (!extra.empty()) {
      const std::string& x = extra.front();
      const std::string guess = closest(x, commands);
      if (!guess.empty()) return "unknown command " + printable(x) + " (did you mean " + guess + "?)";
      return "unexpected argument '" + printable(x) + "': a value belongs after its option (e.g. --spec kiosk.toml)" +
             (commands.empty() ? "" : ", and a command is one of: " + [&] {
               std::string l;
               for (const auto& c : commands) l += (l.empty() ? "" : ", ") + c;
               return l;
             }());
    }
  }
  if (dynamic_cast<const CLI::ArgumentMismatch*>(&e)) {
    // "--spec: At Most 1 required but received 2", "--spec: 1 required TEXT missing"
    const std::size_t colon = what.find(": ");
    const std::string name = what.substr(0, colon);
    if (colon != std::string::npos && what.find(": At Most 1 required but received ") == colon) {
      const std::string n = what.substr(what.rfind(' ') + 1);
      return name + " is given " + (n == "2" ? std::string("twice") : n + " times") + "; give it once";
    }
    if (colon != std::string::npos && what.ends_with(" missing") && what.find(" required ") != std::string::npos)
      return name + " needs a value";
  }
  return what;
}

// `--spec -` (of any command given): a spec names files relative to its own
// folder ([alpine].tarball, { file = } secrets, source files, [apk].keys), which
// standard input has not; it would otherwise read as a file named "-" that
// does not exist.
void refuse_spec_from_stdin(const CLI::App& app) {
  for (const CLI::App* a = &app; a;) {
    for (const CLI::Option* opt : a->get_options())
      if (opt->check_lname("spec") && opt->count() > 0)
        for (const std::string& v : opt->results())
          if (v == "-")
            throw Error(
                Errc::usage,
                "--spec -: a spec is read from a file, not from standard input (it names files relative to "
                "its own folder: [alpine].tarball, { file = } secrets, source files, [apk].keys); save it to a file "
                "and give its path (--spec ./- for a file named -)");
    const std::vector<CLI::App*> subs = a->get_subcommands();
    a = subs.empty() ? nullptr : subs.front();
  }
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
      // Set on the reporter as it is parsed: before any command's callback configures it.
      app.add_flag_function(
             "-v,--verbose",
             [&ctx](std::int64_t n) {
               ctx.verbose = static_cast<int>(n);
               ctx.reporter.set_verbose(n > 0);
             },
             "tell each step of the run and how long it took: requests, cache, image build, card "
             "writes (debug: lines; \"detail\" events with --json)")
          ->group("Output")};
  app.require_subcommand(0, 1);
  // Fallthrough lets `devices --json` reach the options every command shares.
  app.fallthrough();
  register_all(app, ctx);
  // ...but an option of the main command given to a subcommand (`watch --host
  // b`, `check --output x.img`) would be taken and then ignored: refused before
  // anything runs.
  app.parse_complete_callback([&app, &everywhere] {
    refuse_spec_from_stdin(app);
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
    // The innermost command given (`cache list`): its options are the ones meant.
    const CLI::App* cmd = &app;
    while (!cmd->get_subcommands().empty()) cmd = cmd->get_subcommands().front();
    ctx.reporter.error(Errc::usage, parse_error_text(app, *cmd, e) + " (see rpi-provision " +
                                        (subs.empty() ? "" : subs.front()->get_name() + " ") + "--help)");
    return checked_exit(ctx, 2);
  } catch (const Error& e) {
    ctx.reporter.configure(ctx.json, ctx.quiet);
    report_error(ctx, e);
    return checked_exit(ctx, exit_code_for(e.code()));
  } catch (const std::exception& e) {
    ctx.reporter.configure(ctx.json, ctx.quiet);
    ctx.reporter.error(Errc::internal, e.what());
    return checked_exit(ctx, 1);
  }
  return checked_exit(ctx, ctx.exit_code);
}

}  // namespace rpi::cli
