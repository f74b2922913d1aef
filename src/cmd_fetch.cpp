// `rpi-provision fetch`: resolve, download, verify and cache the Alpine RPi
// tarball, from flags or a spec's [alpine] table; prints the cached path.
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include "app.hpp"
#include "fetch/fetch.hpp"
#include "overlay/spec.hpp"
#include "pipeline.hpp"
#include "rpi/digest.hpp"
#include "rpi/error.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"

namespace rpi::cli {
namespace {

struct FetchOptions {
  std::string spec, version, arch, tarball, sha256;
  bool from_spec = false;                 // the tarball is the spec's [alpine].tarball
  std::string mirrors_from = "--mirror";  // or the spec's [alpine].mirror
  bool list = false, all = false;         // --list [--all]: which releases the mirror offers
  DownloadFlags download;
};

// What a spec's [alpine] table says (the full spec model lives in overlay/;
// this reads only the keys fetch needs, with the same located errors).
struct AlpineTable {
  std::optional<std::string> version, arch, mirror, tarball, sha256;
};

// The spec error `message` at r, as the loader gives one: "FILE:LINE:COL: message",
// the place as data and the spec's line under it (never one that may hold a secret).
[[noreturn]] void spec_error(const std::string& path, const toml::source_region& r, const std::string& message) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  const overlay::Place at = overlay::place_in(text.str(), path, r.begin.line, r.begin.column);
  throw overlay::SpecErrors({at.problem(at.text() + ": " + message)}, 0);
}

AlpineTable read_alpine_table(const std::string& path) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    if (!std::filesystem::exists(path)) throw Error(Errc::usage, "spec " + path + " does not exist");
    spec_error(path, e.source(), std::string(e.description()));
  }
  AlpineTable t;
  const toml::node* node = root.get("alpine");
  if (!node) return t;
  const toml::table* alpine = node->as_table();
  if (!alpine) spec_error(path, node->source(), "[alpine] must be a table");
  for (const auto& [key, value] : *alpine) {
    std::optional<std::string>* slot = nullptr;
    if (key == "version")
      slot = &t.version;
    else if (key == "arch")
      slot = &t.arch;
    else if (key == "mirror")
      slot = &t.mirror;
    else if (key == "tarball")
      slot = &t.tarball;
    else if (key == "sha256")
      slot = &t.sha256;
    else
      spec_error(path, value.source(),
                 "unknown key alpine." + std::string(key.str()) + " (known: version, arch, mirror, tarball, sha256)");
    const auto* s = value.as_string();
    if (!s) spec_error(path, value.source(), "alpine." + std::string(key.str()) + " must be a string");
    *slot = s->get();
  }
  if (t.tarball && !t.tarball->empty() && t.tarball->find("://") == std::string::npos && t.tarball->front() != '/') {
    // Relative to the spec, like every other path in it.
    t.tarball = (std::filesystem::path(path).parent_path() / *t.tarball).lexically_normal().string();
  }
  return t;
}

// The tarball `o` asks for: a local file, a pinned URL or a resolved release.
void fetch_into(FetchOptions& o, const fetch::Options& opts, AppContext& ctx, std::filesystem::path& path,
                fetch::Release& rel) {
  if (const std::string local = local_tarball_path(o.tarball, o.sha256); !local.empty() && o.sha256.empty()) {
    o.tarball = local;
    // A file here, with no digest to copy it into the cache under: nothing to
    // download or verify; said so rather than asking for a flag not given.
    const std::string what = (o.from_spec ? "[alpine].tarball " : "--tarball ") + o.tarball;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(o.tarball, ec))
      throw Error(Errc::input, what + " is not a file" +
                                   (o.from_spec ? " (in " + o.spec + "; a relative path is read from the spec's folder)"
                                                : std::string()));
    path = o.tarball;
    rel.file = path.filename().string();
    rel.sha256 = sha256_file_hex(o.tarball);
    ctx.reporter.note(what + " is a local file: nothing to download, and with no sha256 pinned nothing to verify (" +
                      (o.from_spec ? "[alpine].sha256" : "--sha256") + " copies it into the cache, verified)");
  } else if (!o.tarball.empty()) {
    if (o.sha256.empty()) throw Error(Errc::usage, "--tarball needs --sha256 HEX to pin its digest");
    path = fetch::fetch_url(o.tarball, o.sha256, opts);
    rel.file = path.filename().string();
    rel.sha256 = ascii_lower(o.sha256);
  } else {
    fetch::Query q;
    if (!o.version.empty()) q.version = o.version;
    if (!o.arch.empty()) q.arch = o.arch;
    q.mirrors = o.download.mirrors;
    q.mirrors_from = o.mirrors_from;
    rel = fetch::resolve(q, opts);
    path = fetch::fetch_release(rel, opts);
  }
}

