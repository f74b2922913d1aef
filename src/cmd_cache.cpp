// `rpi-provision cache list` and `cache prune --keep N`: the downloaded tarballs.
#include <memory>
#include <sstream>

#include "app.hpp"
#include "fetch/fetch.hpp"
#include "rpi/error.hpp"
#include "rpi/size.hpp"

namespace rpi::cli {
namespace {

struct CacheOptions {
  std::string cache_dir;
  std::size_t keep = 2;
};

std::filesystem::path cache_dir_of(const CacheOptions& o) {
  std::filesystem::path dir = o.cache_dir.empty() ? fetch::default_cache_dir() : std::filesystem::path(o.cache_dir);
  if (dir.empty())
    throw Error(Errc::usage, "no cache directory: HOME and XDG_CACHE_HOME are unset; pass --cache-dir DIR");
  return dir;
}

JsonObject entry_json(const fetch::CacheEntry& e) {
  JsonObject j;
  j.add("file", e.file).add("version", e.version).add("arch", e.arch).add("size", e.size);
  j.add("sha256", e.sha256).add("path", e.path.string()).add("fetched", e.fetched_unix);
  return j;
}

std::string entry_line(const fetch::CacheEntry& e) {
  std::ostringstream s;
  s << (e.version.empty() ? "-" : e.version) << "  " << (e.arch.empty() ? "-" : e.arch) << "  " << format_size(e.size)
    << "  " << e.sha256.substr(0, 12) << "  " << e.path.string();
  return s.str();
}

void run_list(AppContext& ctx, const CacheOptions& o) {
  std::filesystem::path dir = cache_dir_of(o);
  auto entries = fetch::list_cache(dir);
  if (entries.empty()) ctx.reporter.note("the cache " + dir.string() + " holds no tarballs");
  for (const auto& e : entries) ctx.reporter.result("cache-entry", entry_line(e), entry_json(e));
}

void run_prune(AppContext& ctx, const CacheOptions& o) {
  std::filesystem::path dir = cache_dir_of(o);
  auto removed = fetch::prune_cache(dir, o.keep);
  std::uint64_t bytes = 0;
  for (const auto& e : removed) {
    bytes += e.size;
    ctx.reporter.result("cache-removed", "removed " + entry_line(e), entry_json(e));
  }
  JsonObject j;
  j.add("removed", static_cast<std::uint64_t>(removed.size()))
      .add("bytes", bytes)
      .add("keep", static_cast<std::uint64_t>(o.keep));
  ctx.reporter.result("cache-prune",
                      "pruned " + std::to_string(removed.size()) + " tarball(s), " + format_size(bytes) + " freed",
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
  CLI::App* prune = sub->add_subcommand("prune", "keep only the newest N versions per arch");
  prune->add_option("--keep", o->keep, "versions to keep per arch (default 2)");
  prune->add_option("--cache-dir", o->cache_dir, "cache folder (default $XDG_CACHE_HOME/rpi-provision)");
  prune->callback([o, &ctx] {
    ctx.reporter.configure(ctx.json, ctx.quiet);
    run_prune(ctx, *o);
  });
});

}  // namespace
}  // namespace rpi::cli
