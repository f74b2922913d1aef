#include "reporter.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <string_view>

#include "rpi/size.hpp"
#include "rpi/text.hpp"

namespace rpi::cli {

namespace {
using Clock = std::chrono::steady_clock;

// Writes `parts` and a newline to `f` by their lengths (a NUL in them does not
// end the line early, as "%s" would).
void put_line(std::FILE* f, std::initializer_list<std::string_view> parts) {
  for (std::string_view p : parts) std::fwrite(p.data(), 1, p.size(), f);
  std::fputc('\n', f);
}

std::string human_rate(double bytes_per_s) {
  return format_size(static_cast<std::uint64_t>(bytes_per_s)) + "/s";
}

// `base`: the bytes that were already there when the bar started (a resumed
// download), which do not count towards the rate.
std::string bar_text(const std::string& subject, const std::string& type, std::uint64_t done, std::uint64_t total,
                     std::uint64_t base, double seconds) {
  // `read -` is standard input (--image -), its total unknown until it ends.
  std::string s = type + " " + (type == "read" && subject == "-" ? std::string("standard input") : subject) + " ";
  if (total) {
    int pct = static_cast<int>(done * 100 / total);
    int width = 24;
    int fill = static_cast<int>(done * static_cast<std::uint64_t>(width) / total);
    s += "[" + std::string(static_cast<std::size_t>(fill), '#') +
         std::string(static_cast<std::size_t>(width - fill), '.') + "] ";
    s += std::to_string(pct) + "% ";
    s += format_size(done) + "/" + format_size(total);
  } else {
    s += format_size(done);
  }
  if (seconds > 0.2 && done > base) {
    double rate = static_cast<double>(done - base) / seconds;
    s += " " + human_rate(rate);
    if (total && done < total && rate > 0) {
      int eta = static_cast<int>(static_cast<double>(total - done) / rate);
      s += " ETA " + std::to_string(eta / 60) + ":" + (eta % 60 < 10 ? "0" : "") + std::to_string(eta % 60);
    }
  }
  return s;
}
}  // namespace

void Reporter::configure(bool json, bool quiet) {
  json_ = json;
  quiet_ = quiet;
  tty_ = ::isatty(2) == 1;
  const char* no_color = std::getenv("NO_COLOR");
  color_ = tty_ && !(no_color && *no_color);
}

EventSink Reporter::sink() {
  return [this](const Event& ev) { on_event(ev); };
}

void Reporter::out_locked(const std::string& text, bool newline) {
  if (stdout_closed_) {
    if (!out_errno_) out_errno_ = EBADF;
    return;
  }
  // Names from cards, images, mirrors and specs must not drive a terminal, nor
  // cut or garble a log or a pipe: control characters (a NUL, an ESC) are shown
  // escaped wherever stdout goes; the text's own line breaks stay. --json
  // escapes them itself (a script reads exact values from it).
  const std::string shown = json_ ? text : printable(text, true);
  std::fwrite(shown.data(), 1, shown.size(), stdout);
  if (newline) std::fputc('\n', stdout);
  if (std::fflush(stdout) != 0 && !out_errno_) out_errno_ = errno ? errno : EIO;
}

int Reporter::output_error() {
  std::lock_guard lock(mu_);
  if (!stdout_closed_ && std::fflush(stdout) != 0 && !out_errno_) out_errno_ = errno ? errno : EIO;
  return out_errno_;
}

void Reporter::emit_json_locked(const std::string& line) {
  out_locked(line, true);
}

void Reporter::on_event(const Event& ev) {
  std::lock_guard lock(mu_);
  const bool is_detail = ev.type == "detail";
  if (is_detail && !verbose_) return;
  if (json_) {
    JsonObject o;
    o.add("type", ev.type);
    if (!ev.subject.empty()) o.add("subject", ev.subject);
    if (ev.type == "note" || ev.type == "warning" || is_detail) {
      o.add("message", ev.message);
    } else {
      o.add("done", ev.done);
      // "read" (standard input) says its unknown total as 0; the others leave it out.
      if (ev.total || ev.type == "read") o.add("total", ev.total);
      if (!ev.message.empty()) o.add("message", ev.message);
    }
    emit_json_locked(o.str());
    return;
  }
  // Quiet drops progress, notes and details; a warning is something to act on, and stays.
  if (quiet_ && ev.type != "warning") return;
  if (ev.type == "note" || ev.type == "warning" || is_detail) {
    message_locked(ev.type == "warning" ? "warning: " : is_detail ? "debug: " : "", ev.message, nullptr);
    return;
  }
  std::string key = ev.type + "\x1f" + ev.subject;
  auto now = Clock::now();
  auto [it, inserted] = bars_.try_emplace(key);
  Bar& bar = it->second;
  if (inserted || ev.done < bar.base) {
    // New, or started over from an earlier byte: measure the rate from here.
    if (inserted) order_.push_back(key);
    bar.type = ev.type;
    bar.start = now;
    bar.base = ev.done;
  }
  bar.done = ev.done;
  bar.total = ev.total;
  bool finished = ev.total && ev.done >= ev.total;
  bool due = now - bar.last_print > (tty_ ? std::chrono::milliseconds(100) : plain_interval_);
  if (!due && !(finished && !bar.finished) && !inserted) return;
  if (finished && !bar.finished) bar.end = now;
  bar.finished = finished;
  bar.last_print = now;
  if (tty_) {
    redraw_locked();
  } else {
    double secs = std::chrono::duration<double>(now - bar.start).count();
    put_line(stderr, {printable(bar_text(ev.subject, ev.type, ev.done, ev.total, bar.base, secs))});
  }
}

void Reporter::clear_bars_locked() {
  if (!tty_ || drawn_lines_ == 0) return;
  std::fprintf(stderr, "\x1b[%dF\x1b[J", drawn_lines_);
  drawn_lines_ = 0;
}

void Reporter::redraw_locked() {
  if (!tty_ || quiet_ || json_ || order_.empty()) return;
  clear_bars_locked();
  auto now = Clock::now();
  for (const auto& key : order_) {
    const Bar& b = bars_[key];
    std::string subject = key.substr(key.find('\x1f') + 1);
    // A finished bar keeps the rate it ended with while the others go on.
    double secs = std::chrono::duration<double>((b.finished ? b.end : now) - b.start).count();
    std::string line = printable(bar_text(subject, b.type, b.done, b.total, b.base, secs));
    if (color_ && b.finished) line = "\x1b[32m" + line + "\x1b[0m";
    std::fprintf(stderr, "%s\n", line.c_str());
    ++drawn_lines_;
  }
  std::fflush(stderr);
}

void Reporter::finish_progress() {
  std::lock_guard lock(mu_);
  order_.clear();
  bars_.clear();
  drawn_lines_ = 0;
}

void Reporter::result(const std::string& type, const std::string& txt, JsonObject obj) {
  std::lock_guard lock(mu_);
  if (json_) {
    JsonObject head;
    head.add("type", type);
    std::string body = obj.str();
    std::string line = head.str();
    if (body.size() > 2) line = line.substr(0, line.size() - 1) + "," + body.substr(1);
    emit_json_locked(line);
    return;
  }
  clear_bars_locked();
  out_locked(txt, txt.empty() || txt.back() != '\n');
}

void Reporter::text(const std::string& txt) {
  std::lock_guard lock(mu_);
  if (json_) return;
  out_locked(txt, txt.empty() || txt.back() != '\n');
}

void Reporter::note(const std::string& message) {
  on_event(Event{"note", "", 0, 0, message});
}
void Reporter::detail(const std::string& subject, const std::string& message) {
  on_event(Event{"detail", subject, 0, 0, message});
}
void Reporter::warn(const std::string& message) {
  on_event(Event{"warning", "", 0, 0, message});
}
void Reporter::error(Errc code, const std::string& message) {
  errors(code, {Located{message, {}, 0, 0, {}}}, 0, "");
}

namespace {
// The byte just past what starts at byte `at` of `line`: a quoted string up to
// its closing quote, a table header up to its last ']', a run of bare-key
// characters; else the one character. What the caret line underlines.
std::size_t token_end(std::string_view line, std::size_t at) {
  std::size_t end = at + 1;
  const char c = line[at];
  if (c == '"' || c == '\'') {
    while (end < line.size() && line[end] != c) end += c == '"' && line[end] == '\\' ? 2 : 1;
    return std::min(end + 1, line.size());
  }
  if (c == '[' && line.find_first_not_of(' ') == at) {
    const auto close = line.find_last_of(']');
    return close != std::string_view::npos && close > at ? close + 1 : end;
  }
  if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-') {
    while (end < line.size() &&
           (std::isalnum(static_cast<unsigned char>(line[end])) || line[end] == '_' || line[end] == '-'))
      ++end;
    return end;
  }
  return std::min(at + std::max<std::size_t>(utf8_sequence(line, at), 1), line.size());
}

// "    7 | hostname = \"pi\"" and "      | ^~~~~~~~" under it, compilers' way:
// the caret under `column` (in characters, as toml++ counts them).
std::string excerpt_lines(const Reporter::Located& e, bool color) {
  const std::string_view line = e.excerpt;
  std::size_t at = 0;  // the caret's byte
  for (std::size_t col = 1; col < e.column; ++col) {
    if (at >= line.size()) return {};  // past the line's end: no place to show
    at += std::max<std::size_t>(utf8_sequence(line, at), 1);
  }
  if (at >= line.size()) return {};
  const std::size_t pad = terminal_columns(line.substr(0, at));
  const std::size_t width = terminal_columns(line.substr(at, token_end(line, at) - at));
  char number[32];
  std::snprintf(number, sizeof number, "%5zu | ", e.line);
  const std::string mark = "^" + std::string(std::max<std::size_t>(width, 1) - 1, '~');
  return number + std::string(line) + "\n      | " + std::string(pad, ' ') +
         (color ? "\x1b[32m" + mark + "\x1b[0m" : mark) + "\n";
}

// The excerpt of an error or warning and the caret under it, on stderr, when it has one.
void put_excerpt(const Reporter::Located& e, bool color) {
  // An excerpt is printable text already (the spec loader leaves out any other).
  if (!e.excerpt.empty() && e.line > 0 && e.column > 0) std::fputs(excerpt_lines(e, color).c_str(), stderr);
}
}  // namespace

