#include "partition/block_map.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "rpi/atomic_file.hpp"
#include "rpi/digest.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"

namespace rpi::partition {

void BlockMap::add(std::uint64_t offset, std::uint64_t length) {
  if (length == 0) return;
  std::uint64_t begin = offset / kBlockSize * kBlockSize;
  std::uint64_t end =
      std::min<std::uint64_t>((offset + length + kBlockSize - 1) / kBlockSize * kBlockSize, image_size_);
  if (begin >= end) return;
  // Insert keeping order, then merge overlapping or touching neighbours.
  auto it = std::lower_bound(extents_.begin(), extents_.end(), begin,
                             [](const Extent& e, std::uint64_t off) { return e.offset < off; });
  it = extents_.insert(it, Extent{begin, end - begin, {}});
  std::size_t i = static_cast<std::size_t>(it - extents_.begin());
  if (i > 0 && extents_[i - 1].offset + extents_[i - 1].length >= extents_[i].offset) --i;
  while (i + 1 < extents_.size() && extents_[i].offset + extents_[i].length >= extents_[i + 1].offset) {
    std::uint64_t new_end =
        std::max(extents_[i].offset + extents_[i].length, extents_[i + 1].offset + extents_[i + 1].length);
    extents_[i].length = new_end - extents_[i].offset;
    extents_[i].sha256.clear();
    extents_.erase(extents_.begin() + static_cast<std::ptrdiff_t>(i) + 1);
  }
}

void BlockMap::split(std::uint64_t max_len) {
  if (max_len == 0 || max_len % kBlockSize) throw Error(Errc::internal, "block map split length not block aligned");
  std::vector<Extent> out;
  for (const auto& e : extents_) {
    for (std::uint64_t off = 0; off < e.length; off += max_len)
      out.push_back(Extent{e.offset + off, std::min(max_len, e.length - off), {}});
  }
  extents_ = std::move(out);
}

namespace {
// Hex SHA-256 of the image bytes of `e`, read in buf.size() preads.
std::string extent_sha256(int fd, const Extent& e, std::vector<char>& buf, const std::string& image_name,
                          const std::atomic<bool>* stop = nullptr) {
  Digest d(Digest::Algo::sha256);
  std::uint64_t done = 0;
  while (done < e.length) {
    if (stop && stop->load()) throw Error(Errc::internal, "the check of " + image_name + " was stopped");
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), e.length - done));
    std::size_t got = pread_full(fd, buf.data(), n, e.offset + done, "cannot read " + image_name);
    if (got != n) throw Error(Errc::input, image_name + " is shorter than its block map says");
    d.update(buf.data(), n);
    done += n;
  }
  return d.finish_hex();
}

constexpr std::size_t kHashBuffer = 4u << 20;
}  // namespace

void BlockMap::compute_checksums(int fd, const std::string& image_name) {
  std::vector<char> buf(kHashBuffer);
  for (auto& e : extents_) e.sha256 = extent_sha256(fd, e, buf, image_name);
}

std::uint64_t BlockMap::mapped_bytes() const noexcept {
  std::uint64_t sum = 0;
  for (const auto& e : extents_) sum += e.length;
  return sum;
}

BlockMap BlockMap::whole(std::uint64_t image_size) {
  BlockMap m(image_size);
  m.add(0, image_size);
  return m;
}

namespace {
std::uint64_t blocks_of(const Extent& e) {
  return (e.length + BlockMap::kBlockSize - 1) / BlockMap::kBlockSize;
}
}  // namespace

std::string BlockMap::to_bmap_xml() const {
  std::uint64_t mapped_blocks = 0;
  for (const auto& e : extents_) mapped_blocks += blocks_of(e);
  std::string x;
  x += "<?xml version=\"1.0\" ?>\n";
  x += "<!-- Block map written by rpi-provision: the ranges that must be written to a card, zeros included. -->\n";
  x += "<bmap version=\"2.0\">\n";
  x += "    <ImageSize> " + std::to_string(image_size_) + " </ImageSize>\n";
  x += "    <BlockSize> " + std::to_string(kBlockSize) + " </BlockSize>\n";
  x += "    <BlocksCount> " + std::to_string(blocks_count()) + " </BlocksCount>\n";
  x += "    <MappedBlocksCount> " + std::to_string(mapped_blocks) + " </MappedBlocksCount>\n";
  x += "    <ChecksumType> sha256 </ChecksumType>\n";
  x += "    <BmapFileChecksum> " + std::string(64, '0') + " </BmapFileChecksum>\n";
  x += "    <BlockMap>\n";
  for (const auto& e : extents_) {
    std::uint64_t first = e.offset / kBlockSize;
    std::uint64_t last = first + blocks_of(e) - 1;
    x += "        <Range";
    if (!e.sha256.empty()) x += " chksum=\"" + e.sha256 + "\"";
    x += "> " + (first == last ? std::to_string(first) : std::to_string(first) + "-" + std::to_string(last)) +
         " </Range>\n";
  }
  x += "    </BlockMap>\n";
  x += "</bmap>\n";
  // The file checksum is taken with the field all zeros, then put in place.
  std::string sum = sha256_hex(x);
  x.replace(x.find(std::string(64, '0')), 64, sum);
  return x;
}

