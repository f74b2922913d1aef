#include "transfer.hpp"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <tuple>
#include <vector>

#include "rpi/digest.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"

#ifndef RPI_VERSION
#define RPI_VERSION "0.0.0"
#endif

namespace rpi::fetch::detail {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// ---- RAII for the libcurl handles ----

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) throw Error(Errc::internal, "libcurl initialisation failed");
  });
}

struct CurlDeleter {
  void operator()(CURL* h) const noexcept { curl_easy_cleanup(h); }
};
using CurlPtr = std::unique_ptr<CURL, CurlDeleter>;

// One connection cache for the whole process. The index, the .sha256/.sha512
// companions, the .asc and the tarball come from one mirror: with a fresh
// connection each, every request over https paid a TLS handshake (one or two
// round trips to the mirror) and a TCP slow start. Shared: connections, DNS
// answers and TLS sessions. libcurl only matches a cached connection to a
// request with the same host, port, proxy and TLS settings (--ca-cert included).
//
// A forked child (the tests fork; a program embedding the library may) must not
// touch the parent's connections: both processes would talk on one socket. It
// gets none shared, and libcurl's per-handle connections instead.
class Share {
 public:
  static CURLSH* get() {
    static Share share;  // after curl_global_init (global_init() runs first), destroyed before it
    return ::getpid() == share.owner_ ? share.h_ : nullptr;
  }
  Share(const Share&) = delete;
  Share& operator=(const Share&) = delete;

 private:
  Share() : h_(curl_share_init()) {
    if (!h_) throw Error(Errc::internal, "curl_share_init failed");
    curl_share_setopt(h_, CURLSHOPT_LOCKFUNC, lock);
    curl_share_setopt(h_, CURLSHOPT_UNLOCKFUNC, unlock);
    curl_share_setopt(h_, CURLSHOPT_USERDATA, this);
    curl_share_setopt(h_, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    curl_share_setopt(h_, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(h_, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  }
  ~Share() { curl_share_cleanup(h_); }
  static std::mutex& mutex(void* self, curl_lock_data d) {
    auto& mus = static_cast<Share*>(self)->mu_;
    return mus[static_cast<std::size_t>(d) % mus.size()];
  }
  static void lock(CURL*, curl_lock_data d, curl_lock_access, void* self) { mutex(self, d).lock(); }
  static void unlock(CURL*, curl_lock_data d, void* self) { mutex(self, d).unlock(); }

  std::array<std::mutex, CURL_LOCK_DATA_LAST> mu_;
  const pid_t owner_ = ::getpid();
  CURLSH* h_;
};

class HeaderList {
 public:
  HeaderList() = default;
  HeaderList(const HeaderList&) = delete;
  HeaderList& operator=(const HeaderList&) = delete;
  ~HeaderList() { curl_slist_free_all(list_); }
  void append(const std::string& line) {
    curl_slist* l = curl_slist_append(list_, line.c_str());
    if (!l) throw Error(Errc::internal, "out of memory building HTTP headers");
    list_ = l;
  }
  curl_slist* get() const noexcept { return list_; }

 private:
  curl_slist* list_ = nullptr;
};

// What we learn from the response headers (reset at every status line, so only
// the final response after redirects counts).
struct ResponseHead {
  long status = 0;
  std::string etag, last_modified;
  bool has_content_range = false;
  std::uint64_t range_start = 0;
  std::uint64_t range_total = 0;  // the N of "bytes a-b/N" or "bytes */N" (0: unknown)
  std::string location;           // where a redirect pointed
};

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

std::size_t on_header(char* data, std::size_t size, std::size_t nitems, void* user) {
  auto* head = static_cast<ResponseHead*>(user);
  std::string line(data, size * nitems);
  if (line.rfind("HTTP/", 0) == 0) {
    *head = ResponseHead{};
    std::size_t sp = line.find(' ');
    if (sp != std::string::npos) head->status = std::strtol(line.c_str() + sp + 1, nullptr, 10);
    return size * nitems;
  }
  std::size_t colon = line.find(':');
  if (colon == std::string::npos) return size * nitems;
  std::string name = ascii_lower(line.substr(0, colon));
  std::string value = trim(line.substr(colon + 1));
  if (name == "etag") {
    head->etag = value;
  } else if (name == "last-modified") {
    head->last_modified = value;
  } else if (name == "content-range") {
    // "bytes 100-199/200", or "bytes */200" with a 416
    std::size_t p = value.find_first_of("0123456789");
    std::size_t slash = value.find('/');
    if (p != std::string::npos && (slash == std::string::npos || p < slash)) {
      head->has_content_range = true;
      head->range_start = std::strtoull(value.c_str() + p, nullptr, 10);
    }
    if (slash != std::string::npos && slash + 1 < value.size() &&
        std::isdigit(static_cast<unsigned char>(value[slash + 1])))
      head->range_total = std::strtoull(value.c_str() + slash + 1, nullptr, 10);
  } else if (name == "location") {
    head->location = value;
  }
  return size * nitems;
}

// Options every request shares: TLS verification on (never switchable), our CA
// bundle when given, proxies from the environment (libcurl's default), limits.
// Ends a transfer once the run is cancelled: libcurl calls this as data
// arrives and about once a second while it waits.
int on_xferinfo(void* flag, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return cancelled(static_cast<const std::atomic<bool>*>(flag)) ? 1 : 0;
}

void common_setup(CURL* h, const std::string& url, const Options& opts, char* errbuf) {
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_SHARE, Share::get());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  // Redirects: https only from an https URL (a mirror must not downgrade us to plain http).
  curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, url.rfind("https://", 0) == 0 ? "https" : "http,https");
  curl_easy_setopt(h, CURLOPT_USERAGENT, "rpi-provision/" RPI_VERSION);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!opts.ca_cert.empty()) {
    if (!fs::exists(opts.ca_cert))
      throw Error(Errc::usage, "CA certificate " + opts.ca_cert.string() + " does not exist (--ca-cert)");
    curl_easy_setopt(h, CURLOPT_CAINFO, opts.ca_cert.c_str());
  }
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, opts.connect_timeout_s);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, opts.low_speed_limit);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, opts.low_speed_time_s);
  curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L * 1024L);
  if (opts.cancel) {
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, const_cast<std::atomic<bool>*>(opts.cancel));
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  }
}

