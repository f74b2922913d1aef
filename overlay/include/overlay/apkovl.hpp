// The apkovl built from a HostConfig (alpine-facts §1.6, §5, §6) and the boot
// partition edits that go with it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "overlay/spec.hpp"

namespace rpi::overlay {

struct BuildOptions {
  // mtime of every member; default kDefaultEpoch (or SOURCE_DATE_EPOCH read by the CLI).
  std::optional<std::int64_t> source_date_epoch;
  // When set, password salts and SSH host keys are derived from it (HMAC-SHA256
  // per card and purpose), so a build is byte-for-byte reproducible. Treat it as
  // a secret: it determines private keys. Unset: fresh random values each build.
  std::optional<std::string> seed;
};

inline constexpr std::int64_t kDefaultEpoch = 1704067200;  // 2024-01-01T00:00:00Z

struct Apkovl {
  std::string file_name;                 // "<hostname>.apkovl.tar.gz"
  std::string bytes;                     // the .tar.gz
  std::vector<std::string> known_hosts;  // "host[,alias...] ssh-ed25519 AAAA..." when keys were generated
};

// One member of the overlay, for listings and tests.
struct Member {
  std::string path;  // "etc/hostname", directories end without '/'
  char type = 'f';   // 'f' file, 'd' directory, 'l' symlink
  unsigned mode = 0644;
  unsigned uid = 0, gid = 0;
  std::string uname = "root", gname = "root";
  std::string data;  // file content or symlink target
};

// The member list, sorted by path components, parents included.
std::vector<Member> apkovl_members(const HostConfig& host, const BuildOptions& options,
                                   std::vector<std::string>* known_hosts = nullptr);
// The paths (no leading '/') the generator itself writes for `host`, i.e. every
// member except the [[files]] entries, with true for folders (implied parents
// included). Cheap: no host keys or password hashes are made. The spec uses it to
// refuse [[files]] that would turn a generated folder into a file.
std::vector<std::pair<std::string, bool>> generated_paths(const HostConfig& host);

// Names of generated scripts that [[scripts]] may not use.
inline constexpr std::string_view kFirstBootRunnerName = "00-rpi-provision-first-boot";  // etc/local.d/NAME.start
inline constexpr std::string_view kInstallerName = "zz-install-sys";  // etc/rpi-provision/NAME ([install] sys)
// etc/init.d/NAME, in the default runlevel when [apk].packages is not empty.
inline constexpr std::string_view kPackagesServiceName = "rpi-provision-packages";

// The deterministic tar.gz of the members. Throws Errc::spec for a host with
// an unset { env = } secret (a spec loaded with MissingEnv::warn).
Apkovl build_apkovl(const HostConfig& host, const BuildOptions& options);

// What the image engine applies to the boot partition of this card.
struct BootEdits {
  std::string label;                  // FAT label
  std::optional<std::uint64_t> size;  // bytes; unset = automatic
  bool size_max = false;              // "max": the whole card
  bool carries_apkovl = true;         // false when [boot].apkovl_url is set
  // Root file name -> transform of its content ("cmdline.txt").
  std::map<std::string, std::function<std::string(const std::string&)>> edits;
  std::optional<std::string> usercfg_txt;  // write "usercfg.txt" with this content
  // Folders the boot partition needs besides the tarball's: "cache" when [apk].cache
  // (the apk cache symlink points at /media/<lbu media>/cache).
  std::vector<std::string> directories;
};
BootEdits boot_edits(const HostConfig& host);
// The files to write at the FAT root, in order: the apkovl (unless the card
// fetches it from [boot].apkovl_url) and usercfg.txt when there is one.
std::vector<std::pair<std::string, std::string>> boot_root_files(const BootEdits& edits, const Apkovl& apkovl);
// The edited one-line cmdline.txt: extra parameters, serial console, apkovl= URL.
std::string edit_cmdline(const Boot& boot, const std::string& original);

// The name Alpine's initramfs requests for apkovl=http://…/{MAC}.apkovl.tar.gz:
// "<mac, lower-case colon form>.apkovl.tar.gz".
std::string mac_file_name(const std::string& mac);

}  // namespace rpi::overlay
