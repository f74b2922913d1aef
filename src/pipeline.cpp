#include "pipeline.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>

#include "partition/apkovl_check.hpp"
#include "partition/reader.hpp"
#include "partition/tarball_rules.hpp"
#include "rpi/atomic_file.hpp"
#include "rpi/digest.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "rpi/folder_lock.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"
#include "rpi/url.hpp"

namespace rpi::cli {

namespace {

bool is_url(const std::string& s) {
  return s.rfind("http://", 0) == 0 || s.rfind("https://", 0) == 0 || s.rfind("file://", 0) == 0;
}

// The path a file:// URL names, as fetch copies it: "/x" of "file:///x" and of "file://localhost/x".
std::string file_url_path(const std::string& url) {
  if (url.rfind("file://localhost/", 0) == 0) return url.substr(16);
  return url.substr(7);
}

}  // namespace

std::string local_tarball_path(const std::string& source, const std::string& sha256) {
  if (sha256.empty() && source.rfind("file://", 0) == 0) return file_url_path(source);
  return is_url(source) ? std::string() : source;
}

std::string spec_tarball_file(const overlay::AlpineSource& a) {
  if (a.tarball.rfind("file://", 0) == 0) return file_url_path(a.tarball);
  return is_url(a.tarball) ? std::string() : a.tarball;
}

namespace {
// The first http(s) mirror of `mirrors`, without trailing '/', or "".
std::string card_mirror(const std::vector<std::string>& mirrors) {
  for (std::string m : mirrors)
    if (m.starts_with("http://") || m.starts_with("https://")) {
      while (m.size() > 1 && m.back() == '/') m.pop_back();
      return m;
    }
  return {};
}
}  // namespace

void override_mirror(overlay::HostConfig& h, const std::vector<std::string>& mirrors) {
  // Only local --mirror folders (paths of this machine): the card keeps the spec's mirror.
  if (std::string pick = card_mirror(mirrors); !pick.empty()) h.alpine.mirror = pick;
}

std::vector<std::string> mirror_override_warnings(const std::vector<std::string>& mirrors, const std::string& ca_cert) {
  const std::string pick = card_mirror(mirrors);
  if (pick.empty()) return {};
  std::vector<std::string> w;
  const auto scheme_end = pick.find("://") + 3;
  const auto host_end = pick.find('/', scheme_end);
  if (pick.substr(scheme_end, host_end - scheme_end).find('@') != std::string::npos)
    w.push_back("--mirror " + rpi::redact_urls(pick) +
                " carries credentials, and --mirror is also the mirror the cards use: they go into every card's "
                "/etc/apk/repositories (0600, but readable by whoever holds the card); if only this machine "
                "should use them, give the cards another mirror in [alpine].mirror and download with --tarball");
  if (!ca_cert.empty())
    w.push_back("--ca-cert is for this machine only: the cards use --mirror " + rpi::redact_urls(pick) +
                " too, and get no copy of the certificate; add it to the cards with [[files]] (e.g. "
                "/usr/local/share/ca-certificates/mirror.crt) and run update-ca-certificates at first boot, or the "
                "Pis' apk cannot verify that mirror");
  return w;
}

void require_spec_tarball(const std::string& path, const std::string& spec_path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw Error(Errc::spec, spec_path + ": [alpine].tarball " + path +
                                " is not a file (a relative path is read from the spec's folder)");
}

namespace {
// verify_tarball_sha256's refusal of `tarball`, whose digest is `got`.
[[noreturn]] void refuse_tarball_sha256(const std::string& tarball, const std::string& got, const std::string& sha256) {
  throw Error(Errc::verify, tarball + ": sha256 is " + got + ", expected " + sha256 + "; refusing to use it");
}
}  // namespace

void verify_tarball_sha256(const std::filesystem::path& tarball, const std::string& sha256) {
  const std::string got = sha256_file_hex(tarball.string());
  if (got != sha256) refuse_tarball_sha256(tarball.string(), got, sha256);
}

namespace {

std::atomic<bool> g_cancel{false};
std::atomic<int> g_cancel_signal{0};  // the first signal that cancelled the run
extern "C" void on_signal(int sig) {
  int none = 0;
  g_cancel_signal.compare_exchange_strong(none, sig);
  g_cancel.store(true);
}

}  // namespace

std::vector<RunFile> inputs_of(const RunOptions& o, const Pipeline* p) {
  return run_inputs(p && p->spec() ? &*p->spec() : nullptr, {{"--spec", o.spec},
                                                             {"--apkovl", o.apkovl},
                                                             {"--image", o.image == "-" ? "" : o.image},
                                                             {"--bmap", o.image.empty() ? "" : o.bmap},
                                                             {"--tarball", is_url(o.tarball) ? "" : o.tarball},
                                                             {"--seed-file", o.seed_file}});
}

std::string geometry_text(const partition::FatGeometry& g) {
  std::ostringstream s;
  s << (g.type == partition::FatType::fat32 ? "FAT32" : "FAT16") << ", " << format_size(g.cluster_bytes())
    << " clusters × " << g.clusters << ", partition " << format_size(g.partition_bytes()) << " at "
    << format_size(g.partition_offset());
  return s.str();
}

void emit_card_done(AppContext& ctx, const CardDone& c) {
  if (!ctx.reporter.json()) return;
  JsonObject j;
  j.add("target", c.target).add("hostname", c.hostname).add("index", c.index).add_bool("ok", c.ok);
  if (c.bytes || c.ok) j.add("bytes", c.bytes).add("seconds", c.seconds);
  j.add_bool("verified", c.verified);
  if (!c.bmap.empty()) j.add("bmap", c.bmap);
  if (!c.known_hosts.empty()) {
    std::string arr = "[";
    for (const auto& k : c.known_hosts) arr += (arr.size() > 1 ? "," : "") + json_escape(k);
    j.add_raw("known_hosts", arr + "]");
  }
  if (!c.ok) j.add("error", c.error);
  ctx.reporter.result("card-done", "", std::move(j));
}

void emit_summary(AppContext& ctx, int cards, int failed, double seconds, int exit_code) {
  if (!ctx.reporter.json()) return;
  JsonObject j;
  j.add("cards", cards).add("ok", cards - failed).add("failed", failed).add("seconds", seconds);
  j.add("exit_code", exit_code);
  ctx.reporter.result("summary", "", std::move(j));
}

const std::atomic<bool>* install_cancel_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  // SIGHUP (the terminal closed) and SIGPIPE (the reader of stdout quit, e.g. a
  // GUI that crashed) stop the cards like Ctrl-C: killed outright, the process
  // would leave a card half-written with a valid MBR and the scratch images
  // (which hold the apkovl's secrets) in $TMPDIR.
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) sigaction(sig, &sa, nullptr);
  return &g_cancel;
}

int cancel_signal() {
  return g_cancel_signal.load();
}