bool transient_curl(CURLcode c) {
  // Not CURLE_COULDNT_CONNECT: a refused connection is definitive, so the next
  // mirror is tried at once (a connect *timeout* is CURLE_OPERATION_TIMEDOUT).
  switch (c) {
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
      return true;
    default:
      return false;
  }
}

bool transient_http(long status) {
  return status >= 500 || status == 408 || status == 429;
}

bool tls_failure(CURLcode c) {
  return c == CURLE_PEER_FAILED_VERIFICATION || c == CURLE_SSL_CACERT_BADFILE || c == CURLE_SSL_CERTPROBLEM ||
         c == CURLE_SSL_ISSUER_ERROR || c == CURLE_SSL_PINNEDPUBKEYNOTMATCH;
}

std::string describe_curl(CURLcode c, const char* errbuf) {
  std::string s = errbuf && *errbuf ? errbuf : curl_easy_strerror(c);
  return s;
}

// How a request ended, for details: "HTTP 206", or without an answer curl's
// short text ("no answer: Couldn't connect to server").
std::string outcome_text(CURLcode c, long status) {
  if (!status) return std::string("no answer: ") + curl_easy_strerror(c);
  std::string s = "HTTP " + std::to_string(status);
  if (c != CURLE_OK && c != CURLE_HTTP_RETURNED_ERROR) s += std::string(" (") + curl_easy_strerror(c) + ")";
  return s;
}

// The host of an http(s) URL, without user info, port or IPv6 brackets, in lower case.
std::string url_host(const std::string& url) {
  std::string host = url.substr(url.find("://") + 3);
  host = host.substr(0, host.find_first_of("/?#"));
  host = host.substr(host.rfind('@') == std::string::npos ? 0 : host.rfind('@') + 1);
  if (!host.empty() && host[0] == '[')
    host = host.substr(1, host.find(']') - 1);
  else
    host = host.substr(0, host.find(':'));
  return ascii_lower(host);
}

// The port an http(s) URL connects to: the one it names, else 80 or 443.
std::string url_port(const std::string& url) {
  std::string auth = url.substr(url.find("://") + 3);
  auth = auth.substr(0, auth.find_first_of("/?#"));
  auth = auth.substr(auth.rfind('@') == std::string::npos ? 0 : auth.rfind('@') + 1);
  std::size_t colon = auth.rfind(':');
  if (colon != std::string::npos && (auth.find(']') == std::string::npos || colon > auth.find(']')) &&
      colon + 1 < auth.size())
    return auth.substr(colon + 1);
  return url.rfind("https://", 0) == 0 ? "443" : "80";
}

// " (via proxy P from VAR)" when libcurl takes a proxy from the environment for
// `url` (its rules: http_proxy in lower case only, https_proxy, all_proxy, and
// no_proxy), else "". A failure through a dead proxy must not look like a dead mirror.
std::string proxy_note(const std::string& url) {
  const bool https = url.rfind("https://", 0) == 0;
  std::vector<const char*> names =
      https ? std::vector<const char*>{"https_proxy", "HTTPS_PROXY"} : std::vector<const char*>{"http_proxy"};
  names.push_back("all_proxy");
  names.push_back("ALL_PROXY");
  const char* name = nullptr;
  const char* value = nullptr;
  for (const char* n : names) {
    const char* v = std::getenv(n);
    if (v && *v) {
      name = n;
      value = v;
      break;
    }
  }
  if (!value) return {};
  const std::string host = url_host(url);
  const char* np = std::getenv("no_proxy");
  if (!np || !*np) np = std::getenv("NO_PROXY");
  if (np) {
    std::string list = np;
    for (std::size_t i = 0; i <= list.size();) {
      std::size_t comma = list.find(',', i);
      if (comma == std::string::npos) comma = list.size();
      std::string entry = ascii_lower(trim(list.substr(i, comma - i)));
      if (!entry.empty() && entry[0] == '.') entry.erase(0, 1);
      if (entry == "*") return {};
      if (!entry.empty() && (host == entry || (host.size() > entry.size() &&
                                               host.compare(host.size() - entry.size(), entry.size(), entry) == 0 &&
                                               host[host.size() - entry.size() - 1] == '.')))
        return {};
      i = comma + 1;
    }
  }
  return std::string(" (via proxy ") + value + " from " + name + ")";
}

