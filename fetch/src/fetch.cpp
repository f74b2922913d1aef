#include "fetch/fetch.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <fstream>
#include <sstream>
#include <string_view>

#include "cache.hpp"
#include "rpi/atomic_file.hpp"
#include "rpi/error.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"
#include "transfer.hpp"

namespace rpi::fetch {

namespace fs = std::filesystem;
using detail::is_hex;

namespace {

// Splits "1.2.3" style text into its dot-separated numeric parts; false when a
// part is empty or not all digits.
bool numeric_parts(const std::string& v, std::size_t count) {
  std::size_t parts = 1, digits = 0;
  for (char c : v) {
    if (c == '.') {
      if (!digits) return false;
      ++parts;
      digits = 0;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      ++digits;
    } else {
      return false;
    }
  }
  return digits && parts == count;
}
// X.Y.Z or X.Y.Z_rcN
bool is_exact(const std::string& v) {
  std::size_t rc = v.find("_rc");
  if (rc == std::string::npos) return numeric_parts(v, 3);
  std::string n = v.substr(rc + 3);
  return numeric_parts(v.substr(0, rc), 3) && numeric_parts(n, 1);
}
// X.Y or vX.Y
bool is_branch(const std::string& v) {
  return numeric_parts(!v.empty() && v[0] == 'v' ? v.substr(1) : v, 2);
}

void validate(const Query& q) {
  if (q.arch != "aarch64" && q.arch != "armv7" && q.arch != "armhf")
    throw Error(Errc::usage, "arch '" + q.arch + "' has no Alpine Raspberry Pi tarball (use aarch64, armv7 or armhf)");
  if (q.version != "latest-stable" && q.version != "edge" && !is_branch(q.version) && !is_exact(q.version))
    throw Error(Errc::usage, "version '" + q.version + "' is not latest-stable, edge, X.Y or X.Y.Z");
}

// The mirror directory a version lives in: latest-stable, edge or vX.Y.
std::string branch_dir(const std::string& version) {
  if (version == "latest-stable" || version == "edge") return version;
  std::string v = version[0] == 'v' ? version.substr(1) : version;
  std::size_t first = v.find('.');
  std::size_t second = v.find('.', first + 1);
  return "v" + v.substr(0, second);
}

std::string releases_dir(const std::string& branch, const std::string& arch) {
  return branch + "/releases/" + arch + "/";
}

std::string scalar(const YAML::Node& item, const char* key) {
  YAML::Node n = item[key];
  if (!n || !n.IsScalar()) return {};
  return n.Scalar();
}

// Text from a mirror or the command line for an error message: escaped (a
// hostile index must not drive the terminal), at most 80 bytes of it.
std::string shown(const std::string& s) {
  return s.size() <= 80 ? printable(s) : printable(std::string_view(s).substr(0, 80)) + "...";
}

// The index's `file:` becomes a cache file name and the last part of a URL, so
// it must be a plain name like Alpine's own (letters, digits, . _ + -): never a
// path, never hidden, nothing a URL or the cache's info file would read differently.
bool plain_file_name(const std::string& f) {
  if (f.empty() || f.size() > 255 || f[0] == '.') return false;
  return std::all_of(f.begin(), f.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '+' || c == '-';
  });
}

// The first hex token of a "<hex>  <file>" companion file.
std::string digest_from_companion(const std::string& body, std::size_t len, const std::string& source,
                                  const std::string& file) {
  std::istringstream in(body);
  std::string hex, name;
  in >> hex >> name;
  if (!is_hex(hex, len))
    throw Error(Errc::input, source + ": expected a " + std::to_string(len * 4) + "-bit hex digest, found '" +
                                 hex.substr(0, 80) + "'");
  if (!name.empty() && name != file && name != "*" + file)
    throw Error(Errc::input, source + " is the digest of '" + name + "', not of " + file);
  return ascii_lower(hex);
}

// What a mirror root is, for errors that suspect the one given.
const std::string kRootIs =
    std::string("It is the folder that holds latest-stable/, edge/, v3.22/, e.g. ") + kDefaultMirror;

// Resolution against one mirror root.
Release resolve_on(const std::string& mirror, const Query& q, const Options& opts) {
  const std::string branch = branch_dir(q.version);
  const std::string index_url = detail::join_url(mirror, releases_dir(branch, q.arch) + "latest-releases.yaml");
  detail::Text index = detail::get_text(index_url, opts);
  std::optional<Release> latest;
  if (index.found) latest = parse_release_index(index.body, index_url);

  if (!is_exact(q.version)) {
    if (!latest) {
      // The branch may exist without this arch: then say that, not "no such branch".
      std::string others;
      for (const char* a : {"aarch64", "armv7", "armhf"}) {
        if (q.arch == a) continue;
        try {
          if (detail::get_text(detail::join_url(mirror, releases_dir(branch, a) + "latest-releases.yaml"), opts).found)
            others += std::string(others.empty() ? "" : ", ") + a;
        } catch (const Error&) {
          // Only a hint: the error below is what counts.
        }
      }
      if (!others.empty())
        throw Error(Errc::usage, "Alpine " + branch + " has no " + q.arch + " release on this mirror (" + index_url +
                                     " was not found; it has " + others + ")");
      // latest-stable and edge exist on every Alpine mirror: the root is wrong.
      if (branch == "latest-stable" || branch == "edge")
        throw Error(Errc::usage, "the mirror " + mirror + " has no " + branch + "/ (" + index_url +
                                     " was not found): is the mirror root right? " + kRootIs);
      throw Error(Errc::usage, "no release index for Alpine " + q.version + " (" + q.arch + "): " + index_url +
                                   " was not found — is '" + q.version +
                                   "' an existing branch (e.g. 3.22, latest-stable, edge)? If it is, is the mirror "
                                   "root right? " +
                                   kRootIs);
    }
    if (latest->arch != q.arch)
      throw Error(Errc::input, index_url + " lists arch '" + latest->arch + "', expected " + q.arch);
    return *latest;
  }
  if (latest && latest->version == q.version) return *latest;

  // An exact version the index does not list (an older point release): the file
  // name pattern and its digest companions.
  Release r;
  r.version = q.version;
  r.arch = q.arch;
  r.branch = branch;
  r.file = "alpine-rpi-" + q.version + "-" + q.arch + ".tar.gz";
  const std::string file_url = detail::join_url(mirror, releases_dir(branch, q.arch) + r.file);
  detail::Text sha256 = detail::get_text(file_url + ".sha256", opts, 4096);
  if (!sha256.found) {
    std::string offers = latest ? "the " + branch + " index offers " + latest->version
                                : "there is no " + branch + " index for " + q.arch + " either (is " + branch +
                                      " an existing branch? is the mirror root right? " + kRootIs + ")";
    throw Error(Errc::usage, "Alpine " + q.version + " (" + q.arch + ") is not on the mirror: " + file_url +
                                 ".sha256 was not found; " + offers);
  }
  r.sha256 = digest_from_companion(sha256.body, 64, file_url + ".sha256", r.file);
  r.provenance = "companion";
  detail::Text sha512 = detail::get_text(file_url + ".sha512", opts, 4096);
  if (sha512.found) r.sha512 = digest_from_companion(sha512.body, 128, file_url + ".sha512", r.file);
  return r;
}

// The cache entry that --offline resolves `q` to (entries are newest first),
// else nullptr; `unverified` (when given) collects the matching names it may
// not use: their digests came from no release index.
const CacheEntry* offline_match(const Query& q, const std::vector<CacheEntry>& all, std::string* unverified) {
  const std::string branch = branch_dir(q.version);
  for (const CacheEntry& e : all) {  // newest first
    if (e.arch != q.arch) continue;
    bool match = false;
    if (is_exact(q.version))
      match = e.version == q.version;
    else if (q.version == "edge")
      match = e.branch == "edge";
    else if (q.version == "latest-stable")
      match = !e.version.empty() && e.branch != "edge";
    else
      match = e.branch == branch || e.version.rfind(branch.substr(1) + ".", 0) == 0;
    if (!match) continue;
    // Only entries whose digests came from the mirror's release files stand for
    // a version: a `--tarball FILE --sha256` entry is named like a release but
    // nothing checked it against one.
    if (e.provenance == "index" || e.provenance == "companion") return &e;
    if (unverified) *unverified += (unverified->empty() ? "" : ", ") + e.file;
  }
  return nullptr;
}

// For a resolution that failed on the network: "; the cache holds FILE; add
// --offline to use it" when --offline would resolve the same query, else "".
// Reads the cache without creating it.
std::string offline_hint(const Query& q, const Options& opts) {
  if (opts.cache_dir.empty()) return {};
  std::vector<CacheEntry> all;
  try {
    all = list_cache(opts.cache_dir);
  } catch (const std::exception&) {
    return {};  // only a hint
  }
  const CacheEntry* e = offline_match(q, all, nullptr);
  return e ? "; the cache holds " + e->file + "; add --offline to use it" : std::string();
}

Release resolve_offline(const Query& q, const Options& opts) {
  const fs::path cache = detail::cache_root(opts);
  std::vector<CacheEntry> all = list_cache(cache);
  std::string unverified;  // matching names whose digests no release index vouched for
  if (const CacheEntry* e = offline_match(q, all, &unverified)) return static_cast<const Release&>(*e);
  std::string have;
  for (const CacheEntry& e : all) have += (have.empty() ? "" : ", ") + e.file;
  std::string cmd = "rpi-provision fetch --version " + q.version + " --arch " + q.arch;
  for (const std::string& m : q.mirrors) cmd += " --mirror " + rpi::shell_word(m);
  if (opts.cache_dir != default_cache_dir()) cmd += " --cache-dir " + rpi::shell_word(opts.cache_dir.string());
  throw Error(Errc::network,
              "offline: the cache " + cache.string() + " holds no Alpine " + q.version + " tarball for " + q.arch +
                  " (it holds: " + (have.empty() ? std::string("nothing") : have) + ")" +
                  (unverified.empty() ? ""
                                      : "; " + unverified +
                                            " came from --tarball or an older rpi-provision, not from a release "
                                            "index, so it does not stand for a version") +
                  "; run `" + cmd + "` with network access first");
}

std::string url_file_name(const std::string& url) {
  std::string u = url.substr(0, url.find_first_of("?#"));
  std::string name = u.substr(u.find_last_of('/') + 1);
  if (name.empty() || name == "." || name == "..") return "download";
  return name;
}

// Downloads and verifies one URL into the part file; returns the checked digests.
detail::Downloaded download_verified(const Release& r, const std::string& url, const fs::path& part,
                                     const Options& opts) {
  // Bytes that failed a check are not trusted: never left around to be resumed.
  auto discard = [&] {
    std::error_code ec;
    fs::remove(part, ec);
    fs::path validator = part;
    validator += ".validator";
    fs::remove(validator, ec);
  };
  for (int round = 0;; ++round) {
    Stopwatch took;
    detail::Downloaded d;
    try {
      d = detail::download(url, part, r.size, opts, r.file);
    } catch (const Error& e) {
      // e.g. the server sent more than the index's size: what it did send may be
      // the start of another file.
      if (e.code() == Errc::verify) discard();
      throw;
    }
    std::string problem;
    if (r.size && d.size != r.size)
      problem = "size mismatch: expected " + std::to_string(r.size) + " bytes, got " + std::to_string(d.size);
    else if (d.sha256 != r.sha256)
      problem = "SHA-256 mismatch: expected " + r.sha256 + ", got " + d.sha256;
    else if (!r.sha512.empty() && d.sha512 != r.sha512)
      problem = "SHA-512 mismatch: expected " + r.sha512 + ", got " + d.sha512;
    if (problem.empty()) {
      emit_detail(opts.events, r.file,
                  r.file + ": " + std::to_string(d.size) + " bytes, sha256 " + d.sha256 +
                      (r.sha512.empty() ? "" : " and its sha512") + " as expected" +
                      (r.provenance == "index"       ? " (from the release index)"
                       : r.provenance == "companion" ? " (from the mirror's .sha256)"
                                                     : "") +
                      "; fetched and checked in " + took.elapsed());
      return d;
    }
    discard();
    // Bytes kept from an earlier run may belong to an older upload: one clean retry.
    if (d.resumed && round == 0) {
      emit(opts.events, Event{"note", r.file, 0, 0, r.file + ": " + problem + " after resuming; downloading again"});
      continue;
    }
    throw Error(Errc::verify, r.file + " from " + url + ": " + problem + " — the download was deleted and is not used");
  }
}

// A file named by an option must be there and readable before any network access.
void check_readable_file(const fs::path& p, const char* flag) {
  std::error_code ec;
  fs::file_status st = fs::status(p, ec);
  if (!fs::exists(st)) throw Error(Errc::usage, std::string(flag) + " " + p.string() + " does not exist");
  if (!fs::is_regular_file(st)) throw Error(Errc::usage, std::string(flag) + " " + p.string() + " is not a file");
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error(Errc::usage, std::string(flag) + " " + p.string() + " cannot be read (permission denied?)");
}

// Option combinations that cannot work, refused before any download or cache lookup.
void check_options(const Options& opts) {
  if (opts.verify_signature && opts.keyring.empty())
    throw Error(Errc::usage,
                "--verify-signature needs --keyring FILE (Alpine's key: https://alpinelinux.org/keys/ncopa.asc)");
  if (!opts.keyring.empty()) check_readable_file(opts.keyring, "--keyring");
  if (!opts.signing_key_fingerprint.empty()) {
    std::string f;
    for (char c : opts.signing_key_fingerprint)
      if (c != ' ') f += c;
    if (!is_hex(f, 40))
      throw Error(Errc::usage, "--signing-key-fingerprint '" + shown(opts.signing_key_fingerprint) +
                                   "' is not 40 hex digits (e.g. " + kAlpineSigningKey + ")");
  }
  if (!opts.ca_cert.empty()) check_readable_file(opts.ca_cert, "--ca-cert");
}

// Checks `asc` (from `asc_source`, a URL or cached path) over `file`; on failure
// the error says what became of the tarball (`outcome`).
void check_signature(const Release& r, const fs::path& file, const std::string& asc, const std::string& asc_source,
                     const Options& opts, const std::string& outcome) {
  try {
    Stopwatch took;
    verify_detached_signature(file, asc, opts.keyring, opts.signing_key_fingerprint,
                              r.file + " (signature " + asc_source + ")");
    emit_detail(opts.events, r.file,
                r.file + ": good signature " + asc_source + " by " +
                    (opts.signing_key_fingerprint.empty() ? kAlpineSigningKey : opts.signing_key_fingerprint) +
                    ", checked in " + took.elapsed());
  } catch (const Error& e) {
    if (e.code() != Errc::verify) throw;
    throw Error(Errc::verify, std::string(e.what()) + " — " + outcome);
  }
}

std::string fetch_signature(const Release& r, const std::string& url, const fs::path& file, const Options& opts,
                            const std::string& outcome) {
  const std::string asc_url = url + ".asc";
  detail::Text asc = detail::get_text(asc_url, opts, 1 << 20);
  if (!asc.found)
    throw Error(Errc::verify, "no signature for " + r.file + ": " + asc_url + " was not found (--verify-signature)");
  check_signature(r, file, asc.body, asc_url, opts, outcome);
  return asc.body;
}

// A mirror root (--mirror, a spec's [alpine].mirror) checked once, before any
// request: http(s) with a host (the scheme in any case), or an existing folder
// (file:// or a path). Returns it with the scheme in lower case.
std::string checked_mirror(const std::string& m, const std::string& from) {
  const std::string hint = "; use https://HOST/PATH, http://HOST/PATH, file:///DIR or an absolute directory";
  if (m.empty()) throw Error(Errc::usage, "an empty mirror was given (" + from + ")" + hint);
  std::size_t sep = m.find("://");
  if (sep != std::string::npos && sep > 0 &&
      std::all_of(m.begin(), m.begin() + static_cast<std::ptrdiff_t>(sep), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
      })) {
    const std::string scheme = ascii_lower(m.substr(0, sep)), rest = m.substr(sep + 3);
    if (scheme == "http" || scheme == "https") {
      std::string host = rest.substr(0, rest.find_first_of("/?#"));
      host = host.substr(host.rfind('@') == std::string::npos ? 0 : host.rfind('@') + 1);
      if (host.empty() || host[0] == ':') throw Error(Errc::usage, "mirror " + shown(m) + " has no host name" + hint);
      return scheme + "://" + rest;
    }
    if (scheme != "file")
      throw Error(Errc::usage, "unsupported scheme " + scheme + ":// in " + from + " " + shown(m) + hint);
    const std::string normal = "file://" + rest;
    fs::path dir = detail::local_path(normal);
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
      throw Error(Errc::usage, "mirror folder " + dir.string() +
                                   (fs::exists(dir, ec) ? " is not a folder" : " does not exist") + " (" + from + " " +
                                   shown(m) + ")");
    return normal;
  }
  std::error_code ec;
  if (!fs::is_directory(m, ec))
    throw Error(Errc::usage, "mirror folder " + shown(m) +
                                 (fs::exists(m, ec) ? " is not a folder" : " does not exist") + " (" + from + ")" +
                                 hint);
  return m;
}

