// The streaming FAT writer: file data goes straight to its clusters (allocated
// sequentially, so the data region is written as one forward stream);
// directories, both FATs, the boot sectors and FSInfo are written by finish().
// Memory use grows with the number of entries and allocated clusters, never
// with the size of the volume.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "partition/block_map.hpp"
#include "partition/fat.hpp"
#include "partition/fat_names.hpp"
#include "rpi/error.hpp"

namespace rpi::partition {

// Thrown when file data or directories do not fit the partition.
struct NoSpace : Error {
  using Error::Error;
};

// A FAT date/time pair (local time fields; we store UTC).
struct DosTime {
  std::uint16_t date = 0x21;  // 1980-01-01
  std::uint16_t time = 0;
  static DosTime from_unix(std::int64_t t);
};

class FatWriter {
 public:
  using NodeId = std::uint32_t;

  FatWriter(int fd, std::string image_name, const FatGeometry& g);

  // Prefix for messages about entries (the tarball's name).
  void set_context(std::string context) { context_ = std::move(context) + ": "; }
  NodeId root() const noexcept { return 0; }
  // The directory at `path` (components below the root), created with its
  // parents as needed. `mtime` is given to directories this call creates, and
  // to the last one in any case when `explicit_entry` (the tarball has an entry
  // for it). Throws rpi::Error(input) naming `display` if a file is in the way.
  NodeId make_dir(const std::vector<std::string>& path, DosTime mtime, bool explicit_entry, const std::string& display);
  // Looks up a node by path; nullopt if absent.
  std::optional<NodeId> find(const std::vector<std::string>& path) const;
  bool is_dir(NodeId n) const { return nodes_[n].is_dir; }

  // Streams one file: begin, write any number of times, end.
  void begin_file(NodeId parent, const std::string& name, DosTime mtime, bool read_only, const std::string& display);
  void write(const void* data, std::size_t len);
  void write_zeros(std::uint64_t len);
  void end_file();
  // A new file with the same bytes as `source` (a FAT cannot share clusters).
  void copy_file(NodeId source, NodeId parent, const std::string& name, DosTime mtime, const std::string& display);

  std::uint64_t bytes_free() const noexcept;  // what further file data may take
  std::uint64_t bytes_written() const noexcept { return content_bytes_; }
  std::uint64_t file_count() const noexcept { return files_; }
  std::uint64_t dir_count() const noexcept { return dirs_; }

  // Lays out and writes every directory, both FATs, the boot sector(s) and
  // FSInfo; records every written range in `map`.
  void finish(const std::string& label, std::uint32_t volume_id, DosTime label_time, BlockMap& map);

 private:
  struct Run {
    std::uint32_t first;
    std::uint32_t count;
  };
  struct Node {
    std::string name;    // UTF-8 long name ("" for the root)
    std::u16string key;  // case-folded UTF-16, for collision checks
    NodeId parent = 0;
    bool is_dir = false;
    bool read_only = false;
    DosTime mtime;
    bool mtime_set = false;
    std::uint32_t size = 0;
    std::vector<Run> runs;
    std::vector<NodeId> children;
  };

  NodeId add_node(NodeId parent, const std::string& name, bool is_dir, const std::string& display);
  std::uint32_t allocate(std::uint32_t count, const std::string& what);
  void flush();
  void stream(const void* data, std::size_t len);
  std::vector<std::uint8_t> dir_entries(NodeId dir, const std::string& label, DosTime label_time,
                                        std::vector<fatname::ShortName>* names) const;
  void fill_chain(std::vector<std::uint32_t>& fat, const std::vector<Run>& runs) const;

  int fd_;
  std::string image_name_;
  std::string context_;
  FatGeometry g_;
  std::vector<Node> nodes_;
  std::uint32_t next_cluster_;  // next free cluster (allocation is sequential)
  std::uint32_t last_usable_;   // highest cluster we allocate (tail slack kept free)
  std::uint64_t content_bytes_ = 0;
  std::uint64_t files_ = 0;
  std::uint64_t dirs_ = 0;

  // The file being streamed.
  std::optional<NodeId> open_;
  std::uint64_t open_size_ = 0;

  // Coalescing write buffer for the forward data stream.
  std::vector<std::uint8_t> buf_;
  std::uint64_t buf_offset_ = 0;  // disk offset of buf_[0]
};

}  // namespace rpi::partition
