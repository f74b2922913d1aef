// `rpi-provision apkovl`: write only the apkovl of one card (-o FILE) or, for
// network boot, one <mac>.apkovl.tar.gz per [[hosts]] entry with a mac
// (--out-dir DIR), named as Alpine's initramfs requests them for
// apkovl=http://…/{MAC}.apkovl.tar.gz (colon form, lower case).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include "app.hpp"
#include "overlay/apkovl.hpp"
#include "overlay/spec.hpp"
#include "pipeline.hpp"
#include "rpi/atomic_file.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"

namespace rpi::cli {
namespace {

namespace fs = std::filesystem;

struct ApkovlOptions {
  std::string spec, output, out_dir, host, seed_file, known_hosts;
  std::vector<std::string> mirrors;  // --mirror: overrides [alpine].mirror in the apk repositories
  int first = 1;
};

overlay::BuildOptions build_options(const ApkovlOptions& o) {
  overlay::BuildOptions b;
  b.source_date_epoch = source_date_epoch();
  b.seed = read_seed_file(o.seed_file);
  return b;
}

// `-o -` is refused before anything is read: standard output carries the
// archive and nothing else, so not the --json events, not a terminal, and not
// where standard error goes (its messages would end up in the archive).
void check_stdout_target(const AppContext& ctx, const ApkovlOptions& o) {
  if (o.out_dir == "-")
    throw Error(Errc::usage,
                "--out-dir - : --out-dir writes one file per [[hosts]] entry into a folder, and standard output holds "
                "one: use -o - for one card's apkovl (--host NAME), or --out-dir ./- for a folder named -");
  if (to_stdout(o.output))
    require_stdout_for_data(ctx, "an apkovl (a gzip-compressed tar archive)", "-o -", "-o FILE.apkovl.tar.gz");
}

// Writes `bytes` to standard output, which from here on is standard error for
// everything else the run prints (the result, known_hosts lines, errors): the
// archive alone goes to standard output.
void write_stdout(AppContext& ctx, const std::string& bytes) {
  std::fflush(stdout);
  Fd out(::fcntl(1, F_DUPFD_CLOEXEC, 3));
  if (!out) throw_errno("cannot duplicate standard output");
  if (::dup2(2, 1) < 0) throw_errno("cannot point standard output at standard error");
  ctx.reporter.configure(ctx.json, ctx.quiet);
  make_stdout_file_private(ctx, out.get(), "an apkovl holds secrets (password hashes, Wi-Fi keys, SSH host keys)");
  // A reader that goes away (`| head -c 10`): write() fails with EPIPE, reported below.
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  sigaction(SIGPIPE, &ignore, nullptr);
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(out.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      const std::string of = std::to_string(done) + " bytes of " + std::to_string(bytes.size());
      if (err == EPIPE) throw Error(Errc::io, "standard output was closed after " + of + ": the apkovl is incomplete");
      throw Error(Errc::io, "cannot write the apkovl to standard output after " + of + " (" + std::strerror(err) +
                                "): the apkovl is incomplete");
    }
    done += static_cast<std::size_t>(n);
  }
}

void write_one(AppContext& ctx, const overlay::HostConfig& h, const overlay::BuildOptions& b, const fs::path& out,
               std::vector<std::string>& known_hosts) {
  auto ovl = overlay::build_apkovl(h, b);
  const bool piped = to_stdout(out.string());
  if (piped) {
    write_stdout(ctx, ovl.bytes);
  } else {
    // 0600: the overlay holds password hashes, the Wi-Fi PSK and host private keys.
    // A rebuilt apkovl keeps the group and mode a user gave the old one for the web server.
    write_file_atomic(out, ovl.bytes, 0600, Permissions::keep_existing);
  }
  JsonObject obj;
  obj.add("card", h.index)
      .add("hostname", h.hostname)
      .add("path", out.string())
      .add("bytes", static_cast<std::uint64_t>(ovl.bytes.size()));
  if (!h.mac.empty()) obj.add("mac", h.mac);
  std::string kh_json = "[";
  for (const auto& l : ovl.known_hosts) kh_json += (kh_json.size() > 1 ? "," : "") + json_escape(l);
  kh_json += "]";
  obj.add_raw("known_hosts", kh_json);
  std::string text = "wrote " + (piped ? std::string("standard output") : printable(out.string())) + " (" +
                     format_size(ovl.bytes.size()) + ") for " + printable(h.hostname);
  for (const auto& l : ovl.known_hosts) text += "\n  known_hosts: " + printable(l);
  ctx.reporter.result("apkovl", text, obj);
  known_hosts.insert(known_hosts.end(), ovl.known_hosts.begin(), ovl.known_hosts.end());
}

// An image build pins latest-stable repositories to its tarball's release:
// with a local [alpine].tarball whose release is known, so do these apkovls
// (`h` is pinned), and they say so as the build does. Without one there is no
// release to pin them to: say so, once.
void note_moving_repositories(AppContext& ctx, const overlay::HostConfig& h, const overlay::Spec& spec,
                              const std::optional<TarballRelease>& release) {
  if (!h.apk.repositories.empty()) return;
  if (release && release->version && spec.alpine().version == "latest-stable") {
    if (const std::string n = release_note_for(spec.alpine(), *release); !n.empty()) ctx.reporter.note(n);
    return;
  }
  if (h.alpine.version != "latest-stable") return;
  ctx.reporter.note(
      "the apkovl's apk repositories follow latest-stable, which moves to each new Alpine "
      "release while the card keeps its kernel; set [alpine].version (e.g. \"3.22\") to the "
      "release the card boots");
}

void run_apkovl(AppContext& ctx, const ApkovlOptions& o) {
  if (o.output.empty() == o.out_dir.empty())
    throw Error(Errc::usage, "give exactly one of -o FILE (-o - for standard output) or --out-dir DIR");
  check_stdout_target(ctx, o);
  // Before the apkovl is built: its folder must be there and writable.
  if (!o.output.empty() && !to_stdout(o.output)) check_output_folder("--output", o.output);
  auto spec = overlay::load_spec(o.spec);
  report_spec_warnings(ctx, spec);
  for (const auto& w : mirror_override_warnings(o.mirrors, "")) ctx.reporter.warn(w);
  // The release of the spec's own local tarball, the one a card built from
  // this spec (or booted over the network from its files) runs: its default
  // repositories follow it as a build's do. A URL is not downloaded here.
  const std::optional<TarballRelease> release = local_tarball_release(ctx, spec);
  if (release)
    if (const std::string w = release_mismatch_for(spec.alpine(), *release); !w.empty())
      warn_release_mismatch(ctx, spec.alpine(), w);
  auto pin = [&](overlay::HostConfig& h) {
    if (release) h.alpine = pin_to_release(h.alpine, *release);
  };
  auto b = build_options(o);
  for (const auto& w : seed_file_warnings(o.seed_file, b.seed)) ctx.reporter.warn(w);
  // Nothing written may be one of the files read (`-o spec.toml` or
  // `--known-hosts wifi.psk` would replace it): checked before anything is written.
  std::vector<RunFile> outputs;
  const std::vector<RunFile> inputs = run_inputs(&spec, {{"--spec", o.spec}, {"--seed-file", o.seed_file}});
  std::vector<std::string> known_hosts;
  if (!o.output.empty()) {
    auto h = o.host.empty() ? overlay::resolve_host(spec, o.first) : overlay::resolve_host(spec, 0, o.host);
    override_mirror(h, o.mirrors);
    pin(h);
    if (!to_stdout(o.output)) outputs.push_back({"--output " + o.output, o.output});
    outputs.push_back({"--known-hosts " + o.known_hosts, o.known_hosts});
    refuse_overwriting_inputs(outputs, inputs);
    note_moving_repositories(ctx, h, spec, release);  // advice only for a run that writes
    note_leftovers(ctx, {to_stdout(o.output) ? std::string() : o.output, o.known_hosts});
    write_one(ctx, h, b, o.output, known_hosts);
  } else {
    if (spec.host_count() == 0)
      throw Error(Errc::usage,
                  "--out-dir needs [[hosts]] entries with a mac in " + o.spec + "; use -o FILE for one card");
    std::vector<overlay::HostConfig> cards;
    if (!o.host.empty())
      cards.push_back(overlay::resolve_host(spec, 0, o.host));
    else
      cards = overlay::resolve_hosts(spec, o.first, std::max(0, spec.host_count() - o.first + 1));
    for (auto& h : cards) {
      override_mirror(h, o.mirrors);
      pin(h);
    }
    for (const auto& h : cards)
      if (!h.mac.empty()) {
        const fs::path out = fs::path(o.out_dir) / overlay::mac_file_name(h.mac);
        outputs.push_back(
            {"--out-dir " + o.out_dir + ": the apkovl of " + h.hostname + ", " + out.string(), out.string()});
      }
    outputs.push_back({"--known-hosts " + o.known_hosts, o.known_hosts});
    refuse_overwriting_inputs(outputs, inputs);
    if (!cards.empty()) note_moving_repositories(ctx, cards.front(), spec, release);
    std::vector<std::string> served;
    for (const auto& f : outputs) served.push_back(f.path);
    note_leftovers(ctx, served);
    rpi::create_directories(o.out_dir, "--out-dir");
    int written = 0;
    for (const auto& h : cards) {
      if (h.mac.empty()) {
        ctx.reporter.note("skipping " + h.hostname + ": its [[hosts]] entry has no mac");
        continue;
      }
      write_one(ctx, h, b, fs::path(o.out_dir) / overlay::mac_file_name(h.mac), known_hosts);
      ++written;
    }
    if (written == 0) throw Error(Errc::usage, "no [[hosts]] entry in " + o.spec + " has a mac; nothing written");
  }
  if (!o.known_hosts.empty()) write_known_hosts(ctx, o.known_hosts, known_hosts, true);
}

CommandRegistration reg(30, [](CLI::App& app, AppContext& ctx) {
  auto o = std::make_shared<ApkovlOptions>();
  CLI::App* sub = app.add_subcommand("apkovl", "Write only the apkovl (-o FILE), or one <mac>.apkovl.tar.gz per host");
  sub->add_option("--spec", o->spec, "the TOML spec")->required();
  sub->add_option("-o,--output", o->output, "the apkovl file to write (one card; - for standard output)");
  sub->add_option("--out-dir", o->out_dir, "write <mac>.apkovl.tar.gz for every [[hosts]] entry with a mac");
  sub->add_option("--host", o->host, "the [[hosts]] entry with this hostname");
  CLI::Option* first =
      sub->add_option("--first", o->first, "the card number {n} (default 1)")->check(at_least_one("a card number"));
  sub->add_option("--seed-file", o->seed_file,
                  "derive password salts and SSH host keys from this secret file: reproducible output");
  sub->add_option("--known-hosts", o->known_hosts, "also write the generated host keys as known_hosts lines here");
  sub->add_option("--mirror", o->mirrors,
                  "the Alpine mirror the apkovl's apk repositories name, instead of [alpine].mirror (the first "
                  "https:// or http:// one)");
  sub->callback([o, first, &ctx] {
    ctx.reporter.configure(ctx.json, ctx.quiet);
    host_or_first(o->host, first);
    run_apkovl(ctx, *o);
  });
});

}  // namespace
}  // namespace rpi::cli
