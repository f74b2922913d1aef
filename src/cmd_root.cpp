// The root command: build an image (--output), write cards (--device, in
// parallel, verified), or write an existing image (--image). --dry-run prints
// the plan instead.
#include <fcntl.h>
#include <poll.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string_view>

#include "app.hpp"
#include "partition/reader.hpp"
#include "partition/tarball_rules.hpp"
#include "pipeline.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"
#include "udev/flash.hpp"

namespace rpi::cli {

namespace {

// `piped`: the image went to standard output (no file; a .bmap only with --bmap: then r.bmap, else "").
std::string build_summary(const BuiltImage& b, bool piped = false) {
  const partition::ImageResult& r = b.result;
  std::ostringstream s;
  s << (piped ? std::string("standard output") : r.image.string()) << ": " << format_size(r.image_size) << " image, "
    << geometry_text(r.geometry) << ", disk id " << hex32(r.disk_id) << "\n";
  if (b.compression != partition::Compression::none)
    s << "  compressed: " << format_size(b.compressed_size) << ", " << partition::compression_settings(b.compression)
      << "; the .bmap describes the image uncompressed\n";
  s << "  " << r.files << " files in " << r.directories << " directories, " << format_size(r.content_bytes)
    << " of data; ";
  if (piped && r.bmap.empty())
    s << "every byte written to standard output (no .bmap)\n";
  else if (piped)
    s << "every byte written to standard output; its block map (" << format_size(r.map.mapped_bytes())
      << " to write) in " << r.bmap.string() << "\n";
  else
    s << format_size(r.map.mapped_bytes()) << " to write (" << r.bmap.string() << ")\n";
  if (!b.identity.name.empty() && b.identity.host) s << "  host: " << b.identity.name << "\n";
  if (!b.apkovl_name.empty())
    s << "  apkovl: /" << b.apkovl_name << "\n";
  else if (b.identity.host)
    s << "  apkovl: none on the card (served over HTTP: [boot] apkovl_url; `rpi-provision apkovl --out-dir` "
         "makes the files, and their known_hosts lines with --known-hosts)\n";
  for (const auto& d : r.dropped) s << "  left out of the tarball: " << d << "\n";
  s << "  size: " << r.size_reason;
  return s.str();
}

JsonObject build_json(const BuiltImage& b) {
  const partition::ImageResult& r = b.result;
  JsonObject j;
  j.add("image", r.image.string()).add("bmap", r.bmap.string()).add("image_size", r.image_size);
  j.add("fat", r.geometry.type == partition::FatType::fat32 ? "FAT32" : "FAT16");
  j.add("cluster_bytes", r.geometry.cluster_bytes()).add("disk_id", hex32(r.disk_id));
  j.add("files", r.files).add("content_bytes", r.content_bytes).add("mapped_bytes", r.map.mapped_bytes());
  j.add("hostname", b.identity.name).add("apkovl", b.apkovl_name);
  if (b.compression != partition::Compression::none)
    j.add("compression", partition::compression_name(b.compression)).add("compressed_size", b.compressed_size);
  return j;
}

// How many of `cards` --jobs lets run at once, and that in words for the plan.
std::uint64_t cards_at_once(unsigned jobs, std::size_t cards) {
  return jobs == 0 ? cards : std::min<std::size_t>(jobs, cards);
}

std::string parallel_text(unsigned jobs, std::size_t cards) {
  const std::uint64_t n = cards_at_once(jobs, cards);
  if (cards == 1) return "one card";
  if (n == cards) return "all " + std::to_string(n) + " cards at once";
  if (n == 1) return "one card after another (--jobs 1)";
  return std::to_string(n) + " cards at a time (--jobs)";
}

// --dry-run: the plan, nothing written, no device opened for writing. For
// devices, `card_sizes[i]` is card i's size and `refused[i]` why the run would
// not write it (else ""): the plan sizes each card's image as the run does, and
// fails as the run would (exit 1 when no card would be written, 3 when some).
void print_plan(AppContext& ctx, Pipeline& p, const std::vector<Identity>& ids, const std::vector<std::string>& targets,
                bool to_devices, const std::vector<std::uint64_t>& card_sizes = {},
                std::vector<std::string> refused = {}, const std::vector<std::string>& holds = {}) {
  const RunOptions& o = p.options();
  std::ostringstream s;
  JsonObject j;
  s << kPlanHeading;
  std::optional<std::uint64_t> content;  // of a local tarball: the automatic size is then known
  TarballPlan t = p.plan_tarball(!o.download.offline);
  s << "  tarball: " << t.description << "\n";
  j.add("tarball", t.description);
  // A local tarball (or one already in the cache) gets the run's checks: its
  // digest, gzip, the Alpine boot files. A cached release's size is known too.
  p.verify_local_tarball();
  const std::optional<std::filesystem::path> tb = p.tarball_if_local();
  if (tb) {
    content = partition::tarball_content_estimate(*tb);
    p.learn_release(*tb);  // before the cards' options: their repositories follow it
  }
  if (const std::string n = tb ? p.release_note() : std::string(); !n.empty()) s << "  note: " << n << "\n";
  // A warning as the run gives it (its spec line and caret; a JSON event), not a line of the plan.
  if (const std::string w = p.release_mismatch(); !w.empty()) warn_release_mismatch(ctx, p.spec()->alpine(), w);
  if (const auto r = p.release()) j.add("release", *r);
  // Each card's image settings as the build makes them, or why the run refuses the card.
  std::vector<CardPlan> plans(targets.size());
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const Identity& id = ids[std::min(i, ids.size() - 1)];
    CardPlan& cp = plans[i];
    if (i < refused.size() && !refused[i].empty()) {
      cp.refused = refused[i];
    } else if (to_devices && i < card_sizes.size() && card_sizes[i]) {
      cp = p.plan_card(id, targets[i], card_sizes[i], content);
      if (i < refused.size()) refused[i] = cp.refused;
    } else {
      cp.options = p.image_options(id, &cp.apkovl_name, &cp.known_hosts);
    }
  }
  // What the build reads from the tarball for each card it makes, with the
  // card's own settings: its files (usercfg.txt, the apkovl) replace the
  // tarball's root files of their names, and its edits find their files or
  // warn. One scan per set of such names (a root file named like an apkovl is
  // left out whatever the card's names, so apkovl names do not count).
  std::vector<const TarballScan*> scan_of(targets.size(), nullptr);
  std::map<std::vector<std::string>, TarballScan> scans;
  if (tb) {
    for (std::size_t i = 0; i < targets.size(); ++i) {
      if (!plans[i].refused.empty()) continue;
      const partition::ImageOptions& io = plans[i].options;
      std::vector<std::string> key = {io.force ? "force" : "", "edits:"};
      for (const auto& [name, fn] : io.edits) key.push_back(name);
      key.push_back("files:");
      for (const auto& x : io.extra_files)
        if (!partition::is_old_apkovl(x.name)) key.push_back(x.name);
      auto it = scans.find(key);
      if (it == scans.end()) it = scans.emplace(key, scan_tarball(*tb, io)).first;
      scan_of[i] = &it->second;
    }
    if (!scans.empty()) {
      const TarballScan& any = scans.begin()->second;  // the keymaps and apkovls are every card's
      for (const auto& id : ids)
        if (id.host)
          if (const std::string e = keymap_error(*id.host, any.keymaps, p.release()); !e.empty())
            throw overlay::SpecErrors({id.host->keymap_location.problem(e)}, 0);
      for (const auto& a : any.apkovls)
        s << "  leaves out the tarball's " << a << " (the card gets exactly one apkovl)\n";
    }
  }
  const bool one_image = p.identical_cards();
  if (to_devices && one_image && targets.size() > 1)
    s << "  one image for all cards (one identity), one per card size\n";
  std::string cards = "[", first_apkovl, first_label;
  std::size_t refusals = 0;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const Identity& id = ids[std::min(i, ids.size() - 1)];
    const bool piped = !to_devices && to_stdout(targets[i]);
    s << "  card " << (i + 1) << ": "
      << (to_devices ? "device " + targets[i]
          : piped    ? "image to standard output (--output -)"
                     : "image " + targets[i]);
    if (to_devices && i < card_sizes.size() && card_sizes[i]) s << " (" << format_size(card_sizes[i]) << ")";
    if (!id.name.empty()) s << " ← " << id.name << (id.host ? " ({n}=" + std::to_string(id.n) + ")" : "");
    s << "\n";
    if (i < holds.size() && !holds[i].empty()) s << "    holds now: " << holds[i] << "\n";
    if (piped && o.bmap.empty())
      s << "    built in a private scratch folder in " << ScratchDir::parent()
        << ", then copied to standard output (every byte; no .bmap: give --bmap FILE for one)\n";
    else if (piped)
      s << "    built in a private scratch folder in " << ScratchDir::parent()
        << ", then copied to standard output (every byte); its block map written to " << o.bmap
        << " (--bmap) once the image is out\n";
    else if (!to_devices && !o.bmap.empty())
      s << "    block map: " << o.bmap << " (--bmap; no " << targets[i] << ".bmap)\n";
    if (const auto z = to_devices || piped ? partition::Compression::none : partition::compression_for(targets[i]);
        z != partition::Compression::none)
      s << "    compressed once built: " << partition::compression_settings(z) << "; "
        << (o.bmap.empty() ? targets[i] + ".bmap" : o.bmap) << " describes the image uncompressed\n";
    JsonObject c;
    c.add("index", id.n).add("hostname", id.name).add("target", targets[i]);
    if (i < holds.size() && !holds[i].empty()) c.add("holds", holds[i]);
    CardPlan& cp = plans[i];
    if (!cp.refused.empty()) {
      s << "    not written: " << cp.refused << "\n";
      c.add("error", cp.refused);
      cards += (cards.size() > 1 ? "," : "") + c.str();
      ++refusals;
      continue;
    }
    partition::ImageOptions& io = cp.options;
    // The same planning the build does: label as stored, size as rounded, the content's room.
    partition::ImagePlan ip = partition::plan_image(io, content);
    io.label = ip.label;
    if (ip.image_size) {
      const auto& g = ip.geometry;
      s << "    image " << format_size(ip.image_size) << ", " << geometry_text(g) << ", label " << ip.label << "\n";
      s << "    size: " << ip.size_reason
        << (cp.fills_card ? " (the card is smaller than the automatic image size: the image fills the card)" : "")
        << "\n";
      c.add("image_size", ip.image_size).add("fat", g.type == partition::FatType::fat32 ? "FAT32" : "FAT16");
      c.add("cluster_bytes", g.cluster_bytes());
      std::uint64_t files = content ? *content : 0;
      for (const auto& x : io.extra_files) files += x.data.size();
      // The estimate (the tar stream's size) is a little high: a warning, not a refusal.
      if (content && files > ip.capacity)
        s << "    warning: the files (about " << format_size(files) << ") may not fit in " << format_size(ip.capacity)
          << "; " << partition::size_fix(io, std::to_string(partition::min_image_size_for(files) >> 20) + "MiB or more")
          << "\n";
    } else {
      s << "    image: " << ip.size_reason << ", label " << ip.label
        << (o.size.empty() ? " (the size is known once the tarball is in the cache)" : "") << "\n";
    }
    for (const auto& x : io.extra_files) s << "    adds /" << x.name << " (" << format_size(x.data.size()) << ")\n";
    // With the tarball read: only the files an edit changes, then the build's warnings.
    const TarballScan* scan = scan_of[i];
    for (const auto& [name, fn] : io.edits) {
      if (scan) {
        const auto it = scan->root_files.find(name);
        if (it == scan->root_files.end() || fn(it->second) == it->second) continue;
      }
      s << "    edits /" << name << "\n";
    }
    if (scan)
      for (const auto& w : scan->warnings) s << "    warning: " << w << "\n";
    if (id.host && !id.host->apk.packages.empty())
      s << "    packages: " << describe(p.check_packages(*id.host), *id.host) << "\n";
    if (!cp.known_hosts.empty()) {
      // Where the run puts them: an image's go to a file beside it, a card's are printed.
      // With --output - there is no file to put them beside: kept only in a --known-hosts file.
      const std::string where =
          !to_devices ? "written to " + (o.known_hosts.empty() ? targets[i] + ".known_hosts" : o.known_hosts)
          : o.known_hosts.empty() ? std::string("printed")
                                  : "printed and merged into " + o.known_hosts;
      if (piped && o.known_hosts.empty())
        s << "    generates SSH host keys (their known_hosts lines are not kept with --output -: give "
             "--known-hosts FILE to keep them)\n";
      else
        s << "    generates SSH host keys (known_hosts lines " << where << " when run)\n";
    }
    c.add("apkovl", cp.apkovl_name).add("label", io.label);
    if (first_label.empty()) first_apkovl = cp.apkovl_name, first_label = io.label;
    cards += (cards.size() > 1 ? "," : "") + c.str();
  }
  cards += "]";
  if (to_devices) {
    if (o.wipe) s << "  first: erase each whole card (--wipe)\n";
    s << "  writes: " << parallel_text(o.jobs, targets.size() - refusals) << "\n";
    s << "  then: verify "
      << (o.no_verify ? "off (--no-verify)"
                      : "every written range by reading it back, and that the card holds its reported size");
    j.add("jobs", cards_at_once(o.jobs, targets.size() - refusals)).add_bool("wipe", o.wipe);
  }
  if (!to_devices && !targets.empty()) {
    j.add("output", targets.front());
    if (!o.bmap.empty()) j.add("bmap", o.bmap);
    if (const auto z =
            to_stdout(targets.front()) ? partition::Compression::none : partition::compression_for(targets.front());
        z != partition::Compression::none)
      j.add("compression", partition::compression_name(z));
  }
  j.add("apkovl", first_apkovl).add("label", first_label);
  j.add_raw("cards", cards).add_bool("dry_run", true);
  ctx.reporter.result("plan", s.str(), std::move(j));
  // As the run fails: each refused card named, 1 when none would be written, 3 when some.
  for (const auto& r : refused)
    if (!r.empty()) ctx.reporter.error(Errc::device, r);
  if (refusals) ctx.exit_code = refusals < targets.size() ? 3 : 1;
}

