// The summary side of the one pass over an apkovl (apkovl_check.cpp drives
// the pass; reader_apkovl.cpp knows what the summary keeps of each member).
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include <cstdint>
#include <string>

#include "partition/apkovl_check.hpp"
#include "partition/reader.hpp"

namespace rpi::partition::detail {

// The most of one member the summary reads (etc/hostname, world, passwd).
inline constexpr std::uint64_t kSmallFileMax = 1 << 20;

// Builds an ApkovlSummary from the members of a tar as the pass reads them.
// The first problem (what summarize_apkovl throws) stops it.
class SummaryCollector {
 public:
  // `name` prefixes the problems; `compressed` is the size of the apkovl.
  SummaryCollector(std::string name, std::uint64_t compressed);

  bool on() const noexcept { return problem_.empty(); }
  void fail(std::string problem) {
    if (problem_.empty()) problem_ = std::move(problem);
  }
  // archive_read_open failed.
  void not_a_tar(archive* a);
  // archive_read_next_header returned `rc` (not ARCHIVE_EOF); false when
  // the summary stops there. Then member() for the header, unless it stopped.
  bool header(int rc, archive* a);
  // A member; true when the summary wants its data: then data() or
  // data_failed() follows.
  bool member(archive_entry* e);
  void data(const std::string& text);
  void data_failed(const std::string& why);  // libarchive's message, or the data was longer than declared

  ApkovlSummary& summary() noexcept { return sum_; }
  const std::string& problem() const noexcept { return problem_; }

 private:
  enum class Want { none, hostname, world, passwd, wifi };
  std::string name_;
  ApkovlSummary sum_;
  std::string problem_;
  std::uint64_t declared_ = 0;
  std::string path_;  // the current member, as busybox tar extracts it
  Want want_ = Want::none;
};

// The one pass over an apkovl: the review (as review_apkovl) when `review`,
// the summary (or its problem) when `summary`; the other side stays empty.
ApkovlInspection apkovl_pass(const std::string& path, const std::string& data, bool review, bool summary);

}  // namespace rpi::partition::detail
