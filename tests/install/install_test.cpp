// The things a user installs besides the binary, checked with the tools that consume
// them: `cmake --install` into a DESTDIR, `cpack -G DEB` read back with dpkg-deb (and
// its Depends against the dpkg database), the man page through groff/man with
// warnings on, the completions through bash/shellcheck/zsh, and the spec JSON Schema
// through Python's tomllib + jsonschema. Drift tests compare the documentation with
// what the built binary's --help really offers.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace fs = std::filesystem;
using rpi::test::binary_dir;
using rpi::test::CommandResult;
using rpi::test::have_tool;
using rpi::test::read_file;
using rpi::test::run;
using rpi::test::source_dir;
using rpi::test::TempDir;
using rpi::test::write_file;

namespace {

fs::path man_page() {
  return source_dir() / "docs" / "rpi-provision.1";
}
fs::path bash_completion() {
  return source_dir() / "scripts" / "completions" / "rpi-provision.bash";
}
fs::path zsh_completion() {
  return source_dir() / "scripts" / "completions" / "_rpi-provision";
}
fs::path schema() {
  return source_dir() / "docs" / "spec.schema.json";
}
fs::path validator() {
  return source_dir() / "tests" / "install" / "validate_spec.py";
}

std::string describe(const CommandResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// True if `text` has the option `opt` as a whole word ("--host" is not in "--hostname").
bool has_option(const std::string& text, const std::string& opt) {
  for (std::size_t pos = text.find(opt); pos != std::string::npos; pos = text.find(opt, pos + 1)) {
    std::size_t end = pos + opt.size();
    bool left_ok = pos == 0 || !(std::isalnum(static_cast<unsigned char>(text[pos - 1])) || text[pos - 1] == '-');
    bool right_ok = end == text.size() ||
                    !(std::isalnum(static_cast<unsigned char>(text[end])) || text[end] == '-' || text[end] == '_');
    if (left_ok && right_ok) return true;
  }
  return false;
}

// Files below `dir` (recursively) whose name satisfies `pred`.
template <typename Pred>
std::vector<fs::path> find_files(const fs::path& dir, Pred pred) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && pred(e.path().filename().string())) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<fs::path> example_specs() {
  std::vector<fs::path> out;
  fs::path dir = source_dir() / "examples";
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".toml") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// ---- what the binary offers, from its --help --------------------------------------

// Subcommand names listed under "Subcommands:" in CLI11's help.
std::vector<std::string> help_subcommands(const std::string& help) {
  std::vector<std::string> out;
  bool in = false;
  for (const auto& line : lines_of(help)) {
    if (line.rfind("Subcommands:", 0) == 0) {
      in = true;
      continue;
    }
    if (!in) continue;
    if (line.empty() || line[0] != ' ') break;
    std::istringstream words(line);
    std::string name;
    words >> name;
    if (!name.empty()) out.push_back(name);
  }
  return out;
}

std::set<std::string> help_long_options(const std::string& help) {
  std::set<std::string> out;
  static const std::regex opt(R"((^|[\s,\[])(--[a-z0-9][a-z0-9-]*))");
  for (const auto& line : lines_of(help)) {
    for (std::sregex_iterator it(line.begin(), line.end(), opt), end; it != end; ++it) out.insert((*it)[2].str());
  }
  return out;
}

struct Surface {
  std::vector<std::string> commands;           // "" = the main command, then "check", "cache list", ...
  std::vector<std::set<std::string>> options;  // long options of each
};

// Walks `rpi-provision [cmd [sub]] --help` to collect every command and long option.
// Bounded: a help text that is not the one of the command asked for (its "Usage:" line
// must name the whole command path) is reported instead of recursed into.
Surface cli_surface() {
  Surface s;
  std::vector<std::vector<std::string>> todo{{}};
  while (!todo.empty() && s.commands.size() < 64) {
    std::vector<std::string> path = todo.front();
    todo.erase(todo.begin());
    std::vector<std::string> args = path;
    args.push_back("--help");
    CommandResult r = rpi::test::cli(args);
    EXPECT_EQ(r.exit_code, 0) << "rpi-provision --help failed: " << describe(r);
    std::string name;
    for (const auto& p : path) name += (name.empty() ? "" : " ") + p;
    std::string usage = "Usage: rpi-provision " + name + (name.empty() ? "" : " ");
    if (!contains(r.out, usage)) {
      ADD_FAILURE() << "'rpi-provision " << name << " --help' did not print its own help:\n" << r.out;
      continue;
    }
    s.commands.push_back(name);
    s.options.push_back(help_long_options(r.out));
    if (path.size() >= 2) continue;
    for (const auto& sub : help_subcommands(r.out)) {
      auto next = path;
      next.push_back(sub);
      todo.push_back(next);
    }
  }
  return s;
}

// The man page source with roff's escaped hyphens turned into plain ones.
std::string man_text() {
  std::string text = read_file(man_page());
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size() && text[i + 1] == '-') continue;
    out += text[i];
  }
  return out;
}

// ---- Python with tomllib + jsonschema, the schema oracle --------------------------

std::optional<std::string> schema_python() {
  for (const std::string py : {"python3", "/usr/bin/python3"}) {
    if (!have_tool(py)) continue;
    if (run({py, "-c", "import tomllib, jsonschema"}).exit_code == 0) return py;
  }
  return std::nullopt;
}