// Which of several mirrors' errors the whole failure reports, whatever their
// order: a network failure (the release may be there) over a failed check over
// bad data over "no such release".
int error_rank(Errc c) {
  switch (c) {
    case Errc::network:
      return 4;
    case Errc::verify:
      return 3;
    case Errc::input:
      return 2;
    case Errc::usage:
      return 1;
    default:
      return 5;  // anything unexpected (io, internal) matters most
  }
}

}  // namespace

Release parse_release_index(const std::string& yaml_text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw Error(Errc::input, source + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                                 ": malformed YAML: " + e.msg);
  }
  if (!root.IsSequence()) throw Error(Errc::input, source + ": not a release index (expected a YAML list of images)");
  std::string offers;
  for (const YAML::Node& item : root) {
    if (!item.IsMap()) continue;
    std::string flavor = scalar(item, "flavor"), file = scalar(item, "file");
    offers += (offers.empty() ? "" : ", ") + shown(file.empty() ? flavor : file);
    if (flavor != "alpine-rpi" || file.size() < 7 || file.compare(file.size() - 7, 7, ".tar.gz") != 0) continue;
    Release r;
    r.file = file;
    r.version = scalar(item, "version");
    r.arch = scalar(item, "arch");
    r.branch = scalar(item, "branch");
    r.sha256 = ascii_lower(scalar(item, "sha256"));
    r.sha512 = ascii_lower(scalar(item, "sha512"));
    std::string size = scalar(item, "size");
    const std::string where = source + ": entry " + shown(file);
    if (!plain_file_name(file))
      throw Error(Errc::input, source + ": the alpine-rpi entry's file '" + shown(file) +
                                   "' is not a plain file name (it would name a file in the download cache), so "
                                   "nothing was downloaded; the mirror's index is broken or hostile: try another "
                                   "--mirror");
    if (!is_hex(r.sha256, 64)) throw Error(Errc::input, where + ": missing or malformed sha256");
    if (!r.sha512.empty() && !is_hex(r.sha512, 128)) throw Error(Errc::input, where + ": malformed sha512");
    if (size.empty() || size.size() > 15 || size.find_first_not_of("0123456789") != std::string::npos)
      throw Error(Errc::input, where + ": missing or malformed size");
    r.size = std::stoull(size);
    if (r.version.empty() || r.arch.empty()) {
      std::string v, a;
      if (detail::parse_file_name(file, v, a)) {
        if (r.version.empty()) r.version = v;
        if (r.arch.empty()) r.arch = a;
      }
    }
    if (r.branch.empty()) r.branch = is_exact(r.version) ? branch_dir(r.version) : "edge";
    r.provenance = "index";
    return r;
  }
  throw Error(Errc::input, source + " has no alpine-rpi .tar.gz entry (it offers: " +
                               (offers.empty() ? std::string("nothing") : offers) + ")");
}

