#include "udev/hotplug.hpp"

#include <libudev.h>
#include <poll.h>

#include <algorithm>
#include <fstream>
#include <thread>

namespace fs = std::filesystem;

namespace rpi::udev {

// libudev's netlink monitor; only a wake-up source; the truth is always sysfs.
struct HotplugMonitor::Udev {
  struct udev* ctx = nullptr;
  struct udev_monitor* mon = nullptr;
  ~Udev() {
    if (mon) udev_monitor_unref(mon);
    if (ctx) udev_unref(ctx);
  }
  int fd() const { return udev_monitor_get_fd(mon); }
  void drain() {
    while (struct udev_device* d = udev_monitor_receive_device(mon)) udev_device_unref(d);
  }
};

namespace {

// udevd is running when its control socket exists (what systemd's own tools check).
bool udevd_running() {
  std::error_code ec;
  return fs::exists("/run/udev/control", ec);
}

std::uint64_t size_of(const fs::path& p) {
  std::ifstream in(p);
  std::uint64_t v = 0;
  in >> v;
  return v;
}

}  // namespace

HotplugMonitor::HotplugMonitor(Options opts) : opts_(std::move(opts)) {
  if (!opts_.force_polling && opts_.roots.sys == "/sys" && udevd_running()) {
    auto u = std::make_unique<Udev>();
    u->ctx = udev_new();
    if (u->ctx) u->mon = udev_monitor_new_from_netlink(u->ctx, "udev");
    if (u->mon && udev_monitor_filter_add_match_subsystem_devtype(u->mon, "block", "disk") >= 0 &&
        udev_monitor_enable_receiving(u->mon) >= 0)
      udev_ = std::move(u);
  }
  known_ = scan();
}

HotplugMonitor::~HotplugMonitor() = default;

bool HotplugMonitor::using_udev() const noexcept {
  return udev_ != nullptr;
}

std::set<std::string> HotplugMonitor::scan() const {
  std::set<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(opts_.roots.sys / "block", ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.rfind("ram", 0) == 0 || name.rfind("zram", 0) == 0) continue;
    // A card counts once it has a medium and its /dev node exists (devtmpfs or udev made it).
    if (size_of(it->path() / "size") == 0) continue;
    std::error_code ec2;
    if (!fs::exists(opts_.roots.dev / name, ec2)) continue;
    out.insert(name);
  }
  return out;
}

std::optional<std::string> HotplugMonitor::next(std::chrono::milliseconds timeout, const std::atomic<bool>* cancel) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto now_set = scan();
    std::optional<std::string> found;
    for (const auto& n : now_set)
      if (!known_.count(n)) {
        found = n;
        break;
      }
    // Forget removed devices (a re-inserted card is new again); keep the other
    // new ones unreported so the next call returns them.
    std::set<std::string> still;
    for (const auto& n : known_)
      if (now_set.count(n)) still.insert(n);
    known_ = std::move(still);
    if (found) {
      known_.insert(*found);
      return (opts_.roots.dev / *found).string();
    }
    if (cancel && cancel->load()) return std::nullopt;
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return std::nullopt;
    auto wait = std::min(opts_.poll_interval, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now));
    if (udev_) {
      pollfd p{udev_->fd(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(wait.count())) > 0) udev_->drain();
    } else {
      std::this_thread::sleep_for(wait);
    }
  }
}

}  // namespace rpi::udev
