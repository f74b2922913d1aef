// Progress as an interface: libraries emit events, one reporter in src/ renders
// them (bars on a TTY, plain lines, JSON Lines). Events never carry secrets.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>

namespace rpi {

// Types: progress ("download", "build", "write", "verify", ...: done/total
// bytes), messages ("note", "warning": `message`), and "detail": one step of
// the run as it ends, for -v (the reporter drops it otherwise), e.g. "URL:
// HTTP 200, 95.3 MiB received in 8.41 s" or "/dev/sdb: flush (fdatasync) in
// 0.31 s".
// A detail's `message` names what it is about (cards are written in
// parallel: lines interleave) and says how long the step took; done/total are
// unused. Like every event, never a secret: URLs with their credentials
// hidden, no passphrase, password or key.
struct Event {
  std::string type;     // "download", "build", "write", "verify", "note", "detail", ...
  std::string subject;  // what it is about: a file name, a card, a device path
  std::uint64_t done = 0;
  std::uint64_t total = 0;  // 0 when unknown
  std::string message;      // human text for notes, warnings and details
};

using EventSink = std::function<void(const Event&)>;

inline void emit(const EventSink& sink, Event ev) {
  if (sink) sink(ev);
}

// A "detail" event (see Event).
inline void emit_detail(const EventSink& sink, std::string subject, std::string message) {
  if (sink) sink(Event{"detail", std::move(subject), 0, 0, std::move(message)});
}

// Times the steps that details report: "0.84 s" since it started (or since the
// last lap()).
class Stopwatch {
 public:
  using Clock = std::chrono::steady_clock;
  std::string elapsed() const { return text(Clock::now() - start_); }
  // elapsed(), then starts again.
  std::string lap() {
    const Clock::time_point now = Clock::now();
    std::string s = text(now - start_);
    start_ = now;
    return s;
  }

 private:
  static std::string text(Clock::duration d) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f s", std::chrono::duration<double>(d).count());
    return buf;
  }
  Clock::time_point start_ = Clock::now();
};

}  // namespace rpi