namespace {
// Runs `body` with events and errors passed through redact_urls: a mirror URL
// may carry a password, and nothing the library says may show it.
template <class F>
auto redacting(const Options& opts, F&& body) {
  Options o = opts;
  if (opts.events)
    o.events = [inner = opts.events](const Event& e) {
      Event r = e;
      r.subject = redact_urls(std::move(r.subject));
      r.message = redact_urls(std::move(r.message));
      inner(r);
    };
  try {
    return body(o);
  } catch (const Error& e) {
    throw Error(e.code(), redact_urls(e.what()));
  }
}

Release resolve_impl(const Query& query, const Options& opts) {
  check_options(opts);
  validate(query);
  if (opts.offline) return resolve_offline(query, opts);
  std::vector<std::string> mirrors = query.mirrors.empty() ? std::vector<std::string>{kDefaultMirror} : query.mirrors;
  for (std::string& m : mirrors) m = checked_mirror(m, query.mirrors_from);
  std::string errors;
  Errc code = Errc::usage;
  bool any = false;
  for (std::size_t i = 0; i < mirrors.size(); ++i) {
    Stopwatch took;
    try {
      Release r = resolve_on(mirrors[i], query, opts);
      emit_detail(opts.events, mirrors[i],
                  "resolved Alpine " + query.version + " (" + query.arch + ") on " + mirrors[i] + ": " + r.file +
                      (r.size ? ", " + std::to_string(r.size) + " bytes" : std::string()) + ", sha256 " + r.sha256 +
                      " (" + (r.provenance == "index" ? "release index" : "the mirror's .sha256") + ") in " +
                      took.elapsed());
      // Download from the mirror that answered first, then the others in order.
      // The index's own branch (vX.Y) is used, not the latest-stable alias.
      std::string dir = releases_dir(r.branch.empty() ? branch_dir(query.version) : r.branch, r.arch) + r.file;
      r.urls.push_back(detail::join_url(mirrors[i], dir));
      for (std::size_t j = 0; j < mirrors.size(); ++j)
        if (j != i) r.urls.push_back(detail::join_url(mirrors[j], dir));
      return r;
    } catch (const Error& e) {
      if (mirrors.size() == 1) {
        // Its error is the whole error, with the way out when there is one.
        if (e.code() == Errc::network) throw Error(e.code(), e.what() + offline_hint(query, opts));
        throw;
      }
      errors += std::string(errors.empty() ? "" : "; ") + mirrors[i] + ": " + e.what();
      if (!any || error_rank(e.code()) > error_rank(code)) code = e.code();
      any = true;
      if (i + 1 < mirrors.size()) {
        emit(opts.events, Event{"warning", mirrors[i], 0, 0,
                                "mirror " + mirrors[i] + " failed: " + e.what() + "; trying the next mirror"});
        emit_detail(opts.events, mirrors[i + 1],
                    "moving on to mirror " + mirrors[i + 1] + ": " + mirrors[i] + " failed after " + took.elapsed() +
                        " (" + e.what() + ")");
      }
    }
  }
  throw Error(code, "no mirror could resolve Alpine " + query.version + " (" + query.arch + "): " + errors +
                        (code == Errc::network ? offline_hint(query, opts) : std::string()));
}

fs::path fetch_release_impl(const Release& r, const Options& opts) {
  check_options(opts);
  if (!is_hex(r.sha256, 64)) throw Error(Errc::usage, "a SHA-256 must be 64 hex digits, got '" + r.sha256 + "'");
  // The name becomes a file in the cache: no path, no "." or "..", no control characters.
  if (r.file.empty() || r.file == "." || r.file == ".." || r.file.find('/') != std::string::npos ||
      std::any_of(r.file.begin(), r.file.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }))
    throw Error(Errc::usage, "bad tarball file name '" + shown(r.file) + "' (a plain file name is needed)");
  const Release rel = [&] {
    Release x = r;
    x.sha256 = ascii_lower(x.sha256);
    x.sha512 = ascii_lower(x.sha512);
    return x;
  }();
  const fs::path cache = detail::cache_root(opts);
  detail::EntryLock lock(cache, rel.sha256, true, &opts, rel.file);

