#pragma once
// Text that reaches a terminal: what a path, a device's model string, a file
// name inside an image or a mirror's answer may hold must not drive it.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace rpi {

// Length of the valid UTF-8 sequence starting at s[i] (i < s.size()), or 0
// when it is not one (overlong forms, surrogates and code points past
// U+10FFFF included).
std::size_t utf8_sequence(std::string_view s, std::size_t i);

// `s` safe to print: C0 and C1 control characters, DEL, bidirectional
// overrides and bytes that are not UTF-8 are shown escaped (\x1b, \u009b,
// \u202e, \xff); everything else is kept. With `keep_line_breaks`, newlines and
// tabs stay as they are (for multi-line messages).
std::string printable(std::string_view s, bool keep_line_breaks = false);

// A file mode's permission bits as chmod takes them: "0644".
std::string octal_mode(unsigned mode);

// The columns a terminal gives `s` (UTF-8): two for each East Asian wide or
// fullwidth character and emoji, none for combining marks, zero-width spaces
// and joiners and variation selectors, one for every other code point (or
// byte that is not UTF-8).
std::size_t terminal_columns(std::string_view s);

// `s` with A-Z as a-z (bytes; no locale).
std::string ascii_lower(std::string_view s);

// The strings with `sep` between them ("a, b, c").
std::string join(const std::vector<std::string>& parts, std::string_view sep = ", ");

// `s` as one word of a command line the user may paste into a POSIX shell:
// as it is when that is safe, "./-x.img" for a relative name that would read
// as an option, else in single quotes ("'my card.img'", a newline, '$').
std::string shell_word(std::string_view s);

// Edit distance (bytes) for "did you mean": insertions, deletions, changes,
// and swaps of two neighbours, one edit each.
std::size_t edit_distance(std::string_view a, std::string_view b);

}  // namespace rpi
