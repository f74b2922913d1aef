// udev_flash_tool IMAGE [--no-verify] DEVICE...: the library's writer without the
// CLI around it, for bench/flash (loop devices are allowed as targets).
#include <cstdio>
#include <cstring>

#include "udev/flash.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s IMAGE [--no-verify] DEVICE...\n", argv[0]);
    return 2;
  }
  rpi::udev::FlashOptions opts;
  opts.safety.allow_non_removable = true;
  std::vector<rpi::udev::FlashJob> jobs;
  try {
    auto src = rpi::udev::FlashSource::open(argv[1]);
    for (int i = 2; i < argc; ++i) {
      if (std::strcmp(argv[i], "--no-verify") == 0) {
        opts.verify = false;
        continue;
      }
      jobs.push_back({argv[i], src, "card-" + std::to_string(jobs.size() + 1)});
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  int rc = 0;
  for (const auto& r : rpi::udev::flash_all(jobs, opts)) {
    std::printf("%s %s %llu bytes %.3f s %s %s\n", r.identity.c_str(), r.target.c_str(),
                static_cast<unsigned long long>(r.bytes_written), r.seconds, r.verified ? "verified" : "unverified",
                r.ok() ? "ok" : r.error.c_str());
    if (!r.ok()) rc = 3;
  }
  return rc;
}