  std::string damage;
  Stopwatch looked;
  std::optional<fs::path> hit = detail::lookup(cache, rel.file, rel.sha256, rel.size, &damage);
  emit_detail(opts.events, rel.file,
              hit ? "cache hit: " + hit->string() + " (size and sha256 checked in " + looked.elapsed() + ")"
                  : "cache miss: " + rel.file + " (sha256 " + rel.sha256 + ") is not in " + cache.string() +
                        (damage.empty() ? std::string() : " intact (its copy " + damage + ")"));
  if (hit) {
    if (opts.verify_signature) {
      fs::path asc = hit->parent_path() / (hit->filename().string() + ".asc");
      const std::string kept = "the cached tarball " + hit->string() + " was not used (it stays in the cache)";
      std::error_code ec;
      if (fs::exists(asc, ec)) {
        std::ifstream in(asc, std::ios::binary);
        std::ostringstream ss;
        ss << in.rdbuf();
        try {
          check_signature(rel, *hit, ss.str(), asc.string(), opts, kept);
        } catch (const Error& e) {
          // The cached .asc may be what is damaged: fetch it once more.
          if (e.code() != Errc::verify || opts.offline || rel.urls.empty() || !detail::is_remote(rel.urls.front()))
            throw;
          emit(opts.events,
               Event{"warning", rel.file, 0, 0,
                     std::string(e.what()) + "; fetching the signature again from " + rel.urls.front() + ".asc"});
          std::string body = fetch_signature(rel, rel.urls.front(), *hit, opts, kept);
          write_file_atomic(asc, body);
        }
      } else {
        if (opts.offline || rel.urls.empty())
          throw Error(Errc::verify, "offline: no cached signature for " + rel.file + " (--verify-signature)");
        std::string body = fetch_signature(rel, rel.urls.front(), *hit, opts, kept);
        write_file_atomic(asc, body);
      }
    }
    if (!lock.read_only()) detail::record_release(cache, rel);
    emit(opts.events, Event{"note", rel.file, 0, 0, rel.file + ": verified cache hit"});
    return *hit;
  }
  if (lock.read_only())
    throw Error(Errc::io, "the cache " + cache.string() + " cannot be written (" +
                              (damage.empty() ? "read-only, or not yours" : "and its copy " + damage) +
                              ") and has no " + "intact " + rel.file + ": use --cache-dir with a folder you can write");
  const std::string damaged =
      damage.empty() ? "" : "the cached copy of " + rel.file + " " + damage + " and was removed";
  // Offline, only local files (`--tarball FILE`) can be copied in.
  std::vector<std::string> urls;
  for (const std::string& u : rel.urls)
    if (!opts.offline || !detail::is_remote(u)) urls.push_back(u);
  if (opts.offline && urls.empty()) {
    if (!damaged.empty()) throw Error(Errc::network, "offline: " + damaged + "; fetch it again with network access");
    throw Error(Errc::network, "offline: " + rel.file + " (sha256 " + rel.sha256 + ") is not in the cache " +
                                   cache.string() + "; fetch it with network access first");
  }
  if (urls.empty()) throw Error(Errc::usage, "no URL to download " + rel.file + " from");
  if (!damaged.empty()) emit(opts.events, Event{"warning", rel.file, 0, 0, damaged + "; downloading again"});

