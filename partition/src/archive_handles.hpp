// RAII for a libarchive reader.
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include <memory>

namespace rpi::partition {

struct ArchiveReadFree {
  void operator()(archive* a) const { archive_read_free(a); }
};
using ArchiveReader = std::unique_ptr<archive, ArchiveReadFree>;

}  // namespace rpi::partition
