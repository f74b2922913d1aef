// The reporter's progress lines for fetch's "download" events: the rate counts
// only the bytes received in this run, not those a resumed download started with.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

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

}  // namespace
