// The root command: build an image from a tarball and an apkovl (or a spec),
// or write cards. `--dry-run` prints the plan instead of running it.
#include <fcntl.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <sstream>

#include "app.hpp"
#include "partition/apkovl_check.hpp"
#include "partition/image.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "rpi/size.hpp"

namespace rpi::cli {

namespace {

struct RootOptions {
  std::string spec, apkovl, image, output, tarball, sha256, size, label = "ALPINE";
  std::vector<std::string> devices;
  bool dry_run = false, force = false;
};

std::optional<std::int64_t> source_date_epoch() {
  const char* s = std::getenv("SOURCE_DATE_EPOCH");
  if (!s || !*s) return std::nullopt;
  char* end = nullptr;
  long long v = std::strtoll(s, &end, 10);
  if (*end || v < 0) throw Error(Errc::usage, "SOURCE_DATE_EPOCH='" + std::string(s) + "' is not a number of seconds");
  return v;
}

std::string read_small_file(const std::string& path, std::size_t limit) {
  Fd fd = open_or_throw(path, O_RDONLY);
  std::string data;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) throw_errno("cannot read " + path);
    if (n == 0) break;
    data.append(buf, static_cast<std::size_t>(n));
    if (data.size() > limit) throw Error(Errc::input, path + " is larger than " + format_size(limit));
  }
  return data;
}

std::string hex32(std::uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", v);
  return b;
}

std::string geometry_text(const partition::FatGeometry& g) {
  std::ostringstream s;
  s << (g.type == partition::FatType::fat32 ? "FAT32" : "FAT16") << ", " << format_size(g.cluster_bytes())
    << " clusters × " << g.clusters << ", partition " << format_size(g.partition_bytes()) << " at "
    << format_size(g.partition_offset()) << ", data from " << format_size(g.data_offset());
  return s.str();
}

void run_image_build(AppContext& ctx, const RootOptions& o) {
  if (o.tarball.empty())
    throw Error(Errc::usage, "--output needs --tarball FILE (the Alpine RPi tarball) for now");
  if (o.apkovl.empty() && o.spec.empty())
    throw Error(Errc::usage, "--output needs --apkovl FILE or --spec FILE: a card without an apkovl boots unconfigured");
  partition::ImageOptions opt;
  opt.label = o.label;
  opt.force = o.force;
  opt.source_date_epoch = source_date_epoch();
  if (!o.size.empty()) opt.image_size = parse_size(o.size, "--size");
  std::string apkovl_name;
  if (!o.apkovl.empty()) {
    std::string data = read_small_file(o.apkovl, 256u << 20);
    partition::ApkovlCheck chk = partition::check_apkovl(o.apkovl, data);
    for (const auto& w : chk.warnings) ctx.reporter.warn(w);
    apkovl_name = chk.card_name;
    opt.extra_files.push_back({chk.card_name, std::move(data)});
  }
  if (o.dry_run) {
    std::ostringstream s;
    s << "plan: build " << o.output << " (and " << o.output << ".bmap)\n";
    s << "  tarball: " << o.tarball << "\n";
    if (!apkovl_name.empty()) s << "  apkovl: " << o.apkovl << " → /" << apkovl_name << " on the card\n";
    if (opt.image_size) {
      auto g = partition::image_geometry(opt.image_size, opt.label);
      s << "  image: " << format_size(opt.image_size) << ", " << geometry_text(g) << "\n";
    } else {
      s << "  image: automatic size (content × 2 + 256 MiB, at least a 512 MiB partition)\n";
    }
    s << "  label: " << opt.label << "\n  nothing written (--dry-run)";
    JsonObject j;
    j.add("output", o.output).add("tarball", o.tarball).add("apkovl", apkovl_name).add("label", opt.label);
    ctx.reporter.result("plan", s.str(), std::move(j));
    return;
  }
  opt.events = ctx.reporter.sink();
  partition::ImageResult r = partition::build_image(o.tarball, o.output, opt);
  ctx.reporter.finish_progress();
  std::ostringstream s;
  s << r.image.string() << ": " << format_size(r.image_size) << " image, " << geometry_text(r.geometry)
    << ", label " << opt.label << ", disk id " << hex32(r.disk_id) << "\n";
  s << "  " << r.files << " files in " << r.directories << " directories, " << format_size(r.content_bytes)
    << " of data; " << format_size(r.map.mapped_bytes()) << " to write (" << r.bmap.string() << ")\n";
  if (!apkovl_name.empty()) s << "  apkovl: /" << apkovl_name << "\n";
  for (const auto& d : r.dropped) s << "  left out of the tarball: " << d << "\n";
  s << "  size: " << r.size_reason << "\n";
  s << "write it with: bmaptool copy " << r.image.string() << " /dev/sdX   (or: dd if=" << r.image.string()
    << " of=/dev/sdX bs=4M conv=fsync)";
  JsonObject j;
  j.add("image", r.image.string()).add("bmap", r.bmap.string()).add("image_size", r.image_size);
  j.add("fat", r.geometry.type == partition::FatType::fat32 ? "FAT32" : "FAT16");
  j.add("cluster_bytes", r.geometry.cluster_bytes()).add("disk_id", hex32(r.disk_id));
  j.add("files", r.files).add("mapped_bytes", r.map.mapped_bytes()).add("apkovl", apkovl_name);
  ctx.reporter.result("build", s.str(), std::move(j));
}

CommandRegistration reg(0, [](CLI::App& app, AppContext& ctx) {
  auto o = std::make_shared<RootOptions>();
  app.add_option("--spec", o->spec, "the TOML spec describing the Pi(s)")->group("Input");
  app.add_option("--apkovl", o->apkovl, "use an existing apkovl (e.g. from `lbu package`) instead of a spec")
      ->group("Input");
  app.add_option("--tarball", o->tarball, "the Alpine RPi tarball (alpine-rpi-<ver>-<arch>.tar.gz)")->group("Input");
  app.add_option("--output,-o", o->output, "write an image file FILE.img (and FILE.img.bmap)")->group("Output");
  app.add_option("--size", o->size, "image size, e.g. 1GiB (default: content plus room)")->group("Image");
  app.add_option("--label", o->label, "FAT volume label (default ALPINE; BOOT and CIDATA are refused)")->group("Image");
  app.add_flag("--force", o->force, "accept a tarball that lacks the Alpine boot files")->group("Image");
  app.add_flag("--dry-run", o->dry_run, "print the plan, write nothing")->group("Output");
  app.callback([o, &app, &ctx]() {
    if (!app.get_subcommands().empty()) return;
    ctx.reporter.configure(ctx.json, ctx.quiet);
    if (o->output.empty()) {
      if (o->spec.empty() && o->apkovl.empty() && o->tarball.empty())
        throw CLI::CallForHelp();
      throw Error(Errc::usage, "say where to write: --output FILE.img (or --device DEV)");
    }
    run_image_build(ctx, *o);
  });
});

}  // namespace

}  // namespace rpi::cli
