// Builders for the inspect tests: FAT images made by the standard tools
// (truncate, sfdisk, mkfs.vfat, mcopy), a source tree with long, lower-case,
// nested and non-ASCII names, and a small apkovl made with GNU tar.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "rpi/fd.hpp"
#include "test_support.hpp"

namespace rpi::test::inspect {

namespace fs = std::filesystem;

inline constexpr std::uint64_t kPartOffset = 8ull << 20;  // the partition starts at 8 MiB

// Secrets planted in the apkovl; none may ever appear in inspect's output.
inline const char* const kSecrets[] = {"SECRETHASHinPASSWD", "SHADOWSECRETvalue", "WIFISECRETpsk", "KEYSECRETmaterial"};

// Deterministic pseudo-random bytes.
inline std::string pseudo_random(std::size_t n, std::uint32_t seed) {
  std::string s(n, '\0');
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& c : s) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x & 0xFF);
  }
  return s;
}

// A small apkovl (tar.gz) at `out`, made by GNU tar from a staged tree.
inline void make_apkovl(const fs::path& work, const fs::path& out) {
  fs::path r = work / "ovl";
  fs::create_directories(r / "etc/apk");
  fs::create_directories(r / "etc/runlevels/default");
  fs::create_directories(r / "etc/runlevels/boot");
  fs::create_directories(r / "etc/ssh");
  fs::create_directories(r / "etc/wpa_supplicant");
  write_file(r / "etc/hostname", "kiosk-07\n");
  write_file(r / "etc/apk/world", "alpine-base\nopenssh\nchrony\n");
  write_file(r / "etc/passwd",
             "root:x:0:0:root:/root:/bin/ash\npi:SECRETHASHinPASSWD:1000:1000:Pi User:/home/pi:/bin/sh\n");
  write_file(r / "etc/shadow", "root:SHADOWSECRETvalue:19000:0:::::\n");
  write_file(
      r / "etc/wpa_supplicant/wpa_supplicant.conf",
      "network={\n ssid=\"x\"\n psk=WIFISECRETpsk\n}\nnetwork={\n\tssid=7374616666\r\n\tpsk=\"WIFISECRETtwo\"\n}\n");
  write_file(r / "etc/ssh/ssh_host_ed25519_key", "KEYSECRETmaterial\n");
  fs::create_symlink("/etc/init.d/sshd", r / "etc/runlevels/default/sshd");
  fs::create_symlink("/etc/init.d/chronyd", r / "etc/runlevels/default/chronyd");
  fs::create_symlink("/etc/init.d/networking", r / "etc/runlevels/boot/networking");
  auto res = sh("tar --owner=0 --group=0 --numeric-owner -czf '" + out.string() + "' -C '" + r.string() + "' etc");
  if (res.exit_code != 0) throw std::runtime_error("tar failed: " + res.err);
}

// The tree copied onto the FAT: relative path -> content.
inline std::map<std::string, std::string> make_tree(const fs::path& work, const fs::path& src) {
  std::map<std::string, std::string> files{
      {".alpine-release", "alpine-rpi-3.22.1 250101\n"},
      {"cmdline.txt", "modules=loop,squashfs,sd-mod,usb-storage quiet console=tty1\n"},
      {"config.txt", "kernel=boot/vmlinuz-rpi\ninclude usercfg.txt\n"},
      {"Mixed.TXT", "mixed case\n"},
      {"UPPER.TXT", "upper\n"},
      {"longfilename_here.dat", pseudo_random(3000, 1)},
      {"boot/initramfs-rpi", pseudo_random(150000, 2)},
      {"boot/vmlinuz-rpi", pseudo_random(70001, 3)},
      {"overlays/deep/Nested Dir/file with spaces.dtbo", pseudo_random(1000, 4)},
      {"overlays/a-very-long-overlay-name-that-needs-several-lfn-slots.dtbo", pseudo_random(513, 5)},
      {"Grüße aus Berlin.txt", "grüße\n"},
      {"empty.txt", ""},
  };
  for (auto& [rel, data] : files) {
    fs::create_directories((src / rel).parent_path());
    write_file(src / rel, data);
  }
  make_apkovl(work, src / "kiosk.apkovl.tar.gz");
  files["kiosk.apkovl.tar.gz"] = read_file(src / "kiosk.apkovl.tar.gz");
  return files;
}

struct BuiltImage {
  fs::path image;
  std::uint64_t offset = 0;  // of the FAT
  std::map<std::string, std::string> files;
};

// `fat` is "12", "16" or "32". With `partitioned`, an MBR (disk id
// 0xcafef00d) with one type-0x0c partition at 8 MiB; otherwise a bare FAT.
inline BuiltImage build_image(const TempDir& dir, const std::string& fat, bool partitioned,
                              const std::string& size = "48M") {
  BuiltImage b;
  b.image = dir / "card.img";
  b.offset = partitioned ? kPartOffset : 0;
  fs::path src = dir / "src";
  b.files = make_tree(dir.path(), src);
  std::string img = "'" + b.image.string() + "'";
  std::string cmd = "set -e; truncate -s " + size + " " + img + "; ";
  if (partitioned)
    cmd += "printf 'label: dos\\nlabel-id: 0xcafef00d\\nstart=16384, type=c\\n' | sfdisk -q " + img + "; ";
  cmd += "mkfs.vfat -F " + fat + (fat == "32" ? " -s 1" : "") + " -n RPITEST -i 1234ABCD " +
         (partitioned ? "--offset 16384 " : "") + img + " >/dev/null; ";
  std::string target = "'" + b.image.string() + "@@" + std::to_string(b.offset) + "'";
  cmd += "cd '" + src.string() + "'; export LANG=C.UTF-8 MTOOLS_SKIP_CHECK=1; mcopy -s -i " + target +
         " * .alpine-release ::/";
  auto r = sh(cmd);
  if (r.exit_code != 0) throw std::runtime_error("building the test image failed: " + r.err);
  return b;
}

inline void patch(const fs::path& file, std::uint64_t offset, const std::string& bytes) {
  Fd fd = open_or_throw(file.string(), O_RDWR);
  pwrite_all(fd.get(), bytes.data(), bytes.size(), offset, "patch");
}
inline std::string le32s(std::uint32_t v) {
  return std::string{static_cast<char>(v & 0xFF), static_cast<char>((v >> 8) & 0xFF),
                     static_cast<char>((v >> 16) & 0xFF), static_cast<char>((v >> 24) & 0xFF)};
}
inline std::string le16s(std::uint16_t v) {
  return std::string{static_cast<char>(v & 0xFF), static_cast<char>((v >> 8) & 0xFF)};
}

#define RPI_REQUIRE_IMAGE_TOOLS()  \
  do {                             \
    RPI_REQUIRE_TOOL("sfdisk");    \
    RPI_REQUIRE_TOOL("mkfs.vfat"); \
    RPI_REQUIRE_TOOL("mcopy");     \
    RPI_REQUIRE_TOOL("tar");       \
  } while (0)

}  // namespace rpi::test::inspect
