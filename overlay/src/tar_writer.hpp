// Deterministic .tar.gz of overlay members (tech-brief §6.2): pax-restricted
// headers, members sorted by path components, one fixed mtime, no atime/ctime,
// gzip header without name or time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "overlay/apkovl.hpp"

namespace rpi::overlay {

// True when a sorts before b comparing path components byte-wise ("a/b" < "a-b").
bool path_less(const std::string& a, const std::string& b);
std::string write_tar_gz(const std::vector<Member>& sorted_members, std::int64_t mtime);

}  // namespace rpi::overlay
