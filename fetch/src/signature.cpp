// Detached OpenPGP signature check with gpgme, in a throw-away GNUPGHOME so the
// user's own keyring and trust settings never take part: the only keys known
// are those in --keyring, and only the pinned fingerprint is accepted.
#include <fcntl.h>
#include <gpgme.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "fetch/fetch.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"

namespace rpi::fetch {

namespace fs = std::filesystem;

namespace {

struct CtxDeleter {
  void operator()(gpgme_ctx_t c) const noexcept { gpgme_release(c); }
};
struct DataDeleter {
  void operator()(gpgme_data_t d) const noexcept { gpgme_data_release(d); }
};
struct KeyDeleter {
  void operator()(gpgme_key_t k) const noexcept { gpgme_key_unref(k); }
};
using Ctx = std::unique_ptr<std::remove_pointer_t<gpgme_ctx_t>, CtxDeleter>;
using Data = std::unique_ptr<std::remove_pointer_t<gpgme_data_t>, DataDeleter>;
using Key = std::unique_ptr<std::remove_pointer_t<gpgme_key_t>, KeyDeleter>;

// A private GNUPGHOME, removed with everything in it.
class TempHome {
 public:
  TempHome() {
    std::string pattern = (fs::temp_directory_path() / "rpi-provision-gpg-XXXXXX").string();
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data()))
      throw_errno("cannot create a temporary GnuPG home in " + fs::temp_directory_path().string());
    path_ = buf.data();
    // Importing public keys and checking a signature need no gpg-agent. One
    // started for this home would outlive the check, sometimes with the home
    // itself (its socket recreated while the folder was removed): a daemon and
    // a folder left in /tmp per run.
    const fs::path conf = path_ / "gpg.conf";
    constexpr std::string_view kConf = "no-autostart\n";
    int err = 0;
    {
      Fd fd(::open(conf.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
      if (fd.get() < 0 || ::write(fd.get(), kConf.data(), kConf.size()) != static_cast<ssize_t>(kConf.size()))
        err = errno ? errno : EIO;
    }
    if (err) {
      std::error_code ec;
      fs::remove_all(path_, ec);
      errno = err;
      throw_errno("cannot write " + conf.string());
    }
  }
  TempHome(const TempHome&) = delete;
  TempHome& operator=(const TempHome&) = delete;
  // gpgme may hand back a result while its gpg still runs: after an unreadable
  // signature, gpg goes on to write its trustdb and lock files here. One made
  // between remove_all's listing and its rmdir kept the folder (empty or with
  // the late file) in $TMPDIR. So it is removed again until it is gone (gpg
  // makes no home but its default one, so gone stays gone), for 2 s at most.
  ~TempHome() {
    for (int tries = 0; tries < 400; ++tries) {
      std::error_code ec;
      fs::remove_all(path_, ec);
      if (!fs::exists(path_, ec) && !ec) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string gpg_text(gpgme_error_t err) {
  return gpgme_strerror(err);
}

void check(gpgme_error_t err, Errc code, const std::string& what) {
  if (gpgme_err_code(err) != GPG_ERR_NO_ERROR) throw Error(code, what + ": " + gpg_text(err));
}

std::string upper_hex(std::string s) {
  std::string out;
  for (char c : s)
    if (c != ' ') out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error(Errc::input, "cannot read the keyring " + p.string() + " (--keyring)");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

void verify_detached_signature(const fs::path& data_file, const std::string& signature, const fs::path& keyring,
                               const std::string& fingerprint, const std::string& subject_in) {
  static std::once_flag once;
  std::call_once(once, [] { gpgme_check_version(nullptr); });
  check(gpgme_engine_check_version(GPGME_PROTOCOL_OpenPGP), Errc::internal, "GnuPG (gpg) is not usable");

  const std::string want = upper_hex(fingerprint.empty() ? kAlpineSigningKey : fingerprint);
  if (want.size() != 40 || want.find_first_not_of("0123456789ABCDEF") != std::string::npos)
    throw Error(Errc::usage, "signing key fingerprint '" + fingerprint + "' is not 40 hex digits");

  TempHome home;
  gpgme_ctx_t raw = nullptr;
  check(gpgme_new(&raw), Errc::internal, "gpgme_new");
  Ctx ctx(raw);
  check(gpgme_ctx_set_engine_info(ctx.get(), GPGME_PROTOCOL_OpenPGP, nullptr, home.path().c_str()), Errc::internal,
        "cannot point GnuPG at a temporary home");
  gpgme_set_armor(ctx.get(), 1);

  // Import the keyring.
  std::string keys = slurp(keyring);
  gpgme_data_t kd = nullptr;
  check(gpgme_data_new_from_mem(&kd, keys.data(), keys.size(), 1), Errc::internal, "gpgme_data_new_from_mem");
  Data key_data(kd);
  check(gpgme_op_import(ctx.get(), key_data.get()), Errc::input, "cannot import the keyring " + keyring.string());
  gpgme_import_result_t imp = gpgme_op_import_result(ctx.get());
  if (!imp || imp->imported + imp->unchanged == 0)
    throw Error(Errc::input, "the keyring " + keyring.string() + " holds no OpenPGP public key (--keyring)");

  // Verify.
  Fd fd = open_or_throw(data_file.string(), O_RDONLY | O_CLOEXEC);
  gpgme_data_t dd = nullptr, sd = nullptr;
  check(gpgme_data_new_from_fd(&dd, fd.get()), Errc::internal, "gpgme_data_new_from_fd");
  Data file_data(dd);
  check(gpgme_data_new_from_mem(&sd, signature.data(), signature.size(), 1), Errc::internal, "gpgme_data_new_from_mem");
  Data sig_data(sd);
  gpgme_error_t verr = gpgme_op_verify(ctx.get(), sig_data.get(), file_data.get(), nullptr);
  const std::string subject = subject_in.empty() ? data_file.filename().string() : subject_in;
  if (gpgme_err_code(verr) != GPG_ERR_NO_ERROR)
    throw Error(Errc::verify, "the signature of " + subject + " is unreadable: " + gpg_text(verr));
  gpgme_verify_result_t res = gpgme_op_verify_result(ctx.get());
  if (!res || !res->signatures) throw Error(Errc::verify, "no signature found in the .asc for " + subject);

  std::string problems;
  for (gpgme_signature_t s = res->signatures; s; s = s->next) {
    std::string fpr = upper_hex(s->fpr ? s->fpr : "");
    if (gpgme_err_code(s->status) != GPG_ERR_NO_ERROR) {
      problems += "; signature by " + (fpr.empty() ? std::string("an unknown key") : fpr) + ": " + gpg_text(s->status);
      continue;
    }
    if (s->summary & (GPGME_SIGSUM_KEY_REVOKED | GPGME_SIGSUM_KEY_EXPIRED | GPGME_SIGSUM_SIG_EXPIRED)) {
      problems += "; signature by " + fpr + ": key revoked or expired";
      continue;
    }
    // The signature may come from a subkey; what is pinned is the primary key.
    std::string primary = fpr;
    gpgme_key_t k = nullptr;
    if (gpgme_err_code(gpgme_get_key(ctx.get(), s->fpr, &k, 0)) == GPG_ERR_NO_ERROR && k) {
      Key key(k);
      if (key->fpr) primary = upper_hex(key->fpr);
    }
    if (fpr == want || primary == want) return;
    problems += "; good signature, but by key " + primary + ", not the pinned " + want;
  }
  throw Error(Errc::verify, "signature check failed for " + subject + ":" + problems.substr(1));
}

}  // namespace rpi::fetch