  const fs::path part = detail::part_path(cache, rel.sha256, rel.file);
  // The bytes of the part file the next run asks a server for the rest of (0:
  // none, or only local copies, which start over), and where they are.
  auto kept = [&]() -> std::uint64_t {
    std::error_code ec;
    const std::uintmax_t n = fs::file_size(part, ec);
    return ec || std::none_of(urls.begin(), urls.end(), detail::is_remote) ? 0 : n;
  };
  const std::string kept_where = " kept in " + (cache / "partial").string() + "/; run again to resume";
  // A network failure says "; 23.0 MiB kept in C/partial/; run again to resume".
  auto with_kept = [&](const Error& e) {
    const std::uint64_t n = e.code() == Errc::network ? kept() : 0;
    return Error(e.code(), std::string(e.what()) + (n ? "; " + format_size(n) + kept_where : std::string()));
  };
  std::string errors;
  Errc code = Errc::network;
  try {
    for (std::size_t i = 0; i < urls.size(); ++i) {
      const std::string& url = urls[i];
      try {
        detail::Downloaded d = download_verified(rel, url, part, opts);
        std::string asc;
        if (opts.verify_signature) {
          try {
            asc = fetch_signature(rel, url, part, opts, "the tarball is not trusted and was not cached");
          } catch (...) {
            std::error_code ec;
            fs::remove(part, ec);  // not trusted: do not keep it around as resumable
            fs::path validator = part;
            validator += ".validator";
            fs::remove(validator, ec);
            throw;
          }
        }
        CacheEntry meta;
        static_cast<Release&>(meta) = rel;
        meta.size = d.size;
        meta.sha256 = d.sha256;
        meta.sha512 = d.sha512;
        meta.urls = {redact_urls(url)};
        fs::path stored = detail::store(cache, meta, part, asc);
        emit_detail(opts.events, rel.file, "stored in the cache: " + stored.string());
        return stored;
      } catch (const Error& e) {
        if (e.code() != Errc::network && e.code() != Errc::verify) throw;
        if (urls.size() == 1) throw with_kept(e);
        errors += std::string(errors.empty() ? "" : "; ") + e.what();
        if (i == 0 || error_rank(e.code()) > error_rank(code)) code = e.code();
        if (i + 1 < urls.size()) {
          emit(opts.events,
               Event{"warning", rel.file, 0, 0, "mirror " + url + " failed: " + e.what() + "; trying the next mirror"});
          emit_detail(opts.events, rel.file, "moving on to " + urls[i + 1] + " (" + url + " failed: " + e.what() + ")");
        }
      }
    }
  } catch (const DownloadCancelled&) {
    throw;
  } catch (const Cancelled&) {
    const std::uint64_t n = kept();
    if (!n) throw;
    throw DownloadCancelled("cancelled: " + format_size(n) + " of " + rel.file + kept_where);
  }
  throw with_kept(Error(code, "every mirror failed for " + rel.file + ": " + errors));
}

}  // namespace