void report_cancelled_download(AppContext& ctx, const Cancelled& e) {
  // "cancelled: 23.0 MiB of FILE kept in CACHE/partial/; run again to resume"
  ctx.reporter.finish_progress();
  ctx.reporter.error(Errc::network, dynamic_cast<const fetch::DownloadCancelled*>(&e)
                                        ? std::string(e.what())
                                        : "cancelled; nothing was downloaded that a next run could resume from");
  ctx.exit_code = 128 + cancel_signal();
}

std::string ScratchDir::parent() {
  const char* tmp = std::getenv("TMPDIR");
  return tmp && *tmp ? tmp : "/var/tmp";
}

ScratchDir::ScratchDir(AppContext& ctx) {
  std::string pattern = parent() + "/" + kScratchPrefix + "XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) throw_errno("cannot create a temporary folder for the card images");
  path_ = buf.data();
  // Held until the folder is removed; without flock (NFS) the next run may
  // warn about it, as before. A file of its own, not the folder: the folder
  // is locked for the renames into it (FolderLocks), by this run too.
  lock_ = Fd(::open((path_ / kScratchLockFile).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (lock_) (void)::flock(lock_.get(), LOCK_EX | LOCK_NB);
  warn_scratch_leftovers(ctx, path_);
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string card_too_small(const std::string& device, std::uint64_t has, std::uint64_t need, const std::string& fix) {
  return "refusing to write " + device + ": it has " + format_size(has) + " but the image needs " + format_size(need) +
         "; " + fix;
}

std::shared_ptr<const udev::FlashSource> decompress_for_cards(
    AppContext& ctx, const std::string& image, const udev::CompressedImage& probed, std::optional<ScratchDir>& scratch,
    const std::atomic<bool>* cancel, std::optional<std::uint64_t> max_size, const std::string& too_large) {
  try {
    scratch.emplace(ctx);
    udev::DecompressOptions d;
    d.folder = scratch->path();
    d.events = ctx.reporter.sink();
    d.cancel = cancel;
    d.full_hint = "set TMPDIR to a folder with more room (now " + ScratchDir::parent() + ")";
    d.max_size = max_size;
    d.too_large = too_large;
    d.probed = &probed;
    return udev::FlashSource::decompress(image, d);
  } catch (const Cancelled&) {
    scratch.reset();
    return nullptr;
  }
}

Pipeline::Pipeline(AppContext& ctx, RunOptions opts) : ctx_(ctx), o_(std::move(opts)) {
  if (!o_.spec.empty() && !o_.apkovl.empty())
    throw Error(Errc::usage, "--spec and --apkovl exclude each other: the spec generates the apkovl");
  if (!o_.spec.empty()) {
    spec_ = overlay::load_spec(o_.spec);
    report_spec_warnings(ctx_, *spec_);
  }
  if (!o_.sha256.empty() && o_.tarball.empty() && !(spec_ && !spec_->alpine().tarball.empty()))
    throw Error(Errc::usage,
                "--sha256 pins the digest of --tarball (or of the spec's [alpine].tarball); without either the "
                "release index gives the digest: leave --sha256 out, or add --tarball FILE|URL");
  if (spec_)
    for (const auto& w : mirror_override_warnings(o_.download.mirrors, o_.download.ca_cert)) ctx_.reporter.warn(w);
  seed_ = read_seed_file(o_.seed_file);  // once: every card's keys and salts derive from it
  for (const auto& w : seed_file_warnings(o_.seed_file, seed_)) ctx_.reporter.warn(w);
  if (!o_.apkovl.empty()) {
    apkovl_data_ = read_regular_file(o_.apkovl, 256u << 20);
    partition::ApkovlCheck chk = partition::check_apkovl(o_.apkovl, apkovl_data_);
    apkovl_host_ = chk.hostname.empty() ? chk.card_name : chk.hostname;
    // `lbu commit` on the Pi writes $(hostname).apkovl.tar.gz and refuses to
    // when another apkovl is on the card (alpine-facts §4): under that name it
    // replaces this one instead. Without a host name the file keeps its name,
    // said once: with the check's finding about etc/hostname (and its fix) when
    // there is one.
    const std::string keeps = chk.card_name + " keeps its name on the card";
    const std::string lbu =
        "`lbu commit` on the Pi writes <hostname>.apkovl.tar.gz and refuses while an apkovl of "
        "another name is on the card (lbu commit -d deletes it first)";
    bool said = !chk.hostname.empty();
    for (const auto& w : chk.warnings) {
      if (!said && !chk.hostname_warning.empty() && w == chk.hostname_warning) {
        ctx_.reporter.warn(w + ". Until then " + keeps + ", and " + lbu);
        said = true;
      } else {
        ctx_.reporter.warn(w);
      }
    }
    if (!chk.hostname.empty()) {
      apkovl_name_ = chk.hostname + ".apkovl.tar.gz";
      if (apkovl_name_ != chk.card_name)
        ctx_.reporter.note(chk.card_name + " goes on the card as " + apkovl_name_ + ": its etc/hostname names " +
                           chk.hostname +
                           ", and that is the file `lbu commit` on the "
                           "Pi writes (and replaces)");
    } else {
      apkovl_name_ = chk.card_name;
      if (!said)
        ctx_.reporter.warn(keeps + ": " +
                           (partition::is_encrypted_apkovl_name(chk.card_name)
                                ? std::string("it is encrypted, so its etc/hostname cannot be read")
                                : std::string("it has no valid etc/hostname")) +
                           ". " + lbu + "; name the file after the Pi's host name to avoid that");
    }
  }
  if (o_.first < 1) throw Error(Errc::usage, "--first must be 1 or more");
}

int Pipeline::defined_cards() const {
  return spec_ ? spec_->host_count() : 0;
}

bool Pipeline::identical_cards() const {
  if (!spec_) return true;
  if (!o_.host.empty()) return true;
  return spec_->host_count() == 0 && !spec_->hostname_templated();
}

namespace {
// A card beyond the [[hosts]] entries takes its name from [system].hostname's
// {n}; that name may be an entry's (pi-{n} for card 3, an entry named pi-3):
// two cards of one name on the network, with different settings. Refused.
void refuse_an_entrys_name(const overlay::Spec& spec, const overlay::HostConfig& h) {
  const int entries = spec.host_count();
  if (entries == 0 || h.index <= entries) return;
  const std::string name = ascii_lower(h.hostname);
  for (int i = 1; i <= entries; ++i)
    if (const overlay::HostConfig e = overlay::resolve_host(spec, i); ascii_lower(e.hostname) == name)
      throw Error(Errc::spec, "card " + std::to_string(h.index) + " (beyond the " + std::to_string(entries) +
                                  (entries == 1 ? " [[hosts]] entry of " : " [[hosts]] entries of ") +
                                  spec.path().string() + ") would be named " + h.hostname +
                                  " by [system].hostname's {n}, and so is [[hosts]] entry " + std::to_string(i) +
                                  " (card " + std::to_string(i) +
                                  "): two cards may not share a name; rename the entry, or give it a name the "
                                  "template does not make");
}
}  // namespace

std::vector<Identity> Pipeline::identities(int count) const {
  std::vector<Identity> ids;
  if (!spec_) {
    for (int i = 0; i < count; ++i) ids.push_back(Identity{o_.first + i, apkovl_host_, std::nullopt});
    return ids;
  }
  if (!o_.host.empty()) {
    if (count > 1)
      throw Error(Errc::usage,
                  "--host picks one card's identity; for several cards leave it out (they take the "
                  "[[hosts]] entries in order from --first)");
    overlay::HostConfig h = overlay::resolve_host(*spec_, o_.first, o_.host);
    override_mirror(h, o_.download.mirrors);
    ids.push_back(Identity{h.index, h.hostname, h});
    return ids;
  }
  for (auto& h : overlay::resolve_hosts(*spec_, o_.first, count)) {
    refuse_an_entrys_name(*spec_, h);
    override_mirror(h, o_.download.mirrors);
    ids.push_back(Identity{h.index, h.hostname, h});
  }
  return ids;
}

bool generates_host_keys(const Identity& id) {
  return id.host && id.host->ssh.enable && id.host->ssh.host_keys == "generate" && id.host->boot.apkovl_url.empty();
}

std::string shared_host_keys_warning(const std::string& who, const std::string& name) {
  return who + " the same identity " + name +
         " and so the same SSH host keys (one image for all): put {n} in [system].hostname, or use [[hosts]] "
         "entries, for one identity per card; set [ssh].host_keys = \"first-boot\" for clones with keys of their own";
}

Identity Pipeline::identity_at(int n) const {
  if (!spec_) return Identity{n, apkovl_host_, std::nullopt};
  overlay::HostConfig h = overlay::resolve_host(*spec_, n, o_.host.empty() ? std::nullopt : std::optional(o_.host));
  if (o_.host.empty()) refuse_an_entrys_name(*spec_, h);
  override_mirror(h, o_.download.mirrors);
  return Identity{h.index, h.hostname, h};
}

fetch::Options Pipeline::fetch_options() const {
  fetch::Options f = o_.download.options(ctx_.reporter.sink());
  f.cancel = cancel_;
  return f;
}

namespace {
// "3.22.2" from ".../alpine-rpi-3.22.2-aarch64.tar.gz" (Alpine's release file
// name), nothing from any other name.
std::optional<std::string> release_in_name(std::string name) {
  name = name.substr(0, name.find_first_of("?#"));
  name = name.substr(name.find_last_of('/') + 1);
  const std::string prefix = "alpine-rpi-";
  if (!name.starts_with(prefix) || !name.ends_with(".tar.gz")) return std::nullopt;
  std::string v = name.substr(prefix.size(), name.find('-', prefix.size()) - prefix.size());
  if (v.empty() || v.front() == '.' || v.back() == '.' || v.find("..") != std::string::npos ||
      v.find_first_not_of("0123456789.") != std::string::npos || std::count(v.begin(), v.end(), '.') != 2)
    return std::nullopt;
  return v;
}
}  // namespace

TarballPlan Pipeline::plan_tarball(bool resolve_release) {
  if (resolved_) return *resolved_;
  TarballPlan p = plan_tarball_uncached(resolve_release);
  if (resolve_release) resolved_ = p;
  return p;
}

std::optional<std::string> Pipeline::release() const {
  if (resolved_ && resolved_->release) return resolved_->release->version;
  if (resolved_)
    if (auto r = release_in_name(resolved_->url.empty() ? resolved_->local.string() : resolved_->url)) return r;
  if (file_release_) return file_release_->version;
  return std::nullopt;
}

TarballRelease Pipeline::learnt() const {
  TarballRelease r;
  r.version = release();
  r.from_file = file_release_ && file_release_->version && r.version == file_release_->version;
  r.unread = file_release_ && file_release_->unread;
  return r;
}

namespace {
// "3.22" of "3.22.1", "3.22" or "3.23.0_rc1": the branch of a release
// (AlpineSource::branch without its "v").
std::string branch_of(const std::string& version) {
  overlay::AlpineSource a;
  a.version = version;
  return a.branch().substr(1);
}
}  // namespace

namespace {
// The release `got` (partition::tarball_release's answer) read from `tarball`
// in `took`, with its detail line.
TarballRelease release_read(AppContext& ctx, const std::string& tarball, const std::string& got,
                            const std::string& took) {
  TarballRelease r;
  r.from_file = true;
  if (!got.empty()) r.version = got;
  ctx.reporter.detail(tarball, tarball + ": its .alpine-release " + (got.empty() ? "gives no release" : "says " + got) +
                                   ", read in " + took);
  return r;
}

}  // namespace

TarballRelease read_tarball_release(AppContext& ctx, const std::filesystem::path& tarball) {
  const Stopwatch took;
  std::string got;
  try {
    got = partition::tarball_release(tarball);
  } catch (const Error& e) {
    // A damaged tarball: the build (or the plan's scan) refuses it with its
    // own message, which names the rule the tarball breaks.
    if (e.code() != Errc::input) throw;
    TarballRelease r;
    r.unread = true;
    return r;
  }
  return release_read(ctx, tarball.string(), got, took.elapsed());
}

std::optional<TarballRelease> local_tarball_release(AppContext& ctx, const overlay::Spec& spec) {
  if (spec.alpine().tarball.empty() || spec.alpine().version == "edge") return std::nullopt;
  const std::string local = spec_tarball_file(spec.alpine());
  std::error_code ec;
  if (local.empty() || !std::filesystem::is_regular_file(local, ec)) return std::nullopt;
  TarballRelease r;
  if ((r.version = release_in_name(local))) return r;
  try {
    r = read_tarball_release(ctx, local);
  } catch (const Error&) {
    // Unreadable: whatever needs the tarball itself says so; this only pins.
    r.unread = true;
  }
  return r;
}

std::optional<TarballRelease> check_spec_tarball(AppContext& ctx, const overlay::Spec& spec,
                                                 const std::string& spec_path) {
  const overlay::AlpineSource& a = spec.alpine();
  const std::string tb = spec_tarball_file(a);
  if (tb.empty()) return std::nullopt;  // a URL is not downloaded
  require_spec_tarball(tb, spec_path);
  if (a.sha256.empty()) return local_tarball_release(ctx, spec);
  // The release from the name (as a build learns it), else from the file, in
  // the pass that hashes it; edge's repositories follow edge whatever it is.
  const std::optional<std::string> named = release_in_name(tb);
  const bool look = !named && a.version != "edge";
  const Stopwatch took;
  Digest digest(Digest::Algo::sha256);
  std::optional<std::string> found;  // none: not looked for, or damaged (the build refuses it with its own message)
  std::string found_in;
  if (look) {
    try {
      found = partition::tarball_release(tb, [&](const void* p, std::size_t n) { digest.update(p, n); });
      found_in = took.elapsed();
    } catch (const Error& e) {
      if (e.code() != Errc::input) throw;
    }
  }
  if (!found)
    verify_tarball_sha256(tb, a.sha256);  // read whole for its digest (a damaged one again)
  else if (const std::string got = digest.finish_hex(); got != a.sha256)
    refuse_tarball_sha256(tb, got, a.sha256);
  ctx.reporter.detail(tb, tb + ": SHA-256 matches [alpine].sha256, read in " + took.elapsed());
  if (a.version == "edge") return std::nullopt;
  if (found) return release_read(ctx, tb, *found, found_in);
  TarballRelease r;
  r.version = named;
  r.unread = !named;  // damaged: the build refuses it with its own message
  return r;
}

void warn_release_mismatch(AppContext& ctx, const overlay::AlpineSource& spec, const std::string& warning) {
  const overlay::Place& at = spec.location;
  ctx.reporter.warn_at({warning, at.excerpt, at.line, at.column, at.file});
}

overlay::AlpineSource pin_to_release(overlay::AlpineSource a, const TarballRelease& r) {
  if (a.version == "latest-stable" && r.version) a.version = *r.version;
  return a;
}

std::string release_note_for(const overlay::AlpineSource& spec, const TarballRelease& r) {
  if (spec.version != "latest-stable" || r.unread) return {};
  if (!r.version)
    return "the tarball's Alpine release is unknown (neither its name, as in alpine-rpi-X.Y.Z-ARCH.tar.gz, nor an "
           ".alpine-release in it gives one): the cards' apk repositories follow latest-stable; set "
           "[alpine].version to the tarball's release to keep them on it";
  if (r.from_file)
    return "the tarball's .alpine-release says Alpine " + *r.version + ": the cards' apk repositories follow v" +
           branch_of(*r.version);
  return {};
}

std::string release_mismatch_for(const overlay::AlpineSource& spec, const TarballRelease& r) {
  const std::string& v = spec.version;
  if (v == "latest-stable" || v == "edge" || !r.version || branch_of(*r.version) == branch_of(v)) return {};
  const std::string& rel = *r.version;
  const std::string at = spec.location.text();
  return (at.empty() ? "" : at + ": ") + "[alpine].version is \"" + v + "\", but the tarball is Alpine " + rel +
         ": the cards' apk repositories would follow v" + branch_of(v) + " while their kernel and boot packages are " +
         branch_of(rel) + "'s; set version = \"" + branch_of(rel) + "\", or use a " + branch_of(v) + " tarball";
}

void Pipeline::learn_release(const std::filesystem::path& tarball) {
  // Only a spec's cards take their repositories from the release (an
  // --apkovl brings its own), and edge's follow edge whatever the tarball.
  if (file_release_ || !spec_ || spec_->alpine().version == "edge" || release()) return;
  file_release_ = read_tarball_release(ctx_, tarball);
}

std::string Pipeline::release_note() const {
  return spec_ ? release_note_for(spec_->alpine(), learnt()) : "";
}

std::string Pipeline::release_mismatch() const {
  return spec_ ? release_mismatch_for(spec_->alpine(), learnt()) : "";
}

TarballPlan Pipeline::plan_tarball_uncached(bool resolve_release) {
  TarballPlan p;
  std::string src = o_.tarball, sha = o_.sha256;
  std::filesystem::path base = ".";
  if (src.empty() && spec_ && !spec_->alpine().tarball.empty()) {
    src = spec_->alpine().tarball;
    if (sha.empty()) sha = spec_->alpine().sha256;
  }
  if (!src.empty()) {
    if (const std::string local = local_tarball_path(src, sha); !local.empty()) {
      if (o_.tarball.empty()) require_spec_tarball(local, o_.spec);
      p.local = local;
      p.sha256 = sha;
      p.description = local + (sha.empty() ? " (local file)" : " (local file, sha256 " + sha + ")");
    } else {
      if (sha.empty())
        throw Error(Errc::usage, "a tarball URL needs its digest: --sha256 HEX (or sha256 = \"…\" in [alpine])");
      p.url = src;
      p.sha256 = sha;
      p.description = fetch::redact_urls(src) + " (sha256 " + sha + ")";
    }
    return p;
  }
  if (!spec_)
    throw Error(Errc::usage,
                "--apkovl needs --tarball FILE|URL: the Alpine tarball to put it on (an apkovl names "
                "no release); e.g. --tarball \"$(rpi-provision fetch --version 3.22)\"");
  fetch::Query q;
  q.version = spec_->alpine().version;
  q.arch = spec_->alpine().arch;
  q.mirrors = o_.download.mirrors.empty() ? std::vector<std::string>{spec_->alpine().mirror} : o_.download.mirrors;
  if (o_.download.mirrors.empty()) q.mirrors_from = "[alpine].mirror in " + spec_->path().string();
  if (!resolve_release) {
    p.description = "Alpine " + q.version + " " + q.arch + " from " + fetch::redact_urls(q.mirrors.front()) +
                    " (resolved when run)";
    return p;
  }
  // The options' and mirrors' own errors name them, not the spec's version.
  fetch::check_settings(q, fetch_options());
  try {
    p.release = fetch::resolve(q, fetch_options());
  } catch (const Error& e) {
    // A release the mirror lacks: the spec's line says which one was asked for.
    // At [alpine].version's place: shown with the spec's line, placed in --json.
    const overlay::Place& at = spec_->alpine().location;
    if (e.code() != Errc::usage || at.text().empty()) throw;
    throw overlay::SpecErrors({at.problem(at.text() + ": " + e.what())}, 0);
  }
  p.sha256 = p.release->sha256;
  p.description = p.release->file + " (Alpine " + p.release->version + ", sha256 " + p.release->sha256 + ")";
  return p;
}

std::filesystem::path Pipeline::tarball() {
  if (tarball_) return *tarball_;
  TarballPlan p = plan_tarball(true);
  std::filesystem::path got;
  if (!p.url.empty()) {
    got = fetch::fetch_url(p.url, p.sha256, fetch_options());
  } else if (p.release) {
    got = fetch::fetch_release(*p.release, fetch_options());
  } else {
    verify_local_tarball();
    got = p.local;
  }
  ctx_.reporter.finish_progress();
  // A card whose repositories say latest-stable would mix releases once Alpine
  // publishes the next one (its kernel and modloop stay those of this tarball):
  // image_options pins them to this tarball's release when it is known.
  learn_release(got);
  if (const std::string n = release_note(); !n.empty()) ctx_.reporter.note(n);
  if (const std::string w = release_mismatch(); !w.empty()) warn_release_mismatch(ctx_, spec_->alpine(), w);
  tarball_ = got;
  return *tarball_;
}

void Pipeline::verify_local_tarball() {
  const TarballPlan p = plan_tarball(false);  // a local file's plan needs no mirror
  if (p.local.empty() || p.sha256.empty()) return;
  const Stopwatch took;
  verify_tarball_sha256(p.local, p.sha256);
  ctx_.reporter.detail(p.local.string(), p.local.string() + ": sha256 as given, checked in " + took.elapsed());
}

std::optional<std::filesystem::path> Pipeline::tarball_if_local() {
  if (tarball_) return tarball_;
  const TarballPlan p = plan_tarball(!o_.download.offline);
  if (!p.local.empty()) return p.local;
  // A release (or a URL pinned by digest) already in the cache.
  const std::string sha = p.release ? p.release->sha256 : p.sha256;
  if (!sha.empty())
    for (const auto& e : fetch::list_cache(fetch_options().cache_dir))
      if (e.sha256 == sha) return e.path;
  return std::nullopt;
}

PackageReport Pipeline::check_packages(const overlay::HostConfig& host) {
  const bool from_mirror = spec_ && o_.tarball.empty() && spec_->alpine().tarball.empty();
  if (!from_mirror || host.apk.packages.empty()) return {};
  if (!packages_) packages_.emplace(fetch_options(), o_.download.mirrors);
  return packages_->check(host, pinned(host.alpine).branch(), o_.spec, ctx_.reporter);
}

partition::ImageOptions Pipeline::image_options(const Identity& id, std::string* apkovl_name,
                                                std::vector<std::string>* known_hosts,
                                                std::optional<std::uint64_t> card_size) {
  partition::ImageOptions opt;
  opt.source_date_epoch = source_date_epoch();
  opt.force = o_.force;
  opt.events = ctx_.reporter.sink();
  opt.cancel = cancel_;
  std::optional<std::uint64_t> size;
  if (o_.size == "max") {
    // Like [boot] size = "max": each card is filled (the command line refuses it without cards).
    if (card_size) {
      size = std::min(*card_size, partition::max_image_size());  // a FAT partition holds at most 2 TiB
      opt.size_from = partition::ImageOptions::SizeFrom::card;
    }
  } else if (!o_.size.empty()) {
    size = parse_size(o_.size, "--size");
    if (*size == 0)
      throw Error(Errc::usage, "--size " + o_.size + " is no size; leave --size out for the automatic size");
  }
  std::string label = o_.label;
  if (id.host) {
    overlay::BuildOptions bo;
    bo.source_date_epoch = opt.source_date_epoch;
    bo.seed = seed_;
    overlay::HostConfig host = *id.host;
    host.alpine = pinned(host.alpine);
    overlay::BootEdits e = overlay::boot_edits(host);
    // A card that fetches its apkovl over HTTP carries none: building one here
    // would generate SSH host keys (and known_hosts lines) the Pi never gets.
    overlay::Apkovl a;
    if (e.carries_apkovl) {
      // Identical cards are one identity whatever their number (watch counts them).
      const int key = keep_apkovls_ ? 0 : id.n;
      const bool remember = reuse_apkovls_ || keep_apkovls_;
      if (auto it = apkovls_.find(key); remember && it != apkovls_.end())
        a = it->second;
      else
        a = overlay::build_apkovl(host, bo);
      if (remember) apkovls_.emplace(key, a);
    }
    if (label.empty()) label = e.label;
    if (!size) {
      if (e.size) {
        size = e.size;
        opt.size_from = partition::ImageOptions::SizeFrom::spec;
      } else if (e.size_max) {
        if (card_size) {
          size = std::min(*card_size, partition::max_image_size());  // a FAT partition holds at most 2 TiB
          opt.size_from = partition::ImageOptions::SizeFrom::card;
        } else
          ctx_.reporter.note("[boot] size = \"max\" applies to cards; the image gets the automatic size");
      }
    }
    opt.edits = e.edits;
    opt.extra_dirs = e.directories;
    const PackageReport pkgs = check_packages(host);
    if (host.apk.cache && pkgs.download_bytes) {
      // Rounded up, so that the image size (and so its bytes) does not change
      // with every package update in the repositories.
      // At most 16 GiB: the sizes come from a mirror's index.
      constexpr std::uint64_t step = 128ull << 20, most = 16ull << 30;
      opt.reserve_bytes = (std::min(most, pkgs.download_bytes) + step - 1) / step * step;
    }
    if (e.usercfg_txt) opt.extra_files.push_back({"usercfg.txt", *e.usercfg_txt});
    if (e.carries_apkovl) {
      if (apkovl_name) *apkovl_name = a.file_name;
      opt.extra_files.push_back({a.file_name, std::move(a.bytes)});
    } else if (apkovl_name) {
      apkovl_name->clear();
    }
    if (known_hosts) *known_hosts = a.known_hosts;
  } else {
    if (apkovl_name) *apkovl_name = apkovl_name_;
    opt.extra_files.push_back({apkovl_name_, apkovl_data_});
  }
  opt.label = label.empty() ? "ALPINE" : label;
  if (!o_.disk_id.empty()) opt.disk_id = parse_disk_id(o_.disk_id);
  if (size) opt.image_size = *size;
  if (card_size && opt.image_size > *card_size) {
    const std::string fix = "use a larger card, or a smaller --size or [boot] size";
    throw CardTooSmall(Errc::device,
                       "the image (" + format_size(opt.image_size) + ") is larger than the card (" +
                           format_size(*card_size) + "); " + fix,
                       opt.image_size, fix);
  }
  return opt;
}

std::string keymap_error(const overlay::HostConfig& h, const partition::BootKeymaps& k,
                         const std::optional<std::string>& release) {
  if (h.keymap.empty() || !k.known() || k.has(h.keymap)) return {};
  // The tarball's own .alpine-release tells its release better than its name or the mirror.
  const std::optional<std::string> rel = k.release.empty() ? release : std::optional<std::string>(k.release);
  const std::string at = h.keymap_location.text();
  std::string msg = (at.empty() ? "" : at + ": ") + "[system].keymap \"" + h.keymap + "\" is not in " +
                    (rel ? "Alpine " + *rel + "'s kbd-bkeymaps" : "the tarball's " + k.apk) +
                    ": the Pi's keyboard would stay US";
  const std::string layout = h.keymap.substr(0, h.keymap.find(' '));
  std::vector<std::string> variants;
  std::size_t more = 0;
  for (const auto& m : k.keymaps) {
    if (m.compare(0, layout.size() + 1, layout + " ") != 0) continue;
    if (variants.size() < 12)
      variants.push_back(m.substr(layout.size() + 1));
    else
      ++more;
  }
  if (auto best = partition::closest_keymap(h.keymap, k.keymaps); !best.empty())
    msg += " (did you mean \"" + best + "\"?)";
  else if (variants.empty())
    msg += " (it has no layout \"" + layout + "\")";
  else
    msg += " (the layout " + layout + " has " + join(variants) + (more ? ", …)" : ")");
  return msg;
}

namespace {
// A card whose [system].keymap its kbd-bkeymaps lacks loads no keymap at any
// boot (loadkmap fails; the keyboard stays US): the job of `jobs` that makes
// the cards of such an identity stops the build once the tarball is read,
// before any image is made (keymap_error). Keymaps not known (no
// kbd-bkeymaps in the tarball, or one that cannot be read): no check.
void check_keymaps_when_read(const std::vector<Identity>& ids, const std::vector<std::size_t>& job_of,
                             std::vector<partition::ImageJob>& jobs, const std::optional<std::string>& release) {
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (!ids[i].host || ids[i].host->keymap.empty()) continue;
    jobs[job_of[i]].options.check_keymaps = [host = ids[i].host, release](const partition::BootKeymaps& k) {
      // At the keymap's place: shown with the spec's line, placed in --json.
      if (std::string e = keymap_error(*host, k, release); !e.empty())
        throw overlay::SpecErrors({host->keymap_location.problem(std::move(e))}, 0);
    };
  }
}

// Alpine's initramfs installs /etc/apk/world from the card's apks/ (and the
// apk cache) with --no-network unless the kernel command line gives it a
// network (alpine-facts §1.7); the apkovl's rpi-provision-packages service
// installs the rest once the network is up. Names those packages, or ""
// when all are there (or the tarball has no apks/ to judge by, or the
// initramfs has a network).
std::string packages_after_boot(const overlay::HostConfig& h, const std::vector<std::string>& boot) {
  if (boot.empty() || !h.boot.apkovl_url.empty()) return {};
  for (const auto& w : h.boot.cmdline)
    if (w.rfind("ip=", 0) == 0 || w.rfind("alpine_repo=http", 0) == 0) return {};
  std::vector<std::string> missing;
  for (const auto& p : h.apk.packages) {
    const std::string name = overlay::package_name(p);
    if (!std::binary_search(boot.begin(), boot.end(), name)) missing.push_back(name);
  }
  if (missing.empty()) return {};
  std::string list;
  for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
  return "[apk].packages " + list + (missing.size() == 1 ? " is" : " are") +
         " not in the card's boot repository (apks/): the Pi installs " + (missing.size() == 1 ? "it" : "them") +
         " only once its network is up (and not at all without one), " +
         (h.apk.cache ? "then from the card's apk cache at every boot"
                      : "downloading again at every boot; [apk] cache = true keeps them on the card") +
         " (man rpi-provision, PACKAGES)";
}
}  // namespace

CardPlan Pipeline::plan_card(const Identity& id, const std::string& device, std::uint64_t card_size,
                             std::optional<std::uint64_t> content) {
  CardPlan c;
  try {
    c.options = card_options(id, card_size, content, &c.apkovl_name, &c.known_hosts, &c.fills_card);
  } catch (const CardTooSmall& e) {
    c.refused = card_too_small(device, card_size, e.need, e.fix);
  }
  return c;
}

partition::ImageOptions Pipeline::card_options(const Identity& id, std::optional<std::uint64_t> card_size,
                                               std::optional<std::uint64_t> content, std::string* apkovl_name,
                                               std::vector<std::string>* known_hosts, bool* fills_card) {
  partition::ImageOptions opt = image_options(id, apkovl_name, known_hosts, card_size);
  if (fills_card) *fills_card = false;
  if (!card_size || !content) return opt;
  // A card smaller than the automatic size gets an image that fills it, if the files fit.
  std::uint64_t files = *content;
  for (const auto& x : opt.extra_files) files += x.data.size();
  const std::uint64_t need = partition::min_image_size_for(files);
  if (need > *card_size)
    throw CardTooSmall(Errc::device,
                       "the files (about " + format_size(files) + ") need an image of about " + format_size(need) +
                           "; the card has " + format_size(*card_size) + ": use a larger card",
                       need, "the files (about " + format_size(files) + ") need that much; use a larger card");
  if (!opt.image_size && partition::plan_image(opt, content).image_size > *card_size) {
    opt.image_size = *card_size;
    opt.size_from = partition::ImageOptions::SizeFrom::card;
    if (fills_card) *fills_card = true;
  }
  return opt;
}

void refuse_ignored_options(const CLI::App& cmd, const RunOptions& o) {
  const auto refuse = [&cmd](const std::string& input,
                             std::initializer_list<std::pair<const char*, const char*>> opts) {
    for (const auto& [name, why] : opts)
      if (const CLI::Option* opt = cmd.get_option_no_throw(name); opt && opt->count() > 0)
        throw Error(Errc::usage, std::string(name) + " has no effect with " + input + ": " + why + "; leave it out");
  };
  if (!o.image.empty()) {
    constexpr const char* built = "the image keeps the label, disk id and size it was built with";
    constexpr const char* no_spec = "an image has no spec, so no card identities, keys or known_hosts lines";
    constexpr const char* no_tarball = "it writes an existing image and reads no tarball";
    constexpr const char* no_download = "nothing is downloaded";
    refuse("--image", {{"--size", built},
                       {"--label", built},
                       {"--disk-id", built},
                       {"--force", no_tarball},
                       {"--sha256", no_tarball},
                       {"--seed-file", no_spec},
                       {"--known-hosts", no_spec},
                       {"--host", no_spec},
                       {"--first", no_spec},
                       {"--mirror", no_download},
                       {"--cache-dir", no_download},
                       {"--ca-cert", no_download},
                       {"--verify-signature", no_download},
                       {"--keyring", no_download},
                       {"--signing-key-fingerprint", no_download}});
  } else if (!o.apkovl.empty() && o.spec.empty()) {
    refuse("--apkovl",
           {{"--seed-file", "it derives the salts and SSH host keys a spec generates; an apkovl is written as it is"},
            {"--known-hosts", "no SSH host keys are generated for an apkovl, so there are no known_hosts lines"},
            {"--host", "it picks a spec's [[hosts]] entry; every card gets the same apkovl"},
            {"--first", "it numbers a spec's cards ({n}); every card gets the same apkovl"}});
  }
  // An empty --sha256 "" or --disk-id "" is refused too (check_run_values skips unset values).
  for (const char* name : {"--sha256", "--disk-id"})
    if (const CLI::Option* opt = cmd.get_option_no_throw(name); opt && opt->count() > 0) {
      if (std::string_view(name) == "--sha256")
        checked_sha256(o.sha256);
      else
        parse_disk_id(o.disk_id);
    }
}

void check_run_values(RunOptions& o) {
  if (!o.sha256.empty()) o.sha256 = checked_sha256(o.sha256);
  if (!o.size.empty() && o.size != "max") {
    const std::uint64_t bytes = parse_size(o.size, "--size");
    if (bytes < partition::min_image_size())
      throw Error(Errc::usage, "--size " + o.size + " is too small: the smallest image is " +
                                   format_size(partition::min_image_size()) +
                                   "; leave --size out for the automatic size");
  }
  if (!o.label.empty()) check_label_option(o.label);
  if (!o.disk_id.empty()) parse_disk_id(o.disk_id);
  check_download_files(o.download);
}

std::filesystem::path Pipeline::tarball_for(const std::vector<Identity>& ids) {
  // A misspelt package stops the run before the tarball is downloaded.
  plan_tarball(true);
  for (const auto& id : ids)
    if (id.host) check_packages(*id.host);
  return tarball();
}

namespace {

// Signals that end the run wait while finished files of the image builder move
// to temporaries that a signal removes (a moment: renames), so that none is
// ever left behind: recorded, then raised again once this ends.
std::atomic<int> g_deferred_signal{0};
extern "C" void defer_signal(int sig) {
  int none = 0;
  g_deferred_signal.compare_exchange_strong(none, sig);
}
constexpr std::array<int, 4> kEndingSignals{SIGINT, SIGTERM, SIGHUP, SIGPIPE};

class DeferredSignals {
 public:
  DeferredSignals() {
    struct sigaction sa {};
    sa.sa_handler = defer_signal;
    sigemptyset(&sa.sa_mask);
    for (std::size_t i = 0; i < kEndingSignals.size(); ++i) sigaction(kEndingSignals[i], &sa, &old_[i]);
  }
  ~DeferredSignals() {
    for (std::size_t i = 0; i < kEndingSignals.size(); ++i) sigaction(kEndingSignals[i], &old_[i], nullptr);
    if (const int sig = g_deferred_signal.exchange(0)) ::raise(sig);  // the run's own handler takes it now
  }
  DeferredSignals(const DeferredSignals&) = delete;
  DeferredSignals& operator=(const DeferredSignals&) = delete;

 private:
  std::array<struct sigaction, kEndingSignals.size()> old_{};
};

// An output named .xz, .gz, .zst or .bz2, or one whose .bmap goes elsewhere
// (--bmap FILE). The image builder writes the raw image onto `raw`'s
// temporary (and its block map beside that, written at once into `bmap`'s,
// whose target is `bmap_target`), and the image is compressed into `out`'s:
// temporaries that a failure or a signal removes, until the image and its
// .bmap are committed. A compressed output's `raw` is never committed: the raw
// image goes with it; an uncompressed one (no `out`) commits `raw`.
struct PackedOutput {
  PackedOutput(partition::Compression c, const std::filesystem::path& output, const std::filesystem::path& bmap_target)
      : kind(c),
        target(output),
        out(c == partition::Compression::none ? nullptr : std::make_unique<AtomicFile>(output, 0600)),
        raw(std::make_unique<AtomicFile>(output, 0600)),
        bmap(std::make_unique<AtomicFile>(bmap_target, partition::kBmapMode)) {}
  ~PackedOutput() { ::unlink(raw_bmap().c_str()); }  // the builder's .bmap beside the raw image
  PackedOutput(const PackedOutput&) = delete;
  PackedOutput& operator=(const PackedOutput&) = delete;

  const std::filesystem::path& raw_image() const { return raw->temp_path(); }
  std::filesystem::path raw_bmap() const { return raw->temp_path().string() + ".bmap"; }

  partition::Compression kind;
  std::filesystem::path target;
  std::unique_ptr<AtomicFile> out, raw, bmap;
  std::uint64_t size = 0;  // of the compressed file
};

// `text` with the raw image's temporary name replaced by the output's.
std::string output_named(std::string text, const PackedOutput& p) {
  for (const auto& [from, to] : {std::pair{p.raw_image().string(), p.target.string()},
                                 std::pair{p.raw_image().filename().string(), p.target.filename().string()}})
    for (std::size_t at = 0; (at = text.find(from, at)) != std::string::npos; at += to.size())
      text.replace(at, from.size(), to);
  return text;
}

}  // namespace

std::vector<BuiltImage> Pipeline::build(const std::vector<Identity>& ids,
                                        const std::vector<std::filesystem::path>& outputs,
                                        const std::vector<std::optional<std::uint64_t>>& card_sizes,
                                        const std::function<void(const std::vector<BuiltImage>&)>& before_commit) {
  std::filesystem::path tb = tarball_for(ids);
  // Cards of one identity get one apkovl (one set of host keys), and one image per size.
  struct Reuse {
    Pipeline& p;
    explicit Reuse(Pipeline& pl) : p(pl) {
      if (!p.keep_apkovls_) p.apkovls_.clear();
      p.reuse_apkovls_ = true;
    }
    ~Reuse() {
      if (!p.keep_apkovls_) p.apkovls_.clear();
      p.reuse_apkovls_ = false;
    }
  } reuse(*this);
  std::vector<partition::ImageJob> jobs;
  std::vector<std::size_t> job_of(ids.size());                // ids[i] gets jobs[job_of[i]]
  std::map<std::pair<int, std::uint64_t>, std::size_t> same;  // (n, image size) -> job
  std::vector<BuiltImage> built(ids.size());
  // Destroyed after `packed` (declared later), so that a signal it held back
  // finds no file of theirs left to remove but the armed temporaries.
  std::optional<DeferredSignals> deferred;
  std::map<std::size_t, std::unique_ptr<PackedOutput>> packed;  // job -> its compressed output
  std::optional<std::uint64_t> content;
  std::set<std::string> noted;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    built[i].identity = ids[i];
    const std::optional<std::uint64_t> card_size =
        card_sizes.empty() ? std::nullopt : card_sizes[card_sizes.size() == 1 ? 0 : i];
    if (card_size && !content) content = partition::tarball_content_estimate(tb);
    partition::ImageOptions opt;
    bool fills = false;
    try {
      opt = card_options(ids[i], card_size, content, &built[i].apkovl_name, &built[i].known_hosts, &fills);
    } catch (CardTooSmall& e) {
      e.card = i;
      throw;
    }
    const std::uint64_t size =
        opt.image_size || !content ? opt.image_size : partition::plan_image(opt, content).image_size;
    if (auto it = same.find({ids[i].n, size}); it != same.end()) {
      job_of[i] = it->second;
      continue;
    }
    if (fills) {
      const std::string n = "the card (" + format_size(*card_size) +
                            ") is smaller than the automatic image size: the image fills the card";
      if (noted.insert(n).second) ctx_.reporter.note(n);
    }
    job_of[i] = jobs.size();
    same.emplace(std::pair{ids[i].n, size}, jobs.size());
    std::filesystem::path output = outputs[i];
    // Only --output itself: a card run's scratch images are named after their cards (kiosk.apkovl.tar.gz).
    const bool is_output = !o_.output.empty() && output == std::filesystem::path(o_.output);
    const partition::Compression kind = is_output ? partition::compression_for(output) : partition::Compression::none;
    if (kind != partition::Compression::none || (is_output && !o_.bmap.empty())) {
      auto pk = std::make_unique<PackedOutput>(
          kind, output, std::filesystem::path(o_.bmap.empty() ? output.string() + ".bmap" : o_.bmap));
      output = pk->raw_image();
      // Progress and warnings name the output, not the raw image's temporary name.
      if (opt.events)
        opt.events = [sink = opt.events, p = pk.get()](const Event& ev) {
          sink(Event{ev.type, output_named(ev.subject, *p), ev.done, ev.total, output_named(ev.message, *p)});
        };
      packed.emplace(jobs.size(), std::move(pk));
    }
    jobs.push_back({output, std::move(opt)});
  }
  check_keymaps_when_read(ids, job_of, jobs, release());
  std::function<void()> hook;
  if (before_commit || !packed.empty())
    hook = [&] {
      if (before_commit) before_commit(built);
      if (!packed.empty()) deferred.emplace();  // until the raw images' .bmap files are moved
    };
  std::vector<partition::ImageResult> job_results;
  try {
    job_results = partition::build_images(tb, jobs, hook);
  } catch (const Error& e) {
    std::string what = e.what();
    for (const auto& [job, pk] : packed) what = output_named(what, *pk);
    if (what == e.what()) throw;
    throw Error(e.code(), what);
  }
  for (auto& [job, pk] : packed) {
    // The builder's .bmap, written into the temporary of its target (which
    // may be in another folder, or file system, than the image).
    const std::string xml = job_results[job].map.to_bmap_xml();
    write_all(pk->bmap->fd(), xml.data(), xml.size(), "cannot write " + pk->bmap->target().string());
    ::unlink(pk->raw_bmap().c_str());
    job_results[job].image = pk->target;
    job_results[job].bmap = pk->bmap->target();
  }
  deferred.reset();  // a signal held back ends the run now, removing every temporary
  ctx_.reporter.finish_progress();
  for (auto& [job, pk] : packed) {
    if (!pk->out) continue;  // not compressed: the raw image is the output
    const std::string name = pk->target.string();
    try {
      Fd raw = open_or_throw(pk->raw_image().string(), O_RDONLY);
      pk->size = partition::compress_image(raw.get(), "the image built for " + name, job_results[job].image_size,
                                           pk->out->fd(), name, pk->kind,
                                           {ctx_.reporter.sink(), pk->target.filename().string(), cancel_});
    } catch (const Error& e) {
      throw Error(e.code(),
                  std::string(e.what()) + "; nothing was written (" + name + ", if there was one, is left as it was)");
    }
  }
  if (!packed.empty()) {
    ctx_.reporter.finish_progress();
    // Under the lock the image builder renames under: a compressed file and its
    // .bmap of two runs at once must not end up side by side.
    std::vector<std::filesystem::path> targets;
    for (auto& [job, pk] : packed) targets.push_back(pk->target);
    FolderLocks renaming(targets);
    for (auto& [job, pk] : packed) {
      (pk->out ? pk->out : pk->raw)->commit();
      pk->bmap->commit();
    }
  }
  std::vector<partition::ImageResult> results;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    results.push_back(job_results[job_of[i]]);
    if (auto it = packed.find(job_of[i]); it != packed.end() && it->second->out) {
      built[i].compression = it->second->kind;
      built[i].compressed_size = it->second->size;
    }
  }
  packed.clear();  // the raw images
  std::set<std::string> warned;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (ids[i].host && ids[i].host->apk.cache) {
      // A size that was given (or a card that was small) may leave the apk cache too little room.
      const PackageReport pkgs = check_packages(*ids[i].host);
      const std::uint64_t free = results[i].free_bytes;
      if (pkgs.download_bytes > free) {
        const overlay::Boot& boot = ids[i].host->boot;
        const bool given = !o_.size.empty() || boot.size || boot.size_max;
        const std::string w =
            "the card's partition keeps about " + format_size(free) +
            " free, but [apk].packages and their dependencies take about " + format_size(pkgs.download_bytes) +
            " in the apk cache: apk fails once it is full. " +
            (given ? "Leave --size and [boot] size out (the automatic size makes room), or make them larger"
                   : "The card is smaller than the automatic size, which makes room: use a larger card");
        if (warned.insert(w).second) ctx_.reporter.warn(w);
      }
    }
    if (ids[i].host) {
      const std::string w = packages_after_boot(*ids[i].host, results[i].boot_packages);
      if (!w.empty() && warned.insert(w).second) {
        if (ids[i].host->apk.cache)
          ctx_.reporter.note(w);
        else
          ctx_.reporter.warn(w);
      }
    }
    built[i].result = std::move(results[i]);
  }
  return built;
}

