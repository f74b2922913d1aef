// `rpi-provision check --spec FILE`: validate the spec and print, per card, a
// summary with every secret redacted. Warnings (literal secrets...) go to stderr.
// A { env = } secret whose variable is not set is one of them, not an error: a
// spec is checked without its secrets (in CI, by a colleague); a build needs them.
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "app.hpp"
#include "overlay/spec.hpp"
#include "packages.hpp"
#include "pipeline.hpp"
#include "rpi/error.hpp"
#include "rpi/events.hpp"
#include "rpi/text.hpp"

namespace rpi::cli {
namespace {

struct CheckOptions {
  std::string spec, host;
  int first = 1;
  bool packages = false;  // also look [apk].packages up in the repositories' indexes
  DownloadFlags download;
};

void run_check(AppContext& ctx, const CheckOptions& o) {
  auto spec = overlay::load_spec(o.spec, overlay::LoadOptions{.missing_env = overlay::MissingEnv::warn});
  report_spec_warnings(ctx, spec);
  // A build would stop there: say it now, with the build's words (a local
  // tarball, a path or a file:// URL, pinned by [alpine].sha256 is read whole,
  // once; a URL is not downloaded). Its release pins latest-stable
  // repositories as a build pins them.
  const std::optional<TarballRelease> release = check_spec_tarball(ctx, spec, o.spec);
  const std::string mismatch = release ? release_mismatch_for(spec.alpine(), *release) : "";
  if (release)
    if (const std::string n = release_note_for(spec.alpine(), *release); !n.empty()) ctx.reporter.note(n);
  if (!mismatch.empty()) warn_release_mismatch(ctx, spec.alpine(), mismatch);
  std::vector<overlay::HostConfig> cards;
  if (!o.host.empty())
    cards.push_back(overlay::resolve_host(spec, 0, o.host));
  else if (spec.host_count() > 0)
    cards = overlay::resolve_hosts(spec, o.first, std::max(1, spec.host_count() - o.first + 1));
  else
    cards.push_back(overlay::resolve_host(spec, o.first));
  // --mirror overrides [alpine].mirror: the summaries show the repositories the cards get.
  for (auto& h : cards) override_mirror(h, o.download.mirrors);
  const std::vector<std::string> mirror_warnings = mirror_override_warnings(o.download.mirrors, o.download.ca_cert);
  for (const auto& w : mirror_warnings) ctx.reporter.warn(w);
  std::optional<PackageChecker> checker;
  if (o.packages) {
    checker.emplace(o.download.options(ctx.reporter.sink()), o.download.mirrors);
    checker->warn_unread();
  }
  auto pinned = [&](const overlay::AlpineSource& a) { return release ? pin_to_release(a, *release) : a; };
  // latest-stable as the release of the spec's local tarball, or else as the
  // release it is now ("v3.22"), as a build pins it: the same indexes (and
  // cached copies) as the build's.
  std::optional<std::string> latest;
  auto branch_of = [&](const overlay::HostConfig& h) {
    if (const auto a = pinned(h.alpine); a.version != "latest-stable") return a.branch();
    if (!latest) {
      latest = h.alpine.branch();
      try {
        fetch::Query q;
        q.version = h.alpine.version;
        q.arch = h.alpine.arch;
        q.mirrors = o.download.mirrors.empty() ? std::vector<std::string>{h.alpine.mirror} : o.download.mirrors;
        latest = fetch::resolve(q, o.download.options(ctx.reporter.sink())).branch;
      } catch (const Error&) {
        // Not resolvable (offline without the release in the cache): the latest-stable folder.
      }
    }
    return *latest;
  };
  for (const auto& h : cards) {
    std::string pkgs;
    JsonObject pj;
    if (checker && !h.apk.packages.empty()) {
      PackageReport r = checker->check(h, branch_of(h), o.spec, ctx.reporter);
      pkgs = describe(r, h);
      pj.add("found", static_cast<std::uint64_t>(r.found))
          .add("download_bytes", r.download_bytes)
          .add("download_packages", static_cast<std::uint64_t>(r.download_count));
    }
    std::string ssids;  // every Wi-Fi network's ssid, in order (never a psk)
    for (const auto& n : h.wifi.networks) ssids += (ssids.empty() ? "" : ",") + json_escape(n.ssid);
    JsonObject obj;
    obj.add("spec", o.spec).add("card", h.index).add("hostname", h.hostname);
    if (!h.mac.empty()) obj.add("mac", h.mac);
    obj.add("users", static_cast<std::uint64_t>(h.users.size()))
        .add("packages", static_cast<std::uint64_t>(h.apk.packages.size()))
        .add_bool("wifi", h.wifi.enabled)
        .add_raw("wifi_networks", "[" + ssids + "]")
        .add("host_keys", h.ssh.enable ? h.ssh.host_keys : std::string("none"))
        .add("install", h.install.mode);
    if (h.apk.repositories.empty()) obj.add("repositories", pinned(h.alpine).branch());
    if (!pkgs.empty()) obj.add_raw("package_check", pj.str());
    // Secrets the card needs whose variables were not set (each also a warning).
    if (const auto unset = overlay::unset_secrets(h); !unset.empty()) {
      std::string list;
      for (const auto& u : unset) {
        JsonObject e;
        e.add("entry", u.entry).add("env", u.variable);
        list += (list.empty() ? "[" : ",") + e.str();
      }
      obj.add_raw("not_set", list + "]");
    }
    std::string text = overlay::summary(h);
    if (!text.empty() && text.back() == '\n') text.pop_back();
    // latest-stable pinned to the local tarball's release: the branch the
    // card's default repositories name, under the summary's alpine line.
    if (const auto a = pinned(h.alpine); a.version != h.alpine.version && h.apk.repositories.empty()) {
      const std::string line =
          "\n  repos     " + printable(a.branch()) + " (the tarball's release, Alpine " + printable(a.version) + ")";
      const std::size_t alpine = text.find("\n  alpine ");
      const std::size_t end = alpine == std::string::npos ? std::string::npos : text.find('\n', alpine + 1);
      text.insert(end == std::string::npos ? text.size() : end, line);
    }
    if (!pkgs.empty()) {
      text += "\n  package check: " + printable(pkgs);
      // The summary above names the card's own mirror; the indexes came from these.
      if (!o.download.mirrors.empty())
        text += " (indexes from " + printable(fetch::redact_urls(join(o.download.mirrors))) + ")";
    }
    ctx.reporter.result("card", text, obj);
  }
  const std::size_t warnings = spec.warnings().size() + (mismatch.empty() ? 0U : 1U) + mirror_warnings.size() +
                               (checker ? checker->warnings() : 0);
  JsonObject done;
  done.add("spec", o.spec)
      .add("cards", static_cast<std::uint64_t>(cards.size()))
      .add("warnings", static_cast<std::uint64_t>(warnings));
  ctx.reporter.result("check",
                      printable(o.spec) + ": OK (" + std::to_string(cards.size()) +
                          (cards.size() == 1 ? " card" : " cards") + ", " + std::to_string(warnings) +
                          (warnings == 1 ? " warning)" : " warnings)"),
                      done);
}

CommandRegistration reg(20, [](CLI::App& app, AppContext& ctx) {
  auto o = std::make_shared<CheckOptions>();
  CLI::App* sub = app.add_subcommand("check", "Validate a spec and print a summary per card (secrets redacted)");
  sub->add_option("--spec", o->spec, "the TOML spec")->required();
  sub->add_option("--host", o->host, "only the [[hosts]] entry with this hostname");
  CLI::Option* first = sub->add_option("--first", o->first, "the card number {n} of the first card (default 1)")
                           ->check(at_least_one("a card number"));
  sub->add_flag("--packages", o->packages,
                "also look [apk].packages up in the repositories' package indexes (downloads them; kept a day "
                "in the cache)");
  add_download_flags(*sub, o->download, "Package check (--packages)", false);
  sub->callback([o, first, &ctx] {
    ctx.reporter.configure(ctx.json, ctx.quiet);
    host_or_first(o->host, first);
    run_check(ctx, *o);
  });
});

}  // namespace
}  // namespace rpi::cli