void Reporter::warn_at(const Located& w) {
  const bool placed = !w.file.empty() && w.line > 0;
  if (json_ && !placed) return warn(w.message);
  std::lock_guard lock(mu_);
  if (json_) {
    JsonObject o;
    o.add("type", "warning")
        .add("message", w.message)
        .add("file", w.file)
        .add("line", static_cast<std::uint64_t>(w.line))
        .add("column", static_cast<std::uint64_t>(w.column));
    emit_json_locked(o.str());
    return;
  }
  // As on_event shows a warning (quiet too: a warning is something to act on), the excerpt under it.
  message_locked("warning: ", w.message, &w);
}

void Reporter::message_locked(const char* prefix, const std::string& message, const Located* place) {
  clear_bars_locked();
  // A NUL or an ESC from a name in it is shown escaped (\x00, \x1b), never
  // sent raw; its line breaks stay (a message may list cards, one per line).
  put_line(stderr, {prefix, printable(message, true)});
  if (place) put_excerpt(*place, color_);
  redraw_locked();
}

void Reporter::errors(Errc code, const std::vector<Located>& errors, std::uint64_t more, const std::string& more_line) {
  std::lock_guard lock(mu_);
  std::vector<std::string> lines;
  for (const auto& e : errors) lines.push_back(e.message);
  if (!more_line.empty()) lines.push_back(more_line);
  if (json_) {
    JsonObject o;
    o.add("type", "error")
        .add("code", errc_name(code))
        .add("message", errors.empty() ? more_line : errors.front().message);
    // Where an error is: its file, line and column (1-based), when it has a place.
    auto place = [](JsonObject& to, const Located& e) {
      if (e.line == 0 || e.file.empty()) return;
      to.add("file", e.file)
          .add("line", static_cast<std::uint64_t>(e.line))
          .add("column", static_cast<std::uint64_t>(e.column));
    };
    if (!errors.empty()) place(o, errors.front());
    if (errors.size() > 1 || more > 0) {
      std::string list, problems;
      for (const auto& e : errors) {
        list += (list.empty() ? "[" : ",") + json_escape(e.message);
        JsonObject p;
        p.add("message", e.message);
        place(p, e);
        problems += (problems.empty() ? "[" : ",") + p.str();
      }
      o.add_raw("messages", list.empty() ? "[]" : list + "]");
      o.add_raw("problems", problems.empty() ? "[]" : problems + "]");
    }
    if (more > 0) o.add("more_errors", more);
    emit_json_locked(o.str());
    // The event was lost with stdout: the errors must still reach someone.
    if (out_errno_)
      for (const auto& l : lines) put_line(stderr, {"rpi-provision: error: ", printable(l, true)});
    return;
  }
  clear_bars_locked();
  // Messages name paths, devices and mirror answers: their control
  // characters shown escaped, never raw (their own line breaks stay).
  for (std::size_t i = 0; i < lines.size(); ++i) {
    put_line(stderr,
             {color_ ? "rpi-provision: \x1b[31merror:\x1b[0m " : "rpi-provision: error: ", printable(lines[i], true)});
    if (i < errors.size()) put_excerpt(errors[i], color_);
  }
}

}  // namespace rpi::cli
