#include "fat_writer.hpp"

#include <algorithm>
#include <cstring>
#include <ctime>
#include <deque>
#include <set>

#include "le.hpp"
#include "rpi/error.hpp"
#include "rpi/fd.hpp"
#include "rpi/size.hpp"

namespace rpi::partition {

namespace {

constexpr std::size_t kBufferBytes = 4u << 20;
constexpr std::uint32_t kFat32Eoc = 0x0FFFFFFF;
constexpr std::uint32_t kFat16Eoc = 0xFFFF;

}  // namespace

DosTime DosTime::from_unix(std::int64_t t) {
  constexpr std::int64_t kMin = 315532800;   // 1980-01-01 00:00:00 UTC
  constexpr std::int64_t kMax = 4354819198;  // 2107-12-31 23:59:58 UTC
  t = std::clamp(t, kMin, kMax);
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  DosTime d;
  d.date = static_cast<std::uint16_t>(((tm.tm_year - 80) << 9) | ((tm.tm_mon + 1) << 5) | tm.tm_mday);
  d.time = static_cast<std::uint16_t>((tm.tm_hour << 11) | (tm.tm_min << 5) | (tm.tm_sec / 2));
  return d;
}

FatWriter::FatWriter(int fd, std::string image_name, const FatGeometry& g)
    : fd_(fd), image_name_(std::move(image_name)), g_(g) {
  Node root;
  root.is_dir = true;
  nodes_.push_back(root);
  next_cluster_ = 2;
  last_usable_ = g_.clusters + 1 - kTailSlackClusters;
  if (g_.type == FatType::fat32) nodes_[0].runs.push_back(Run{allocate(1, "the root directory"), 1});
}

std::uint32_t FatWriter::allocate(std::uint32_t count, const std::string& what) {
  if (count == 0) return 0;
  if (next_cluster_ > last_usable_ || last_usable_ - next_cluster_ + 1 < count)
    throw NoSpace(Errc::input,
                  "no room left on the " + format_size(g_.partition_bytes()) + " FAT partition for " + what);
  std::uint32_t first = next_cluster_;
  next_cluster_ += count;
  return first;
}

std::uint64_t FatWriter::bytes_free() const noexcept {
  if (next_cluster_ > last_usable_) return 0;
  return std::uint64_t(last_usable_ - next_cluster_ + 1) * g_.cluster_bytes();
}

FatWriter::NodeId FatWriter::add_node(NodeId parent, const std::string& name, bool is_dir, const std::string& display) {
  if (auto why = fatname::invalid_reason(name))
    throw Error(Errc::input,
                context_ + "entry '" + display + "': the name '" + fatname::printable(name) + "' has " + *why);
  std::u16string key = fatname::fold_case(fatname::to_utf16(name));
  for (NodeId c : nodes_[parent].children) {
    if (nodes_[c].key != key) continue;
    if (nodes_[c].name == name)
      throw Error(Errc::input, context_ + "entry '" + display + "' appears twice in the tarball");
    throw Error(Errc::input, context_ + "entries '" + nodes_[c].name + "' and '" + name +
                                 "' in the same directory (at '" + display +
                                 "') differ only by case; FAT cannot hold both");
  }
  if (nodes_[parent].children.size() >= 32000)
    throw Error(Errc::input, context_ + "entry '" + display + "': too many entries in one directory for FAT");
  Node n;
  n.name = name;
  n.key = std::move(key);
  n.parent = parent;
  n.is_dir = is_dir;
  NodeId id = static_cast<NodeId>(nodes_.size());
  nodes_.push_back(std::move(n));
  nodes_[parent].children.push_back(id);
  if (is_dir) ++dirs_;
  return id;
}

std::optional<FatWriter::NodeId> FatWriter::find(const std::vector<std::string>& path) const {
  NodeId cur = 0;
  for (const auto& comp : path) {
    std::u16string key;
    try {
      key = fatname::fold_case(fatname::to_utf16(comp));
    } catch (const std::exception&) {
      return std::nullopt;
    }
    auto& ch = nodes_[cur].children;
    auto it = std::find_if(ch.begin(), ch.end(), [&](NodeId c) { return nodes_[c].key == key; });
    if (it == ch.end()) return std::nullopt;
    cur = *it;
  }
  return cur;
}

FatWriter::NodeId FatWriter::make_dir(const std::vector<std::string>& path, DosTime mtime, bool explicit_entry,
                                      const std::string& display) {
  NodeId cur = 0;
  for (std::size_t i = 0; i < path.size(); ++i) {
    std::vector<std::string> prefix(path.begin(), path.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    std::optional<NodeId> found = find(prefix);
    if (found) {
      if (!nodes_[*found].is_dir)
        throw Error(Errc::input, context_ + "entry '" + display + "': '" + path[i] + "' is a file, not a directory");
      if (nodes_[*found].name != path[i])
        throw Error(Errc::input, context_ + "entries '" + nodes_[*found].name + "' and '" + path[i] +
                                     "' differ only by case; FAT cannot hold both (at '" + display + "')");
      cur = *found;
    } else {
      cur = add_node(cur, path[i], true, display);
      nodes_[cur].mtime = mtime;  // implicit parents take the time of what is created in them first
      nodes_[cur].mtime_set = true;
    }
    if (explicit_entry && i + 1 == path.size()) nodes_[cur].mtime = mtime;
  }
  return cur;
}

void FatWriter::begin_file(NodeId parent, const std::string& name, DosTime mtime, bool read_only,
                           const std::string& display) {
  if (open_) throw Error(Errc::internal, "FatWriter: a file is already open");
  NodeId id = add_node(parent, name, false, display);
  nodes_[id].mtime = mtime;
  nodes_[id].mtime_set = true;
  nodes_[id].read_only = read_only;
  open_ = id;
  open_size_ = 0;
  ++files_;
}

void FatWriter::flush() {
  if (buf_.empty()) return;
  pwrite_all(fd_, buf_.data(), buf_.size(), buf_offset_, "cannot write " + image_name_);
  buf_offset_ += buf_.size();
  buf_.clear();
}

void FatWriter::stream(const void* data, std::size_t len) {
  Node& n = nodes_[*open_];
  std::uint64_t offset = g_.cluster_offset(n.runs.front().first) + open_size_;
  std::uint64_t end = buf_offset_ + buf_.size();
  if (buf_.empty()) {
    buf_offset_ = offset;
  } else if (offset != end) {
    // The gap is the previous file's cluster slack: write it as zeros so the
    // data region stays one forward stream.
    if (offset > end && offset - end < g_.cluster_bytes()) {
      buf_.resize(buf_.size() + static_cast<std::size_t>(offset - end), 0);
    } else {
      flush();
      buf_offset_ = offset;
    }
  }
  const auto* p = static_cast<const std::uint8_t*>(data);
  buf_.insert(buf_.end(), p, p + len);
  if (buf_.size() >= kBufferBytes) flush();
}

void FatWriter::write(const void* data, std::size_t len) {
  if (!open_) throw Error(Errc::internal, "FatWriter: no file open");
  if (len == 0) return;
  Node& n = nodes_[*open_];
  std::uint64_t new_size = open_size_ + len;
  if (new_size > 0xFFFFFFFFull)
    throw Error(Errc::input, context_ + "entry '" + n.name + "' is larger than 4 GiB - 1, the FAT file size limit");
  std::uint64_t cb = g_.cluster_bytes();
  std::uint64_t have = 0;
  for (const Run& r : n.runs) have += r.count;
  std::uint64_t need = (new_size + cb - 1) / cb;
  if (need > have) {
    std::uint32_t extra = static_cast<std::uint32_t>(need - have);
    std::uint32_t first = allocate(extra, "'" + n.name + "'");
    if (!n.runs.empty() && n.runs.back().first + n.runs.back().count == first)
      n.runs.back().count += extra;
    else
      n.runs.push_back(Run{first, extra});
  }
  stream(data, len);
  open_size_ = new_size;
  content_bytes_ += len;
}

void FatWriter::write_zeros(std::uint64_t len) {
  static const std::vector<std::uint8_t> zeros(1 << 16, 0);
  while (len > 0) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(len, zeros.size()));
    write(zeros.data(), n);
    len -= n;
  }
}