namespace {
constexpr const char* kRebuildHint =
    "rebuild the .bmap (rpi-provision writes one with every image) or remove it to write the whole image";

std::string trim(std::string_view s) {
  std::size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  std::size_t e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

// Text of the first <tag>...</tag> at or after `from`; "" if absent.
std::string element(std::string_view xml, const std::string& tag, std::size_t from = 0) {
  std::size_t open = xml.find("<" + tag, from);
  if (open == std::string_view::npos) return {};
  std::size_t gt = xml.find('>', open);
  std::size_t close = xml.find("</" + tag + ">", gt);
  if (gt == std::string_view::npos || close == std::string_view::npos) return {};
  return trim(xml.substr(gt + 1, close - gt - 1));
}

std::uint64_t number(const std::string& s, const std::string& what, const std::string& name) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 19)
    throw Error(Errc::input, name + ": bad " + what + " '" + s + "'");
  return std::stoull(s);
}

bool is_sha256_hex(const std::string& s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// bmaptool's own files carry XML comments that mention element names: drop them.
std::string strip_comments(std::string_view text, const std::string& name) {
  std::string stripped;
  for (std::size_t pos = 0;;) {
    std::size_t c = text.find("<!--", pos);
    if (c == std::string_view::npos) {
      stripped.append(text.substr(pos));
      break;
    }
    stripped.append(text.substr(pos, c - pos));
    std::size_t end = text.find("-->", c + 4);
    if (end == std::string_view::npos) throw Error(Errc::input, name + ": unterminated XML comment");
    pos = end + 3;
  }
  return stripped;
}

// bmaptool's BmapFileChecksum (bmap 1.4 and 2.x): the SHA-256 of the whole file
// with the first occurrence of the recorded value replaced by 64 '0's.
// Absent (older or hand-written files): nothing to check.
void check_file_checksum(std::string_view text, const std::string& name) {
  std::string recorded = element(strip_comments(text, name), "BmapFileChecksum");
  if (recorded.empty()) return;
  std::size_t at = text.find(recorded);
  if (!is_sha256_hex(recorded) || at == std::string_view::npos)
    throw Error(Errc::input, name + ": malformed BmapFileChecksum '" + recorded.substr(0, 80) + "'");
  std::string zeroed(text);
  zeroed.replace(at, recorded.size(), std::string(recorded.size(), '0'));
  std::string actual = sha256_hex(zeroed);
  if (actual != recorded)
    throw Error(Errc::input, name + ": BmapFileChecksum mismatch (the file hashes to " + actual + ", it records " +
                                 recorded + "): the .bmap was edited or damaged after it was made: " + kRebuildHint);
}
}  // namespace