// The root command's and watch's --image check, before any card is opened: a
// truncated xz file (no stream footer), a damaged start or a block map of
// another size is an error now, not after the whole file was decompressed.
std::optional<udev::CompressedImage> check_image_file(const std::string& image, const std::string& bmap) {
  if (image == "-")
    throw Error(Errc::usage,
                "watch --image -: standard input is read once, and watch writes card after card: save the image "
                "to a file and give that (--image FILE; ./- for a file named -)");
  Fd fd(::open(image.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))) return std::nullopt;
  const off_t end = ::lseek(fd.get(), 0, SEEK_END);
  std::uint64_t size = end > 0 ? static_cast<std::uint64_t>(end) : 0;
  std::string head(512, '\0');
  const ssize_t got = ::pread(fd.get(), head.data(), head.size(), 0);
  head.resize(got > 0 ? static_cast<std::size_t>(got) : 0);
  std::string what = "--image " + image;
  std::optional<udev::CompressedImage> probed;
  if (const std::string z = udev::compression_of(head); !z.empty()) {
    const udev::CompressedImage& c = probed.emplace(udev::probe_compressed(image, bmap));
    head = udev::decompressed_head(image, 512);
    size = c.map    ? c.map->image_size()
           : c.size ? *c.size
                    : (head.size() < 512 ? head.size() : ~std::uint64_t{0});  // unknown: no bound
    what += " (" + z + "-compressed)";
  }
  // An image cut short (an interrupted download or copy) would be written as
  // if whole, and the card would not boot: its first sector says how large it
  // is at least. (One whose size is unknown until it is decompressed is
  // looked at then: udev::map_without_bmap.)
  const auto* sector = reinterpret_cast<const std::uint8_t*>(head.data());
  if (head.size() == 512 && size != ~std::uint64_t{0}) udev::refuse_cut_short(sector, size, what, probed.has_value());
  if (head.size() == 512 && partition::looks_like_fat_boot_sector(sector))
    return probed;  // a FAT volume without a partition table: its own boot sector
  try {
    partition::parse_mbr(sector, head.size(), size, what);
  } catch (const Error& e) {
    throw Error(Errc::usage, std::string(e.what()) + "; give a disk image such as one made with --output");
  }
  return probed;
}

