// spec → plan → run: what the root command and `watch` share. Planning turns
// the options and the spec into card identities, a tarball choice and image
// settings (printed by --dry-run); running fetches, builds and writes.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "app.hpp"
#include "fetch/fetch.hpp"
#include "overlay/apkovl.hpp"
#include "overlay/spec.hpp"
#include "packages.hpp"
#include "partition/compress.hpp"
#include "partition/image.hpp"
#include "partition/tarball_rules.hpp"
#include "rpi/fd.hpp"
#include "udev/device.hpp"
#include "udev/flash.hpp"

namespace rpi::cli {

struct RunOptions {
  std::string spec, apkovl, image, output, tarball, sha256, size, label, host, known_hosts, seed_file;
  // --bmap FILE: the block map of --output's image (written there instead of
  // beside it), or of --image's (read instead of looking beside it).
  std::string bmap;
  std::vector<std::string> devices;
  std::string disk_id;
  DownloadFlags download;
  int first = 1;
  unsigned jobs = 0;  // cards written at once (0: all)
  bool yes = false, no_verify = false, dry_run = false, force = false, wipe = false;
  udev::SafetyOptions safety;
};

// The values of the build options (--sha256, --size, --label, --disk-id,
// --keyring, --ca-cert), checked before anything is resolved or downloaded;
// --sha256 is lower-cased. Throws a usage Error naming the option.
void check_run_values(RunOptions& o);
// Options `cmd` was given that the chosen input ignores (--image: a built
// image's settings and the download flags; --apkovl without a spec: what only a
// spec uses), and an empty --sha256 or --disk-id: a usage Error naming the
// option. Options `cmd` does not have are skipped (the main command and watch).
void refuse_ignored_options(const CLI::App& cmd, const RunOptions& o);

// The image cannot fit this card (an explicit size larger than the card, or
// files that need more than the card holds): a refusal of the card, not of the
// run — station mode reports it and waits for the next card.
class CardTooSmall : public Error {
 public:
  CardTooSmall(Errc code, const std::string& what, std::uint64_t need_bytes, std::string what_to_do,
               std::size_t image = 0)
      : Error(code, what), need(need_bytes), fix(std::move(what_to_do)), card(image) {}
  std::uint64_t need;    // the smallest card that would do, in bytes
  std::string fix;       // what to do: "use a larger card", ...
  std::size_t card = 0;  // which image of Pipeline::build (its index in `ids`)
};

// The local file a tarball source names: a path, or a file:// URL without a
// digest (the spec asks a digest only of http(s)); "" for a URL.
std::string local_tarball_path(const std::string& source, const std::string& sha256);
// The local file a spec's [alpine].tarball names: a path, or a file:// URL
// with or without a digest (a build copies a pinned one into the cache,
// verified); "" for an http(s) URL or no tarball.
std::string spec_tarball_file(const overlay::AlpineSource& a);
// A spec's local [alpine].tarball must be there: Errc::spec naming `spec_path` if not.
void require_spec_tarball(const std::string& path, const std::string& spec_path);
// A local tarball must have the SHA-256 it is pinned to (`sha256`, lower-case
// hex): read in 1 MiB blocks, and Errc::verify "PATH: sha256 is GOT, expected
// SHA256; refusing to use it" if not. What a build, its --dry-run and `check`
// say of a pinned local tarball.
void verify_tarball_sha256(const std::filesystem::path& tarball, const std::string& sha256);

// The Alpine release of a tarball, as a build learns it for a spec's cards.
struct TarballRelease {
  std::optional<std::string> version;  // "3.22.2"; nothing: unknown
  bool from_file = false;              // read from the tarball's own .alpine-release
  bool unread = false;                 // damaged: its .alpine-release could not be read
};
// Reads `tarball`'s .alpine-release (partition::tarball_release), with a
// detail line: from_file, and unread for a damaged tarball (the build refuses
// it with its own message); other errors (an unreadable file) are thrown.
TarballRelease read_tarball_release(AppContext& ctx, const std::filesystem::path& tarball);
// The release of the local tarball a run of `spec` boots, learnt without
// downloading anything, in the build's order: the file's name
// (alpine-rpi-X.Y.Z-ARCH.tar.gz), else its .alpine-release. Nothing for an
// http(s) tarball URL, no [alpine].tarball, a file that is not there, or
// [alpine].version "edge" (whose repositories follow edge whatever the
// tarball); a file that cannot be read gives `unread`, not an error.
std::optional<TarballRelease> local_tarball_release(AppContext& ctx, const overlay::Spec& spec);
// What `check` reads of a spec's local tarball (spec_tarball_file; nothing is
// downloaded): it must be there (require_spec_tarball); pinned by
// [alpine].sha256, the file is read once for both its digest
// (verify_tarball_sha256's refusal and its detail line) and its
// .alpine-release, as local_tarball_release learns it (a damaged one is read
// again, whole, for its digest). Nothing for a URL, no [alpine].tarball or "edge".
std::optional<TarballRelease> check_spec_tarball(AppContext& ctx, const overlay::Spec& spec,
                                                 const std::string& spec_path);
// `warning` (release_mismatch_for's) at [alpine].version's place in the spec
// whose [alpine] is `spec`: the spec's line with a caret; in --json its place.
void warn_release_mismatch(AppContext& ctx, const overlay::AlpineSource& spec, const std::string& warning);
// `a` with latest-stable pinned to `r`'s release (when known): repositories
// that follow latest-stable would mix releases once Alpine publishes the next.
overlay::AlpineSource pin_to_release(overlay::AlpineSource a, const TarballRelease& r);
// What to tell about the release the cards of a spec whose [alpine] is `spec`
// follow: unknown, or read from .alpine-release ("" when nothing to tell).
std::string release_note_for(const overlay::AlpineSource& spec, const TarballRelease& r);
// A warning when `spec`'s [alpine].version names another branch than `r`'s
// release ("" when they agree or either is unknown).
std::string release_mismatch_for(const overlay::AlpineSource& spec, const TarballRelease& r);

// One card's identity: the n of {n} and, with a spec, its resolved configuration.
struct Identity {
  int n = 1;
  // The hostname: the spec's, or with --apkovl the one in the apkovl's
  // etc/hostname, else the apkovl's file name.
  std::string name;
  std::optional<overlay::HostConfig> host;
};

// Whether the cards of `id` carry SSH host keys generated at build time: then
// every card built from its one image has the same keys.
bool generates_host_keys(const Identity& id);
// "<who> the same identity NAME and so the same SSH host keys ...: <what to do>".
std::string shared_host_keys_warning(const std::string& who, const std::string& name);

// Where the Alpine tarball comes from.
struct TarballPlan {
  std::string description;                // for the plan printout
  std::filesystem::path local;            // a local file to use as is
  std::string url, sha256;                // a URL pinned by digest
  std::optional<fetch::Release> release;  // resolved from a mirror
};

// A built image for one identity.
struct BuiltImage {
  Identity identity;
  partition::ImageResult result;
  std::string apkovl_name;
  std::vector<std::string> known_hosts;
  // An output named .xz, .gz, .zst or .bz2: result.image is that compressed
  // file, of `compressed_size` bytes; result.bmap (its name + ".bmap") and the
  // other sizes describe the image uncompressed.
  partition::Compression compression = partition::Compression::none;
  std::uint64_t compressed_size = 0;
};

// What a card of a batch gets: its image settings as the build makes them,
// or why it is refused (what the run then reports for that card).
struct CardPlan {
  partition::ImageOptions options;
  std::string apkovl_name;
  std::vector<std::string> known_hosts;
  bool fills_card = false;  // smaller than the automatic size: the image fills the card
  std::string refused;      // "refusing to write DEV: it has … but the image needs …; …"
};

// What --dry-run learns from reading a local (or cached) tarball is what the
// build learns from it for one card (partition::scan_tarball with the card's
// image settings, as Pipeline::image_options / plan_card make them): the same
// refusals with the same messages, the root files its edits change, the
// apkovls it leaves out, the build's warnings and the kbd-bkeymaps keymaps.
using partition::scan_tarball;
using partition::TarballScan;

// Why the card of `h` cannot have its [system].keymap, at the spec's line
// (with a did-you-mean from `k`, the tarball's kbd-bkeymaps, of Alpine
// `release`), or "" when it can or the tarball's keymaps are unknown. The
// build and the plan both refuse with it (Errc::spec).
std::string keymap_error(const overlay::HostConfig& h, const partition::BootKeymaps& k,
                         const std::optional<std::string>& release);

// --mirror overrides [alpine].mirror for everything it drives: the card's
// default apk repositories name the first http(s) --mirror. Local folders and
// file:// mirrors are paths of this machine: with only those, `h` keeps the
// spec's mirror, as it does without --mirror.
void override_mirror(overlay::HostConfig& h, const std::vector<std::string>& mirrors);
// What the cards get from such an override that the user may not mean: the
// mirror's credentials, and no copy of --ca-cert.
std::vector<std::string> mirror_override_warnings(const std::vector<std::string>& mirrors, const std::string& ca_cert);

class Pipeline {
 public:
  Pipeline(AppContext& ctx, RunOptions opts);