BlockMap BlockMap::from_bmap_xml(std::string_view text, const std::string& name) {
  std::string stripped = strip_comments(text, name);
  std::string_view xml = stripped;
  std::size_t root = xml.find("<bmap");
  if (root == std::string_view::npos) throw Error(Errc::input, name + " is not a bmap file");
  std::size_t root_end = xml.find('>', root);
  std::string_view head = xml.substr(root, root_end - root);
  std::size_t v = head.find("version=\"");
  if (v == std::string_view::npos) throw Error(Errc::input, name + ": bmap without a version");
  std::string version(head.substr(v + 9, head.find('"', v + 9) - v - 9));
  if (!(version.rfind("2.", 0) == 0 || version.rfind("1.", 0) == 0))
    throw Error(Errc::input, name + ": bmap version " + version + " is not supported (1.x or 2.x)");
  BlockMap m(number(element(xml, "ImageSize"), "ImageSize", name));
  std::uint64_t bs = number(element(xml, "BlockSize"), "BlockSize", name);
  if (bs != kBlockSize)
    throw Error(Errc::input, name + ": BlockSize " + std::to_string(bs) + " is not supported (only " +
                                 std::to_string(kBlockSize) + ", as bmaptool writes)");
  std::uint64_t blocks = number(element(xml, "BlocksCount"), "BlocksCount", name);
  if (blocks != (m.image_size_ + bs - 1) / bs)
    throw Error(Errc::input, name + ": BlocksCount does not match ImageSize");
  std::string ctype = element(xml, "ChecksumType");
  if (!ctype.empty() && ctype != "sha256")
    throw Error(Errc::input, name + ": checksum type " + ctype + " is not supported (sha256)");
  std::uint64_t mapped = 0;
  std::uint64_t prev_end = 0;
  std::size_t pos = xml.find("<BlockMap");
  if (pos == std::string_view::npos) throw Error(Errc::input, name + ": no BlockMap element");
  for (;;) {
    std::size_t r = xml.find("<Range", pos);
    if (r == std::string_view::npos) break;
    std::size_t gt = xml.find('>', r);
    std::size_t close = xml.find("</Range>", gt);
    if (gt == std::string_view::npos || close == std::string_view::npos)
      throw Error(Errc::input, name + ": unterminated Range");
    std::string_view attrs = xml.substr(r, gt - r);
    std::string body = trim(xml.substr(gt + 1, close - gt - 1));
    std::size_t dash = body.find('-');
    std::uint64_t first = number(body.substr(0, dash), "Range", name);
    std::uint64_t last = dash == std::string::npos ? first : number(body.substr(dash + 1), "Range", name);
    if (last < first || last >= blocks || (first * bs < prev_end && mapped))
      throw Error(Errc::input, name + ": Range " + body + " is out of order or outside the image");
    Extent e;
    e.offset = first * bs;
    e.length = std::min((last + 1) * bs, m.image_size_) - e.offset;
    std::size_t c = attrs.find("chksum=\"");
    if (c != std::string_view::npos) {
      e.sha256 = std::string(attrs.substr(c + 8, attrs.find('"', c + 8) - c - 8));
      if (!is_sha256_hex(e.sha256))
        throw Error(Errc::input, name + ": Range " + body + " has a malformed sha256 checksum");
    }
    mapped += last - first + 1;
    prev_end = e.offset + e.length;
    m.extents_.push_back(std::move(e));
    pos = close;
  }
  std::string mbc = element(xml, "MappedBlocksCount");
  if (!mbc.empty() && number(mbc, "MappedBlocksCount", name) != mapped)
    throw Error(Errc::input, name + ": MappedBlocksCount does not match its ranges");
  return m;
}

void write_bmap(const std::filesystem::path& path, const BlockMap& map) {
  write_file_atomic(path, map.to_bmap_xml(), kBmapMode);
}

BlockMap read_bmap(const std::filesystem::path& path) {
  Fd fd = open_or_throw(path.string(), O_RDONLY);
  std::string data;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) throw_errno("cannot read " + path.string());
    if (n == 0) break;
    data.append(buf, static_cast<std::size_t>(n));
    if (data.size() > (64u << 20)) throw Error(Errc::input, path.string() + " is too large for a bmap file");
  }
  check_file_checksum(data, path.string());
  return BlockMap::from_bmap_xml(data, path.string());
}

void check_bmap_against(const BlockMap& map, int image_fd, const std::string& image_name, const std::string& bmap_name,
                        const std::atomic<bool>* stop) {
  // Cost: one extra read of the mapped data (not of the holes), usually from
  // the page cache (the cards read the same bytes); large preads keep it near
  // the disk's sequential speed otherwise. Once per source, however many cards.
  std::vector<char> buf;
  for (const auto& e : map.extents()) {
    if (e.sha256.empty()) continue;  // a range without chksum: nothing to compare with
    if (buf.empty()) buf.resize(kHashBuffer);
    if (extent_sha256(image_fd, e, buf, image_name, stop) == e.sha256) continue;
    std::uint64_t first = e.offset / BlockMap::kBlockSize;
    std::uint64_t last = (e.offset + e.length - 1) / BlockMap::kBlockSize;
    throw Error(Errc::input, bmap_name + ": checksum mismatch for blocks range " + std::to_string(first) + "-" +
                                 std::to_string(last) + " (bytes " + std::to_string(e.offset) + "-" +
                                 std::to_string(e.offset + e.length - 1) + ") of " + image_name +
                                 ": the image changed after its .bmap was made: " + kRebuildHint);
  }
}

}  // namespace rpi::partition
