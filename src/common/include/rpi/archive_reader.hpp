// RAII for a libarchive reader (the partition and fetch modules read tarballs
// and package indexes; link libarchive to use it).
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include <memory>

namespace rpi {

struct ArchiveReadFree {
  void operator()(archive* a) const { archive_read_free(a); }
};
using ArchiveReader = std::unique_ptr<archive, ArchiveReadFree>;

}  // namespace rpi
