// FAT directory names: validation, 8.3 short names with deterministic tails,
// and VFAT long-name (LFN) slots — the way Linux vfat with shortname=mixed
// stores them (tech-brief §1.9–§1.14).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rpi::partition::fatname {

using ShortName = std::array<char, 11>;  // 8 + 3, space padded, no dot

// Why `name` (one path component, UTF-8) cannot be stored on FAT, or nullopt.
std::optional<std::string> invalid_reason(std::string_view name);

// UTF-8 → UTF-16; throws std::invalid_argument on malformed UTF-8.
std::u16string to_utf16(std::string_view utf8);
// The key two names collide on (FAT matches names case-insensitively).
std::u16string fold_case(const std::u16string& name);

// True if `name` is an all-uppercase valid 8.3 name (stored without an LFN).
bool is_plain_short(std::string_view name);

struct ShortNameResult {
  ShortName name;
  bool needs_lfn;
};
// The short name for `name` in a directory where `taken(candidate)` says which
// short names exist already. Deterministic: plain names keep their 8.3 form;
// others get the basis name, then ~1…~4, then 2 characters + 4 hex digits of a
// hash of the long name + ~1…~9.
ShortNameResult make_short_name(std::string_view name, const std::function<bool(const ShortName&)>& taken);

// The LFN checksum of an 11-byte short name.
std::uint8_t lfn_checksum(const ShortName& name);

// Appends the LFN slots (32 bytes each, in on-disk order: last piece first) for
// `name` whose short entry has `checksum`.
void append_lfn_slots(std::vector<std::uint8_t>& out, const std::u16string& name, std::uint8_t checksum);
// How many 32-byte slots the LFN of `name` takes.
std::size_t lfn_slot_count(const std::u16string& name);

// `name` with control characters shown as \xNN (for messages).
std::string printable(std::string_view name);

// "CONFIG  TXT" → "CONFIG.TXT" (for messages and tests).
std::string short_name_text(const ShortName& name);

}  // namespace rpi::partition::fatname