std::string bmap_names(const std::string& image) {
  std::string out = "looked for ";
  for (const auto& c : udev::bmap_candidates(image)) out += (out.size() > 11 ? ", " : "") + c.string();
  return out;
}

std::string unmapped_text(const udev::FlashSource& src) {
  if (src.map_from == "fat")
    return "written where its FAT holds data (" + format_size(src.map.mapped_bytes()) + " of " +
           format_size(src.map.image_size()) +
           ", the map derived from its FAT; free clusters are left as the card has them)";
  return "every byte of the image is written";
}

namespace {
std::string map_detail(const udev::FlashSource& src, const std::string& took) {
  const std::string name = src.display_name();
  const std::string when = took.empty() ? "" : " in " + took;
  if (src.map_from == "fat")
    return name + ": block map derived from its FAT" + when + ": " + std::to_string(src.map.extents().size()) +
           (src.map.extents().size() == 1 ? " range, " : " ranges, ") + format_size(src.map.mapped_bytes()) + " of " +
           format_size(src.map.image_size()) + " to write (its free clusters left out)";
  if (src.map_from == "whole")
    // map_from_fat does not say why (any doubt is the same nullopt): the line gives no reason.
    return name + ": no block map derived from its FAT (looked" + when +
           "; no MBR or FAT volume read without any doubt, or no free cluster to leave out): every byte of its " +
           format_size(src.map.image_size()) + " is written";
  return "";
}
}  // namespace

void report_map(AppContext& ctx, const std::string& subject, const udev::FlashSource& src, const std::string& took) {
  if (const std::string d = map_detail(src, took); !d.empty()) ctx.reporter.detail(subject, d);
}

}  // namespace rpi::cli
