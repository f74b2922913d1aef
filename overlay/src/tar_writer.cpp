#include "tar_writer.hpp"

#include <archive.h>
#include <archive_entry.h>

#include <memory>

#include "rpi/error.hpp"

namespace rpi::overlay {

namespace {
struct ArchiveFree {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryFree {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

la_ssize_t append_cb(archive*, void* client, const void* buf, size_t len) {
  static_cast<std::string*>(client)->append(static_cast<const char*>(buf), len);
  return static_cast<la_ssize_t>(len);
}

void check(archive* a, int rc, const std::string& what) {
  if (rc != ARCHIVE_OK)
    throw Error(Errc::internal,
                "writing the apkovl (" + what + "): " + (archive_error_string(a) ? archive_error_string(a) : "?"));
}
}  // namespace

bool path_less(const std::string& a, const std::string& b) {
  std::size_t n = std::min(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    unsigned char ca = a[i] == '/' ? 0 : static_cast<unsigned char>(a[i]);
    unsigned char cb = b[i] == '/' ? 0 : static_cast<unsigned char>(b[i]);
    if (ca != cb) return ca < cb;
  }
  return a.size() < b.size();
}

std::string write_tar_gz(const std::vector<Member>& members, std::int64_t mtime) {
  std::string out;
  std::unique_ptr<archive, ArchiveFree> a(archive_write_new());
  if (!a) throw Error(Errc::internal, "libarchive: out of memory");
  check(a.get(), archive_write_set_format_pax_restricted(a.get()), "format");
  check(a.get(), archive_write_add_filter_gzip(a.get()), "gzip");
  // No timestamp (and no file name) in the gzip header: same input, same bytes.
  check(a.get(), archive_write_set_filter_option(a.get(), "gzip", "timestamp", nullptr), "gzip options");
  check(a.get(), archive_write_set_bytes_in_last_block(a.get(), 1), "block size");
  check(a.get(), archive_write_open(a.get(), &out, nullptr, append_cb, nullptr), "open");
  for (const auto& m : members) {
    std::unique_ptr<archive_entry, EntryFree> e(archive_entry_new());
    std::string name = m.type == 'd' ? m.path + "/" : m.path;
    archive_entry_set_pathname(e.get(), name.c_str());
    archive_entry_set_perm(e.get(), m.mode);
    archive_entry_set_uid(e.get(), m.uid);
    archive_entry_set_gid(e.get(), m.gid);
    archive_entry_set_uname(e.get(), m.uname.c_str());
    archive_entry_set_gname(e.get(), m.gname.c_str());
    archive_entry_set_mtime(e.get(), mtime, 0);
    if (m.type == 'd') {
      archive_entry_set_filetype(e.get(), AE_IFDIR);
      archive_entry_set_size(e.get(), 0);
    } else if (m.type == 'l') {
      archive_entry_set_filetype(e.get(), AE_IFLNK);
      archive_entry_set_symlink(e.get(), m.data.c_str());
      archive_entry_set_size(e.get(), 0);
    } else {
      archive_entry_set_filetype(e.get(), AE_IFREG);
      archive_entry_set_size(e.get(), static_cast<la_int64_t>(m.data.size()));
    }
    check(a.get(), archive_write_header(a.get(), e.get()), m.path);
    if (m.type == 'f' && !m.data.empty()) {
      auto n = archive_write_data(a.get(), m.data.data(), m.data.size());
      if (n < 0 || static_cast<std::size_t>(n) != m.data.size()) check(a.get(), ARCHIVE_FATAL, m.path);
    }
  }
  check(a.get(), archive_write_close(a.get()), "close");
  return out;
}

}  // namespace rpi::overlay