// A failure of one attempt: permanent ones are thrown at once, transient ones retried.
struct AttemptError {
  bool transient = false;
  Errc code = Errc::network;
  std::string message;
};

// "connection refused" for ECONNREFUSED: the system's words, starting in lower case.
std::string errno_text(long err) {
  std::string s = std::error_code(static_cast<int>(err), std::system_category()).message();
  if (!s.empty()) s[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[0])));
  return s;
}

// What went wrong with a transfer, for people where that is cheap ("cannot
// connect to 127.0.0.1 port 1 (connection refused)"), else curl's own text.
// Through a proxy, curl's text stays: the host it could not reach is the proxy.
std::string describe_failure(const std::string& url, CURL* h, CURLcode c, const char* errbuf, const Options& opts) {
  long os_errno = 0;
  curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
  const std::string curl_text = describe_curl(c, errbuf);
  const bool proxied = !proxy_note(url).empty();
  const std::string where = url_host(url) + " port " + url_port(url);
  switch (c) {
    case CURLE_COULDNT_CONNECT:
      if (proxied) return curl_text;
      return "cannot connect to " + where + " (" +
             (os_errno == ECONNREFUSED  ? std::string("connection refused")
              : os_errno == ENETUNREACH ? std::string("network unreachable: is this computer online?")
              : os_errno                ? errno_text(os_errno)
                                        : curl_text) +
             ")";
    case CURLE_COULDNT_RESOLVE_HOST:
      if (proxied) return curl_text;
      return "cannot find the host " + url_host(url) +
             " (no DNS answer for it: is the name right, and is this computer online?)";
    case CURLE_OPERATION_TIMEDOUT: {
      curl_off_t connected = 0;
      curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &connected);
      if (curl_text.rfind("Operation too slow", 0) == 0)
        return "the transfer was too slow (under " + std::to_string(opts.low_speed_limit) + " bytes/s for " +
               std::to_string(opts.low_speed_time_s) + " s)";
      if (connected == 0 && !proxied)
        return "no connection to " + where + " within " + std::to_string(opts.connect_timeout_s) + " s (timed out)";
      return curl_text;
    }
    case CURLE_PARTIAL_FILE:
      return "the connection closed before the whole file had arrived";
    case CURLE_GOT_NOTHING:
      return "the server closed the connection without answering";
    case CURLE_RECV_ERROR:
      return os_errno ? "the connection broke (" + errno_text(os_errno) + ")" : curl_text;
    default:
      return curl_text;
  }
}

AttemptError classify(const std::string& url, CURL* h, CURLcode c, long status, const char* errbuf, const Options& opts,
                      const std::string& location = {}) {
  if (c == CURLE_UNSUPPORTED_PROTOCOL && !location.empty()) {
    const bool tls = url.rfind("https://", 0) == 0;
    return {false, Errc::network,
            url + " redirected to " + location +
                (tls ? ": refusing to follow a redirect from https to another protocol (it would drop TLS); use "
                       "an https mirror that does not redirect to plain http"
                     : ": refusing to follow a redirect to a protocol other than http or https")};
  }
  if (c == CURLE_OK || c == CURLE_WRITE_ERROR || (c == CURLE_HTTP_RETURNED_ERROR)) {
    if (status >= 400) {
      std::string reason = status == 404   ? " (not found)"
                           : status == 403 ? " (forbidden)"
                           : status == 410 ? " (gone)"
                           : status == 429 ? " (too many requests)"
                           : status == 500 ? " (internal server error)"
                           : status == 502 ? " (bad gateway)"
                           : status == 503 ? " (service unavailable)"
                           : status == 504 ? " (gateway timeout)"
                                           : "";
      return {transient_http(status), Errc::network, url + ": HTTP " + std::to_string(status) + reason};
    }
  }
  if (c == CURLE_SSL_CACERT_BADFILE && !opts.ca_cert.empty())
    return {false, Errc::usage,
            url + ": --ca-cert " + opts.ca_cert.string() + " is not a PEM CA certificate (" + describe_curl(c, errbuf) +
                ")"};
  if (tls_failure(c)) {
    return {false, Errc::network,
            url + ": TLS verification failed (" + describe_curl(c, errbuf) +
                "); for a private mirror pass its CA certificate with --ca-cert FILE"};
  }
  return {transient_curl(c), Errc::network, url + ": " + describe_failure(url, h, c, errbuf, opts) + proxy_note(url)};
}

// "2 s", "0.5 s", "10 ms": a wait in the unit a person reads best.
std::string wait_text(std::chrono::milliseconds d) {
  const auto ms = d.count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
  if (ms >= 100) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(ms) / 1000.0);
    return buf;
  }
  return std::to_string(ms) + " ms";
}

