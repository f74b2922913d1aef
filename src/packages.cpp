#include "packages.hpp"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <optional>
#include <set>

#include "rpi/error.hpp"
#include "rpi/size.hpp"
#include "rpi/text.hpp"

namespace rpi::cli {

namespace {

// ---- world entries ----

// The constraint of a world entry: {"=", "1.2"} for "foo@edge=1.2", {"", ""} for "foo".
std::pair<std::string_view, std::string_view> constraint_of(std::string_view entry) {
  const auto op = entry.find_first_of("<>=~");
  if (op == std::string_view::npos) return {};
  const auto ver = entry.find_first_not_of("<>=~", op);
  if (ver == std::string_view::npos) return {entry.substr(op), {}};
  return {entry.substr(op, ver - op), entry.substr(ver)};
}

// Where the entry a report line names is written, else the spec's name (no line).
overlay::Place entry_at(const std::string& line, const overlay::HostConfig& h, const std::string& spec_path) {
  const std::string entry = line.substr(0, line.find(" ("));
  const auto& p = h.apk.packages;
  const auto i = static_cast<std::size_t>(std::find(p.begin(), p.end(), entry) - p.begin());
  return i < h.apk.package_locations.size() ? h.apk.package_locations[i] : overlay::Place{spec_path, 0, 0, {}};
}

// A close name from the readable indexes, or "". Also the Debian spellings
// people bring along: python3-X is py3-X on Alpine, chromium-browser is chromium.
std::string suggestion(const std::string& name, const std::vector<const PackageRepo*>& repos) {
  auto has = [&](const std::string& n) {
    return std::any_of(repos.begin(), repos.end(), [&](const PackageRepo* r) { return r->index->by_name.count(n); });
  };
  for (const auto& [debian, alpine] : {std::pair<std::string, std::string>{"python3-", "py3-"}, {"-browser", ""}}) {
    std::string n = name;
    if (auto p = n.find(debian); p != std::string::npos) {
      n.replace(p, debian.size(), alpine);
      if (has(n)) return n;
    }
  }
  const std::size_t limit = name.size() <= 4 ? 1 : 2;
  std::string best;
  std::size_t best_d = limit + 1;
  for (const PackageRepo* r : repos)
    for (const auto& kv : r->index->by_name) {
      const std::string& n = kv.first;
      if (n.size() + limit < name.size() || name.size() + limit < n.size()) continue;
      const std::size_t d = edit_distance(name, n);
      if (d < best_d || (d == best_d && n < best)) {
        best_d = d;
        best = n;
      }
    }
  return best;
}

}  // namespace

namespace {

// A package named `name` in `repos` whose version meets the constraint, or one
// whose version cannot be judged (given the benefit of the doubt); nullptr
// when every version there is fails it. Then `have` says what there is, and a
// likely fix: "=1.2" is exact, and 1.2-r0 is what the index calls it.
const fetch::Package* with_version(const std::string& name, std::string_view op, std::string_view wanted,
                                   const std::vector<const PackageRepo*>& repos, std::string& have) {
  std::vector<std::string> versions;
  for (const PackageRepo* r : repos)
    for (const auto& p : r->index->packages) {  // an index may hold several versions of a name
      if (p.name != name) continue;
      if (fetch::version_satisfies(p.version, op, wanted).value_or(true)) return &p;
      if (std::find(versions.begin(), versions.end(), p.version) == versions.end()) versions.push_back(p.version);
    }
  have = "the repositories have " + join(versions);
  if (op == "=" && std::any_of(versions.begin(), versions.end(), [&](const std::string& v) {
        return fetch::version_satisfies(v, "~", wanted).value_or(false);
      }))
    have += "; did you mean '" + name + "~" + std::string(wanted) + "'?";
  return nullptr;
}

}  // namespace

PackageReport check_packages(const std::vector<std::string>& packages, const std::vector<PackageRepo>& repos) {
  PackageReport rep;
  rep.checked = true;
  for (const auto& r : repos) {
    const std::string u = r.url + " (" + r.why + ")";
    if (!r.index && std::find(rep.unread.begin(), rep.unread.end(), u) == rep.unread.end()) rep.unread.push_back(u);
  }

  // The packages found, with the repositories their dependencies may come from.
  std::deque<std::pair<const fetch::Package*, std::vector<const PackageRepo*>>> todo;
  for (const auto& entry : packages) {
    const std::string name = overlay::package_name(entry);
    const std::string tag = overlay::package_tag(entry);
    std::vector<const PackageRepo*> readable;
    bool all_read = true;
    for (const auto& r : repos) {
      if (!r.tag.empty() && r.tag != tag) continue;
      if (r.index)
        readable.push_back(&r);
      else
        all_read = false;
    }
    const fetch::Package* found = nullptr;
    for (const PackageRepo* r : readable)
      if ((found = r->index->find(name))) break;
    if (found) {
      if (const auto [op, wanted] = constraint_of(entry); !op.empty() && found->name == name) {
        std::string have;
        found = with_version(name, op, wanted, readable, have);
        if (!found) {
          if (!all_read) rep.certain = false;
          rep.unmatched.push_back(entry + " (" + have + ")");
          continue;
        }
      }
      ++rep.found;
      todo.emplace_back(found, readable);
      continue;
    }
    if (readable.empty()) {  // nothing to look in: not checked rather than unknown
      ++rep.unchecked;
      continue;
    }
    if (!all_read) rep.certain = false;
    const std::string hint = suggestion(name, readable);
    rep.unknown.push_back(entry + (hint.empty() ? "" : " (did you mean '" + hint + "'?)"));
  }

  std::set<std::string> seen;
  while (!todo.empty()) {
    auto [p, from] = todo.front();
    todo.pop_front();
    if (!seen.insert(p->name).second) continue;
    // Saturating: the sizes come from a mirror.
    rep.download_bytes = p->size > UINT64_MAX - rep.download_bytes ? UINT64_MAX : rep.download_bytes + p->size;
    ++rep.download_count;
    for (const auto& d : p->depends) {
      if (d.empty() || d[0] == '!') continue;  // a conflict, not a need
      const std::string dn = d.substr(0, d.find_first_of("<>=~"));
      for (const PackageRepo* r : from)
        if (const fetch::Package* q = r->index->find(dn)) {
          if (!seen.count(q->name)) todo.emplace_back(q, from);
          break;
        }
    }
  }
  return rep;
}

std::string describe(const PackageReport& r, const overlay::HostConfig& h) {
  const std::size_t n = h.apk.packages.size();
  std::string s = std::to_string(n) + (n == 1 ? " package" : " packages");
  if (!r.checked)
    return s + ", not checked: the tarball does not come from a mirror (rpi-provision check --packages checks them)";
  s += ", " + std::to_string(r.found) + " found";
  if (r.unchecked) s += ", " + std::to_string(r.unchecked) + " not checked";
  if (!r.unknown.empty()) s += ", not found: " + join(r.unknown);
  if (!r.unmatched.empty()) s += ", no such version: " + join(r.unmatched);
  if (!r.unread.empty()) s += "; not read: " + join(r.unread);
  if (r.download_count)
    s += "; the Pi downloads about " + format_size(r.download_bytes) + " (" + std::to_string(r.download_count) +
         " packages with their dependencies" + (h.apk.cache ? ", kept in the card's apk cache)" : ")");
  return s;
}

PackageChecker::PackageChecker(fetch::Options opts, std::vector<std::string> mirrors)
    : opts_(std::move(opts)), mirrors_(std::move(mirrors)) {}

PackageRepo PackageChecker::load(const std::string& tag, const std::vector<std::string>& urls,
                                 const std::string& arch) {
  // The first URL that has an index; else the first one, with why it had none.
  std::optional<PackageRepo> first;
  for (const auto& url : urls) {
    const std::string key = arch + " " + url;
    auto it = loaded_.find(key);
    if (it == loaded_.end()) {
      PackageRepo r;
      r.url = fetch::redact_urls(url);
      try {
        if (auto idx = fetch::load_package_index(url, arch, opts_))
          r.index = std::make_shared<const fetch::PackageIndex>(std::move(*idx));
        else
          r.why = opts_.offline ? "offline, and the cache has no copy of its index"
                                : "it has no " + arch + "/APKINDEX.tar.gz";
      } catch (const Error& e) {
        r.why = e.what();
      }
      it = loaded_.emplace(key, std::move(r)).first;
    }
    if (it->second.index || !first) first = it->second;
    if (it->second.index) break;
  }
  first->tag = tag;
  return *first;
}

std::vector<PackageRepo> PackageChecker::repositories(const overlay::HostConfig& h, const std::string& branch) {
  std::vector<PackageRepo> repos;
  const std::string& arch = h.alpine.arch;
  if (h.apk.repositories.empty()) {
    const std::vector<std::string> mirrors = !mirrors_.empty()         ? mirrors_
                                             : h.alpine.mirror.empty() ? std::vector<std::string>{fetch::kDefaultMirror}
                                                                       : std::vector<std::string>{h.alpine.mirror};
    for (const char* part : {"/main", "/community"}) {
      std::vector<std::string> urls;
      for (const auto& m : mirrors) {
        std::string root = m;
        while (root.size() > 1 && root.back() == '/') root.pop_back();
        urls.push_back(root + "/" + branch + part);
      }
      repos.push_back(load("", urls, arch));
    }
    return repos;
  }
  for (const auto& line : h.apk.repositories) {
    const auto [tag, body] = overlay::repository_line(line);
    if (body.starts_with("/media/") && body.ends_with("/apks"))
      continue;  // the card's boot repository: a subset of the release's main
    if (body.starts_with("/"))
      repos.push_back(PackageRepo{tag, body, nullptr, "a folder on the Pi"});
    else if (!body.starts_with("http://") && !body.starts_with("https://"))
      repos.push_back(PackageRepo{tag, fetch::redact_urls(body), nullptr, "only http and https repositories are read"});
    else
      repos.push_back(load(tag, {body}, arch));
  }
  return repos;
}

PackageReport PackageChecker::check(const overlay::HostConfig& h, const std::string& branch,
                                    const std::string& spec_path, Reporter& reporter) {
  if (h.apk.packages.empty()) return {};
  const std::string key = h.alpine.arch + "\n" + branch + "\n" + h.alpine.mirror + "\n" +
                          join(h.apk.repositories, "\n") + "\n\n" + join(h.apk.packages, "\n");
  if (auto it = reports_.find(key); it != reports_.end()) return it->second;
  std::vector<PackageRepo> repos = repositories(h, branch);
  PackageReport rep = check_packages(h.apk.packages, repos);
  std::vector<std::string> read;
  for (const auto& r : repos)
    if (r.index) read.push_back(r.url);
  const std::string repos_read = read.empty() ? std::string("none") : join(read);
  if (rep.certain) {
    const char* consequence = ": apk on the Pi would install none of the packages. ";
    // Spec errors at the entries: shown with the spec's line, placed in --json;
    // both kinds at once (the next run would otherwise find the second).
    std::vector<overlay::SpecProblem> problems;
    if (!rep.unknown.empty()) {
      const overlay::Place at = entry_at(rep.unknown.front(), h, spec_path);
      problems.push_back(
          at.problem(at.text() + ": [apk].packages " + join(rep.unknown) + (rep.unknown.size() == 1 ? " is" : " are") +
                     " in none of the card's repositories for " + h.alpine.arch + " (" + repos_read + ")" +
                     consequence + "Correct the name, or add the repository that has it to [apk].repositories"));
    }
    if (!rep.unmatched.empty()) {
      const overlay::Place at = entry_at(rep.unmatched.front(), h, spec_path);
      problems.push_back(at.problem(at.text() + ": [apk].packages " + join(rep.unmatched) +
                                    ": no version in the card's repositories for " + h.alpine.arch + " (" + repos_read +
                                    ") satisfies " + (rep.unmatched.size() == 1 ? "it" : "them") + consequence +
                                    "Change the version (\"=\" is exact, with the -rN; \"~1.2\" takes any 1.2.x), "
                                    "or drop it to get the repository's version"));
    }
    if (!problems.empty()) {
      std::stable_sort(problems.begin(), problems.end(),
                       [](const overlay::SpecProblem& a, const overlay::SpecProblem& b) { return a.line < b.line; });
      throw overlay::SpecErrors(std::move(problems), 0);
    }
  }
  if (!rep.unknown.empty() || !rep.unmatched.empty()) {
    ++warnings_;
    std::vector<std::string> what;
    if (!rep.unknown.empty())
      what.push_back(join(rep.unknown) + (rep.unknown.size() == 1 ? " is" : " are") +
                     " in none of the repositories read");
    if (!rep.unmatched.empty())
      what.push_back(join(rep.unmatched) + ": no version in the repositories read satisfies " +
                     (rep.unmatched.size() == 1 ? "it" : "them"));
    const std::string& first = rep.unknown.empty() ? rep.unmatched.front() : rep.unknown.front();
    const overlay::Place at = entry_at(first, h, spec_path);
    reporter.warn_at({at.text() + ": [apk].packages " + join(what, "; ") + " (" + repos_read +
                          "); not read: " + join(rep.unread) + ". If no repository has " +
                          (rep.unknown.size() + rep.unmatched.size() == 1 ? "it" : "them") +
                          ", apk on the Pi installs none of the packages",
                      at.excerpt, at.line, at.column, at.file});
  } else if (!rep.unread.empty()) {
    const std::string what = std::string("[apk].packages ") +
                             (rep.unchecked ? "not checked against " : "checked, but not against ") + join(rep.unread);
    if (warn_unread_) {
      ++warnings_;
      reporter.warn(what);
    } else {
      reporter.note(what);
    }
  }
  reports_.emplace(key, rep);
  return rep;
}

}  // namespace rpi::cli
