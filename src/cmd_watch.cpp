// `watch`: station mode. Every card inserted from now on is checked, written
// with the next identity, verified and announced "safe to remove".
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include "app.hpp"
#include "overlay/spec.hpp"
#include "partition/boot_fat.hpp"
#include "partition/image.hpp"
#include "partition/reader.hpp"
#include "pipeline.hpp"
#include "rpi/atomic_file.hpp"
#include "rpi/digest.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"
#include "udev/flash.hpp"
#include "udev/hotplug.hpp"

namespace rpi::cli {
namespace {

struct WatchOptions {
  RunOptions run;
  std::string known_hosts;  // file kept up to date with the keys of every card written
  std::string state;        // file holding the next card number, across restarts
  int count = 0;
  bool poll = false, first_given = false;
  // Hidden, for tests: where the station looks for new disks (fake trees that
  // link only the loop devices a test attached); a disk found there is
  // inspected and written as the system sees it.
  std::string sys = "/sys", dev = "/dev";
};

// The next card number kept in --state FILE, or nothing when the file does not exist yet.
std::optional<int> read_state(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error(Errc::usage, "--state " + path + " is a folder; give a file name (it holds the next card number)");
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string text;
  std::getline(in, text);
  while (!text.empty() && (text.back() == '\r' || text.back() == ' ' || text.back() == '\t')) text.pop_back();
  char* end = nullptr;
  long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v < 1 || v > 1000000)
    throw Error(Errc::usage, "--state " + path + ": expected the next card number (1 or more), found '" +
                                 text.substr(0, 40) + "'; fix it, or remove it to start at --first");
  return static_cast<int>(v);
}

// The last card a run from card `n` writes: up to --count, up to the last
// [[hosts]] entry (`last`), else 0 (open-ended).
int last_card(const WatchOptions& w, int n, int last) {
  if (w.count <= 0) return last;
  return last == 0 ? n + w.count - 1 : std::min(last, n + w.count - 1);
}

// --dry-run: what the station would do, from which card on; nothing is written, not even --state.
// `bmap`: with --image, the block map used ("" for none) and its mapped bytes;
// `unmapped`: without one, how the image is written (unmapped_text); `map`:
// where the map comes from (FlashSource::map_from, "unknown" for a compressed
// image without a .bmap: the plan does not decompress it).
void print_watch_plan(AppContext& ctx, const WatchOptions& w, Pipeline* p, int n, int last,
                      const std::filesystem::path& bmap = {}, std::uint64_t mapped = 0,
                      const std::string& unmapped = "every byte of the image is written",
                      const std::string& map = "unknown") {
  const RunOptions& o = w.run;
  std::ostringstream s;
  JsonObject j;
  s << kPlanHeading;
  if (p) {
    TarballPlan t = p->plan_tarball(!o.download.offline);
    s << "  tarball: " << t.description << "\n";
    j.add("tarball", t.description);
    // A local (or cached) tarball gets the run's checks: its digest, gzip, the Alpine boot files.
    p->verify_local_tarball();
    if (const auto tb = p->tarball_if_local()) {
      partition::ImageOptions io;
      io.force = o.force;
      for (const auto& ovl : scan_tarball(*tb, io).apkovls)
        s << "  leaves out the tarball's " << ovl << " (the card gets exactly one apkovl)\n";
    }
  } else {
    s << "  image: " << o.image << " (the same on every card)\n";
    j.add("image", o.image).add("bmap", bmap.string()).add("map", map);
    if (!bmap.empty())
      s << "  block map: " << bmap.string() << ", " << format_size(mapped) << " to write\n";
    else
      s << "  block map: none (" << bmap_names(o.image) << "): " << unmapped << "\n";
  }
  const int stop = last_card(w, n, last);
  const int shown = stop == 0 ? n + 2 : std::min(stop, n + 9);
  std::string cards = "[";
  s << "  cards, in the order inserted:\n";
  for (int k = n; k <= shown; ++k) {
    std::string name = p ? p->identity_at(k).name : "";
    s << "    card " << k << (name.empty() ? "" : ": " + name) << "\n";
    JsonObject c;
    c.add("index", k).add("hostname", name);
    cards += (cards.size() > 1 ? "," : "") + c.str();
  }
  cards += "]";
  if (p && p->identical_cards()) {
    // As run_watch builds them: an image per image size (see KeptImage).
    const Identity id = p->identity_at(n);
    const bool max = o.size == "max" || (o.size.empty() && id.host && !id.host->boot.size && id.host->boot.size_max);
    const bool given = !max && (!o.size.empty() || (id.host && id.host->boot.size));
    s << (max     ? "    (every card the same: one image per card size, each filling its card)\n"
          : given ? "    (every card the same: the image is built once)\n"
                  : "    (every card the same: the image is built once, and again for a card smaller than the "
                    "automatic size: an image that fills it)\n");
  }
  if (stop == 0)
    s << "    … and on, one card after another, until Ctrl-C\n";
  else if (stop > shown)
    s << "    … up to card " << stop << "\n";
  if (stop != 0) {
    s << "  then: stops after card " << stop << "\n";
    j.add("last", stop);
  }
  if (!w.state.empty()) {
    s << "  state: " << w.state << " (the next card number, updated after each card)\n";
    j.add("state", w.state);
  }
  if (!w.known_hosts.empty()) {
    s << "  known_hosts: " << w.known_hosts << " (merged after each card)\n";
    j.add("known_hosts", w.known_hosts);
  }
  s << "  each card: checked (not a system disk, not in use"
    << (o.safety.allow_non_removable ? "" : ", removable or on USB/MMC")
    << (o.safety.allow_large ? "" : ", at most 512 GiB")
    << (o.safety.unmount ? "; mounted partitions are unmounted first" : ", nothing mounted") << "), "
    << (o.yes         ? "written"
        : ::isatty(0) ? "written once you confirm"
                      : "written (needs --yes: no terminal to confirm on)")
    << (o.wipe ? ", erased whole (--wipe)" : "") << ", "
    << (o.no_verify ? "not verified (--no-verify)" : "verified by reading it back");
  j.add("first", n)
      .add_raw("cards", cards)
      .add_bool("verify", !o.no_verify)
      .add_bool("wipe", o.wipe)
      .add_bool("dry_run", true);
  ctx.reporter.result("plan", s.str(), std::move(j));
}

// What tells the cards of one run apart, as read from a card or from the image
// written to it. The disk id and the volume id derive from a digest of the
// image's files and edits (the apkovl with its hostname and host keys, and
// cmdline.txt with its apkovl=URL). An id given with --disk-id is the same on
// every card, so the digest of cmdline.txt is part of the mark as well.
struct CardMark {
  std::uint32_t disk_id = 0;
  std::uint32_t volume_id = 0;
  std::string cmdline;  // SHA-256 of the boot FAT's cmdline.txt; "" when it has none
  bool operator==(const CardMark&) const = default;
};

// A card this run wrote.
struct WrittenCard {
  CardMark mark;
  std::string identity;  // hostname, apkovl or image file
  int index = 0;         // its {n}
  std::time_t when = 0;
};

// The mark of the medium at `path`, read only: the MBR's disk id, and unless
// `disk_id_only` the boot FAT's (the first FAT partition that opens) volume id
// and cmdline.txt. nullopt for anything else (a blank card, garbage, a GPT, no
// partition table or no FAT, a read error): such a card is taken for a new one.
std::optional<CardMark> read_mark(const std::string& path, bool disk_id_only) {
  try {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return std::nullopt;
    const partition::BootFat boot = partition::open_boot_fat(
        fd.get(), path, disk_id_only ? partition::BootFatRead::table : partition::BootFatRead::volume);
    if (boot.superfloppy() || boot.gpt()) return std::nullopt;
    CardMark m;
    m.disk_id = boot.mbr->disk_id;
    if (disk_id_only) return m;
    if (!boot.volume || !boot.volume->info().has_volume_id) return std::nullopt;
    m.volume_id = boot.volume->info().volume_id;
    if (auto f = boot.volume->stat("cmdline.txt"); f && !f->is_directory())
      m.cmdline = sha256_hex(boot.volume->read_file("cmdline.txt", 64 * 1024));
    return m;
  } catch (const std::exception&) {
    // Unreadable: a new card.
  }
  return std::nullopt;
}

// The card this run wrote that `path` still holds, or nullptr. The disk id is
// read first (one sector): only a card whose disk id is known is read further.
const WrittenCard* already_written(const std::string& path, const std::vector<WrittenCard>& written) {
  if (written.empty()) return nullptr;
  std::optional<CardMark> id = read_mark(path, true);
  if (!id ||
      std::none_of(written.begin(), written.end(), [&](const WrittenCard& c) { return c.mark.disk_id == id->disk_id; }))
    return nullptr;
  std::optional<CardMark> mark = read_mark(path, false);
  if (!mark) return nullptr;
  // The latest: with the same image on every card, they all carry the same mark.
  auto it = std::find_if(written.rbegin(), written.rend(), [&](const WrittenCard& c) { return c.mark == *mark; });
  return it == written.rend() ? nullptr : &*it;
}

void report_already_written(AppContext& ctx, const std::string& target, const WrittenCard& c, bool from_image) {
  std::tm tm{};
  ::localtime_r(&c.when, &tm);
  char at[16];
  std::strftime(at, sizeof at, "%H:%M:%S", &tm);
  const std::string what = c.identity.empty() ? "card " + std::to_string(c.index) : c.identity;
  JsonObject j;
  j.add("target", target)
      .add("hostname", from_image ? "" : c.identity)
      .add("index", c.index)
      .add("written_at", static_cast<std::int64_t>(c.when))
      .add("disk_id", hex32(c.mark.disk_id));
  ctx.reporter.finish_progress();
  ctx.reporter.result("card-already-written",
                      "card " + target + " already holds " + what + " (card " + std::to_string(c.index) +
                          "), written by this station at " + at + ": not written again; remove it",
                      std::move(j));
}

// An image the station built, kept for the next cards that get the same one.
// Like a batch (--device), every card gets an image of its own size: [boot]
// size = "max" fills each card, and a card smaller than the automatic size
// gets one that fills it. So an image serves again only a card it was built for.
struct KeptImage {
  std::shared_ptr<const udev::FlashSource> src;
  std::filesystem::path bmap;
  std::vector<std::string> known_hosts;
  int n = 0;  // the identity ({n}) it holds
  std::uint64_t image_size = 0;
  // Its size is its card's (rounded down as the build does): "max", or a card
  // smaller than the automatic size. (A given or automatic size that happens
  // to be the card's counts too: a larger card then gets a build of its own.)
  bool card_sized = false;
};
// Images kept in the scratch folder at once, the one being built included:
// a station that sees cards of many sizes must not fill $TMPDIR.
constexpr std::size_t kKeptImages = 2;

// The size of the image that fills a card of `card_size` bytes; 0 when none fits.
std::uint64_t filling_size(std::uint64_t card_size) {
  if (card_size < partition::min_image_size()) return 0;
  partition::ImageOptions io;
  io.image_size = card_size;
  return partition::plan_image(io, std::nullopt).image_size;
}

// Whether a card of `card_size` bytes gets `k`: an image sized from its card
// serves cards of that size; another (a given or the automatic size) any card
// it fits, which the build gives the same size.
bool serves(const KeptImage& k, std::uint64_t card_size) {
  return k.card_sized ? filling_size(card_size) == k.image_size : card_size >= k.image_size;
}

// Removes the image (and its .bmap) from the scratch folder: it holds the card's secrets.
void discard(const KeptImage& k) {
  std::error_code ec;
  std::filesystem::remove(k.src->image, ec);
  std::filesystem::remove(k.bmap, ec);
}

void run_watch(AppContext& ctx, WatchOptions& w) {
  RunOptions& o = w.run;
  const bool from_image = !o.image.empty();
  if (from_image + !o.spec.empty() + !o.apkovl.empty() != 1)
    throw Error(Errc::usage, "watch needs exactly one of --spec, --apkovl or --image");
  if (!o.yes && !o.dry_run && !::isatty(0))
    throw Error(Errc::usage, "watch writes every card inserted: without a terminal to confirm on, pass --yes");
  std::optional<Pipeline> p;
  std::optional<ScratchDir> scratch;
  std::shared_ptr<const udev::FlashSource> shared;
  if (!from_image) p.emplace(ctx, o);
  // Every option is checked before the image is read through (a compressed
  // one decompressed): a typo in --state or --known-hosts costs nothing.
  // Neither file a station keeps may be one it reads.
  refuse_overwriting_inputs({{"--known-hosts " + w.known_hosts, w.known_hosts}, {"--state " + w.state, w.state}},
                            inputs_of(o, p ? &*p : nullptr));
  // Card n takes [[hosts]] entry n: without a {n} hostname for more, the last entry is the last card.
  const int last =
      p && p->defined_cards() > 0 && !(p->spec() && p->spec()->hostname_templated()) ? p->defined_cards() : 0;
  int n = o.first;
  if (!w.state.empty() && !w.first_given) {  // an explicit --first starts over
    if (std::optional<int> saved = read_state(w.state)) {
      n = *saved;
      ctx.reporter.note("continuing at card " + std::to_string(n) + " (from " + w.state + ")");
    }
  }
  if (last != 0 && w.first_given && o.first > last)
    throw Error(Errc::usage, "--first " + std::to_string(o.first) + " is beyond the " + std::to_string(last) +
                                 " [[hosts]] entries of " + o.spec);
  if (last != 0 && n > last) {
    // With --json a note (the stream says it too); as text always printed, also with -q.
    const auto say = [&](const std::string& m) { ctx.json ? ctx.reporter.note(m) : ctx.reporter.text(m); };
    say("all " + std::to_string(last) + " [[hosts]] entries of " + o.spec + " are written (next card would be " +
        std::to_string(n) + "); nothing to do" +
        (w.state.empty() ? "" : " — remove " + w.state + " or pass --first to start over"));
    emit_summary(ctx, 0, 0, 0.0, 0);
    return;
  }
  if (p && (last == 0 || last > n) && w.count != 1) {
    const Identity a = p->identity_at(n), b = p->identity_at(n + 1);
    if (a.name == b.name && generates_host_keys(a))
      ctx.reporter.warn(shared_host_keys_warning("every card of this station gets", a.name));
  }
  // The image: what can be checked without reading it through, as the root
  // command checks it (its first sector; of a compressed one only that much is
  // decompressed), its .bmap under bmaptool's names.
  std::optional<udev::CompressedImage> packed;
  std::shared_ptr<udev::FlashSource> raw;
  if (from_image) {
    packed = check_image_file(o.image);  // probed there when compressed
    if (!packed) {
      const Stopwatch took;
      raw = std::make_shared<udev::FlashSource>(*udev::FlashSource::open(o.image));
      report_map(ctx, o.image, *raw, took.elapsed());
    } else if (o.dry_run) {
      const udev::CompressedImage& c = *packed;
      const std::optional<std::uint64_t> size = c.expected_size();
      ctx.reporter.note(o.image + " is " + c.compression +
                        "-compressed: the station decompresses it once, before the first card" +
                        (size ? " (" + format_size(*size) + ")" : std::string()) +
                        (c.map ? ", and writes what " + c.bmap.string() + " maps"
                               : ", and writes where its FAT holds data, else every byte of it (no .bmap beside it)"));
    }
  }
  if (o.dry_run) {
    if (raw) udev::check_source(*raw);  // a stale .bmap shows in the plan
    if (packed && packed->map)
      return print_watch_plan(ctx, w, nullptr, n, last, packed->bmap, packed->map->mapped_bytes(), "", "bmap");
    if (raw)
      return print_watch_plan(ctx, w, nullptr, n, last, raw->bmap, raw->map.mapped_bytes(), unmapped_text(*raw),
                              raw->map_from);
    if (packed) return print_watch_plan(ctx, w, nullptr, n, last, {}, 0, kUnmappedOnceDecompressed);
    return print_watch_plan(ctx, w, p ? &*p : nullptr, n, last);
  }
  // Written now, so an unwritable --state is an error before any card rather than after the first.
  if (!w.state.empty()) write_file_atomic(w.state, std::to_string(n) + "\n", 0644);
  if (packed) {
    // A compressed image (gzip, xz, zstd, bzip2) is decompressed once for
    // the station, before the first card, into its private scratch folder,
    // and its .bmap (bmaptool's names) compared with the data as it goes.
    // No card the station takes holds more than 512 GiB (without --allow-large).
    const std::optional<std::uint64_t> max =
        o.safety.allow_large ? std::nullopt : std::optional<std::uint64_t>(udev::kLargeDevice);
    // Ctrl-C now: no card touched, the scratch folder removed.
    shared = decompress_for_cards(ctx, o.image, *packed, scratch, install_cancel_handler(), max,
                                  "the station takes cards of at most " + format_size(udev::kLargeDevice) +
                                      "; --allow-large permits larger ones");
    ctx.reporter.finish_progress();
    if (!shared) {
      ctx.reporter.note("stopped while decompressing " + o.image + ": no card was written");
      ctx.exit_code = 128 + cancel_signal();
      return;
    }
    // Derived as the decompression ended: its time is in the decompression's.
    report_map(ctx, o.image, *shared, "");
  } else if (raw) {
    // A station checks its image against the .bmap once, before the first
    // card, instead of failing every card inserted.
    udev::check_source(*raw);
    raw->check_ranges = false;
    shared = std::move(raw);
  }
  if (p) {
    // A misspelt package is an error now, not when the first card is inserted.
    p->plan_tarball(true);
    for (int k = n; k <= std::max(n, last_card(w, n, last)); ++k)
      if (Identity id = p->identity_at(k); id.host) p->check_packages(*id.host);
    p->tarball();                 // fetched and verified once, before the first card
    p->keep_identical_apkovls();  // an image for another card size keeps the first card's host keys
    scratch.emplace(ctx);
  }
  udev::HotplugMonitor::Options mo;
  mo.force_polling = w.poll;
  mo.roots.sys = w.sys;  // not /sys: polling only
  mo.roots.dev = w.dev;
  udev::HotplugMonitor monitor(mo);
  const std::atomic<bool>* cancel = install_cancel_handler();
  if (p) p->set_cancel(cancel);  // Ctrl-C during a card's build ends the station at once
  ctx.reporter.note(std::string("watching for cards (") + (monitor.using_udev() ? "udev events" : "polling sysfs") +
                    "); insert a card, Ctrl-C to stop");
  const auto start = std::chrono::steady_clock::now();
  int done = 0, failed = 0;
  std::vector<std::string> known_hosts, all_known_hosts;
  // The cards written so far, to know one inserted again: in memory, for this run only.
  std::vector<WrittenCard> written;
  std::vector<KeptImage> kept;                      // images built for the cards so far, at most kKeptImages
  std::shared_ptr<const udev::FlashSource> marked;  // the source `mark` was read from (held: no address reuse)
  std::optional<CardMark> mark;
  while (!cancel->load() && (w.count == 0 || done < w.count) && (last == 0 || n <= last)) {
    std::optional<std::string> dev = monitor.next(std::chrono::seconds(1), cancel);
    if (!dev) continue;
    udev::DeviceInfo info;
    try {
      info = udev::inspect_target(*dev, {}, udev::ContentProbe::skip);  // nothing here shows what it holds
    } catch (const Error& e) {
      ctx.reporter.note("ignoring " + *dev + ": " + e.what());
      continue;
    }
    std::vector<std::string> why = udev::refusal_reasons(info, o.safety);
    if (!why.empty()) {
      std::string text;
      for (const auto& r : why) text += (text.empty() ? "" : "; ") + r;
      ctx.reporter.note("not writing " + info.path + " (" + info.describe() + "): " + text);
      continue;
    }
    std::shared_ptr<const udev::FlashSource> src = shared;
    std::string identity = from_image ? o.image : "";
    if (from_image && info.size && info.size < shared->map.image_size()) {
      // Refused like a fixed disk (and like a card too small for a spec's image): the next one may be larger.
      ctx.reporter.note("not writing " + info.path + " (" + info.describe() + "): it has " + format_size(info.size) +
                        " but the image needs " + format_size(shared->map.image_size()) + "; use a larger card");
      continue;
    }
    // A card this run wrote, inserted again, keeps its identity: writing the
    // next one over it would leave its own (hostname, host keys) on no card.
    if (const WrittenCard* seen = already_written(info.path, written)) {
      report_already_written(ctx, info.path, *seen, from_image);
      continue;
    }
    try {
      if (!from_image) {
        Identity id = p->identity_at(n);
        identity = id.name;
        // Every card the same: an image serves each card that gets it. Else
        // only a retry of this identity (a card refused, skipped or failed).
        const bool same = p->identical_cards();
        for (auto it = kept.begin(); it != kept.end();)
          if (!same && it->n != id.n) {
            discard(*it);
            it = kept.erase(it);
          } else {
            ++it;
          }
        auto hit = std::find_if(kept.begin(), kept.end(), [&](const KeptImage& k) { return serves(k, info.size); });
        if (hit != kept.end()) {
          std::rotate(hit, hit + 1, kept.end());  // the most recently used last
        } else {
          while (kept.size() >= kKeptImages) {  // the least recently used goes first
            discard(kept.front());
            kept.erase(kept.begin());
          }
          const std::string base = id.name.empty() ? "card" : id.name;
          std::filesystem::path out = scratch->path() / (base + ".img");
          for (int k = 2;
               std::any_of(kept.begin(), kept.end(), [&](const KeptImage& x) { return x.src->image == out; }); ++k)
            out = scratch->path() / (base + "-" + std::to_string(k) + ".img");
          auto built = p->build({id}, {out}, {std::optional<std::uint64_t>(info.size)});
          const BuiltImage& b = built.front();
          kept.push_back(KeptImage{udev::FlashSource::built(b.result.image, b.result.map), b.result.bmap, b.known_hosts,
                                   id.n, b.result.image_size, b.result.image_size == filling_size(info.size)});
        }
        src = kept.back().src;
        known_hosts = kept.back().known_hosts;
      }
    } catch (const Cancelled& e) {
      if (dynamic_cast<const fetch::DownloadCancelled*>(&e)) ctx.reporter.note(e.what());
      ctx.reporter.note("stopped before writing card " + std::to_string(n) + ": " + info.path + " was not changed");
      break;
    } catch (const CardTooSmall& e) {
      // This card is refused, like a fixed disk: the next one inserted may be larger.
      ctx.reporter.note("not writing " + info.path + " (" + info.describe() + "): " + e.what());
      continue;
    } catch (const Error& e) {
      // Each error names the card; a spec's (overlay::SpecErrors) with its line.
      const std::string card = "card " + std::to_string(n) + " on " + info.path + ": ";
      if (const auto* spec = dynamic_cast<const overlay::SpecErrors*>(&e); spec && !spec->problems().empty()) {
        std::vector<Reporter::Located> errors;
        for (const auto& x : spec->problems())
          errors.push_back({card + x.message, x.excerpt, x.line, x.column, x.file});
        const std::string more = spec->more_text();
        ctx.reporter.errors(e.code(), errors, spec->more(), more.empty() ? more : card + more);
      } else {
        std::istringstream lines(e.what());
        for (std::string line; std::getline(lines, line);) ctx.reporter.error(e.code(), card + line);
      }
      ++failed;
      break;
    }
    if (!o.yes) {
      std::fprintf(stderr, "write %s to %s (%s)? [y/N] ", printable(identity).c_str(), printable(info.path).c_str(),
                   printable(info.describe()).c_str());
      std::string answer;
      std::getline(std::cin, answer);
      if (answer != "y" && answer != "Y") {
        ctx.reporter.note("skipped " + info.path);
        continue;
      }
    }
    if (src != marked) {  // read from the image, before it is written (the next build replaces it)
      mark = read_mark(src->image.string(), false);
      marked = src;
    }
    udev::FlashOptions fo;
    fo.verify = !o.no_verify;
    fo.wipe = o.wipe;
    fo.events = ctx.reporter.sink();
    fo.cancel = cancel;
    fo.safety = o.safety;
    udev::FlashResult r = udev::flash_one({info.path, src, identity}, fo);
    ctx.reporter.finish_progress();
    // A failed card's keys are on no card: not shown, so nobody trusts them.
    const std::vector<std::string> none;
    const std::vector<std::string>& keys = r.ok() ? known_hosts : none;
    emit_card_done(ctx, CardDone{r.target, from_image ? "" : identity, n, r.ok(), r.verified, r.bytes_written,
                                 r.seconds, "", r.error, keys});
    std::string text = r.ok() ? identity + " written to " + r.target + " (" + format_size(r.bytes_written) +
                                    (r.verified ? ", verified" : "") + ") — safe to remove"
                              : identity + " on " + r.target + " FAILED: " + r.error;
    for (const auto& k : keys) text += "\n  known_hosts: " + k;
    ctx.reporter.text(text);
    if (r.ok()) {
      if (mark) written.push_back(WrittenCard{*mark, identity, n, std::time(nullptr)});
      ++done;
      ++n;
      if (!w.state.empty()) write_file_atomic(w.state, std::to_string(n) + "\n", 0644);
      for (const auto& k : known_hosts)
        if (std::find(all_known_hosts.begin(), all_known_hosts.end(), k) == all_known_hosts.end())
          all_known_hosts.push_back(k);
      // Rewritten after every card: if the station stops, the file still covers each card handed out.
      if (!w.known_hosts.empty() && !known_hosts.empty()) write_known_hosts(ctx, w.known_hosts, all_known_hosts, true);
    } else {
      ++failed;
    }
  }
  // As for a batch: 3 when some cards were written and some failed, 1 when none was.
  if (failed) ctx.exit_code = done > 0 ? 3 : 1;
  ctx.reporter.text(std::to_string(done) + " card(s) written, " + std::to_string(failed) + " failed");
  emit_summary(ctx, done + failed, failed,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), ctx.exit_code);
}

