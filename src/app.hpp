// What every subcommand shares: global flags, the reporter, and the registry
// through which each cmd_*.cpp adds itself to the command line.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fetch/fetch.hpp"
#include "reporter.hpp"

namespace rpi::cli {

struct AppContext {
  bool json = false;
  bool quiet = false;
  int verbose = 0;
  Reporter reporter;
  int exit_code = 0;  // set by a command that finished with partial failure (3)
};

// A subcommand registers a function that adds itself to the app. `order` sorts
// subcommands in --help.
using Registrar = std::function<void(CLI::App& app, AppContext& ctx)>;
struct CommandRegistration {
  CommandRegistration(int order, Registrar registrar);
};
void register_all(CLI::App& app, AppContext& ctx);

// The download flags of the main command, `watch` and `fetch`: one set of
// names, help texts and defaults, turned into fetch::Options in one place.
struct DownloadFlags {
  std::vector<std::string> mirrors;
  std::string cache_dir, ca_cert, keyring, signing_key_fingerprint;
  bool offline = false, verify_signature = false;

  fetch::Options options(const EventSink& events) const;
};
// Adds --mirror, --cache-dir, --offline, --ca-cert, --verify-signature,
// --keyring and --signing-key-fingerprint to `app`, in help group `group`.
void add_download_flags(CLI::App& app, DownloadFlags& f, const std::string& group);

// Writes `lines` (public host keys) to `path` as a known_hosts file, atomically,
// and says so. With `merge`, lines already in the file for other hosts stay and
// those for a host in `lines` are replaced (a re-flashed Pi's old key is no
// longer trusted), and no lines leave the file alone; else the file is
// replaced, or removed when there are no lines.
void write_known_hosts(AppContext& ctx, const std::string& path, const std::vector<std::string>& lines, bool merge);

// Throws Errc::usage when `output` exists and is the same file as one of
// `inputs` ({flag, path}; empty paths are skipped).
void refuse_overwriting_inputs(const std::string& output,
                               const std::vector<std::pair<std::string, std::string>>& inputs);

// The first line of every --dry-run plan.
inline constexpr const char* kPlanHeading = "plan (nothing is written: --dry-run)\n";

// SOURCE_DATE_EPOCH from the environment (nullopt when unset); throws Errc::usage if malformed.
std::optional<std::int64_t> source_date_epoch();
// The secret of --seed-file (at least 16 bytes), or nothing for an empty path.
// Throws Errc::usage naming the file when it cannot be read or is too short.
std::optional<std::string> read_seed_file(const std::string& path);
// "0x1234abcd" (disk identifiers and the like).
std::string hex32(std::uint32_t v);

// The library versions line for --version.
std::string version_text();

// Runs the whole CLI (parse, dispatch, error handling); returns the exit code.
int run(int argc, char** argv);

}  // namespace rpi::cli
