// One printer for everything the tool tells the user. Libraries emit rpi::Event
// values; the reporter renders them: multi-line progress bars on a TTY, plain
// periodic lines otherwise, JSON Lines on stdout with --json, nothing with -q.
// "detail" events (the step-by-step trail) only with -v: "debug: " lines on
// stderr (none with -q), or "detail" JSON lines.
// Progress goes to stderr, results to stdout. Control characters in any text
// (a NUL, an ESC; not a message's line breaks) are shown escaped, on a
// terminal, a file or a pipe alike; --json escapes them as JSON. Thread-safe
// (one card per thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "json.hpp"
#include "rpi/error.hpp"
#include "rpi/events.hpp"

namespace rpi::cli {

class Reporter {
 public:
  void configure(bool json, bool quiet);
  // -v: "detail" events are shown (set as -v is parsed, before any command configures).
  void set_verbose(bool verbose) { verbose_ = verbose; }
  // How long plain progress lines (stderr not a terminal) are apart: 5 s;
  // tests shorten it.
  void set_plain_interval(std::chrono::milliseconds interval) { plain_interval_ = interval; }
  bool json() const noexcept { return json_; }
  bool verbose() const noexcept { return verbose_; }

  EventSink sink();
  void on_event(const Event& ev);

  // A result for stdout: `text` in human mode (newline added), `obj` (with
  // "type" set to `type`) as one JSON line in --json mode.
  void result(const std::string& type, const std::string& text, JsonObject obj);
  // Human-only text on stdout (ignored in --json mode).
  void text(const std::string& text);
  void note(const std::string& message);
  // A "detail" event (shown only when verbose).
  void detail(const std::string& subject, const std::string& message);
  void warn(const std::string& message);
  void error(Errc code, const std::string& message);
  // One error or warning as the user reads it: its message and, for a spec's,
  // the line of the spec it points at (`excerpt`, empty: none) with a caret
  // under `column` (1-based, in characters); `file` is the spec the place is
  // in (line 0: it has no place).
  struct Located {
    std::string message;
    std::string excerpt;
    std::size_t line = 0, column = 0;
    std::string file;
  };
  // A warning at a place of a file (a spec's): its excerpt with a caret under
  // it, as an error's; in --json the event also has "file", "line" and
  // "column" (1-based), as a spec error's does (no excerpt).
  void warn_at(const Located& warning);
  // Several errors of one kind (a spec's): each its own error line (and its
  // excerpt with a caret, not in --json), then `more_line` when given; in
  // --json one error event whose message is the first, with the first one's
  // "file", "line" and "column" when it has a place, "messages" (all) and
  // "problems" (each message with its place) when there are several, and,
  // when more > 0, "more_errors". No excerpt in JSON.
  void errors(Errc code, const std::vector<Located>& errors, std::uint64_t more, const std::string& more_line);
  // Finishes any progress display (call before printing results).
  void finish_progress();
  // Standard output was closed when the program started (it now points to
  // /dev/null, so no file the run opens can become fd 1): whatever would be
  // printed there is lost, which output_error() then reports.
  void stdout_was_closed() { stdout_closed_ = true; }
  // The errno of the first failed write to stdout (0: none). A result nobody
  // received (a full disk, a closed or vanished reader) makes the run fail.
  int output_error();

 private:
  struct Bar {
    std::string type;
    std::uint64_t done = 0, total = 0;
    std::uint64_t base = 0;  // `done` when the bar started (a resumed download's offset): not this run's bytes
    std::chrono::steady_clock::time_point start, last_print;
    std::chrono::steady_clock::time_point end;  // when it finished: its rate stays that of its run
    bool finished = false;
  };
  void redraw_locked();
  void clear_bars_locked();
  // A note, warning or debug line on stderr (`prefix` before `message`, and
  // `place`'s excerpt with its caret when given) with the bars cleared and
  // drawn again below it.
  void message_locked(const char* prefix, const std::string& message, const Located* place);
  void emit_json_locked(const std::string& line);
  // Writes `text` (+ a newline) to stdout and flushes it; records a failure.
  void out_locked(const std::string& text, bool newline);

  std::mutex mu_;
  bool json_ = false;
  bool quiet_ = false;
  bool verbose_ = false;
  bool tty_ = false;
  std::chrono::milliseconds plain_interval_{5000};
  bool color_ = false;
  std::vector<std::string> order_;  // bar subjects in first-seen order
  std::map<std::string, Bar> bars_;
  int drawn_lines_ = 0;
  bool stdout_closed_ = false;
  int out_errno_ = 0;
};

}  // namespace rpi::cli