void check_settings(const Query& query, const Options& opts) {
  redacting(opts, [&](const Options& o) {
    check_options(o);
    if (!o.offline)
      for (const std::string& m : query.mirrors) (void)checked_mirror(m, query.mirrors_from);
    return 0;
  });
}

Release resolve(const Query& query, const Options& opts) {
  return redacting(opts, [&](const Options& o) { return resolve_impl(query, o); });
}

fs::path fetch_release(const Release& r, const Options& opts) {
  return redacting(opts, [&](const Options& o) { return fetch_release_impl(r, o); });
}

std::string redact_urls(std::string text) {
  text = rpi::redact_urls(std::move(text));
  // Query-string values: presigned URLs carry their signatures and tokens there.
  for (std::size_t from = 0;;) {
    std::size_t sep = text.find("://", from);
    if (sep == std::string::npos) return text;
    std::size_t end = text.find_first_of(" \t\r\n'\"<>", sep + 3);
    if (end == std::string::npos) end = text.size();
    std::size_t q = text.find('?', sep + 3);
    if (q != std::string::npos && q < end) {
      std::size_t frag = text.find('#', q);
      std::size_t qend = frag != std::string::npos && frag < end ? frag : end;
      for (std::size_t i = q + 1; i < qend;) {
        std::size_t amp = text.find('&', i);
        if (amp == std::string::npos || amp > qend) amp = qend;
        std::size_t eq = text.find('=', i);
        if (eq != std::string::npos && eq < amp) {
          std::size_t vend = amp;
          // Punctuation right after a URL in a message ("URL: HTTP 404") is not its value.
          while (vend > eq + 1 && vend == qend && std::string_view(":,;)").find(text[vend - 1]) != std::string::npos)
            --vend;
          std::size_t len = vend - eq - 1;
          if (len > 0 && text.compare(eq + 1, len, "***") != 0) {
            text.replace(eq + 1, len, "***");
            amp = amp + 3 - len;
            qend = qend + 3 - len;
            end = end + 3 - len;
          }
        }
        i = amp + 1;
      }
    }
    from = end;
  }
}

fs::path fetch_url(const std::string& url_in, const std::string& sha256_hex, const Options& opts) {
  if (!is_hex(sha256_hex, 64))
    throw Error(Errc::usage, "--sha256 must be 64 hex digits, got '" + sha256_hex.substr(0, 80) + "'");
  std::string url = url_in;
  if (url.find("://") != std::string::npos) {
    // Same rules as a mirror for the scheme and host; a local file is checked when copied.
    std::string scheme = ascii_lower(url.substr(0, url.find("://")));
    if (scheme == "http" || scheme == "https" || scheme == "file") {
      if (scheme != "file")
        url = redacting(opts, [&](const Options&) { return checked_mirror(url, "--tarball"); });
      else
        url = "file://" + url.substr(url.find("://") + 3);
    } else {
      throw Error(Errc::usage, redact_urls("unsupported scheme " + scheme + ":// in --tarball " + url +
                                           "; use https://, http://, file:// or a path"));
    }
  }
  Release r;
  r.file = url_file_name(url);
  r.sha256 = ascii_lower(sha256_hex);
  r.urls.push_back(url);
  if (detail::parse_file_name(r.file, r.version, r.arch) && is_exact(r.version)) r.branch = branch_dir(r.version);
  return fetch_release(r, opts);
}

// ---- fetch --list ----

namespace {

constexpr std::size_t kMaxListing = 4 << 20;  // an HTML listing or a folder's entries, like an index
constexpr std::size_t kMaxFolderEntries = 100000;
constexpr int kMaxBranchWalk = 20;
constexpr std::array<const char*, 3> kArches{"aarch64", "armv7", "armhf"};

// "edge" or "vX.Y" (short enough for X and Y to be ints: a hostile index may say anything).
bool is_branch_name(const std::string& n) {
  return n == "edge" || (n.size() > 1 && n.size() <= 12 && n[0] == 'v' && numeric_parts(n.substr(1), 2));
}

// Newest stable first, edge last.
bool newer_branch(const std::string& a, const std::string& b) {
  if (a == "edge" || b == "edge") return b == "edge" && a != "edge";
  return compare_versions(a.substr(1), b.substr(1)) > 0;
}

// "3 entries, " for a latest-releases.yaml that is a list of 3 (what a
// detail line says of it); "" for anything else (its reader says what is wrong).
std::string yaml_entries(const YAML::Node& root) {
  if (!root.IsSequence()) return {};
  return std::to_string(root.size()) + (root.size() == 1 ? " entry, " : " entries, ");
}

// One mirror's listings and yaml files, each read at most once per listing.
class MirrorReader {
 public:
  MirrorReader(std::string mirror, const Options& opts) : mirror_(std::move(mirror)), opts_(opts) {}
  const std::string& root() const { return mirror_; }

