// The keyboard maps a boot tarball's kbd-bkeymaps package holds: what
// `[system] keymap` can name on the card (its keymaps service runs
// `loadkmap < /usr/share/bkeymaps/LAYOUT/VARIANT.bmap.gz` at every boot and
// leaves the keyboard US when the file is not there).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rpi::partition {

// The largest kbd-bkeymaps apk that is read (the real one has 50-100 KiB);
// a larger one is not buffered and its keymaps stay unknown.
inline constexpr std::uint64_t kMaxKeymapApkBytes = 4ull << 20;

// Whether a member of the tarball (its normalised path components) is the
// kbd-bkeymaps package of the boot repository: apks/<arch>/kbd-bkeymaps-VER-rN.apk.
bool is_keymap_apk(const std::vector<std::string>& parts);

// The keymaps of an apk's bytes: each usr/share/bkeymaps/LAYOUT/VARIANT.bmap.gz
// of its data tar as "LAYOUT VARIANT", sorted. An apk (v2) is three gzip
// streams, signature, control and data tar, that read as one tar. Throws
// rpi::Error(input) naming `name` for bytes that are no such package, that
// unpack to more than 64 MiB, or that hold no keymap.
std::vector<std::string> apk_keymaps(std::string_view apk, const std::string& name);

// What the walk over a boot tarball learnt of its keymaps.
struct BootKeymaps {
  std::string apk;                   // the member read ("apks/aarch64/kbd-bkeymaps-2.7.4-r0.apk"); "": none
  std::vector<std::string> keymaps;  // "LAYOUT VARIANT", sorted; empty when unknown
  std::string unknown;               // why they are unknown although there is an apk ("": read)
  std::string release;               // the tarball's Alpine release, from its .alpine-release ("": none)
  bool known() const { return !apk.empty() && unknown.empty(); }
  bool has(std::string_view keymap) const;
};

// The keymap of `keymaps` most like `wanted` ("de de-nodeadkeys" for
// "de de-nodeadkey"): the nearest by edit distance, within 3 edits and a
// third of its length, preferring `wanted`'s layout; "" when none is near.
std::string closest_keymap(std::string_view wanted, const std::vector<std::string>& keymaps);

}  // namespace rpi::partition