#define REQUIRE_SCHEMA_PYTHON(var)                                                                     \
  auto var##_opt = schema_python();                                                                    \
  if (!var##_opt) GTEST_SKIP() << "no python3 with tomllib + jsonschema (Debian: python3-jsonschema)"; \
  const std::string var = *var##_opt

CommandResult validate(const std::string& py, const std::vector<std::string>& files, bool fragment = false,
                       bool markdown = false) {
  std::vector<std::string> argv{py, validator().string(), schema().string()};
  if (fragment) argv.push_back("--fragment");
  if (markdown) argv.push_back("--markdown");
  argv.insert(argv.end(), files.begin(), files.end());
  return run(argv);
}

}  // namespace

// ---- cmake --install ---------------------------------------------------------------

TEST(InstallLayout, CmakeInstallIntoDestdirHasEveryFileAndRuns) {
  TempDir t;
  fs::path root = t / "root";
  CommandResult r = run(
      {"env", "DESTDIR=" + root.string(), RPI_CMAKE_COMMAND, "--install", binary_dir().string(), "--prefix", "/usr"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  fs::path usr = root / "usr";

  // Installed copies are byte-identical to the sources.
  struct Want {
    fs::path installed;
    fs::path source;
  };
  std::vector<Want> want{
      {usr / "share/man/man1/rpi-provision.1", man_page()},
      {usr / "share/bash-completion/completions/rpi-provision", bash_completion()},
      {usr / "share/zsh/vendor-completions/_rpi-provision", zsh_completion()},
      {usr / "share/doc/rpi-provision/README.md", source_dir() / "README.md"},
      {usr / "share/doc/rpi-provision/json-events.md", source_dir() / "docs/json-events.md"},
      {usr / "share/doc/rpi-provision/spec.schema.json", schema()},
  };
  if (fs::exists(source_dir() / "docs/spec.md"))
    want.push_back({usr / "share/doc/rpi-provision/spec.md", source_dir() / "docs/spec.md"});
  for (const auto& ex : example_specs()) want.push_back({usr / "share/doc/rpi-provision/examples" / ex.filename(), ex});
  // The udev rules and station unit, once udev/ has them.
  auto rules = find_files(source_dir() / "udev",
                          [](const std::string& n) { return contains(n, "rpi-provision") && n.ends_with(".rules"); });
  if (!rules.empty()) want.push_back({usr / "lib/udev/rules.d/60-rpi-provision.rules", rules.front()});
  auto units = find_files(source_dir() / "udev", [](const std::string& n) {
    return contains(n, "rpi-provision-station") && n.ends_with(".service");
  });
  if (!units.empty()) want.push_back({usr / "lib/systemd/system/rpi-provision-station.service", units.front()});

  for (const auto& w : want) {
    ASSERT_TRUE(fs::is_regular_file(w.installed)) << "missing after cmake --install: " << w.installed;
    EXPECT_EQ(read_file(w.installed), read_file(w.source)) << w.installed << " differs from " << w.source;
    struct stat st {};
    ASSERT_EQ(::stat(w.installed.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0644u) << w.installed;
  }

  // Nothing lands outside the prefix (no /etc, no absolute paths).
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    auto rel = fs::relative(e.path(), root).string();
    EXPECT_TRUE(rel == "usr" || rel.rfind("usr/", 0) == 0) << "installed outside /usr: " << rel;
  }

  fs::path bin = usr / "bin/rpi-provision";
  ASSERT_TRUE(fs::is_regular_file(bin));
  EXPECT_EQ(::access(bin.c_str(), X_OK), 0) << "not executable: " << bin;
  CommandResult v = run({bin.string(), "--version"});
  EXPECT_EQ(v.exit_code, 0) << describe(v);
  EXPECT_EQ(v.out.rfind("rpi-provision ", 0), 0u) << v.out;
}

// ---- cpack -G DEB ------------------------------------------------------------------

TEST(InstallDeb, CpackBuildsPackageWithDependsFilesAndPostinst) {
  if (::access(RPI_CPACK_COMMAND, X_OK) != 0) GTEST_SKIP() << "cpack not found at " << RPI_CPACK_COMMAND;
  RPI_REQUIRE_TOOL("dpkg-deb");
  RPI_REQUIRE_TOOL("dpkg-shlibdeps");
  RPI_REQUIRE_TOOL("dpkg-query");
  RPI_REQUIRE_TOOL("readelf");
  TempDir t;
  CommandResult r = run({RPI_CPACK_COMMAND, "-G", "DEB", "-B", (t / "out").string(), "--config",
                         (binary_dir() / "CPackConfig.cmake").string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  std::vector<fs::path> debs;
  for (const auto& e : fs::directory_iterator(t / "out"))
    if (e.path().extension() == ".deb") debs.push_back(e.path());
  ASSERT_EQ(debs.size(), 1u) << "expected one .deb in " << (t / "out");
  const std::string deb = debs.front().string();

  auto field = [&](const std::string& name) {
    CommandResult f = run({"dpkg-deb", "-f", deb, name});
    EXPECT_EQ(f.exit_code, 0) << describe(f);
    std::string v = f.out;
    while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.pop_back();
    return v;
  };
  EXPECT_EQ(field("Package"), "rpi-provision");
  EXPECT_EQ(field("Section"), "admin");
  EXPECT_FALSE(field("Maintainer").empty());
  EXPECT_FALSE(field("Description").empty());
  EXPECT_EQ(field("Version"), RPI_PROJECT_VERSION);
  const std::string depends = field("Depends");

  // Every shared library the binary links directly must come from a package in
  // Depends: readelf lists the DT_NEEDED entries, dpkg says which package owns each.
  CommandResult l = run({"readelf", "-d", rpi::test::cli_path().string()});
  ASSERT_EQ(l.exit_code, 0) << describe(l);
  static const std::regex needed(R"(\(NEEDED\).*\[(.+)\])");
  int checked = 0;
  for (const auto& line : lines_of(l.out)) {
    std::smatch m;
    if (!std::regex_search(line, m, needed)) continue;
    std::string soname = m[1].str();
    CommandResult owner = run({"dpkg-query", "-S", "*/" + soname});
    if (owner.exit_code != 0) continue;  // not from a package (a local build); dpkg-shlibdeps cannot name it either
    std::set<std::string> pkgs;
    for (const auto& o : lines_of(owner.out)) pkgs.insert(o.substr(0, o.find_first_of(":,")));
    bool found = std::any_of(pkgs.begin(), pkgs.end(), [&](const std::string& p) { return has_option(depends, p); });
    EXPECT_TRUE(found) << soname << " (from " << *pkgs.begin() << ") is not in Depends: " << depends;
    ++checked;
  }
  EXPECT_GE(checked, 3) << "readelf listed too few packaged libraries:\n" << l.out;
  for (const char* p : {"libarchive13", "libcurl4", "libfdisk1"}) EXPECT_TRUE(has_option(depends, p)) << depends;

  // Files listed in the package.
  CommandResult c = run({"dpkg-deb", "-c", deb});
  ASSERT_EQ(c.exit_code, 0) << describe(c);
  for (const char* path :
       {"./usr/bin/rpi-provision", "./usr/share/man/man1/rpi-provision.1",
        "./usr/share/bash-completion/completions/rpi-provision", "./usr/share/zsh/vendor-completions/_rpi-provision",
        "./usr/share/doc/rpi-provision/README.md", "./usr/share/doc/rpi-provision/json-events.md",
        "./usr/share/doc/rpi-provision/spec.schema.json"})
    EXPECT_TRUE(contains(c.out, std::string(path) + "\n") || contains(c.out, std::string(path) + ".gz\n"))
        << path << " not in the package:\n"
        << c.out;

  // The postinst creates the group and reloads udev, and is a clean POSIX sh script.
  CommandResult e = run({"dpkg-deb", "-e", deb, (t / "control").string()});
  ASSERT_EQ(e.exit_code, 0) << describe(e);
  fs::path postinst = t / "control" / "postinst";
  ASSERT_TRUE(fs::is_regular_file(postinst));
  EXPECT_EQ(::access(postinst.c_str(), X_OK), 0) << "postinst not executable";
  std::string script = read_file(postinst);
  EXPECT_TRUE(contains(script, "rpi-provision")) << script;
  EXPECT_TRUE(contains(script, "addgroup") || contains(script, "groupadd")) << script;
  EXPECT_TRUE(contains(script, "adduser --system")) << "no system user for the station unit:\n" << script;
  EXPECT_TRUE(contains(script, "udevadm control --reload-rules")) << script;
  CommandResult n = run({"sh", "-n", postinst.string()});
  EXPECT_EQ(n.exit_code, 0) << describe(n);
  if (have_tool("shellcheck")) {
    CommandResult sc = run({"shellcheck", "-s", "sh", postinst.string()});
    EXPECT_EQ(sc.exit_code, 0) << describe(sc);
  }

  // Unpacked into a scratch root, the binary runs.
  fs::path root = t / "root";
  CommandResult x = run({"dpkg-deb", "-x", deb, root.string()});
  ASSERT_EQ(x.exit_code, 0) << describe(x);
  CommandResult v = run({(root / "usr/bin/rpi-provision").string(), "--version"});
  EXPECT_EQ(v.exit_code, 0) << describe(v);
  EXPECT_EQ(v.out.rfind("rpi-provision ", 0), 0u) << v.out;
}

// ---- man page ----------------------------------------------------------------------

TEST(InstallManPage, GroffRendersWithoutWarnings) {
  RPI_REQUIRE_TOOL("groff");
  CommandResult r = run({"groff", "-man", "-Tutf8", "-ww", "-z", man_page().string()});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.err, "") << "groff warnings";
}

TEST(InstallManPage, ManRendersWithoutWarnings) {
  RPI_REQUIRE_TOOL("man");
  CommandResult r = run({"env", "LC_ALL=C.UTF-8", "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat", "man", "--warnings", "-l",
                         man_page().string()});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.err, "") << "man warnings";
  EXPECT_TRUE(contains(r.out, "EXIT STATUS")) << r.out;
}

TEST(InstallManPage, HasEverySectionExitCodeAndVariable) {
  std::string text = man_text();
  for (const char* section :
       {".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH OPTIONS", ".SH COMMANDS", ".SH \"SPEC FILE\"",
        ".SH \"EXIT STATUS\"", ".SH ENVIRONMENT", ".SH FILES", ".SH EXAMPLES", ".SH SECURITY", ".SH \"SEE ALSO\""})
    EXPECT_TRUE(contains(text, std::string(section) + "\n")) << "missing section " << section;
  for (const char* word : {"XDG_CACHE_HOME", "SOURCE_DATE_EPOCH", "NO_COLOR", "http_proxy", "https_proxy", "no_proxy",
                           "60-rpi-provision.rules", "rpi-provision-station.service", "bmaptool", "lbu",
                           "/usr/share/doc/rpi-provision/spec.md", "0600"})
    EXPECT_TRUE(contains(text, word)) << "man page does not mention " << word;
  // EXIT STATUS lists 0, 1, 2 and 3.
  auto at = text.find(".SH \"EXIT STATUS\"");
  ASSERT_NE(at, std::string::npos);
  std::string exit_section = text.substr(at, text.find(".SH", at + 4) - at);
  for (const char* code : {".B 0\n", ".B 1\n", ".B 2\n", ".B 3\n"}) EXPECT_TRUE(contains(exit_section, code)) << code;
}

// The man page keeps up with the binary: every subcommand and long option that
// `--help` shows is documented.
TEST(InstallManPage, DocumentsEveryCommandAndOptionOfHelp) {
  Surface s = cli_surface();
  std::string text = man_text();
  for (std::size_t i = 0; i < s.commands.size(); ++i) {
    const std::string& cmd = s.commands[i];
    if (!cmd.empty()) {
      EXPECT_TRUE(contains(text, ".SS \"" + cmd) || contains(text, ".B " + cmd))
          << "man page has no entry for subcommand '" << cmd << "'";
    }
    for (const auto& opt : s.options[i])
      EXPECT_TRUE(has_option(text, opt)) << "man page does not document " << opt << " (of '" << cmd << "')";
  }
}

// ---- completions -------------------------------------------------------------------

TEST(InstallCompletions, BashParsesAndPassesShellcheck) {
  CommandResult n = run({"bash", "-n", bash_completion().string()});
  EXPECT_EQ(n.exit_code, 0) << describe(n);
  RPI_REQUIRE_TOOL("shellcheck");
  CommandResult sc = run({"shellcheck", "-s", "bash", bash_completion().string()});
  EXPECT_EQ(sc.exit_code, 0) << describe(sc);
}

// Drives the bash completion function the way bash does (COMP_WORDS/COMP_CWORD) in
// folder `dir` and returns COMPREPLY, sorted, one per line.
std::string bash_complete(const fs::path& dir, const std::string& words, const std::string& after = "") {
  std::string script = "cd '" + dir.string() + "' || exit 9\nsource '" + bash_completion().string() +
                       "'\n"
                       "COMP_WORDS=(" +
                       words +
                       ")\n"
                       "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
                       "_rpi_provision\n"
                       "printf '%s\\n' \"${COMPREPLY[@]}\" | sort\n" +
                       after;
  CommandResult r = run({"bash", "--norc", "--noprofile", "-c", script});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  return r.out;
}

TEST(InstallCompletions, BashCompletesCommandsFilesAndValues) {
  TempDir t;
  write_file(t / "kiosk.toml", "");
  write_file(t / "notes.txt", "");
  fs::create_directory(t / "specs");
  auto complete = [&](const std::string& words) { return bash_complete(t.path(), words); };
  EXPECT_EQ(complete("rpi-provision ch"), "check\n");
  EXPECT_EQ(complete("rpi-provision cache ''"), "list\nprune\n");
  EXPECT_EQ(complete("rpi-provision --spec ''"), "kiosk.toml\nspecs\n");
  EXPECT_EQ(complete("rpi-provision fetch --arch ''"), "aarch64\narmhf\narmv7\n");
  EXPECT_EQ(complete("rpi-provision --spec kiosk.toml --dr"), "--dry-run\n");
  EXPECT_EQ(complete("rpi-provision --spec kiosk.toml in"), "inspect\n");
  std::string inspect = complete("rpi-provision inspect ''");
  EXPECT_TRUE(contains(inspect, "kiosk.toml\n") && contains(inspect, "notes.txt\n")) << inspect;
  // The top-level --version takes no value, so the word after it is the subcommand;
  // fetch's --version does take one.
  EXPECT_EQ(complete("rpi-provision --version devices --j"), "--json\n");
  EXPECT_EQ(complete("rpi-provision fetch --version ''"), "edge\nlatest-stable\n");
  // Images raw or compressed (--image reads them, --output writes them); the
  // pattern's extglob leaves the shell's own setting as it was.
  for (const char* f : {"a.img", "b.img.xz", "c.img.gz", "d.img.zst", "e.img.bz2", "f.img.zip", "g.xz"})
    write_file(t / f, "");
  EXPECT_EQ(complete("rpi-provision --image ''"), "a.img\nb.img.xz\nc.img.gz\nd.img.zst\ne.img.bz2\nspecs\n");
  EXPECT_EQ(complete("rpi-provision --spec kiosk.toml --output ''"),
            "a.img\nb.img.xz\nc.img.gz\nd.img.zst\ne.img.bz2\nspecs\n");
  EXPECT_EQ(bash_complete(t.path(), "rpi-provision --image ''", "shopt -p extglob || true\n"),
            "a.img\nb.img.xz\nc.img.gz\nd.img.zst\ne.img.bz2\nspecs\nshopt -u extglob\n");
}

TEST(InstallCompletions, ZshParses) {
  RPI_REQUIRE_TOOL("zsh");
  CommandResult n = run({"zsh", "-n", zsh_completion().string()});
  EXPECT_EQ(n.exit_code, 0) << describe(n);
  EXPECT_EQ(read_file(zsh_completion()).rfind("#compdef rpi-provision\n", 0), 0u) << "first line must be #compdef";
}

// Types words + TAB into an interactive zsh on a pseudo-terminal (zsh/zpty) with our
// completion on fpath, and looks at what the terminal shows.
TEST(InstallCompletions, ZshCompletesCommandsFilesAndValues) {
  RPI_REQUIRE_TOOL("zsh");
  RPI_REQUIRE_TOOL("timeout");
  if (run({"zsh", "-fc", "zmodload zsh/zpty"}).exit_code != 0) GTEST_SKIP() << "zsh has no zsh/zpty module";
  TempDir t;
  write_file(t / "harness.zsh",
             R"ZSH(# zsh -f harness.zsh COMPLETIONS_DIR WORKDIR WORDS: types WORDS<TAB> into an interactive
# zsh and prints what the terminal shows (the completed line and any listing).
zmodload zsh/zpty || exit 3
cd $2 || exit 4
zpty z zsh -f -i
zpty -w z "PS1='> '; unsetopt zle_bracketed_paste 2>/dev/null; fpath=($1 \$fpath); autoload -Uz compinit; compinit -u -D; zstyle ':completion:*' list-prompt ''; print READY"
zpty -r z line '*READY*'
# Type only once zle shows the prompt (raw mode); in cooked mode the tty would eat ^U.
zpty -r z line '*> *'
# Keys are handled in order: the completion finishes before the line is cleared and
# the marker command runs; its output (not its echo) ends the read.
zpty -w -n z "$3"$'\t\C-e\C-u'
zpty -w z 'print END_$((6*7))'
zpty -r z out '*END_42*'
print -r -- "$out"
zpty -d z
)ZSH");
  fs::create_directory(t / "work");
  write_file(t / "work" / "kiosk.toml", "");
  write_file(t / "work" / "notes.txt", "");
  auto complete = [&](const std::string& words) {
    CommandResult r = run({"timeout", "60", "zsh", "-f", (t / "harness.zsh").string(),
                           zsh_completion().parent_path().string(), (t / "work").string(), words});
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    static const std::regex ansi("\x1b\\[[0-9;?]*[A-Za-z]");
    return std::regex_replace(r.out, ansi, "");
  };
  std::string out = complete("rpi-provision ca");
  EXPECT_TRUE(contains(out, "rpi-provision cache ")) << out;
  out = complete("rpi-provision c");
  EXPECT_TRUE(contains(out, "cache  -- ") && contains(out, "check  -- ")) << out;
  out = complete("rpi-provision fetch --arch arm");
  EXPECT_TRUE(contains(out, "armhf") && contains(out, "armv7")) << out;
  out = complete("rpi-provision --spec ");
  EXPECT_TRUE(contains(out, "--spec kiosk.toml")) << out;
  EXPECT_FALSE(contains(out, "notes.txt")) << out;
  out = complete("rpi-provision apkovl --seed");
  EXPECT_TRUE(contains(out, "--seed-file=")) << out;
}

// The text zsh completes `cmd` from: its _arguments call (the main one for ""), with
// the shared option arrays ($common, $build, ...) it names spelled out.
std::string zsh_section(const std::string& zsh, const std::string& cmd) {
  std::string first = cmd.substr(0, cmd.find(' '));
  std::size_t begin = first.empty() ? zsh.find("_arguments -C -s") : zsh.find("\n        " + first + ")\n");
  std::size_t end = first.empty() ? zsh.find("'1: :->command'", begin) : zsh.find(";;", begin);
  if (begin == std::string::npos || end == std::string::npos) return "";
  std::string section = zsh.substr(begin, end - begin);
  std::string out = section;
  static const std::regex array_use(R"(\$([a-z]+))");
  for (std::sregex_iterator it(section.begin(), section.end(), array_use), stop; it != stop; ++it) {
    std::size_t def = zsh.find("\n  " + (*it)[1].str() + "=(\n");
    if (def != std::string::npos) out += zsh.substr(def, zsh.find("\n  )", def) - def);
  }
  return out;
}

// Long options a command's --help lists as its own (option lines, not the examples).
std::set<std::string> own_long_options(const std::string& help) {
  std::set<std::string> out;
  static const std::regex line_opt(R"(^  (?:-[a-zA-Z],)?(--[a-z0-9][a-z0-9-]*))");
  for (const auto& line : lines_of(help)) {
    std::smatch m;
    if (std::regex_search(line, m, line_opt)) out.insert(m[1].str());
  }
  return out;
}

// Every command is completed, and after `rpi-provision CMD --` each shell offers
// exactly the options CMD's --help lists as its own.
TEST(InstallCompletions, CoverEveryCommandAndOptionOfHelp) {
  Surface s = cli_surface();
  const std::string bash = read_file(bash_completion());
  const std::string zsh = read_file(zsh_completion());
  TempDir t;
  // The main command's output flags also work after a subcommand (CLI11 fallthrough).
  const std::set<std::string> global{"--json", "--quiet", "--verbose"};
  for (std::size_t i = 0; i < s.commands.size(); ++i) {
    const std::string& cmd = s.commands[i];
    std::string last = cmd.substr(cmd.rfind(' ') == std::string::npos ? 0 : cmd.rfind(' ') + 1);
    if (!cmd.empty()) {
      EXPECT_TRUE(has_option(bash, last)) << "bash completion lacks subcommand " << cmd;
      EXPECT_TRUE(has_option(zsh, last)) << "zsh completion lacks subcommand " << cmd;
    }
    std::vector<std::string> args;
    std::istringstream words(cmd);
    for (std::string w; words >> w;) args.push_back(w);
    args.push_back("--help");
    const std::set<std::string> own = own_long_options(rpi::test::cli(args).out);
    EXPECT_TRUE(own.count("--help")) << "no options parsed from the help of '" << cmd << "'";
    std::set<std::string> offered;
    for (const auto& line : lines_of(bash_complete(t.path(), "rpi-provision " + cmd + " --")))
      if (!line.empty()) offered.insert(line);
    const std::string zsh_own = zsh_section(zsh, cmd);
    EXPECT_FALSE(zsh_own.empty()) << "zsh completion has no section for '" << cmd << "'";
    for (const auto& opt : own) {
      EXPECT_TRUE(offered.count(opt)) << "bash does not offer " << opt << " after 'rpi-provision " << cmd << "'";
      EXPECT_TRUE(has_option(zsh_own, opt)) << "zsh does not offer " << opt << " for '" << cmd << "'";
    }
    for (const auto& opt : offered)
      EXPECT_TRUE(own.count(opt) || (global.count(opt) && s.options[0].count(opt)))
          << "bash offers " << opt << " after 'rpi-provision " << cmd << "', which its --help does not list";
  }
}

// ---- spec JSON Schema --------------------------------------------------------------

TEST(InstallSchema, AcceptsEveryKeyOfTheDesign) {
  REQUIRE_SCHEMA_PYTHON(py);
  TempDir t;
  write_file(t / "full.toml", R"([alpine]
version = "3.22.1"
arch = "armv7"
mirror = "https://dl-cdn.alpinelinux.org/alpine"
tarball = "alpine-rpi-3.22.1-armv7.tar.gz"
sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

[system]
hostname = "pi{n:02}"
domain = "lan"
timezone = "Europe/Berlin"
keymap = "us us"
motd = "hello"

[network]
dns = ["1.1.1.1"]
search = ["lan"]
proxy = "http://proxy.lan:3128"

[[network.interfaces]]
name = "eth0"
dhcp = true
ipv6 = "off"

[[network.interfaces]]
name = "eth1"
dhcp = false
address = "192.168.1.20/24"
gateway = "192.168.1.1"

[wifi]
ssid = "shop"
psk = { env = "SHOP_PSK" }
country = "DE"
hidden = false
interface = "wlan0"

[apk]
packages = ["chromium"]
repositories = ["https://dl-cdn.alpinelinux.org/alpine/v3.22/main"]
keys = ["me.rsa.pub"]
cache = true

[services]
sysinit = ["devfs"]
boot = ["hwclock"]
default = ["local"]
shutdown = ["savecache"]
disable = ["acpid"]

[[users]]
name = "pi"
uid = 1000
groups = ["wheel", "video"]
shell = "/bin/ash"
password = { file = "pi.pass" }
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPFB/Vl9sFnNdTSfmBzkZeynL0bzqkfdIQgPpCubXwqV me@laptop"]
admin = true

[[users]]
name = "svc"
password_hash = "$6$salt$hash"

[root]
password_hash = "$6$salt$hash"
ssh_authorized_keys = ["ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQCQdVHIF/RmS4ml+HDtU/q3Q0Ru0F0PGRiGVXJfhUDM1HCyZkPfZs/cal8Y3dZC7JxlLBTBvHNORGhgxwCsgPu5BwtD7OGMhx2VsoyJzZMfRCimnSJxLV3287WaDD9IWDXodRSKC29jNqjsEje2UgaJ9zU5KjTW8rz7PkEqya3DuYPT3ORWEkZvesQg0sATiYcoY1rKTT0NJ2KIX8LQrvKAiNhxPav7AxD+/xRuGkBCwDARTAi5afJENtl6RYW0uGMRcRdaQillPJJmPI8TFwuD/0TS3r84IS0OIFToZ6tFk5jkqmqNq641hPy/jEPo5zb+d5/TaUtPbj9WUWW46rzOHYMJHaUjHn0v1Ek7/eIBRZkRgkJ9ga+FlRAW7KopWyO77taTb/waXym48+0+/2LoAPic/CIL7fGLAw0za2fu4ddUGp1d6JZQCqsntJE5PmJqH0egWY525/aDghL8kATxjnYRWxiVjcKR8W/Y8HG3noHJYle0B1VcLEdtJgI8Y9E= me@laptop"]

[ssh]
enable = true
password_authentication = false
permit_root_login = "prohibit-password"
host_keys = "first-boot"

[ntp]
enable = true
servers = ["time.cloudflare.com"]

[[files]]
path = "/etc/kiosk.conf"
content = "url=http://example.lan\n"
mode = "0600"
owner = "root:root"

[[files]]
path = "/etc/motd.d/x"
source = "motd.txt"

[[scripts]]
name = "setup"
run = "first-boot"
content = "#!/bin/sh\necho hi\n"

[[scripts]]
name = "always"
run = "every-boot"
source = "always.sh"

[lbu]
media = "mmcblk0p1"
include = ["/home"]
exclude = ["/etc/motd"]
backup_limit = 2

[boot]
label = "ALPINE"
size = "1GiB"
cmdline = ["consoleblank=0"]
config = ["dtoverlay=vc4-kms-v3d"]
serial_console = true
apkovl_url = "http://10.0.0.1/{MAC}.apkovl.tar.gz"

[install]
mode = "sys"
disk = "/dev/mmcblk0"

[[hosts]]
hostname = "front"
mac = "dc:a6:32:01:02:03"
[hosts.wifi]
ssid = "front"
psk = "correct horse battery"

[[hosts]]
hostname = "back"
[hosts.boot]
size = "max"
)");
  write_file(t / "hosts-only.toml", "[[hosts]]\nhostname = \"a\"\n[[hosts]]\nhostname = \"b\"\n");
  CommandResult r = validate(py, {(t / "full.toml").string(), (t / "hosts-only.toml").string()});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
}

// A [hosts.wifi] overrides [wifi] key by key, as the loader takes it: an ssid
// alone keeps the base's psk, and hidden alone needs no ssid. Both the schema
// and `rpi-provision check` accept it.
TEST(InstallSchema, AcceptsHostWifiOverridingSomeKeys) {
  REQUIRE_SCHEMA_PYTHON(py);
  TempDir t;
  const fs::path p = t / "hosts-wifi.toml";
  write_file(p,
             "[system]\nhostname = \"pi\"\n[wifi]\ncountry = \"DE\"\nssid = \"lab\"\npsk = { env = \"LAB_PSK\" "
             "}\n[[hosts]]\nhostname = \"a\"\n[hosts.wifi]\nssid = \"lab-2\"\n[[hosts]]\nhostname = \"b\"\n"
             "[hosts.wifi]\nhidden = true\n");
  CommandResult r = validate(py, {p.string()});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  CommandResult c =
      run({"env", "LAB_PSK=correct horse battery", rpi::test::cli_path().string(), "check", "--spec", p.string()});
  EXPECT_EQ(c.exit_code, 0) << describe(c);
}

// The schema is not a rubber stamp: each of these must be rejected.
TEST(InstallSchema, RejectsBadSpecs) {
  REQUIRE_SCHEMA_PYTHON(py);
  const std::vector<std::pair<std::string, std::string>> bad{
      {"unknown-key", "[system]\nhostname = \"a\"\nhostnme = \"b\"\n"},
      {"unknown-table", "[system]\nhostname = \"a\"\n[sytem]\n"},
      {"no-hostname", "[system]\ntimezone = \"UTC\"\n"},
      {"host-without-name", "[[hosts]]\nmac = \"dc:a6:32:01:02:03\"\n"},
      {"bad-arch", "[system]\nhostname = \"a\"\n[alpine]\narch = \"x86_64\"\n"},
      {"bad-version", "[system]\nhostname = \"a\"\n[alpine]\nversion = \"stable\"\n"},
      {"label-boot", "[system]\nhostname = \"a\"\n[boot]\nlabel = \"BOOT\"\n"},
      {"label-cidata", "[system]\nhostname = \"a\"\n[boot]\nlabel = \"cidata\"\n"},
      {"label-long", "[system]\nhostname = \"a\"\n[boot]\nlabel = \"ALPINE-LINUX-1\"\n"},
      {"bad-size", "[system]\nhostname = \"a\"\n[boot]\nsize = \"lots\"\n"},
      {"secret-bad-ref", "[system]\nhostname = \"a\"\n[wifi]\nssid = \"s\"\npsk = { vault = \"x\" }\n"},
      {"secret-two-refs", "[system]\nhostname = \"a\"\n[wifi]\nssid = \"s\"\npsk = { env = \"A\", file = \"b\" }\n"},
      {"password-and-hash",
       "[system]\nhostname = \"a\"\n[[users]]\nname = \"u\"\npassword = \"x\"\npassword_hash = \"$6$x\"\n"},
      {"file-relative", "[system]\nhostname = \"a\"\n[[files]]\npath = \"etc/x\"\ncontent = \"x\"\n"},
      {"file-no-content", "[system]\nhostname = \"a\"\n[[files]]\npath = \"/etc/x\"\n"},
      {"script-bad-run",
       "[system]\nhostname = \"a\"\n[[scripts]]\nname = \"x\"\nrun = \"sometimes\"\ncontent = \"x\"\n"},
      {"install-mode", "[system]\nhostname = \"a\"\n[install]\nmode = \"frugal\"\n"},
      {"ipv6", "[system]\nhostname = \"a\"\n[[network.interfaces]]\nname = \"eth0\"\nipv6 = \"yes\"\n"},
      {"bad-mac", "[[hosts]]\nhostname = \"a\"\nmac = \"dc:a6:32\"\n"},
      {"dhcp-type", "[system]\nhostname = \"a\"\n[[network.interfaces]]\nname = \"eth0\"\ndhcp = \"yes\"\n"},
      {"host-alpine", "[[hosts]]\nhostname = \"a\"\n[hosts.alpine]\narch = \"armhf\"\n"},
      {"mode-integer", "[system]\nhostname = \"a\"\n[[files]]\npath = \"/etc/x\"\ncontent = \"x\"\nmode = 420\n"},
      {"cmdline-space", "[system]\nhostname = \"a\"\n[boot]\ncmdline = [\"quiet splash\"]\n"},
      {"label-space", "[system]\nhostname = \"a\"\n[boot]\nlabel = \"MY PI\"\n"},
      {"host-wifi-unknown", "[[hosts]]\nhostname = \"a\"\n[hosts.wifi]\nssid = \"s\"\npassword = \"x\"\n"},
  };
  TempDir t;
  std::vector<std::string> files;
  for (const auto& [name, text] : bad) {
    files.push_back((t / (name + ".toml")).string());
    write_file(files.back(), text);
  }
  // One run for all (Python start-up is slow); each file must be reported, none "OK".
  CommandResult all = validate(py, files);
  EXPECT_EQ(all.exit_code, 1) << describe(all);
  for (const auto& f : files) {
    EXPECT_FALSE(contains(all.out, f + ": OK\n")) << f << " was accepted:\n" << read_file(f);
    EXPECT_TRUE(contains(all.out, f + ": ")) << f << " not reported:\n" << all.out;
  }
  EXPECT_TRUE(
      contains(all.out, std::to_string(files.size()) + " spec(s), " + std::to_string(files.size()) + " invalid"))
      << all.out;
  // The schema and the real loader agree: `rpi-provision check` refuses each of them too,
  // as a spec error (exit 2).
  for (const auto& f : files) {
    CommandResult c = rpi::test::cli({"check", "--spec", f});
    EXPECT_EQ(c.exit_code, 2) << f << ": the schema rejects it but rpi-provision check says:\n" << describe(c);
  }
  // A secret that fails validation is never echoed.
  fs::path p = t / "secret.toml";
  write_file(p, "[system]\nhostname = \"a\"\n[wifi]\nssid = \"s\"\npsk = [\"hunter2-not-shown\"]\n");
  CommandResult r = validate(py, {p.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_FALSE(contains(r.out + r.err, "hunter2-not-shown")) << r.out;
}

// The spec shown in the man page's SPEC FILE section is valid for the schema and for
// the real loader; the README's TOML snippets use only known keys.
TEST(InstallSchema, DocumentedExamplesValidate) {
  REQUIRE_SCHEMA_PYTHON(py);
  std::string text = man_text();
  auto at = text.find("A minimal spec:");
  ASSERT_NE(at, std::string::npos);
  auto begin = text.find(".EX\n", at);
  auto end = text.find(".EE\n", begin);
  ASSERT_NE(begin, std::string::npos);
  ASSERT_NE(end, std::string::npos);
  std::string spec = text.substr(begin + 4, end - begin - 4);
  for (std::size_t pos; (pos = spec.find("\\|")) != std::string::npos;) spec.erase(pos, 2);
  TempDir t;
  write_file(t / "man.toml", spec);
  CommandResult r = validate(py, {(t / "man.toml").string()});
  EXPECT_EQ(r.exit_code, 0) << spec << "\n" << describe(r);
  // The man page shows a placeholder where the user's key goes: refused as one; a real key there passes.
  const std::string placeholder = "ssh-ed25519 AAAA... me@laptop";
  CommandResult c = run({"env", "SHOP_WIFI_PSK=correct horse battery", rpi::test::cli_path().string(), "check",
                         "--spec", (t / "man.toml").string()});
  if (auto where = spec.find(placeholder); where != std::string::npos) {
    EXPECT_EQ(c.exit_code, 2) << describe(c);
    EXPECT_TRUE(contains(c.err, "is a placeholder")) << describe(c);
    spec.replace(where, placeholder.size(),
                 "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPFB/Vl9sFnNdTSfmBzkZeynL0bzqkfdIQgPpCubXwqV me@laptop");
    write_file(t / "man.toml", spec);
    c = run({"env", "SHOP_WIFI_PSK=correct horse battery", rpi::test::cli_path().string(), "check", "--spec",
             (t / "man.toml").string()});
  }
  EXPECT_EQ(c.exit_code, 0) << spec << "\n" << describe(c);

  CommandResult readme = validate(py, {(source_dir() / "README.md").string()}, /*fragment=*/true, /*markdown=*/true);
  EXPECT_EQ(readme.exit_code, 0) << describe(readme);
  EXPECT_FALSE(contains(readme.out, "\n0 spec(s)") || readme.out.rfind("0 spec(s)", 0) == 0) << readme.out;
}

TEST(InstallSchema, ExampleSpecsValidate) {
  REQUIRE_SCHEMA_PYTHON(py);
  auto specs = example_specs();
  if (specs.empty()) GTEST_SKIP() << "examples/ has no *.toml yet";
  std::vector<std::string> files;
  for (const auto& s : specs) files.push_back(s.string());
  CommandResult r = validate(py, files);
  EXPECT_EQ(r.exit_code, 0) << describe(r);
}

// docs/spec.md (the key reference) and the schema list the same keys for every table,
// and any ```toml snippet in it validates (snippets show single tables, so the hostname
// rule is not applied).
TEST(InstallSchema, SpecReferenceAndSchemaAgree) {
  REQUIRE_SCHEMA_PYTHON(py);
  fs::path doc = source_dir() / "docs" / "spec.md";
  if (!fs::exists(doc)) GTEST_SKIP() << "docs/spec.md does not exist yet";
  CommandResult keys = run({py, validator().string(), schema().string(), "--doc-keys", doc.string()});
  EXPECT_EQ(keys.exit_code, 0) << describe(keys);
  // A reference without key tables would agree with anything.
  EXPECT_FALSE(contains(keys.out, "\n0 documented key(s)") || keys.out.rfind("0 documented", 0) == 0) << keys.out;
  if (contains(read_file(doc), "```toml")) {
    CommandResult r = validate(py, {doc.string()}, /*fragment=*/true, /*markdown=*/true);
    EXPECT_EQ(r.exit_code, 0) << describe(r);
  }
}
