// `rpi-provision cache list` and `cache prune --keep N`: the downloaded tarballs.
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "app.hpp"
#include "fetch/fetch.hpp"
#include "rpi/error.hpp"
#include "rpi/size.hpp"

namespace rpi::cli {
namespace {

struct CacheOptions {
  std::string cache_dir;
  long long keep = 2;
};

std::filesystem::path cache_dir_of(const CacheOptions& o) {
  std::filesystem::path dir = o.cache_dir.empty() ? fetch::default_cache_dir() : std::filesystem::path(o.cache_dir);
  if (dir.empty())
    throw Error(Errc::usage, "no cache directory: HOME and XDG_CACHE_HOME are unset; pass --cache-dir DIR");
  return dir;
}

// "--cache-dir X" (given) or "the cache X" (the default one), for messages.
std::string named(const CacheOptions& o, const std::filesystem::path& dir) {
  return (o.cache_dir.empty() ? "the cache " : "--cache-dir ") + dir.string();
}

// Whether the cache folder exists: false (with a note) when nothing is there;
// an error when something that is not a folder is.
bool cache_exists(AppContext& ctx, const CacheOptions& o, const std::filesystem::path& dir, const char* nothing) {
  std::error_code ec;
  const auto st = std::filesystem::status(dir, ec);
  if (st.type() == std::filesystem::file_type::not_found) {
    ctx.reporter.note("no cache exists at " + dir.string() + " (nothing was downloaded there)" + nothing);
    return false;
  }
  if (ec) throw Error(Errc::io, "cannot read " + named(o, dir) + ": " + ec.message());
  if (st.type() != std::filesystem::file_type::directory)
    throw Error(Errc::usage, named(o, dir) + " is not a folder: a cache is a folder (default " +
                                 fetch::default_cache_dir().string() + "); give one with --cache-dir DIR");
  return true;
}

JsonObject damaged_json(const fetch::DamagedEntry& d) {
  JsonObject j;
  j.add("path", d.dir.string()).add("problem", d.problem).add("bytes", d.bytes);
  return j;
}

JsonObject entry_json(const fetch::CacheEntry& e) {
  JsonObject j;
  j.add("file", e.file);
  // Optional fields are omitted, not empty (docs/json-events.md).
  if (!e.version.empty()) j.add("version", e.version);
  if (!e.arch.empty()) j.add("arch", e.arch);
  j.add("size", e.size);
  j.add("sha256", e.sha256).add("path", e.path.string()).add("fetched", e.fetched_unix);
  return j;
}

std::string entry_line(const fetch::CacheEntry& e) {
  std::ostringstream s;
  s << (e.version.empty() ? "-" : e.version) << "  " << (e.arch.empty() ? "-" : e.arch) << "  " << format_size(e.size)
    << "  " << e.sha256.substr(0, 12) << "  " << e.path.string();
  return s.str();
}

// A line (and JSON result `type`) for files of the cache that are not
// tarballs, when there are any: "partial downloads: 2 (40 MiB, <advice>)".
void report_files(AppContext& ctx, const std::string& type, const std::string& what, const fetch::PartialSummary& f,
                  const std::string& advice) {
  if (!f.count) return;
  JsonObject j;
  j.add("count", static_cast<std::uint64_t>(f.count)).add("bytes", f.bytes);
  ctx.reporter.result(type, what + ": " + std::to_string(f.count) + " (" + format_size(f.bytes) + ", " + advice + ")",
                      std::move(j));
}

void run_list(AppContext& ctx, const CacheOptions& o) {
  std::filesystem::path dir = cache_dir_of(o);
  if (!cache_exists(ctx, o, dir, "")) return;
  auto entries = fetch::list_cache(dir);
  const auto damaged = fetch::damaged_cache_entries(dir);
  if (entries.empty())
    ctx.reporter.note("the cache " + dir.string() + " holds no tarballs" + (damaged.empty() ? "" : " it can use"));
  for (const auto& e : entries) ctx.reporter.result("cache-entry", entry_line(e), entry_json(e));
  // Unusable entries: a tarball nothing will use, taking room until removed.
  for (const auto& d : damaged)
    ctx.reporter.result("cache-damaged",
                        "damaged  " + format_size(d.bytes) + "  " + d.dir.string() + ": " + d.problem +
                            "; the next fetch of its tarball replaces it, `cache prune` removes it (or rm -r it)",
                        damaged_json(d));
  report_files(ctx, "cache-partial", "partial downloads", fetch::partial_downloads(dir),
               "resumed by the next fetch; `cache prune` removes them");
  report_files(ctx, "cache-indexes", "package indexes", fetch::package_index_copies(dir),
               "fetched again after a day; offline, [apk].packages are checked against them");
}

void run_prune(AppContext& ctx, const CacheOptions& o) {
  std::filesystem::path dir = cache_dir_of(o);
  if (o.keep < 0) throw Error(Errc::usage, "--keep must be 0 or more, got " + std::to_string(o.keep));
  fetch::PartialSummary partial;
  std::vector<fetch::DamagedEntry> damaged;
  std::vector<fetch::CacheEntry> removed;
  if (cache_exists(ctx, o, dir, ": nothing to prune"))
    removed = fetch::prune_cache(dir, static_cast<std::size_t>(o.keep), &partial, &damaged);
  std::uint64_t bytes = 0, damaged_bytes = 0;
  for (const auto& d : damaged) {
    damaged_bytes += d.bytes;
    ctx.reporter.result("cache-removed-damaged", "removed damaged entry " + d.dir.string() + ": " + d.problem,
                        damaged_json(d));
  }
  for (const auto& e : removed) {
    bytes += e.size;
    ctx.reporter.result("cache-removed", "removed " + entry_line(e), entry_json(e));
  }
  JsonObject j;
  j.add("removed", static_cast<std::uint64_t>(removed.size()))
      .add("bytes", bytes)
      .add("keep", static_cast<std::uint64_t>(o.keep))
      .add("partials", static_cast<std::uint64_t>(partial.count))
      .add("partial_bytes", partial.bytes)
      .add("damaged", static_cast<std::uint64_t>(damaged.size()))
      .add("damaged_bytes", damaged_bytes);
  std::string text = "pruned " + std::to_string(removed.size()) + " tarball(s)";
  if (!damaged.empty())
    text += ", " + std::to_string(damaged.size()) + " damaged entr" + (damaged.size() == 1 ? "y" : "ies") + " (" +
            format_size(damaged_bytes) + ")";
  if (partial.count)
    text += " and " + std::to_string(partial.count) + " partial download(s) (" + format_size(partial.bytes) + ")";
  ctx.reporter.result("cache-prune", text + ", " + format_size(bytes + partial.bytes + damaged_bytes) + " freed",
                      std::move(j));
}

CommandRegistration reg(45, [](CLI::App& app, AppContext& ctx) {
  auto o = std::make_shared<CacheOptions>();
  CLI::App* sub = app.add_subcommand("cache", "List or prune the downloaded Alpine tarballs");
  sub->require_subcommand(1);
  sub->add_option("--cache-dir", o->cache_dir, "cache folder (default $XDG_CACHE_HOME/rpi-provision)");
  CLI::App* list = sub->add_subcommand("list", "list cached tarballs, newest first");
  list->add_option("--cache-dir", o->cache_dir, "cache folder (default $XDG_CACHE_HOME/rpi-provision)");
  list->callback([o, &ctx] {
    ctx.reporter.configure(ctx.json, ctx.quiet);
    run_list(ctx, *o);
  });
  CLI::App* prune = sub->add_subcommand("prune", "keep only the newest N versions per arch; drop partial downloads");
  prune->add_option("--keep", o->keep, "versions to keep per arch, stable and edge apart (default 2)");
  prune->add_option("--cache-dir", o->cache_dir, "cache folder (default $XDG_CACHE_HOME/rpi-provision)");
  prune->callback([o, &ctx] {
    ctx.reporter.configure(ctx.json, ctx.quiet);
    run_prune(ctx, *o);
  });
});

}  // namespace
}  // namespace rpi::cli
