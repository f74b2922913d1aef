// [apk].packages against the package indexes (APKINDEX) of the repositories a
// card will use. On the Pi a name no repository has makes `apk add` refuse the
// whole world file: no package gets installed, and the reason is only in a log
// on the card. Here it is an error before anything is written, with a "did you
// mean". The same indexes give the size of the .apk files the Pi will download
// (what `[apk] cache = true` keeps on the card), which the automatic image size
// makes room for.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fetch/fetch.hpp"
#include "overlay/spec.hpp"
#include "reporter.hpp"

namespace rpi::cli {

// One line of /etc/apk/repositories as the check sees it.
struct PackageRepo {
  std::string tag;                                   // "" or "@testing"
  std::string url;                                   // as the card lists it (secrets hidden)
  std::shared_ptr<const fetch::PackageIndex> index;  // null: not read
  std::string why;                                   // why not, when not read
};

struct PackageReport {
  bool checked = false;  // false: no check was made (no packages, or no mirror to check against)
  // Entries found in no repository they may come from, each with a hint:
  // "chromiun (did you mean 'chromium'?)".
  std::vector<std::string> unknown;
  // Entries whose name is found but no version of it satisfies their
  // constraint, with what there is: "chromium=138.0 (the repositories have
  // 138.0.7204.157-r0; did you mean 'chromium~138.0'?)". apk on the Pi refuses
  // them just like unknown names.
  std::vector<std::string> unmatched;
  // Every repository those entries could come from was read: they are errors,
  // not guesses.
  bool certain = true;
  // Repositories not read, "URL (why)".
  std::vector<std::string> unread;
  // The .apk files of the packages found and everything they depend on: what
  // the Pi downloads (an estimate: packages already on the card's boot
  // repository are counted too).
  std::uint64_t download_bytes = 0;
  std::size_t download_count = 0;
  std::size_t found = 0;      // entries found
  std::size_t unchecked = 0;  // entries no readable repository could have: not judged
};

// Checks world entries ("name", "name@tag", "name>=1.2") against `repos`: an
// untagged entry may come from untagged repositories only, "name@tag" also
// from those tagged "@tag" (apk's rule); a version constraint must be met by a
// package of that name. Pure: no I/O.
PackageReport check_packages(const std::vector<std::string>& packages, const std::vector<PackageRepo>& repos);

// One line for plans and `check --packages`: "6 found in …; the Pi downloads about 318 MB (…)".
std::string describe(const PackageReport& r, const overlay::HostConfig& h);

// Loads the indexes of a card's repositories (once per URL for a whole run)
// and checks its [apk].packages.
class PackageChecker {
 public:
  // `mirrors`: where the default repositories (main and community of the
  // card's branch) are read from, in order: the build's --mirror list; empty:
  // each card's [alpine].mirror.
  PackageChecker(fetch::Options opts, std::vector<std::string> mirrors);

  // The repositories of `h` on `branch` ("v3.22", "edge"), read. The card's
  // boot repository (/media/…/apks) is left out: its packages are a subset of
  // the release's main.
  std::vector<PackageRepo> repositories(const overlay::HostConfig& h, const std::string& branch);

  // Checks `h` (an unchecked report without packages). Throws Errc::spec
  // naming the entry's FILE:LINE:COL (else `spec_path`) when an entry is certainly
  // unknown; warns about the uncertain ones (a repository was not read), and
  // notes the repositories that could not be read. Each distinct card once.
  PackageReport check(const overlay::HostConfig& h, const std::string& branch, const std::string& spec_path,
                      Reporter& reporter);

  // From now on index downloads stop (rpi::Cancelled) once `flag` is set.
  void set_cancel(const std::atomic<bool>* flag) { opts_.cancel = flag; }
  // Warnings check() gave so far.
  std::size_t warnings() const { return warnings_; }
  // A repository that could not be read is a warning, not a note: for
  // `check --packages`, where the check is what the user asked for.
  void warn_unread() { warn_unread_ = true; }

 private:
  PackageRepo load(const std::string& tag, const std::vector<std::string>& urls, const std::string& arch);

  fetch::Options opts_;
  std::vector<std::string> mirrors_;
  std::map<std::string, PackageRepo> loaded_;  // by "<arch> <url>"
  std::map<std::string, PackageReport> reports_;
  std::size_t warnings_ = 0;
  bool warn_unread_ = false;
};

}  // namespace rpi::cli