void FatWriter::end_file() {
  if (!open_) throw Error(Errc::internal, "FatWriter: no file open");
  nodes_[*open_].size = static_cast<std::uint32_t>(open_size_);
  open_.reset();
}

void FatWriter::copy_file(NodeId source, NodeId parent, const std::string& name, DosTime mtime,
                          const std::string& display) {
  flush();
  Node src = nodes_[source];
  begin_file(parent, name, mtime, src.read_only, display);
  std::vector<std::uint8_t> chunk(1 << 20);
  std::uint64_t left = src.size;
  for (const Run& r : src.runs) {
    std::uint64_t off = g_.cluster_offset(r.first);
    std::uint64_t run_bytes = std::min<std::uint64_t>(left, std::uint64_t(r.count) * g_.cluster_bytes());
    while (run_bytes > 0) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(run_bytes, chunk.size()));
      pread_full(fd_, chunk.data(), n, off, "cannot read " + image_name_);
      write(chunk.data(), n);
      off += n;
      run_bytes -= n;
      left -= n;
    }
  }
  end_file();
}

std::vector<std::uint8_t> FatWriter::dir_entries(NodeId dir, const std::string& label, DosTime label_time,
                                                 std::vector<fatname::ShortName>* names) const {
  const Node& d = nodes_[dir];
  std::vector<std::uint8_t> out;
  auto entry = [&out](const fatname::ShortName& name, std::uint8_t attr, DosTime t, std::uint32_t cluster,
                      std::uint32_t size) {
    std::uint8_t e[32] = {};
    std::memcpy(e, name.data(), 11);
    e[11] = attr;
    le::put16(e + 14, t.time);
    le::put16(e + 16, t.date);
    le::put16(e + 18, t.date);
    le::put16(e + 20, static_cast<std::uint16_t>(cluster >> 16));
    le::put16(e + 22, t.time);
    le::put16(e + 24, t.date);
    le::put16(e + 26, static_cast<std::uint16_t>(cluster & 0xFFFF));
    le::put32(e + 28, size);
    out.insert(out.end(), e, e + 32);
  };
  auto first_cluster = [this](NodeId n) -> std::uint32_t {
    return nodes_[n].runs.empty() ? 0 : nodes_[n].runs.front().first;
  };
  auto blank = []() {
    fatname::ShortName n;
    n.fill(' ');
    return n;
  };

  std::set<std::string> taken;
  if (dir == 0) {
    if (!label.empty()) {
      fatname::ShortName ln = blank();
      std::memcpy(ln.data(), label.data(), std::min<std::size_t>(label.size(), 11));
      entry(ln, 0x08, label_time, 0, 0);
      taken.insert(std::string(ln.begin(), ln.end()));
    }
  } else {
    fatname::ShortName dot = blank(), dotdot = blank();
    dot[0] = '.';
    dotdot[0] = dotdot[1] = '.';
    entry(dot, 0x10, d.mtime, first_cluster(dir), 0);
    // ".." of a first-level directory points at cluster 0, also on FAT32.
    entry(dotdot, 0x10, d.mtime, d.parent == 0 ? 0 : first_cluster(d.parent), 0);
  }
  std::vector<NodeId> children = d.children;
  std::sort(children.begin(), children.end(), [this](NodeId a, NodeId b) { return nodes_[a].name < nodes_[b].name; });
  for (NodeId c : children) {
    const Node& n = nodes_[c];
    auto sn = fatname::make_short_name(n.name, [&taken](const fatname::ShortName& cand) {
      return taken.count(std::string(cand.begin(), cand.end())) != 0;
    });
    taken.insert(std::string(sn.name.begin(), sn.name.end()));
    if (names) names->push_back(sn.name);
    if (sn.needs_lfn) fatname::append_lfn_slots(out, fatname::to_utf16(n.name), fatname::lfn_checksum(sn.name));
    std::uint8_t attr = n.is_dir ? 0x10 : static_cast<std::uint8_t>(0x20 | (n.read_only ? 0x01 : 0));
    entry(sn.name, attr, n.mtime, first_cluster(c), n.is_dir ? 0 : n.size);
  }
  return out;
}

