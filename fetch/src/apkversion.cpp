// apk's order of versions (apk-tools' version.c describes it; this is our
// own reading of its rules): digits{.digits}[letter]{_suffix[digits]}[~hash][-rN].
#include <optional>
#include <string_view>
#include <vector>

#include "fetch/fetch.hpp"

namespace rpi::fetch {

namespace {

// The parts of a version, in the order they may follow one another.
enum class Part { first, digits, letter, suffix, suffix_number, hash, revision, end };

struct VersionPart {
  Part kind = Part::end;
  std::string_view text;  // the digits, the letter, the suffix's name or the hash
  int rank = 0;           // suffix: its place in alpha < beta < pre < rc < (none) < cvs < svn < git < hg < p
};

constexpr int kNoSuffix = 4;  // ranks below it are pre-releases: 1.0_rc1 < 1.0

int suffix_rank(std::string_view s) {
  static constexpr std::string_view names[] = {"alpha", "beta", "pre", "rc", "", "cvs", "svn", "git", "hg", "p"};
  for (int i = 0; i < 10; ++i)
    if (i != kNoSuffix && s == names[i]) return i;
  return -1;
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_lower(char c) {
  return c >= 'a' && c <= 'z';
}
bool is_hex(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// The parts of `v`, ending with Part::end; nullopt when apk would not accept it.
std::optional<std::vector<VersionPart>> version_parts(std::string_view v) {
  std::vector<VersionPart> parts;
  std::size_t i = 0;
  auto run = [&](auto pred) {
    const std::size_t from = i;
    while (i < v.size() && pred(v[i])) ++i;
    return v.substr(from, i - from);
  };
  auto digits = [&](Part kind) {
    const std::string_view d = run(is_digit);
    if (d.empty()) return false;
    parts.push_back({kind, d, 0});
    return true;
  };
  if (!digits(Part::first)) return std::nullopt;
  while (i < v.size()) {
    const Part last = parts.back().kind;
    const char c = v[i];
    bool ok = false;
    if (is_lower(c) && (last == Part::first || last == Part::digits)) {
      parts.push_back({Part::letter, v.substr(i++, 1), 0});
      ok = true;
    } else if (c == '.' && (last == Part::first || last == Part::digits)) {
      ++i;
      ok = digits(Part::digits);
    } else if (is_digit(c) && last == Part::suffix) {
      ok = digits(Part::suffix_number);
    } else if (c == '_' && last <= Part::suffix_number) {
      ++i;
      const std::string_view name = run(is_lower);
      const int rank = suffix_rank(name);
      if (rank >= 0) parts.push_back({Part::suffix, name, rank});
      ok = rank >= 0;
    } else if (c == '~' && last < Part::hash) {
      ++i;
      const std::string_view h = run(is_hex);
      if (!h.empty()) parts.push_back({Part::hash, h, 0});
      ok = !h.empty();
    } else if (c == '-' && last < Part::revision && v.substr(i, 2) == "-r") {
      i += 2;
      ok = digits(Part::revision);
    }
    if (!ok) return std::nullopt;
  }
  parts.push_back({Part::end, {}, 0});
  return parts;
}

int sign(int x) {
  return (x > 0) - (x < 0);
}

// Digits as the numbers they are, of any length.
int compare_numbers(std::string_view a, std::string_view b) {
  while (a.size() > 1 && a.front() == '0') a.remove_prefix(1);
  while (b.size() > 1 && b.front() == '0') b.remove_prefix(1);
  if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
  return sign(a.compare(b));
}

// Two parts of the same kind.
int compare_parts(const VersionPart& a, const VersionPart& b) {
  switch (a.kind) {
    case Part::digits:
      // After a dot a leading zero makes it a fraction-like string: 1.02 < 1.1 (as Gentoo and apk do).
      if (a.text.front() == '0' || b.text.front() == '0') return sign(a.text.compare(b.text));
      return compare_numbers(a.text, b.text);
    case Part::first:
    case Part::suffix_number:
    case Part::revision:
      return compare_numbers(a.text, b.text);
    case Part::suffix:
      return sign(a.rank - b.rank);
    default:  // letter, hash
      return sign(a.text.compare(b.text));
  }
}

}  // namespace

std::optional<int> compare_apk_versions(std::string_view a, std::string_view b, bool prefix) {
  const auto pa = version_parts(a), pb = version_parts(b);
  if (!pa || !pb) return std::nullopt;
  std::size_t i = 0;
  for (; (*pa)[i].kind == (*pb)[i].kind && (*pa)[i].kind != Part::end; ++i)
    if (const int c = compare_parts((*pa)[i], (*pb)[i])) return c;
  const VersionPart &x = (*pa)[i], &y = (*pb)[i];
  if (x.kind == y.kind) return 0;
  // "~": the same as far as both go. apk 3 also wants `b` to be the shorter
  // one; apk 2.14 (Alpine up to 3.22) does not ("1.2-r0" meets "~1.2.3").
  // The looser rule, so that no entry apk on the Pi takes is refused here.
  if (prefix) return 0;
  // The same up to here, and one goes on: going on is newer, unless it goes on
  // with a pre-release suffix (1.0_rc1 < 1.0); a later kind of part is older
  // than an earlier one (1.0-r1 < 1.0.1).
  if (x.kind == Part::suffix && x.rank < kNoSuffix) return -1;
  if (y.kind == Part::suffix && y.rank < kNoSuffix) return 1;
  return x.kind > y.kind ? -1 : 1;
}

std::optional<bool> version_satisfies(std::string_view version, std::string_view op, std::string_view wanted) {
  bool less = false, greater = false, equal = false, prefix = false;
  for (char c : op) {
    if (c == '<')
      less = true;
    else if (c == '>')
      greater = true;
    else if (c == '=')
      equal = true;
    else if (c == '~')
      equal = prefix = true;
    else
      return std::nullopt;
  }
  if (less && greater && !equal) return std::nullopt;  // "><": a checksum, not a version
  const auto c = compare_apk_versions(version, wanted, prefix);
  if (!c) return std::nullopt;
  return (*c < 0 && less) || (*c == 0 && equal) || (*c > 0 && greater);
}

}  // namespace rpi::fetch