// The final failure of a transient error: how many attempts it had.
std::string gave_up(const std::string& message, int attempts) {
  return attempts > 1 ? message + "; gave up after " + std::to_string(attempts) + " attempts" : message;
}

// Says (a note: on stderr, `note` in --json) that `why` is retried, then waits.
void backoff(const Options& opts, int attempt, const std::string& subject, const std::string& why) {
  auto delay = opts.retry_delay * (1 << std::min(attempt, 6));
  emit(opts.events, Event{"note", subject, 0, 0,
                          "retrying in " + wait_text(delay) + " (attempt " + std::to_string(attempt + 2) + " of " +
                              std::to_string(opts.retries + 1) + "): " + why});
  // In short steps: a cancel must not wait for the longest backoff.
  const auto until = std::chrono::steady_clock::now() + delay;
  for (auto now = std::chrono::steady_clock::now(); now < until; now = std::chrono::steady_clock::now()) {
    if (cancelled(opts.cancel)) throw Cancelled{};
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(until - now, std::chrono::milliseconds(50)));
  }
  if (cancelled(opts.cancel)) throw Cancelled{};
}

// Reserves the part file's blocks up to `size` without changing its length
// (the length is what a resume starts from). A disk that cannot hold the
// tarball then fails before the first byte is fetched, not minutes into the
// download. File systems without fallocate (NFS, some FUSE) are simply not
// reserved on. A failure removes an empty part file: nothing is worth resuming.
void reserve_space(int fd, const fs::path& part, std::uint64_t size, const std::string& subject) {
  if (size == 0 || ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(size)) == 0) return;
  const int err = errno;
  if (err != ENOSPC && err != EDQUOT) return;
  const fs::path cache = part.parent_path().parent_path();  // <cache>/partial/<file>.part
  std::string room;
  struct statvfs vfs {};
  if (::statvfs(part.parent_path().c_str(), &vfs) == 0)
    room = ", " + format_size(static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize) + " free";
  std::error_code ec;
  if (fs::file_size(part, ec) == 0 && !ec) fs::remove(part, ec);
  throw Error(Errc::io, "not enough space in " + cache.string() + " for " + subject + " (" + format_size(size) +
                            (err == EDQUOT ? ", over the disk quota" : "") + room +
                            "): free some space, or use --cache-dir on a larger file system");
}

std::uint64_t file_size(int fd, const std::string& what) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno("cannot stat " + what);
  return static_cast<std::uint64_t>(st.st_size);
}

// SHA-256 and SHA-512 of the part file as it grows, each on its own worker
// thread that reads the freshly written bytes back (from the page cache), so
// hashing overlaps with receiving (design §5: within 10 % of `curl -o`).
// The writer reports how far the file is valid; reset() (called BEFORE the file
// is truncated) makes both workers start over.
class Hashes {
 public:
  Hashes(int fd, std::string what) : fd_(fd), what_(std::move(what)) {
    for (int i = 0; i < 2; ++i) workers_[i] = std::thread([this, i] { work(i); });
  }
  Hashes(const Hashes&) = delete;
  Hashes& operator=(const Hashes&) = delete;
  ~Hashes() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  std::uint64_t upto = 0;  // bytes of the file that are valid (written by us)

  void reset() {
    std::lock_guard lock(mu_);
    ++gen_;
    written_ = 0;
    woken_at_ = 0;
    upto = 0;
    cv_.notify_all();
  }
  // The next `n` bytes after `upto` are in the file.
  void update(std::size_t n) { set_written(upto + n); }
  // The file's first `len` bytes are valid (e.g. left by an earlier run).
  void catch_up(std::uint64_t len) {
    if (upto > len) reset();
    set_written(len, true);
  }
  // Waits for both digests to cover [0, upto); returns {sha256 hex, sha512 hex}.
  std::pair<std::string, std::string> finish() {
    set_written(upto, true);
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return failed_ || (done(0) && done(1)); });
    if (failed_) throw Error(Errc::io, "cannot read back " + what_ + " to compute its digests");
    return {digests_[0].finish_hex(), digests_[1].finish_hex()};
  }

 private:
  // Wakes the workers only every kWakeBytes of new data (and always when the
  // file shrank or grew by catch_up/finish): at loopback speed a wake-up per
  // curl callback costs more CPU than the pread that follows it.
  void set_written(std::uint64_t w, bool force = false) {
    std::lock_guard lock(mu_);
    written_ = w;
    upto = w;
    if (force || w < woken_at_ || w - woken_at_ >= kWakeBytes) {
      woken_at_ = w;
      cv_.notify_all();
    }
  }
  bool done(int i) const { return !busy_[i] && gen_seen_[i] == gen_ && pos_[i] == written_; }

  void work(int i) {
    const Digest::Algo algo = i == 0 ? Digest::Algo::sha256 : Digest::Algo::sha512;
    // Small enough to still be in the core's L2 cache when the digest reads it.
    std::vector<char> buf(256 << 10);
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || gen_ != gen_seen_[i] || (!failed_ && pos_[i] < written_); });
      if (gen_ != gen_seen_[i]) {
        digests_[i] = Digest(algo);
        pos_[i] = 0;
        gen_seen_[i] = gen_;
        cv_.notify_all();
        continue;
      }
      if (failed_ || pos_[i] >= written_) {
        if (stop_) return;
        continue;
      }
      const std::uint64_t pos = pos_[i], gen = gen_;
      const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), written_ - pos));
      busy_[i] = true;
      lock.unlock();
      std::size_t got = 0;
      bool ok = true;
      try {
        got = pread_full(fd_, buf.data(), want, pos, "cannot read " + what_);
        digests_[i].update(buf.data(), got);
      } catch (...) {
        ok = false;  // never let it escape the thread; finish() reports it
      }
      lock.lock();
      busy_[i] = false;
      if (gen == gen_) {  // otherwise stale: the digest is re-initialised above
        if (!ok || got != want)
          failed_ = true;
        else
          pos_[i] = pos + got;
      }
      cv_.notify_all();
    }
  }

  const int fd_;
  const std::string what_;
  std::mutex mu_;
  std::condition_variable cv_;
  static constexpr std::uint64_t kWakeBytes = 1 << 20;
  std::uint64_t written_ = 0, gen_ = 0, woken_at_ = 0;
  std::uint64_t pos_[2] = {0, 0}, gen_seen_[2] = {0, 0};
  bool busy_[2] = {false, false};
  bool failed_ = false, stop_ = false;
  Digest digests_[2] = {Digest(Digest::Algo::sha256), Digest(Digest::Algo::sha512)};
  std::thread workers_[2];  // last: started after everything they use exists
};

