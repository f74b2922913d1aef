// What every subcommand shares: global flags, the reporter, and the registry
// through which each cmd_*.cpp adds itself to the command line.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fetch/fetch.hpp"
#include "overlay/spec.hpp"
#include "reporter.hpp"
#include "rpi/atomic_file.hpp"

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

// A spec's warnings, each a "warning:" line (in --json an event with its
// file, line and column).
void report_spec_warnings(AppContext& ctx, const overlay::Spec& spec);

// The download flags of the main command, `watch` and `fetch`: one set of
// names, help texts and defaults, turned into fetch::Options in one place.
struct DownloadFlags {
  std::vector<std::string> mirrors;
  std::string cache_dir, ca_cert, keyring, signing_key_fingerprint;
  bool offline = false, verify_signature = false;

  fetch::Options options(const EventSink& events) const;
};
// Adds --mirror, --cache-dir, --offline, --ca-cert and, with `signature`,
// --verify-signature, --keyring and --signing-key-fingerprint to `app`, in
// help group `group`.
void add_download_flags(CLI::App& app, DownloadFlags& f, const std::string& group, bool signature = true);

// A CLI11 check for a whole number of at least 1 (at most 6 digits), whose
// error says "'<value>' is not <what> (1 or more)": "a card number", "a number
// of cards".
std::function<std::string(const std::string&)> at_least_one(const std::string& what);
// --host and --first both choose which card: one of them, not both (the other would be ignored).
void host_or_first(const std::string& host, const CLI::Option* first);
// --size '' and --label '' would quietly mean the defaults: refused instead.
void refuse_empty_size_or_label(const CLI::Option* size, const std::string& size_value, const CLI::Option* label,
                                const std::string& label_value);

// Option values checked before anything is resolved or downloaded; each throws
// Errc::usage naming the option.
// --sha256: 64 hex digits; returns it in lower case (as digests are compared).
std::string checked_sha256(const std::string& hex);
// --label: the rule of the spec's [boot].label (1 to 11 letters, digits, '_' or
// '-'; not BOOT or CIDATA), by the spec's own check.
void check_label_option(const std::string& label);
// --disk-id: a non-zero 32-bit hex number, "0x" optional.
std::uint32_t parse_disk_id(const std::string& text);
// --keyring and --ca-cert: readable, non-empty regular files that look like an
// OpenPGP public key and a PEM certificate.
void check_download_files(const DownloadFlags& f);
// A file about to be written as `flag` `path`: its folder exists, is a folder
// and this user may create files in it.
void check_output_folder(const std::string& flag, const std::string& path);

// Writes `lines` (public host keys) to `path` as a known_hosts file, atomically,
// and says so. With `merge`, lines already in the file for other hosts stay and
// those for a host in `lines` are replaced (a re-flashed Pi's old key is no
// longer trusted), and no lines leave the file alone; else the file is
// replaced, or removed when there are no lines.
void write_known_hosts(AppContext& ctx, const std::string& path, const std::vector<std::string>& lines, bool merge);

// write_known_hosts in two steps, so that it can be all or nothing with an
// image: the constructor reads the old file (merge) and writes the new text to
// a temporary beside it, throwing what write_known_hosts would; commit() puts
// it in place (or removes the file) and says so. Destroyed uncommitted, it
// leaves the old file as it was.
class KnownHostsUpdate {
 public:
  KnownHostsUpdate(std::string path, const std::vector<std::string>& lines, bool merge);
  ~KnownHostsUpdate();
  KnownHostsUpdate(const KnownHostsUpdate&) = delete;
  KnownHostsUpdate& operator=(const KnownHostsUpdate&) = delete;
  void commit(AppContext& ctx);

 private:
  std::string path_;
  std::unique_ptr<AtomicFile> file_;
  bool remove_ = false;
};