  const RunOptions& options() const { return o_; }
  bool has_spec() const { return spec_.has_value(); }
  const std::optional<overlay::Spec>& spec() const { return spec_; }

  // Identities for `count` cards from --first (or the one --host names). With
  // no spec, every card gets the same apkovl.
  std::vector<Identity> identities(int count) const;
  // The identity of card number n.
  Identity identity_at(int n) const;
  // True when every card of a batch would get the same bytes (one image serves all).
  bool identical_cards() const;
  // How many cards the spec defines (0: any number).
  int defined_cards() const;

  // With resolve_release, the plan is made once (the release resolved on the
  // mirror) and kept for tarball().
  TarballPlan plan_tarball(bool resolve_release);
  // The verified local tarball (downloads into the cache if needed).
  std::filesystem::path tarball();
  // The tarball for building `ids`, after their package check (a misspelt
  // package stops the run before the download); what build() starts with.
  std::filesystem::path tarball_for(const std::vector<Identity>& ids);

  // The image settings for an identity (what --dry-run prints).
  partition::ImageOptions image_options(const Identity& id, std::string* apkovl_name,
                                        std::vector<std::string>* known_hosts,
                                        std::optional<std::uint64_t> card_size = std::nullopt);
  // The settings of `id`'s image for the card `device` of `card_size` bytes,
  // as build() makes them: [boot] size = "max" fills it, a card smaller than
  // the automatic size gets an image that fills it when the files fit, and a
  // card too small for the image is refused (CardPlan::refused). `content`:
  // the tarball's content estimate (unknown: no check of the files' size).
  CardPlan plan_card(const Identity& id, const std::string& device, std::uint64_t card_size,
                     std::optional<std::uint64_t> content);
  // The tarball's content estimate when it is known without downloading: a
  // local file, or a release already in the cache (nullopt otherwise).
  std::optional<std::filesystem::path> tarball_if_local();
  // --dry-run: verifies a local tarball's --sha256 / [alpine].sha256 as the run does.
  void verify_local_tarball();
  // Builds one image per identity, all from one pass over the tarball.
  // `before_commit` sees the identities and host keys (not yet the results)
  // once the images are complete, before they replace any file: if it throws,
  // every output is left as it was (partition::build_images).
  // `card_sizes`: the card each image is for, which bounds its size (one
  // entry: every image's; none: image files). A CardTooSmall names the image
  // (`card`) that does not fit its card. The --output file, named .xz, .gz,
  // .zst or .bz2 (partition::compression_for), is built raw under a temporary
  // name beside it, then compressed into it; its .bmap (its name + ".bmap")
  // describes the raw image, and no temporary outlives the call (or a signal).
  std::vector<BuiltImage> build(const std::vector<Identity>& ids, const std::vector<std::filesystem::path>& outputs,
                                const std::vector<std::optional<std::uint64_t>>& card_sizes = {},
                                const std::function<void(const std::vector<BuiltImage>&)>& before_commit = {});

