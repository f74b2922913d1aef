// The reporter's progress lines for fetch's "download" events: the rate counts
// only the bytes received in this run, not those a resumed download started with.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "reporter.hpp"
#include "test_support.hpp"

using namespace rpi;
using namespace rpi::test;

namespace {

// "… 1.2 MiB/s …" → bytes per second.
double rate_of(const std::string& line) {
  std::size_t slash = line.find("/s");
  if (slash == std::string::npos) return -1;
  std::size_t start = line.rfind(' ', slash);
  std::size_t num = line.rfind(' ', start - 1);
  double v = std::stod(line.substr(num + 1, start - num - 1));
  std::string unit = line.substr(start + 1, slash - start - 1);
  if (unit == "KiB") v *= 1024;
  if (unit == "MiB") v *= 1024 * 1024;
  if (unit == "GiB") v *= 1024.0 * 1024 * 1024;
  return v;
}

TEST(FetchReporter, RateAfterAResumeCountsOnlyThisRunsBytes) {
  TempDir tmp;
  std::string out = capture_stderr(tmp / "err.txt", [] {
    cli::Reporter r;
    r.configure(false, false);
    // Resumed at 90 MiB of 100 MiB; then 10 MiB arrive in ~1 s.
    const std::uint64_t mib = 1024 * 1024;
    r.on_event(Event{"download", "alpine.tar.gz", 90 * mib, 100 * mib, {}});
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    r.on_event(Event{"download", "alpine.tar.gz", 100 * mib, 100 * mib, {}});
  });
  std::string last = out.substr(out.rfind("download alpine.tar.gz"));
  double rate = rate_of(last);
  ASSERT_GT(rate, 0) << out;
  // 10 MiB in a second, not 100 MiB.
  EXPECT_LT(rate, 20.0 * 1024 * 1024) << last;
  EXPECT_GT(rate, 4.0 * 1024 * 1024) << last;
}

// "detail" events: a "debug: " line only when verbose, none with quiet. A
// command that configures the reporter without saying (configure(json,
// quiet)) keeps the verbosity -v set as it was parsed.
TEST(FetchReporter, DetailsOnlyWhenVerboseAndNotQuiet) {
  TempDir tmp;
  auto shown = [&](bool verbose_by_flag, bool quiet) {
    return capture_stderr(tmp / "err.txt", [&] {
      cli::Reporter r;
      r.set_verbose(verbose_by_flag);
      r.configure(false, quiet);
      r.on_event(Event{"detail", "x.tar.gz", 0, 0, "GET http://m/x.tar.gz: HTTP 200, 1 KiB in 0.01 s"});
      r.note("a note");
    });
  };
  EXPECT_EQ(shown(true, false), "debug: GET http://m/x.tar.gz: HTTP 200, 1 KiB in 0.01 s\na note\n");
  EXPECT_EQ(shown(false, false), "a note\n");
  EXPECT_EQ(shown(true, true), "");
  const std::string toggled = capture_stderr(tmp / "err.txt", [] {
    cli::Reporter r;
    r.configure(false, false);
    r.set_verbose(true);
    r.detail("card", "card: flush (fdatasync) in 0.00 s");
    r.set_verbose(false);
    r.detail("card", "not shown");
  });
  EXPECT_EQ(toggled, "debug: card: flush (fdatasync) in 0.00 s\n");
}

// Everything the reporter draws on a terminal while `f` runs: stderr is a
// pseudo-terminal's slave, read back from its master. nullopt without one.
template <class F>
std::optional<std::string> drawn_on_terminal(F&& f) {
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) {
    if (master >= 0) ::close(master);
    return std::nullopt;
  }
  const int slave = ::open(::ptsname(master), O_RDWR | O_NOCTTY);
  if (slave < 0) {
    ::close(master);
    return std::nullopt;
  }
  std::fflush(stderr);
  const int saved = ::dup(2);
  ::dup2(slave, 2);
  ::close(slave);
  f();
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  std::string out;
  ::fcntl(master, F_SETFL, O_NONBLOCK);
  char buf[4096];
  for (ssize_t n; (n = ::read(master, buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  ::close(master);
  return out;
}

// On a terminal, a finished bar is drawn again whenever another one moves:
// it keeps the rate it ended with (it used to fall as the time went on
// being counted, so the first card of a batch seemed to slow down).
TEST(FetchReporter, AFinishedBarKeepsItsRateWhileOthersGoOn) {
  const std::uint64_t mib = 1024 * 1024;
  const std::optional<std::string> out = drawn_on_terminal([&] {
    unsetenv("NO_COLOR");
    cli::Reporter r;
    r.configure(false, false);
    r.on_event(Event{"write", "a.img", 0, 8 * mib, {}});
    r.on_event(Event{"write", "b.img", 0, 8 * mib, {}});
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    r.on_event(Event{"write", "a.img", 8 * mib, 8 * mib, {}});  // finished
    for (int i = 1; i <= 4; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(150));
      r.on_event(Event{"write", "b.img", static_cast<std::uint64_t>(i) * mib, 8 * mib, {}});
    }
  });
  if (!out) GTEST_SKIP() << "no pseudo-terminal here";
  // The finished bar's line in each drawing after it finished.
  std::vector<double> rates;
  for (std::size_t at = 0; (at = out->find("write a.img [####", at)) != std::string::npos; ++at) {
    const std::string line = out->substr(at, out->find('\n', at) - at);
    if (line.find("100%") != std::string::npos) rates.push_back(rate_of(line));
  }
  ASSERT_GE(rates.size(), 4u) << *out;
  for (double r : rates) EXPECT_EQ(r, rates.front()) << *out;
}

}  // namespace
