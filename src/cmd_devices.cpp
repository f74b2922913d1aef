// `rpi-provision devices`: the cards that could be written, and for every other
// disk why it is not offered (text, or one JSON line per device with --json).
#include <algorithm>
#include <memory>
#include <sstream>

#include "app.hpp"
#include "rpi/size.hpp"
#include "udev/device.hpp"

namespace rpi::cli {
namespace {

struct DevicesOptions {
  std::string sys = "/sys", proc = "/proc", dev = "/dev";  // hidden: fake trees for tests
};

std::string json_array(const std::vector<std::string>& v) {
  std::string out = "[";
  for (const auto& s : v) out += (out.size() > 1 ? "," : "") + json_escape(s);
  return out + "]";
}

JsonObject device_json(const udev::DeviceInfo& d) {
  JsonObject j;
  j.add("path", d.path).add("name", d.name).add("size", d.size).add("transport", d.transport);
  j.add_bool("removable", d.removable).add_bool("ro", d.ro);
  j.add("vendor", d.vendor).add("model", d.model).add("serial", d.serial);
  j.add("pttype", d.pttype);
  std::string parts = "[";
  for (const auto& p : d.partitions) {
    JsonObject pj;
    pj.add("path", p.path).add("size", p.size).add("fstype", p.fstype).add("label", p.label);
    pj.add_raw("mountpoints", json_array(p.mountpoints));
    parts += (parts.size() > 1 ? "," : "") + pj.str();
  }
  j.add_raw("partitions", parts + "]");
  j.add_raw("mountpoints", json_array(d.all_mountpoints()));
  j.add_raw("holders", json_array(d.holders));
  j.add_bool("system", d.system);
  j.add_bool("offered", d.refusals.empty());
  j.add_raw("refusals", json_array(d.refusals));
  return j;
}

std::string or_dash(const std::string& s) {
  return s.empty() ? "-" : s;
}

std::string pad(std::string s, std::size_t w) {
  if (s.size() < w) s.append(w - s.size(), ' ');
  return s;
}

void run_devices(AppContext& ctx, const DevicesOptions& o) {
  udev::SystemRoots roots{o.sys, o.proc, o.dev};
  auto devices = udev::discover(roots);
  if (ctx.json) {
    for (const auto& d : devices) ctx.reporter.result("device", "", device_json(d));
    return;
  }
  // Offered cards as a table (columns as wide as their widest cell), then every
  // other disk with the reasons it is not offered.
  std::vector<std::vector<std::string>> rows{{"DEVICE", "SIZE", "BUS", "MODEL", "SERIAL", "MOUNTED", "HOLDS"}};
  std::ostringstream others;
  for (const auto& d : devices) {
    if (!d.refusals.empty()) {
      others << "  " << d.path << " (" << d.describe() << (d.transport.empty() ? "" : ", " + d.transport) << "): ";
      for (std::size_t i = 0; i < d.refusals.size(); ++i) others << (i ? "; " : "") << d.refusals[i];
      others << "\n";
      continue;
    }
    std::string model = d.vendor.empty() ? d.model : d.vendor + " " + d.model;
    std::string mounted;
    for (const auto& m : d.all_mountpoints()) mounted += (mounted.empty() ? "" : ",") + m;
    rows.push_back({d.path, format_size(d.size), or_dash(d.transport), or_dash(model), or_dash(d.serial),
                    or_dash(mounted), or_dash(d.contents())});
  }
  std::string text;
  if (rows.size() > 1) {
    std::vector<std::size_t> width(rows[0].size(), 0);
    for (const auto& r : rows)
      for (std::size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
    for (const auto& r : rows) {
      std::string line;
      for (std::size_t c = 0; c < r.size(); ++c) line += c + 1 < r.size() ? pad(r[c], width[c] + 2) : r[c];
      text += line + "\n";
    }
  } else {
    text = "No removable cards found. Insert a card (or see why disks are not offered below).\n";
  }
  if (!others.str().empty()) text += "Not offered:\n" + others.str();
  ctx.reporter.text(text);
}

CommandRegistration reg(50, [](CLI::App& app, AppContext& ctx) {
  auto o = std::make_shared<DevicesOptions>();
  CLI::App* sub = app.add_subcommand("devices", "List cards that could be written, and why other disks are not");
  // The same flag as the main command's --json (which also reaches here), made
  // the subcommand's own so that `devices --help` lists it.
  sub->add_flag("--json", ctx.json, "one JSON line per disk on stdout (\"type\": \"device\")")->group("Output");
  // Hidden (empty group): point discovery at fake sysfs/proc/dev trees in tests.
  sub->add_option("--sysfs-root", o->sys)->group("");
  sub->add_option("--procfs-root", o->proc)->group("");
  sub->add_option("--dev-root", o->dev)->group("");
  sub->callback([o, &ctx] {
    ctx.reporter.configure(ctx.json, ctx.quiet);
    run_devices(ctx, *o);
  });
});

}  // namespace
}  // namespace rpi::cli