// A file a run reads or writes, and how a message names it. An input's `what`
// completes "is the file …" ("given as --spec", "[wifi].psk reads"); an
// output's names it ("--output pi.img", "--known-hosts kh").
struct RunFile {
  std::string what;
  std::string path;
};
// The files a run reads: each of `given` ({flag, path}; empty paths skipped),
// and with a spec, its local [alpine].tarball and every file its entries read.
std::vector<RunFile> run_inputs(const overlay::Spec* spec,
                                const std::vector<std::pair<std::string, std::string>>& given);
// Throws Errc::usage when an output is the same file as an input, or as an
// earlier output: the same device and inode when both exist (through symbolic
// and hard links), else the same normalized absolute path. Call it before
// anything is built or written. Outputs with empty paths are skipped.
void refuse_overwriting_inputs(const std::vector<RunFile>& outputs, const std::vector<RunFile>& inputs);

// The first line of every --dry-run plan.
inline constexpr const char* kPlanHeading = "plan (nothing is written: --dry-run)\n";

// SOURCE_DATE_EPOCH from the environment (nullopt when unset); throws Errc::usage if malformed.
std::optional<std::int64_t> source_date_epoch();
// The secret of --seed-file (at least 16 bytes), or nothing for an empty path.
// Throws Errc::usage naming the file when it cannot be read or is too short.
// The whole of a regular file of at most `limit` bytes (Errc::input when it is
// not a regular file or is larger; a FIFO is refused without waiting).
std::string read_regular_file(const std::string& path, std::size_t limit);
std::optional<std::string> read_seed_file(const std::string& path);
// Warnings about the --seed-file at `path` (holding `seed`, as read_seed_file
// read it) that others could know: few distinct bytes, or readable by other
// users (its group or everybody) who can also pass every folder above it.
std::vector<std::string> seed_file_warnings(const std::string& path, const std::optional<std::string>& seed);
// Warns about the hidden temporaries of `outputs` that a run killed by
// SIGKILL or a power cut left (0600, perhaps as big as an image, holding its
// secrets): nothing removes them, and a concurrent run's look the same. A
// warning, shown with -q too: the user has to remove them.
void note_leftovers(AppContext& ctx, const std::vector<std::string>& outputs);

// `--output -`, `-o -`: the data goes to standard output (a pipe, or a file it
// is redirected to); ./- is a file named -.
inline bool to_stdout(const std::string& output) {
  return output == "-";
}
// Standard output is to carry `data` ("a disk image") written for `flag`
// ("--output -") and nothing else: refused (Errc::usage) with --json (its
// events go there: `with_json` says what to give instead), on a terminal, and
// when standard error goes where it does (2>&1: the messages would end up in
// `data`).
void require_stdout_for_data(const AppContext& ctx, const std::string& data, const std::string& flag,
                             const std::string& with_json);
// Standard output, `fd` now, is a regular file that group or others can read:
// what goes there holds secrets (`holds`: "an image can hold secrets (Wi-Fi
// keys, SSH host keys)"), so it is made 0600, as an output file is; a note
// says so (a warning when it cannot be).
void make_stdout_file_private(AppContext& ctx, int fd, const std::string& holds);
// The name of a card run's scratch folder, less mkdtemp's six characters.
inline constexpr const char* kScratchPrefix = "rpi-provision.";
// The file in a scratch folder its run holds an exclusive flock on while it
// lives (warn_scratch_leftovers passes over a folder whose file is locked).
inline constexpr const char* kScratchLockFile = ".in-use";
// Warns, once, about the other scratch folders ("rpi-provision.XXXXXX", this
// user's, not symbolic links) in the folder of `scratch`, the one this run just
// made: a run killed by SIGKILL or a power cut left them (0700, holding whole
// card images and their secrets). Not removed: a concurrent run's look the same.
void warn_scratch_leftovers(AppContext& ctx, const std::filesystem::path& scratch);
// "0x1234abcd" (disk identifiers and the like).
std::string hex32(std::uint32_t v);

// The library versions line for --version.
std::string version_text();

// Runs the whole CLI (parse, dispatch, error handling); returns the exit code.
int run(int argc, char** argv);

}  // namespace rpi::cli