  // The entries of the folder `rel` ("" for the root, else "v3.22/releases/aarch64/"):
  // a local folder's names, or the links of the HTML page an http(s) server
  // serves for it (folders end in '/'); nullopt: no listing there.
  std::optional<std::vector<std::string>> entries(const std::string& rel) {
    const std::string url = detail::join_url(mirror_, rel);
    if (!detail::is_remote(url)) {
      const fs::path dir = detail::local_path(url);
      std::error_code ec;
      if (!fs::is_directory(dir, ec)) {
        emit_detail(opts_.events, url, dir.string() + ": absent (no such folder to list)");
        return std::nullopt;
      }
      Stopwatch took;
      std::vector<std::string> names;
      for (fs::directory_iterator it(dir, ec), end; !ec && it != end && names.size() < kMaxFolderEntries;
           it.increment(ec)) {
        std::error_code ec2;
        names.push_back(it->path().filename().string() + (it->is_directory(ec2) ? "/" : ""));
      }
      if (ec) throw Error(Errc::io, "cannot list the mirror folder " + dir.string() + ": " + ec.message());
      emit_detail(opts_.events, url,
                  "listed " + dir.string() + ": " + std::to_string(names.size()) + " entries in " + took.elapsed());
      return names;
    }
    detail::Text page;
    try {
      page = detail::get_text(url, opts_, kMaxListing);
    } catch (const Error& e) {
      // A server that lists no folders may refuse them (403): its yaml files still answer.
      if (e.code() != Errc::network) throw;
      emit_detail(opts_.events, url, "no listing at " + url + " (" + e.what() + "); reading its index instead");
      return std::nullopt;
    }
    if (!page.found) return std::nullopt;
    return listing_entries(page.body);
  }

  // <branch>/releases/<arch>/latest-releases.yaml, parsed; nullopt when
  // absent. Read and parsed once: its detail line and every question asked of
  // it use that one parse. Malformed: Errc::input with its line and column,
  // at each use.
  std::optional<YAML::Node> yaml(const std::string& branch, const std::string& arch) {
    const std::string url = yaml_url(branch, arch);
    auto it = yaml_.find(url);
    if (it == yaml_.end()) {
      const Stopwatch took;
      detail::Text t = detail::get_text(url, opts_);
      Yaml y;
      y.found = t.found;
      if (t.found) {
        try {
          y.root = YAML::Load(t.body);
        } catch (const YAML::Exception& e) {
          y.error = url + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                    ": malformed YAML: " + e.msg;
        }
      }
      // An http(s) read has its GET line (get_text); a local file gets one here.
      if (!detail::is_remote(url)) {
        const std::string path = detail::local_path(url).string();
        emit_detail(opts_.events, url,
                    t.found ? "read " + path + ": " + yaml_entries(y.root) + format_size(t.body.size()) + " in " +
                                  took.elapsed()
                            : path + ": absent");
      }
      it = yaml_.emplace(url, std::move(y)).first;
    }
    if (!it->second.found) return std::nullopt;
    if (!it->second.error.empty()) throw Error(Errc::input, it->second.error);
    return it->second.root;
  }
  std::string yaml_url(const std::string& branch, const std::string& arch) const {
    return detail::join_url(mirror_, releases_dir(branch, arch) + "latest-releases.yaml");
  }

  // The `branch` a latest-releases.yaml of `branch_dir` names (the arch's,
  // else another arch's); nullopt when the branch has none.
  std::optional<std::string> named_branch(const std::string& dir, const std::string& arch) {
    std::vector<std::string> order{arch};
    for (const char* a : kArches)
      if (arch != a) order.emplace_back(a);
    for (const std::string& a : order) {
      std::optional<YAML::Node> doc = yaml(dir, a);
      if (!doc) continue;
      const YAML::Node& root = *doc;
      if (root.IsSequence())
        for (const YAML::Node& item : root)
          if (item.IsMap())
            if (std::string b = scalar(item, "branch"); is_branch_name(b)) return b;
      return dir;  // there, without a branch: its own folder name
    }
    return std::nullopt;
  }

  // The version of the alpine-rpi .tar.gz entry of the branch's index for the arch.
  std::optional<std::string> indexed_version(const std::string& branch, const std::string& arch) {
    std::optional<YAML::Node> doc = yaml(branch, arch);
    if (!doc) return std::nullopt;
    const YAML::Node& root = *doc;
    if (!root.IsSequence()) return std::nullopt;
    for (const YAML::Node& item : root) {
      if (!item.IsMap() || scalar(item, "flavor") != "alpine-rpi") continue;
      std::string file = scalar(item, "file"), version, file_arch;
      if (!plain_file_name(file) || !detail::parse_file_name(file, version, file_arch) || file_arch != arch) continue;
      std::string v = scalar(item, "version");
      return plain_file_name(v) ? v : version;
    }
    return std::nullopt;
  }

 private:
  // A latest-releases.yaml as read: there or not, its document, or why it is malformed.
  struct Yaml {
    bool found = false;
    YAML::Node root;
    std::string error;
  };