// `fetch --list`: one line (or "release_branch" event) per branch of the mirror.
void run_list(AppContext& ctx, const FetchOptions& o) {
  if (o.download.offline)
    throw Error(Errc::usage,
                "fetch --list reads the mirror's listings, so it cannot run with --offline; `rpi-provision cache list` "
                "shows what is cached");
  for (const auto& [flag, given] :
       {std::pair<const char*, bool>{"--version", !o.version.empty()},
        std::pair<const char*, bool>{"--tarball", !o.tarball.empty()},
        std::pair<const char*, bool>{"--sha256", !o.sha256.empty()},
        std::pair<const char*, bool>{"--verify-signature", o.download.verify_signature},
        std::pair<const char*, bool>{"--keyring", !o.download.keyring.empty()},
        std::pair<const char*, bool>{"--signing-key-fingerprint", !o.download.signing_key_fingerprint.empty()}})
    if (given)
      throw Error(Errc::usage, std::string(flag) +
                                   " cannot be used with --list: the list names releases and downloads nothing "
                                   "(drop " +
                                   flag + ", or drop --list to fetch)");
  check_download_files(o.download);
  fetch::ListQuery q;
  if (!o.arch.empty()) q.arch = o.arch;
  q.mirrors = o.download.mirrors;
  q.all = o.all;
  if (!o.spec.empty()) {
    // The spec's [alpine] arch and mirror; flags win.
    AlpineTable t = read_alpine_table(o.spec);
    if (o.arch.empty() && t.arch) q.arch = *t.arch;
    if (q.mirrors.empty() && t.mirror) {
      q.mirrors.push_back(*t.mirror);
      q.mirrors_from = "[alpine].mirror in " + o.spec;
    }
  }
  fetch::Options opts = o.download.options(ctx.reporter.sink());
  opts.cancel = install_cancel_handler();
  const std::vector<fetch::BranchReleases> branches = fetch::list_releases(q, opts);

  std::size_t width = 0;
  for (const auto& b : branches) width = std::max(width, b.branch.size());
  bool any_cached = false, any_index = false;
  const fetch::BranchReleases* newest = nullptr;  // the newest stable branch with releases
  for (const auto& b : branches) {
    JsonObject j;
    std::string releases = "[", cached = "[";
    std::string line = b.branch + std::string(width + 2 - b.branch.size(), ' ');
    for (const std::string& v : b.releases) {
      const bool in_cache = std::find(b.cached.begin(), b.cached.end(), v) != b.cached.end();
      releases += (releases.size() > 1 ? "," : "") + json_escape(v);
      if (in_cache) cached += (cached.size() > 1 ? "," : "") + json_escape(v);
      line += (line.back() == ' ' ? "" : " ") + printable(v) + (in_cache ? "*" : "");
      any_cached = any_cached || in_cache;
    }
    if (b.releases.empty()) line += "(no alpine-rpi tarball for " + q.arch + ": skipped)";
    if (b.source == "index") {
      line += "   (newest only: no listing)";
      any_index = true;
    }
    if (b.latest_stable) line += "   (latest-stable)";
    if (!newest && !b.releases.empty() && b.branch != "edge") newest = &b;
    j.add("branch", b.branch)
        .add("arch", q.arch)
        .add_raw("releases", releases + "]")
        .add_bool("latest_stable", b.latest_stable)
        .add_raw("cached", cached + "]")
        .add("source", b.source.empty() ? "none" : b.source)
        .add("mirror", b.mirror);
    ctx.reporter.result("release_branch", line, std::move(j));
  }
  if (std::none_of(branches.begin(), branches.end(), [](const auto& b) { return !b.releases.empty(); }))
    throw Error(
        Errc::usage,
        "no branch on the mirror " +
            (branches.empty() ? fetch::redact_urls(q.mirrors.empty() ? fetch::kDefaultMirror : q.mirrors.front())
                              : branches.front().mirror) +
            " has an alpine-rpi tarball for " + q.arch + (q.all ? "" : " (--all lists every branch it has)") +
            "; the Raspberry Pi tarballs are built for aarch64, armv7 and armhf");
  if (any_cached) ctx.reporter.text("* in the cache (" + opts.cache_dir.string() + ")");
  if (any_index)
    ctx.reporter.text(
        "(newest only: the mirror lists no files there, so only its latest-releases.yaml release is shown)");
  const std::string branch = newest ? newest->branch.substr(1) : "3.22";
  const std::string exact = newest ? newest->releases.back() : "3.22.1";
  ctx.reporter.text("set [alpine] version = \"" + branch + "\" (newest of a branch) or \"" + exact +
                    "\" (exactly), or fetch --version " + exact);
}

