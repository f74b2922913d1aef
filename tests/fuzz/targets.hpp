// The fuzz targets, shared by the libFuzzer binaries (fuzz_main.cpp) and the
// regression test that replays every saved crash (regressions_test.cpp).
//
// Each target feeds bytes to one parser of hostile input. Rejecting the input
// with rpi::Error is the expected outcome; anything else — another exception
// escaping, a sanitizer report, a hang, a broken invariant (abort()) — is a bug.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace rpi::fuzz {

// overlay::parse_spec + resolve_host for card 1.
void spec(const std::uint8_t* data, std::size_t size);
// partition::build_image on the bytes as a tarball (gzip-compressed first
// unless they already start with the gzip magic), 40 MiB image.
void tarball(const std::uint8_t* data, std::size_t size);
// fetch::parse_release_index on the bytes as latest-releases.yaml.
void release_index(const std::uint8_t* data, std::size_t size);
// fetch::parse_package_index on the bytes as an APKINDEX.tar.gz (gzip-compressed
// first unless they already start with the gzip magic); every package read must
// be found again under its name (abort() otherwise).
void apkindex(const std::uint8_t* data, std::size_t size);
// The inspect reader: read_mbr / FatVolume open, walk, read_file, apkovl summary.
void reader(const std::uint8_t* data, std::size_t size);
// BlockMap::from_bmap_xml → to_bmap_xml → from_bmap_xml: the second parse must
// succeed and give the same map (abort() otherwise).
void bmap(const std::uint8_t* data, std::size_t size);

using Target = void (*)(const std::uint8_t*, std::size_t);
struct NamedTarget {
  const char* name;  // also the folder name under tests/fuzz/corpus/ and regressions/
  Target run;
};
// Every target, in a fixed order.
const std::vector<NamedTarget>& all_targets();

}  // namespace rpi::fuzz