  fetch::Options fetch_options() const;

  // Checks a card's [apk].packages against its repositories' indexes when the
  // tarball comes from a mirror (throws Errc::spec for a name no repository
  // has; see packages.hpp). Without packages, or with a --tarball, an empty report.
  PackageReport check_packages(const overlay::HostConfig& host);

  // Card runs and watch: from now on the download and the image builds stop
  // (throwing rpi::Cancelled) once `flag` is set, instead of running to their end.
  void set_cancel(const std::atomic<bool>* flag) {
    cancel_ = flag;
    if (packages_) packages_->set_cancel(flag);  // made before (watch checks at start)
  }

  // Every build() after this one gives identical cards the apkovl (SSH host
  // keys, salts) the first built: a station (watch) that builds again for a
  // card of another size then keeps one identity, as a --device batch does.
  // Only for identical_cards(): the map would grow with each card number.
  void keep_identical_apkovls() { keep_apkovls_ = identical_cards(); }

  // The Alpine release of the resolved tarball ("3.22.2") when known: from the
  // mirror's index, from an alpine-rpi-X.Y.Z-ARCH.tar.gz file name, or from
  // the tarball's own .alpine-release once learn_release has read it.
  std::optional<std::string> release() const;
  // Reads `tarball`'s .alpine-release (partition::tarball_release) when the
  // spec's cards need the release (not edge, not --apkovl) and neither the
  // index nor the name tells it: a tarball its owner named. Once per run;
  // tarball() calls it, and a plan with the tarball at hand.
  void learn_release(const std::filesystem::path& tarball);
  // What to tell about the release the latest-stable cards' repositories
  // follow: unknown, or read from .alpine-release ("" when nothing to tell).
  std::string release_note() const;
  // A warning when [alpine].version names another branch than the tarball's
  // release ("" when they agree or either is unknown).
  std::string release_mismatch() const;

