#include "targets.hpp"

#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>
#include <algorithm>
#include <cctype>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "fetch/fetch.hpp"
#include "overlay/spec.hpp"
#include "partition/block_map.hpp"
#include "partition/image.hpp"
#include "partition/reader.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "rpi/text.hpp"

namespace rpi::fuzz {
namespace {

namespace fs = std::filesystem;

// A private scratch folder for the process (tarball targets write files), removed at exit.
class Scratch {
 public:
  Scratch() {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/rpi-fuzz-XXXXXX";
    if (!mkdtemp(templ.data())) std::abort();
    path_ = templ;
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

const fs::path& scratch() {
  static Scratch s;
  return s.path();
}

// The input is a finding only if it breaks the rule "rpi::Error or success":
// any other exception propagates out of the target and aborts the fuzzer.
template <typename F>
void expect_error_or_success(F&& f) {
  try {
    f();
  } catch (const rpi::Error&) {
  }
}

std::string gzip(std::string_view in) {
  z_stream z{};
  if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::string out(deflateBound(&z, in.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

void write_all(const fs::path& p, std::string_view bytes) {
  FILE* f = std::fopen(p.c_str(), "wb");
  if (!f) std::abort();
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) std::abort();
  std::fclose(f);
}

std::string_view view(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

void read_volume(const partition::FatVolume& vol) {
  vol.walk(
      [&](const std::string& path, const partition::FatEntry& e) {
        if (e.is_directory()) {
          expect_error_or_success([&] { (void)vol.list(path); });
        } else {
          expect_error_or_success([&] { (void)vol.read_file(path, 1 << 20); });
        }
        (void)e.mtime();
      },
      8);
  (void)vol.info().label();
  (void)vol.info().volume_id_string();
  for (const auto& ovl : partition::find_apkovls(vol)) {
    expect_error_or_success([&] {
      std::string data = vol.read_file(ovl.name, 4 << 20);
      (void)partition::summarize_apkovl(data, ovl.name);
    });
  }
  (void)vol.warnings();
}

}  // namespace

namespace {
// What every excerpt under a spec error must be (overlay::SpecProblem): the
// spec's own line at `line` (a tab as a space, trailing blanks cut), or its
// start up to an unknown key followed by " = …" (the value never shown),
// printable, at most 160 bytes, naming no secret's key before that last key.
// Aborts (a finding) otherwise.
void check_excerpts(std::string_view text, const overlay::SpecErrors& e) {
  for (const auto& p : e.problems()) {
    if (p.excerpt.empty()) continue;
    std::string_view rest = text;
    for (std::size_t l = 1; l < p.line; ++l) {
      const auto nl = rest.find('\n');
      if (nl == std::string_view::npos || p.line == 0) std::abort();
      rest.remove_prefix(nl + 1);
    }
    std::string line(rest.substr(0, rest.find('\n')));
    if (p.line == 1 && line.starts_with("\xef\xbb\xbf")) line.erase(0, 3);  // a byte-order mark
    std::replace(line.begin(), line.end(), '\t', ' ');
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
    static const std::string kMask = " = \u2026";
    std::string shown = p.excerpt;  // the line's own text in it
    const bool masked = shown.ends_with(kMask) && line != shown;
    if (masked) shown.erase(shown.size() - kMask.size());
    // Of a masked line, what comes before its (unknown) last key.
    std::string lower = masked ? shown.substr(0, shown.find_last_of(" {,[.") + 1) : shown;
    if (masked && shown.find_last_of(" {,[.") == std::string::npos) lower.clear();
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const bool secret_key = lower.find("psk") != std::string::npos || lower.find("pass") != std::string::npos ||
                            lower.find("content") != std::string::npos;
    const bool from_line = masked ? line.starts_with(shown) && line.size() > shown.size() : line == shown;
    if (p.line == 0 || !from_line || p.excerpt.size() > 160 || rpi::printable(p.excerpt) != p.excerpt || secret_key) {
      std::fprintf(stderr, "bad excerpt for %s\n", p.message.c_str());
      std::abort();
    }
  }
}
}  // namespace

void spec(const std::uint8_t* data, std::size_t size) {
  const std::string text(view(data, size));
  // { file = "relative" } references resolve inside the (empty) scratch folder.
  expect_error_or_success([&] {
    try {
      overlay::Spec s = overlay::parse_spec(text, "fuzz.toml", scratch());
      (void)overlay::resolve_host(s, 1);
    } catch (const overlay::SpecErrors& e) {
      check_excerpts(text, e);
      throw;
    }
  });
}

void tarball(const std::uint8_t* data, std::size_t size) {
  std::string_view in = view(data, size);
  bool gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  const fs::path src = scratch() / "in.tar.gz";
  const fs::path out = scratch() / "out.img";
  write_all(src, gz ? std::string(in) : gzip(in));
  partition::ImageOptions opts;
  opts.image_size = 40ull << 20;
  opts.force = true;
  opts.source_date_epoch = 1700000000;
  opts.extra_files.push_back({"fuzz.apkovl.tar.gz", "not really an apkovl"});
  expect_error_or_success([&] { (void)partition::build_image(src, out, opts); });
  std::error_code ec;
  fs::remove(out, ec);
  fs::remove(fs::path(out.string() + ".bmap"), ec);
}

void release_index(const std::uint8_t* data, std::size_t size) {
  expect_error_or_success([&] { (void)fetch::parse_release_index(std::string(view(data, size)), "fuzz.yaml"); });
}

void apkindex(const std::uint8_t* data, std::size_t size) {
  std::string_view in = view(data, size);
  const bool gz =
      in.size() >= 2 && static_cast<unsigned char>(in[0]) == 0x1f && static_cast<unsigned char>(in[1]) == 0x8b;
  fetch::PackageIndex idx;
  try {
    idx = fetch::parse_package_index(gz ? std::string(in) : gzip(in), "fuzz-APKINDEX.tar.gz");
  } catch (const rpi::Error&) {
    return;  // rejected input: fine
  }
  for (const auto& p : idx.packages) {
    const fetch::Package* found = p.name.empty() ? nullptr : idx.find(p.name);
    if (!found || found->name != p.name) {
      std::fprintf(stderr, "package '%s' of the index is not found under its name\n", p.name.c_str());
      std::abort();
    }
  }
  // The versions a mirror supplies: apk's order is an order (a version equals
  // itself, and swapping two swaps the answer), and a prefix match is implied
  // by equality.
  const std::size_t n = std::min<std::size_t>(idx.packages.size(), 32);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      const std::string &a = idx.packages[i].version, &b = idx.packages[j].version;
      const auto ab = fetch::compare_apk_versions(a, b), ba = fetch::compare_apk_versions(b, a);
      const bool bad = ab.has_value() != ba.has_value() || (ab && *ab != -*ba) || (i == j && ab && *ab != 0) ||
                       (ab && *ab == 0 && fetch::compare_apk_versions(a, b, true) != 0);
      if (bad) {
        std::fprintf(stderr, "versions '%s' and '%s' are not ordered consistently\n", a.c_str(), b.c_str());
        std::abort();
      }
    }
}

void reader(const std::uint8_t* data, std::size_t size) {
  int raw = memfd_create("rpi-fuzz-image", MFD_CLOEXEC);
  if (raw < 0) std::abort();
  Fd fd(raw);
  std::string_view in = view(data, size);
  if (!in.empty() && pwrite(fd.get(), in.data(), in.size(), 0) != static_cast<ssize_t>(in.size())) std::abort();
  expect_error_or_success([&] {
    std::uint64_t disk = partition::fd_size(fd.get(), "fuzz.img");
    if (size >= 512 && partition::looks_like_fat_boot_sector(data)) {
      read_volume(partition::FatVolume::open(fd.get(), 0, disk, "fuzz.img"));
      return;
    }
    partition::MbrInfo mbr = partition::read_mbr(fd.get(), disk, "fuzz.img");
    for (const auto& e : mbr.entries) {
      if (!e.used() || e.offset() >= disk) continue;
      (void)partition::mbr_type_name(e.type);
      std::uint64_t len = std::min<std::uint64_t>(e.bytes(), disk - e.offset());
      expect_error_or_success(
          [&] { read_volume(partition::FatVolume::open(fd.get(), e.offset(), len, "fuzz.img partition")); });
    }
  });
}

void bmap(const std::uint8_t* data, std::size_t size) {
  partition::BlockMap first;
  try {
    first = partition::BlockMap::from_bmap_xml(view(data, size), "fuzz.bmap");
  } catch (const rpi::Error&) {
    return;  // rejected input: fine
  }
  // What we accepted, we must write in a form we read back identically.
  const std::string xml = first.to_bmap_xml();
  partition::BlockMap second = partition::BlockMap::from_bmap_xml(xml, "round-trip.bmap");
  bool same = second.image_size() == first.image_size() && second.extents().size() == first.extents().size();
  for (std::size_t i = 0; same && i < first.extents().size(); ++i) {
    const auto& a = first.extents()[i];
    const auto& b = second.extents()[i];
    same = a.offset == b.offset && a.length == b.length && a.sha256 == b.sha256;
  }
  if (!same || second.to_bmap_xml() != xml) {
    std::fprintf(stderr, "bmap round trip changed the map:\n%s\n", xml.c_str());
    std::abort();
  }
}

const std::vector<NamedTarget>& all_targets() {
  static const std::vector<NamedTarget> targets = {
      {"spec", &spec},         {"tarball", &tarball}, {"release_index", &release_index},
      {"apkindex", &apkindex}, {"reader", &reader},   {"bmap", &bmap},
  };
  return targets;
}

}  // namespace rpi::fuzz
