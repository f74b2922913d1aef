// Progress as an interface: libraries emit events, one reporter in src/ renders
// them (bars on a TTY, plain lines, JSON Lines). Events never carry secrets.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace rpi {

struct Event {
  std::string type;     // "download", "build", "write", "verify", "note", ...
  std::string subject;  // what it is about: a file name, a card, a device path
  std::uint64_t done = 0;
  std::uint64_t total = 0;  // 0 when unknown
  std::string message;      // human text for notes and warnings
};

using EventSink = std::function<void(const Event&)>;

inline void emit(const EventSink& sink, Event ev) {
  if (sink) sink(ev);
}

}  // namespace rpi