 private:
  AppContext& ctx_;
  RunOptions o_;
  std::optional<overlay::Spec> spec_;
  std::string apkovl_data_, apkovl_name_;
  std::string apkovl_host_;          // --apkovl: what names its cards (Identity::name)
  std::optional<std::string> seed_;  // --seed-file's contents
  TarballPlan plan_tarball_uncached(bool resolve_release);
  // image_options for a card of `card_size` (see plan_card); throws CardTooSmall.
  partition::ImageOptions card_options(const Identity& id, std::optional<std::uint64_t> card_size,
                                       std::optional<std::uint64_t> content, std::string* apkovl_name,
                                       std::vector<std::string>* known_hosts, bool* fills_card);
  // `a` with latest-stable pinned to that release (pin_to_release).
  overlay::AlpineSource pinned(overlay::AlpineSource a) const { return pin_to_release(std::move(a), learnt()); }
  // What is known of the release: release(), and whether learn_release read it.
  TarballRelease learnt() const;

  std::optional<TarballPlan> resolved_;
  std::optional<std::filesystem::path> tarball_;
  std::optional<TarballRelease> file_release_;  // learn_release's reading
  const std::atomic<bool>* cancel_ = nullptr;
  std::optional<PackageChecker> packages_;
  // Within one build(): the apkovl of each identity (by n), built once, so
  // that the images of cards of one identity but different sizes carry the
  // same one (the same generated host keys and salts).
  std::map<int, overlay::Apkovl> apkovls_;
  bool reuse_apkovls_ = false;
  bool keep_apkovls_ = false;  // keep_identical_apkovls
};

// The files a run of `o` reads (for refuse_overwriting_inputs): the inputs
// given, a local --tarball, and with `p`'s spec every file the spec reads.
std::vector<RunFile> inputs_of(const RunOptions& o, const Pipeline* p);

std::string geometry_text(const partition::FatGeometry& g);

// The per-card and final JSON results of docs/json-events.md (and nothing in human mode).
struct CardDone {
  std::string target, hostname;
  int index = 0;
  bool ok = false, verified = false;
  std::uint64_t bytes = 0;
  double seconds = 0;
  std::string bmap, error;
  std::vector<std::string> known_hosts;
};
void emit_card_done(AppContext& ctx, const CardDone& c);
void emit_summary(AppContext& ctx, int cards, int failed, double seconds, int exit_code);

// Ctrl-C handling for device writes: the flag flips on SIGINT, SIGTERM, SIGHUP
// or SIGPIPE.
const std::atomic<bool>* install_cancel_handler();
// The signal that cancelled the run (0: none); the exit code is then 128 + it.
int cancel_signal();
// A download stopped by a signal: says what was kept for the next run (a
// network error) and sets the exit status to 128 + the signal.
void report_cancelled_download(AppContext& ctx, const Cancelled& e);

// A folder for temporary images ($TMPDIR/rpi-provision.XXXXXX, default
// /var/tmp), removed with everything in it. Made, it warns about those that
// killed runs left beside it (warn_scratch_leftovers).
class ScratchDir {
 public:
  explicit ScratchDir(AppContext& ctx);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  // Where the folder is made: $TMPDIR, else /var/tmp.
  static std::string parent();