CommandRegistration reg(60, [](CLI::App& app, AppContext& ctx) {
  auto w = std::make_shared<WatchOptions>();
  CLI::App* sub = app.add_subcommand("watch", "station mode: write each card as it is inserted, next identity each");
  RunOptions& o = w->run;
  sub->add_option("--spec", o.spec, "the TOML spec");
  sub->add_option("--apkovl", o.apkovl, "an existing apkovl instead of a spec");
  sub->add_option("--image", o.image, "write this image to every card");
  sub->add_option("--tarball", o.tarball, "the Alpine RPi tarball (file or URL)");
  sub->add_option("--sha256", o.sha256, "pin the tarball's SHA-256");
  add_download_flags(*sub, o.download, "Download");
  CLI::Option* first =
      sub->add_option("--first", o.first, "{n} of the first card (default 1)")->check(at_least_one("a card number"));
  sub->add_option("--count", w->count,
                  "stop after this many cards (default: after the last [[hosts]] entry, or at Ctrl-C when the hostname "
                  "has {n})")
      ->check(at_least_one("a number of cards"));
  CLI::Option* size = sub->add_option("--size", o.size, "image size");
  CLI::Option* label = sub->add_option("--label", o.label, "FAT volume label");
  sub->add_option("--seed-file", o.seed_file, "derive salts and SSH host keys from this secret file");
  sub->add_option("--known-hosts", w->known_hosts,
                  "keep the SSH host keys of the cards written as known_hosts lines here (merged)");
  sub->add_flag("--yes,-y", o.yes, "write without asking for each card");
  sub->add_flag("--allow-non-removable", o.safety.allow_non_removable, "permit fixed disks");
  sub->add_flag("--allow-large", o.safety.allow_large, "permit disks larger than 512 GiB");
  sub->add_flag("--unmount", o.safety.unmount, "unmount a card's mounted partitions first");
  sub->add_flag("--no-verify", o.no_verify, "skip reading the cards back");
  sub->add_flag("--wipe", o.wipe, "erase each whole card first (discard, else zeros: slow)");
  sub->add_flag("--poll", w->poll, "poll sysfs instead of listening to udev");
  // Hidden (empty group): look for new disks in fake sysfs/dev trees (tests).
  sub->add_option("--sysfs-root", w->sys)->group("");
  sub->add_option("--dev-root", w->dev)->group("");
  sub->add_flag("--dry-run", o.dry_run, "print which cards would be written with what, then stop");
  sub->add_option("--state", w->state,
                  "keep the next card number in this file: start from it (unless --first), update it per card");
  sub->callback([w, first, size, label, sub, &ctx]() {
    w->first_given = first->count() > 0;
    refuse_empty_size_or_label(size, w->run.size, label, w->run.label);
    ctx.reporter.configure(ctx.json, ctx.quiet);
    // Before the station waits for its first card.
    refuse_ignored_options(*sub, w->run);
    if (w->run.image.empty()) check_run_values(w->run);
    run_watch(ctx, *w);
  });
});

}  // namespace
}  // namespace rpi::cli