// Emits "download" events at most every 150 ms (and always the last one).
class Progress {
 public:
  Progress(const Options& opts, std::string subject, std::uint64_t total)
      : events_(opts.events), subject_(std::move(subject)), total_(total) {}
  void update(std::uint64_t done, bool force = false) {
    if (!events_) return;
    auto now = Clock::now();
    if (!force && now - last_ < std::chrono::milliseconds(150)) return;
    last_ = now;
    emit(events_, Event{"download", subject_, done, total_, {}});
  }
  void set_total(std::uint64_t t) {
    if (!total_) total_ = t;
  }

 private:
  const EventSink& events_;
  std::string subject_;
  std::uint64_t total_;
  Clock::time_point last_{};
};

void save_validator(const fs::path& part, const std::string& url, const ResponseHead& head);

// State for one HTTP attempt's write callback.
struct Sink {
  const fs::path* part = nullptr;
  const std::string* url = nullptr;
  int fd = -1;
  std::string what;
  std::uint64_t offset = 0;  // where this attempt asked to start
  std::uint64_t pos = 0;     // next byte to write
  std::uint64_t expected = 0;
  std::uint64_t limit = 0;  // never more bytes than this: the expected size, else the cap
  Hashes* hashes = nullptr;
  Progress* progress = nullptr;
  ResponseHead* head = nullptr;
  CURL* handle = nullptr;
  bool started = false;
  bool restarted = false;  // server sent the whole file instead of the range
  bool overflow = false;   // more bytes than the release's size
  bool bad_range = false;  // a 206 starting somewhere else
  std::string error_body;  // first bytes of an error response (not written)
  int io_errno = 0;
  std::exception_ptr exception;
};

std::size_t on_body_impl(char* data, std::size_t n, Sink* s);

// libcurl is C: no exception may cross it. Keep it and rethrow after perform.
std::size_t on_body(char* data, std::size_t size, std::size_t nmemb, void* user) {
  auto* s = static_cast<Sink*>(user);
  try {
    return on_body_impl(data, size * nmemb, s);
  } catch (...) {
    s->exception = std::current_exception();
    return 0;
  }
}

std::size_t on_body_impl(char* data, std::size_t n, Sink* s) {
  long status = s->head->status;
  if (status == 0) curl_easy_getinfo(s->handle, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200 || status >= 300) {
    if (s->error_body.size() < 512) s->error_body.append(data, std::min<std::size_t>(n, 512));
    return n;
  }
  if (!s->started) {
    s->started = true;
    curl_off_t length = -1;
    if (!s->expected && curl_easy_getinfo(s->handle, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length) == CURLE_OK &&
        length > 0)
      s->progress->set_total((status == 206 ? s->offset : 0) + static_cast<std::uint64_t>(length));
    if (s->offset > 0 && status == 200) {
      // Range ignored, or If-Range saw a changed file: start over from byte 0.
      s->hashes->reset();
      if (::ftruncate(s->fd, 0) != 0) {
        s->io_errno = errno;
        return 0;
      }
      s->pos = 0;
      s->restarted = true;
    } else if (status == 206 && (!s->head->has_content_range || s->head->range_start != s->offset)) {
      s->bad_range = true;
      return 0;
    }
    // The bytes about to land in the part file belong to this response: record
    // its validator now, so that a run killed mid-download resumes with If-Range.
    if (status == 200) save_validator(*s->part, *s->url, *s->head);
  }
  if (s->pos + n > s->limit) {
    s->overflow = true;
    return 0;
  }
  pwrite_all(s->fd, data, n, s->pos, "cannot write " + s->what);
  s->hashes->update(n);
  s->pos += n;
  s->progress->update(s->pos);
  return n;
}