void run_fetch(AppContext& ctx, FetchOptions o) {
  if (o.list) return run_list(ctx, o);
  if (o.all) throw Error(Errc::usage, "--all goes with --list (fetch --list --all)");
  check_download_files(o.download);  // before anything is resolved or downloaded
  // --version and --arch choose a release to resolve: with --tarball nothing is
  // resolved, and they would go unused without a word.
  if (!o.tarball.empty())
    for (const auto& [flag, given] : {std::pair<const char*, const std::string&>{"--version", o.version},
                                      std::pair<const char*, const std::string&>{"--arch", o.arch}})
      if (!given.empty())
        throw Error(Errc::usage, std::string(flag) + " " + given +
                                     " has no effect with --tarball: it chooses a release to resolve, and --tarball "
                                     "names the tarball itself; leave it out");
  if (!o.spec.empty()) {
    AlpineTable t = read_alpine_table(o.spec);
    // Flags given on the command line win over the spec; a build from the spec
    // would not use what they fetch, so that is said.
    auto differs = [&](const char* flag, const std::string& given, const std::optional<std::string>& spec,
                       const char* key, const char* fallback) {
      const std::string from_spec = spec ? *spec : fallback;
      // "3.22.1" for the spec's "3.22" is one of its releases: no note.
      if (!given.empty() && given != from_spec && !given.starts_with(from_spec + "."))
        ctx.reporter.note(std::string(flag) + " " + given + " overrides the spec's [alpine] " + key + " (" + from_spec +
                          (spec ? "" : ", the default") + "): a build from " + o.spec + " may not use this tarball");
    };
    if (t.tarball && o.tarball.empty()) {
      // The spec names its tarball: that is what is fetched.
      for (const auto& [flag, given] : {std::pair<const char*, const std::string&>{"--version", o.version},
                                        std::pair<const char*, const std::string&>{"--arch", o.arch}})
        if (!given.empty())
          ctx.reporter.note(std::string(flag) + " " + given + " is not used: " + o.spec +
                            " names its tarball ([alpine].tarball), and that is what is fetched");
    } else {
      differs("--version", o.version, t.version, "version", "latest-stable");
      differs("--arch", o.arch, t.arch, "arch", "aarch64");
    }
    if (o.version.empty() && t.version) o.version = *t.version;
    if (o.arch.empty() && t.arch) o.arch = *t.arch;
    if (o.download.mirrors.empty() && t.mirror) {
      o.download.mirrors.push_back(*t.mirror);
      o.mirrors_from = "[alpine].mirror in " + o.spec;
    }
    if (o.tarball.empty() && t.tarball) {
      o.tarball = *t.tarball;
      o.from_spec = true;
    }
    if (o.sha256.empty() && t.sha256) o.sha256 = *t.sha256;
  }
  if (!o.sha256.empty() && o.tarball.empty())
    throw Error(Errc::usage,
                "--sha256 pins the digest of --tarball; without --tarball the release index gives the digest "
                "(drop --sha256, or add --tarball URL)");
  fetch::Options opts = o.download.options(ctx.reporter.sink());
  // Ctrl-C (or TERM, HUP, PIPE) stops the download and says what was kept for
  // the next run, instead of killing the process without a word.
  opts.cancel = install_cancel_handler();

  std::filesystem::path path;
  fetch::Release rel;
  try {
    fetch_into(o, opts, ctx, path, rel);
  } catch (const Cancelled& e) {
    return report_cancelled_download(ctx, e);
  }
  ctx.reporter.finish_progress();
  std::error_code ec;
  std::uint64_t size = std::filesystem::file_size(path, ec);
  JsonObject j;
  j.add("path", path.string()).add("file", rel.file).add("sha256", rel.sha256).add("size", size);
  if (!rel.version.empty()) j.add("version", rel.version);
  if (!rel.arch.empty()) j.add("arch", rel.arch);
  ctx.reporter.result("fetch", path.string(), std::move(j));
  // A signal that came after the download was complete: the result stands, the exit says it.
  if (int sig = cancel_signal()) ctx.exit_code = 128 + sig;
}

CommandRegistration reg(40, [](CLI::App& app, AppContext& ctx) {
  auto o = std::make_shared<FetchOptions>();
  CLI::App* sub = app.add_subcommand("fetch", "Download, verify and cache the Alpine RPi tarball; print its path");
  sub->add_option("--spec", o->spec, "read version, arch, mirror (or tarball + sha256) from the spec's [alpine] table");
  sub->add_option("--version", o->version, "latest-stable (default), edge, X.Y or X.Y.Z");
  sub->add_option("--arch", o->arch, "aarch64 (default), armv7 or armhf");
  sub->add_option("--tarball", o->tarball,
                  "fetch this URL or file into the cache instead of resolving a release (needs --sha256)");
  sub->add_option("--sha256", o->sha256, "the expected SHA-256 of --tarball");
  sub->add_flag("--list", o->list,
                "list the Alpine releases the mirror offers for --arch (per branch; * = in the cache); downloads "
                "nothing");
  sub->add_flag("--all", o->all, "with --list: every branch, not only the newest 6 stable ones and edge");
  add_download_flags(*sub, o->download, "Download");
  sub->callback([o, &ctx] {
    ctx.reporter.configure(ctx.json, ctx.quiet);
    run_fetch(ctx, *o);
  });
});

}  // namespace
}  // namespace rpi::cli