 private:
  std::filesystem::path path_;
  // The folder, flocked while the run lives: another run's look for leftovers
  // (warn_scratch_leftovers) passes over it (a pipe of two runs, one per end).
  Fd lock_;
};

// Why a card of `has` bytes is not written with an image of `need`:
// "refusing to write DEV: it has … but the image needs …; FIX" (the plan, the
// run and watch say it alike).
std::string card_too_small(const std::string& device, std::uint64_t has, std::uint64_t need,
                           const std::string& fix = "use a larger card");

// A compressed --image (`probed`: udev::probe_compressed of it, not read
// again) decompressed once, before any card is opened, into a
// new ScratchDir put in `scratch` (its removal removes the image):
// "decompress" progress, "set TMPDIR" when it fills up. An image larger than
// `max_size` (the largest card it is for; nothing: no bound) is an
// Errc::device error ending with `too_large` (udev::DecompressOptions). After
// `cancel` turned true: nullptr, and `scratch` is emptied.
std::shared_ptr<const udev::FlashSource> decompress_for_cards(
    AppContext& ctx, const std::string& image, const udev::CompressedImage& probed, std::optional<ScratchDir>& scratch,
    const std::atomic<bool>* cancel, std::optional<std::uint64_t> max_size, const std::string& too_large);

// --image FILE (the root command's and watch's) is a disk image: an MBR with
// its 55 AA signature in sector 0, or a FAT boot sector (no partition table),
// of the file or, when it is compressed, of its first 512 bytes decompressed
// (only those are). Throws Errc::usage ("--image FILE: not a disk image: ...;
// give a disk image such as one made with --output"), Errc::input for a
// damaged or truncated compressed file or a block map of another size. A
// missing or unreadable file is left to the writer, which names it. Returns
// the probe of a compressed image (udev::probe_compressed), for the caller to
// plan and decompress with; nothing for a raw one (or one left to the writer).
// `bmap` (--bmap) is the compressed image's block map instead of the one
// beside it. "-" (standard input: the root command spools it first) is a usage
// error: watch writes card after card, and standard input is read once.
std::optional<udev::CompressedImage> check_image_file(const std::string& image, const std::string& bmap = "");

// "looked for pi.img.xz.bmap, pi.img.bmap, pi.bmap": the names bmaptool tries
// for an --image, for a plan or note that found none.
std::string bmap_names(const std::string& image);

// How an image without a .bmap is written, for a note or a plan: where its FAT
// volumes hold data (the map derived from its FAT: udev::map_without_bmap),
// else every byte.
std::string unmapped_text(const udev::FlashSource& src);
// The -v line about how `src`'s map came about when it has no .bmap, as a
// detail under `subject` (map_from "fat": its ranges, mapped bytes of all,
// `took`; "whole": that every byte is written); none for a .bmap's or a
// build's map. `took` is the time the map took ("0.01 s"), "" when it was not
// timed apart (derived inside a decompression).
void report_map(AppContext& ctx, const std::string& subject, const udev::FlashSource& src, const std::string& took);
// unmapped_text for a compressed image without a .bmap that is not decompressed yet (a plan).
inline constexpr const char* kUnmappedOnceDecompressed =
    "derived from its FAT once it is decompressed (written where its FAT holds data; free clusters are left as the "
    "card has them), else every byte of the image is written";

}  // namespace rpi::cli
