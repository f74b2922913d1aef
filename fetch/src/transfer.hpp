// Internal: moving bytes from a URL (http, https, file:// or a local path) with
// libcurl, resume, retries and streaming digests. Not part of the public API.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "fetch/fetch.hpp"

namespace rpi::fetch::detail {

// http:// or https:// (everything else is read from the local file system).
bool is_remote(const std::string& url);
// file:///x/y or /x/y or x/y → the path.
std::filesystem::path local_path(const std::string& url);
// Joins a mirror root and a relative path with exactly one '/'.
std::string join_url(const std::string& root, const std::string& rel);

struct Text {
  bool found = false;  // false: HTTP 404/410 or no such local file
  std::string body;
};
// A small document (index, .sha256, .asc), at most `max_bytes`, with retries on
// transient failures. Throws Errc::network for everything but "not found".
Text get_text(const std::string& url, const Options& opts, std::size_t max_bytes = 4 << 20);

struct Downloaded {
  std::uint64_t size = 0;
  std::string sha256, sha512;  // lower-case hex of the whole part file
  bool resumed = false;        // some bytes came from an earlier attempt or run
};
// Completes `part` from `url`: resumes from its current length (Range +
// If-Range with the validator saved next to it), restarts cleanly when the
// server ignores the range or the file changed, retries transient failures with
// backoff, and never lets the file grow past `expected_size` (0 = unknown).
// Digests are computed while the bytes stream in. Does not verify them.
Downloaded download(const std::string& url, const std::filesystem::path& part, std::uint64_t expected_size,
                    const Options& opts, const std::string& subject);

}  // namespace rpi::fetch::detail