  std::string mirror_;
  const Options& opts_;
  std::unordered_map<std::string, Yaml> yaml_;
};

// The versions of the arch's alpine-rpi tarballs among a folder's entries, oldest first.
std::vector<std::string> tarball_versions(const std::vector<std::string>& entries, const std::string& arch) {
  std::vector<std::string> out;
  for (const std::string& name : entries) {
    std::string version, file_arch;
    if (plain_file_name(name) && detail::parse_file_name(name, version, file_arch) && file_arch == arch &&
        std::find(out.begin(), out.end(), version) == out.end())
      out.push_back(version);
  }
  std::sort(out.begin(), out.end(),
            [](const std::string& a, const std::string& b) { return compare_versions(a, b) < 0; });
  return out;
}

std::vector<BranchReleases> list_on(const std::string& mirror, const ListQuery& q, const Options& opts,
                                    const std::vector<CacheEntry>& cached) {
  Stopwatch took;
  MirrorReader reader(mirror, opts);
  const std::optional<std::string> latest = reader.named_branch("latest-stable", q.arch);

  std::vector<std::string> branches;
  std::string how = "its listing";
  if (auto root = reader.entries(""))
    for (const std::string& e : *root)
      if (e.size() > 1 && e.back() == '/' && is_branch_name(e.substr(0, e.size() - 1)) &&
          std::find(branches.begin(), branches.end(), e.substr(0, e.size() - 1)) == branches.end())
        branches.push_back(e.substr(0, e.size() - 1));
  if (branches.empty()) {
    // No listing: down from latest-stable's branch while the branches exist.
    if (!latest || *latest == "edge" || *latest == "latest-stable")
      throw Error(Errc::usage, "the mirror " + mirror + " lists no branches (" + detail::join_url(mirror, "") +
                                   " has no listing of vX.Y/ folders) and has no latest-stable/ (" +
                                   reader.yaml_url("latest-stable", q.arch) +
                                   " was not found): is the mirror root right? " + kRootIs);
    how = "walking down from latest-stable (" + *latest + "; the root has no listing)";
    const std::string xy = latest->substr(1);
    const int major = std::stoi(xy.substr(0, xy.find('.')));
    const int newest_minor = std::stoi(xy.substr(xy.find('.') + 1));
    for (int minor = newest_minor; minor >= 0 && newest_minor - minor < kMaxBranchWalk; --minor) {
      const std::string b = "v" + std::to_string(major) + "." + std::to_string(minor);
      if (!reader.named_branch(b, q.arch)) break;  // the first one missing ends the walk
      branches.push_back(b);
    }
    if (reader.named_branch("edge", q.arch)) branches.emplace_back("edge");
  }
  std::sort(branches.begin(), branches.end(), newer_branch);

  std::vector<BranchReleases> out;
  std::size_t stable_with_tarball = 0;
  for (const std::string& b : branches) {
    if (!q.all && b != "edge" && stable_with_tarball >= kListedStableBranches) continue;
    BranchReleases br;
    br.branch = b;
    br.mirror = mirror;
    br.latest_stable = latest && *latest == b;
    if (auto entries = reader.entries(releases_dir(b, q.arch))) {
      br.releases = tarball_versions(*entries, q.arch);
      br.source = "listing";
    }
    if (br.releases.empty()) {
      if (std::optional<std::string> v = reader.indexed_version(b, q.arch)) {
        br.releases.push_back(*v);
        br.source = "index";
      }
    }
    if (br.releases.empty()) {
      br.source.clear();
      if (q.all) out.push_back(std::move(br));  // shown as skipped
      continue;
    }
    if (b != "edge") ++stable_with_tarball;
    for (const std::string& v : br.releases) {
      const std::string file = "alpine-rpi-" + v + "-" + q.arch + ".tar.gz";
      if (std::any_of(cached.begin(), cached.end(), [&](const CacheEntry& e) { return e.file == file; }))
        br.cached.push_back(v);
    }
    out.push_back(std::move(br));
  }
  emit_detail(opts.events, mirror,
              "listed " + std::to_string(out.size()) + " Alpine branches for " + q.arch + " on " + mirror + " by " +
                  how + " in " + took.elapsed());
  return out;
}

std::vector<BranchReleases> list_releases_impl(const ListQuery& query, const Options& opts) {
  if (opts.offline)
    throw Error(Errc::usage,
                "listing releases needs the mirror (--offline was given); `rpi-provision cache list` shows what is "
                "cached");
  if (std::find_if(kArches.begin(), kArches.end(), [&](const char* a) { return query.arch == a; }) == kArches.end())
    throw Error(Errc::usage,
                "arch '" + shown(query.arch) + "' has no Alpine Raspberry Pi tarball (use aarch64, armv7 or armhf)");
  check_options(opts);
  std::vector<std::string> mirrors = query.mirrors.empty() ? std::vector<std::string>{kDefaultMirror} : query.mirrors;
  for (std::string& m : mirrors) m = checked_mirror(m, query.mirrors_from);
  std::vector<CacheEntry> cached;
  if (!opts.cache_dir.empty()) {
    try {
      cached = list_cache(opts.cache_dir);
    } catch (const std::exception&) {
      // Only the marks: the list stands without them.
    }
  }
  std::string errors;
  Errc code = Errc::usage;
  for (std::size_t i = 0; i < mirrors.size(); ++i) {
    try {
      return list_on(mirrors[i], query, opts, cached);
    } catch (const Error& e) {
      if (mirrors.size() == 1) throw;
      errors += std::string(errors.empty() ? "" : "; ") + mirrors[i] + ": " + e.what();
      if (i == 0 || error_rank(e.code()) > error_rank(code)) code = e.code();
      if (i + 1 < mirrors.size())
        emit(opts.events, Event{"warning", mirrors[i], 0, 0,
                                "mirror " + mirrors[i] + " failed: " + e.what() + "; trying the next mirror"});
    }
  }
  throw Error(code, "no mirror could list the Alpine releases (" + query.arch + "): " + errors);
}

}  // namespace

std::vector<BranchReleases> list_releases(const ListQuery& query, const Options& opts) {
  return redacting(opts, [&](const Options& o) {
    std::vector<BranchReleases> out = list_releases_impl(query, o);
    for (BranchReleases& b : out) b.mirror = redact_urls(b.mirror);
    return out;
  });
}

}  // namespace rpi::fetch