// --bmap FILE written: a new or regular file in an existing folder (as --output's).
void check_bmap_output(const std::string& bmap) {
  const std::filesystem::path f = bmap;
  struct stat st {};
  if (bmap.back() == '/' || (::stat(f.c_str(), &st) == 0 && S_ISDIR(st.st_mode)))
    throw Error(Errc::usage, "--bmap " + bmap + " is a folder: give the block map a file name, e.g. " +
                                 (f / "pi.img.bmap").lexically_normal().string());
  if (::stat(f.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    throw Error(Errc::usage, "--bmap " + bmap + " exists and is not a regular file; choose another name");
  check_output_folder("--bmap", bmap);
}

// --output must name a new or regular file in an existing folder, and none of
// the run's own inputs: `-o /dev/sdb`, `-o kiosk.toml` or `-o wifi.psk` would
// otherwise replace a device node, the spec or a secret with an image, and exit 0.
void check_output_target(const Pipeline& p) {
  const RunOptions& o = p.options();
  const std::filesystem::path out = o.output;
  const std::string kh = o.known_hosts.empty() ? o.output + ".known_hosts" : o.known_hosts;
  struct stat st {};
  if (to_stdout(o.output)) {
    // Standard output: no file of its own; only a --bmap and a --known-hosts file are written.
    std::vector<RunFile> files;
    if (!o.bmap.empty()) files.push_back({"--bmap " + o.bmap, o.bmap});
    if (!o.known_hosts.empty()) files.push_back({"--known-hosts " + o.known_hosts, o.known_hosts});
    if (!files.empty()) refuse_overwriting_inputs(files, inputs_of(o, &p));
    if (!o.bmap.empty()) check_bmap_output(o.bmap);
    if (o.known_hosts.empty()) return;
  } else {
    if (o.output.back() == '/' || (::stat(out.c_str(), &st) == 0 && S_ISDIR(st.st_mode)))
      throw Error(Errc::usage, "--output " + o.output + " is a folder: give the image a file name, e.g. " +
                                   (out / "pi.img").lexically_normal().string());
    if (::stat(out.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
      if (S_ISBLK(st.st_mode))
        throw Error(Errc::usage, "--output " + o.output +
                                     " is a block device; --output makes an image file. To write a card: --device " +
                                     o.output);
      throw Error(Errc::usage, "--output " + o.output + " exists and is not a regular file; choose another name");
    }
    const std::filesystem::path dir = out.parent_path().empty() ? "." : out.parent_path();
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      throw Error(Errc::usage, "--output " + o.output + ": the folder " + dir.string() + " does not exist");
    refuse_overwriting_inputs(
        {{"--output " + o.output, o.output},
         {o.bmap.empty() ? "--output " + o.output + ": its block map " + o.output + ".bmap" : "--bmap " + o.bmap,
          o.bmap.empty() ? o.output + ".bmap" : o.bmap},
         {o.known_hosts.empty() ? "--output " + o.output + ": its known_hosts file " + kh : "--known-hosts " + kh, kh}},
        inputs_of(o, &p));
    if (!o.bmap.empty()) check_bmap_output(o.bmap);
  }
  if (::stat(kh.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    throw Error(Errc::usage, "--known-hosts " + kh + " exists and is not a regular file; choose another name");
  const std::filesystem::path kh_dir =
      std::filesystem::path(kh).parent_path().empty() ? "." : std::filesystem::path(kh).parent_path();
  if (::stat(kh_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw Error(Errc::usage, "--known-hosts " + kh + ": the folder " + kh_dir.string() + " does not exist");
}

// How a copy to standard output ended: `error` (an errno) or `cancelled`
// (the cancel flag) stopped it after `written` bytes.
struct StreamEnd {
  std::uint64_t written = 0;
  int error = 0;
  bool cancelled = false;
};

// Copies the `size` bytes of `in` (holes read as zeros) to `out`, with
// sendfile (pipes and files take it), else read and write; "write" progress
// on `events`. Stops at the first failed write (EPIPE: the reader went away)
// or once `cancel` is set. A short image is an Errc::io error.
StreamEnd copy_to_stdout(int in, int out, std::uint64_t size, const std::atomic<bool>* cancel,
                         const EventSink& events) {
  constexpr std::uint64_t kChunk = 8u << 20;
  StreamEnd end;
  bool use_sendfile = true;
  std::vector<char> buf;
  std::size_t pending = 0, at = 0;  // read and not yet written, when sendfile is not used
  if (events) events(Event{"write", "standard output", 0, size, ""});
  while (end.written < size) {
    if (cancelled(cancel)) {
      end.cancelled = true;
      return end;
    }
    const auto chunk = static_cast<std::size_t>(std::min(size - end.written, kChunk));
    ssize_t n = 0;
    if (use_sendfile) {
      auto off = static_cast<off_t>(end.written);
      n = ::sendfile(out, in, &off, chunk);
      if (n < 0 && (errno == EINVAL || errno == ENOSYS)) {  // e.g. an output opened with O_APPEND
        use_sendfile = false;
        continue;
      }
      if (n == 0)
        throw Error(Errc::io,
                    "the built image ended after " + std::to_string(end.written) + " bytes of " + std::to_string(size));
    } else {
      if (pending == 0) {
        buf.resize(kChunk);
        pending = pread_full(in, buf.data(), chunk, end.written, "the built image");
        at = 0;
        if (pending == 0)
          throw Error(Errc::io, "the built image ended after " + std::to_string(end.written) + " bytes of " +
                                    std::to_string(size));
      }
      n = ::write(out, buf.data() + at, pending);
      if (n > 0) pending -= static_cast<std::size_t>(n), at += static_cast<std::size_t>(n);
    }
    if (n < 0 && errno == EAGAIN) {  // a non-blocking pipe that is full: wait for its reader
      pollfd pfd{out, POLLOUT, 0};
      ::poll(&pfd, 1, 1000);
      continue;
    }
    if (n < 0) {
      if (errno == EINTR) continue;  // a signal: the cancel flag is looked at first
      end.error = errno;
      return end;
    }
    end.written += static_cast<std::uint64_t>(n);
    if (events) events(Event{"write", "standard output", end.written, size, ""});
  }
  return end;
}

// --output -: the image is built into a private scratch folder (removed on
// exit, on error, after Ctrl-C), then copied to standard output. Standard
// output carries the image and nothing else: from the start of the run its
// fd 1 is stderr, so the results (and any other text) are printed there; a
// failed build writes nothing to it.
void run_stdout(AppContext& ctx, Pipeline& p, const std::vector<Identity>& ids) {
  const RunOptions& o = p.options();
  std::fflush(stdout);
  Fd out(::fcntl(1, F_DUPFD_CLOEXEC, 3));
  if (!out) throw_errno("cannot duplicate standard output");
  if (::dup2(2, 1) < 0) throw_errno("cannot point standard output at standard error");
  ctx.reporter.configure(ctx.json, ctx.quiet);  // stdout is now stderr: on a terminal, its text made printable
  // Signals stop the download, the build and the copy through the cancel flag
  // (as for cards): the scratch folder is then removed on the way out.
  const std::atomic<bool>* cancel = install_cancel_handler();
  p.set_cancel(cancel);
  std::optional<ScratchDir> scratch;
  std::unique_ptr<KnownHostsUpdate> keys;
  std::vector<BuiltImage> built;
  auto report_cancel = [&](const std::string& what) {
    scratch.reset();  // the image holds the card's secrets
    ctx.reporter.finish_progress();
    ctx.reporter.error(Errc::io, what);
    ctx.exit_code = 128 + cancel_signal();
  };
  try {
    p.tarball_for(ids);
  } catch (const Cancelled& e) {
    return report_cancelled_download(ctx, e);
  }
  try {
    scratch.emplace(ctx);
    const std::string name = ids.front().name.empty() ? "image" : ids.front().name;
    built = p.build(ids, {scratch->path() / (name + ".img")}, {}, [&](const std::vector<BuiltImage>& b) {
      // A --known-hosts file is merged once the image is out; its temporary is written now.
      if (o.known_hosts.empty()) return;
      try {
        keys = std::make_unique<KnownHostsUpdate>(o.known_hosts, b.front().known_hosts, true);
      } catch (const Error& e) {
        throw Error(e.code(), std::string(e.what()) + "; nothing was written to standard output");
      }
    });
  } catch (const Cancelled&) {
    return report_cancel("cancelled: nothing was written to standard output");
  }
  BuiltImage& b = built.front();
  const std::uint64_t size = b.result.image_size;
  // --bmap FILE: the block map the build computed, written to its temporary
  // now and put in place only once the whole image is out (a failed or
  // cancelled copy leaves none, nor a partial one).
  std::unique_ptr<AtomicFile> bmap;
  if (!o.bmap.empty()) {
    bmap = std::make_unique<AtomicFile>(o.bmap, partition::kBmapMode);
    const std::string xml = b.result.map.to_bmap_xml();
    write_all(bmap->fd(), xml.data(), xml.size(), "cannot write " + o.bmap);
  }
  b.result.bmap = o.bmap;  // not the scratch folder's: it is removed
  make_stdout_file_private(ctx, out.get(), "an image can hold secrets (Wi-Fi keys, SSH host keys)");
  // A reader that goes away (`| head -c 1000`): write() fails with EPIPE, reported below.
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  sigaction(SIGPIPE, &ignore, nullptr);
  StreamEnd end;
  {
    Fd in = open_or_throw(b.result.image.string(), O_RDONLY | O_CLOEXEC);
    end = copy_to_stdout(in.get(), out.get(), size, cancel, ctx.reporter.sink());
  }
  const std::string of = std::to_string(end.written) + " bytes of " + std::to_string(size);
  if (end.cancelled) return report_cancel("cancelled after " + of + ": the image on standard output is incomplete");
  if (end.error == EPIPE) throw Error(Errc::io, "standard output was closed after " + of + ": the image is incomplete");
  if (end.error)
    throw Error(Errc::io, "cannot write the image to standard output after " + of + " (" + std::strerror(end.error) +
                              "): the image is incomplete");
  out.reset();
  scratch.reset();
  ctx.reporter.finish_progress();
  if (bmap) bmap->commit();
  if (keys) {
    keys->commit(ctx);
  } else if (!b.known_hosts.empty()) {
    ctx.reporter.note(
        "the generated SSH host keys' known_hosts lines were not kept (--output - has no file to put "
        "them beside); give --known-hosts FILE to keep them");
  }
  if (!bmap)
    ctx.reporter.note(
        "--output -: no .bmap; give --bmap FILE for one (bmaptool copy --bmap FILE needs it before the image)");
  ctx.reporter.result("build", build_summary(b, true), build_json(b));
}

void run_output(AppContext& ctx, Pipeline& p) {
  const RunOptions& o = p.options();
  std::vector<Identity> ids = p.identities(1);
  if (p.defined_cards() > 1 && o.host.empty())
    ctx.reporter.note("the spec defines " + std::to_string(p.defined_cards()) + " hosts; this image is card " +
                      std::to_string(ids.front().n) + " (" + ids.front().name +
                      "); pick another with --host or --first");
  check_output_target(p);
  if (!to_stdout(o.output)) {
    note_leftovers(ctx, {o.output, o.bmap.empty() ? o.output + ".bmap" : o.bmap, o.output + ".known_hosts"});
  } else {
    std::vector<std::string> files;
    for (const std::string& f : {o.bmap, o.known_hosts})
      if (!f.empty()) files.push_back(f);
    if (!files.empty()) note_leftovers(ctx, files);
  }
  if (o.dry_run) return print_plan(ctx, p, ids, {o.output}, false);
  if (to_stdout(o.output)) return run_stdout(ctx, p, ids);
  const auto start = std::chrono::steady_clock::now();
  {
    // Ctrl-C (or TERM, HUP, PIPE) while the tarball downloads: say what was kept
    // for the next run. Once the image is being written, a signal removes it and
    // ends the run at once (remove_temporaries_on_signals).
    p.set_cancel(install_cancel_handler());
    try {
      p.tarball_for(ids);
    } catch (const Cancelled& e) {
      return report_cancelled_download(ctx, e);
    }
    remove_temporaries_on_signals();
    if (const int sig = cancel_signal()) {  // a signal between the download and the line above
      ctx.exit_code = 128 + sig;
      return;
    }
  }
  // The file beside the image belongs to it and is replaced; a --known-hosts file is shared and merged.
  // All or nothing: the known_hosts file is written to its temporary before the
  // image and .bmap replace anything, so a failure leaves an earlier image, its
  // .bmap and its keys as they were.
  const std::string beside = o.output + ".known_hosts";
  std::unique_ptr<KnownHostsUpdate> keys;
  std::vector<BuiltImage> built = p.build(ids, {o.output}, {}, [&](const std::vector<BuiltImage>& b) {
    try {
      keys = std::make_unique<KnownHostsUpdate>(o.known_hosts.empty() ? beside : o.known_hosts, b.front().known_hosts,
                                                !o.known_hosts.empty());
    } catch (const Error& e) {
      throw Error(e.code(), std::string(e.what()) + "; the image was not written (" + o.output +
                                ", if there was one, is left as it was)");
    }
  });
  const BuiltImage& b = built.front();
  keys->commit(ctx);
  // An earlier build's keys beside the image it just replaced would be stale.
  std::error_code ec;
  if (!o.known_hosts.empty() && std::filesystem::is_regular_file(beside, ec) &&
      !std::filesystem::equivalent(beside, o.known_hosts, ec) && std::filesystem::remove(beside, ec))
    ctx.reporter.note("removed " + beside + ": it held the keys of the image this build replaced");
  const std::string word = shell_word(b.result.image.string());
  // bmaptool finds FILE.img.bmap beside the image; a --bmap elsewhere is named.
  const std::string with_bmap = o.bmap.empty() ? "" : " --bmap " + shell_word(o.bmap);
  std::string text = build_summary(b) + "\nwrite it with: bmaptool copy" + with_bmap + " " + word +
                     " /dev/sdX   (or: rpi-provision --image " + word + with_bmap + " --device /dev/sdX)";
  ctx.reporter.result("build", text, build_json(b));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  emit_card_done(ctx, CardDone{o.output, b.identity.name, b.identity.n, true, false, b.result.map.mapped_bytes(), secs,
                               b.result.bmap.string(), "", b.known_hosts});
  emit_summary(ctx, 1, 0, secs, 0);
}

// `--image -`: the image comes from standard input.
bool from_stdin(const std::string& image) {
  return image == "-";
}

constexpr const char* kStdin = "standard input";

// `text` with the spooled copy of standard input named as the user gave it.
std::string stdin_named(std::string text, const std::filesystem::path& spooled) {
  for (const auto& [from, to] : {std::pair{"--image " + spooled.string(), std::string("--image -")},
                                 std::pair{spooled.string(), std::string(kStdin)}})
    for (std::size_t at = 0; (at = text.find(from, at)) != std::string::npos; at += to.size())
      text.replace(at, from.size(), to);
  return text;
}

// Where the last partition of the MBR in `sector` (the first 512 bytes of a
// raw image) ends: the image holds at least that many bytes. nullopt when the
// sector is no MBR to go by (partition::least_disk_bytes), or a FAT volume
// without a partition table.
std::optional<std::uint64_t> mbr_end(const char* sector) {
  const auto* s = reinterpret_cast<const std::uint8_t*>(sector);
  if (partition::looks_like_fat_boot_sector(s)) return std::nullopt;
  return partition::least_disk_bytes(s);
}

// Standard input copied into `spooled` (a new 0600 file in the run's private
// scratch folder), all-zero 4 KiB blocks left as holes, with "read" progress
// (subject "-", total 0 until the end; then done and total are the bytes
// read) at most every 200 ms, and once at the end. More than `max` bytes is
// an Errc::device error ending with `too_large`: as soon as the first 512
// bytes are in when they hold an MBR that says so (mbr_end), else once that
// many are read. (A card too small for a smaller image is refused once it is
// read, as for --image FILE: the other cards are written.) Cancelled once
// `cancel` turns true (a signal interrupts the read). Returns the bytes read.
std::uint64_t spool_stdin(const std::filesystem::path& spooled, std::uint64_t max, const std::string& too_large,
                          const std::atomic<bool>* cancel, const EventSink& events) {
  constexpr std::size_t kBlock = 4096, kChunk = 4u << 20;
  Fd out = open_or_throw(spooled.string(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  std::vector<char> buf(kChunk);
  std::uint64_t offset = 0;  // of buf[0]
  std::size_t have = 0;
  bool head_seen = false;  // the first 512 bytes were looked at (mbr_end)
  using Clock = std::chrono::steady_clock;
  std::optional<Clock::time_point> shown;  // the last "read" event
  const std::string what = "cannot write standard input's image to the scratch folder " +
                           spooled.parent_path().string() + " (set TMPDIR to a folder with more room, now " +
                           ScratchDir::parent() + ")";
  auto put = [&](std::size_t n) {  // buf[0, n) at `offset`, its zero blocks skipped, each run of others in one write
    std::size_t run = 0;           // where the run of non-zero blocks before k begins
    for (std::size_t k = 0; k < n; k += kBlock) {
      const std::size_t len = std::min(kBlock, n - k);
      const bool zero = std::all_of(buf.begin() + static_cast<std::ptrdiff_t>(k),
                                    buf.begin() + static_cast<std::ptrdiff_t>(k + len), [](char c) { return c == 0; });
      if (zero && run < k) pwrite_all(out.get(), buf.data() + run, k - run, offset + run, what);
      if (zero) run = k + len;
    }
    if (run < n) pwrite_all(out.get(), buf.data() + run, n - run, offset + run, what);
  };
  for (bool end = false; !end;) {
    if (cancelled(cancel)) throw Cancelled{};
    const ssize_t n = ::read(0, buf.data() + have, buf.size() - have);
    if (n < 0 && errno == EINTR) continue;  // a signal: the cancel flag is looked at first
    if (n < 0) throw_errno("cannot read the image from standard input");
    if (n == 0) end = true;
    have += static_cast<std::size_t>(n);
    if (const auto now = Clock::now(); n > 0 && (!shown || now - *shown >= std::chrono::milliseconds(200))) {
      emit(events, Event{"read", "-", offset + have, 0, ""});
      shown = now;
    }
    if (offset + have > max)
      throw Error(Errc::device, "standard input holds a larger image than any card: stopped after " +
                                    format_size(offset + have) + " of it; " + too_large);
    // A raw image starts with its MBR: an image too large for every card is
    // refused now, not once the whole image is in. (A compressed stream is
    // not looked into: its size is known once it is decompressed.)
    if (!head_seen && offset + have >= 512) {
      head_seen = true;
      const std::optional<std::uint64_t> need =
          offset == 0 && udev::compression_of(std::string_view(buf.data(), have)).empty() ? mbr_end(buf.data())
                                                                                          : std::nullopt;
      if (need && *need > max)
        throw Error(Errc::device,
                    "standard input holds a larger image than any card: its partition table says it "
                    "has at least " +
                        format_size(*need) + " (stopped after " + format_size(offset + have) + " of it); " + too_large);
    }
    if (have == buf.size() || end) {
      put(have);
      offset += have;
      have = 0;
    }
  }
  if (::ftruncate(out.get(), static_cast<off_t>(offset)) != 0)
    throw_errno("cannot set the size of " + spooled.string());
  emit(events, Event{"read", "-", offset, offset, ""});  // its size is known now
  return offset;
}

// --image -: standard input read into a new private scratch folder (put in
// `scratch`) before any card is opened, decompressed there when it starts
// with gzip's, xz's, zstd's or bzip2's magic bytes, and checked as an --image
// file is (a disk image; `bmap` (--bmap) of its size, its checksums compared
// with the data now). An image larger than `max_size` (the largest card)
// is refused with `too_large` (a raw one as soon as its MBR says so). After `cancel` turned true: nullptr, and
// `scratch` is emptied (nothing of standard input stays behind).
std::shared_ptr<const udev::FlashSource> read_stdin_for_cards(AppContext& ctx, const std::string& bmap,
                                                              std::optional<ScratchDir>& scratch,
                                                              const std::atomic<bool>* cancel, std::uint64_t max_size,
                                                              const std::string& too_large) {
  scratch.emplace(ctx);
  const std::filesystem::path spooled = scratch->path() / "standard-input";
  try {
    const std::uint64_t bytes = spool_stdin(spooled, max_size, too_large, cancel, ctx.reporter.sink());
    if (bytes == 0) throw Error(Errc::input, "standard input is empty: it holds no disk image");
    std::shared_ptr<udev::FlashSource> src;
    if (const std::optional<udev::CompressedImage> packed = check_image_file(spooled.string(), bmap)) {
      ctx.reporter.detail(kStdin, "read " + format_size(bytes) + " of " + packed->compression +
                                      "-compressed data from standard input; decompressing it");
      udev::DecompressOptions d;
      d.folder = scratch->path();
      d.events = [sink = ctx.reporter.sink(), spooled](const Event& ev) {
        sink(Event{ev.type, stdin_named(ev.subject, spooled), ev.done, ev.total, stdin_named(ev.message, spooled)});
      };
      d.cancel = cancel;
      d.full_hint = "set TMPDIR to a folder with more room (now " + ScratchDir::parent() + ")";
      d.max_size = max_size;
      d.too_large = too_large;
      d.probed = &*packed;
      src = std::make_shared<udev::FlashSource>(*udev::FlashSource::decompress(spooled, d));
      src->name = std::string(kStdin) + " (decompressed)";
      std::filesystem::remove(spooled);  // its decompressed copy is what the cards get
      // Derived as the decompression ended: its time is in the decompression's.
      report_map(ctx, kStdin, *src, "");
    } else {
      ctx.reporter.detail(kStdin, "read " + format_size(bytes) + " from standard input (a raw image)");
      const Stopwatch took;
      src = std::make_shared<udev::FlashSource>(*udev::FlashSource::open(spooled, bmap));
      src->name = kStdin;
      report_map(ctx, kStdin, *src, took.elapsed());
      // Compared now, before any card is opened: standard input cannot be read again.
      udev::check_source(*src);
      src->check_ranges = false;
    }
    return src;
  } catch (const Cancelled&) {
    scratch.reset();
    return nullptr;
  } catch (const Error& e) {
    scratch.reset();
    throw Error(e.code(), stdin_named(e.what(), spooled));
  }
}

bool confirm(AppContext& ctx, const std::vector<udev::DeviceInfo>& infos, const std::vector<std::string>& names) {
  std::ostringstream s;
  s << "about to overwrite " << infos.size() << (infos.size() == 1 ? " card:\n" : " cards:\n");
  for (std::size_t i = 0; i < infos.size(); ++i) {
    s << "  " << infos[i].path << "  " << infos[i].describe();
    if (!names[i].empty()) s << "  ← " << names[i];
    s << "\n";
    if (const std::string h = infos[i].contents(); !h.empty()) s << "    holds now: " << h << "\n";
  }
  if (ctx.reporter.json()) {
    // The question would be the one thing on stderr, outside the JSON stream (docs/json-events.md).
    ctx.reporter.error(Errc::usage, s.str() + "--json asks no question: pass --yes to write without asking");
    ctx.exit_code = 2;
    return false;
  }
  if (!::isatty(0)) {
    ctx.reporter.error(Errc::usage, s.str() + "no terminal to confirm on: pass --yes to write without asking");
    ctx.exit_code = 2;  // a usage error, as documented
    return false;
  }
  std::fprintf(stderr, "%swrite %s? [y/N] ", printable(s.str(), true).c_str(), infos.size() == 1 ? "it" : "them");
  std::fflush(stderr);
  std::string answer;
  std::getline(std::cin, answer);
  return answer == "y" || answer == "Y" || answer == "yes";
}

// `known_hosts[i]`: the generated host keys of card i (empty with --image).
// Only cards written successfully contribute them: a failed card's new key
// must not replace the key of the card of that name already in use.
void report_flash(AppContext& ctx, const std::vector<udev::FlashResult>& results, const std::vector<int>& indices,
                  const std::vector<std::vector<std::string>>& known_hosts, const std::string& known_hosts_file,
                  bool with_identities, std::chrono::steady_clock::time_point start) {
  ctx.reporter.finish_progress();
  std::ostringstream s;
  int failed = 0;
  char line[512];
  std::snprintf(line, sizeof line, "%-16s %-22s %10s %8s %-9s %s\n", "identity", "device", "written", "time",
                "verified", "result");
  s << line;
  std::vector<std::string> written_keys;
  bool any_started_unfinished = false, any_untouched = false;
  for (std::size_t i = 0; i < results.size(); ++i) {
    const udev::FlashResult& r = results[i];
    const std::vector<std::string> none;
    const std::vector<std::string>& keys = i < known_hosts.size() ? known_hosts[i] : none;
    if (r.ok())  // cards of one identity (one image for all) share their keys: each line once
      for (const auto& k : keys)
        if (std::find(written_keys.begin(), written_keys.end(), k) == written_keys.end()) written_keys.push_back(k);
    if (r.cancelled) (r.changed ? any_started_unfinished : any_untouched) = true;
    // Only the short columns go through the fixed buffer: a long path or error
    // message must not be cut (the error says what to do at its end).
    auto left = [](const std::string& v, std::size_t width) {
      return v.size() >= width ? v : v + std::string(width - v.size(), ' ');
    };
    std::snprintf(line, sizeof line, " %10s %7.1fs %-9s ", format_size(r.bytes_written).c_str(), r.seconds,
                  r.verified ? "yes" : "no");
    s << left(r.identity, 16) << " " << left(r.target, 22) << line
      << (r.ok() ? std::string("ok — safe to remove") : "FAILED: " + r.error) << "\n";
    if (!r.ok()) ++failed;
    emit_card_done(ctx, CardDone{r.target, with_identities ? r.identity : "", indices[i], r.ok(), r.verified,
                                 r.bytes_written, r.seconds, "", r.error, r.ok() ? keys : none});
  }
  if (!written_keys.empty()) {
    s << "\nknown_hosts:\n";
    for (const auto& k : written_keys) s << k << "\n";
    if (!known_hosts_file.empty()) write_known_hosts(ctx, known_hosts_file, written_keys, true);
  }
  if (!ctx.reporter.json()) ctx.reporter.text(s.str());
  // 3: some cards failed and others were written; 1: none was.
  if (failed) ctx.exit_code = static_cast<std::size_t>(failed) < results.size() ? 3 : 1;
  if (any_started_unfinished)
    ctx.reporter.warn("interrupted: the cards that were being written have no valid partition table; write them again");
  if (any_untouched) ctx.reporter.note("interrupted: the cards that had not started were not changed");
  emit_summary(ctx, static_cast<int>(results.size()), failed,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), ctx.exit_code);
}

// Cards of one identity get one image, generated SSH host keys included: fine
// for clones, but a user who forgot {n} should hear that the cards share keys.
void warn_shared_host_keys(AppContext& ctx, const std::vector<Identity>& ids) {
  std::map<std::string, int> cards;
  for (const auto& id : ids)
    if (generates_host_keys(id)) ++cards[id.name];
  for (const auto& [name, count] : cards)
    if (count > 1) ctx.reporter.warn(shared_host_keys_warning(std::to_string(count) + " cards get", name));
}

// `packed`: with --image, check_image_file's probe of a compressed image (nothing for a raw one).
void run_devices(AppContext& ctx, Pipeline* p, const RunOptions& o,
                 const std::optional<udev::CompressedImage>& packed = std::nullopt) {
  // Every target is checked before anything is built or written.
  std::vector<udev::DeviceInfo> infos;
  std::map<std::pair<dev_t, ino_t>, std::string> seen;  // the same card under two names is written once or not at all
  // What a card holds is read (libblkid, about 1 MiB of reads) only to be shown:
  // in the question before writing and in the plan; not with --yes.
  const auto content = o.yes && !o.dry_run ? udev::ContentProbe::skip : udev::ContentProbe::read;
  for (const auto& d : o.devices) {
    udev::DeviceInfo info = udev::inspect_target(d, {}, content);
    udev::check_target(info, o.safety);
    struct stat st {};
    if (::stat(d.c_str(), &st) == 0) {
      const auto key = S_ISBLK(st.st_mode) ? std::pair<dev_t, ino_t>{st.st_rdev, 0} : std::pair{st.st_dev, st.st_ino};
      auto [it, fresh] = seen.emplace(key, d);
      if (!fresh) throw Error(Errc::usage, d + " is the same card as " + it->second + "; give each card once");
    } else if (info.is_file) {
      // `--device sdb` (without /dev/) must not quietly become a 500 MiB file in
      // the current folder that is then reported as a written card.
      throw Error(Errc::usage, "--device " + d +
                                   ": no such card or file; a card is a /dev path such as /dev/sdb (`rpi-provision "
                                   "devices` lists them); to make an image file use --output " +
                                   (d.ends_with(".img") ? d : d + ".img"));
    }
    infos.push_back(std::move(info));
  }
  struct stat kst {};
  if (!o.known_hosts.empty() && ::stat(o.known_hosts.c_str(), &kst) == 0 && !S_ISREG(kst.st_mode))
    throw Error(Errc::usage,
                "--known-hosts " + o.known_hosts + " exists and is not a regular file; choose another name");
  // A --device that is an image file, or --known-hosts, must not be one of the run's inputs.
  std::vector<RunFile> written;
  for (const auto& d : o.devices) written.push_back({"--device " + d, d});
  written.push_back({"--known-hosts " + o.known_hosts, o.known_hosts});
  refuse_overwriting_inputs(written, inputs_of(o, p));
  std::vector<Identity> ids;
  if (p) ids = p->identities(static_cast<int>(o.devices.size()));
  warn_shared_host_keys(ctx, ids);
  std::vector<std::string> names;
  for (std::size_t i = 0; i < o.devices.size(); ++i)
    names.push_back(p ? ids[i].name : from_stdin(o.image) ? std::string(kStdin) : o.image);
  // What card i gets: its image, or why it is not written (too small for the image).
  std::vector<std::string> refused(o.devices.size());
  // A file standing in for a card is written like one, size kept: an empty one holds nothing.
  for (std::size_t i = 0; i < infos.size(); ++i)
    if (infos[i].is_file && infos[i].size == 0 && std::filesystem::exists(o.devices[i]))
      refused[i] = "refusing to write " + o.devices[i] +
                   ": it is an empty file, and a file standing in for a card keeps its size; give it the card's "
                   "size first (truncate -s 8G " +
                   rpi::shell_word(o.devices[i]) + "), or build an image file with --output";
  if (o.dry_run) {
    std::vector<std::uint64_t> sizes;
    std::vector<std::string> holds;
    for (const auto& i : infos) sizes.push_back(i.size), holds.push_back(i.contents());
    if (p) return print_plan(ctx, *p, ids, o.devices, true, sizes, refused, holds);
    std::optional<std::uint64_t> need;
    std::string bmap;  // the block map the run would use, "" for none
    // Where that map comes from (FlashSource::map_from): "bmap", "fat" or
    // "whole"; "unknown" when only the image the plan does not read can tell
    // (standard input, a compressed image, without a .bmap).
    std::string map = "unknown";
    std::ostringstream s;
    s << kPlanHeading;
    const std::string z = packed ? packed->compression : "";
    if (from_stdin(o.image)) {
      // Standard input is not read: the plan would use up the image the run needs.
      s << "  image: standard input (--image -), read when the run starts (not by this plan): a raw image, or "
           "one compressed with gzip, xz, zstd or bzip2 (told by its first bytes), copied (and decompressed) "
           "into a private scratch folder in "
        << ScratchDir::parent() << " before any card is written; its size is known once it is read\n";
      if (!o.bmap.empty()) {
        const partition::BlockMap m = partition::read_bmap(o.bmap);
        need = m.image_size();
        bmap = o.bmap;
        map = "bmap";
        s << "  block map: " << o.bmap << " (--bmap), " << format_size(*need) << " image, "
          << format_size(m.mapped_bytes()) << " to write (its checksums are compared with the image once read)\n";
      } else {
        s << "  block map: none (give --bmap FILE for one): derived from the image's FAT once it is read (written "
             "where its FAT holds data; free clusters are left as the card has them), else every byte of the image "
             "is written\n";
      }
    } else if (!packed) {
      // The check a real run does while writing, done now: a stale .bmap shows in the plan's run.
      const Stopwatch took;
      auto src = udev::FlashSource::open(o.image, o.bmap);
      report_map(ctx, o.image, *src, took.elapsed());
      udev::check_source(*src);
      need = src->map.image_size();
      bmap = src->bmap.string();
      map = src->map_from;
      s << "  image: " << o.image << " (" << format_size(*need) << ")\n";
      if (!src->bmap.empty())
        s << "  block map: " << src->bmap.string() << ", " << format_size(src->map.mapped_bytes()) << " to write\n";
      else
        s << "  block map: none (" << bmap_names(o.image) << "): " << unmapped_text(*src) << "\n";
    } else {
      // A plan does not decompress: the size is the one the .bmap, the xz index
      // or the zstd frame headers give (checked against each other), else unknown.
      const udev::CompressedImage& c = *packed;
      ctx.reporter.detail(o.image, udev::probe_detail(o.image, c));  // as the run says it before decompressing
      need = c.expected_size();
      if (c.map) {
        bmap = c.bmap.string();
        map = "bmap";
      }
      s << "  image: " << o.image << ", " << z << "-compressed: "
        << (need ? format_size(*need) + " decompressed (" + (c.map ? "its .bmap says" : c.size_source()) + ")"
                 : "its size is known once it is decompressed (" + z +
                       (z == "gzip" ? " records it only modulo 4 GiB" : " does not record it") +
                       "): cards too small for it are refused then")
        << "\n    decompressed once, before any card is written, into a private scratch folder in "
        << ScratchDir::parent() << " (holes for its all-zero blocks)\n";
      if (c.map)
        s << "  block map: " << c.bmap.string() << ", " << format_size(c.map->mapped_bytes())
          << " to write (its checksums are compared with the data while it is decompressed)\n";
      else
        s << "  block map: none (" << bmap_names(o.image) << "): " << kUnmappedOnceDecompressed << "\n";
    }
    std::string cards = "[";
    std::size_t refusals = 0;
    for (std::size_t k = 0; k < infos.size(); ++k) {
      const auto& i = infos[k];
      // As the run checks each card: it must hold the whole image.
      if (refused[k].empty() && need && i.size < *need) refused[k] = card_too_small(o.devices[k], i.size, *need);
      s << "  card " << (k + 1) << ": device " << i.path << "  " << i.describe() << "\n";
      const std::string h = i.contents();
      if (!h.empty()) s << "    holds now: " << h << "\n";
      JsonObject c;
      c.add("index", static_cast<int>(k) + 1).add("target", o.devices[k]);
      if (!h.empty()) c.add("holds", h);
      if (need) c.add("image_size", *need);
      if (!refused[k].empty()) {
        s << "    not written: " << refused[k] << "\n";
        c.add("error", refused[k]);
        ++refusals;
      }
      cards += (cards.size() > 1 ? "," : "") + c.str();
    }
    cards += "]";
    if (o.wipe) s << "  first: erase each whole card (--wipe)\n";
    s << "  writes: " << parallel_text(o.jobs, infos.size() - refusals) << "\n";
    JsonObject j;
    j.add("image", o.image).add("bmap", bmap).add("map", map);
    if (!z.empty()) j.add("compression", z);
    j.add("jobs", cards_at_once(o.jobs, infos.size() - refusals))
        .add_bool("wipe", o.wipe)
        .add_raw("cards", cards)
        .add_bool("dry_run", true);
    ctx.reporter.result("plan", s.str(), std::move(j));
    for (const auto& r : refused)
      if (!r.empty()) ctx.reporter.error(Errc::device, r);
    if (refusals) ctx.exit_code = refusals < infos.size() ? 3 : 1;
    return;
  }
  if (!o.yes && !confirm(ctx, infos, names)) {
    if (ctx.exit_code == 0) ctx.exit_code = 1;
    if (::isatty(0)) ctx.reporter.note("nothing written");
    return;
  }
  const auto start = std::chrono::steady_clock::now();
  const std::atomic<bool>* cancel = install_cancel_handler();
  std::optional<ScratchDir> scratch;
  std::vector<std::shared_ptr<const udev::FlashSource>> sources(o.devices.size());
  std::vector<std::vector<std::string>> known_hosts(o.devices.size());
  std::vector<int> indices;
  for (std::size_t i = 0; i < o.devices.size(); ++i) indices.push_back(p ? ids[i].n : static_cast<int>(i) + 1);
  // Ctrl-C while the tarball downloads or the images build: stop there (the
  // partial download is kept for resuming), no card was opened.
  auto cancelled_before_writing = [&] {
    std::vector<udev::FlashResult> results(o.devices.size());
    for (std::size_t i = 0; i < results.size(); ++i) {
      results[i].target = o.devices[i];
      results[i].identity = names[i];
      results[i].cancelled = true;
      results[i].error_code = Errc::device;
      results[i].error = "cancelled: " + o.devices[i] + " was not changed";
    }
    report_flash(ctx, results, indices, {}, o.known_hosts, p != nullptr, start);
    ctx.exit_code = 128 + cancel_signal();
  };
  if (p) {
    p->set_cancel(cancel);
    try {
      scratch.emplace(ctx);
      for (;;) {
        // Each card its own image, sized for it; cards of one identity whose
        // images come out the same (same size) share one (Pipeline::build).
        std::vector<std::size_t> active;
        for (std::size_t i = 0; i < o.devices.size(); ++i)
          if (refused[i].empty()) active.push_back(i);
        if (active.empty()) break;
        const bool one_image = p->identical_cards();
        std::vector<Identity> build_ids;
        std::vector<std::optional<std::uint64_t>> sizes;
        std::vector<std::filesystem::path> outs;
        std::map<std::string, int> named;
        for (std::size_t i : active) named[ids[i].name]++;
        for (std::size_t i : active) {
          build_ids.push_back(one_image ? ids[active.front()] : ids[i]);
          sizes.push_back(infos[i].size ? std::optional<std::uint64_t>(infos[i].size) : std::nullopt);
          // Named after the identity (and the card, when several share it): progress and notes show these names.
          std::string name = ids[i].name.empty() ? "card" : ids[i].name;
          if (named[ids[i].name] > 1) name += " for " + std::filesystem::path(o.devices[i]).filename().string();
          outs.push_back(scratch->path() / name);
        }
        std::vector<BuiltImage> built;
        try {
          built = p->build(build_ids, outs, sizes);
        } catch (const CardTooSmall& e) {
          // Those cards fail, the others are written: as a card too small for --image does.
          // One image for all: every card smaller than it needs; else the card of that image.
          bool any = false;
          for (std::size_t k = 0; k < active.size(); ++k)
            if (const std::size_t i = active[k];
                infos[i].size && infos[i].size < e.need && (one_image || k == e.card)) {
              refused[i] = card_too_small(o.devices[i], infos[i].size, e.need, e.fix);
              any = true;
            }
          if (!any) throw;
          continue;
        }
        // Built just now into the private scratch folder: the build's own map, no re-check.
        std::map<std::filesystem::path, std::shared_ptr<const udev::FlashSource>> by_image;
        for (std::size_t k = 0; k < active.size(); ++k) {
          const BuiltImage& b = built[k];
          auto& src = by_image[b.result.image];
          if (!src) src = udev::FlashSource::built(b.result.image, b.result.map);
          sources[active[k]] = src;
          known_hosts[active[k]] = b.known_hosts;
        }
        break;
      }
    } catch (const Cancelled& e) {
      scratch.reset();  // the finished images hold the cards' secrets
      // "cancelled: 23.0 MiB of FILE kept in CACHE/partial/; run again to resume"
      if (dynamic_cast<const fetch::DownloadCancelled*>(&e)) ctx.reporter.note(e.what());
      return cancelled_before_writing();
    }
  } else if (from_stdin(o.image)) {
    // With --bmap the image's size is known before it is read: a card too
    // small for it is refused now, as the plan refuses it, and none of
    // standard input is read when no card is left.
    if (!o.bmap.empty()) {
      const std::uint64_t need = partition::read_bmap(o.bmap).image_size();
      for (std::size_t i = 0; i < infos.size(); ++i)
        if (refused[i].empty() && infos[i].size && infos[i].size < need)
          refused[i] = card_too_small(o.devices[i], infos[i].size, need);
    }
    // Read before any card is opened, into the private scratch folder
    // (removed with it, also after Ctrl-C or an error); no more of it than
    // the largest card can take.
    std::optional<std::size_t> largest;
    for (std::size_t i = 0; i < infos.size(); ++i)
      if (refused[i].empty() && (!largest || infos[i].size > infos[*largest].size)) largest = i;
    if (largest) {  // else no card is written: nothing to read
      const std::uint64_t max = infos[*largest].size;
      const std::string too_large = std::string(o.devices.size() > 1 ? "the largest card, " : "the card, ") +
                                    o.devices[*largest] + ", has " + format_size(max) + "; use a larger card";
      auto shared = read_stdin_for_cards(ctx, o.bmap, scratch, cancel, max, too_large);
      if (!shared) return cancelled_before_writing();
      if (shared->bmap.empty())
        ctx.reporter.note("no block map for standard input (give --bmap FILE for one): " + unmapped_text(*shared));
      for (std::size_t i = 0; i < infos.size(); ++i)
        if (refused[i].empty() && infos[i].size && infos[i].size < shared->map.image_size())
          refused[i] = card_too_small(o.devices[i], infos[i].size, shared->map.image_size());
      for (auto& s : sources) s = shared;
    }
  } else if (packed) {
    // Decompressed once, before any card is opened, into the private scratch
    // folder (removed with it, also after Ctrl-C or an error): the writer reads
    // the image at random, once per card and again to verify. A card too small
    // for the size the file records (xz index, zstd frame headers) is refused
    // as the plan refuses it; the decompression stops once the image is
    // larger than the largest other card. (A .bmap's size alone may be that of
    // another image: one that is not the data's is refused as it goes by.)
    const udev::CompressedImage& c = *packed;
    const std::optional<std::uint64_t> need = c.size;
    std::optional<std::size_t> largest;
    for (std::size_t i = 0; i < infos.size(); ++i) {
      if (refused[i].empty() && need && infos[i].size < *need)
        refused[i] = card_too_small(o.devices[i], infos[i].size, *need);
      if (refused[i].empty() && (!largest || infos[i].size > infos[*largest].size)) largest = i;
    }
    if (largest) {  // else no card is written: nothing to decompress
      const std::uint64_t max = infos[*largest].size;
      const std::string too_large = std::string(o.devices.size() > 1 ? "the largest card, " : "the card, ") +
                                    o.devices[*largest] + ", has " + format_size(max) + "; use a larger card";
      auto shared = decompress_for_cards(ctx, o.image, c, scratch, cancel, max, too_large);
      if (!shared) return cancelled_before_writing();
      // Derived as the decompression ended: its time is in the decompression's.
      report_map(ctx, o.image, *shared, "");
      if (c.bmap.empty())
        ctx.reporter.note("no block map for " + o.image + " (" + bmap_names(o.image) + "): " + unmapped_text(*shared));
      for (auto& s : sources) s = shared;
    }
  } else {
    const Stopwatch took;
    std::shared_ptr<const udev::FlashSource> shared =
        udev::FlashSource::open(o.image, o.bmap);  // a missing image is the error, before any note
    report_map(ctx, o.image, *shared, took.elapsed());
    if (!o.bmap.empty()) {
      // A block map given for the image: its checksums are compared now, before any card is opened.
      udev::check_source(*shared);
      auto checked = std::make_shared<udev::FlashSource>(*shared);
      checked->check_ranges = false;
      shared = checked;
    }
    if (shared->bmap.empty())
      ctx.reporter.note("no block map for " + o.image + " (" + bmap_names(o.image) + "): " + unmapped_text(*shared) +
                        " (rpi-provision writes a .bmap with each image it builds)");
    for (auto& s : sources) s = shared;
  }
  std::vector<udev::FlashJob> jobs;
  std::vector<std::size_t> job_card;  // jobs[k] writes card job_card[k]
  for (std::size_t i = 0; i < o.devices.size(); ++i)
    if (refused[i].empty()) {
      jobs.push_back({o.devices[i], sources[i], names[i]});
      job_card.push_back(i);
    }
  udev::FlashOptions fo;
  fo.verify = !o.no_verify;
  fo.wipe = o.wipe;
  fo.events = ctx.reporter.sink();
  fo.cancel = cancel;
  fo.safety = o.safety;
  fo.max_parallel = o.jobs;
  if (o.jobs != 0 && o.jobs < jobs.size())
    ctx.reporter.note("writing " + std::to_string(o.jobs) + " of the " + std::to_string(jobs.size()) +
                      " cards at a time (--jobs); the others wait their turn");
  std::vector<udev::FlashResult> results(o.devices.size());
  for (std::size_t i = 0; i < o.devices.size(); ++i)
    if (!refused[i].empty()) {
      results[i].target = o.devices[i];
      results[i].identity = names[i];
      results[i].error = refused[i];
      results[i].error_code = Errc::device;
    }
  if (!jobs.empty()) {
    std::vector<udev::FlashResult> flashed = udev::flash_all(jobs, fo);
    for (std::size_t k = 0; k < flashed.size(); ++k) results[job_card[k]] = std::move(flashed[k]);
  }
  report_flash(ctx, results, indices, known_hosts, o.known_hosts, p != nullptr, start);
  // Like a build killed by the signal: 130 after Ctrl-C, 143 after SIGTERM.
  if (int sig = cancel_signal()) ctx.exit_code = 128 + sig;
}

// --output x.img.xz (.gz, .zst, .bz2) writes the image compressed. Names that
// bmaptool and the decompressors would not take for that (upper case, .zstd),
// or that promise a tar or zip archive, are refused.
void check_output_name(const std::string& output) {
  const std::string lower = ascii_lower(output);
  auto without = [&output](std::string_view ext) { return output.substr(0, output.size() - ext.size()); };
  // The names that ask for compression, in any case (the builder takes them in lower case only).
  if (const partition::Compression c = partition::compression_for(lower); c != partition::Compression::none) {
    const std::string ext = partition::compression_extension(c), tool = partition::compression_name(c);
    const std::string raw = without(ext);
    if (ascii_lower(raw).ends_with(".tar")) {
      const std::string stem = raw.substr(0, raw.size() - 4);
      throw Error(Errc::usage, "--output " + output + ": a .tar" + ext +
                                   " is a tar archive, and --output writes a disk image; name it " + stem +
                                   (ascii_lower(stem).ends_with(".img") ? "" : ".img") + ext);
    }
    if (!output.ends_with(ext))
      throw Error(Errc::usage, "--output " + output + ": name it " + raw + ext + " (lower case): bmaptool and " + tool +
                                   " take only that spelling for a " + tool + "-compressed image");
    return;
  }
  if (lower.ends_with(".zstd"))
    throw Error(Errc::usage, "--output " + output + ": name it " + without(".zstd") +
                                 ".zst: bmaptool and zstd take a zstd-compressed image only as .zst");
  if (lower.ends_with(".zip")) {
    const std::string raw = without(".zip");
    throw Error(Errc::usage, "--output " + output +
                                 ": a .zip is an archive of files, and --output writes one disk image; name it " + raw +
                                 ".xz (or .gz, .zst, .bz2) to have it compressed, or name it " + raw +
                                 " and zip it afterwards (zip " + shell_word(output) + " " + shell_word(raw) + ")");
  }
}

// A folder given as --device is a usage error, as a missing path is.
void check_devices_given(const std::vector<std::string>& devices) {
  for (const auto& d : devices) {
    struct stat st {};
    if (::stat(d.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
      throw Error(Errc::usage, "--device " + d +
                                   " is a folder; a card is a /dev path such as /dev/sdb (`rpi-provision devices` "
                                   "lists them); to make an image file use --output " +
                                   (std::filesystem::path(d) / "pi.img").lexically_normal().string());
  }
}

CommandRegistration reg(0, [](CLI::App& app, AppContext& ctx) {
  auto o = std::make_shared<RunOptions>();
  app.add_option("--spec", o->spec, "the TOML spec describing the Pi(s)")->group("Input");
  app.add_option("--apkovl", o->apkovl, "use an existing apkovl (e.g. from `lbu package`) instead of a spec")
      ->group("Input");
  app.add_option("--image", o->image,
                 "write an existing image (and its .bmap when present) to the devices; a compressed one (.img.xz, "
                 ".gz, .zst, .bz2) is decompressed first; -: read it from standard input (raw or compressed; needs "
                 "--yes)")
      ->group("Input");
  app.add_option("--tarball", o->tarball, "the Alpine RPi tarball: a file or a URL (then --sha256)")->group("Input");
  app.add_option("--sha256", o->sha256, "pin the tarball's SHA-256 (required for a --tarball URL)")->group("Input");
  add_download_flags(app, o->download, "Download");
  app.add_option("--output,-o", o->output,
                 "write an image file FILE.img (and FILE.img.bmap); FILE.img.xz, .gz, .zst or .bz2: compressed (and "
                 "FILE.img.xz.bmap); -: the raw image to standard output, for a pipe (a .bmap only with --bmap "
                 "FILE; ./- for a file named -)")
      ->group("Targets");
  app.add_option("--bmap", o->bmap,
                 "the block map, as bmaptool's --bmap: with --output, written to FILE instead of beside the image "
                 "(with --output -: written to FILE at all); with --image, read from FILE instead of beside it")
      ->type_name("FILE")
      ->group("Targets");
  app.add_option("--device", o->devices, "a card to write; repeat for a batch (written in parallel)")->group("Targets");
  app.add_option("--jobs,-j", o->jobs, "write at most N cards at once (default: all; 1: one after another)")
      ->type_name("N")
      ->check(at_least_one("a number of cards"))
      ->group("Targets");
  app.add_flag("--yes,-y", o->yes, "do not ask before writing devices")->group("Targets");
  app.add_flag("--allow-non-removable", o->safety.allow_non_removable,
               "permit fixed disks (system disks are refused regardless)")
      ->group("Targets");
  app.add_flag("--allow-large", o->safety.allow_large, "permit disks larger than 512 GiB")->group("Targets");
  app.add_flag("--unmount", o->safety.unmount, "unmount a card's mounted partitions first")->group("Targets");
  app.add_flag("--no-verify", o->no_verify, "skip reading the cards back")->group("Targets");
  app.add_flag("--wipe", o->wipe,
               "erase each whole card first, so nothing old stays in its unused space (discard, else zeros: slow)")
      ->group("Targets");
  app.add_option("--known-hosts", o->known_hosts, "write generated SSH host keys' known_hosts lines here")
      ->group("Targets");
  app.add_option("--host", o->host, "build the [[hosts]] entry with this hostname")->group("Cards");
  CLI::Option* first = app.add_option("--first", o->first, "{n} of the first card (default 1)")
                           ->check(at_least_one("a card number"))
                           ->group("Cards");
  CLI::Option* size =
      app.add_option("--size", o->size, "image size, e.g. 1GiB (default: content plus room)")->group("Image");
  CLI::Option* label =
      app.add_option("--label", o->label, "FAT volume label (default ALPINE or [boot].label; not BOOT/CIDATA)")
          ->group("Image");
  app.add_option("--disk-id", o->disk_id,
                 "MBR disk identifier in hex (PARTUUID <id>-01); default derived from the input")
      ->group("Image");
  app.add_flag("--force", o->force, "accept a tarball that lacks the Alpine boot files")->group("Image");
  app.add_option("--seed-file", o->seed_file,
                 "derive password salts and SSH host keys from this secret file: reproducible cards")
      ->group("Cards");
  app.add_flag("--dry-run", o->dry_run, "print the plan, write nothing")->group("Output");
  app.footer(
      "Examples:\n"
      "  rpi-provision --spec kiosk.toml --output kiosk.img            build an image (+ kiosk.img.bmap)\n"
      "  rpi-provision --spec kiosk.toml --output - | ssh pi@host 'doas dd of=/dev/mmcblk0 bs=4M'   the image to a "
      "pipe\n"
      "  rpi-provision --spec kiosk.toml --device /dev/sdb             write a card (asks first), verify it\n"
      "  rpi-provision --spec fleet.toml --device /dev/sdb --device /dev/sdc --yes   two cards, two identities\n"
      "  rpi-provision --tarball alpine-rpi-3.22.2-aarch64.tar.gz --apkovl host.apkovl.tar.gz --output pi.img\n"
      "  rpi-provision --image pi.img --device /dev/sdb                write an existing image\n"
      "  ssh build rpi-provision --spec kiosk.toml --output - | rpi-provision --image - --device /dev/sdb --yes\n"
      "  rpi-provision --spec kiosk.toml --output - --bmap kiosk.bmap > kiosk.img   the image and its block map\n"
      "  rpi-provision check --spec kiosk.toml                         validate a spec\n"
      "See man rpi-provision.");
  app.callback([o, first, size, label, &app, &ctx]() {
    if (!app.get_subcommands().empty()) return;
    ctx.reporter.configure(ctx.json, ctx.quiet);
    host_or_first(o->host, first);
    refuse_empty_size_or_label(size, o->size, label, o->label);
    const bool any_input = !o->spec.empty() || !o->apkovl.empty() || !o->image.empty() || !o->tarball.empty();
    if (!any_input && o->devices.empty() && o->output.empty()) throw CLI::CallForHelp();
    if (!o->output.empty() && !o->devices.empty())
      throw Error(Errc::usage, "--output and --device exclude each other: build the image, then write it with --image");
    if (to_stdout(o->output) && !o->dry_run) {
      // Standard output carries the image and nothing else (a plan is only text: it may go there).
      require_stdout_for_data(ctx, "a disk image", "--output -", "--output FILE.img");
    }
    if (o->output.empty() && o->devices.empty())
      throw Error(Errc::usage, "say where to write: --output FILE.img or --device DEV");
    if (!o->bmap.empty()) {
      if (o->image.empty() && o->output.empty())
        throw Error(Errc::usage,
                    "--bmap names the block map of an --output image (written) or of an --image (read); cards "
                    "written from a spec get images built for them, with no block map to keep: build with --output "
                    "FILE.img --bmap FILE, then write it with --image");
      if (o->bmap == "-")
        throw Error(Errc::usage,
                    "--bmap -: standard input and output carry the image; give the block map a file "
                    "name (./- for a file named -)");
    }
    if (o->jobs != 0 && o->devices.empty())
      throw Error(Errc::usage, "--jobs limits how many --device cards are written at once; there is no --device");
    if (o->wipe && o->devices.empty())
      throw Error(Errc::usage,
                  "--wipe erases --device cards before writing them; an --output image has nothing old in it");
    if (!o->image.empty()) {
      if (!o->spec.empty() || !o->apkovl.empty() || !o->tarball.empty())
        throw Error(Errc::usage,
                    "--image writes an existing image as it is; it excludes --spec, --apkovl and --tarball");
      if (o->devices.empty()) throw Error(Errc::usage, "--image needs --device DEV");
      refuse_ignored_options(app, *o);
      check_devices_given(o->devices);
      if (!o->bmap.empty()) {
        // Read now: a missing or damaged block map is an error before any card is looked at.
        struct stat st {};
        if (::stat(o->bmap.c_str(), &st) != 0)
          throw Error(Errc::usage, "--bmap " + o->bmap + ": " + std::strerror(errno) +
                                       "; give the image's block map (leave --bmap out to use the one beside it)");
        if (!S_ISREG(st.st_mode)) throw Error(Errc::usage, "--bmap " + o->bmap + " is not a regular file");
        (void)partition::read_bmap(o->bmap);
      }
      if (from_stdin(o->image)) {
        if (::isatty(0) == 1)
          throw Error(Errc::usage,
                      "--image - reads the image from standard input, and that is a terminal: pipe the image in "
                      "(rpi-provision --spec FILE --output - | rpi-provision --image - --device DEV --yes) or "
                      "redirect it (< pi.img)");
        if (!o->yes && !o->dry_run)
          throw Error(Errc::usage,
                      "--image - reads the image from standard input, so the question before writing has nothing "
                      "to read its answer from: pass --yes");
        return run_devices(ctx, nullptr, *o);
      }
      const std::optional<udev::CompressedImage> packed = check_image_file(o->image, o->bmap);
      return run_devices(ctx, nullptr, *o, packed);
    }
    if (o->spec.empty() && o->apkovl.empty())
      throw Error(Errc::usage, "give --spec FILE (or --apkovl FILE): a card without an apkovl boots unconfigured");
    refuse_ignored_options(app, *o);
    // Every value is checked before anything is resolved or downloaded.
    if (o->size == "max" && !o->output.empty())
      throw Error(Errc::usage,
                  "--size max fills each card, and an --output image has no card to fill: give a size (e.g. "
                  "--size 8GB) or leave --size out for the automatic size");
    check_run_values(*o);
    if (!o->output.empty() && !to_stdout(o->output)) {
      // An input named as --output is refused as such (before its name is judged).
      refuse_overwriting_inputs({{"--output " + o->output, o->output}}, inputs_of(*o, nullptr));
      check_output_name(o->output);
      check_output_folder("--output", o->output);
    }
    check_devices_given(o->devices);
    Pipeline p(ctx, *o);
    if (ctx.verbose > 0)
      ctx.reporter.detail("tarball", "tarball: " + p.plan_tarball(false).description +
                                         "; cache: " + p.fetch_options().cache_dir.string());
    if (!o->output.empty()) return run_output(ctx, p);
    run_devices(ctx, &p, *o);
  });
});

}  // namespace

}  // namespace rpi::cli