void FatWriter::fill_chain(std::vector<std::uint32_t>& fat, const std::vector<Run>& runs) const {
  const std::uint32_t eoc = g_.type == FatType::fat32 ? kFat32Eoc : kFat16Eoc;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const Run& r = runs[i];
    for (std::uint32_t k = 0; k < r.count; ++k) {
      std::uint32_t c = r.first + k;
      std::uint32_t next;
      if (k + 1 < r.count)
        next = c + 1;
      else if (i + 1 < runs.size())
        next = runs[i + 1].first;
      else
        next = eoc;
      fat[c] = next;
    }
  }
}

void FatWriter::finish(const std::string& label, std::uint32_t volume_id, DosTime label_time, BlockMap& map) {
  if (open_) throw Error(Errc::internal, "FatWriter::finish with a file open");
  flush();
  const std::uint32_t cb = g_.cluster_bytes();
  const bool fat32 = g_.type == FatType::fat32;

  // Directories in breadth-first order of sorted names: a deterministic layout.
  std::vector<NodeId> order{0};
  for (std::size_t i = 0; i < order.size(); ++i) {
    std::vector<NodeId> sub;
    for (NodeId c : nodes_[order[i]].children)
      if (nodes_[c].is_dir) sub.push_back(c);
    std::sort(sub.begin(), sub.end(), [this](NodeId a, NodeId b) { return nodes_[a].name < nodes_[b].name; });
    order.insert(order.end(), sub.begin(), sub.end());
  }
  // Directories without a time of their own take the label time.
  for (NodeId d : order)
    if (!nodes_[d].mtime_set) nodes_[d].mtime = label_time;

  // Pass 1: sizes (independent of cluster numbers) → allocation.
  for (NodeId d : order) {
    std::size_t bytes = dir_entries(d, label, label_time, nullptr).size();
    std::string what = d == 0 ? "the root directory" : "directory '" + nodes_[d].name + "'";
    if (bytes / 32 > 65536) throw Error(Errc::input, what + " has more entries than FAT allows (65 536 slots)");
    if (d == 0 && !fat32) {
      if (bytes > std::size_t(g_.root_entries) * 32)
        throw Error(Errc::input, "the root directory needs " + std::to_string(bytes / 32) +
                                     " entries but a FAT16 root holds " + std::to_string(g_.root_entries) +
                                     "; use a larger --size (FAT32)");
      continue;
    }
    std::uint32_t need = static_cast<std::uint32_t>(std::max<std::size_t>(1, (bytes + cb - 1) / cb));
    std::uint32_t have = 0;
    for (const Run& r : nodes_[d].runs) have += r.count;
    if (need > have) {
      std::uint32_t first = allocate(need - have, what);
      nodes_[d].runs.push_back(Run{first, need - have});
    }
  }

  // Pass 2: write every directory, zero-padded to whole clusters.
  for (NodeId d : order) {
    std::vector<std::uint8_t> bytes = dir_entries(d, label, label_time, nullptr);
    if (d == 0 && !fat32) {
      bytes.resize(std::size_t(g_.root_dir_sectors) * 512, 0);
      std::uint64_t off = g_.partition_offset() + (std::uint64_t(g_.reserved_sectors) + 2ull * g_.fat_sectors) * 512;
      pwrite_all(fd_, bytes.data(), bytes.size(), off, "cannot write " + image_name_);
      continue;
    }
    std::uint32_t total = 0;
    for (const Run& r : nodes_[d].runs) total += r.count;
    bytes.resize(std::size_t(total) * cb, 0);
    std::size_t pos = 0;
    for (const Run& r : nodes_[d].runs) {
      std::size_t len = std::size_t(r.count) * cb;
      pwrite_all(fd_, bytes.data() + pos, len, g_.cluster_offset(r.first), "cannot write " + image_name_);
      map.add(g_.cluster_offset(r.first), len);
      pos += len;
    }
  }
  // File data ranges (whole clusters, slack included).
  for (const Node& n : nodes_)
    if (!n.is_dir)
      for (const Run& r : n.runs) map.add(g_.cluster_offset(r.first), std::uint64_t(r.count) * cb);

  // Both FATs: only the part up to the last allocated cluster holds non-zero
  // entries; the rest of each FAT is zero in the (fresh, sparse) file but
  // mapped, so a card gets it written.
  std::vector<std::uint32_t> fat(next_cluster_, 0);
  fat[0] = fat32 ? 0x0FFFFFF8 : 0xFFF8;
  fat[1] = fat32 ? kFat32Eoc : kFat16Eoc;
  for (const Node& n : nodes_) fill_chain(fat, n.runs);
  const std::size_t entry_bytes = fat32 ? 4 : 2;
  std::vector<std::uint8_t> fat_bytes((fat.size() * entry_bytes + 511) / 512 * 512, 0);
  for (std::size_t i = 0; i < fat.size(); ++i) {
    if (fat32)
      le::put32(&fat_bytes[i * 4], fat[i]);
    else
      le::put16(&fat_bytes[i * 2], static_cast<std::uint16_t>(fat[i]));
  }
  for (int copy = 0; copy < 2; ++copy) {
    std::uint64_t off =
        g_.partition_offset() + (std::uint64_t(g_.reserved_sectors) + std::uint64_t(copy) * g_.fat_sectors) * 512;
    pwrite_all(fd_, fat_bytes.data(), fat_bytes.size(), off, "cannot write " + image_name_);
  }

  // Boot sector (and for FAT32: FSInfo, backup boot sector, backup FSInfo).
  std::uint8_t bs[512] = {};
  bs[0] = 0xEB;
  bs[1] = fat32 ? 0x58 : 0x3C;
  bs[2] = 0x90;
  std::memcpy(bs + 3, "MSWIN4.1", 8);
  le::put16(bs + 11, 512);
  bs[13] = static_cast<std::uint8_t>(g_.sectors_per_cluster);
  le::put16(bs + 14, static_cast<std::uint16_t>(g_.reserved_sectors));
  bs[16] = 2;
  le::put16(bs + 17, static_cast<std::uint16_t>(g_.root_entries));
  if (!fat32 && g_.total_sectors < 65536)
    le::put16(bs + 19, static_cast<std::uint16_t>(g_.total_sectors));
  else
    le::put32(bs + 32, g_.total_sectors);
  bs[21] = 0xF8;
  if (!fat32) le::put16(bs + 22, static_cast<std::uint16_t>(g_.fat_sectors));
  le::put16(bs + 24, 63);
  le::put16(bs + 26, 255);
  le::put32(bs + 28, static_cast<std::uint32_t>(g_.part_start_lba));
  std::uint8_t* ext = bs + (fat32 ? 64 : 36);
  if (fat32) {
    le::put32(bs + 36, g_.fat_sectors);
    le::put32(bs + 44, 2);  // root cluster
    le::put16(bs + 48, 1);  // FSInfo sector
    le::put16(bs + 50, 6);  // backup boot sector
  }
  ext[0] = 0x80;
  ext[2] = 0x29;
  le::put32(ext + 3, volume_id);
  std::string vol = label.empty() ? "NO NAME" : label;
  vol.resize(11, ' ');
  std::memcpy(ext + 7, vol.data(), 11);
  std::memcpy(ext + 18, fat32 ? "FAT32   " : "FAT16   ", 8);
  bs[510] = 0x55;
  bs[511] = 0xAA;
  const std::uint64_t p = g_.partition_offset();
  pwrite_all(fd_, bs, 512, p, "cannot write " + image_name_);
  if (fat32) {
    std::uint8_t fsinfo[512] = {};
    le::put32(fsinfo, 0x41615252);
    le::put32(fsinfo + 484, 0x61417272);
    le::put32(fsinfo + 488, g_.clusters + 2 - next_cluster_);  // exact free count
    le::put32(fsinfo + 492, next_cluster_);                    // first free cluster
    le::put32(fsinfo + 508, 0xAA550000);
    pwrite_all(fd_, fsinfo, 512, p + 512, "cannot write " + image_name_);
    pwrite_all(fd_, bs, 512, p + 6 * 512, "cannot write " + image_name_);
    pwrite_all(fd_, fsinfo, 512, p + 7 * 512, "cannot write " + image_name_);
  }
  // Before the data region, zeros included: the first MiB (MBR; a stale GPT
  // header there must be overwritten), the whole reserved region (boot sector,
  // FSInfo, backups and the alignment padding: an old file system's signature
  // left there, e.g. btrfs at 64 KiB, would make blkid see two file systems on
  // a reused card; tech-brief §1.16), both complete FATs and the FAT16 root.
  // Only the gap between the first MiB and the partition, outside any
  // partition, stays unmapped.
  map.add(0, std::min<std::uint64_t>(1 << 20, p));
  map.add(p, (std::uint64_t(g_.reserved_sectors) + 2ull * g_.fat_sectors + g_.root_dir_sectors) * 512);
}

}  // namespace rpi::partition