std::size_t on_text(char* data, std::size_t size, std::size_t nmemb, void* user) {
  auto* out = static_cast<std::pair<std::string*, std::size_t>*>(user);
  std::size_t n = size * nmemb;
  if (out->first->size() + n > out->second) return 0;
  out->first->append(data, n);
  return n;
}

std::string read_small(const fs::path& p) {
  Fd fd = open_or_throw(p.string(), O_RDONLY);
  std::string s;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("cannot read " + p.string());
    if (n == 0) break;
    s.append(buf, static_cast<std::size_t>(n));
  }
  return s;
}

// The validator saved next to a part file: the URL and the ETag or
// Last-Modified of the response that produced its bytes.
struct Validator {
  std::string url, value;
};
fs::path validator_path(const fs::path& part) {
  fs::path p = part;
  p += ".validator";
  return p;
}
Validator load_validator(const fs::path& part) {
  Validator v;
  std::error_code ec;
  if (!fs::exists(validator_path(part), ec)) return v;
  std::string s = read_small(validator_path(part));
  std::size_t nl = s.find('\n');
  if (nl == std::string::npos) return v;
  v.url = s.substr(0, nl);
  v.value = trim(s.substr(nl + 1));
  return v;
}
void save_validator(const fs::path& part, const std::string& url, const ResponseHead& head) {
  std::string value = !head.etag.empty() && head.etag.rfind("W/", 0) != 0 ? head.etag : head.last_modified;
  std::error_code ec;
  if (value.empty()) {
    fs::remove(validator_path(part), ec);
    return;
  }
  // Not critical: without it a resume relies on the final digest check alone.
  try {
    Fd fd = open_or_throw(validator_path(part).string(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    std::string s = url + "\n" + value + "\n";
    write_all(fd.get(), s.data(), s.size(), "cannot write " + validator_path(part).string());
  } catch (const Error&) {
    fs::remove(validator_path(part), ec);
  }
}

Downloaded finish(Hashes& h, std::uint64_t size, bool resumed) {
  Downloaded d;
  d.size = size;
  d.resumed = resumed;
  std::tie(d.sha256, d.sha512) = h.finish();
  return d;
}

// file:// and directory mirrors: a straight copy through the same digests.
Downloaded copy_local(const fs::path& src, const fs::path& part, std::uint64_t expected, const Options& opts,
                      const std::string& subject) {
  Fd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) {
    if (errno == ENOENT) throw Error(Errc::network, src.string() + ": no such file");
    throw_errno("cannot open " + src.string());
  }
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) throw_errno("cannot stat " + src.string());
  // A device or FIFO (/dev/zero) would never end: only regular files are tarballs.
  if (!S_ISREG(st.st_mode)) throw Error(Errc::input, src.string() + " is not a regular file");
  std::uint64_t total = static_cast<std::uint64_t>(st.st_size);
  if (!expected && total > opts.max_unknown_size)
    throw Error(Errc::verify, src.string() + " has " + format_size(total) + ", more than the " +
                                  format_size(opts.max_unknown_size) + " a boot tarball may have");
  if (expected && total != expected)
    throw Error(Errc::verify, src.string() + ": size is " + std::to_string(total) + " bytes, the release index says " +
                                  std::to_string(expected));
  Stopwatch took;
  Fd out = open_or_throw(part.string(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  reserve_space(out.get(), part, total, subject);
  Hashes h(out.get(), part.string());
  Progress progress(opts, subject, total);
  std::vector<char> buf(1 << 20);
  for (;;) {
    if (cancelled(opts.cancel)) throw Cancelled{};
    ssize_t n = ::read(in.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("cannot read " + src.string());
    if (n == 0) break;
    if (h.upto + static_cast<std::uint64_t>(n) > total)  // grew while we copied it
      throw Error(Errc::verify, src.string() + " changed while it was being copied");
    write_all(out.get(), buf.data(), static_cast<std::size_t>(n), "cannot write " + part.string());
    h.update(static_cast<std::size_t>(n));
    progress.update(h.upto);
  }
  progress.update(h.upto, true);
  Downloaded d = finish(h, h.upto, false);
  emit_detail(opts.events, subject,
              "copied " + src.string() + ": " + format_size(d.size) + " (digests computed) in " + took.elapsed());
  return d;
}

}  // namespace

bool is_remote(const std::string& url) {
  return url.rfind("http://", 0) == 0 || url.rfind("https://", 0) == 0;
}

fs::path local_path(const std::string& url) {
  if (url.rfind("file://localhost/", 0) == 0) return url.substr(16);
  if (url.rfind("file://", 0) == 0) return url.substr(7);
  return url;
}

std::string join_url(const std::string& root, const std::string& rel) {
  std::string r = root;
  while (!r.empty() && r.back() == '/') r.pop_back();
  std::size_t i = 0;
  while (i < rel.size() && rel[i] == '/') ++i;
  return r + "/" + rel.substr(i);
}

Text get_text(const std::string& url, const Options& opts, std::size_t max_bytes) {
  Text t;
  if (!is_remote(url)) {
    fs::path p = local_path(url);
    std::error_code ec;
    if (!fs::is_regular_file(p, ec)) return t;
    t.body = read_small(p);
    if (t.body.size() > max_bytes) throw Error(Errc::input, p.string() + " is larger than expected");
    t.found = true;
    return t;
  }
  if (opts.offline) throw Error(Errc::internal, "network access attempted in offline mode: " + url);
  global_init();
  for (int attempt = 0;; ++attempt) {
    CurlPtr h(curl_easy_init());
    if (!h) throw Error(Errc::internal, "curl_easy_init failed");
    char errbuf[CURL_ERROR_SIZE] = {};
    common_setup(h.get(), url, opts, errbuf);
    std::string body;
    std::pair<std::string*, std::size_t> out{&body, max_bytes};
    curl_easy_setopt(h.get(), CURLOPT_WRITEFUNCTION, on_text);
    curl_easy_setopt(h.get(), CURLOPT_WRITEDATA, &out);
    ResponseHead head;
    curl_easy_setopt(h.get(), CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h.get(), CURLOPT_HEADERDATA, &head);
    Stopwatch took;
    CURLcode c = curl_easy_perform(h.get());
    if (cancelled(opts.cancel)) throw Cancelled{};
    long status = 0;
    curl_easy_getinfo(h.get(), CURLINFO_RESPONSE_CODE, &status);
    {
      const std::string shown = fetch::redact_urls(url);
      emit_detail(
          opts.events, shown,
          "GET " + shown + ": " + outcome_text(c, status) + ", " + format_size(body.size()) + " in " + took.elapsed());
    }
    if (c == CURLE_OK && status >= 200 && status < 300) {
      t.found = true;
      t.body = std::move(body);
      return t;
    }
    if (c == CURLE_WRITE_ERROR && status >= 200 && status < 300)
      throw Error(Errc::input, url + ": larger than " + format_size(max_bytes) +
                                   ", more than a release index, digest or package index holds");
    if (c == CURLE_OK && (status == 404 || status == 410)) return t;
    AttemptError e = classify(url, h.get(), c, status, errbuf, opts, head.location);
    if (!e.transient) throw Error(e.code, e.message);
    if (attempt >= opts.retries) throw Error(e.code, gave_up(e.message, attempt + 1));
    backoff(opts, attempt, url, e.message);
  }
}

Downloaded download(const std::string& url, const fs::path& part, std::uint64_t expected, const Options& opts,
                    const std::string& subject) {
  if (!is_remote(url)) return copy_local(local_path(url), part, expected, opts, subject);
  if (opts.offline) throw Error(Errc::internal, "network access attempted in offline mode: " + url);
  global_init();

  const std::string what = part.string();
  Fd fd = open_or_throw(what, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  reserve_space(fd.get(), part, expected, subject);
  Hashes hashes(fd.get(), what);
  // Truncation always goes through here: the hashers must let go first.
  auto truncate_to_zero = [&] {
    hashes.reset();
    if (::ftruncate(fd.get(), 0) != 0) throw_errno("cannot truncate " + what);
  };
  Progress progress(opts, subject, expected);
  bool resumed = false;
  int attempt = 0;
  int stalls = 0;              // low-speed timeouts, progress or not
  int tries = 0;               // requests made, progress or not
  std::uint64_t furthest = 0;  // the longest the part file has been
  for (;;) {
    std::uint64_t offset = file_size(fd.get(), what);
    if (expected && offset > expected) {
      // Longer than the release: not ours to trust. Start over.
      truncate_to_zero();
      offset = 0;
    }
    hashes.catch_up(offset);
    furthest = std::max(furthest, offset);
    if (expected && offset == expected) break;  // complete; the caller checks the digests
    if (offset > 0) {
      resumed = true;
      emit(opts.events, Event{"note", subject, offset, expected, "resuming " + subject + " at " + format_size(offset)});
    }
    Validator validator = offset > 0 ? load_validator(part) : Validator{};

    CurlPtr h(curl_easy_init());
    if (!h) throw Error(Errc::internal, "curl_easy_init failed");
    char errbuf[CURL_ERROR_SIZE] = {};
    common_setup(h.get(), url, opts, errbuf);
    HeaderList headers;
    if (offset > 0) {
      std::string range = std::to_string(offset) + "-";
      curl_easy_setopt(h.get(), CURLOPT_RANGE, range.c_str());
      if (validator.url == url && !validator.value.empty()) headers.append("If-Range: " + validator.value);
    }
    curl_easy_setopt(h.get(), CURLOPT_HTTPHEADER, headers.get());
    ResponseHead head;
    curl_easy_setopt(h.get(), CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h.get(), CURLOPT_HEADERDATA, &head);
    Sink sink;
    sink.part = &part;
    sink.url = &url;
    sink.fd = fd.get();
    sink.what = what;
    sink.offset = offset;
    sink.pos = offset;
    sink.expected = expected;
    sink.limit = expected ? expected : opts.max_unknown_size;
    sink.hashes = &hashes;
    sink.progress = &progress;
    sink.head = &head;
    sink.handle = h.get();
    curl_easy_setopt(h.get(), CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h.get(), CURLOPT_WRITEDATA, &sink);
    progress.update(offset, true);

    const std::string shown = fetch::redact_urls(url);
    emit_detail(opts.events, subject,
                "GET " + shown +
                    (offset > 0 ? " (Range: bytes=" + std::to_string(offset) + "-" +
                                      (validator.url == url && !validator.value.empty() ? ", If-Range" : "") + ")"
                                : std::string()));
    Stopwatch took;
    CURLcode c = curl_easy_perform(h.get());
    ++tries;
    long status = head.status;
    if (!status) curl_easy_getinfo(h.get(), CURLINFO_RESPONSE_CODE, &status);
    emit_detail(opts.events, subject,
                shown + ": " + outcome_text(c, status) + ", " +
                    format_size(sink.pos - std::min(sink.pos, sink.restarted ? 0 : sink.offset)) + " received in " +
                    took.elapsed());
    if (sink.restarted) {
      emit(opts.events, Event{"note", subject, 0, expected,
                              url + " did not continue the partial download; downloading it again from the start"});
    }
    if (sink.exception) std::rethrow_exception(sink.exception);
    if (sink.io_errno) throw_errno("cannot write " + what, sink.io_errno);
    if (sink.overflow && expected)
      throw Error(Errc::verify, url + ": the server sent more than the expected " + std::to_string(expected) +
                                    " bytes; the download was discarded");
    if (sink.overflow)
      throw Error(Errc::verify, url + ": the server sent more than " + format_size(opts.max_unknown_size) +
                                    ", more than a boot tarball may have; the download was discarded");
    if (::ftruncate(fd.get(), static_cast<off_t>(sink.pos)) != 0) throw_errno("cannot truncate " + what);
    if (cancelled(opts.cancel)) throw Cancelled{};  // the part file holds what came: kept for resuming
    // Only new ground counts as progress: a server whose whole file is short
    // would otherwise be fetched again and again (short 200, then 416, ...).
    bool progressed = sink.pos > furthest;
    furthest = std::max(furthest, sink.pos);
    auto wrong_size = [&](std::uint64_t served) {
      return Error(Errc::verify, url + ": the server's file has " + std::to_string(served) +
                                     " bytes but the release index says " + std::to_string(expected) +
                                     "; the download was discarded");
    };

    AttemptError err;
    if (sink.bad_range) {
      // A 206 for some other range: drop what we have and ask for all of it.
      truncate_to_zero();
      err = {true, Errc::network, url + ": the server answered a different byte range than requested"};
    } else if (status == 416 && offset > 0) {
      // "Range not satisfiable": the part may already be the whole file; without a
      // known size we let the digest decide, otherwise start again.
      if (!expected) break;
      if (head.range_total == offset) throw wrong_size(offset);  // "bytes */N": we have all N of them
      truncate_to_zero();
      err = {true, Errc::network, url + ": HTTP 416 for a partial download"};
    } else if (c == CURLE_OK && status >= 200 && status < 300) {
      if (!expected || sink.pos == expected) break;
      // A complete 200 is the server's whole file; a 206 says its total size.
      if (status == 200) throw wrong_size(sink.pos);
      if (head.range_total && head.range_total != expected) throw wrong_size(head.range_total);
      // A short body (e.g. a wrong Content-Length): go on from where it stopped.
      err = {true, Errc::network,
             url + ": the body ended after " + std::to_string(sink.pos) + " of " + std::to_string(expected) + " bytes"};
    } else {
      err = classify(url, h.get(), c, status, errbuf, opts, head.location);
    }
    if (progressed) attempt = 0;
    if (c == CURLE_OPERATION_TIMEDOUT && ++stalls >= std::max(1, opts.max_stalls) && err.transient) {
      // A server that trickles a few bytes before every timeout makes "progress"
      // forever: give it up so the next mirror gets its turn.
      err.transient = false;
      err.message = url + ": the transfer stalled " + std::to_string(stalls) + " times (below " +
                    std::to_string(opts.low_speed_limit) + " bytes/s for " + std::to_string(opts.low_speed_time_s) +
                    " s each; " + format_size(sink.pos) + (expected ? " of " + format_size(expected) : "") +
                    " received); giving up on this server — try another --mirror";
    }
    if (!err.transient || attempt >= opts.retries) {
      std::error_code ec;
      if (file_size(fd.get(), what) == 0) fs::remove(part, ec);  // nothing worth resuming
      // What was kept for resuming is said by fetch_release, which knows the other mirrors.
      throw Error(err.code, err.transient ? gave_up(err.message, tries) : err.message);
    }
    backoff(opts, attempt, subject, err.message);
    ++attempt;
  }
  std::uint64_t size = file_size(fd.get(), what);
  hashes.catch_up(size);
  progress.set_total(size);
  progress.update(size, true);
  // No fsync: a cache entry torn by a crash is caught by the size + SHA-256
  // check every reuse makes, so durability costs nothing in trust.
  return finish(hashes, size, resumed);
}

}  // namespace rpi::fetch::detail
